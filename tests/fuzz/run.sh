#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS [TARGET...]]: runs each libFuzzer target (build/fuzz/,
# `ninja fuzzers`) for SECONDS (default $FUZZ_SECONDS, else 10), one after another,
# and prints a TAP line per target with its executions and corpus size.
#   - first, every committed input in tests/fuzz/corpus/TARGET (the seeds and each
#     crash ever found, kept as a regression input) runs once;
#   - new inputs go to build/fuzz/corpus/TARGET (kept between runs, so a long run
#     continues where the last one stopped; never committed by itself);
#   - a crash, a leak, a hang past 10 s or memory past 2 GiB fails the target; the
#     input is left in build/fuzz/crashes/ and the line names the report's first frame.
#     Add it to tests/fuzz/corpus/TARGET once it is fixed.
# `ninja fuzz-long` runs it for an hour per target (FUZZ_SECONDS=3600).
set -u
cd "$(dirname "$0")/../.."
. tests/tap.sh   # ok, fail, skip
secs=${1:-${FUZZ_SECONDS:-10}}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ckpt idx npy csv image spec)
mkdir -p build/fuzz/corpus build/fuzz/crashes
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

for t in "${targets[@]}"; do
  bin=build/fuzz/fuzz_$t seeds=tests/fuzz/corpus/$t corpus=build/fuzz/corpus/$t
  if [ ! -x "$bin" ]; then fail "fuzz $t" "$bin is not built (ninja fuzzers)"; continue; fi
  mkdir -p "$corpus"
  extra=(-max_len=4096)
  # the front end: DSL names to splice in (the harness captures loom's output)
  [ "$t" = spec ] && extra=(-max_len=8192 -dict=tests/fuzz/spec.dict)
  log=build/fuzz/$t.log
  "$bin" "${extra[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build/fuzz/crashes/$t-" "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  execs=$(grep -a -oE "stat::number_of_executed_units: [0-9]+" "$log" | grep -oE "[0-9]+$")
  n=$(find "$corpus" -type f | wc -l)
  # fuzz_spec's Lua: instrumented from Debian's source, or why not (tests/fuzz/lua_lib.sh)
  note=""
  [ "$t" = spec ] && [ -f build/fuzz/lua/liblua.a.note ] && note="; $(cat build/fuzz/lua/liblua.a.note)"
  if [ $rc -eq 0 ]; then
    ok "fuzz $t (${execs:-?} executions in $secs s, corpus $n inputs + $(ls "$seeds" | wc -l) seeds$note)"
  else
    what=$(grep -a -m1 -oE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+( \(malloc\([0-9]+\)\))?|runtime error: .*|fuzz_spec: .*" "$log")
    frame=$(grep -a -E "^ +#[0-9]+ " "$log" | grep -vE "libsanitizer|libFuzzer|fuzzer::|compiler-rt|/libc|liblua| in __(asan|interceptor|ubsan|sanitizer)| in (__pthread_kill_implementation|raise|abort) |\(<unknown|/lib/x86_64" | head -1 |
            sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //')
    input=$(grep -a -m1 -oE "Test unit written to [^ ]+" "$log" | cut -d' ' -f5)
    # fuzz_spec prints loom's own first line (the internal error) under its own
    detail=$(grep -a -m1 -A1 "^fuzz_spec: " "$log" | sed -n 2p)
    fail "fuzz $t" "${what:-exit $rc}${detail:+ ($detail)} at ${frame:-?}; input ${input:-?}; log $log"
  fi
done
