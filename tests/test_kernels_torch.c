// The kernels against PyTorch, for the semantics a gradient check cannot see (it
// only proves a backward consistent with its own forward).  The reference values
// come from tests/torch/kernels_ref.py, which the build runs into
// build/torch_ref/kernels.txt; every test here skips itself, saying why, when that
// file is missing or says "skip" (no torch for /usr/bin/python3).
// Everything runs in float64 on both sides: tolerance 1e-10 relative
// (max |ours - torch| / max(1, |torch|)), far above rounding (~1e-15 per op) and
// far below any semantic difference.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

#define REF_PATH "build/torch_ref/kernels.txt"
#define TOL 1e-10

typedef struct { char name[64]; size_t n; double *v; } ref_entry;
static ref_entry *refs;
static size_t nrefs;

// Loads the reference file, or skips the calling test.
static void ref_load(void) {
    FILE *f = fopen(REF_PATH, "r");
    if (!f) cr_skip_test("%s is missing (it is built from tests/torch/kernels_ref.py by `ninja`)", REF_PATH);
    static char line[1 << 16];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "skip ", 5) == 0) {
            fclose(f);
            line[strcspn(line, "\n")] = 0;
            cr_skip_test("PyTorch reference unavailable: %s", line + 5);
        }
        if (nrefs == cap) { cap = cap ? 2 * cap : 256; refs = realloc(refs, cap * sizeof *refs); }
        ref_entry *e = &refs[nrefs];
        int used = 0;
        if (sscanf(line, "%63s %zu%n", e->name, &e->n, &used) != 2) continue;
        e->v = malloc((e->n ? e->n : 1) * sizeof(double));
        char *p = line + used;
        for (size_t i = 0; i < e->n; i++) e->v[i] = strtod(p, &p);
        nrefs++;
    }
    fclose(f);
}
static const double *ref(const char *name, size_t *n) {
    for (size_t i = 0; i < nrefs; i++)
        if (strcmp(refs[i].name, name) == 0) { if (n) *n = refs[i].n; return refs[i].v; }
    cr_assert_fail("reference %s not found in %s (regenerate it: ninja)", name, REF_PATH);
    return NULL;
}
static const double *reff(const char *fmt, const char *a) {
    char name[128];
    snprintf(name, sizeof name, fmt, a);
    return ref(name, NULL);
}
static double *zeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static double *copy(const double *x, size_t n) { double *p = malloc(n * sizeof(double)); memcpy(p, x, n * sizeof(double)); return p; }

static void expect_close(const char *what, const double *got, const double *want, size_t n, double tol) {
    for (size_t i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]) / fmax(1, fabs(want[i]));
        cr_assert(err < tol || (isnan(got[i]) && isnan(want[i])),
                  "%s [%zu]: ours %.17g, torch %.17g (error %.3g)", what, i, got[i], want[i], err);
    }
}

// ---------------------------------------------------------------------------- conv, pooling
static void conv_case(const char *name, k_conv2d_dims d) {
    char k[64];
    size_t nx = (size_t)d.N * d.C * d.H * d.W, nw = (size_t)d.OC * (d.C / d.G) * d.KH * d.KW, ny = (size_t)d.N * d.OC * d.OH * d.OW;
    const double *x = reff("%s.x0", name), *w = reff("%s.x1", name), *b = reff("%s.x2", name), *dy = reff("%s.dy", name);
    snprintf(k, sizeof k, "%s.y", name);
    size_t nref;
    const double *y_ref = ref(k, &nref);
    cr_assert_eq(nref, ny, "%s: %zu outputs in the reference, %zu from the dims", name, nref, ny);
    double *y = zeros(ny), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(d.OC), *scr = zeros(k_conv2d_scratch_f64(&d));
    k_conv2d_forward_f64(y, x, w, b, scr, &d);
    k_conv2d_backward_f64(dx, dw, db, dy, x, w, scr, &d, 1, 1);
    expect_close(k, y, y_ref, ny, TOL);
    expect_close("conv dx", dx, reff("%s.dx0", name), nx, TOL);
    expect_close("conv dw", dw, reff("%s.dx1", name), nw, TOL);
    expect_close("conv db", db, reff("%s.dx2", name), d.OC, TOL);
}
Test(kernels_torch, conv2d) {
    ref_load();
    // x (2, 4, 7, 6), w (6, 2, 3, 2), stride (2, 1), padding (1, 2), dilation (1, 2), groups 2
    conv_case("conv_a", (k_conv2d_dims){ 2, 4, 7, 6, 6, 3, 2, 2, 1, 1, 2, 1, 2, 2, 4, 8 });
    // padding="same", kernel (2, 4): top/left padding (0, 1), bottom/right (1, 2)
    conv_case("conv_same", (k_conv2d_dims){ 2, 3, 5, 6, 4, 2, 4, 1, 1, 0, 1, 1, 1, 1, 5, 6 });
}

static void pool_case(const char *name, k_pool2d_dims d, int is_max) {
    size_t nx = (size_t)d.N * d.C * d.H * d.W, ny = (size_t)d.N * d.C * d.OH * d.OW, nref;
    char k[64];
    snprintf(k, sizeof k, "%s.y", name);
    const double *y_ref = ref(k, &nref);
    cr_assert_eq(nref, ny, "%s: %zu outputs in the reference, %zu from the dims", name, nref, ny);
    const double *x = reff("%s.x0", name), *dy = reff("%s.dy", name);
    double *y = zeros(ny), *dx = zeros(nx);
    int32_t *am = calloc(ny, sizeof(int32_t));
    if (is_max) { k_max_pool2d_forward_f64(y, am, x, &d); k_max_pool2d_backward_f64(dx, dy, am, &d, 1); }
    else { k_avg_pool2d_forward_f64(y, x, &d); k_avg_pool2d_backward_f64(dx, dy, &d); }
    expect_close(k, y, y_ref, ny, TOL);
    snprintf(k, sizeof k, "%s.dx0", name);
    expect_close(k, dx, ref(k, NULL), nx, TOL);
}
Test(kernels_torch, max_pool2d_ceil_mode) {
    ref_load();
    // (2, 2, 8, 7), kernel 3, stride 2, padding 1, ceil_mode: out 5 x 4 (4 x 4 without ceil_mode)
    pool_case("maxpool_ceil", (k_pool2d_dims){ 2, 2, 8, 7, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 1 }, 1);
    // (1, 2, 7, 9), kernel (2, 3), stride (2, 1), padding 1, dilation 2, ceil_mode: out 4 x 7
    pool_case("maxpool_dil", (k_pool2d_dims){ 1, 2, 7, 9, 2, 3, 2, 1, 1, 1, 2, 2, 4, 7, 1 }, 1);
}
Test(kernels_torch, avg_pool2d_count_include_pad) {
    ref_load();
    pool_case("avgpool_cip1", (k_pool2d_dims){ 2, 2, 8, 7, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 1 }, 0);
    pool_case("avgpool_cip0", (k_pool2d_dims){ 2, 2, 8, 7, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 0 }, 0);
}

// ---------------------------------------------------------------------------- activations, linear, norms
Test(kernels_torch, gelu_silu) {
    ref_load();
    size_t n;
    const char *names[] = { "gelu_tanh", "gelu", "silu" };
    for (int c = 0; c < 3; c++) {
        char k[64];
        snprintf(k, sizeof k, "%s.x0", names[c]);
        const double *x = ref(k, &n), *dy = reff("%s.dy", names[c]);
        double *y = zeros(n), *dx = zeros(n);
        if (c < 2) { k_gelu_forward_f64(y, x, n, c == 0); k_gelu_backward_f64(dx, dy, x, n, c == 0, 1); }
        else { k_silu_forward_f64(y, x, n); k_silu_backward_f64(dx, dy, x, n, 1); }
        expect_close(names[c], y, reff("%s.y", names[c]), n, TOL);
        expect_close(names[c], dx, reff("%s.dx0", names[c]), n, TOL);
    }
}
Test(kernels_torch, linear_layer_norm_log_softmax) {
    ref_load();
    double *y = zeros(64), *dx = zeros(64), *dw = zeros(64), *db = zeros(64), *mean = zeros(8), *rstd = zeros(8);
    k_linear_forward_f64(y, ref("linear.x0", NULL), ref("linear.x1", NULL), ref("linear.x2", NULL), 5, 7, 3);
    k_linear_backward_f64(dx, dw, db, ref("linear.dy", NULL), ref("linear.x0", NULL), ref("linear.x1", NULL), 5, 7, 3, 1, 1);
    expect_close("linear y", y, ref("linear.y", NULL), 15, TOL);
    expect_close("linear dx", dx, ref("linear.dx0", NULL), 35, TOL);
    expect_close("linear dw", dw, ref("linear.dx1", NULL), 21, TOL);
    expect_close("linear db", db, ref("linear.dx2", NULL), 3, TOL);
    memset(dx, 0, 64 * 8); memset(dw, 0, 64 * 8); memset(db, 0, 64 * 8);
    const double *x = ref("layer_norm.x0", NULL), *w = ref("layer_norm.x1", NULL), *b = ref("layer_norm.x2", NULL);
    k_layer_norm_forward_f64(y, mean, rstd, x, w, b, 4, 6, 1e-5);
    k_layer_norm_backward_f64(dx, dw, db, ref("layer_norm.dy", NULL), x, w, mean, rstd, 4, 6);
    expect_close("layer_norm y", y, ref("layer_norm.y", NULL), 24, TOL);
    expect_close("layer_norm dx", dx, ref("layer_norm.dx0", NULL), 24, TOL);
    expect_close("layer_norm dw", dw, ref("layer_norm.dx1", NULL), 6, TOL);
    expect_close("layer_norm db", db, ref("layer_norm.dx2", NULL), 6, TOL);
    memset(dx, 0, 64 * 8);
    k_log_softmax_forward_f64(y, ref("log_softmax.x0", NULL), 2, 5, 3);
    k_log_softmax_backward_f64(dx, ref("log_softmax.dy", NULL), y, 2, 5, 3);
    expect_close("log_softmax y", y, ref("log_softmax.y", NULL), 30, TOL);
    expect_close("log_softmax dx", dx, ref("log_softmax.dx0", NULL), 30, TOL);
}

Test(kernels_torch, batch_norm_running_stats) {
    ref_load();
    const char *modes[] = { "m01", "mnone" };
    for (int m = 0; m < 2; m++) {
        const int N = 4, C = 3, S = 5;
        double w[3] = { 1.5, 0.5, -1.0 }, b[3] = { 0.1, 0.2, 0.3 };
        double rm[3] = { 0, 0, 0 }, rv[3] = { 1, 1, 1 }, mean[3], invstd[3], y[60];
        int64_t nbt = 0;
        for (int step = 0; step < 3; step++) {
            char k[64];
            snprintf(k, sizeof k, "bn.%s.x%d", modes[m], step);
            const double *x = ref(k, NULL);
            k_batch_norm_forward_train_f64(y, mean, invstd, rm, rv, &nbt, x, w, b, N, C, S, 1e-5, m == 0 ? 0.1 : -1);
            snprintf(k, sizeof k, "bn.%s.y%d", modes[m], step);
            expect_close(k, y, ref(k, NULL), 60, TOL);
        }
        expect_close("running_mean", rm, reff("bn.%s.running_mean", modes[m]), 3, TOL);
        expect_close("running_var", rv, reff("bn.%s.running_var", modes[m]), 3, TOL);
        cr_assert_eq(nbt, (int64_t)reff("bn.%s.nbt", modes[m])[0]);
        double ye[30];
        k_batch_norm_forward_eval_f64(ye, reff("bn.%s.eval_x", modes[m]), w, b, rm, rv, 2, C, S, 1e-5);
        expect_close("batch_norm eval", ye, reff("bn.%s.eval_y", modes[m]), 30, TOL);
    }
}

// ---------------------------------------------------------------------------- losses
Test(kernels_torch, cross_entropy_ignore_index_label_smoothing) {
    ref_load();
    const int N = 4, C = 5, S = 3;
    const double *logits = ref("ce.logits", NULL), *tref = ref("ce.target", NULL);
    const char *reds[] = { "none", "mean", "sum" };
    for (int ii = 0; ii < 2; ii++) {
        int64_t ignore = ii == 0 ? -100 : 2, target[12];
        for (int i = 0; i < 12; i++) target[i] = tref[i] == -100 ? ignore : (int64_t)tref[i];
        for (int ls = 0; ls < 2; ls++) {
            for (int red = 0; red < 3; red++) {
                char k[96];
                snprintf(k, sizeof k, "ce.i%d.ls%d.%s", ii, ls, reds[red]);
                double loss[12], logp[60], dlogits[60] = {0};
                k_cross_entropy_forward_f64(loss, logp, logits, target, NULL, N, C, S, ignore, ls * 0.1, red);
                k_cross_entropy_backward_f64(dlogits, reff("%s.dloss", k), logp, logits, target, NULL, N, C, S, ignore, ls * 0.1, red);
                expect_close(k, loss, reff("%s.loss", k), red == 0 ? 12 : 1, TOL);
                expect_close(k, dlogits, reff("%s.dlogits", k), 60, TOL);
            }
        }
    }
    const double *probs = ref("ces.target", NULL);
    for (int red = 0; red < 3; red++) {
        double loss[12], logp[60], dlogits[60] = {0};
        k_cross_entropy_soft_forward_f64(loss, logp, logits, probs, NULL, N, C, S, 0.2, red);
        k_cross_entropy_soft_backward_f64(dlogits, reff("ces.%s.dloss", reds[red]), logp, logits, probs, NULL, N, C, S, 0.2, red);
        expect_close("cross_entropy (soft)", loss, reff("ces.%s.loss", reds[red]), red == 0 ? 12 : 1, TOL);
        expect_close("cross_entropy (soft) dlogits", dlogits, reff("ces.%s.dlogits", reds[red]), 60, TOL);
    }
}

Test(kernels_torch, bce_clamp) {
    ref_load();
    double loss[6], dp[4] = {0}, one = 1;
    k_bce_forward_f64(loss, ref("bce.p", NULL), ref("bce.t", NULL), 6, K_REDUCTION_NONE);
    expect_close("bce none", loss, ref("bce.none", NULL), 6, TOL);
    k_bce_forward_f64(loss, ref("bce.p", NULL), ref("bce.t", NULL), 6, K_REDUCTION_MEAN);
    expect_close("bce mean", loss, ref("bce.mean", NULL), 1, TOL);
    double p[4] = { 0.1, 0.3, 0.9, 0.5 }, t[4] = { 0.0, 1.0, 0.2, 0.5 };
    k_bce_backward_f64(dp, &one, p, t, 4, K_REDUCTION_MEAN);
    expect_close("bce grad", dp, ref("bce.grad", NULL), 4, TOL);
    k_bce_with_logits_forward_f64(loss, ref("bcel.x", NULL), ref("bcel.t", NULL), 5, K_REDUCTION_NONE);
    expect_close("bce_with_logits", loss, ref("bcel.none", NULL), 5, TOL);
}

// ---------------------------------------------------------------------------- optimizers, clipping
Test(kernels_torch, optimizers) {
    ref_load();
    const size_t n = 7;
    const double *p0 = ref("opt.p0", NULL);
    const double *g[4];
    for (int i = 0; i < 4; i++) { char k[32]; snprintf(k, sizeof k, "opt.g%d", i); g[i] = ref(k, NULL); }
    const char *names[] = { "sgd_plain", "sgd_mom", "sgd_nest", "adam", "adam_all", "adamw", "adamw_all" };
    for (int c = 0; c < 7; c++) {
        double *p = copy(p0, n), *m = zeros(n), *v = zeros(n), *vmax = zeros(n);
        for (int step = 0; step < 4; step++) {
            switch (c) {
            case 0: k_sgd_step_f64(p, g[step], NULL, n, 0.1, 0, 0, 0, 0, 0, step == 0); break;
            case 1: k_sgd_step_f64(p, g[step], m, n, 0.1, 0.9, 0.2, 0.05, 0, 0, step == 0); break;
            case 2: k_sgd_step_f64(p, g[step], m, n, 0.1, 0.9, 0, 0.05, 1, 1, step == 0); break;
            case 3: k_adam_step_f64(p, g[step], m, v, NULL, n, 0.01, 0.9, 0.999, 1e-8, 0, 0, 0, step + 1); break;
            case 4: k_adam_step_f64(p, g[step], m, v, vmax, n, 0.01, 0.8, 0.9, 1e-6, 0.1, 1, 1, step + 1); break;
            case 5: k_adamw_step_f64(p, g[step], m, v, NULL, n, 0.01, 0.9, 0.999, 1e-8, 0.01, 0, 0, step + 1); break;
            case 6: k_adamw_step_f64(p, g[step], m, v, vmax, n, 0.01, 0.85, 0.95, 1e-7, 0.3, 1, 0, step + 1); break;
            }
            char k[64];
            snprintf(k, sizeof k, "opt.%s.p%d", names[c], step);
            expect_close(k, p, ref(k, NULL), n, TOL);
        }
    }
}

Test(kernels_torch, clip_grad_norm_and_value) {
    ref_load();
    const char *cases[] = { "0.5", "100" };
    double maxn[] = { 0.5, 100.0 };
    for (int c = 0; c < 2; c++) {
        double *a = copy(reff("clip%s.ga", cases[c]), 5), *b = copy(reff("clip%s.gb", cases[c]), 6);
        double total = sqrt(k_grad_norm_f64(a, 5) + k_grad_norm_f64(b, 6));
        expect_close("clip total norm", &total, reff("clip%s.total", cases[c]), 1, TOL);
        double coef = k_clip_coef(total, maxn[c]);
        k_scale_f64(a, 5, coef);
        k_scale_f64(b, 6, coef);
        expect_close("clip a", a, reff("clip%s.a", cases[c]), 5, TOL);
        expect_close("clip b", b, reff("clip%s.b", cases[c]), 6, TOL);
    }
    double *g = copy(ref("clipv.g", NULL), 6);
    k_clamp_f64(g, 6, -0.5, 0.5);
    expect_close("clip_grad_value_", g, ref("clipv.out", NULL), 6, TOL);
}
