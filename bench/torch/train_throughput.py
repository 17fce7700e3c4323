#!/usr/bin/python3
"""PyTorch training throughput of swatc's shipped networks: the reference swatc's dense and sparse
training speed is reported against (as a ratio measured in the same run, DESIGN.md "Benchmarks").

    /usr/bin/python3 bench/torch/train_throughput.py [--models lenet5,resnet20] [--batch 128]
                     [--threads 2] [--warmup 5] [--steps 30] [--min-seconds 3]

Each model (models/export.py's definition, seeded init) trains in training mode on one random
1x28x28 batch with random labels: forward, CrossEntropyLoss, backward, SGD(lr 0.05, momentum 0.9,
weight decay 5e-4) step. After the warm-up steps, at least --steps steps and --min-seconds seconds
are timed. Prints one JSON line per model: {model, batch, threads, img_per_s, step_ms, cpu_ms_per_step,
steps, load1, torch}. cpu_ms_per_step is the process's CPU time per step (all threads) and load1
the 1-minute load average at the end: when other processes share the cores, img/s drops several-fold
(on a quiet machine load1 is about 1 and cpu_ms_per_step about threads x step_ms). Data loading is not part of the measurement (the
batch is fixed and already in memory).
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True  # no __pycache__ left in models/
sys.path.insert(0, os.path.join(ROOT, "models"))
import export  # noqa: E402  (models/export.py: the network definitions)


def measure(name, batch, threads, warmup, steps, min_seconds):
    """Time SGD training steps of model name; returns the JSON record."""
    ctor, shape = export.SHIPPED[name]
    model = export.build(ctor)
    model.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch,) + tuple(shape), generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        loss = step()
        done += 1
        elapsed = time.perf_counter() - start
        if done >= steps and elapsed >= min_seconds:
            break
    cpu = time.process_time() - cpu_start
    if not torch.isfinite(loss):
        sys.exit("%s: loss became %s" % (name, loss.item()))
    return {"model": name, "batch": batch, "threads": threads,
            "img_per_s": round(batch * done / elapsed, 1), "step_ms": round(1000 * elapsed / done, 3),
            "cpu_ms_per_step": round(1000 * cpu / done, 3), "steps": done, "load1": round(os.getloadavg()[0], 2),
            "torch": torch.__version__}


def main():
    """Parse the command line and print one JSON line per model."""
    ap = argparse.ArgumentParser(description="PyTorch training throughput (img/s) of the shipped models.")
    ap.add_argument("--models", default="lenet5,resnet20", help="comma-separated: lenet5, mlp, resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=30, help="at least this many timed steps")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="and at least this long")
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in export.SHIPPED]
    if unknown or not names:
        ap.error("unknown model(s) %s; choose from %s" % (", ".join(unknown), ", ".join(export.SHIPPED)))
    if args.batch < 2 or args.threads < 1 or args.steps < 1:
        ap.error("--batch must be >= 2 (training-mode BatchNorm), --threads and --steps >= 1")
    torch.set_num_threads(args.threads)
    for name in names:
        rec = measure(name, args.batch, args.threads, args.warmup, args.steps, args.min_seconds)
        print(json.dumps(rec))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
