#!/usr/bin/env bash
# Two builds of swatc compared on the whole training step, for a machine whose speed drifts: the
# builds alternate run by run (A dense, A SWAT-U 0.9, ..., B dense, ...) for ROUNDS rounds. Each run
# gives its steady-state step (the second epoch's img/s). Per (build, configuration) it prints the best
# step (other processes only ever slow a run down) and the median, each with its ratio to the same
# build's dense step; then, per configuration, B's speed-up over A in each round (A's step / B's step:
# the two runs of a round are minutes apart, so they share the machine's state) and its median. A
# change smaller than the spread of those per-round ratios is not measured by this machine.
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
declare -A runs=()
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
      runs["$side $name"]+="$s "
    done
  done
  echo "round $((r + 1))/$rounds done" >&2
done
# step ms of each run, in round order: "ms1 ms2 ..."
steps() { for s in ${runs["$1"]}; do awk -v s="$s" -v b="$batch" 'BEGIN { printf "%.3f ", 1000 * b / s }'; done; }
# best (smallest) and median of a list of numbers
best_median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s", v[1], m }'; }
printf '%-5s %-13s %10s %9s %10s %9s\n' build config best_ms vs_dense median_ms vs_dense
for side in A B; do
  read -r dbest dmed <<< "$(steps "$side dense" | best_median)"
  for c in "${configs[@]}"; do
    name=${c%%|*}
    read -r sbest smed <<< "$(steps "$side $name" | best_median)"
    awk -v side="$side" -v name="$name" -v sb="$sbest" -v sm="$smed" -v db="$dbest" -v dm="$dmed" \
      'BEGIN { printf "%-5s %-13s %10.2f %8.2fx %10.2f %8.2fx\n", side, name, sb, db / sb, sm, dm / sm }'
  done
done
echo "B's speed-up over A per round (A's step / B's step), and its median:"
for c in "${configs[@]}"; do
  name=${c%%|*}
  ratios=$(paste -d' ' <(steps "A $name" | tr ' ' '\n' | awk 'NF') <(steps "B $name" | tr ' ' '\n' | awk 'NF') |
    awk '{ printf "%.3f ", $1 / $2 }')
  read -r _ rmed <<< "$(echo "$ratios" | best_median)"
  printf '  %-13s median %.3f  rounds: %s\n' "$name" "$rmed" "$ratios"
done
echo "A = $a, B = $b; $model, batch $batch, $threads threads, $rounds alternating rounds"
