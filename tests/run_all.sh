#!/usr/bin/env bash
# Runs every test suite and prints one summary line.
#  - Criterion binaries in build/tests/ (run with --tap)
#  - shell suites tests/suite_*.sh, which print TAP-style "ok NAME" / "not ok NAME: why"
#    and "ok NAME # SKIP why" for tests whose hardware (GPU, several ranks) is missing.
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
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    echo "not ok $name: exited $rc" >>"$out"
  fi
  p=$((p - s))
  echo "$p $f $s" >"$log/$(basename "$name").sum"
  {
    printf '%-40s %4d passed %4d failed %4d skipped %5d s\n' "$name" "$p" "$f" "$s" "$secs"
    if [ "$f" -gt 0 ]; then grep -E '^not ok|^#' "$out" | head -40 | sed 's/^/    /'; fi
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
if [ "${LOOM_TEST_LANES:-2}" = 1 ]; then
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
