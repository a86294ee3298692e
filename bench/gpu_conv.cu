// gpu_conv: the CUDA backend's convolution (gen/ops_cuda.lua: im2col + one cuBLASLt GEMM
// through runtime/loom_cuda.cu's lc_gemm, plus the layout kernels around it) against
// cuDNN (cudnnConvolutionForward / BackwardData / BackwardFilter, each with the fastest
// algorithm cudnnFind* reports), at fashion_cnn's and paw's conv shapes, fp32 (no TF32 on
// either side) and bf16 (float accumulation).  Prints milliseconds per call (mean of
// REPS after WARMUP) and the ratio loom / cuDNN.  Without a GPU: prints "no GPU", exits 0.
// Built and run by bench/gpu_conv.sh.
#include "loom_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

enum { WARMUP = 3, REPS = 20 };

#define CUDNN_CHECK(call) do { cudnnStatus_t s_ = (call); if (s_ != CUDNN_STATUS_SUCCESS) { \
    fprintf(stderr, "gpu_conv: %s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudnnGetErrorString(s_)); exit(1); } } while (0)

typedef struct { const char *spec; int N, C, H, W, OC, K, pad; } conv_shape;

// the layout kernels of gen/ops_cuda.lua's conv2d, for element type T (float or bf16)
template <typename T> __device__ float widen(T v);
template <> __device__ float widen<float>(float v) { return v; }
template <> __device__ float widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ T narrow(float v);
template <> __device__ float narrow<float>(float v) { return v; }
template <> __device__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

#define GRID_LOOP for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)

// cols (C·K·K, N·OH·OW) from x (N, C, H, W); stride 1, "same" padding
template <typename T>
__global__ void im2col(const T *x, T *cols, long long n, long long NP, int C, int H, int W, int K, int pad) {
    GRID_LOOP {
        long long q = i / NP, col = i % NP, P = (long long)H * W;
        long long b = col / P, p = col % P;
        int oh = (int)(p / W), ow = (int)(p % W);
        int c = (int)(q / (K * K)), r = (int)(q % (K * K)), kh = r / K, kw = r % K;
        int h = oh - pad + kh, w = ow - pad + kw;
        float v = 0;
        if (h >= 0 && h < H && w >= 0 && w < W) v = widen(x[((b * C + c) * H + h) * (long long)W + w]);
        cols[i] = narrow<T>(v);
    }
}

// y (N, OC, P) = yt (OC, N·P) + bias
template <typename T>
__global__ void conv_out(const float *yt, const T *bias, T *y, long long n, long long NP, int OC, long long P) {
    GRID_LOOP {
        long long bi = i / ((long long)OC * P), c = (i / P) % OC, p = i % P;
        y[i] = narrow<T>(yt[c * NP + bi * P + p] + widen(bias[c]));
    }
}

// dyt (OC, N·P) from dy (N, OC, P)
template <typename T>
__global__ void conv_dyt(const T *dy, T *dyt, long long n, long long NP, int OC, long long P) {
    GRID_LOOP {
        long long c = i / NP, col = i % NP, bi = col / P, p = col % P;
        dyt[i] = dy[(bi * OC + c) * P + p];
    }
}

// dx (N, C, H, W) += the columns that read each input element
template <typename T>
__global__ void col2im(const float *dcols, T *dx, long long n, long long NP, int C, int H, int W, int K, int pad) {
    GRID_LOOP {
        long long w = i % W, h = (i / W) % H, c = (i / ((long long)W * H)) % C, bi = i / ((long long)W * H * C);
        long long P = (long long)H * W;
        float s = 0;
        for (int kh = 0; kh < K; kh++) {
            long long oh = h + pad - kh;
            if (oh < 0 || oh >= H) continue;
            for (int kw = 0; kw < K; kw++) {
                long long ow = w + pad - kw;
                if (ow < 0 || ow >= W) continue;
                s += dcols[((long long)c * K * K + kh * K + kw) * NP + bi * P + oh * W + ow];
            }
        }
        dx[i] = narrow<T>(widen(dx[i]) + s);
    }
}

static unsigned blocks(long long n) { return lc_blocks(n, 256); }

static void *dev_random(size_t count, size_t esize, int bf16) {
    void *d;
    LC_CHECK(cudaMalloc(&d, count * esize));
    float *h = (float *)malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) h[i] = (float)((i * 2654435761u % 2000) / 1000.0 - 1.0);
    if (bf16) {
        __nv_bfloat16 *hb = (__nv_bfloat16 *)malloc(count * sizeof(__nv_bfloat16));
        for (size_t i = 0; i < count; i++) hb[i] = __float2bfloat16_rn(h[i]);
        LC_CHECK(cudaMemcpy(d, hb, count * esize, cudaMemcpyHostToDevice));
        free(hb);
    } else {
        LC_CHECK(cudaMemcpy(d, h, count * esize, cudaMemcpyHostToDevice));
    }
    free(h);
    return d;
}

// mean milliseconds of `run` over REPS calls after WARMUP
template <typename F> static float time_ms(cudaStream_t s, F run) {
    for (int i = 0; i < WARMUP; i++) run();
    cudaEvent_t a, b;
    LC_CHECK(cudaEventCreate(&a));
    LC_CHECK(cudaEventCreate(&b));
    LC_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < REPS; i++) run();
    LC_CHECK(cudaEventRecord(b, s));
    LC_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LC_CHECK(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / REPS;
}

template <typename T>
static void bench(const conv_shape *sh, int bf16, cudnnHandle_t dnn, cudaStream_t s) {
    const int N = sh->N, C = sh->C, H = sh->H, W = sh->W, OC = sh->OC, K = sh->K, pad = sh->pad;
    const long long P = (long long)H * W, NP = N * P, CKK = (long long)C * K * K;
    const size_t es = sizeof(T);
    const lc_format fmt = bf16 ? LC_BF16 : LC_F32;
    T *x = (T *)dev_random((size_t)N * C * P, es, bf16), *w = (T *)dev_random((size_t)OC * CKK, es, bf16);
    T *bias = (T *)dev_random((size_t)OC, es, bf16), *dy = (T *)dev_random((size_t)N * OC * P, es, bf16);
    T *y, *dx, *dw, *cols, *dyt;
    float *yt, *dcols, *dwf;
    LC_CHECK(cudaMalloc((void **)&y, (size_t)N * OC * P * es));
    LC_CHECK(cudaMalloc((void **)&dx, (size_t)N * C * P * es));
    LC_CHECK(cudaMalloc((void **)&dw, (size_t)OC * CKK * es));
    LC_CHECK(cudaMalloc((void **)&cols, (size_t)CKK * NP * es));
    LC_CHECK(cudaMalloc((void **)&dyt, (size_t)OC * NP * es));
    LC_CHECK(cudaMalloc((void **)&yt, (size_t)OC * NP * sizeof(float)));
    LC_CHECK(cudaMalloc((void **)&dcols, (size_t)CKK * NP * sizeof(float)));
    LC_CHECK(cudaMalloc((void **)&dwf, (size_t)OC * CKK * sizeof(float)));
    LC_CHECK(cudaMemset(dx, 0, (size_t)N * C * P * es));
    static lc_gemm_site fwd_site = { {NULL}, {{0}}, 0, "conv2d forward" }, dw_site = { {NULL}, {{0}}, 0, "conv2d dW" },
                        dx_site = { {NULL}, {{0}}, 0, "conv2d dx" };

    // loom: as gen/ops_cuda.lua emits it (dW accumulates into the float32 gradient)
    float loom_fwd = time_ms(s, [&] {
        im2col<T><<<blocks(CKK * NP), 256, 0, s>>>(x, cols, CKK * NP, NP, C, H, W, K, pad);
        lc_gemm(&fwd_site, 0, 0, OC, NP, CKK, w, cols, fmt, yt, LC_F32, 0.0f, NULL, 0, s);
        conv_out<T><<<blocks((long long)N * OC * P), 256, 0, s>>>(yt, bias, y, (long long)N * OC * P, NP, OC, P);
    });
    float loom_bwd_data = time_ms(s, [&] {
        conv_dyt<T><<<blocks(OC * NP), 256, 0, s>>>(dy, dyt, OC * NP, NP, OC, P);
        lc_gemm(&dx_site, 1, 0, CKK, NP, OC, w, dyt, fmt, dcols, LC_F32, 0.0f, NULL, 0, s);
        col2im<T><<<blocks((long long)N * C * P), 256, 0, s>>>(dcols, dx, (long long)N * C * P, NP, C, H, W, K, pad);
    });
    float loom_bwd_filter = time_ms(s, [&] {
        conv_dyt<T><<<blocks(OC * NP), 256, 0, s>>>(dy, dyt, OC * NP, NP, OC, P);
        im2col<T><<<blocks(CKK * NP), 256, 0, s>>>(x, cols, CKK * NP, NP, C, H, W, K, pad);
        lc_gemm(&dw_site, 0, 1, OC, CKK, NP, dyt, cols, fmt, dwf, LC_F32, 1.0f, NULL, 0, s);
    });
    LC_CHECK(cudaGetLastError());

    // cuDNN: NCHW, float accumulation; fp32 without TF32 (CUDNN_FMA_MATH), as loom's default
    cudnnDataType_t dt = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, dt, N, C, H, W));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, dt, N, OC, H, W));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(wd, dt, CUDNN_TENSOR_NCHW, OC, C, K, K));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(cd, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(cd, bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fp;
    cudnnConvolutionBwdDataAlgoPerf_t dp;
    cudnnConvolutionBwdFilterAlgoPerf_t wp;
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(dnn, xd, wd, cd, yd, 1, &got, &fp));
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(dnn, wd, yd, cd, xd, 1, &got, &dp));
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(dnn, xd, yd, cd, wd, 1, &got, &wp));
    size_t ws_bytes = fp.memory;
    if (dp.memory > ws_bytes) ws_bytes = dp.memory;
    if (wp.memory > ws_bytes) ws_bytes = wp.memory;
    void *ws = NULL;
    if (ws_bytes) LC_CHECK(cudaMalloc(&ws, ws_bytes));
    const float one = 1.0f, zero = 0.0f;
    float dnn_fwd = time_ms(s, [&] {
        CUDNN_CHECK(cudnnConvolutionForward(dnn, &one, xd, x, wd, w, cd, fp.algo, ws, ws_bytes, &zero, yd, y));
    });
    float dnn_bwd_data = time_ms(s, [&] {
        CUDNN_CHECK(cudnnConvolutionBackwardData(dnn, &one, wd, w, yd, dy, cd, dp.algo, ws, ws_bytes, &one, xd, dx));
    });
    float dnn_bwd_filter = time_ms(s, [&] {
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn, &one, xd, x, yd, dy, cd, wp.algo, ws, ws_bytes, &one, wd, dw));
    });

    char what[96];
    snprintf(what, sizeof what, "%s %dx%dx%dx%d->%d k%d", sh->spec, N, C, H, W, OC, K);
    const char *pass[3] = { "forward", "backward data", "backward filter" };
    float lm[3] = { loom_fwd, loom_bwd_data, loom_bwd_filter }, dm[3] = { dnn_fwd, dnn_bwd_data, dnn_bwd_filter };
    for (int i = 0; i < 3; i++)
        printf("%-34s %-5s %-16s %10.4f %10.4f %7.2f\n", what, bf16 ? "bf16" : "fp32", pass[i], lm[i], dm[i], lm[i] / dm[i]);

    cudnnDestroyTensorDescriptor(xd); cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyFilterDescriptor(wd); cudnnDestroyConvolutionDescriptor(cd);
    cudaFree(ws);
    cudaFree(x); cudaFree(w); cudaFree(bias); cudaFree(dy); cudaFree(y); cudaFree(dx); cudaFree(dw);
    cudaFree(cols); cudaFree(dyt); cudaFree(yt); cudaFree(dcols); cudaFree(dwf);
    fwd_site.n = dw_site.n = dx_site.n = 0;   // the next shape plans anew (the plans leak: a benchmark)
}

int main(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("no GPU: gpu_conv measures on a CUDA device\n");
        return 0;
    }
    cudaDeviceProp prop;
    LC_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, cuDNN %zu; ms per call, mean of %d after %d warm-up calls\n", prop.name, cudnnGetVersion(), REPS, WARMUP);
    const conv_shape shapes[] = {
        { "fashion_cnn", 128, 1, 28, 28, 32, 3, 1 },  { "fashion_cnn", 128, 32, 14, 14, 64, 3, 1 },
        { "paw", 32, 3, 128, 128, 16, 3, 1 },         { "paw", 32, 16, 64, 64, 32, 3, 1 },
        { "paw", 32, 32, 32, 32, 64, 3, 1 },          { "paw", 32, 64, 16, 16, 128, 3, 1 },
    };
    cudaStream_t s;
    LC_CHECK(cudaStreamCreate(&s));
    cudnnHandle_t dnn;
    CUDNN_CHECK(cudnnCreate(&dnn));
    CUDNN_CHECK(cudnnSetStream(dnn, s));
    printf("%-34s %-5s %-16s %10s %10s %7s\n", "shape (N x C x H x W -> OC)", "type", "pass", "loom ms", "cuDNN ms", "ratio");
    for (int bf16 = 0; bf16 <= 1; bf16++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            if (bf16) bench<__nv_bfloat16>(&shapes[i], 1, dnn, s);
            else bench<float>(&shapes[i], 0, dnn, s);
        }
    cudnnDestroy(dnn);
    lc_gemm_shutdown();
    return 0;
}
