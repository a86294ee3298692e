#!/usr/bin/env bash
# Every Fabric precision string on the C backend (issue 4):
#  - precision_build_SPEC_PREC: the program for each spec at each precision is
#    generated and compiles with -Wall -Wextra -Werror (its own build.ninja);
#  - precision_plan_SPEC_PREC: from precision_plan.tsv, the plan the emitter followed:
#    no cast from a format into the same format, no operand conversion between the
#    compute type and itself, and every conversion of the plan is one call in model.c
#    (and no other conversion call is there);
#  - precision_folds: tests/precision/shared_input.lua has one cast of each fate: kept
#    as a kernel (read 5 times a step), folded into its producer's store, composed with
#    the cast before it, folded into its readers' loads;
#  - precision_train_SPEC_PREC: 150 steps of fashion_mlp / 60 of fashion_cnn on
#    Fashion-MNIST reach a test accuracy above 0.6 at every precision;
#  - precision_bf16-mixed_SPEC_grad: loss and gradients against PyTorch's CPU autocast
#    (tests/torch/precision_parity.py states the tolerance and why).
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PRECISIONS=(32-true 64-true bf16-mixed 16-mixed bf16-true 16-true)
SPECS=(specs/fashion_mlp.lua specs/fashion_cnn.lua specs/paw.lua specs/tiny_transformer.lua tests/precision/shared_input.lua)
DATA=/usr/share/datasets/fashion-mnist
TRAIN=(fashion_mlp fashion_cnn)                          # precision_train_SPEC_PREC
AUTOCAST=(fashion_mlp fashion_cnn paw shared_input)      # precision_bf16-mixed_SPEC_grad
. tests/tap.sh   # plan, ok, fail, skip, no_torch, harness
plan $((2 * ${#SPECS[@]} * ${#PRECISIONS[@]} + 1 + ${#TRAIN[@]} * ${#PRECISIONS[@]} + ${#AUTOCAST[@]}))

# conversions of the plan against the calls in model.c
check_plan() {
  local d=$1 prec=$2
  local plan="$d/precision_plan.tsv"
  [ -f "$plan" ] || { echo "no precision_plan.tsv"; return 1; }
  local same
  same=$(awk -F'\t' '$1 == "cast" && $2 == $3' "$plan" | head -1)
  [ -z "$same" ] || { echo "a cast into its own format: $same"; return 1; }
  local compute
  compute=$(sed -n '1s/.*compute \([a-z0-9]*\),.*/\1/p' "$plan")
  same=$(awk -F'\t' -v c="$compute" '$1 == "conversion" && $5 == c && $6 == c' "$plan" | head -1)
  [ -z "$same" ] || { echo "a conversion from $compute to $compute: $same"; return 1; }
  local planned called kept
  # an "update" (a 16-bit running statistic) is loaded before the op and stored after it
  planned=$(awk -F'\t' '$1 == "conversion" { n += ($7 == "update") ? 2 : 1 } END { print n + 0 }' "$plan")
  kept=$(awk -F'\t' '$1 == "cast" && $4 ~ /^kept/' "$plan" | wc -l)
  # (a parameter gradient's "accum" is one call of two: `if (gadd) k_accum_... else k_store_...`,
  # stored on the first backward after model_zero_grad: gen/kernels_c.lua's acc_params)
  called=$(sed 's|//.*||; s/ else k_store_[a-z0-9]*_from_[a-z0-9]*(/ else (/' "$d/model.c" \
    | grep -Eo '\bk_(load|store|accum)_[a-z0-9]+_(as|from)_[a-z0-9]+\(' | wc -l)
  local convert
  convert=$(sed 's|//.*||' "$d/model.c" | grep -Eo '\bk_convert_[a-z0-9]+_[a-z0-9]+\(' | wc -l)
  [ "$planned" -eq "$called" ] || { echo "the plan has $planned operand conversions, model.c calls $called"; return 1; }
  [ "$kept" -eq "$convert" ] || { echo "the plan keeps $kept casts, model.c converts $convert times"; return 1; }
  case $prec in
    32-true|64-true) [ "$planned" -eq 0 ] || { echo "$prec converts $planned operands"; return 1; } ;;
  esac
  echo "# $planned operand conversions, $kept kept casts"
}

for spec in "${SPECS[@]}"; do
  name=$(basename "$spec" .lua)
  for prec in "${PRECISIONS[@]}"; do
    d="$tmp/$name-$prec"
    if "$LOOM" build "$spec" --accelerator=cpu --precision="$prec" --devices=1 -o "$d" >"$d.log" 2>&1; then
      echo "ok precision_build_${name}_$prec"
      if out=$(check_plan "$d" "$prec"); then echo "ok precision_plan_${name}_$prec"; echo "$out"
      else echo "not ok precision_plan_${name}_$prec: $out"; fi
    else
      echo "not ok precision_build_${name}_$prec: $(grep -m1 -E 'error|loom:' "$d.log" "$d/build.log" 2>/dev/null | head -1)"
      echo "not ok precision_plan_${name}_$prec: not built"
    fi
  done
done

splan="$tmp/shared_input-bf16-mixed/precision_plan.tsv"
kept=$(awk -F'\t' '$1 == "cast" && $4 ~ /^kept/' "$splan" 2>/dev/null | wc -l)
store=$(awk -F'\t' '$1 == "cast" && $4 ~ /store of its producer/' "$splan" 2>/dev/null | wc -l)
composed=$(awk -F'\t' '$1 == "cast" && $4 ~ /^composed/' "$splan" 2>/dev/null | wc -l)
if [ "$kept" -eq 1 ] && [ "$store" -eq 1 ] && [ "$composed" -eq 1 ]; then echo "ok precision_folds"
else echo "not ok precision_folds: $kept kept (want 1: the input read 5 times), $store into a producer's store (want 1: LayerNorm's output), $composed cast of a cast (want 1)"; fi

if [ -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  for spec in "${TRAIN[@]}"; do
    steps=150; [ "$spec" = fashion_cnn ] && steps=60
    for prec in "${PRECISIONS[@]}"; do
      d="$tmp/$spec-$prec"
      if [ ! -x "$d/train" ]; then echo "not ok precision_train_${spec}_$prec: not built"; continue; fi
      out=$(cd "$d" && OMP_NUM_THREADS=2 ./train --max-steps $steps --quiet --out run 2>&1)
      acc=$(echo "$out" | sed -n 's/.*test\/acc \([0-9.]*\).*/\1/p' | tail -1)
      if [ -n "$acc" ] && awk -v a="$acc" 'BEGIN { exit !(a > 0.6) }'; then
        echo "ok precision_train_${spec}_$prec"
      else
        echo "not ok precision_train_${spec}_$prec: test accuracy '${acc}' after $steps steps: $(echo "$out" | tail -2 | tr '\n' ' ')"
      fi
      echo "# $spec $prec: test/acc $acc after $steps steps"
    done
  done
else
  for spec in "${TRAIN[@]}"; do for prec in "${PRECISIONS[@]}"; do
    skip "precision_train_${spec}_$prec" "Fashion-MNIST is not installed ($DATA)"
  done; done
fi

# parity with PyTorch's autocast
if ! py_lacks torch numpy; then
  CFLAGS="-std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
  declare -A BATCH=([fashion_mlp]=32 [fashion_cnn]=8 [paw]=16 [shared_input]=16)
  for spec in "${AUTOCAST[@]}"; do
    d="$tmp/parity-$spec"
    file=specs/$spec.lua; [ -f "$file" ] || file=tests/precision/$spec.lua
    if ! "$LOOM" build "$file" -o "$d" --precision=bf16-mixed --devices=1 --no-compile >"$d.log" 2>&1 ||
       ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d"/model.c "$d"/optim.c "$d"/ckpt.c "$d"/data.c "$d"/npy.c "$d"/idx.c "$d"/tokens.c \
            -o "$d/parity" -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
      echo "not ok precision_bf16-mixed_${spec}_grad: harness did not build: $(grep -m1 error "$d.cc" "$d.log")"
      continue
    fi
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 harness "precision_bf16-mixed_${spec}_grad" 1 "" \
      "$PY" tests/torch/precision_parity.py "$spec" "${BATCH[$spec]}" "$d/work" "$d/parity" bf16-mixed
  done
else
  for spec in "${AUTOCAST[@]}"; do no_torch "precision_bf16-mixed_${spec}_grad" "$PY has no torch or numpy"; done
fi
