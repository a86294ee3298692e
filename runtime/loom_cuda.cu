// The CUDA backend's host runtime (see loom_cuda.h).
#include "loom_cuda.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

LC_THREAD_LOCAL lc_recovery *lc_recover;

void lc_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (lc_recover) {
        vsnprintf(lc_recover->message, sizeof lc_recover->message, fmt, ap);
        va_end(ap);
        longjmp(lc_recover->at, 1);
    }
    fprintf(stderr, "train: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void lc_check(int status, const char *what, const char *file, int line) {
    if (status == 0) return;
    lc_fail("%s:%d: %s failed: %s", file, line, what, cudaGetErrorString((cudaError_t)status));
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------
// the device check

void lc_require_device(int argc, char **argv, const char *accelerator, const char *cpu_program, int device) {
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    char why[256];
    if (rc != cudaSuccess) snprintf(why, sizeof why, "%s", cudaGetErrorString(rc));
    else if (count <= device) snprintf(why, sizeof why, "%d device(s) visible, device %d asked for", count, device);
    if (rc == cudaSuccess && count > device) {
        LC_CHECK(cudaSetDevice(device));
        return;
    }
    if (strcmp(accelerator, "auto") != 0) {
        fprintf(stderr, "train: no CUDA device (%s); the spec asks for accelerator \"cuda\" "
                        "(accelerator = \"auto\" falls back to the CPU)\n", why);
        exit(1);
    }
    // the CPU build sits next to this program
    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) snprintf(self, sizeof self, "%s", argv[0]);
    else self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) slash[1] = 0; else snprintf(self, sizeof self, "./");
    snprintf(path, sizeof path, "%s%s", self, cpu_program);
    printf("no CUDA device (%s): running the CPU build %s\n", why, path);
    fflush(stdout);
    // the same flags, less the GPU's own (--cuda-graph, --device N), which the CPU build refuses
    char **cpu_argv = (char **)calloc((size_t)argc + 1, sizeof *cpu_argv);
    if (!cpu_argv) { fprintf(stderr, "train: out of memory\n"); exit(1); }
    int k = 0;
    cpu_argv[k++] = path;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cuda-graph")) continue;
        if (!strcmp(argv[i], "--device")) { i++; continue; }
        cpu_argv[k++] = argv[i];
    }
    cpu_argv[k] = NULL;
    execv(path, cpu_argv);
    fprintf(stderr, "train: cannot run the CPU build %s: %s\n", path, strerror(errno));
    exit(1);
}

// ---------------------------------------------------------------------------
// kernels: NVRTC through the cache, launched with the driver's cuLaunchKernel

typedef int (*launch_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                         unsigned shmem, void *stream, void **params, void **extra);
static launch_fn cu_launch;

static void open_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) lib = dlopen("libcuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) lc_fail("cannot open the CUDA driver (libcuda.so.1): %s", dlerror());
    *(void **)&cu_launch = dlsym(lib, "cuLaunchKernel");
    if (!cu_launch) lc_fail("the CUDA driver has no cuLaunchKernel");
}

typedef struct {
    const lc_kernel_source *src;
    jit_header prelude;
    jit_image *img;
    int n, major, minor, failed;
    int next;
    pthread_mutex_t lock;
    char err[1024];
} compile_job;

static void *compile_worker(void *arg) {
    compile_job *j = (compile_job *)arg;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        int i = j->next++;
        pthread_mutex_unlock(&j->lock);
        if (i >= j->n) return NULL;
        char err[1024];
        if (jit_compile_with_headers(JIT_CUBIN, j->src[i].name, j->src[i].source, &j->prelude, 1, j->major, j->minor, NULL,
                                     &j->img[i], err, sizeof err)) {
            pthread_mutex_lock(&j->lock);
            if (!j->failed) snprintf(j->err, sizeof j->err, "%s", err);
            j->failed = 1;
            pthread_mutex_unlock(&j->lock);
        }
    }
}

static void compile_all(const char *prelude, const lc_kernel_source *src, int n, int major, int minor, jit_image *img) {
    compile_job j;
    memset(&j, 0, sizeof j);
    j.src = src; j.img = img; j.n = n; j.major = major; j.minor = minor;
    j.prelude.name = LC_PRELUDE; j.prelude.text = prelude;
    pthread_mutex_init(&j.lock, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = cpus > 8 ? 8 : cpus < 1 ? 1 : (int)cpus;
    pthread_t t[8];
    for (int i = 0; i < nt; i++) pthread_create(&t[i], NULL, compile_worker, &j);
    for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
    pthread_mutex_destroy(&j.lock);
    if (j.failed) {
        for (int i = 0; i < n; i++) jit_image_free(&img[i]);
        free(img);
        lc_fail("%s", j.err);
    }
}

void lc_kernels_load(const char *prelude, const lc_kernel_source *src, int n, jit_kernel *out, int quiet) {
    int major = 0, minor = 0;
    char err[1024];
    if (jit_device_arch(0, &major, &minor, err, sizeof err)) lc_fail("%s", err);
    double t0 = seconds_now();
    jit_image *img = (jit_image *)calloc((size_t)n, sizeof *img);
    if (!img) lc_fail("out of memory for %d kernels", n);
    compile_all(prelude, src, n, major, minor, img);   // frees img on a failure
    int hits = 0;
    for (int i = 0; i < n; i++) {
        hits += img[i].from_cache;
        if (jit_load(&img[i], src[i].name, &out[i], err, sizeof err)) {
            for (int k = i; k < n; k++) jit_image_free(&img[k]);
            free(img);
            lc_fail("%s", err);
        }
        if (img[i].note[0] && !quiet) fprintf(stderr, "note: %s\n", img[i].note);
        jit_image_free(&img[i]);
    }
    free(img);
    if (!cu_launch) open_driver();
    if (!quiet)
        printf("kernels: %d for sm_%d%d, %d from the cache, %d compiled by NVRTC (%.2f s)\n", n, major, minor, hits,
               n - hits, seconds_now() - t0);
}

int lc_kernels_check(const char *prelude, const lc_kernel_source *src, int n, int sm_major, int sm_minor,
                     const char *ptx_dir) {
    int failed = 0;
    char err[1024], path[4096];
    if (ptx_dir && mkdir(ptx_dir, 0777) && errno != EEXIST) { perror(ptx_dir); return n; }
    double t0 = seconds_now();
    jit_image *img = (jit_image *)calloc((size_t)n, sizeof *img);
    compile_all(prelude, src, n, sm_major, sm_minor, img);   // exits on a failure, naming the kernel
    int hits = 0;
    for (int i = 0; i < n; i++) {
        hits += img[i].from_cache;
        if (img[i].kind != JIT_CUBIN) { fprintf(stderr, "%s: not a cubin for sm_%d%d\n", src[i].name, sm_major, sm_minor); failed++; }
        jit_image_free(&img[i]);
        if (!ptx_dir) continue;
        jit_image ptx;
        jit_header h = { LC_PRELUDE, prelude };
        if (jit_compile_with_headers(JIT_PTX, src[i].name, src[i].source, &h, 1, sm_major, sm_minor, NULL, &ptx, err,
                                     sizeof err)) {
            fprintf(stderr, "%s\n", err);
            failed++;
            continue;
        }
        snprintf(path, sizeof path, "%s/%s.ptx", ptx_dir, src[i].name);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(ptx.data, 1, ptx.size - 1, f) != ptx.size - 1) { perror(path); failed++; }
        if (f) fclose(f);
        jit_image_free(&ptx);
    }
    free(img);
    printf("jit-check sm_%d%d: %d kernels, %d from the cache, %d failed (%.2f s)\n", sm_major, sm_minor, n, hits, failed,
           seconds_now() - t0);
    return failed;
}

void lc_launch(const jit_kernel *k, unsigned blocks, unsigned threads, void *stream, void **args) {
    int rc = cu_launch(k->function, blocks, 1, 1, threads, 1, 1, 0, stream, args, NULL);
    if (rc != 0) lc_fail("cuLaunchKernel failed (CUresult %d)", rc);
}

unsigned lc_blocks(int64_t n, unsigned threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 32) b = 65535 * 32;
    return (unsigned)b;
}

// ---------------------------------------------------------------------------
// GEMMs

static cublasLtHandle_t lt;
static void *workspace;
static const size_t WORKSPACE = 32u << 20;

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    int64_t batch;   // lc_gemm_batched's batch count (1 for lc_gemm)
} gemm_plan;

static void lt_check(cublasStatus_t s, const char *what, const char *site) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    lc_fail("cuBLASLt %s failed for %s: status %d", what, site, (int)s);
}

// Keeps plan p for (M, N, K) at its call site: a site sees the full batch and the last
// one, so 4 slots; a fifth shape replaces (and frees) the plan of the fourth.
static void site_keep(lc_gemm_site *site, int64_t M, int64_t N, int64_t K, gemm_plan *p) {
    int slot = site->n < 4 ? site->n++ : 3;
    gemm_plan *old = (gemm_plan *)site->plans[slot];   // NULL (static sites start zeroed) but for a fifth shape
    if (old) {
        cublasLtMatmulDescDestroy(old->op);
        cublasLtMatrixLayoutDestroy(old->a);
        cublasLtMatrixLayoutDestroy(old->b);
        cublasLtMatrixLayoutDestroy(old->c);
        free(old);
    }
    site->plans[slot] = p;
    site->mnk[slot][0] = M; site->mnk[slot][1] = N; site->mnk[slot][2] = K;
}

static cudaDataType_t dtype(lc_format f) {
    return f == LC_BF16 ? CUDA_R_16BF : f == LC_F16 ? CUDA_R_16F : CUDA_R_32F;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLASLt sees
// m = N, n = M, with B as its first operand and A as its second.
// A strided batch (lc_gemm_batched): the count, each operand's stride between matrices
// (A, B, C, in elements) and the alignment in bytes its matrices all have (the heuristic
// otherwise assumes 256: a batch of matrices at odd strides needs an algorithm for less).
typedef struct { int64_t count, stride[3]; uint32_t align[3]; } gemm_batch;

// `batch` (NULL for one matrix) makes the layouts strided batches.
static gemm_plan *make_plan(const lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, lc_format ab,
                            lc_format cf, int has_bias, lc_epilogue act, int tf32, const gemm_batch *batch) {
    gemm_plan *p = (gemm_plan *)calloc(1, sizeof *p);
    p->batch = batch ? batch->count : 1;
    cublasComputeType_t ct = (tf32 && ab == LC_F32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    lt_check(cublasLtMatmulDescCreate(&p->op, ct, CUDA_R_32F), "MatmulDescCreate", site->what);
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa), "TRANSA", site->what);
    lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb), "TRANSB", site->what);
    if (has_bias || act != LC_EPI_NONE) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        if (act == LC_EPI_RELU) epi = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
        if (act == LC_EPI_GELU) epi = has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
        if (act == LC_EPI_GELU_AUX) epi = has_bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "EPILOGUE", site->what);
    }
    if (act == LC_EPI_GELU_AUX) {   // the pre-activation, laid out as C (leading dimension N)
        int64_t ld = N;
        int32_t at = (int32_t)dtype(cf);
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld), "AUX_LD", site->what);
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &at, sizeof at),
                 "AUX_DATA_TYPE", site->what);
    }
    if (has_bias) {
        int32_t bt = (int32_t)dtype(cf);
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), "BIAS_DATA_TYPE",
                 site->what);
    }
    // the first operand (row-major B): stored N x K when tb, else K x N (row-major), i.e.
    // column-major rows x cols with leading dimension = rows
    if (tb) lt_check(cublasLtMatrixLayoutCreate(&p->a, dtype(ab), (uint64_t)K, (uint64_t)N, K), "layout B", site->what);
    else lt_check(cublasLtMatrixLayoutCreate(&p->a, dtype(ab), (uint64_t)N, (uint64_t)K, N), "layout B", site->what);
    if (ta) lt_check(cublasLtMatrixLayoutCreate(&p->b, dtype(ab), (uint64_t)M, (uint64_t)K, M), "layout A", site->what);
    else lt_check(cublasLtMatrixLayoutCreate(&p->b, dtype(ab), (uint64_t)K, (uint64_t)M, K), "layout A", site->what);
    lt_check(cublasLtMatrixLayoutCreate(&p->c, dtype(cf), (uint64_t)N, (uint64_t)M, N), "layout C", site->what);
    if (batch) {   // cuBLASLt's first operand is the row-major B, its second A
        const int32_t count = (int32_t)batch->count;
        cublasLtMatrixLayout_t layouts[3] = { p->a, p->b, p->c };
        const int64_t offsets[3] = { batch->stride[1], batch->stride[0], batch->stride[2] };
        for (int i = 0; i < 3; i++) {
            lt_check(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                     "BATCH_COUNT", site->what);
            lt_check(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offsets[i],
                                                      sizeof offsets[i]), "STRIDED_BATCH_OFFSET", site->what);
        }
    }
    cublasLtMatmulPreference_t pref;
    lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate", site->what);
    size_t ws = WORKSPACE;
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
             "MAX_WORKSPACE", site->what);
    if (batch) {
        const cublasLtMatmulPreferenceAttributes_t which[4] = { CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES };
        const uint32_t align[4] = { batch->align[1], batch->align[0], batch->align[2], batch->align[2] };
        for (int i = 0; i < 4; i++)
            lt_check(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &align[i], sizeof align[i]), "MIN_ALIGNMENT", site->what);
    }
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    lt_check(cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found), "AlgoGetHeuristic",
             site->what);
    cublasLtMatmulPreferenceDestroy(pref);
    if (found < 1)
        lc_fail("cuBLASLt has no algorithm for %s (%lld x %lld x %lld)", site->what, (long long)M, (long long)N, (long long)K);
    p->algo = res.algo;
    return p;
}

void lc_gemm(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
             lc_format ab, void *C, lc_format cf, float beta, const void *bias, int tf32, void *stream) {
    lc_gemm_epilogue(site, ta, tb, M, N, K, A, B, ab, C, cf, beta, bias, LC_EPI_NONE, NULL, tf32, stream);
}

void lc_gemm_epilogue(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                      lc_format ab, void *C, lc_format cf, float beta, const void *bias, lc_epilogue epi, void *aux,
                      int tf32, void *stream) {
    if (!lt) {
        lt_check(cublasLtCreate(&lt), "Create", site->what);
        LC_CHECK(cudaMalloc(&workspace, WORKSPACE));
    }
    gemm_plan *p = NULL;
    for (int i = 0; i < site->n; i++)
        if (site->mnk[i][0] == M && site->mnk[i][1] == N && site->mnk[i][2] == K) p = (gemm_plan *)site->plans[i];
    if (!p) {
        p = make_plan(site, ta, tb, M, N, K, ab, cf, bias != NULL, epi, tf32, NULL);
        site_keep(site, M, N, K, p);
    }
    if (bias)
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "BIAS_POINTER",
                 site->what);
    if (aux)
        lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux), "AUX_POINTER",
                 site->what);
    const float alpha = 1.0f;
    lt_check(cublasLtMatmul(lt, p->op, &alpha, B, p->a, A, p->b, &beta, C, p->c, C, p->c, &p->algo, workspace, WORKSPACE,
                            (cudaStream_t)stream),
             "Matmul", site->what);
}

static size_t elem_size(lc_format f) { return f == LC_F32 ? 4 : 2; }
// the largest power of two up to 256 dividing the address of every matrix of a batch
static uint32_t alignment(const void *base, int64_t stride, size_t elem) {
    uint64_t bits = (uint64_t)(uintptr_t)base | (uint64_t)stride * elem | 256;
    return (uint32_t)(bits & (~bits + 1));
}

void lc_gemm_batched(lc_gemm_site *site, int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t batch,
                     const void *A, int64_t sa, const void *B, int64_t sb, lc_format ab,
                     void *C, int64_t sc, lc_format cf, float alpha, float beta, int tf32, void *stream) {
    if (!lt) {
        lt_check(cublasLtCreate(&lt), "Create", site->what);
        LC_CHECK(cudaMalloc(&workspace, WORKSPACE));
    }
    gemm_plan *p = NULL;
    for (int i = 0; i < site->n; i++)
        if (site->mnk[i][0] == M && site->mnk[i][1] == N && site->mnk[i][2] == K && ((gemm_plan *)site->plans[i])->batch == batch)
            p = (gemm_plan *)site->plans[i];
    if (!p) {
        gemm_batch b = { batch, { sa, sb, sc }, { alignment(A, sa, elem_size(ab)), alignment(B, sb, elem_size(ab)),
                                                  alignment(C, sc, elem_size(cf)) } };
        p = make_plan(site, ta, tb, M, N, K, ab, cf, 0, LC_EPI_NONE, tf32, &b);
        site_keep(site, M, N, K, p);
    }
    lt_check(cublasLtMatmul(lt, p->op, &alpha, B, p->a, A, p->b, &beta, C, p->c, C, p->c, &p->algo, workspace, WORKSPACE,
                            (cudaStream_t)stream),
             "Matmul", site->what);
}

void lc_gemm_shutdown(void) {
    if (lt) cublasLtDestroy(lt);
    if (workspace) cudaFree(workspace);
    lt = NULL;
    workspace = NULL;
}
