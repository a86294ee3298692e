#!/usr/bin/env bash
# The GPU test (`ninja test-gpu`; needs an NVIDIA GPU with compute capability >= 8.0 and
# the CUDA toolkit): for fashion_mlp, fashion_cnn and paw at 32-true, bf16-mixed,
# 16-mixed, bf16-true and 16-true, the CUDA program and the CPU program start from the same weights (both
# draw PyTorch's default initialisation from the same Philox streams on the host),
# train one step on the same first batch, and their checkpoints must agree:
#   - gradients: optimizer.exp_avg.* after one Adam step is 0.1 × the gradient;
#   - parameters after the step, and the validation loss printed at the end of the epoch.
# The same for issue 18's op specs (OPS18) at 32-true and bf16-mixed.
# Tolerances per precision (relative to each tensor's largest value): 32-true 1e-3
# (cuBLASLt's and OpenBLAS's summation orders, FMA contraction under NVRTC), bf16-mixed
# and 16-mixed 5e-2 (16-bit operands rounded at different points of a different sum
# order), bf16-true and 16-true the same (16-bit gradients and parameters).  Also: two fashion_mlp variants (SGD + clip by norm + Dropout, the mask is the
# CPU's; AdamW + clip by value) against the CPU the same way, and --cuda-graph: 6 steps
# with the step captured once (per batch slot) and replayed give the same checkpoint,
# bit for bit, as 6 eager steps (a value baked in at capture would show), with at most 4
# captures; a run with graphs resumed from its checkpoint ends bit for bit where one run
# ends (16-mixed: the device's GradScaler goes through the checkpoint); --device 0 is
# the default device bit for bit, and a device that is not there is one clear line; and
# train.log's metrics as the CPU program logs them (tests/metrics/cuda_metrics.lua).
# paw asks for devices = 2 (ddp): its CUDA program is built with --devices=1.
# Not run on machines without a GPU: prints a SKIP line for each test.  Not run by
# tests/run_all.sh (no GPU there).  `tests/gpu/run.sh --list` prints the tests' names,
# one a line, and runs nothing (no GPU needed).
set -u
cd "$(dirname "$0")/../.."
. tests/tap.sh
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
SPECS=(${GPU_SPECS:-fashion_mlp fashion_cnn paw})
PRECS=(32-true bf16-mixed 16-mixed bf16-true 16-true)
VARIANTS=(mlp_sgd_clipnorm_dropout mlp_adamw_clipval_dropout)
# issue 18's op specs (tests/suite_ops_emu.sh runs them emulated): NAME:SPEC, at 32-true
# and bf16-mixed
OPS18=(seq_ops:tests/cuda_specs/seq_ops.lua convt:tests/ops/convt.lua compare:tests/ops/compare.lua where:tests/ops/where.lua
  expand:tests/ops/expand.lua act:tests/ops/act.lua image:tests/ops/image.lua reduce:tests/ops/reduce.lua
  seq1d:tests/ops/seq1d.lua attn_mask:tests/ops/attn_mask.lua)
# The tests, in the order they run: the one list the plan, the SKIP lines and --list read
NAMES=()
for s in "${SPECS[@]}"; do for p in "${PRECS[@]}"; do NAMES+=("gpu_vs_cpu_${s}_$p" "gpu_cuda_graph_${s}_$p"); done; done
for v in "${VARIANTS[@]}"; do NAMES+=("gpu_vs_cpu_${v}_32-true"); done
for o in "${OPS18[@]}"; do for p in 32-true bf16-mixed; do NAMES+=("gpu_vs_cpu_${o%%:*}_$p"); done; done
NAMES+=(gpu_vs_cpu_mlp_tf32_32-true gpu_tf32_is_on gpu_cuda_graph_resume_fashion_mlp_16-mixed gpu_device_choice gpu_train_log_metrics)
if [ "${1:-}" = --list ]; then printf '%s\n' "${NAMES[@]}"; exit 0; fi
plan "${#NAMES[@]}"
declare -A TOL=([32-true]=1e-3 [bf16-mixed]=5e-2 [16-mixed]=5e-2 [bf16-true]=5e-2 [16-true]=5e-2)
# tests/harness/compare_ckpt.c (the emulator suite's tool): a gradient that is round-off
# only (a bias right before a BatchNorm) is measured against the model's largest, and
# Adam's first step (about lr * sign(g)) only where the gradient's sign is settled.
# paw: max-pool windows whose two largest values differ by round-off route the gradient
# differently (the CPU program's own fp32 and fp64 runs differ by 1.1e-2 there).
declare -A ROUNDOFF=([32-true]=1e-4 [bf16-mixed]=1e-2 [16-mixed]=1e-2 [bf16-true]=1e-2 [16-true]=1e-2)
declare -A SPEC_TOL=([paw_32-true]=3e-2 [paw_bf16-mixed]=8e-2 [paw_16-mixed]=8e-2 [paw_bf16-true]=8e-2 [paw_16-true]=8e-2)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  for n in "${NAMES[@]}"; do skip "$n" "no GPU"; done
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Iruntime tests/harness/compare_ckpt.c runtime/ckpt.c -o "$tmp/compare_ckpt" -lz -lm; then
  for n in "${NAMES[@]}"; do fail "$n" "tests/harness/compare_ckpt.c did not compile"; done
  exit 1
fi
# paw trains on synthetic data: a small run keeps the CPU side short
declare -A FLAGS=([fashion_mlp]="" [fashion_cnn]="" [paw]="")
# compare NAME SPEC_FILE PRECISION
compare() {
    local s=$1 spec=$2 p=$3
    name="gpu_vs_cpu_${s}_$p"
    c="$tmp/${s}_${p}_cpu" g="$tmp/${s}_${p}_gpu"
    if ! "$LOOM" build "$spec" --accelerator=cpu --precision="$p" --devices=1 -o "$c" >"$c.log" 2>&1 ||
       ! "$LOOM" build "$spec" --accelerator=cuda --precision="$p" --devices=1 -o "$g" >"$g.log" 2>&1; then
      echo "not ok $name: loom build failed"; return
    fi
    "$c/train" --max-steps 1 --epochs 1 --seed 11 --out "$c/run" ${FLAGS[$s]:-} >"$c/out.txt" 2>&1 || { echo "not ok $name: CPU run failed"; return; }
    "$g/train" --max-steps 1 --epochs 1 --seed 11 --out "$g/run" ${FLAGS[$s]:-} >"$g/out.txt" 2>&1 || { echo "not ok $name: GPU run failed: $(tail -1 "$g/out.txt")"; return; }
    cmp=$("$tmp/compare_ckpt" "$g/run/last.safetensors" "$c/run/last.safetensors" "${SPEC_TOL[${s}_$p]:-${TOL[$p]}}" "${ROUNDOFF[$p]}" 2>&1); ok=$?
    lc=$(grep -o "val/loss [0-9.naif]*" "$c/out.txt" | head -1 | cut -d' ' -f2)
    lg=$(grep -o "val/loss [0-9.naif]*" "$g/out.txt" | head -1 | cut -d' ' -f2)
    lossok=$(awk -v a="$lc" -v b="$lg" -v t="${TOL[$p]}" 'BEGIN { d = a - b; if (d < 0) d = -d; print (a != "" && d <= t * (a < 0 ? -a : a) + 1e-4) ? 1 : 0 }')
    if [ $ok -eq 0 ] && [ "$lossok" = 1 ]; then echo "ok $name (val/loss cpu $lc gpu $lg; $cmp)"
    else echo "not ok $name: val/loss cpu $lc gpu $lg; $cmp"; fi
}
# graph NAME PRECISION: after compare, --cuda-graph against plain, 6 steps, bit for bit
graph() {
    local s=$1 p=$2 g="$tmp/${1}_${2}_gpu"
    name="gpu_cuda_graph_${s}_$p"
    [ -x "$g/train" ] || { echo "not ok $name: no GPU program"; return; }
    "$g/train" --max-steps 6 --epochs 1 --seed 11 --out "$g/plain" >"$g/plain.txt" 2>&1 || { echo "not ok $name: plain run failed"; return; }
    "$g/train" --max-steps 6 --epochs 1 --seed 11 --out "$g/graph" --cuda-graph >"$g/graph.txt" 2>&1 || { echo "not ok $name: --cuda-graph run failed: $(tail -1 "$g/graph.txt")"; return; }
    launches=$(sed -n 's/^--cuda-graph: \([0-9]*\) graph launches$/\1/p' "$g/graph.txt")
    captures=$(sed -n 's/^--cuda-graph: \([0-9]*\) graphs captured$/\1/p' "$g/graph.txt")
    cmp=$("$tmp/compare_ckpt" "$g/graph/last.safetensors" "$g/plain/last.safetensors" 0 0 0 2>&1); ok=$?
    if [ $ok -eq 0 ] && [ "${launches:-0}" -ge 4 ] && [ "${captures:-0}" -ge 1 ] && [ "${captures:-9}" -le 4 ]; then
      echo "ok $name ($launches graph launches, $captures captures; $cmp)"
    else echo "not ok $name: launches ${launches:-none}, captures ${captures:-none}; $cmp"; fi
}
for s in "${SPECS[@]}"; do
  for p in "${PRECS[@]}"; do compare "$s" "specs/$s.lua" "$p"; graph "$s" "$p"; done
done
mkdir -p "$tmp/variants"
variant() {   # NAME DROPOUT OPTIMIZER CLIP
  sed -e "s/Linear(784, 256), ReLU(),/Linear(784, 256), ReLU(), $2/" \
      -e "s/optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },/optimizer = $3, clip = $4,/" specs/fashion_mlp.lua >"$tmp/variants/$1.lua"
}
variant mlp_sgd_clipnorm_dropout "Dropout(0.2)," "SGD { lr = 0.05, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3 }" "{ max_norm = 0.5 }"
variant mlp_adamw_clipval_dropout "Dropout(0.5)," "AdamW { lr = 1e-3, weight_decay = 0.01 }" "{ clip_val = 0.01 }"
for v in "${VARIANTS[@]}"; do compare "$v" "$tmp/variants/$v.lua" 32-true; done
for o in "${OPS18[@]}"; do for p in 32-true bf16-mixed; do compare "${o%%:*}" "${o#*:}" "$p"; done; done

# float32_matmul_precision = "high": TF32 GEMMs, against the CPU at bf16's tolerance, and
# not bit for bit the full-float32 program (TF32 is on)
sed 's/fabric { accelerator = "cpu", precision = "32-true" }/fabric { accelerator = "cpu", precision = "32-true", float32_matmul_precision = "high" }/' \
  specs/fashion_mlp.lua >"$tmp/variants/mlp_tf32.lua"
TOL[32-true]=5e-2; compare mlp_tf32 "$tmp/variants/mlp_tf32.lua" 32-true; TOL[32-true]=1e-3
if [ -f "$tmp/mlp_tf32_32-true_gpu/run/last.safetensors" ] && [ -f "$tmp/fashion_mlp_32-true_gpu/run/last.safetensors" ]; then
  if cmp -s "$tmp/mlp_tf32_32-true_gpu/run/last.safetensors" "$tmp/fashion_mlp_32-true_gpu/run/last.safetensors"; then
    echo "not ok gpu_tf32_is_on: the TF32 program's checkpoint is the full-float32 one's, bit for bit"
  else echo "ok gpu_tf32_is_on"; fi
else
  echo "not ok gpu_tf32_is_on: a program did not run"
fi

# --cuda-graph across a checkpoint: 2 epochs in one run == 1 epoch, resume, 1 more, bit
# for bit, every step of both captured once and replayed (16-mixed: the loss scale and
# its growth tracker are the device's, downloaded into the checkpoint and uploaded back)
g="$tmp/fashion_mlp_16-mixed_gpu"
name=gpu_cuda_graph_resume_fashion_mlp_16-mixed
if [ -x "$g/train" ]; then
  "$g/train" --epochs 2 --seed 5 --cuda-graph --quiet --out "$g/r2" >"$g/r2.txt" 2>&1 &&
  "$g/train" --epochs 1 --seed 5 --cuda-graph --quiet --out "$g/r1" >"$g/r1.txt" 2>&1 &&
  "$g/train" --epochs 2 --seed 5 --cuda-graph --quiet --resume "$g/r1/last.safetensors" --out "$g/r12" >"$g/r12.txt" 2>&1
  if [ $? -ne 0 ]; then echo "not ok $name: a run failed: $(tail -1 "$g"/r*.txt | tr '\n' '|')"
  elif cmp -s "$g/r2/last.safetensors" "$g/r12/last.safetensors"; then echo "ok $name"
  else echo "not ok $name: $("$tmp/compare_ckpt" "$g/r12/last.safetensors" "$g/r2/last.safetensors" 0 0 0 2>&1)"; fi
else
  echo "not ok $name: no GPU program"
fi

# train.log's metrics (tests/metrics/cuda_metrics.lua): the GPU program's metrics.csv is the
# CPU program's (step rows, epochs, validation, test) within 1e-3, and it read them back only
# on the rows that log them (tests/suite_metrics.sh makes the same check under tests/cuda_emu)
name=gpu_train_log_metrics
c="$tmp/metrics_cpu" g="$tmp/metrics_gpu"
csv=logs/lightning_logs/version_0/metrics.csv
if ! "$LOOM" build tests/metrics/cuda_metrics.lua --accelerator=cpu -o "$c" >"$c.log" 2>&1 ||
   ! "$LOOM" build tests/metrics/cuda_metrics.lua --accelerator=cuda -o "$g" >"$g.log" 2>&1; then
  echo "not ok $name: loom build failed"
elif ! "$c/train" --seed 11 --max-steps 7 --quiet --out "$c/run" >"$c/out.txt" 2>&1 ||
     ! "$g/train" --seed 11 --max-steps 7 --out "$g/run" >"$g/out.txt" 2>&1; then
  echo "not ok $name: a run failed: $(tail -q -n1 "$c/out.txt" "$g/out.txt" | tr '\n' ' ')"
else
  v=$(python3 tests/metrics/compare_runs.py same "$g/run/$csv" "$c/run/$csv" 1e-3)
  w=$(python3 tests/metrics/compare_runs.py readbacks "$g/run/$csv" "$g/out.txt")
  if [ "${v%% *}" = ok ] && [ "${w%% *}" = ok ]; then echo "ok $name ($v; $w)"; else echo "not ok $name: $v; $w"; fi
fi

# the device: --device 0 is the default device; a device that is not there is one line
g="$tmp/fashion_mlp_32-true_gpu"
name=gpu_device_choice
n=$(nvidia-smi -L | wc -l)
if [ -x "$g/train" ]; then
  "$g/train" --max-steps 3 --epochs 1 --seed 11 --device 0 --out "$g/dev0" >"$g/dev0.txt" 2>&1; rc0=$?
  "$g/train" --max-steps 3 --epochs 1 --seed 11 --out "$g/devd" >"$g/devd.txt" 2>&1
  out=$("$g/train" --max-steps 1 --device "$n" --out "$g/devn" 2>&1); rcn=$?
  if [ $rc0 -eq 0 ] && cmp -s "$g/dev0/last.safetensors" "$g/devd/last.safetensors" && [ $rcn -eq 1 ] &&
     [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "device $n asked for"; then
    echo "ok $name ($out)"
  else
    echo "not ok $name: --device 0 rc $rc0; --device $n rc $rcn: $out"
  fi
else
  echo "not ok $name: no GPU program"
fi
