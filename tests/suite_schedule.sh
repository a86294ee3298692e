#!/usr/bin/env bash
# Learning-rate schedules (and OneCycleLR's momentum cycling) of generated programs
# against torch.optim.lr_scheduler, step by step.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cases=(steplr_epoch onecycle_cos onecycle_linear3 warmupcosine exponential_epoch multistep_step linear_step cosine_step)
. "$(dirname "$0")/tap.sh"   # plan, harness
plan ${#cases[@]}
if py_lacks torch; then
  for c in "${cases[@]}"; do no_torch "schedule $c" "$PY has no torch"; done; exit 0
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
exit 0
