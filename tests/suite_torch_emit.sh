#!/usr/bin/env bash
# `loom build --emit torch`: the PyTorch module prints like loom inspect, loads a loom
# checkpoint with load_state_dict(strict=True), and computes what the reference does
# (tests/torch/check_emit.py: one result per check).  A model.py that does not load, or
# a check_emit.py that fails, is a "not ok" for each check it did not print.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
. tests/tap.sh   # plan, ok, fail, skip, no_torch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
specs=(fashion_mlp fashion_cnn paw tiny_transformer tiny_gpt)
FASHION=/usr/share/datasets/fashion-mnist
# checks SPEC: the checks check_emit.py makes of SPEC's model.py: the checkpoint is
# loaded for the specs whose program is built and trained here (on Fashion-MNIST)
checks() {
  case $1 in
    fashion_mlp|fashion_cnn) [ -d "$FASHION" ] && echo "print checkpoint forward" || echo "print forward" ;;
    *) echo "print forward" ;;
  esac
}
n=0
for s in "${specs[@]}"; do set -- $(checks "$s"); n=$((n + $#)); done
plan $n
if py_lacks torch; then
  for s in "${specs[@]}"; do for c in $(checks "$s"); do no_torch "emit_torch_${s}_$c" "$PY has no torch"; done; done
  exit 0
fi
for s in "${specs[@]}"; do
  want=$(checks "$s")
  flags=""
  [ $s = paw ] && flags="--precision=32-true --accelerator=cpu"   # model.py is compared in float32, on the CPU
  compile=--no-compile
  case $want in *checkpoint*) compile="" ;; esac
  if ! "$LOOM" build "specs/$s.lua" $flags --devices=1 $compile --emit torch -o "$work/$s" >"$work/$s.log" 2>&1; then
    for c in $want; do fail "emit_torch_${s}_$c" "loom build failed: $(tail -1 "$work/$s.log")"; done; continue
  fi
  "$LOOM" inspect "specs/$s.lua" | sed '/^$/,$d' >"$work/$s.print"
  cls=$(head -1 "$work/$s.print" | sed 's/(.*//')
  ckpt=""
  if [ -z "$compile" ]; then
    if "$work/$s/train" --max-steps 20 --out "$work/run_$s" --quiet >"$work/run_$s.log" 2>&1; then ckpt="$work/run_$s/last.safetensors"
    else fail "emit_torch_${s}_checkpoint" "the program did not train: $(tail -1 "$work/run_$s.log")"; want=${want/checkpoint /}; fi
  fi
  # check_emit.py prints "ok|not ok CHECK: why"; whatever else it prints (a traceback) is a
  # comment; a check it did not print (it failed before) is a "not ok" with its exit status
  out=$(OPENBLAS_NUM_THREADS=1 "$PY" tests/torch/check_emit.py "$s" "$work/$s/model.py" "$cls" "$work/$s.print" $ckpt 2>&1)
  rc=$?
  printf '%s\n' "$out" | sed -E "/^(ok|not ok) /!s/^/# /; s/^(ok|not ok) /\1 emit_torch_${s}_/"
  for c in $want; do
    printf '%s\n' "$out" | grep -qE "^(ok|not ok) $c\b" ||
      fail "emit_torch_${s}_$c" "check_emit.py exited $rc before this check: $(printf '%s\n' "$out" | tail -1)"
  done
done
exit 0
