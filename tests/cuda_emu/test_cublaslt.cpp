// The emulated cuBLASLt against the definitions, written out here a second time as
// plainly as possible (double sums, one element at a time): every transpose, both
// orders, leading dimensions above the minimum, strided batches, 16-bit operands and
// outputs, TF32, alpha/beta with C distinct from D or D itself, and every epilogue,
// including the aux outputs read back by the backward epilogues.  Built and run by
// tests/suite_cuda_emu.sh; prints TAP lines.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "scalar_ops.h"
}

static std::mt19937 rng(11);

struct mat {
    cudaDataType_t type;
    int64_t rows, cols, ld;
    int order;   // CUBLASLT_ORDER_COL or _ROW
    int batch;
    int64_t stride;
    void *dev = nullptr;
    int64_t at(int b, int64_t r, int64_t c) const {
        return b * stride + (order == CUBLASLT_ORDER_ROW ? r * ld + c : c * ld + r);
    }
    size_t elems() const { return (size_t)((batch - 1) * stride + (order == CUBLASLT_ORDER_ROW ? (rows - 1) * ld + cols : (cols - 1) * ld + rows)); }
};
static size_t esize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
static double get(const mat &m, int b, int64_t r, int64_t c) {
    int64_t i = m.at(b, r, c);
    if (m.type == CUDA_R_32F) return ((float *)m.dev)[i];
    uint16_t h = ((uint16_t *)m.dev)[i];
    return m.type == CUDA_R_16BF ? so_widen_bf16(h) : so_widen_f16(h);
}
static void fill(mat &m) {
    size_t n = m.elems();
    cudaMalloc(&m.dev, n * esize(m.type));
    std::uniform_real_distribution<float> u(-1, 1);
    for (size_t i = 0; i < n; i++) {
        float v = u(rng);
        if (m.type == CUDA_R_32F) ((float *)m.dev)[i] = v;
        else ((uint16_t *)m.dev)[i] = m.type == CUDA_R_16BF ? so_narrow_bf16(v) : so_narrow_f16(v);
    }
}
static cublasLtMatrixLayout_t layout(const mat &m) {
    cublasLtMatrixLayout_t l;
    cublasLtMatrixLayoutCreate(&l, m.type, (uint64_t)m.rows, (uint64_t)m.cols, m.ld);
    int32_t order = m.order, batch = m.batch;
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order);
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch);
    cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &m.stride, sizeof m.stride);
    return l;
}
static double tf32(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0xfffu + ((u >> 13) & 1u);
    u &= ~0x1fffu;
    memcpy(&f, &u, 4);
    return f;
}
static double gelu(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad(double x) {
    double t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}

static int failures, tests;

struct config {
    const char *what;
    int ta, tb;
    int64_t m, n, k;
    cudaDataType_t ab, cd;
    int order_a, order_b, order_d;
    int batch;
    int tf32;
    float alpha, beta;
    int in_place;   // C is D
    cublasLtEpilogue_t epi;
};

static void run(const config &c) {
    tests++;
    int64_t pad = 3;
    auto make = [&](cudaDataType_t t, int64_t rows, int64_t cols, int order) {
        mat x;
        x.type = t; x.rows = rows; x.cols = cols; x.order = order; x.batch = c.batch;
        x.ld = (order == CUBLASLT_ORDER_ROW ? cols : rows) + pad;
        int64_t one = order == CUBLASLT_ORDER_ROW ? rows * x.ld : cols * x.ld;
        x.stride = c.batch > 1 ? one + 5 : 0;
        return x;
    };
    mat A = make(c.ab, c.ta ? c.k : c.m, c.ta ? c.m : c.k, c.order_a);
    mat B = make(c.ab, c.tb ? c.n : c.k, c.tb ? c.k : c.n, c.order_b);
    mat C = make(c.cd, c.m, c.n, c.order_d), D = C;
    fill(A); fill(B); fill(C);
    if (c.in_place) D.dev = C.dev;
    else {
        cudaMalloc(&D.dev, D.elems() * esize(D.type));
        memset(D.dev, 0, D.elems() * esize(D.type));
    }
    const uint32_t e = c.epi;
    bool relu_aux = (e & 128) && ((e & 2) || (e & 8)), gelu_aux = (e & 128) && !relu_aux;
    int64_t aux_ld = relu_aux ? 128 : ((c.m + 7) / 8) * 8 + 8;
    int64_t aux_stride = aux_ld * c.n;
    size_t aux_elems = (size_t)(aux_stride * c.batch);
    void *aux = nullptr, *bias = nullptr;
    if (e & 128) {
        cudaMalloc(&aux, relu_aux ? (aux_elems + 7) / 8 : aux_elems * esize(c.cd));
        if (e & 8 || e & 64) {   // backward epilogues read an aux a forward wrote: make one up
            std::uniform_real_distribution<float> u(-1, 1);
            for (size_t i = 0; i < (relu_aux ? (aux_elems + 7) / 8 : aux_elems); i++) {
                if (relu_aux) ((uint8_t *)aux)[i] = (uint8_t)(rng() & 0xff);
                else if (c.cd == CUDA_R_32F) ((float *)aux)[i] = u(rng);
                else ((uint16_t *)aux)[i] = c.cd == CUDA_R_16BF ? so_narrow_bf16(u(rng)) : so_narrow_f16(u(rng));
            }
        }
    }
    int64_t bias_len = e == CUBLASLT_EPILOGUE_BGRADB ? c.n : c.m, bias_stride = bias_len + 2;
    bool has_bias = (e & CUBLASLT_EPILOGUE_BIAS) || (e & 16) || e == CUBLASLT_EPILOGUE_BGRADA || e == CUBLASLT_EPILOGUE_BGRADB;
    mat biasm;   // bias as a column, for get()
    if (has_bias) {
        biasm = make(c.cd, bias_len, 1, CUBLASLT_ORDER_COL);
        biasm.ld = bias_len; biasm.stride = bias_stride;
        fill(biasm);
        bias = biasm.dev;
    }
    std::vector<double> bias_in;
    if (has_bias)
        for (int b = 0; b < c.batch; b++)
            for (int64_t i = 0; i < bias_len; i++) bias_in.push_back(get(biasm, b, i, 0));
    std::vector<double> cin;
    for (int b = 0; b < c.batch; b++)
        for (int64_t j = 0; j < c.n; j++)
            for (int64_t i = 0; i < c.m; i++) cin.push_back(get(C, b, i, j));

    cublasLtHandle_t h;
    cublasLtCreate(&h);
    cublasLtMatmulDesc_t d;
    cublasLtMatmulDescCreate(&d, c.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t oa = c.ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = c.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
    if (has_bias) {
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride, sizeof bias_stride);
    }
    if (aux) {
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld);
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, &aux_stride, sizeof aux_stride);
    }
    cublasLtMatrixLayout_t la = layout(A), lb = layout(B), lc = layout(C), ld = layout(D);
    cublasStatus_t st = cublasLtMatmul(h, d, &c.alpha, A.dev, la, B.dev, lb, &c.beta, C.dev, lc, D.dev, ld, nullptr, nullptr, 0, nullptr);
    cudaDeviceSynchronize();
    if (st != CUBLAS_STATUS_SUCCESS) {
        printf("not ok cublaslt_%s: status %d\n", c.what, (int)st);
        failures++;
        return;
    }
    // the reference, from the definitions
    double worst = 0, scale = 1e-30;
    int aux_bad = 0;
    for (int b = 0; b < c.batch; b++) {
        std::vector<double> bgrad((size_t)bias_len, 0.0);
        for (int64_t j = 0; j < c.n; j++)
            for (int64_t i = 0; i < c.m; i++) {
                double s = 0;
                for (int64_t l = 0; l < c.k; l++) {
                    double a = c.ta ? get(A, b, l, i) : get(A, b, i, l), bb = c.tb ? get(B, b, j, l) : get(B, b, l, j);
                    if (c.tf32) { a = tf32(a); bb = tf32(bb); }
                    s += a * bb;
                }
                double v = c.alpha * s + c.beta * cin[(size_t)((b * c.n + j) * c.m + i)];
                int64_t ai = b * aux_stride + j * aux_ld + i;
                if (e == CUBLASLT_EPILOGUE_DRELU || e == CUBLASLT_EPILOGUE_DRELU_BGRAD) {
                    if (!((((uint8_t *)aux)[ai / 8] >> (ai % 8)) & 1)) v = 0;
                } else if (e == CUBLASLT_EPILOGUE_DGELU || e == CUBLASLT_EPILOGUE_DGELU_BGRAD) {
                    mat am = C; am.dev = aux; am.order = CUBLASLT_ORDER_COL; am.ld = aux_ld; am.stride = aux_stride;
                    v *= gelu_grad(get(am, b, i, j));
                } else if (!(e & 256) && !(e & 512)) {
                    if (e & CUBLASLT_EPILOGUE_BIAS) v += bias_in[(size_t)(b * bias_len + i)];
                    if (relu_aux) aux_bad += (int)((((uint8_t *)aux)[ai / 8] >> (ai % 8)) & 1) != (v > 0);
                    if (gelu_aux) {
                        mat am = C; am.dev = aux; am.order = CUBLASLT_ORDER_COL; am.ld = aux_ld; am.stride = aux_stride;
                        double got = get(am, b, i, j);
                        if (fabs(got - v) > 1e-2 * (fabs(v) + 1e-3)) aux_bad++;
                    }
                    if (e & 2) v = v > 0 ? v : 0;
                    if (e & 32) v = gelu(v);
                }
                if (e & 16) bgrad[(size_t)i] += v;
                double got = get(D, b, i, j);
                worst = std::max(worst, fabs(got - v));
                scale = std::max(scale, fabs(v));
            }
        auto check_bias = [&](int64_t idx, double want) {
            double got = get(biasm, b, idx, 0);
            worst = std::max(worst, fabs(got - want));
            scale = std::max(scale, fabs(want));
        };
        if (e & 16)
            for (int64_t i = 0; i < c.m; i++) check_bias(i, bgrad[(size_t)i]);
        if (e == CUBLASLT_EPILOGUE_BGRADA)
            for (int64_t i = 0; i < c.m; i++) {
                double s = 0;
                for (int64_t l = 0; l < c.k; l++) s += c.ta ? get(A, b, l, i) : get(A, b, i, l);
                check_bias(i, s);
            }
        if (e == CUBLASLT_EPILOGUE_BGRADB)
            for (int64_t j = 0; j < c.n; j++) {
                double s = 0;
                for (int64_t l = 0; l < c.k; l++) s += c.tb ? get(B, b, j, l) : get(B, b, l, j);
                check_bias(j, s);
            }
    }
    double tol = c.cd == CUDA_R_32F ? 1e-5 : c.cd == CUDA_R_16F ? 2e-3 : 1e-2;
    double rel = worst / scale;
    if (rel <= tol && !aux_bad) printf("ok cublaslt_%s (worst relative difference %.2g)\n", c.what, rel);
    else {
        printf("not ok cublaslt_%s: worst relative difference %.3g (tolerance %g), %d aux elements wrong\n", c.what, rel, tol, aux_bad);
        failures++;
    }
    cudaFree(A.dev); cudaFree(B.dev); cudaFree(C.dev);
    if (!c.in_place) cudaFree(D.dev);
    if (aux) cudaFree(aux);
    if (bias) cudaFree(bias);
    cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(lc); cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(d);
    cublasLtDestroy(h);
}

int main() {
    const int COL = CUBLASLT_ORDER_COL, ROW = CUBLASLT_ORDER_ROW;
    const config configs[] = {
        {"nn_f32", 0, 0, 13, 7, 9, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"tn_f32_beta", 1, 0, 13, 7, 9, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 0.5f, 2, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"nt_f32_in_place", 0, 1, 13, 7, 9, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT},
        {"tt_f32_row", 1, 1, 5, 11, 6, CUDA_R_32F, CUDA_R_32F, ROW, ROW, ROW, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"mixed_orders", 0, 1, 8, 6, 10, CUDA_R_32F, CUDA_R_32F, ROW, COL, ROW, 1, 0, 1, 1, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"tf32", 0, 0, 16, 16, 64, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 1, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"bf16_to_f32", 1, 0, 12, 9, 33, CUDA_R_16BF, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"bf16_to_bf16", 0, 1, 12, 9, 33, CUDA_R_16BF, CUDA_R_16BF, COL, COL, COL, 1, 0, 1, 1, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"f16_to_f16_row", 0, 0, 12, 9, 33, CUDA_R_16F, CUDA_R_16F, ROW, ROW, ROW, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"batched_f32", 1, 0, 7, 5, 4, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 3, 0, 0.25f, 1, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"batched_bf16_row", 0, 1, 7, 5, 4, CUDA_R_16BF, CUDA_R_16BF, ROW, ROW, ROW, 4, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DEFAULT},
        {"relu", 0, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_RELU},
        {"bias", 1, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_BIAS},
        {"relu_bias_bf16", 1, 0, 10, 6, 8, CUDA_R_16BF, CUDA_R_16BF, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_RELU_BIAS},
        {"gelu", 0, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_GELU},
        {"gelu_bias", 0, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 2, 0, 1, 0, 0, CUBLASLT_EPILOGUE_GELU_BIAS},
        {"relu_aux", 0, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_RELU_AUX},
        {"relu_aux_bias_batched", 0, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 2, 0, 1, 0, 0, CUBLASLT_EPILOGUE_RELU_AUX_BIAS},
        {"gelu_aux", 1, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_GELU_AUX},
        {"gelu_aux_bias_bf16", 1, 0, 10, 6, 8, CUDA_R_16BF, CUDA_R_16BF, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_GELU_AUX_BIAS},
        {"drelu", 0, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DRELU},
        {"drelu_bgrad", 0, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 2, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DRELU_BGRAD},
        {"dgelu", 1, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DGELU},
        {"dgelu_bgrad_f16", 1, 1, 10, 6, 8, CUDA_R_16F, CUDA_R_16F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_DGELU_BGRAD},
        {"bgrada", 0, 0, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_BGRADA},
        {"bgradb_transposed", 0, 1, 10, 6, 8, CUDA_R_32F, CUDA_R_32F, COL, COL, COL, 1, 0, 1, 0, 0, CUBLASLT_EPILOGUE_BGRADB},
    };
    for (const config &c : configs) run(c);
    // what the emulator refuses says so and returns an error
    cublasLtMatmulDesc_t d;
    tests++;
    if (cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_16F, CUDA_R_16F) == CUBLAS_STATUS_SUCCESS) {
        printf("not ok cublaslt_unsupported_compute_type: accepted\n");
        failures++;
    } else printf("ok cublaslt_unsupported_compute_type\n");
    fprintf(stderr, "%d of %d failed\n", failures, tests);
    return failures ? 1 : 0;
}
