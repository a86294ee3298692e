#!/usr/bin/env bash
# End-to-end tests of generated training programs: they build, train on real data,
# resume bit-exactly, stop cleanly on SIGTERM, and refuse bad input with one line.
set -u
LOOM=${LOOM:-build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
FASHION=/usr/share/datasets/fashion-mnist

. "$(dirname "$0")/tap.sh"   # plan, ok, fail, skip, expect_error
plan 32
# the tests that train on Fashion-MNIST (SKIPs without it)
ON_DATA=("resume is bit-exact" "metrics.csv written" "SIGTERM checkpoints and exits 0" "SIGKILL leaves a loadable checkpoint"
  "truncated checkpoint" "missing checkpoint" "checkpoint of another model names the first mismatched tensor")

# The spec without its learning-rate schedule: a cosine schedule spans the planned
# run, so "1 epoch, then resume to 2" and "2 epochs" would follow different schedules.
grep -v "scheduler = " specs/fashion_mlp.lua >"$work/fashion_mlp.lua"
if ! "$LOOM" build "$work/fashion_mlp.lua" -o "$work/mlp" >"$work/build.log" 2>&1; then
  fail "build fashion_mlp" "$(tail -5 "$work/build.log" | tr '\n' ' ')"; exit 0
fi
ok "build fashion_mlp"
train="$work/mlp/train"

# flags
expect_error "unknown flag is refused" "unknown flag '--epoch'" "$train" --epoch 2
expect_error "bad flag value is refused" "--epochs expects a non-negative integer" "$train" --epochs two

# data errors: one line naming the file
expect_error "missing data directory" "$work/nowhere" "$train" --data "$work/nowhere" --out "$work/o1"
if [ -d "$FASHION" ]; then
  mkdir -p "$work/bad"
  cp "$FASHION"/* "$work/bad/"
  img=$(ls "$work/bad"/train-images* | head -1)
  head -c 100000 "$img" >"$work/t" && mv "$work/t" "$img"
  expect_error "truncated IDX file" "$(basename "$img")" "$train" --data "$work/bad" --out "$work/o2"
  printf 'not an idx file at all' >"$img"
  expect_error "corrupt IDX file" "$(basename "$img")" "$train" --data "$work/bad" --out "$work/o3"
else
  skip "truncated IDX file" "no Fashion-MNIST at $FASHION"
  skip "corrupt IDX file" "no Fashion-MNIST at $FASHION"
fi

# ---------------------------------------------------------------------------------
# issue 11: what a careless user or a damaged file could do to a run (small synthetic specs)

# A metadata value of a checkpoint replaced (header rewritten, data untouched)
set_meta() {   # FILE KEY VALUE
  /usr/bin/python3 - "$@" <<'PYEOF'
import json, struct, sys
path, key, value = sys.argv[1:4]
blob = open(path, "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
h = json.loads(blob[8:8 + n])
h["__metadata__"][key] = value
text = json.dumps(h, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob[8 + n:])
PYEOF
}
# The file names last.safetensors' ModelCheckpoint state (slots 0..2: value, epoch, step) points at
named_best() {   # FILE DIR
  /usr/bin/python3 - "$@" <<'PYEOF'
import json, struct, sys
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
m = json.loads(blob[8:8 + n])["__metadata__"]
epoch, step = float(m["callback_state_1"]), float(m["callback_state_2"])
if epoch >= 0: print(f"{sys.argv[2]}/epoch={int(epoch)}-step={int(step)}.safetensors")
PYEOF
}
synth_spec() {   # FILE ACCUMULATE LR EXTRA...: dropout, an optional schedule and callbacks
  local file=$1 acc=$2 lr=$3; shift 3
  cat >"$file" <<LUA
model "Synth" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 16), ReLU(), Dropout(0.5), Linear(16, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{8}, y = Tensor{1} }, size = ${SYNTH_SIZE:-64}, val_size = ${SYNTH_VAL:-0} },
  batch_size = 8, accumulate = $acc,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = $lr, momentum = 0.9 },
  epochs = ${SYNTH_EPOCHS:-1},
  loggers = { CSVLogger { root_dir = "logs", every_n_steps = 1 } },
  $*
}
LUA
}

# Dropout under accumulate = 2 draws a mask per micro-batch (it drew the step's mask for
# both): with lr = 0 the loss of step s is the mean of the losses of steps 2s and 2s+1 of
# the same run without accumulation (the same batches, the same masks, as in PyTorch)
synth_spec "$work/acc2.lua" 2 0
synth_spec "$work/acc1.lua" 1 0
if "$LOOM" build "$work/acc2.lua" -o "$work/acc2" >"$work/acc.log" 2>&1 && "$LOOM" build "$work/acc1.lua" -o "$work/acc1" >>"$work/acc.log" 2>&1 &&
   "$work/acc2/train" --quiet --out "$work/acc2/run" >>"$work/acc.log" 2>&1 && "$work/acc1/train" --quiet --out "$work/acc1/run" >>"$work/acc.log" 2>&1; then
  verdict=$(/usr/bin/python3 - "$work/acc2/run/logs/lightning_logs/version_0/metrics.csv" "$work/acc1/run/logs/lightning_logs/version_0/metrics.csv" <<'PYEOF'
import csv, sys
def losses(p): return [float(r["train/loss"]) for r in csv.DictReader(open(p)) if r.get("train/loss")]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
if len(a) != 4 or len(b) != 8: print(f"expected 4 and 8 logged steps, got {len(a)} and {len(b)}"); sys.exit()
bad = [s for s in range(4) if abs(a[s] - (b[2 * s] + b[2 * s + 1]) / 2) > 1e-6 * abs(a[s])]
print("ok" if not bad else f"step {bad[0]}: {a[bad[0]]!r} but the micro-batches' own masks give {(b[2 * bad[0]] + b[2 * bad[0] + 1]) / 2!r}")
PYEOF
)
  if [ "$verdict" = ok ]; then ok "dropout draws a mask per micro-batch under accumulate"
  else fail "dropout draws a mask per micro-batch under accumulate" "$verdict"; fi
else fail "dropout draws a mask per micro-batch under accumulate" "$(tail -3 "$work/acc.log")"; fi

# 7 batches an epoch under accumulate = 3: the epoch's leftover micro-batch makes its
# last step, as in Lightning (its gradient carried into the next epoch, outside the
# checkpoint, so a resume at the epoch's end diverged): 2 epochs == 1, resume, 1 more
SYNTH_SIZE=56 SYNTH_EPOCHS=2 synth_spec "$work/acc3.lua" 3 0.05
if "$LOOM" build "$work/acc3.lua" -o "$work/acc3" >"$work/acc3.log" 2>&1 &&
   "$work/acc3/train" --quiet --out "$work/a3a" >"$work/a3a.log" 2>&1 &&
   "$work/acc3/train" --epochs 1 --quiet --out "$work/a3b" >>"$work/acc3.log" 2>&1 &&
   "$work/acc3/train" --epochs 2 --resume "$work/a3b/last.safetensors" --quiet --out "$work/a3c" >>"$work/acc3.log" 2>&1; then
  if ! grep -q "trained 6 steps" "$work/a3a.log"; then fail "accumulate: an epoch's leftover micro-batches step; resume at its end is bit-exact" "$(cat "$work/a3a.log")"
  elif cmp -s "$work/a3a/last.safetensors" "$work/a3c/last.safetensors"; then ok "accumulate: an epoch's leftover micro-batches step; resume at its end is bit-exact"
  else fail "accumulate: an epoch's leftover micro-batches step; resume at its end is bit-exact" "$(cmp "$work/a3a/last.safetensors" "$work/a3c/last.safetensors" | head -1)"; fi
else fail "accumulate: an epoch's leftover micro-batches step; resume at its end is bit-exact" "$(tail -3 "$work/acc3.log")"; fi

# ... and the step on them is PyTorch's as Lightning runs it (the loss still divided by
# accumulate), in 64-true from the checkpoint at epoch 1's end (tests/torch/accumulate_parity.py)
if /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
  /usr/bin/python3 -c "
import sys, numpy as np
r = np.random.default_rng(1)
np.save(sys.argv[1] + '/px.npy', r.standard_normal((56, 4)).astype(np.float32))   # the loader's batches are float32
np.save(sys.argv[1] + '/py.npy', r.standard_normal((56, 1)).astype(np.float32))" "$work"
  cat >"$work/par.lua" <<LUA
model "AccParity" {
  inputs = { x = Tensor{4} },
  net = Sequential { Linear(4, 6), Tanh(), Linear(6, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu", precision = "64-true" }
train {
  data = Npy { fields = { x = "$work/px.npy", y = "$work/py.npy" } },
  batch_size = 8, accumulate = 3,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9 },
  epochs = 2,
}
LUA
  if "$LOOM" build "$work/par.lua" -o "$work/par" >"$work/par.log" 2>&1 &&
     "$work/par/train" --quiet --out "$work/pa" >>"$work/par.log" 2>&1 &&
     "$work/par/train" --epochs 1 --quiet --out "$work/pb" >>"$work/par.log" 2>&1; then
    verdict=$(/usr/bin/python3 tests/torch/accumulate_parity.py "$work/pb/last.safetensors" "$work/pa/last.safetensors" "$work/px.npy" "$work/py.npy" 3 0.1 0.9 2>&1)
    if [ "$verdict" = ok ]; then ok "accumulate: the epoch's last, shorter window steps as PyTorch under Lightning's loop"
    else fail "accumulate: the epoch's last, shorter window steps as PyTorch under Lightning's loop" "$verdict"; fi
  else fail "accumulate: the epoch's last, shorter window steps as PyTorch under Lightning's loop" "$(tail -3 "$work/par.log")"; fi
else skip "accumulate: the epoch's last, shorter window steps as PyTorch under Lightning's loop" "no torch in /usr/bin/python3"; fi

# Resume is bit-exact across a kill (SIGTERM mid-epoch) with a schedule that spans the run,
# dropout and accumulation, without repeating any flag: the checkpoint carries the seed
# (a run with --seed 5 resumed with the default seed's shuffle) and the planned epochs
SYNTH_SIZE=40000 SYNTH_EPOCHS=2 synth_spec "$work/long.lua" 2 0.01 "scheduler = WarmupCosine { warmup_steps = 10 },"
if "$LOOM" build "$work/long.lua" -o "$work/long" >"$work/long.log" 2>&1; then
  L="$work/long/train"
  "$L" --seed 5 --quiet --out "$work/la" >>"$work/long.log" 2>&1
  "$L" --seed 5 --out "$work/lb" >"$work/lb.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do grep -q "^epoch 1/" "$work/lb.log" 2>/dev/null && break; sleep 0.1; done
  kill -TERM $pid; wait $pid
  if ! grep -q "stopped by signal" "$work/lb.log"; then skip "resume across a kill is bit-exact (schedule, dropout, accumulate)" "the run ended before the signal"
  elif "$L" --resume "$work/lb/last.safetensors" --quiet --out "$work/lc" >>"$work/long.log" 2>&1 &&
       cmp -s "$work/la/last.safetensors" "$work/lc/last.safetensors"; then ok "resume across a kill is bit-exact (schedule, dropout, accumulate)"
  else fail "resume across a kill is bit-exact (schedule, dropout, accumulate)" "$(tail -2 "$work/long.log") $(cmp "$work/la/last.safetensors" "$work/lc/last.safetensors" 2>&1 | head -1)"; fi
  ck="$work/la/last.safetensors"
  expect_error "resume refuses a contradicting --seed" "la/last.safetensors: --seed 6 contradicts the checkpoint's seed 5" "$L" --resume "$ck" --seed 6 --out "$work/o7"
  # another --epochs is taken, and said on stderr: the schedule no longer the planned one
  err=$("$L" --resume "$ck" --epochs 3 --max-steps 1 --quiet --out "$work/o8" 2>&1 >/dev/null)
  case "$err" in *"note: --epochs 3 overrides the checkpoint's 2: the learning-rate schedule now spans"*) ok "resume notes an --epochs that changes the schedule's horizon" ;;
    *) fail "resume notes an --epochs that changes the schedule's horizon" "stderr: $err" ;; esac
  SYNTH_SIZE=39000 SYNTH_EPOCHS=2 synth_spec "$work/long2.lua" 2 0.01 "scheduler = WarmupCosine { warmup_steps = 10 },"
  if "$LOOM" build "$work/long2.lua" -o "$work/long2" >>"$work/long.log" 2>&1; then
    expect_error "resume refuses a checkpoint of another spec" "a checkpoint of another version of the spec" "$work/long2/train" --resume "$ck" --out "$work/o9"
  fi
  cp "$ck" "$work/meta.safetensors"; set_meta "$work/meta.safetensors" step 9223372036854775807
  expect_error "checkpoint step INT64_MAX is refused, naming the file" "meta.safetensors: metadata 'step' is 9223372036854775807, out of range" "$L" --resume "$work/meta.safetensors" --out "$work/o10"
  cp "$ck" "$work/meta.safetensors"; set_meta "$work/meta.safetensors" seed -3
  expect_error "checkpoint negative seed is refused" "meta.safetensors: metadata 'seed' is -3, out of range" "$L" --resume "$work/meta.safetensors" --out "$work/o11"
  cp "$ck" "$work/meta.safetensors"; set_meta "$work/meta.safetensors" train_size 41000
  expect_error "resume refuses another data size" "meta.safetensors: the checkpoint's run trained on 41000 samples, this data has 40000" "$L" --resume "$work/meta.safetensors" --out "$work/o12"
  cp "$ck" "$work/meta.safetensors"; set_meta "$work/meta.safetensors" epoch 99999
  expect_error "checkpoint epoch past the run is refused" "meta.safetensors: metadata 'epoch' is 99999, past the run's 2 epochs" "$L" --resume "$work/meta.safetensors" --out "$work/o13"
  # a flipped data byte (the checkpoint's data section ends the file)
  cp "$ck" "$work/flip.safetensors"
  size=$(stat -c %s "$work/flip.safetensors")
  printf '\x55' | dd of="$work/flip.safetensors" bs=1 seek=$((size - 30)) conv=notrunc 2>/dev/null
  expect_error "a flipped checkpoint byte is caught, naming the tensor" "flip.safetensors: tensor 'optimizer.momentum_buffer.net.3.weight': its data do not match their checksum" "$L" --resume "$work/flip.safetensors" --out "$work/o14"
  # one run per --out: a second one is refused (it deleted the first one's temporary)
  "$L" --epochs 100 --quiet --out "$work/busy" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -d "$work/busy" ] && ! flock -n "$work/busy" true 2>/dev/null && break; sleep 0.1; done
  expect_error "a second run on the same --out is refused" "busy: another training run is using this directory (--out)" "$L" --max-steps 2 --quiet --out "$work/busy"
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
else fail "resume across a kill is bit-exact (schedule, dropout, accumulate)" "$(tail -3 "$work/long.log")"; fi

# 16-mixed's loss scale from a checkpoint must be a positive float (a NaN scale trained on)
if "$LOOM" build "$work/acc1.lua" --precision=16-mixed -o "$work/acc16" >"$work/acc16.log" 2>&1 &&
   "$work/acc16/train" --quiet --out "$work/a16" >>"$work/acc16.log" 2>&1; then
  cp "$work/a16/last.safetensors" "$work/scale.safetensors"; set_meta "$work/scale.safetensors" scaler.scale nan
  expect_error "16-mixed: a NaN loss scale in a checkpoint is refused" "scale.safetensors: metadata 'scaler.scale' is nan, not a loss scale" "$work/acc16/train" --resume "$work/scale.safetensors" --out "$work/o15"
  cp "$work/a16/last.safetensors" "$work/scale.safetensors"; set_meta "$work/scale.safetensors" optimizer.steps -1
  expect_error "16-mixed: a negative optimizer step count is refused" "scale.safetensors: metadata 'optimizer.steps' is -1, out of range" "$work/acc16/train" --resume "$work/scale.safetensors" --out "$work/o16"
else fail "16-mixed: a NaN loss scale in a checkpoint is refused" "$(tail -3 "$work/acc16.log")"; fi

# ModelCheckpoint: killed right after it deletes the old best, the newest last.safetensors
# names a best checkpoint that exists (it deleted the old best before writing the new one)
cc -shared -fPIC tests/harness/kill_after_remove.c -o "$work/kill_after_remove.so" -ldl
SYNTH_SIZE=256 SYNTH_VAL=64 SYNTH_EPOCHS=30 synth_spec "$work/mc.lua" 1 0.01 'callbacks = { ModelCheckpoint { monitor = "val/loss", save_top_k = 1 } },'
if "$LOOM" build "$work/mc.lua" -o "$work/mc" >"$work/mc.log" 2>&1; then
  { LD_PRELOAD="$work/kill_after_remove.so" "$work/mc/train" --quiet --out "$work/mcr" >>"$work/mc.log" 2>&1; } 2>/dev/null
  rc=$?
  best=$(named_best "$work/mcr/last.safetensors" "$work/mcr")
  if [ $rc -ne 137 ]; then fail "ModelCheckpoint never names a deleted file" "the run did not replace a best checkpoint (rc=$rc)"
  elif [ -n "$best" ] && [ -f "$best" ]; then ok "ModelCheckpoint never names a deleted file"
  else fail "ModelCheckpoint never names a deleted file" "last.safetensors names '$best', which is gone ($(ls "$work/mcr" | tr '\n' ' '))"; fi
  # the best checkpoint's epoch, a count, as inf: it was cast to long long (undefined)
  cp "$work/mcr/last.safetensors" "$work/cb.safetensors"; set_meta "$work/cb.safetensors" callback_state_1 inf
  expect_error "a callback's count that is not an integer is refused" "cb.safetensors: metadata 'callback_state_1' is inf, not a callback's state" "$work/mc/train" --resume "$work/cb.safetensors" --out "$work/o17"
else fail "ModelCheckpoint never names a deleted file" "$(tail -3 "$work/mc.log")"; fi

# Under AddressSanitizer, UBSan and LeakSanitizer (no suppressions) a program builds at
# -O1 with -Werror (GCC 12's false -Wformat-truncation in data.c broke it), trains, checkpoints, resumes
# and exits 0 with no report (the optimizer was never freed)
san="$work/mc_san"
if cp -r "$work/mc" "$san" && rm -f "$san"/*.o "$san"/train && rm -rf "$san/cuda" &&
   sed -i 's/^cflags = \(.*\)$/cflags = \1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer/; s/^cflags = \(.*\)-O3/cflags = \1-O1 -g/; s/^ldlibs = \(.*\)$/ldlibs = \1 -fsanitize=address,undefined/' "$san/build.ninja" &&
   ninja -C "$san" >"$san.log" 2>&1; then
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
  "$san/train" --epochs 2 --quiet --out "$work/sr" >"$san.run" 2>&1 &&
  "$san/train" --epochs 3 --resume "$work/sr/last.safetensors" --quiet --out "$work/sr2" >>"$san.run" 2>&1
  rc=$?
  unset ASAN_OPTIONS UBSAN_OPTIONS
  if [ $rc -eq 0 ] && ! grep -qE "Sanitizer|runtime error" "$san.run"; then ok "sanitizers: train and resume without a report"
  else fail "sanitizers: train and resume without a report" "rc=$rc: $(grep -m2 -E "Sanitizer|runtime error|SUMMARY" "$san.run" | tr '\n' ' ')"; fi
else fail "sanitizers: train and resume without a report" "did not build: $(grep -m2 error "$san.log")"; fi

if [ ! -d "$FASHION" ]; then
  for t in "${ON_DATA[@]}"; do skip "$t" "no Fashion-MNIST at $FASHION"; done
  exit 0
fi

# resume: 2 epochs in one run == 1 epoch, resume, 1 epoch — bit for bit
export OMP_NUM_THREADS=2
"$train" --epochs 2 --out "$work/a" --quiet >"$work/a.log" 2>&1 &&
"$train" --epochs 1 --out "$work/b" --quiet >"$work/b.log" 2>&1 &&
"$train" --epochs 2 --resume "$work/b/last.safetensors" --out "$work/c" --quiet >"$work/c.log" 2>&1
if [ $? -ne 0 ]; then fail "resume is bit-exact" "a run failed: $(tail -2 "$work"/*.log)"
elif cmp -s "$work/a/last.safetensors" "$work/c/last.safetensors"; then ok "resume is bit-exact"
else fail "resume is bit-exact" "checkpoints differ ($(cmp "$work/a/last.safetensors" "$work/c/last.safetensors" | head -1))"; fi

# the metrics file is Lightning's CSVLogger layout
csv=$(ls "$work"/a/logs/lightning_logs/version_0/metrics.csv 2>/dev/null)
if [ -n "$csv" ] && head -1 "$csv" | grep -q "step" && grep -q "val/acc" "$csv"; then ok "metrics.csv written"
else fail "metrics.csv written" "no metrics.csv with step and val/acc under $work/a/logs"; fi

# SIGTERM: finish the step, checkpoint, exit 0; the checkpoint resumes
"$train" --epochs 3 --out "$work/s" >"$work/s.log" 2>&1 &
pid=$!
# once it trains (its first progress line; at most 30 s on a loaded machine), then a bit
for _ in $(seq 300); do grep -q "^epoch 1/" "$work/s.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
kill -TERM $pid
wait $pid; rc=$?
if [ $rc -eq 0 ] && grep -q "stopped by signal" "$work/s.log" && [ -f "$work/s/last.safetensors" ]; then
  if "$train" --epochs 1 --resume "$work/s/last.safetensors" --out "$work/s2" --quiet >"$work/s2.log" 2>&1; then
    ok "SIGTERM checkpoints and exits 0"
  else fail "SIGTERM checkpoints and exits 0" "resume failed: $(tail -2 "$work/s2.log")"; fi
else fail "SIGTERM checkpoints and exits 0" "rc=$rc: $(tail -3 "$work/s.log")"; fi

# SIGTERM during validation (a large validation set takes minutes): it stops there, and
# the checkpoint resumes before that validation, to the same weights as a run left alone
cat >"$work/longval.lua" <<LUA
model "LongVal" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 1024), ReLU(), Linear(1024, 1024), ReLU(), Linear(1024, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{8}, y = Tensor{1} }, size = 64, val_size = 8000 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 2,
}
LUA
if "$LOOM" build "$work/longval.lua" -o "$work/lv" >"$work/lv.log" 2>&1; then
  "$work/lv/train" --quiet --out "$work/lva" >>"$work/lv.log" 2>&1
  "$work/lv/train" --out "$work/lvb" >"$work/lvb.log" 2>&1 &
  pid=$!
  # epoch 1's last step line, then validation's 1000 batches
  for _ in $(seq 300); do grep -q "^epoch 1/2 step 8/8" "$work/lvb.log" 2>/dev/null && break; sleep 0.1; done
  sleep 0.2
  kill -TERM $pid; wait $pid; rc=$?
  if [ $rc -eq 0 ] && grep -q "stopped by signal during validation after step 8" "$work/lvb.log" &&
     "$work/lv/train" --resume "$work/lvb/last.safetensors" --quiet --out "$work/lvc" >>"$work/lv.log" 2>&1 &&
     cmp -s "$work/lva/last.safetensors" "$work/lvc/last.safetensors"; then ok "SIGTERM during validation stops it; the resumed run validates again, bit-exact"
  elif grep -q "^epoch 1: step 8  val/loss" "$work/lvb.log"; then skip "SIGTERM during validation stops it; the resumed run validates again, bit-exact" "validation ended before the signal"
  else fail "SIGTERM during validation stops it; the resumed run validates again, bit-exact" "rc=$rc: $(tail -2 "$work/lvb.log" | tr '\n' ' ') $(tail -2 "$work/lv.log" | tr '\n' ' ')"; fi
else fail "SIGTERM during validation stops it; the resumed run validates again, bit-exact" "$(tail -3 "$work/lv.log")"; fi

# SIGKILL at arbitrary moments (also while a checkpoint is being written): whatever
# last.safetensors is left is complete, and the run resumes from it
killed_ok=1
for delay in 0.7 1.1 1.6 2.3; do
  rm -rf "$work/k"
  "$train" --epochs 50 --out "$work/k" --quiet >/dev/null 2>&1 &
  pid=$!
  sleep $delay
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  if [ -f "$work/k/last.safetensors" ] &&
     ! "$train" --epochs 1 --max-steps 1 --resume "$work/k/last.safetensors" --out "$work/k2" --quiet >"$work/k.log" 2>&1; then
    killed_ok=0; echo "# after SIGKILL at ${delay}s: $(tail -1 "$work/k.log")"
  fi
done
if [ $killed_ok = 1 ]; then ok "SIGKILL leaves a loadable checkpoint"; else fail "SIGKILL leaves a loadable checkpoint" "see above"; fi

# checkpoint errors
head -c 1000 "$work/a/last.safetensors" >"$work/trunc.safetensors"
expect_error "truncated checkpoint" "trunc.safetensors" "$train" --resume "$work/trunc.safetensors" --out "$work/o4"
expect_error "missing checkpoint" "nothere.safetensors" "$train" --resume "$work/nothere.safetensors" --out "$work/o5"
if "$LOOM" build specs/fashion_cnn.lua -o "$work/cnn" >"$work/build2.log" 2>&1; then
  expect_error "checkpoint of another model names the first mismatched tensor" "tensor 'features.0.weight'" "$work/cnn/train" --resume "$work/a/last.safetensors" --out "$work/o6"
else fail "checkpoint of another model names the first mismatched tensor" "fashion_cnn did not build"; fi
exit 0
