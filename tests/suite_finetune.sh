#!/usr/bin/env bash
# Issue 18's weights from elsewhere and freezing, on tests/finetune/finenet.lua (a small
# classifier whose spec loads a PyTorch state_dict with train.load_raw and freezes its
# BatchNorm's affine parameters and its middle Linear with train.freeze):
#  - finetune_parity32/64: a weights-only safetensors file written from PyTorch's
#    state_dict, loaded strictly, 5 AdamW steps with the frozen layers, against PyTorch
#    training the same module with the same parameters requires_grad = False: every
#    step's loss and every parameter and buffer within 1e-4 (32-true) / 1e-9 (64-true)
#    relative to the tensor's scale; the frozen ones bit-identical (tests/torch/finetune.py);
#  - finetune_convert32 / _bf16: BF16, F16, F64 and F32 tensors converted as torch's .to();
#  - finetune_nonstrict: --load-raw-strict false lists missing and unexpected keys in one
#    line, and the missing tensor keeps the program's own initial value;
#  - finetune_from_loom_checkpoint: a loom checkpoint loads strictly (its optimizer state skipped);
#  - one line and a non-zero exit for a missing or unexpected tensor (strict), a shape or
#    dtype mismatch (strict or not), a truncated file, --load-raw with --resume;
#  - freeze_pruned: the frozen weights' gradient operands are NULL in model.c (autodiff
#    pruned them) while the input gradient still flows through them;
#  - freeze_inspect: loom inspect lists the frozen parameters;
#  - freeze_with_groups: an optimizer group of frozen parameters only is valid and updates nothing;
#  - the CUDA backend generates train.freeze (its update kernel skips the frozen runs;
#    tests/suite_ops_emu.sh runs it against the CPU program) and load_raw (host-side).
# A freeze pattern that matches nothing is tests/spec_fail/freeze_matches_nothing.lua.
set -u
cd "$(dirname "$0")/.."
LOOM=$(realpath "${LOOM:-build/loom}")
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
spec=$PWD/tests/finetune/finenet.lua
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh   # plan, ok, fail, no_torch, harness
PY_CASES="finetune_parity32 finetune_parity64 finetune_convert32 finetune_convert_bf16 finetune_nonstrict finetune_from_loom_checkpoint
finetune_strict_missing finetune_strict_unexpected finetune_shape_mismatch finetune_dtype_mismatch finetune_truncated"
SH_CASES="finetune_resume_conflict freeze_pruned freeze_inspect freeze_with_groups freeze_cuda load_raw_cuda_generates"
plan $(($(echo $PY_CASES | wc -w) + $(echo $SH_CASES | wc -w)))
if py_lacks torch numpy; then
  for n in $PY_CASES $SH_CASES; do no_torch "$n" "$PY has no torch or numpy (the spec's Npy data is written by it)"; done
  exit 0
fi
work=$tmp/work
mkdir -p "$work"
"$PY" tests/torch/finetune.py data "$work"

# the spec reads its .npy files and pretrained.safetensors from the working directory
built=1
for prec in 32-true 64-true bf16-true; do
  d=$tmp/p${prec%-true}
  if ! (cd "$work" && "$LOOM" build "$spec" -o "$d" --precision=$prec --emit torch) >"$d.log" 2>&1; then
    built=0; why="loom build --precision=$prec failed: $(tail -1 "$d.log")"
  fi
done
if [ $built = 1 ]; then
  harness finetune "$(echo $PY_CASES | wc -w)" "" "$PY" tests/torch/finetune.py run "$work" "$tmp/p32" "$tmp/p64" "$tmp/pbf16"
  (cd "$work" && expect_error finetune_resume_conflict "give one" "$tmp/p32/train" --out "$tmp/rc" \
    --resume out_finetune_parity32/last.safetensors --load-raw pretrained.safetensors)
else
  for n in $PY_CASES finetune_resume_conflict; do fail "$n" "$why"; done
fi

# features.3 (Linear) and features.2 (BatchNorm) frozen: their backward computes the
# input's gradient only; features.0 below them still gets its weight gradients
m=$tmp/p32/model.c
if [ $built = 0 ]; then
  fail freeze_pruned "$why"
elif grep -A1 'features.3  <-.*(backward)' "$m" | grep -q 'k_linear_backward_f32(d[0-9]*, NULL, NULL,' &&
     grep -A1 'features.2  <-.*(backward)' "$m" | grep -q 'k_batch_norm_backward_f32(d[0-9]*, NULL, NULL,' &&
     grep -A1 'features.0  <-.*(backward)' "$m" | grep -q 'g_features_0_weight, g_features_0_bias' &&
     grep -q 'frozen (train.freeze, requires_grad = False): not updated: features.2.weight .. features.3.bias' "$tmp/p32/optim.c"; then
  ok freeze_pruned
else
  fail freeze_pruned "model.c computes a frozen weight's gradient, or optim.c updates it: $(grep -A1 'features.[023]  <-.*(backward)' "$m" | tr '\n' ' ')"
fi

want="Frozen (train.freeze): 304 parameters in 4 tensors, 276 trainable: features.2.weight, features.2.bias, features.3.weight, features.3.bias"
got=$(cd "$work" && "$LOOM" inspect "$spec" 2>&1 | tail -1)
if [ "$got" = "$want" ]; then ok freeze_inspect; else fail freeze_inspect "loom inspect's last line: $got"; fi

# a parameter group whose parameters are all frozen is valid (it matched them) and runs
# over nothing: the update skips features.3, the group's and the frozen ones
sed 's/optimizer = AdamW {.*/optimizer = AdamW { lr = 1e-2, weight_decay = 0.1, groups = { { params = "^features%.3%.", lr = 1e-3 } } },/' \
  "$spec" >"$work/groups.lua"
if (cd "$work" && "$LOOM" build groups.lua -o "$tmp/groups" --no-compile) >"$tmp/groups.log" 2>&1 &&
   grep -q 'frozen (train.freeze, requires_grad = False): not updated: features.2.weight .. features.3.bias' "$tmp/groups/optim.c" &&
   ! grep -q '},   // group [0-9]*: features.3' "$tmp/groups/optim.c"; then
  ok freeze_with_groups
else
  fail freeze_with_groups "$(tail -1 "$tmp/groups.log"); $(grep -m3 'group' "$tmp/groups/optim.c" 2>/dev/null | tr '\n' ' ')"
fi

# the CUDA program: the update kernel's runs leave features.2 .. features.3 (one run) as they are
if (cd "$work" && "$LOOM" build "$spec" -o "$tmp/cuda" --accelerator=cuda --no-compile) >"$tmp/cuda.log" 2>&1 &&
   grep -q 'opt_run_group\[3\] = { 0, SKIP_RUN, 0 }' "$tmp"/cuda/kernels/adam*.cu &&
   grep -q 'if (opt_run_group\[r\] == SKIP_RUN) continue;' "$tmp"/cuda/kernels/adam*.cu; then
  ok freeze_cuda
else
  fail freeze_cuda "$(tail -1 "$tmp/cuda.log"); $(grep -h opt_run_group "$tmp"/cuda/kernels/adam*.cu 2>/dev/null | head -2 | tr '\n' ' ')"
fi

# without train.freeze, the CUDA program generates, with load_raw on the host
sed '/freeze = /d' "$spec" >"$work/nofreeze.lua"
if (cd "$work" && "$LOOM" build nofreeze.lua -o "$tmp/cuda2" --accelerator=cuda --no-compile) >"$tmp/cuda2.log" 2>&1 &&
   grep -q 'load_raw(args.load_raw, args.load_raw_strict, &m, args.quiet)' "$tmp/cuda2/train.c" &&
   grep -q '#define LOAD_RAW_PATH "pretrained.safetensors"' "$tmp/cuda2/train.c"; then
  ok load_raw_cuda_generates
else
  fail load_raw_cuda_generates "$(tail -1 "$tmp/cuda2.log")"
fi
