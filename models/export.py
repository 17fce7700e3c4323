#!/usr/bin/python3
"""Export the networks swatc ships (and a test zoo) from PyTorch to ONNX, in training mode.

Run with Debian's interpreter, which has python3-torch, python3-torchvision and python3-onnx:

    /usr/bin/python3 models/export.py                  # ship: models/{lenet5,mlp,resnet20}.onnx
    /usr/bin/python3 models/export.py zoo --out DIR    # zoo: many models x opset 11/13 x static/dynamic
    /usr/bin/python3 models/export.py census FILE|DIR  # op census of existing .onnx files

Every export is seeded, so re-running writes byte-identical files. Files are written to a temporary
name and renamed into place. See models/README.md and models/EXPORTS.md.
"""

import argparse
import collections
import os
import sys
import warnings

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from onnx import numpy_helper

SEED = 0
EXPORT_BATCH = 2  # training-mode BN on 1x1 maps cannot be traced with batch 1

# PyTorch drops the in-place `num_batches_tracked += 1` of every training-mode BatchNorm and says so
# once per layer; that counter is not part of the ONNX graph, so the warning is noise here.
warnings.filterwarnings("ignore", message="ONNX Preprocess - Removing mutation")


# --------------------------------------------------------------------------------------------------
# Networks defined here (the torchvision ones come from torchvision.models)


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 input: conv5x5(pad 2) 6 - pool - conv5x5 16 - pool - fc 120 - 84 - 10."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)   # 28x28 -> 28x28, pool -> 14x14
        self.conv2 = nn.Conv2d(6, 16, 5)             # 14x14 -> 10x10, pool -> 5x5
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)  # the way most user code flattens
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Sequential):
    """MLP 784-512-256-10 with ReLU and Dropout(0.2) after each hidden layer."""

    def __init__(self, num_classes=10, p=0.2):
        super().__init__(collections.OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(784, 512)), ("relu1", nn.ReLU()), ("drop1", nn.Dropout(p)),
            ("fc2", nn.Linear(512, 256)), ("relu2", nn.ReLU()), ("drop2", nn.Dropout(p)),
            ("fc3", nn.Linear(256, num_classes)),
        ]))


class BasicBlock(nn.Module):
    """Post-activation residual block: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU.

    The shortcut is the identity, or a 1x1 conv + BN projection where the shape changes (option B).
    """

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016, sec. 4.2): 16/32/64 channels x 3 blocks, GAP, fc."""

    def __init__(self, in_channels=1, num_classes=10, blocks=(3, 3, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for width, count, stride in zip((16, 32, 64), blocks, (1, 2, 2)):
            stage = []
            for i in range(count):
                stage.append(BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)  # global average pool
        out = torch.flatten(out, 1)
        return self.fc(out)


class CifarResNet18(nn.Module):
    """ResNet-18 for 3x32x32 as in kuangliu/pytorch-cifar: 3x3 stem, no max-pool, avg_pool2d(4)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, layers = 64, []
        for width, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
            layers.append(nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width, 1)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


class WideBlock(nn.Module):
    """Pre-activation wide block as in xternalz/WideResNet-pytorch (BN-ReLU-conv, 1x1 shortcut)."""

    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.conv_shortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equal_in_out else self.conv_shortcut(x), out)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016) for 3x32x32; WRN-16-8 by default, no dropout."""

    def __init__(self, depth=16, widen=8, num_classes=10, drop_rate=0.0):
        super().__init__()
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, padding=1, bias=False)
        groups = []
        for i, stride in enumerate((1, 2, 2)):
            groups.append(nn.Sequential(*[
                WideBlock(ch[i] if j == 0 else ch[i + 1], ch[i + 1], stride if j == 0 else 1, drop_rate)
                for j in range(n)]))
        self.block1, self.block2, self.block3 = groups
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.channels = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.channels)
        return self.fc(out)


def vgg_cifar(builder):
    """A torchvision VGG made to work at 3x32x32: the standard CIFAR workaround.

    At 32x32 VGG's five max-pools leave a 1x1 map, and its AdaptiveAvgPool2d((7, 7)) would have to
    replicate it to 7x7, which torch.onnx cannot export ("output size that are not factor of input
    size"); the smallest input that exports unchanged is 224x224, with a 25088x4096 first fc layer
    (over 100 M parameters). So the pool becomes AdaptiveAvgPool2d(1) (exported as
    GlobalAveragePool) and the first classifier layer 512 -> 4096; the rest is torchvision's.
    """
    def make(num_classes=10):
        m = builder(num_classes=num_classes)
        m.avgpool = nn.AdaptiveAvgPool2d(1)
        m.classifier[0] = nn.Linear(512, 4096)
        return m
    return make


# name -> (constructor, input shape without the batch dimension)
SHIPPED = collections.OrderedDict([
    ("lenet5", (LeNet5, (1, 28, 28))),
    ("mlp", (MLP, (1, 28, 28))),
    ("resnet20", (ResNet20, (1, 28, 28))),
])

ZOO = collections.OrderedDict([
    ("resnet18", (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32))),
    ("vgg11_bn", (vgg_cifar(torchvision.models.vgg11_bn), (3, 32, 32))),
    ("vgg16_bn", (vgg_cifar(torchvision.models.vgg16_bn), (3, 32, 32))),
    ("mobilenet_v2", (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 32, 32))),
    ("densenet121", (lambda: torchvision.models.densenet121(num_classes=10), (3, 32, 32))),
    ("squeezenet1_1", (lambda: torchvision.models.squeezenet1_1(num_classes=10), (3, 32, 32))),
    ("shufflenet_v2_x1_0", (lambda: torchvision.models.shufflenet_v2_x1_0(num_classes=10), (3, 32, 32))),
    ("cifar_resnet18", (CifarResNet18, (3, 32, 32))),
    ("wrn16_8", (WideResNet, (3, 32, 32))),
    ("lenet5", (LeNet5, (1, 28, 28))),
    ("mlp", (MLP, (1, 28, 28))),
    ("resnet20", (ResNet20, (1, 28, 28))),
])

EVAL_MODELS = ("resnet18", "lenet5", "mobilenet_v2")


# --------------------------------------------------------------------------------------------------
# Export helpers


def build(ctor):
    """Build a model with the fixed seed, so its initial weights are the same on every run."""
    torch.manual_seed(SEED)
    return ctor()


def example_input(shape, batch):
    """A seeded random input batch of the given per-sample shape."""
    gen = torch.Generator().manual_seed(SEED)
    return torch.randn((batch,) + tuple(shape), generator=gen)


def write_atomic(model_proto, path):
    """Serialize an ONNX model to a temporary name next to path, then rename it into place."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model_proto.SerializeToString())
    os.replace(tmp, path)


def restore_buffers(model_proto, pristine):
    """Put the pre-export values of BN running statistics back into the exported initializers.

    A training-mode trace runs one forward pass, which updates every BatchNorm's running mean and
    variance in place, and torch.onnx reads the state after the trace. Shipped models should hold
    PyTorch's initial state (mean 0, var 1), so those initializers are rewritten by name.
    """
    fixed = 0
    for i, init in enumerate(model_proto.graph.initializer):
        if init.name.endswith((".running_mean", ".running_var")) and init.name in pristine:
            model_proto.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(pristine[init.name].numpy(), init.name))
            fixed += 1
    return fixed


def export_training(model, shape, path, opset, dynamic, pristine_stats=False):
    """Export model in training mode (no constant folding) with batch EXPORT_BATCH to path."""
    model.train()
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = example_input(shape, EXPORT_BATCH)
    tmp = path + ".torch.tmp"
    torch.onnx.export(
        model, x, tmp,
        export_params=True,
        training=torch.onnx.TrainingMode.TRAINING,
        do_constant_folding=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)
    mp = onnx.load(tmp)
    if pristine_stats:
        restore_buffers(mp, snapshot)
    write_atomic(mp, path)
    os.remove(tmp)
    return mp


def export_eval(model, shape, path):
    """Export model the way a user exports for inference: eval mode, torch.onnx.export defaults."""
    model.eval()
    x = example_input(shape, 1)
    tmp = path + ".tmp"
    torch.onnx.export(model, x, tmp)
    os.replace(tmp, path)
    return onnx.load(path)


def count_params(model):
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def op_census(mp):
    """Counter of op types over the main graph and every subgraph."""
    census = collections.Counter()

    def walk(graph):
        for node in graph.node:
            census[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(mp.graph)
    return census


def opset_of(mp):
    """The default-domain opset version the model imports."""
    return next(o.version for o in mp.opset_import if o.domain in ("", "ai.onnx"))


def shape_str(value_info):
    """Shape of a graph input/output as 'batch,3,32,32' (dim_param names kept)."""
    dims = value_info.type.tensor_type.shape.dim
    return ",".join(d.dim_param if d.HasField("dim_param") else str(d.dim_value) for d in dims)


def check_and_describe(mp, label):
    """Run the ONNX checker (with shape inference) on mp and print one census line."""
    onnx.checker.check_model(mp, full_check=True)
    census = op_census(mp)
    ops = ", ".join("%s x%d" % (k, v) for k, v in sorted(census.items()))
    print("%-34s opset %d ir %d in [%s] out [%s]: %s" % (
        label, opset_of(mp), mp.ir_version, shape_str(mp.graph.input[0]),
        shape_str(mp.graph.output[0]), ops))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# Modes


def run_ship(out_dir):
    """Export the shipped models into out_dir: opset 13, dynamic batch, pristine BN statistics."""
    os.makedirs(out_dir, exist_ok=True)
    for name, (ctor, shape) in SHIPPED.items():
        model = build(ctor)
        path = os.path.join(out_dir, name + ".onnx")
        mp = export_training(model, shape, path, 13, dynamic=True, pristine_stats=True)
        print("%s: %d parameters, %d bytes" % (path, count_params(model), os.path.getsize(path)))
        check_and_describe(mp, name + ".onnx")


def run_zoo(out_dir, only):
    """Export every zoo model at opset 11 and 13, static and dynamic batch, plus the eval exports."""
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# file\topset\tbatch\tmode\tinput_shape"]
    for name, (ctor, shape) in ZOO.items():
        if only and name not in only:
            continue
        for opset in (11, 13):
            for dynamic in (False, True):
                fname = "%s.op%d.%s.onnx" % (name, opset, "dyn" if dynamic else "static")
                mp = export_training(build(ctor), shape, os.path.join(out_dir, fname), opset, dynamic)
                check_and_describe(mp, fname)
                lines.append("%s\t%d\t%s\ttraining\t%s" % (
                    fname, opset, "dynamic" if dynamic else "static", shape_str(mp.graph.input[0])))
        if name in EVAL_MODELS:
            fname = "%s.eval.onnx" % name
            mp = export_eval(build(ctor), shape, os.path.join(out_dir, fname))
            check_and_describe(mp, fname)
            lines.append("%s\t%d\tstatic\teval\t%s" % (fname, opset_of(mp), shape_str(mp.graph.input[0])))
    manifest = os.path.join(out_dir, "manifest.txt")
    with open(manifest + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(manifest + ".tmp", manifest)
    print("wrote %s (%d files)" % (manifest, len(lines) - 1))


def run_census(paths):
    """Print the op census of each .onnx file named (directories are searched, sorted)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".onnx"))
        else:
            files.append(p)
    pairs = collections.Counter()
    for path in files:
        mp = onnx.load(path)
        check_and_describe(mp, os.path.basename(path))
        for op in op_census(mp):
            pairs[(op, opset_of(mp))] += 1
    print("(op_type, opset) pairs -> number of files:")
    for (op, opset), n in sorted(pairs.items()):
        print("  %-22s %2d  %d" % (op, opset, n))


def main():
    """Parse the command line and run one mode."""
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Export swatc's networks to ONNX in training mode.")
    ap.add_argument("mode", nargs="?", default="ship", choices=("ship", "zoo", "census"),
                    help="ship: the committed models (default); zoo: test exports; census: describe files")
    ap.add_argument("paths", nargs="*", help="census: .onnx files or folders")
    ap.add_argument("--out", help="output folder (ship: default models/; zoo: required)")
    ap.add_argument("--only", action="append", default=[], help="zoo: export only this model (repeatable; the manifest then lists only these)")
    args = ap.parse_args()
    if args.mode == "ship":
        run_ship(args.out or here)
    elif args.mode == "zoo":
        if not args.out:
            ap.error("zoo needs --out DIR (the zoo is large and is not committed)")
        unknown = [n for n in args.only if n not in ZOO]
        if unknown:
            ap.error("unknown zoo model(s) %s; choose from %s" % (", ".join(unknown), ", ".join(ZOO)))
        run_zoo(args.out, args.only)
    else:
        if not args.paths:
            ap.error("census needs .onnx files or folders")
        run_census(args.paths)


if __name__ == "__main__":
    main()
