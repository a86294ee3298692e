#!/usr/bin/env bash
# Runs every test suite and prints one summary line.
#  - Criterion binaries in build/tests/ (run with --tap)
#  - shell suites tests/suite_*.sh, which print TAP-style "ok NAME" / "not ok NAME: why"
#    and "ok NAME # SKIP why" for tests whose hardware (GPU, several ranks) is missing.
set -u
cd "$(dirname "$0")/.."
export LOOM="$PWD/build/loom"
pass=0; fail=0; skip=0
log=$(mktemp -d)
run_suite() {
  local name=$1; shift
  local out="$log/$(basename "$name").out" t0=$SECONDS
  "$@" >"$out" 2>&1
  local rc=$? secs=$((SECONDS - t0))
  local p f s
  p=$(grep -Ec '^ok ' "$out" | tr -d ' ')
  s=$(grep -Ec '^ok .*# (SKIP|skip)' "$out" | tr -d ' ')
  f=$(grep -Ec '^not ok ' "$out" | tr -d ' ')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    echo "not ok $name: exited $rc" >>"$out"
  fi
  p=$((p - s))
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  printf '%-40s %4d passed %4d failed %4d skipped %5d s\n' "$name" "$p" "$f" "$s" "$secs"
  if [ "$f" -gt 0 ]; then grep -E '^not ok|^#' "$out" | head -40 | sed 's/^/    /'; fi
  grep -E '^ok .*# (SKIP|skip)' "$out" | head -5 | sed 's/^/    /'
}
for t in build/tests/*; do
  [ -x "$t" ] && [ -f "$t" ] && run_suite "$t" "$t" --tap -j2
done
for s in tests/suite_*.sh; do
  [ -f "$s" ] && run_suite "$s" bash "$s"
done
rm -rf "$log"
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
