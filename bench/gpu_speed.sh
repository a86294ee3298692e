#!/usr/bin/env bash
# Samples per second of the CUDA trainers beside PyTorch (eager, the same model from
# tests/torch/models.py via bench/torch_step.py's setup, torch.autocast and GradScaler for
# the mixed precisions, the module converted for the true ones, one fixed batch on the
# device) on the same GPU.
# Needs a GPU, the CUDA toolkit and a CUDA build of torch for $PY.  Not part of the tests.
#   bench/gpu_speed.sh [SPEC...]      (default: fashion_mlp fashion_cnn paw)
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=${PY:-python3}
STEPS=${STEPS:-300}
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(fashion_mlp fashion_cnn paw)
if ! nvidia-smi -L >/dev/null 2>&1; then echo "bench/gpu_speed.sh: no GPU here (nvidia-smi -L failed)"; exit 1; fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf "%-12s %-11s %14s %14s\n" spec precision "loom samples/s" "torch samples/s"
for s in "${specs[@]}"; do
  for p in 32-true bf16-mixed 16-mixed bf16-true 16-true; do
    d="$out/${s}_$p"
    "$LOOM" build "specs/$s.lua" --accelerator=cuda --precision="$p" -o "$d" >/dev/null 2>&1 || { echo "$s $p: loom build failed"; continue; }
    bs=$(sed -n 's/^#define BATCH_MAX \([0-9]*\).*/\1/p' "$d/model.h")
    "$d/train" --max-steps 20 --out "$d/warm" --quiet >/dev/null 2>&1   # fills the kernel cache
    t0=$(date +%s.%N)
    "$d/train" --max-steps "$STEPS" --epochs 1000 --out "$d/run" --quiet >/dev/null 2>&1 || { echo "$s $p: run failed"; continue; }
    t1=$(date +%s.%N)
    loom=$(awk -v a="$t0" -v b="$t1" -v n="$STEPS" -v bs="$bs" 'BEGIN { printf "%.0f", n * bs / (b - a) }')
    torch=$("$PY" - "$s" "$bs" "$STEPS" "$p" <<'PYEOF' 2>/dev/null || echo n/a
# the same model (tests/torch/models.py, as bench/torch_step.py sets it up), AdamW, on the GPU;
# bf16-mixed / 16-mixed as Fabric runs them: torch.autocast, and GradScaler for 16-mixed;
# bf16-true / 16-true as Fabric's HalfPrecision: the module and its float inputs converted
import os, sys, time, torch
sys.path.insert(0, "bench")
import torch_step
spec, bs, steps, prec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
g = torch.Generator().manual_seed(1234)
model, xs, y, loss_fn = torch_step.setup(spec, bs, g)
model = model.cuda().train()
xs = tuple(x.cuda() for x in xs); y = y.cuda()
true16 = {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(prec)
if true16 is not None:
    model = model.to(true16)
    xs = tuple(x.to(true16) if x.is_floating_point() else x for x in xs)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
dt = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(prec)
scaler = torch.cuda.amp.GradScaler(enabled=prec == "16-mixed")
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dt or torch.float32, enabled=dt is not None):
        out = model(*xs)
    loss = loss_fn(out.float(), y)
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
for _ in range(20): step()
torch.cuda.synchronize(); t = time.time()
for _ in range(steps): step()
torch.cuda.synchronize(); print(f"{steps * bs / (time.time() - t):.0f}")
PYEOF
)
    printf "%-12s %-11s %14s %14s\n" "$s" "$p" "$loom" "$torch"
  done
done
echo "(loom: wall time of the whole program for $STEPS steps, data loading, start-up and one validation included;"
echo " torch: steps only, on one batch already on the device; both after 20 warm-up steps)"
