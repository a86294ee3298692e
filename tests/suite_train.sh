#!/usr/bin/env bash
# End-to-end tests of generated training programs: they build, train on real data,
# resume bit-exactly, stop cleanly on SIGTERM, and refuse bad input with one line.
set -u
LOOM=${LOOM:-build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
FASHION=/usr/share/datasets/fashion-mnist

. "$(dirname "$0")/tap.sh"   # plan, ok, fail, skip, expect_error
plan 13
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
