#!/usr/bin/env bash
# FSDP on the CUDA backend over NCCL (issue 13; runtime/ddp_nccl.c's fsdp_nccl_*,
# gen/emit_cuda.lua's ddp_blocks, unit_gathers and optimizer), checked without a GPU: the
# real build, and, emulated only, the ranks (tests/cuda_emu's emu_nccl.cpp: ncclAllGather,
# ncclReduceScatter and ncclBroadcast over MPI, queued in stream order, so a missing event
# wait gives wrong numbers).  tests/ddp/mlp.lua with AdamW, clip_grad_norm_ (max_norm 0.5:
# the norm's chunk sums over every rank's part) and accumulate = 2, 20 micro-batches:
#  - the real build (FULL_SHARD at bf16-mixed: its compute copy sharded too): nvcc -Werror,
#    linked against the toolkit's libnccl.so.2 and MPI;
#  - sharding_strategy = "SHARD_GRAD_OP": the gradients reduce-scattered in place after
#    backward, each rank's optimizer updating its part of the arena with its part of the state
#    (on the device), the parameters all-gathered in place after the step — 2 CUDA ranks × 8
#    end with the weights of the CPU program's fsdp 2 ranks × 8 and of the CUDA program's
#    1 rank × 16 within 1e-5 relative, the checkpoint's optimizer state (each rank's part
#    gathered on rank 0) is the 1-rank run's; the optimizer state on each device is half the
#    arena's; 10 steps × (a reduce-scatter and an all-gather of the arena) per rank, none on
#    accumulation micro-batches; resumed at step 5 = uninterrupted;
#  - FULL_SHARD (ModuleWrapPolicy { "Linear" }: 3 units) — the parameters sharded too, each unit
#    cut into equal parts per rank, all-gathered before the ops that read it in forward and
#    again in backward, its gradients reduce-scattered once final (on every micro-batch, a
#    step's later ones added into the shard by a kernel of the model's): 2 CUDA ranks = the CPU
#    program's FULL_SHARD 2 ranks and = 1 CUDA rank × 16 (weights and optimizer state); the
#    sharded bytes on each device (parameters, gradients, optimizer state) are half a 1-rank
#    run's; the gathers and reduce-scatters model.cu queues; resumed at step 5 = uninterrupted;
#  - FULL_SHARD with parameter groups (net.2 at another lr and weight decay): the update's
#    kernel walks the groups' runs of each rank's shard (runtime/ddp_nccl.c's
#    fsdp_nccl_shard_runs: the arena's runs cut to the rank's parts of the units, a part's
#    padding in no group) — 2 CUDA ranks = the CPU's FULL_SHARD 2 ranks and = 1 CUDA rank × 16;
#  - --cuda-graph: SHARD_GRAD_OP and FULL_SHARD (with groups, accumulate 3) captured with their
#    reduce-scatters and all-gathers, bit for bit the ungraphed ranks (the emulator replays a
#    graph's nodes lazily: a missing event wait gives wrong numbers; a fork never joined back
#    is refused), one graph per batch slot and kind of step (FULL_SHARD under accumulation:
#    whether a micro-batch's reduce-scatters add into the shard is a kind of its own).
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 16
CUDA=${CUDA_HOME:-/usr/local/cuda}
BASE=cpu2
. tests/ddp/lib.sh
EMU="$ROOT/tests/cuda_emu/build.sh"
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$ROOT/build/cuda_emu_cache}
export CUDA_EMU_DEVICES=2   # one emulated GPU per rank (exported too: -x reaches the first MPMD program only)
EMPI="$MPI -x CUDA_EMU_DEVICES=2"
if [ ! -x "$CUDA/bin/nvcc" ] || ! command -v mpirun >/dev/null; then
  for i in $(seq 16); do skip "CUDA fsdp $i" "no CUDA toolkit ($CUDA/bin/nvcc) or no mpirun"; done
  exit 0
fi
# no train.log here (suite_ddp_cuda logs it over the CUDA ranks)
CLIP='s/batch_size = 8,/batch_size = 8, accumulate = 2, clip = { max_norm = 0.5 },/; /^  log/d'
SGO='s/"ddp", devices = 2 }/"fsdp", devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/;'$CLIP
FULL='s/"ddp", devices = 2 }/"fsdp", devices = 2, auto_wrap_policy = { "Linear" } }/;'$CLIP
sed "$SGO" "$SPEC" >cpu2.lua
sed "$SGO; s/\"cpu\"/\"cuda\"/" "$SPEC" >cu2.lua
sed "$SGO; s/\"cpu\"/\"cuda\"/; s/batch_size = 8,/batch_size = 16,/" "$SPEC" >cu1.lua
sed "$FULL" "$SPEC" >cpuf.lua
sed "$FULL; s/\"cpu\"/\"cuda\"/" "$SPEC" >fs2.lua

sed 's/"32-true"/"bf16-mixed"/' fs2.lua >real.lua
if "$LOOM" build real.lua -o real >real.log 2>&1 && grep -q 'fsdp_nccl_set_compute(LC_BF16)' real/train.c && libs=$(ldd real/train) &&
   echo "$libs" | grep -q "libnccl.so.2 => $CUDA/lib" && echo "$libs" | grep -q "libmpi"; then
  ok "real build (FULL_SHARD, bf16-mixed): nvcc -Werror, linked against $(echo "$libs" | grep -o 'libnccl.so.2 => [^ ]*') and libmpi"
else fail "real build links NCCL and MPI" "$(grep -m1 -E 'error|FAILED' real.log || ldd real/train 2>&1 | grep -E 'nccl|mpi')"; fi

"$LOOM" build cpu2.lua -o cpu2 >cpu2.log 2>&1 && $MPI -np 2 ./cpu2/train --out rc2 >rc2.log 2>&1
cp -a cpu2 cpuf && "$LOOM" build cpuf.lua -o cpuf >cpuf.log 2>&1 && $MPI -np 2 ./cpuf/train --out rcf >rcf.log 2>&1
"$LOOM" build cu2.lua --no-compile -o cu2 >cu2.log 2>&1 && "$EMU" cu2 >>cu2.log 2>&1
"$LOOM" build cu1.lua --devices=1 --no-compile -o cu1 >cu1.log 2>&1 && "$EMU" cu1 >>cu1.log 2>&1
"$LOOM" build fs2.lua --no-compile -o fs2 >fs2.log 2>&1 && "$EMU" fs2 >>fs2.log 2>&1
cu1/emu/run --out rg1 >rg1.log 2>&1

# SHARD_GRAD_OP
$EMPI -np 2 cu2/emu/run --out rg2 >rg2.log 2>&1
within "emulated: SHARD_GRAD_OP, 2 CUDA ranks x 8 = the CPU's fsdp 2 ranks x 8 (AdamW, clipping, accumulate 2)" rg2/last.safetensors rc2/last.safetensors
within "emulated: SHARD_GRAD_OP, 2 CUDA ranks x 8 = 1 CUDA rank x 16" rg2/last.safetensors rg1/last.safetensors
within "emulated: SHARD_GRAD_OP, the checkpoint's optimizer state, gathered from 2 parts = the 1-rank run's" rg2/last.safetensors rg1/last.safetensors optimizer.
np=$(sed -n 's/^#define NUM_PARAMS \([0-9]*\).*/\1/p' cu2/model.h)
line=$(grep -m1 '^fsdp: SHARD_GRAD_OP over 2 ranks (NCCL)' rg2.log)
part=$(echo "$line" | sed -n 's/.*optimizer state [0-9]* B (2 buffers of \([0-9]*\) B).*/\1/p')
if [ -n "$part" ] && [ "$part" -eq $((np * 4 / 2)) ]; then ok "SHARD_GRAD_OP: the optimizer state's part on each device is 1/2 of the arena ($part B of $((np * 4)) B per buffer)"
else fail "the optimizer state sharded on the device" "$line"; fi
want=$(awk -v n="$np" 'BEGIN { printf "%.3f", 10 * 2 * n * 4 / 1e6 }')
got=$(sed -n 's/^fsdp: 2 ranks over NCCL; reduce-scattered and all-gathered \([0-9.]*\) MB.*/\1/p' rg2.log)
if [ "$got" = "$want" ]; then ok "SHARD_GRAD_OP: $got MB per rank reduce-scattered and all-gathered = 10 steps x 2 x the arena, none on accumulation micro-batches"
else fail "the collectives' bytes" "$got MB, $want expected"; fi
$EMPI -np 2 cu2/emu/run --out rs --max-steps 5 >rs.log 2>&1
$EMPI -np 2 cu2/emu/run --out rs --resume rs/last.safetensors --max-steps 10 >rs2.log 2>&1
within "emulated: SHARD_GRAD_OP resumed at step 5 = uninterrupted (weights and optimizer state)" rs/last.safetensors rg2/last.safetensors

# FULL_SHARD
$EMPI -np 2 fs2/emu/run --out rf2 >rf2.log 2>&1
within "emulated: FULL_SHARD (3 units), 2 CUDA ranks x 8 = the CPU's FULL_SHARD 2 ranks x 8" rf2/last.safetensors rcf/last.safetensors
within "emulated: FULL_SHARD, 2 CUDA ranks x 8 = 1 CUDA rank x 16 (weights and optimizer state)" rf2/last.safetensors rg1/last.safetensors
$EMPI -np 1 fs2/emu/run --out rf1 --max-steps 1 >rf1.log 2>&1
s2=$(sed -n 's/^fsdp: FULL_SHARD over 2 ranks.*of which sharded \([0-9]*\) B$/\1/p' rf2.log)
s1=$(sed -n 's/^fsdp: FULL_SHARD over 1 ranks.*of which sharded \([0-9]*\) B$/\1/p' rf1.log)
if [ -n "$s2" ] && [ -n "$s1" ] && [ $((2 * s2)) -eq "$s1" ]; then
  ok "FULL_SHARD: the sharded parameters, gradients and optimizer state on each device: $s2 B on 2 ranks, $s1 B on 1 ($(grep -m1 -o 'parameters [0-9]* B (shard [^)]*)' rf2.log))"
else fail "FULL_SHARD's per-rank bytes" "2 ranks '$s2', 1 rank '$s1'"; fi
gf=$(sed -n '/^static void forward_ops/,/^}/p' fs2/model.cu | grep -c 'fsdp_nccl_gather_unit(')
gb=$(sed -n '/^static void backward(/,/^}/p' fs2/model.cu | grep -c 'fsdp_nccl_gather_unit(')
rsc=$(grep -c 'fsdp_nccl_unit_grads_ready([0-9]*);' fs2/model.cu)
if [ "$gf" -eq 3 ] && [ "$gb" -eq 2 ] && [ "$rsc" -eq 3 ]; then
  ok "FULL_SHARD: model.cu gathers the 3 units in forward, 2 in backward (the first Linear's reads no parameter), reduce-scatters 3"
else fail "FULL_SHARD's gathers" "$gf forward, $gb backward gathers, $rsc reduce-scatters"; fi
$EMPI -np 2 fs2/emu/run --out rsf --max-steps 5 >rsf.log 2>&1
$EMPI -np 2 fs2/emu/run --out rsf --resume rsf/last.safetensors --max-steps 10 >rsf2.log 2>&1
within "emulated: FULL_SHARD resumed at step 5 = uninterrupted (weights and optimizer state)" rsf/last.safetensors rf2/last.safetensors

# FULL_SHARD with parameter groups: net.2 at twice the lr and ten times the weight decay, the
# runs of each rank's shard (its parts of the units, the last unit's padded) found at start;
# accumulate 3 over 2 epochs of 20 micro-batches (a step's first micro-batch, its later ones,
# and each epoch's leftover two: every kind of step --cuda-graph keys below)
PGROUPS='s/AdamW { lr = 1e-2, weight_decay = 0.01 }/AdamW { lr = 1e-2, weight_decay = 0.01, groups = { { params = "^net%.2%.", lr = 0.02, weight_decay = 0.1 } } }/; s/accumulate = 2,/accumulate = 3,/; s/epochs = 1,/epochs = 2,/'
sed "$PGROUPS" cpuf.lua >cpug.lua
sed "$PGROUPS" fs2.lua >fsg.lua
sed "$PGROUPS; s/batch_size = 8,/batch_size = 16,/" fs2.lua >fsg1.lua
cp -a cpuf cpug && "$LOOM" build cpug.lua -o cpug >cpug.log 2>&1 && $MPI -np 2 ./cpug/train --out rcg >rcg.log 2>&1
"$LOOM" build fsg.lua --no-compile -o fsg >fsg.log 2>&1 && "$EMU" fsg >>fsg.log 2>&1
"$LOOM" build fsg1.lua --devices=1 --no-compile -o fsg1 >fsg1.log 2>&1 && "$EMU" fsg1 >>fsg1.log 2>&1
$EMPI -np 2 fsg/emu/run --out rfg >rfg.log 2>&1
fsg1/emu/run --out rfg1 >rfg1.log 2>&1
if grep -q 'fsdp_nccl_shard_runs(run_end, run_group, 3, 255' fsg/model.cu; then
  within "emulated: FULL_SHARD, 2 parameter groups (lr, weight_decay), 2 CUDA ranks x 8 = the CPU's FULL_SHARD 2 ranks x 8" rfg/last.safetensors rcg/last.safetensors
else fail "FULL_SHARD's parameter groups" "no shard runs in fsg/model.cu: $(grep -m1 error fsg.log)"; fi
within "emulated: FULL_SHARD, 2 parameter groups, 2 CUDA ranks x 8 = 1 CUDA rank x 16 (weights and optimizer state)" rfg/last.safetensors rfg1/last.safetensors

# --cuda-graph: the step captured with its collectives (NCCL's stream forked into the capture
# by the compute stream's events and joined back by its waits), one graph per batch slot and
# kind of step: bit for bit the ungraphed ranks, the same bytes
graphed() {   # graphed NAME PROGRAM PLAIN_RUN GRAPHS
  local name=$1 prog=$2 plain=$3 want=$4 launches captured
  $EMPI -np 2 $prog/emu/run --out $plain.g --cuda-graph >$plain.g.log 2>&1
  launches=$(sed -n 's/^--cuda-graph: \([0-9]*\) graph launches/\1/p' $plain.g.log)
  captured=$(sed -n 's/^--cuda-graph: \([0-9]*\) graphs captured/\1/p' $plain.g.log)
  if [ "${launches:-0}" -ge 10 ] && [ "${captured:-0}" -eq "$want" ] && cmp -s $plain.g/last.safetensors $plain/last.safetensors &&
     [ "$(grep '^fsdp: 2 ranks over NCCL' $plain.g.log)" = "$(grep '^fsdp: 2 ranks over NCCL' $plain.log)" ]; then
    ok "emulated: --cuda-graph, $name = the ungraphed ranks bit for bit ($launches launches of $captured graphs, the same bytes)"
  else fail "--cuda-graph, $name" "launches '$launches', captured '$captured', $(cmp $plain.g/last.safetensors $plain/last.safetensors 2>&1; grep -m1 -E 'cuda_emu|failed' $plain.g.log)"; fi
}
graphed "SHARD_GRAD_OP (accumulate 2)" cu2 rg2 2
graphed "FULL_SHARD with groups (accumulate 3: 6 graphs, a step's first micro-batch and its later ones apart)" fsg rfg 6
