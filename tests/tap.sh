# tests/tap.sh — TAP helpers the shell suites source (tests/run_all.sh counts the lines).
# A suite prints its plan ("1..N") before its first result; run_all.sh fails a suite that
# prints no plan or a different number of results, so a case lost to a crash is a failure.
plan() { echo "1..$1"; }
ok() { echo "ok $1"; }
fail() { echo "not ok $1: $2"; }
skip() { echo "ok $1 # SKIP $2"; }

# expect_error NAME EXPECTED_SUBSTRING CMD...: non-zero exit, one line on stderr containing the text
expect_error() {
  local name=$1 want=$2; shift 2
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ]; then fail "$name" "exited 0"; return; fi
  if [ "$(printf '%s\n' "$err" | grep -c .)" -ne 1 ]; then fail "$name" "expected one line, got: $err"; return; fi
  case "$err" in *"$want"*) ok "$name" ;; *) fail "$name" "expected '$want' in: $err" ;; esac
}

# harness NAME N SED CMD...: runs CMD, a harness that prints N TAP results, and passes its
# output (stdout and stderr) through the sed script SED (which names its results); its
# other lines (a traceback, a message) become comments.  A harness that prints fewer
# results than N, or exits non-zero without a "not ok", adds "not ok NAME: ..." with its
# exit status and last line: its lost cases are a failure.
# (CMD may be a shell function, e.g. one that runs a pipeline under pipefail.)
harness() {
  local name=$1 want=$2 script=$3; shift 3
  local out rc got
  out=$("$@" 2>&1); rc=$?
  out=$(printf '%s\n' "$out" | sed -E '/^(ok|not ok)( |$)|^#|^$/!s/^/# /' | sed "$script")
  [ -z "$out" ] || printf '%s\n' "$out"
  got=$(printf '%s\n' "$out" | grep -cE '^(ok|not ok)( |$)')
  if [ "$got" -lt "$want" ]; then
    fail "$name" "the harness printed $got of $want results (exit status $rc): $(printf '%s\n' "$out" | tail -1)"
  elif [ "$rc" -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^not ok'; then
    fail "$name" "the harness exited $rc: $(printf '%s\n' "$out" | tail -1)"
  fi
}

# no_torch NAME WHY: the result of a test that needs PyTorch where python3 cannot import
# torch: a SKIP, or "not ok" where LOOM_REQUIRE_TORCH=1 (./run.sh test installs
# python3-torch, so there a missing torch is a failure, not a skip)
no_torch() {
  if [ "${LOOM_REQUIRE_TORCH:-0}" = 1 ]; then fail "$1" "$2 (LOOM_REQUIRE_TORCH=1)"; else skip "$1" "$2"; fi
}

# py_lacks MODULE...: true when /usr/bin/python3 (or python3 itself) is not there, or has
# no such module installed.  A module that is installed but fails to import is not
# lacking: the tests run, and fail saying why.
py_lacks() {
  /usr/bin/python3 -c 'import importlib.util, sys
sys.exit(0 if any(importlib.util.find_spec(m) is None for m in sys.argv[1:]) else 1)' "$@" 2>/dev/null
  local rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 126 ] || [ $rc -eq 127 ]
}

# parity_runtime SPEC: $tmp/rt/*.o, the runtime objects tests/harness/parity.c links
# (independent of the model), compiled with $CFLAGS from SPEC's generated copy; non-zero
# when that fails ($tmp/rt.gen and $tmp/rt.cc say why)
parity_runtime() {
  mkdir -p "$tmp/rt"
  "$LOOM" build "$1" -o "$tmp/rtsrc" --no-compile >"$tmp/rt.gen" 2>&1 || return 1
  local f
  for f in ckpt data npy idx tokens; do
    cc $CFLAGS -I"$tmp/rtsrc" -c "$tmp/rtsrc/$f.c" -o "$tmp/rt/$f.o" 2>"$tmp/rt.cc" || return 1
  done
}
