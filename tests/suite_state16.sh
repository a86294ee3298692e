#!/usr/bin/env bash
# The training state at 16-bit precisions and 16-mixed's loss scaler (issue 4):
#  - state16_scaler_*: tests/harness/scaler.c against fashion_mlp at 16-mixed: the
#    GradScaler's growth and backoff, unscaling, and a step with an injected huge loss
#    (d(loss) × 1e30, so the float16 activation gradients overflow) skipped exactly:
#    parameters and optimizer state untouched, the scale halved, the later steps taken
#    at the halved scale, the run equal bit for bit to one without that step;
#  - state16_resume_SPEC_PREC: N steps in one run == N/2 steps, --resume, the rest, bit
#    for bit (16-bit parameters, gradients and optimizer state; 16-mixed's scale, growth
#    tracker and step count, which fashion_cnn's run exercises: its float16 activation
#    gradients overflow once in the first 20 steps, so the resumed run must start from
#    the halved scale);
#  - state16_ckpt_dtype_*: a bf16-true checkpoint holds BF16 tensors (16-true: F16
#    parameters, F32 optimizer state); a program of another state dtype refuses it in
#    one line naming the tensor and both dtypes; 16-mixed refuses a checkpoint without
#    the scaler's state in one line;
#  - state16_metrics_scale: 16-mixed logs the loss scale in metrics.csv.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
CFLAGS="-std=c11 -O2 -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$(dirname "$0")/tap.sh"   # plan, ok, fail, skip, expect_error, harness
SCALER_CASES=11   # the results tests/harness/scaler.c prints
# the tests that train on Fashion-MNIST (SKIPs without it)
RESUME=("fashion_mlp bf16-true 40" "fashion_mlp 16-true 40" "fashion_mlp 16-mixed 40" "fashion_cnn 16-mixed 40")
REFUSALS=(state16_ckpt_dtype_32_refuses_bf16 state16_ckpt_dtype_bf16_refuses_f16 state16_ckpt_dtype_bf16_refuses_f32
  state16_ckpt_16mixed_needs_the_scaler)
ON_DATA=(state16_ckpt_dtype_written "${REFUSALS[@]}" state16_metrics_scale)
for c in "${RESUME[@]}"; do set -- $c; ON_DATA+=("state16_resume_$1_$2"); done
plan $((SCALER_CASES + ${#ON_DATA[@]}))

# the scaler harness
d="$tmp/scaler"
if "$LOOM" build specs/fashion_mlp.lua --precision=16-mixed -o "$d" --no-compile >"$tmp/scaler.log" 2>&1 &&
   cc $CFLAGS -I"$d" tests/harness/scaler.c "$d"/model.c "$d"/optim.c -o "$d/scaler" -ldnnl -lopenblas -lm >>"$tmp/scaler.log" 2>&1; then
  harness state16_scaler "$SCALER_CASES" 's/^ok /ok state16_scaler_/; s/^not ok /not ok state16_scaler_/' "$d/scaler" 8 3
else
  fail "state16_scaler" "harness did not build: $(grep -m1 -E 'error' "$tmp/scaler.log")"
fi

if [ ! -d "$FASHION" ]; then
  for t in "${ON_DATA[@]}"; do skip "$t" "no Fashion-MNIST at $FASHION"; done
  exit 0
fi

# the specs without their learning-rate schedule (it spans the planned run, so "N steps"
# and "N/2 steps, then resume to N" would follow different schedules) and callbacks
for spec in fashion_mlp fashion_cnn; do
  grep -v "scheduler = " "specs/$spec.lua" >"$tmp/$spec.lua"
done

build() {   # build SPEC PREC -> $tmp/SPEC-PREC/train
  local out="$tmp/$1-$2"
  [ -x "$out/train" ] && return 0
  "$LOOM" build "$tmp/$1.lua" --precision="$2" -o "$out" >"$out.log" 2>&1
}

# resume_case SPEC PREC STEPS
resume_case() {
  local spec=$1 prec=$2 n=$3 name="state16_resume_$1_$2"
  local out="$tmp/$spec-$prec" half=$(( $3 / 2 ))
  if ! build "$spec" "$prec"; then fail "$name" "did not build: $(grep -m1 -E 'error' "$out.log")"; return; fi
  (cd "$out" && ./train --max-steps "$n" --out a --quiet >a.log 2>&1 &&
    ./train --max-steps "$half" --out b --quiet >b.log 2>&1 &&
    ./train --max-steps "$n" --resume b/last.safetensors --out c --quiet >c.log 2>&1)
  if [ $? -ne 0 ]; then fail "$name" "a run failed: $(tail -1 "$out"/[abc].log | tr '\n' ' ')"; return; fi
  if cmp -s "$out/a/last.safetensors" "$out/c/last.safetensors"; then ok "$name"
  else fail "$name" "checkpoints differ ($(cmp "$out/a/last.safetensors" "$out/c/last.safetensors" | head -1))"; fi
  grep -h "loss scale" "$out/a.log" | sed "s/^/# $spec $prec, $n steps: /"
}
for c in "${RESUME[@]}"; do resume_case $c; done

# the header of a safetensors file: the dtype of tensor NAME
dtype_of() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
print(h.get(sys.argv[2], {}).get("dtype", "absent"))
EOF
}
ck="$tmp/fashion_mlp-bf16-true/a/last.safetensors"
ck16="$tmp/fashion_mlp-16-true/a/last.safetensors"
if [ -f "$ck" ] && [ -f "$ck16" ]; then
  got="$(dtype_of "$ck" net.1.weight) $(dtype_of "$ck" optimizer.exp_avg_sq.net.1.weight) $(dtype_of "$ck16" net.1.weight) $(dtype_of "$ck16" optimizer.exp_avg.net.1.weight)"
  if [ "$got" = "BF16 BF16 F16 F32" ]; then ok "state16_ckpt_dtype_written"
  else fail "state16_ckpt_dtype_written" "bf16-true param/state, 16-true param/state: $got (want BF16 BF16 F16 F32)"; fi
  if build fashion_mlp 32-true; then
    expect_error "state16_ckpt_dtype_32_refuses_bf16" "tensor 'net.1.weight' has dtype BF16 in the checkpoint but F32 in this model" \
      "$tmp/fashion_mlp-32-true/train" --resume "$ck" --out "$tmp/o1"
    expect_error "state16_ckpt_dtype_bf16_refuses_f16" "dtype F16 in the checkpoint but BF16" \
      "$tmp/fashion_mlp-bf16-true/train" --resume "$ck16" --out "$tmp/o2"
    (cd "$tmp/fashion_mlp-32-true" && ./train --max-steps 2 --out a --quiet >/dev/null 2>&1)
    expect_error "state16_ckpt_dtype_bf16_refuses_f32" "last.safetensors" \
      "$tmp/fashion_mlp-bf16-true/train" --resume "$tmp/fashion_mlp-32-true/a/last.safetensors" --out "$tmp/o3"
    expect_error "state16_ckpt_16mixed_needs_the_scaler" "metadata 'optimizer.steps' is missing" \
      "$tmp/fashion_mlp-16-mixed/train" --resume "$tmp/fashion_mlp-32-true/a/last.safetensors" --out "$tmp/o4"
  else for t in "${REFUSALS[@]}"; do fail "$t" "fashion_mlp 32-true did not build"; done; fi
else
  for t in state16_ckpt_dtype_written "${REFUSALS[@]}"; do fail "$t" "no bf16-true / 16-true checkpoint"; done
fi

# the scale in metrics.csv (logged every 50 steps)
out="$tmp/fashion_mlp-16-mixed"
if (cd "$out" && ./train --max-steps 60 --out m >m.log 2>&1); then
  csv=$(ls "$out"/m/logs/lightning_logs/version_*/metrics.csv 2>/dev/null | head -1)
  col=$(head -1 "$csv" 2>/dev/null | tr ',' '\n' | grep -nx scale | cut -d: -f1)
  val=$([ -n "$col" ] && awk -F, -v c="$col" 'NR > 1 && $c != "" { print $c; exit }' "$csv")
  if [ "$val" = "65536.0" ] && grep -q "loss scale 65536; 0 steps skipped" "$out/m.log"; then ok "state16_metrics_scale"
  else fail "state16_metrics_scale" "scale column '${val}' in ${csv:-no metrics.csv}; $(grep 'loss scale' "$out/m.log")"; fi
else
  fail "state16_metrics_scale" "run failed: $(tail -1 "$out/m.log")"
fi
exit 0
