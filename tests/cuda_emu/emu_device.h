// cuda_emu: what a loom kernel source (DIR/kernels/NAME.cu, written for NVRTC) needs to
// compile as host C++.  build.sh compiles each kernel as its own translation unit with
// `-include emu_device.h`, then registers it by name (EMU_KERNEL at the end of the TU).
//
// Execution model (emu_runtime.cpp): a launch runs its blocks one after another; a block's
// threads run one at a time, each to its next __syncthreads() (or warp sync/shuffle),
// on its own fiber.  So `__shared__` can be a function-local static (one block lives at a
// time) and atomics are plain read-modify-writes.
#ifndef CUDA_EMU_DEVICE_H
#define CUDA_EMU_DEVICE_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu_kernel.h"

// the kernel sources test these to pick the device spelling of their bit casts etc.
#define __CUDACC_RTC__ 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
#define __constant__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
extern "C" uint3 threadIdx, blockIdx;
extern "C" dim3 blockDim, gridDim;
static const int warpSize = 32;

extern "C" void emu_syncthreads(void);
extern "C" void emu_syncwarp(void);
// a shuffle: every lane of the warp publishes `bits`, meets the others, reads lane `src`'s
extern "C" uint64_t emu_shfl(uint64_t bits, int src_lane, int width, int mode);

static inline void __syncthreads(void) { emu_syncthreads(); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_syncwarp(); }
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

template <typename T> static inline T emu_shfl_t(T v, int lane, int width, int mode) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = emu_shfl(b, lane, width, mode);
    memcpy(&v, &b, sizeof v);
    return v;
}
template <typename T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32) { return emu_shfl_t(v, src, width, EMU_SHFL_IDX); }
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32) { return emu_shfl_t(v, m, width, EMU_SHFL_XOR); }
template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32) { return emu_shfl_t(v, (int)d, width, EMU_SHFL_DOWN); }
template <typename T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32) { return emu_shfl_t(v, (int)d, width, EMU_SHFL_UP); }

// bit casts and intrinsics
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
static inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// __expf and __logf: glibc declares (and defines) them as expf and logf
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __saturatef(float x) { return x < 0 ? 0 : x > 1 ? 1 : x; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline long long __ldg(const long long *p) { return *p; }
template <typename T> static inline T __ldg(const T *p) { return *p; }

// atomics: threads of a launch never run at the same time, so a plain update is atomic
template <typename T> static inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> static inline T atomicSub(T *p, T v) { T o = *p; *p = o - v; return o; }
template <typename T> static inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> static inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> static inline T atomicOr(T *p, T v) { T o = *p; *p = o | v; return o; }
template <typename T> static inline T atomicAnd(T *p, T v) { T o = *p; *p = o & v; return o; }
template <typename T> static inline T atomicXor(T *p, T v) { T o = *p; *p = o ^ v; return o; }
template <typename T> static inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <typename T> static inline T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

#endif
