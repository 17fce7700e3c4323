#!/usr/bin/env bash
# End-to-end tests of ONNX export and `swatc eval`: an exported model evaluates to exactly the test
# accuracy training reported (SWAT unstructured and structured, BatchNorm, Dropout), sparse
# initializers shrink the file, an exported model trains again, and metadata and errors are right.
# Usage: export.sh SWATC_BINARY
set -u
. "$(dirname "$0")/lib.sh" "$1"
cd "$tmp" || exit 1
last_acc() { tail -1 "$1" | tr ',{}' '\n\n\n' | sed -n 's/^"test_acc"://p'; }
lenet="$models/lenet5.onnx"

# trains MODEL with ARGS, exports it, evaluates the export and compares with the training's last test accuracy
same_accuracy() { # name n_test model args...
  local name=$1 n=$2 model=$3
  shift 3
  if ! "$swatc" train "$model" --epochs 2 --limit-test "$n" --threads 2 -q --metrics "$name.jsonl" -o "$name.onnx" "$@" \
       > "$name.train" 2>&1; then
    bad "$name: training failed: $(tail -2 "$name.train")"
    return
  fi
  local ev=(--limit-test "$n" --threads 2)
  [[ " $* " == *" --data synthetic "* ]] && ev+=(--data synthetic)
  [[ " $* " == *" --batch 64 "* ]] && ev+=(--batch 64)
  "$swatc" eval "$name.onnx" "${ev[@]}" > "$name.eval" 2>&1
  local acc good want
  acc=$(last_acc "$name.jsonl")
  good=$(sed -n 's/.*(\([0-9]*\) of [0-9]* images).*/\1/p' "$name.eval")
  want=$(awk -v a="$acc" -v n="$n" 'BEGIN { printf "%d", a * n + 0.5 }')
  local pct_train pct_eval
  pct_train=$(grep -o 'test accuracy [0-9.]*%' "$name.train" | tail -1)
  pct_eval=$(grep -o 'test accuracy [0-9.]*%' "$name.eval")
  if [ -n "$good" ] && [ "$good" = "$want" ] && [ "$pct_train" = "$pct_eval" ] && grep -q "exported $name.onnx ([0-9]* bytes)" "$name.train"; then
    ok "$name: eval of the export = training's $pct_eval ($good of $n)"
  else
    bad "$name: training $pct_train ($acc), eval: $(cat "$name.eval")"
  fi
}

same_accuracy erk 1000 "$lenet" --limit-train 6000 --lr 0.1 --sparsity 0.9 --erk --checkpoint erk.ckpt
same_accuracy channel 500 "$lenet" --limit-train 6000 --lr 0.1 --sparsity 0.8 --structured channel
same_accuracy filter 500 "$lenet" --limit-train 6000 --lr 0.1 --sparsity 0.7 --structured filter
same_accuracy swatm 500 "$lenet" --limit-train 6000 --lr 0.1 --sparsity 0.9 --momentum-budget
same_accuracy mlp 500 "$models/mlp.onnx" --limit-train 3000
same_accuracy resnet20 128 "$models/resnet20.onnx" --limit-train 256 --batch 64 --data synthetic --sparsity 0.9 --erk

# sparse initializers: SWAT-ERK 0.9 LeNet-5 at most 0.3x the dense file, same accuracy, zeros visible
if "$swatc" export erk.ckpt -o erk.sparse.onnx --sparse-initializers > x.out 2>&1 && grep -q "exported erk.sparse.onnx" x.out; then
  d=$(stat -c %s erk.onnx) s=$(stat -c %s erk.sparse.onnx)
  if awk -v d="$d" -v s="$s" 'BEGIN { exit !(s <= 0.3 * d) }'; then
    ok "sparse initializers: $s bytes = $(awk -v d="$d" -v s="$s" 'BEGIN { printf "%.3f", s / d }')x the dense $d"
  else
    bad "sparse initializers: $s bytes vs dense $d"
  fi
  "$swatc" eval erk.sparse.onnx --limit-test 1000 --threads 2 > y.out 2>&1
  if [ "$(grep -o 'test accuracy.*images)' y.out)" = "$(grep -o 'test accuracy.*images)' erk.eval)" ]; then
    ok "the sparse-initializer model evaluates the same"
  else
    bad "sparse-initializer eval: $(cat y.out) vs $(cat erk.eval)"
  fi
  "$swatc" inspect erk.sparse.onnx > i.out 2>&1
  if grep -q "overall weight sparsity 0.9" i.out && grep -q "fc1.weight" i.out; then
    ok "inspect shows the per-layer weight sparsity ($(grep overall i.out))"
  else
    bad "inspect of a sparse model: $(tail -4 i.out)"
  fi
else
  bad "export --sparse-initializers: $(cat x.out)"
fi

# metadata: what was trained, how, and the preprocessing
for key in swatc.version swatc.budget swatc.sparsity swatc.layer_sparsity swatc.test_accuracy swatc.command swatc.preprocess; do
  grep -aq "$key" erk.onnx || bad "metadata $key missing"
done
if grep -aq '{"scale": 0.00392156' erk.onnx && grep -aq '"/fc1/Gemm":0.9' erk.onnx && grep -aq erk erk.onnx; then
  ok "metadata: budget, layer sparsity, preprocessing, command"
else
  bad "metadata content: $(grep -ao 'swatc[^"]*' erk.onnx | head -5)"
fi
"$swatc" eval erk.onnx --data synthetic --limit-test 64 --threads 2 > w.out 2>&1
if grep -q "warning.*trained on inputs preprocessed as" w.out && ! grep -q warning erk.eval; then
  ok "eval warns when the data's preprocessing differs from the model's"
else
  bad "preprocessing warning: $(cat w.out)"
fi

# an exported model trains again (fine-tuning from the sparse export)
if "$swatc" train erk.sparse.onnx --epochs 1 --limit-train 2000 --limit-test 1000 --lr 0.005 --threads 2 -q > ft.out 2>&1; then
  a0=$(grep -o 'test accuracy [0-9.]*' erk.eval | awk '{ print $3 }') a1=$(grep -o 'test accuracy [0-9.]*' ft.out | awk '{ print $3 }')
  if awk -v a="$a0" -v b="$a1" 'BEGIN { exit !(b >= a - 5) }'; then
    ok "fine-tuning the export: $a0% -> $a1%"
  else
    bad "fine-tuning lost accuracy: $a0% -> $a1%"
  fi
else
  bad "fine-tuning the export: $(tail -3 ft.out)"
fi

# errors
expect "export of a missing checkpoint" 2 "cannot open" "$swatc" export none.ckpt -o z.onnx
expect "export without -o" 1 "-o OUT.onnx" "$swatc" export erk.ckpt
expect "export into a missing folder" 4 "z.onnx" "$swatc" export erk.ckpt -o "$tmp/no/such/z.onnx"
expect "eval of a non-model" 2 "erk.ckpt" "$swatc" eval erk.ckpt
expect "--sparse-initializers without -o" 1 "needs -o" "$swatc" train "$lenet" --sparse-initializers
[ -e z.onnx ] && bad "a failed export left z.onnx"

report
