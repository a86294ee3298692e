#!/usr/bin/env bash
# The sequence-model family specs (issue 18): specs/char_lstm.lua (Embedding → 2-layer
# LSTM → Linear) and specs/llama.lua (RMSNorm, rotary embeddings from tensor(...)
# constants, SiLU-gated MLP, causal attention), each against the module `--emit torch`
# writes for it (tests/torch/family_parity.py):
#  - print_SPEC: the emitted module's print(model) equals `loom inspect`'s;
#  - parity_SPEC: STEPS training steps on one batch of B token windows, the spec's
#    optimizer and clip at a constant lr (its scheduler line dropped), by
#    tests/harness/parity.c against torch.optim on the same weights: every loss and
#    every final parameter within 1e-4 relative (fp32);
#  - refuse_cuda_constant: tensor(...) in a CUDA build is refused in one line at the
#    spec's line (it has no CUDA kernel yet).
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
CFLAGS="-std=c11 -O1 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
STEPS=3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh   # plan, ok, fail, no_torch, harness
declare -A BATCH=([char_lstm]=2 [llama]=2)
specs=(char_lstm llama)
plan $((2 * ${#specs[@]} + 1))

# the spec's value of KEY (one line: `  KEY = VALUE,`), "-" when absent
value() { sed -n "s/^[[:space:]]*$2 = \(.*\),[[:space:]]*$/\1/p" "$1" | head -1 | grep . || echo -; }

rt="$tmp/rt"
mkdir -p "$rt"
rt_ok=1
"$LOOM" build specs/char_lstm.lua -o "$tmp/rtsrc" --no-compile >"$tmp/rt.gen" 2>&1 || rt_ok=0
if [ $rt_ok = 1 ]; then
  for f in ckpt data npy idx tokens; do
    cc $CFLAGS -I"$tmp/rtsrc" -c "$tmp/rtsrc/$f.c" -o "$rt/$f.o" 2>"$tmp/rt.cc" || rt_ok=0
  done
fi

for s in "${specs[@]}"; do
  if py_lacks torch numpy; then
    no_torch "print_$s" "$PY has no torch or numpy"; no_torch "parity_$s" "$PY has no torch or numpy"; continue
  fi
  if [ $rt_ok = 0 ]; then fail "print_$s" "the runtime objects did not build"; fail "parity_$s" "the runtime objects did not build"; continue; fi
  d="$tmp/$s"
  # without its learning-rate schedule: the reference steps torch.optim at a constant lr
  grep -v '^[[:space:]]*scheduler = ' "specs/$s.lua" >"$tmp/$s.lua"
  if ! "$LOOM" build "$tmp/$s.lua" -o "$d" --precision=32-true --no-compile --emit torch >"$d.gen" 2>&1; then
    fail "print_$s" "loom build failed: $(tail -1 "$d.gen")"; fail "parity_$s" "loom build failed"; continue
  fi
  if ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d/model.c" "$d/optim.c" "$rt"/*.o -o "$d/parity" \
      -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
    fail "print_$s" "the parity harness does not compile: $(grep -m1 error "$d.cc")"; fail "parity_$s" "does not compile"; continue
  fi
  "$LOOM" inspect "specs/$s.lua" | sed '/^$/,$d' >"$d.print"
  harness "parity_$s" 2 "" "$PY" tests/torch/family_parity.py "$s" "$d" "${BATCH[$s]}" $STEPS "$d.print" \
    "$(value "specs/$s.lua" optimizer)" "$(value "specs/$s.lua" clip)"
done

# tensor(...) on CUDA: one line at the spec's line (its own spec: llama's CUDA build also
# meets RMSNorm and decay_min_ndim, which the CUDA backend refuses as well)
cat >"$tmp/const_cuda.lua" <<'SPEC'
model "M" {
  inputs = { x = Tensor{4} }, lin = Linear(4, 4),
  forward = function(m, b) return m.lin(b.x) * tensor({1, 2, 3, 4}) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{4} }, size = 8 }, batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end, optimizer = SGD { lr = 0.1 }, epochs = 1,
}
SPEC
err=$("$LOOM" build "$tmp/const_cuda.lua" -o "$tmp/cuda" --accelerator=cuda --no-compile 2>&1 >/dev/null); rc=$?
want="$tmp/const_cuda.lua:3: tensor is not supported by the CUDA backend yet"
if [ $rc -ne 2 ]; then fail refuse_cuda_constant "expected exit code 2, got $rc: ${err%%$'\n'*}"
elif [ "${err%%$'\n'*}" != "$want" ]; then fail refuse_cuda_constant "expected '$want' got '${err%%$'\n'*}'"
else ok refuse_cuda_constant; fi
exit 0
