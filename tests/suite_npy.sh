#!/usr/bin/env bash
# A spec whose data are .npy files: shapes come from the headers at generation time,
# the program reads the files (uint8 scaled to [0, 1], int64 labels) and learns.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "1..10"
. "$(dirname "$0")/tap.sh"   # py_lacks
if py_lacks numpy; then
  for t in "npy spec trains" "npy rows of another shape are refused" "npy rows flattened are refused" \
    "npy float32 where uint8 was generated for is refused" "npy labels of shape (N, 1) are refused" "npy float labels are refused" \
    "npy label out of range names file and sample" "npy FIFO as a data file is refused, not waited on" "missing .npy is a spec error" \
    "a FIFO .npy in the spec is a spec error, not waited on"; do
    echo "ok $t # SKIP no numpy for $PY"
  done
  exit 0
fi
# two separable classes of 8x8 "images": bright top half or bright bottom half
"$PY" - "$work" <<'PYEOF'
import sys, numpy as np
rng = np.random.default_rng(0)
n = 512
y = rng.integers(0, 2, n).astype(np.int64)
x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
for i in range(n):
    if y[i]: x[i, :4] += 150
    else: x[i, 4:] += 150
np.save(sys.argv[1] + "/x.npy", x)
np.save(sys.argv[1] + "/y.npy", y)
PYEOF
cat >"$work/npy_mlp.lua" <<LUAEOF
model "NpyMLP" {
  inputs = { x = Tensor{8, 8} },
  net = Sequential { Flatten(), Linear(64, 16), ReLU(), Linear(16, 2) },
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Npy { fields = { x = "$work/x.npy", y = "$work/y.npy" }, val_split = 128 },
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.y) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 3,
}
LUAEOF
if ! "$LOOM" train "$work/npy_mlp.lua" -o "$work/build" -- --out "$work/run" >"$work/log" 2>&1; then
  echo "not ok npy spec trains: $(tail -3 "$work/log")"
else
  acc=$(grep -o "val/acc [0-9.]*" "$work/log" | tail -1 | cut -d' ' -f2)
  if awk "BEGIN { exit !(${acc:-0} > 0.95) }"; then echo "ok npy spec trains (val/acc $acc)"
  else echo "not ok npy spec trains: val/acc $acc"; tail -5 "$work/log" | sed 's/^/# /'; fi
fi
# --data files other than those generated for: refused with one line naming the file
# (rows of another shape overran the model's input; float or (N, 1) labels and labels
# out of range were read as garbage or failed later without naming the file)
"$PY" - "$work" <<'PYEOF'
import os, sys, numpy as np
w = sys.argv[1]
x = np.zeros((512, 8, 8), np.uint8); y = np.zeros(512, np.int64)
cases = {"wide": (np.zeros((512, 8, 9), np.uint8), y), "flat": (np.zeros((512, 64), np.uint8), y),
         "floatx": (np.zeros((512, 8, 8), np.float32), y), "col": (x, y.reshape(512, 1)),
         "floaty": (x, y.astype(np.float32)), "range": (x, np.where(np.arange(512) == 300, 2, 0))}
for name, (cx, cy) in cases.items():
    os.makedirs(f"{w}/{name}")
    np.save(f"{w}/{name}/x.npy", cx); np.save(f"{w}/{name}/y.npy", cy)
PYEOF
T="$work/build/train"
expect_error "npy rows of another shape are refused" "wide/x.npy: field 'x': one sample has shape 8x9, but this program was generated for 8x8" "$T" --data "$work/wide" --out "$work/o"
expect_error "npy rows flattened are refused" "flat/x.npy: field 'x': one sample has shape 64, but this program was generated for 8x8" "$T" --data "$work/flat" --out "$work/o"
expect_error "npy float32 where uint8 was generated for is refused" "floatx/x.npy: field 'x' is float32, but this program was generated for uint8" "$T" --data "$work/floatx" --out "$work/o"
expect_error "npy labels of shape (N, 1) are refused" "col/y.npy: field 'y': one sample has shape 1, but this program was generated for ()" "$T" --data "$work/col" --out "$work/o"
expect_error "npy float labels are refused" "floaty/y.npy: field 'y' is float32, but this program was generated for int32 or int64" "$T" --data "$work/floaty" --out "$work/o"
expect_error "npy label out of range names file and sample" "range/y.npy: sample 300: class index 2 is out of range [0, 2)" "$T" --data "$work/range" --out "$work/o"
mkdir "$work/fifodir" && mkfifo "$work/fifodir/x.npy" && cp "$work/y.npy" "$work/fifodir/"
expect_error "npy FIFO as a data file is refused, not waited on" "fifodir/x.npy: cannot open: not a regular file" timeout 20 "$T" --data "$work/fifodir" --out "$work/o"
# a missing file is a spec error at generation time, naming the file
sed "s|$work/y.npy|$work/missing.npy|" "$work/npy_mlp.lua" >"$work/bad.lua"
err=$("$LOOM" build "$work/bad.lua" -o "$work/b2" 2>&1 | head -1)
case "$err" in *"missing.npy: cannot open"*) echo "ok missing .npy is a spec error" ;; *) echo "not ok missing .npy is a spec error: $err" ;; esac
# a FIFO named by the spec: loom refuses it, rather than waiting in open() for a writer
sed "s|$work/y.npy|$work/fifodir/x.npy|" "$work/npy_mlp.lua" >"$work/fifo_spec.lua"
err=$(timeout 20 "$LOOM" build "$work/fifo_spec.lua" -o "$work/b3" 2>&1 | head -1)
case "$err" in *"fifodir/x.npy: cannot open: not a regular file"*) echo "ok a FIFO .npy in the spec is a spec error, not waited on" ;;
  *) echo "not ok a FIFO .npy in the spec is a spec error, not waited on: ${err:-timed out}" ;; esac
exit 0
