#ifndef LOOM_KERNELS_H
#define LOOM_KERNELS_H
// kernels.h: the CPU kernel library that every generated C program calls.
// Header-only and `static inline`: the generated code passes compile-time-constant
// sizes, so the compiler specialises each call.  C11 + OpenMP + oneDNN (float GEMMs)
// + CBLAS (OpenBLAS: the double GEMMs of 64-true).
// Copied next to every generated program together with its parts:
//   kernels_nn.inc       linear, conv2d, max/avg pool, batch norm, layer norm, embedding
//   kernels_chain.inc    batch norm + ReLU [+ 2x2 max pool] in one pass (also over bf16 storage)
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
//              (k_conv2d_{forward,backward}_bf16s: bf16c convolutions over bf16 storage;
//              _bf16o: the output and its gradient in bf16 storage, the input float)
//   pooling    k_max_pool2d_{forward,backward}        k_avg_pool2d_{forward,backward}
//              k_max_pool2d_{forward,backward}_bf16 (2x2 windows over bf16 storage)
//              (k_max_pool2d_{forward,backward}_bf16: 2x2 windows over bf16 storage)
//   norms      k_batch_norm_forward_{train,eval}, k_batch_norm_backward{,_eval}, k_layer_norm_{forward,backward}
//              k_bn_relu_forward_{train,eval}, k_bn_relu_backward (batch norm + ReLU [+ 2x2 max pool] fused;
//              also _bf16: the activations in bf16 storage)
//              k_batch_norm_sums, k_batch_norm_forward_synced, k_batch_norm_backward_{sums,synced} (SyncBatchNorm)
//   embedding  k_embedding_{forward,backward}
//   pointwise  k_{relu,sigmoid,tanh,silu,gelu,dropout}_{forward,backward}
//   random     k_randn_forward, k_rand_forward                         (Philox draws, no backward)
//   arithmetic k_{add,sub,mul,div}_{forward,backward}                 (equal shapes)
//              k_{add,sub,mul,div}_row_{forward,backward}             (a (M, K) op b (K))
//              k_{add,sub,mul,div}_bcast_{forward,backward}           (general broadcast, k_bcast_dims)
//              k_{add,sub,mul,div}_scalar_{forward,backward}, k_{rsub,rdiv}_scalar_{forward,backward}
//   shape      k_permute_{forward,backward}, k_transpose_{forward,backward}, k_slice_{forward,backward},
//              k_cat_{forward,backward}, k_sum_{forward,backward}, k_mean_{forward,backward},
//              k_tile_{forward,backward} (expand, tile; k_bcast_dims)
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
#include <sys/mman.h>
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif
#include "philox.h"
// so_tanh, so_erf and so_exp (float tanh, erf and exp that vectorise, where libm's are a
// call per element): the CUDA kernels' per-element arithmetic, written once for both
#include "scalar_ops.h"

#define K_REDUCTION_NONE 0
#define K_REDUCTION_MEAN 1
#define K_REDUCTION_SUM 2

// A failure inside a kernel (an index out of range, out of memory, oneDNN refusing a
// product).  In a training program: one line, then exit.  In an exported library
// (K_LIBRARY) the process is the host's: the failure is recorded in the calling
// forward's k_failure (k_failure_at, copied into every OpenMP team the kernels start:
// K_TEAM) and the kernel returns; the library returns it as an error value.  Each
// site returns after K_FAIL, its outputs left unspecified.
#ifdef K_LIBRARY
#include <stdarg.h>
typedef struct { int failed; char message[256]; } k_failure;   // failed: 1 out of memory, 2 another failure
static k_failure *k_failure_at;
#pragma omp threadprivate(k_failure_at)
static void k_fail(int kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void k_fail(int kind, const char *fmt, ...) {
    static k_failure nowhere;   // a kernel called outside a forward (never): recorded, unread
    k_failure *f = k_failure_at ? k_failure_at : &nowhere;
    int expected = 0;
    if (!__atomic_compare_exchange_n(&f->failed, &expected, kind, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;   // the first one is kept
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
}
#define K_FAIL(...) k_fail(2, __VA_ARGS__)
#define K_FAIL_NOMEM(...) k_fail(1, __VA_ARGS__)
#define K_TEAM copyin(k_failure_at)
#define K_PARALLEL_PRAGMA _Pragma("omp parallel for copyin(k_failure_at)")
#else
#define K_FAIL(...) do { fprintf(stderr, "error: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)
#define K_FAIL_NOMEM(...) K_FAIL(__VA_ARGS__)
#define K_TEAM
#define K_PARALLEL_PRAGMA _Pragma("omp parallel for")
#endif

static inline int k_max_threads(void) { return omp_get_max_threads(); }

// Small float GEMMs through oneDNN's matmul primitive, one per shape, made on first use
// and kept: oneDNN's sgemm JIT-compiles every one of its AVX-512 GEMM kernels at its first
// call (27 ms of CPU here: most of an exported library's start-up to its first output),
// where a matmul primitive compiles only its shape's (brgemm, 0.1 to 0.6 ms) and runs
// as fast or faster on such sizes.  Both paths give the same bits (k_sgemm_kblock below),
// and the table has no limit (a shape always takes the same path), so a program may
// choose the bound: the training program's is 4M multiply-adds (fashion_cnn's batch-1
// convolutions; 32M made unet's training step 8-10% slower, measured alternating
// against sgemm: the primitive loses to sgemm on unet's 4M to 16M products, by 1.2-1.6x
// on one thread where M is 16 or 32 and N 1K to 16K); an exported library's is 32M
// (templates/export/lib.c.in: paw's batch-1 convolutions too, its first forward 28 ->
// 8.5 ms of CPU).  Up to this many multiply-adds:
#ifndef K_F32_PRIM_MAX_WORK
#define K_F32_PRIM_MAX_WORK 4194304.0
#endif
// A product this small (multiply-adds) called outside a team runs on the calling thread
// alone, through a plan made for one thread (`one`): the team's start and its threads
// sharing the operands' cache lines cost more than they save there.  fashion_cnn's
// first convolution at batch 1 (32 x 784 x 9), two threads on this 2-core VM, SCHED_FIFO:
// 20 us through the team's plan, 8 on one thread.  (K in blocks of at most 384, as
// below, leaves oneDNN no sum over K to split among threads: the same bits either way.)
#ifndef K_F32_ONE_THREAD_WORK
#define K_F32_ONE_THREAD_WORK 1048576.0
#endif
typedef struct {
    int M, N, K, ta, tb, lda, ldb, ldc;
    int one;                           // made for one thread (k_sgemm outside a team, a small product)
    float alpha, beta;
    dnnl_engine_t engine;
    dnnl_primitive_t prim;             // NULL: no brgemm matmul for it (sgemm computes it)
    dnnl_memory_desc_t a, b, c, scratch;
    size_t scratch_bytes;
} k_f32_plan;
typedef struct { size_t n, cap; k_f32_plan **slots; } k_f32_plans;   // open addressing

// oneDNN's CPU engine, which every plan (float and bf16) runs on: made once, by a caller
// inside `#pragma omp critical` (the unnamed one: both plan tables take it; a named
// critical would be a symbol an exported library shows); NULL: none (K_FAIL)
static inline dnnl_engine_t k_dnnl_engine_locked(void) {
    static dnnl_engine_t engine;
    static int tried;
    if (!tried && dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) engine = NULL;
    tried = 1;
    if (!engine) K_FAIL("oneDNN: no CPU engine");
    return engine;
}

static inline size_t k_f32_plan_hash(const k_f32_plan *q) {
    const int v[8] = { q->M, q->N, q->K, q->ta | q->tb << 1 | q->one << 2, q->lda, q->ldb, q->ldc, 0 };
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 8; i++) h = (h ^ (uint32_t)v[i]) * 1099511628211ull;
    uint32_t ab[2];
    memcpy(&ab[0], &q->alpha, 4);
    memcpy(&ab[1], &q->beta, 4);
    h = (h ^ ab[0]) * 1099511628211ull;
    return (size_t)((h ^ ab[1]) * 1099511628211ull);
}
static inline int k_f32_plan_same(const k_f32_plan *x, const k_f32_plan *y) {
    return x->M == y->M && x->N == y->N && x->K == y->K && x->ta == y->ta && x->tb == y->tb && x->lda == y->lda
        && x->ldb == y->ldb && x->ldc == y->ldc && x->one == y->one && x->alpha == y->alpha && x->beta == y->beta;
}

// the primitive of `key`'s shape (made under the lock the first time); NULL when out of
// memory or without a CPU engine (recorded: K_FAIL), or a shape brgemm does not take
static inline const k_f32_plan *k_f32_plan_of(const k_f32_plan *key) {
    static k_f32_plans ps;
    const k_f32_plan *found = NULL;
    #pragma omp critical
    {
        size_t h = k_f32_plan_hash(key);
        if (ps.cap) {
            for (size_t i = h & (ps.cap - 1); ps.slots[i]; i = (i + 1) & (ps.cap - 1))
                if (k_f32_plan_same(ps.slots[i], key)) { found = ps.slots[i]; break; }
        }
        dnnl_engine_t engine = found ? NULL : k_dnnl_engine_locked();
        if (engine && 2 * (ps.n + 1) > ps.cap) {   // grown to keep it at most half full
            size_t cap = ps.cap ? 2 * ps.cap : 64;
            k_f32_plan **slots = calloc(cap, sizeof *slots);
            if (slots) {
                for (size_t j = 0; j < ps.cap; j++) {
                    if (!ps.slots[j]) continue;
                    size_t i = k_f32_plan_hash(ps.slots[j]) & (cap - 1);
                    while (slots[i]) i = (i + 1) & (cap - 1);
                    slots[i] = ps.slots[j];
                }
                free(ps.slots);
                ps.slots = slots;
                ps.cap = cap;
            }
        }
        k_f32_plan *q = engine && 2 * (ps.n + 1) <= ps.cap ? malloc(sizeof *q) : NULL;
        if (engine && !q) K_FAIL_NOMEM("out of memory (a GEMM plan)");
        if (q) {
            *q = *key;
            q->engine = engine;
            // (oneDNN sizes a primitive's threads when it is made)
            const int max_threads = omp_get_max_threads();
            if (q->one) omp_set_num_threads(1);
            q->prim = NULL;
            q->scratch_bytes = 0;
            memset(&q->scratch, 0, sizeof q->scratch);
            // op(A) (M, K), op(B) (K, N): the operands' strides, transposed where asked
            dnnl_dims_t ad = { q->M, q->K }, as = { q->ta ? 1 : q->lda, q->ta ? q->lda : 1 };
            dnnl_dims_t bd = { q->K, q->N }, bs = { q->tb ? 1 : q->ldb, q->tb ? q->ldb : 1 };
            dnnl_dims_t cd = { q->M, q->N }, cs = { q->ldc, 1 };
            dnnl_matmul_desc_t desc;
            dnnl_primitive_attr_t attr = NULL;
            dnnl_post_ops_t post = NULL;
            dnnl_primitive_desc_t pd = NULL;
            int ok = dnnl_memory_desc_init_by_strides(&q->a, 2, ad, dnnl_f32, as) == dnnl_success
                && dnnl_memory_desc_init_by_strides(&q->b, 2, bd, dnnl_f32, bs) == dnnl_success
                && dnnl_memory_desc_init_by_strides(&q->c, 2, cd, dnnl_f32, cs) == dnnl_success
                && dnnl_matmul_desc_init(&desc, &q->a, &q->b, NULL, &q->c) == dnnl_success
                && dnnl_primitive_attr_create(&attr) == dnnl_success
                // each thread passes its own scratchpad (a conv's image loop runs one primitive at once)
                && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
                && (q->alpha == 1 || dnnl_primitive_attr_set_output_scales(attr, 1, 0, &q->alpha) == dnnl_success)
                && dnnl_post_ops_create(&post) == dnnl_success
                && (q->beta == 0 || dnnl_post_ops_append_sum(post, q->beta) == dnnl_success)
                && dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success
                && dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success;
            const char *impl = NULL;
            // only brgemm: another implementation ("gemm:jit") would be the sgemm's JIT again
            if (ok && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success
                && impl && strncmp(impl, "brg", 3) == 0) {
                const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
                if (smd) { q->scratch = *smd; q->scratch_bytes = dnnl_memory_desc_get_size(smd); }
                if (dnnl_primitive_create(&q->prim, pd) != dnnl_success) q->prim = NULL;
            }
            if (pd) dnnl_primitive_desc_destroy(pd);
            if (post) dnnl_post_ops_destroy(post);
            if (attr) dnnl_primitive_attr_destroy(attr);
            omp_set_num_threads(max_threads);
            size_t i = k_f32_plan_hash(q) & (ps.cap - 1);
            while (ps.slots[i]) i = (i + 1) & (ps.cap - 1);
            ps.slots[i] = q;
            ps.n++;
            found = q;
        }
    }
    return found;
}

// this thread's oneDNN stream on `engine`; NULL: none (recorded: K_FAIL)
static inline dnnl_stream_t k_dnnl_stream(dnnl_engine_t engine) {
    static _Thread_local dnnl_stream_t stream;
    static _Thread_local dnnl_engine_t stream_engine;
    if (!stream || stream_engine != engine) {
        if (stream) dnnl_stream_destroy(stream);
        stream_engine = engine;
        if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
            stream = NULL;
            K_FAIL("oneDNN: no stream");
        }
    }
    return stream;
}

// C = op(A) op(B) through a plan's primitive, on this thread's stream and scratchpad (a
// failure is recorded: K_FAIL)
static inline void k_run_plan(dnnl_primitive_t prim, const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                             const dnnl_memory_desc_t *c, const dnnl_memory_desc_t *sd, size_t scratch_bytes,
                             dnnl_engine_t engine, const void *A, const void *B, void *C, const char *what, int M, int N, int K) {
    dnnl_stream_t stream = k_dnnl_stream(engine);
    if (!stream) return;
    static _Thread_local void *scratch;
    static _Thread_local size_t scratch_cap;
    if (scratch_bytes > scratch_cap) {
        void *grown = realloc(scratch, scratch_bytes);
        if (!grown) { K_FAIL_NOMEM("out of memory (%s GEMM scratchpad, %zu bytes)", what, scratch_bytes); return; }
        scratch = grown;
        scratch_cap = scratch_bytes;
    }
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
    if (dnnl_memory_create(&ma, a, engine, (void *)A) != dnnl_success
        || dnnl_memory_create(&mb, b, engine, (void *)B) != dnnl_success
        || dnnl_memory_create(&mc, c, engine, C) != dnnl_success
        || (scratch_bytes && dnnl_memory_create(&ms, sd, engine, scratch) != dnnl_success)) {
        K_FAIL("oneDNN: no memory for a %d x %d x %d %s product", M, N, K, what);
    } else {
        dnnl_exec_arg_t args[4] = { { DNNL_ARG_SRC, ma }, { DNNL_ARG_WEIGHTS, mb }, { DNNL_ARG_DST, mc }, { DNNL_ARG_SCRATCHPAD, ms } };
        if (dnnl_primitive_execute(prim, stream, ms ? 4 : 3, args) != dnnl_success || dnnl_stream_wait(stream) != dnnl_success)
            K_FAIL("oneDNN: a %d x %d x %d %s product failed", M, N, K, what);
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (ms) dnnl_memory_destroy(ms);
}

// oneDNN's AVX-512 sgemm sums K in blocks of at most 384, each block's products (one
// fused multiply-add chain from 0 per element) then added into C: 384 at a time while more
// than 768 are left, then the rest halved (the larger half first) where more than 384.
// The primitive path takes K in the same blocks, so both paths give the same bits
// (tests/test_kernels.c's sgemm_paths_same_bits; on AVX2 CPUs oneDNN 2.6 has no f32
// brgemm and every product is sgemm's) and a program may choose its bound
// (K_F32_PRIM_MAX_WORK) without changing its results (templates/export/lib.c.in's).
// The elements of K the block starting with `rest` elements left takes:
static inline int k_sgemm_kblock(int rest) {
    return rest > 2 * 384 ? 384 : rest > 384 ? (rest + 1) / 2 : rest;
}

// A (M, n; rows lda apart) copied into this thread's buffer, rows n apart (NULL: out of
// memory, recorded)
static inline const float *k_dense_columns(const float *A, int lda, int M, int n) {
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    size_t need = (size_t)M * n;
    if (need > cap) {
        float *grown = realloc(buf, sizeof(float) * need);
        if (!grown) { K_FAIL_NOMEM("out of memory (%zu bytes of a GEMM operand's block)", sizeof(float) * need); return NULL; }
        buf = grown;
        cap = need;
    }
    for (int i = 0; i < M; i++) memcpy(buf + (size_t)i * n, A + (size_t)i * lda, sizeof(float) * n);
    return buf;
}

// Set once a product went through oneDNN's sgemm (not a GEMV: M and N above 1), whose
// kernels are compiled from then on: an exported library's bound drops to the training
// program's there (templates/export/lib.c.in; the same bits either way)
static int k_sgemm_warm;

// The float GEMM: a small product through its matmul primitive (above); a larger one
// through oneDNN's sgemm, which JIT-compiles for the widest ISA the CPU has (AVX-512
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
    // (untransposed operands only: brgemm repacks a transposed operand at every call, which
    // costs a batch-1 linear layer 4x; sgemm's M = 1 product is a GEMV whose JIT is small)
    if (ta == CblasNoTrans && tb == CblasNoTrans && (double)M * N * K <= K_F32_PRIM_MAX_WORK) {
        // K in sgemm's blocks (k_sgemm_kblock), a primitive each: the first pass finds (or
        // makes) their plans, the second runs them, each block adding into C.  Where K
        // takes more than one block, each block of A's columns is copied dense first
        // (brgemm takes dense operands only; B's block of rows is dense already).
        int have = 1;
        const int one = (double)M * N * K < K_F32_ONE_THREAD_WORK && !omp_in_parallel();
        for (int pass = 0; pass < 2 && have; pass++) {
            for (int k0 = 0, kk; k0 < K; k0 += kk) {
                kk = k_sgemm_kblock(K - k0);
                const int split = kk < K;
                k_f32_plan key = { M, N, kk, 0, 0, split ? kk : lda, ldb, ldc, one, alpha, k0 ? 1 : beta, NULL, NULL,
                                   {0}, {0}, {0}, {0}, 0 };
                const k_f32_plan *q = k_f32_plan_of(&key);
                if (!q) return;   // recorded (K_FAIL)
                if (!q->prim) { have = 0; break; }   // (only in the first pass: the table keeps its plans)
                if (!pass) continue;
                const float *a = split ? k_dense_columns(A + k0, lda, M, kk) : A;
                if (!a) return;   // recorded (K_FAIL_NOMEM)
                k_run_plan(q->prim, &q->a, &q->b, &q->c, &q->scratch, q->scratch_bytes, q->engine, a,
                           B + (size_t)k0 * ldb, C, "float", M, N, kk);
            }
        }
        if (have) return;
    }
    if (dnnl_sgemm(ta == CblasNoTrans ? 'N' : 'T', tb == CblasNoTrans ? 'N' : 'T', M, N, K, alpha, A, lda, B, ldb,
                   beta, C, ldc) != dnnl_success) {
        K_FAIL("oneDNN sgemm refused a %d x %d x %d product", M, N, K);
        return;
    }
    if (M > 1 && N > 1) __atomic_store_n(&k_sgemm_warm, 1, __ATOMIC_RELAXED);
}

// Conv2d sizes.  inp (N, C, H, W), w (OC, C/G, KH, KW), b (OC), out (N, OC, OH, OW);
// S = stride, P = top/left padding (bottom/right padding is implied by OH/OW, so
// padding="same" with an even kernel works), D = dilation, G = groups.
typedef struct { int N, C, H, W, OC, KH, KW, SH, SW, PH, PW, DH, DW, G, OH, OW; } k_conv2d_dims;

// Float convolutions through oneDNN's direct JIT kernels (jit:avx512_core, jit:avx2, as
// the CPU has AVX-512; ONEDNN_MAX_CPU_ISA=AVX2 leaves im2col) in its blocked layouts (nChw16c, ...), where
// they beat im2col + GEMM (k_conv2d_forward's own path).  Measured per layer, reorders
// included, best of 8-15 alternating runs on a loaded machine: fashion_cnn's 32->64 at
// 14x14, batch 128, one thread: forward 15-22 ms against 26-32, backward 36-41 against
// 62-71; resnet18's 64 to 512 channels at batch 16, two threads: 1.2-4x, but 512->512 at
// 4x4 even in the backward.  At one input channel (a first layer) oneDNN's blocked
// input gradient took 236 ms against 1.5 through a GEMM.  So only where both channel
// counts are at least K_CONV_DIRECT_MIN, one group, padding inside the input, and oneDNN
// has a JIT kernel for all three passes.  The program's tensors stay NCHW: each call
// reorders its operands into the blocked layouts and its results back (a sum post-op where
// a gradient is added).  A plan per shape, made on first use (a few ms) and kept; the
// same shape always takes the same path (the same bits).
//
// The bf16c convolutions (bf16-mixed's and bf16-true's GEMM layers: float buffers that
// hold bf16 values) take plans of their own in bf16 where the CPU multiplies bf16 itself
// (AVX512_BF16): the reorders round the operands to bf16 (exact for values that are bf16
// already, as k_bf16_pack is) into the blocked layouts, and the kernels sum in float and
// write float (output, input and weight gradients), as autocast's oneDNN kernels do.
#ifndef K_CONV_DIRECT_MIN
#define K_CONV_DIRECT_MIN 16
#endif
#define K_CONV_PLANS 64
typedef struct {
    k_conv2d_dims d;
    int bf16;                                // the operands multiplied in bf16
    dnnl_engine_t engine;
    int ok;                                  // 0: im2col computes it
    int bwd_tried, bwd_ok;                   // the backward's (k_conv_plan_backward)
    dnnl_primitive_desc_t fpd;               // the forward's: the backward's hint
    dnnl_primitive_t fwd, bwd_d, bwd_w;      // the convolutions, blocked operands
    dnnl_primitive_t x_in, wf_in, wb_in, y_out, dy_in, dx_out, dx_add, dw_out, dw_add;   // reorders
    dnnl_memory_desc_t x, w, y, bias, xb, wf, wb, yb, dyb, dxb, dwb, scratch;   // dyb, dxb: the gradients'
    // bf16 plans: the input, output and their gradients read and written in their own bf16
    // NCHW storage too (k_conv2d_*_bf16s): fwd16, bwd16 where oneDNN has those reorders
    int fwd16, bwd16;
    dnnl_memory_desc_t x16, y16;
    dnnl_primitive_t x16_in, y16_out, dy16_in, dx16_out;
    // and where oneDNN has them, the passes that write the output (fwd_o16) and the input
    // gradient (bwd_d16) in bf16 themselves, into blocked layouts (yb16, dxb16) that a bf16 ->
    // bf16 reorder takes to the NCHW storage: the float sums rounded to nearest even by the
    // kernel's vcvtneps2bf16 as the float -> bf16 reorders round them, half the bytes moved
    // (fashion_cnn's Conv2d(32, 64): its two float -> bf16 NCHW reorders were 2.3 ms each at
    // one thread, the bf16 -> bf16 ones 0.7)
    dnnl_primitive_t fwd_o16, bwd_d16, yb16_out, dxb16_out;
    dnnl_memory_desc_t yb16, dxb16;
    // which of the bf16 blocked operands are nChw16c over whole blocks of 16 channels, whose
    // reorders from and to the bf16 NCHW storage k_nchw16 does (k_conv_move16)
    int own_x16, own_y16, own_dy16, own_dx16;
    size_t nxb, nwf, nwb, nyb, ndyb, ndxb, ndwb, nscratch;   // bytes
} k_conv_plan;
typedef struct { int n; k_conv_plan plans[K_CONV_PLANS]; } k_conv_plans;

// whether m is dims' bf16 nChw16c layout with no padded channels
static inline int k_is_nchw16c_bf16(const dnnl_memory_desc_t *m, const dnnl_dims_t dims) {
    dnnl_memory_desc_t b;
    return dims[1] % 16 == 0 && dnnl_memory_desc_init_by_tag(&b, 4, dims, dnnl_bf16, dnnl_nChw16c) == dnnl_success
        && dnnl_memory_desc_equal(&b, m);
}

// 16-bit values between NCHW and nChw16c (C a multiple of 16): nb = N * C / 16 blocks of
// 16 planes of hw values, each a 16 x hw transpose (to: NCHW -> nChw16c).  oneDNN 2.6's
// jit:uni reorders between them moved bf16 at 3 GB/s here (paw's 32 x 32 x 64 x 64 output:
// 2.8 ms at one thread); these take 16 x 16 tiles through four rounds of AVX-512 word
// permutes, three swapping a register index bit with a lane bit, the last also putting
// the lane bits in order (the network is its own inverse: the same in both directions).
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
// the permutes' word indices: stage st swaps register bit st with lane bit st + 1 (register
// k of the tile holds its rows 2k and 2k + 1, lane e row bit 0 at bit 4 and the column
// below); the last reads its lanes in the order that leaves lane e holding row e & 15 of
// column 2k + (e >> 4)
static inline void k_tr16x16_idx(uint16_t idx[3][2][32]) {
    for (int st = 0; st < 3; st++)
        for (int e = 0; e < 32; e++) {
            const int f = st < 2 ? e : (((e & 1) << 4) | (e & 14) | (e >> 4)), j = 1 << (st + 1);
            idx[st][0][e] = (uint16_t)(f & j ? 32 + (f & ~j) : f);
            idx[st][1][e] = (uint16_t)(f & j ? 32 + f : (f | j));
        }
}
static inline void k_tr16x16_w(__m512i z[8], const uint16_t idx[3][2][32]) {   // z[k]: rows 2k, 2k + 1 -> columns
    for (int st = 0; st < 3; st++) {
        const __m512i lo = _mm512_loadu_si512((const void *)idx[st][0]), hi = _mm512_loadu_si512((const void *)idx[st][1]);
        const int b = 1 << st;
        for (int k = 0; k < 8; k++) {
            if (k & b) continue;
            const __m512i a = z[k], c = z[k | b];
            z[k] = _mm512_permutex2var_epi16(a, lo, c);
            z[k | b] = _mm512_permutex2var_epi16(a, hi, c);
        }
    }
}
#endif
static inline void k_nchw16(uint16_t *restrict dst, const uint16_t *restrict src, size_t nb, size_t hw, int to) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    uint16_t idx[3][2][32];
    k_tr16x16_idx(idx);
#endif
    for (size_t b = 0; b < nb; b++, src += 16 * hw, dst += 16 * hw) {
        size_t p = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        for (; p + 16 <= hw; p += 16) {
            __m512i z[8];
            for (int k = 0; k < 8; k++)
                z[k] = to ? _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const void *)(src + 2 * k * hw + p))),
                                                _mm256_loadu_si256((const void *)(src + (2 * k + 1) * hw + p)), 1)
                          : _mm512_loadu_si512((const void *)(src + p * 16 + 32 * k));
            k_tr16x16_w(z, idx);
            for (int k = 0; k < 8; k++) {
                if (to) { _mm512_storeu_si512((void *)(dst + p * 16 + 32 * k), z[k]); continue; }
                _mm256_storeu_si256((void *)(dst + 2 * k * hw + p), _mm512_castsi512_si256(z[k]));
                _mm256_storeu_si256((void *)(dst + (2 * k + 1) * hw + p), _mm512_extracti64x4_epi64(z[k], 1));
            }
        }
#endif
        for (; p < hw; p++)
            for (int c = 0; c < 16; c++) {
                if (to) dst[p * 16 + c] = src[c * hw + p];
                else dst[c * hw + p] = src[p * 16 + c];
            }
    }
}

// a reorder from -> to (adding into `to` with add); NULL where oneDNN has none
static inline dnnl_primitive_t k_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from,
                                              const dnnl_memory_desc_t *to, int add, size_t *scratch) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (dnnl_primitive_attr_create(&attr) == dnnl_success
        && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
        && dnnl_post_ops_create(&post) == dnnl_success
        && (!add || dnnl_post_ops_append_sum(post, 1.0f) == dnnl_success)
        && dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success
        && dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr) == dnnl_success) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        size_t n = smd ? dnnl_memory_desc_get_size(smd) : 0;
        if (n > *scratch) *scratch = n;
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return prim;
}

// a convolution pass's primitive from its descriptor (fwd_hint: the forward's, for the
// backward ones), only where oneDNN's choice is an AVX-512 JIT kernel (jit:avx512_core,
// jit_bf16:avx512_core_bf16); NULL otherwise.
// (Measured there only; with ONEDNN_MAX_CPU_ISA=AVX2 its jit:avx2 kernels' weight
// gradients put fashion_cnn's Adam parity past its tolerance after a few steps, where
// im2col's stay within it.)
static inline dnnl_primitive_t k_dnnl_conv_prim(dnnl_engine_t engine, const void *desc, const_dnnl_primitive_desc_t fwd_hint,
                                                dnnl_primitive_desc_t *pd_out, size_t *scratch) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    const char *impl = NULL;
    if (dnnl_primitive_attr_create(&attr) == dnnl_success
        && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
        && dnnl_primitive_desc_create(&pd, desc, attr, engine, fwd_hint) == dnnl_success
        && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success
        && impl && (strncmp(impl, "jit:avx512", 10) == 0 || strncmp(impl, "jit_bf16:avx512", 15) == 0)) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        size_t n = smd ? dnnl_memory_desc_get_size(smd) : 0;
        if (n > *scratch) *scratch = n;
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
    }
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (prim) *pd_out = pd;
    else if (pd) dnnl_primitive_desc_destroy(pd);
    return prim;
}

// the plan of `d`'s shape, its forward (made under the lock the first time; ok = 0 where
// the direct kernels do not take it); NULL when out of plans, memory or engine (im2col
// computes it).  Its backward is made by k_conv_plan_backward, on the first backward:
// an inference program (loom export) references none of oneDNN's backward passes.
static inline k_conv_plan *k_conv_plan_of(const k_conv2d_dims *d, int bf16) {
    if (d->G != 1 || d->C < K_CONV_DIRECT_MIN || d->OC < K_CONV_DIRECT_MIN) return NULL;
    if (bf16 && (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16)
        return NULL;   // (oneDNN would emulate bf16 there: slower than im2col's bf16 GEMMs)
    const int PRH = (d->OH - 1) * d->SH + (d->KH - 1) * d->DH + 1 - d->H - d->PH;
    const int PRW = (d->OW - 1) * d->SW + (d->KW - 1) * d->DW + 1 - d->W - d->PW;
    if (PRH < 0 || PRW < 0 || d->PH < 0 || d->PW < 0) return NULL;
    static k_conv_plans ps;
    k_conv_plan *found = NULL;
    #pragma omp critical
    {
        for (int i = 0; i < ps.n && !found; i++)
            if (memcmp(&ps.plans[i].d, d, sizeof *d) == 0 && ps.plans[i].bf16 == bf16) found = &ps.plans[i];
        dnnl_engine_t engine = !found && ps.n < K_CONV_PLANS ? k_dnnl_engine_locked() : NULL;
        if (engine) {
            // made for one thread: each thread of the caller's team runs them on its images
            const int max_threads = omp_get_max_threads();
            omp_set_num_threads(1);
            k_conv_plan *q = &ps.plans[ps.n++];
            memset(q, 0, sizeof *q);
            q->d = *d;
            q->bf16 = bf16;
            q->engine = engine;
            dnnl_dims_t xd = { d->N, d->C, d->H, d->W }, wd = { d->OC, d->C, d->KH, d->KW }, bd = { d->OC };
            dnnl_dims_t yd = { d->N, d->OC, d->OH, d->OW }, st = { d->SH, d->SW }, dil = { d->DH - 1, d->DW - 1 };
            dnnl_dims_t pl = { d->PH, d->PW }, pr = { PRH, PRW };
            dnnl_memory_desc_t xa, wa, ya;
            dnnl_convolution_desc_t fd;
            const dnnl_data_type_t mul = bf16 ? dnnl_bf16 : dnnl_f32;   // the multiplied operands'
            size_t scratch = 0;
            int ok = dnnl_memory_desc_init_by_tag(&q->x, 4, xd, dnnl_f32, dnnl_nchw) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&q->w, 4, wd, dnnl_f32, dnnl_oihw) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&q->y, 4, yd, dnnl_f32, dnnl_nchw) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&q->bias, 1, bd, dnnl_f32, dnnl_x) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&xa, 4, xd, mul, dnnl_format_tag_any) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&wa, 4, wd, mul, dnnl_format_tag_any) == dnnl_success
                && dnnl_memory_desc_init_by_tag(&ya, 4, yd, dnnl_f32, dnnl_format_tag_any) == dnnl_success
                && dnnl_dilated_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                       &xa, &wa, &q->bias, &ya, st, dil, pl, pr) == dnnl_success
                && (q->fwd = k_dnnl_conv_prim(engine, &fd, NULL, &q->fpd, &scratch)) != NULL;
            if (ok) {
                q->xb = *dnnl_primitive_desc_query_md(q->fpd, dnnl_query_src_md, 0);
                q->wf = *dnnl_primitive_desc_query_md(q->fpd, dnnl_query_weights_md, 0);
                q->yb = *dnnl_primitive_desc_query_md(q->fpd, dnnl_query_dst_md, 0);
                ok = (q->x_in = k_dnnl_reorder(engine, &q->x, &q->xb, 0, &scratch)) != NULL
                    && (q->wf_in = k_dnnl_reorder(engine, &q->w, &q->wf, 0, &scratch)) != NULL
                    && (q->y_out = k_dnnl_reorder(engine, &q->yb, &q->y, 0, &scratch)) != NULL;
            }
            if (ok && bf16)   // (bf16 into the blocked bf16 source: exact; the float output rounded to nearest even)
                q->fwd16 = dnnl_memory_desc_init_by_tag(&q->x16, 4, xd, dnnl_bf16, dnnl_nchw) == dnnl_success
                    && dnnl_memory_desc_init_by_tag(&q->y16, 4, yd, dnnl_bf16, dnnl_nchw) == dnnl_success
                    && (q->x16_in = k_dnnl_reorder(engine, &q->x16, &q->xb, 0, &scratch)) != NULL
                    && (q->y16_out = k_dnnl_reorder(engine, &q->yb, &q->y16, 0, &scratch)) != NULL;
            if (ok && q->fwd16) {   // (optional: y16_out where oneDNN has no such pass)
                dnnl_memory_desc_t y16a;
                dnnl_convolution_desc_t fd16;
                dnnl_primitive_desc_t pd16 = NULL;
                if (dnnl_memory_desc_init_by_tag(&y16a, 4, yd, dnnl_bf16, dnnl_format_tag_any) == dnnl_success
                    && dnnl_dilated_convolution_forward_desc_init(&fd16, dnnl_forward_training, dnnl_convolution_direct,
                           &xa, &wa, &q->bias, &y16a, st, dil, pl, pr) == dnnl_success
                    && (q->fwd_o16 = k_dnnl_conv_prim(engine, &fd16, NULL, &pd16, &scratch)) != NULL) {
                    q->yb16 = *dnnl_primitive_desc_query_md(pd16, dnnl_query_dst_md, 0);
                    if (!dnnl_memory_desc_equal(&q->xb, dnnl_primitive_desc_query_md(pd16, dnnl_query_src_md, 0))
                        || !dnnl_memory_desc_equal(&q->wf, dnnl_primitive_desc_query_md(pd16, dnnl_query_weights_md, 0))
                        || dnnl_memory_desc_get_size(&q->yb16) > dnnl_memory_desc_get_size(&q->yb)
                        || (q->yb16_out = k_dnnl_reorder(engine, &q->yb16, &q->y16, 0, &scratch)) == NULL)
                        q->fwd_o16 = NULL;   // (the primitive kept: plans live as long as the program)
                    dnnl_primitive_desc_destroy(pd16);
                }
                q->own_x16 = k_is_nchw16c_bf16(&q->xb, xd);
                q->own_y16 = q->fwd_o16 && k_is_nchw16c_bf16(&q->yb16, yd);
            }
            if (ok) {
                q->nxb = dnnl_memory_desc_get_size(&q->xb);
                q->nwf = dnnl_memory_desc_get_size(&q->wf);
                q->nyb = dnnl_memory_desc_get_size(&q->yb);
                q->nscratch = scratch;
                dnnl_dims_t sd = { (dnnl_dim_t)(scratch ? scratch : 1) };
                ok = dnnl_memory_desc_init_by_tag(&q->scratch, 1, sd, dnnl_u8, dnnl_x) == dnnl_success;
            }
            q->ok = ok;   // (a refused shape keeps its plan: asked again, it is not retried)
            found = q;
            omp_set_num_threads(max_threads);
        }
    }
    return found && found->ok ? found : NULL;
}

// the plan of `d` with its backward (both gradients; made under the lock the first time,
// in the forward's layouts); NULL where the direct kernels do not take it
static inline const k_conv_plan *k_conv_plan_backward(const k_conv2d_dims *d, int bf16) {
    k_conv_plan *q = k_conv_plan_of(d, bf16);
    if (!q) return NULL;
    #pragma omp critical
    if (!q->bwd_tried) {
        q->bwd_tried = 1;
        const int max_threads = omp_get_max_threads();
        omp_set_num_threads(1);
        const int PRH = (d->OH - 1) * d->SH + (d->KH - 1) * d->DH + 1 - d->H - d->PH;
        const int PRW = (d->OW - 1) * d->SW + (d->KW - 1) * d->DW + 1 - d->W - d->PW;
        dnnl_dims_t st = { d->SH, d->SW }, dil = { d->DH - 1, d->DW - 1 }, pl = { d->PH, d->PW }, pr = { PRH, PRW };
        dnnl_dims_t xd = { d->N, d->C, d->H, d->W }, wd = { d->OC, d->C, d->KH, d->KW }, yd = { d->N, d->OC, d->OH, d->OW };
        dnnl_memory_desc_t xa, wa, ya, dxa, dwa;
        dnnl_convolution_desc_t bdd, bwd;
        const dnnl_data_type_t mul = bf16 ? dnnl_bf16 : dnnl_f32;
        dnnl_primitive_desc_t bdpd = NULL, bwpd = NULL;
        dnnl_engine_t engine = q->engine;
        size_t scratch = q->nscratch;
        // (in bf16: the input and its gradient's sources in bf16, the gradients written in float)
        int ok = dnnl_memory_desc_init_by_tag(&xa, 4, xd, mul, dnnl_format_tag_any) == dnnl_success
            && dnnl_memory_desc_init_by_tag(&wa, 4, wd, mul, dnnl_format_tag_any) == dnnl_success
            && dnnl_memory_desc_init_by_tag(&ya, 4, yd, mul, dnnl_format_tag_any) == dnnl_success
            && dnnl_memory_desc_init_by_tag(&dxa, 4, xd, dnnl_f32, dnnl_format_tag_any) == dnnl_success
            && dnnl_memory_desc_init_by_tag(&dwa, 4, wd, dnnl_f32, dnnl_format_tag_any) == dnnl_success
            && dnnl_dilated_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &dxa, &wa, &ya,
                   st, dil, pl, pr) == dnnl_success
            && dnnl_dilated_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_direct, &xa, &dwa, &q->bias,
                   &ya, st, dil, pl, pr) == dnnl_success
            && (q->bwd_d = k_dnnl_conv_prim(engine, &bdd, q->fpd, &bdpd, &scratch)) != NULL
            && (q->bwd_w = k_dnnl_conv_prim(engine, &bwd, q->fpd, &bwpd, &scratch)) != NULL;
        if (ok) {
            q->wb = *dnnl_primitive_desc_query_md(bdpd, dnnl_query_weights_md, 0);
            q->dwb = *dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_weights_md, 0);
            q->dyb = *dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_dst_md, 0);
            q->dxb = *dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_src_md, 0);
            // the weight gradient reads the input as the forward does and the output's
            // gradient as the input gradient does (one reorder each)
            ok = dnnl_memory_desc_equal(&q->xb, dnnl_primitive_desc_query_md(bwpd, dnnl_query_src_md, 0))
                && dnnl_memory_desc_equal(&q->dyb, dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_dst_md, 0))
                && (q->wb_in = k_dnnl_reorder(engine, &q->w, &q->wb, 0, &scratch)) != NULL
                && (q->dy_in = k_dnnl_reorder(engine, &q->y, &q->dyb, 0, &scratch)) != NULL
                && (q->dx_out = k_dnnl_reorder(engine, &q->dxb, &q->x, 0, &scratch)) != NULL
                && (q->dx_add = k_dnnl_reorder(engine, &q->dxb, &q->x, 1, &scratch)) != NULL
                && (q->dw_out = k_dnnl_reorder(engine, &q->dwb, &q->w, 0, &scratch)) != NULL
                && (q->dw_add = k_dnnl_reorder(engine, &q->dwb, &q->w, 1, &scratch)) != NULL;
        }
        if (ok && q->fwd16)
            q->bwd16 = (q->dy16_in = k_dnnl_reorder(engine, &q->y16, &q->dyb, 0, &scratch)) != NULL
                && (q->dx16_out = k_dnnl_reorder(engine, &q->dxb, &q->x16, 0, &scratch)) != NULL;
        dnnl_memory_desc_t dx16a;
        dnnl_convolution_desc_t bdd16;
        dnnl_primitive_desc_t pd16 = NULL;
        if (ok && q->bwd16 && dnnl_memory_desc_init_by_tag(&dx16a, 4, xd, dnnl_bf16, dnnl_format_tag_any) == dnnl_success
            && dnnl_dilated_convolution_backward_data_desc_init(&bdd16, dnnl_convolution_direct, &dx16a, &wa, &ya,
                   st, dil, pl, pr) == dnnl_success
            && (q->bwd_d16 = k_dnnl_conv_prim(engine, &bdd16, q->fpd, &pd16, &scratch)) != NULL) {
            q->dxb16 = *dnnl_primitive_desc_query_md(pd16, dnnl_query_diff_src_md, 0);
            if (!dnnl_memory_desc_equal(&q->dyb, dnnl_primitive_desc_query_md(pd16, dnnl_query_diff_dst_md, 0))
                || !dnnl_memory_desc_equal(&q->wb, dnnl_primitive_desc_query_md(pd16, dnnl_query_weights_md, 0))
                || dnnl_memory_desc_get_size(&q->dxb16) > dnnl_memory_desc_get_size(&q->dxb)
                || (q->dxb16_out = k_dnnl_reorder(engine, &q->dxb16, &q->x16, 0, &scratch)) == NULL)
                q->bwd_d16 = NULL;
            dnnl_primitive_desc_destroy(pd16);
        }
        q->own_dy16 = q->bwd16 && k_is_nchw16c_bf16(&q->dyb, yd);
        q->own_dx16 = q->bwd_d16 && k_is_nchw16c_bf16(&q->dxb16, xd);
        if (ok) {
            q->nwb = dnnl_memory_desc_get_size(&q->wb);
            q->ndwb = dnnl_memory_desc_get_size(&q->dwb);
            q->ndyb = dnnl_memory_desc_get_size(&q->dyb);
            q->ndxb = dnnl_memory_desc_get_size(&q->dxb);
            dnnl_dims_t sd = { (dnnl_dim_t)(scratch ? scratch : 1) };
            ok = dnnl_memory_desc_init_by_tag(&q->scratch, 1, sd, dnnl_u8, dnnl_x) == dnnl_success;
            if (ok) q->nscratch = scratch;
        }
        if (bdpd) dnnl_primitive_desc_destroy(bdpd);
        if (bwpd) dnnl_primitive_desc_destroy(bwpd);
        q->bwd_ok = ok;
        omp_set_num_threads(max_threads);
    }
    return q->bwd_ok ? q : NULL;
}

// Zeroed memory as an anonymous mapping (pages filled in where first touched); one of
// K_MAP_HUGE_FROM bytes or more is 2 MiB-aligned, a whole number of 2 MiB pages, and
// asks for transparent huge pages (MADV_HUGEPAGE; "madvise" is the usual system
// default): the first touch of a 4 KiB page cost 8-15 us in this VM (its shadow page
// tables), where a 2 MiB page costs about 0.15 ms; paw's exported first forward touched
// 2200 pages (25-35 ms of its start-up).  Without them (another kernel, none free) the
// pages are 4 KiB: the same memory.  k_unmap takes the same `bytes`.  NULL: out of memory.
#define K_MAP_HUGE_PAGE ((size_t)2 << 20)
#define K_MAP_HUGE_FROM ((size_t)256 << 10)
static inline size_t k_map_length(size_t bytes) {
    return bytes >= K_MAP_HUGE_FROM ? (bytes + K_MAP_HUGE_PAGE - 1) / K_MAP_HUGE_PAGE * K_MAP_HUGE_PAGE : bytes ? bytes : 64;
}
static inline void *k_map_zeroed(size_t bytes) {
    const size_t len = k_map_length(bytes);
    if (len < K_MAP_HUGE_FROM) {
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    // a huge page more than asked, then the ends outside the aligned part given back
    char *p = (char *)mmap(NULL, len + K_MAP_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == (char *)MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + K_MAP_HUGE_PAGE - 1) / K_MAP_HUGE_PAGE * K_MAP_HUGE_PAGE);
    if (a > p) munmap(p, (size_t)(a - p));
    if (p + K_MAP_HUGE_PAGE > a) munmap(a + len, (size_t)(p + K_MAP_HUGE_PAGE - a));
#ifdef MADV_HUGEPAGE
    (void)madvise(a, len, MADV_HUGEPAGE);   // (advice: refused where there are none)
#endif
    return a;
}
static inline void k_unmap(void *p, size_t bytes) { if (p) munmap(p, k_map_length(bytes)); }

// this thread's workspace for the blocked operands: at least `bytes`, 64-byte aligned
// (NULL: out of memory, recorded); a mapping (k_map_zeroed: its first touch is most of
// a convolution's first call)
static inline char *k_conv_workspace(size_t bytes) {
    static _Thread_local char *ws;
    static _Thread_local size_t cap;
    if (bytes > cap) {
        k_unmap(ws, cap);
        ws = (char *)k_map_zeroed(bytes);
        cap = ws ? bytes : 0;
        if (!ws) K_FAIL_NOMEM("out of memory (a convolution's workspace, %zu bytes)", bytes);
    }
    return ws;
}

// runs prim with (arg, memory desc, pointer) triples and the plan's scratchpad: 1, or 0
// after a failure (recorded)
static inline int k_conv_exec(const k_conv_plan *q, dnnl_primitive_t prim, void *scratch, int n, const int *arg,
                              const dnnl_memory_desc_t *const *md, void *const *ptr) {
    dnnl_stream_t stream = k_dnnl_stream(q->engine);
    if (!stream) return 0;
    dnnl_memory_t mem[8] = { NULL };
    dnnl_exec_arg_t args[8];
    int ok = 1;
    for (int i = 0; i <= n && ok; i++) {
        const dnnl_memory_desc_t *m = i < n ? md[i] : &q->scratch;
        ok = dnnl_memory_create(&mem[i], m, q->engine, i < n ? ptr[i] : scratch) == dnnl_success;
        args[i].arg = i < n ? arg[i] : DNNL_ARG_SCRATCHPAD;
        args[i].memory = mem[i];
    }
    ok = ok && dnnl_primitive_execute(prim, stream, n + 1, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success;
    for (int i = 0; i <= n; i++) if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (!ok) K_FAIL("oneDNN: a convolution (%d -> %d channels, %dx%d) failed", q->d.C, q->d.OC, q->d.H, q->d.W);
    return ok;
}
// a reorder of src (from) into dst (to) through r
static inline int k_conv_reorder(const k_conv_plan *q, dnnl_primitive_t r, void *scratch, const dnnl_memory_desc_t *from,
                                 const void *src, const dnnl_memory_desc_t *to, void *dst) {
    const int arg[2] = { DNNL_ARG_FROM, DNNL_ARG_TO };
    const dnnl_memory_desc_t *md[2] = { from, to };
    void *const ptr[2] = { (void *)src, dst };
    return k_conv_exec(q, r, scratch, 2, arg, md, ptr);
}

// a bf16 operand between its NCHW storage and the plan's layout: through k_nchw16 where
// own (the layout nChw16c: nb blocks of 16 planes of hw values; to: into the blocked one),
// through r otherwise
static inline int k_conv_move16(const k_conv_plan *q, int own, int to, size_t nb, size_t hw, dnnl_primitive_t r, void *scratch,
                                const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *dto, void *dst) {
    if (!own) return k_conv_reorder(q, r, scratch, from, src, dto, dst);
    k_nchw16((uint16_t *)dst, (const uint16_t *)src, nb, hw, to);
    return 1;
}

static inline size_t k_align64(size_t n) { return (n + 63) / 64 * 64; }

// The threads split the batch: nb images each (the last fewer), each thread running the
// single-threaded primitives of its slice's shape, one parallel region per pass (oneDNN's
// own threading is a region per reorder and per pass: under load every region waits for
// its slowest thread).  nt: the team, 0 when the direct kernels take no slice of `d`,
// nor a batch smaller than the team (one image: k_conv_direct_oc_team splits its output
// channels instead).
// (st16: the operands in their bf16 storage, k_conv2d_*_bf16s: the plans' fwd16/bwd16 too)
static inline int k_conv_plan_takes(const k_conv2d_dims *s, int bf16, int backward, int st16) {
    const k_conv_plan *q = backward ? k_conv_plan_backward(s, bf16) : k_conv_plan_of(s, bf16);
    return q && (!st16 || (backward ? q->bwd16 : q->fwd16));
}
static inline int k_conv_direct_team(const k_conv2d_dims *d, int bf16, int *nb, int backward, int st16) {
    if (d->N < k_max_threads()) return 0;
    int nt = k_max_threads() < d->N ? k_max_threads() : d->N;
    if (nt < 1) nt = 1;
    *nb = (d->N + nt - 1) / nt;
    nt = (d->N + *nb - 1) / *nb;
    k_conv2d_dims s = *d;
    s.N = *nb;
    if (!k_conv_plan_takes(&s, bf16, backward, st16)) return 0;
    s.N = d->N - (nt - 1) * *nb;
    return k_conv_plan_takes(&s, bf16, backward, st16) ? nt : 0;
}

// images [n0, n0 + m) of k_conv2d_forward (f32 or bf16c, accumulate 0) through their plan
// (st16: inp and out in bf16 storage, k_conv2d_forward_bf16s)
static inline void k_conv_direct_forward_slice(void *out, const void *inp, const float *w, const float *b,
                                               const k_conv2d_dims *d, int bf16, int n0, int m, int st16) {
    k_conv2d_dims sd = *d;
    sd.N = m;
    const k_conv_plan *q = k_conv_plan_of(&sd, bf16);
    if (!q) return;   // (made before the team: not reached)
    const size_t es = st16 ? 2 : 4;
    inp = (const char *)inp + (size_t)n0 * d->C * d->H * d->W * es;
    out = (char *)out + (size_t)n0 * d->OC * d->OH * d->OW * es;
    const size_t ob = k_align64(q->nxb), ow = ob + k_align64(q->nwf), oz = ow + k_align64(q->nyb);
    const size_t os = oz + k_align64((size_t)d->OC * sizeof(float));
    char *ws = k_conv_workspace(os + q->nscratch);
    if (!ws) return;
    float *zero = (float *)(ws + oz);
    if (!b) { memset(zero, 0, (size_t)d->OC * sizeof(float)); b = zero; }   // (the primitive has a bias)
    const int o16 = st16 && q->fwd_o16;   // (the output in bf16 from the kernel)
    const dnnl_memory_desc_t *yb = o16 ? &q->yb16 : &q->yb;
    const int arg[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };
    const dnnl_memory_desc_t *md[4] = { &q->xb, &q->wf, &q->bias, yb };
    void *const ptr[4] = { ws, ws + ob, (void *)b, ws + ow };
    const size_t hx = (size_t)d->H * d->W, hy = (size_t)d->OH * d->OW;
    (void)(k_conv_move16(q, st16 && q->own_x16, 1, (size_t)m * d->C / 16, hx, st16 ? q->x16_in : q->x_in, ws + os,
                         st16 ? &q->x16 : &q->x, inp, &q->xb, ws)
        && k_conv_reorder(q, q->wf_in, ws + os, &q->w, w, &q->wf, ws + ob)
        && k_conv_exec(q, o16 ? q->fwd_o16 : q->fwd, ws + os, 4, arg, md, ptr)
        && k_conv_move16(q, o16 && q->own_y16, 0, (size_t)m * d->OC / 16, hy, o16 ? q->yb16_out : st16 ? q->y16_out : q->y_out,
                         ws + os, yb, ws + ow, st16 ? &q->y16 : &q->y, out));
}

// One image (a batch-1 call) on a team of nt > 1 threads: its output channels split
// among them, `per` each (a multiple of 16, the blocked layouts' channel block; the last
// thread the rest), each thread running the single-threaded plan of its part on the
// whole input into its own planes (the image's output channels are contiguous).  One
// parallel region and no reduction: measured on this 2-core VM (batch 1, two threads,
// alternating, SCHED_FIFO), fashion_cnn's Conv2d(32, 64) at 14x14 took 87 us through
// im2col + the two threads' GEMM against 47 on one thread; paw's Conv2d(64, 128) at 16x16
// 175 us against 215.  Returns the team (0: the parts have no plans, im2col computes it).
static inline int k_conv_direct_oc_team(const k_conv2d_dims *d, int bf16, int *per) {
    const int threads = k_max_threads();
    if (d->N != 1 || threads < 2 || omp_in_parallel()) return 0;
    int p = (d->OC + 16 * threads - 1) / (16 * threads) * 16;
    if (p < K_CONV_DIRECT_MIN) p = (K_CONV_DIRECT_MIN + 15) / 16 * 16;
    const int nt = (d->OC + p - 1) / p;
    if (nt < 2) return 0;
    k_conv2d_dims s = *d;
    s.OC = p;
    if (!k_conv_plan_of(&s, bf16)) return 0;
    s.OC = d->OC - (nt - 1) * p;
    if (!k_conv_plan_of(&s, bf16)) return 0;
    *per = p;
    return nt;
}

// k_conv2d_forward (f32, or bf16c with bf16; accumulate 0) through the plans: 1 when done
// (or its failure recorded), 0 when the shape has none (im2col computes it)
static inline int k_conv_direct_forward(void *out, const void *inp, const float *w, const float *b, const k_conv2d_dims *d,
                                        int bf16, int st16) {
    // one image over the team's output channels: float storage (the parts' plans are not
    // asked for their bf16-storage reorders)
    int per, nct = st16 ? 0 : k_conv_direct_oc_team(d, bf16, &per);
    if (nct) {
        const size_t wper = (size_t)d->C * d->KH * d->KW, P = (size_t)d->OH * d->OW;
        #pragma omp parallel num_threads(nct) K_TEAM
        {
            const int t = omp_get_thread_num(), oc0 = t * per;
            k_conv2d_dims s = *d;
            s.OC = d->OC - oc0 < per ? d->OC - oc0 : per;
            k_conv_direct_forward_slice((float *)out + (size_t)oc0 * P, inp, w + (size_t)oc0 * wper, b ? b + oc0 : NULL, &s, bf16,
                                        0, 1, 0);
        }
        return 1;
    }
    int nb, nt = k_conv_direct_team(d, bf16, &nb, 0, st16);
    if (!nt) return 0;
    if (nt == 1) { k_conv_direct_forward_slice(out, inp, w, b, d, bf16, 0, d->N, st16); return 1; }
    #pragma omp parallel num_threads(nt) K_TEAM
    {
        const int t = omp_get_thread_num(), n0 = t * nb;
        k_conv_direct_forward_slice(out, inp, w, b, d, bf16, n0, d->N - n0 < nb ? d->N - n0 : nb, st16);
    }
    return 1;
}

// images [n0, n0 + m) of k_conv2d_backward (f32 or bf16c) through their plan; dw and db:
// this slice's own (dwt, dbt: stored), dinp its slice (added with acc)
// (st16: dinp, dout and inp in bf16 storage, k_conv2d_backward_bf16s; a dinp added into
// (acc) comes out in float first and is added as k_accum_bf16_from_bf16 adds: k_conv_accum16)
static inline void k_conv_accum16(uint16_t *dst, const float *src, size_t n);
static inline void k_conv_direct_backward_slice(void *dinp, float *dwt, float *dbt, const void *dout, const void *inp,
                                                const float *w, const k_conv2d_dims *d, int bf16, int n0, int m, int acc,
                                                int st16) {
    k_conv2d_dims sd = *d;
    sd.N = m;
    const k_conv_plan *q = k_conv_plan_backward(&sd, bf16);
    if (!q) return;
    const size_t es = st16 ? 2 : 4, xo = (size_t)n0 * d->C * d->H * d->W * es;
    dout = (const char *)dout + (size_t)n0 * d->OC * d->OH * d->OW * es;
    const size_t ox = k_align64(q->ndyb), odw = ox + k_align64(q->nxb), owb = odw + k_align64(q->ndwb);
    const size_t odx = owb + k_align64(q->nwb), os = odx + k_align64(q->ndxb);
    const size_t nx = (size_t)m * d->C * d->H * d->W, of = os + k_align64(q->nscratch);   // (the float dinp of st16 && acc)
    char *ws = k_conv_workspace(of + (st16 && acc && dinp ? nx * sizeof(float) : 0));
    if (!ws) return;
    void *sp = ws + os;
    const size_t hx = (size_t)d->H * d->W, hy = (size_t)d->OH * d->OW;
    if (!k_conv_move16(q, st16 && q->own_dy16, 1, (size_t)m * d->OC / 16, hy, st16 ? q->dy16_in : q->dy_in, sp,
                       st16 ? &q->y16 : &q->y, dout, &q->dyb, ws))
        return;
    if (dwt) {
        const int arg[4] = { DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS };
        const dnnl_memory_desc_t *md[4] = { &q->xb, &q->dyb, &q->dwb, &q->bias };
        void *const ptr[4] = { ws + ox, ws, ws + odw, dbt };
        if (!(k_conv_move16(q, st16 && q->own_x16, 1, (size_t)m * d->C / 16, hx, st16 ? q->x16_in : q->x_in, sp,
                            st16 ? &q->x16 : &q->x, (const char *)inp + xo, &q->xb, ws + ox)
              && k_conv_exec(q, q->bwd_w, sp, 4, arg, md, ptr)
              && k_conv_reorder(q, q->dw_out, sp, &q->dwb, ws + odw, &q->w, dwt)))
            return;
    }
    if (dinp) {
        const int d16 = st16 && !acc && q->bwd_d16;   // (the input gradient in bf16 from the kernel)
        const int arg[3] = { DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC };
        const dnnl_memory_desc_t *md[3] = { &q->dyb, &q->wb, d16 ? &q->dxb16 : &q->dxb };
        void *const ptr[3] = { ws, ws + owb, ws + odx };
        if (!(k_conv_reorder(q, q->wb_in, sp, &q->w, w, &q->wb, ws + owb)
              && k_conv_exec(q, d16 ? q->bwd_d16 : q->bwd_d, sp, 3, arg, md, ptr)))
            return;
        char *dx = (char *)dinp + xo;
        if (d16) (void)k_conv_move16(q, q->own_dx16, 0, (size_t)m * d->C / 16, hx, q->dxb16_out, sp, &q->dxb16, ws + odx, &q->x16, dx);
        else if (!st16) (void)k_conv_reorder(q, acc ? q->dx_add : q->dx_out, sp, &q->dxb, ws + odx, &q->x, dx);
        else if (!acc) (void)k_conv_reorder(q, q->dx16_out, sp, &q->dxb, ws + odx, &q->x16, dx);
        else if (k_conv_reorder(q, q->dx_out, sp, &q->dxb, ws + odx, &q->x, ws + of))
            k_conv_accum16((uint16_t *)(void *)dx, (const float *)(void *)(ws + of), nx);
    }
}

// k_conv2d_backward (f32, or bf16c with bf16) through the plans, as k_conv_direct_forward;
// scratch: the threads' dw and db (k_conv2d_scratch covers them), added in thread order
static inline int k_conv_direct_backward(void *dinp, float *dw, float *db, const void *dout, const void *inp, const float *w,
                                         float *scratch, const k_conv2d_dims *d, int bf16, int acc, int pacc, int st16) {
    int nb, nt = k_conv_direct_team(d, bf16, &nb, 1, st16);
    if (!nt) return 0;
    const size_t nw = (size_t)d->OC * d->C * d->KH * d->KW, per = nw + d->OC;
    const int grads = dw || db;
    #pragma omp parallel num_threads(nt) if (nt > 1) K_TEAM
    {
        const int t = omp_get_thread_num(), n0 = t * nb;
        float *dwt = scratch + (size_t)t * per;
        k_conv_direct_backward_slice(dinp, grads ? dwt : NULL, dwt + nw, dout, inp, w, d, bf16, n0, d->N - n0 < nb ? d->N - n0 : nb, acc,
                                     st16);
    }
    for (int t = 0; t < nt && grads; t++) {
        const float *dwt = scratch + (size_t)t * per, *dbt = dwt + nw;
        const int put = t == 0 && !pacc;
        if (dw) for (size_t i = 0; i < nw; i++) dw[i] = put ? dwt[i] : dw[i] + dwt[i];
        if (db) for (int i = 0; i < d->OC; i++) db[i] = put ? dbt[i] : db[i] + dbt[i];
    }
    return 1;
}

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
// K_PUT(acc, dst, val): a backward kernel's write of a gradient: dst += val where it adds
// to what earlier ops wrote (acc), dst = val where it is the gradient's first writer
// (gen/plan.lua's reuse: the slot holds another gradient's stale values; not read)
#define K_PUT(acc, dst, val) ((dst) = (acc) ? (dst) + (val) : (val))

#define K_PARALLEL_FOR(cond, ...) \
    do { if (cond) { K_PARALLEL_PRAGMA __VA_ARGS__ } else { __VA_ARGS__ } } while (0)
typedef struct { int ndim; int shape[K_MAXDIM]; int64_t sa[K_MAXDIM], sb[K_MAXDIM]; } k_bcast_dims;
// where's three operands: the condition's, a's and b's broadcast strides
typedef struct { int ndim; int shape[K_MAXDIM]; int64_t sc[K_MAXDIM], sa[K_MAXDIM], sb[K_MAXDIM]; } k_where_dims;

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

// The GEMM of the bf16 kernels (SFX bf16c below): operands rounded to bf16, products
// summed in float, as PyTorch's bf16 autocast computes them.  Through oneDNN's matmul,
// which uses AVX512_BF16's dot products (vdpbf16ps) where the CPU has them; where its
// only bf16 matmul is the reference one (an AVX2 CPU, ONEDNN_MAX_CPU_ISA=AVX2) the
// bf16-rounded operands go through k_sgemm instead: the same products, summed in float.
// A primitive per shape, made once (a few ms) and kept: up to K_BF16_PLANS shapes.
#define K_BF16_PLANS 64
// Below about a million multiply-adds the matmul call's fixed cost (memory objects,
// stream) outweighs what the bf16 dot products save: those products take the fallback
// (one thread, alternating runs: 128x10x128 loses, 64x196x288 wins).
#define K_BF16_MIN_WORK 1048576.0
typedef struct {
    int M, N, K, ta, tb, ldc;
    float alpha, beta;
    dnnl_engine_t engine;
    dnnl_primitive_t prim;             // NULL: no bf16 matmul but the reference one
    dnnl_memory_desc_t a, b, c, scratch;
    size_t scratch_bytes;
} k_bf16_plan;
typedef struct { int n; k_bf16_plan plans[K_BF16_PLANS]; } k_bf16_plans;
static inline k_bf16_plans *k_bf16_plans_get(void) { static k_bf16_plans p; return &p; }

// the plan of a shape, made on first use (NULL: the cache is full)
static inline const k_bf16_plan *k_bf16_plan_of(int M, int N, int K, int ta, int tb, int ldc, float alpha, float beta) {
    k_bf16_plans *ps = k_bf16_plans_get();
    const k_bf16_plan *found = NULL;
    #pragma omp critical
    {
        for (int i = 0; i < ps->n && !found; i++) {
            const k_bf16_plan *q = &ps->plans[i];
            if (q->M == M && q->N == N && q->K == K && q->ta == ta && q->tb == tb && q->ldc == ldc
                && q->alpha == alpha && q->beta == beta) found = q;
        }
        // (no engine: recorded in a library; NULL, the fallback computes it)
        dnnl_engine_t engine = !found && ps->n < K_BF16_PLANS ? k_dnnl_engine_locked() : NULL;
        if (engine) {
            k_bf16_plan *q = &ps->plans[ps->n];
            *q = (k_bf16_plan){ M, N, K, ta, tb, ldc, alpha, beta, engine, NULL, {0}, {0}, {0}, {0}, 0 };
            // the operands as k_sgemm_bf16 packs them: op(A) (M, K), op(B) (K, N), C (M, N) with ldc
            dnnl_dims_t ad = { M, K }, as = { ta ? 1 : K, ta ? M : 1 };
            dnnl_dims_t bd = { K, N }, bs = { tb ? 1 : N, tb ? K : 1 };
            dnnl_dims_t cd = { M, N }, cs = { ldc, 1 };
            dnnl_matmul_desc_t desc;
            dnnl_primitive_attr_t attr = NULL;
            dnnl_post_ops_t post = NULL;
            dnnl_primitive_desc_t pd = NULL;
            int ok = dnnl_memory_desc_init_by_strides(&q->a, 2, ad, dnnl_bf16, as) == dnnl_success
                && dnnl_memory_desc_init_by_strides(&q->b, 2, bd, dnnl_bf16, bs) == dnnl_success
                && dnnl_memory_desc_init_by_strides(&q->c, 2, cd, dnnl_f32, cs) == dnnl_success
                && dnnl_matmul_desc_init(&desc, &q->a, &q->b, NULL, &q->c) == dnnl_success
                && dnnl_primitive_attr_create(&attr) == dnnl_success
                // the threads of a conv's image loop run one primitive at once: each
                // passes its own scratchpad (oneDNN's shared one is not for that)
                && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
                && (alpha == 1 || dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success)
                && dnnl_post_ops_create(&post) == dnnl_success
                && (beta == 0 || dnnl_post_ops_append_sum(post, beta) == dnnl_success)
                && dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success
                && dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success;
            const char *impl = NULL;
            if (ok && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success
                && impl && strncmp(impl, "ref", 3) != 0) {
                const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
                if (smd) { q->scratch = *smd; q->scratch_bytes = dnnl_memory_desc_get_size(smd); }
                ok = dnnl_primitive_create(&q->prim, pd) == dnnl_success;
            } else {
                ok = 0;
            }
            if (!ok) q->prim = NULL;
            if (pd) dnnl_primitive_desc_destroy(pd);
            if (post) dnnl_post_ops_destroy(post);
            if (attr) dnnl_primitive_attr_destroy(attr);
            found = q;
            ps->n++;
        }
    }
    return found;
}

// x (rows, cols) with leading dimension ld -> the thread's bf16 buffer `slot`, packed (ld = cols)
static inline k_bf16 *k_bf16_pack(int slot, const float *x, int rows, int cols, int ld) {
    static _Thread_local k_bf16 *buf[2];
    static _Thread_local size_t cap[2];
    size_t n = (size_t)rows * cols;
    if (n > cap[slot]) {
        // (also tells the compiler the size is an object's: with K_FAIL returning in a
        // library build, -Walloc-size-larger-than saw negative int products reach realloc)
        if (rows < 0 || cols < 0 || n > PTRDIFF_MAX / sizeof(k_bf16)) {
            K_FAIL_NOMEM("bf16 GEMM operands: %d x %d elements", rows, cols);
            return NULL;
        }
        k_bf16 *grown = realloc(buf[slot], n * sizeof(k_bf16));
        if (!grown) { K_FAIL_NOMEM("out of memory (bf16 GEMM operands, %zu elements)", n); return NULL; }
        buf[slot] = grown;
        cap[slot] = n;
    }
    for (int r = 0; r < rows; r++) {
        const float *src = x + (size_t)r * ld;
        k_bf16 *dst = buf[slot] + (size_t)r * cols;
        int j = 0;
#ifdef __AVX512BF16__
        // 16 at a time, rounded to nearest even as k_narrow_bf16 (a NaN stays a NaN)
        for (; j + 16 <= cols; j += 16) {
            __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + j));
            _mm256_storeu_si256((__m256i *)(dst + j), (__m256i)h);
        }
#endif
        for (; j < cols; j++) dst[j] = k_narrow_bf16(src[j]);
    }
    return buf[slot];
}

// x (rows, cols) with leading dimension ld -> dst (rows, cols) packed, each value rounded
// to bf16 and kept in float (k_round_bf16: branch-free, the loop vectorises)
static inline void k_bf16_round_rows(float *dst, const float *x, int rows, int cols, int ld) {
    for (int r = 0; r < rows; r++) {
        const float *src = x + (size_t)r * ld;
        float *o = dst + (size_t)r * cols;
        for (int j = 0; j < cols; j++) o[j] = k_round_bf16(src[j]);
    }
}

// C (M, N) = alpha * op(A) @ op(B) + beta * C with op(A) and op(B) rounded to bf16
static inline void k_sgemm_bf16(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                                int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                                float beta, float *C, int ldc) {
    const int at = ta != CblasNoTrans, bt = tb != CblasNoTrans;
    const k_bf16_plan *q = order == CblasRowMajor && M > 0 && N > 0 && K > 0 && (double)M * N * K >= K_BF16_MIN_WORK
        ? k_bf16_plan_of(M, N, K, at, bt, ldc, alpha, beta) : NULL;
    if (!q || !q->prim) {
        // the operands rounded to bf16 and kept in float (one pass each: what packing
        // them and widening the packs gives), through k_sgemm
        static _Thread_local float *wide;
        static _Thread_local size_t wide_cap;
        const size_t na = (size_t)M * K, n = na + (size_t)K * N;
        if (M < 0 || N < 0 || K < 0 || n > PTRDIFF_MAX / sizeof(float)) {
            K_FAIL_NOMEM("bf16 GEMM operands: %d x %d x %d", M, N, K);
            return;
        }
        if (n > wide_cap) {
            float *grown = realloc(wide, n * sizeof(float));
            if (!grown) { K_FAIL_NOMEM("out of memory (bf16 GEMM operands, %zu elements)", n); return; }
            wide = grown;
            wide_cap = n;
        }
        k_bf16_round_rows(wide, A, at ? K : M, at ? M : K, lda);
        k_bf16_round_rows(wide + na, B, bt ? N : K, bt ? K : N, ldb);
        k_sgemm(order, ta, tb, M, N, K, alpha, wide, at ? M : K, wide + na, bt ? K : N, beta, C, ldc);
        return;
    }
    k_bf16 *a16 = k_bf16_pack(0, A, at ? K : M, at ? M : K, lda);
    k_bf16 *b16 = a16 ? k_bf16_pack(1, B, bt ? N : K, bt ? K : N, ldb) : NULL;
    if (!b16) return;   // out of memory (K_FAIL_NOMEM)
    k_run_plan(q->prim, &q->a, &q->b, &q->c, &q->scratch, q->scratch_bytes, q->engine, a16, b16, C, "bf16", M, N, K);
}

// the type-generic kernels, instantiated for float and double
#define K_CAT2(a, b) a##_##b
#define K_CAT(a, b) K_CAT2(a, b)
#define FN(name) K_CAT(name, SFX)

#define T float
#define SFX f32
#define KM(fn) fn##f                 /* libm: KM(exp) is expf */
#define K_TANH so_tanh               /* scalar_ops.h: vectorisable */
#define K_ERF so_erf
#define K_EXP so_exp
#define K_GEMM k_sgemm
#define K_EPS_T 1.1920928955078125e-07
#define K_CONV_DIRECT 0              /* kernels_nn.inc: float convolutions through k_conv_direct_* where they take them */
#include "kernels_nn.inc"
#undef K_CONV_DIRECT
#define XT T                         /* kernels_chain.inc: the activations' storage, XLD/XST/XRND its conversions */
#define XLD(x) (x)
#define XST(v) (v)
#define XRND(v) (v)
#define XSTAGE 0
#include "kernels_chain.inc"
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
#undef K_TANH
#undef K_ERF
#undef K_EXP
#undef K_GEMM
#undef K_EPS_T

#define T double
#define SFX f64
#define KM(fn) fn
#define K_TANH tanh                  /* libm's: the gradient checks' reference */
#define K_ERF erf
#define K_EXP exp
#define K_GEMM cblas_dgemm
#define K_EPS_T 2.220446049250313e-16
#include "kernels_nn.inc"
#include "kernels_chain.inc"
#undef XT
#undef XLD
#undef XST
#undef XRND
#undef XSTAGE
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
#undef K_TANH
#undef K_ERF
#undef K_EXP
#undef K_GEMM
#undef K_EPS_T

// permute and slice once more for int64_t tensors (masks, indices): k_slice_forward_i64, ...
#define T int64_t
#define SFX i64
#include "kernels_move.inc"
#undef T
#undef SFX

// the GEMM layers once more over float buffers that hold bf16 values, their GEMMs in
// bf16 (k_sgemm_bf16): k_linear_forward_bf16c, k_conv2d_backward_bf16c, k_matmul_forward_bf16c, ...
// The op lowering (gen/ops_cpu.lua) calls them where every operand is read as bf16.
#define T float
#define SFX bf16c
#define KM(fn) fn##f
#define K_EXP so_exp
#define K_GEMM k_sgemm_bf16
#define K_EPS_T 1.1920928955078125e-07
#define K_CONV_DIRECT 1              /* kernels_nn.inc: through k_conv_direct_* in bf16 where they take them */
#include "kernels_nn.inc"
#undef K_CONV_DIRECT
#include "kernels_shape.inc"
#undef T
#undef SFX
#undef KM
#undef K_EXP
#undef K_GEMM
#undef K_EPS_T

// batch norm + ReLU [+ 2x2 max pool] over activations in bf16 storage (float arithmetic):
// k_bn_relu_forward_train_bf16, k_bn_relu_forward_eval_bf16, k_bn_relu_backward_bf16.
// gen/ops_cpu.lua's chain rules call them where every activation operand of the chain
// is stored and read as bf16 (no widening arena around the kernel).
#define T float
#define SFX bf16
#define KM(fn) fn##f
#define XT k_bf16
#define XLD(x) k_widen_bf16(x)
#define XST(v) k_narrow_bf16(v)
#define XRND(v) k_round_bf16(v)
#define XSTAGE 1                     /* row pairs staged in float (strided 16-bit loads do not vectorise) */
#include "kernels_chain.inc"
#undef XT
#undef XLD
#undef XST
#undef XRND
#undef XSTAGE
#undef T
#undef SFX
#undef KM

// The 2x2, stride-2 max pool (k_max_pool2d_2x2_plane's windows) over bf16 storage:
// k_max_pool2d_forward_bf16, k_max_pool2d_backward_bf16 (gen/ops_cpu.lua's max_pool2d,
// where the input and output are stored and read as bf16 and the windows are that one).
// Each plane is widened into this thread's float staging, pooled or routed by the float
// kernel's own code, and the result stored: the float kernel over widened operands with
// the precision plan's conversions around it, bit for bit, without the whole-tensor copies
// (the maximum of bf16 values is one of them, stored exactly; a routed gradient is one
// dout value or 0, added into the storage as k_accum_bf16_from_bf16 adds).
static inline float *k_stage_f32(size_t n) {   // this thread's staging (NULL: out of memory, recorded)
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    if (n > cap) {
        float *grown = realloc(buf, n * sizeof(float));
        if (!grown) { K_FAIL_NOMEM("out of memory (16-bit operands staged in float, %zu values)", n); return NULL; }
        buf = grown;
        cap = n;
    }
    return buf;
}
static inline void k_max_pool2d_forward_bf16(k_bf16 *out, int32_t *argmax, const k_bf16 *inp, const k_pool2d_dims *d) {
    const int H = d->H, W = d->W, OH = d->OH, OW = d->OW;
    const size_t S = (size_t)H * W, P = (size_t)OH * OW;
    const int planes = d->N * d->C;
    K_PARALLEL_FOR((size_t)planes * P > 16384,
    for (int pl = 0; pl < planes; pl++) {
        float *x = k_stage_f32(S + P);
        if (!x) continue;
        const k_bf16 *src = inp + (size_t)pl * S;
        for (size_t s = 0; s < S; s++) x[s] = k_widen_bf16(src[s]);
        k_max_pool2d_2x2_plane_f32(x + S, argmax ? argmax + (size_t)pl * P : NULL, x, W, OH, OW);
        k_bf16 *o = out + (size_t)pl * P;
        for (size_t p = 0; p < P; p++) o[p] = k_narrow_bf16(x[S + p]);
    });
}
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// one plane of the backward below without the staging, row pair by row pair, 16 windows a
// step: each window's four positions get 0 + dout at its winner (argmax: one of them)
// and 0 elsewhere, as the staging's cleared plane and the added winners hold, then each
// value is stored (or added: acc) as the staging's are; positions in no window (an odd
// last row or column) the same with 0
static inline void k_pool_bwd_put16(k_bf16 *dst, __m512 g, __mmask16 k, int acc) {   // narrow(g) or narrow(widen(dst) + g)
    if (acc) g = _mm512_add_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, dst)), 16)), g);
    // k_narrow_bf16: a NaN (dout's) quieted, a number rounded to nearest even
    const __m512i u = _mm512_castps_si512(g), one = _mm512_set1_epi32(1);
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                                                         _mm512_and_si512(_mm512_srli_epi32(u, 16), one)), 16);
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    _mm256_mask_storeu_epi16(dst, k, _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q)));
}
static inline void k_max_pool2d_backward_bf16_plane(k_bf16 *dx, const k_bf16 *dO, const int32_t *am, int H, int W, int OH, int OW,
                                                    int acc) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i two_j = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 zero = _mm512_setzero_ps();
    for (int oh = 0; oh < OH; oh++) {
        k_bf16 *d0 = dx + (size_t)(2 * oh) * W, *d1 = d0 + W;
        for (int j0 = 0; j0 < OW; j0 += 16) {
            const int m = OW - j0 < 16 ? OW - j0 : 16, m2 = 2 * m;
            const __mmask16 k = (__mmask16)((1u << m) - 1);
            const __mmask16 klo = (__mmask16)(m2 >= 16 ? 0xffffu : (1u << m2) - 1);
            const __mmask16 khi = (__mmask16)(m2 > 16 ? (1u << (m2 - 16)) - 1 : 0);
            const size_t p = (size_t)oh * OW + j0;
            const __m512 v = _mm512_add_ps(zero, _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, dO + p)), 16)));
            const __m512i at = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, am + p),
                                                _mm512_add_epi32(_mm512_set1_epi32(2 * oh * W + 2 * j0), two_j));
            const __m512 e0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_setzero_si512()), v);
            const __m512 e1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(1)), v);
            const __m512 f0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(W)), v);
            const __m512 f1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(W + 1)), v);
            k_pool_bwd_put16(d0 + 2 * j0, _mm512_permutex2var_ps(e0, lo, e1), klo, acc);
            k_pool_bwd_put16(d0 + 2 * j0 + 16, _mm512_permutex2var_ps(e0, hi, e1), khi, acc);
            k_pool_bwd_put16(d1 + 2 * j0, _mm512_permutex2var_ps(f0, lo, f1), klo, acc);
            k_pool_bwd_put16(d1 + 2 * j0 + 16, _mm512_permutex2var_ps(f0, hi, f1), khi, acc);
        }
        for (int w = 2 * OW; w < W; w++) {   // (odd W: columns in no window)
            d0[w] = acc ? k_narrow_bf16(k_widen_bf16(d0[w]) + 0.0f) : k_narrow_bf16(0.0f);
            d1[w] = acc ? k_narrow_bf16(k_widen_bf16(d1[w]) + 0.0f) : k_narrow_bf16(0.0f);
        }
    }
    for (size_t s = (size_t)(2 * OH) * W; s < (size_t)H * W; s++)   // (rows in no window)
        dx[s] = acc ? k_narrow_bf16(k_widen_bf16(dx[s]) + 0.0f) : k_narrow_bf16(0.0f);
}
#endif
static inline void k_max_pool2d_backward_bf16(k_bf16 *dinp, const k_bf16 *dout, const int32_t *argmax, const k_pool2d_dims *d,
                                              int acc) {
    const size_t S = (size_t)d->H * d->W, P = (size_t)d->OH * d->OW;
    const int planes = d->N * d->C;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    K_PARALLEL_FOR((size_t)planes * P > 16384,
    for (int pl = 0; pl < planes; pl++)
        k_max_pool2d_backward_bf16_plane(dinp + (size_t)pl * S, dout + (size_t)pl * P, argmax + (size_t)pl * P, d->H, d->W,
                                         d->OH, d->OW, acc););
#else
    K_PARALLEL_FOR((size_t)planes * P > 16384,
    for (int pl = 0; pl < planes; pl++) {
        float *g = k_stage_f32(S);
        if (!g) continue;
        const k_bf16 *dO = dout + (size_t)pl * P;
        const int32_t *am = argmax + (size_t)pl * P;
        k_bf16 *dx = dinp + (size_t)pl * S;
        memset(g, 0, S * sizeof(float));
        for (size_t p = 0; p < P; p++) g[am[p]] += k_widen_bf16(dO[p]);
        if (acc) for (size_t s = 0; s < S; s++) dx[s] = k_narrow_bf16(k_widen_bf16(dx[s]) + g[s]);
        else for (size_t s = 0; s < S; s++) dx[s] = k_narrow_bf16(g[s]);
    });
#endif
}

// The bf16c convolutions over bf16 storage (k_conv2d_forward_bf16s, k_conv2d_backward_bf16s:
// the input, output and their gradients k_bf16; weights, bias and their gradients float
// holding bf16 values, as the bf16c kernels take them).  gen/ops_cpu.lua's conv2d calls
// them where those activations are stored and read as bf16.  oneDNN's direct kernels read
// and write the bf16 storage through their reorders (k_conv_plan's fwd16/bwd16: the input
// exact, the float results rounded to nearest even as k_store_bf16_from_bf16 rounds);
// elsewhere (im2col: few channels, no AVX512_BF16) each thread widens its chunk of images
// (k_conv2d_forward_impl_bf16c's and k_conv2d_backward_bf16c's chunks, the same team and
// split) into its own float staging, runs the bf16c chunk there and stores the chunk's
// results (a first layer's 32 planes of 28x28: 100 KB a chunk, in the core's cache,
// where the whole batch staged was 13 MB through memory each way, +46 MB peak for paw).
// Either way the bf16c kernel over widened operands with the precision plan's conversions
// around it, bit for bit (tests/test_kernels.c: conv2d_native).
static inline void k_conv_accum16(uint16_t *dst, const float *src, size_t n) {   // k_accum_bf16_from_bf16
    for (size_t i = 0; i < n; i++) dst[i] = k_narrow_bf16(k_widen_bf16(dst[i]) + k_round_bf16(src[i]));
}
static inline void k_conv_widen16(float *dst, const k_bf16 *src, size_t n) {   // k_load_bf16_as_bf16, on this thread
    for (size_t i = 0; i < n; i++) dst[i] = k_widen_bf16(src[i]);
}
static inline void k_conv_store16(k_bf16 *dst, const float *src, size_t n) {   // k_store_bf16_from_bf16, on this thread
    for (size_t i = 0; i < n; i++) dst[i] = k_narrow_bf16(src[i]);
}
// (in16 0: the input and its gradient float, holding bf16 values, as the bf16c kernels
// take them: k_conv2d_*_bf16o, a first layer's float input rounded to bf16 by the plan)
static inline void k_conv2d_forward_s16(k_bf16 *out, const void *inp, int in16, const float *w, const float *b, float *scratch,
                                        const k_conv2d_dims *d) {
    if (in16 && k_conv_direct_forward(out, inp, w, b, d, 1, 1)) return;
    const size_t nx1 = (size_t)d->C * d->H * d->W, ny1 = (size_t)d->OC * d->OH * d->OW;
    int nbd;
    // staged whole: one image (k_conv2d_forward_rows may split it among the team), or a
    // shape whose direct kernels take float storage only
    if (d->N == 1 || k_conv_direct_team(d, 1, &nbd, 0, 0)) {
        const size_t nx = in16 ? nx1 * d->N : 0, ny = ny1 * d->N;
        float *x = k_stage_f32(nx + ny);
        if (!x) return;
        if (in16) k_load_bf16_as_bf16(x, inp, nx);
        k_conv2d_forward_bf16c(x + nx, in16 ? x : inp, w, b, scratch, d);
        k_store_bf16_from_bf16(out, x + nx, ny);
        return;
    }
    // k_conv2d_forward_impl_bf16c's chunks
    const size_t per_thread = k_conv2d_scratch_per_thread_bf16c(d);
    const int Kc = d->C / d->G * d->KH * d->KW, P = d->OH * d->OW, nbmax = k_conv2d_chunk_bf16c(d);
    const int nt = k_max_threads() < d->N ? k_max_threads() : d->N;
    int nb = nt > 1 ? (d->N + nt - 1) / nt : nbmax;
    if (nb > nbmax) nb = nbmax;
    if (nb < 1) nb = 1;
    const int nchunks = (d->N + nb - 1) / nb;
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) K_TEAM
    for (int c = 0; c < nchunks; c++) {
        float *col = scratch + (size_t)omp_get_thread_num() * per_thread;
        const int n0 = c * nb, m = d->N - n0 < nb ? d->N - n0 : nb;
        const size_t mx = in16 ? (size_t)m * nx1 : 0;
        float *y = k_stage_f32(mx + (size_t)m * ny1);
        if (!y) continue;
        const float *x = (const float *)inp + (size_t)n0 * nx1;
        if (in16) {
            k_conv_widen16(y, (const k_bf16 *)inp + (size_t)n0 * nx1, mx);
            x = y;
            y += mx;
        }
        if (m == 1) k_conv2d_forward_image_bf16c(y, x, w, b, col, d, 0, 0);
        else k_conv2d_forward_chunk_bf16c(y, x, w, b, col, col + (size_t)Kc * nbmax * P, d, 0, m, 0);
        k_conv_store16(out + (size_t)n0 * ny1, y, (size_t)m * ny1);
    }
}
// dinp (in16: bf16, else float) stored (acc 0) or added into (acc 1); dw, db as
// k_conv2d_backward_bf16c's (pacc)
static inline void k_conv2d_backward_s16(void *dinp, float *dw, float *db, const k_bf16 *dout, const void *inp, int in16,
                                         const float *w, float *scratch, const k_conv2d_dims *d, int acc, int pacc) {
    if (in16 && k_conv_direct_backward(dinp, dw, db, dout, inp, w, scratch, d, 1, acc, pacc, 1)) return;
    const size_t nx1 = (size_t)d->C * d->H * d->W, ny1 = (size_t)d->OC * d->OH * d->OW;
    int nbd;
    if (k_conv_direct_team(d, 1, &nbd, 1, 0)) {   // the direct kernels over float storage: staged whole
        const size_t nx = nx1 * d->N, ny = ny1 * d->N, nxs = in16 ? nx : 0;
        float *x = k_stage_f32(2 * nxs + ny);
        if (!x) return;
        float *dy = x + nxs, *dx = dy + ny;
        if (in16) k_load_bf16_as_bf16(x, inp, nx);
        k_load_bf16_as_bf16(dy, dout, ny);
        if (!in16) { k_conv2d_backward_bf16c(dinp, dw, db, dy, inp, w, scratch, d, acc, pacc); return; }
        k_conv2d_backward_bf16c(dinp ? dx : NULL, dw, db, dy, x, w, scratch, d, 0, pacc);
        if (dinp && acc) k_accum_bf16_from_bf16(dinp, dx, nx);
        else if (dinp) k_store_bf16_from_bf16(dinp, dx, nx);
        return;
    }
    const int Kc = d->C / d->G * d->KH * d->KW, P = d->OH * d->OW, OCg = d->OC / d->G;
    const size_t per_thread = k_conv2d_scratch_per_thread_bf16c(d), nw = (size_t)d->OC * Kc;
    const int nbmax = k_conv2d_chunk_bf16c(d);
    int nb, nchunks;
    const int nt = k_conv2d_backward_team_bf16c(d, &nb, &nchunks);
    #pragma omp parallel num_threads(nt) K_TEAM
    {
        float *col = scratch + (size_t)omp_get_thread_num() * per_thread;
        float *dOb = col + (size_t)Kc * nbmax * P;
        float *dwt = dOb + (size_t)OCg * nbmax * P, *dbt = dwt + nw;
        memset(dwt, 0, (nw + d->OC) * sizeof(float));
        #pragma omp for schedule(static)
        for (int c = 0; c < nchunks; c++) {
            const int n0 = c * nb, m = d->N - n0 < nb ? d->N - n0 : nb;
            const size_t mx = (size_t)m * nx1, my = (size_t)m * ny1, mxs = in16 ? mx : 0;
            float *dy = k_stage_f32(mxs * (dinp ? 2 : 1) + my);
            if (!dy) continue;
            const float *x = (const float *)inp + (size_t)n0 * nx1;
            float *dx = dinp && !in16 ? (float *)dinp + (size_t)n0 * nx1 : NULL;
            if (in16) {
                k_conv_widen16(dy, (const k_bf16 *)inp + (size_t)n0 * nx1, mx);
                x = dy;
                dy += mx;
                if (dinp) dx = dy + my;
            }
            k_conv_widen16(dy, dout + (size_t)n0 * ny1, my);
            k_conv2d_backward_chunk_bf16c(dx, dwt, dbt, dy, x, w, col, dOb, d, m, in16 ? 0 : acc, dw != NULL, db != NULL);
            if (!in16 || !dinp) continue;
            if (acc) k_conv_accum16((k_bf16 *)dinp + (size_t)n0 * nx1, dx, mx);
            else k_conv_store16((k_bf16 *)dinp + (size_t)n0 * nx1, dx, mx);
        }
    }
    k_conv2d_backward_sum_bf16c(dw, db, scratch, d, nt, pacc);
}
static inline void k_conv2d_forward_bf16s(k_bf16 *out, const k_bf16 *inp, const float *w, const float *b, float *scratch,
                                          const k_conv2d_dims *d) {
    k_conv2d_forward_s16(out, inp, 1, w, b, scratch, d);
}
static inline void k_conv2d_backward_bf16s(k_bf16 *dinp, float *dw, float *db, const k_bf16 *dout, const k_bf16 *inp, const float *w,
                                           float *scratch, const k_conv2d_dims *d, int acc, int pacc) {
    k_conv2d_backward_s16(dinp, dw, db, dout, inp, 1, w, scratch, d, acc, pacc);
}
static inline void k_conv2d_forward_bf16o(k_bf16 *out, const float *inp, const float *w, const float *b, float *scratch,
                                          const k_conv2d_dims *d) {
    k_conv2d_forward_s16(out, inp, 0, w, b, scratch, d);
}
static inline void k_conv2d_backward_bf16o(float *dinp, float *dw, float *db, const k_bf16 *dout, const float *inp, const float *w,
                                           float *scratch, const k_conv2d_dims *d, int acc, int pacc) {
    k_conv2d_backward_s16(dinp, dw, db, dout, inp, 0, w, scratch, d, acc, pacc);
}

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
