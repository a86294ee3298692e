#!/usr/bin/env bash
# Learning-rate schedules (and OneCycleLR's momentum cycling) of generated programs
# against torch.optim.lr_scheduler, step by step; ReduceLROnPlateau stepped on the
# metrics a generated program logged, and its state across --resume.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cases=(steplr_epoch onecycle_cos onecycle_linear3 warmupcosine exponential_epoch multistep_step linear_step cosine_step
       lambda_epoch lambda_step sequential_step sequential_epoch)
plateau_cases=(plateau_min_rel plateau_max_abs plateau_train_loss)
. "$(dirname "$0")/tap.sh"   # plan, harness
plan $((${#cases[@]} + ${#plateau_cases[@]} + 3))
# the CUDA program reads ReduceLROnPlateau's lr from the run state (tests/suite_ops_emu.sh
# runs one under the emulator against the CPU program)
cat >"$work/plateau_cuda.lua" <<'LUA'
model "P" { inputs = { x = Tensor{4} }, fc = Linear(4, 1), forward = function(m, b) return m.fc(b.x) end }
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{1} } }, batch_size = 8, loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.1 }, epochs = 2,
  scheduler = ReduceLROnPlateau { factor = 0.5 },
}
LUA
err=$("$LOOM" build "$work/plateau_cuda.lua" --accelerator=cuda --no-compile -o "$work/plateau_cuda" 2>&1 >/dev/null); rc=$?
if [ $rc -eq 0 ] && grep -q "lr = rs.cb\[0\];   // ReduceLROnPlateau's current lr" "$work/plateau_cuda/train.c"; then
  echo "ok schedule plateau_cuda"
else echo "not ok schedule plateau_cuda: exit $rc: ${err%%$'\n'*}"; fi
if py_lacks torch; then
  for c in "${cases[@]}" "${plateau_cases[@]}" plateau_resume group_lr_columns; do no_torch "schedule $c" "$PY has no torch"; done; exit 0
fi
STEPS=40; PER_EPOCH=8
for c in "${cases[@]}"; do
  case $c in
    steplr_epoch) sched='StepLR { step_size = 2, gamma = 0.5 }' ;;
    onecycle_cos) sched="OneCycleLR { max_lr = 0.2, total_steps = $STEPS }" ;;
    onecycle_linear3) sched="OneCycleLR { max_lr = 0.2, total_steps = $STEPS, anneal_strategy = 'linear', three_phase = true, pct_start = 0.25 }" ;;
    warmupcosine) sched="WarmupCosine { warmup_steps = 5 }" ;;
    exponential_epoch) sched="ExponentialLR { gamma = 0.7 }" ;;
    multistep_step) sched="MultiStepLR { milestones = {3, 10, 25}, gamma = 0.3, interval = 'step' }" ;;
    linear_step) sched="LinearLR { start_factor = 0.25, end_factor = 0.9, total_iters = 12, interval = 'step' }" ;;
    cosine_step) sched="CosineAnnealingLR { T_max = 15, eta_min = 0.01, interval = 'step' }" ;;
    lambda_epoch) sched='LambdaLR { lr_lambda = "epoch < 2 and (epoch + 1) / 2 or 0.8 ^ (epoch - 2) * math.cos(epoch / 10)" }' ;;
    lambda_step) sched='LambdaLR { lr_lambda = "1 / math.sqrt(math.max(step, 4)) + step % 7 // 3 * 0.05 - (-step) ^ 2 / 1e4", interval = "step" }' ;;
    sequential_step) sched="SequentialLR { schedulers = { LinearLR { start_factor = 0.2, total_iters = 6, interval = 'step' },
      CosineAnnealingLR { T_max = 10, eta_min = 0.02, interval = 'step' }, MultiStepLR { milestones = {3, 9}, gamma = 0.5, interval = 'step' } },
      milestones = {5, 18} }" ;;
    sequential_epoch) sched="SequentialLR { schedulers = { LambdaLR { lr_lambda = '(epoch + 1) / 2' }, StepLR { step_size = 2, gamma = 0.5 } },
      milestones = {2} }" ;;
  esac
  cat >"$work/$c.lua" <<LUA
model "S" { inputs = { x = Tensor{2} }, fc = Linear(2, 1), forward = function(m, b) return m.fc(b.x) end }
train {
  data = Synthetic { fields = { x = Tensor{2}, y = Tensor{1} } },
  batch_size = 4, loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9 }, scheduler = $sched, epochs = 5,
}
LUA
  if ! "$LOOM" build "$work/$c.lua" --no-compile -o "$work/$c" >"$work/$c.log" 2>&1; then
    echo "not ok schedule $c: $(tail -2 "$work/$c.log")"; continue
  fi
  d="$work/$c"
  if ! cc -std=c11 -O2 -fopenmp -I"$d" tests/harness/schedule.c "$d/optim.c" "$d/model.c" -o "$d/schedule" -ldnnl -lopenblas -lm 2>"$work/$c.cc"; then
    echo "not ok schedule $c: harness does not compile: $(grep -m1 error "$work/$c.cc")"; continue
  fi
  # the program's learning rates into the reference, which prints one result; either
  # one failing (pipefail) without a "not ok" is one
  compare() { set -o pipefail; "$d/schedule" $STEPS $PER_EPOCH $STEPS | OPENBLAS_NUM_THREADS=1 "$PY" tests/torch/schedule.py $c $STEPS $PER_EPOCH; }
  harness "schedule $c" 1 "s/^ok/ok schedule $c/; s/^not ok/not ok schedule $c/" compare
done

# ReduceLROnPlateau steps on a metric: the generated program is run (12 epochs of 8
# steps), and torch's scheduler is stepped on the metrics it logged (tests/torch/plateau.py)
plateau_spec() {   # NAME SETTINGS
  cat >"$work/$1.lua" <<LUA
model "P" { inputs = { x = Tensor{4} }, fc = Linear(4, 1), forward = function(m, b) return m.fc(b.x) end }
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{1} }, size = 64, val_size = 32 },
  batch_size = 8, loss = function(m, b) return mse(m(b), b.y) end, log_every_n_steps = 8,
  optimizer = SGD { lr = 0.1, momentum = 0.9 }, scheduler = ReduceLROnPlateau { $2 }, epochs = 12,
}
LUA
}
declare -A PLATEAU=(
  [plateau_min_rel]='factor = 0.5, patience = 1, threshold = 0.01, cooldown = 1, min_lr = 0.004'
  [plateau_max_abs]='mode = "max", factor = 0.3, patience = 0, threshold = 0.001, threshold_mode = "abs", eps = 0.02'
  [plateau_train_loss]='monitor = "train/loss", factor = 0.7, patience = 0, threshold = 0.2'
)
for c in "${plateau_cases[@]}"; do
  plateau_spec "$c" "${PLATEAU[$c]}"
  if ! "$LOOM" build "$work/$c.lua" --accelerator=cpu -o "$work/$c" >"$work/$c.log" 2>&1; then
    echo "not ok schedule $c: $(tail -2 "$work/$c.log")"; continue
  fi
  if ! "$work/$c/train" --quiet --out "$work/$c/run" >"$work/$c.run" 2>&1; then
    echo "not ok schedule $c: the program failed: $(tail -1 "$work/$c.run")"; continue
  fi
  plateau() { "$PY" tests/torch/plateau.py "$(find "$work/$c/run" -name metrics.csv)" "${PLATEAU[$c]}"; }
  harness "schedule $c" 1 "s/^ok/ok schedule $c/; s/^not ok/not ok schedule $c/" plateau
done
# a resumed run follows the same lr sequence: 5 epochs, then --resume to 12, against 12 at once
c=plateau_min_rel
if [ -x "$work/$c/train" ] && "$work/$c/train" --quiet --epochs 5 --out "$work/resumed" >"$work/resume1.log" 2>&1 &&
   "$work/$c/train" --quiet --resume "$work/resumed/last.safetensors" --epochs 12 --out "$work/resumed" >"$work/resume2.log" 2>&1; then
  rows() { "$PY" - "$@" <<'PY'
import csv, sys
for path in sys.argv[1:]:
    for r in csv.DictReader(open(path)):
        if int(r["epoch"]) >= 5 and (r["lr-SGD"] or r["val/loss"]):
            print(r["epoch"], r["step"], r["lr-SGD"], r["val/loss"])
PY
  }
  a=$(rows $(find "$work/$c/run" -name metrics.csv))
  b=$(rows $(find "$work/resumed" -name metrics.csv | sort))
  if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "ok schedule plateau_resume: epochs 5-11 log the same lr and val/loss after --resume"
  else echo "not ok schedule plateau_resume: the resumed run differs: $(diff <(echo "$a") <(echo "$b") | head -3 | tr '\n' ' ')"; fi
else
  echo "not ok schedule plateau_resume: $(tail -1 "$work/resume1.log" "$work/resume2.log" 2>/dev/null | tr '\n' ' ')"
fi

# parameter groups log each group's lr as Lightning's LearningRateMonitor names them
# (lr-SGD/pg1, /pg2), against torch's param_groups under the same schedule
cat >"$work/groups.lua" <<'LUA'
model "G" { inputs = { x = Tensor{4} }, fc = Linear(4, 1), forward = function(m, b) return m.fc(b.x) end }
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{1} }, size = 64, val_size = 32 },
  batch_size = 8, loss = function(m, b) return mse(m(b), b.y) end, log_every_n_steps = 8,
  optimizer = SGD { lr = 0.1, momentum = 0.9, groups = { { params = "bias$", lr = 0.02 } } },
  scheduler = CosineAnnealingLR { T_max = 6, eta_min = 0.01 }, epochs = 8,
}
LUA
if "$LOOM" build "$work/groups.lua" --accelerator=cpu -o "$work/groups" >"$work/groups.log" 2>&1 &&
   "$work/groups/train" --quiet --out "$work/groups/run" >>"$work/groups.log" 2>&1; then
  check_groups() { "$PY" - "$(find "$work/groups/run" -name metrics.csv)" <<'PY'
import csv, sys
import torch
w, b = torch.nn.Parameter(torch.zeros(1, 4)), torch.nn.Parameter(torch.zeros(1))
opt = torch.optim.SGD([{"params": [b], "lr": 0.02}, {"params": [w]}], lr=0.1, momentum=0.9)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.01)
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["lr-SGD"]]
worst = 0.0
for r in rows:   # one row an epoch (log_every_n_steps = the steps of an epoch)
    for i, g in enumerate(opt.param_groups):
        worst = max(worst, abs(float(r["lr-SGD/pg%d" % (i + 1)]) - g["lr"]) / g["lr"])
    sched.step()
print(("ok" if worst < 1e-12 and len(rows) == 8 else "not ok:") + " %d rows, worst relative difference %.1e" % (len(rows), worst))
PY
  }
  harness "schedule group_lr_columns" 1 "s/^ok/ok schedule group_lr_columns/; s/^not ok/not ok schedule group_lr_columns/" check_groups
else
  echo "not ok schedule group_lr_columns: $(tail -1 "$work/groups.log")"
fi
exit 0
