#!/usr/bin/env bash
# Parity with PyTorch (fp32, CPU) for fashion_mlp, fashion_cnn, paw and tiny_gpt, against the
# hand-written modules of tests/torch/models.py:
#  - parity_SPEC_grad: one forward (training mode) and backward on a random batch from
#    PyTorch-initialised weights: the loss, every gradient, the BatchNorm running
#    statistics and num_batches_tracked after the forward;
#  - parity_SPEC_OPT: 20 training steps on that batch with the spec's optimizer line
#    replaced (SGD with Nesterov momentum and weight decay, AdamW; Adam with L2 weight
#    decay except on paw, whose forwards are slow; for fashion_mlp also SGD with
#    dampening and clipping by value, and AdamW with clipping by norm): the loss of every step, the final weights and running
#    statistics against torch.optim's.
# Every case runs twice: parity_* in fp32 (loom --precision=32-true against PyTorch
# float32) and parity64_* in fp64 (64-true against float64, where the formulas must
# agree to 1e-9).  Measure: per tensor max|loom - torch| / max|torch|; fp32 tolerance
# 1e-4, or 4x PyTorch's own fp32-vs-fp64 error where 20 Adam steps make that larger;
# paw's steps 1e-3, its max-pools' near-ties (see tests/torch/parity.py).  The harness is tests/harness/parity.c.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
export OMP_NUM_THREADS=${PARITY_THREADS:-1}
STEPS=20
CFLAGS="-std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A BATCH=([fashion_mlp]=32 [fashion_cnn]=8 [paw]=4 [tiny_gpt]=2)
specs=(${PARITY_SPECS:-fashion_mlp fashion_cnn paw tiny_gpt})
# name | optimizer line | clip table (empty: none) | specs
cases=(
  "sgd_nesterov|SGD { lr = 0.01, momentum = 0.9, nesterov = true, weight_decay = 1e-4 }||fashion_mlp fashion_cnn paw"
  "sgd_dampening_clipval|SGD { lr = 0.05, momentum = 0.8, dampening = 0.1, weight_decay = 1e-3 }|{ clip_val = 0.002 }|fashion_mlp"
  "sgd_maximize|SGD { lr = 0.01, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3, maximize = true }||fashion_mlp"
  "adam|Adam { lr = 1e-3, weight_decay = 1e-4 }||fashion_mlp fashion_cnn"
  "adamw|AdamW { lr = 1e-3, weight_decay = 0.01 }||fashion_mlp fashion_cnn paw"
  "adamw_clipnorm|AdamW { lr = 2e-3, betas = {0.8, 0.99}, eps = 1e-6, weight_decay = 0.05 }|{ max_norm = 0.5 }|fashion_mlp"
  "adamw_groups_clipnorm|AdamW { lr = 1e-3, betas = {0.9, 0.95}, weight_decay = 0.1, decay_min_ndim = 2 }|{ max_norm = 1.0 }|fashion_mlp tiny_gpt"
)

# PARITY_CASES (one case a line, as above) replaces them: tests/suite_optim.sh's
[ -n "${PARITY_CASES:-}" ] && mapfile -t cases <<<"$PARITY_CASES"
. tests/tap.sh   # plan, fail, no_torch, harness
# names SPEC: the cases of SPEC (each runs as parity_SPEC_CASE and parity64_SPEC_CASE)
names() {
  echo "$1_grad"
  for c in "${cases[@]}"; do
    IFS='|' read -r name _ _ on <<<"$c"
    [[ " $on " == *" $1 "* ]] && echo "$1_$name"
  done
}
all=$(for s in "${specs[@]}"; do names "$s"; done)
plan $((2 * $(echo "$all" | wc -l)))
if py_lacks torch numpy; then
  for n in $all; do for p in parity parity64; do no_torch "${p}_$n" "$PY has no torch or numpy"; done; done
  exit 0
fi

# The runtime objects the harness links (they do not depend on the model or precision)
rt="$tmp/rt"
mkdir -p "$rt"
if ! "$LOOM" build specs/fashion_mlp.lua -o "$tmp/rtsrc" --no-compile >"$tmp/rt.gen" 2>&1; then
  for n in $all; do for p in parity parity64; do fail "${p}_$n" "loom build failed: $(tail -1 "$tmp/rt.gen")"; done; done; exit 0
fi
for f in ckpt data npy idx tokens; do
  cc $CFLAGS -I"$tmp/rtsrc" -c "$tmp/rtsrc/$f.c" -o "$rt/$f.o" 2>"$tmp/rt.cc" ||
    { for n in $all; do for p in parity parity64; do fail "${p}_$n" "runtime $f.c does not compile: $(grep -m1 error "$tmp/rt.cc")"; done; done; exit 0; }
done

# build_harness SPEC_FILE DIR PREC BASE: generate at precision PREC and link tests/harness/parity.c
# against it; model.c is compiled once per spec and precision (in BASE) and reused when
# a variant's model.c/model.h differ from BASE's only in comments and the spec hash.
strip_src() { sed -e 's|//.*||' -e '/MODEL_SPEC_HASH/d' "$@"; }
build_harness() {
  local spec_file=$1 d=$2 prec=$3 base=$4
  "$LOOM" build "$spec_file" -o "$d" --precision="$prec" --devices=1 --no-compile >"$d.gen" 2>&1 ||
    { echo "loom build failed: $(tail -1 "$d.gen")"; return 1; }
  local model_o="$base/model.o"
  if [ "$d" = "$base" ] || ! cmp -s <(strip_src "$d/model.c" "$d/model.h") <(strip_src "$base/model.c" "$base/model.h"); then
    model_o="$d/model.o"
    cc $CFLAGS -I"$d" -c "$d/model.c" -o "$model_o" >"$d.cc" 2>&1 ||
      { echo "model.c does not compile: $(grep -m1 error "$d.cc")"; return 1; }
  fi
  cc $CFLAGS -I"$d" tests/harness/parity.c "$d/optim.c" "$model_o" "$rt"/*.o -o "$d/parity" -ldnnl -lopenblas -lz -lm \
    >"$d.cc" 2>&1 || { echo "harness does not compile: $(grep -m1 error "$d.cc")"; return 1; }
}

manifest="$tmp/manifest.tsv"
: >"$manifest"
for s in "${specs[@]}"; do
  B=${BATCH[$s]}
  ok=1
  for prec in 32 64; do
    if ! msg=$(build_harness "specs/$s.lua" "$tmp/${s}_$prec" "$prec-true" "$tmp/${s}_$prec"); then
      ok=0; why=$msg
    fi
  done
  if [ $ok = 0 ]; then   # the spec's own program: none of its cases run
    for n in $(names "$s"); do fail "parity_$n" "$why"; fail "parity64_$n" "$why"; done; continue
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${s}_grad" "$s" "$B" 0 - - "$tmp/${s}_32/parity" "$tmp/${s}_64/parity" >>"$manifest"
  for c in "${cases[@]}"; do
    IFS='|' read -r name opt clip on <<<"$c"
    [[ " $on " == *" $s "* ]] || continue
    v="$tmp/${s}_$name"
    # the spec with its optimizer line replaced (and a clip line added), and without
    # its learning-rate schedule and clip (the case gives its own): the reference steps torch.optim at a constant lr
    line="  optimizer = $opt,"
    [ -n "$clip" ] && line="$line
  clip = $clip,"
    awk -v line="$line" '/^[[:space:]]*optimizer = / { print line; next } /^[[:space:]]*(scheduler|clip) = / { next } { print }' "specs/$s.lua" >"$v.lua"
    ok=1
    for prec in 32 64; do
      if ! msg=$(build_harness "$v.lua" "${v}_$prec" "$prec-true" "$tmp/${s}_$prec"); then
        ok=0; why=$msg
      fi
    done
    [ $ok = 1 ] || { fail "parity_${s}_$name" "$why"; fail "parity64_${s}_$name" "$why"; continue; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${s}_$name" "$s" "$B" "$STEPS" "$opt" "${clip:--}" "${v}_32/parity" "${v}_64/parity" >>"$manifest"
  done
done
# two results (parity_, parity64_) per case of the manifest
harness parity $((2 * $(wc -l <"$manifest"))) "" "$PY" tests/torch/parity.py run "$manifest"
