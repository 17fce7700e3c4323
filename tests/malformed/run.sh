#!/bin/sh
# Feeds every model in corpus/ (listed in MANIFEST, written by make_corpus.py) to
# `SWATC_BINARY inspect FILE`, plus a few inputs made at test time (a missing path, a directory, an
# unreadable file, a FIFO, /dev/null, a 3 GiB sparse file, symlinked external data), and checks
#   - the exit code is the expected one, within a timeout (a hang is a failure);
#   - no sanitizer report and no death by signal;
#   - on a bad-input exit: stderr (after any "swatc: warning:" lines) starts with "swatc: error:",
#     has exactly one such line, a "  hint: ..." line, no raw ESC character, and the message
#     contains the MANIFEST keyword (case-insensitive; "a|b" = either, "a&b" = both).
# Usage: run.sh SWATC_BINARY     (POSIX sh; needs coreutils timeout, truncate, mkfifo)
# Prints "ok CASE" or "FAIL CASE: reason" per case, then "N passed, M failed"; exits 1 on failure.

set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 SWATC_BINARY" >&2
  exit 2
fi
bin=$1
case $bin in
  /*) ;;
  *) bin=$(pwd -P)/$bin ;;
esac
if [ ! -x "$bin" ] || [ -d "$bin" ]; then
  echo "run.sh: $bin is not an executable file" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd) || exit 2
cd "$here" || exit 2
if [ ! -f MANIFEST ] || [ ! -d corpus ]; then
  echo "run.sh: MANIFEST or corpus/ missing in $here; run make_corpus.py" >&2
  exit 2
fi

limit=${SWATC_TEST_TIMEOUT:-10}           # seconds per case
tab=$(printf '\t')
esc=$(printf '\033')
sanitizer_re='ERROR: (Address|Leak|Memory|Thread)Sanitizer|WARNING: (Memory|Thread)Sanitizer'
sanitizer_re="$sanitizer_re|runtime error:|SUMMARY: [A-Za-z]*Sanitizer"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/swatc-malformed.XXXXXX") || exit 2
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' HUP INT PIPE TERM
out=$tmp/stdout
err=$tmp/stderr
msg=$tmp/message
passed=0
failed=0

# kw_match SPEC FILE: true when FILE contains SPEC ("a|b" either, "a&b" both, "-" anything).
# On failure sets kw_missing to the term that did not match.
kw_match() {
  kw_rest=$1
  [ "$kw_rest" = "-" ] && return 0
  while :; do
    kw_term=${kw_rest%%&*}
    kw_alts=$kw_term
    while :; do
      kw_alt=${kw_alts%%|*}
      if [ -n "$kw_alt" ] && grep -qiF -e "$kw_alt" "$2"; then
        break
      fi
      if [ "$kw_alt" = "$kw_alts" ]; then
        kw_missing=$kw_term
        return 1
      fi
      kw_alts=${kw_alts#*|}
    done
    [ "$kw_term" = "$kw_rest" ] && return 0
    kw_rest=${kw_rest#*&}
  done
}

# check_result EXPECTED KEYWORD RC: sets reason to "" when the run in $out/$err is acceptable.
check_result() {
  reason=
  if [ "$3" -eq 124 ]; then
    reason="timed out after ${limit} s"
  elif grep -qE "$sanitizer_re" "$err"; then
    reason="sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error:' "$err" | cut -c1-160)"
  elif [ "$3" -ge 128 ]; then
    reason="killed by signal $(($3 - 128)) (exit $3)"
  elif [ "$3" -ne "$1" ]; then
    reason="exit $3, expected $1"
  elif grep -q "$esc" "$err"; then
    reason="stderr contains a raw ESC character (names must be printed escaped)"
  elif [ "$1" -eq 0 ]; then
    if grep -q '^swatc: error:' "$err"; then
      reason="exit 0 but stderr has an error line"
    fi
  elif [ "$1" -eq 1 ]; then
    if [ ! -s "$err" ]; then
      reason="usage error without any message on stderr"
    fi
  else
    first=$(grep -v '^swatc: warning:' "$err" | head -n 1)
    nerr=$(grep -c '^swatc: error:' "$err")
    sed -n '/^swatc: error:/,$p' "$err" >"$msg"
    case $first in
      "swatc: error:"*)
        if [ "$nerr" -ne 1 ]; then
          reason="$nerr lines start with 'swatc: error:', expected one message"
        elif ! grep -q '^  hint: .' "$msg"; then
          reason="no '  hint: ...' line after the error"
        elif ! kw_match "$2" "$msg"; then
          reason="message lacks '$kw_missing'"
        fi
        ;;
      "") reason="no message on stderr" ;;
      *) reason="stderr does not start with 'swatc: error:'" ;;
    esac
  fi
}

# report NAME: prints the verdict for the last run and counts it.
report() {
  if [ -z "$reason" ]; then
    passed=$((passed + 1))
    echo "ok $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: $reason"
    head -n 6 "$err" | cut -c1-200 | LC_ALL=C tr '\000-\010\013-\037\177' '?' | sed 's/^/    | /'
  fi
}

# run_case NAME EXPECTED KEYWORD ARGS...: runs `swatc ARGS...` and reports.
run_case() {
  rc_name=$1 rc_expected=$2 rc_keyword=$3
  shift 3
  timeout -k 5 "$limit" "$bin" "$@" >"$out" 2>"$err" </dev/null
  check_result "$rc_expected" "$rc_keyword" $?
  report "$rc_name"
}

# skip NAME WHY
skip() {
  echo "skip $1: $2"
}

# --- the corpus --------------------------------------------------------------------------------
while IFS=$tab read -r file expected keyword _; do
  case $file in
    "#"* | "") continue ;;
  esac
  if [ ! -f "corpus/$file" ]; then
    failed=$((failed + 1))
    echo "FAIL $file: corpus/$file is missing (rerun make_corpus.py)"
    continue
  fi
  run_case "$file" "$expected" "$keyword" inspect "corpus/$file"
done <MANIFEST

# --- inputs made at test time ------------------------------------------------------------------
run_case "(no model argument)" 1 - inspect

run_case "(path that does not exist)" 2 "no such file|not found|does not exist|cannot open" \
  inspect "$tmp/does-not-exist.onnx"

mkdir "$tmp/dir.onnx"
run_case "(directory)" 2 "directory|not a regular file|regular" inspect "$tmp/dir.onnx"

cp corpus/valid_base.onnx "$tmp/unreadable.onnx"
chmod 000 "$tmp/unreadable.onnx"
if [ -r "$tmp/unreadable.onnx" ]; then
  skip "(unreadable file)" "running as a user who can read mode-000 files (root)"
else
  run_case "(unreadable file)" 2 "permission|cannot open|cannot read|not readable" \
    inspect "$tmp/unreadable.onnx"
fi

# Opening a FIFO for reading blocks until a writer comes: the importer must stat first.
if mkfifo "$tmp/fifo.onnx" 2>/dev/null; then
  run_case "(fifo)" 2 "regular|fifo|pipe|not a file" inspect "$tmp/fifo.onnx"
else
  skip "(fifo)" "mkfifo failed"
fi

if [ -c /dev/null ]; then
  run_case "(/dev/null)" 2 "empty|regular" inspect /dev/null
fi

# A 3 GiB sparse file that starts with a valid model: it must be refused from its size, without
# being read (peak RSS is checked when GNU time is installed).
cp corpus/valid_base.onnx "$tmp/huge.onnx"
if truncate -s 3G "$tmp/huge.onnx" 2>/dev/null; then
  name="(3 GiB sparse file)"
  if [ -x /usr/bin/time ]; then
    timeout -k 5 "$limit" /usr/bin/time -f 'maxrss_kb %M' -o "$tmp/rss" \
      "$bin" inspect "$tmp/huge.onnx" >"$out" 2>"$err" </dev/null
    check_result 2 "2 gib|too large" $?
    rss=$(sed -n 's/^maxrss_kb //p' "$tmp/rss" 2>/dev/null)
    if [ -z "$reason" ] && [ -n "$rss" ] && [ "$rss" -gt 1048576 ]; then
      reason="peak RSS ${rss} KiB: the file was read instead of refused from its size"
    fi
    report "$name"
  else
    run_case "$name" 2 "2 gib|too large" inspect "$tmp/huge.onnx"
  fi
  rm -f "$tmp/huge.onnx"
else
  skip "(3 GiB sparse file)" "truncate -s 3G failed in ${TMPDIR:-/tmp}"
fi

# External data through a symlink. Inside the folder: accepted. Pointing outside: refused, even
# though the data it reaches is valid (resolve the real path, then check the folder).
mkdir -p "$tmp/inside" "$tmp/outer/model"
cp corpus/ext_symlink.onnx corpus/ext_valid.bin "$tmp/inside/"
ln -s ext_valid.bin "$tmp/inside/ext_symlink.bin"
run_case "(external data via symlink inside the folder)" 0 - inspect "$tmp/inside/ext_symlink.onnx"
cp corpus/ext_symlink.onnx corpus/ext_valid.bin "$tmp/outer/model/"
cp corpus/ext_valid.bin "$tmp/outer/outside.bin"
ln -s ../outside.bin "$tmp/outer/model/ext_symlink.bin"
run_case "(external data via symlink to outside the folder)" 2 "outside|not allowed|escapes" \
  inspect "$tmp/outer/model/ext_symlink.onnx"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
