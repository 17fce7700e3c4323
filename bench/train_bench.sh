#!/usr/bin/env bash
# Training throughput of swatc vs PyTorch (Debian's python3-torch) on the shipped models, measured in
# one run on the same machine, same batch and threads, plus the GFLOP/s swatc's Conv/Gemm kernels
# reach inside the training step against the machine's peak (2 cores x 213 = 413 GFLOP/s fp32).
#
#   bench/train_bench.sh [BUILD_DIR] [THREADS] [BATCH]
#
# swatc trains on synthetic 1x28x28 images held in memory (2 epochs of 30 steps; the second epoch's
# img/s is reported: kernels are planned and JIT-compiled during the first). PyTorch trains the same
# network definition (models/export.py) on one in-memory batch (bench/torch/train_throughput.py).
# Both include forward, backward and the SGD update. Not a test: numbers depend on the machine and
# on what else runs on it (the load average is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
batch=${3:-128}
swatc=$build/tools/swatc
[ -x "$swatc" ] || { echo "bench: build first (./setup.sh, or ninja -C $build)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
peak=$(awk -v t="$threads" 'BEGIN { printf "%.0f", 206.5 * t }')

printf '%-10s %12s %12s %8s %16s %10s\n' model swatc_img/s torch_img/s ratio conv_GFLOP/s of_peak
for m in lenet5 resnet20; do
  "$swatc" train "models/$m.onnx" --data synthetic --limit-train $((30 * batch)) --limit-test "$batch" --epochs 2 \
    --batch "$batch" --threads "$threads" --metrics "$tmp/$m.jsonl" --profile -q > "$tmp/$m.out" 2>&1
  s=$(sed -n 2p "$tmp/$m.jsonl" | tr ',{}' '\n\n\n' | sed -n 's/^"img_per_s"://p')
  g=$(sed -n 's/.*Conv\/Gemm kernels: \([0-9.]*\) GFLOP\/s.*/\1/p' "$tmp/$m.out")
  t=$(/usr/bin/python3 bench/torch/train_throughput.py --models "$m" --batch "$batch" --threads "$threads" 2>/dev/null |
      tr ',{}' '\n\n\n' | sed -n 's/^ *"img_per_s": *//p')
  awk -v m="$m" -v s="$s" -v t="$t" -v g="$g" -v p="$peak" \
    'BEGIN { printf "%-10s %12.0f %12.0f %7.2fx %16.1f %9.0f%%\n", m, s, t, s / t, g, 100 * g / p }'
done
echo "peak: $peak GFLOP/s ($threads threads); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "per-layer time and GFLOP/s of the last model's training step:"
sed -n '/per layer, ms per run/,/kernels chosen/p' "$tmp/resnet20.out" | sed '$d'
