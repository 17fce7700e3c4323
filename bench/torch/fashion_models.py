#!/usr/bin/python3
"""PyTorch reference runs of swatc's shipped networks on Fashion-MNIST over several shuffling seeds:
the accuracy (mean and spread) swatc's dense training of models/<model>.onnx should reproduce.

    /usr/bin/python3 bench/torch/fashion_models.py --model lenet5|mlp|resnet20 [--seeds 0,1,2]
                     [--epochs 3] [--threads 1] [--data /usr/share/datasets/fashion-mnist] [--json]

The recipe is fashion_reference.py's (whose data loading and evaluation this script imports), for
any of the three shipped models:
  - model: models/export.py's definition with the weights of models/<model>.onnx, matched by
    initializer name, BatchNorm running mean/var included (num_batches_tracked, which ONNX does not
    hold, starts at 0 and is unused with BN momentum 0.1); every seed starts from these weights;
  - data: (x/255 - 0.2860)/0.3530 as float32, no augmentation; batch 128, drop_last=False
    (469 iterations per epoch, the last with 96 images);
  - SGD lr 0.05, momentum 0.9, weight decay 5e-4 on every parameter (BN scale/shift and biases too);
    cosine per iteration to 0: lr_i = 0.05 * (1 + cos(pi * i / T)) / 2, T = epochs * 469;
  - CrossEntropyLoss (batch mean); test accuracy in eval mode on the 10,000 test images.
The seed changes only the randomness: the shuffle generator (torch.Generator().manual_seed(seed),
one randperm(60000) per epoch, carried on across epochs) and the global RNG (torch.manual_seed(seed)),
which only the MLP's Dropout draws from. Seed 0 of lenet5 is therefore fashion_reference.py's run.

Prints one line per epoch, the final accuracy and wall time per seed, then the mean and the sample
standard deviation (n-1) of the final test accuracy over the seeds. --json adds one JSON line per
seed and one summary line. Wall time counts training and evaluation of one seed (data loading
excluded); the process's CPU time and the 1-minute load average are printed beside it, since the
cores may be shared.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ left in bench/torch/ or models/

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import fashion_reference as ref  # noqa: E402  (same folder: data loading, evaluation, constants)
from fashion_reference import export  # noqa: E402  (models/export.py, imported by fashion_reference)

MODELS = tuple(export.SHIPPED)


def model_from_onnx(name):
    """export.py's network `name` with the initializers of models/<name>.onnx copied in by name."""
    ctor, _ = export.SHIPPED[name]
    model = ctor()
    path = os.path.join(ref.ROOT, "models", name + ".onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    state = model.state_dict()
    wanted = {k for k in state if not k.endswith(".num_batches_tracked")}
    if set(inits) != wanted:
        sys.exit("%s does not match export.%s: %s" % (path, ctor.__name__, sorted(set(inits) ^ wanted)))
    with torch.no_grad():
        for k, v in state.items():
            if k in inits:
                if tuple(v.shape) != inits[k].shape:
                    sys.exit("%s: %s has shape %s, the model wants %s" % (path, k, inits[k].shape,
                                                                          tuple(v.shape)))
                v.copy_(torch.from_numpy(inits[k].copy()))
            else:
                v.zero_()  # num_batches_tracked
    return model


def run_seed(name, seed, epochs, xtr, ytr, xte, yte):
    """Train model `name` from its ONNX weights with shuffle/dropout seed `seed`; returns a record."""
    torch.manual_seed(seed)
    model = model_from_onnx(name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=ref.LR, momentum=ref.MOMENTUM, weight_decay=ref.WEIGHT_DECAY)
    n = len(xtr)
    per_epoch = math.ceil(n / ref.BATCH)
    total = epochs * per_epoch
    gen = torch.Generator().manual_seed(seed)
    it, history = 0, []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        start = time.perf_counter()
        for b in range(per_epoch):
            idx = perm[b * ref.BATCH:(b + 1) * ref.BATCH]
            x, y = xtr[idx], ytr[idx]
            lr = ref.LR * (1 + math.cos(math.pi * it / total)) / 2
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            it += 1
        train_s = time.perf_counter() - start
        test_acc = ref.evaluate(model, xte, yte)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "test_acc": test_acc,
               "train_s": train_s, "lr_end": lr}
        history.append(rec)
        print("  seed %d epoch %d: train loss %.4f, train acc %.4f, test acc %.4f (train %.1f s, %.0f img/s)" % (
            seed, epoch + 1, rec["train_loss"], rec["train_acc"], test_acc, train_s, n / train_s))
        sys.stdout.flush()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    final = history[-1]["test_acc"]
    print("seed %d: final test acc %.4f; wall %.1f s (cpu %.1f s, load %.2f)" % (
        seed, final, wall, cpu, os.getloadavg()[0]))
    sys.stdout.flush()
    return {"model": name, "seed": seed, "epochs": epochs, "final_test_acc": final,
            "test_acc": [h["test_acc"] for h in history], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load1": os.getloadavg()[0], "history": history}


def parse_seeds(text):
    """'0,1,2' or '0-4' -> list of distinct non-negative ints, in the order given."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds += range(int(lo), int(hi) + 1)
        elif part:
            seeds.append(int(part))
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(text)
    return seeds


def main():
    """Train the chosen model once per seed, then print the accuracy statistics."""
    ap = argparse.ArgumentParser(description="PyTorch reference runs of swatc's models on Fashion-MNIST "
                                             "over several shuffling seeds.")
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--seeds", default="0,1,2", help="comma list (ranges a-b allowed); default 0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the four *-ubyte.gz files (Debian dataset-fashion-mnist)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per seed and a summary line")
    args = ap.parse_args()
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        ap.error("--seeds: expected distinct non-negative integers like 0,1,2 or 0-4, got %r" % args.seeds)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    xtr, ytr = ref.load_split(args.data, "train")
    xte, yte = ref.load_split(args.data, "t10k")
    print("data: %d train, %d test images (%.1f s to load)" % (len(xtr), len(xte), time.perf_counter() - t0))
    per_epoch = math.ceil(len(xtr) / ref.BATCH)
    print("%s: seeds %s, %d epochs x %d iterations, batch %d, SGD lr %g momentum %g wd %g, cosine per "
          "iteration to 0, %d threads, torch %s" % (
              args.model, ",".join(map(str, seeds)), args.epochs, per_epoch, ref.BATCH, ref.LR, ref.MOMENTUM,
              ref.WEIGHT_DECAY, args.threads, torch.__version__))
    sys.stdout.flush()

    runs = []
    for seed in seeds:
        rec = run_seed(args.model, seed, args.epochs, xtr, ytr, xte, yte)
        runs.append(rec)
        if args.json:
            print(json.dumps(rec))
            sys.stdout.flush()

    finals = [r["final_test_acc"] for r in runs]
    mean = statistics.mean(finals)
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print("%s: per-seed final test acc %s" % (args.model, ", ".join("%.4f" % a for a in finals)))
    for e in range(args.epochs):
        accs = [r["test_acc"][e] for r in runs]
        print("  epoch %d: mean %.4f, std %.4f" % (e + 1, statistics.mean(accs),
                                                   statistics.stdev(accs) if len(accs) > 1 else 0.0))
    print("%s: final test acc mean %.4f, std %.4f (sample std over %d seeds), min %.4f, max %.4f" % (
        args.model, mean, std, len(finals), min(finals), max(finals)))
    if args.json:
        print(json.dumps({"model": args.model, "seeds": seeds, "epochs": args.epochs, "threads": args.threads,
                          "final_test_acc": finals, "mean": mean, "std": std, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
