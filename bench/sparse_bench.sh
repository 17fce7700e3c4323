#!/usr/bin/env bash
# Whole training step, sparse vs dense: swatc SWAT-U 0.9, SWAT-ERK 0.9 and structured channel 0.7
# against swatc dense and PyTorch dense (Debian's python3-torch, same network), all measured in one
# run on the same machine, same batch and threads; plus the peak resident memory of each training
# run and, per model, the per-layer profile of the SWAT-U 0.9 step.
#
#   bench/sparse_bench.sh [BUILD_DIR] [THREADS] [BATCH] [MODELS] [ROUNDS]
#
# swatc trains on synthetic images held in memory (2 epochs of 30 steps; the second epoch's img/s is
# the steady state: kernels are planned and JIT-compiled during the first). The step time includes
# forward, backward, Top-K and the SGD update. Every configuration runs ROUNDS times (default 2),
# the rounds interleaved, and the fastest round counts (other processes only ever slow a run down).
# Peak memory is the child's ru_maxrss. Not a test:
# numbers depend on the machine and on what else runs on it (the load average is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
batch=${3:-128}
models=${4:-"lenet5 resnet20"}
rounds=${5:-2}
swatc=$build/tools/swatc
py=/usr/bin/python3
[ -x "$swatc" ] || { echo "bench: build first (./setup.sh, or ninja -C $build)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# runs a command, prints the child's peak RSS in MiB on fd 3
peak_rss() {
  $py -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, file=sys.stderr)
sys.exit(r.returncode)' "$@"
}

configs=("dense|" "swat-u-0.9|--sparsity 0.9" "swat-erk-0.9|--sparsity 0.9 --erk" "channel-0.7|--sparsity 0.7 --structured channel")
printf '%-9s %-13s %10s %9s %9s %10s %9s %11s\n' model config step_ms img/s vs_dense vs_torch peak_MiB mem_vs_dense
for m in $models; do
  t=$($py bench/torch/train_throughput.py --models "$m" --batch "$batch" --threads "$threads" 2>/dev/null |
      tr ',{}' '\n\n\n' | sed -n 's/^ *"img_per_s": *//p')
  declare -A best=()
  for ((round = 0; round < rounds; round++)); do
    for c in "${configs[@]}"; do
      name=${c%%|*} flags=${c#*|}
      # shellcheck disable=SC2086
      peak_rss "$swatc" train "models/$m.onnx" --data synthetic --limit-train $((30 * batch)) --limit-test "$batch" --epochs 2 \
        --batch "$batch" --threads "$threads" --metrics "$tmp/$m.$name.jsonl" --profile -q $flags \
        > "$tmp/$m.$name.out" 2> "$tmp/$m.$name.err.new" || { echo "bench: $m $name failed:" >&2; cat "$tmp/$m.$name.err.new" >&2; exit 1; }
      s=$(sed -n 2p "$tmp/$m.$name.jsonl" | tr ',{}' '\n\n\n' | sed -n 's/^"img_per_s"://p')
      if [ -z "${best[$name]:-}" ] || awk -v a="$s" -v b="${best[$name]}" 'BEGIN { exit !(a > b) }'; then
        best[$name]=$s
        mv "$tmp/$m.$name.err.new" "$tmp/$m.$name.err" # the profile of the fastest round
      fi
    done
  done
  dense_ms= dense_mem=
  for c in "${configs[@]}"; do
    name=${c%%|*}
    s=${best[$name]}
    mem=$(tail -n 1 "$tmp/$m.$name.err")
    ms=$(awk -v s="$s" -v b="$batch" 'BEGIN { printf "%.2f", 1000 * b / s }')
    [ -n "$dense_ms" ] || { dense_ms=$ms; dense_mem=$mem; }
    awk -v m="$m" -v n="$name" -v ms="$ms" -v s="$s" -v d="$dense_ms" -v t="${t:-0}" -v mem="$mem" -v dm="$dense_mem" \
      'BEGIN { printf "%-9s %-13s %10.2f %9.0f %8.2fx %8.2fx %9.0f %10.2fx\n", m, n, ms, s, d / ms, (t > 0 ? s / t : 0), mem, mem / dm }'
  done
  unset best
  echo "  PyTorch dense: ${t:-n/a} img/s"
done
echo "threads $threads, batch $batch, best of $rounds rounds; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $models; do
  echo
  echo "== $m: per-layer speedup of each training GEMM in the step, swatc dense ms / SWAT-U 0.9 ms =="
  $py - "$tmp/$m.dense.err" "$tmp/$m.swat-u-0.9.err" <<'PY'
import re, sys
def layers(path):
    rows, on = {}, False
    for line in open(path):
        if "per layer, ms per run" in line: on = True; continue
        if not on or line.strip().startswith("layer"): continue
        if line.strip().startswith("total") or "kernels chosen" in line: break
        name = line.split()[0]
        cells = re.findall(r"(\d+\.\d+) \(\s*\d+\)|\s-\s", line[len(line) - len(line.lstrip()) + len(name):])
        vals = [float(c) if c else None for c in cells][:3]
        rows[name] = vals
    return rows
d, s = layers(sys.argv[1]), layers(sys.argv[2])
print("  %-36s %9s %9s %9s" % ("layer", "forward", "bwd-data", "wgrad"))
for name, dv in d.items():
    sv = s.get(name, [None] * 3)
    cell = lambda a, b: "%8.2fx" % (a / b) if a and b else "%9s" % "-"
    print("  %-36s %s %s %s" % (name[:36], cell(dv[0], sv[0]), cell(dv[1], sv[1]), cell(dv[2], sv[2])))
PY
  echo
  echo "== $m, SWAT-U 0.9: per-layer profile of the training step (every run but the first) =="
  sed -n '/^profile:/,$p' "$tmp/$m.swat-u-0.9.err" | grep -v '^[0-9.]*$'
done
