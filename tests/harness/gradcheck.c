// Whole-model gradient check: the analytic gradient of a generated model against
// central finite differences of its loss, in float64.
//
// Generic over models: it includes the model.h of a program generated with
// `loom build SPEC -o DIR --precision=64-true` and links with DIR/model.c:
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/gradcheck.c DIR/model.c -ldnnl -lopenblas -lm
//   ./gradcheck [B] [samples-per-tensor] [seed] [tol] [eps]
//
// It fills a batch of B samples with random data (float fields uniform in [0, 1): a
// valid BCE target as well as an input; int fields uniform in [0, high)), runs
// model_init, model_forward(training=1) and model_backward(dloss=1), then for
// `samples` random elements of every parameter tensor compares the analytic gradient
// g with the central difference d = (L(p+eps) - L(p-eps)) / 2eps (eps = 1e-6), each L a
// fresh model_forward(training=1) (BatchNorm uses batch statistics, so the running
// statistics it updates do not enter the loss; m->step, hence dropout, stays fixed).
//
// The error of one element is
//     err = |g - d| / max(|g|, |d|, floor),   floor = 1e-9 max(1, |L|) / eps
// and it fails when err > TOL = 1e-5 (argv[4] may say otherwise; argv[5] sets eps).
// Why the floor: L itself is exact only to some hundreds of ulps (a mean of many
// log-probabilities), so d carries an absolute rounding error of up to about
// 5e-16 |L| / eps (measured), which would be a large *relative* error for
// gradients that are tiny or exactly zero analytically (a bias feeding a
// training-mode BatchNorm, directly or through max-pool and Linear; the key bias of
// attention; a dead ReLU).  Below the floor the test is therefore absolute,
// |g - d| <= 1e-14 max(1, |L|) / eps, 20x the noise; above it, relative 1e-5.  A real error
// in a backward rule is O(1) relative, far beyond either.  eps = 1e-6 keeps the chance
// that a perturbation crosses a ReLU kink or switches a max-pool winner small (with
// eps = 1e-4 it happens for FashionCNN's conv weights, which touch every pixel); the
// data are continuous, so exact ties do not occur.  Central differences are exact to
// O(eps^2) (~1e-12 relative here), negligible.  A smooth model (no ReLU, no max-pool:
// the transformer) can take eps = 1e-4, whose floor is 100x lower.
// One line per tensor (worst error, where); exit status 1 if any element failed.
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static uint64_t next_u64(void) {   // splitmix64
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform01(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

// The losses checked: the model's one, or each fabric.backward of a training_step
// (LOOM_STEP_BACKWARDS, gen/user_step.lua): its loss after every forward of the step at
// fixed weights.  A parameter that backward does not reach (a detached path) must have
// an analytic gradient of exactly 0; its finite difference is not compared.
#ifdef LOOM_STEP_BACKWARDS
#define NUM_LOSSES LOOM_STEP_BACKWARDS
static double loss_of(Model *m, const Batch *b, int B, int k) { step_forward_all(m, b, B, 1); return step_loss(m, k); }
static void grad_of(Model *m, const Batch *b, int B, int k) { step_forward_all(m, b, B, 1); step_backward(k, m, b, B, 1.0); }
static int reaches(int k, int t) { return step_reaches(k, t); }
#else
#define NUM_LOSSES 1
static double loss_of(Model *m, const Batch *b, int B, int k) { (void)k; return model_forward(m, b, B, 1); }
static void grad_of(Model *m, const Batch *b, int B, int k) { (void)k; model_backward(m, b, B, 1.0); }
static int reaches(int k, int t) { (void)k; (void)t; return 1; }
#endif

int main(int argc, char **argv) {
    int B = argc > 1 ? atoi(argv[1]) : 4;
    int samples = argc > 2 ? atoi(argv[2]) : 10;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    double tol = argc > 4 ? atof(argv[4]) : 1e-5;
    const double eps = argc > 5 ? atof(argv[5]) : 1e-6;
    if (sizeof(real) != 8 || sizeof(state_t) != 8) { fprintf(stderr, "gradcheck: the model must be generated with --precision=64-true\n"); return 2; }
    if (B < 1 || B > BATCH_MAX) { fprintf(stderr, "gradcheck: B=%d outside [1, %d]\n", B, BATCH_MAX); return 2; }
    rng_state = seed * 0x2545F4914F6CDD1Dull + 12345;

    Model m;
    if (model_alloc(&m) != 0) { fprintf(stderr, "gradcheck: out of memory\n"); return 2; }
    model_init(&m, seed);
    m.step = 0;

    // The batch: every member of Batch is a pointer, one per field, in field order.
    Batch batch;
    _Static_assert(sizeof(Batch) == NUM_BATCH_FIELDS * sizeof(void *), "Batch holds one pointer per field");
    for (int i = 0; i < NUM_BATCH_FIELDS; i++) {
        const batch_field_info *f = &model_batch_info[i];
        size_t n = (size_t)B * f->per_sample;
        void *p;
        if (f->is_int) {
            int64_t *q = malloc(n * sizeof *q);
            for (size_t j = 0; j < n; j++) q[j] = (int64_t)(next_u64() % (uint64_t)f->high);
            p = q;
        } else {
            real *q = malloc(n * sizeof *q);
            for (size_t j = 0; j < n; j++) q[j] = uniform01();
            p = q;
        }
        ((void **)&batch)[i] = p;
        if (batch_field(&batch, i) != p) { fprintf(stderr, "gradcheck: Batch layout is not one pointer per field\n"); return 2; }
    }

    int failed = 0;
    double worst_all = 0;
    const char *worst_name = "";
    int below_floor = 0, checked = 0;
    for (int c = 0; c < NUM_LOSSES; c++) {
    model_zero_grad(&m);
    real L0 = loss_of(&m, &batch, B, c);
    grad_of(&m, &batch, B, c);
    if (!isfinite(L0)) { fprintf(stderr, "gradcheck: loss is %g\n", L0); return 2; }
    const double floor_ = 1e-9 / eps * fmax(1.0, fabs(L0));
    printf("# %s loss %d: B=%d loss=%.17g samples/tensor=%d eps=%g tol=%g floor=%g\n", MODEL_NAME, c, B, L0, samples, eps, tol,
           floor_);

    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const tensor_info *ti = &model_param_info[t];
        if (!reaches(c, t)) {
            // not reached by this backward (detached): its gradient must stay exactly 0
            int nonzero = 0;
            for (size_t j = 0; j < ti->numel; j++) nonzero += m.grads[ti->offset + j] != 0;
            failed |= nonzero > 0;
            printf("%s %-36s not reached by this backward: %d nonzero gradients\n", nonzero ? "FAIL" : "  ok", ti->name, nonzero);
            continue;
        }
        double worst = 0, wg = 0, wd = 0;
        size_t wj = 0;
        int k = (size_t)samples < ti->numel ? samples : (int)ti->numel;
        for (int s = 0; s < k; s++) {
            // distinct enough: a random element (repeats are harmless)
            size_t j = (size_t)(next_u64() % ti->numel);
            if ((size_t)samples >= ti->numel) j = (size_t)s;
            state_t *p = &m.params[ti->offset + j];   // 64-true: state_t is double
            state_t saved = *p;
            *p = saved + eps;
            double Lp = loss_of(&m, &batch, B, c);
            *p = saved - eps;
            double Lm = loss_of(&m, &batch, B, c);
            *p = saved;
            double d = (Lp - Lm) / (2 * eps);
            double g = m.grads[ti->offset + j];
            double err = fabs(g - d) / fmax(fmax(fabs(g), fabs(d)), floor_);
            checked++;
            if (fmax(fabs(g), fabs(d)) < floor_) below_floor++;
            if (!(err <= worst)) { worst = err; wg = g; wd = d; wj = j; }
        }
        int bad = !(worst <= tol);
        failed |= bad;
        if (worst > worst_all) { worst_all = worst; worst_name = ti->name; }
        printf("%s %-36s n=%-2d worst err %.3e at [%zu]: analytic %.12e, finite difference %.12e\n", bad ? "FAIL" : "  ok",
               ti->name, k, worst, wj, wg, wd);
    }
    }
    printf("# worst %.3e (%s); %d of %d elements were below the floor (judged absolutely)\n", worst_all, worst_name,
           below_floor, checked);
    for (int i = 0; i < NUM_BATCH_FIELDS; i++) free(((void **)&batch)[i]);
    model_free(&m);
    return failed ? 1 : 0;
}
