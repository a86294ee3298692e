#!/usr/bin/env bash
# A spec whose data are .npy files: shapes come from the headers at generation time,
# the program reads the files (uint8 scaled to [0, 1], int64 labels) and learns.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "1..2"
. "$(dirname "$0")/tap.sh"   # py_lacks
if py_lacks numpy; then
  echo "ok npy spec trains # SKIP no numpy for $PY"; echo "ok missing .npy is a spec error # SKIP no numpy for $PY"; exit 0
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
# a missing file is a spec error at generation time, naming the file
sed "s|$work/y.npy|$work/missing.npy|" "$work/npy_mlp.lua" >"$work/bad.lua"
err=$("$LOOM" build "$work/bad.lua" -o "$work/b2" 2>&1 | head -1)
case "$err" in *"missing.npy: cannot open"*) echo "ok missing .npy is a spec error" ;; *) echo "not ok missing .npy is a spec error: $err" ;; esac
exit 0
