#!/usr/bin/env bash
# End-to-end tests of `swatc train` on real data: learning happens, runs are deterministic, and bad
# input gives a clear error. Usage: run.sh SWATC_BINARY
set -u
. "$(dirname "$0")/lib.sh" "$1"
field() { # file epoch key -> value
  sed -n "$2p" "$1" | tr ',{}' '\n\n\n' | sed -n "s/^\"$3\"://p"
}

# 1. LeNet-5 learns Fashion-MNIST: a 6000-image subset, 3 epochs
if "$swatc" train "$models/lenet5.onnx" --epochs 3 --limit-train 6000 --limit-test 2000 --threads 2 -q \
     --metrics "$tmp/a.jsonl" > "$tmp/a.out" 2>&1; then
  l1=$(field "$tmp/a.jsonl" 1 train_loss) l3=$(field "$tmp/a.jsonl" 3 train_loss) acc=$(field "$tmp/a.jsonl" 3 test_acc)
  if awk -v a="$l1" -v b="$l3" -v c="$acc" 'BEGIN { exit !(b < a * 0.8 && c >= 0.70) }'; then
    ok "lenet5 learns (train loss $l1 -> $l3, test accuracy $acc >= 0.70)"
  else
    bad "lenet5 did not learn enough: train loss $l1 -> $l3, test accuracy $acc"
  fi
else
  bad "lenet5 training failed: $(tail -3 "$tmp/a.out")"
fi

# 2. Determinism: same seed and threads give identical metrics (timing fields aside)
if "$swatc" train "$models/lenet5.onnx" --epochs 3 --limit-train 6000 --limit-test 2000 --threads 2 -q \
     --metrics "$tmp/b.jsonl" > /dev/null 2>&1 && cmp -s <(strip_timing "$tmp/a.jsonl") <(strip_timing "$tmp/b.jsonl"); then
  ok "two runs with the same seed give identical metrics"
else
  bad "runs with the same seed differ: $(diff <(strip_timing "$tmp/a.jsonl") <(strip_timing "$tmp/b.jsonl") | head -4)"
fi
if "$swatc" train "$models/lenet5.onnx" --epochs 1 --limit-train 2000 --limit-test 500 --threads 2 -q --seed 1 \
     --metrics "$tmp/c.jsonl" > /dev/null 2>&1 && ! cmp -s <(strip_timing "$tmp/c.jsonl") <(sed -n 1p "$tmp/a.jsonl" | strip_timing /dev/stdin); then
  ok "another seed gives another run"
else
  bad "--seed has no effect"
fi

# 3. The MLP (Dropout) and ResNet-20 (BatchNormalization, residual Add) train without error
for m in mlp resnet20; do
  if "$swatc" "$models/$m.onnx" --epochs 1 --limit-train 1024 --limit-test 256 --batch 64 --threads 2 -q > "$tmp/$m.out" 2>&1 &&
     grep -q "test accuracy" "$tmp/$m.out"; then
    ok "$m trains ($(tail -1 "$tmp/$m.out"))"
  else
    bad "$m: $(tail -3 "$tmp/$m.out")"
  fi
done

# 4. SWAT: uniform 0.9 trains; every sparse layer's realised weight sparsity is within 0.01 of its budget
if "$swatc" train "$models/lenet5.onnx" --epochs 1 --limit-train 2048 --limit-test 500 --threads 2 -q --sparsity 0.9 \
     --metrics "$tmp/s.jsonl" > "$tmp/s.out" 2>&1; then
  worst=$(tr '{' '\n' < "$tmp/s.jsonl" | sed -n 's/.*"budget":\([0-9.e-]*\),"weight_sparsity":\([0-9.e-]*\).*/\1 \2/p' |
          awk '$1 > 0 { d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { print m + 0 }')
  n=$(tr '{' '\n' < "$tmp/s.jsonl" | grep -c '"budget":0.9')
  if grep -q '"train_flop_reduction"' "$tmp/s.jsonl" && [ "$n" -eq 4 ] && awk -v w="$worst" 'BEGIN { exit !(w <= 0.01) }'; then
    ok "SWAT-U 0.9: 4 sparse layers, realised weight sparsity within $worst of the budget"
  else
    bad "SWAT-U 0.9 metrics: $n sparse layers, worst deviation $worst: $(head -c 400 "$tmp/s.jsonl")"
  fi
else
  bad "SWAT training failed: $(tail -3 "$tmp/s.out")"
fi
if "$swatc" inspect "$models/resnet20.onnx" --sparsity 0.9 --erk > "$tmp/b.out" 2>&1 && grep -q "overall weight sparsity 0.9000" "$tmp/b.out"; then
  ok "inspect prints the ERK budget table (overall 0.9000)"
else
  bad "inspect --sparsity --erk: $(tail -3 "$tmp/b.out")"
fi

# 5. --profile: the per-op and per-layer profile of the runs after the first (8 steps: 7 counted)
if "$swatc" train "$models/lenet5.onnx" --epochs 1 --limit-train 1024 --limit-test 128 --batch 128 --threads 2 -q \
     --sparsity 0.9 --profile > "$tmp/p.out" 2>&1 &&
   grep -q '^profile: [0-9.]* ms per run over 7 runs (the first run' "$tmp/p.out" &&
   grep -q '^  ConvGradWeight ' "$tmp/p.out" && grep -q '^  TopKSparsify ' "$tmp/p.out" &&
   grep -Eq '^  /conv2/Conv +[0-9.]+ \( *[0-9]+\) +[0-9.]+ \( *[0-9]+\) +[0-9.]+ \( *[0-9]+\) +[0-9.]+$' "$tmp/p.out"; then
  ok "--profile reports op kinds and per-layer forward / backward-data / weight-gradient / top-k times"
else
  bad "--profile output: $(head -c 600 "$tmp/p.out")"
fi

# 6. Bad input: a clear message and the right exit code
expect "missing data folder" 2 "fashion" "$swatc" train "$models/lenet5.onnx" --data "$tmp/nothing-here" --epochs 1
expect "unknown option" 1 "unknown option" "$swatc" train "$models/lenet5.onnx" --frobnicate
expect "bad number" 1 "--lr" "$swatc" train "$models/lenet5.onnx" --lr fast
expect "missing model" 2 "cannot open" "$swatc" train "$tmp/none.onnx"
mkdir -p "$tmp/cifar"
head -c $((3073 * 10)) /dev/zero > "$tmp/cifar/data_batch_1.bin"
for i in 2 3 4 5; do cp "$tmp/cifar/data_batch_1.bin" "$tmp/cifar/data_batch_$i.bin"; done
cp "$tmp/cifar/data_batch_1.bin" "$tmp/cifar/test_batch.bin"
expect "data that does not fit the model" 2 "input" "$swatc" train "$models/lenet5.onnx" --data "$tmp/cifar" --epochs 1
expect "a dense layer that does not exist" 2 "names no" "$swatc" train "$models/lenet5.onnx" --sparsity 0.9 --dense-layers nope
expect "sparsity out of range" 1 "--sparsity" "$swatc" train "$models/lenet5.onnx" --sparsity 1.5
expect "NaN loss stops the run" 5 "NaN\|infinite" "$swatc" train "$models/lenet5.onnx" --lr 90 --epochs 1 --limit-train 2000 --limit-test 100 -q

# A spinning OpenMP policy from the environment is overridden (it would take the cores from the kernels'
# team), with a warning, and the run still trains
if OMP_WAIT_POLICY=active "$swatc" train "$models/lenet5.onnx" --epochs 1 --limit-train 512 --limit-test 128 \
     > "$tmp/omp.out" 2>&1 && grep -q "OMP_WAIT_POLICY=active ignored" "$tmp/omp.out" && grep -q "test accuracy" "$tmp/omp.out"; then
  ok "OMP_WAIT_POLICY=active is overridden with a warning"
else
  bad "OMP_WAIT_POLICY=active: no warning or the run failed: $(tail -3 "$tmp/omp.out")"
fi

report
