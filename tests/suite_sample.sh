#!/usr/bin/env bash
# Sampling, a declared entry point beside forward (gen/entries.lua): a small GPT whose
# `generate` returns autoregress(...) gets model_sample_step (a decode step over a
# key/value cache) and train's --sample.  The cached step gives the tokens the
# uncached one does (the window recomputed per token, across the window's restarts);
# greedy tokens equal the emitted PyTorch model's generate from the same checkpoint; a
# seed gives the same text; the other precisions sample with forward's casts; bad
# flags and methods that cannot be generated get one line.  The CUDA program's decode step
# (gen/ops_cuda.lua's `step` rules), run under tests/cuda_emu (emulator only; SKIP without
# the CUDA toolkit): from the CPU program's checkpoint, greedy tokens at 32-true are the
# CPU program's, cached or not; at bf16-mixed the CPU bf16-mixed program's; a seed gives
# the same text; after its own training, the tokens its checkpoint gives.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
. tests/tap.sh   # plan, ok, fail, expect_error, no_torch, py_lacks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plan 28

. tests/harness/small_gpt.sh   # gpt BODY: a small GPT spec whose methods beside forward are BODY
GEN='generate = function(m, x) return autoregress(m(x), x.idx, { temperature = 0.8, top_k = 20 }) end,'
gpt "$GEN" >"$work/gpt.lua"
if ! "$LOOM" build "$work/gpt.lua" --emit torch -o "$work/prog" >"$work/build.log" 2>&1 ||
   ! "$work/prog/train" --out "$work/run" --quiet >"$work/train.out" 2>&1; then
  for n in build nocache seed seed_other torch after_train top_k temperature prompt_alone prompt_vocab; do
    fail "sample_$n" "loom build or training failed: $(tail -1 "$work/build.log" "$work/train.out")"
  done
  ck=""
else
  ok "sample_build"
  ck="$work/run/last.safetensors"
fi

if [ -n "$ck" ]; then
  P=(--resume "$ck" --prompt "In the beginning")
  # 40 greedy tokens after 16: the window (16) restarts at its last half 5 times
  "$work/prog/train" "${P[@]}" --sample 40 --temperature 0 >"$work/c.txt" 2>"$work/c.err"
  "$work/prog/train" "${P[@]}" --sample 40 --temperature 0 --no-kv-cache >"$work/n.txt" 2>"$work/n.err"
  distinct=$(tail -c +17 "$work/c.txt" | od -An -tu1 -v | tr -s ' ' '\n' | sort -u | grep -c .)
  if [ -s "$work/c.txt" ] && cmp -s "$work/c.txt" "$work/n.txt" && grep -q "key/value cache" "$work/c.err" && [ "$distinct" -ge 5 ]; then
    ok "sample_nocache"
  else
    fail "sample_nocache" "cached and uncached tokens differ (or $distinct distinct bytes): $(od -c "$work/c.txt" | head -2) / $(od -c "$work/n.txt" | head -2)"
  fi
  "$work/prog/train" "${P[@]}" --sample 60 --seed 7 >"$work/s1.txt" 2>/dev/null
  "$work/prog/train" "${P[@]}" --sample 60 --seed 7 >"$work/s2.txt" 2>/dev/null
  "$work/prog/train" "${P[@]}" --sample 60 --seed 8 >"$work/s3.txt" 2>/dev/null
  if [ -s "$work/s1.txt" ] && cmp -s "$work/s1.txt" "$work/s2.txt"; then ok "sample_seed"; else fail "sample_seed" "the same seed gave different text"; fi
  if ! cmp -s "$work/s1.txt" "$work/s3.txt"; then ok "sample_seed_other"; else fail "sample_seed_other" "seeds 7 and 8 gave the same 60 tokens"; fi

  # the emitted PyTorch model's greedy generate from the same checkpoint: the same tokens
  if py_lacks torch; then
    no_torch "sample_torch" "no PyTorch"
  else
    /usr/bin/python3 - "$work/prog/model.py" "$ck" >"$work/py.txt" 2>"$work/py.err" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
mod.torch.set_num_threads(1)
m = mod.SmallGPT()
sd, _, _ = mod.load_loom_checkpoint(sys.argv[2])
m.load_state_dict(sd, strict=True); m.eval()
seq = m.generate(list(b"In the beginning"), 40, temperature=0)
sys.stdout.buffer.write(bytes(seq) + b"\n")
PY
    if [ -s "$work/py.txt" ] && cmp -s "$work/c.txt" "$work/py.txt"; then
      ok "sample_torch"
    else
      fail "sample_torch" "PyTorch's greedy tokens differ: $(tail -1 "$work/py.err") $(od -c "$work/py.txt" | head -2) / $(od -c "$work/c.txt" | head -2)"
    fi
  fi
  # after training, from the final weights (the same as the checkpoint's)
  if "$work/prog/train" --out "$work/run2" --quiet --sample 40 --temperature 0 --prompt "In the beginning" >"$work/t.txt" 2>"$work/t.err" &&
     tail -1 "$work/t.txt" | cmp -s - "$work/c.txt"; then
    ok "sample_after_train"
  else
    fail "sample_after_train" "$(tail -1 "$work/t.txt" "$work/t.err")"
  fi
  expect_error "sample_top_k" "--top-k 500 is more than the vocabulary (128)" "$work/prog/train" "${P[@]}" --sample 5 --top-k 500
  expect_error "sample_temperature" "--temperature expects a number >= 0" "$work/prog/train" "${P[@]}" --sample 5 --temperature -1
  expect_error "sample_prompt_alone" "go with --sample N" "$work/prog/train" --prompt hi
  expect_error "sample_prompt_vocab" "byte 195 at offset 0 is outside the model's 128 tokens" "$work/prog/train" --resume "$ck" --sample 5 --prompt "é"
fi

# the decode step against the same program's forward (tests/harness/sample_step.c: the
# logits of every position of one window, fresh weights): at 32-true within float
# rounding; at the other precisions (forward's casts and roundings, gen/entries.lua)
# within one 16-bit unit in the last place of the largest logit, and on average within
# half of that forward's distance to 32-true's forward (measured here: 0, the same
# logits, against means of 1.6e-3 bf16-mixed, 2.7e-3 bf16-true, 3.1e-4 16-true, 2.1e-4
# 16-mixed; specs/tiny_gpt.lua at bf16-mixed: max 1 = one bf16 unit at logits of 217,
# mean 0.018 against 0.040: another summation order flips some roundings)
step_check() {   # DIR PRECISION: compiles and runs the harness; its line in $work/step_PRECISION.txt
  cc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -I"$1" tests/harness/sample_step.c "$1/obj/model.o" "$1/obj/threads.o" \
    -ldnnl -lopenblas -lm -o "$1/sample_step" 2>"$1/cc.log" &&
    "$1/sample_step" "$work/fwd_$2.bin" ${3:+"$3"} >"$work/step_$2.txt" 2>&1
}
if [ -n "$ck" ] && step_check "$work/prog" 32-true &&
   awk '{ exit !($2 <= 1e-5 * $4 && $4 > 0.1) }' "$work/step_32-true.txt"; then
  ok "sample_step_forward_32-true"
else
  fail "sample_step_forward_32-true" "$(cat "$work/step_32-true.txt" "$work/prog/cc.log" 2>/dev/null | head -2)"
fi
# At each precision the cached step's greedy tokens are the uncached ones'; bf16-mixed's,
# from the 32-true checkpoint, are 32-true's (40 tokens: measured equal; a near-tie of
# the top two logits would be the first to differ)
for p in bf16-mixed 16-mixed bf16-true 16-true; do
  d="$work/p_$p"
  if ! "$LOOM" build "$work/gpt.lua" --precision=$p --accelerator=cpu -o "$d" >"$d.log" 2>&1 ||
     ! "$d/train" --out "$d/run" --quiet >"$d.out" 2>&1; then
    fail "sample_precision_$p" "loom build or training failed: $(tail -1 "$d.log" "$d.out")"
    fail "sample_step_forward_$p" "no program"
    continue
  fi
  "$d/train" --resume "$d/run/last.safetensors" --prompt "In the beginning" --sample 40 --temperature 0 >"$d/c.txt" 2>"$d/c.err"
  "$d/train" --resume "$d/run/last.safetensors" --prompt "In the beginning" --sample 40 --temperature 0 --no-kv-cache \
    >"$d/n.txt" 2>"$d/n.err"
  distinct=$(tail -c +17 "$d/c.txt" | od -An -tu1 -v | tr -s ' ' '\n' | sort -u | grep -c .)
  if [ -s "$d/c.txt" ] && cmp -s "$d/c.txt" "$d/n.txt" && [ "$distinct" -ge 5 ]; then
    ok "sample_precision_$p"
  else
    fail "sample_precision_$p" "cached and uncached tokens differ (or $distinct distinct bytes): $(tail -1 "$d/c.err") $(od -c "$d/c.txt" | head -2) / $(od -c "$d/n.txt" | head -2)"
  fi
  if [ -s "$work/fwd_32-true.bin" ] && step_check "$d" "$p" "$work/fwd_32-true.bin" &&
     awk -v ulp="$(case $p in bf16*) echo 0.0078125 ;; *) echo 0.0009765625 ;; esac)" \
       '{ exit !($2 <= ulp * $4 && $6 <= $10 / 2 && $10 > 0) }' "$work/step_$p.txt"; then
    ok "sample_step_forward_$p"
  else
    fail "sample_step_forward_$p" "$(cat "$work/step_$p.txt" "$d/cc.log" 2>/dev/null | head -2)"
  fi
done
d="$work/p_bf16-mixed"
if [ -n "$ck" ] && [ -x "$d/train" ] &&
   "$d/train" --resume "$ck" --prompt "In the beginning" --sample 40 --temperature 0 >"$d/f32.txt" 2>"$d/f32.err" &&
   cmp -s "$d/f32.txt" "$work/c.txt"; then
  ok "sample_bf16_mixed_as_32_true"
else
  fail "sample_bf16_mixed_as_32_true" "$(tail -1 "$d/f32.err") $(od -c "$d/f32.txt" 2>/dev/null | head -2) / $(od -c "$work/c.txt" 2>/dev/null | head -2)"
fi

# the CUDA program's decode step, under the emulator: kernels on the device's float arena
# with forward's roundings, the same tokens as the CPU program's (measured: 40 greedy
# tokens equal at 32-true and at bf16-mixed; seed 7's 60 sampled tokens equal too)
CUDA=${CUDA_HOME:-/usr/local/cuda}
CUDA_TESTS=(sample_cuda_greedy_32-true sample_cuda_nocache sample_cuda_seed sample_cuda_bf16_mixed sample_cuda_after_train)
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
cuda_prog() {   # PRECISION: the emulated CUDA program in $work/cuda_PRECISION/emu/run
  local d="$work/cuda_$1"
  "$LOOM" build "$work/gpt.lua" --accelerator=cuda --precision="$1" --no-compile -o "$d" >"$d.log" 2>&1 &&
    tests/cuda_emu/build.sh "$d" >>"$d.log" 2>&1
}
if [ ! -f "$CUDA/include/cuda_runtime.h" ] || [ -z "$(ls "$CUDA"/lib64/libnvrtc.so* 2>/dev/null)" ] || ! command -v g++ >/dev/null; then
  for n in "${CUDA_TESTS[@]}"; do skip "$n" "no CUDA toolkit (headers, NVRTC) or g++"; done
elif [ -z "$ck" ] || ! cuda_prog 32-true; then
  for n in "${CUDA_TESTS[@]}"; do fail "$n" "no checkpoint, or the CUDA program did not build: $(tail -1 "$work/cuda_32-true.log" 2>/dev/null)"; done
else
  g="$work/cuda_32-true/emu/run"
  "$g" "${P[@]}" --sample 40 --temperature 0 >"$work/g.txt" 2>"$work/g.err"
  if [ -s "$work/g.txt" ] && cmp -s "$work/g.txt" "$work/c.txt" && grep -q "key/value cache" "$work/g.err"; then ok "sample_cuda_greedy_32-true"
  else fail "sample_cuda_greedy_32-true" "$(tail -1 "$work/g.err") $(od -c "$work/g.txt" | head -2) / $(od -c "$work/c.txt" | head -2)"; fi
  "$g" "${P[@]}" --sample 40 --temperature 0 --no-kv-cache >"$work/gn.txt" 2>"$work/gn.err"
  if [ -s "$work/gn.txt" ] && cmp -s "$work/gn.txt" "$work/g.txt"; then ok "sample_cuda_nocache"
  else fail "sample_cuda_nocache" "$(tail -1 "$work/gn.err") $(od -c "$work/gn.txt" | head -2)"; fi
  "$g" "${P[@]}" --sample 60 --seed 7 >"$work/gs1.txt" 2>/dev/null
  "$g" "${P[@]}" --sample 60 --seed 7 >"$work/gs2.txt" 2>/dev/null
  "$g" "${P[@]}" --sample 60 --seed 8 >"$work/gs3.txt" 2>/dev/null
  if [ -s "$work/gs1.txt" ] && cmp -s "$work/gs1.txt" "$work/gs2.txt" && ! cmp -s "$work/gs1.txt" "$work/gs3.txt"; then ok "sample_cuda_seed"
  else fail "sample_cuda_seed" "seed 7 twice: $(cmp "$work/gs1.txt" "$work/gs2.txt" 2>&1); seed 8: $(cmp "$work/gs1.txt" "$work/gs3.txt" 2>&1)"; fi
  # bf16-mixed: forward's casts (autocast's bf16 weights and activations) in the step
  b="$work/cuda_bf16-mixed/emu/run"
  if cuda_prog bf16-mixed && "$b" "${P[@]}" --sample 40 --temperature 0 >"$work/gb.txt" 2>"$work/gb.err" &&
     "$b" "${P[@]}" --sample 40 --temperature 0 --no-kv-cache >"$work/gbn.txt" 2>/dev/null &&
     [ -s "$work/gb.txt" ] && cmp -s "$work/gb.txt" "$work/p_bf16-mixed/f32.txt" && cmp -s "$work/gb.txt" "$work/gbn.txt"; then
    ok "sample_cuda_bf16_mixed"
  else
    fail "sample_cuda_bf16_mixed" "$(tail -1 "$work/cuda_bf16-mixed.log" "$work/gb.err" 2>/dev/null) $(od -c "$work/gb.txt" 2>/dev/null | head -2) / $(od -c "$work/p_bf16-mixed/f32.txt" 2>/dev/null | head -2)"
  fi
  # after training (the device's weights), then from the checkpoint that run wrote
  if "$g" --out "$work/grun" --quiet --sample 40 --temperature 0 --prompt "In the beginning" >"$work/gt.txt" 2>"$work/gt.err" &&
     "$g" --resume "$work/grun/last.safetensors" --prompt "In the beginning" --sample 40 --temperature 0 >"$work/gr.txt" 2>/dev/null &&
     [ -s "$work/gr.txt" ] && tail -1 "$work/gt.txt" | cmp -s - "$work/gr.txt"; then
    ok "sample_cuda_after_train"
  else
    fail "sample_cuda_after_train" "$(tail -1 "$work/gt.err") $(tail -1 "$work/gt.txt" | od -c | head -2) / $(od -c "$work/gr.txt" 2>/dev/null | head -2)"
  fi
fi

# what cannot be generated: refused at the spec's line
gpt 'predict = function(m, x) return m(x) end,' >"$work/bad_method.lua"
line=$(grep -n "predict = " "$work/bad_method.lua" | cut -d: -f1)
if err=$("$LOOM" build "$work/bad_method.lua" --dump=entries 2>&1); then
  fail "sample_bad_method" "accepted"
else
  case "$(printf '%s\n' "$err" | head -1)" in "$work/bad_method.lua:$line:"*"method 'predict' cannot be generated"*) ok "sample_bad_method" ;;
                 *) fail "sample_bad_method" "$err" ;; esac
fi
ATT_CAUSAL=false gpt "$GEN" >"$work/noncausal.lua"
line=$(grep -n "scaled_dot_product_attention(" "$work/noncausal.lua" | cut -d: -f1)
if err=$("$LOOM" build "$work/noncausal.lua" --dump=entries 2>&1); then
  fail "sample_noncausal" "accepted"
else
  case "$err" in *"noncausal.lua:$line:"*"generate cannot be generated position by position"*"without is_causal = true"*) ok "sample_noncausal" ;;
                 *) fail "sample_noncausal" "$err" ;; esac
fi
# a spec without a sampling method: --sample says so
gpt "" >"$work/plain.lua"
if "$LOOM" build "$work/plain.lua" -o "$work/plain" >"$work/plain.log" 2>&1; then
  expect_error "sample_no_method" "--sample: the spec declares no sampling method" "$work/plain/train" --sample 5
else
  fail "sample_no_method" "$(tail -1 "$work/plain.log")"
fi
