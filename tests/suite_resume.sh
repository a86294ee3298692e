#!/usr/bin/env bash
# Resume across a SIGKILL is bit-exact for every learning-rate schedule loom has, with
# gradient accumulation (7 batches an epoch under accumulate = 3: the epoch's last step
# takes the leftover micro-batch), dropout, and at 16-mixed and bf16-mixed.  Each case:
#  - a run of 4 epochs, uninterrupted;
#  - the same run killed with SIGKILL (tests/harness/kill_at_rename.c, LD_PRELOAD) at its
#    3rd checkpoint rename: epoch 3 trained, its checkpoint written to a temporary but
#    not renamed, so the newest checkpoint is epoch 2's;
#  - that run resumed from its newest checkpoint in the same --out, with no flags (the
#    checkpoint carries the plan): its last.safetensors is byte-identical to the
#    uninterrupted run's, and its metrics.csv rows are those of the uninterrupted run
#    after the checkpoint's step, value for value (the same text).
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh   # plan, ok, fail
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# NAME PRECISION OPTIMIZER SCHEDULER (every scheduler of gen/spec.lua, and none; both
# mixed precisions with a loss scale or bf16 casts around the dropout)
CASES=(
  "constant|32-true|SGD { lr = 0.05, momentum = 0.9 }|"
  "steplr_epoch|32-true|SGD { lr = 0.05, momentum = 0.9 }|StepLR { step_size = 1, gamma = 0.5 }"
  "steplr_step_16mixed|16-mixed|AdamW { lr = 0.01 }|StepLR { step_size = 2, gamma = 0.7, interval = \"step\" }"
  "warmupcosine|32-true|AdamW { lr = 0.01 }|WarmupCosine { warmup_steps = 3, min_lr = 1e-4 }"
  "onecycle_bf16mixed|bf16-mixed|SGD { lr = 0.05, momentum = 0.9 }|OneCycleLR { max_lr = 0.05 }"
  "onecycle_linear_3phase_16mixed|16-mixed|AdamW { lr = 0.01 }|OneCycleLR { max_lr = 0.02, anneal_strategy = \"linear\", three_phase = true }"
  "plateau_16mixed|16-mixed|SGD { lr = 0.05, momentum = 0.9 }|ReduceLROnPlateau { factor = 0.5, patience = 0, threshold = 0.5 }"
  "sequential_lambda|32-true|AdamW { lr = 0.01 }|SequentialLR { schedulers = { LambdaLR { lr_lambda = \"(step + 1) / 4\", interval = \"step\" }, ExponentialLR { gamma = 0.8, interval = \"step\" } }, milestones = {3} }"
)
plan ${#CASES[@]}

cc -Wall -Wextra -Werror -shared -fPIC tests/harness/kill_at_rename.c -o "$work/kill_at_rename.so" -ldl ||
  { for c in "${CASES[@]}"; do fail "resume across SIGKILL: ${c%%|*}" "tests/harness/kill_at_rename.c did not compile"; done; exit 0; }

# metrics.csv rows (the empty cells left out) of run A after step S == run B's, as text;
# train/throughput is a wall-clock rate, so it is left out too
same_metrics() {   # A_CSV B_CSV S
  "$PY" - "$@" <<'PYEOF'
import csv, sys
a, b, s = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = lambda p: [{k: v for k, v in r.items() if v != "" and k != "train/throughput"} for r in csv.DictReader(open(p))]
ra = [r for r in rows(a) if int(r["step"]) > s]
rb = rows(b)
if not rb: print("the resumed run logged nothing")
elif ra != rb:
    i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
    print(f"row {i} after step {s}: uninterrupted {ra[i] if i < len(ra) else None}, resumed {rb[i] if i < len(rb) else None}")
else: print("ok")
PYEOF
}
meta() {   # FILE KEY: a checkpoint's metadata value
  "$PY" -c 'import json, struct, sys; b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; print(json.loads(b[8:8 + n])["__metadata__"][sys.argv[2]])' "$@"
}

# the programs, built side by side at -O1 (LOOM_CFLAGS; a third of -O3's compile time:
# what is tested is the state a checkpoint carries, not the compiler's code)
for c in "${CASES[@]}"; do
  IFS='|' read -r name prec optim sched <<<"$c"
  d="$work/$name"
  mkdir -p "$d"
  cat >"$d/spec.lua" <<LUA
model "Resume" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 16), ReLU(), Dropout(0.3), Linear(16, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu", precision = "$prec" }
train {
  data = Synthetic { fields = { x = Tensor{8}, y = Tensor{1} }, size = 56, val_size = 16 },
  batch_size = 8, accumulate = 3,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = $optim,
  ${sched:+scheduler = $sched,}
  epochs = 4,
  loggers = { CSVLogger { root_dir = "logs", every_n_steps = 1 } },
}
LUA
  LOOM_CFLAGS=-O1 "$LOOM" build "$d/spec.lua" -o "$d/prog" >"$d/build.log" 2>&1 &
done
wait

for c in "${CASES[@]}"; do
  IFS='|' read -r name prec optim sched <<<"$c"
  t="resume across SIGKILL: $name ($prec, accumulate 3 with a leftover micro-batch, dropout)"
  d="$work/$name"
  if [ ! -x "$d/prog/train" ]; then fail "$t" "build: $(grep -m1 -i error "$d/build.log" || tail -1 "$d/build.log")"; continue; fi
  "$d/prog/train" --quiet --out "$d/a" >"$d/a.log" 2>&1 || { fail "$t" "uninterrupted run: $(tail -1 "$d/a.log")"; continue; }
  { LOOM_KILL_AT_RENAME=3 LD_PRELOAD="$work/kill_at_rename.so" "$d/prog/train" --quiet --out "$d/b" >"$d/b.log" 2>&1; } 2>/dev/null
  rc=$?
  if [ $rc -ne 137 ] || ! ls "$d/b"/last.safetensors.tmp.* >/dev/null 2>&1; then fail "$t" "the run was not killed writing its 3rd checkpoint (rc=$rc)"; continue; fi
  step=$(meta "$d/b/last.safetensors" step)
  "$d/prog/train" --resume "$d/b/last.safetensors" --out "$d/b" >"$d/r.log" 2>&1 || { fail "$t" "resume: $(tail -1 "$d/r.log")"; continue; }
  if ! grep -q "resumed from .* at epoch 2, step $step" "$d/r.log"; then fail "$t" "did not resume at epoch 2: $(head -1 "$d/r.log")"
  elif ! cmp -s "$d/a/last.safetensors" "$d/b/last.safetensors"; then fail "$t" "final checkpoints differ: $(cmp "$d/a/last.safetensors" "$d/b/last.safetensors")"
  else
    v=$(same_metrics "$d/a/logs/lightning_logs/version_0/metrics.csv" "$d/b/logs/lightning_logs/version_1/metrics.csv" "$step" 2>&1)
    if [ "$v" = ok ]; then ok "$t"; else fail "$t" "metrics: $v"; fi
  fi
done
exit 0
