#!/usr/bin/env bash
# Logging (issue 16): the default metrics.csv, the rows a run logs, TensorBoard event files
# read back by an independent reader (tests/logging/read_logs.py), MLflow's file store
# (layout, every metric read back, a killed and a resumed run), the loggers' spec errors, and
# train/grad_norm of the CUDA program (under tests/cuda_emu) against the CPU program's.
set -u
LOOM=${LOOM:-build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"   # plan, ok, fail, skip, expect_error
READ="/usr/bin/python3 $(dirname "$0")/logging/read_logs.py"
plan 20

spec() {   # FILE SIZE EPOCHS LOGGERS...: a small regression on synthetic data, with validation
  local file=$1 size=$2 epochs=$3; shift 3
  cat >"$file" <<LUA
model "Synth" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 16), ReLU(), Linear(16, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{8}, y = Tensor{1} }, size = $size, val_size = 16 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.01, momentum = 0.9 },
  epochs = $epochs,
  $*
}
LUA
}
build() { "$LOOM" build "$1" -o "$2" >"$work/build.log" 2>&1 || { echo "build: $(tail -3 "$work/build.log")"; return 1; }; }
csv_of() { ls "$1"/logs/lightning_logs/version_*/metrics.csv 2>/dev/null | head -1; }
run_id_of() { ls "$1" | grep -E '^[0-9a-f]{32}$' | head -1; }

# --- (a) defaults: no loggers in the spec still writes metrics.csv where README says
spec "$work/plain.lua" 64 2
if build "$work/plain.lua" "$work/plain" && "$work/plain/train" --quiet --out "$work/p" >"$work/p.log" 2>&1; then
  csv=$(csv_of "$work/p")
  if [ -n "$csv" ] && [ "$csv" = "$work/p/logs/lightning_logs/version_0/metrics.csv" ]; then ok "no loggers: metrics.csv at OUT/logs/lightning_logs/version_0"
  else fail "no loggers: metrics.csv at OUT/logs/lightning_logs/version_0" "files: $(cd "$work/p" && find . -type f | tr '\n' ' ')"; fi
  # 8 steps an epoch, log_every_n_steps 50: no step reaches 50, the last one (16) is logged;
  # each epoch one row with its mean training loss and its validation loss
  verdict=$(/usr/bin/python3 - "$csv" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
steps = [int(r["step"]) for r in rows if r["train/loss"]]
epochs = [(int(r["epoch"]), int(r["step"])) for r in rows if r["train/loss_epoch"]]
vals = [r for r in rows if r["val/loss"]]
if steps != [16]: print(f"step rows at {steps}, expected only the last step, 16")
elif epochs != [(0, 8), (1, 16)]: print(f"epoch rows {epochs}")
elif len(vals) != 2 or any(not r["train/loss_epoch"] for r in vals): print("val/loss not in the epoch rows")
else: print("ok")
PYEOF
)
  [ "$verdict" = ok ] && ok "epoch rows: mean train loss and validation in one row; last step logged" || fail "epoch rows: mean train loss and validation in one row; last step logged" "$verdict"
  "$work/plain/train" --quiet --max-steps 5 --out "$work/p5" >"$work/p5.log" 2>&1
  if tail -n +2 "$(csv_of "$work/p5")" | cut -d, -f1-3 | grep -q "5"; then
    last=$(/usr/bin/python3 -c 'import csv,sys; print(max(int(r["step"]) for r in csv.DictReader(open(sys.argv[1])) if r["train/loss"]))' "$(csv_of "$work/p5")")
    [ "$last" = 5 ] && ok "--max-steps: the last step is logged" || fail "--max-steps: the last step is logged" "last logged step $last"
  else fail "--max-steps: the last step is logged" "$(cat "$work/p5.log")"; fi
else
  fail "no loggers: metrics.csv at OUT/logs/lightning_logs/version_0" "$(tail -3 "$work/p.log" "$work/build.log")"
  fail "epoch rows: mean train loss and validation in one row; last step logged" "no run"
  fail "--max-steps: the last step is logged" "no run"
fi

# --- (b, c) all three loggers at once
LOGGERS='log_every_n_steps = 3, clip = { max_norm = 0.5 },
  callbacks = { ModelCheckpoint { monitor = "val/loss", save_top_k = 2 } },
  loggers = { CSVLogger { root_dir = "logs" }, TensorBoardLogger { root_dir = "tb" },
              MLFlowLogger { experiment_name = "synth", run_name = "first", tags = { team = "loom" }, log_model = true } },'
spec "$work/all.lua" 64 3 "$LOGGERS"
# the spec in a git repository: the MLflow run is tagged with its commit
mkdir -p "$work/repo" && mv "$work/all.lua" "$work/repo/all.lua"
commit=$(cd "$work/repo" && git init -q . && git add all.lua && git -c user.name=loom -c user.email=loom@localhost commit -qm spec && git rev-parse HEAD)
if build "$work/repo/all.lua" "$work/all" && "$work/all/train" --quiet --out "$work/a" >"$work/a.log" 2>&1; then
  csv=$(csv_of "$work/a")
  v=$($READ tb "$work/a/tb/lightning_logs/version_0" "$csv")
  case "$v" in "ok "*) ok "TensorBoard: every CRC checked, every scalar equals metrics.csv (${v#ok } values)" ;; *) fail "TensorBoard: every CRC checked, every scalar equals metrics.csv" "$v" ;; esac
  store="$work/a/mlruns"
  exp=$(grep -l "name: 'synth'" "$store"/*/meta.yaml | xargs -n1 dirname | xargs -n1 basename)
  id=$(run_id_of "$store/$exp")
  v=$($READ mlflow "$store" "$id" "$csv" 3)
  case "$v" in "ok "*) ok "MLflow: file-store layout, FINISHED, every metric equals metrics.csv (${v#ok } values)" ;; *) fail "MLflow: file-store layout, FINISHED, every metric equals metrics.csv" "$v" ;; esac
  if cmp -s "$work/a/last.safetensors" "$store/$exp/$id/artifacts/checkpoints/last.safetensors" &&
     [ "$(cat "$store/$exp/$id/tags/team")" = loom ] && grep -q "run_name: 'first'" "$store/$exp/$id/meta.yaml"; then ok "MLflow: log_model artifact, the spec's tags and run name"
  else fail "MLflow: log_model artifact, the spec's tags and run name" "$(ls -R "$store/$exp/$id" | tr '\n' ' ')"; fi
  # clipping by norm: every step row has the gradients' norm before clipping (a norm > 0.5
  # was clipped: some are, the learning rate and synthetic targets make them large early)
  v=$(/usr/bin/python3 -c '
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["train/loss"]]
norms = [float(r["train/grad_norm"]) for r in rows if r["train/grad_norm"]]
print("ok" if len(norms) == len(rows) and all(n > 0 for n in norms) and max(norms) > 0.5 else f"{len(rows)} step rows, norms {norms}")' "$csv")
  [ "$v" = ok ] && ok "clip by norm: train/grad_norm in every step row" || fail "clip by norm: train/grad_norm in every step row" "$v"
  # ModelCheckpoint's kept checkpoints are artifacts too, the best by val/loss tagged; the
  # spec's git commit is mlflow.source.git.commit
  best=$(/usr/bin/python3 -c '
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["val/loss"]]
r = min(rows, key=lambda r: float(r["val/loss"]))
print("checkpoints/epoch=%s-step=%s.safetensors" % (r["epoch"], r["step"]))' "$csv")
  run="$store/$exp/$id"
  if [ "$(cat "$run/tags/loom.best_checkpoint")" = "$best" ] && cmp -s "$run/artifacts/$best" "$work/a/${best#checkpoints/}" &&
     [ "$(ls "$run/artifacts/checkpoints" | grep -c '^epoch=')" = 2 ] && [ "$(cat "$run/tags/mlflow.source.git.commit")" = "$commit" ]; then
    ok "MLflow: the kept checkpoints as artifacts, the best tagged; the spec's git commit tagged"
  else fail "MLflow: the kept checkpoints as artifacts, the best tagged; the spec's git commit tagged" \
    "best $(cat "$run/tags/loom.best_checkpoint") (want $best), commit $(cat "$run/tags/mlflow.source.git.commit" 2>&1) (want $commit), $(ls "$run/artifacts/checkpoints" | tr '\n' ' ')"; fi
  # a second run: the experiment is found by name, not made again
  "$work/all/train" --quiet --out "$work/a" >>"$work/a.log" 2>&1
  n_exp=$(grep -l "name: 'synth'" "$store"/*/meta.yaml | wc -l)
  n_run=$(ls "$store/$exp" | grep -cE '^[0-9a-f]{32}$')
  [ "$n_exp" = 1 ] && [ "$n_run" = 2 ] && ok "MLflow: a second run reuses the experiment" || fail "MLflow: a second run reuses the experiment" "$n_exp experiments named synth, $n_run runs"
else
  for t in "TensorBoard: every CRC checked, every scalar equals metrics.csv" "MLflow: file-store layout, FINISHED, every metric equals metrics.csv" \
           "clip by norm: train/grad_norm in every step row" "MLflow: the kept checkpoints as artifacts, the best tagged; the spec's git commit tagged" \
           "MLflow: log_model artifact, the spec's tags and run name" "MLflow: a second run reuses the experiment"; do fail "$t" "$(tail -2 "$work/a.log" "$work/build.log")"; done
fi

# --- a run killed outright stays RUNNING; resumed from its checkpoint it continues the same
# run id, FINISHED, with each step once and the same values as a run never stopped
LONG='log_every_n_steps = 500,
  loggers = { CSVLogger { root_dir = "logs" }, MLFlowLogger { experiment_name = "long" } },'
spec "$work/long.lua" 200000 3 "$LONG"
if build "$work/long.lua" "$work/long" &&
   cc -Wall -Wextra -Werror -shared -fPIC tests/harness/kill_at_rename.c -o "$work/kill_at_rename.so" -ldl >>"$work/build.log" 2>&1; then
  L="$work/long/train"
  "$L" --quiet --out "$work/ref" >"$work/ref.log" 2>&1
  # killed (SIGKILL) at its second checkpoint's rename: deterministic, the moment a kill -9
  # loses the most (tests/harness/kill_at_rename.c); the newest checkpoint is epoch 1's
  LD_PRELOAD="$work/kill_at_rename.so" LOOM_KILL_AT_RENAME=2 "$L" --quiet --out "$work/k" >"$work/k.log" 2>&1
  krc=$?
  store="$work/k/mlruns"; exp=$(dirname "$(grep -l "name: 'long'" "$store"/*/meta.yaml)"); id=$(run_id_of "$exp")
  if [ $krc -ne 137 ]; then
    for t in "MLflow: a killed run is left RUNNING" "MLflow: a resumed run continues the run id, one history"; do
      fail "$t" "the run was not killed at its second checkpoint (exit $krc): $(tail -1 "$work/k.log")"; done
  else
    grep -q "^status: 1$" "$exp/$id/meta.yaml" && grep -q "^end_time: null$" "$exp/$id/meta.yaml" && ok "MLflow: a killed run is left RUNNING" ||
      fail "MLflow: a killed run is left RUNNING" "$(cat "$exp/$id/meta.yaml" | tr '\n' ' ')"
    "$L" --quiet --resume "$work/k/last.safetensors" --out "$work/k" >>"$work/k.log" 2>&1
    ids=$(ls "$exp" | grep -cE '^[0-9a-f]{32}$')
    refexp=$(dirname "$(grep -l "name: 'long'" "$work/ref/mlruns"/*/meta.yaml)"); refid=$(run_id_of "$refexp")
    v=$($READ mlflow "$work/ref/mlruns" "$refid" "$(csv_of "$work/ref")" 3)
    if [ "$ids" != 1 ]; then fail "MLflow: a resumed run continues the run id, one history" "$ids runs after the resume"
    elif [ "${v%% *}" != ok ]; then fail "MLflow: a resumed run continues the run id, one history" "the uninterrupted run: $v"
    elif ! grep -q "^status: 3$" "$exp/$id/meta.yaml"; then fail "MLflow: a resumed run continues the run id, one history" "status $(grep status "$exp/$id/meta.yaml")"
    else
      # same steps, each once, same values, as the run never stopped (resume is bit-exact;
      # the throughput is a time)
      d=$(cd "$exp/$id/metrics" && for f in $(find . -type f ! -path ./epoch ! -path ./train/throughput | sort); do echo "== $f"; cut -d' ' -f2- "$f"; done)
      r=$(cd "$refexp/$refid/metrics" && for f in $(find . -type f ! -path ./epoch ! -path ./train/throughput | sort); do echo "== $f"; cut -d' ' -f2- "$f"; done)
      [ "$d" = "$r" ] && ok "MLflow: a resumed run continues the run id, one history" ||
        fail "MLflow: a resumed run continues the run id, one history" "$(diff <(echo "$r") <(echo "$d") | head -5 | tr '\n' ' ')"
    fi
  fi
  # SIGTERM: the run stops at a step, checkpoints, and its MLflow run is KILLED
  "$L" --out "$work/t" >"$work/t.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q "^epoch 1/" "$work/t.log" 2>/dev/null && break; sleep 0.05; done
  kill -TERM $pid; wait $pid
  m=$(ls "$work"/t/mlruns/*/*/meta.yaml 2>/dev/null | head -1)
  if grep -q "stopped by signal" "$work/t.log" && grep -q "^status: 5$" "$m"; then ok "MLflow: a run stopped by SIGTERM is KILLED"
  elif ! grep -q "stopped by signal" "$work/t.log"; then skip "MLflow: a run stopped by SIGTERM is KILLED" "the run ended before the signal"
  else fail "MLflow: a run stopped by SIGTERM is KILLED" "$(cat "$m" | tr '\n' ' ')"; fi
else
  for t in "MLflow: a killed run is left RUNNING" "MLflow: a resumed run continues the run id, one history" "MLflow: a run stopped by SIGTERM is KILLED"; do fail "$t" "$(tail -2 "$work/build.log")"; done
fi

# --- (e) loom report: the runs' curves as SVG plots, overlaid; one polyline per run and
# metric with a point for each row that logged it
if [ -n "$(csv_of "$work/a")" ] && [ -n "$(csv_of "$work/p")" ] &&
   "$LOOM" report "$(dirname "$(csv_of "$work/a")")" "$work/p" -o "$work/report.html" >"$work/report.log" 2>&1; then
  verdict=$(/usr/bin/python3 - "$work/report.html" "$(csv_of "$work/a")" "$(csv_of "$work/p")" <<'PYEOF'
import csv, re, sys
html = open(sys.argv[1]).read()
if "<script" in html or "http://" in html.replace('xmlns="http://www.w3.org/2000/svg"', ""): print("the page loads something"); sys.exit()
lines = {(int(r), k): len(p.split()) for r, k, p in re.findall(r'<polyline data-run="(\d+)" data-key="([^"]+)"[^>]* points="([^"]*)"', html)}
want = {}
for r, path in enumerate(sys.argv[2:], 1):
    for row in csv.DictReader(open(path)):
        for k, v in row.items():
            if k not in ("step", "epoch") and not k.startswith("test/") and v != "":
                want[(r, k)] = want.get((r, k), 0) + 1
plots = len(re.findall(r"<svg ", html))
if lines != want: print(f"polylines {sorted(lines.items())} vs metrics.csv {sorted(want.items())}")
elif plots != 5: print(f"{plots} plots, expected 5 (train loss, epoch losses, lr, throughput, gradient norm)")
else: print(f"ok {len(lines)}")
PYEOF
)
  case "$verdict" in "ok "*) ok "loom report: an SVG per plot, a polyline per run and metric with every point (${verdict#ok } series)" ;;
    *) fail "loom report: an SVG per plot, a polyline per run and metric with every point" "$verdict" ;; esac
  # rendered in headless Chromium: the screenshot is not blank
  CHROME=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$CHROME" ]; then skip "loom report renders in headless Chromium" "no chromium (Debian package chromium)"
  elif timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1400 \
         --screenshot="$work/report.png" "file://$work/report.html" >"$work/chrome.log" 2>&1 && [ -s "$work/report.png" ]; then
    v=$(/usr/bin/python3 - "$work/report.png" <<'PYEOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
i, idat, w = 8, b"", 0
while i < len(data):
    n, kind = struct.unpack(">I4s", data[i:i + 8])
    if kind == b"IHDR": w, h, depth, color = struct.unpack(">IIBB", data[i + 8:i + 18])
    if kind == b"IDAT": idat += data[i + 8:i + 8 + n]
    i += 12 + n
raw = zlib.decompress(idat)
# count distinct byte values in the image: a blank page has a handful
print("ok" if len(set(raw[::7])) > 20 else f"blank: {len(set(raw[::7]))} distinct values")
PYEOF
)
      cp "$work/report.png" "${LOOM_REPORT_PNG:-/dev/null}" 2>/dev/null
    [ "$v" = ok ] && ok "loom report renders in headless Chromium" || fail "loom report renders in headless Chromium" "$v"
  else fail "loom report renders in headless Chromium" "$(tail -2 "$work/chrome.log")"; fi
else
  fail "loom report: an SVG per plot, a polyline per run and metric with every point" "$(cat "$work/report.log")"
  fail "loom report renders in headless Chromium" "no report"
fi

# --- (f) user hooks: a C file beside the spec, called at each point the expected number of times
mkdir -p "$work/hk"
cat >"$work/hk/my_hooks.c" <<'CEOF'
// A user's hooks: each appends a line to OUT/hooks.txt (its point, step, metrics and the
// sum of the first parameter, read through the read-only view)
#include <stdio.h>
#include <string.h>
#include "loom_hooks.h"
void batch_end(const loom_hook_info *info);
void val_end(const loom_hook_info *info);
void on_save(const loom_hook_info *info);
void train_end(const loom_hook_info *info);
static void record(const loom_hook_info *info) {
    char path[4096];
    snprintf(path, sizeof path, "%s/hooks.txt", info->out_dir);
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s %lld", info->point, (long long)info->step);
    for (int i = 0; i < info->nmetrics; i++) fprintf(f, " %s=%.17g", info->metric_names[i], info->metric_values[i]);
    if (info->nparams && strcmp(info->params[0].dtype, "float32") == 0) {
        double sum = 0;
        for (int64_t k = 0; k < info->params[0].numel; k++) sum += ((const float *)info->params[0].data)[k];
        fprintf(f, " %s:%.17g", info->params[0].name, sum);
    }
    fprintf(f, "\n");
    fclose(f);
}
void batch_end(const loom_hook_info *info) { record(info); }
void val_end(const loom_hook_info *info) { record(info); }
void on_save(const loom_hook_info *info) { record(info); }
void train_end(const loom_hook_info *info) { record(info); }
CEOF
spec "$work/hk/spec.lua" 64 2 'hooks = Hooks { source = "my_hooks.c", on_train_batch_end = "batch_end", on_validation_end = "val_end",
                  on_save_checkpoint = "on_save", on_train_end = "train_end" },'
if build "$work/hk/spec.lua" "$work/hk/b" && "$work/hk/b/train" --quiet --out "$work/hk/r" >"$work/hk.log" 2>&1; then
  counts=$(cut -d' ' -f1 "$work/hk/r/hooks.txt" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')
  [ "$counts" = "on_save_checkpoint=2 on_train_batch_end=16 on_train_end=1 on_validation_end=2 " ] &&
    ok "hooks: each called the expected number of times" || fail "hooks: each called the expected number of times" "$counts"
  # what the hooks saw is what the run logged and saved: the last step's loss as in
  # metrics.csv, the parameter view at the end as the checkpoint's net.0.weight
  verdict=$(/usr/bin/python3 - "$work/hk/r/hooks.txt" "$(csv_of "$work/hk/r")" "$work/hk/r/last.safetensors" <<'PYEOF'
import csv, json, struct, sys
lines = [l.split() for l in open(sys.argv[1])]
last_step = [l for l in lines if l[0] == "on_train_batch_end"][-1]
loss = float(last_step[2].split("=")[1])
want = [float(r["train/loss"]) for r in csv.DictReader(open(sys.argv[2])) if r["train/loss"]][-1]
blob = open(sys.argv[3], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
h = json.loads(blob[8:8 + n])["net.0.weight"]
a, b = h["data_offsets"]
weights = struct.unpack(f"<{(b - a) // 4}f", blob[8 + n + a:8 + n + b])
end = [l for l in lines if l[0] == "on_train_end"][0][-1]
name, s = end.split(":")
if loss != want: print(f"hook loss {loss!r}, metrics.csv {want!r}")
elif name != "net.0.weight" or float(s) != sum(float(w) for w in weights): print(f"hook view {end}, checkpoint sum {sum(weights)!r}")
else: print("ok")
PYEOF
)
  [ "$verdict" = ok ] && ok "hooks: the metrics and the parameter view are the run's" || fail "hooks: the metrics and the parameter view are the run's" "$verdict"
else
  fail "hooks: each called the expected number of times" "$(tail -3 "$work/hk.log" "$work/build.log")"
  fail "hooks: the metrics and the parameter view are the run's" "no run"
fi

# --- spec errors point at the spec's line (and show it)
spec_error() {   # NAME EXPECTED SPEC
  local out rc
  out=$("$LOOM" build "$3" -o "$work/err" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && printf '%s\n' "$out" | head -1 | grep -qF "$2"; then ok "$1"; else fail "$1" "exit $rc: $out"; fi
}
spec "$work/uri.lua" 64 1 'loggers = { MLFlowLogger { tracking_uri = "http://localhost:5000" } },'
spec_error "MLFlowLogger: a server URI is refused at its line" "uri.lua:13: MLFlowLogger.tracking_uri: 'http://localhost:5000' is a http URI" "$work/uri.lua"
spec "$work/tags.lua" 64 1 'loggers = { MLFlowLogger { tags = { n = 3 } } },'
spec_error "MLFlowLogger: a tag that is not a string is refused" "tags.lua:13: MLFlowLogger.tags.n must be a string tag" "$work/tags.lua"
spec "$work/nohook.lua" 64 1 'hooks = Hooks { source = "missing.c", on_train_end = "f" },'
spec_error "Hooks: a missing source file is refused at its line" "nohook.lua:13: Hooks.source: cannot read" "$work/nohook.lua"

# --- train/grad_norm on the CUDA backend: read back with the step (tests/cuda_emu runs it
# on the CPU here; no GPU) and equal to the CPU program's within the sum's reordering
CUDA=${CUDA_HOME:-/usr/local/cuda}
name="train/grad_norm on CUDA (emulated) equals the CPU program's"
if [ ! -f "$CUDA/include/cuda_runtime.h" ] || ! ls "$CUDA"/lib64/libnvrtc.so* >/dev/null 2>&1 || ! command -v g++ >/dev/null; then
  skip "$name" "no CUDA toolkit (headers, NVRTC) or g++"
else
  cat >"$work/gn.lua" <<'LUA'
model "Net" {
  inputs = { x = Tensor{8} },
  hidden = Linear(8, 32), out = Linear(32, 4),
  forward = function(m, b) return m.out(relu(m.hidden(b.x))) end,
}
train {
  data = Synthetic { fields = { x = Tensor{8}, target = Tensor{dtype = "int64", dist = "randint", high = 4} }, size = 64, val_size = 16 },
  batch_size = 16, clip = { max_norm = 0.5 },
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.5 }, epochs = 1, log_every_n_steps = 1,
}
LUA
  export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
  if "$LOOM" build "$work/gn.lua" --accelerator=cpu -o "$work/gn/cpu" >"$work/gn.log" 2>&1 &&
     "$LOOM" build "$work/gn.lua" --accelerator=cuda --no-compile -o "$work/gn/cuda" >>"$work/gn.log" 2>&1 &&
     tests/cuda_emu/build.sh "$work/gn/cuda" >>"$work/gn.log" 2>&1 &&
     "$work/gn/cpu/train" --quiet --out "$work/gn/rc" >>"$work/gn.log" 2>&1 &&
     "$work/gn/cuda/emu/run" --quiet --out "$work/gn/rg" >>"$work/gn.log" 2>&1; then
    verdict=$(/usr/bin/python3 - "$(csv_of "$work/gn/rc")" "$(csv_of "$work/gn/rg")" <<'PYEOF'
import csv, sys
def norms(p): return [float(r["train/grad_norm"]) for r in csv.DictReader(open(p)) if r["train/loss"]]
c, g = norms(sys.argv[1]), norms(sys.argv[2])
bad = [(a, b) for a, b in zip(c, g) if not abs(a - b) <= 1e-5 * abs(a)]
print("ok" if len(c) == 4 and len(g) == 4 and not bad else f"cpu {c}, cuda {g}")
PYEOF
)
    [ "$verdict" = ok ] && ok "$name" || fail "$name" "$verdict"
  else fail "$name" "$(grep -m1 -i 'error' "$work/gn.log" || tail -1 "$work/gn.log")"; fi
fi
