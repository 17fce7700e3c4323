#!/usr/bin/python3
"""PyTorch reference run: dense LeNet-5 on Fashion-MNIST, the accuracy and speed swatc's dense
training of models/lenet5.onnx should reproduce.

    /usr/bin/python3 bench/torch/fashion_reference.py [--data /usr/share/datasets/fashion-mnist]
                     [--epochs 3] [--threads 2] [--json]

Setup (every choice is stated so a C run can mirror it):
  - model: models/export.py's LeNet5, weights = the initializers of models/lenet5.onnx (by name), so
    it starts exactly where `swatc train models/lenet5.onnx` starts;
  - data: the gz IDX files, pixels x -> (x/255 - 0.2860)/0.3530 as float32, no augmentation;
  - epochs 3, batch 128, drop_last=False (469 iterations per epoch, the last with 96 images);
  - shuffle: one torch.Generator seeded 0 draws randperm(60000) at the start of every epoch
    (the generator carries on from epoch to epoch);
  - SGD lr 0.05, momentum 0.9 (not Nesterov, dampening 0), weight decay 5e-4 on every parameter;
  - cosine schedule stepped per iteration to 0: iteration i (0-based, over all epochs, T = 3 * 469)
    uses lr_i = 0.05 * (1 + cos(pi * i / T)) / 2, i.e. CosineAnnealingLR(T_max=T, eta_min=0) stepped
    after every iteration (swatc: sw_sched cosine with per_iter = 1, no warm-up);
  - loss: CrossEntropyLoss (mean over the batch); train loss/accuracy are averaged over the epoch's
    images from the training-mode forward passes; test accuracy is the eval-mode accuracy on the
    10,000 test images;
  - torch.set_num_threads(2); img/s counts training images over the epoch's training time only
    (data already in memory; evaluation excluded). The process's CPU time and the load average are
    printed beside it: when other processes share the 2 cores, img/s drops several-fold, so only
    runs at load ~1 are worth quoting. Accuracy does not depend on timing: re-runs print identical
    losses and accuracies.
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True  # no __pycache__ left in models/
sys.path.insert(0, os.path.join(ROOT, "models"))
import export  # noqa: E402  (models/export.py: the network definitions)

MEAN, STD = 0.2860, 0.3530
BATCH, LR, MOMENTUM, WEIGHT_DECAY = 128, 0.05, 0.9, 5e-4


def idx_read(path, magic):
    """Read a gzip'ed IDX file (big-endian header) into a uint8 numpy array of its dimensions."""
    if not os.path.isfile(path):
        sys.exit("%s: no such file (Debian: apt-get install dataset-fashion-mnist, or pass --data DIR)" % path)
    with gzip.open(path, "rb") as f:
        data = f.read()
    got, = struct.unpack_from(">I", data, 0)
    if got != magic:
        sys.exit("%s: IDX magic %#x, expected %#x" % (path, got, magic))
    ndim = magic & 0xff
    dims = struct.unpack_from(">%dI" % ndim, data, 4)
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        sys.exit("%s: %d values for dims %s" % (path, arr.size, dims))
    return arr.reshape(dims)


def load_split(folder, prefix):
    """Images as normalised float32 [N,1,28,28] and labels as int64 [N] of one split."""
    x = idx_read(os.path.join(folder, prefix + "-images-idx3-ubyte.gz"), 0x803)
    y = idx_read(os.path.join(folder, prefix + "-labels-idx1-ubyte.gz"), 0x801)
    if len(x) != len(y):
        sys.exit("%s: %d images but %d labels" % (prefix, len(x), len(y)))
    x = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def lenet5_from_onnx():
    """export.py's LeNet5 with the weights of models/lenet5.onnx, matched by initializer name."""
    model = export.LeNet5()
    mp = onnx.load(os.path.join(ROOT, "models", "lenet5.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in mp.graph.initializer}
    state = model.state_dict()
    if set(inits) != set(state):
        sys.exit("models/lenet5.onnx does not match export.LeNet5: %s" % sorted(set(inits) ^ set(state)))
    with torch.no_grad():
        for k, v in state.items():
            v.copy_(torch.from_numpy(inits[k].copy()))
    return model


def evaluate(model, x, y, batch=1000):
    """Eval-mode accuracy on (x, y)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def main():
    """Train, printing one line per epoch and the final accuracy."""
    ap = argparse.ArgumentParser(description="PyTorch LeNet-5 on Fashion-MNIST: swatc's dense reference run.")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the four *-ubyte.gz files (Debian dataset-fashion-mnist)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    args = ap.parse_args()
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "t10k")
    print("data: %d train, %d test images (%.1f s to load)" % (len(xtr), len(xte), time.perf_counter() - t0))

    model = lenet5_from_onnx()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    n = len(xtr)
    per_epoch = math.ceil(n / BATCH)
    total = args.epochs * per_epoch
    gen = torch.Generator().manual_seed(0)
    print("lenet5: %d epochs x %d iterations, batch %d, SGD lr %g momentum %g wd %g, cosine per iteration "
          "to 0, %d threads" % (args.epochs, per_epoch, BATCH, LR, MOMENTUM, WEIGHT_DECAY, args.threads))
    it, train_time, train_cpu, history = 0, 0.0, 0.0, []
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for b in range(per_epoch):
            idx = perm[b * BATCH:(b + 1) * BATCH]
            x, y = xtr[idx], ytr[idx]
            lr = LR * (1 + math.cos(math.pi * it / total)) / 2
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
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        train_time += elapsed
        train_cpu += cpu
        test_acc = evaluate(model, xte, yte)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "test_acc": test_acc,
               "img_per_s": n / elapsed, "train_s": elapsed, "cpu_s": cpu, "load1": os.getloadavg()[0],
               "lr_end": lr}
        history.append(rec)
        print("epoch %d: train loss %.4f, train acc %.4f, test acc %.4f, %.0f img/s (%.1f s, cpu %.1f s, load %.2f), "
              "last lr %.3g" % (epoch + 1, rec["train_loss"], rec["train_acc"], test_acc, rec["img_per_s"], elapsed,
                                cpu, rec["load1"], lr))
        sys.stdout.flush()
    total_time = time.perf_counter() - t0
    final = history[-1]["test_acc"]
    print("final test accuracy %.4f after %d epochs; training %.1f s (%.0f img/s, cpu %.1f s), total %.1f s" % (
        final, args.epochs, train_time, args.epochs * n / train_time, train_cpu, total_time))
    if args.json:
        print(json.dumps({"model": "lenet5", "dataset": "fashion-mnist", "epochs": args.epochs, "batch": BATCH,
                          "threads": args.threads, "final_test_acc": final, "train_s": round(train_time, 2),
                          "train_cpu_s": round(train_cpu, 2),
                          "img_per_s": round(args.epochs * n / train_time, 1), "torch": torch.__version__,
                          "history": history}))


if __name__ == "__main__":
    main()
