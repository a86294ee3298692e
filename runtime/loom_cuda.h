#ifndef LOOM_CUDA_H
#define LOOM_CUDA_H
// The CUDA backend's host runtime, linked into every generated CUDA program (compiled
// by nvcc with the program; callable from C): the device check behind
// `accelerator = "auto"`, the NVRTC kernels (through runtime/nvrtc_cache: compiled at
// start-up for the device's architecture, cached on disk, launched through the
// driver's cuLaunchKernel, opened with dlopen like the rest of the driver), and the
// GEMMs through cuBLASLt, with the operand and output formats of the precision plan
// and float accumulation.
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
#define LC_THREAD_LOCAL thread_local
#else
#define LC_THREAD_LOCAL _Thread_local
#endif

#ifdef __cplusplus
extern "C" {   // nvrtc_cache.h is plain C
#include "nvrtc_cache.h"
}
#else
#include "nvrtc_cache.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Formats, as gen/precision.lua names them.
typedef enum { LC_F32 = 0, LC_BF16 = 1, LC_F16 = 2 } lc_format;

// Prints "train: <what>: <cuda error string>" and exits 1 unless `status` is success.
void lc_check(int status, const char *what, const char *file, int line);
// Every failure of this runtime (lc_check, cuBLASLt, NVRTC, a launch) ends in lc_fail:
// "train: <message>" and exit 1 in a program; in a library (loom export) a call that set
// this thread's lc_recover (lc_guard) gets the message there and longjmp's back to it,
// which returns it as an error value.  Nothing between keeps a C++ object with a destructor.
typedef struct { jmp_buf at; char message[512]; } lc_recovery;
extern LC_THREAD_LOCAL lc_recovery *lc_recover;
void lc_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define LC_CHECK(call) lc_check((int)(call), #call, __FILE__, __LINE__)

// The device check at start.  `accelerator` is the spec's ("cuda" or "auto").  With a
// device: selects it (ordinal `device`) and returns.  Without one: for "auto", says so
// in one line and exec's the CPU build of the same spec (`cpu_program`, relative to
// this program's directory) with the same arguments less the GPU's own (--cuda-graph,
// --device N); for "cuda", one line and exit 1.
void lc_require_device(int argc, char **argv, const char *accelerator, const char *cpu_program, int device);

// One NVRTC kernel of the program: its name (the extern "C" __global__ function) and
// its source, which #includes the program's prelude by this name (scalar_ops.h, the
// state's types: the text common to every kernel, held once in model.cu).
typedef struct { const char *name; const char *source; } lc_kernel_source;
#define LC_PRELUDE "loom_prelude.h"

// Compiles (or reads from the cache) and loads every kernel for the current device, the
// text of `prelude` given to NVRTC as LC_PRELUDE; prints one line with the count, cache
// hits and time unless quiet.  Exits on error.
void lc_kernels_load(const char *prelude, const lc_kernel_source *src, int n, jit_kernel *out, int quiet);
// --jit-check: compiles every kernel for sm_XY as a cubin and as PTX (written to
// `ptx_dir`/<name>.ptx for ptxas -v); no device needed.  Returns the number that failed.
int lc_kernels_check(const char *prelude, const lc_kernel_source *src, int n, int sm_major, int sm_minor,
                     const char *ptx_dir);

// Launches `k` on `stream` (a cudaStream_t) with a 1-D grid.
void lc_launch(const jit_kernel *k, unsigned blocks, unsigned threads, void *stream, void **args);
// Blocks of `threads` covering n elements (at least 1, at most 65535 * 32: kernels loop).
unsigned lc_blocks(int64_t n, unsigned threads);

// Row-major GEMM through cuBLASLt: C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C,
// A stored (M x K), or (K x M) when ta; B stored (K x N), or (N x K) when tb.  A and B
// in `ab` format, C in `cf`, float accumulation (TF32 only when tf32 and ab is f32).
// `bias` (N, in format cf) is added to every row through the epilogue when not NULL.
// Each call site keeps its plan (layouts, heuristic's algorithm) per (M, N, K) in `site`.
typedef struct lc_gemm_site lc_gemm_site;
struct lc_gemm_site { void *plans[4]; int64_t mnk[4][3]; int n; const char *what; };
void lc_gemm(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
             lc_format ab, void *C, lc_format cf, float beta, const void *bias, int tf32, void *stream);
// The same GEMM over `batch` matrices at once (cuBLASLt's strided batches): matrix i of A
// starts at A + i * sa elements, of B at B + i * sb, of C at C + i * sc; a stride of 0
// gives every batch the same matrix (a broadcast operand; never for C).  C = alpha *
// op(A) op(B) + beta * C.  Each call site keeps its plans per (M, N, K, batch).
void lc_gemm_batched(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t batch,
                     const void *A, int64_t sa, const void *B, int64_t sb, lc_format ab,
                     void *C, int64_t sc, lc_format cf, float alpha, float beta, int tf32, void *stream);
// The GEMM with an activation in cuBLASLt's epilogue: C = act(op(A) op(B) + bias) (the
// fuse pass's linear + activation: the pre-activation need not go to memory).
//   LC_EPI_RELU      ReLU commutes with the rounding of C: the result is the unfused GEMM's
//                    + ReLU kernel's, bit for bit.
//   LC_EPI_GELU      GELU, tanh approximation, computed by cuBLASLt (its arithmetic, not
//                    scalar_ops.h's so_gelu_tanh: the last bits may differ from the unfused);
//   LC_EPI_GELU_AUX  the same, and the pre-activation written to `aux` (M x N, format cf,
//                    N a multiple of 8), which GELU's backward reads.
typedef enum { LC_EPI_NONE = 0, LC_EPI_RELU = 1, LC_EPI_GELU = 2, LC_EPI_GELU_AUX = 3 } lc_epilogue;
void lc_gemm_epilogue(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                      lc_format ab, void *C, lc_format cf, float beta, const void *bias, lc_epilogue epi, void *aux,
                      int tf32, void *stream);
void lc_gemm_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif
