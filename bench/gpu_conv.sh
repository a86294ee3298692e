#!/usr/bin/env bash
# The convolution choice, measured: the CUDA backend's im2col + one cuBLASLt GEMM
# (gen/ops_cuda.lua's conv2d) against cuDNN's forward / backward-data / backward-filter
# with the fastest algorithm cudnnFind* picks, at fashion_cnn's and paw's conv shapes,
# fp32 (no TF32) and bf16; ms per call and the ratio loom / cuDNN (above 1: cuDNN is
# faster).  Not part of the tests (tests/suite_cuda.sh only compiles it).
#   bench/gpu_conv.sh              build into a temporary directory and run
#   bench/gpu_conv.sh --build DIR  build DIR/gpu_conv only
# Without a GPU the program prints "no GPU" and exits 0.
set -eu
cd "$(dirname "$0")/.."
CUDA=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$CUDA/bin/nvcc" ]; then echo "bench/gpu_conv.sh: no CUDA toolkit ($CUDA/bin/nvcc)"; exit 1; fi
if [ ! -f "$CUDA/include/cudnn.h" ] && [ ! -f /usr/include/cudnn.h ]; then echo "bench/gpu_conv.sh: no cuDNN headers"; exit 1; fi
if [ "${1:-}" = "--build" ]; then out=$2; mkdir -p "$out"
else out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi
libdir=$CUDA/lib64
[ -e "$libdir/libcudnn.so" ] || libdir=$(dirname "$(ls "$CUDA"/lib*/libcudnn.so* /usr/lib/x86_64-linux-gnu/libcudnn.so* 2>/dev/null | head -1)")
archs="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90"
flags="-std=c++17 -O2 $archs -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Iruntime"
"$CUDA/bin/nvcc" $flags -c bench/gpu_conv.cu -o "$out/gpu_conv.o"
"$CUDA/bin/nvcc" $flags -c runtime/loom_cuda.cu -o "$out/loom_cuda.o"
cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -I"$CUDA/include" -c runtime/nvrtc_cache.c -o "$out/nvrtc_cache.o"
cc "$out/gpu_conv.o" "$out/loom_cuda.o" "$out/nvrtc_cache.o" -o "$out/gpu_conv" -L"$CUDA/lib64" -L"$libdir" \
  -Wl,-rpath,"$CUDA/lib64" -Wl,-rpath,"$libdir" -lcudnn -lcublasLt -lcudart_static -lz -lpthread -ldl -lrt -lm -lstdc++
[ "${1:-}" = "--build" ] && exit 0
"$out/gpu_conv"
