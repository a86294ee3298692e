#!/usr/bin/env bash
# Unit tests of the middle stages (precision.assign/fold, autodiff, plan, fuse.plan) and
# of the shared operand context (gen/operands.lua, gen/kernels_c.lua) on
# small hand-made specs: tests/passes/*.lua, each run by build/lua_unit (the generator's
# Lua state) and printing its own plan; a file that crashes is a "not ok" for its cases.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
UNIT=$(dirname "$LOOM")/lua_unit
. tests/tap.sh   # plan, fail, harness
files=(tests/passes/*.lua)
# each file's plan: the number of test(...) calls in it
n=0
for f in "${files[@]}"; do n=$((n + $(grep -c '^test("' "$f"))); done
plan $n
for f in "${files[@]}"; do
  if [ ! -x "$UNIT" ]; then fail "$(basename "$f" .lua)" "no $UNIT (ninja builds it)"; continue; fi
  # (the file's own plan line becomes a comment: this suite's is above)
  harness "$(basename "$f" .lua)" "$(grep -c '^test("' "$f")" "" "$UNIT" "$f"
done
