#!/usr/bin/env bash
# Whole-model gradient check in float64, for every spec in specs/: each is generated
# with --precision=64-true, tests/harness/gradcheck.c is compiled against its model.c,
# and the analytic gradient of random elements of every parameter tensor is compared
# with a central finite difference of the loss (model_forward, training mode).
# Tolerance: relative 1e-5, absolute below a noise floor; see gradcheck.c's header.
#
#   spec              B  elements/tensor  eps    why
#   fashion_mlp       8  10               1e-6   ReLU kinks: small eps
#   fashion_cnn       4  10               1e-6   ReLU and max-pool kinks; BatchNorm needs B > 1
#   paw               4  5                1e-6   max-pool kinks; 128x128 images make forwards slow
#   tiny_transformer  4  10               1e-4   smooth (GELU, LayerNorm, softmax): larger eps, less noise
#   tiny_gpt          2  4                1e-4   smooth; 4 blocks of width 256 at T=128 make forwards slow
#   unet              2  1                1e-6   ReLU and max-pool kinks; 64×64 images, 25 layers make forwards slow
#   char_lstm         2  4                1e-4   smooth (sigmoid, tanh); 2 layers unrolled over T=32
#   llama             2  3                1e-4   smooth (SiLU, RMSNorm, softmax); 4 blocks at T=64
# A spec without a row runs with B=4, 10 elements, eps 1e-6.
# resnet18 and vit_tiny are not checked here: at 64-true a finite difference of every
# parameter tensor takes minutes (vit_tiny: 138 s for 2 elements a tensor); their
# gradients are checked in fp64 against PyTorch's float64 autograd (two optimizer steps,
# every parameter within 1e-8) by tests/suite_families.sh, and their ops by
# tests/suite_ops.sh's gradient checks.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
export OPENBLAS_NUM_THREADS=1
export OMP_NUM_THREADS=${GRADCHECK_THREADS:-1}   # tiny kernels: threads only add overhead
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A ARGS=(
  [fashion_mlp]="8 10 1 1e-5 1e-6"
  [fashion_cnn]="4 10 1 1e-5 1e-6"
  [paw]="4 5 1 1e-5 1e-6"
  [tiny_transformer]="4 10 1 1e-5 1e-4"
  [tiny_gpt]="2 4 1 1e-5 1e-4"
  [unet]="2 1 1 1e-5 1e-6"
  [char_lstm]="2 4 1 1e-5 1e-4"
  [llama]="2 3 1 1e-5 1e-4"
)
declare -A ELSEWHERE=(
  [resnet18]="checked in fp64 against PyTorch by tests/suite_families.sh (a finite-difference check takes minutes)"
  [vit_tiny]="checked in fp64 against PyTorch by tests/suite_families.sh (a finite-difference check takes minutes)"
)

spec_files=(specs/*.lua)
echo "1..${#spec_files[@]}"
for spec_file in "${spec_files[@]}"; do
  s=$(basename "$spec_file" .lua)
  d="$tmp/$s"
  if [ -n "${ELSEWHERE[$s]:-}" ]; then echo "ok gradcheck_$s # SKIP ${ELSEWHERE[$s]}"; continue; fi
  if ! "$LOOM" build "$spec_file" -o "$d" --precision=64-true --devices=1 --no-compile >"$tmp/$s.gen" 2>&1; then
    echo "not ok gradcheck_$s: loom build failed: $(tail -1 "$tmp/$s.gen")"
    continue
  fi
  if ! cc -std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -I"$d" tests/harness/gradcheck.c "$d/model.c" \
      -o "$d/gradcheck" -ldnnl -lopenblas -lm >"$tmp/$s.cc" 2>&1; then
    echo "not ok gradcheck_$s: harness does not compile: $(grep -m1 error "$tmp/$s.cc")"
    continue
  fi
  # shellcheck disable=SC2086
  if "$d/gradcheck" ${ARGS[$s]:-4 10 1 1e-5 1e-6} >"$tmp/$s.out" 2>&1; then
    echo "ok gradcheck_$s"
  else
    echo "not ok gradcheck_$s: $(grep -c '^FAIL' "$tmp/$s.out") tensors out of tolerance"
  fi
  sed 's/^/#   /' "$tmp/$s.out"
done
