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
#  - refused in one line: cpu_offload, auto_wrap_policy under SHARD_GRAD_OP, an fsdp
#    setting under ddp, clipping by the inf-norm.
# sharding_strategy = "FULL_SHARD" (the default: strategy = "fsdp" alone) — the parameters
# sharded too, each unit all-gathered around its forward and backward, its gradients
# reduce-scattered once final:
#  - one unit (mlp.lua's one top-level child), 2 ranks × 8 = 1 rank × 16 (weights and
#    optimizer state) = DDP's; ModuleWrapPolicy { "Linear" } (3 units) on 2 and 4 ranks,
#    and its logged metrics;
#    SGD with groups, accumulation and clipping (by norm, and by value over the shard);
#    16-mixed = DDP's; three top-level
#    children as three units (the default policy); resumed at step 10 = uninterrupted;
#  - the bytes each rank holds: the parameters' shard is 1/N, plus the largest unit; the
#    gradients: the largest unit's buffer (+ its part a reduce-scatter brings), each unit's
#    added into the rank's shard on every micro-batch; units whose backwards overlap
#    (one read again after another) get a buffer each, and equal 1 rank's;
#  - the model.c gathers, --dump=strategy and explain's per-unit rows;
#  - the test set on the best checkpoint (fashion_mlp.lua, when Fashion-MNIST is there) = DDP's;
#  - bf16-true = ddp's bf16-true (weights, optimizer state), resumed = uninterrupted;
#  - refused in one line: HYBRID_SHARD, a policy class the model lacks, an op that reads
#    two units' parameters at once, the inf-norm;
#  - 16-true: float16 parameter shards beside float32 optimizer state = SHARD_GRAD_OP's
#    16-true, resumed = uninterrupted.
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
plan 51
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
refused offload "$FSDP; s/devices = 2,/devices = 2, cpu_offload = true,/" "offload.lua:9: fsdp: cpu_offload = true is moot on the CPU backend (the parameters are in host memory already); leave it out"
refused wrap "$FSDP; s/devices = 2,/devices = 2, auto_wrap_policy = { \"Linear\" },/" "wrap.lua:9: fsdp: auto_wrap_policy chooses FULL_SHARD's units; SHARD_GRAD_OP gathers no unit (the parameters stay whole); leave it out"
refused clip "$FSDP; s/epochs = 1,/epochs = 1, clip = { max_norm = 1, norm_type = math.huge },/" "clip.lua:19: fsdp: clipping by the inf-norm is not implemented yet (a maximum over every rank's shard); use a p-norm, clip_val, ddp, or --devices=1"
refused underddp 's/devices = 2 }/devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/' "underddp.lua:9: sharding_strategy is an fsdp setting; this spec's strategy is 'ddp'"

# ---- FULL_SHARD ----
FULL='s/"ddp", devices = 2 }/"fsdp", devices = 2 }/'
WRAP='s/"ddp", devices = 2 }/"fsdp", devices = 2, auto_wrap_policy = { "Linear" } }/'
# strategy = "fsdp" alone: FULL_SHARD, mlp.lua's one top-level child (net) as one unit
variant full "$FULL" && $MPI -np 2 ./full/train --out fu --quiet >/dev/null 2>&1
within "FULL_SHARD (strategy = 'fsdp' alone, 1 unit): 2 ranks x 8 = 1 rank x 16 (AdamW)" fu/last.safetensors r1/last.safetensors
within "FULL_SHARD: the optimizer state gathered from 2 shards = the 1-rank run's" fu/last.safetensors r1/last.safetensors optimizer.
within "FULL_SHARD 2 ranks = ddp 2 ranks (AdamW)" fu/last.safetensors d2/last.safetensors
# ModuleWrapPolicy { "Linear" }: three units, each gathered before its forward and its backward
variant fw "$WRAP" && $MPI -np 2 ./fw/train --out fwr >fw.log 2>&1
within "FULL_SHARD, 3 units (Linear): 2 ranks x 8 = 1 rank x 16" fwr/last.safetensors r1/last.safetensors
md=$(python3 "$ROOT/tests/ddp/metrics_diff.py" fwr/logs/lightning_logs/version_0/metrics.csv r1/logs/lightning_logs/version_0/metrics.csv 2>&1)
if [ -n "$md" ] && awk -v d="${md%% *}" -v t=$TOL 'BEGIN { exit !(d <= t) }'; then ok "FULL_SHARD, 3 units: logged metrics (train loss, train.log's, validation) = 1 rank x 16's ($md)"
else fail "FULL_SHARD logged metrics" "$md"; fi
ng=$(grep -c 'fsdp_gather_unit([0-2]);' fw/model.c); nr=$(grep -c 'fsdp_unit_grads_ready([0-2]);' fw/model.c)
if [ "$ng" = 6 ] && [ "$nr" = 3 ] && ! grep -q fsdp_gather_params fw/train.c; then ok "model.c gathers each of 3 units before its forward and its backward and reduce-scatters its gradients in backward"
else fail "model.c's gathers" "$ng gathers, $nr reduce-scatters"; fi
variant fw4 "$WRAP; s/devices = 2,/devices = 4,/; s/batch_size = 8/batch_size = 4/" && $MPI -np 4 ./fw4/train --out fw4r >fw4.log 2>&1
within "FULL_SHARD, 3 units: 4 ranks x 4 = 1 rank x 16" fw4r/last.safetensors r1/last.safetensors
variant fsgd "$WRAP; $SGD; s/batch_size = 8/batch_size = 8, accumulate = 2/" && $MPI -np 2 ./fsgd/train --out fs2 --quiet >/dev/null 2>&1
within "FULL_SHARD SGD momentum, 2 parameter groups, accumulate 2, clipped to norm 0.5: 2 ranks x 8 = 1 rank x 16" fs2/last.safetensors s1/last.safetensors
variant fh "$WRAP; s/\"32-true\"/\"16-mixed\"/" && $MPI -np 2 ./fh/train --out fhr --quiet >/dev/null 2>&1
within "FULL_SHARD 16-mixed (bf16 casts of gathered units, the scaler over the shards) = ddp 2 ranks" fhr/last.safetensors hdr/last.safetensors
# bf16-true: the units' bf16 parameters gathered as they are, bf16 gradients
# reduce-scattered in float (as ddp's all-reduce); 16-true is refused (below)
B16="$WRAP; s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/; s/\"32-true\"/\"bf16-true\"/"
variant fb "$B16" && $MPI -np 2 ./fb/train --out fbr --max-steps 5 --quiet >/dev/null 2>&1
variant db "s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/; s/\"32-true\"/\"bf16-true\"/" && $MPI -np 2 ./db/train --out dbr --max-steps 5 --quiet >/dev/null 2>&1
within "FULL_SHARD bf16-true, 3 units = ddp 2 ranks bf16-true (SGD momentum, 5 steps: weights)" fbr/last.safetensors dbr/last.safetensors
within "FULL_SHARD bf16-true = ddp 2 ranks bf16-true (the optimizer state gathered from 2 shards)" fbr/last.safetensors dbr/last.safetensors optimizer.
$MPI -np 2 ./fb/train --out fbs --max-steps 3 --quiet >/dev/null 2>&1
$MPI -np 2 ./fb/train --out fbs --resume fbs/last.safetensors --max-steps 5 --quiet >/dev/null 2>&1
within "FULL_SHARD bf16-true: resumed at step 3 = uninterrupted" fbs/last.safetensors fbr/last.safetensors
# the default policy on a model with three top-level children: three units
KIDS='s/  net = Sequential.*/  l1 = Linear(32, 64), l2 = Linear(64, 64), l3 = Linear(64, 5),/; s/return m.net(b.x)/return m.l3(tanh(m.l2(relu(m.l1(b.x)))))/'
variant kids1 "$KIDS; s/batch_size = 8/batch_size = 16/" --devices=1 && ./kids1/train --out k1 --quiet >/dev/null 2>&1
variant kids2 "$KIDS; $FULL" && $MPI -np 2 ./kids2/train --out k2 --quiet >/dev/null 2>&1
if grep -q '// unit 2, l3: 2 parameters' kids2/train.c; then within "FULL_SHARD, default policy: 3 top-level children as 3 units, 2 ranks x 8 = 1 rank x 16" k2/last.safetensors k1/last.safetensors
else fail "the default policy's units" "$(grep -c '// unit [0-9]' kids2/train.c) units in kids2/train.c"; fi
# clipping by value over the gradient shard (its own buffer under FULL_SHARD)
CV='s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05 }, clip = { clip_val = 0.01 }/'
variant cv1 "$CV; s/batch_size = 8/batch_size = 16/" --devices=1 && ./cv1/train --out cv1r --quiet >/dev/null 2>&1
variant cv2 "$WRAP; $CV" && $MPI -np 2 ./cv2/train --out cv2r --quiet >/dev/null 2>&1
within "FULL_SHARD SGD clipped by value 0.01 (over the shard): 2 ranks x 8 = 1 rank x 16" cv2r/last.safetensors cv1r/last.safetensors
# unit l1 read again after l2 (its bias added to l2's output): its backward spans l2's, so
# the two units' gradients are written in two buffers (gen/plan.lua's slots)
NEST="$KIDS; s/return m.l3(tanh(m.l2(relu(m.l1(b.x)))))/return m.l3(tanh(m.l2(relu(m.l1(b.x))) + m.l1.bias))/"
variant nest1 "$NEST; s/batch_size = 8/batch_size = 16/" --devices=1 && ./nest1/train --out n1 --quiet >/dev/null 2>&1
variant nest2 "$NEST; $FULL" && $MPI -np 2 ./nest2/train --out n2 --quiet >/dev/null 2>&1
if grep -q '2 buffers of the largest unit' nest2/train.c; then within "FULL_SHARD, overlapping units' backwards (2 gradient buffers): 2 ranks x 8 = 1 rank x 16" n2/last.safetensors n1/last.safetensors
else fail "overlapping units' gradient buffers" "$(grep -n 'buffer' nest2/train.c | head -2)"; fi
# resumed from the full checkpoint at step 10 (the parameters re-sharded from it)
$MPI -np 2 ./fw/train --out fwrr --max-steps 10 --quiet >/dev/null 2>&1
$MPI -np 2 ./fw/train --out fwrr --resume fwrr/last.safetensors --max-steps 20 --quiet >/dev/null 2>&1
within "FULL_SHARD 2 ranks: resumed at step 10 = uninterrupted (weights)" fwrr/last.safetensors fwr/last.safetensors
within "FULL_SHARD 2 ranks: resumed at step 10 = uninterrupted (optimizer state)" fwrr/last.safetensors fwr/last.safetensors optimizer.
# the bytes each rank holds: the parameters' shard, the gradient shard and the state are 1/N
$MPI -np 1 ./fw/train --out fm1 --max-steps 1 >fm1.log 2>&1
pshard() { grep -o 'parameters [0-9]* B (shard [0-9]* B + the largest unit gathered [0-9]* B)' "$1"; }
p1=$(pshard fm1.log | grep -o 'shard [0-9]*' | grep -o '[0-9]*'); p2=$(pshard fw.log | grep -o 'shard [0-9]*' | grep -o '[0-9]*'); p4=$(pshard fw4.log | grep -o 'shard [0-9]*' | grep -o '[0-9]*')
u2=$(pshard fw.log | grep -o 'gathered [0-9]*' | grep -o '[0-9]*')
s1=$(sharded fm1.log); s2=$(sharded fw.log); s4=$(sharded fw4.log)
if [ -n "$p1" ] && [ -n "$p2" ] && [ -n "$p4" ] && [ -n "$s4" ] && awk -v a="$p1" -v b="$p2" -v c="$p4" -v u="$u2" -v x="$s1" -v y="$s2" -v z="$s4" \
   'BEGIN { exit !(b * 2 >= a && b * 2 < a + 16 && c * 4 >= a && c * 4 < a + 32 && u < a && y * 2 >= x && y * 2 < x + 48 && z * 4 >= x && z * 4 < x + 96) }'; then
  ok "FULL_SHARD per rank: parameters' shard $p1 B on 1 rank, $p2 B on 2, $p4 B on 4, + the largest unit $u2 B; all sharded: $s1, $s2, $s4 B (parameters+gradients+optimizer: $(total fm1.log), $(total fw.log), $(total fw4.log) B)"
else fail "FULL_SHARD bytes 1/N" "params shard '$p1' '$p2' '$p4', unit '$u2', sharded '$s1' '$s2' '$s4'"; fi
# the gradients: the largest unit's buffer and the part of a unit a reduce-scatter brings,
# not the whole arena (the parameters' whole size on 1 rank: shard $p1)
gbuf() { grep -o 'gradients [0-9]* B (the units' "$1" | grep -o '[0-9]*'; }
g2=$(gbuf fw.log); g4=$(gbuf fw4.log)
if [ -n "$g2" ] && [ -n "$g4" ] && awk -v g="$g2" -v h="$g4" -v u="$u2" -v b="$p2" -v c="$p4" 'BEGIN { exit !(g >= u && g <= u + b && h <= g && h <= u + c) }'
then ok "FULL_SHARD per rank: gradient buffers $g2 B on 2 ranks, $g4 B on 4 (largest unit $u2 B; the whole arena: $p1 B)"
else fail "FULL_SHARD gradient buffers" "'$g2' '$g4' (unit '$u2', whole '$p1')"; fi
"$LOOM" explain fw.lua -o exw >/dev/null 2>&1
if [ "$(grep -c '^| all-gather | unit [0-2] (`net\.[024]`): 2 tensors' exw/REPORT.md)" = 3 ] && grep -q '^| reduce-scatter (avg) | unit 2 (`net.4`).s gradients | in backward' exw/REPORT.md
then ok "explain (FULL_SHARD): an all-gather and a reduce-scatter row per unit"; else fail "explain (FULL_SHARD)" "$(sed -n '/## Collectives/,$p' exw/REPORT.md | head -10 | tr '\n' ' ')"; fi
d3=$("$LOOM" build fw.lua --dump=strategy 2>&1)
if echo "$d3" | grep -q '^strategy: fsdp FULL_SHARD, 2 ranks over MPI; parameters, gradients and optimizer state in 2 flat shards; units: ModuleWrapPolicy { Linear }'
then ok "--dump=strategy: FULL_SHARD's units"; else fail "--dump=strategy (FULL_SHARD)" "$d3"; fi
refused hybrid "$FULL; s/devices = 2 }/devices = 2, sharding_strategy = \"HYBRID_SHARD\" }/" "hybrid.lua:9: fsdp: sharding_strategy 'HYBRID_SHARD' is not implemented yet; write 'FULL_SHARD' (parameters, gradients and optimizer state sharded over the 2 ranks), 'SHARD_GRAD_OP' or 'NO_SHARD' (ddp)"
refused noclass 's/"ddp", devices = 2 }/"fsdp", devices = 2, auto_wrap_policy = { "Linar" } }/' "noclass.lua:9: fsdp: auto_wrap_policy: the model has no module of class 'Linar' (did you mean 'Linear'?) (its classes: DdpMLP, Linear, ReLU, Sequential, Tanh)"
refused twounits "$KIDS; $FULL; s/m.l1(b.x)))))/m.l1(b.x) + (m.l1.bias + m.l2.bias)))))/" "twounits.lua:6: fsdp FULL_SHARD: add reads parameters of two units at once, l1.bias (unit 'l1') and l2.bias (unit 'l2') (a weight tied across units); make them one unit (auto_wrap_policy) or use sharding_strategy = 'SHARD_GRAD_OP'"
# 16-true: float16 parameter shards (gathered and kept in their own type) beside the
# float32 optimizer state's; = SHARD_GRAD_OP's 16-true and 1 rank's, resumed = uninterrupted
variant fh16 "$WRAP; s/AdamW { lr = 1e-2, weight_decay = 0.01 }/SGD { lr = 0.05, momentum = 0.9 }/; s/\"32-true\"/\"16-true\"/" && $MPI -np 2 ./fh16/train --out fh16r --max-steps 5 --quiet >/dev/null 2>&1
if grep -q 'fsdp_set_units' fh16/train.c; then within "FULL_SHARD 16-true (3 units) = SHARD_GRAD_OP 16-true, 2 ranks (SGD momentum, 5 steps: weights)" fh16r/last.safetensors f16r/last.safetensors
else fail "FULL_SHARD 16-true" "not a FULL_SHARD build: $(head -2 fh16.log | tr '\n' ' ')"; fi
within "FULL_SHARD 16-true: the float32 optimizer state = 1 rank's (within 2^-9)" fh16r/last.safetensors o16r/last.safetensors optimizer. 0.001953125
$MPI -np 2 ./fh16/train --out fh16s --max-steps 3 --quiet >/dev/null 2>&1
$MPI -np 2 ./fh16/train --out fh16s --resume fh16s/last.safetensors --max-steps 5 --quiet >/dev/null 2>&1
within "FULL_SHARD 16-true: resumed at step 3 = uninterrupted" fh16s/last.safetensors fh16r/last.safetensors
refused fclip "$FULL; s/epochs = 1,/epochs = 1, clip = { max_norm = 1, norm_type = math.huge },/" "fclip.lua:19: fsdp: clipping by the inf-norm is not implemented yet (a maximum over every rank's shard); use a p-norm, clip_val, ddp, or --devices=1"
# the test set after training, with the best checkpoint (read whole on rank 0, each rank
# keeping its shard): fashion_mlp.lua's test metrics equal DDP's
FASHION=/usr/share/datasets/fashion-mnist
if [ -f "$FASHION/t10k-images-idx3-ubyte.gz" ] || [ -f "$FASHION/t10k-images-idx3-ubyte" ]; then
  BEST='s/epochs = 5,/epochs = 1, callbacks = { ModelCheckpoint { monitor = "val\/loss", save_top_k = 1 } },/; s/  loggers.*//'
  sed "$BEST; s/precision = \"32-true\" }/precision = \"32-true\", strategy = \"fsdp\", devices = 2, auto_wrap_policy = { \"Linear\" } }/" "$ROOT/specs/fashion_mlp.lua" >tf.lua
  sed "$BEST; s/precision = \"32-true\" }/precision = \"32-true\", strategy = \"ddp\", devices = 2 }/" "$ROOT/specs/fashion_mlp.lua" >td.lua
  cp -a f2 tf && "$LOOM" build tf.lua -o tf >tf.log 2>&1 && $MPI -np 2 ./tf/train --data "$FASHION" --out tfr --max-steps 8 >tfo.log 2>&1
  cp -a two td && "$LOOM" build td.lua -o td >td.log 2>&1 && $MPI -np 2 ./td/train --data "$FASHION" --out tdr --max-steps 8 >tdo.log 2>&1
  a=$(grep -o 'test/loss [0-9.]*  test/acc [0-9.]*' tfo.log); b=$(grep -o 'test/loss [0-9.]*  test/acc [0-9.]*' tdo.log)
  if [ -n "$a" ] && [ "$a" = "$b" ] && grep -q '^testing tfr/epoch=0-step=8.safetensors' tfo.log; then ok "FULL_SHARD: the test set on the best checkpoint = ddp's ($a)"
  else fail "FULL_SHARD test set" "fsdp '$a' ($(tail -2 tfo.log | tr '\n' ' ')), ddp '$b'"; fi
else
  skip "FULL_SHARD test set on the best checkpoint" "no Fashion-MNIST at $FASHION"
fi
