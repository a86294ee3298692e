// kernels_check.h: the gradient-check harness for templates/cpu/kernels.h.
//
// A case (gc) holds an op's float inputs x[i] (double), which of them are
// differentiable, an output buffer and random loss weights w: the scalar checked is
//   L = sum(out * w)
// so the analytic gradient is the op's backward with dout = w.  gc_check:
//   1. runs forward, then backward twice into zeroed buffers, and checks that the
//      second call added exactly as much again (backward accumulates);
//   2. runs backward with every gradient pointer NULL (must not touch anything);
//   3. compares every analytic gradient element with the central difference
//      (L(x + eps) - L(x - eps)) / (2 eps), eps = 1e-6, in double:
//         max |analytic - numeric| / max(1, |numeric|) < tol  (1e-6 by default).
//      Why 1e-6 holds for correct code: the truncation error of a central difference
//      is eps^2/6 |L'''| ~ 1e-12 for O(1) derivatives, and rounding adds about
//      ulp(L)/eps ~ 2e-16 * |L| / 1e-6 ~ 1e-9 for our |L| <~ 10: three orders below the
//      bound, while a wrong gradient (a missing term or factor) is off by O(0.1).
//      Inputs of non-smooth ops (relu, max, |x|) are kept > 1e-3 from their kinks.
//   4. runs the f32 forward on the same inputs rounded to float and compares with
//      the f64 output: max |out32 - out64| / max(1, |out64|) < tol32 (1e-5 unless
//      the case says otherwise: float has 6e-8 relative precision, and our sums
//      have at most a few hundred terms).
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

#define GC_MAXIN 6
typedef struct gc gc;
struct gc {
    int nin;
    size_t n[GC_MAXIN];
    double *x[GC_MAXIN];
    float *xf[GC_MAXIN];
    int grad[GC_MAXIN];             // check the gradient of input i
    double *g[GC_MAXIN];            // its analytic gradient (NULL when not checked)
    size_t nout;
    double *out, *w;
    float *outf;
    void (*fwd64)(gc *);
    void (*fwd32)(gc *);            // may be NULL
    void (*bwd64)(gc *);            // g[i] += J_i^T w for every non-NULL g[i]
    double tol, tol32;
    // op-specific data
    int iv[24];
    double dv[8];
    k_conv2d_dims cd;
    k_pool2d_dims pd;
    k_bcast_dims bd;
    k_matmul_dims md;
    int64_t *idx;
    int32_t *am;
    double *s64[4];                 // scratch / saved tensors, per precision
    float *s32[4];
};

// splitmix64: small, seedable, good enough for test data
static inline uint64_t gc_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double gc_unif(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * ((gc_next(s) >> 11) * (1.0 / 9007199254740992.0));
}
static inline int gc_int(uint64_t *s, int lo, int hi) { return lo + (int)(gc_next(s) % (uint64_t)(hi - lo + 1)); }

static inline double *gc_rand(uint64_t *s, size_t n, double lo, double hi) {
    double *p = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = gc_unif(s, lo, hi);
    return p;
}
// values in [-1, 1] at least 1e-3 away from 0 (for kinks at 0)
static inline double *gc_rand_nz(uint64_t *s, size_t n) {
    double *p = gc_rand(s, n, -1, 1);
    for (size_t i = 0; i < n; i++) if (fabs(p[i]) < 1e-3) p[i] = p[i] < 0 ? -0.5 : 0.5;
    return p;
}
// a shuffled arithmetic sequence scaled to about [-1, 1]: all values differ by >= 1/n
static inline double *gc_rand_distinct(uint64_t *s, size_t n) {
    double *p = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = (2.0 * i + 1) / n - 1;
    for (size_t i = n - 1; i > 0; i--) { size_t j = gc_next(s) % (i + 1); double t = p[i]; p[i] = p[j]; p[j] = t; }
    return p;
}
static inline void gc_input(gc *c, double *x, size_t n, int grad) {
    int i = c->nin++;
    c->x[i] = x; c->n[i] = n; c->grad[i] = grad;
}
static inline void gc_output(gc *c, uint64_t *s, size_t nout) {
    c->nout = nout;
    c->out = calloc(nout, sizeof(double));
    c->outf = calloc(nout, sizeof(float));
    c->w = gc_rand(s, nout, -1, 1);
}
static inline void gc_scratch(gc *c, int k, size_t n) {
    c->s64[k] = calloc(n ? n : 1, sizeof(double));
    c->s32[k] = calloc(n ? n : 1, sizeof(float));
}

static inline double gc_loss(gc *c) {
    c->fwd64(c);
    double L = 0;
    for (size_t i = 0; i < c->nout; i++) L += c->out[i] * c->w[i];
    return L;
}

static inline void gc_check(gc *c, const char *what) {
    double tol = c->tol > 0 ? c->tol : 1e-6, tol32 = c->tol32 > 0 ? c->tol32 : 1e-5;
    double *g1[GC_MAXIN] = {0};
    for (int i = 0; i < c->nin; i++) {
        c->g[i] = c->grad[i] ? calloc(c->n[i], sizeof(double)) : NULL;
        if (c->grad[i]) g1[i] = malloc(c->n[i] * sizeof(double));
    }
    c->fwd64(c);
    c->bwd64(c);
    for (int i = 0; i < c->nin; i++) if (c->g[i]) memcpy(g1[i], c->g[i], c->n[i] * sizeof(double));
    c->bwd64(c);
    for (int i = 0; i < c->nin; i++) {
        if (!c->g[i]) continue;
        for (size_t j = 0; j < c->n[i]; j++) {
            double want = 2 * g1[i][j];
            cr_assert(fabs(c->g[i][j] - want) <= 1e-12 * fmax(1, fabs(want)),
                      "%s: backward does not accumulate: input %d [%zu]: second call gives %.17g, want %.17g",
                      what, i, j, c->g[i][j], want);
        }
    }
    double *saved[GC_MAXIN];
    for (int i = 0; i < c->nin; i++) { saved[i] = c->g[i]; c->g[i] = NULL; }
    c->bwd64(c);                      // every gradient NULL: must not crash
    for (int i = 0; i < c->nin; i++) c->g[i] = saved[i];

    const double eps = 1e-6;
    for (int i = 0; i < c->nin; i++) {
        if (!c->g[i]) continue;
        double worst = 0; size_t wj = 0; double wa = 0, wn = 0;
        for (size_t j = 0; j < c->n[i]; j++) {
            double x0 = c->x[i][j];
            c->x[i][j] = x0 + eps; double lp = gc_loss(c);
            c->x[i][j] = x0 - eps; double lm = gc_loss(c);
            c->x[i][j] = x0;
            double num = (lp - lm) / (2 * eps);
            double err = fabs(g1[i][j] - num) / fmax(1, fabs(num));
            if (err > worst) { worst = err; wj = j; wa = g1[i][j]; wn = num; }
        }
        cr_assert(worst < tol, "%s: gradient of input %d [%zu]: analytic %.12g, numeric %.12g (error %.3g >= %.1g)",
                  what, i, wj, wa, wn, worst, tol);
    }
    if (c->fwd32) {
        c->fwd64(c);
        for (int i = 0; i < c->nin; i++) {
            c->xf[i] = malloc((c->n[i] ? c->n[i] : 1) * sizeof(float));
            for (size_t j = 0; j < c->n[i]; j++) c->xf[i][j] = (float)c->x[i][j];
        }
        c->fwd32(c);
        // the f64 reference on the same (rounded) inputs
        for (int i = 0; i < c->nin; i++) for (size_t j = 0; j < c->n[i]; j++) c->x[i][j] = c->xf[i][j];
        c->fwd64(c);
        double worst = 0; size_t wj = 0;
        for (size_t j = 0; j < c->nout; j++) {
            double err = fabs(c->outf[j] - c->out[j]) / fmax(1, fabs(c->out[j]));
            if (!(err <= worst)) { worst = err; wj = j; }
        }
        cr_assert(worst < tol32, "%s: f32 forward differs from f64 at [%zu]: %.9g vs %.9g (error %.3g >= %.1g)",
                  what, wj, c->outf[wj], c->out[wj], worst, tol32);
        for (int i = 0; i < c->nin; i++) { free(c->xf[i]); c->xf[i] = NULL; }
    }
    for (int i = 0; i < c->nin; i++) { free(g1[i]); free(c->g[i]); c->g[i] = NULL; }
}

// Defines name_fwd64 and name_fwd32 from one body macro BODY(S) written with
// S the suffix (f32/f64), X the inputs, OUT the output and SCR(k) the scratch.
#define GC_SCR(k) (F32 ? (void *)c->s32[k] : (void *)c->s64[k])
#define GC_FWD(name, BODY) \
    static void name##_fwd64(gc *c) { double **X = c->x; double *OUT = c->out; const int F32 = 0; \
        (void)X; (void)OUT; (void)F32; BODY(f64) } \
    static void name##_fwd32(gc *c) { float **X = c->xf; float *OUT = c->outf; const int F32 = 1; \
        (void)X; (void)OUT; (void)F32; BODY(f32) }
