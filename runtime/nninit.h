#ifndef LOOM_NNINIT_H
#define LOOM_NNINIT_H
// The draws of torch.nn.init's functions for a spec's train.init (gen/nninit.lua
// writes the calls into model_init): each element a pure function of (seed, stream,
// index) through Philox, so the initial weights depend on the seed alone.  Values are
// doubles; model_init stores them in the state's format.  Header-only: model.c and
// model.cu include it, and no link line changes.
#include "philox.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// U[0, 1): element i of the stream (24 random bits, as the default initialisation's).
static inline double nninit_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
    return (double)philox_uniform_at(seed, stream, i);
}

// N(0, 1) by Box-Muller from uniforms 2i and 2i+1 (the default init_normal's draw).
static inline double nninit_normal(uint64_t seed, uint64_t stream, uint64_t i) {
    double u1 = philox_uniform_at(seed, stream, 2 * i) + 1e-12, u2 = philox_uniform_at(seed, stream, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// The standard normal's CDF and its inverse: Acklam's rational approximation refined
// by one Halley step on erfc (about 1e-15 relative), since C has no erfinv.
static inline double nninit_norm_cdf(double x) { return 0.5 * erfc(-x / 1.4142135623730951); }
static inline double nninit_norm_icdf(double p) {
    static const double a[] = { -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00 };
    static const double b[] = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01, -1.328068155288572e+01 };
    static const double c[] = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00 };
    static const double d[] = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00 };
    if (p <= 0) return -INFINITY;
    if (p >= 1) return INFINITY;
    double x;
    if (p < 0.02425 || p > 1 - 0.02425) {
        double q = sqrt(-2 * log(p < 0.5 ? p : 1 - p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        if (p > 0.5) x = -x;
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = nninit_norm_cdf(x) - p, u = e * 2.5066282746310002 * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

// N(mean, std²) truncated to [lo, hi], as torch.nn.init.trunc_normal_: a uniform
// between the bounds' CDFs through the inverse CDF, clamped.
static inline double nninit_trunc_normal(uint64_t seed, uint64_t stream, uint64_t i, double mean, double std, double lo, double hi) {
    double l = nninit_norm_cdf((lo - mean) / std), u = nninit_norm_cdf((hi - mean) / std);
    double x = mean + std * nninit_norm_icdf(l + (u - l) * nninit_uniform(seed, stream, i));
    return x < lo ? lo : (x > hi ? hi : x);
}

// torch.nn.init.orthogonal_ (without the gain): a rows × cols matrix of N(0, 1)
// (element r·cols + c drawn as nninit_normal's index), transposed when it is wide, and
// the Q of its QR with R's diagonal made positive (modified Gram-Schmidt, twice for
// orthogonality in floating point), transposed back.  Returns rows × cols doubles the
// caller frees; ends the program on a failed allocation.
static inline double *nninit_orthogonal(int64_t rows, int64_t cols, uint64_t seed, uint64_t stream) {
    const int tall = rows >= cols;
    const int64_t M = tall ? rows : cols, N = tall ? cols : rows;
    double *a = (double *)malloc(sizeof(double) * (size_t)(M * N)), *out = (double *)malloc(sizeof(double) * (size_t)(M * N));
    if (!a || !out) {
        fprintf(stderr, "model_init: out of memory for orthogonal_ of %lld x %lld\n", (long long)rows, (long long)cols);
        exit(1);
    }
    // column j of the tall matrix at a + j·M
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double v = nninit_normal(seed, stream, (uint64_t)(r * cols + c));
            if (tall) a[c * M + r] = v; else a[r * M + c] = v;
        }
    for (int64_t j = 0; j < N; j++) {
        double *v = a + j * M;
        for (int pass = 0; pass < 2; pass++)
            for (int64_t k = 0; k < j; k++) {
                const double *q = a + k * M;
                double dot = 0;
                for (int64_t i = 0; i < M; i++) dot += q[i] * v[i];
                for (int64_t i = 0; i < M; i++) v[i] -= dot * q[i];
            }
        double s = 0;
        for (int64_t i = 0; i < M; i++) s += v[i] * v[i];
        s = sqrt(s);
        for (int64_t i = 0; i < M; i++) v[i] /= s;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[r * cols + c] = tall ? a[c * M + r] : a[r * M + c];
    free(a);
    return out;
}

#endif
