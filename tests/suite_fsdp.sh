#!/usr/bin/env bash
# FSDP on the CPU over MPI (issue 13; gen/strategy.lua, runtime/ddp.c's fsdp_*):
# sharding_strategy = "SHARD_GRAD_OP" — gradients reduce-scattered after backward, each
# rank's optimizer updating its flat shard with its shard of the state, the parameters
# all-gathered after the step.  On tests/ddp/mlp.lua (fp32, one epoch of 20 steps):
#  - 2 ranks × 8 end with the weights of 1 rank × 16 (AdamW), and the checkpoint's
#    optimizer state (gathered from the shards on rank 0) is the 1-rank run's; the same
#    weights as DDP's 2 ranks; 4 ranks × 4; SGD with momentum, parameter groups,
#    gradient accumulation 2 and clipping by norm (over every rank's shard); all within
#    1e-5 relative; 16-mixed (the loss scaler over the shards) = DDP's;
#  - the bytes each rank holds (the program's startup line): the sharded part is 1/N;
#  - a 2-rank run stopped at step 10 and resumed from its full checkpoint ends as the
#    uninterrupted one;
#  - 16-true (float16 parameters and gradients, float32 optimizer state): 2 ranks × 8 =
#    1 rank × 16 after 5 SGD-momentum steps within 2^-9 (weights and the gathered state),
#    and a run resumed at step 3 ends as the uninterrupted one;
#  - sync_batchnorm (tests/ddp/bn.lua): 2 ranks × 4 = 1 rank × 8 within 1e-5;
#  - --dump=strategy names the shards, and NO_SHARD is ddp;
#  - refused in one line: FULL_SHARD (FSDPStrategy's default), cpu_offload, auto_wrap_policy,
#    an fsdp setting under ddp, clipping by the inf-norm.
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 23
BASE=f2
. tests/ddp/lib.sh
FSDP='s/"ddp", devices = 2 }/"fsdp", devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/'

# 1 rank × 16 and 2 ranks × 8, AdamW
variant one 's/batch_size = 8/batch_size = 16/' --devices=1 && ./one/train --out r1 --quiet >/dev/null 2>&1
variant f2 "$FSDP" && $MPI -np 2 ./f2/train --out f2r >f2.log 2>&1
within "fsdp 2 ranks x 8 = 1 rank x 16 (AdamW, 20 steps)" f2r/last.safetensors r1/last.safetensors
within "the checkpoint's optimizer state, gathered from 2 shards = the 1-rank run's" f2r/last.safetensors r1/last.safetensors optimizer.
cp -a f2 two && "$LOOM" build "$SPEC" -o two >two.log 2>&1 && $MPI -np 2 ./two/train --out d2 --quiet >/dev/null 2>&1
within "fsdp 2 ranks = ddp 2 ranks (AdamW)" f2r/last.safetensors d2/last.safetensors
v1=$(grep -o 'val/loss [0-9.]*' f2.log | tail -1)
if [ -n "$v1" ] && grep -q "fsdp: 2 ranks; reduce-scattered and all-gathered" f2.log; then ok "rank 0 reports the collectives' bytes ($v1)"; else fail "the summary line" "$(tail -3 f2.log | tr '\n' ' ')"; fi

# 4 ranks × 4
variant f4 "$FSDP; s/devices = 2,/devices = 4,/; s/batch_size = 8/batch_size = 4/" && $MPI -np 4 ./f4/train --out f4r >f4.log 2>&1
within "fsdp 4 ranks x 4 = 1 rank x 16 (AdamW)" f4r/last.safetensors r1/last.safetensors

# SGD with momentum, two parameter groups, accumulation 2
SGD='s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9, groups = { { params = "^net%.2%.", lr = 0.02 } } }, clip = { max_norm = 0.5 }/'
variant sgd1 "$SGD; s/batch_size = 8/batch_size = 16, accumulate = 2/" --devices=1 && ./sgd1/train --out s1 --quiet >/dev/null 2>&1
variant sgd2 "$FSDP; $SGD; s/batch_size = 8/batch_size = 8, accumulate = 2/" && $MPI -np 2 ./sgd2/train --out s2 --quiet >/dev/null 2>&1
if grep -q 'runs\[r\].begin > lo' sgd2/optim.c; then within "fsdp SGD momentum, 2 parameter groups, accumulate 2, clipped to norm 0.5: 2 ranks x 8 = 1 rank x 16" s2/last.safetensors s1/last.safetensors
else fail "fsdp SGD with groups" "no parameter groups in sgd2/optim.c"; fi

# 16-mixed: the loss scaler unscales and checks this rank's shard, and a step is skipped
# when any rank found an inf (the steps skipped differ from 1 rank × 16's, whose
# gradients are half as large: the comparison is with DDP's 2 ranks)
variant h2 "$FSDP; s/\"32-true\"/\"16-mixed\"/" && $MPI -np 2 ./h2/train --out h2r --quiet >/dev/null 2>&1
cp -a two hd && sed 's/"32-true"/"16-mixed"/' "$SPEC" >hd.lua && "$LOOM" build hd.lua -o hd >hd.log 2>&1 && $MPI -np 2 ./hd/train --out hdr --quiet >/dev/null 2>&1
if grep -q 'return ddp_any(found_inf)' h2/optim.c; then within "16-mixed: fsdp 2 ranks = ddp 2 ranks (the scaler's check over every rank's shard)" h2r/last.safetensors hdr/last.safetensors
else fail "16-mixed under fsdp" "no ddp_any(found_inf) in h2/optim.c"; fi

# the bytes each rank holds: the sharded part (gradient shard + optimizer state) is 1/N
$MPI -np 1 ./f2/train --out m1 --max-steps 1 >m1.log 2>&1
sharded() { grep -o 'of which sharded [0-9]* B' "$1" | grep -o '[0-9]*'; }
total() { grep -o 'optimizer [0-9]* B' "$1" | grep -o '[0-9]*'; }
s1=$(sharded m1.log); s2=$(sharded f2.log); s4=$(sharded f4.log)
if [ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s4" ] && awk -v a="$s1" -v b="$s2" -v c="$s4" 'BEGIN { exit !(b * 2 >= a && b * 2 < a + 16 && c * 4 >= a && c * 4 < a + 32) }'; then
  ok "per rank, gradient shard + optimizer state: $s1 B on 1 rank, $s2 B on 2, $s4 B on 4 (parameters+gradients+optimizer: $(total m1.log), $(total f2.log), $(total f4.log) B)"
else fail "sharded bytes 1/N" "1 rank '$s1', 2 ranks '$s2', 4 ranks '$s4'"; fi

# resume from the full checkpoint: stopped at step 10 and resumed on 2 ranks = uninterrupted
$MPI -np 2 ./f2/train --out rr --max-steps 10 --quiet >/dev/null 2>&1
$MPI -np 2 ./f2/train --out rr --resume rr/last.safetensors --max-steps 20 --quiet >/dev/null 2>&1
within "fsdp 2 ranks: resumed at step 10 = uninterrupted (weights)" rr/last.safetensors f2r/last.safetensors
within "fsdp 2 ranks: resumed at step 10 = uninterrupted (optimizer state)" rr/last.safetensors f2r/last.safetensors optimizer.

# 16-true: float16 gradients reduce-scattered in float; the optimizer state's float32
# shards (fsdp_state_dtype) gathered for the checkpoint and kept on resume
H16="$FSDP; s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/; s/\"32-true\"/\"16-true\"/"
variant o16 "$H16; s/batch_size = 8/batch_size = 16/" --devices=1 && ./o16/train --out o16r --max-steps 5 --quiet >/dev/null 2>&1
variant f16 "$H16" && $MPI -np 2 ./f16/train --out f16r --max-steps 5 --quiet >/dev/null 2>&1
within "16-true: fsdp 2 ranks x 8 = 1 rank x 16 (SGD momentum, 5 steps, within 2^-9)" f16r/last.safetensors o16r/last.safetensors "" 0.001953125
within "16-true: the float32 optimizer state gathered from 2 shards = 1 rank's (within 2^-9)" f16r/last.safetensors o16r/last.safetensors optimizer. 0.001953125
$MPI -np 2 ./f16/train --out f16s --max-steps 3 --quiet >/dev/null 2>&1
$MPI -np 2 ./f16/train --out f16s --resume f16s/last.safetensors --max-steps 5 --quiet >/dev/null 2>&1
within "16-true: fsdp resumed at step 3 = uninterrupted (weights)" f16s/last.safetensors f16r/last.safetensors
within "16-true: fsdp resumed at step 3 = uninterrupted (the float32 state's shards)" f16s/last.safetensors f16r/last.safetensors optimizer.

# sync_batchnorm under fsdp (tests/ddp/bn.lua)
sed 's/batch_size = 4/batch_size = 8/' "$ROOT/tests/ddp/bn.lua" >bn1.lua && "$LOOM" build bn1.lua -o bn1 --devices=1 >bn1.log 2>&1 && ./bn1/train --out b1 --quiet >/dev/null 2>&1
sed 's/"ddp", devices = 2,/"fsdp", devices = 2, sharding_strategy = "SHARD_GRAD_OP",/' "$ROOT/tests/ddp/bn.lua" >bnf.lua && cp -a f2 bnf && "$LOOM" build bnf.lua -o bnf >bnf.log 2>&1 && $MPI -np 2 ./bnf/train --out bf --quiet >/dev/null 2>&1
within "sync_batchnorm: fsdp 2 ranks x 4 = 1 rank x 8 (weights and running statistics)" bf/last.safetensors b1/last.safetensors

# loom explain's Collectives section: what each strategy sends, and when
"$LOOM" explain f2.lua -o exf >/dev/null 2>&1
if grep -q '^## Collectives' exf/REPORT.md && grep -q '^| reduce-scatter (avg) | every gradient' exf/REPORT.md && grep -q '^| all-gather | every parameter' exf/REPORT.md && grep -q '^| 512 | ' exf/REPORT.md
then ok "explain (fsdp): the reduce-scatter, the all-gather and the predicted time on 512 ranks"; else fail "explain (fsdp)" "$(sed -n '/## Collectives/,$p' exf/REPORT.md | head -12 | tr '\n' ' ')"; fi
sed 's/devices = 2 }/devices = 2, bucket_cap_mb = 0.005 }/' "$SPEC" >dx.lua && "$LOOM" explain dx.lua -o exd >/dev/null 2>&1
nb=$(grep -c '^| all-reduce (avg), bucket [0-9]* |.*in backward, after' exd/REPORT.md)
if [ "$nb" -ge 3 ]; then ok "explain (ddp, bucket_cap_mb = 0.005): $nb buckets, each with the backward op that starts it"; else fail "explain (ddp)" "$nb bucket rows"; fi

# --dump=strategy: SHARD_GRAD_OP's shards; NO_SHARD is ddp (as PyTorch's FSDP without sharding)
d1=$("$LOOM" build f2.lua --dump=strategy 2>&1); sed 's/"ddp", devices = 2 }/"fsdp", devices = 2, sharding_strategy = "NO_SHARD" }/' "$SPEC" >ns.lua
d2=$("$LOOM" build ns.lua --dump=strategy 2>&1)
if echo "$d1" | grep -q '^strategy: fsdp SHARD_GRAD_OP, 2 ranks over MPI; gradients and optimizer state in 2 flat shards' && echo "$d2" | grep -q '^strategy: fsdp NO_SHARD (as ddp), 2 ranks over MPI; gradient buckets'
then ok "--dump=strategy: SHARD_GRAD_OP in 2 shards; NO_SHARD as ddp"; else fail "--dump=strategy" "$d1 / $d2"; fi

# refused in one line, at the spec's line
refused full 's/"ddp"/"fsdp"/' "full.lua:9: fsdp: sharding_strategy 'FULL_SHARD' (FSDPStrategy's default) is not implemented yet; write sharding_strategy = 'SHARD_GRAD_OP' (gradients and optimizer state sharded over the 2 ranks) or 'NO_SHARD' (ddp)"
refused offload "$FSDP; s/devices = 2,/devices = 2, cpu_offload = true,/" "offload.lua:9: fsdp: cpu_offload = true is moot on the CPU backend (the parameters are in host memory already); leave it out"
refused wrap "$FSDP; s/devices = 2,/devices = 2, auto_wrap_policy = { \"Linear\" },/" "wrap.lua:9: fsdp: auto_wrap_policy is not implemented yet: SHARD_GRAD_OP shards the model as one flat unit; leave it out"
refused clip "$FSDP; s/epochs = 1,/epochs = 1, clip = { max_norm = 1, norm_type = math.huge },/" "clip.lua:19: fsdp: clipping by the inf-norm is not implemented yet (a maximum over every rank's shard); use a p-norm, clip_val, ddp, or --devices=1"
refused underddp 's/devices = 2 }/devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/' "underddp.lua:9: sharding_strategy is an fsdp setting; this spec's strategy is 'ddp'"
