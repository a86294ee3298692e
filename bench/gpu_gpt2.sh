#!/usr/bin/env bash
# Training tokens per second of GPT-2 small's shape (bench/specs/gpt2_124m.lua: 124M
# parameters, context 1024, bf16-mixed, AdamW with decay_min_ndim, clip 1.0) on one GPU:
# loom's CUDA program (plain, --cuda-graph, and --cuda-graph with --gemm-attention) beside the same model in PyTorch 2.x
# (the module `loom build --emit torch` writes, its attention as
# F.scaled_dot_product_attention), eager and torch.compile, torch.autocast(bfloat16),
# fused AdamW with the same two parameter groups, the same batch shape, one fixed batch
# on the device.  Each figure is (steps of a long run - steps of a short one) x B x T
# over the difference of their times: start-up, the kernel cache's first fill and the
# final checkpoint cancel out.
# Needs a GPU, the CUDA toolkit and a CUDA build of PyTorch >= 2.0 for $PY.  Not part of
# the tests; it has not run yet (no GPU where it was written).
#   bench/gpu_gpt2.sh                 B=8 (the spec's batch size); BATCH=16 bench/gpu_gpt2.sh
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=${PY:-python3}
SHORT=${SHORT:-10} LONG=${LONG:-60}
BATCH=${BATCH:-8}
if ! nvidia-smi -L >/dev/null 2>&1; then echo "bench/gpu_gpt2.sh: no GPU here (nvidia-smi -L failed)"; exit 1; fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export LOOM_KERNEL_CACHE="$out/kernel_cache"
sed "s/^  batch_size = 8,/  batch_size = $BATCH,/" bench/specs/gpt2_124m.lua >"$out/gpt2.lua"
grep -q "^  batch_size = $BATCH," "$out/gpt2.lua" || { echo "bench/gpu_gpt2.sh: cannot set the batch size in bench/specs/gpt2_124m.lua"; exit 1; }
"$LOOM" build "$out/gpt2.lua" --accelerator=cuda --precision=bf16-mixed -o "$out/cuda" >"$out/build.log" 2>&1 ||
  { echo "loom build failed: $(grep -m1 -i error "$out/build.log")"; exit 1; }
# the same with attention as three GEMMs (cuBLASLt, tensor cores) and the saved (L, S)
# matrix: the fused kernel computes in fp32 on CUDA cores, so which is faster is measured here
"$LOOM" build "$out/gpt2.lua" --accelerator=cuda --precision=bf16-mixed --gemm-attention -o "$out/cuda_gemm" >"$out/build_gemm.log" 2>&1 ||
  { echo "loom build --gemm-attention failed: $(grep -m1 -i error "$out/build_gemm.log")"; exit 1; }
"$LOOM" build "$out/gpt2.lua" --accelerator=cpu --no-compile --emit torch -o "$out/torch" >/dev/null 2>&1 ||
  { echo "loom build --emit torch failed"; exit 1; }
T=$(sed -n 's/^local V, VP, T, C, H, L = [0-9]*, [0-9]*, \([0-9]*\),.*/\1/p' bench/specs/gpt2_124m.lua)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
echo "GPT-2 124M, B=$BATCH, T=$T, bf16-mixed; tokens/s over steps $SHORT..$LONG"

# loom: seconds of N steps (the program's "trained N steps in S s")
loom_secs() {   # PROGRAM N FLAGS...
  local prog=$1 n=$2; shift 2
  "$out/$prog/train" --max-steps "$n" --epochs 1000 --out "$out/run_$n" --quiet "$@" >"$out/loom_$n.txt" 2>&1 || { echo fail; return; }
  sed -n 's/^trained [0-9]* steps in \([0-9.]*\) s/\1/p' "$out/loom_$n.txt"
}
for prog in cuda cuda_gemm; do   # fills the kernel cache
  "$out/$prog/train" --max-steps 2 --epochs 1 --out "$out/warm" --quiet >/dev/null 2>&1
done
for mode in plain graph gemm-attention; do
  prog=cuda flags=()
  [ $mode = graph ] && flags=(--cuda-graph)
  [ $mode = gemm-attention ] && prog=cuda_gemm flags=(--cuda-graph)
  a=$(loom_secs $prog "$SHORT" "${flags[@]}"); b=$(loom_secs $prog "$LONG" "${flags[@]}")
  awk -v a="$a" -v b="$b" -v n=$((LONG - SHORT)) -v bt=$((BATCH * T)) -v m="$mode" \
    'BEGIN { if (a == "fail" || b == "fail" || b <= a) { printf "loom (%s): run failed\n", m; exit }
             printf "loom %-16s %10.0f tokens/s  %8.1f ms/step\n", "(" m ")", n * bt / (b - a), 1000 * (b - a) / n }'
done

for mode in eager compile; do
  "$PY" - "$out/torch" "$BATCH" "$T" "$SHORT" "$LONG" "$mode" <<'PYEOF' || echo "torch ($mode): failed"
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
import model as M
B, T, short, long_, mode = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
V = 50257
def sdpa(q, k, v, is_causal=False, scale=None):   # PyTorch's fused attention (flash on sm_80+)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, **({} if scale is None else {"scale": scale}))
M.scaled_dot_product_attention = sdpa
torch.manual_seed(0)
model = M.GPT2().cuda().train()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
fwd = torch.compile(model) if mode == "compile" else model
idx = torch.randint(0, V, (B, T), device="cuda")
tgt = torch.randint(0, V, (B, T), device="cuda")
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = fwd({"idx": idx})
    loss = F.cross_entropy(logits[:, :, :V].float().reshape(-1, V), tgt.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
def run(n):
    torch.cuda.synchronize(); t = time.time()
    for _ in range(n): step()
    torch.cuda.synchronize(); return time.time() - t
for _ in range(3): step()   # torch.compile's compilation, cuBLAS's and the allocator's warm-up
a, b = run(short), run(long_)
n = long_ - short
# (the two runs are timed separately: the short one's time is subtracted as loom's is)
print(f"torch {'(' + mode + ')':<15} {n * B * T / (b - a):10.0f} tokens/s  {1000 * (b - a) / n:8.1f} ms/step")
PYEOF
done
