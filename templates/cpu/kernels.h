#ifndef LOOM_KERNELS_H
#define LOOM_KERNELS_H
// kernels.h: the CPU kernel library that every generated C program calls.
// Header-only and `static inline`: the generated code passes compile-time-constant
// sizes, so the compiler specialises each call.  C11 + OpenMP + oneDNN (float GEMMs)
// + CBLAS (OpenBLAS: the double GEMMs of 64-true).
// Copied next to every generated program together with its parts:
//   kernels_nn.inc       linear, conv2d, max/avg pool, batch norm, layer norm, embedding
//   kernels_pointwise.inc activations, dropout, add/sub/mul/div (equal, scalar, row, broadcast)
//   kernels_shape.inc    permute, slice, cat, sum/mean, softmax, log_softmax, matmul, attention
//   kernels_loss.inc     cross entropy (class index and soft), bce, bce_with_logits, mse, l1
//   kernels_optim.inc    sgd, adam, adamw, grad norm / clipping, loss unscaling, initialisers
//   kernels_cast.inc     bf16 / f16 storage and the conversions of the precision plan
// and needs runtime/philox.h on the include path (dropout and initialisers).
//
// Every kernel is written once over a scalar type T and instantiated twice:
//   k_<op>_forward_f32 / k_<op>_backward_f32   (T = float)
//   k_<op>_forward_f64 / k_<op>_backward_f64   (T = double: "64-true", gradient checks)
// In the .inc files a kernel is declared as FN(k_linear_forward)(...), which the
// preprocessor turns into k_linear_forward_f32 and k_linear_forward_f64.
//
// The kernels (each as _f32 and _f64; T is float or double; "d" a dims struct below):
//   linear     k_linear_{forward,backward}            conv2d  k_conv2d_{forward,backward}, k_conv2d_scratch
//   pooling    k_max_pool2d_{forward,backward}        k_avg_pool2d_{forward,backward}
//   norms      k_batch_norm_forward_{train,eval}, k_batch_norm_backward{,_eval}, k_layer_norm_{forward,backward}
//   embedding  k_embedding_{forward,backward}
//   pointwise  k_{relu,sigmoid,tanh,silu,gelu,dropout}_{forward,backward}
//   arithmetic k_{add,sub,mul,div}_{forward,backward}                 (equal shapes)
//              k_{add,sub,mul,div}_row_{forward,backward}             (a (M, K) op b (K))
//              k_{add,sub,mul,div}_bcast_{forward,backward}           (general broadcast, k_bcast_dims)
//              k_{add,sub,mul,div}_scalar_{forward,backward}, k_{rsub,rdiv}_scalar_{forward,backward}
//   shape      k_permute_{forward,backward}, k_transpose_{forward,backward}, k_slice_{forward,backward},
//              k_cat_{forward,backward}, k_sum_{forward,backward}, k_mean_{forward,backward}
//   softmax    k_softmax_{forward,backward}, k_log_softmax_{forward,backward}
//   matmul     k_matmul_{forward,backward} (k_matmul_dims)
//   attention  k_sdpa_{forward,backward}, k_sdpa_scratch
//   losses     k_cross_entropy_{forward,backward}, k_cross_entropy_soft_{forward,backward},
//              k_cross_entropy_soft_target_backward, k_{bce,bce_with_logits,mse,l1}_{forward,backward}
//   optimizers k_sgd_step, k_adam_step, k_adamw_step
//   clipping   k_grad_norm, k_scale, k_clamp (and k_clip_coef, type-independent)
//   scaler     k_unscale_check (GradScaler's unscale_ and found_inf)
//   init       k_init_uniform, k_init_normal, k_init_const
// The optimizer, clipping, scaler and init kernels also come as _bf16 and _f16: state
// stored in 16 bits, arithmetic in float (see kernels_optim.inc).
// Each kernel's shapes and math are in the comment above it in its .inc file.
//
// Note for generated code: <cblas.h> (OpenBLAS) includes <complex.h>, which
// defines the macro `I`: do not name a variable I.
//
// Conventions (as llm.c's train_gpt2.c):
//  - tensors are contiguous and row-major; the comment above each kernel gives the
//    shapes of its pointers and its math;
//  - backward ADDS (+=) into gradient buffers: the caller zeroes them once a step;
//  - any gradient pointer may be NULL when that gradient is not needed, and optional
//    inputs (bias, affine weights, running stats) may be NULL;
//  - loss kernels take `reduction` (K_REDUCTION_NONE / _MEAN / _SUM); their dloss
//    points to one value for mean/sum, to one value per loss element for none;
//  - kernels that need scratch memory say how much through a k_<op>_scratch_<sfx>
//    function (elements of T), sized for omp_get_max_threads() threads: ask after
//    the thread count is set.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include "philox.h"

#define K_REDUCTION_NONE 0
#define K_REDUCTION_MEAN 1
#define K_REDUCTION_SUM 2

// A fatal data error inside a kernel (index out of range): one line, then exit.
#define K_FAIL(...) do { fprintf(stderr, "error: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static inline int k_max_threads(void) { return omp_get_max_threads(); }

// The float GEMM: oneDNN's sgemm JIT-compiles for the widest ISA the CPU has (AVX-512
// where present, AVX2 otherwise; ONEDNN_MAX_CPU_ISA caps it), about twice OpenBLAS's
// Haswell kernels here (OPENBLAS_CORETYPE=Haswell is forced on this CPU).  Called inside
// an OpenMP team it runs on the calling thread.  Same argument order as cblas_sgemm.
static inline void k_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                           int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                           float beta, float *C, int ldc) {
    // (no kernel asks for column-major; oneDNN refuses empty operands' leading dimensions)
    if (order != CblasRowMajor || M == 0 || N == 0 || K == 0) {
        cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (dnnl_sgemm(ta == CblasNoTrans ? 'N' : 'T', tb == CblasNoTrans ? 'N' : 'T', M, N, K, alpha, A, lda, B, ldb,
                   beta, C, ldc) != dnnl_success)
        K_FAIL("oneDNN sgemm refused a %d x %d x %d product", M, N, K);
}

// Conv2d sizes.  inp (N, C, H, W), w (OC, C/G, KH, KW), b (OC), out (N, OC, OH, OW);
// S = stride, P = top/left padding (bottom/right padding is implied by OH/OW, so
// padding="same" with an even kernel works), D = dilation, G = groups.
typedef struct { int N, C, H, W, OC, KH, KW, SH, SW, PH, PW, DH, DW, G, OH, OW; } k_conv2d_dims;

// Pooling sizes.  inp (N, C, H, W), out (N, C, OH, OW).  OH/OW are given (they
// encode ceil_mode); windows that run past the input are clipped.  DH/DW are used
// by max pooling only; count_include_pad by average pooling only.
typedef struct { int N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW; int count_include_pad; } k_pool2d_dims;

// Broadcasting binary ops: out has `ndim` (<= 6) dims of sizes shape[], contiguous;
// operand a is read at element offset sum_i idx[i] * sa[i] (sa[i] = 0 on dims where
// a is broadcast), b likewise with sb.  The emitter computes the strides.
#define K_MAXDIM 6

// K_PARALLEL_FOR(cond, for (...) body;) runs the loop on the OpenMP team when cond
// holds and plainly otherwise.  Not `#pragma omp parallel for if (cond)`: with a false
// condition libgomp still sets up a one-thread team, about 1 µs a loop, which is most of
// the step of a small model.
#define K_PARALLEL_FOR(cond, ...) \
    do { if (cond) { _Pragma("omp parallel for") __VA_ARGS__ } else { __VA_ARGS__ } } while (0)
typedef struct { int ndim; int shape[K_MAXDIM]; int64_t sa[K_MAXDIM], sb[K_MAXDIM]; } k_bcast_dims;

// Batched matmul with broadcast batch dims:
//   out (batch..., M, N) = a (batch_a..., M, K) @ b (batch_b..., K, N)
// nb (<= 4) output batch dims of sizes bshape[]; sa/sb give, per batch dim, the
// stride of a/b counted in whole matrices (0 where that operand is broadcast).
// A 1-d operand is passed as a (1, K) or (K, 1) matrix.
typedef struct { int nb; int bshape[4]; int64_t sa[4], sb[4]; int M, K, N; } k_matmul_dims;

// Gradient clipping by norm, as torch.nn.utils.clip_grad_norm_: after summing
// k_grad_norm_<sfx> (a sum of squares) over all gradient buffers, the factor to
// k_scale_<sfx> every gradient by.  total_norm = sqrt(sum of squares).
static inline double k_clip_coef(double total_norm, double max_norm) {
    double coef = max_norm / (total_norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

// storage formats and conversions (bf16, f16): see kernels_cast.inc
#include "kernels_cast.inc"

// the type-generic kernels, instantiated for float and double
#define K_CAT2(a, b) a##_##b
#define K_CAT(a, b) K_CAT2(a, b)
#define FN(name) K_CAT(name, SFX)

#define T float
#define SFX f32
#define KM(fn) fn##f                 /* libm: KM(exp) is expf */
#define K_GEMM k_sgemm
#define K_EPS_T 1.1920928955078125e-07
#include "kernels_nn.inc"
#include "kernels_pointwise.inc"
#include "kernels_shape.inc"
#include "kernels_loss.inc"
#define KS T                         /* kernels_optim.inc: the storage type, KLD/KST its conversions */
#define KLD(x) (x)
#define KST(x) (x)
#include "kernels_optim.inc"
#undef KS
#undef KLD
#undef KST
#undef T
#undef SFX
#undef KM
#undef K_GEMM
#undef K_EPS_T

#define T double
#define SFX f64
#define KM(fn) fn
#define K_GEMM cblas_dgemm
#define K_EPS_T 2.220446049250313e-16
#include "kernels_nn.inc"
#include "kernels_pointwise.inc"
#include "kernels_shape.inc"
#include "kernels_loss.inc"
#define KS T                         /* kernels_optim.inc: the storage type, KLD/KST its conversions */
#define KLD(x) (x)
#define KST(x) (x)
#include "kernels_optim.inc"
#undef KS
#undef KLD
#undef KST
#undef T
#undef SFX
#undef KM
#undef K_GEMM
#undef K_EPS_T

// the optimizer, clipping, unscaling and init kernels over 16-bit storage
// ("bf16-true", "16-true"): k_adam_step_bf16, k_sgd_step_f16, ...  Float arithmetic,
// values widened on load and rounded to nearest even once on store.
#define T float
#define KM(fn) fn##f
#define SFX bf16
#define KS k_bf16
#define KLD(x) k_widen_bf16(x)
#define KST(x) k_narrow_bf16(x)
#include "kernels_optim.inc"
#undef SFX
#undef KS
#undef KLD
#undef KST
#define SFX f16
#define KS k_f16
#define KLD(x) k_widen_f16(x)
#define KST(x) k_narrow_f16(x)
#include "kernels_optim.inc"
#undef SFX
#undef KS
#undef KLD
#undef KST
#undef T
#undef KM

#endif
