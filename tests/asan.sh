#!/usr/bin/env bash
# `ninja test-asan`: everything a user can run, under AddressSanitizer and
# UndefinedBehaviorSanitizer (leaks included, no suppressions).  loom itself
# (build/asan/loom) runs inspect, explain and build on every spec in specs/ and every
# tests/spec_fail case; each spec's program is generated with the sanitizers
# ($LOOM_CFLAGS / $LOOM_LDFLAGS), trains a few steps, and resumes from its checkpoint;
# the data and checkpoint Criterion suites run sanitized.  A test fails on a non-zero
# exit where success is expected, or on any sanitizer report, which its line names
# (the first frame in loom's own code: file:line).
# Not part of `ninja test` (about 10 minutes on two cores, see the closing note of issue 11).
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh   # ok, fail, skip

LOOM=build/asan/loom
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
export LOOM_CFLAGS="$SAN" LOOM_LDFLAGS="$SAN"
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LOOM_SPEC_SECONDS=${LOOM_SPEC_SECONDS:-2}
export GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=2
STEPS=${ASAN_STEPS:-3}
work=$(mktemp -d)
mkdir -p "$work/run"
trap 'rm -rf "$work"' EXIT

for b in "$LOOM" build/asan/tests/test_data build/asan/tests/test_ckpt; do
  [ -x "$b" ] || { fail "asan" "$b is not built (run 'ninja test-asan', which builds it)"; exit 0; }
done

# The sanitizer's report in LOG, as one line: its kind and the first frame that is
# ours (not libc, the sanitizer runtime, Lua or OpenBLAS); empty when there is none.
report() {
  local log=$1 kind frame
  kind=$(grep -m1 -oE "ERROR: (AddressSanitizer|LeakSanitizer): [a-z-]+|runtime error: .*" "$log")
  [ -n "$kind" ] || return 0
  frame=$(grep -E "^ +#[0-9]+ " "$log" | grep -vE "libsanitizer|/libc|libasan|libubsan|liblua|libopenblas|libgomp|libcriterion|\(<unknown|/lib/x86_64" | head -1 |
          sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //')
  [ -n "$frame" ] || frame=$(grep -m1 -oE "[A-Za-z0-9_./-]+\.(c|inc|h):[0-9]+" "$log")
  echo "$kind at $frame"
}

# run NAME EXPECT CMD...: EXPECT is "0" (must succeed) or "fail" (must exit non-zero,
# a user error); either way no sanitizer report
run() {
  local name=$1 expect=$2; shift 2
  local log="$work/log.$((++nlog))" rc rep
  "$@" >"$log" 2>&1; rc=$?
  rep=$(report "$log")
  if [ -n "$rep" ]; then fail "$name" "$rep"
  elif [ "$expect" = 0 ] && [ $rc -ne 0 ]; then fail "$name" "exit $rc: $(tail -2 "$log" | tr '\n' ' ')"
  elif [ "$expect" = fail ] && { [ $rc -eq 0 ] || [ $rc -ge 70 ]; }; then fail "$name" "exit $rc, expected a user error: $(head -1 "$log")"
  else ok "$name"; fi
  return $rc
}
nlog=0

# the front end on every mistake in tests/spec_fail
for f in tests/spec_fail/*.lua; do
  run "asan spec_fail/$(basename "$f" .lua)" fail "$LOOM" inspect "$f"
done

# every spec: inspect, explain, build (with the sanitizers), train, resume
for spec in specs/*.lua; do
  s=$(basename "$spec" .lua)
  run "asan inspect $s" 0 "$LOOM" inspect "$spec"
  run "asan explain $s" 0 "$LOOM" explain "$spec" -o "$work/explain/$s"
  if ! run "asan build $s" 0 "$LOOM" build "$spec" -o "$work/$s"; then
    skip "asan train $s" "did not build"; skip "asan resume $s" "did not build"; continue
  fi
  if run "asan train $s ($STEPS steps)" 0 "$work/$s/train" --max-steps "$STEPS" --out "$work/run/$s" --quiet; then
    run "asan resume $s" 0 "$work/$s/train" --max-steps $((STEPS * 2)) --resume "$work/run/$s/last.safetensors" \
      --out "$work/run/$s.resumed" --quiet
  else skip "asan resume $s" "training failed"; fi
done

# the runtime's data and checkpoint suites (Criterion forks each test: the report is
# in the child's output)
for t in test_data test_ckpt; do
  run "asan $t" 0 "build/asan/tests/$t" --jobs 1
done
