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
# tiny_gpt (specs/tiny_gpt.lua with one block: context 128, 4 heads of 64, on 16 KB of
# the KJV; 3 steps) at 32-true and bf16-mixed the same way, with its attention as the
# fused flash kernels and (--gemm-attention) as GEMMs, and --cuda-graph; and its
# `generate` on the GPU (train --sample: the decode step with a key/value cache) from a
# checkpoint of the 32-true CPU program's 100 steps: at 32-true the CPU program's 200
# greedy tokens, with and without the cache, a seed's text the same twice; at bf16-mixed
# cached = uncached and at least the first 16 greedy tokens the CPU bf16-mixed program's
# (a near-tie of the top two logits after another summation order may part them later);
# the GPU's tokens/s, and how many of seed 7's sampled tokens are the CPU program's.
# The fashion data are the first 5768 training and 256 test images of Fashion-MNIST
# (tests/harness/cut_fashion.py): the validation split and 6 batches (--cuda-graph's 6 steps).
#
#   tests/gpu/run.sh                here: loom, the CPU programs and the GPU together
#   tests/gpu/run.sh --list         the tests' names, one a line (runs nothing, no GPU needed)
#   tests/gpu/run.sh --prepare DIR  no GPU needed: every program into DIR, built and
#                                   stripped (the CUDA ones by nvcc for sm_80 + sm_90), with
#                                   the CPU programs' libraries (oneDNN, OpenBLAS, ...), the
#                                   data and the comparison tool, for a machine that has a
#                                   GPU but no loom, compiler or BLAS
#   tests/gpu/run.sh --device DIR   on that machine: DIR's programs run and compared
#                                   (tests/gpu/device.sh does both)
# GPU_ONLY=REGEX runs only the tests whose names match (a rerun after fixes); the others
# print a SKIP line.  Without a GPU (all, --device) prints a SKIP line for each test.  Not
# run by tests/run_all.sh (no GPU there).
set -u
cd "$(dirname "$0")/../.."
. tests/tap.sh
LOOM=${LOOM:-build/loom}
SPECS=(${GPU_SPECS:-fashion_mlp fashion_cnn paw})
PRECS=(32-true bf16-mixed 16-mixed bf16-true 16-true)
VARIANTS=(mlp_sgd_clipnorm_dropout mlp_adamw_clipval_dropout)
GPT_PRECS=(32-true bf16-mixed)
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
for p in "${GPT_PRECS[@]}"; do
  NAMES+=("gpu_vs_cpu_tiny_gpt_$p" "gpu_cuda_graph_tiny_gpt_$p" "gpu_vs_cpu_tiny_gpt_gemm_attention_$p" "gpu_sample_tiny_gpt_$p")
done
MODE=all
case "${1:-}" in
  --list) printf '%s\n' "${NAMES[@]}"; exit 0 ;;
  --prepare|--device) MODE=${1#--}; [ $# -eq 2 ] || { echo "usage: $0 [--list | --prepare DIR | --device DIR]" >&2; exit 2; }
                      mkdir -p "$2" && B=$(cd "$2" && pwd) ;;
  "") ;;
  *) echo "usage: $0 [--list | --prepare DIR | --device DIR]" >&2; exit 2 ;;
esac
declare -A TOL=([32-true]=1e-3 [bf16-mixed]=5e-2 [16-mixed]=5e-2 [bf16-true]=5e-2 [16-true]=5e-2)
# tests/harness/compare_ckpt.c (the emulator suite's tool): a gradient that is round-off
# only (a bias right before a BatchNorm) is measured against the model's largest, and
# Adam's first step (about lr * sign(g)) only where the gradient's sign is settled.
# paw: max-pool windows whose two largest values differ by round-off route the gradient
# differently (the CPU program's own fp32 and fp64 runs differ by 1.1e-2 there).
declare -A ROUNDOFF=([32-true]=1e-4 [bf16-mixed]=1e-2 [16-mixed]=1e-2 [bf16-true]=1e-2 [16-true]=1e-2)
declare -A SPEC_TOL=([paw_32-true]=3e-2 [paw_bf16-mixed]=8e-2 [paw_16-mixed]=8e-2 [paw_bf16-true]=8e-2 [paw_16-true]=8e-2)
# steps of the comparison: tiny_gpt's 3 let a wrong group's weight decay (lr·wd·p) show in Adam's parameters
declare -A STEPS=([tiny_gpt]=3)
SAMPLE_N=200

if [ $MODE != prepare ] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; }; then
  plan "${#NAMES[@]}"
  for n in "${NAMES[@]}"; do skip "$n" "no GPU"; done
  exit 0
fi
if [ $MODE = all ]; then
  B=$(mktemp -d)
  trap 'rm -rf "$B"' EXIT
fi
# prepare: this run builds and runs the CPU side; device: it runs the GPU side (both: all)
prepare() { [ $MODE != device ]; }
device() { [ $MODE != prepare ]; }
if prepare; then
  mkdir -p "$B/bin" "$B/fashion" "$B/kjv" "$B/variants"
  cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Iruntime tests/harness/compare_ckpt.c runtime/ckpt.c -o "$B/bin/compare_ckpt" -lz -lm ||
    echo "tests/harness/compare_ckpt.c did not compile" >"$B/bin/error"
  cp tests/metrics/compare_runs.py "$B/bin/"
  python3 tests/harness/cut_fashion.py "$B/fashion" 5768 256 || echo "# cannot cut down Fashion-MNIST" >&2
  # tiny_gpt's token files (llm.c's layout, a byte per token): 16 KB of the KJV, 10% to validate
  head -c 16384 build/kjv.txt >"$B/kjv.txt" 2>/dev/null && "$LOOM" data tokens "$B/kjv.txt" -o "$B/kjv/kjv.bin" --val 0.1 >/dev/null 2>&1 ||
    echo "# no build/kjv.txt (ninja makes it): tiny_gpt's comparisons will fail" >&2
fi
if device; then
  plan "${#NAMES[@]}"
  if [ -f "$B/bin/error" ] || [ ! -x "$B/bin/compare_ckpt" ]; then
    for n in "${NAMES[@]}"; do fail "$n" "tests/harness/compare_ckpt.c did not compile"; done
    exit 1
  fi
fi
export LOOM_KERNEL_CACHE=${LOOM_KERNEL_CACHE:-$B/kernel_cache}
# want NAME: the test is selected (GPU_ONLY); else its SKIP line, and false
want() {
  [ -z "${GPU_ONLY:-}" ] && return 0
  [[ $1 =~ $GPU_ONLY ]] && return 0
  echo "ok $1 # SKIP not in GPU_ONLY"; return 1
}
# the CPU programs find the libraries --prepare copied (the device has no oneDNN or OpenBLAS)
cpu_env() { if [ -d "$B/lib" ]; then LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; else "$@"; fi; }
data_flag() { case $1 in fashion*|mlp*) echo "--data $B/fashion" ;; tiny_gpt*) echo "--data $B/kjv" ;; esac; }

# build KEY SPEC_FILE PRECISION [LOOM_FLAGS...] (prepare): $B/KEY/cpu/train (none with
# LOOM_FLAGS: the same CPU program as without them) and $B/KEY/gpu/train, stripped; why
# not in $B/KEY/error
build() {
  local k=$1 spec=$2 p=$3; shift 3
  local d="$B/$k"
  rm -rf "$d"; mkdir -p "$d/cpu" "$d/gpu"
  if { [ $# -eq 0 ] && ! "$LOOM" build "$spec" --accelerator=cpu --precision="$p" --devices=1 -o "$d/cpu_prog" >"$d/cpu_build.log" 2>&1; } ||
     ! "$LOOM" build "$spec" --accelerator=cuda --precision="$p" --devices=1 "$@" -o "$d/gpu_prog" >"$d/gpu_build.log" 2>&1; then
    echo "loom build failed: $(grep -m1 -i error "$d"/*_build.log)" >"$d/error"; return
  fi
  [ $# -eq 0 ] && strip -o "$d/cpu/train" "$d/cpu_prog/train"
  strip -o "$d/gpu/train" "$d/gpu_prog/train"
  rm -rf "$d/cpu_prog" "$d/gpu_prog"
}
# built KEY (device): the programs are there, or the line that says why not
built() {
  if [ -f "$B/$1/error" ]; then echo "$(cat "$B/$1/error")"; return 1; fi
  [ -x "$B/$1/gpu/train" ] || { echo "no GPU program"; return 1; }
}
# cpu_run KEY [CPU_KEY] (device): CPU_KEY's CPU program (KEY's by default), STEPS steps, into
# $B/KEY/cpu/run and $B/KEY/cpu.txt
cpu_run() {
  local d="$B/$1" c="$B/${2:-$1}" steps=${STEPS[${1%%_[0-9b]*-*}]:-1}
  [ -x "$c/cpu/train" ] || { echo "no CPU program" >"$d/cpu.txt"; return 1; }
  rm -rf "$d/cpu/run"
  cpu_env "$c/cpu/train" --max-steps "$steps" --epochs 1 --seed 11 --out "$d/cpu/run" $(data_flag "$1") >"$d/cpu.txt" 2>&1
}
# compare NAME KEY PRECISION [CPU_KEY]: the GPU program's STEPS steps against the CPU program's
compare() {
  local name=$1 k=$2 p=$3 d="$B/$2" why
  local steps=${STEPS[${k%%_[0-9b]*-*}]:-1}
  want "$name" || return
  why=$(built "$k") || { echo "not ok $name: $why"; return; }
  cpu_run "$k" "${4:-}" || { echo "not ok $name: CPU run failed: $(tail -1 "$d/cpu.txt")"; return; }
  "$d/gpu/train" --max-steps "$steps" --epochs 1 --seed 11 --out "$d/gpu/run" $(data_flag "$k") >"$d/gpu/out.txt" 2>&1 ||
    { echo "not ok $name: GPU run failed: $(tail -1 "$d/gpu/out.txt")"; return; }
  cmp=$("$B/bin/compare_ckpt" "$d/gpu/run/last.safetensors" "$d/cpu/run/last.safetensors" "${SPEC_TOL[$k]:-${TOL[$p]}}" "${ROUNDOFF[$p]}" 2>&1); ok=$?
  lc=$(grep -o "val/loss [0-9.naif]*" "$d/cpu.txt" | head -1 | cut -d' ' -f2)
  lg=$(grep -o "val/loss [0-9.naif]*" "$d/gpu/out.txt" | head -1 | cut -d' ' -f2)
  lossok=$(awk -v a="$lc" -v b="$lg" -v t="${TOL[$p]}" 'BEGIN { d = a - b; if (d < 0) d = -d; print (a != "" && d <= t * (a < 0 ? -a : a) + 1e-4) ? 1 : 0 }')
  if [ $ok -eq 0 ] && [ "$lossok" = 1 ]; then echo "ok $name (val/loss cpu $lc gpu $lg; $cmp)"
  else echo "not ok $name: val/loss cpu $lc gpu $lg; $cmp"; fi
}
# graph NAME KEY: --cuda-graph against plain, 6 steps, bit for bit
graph() {
  local name=$1 d="$B/$2" why
  want "$name" || return
  why=$(built "$2") || { echo "not ok $name: $why"; return; }
  local g="$d/gpu"
  "$g/train" --max-steps 6 --epochs 1 --seed 11 --out "$g/plain" $(data_flag "$2") >"$g/plain.txt" 2>&1 || { echo "not ok $name: plain run failed"; return; }
  "$g/train" --max-steps 6 --epochs 1 --seed 11 --out "$g/graph" --cuda-graph $(data_flag "$2") >"$g/graph.txt" 2>&1 || { echo "not ok $name: --cuda-graph run failed: $(tail -1 "$g/graph.txt")"; return; }
  launches=$(sed -n 's/^--cuda-graph: \([0-9]*\) graph launches$/\1/p' "$g/graph.txt")
  captures=$(sed -n 's/^--cuda-graph: \([0-9]*\) graphs captured$/\1/p' "$g/graph.txt")
  cmp=$("$B/bin/compare_ckpt" "$g/graph/last.safetensors" "$g/plain/last.safetensors" 0 0 0 2>&1); ok=$?
  if [ $ok -eq 0 ] && [ "${launches:-0}" -ge 4 ] && [ "${captures:-0}" -ge 1 ] && [ "${captures:-9}" -le 4 ]; then
    echo "ok $name ($launches graph launches, $captures captures; $cmp)"
  else echo "not ok $name: launches ${launches:-none}, captures ${captures:-none}; $cmp"; fi
}

# --- the CPU side (prepare): every program built, the CPU runs made
if prepare; then
  for s in "${SPECS[@]}"; do for p in "${PRECS[@]}"; do build "${s}_$p" "specs/$s.lua" "$p"; done; done
  variant() {   # NAME DROPOUT OPTIMIZER CLIP
    sed -e "s/Linear(784, 256), ReLU(),/Linear(784, 256), ReLU(), $2/" \
        -e "s/optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },/optimizer = $3, clip = $4,/" specs/fashion_mlp.lua >"$B/variants/$1.lua"
  }
  variant mlp_sgd_clipnorm_dropout "Dropout(0.2)," "SGD { lr = 0.05, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3 }" "{ max_norm = 0.5 }"
  variant mlp_adamw_clipval_dropout "Dropout(0.5)," "AdamW { lr = 1e-3, weight_decay = 0.01 }" "{ clip_val = 0.01 }"
  for v in "${VARIANTS[@]}"; do build "${v}_32-true" "$B/variants/$v.lua" 32-true; done
  for o in "${OPS18[@]}"; do for p in 32-true bf16-mixed; do build "${o%%:*}_$p" "${o#*:}" "$p"; done; done
  # float32_matmul_precision = "high": TF32 GEMMs
  sed 's/fabric { accelerator = "cpu", precision = "32-true" }/fabric { accelerator = "cpu", precision = "32-true", float32_matmul_precision = "high" }/' \
    specs/fashion_mlp.lua >"$B/variants/mlp_tf32.lua"
  build mlp_tf32_32-true "$B/variants/mlp_tf32.lua" 32-true
  # train.log's metrics: 7 steps on each side
  build metrics tests/metrics/cuda_metrics.lua 32-true
  # tiny_gpt with one block (the same kernels as four; a checkpoint a quarter the size)
  sed 's/^local V, T, C, H, L = 256, 128, 256, 4, 4 /local V, T, C, H, L = 256, 128, 256, 4, 1 /' specs/tiny_gpt.lua >"$B/variants/tiny_gpt.lua"
  grep -q "^local V, T, C, H, L = 256, 128, 256, 4, 1 " "$B/variants/tiny_gpt.lua" || echo "# specs/tiny_gpt.lua changed: its one-block variant has more" >&2
  for p in "${GPT_PRECS[@]}"; do
    build "tiny_gpt_$p" "$B/variants/tiny_gpt.lua" "$p"
    # attention as GEMMs: the GPU program alone (compared with tiny_gpt_$p's CPU program)
    build "tiny_gpt_gemm_attention_$p" "$B/variants/tiny_gpt.lua" "$p" --gemm-attention
  done
  if [ $MODE = prepare ]; then
    # the CPU programs' libraries but the C library's own
    mkdir -p "$B/lib"
    ldd "$B"/*/cpu/train | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' | sort -u |
      grep -v '/lib\(c\|m\|pthread\|dl\|rt\)\.so' | while read -r f; do cp -L "$f" "$B/lib/"; done
    rm -rf "$B/kernel_cache" "$B/kjv.txt"
    echo "prepared $(ls "$B"/*/gpu/train | wc -l) GPU and $(ls "$B"/*/cpu/train | wc -l) CPU programs in $B ($(du -sh "$B" | cut -f1)); errors: $(cat "$B"/*/error 2>/dev/null | wc -l)"
    exit 0
  fi
fi

# --- the GPU side (device)
for s in "${SPECS[@]}"; do
  for p in "${PRECS[@]}"; do compare "gpu_vs_cpu_${s}_$p" "${s}_$p" "$p"; graph "gpu_cuda_graph_${s}_$p" "${s}_$p"; done
done
for v in "${VARIANTS[@]}"; do compare "gpu_vs_cpu_${v}_32-true" "${v}_32-true" 32-true; done
for o in "${OPS18[@]}"; do for p in 32-true bf16-mixed; do compare "gpu_vs_cpu_${o%%:*}_$p" "${o%%:*}_$p" "$p"; done; done

# float32_matmul_precision = "high": TF32 GEMMs, against the CPU at bf16's tolerance, and
# not bit for bit the full-float32 program (TF32 is on)
TOL[32-true]=5e-2; compare gpu_vs_cpu_mlp_tf32_32-true mlp_tf32_32-true 32-true; TOL[32-true]=1e-3
if ! want gpu_tf32_is_on; then :
elif [ -f "$B/mlp_tf32_32-true/gpu/run/last.safetensors" ] && [ -f "$B/fashion_mlp_32-true/gpu/run/last.safetensors" ]; then
  if cmp -s "$B/mlp_tf32_32-true/gpu/run/last.safetensors" "$B/fashion_mlp_32-true/gpu/run/last.safetensors"; then
    echo "not ok gpu_tf32_is_on: the TF32 program's checkpoint is the full-float32 one's, bit for bit"
  else echo "ok gpu_tf32_is_on"; fi
else
  echo "not ok gpu_tf32_is_on: a program did not run"
fi

# --cuda-graph across a checkpoint: 2 epochs in one run == 1 epoch, resume, 1 more, bit
# for bit, every step of both captured once and replayed (16-mixed: the loss scale and
# its growth tracker are the device's, downloaded into the checkpoint and uploaded back)
g="$B/fashion_mlp_16-mixed/gpu"
name=gpu_cuda_graph_resume_fashion_mlp_16-mixed
F=(--seed 5 --cuda-graph --quiet --data "$B/fashion")
if ! want $name; then :
elif [ -x "$g/train" ]; then
  "$g/train" --epochs 2 "${F[@]}" --out "$g/r2" >"$g/r2.txt" 2>&1 &&
  "$g/train" --epochs 1 "${F[@]}" --out "$g/r1" >"$g/r1.txt" 2>&1 &&
  "$g/train" --epochs 2 "${F[@]}" --resume "$g/r1/last.safetensors" --out "$g/r12" >"$g/r12.txt" 2>&1
  if [ $? -ne 0 ]; then echo "not ok $name: a run failed: $(tail -1 "$g"/r*.txt | tr '\n' '|')"
  elif cmp -s "$g/r2/last.safetensors" "$g/r12/last.safetensors"; then echo "ok $name"
  else echo "not ok $name: $("$B/bin/compare_ckpt" "$g/r12/last.safetensors" "$g/r2/last.safetensors" 0 0 0 2>&1)"; fi
else
  echo "not ok $name: no GPU program"
fi

# the device: --device 0 is the default device; a device that is not there is one line
g="$B/fashion_mlp_32-true/gpu"
name=gpu_device_choice
n=$(nvidia-smi -L | wc -l)
if ! want $name; then :
elif [ -x "$g/train" ]; then
  "$g/train" --max-steps 3 --epochs 1 --seed 11 --device 0 --data "$B/fashion" --out "$g/dev0" >"$g/dev0.txt" 2>&1; rc0=$?
  "$g/train" --max-steps 3 --epochs 1 --seed 11 --data "$B/fashion" --out "$g/devd" >"$g/devd.txt" 2>&1
  out=$("$g/train" --max-steps 1 --device "$n" --data "$B/fashion" --out "$g/devn" 2>&1); rcn=$?
  if [ $rc0 -eq 0 ] && cmp -s "$g/dev0/last.safetensors" "$g/devd/last.safetensors" && [ $rcn -eq 1 ] &&
     [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "device $n asked for"; then
    echo "ok $name ($out)"
  else
    echo "not ok $name: --device 0 rc $rc0; --device $n rc $rcn: $out"
  fi
else
  echo "not ok $name: no GPU program"
fi

# train.log's metrics (tests/metrics/cuda_metrics.lua): the GPU program's metrics.csv is the
# CPU program's (step rows, epochs, validation, test) within 1e-3, and it read them back only
# on the rows that log them (tests/suite_metrics.sh makes the same check under tests/cuda_emu)
name=gpu_train_log_metrics
d="$B/metrics"
csv=logs/lightning_logs/version_0/metrics.csv
if ! want $name; then :
elif ! why=$(built metrics); then
  echo "not ok $name: $why"
elif ! cpu_env "$d/cpu/train" --seed 11 --max-steps 7 --quiet --out "$d/cpu/run" --data "$B/fashion" >"$d/cpu.txt" 2>&1; then
  echo "not ok $name: the CPU run failed: $(tail -n1 "$d/cpu.txt")"
else
  if ! "$d/gpu/train" --seed 11 --max-steps 7 --out "$d/gpu/run" --data "$B/fashion" >"$d/gpu/out.txt" 2>&1; then
    echo "not ok $name: the GPU run failed: $(tail -n1 "$d/gpu/out.txt")"
  else
    v=$(python3 "$B/bin/compare_runs.py" same "$d/gpu/run/$csv" "$d/cpu/run/$csv" 1e-3)
    w=$(python3 "$B/bin/compare_runs.py" readbacks "$d/gpu/run/$csv" "$d/gpu/out.txt")
    if [ "${v%% *}" = ok ] && [ "${w%% *}" = ok ]; then echo "ok $name ($v; $w)"; else echo "not ok $name: $v; $w"; fi
  fi
fi

# tiny_gpt: fused flash attention and (--gemm-attention) GEMMs against the same CPU run,
# --cuda-graph, and sampling on the GPU from the CPU program's checkpoint
STEPS[tiny_gpt_gemm_attention]=3
for p in "${GPT_PRECS[@]}"; do
  k="tiny_gpt_$p"
  compare "gpu_vs_cpu_$k" "$k" "$p"
  graph "gpu_cuda_graph_$k" "$k"
  compare "gpu_vs_cpu_tiny_gpt_gemm_attention_$p" "tiny_gpt_gemm_attention_$p" "$p" "$k"
  name="gpu_sample_tiny_gpt_$p" c="$B/$k"
  want $name || continue
  if ! why=$(built "$k"); then echo "not ok $name: $why"; continue; fi
  # a checkpoint that writes more than one letter: the 32-true CPU program's 100 steps;
  # from it the CPU program's tokens at this precision, then the GPU program's
  ck="$B/tiny_gpt_32-true/cpu/sample_run/last.safetensors"
  [ -f "$ck" ] || cpu_env "$B/tiny_gpt_32-true/cpu/train" --max-steps 100 --epochs 1000 --seed 11 --quiet $(data_flag tiny_gpt) \
    --out "$B/tiny_gpt_32-true/cpu/sample_run" >"$c/cpu_sample_run.txt" 2>&1
  S=(--resume "$ck" --prompt "In the beginning" --sample $SAMPLE_N)
  cpu_env "$c/cpu/train" "${S[@]}" --temperature 0 >"$c/cpu_greedy.txt" 2>"$c/cpu_greedy.err"
  cpu_env "$c/cpu/train" "${S[@]}" --seed 7 >"$c/cpu_s1.txt" 2>/dev/null
  "$c/gpu/train" "${S[@]}" --temperature 0 >"$c/gpu_greedy.txt" 2>"$c/gpu_greedy.err"
  "$c/gpu/train" "${S[@]}" --temperature 0 --no-kv-cache >"$c/gpu_nocache.txt" 2>"$c/gpu_nocache.err"
  "$c/gpu/train" "${S[@]}" --seed 7 >"$c/gpu_s1.txt" 2>/dev/null
  "$c/gpu/train" "${S[@]}" --seed 7 >"$c/gpu_s2.txt" 2>/dev/null
  speed=$(sed -n 's/^sampled .*(\([0-9.]* tokens\/s\), .*/\1/p' "$c/gpu_greedy.err")
  # tokens equal after the 16-byte prompt (greedy; seed 7's sampled ones, reported only)
  lead() { python3 -c 'import sys; a, b = (open(f, "rb").read() for f in sys.argv[1:3]); n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(max(0, min(n - 16, int(sys.argv[3]))))' "$1" "$2" $SAMPLE_N 2>/dev/null || echo 0; }
  lead=$(lead "$c/gpu_greedy.txt" "$c/cpu_greedy.txt") seeded=$(lead "$c/gpu_s1.txt" "$c/cpu_s1.txt")
  want=$SAMPLE_N; [ "$p" = 32-true ] || want=16
  if [ -s "$c/gpu_greedy.txt" ] && cmp -s "$c/gpu_greedy.txt" "$c/gpu_nocache.txt" && [ -s "$c/gpu_s1.txt" ] &&
     cmp -s "$c/gpu_s1.txt" "$c/gpu_s2.txt" && [ "$lead" -ge "$want" ]; then
    echo "ok $name ($lead of $SAMPLE_N greedy tokens the CPU program's, $seeded sampled with seed 7; ${speed:-?} with the cache, $(sed -n 's/^sampled .*(\([0-9.]* tokens\/s\), .*/\1/p' "$c/gpu_nocache.err") without)"
  else
    echo "not ok $name: $lead of $SAMPLE_N greedy tokens the CPU program's (want $want); cached = uncached: $(cmp -s "$c/gpu_greedy.txt" "$c/gpu_nocache.txt" && echo yes || echo no); seed 7 twice the same: $(cmp -s "$c/gpu_s1.txt" "$c/gpu_s2.txt" && echo yes || echo no); $(tail -1 "$c/gpu_greedy.err")"
  fi
done
