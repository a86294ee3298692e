#!/usr/bin/env bash
# Runs every test suite (or those named as arguments) and prints one summary line.
#  - Criterion binaries in build/tests/ (run with --tap)
#  - shell suites tests/suite_*.sh, which print TAP-style "ok NAME" / "not ok NAME: why"
#    and "ok NAME # SKIP why" for tests whose hardware (GPU, several ranks) is missing.
# Every suite prints its plan ("1..N", as Criterion's --tap does) before its results; a
# suite fails when its harness exits non-zero, when it prints nothing or no plan, or
# when the number of ok / not ok lines is not its plan (a case lost to a crash).
# Two lanes run side by side (LOOM_TEST_LANES=1: one after another): most suites keep
# about one core busy, so on two cores the CUDA suites (nvcc, NVRTC, the emulator) run
# beside the rest.  Each suite's line is printed as it ends.
set -u
cd "$(dirname "$0")/.."
export LOOM="$PWD/build/loom"
# idle OpenMP threads sleep instead of spinning while the other lane computes
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
# run_suite NAME CMD...: runs it, prints its line, leaves "passed failed skipped" in
# $log/NAME.sum
run_suite() {
  local name=$1; shift
  local out="$log/$(basename "$name").out" t0=$SECONDS
  "$@" >"$out" 2>&1
  local rc=$? secs=$((SECONDS - t0))
  local p f s
  p=$(grep -Ec '^ok ' "$out" | tr -d ' ')
  s=$(grep -Ec '^ok .*# (SKIP|skip)' "$out" | tr -d ' ')
  f=$(grep -Ec '^not ok ' "$out" | tr -d ' ')
  local results=$((p + f)) extra=""
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    extra="not ok $name: exited $rc"
  fi
  local planned why=""
  planned=$(grep -m1 -E '^1\.\.[0-9]+$' "$out" | cut -c4-)
  if [ ! -s "$out" ]; then why="printed nothing"
  elif [ -z "$planned" ]; then why="printed no plan (1..N)"
  elif [ "$results" -ne "$planned" ]; then why="$results results, $planned planned"
  fi
  if [ -n "$why" ]; then
    f=$((f + 1))
    extra="${extra:+$extra
}not ok $name: $why"
  fi
  p=$((p - s))
  echo "$p $f $s" >"$log/$(basename "$name").sum"
  {
    printf '%-40s %4d passed %4d failed %4d skipped %5d s\n' "$name" "$p" "$f" "$s" "$secs"
    if [ "$f" -gt 0 ]; then grep -E '^not ok|^#' "$out" | head -40 | sed 's/^/    /'; fi
    if [ -n "$extra" ]; then echo "$extra" | sed 's/^/    /'; fi
    grep -E '^ok .*# (SKIP|skip)' "$out" | head -5 | sed 's/^/    /'
  } >"$out.line"
  cat "$out.line"   # one write per suite: the lanes' lines do not interleave
}
cuda_lane=(tests/suite_cuda.sh tests/suite_fuse_emu.sh tests/suite_ops_emu.sh)
is_cuda_lane() { local c; for c in "${cuda_lane[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }
rest() {
  for t in build/tests/*; do
    [ -x "$t" ] && [ -f "$t" ] && run_suite "$t" "$t" --tap -j2
  done
  for s in tests/suite_*.sh; do
    [ -f "$s" ] && ! is_cuda_lane "$s" && run_suite "$s" bash "$s"
  done
}
cuda() {
  for s in "${cuda_lane[@]}"; do [ -f "$s" ] && run_suite "$s" bash "$s"; done
}
# tests/run_all.sh SUITE...: only those (tests/suite_X.sh or build/tests/test_X), in order
if [ $# -gt 0 ]; then
  for s in "$@"; do
    case $s in *.sh) run_suite "$s" bash "$s" ;; *) run_suite "$s" "$s" --tap -j2 ;; esac
  done
elif [ "${LOOM_TEST_LANES:-2}" = 1 ]; then
  rest
  cuda
else
  cuda &
  rest
  wait
fi
pass=0; fail=0; skip=0
for f in "$log"/*.sum; do
  read -r p x s <"$f"
  pass=$((pass + p)); fail=$((fail + x)); skip=$((skip + s))
done
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
