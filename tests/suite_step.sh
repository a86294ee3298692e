#!/usr/bin/env bash
# The user's own training step (train.training_step, gen/user_step.lua), on two small
# specs kept under tests/step/ (MLPs: quick to build and check, and the refusals below
# name their lines; specs/dcgan.lua and specs/vae.lua are the convolutional models to
# copy, checked against PyTorch by tests/suite_families.sh):
#  - step_CASE, step64_CASE: the DCGAN (two Adam optimizers, alternating D and G updates,
#    the generator's output detached for D, targets under no_grad) and the VAE
#    (reparameterised with the noise a batch field, KL + reconstruction) trained 3 steps
#    by tests/harness/parity.c (model_user_step) against the same step in PyTorch
#    (tests/torch/step_parity.py) on the same weights and batch: every loss and every
#    final parameter within 1e-4 (fp32) and 1e-9 (fp64) relative
#  - step_dcgan_sched, step64_dcgan_sched: the same with train.scheduler (CosineAnnealingLR
#    per step) and the two optimizers at different lrs: each optimizer its own scheduler
#    on its own lr, stepped after every training step (torch's, one per optimizer)
#  - step_dcgan_clip, step64_dcgan_clip: train.clip (by norm) with two SGD optimizers:
#    each optimizer's gradients clipped by their own norm before its step (Fabric's
#    clip_gradients(model, opt, ...)); the reference counts that the clip acted;
#    step_dcgan_clipval, step64_dcgan_clipval: the same by value (clip_val)
#  - step_dcgan_groups, step64_dcgan_groups: parameter groups in the step's optimizers (d's
#    AdamW decay_min_ndim = 2, g's groups: no decay on biases, G.2.weight's own lr) under a
#    CosineAnnealingLR per optimizer, against torch.optim's param_groups (which must move
#    the weights: the same run without them differs by more than 10x the tolerance)
#  - step_dcgan_freeze, step64_dcgan_freeze: train.freeze = { "^D%.1%." } (requires_grad =
#    False): D.1 gets no gradient and keeps its starting bytes, the rest as torch's
#  - loop_dcgan, loop64_dcgan: the generated program's own loop on that batch (Npy): its
#    step-1 checkpoint continued 2 steps by PyTorch against its step-3 checkpoint
#    (parameters and both optimizers' moments)
#  - gradcheck_step_CASE: tests/harness/gradcheck.c in 64-true on each fabric.backward
#    of the step (finite differences; a detached parameter's gradient exactly 0)
#  - train_dcgan, resume_dcgan: the generated program trains end to end, and 2 steps +
#    2 resumed end with the bytes of 4 steps (parameters and both optimizers' state)
#  - resume_randn: the same with the noise drawn by the program (randn in forward, as
#    specs/dcgan.lua, and randn_like in the step: instance noise on the real images):
#    the draws are the run's seed and step, kept in the checkpoint, so the resumed run
#    draws what the uninterrupted one did (and ends with its bytes)
#  - step16_dcgan16, step16_dcgan16_overflow: 16-mixed (Fabric's GradScaler: each backward
#    from loss × scale, each optimizer's step unscaling its own gradients, skipped on inf/nan,
#    the scale updated after it) against step_parity.py's float16 autocast and GradScaler
#    written by hand: SGD with clip, a scheduler and G.0 frozen, and d_loss × 4 so that d's float16
#    gradients overflow and the scale must back off (scales after each step equal)
#  - resume16_dcgan: the 16-mixed program (d skipping steps) 1 step + 3 resumed = 4 steps
#  - log_dcgan: fabric.log_dict / fabric.log in the step (train.log's metrics): the program,
#    started from PyTorch's weights (load_raw) on its batch, logs train/d_loss, train/d_real
#    and train/g_loss every step; each equals the value PyTorch's step computes (1e-4)
#  - steptrue_dcgan_true: bf16-true (Fabric's HalfPrecision: parameters, gradients and SGD's
#    state in bfloat16, each call of the model converting its inputs to bfloat16 and its
#    outputs to float32) against PyTorch's model .to(bfloat16) driven so (step_parity.py's
#    check_true states the tolerance)
#  - same_builtin_PREC, same_builtin_clip_PREC: bf16-true and 16-true (which PyTorch 1.13
#    cannot compute on the CPU) against the built-in step: tests/step/mlp.lua's step and
#    tests/step/mlp_builtin.lua's loss end with the same bytes, with clip by value too
#  - resume16true_dcgan: 16-true with parameter groups and clip by norm, 2 + 2 resumed
#    steps = 4 steps bit for bit
#  - anomaly_step_forward, anomaly_step_backward: detect_anomaly (fabric's or
#    --detect-anomaly) stops the step's program at the op that made NaN/Inf, with its line
#  - step_fail/*: what is refused, one line at the spec's file:line (exit 2); among them
#    several CUDA devices and fsdp's sharding (ddp on the CPU: tests/suite_ddp.sh)
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
CFLAGS="-std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh

# name | sed script applied to tests/step/BASE.lua | BASE | the expected first line after "FILE:"
fails=(
  "backward_non_scalar|s/fabric.backward(d_loss)/fabric.backward(d_real)/|dcgan|29: fabric.backward: the loss must be a scalar tensor (use a reduction such as mean), got a tensor (B, 1)"
  "undeclared_optimizer|s/opt_d:step()/fabric.optimizers.disc:step()/|dcgan|30: fabric.optimizers has no optimizer 'disc' (train.optimizers declares: d, g)"
  "step_without_colon|s/opt_d:step()/opt_d.step()/|dcgan|30: call it with a colon: fabric.optimizers.d:step()"
  "undeclared_method|s/m.D(b.image)/m:discriminate(b.image)/|dcgan|25: GAN has no submodule, parameter or attribute 'discriminate'"
  "uncalled_method|s/local mu, logvar = m:encode(b)/local h = m.enc(b.x); local mu, logvar = m.mu(h), m.logvar(h)/; s/local mu = m:encode(b); return m.dec(mu)/return m.dec(m.mu(m.enc(b.x)))/|vae|11: method 'encode' cannot be generated: it is neither forward, nor called by the training step, nor an entry point returning autoregress(...) (sampling): call it from training_step, or remove it"
  "backward_detached|s/fabric.backward(d_loss)/fabric.backward(d_loss:detach())/|dcgan|29: fabric.backward: the loss does not require a gradient (it depends on no parameter, or only through detach or no_grad): PyTorch refuses this backward too"
  "backward_twice|s/bce_with_logits(m.D(fake), ones)/bce_with_logits(d_fake, ones)/|dcgan|34: fabric.backward: this backward goes through linear (line 26) again, after the backward on line 29: PyTorch frees the graph after a backward (retain_graph); compute it again or detach"
  "weights_stepped|s/    opt_d:step()/    local early = m.D(fake)\n    opt_d:step()/; s/bce_with_logits(m.D(fake), ones)/bce_with_logits(early, ones)/|dcgan|35: fabric.backward: D.3.weight was read on line 30 and then updated by d:step() on line 31: PyTorch refuses this backward (a tensor it needs was modified in place); run the forward again after the step"
  "gradients_carried|s/    opt_d:zero_grad()/    -- (no zero_grad)/|dcgan|30: d:step() would also use the gradient of D.1.weight left from the previous training step by the backward on line 34 (PyTorch keeps gradients until zero_grad): call fabric.optimizers.d:zero_grad() before this step's backward"
  "step_not_reached|s/    fabric.backward(g_loss)/    -- (no backward)/|dcgan|35: g:step() updates G.0.weight, which no fabric.backward reached since it was last zeroed: torch.optim would skip it on the first step (its grad is None) and not later; give the optimizer only what its backward reaches"
  "loss_and_step|s/  max_steps = 3,/  max_steps = 3, loss = function(m, b) return mean(m(b)) end,/|dcgan|38: train: give a training_step or a loss, not both (a training_step's optimizers are train.optimizers)"
  "group_not_mine|s/d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/d = { Adam { lr = 2e-4, groups = { { params = \"^G%.\", lr = 0.1 } } }/|dcgan|17: Adam: groups[1] (params = \"^G%.\") matches no parameter of optimizer 'd' (its parameters: \"D\")"
  "optimizer_kinds|s/d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/d = { SGD { lr = 0.1 }/|dcgan|18: optimizer 'g' is Adam with state (exp_avg,exp_avg_sq|) but 'd' is SGD (|): a training_step's optimizers must be of one kind with the same state for now"
  "train_log|s/  max_steps = 3,/  max_steps = 3, log = function(m, b, out) return { x = mean(out) } end,/|dcgan|38: train.log with a training_step: log from the step itself, as in Fabric: fabric.log_dict({ name = value, ... }) or fabric.log(name, value)"
  "log_twice|s/    return g_loss/    fabric.log(\"g\", g_loss); fabric.log(\"g\", d_loss)\n    return g_loss/|dcgan|36: fabric.log: 'g' is logged twice in the step (first on line 36); log each name once"
  "log_not_scalar|s/    return g_loss/    fabric.log_dict({ fake = fake })\n    return g_loss/|dcgan|36: fabric.log: metric 'fake' must be a scalar float tensor (use a reduction such as mean), got a tensor (B, 1, 28, 28)"
  "log_builtin|s/    return g_loss/    fabric.log(\"loss\", g_loss)\n    return g_loss/|dcgan|36: fabric.log: metric 'loss' would log train/loss, which is a built-in metric; rename it"
  "log_reduce_unlogged|s/  max_steps = 3,/  max_steps = 3, log_reduce = { acc = \"max\" },/|dcgan|38: log_reduce names 'acc', which the training_step does not log"
  "freeze_whole_optimizer|s/  max_steps = 3,/  max_steps = 3, freeze = { \"^D%.\" },/|dcgan|17: optimizer 'd' updates only parameters train.freeze freezes (D.1.weight, D.1.bias, D.3.weight, D.3.bias): torch.optim would step nothing; freeze fewer, or remove the optimizer and its calls"
  "accumulate|s/  max_steps = 3,/  max_steps = 3, accumulate = 2,/|dcgan|38: accumulate with a training_step is not supported: the step is traced once and runs whole on every batch, so it cannot step every N batches as a Fabric step with no_backward_sync does; give batch_size = N × the micro-batch instead (the same update for a mean loss, BatchNorm aside)"
  "scheduler_plateau|s#  max_steps = 3,#  max_steps = 3, scheduler = ReduceLROnPlateau { monitor = \"val/loss\" },#|dcgan|38: ReduceLROnPlateau with a training_step is not supported yet (its lr is run state: each optimizer would need its own)"
  "cuda_ddp|s/fabric { accelerator = \"cpu\", precision = \"32-true\" }/fabric { accelerator = \"cuda\", precision = \"32-true\", strategy = \"ddp\", devices = 2 }/|dcgan|20: several devices (ddp) with a training_step is not supported yet (by the CUDA backend; the CPU backend runs ddp)"
  "fsdp|s/fabric { accelerator = \"cpu\", precision = \"32-true\" }/fabric { accelerator = \"cpu\", precision = \"32-true\", strategy = \"fsdp\", devices = 2, sharding_strategy = \"SHARD_GRAD_OP\" }/|dcgan|11: fsdp (SHARD_GRAD_OP) with a training_step is not supported yet (its optimizers step sharded parameters); use strategy = 'ddp' (or sharding_strategy = 'NO_SHARD'), or --devices=1"
  "scheduler_onecycle|s/  max_steps = 3,/  max_steps = 3, scheduler = OneCycleLR { max_lr = 0.01 },/|dcgan|38: OneCycleLR's cycle_momentum with a training_step is not supported yet (give cycle_momentum = false)"
)
plan $((16 + 2 + 2 + 1 + 2 + 1 + 1 + ${#fails[@]} + 6 + 8))

# (a), (b): parity with PyTorch
if py_lacks torch numpy; then
  for c in step_dcgan step64_dcgan step_vae step64_vae step_dcgan_sched step64_dcgan_sched step_dcgan_clip step64_dcgan_clip step_dcgan_clipval step64_dcgan_clipval step_dcgan_freeze step64_dcgan_freeze step_dcgan_groups step64_dcgan_groups loop_dcgan loop64_dcgan; do no_torch "$c" "$PY has no torch or numpy"; done
else
  rt="$tmp/rt" rt_ok=1
  parity_runtime specs/fashion_mlp.lua || rt_ok=0
  # the variants of tests/step/dcgan.lua (step_parity.py's VARIANTS says what each checks)
  sed -e 's/g = { Adam { lr = 2e-4,/g = { Adam { lr = 1e-3,/' \
      -e 's/^  max_steps = 3,/  max_steps = 3,\n  scheduler = CosineAnnealingLR { T_max = 4, eta_min = 1e-5, interval = "step" },/' \
      tests/step/dcgan.lua >"$tmp/dcgan_sched.lua"
  sed -e 's/Adam { lr = 2e-4, betas = {0.5, 0.999} }/SGD { lr = 0.05, momentum = 0.9 }/' \
      -e 's/^  max_steps = 3,/  max_steps = 3,\n  clip = { max_norm = 0.05 },/' tests/step/dcgan.lua >"$tmp/dcgan_clip.lua"
  sed 's/clip = { max_norm = 0.05 }/clip = { clip_val = 1e-3 }/' "$tmp/dcgan_clip.lua" >"$tmp/dcgan_clipval.lua"
  sed 's/^  max_steps = 3,/  max_steps = 3,\n  freeze = { "^D%.1%." },/' tests/step/dcgan.lua >"$tmp/dcgan_freeze.lua"
  sed -e 's/d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/d = { AdamW { lr = 1e-3, betas = {0.5, 0.999}, weight_decay = 0.5, decay_min_ndim = 2 }/' \
      -e 's/g = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/g = { AdamW { lr = 1e-3, betas = {0.5, 0.999}, weight_decay = 0.5,\n      groups = { { params = "%.bias$", weight_decay = 0 }, { params = "^G%.2%.weight$", lr = 5e-3 } } }/' \
      -e 's/^  max_steps = 3,/  max_steps = 3,\n  scheduler = CosineAnnealingLR { T_max = 4, eta_min = 1e-5, interval = "step" },/' \
      tests/step/dcgan.lua >"$tmp/dcgan_groups.lua"
  for c in dcgan vae dcgan_sched dcgan_clip dcgan_clipval dcgan_freeze dcgan_groups; do
    ok=$rt_ok why="the runtime does not build: $(tail -1 "$tmp/rt.gen" "$tmp/rt.cc" 2>/dev/null | tail -1)"
    src=tests/step/$c.lua; [ -f "$src" ] || src=$tmp/$c.lua
    if [ "$c" != "${c%_*}" ] && cmp -s "$src" "tests/step/${c%_*}.lua"; then ok=0 why="the sed no longer changes tests/step/${c%_*}.lua"; fi
    for p in 32 64; do
      d="$tmp/${c}_$p"
      [ $ok = 1 ] || continue
      if ! "$LOOM" build "$src" -o "$d" --precision=$p-true --devices=1 --no-compile >"$d.gen" 2>&1; then
        ok=0 why="loom build failed: $(tail -1 "$d.gen")"
      elif ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d/optim.c" "$d/model.c" "$rt"/*.o -o "$d/parity" \
             -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
        ok=0 why="the harness does not compile: $(grep -m1 error "$d.cc")"
      fi
    done
    if [ $ok = 0 ]; then fail "step_$c" "$why"; fail "step64_$c" "$why"; continue; fi
    mkdir -p "$tmp/w_$c"
    harness "step_$c" 2 "" "$PY" tests/torch/step_parity.py "$c" "$tmp/w_$c" "$tmp/${c}_32/parity" "$tmp/${c}_64/parity" 16 3
  done
  # the program's own loop (train.c around model_user_step) on that batch as an Npy source:
  # its checkpoint after 1 step continued 2 steps by PyTorch against its own after 3
  W="$tmp/w_dcgan"
  sed "s|^  data = Synthetic .*|  data = Npy { fields = { image = \"$W/image.npy\", z = \"$W/z.npy\" } },|" tests/step/dcgan.lua >"$tmp/gan_npy.lua"
  for p in 32 64; do
    name=loop$([ $p = 64 ] && echo 64)_dcgan
    d="$tmp/loop$p"
    if [ ! -s "$W/z.npy" ]; then fail "$name" "no batch (see step_dcgan)"
    elif ! "$LOOM" build "$tmp/gan_npy.lua" --precision=$p-true -o "$d" >"$d.gen" 2>&1; then fail "$name" "loom build failed: $(tail -1 "$d.gen")"
    elif ! { "$d/train" --max-steps 1 --out "$d/r1" --quiet && "$d/train" --max-steps 3 --out "$d/r3" --quiet; } >"$d.out" 2>&1; then
      fail "$name" "the program failed: $(tail -1 "$d.out")"
    else
      harness "$name" 1 "" "$PY" tests/torch/step_parity.py loop dcgan "$d/r1/last.safetensors" "$d/r3/last.safetensors" "$W" $p
    fi
  done
fi

# 16-mixed: Fabric's GradScaler through the step (step_parity.py's check16, F16_VARIANTS)
D16=(-e 's/Adam { lr = 2e-4, betas = {0.5, 0.999} }/SGD { lr = 0.05, momentum = 0.9 }/'
     -e 's/^  max_steps = 3,/  max_steps = 3,\n  clip = { max_norm = 0.05 },\n  scheduler = CosineAnnealingLR { T_max = 4, eta_min = 1e-5, interval = "step" },\n  freeze = { "^G%.0%." },/')
sed "${D16[@]}" tests/step/dcgan.lua >"$tmp/dcgan16.lua"
sed -e 's/d = { SGD { lr = 0.05, momentum = 0.9 }/d = { SGD { lr = 1e-3, momentum = 0.9 }/' -e '/^  clip = /d' -e '/^  scheduler = /d' -e '/^  freeze = /d' \
    -e 's/local d_loss = bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)/local d_loss = (bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)) * 4/' \
    "$tmp/dcgan16.lua" >"$tmp/dcgan16_overflow.lua"
for c in dcgan16 dcgan16_overflow; do
  d="$tmp/${c}_16"
  if py_lacks torch numpy; then no_torch "step16_$c" "$PY has no torch or numpy"
  elif [ $rt_ok = 0 ]; then fail "step16_$c" "the runtime does not build"
  elif [ "$(grep -c 'SGD\|clip = \|scheduler = \|freeze = \|) \* 4$' "$tmp/$c.lua")" != "$([ $c = dcgan16 ] && echo 5 || echo 3)" ]; then
    fail "step16_$c" "the sed no longer changes tests/step/dcgan.lua as step_parity.py's F16_VARIANTS expects"
  elif ! "$LOOM" build "$tmp/$c.lua" -o "$d" --precision=16-mixed --devices=1 --no-compile >"$d.gen" 2>&1; then
    fail "step16_$c" "loom build failed: $(tail -1 "$d.gen")"
  elif ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d/optim.c" "$d/model.c" "$rt"/*.o -o "$d/parity" -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
    fail "step16_$c" "the harness does not compile: $(grep -m1 error "$d.cc")"
  else
    mkdir -p "$tmp/w16_$c"
    harness "step16_$c" 1 "" "$PY" tests/torch/step_parity.py f16 "$c" "$tmp/w16_$c" "$d/parity" 16 4
  fi
done
# fabric.log_dict / fabric.log in the step: metrics.csv's train/NAME against PyTorch's values
W="$tmp/w_dcgan"
sed -e "s|^  data = Synthetic .*|  data = Npy { fields = { image = \"$W/image.npy\", z = \"$W/z.npy\" } },|" \
    -e "s|^  max_steps = 3,|  max_steps = 3, log_every_n_steps = 1, load_raw = { path = \"$W/weights.safetensors\" },|" \
    -e 's/^    fabric.backward(d_loss)/    fabric.log_dict({ d_loss = d_loss, d_real = mean(d_real) })\n    fabric.backward(d_loss)/' \
    -e 's/^    return g_loss/    fabric.log("g_loss", g_loss)\n    return g_loss/' tests/step/dcgan.lua >"$tmp/gan_log.lua"
d="$tmp/log"
if py_lacks torch numpy; then no_torch log_dcgan "$PY has no torch or numpy"
elif [ ! -s "$W/z.npy" ]; then fail log_dcgan "no batch (see step_dcgan)"
elif [ "$(grep -c 'fabric.log\|load_raw' "$tmp/gan_log.lua")" != 3 ]; then fail log_dcgan "tests/step/dcgan.lua no longer has the lines this test rewrites"
elif ! "$LOOM" build "$tmp/gan_log.lua" -o "$d" >"$d.gen" 2>&1; then fail log_dcgan "loom build failed: $(tail -1 "$d.gen")"
elif ! "$d/train" --max-steps 3 --out "$d/r" --quiet >"$d.out" 2>&1; then fail log_dcgan "the program failed: $(tail -1 "$d.out")"
else
  harness log_dcgan 1 "" "$PY" tests/torch/step_parity.py logged "$d/r/logs/lightning_logs/version_0/metrics.csv" "$W" 3
fi

# (c): finite differences in 64-true, each backward of the step
for c in dcgan vae; do
  d="$tmp/${c}_gc"
  if ! "$LOOM" build "tests/step/$c.lua" -o "$d" --precision=64-true --devices=1 --no-compile >"$d.gen" 2>&1; then
    fail "gradcheck_step_$c" "loom build failed: $(tail -1 "$d.gen")"; continue
  fi
  if ! cc $CFLAGS -I"$d" tests/harness/gradcheck.c "$d/model.c" -o "$d/gradcheck" -ldnnl -lopenblas -lm >"$d.cc" 2>&1; then
    fail "gradcheck_step_$c" "the harness does not compile: $(grep -m1 error "$d.cc")"; continue
  fi
  if "$d/gradcheck" 4 6 1 1e-5 1e-6 >"$d.out" 2>&1; then ok "gradcheck_step_$c"
  else fail "gradcheck_step_$c" "$(grep -c '^FAIL' "$d.out") tensors out of tolerance"; fi
  sed 's/^/#   /' "$d.out"
done

# the generated program trains end to end (Synthetic data) and writes its checkpoint
d="$tmp/train"
if ! "$LOOM" build tests/step/dcgan.lua -o "$d" >"$d.gen" 2>&1; then
  fail train_dcgan "loom build failed: $(tail -1 "$d.gen")"
elif ! "$d/train" --max-steps 3 --out "$d/run" --quiet >"$d.out" 2>&1; then
  fail train_dcgan "the program failed: $(tail -1 "$d.out")"
elif [ ! -s "$d/run/last.safetensors" ] || ! grep -q "train/loss" "$d"/run/logs/lightning_logs/version_0/metrics.csv; then
  fail train_dcgan "no checkpoint or no train/loss in metrics.csv"
else
  ok train_dcgan
fi
# --resume continues bit-exactly: 2 steps + 2 resumed = 4 steps (parameters, optimizer state)
same_tensors() {   # A.safetensors B.safetensors: every tensor's bytes equal (the metadata may differ)
  "$PY" - "$1" "$2" <<'EOF2'
import json, struct, sys
def tensors(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    h = json.loads(blob[8:8 + n]); h.pop("__metadata__", None)
    return {k: blob[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
diff = sorted(k for k in a if a[k] != b.get(k)) + sorted(set(b) - set(a))
print("%d tensors; differ: %s" % (len(a), ", ".join(diff[:5]) or "none"))
sys.exit(1 if diff else 0)
EOF2
}
resumes() {   # NAME DIR: DIR/train's 4 steps equal 2, resumed to 4, bit for bit
  local name=$1 d=$2 msg
  if ! { "$d/train" --max-steps 4 --out "$d/full" --quiet && "$d/train" --max-steps 2 --out "$d/half" --quiet &&
         "$d/train" --resume "$d/half/last.safetensors" --max-steps 4 --out "$d/resumed" --quiet; } >"$d.resume" 2>&1; then
    fail "$name" "a run failed: $(tail -1 "$d.resume")"
  elif msg=$(same_tensors "$d/full/last.safetensors" "$d/resumed/last.safetensors"); then ok "$name"; echo "# $msg"
  else fail "$name" "$msg"; fi
}
if [ ! -x "$d/train" ]; then fail resume_dcgan "no program (see train_dcgan)"
else resumes resume_dcgan "$d"; fi

# the same with the program's own draws (randn in forward, randn_like in the step)
sed -e 's|inputs = { z = Tensor{16} },|inputs = { image = Tensor{1, 28, 28} },|' \
    -e 's|return reshape(m.G(b.z), b.z:size(0), 1, 28, 28)|return reshape(m.G(randn(b.image:size(0), 16)), b.image:size(0), 1, 28, 28)|' \
    -e 's|, z = Tensor{16, dist = "normal"} }|}|' \
    -e 's|local d_real = m.D(b.image)|local d_real = m.D(b.image + randn_like(b.image) * 0.1)|' tests/step/dcgan.lua >"$tmp/gan_randn.lua"
d="$tmp/randn"
if [ "$(grep -c 'randn' "$tmp/gan_randn.lua")" != 2 ] || grep -q 'b\.z' "$tmp/gan_randn.lua"; then
  fail resume_randn "tests/step/dcgan.lua no longer has the lines this test rewrites"
elif ! "$LOOM" build "$tmp/gan_randn.lua" -o "$d" >"$d.gen" 2>&1; then fail resume_randn "loom build failed: $(tail -1 "$d.gen")"
else resumes resume_randn "$d"; fi

# the program's loop at 16-mixed resumes bit-exactly: the scale, its growth tracker and
# each optimizer's own count of updates (d skips its first steps, g does not: Adam's bias
# correction reads the count) are in the checkpoint
sed -e 's/precision = "32-true"/precision = "16-mixed"/' \
    -e 's/local d_loss = bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)/local d_loss = (bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)) * 4/' \
    tests/step/dcgan.lua >"$tmp/gan16.lua"
d="$tmp/resume16"
if ! "$LOOM" build "$tmp/gan16.lua" -o "$d" >"$d.gen" 2>&1; then fail resume16_dcgan "loom build failed: $(tail -1 "$d.gen")"
elif ! { "$d/train" --max-steps 4 --out "$d/full" && "$d/train" --max-steps 1 --out "$d/half" --quiet &&
         "$d/train" --resume "$d/half/last.safetensors" --max-steps 4 --out "$d/resumed" --quiet; } >"$d.resume" 2>&1; then
  fail resume16_dcgan "a run failed: $(tail -1 "$d.resume")"
elif ! grep -q "^loss scale [0-9]*; [1-9][0-9]* optimizer steps skipped" "$d.resume"; then
  fail resume16_dcgan "the run skipped no step (so this checks nothing of the scaler): $(grep -m1 '^loss scale' "$d.resume")"
elif msg=$(same_tensors "$d/full/last.safetensors" "$d/resumed/last.safetensors"); then ok resume16_dcgan; echo "# $msg; $(grep -m1 '^loss scale' "$d.resume")"
else fail resume16_dcgan "$msg"; fi

# bf16-true: Fabric's HalfPrecision through the step (step_parity.py's check_true): the
# parameters, gradients and SGD's state in bfloat16, each call of the model converting its
# inputs to bfloat16 and its outputs to float32, the losses float32, no GradScaler
sed 's/Adam { lr = 2e-4, betas = {0.5, 0.999} }/SGD { lr = 0.05 }/' tests/step/dcgan.lua >"$tmp/dcgan_true.lua"
d="$tmp/dcgan_true_bf16"
if py_lacks torch numpy; then no_torch steptrue_dcgan_true "$PY has no torch or numpy"
elif [ $rt_ok = 0 ]; then fail steptrue_dcgan_true "the runtime does not build"
elif [ "$(grep -c 'SGD { lr = 0.05 }' "$tmp/dcgan_true.lua")" != 2 ]; then
  fail steptrue_dcgan_true "the sed no longer changes tests/step/dcgan.lua as step_parity.py's TRUE_VARIANTS expects"
elif ! "$LOOM" build "$tmp/dcgan_true.lua" -o "$d" --precision=bf16-true --devices=1 --no-compile >"$d.gen" 2>&1; then
  fail steptrue_dcgan_true "loom build failed: $(tail -1 "$d.gen")"
elif ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d/optim.c" "$d/model.c" "$rt"/*.o -o "$d/parity" -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
  fail steptrue_dcgan_true "the harness does not compile: $(grep -m1 error "$d.cc")"
else
  mkdir -p "$tmp/wtrue"
  harness steptrue_dcgan_true 1 "" "$PY" tests/torch/step_parity.py true dcgan_true "$tmp/wtrue" "$d/parity" 16 3
fi

# bf16-true and 16-true against the built-in step (16-true has no PyTorch reference: 1.13
# has no float16 CPU linear): tests/step/mlp.lua's training_step (zero_grad, backward,
# step) and tests/step/mlp_builtin.lua's loss, each program's own loop for 6 steps, end
# with the same bytes (parameters, Adam's moments); and so with train.clip by value (the
# 16-bit gradients widened, clipped, rounded back), which must change them
for p in bf16-true 16-true; do
  for v in "" _clip; do
    name=same_builtin${v}_$p ok=1
    for s in mlp mlp_builtin; do
      f="$tmp/$s$v.lua"
      if [ -z "$v" ]; then cp "tests/step/$s.lua" "$f"; else sed 's/^  max_steps = 6,/  max_steps = 6,\n  clip = { clip_val = 0.05 },/' "tests/step/$s.lua" >"$f"; fi
      d="$tmp/$s$v-$p"
      if ! "$LOOM" build "$f" --precision=$p -o "$d" >"$d.gen" 2>&1; then fail "$name" "loom build of $s failed: $(tail -1 "$d.gen")"; ok=0; break
      elif ! "$d/train" --out "$d/run" --quiet >"$d.out" 2>&1; then fail "$name" "$s's program failed: $(tail -1 "$d.out")"; ok=0; break; fi
    done
    [ $ok = 1 ] || continue
    if ! msg=$(same_tensors "$tmp/mlp$v-$p/run/last.safetensors" "$tmp/mlp_builtin$v-$p/run/last.safetensors"); then fail "$name" "$msg"
    elif [ -n "$v" ] && same_tensors "$tmp/mlp$v-$p/run/last.safetensors" "$tmp/mlp-$p/run/last.safetensors" >/dev/null; then
      fail "$name" "the clip changed nothing (so this checks nothing of it)"
    else ok "$name"; echo "# $msg"; fi
  done
done

# 16-true's loop resumes bit for bit: two optimizers with parameter groups (16-bit
# parameters and gradients, float32 moments), clip by norm over 16-bit gradients
sed -e 's/precision = "32-true"/precision = "16-true"/' \
    -e 's/d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/d = { AdamW { lr = 1e-3, betas = {0.5, 0.999}, weight_decay = 0.5, decay_min_ndim = 2 }/' \
    -e 's/g = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/g = { AdamW { lr = 1e-3, betas = {0.5, 0.999}, weight_decay = 0.5, groups = { { params = "%.bias$", weight_decay = 0 } } }/' \
    -e 's/^  max_steps = 3,/  max_steps = 3, clip = { max_norm = 0.05 },/' tests/step/dcgan.lua >"$tmp/gan16true.lua"
d="$tmp/resume16true"
if [ "$(grep -c '16-true\|AdamW\|max_norm' "$tmp/gan16true.lua")" != 4 ]; then fail resume16true_dcgan "tests/step/dcgan.lua no longer has the lines this test rewrites"
elif ! "$LOOM" build "$tmp/gan16true.lua" -o "$d" >"$d.gen" 2>&1; then fail resume16true_dcgan "loom build failed: $(tail -1 "$d.gen")"
else resumes resume16true_dcgan "$d"; fi

# detect_anomaly in the step: every op's output (forward) and the gradients it adds to
# (backward) checked for NaN/Inf, as the built-in step does; the program stops at the
# first with the spec's line.  The backward case trains on without the check.
anomaly() {   # NAME SED FLAGS WANT: the first line of stderr, after "FILE:"
  local name=$1 f="$tmp/$1.lua" d="$tmp/$1" err
  sed "$2" tests/step/dcgan.lua >"$f"
  if ! "$LOOM" build "$f" $3 -o "$d" >"$d.gen" 2>&1; then fail "$name" "loom build failed: $(tail -1 "$d.gen")"; return; fi
  err=$("$d/train" --max-steps 2 --out "$d/run" --quiet 2>&1 >/dev/null); local rc=$?
  if [ $rc -ne 1 ] || [ "${err%%$'\n'*}" != "$f:$4" ]; then fail "$name" "expected exit 1 and '$f:$4', got ($rc) ${err%%$'\n'*}"; return; fi
  if [ -z "$3" ]; then ok "$name"; return; fi
  "$LOOM" build "$f" -o "$d.off" >"$d.gen" 2>&1 && "$d.off/train" --max-steps 2 --out "$d.off/run" --quiet >/dev/null 2>&1 \
    && ok "$name" || fail "$name" "without detect_anomaly the program does not train on (so this case does not show the check)"
}
anomaly anomaly_step_forward 's/local d_real = m.D(b.image)/local d_real = m.D(log(b.image - 2))/; s/precision = "32-true"/precision = "32-true", detect_anomaly = true/' "" \
  "25: error: detect_anomaly: forward of log made NaN (micro-batch 0): its output (B, 1, 28, 28) has 12544 non-finite of 12544 values, the first at 0"
anomaly anomaly_step_backward 's/local g_loss = bce_with_logits(m.D(fake), ones)/local g_loss = bce_with_logits(m.D(fake), ones) + mean(sqrt(m.D(fake) * 0))/' --detect-anomaly \
  "33: error: detect_anomaly: backward of sqrt made Inf (micro-batch 0): the gradient of input 1 (B, 1) has 16 non-finite of 16 values, the first at 0"

# (d): refusals, one line at the spec's line
mkdir -p "$tmp/fail"
for c in "${fails[@]}"; do
  IFS='|' read -r name script base want <<<"$c"
  f="$tmp/fail/$name.lua"
  sed "$script" "tests/step/$base.lua" >"$f"
  err=$("$LOOM" build "$f" -o "$tmp/fail/$name" --no-compile 2>&1 >/dev/null); rc=$?
  first=${err%%$'\n'*}
  if [ $rc -ne 2 ]; then fail "step_fail/$name" "expected exit code 2, got $rc: $first"
  elif grep -qiE 'traceback|internal error' <<<"$err"; then fail "step_fail/$name" "a traceback: $first"
  elif [ "$first" != "$f:$want" ]; then fail "step_fail/$name" "expected '$f:$want' got '$first'"
  else ok "step_fail/$name"; fi
done
# the CUDA backend generates a training_step at each precision it runs (tests/suite_ops_emu.sh
# runs them under the emulator against the CPU program) and refuses 64-true as it refuses it
# for any spec
bad=""
for p in 32-true bf16-mixed 16-mixed bf16-true 16-true; do
  "$LOOM" build tests/step/dcgan.lua --accelerator=cuda --precision=$p -o "$tmp/cuda_$p" --no-compile >"$tmp/cuda_$p.log" 2>&1 ||
    bad="$bad $p: $(tail -n 1 "$tmp/cuda_$p.log")"
done
grep -q "model_user_scaler_read" "$tmp/cuda_16-mixed/model.cu" 2>/dev/null || bad="$bad 16-mixed: no GradScaler in the step"
err=$("$LOOM" build tests/step/dcgan.lua --accelerator=cuda --precision=64-true -o "$tmp/cuda" --no-compile 2>&1 >/dev/null); rc=$?
want="loom: --precision=64-true is not supported by the CUDA backend yet (32-true, bf16-mixed, 16-mixed, bf16-true, 16-true)"
if [ $rc -ne 2 ] || [ "${err%%$'\n'*}" != "$want" ]; then bad="$bad 64-true: ($rc) ${err%%$'\n'*}"; fi
if [ -z "$bad" ]; then ok step_fail/cuda; else fail step_fail/cuda "$bad"; fi
# and a scheduler or clip, which the CPU backend runs
sed 's/^  max_steps = 3,/  max_steps = 3, clip = { clip_val = 0.1 },/' tests/step/dcgan.lua >"$tmp/cuda_clip.lua"
err=$("$LOOM" build "$tmp/cuda_clip.lua" --accelerator=cuda -o "$tmp/cuda" --no-compile 2>&1 >/dev/null); rc=$?
want="$tmp/cuda_clip.lua:38: clip (fabric.clip_gradients) with a training_step is not supported yet (by the CUDA backend; the CPU backend runs it)"
if [ $rc -eq 2 ] && [ "${err%%$'\n'*}" = "$want" ]; then ok step_fail/cuda_clip; else fail step_fail/cuda_clip "got ($rc) ${err%%$'\n'*}"; fi
sed 's/^  max_steps = 3,/  max_steps = 3, scheduler = StepLR { step_size = 1, gamma = 0.5 },/' tests/step/dcgan.lua >"$tmp/cuda_sched.lua"
err=$("$LOOM" build "$tmp/cuda_sched.lua" --accelerator=cuda -o "$tmp/cuda" --no-compile 2>&1 >/dev/null); rc=$?
want="$tmp/cuda_sched.lua:38: a scheduler with a training_step is not supported yet (by the CUDA backend; the CPU backend runs it)"
if [ $rc -eq 2 ] && [ "${err%%$'\n'*}" = "$want" ]; then ok step_fail/cuda_scheduler; else fail step_fail/cuda_scheduler "got ($rc) ${err%%$'\n'*}"; fi
# freeze runs there (tests/suite_ops_emu.sh's gan_step_skips): the frozen parameters in no
# optimizer's runs
sed 's/^  max_steps = 3,/  max_steps = 3, freeze = { "^D%.1%." },/' tests/step/dcgan.lua >"$tmp/cuda_freeze.lua"
err=$("$LOOM" build "$tmp/cuda_freeze.lua" --accelerator=cuda -o "$tmp/cuda_freeze" --no-compile 2>&1 >/dev/null); rc=$?
if [ $rc -eq 0 ] && ! grep -q "D\.1\.weight" <(grep -A3 "^static void zero_grad_d" "$tmp/cuda_freeze/model.cu"); then ok step_fail/cuda_freeze
else fail step_fail/cuda_freeze "got ($rc) ${err%%$'\n'*}"; fi
sed 's/^    return g_loss/    fabric.log("g", g_loss)\n    return g_loss/' tests/step/dcgan.lua >"$tmp/cuda_log.lua"
err=$("$LOOM" build "$tmp/cuda_log.lua" --accelerator=cuda -o "$tmp/cuda" --no-compile 2>&1 >/dev/null); rc=$?
want="$tmp/cuda_log.lua:36: fabric.log in a training_step is not supported yet by the CUDA backend (the CPU backend runs it)"
if [ $rc -eq 2 ] && [ "${err%%$'\n'*}" = "$want" ]; then ok step_fail/cuda_log; else fail step_fail/cuda_log "got ($rc) ${err%%$'\n'*}"; fi
sed 's/d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }/d = { Adam { lr = 2e-4, groups = { { params = "%.bias$", lr = 1e-3 } } }/' tests/step/dcgan.lua >"$tmp/cuda_groups.lua"
err=$("$LOOM" build "$tmp/cuda_groups.lua" --accelerator=cuda -o "$tmp/cuda" --no-compile 2>&1 >/dev/null); rc=$?
want="$tmp/cuda_groups.lua:17: optimizer 'd': parameter groups (groups, decay_min_ndim) in a training_step are not supported by the CUDA backend yet (the CPU backend runs them)"
if [ $rc -eq 2 ] && [ "${err%%$'\n'*}" = "$want" ]; then ok step_fail/cuda_groups; else fail step_fail/cuda_groups "got ($rc) ${err%%$'\n'*}"; fi
