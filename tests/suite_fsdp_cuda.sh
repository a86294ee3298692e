#!/usr/bin/env bash
# FSDP on the CUDA backend over NCCL (issue 13; runtime/ddp_nccl.c's fsdp_nccl_*,
# gen/emit_cuda.lua's ddp_blocks and optimizer): sharding_strategy = "SHARD_GRAD_OP" —
# the gradients reduce-scattered in place (ncclReduceScatter, mean) on NCCL's stream after
# backward, each rank's optimizer updating its part of the arena with its part of the state
# (on the device), the parameters all-gathered in place (ncclAllGather) after the step.
# Checked here without a GPU: the real build, and, emulated only, the ranks.
#  - the real build: nvcc -Werror, linked against the toolkit's libnccl.so.2 and MPI (ldd);
#  - under tests/cuda_emu (emu_nccl.cpp: ncclReduceScatter/ncclAllGather over MPI, queued in
#    stream order: a missing event wait gives wrong numbers), tests/ddp/mlp.lua with AdamW
#    and accumulate = 2, 20 micro-batches: 2 CUDA ranks × 8 end with the weights of the CPU
#    program's fsdp 2 ranks × 8 and of the CUDA program's 1 rank × 16 within 1e-5 relative,
#    and the checkpoint's optimizer state (each rank's part gathered on rank 0) is the
#    1-rank run's;
#  - the bytes each rank holds on its device (its startup line): the optimizer state is the
#    rank's part, half the arena on 2 ranks; the collectives' bytes: 10 steps × (a
#    reduce-scatter and an all-gather of the arena), none on accumulation micro-batches;
#  - stopped at step 5 and resumed from the full checkpoint = uninterrupted (to step 10);
#  - refused in one line: FULL_SHARD, clipping, 16-mixed's loss scaling, parameter groups.
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 11
CUDA=${CUDA_HOME:-/usr/local/cuda}
BASE=cpu2
. tests/ddp/lib.sh
EMU="$ROOT/tests/cuda_emu/build.sh"
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$ROOT/build/cuda_emu_cache}
export CUDA_EMU_DEVICES=2   # one emulated GPU per rank (exported too: -x reaches the first MPMD program only)
EMPI="$MPI -x CUDA_EMU_DEVICES=2"
if [ ! -x "$CUDA/bin/nvcc" ] || ! command -v mpirun >/dev/null; then
  for i in $(seq 11); do skip "CUDA fsdp $i" "no CUDA toolkit ($CUDA/bin/nvcc) or no mpirun"; done
  exit 0
fi
# SHARD_GRAD_OP, accumulate 2; no train.log (the CUDA ranks refuse it)
FSDP='s/"ddp", devices = 2 }/"fsdp", devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/; s/batch_size = 8,/batch_size = 8, accumulate = 2,/; /^  log/d'
sed "$FSDP" "$SPEC" >cpu2.lua
sed "$FSDP; s/\"cpu\"/\"cuda\"/" "$SPEC" >cu2.lua
sed "$FSDP; s/\"cpu\"/\"cuda\"/; s/batch_size = 8,/batch_size = 16,/" "$SPEC" >cu1.lua

if "$LOOM" build cu2.lua -o real >real.log 2>&1 && libs=$(ldd real/train) &&
   echo "$libs" | grep -q "libnccl.so.2 => $CUDA/lib" && echo "$libs" | grep -q "libmpi"; then
  ok "real build: nvcc -Werror, linked against $(echo "$libs" | grep -o 'libnccl.so.2 => [^ ]*') and libmpi"
else fail "real build links NCCL and MPI" "$(grep -m1 -E 'error|FAILED' real.log || ldd real/train 2>&1 | grep -E 'nccl|mpi')"; fi

"$LOOM" build cpu2.lua -o cpu2 >cpu2.log 2>&1 && $MPI -np 2 ./cpu2/train --out rc2 >rc2.log 2>&1
"$LOOM" build cu2.lua --no-compile -o cu2 >cu2.log 2>&1 && "$EMU" cu2 >>cu2.log 2>&1
"$LOOM" build cu1.lua --devices=1 --no-compile -o cu1 >cu1.log 2>&1 && "$EMU" cu1 >>cu1.log 2>&1
$EMPI -np 2 cu2/emu/run --out rg2 >rg2.log 2>&1
cu1/emu/run --out rg1 >rg1.log 2>&1
within "emulated: fsdp 2 CUDA ranks x 8 = the CPU's fsdp 2 ranks x 8 (AdamW, accumulate 2, 20 micro-batches)" rg2/last.safetensors rc2/last.safetensors
within "emulated: fsdp 2 CUDA ranks x 8 = 1 CUDA rank x 16" rg2/last.safetensors rg1/last.safetensors
within "emulated: the checkpoint's optimizer state, gathered from 2 parts = the 1-rank run's" rg2/last.safetensors rg1/last.safetensors optimizer.

# what each rank holds on its device: the optimizer state is its part, half the arena's
np=$(sed -n 's/^#define NUM_PARAMS \([0-9]*\).*/\1/p' cu2/model.h)
line=$(grep -m1 '^fsdp: SHARD_GRAD_OP over 2 ranks (NCCL)' rg2.log)
part=$(echo "$line" | sed -n 's/.*optimizer state [0-9]* B (2 buffers of \([0-9]*\) B).*/\1/p')
if [ -n "$part" ] && [ "$part" -eq $((np * 4 / 2)) ]; then ok "per rank: the optimizer state's part is 1/2 of the arena ($part B of $((np * 4)) B per buffer)"
else fail "the optimizer state sharded on the device" "$line"; fi
# a reduce-scatter and an all-gather of the arena per step, none on accumulation micro-batches
want=$(awk -v n="$np" 'BEGIN { printf "%.3f", 10 * 2 * n * 4 / 1e6 }')
got=$(sed -n 's/^fsdp: 2 ranks over NCCL; reduce-scattered and all-gathered \([0-9.]*\) MB.*/\1/p' rg2.log)
if [ "$got" = "$want" ]; then ok "$got MB per rank reduce-scattered and all-gathered = 10 steps, none on accumulation micro-batches"
else fail "the collectives' bytes" "$got MB, $want expected"; fi

# stopped at step 5, resumed from its full checkpoint on 2 ranks = uninterrupted to step 10
$EMPI -np 2 cu2/emu/run --out rs --max-steps 5 >rs.log 2>&1
$EMPI -np 2 cu2/emu/run --out rs --resume rs/last.safetensors --max-steps 10 >rs2.log 2>&1
$EMPI -np 2 cu2/emu/run --out ru --max-steps 10 >ru.log 2>&1
within "emulated: resumed at step 5 = uninterrupted (step 10; weights and optimizer state)" rs/last.safetensors ru/last.safetensors

SPEC=cu2.lua
refused fullshard 's/, sharding_strategy = "SHARD_GRAD_OP"//' \
  "fullshard.lua:9: fsdp FULL_SHARD is not implemented on the CUDA backend yet (its SHARD_GRAD_OP and ddp over NCCL are: sharding_strategy = 'SHARD_GRAD_OP', or --accelerator=cpu for FULL_SHARD over MPI)"
refused clip 's/accumulate = 2,/accumulate = 2, clip = { max_norm = 1.0 },/' \
  "clip.lua:16: fsdp on the CUDA backend does not clip gradients yet (a norm over every rank's part); leave clip out, strategy = 'ddp', or --accelerator=cpu"
refused groups 's/weight_decay = 0.01 }/weight_decay = 0.01, decay_min_ndim = 2 }/' \
  "groups.lua:18: fsdp on the CUDA backend does not run parameter groups yet (its update runs over each rank's part of the arena); leave the groups out, strategy = 'ddp', or --accelerator=cpu"
refused mixed16 's/"32-true"/"16-mixed"/' \
  "mixed16.lua:9: fsdp on the CUDA backend does not run 16-mixed's loss scaling yet (its inf check over every rank's part); use bf16-mixed, strategy = 'ddp', or --accelerator=cpu"
