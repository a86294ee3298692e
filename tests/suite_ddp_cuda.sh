#!/usr/bin/env bash
# DDP on the CUDA backend over NCCL (issue 13; runtime/ddp_nccl.c, gen/emit_cuda.lua's
# ddp_blocks), checked here without a GPU: the real build and, emulated only, the ranks.
#  - the real build: nvcc -Werror, linked against the toolkit's libnccl.so.2 and MPI (ldd);
#    a one-device CUDA program (--devices=1) carries no MPI or NCCL (its files and build);
#  - under tests/cuda_emu with its emulated libnccl.so.2 (emu_nccl.cpp: NCCL's calls over MPI,
#    on the emulated device memory, in stream order), 2 ranks on 2 emulated GPUs: tests/ddp/mlp.lua
#    with 4 gradient buckets (bucket_cap_mb = 0.005) and accumulate = 2, 20 micro-batches —
#    2 CUDA ranks × 8 end with the weights of the CPU program's 2 ranks × 8 and of the CUDA
#    program's 1 rank × 16 within 1e-5 relative, and log the CPU's metrics.csv, train.log's
#    values too (each rank's device accumulators read back, then combined over the ranks
#    as log_reduce says: a mean, a sum, a max); rank 1
#    initialised with another seed starts from rank 0's parameters (as the CPU's ranks);
#    the all-reduces start inside backward (model.cu) and only on a step's last
#    micro-batch (the bytes the summary counts: 10 steps × the arena and its stop element);
#  - a SIGTERM to rank 1 alone stops both ranks after the same step (the request rides in the
#    gradients' all-reduce): exit 0, rank 0's checkpoint and line; resumed from it = an
#    uninterrupted run;
#  - a stopped rank (SIGSTOP) ends the job after --ddp-timeout, the other rank naming the wait;
#  - --cuda-graph (runtime/ddp_nccl.h): the step captured with its all-reduces (NCCL's stream
#    forked into the capture and joined back; the emulator replays the graph's nodes lazily,
#    so a missing wait gives wrong numbers, and refuses a fork not joined back), one graph per
#    batch slot and kind of micro-batch — bit for bit the ungraphed 2 ranks, the same bytes;
#    a SIGTERM to rank 1 stops both after the same step (the stop request copied from a
#    pinned word each step rewrites, so a replay carries it); sync_batchnorm too;
#  - refused in one line naming the rank: more ranks on a node than GPUs (CUDA_EMU_DEVICES
#    sets the emulated count: 2 for the runs above), --cuda-graph given to one rank only;
#  - sync_batchnorm (tests/ddp/bn.lua: BatchNorm2d and BatchNorm1d, SGD with momentum): each
#    BatchNorm's per-channel sums all-reduced over NCCL in forward and backward — 2 CUDA
#    ranks × 4 end with the weights and running statistics of 1 CUDA rank × 8 and of the
#    CPU program's 2 synced ranks × 4 within 1e-5.
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 18
CUDA=${CUDA_HOME:-/usr/local/cuda}
BASE=cpu2
. tests/ddp/lib.sh
EMU="$ROOT/tests/cuda_emu/build.sh"
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$ROOT/build/cuda_emu_cache}
# two emulated GPUs: one per rank, as NCCL wants (exported too: mpirun's -x reaches only
# the first program of an MPMD command line)
export CUDA_EMU_DEVICES=2
EMPI="$MPI -x CUDA_EMU_DEVICES=2"
if [ ! -x "$CUDA/bin/nvcc" ] || ! command -v mpirun >/dev/null; then
  for i in $(seq 18); do skip "CUDA ddp $i" "no CUDA toolkit ($CUDA/bin/nvcc) or no mpirun"; done
  exit 0
fi
# the spec: 4 buckets, accumulate 2, train.log's three metrics
BUCKETS='s/devices = 2 }/devices = 2, bucket_cap_mb = 0.005 }/; s/batch_size = 8,/batch_size = 8, accumulate = 2,/'
sed "$BUCKETS" "$SPEC" >cpu2.lua
sed "$BUCKETS; s/\"cpu\"/\"cuda\"/" "$SPEC" >cu2.lua
sed "$BUCKETS; s/\"cpu\"/\"cuda\"/; s/batch_size = 8,/batch_size = 16,/" "$SPEC" >cu1.lua

# the real build: nvcc -Werror, NCCL and MPI linked
if "$LOOM" build cu2.lua -o real >real.log 2>&1 && libs=$(ldd real/train) &&
   echo "$libs" | grep -q "libnccl.so.2 => $CUDA/lib" && echo "$libs" | grep -q "libmpi"; then
  ok "real build: nvcc -Werror, linked against $(echo "$libs" | grep -o 'libnccl.so.2 => [^ ]*') and libmpi"
else fail "real build links NCCL and MPI" "$(grep -m1 -E 'error|FAILED' real.log || ldd real/train 2>&1 | grep -E 'nccl|mpi')"; fi
"$LOOM" build cu2.lua --devices=1 --no-compile -o one >one.log 2>&1
if [ -f one/model.cu ] && ! ls one | grep -qE '^(ddp|collectives)' && ! grep -qE 'lnccl|mpicc' one/build.ninja && ! grep -q ddp_nccl one/model.cu; then
  ok "--devices=1: a one-GPU program, no MPI or NCCL in its files or build"
else fail "--devices=1 without MPI and NCCL" "$(ls one | grep -E '^(ddp|collectives)'; grep -E 'lnccl|mpicc' one/build.ninja)"; fi

# emulated: the CPU's 2 ranks, the CUDA program's 2 ranks and 1 rank × 16
"$LOOM" build cpu2.lua -o cpu2 >cpu2.log 2>&1 && $MPI -np 2 ./cpu2/train --out rc2 >rc2.log 2>&1
"$LOOM" build cu2.lua --no-compile -o cu2 >cu2.log 2>&1 && "$EMU" cu2 >>cu2.log 2>&1
"$LOOM" build cu1.lua --devices=1 --no-compile -o cu1 >cu1.log 2>&1 && "$EMU" cu1 >>cu1.log 2>&1
if LD_LIBRARY_PATH=cu2/emu ldd cu2/emu/train 2>/dev/null | grep -q "libnccl.so.2 => .*cu2/emu/libnccl.so.2"; then
  ok "emulated build: the emulated libnccl.so.2 (tests/cuda_emu/emu_nccl.cpp) in place of NVIDIA's"
else fail "emulated NCCL linked" "$(tail -3 cu2.log)"; fi
$EMPI -np 2 cu2/emu/run --out rg2 >rg2.log 2>&1
cu1/emu/run --out rg1 >rg1.log 2>&1
within "emulated: 2 CUDA ranks x 8 = the CPU's 2 ranks x 8 (4 buckets, accumulate 2, AdamW, 20 micro-batches)" rg2/last.safetensors rc2/last.safetensors
within "emulated: 2 CUDA ranks x 8 = 1 CUDA rank x 16" rg2/last.safetensors rg1/last.safetensors
csv=logs/lightning_logs/version_0/metrics.csv
d=$(python3 "$ROOT/tests/ddp/metrics_diff.py" rg2/$csv rc2/$csv 2>&1)
if [ $? -eq 0 ] && awk -v d="${d%% *}" -v t="$TOL" 'BEGIN { exit !(d <= t) }'; then ok "emulated: logged metrics (train.log's too) of 2 CUDA ranks = the CPU's 2 ranks ($d)"
else fail "logged metrics over the CUDA ranks" "$d"; fi
# rank 0's parameters at start: rank 1 initialises its own with another seed (mpirun's
# MPMD form); every rank must still start from rank 0's, on its device too
$MPI -np 1 ./cpu2/train --out rm --seed 11 : -np 1 ./cpu2/train --out rm --seed 12 >rm.log 2>&1
$EMPI -np 1 cu2/emu/run --out gm --seed 11 : -np 1 cu2/emu/run --out gm --seed 12 >gm.log 2>&1
# (5e-5: after 20 AdamW micro-batches from seed 11's weights the two backends' summation
# orders leave 1.26e-5 on net.2.weight; a rank that kept its own start would be O(1) off)
within "emulated: rank 1 initialised with another seed starts from rank 0's parameters (= the CPU's ranks)" gm/last.safetensors rm/last.safetensors "" 5e-5
# buckets inside backward, and only on a step's last micro-batch: 10 steps × (arena + 1) × 4 B
nb=$(grep -c 'ddp_nccl_grad_ready([0-9]*);' cu2/model.cu)
np=$(sed -n 's/^#define NUM_PARAMS \([0-9]*\).*/\1/p' cu2/model.h)
want=$(awk -v n="$np" 'BEGIN { printf "%.3f", 10 * (n + 1) * 4 / 1e6 }')
got=$(sed -n 's/^ddp: 2 ranks over NCCL; all-reduced \([0-9.]*\) MB.*/\1/p' rg2.log)
if [ "$nb" -ge 3 ] && [ "$got" = "$want" ]; then ok "$nb all-reduces started inside backward; $got MB per rank = 10 steps, none on accumulation micro-batches"
else fail "buckets in backward, no all-reduce on micro-steps" "$nb grad_ready calls; $got MB all-reduced, $want expected"; fi

# a stop request on rank 1 alone: both ranks stop after the same step (stop_one OUT [FLAGS])
stop_one() {
  local out=$1; shift
  $EMPI -np 2 cu2/emu/run --out $out --epochs 200 --ddp-timeout 30 "$@" >$out.log 2>&1 &
  local job=$! r1="" rc p
  for _ in $(seq 100); do
    sleep 0.2
    for p in $(pgrep -f "cu2/emu/train --out $out"); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && r1=$p
    done
    [ -n "$r1" ] && grep -q 'epoch 1' $out.log 2>/dev/null && break
  done
  sleep 1
  [ -n "$r1" ] && kill -TERM "$r1"
  wait $job; rc=$?
  # (a signal that lands in a validation pass stops "during validation after step N": under
  # --cuda-graph the steps are quick and validation takes most of an epoch)
  if [ $rc -eq 0 ] && [ -n "$r1" ] && grep -qE '^stopped by signal (during validation )?after step [0-9]+; checkpoint' $out.log &&
     [ -f $out/last.safetensors ] &&
     ! grep -q 'trained 2000 steps' $out.log; then
    ok "SIGTERM to rank 1 alone${1:+ ($*)}: both ranks stop after the same step, exit 0 ($(grep -oE 'stopped by signal (during validation )?after step [0-9]+' $out.log))"
  else fail "a stop request on one rank $*" "rc $rc, rank 1 pid '$r1': $(grep -v '^epoch' $out.log | tail -2 | tr '\n' ' ')"; fi
}
stop_one rs
# resumed from that checkpoint (the batch read ahead of the stop is the resumed run's first)
# = uninterrupted, 3 steps on
k=$(sed -nE 's/^stopped by signal (during validation )?after step ([0-9]+);.*/\2/p' rs.log); k=${k:-0}
$EMPI -np 2 cu2/emu/run --out rs --resume rs/last.safetensors --max-steps $((k + 3)) >rs2.log 2>&1
$EMPI -np 2 cu2/emu/run --out ru --epochs 200 --max-steps $((k + 3)) >ru.log 2>&1
within "resumed after the stop at step $k = uninterrupted (step $((k + 3)))" rs/last.safetensors ru/last.safetensors

# a stopped rank (SIGSTOP): the other, waiting for the step behind NCCL, ends the job after --ddp-timeout
$EMPI -np 2 cu2/emu/run --out rst --epochs 200 --ddp-timeout 2 >rst.log 2>&1 &
job=$! r1=""
for _ in $(seq 100); do
  sleep 0.2
  for p in $(pgrep -f "cu2/emu/train --out rst"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && r1=$p
  done
  [ -n "$r1" ] && grep -q 'epoch 1' rst.log 2>/dev/null && break
done
sleep 1
[ -n "$r1" ] && kill -STOP "$r1"
for _ in $(seq 100); do kill -0 $job 2>/dev/null || break; sleep 0.2; done
kill -0 $job 2>/dev/null && { kill -9 $job; [ -n "$r1" ] && kill -9 "$r1"; }
wait $job; rc=$?
[ -n "$r1" ] && kill -CONT "$r1" 2>/dev/null
# (rank 0 waits in the step's NCCL all-reduce, or in the step's loss gathered over MPI after it)
if [ $rc -ne 0 ] && grep -q "rank 0: waited more than 2 s in " rst.log; then
  ok "a stopped rank ends the job after --ddp-timeout 2 ($(grep -m1 -o "rank 0: waited more than 2 s in [^(]*" rst.log))"
else fail "a stopped rank ends the job" "rc $rc: $(grep -v '^epoch' rst.log | tail -2 | tr '\n' ' ')"; fi

out=$($MPI -x CUDA_EMU_DEVICES=1 -np 2 cu2/emu/run --out r1g 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q '^rank 1: local rank 1, but 1 GPU visible on this node: each ddp rank needs a GPU of its own'; then
  ok "2 ranks on a node with 1 GPU: refused in one line ($(echo "$out" | grep -m1 '^rank 1' | cut -c1-80)...)"
else fail "more ranks than GPUs refused" "rc $rc: $(echo "$out" | head -2)"; fi

# --cuda-graph: the step captured with its NCCL all-reduces (each bucket's on NCCL's stream,
# forked into the capture by the compute stream's event and joined back before the
# optimizer), one graph per batch slot and kind of micro-batch (the accumulation micro-steps'
# without collectives, no_backward_sync): bit for bit the ungraphed ranks, the same bytes
$EMPI -np 2 cu2/emu/run --out rgg --cuda-graph >rgg.log 2>&1
launches=$(sed -n 's/^--cuda-graph: \([0-9]*\) graph launches/\1/p' rgg.log)
captured=$(sed -n 's/^--cuda-graph: \([0-9]*\) graphs captured/\1/p' rgg.log)
bytes=$(grep '^ddp: 2 ranks over NCCL; all-reduced' rgg.log)
if [ "${launches:-0}" -ge 10 ] && [ "${captured:-0}" -eq 2 ] && cmp -s rgg/last.safetensors rg2/last.safetensors &&
   [ "$bytes" = "$(grep '^ddp: 2 ranks over NCCL; all-reduced' rg2.log)" ]; then
  ok "emulated: --cuda-graph, 2 CUDA ranks (4 buckets, accumulate 2) = the ungraphed ranks bit for bit ($launches launches of $captured graphs; ${bytes#ddp: 2 ranks over NCCL; })"
else fail "--cuda-graph over NCCL" "launches '$launches', captured '$captured', $(cmp rgg/last.safetensors rg2/last.safetensors 2>&1; grep -m1 -E 'cuda_emu|failed' rgg.log)"; fi
stop_one rsg --cuda-graph
out=$($EMPI -np 1 cu2/emu/run --out rcg --cuda-graph : -np 1 cu2/emu/run --out rcg 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q '^rank 1: --cuda-graph: give it to every rank or to none'; then ok "--cuda-graph on one rank only: refused in one line ($(echo "$out" | grep -m1 '^rank 1'))"
else fail "--cuda-graph on one rank refused" "rc $rc: $(echo "$out" | head -2)"; fi

# sync_batchnorm: the statistics (and backward's sums) over every rank's batch, over NCCL
BN=$ROOT/tests/ddp/bn.lua
sed 's/"cpu"/"cuda"/' "$BN" >bng2.lua
sed 's/"cpu"/"cuda"/; s/batch_size = 4,/batch_size = 8,/' "$BN" >bng1.lua
"$LOOM" build "$BN" -o bnc2 >bnc2.log 2>&1 && $MPI -np 2 ./bnc2/train --out rbnc >rbnc.log 2>&1
"$LOOM" build bng2.lua --no-compile -o bng2 >bng2.log 2>&1 && "$EMU" bng2 >>bng2.log 2>&1
"$LOOM" build bng1.lua --devices=1 --no-compile -o bng1 >bng1.log 2>&1 && "$EMU" bng1 >>bng1.log 2>&1
$EMPI -np 2 bng2/emu/run --out rbn2 >rbn2.log 2>&1
bng1/emu/run --out rbn1 >rbn1.log 2>&1
within "emulated: sync_batchnorm, 2 CUDA ranks x 4 = 1 CUDA rank x 8 (weights, running statistics)" rbn2/last.safetensors rbn1/last.safetensors
within "emulated: sync_batchnorm, 2 CUDA ranks x 4 = the CPU's synced 2 ranks x 4" rbn2/last.safetensors rbnc/last.safetensors
# --cuda-graph: the BatchNorms' sums all-reduced on the compute stream inside the graph
$EMPI -np 2 bng2/emu/run --out rbng --cuda-graph >rbng.log 2>&1
if grep -q '^--cuda-graph: [1-9][0-9]* graph launches' rbng.log && cmp -s rbng/last.safetensors rbn2/last.safetensors; then
  ok "emulated: sync_batchnorm under --cuda-graph = the ungraphed ranks bit for bit ($(grep -o '^--cuda-graph: [0-9]* graph launches' rbng.log | cut -d' ' -f2) launches)"
else fail "sync_batchnorm under --cuda-graph" "$(cmp rbng/last.safetensors rbn2/last.safetensors 2>&1; grep -m1 -E 'cuda_emu|failed' rbng.log)"; fi
