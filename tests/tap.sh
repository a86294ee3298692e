# tests/tap.sh — TAP helpers the shell suites source (tests/run_all.sh counts the lines).
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
