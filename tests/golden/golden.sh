#!/usr/bin/env bash
# tests/golden/golden.sh DIR: generates every case of tests/golden/cases into DIR as the
# golden tree is laid out (DIR/NAME.PRECISION/cpu/..., DIR/NAME.PRECISION/cuda/...).
# tests/golden/golden.sh --regen: into tests/golden itself (`ninja regen-golden`).
# Exit status 1, and the line loom printed, when a case does not generate.
set -u
cd "$(dirname "$0")/../.."
LOOM=${LOOM:-build/loom}
out=$1
[ "$out" = --regen ] && out=tests/golden
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CPU_FILES="model.c model.h train.c"
CUDA_FILES="model.cu model.h train.c"
status=0
while read -r spec prec; do
  case $spec in ''|'#'*) continue ;; esac
  name=$(basename "$spec" .lua).$prec
  for acc in cpu cuda; do
    files=$CPU_FILES flags=""
    # --devices=1: the CUDA program runs on one device whatever the spec's fabric asks
    [ $acc = cuda ] && files=$CUDA_FILES flags=--devices=1
    if ! "$LOOM" build "$spec" --accelerator=$acc $flags --precision="$prec" --no-compile -o "$work/$name/$acc" \
         >"$work/$name.$acc.log" 2>&1; then
      echo "golden: $spec $prec ($acc) does not generate: $(grep -m1 . "$work/$name.$acc.log")" >&2; status=1; continue
    fi
    mkdir -p "$out/$name/$acc"
    for f in $files; do cp "$work/$name/$acc/$f" "$out/$name/$acc/$f"; done
  done
done <tests/golden/cases
exit $status
