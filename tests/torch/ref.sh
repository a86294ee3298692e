#!/bin/sh
# tests/torch/ref.sh SCRIPT OUT: the PyTorch reference values a Criterion suite reads
# (build.ninja's torch_ref rule).  Where /usr/bin/python3 has no torch module at all, OUT
# says "skip" and the suite's tests skip themselves; LOOM_REQUIRE_TORCH=1 (./run.sh test,
# which installs python3-torch) makes that a failure.  Any other failure of SCRIPT (a torch
# that does not import, an error in the script) fails the build: it is never a skip.
script=$1 out=$2
PY=/usr/bin/python3
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; then
  if [ "${LOOM_REQUIRE_TORCH:-0}" = 1 ]; then
    echo "$script: $PY has no torch module (LOOM_REQUIRE_TORCH=1: install python3-torch)" >&2
    exit 1
  fi
  echo "skip $PY has no torch module" >"$out"
  exit 0
fi
OPENBLAS_NUM_THREADS=1 "$PY" "$script" "$out.tmp" || { rm -f "$out.tmp"; echo "$script failed (above)" >&2; exit 1; }
mv "$out.tmp" "$out"
