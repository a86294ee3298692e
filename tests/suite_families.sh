#!/usr/bin/env bash
# The model families of specs/ (issue 18): each spec as a user would copy it, built at
# 32-true with `--emit torch`, against that emitted PyTorch module on the same weights
# and batch (tests/torch/family_parity.py, with tests/harness/parity.c):
#  - family_SPEC_print: print(model) of the emitted module equals `loom inspect SPEC`
#    (and inspect's print is the spec's, so a user's print(model) is loom's);
#  - family_SPEC_grad: one forward (training mode) and backward at a small batch: the
#    loss and every gradient within 1e-4 relative (fp32);
#  - family_SPEC_steps: a few training steps on that batch with the spec's optimizer (its
#    scheduler taken out: the reference steps at a constant lr): every step's loss in
#    fp32 (1e-4), and in fp64 (the 64-true program against PyTorch in float64) every
#    step's loss and the final parameters and running statistics within 1e-8.
# The specs with their own training step (dcgan, vae: "step" below) have no one backward:
# family_SPEC_print and family_SPEC_steps, the step written again in PyTorch on the
# emitted module (tests/torch/family_parity.py's USER_STEPS), and family_SPEC_bf16: the
# spec built at bf16-mixed, one step against the same step under Fabric's bf16-mixed in
# PyTorch (autocast around each call of the model; the returned loss, the gradients the
# step leaves and the running statistics within bf16's tolerances, precision_parity.py's),
# and family_SPEC_f16: the same at 16-mixed against Fabric's float16 autocast written by
# hand and its GradScaler (the scale after the step equal too).
# The specs are written at realistic sizes; the test overrides only the batch (B below)
# and the number of steps.
# A spec's `clip = { max_norm = N }` (char_lstm, llama) clips the reference's gradients
# too.  cuda_constant, cuda_expand, cuda_randn: a `tensor(...)` constant (llama's rotary
# tables), vit_tiny's expand (its class token) and a forward's randn generate CUDA
# programs with their own kernels (tests/suite_ops_emu.sh runs such programs emulated
# against the CPU's).
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
CFLAGS="-std=c11 -O1 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
tmp=$(mktemp -d)
[ -n "${KEEP_TMP:-}" ] && echo "# kept $tmp" >&2 || trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh   # plan, ok, fail, no_torch, harness
# spec | batch | steps | "step" for a spec with its own training_step
cases=(
  "resnet18|2|2"
  "unet|2|2"
  "vit_tiny|2|2"
  "audio_conv1d|4|3"
  "dcgan|4|3|step"
  "vae|4|3|step"
  "char_lstm|2|3"
  "llama|2|3"
)
[ -n "${FAMILY_SPECS:-}" ] && mapfile -t cases < <(for c in "${cases[@]}"; do [[ " $FAMILY_SPECS " == *" ${c%%|*} "* ]] && echo "$c"; done)
# checks CASE: the results family_parity.py prints for it
checks() { [[ $1 == *"|step" ]] && echo "print bf16 f16 steps" || echo "print grad steps"; }
n=0
for c in "${cases[@]}"; do set -- $(checks "$c"); n=$((n + $#)); done
plan $((n + 3))   # + cuda_constant, cuda_expand, cuda_randn, below
if py_lacks torch numpy; then
  for c in "${cases[@]}"; do for k in $(checks "$c"); do no_torch "family_${c%%|*}_$k" "$PY has no torch or numpy"; done; done
  cases=()
fi

# the runtime objects parity.c links (independent of the model)
rt="$tmp/rt" rt_ok=1
parity_runtime specs/fashion_mlp.lua || rt_ok=0

for c in "${cases[@]}"; do
  IFS='|' read -r s B steps user <<<"$c"
  spec=specs/$s.lua d="$tmp/$s" want=$(checks "$c")
  all() { for k in $want; do fail "family_${s}_$k" "$1"; done; }
  [ $rt_ok = 1 ] || { all "the runtime objects did not build: $(tail -1 "$tmp/rt.gen" "$tmp/rt.cc" 2>/dev/null | tail -1)"; continue; }
  # the spec without its scheduler; its optimizer's text for torch.optim
  awk '/^[[:space:]]*scheduler = / { next } { print }' "$spec" >"$d.lua"
  if [ "$user" = step ]; then opt=step
  else
    opt=$(sed -n 's/^[[:space:]]*optimizer = \(.*[}]\),[[:space:]]*$/\1/p' "$spec")
    [ -n "$opt" ] || { all "no 'optimizer = ...' line in $spec"; continue; }
  fi
  clip=$(sed -n 's/^[[:space:]]*clip = \(.*[}]\),[[:space:]]*$/\1/p' "$spec"); clip=${clip:--}
  why="" precs="32-true 64-true"; [ "$user" = step ] && precs="$precs bf16-mixed 16-mixed"
  for prec in $precs; do
    dd=$d; [ $prec = 64-true ] && dd=${d}_64; [ $prec = bf16-mixed ] && dd=${d}_bf16; [ $prec = 16-mixed ] && dd=${d}_f16
    if ! "$LOOM" build "$d.lua" -o "$dd" --precision=$prec --devices=1 --no-compile --emit torch >"$dd.gen" 2>&1; then
      why="loom build failed: $(tail -1 "$dd.gen")"; break
    fi
    if ! cc $CFLAGS -I"$dd" tests/harness/parity.c "$dd/model.c" "$dd/optim.c" "$rt"/*.o -o "$dd/parity" \
        -ldnnl -lopenblas -lz -lm >"$dd.cc" 2>&1; then
      why="the $prec parity harness does not compile: $(grep -m1 error "$dd.cc")"; break
    fi
  done
  [ -z "$why" ] || { all "$why"; continue; }
  if ! "$LOOM" inspect "$spec" >"$d.inspect" 2>&1; then all "loom inspect failed: $(head -1 "$d.inspect")"; continue; fi
  sed '/^$/,$d' "$d.inspect" >"$d.print"
  harness "family_$s" $(wc -w <<<"$want") "s/^ok /ok family_/; s/^not ok /not ok family_/" "$PY" tests/torch/family_parity.py "$s" "$d" "${d}_64" "$B" "$steps" "$opt" "$d.print" "$clip" \
    "$([ "$user" = step ] && echo "${d}_bf16" || echo -)" "$([ "$user" = step ] && echo "${d}_f16" || echo -)"
done

# tensor(...) (llama's rotary tables) on CUDA, in a spec of its own
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
cuda_kernel() {   # NAME SPEC KERNEL: the CUDA build of SPEC generates, with kernels/KERNEL*.cu
  local err rc
  err=$("$LOOM" build "$2" -o "$tmp/cuda_$1" --accelerator=cuda --no-compile 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ]; then fail "$1" "CUDA build exit code $rc: ${err%%$'\n'*}"
  elif ! compgen -G "$tmp/cuda_$1/kernels/$3*.cu" >/dev/null; then fail "$1" "no kernels/$3*.cu in the CUDA program"
  else ok "$1"; fi
}
cuda_kernel cuda_constant "$tmp/const_cuda.lua" constant
cuda_kernel cuda_expand specs/vit_tiny.lua tile
sed 's|return m.lin(b.x) \* tensor({1, 2, 3, 4})|return m.lin(b.x) + randn(b.x:size(0), 4)|' "$tmp/const_cuda.lua" >"$tmp/randn_cuda.lua"
cuda_kernel cuda_randn "$tmp/randn_cuda.lua" randn
exit 0
