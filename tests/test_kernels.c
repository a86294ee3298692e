// Gradient checks for every backward in templates/cpu/kernels.h (f64, central
// differences; see tests/kernels_check.h for the method and tolerances), that
// backward accumulates, that NULL gradients are skipped, and that the f32 and f64
// forwards agree.  Several seeds and random small shapes per op.
// attention's causal row blocks at 2 rows (kernels_shape.inc; 32 in the programs): the
// small shapes below cross several blocks
#define K_SDPA_RB 2
#include "kernels_check.h"

#define SEEDS 3
static gc *gc_new(void) { return calloc(1, sizeof(gc)); }

// ---------------------------------------------------------------------------- linear
#define LINEAR_BODY(S) k_linear_forward_##S(OUT, X[0], X[1], c->iv[3] ? X[2] : NULL, c->iv[0], c->iv[1], c->iv[2]);
GC_FWD(linear, LINEAR_BODY)
static void linear_bwd(gc *c) {
    k_linear_backward_f64(c->g[0], c->g[1], c->iv[3] ? c->g[2] : NULL, c->w, c->x[0], c->x[1], c->iv[0], c->iv[1], c->iv[2], 1, 1);
}
Test(kernels, linear) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 1, 5), IC = gc_int(&s, 1, 7), OC = gc_int(&s, 1, 6), bias = seed != 2;
        c->iv[0] = N; c->iv[1] = IC; c->iv[2] = OC; c->iv[3] = bias;
        gc_input(c, gc_rand(&s, N * IC, -1, 1), N * IC, 1);
        gc_input(c, gc_rand(&s, OC * IC, -1, 1), OC * IC, 1);
        gc_input(c, gc_rand(&s, OC, -1, 1), OC, bias);
        gc_output(c, &s, N * OC);
        c->fwd64 = linear_fwd64; c->fwd32 = linear_fwd32; c->bwd64 = linear_bwd;
        gc_check(c, "linear");
    }
}

// ---------------------------------------------------------------------------- conv2d
#define CONV_BODY(S) k_conv2d_forward_##S(OUT, X[0], X[1], c->iv[0] ? X[2] : NULL, GC_SCR(0), &c->cd);
GC_FWD(conv, CONV_BODY)
static void conv_bwd(gc *c) {
    k_conv2d_backward_f64(c->g[0], c->g[1], c->iv[0] ? c->g[2] : NULL, c->w, c->x[0], c->x[1], c->s64[0], &c->cd, 1, 1);
}
static void conv_case(uint64_t seed, int pointwise) {
    uint64_t s = seed * 7919;
    gc *c = gc_new();
    k_conv2d_dims d;
    d.G = gc_int(&s, 1, 2);
    d.N = gc_int(&s, 1, 3); d.C = d.G * gc_int(&s, 1, 2); d.OC = d.G * gc_int(&s, 1, 3);
    d.H = gc_int(&s, 4, 7); d.W = gc_int(&s, 4, 7);
    if (pointwise) {
        d.KH = d.KW = d.SH = d.SW = d.DH = d.DW = 1; d.PH = d.PW = 0; d.OH = d.H; d.OW = d.W;
    } else {
        d.KH = gc_int(&s, 1, 3); d.KW = gc_int(&s, 1, 3); d.SH = gc_int(&s, 1, 2); d.SW = gc_int(&s, 1, 2);
        d.DH = gc_int(&s, 1, 2); d.DW = gc_int(&s, 1, 2); d.PH = gc_int(&s, 0, 2); d.PW = gc_int(&s, 0, 1);
        int extra_h = gc_int(&s, 0, 1), extra_w = gc_int(&s, 0, 1);      // asymmetric ("same") padding
        d.OH = (d.H + 2 * d.PH + extra_h - d.DH * (d.KH - 1) - 1) / d.SH + 1;
        d.OW = (d.W + 2 * d.PW + extra_w - d.DW * (d.KW - 1) - 1) / d.SW + 1;
    }
    c->cd = d;
    int bias = seed % 3 != 0;
    c->iv[0] = bias;
    size_t nw = (size_t)d.OC * (d.C / d.G) * d.KH * d.KW;
    gc_input(c, gc_rand(&s, (size_t)d.N * d.C * d.H * d.W, -1, 1), (size_t)d.N * d.C * d.H * d.W, 1);
    gc_input(c, gc_rand(&s, nw, -1, 1), nw, 1);
    gc_input(c, gc_rand(&s, d.OC, -1, 1), d.OC, bias);
    gc_output(c, &s, (size_t)d.N * d.OC * d.OH * d.OW);
    gc_scratch(c, 0, k_conv2d_scratch_f64(&d));
    c->fwd64 = conv_fwd64; c->fwd32 = conv_fwd32; c->bwd64 = conv_bwd;
    char what[256];
    snprintf(what, sizeof what, "conv2d N%d C%d H%d W%d OC%d K%dx%d S%dx%d P%dx%d D%dx%d G%d -> %dx%d", d.N, d.C, d.H, d.W,
             d.OC, d.KH, d.KW, d.SH, d.SW, d.PH, d.PW, d.DH, d.DW, d.G, d.OH, d.OW);
    gc_check(c, what);
}
Test(kernels, conv2d) { for (uint64_t seed = 1; seed <= 6; seed++) conv_case(seed, 0); }
Test(kernels, conv2d_pointwise) { for (uint64_t seed = 1; seed <= SEEDS; seed++) conv_case(seed, 1); }

// oneDNN's direct convolutions (kernels.h: float, both channel counts >= 16): the float
// forward and both gradients (stored, then added: acc and pacc) against the f64 im2col
// path, on batches the threads split unevenly, strided, dilated and "same"-padded.
// bf16: the bf16c kernels (bf16-mixed's) on operands that hold bf16 values, in bf16 where
// the CPU has AVX512_BF16: the products are exact in float, so the same tolerance holds.
static float bf16_of(double v) { return k_widen_bf16(k_narrow_bf16((float)v)); }
static void conv_direct_case_at(int N, int C, int H, int OC, int K, int S, int P, int D, int extra, int bf16) {
    k_conv2d_dims d = { N, C, H, H + 1, OC, K, K, S, S, P, P, D, D, 1, 0, 0 };
    d.OH = (H + 2 * P + extra - D * (K - 1) - 1) / S + 1;
    d.OW = (H + 1 + 2 * P + extra - D * (K - 1) - 1) / S + 1;
    // (the plain 3x3 takes them where oneDNN runs AVX-512; others, and every shape below it
    // (ONEDNN_MAX_CPU_ISA=AVX2), fall back to im2col, as checked)
    const dnnl_cpu_isa_t need = bf16 ? dnnl_cpu_isa_avx512_core_bf16 : dnnl_cpu_isa_avx512_core;
    const int avx512 = (dnnl_get_effective_cpu_isa() & need) == need;
    if (K == 3 && S == 1 && D == 1 && avx512)
        cr_assert(k_conv_plan_of(&d, bf16) != NULL, "no direct convolution for C%d OC%d K%d (bf16 %d)", C, OC, K, bf16);
    if (!avx512) cr_assert(k_conv_plan_of(&d, bf16) == NULL, "a direct convolution below AVX-512 (bf16 %d)", bf16);
    size_t nx = (size_t)N * C * d.H * d.W, nw = (size_t)OC * C * K * K, ny = (size_t)N * OC * d.OH * d.OW;
    uint64_t s = (uint64_t)N * 131 + C;
    double *x = gc_rand(&s, nx, -1, 1), *w = gc_rand(&s, nw, -0.2, 0.2), *b = gc_rand(&s, OC, -1, 1), *dy = gc_rand(&s, ny, -1, 1);
    if (bf16) {
        for (size_t i = 0; i < nx; i++) x[i] = bf16_of(x[i]);
        for (size_t i = 0; i < nw; i++) w[i] = bf16_of(w[i]);
        for (size_t i = 0; i < ny; i++) dy[i] = bf16_of(dy[i]);
    }
    double *y = calloc(ny, 8), *dx = calloc(nx, 8), *dw = calloc(nw, 8), *db = calloc(OC, 8);
    double *scr = calloc(k_conv2d_scratch_f64(&d), 8);
    k_conv2d_forward_f64(y, x, w, b, scr, &d);
    k_conv2d_backward_f64(dx, dw, db, dy, x, w, scr, &d, 0, 0);
    float *xf = malloc(nx * 4), *wf = malloc(nw * 4), *bf = malloc(OC * 4), *dyf = malloc(ny * 4);
    float *yf = malloc(ny * 4), *dxf = malloc(nx * 4), *dwf = malloc(nw * 4), *dbf = malloc(OC * 4);
    float *scrf = calloc(k_conv2d_scratch_f32(&d), 4);
    for (size_t i = 0; i < nx; i++) xf[i] = (float)x[i];
    for (size_t i = 0; i < nw; i++) wf[i] = (float)w[i];
    for (int i = 0; i < OC; i++) bf[i] = (float)b[i];
    for (size_t i = 0; i < ny; i++) dyf[i] = (float)dy[i];
    if (bf16) k_conv2d_forward_bf16c(yf, xf, wf, bf, scrf, &d);
    else k_conv2d_forward_f32(yf, xf, wf, bf, scrf, &d);
    for (int pass = 1; pass <= 2; pass++) {   // 1: stores (acc, pacc 0); 2: adds the same again
        if (bf16) k_conv2d_backward_bf16c(dxf, dwf, dbf, dyf, xf, wf, scrf, &d, pass - 1, pass - 1);
        else k_conv2d_backward_f32(dxf, dwf, dbf, dyf, xf, wf, scrf, &d, pass - 1, pass - 1);
        const struct { const char *name; const float *got; const double *want; size_t n; int times; } t[] = {
            { "out", yf, y, ny, 1 }, { "dinp", dxf, dx, nx, pass }, { "dw", dwf, dw, nw, pass }, { "db", dbf, db, (size_t)OC, pass } };
        for (int k = 0; k < 4; k++) {
            double scale = 0, worst = 0;
            for (size_t i = 0; i < t[k].n; i++) scale = fmax(scale, fabs(t[k].want[i]));
            for (size_t i = 0; i < t[k].n; i++) worst = fmax(worst, fabs(t[k].got[i] - t[k].times * t[k].want[i]));
            cr_assert(worst <= 1e-5 * t[k].times * fmax(scale, 1), "conv direct N%d C%d OC%d K%d S%d D%d bf16 %d pass %d: %s off by %g (scale %g)",
                      N, C, OC, K, S, D, bf16, pass, t[k].name, worst, scale);
        }
    }
    free(x); free(w); free(b); free(dy); free(y); free(dx); free(dw); free(db); free(scr);
    free(xf); free(wf); free(bf); free(dyf); free(yf); free(dxf); free(dwf); free(dbf); free(scrf);
}
static void conv_direct_case(int N, int C, int H, int OC, int K, int S, int P, int D, int extra) {
    conv_direct_case_at(N, C, H, OC, K, S, P, D, extra, 0);
    conv_direct_case_at(N, C, H, OC, K, S, P, D, extra, 1);
}
Test(kernels, conv2d_direct) {
    conv_direct_case(5, 16, 9, 24, 3, 1, 1, 1, 0);
    conv_direct_case(3, 32, 8, 16, 3, 2, 1, 1, 0);
    conv_direct_case(4, 16, 10, 16, 3, 1, 2, 2, 0);
    conv_direct_case(3, 16, 7, 32, 2, 1, 0, 1, 1);   // an even kernel, "same": one more padding at the end
    conv_direct_case(1, 16, 6, 16, 1, 1, 0, 1, 0);
}

// One image on a team (kernels.h's k_conv_direct_oc_team): the output channels split
// among the threads (48: a part of 32 and one of 16; 64: two of 32), each its own plan.
// Within the f64 tolerance, and the bits of the one-thread plan's (oneDNN's direct
// kernels sum each output in an order that does not depend on the channel count): a
// batch-1 forward does not change with the threads.  With and without a bias.
Test(kernels, conv2d_direct_one_image_split) {
    if ((dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) != dnnl_cpu_isa_avx512_core) return;   // (no direct kernels)
    const int ocs[2] = { 48, 64 };
    for (int k = 0; k < 2; k++) {
        const int OC = ocs[k];
        k_conv2d_dims d = { 1, 32, 14, 14, OC, 3, 3, 1, 1, 1, 1, 1, 1, 1, 14, 14 };
        int per;
        omp_set_num_threads(2);
        cr_assert(k_conv_direct_oc_team(&d, 0, &per) == 2 && per == 32, "OC %d: not split in two parts of 32", OC);
        size_t nx = (size_t)d.C * 14 * 14, nw = (size_t)OC * d.C * 9, ny = (size_t)OC * 14 * 14;
        uint64_t s = 11 + (uint64_t)OC;
        double *x = gc_rand(&s, nx, -1, 1), *w = gc_rand(&s, nw, -0.2, 0.2), *b = gc_rand(&s, OC, -1, 1);
        double *y = calloc(ny, 8), *scr = calloc(k_conv2d_scratch_f64(&d), 8);
        float *xf = malloc(nx * 4), *wf = malloc(nw * 4), *bf = malloc(OC * 4), *y2 = malloc(ny * 4), *y1 = malloc(ny * 4);
        float *scrf = calloc(k_conv2d_scratch_f32(&d), 4);
        for (size_t i = 0; i < nx; i++) xf[i] = (float)x[i];
        for (size_t i = 0; i < nw; i++) wf[i] = (float)w[i];
        for (int i = 0; i < OC; i++) bf[i] = (float)b[i];
        for (int bias = 0; bias < 2; bias++) {
            k_conv2d_forward_f64(y, x, w, bias ? b : NULL, scr, &d);
            omp_set_num_threads(2);
            k_conv2d_forward_f32(y2, xf, wf, bias ? bf : NULL, scrf, &d);
            omp_set_num_threads(1);
            k_conv2d_forward_f32(y1, xf, wf, bias ? bf : NULL, scrf, &d);
            double worst = 0;
            for (size_t i = 0; i < ny; i++) worst = fmax(worst, fabs(y2[i] - y[i]));
            cr_assert(worst <= 1e-5 * 8, "OC %d bias %d: the split forward off by %g", OC, bias, worst);
            cr_assert(memcmp(y1, y2, ny * 4) == 0, "OC %d bias %d: two threads' bits differ from one thread's", OC, bias);
        }
        omp_set_num_threads(2);
        free(x); free(w); free(b); free(y); free(scr); free(xf); free(wf); free(bf); free(y2); free(y1); free(scrf);
    }
}

// One image on a team where the direct kernels take none (3 input channels): its output
// rows split among the threads in chunks (kernels_nn.inc's k_conv2d_forward_rows, here
// 96x96 with 16 output channels: each thread's 48 rows as chunks of 25 and 23, padding at
// both ends): within the f64
// tolerance, and the bits of one thread's whole-image GEMM.  With and without a bias.
Test(kernels, conv2d_one_image_rows) {
    k_conv2d_dims d = { 1, 3, 96, 96, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 96, 96 };
    size_t nx = 3 * 96 * 96, nw = 16 * 27, ny = 16 * 96 * 96;
    uint64_t s = 29;
    double *x = gc_rand(&s, nx, -1, 1), *w = gc_rand(&s, nw, -0.5, 0.5), *b = gc_rand(&s, 16, -1, 1);
    double *y = calloc(ny, 8), *scr = calloc(k_conv2d_scratch_f64(&d), 8);
    float *xf = malloc(nx * 4), *wf = malloc(nw * 4), *bf = malloc(16 * 4), *y2 = malloc(ny * 4), *y1 = malloc(ny * 4);
    omp_set_num_threads(2);
    float *scrf = calloc(k_conv2d_scratch_f32(&d), 4);
    for (size_t i = 0; i < nx; i++) xf[i] = (float)x[i];
    for (size_t i = 0; i < nw; i++) wf[i] = (float)w[i];
    for (int i = 0; i < 16; i++) bf[i] = (float)b[i];
    for (int bias = 0; bias < 2; bias++) {
        omp_set_num_threads(2);
        cr_assert(k_conv2d_forward_rows_f32(y2, xf, wf, bias ? bf : NULL, scrf, &d), "one image on two threads: not split by rows");
        omp_set_num_threads(1);
        k_conv2d_forward_f64(y, x, w, bias ? b : NULL, scr, &d);
        k_conv2d_forward_f32(y1, xf, wf, bias ? bf : NULL, scrf, &d);
        double worst = 0;
        for (size_t i = 0; i < ny; i++) worst = fmax(worst, fabs(y2[i] - y[i]));
        cr_assert(worst <= 1e-5 * 8, "bias %d: the rows' forward off by %g", bias, worst);
        cr_assert(memcmp(y1, y2, ny * 4) == 0, "bias %d: two threads' rows differ from one thread's GEMM", bias);
    }
    omp_set_num_threads(2);
    free(x); free(w); free(b); free(y); free(scr); free(xf); free(wf); free(bf); free(y2); free(y1); free(scrf);
}

// the bf16c convolutions over bf16 storage (k_conv2d_*_bf16s: oneDNN's direct kernels
// reading and writing the bf16 storage where they take the shape, staging in float
// elsewhere, chunk by chunk; _bf16o: a float input) are the bf16c kernels over widened
// operands with the plan's conversions around them, bit for bit: output, dinp stored
// (acc 0) and added (acc 1) or none (a first layer's), dw and db
static void conv_native_case(int N, int C, int H, int OC) {
    k_conv2d_dims d = { N, C, H, H, OC, 3, 3, 1, 1, 1, 1, 1, 1, 1, H, H };
    const size_t nx = (size_t)N * C * H * H, nw = (size_t)OC * C * 9, ny = (size_t)N * OC * H * H;
    uint64_t s = (uint64_t)N * 977 + C;
    k_bf16 *x = malloc(nx * 2), *y = malloc(ny * 2), *dy = malloc(ny * 2), *dx = malloc(nx * 2), *want = malloc(ny * 2), *dwant = malloc(nx * 2);
    float *w = malloc(nw * 4), *b = malloc(OC * 4), *xf = malloc(nx * 4), *yf = malloc(ny * 4), *dyf = malloc(ny * 4), *dxf = malloc(nx * 4);
    float *dw = malloc(nw * 4), *db = malloc(OC * 4), *dwf = malloc(nw * 4), *dbf = malloc(OC * 4);
    float *scr = calloc(k_conv2d_scratch_f32(&d), 4);
    for (size_t i = 0; i < nx; i++) x[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1));
    for (size_t i = 0; i < ny; i++) dy[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1));
    for (size_t i = 0; i < nw; i++) w[i] = bf16_of(gc_unif(&s, -0.2, 0.2));
    for (int i = 0; i < OC; i++) b[i] = bf16_of(gc_unif(&s, -1, 1));
    k_conv2d_forward_bf16s(y, x, w, b, scr, &d);
    k_load_bf16_as_bf16(xf, x, nx);
    k_conv2d_forward_bf16c(yf, xf, w, b, scr, &d);
    k_store_bf16_from_bf16(want, yf, ny);
    cr_assert(memcmp(y, want, ny * 2) == 0, "conv bf16s N%d C%d OC%d: the output differs", N, C, OC);
    k_load_bf16_as_bf16(dyf, dy, ny);
    for (int acc = 0; acc <= 1; acc++) {
        for (size_t i = 0; i < nx; i++) dx[i] = dwant[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1));
        k_conv2d_backward_bf16s(dx, dw, db, dy, x, w, scr, &d, acc, 0);
        k_conv2d_backward_bf16c(dxf, dwf, dbf, dyf, xf, w, scr, &d, 0, 0);
        if (acc) k_accum_bf16_from_bf16(dwant, dxf, nx); else k_store_bf16_from_bf16(dwant, dxf, nx);
        cr_assert(memcmp(dx, dwant, nx * 2) == 0, "conv bf16s N%d C%d OC%d acc %d: dinp differs", N, C, OC, acc);
        cr_assert(memcmp(dw, dwf, nw * 4) == 0 && memcmp(db, dbf, OC * 4) == 0, "conv bf16s N%d C%d OC%d: dw/db differ", N, C, OC);
    }
    k_conv2d_backward_bf16s(NULL, dw, db, dy, x, w, scr, &d, 0, 0);   // a first layer's: no dinp
    k_conv2d_backward_bf16c(NULL, dwf, dbf, dyf, xf, w, scr, &d, 0, 0);
    cr_assert(memcmp(dw, dwf, nw * 4) == 0 && memcmp(db, dbf, OC * 4) == 0, "conv bf16s N%d C%d OC%d no dinp: dw/db differ", N, C, OC);
    // _bf16o: the input and its gradient float (bf16 values), the output and its gradient bf16
    memset(y, 0, ny * 2);
    k_conv2d_forward_bf16o(y, xf, w, b, scr, &d);
    cr_assert(memcmp(y, want, ny * 2) == 0, "conv bf16o N%d C%d OC%d: the output differs", N, C, OC);
    for (int acc = 0; acc <= 1; acc++) {
        float *dxo = malloc(nx * 4), *dxr = malloc(nx * 4);
        for (size_t i = 0; i < nx; i++) dxo[i] = dxr[i] = (float)gc_unif(&s, -1, 1);
        k_conv2d_backward_bf16o(dxo, dw, db, dy, xf, w, scr, &d, acc, 0);
        k_conv2d_backward_bf16c(dxr, dwf, dbf, dyf, xf, w, scr, &d, acc, 0);
        cr_assert(memcmp(dxo, dxr, nx * 4) == 0, "conv bf16o N%d C%d OC%d acc %d: dinp differs", N, C, OC, acc);
        cr_assert(memcmp(dw, dwf, nw * 4) == 0 && memcmp(db, dbf, OC * 4) == 0, "conv bf16o N%d C%d OC%d: dw/db differ", N, C, OC);
        free(dxo); free(dxr);
    }
    k_conv2d_backward_bf16o(NULL, dw, db, dy, xf, w, scr, &d, 0, 0);
    k_conv2d_backward_bf16c(NULL, dwf, dbf, dyf, xf, w, scr, &d, 0, 0);
    cr_assert(memcmp(dw, dwf, nw * 4) == 0 && memcmp(db, dbf, OC * 4) == 0, "conv bf16o N%d C%d OC%d no dinp: dw/db differ", N, C, OC);
    free(x); free(y); free(dy); free(dx); free(want); free(dwant); free(w); free(b); free(xf); free(yf); free(dyf); free(dxf);
    free(dw); free(db); free(dwf); free(dbf); free(scr);
}
Test(kernels, conv2d_native) {
    conv_native_case(5, 16, 9, 32);   // oneDNN's direct kernels where the CPU has AVX512_BF16
    conv_native_case(3, 3, 8, 16);    // im2col: staged, chunk by chunk
    conv_native_case(7, 1, 12, 8);    // a first layer's one input channel, an image a chunk
    conv_native_case(9, 3, 4, 16);    // small planes: several images a chunk (k_conv2d_chunk)
    conv_native_case(1, 3, 8, 16);    // one image: staged whole
    const k_conv2d_dims d = { 3, 16, 9, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 9, 9 };   // (the first case's slice of 3 images)
    const int bf16 = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    const k_conv_plan *q = k_conv_plan_backward(&d, 1);
    cr_assert(bf16 ? q && q->fwd16 && q->bwd16 : !q, "the direct kernels over bf16 storage: plan %p (AVX512_BF16 %d)", (void *)q, bf16);
    // (the first case's output and input gradient written in bf16 by the kernels, every move k_nchw16's)
    cr_assert(!bf16 || (q->fwd_o16 && q->bwd_d16 && q->own_x16 && q->own_y16 && q->own_dy16 && q->own_dx16),
              "the bf16-output passes and k_nchw16's moves: %d %d %d %d %d %d", !!q->fwd_o16, !!q->bwd_d16, q->own_x16,
              q->own_y16, q->own_dy16, q->own_dx16);
}

// k_nchw16 both ways equals oneDNN's reorders between bf16 nchw and nChw16c: planes of
// whole 16-value tiles, of a tile and a tail, and of a tail only
Test(kernels, nchw16_moves) {
    const int shapes[][4] = { { 2, 32, 8, 8 }, { 3, 16, 9, 9 }, { 1, 48, 5, 3 } };
    dnnl_engine_t eng;
    #pragma omp critical
    eng = k_dnnl_engine_locked();
    cr_assert(eng);
    for (int si = 0; si < 3; si++) {
        const int N = shapes[si][0], C = shapes[si][1], H = shapes[si][2], W = shapes[si][3];
        const size_t n = (size_t)N * C * H * W;
        uint16_t *a = malloc(n * 2), *want = malloc(n * 2), *got = malloc(n * 2), *back = malloc(n * 2);
        // normal numbers (an ISA-capped oneDNN's simple reorder moves bf16 through float,
        // which quiets NaNs and flushes subnormals; k_nchw16 moves every pattern as it is)
        for (size_t i = 0; i < n; i++) a[i] = (uint16_t)(((i * 2654435761u >> 9) & 0xbfff) | 0x0080);
        dnnl_dims_t dims = { N, C, H, W };
        dnnl_memory_desc_t plain, blk;
        cr_assert(dnnl_memory_desc_init_by_tag(&plain, 4, dims, dnnl_bf16, dnnl_nchw) == dnnl_success
                  && dnnl_memory_desc_init_by_tag(&blk, 4, dims, dnnl_bf16, dnnl_nChw16c) == dnnl_success);
        cr_assert(k_is_nchw16c_bf16(&blk, dims) && !k_is_nchw16c_bf16(&plain, dims));
        size_t scratch = 0;
        dnnl_primitive_t r = k_dnnl_reorder(eng, &plain, &blk, 0, &scratch);
        cr_assert(r);
        k_conv_plan q;
        memset(&q, 0, sizeof q);
        q.engine = eng;
        dnnl_dims_t sd = { (dnnl_dim_t)(scratch ? scratch : 1) };   // (its scratchpad: some ISAs' reorders take one)
        cr_assert(dnnl_memory_desc_init_by_tag(&q.scratch, 1, sd, dnnl_u8, dnnl_x) == dnnl_success);
        char *sp = malloc(scratch ? scratch : 1);
        cr_assert(k_conv_reorder(&q, r, sp, &plain, a, &blk, want));
        free(sp);
        k_nchw16(got, a, (size_t)N * C / 16, (size_t)H * W, 1);
        cr_assert(memcmp(got, want, n * 2) == 0, "k_nchw16 to nChw16c differs at %dx%dx%dx%d", N, C, H, W);
        k_nchw16(back, got, (size_t)N * C / 16, (size_t)H * W, 0);
        cr_assert(memcmp(back, a, n * 2) == 0, "k_nchw16 from nChw16c differs at %dx%dx%dx%d", N, C, H, W);
        dnnl_primitive_destroy(r);
        free(a); free(want); free(got); free(back);
    }
}

// ---------------------------------------------------------------------------- pooling
// PyTorch's output size (ops.lua window_out)
static int pool_out(int size, int k, int s, int p, int d, int ceil_mode) {
    int span = size + 2 * p - d * (k - 1) - 1;
    if (!ceil_mode) return span / s + 1;
    int out = (span + s - 1) / s + 1;
    if ((out - 1) * s >= size + p) out--;
    return out;
}
static k_pool2d_dims pool_dims(uint64_t *s, int dilation) {
    k_pool2d_dims d;
    d.N = gc_int(s, 1, 2); d.C = gc_int(s, 1, 3); d.H = gc_int(s, 4, 8); d.W = gc_int(s, 4, 8);
    d.KH = gc_int(s, 1, 3); d.KW = gc_int(s, 2, 3); d.SH = gc_int(s, 1, 3); d.SW = gc_int(s, 1, 2);
    d.PH = gc_int(s, 0, d.KH / 2); d.PW = gc_int(s, 0, d.KW / 2);
    d.DH = dilation ? gc_int(s, 1, 2) : 1; d.DW = dilation ? gc_int(s, 1, 2) : 1;
    int ceil_mode = gc_int(s, 0, 1);
    d.OH = pool_out(d.H, d.KH, d.SH, d.PH, d.DH, ceil_mode);
    d.OW = pool_out(d.W, d.KW, d.SW, d.PW, d.DW, ceil_mode);
    d.count_include_pad = gc_int(s, 0, 1);
    return d;
}
#define MAXPOOL_BODY(S) k_max_pool2d_forward_##S(OUT, c->am, X[0], &c->pd);
GC_FWD(maxpool, MAXPOOL_BODY)
static void maxpool_bwd(gc *c) { if (c->g[0]) k_max_pool2d_backward_f64(c->g[0], c->w, c->am, &c->pd, 1); }
Test(kernels, max_pool2d) {
    for (uint64_t seed = 1; seed <= 6; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        c->pd = pool_dims(&s, 1);
        size_t n = (size_t)c->pd.N * c->pd.C * c->pd.H * c->pd.W, no = (size_t)c->pd.N * c->pd.C * c->pd.OH * c->pd.OW;
        gc_input(c, gc_rand_distinct(&s, n), n, 1);
        gc_output(c, &s, no);
        c->am = calloc(no, sizeof(int32_t));
        c->fwd64 = maxpool_fwd64; c->fwd32 = maxpool_fwd32; c->bwd64 = maxpool_bwd;
        gc_check(c, "max_pool2d");
    }
}
// The branch-free 2x2/stride-2 path equals the plain scan (first maximum in scan
// order, a NaN wins) on data full of ties and with NaNs, output and argmax alike.
Test(kernels, max_pool2d_2x2_fast_path) {
    k_pool2d_dims d = {3, 2, 9, 8, 2, 2, 2, 2, 0, 0, 1, 1, 4, 4, 1};   // odd H: the last row is unused
    size_t n = (size_t)3 * 2 * 9 * 8, no = (size_t)3 * 2 * 4 * 4;
    float *x = malloc(n * sizeof(float)), *out = malloc(no * sizeof(float));
    int32_t *am = malloc(no * sizeof(int32_t));
    uint64_t s = 7;
    for (size_t i = 0; i < n; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; x[i] = (float)((s >> 60) % 3); }
    x[5] = NAN; x[100] = NAN; x[101] = NAN;
    k_max_pool2d_forward_f32(out, am, x, &d);
    for (int pl = 0; pl < 6; pl++)
        for (int oh = 0; oh < 4; oh++)
            for (int ow = 0; ow < 4; ow++) {
                const float *p = x + (size_t)pl * 72;
                float best = -INFINITY; int bi = 2 * oh * 8 + 2 * ow;
                for (int h = 2 * oh; h < 2 * oh + 2; h++)
                    for (int w = 2 * ow; w < 2 * ow + 2; w++)
                        if (p[h * 8 + w] > best || isnan(p[h * 8 + w])) { best = p[h * 8 + w]; bi = h * 8 + w; }
                size_t o = (size_t)pl * 16 + oh * 4 + ow;
                cr_assert(am[o] == bi, "argmax at plane %d (%d, %d): %d, want %d", pl, oh, ow, am[o], bi);
                cr_assert(isnan(best) ? isnan(out[o]) : out[o] == best);
            }
    free(x); free(out); free(am);
}

#define AVGPOOL_BODY(S) k_avg_pool2d_forward_##S(OUT, X[0], &c->pd);
GC_FWD(avgpool, AVGPOOL_BODY)
static void avgpool_bwd(gc *c) { if (c->g[0]) k_avg_pool2d_backward_f64(c->g[0], c->w, &c->pd); }
Test(kernels, avg_pool2d) {
    for (uint64_t seed = 1; seed <= 6; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        c->pd = pool_dims(&s, 0);
        size_t n = (size_t)c->pd.N * c->pd.C * c->pd.H * c->pd.W, no = (size_t)c->pd.N * c->pd.C * c->pd.OH * c->pd.OW;
        gc_input(c, gc_rand(&s, n, -1, 1), n, 1);
        gc_output(c, &s, no);
        c->fwd64 = avgpool_fwd64; c->fwd32 = avgpool_fwd32; c->bwd64 = avgpool_bwd;
        gc_check(c, "avg_pool2d");
    }
}

// ---------------------------------------------------------------------------- batch norm
#define BN_BODY(S) k_batch_norm_forward_train_##S(OUT, GC_SCR(0), GC_SCR(1), NULL, NULL, NULL, X[0], \
    c->iv[3] ? X[1] : NULL, c->iv[3] ? X[2] : NULL, c->iv[0], c->iv[1], c->iv[2], 1e-5, 0.1);
GC_FWD(bn, BN_BODY)
static void bn_bwd(gc *c) {
    k_batch_norm_backward_f64(c->g[0], c->g[1], c->g[2], c->w, c->x[0], c->iv[3] ? c->x[1] : NULL,
                              c->s64[0], c->s64[1], c->iv[0], c->iv[1], c->iv[2], 1, 1);
}
Test(kernels, batch_norm_train) {
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 2, 4), C = gc_int(&s, 1, 3), S = seed == 1 ? 1 : gc_int(&s, 1, 5), affine = seed != 3;
        c->iv[0] = N; c->iv[1] = C; c->iv[2] = S; c->iv[3] = affine;
        size_t n = (size_t)N * C * S;
        gc_input(c, gc_rand(&s, n, -2, 2), n, 1);
        gc_input(c, gc_rand(&s, C, 0.5, 1.5), C, affine);
        gc_input(c, gc_rand(&s, C, -1, 1), C, affine);
        gc_output(c, &s, n);
        gc_scratch(c, 0, C); gc_scratch(c, 1, C);
        c->fwd64 = bn_fwd64; c->fwd32 = bn_fwd32; c->bwd64 = bn_bwd;
        c->tol32 = 1e-4;   // normalising by a batch std of a few values amplifies rounding
        gc_check(c, "batch_norm (train)");
    }
}
// batch norm + ReLU [+ 2x2 max pool] as one kernel (gen/fuse.lua's CPU chains): the fused
// backward against central differences of the fused forward, with and without the pool
// (odd H and W: the last row and column are in no window); distinct inputs keep the
// windows' maxima apart and the ReLU's inputs off 0
#define BNR_BODY(S) k_bn_relu_forward_train_##S(OUT, c->iv[6] ? c->am : NULL, GC_SCR(0), GC_SCR(1), NULL, NULL, NULL, X[0], \
    X[1], X[2], c->iv[0], c->iv[1], c->iv[2], c->iv[3], c->iv[4], c->iv[5], c->iv[6], 0, 1e-5, 0.1);
GC_FWD(bnr, BNR_BODY)
static void bnr_bwd(gc *c) {   // (c->out, am, mean and invstd: the last forward's, at the unperturbed inputs)
    k_bn_relu_backward_f64(c->g[0], c->g[1], c->g[2], c->w, c->out, c->iv[6] ? c->am : NULL, c->x[0], c->x[1],
                           c->s64[0], c->s64[1], c->iv[0], c->iv[1], c->iv[2], c->iv[3], c->iv[4], c->iv[5], 1, 1);
}
Test(kernels, bn_relu_chain) {
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 2, 3), C = gc_int(&s, 1, 3), H = gc_int(&s, 2, 5), W = gc_int(&s, 2, 5), pool = seed % 2;
        int OH = pool ? H / 2 : H, OW = pool ? W / 2 : W;
        c->iv[0] = N; c->iv[1] = C; c->iv[2] = H; c->iv[3] = W; c->iv[4] = OH; c->iv[5] = OW; c->iv[6] = pool;
        size_t n = (size_t)N * C * H * W, no = (size_t)N * C * OH * OW;
        gc_input(c, gc_rand_distinct(&s, n), n, 1);
        gc_input(c, gc_rand(&s, C, 0.5, 1.5), C, 1);
        gc_input(c, gc_rand(&s, C, -0.3, 0.3), C, 1);
        gc_output(c, &s, no);
        gc_scratch(c, 0, C); gc_scratch(c, 1, C);
        c->am = calloc(no, sizeof(int32_t));
        c->fwd64 = bnr_fwd64; c->fwd32 = bnr_fwd32; c->bwd64 = bnr_bwd;
        c->tol32 = 1e-4;   // as batch_norm_train
        gc_check(c, pool ? "bn_relu_chain (pool)" : "bn_relu_chain");
    }
}

// autocast's chain (16-bit tensors, narrow 1: bf16, 2: float16) is the three unfused ops
// with each output rounded to 16 bits, bit for bit, argmax included: inputs whose values
// differ below 16-bit precision make windows whose maxima tie only after rounding (the
// unfused pool then takes the first; unrounded compares would take the largest)
Test(kernels, bn_relu_chain_16bit) {
    enum { N = 2, C = 3, H = 6, W = 8, S = H * W, P = (H / 2) * (W / 2) };
    static float x[N * C * S], bn[N * C * S], y[N * C * S], want[N * C * P], got[N * C * P];
    static int32_t am_want[N * C * P], am_got[N * C * P];
    const float w[C] = { 0.7f, 1.2f, -0.9f }, b[C] = { 0.1f, -0.2f, 0.3f };
    float mean[C], invstd[C];
    uint64_t s = 5;
    for (int i = 0; i < N * C * S; i++) x[i] = (float)(gc_int(&s, -3, 4) * 0.25) * (1 + (float)gc_int(&s, 0, 7) * 0x1p-13f);
    for (int narrow = 1; narrow <= 2; narrow++) {
        k_batch_norm_forward_train_f32(bn, mean, invstd, NULL, NULL, NULL, x, w, b, N, C, S, 1e-5f, 0.1f);
        for (int i = 0; i < N * C * S; i++) bn[i] = narrow == 1 ? k_widen_bf16(k_narrow_bf16(bn[i])) : k_widen_f16(k_narrow_f16(bn[i]));
        k_relu_forward_f32(y, bn, N * C * S);
        k_pool2d_dims d = { N, C, H, W, 2, 2, 2, 2, 0, 0, 1, 1, H / 2, W / 2, 1 };
        k_max_pool2d_forward_f32(want, am_want, y, &d);
        k_bn_relu_forward_train_f32(got, am_got, mean, invstd, NULL, NULL, NULL, x, w, b, N, C, H, W, H / 2, W / 2, 1, narrow, 1e-5f, 0.1f);
        int ties = 0;
        for (int i = 0; i < N * C * P; i++) {
            cr_assert(memcmp(&got[i], &want[i], sizeof(float)) == 0, "narrow %d [%d]: %a, want %a", narrow, i, got[i], want[i]);
            cr_assert(am_got[i] == am_want[i], "narrow %d [%d]: argmax %d, want %d", narrow, i, am_got[i], am_want[i]);
            const float *pl = y + (size_t)(i / P) * S;
            int hits = 0;
            for (int k = 0; k < 4; k++) hits += want[i] > 0 && pl[am_want[i] - am_want[i] % W % 2 - (am_want[i] / W % 2) * W + (k / 2) * W + k % 2] == want[i];
            ties += hits > 1;
        }
        cr_assert(ties > 0, "narrow %d: no window tied after rounding (the case tests nothing)", narrow);
    }
}

// the chain's eval forward (running statistics) is the three kernels one after another,
// with and without the pool, value for value
Test(kernels, bn_relu_chain_eval) {
    enum { N = 2, C = 3, H = 5, W = 6 };
    float x[N * C * H * W], w[C] = { 0.7f, 1.2f, -0.9f }, b[C] = { 0.1f, -0.2f, 0.3f }, rm[C] = { 0.2f, -0.1f, 0 }, rv[C] = { 0.5f, 2, 1 };
    float bn[N * C * H * W], y[N * C * H * W], want[N * C * H * W], got[N * C * H * W];
    uint64_t s = 11;
    for (int i = 0; i < N * C * H * W; i++) x[i] = (float)gc_unif(&s, -2, 2);
    k_batch_norm_forward_eval_f32(bn, x, w, b, rm, rv, N, C, H * W, 1e-5f);
    k_relu_forward_f32(y, bn, N * C * H * W);
    k_bn_relu_forward_eval_f32(got, x, w, b, rm, rv, N, C, H, W, H, W, 0, 0, 1e-5f);
    for (int i = 0; i < N * C * H * W; i++) cr_assert(got[i] == y[i], "no pool [%d]: %g, want %g", i, got[i], y[i]);
    k_pool2d_dims d = { N, C, H, W, 2, 2, 2, 2, 0, 0, 1, 1, H / 2, W / 2, 1 };
    k_max_pool2d_forward_f32(want, NULL, y, &d);
    k_bn_relu_forward_eval_f32(got, x, w, b, rm, rv, N, C, H, W, H / 2, W / 2, 1, 0, 1e-5f);
    for (int i = 0; i < N * C * (H / 2) * (W / 2); i++) cr_assert(got[i] == want[i], "pool [%d]: %g, want %g", i, got[i], want[i]);
}

// the chain over bf16 storage (k_bn_relu_*_bf16, what the precision plan's chains call
// where every activation is stored as bf16) is the float kernel over widened operands
// with the plan's conversions around it (k_load before; k_store, or k_accum where the
// kernel adds into a gradient, after), bit for bit: outputs, argmax, statistics,
// parameter gradients and the input's gradient, with and without the pool, odd sizes
// (a last row and column in no window) included
Test(kernels, bn_relu_chain_native) {
    for (uint64_t seed = 1; seed <= 10; seed++) {
        uint64_t s = seed * 7919;
        const int big = seed > 6;   // planes whose rows fill vectors (the staged and vectorised paths)
        const int N = gc_int(&s, 2, 4), C = gc_int(&s, 1, 4), H = gc_int(&s, 2, big ? 40 : 9), W = gc_int(&s, big ? 17 : 2, big ? 40 : 9);
        const int pool = big ? seed < 10 : seed % 2;
        const int OH = pool ? H / 2 : H, OW = pool ? W / 2 : W, acc = seed > 2;
        const size_t n = (size_t)N * C * H * W, no = (size_t)N * C * OH * OW;
        k_bf16 *x = malloc(n * 2), *y16 = malloc(no * 2), *dy = malloc(no * 2), *dx16 = malloc(n * 2), *dx0 = malloc(n * 2);
        float *xf = malloc(n * 4), *yf = malloc(no * 4), *dyf = malloc(no * 4), *dxf = malloc(n * 4);
        k_bf16 *want = malloc(no * 2), *dwant = malloc(n * 2);
        int32_t *am16 = malloc(no * 4), *amf = malloc(no * 4);
        float w[4], b[4], m16[4], i16[4], mf[4], iff[4], rm16[4] = { 0 }, rv16[4] = { 1, 1, 1, 1 }, rmf[4] = { 0 }, rvf[4] = { 1, 1, 1, 1 };
        float dw16[4], db16[4], dwf[4], dbf[4];
        for (int c = 0; c < C; c++) { w[c] = (float)gc_unif(&s, 0.5, 1.5) * (c % 2 ? -1 : 1); b[c] = (float)gc_unif(&s, -0.3, 0.3); }
        for (size_t i = 0; i < n; i++) { x[i] = k_narrow_bf16((float)gc_unif(&s, -2, 2)); dx0[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1)); }
        for (size_t i = 0; i < no; i++) dy[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1));
        // forward (training)
        k_bn_relu_forward_train_bf16(y16, pool ? am16 : NULL, m16, i16, rm16, rv16, NULL, x, w, b, N, C, H, W, OH, OW, pool, 1, 1e-5f, 0.1f);
        k_load_bf16_as_bf16(xf, x, n);
        k_bn_relu_forward_train_f32(yf, pool ? amf : NULL, mf, iff, rmf, rvf, NULL, xf, w, b, N, C, H, W, OH, OW, pool, 1, 1e-5f, 0.1f);
        k_store_bf16_from_bf16(want, yf, no);
        cr_assert(memcmp(y16, want, no * 2) == 0, "seed %d: the forward's output differs", (int)seed);
        cr_assert(!pool || memcmp(am16, amf, no * 4) == 0, "seed %d: argmax differs", (int)seed);
        cr_assert(memcmp(m16, mf, C * 4) == 0 && memcmp(i16, iff, C * 4) == 0, "seed %d: mean/invstd differ", (int)seed);
        cr_assert(memcmp(rm16, rmf, C * 4) == 0 && memcmp(rv16, rvf, C * 4) == 0, "seed %d: running statistics differ", (int)seed);
        // backward: acc 0 stores dinp, acc 1 adds into what dx0 holds
        memcpy(dx16, dx0, n * 2);
        k_bn_relu_backward_bf16(dx16, dw16, db16, dy, y16, pool ? am16 : NULL, x, w, m16, i16, N, C, H, W, OH, OW, acc, 0);
        k_load_bf16_as_bf16(dyf, dy, no);
        k_load_bf16_as_bf16(yf, y16, no);
        k_bn_relu_backward_f32(dxf, dwf, dbf, dyf, yf, pool ? amf : NULL, xf, w, mf, iff, N, C, H, W, OH, OW, 0, 0);
        memcpy(dwant, dx0, n * 2);
        if (acc) k_accum_bf16_from_bf16(dwant, dxf, n); else k_store_bf16_from_bf16(dwant, dxf, n);
        cr_assert(memcmp(dx16, dwant, n * 2) == 0, "seed %d (acc %d, pool %d): the input's gradient differs", (int)seed, acc, pool);
        cr_assert(memcmp(dw16, dwf, C * 4) == 0 && memcmp(db16, dbf, C * 4) == 0, "seed %d: dw/db differ", (int)seed);
        // eval
        k_bn_relu_forward_eval_bf16(y16, x, w, b, rm16, rv16, N, C, H, W, OH, OW, pool, 1, 1e-5f);
        k_bn_relu_forward_eval_f32(yf, xf, w, b, rmf, rvf, N, C, H, W, OH, OW, pool, 1, 1e-5f);
        k_store_bf16_from_bf16(want, yf, no);
        cr_assert(memcmp(y16, want, no * 2) == 0, "seed %d: the eval forward's output differs", (int)seed);
        free(x); free(y16); free(dy); free(dx16); free(dx0); free(xf); free(yf); free(dyf); free(dxf); free(want); free(dwant);
        free(am16); free(amf);
    }
}

// the 2x2 max pool over bf16 storage is the float kernel over widened operands with the
// plan's conversions around it, bit for bit: output, argmax (ties between bf16 values
// included), the routed gradient stored (acc 0) or added (acc 1); odd sizes and a NaN
Test(kernels, max_pool2d_native) {
    for (uint64_t seed = 1; seed <= 8; seed++) {
        uint64_t s = seed * 104729;
        const int big = seed > 4;   // rows of 16 windows and more (the vectorised backward's steps and their tails)
        const int N = gc_int(&s, 1, 3), C = gc_int(&s, 1, 3), H = gc_int(&s, 2, big ? 40 : 9), W = gc_int(&s, big ? 30 : 2, big ? 71 : 9);
        const int acc = seed % 2;
        const int OH = H / 2, OW = W / 2;
        const size_t n = (size_t)N * C * H * W, no = (size_t)N * C * OH * OW;
        k_bf16 *x = malloc(n * 2), *y = malloc(no * 2), *want = malloc(no * 2), *dy = malloc(no * 2);
        k_bf16 *dx = malloc(n * 2), *dwant = malloc(n * 2);
        float *xf = malloc(n * 4), *yf = malloc(no * 4), *dyf = malloc(no * 4), *dxf = malloc(n * 4);
        int32_t *am = malloc(no * 4), *amf = malloc(no * 4);
        for (size_t i = 0; i < n; i++) { x[i] = k_narrow_bf16((float)gc_int(&s, -4, 4) * 0.5f); dx[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1)); }
        if (seed == 3) x[n / 2] = k_narrow_bf16(NAN);
        for (size_t i = 0; i < no; i++) dy[i] = k_narrow_bf16((float)gc_unif(&s, -1, 1));
        if (big) { dy[0] = k_narrow_bf16(-0.0f); dy[no / 3] = k_narrow_bf16(NAN); dx[1] = k_narrow_bf16(-0.0f); }
        memcpy(dwant, dx, n * 2);
        k_pool2d_dims d = { N, C, H, W, 2, 2, 2, 2, 0, 0, 1, 1, OH, OW, 1 };
        k_max_pool2d_forward_bf16(y, am, x, &d);
        k_load_bf16_as_bf16(xf, x, n);
        k_max_pool2d_forward_f32(yf, amf, xf, &d);
        k_store_bf16_from_bf16(want, yf, no);
        cr_assert(memcmp(y, want, no * 2) == 0 && memcmp(am, amf, no * 4) == 0, "seed %d: the forward differs", (int)seed);
        k_max_pool2d_backward_bf16(dx, dy, am, &d, acc);
        k_load_bf16_as_bf16(dyf, dy, no);
        k_max_pool2d_backward_f32(dxf, dyf, amf, &d, 0);
        if (acc) k_accum_bf16_from_bf16(dwant, dxf, n); else k_store_bf16_from_bf16(dwant, dxf, n);
        cr_assert(memcmp(dx, dwant, n * 2) == 0, "seed %d (acc %d): the input's gradient differs", (int)seed, acc);
        free(x); free(y); free(want); free(dy); free(dx); free(dwant); free(xf); free(yf); free(dyf); free(dxf); free(am); free(amf);
    }
}

#define BNE_BODY(S) k_batch_norm_forward_eval_##S(OUT, X[0], X[1], X[2], X[3], X[4], c->iv[0], c->iv[1], c->iv[2], 1e-5);
GC_FWD(bne, BNE_BODY)
static void bne_bwd(gc *c) {
    k_batch_norm_backward_eval_f64(c->g[0], c->g[1], c->g[2], c->w, c->x[0], c->x[1], c->x[3], c->x[4],
                                   c->iv[0], c->iv[1], c->iv[2], 1e-5);
}
Test(kernels, batch_norm_eval) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 1, 4), C = gc_int(&s, 1, 3), S = gc_int(&s, 1, 5);
        c->iv[0] = N; c->iv[1] = C; c->iv[2] = S;
        size_t n = (size_t)N * C * S;
        gc_input(c, gc_rand(&s, n, -2, 2), n, 1);
        gc_input(c, gc_rand(&s, C, 0.5, 1.5), C, 1);
        gc_input(c, gc_rand(&s, C, -1, 1), C, 1);
        gc_input(c, gc_rand(&s, C, -1, 1), C, 0);
        gc_input(c, gc_rand(&s, C, 0.5, 2), C, 0);
        gc_output(c, &s, n);
        c->fwd64 = bne_fwd64; c->fwd32 = bne_fwd32; c->bwd64 = bne_bwd;
        gc_check(c, "batch_norm (eval)");
    }
}

// ---------------------------------------------------------------------------- layer norm
#define LN_BODY(S) k_layer_norm_forward_##S(OUT, GC_SCR(0), GC_SCR(1), X[0], c->iv[2] ? X[1] : NULL, \
    c->iv[2] ? X[2] : NULL, c->iv[0], c->iv[1], 1e-5);
GC_FWD(ln, LN_BODY)
static void ln_bwd(gc *c) {
    k_layer_norm_backward_f64(c->g[0], c->g[1], c->g[2], c->w, c->x[0], c->iv[2] ? c->x[1] : NULL,
                              c->s64[0], c->s64[1], c->iv[0], c->iv[1]);
}
Test(kernels, layer_norm) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 1, 4), D = gc_int(&s, 2, 9), affine = seed != 2;
        c->iv[0] = N; c->iv[1] = D; c->iv[2] = affine;
        gc_input(c, gc_rand(&s, N * D, -2, 2), N * D, 1);
        gc_input(c, gc_rand(&s, D, 0.5, 1.5), D, affine);
        gc_input(c, gc_rand(&s, D, -1, 1), D, affine);
        gc_output(c, &s, N * D);
        gc_scratch(c, 0, N); gc_scratch(c, 1, N);
        c->fwd64 = ln_fwd64; c->fwd32 = ln_fwd32; c->bwd64 = ln_bwd;
        c->tol32 = 1e-4;
        gc_check(c, "layer_norm");
    }
}

// ---------------------------------------------------------------------------- embedding
#define EMB_BODY(S) k_embedding_forward_##S(OUT, c->idx, X[0], c->iv[0], c->iv[1], c->iv[2]);
GC_FWD(emb, EMB_BODY)
static void emb_bwd(gc *c) { if (c->g[0]) k_embedding_backward_f64(c->g[0], c->w, c->idx, c->iv[0], c->iv[1], c->iv[2], c->iv[3]); }
Test(kernels, embedding) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int N = gc_int(&s, 1, 9), V = gc_int(&s, 2, 6), D = gc_int(&s, 1, 4);
        c->iv[0] = N; c->iv[1] = V; c->iv[2] = D; c->iv[3] = seed == 1 ? -1 : gc_int(&s, 0, V - 1);
        c->idx = malloc(N * sizeof(int64_t));
        for (int i = 0; i < N; i++) c->idx[i] = gc_int(&s, 0, V - 1);
        c->idx[0] = c->iv[3] >= 0 ? c->iv[3] : 0;   // the padding row is used
        gc_input(c, gc_rand(&s, V * D, -1, 1), V * D, 1);
        gc_output(c, &s, N * D);
        c->fwd64 = emb_fwd64; c->fwd32 = emb_fwd32; c->bwd64 = emb_bwd;
        c->tol = 1e30;   // the padding row's gradient is 0 by definition, not the derivative: checked below
        gc_check(c, "embedding");
        // exact: dw[v] = sum over n with idx[n] == v of w[n], except the padding row
        double *dw = calloc(V * D, sizeof(double));
        k_embedding_backward_f64(dw, c->w, c->idx, N, V, D, c->iv[3]);
        for (int v = 0; v < V; v++)
            for (int j = 0; j < D; j++) {
                double want = 0;
                if (v != c->iv[3]) for (int n = 0; n < N; n++) if (c->idx[n] == v) want += c->w[n * D + j];
                cr_assert(fabs(dw[v * D + j] - want) < 1e-15, "embedding: dw[%d, %d] = %g, want %g", v, j, dw[v * D + j], want);
            }
    }
}

// ---------------------------------------------------------------------------- activations
// iv[0]: which activation; backward reads out or inp as the kernel asks
enum { A_RELU, A_SIGMOID, A_TANH, A_SILU, A_GELU, A_GELU_TANH, A_DROPOUT };
#define ACT_BODY(S) switch (c->iv[0]) { \
    case A_RELU: k_relu_forward_##S(OUT, X[0], c->nout); break; \
    case A_SIGMOID: k_sigmoid_forward_##S(OUT, X[0], c->nout); break; \
    case A_TANH: k_tanh_forward_##S(OUT, X[0], c->nout); break; \
    case A_SILU: k_silu_forward_##S(OUT, X[0], c->nout); break; \
    case A_GELU: k_gelu_forward_##S(OUT, X[0], c->nout, 0); break; \
    case A_GELU_TANH: k_gelu_forward_##S(OUT, X[0], c->nout, 1); break; \
    case A_DROPOUT: k_dropout_forward_##S(OUT, X[0], c->nout, 0.3, 42, 7); break; }
GC_FWD(act, ACT_BODY)
static void act_bwd(gc *c) {
    double *dx = c->g[0], *x = c->x[0], *y = c->out, *w = c->w;
    size_t n = c->nout;
    if (!dx) return;
    c->fwd64(c);
    switch (c->iv[0]) {
    case A_RELU: k_relu_backward_f64(dx, w, y, n, 1); break;
    case A_SIGMOID: k_sigmoid_backward_f64(dx, w, y, n, 1); break;
    case A_TANH: k_tanh_backward_f64(dx, w, y, n, 1); break;
    case A_SILU: k_silu_backward_f64(dx, w, x, n, 1); break;
    case A_GELU: k_gelu_backward_f64(dx, w, x, n, 0, 1); break;
    case A_GELU_TANH: k_gelu_backward_f64(dx, w, x, n, 1, 1); break;
    case A_DROPOUT: k_dropout_backward_f64(dx, w, n, 0.3, 42, 7); break;
    }
}
static void act_case(int which, const char *name) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int n = gc_int(&s, 1, 40);
        c->iv[0] = which;
        gc_input(c, which == A_RELU ? gc_rand_nz(&s, n) : gc_rand(&s, n, -3, 3), n, 1);
        gc_output(c, &s, n);
        c->fwd64 = act_fwd64; c->fwd32 = act_fwd32; c->bwd64 = act_bwd;
        gc_check(c, name);
    }
}
Test(kernels, relu) { act_case(A_RELU, "relu"); }
Test(kernels, sigmoid) { act_case(A_SIGMOID, "sigmoid"); }
Test(kernels, tanh) { act_case(A_TANH, "tanh"); }
Test(kernels, silu) { act_case(A_SILU, "silu"); }
Test(kernels, gelu) { act_case(A_GELU, "gelu"); }
Test(kernels, gelu_tanh) { act_case(A_GELU_TANH, "gelu (tanh)"); }
Test(kernels, dropout) {
    act_case(A_DROPOUT, "dropout");
    // the mask drops about p of the elements and scales the rest by 1/(1-p)
    size_t n = 100000, dropped = 0;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 1;
    k_dropout_forward_f32(y, x, n, 0.25f, 1234, 1);
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 0) dropped++;
        else cr_assert(fabsf(y[i] - 1 / 0.75f) < 1e-6f);
    }
    cr_assert(fabs((double)dropped / n - 0.25) < 0.01, "dropout: dropped %zu of %zu with p = 0.25", dropped, n);
    k_dropout_forward_f32(y, x, n, 1.0f, 1234, 1);
    for (size_t i = 0; i < n; i++) cr_assert(y[i] == 0, "dropout p = 1 keeps element %zu", i);
}

// ---------------------------------------------------------------------------- softmax
#define SM_BODY(S) if (c->iv[3]) k_log_softmax_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[2]); \
    else k_softmax_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[2]);
GC_FWD(sm, SM_BODY)
static void sm_bwd(gc *c) {
    if (!c->g[0]) return;
    c->fwd64(c);
    if (c->iv[3]) k_log_softmax_backward_f64(c->g[0], c->w, c->out, c->iv[0], c->iv[1], c->iv[2]);
    else k_softmax_backward_f64(c->g[0], c->w, c->out, c->iv[0], c->iv[1], c->iv[2]);
}
static void sm_case(int logp) {
    for (uint64_t seed = 1; seed <= 6; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int O = gc_int(&s, 1, 3), D = gc_int(&s, 1, 6), In = seed <= 2 ? 1 : gc_int(&s, 2, 4);
        if (seed == 5) O = 2, D = 37, In = 1;    // a row longer than the lanes, with a remainder
        if (seed == 6) O = 2, D = 5, In = 70;    // columns in two blocks (K_SM_CB), the second partial
        c->iv[0] = O; c->iv[1] = D; c->iv[2] = In; c->iv[3] = logp;
        gc_input(c, gc_rand(&s, O * D * In, -3, 3), O * D * In, 1);
        gc_output(c, &s, O * D * In);
        c->fwd64 = sm_fwd64; c->fwd32 = sm_fwd32; c->bwd64 = sm_bwd;
        gc_check(c, logp ? "log_softmax" : "softmax");
    }
}
Test(kernels, softmax) { sm_case(0); }
Test(kernels, log_softmax) { sm_case(1); }

// ---------------------------------------------------------------------------- add/sub/mul/div
// iv[0]: op (0 add, 1 sub, 2 mul, 3 div), iv[1]: form (0 equal, 1 row, 2 bcast, 3 scalar, 4 rscalar)
#define BIN_CALL(S, op, form) do { switch (form) { \
    case 0: k_##op##_forward_##S(OUT, X[0], X[1], c->nout); break; \
    case 1: k_##op##_row_forward_##S(OUT, X[0], X[1], c->iv[2], c->iv[3]); break; \
    case 2: k_##op##_bcast_forward_##S(OUT, X[0], X[1], &c->bd); break; \
    case 3: k_##op##_scalar_forward_##S(OUT, X[0], c->dv[0], c->nout); break; } } while (0)
#define BIN_BODY(S) switch (c->iv[0]) { \
    case 0: BIN_CALL(S, add, c->iv[1]); break; \
    case 1: if (c->iv[1] == 4) k_rsub_scalar_forward_##S(OUT, X[0], c->dv[0], c->nout); else BIN_CALL(S, sub, c->iv[1]); break; \
    case 2: BIN_CALL(S, mul, c->iv[1]); break; \
    case 3: if (c->iv[1] == 4) k_rdiv_scalar_forward_##S(OUT, X[0], c->dv[0], c->nout); else BIN_CALL(S, div, c->iv[1]); break; }
GC_FWD(bin, BIN_BODY)
#define BIN_BCALL(op, form) do { switch (form) { \
    case 0: k_##op##_backward_f64(c->g[0], c->g[1], c->w, c->x[0], c->x[1], c->nout, 1, 1); break; \
    case 1: k_##op##_row_backward_f64(c->g[0], c->g[1], c->w, c->x[0], c->x[1], c->iv[2], c->iv[3]); break; \
    case 2: k_##op##_bcast_backward_f64(c->g[0], c->g[1], c->w, c->x[0], c->x[1], &c->bd); break; \
    case 3: if (c->g[0]) k_##op##_scalar_backward_f64(c->g[0], c->w, c->x[0], c->dv[0], c->nout); break; } } while (0)
static void bin_bwd(gc *c) {
    switch (c->iv[0]) {
    case 0: BIN_BCALL(add, c->iv[1]); break;
    case 1: if (c->iv[1] == 4) { if (c->g[0]) k_rsub_scalar_backward_f64(c->g[0], c->w, c->x[0], c->dv[0], c->nout); }
            else BIN_BCALL(sub, c->iv[1]);
            break;
    case 2: BIN_BCALL(mul, c->iv[1]); break;
    case 3: if (c->iv[1] == 4) { if (c->g[0]) k_rdiv_scalar_backward_f64(c->g[0], c->w, c->x[0], c->dv[0], c->nout); }
            else BIN_BCALL(div, c->iv[1]);
            break;
    }
}
static void bin_case(int op, const char *name) {
    static const char *forms[] = { "equal", "row", "broadcast", "scalar", "scalar-left" };
    for (int form = 0; form < 5; form++) {
        if (form == 4 && (op == 0 || op == 2)) continue;
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            uint64_t s = seed * 31 + form;
            gc *c = gc_new();
            c->iv[0] = op; c->iv[1] = form;
            size_t na = 0, nb = 0, no = 0;
            if (form == 0 || form >= 3) { na = nb = no = gc_int(&s, 1, 12); if (form >= 3) nb = 0; }
            if (form == 1) { c->iv[2] = gc_int(&s, 1, 4); c->iv[3] = gc_int(&s, 1, 5); na = no = c->iv[2] * c->iv[3]; nb = c->iv[3]; }
            if (form == 2) {
                // out (d0, d1, d2, d3); a and b each broadcast over a random subset of dims, and
                // one case (seed 3) where a is laid out transposed (a non-contiguous view)
                k_bcast_dims *d = &c->bd;
                d->ndim = 4;
                for (int i = 0; i < 4; i++) d->shape[i] = gc_int(&s, 1, 3);
                int64_t sa = 1, sb = 1;
                for (int i = 3; i >= 0; i--) {
                    int ka = gc_int(&s, 0, 2) != 0, kb = gc_int(&s, 0, 1) != 0;   // keeps the dim
                    d->sa[i] = ka ? sa : 0; sa *= ka ? d->shape[i] : 1;
                    d->sb[i] = kb ? sb : 0; sb *= kb ? d->shape[i] : 1;
                }
                if (seed == 3) {   // a full, with its last two dims swapped in memory
                    d->sa[3] = d->shape[2]; d->sa[2] = 1; d->sa[1] = d->shape[2] * d->shape[3]; d->sa[0] = d->sa[1] * d->shape[1];
                    sa = d->sa[0] * d->shape[0];
                }
                na = sa; nb = sb; no = (size_t)d->shape[0] * d->shape[1] * d->shape[2] * d->shape[3];
            }
            c->dv[0] = gc_unif(&s, 0.5, 2);
            gc_input(c, op == 3 && form == 4 ? gc_rand(&s, na, 0.5, 2) : gc_rand(&s, na, -1, 1), na, 1);
            if (nb) gc_input(c, op == 3 ? gc_rand(&s, nb, 0.5, 2) : gc_rand(&s, nb, -1, 1), nb, 1);
            gc_output(c, &s, no);
            c->fwd64 = bin_fwd64; c->fwd32 = bin_fwd32; c->bwd64 = bin_bwd;
            char what[64];
            snprintf(what, sizeof what, "%s (%s)", name, forms[form]);
            gc_check(c, what);
        }
    }
}
Test(kernels, add) { bin_case(0, "add"); }
Test(kernels, sub) { bin_case(1, "sub"); }
Test(kernels, mul) { bin_case(2, "mul"); }
Test(kernels, div) { bin_case(3, "div"); }

// ---------------------------------------------------------------------------- shape ops
// permute: iv[0] ndim, iv[1..6] in_shape, iv[7..12] perm
#define PERM_BODY(S) k_permute_forward_##S(OUT, X[0], c->iv[0], c->iv + 1, c->iv + 7);
GC_FWD(perm, PERM_BODY)
static void perm_bwd(gc *c) { if (c->g[0]) k_permute_backward_f64(c->g[0], c->w, c->iv[0], c->iv + 1, c->iv + 7, 1); }
Test(kernels, permute) {
    // (seeds 6 and 7: dims past K_PERM_TILE, the input's last dim moved: whole and partial tiles)
    const int big[2][2][4] = { { { 2, 37, 45, 0 }, { 0, 2, 1, 0 } }, { { 2, 3, 40, 35 }, { 0, 3, 1, 2 } } };
    for (uint64_t seed = 1; seed <= 7; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int nd = seed <= 5 ? gc_int(&s, 1, 5) : 3 + (int)(seed - 6);
        size_t n = 1;
        c->iv[0] = nd;
        for (int i = 0; i < nd; i++) {
            c->iv[1 + i] = seed <= 5 ? gc_int(&s, 1, 3) : big[seed - 6][0][i];
            n *= c->iv[1 + i];
            c->iv[7 + i] = seed <= 5 ? i : big[seed - 6][1][i];
        }
        for (int i = nd - 1; seed <= 5 && i > 0; i--) { int j = gc_int(&s, 0, i); int t = c->iv[7 + i]; c->iv[7 + i] = c->iv[7 + j]; c->iv[7 + j] = t; }
        gc_input(c, gc_rand(&s, n, -1, 1), n, 1);
        gc_output(c, &s, n);
        c->fwd64 = perm_fwd64; c->fwd32 = perm_fwd32; c->bwd64 = perm_bwd;
        gc_check(c, "permute");
    }
    // transpose(1, 2) of (2, 3, 4) against the definition
    double x[24], y[24];
    int shape[3] = { 2, 3, 4 };
    for (int i = 0; i < 24; i++) x[i] = i;
    k_transpose_forward_f64(y, x, 3, shape, 1, 2);
    for (int a = 0; a < 2; a++) for (int b = 0; b < 4; b++) for (int k = 0; k < 3; k++)
        cr_assert_eq(y[(a * 4 + b) * 3 + k], x[(a * 3 + k) * 4 + b]);
    double dx[24] = {0};
    k_transpose_backward_f64(dx, y, 3, shape, 1, 2, 1);
    for (int i = 0; i < 24; i++) cr_assert_eq(dx[i], x[i]);
    // acc 0 stores (the gradient's first writer): over what the buffer held, row-wise and in tiles
    for (int i = 0; i < 24; i++) dx[i] = 1e9;
    k_transpose_backward_f64(dx, y, 3, shape, 1, 2, 0);
    for (int i = 0; i < 24; i++) cr_assert_eq(dx[i], x[i]);
    enum { TA = 3, TB = 37, TC = 45 };   // (3, 37, 45) -> (3, 45, 37): past K_PERM_TILE, the last dim moved
    static float tx[TA * TB * TC], ty[TA * TB * TC], tg[TA * TB * TC];
    const int tshape[3] = { TA, TB, TC };
    for (int i = 0; i < TA * TB * TC; i++) { tx[i] = (float)i; tg[i] = -1; }
    k_transpose_forward_f32(ty, tx, 3, tshape, 1, 2);
    k_transpose_backward_f32(tg, ty, 3, tshape, 1, 2, 0);
    for (int i = 0; i < TA * TB * TC; i++) cr_assert_eq(tg[i], tx[i], "tiled store at %d", i);
    k_transpose_backward_f32(tg, ty, 3, tshape, 1, 2, 1);
    for (int i = 0; i < TA * TB * TC; i++) cr_assert_eq(tg[i], 2 * tx[i], "tiled add at %d", i);
}

// slice: iv = OUTER, D, INNER, start, step, LEN
#define SLICE_BODY(S) k_slice_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[2], c->iv[3], c->iv[4], c->iv[5]);
GC_FWD(slice, SLICE_BODY)
static void slice_bwd(gc *c) { if (c->g[0]) k_slice_backward_f64(c->g[0], c->w, c->iv[0], c->iv[1], c->iv[2], c->iv[3], c->iv[4], c->iv[5]); }
Test(kernels, slice) {
    for (uint64_t seed = 1; seed <= 5; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int O = gc_int(&s, 1, 3), D = gc_int(&s, 1, 8), In = gc_int(&s, 1, 3);
        int start = gc_int(&s, 0, D - 1), step = gc_int(&s, 1, 3), len = (D - start + step - 1) / step;
        len = gc_int(&s, 1, len);
        int v[6] = { O, D, In, start, step, len };
        memcpy(c->iv, v, sizeof v);
        gc_input(c, gc_rand(&s, O * D * In, -1, 1), O * D * In, 1);
        gc_output(c, &s, O * len * In);
        c->fwd64 = slice_fwd64; c->fwd32 = slice_fwd32; c->bwd64 = slice_bwd;
        gc_check(c, "slice");
    }
}

// cat of two inputs along the middle dim: iv = OUTER, D0, D1, INNER
#define CAT_BODY(S) k_cat_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[3], c->iv[1] + c->iv[2], 0); \
    k_cat_forward_##S(OUT, X[1], c->iv[0], c->iv[2], c->iv[3], c->iv[1] + c->iv[2], c->iv[1]);
GC_FWD(cat, CAT_BODY)
static void cat_bwd(gc *c) {
    if (c->g[0]) k_cat_backward_f64(c->g[0], c->w, c->iv[0], c->iv[1], c->iv[3], c->iv[1] + c->iv[2], 0, 1);
    if (c->g[1]) k_cat_backward_f64(c->g[1], c->w, c->iv[0], c->iv[2], c->iv[3], c->iv[1] + c->iv[2], c->iv[1], 1);
}
Test(kernels, cat) {
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int O = gc_int(&s, 1, 3), D0 = gc_int(&s, 1, 4), D1 = gc_int(&s, 1, 4), In = gc_int(&s, 1, 3);
        c->iv[0] = O; c->iv[1] = D0; c->iv[2] = D1; c->iv[3] = In;
        gc_input(c, gc_rand(&s, O * D0 * In, -1, 1), O * D0 * In, 1);
        gc_input(c, gc_rand(&s, O * D1 * In, -1, 1), O * D1 * In, 1);
        gc_output(c, &s, O * (D0 + D1) * In);
        c->fwd64 = cat_fwd64; c->fwd32 = cat_fwd32; c->bwd64 = cat_bwd;
        gc_check(c, "cat");
    }
}

// sum / mean: iv = OUTER, D, INNER, mean
#define RED_BODY(S) if (c->iv[3]) k_mean_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[2]); \
    else k_sum_forward_##S(OUT, X[0], c->iv[0], c->iv[1], c->iv[2]);
GC_FWD(red, RED_BODY)
static void red_bwd(gc *c) {
    if (!c->g[0]) return;
    if (c->iv[3]) k_mean_backward_f64(c->g[0], c->w, c->iv[0], c->iv[1], c->iv[2]);
    else k_sum_backward_f64(c->g[0], c->w, c->iv[0], c->iv[1], c->iv[2]);
}
static void red_case(int mean) {
    for (uint64_t seed = 1; seed <= 4; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int O = gc_int(&s, 1, 3), D = gc_int(&s, 1, 6), In = seed <= 2 ? 1 : gc_int(&s, 2, 4);
        c->iv[0] = O; c->iv[1] = D; c->iv[2] = In; c->iv[3] = mean;
        gc_input(c, gc_rand(&s, O * D * In, -1, 1), O * D * In, 1);
        gc_output(c, &s, O * In);
        c->fwd64 = red_fwd64; c->fwd32 = red_fwd32; c->bwd64 = red_bwd;
        gc_check(c, mean ? "mean" : "sum");
    }
}
Test(kernels, sum) { red_case(0); }
Test(kernels, mean) { red_case(1); }

// ---------------------------------------------------------------------------- matmul
#define MM_BODY(S) k_matmul_forward_##S(OUT, X[0], X[1], &c->md);
GC_FWD(mm, MM_BODY)
static void mm_bwd(gc *c) { k_matmul_backward_f64(c->g[0], c->g[1], c->w, c->x[0], c->x[1], &c->md); }
Test(kernels, matmul) {
    // layouts: 0 a (2,1,M,K) @ b (3,K,N); 1 a (2,3,M,K) @ b (K,N) (one GEMM); 2 both (2,3,...);
    //          3 a (M,K) @ b (2,3,K,N); 4 plain 2-d
    for (int layout = 0; layout < 5; layout++) {
        for (uint64_t seed = 1; seed <= 2; seed++) {
            uint64_t s = seed * 13 + layout;
            gc *c = gc_new();
            k_matmul_dims *d = &c->md;
            d->M = gc_int(&s, 1, 4); d->K = gc_int(&s, 1, 5); d->N = gc_int(&s, 1, 4);
            d->nb = layout == 4 ? 0 : 2; d->bshape[0] = 2; d->bshape[1] = 3;
            int64_t sa[5][2] = { { 1, 0 }, { 3, 1 }, { 3, 1 }, { 0, 0 }, { 0, 0 } };
            int64_t sb[5][2] = { { 0, 1 }, { 0, 0 }, { 3, 1 }, { 3, 1 }, { 0, 0 } };
            int nma[5] = { 2, 6, 6, 1, 1 }, nmb[5] = { 3, 1, 6, 6, 1 };
            for (int i = 0; i < 2; i++) { d->sa[i] = sa[layout][i]; d->sb[i] = sb[layout][i]; }
            size_t na = (size_t)nma[layout] * d->M * d->K, nb = (size_t)nmb[layout] * d->K * d->N;
            size_t no = (size_t)(layout == 4 ? 1 : 6) * d->M * d->N;
            gc_input(c, gc_rand(&s, na, -1, 1), na, 1);
            gc_input(c, gc_rand(&s, nb, -1, 1), nb, 1);
            gc_output(c, &s, no);
            c->fwd64 = mm_fwd64; c->fwd32 = mm_fwd32; c->bwd64 = mm_bwd;
            gc_check(c, "matmul");
        }
    }
}

// ---------------------------------------------------------------------------- attention
// iv = B, L, S, E, EV, causal; s[0] = att, s[1] = backward scratch
#define SDPA_BODY(S) k_sdpa_forward_##S(OUT, GC_SCR(0), X[0], X[1], X[2], c->iv[0], c->iv[1], c->iv[2], c->iv[3], \
    c->iv[4], c->iv[5], c->dv[0]);
GC_FWD(sdpa, SDPA_BODY)
static void sdpa_bwd(gc *c) {
    k_sdpa_backward_f64(c->g[0], c->g[1], c->g[2], c->s64[1], c->w, c->x[0], c->x[1], c->x[2], c->s64[0],
                        c->iv[0], c->iv[1], c->iv[2], c->iv[3], c->iv[4], c->iv[5], c->dv[0]);
}
Test(kernels, scaled_dot_product_attention) {
    for (uint64_t seed = 1; seed <= 8; seed++) {
        uint64_t s = seed;
        gc *c = gc_new();
        int B = gc_int(&s, 1, 3), L = gc_int(&s, 1, 5), S = gc_int(&s, 1, 5), E = gc_int(&s, 1, 4), EV = gc_int(&s, 1, 4);
        if (seed > 6) B = 1, L = 37, S = seed == 7 ? 37 : 40, E = 3, EV = 2;   // rows longer than the softmax's lanes
        int v[6] = { B, L, S, E, EV, (int)(seed % 2) };
        memcpy(c->iv, v, sizeof v);
        c->dv[0] = 1 / sqrt(E);
        gc_input(c, gc_rand(&s, B * L * E, -1, 1), B * L * E, 1);
        gc_input(c, gc_rand(&s, B * S * E, -1, 1), B * S * E, 1);
        gc_input(c, gc_rand(&s, B * S * EV, -1, 1), B * S * EV, 1);
        gc_output(c, &s, B * L * EV);
        gc_scratch(c, 0, B * L * S);
        gc_scratch(c, 1, k_sdpa_scratch_f64(B, L, S));
        c->fwd64 = sdpa_fwd64; c->fwd32 = sdpa_fwd32; c->bwd64 = sdpa_bwd;
        gc_check(c, seed % 2 ? "sdpa (causal)" : "sdpa");
    }
}

// ---------------------------------------------------------------------------- losses
// cross entropy: iv = N, C, S, ignore_index, reduction, weighted; dv[0] = label smoothing;
// s[0] = log-probs; X[1]: the class weights (no gradient) where weighted
#define CE_BODY(S) k_cross_entropy_forward_##S(OUT, GC_SCR(0), X[0], c->idx, c->iv[5] ? X[1] : NULL, c->iv[0], c->iv[1], \
    c->iv[2], c->iv[3], c->dv[0], c->iv[4]);
GC_FWD(ce, CE_BODY)
static void ce_bwd(gc *c) {
    if (c->g[0]) k_cross_entropy_backward_f64(c->g[0], c->w, c->s64[0], c->x[0], c->idx, c->iv[5] ? c->x[1] : NULL, c->iv[0],
                                              c->iv[1], c->iv[2], c->iv[3], c->dv[0], c->iv[4]);
}
Test(kernels, cross_entropy) {
    for (int red = 0; red < 3; red++) {
        for (uint64_t seed = 1; seed <= 8; seed++) {
            uint64_t s = seed * 5 + red;
            gc *c = gc_new();
            int weighted = seed >= 6;             // PyTorch's weight: one factor per class
            int N = gc_int(&s, 1, 4), C = gc_int(&s, 2, 5), S = seed <= 2 || seed == 6 ? 1 : gc_int(&s, 2, 3);
            if (seed == 5) N = 2, C = 19, S = 70;   // the log-softmax's column blocks (K_SM_CB), a partial one
            int ignore = seed == 3 || seed == 7 ? 1 : -100;    // an ignore_index that is also a class
            int v[6] = { N, C, S, ignore, red, weighted };
            memcpy(c->iv, v, sizeof v);
            c->dv[0] = seed % 2 ? 0.0 : 0.2;
            c->idx = malloc(N * S * sizeof(int64_t));
            for (int i = 0; i < N * S; i++) c->idx[i] = gc_int(&s, 0, 3) == 0 ? -100 : gc_int(&s, 0, C - 1);
            c->idx[0] = gc_int(&s, 0, C - 1) == 1 ? 0 : 1 % C;
            if (ignore != -100) for (int i = 0; i < N * S; i++) if (c->idx[i] == -100) c->idx[i] = ignore;
            gc_input(c, gc_rand(&s, N * C * S, -2, 2), N * C * S, 1);
            if (weighted) gc_input(c, gc_rand(&s, C, 0.1, 3), C, 0);
            gc_output(c, &s, red == 0 ? N * S : 1);
            gc_scratch(c, 0, N * C * S);
            c->fwd64 = ce_fwd64; c->fwd32 = ce_fwd32; c->bwd64 = ce_bwd;
            gc_check(c, weighted ? "cross_entropy (weighted)" : "cross_entropy");
        }
    }
}
#define CES_BODY(S) k_cross_entropy_soft_forward_##S(OUT, GC_SCR(0), X[0], X[1], c->iv[5] ? X[2] : NULL, c->iv[0], c->iv[1], \
    c->iv[2], c->dv[0], c->iv[4]);
GC_FWD(ces, CES_BODY)
static void ces_bwd(gc *c) {
    if (c->g[0]) k_cross_entropy_soft_backward_f64(c->g[0], c->w, c->s64[0], c->x[0], c->x[1], c->iv[5] ? c->x[2] : NULL,
                                                   c->iv[0], c->iv[1], c->iv[2], c->dv[0], c->iv[4]);
    if (c->g[1]) k_cross_entropy_soft_target_backward_f64(c->g[1], c->w, c->s64[0], c->iv[5] ? c->x[2] : NULL, c->iv[0], c->iv[1],
                                                          c->iv[2], c->dv[0], c->iv[4]);
}
Test(kernels, cross_entropy_soft) {
    for (int red = 0; red < 3; red++) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            uint64_t s = seed * 5 + red;
            gc *c = gc_new();
            int weighted = seed >= 4;
            int N = gc_int(&s, 1, 4), C = gc_int(&s, 2, 5), S = seed == 1 || seed == 4 ? 1 : gc_int(&s, 2, 3);
            int v[6] = { N, C, S, 0, red, weighted };
            memcpy(c->iv, v, sizeof v);
            c->dv[0] = seed == 2 || seed == 5 ? 0.1 : 0.0;
            gc_input(c, gc_rand(&s, N * C * S, -2, 2), N * C * S, 1);
            gc_input(c, gc_rand(&s, N * C * S, 0, 1), N * C * S, 1);
            if (weighted) gc_input(c, gc_rand(&s, C, 0.1, 3), C, 0);
            gc_output(c, &s, red == 0 ? N * S : 1);
            gc_scratch(c, 0, N * C * S);
            c->fwd64 = ces_fwd64; c->fwd32 = ces_fwd32; c->bwd64 = ces_bwd;
            gc_check(c, "cross_entropy (soft)");
        }
    }
}

// pointwise losses: iv[0] which, iv[1] reduction
enum { L_BCE, L_BCEL, L_MSE, L_L1 };
#define PL_BODY(S) switch (c->iv[0]) { \
    case L_BCE: k_bce_forward_##S(OUT, X[0], X[1], c->n[0], c->iv[1]); break; \
    case L_BCEL: k_bce_with_logits_forward_##S(OUT, X[0], X[1], c->n[0], c->iv[1]); break; \
    case L_MSE: k_mse_forward_##S(OUT, X[0], X[1], c->n[0], c->iv[1]); break; \
    case L_L1: k_l1_forward_##S(OUT, X[0], X[1], c->n[0], c->iv[1]); break; }
GC_FWD(pl, PL_BODY)
static void pl_bwd(gc *c) {
    double *dx = c->g[0];
    if (!dx) return;
    switch (c->iv[0]) {
    case L_BCE: k_bce_backward_f64(dx, c->w, c->x[0], c->x[1], c->n[0], c->iv[1]); break;
    case L_BCEL: k_bce_with_logits_backward_f64(dx, c->w, c->x[0], c->x[1], c->n[0], c->iv[1]); break;
    case L_MSE: k_mse_backward_f64(dx, c->w, c->x[0], c->x[1], c->n[0], c->iv[1]); break;
    case L_L1: k_l1_backward_f64(dx, c->w, c->x[0], c->x[1], c->n[0], c->iv[1]); break;
    }
}
static void pl_case(int which, const char *name) {
    for (int red = 0; red < 3; red++) {
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            uint64_t s = seed * 3 + red;
            gc *c = gc_new();
            int n = gc_int(&s, 1, 20);
            c->iv[0] = which; c->iv[1] = red;
            double *x = which == L_BCE ? gc_rand(&s, n, 0.05, 0.95) : gc_rand(&s, n, -2, 2);
            double *t = which == L_BCE || which == L_BCEL ? gc_rand(&s, n, 0, 1) : gc_rand(&s, n, -2, 2);
            if (which == L_L1) for (int i = 0; i < n; i++) if (fabs(x[i] - t[i]) < 1e-3) x[i] += 0.01;
            gc_input(c, x, n, 1);
            gc_input(c, t, n, 0);
            gc_output(c, &s, red == 0 ? n : 1);
            c->fwd64 = pl_fwd64; c->fwd32 = pl_fwd32; c->bwd64 = pl_bwd;
            gc_check(c, name);
        }
    }
}
Test(kernels, bce) { pl_case(L_BCE, "bce"); }
Test(kernels, bce_with_logits) { pl_case(L_BCEL, "bce_with_logits"); }
Test(kernels, mse) { pl_case(L_MSE, "mse"); }
Test(kernels, l1) { pl_case(L_L1, "l1"); }

// ---------------------------------------------------------------------------- initialisers
Test(kernels, init) {
    size_t n = 200000;
    double *p = malloc(n * sizeof(double));
    k_init_uniform_f64(p, n, 0.25, 7, 3);
    double s = 0, ss = 0, lo = 1, hi = -1;
    for (size_t i = 0; i < n; i++) { s += p[i]; ss += p[i] * p[i]; lo = fmin(lo, p[i]); hi = fmax(hi, p[i]); }
    cr_assert(lo >= -0.25 && hi < 0.25 && lo < -0.249 && hi > 0.249, "uniform(0.25): range [%g, %g]", lo, hi);
    cr_assert(fabs(s / n) < 0.002 && fabs(ss / n - 0.25 * 0.25 / 3) < 0.001, "uniform(0.25): mean %g, var %g", s / n, ss / n);
    k_init_normal_f64(p, n, 1.0, 2.0, 7, 4);
    s = ss = 0;
    for (size_t i = 0; i < n; i++) { s += p[i]; ss += (p[i] - 1) * (p[i] - 1); }
    cr_assert(fabs(s / n - 1) < 0.02 && fabs(sqrt(ss / n) - 2) < 0.02, "normal(1, 2): mean %g, std %g", s / n, sqrt(ss / n));
    // the same (seed, stream) gives the same numbers in both precisions
    float *q = malloc(n * sizeof(float));
    k_init_uniform_f32(q, 100, 0.25, 7, 3);
    k_init_uniform_f64(p, 100, 0.25, 7, 3);
    for (int i = 0; i < 100; i++) cr_assert(fabs(q[i] - p[i]) < 1e-7);
    k_init_const_f32(q, 10, 1.0);
    for (int i = 0; i < 10; i++) cr_assert_eq(q[i], 1.0f);
}

// ---------------------------------------------------------------------------- 16-bit storage
// kernels_cast.inc's conversions: round to nearest even, ties to even, NaN stays NaN,
// overflow to inf; every 16-bit value widens exactly (narrow(widen(h)) == h).
static uint32_t f32_bits(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
static float f32_of(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }
static uint16_t f16_bits(k_f16 h) { uint16_t u; memcpy(&u, &h, sizeof u); return u; }
static k_f16 f16_of(uint16_t u) { k_f16 h; memcpy(&h, &u, sizeof h); return h; }

Test(kernels16, bf16_round_to_nearest_even) {
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1)
    cr_assert_eq(k_narrow_bf16(1.0f + 0x1p-8f), 0x3f80);
    // 1 + 3·2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even)
    cr_assert_eq(k_narrow_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    // just above / below a tie
    cr_assert_eq(k_narrow_bf16(f32_of(0x3f808001u)), 0x3f81);
    cr_assert_eq(k_narrow_bf16(f32_of(0x3f807fffu)), 0x3f80);
    cr_assert_eq(k_narrow_bf16(-1.0f - 0x1p-8f), 0xbf80);
    cr_assert_eq(k_narrow_bf16(-0.0f), 0x8000);
    cr_assert_eq(k_narrow_bf16(INFINITY), 0x7f80);
    cr_assert_eq(k_narrow_bf16(-INFINITY), 0xff80);
    // the largest float rounds past bf16's largest finite value (0x7f7f): inf
    cr_assert_eq(k_narrow_bf16(f32_of(0x7f7fffffu)), 0x7f80);
    cr_assert_eq(k_narrow_bf16(f32_of(0x7f7f7fffu)), 0x7f7f);
    // NaN stays NaN (quiet), whatever its payload, never becomes inf
    uint16_t n1 = k_narrow_bf16(NAN), n2 = k_narrow_bf16(f32_of(0x7f800001u));
    cr_assert(isnan(k_widen_bf16(n1)) && isnan(k_widen_bf16(n2)), "NaN narrowed to %04x, %04x", n1, n2);
    // subnormals round too
    cr_assert_eq(k_narrow_bf16(f32_of(0x00018000u)), 0x0002);
    cr_assert_eq(k_narrow_bf16(f32_of(0x00008000u)), 0x0000);
    // every bf16 value widens exactly; every float rounds to one of its two neighbours
    for (uint32_t h = 0; h < 65536; h++) {
        float x = k_widen_bf16((k_bf16)h);
        if (isnan(x)) continue;
        cr_assert_eq(k_narrow_bf16(x), h, "bf16 %04x does not round-trip", h);
        cr_assert_eq(f32_bits(x), h << 16);
    }
    uint64_t s = 99;
    for (int i = 0; i < 100000; i++) {
        uint32_t u = (uint32_t)gc_next(&s);
        float x = f32_of(u);
        if (isnan(x)) continue;
        uint16_t r = k_narrow_bf16(x), lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
        uint32_t rest = u & 0xffffu;
        uint16_t want = rest > 0x8000u ? hi : rest < 0x8000u ? lo : ((lo & 1) ? hi : lo);
        cr_assert_eq(r, want, "narrow(%08x) = %04x, want %04x", u, r, want);
    }
}

Test(kernels16, f16_round_to_nearest_even) {
    cr_assert_eq(f16_bits(k_narrow_f16(1.0f + 0x1p-11f)), 0x3c00);          // tie: to even (1)
    cr_assert_eq(f16_bits(k_narrow_f16(1.0f + 3 * 0x1p-11f)), 0x3c02);      // tie: to even (1 + 2^-9)
    cr_assert_eq(f16_bits(k_narrow_f16(1.0f + 0x1p-11f + 0x1p-20f)), 0x3c01);
    cr_assert_eq(k_widen_f16(k_narrow_f16(65504.0f)), 65504.0f);            // the largest finite f16
    cr_assert_eq(k_widen_f16(k_narrow_f16(65519.0f)), 65504.0f);            // below the midpoint
    cr_assert(isinf(k_widen_f16(k_narrow_f16(65520.0f))));                  // the midpoint: to even (inf)
    cr_assert(isinf(k_widen_f16(k_narrow_f16(1e5f))) && k_widen_f16(k_narrow_f16(-1e5f)) < 0);
    cr_assert(isinf(k_widen_f16(k_narrow_f16(INFINITY))));
    cr_assert(isnan(k_widen_f16(k_narrow_f16(NAN))));
    cr_assert_eq(k_widen_f16(k_narrow_f16(0x1p-24f)), 0x1p-24f);            // the smallest subnormal
    cr_assert_eq(k_widen_f16(k_narrow_f16(0x1p-25f)), 0.0f);                // half of it: tie to even (0)
    cr_assert_eq(k_widen_f16(k_narrow_f16(0x1.8p-25f)), 0x1p-24f);
    cr_assert_eq(f16_bits(k_narrow_f16(-0.0f)), 0x8000);
    for (uint32_t h = 0; h < 65536; h++) {
        float x = k_widen_f16(f16_of((uint16_t)h));
        if (isnan(x)) continue;
        cr_assert_eq(f16_bits(k_narrow_f16(x)), h, "f16 %04x does not round-trip", h);
        cr_assert_eq(k_round_f16(x), x);
    }
}

// Random 16-bit buffers (as bits) with values in [-a, a]; their float images.
static void rand16(uint64_t *s, int bf, void *dst, float *wide, size_t n, double a) {
    for (size_t i = 0; i < n; i++) {
        float x = (float)gc_unif(s, -a, a);
        if (bf) { ((k_bf16 *)dst)[i] = k_narrow_bf16(x); wide[i] = k_widen_bf16(((k_bf16 *)dst)[i]); }
        else { ((k_f16 *)dst)[i] = k_narrow_f16(x); wide[i] = k_widen_f16(((k_f16 *)dst)[i]); }
    }
}
// 16-bit buffer == the float buffer rounded once, bit for bit
static void expect_rounded(const char *what, int bf, const void *got, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint16_t g = bf ? ((const k_bf16 *)got)[i] : f16_bits(((const k_f16 *)got)[i]);
        uint16_t w = bf ? k_narrow_bf16(f[i]) : f16_bits(k_narrow_f16(f[i]));
        cr_assert_eq(g, w, "%s (%s) [%zu]: %04x, the float step rounded is %04x (%.9g)", what, bf ? "bf16" : "f16", i, g, w, f[i]);
    }
}
static void widen16(int bf, const void *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf ? k_widen_bf16(((const k_bf16 *)src)[i]) : k_widen_f16(((const k_f16 *)src)[i]);
}

// A 16-bit optimizer step is the float step on the widened values with every stored
// value (parameter, momentum, moments) rounded once: 5 steps of each optimizer
// variant, the 16-bit state carried from step to step, on the serial and the
// parallel (n > K_PAR_N) path.
enum { O_SGD, O_SGD_MOM, O_SGD_NEST, O_ADAM, O_ADAM_AMS, O_ADAMW, O_ADAMW_AMS, O_NKINDS };
static void opt16_case(int bf, int kind, size_t n) {
    uint64_t s = 1234 + (uint64_t)kind * 77 + n;
    size_t bytes = n * 2;
    void *p = malloc(bytes), *g = malloc(bytes), *m = malloc(bytes), *v = malloc(bytes), *vm = malloc(bytes);
    float *pf = malloc(n * 4), *gf = malloc(n * 4), *mf = malloc(n * 4), *vf = malloc(n * 4), *vmf = malloc(n * 4);
    rand16(&s, bf, p, pf, n, 1.0);
    memset(m, 0, bytes); memset(v, 0, bytes); memset(vm, 0, bytes);
    for (int step = 0; step < 5; step++) {
        rand16(&s, bf, g, gf, n, step == 3 ? 1e-3 : 0.5);
        widen16(bf, p, pf, n); widen16(bf, m, mf, n); widen16(bf, v, vf, n); widen16(bf, vm, vmf, n);
        int first = step == 0;
        switch (kind) {
#define OPT16(fn, ...) do { if (bf) fn##_bf16(__VA_ARGS__); else fn##_f16(__VA_ARGS__); } while (0)
        case O_SGD:
            k_sgd_step_f32(pf, gf, NULL, n, 0.1, 0, 0, 0.01, 0, 0, first);
            OPT16(k_sgd_step, p, g, NULL, n, 0.1, 0, 0, 0.01, 0, 0, first);
            break;
        case O_SGD_MOM:
            k_sgd_step_f32(pf, gf, mf, n, 0.05, 0.9, 0.1, 0, 0, 0, first);
            OPT16(k_sgd_step, p, g, m, n, 0.05, 0.9, 0.1, 0, 0, 0, first);
            break;
        case O_SGD_NEST:
            k_sgd_step_f32(pf, gf, mf, n, 0.05, 0.9, 0, 1e-3, 1, 1, first);
            OPT16(k_sgd_step, p, g, m, n, 0.05, 0.9, 0, 1e-3, 1, 1, first);
            break;
        case O_ADAM: case O_ADAM_AMS:
            k_adam_step_f32(pf, gf, mf, vf, kind == O_ADAM_AMS ? vmf : NULL, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, kind == O_ADAM_AMS, 0, step + 1);
            OPT16(k_adam_step, p, g, m, v, kind == O_ADAM_AMS ? vm : NULL, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, kind == O_ADAM_AMS, 0, step + 1);
            break;
        case O_ADAMW: case O_ADAMW_AMS:
            k_adamw_step_f32(pf, gf, mf, vf, kind == O_ADAMW_AMS ? vmf : NULL, n, 1e-2, 0.8, 0.99, 1e-6, 0.1, kind == O_ADAMW_AMS, 1, step + 1);
            OPT16(k_adamw_step, p, g, m, v, kind == O_ADAMW_AMS ? vm : NULL, n, 1e-2, 0.8, 0.99, 1e-6, 0.1, kind == O_ADAMW_AMS, 1, step + 1);
            break;
        }
        char what[64];
        snprintf(what, sizeof what, "optimizer %d n=%zu step %d param", kind, n, step);
        expect_rounded(what, bf, p, pf, n);
        if (kind != O_SGD) { what[strlen(what) - 5] = 0; strcat(what, "m"); expect_rounded(what, bf, m, mf, n); }
        if (kind >= O_ADAM) expect_rounded("exp_avg_sq", bf, v, vf, n);
        if (kind == O_ADAM_AMS || kind == O_ADAMW_AMS) expect_rounded("max_exp_avg_sq", bf, vm, vmf, n);
    }
    free(p); free(g); free(m); free(v); free(vm); free(pf); free(gf); free(mf); free(vf); free(vmf);
}
Test(kernels16, optimizers_bf16) { for (int k = 0; k < O_NKINDS; k++) { opt16_case(1, k, 37); opt16_case(1, k, 40000); } }
Test(kernels16, optimizers_f16) { for (int k = 0; k < O_NKINDS; k++) { opt16_case(0, k, 37); opt16_case(0, k, 40000); } }

// The f32 Adam/AdamW/SGD kernels compute what they did before 16-bit storage was
// added: the loops as they were, bit for bit.
static void adam_before(float *p, const float *g, float *m, float *v, float *vmax, size_t n, double lr, double beta1,
                        double beta2, double eps, double weight_decay, int amsgrad, int maximize, int64_t step, int decoupled) {
    const double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    const float b1 = (float)beta1, b2 = (float)beta2, a1 = (float)(1 - beta1), a2 = (float)(1 - beta2);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps_ = (float)eps, wd = (float)weight_decay;
    const float decay = (float)(1 - lr * weight_decay);
    for (size_t i = 0; i < n; i++) {
        float d = maximize ? -g[i] : g[i];
        if (decoupled) p[i] *= decay;
        else if (weight_decay != 0) d += wd * p[i];
        m[i] = m[i] * b1 + a1 * d;
        v[i] = v[i] * b2 + a2 * d * d;
        float vv = v[i];
        if (amsgrad) { if (vmax[i] < vv) vmax[i] = vv; vv = vmax[i]; }
        p[i] -= step_size * m[i] / (sqrtf(vv) / bc2_sqrt + eps_);
    }
}
static void sgd_before(float *p, const float *g, float *buf, size_t n, double lr, double momentum, double dampening,
                       double weight_decay, int nesterov, int maximize, int first_step) {
    const float lr_ = (float)lr, mom = (float)momentum, damp = (float)(1 - dampening), wd = (float)weight_decay;
    for (size_t i = 0; i < n; i++) {
        float d = maximize ? -g[i] : g[i];
        if (weight_decay != 0) d += wd * p[i];
        if (momentum != 0) {
            float b = first_step ? d : mom * buf[i] + damp * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] -= lr_ * d;
    }
}
Test(kernels16, f32_kernels_unchanged) {
    enum { N = 513 };
    uint64_t s = 5;
    float p[2][N], g[N], m[2][N], v[2][N], vm[2][N];
    for (int c = 0; c < 6; c++) {
        for (int i = 0; i < N; i++) { p[0][i] = p[1][i] = (float)gc_unif(&s, -1, 1); m[0][i] = m[1][i] = v[0][i] = v[1][i] = vm[0][i] = vm[1][i] = 0; }
        for (int step = 1; step <= 4; step++) {
            for (int i = 0; i < N; i++) g[i] = (float)gc_unif(&s, -1, 1);
            if (c < 4) {
                int ams = c & 1, dec = c >> 1;
                adam_before(p[0], g, m[0], v[0], vm[0], N, 1e-3, 0.9, 0.999, 1e-8, 0.05, ams, c == 3, step, dec);
                if (dec) k_adamw_step_f32(p[1], g, m[1], v[1], vm[1], N, 1e-3, 0.9, 0.999, 1e-8, 0.05, ams, c == 3, step);
                else k_adam_step_f32(p[1], g, m[1], v[1], vm[1], N, 1e-3, 0.9, 0.999, 1e-8, 0.05, ams, c == 3, step);
            } else {
                sgd_before(p[0], g, m[0], N, 0.1, 0.9, 0.1, 0.01, c == 5, c == 5, step == 1);
                k_sgd_step_f32(p[1], g, m[1], N, 0.1, 0.9, 0.1, 0.01, c == 5, c == 5, step == 1);
            }
            cr_assert(!memcmp(p[0], p[1], sizeof p[0]) && !memcmp(m[0], m[1], sizeof m[0]) && !memcmp(v[0], v[1], sizeof v[0]) &&
                      !memcmp(vm[0], vm[1], sizeof vm[0]), "case %d step %d: the f32 kernel's result changed", c, step);
        }
    }
}

// Clipping over 16-bit gradients: the norm of the widened values; scaling and
// clamping round once.
Test(kernels16, clipping) {
    for (int bf = 0; bf < 2; bf++) {
        enum { N = 300 };
        uint64_t s = 17;
        uint16_t g[N];
        float gf[N];
        rand16(&s, bf, g, gf, N, 3.0);
        double n16 = bf ? k_grad_norm_bf16((k_bf16 *)g, N) : k_grad_norm_f16((k_f16 *)g, N);
        double n32 = k_grad_norm_f32(gf, N);
        cr_assert_eq(n16, n32, "grad norm %.17g vs %.17g", n16, n32);
        if (bf) k_scale_bf16((k_bf16 *)g, N, 0.3); else k_scale_f16((k_f16 *)g, N, 0.3);
        k_scale_f32(gf, N, 0.3);
        expect_rounded("k_scale", bf, g, gf, N);
        widen16(bf, g, gf, N);
        if (bf) k_clamp_bf16((k_bf16 *)g, N, -0.5, 0.25); else k_clamp_f16((k_f16 *)g, N, -0.5, 0.25);
        k_clamp_f32(gf, N, -0.5, 0.25);
        expect_rounded("k_clamp", bf, g, gf, N);
    }
}

// GradScaler's unscale_: g *= 1/scale (exact for a power of two), found_inf when any
// gradient was inf or NaN; on the serial and the parallel path, in every storage.
Test(kernels16, unscale_check) {
    for (int big = 0; big < 2; big++) {
        size_t n = big ? 100000 : 100;
        float *g = malloc(n * sizeof *g);
        double *d = malloc(n * sizeof *d);
        k_bf16 *b = malloc(n * sizeof *b);
        k_f16 *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++) { g[i] = (float)(i % 97) * 65536.0f - 1e6f; d[i] = g[i]; b[i] = k_narrow_bf16(g[i] / 65536); h[i] = k_narrow_f16(g[i] / 65536); }
        cr_assert_eq(k_unscale_check_f32(g, n, 1.0 / 65536), 0);
        cr_assert_eq(k_unscale_check_f64(d, n, 1.0 / 65536), 0);
        for (size_t i = 0; i < n; i++) cr_assert(g[i] == (float)(i % 97) - 1e6f / 65536 && d[i] == g[i], "[%zu] %g", i, g[i]);
        cr_assert_eq(k_unscale_check_bf16(b, n, 0.5), 0);
        cr_assert_eq(k_unscale_check_f16(h, n, 0.5), 0);
        for (size_t i = 0; i < n; i++) cr_assert(k_widen_bf16(b[i]) == k_round_bf16(g[i]) / 2 && k_widen_f16(h[i]) == k_round_f16(g[i]) / 2);
        // one inf, or one NaN, anywhere
        size_t at[] = { 0, n / 2, n - 1 };
        for (int k = 0; k < 3; k++) {
            float saved = g[at[k]];
            g[at[k]] = k == 1 ? NAN : -INFINITY;
            cr_assert_eq(k_unscale_check_f32(g, n, 0.5), 1, "inf/nan at %zu not found", at[k]);
            g[at[k]] = saved;
            b[at[k]] = k_narrow_bf16(k == 1 ? NAN : INFINITY);
            cr_assert_eq(k_unscale_check_bf16(b, n, 0.5), 1);
            b[at[k]] = 0;
            h[at[k]] = k_narrow_f16(1e6f);   // overflows f16: inf
            cr_assert_eq(k_unscale_check_f16(h, n, 0.5), 1);
            h[at[k]] = 0;
        }
        // the largest finite float is finite (unscaled, not checked after scaling)
        g[1] = 3.4e38f;
        cr_assert_eq(k_unscale_check_f32(g, n, 2.0), 0);
        cr_assert(isinf(g[1]));
        free(g); free(d); free(b); free(h);
    }
}

Test(kernels16, init) {
    enum { N = 1000 };
    k_bf16 b[N]; k_f16 h[N]; float f[N];
    k_init_uniform_f32(f, N, 0.3, 3, 9);
    k_init_uniform_bf16(b, N, 0.3, 3, 9);
    k_init_uniform_f16(h, N, 0.3, 3, 9);
    expect_rounded("init_uniform", 1, b, f, N);
    expect_rounded("init_uniform", 0, h, f, N);
    k_init_const_bf16(b, N, 1.0);
    for (int i = 0; i < N; i++) cr_assert_eq(b[i], 0x3f80);
}

// ---------------------------------------------------------------------------- bf16 GEMMs
// k_sgemm_bf16 against a double-precision product of the bf16-rounded operands, every
// transpose and beta, shapes from tiny to those of a real layer; the products are exact
// in float, so only the float sums' order differs (relative 1e-5 of sum |a||b|).  The
// same run under ONEDNN_MAX_CPU_ISA=AVX2 takes the k_sgemm fallback.
static void bf16_gemm_case(int M, int N, int K, int ta, int tb, float alpha, float beta, uint64_t seed) {
    uint64_t s = seed;
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    int arows = ta ? K : M, brows = tb ? N : K;
    double *ra = gc_rand(&s, arows * lda, -2, 2), *rb = gc_rand(&s, brows * ldb, -2, 2), *rc = gc_rand(&s, M * ldc, -1, 1);
    float *A = malloc(sizeof(float) * arows * lda), *B = malloc(sizeof(float) * brows * ldb), *C = malloc(sizeof(float) * M * ldc);
    for (int i = 0; i < arows * lda; i++) A[i] = (float)ra[i];
    for (int i = 0; i < brows * ldb; i++) B[i] = (float)rb[i];
    for (int i = 0; i < M * ldc; i++) C[i] = (float)rc[i];
    k_sgemm_bf16(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                 A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = k_round_bf16(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                double b = k_round_bf16(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                acc += a * b;
                mag += fabs(a * b);
            }
            double want = alpha * acc + beta * (float)rc[(size_t)i * ldc + j];
            double got = C[(size_t)i * ldc + j];
            cr_assert(fabs(got - want) <= 1e-5 * (fabs(alpha) * mag + fabs(beta) + 1),
                      "bf16 gemm %dx%dx%d ta=%d tb=%d alpha=%g beta=%g: C[%d,%d] = %.9g, want %.9g",
                      M, N, K, ta, tb, alpha, beta, i, j, got, want);
        }
        // the padding beyond N is untouched
        for (int j = N; j < ldc; j++) cr_assert_eq(C[(size_t)i * ldc + j], (float)rc[(size_t)i * ldc + j]);
    }
    free(ra); free(rb); free(rc); free(A); free(B); free(C);
}
Test(kernels16, bf16_gemm) {
    const int shapes[][3] = { { 1, 1, 1 }, { 3, 5, 7 }, { 17, 33, 65 }, { 64, 128, 300 }, { 128, 10, 128 } };
    uint64_t seed = 1;
    for (int i = 0; i < 5; i++)
        for (int t = 0; t < 4; t++)
            for (int b = 0; b < 3; b++) {
                const float betas[] = { 0, 1, 0.5f };
                bf16_gemm_case(shapes[i][0], shapes[i][1], shapes[i][2], t & 1, t >> 1, b == 2 ? 0.25f : 1, betas[b], seed++);
            }
}
// k_im2col against its definition, x[c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW] (0
// outside), over random shapes: as wide as the input at stride 1 (one run per row,
// padding on either side or none, dilated, taller or shorter than the input) and not
Test(kernels, im2col_definition) {
    uint64_t s = 11;
    for (int it = 0; it < 400; it++) {
        k_conv2d_dims d = { 1, gc_int(&s, 1, 3), gc_int(&s, 1, 9), gc_int(&s, 1, 9), 1, gc_int(&s, 1, 4), gc_int(&s, 1, 4),
                            1, 1, gc_int(&s, 0, 3), gc_int(&s, 0, 3), gc_int(&s, 1, 2), gc_int(&s, 1, 2), 1, 0, 0 };
        if (it % 3 == 2) { d.SH = gc_int(&s, 1, 3); d.SW = gc_int(&s, 1, 3); }
        d.OH = (d.H + 2 * d.PH - d.DH * (d.KH - 1) - 1) / d.SH + 1 + gc_int(&s, -1, 1);   // (bottom padding implied)
        d.OW = it % 3 == 2 ? (d.W + 2 * d.PW - d.DW * (d.KW - 1) - 1) / d.SW + 1 : d.W;
        if (d.OH < 1 || d.OW < 1) continue;
        const int rows = d.C * d.KH * d.KW, P = d.OH * d.OW;
        float *x = malloc(sizeof(float) * d.C * d.H * d.W), *col = malloc(sizeof(float) * rows * P);
        for (int i = 0; i < d.C * d.H * d.W; i++) x[i] = (float)(i + 1);
        for (int i = 0; i < rows * P; i++) col[i] = -1;
        k_im2col_f32(col, (size_t)P, x, d.C, &d);
        for (int c = 0; c < d.C; c++)
            for (int kh = 0; kh < d.KH; kh++)
                for (int kw = 0; kw < d.KW; kw++)
                    for (int oh = 0; oh < d.OH; oh++)
                        for (int ow = 0; ow < d.OW; ow++) {
                            int ih = oh * d.SH - d.PH + kh * d.DH, iw = ow * d.SW - d.PW + kw * d.DW;
                            float want = ih >= 0 && ih < d.H && iw >= 0 && iw < d.W ? x[(c * d.H + ih) * d.W + iw] : 0;
                            float got = col[(size_t)((c * d.KH + kh) * d.KW + kw) * P + oh * d.OW + ow];
                            cr_assert_eq(got, want, "im2col C%d H%d W%d K%dx%d S%dx%d P%dx%d D%dx%d O%dx%d: [%d,%d,%d,%d,%d] = %g, want %g",
                                         d.C, d.H, d.W, d.KH, d.KW, d.SH, d.SW, d.PH, d.PW, d.DH, d.DW, d.OH, d.OW, c, kh, kw, oh, ow, got, want);
                        }
        free(x); free(col);
    }
}

// A small product outside a team runs through a plan made for one thread
// (K_F32_ONE_THREAD_WORK); inside a team, the calling thread runs the team's plan: the
// same bits (fashion_cnn's first convolution at batch 1, and one K block of 384).
Test(kernels, sgemm_one_thread_plan_same_bits) {
    const int shapes[2][3] = { { 32, 784, 9 }, { 16, 96, 384 } };
    uint64_t s = 3;
    omp_set_num_threads(2);
    for (int i = 0; i < 2; i++) {
        const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        cr_assert((double)M * N * K < K_F32_ONE_THREAD_WORK);
        double *ra = gc_rand(&s, M * K, -1, 1), *rb = gc_rand(&s, K * N, -1, 1);
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
        float *C1 = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
        for (int j = 0; j < M * K; j++) A[j] = (float)ra[j];
        for (int j = 0; j < K * N; j++) B[j] = (float)rb[j];
        for (int j = 0; j < M * N; j++) C1[j] = C2[j] = 0.5f;
        k_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, K, B, N, 1, C1, N);
        int teamed = 0;
        #pragma omp parallel num_threads(2)
        if (omp_get_thread_num() == 0) {
            teamed = omp_in_parallel();
            k_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, K, B, N, 1, C2, N);
        }
        if (teamed) cr_assert(memcmp(C1, C2, sizeof(float) * M * N) == 0, "%dx%dx%d: one thread's plan differs from the team's", M, N, K);
        free(ra); free(rb); free(A); free(B); free(C1); free(C2);
    }
}

// k_sgemm's two paths give the same bits: its matmul primitives (untransposed products
// up to K_F32_PRIM_MAX_WORK) take K in oneDNN's sgemm's blocks (k_sgemm_kblock), so
// k_sgemm equals dnnl_sgemm itself, K across one, two, three blocks and the halved tail,
// alpha and beta as the kernels pass them, leading dimensions past the sizes (an
// exported library takes every product through the primitives, the training program
// only small ones: its outputs equal the training program's because of this)
Test(kernels, sgemm_paths_same_bits) {
    const int Ks[] = { 1, 27, 288, 384, 385, 576, 768, 769, 777, 1152, 1700 };
    const float alphas[] = { 1, 1, 0.37f }, betas[] = { 0, 1, 1 };
    uint64_t s = 7;
    for (int i = 0; i < (int)(sizeof Ks / sizeof Ks[0]); i++) {
        for (int v = 0; v < 3; v++) {
            int M = v == 2 ? 7 : 16, N = v == 1 ? 33 : 96, K = Ks[i], lda = K + v, ldb = N + 2 * v, ldc = N + v;
            double *ra = gc_rand(&s, M * lda, -1, 1), *rb = gc_rand(&s, K * ldb, -1, 1), *rc = gc_rand(&s, M * ldc, -1, 1);
            float *A = malloc(sizeof(float) * M * lda), *B = malloc(sizeof(float) * K * ldb);
            float *C1 = malloc(sizeof(float) * M * ldc), *C2 = malloc(sizeof(float) * M * ldc);
            for (int j = 0; j < M * lda; j++) A[j] = (float)ra[j];
            for (int j = 0; j < K * ldb; j++) B[j] = (float)rb[j];
            for (int j = 0; j < M * ldc; j++) C1[j] = C2[j] = (float)rc[j];
            cr_assert((double)M * N * K <= K_F32_PRIM_MAX_WORK);
            if (v == 0 && dnnl_get_effective_cpu_isa() >= dnnl_cpu_isa_avx512_core) {   // (elsewhere no brgemm: sgemm both)
                k_f32_plan key = { M, N, k_sgemm_kblock(K), 0, 0, k_sgemm_kblock(K), ldb, ldc,
                                   (double)M * N * k_sgemm_kblock(K) < K_F32_ONE_THREAD_WORK, alphas[v], betas[v], NULL, NULL,
                                   {0}, {0}, {0}, {0}, 0 };
                const k_f32_plan *q = k_f32_plan_of(&key);
                cr_assert(q && q->prim, "%dx%dx%d: no matmul primitive, the test would compare sgemm with itself", M, N, K);
            }
            k_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alphas[v], A, lda, B, ldb, betas[v], C1, ldc);
            cr_assert(dnnl_sgemm('N', 'N', M, N, K, alphas[v], A, lda, B, ldb, betas[v], C2, ldc) == dnnl_success);
            cr_assert(memcmp(C1, C2, sizeof(float) * M * ldc) == 0, "%dx%dx%d alpha %g beta %g: the primitive and sgemm differ",
                      M, N, K, alphas[v], betas[v]);
            free(ra); free(rb); free(rc); free(A); free(B); free(C1); free(C2);
        }
    }
}

// the bf16c layers: with bf16-valued operands they compute what the f32 ones do, up to
// the order of the float sums
Test(kernels16, bf16c_conv_and_linear_match_f32) {
    uint64_t s = 99;
    k_conv2d_dims d = { 3, 4, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 9, 9 };
    int nx = d.N * d.C * d.H * d.W, nw = d.OC * (d.C / d.G) * d.KH * d.KW, no = d.N * d.OC * d.OH * d.OW;
    double *rx = gc_rand(&s, nx, -1, 1), *rw = gc_rand(&s, nw, -1, 1), *rg = gc_rand(&s, no, -1, 1);
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw), *g = malloc(sizeof(float) * no);
    for (int i = 0; i < nx; i++) x[i] = k_round_bf16((float)rx[i]);
    for (int i = 0; i < nw; i++) w[i] = k_round_bf16((float)rw[i]);
    for (int i = 0; i < no; i++) g[i] = k_round_bf16((float)rg[i]);
    float *scr = malloc(sizeof(float) * k_conv2d_scratch_f32(&d));
    float *o32 = malloc(sizeof(float) * no), *o16 = malloc(sizeof(float) * no);
    float *dx32 = calloc(nx, sizeof(float)), *dx16 = calloc(nx, sizeof(float));
    float *dw32 = calloc(nw, sizeof(float)), *dw16 = calloc(nw, sizeof(float));
    k_conv2d_forward_f32(o32, x, w, NULL, scr, &d);
    k_conv2d_forward_bf16c(o16, x, w, NULL, scr, &d);
    for (int i = 0; i < no; i++) cr_assert(fabsf(o32[i] - o16[i]) <= 1e-5f * (1 + fabsf(o32[i])), "conv out %d: %g vs %g", i, o16[i], o32[i]);
    k_conv2d_backward_f32(dx32, dw32, NULL, g, x, w, scr, &d, 1, 1);
    k_conv2d_backward_bf16c(dx16, dw16, NULL, g, x, w, scr, &d, 1, 1);
    for (int i = 0; i < nx; i++) cr_assert(fabsf(dx32[i] - dx16[i]) <= 1e-5f * (1 + fabsf(dx32[i])), "conv dx %d", i);
    for (int i = 0; i < nw; i++) cr_assert(fabsf(dw32[i] - dw16[i]) <= 1e-4f * (1 + fabsf(dw32[i])), "conv dw %d", i);
    // linear: x as (27, 36) rows, g as the weight (6, 36) and bias (6)
    float *l32 = malloc(sizeof(float) * 27 * 6), *l16 = malloc(sizeof(float) * 27 * 6);
    k_linear_forward_f32(l32, x, g, g + 300, 27, 36, 6);
    k_linear_forward_bf16c(l16, x, g, g + 300, 27, 36, 6);
    for (int i = 0; i < 27 * 6; i++) cr_assert(fabsf(l32[i] - l16[i]) <= 1e-5f * (1 + fabsf(l32[i])), "linear out %d", i);
    free(rx); free(rw); free(rg); free(x); free(w); free(g); free(scr); free(o32); free(o16);
    free(dx32); free(dx16); free(dw32); free(dw16); free(l32); free(l16);
}
// Several threads run one cached bf16 matmul at once (conv's image loop): each passes its
// own scratchpad, so the result is the same every time (oneDNN's shared scratchpad made
// it vary).  A per-image GEMM of 64 x 196 x 288, above the matmul's threshold.
Test(kernels16, bf16c_conv_threads_repeatable) {
    omp_set_num_threads(2);
    uint64_t s = 7;
    k_conv2d_dims d = { 8, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 14, 14 };
    int nx = d.N * d.C * d.H * d.W, nw = d.OC * d.C * 9, no = d.N * d.OC * d.OH * d.OW;
    double *rx = gc_rand(&s, nx, -1, 1), *rw = gc_rand(&s, nw, -1, 1);
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
    for (int i = 0; i < nx; i++) x[i] = k_round_bf16((float)rx[i]);
    for (int i = 0; i < nw; i++) w[i] = k_round_bf16((float)rw[i]);
    float *scr = malloc(sizeof(float) * k_conv2d_scratch_f32(&d));
    float *first = malloc(sizeof(float) * no), *again = malloc(sizeof(float) * no);
    k_conv2d_forward_bf16c(first, x, w, NULL, scr, &d);
    for (int rep = 0; rep < 20; rep++) {
        k_conv2d_forward_bf16c(again, x, w, NULL, scr, &d);
        cr_assert(memcmp(first, again, sizeof(float) * no) == 0, "bf16c conv differs on repetition %d", rep);
    }
    free(rx); free(rw); free(x); free(w); free(scr); free(first); free(again);
}

// ---------------------------------------------------------------------------- first writers
// acc = 0 (the gradient's first writer, gen/plan.lua's reuse): the kernel stores what
// it would have added to zeros, bit for bit, without reading the stale (here NaN) slot.
static double *stale(int n) {
    double *p = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static void same_as_added(const char *what, const double *stored, const double *added, int n) {
    for (int i = 0; i < n; i++)
        cr_assert(stored[i] == added[i], "%s: element %d stored %g, added to zeros %g", what, i, stored[i], added[i]);
}
Test(kernels, first_writer_stores) {
    uint64_t s = 5;
    const int n = 2 * 3 * 6 * 6;
    double *x = gc_rand(&s, n, -2, 2), *dy = gc_rand(&s, n, -1, 1), *w = gc_rand(&s, 128, 0.5, 1.5), *y = calloc(n, sizeof(double));
    double *add = calloc(n, sizeof(double)), *add2 = calloc(n, sizeof(double)), *st = stale(n), *st2 = stale(n);
    // activations, an elementwise binary op, cat
    k_relu_forward_f64(y, x, n);
    k_relu_backward_f64(add, dy, y, n, 1); k_relu_backward_f64(st, dy, y, n, 0); same_as_added("relu", st, add, n);
    memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
    k_silu_backward_f64(add, dy, x, n, 1); k_silu_backward_f64(st, dy, x, n, 0); same_as_added("silu", st, add, n);
    memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
    k_mul_backward_f64(add, add2, dy, x, y, n, 1, 1); k_mul_backward_f64(st, st2, dy, x, y, n, 0, 0);
    same_as_added("mul a", st, add, n); same_as_added("mul b", st2, add2, n);
    memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
    k_cat_backward_f64(add, dy, 2, 2, 36, 3, 1, 1); k_cat_backward_f64(st, dy, 2, 2, 36, 3, 1, 0); same_as_added("cat", st, add, 2 * 2 * 36);
    // batch norm (N 2, C 3, S 36)
    double mean[3], invstd[3];
    k_batch_norm_forward_train_f64(y, mean, invstd, NULL, NULL, NULL, x, w, NULL, 2, 3, 36, 1e-5, 0.1);
    memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
    k_batch_norm_backward_f64(add, NULL, NULL, dy, x, w, mean, invstd, 2, 3, 36, 1, 1);
    k_batch_norm_backward_f64(st, NULL, NULL, dy, x, w, mean, invstd, 2, 3, 36, 0, 1);
    same_as_added("batch_norm", st, add, n);
    // max pooling 2x2 and 3x3 stride 2 (overlapping windows) of (2, 3, 6, 6)
    for (int k = 2; k <= 3; k++) {
        k_pool2d_dims pd = { 2, 3, 6, 6, k, k, 2, 2, 0, 0, 1, 1, k == 2 ? 3 : 2, k == 2 ? 3 : 2, 1 };
        int32_t am[2 * 3 * 9];
        k_max_pool2d_forward_f64(y, am, x, &pd);
        memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
        k_max_pool2d_backward_f64(add, dy, am, &pd, 1); k_max_pool2d_backward_f64(st, dy, am, &pd, 0);
        same_as_added("max_pool2d", st, add, n);
    }
    // conv2d 3x3 (col2im) and 1x1 (straight GEMM), and ConvTranspose2d(2, stride 2), input (2, 3, 6, 6)
    const k_conv2d_dims cds[] = { { 2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 6 }, { 2, 3, 6, 6, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1, 6, 6 },
                                  { 2, 3, 6, 6, 4, 2, 2, 2, 2, 0, 0, 1, 1, 1, 3, 3 } };
    for (int c = 0; c < 3; c++) {
        const k_conv2d_dims *d = &cds[c];
        double *scr = malloc(sizeof(double) * k_conv2d_scratch_f64(d));
        double *g = gc_rand(&s, 2 * 4 * 36, -1, 1);
        memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
        if (c < 2) {
            k_conv2d_backward_f64(add, NULL, NULL, g, x, w, scr, d, 1, 1); k_conv2d_backward_f64(st, NULL, NULL, g, x, w, scr, d, 0, 1);
            same_as_added("conv2d", st, add, n);
        } else {   // the transposed conv's input is (2, 4, 3, 3), its output (2, 3, 6, 6)
            k_conv_transpose_backward_f64(add, NULL, NULL, x, g, w, scr, d, 1, 1);
            k_conv_transpose_backward_f64(st, NULL, NULL, x, g, w, scr, d, 0, 1);
            same_as_added("conv_transpose", st, add, 2 * 4 * 9);
            double *o = stale(n), *o2 = calloc(n, sizeof(double));
            k_conv_transpose_forward_f64(o, g, w, NULL, scr, d);          // stores (no clearing first)
            k_conv2d_backward_f64(o2, NULL, NULL, g, o2, w, scr, d, 1, 1);   // added to zeros
            same_as_added("conv_transpose forward", o, o2, n);
            free(o); free(o2);
        }
        free(scr); free(g);
    }
    // linear (6, 12) -> 6 outputs
    memset(add, 0, sizeof(double) * n); free(st); st = stale(n);
    k_linear_backward_f64(add, NULL, NULL, dy, x, w, 6, 12, 6, 1, 1); k_linear_backward_f64(st, NULL, NULL, dy, x, w, 6, 12, 6, 0, 1);
    same_as_added("linear", st, add, 6 * 12);
    free(x); free(dy); free(w); free(y); free(add); free(add2); free(st); free(st2);
}

// pacc = 0 (a parameter gradient's first writer after model_zero_grad, gen/plan.lua's
// param_first): dw and db stored as the kernel would have added them to zeros, without
// reading the stale (NaN) arena; pacc = 1 after it adds a second backward's (accumulation).
static void params_stored(const char *what, double *dw0, double *db0, double *dw1, double *db1, int nw, int nb) {
    same_as_added(what, dw1, dw0, nw);
    if (db0) same_as_added(what, db1, db0, nb);
}
Test(kernels, param_first_writer_stores) {
    uint64_t s = 11;
    const int n = 2 * 3 * 6 * 6, nw = 128, nb = 8;
    double *x = gc_rand(&s, n, -2, 2), *dy = gc_rand(&s, n, -1, 1), *w = gc_rand(&s, nw, 0.5, 1.5), *dx = calloc(n, sizeof(double));
    double *dw0 = calloc(nw, sizeof(double)), *db0 = calloc(nb, sizeof(double)), *dw1 = stale(nw), *db1 = stale(nb);
#define RESET() do { memset(dw0, 0, sizeof(double) * nw); memset(db0, 0, sizeof(double) * nb); \
                     free(dw1); free(db1); dw1 = stale(nw); db1 = stale(nb); } while (0)
#define TWICE(what, nwu, nbu, CALL) do { \
        double *t0 = malloc(sizeof(double) * nw), *t1 = malloc(sizeof(double) * nb); \
        memcpy(t0, dw0, sizeof(double) * nw); memcpy(t1, db0, sizeof(double) * nb); \
        { double *dw = dw0, *db = db0; (void)db; int pacc = 1; CALL; } \
        { double *dw = dw1, *db = db1; (void)db; int pacc = 1; CALL; } \
        for (int i = 0; i < (nwu); i++) cr_assert(dw1[i] == dw0[i] && fabs(dw0[i] - 2 * t0[i]) <= 1e-12 * (1 + fabs(t0[i])), "%s accumulated: dw %d", what, i); \
        for (int i = 0; i < (nbu); i++) cr_assert(db1[i] == db0[i] && fabs(db0[i] - 2 * t1[i]) <= 1e-12 * (1 + fabs(t1[i])), "%s accumulated: db %d", what, i); \
        free(t0); free(t1); } while (0)
    // linear: 6 rows of 12 -> 4 outputs
    RESET();
    k_linear_backward_f64(dx, dw0, db0, dy, x, w, 6, 12, 4, 1, 1);
    k_linear_backward_f64(dx, dw1, db1, dy, x, w, 6, 12, 4, 1, 0);
    params_stored("linear", dw0, db0, dw1, db1, 48, 4);
    TWICE("linear", 48, 4, k_linear_backward_f64(dx, dw, db, dy, x, w, 6, 12, 4, 1, pacc));
    // batch norm (N 2, C 3, S 36)
    double mean[3], invstd[3], *y = calloc(n, sizeof(double));
    k_batch_norm_forward_train_f64(y, mean, invstd, NULL, NULL, NULL, x, w, NULL, 2, 3, 36, 1e-5, 0.1);
    RESET();
    k_batch_norm_backward_f64(dx, dw0, db0, dy, x, w, mean, invstd, 2, 3, 36, 1, 1);
    k_batch_norm_backward_f64(dx, dw1, db1, dy, x, w, mean, invstd, 2, 3, 36, 1, 0);
    params_stored("batch_norm", dw0, db0, dw1, db1, 3, 3);
    TWICE("batch_norm", 3, 3, k_batch_norm_backward_f64(dx, dw, db, dy, x, w, mean, invstd, 2, 3, 36, 1, pacc));
    // conv2d 3x3 and 1x1, ConvTranspose2d(2, stride 2), input (2, 3, 6, 6), 4 output channels
    const k_conv2d_dims cds[] = { { 2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 6 }, { 2, 3, 6, 6, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1, 6, 6 },
                                  { 2, 3, 6, 6, 4, 2, 2, 2, 2, 0, 0, 1, 1, 1, 3, 3 } };
    for (int c = 0; c < 3; c++) {
        const k_conv2d_dims *d = &cds[c];
        const int kw = 4 * 3 * d->KH * d->KW;
        double *scr = malloc(sizeof(double) * k_conv2d_scratch_f64(d));
        double *g = gc_rand(&s, 2 * 4 * 36, -1, 1);
        RESET();
        if (c < 2) {
            k_conv2d_backward_f64(dx, dw0, db0, g, x, w, scr, d, 1, 1);
            k_conv2d_backward_f64(dx, dw1, db1, g, x, w, scr, d, 1, 0);
            params_stored("conv2d", dw0, db0, dw1, db1, kw, 4);
            TWICE("conv2d", kw, 4, k_conv2d_backward_f64(dx, dw, db, g, x, w, scr, d, 1, pacc));
        } else {   // the transposed conv's input x (2, 4, 3, 3), its output gradient (2, 3, 6, 6); bias (3)
            k_conv_transpose_backward_f64(dx, dw0, db0, x, g, w, scr, d, 1, 1);
            k_conv_transpose_backward_f64(dx, dw1, db1, x, g, w, scr, d, 1, 0);
            params_stored("conv_transpose", dw0, db0, dw1, db1, kw, 3);
            TWICE("conv_transpose", kw, 3, k_conv_transpose_backward_f64(dx, dw, db, x, g, w, scr, d, 1, pacc));
        }
        free(scr); free(g);
    }
#undef RESET
#undef TWICE
    free(x); free(dy); free(w); free(dx); free(y); free(dw0); free(db0); free(dw1); free(db1);
}
