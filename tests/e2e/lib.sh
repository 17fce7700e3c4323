# Shared by the end-to-end test scripts: source it with the swatc binary as its argument,
#   . "$(dirname "$0")/lib.sh" "$1"
# It sets swatc (absolute), here, models and a temporary folder tmp (removed on exit), and defines
# ok/bad (counting), strip_timing, expect and report.
swatc=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)
models=$(cd "$here/../../models" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
# A metrics JSONL file without its timing fields (what differs between identical runs).
strip_timing() { sed -E 's/"(img_per_s|seconds)":[^,}]*//g' "$1"; }
# expect NAME RC KEYWORD CMD...: CMD exits RC and says KEYWORD (any case); errors other than usage
# errors (RC 1) must also print a hint line.
expect() {
  local name=$1 want=$2 kw=$3
  shift 3
  "$@" > "$tmp/expect.out" 2>&1
  local rc=$?
  if [ $rc -eq "$want" ] && grep -qi -- "$kw" "$tmp/expect.out" && { [ "$want" -eq 1 ] || grep -q "hint:" "$tmp/expect.out"; }; then
    ok "$name"
  else
    bad "$name: exit $rc (want $want), output: $(head -3 "$tmp/expect.out")"
  fi
}
# The summary line; the script's exit status is 0 only if nothing failed.
report() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
