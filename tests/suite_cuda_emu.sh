#!/usr/bin/env bash
# The CUDA programs, run: tests/cuda_emu emulates the CUDA runtime, driver and cuBLASLt
# on the CPU (NVRTC is real; kernels run host-compiled; see tests/cuda_emu/README.md), so
# the comparison tests/gpu/run.sh makes on a GPU is made here:
#  - fashion_mlp, fashion_cnn, paw at 32-true, bf16-mixed, 16-mixed: the emulated CUDA
#    program and the CPU program from --seed 11, one step; checkpoints (parameters and
#    optimizer.exp_avg = 0.1 x gradient) and the validation loss agree within the
#    tolerances below (tests/harness/compare_ckpt.c; measured worst differences are
#    printed on each ok line);
#  - fashion_mlp and fashion_cnn at bf16-true and 16-true (16-bit parameters, gradients
#    and buffers on the device; 16-true's optimizer state in float), the same way;
#  - fashion_mlp variants (SGD + clip by norm + Dropout, AdamW + clip by value + Dropout),
#    the first also at bf16-true; SGD with parameter groups (the biases' own lr, no decay);
#  - resume with 16-bit state: fashion_mlp bf16-true and 16-true, 3 epochs == 1 epoch,
#    then resumed to 3, bit for bit;
#  - --cuda-graph (fashion_mlp at each precision): 6 steps with the step captured and
#    replayed give the checkpoint of 6 plain steps, bit for bit, and graphs were launched
#    (and at bf16-true);
#  - the emulated cuBLASLt against its documented semantics (tests/cuda_emu/test_cublaslt.cpp)
#    and the emulated runtime's (tests/cuda_emu/test_runtime.cpp);
#  - 7 batches an epoch under accumulate = 3 (the leftover micro-batch steps): 2 epochs
#    == 1, resumed to 2, bit for bit, and the C program's result;
#  - one ASan + UBSan build and run (fashion_mlp 16-mixed);
#  - tiny_transformer at 32-true and bf16-mixed once `loom build --accelerator=cuda`
#    accepts it (SKIP with its reason until then);
#  - tiny_gpt (AdamW's decay_min_ndim: two parameter groups; byte tokens, causal
#    attention, a tied head), cut down to context 32, width 64, 2 blocks, batch 4, on
#    16 KB of the KJV: 3 steps at 32-true (a wrong group's decay, lr·wd·p = 1e-4 p, shows
#    in Adam's parameters), 1 at bf16-mixed.
# The Fashion-MNIST runs read a cut-down copy of the data (the 5000 validation images of
# the spec's val_split, one batch to train on, 256 test images): emulated evaluation is
# the slow part, so fashion_cnn validates on 1000 (a cut of its own, the same first 128 to
# train on); paw's step on 128×128 images is slow too: it trains on a batch of 16 and
# validates on 16 samples (variants of their specs; the model and its kernels are the
# spec's).
# SKIPs where the CUDA toolkit (headers, NVRTC) is missing.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
SPECS=(fashion_mlp fashion_cnn paw)
PRECS=(32-true bf16-mixed 16-mixed)
PRECS16=(bf16-true 16-true)   # 16-bit state: fashion_mlp and fashion_cnn
# Tolerances (tests/harness/compare_ckpt.c): gradients relative to each tensor's largest,
# "round-off" gradients (a bias right before a BatchNorm: zero but for rounding) below
# ROUNDOFF of the model's largest, Adam's parameters 2e-5.  Measured worst gradient
# differences (32-true / bf16-mixed / 16-mixed): fashion_mlp 2.8e-7 / 0 / 4.6e-4,
# fashion_cnn 9.4e-7 / 1.5e-3 / 1.2e-3, paw (batch 16) 3.0e-5 / 4.9e-2 / 2.9e-2; Adam's
# parameters at most 1.1e-6.  bf16-true / 16-true: fashion_mlp 0 (identical files) /
# 2.3e-4, fashion_cnn 1.9e-3 / 6.1e-3 (a conv bias before BatchNorm, a round-off gradient
# in float16).  tests/gpu/run.sh allows 1e-3 and 5e-2 on a real GPU.
declare -A TOL=([32-true]=1e-5 [bf16-mixed]=2e-3 [16-mixed]=5e-3 [bf16-true]=1e-2 [16-true]=1e-2)
declare -A ROUNDOFF=([32-true]=1e-4 [bf16-mixed]=1e-2 [16-mixed]=1e-2 [bf16-true]=1e-2 [16-true]=1e-2)
# paw: max-pool windows whose two largest values differ by round-off route the gradient
# differently (the CPU program's own fp32 and fp64 runs differ the same way, by 1.1e-2 in
# img_input.5.weight's gradient): the GPU test's tolerances.  At 32-true, since the CPU's
# float GEMMs run through oneDNN (another summation order than the emulated cuBLASLt's),
# 3.2e-2 was measured in img_input.5.weight's gradient (val/loss equal to 4 digits): 5e-2,
# the GPU test's bound
# tiny_transformer bf16-mixed: bf16 activation gradients that round a tie the other way
# after a different GEMM summation order (5.95e-3 measured in block.mlp.2.weight's gradient,
# with or without --no-fuse; 1.3e-6 at 32-true)
# fashion_cnn bf16-mixed: on an Intel Xeon with AMX, oneDNN's bf16 matmul (the CPU
# program's bf16 GEMMs) runs on AMX tiles, another summation order than AVX512_BF16's:
# 3.0e-3 measured in features.4.weight's Adam moment (1.5e-3 on an AMD EPYC's AVX512_BF16)
# tiny_gpt bf16-mixed: the same (5.1e-3 measured in h.1.mlp.0.weight's gradient, 9.9e-3 in
# its exp_avg_sq; Adam's parameters 2.9e-6; 32-true after 3 steps: 1.2e-6)
# fashion_cnn 32-true / 16-true: the CPU program's Conv2d(32,64) runs oneDNN's direct AVX-512
# kernels (another summation order than the emulated im2col + cuBLASLt): 7.7e-6 in
# features.4.weight's gradient and 1.04e-5 in its exp_avg_sq (a square: twice the relative
# difference) at 32-true; at 16-true 1.15e-2 in the exp_avg of features.0.bias, the
# round-off gradient of a conv bias before BatchNorm (6.1e-3 with im2col on both sides)
declare -A SPEC_TOL=([paw_32-true]=5e-2 [paw_bf16-mixed]=8e-2 [paw_16-mixed]=8e-2 [tiny_transformer_bf16-mixed]=2e-2
                     [fashion_cnn_bf16-mixed]=5e-3 [tiny_gpt_bf16-mixed]=2e-2 [fashion_cnn_32-true]=3e-5 [fashion_cnn_16-true]=2e-2)
# steps a comparison trains (1 unless here)
declare -A SPEC_STEPS=([tiny_gpt_32-true]=3)
# The comparisons (compare below: NAME SPEC PRECISION [skip_if_refused]; "@variants/X.lua"
# is made below), emu_vs_cpu_NAME_PREC each: fashion_cnn's in a lane of their own
CNN=()
for p in "${PRECS[@]}" "${PRECS16[@]}"; do CNN+=("fashion_cnn @variants/fashion_cnn.lua $p"); done
MAIN=()
for p in "${PRECS[@]}"; do MAIN+=("fashion_mlp specs/fashion_mlp.lua $p"); done
for p in "${PRECS[@]}"; do MAIN+=("paw @variants/paw.lua $p"); done
for p in "${PRECS16[@]}"; do MAIN+=("fashion_mlp specs/fashion_mlp.lua $p"); done
MAIN+=("mlp_sgd_clipnorm_dropout @variants/mlp_sgd_clipnorm_dropout.lua 32-true"
       "mlp_adamw_clipval_dropout @variants/mlp_adamw_clipval_dropout.lua 32-true"
       "mlp_sgd_clipnorm_dropout @variants/mlp_sgd_clipnorm_dropout.lua bf16-true"
       "mlp_sgd_groups @variants/mlp_sgd_groups.lua 32-true"
       "tiny_transformer specs/tiny_transformer.lua 32-true skip_if_refused"
       "tiny_transformer specs/tiny_transformer.lua bf16-mixed skip_if_refused"
       "tiny_gpt @variants/tiny_gpt.lua 32-true"
       "tiny_gpt @variants/tiny_gpt.lua bf16-mixed")
GRAPH=("${PRECS[@]}" bf16-true)   # emu_cuda_graph_fashion_mlp_PREC (after its comparison)
RESUME=("${PRECS16[@]}")          # emu_resume_fashion_mlp_PREC
CUBLASLT_CASES=27 RUNTIME_CASES=14   # the results tests/cuda_emu/test_cublaslt.cpp and test_runtime.cpp print
names() {
  local c
  for c in "${CNN[@]}" "${MAIN[@]}"; do set -- $c; echo "emu_vs_cpu_$1_$3"; done
  for p in "${GRAPH[@]}"; do echo "emu_cuda_graph_fashion_mlp_$p"; done
  for p in "${RESUME[@]}"; do echo "emu_resume_fashion_mlp_$p"; done
  echo emu_accumulate_leftover
  echo emu_asan_fashion_mlp_16-mixed
}
. tests/tap.sh   # plan, ok, fail, skip, harness
nvrtc=$(ls "$CUDA"/lib64/libnvrtc.so* 2>/dev/null | head -1)
if [ ! -f "$CUDA/include/cuda_runtime.h" ] || [ ! -f "$CUDA/include/cublasLt.h" ] || [ -z "$nvrtc" ] || ! command -v g++ >/dev/null; then
  plan $(($(names | wc -l) + 2))
  for t in $(names) emu_cublaslt emu_runtime; do skip "$t" "no CUDA toolkit (headers, NVRTC) or g++"; done
  exit 0
fi
plan $(($(names | wc -l) + CUBLASLT_CASES + RUNTIME_CASES))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
export OPENBLAS_NUM_THREADS=1 GOMP_SPINCOUNT=10000
cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Iruntime tests/harness/compare_ckpt.c runtime/ckpt.c -o "$tmp/compare_ckpt" -lz -lm ||
  { for t in $(names); do fail "$t" "tests/harness/compare_ckpt.c did not compile"; done; exit 0; }

# the emulated cuBLASLt against the definitions (every layout, type, epilogue), and the
# emulated runtime's semantics the comparisons rely on (barriers, lazy streams, capture,
# the checks that abort)
cxx="g++ -std=c++17 -O1 -Wall -Wextra -Werror -Itemplates/common -I$CUDA/include -Itests/cuda_emu"
if $cxx -c tests/cuda_emu/emu_runtime.cpp -o "$tmp/emu_runtime.o" >"$tmp/unit.log" 2>&1 &&
   $cxx tests/cuda_emu/test_cublaslt.cpp "$tmp/emu_runtime.o" -o "$tmp/test_cublaslt" -lopenblas -lpthread -ldl >>"$tmp/unit.log" 2>&1 &&
   $cxx -x c++ -include emu_device.h -c tests/cuda_emu/test_runtime_kernels.cu -o "$tmp/test_runtime_kernels.o" >>"$tmp/unit.log" 2>&1 &&
   $cxx tests/cuda_emu/test_runtime.cpp "$tmp/emu_runtime.o" "$tmp/test_runtime_kernels.o" -o "$tmp/test_runtime" -lopenblas -lpthread -ldl >>"$tmp/unit.log" 2>&1; then
  harness emu_cublaslt "$CUBLASLT_CASES" "" "$tmp/test_cublaslt"
  harness emu_runtime "$RUNTIME_CASES" "" "$tmp/test_runtime"
else
  fail emu_cublaslt "did not build: $(grep -m1 error "$tmp/unit.log")"; fail emu_runtime "did not build"
fi

# the cut-down Fashion-MNIST
data="$tmp/fashion"
mkdir -p "$data"
# fashion_cnn's: its variant validates on 1000 (the train/val split keeps the first
# samples to train on: the same 128 as fashion_mlp's)
data_cnn="$tmp/fashion_cnn_data"
mkdir -p "$data_cnn"
python3 tests/harness/cut_fashion.py "$data" 5128 256 && python3 tests/harness/cut_fashion.py "$data_cnn" 1128 256 ||
  { for t in $(names); do fail "$t" "cannot cut down Fashion-MNIST"; done; exit 0; }
# tiny_gpt's token files (llm.c's layout, a byte per token): 16 KB of the KJV, 10% to validate
mkdir -p "$tmp/kjv"
head -c 16384 build/kjv.txt >"$tmp/kjv.txt" 2>/dev/null && "$LOOM" data tokens "$tmp/kjv.txt" -o "$tmp/kjv/kjv.bin" --val 0.1 >/dev/null 2>&1 ||
  echo "# no build/kjv.txt (ninja makes it): tiny_gpt's comparisons will fail" >&2
data_flag() { case $1 in fashion_cnn) echo "--data $data_cnn" ;; fashion*|mlp*) echo "--data $data" ;; tiny_gpt) echo "--data $tmp/kjv" ;; esac; }

# build NAME SPEC_FILE PRECISION: DIR/cpu/train and DIR/cuda/emu/run; prints why on failure
build() {
  local d="$tmp/$1"
  mkdir -p "$d"
  "$LOOM" build "$2" --accelerator=cpu --precision="$3" --devices=1 -o "$d/cpu" >"$d/cpu.log" 2>&1 || { echo "loom build (cpu) failed: $(grep -m1 . "$d/cpu.log")"; return 1; }
  # --devices=1: paw asks for 2 (ddp), which the one-GPU CUDA program refuses
  "$LOOM" build "$2" --accelerator=cuda --precision="$3" --devices=1 --no-compile -o "$d/cuda" >"$d/cuda.log" 2>&1 ||
    { echo "loom build --accelerator=cuda refuses it: $(grep -m1 -i 'error\|not' "$d/cuda.log" || grep -m1 . "$d/cuda.log")"; return 2; }
  tests/cuda_emu/build.sh "$d/cuda" >"$d/emu.log" 2>&1 || { echo "emulated build failed: $(grep -m1 -i error "$d/emu.log")"; return 1; }
}

# compare NAME SPEC_FILE PRECISION [SKIP_IF_REFUSED]
compare() {
  local s=$1 spec=$2 p=$3 name="emu_vs_cpu_$1_$3" d="$tmp/$1_$3" why rc
  why=$(build "${s}_$p" "$spec" "$p"); rc=$?
  if [ $rc -eq 2 ] && [ -n "${4:-}" ]; then echo "ok $name # SKIP $why"; return; fi
  [ $rc -eq 0 ] || { echo "not ok $name: $why"; return; }
  local flags="--max-steps ${SPEC_STEPS[${s}_$p]:-1} --epochs 1 --seed 11 $(data_flag "$s")"
  "$d/cpu/train" $flags --out "$d/cpu/run" >"$d/cpu.txt" 2>&1 || { echo "not ok $name: CPU run failed: $(tail -1 "$d/cpu.txt")"; return; }
  local t0=$SECONDS
  "$d/cuda/emu/run" $flags --out "$d/cuda/run" >"$d/emu.txt" 2>&1 || { echo "not ok $name: emulated run failed: $(grep -m1 cuda_emu "$d/emu.txt" || tail -1 "$d/emu.txt")"; return; }
  local secs=$((SECONDS - t0)) tol=${SPEC_TOL[${s}_$p]:-${TOL[$p]}}
  cmp=$("$tmp/compare_ckpt" "$d/cuda/run/last.safetensors" "$d/cpu/run/last.safetensors" "$tol" "${ROUNDOFF[$p]}" 2>&1); ok=$?
  lc=$(grep -o "val/loss [0-9.naif]*" "$d/cpu.txt" | head -1 | cut -d' ' -f2)
  lg=$(grep -o "val/loss [0-9.naif]*" "$d/emu.txt" | head -1 | cut -d' ' -f2)
  lossok=$(awk -v a="$lc" -v b="$lg" -v t="$tol" 'BEGIN { d = a - b; if (d < 0) d = -d; print (a != "" && d <= t * (a < 0 ? -a : a) + 1e-4) ? 1 : 0 }')
  if [ $ok -eq 0 ] && [ "$lossok" = 1 ]; then echo "ok $name (val/loss cpu $lc emu $lg; $cmp; ${secs} s)"
  else echo "not ok $name: val/loss cpu $lc emu $lg; $cmp"; fi
}

# graph NAME PRECISION: after compare, --cuda-graph against plain, 6 steps, bit for bit
graph() {
  local s=$1 p=$2 d="$tmp/$1_$2" name="emu_cuda_graph_$1_$2"
  [ -x "$d/cuda/emu/train" ] || { echo "not ok $name: no emulated program"; return; }
  local flags="--max-steps 6 --epochs 1 --seed 11"   # the whole data: the cut-down set has one batch
  "$d/cuda/emu/run" $flags --out "$d/plain" >"$d/plain.txt" 2>&1 || { echo "not ok $name: plain run failed: $(tail -1 "$d/plain.txt")"; return; }
  "$d/cuda/emu/run" $flags --out "$d/graph" --cuda-graph >"$d/graph.txt" 2>&1 || { echo "not ok $name: --cuda-graph run failed: $(grep -m1 cuda_emu "$d/graph.txt" || tail -1 "$d/graph.txt")"; return; }
  launches=$(sed -n 's/^--cuda-graph: \([0-9]*\) graph launches/\1/p' "$d/graph.txt")
  if cmp -s "$d/graph/last.safetensors" "$d/plain/last.safetensors"; then ok=0; cmp="identical files"
  else cmp=$("$tmp/compare_ckpt" "$d/graph/last.safetensors" "$d/plain/last.safetensors" 0 0 0 2>&1); ok=$?; fi
  if [ $ok -eq 0 ] && [ "${launches:-0}" -gt 0 ]; then echo "ok $name ($launches graph launches; $cmp)"
  else echo "not ok $name: launches ${launches:-none}; $cmp"; fi
}

mkdir -p "$tmp/variants"
variant() {   # NAME DROPOUT OPTIMIZER CLIP
  sed -e "s/Linear(784, 256), ReLU(),/Linear(784, 256), ReLU(), $2/" \
      -e "s/optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },/optimizer = $3, clip = $4,/" specs/fashion_mlp.lua >"$tmp/variants/$1.lua"
}
variant mlp_sgd_clipnorm_dropout "Dropout(0.2)," "SGD { lr = 0.05, momentum = 0.9, dampening = 0.1, weight_decay = 1e-3 }" "{ max_norm = 0.5 }"
variant mlp_adamw_clipval_dropout "Dropout(0.5)," "AdamW { lr = 1e-3, weight_decay = 0.01 }" "{ clip_val = 0.01 }"
# parameter groups on the device: the biases in a group of their own lr and no decay
variant mlp_sgd_groups "" 'SGD { lr = 0.05, momentum = 0.9, weight_decay = 1e-2, groups = { { params = "%.bias$", lr = 0.1, weight_decay = 0 } } }' "nil"
# fashion_cnn and paw with less to run (the emulator runs one thread)
sed 's/val_split = 5000/val_split = 1000/' specs/fashion_cnn.lua >"$tmp/variants/fashion_cnn.lua"
sed -e 's/    size = 2048,/    size = 2048, val_size = 16,/' -e 's/  batch_size = 32,/  batch_size = 16,/' specs/paw.lua >"$tmp/variants/paw.lua"
grep -q "val_split = 1000" "$tmp/variants/fashion_cnn.lua" && grep -q "val_size = 16" "$tmp/variants/paw.lua" &&
  grep -q "batch_size = 16," "$tmp/variants/paw.lua" ||
  echo "# specs/fashion_cnn.lua or specs/paw.lua changed: its variant validates on the whole set" >&2
# tiny_gpt cut down (the emulator runs one thread): context 32, width 64, 2 blocks, batch 4
sed -e 's/^local V, T, C, H, L = 256, 128, 256, 4, 4 /local V, T, C, H, L = 256, 32, 64, 4, 2 /' \
    -e 's/batch_size = 8,/batch_size = 4,/' specs/tiny_gpt.lua >"$tmp/variants/tiny_gpt.lua"
grep -q "^local V, T, C, H, L = 256, 32, 64, 4, 2 " "$tmp/variants/tiny_gpt.lua" || echo "# specs/tiny_gpt.lua changed: its cut-down variant is not cut down" >&2

# two lanes (the emulator runs one thread): fashion_cnn's runs beside the rest
(
  for c in "${CNN[@]}"; do set -- $c; compare "$1" "${2/#@/$tmp/}" "$3"; done
) >"$tmp/lane_cnn.tap" 2>&1 &
lane=$!
for c in "${MAIN[@]}"; do set -- $c; compare "$1" "${2/#@/$tmp/}" "$3" ${4:-}; done
for p in "${GRAPH[@]}"; do graph fashion_mlp "$p"; done

# resume with 16-bit state on the device: 3 epochs (one batch each) in one run == 1
# epoch, then resumed to 3, bit for bit (parameters, moments, buffers through the
# checkpoint's BF16/F16 tensors and back)
for p in "${RESUME[@]}"; do
  d="$tmp/fashion_mlp_$p" name="emu_resume_fashion_mlp_$p"
  [ -x "$d/cuda/emu/train" ] || { echo "not ok $name: no emulated program"; continue; }
  flags="--seed 11 --data $data"
  "$d/cuda/emu/run" --epochs 3 $flags --out "$d/e3" >"$d/e3.txt" 2>&1 &&
  "$d/cuda/emu/run" --epochs 1 $flags --out "$d/e1" >"$d/e1.txt" 2>&1 &&
  "$d/cuda/emu/run" --epochs 3 $flags --resume "$d/e1/last.safetensors" --out "$d/e13" >"$d/e13.txt" 2>&1
  if [ $? -ne 0 ]; then echo "not ok $name: a run failed: $(tail -1 "$d"/e*.txt | tr '\n' '|')"
  elif cmp -s "$d/e3/last.safetensors" "$d/e13/last.safetensors"; then echo "ok $name"
  else echo "not ok $name: $("$tmp/compare_ckpt" "$d/e13/last.safetensors" "$d/e3/last.safetensors" 0 0 0 2>&1)"; fi
done

# 7 batches an epoch under accumulate = 3: the leftover micro-batch makes the epoch's
# last step (as in Lightning and the C program); 2 epochs == 1, resumed to 2, bit for
# bit, and the C program's weights within 32-true's tolerance
d="$tmp/acc3" name=emu_accumulate_leftover
mkdir -p "$d"
cat >"$d/acc3.lua" <<'LUA'
model "Acc3" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 16), ReLU(), Linear(16, 1) },
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{8}, y = Tensor{1} }, size = 56 },
  batch_size = 8, accumulate = 3,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.05, momentum = 0.9 },
  epochs = 2,
}
LUA
if why=$(build acc3 "$d/acc3.lua" 32-true); then
  "$d/cpu/train" --quiet --out "$d/c2" >"$d/c2.txt" 2>&1 &&
  "$d/cuda/emu/run" --quiet --out "$d/e2" >"$d/e2.txt" 2>&1 &&
  "$d/cuda/emu/run" --epochs 1 --quiet --out "$d/e1" >"$d/e1.txt" 2>&1 &&
  "$d/cuda/emu/run" --epochs 2 --resume "$d/e1/last.safetensors" --quiet --out "$d/e12" >"$d/e12.txt" 2>&1
  if [ $? -ne 0 ]; then echo "not ok $name: a run failed: $(tail -1 "$d"/*.txt | tr '\n' '|')"
  elif ! grep -q "trained 6 steps" "$d/e2.txt"; then echo "not ok $name: $(grep trained "$d/e2.txt") (7 batches, accumulate 3, 2 epochs: 6 steps)"
  elif ! cmp -s "$d/e2/last.safetensors" "$d/e12/last.safetensors"; then echo "not ok $name: resumed at the epoch's end: $("$tmp/compare_ckpt" "$d/e12/last.safetensors" "$d/e2/last.safetensors" 0 0 0 2>&1)"
  elif cmp=$("$tmp/compare_ckpt" "$d/e2/last.safetensors" "$d/c2/last.safetensors" "${TOL[32-true]}" 2>&1); then echo "ok $name (resume bit for bit; against the C program: $cmp)"
  else echo "not ok $name: against the C program: $cmp"; fi
else echo "not ok $name: $why"; fi

# ASan + UBSan: an out-of-bounds kernel access, a too-small scratch arena, a use after free
d="$tmp/fashion_mlp_16-mixed/cuda"
if tests/cuda_emu/build.sh --asan "$d" >"$tmp/asan_build.log" 2>&1; then
  # (leak checking off: the programs leave their device memory to the process's exit)
  if ASAN_OPTIONS=detect_leaks=0 "$d/emu-asan/run" --max-steps 2 --epochs 1 --seed 11 --data "$data" --out "$tmp/asan_run" >"$tmp/asan.txt" 2>&1; then
    echo "ok emu_asan_fashion_mlp_16-mixed"
  else echo "not ok emu_asan_fashion_mlp_16-mixed: $(grep -m1 'ERROR\|runtime error\|cuda_emu' "$tmp/asan.txt" || tail -1 "$tmp/asan.txt")"; fi
else echo "not ok emu_asan_fashion_mlp_16-mixed: ASan build failed: $(grep -m1 -i error "$tmp/asan_build.log")"; fi

wait $lane
cat "$tmp/lane_cnn.tap"
