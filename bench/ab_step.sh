#!/usr/bin/env bash
# Two builds of swatc compared on the whole training step, for a machine whose speed drifts: the
# builds alternate run by run (A dense, A SWAT-U 0.9, ..., B dense, ...) for ROUNDS rounds, and each
# (build, configuration) keeps its best steady-state img/s (the second epoch's; other processes only
# ever slow a run down). Prints step ms and the ratio to the same build's dense step.
#
#   bench/ab_step.sh BUILD_A BUILD_B [MODEL] [ROUNDS] [THREADS] [BATCH]
#
# e.g. bench/ab_step.sh /tmp/build-before build resnet20 6. Not a test: numbers depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab_step.sh BUILD_A BUILD_B [MODEL] [ROUNDS] [THREADS] [BATCH]" >&2; exit 2; }
a=$1 b=$2 model=${3:-resnet20} rounds=${4:-6} threads=${5:-2} batch=${6:-128}
for d in "$a" "$b"; do
  [ -x "$d/tools/swatc" ] || { echo "ab_step: no swatc in $d/tools (build it first)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
configs=("dense|" "swat-u-0.9|--sparsity 0.9" "swat-erk-0.9|--sparsity 0.9 --erk" "channel-0.7|--sparsity 0.7 --structured channel")
declare -A best=()
for ((r = 0; r < rounds; r++)); do
  for side in A B; do
    dir=$a
    [ "$side" = B ] && dir=$b
    for c in "${configs[@]}"; do
      name=${c%%|*} flags=${c#*|}
      # shellcheck disable=SC2086
      "$dir/tools/swatc" train "models/$model.onnx" --data synthetic --limit-train $((30 * batch)) --limit-test "$batch" \
        --epochs 2 --batch "$batch" --threads "$threads" -q $flags --metrics "$tmp/m.jsonl" > "$tmp/out" 2>&1 ||
        { echo "ab_step: $side $name failed:" >&2; tail -3 "$tmp/out" >&2; exit 1; }
      s=$(sed -n 2p "$tmp/m.jsonl" | tr ',{}' '\n\n\n' | sed -n 's/^"img_per_s"://p')
      k="$side $name"
      if [ -z "${best[$k]:-}" ] || awk -v x="$s" -v y="${best[$k]}" 'BEGIN { exit !(x > y) }'; then best[$k]=$s; fi
    done
  done
  echo "round $((r + 1))/$rounds done" >&2
done
printf '%-5s %-13s %10s %10s %9s\n' build config step_ms img/s vs_dense
for side in A B; do
  for c in "${configs[@]}"; do
    name=${c%%|*}
    awk -v s="${best[$side $name]}" -v d="${best[$side dense]}" -v side="$side" -v name="$name" -v bs="$batch" \
      'BEGIN { printf "%-5s %-13s %10.2f %10.0f %8.2fx\n", side, name, 1000 * bs / s, s, s / d }'
  done
done
echo "A = $a, B = $b; $model, batch $batch, $threads threads, best of $rounds alternating rounds"
