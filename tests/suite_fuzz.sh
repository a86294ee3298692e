#!/usr/bin/env bash
# A short bounded fuzzing run (tests/fuzz/run.sh): every committed corpus input (seeds
# and the regression inputs of crashes once found) runs, then each libFuzzer target
# mutates for $FUZZ_SUITE_SECONDS (default 10) s.  `ninja fuzz-long` is the long run.
set -u
cd "$(dirname "$0")/.."
echo "1..6"   # tests/fuzz/run.sh's targets: ckpt idx npy csv image spec
if ! command -v clang >/dev/null; then
  for t in ckpt idx npy csv image spec; do echo "ok fuzz $t # SKIP no clang (Debian's clang has libFuzzer)"; done
  exit 0
fi
exec tests/fuzz/run.sh "${FUZZ_SUITE_SECONDS:-10}"
