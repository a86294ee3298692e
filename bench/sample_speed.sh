#!/usr/bin/env bash
# Sampling speed of specs/tiny_gpt.lua (or SPEC=...): tokens/s of the generated program's
# --sample with the key/value cache (model_sample_step: one position per token) and
# without it (--no-kv-cache: the window recomputed per token), beside the emitted
# PyTorch model's generate loop (a full forward of the window per token, as nanoGPT's),
# on the same checkpoint, one thread each.  Usage: bench/sample_speed.sh CKPT [N]
#   CKPT: a checkpoint of the spec (train it first: build/loom train specs/tiny_gpt.lua)
set -eu
cd "$(dirname "$0")/.."
CKPT=${1:?usage: bench/sample_speed.sh CKPT [N]}
N=${2:-512}
SPEC=${SPEC:-specs/tiny_gpt.lua}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
build/loom build "$SPEC" --emit torch -o "$out/prog" >/dev/null
export OMP_NUM_THREADS=1
prompt="In the beginning God created"
"$out/prog/train" --resume "$CKPT" --sample "$N" --prompt "$prompt" --temperature 0 2>&1 >/dev/null | sed 's/^/loom, cache:    /'
"$out/prog/train" --resume "$CKPT" --sample $((N / 8)) --prompt "$prompt" --temperature 0 --no-kv-cache 2>&1 >/dev/null |
  sed 's/^/loom, no cache: /'
/usr/bin/python3 - "$out/prog/model.py" "$CKPT" "$N" "$prompt" <<'PY'
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
torch = mod.torch
torch.set_num_threads(1)
cls = [v for k, v in vars(mod).items() if isinstance(v, type) and issubclass(v, torch.nn.Module) and hasattr(v, 'generate')][0]
m = cls()
sd, _, _ = mod.load_loom_checkpoint(sys.argv[2])
m.load_state_dict(sd, strict=True); m.eval()
n = int(sys.argv[3])
t0 = time.perf_counter()
m.generate(list(sys.argv[4].encode()), n, temperature=0)
dt = time.perf_counter() - t0
print(f"pytorch:        sampled {n} tokens in {dt:.3f} s ({n / dt:.1f} tokens/s, the window's forward per token)")
PY
