#!/usr/bin/env bash
# The CUDA backend, without a GPU (what can be proven on a machine with the toolkit only):
#  - fashion_mlp, fashion_cnn, paw at 32-true, bf16-mixed and 16-mixed: the generated
#    program (model.cu, loom_cuda.cu with nvcc -Werror all-warnings, -Wall -Wextra -Werror
#    for the host compiler, for sm_80 and sm_90; train.c and the runtime with cc -Werror)
#    compiles and links against cudart, cuBLASLt (NVRTC and the driver are dlopen'ed);
#  - every NVRTC kernel of it compiles through the runtime's path (runtime/nvrtc_cache)
#    to a cubin for sm_80 and for sm_90, and ptxas -v on its PTX reports no spills (once
#    per distinct PTX text and architecture);
#  - SGD, gradient clipping (norm 2 and inf, value) and Dropout: three fashion_mlp variants
#    built and their kernels checked the same way;
#  - the rest of the op table (tests/cuda_specs: attention_ops — embedding, layer_norm,
#    slice, transpose/permute, sum/mean, matmul with dense/shared/broadcast operands,
#    attention (fused), softmax/log_softmax; conv_losses — grouped conv, dilated max pooling,
#    avg pooling, soft cross entropy, and its loss swapped for bce_with_logits, mse, l1):
#    built at 32-true and bf16-mixed (the loss variants at one precision each) and their
#    kernels checked the same way;
#  - issue 18's ops (tests/cuda_specs/seq_ops.lua and tests/ops' convt, compare (with
#    where), expand, act, image, reduce, class_weight; conv_losses with
#    smooth_l1/huber/kl_div) at one precision each, their kernels checked the same way;
#  - attention's fused kernels (tests/cuda_specs/flash_attention.lua: head dims 40/72,
#    and 128 at bf16-mixed) and, past 128, the GEMM path's;
#  - tests/cuda_specs/gan_step.lua's training_step at 16-mixed (the GradScaler per optimizer
#    step, consts_pick);
#  - tiny_gpt at 32-true and bf16-mixed (AdamW's parameter groups: decay_min_ndim), and
#    bench/specs/gpt2_124m.lua (GPT-2 small's shape) at bf16-mixed;
#  - the fuse pass (gen/fuse.lua): tests/fuse/chains.lua (every elementwise op in one
#    chain, a value with two readers, a broadcast operand) at each precision, the groups
#    formed for the three specs and the chains spec (fuse_plan.tsv), --no-fuse, and the
#    report's Fused kernels section;
#  - --cuda-graph is compiled into the programs (it runs on a GPU: tests/gpu/run.sh);
#  - the kernel cache: a second --jit-check reads every kernel from the cache;
#  - accelerator = "auto" with no device: the CUDA program says so in one line and the
#    CPU build trains; accelerator = "cuda" with no device: exit 1 and one clear line.
# Everything SKIPs where /usr/local/cuda (or $CUDA_HOME) has no nvcc.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
SPECS=(fashion_mlp fashion_cnn paw)
PRECS=(32-true bf16-mixed 16-mixed)
# The builds checked (check below): NAME|SPEC|PRECISION|KERNELS it must have; a spec
# "@variants/X.lua" is made below from fashion_mlp or conv_losses.  Each gives two results,
# cuda_build_NAME_PREC and cuda_kernels_NAME_PREC.
CHECKS=()
for s in "${SPECS[@]}"; do for p in "${PRECS[@]}"; do CHECKS+=("$s|specs/$s.lua|$p|"); done; done
CHECKS+=(
  # the paths the three specs do not take: SGD (momentum, dampening, weight decay / nesterov,
  # maximize), clipping by norm (2 and inf) and by value, Dropout (in training and p = 0)
  "mlp_sgd_clipnorm|@variants/mlp_sgd_clipnorm.lua|bf16-mixed|sgd_copy_b clip_norm_part clip_norm_coef clip_norm_scale"
  "mlp_sgd_clipval|@variants/mlp_sgd_clipval.lua|16-mixed|sgd_copy_h clip_value loss_seed_ff unscale scaler_update"
  "mlp_adamw_clipinf|@variants/mlp_adamw_clipinf.lua|32-true|adam clip_norm_part dropout_ dropout_grad_"
  # 16-bit state (bf16-true, 16-true): parameters, gradients and BatchNorm's running
  # statistics in 16 bits on the device, the optimizer and the clip widening and rounding them
  "fashion_cnn|specs/fashion_cnn.lua|bf16-true|adam batch_norm_train_w_b_ batch_norm_eval_w_b_"
  "fashion_cnn|specs/fashion_cnn.lua|16-true|adam batch_norm_train_w_b_"
  "mlp_sgd_clipnorm|@variants/mlp_sgd_clipnorm.lua|16-true|sgd clip_norm_part clip_norm_coef clip_norm_scale"
  # the fuse pass (gen/fuse.lua): a chain of every elementwise op, fused and not
  "fuse_chains|tests/fuse/chains.lua|32-true|tanh_muls_rsub_silu_add_gelu_dropout_divs_ tanh_muls_rsub_silu_add_gelu_dropout_divs_grad_ mul_grad2_bcast_"
  "fuse_chains|tests/fuse/chains.lua|bf16-mixed|tanh_muls_rsub_silu_add_gelu_dropout_divs_"
  "fuse_chains|tests/fuse/chains.lua|16-mixed|"
  "fuse_gelu_epilogue|tests/fuse/gelu_epilogue.lua|bf16-mixed|"
  "fuse_conv_tail|tests/fuse/conv_tail.lua|32-true|conv_out_bias_tail_ batch_norm_train_w_b_tail_"
  # the rest of the op table: each spec at 32-true (with the kernels it must have) and
  # bf16-mixed; conv_losses' loss swapped for each of the other losses and reductions
  "attention_ops|tests/cuda_specs/attention_ops.lua|32-true|embedding_ff_ff embedding_grad_ff_ff layer_norm_w_b_ff_ff_ff_ff layer_norm_ff_ff layer_norm_grad_wb_part_ff_ff slice_grad_ff_ff permute_ff_ff permute_grad_ff_ff reduce_rows_ff_ff expand_rows_ff_ff matmul_expand_ff_ff matmul_reduce_ff_ff flash_fwd_e8_v8_causal_ flash_bwd_dq_e8_v8_causal_ flash_bwd_dkv_e8_v8_causal_ softmax_grad_ff_ff_ff log_softmax_ff_ff log_softmax_grad_ff_ff_ff"
  "attention_ops|tests/cuda_specs/attention_ops.lua|bf16-mixed|"
  "conv_losses|tests/cuda_specs/conv_losses.lua|32-true|avg_pool2d_ff_ff avg_pool2d_grad_ff_ff max_pool2d_grad_ff_ff cross_entropy_soft_ff_ff_ff cross_entropy_soft_grad_ff_ff_ff"
  "conv_losses|tests/cuda_specs/conv_losses.lua|bf16-mixed|"
  "conv_bce_logits|@variants/conv_bce_logits.lua|16-mixed|"
  "conv_mse_sum|@variants/conv_mse_sum.lua|32-true|mse_ff_ff_ff mse_grad_ff_ff_ff_ff"
  "conv_l1_none_mean|@variants/conv_l1_none_mean.lua|bf16-mixed|"
  # issue 18's ops (tests/suite_ops_emu.sh runs them against the CPU program): Conv1d,
  # RMSNorm, adaptive pooling, Dropout2d, randn_like, nll_loss; ConvTranspose2d/1d; argmax,
  # comparisons, constants and where; expand/tile and the draws; the element-wise
  # functions; smooth_l1, huber and kl_div (its target's gradient); GroupNorm, Upsample;
  # max over a dim, var/std, cosine_similarity
  "seq_ops|tests/cuda_specs/seq_ops.lua|32-true|rms_norm_w_ff_ff_ff rms_norm_grad_w_part_ adaptive_avg_pool_ff_ff adaptive_avg_pool_grad_ff_ff randn_ nll_loss_ff_ff nll_loss_grad_ff_ff"
  "convt|tests/ops/convt.lua|16-mixed|col2im_store_bias_ conv_out_acc_"
  "compare|tests/ops/compare.lua|32-true|argmax_ff_ll compare_eq_ll_ff_ll where_cab_ll_ff_ff_ff where_grad_b_cab_ll_ff_ff"
  "expand|tests/ops/expand.lua|32-true|tile_ff_ff tile_grad_ff_ff rand_ff"
  "act|tests/ops/act.lua|bf16-mixed|"
  "conv_smooth_kl|@variants/conv_smooth_kl.lua|32-true|smooth_l1_ff_ff_ff huber_grad_ff_ff_ff_ff kl_div_dt_ff_ff_ff_ff kl_div_none_ff_ff_ff"
  "image|tests/ops/image.lua|bf16-mixed|group_norm_w_b_ group_norm_grad_wb_dw_db_ upsample_ upsample_grad_"
  "reduce|tests/ops/reduce.lua|32-true|max_dim_ff_ff max_dim_grad_ff_ff var_ff_ff std_grad_ff_ff_ff_ff cosine_similarity_grad_a_"
  # class weights: cross_entropy (index and probability targets) and nll_loss
  "class_weight|tests/ops/class_weight.lua|bf16-mixed|cross_entropy_w_ cross_entropy_grad_w_ cross_entropy_soft_w_ cross_entropy_soft_grad_w_ nll_loss_w_ nll_loss_grad_w_"
  # attention's fused (flash) kernels at their tiles' edges, at the largest head dim they
  # take (128), and past it (144: the GEMM path's softmax kernels)
  "flash_attention|tests/cuda_specs/flash_attention.lua|32-true|flash_fwd_e40_v72_ff flash_fwd_e40_v72_causal_ff flash_bwd_dq_e40_v72_ff flash_bwd_dkv_e40_v72_causal_ff"
  "flash_attention_128|@variants/flash_attention_128.lua|bf16-mixed|flash_fwd_e128_v128_bb flash_bwd_dq_e128_v128_causal_bb flash_bwd_dkv_e128_v128_bb"
  "flash_attention_144|@variants/flash_attention_144.lua|32-true|attention_softmax attention_softmax_grad"
  # tiny_gpt: AdamW's two parameter groups (decay_min_ndim) in one update kernel
  "tiny_gpt|specs/tiny_gpt.lua|32-true|adam_groups2"
  "tiny_gpt|specs/tiny_gpt.lua|bf16-mixed|adam_groups2_copy_b"
  # a training_step under 16-mixed: its optimizers' updates through the one GradScaler, a
  # later step call's constants chosen on the device (tests/suite_ops_emu.sh runs it)
  "gan_step|tests/cuda_specs/gan_step.lua|16-mixed|consts_pick unscale scaler_update adam_groups1_skips_copy_h_d"
  # GPT-2 small's shape (bench/gpu_gpt2.sh times it on a GPU): generated and compiled only
  "gpt2_124m|bench/specs/gpt2_124m.lua|bf16-mixed|flash_fwd_e64_v64_causal_bb flash_bwd_dkv_e64_v64_causal_bb adam_groups2_copy_b"
)
# the other tests, each one result, in the order they run
TESTS=(cuda_state16 cuda_fuse_groups cuda_fuse_stored_when_read_elsewhere cuda_no_fuse cuda_fuse_report
  cuda_batched_gemms cuda_graph_option cuda_compute_copy cuda_tf32_opt_in cuda_tf32_cpu_note cuda_devices_ddp
  cuda_precision_refused cuda_report_states_conv_choice cuda_bench_gpu_conv_builds cuda_kernel_cache
  cuda_auto_falls_back_to_cpu cuda_without_device_exits)
echo "1..$((2 * ${#CHECKS[@]} + ${#TESTS[@]}))"
if [ ! -x "$CUDA/bin/nvcc" ]; then
  for c in "${CHECKS[@]}"; do
    IFS='|' read -r s _ p _ <<<"$c"
    echo "ok cuda_build_${s}_$p # SKIP no CUDA toolkit ($CUDA/bin/nvcc)"
    echo "ok cuda_kernels_${s}_$p # SKIP no CUDA toolkit"
  done
  for t in "${TESTS[@]}"; do echo "ok $t # SKIP no CUDA toolkit"; done
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the run's kernel cache (tests/run_all.sh: the emulated programs compile the same kernels)
export LOOM_KERNEL_CACHE=${LOOM_KERNEL_CACHE:-$tmp/kernel_cache}
has_gpu_dev=0
if [ -e /dev/nvidiactl ] || ls /dev/nvidia0 >/dev/null 2>&1; then has_gpu_dev=1; fi

# the variants of CHECKS: fashion_mlp with other optimizers, clipping and Dropout;
# conv_losses with other losses
mkdir -p "$tmp/variants"
variant() {   # NAME DROPOUT OPTIMIZER CLIP
  sed -e "s/Linear(784, 256), ReLU(),/Linear(784, 256), ReLU(), $2/" \
      -e "s/optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },/optimizer = $3, clip = $4,/" specs/fashion_mlp.lua >"$tmp/variants/$1.lua"
}
variant mlp_sgd_clipnorm "Dropout(0.2), Linear(256, 256), Dropout(0.0)," \
  "SGD { lr = 0.05, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3 }" "{ max_norm = 1.0 }"
variant mlp_sgd_clipval "Dropout(0.5)," "SGD { lr = 0.01, momentum = 0.9, nesterov = true, maximize = true }" "{ clip_val = 0.01 }"
variant mlp_adamw_clipinf "Dropout(0.3)," "AdamW { lr = 1e-3 }" "{ max_norm = 0.5, norm_type = math.huge }"
loss_variant() {   # NAME LOSS-EXPRESSION
  sed "s/return cross_entropy(m(b), b.target, { label_smoothing = 0.1 })/return $2/" tests/cuda_specs/conv_losses.lua >"$tmp/variants/$1.lua"
}
fa_variant() {   # NAME E EV: flash_attention with other head dims
  sed "s/local L, S, C, H, E, EV = 13, 37, 24, 2, 40, 72/local L, S, C, H, E, EV = 13, 37, 24, 2, $2, $3/" tests/cuda_specs/flash_attention.lua >"$tmp/variants/$1.lua"
}
fa_variant flash_attention_128 128 128
fa_variant flash_attention_144 144 72
loss_variant conv_bce_logits "bce_with_logits(m(b), b.target)"
loss_variant conv_mse_sum 'mse(m(b), b.target, { reduction = "sum" })'
loss_variant conv_smooth_kl '(function(y) return smooth_l1(y, b.target, { beta = 0.5 }) + 0.01 * huber(y, b.target, { delta = 0.3, reduction = "sum" }) + kl_div(log_softmax(y, 1), softmax(y * 0.5, 1), { reduction = "batchmean" }) + mean(kl_div(log_softmax(y, 1), log_softmax(b.target, 1), { reduction = "none", log_target = true })) end)(m(b))'
loss_variant conv_l1_none_mean 'mean(l1(m(b), b.target, { reduction = "none" }))'

# "sm_XX SHA1" of each PTX text ptxas -v has passed: the same kernel recurs in many
# programs (the kernel cache's hits), and the same text gives the same report
declare -A PTXAS_PASSED=()
# check NAME SPEC_FILE PRECISION: build for cuda, then every NVRTC kernel for sm_80/sm_90
check() {
    local s=$1 spec=$2 p=$3
    d="$tmp/${s}_$p"
    # --devices=1: paw asks for 2 (ddp ranks); these are the one-GPU programs
    if ! "$LOOM" build "$spec" --accelerator=cuda --precision="$p" --devices=1 -o "$d" >"$d.log" 2>&1; then
      echo "not ok cuda_build_${s}_$p: $(grep -m1 -E 'error|FAILED' "$d.log" || tail -1 "$d.log")"
      echo "not ok cuda_kernels_${s}_$p: the program did not build"
      return
    fi
    grep -q -- "-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90" "$d/build.ninja" &&
      grep -q -- "-Werror all-warnings" "$d/build.ninja" &&
      echo "ok cuda_build_${s}_$p" || echo "not ok cuda_build_${s}_$p: build.ninja lacks sm_80/sm_90 or -Werror"
    why=""
    total=0
    for a in 80 90; do
      if ! out=$("$d/train" --jit-check "sm_$a" "$d/ptx$a" 2>&1); then why="jit-check sm_$a: $(echo "$out" | tail -1)"; break; fi
      n=$(ls "$d/ptx$a"/*.ptx 2>/dev/null | wc -l)
      [ "$n" -gt 0 ] || { why="no PTX for sm_$a"; break; }
      for f in "$d/ptx$a"/*.ptx; do
        key="sm_$a $(sha1sum <"$f" | cut -c1-40)"
        [ -z "${PTXAS_PASSED[$key]:-}" ] || continue
        info=$("$CUDA/bin/ptxas" -v -arch="sm_$a" -o /dev/null "$f" 2>&1) || { why="ptxas sm_$a $(basename "$f"): $(echo "$info" | tail -1)"; break 2; }
        spill=$(echo "$info" | grep -o "[0-9]* bytes spill stores, [0-9]* bytes spill loads" | grep -v "^0 bytes spill stores, 0 bytes spill loads" | head -1)
        [ -z "$spill" ] || { why="$(basename "$f" .ptx) spills on sm_$a: $spill"; break 2; }
        PTXAS_PASSED[$key]=1
      done
      total=$n
    done
    for k in ${4:-}; do ls "$d/ptx80/$k"*.ptx >/dev/null 2>&1 || why="${why:-no kernel $k}"; done
    if [ -z "$why" ]; then echo "ok cuda_kernels_${s}_$p ($total NVRTC kernels, cubin + PTX for sm_80 and sm_90, no spills)"
    else echo "not ok cuda_kernels_${s}_$p: $why"; fi
}
for c in "${CHECKS[@]}"; do
  IFS='|' read -r s spec p kernels <<<"$c"
  check "$s" "${spec/#@/$tmp/}" "$p" "$kernels"
done

why=""
d="$tmp/fashion_cnn_bf16-true"
grep -q "^typedef uint16_t state_t;" "$d/model.h" && grep -q "^typedef uint16_t opt_t;" "$d/model.h" || why="bf16-true: state_t/opt_t are not 16-bit "
grep -q "^#define COMPUTE_COPY 0" "$d/model.h" || why="${why}bf16-true has a compute copy (its parameters are the GEMMs' operands) "
# the kernels' types are in the prelude each includes (model.cu holds it once)
grep -q '^#include "loom_prelude.h"$' "$d"/kernels/adam.cu && ! grep -q "^typedef .* state_t;" "$d"/kernels/adam.cu &&
  grep -q "^typedef so_u16 state_t;" "$d"/kernels/loom_prelude.h && grep -q "^#define state_narrow(x) so_narrow_bf16(x)" "$d"/kernels/loom_prelude.h &&
  grep -q "p\[i\] = state_narrow(pi);" "$d"/kernels/adam.cu || why="${why}bf16-true: adam does not round the parameter to bf16 "
[ "$(grep -c '"#define LOOM_SCALAR_OPS_H' "$d/model.cu")" = 1 ] || why="${why}bf16-true: model.cu does not hold the prelude once "
d="$tmp/fashion_cnn_16-true"
grep -q "^typedef uint16_t state_t;" "$d/model.h" && grep -q "^typedef float opt_t;" "$d/model.h" || why="${why}16-true: the optimizer state is not float "
"$LOOM" explain specs/fashion_cnn.lua --accelerator=cuda --precision=16-true -o "$tmp/explain16" >/dev/null 2>&1 &&
  grep -q "| parameters (float16) |" "$tmp/explain16/REPORT.md" && grep -q "optimizer state (2 per parameter, float32)" "$tmp/explain16/REPORT.md" ||
  why="${why}16-true: REPORT.md's device memory table "
if [ -z "$why" ]; then echo "ok cuda_state16 (bf16-true: 16-bit parameters and moments, no compute copy; 16-true: float moments)"; else echo "not ok cuda_state16: $why"; fi

# the fuse pass (gen/fuse.lua): the groups formed (fuse_plan.tsv: group ID KIND OPS AT BYTES; tensor ID tN OP stored|register WHY)
groups() { grep "^group" "$1/fuse_plan.tsv" | cut -f3,4 | tr '\t' ' ' | tr '\n' ';'; }
tensors() { grep "^tensor" "$1/fuse_plan.tsv" | cut -f4,5 | tr '\t' ' ' | tr '\n' ';'; }
why=""
for p in "${PRECS[@]}"; do
  g=$(groups "$tmp/fashion_cnn_$p")
  [ "$g" = "tail batch_norm+relu;tail batch_norm+relu;epilogue linear+relu;" ] || why="${why}fashion_cnn $p: $g "
  t=$(tensors "$tmp/fashion_cnn_$p")
  [ "$t" = "batch_norm register;relu stored;batch_norm register;relu stored;linear register;relu stored;" ] || why="${why}fashion_cnn $p: $t "
  g=$(groups "$tmp/fashion_mlp_$p")
  [ "$g" = "epilogue linear+relu;epilogue linear+relu;" ] || why="${why}fashion_mlp $p: $g "
  g=$(groups "$tmp/paw_$p")   # BN → conv → pool, BN1d → linear → sigmoid: nothing elementwise to fuse
  [ -z "$g" ] || why="${why}paw $p: $g "
done
grep -q "lc_gemm_epilogue(.*LC_EPI_RELU" "$tmp/fashion_mlp_32-true/model.cu" || why="${why}fashion_mlp: no ReLU epilogue "
grep -q "batch_norm_train_w_b_tail_" "$tmp/fashion_cnn_32-true/model.cu" || why="${why}fashion_cnn: BN's kernel has no tail "
if [ -z "$why" ]; then echo "ok cuda_fuse_groups (fashion_cnn: conv→BN→ReLU gives BN+ReLU in BN's kernel, linear+ReLU in cuBLASLt's epilogue; fashion_mlp: two epilogues; paw: none)"
else echo "not ok cuda_fuse_groups: $why"; fi

# stored when read elsewhere: silu's output is read by the chain and by Linear c, the
# chain's last value by Linear head, the rest only by the chain; the broadcast mul
# (its gradient a reduction) is not fused
why=""
for p in "${PRECS[@]}"; do
  d="$tmp/fuse_chains_$p"
  g=$(groups "$d")
  [ "$g" = "pointwise tanh+mul+sub+silu+add+gelu+dropout+div;pointwise add+sigmoid;" ] || why="${why}$p groups: $g "
  t=$(tensors "$d")
  want="tanh register;mul register;sub register;silu stored;add register;gelu register;dropout register;div stored;add register;sigmoid stored;"
  [ "$t" = "$want" ] || why="${why}$p tensors: $t "
  grep -q "silu	stored	read by linear outside the group" "$d/fuse_plan.tsv" || why="${why}$p: silu not stored for linear "
done
# conv → add → relu → dropout in the conv's output kernel: the conv's output stays stored
# (the tail's backward recomputes ReLU's output from it), the sum and ReLU's output do not
d="$tmp/fuse_conv_tail_32-true"
[ "$(groups "$d")" = "tail conv2d+add+relu+dropout;tail batch_norm+relu;epilogue linear+relu;" ] || why="${why}conv_tail groups: $(groups "$d") "
[ "$(tensors "$d")" = "conv2d stored;add register;relu register;dropout stored;batch_norm register;relu stored;linear register;relu stored;" ] ||
  why="${why}conv_tail tensors: $(tensors "$d") "
# linear + GELU (tanh) in the epilogue with the pre-activation through the aux output
# (GELU's backward reads it: stored); the exact GELU stays a kernel of its own
d="$tmp/fuse_gelu_epilogue_bf16-mixed"
[ "$(groups "$d")" = "epilogue linear+gelu;" ] || why="${why}gelu_epilogue groups: $(groups "$d") "
[ "$(tensors "$d")" = "linear stored;gelu stored;" ] || why="${why}gelu_epilogue tensors: $(tensors "$d") "
grep -q "LC_EPI_GELU_AUX" "$d/model.cu" || why="${why}gelu_epilogue: no GELU_AUX epilogue "
if [ -z "$why" ]; then echo "ok cuda_fuse_stored_when_read_elsewhere (tests/fuse/chains.lua at 32-true, bf16-mixed, 16-mixed; tests/fuse/conv_tail.lua; tests/fuse/gelu_epilogue.lua)"
else echo "not ok cuda_fuse_stored_when_read_elsewhere: $why"; fi

# --no-fuse: one kernel per op, no groups, no epilogue; explain --accelerator=cuda lists the groups
d="$tmp/nofuse"
if "$LOOM" build tests/fuse/chains.lua --no-fuse --no-compile -o "$d" >"$d.log" 2>&1 && "$LOOM" build specs/fashion_cnn.lua \
     --accelerator=cuda --no-fuse --no-compile -o "$d/cnn" >>"$d.log" 2>&1; then
  nf=$(ls "$d/kernels" | wc -l); f=$(ls "$tmp/fuse_chains_32-true/kernels" | wc -l)
  if [ -z "$(groups "$d")" ] && [ -z "$(groups "$d/cnn")" ] && ! grep -q lc_gemm_epilogue "$d/cnn/model.cu" && [ "$nf" -gt "$f" ]; then
    echo "ok cuda_no_fuse (chains: $nf kernels unfused, $f fused)"
  else echo "not ok cuda_no_fuse: groups or epilogue left ($nf vs $f kernels)"; fi
else echo "not ok cuda_no_fuse: $(tail -1 "$d.log")"; fi
d="$tmp/explain"
if "$LOOM" explain specs/fashion_cnn.lua --accelerator=cuda -o "$d" >"$d.log" 2>&1 && grep -q "^## Fused kernels (CUDA)" "$d/REPORT.md" &&
   grep -q "| 1 | batch_norm → relu | fashion_cnn.lua:5 | appended to batch_norm's kernel |" "$d/REPORT.md"; then
  echo "ok cuda_fuse_report ($(grep -m1 "groups of elementwise ops" "$d/REPORT.md" | cut -c1-90)...)"
else echo "not ok cuda_fuse_report: no Fused kernels section in $d/REPORT.md"; fi

# matmul's strided batches (attention_ops: 3), attention's GEMM path past head dim 128
# (flash_attention_144: 2 forward and 4 backward for each of its two attentions)
d="$tmp/attention_ops_32-true" d2="$tmp/flash_attention_144_32-true"
if [ -f "$d/model.cu" ] && [ "$(grep -c "lc_gemm_batched(" "$d/model.cu")" -ge 3 ] && [ "$(grep -c "lc_gemm_batched(" "$d2/model.cu")" -ge 12 ]; then
  echo "ok cuda_batched_gemms (matmul: $(grep -c "lc_gemm_batched(" "$d/model.cu"), attention past head dim 128: $(grep -c "lc_gemm_batched(" "$d2/model.cu") strided-batch cuBLASLt calls)"
else
  echo "not ok cuda_batched_gemms: attention_ops' or flash_attention_144's model.cu has too few lc_gemm_batched calls"
fi

# --cuda-graph (a GPU runs it: tests/gpu/run.sh): the flag is parsed, a step is captured
# once and replayed (no cudaGraphExecUpdate), the option is off unless asked for, and
# nothing the captured operations pass to a kernel changes between steps: the step,
# the learning rate and the optimizer's constants, the loss scale and the skip decision
# are read on the device (16-mixed SGD + clip by value + Dropout)
d="$tmp/mlp_sgd_clipval_16-mixed"
step_code=$(sed -n '/^static void forward_ops/,/^}/p;/^static void backward/,/^}/p;/^static void optimizer_ops/,/^}/p;/^static void step_ops/,/^}/p' "$d/model.cu")
if [ -x "$d/train" ] && grep -q 'strcmp(f, "--cuda-graph")' "$d/train.c" && grep -q "model_train_step(&m, &opt, boundary, ACCUMULATE)" "$d/train.c" &&
   grep -q "cudaStreamBeginCapture" "$d/model.cu" && grep -q "cudaGraphLaunch" "$d/model.cu" && ! grep -q "cudaGraphExecUpdate" "$d/model.cu" &&
   grep -q "LOAD_RAW_STRICT, 0, 0, 0, 0 };" "$d/train.c" && strings "$d/train" | grep -q -- "--cuda-graph" &&
   ! echo "$step_code" | grep -qE 'm->step\b|\blr\b|dloss|scaler\.scale|inv_scale' &&
   cat "$d"/kernels/dropout_*.cu | grep -qE "const unsigned long long \* m[0-9]+_step" && grep -q "const so_sgd_consts \*consts, const int \*skip" "$d/kernels/sgd_copy_h.cu" &&
   grep -q "skip = &m->d_scaler->found_inf" "$d/model.cu"; then
  echo "ok cuda_graph_option (16-mixed SGD + clip_val + Dropout: captured once, per-step values on the device, scaler on the device)"
else
  echo "not ok cuda_graph_option: the capture-once code is missing from $d, or a per-step host value is a kernel argument"
fi

# the compute copy (bf16-mixed / 16-mixed): the GEMMs read the 16-bit copy of the float32
# weights that the optimizer writes with the update (and model_upload after init/resume);
# no kernel stages a parameter into scratch; 32-true has no copy
why=""
for p in bf16-mixed 16-mixed; do
  d="$tmp/fashion_cnn_$p"; c=$([ $p = bf16-mixed ] && echo b || echo h)
  [ -f "$d/kernels/adam_copy_$c.cu" ] && [ -f "$d/kernels/compute_copy_$c.cu" ] || why="$p: no adam_copy_$c / compute_copy_$c kernel"
  grep -q "^#define COMPUTE_COPY 1" "$d/model.h" || why="$p: COMPUTE_COPY is not 1"
  [ "$(grep -c 'lc_gemm(&site.*m->d_compute' "$d/model.cu")" -ge 6 ] || why="$p: fewer than 6 GEMMs read d_compute"
  ! ls "$d/kernels" | grep -q "^stage_f${c}_" || why="$p: a parameter is still staged ($(ls "$d/kernels" | grep "^stage_f${c}_"))"
done
grep -q "^#define COMPUTE_COPY 0" "$tmp/fashion_cnn_32-true/model.h" || why="${why:-32-true has a compute copy}"
if [ -z "$why" ]; then echo "ok cuda_compute_copy (fashion_cnn bf16-mixed, 16-mixed)"; else echo "not ok cuda_compute_copy: $why"; fi

# fabric { float32_matmul_precision = "high", devices = {1} }: TF32 GEMMs on, GPU 1 by default
# (--device N overrides); devices = 2 is refused at its spec line; the CPU build says it
# ignores the setting
sed 's/fabric { accelerator = "cpu", precision = "32-true" }/fabric { accelerator = "cpu", precision = "32-true", float32_matmul_precision = "high", devices = {1} }/' \
  specs/fashion_mlp.lua >"$tmp/variants/mlp_tf32.lua"
d="$tmp/mlp_tf32"
if "$LOOM" build "$tmp/variants/mlp_tf32.lua" --accelerator=cuda -o "$d" >"$d.log" 2>&1 && [ -x "$d/train" ] &&
   grep -q "^#define TF32 1$" "$d/model.cu" && grep -q "LOAD_RAW_STRICT, 0, 0, 1, 0 };" "$d/train.c" && strings "$d/train" | grep -q -- "--device N"; then
  echo "ok cuda_tf32_opt_in (float32_matmul_precision = \"high\": built with TF32 on, devices = {1} is GPU 1)"
else
  echo "not ok cuda_tf32_opt_in: $(grep -m1 -E 'error|FAILED' "$d.log" || echo "no TF32 1 / device 1 in $d")"
fi
out=$("$LOOM" build "$tmp/variants/mlp_tf32.lua" --accelerator=cpu --no-compile -o "$tmp/mlp_tf32_cpu" 2>&1)
if echo "$out" | grep -q "mlp_tf32.lua:13: note: float32_matmul_precision 'high' is for the GPU's TF32"; then
  echo "ok cuda_tf32_cpu_note"
else
  echo "not ok cuda_tf32_cpu_note: $out"
fi
# devices = 2 (ddp): the CUDA program's ranks over NCCL (tests/suite_ddp_cuda.sh runs them)
d=$tmp/paw_devices2
out=$("$LOOM" build specs/paw.lua --accelerator=cuda --no-compile -o "$d" 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "ddp_nccl_init();" "$d/train.c" && grep -q "ddp_nccl_grad_ready(0);" "$d/model.cu" &&
   grep -q -- "-lnccl" "$d/build.ninja" && grep -q "^cc = mpicc" "$d/build.ninja"; then
  echo "ok cuda_devices_ddp (devices = 2: a ddp program over NCCL, built with mpicc and -lnccl)"
else
  echo "not ok cuda_devices_ddp: rc $rc: $(echo "$out" | head -1)"
fi
# 64-true: refused in one line, at the spec's line when the spec asks for it, else naming the flag
sed 's/fabric { accelerator = "cpu", precision = "32-true" }/fabric { accelerator = "cuda", precision = "64-true" }/' \
  specs/fashion_mlp.lua >"$tmp/variants/mlp_f64.lua"
o1=$("$LOOM" build "$tmp/variants/mlp_f64.lua" --no-compile -o "$tmp/mlp_f64" 2>&1); r1=$?
o2=$("$LOOM" build specs/fashion_mlp.lua --accelerator=cuda --precision=64-true --no-compile -o "$tmp/mlp_f64b" 2>&1); r2=$?
if [ $r1 -eq 2 ] && [ $r2 -eq 2 ] && echo "$o1" | head -1 | grep -q "^$tmp/variants/mlp_f64.lua:13: precision '64-true' is not supported by the CUDA backend yet" &&
   echo "$o2" | head -1 | grep -q "^loom: --precision=64-true is not supported by the CUDA backend yet" && ! echo "$o1$o2" | grep -qi traceback; then
  echo "ok cuda_precision_refused ($(echo "$o2" | head -1))"
else
  echo "not ok cuda_precision_refused: rc $r1/$r2: $(echo "$o1" | head -1) | $(echo "$o2" | head -1)"
fi

# the convolution choice: the report states it and points at bench/gpu_conv.sh, which
# compiles (cuDNN against im2col + cuBLASLt) and, without a GPU, says so and exits 0
if "$LOOM" explain specs/fashion_cnn.lua --accelerator=cuda --precision=bf16-mixed -o "$tmp/report" >/dev/null 2>&1 &&
   grep -q "^- Convolution: im2col .*bench/gpu_conv.sh" "$tmp/report/REPORT.md" && grep -q "^| compute copy (bf16" "$tmp/report/REPORT.md"; then
  echo "ok cuda_report_states_conv_choice"
else
  echo "not ok cuda_report_states_conv_choice: no CUDA section with the convolution and the compute copy in $tmp/report/REPORT.md"
fi
if out=$(bench/gpu_conv.sh --build "$tmp/gpu_conv" 2>&1) && [ -x "$tmp/gpu_conv/gpu_conv" ]; then
  run=$("$tmp/gpu_conv/gpu_conv" 2>&1); rc=$?
  if [ $rc -eq 0 ] && { [ "$run" = "no GPU: gpu_conv measures on a CUDA device" ] || [ "$has_gpu_dev" = 1 ]; }; then echo "ok cuda_bench_gpu_conv_builds ($(echo "$run" | head -1))"
  else echo "not ok cuda_bench_gpu_conv_builds: rc $rc: $(echo "$run" | tail -1)"; fi
else
  echo "not ok cuda_bench_gpu_conv_builds: $(echo "$out" | grep -m1 -E 'error' || echo "$out" | tail -1)"
fi

# the cache: the second compile of a program's kernels reads every one of them
d="$tmp/fashion_cnn_bf16-mixed"
if [ -x "$d/train" ]; then
  out=$("$d/train" --jit-check sm_80 2>&1 | tail -1)   # "jit-check sm_80: N kernels, H from the cache, ..."
  n=$(echo "$out" | sed -n 's/.*: \([0-9]*\) kernels, \([0-9]*\) from the cache.*/\1 \2/p')
  set -- $n
  if [ "${1:-x}" = "${2:-y}" ] && [ "$(ls "$LOOM_KERNEL_CACHE" | wc -l)" -gt 0 ]; then echo "ok cuda_kernel_cache ($out)"
  else echo "not ok cuda_kernel_cache: $out"; fi
else
  echo "not ok cuda_kernel_cache: fashion_cnn bf16-mixed did not build"
fi

# accelerator = "auto" / "cuda" on a machine without a device
has_gpu=0
if [ -e /dev/nvidiactl ] || ls /dev/nvidia0 >/dev/null 2>&1; then has_gpu=1; fi
if [ "$has_gpu" = 1 ]; then
  echo "ok cuda_auto_falls_back_to_cpu # SKIP this machine has a GPU (tests/gpu/run.sh)"
  echo "ok cuda_without_device_exits # SKIP this machine has a GPU"
  exit 0
fi
d="$tmp/auto"
if "$LOOM" build specs/fashion_mlp.lua --accelerator=auto -o "$d" >"$d.log" 2>&1 && [ -x "$d/cuda/train" ] && [ -x "$d/train" ]; then
  out=$("$d/cuda/train" --max-steps 5 --epochs 1 --out "$tmp/auto_run" 2>&1); rc=$?
  first=$(echo "$out" | head -1)
  if [ $rc -eq 0 ] && echo "$first" | grep -q "^no CUDA device (.*): running the CPU build .*/train$" &&
     echo "$out" | grep -q "trained 5 steps" && [ -f "$tmp/auto_run/last.safetensors" ]; then
    echo "ok cuda_auto_falls_back_to_cpu ($first)"
  else
    echo "not ok cuda_auto_falls_back_to_cpu: rc $rc: $(echo "$out" | head -3 | tr '\n' '|')"
  fi
else
  echo "not ok cuda_auto_falls_back_to_cpu: loom build --accelerator=auto failed: $(tail -1 "$d.log")"
fi
d="$tmp/fashion_mlp_32-true"
if [ -x "$d/train" ]; then
  out=$("$d/train" --max-steps 1 2>&1); rc=$?
  if [ $rc -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q 'no CUDA device.*accelerator "cuda"'; then
    echo "ok cuda_without_device_exits ($out)"
  else
    echo "not ok cuda_without_device_exits: rc $rc: $out"
  fi
else
  echo "not ok cuda_without_device_exits: the program did not build"
fi
