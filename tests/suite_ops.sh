#!/usr/bin/env bash
# Issue 18's ops and modules, batched into the few specs of tests/ops/ (each applies
# many of them to Linear/Conv outputs, so that the parameters' gradients go through
# every op's backward).  For each spec:
#  - ops_grad_SPEC: the whole-model gradient check in float64 (tests/harness/gradcheck.c:
#    random elements of every parameter's gradient against central differences, relative
#    1e-5 above a noise floor; B=4, 10 elements a tensor, eps 1e-6 — the specs have kinks);
#  - ops_parity_SPEC: one forward (training mode) and backward in float32 against the
#    module that `--emit torch` writes, on the same weights and batch (tests/torch/ops_parity.py:
#    the loss and every gradient within 1e-4 of PyTorch's, relative to the tensor's scale),
#    and print(model) equal to `loom inspect`'s.
# tests/ops/fail/*.lua are refused at generation (after autodiff, which inspect does not
# reach): each carries `-- expect: <the first line loom prints>` and exits 2 (ops_fail_NAME).
# A spec listed in GRAD_ONLY has random masks (Dropout2d) PyTorch cannot reproduce: only
# its gradient check runs.  One listed in NAN has NaN values by design (a fully masked
# attention row): only its parity runs, where NaN must be at the same elements as PyTorch's.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
CFLAGS="-std=c11 -O1 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh   # plan, ok, fail, no_torch
GRAD_ONLY=" dropout "
NAN=" mask_nan "
specs=()
for f in tests/ops/*.lua; do specs+=("$(basename "$f" .lua)"); done
[ -n "${OPS_SPECS:-}" ] && specs=($OPS_SPECS)   # OPS_SPECS="attn convt": only those
fails=(tests/ops/fail/*.lua)
n=${#fails[@]}
for s in "${specs[@]}"; do
  [[ "$NAN" == *" $s "* ]] || n=$((n + 1))
  [[ "$GRAD_ONLY" == *" $s "* ]] || n=$((n + 1))
done
plan $n

# the runtime objects parity.c links (independent of the model)
rt="$tmp/rt" rt_ok=1
parity_runtime tests/ops/act.lua || rt_ok=0

for s in "${specs[@]}"; do
  spec=tests/ops/$s.lua
  d="$tmp/${s}_64"
  if [[ "$NAN" == *" $s "* ]]; then :
  elif ! "$LOOM" build "$spec" -o "$d" --precision=64-true --no-compile >"$d.gen" 2>&1; then
    fail "ops_grad_$s" "loom build failed: $(tail -1 "$d.gen")"
  elif ! cc $CFLAGS -I"$d" tests/harness/gradcheck.c "$d/model.c" -o "$d/gradcheck" -ldnnl -lopenblas -lm >"$d.cc" 2>&1; then
    fail "ops_grad_$s" "gradcheck does not compile: $(grep -m1 error "$d.cc")"
  elif "$d/gradcheck" 4 10 1 1e-5 1e-6 >"$d.out" 2>&1; then
    ok "ops_grad_$s: $(grep '^# worst' "$d.out" | sed 's/^# //; s/;.*//')"
  else
    fail "ops_grad_$s" "$(grep -c '^ *FAIL' "$d.out") tensors out of tolerance"
    sed 's/^/#   /' "$d.out"
  fi
  [[ "$GRAD_ONLY" == *" $s "* ]] && continue
  if py_lacks torch numpy; then no_torch "ops_parity_$s" "$PY has no torch or numpy"; continue; fi
  d="$tmp/${s}_32"
  if [ $rt_ok = 0 ]; then fail "ops_parity_$s" "the runtime objects did not build"; continue; fi
  if ! "$LOOM" build "$spec" -o "$d" --precision=32-true --no-compile --emit torch >"$d.gen" 2>&1; then
    fail "ops_parity_$s" "loom build failed: $(tail -1 "$d.gen")"; continue
  fi
  if ! cc $CFLAGS -I"$d" tests/harness/parity.c "$d/model.c" "$d/optim.c" "$rt"/*.o -o "$d/parity" \
      -ldnnl -lopenblas -lz -lm >"$d.cc" 2>&1; then
    fail "ops_parity_$s" "the parity harness does not compile: $(grep -m1 error "$d.cc")"; continue
  fi
  "$LOOM" inspect "$spec" | sed '/^$/,$d' >"$d.print"
  harness "ops_parity_$s" 1 "s/^ok /ok ops_parity_/; s/^not ok /not ok ops_parity_/" "$PY" tests/torch/ops_parity.py "$s" "$d" 8 "$d.print" \
    $([[ "$NAN" == *" $s "* ]] && echo nan)
done
for f in "${fails[@]}"; do
  name=ops_fail_$(basename "$f" .lua)
  expect=$(head -n 1 "$f"); expect=${expect#-- expect: }
  err=$("$LOOM" build "$f" -o "$tmp/fail" --no-compile 2>&1 >/dev/null); rc=$?
  first=${err%%$'\n'*}
  if [ $rc -ne 2 ]; then fail "$name" "expected exit code 2, got $rc: $first"
  elif [ "$first" != "$expect" ]; then fail "$name" "expected '$expect' got '$first'"
  else ok "$name"; fi
done
exit 0
