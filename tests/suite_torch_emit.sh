#!/usr/bin/env bash
# `loom build --emit torch`: the PyTorch module prints like loom inspect, loads a loom
# checkpoint with load_state_dict(strict=True), and computes what the reference does.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! OPENBLAS_NUM_THREADS=1 "$PY" -c "import torch" 2>/dev/null; then
  for s in fashion_mlp fashion_cnn paw tiny_transformer; do echo "ok emit torch $s # SKIP no torch for $PY"; done
  exit 0
fi
for s in fashion_mlp fashion_cnn paw tiny_transformer; do
  flags=""
  [ $s = paw ] && flags="--precision=32-true --accelerator=cpu"   # model.py is compared in float32, on the CPU
  compile=--no-compile
  { [ $s = fashion_mlp ] || [ $s = fashion_cnn ]; } && compile=""
  if ! "$LOOM" build "specs/$s.lua" $flags $compile --emit torch -o "$work/$s" >"$work/$s.log" 2>&1; then
    echo "not ok emit torch $s: $(tail -3 "$work/$s.log")"; continue
  fi
  "$LOOM" inspect "specs/$s.lua" | sed '/^$/,$d' >"$work/$s.print"
  cls=$(head -1 "$work/$s.print" | sed 's/(.*//')
  ckpt=""
  if [ -z "$compile" ] && [ -d /usr/share/datasets/fashion-mnist ]; then
    "$work/$s/train" --max-steps 20 --out "$work/run_$s" --quiet >/dev/null 2>&1 && ckpt="$work/run_$s/last.safetensors"
  fi
  OPENBLAS_NUM_THREADS=1 "$PY" tests/torch/check_emit.py "$s" "$work/$s/model.py" "$cls" "$work/$s.print" $ckpt 2>&1 |
    sed 's/^/    /; s/^    ok/ok/; s/^    not ok/not ok/'
done
exit 0
