#!/usr/bin/env bash
# Runs every test suite (or those named as arguments) and prints one summary line.
#  - Criterion binaries in build/tests/ (run with --tap)
#  - shell suites tests/suite_*.sh, which print TAP-style "ok NAME" / "not ok NAME: why"
#    and "ok NAME # SKIP why" for tests whose hardware (GPU, several ranks) is missing.
# Every suite prints its plan ("1..N", as Criterion's --tap does) before its results; a
# suite fails when its harness exits non-zero, when it prints nothing or no plan, or
# when the number of ok / not ok lines is not its plan (a case lost to a crash).
# A pool of $LOOM_TEST_LANES slots (default 2; 1: one after another) runs the suites,
# longest first: the seconds each took in the last full run (build/test_times.tsv, which
# bench/suite_times.sh prints), else the estimates in LONGEST below; a suite known to
# neither (a new tests/suite_*.sh) counts as $UNKNOWN_SECS.  Most suites keep about one
# core busy, so on two cores the longest ones never end up last, alone.  Each suite's
# line is printed as it ends.
# Shared by every suite of the run: the generated programs' C and nvcc compiles go
# through ccache (LOOM_COMPILER_LAUNCHER, cache in build/ccache) where it is installed,
# the emulated CUDA builds' objects are kept in build/cuda_emu_cache (tests/cuda_emu/
# build.sh), and the emulated programs' NVRTC kernels in one cache for this run.
set -u
cd "$(dirname "$0")/.."
export LOOM="$PWD/build/loom"
# idle OpenMP threads sleep instead of spinning while the other lane computes
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
if [ -z "${LOOM_COMPILER_LAUNCHER+set}" ] && command -v ccache >/dev/null; then
  export LOOM_COMPILER_LAUNCHER=ccache CCACHE_DIR=${CCACHE_DIR:-$PWD/build/ccache}
  # generated files are written just before they are compiled: hash them, not their times
  export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-include_file_mtime,include_file_ctime}
  # and not the directory they are compiled in: ccache hashes it into nvcc's compiles,
  # so the runtime's loom_cuda.cu (the same in every CUDA program) missed in each new one
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
fi
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
export LOOM_KERNEL_CACHE=${LOOM_KERNEL_CACHE:-$log/kernel_cache}
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
    # the failures first (a suite's comments could fill the 40 lines), then its comments
    if [ "$f" -gt 0 ]; then { grep -E '^not ok' "$out"; grep -E '^#' "$out"; } | head -40 | sed 's/^/    /'; fi
    if [ -n "$extra" ]; then echo "$extra" | sed 's/^/    /'; fi
    grep -E '^ok .*# (SKIP|skip)' "$out" | head -5 | sed 's/^/    /'
  } >"$out.line"
  cat "$out.line"   # one write per suite: the lanes' lines do not interleave
}
# Seconds a fresh full run took (2 cores, stop 36), for the order when build/test_times.tsv is missing
# (as in CI's clean clone): the emulated suites first, beside suite_cuda
LONGEST=(tests/suite_cuda.sh:727 tests/suite_ops_emu.sh:561 tests/suite_cuda_emu.sh:516
  tests/suite_precision.sh:208 tests/suite_families.sh:169 tests/suite_ddp.sh:162 tests/suite_step.sh:152
  tests/suite_fsdp.sh:132 tests/suite_fuse_emu.sh:84 tests/suite_train.sh:59)
UNKNOWN_SECS=60
times_file=build/test_times.tsv   # NAME WALL_SECONDS CPU_SECONDS, written after a full run
estimate() {   # NAME: seconds expected
  local e
  if [ -f "$times_file" ]; then
    e=$(awk -F'\t' -v n="$1" '$1 == n { print $2; exit }' "$times_file")
    [ -n "$e" ] && { echo "$e"; return; }
  fi
  for e in "${LONGEST[@]}"; do [ "${e%:*}" = "$1" ] && { echo "${e##*:}"; return; }; done
  echo "$UNKNOWN_SECS"
}
# run_one NAME: runs a suite (a shell suite or a Criterion binary) and records its seconds
# (wall and user+sys of everything it ran) in $log/NAME.time
run_one() {
  local t0=$SECONDS
  case $1 in *.sh) run_suite "$1" bash "$1" ;; *) run_suite "$1" "$1" --tap -j2 ;; esac
  local cpu
  times >"$log/$(basename "$1").cpu"   # a builtin, not in a pipe: this shell's children
  cpu=$(tail -1 "$log/$(basename "$1").cpu" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); c += a[1] * 60 + a[2] } } END { printf "%.0f", c }')
  printf '%s\t%d\t%s\n' "$1" $((SECONDS - t0)) "$cpu" >"$log/$(basename "$1").time"
}
# tests/run_all.sh SUITE...: only those (tests/suite_X.sh or build/tests/test_X), in order
if [ $# -gt 0 ]; then
  for s in "$@"; do ( run_one "$s" ); done
else
  all=()
  for t in build/tests/*; do [ -x "$t" ] && [ -f "$t" ] && all+=("$t"); done
  for s in tests/suite_*.sh; do [ -f "$s" ] && all+=("$s"); done
  # longest first; equal estimates keep the order above
  mapfile -t order < <(for i in "${!all[@]}"; do printf '%s\t%d\t%s\n' "$(estimate "${all[$i]}")" "$i" "${all[$i]}"; done |
    sort -t$'\t' -k1,1nr -k2,2n | cut -f3)
  slots=${LOOM_TEST_LANES:-2}
  case $slots in ''|*[!0-9]*|0) echo "run_all.sh: LOOM_TEST_LANES=$slots is not a number of slots" >&2; exit 2 ;; esac
  running=0
  for s in "${order[@]}"; do
    if [ "$running" -ge "$slots" ]; then wait -n; running=$((running - 1)); fi
    ( run_one "$s" ) &
    running=$((running + 1))
  done
  wait
  # every suite must have left its counts: one that did not (its subshell killed) fails
  for s in "${order[@]}"; do
    [ -f "$log/$(basename "$s").sum" ] || { echo "not ok $s: left no result"; echo "0 1 0" >"$log/$(basename "$s").sum"; }
  done
  if [ "${#order[@]}" -gt 0 ]; then
    mkdir -p "$(dirname "$times_file")" && cat "$log"/*.time >"$times_file.new" 2>/dev/null && mv "$times_file.new" "$times_file"
  fi
fi
pass=0; fail=0; skip=0
for f in "$log"/*.sum; do
  read -r p x s <"$f"
  pass=$((pass + p)); fail=$((fail + x)); skip=$((skip + s))
done
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
