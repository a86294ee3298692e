#!/usr/bin/env bash
# The spec's own initialisation (train { init = function(name, p) ... end }, gen/nninit.lua):
# the initial parameters of a generated program (tests/harness/init.c) against
# torch.nn.init's functions, parameter by parameter (tests/torch/init.py: constants
# exactly, orthogonal_ by W W^T, the random ones by mean, std and bounds against torch's
# own draws at the same shape, so the fan and gain rules are torch's); parameters the
# function leaves alone keep PyTorch's default; the same seed gives the same weights,
# another seed others.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
params=(l1.weight l1.bias l2.weight l2.bias l3.weight l3.bias l4.weight l4.bias l5.weight l5.bias l6.weight l6.bias
        c1.weight c1.bias c2.weight c2.bias)
. tests/tap.sh   # plan, fail, no_torch
plan $((${#params[@]} + 3))
cat >"$work/init.lua" <<'LUA'
model "Init" {
  inputs = { x = Tensor{64}, img = Tensor{16, 6, 6} },
  l1 = Linear(64, 256), l2 = Linear(256, 128), l3 = Linear(128, 512), l4 = Linear(512, 64), l5 = Linear(64, 300),
  l6 = Linear(300, 10), c1 = Conv2d(16, 32, 3), c2 = Conv2d(32, 16, 3),
  forward = function(m, b)
    local h = m.l5(m.l4(m.l3(m.l2(relu(m.l1(b.x))))))
    return m.l6(h) + mean(m.c2(m.c1(b.img)))
  end,
}
train {
  data = Synthetic { fields = { x = Tensor{64}, img = Tensor{16, 6, 6}, y = Tensor{dtype = "int64", dist = "randint", high = 10} } },
  batch_size = 4, loss = function(m, b) return cross_entropy(m(b), b.y) end,
  optimizer = SGD { lr = 0.1 }, epochs = 1,
  init = function(name, p)
    if name == "l1.weight" then kaiming_normal_(p, { mode = "fan_out", nonlinearity = "relu" })
    elseif name == "l1.bias" then constant_(p, 0.5)
    elseif name == "l2.weight" then xavier_uniform_(p, calculate_gain("tanh"))
    elseif name == "l3.weight" then orthogonal_(p)
    elseif name == "l3.bias" then nn.init.normal_(p, 1.0, 0.5)
    elseif name == "l4.weight" then trunc_normal_(p, 0.1, 0.05, 0.0, 0.15)
    elseif name == "l4.bias" then uniform_(p, -0.3, 0.7)
    elseif name == "l5.weight" then xavier_normal_(p)
    elseif name == "c1.weight" then kaiming_uniform_(p, 0.2)
    elseif name == "c2.weight" then orthogonal_(p, 2.0)
    elseif name == "c2.bias" then constant_(p, 3.0); constant_(p, -1.25)   -- the last call stays
    elseif p:dim() == 1 and p:size(0) == 10 then ones_(p)
    elseif name:match("bias$") and p:numel() == 128 then zeros_(p) end
  end,
}
LUA
d="$work/init"
if ! "$LOOM" build "$work/init.lua" --no-compile --accelerator=cpu -o "$d" >"$work/gen.log" 2>&1; then
  for p in "${params[@]}" seed_same seed_other cuda_generates; do fail "init $p" "loom build failed: $(tail -1 "$work/gen.log")"; done; exit 0
fi
if ! cc -std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -I"$d" tests/harness/init.c "$d/model.c" -o "$d/init_dump" -ldnnl -lopenblas -lm 2>"$work/cc.log"; then
  for p in "${params[@]}" seed_same seed_other cuda_generates; do fail "init $p" "harness does not compile: $(grep -m1 error "$work/cc.log")"; done; exit 0
fi
"$d/init_dump" 7 >"$work/seed7.txt"
if py_lacks torch; then
  for p in "${params[@]}"; do no_torch "init $p" "$PY has no torch"; done
else
  OPENBLAS_NUM_THREADS=1 "$PY" tests/torch/init.py <"$work/seed7.txt" >"$work/check.txt" 2>&1
  for p in "${params[@]}"; do
    line=$(grep -E "^(not )?ok $p:" "$work/check.txt")
    if [ -n "$line" ]; then echo "${line/ok $p/ok init $p}"; else fail "init $p" "no result: $(tail -1 "$work/check.txt")"; fi
  done
fi
# reproducible by seed: the same seed, the same bytes; another, other random values
"$d/init_dump" 7 >"$work/seed7b.txt"
if cmp -s "$work/seed7.txt" "$work/seed7b.txt"; then echo "ok init seed_same: seed 7 twice gives the same weights"
else fail "init seed_same" "seed 7 gave different weights on a second run"; fi
"$d/init_dump" 8 >"$work/seed8.txt"
differ=$(paste -d'\n' "$work/seed7.txt" "$work/seed8.txt" | awk 'NR % 2 { a = $0; next } { split(a, x, " "); if (a != $0) print x[1] }' | tr '\n' ' ')
want="l1.weight l2.weight l3.weight l3.bias l4.weight l4.bias l5.weight l5.bias l6.weight c1.weight c1.bias c2.weight "
if [ "$differ" = "$want" ]; then echo "ok init seed_other: seed 8 changes exactly the random parameters"
else fail "init seed_other" "seed 8 changed: '$differ', expected '$want'"; fi
# the CUDA program draws the same values on the host (templates/cuda/model.cu.in)
if "$LOOM" build "$work/init.lua" --no-compile --accelerator=cuda -o "$work/cuda" >"$work/cuda.log" 2>&1 &&
   grep -q 'nninit_orthogonal(16, 288, seed, 15)' "$work/cuda/model.cu"; then
  echo "ok init cuda_generates: the CUDA program's model_init has the spec's init"
else fail "init cuda_generates" "$(tail -1 "$work/cuda.log")"; fi
exit 0
