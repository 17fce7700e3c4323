#!/bin/bash
# Checks exported models with tools outside swatc (suite 'export').
#
# usage: ort.sh ort|checker TEST_EXPORT EXPORT_LOGITS BUILD_DIR SRC_ROOT [SWATC]
#   ort      exports LeNet-5, ResNet-20 and the MLP with perturbed, 90%-pruned weights (dense and
#            sparse_initializer forms, via test_export) and runs each with onnxruntime-node: its logits
#            on 256 Fashion-MNIST test images must equal swatc's (export_logits on the same file) within
#            1e-4 x max|logit|. onnxruntime-node is installed once into BUILD_DIR/npm. With SWATC: a
#            LeNet-5 trained by swatc at SWAT-ERK 0.9 and exported (-o, and swatc export
#            --sparse-initializers from its checkpoint) gives onnxruntime the same logits and the same
#            class on all 10000 test images, i.e. the same test accuracy.
#   checker  onnx.checker.check_model(full_check=True) on the dense files, check_model on the sparse
#            ones (onnx 1.12's full check rejects any sparse_initializer: a checker limitation).
# Exits 77 (meson's "skipped") with a message when node/npm or python3-onnx are not available.
set -u
mode=$1 test_export=$2 logits=$3 build=$4 src=$5 swatc=${6:-}
here=$(cd "${0%/*}" && pwd)
out=$build/$mode-out
models="lenet5 resnet20 mlp"

fail() { echo "FAIL: $*"; exit 1; }

if [ "$mode" = ort ]; then
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "SKIP: node or npm is not installed"; exit 77; }
  npm_dir=$build/npm
  ort_mod=$npm_dir/node_modules/onnxruntime-node
  if [ ! -f "$ort_mod/package.json" ]; then
    mkdir -p "$npm_dir" || fail "cannot make $npm_dir"
    echo "installing onnxruntime-node into $npm_dir (once)"
    npm install --prefix "$npm_dir" onnxruntime-node --ignore-scripts --no-audit --no-fund >"$build/npm-install.log" 2>&1 ||
      { tail -5 "$build/npm-install.log"; echo "SKIP: npm install onnxruntime-node failed (no registry?); see $build/npm-install.log"; exit 77; }
  fi
elif [ "$mode" = checker ]; then
  /usr/bin/python3 -c 'import onnx' 2>/dev/null || { echo "SKIP: /usr/bin/python3 has no onnx module (Debian package python3-onnx)"; exit 77; }
else
  fail "unknown mode '$mode'"
fi
rm -rf "$out" && mkdir -p "$out" || fail "cannot make $out"

"$test_export" "$src" "$out" >"$out/test_export.log" 2>&1 || { cat "$out/test_export.log"; fail "test_export failed"; }
grep -E '^(lenet5|resnet20|mlp) ' "$out/test_export.log"

status=0
for m in $models; do
  for form in dense sparse; do
    f=$out/$m.$form.onnx
    [ -f "$f" ] || fail "$f was not written"
    if [ "$mode" = ort ]; then
      read -r shape classes < <("$logits" "$f" "$out/input.bin" "$out/$m.$form.logits.bin" 256 2>"$out/logits.log") ||
        { cat "$out/logits.log"; fail "export_logits on $f"; }
      node "$here/ort_check.js" "$ort_mod" "$f" "$out/input.bin" "$shape" "$out/$m.$form.logits.bin" 1e-4 || status=1
    else
      full=True
      [ "$form" = sparse ] && full=False
      /usr/bin/python3 -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=$full); print(sys.argv[1] + ': onnx.checker ok (full_check=$full)')" "$f" ||
        status=1
    fi
  done
done
if [ "$mode" = ort ] && [ -n "$swatc" ]; then
  "$swatc" train "$src/models/lenet5.onnx" --sparsity 0.9 --erk --epochs 2 --limit-train 30000 --threads 2 -q \
    --checkpoint "$out/erk.ckpt" -o "$out/erk.dense.onnx" >"$out/train.log" 2>&1 || { cat "$out/train.log"; fail "swatc train"; }
  "$swatc" export "$out/erk.ckpt" -o "$out/erk.sparse.onnx" --sparse-initializers >>"$out/train.log" 2>&1 ||
    { cat "$out/train.log"; fail "swatc export"; }
  grep -h "test accuracy" "$out/train.log"
  d=$(stat -c %s "$out/erk.dense.onnx") sp=$(stat -c %s "$out/erk.sparse.onnx")
  echo "SWAT-ERK 0.9 LeNet-5: dense file $d bytes, sparse_initializer file $sp bytes ($(awk -v a="$sp" -v b="$d" 'BEGIN { printf "%.3f", a / b }')x)"
  [ $((sp * 10)) -le $((d * 3)) ] || { echo "FAIL: the sparse file is over 0.3x the dense one"; status=1; }
  for form in dense sparse; do
    f=$out/erk.$form.onnx
    read -r shape classes < <("$logits" "$f" "$out/input.bin" "$out/erk.$form.logits.bin" 10000 2>"$out/logits.log") ||
      { cat "$out/logits.log"; fail "export_logits on $f"; }
    node "$here/ort_check.js" "$ort_mod" "$f" "$out/input.bin" "$shape" "$out/erk.$form.logits.bin" 1e-4 all || status=1
  done
fi
exit $status
