#!/usr/bin/env bash
# Golden IR dumps: `swatc inspect --dump-ir` of every shipped model must match tests/golden/NAME.ir.
# UPDATE_GOLDEN=1 rewrites the files (review the diff before committing).
set -u
swatc=${1:?usage: run.sh SWATC_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
models=$(cd "$here/../../models" && pwd)
pass=0 fail=0
for m in "$models"/*.onnx; do
  name=$(basename "$m" .onnx)
  golden="$here/$name.ir"
  out=$("$swatc" inspect -q --dump-ir "$m" 2>&1)
  rc=$?
  if [ "${UPDATE_GOLDEN:-0}" = 1 ] && [ $rc -eq 0 ]; then
    printf '%s\n' "$out" > "$golden"
  fi
  if [ $rc -ne 0 ]; then
    echo "FAIL $name: swatc exited $rc: $out"; fail=$((fail + 1))
  elif [ ! -f "$golden" ]; then
    echo "FAIL $name: no golden file $golden (run with UPDATE_GOLDEN=1)"; fail=$((fail + 1))
  elif ! diff -u "$golden" <(printf '%s\n' "$out") > /tmp/golden.$$.diff; then
    echo "FAIL $name: dump differs from $golden:"; head -40 /tmp/golden.$$.diff; fail=$((fail + 1))
  else
    echo "ok $name"; pass=$((pass + 1))
  fi
done
rm -f /tmp/golden.$$.diff
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
