#!/usr/bin/env bash
# The rest of the op table on the CUDA backend, run: each spec of tests/cuda_specs is
# built for CUDA, run under the CUDA emulator (tests/cuda_emu: kernels host-compiled,
# cuBLASLt and its strided batches emulated) and as the CPU program, the same steps
# from the same seed, and the checkpoints (parameters and optimizer state) compared
# with a bound per precision (GEMM summation order; the CUDA kernels' double block sums
# against the CPU's left-to-right ones; bf16/f16 storage).
#  - attention_ops (embedding, layer_norm, slice, transpose/permute, sum/mean, matmul
#    with dense/shared/broadcast operands, attention, softmax/log_softmax, cross entropy
#    over a transposed output) at 32-true, bf16-mixed and bf16-true (measured 5.3e-5,
#    in the embedding's momentum);
#  - flash_attention (the fused attention kernels at their tiles' edges: cross attention,
#    13 queries and 37 keys, head dims 40 and 72, causal and not) at 32-true and
#    bf16-mixed, its GEMM path (--gemm-attention) at 32-true, and the fused kernels against
#    the GEMM path (both emulated, 32-true);
#  - conv_losses (grouped and depthwise conv, dilated max pooling, avg pooling with
#    ceil_mode and count_include_pad = false, soft cross entropy) at 32-true,
#    bf16-mixed and 16-true (measured 1.2e-8), and with its loss swapped for bce_with_logits (16-mixed), mse (sum) and
#    l1 (none, reduced by mean()), and by one of abs, amax over a dim and max over all
#    (the ops train.log's metrics use, here with their gradients);
#  - issue 18's ops: seq_ops (Conv1d, RMSNorm, adaptive pooling 1d/2d, maximum/minimum/pow,
#    Dropout2d, randn_like, nll_loss) at 32-true and bf16-mixed; tests/ops/convt.lua
#    (ConvTranspose2d/1d: stride, padding, output_padding, groups, dilation) at 32-true;
#    expand.lua (expand/tile, randn/rand_like: the CPU's Philox draws) at
#    32-true; compare.lua (argmax, comparisons, broadcast, tensor constants) at 32-true;
#    where.lua (where/masked_fill, broadcast, -inf) at bf16-true; act.lua (the element-wise
#    functions) at bf16-mixed; attn_mask.lua (float key_padding_mask, batches of masks) at
#    32-true; reduce.lua (max over a dim, var/std, cosine_similarity, maximum/minimum/pow,
#    smooth_l1/huber with a target that needs a gradient) and image.lua (GroupNorm,
#    InstanceNorm2d, adaptive pooling, Upsample nearest/bilinear, kl_div) at 32-true
#    (measured: at most 3.0e-8 at 32-true, 1.2e-4 for where at bf16-true);
#  - freeze.lua (train.freeze: a frozen conv, BatchNorm, LayerNorm weight and bias under
#    AdamW's decay and a parameter group) at 32-true (measured 8.2e-8) and bf16-mixed
#    (the compute copy of frozen weights stays the uploaded one); plateau.lua
#    (ReduceLROnPlateau: its lr halved after each of 3 validations) at 32-true
#    (measured 1.2e-7); a spec's own training_step: gan_step.lua (two Adams over G and D,
#    D stepped twice a step, detach, no_grad, randn, BatchNorm run several times a step)
#    and vae_step.lua (SGD with momentum and decay, a method, randn_like) at 32-true
#    (measured 1.1e-7 and 1.2e-7); gan_step at 16-mixed (Fabric's one GradScaler: each
#    optimizer's gradients unscaled, D's second update of a step taking the constants of
#    the count its first left; measured 2.7e-4, in D's last bias's exp_avg, relative 3.6e-2
#    of a sum that cancels; a consts_pick that always took the first count: 2.8e-2), and
#    gan_step_skips (D's loss times 20, G's BatchNorm frozen) at 16-mixed: 4 of 9 updates
#    skipped, the same loss scale and skips as the CPU's (checked), measured 2.0e-3 in
#    D's exp_avg, which is 20 times larger (backwards not scaled: no skip, refused by the
#    check); vae_step at bf16-mixed (measured 5.9e-4) and bf16-true (9.8e-4: one bf16 ulp
#    of the momentum buffer); freeze, plateau, gan_step and gan_step_skips (the skips
#    and the constants' choice on the device, replayed) again with --cuda-graph, bit for
#    bit the plain runs;
#  - tensors whose batch dimension is not first: batch_inside.lua ((T, B, H) after a
#    transpose: slice and cat along T, broadcasts through B, reductions before and after
#    it, softmax over T, Linear, matmul with B as a matrix dim, where, permute) at 32-true
#    (measured 7.5e-9);
#  - class weights (class_weight.lua: cross_entropy with index targets, label smoothing
#    and ignore_index, over (N, C, S), with probability targets; nll_loss; each reduction)
#    at 32-true (measured 1.5e-8) and bf16-mixed (identical files).
# SKIPs without the CUDA toolkit (the emulator compiles kernels with NVRTC) or numpy.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
PY=/usr/bin/python3
# NAME SPEC PRECISION STEPS BOUND (largest absolute difference against the CPU program)
# [LOOM FLAGS, comma-separated]
CASES=("attention_ops tests/cuda_specs/attention_ops.lua 32-true 3 1e-5"
       "attention_ops tests/cuda_specs/attention_ops.lua bf16-mixed 3 1e-3"
       "attention_ops tests/cuda_specs/attention_ops.lua bf16-true 3 1e-3"
       "flash_attention tests/cuda_specs/flash_attention.lua 32-true 3 1e-6"
       "flash_attention tests/cuda_specs/flash_attention.lua bf16-mixed 3 1e-3"
       "flash_attention_gemm tests/cuda_specs/flash_attention.lua 32-true 3 1e-6 --gemm-attention"
       "conv_losses tests/cuda_specs/conv_losses.lua 32-true 3 1e-5"
       "conv_losses tests/cuda_specs/conv_losses.lua bf16-mixed 3 1e-3"
       "conv_losses tests/cuda_specs/conv_losses.lua 16-true 3 1e-3"
       "conv_bce_logits @variants/conv_bce_logits.lua 16-mixed 3 1e-3"
       "conv_mse_sum @variants/conv_mse_sum.lua 32-true 3 1e-5"
       "conv_l1_none_mean @variants/conv_l1_none_mean.lua 32-true 3 1e-5"
       "conv_abs_amax @variants/conv_abs_amax.lua 32-true 3 1e-5"
       "seq_ops tests/cuda_specs/seq_ops.lua 32-true 3 1e-5"
       "seq_ops tests/cuda_specs/seq_ops.lua bf16-mixed 3 1e-3"
       "convt tests/ops/convt.lua 32-true 3 1e-5"
       "expand tests/ops/expand.lua 32-true 3 1e-5"
       "compare tests/ops/compare.lua 32-true 3 1e-5"
       "where tests/ops/where.lua bf16-true 3 1e-3"
       "act tests/ops/act.lua bf16-mixed 3 1e-3"
       "attn_mask tests/ops/attn_mask.lua 32-true 3 1e-5"
       "reduce tests/ops/reduce.lua 32-true 3 1e-5"
       "image tests/ops/image.lua 32-true 3 1e-5"
       "freeze tests/cuda_specs/freeze.lua 32-true 3 1e-5"
       "freeze tests/cuda_specs/freeze.lua bf16-mixed 3 1e-3"
       "plateau tests/cuda_specs/plateau.lua 32-true 8 1e-5"
       "gan_step tests/cuda_specs/gan_step.lua 32-true 3 1e-5"
       "vae_step tests/cuda_specs/vae_step.lua 32-true 3 1e-5"
       "gan_step tests/cuda_specs/gan_step.lua 16-mixed 3 1e-3"
       "gan_step_skips @variants/gan_step_skips.lua 16-mixed 3 2e-2"
       "vae_step tests/cuda_specs/vae_step.lua bf16-mixed 3 2e-3"
       "vae_step tests/cuda_specs/vae_step.lua bf16-true 3 2e-3"
       "batch_inside tests/ops/batch_inside.lua 32-true 3 1e-5"
       "class_weight tests/ops/class_weight.lua 32-true 3 1e-5"
       "class_weight tests/ops/class_weight.lua bf16-mixed 3 1e-3")
# --cuda-graph: these cases' programs again with the step captured and replayed, against
# their plain runs bit for bit (NAME PRECISION STEPS)
GRAPH_CASES=("freeze 32-true 3" "plateau 32-true 8" "gan_step 32-true 3" "gan_step_skips 16-mixed 3")
echo "1..$((${#CASES[@]} + ${#GRAPH_CASES[@]} + 1))"   # ops_emu_matches_cpu_NAME_PREC, ops_emu_graph_NAME_PREC, ops_emu_flash_matches_gemm
if [ ! -x "$CUDA/bin/nvcc" ] || ! "$PY" -c "import numpy" 2>/dev/null; then
  for c in "${CASES[@]}"; do set -- $c; echo "ok ops_emu_matches_cpu_$1_$3 # SKIP no CUDA toolkit or no numpy"; done
  for c in "${GRAPH_CASES[@]}"; do set -- $c; echo "ok ops_emu_graph_$1_$2 # SKIP no CUDA toolkit or no numpy"; done
  echo "ok ops_emu_flash_matches_gemm # SKIP no CUDA toolkit or no numpy"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# objects of the runtime and of kernels other programs have (tests/cuda_emu/build.sh)
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
mkdir -p "$tmp/variants"
loss_variant() {   # NAME LOSS-EXPRESSION: conv_losses with another loss
  sed "s/return cross_entropy(m(b), b.target, { label_smoothing = 0.1 })/return $2/" tests/cuda_specs/conv_losses.lua >"$tmp/variants/$1.lua"
}
loss_variant conv_bce_logits "bce_with_logits(m(b), b.target)"
loss_variant conv_mse_sum 'mse(m(b), b.target, { reduction = "sum" })'
loss_variant conv_l1_none_mean 'mean(l1(m(b), b.target, { reduction = "none" }))'
loss_variant conv_abs_amax '(function(y) return mean(abs(y - b.target)) + mean(amax(y, 1)) + 0.1 * max(abs(y)) end)(m(b))'
# gan_step with D's loss times 20 (under 16-mixed its first steps overflow and are skipped)
# and G's BatchNorm frozen
sed -e 's/fabric.backward(bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros))/fabric.backward((bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)) * 20)/' \
    -e 's/^  max_steps = 20,/  freeze = { "^G%.1%." }, max_steps = 20,/' tests/cuda_specs/gan_step.lua >"$tmp/variants/gan_step_skips.lua"
for c in "${CASES[@]}"; do
  set -- $c
  name=$1 spec=${2/#@/$tmp/} prec=$3 steps=$4 bound=$5 flags=${6:-}
  d="$tmp/${name}_$prec"
  mkdir -p "$d"
  if ! "$LOOM" build "$spec" --accelerator=cuda --precision="$prec" ${flags//,/ } --no-compile -o "$d/cuda" >"$d/cuda.log" 2>&1 ||
     ! tests/cuda_emu/build.sh "$d/cuda" >>"$d/cuda.log" 2>&1 ||
     ! "$d/cuda/emu/run" --max-steps "$steps" --seed 11 --out "$d/run_cuda" >>"$d/cuda.log" 2>&1; then
    echo "not ok ops_emu_matches_cpu_${name}_$prec: emulated CUDA program: $(tail -n 1 "$d/cuda.log")"; continue
  fi
  if ! "$LOOM" build "$spec" --accelerator=cpu --precision="$prec" -o "$d/cpu" >"$d/cpu.log" 2>&1 ||
     ! "$d/cpu/train" --max-steps "$steps" --seed 11 --out "$d/run_cpu" >>"$d/cpu.log" 2>&1; then
    echo "not ok ops_emu_matches_cpu_${name}_$prec: CPU program: $(tail -n 1 "$d/cpu.log")"; continue
  fi
  # 16-mixed: the same loss scale and skipped steps as the CPU program's (the skips
  # variant must skip some)
  sc_cuda=$(grep "^loss scale" "$d/cuda.log") sc_cpu=$(grep "^loss scale" "$d/cpu.log")
  if [ "$sc_cuda" != "$sc_cpu" ]; then
    echo "not ok ops_emu_matches_cpu_${name}_$prec: the GradScaler differs: '$sc_cuda' against the CPU's '$sc_cpu'"; continue
  elif [ "$name" = gan_step_skips ] && ! grep -q "; [1-9][0-9]* optimizer steps skipped" <<<"$sc_cuda"; then
    echo "not ok ops_emu_matches_cpu_${name}_$prec: no step was skipped ('$sc_cuda')"; continue
  fi
  if out=$("$PY" tests/fuse/compare_ckpt.py "$d/run_cuda/last.safetensors" "$d/run_cpu/last.safetensors" "$bound"); then
    echo "ok ops_emu_matches_cpu_${name}_$prec ($steps steps: $out; bound $bound${sc_cuda:+; $sc_cuda})"
  else
    echo "not ok ops_emu_matches_cpu_${name}_$prec: $out (bound $bound)"
  fi
done

for c in "${GRAPH_CASES[@]}"; do
  set -- $c
  d="$tmp/$1_$2"
  if ! "$d/cuda/emu/run" --max-steps "$3" --seed 11 --out "$d/run_graph" --cuda-graph >"$d/graph.log" 2>&1; then
    echo "not ok ops_emu_graph_$1_$2: $(tail -n 1 "$d/graph.log")"
  elif ! grep -q "graph launches" "$d/graph.log" || grep -q "^--cuda-graph: 0 graph launches" "$d/graph.log"; then
    echo "not ok ops_emu_graph_$1_$2: no graph was launched"
  elif cmp -s "$d/run_graph/last.safetensors" "$d/run_cuda/last.safetensors"; then
    echo "ok ops_emu_graph_$1_$2 ($3 steps, $(grep -o "[0-9]* graph launches" "$d/graph.log"): the plain run's checkpoint, bit for bit)"
  else
    echo "not ok ops_emu_graph_$1_$2: the checkpoint differs from the plain run's"
  fi
done

# the fused attention kernels against the GEMM path, both emulated (the same steps)
a="$tmp/flash_attention_32-true/run_cuda/last.safetensors" b="$tmp/flash_attention_gemm_32-true/run_cuda/last.safetensors"
if ! grep -q "flash_fwd_e40_v72_causal" "$tmp/flash_attention_32-true/cuda/model.cu" 2>/dev/null ||
   grep -q "flash_fwd" "$tmp/flash_attention_gemm_32-true/cuda/model.cu" 2>/dev/null; then
  echo "not ok ops_emu_flash_matches_gemm: the fused kernels are not where expected (the default build) or not only there"
elif out=$("$PY" tests/fuse/compare_ckpt.py "$a" "$b" 1e-6); then echo "ok ops_emu_flash_matches_gemm (3 steps: $out; bound 1e-6)"
else echo "not ok ops_emu_flash_matches_gemm: $out (bound 1e-6)"; fi
