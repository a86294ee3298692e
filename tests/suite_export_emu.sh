#!/usr/bin/env bash
# loom export --accelerator=cuda (gen/emit_export_cuda.lua, templates/export/lib.cu.in),
# run under the CUDA emulator (tests/cuda_emu: no GPU here; emulator only):
#  - the exported CUDA fashion_cnn (compiled by nvcc -Werror), paw and tiny_transformer
#    (32-true; compiled for the emulator only) give
#    the CPU export's outputs on the same checkpoint and batch (tests/torch/export_case.py's
#    weights, running statistics away from 0/1) within fp32 tolerance: max |cuda - cpu| <=
#    1e-5 x max |cpu| (measured: fashion_cnn 1.5e-7 of 0.19, paw 0, tiny_transformer
#    1.1e-5 of 60: cuBLASLt's emulated summation order is not oneDNN's);
#  - tests/harness/export_use.cpp, the CPU library's C++ user, linked with the emulated
#    library: 2 threads calling forward on one model (equal to one thread's, bit for bit),
#    error values for bad arguments, random batch sizes and bits (fuzz, runs counted), and
#    another model's, a truncated and a corrupt checkpoint refused with a message;
#  - the CLI's bad input (a wrong shape) gets one line and a non-zero exit;
#  - libNAME.so exports only the API and links cuBLASLt (cudart static), no Lua, MPI,
#    oneDNN or training code; without a GPU the real CLI says so in one line.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. tests/tap.sh
SPECS="fashion_cnn paw tiny_transformer"
USE_TESTS="threads errors fuzz checkpoints"
plan 10
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
export LOOM_KERNEL_CACHE=${LOOM_KERNEL_CACHE:-$work/kernel_cache}
export OMP_WAIT_POLICY=passive
B=5

all_names() {
  for s in $SPECS; do echo "export cuda $s equals the CPU export"; done
  for t in $USE_TESTS; do echo "export cuda C++ $t"; done
  echo "export cuda CLI: wrong shape names the file"
  echo "export cuda lib exports the API only and links cuBLASLt, no Lua, MPI, oneDNN or training code"
  echo "export cuda CLI without a device: one line"
}
nvrtc=$(ls "$CUDA"/lib64/libnvrtc.so* 2>/dev/null | head -1)
if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -f "$CUDA/include/cublasLt.h" ] || [ -z "$nvrtc" ] || ! command -v g++ >/dev/null; then
  all_names | while read -r t; do skip "$t" "no CUDA toolkit (nvcc, headers, NVRTC) or g++"; done
  exit 0
fi
if py_lacks torch numpy; then
  all_names | while read -r t; do no_torch "$t" "$PY has no torch or numpy (no weights)"; done
  exit 0
fi

# SPEC: the CPU and the CUDA export of export_case.py's weights, the CUDA one built for the emulator
for s in $SPECS; do
  w="$work/$s"; mkdir -p "$w"
  name="export cuda $s equals the CPU export"
  "$PY" tests/torch/export_case.py "$s" "$w" $B >/dev/null 2>"$w/py.log" || { fail "$name" "export_case.py: $(tail -1 "$w/py.log")"; continue; }
  "$LOOM" export "specs/$s.lua" --precision=32-true --checkpoint "$w/weights.safetensors" --max-batch 8 -o "$w/cpu" >"$w/cpu.log" 2>&1 \
    || { fail "$name" "loom export: $(tail -1 "$w/cpu.log")"; continue; }
  # (fashion_cnn's is compiled as a user's is, with nvcc -Werror; the others only for the emulator)
  nc=--no-compile; [ $s = fashion_cnn ] && nc=
  "$LOOM" export "specs/$s.lua" --precision=32-true --checkpoint "$w/weights.safetensors" --max-batch 8 --accelerator=cuda $nc \
    -o "$w/cuda" >"$w/cuda.log" 2>&1 || { fail "$name" "loom export --accelerator=cuda: $(tail -1 "$w/cuda.log")"; continue; }
  tests/cuda_emu/build.sh "$w/cuda" >"$w/emu.log" 2>&1 || { fail "$name" "emulated build: $(tail -1 "$w/emu.log")"; continue; }
  case $s in fashion_cnn) ins="$w/image.npy" ;; paw) ins="img=$w/img.npy feat=$w/feat.npy" ;; *) ins="$w/idx.npy" ;; esac
  mkdir -p "$w/out_cpu" "$w/out_cuda"
  "$w/cpu/$s" $ins -o "$w/out_cpu" >"$w/run_cpu.log" 2>&1 || { fail "$name" "CPU CLI: $(tail -1 "$w/run_cpu.log")"; continue; }
  "$w/cuda/emu/run" --weights "$w/cuda/$s.safetensors" $ins -o "$w/out_cuda" >"$w/run_cuda.log" 2>&1 \
    || { fail "$name" "emulated CUDA CLI: $(tail -1 "$w/run_cuda.log")"; continue; }
  why=$("$PY" - "$w/out_cpu/output.npy" "$w/out_cuda/output.npy" <<'PYEOF' 2>&1
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
if a.shape != b.shape or b.dtype != np.float32: sys.exit("shape %s %s against the CPU's %s" % (b.shape, b.dtype, a.shape))
d, m = float(np.abs(a - b).max()), float(np.abs(a).max())
if not np.isfinite(b).all() or d > 1e-5 * m: sys.exit("max |cuda - cpu| %.3g of max |cpu| %.3g" % (d, m))
print("max |cuda - cpu| %.3g of max |cpu| %.3g" % (d, m))
PYEOF
) && ok "$name ($why)" || fail "$name" "$why"
done

# export_use.cpp against the emulated fashion_cnn library: the library's objects (not the CLI's)
x="$work/fashion_cnn/cuda"
if [ -x "$x/emu/fashion_cnn" ]; then
  objs=$(ls "$x"/emu/obj/*.o | grep -v -e '_cli\.o$' -e '/npy\.o$' -e '/data\.o$' -e '/idx\.o$' -e '/tokens\.o$')
  if g++ -std=c++17 -O1 -Wall -Wextra -Werror -DNAME=fashion_cnn -DNAME_UPPER=FASHION_CNN -I"$x" tests/harness/export_use.cpp $objs \
      -Wl,--dynamic-list=tests/cuda_emu/exports.list -lopenblas -lz -lpthread -ldl -lrt -lm -o "$work/use" 2>"$work/use.log"; then
    harness "export cuda C++ use" 4 "s/^\(ok\|not ok\) /\1 export cuda C++ /" env LD_LIBRARY_PATH="$x/emu" "$work/use" \
      "$x/fashion_cnn.safetensors" 2 30 "$work/tiny_transformer/weights.safetensors"
  else
    for t in $USE_TESTS; do fail "export cuda C++ $t" "does not link: $(grep -m1 error "$work/use.log")"; done
  fi
  "$PY" -c "import numpy as np; np.save('$work/shape.npy', np.zeros((2, 1, 28, 27), np.float32))"
  expect_error "export cuda CLI: wrong shape names the file" "shape.npy: input 'image' must have shape (N, 1, 28, 28)" \
    "$x/emu/run" --weights "$x/fashion_cnn.safetensors" "$work/shape.npy" -o "$work"
else
  for t in $USE_TESTS; do fail "export cuda C++ $t" "no emulated fashion_cnn"; done
  fail "export cuda CLI: wrong shape names the file" "no emulated fashion_cnn"
fi

# what the library is: the API only; cuBLASLt (cudart static; NVRTC and the driver are dlopen'ed)
name="export cuda lib exports the API only and links cuBLASLt, no Lua, MPI, oneDNN or training code"
if [ -f "$x/libfashion_cnn.so" ]; then
  syms=$(nm -D --defined-only "$x/libfashion_cnn.so" | awk '{print $3}' | sort | tr '\n' ' ')
  want="fashion_cnn_close fashion_cnn_forward fashion_cnn_forward_arrays fashion_cnn_input fashion_cnn_open fashion_cnn_output "
  links=$(ldd "$x/libfashion_cnn.so" | awk '{print $1}')
  deps=$(printf '%s\n' "$links" | grep -Ei 'lua|mpi|dnnl|openblas' || true)
  train=$(nm "$x/libfashion_cnn.a" 2>/dev/null | grep -Ei 'adam|sgd|backward|optimizer|loader' || true)
  if [ "$syms" != "$want" ]; then fail "$name" "exports: $syms"
  elif ! printf '%s\n' "$links" | grep -q cublasLt; then fail "$name" "no cuBLASLt in: $(echo $links)"
  elif [ -n "$deps" ]; then fail "$name" "links: $deps"
  elif [ -n "$train" ]; then fail "$name" "has: $(echo "$train" | head -1)"
  else ok "$name"; fi
else
  fail "$name" "no exported CUDA fashion_cnn"
fi

# the real CLI, linked with the real runtime: on this machine's GPU it runs; without one, one line
name="export cuda CLI without a device: one line"
if [ ! -x "$x/fashion_cnn" ]; then fail "$name" "no exported CUDA fashion_cnn"
elif "$x/fashion_cnn" --check >"$work/check.log" 2>&1; then skip "$name" "a CUDA device is here: the forward ran"
else
  [ "$(grep -c . "$work/check.log")" = 1 ] && grep -q "fashion_cnn_open: no CUDA device" "$work/check.log" && ok "$name" \
    || fail "$name" "$(head -3 "$work/check.log")"
fi
