#!/usr/bin/python3
"""Golden SWAT training steps from PyTorch for swatc's C test tests/golden_swat/test_golden_swat.c:
tests/golden_torch/swat_{lenet5,resnet20}_{uniform,erk}.swtb.

Run with Debian's interpreter (python3-torch, python3-onnx):

    /usr/bin/python3 tests/golden_torch/make_golden_swat.py             # write the four bundles (~4 s)
    /usr/bin/python3 tests/golden_torch/make_golden_swat.py measure     # fp32-vs-fp64 noise tables
    /usr/bin/python3 tests/golden_torch/make_golden_swat.py search      # rank batch seeds (~40 min for all)
    /usr/bin/python3 tests/golden_torch/make_golden_swat.py robustness  # decision flips under emulated noise
    /usr/bin/python3 tests/golden_torch/make_golden_swat.py dump FILE   # list a bundle's tensors

This is an independent implementation of SWAT's per-layer rule (/work/shared/SWAT.md) as
torch.autograd.Function subclasses, for every Conv2d and Linear layer of the model:

    forward:   W_s = TopK_s(W);  Y = conv(X, W_s) + b  with the DENSE X;  saved: X_s = TopK_s(X), W_s
    backward:  dX = conv_backward_data(dY, W_s)  (dY dense);  dW = conv_backward_weight(dY, X_s)  (dense);
               db = sum(dY)
    TopK_s(T): keep |T| >= the k-th largest |T|, k = ceil((1 - s) * numel(T)) over the whole tensor (the
               whole layer's weight; the whole N*C*H*W minibatch activation), ties kept, the rest zeroed.

SGD (lr 0.05, momentum 0.9, weight decay 5e-4 on every parameter, PyTorch semantics) updates every entry
of W, and the next forward selects Top-K again from the updated W: threshold period P = 1. Biases and
BatchNorm are never sparsified. Budgets, at global sparsity s = 0.9:

    uniform: every layer at s except the first conv (forward order), which stays dense (weights and input);
    erk:     RigL's Erdos-Renyi-Kernel, solved here in exact rational arithmetic (erk_densities), every
             layer eligible.

The model, weights and batch come from make_golden.py (models/export.py's definition with the
initializers of models/<name>.onnx; 8 standard-normal images and labels from torch.Generator seeded with
the bundle's batch seed). On that one batch, STEPS = 5 SGD steps; see bundle_items for what is stored.
The batch seeds were chosen by `search`: ReLU, max-pool and Top-K decisions are discontinuous, and in
ResNet-20 one decision flipped by rounding is amplified by the later SWAT steps into errors of 1e-2..1;
the chosen seeds have no flip between float32 and float64 and the fewest under emulated float32 noise
(see tests/golden_swat/README.md, "Batch seeds" and "Chaos").
"""

import argparse
import collections
import math
import os
import sys
from fractions import Fraction

sys.dont_write_bytecode = True  # no __pycache__ in tests/golden_torch or models/
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (bundle format, model loading, batch, decision recorder)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SPARSITY = Fraction(9, 10)
STEPS = 5
BUDGETS = ("uniform", "erk")
NAMES = ("lenet5", "resnet20")
# ERK densities also stored at these sparsities (config/erk_table/<s>/<weight>), with the nonzeros of
# TopK of the initial weights at them (nnz_table/<s>/<weight>): the C test checks swatc's solver where
# other layers become dense, and its Top-K count k = ceil(density * numel) at non-decimal densities.
ERK_TABLE = ("0.5", "0.7", "0.8", "0.95", "0.99")
# step5/ tensors stored as their leading rows only (bundle < 2 MB): ResNet-20's five 64x64x3x3 convs of
# stage 3 keep 16 of their 64 output channels, as in make_golden.py's resnet20.swtb.
PARTIAL = {
    "lenet5": {},
    "resnet20": {("step%d" % STEPS, n): 16 for n in (
        "layer3.0.conv2.weight", "layer3.1.conv1.weight", "layer3.1.conv2.weight",
        "layer3.2.conv1.weight", "layer3.2.conv2.weight")},
}
# Batch seed per bundle, by `search` (tests/golden_swat/README.md): LeNet-5, the largest decision margin of
# seeds 0..63 (all of them flip nothing under noise 4e-7); ResNet-20, the most flip-free steps under noise
# 1e-7 (6 trials) among the seeds 0..63 whose float32 run decides as float64 does.
BATCH_SEEDS = {
    ("lenet5", "uniform"): 51, ("lenet5", "erk"): 13,
    ("resnet20", "uniform"): 13, ("resnet20", "erk"): 8,
}


def bundle_path(name, budget):
    """tests/golden_torch/swat_<name>_<budget>.swtb"""
    return os.path.join(HERE, "swat_%s_%s.swtb" % (name, budget))


# --------------------------------------------------------------------------------------------------
# Budgets


def erk_densities(shapes, sparsity):
    """RigL's Erdos-Renyi-Kernel densities, exactly (Fractions): d_l = min(1, eps * raw_l) with
    raw_l = sum(shape_l) / prod(shape_l) and sum_l d_l * N_l = (1 - sparsity) * sum_l N_l.

    While the largest eps * raw_l of the sparse layers exceeds 1, every layer tied at that largest raw
    becomes dense and eps is solved again over the others."""
    numel = [math.prod(s) for s in shapes]
    raw = [Fraction(sum(s), math.prod(s)) for s in shapes]
    budget = (1 - Fraction(sparsity)) * sum(numel)
    dense = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        if not free:
            return [Fraction(1)] * len(shapes)
        eps = (budget - sum(numel[i] for i in dense)) / sum(raw[i] * numel[i] for i in free)
        if eps <= 0:
            raise ValueError("sparsity %s cannot be met" % sparsity)
        top = max(raw[i] for i in free)
        if eps * top <= 1:
            break
        dense.update(i for i in free if raw[i] == top)
    dens = [Fraction(1) if i in dense else eps * raw[i] for i in range(len(shapes))]
    assert sum(d * n for d, n in zip(dens, numel)) == budget and all(0 < d <= 1 for d in dens)
    return dens


def layer_densities(layers, budget, sparsity=SPARSITY):
    """Density (Fraction) of each SWAT layer [(module name, module)] in forward order under a budget."""
    if budget == "erk":
        return erk_densities([tuple(m.weight.shape) for _, m in layers], sparsity)
    return [Fraction(1) if i == 0 else 1 - Fraction(sparsity) for i in range(len(layers))]


def topk_count(density, numel):
    """k = ceil(density * numel) (at least 1), exactly."""
    return max(1, math.ceil(Fraction(density) * numel))


# --------------------------------------------------------------------------------------------------
# SWAT layers


class TopKRecorder:
    """While active (`with`), topk_keep appends ("topk", input copy, k) to `calls` (shared with a
    make_golden.DecisionRecorder so that every decision lands in one list, in call order)."""
    active = None


def topk_keep(t, k):
    """TopK: t where |t| >= the k-th largest |t| over the whole tensor (ties kept), 0 elsewhere."""
    if TopKRecorder.active is not None:
        TopKRecorder.active.append(("topk", t.detach().clone(), k))
    n = t.numel()
    if k >= n:
        return t.clone()
    a = t.abs()
    thr = torch.kthvalue(a.reshape(-1), n - k + 1).values  # the k-th largest
    return torch.where(a >= thr, t, torch.zeros_like(t))


class SwatLayer:
    """SWAT's state of one Conv2d/Linear: its density and what its last forward kept."""

    def __init__(self, name, density):
        self.name, self.density = name, density
        self.nnz_w = self.nnz_x = None  # nonzeros of W_s and X_s in the latest forward

    def sparsify(self, w, x):
        """(W_s, X_s) at this layer's density."""
        w_s = topk_keep(w, topk_count(self.density, w.numel()))
        x_s = topk_keep(x, topk_count(self.density, x.numel()))
        self.nnz_w, self.nnz_x = int(torch.count_nonzero(w_s)), int(torch.count_nonzero(x_s))
        return w_s, x_s


class SwatConv2d(torch.autograd.Function):
    """Y = conv2d(X, TopK(W)) + b; dX from TopK(W), dW from TopK(X), db = sum(dY)."""

    @staticmethod
    def forward(ctx, x, w, b, layer, stride, padding, dilation, groups):
        w_s, x_s = layer.sparsify(w, x)
        ctx.save_for_backward(x_s, w_s)
        ctx.conf = (stride, padding, dilation, groups, b is not None)
        return F.conv2d(x, w_s, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        x_s, w_s = ctx.saved_tensors
        stride, padding, dilation, groups, has_b = ctx.conf
        # dX reads only dY and W_s, dW only dY and X_s: one call does both (PyTorch's own conv backward)
        dx, dw, db = torch.ops.aten.convolution_backward(
            dy, x_s, w_s, [w_s.shape[0]] if has_b else None, list(stride), list(padding), list(dilation),
            False, [0, 0], groups, [ctx.needs_input_grad[0], True, has_b])
        return dx, dw, db, None, None, None, None, None


class SwatLinear(torch.autograd.Function):
    """Y = X TopK(W)^T + b; dX = dY TopK(W), dW = dY^T TopK(X), db = column sums of dY."""

    @staticmethod
    def forward(ctx, x, w, b, layer):
        w_s, x_s = layer.sparsify(w, x)
        ctx.save_for_backward(x_s, w_s)
        ctx.has_b = b is not None
        return F.linear(x, w_s, b)

    @staticmethod
    def backward(ctx, dy):
        x_s, w_s = ctx.saved_tensors
        dx = dy.mm(w_s) if ctx.needs_input_grad[0] else None
        return dx, dy.t().mm(x_s), dy.sum(0) if ctx.has_b else None, None


def swat_layers(model):
    """The model's Conv2d and Linear modules [(name, module)] in forward order (= registration order
    for export.LeNet5 and export.ResNet20, checked by swat_install)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def swat_install(model, budget):
    """Replace the forward of every Conv2d/Linear by SWAT's; returns [SwatLayer] in forward order."""
    layers = swat_layers(model)
    dens = layer_densities(layers, budget)
    out, order = [], []
    for (name, mod), d in zip(layers, dens):
        layer = SwatLayer(name, d)
        out.append(layer)

        if isinstance(mod, torch.nn.Conv2d):
            assert mod.padding_mode == "zeros" and not isinstance(mod.padding, str)

            def fwd(x, mod=mod, layer=layer):
                order.append(layer.name)
                return SwatConv2d.apply(x, mod.weight, mod.bias, layer, mod.stride, mod.padding, mod.dilation,
                                        mod.groups)
        else:
            def fwd(x, mod=mod, layer=layer):
                order.append(layer.name)
                return SwatLinear.apply(x, mod.weight, mod.bias, layer)
        mod.forward = fwd
    model.swat_call_order = order  # filled by the first forward; run() checks it against `layers`
    return out


# --------------------------------------------------------------------------------------------------
# The computation


def run(name, budget, dtype=torch.float32, seed=None, hook=None):
    """SWAT training of model `name` with `budget` for STEPS SGD steps on the fixed batch, in dtype.

    Returns (tensors, layers, init_names): an ordered name -> tensor map (input, labels, logits,
    step<k>/loss, grad/<param> of step 1, step<STEPS>/<init>), the [SwatLayer] (nnz_w/nnz_x of step 1),
    and the initializer names. seed overrides the bundle's batch seed; hook (robustness) becomes a
    forward hook of every Conv2d, Linear and BatchNorm2d."""
    model, init_names = mg.build_model(name, dtype)
    layers = swat_install(model, budget)
    if hook is not None:
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
                mod.register_forward_hook(hook)
    x, labels = mg.make_batch(name, BATCH_SEEDS[(name, budget)] if seed is None else seed)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=mg.LR, momentum=mg.MOMENTUM, weight_decay=mg.WEIGHT_DECAY)
    out = collections.OrderedDict()
    out["input"] = x
    out["labels"] = labels
    nnz = None
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        logits = model(x.to(dtype))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        if step == 1:
            if model.swat_call_order != [layer.name for layer in layers]:
                sys.exit("%s: layers run in the order %s, not in registration order" % (name, model.swat_call_order))
            nnz = [(layer.nnz_w, layer.nnz_x) for layer in layers]
            out["logits"] = logits.detach().clone()
            for k in init_names:
                if k in params:
                    out["grad/" + k] = params[k].grad.detach().clone()
        out["step%d/loss" % step] = loss.detach().clone()
        opt.step()
    for layer, (w, a) in zip(layers, nnz):
        layer.nnz_w, layer.nnz_x = w, a
    state = model.state_dict()
    for k in init_names:
        out["step%d/%s" % (STEPS, k)] = state[k].detach().clone()
    return out, layers, init_names


def rational(q):
    """A Fraction as an int64 [numerator, denominator] array."""
    assert q.denominator < 2 ** 63 and abs(q.numerator) < 2 ** 63
    return np.array([q.numerator, q.denominator], dtype=np.int64)


def bundle_items(name, budget, tensors, layers):
    """The stored form of run()'s output plus config/ (see tests/golden_swat/README.md)."""
    items = []
    for key, t in tensors.items():
        arr = t.detach().cpu().numpy()
        arr = arr.astype(np.int64 if arr.dtype == np.int64 else np.float32)
        prefix, _, init = key.partition("/")
        rows = PARTIAL[name].get((prefix, init))
        if rows is not None:
            arr, key = arr[:rows], "%s[:%d]" % (key, rows)
        items.append((key, arr))
    config = [("config/lr", mg.LR), ("config/momentum", mg.MOMENTUM), ("config/weight_decay", mg.WEIGHT_DECAY),
              ("config/steps", STEPS), ("config/batch_seed", BATCH_SEEDS[(name, budget)]),
              ("config/sparsity", float(SPARSITY)), ("config/period", 1)]
    items += [(k, np.array(v, dtype=np.float32)) for k, v in config]
    items.append(("config/budget", np.array(BUDGETS.index(budget), dtype=np.int64)))
    weights = []
    for layer in layers:
        w = layer.name + ".weight"
        weights.append(w)
        items.append(("config/density/" + w, rational(layer.density)))
    for layer in layers:
        items.append(("nnz/" + layer.name + ".weight", np.array([layer.nnz_w, layer.nnz_x], dtype=np.int64)))
    if budget == "erk":
        model, _ = mg.build_model(name, torch.float32)
        mods = [m for _, m in swat_layers(model)]
        for s in ERK_TABLE:
            dens = erk_densities([tuple(m.weight.shape) for m in mods], Fraction(s))
            for w, d in zip(weights, dens):
                items.append(("config/erk_table/%s/%s" % (s, w), rational(d)))
            for w, d, m in zip(weights, dens, mods):  # nonzeros of TopK of the initial weights
                nnz = torch.count_nonzero(topk_keep(m.weight.detach(), topk_count(d, m.weight.numel())))
                items.append(("nnz_table/%s/%s" % (s, w), np.array(int(nnz), dtype=np.int64)))
    return items


# --------------------------------------------------------------------------------------------------
# Decision margins


class DecisionRecorder(mg.DecisionRecorder):
    """make_golden's recorder of ReLU and max-pool inputs, plus every TopK input (kind "topk", k)."""

    def __enter__(self):
        super().__enter__()
        TopKRecorder.active = self.calls
        return self

    def __exit__(self, *exc):
        TopKRecorder.active = None
        return super().__exit__(*exc)


def decision_gaps(kind, x, arg):
    """Distances of decisions from their boundaries. TopK: the gap between the k-th and (k+1)-th largest
    |x| (an element crosses the threshold only if one of them moves by half of it); none when every
    element is kept (k >= numel, or the k-th largest is 0: fewer nonzeros than k). ReLU, max-pool: as in
    make_golden.py."""
    if kind != "topk":
        return mg.decision_gaps(kind, x, arg)
    a = x.abs().reshape(-1)
    if arg >= a.numel():
        return a[:0]
    v = torch.topk(a, arg + 1).values
    if v[arg - 1] == 0:
        return a[:0]
    return (v[arg - 1] - v[arg]).reshape(1)


def flips(kind, a, b, arg):
    """How many decisions differ between inputs a (reference) and b of one call."""
    if kind == "relu":
        return int(((a > 0) != (b > 0)).sum())
    if kind == "topk":
        return int(((topk_keep(a, arg) != 0) != (topk_keep(b, arg) != 0)).sum())
    k = arg if isinstance(arg, int) else arg[0]
    win = [t.unfold(2, k, k).unfold(3, k, k).reshape(t.shape[0], t.shape[1], -1, k * k) for t in (a, b)]
    return int((win[0].argmax(-1) != win[1].argmax(-1)).sum())


def decision_calls(name, budget, dtype, seed, hook=None):
    """Every ReLU, max-pool and TopK input of run()'s STEPS forward passes, in call order."""
    with DecisionRecorder() as rec:
        run(name, budget, dtype, seed, hook)
    return rec.calls


def decision_margin(calls64, calls32):
    """Smallest (fp64 distance of a decision from its boundary) / (the call's float32 noise) over the
    STEPS forward passes, and where it occurs. Calls whose fp32 and fp64 inputs are identical (the step-1
    weights) are skipped: no implementation can decide them differently."""
    per = len(calls64) // STEPS
    worst, where = math.inf, None
    for i, ((kind, x64, arg), (_, x32, _)) in enumerate(zip(calls64, calls32)):
        noise = (x32.double() - x64).abs().max().item()
        if noise == 0:
            continue
        gaps = decision_gaps(kind, x64, arg)
        if gaps.numel() == 0:
            continue
        ratio = gaps.min().item() / noise
        if ratio < worst:
            worst, where = ratio, "%s call %d of %d (step %d), min gap %.2e, fp32 noise %.2e" % (
                kind, i % per, per, i // per + 1, gaps.min().item(), noise)
    return worst, where


def flip_counts(calls_a, calls_b):
    """Per step, [ReLU + max-pool flips, TopK flips] between two recordings of the same run."""
    per = len(calls_a) // STEPS
    out = [[0, 0] for _ in range(STEPS)]
    for i, (a, b) in enumerate(zip(calls_a, calls_b)):
        out[i // per][a[0] == "topk"] += flips(a[0], a[1].double(), b[1].double(), a[2])
    return out


def first_flip(counts):
    """The first step (1-based) of flip_counts() with a flip, or STEPS + 1 if none has."""
    return next((s + 1 for s, c in enumerate(counts) if sum(c)), STEPS + 1)


def perturbation(eps, trial):
    """A forward hook multiplying a module's output by (1 + eps * N(0,1)), drawn from a trial-seeded generator."""
    gen = torch.Generator().manual_seed(1000 + trial)

    def perturb(mod, inputs, out):
        return out * (1 + eps * torch.randn(out.shape, generator=gen, dtype=out.dtype))
    return perturb


# --------------------------------------------------------------------------------------------------
# Modes


def run_write(bundles):
    """Write each bundle and read it back as a check."""
    mg.setup_torch(1)
    for name, budget in bundles:
        tensors, layers, _ = run(name, budget)
        items = bundle_items(name, budget, tensors, layers)
        data = mg.bundle_bytes(items)
        if len(data) > mg.MAX_BYTES:
            sys.exit("%s %s: %d bytes is over the %d budget; store more tensors partially" % (
                name, budget, len(data), mg.MAX_BYTES))
        path = bundle_path(name, budget)
        mg.bundle_write(path, items)
        back = mg.bundle_read(path)
        assert list(back) == [k for k, _ in items]
        for k, v in items:
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
        losses = " ".join("%.6f" % float(tensors["step%d/loss" % s]) for s in range(1, STEPS + 1))
        print("%s: %d tensors, %d bytes; losses %s" % (path, len(items), len(data), losses))
        for layer in layers:
            print("    %-28s density %-10.6f nnz W_s %6d  X_s %7d" % (
                layer.name, float(layer.density), layer.nnz_w, layer.nnz_x))


def run_measure(bundles):
    """Per bundle: float32 (as stored, 2 threads, no oneDNN) against float64, per tensor category."""
    for name, budget in bundles:
        mg.setup_torch(1)
        ref64, _, _ = run(name, budget, torch.float64)
        f32, _, _ = run(name, budget, torch.float32)
        initial = {k: torch.from_numpy(v.copy()).double() for k, v in mg.onnx_initializers(name).items()}
        variants = [("fp32 vs fp64", f32)]
        torch.set_num_threads(2)
        variants.append(("fp32 2 threads vs fp64", run(name, budget, torch.float32)[0]))
        torch.set_num_threads(1)
        torch.backends.mkldnn.enabled = False
        variants.append(("fp32 no-oneDNN vs fp64", run(name, budget, torch.float32)[0]))
        torch.backends.mkldnn.enabled = True
        seed = BATCH_SEEDS[(name, budget)]
        c64 = decision_calls(name, budget, torch.float64, seed)
        c32 = decision_calls(name, budget, torch.float32, seed)
        margin, where = decision_margin(c64, c32)
        flipped = " ".join("%d/%d" % tuple(c) for c in flip_counts(c64, c32))
        print("## %s %s (batch seed %d)" % (name, budget, BATCH_SEEDS[(name, budget)]))
        print("decision margin %.2f at %s" % (margin, where))
        print("fp32 vs fp64 decision flips (ReLU+pool / TopK) in steps 1..%d: %s" % (STEPS, flipped))
        for label, got in variants:
            print("### %s" % label)
            print("| tensors | n | max abs err | max abs err / max abs | worst tensor | err / max update |")
            print("|---|---:|---:|---:|---|---:|")
            for cat, (n, mabs, norm, _, upd, worst) in mg.compare(ref64, got, initial).items():
                print("| %s | %d | %.2e | %.2e | %s | %s |" % (
                    cat, n, mabs, norm, worst, "%.2e" % upd if cat == "step%d/*" % STEPS else ""))
        a = mg.bundle_bytes(bundle_items(name, budget, f32, run(name, budget)[1]))
        mg.setup_torch(1)
        t2, l2, _ = run(name, budget, torch.float32)
        print("re-run identical: %s" % (a == mg.bundle_bytes(bundle_items(name, budget, t2, l2))))
        sys.stdout.flush()


def run_search(bundles, seeds, eps, trials):
    """Rank the batch seeds `seeds` of each bundle: for each, the decision margin (fp32 vs fp64), the first
    step where fp32 and fp64 decide differently, and the first step with a flipped decision in each of
    `trials` float32 runs whose Conv/Linear/BatchNorm outputs carry (1 + eps * N(0,1)) noise. Best: the
    largest sum of first-flip steps (STEPS + 1 = no flip), then the largest margin."""
    mg.setup_torch(1)
    for name, budget in bundles:
        best = None
        for seed in seeds:
            c64 = decision_calls(name, budget, torch.float64, seed)
            c32 = decision_calls(name, budget, torch.float32, seed)
            margin, where = decision_margin(c64, c32)
            firsts = [first_flip(flip_counts(c64, c32))]
            for trial in range(trials):
                cn = decision_calls(name, budget, torch.float32, seed, perturbation(eps, trial))
                firsts.append(first_flip(flip_counts(c32, cn)))
            score = (sum(firsts), margin)
            print("%s %s seed %d: first flip step fp32 %d, noisy %s; margin %.2f at %s" % (
                name, budget, seed, firsts[0], " ".join(str(f) for f in firsts[1:]), margin, where))
            sys.stdout.flush()
            if best is None or score > best[0]:
                best = (score, seed)
        print("%s %s: best seed %d (first-flip sum %d of %d, margin %.2f)" % (
            name, budget, best[1], best[0][0], (trials + 1) * (STEPS + 1), best[0][1]))


def run_robustness(bundles, eps_list, trials):
    """Emulate other fp32 implementations: float64 with every Conv/Linear/BatchNorm output multiplied by
    (1 + eps * N(0,1)); per trial, the ReLU + max-pool / TopK decisions that flip in each step's forward
    (against the unperturbed float64 run) and how far the stored results move."""
    mg.setup_torch(1)
    for name, budget in bundles:
        init = {k: torch.from_numpy(v.copy()).double() for k, v in mg.onnx_initializers(name).items()}
        seed = BATCH_SEEDS[(name, budget)]
        with DecisionRecorder() as rec0:
            ref, _, _ = run(name, budget, torch.float64)
        print("## %s %s (batch seed %d)" % (name, budget, seed))
        print("| eps | trial | flips relu+pool / topk, steps 1..%d | grad err max | step%d/loss rel err "
              "| step%d err / update | step%d err / max abs |" % (STEPS, STEPS, STEPS, STEPS))
        print("|---|---:|---|---:|---:|---:|---:|")
        for eps in eps_list:
            for trial in range(trials):
                with DecisionRecorder() as rec:
                    out, _, _ = run(name, budget, torch.float64, hook=perturbation(eps, trial))
                steps = " ".join("%d/%d" % tuple(c) for c in flip_counts(rec0.calls, rec.calls))
                gerr = max(((out[k] - ref[k]).abs().max() / ref[k].abs().max()).item()
                           for k in ref if k.startswith("grad/") and ref[k].abs().max() > 0)
                lk = "step%d/loss" % STEPS
                lrel = abs(out[lk] - ref[lk]).item() / ref[lk].item()
                upd = wrel = 0.0
                for k in ref:
                    if k.startswith("step%d/" % STEPS) and k != lk:
                        err = (out[k] - ref[k]).abs().max().item()
                        delta = (ref[k] - init[k.split("/", 1)[1]]).abs().max().item()
                        if delta > 0:
                            upd = max(upd, err / delta)
                        wrel = max(wrel, err / ref[k].abs().max().item())
                print("| %.0e | %d | %s | %.1e | %.1e | %.1e | %.1e |" % (eps, trial, steps, gerr, lrel, upd, wrel))
                sys.stdout.flush()


def main():
    """Parse the command line and run one mode."""
    ap = argparse.ArgumentParser(description="Golden SWAT training steps from PyTorch for swatc's C tests.")
    ap.add_argument("mode", nargs="?", default="write", choices=("write", "measure", "search", "robustness", "dump"))
    ap.add_argument("--only", action="append", default=[], choices=NAMES, help="only this model (repeatable)")
    ap.add_argument("--budget", action="append", default=[], choices=BUDGETS, help="only this budget (repeatable)")
    ap.add_argument("--batch-seed", type=int, help="measure/robustness: use this batch seed")
    ap.add_argument("--seeds", default="64", help="search: try seeds 0..N-1, or a comma-separated list")
    ap.add_argument("--eps", help="robustness: relative perturbations to try (default 1e-7,4e-7,1e-6); "
                    "search: the one perturbation (default 4e-7)")
    ap.add_argument("--trials", type=int, default=4, help="robustness, search: noisy trials per eps")
    ap.add_argument("paths", nargs="*", help="dump: .swtb files")
    args = ap.parse_args()
    bundles = [(n, b) for n in (args.only or NAMES) for b in (args.budget or BUDGETS)]
    if args.batch_seed is not None:
        if args.mode not in ("measure", "robustness"):
            ap.error("--batch-seed is for measure and robustness (the bundles use BATCH_SEEDS)")
        for key in bundles:
            BATCH_SEEDS[key] = args.batch_seed
    if args.mode == "write":
        run_write(bundles)
    elif args.mode == "measure":
        run_measure(bundles)
    elif args.mode == "search":
        seeds = [int(v) for v in args.seeds.split(",")] if "," in args.seeds else range(int(args.seeds))
        run_search(bundles, seeds, float(args.eps or 4e-7), args.trials)
    elif args.mode == "robustness":
        run_robustness(bundles, [float(v) for v in (args.eps or "1e-7,4e-7,1e-6").split(",")], args.trials)
    else:
        if not args.paths:
            ap.error("dump needs .swtb files")
        mg.run_dump(args.paths)


if __name__ == "__main__":
    main()
