#!/usr/bin/env bash
# swatc set-up on Debian 12: installs what is missing, builds, and runs.
#   ./setup.sh          install, build, train the shipped LeNet-5 on Fashion-MNIST with SWAT at 90% sparsity
#                       (3 epochs), print its accuracy and per-layer sparsity, export build/lenet5.sparse.onnx
#   ./setup.sh test     install, build (also with AddressSanitizer/UBSan), run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-run}

# Build and test dependencies (all Debian packages).
pkgs=(build-essential meson ninja-build pkg-config protobuf-c-compiler libprotobuf-c-dev libonnx-dev libxsmm-dev
      zlib1g-dev dataset-fashion-mnist libonnx-testdata python3)
# The test suite also checks exported models with independent tools: the onnx checker (python3-onnx)
# and onnxruntime (from npm, installed by the test itself; needs Node.js and npm).
if [ "$mode" = test ]; then
  pkgs+=(python3-onnx)
  command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc 2>/dev/null || echo 2)
build() { # dir, meson options...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then meson setup "$dir" "$@" >/dev/null; fi
  ninja -C "$dir" -j "$jobs"
}

case "$mode" in
  run)
    build build
    echo
    build/tools/swatc inspect models/lenet5.onnx
    echo
    build/tools/swatc train models/lenet5.onnx --data fashion-mnist --epochs 3 --sparsity 0.9 \
      -o build/lenet5.sparse.onnx --sparse-initializers
    ;;
  test)
    build build
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debug
    rc=0
    # every suite in the normal build; again under the sanitizers all but the golden comparisons with
    # PyTorch (an unoptimised build rounds differently, which flips ReLU/Top-K decisions those check);
    # the unoptimised, instrumented build runs the reference kernels several times slower, hence the
    # longer timeouts
    meson test -C build --print-errorlogs --num-processes "$jobs" || rc=1
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C build-asan --print-errorlogs --num-processes "$jobs" --timeout-multiplier 3 \
        --suite ir --suite importer --suite passes --suite runtime --suite swat --suite train --suite export || rc=1
    /usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line).get("result", "")
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
    exit $rc
    ;;
  *)
    echo "usage: ./setup.sh [run|test]" >&2
    exit 1
    ;;
esac
