#!/usr/bin/env bash
# The GPU test (`ninja test-gpu`; needs an NVIDIA GPU with compute capability >= 8.0 and
# the CUDA toolkit): for fashion_mlp, fashion_cnn and paw at 32-true, bf16-mixed and
# 16-mixed, the CUDA program and the CPU program start from the same weights (both
# draw PyTorch's default initialisation from the same Philox streams on the host),
# train one step on the same first batch, and their checkpoints must agree:
#   - gradients: optimizer.exp_avg.* after one Adam step is 0.1 × the gradient;
#   - parameters after the step, and the validation loss printed at the end of the epoch.
# Tolerances per precision (relative to each tensor's largest value): 32-true 1e-3
# (cuBLASLt's and OpenBLAS's summation orders, FMA contraction under NVRTC), bf16-mixed
# and 16-mixed 5e-2 (16-bit operands rounded at different points of a different sum
# order).  Not run on machines without a GPU: prints SKIP lines.
set -u
cd "$(dirname "$0")/../.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
SPECS=(${GPU_SPECS:-fashion_mlp fashion_cnn paw})
PRECS=(32-true bf16-mixed 16-mixed)
declare -A TOL=([32-true]=1e-3 [bf16-mixed]=5e-2 [16-mixed]=5e-2)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  for s in "${SPECS[@]}"; do for p in "${PRECS[@]}"; do echo "ok gpu_vs_cpu_${s}_$p # SKIP no GPU"; done; done
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Iruntime tests/gpu/compare_ckpt.c runtime/ckpt.c -o "$tmp/compare_ckpt" -lm ||
  { echo "not ok gpu_compare_tool: did not compile"; exit 0; }
# paw trains on synthetic data: a small run keeps the CPU side short
declare -A FLAGS=([fashion_mlp]="" [fashion_cnn]="" [paw]="")
for s in "${SPECS[@]}"; do
  for p in "${PRECS[@]}"; do
    name="gpu_vs_cpu_${s}_$p"
    c="$tmp/${s}_${p}_cpu" g="$tmp/${s}_${p}_gpu"
    if ! "$LOOM" build "specs/$s.lua" --accelerator=cpu --precision="$p" -o "$c" >"$c.log" 2>&1 ||
       ! "$LOOM" build "specs/$s.lua" --accelerator=cuda --precision="$p" -o "$g" >"$g.log" 2>&1; then
      echo "not ok $name: loom build failed"; continue
    fi
    "$c/train" --max-steps 1 --epochs 1 --seed 11 --out "$c/run" ${FLAGS[$s]} >"$c/out.txt" 2>&1 || { echo "not ok $name: CPU run failed"; continue; }
    "$g/train" --max-steps 1 --epochs 1 --seed 11 --out "$g/run" ${FLAGS[$s]} >"$g/out.txt" 2>&1 || { echo "not ok $name: GPU run failed: $(tail -1 "$g/out.txt")"; continue; }
    cmp=$("$tmp/compare_ckpt" "$g/run/last.safetensors" "$c/run/last.safetensors" "${TOL[$p]}" 2>&1); ok=$?
    lc=$(grep -o "val/loss [0-9.naif]*" "$c/out.txt" | head -1 | cut -d' ' -f2)
    lg=$(grep -o "val/loss [0-9.naif]*" "$g/out.txt" | head -1 | cut -d' ' -f2)
    lossok=$(awk -v a="$lc" -v b="$lg" -v t="${TOL[$p]}" 'BEGIN { d = a - b; if (d < 0) d = -d; print (a != "" && d <= t * (a < 0 ? -a : a) + 1e-4) ? 1 : 0 }')
    if [ $ok -eq 0 ] && [ "$lossok" = 1 ]; then echo "ok $name (val/loss cpu $lc gpu $lg; $cmp)"
    else echo "not ok $name: val/loss cpu $lc gpu $lg; $cmp"; fi
  done
done
