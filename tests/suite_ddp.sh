#!/usr/bin/env bash
# DDP on the CPU over MPI (issue 13; gen/strategy.lua, runtime/ddp.c): the generated
# program's ranks under mpirun (--oversubscribe: this machine has 2 cores;
# --allow-run-as-root: the test machines run as root).
#  - the key check: 2 ranks × batch 8 end with the same weights as 1 rank × batch 16 after
#    a whole epoch of 20 steps (fp32; AdamW, and SGD with momentum over several buckets;
#    4 ranks × 4; gradient accumulation 2 on both sides), within 1e-5 relative;
#  - the logged metrics (train loss, train.log's mean, sum and max, validation) are the
#    global ones: metrics.csv of 2 and 4 ranks = 1 rank × 16's within 1e-5 relative;
#    gathered only on the steps that show them (log_every_n_steps = 3: the same rows);
#    callbacks monitor them (ModelCheckpoint on a summed train.log metric, EarlyStopping
#    on a max-reduced one, ReduceLROnPlateau on train/loss: their saved state = 1 rank's);
#  - resume: a 2-rank run stopped at step 10 and resumed ends as the uninterrupted one; a
#    checkpoint of another global batch is refused in one line;
#  - rank 0 alone writes the outputs; --devices=1 builds one process without MPI;
#  - faults: a SIGKILLed rank ends the job (non-zero, the rank named) within seconds; a
#    stopped rank ends it after --ddp-timeout with one line; a SIGTERM to one rank stops
#    both after the same step (the request rides in the gradients' all-reduce) and exits 0;
#  - sync_batchnorm (tests/ddp/bn.lua: a CNN with BatchNorm2d, a BatchNorm1d MLP head):
#    2 ranks × 4 end with the weights and running statistics of 1 rank × 8 (and with
#    accumulation 2) within 1e-5 relative, and 4 ranks × 2 in 64-true within 1e-12;
#    without it each rank's own statistics (no sum over ranks);
#    --devices=1 is plain BatchNorm;
#  - bf16-true and 16-true (16-bit gradients, all-reduced in float and rounded once):
#    2 ranks × 8 = 1 rank × 16 after 5 SGD-momentum steps within 4 units in the last place
#    (2^-6, 2^-9; 1 rank × 8 is ~0.15 away).  (AdamW's first steps move each weight by
#    ±lr whatever |g|, so a gradient near 0 whose 16-bit rounding flips its sign moves it
#    by 2 lr: 1 rank × 16 against 1 rank × 2 × 8 accumulated differs as much there.)
#  - the user's own training_step (gen/user_step.lua; each optimizer's gradients averaged
#    before its step): tests/ddp/gan_step.lua (two Adams, D stepping twice, fabric.log) and
#    tests/ddp/acc_step.lua (two backwards added up before one SGD step, clip by norm,
#    validation) 2 ranks × 8 = 1 rank × 16 after an epoch of 10 steps (weights and optimizer
#    state, logged values) within 1e-5 relative (measured: up to 1.1e-6); only what a step
#    reads is reduced (G's backward's D gradients are not); the GAN with a BatchNorm1d in D
#    under sync_batchnorm too; 5 steps + 5 resumed = 10; fsdp's sharding with a
#    training_step refused in one line
#  - refused in one line: fsdp's HYBRID_SHARD
#    (CUDA ddp itself: tests/suite_ddp_cuda.sh).
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 38
BASE=two
. tests/ddp/lib.sh
MDIFF="python3 $ROOT/tests/ddp/metrics_diff.py"

# 1 rank × 16 (one process, --devices=1) and 2 ranks × 8, AdamW, 20 steps (one epoch, validated)
variant one 's/batch_size = 8/batch_size = 16/' --devices=1 && ./one/train --out r1 >r1.log 2>&1
if [ ! -f one/ddp.h ] && grep -q '^cc = cc' one/build.ninja && ! nm one/train | grep -qi mpi; then ok "--devices=1: one process, no MPI linked"
else fail "--devices=1: one process, no MPI linked" "ddp.h or mpicc or an MPI symbol in one/"; fi
variant two 's/x/x/' && $MPI -np 2 ./two/train --out r2 >r2.log 2>&1
within "2 ranks x 8 = 1 rank x 16 (AdamW, 20 steps)" r2/last.safetensors r1/last.safetensors
v1=$(grep -o 'val/loss [0-9.]*' r1.log | tail -1); v2=$(grep -o 'val/loss [0-9.]*' r2.log | tail -1)
if [ -n "$v2" ] && [ "$v1" = "$v2" ]; then ok "validation over both ranks' shards = one rank's ($v2)"; else fail "validation over ranks" "'$v1' vs '$v2'"; fi
# metricsof NAME A B: A's metrics.csv against B's within TOL (every row, column and cell)
metricsof() {
  local d csv=logs/lightning_logs/version_0/metrics.csv
  d=$($MDIFF "$2/$csv" "$3/$csv" 2>&1) || { fail "$1" "metrics_diff: $d"; return; }
  if awk -v d="${d%% *}" -v t=$TOL 'BEGIN { exit !(d <= t) }'; then ok "$1 ($d)"; else fail "$1" "$d > $TOL"; fi
}
metricsof "logged metrics: 2 ranks x 8 = 1 rank x 16 (train loss, hits mean, total sum, worst max, validation)" r2 r1
# log_every_n_steps = 3: the step's loss and train.log's values are gathered over the ranks
# only on the steps that show them (every 3rd, an epoch's last, the run's last), the epoch's
# at its end; the rows and every value are still 1 rank × 16's, over 2 epochs
LOG3='s/log_every_n_steps = 1,/log_every_n_steps = 3,/; s/epochs = 1,/epochs = 2,/'
variant lg1 "s/batch_size = 8/batch_size = 16/; $LOG3" --devices=1 && ./lg1/train --out l1 --quiet >/dev/null 2>&1
variant lg2 "$LOG3" && $MPI -np 2 ./lg2/train --out l2 --quiet >/dev/null 2>&1
if grep -q 'mean_loss = step_over_ranks(mean_loss, stop_requested || rs.step >= total_steps || rs.step % 3 == 0 ||' lg2/train.c &&
   grep -q 'epoch_over_ranks(epoch_loss_sum / epoch_loss_count)' lg2/train.c; then ok "log_every_n_steps = 3: the loss gathered over the ranks only where shown"
else fail "gathered only where shown" "$(grep -n 'step_over_ranks(mean_loss' lg2/train.c)"; fi
metricsof "log_every_n_steps = 3, 2 epochs: logged metrics of 2 ranks x 8 = 1 rank x 16's (the same rows)" l2 l1

# rank 0 alone writes: one log version, no private directory left behind
n=$(ls r2/logs/lightning_logs 2>/dev/null | wc -l)
if [ "$n" = 1 ] && ! ls "$tmp"/loom-rank1-* >/dev/null 2>&1 && [ "$(grep -c '^epoch 1:' r2.log)" = 1 ]; then ok "rank 0 alone prints and writes (one log version, one epoch line)"
else fail "rank 0 alone writes" "$n log versions, $(grep -c '^epoch 1:' r2.log) epoch lines, $(ls -d "$tmp"/loom-rank1-* 2>/dev/null | head -1)"; fi

# SGD with momentum, buckets of 5 kB (4 buckets started inside backward)
variant sgd1 's/batch_size = 8/batch_size = 16/; s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/' --devices=1 && ./sgd1/train --out s1 --quiet >/dev/null 2>&1
variant sgd2 's/devices = 2 }/devices = 2, bucket_cap_mb = 0.005 }/; s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/' && $MPI -np 2 ./sgd2/train --out s2 --quiet >/dev/null 2>&1
nb=$(grep -c 'ddp_grad_ready([0-9]*);' sgd2/model.c)
if [ "$nb" -ge 3 ]; then ok "bucket_cap_mb = 0.005: $nb all-reduces started inside model_backward"; else fail "buckets in backward" "$nb ddp_grad_ready calls"; fi
within "2 ranks x 8 = 1 rank x 16 (SGD momentum, 4 buckets)" s2/last.safetensors s1/last.safetensors

# callbacks on the global values: their state in the checkpoint = 1 rank × 16's (a rank's
# own total would be about half the global one)
CB='s/epochs = 1,/epochs = 2, callbacks = { ModelCheckpoint { monitor = "train\/total_epoch", mode = "max", save_top_k = 1 }, EarlyStopping { monitor = "val\/worst", patience = 5 } }, scheduler = ReduceLROnPlateau { monitor = "train\/loss", patience = 0 },/'
variant cb1 "s/batch_size = 8/batch_size = 16/; $CB" --devices=1 && ./cb1/train --out c1 --quiet >/dev/null 2>&1
variant cb2 "$CB" && $MPI -np 2 ./cb2/train --out c2 --quiet >/dev/null 2>&1
v=$(python3 - c1/last.safetensors c2/last.safetensors <<'PYEOF'
import json, struct, sys
def meta(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return {k: float(v) for k, v in json.loads(f.read(n))["__metadata__"].items() if k.startswith("callback_state_")}
a, b = meta(sys.argv[1]), meta(sys.argv[2])
used = [k for k in a if a[k] not in (0.0, -1.0) and a[k] == a[k]]
bad = [(k, a[k], b.get(k)) for k in a if abs(a[k] - b.get(k, float("nan"))) > 1e-5 * max(1, abs(a[k]))]
print("ok" if a and len(used) >= 3 and not bad else f"differ: {bad[:3]} ({len(used)} slots used)")
PYEOF
)
[ "$v" = ok ] && ok "callbacks monitor the global values (ModelCheckpoint, EarlyStopping, ReduceLROnPlateau: state = 1 rank's)" || fail "callbacks on global values" "$v"

# 4 ranks × 4
variant four 's/batch_size = 8/batch_size = 4/; s/devices = 2 }/devices = 4 }/' && $MPI -np 4 ./four/train --out r4 --quiet >/dev/null 2>&1
within "4 ranks x 4 = 1 rank x 16 (AdamW)" r4/last.safetensors r1/last.safetensors
metricsof "logged metrics: 4 ranks x 4 = 1 rank x 16" r4 r1

# accumulation 2 (no all-reduce on the first micro-batch, one on the second)
variant acc1 's/batch_size = 8/batch_size = 16, accumulate = 2/' --devices=1 && ./acc1/train --out a1 --quiet >/dev/null 2>&1
variant acc2 's/batch_size = 8/batch_size = 8, accumulate = 2/' && $MPI -np 2 ./acc2/train --out a2 >a2.log 2>&1
within "accumulate 2: 2 ranks x 8 = 1 rank x 16" a2/last.safetensors a1/last.safetensors
mb=$(grep -o 'all-reduced [0-9.]* MB' a2.log | grep -o '[0-9.]*'); mb1=$(grep -o 'all-reduced [0-9.]* MB' r2.log | grep -o '[0-9.]*')
if awk -v a="$mb" -v b="$mb1" 'BEGIN { exit !(a > 0 && a * 1.9 < b && a * 2.1 > b) }'; then ok "accumulate 2: one all-reduce per step, not per micro-batch ($mb MB vs $mb1 MB)"
else fail "no_backward_sync" "all-reduced $mb MB with accumulate 2, $mb1 MB without"; fi

# resume: stopped at step 10 and resumed on 2 ranks = uninterrupted
$MPI -np 2 ./two/train --out rr --max-steps 10 --quiet >/dev/null 2>&1
$MPI -np 2 ./two/train --out rr --resume rr/last.safetensors --max-steps 20 --quiet >/dev/null 2>&1
within "2 ranks: resumed at step 10 = uninterrupted" rr/last.safetensors r2/last.safetensors
# another global batch: refused in one line (1 rank of the same program: 8, not 16)
err=$($MPI -np 1 ./two/train --out rx --resume rr/last.safetensors 2>&1 >/dev/null); rc=$?
if [ $rc -ne 0 ] && echo "$err" | grep -q "rank 0: .*batches of 16, this program 8"; then ok "a 2-rank checkpoint on 1 rank (global batch 8): refused ($(echo "$err" | grep -m1 'rank 0'))"
else fail "another global batch refused" "rc $rc: $(echo "$err" | head -2 | tr '\n' ' ')"; fi

# faults: rank 1 SIGKILLed mid-run
rank_pid() {   # rank_pid MPIRUN_PID R: the pid of rank R
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
  done
}
fault() {   # fault NAME SIGNAL EXPECT [FLAGS]
  local name=$1 sig=$2 want=$3; shift 3
  $MPI -np 2 ./two/train --out "f$sig" --epochs 100000 --quiet "$@" >"f$sig.log" 2>&1 &
  local mp=$! p="" t0 i
  for i in $(seq 50); do sleep 0.2; p=$(rank_pid $mp 1); [ -n "$p" ] && break; done
  sleep 1
  [ -n "$p" ] && kill -"$sig" "$p"
  t0=$SECONDS
  for i in $(seq 150); do kill -0 $mp 2>/dev/null || break; sleep 0.2; done
  if kill -0 $mp 2>/dev/null; then kill -9 $mp; [ -n "$p" ] && kill -CONT "$p" 2>/dev/null; fail "$name" "still running after 30 s"; return; fi
  wait $mp; local rc=$?
  if [ -z "$p" ]; then fail "$name" "no rank 1 found"
  elif [ $rc -eq 0 ]; then fail "$name" "exited 0"
  elif ! grep -q "$want" "f$sig.log"; then fail "$name" "no line '$want': $(tr '\n' ' ' <"f$sig.log" | cut -c1-300)"
  else ok "$name (exit $rc after $((SECONDS - t0)) s: $(grep -m1 -o "$want.*" "f$sig.log" | cut -c1-100))"; fi
}
fault "a SIGKILLed rank ends the job, naming it" KILL "rank 1 .*exited on signal 9"
fault "a stopped rank ends the job after --ddp-timeout 2" STOP "rank 0: waited more than 2 s" --ddp-timeout 2
# a stop request (SIGTERM) on rank 1 alone rides in the step's gradient all-reduce (no
# collective of its own per step): both ranks stop after the same step, rank 0 writes (exit 0)
$MPI -np 2 ./two/train --out fterm --epochs 100000 --ddp-timeout 20 >fterm.log 2>&1 &
mp=$! p=""
for i in $(seq 50); do sleep 0.2; p=$(rank_pid $mp 1); [ -n "$p" ] && break; done
sleep 1
[ -n "$p" ] && kill -TERM "$p"
for i in $(seq 150); do kill -0 $mp 2>/dev/null || break; sleep 0.2; done
kill -0 $mp 2>/dev/null && kill -9 $mp
wait $mp; rc=$?
if [ $rc -eq 0 ] && [ -n "$p" ] && grep -q '^stopped by signal .*after step [0-9]*; checkpoint' fterm.log && [ -f fterm/last.safetensors ] &&
   grep -q 'int stop_requested = ddp_stop_requested();' two/train.c && ! grep -q 'ddp_any' two/train.c; then
  ok "SIGTERM to rank 1 alone: both ranks stop after the same step, exit 0 ($(grep -o 'stopped by signal.*after step [0-9]*' fterm.log)); no per-step stop all-reduce"
else fail "a stop request on one rank" "rc $rc, rank 1 '$p': $(grep -v '^epoch' fterm.log | tail -2 | tr '\n' ' ')"; fi

# refused in one line, at the spec's line
refused fsdp 's/"ddp", devices = 2 }/"fsdp", devices = 2, sharding_strategy = "HYBRID_SHARD" }/' "fsdp.lua:9: fsdp: sharding_strategy 'HYBRID_SHARD' is not implemented yet; write 'FULL_SHARD' (parameters, gradients and optimizer state sharded over the 2 ranks), 'SHARD_GRAD_OP' or 'NO_SHARD' (ddp)"

# the user's own training_step: each optimizer's gradients that its backwards changed averaged
# over the ranks before its step (model_user_step, runtime/ddp.c's ddp_average_grads)
SPEC=$ROOT/tests/ddp/gan_step.lua variant gs1 's/batch_size = 8/batch_size = 16/' --devices=1 && ./gs1/train --out g1 --quiet >/dev/null 2>&1
SPEC=$ROOT/tests/ddp/gan_step.lua variant gs2 's/x/x/' && $MPI -np 2 ./gs2/train --out g2 >g2.log 2>&1
within "training_step (GAN: d twice, then g): 2 ranks x 8 = 1 rank x 16 (10 steps)" g2/last.safetensors g1/last.safetensors
within "training_step (GAN): both Adams' state, 2 ranks x 8 = 1 rank x 16" g2/last.safetensors g1/last.safetensors optimizer.
metricsof "training_step (GAN): fabric.log's values and the loss over the ranks = 1 rank x 16's" g2 g1
# D: 577 elements, G: 816; per step d's twice and g's once (G's backward's D gradients, zeroed
# before they are read, not reduced): 10 × (2 × 577 + 816) × 4 B = 0.0788 MB
if [ "$(grep -c 'ddp_average_grads(m->grads' gs2/optim.c)" = 3 ] && grep -q 'all-reduced 0.079 MB per rank' g2.log; then
  ok "training_step: 3 averages a step (before d, d, g's steps), only the gradients they read ($(grep -o 'all-reduced [0-9.]* MB' g2.log))"
else fail "training_step's averages" "$(grep -c 'ddp_average_grads(m->grads' gs2/optim.c) calls; $(grep -o 'all-reduced.*' g2.log)"; fi
$MPI -np 2 ./gs2/train --out gr --max-steps 5 --quiet >/dev/null 2>&1
$MPI -np 2 ./gs2/train --out gr --resume gr/last.safetensors --max-steps 10 --quiet >/dev/null 2>&1
within "training_step (GAN): 2 ranks resumed at step 5 = uninterrupted (weights)" gr/last.safetensors g2/last.safetensors ""
SPEC=$ROOT/tests/ddp/acc_step.lua variant as1 's/batch_size = 8/batch_size = 16/' --devices=1 && ./as1/train --out t1 >t1.log 2>&1
SPEC=$ROOT/tests/ddp/acc_step.lua variant as2 's/x/x/' && $MPI -np 2 ./as2/train --out t2 >t2.log 2>&1
within "training_step (two backwards, one SGD step, clip by norm): 2 ranks x 8 = 1 rank x 16 (weights)" t2/last.safetensors t1/last.safetensors ""
metricsof "training_step (two backwards): logged values and validation over the ranks = 1 rank x 16's" t2 t1
# sync_batchnorm: D with a BatchNorm1d (after a Linear without bias: a bias under BatchNorm has a
# zero gradient, whose rounding noise Adam would blow up to lr a step)
BNS='s/D = Sequential { Linear(16, 32), LeakyReLU(0.2)/D = Sequential { Linear(16, 32, { bias = false }), BatchNorm1d(32), LeakyReLU(0.2)/; s/devices = 2 }/devices = 2, sync_batchnorm = true }/'
SPEC=$ROOT/tests/ddp/gan_step.lua variant gb1 "$BNS; s/batch_size = 8/batch_size = 16/" --devices=1 && ./gb1/train --out gb1r --quiet >/dev/null 2>&1
SPEC=$ROOT/tests/ddp/gan_step.lua variant gb2 "$BNS" && $MPI -np 2 ./gb2/train --out gb2r --quiet >/dev/null 2>&1
within "training_step, sync_batchnorm (BatchNorm1d in D, run 4 times a step): 2 ranks x 8 = 1 rank x 16 (weights, running statistics)" gb2r/last.safetensors gb1r/last.safetensors
SPEC=$ROOT/tests/ddp/gan_step.lua refused gs_fsdp 's/"ddp", devices = 2 }/"fsdp", devices = 2 }/' "gs_fsdp.lua:13: fsdp (FULL_SHARD) with a training_step is not supported yet (its optimizers step sharded parameters); use strategy = 'ddp' (or sharding_strategy = 'NO_SHARD'), or --devices=1"

# sync_batchnorm on tests/ddp/bn.lua: the statistics over every rank's batch
bn() {   # bn NAME SED [FLAGS]: tests/ddp/bn.lua through SED, built in NAME/
  local name=$1 script=$2; shift 2
  sed "$script" "$BN" >"$name.lua"
  "$LOOM" build "$name.lua" -o "$name" "$@" >"$name.log" 2>&1
}
BN=$ROOT/tests/ddp/bn.lua
bn bn1 's/batch_size = 4/batch_size = 8/' --devices=1 && ./bn1/train --out b1 --quiet >/dev/null 2>&1
bn bn2 's/x/x/' && $MPI -np 2 ./bn2/train --out b2 --quiet >/dev/null 2>&1
if [ -f bn1/model.c ] && ! grep -q 'ddp_sum\|synced' bn1/model.c && [ "$(grep -c 'ddp_sum(bn_d\?sums' bn2/model.c)" = 4 ]
then ok "sync_batchnorm: 4 sums over the ranks in bn2/model.c (2 BatchNorms, forward and backward); --devices=1: plain BatchNorm"
else fail "sync_batchnorm's code" "$(grep -c 'ddp_sum(' bn2/model.c 2>/dev/null) ddp_sum calls in bn2, $(grep -c 'ddp_sum' bn1/model.c 2>/dev/null) in bn1"; fi
"$LOOM" explain bn2.lua -o exb >/dev/null 2>&1
nr=$(grep -c '^| all-reduce (sum), SyncBatchNorm | `net\.[16]` BatchNorm[12]d' exb/REPORT.md)
if [ "$nr" = 4 ]; then ok "explain: the 4 SyncBatchNorm all-reduces"; else fail "explain (sync_batchnorm)" "$nr rows"; fi
within "sync_batchnorm: 2 ranks x 4 = 1 rank x 8 (BatchNorm2d + BatchNorm1d, SGD momentum, 6 steps)" b2/last.safetensors b1/last.safetensors
within "sync_batchnorm: running statistics (2 ranks x 4 = 1 rank x 8)" b2/last.safetensors b1/last.safetensors net.6.running_
# in 64-true, 4 ranks × 2: the global batch's statistics to double precision
bn bnd1 's/"32-true"/"64-true"/; s/batch_size = 4/batch_size = 8/' --devices=1 && ./bnd1/train --out bd1 --quiet >/dev/null 2>&1
bn bnd4 's/"32-true"/"64-true"/; s/batch_size = 4/batch_size = 2/; s/devices = 2,/devices = 4,/' && $MPI -np 4 ./bnd4/train --out bd4 --quiet >/dev/null 2>&1
within "sync_batchnorm, 64-true: 4 ranks x 2 = 1 rank x 8 within 1e-12 (weights and running statistics)" bd4/last.safetensors bd1/last.safetensors "" 1e-12
cp -a bn1 bna1 && bn bna1 's/batch_size = 4/batch_size = 8, accumulate = 2/' --devices=1 && ./bna1/train --out ba1 --quiet >/dev/null 2>&1
cp -a bn2 bna2 && bn bna2 's/batch_size = 4/batch_size = 4, accumulate = 2/' && $MPI -np 2 ./bna2/train --out ba2 --quiet >/dev/null 2>&1
within "sync_batchnorm, accumulate 2: 2 ranks x 4 = 1 rank x 8" ba2/last.safetensors ba1/last.safetensors
# false (PyTorch DDP's default): each rank's own statistics, no sum over the ranks (the
# generated code alone: 2 such ranks end 0.3 from 1 rank x 8's running variance)
sed 's/sync_batchnorm = true/sync_batchnorm = false/' "$BN" >bnl.lua
if "$LOOM" build bnl.lua --no-compile -o bnl >bnl.log 2>&1 && grep -q 'k_batch_norm_forward_train' bnl/model.c && ! grep -q 'ddp_sum\|synced' bnl/model.c
then ok "sync_batchnorm = false: plain BatchNorm on each rank (no sum over the ranks)"; else fail "sync_batchnorm = false" "$(head -2 bnl.log) / ddp_sum in bnl/model.c"; fi

# bf16-true and 16-true: 16-bit gradients, averaged in float and rounded once
SGD5='s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/'
half() {   # half PRECISION TOL
  local p=$1 t=$2
  variant "o$p" "$SGD5; s/\"32-true\"/\"$p\"/; s/batch_size = 8/batch_size = 16/" --devices=1 && ./"o$p"/train --out "ro$p" --max-steps 5 --quiet >/dev/null 2>&1
  variant "t$p" "$SGD5; s/\"32-true\"/\"$p\"/" && $MPI -np 2 ./"t$p"/train --out "rt$p" --max-steps 5 --quiet >/dev/null 2>&1
  if grep -q "LC_$(echo "${p%-true}" | sed 's/^16$/F16/; s/^bf16$/BF16/')" "t$p/train.c"; then within "$p: 2 ranks x 8 = 1 rank x 16 (SGD momentum, 5 steps; 16-bit gradients reduced in float)" "rt$p/last.safetensors" "ro$p/last.safetensors" "" "$t"
  else fail "$p under ddp" "no 16-bit buckets in t$p/train.c"; fi
}
half bf16-true 0.015625
half 16-true 0.001953125
