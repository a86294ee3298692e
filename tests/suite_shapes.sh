#!/usr/bin/env bash
# Shape inference against PyTorch: the cases in tests/torch/shape_cases.py (every
# module of gen/nn.lua, every functional op of gen/tensor.lua, and shape errors
# that both must reject).  Each case is one model spec run through
# `$LOOM --dump=graph inspect`; its return shape must equal PyTorch's.
set -u
cd "$(dirname "$0")/.."
export LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
. tests/tap.sh   # py_lacks, no_torch
if py_lacks torch; then
  echo "1..1"
  no_torch shapes_against_torch "$PY has no torch"
  exit 0
fi
# shape_cases.py prints its plan (the number of results its cases give); where it fails
# before that, or part way, the failure is a result of its own (and tests/run_all.sh finds
# the plan missing or short)
err=$(mktemp)
trap 'rm -f "$err"' EXIT
"$PY" tests/torch/shape_cases.py 2>"$err"
rc=$?
if [ $rc -ne 0 ]; then
  sed 's/^/# /' "$err"
  fail shapes_against_torch "tests/torch/shape_cases.py exited $rc: $(tail -1 "$err")"
fi
exit $rc
