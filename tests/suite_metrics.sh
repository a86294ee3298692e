#!/usr/bin/env bash
# train.log's metrics (issue 16): values against PyTorch on the same weights and batches
# (read back from metrics.csv, TensorBoard and MLflow), log_reduce's reductions, no effect on
# training, the report's plots, report.html as an MLflow artifact, TensorBoard's HParams
# session (read by tests/logging/read_logs.py), the CUDA program's metrics under tests/cuda_emu
# (emulated: the CPU program's values, read back only on the rows that log them), the spec errors.
set -u
LOOM=${LOOM:-build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"   # plan, ok, fail, skip, expect_error, py_lacks, no_torch
CHECK="/usr/bin/python3 $(dirname "$0")/metrics/check_metrics.py"
READ="/usr/bin/python3 $(dirname "$0")/logging/read_logs.py"
plan 21

# spec FILE LR LOG...: a 4-16-3 MLP on Npy data (50 training, 20 validation samples)
spec() {
  local file=$1 lr=$2; shift 2
  cat >"$file" <<LUA
model "Net" {
  inputs = { x = Tensor{4} },
  hidden = Linear(4, 16), out = Linear(16, 3),
  forward = function(m, b) return m.out(relu(m.hidden(b.x))) end,
}
fabric { accelerator = "cpu" }
train {
  data = Npy { fields = { x = "$work/x.npy", target = "$work/target.npy", onehot = "$work/onehot.npy" }, val_split = 20 },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = $lr }, epochs = 2, log_every_n_steps = 1,
  $*
}
LUA
}
LOG='log = function(m, b, out)
    return { hits = accuracy(out, b.target), bits = accuracy(out, b.onehot, {threshold = 0}),
             spread = mean(abs(out)), total = sum(out), worst = max(abs(out)), peak = mean(out), bsum = mean(abs(out)) }
  end,
  log_reduce = { total = "sum", worst = "max", peak = "max", bsum = "sum" },'
LOGGERS='loggers = { CSVLogger { root_dir = "logs" }, TensorBoardLogger { root_dir = "tb" }, MLFlowLogger { experiment_name = "m", save_dir = "mlruns" } },'
build() { "$LOOM" build "$1" -o "$2" >"$work/build.log" 2>&1 || { echo "build: $(tail -3 "$work/build.log")"; return 1; }; }

if py_lacks numpy torch yaml; then
  for name in "metrics equal PyTorch's (train epochs, validation, step rows)" "TensorBoard holds the metrics" \
              "TensorBoard's HParams session holds hparams.yaml" "MLflow holds the metrics" "metrics do not change training"; do no_torch "$name" "no numpy/torch/yaml for /usr/bin/python3"; done
else
  $CHECK data "$work" >/dev/null
  spec "$work/m.lua" 0.0 "$LOG" "$LOGGERS"
  if build "$work/m.lua" "$work/m" && "$work/m/train" --quiet --out "$work/run" >"$work/run.log" 2>&1; then
    csv="$work/run/logs/lightning_logs/version_0/metrics.csv"
    v=$($CHECK values "$work/run" "$csv" 16)
    [ "$v" = ok ] && ok "metrics equal PyTorch's (train epochs, validation, step rows)" || fail "metrics equal PyTorch's (train epochs, validation, step rows)" "$v"
    v=$($READ tb "$work/run/tb/lightning_logs/version_0" "$csv")
    [ "${v%% *}" = ok ] && grep -q "train/hits_epoch" "$csv" && ok "TensorBoard holds the metrics" || fail "TensorBoard holds the metrics" "$v"
    v=$($READ tbhparams "$work/run/tb/lightning_logs/version_0" "$work/run/logs/lightning_logs/version_0/hparams.yaml")
    [ "${v%% *}" = ok ] && ok "TensorBoard's HParams session holds hparams.yaml" || fail "TensorBoard's HParams session holds hparams.yaml" "$v"
    id=$(ls "$work/run/mlruns/1" | grep -E '^[0-9a-f]{32}$' | head -1)
    v=$($READ mlflow "$work/run/mlruns" "$id" "$csv" 3)
    [ "${v%% *}" = ok ] && [ -f "$work/run/mlruns/1/$id/metrics/val/worst" ] && ok "MLflow holds the metrics" || fail "MLflow holds the metrics" "$v"
  else
    for name in "metrics equal PyTorch's (train epochs, validation, step rows)" "TensorBoard holds the metrics" \
                "TensorBoard's HParams session holds hparams.yaml" "MLflow holds the metrics"; do
      fail "$name" "$(tail -3 "$work/run.log" "$work/build.log" 2>/dev/null | tr '\n' ' ')"; done
  fi
  # the same training with and without train.log: the same weights, bit for bit
  spec "$work/a.lua" 0.1 "$LOG"
  spec "$work/b.lua" 0.1
  if build "$work/a.lua" "$work/a" && build "$work/b.lua" "$work/b" && "$work/a/train" --quiet --out "$work/ra" >/dev/null 2>&1 &&
     "$work/b/train" --quiet --out "$work/rb" >/dev/null 2>&1; then
    v=$($CHECK same "$work/ra/last.safetensors" "$work/rb/last.safetensors")
    [ "$v" = ok ] && ok "metrics do not change training" || fail "metrics do not change training" "$v"
  else fail "metrics do not change training" "a build or run failed"; fi
fi

# loom train: the report plots each metric (a step series, two epoch points, two validation
# points), and the MLflow run holds report.html as an artifact
cat >"$work/t.lua" <<LUA
model "Net" {
  inputs = { x = Tensor{4} },
  hidden = Linear(4, 16), out = Linear(16, 3),
  forward = function(m, b) return m.out(relu(m.hidden(b.x))) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 64, val_size = 24 },
  batch_size = 10, log_every_n_steps = 1,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  log = function(m, b, out) return { hits = accuracy(out, b.target), worst = max(abs(out)) } end,
  log_reduce = { worst = "max" },
  callbacks = { ModelCheckpoint { monitor = "val/hits", mode = "max", save_top_k = 1 },
                EarlyStopping { monitor = "train/worst_epoch", mode = "min", patience = 9 } },
  optimizer = SGD { lr = 0.1 }, epochs = 3,
  loggers = { CSVLogger {}, MLFlowLogger { experiment_name = "e", save_dir = "mlruns" } },
}
LUA
if "$LOOM" train "$work/t.lua" -o "$work/t" -- --quiet --out "$work/tr" >"$work/t.log" 2>&1; then
  v=$(/usr/bin/python3 - "$work/tr/report.html" <<'PYEOF'
import re, sys
html = open(sys.argv[1]).read()
def points(key):
    m = re.search(r'<polyline[^>]*data-key="%s"[^>]*points="([^"]*)"' % re.escape(key), html)
    return len(m.group(1).split()) if m else 0
want = {"train/hits": 21, "train/hits_epoch": 3, "val/hits": 3, "train/worst": 21, "train/worst_epoch": 3, "val/worst": 3}
got = {k: points(k) for k in want}
plots = re.findall(r'data-plot="(\w+) \(train.log\)', html)
print("ok" if got == want and plots == ["hits", "worst"] else f"points {got}, plots {plots}")
PYEOF
)
  [ "$v" = ok ] && ok "the report plots each metric" || fail "the report plots each metric" "$v"
  # ModelCheckpoint by val/hits keeps the epoch with the most (the first of equals)
  v=$(/usr/bin/python3 - "$work/tr" <<'PYEOF'
import csv, glob, os, sys
rows = [r for r in csv.DictReader(open(glob.glob(sys.argv[1] + "/logs/*/version_0/metrics.csv")[0])) if r["val/hits"]]
best = max(rows, key=lambda r: (float(r["val/hits"]), -int(r["epoch"])))
kept = sorted(os.path.basename(p) for p in glob.glob(sys.argv[1] + "/epoch=*.safetensors"))
want = [f"epoch={best['epoch']}-step={best['step']}.safetensors"]
print("ok" if kept == want else f"kept {kept}, val/hits {[(r['epoch'], r['val/hits']) for r in rows]}")
PYEOF
)
  [ "$v" = ok ] && ok "callbacks monitor a metric (ModelCheckpoint by val/hits)" || fail "callbacks monitor a metric (ModelCheckpoint by val/hits)" "$v"
  art=$(find "$work/tr/mlruns" -path "*/artifacts/report.html" | head -1)
  [ -n "$art" ] && cmp -s "$art" "$work/tr/report.html" && ok "report.html is an MLflow artifact of the run" ||
    fail "report.html is an MLflow artifact of the run" "found '$art'"
else
  fail "the report plots each metric" "$(tail -3 "$work/t.log" | tr '\n' ' ')"
  fail "report.html is an MLflow artifact of the run" "loom train failed"
  fail "callbacks monitor a metric (ModelCheckpoint by val/hits)" "loom train failed"
fi

# The CUDA program (run under tests/cuda_emu: emulated, no GPU here) logs the CPU program's
# metrics from the same seed, weights and batches: train.log's kinds (accuracy by argmax and
# by threshold, abs, max, sum, mean; log_reduce mean, sum, max) on Fashion-MNIST cut down to
# 112 training images (7 batches of 16: under accumulate = 2 the epoch's last step is one
# micro-batch), 48 validation and 64 test images; --max-steps 7 stops mid-epoch on a step
# that is not a multiple of log_every_n_steps.  Tolerance 1e-4 relative (the GEMMs' summation
# orders differ).  The same program with --cuda-graph (the metrics' kernel captured and
# replayed) logs the same values bit for bit.
CUDA=${CUDA_HOME:-/usr/local/cuda}
CMP="/usr/bin/python3 $(dirname "$0")/metrics/compare_runs.py"
EMU_TESTS=("CUDA (emulated) logs the CPU's train.log metrics: steps, epochs, validation, test"
           "CUDA reads the metrics back only on the rows that log them"
           "CUDA's TensorBoard and MLflow hold its metrics.csv" "CUDA --cuda-graph logs the same metrics")
if [ ! -f "$CUDA/include/cuda_runtime.h" ] || [ ! -f "$CUDA/include/cublasLt.h" ] || ! ls "$CUDA"/lib64/libnvrtc.so* >/dev/null 2>&1 ||
   ! command -v g++ >/dev/null || py_lacks yaml; then
  for t in "${EMU_TESTS[@]}"; do skip "$t" "no CUDA toolkit (headers, NVRTC), g++ or python3's yaml"; done
else
  mkdir -p "$work/fashion"
  /usr/bin/python3 "$(dirname "$0")/harness/cut_fashion.py" "$work/fashion" 160 64
  cp "$(dirname "$0")/metrics/cuda_metrics.lua" "$work/f.lua"
  flags="--seed 11 --max-steps 7 --data $work/fashion"
  csv=logs/lightning_logs/version_0/metrics.csv
  if ! "$LOOM" build "$work/f.lua" --accelerator=cpu -o "$work/fc" >"$work/fc.log" 2>&1 ||
     ! "$LOOM" build "$work/f.lua" --accelerator=cuda --no-compile -o "$work/fg" >"$work/fg.log" 2>&1 ||
     ! tests/cuda_emu/build.sh "$work/fg" >"$work/emu.log" 2>&1; then
    for t in "${EMU_TESTS[@]}"; do fail "$t" "a build failed: $(grep -m1 -i 'error' "$work/fc.log" "$work/fg.log" "$work/emu.log")"; done
  elif ! "$work/fc/train" $flags --quiet --out "$work/rc" >"$work/rc.txt" 2>&1 ||
       ! "$work/fg/emu/run" $flags --out "$work/rg" >"$work/rg.txt" 2>&1 ||
       ! "$work/fg/emu/run" $flags --cuda-graph --out "$work/rh" >"$work/rh.txt" 2>&1; then
    for t in "${EMU_TESTS[@]}"; do fail "$t" "a run failed: $(tail -q -n1 "$work/rc.txt" "$work/rg.txt" "$work/rh.txt" 2>/dev/null | tr '\n' ' ')"; done
  else
    v=$($CMP same "$work/rg/$csv" "$work/rc/$csv" 1e-4)
    [ "${v%% *}" = ok ] && ok "${EMU_TESTS[0]} ($v)" || fail "${EMU_TESTS[0]}" "$v"
    v=$($CMP readbacks "$work/rg/$csv" "$work/rg.txt")
    [ "${v%% *}" = ok ] && ok "${EMU_TESTS[1]} ($v)" || fail "${EMU_TESTS[1]}" "$v"
    id=$(ls "$work/rg/mlruns/1" | grep -E '^[0-9a-f]{32}$' | head -1)
    v=$($READ tb "$work/rg/tb/lightning_logs/version_0" "$work/rg/$csv")
    w=$($READ mlflow "$work/rg/mlruns" "$id" "$work/rg/$csv" 3)
    [ "${v%% *}" = ok ] && [ "${w%% *}" = ok ] && [ -f "$work/rg/mlruns/1/$id/metrics/test/worst" ] && ok "${EMU_TESTS[2]}" ||
      fail "${EMU_TESTS[2]}" "tensorboard: $v; mlflow: $w"
    v=$($CMP same "$work/rh/$csv" "$work/rg/$csv" 0)
    [ "$v" = ok ] && grep -q "graph launches" "$work/rh.txt" && ! grep -q -- "--cuda-graph: 0 graph launches" "$work/rh.txt" &&
      ok "${EMU_TESTS[3]}" || fail "${EMU_TESTS[3]}" "$v $(grep -m1 'graph launches' "$work/rh.txt")"
  fi
fi

# spec errors, each at the spec's line (the diagnostic, then the source line)
bad() {   # NAME WANT LOG [LOOM FLAG]
  local name=$1 want=$2 file=$work/bad.lua
  [ -n "${4:-}" ] && file=$work/c.lua
  spec "$file" 0.1 "$3"
  "$LOOM" build "$file" ${4:-} -o "$work/bad" >/dev/null 2>"$work/bad.err"
  local rc=$? first
  first=$(head -1 "$work/bad.err")
  if [ $rc -eq 0 ]; then fail "$name" "built"
  elif ! grep -q "Traceback\|internal error" "$work/bad.err" && [[ "$first" == *"$want"* ]]; then ok "$name"
  else fail "$name" "expected '$want', got: $(head -3 "$work/bad.err" | tr '\n' ' ')"; fi
}
bad "a metric that is not a scalar" "bad.lua:13: train.log: metric 'raw' must be a scalar float tensor" \
  'log = function(m, b, out)
    return { raw = abs(out) }
  end,'
bad "an unknown function in a metric" "bad.lua:13: unknown name 'acuracy' (did you mean 'accuracy'?)" \
  'log = function(m, b, out)
    return { a = acuracy(out, b.target) }
  end,'
bad "a metric named like a built-in" "metric 'loss' would log train/loss, which is a built-in metric" \
  'log = function(m, b, out)
    return { loss = mean(out) }
  end,'
bad "acc beside the loss's own accuracy" "metric 'acc' would log val/acc, which is the loss's built-in accuracy" \
  'log = function(m, b, out)
    return { acc = accuracy(out, b.target) }
  end,'
bad "log_reduce names an unknown metric" "log_reduce names 'wrost', which train.log does not return" \
  'log = function(m, b, out) return { worst = max(out) } end, log_reduce = { wrost = "max" },'
bad "log_reduce with an unknown reduction" "expected \"mean\", \"sum\" or \"max\", got 'median'" \
  'log = function(m, b, out) return { worst = max(out) } end, log_reduce = { worst = "median" },'
bad "a monitor that names no metric" "EarlyStopping: cannot monitor 'val/hts'; the program logs" \
  'log = function(m, b, out) return { hits = accuracy(out, b.onehot) } end, callbacks = { EarlyStopping { monitor = "val/hts" } },'
bad "train.log that calls the model" "train.log calls the model again" \
  'log = function(m, b, out) return { again = mean(m(b)) } end,'
# accuracy as the loss
spec "$work/bad.lua" 0.1
sed -i 's/return cross_entropy(m(b), b.target)/return accuracy(m(b), b.target)/' "$work/bad.lua"
"$LOOM" build "$work/bad.lua" -o "$work/bad" >/dev/null 2>"$work/bad.err"
case "$(head -1 "$work/bad.err")" in
  *"bad.lua:10: train.loss is accuracy, which has no gradient"*) ok "a loss without gradient" ;;
  *) fail "a loss without gradient" "$(head -2 "$work/bad.err" | tr '\n' ' ')" ;;
esac
