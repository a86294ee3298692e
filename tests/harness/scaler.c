// The loss scaler of a 16-mixed program (torch.cuda.amp.GradScaler's semantics), driven
// step by step.  Compiled against the files of `loom build SPEC --precision=16-mixed`
// for a spec whose optimizer is Adam or AdamW (tests/suite_state16.sh uses fashion_mlp):
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/scaler.c DIR/model.c DIR/optim.c -ldnnl -lopenblas -lm
//   ./scaler STEPS K
//
// 1. scaler_update alone: init_scale 65536; growth_interval - 1 good steps leave the
//    scale, the next one doubles it and resets the tracker; found_inf halves it and
//    resets the tracker; a scale whose growth would be inf does not grow.
// 2. scaler_unscale_and_check on the model's gradients: finite gradients are divided by
//    the scale exactly (a power of two) and found_inf is 0; one inf or NaN anywhere
//    makes it 1.
// 3. STEPS training steps on one random batch as train.c takes them (backward from
//    loss × scale, unscale and check, clip and step unless found_inf, update), where
//    step K injects a huge loss: its d(loss) is multiplied by 1e30, so the float16
//    activation gradients overflow.  Step K must be skipped exactly: found_inf, the
//    parameters and the whole optimizer state (moments, step count) bit for bit as
//    before it, the scale halved and the tracker 0.  Every other step is taken: the
//    parameters move, the step count grows by one and the tracker too, and the scale
//    stays (65536 before K, 32768 after).  Then the same run without the injection,
//    STEPS - 1 steps: a skipped step changes nothing but the scale (not the schedule's
//    position either: both runs take the learning rates of steps 0 .. STEPS - 2), and
//    halving a power-of-two scale changes no rounding of in-range gradients, so the
//    parameters must be the injected run's bit for bit.
// Prints "ok NAME" / "not ok NAME: why" lines; exit status 1 if any failed.
#include "model.h"
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !LOSS_SCALING
#error "scaler.c needs a program generated with --precision=16-mixed"
#endif

static int failures = 0;
static void check(int ok, const char *name, const char *why) {
    if (ok) printf("ok %s\n", name);
    else { printf("not ok %s: %s\n", name, why); failures++; }
}

static uint64_t rng_state = 12345;
static double uniform01(void) {   // splitmix64
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

static void fill_batch(Batch *batch, int B) {
    _Static_assert(sizeof(Batch) == NUM_BATCH_FIELDS * sizeof(void *), "Batch holds one pointer per field");
    for (int i = 0; i < NUM_BATCH_FIELDS; i++) {
        const batch_field_info *f = &model_batch_info[i];
        size_t n = (size_t)B * f->per_sample;
        void *p;
        if (f->is_int) {
            int64_t *q = malloc(n * sizeof *q);
            for (size_t j = 0; j < n; j++) q[j] = (int64_t)(uniform01() * (double)f->high);
            p = q;
        } else {
            real *q = malloc(n * sizeof *q);
            for (size_t j = 0; j < n; j++) q[j] = (real)uniform01();
            p = q;
        }
        ((void **)batch)[i] = p;
    }
}

// A copy of everything a step may change: parameters, optimizer moments and counts.
typedef struct {
    state_t *params, *exp_avg, *exp_avg_sq;
    int64_t steps;
} Snapshot;
static Snapshot snap(const Model *m, const Optimizer *o) {
    Snapshot s;
    size_t bytes = sizeof(state_t) * NUM_PARAMS;
    s.params = malloc(bytes); memcpy(s.params, m->params, bytes);
    s.exp_avg = malloc(bytes); memcpy(s.exp_avg, o->exp_avg, bytes);
    s.exp_avg_sq = malloc(bytes); memcpy(s.exp_avg_sq, o->exp_avg_sq, bytes);
    s.steps = o->steps;
    return s;
}
static void snap_free(Snapshot *s) { free(s->params); free(s->exp_avg); free(s->exp_avg_sq); }

// One training step as train.c takes it (one micro-batch); `inject` multiplies
// d(loss) by 1e30.  Returns found_inf.
static int train_step(Model *m, Optimizer *o, const Batch *batch, int B, int64_t step, int64_t total, int inject) {
    model_forward(m, batch, B, 1);
    real dloss = (real)o->scaler.scale;
    if (inject) dloss *= (real)1e30;
    model_backward(m, batch, B, dloss);
    double lr = lr_at(o->steps, 0, total);
    int found_inf = scaler_unscale_and_check(&o->scaler, m);
    if (!found_inf) {
        clip_gradients(m);
        optimizer_step(o, m, lr, momentum_at(o->steps, total), o->steps);
        o->steps++;
    }
    scaler_update(&o->scaler, found_inf);
    model_zero_grad(m);
    m->step = (uint64_t)(step + 1);
    return found_inf;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 8, K = argc > 2 ? atoi(argv[2]) : 3;
    if (steps < 2 || K < 0 || K >= steps - 1) { fprintf(stderr, "usage: scaler STEPS K (0 <= K < STEPS - 1)\n"); return 2; }
    char why[512];

    // 1. scaler_update
    GradScaler s;
    scaler_init(&s);
    int ok = s.scale == 65536.0f && s.growth_tracker == 0;
    check(ok, "scaler_init_65536", "init_scale is not 65536");
    for (int i = 0; i < 1999; i++) scaler_update(&s, 0);
    snprintf(why, sizeof why, "after 1999 good steps: scale %g, tracker %lld", s.scale, (long long)s.growth_tracker);
    check(s.scale == 65536.0f && s.growth_tracker == 1999, "scaler_no_growth_before_interval", why);
    scaler_update(&s, 0);
    snprintf(why, sizeof why, "after 2000 good steps: scale %g, tracker %lld", s.scale, (long long)s.growth_tracker);
    check(s.scale == 131072.0f && s.growth_tracker == 0, "scaler_growth_at_interval", why);
    for (int i = 0; i < 7; i++) scaler_update(&s, 0);
    scaler_update(&s, 1);
    snprintf(why, sizeof why, "after found_inf: scale %g, tracker %lld", s.scale, (long long)s.growth_tracker);
    check(s.scale == 65536.0f && s.growth_tracker == 0, "scaler_backoff", why);
    s.scale = 0x1p127f; s.growth_tracker = 1999;
    scaler_update(&s, 0);
    check(s.scale == 0x1p127f && s.growth_tracker == 0, "scaler_never_grows_to_inf", "2^127 grew");

    // 2. unscale and check on the model's gradients
    Model m;
    if (model_alloc(&m)) { fprintf(stderr, "scaler: out of memory\n"); return 2; }
    scaler_init(&s);
    for (size_t i = 0; i < NUM_PARAMS; i++) m.grads[i] = (state_t)((double)(i % 1000) - 500.0) * 65536.0f;
    int found = scaler_unscale_and_check(&s, &m);
    ok = found == 0;
    for (size_t i = 0; i < NUM_PARAMS && ok; i++) ok = m.grads[i] == (state_t)((double)(i % 1000) - 500.0);
    check(ok, "unscale_exact_and_finite", "finite gradients were not divided by the scale exactly, or found_inf was set");
    size_t where[] = { 0, NUM_PARAMS / 2, NUM_PARAMS - 1 };
    ok = 1;
    for (int k = 0; k < 3; k++) {
        // (a cleared arena: model_zero_grad leaves what the next backward stores in place)
        memset(m.grads, 0, sizeof(state_t) * NUM_PARAMS);
        m.grads[where[k]] = k == 1 ? (state_t)NAN : (state_t)INFINITY;
        ok &= scaler_unscale_and_check(&s, &m) == 1;
    }
    check(ok, "unscale_finds_inf_and_nan", "an inf or NaN gradient was not found");

    // 3. training with one injected overflow
    int B = BATCH_MAX < 32 ? BATCH_MAX : 32;
    Batch batch;
    fill_batch(&batch, B);
    Optimizer o;
    if (optimizer_alloc(&o)) { fprintf(stderr, "scaler: out of memory\n"); return 2; }
    model_init(&m, 7);
    memset(m.grads, 0, sizeof(state_t) * NUM_PARAMS);   // as model_alloc left it (part 2 wrote inf and NaN)
    model_zero_grad(&m);
    int taken_ok = 1, skip_ok = 1;
    float scale_before_k = 0;
    for (int t = 0; t < steps; t++) {
        Snapshot before = snap(&m, &o);
        float scale = o.scaler.scale;
        int64_t tracker = o.scaler.growth_tracker;
        int inf = train_step(&m, &o, &batch, B, t, steps, t == K);
        int same_p = !memcmp(before.params, m.params, sizeof(state_t) * NUM_PARAMS);
        int same_o = !memcmp(before.exp_avg, o.exp_avg, sizeof(state_t) * NUM_PARAMS) &&
                     !memcmp(before.exp_avg_sq, o.exp_avg_sq, sizeof(state_t) * NUM_PARAMS);
        printf("# step %d: found_inf %d, scale %g -> %g, tracker %lld, optimizer steps %lld\n", t, inf, scale,
               o.scaler.scale, (long long)o.scaler.growth_tracker, (long long)o.steps);
        if (t == K) {
            scale_before_k = scale;
            snprintf(why, sizeof why, "step %d (injected): found_inf %d, parameters %s, optimizer state %s, steps %lld -> %lld, scale %g -> %g, tracker %lld",
                     t, inf, same_p ? "kept" : "CHANGED", same_o ? "kept" : "CHANGED", (long long)before.steps, (long long)o.steps,
                     scale, o.scaler.scale, (long long)o.scaler.growth_tracker);
            skip_ok = inf && same_p && same_o && o.steps == before.steps && o.scaler.scale == scale * 0.5f &&
                      o.scaler.growth_tracker == 0;
            check(skip_ok, "injected_overflow_skips_the_step_and_halves_the_scale", why);
        } else if (inf || same_p || o.steps != before.steps + 1 || o.scaler.scale != scale ||
                   o.scaler.growth_tracker != tracker + 1) {
            if (taken_ok) {
                snprintf(why, sizeof why, "step %d: found_inf %d, parameters %s, steps %lld -> %lld, scale %g -> %g, tracker %lld -> %lld",
                         t, inf, same_p ? "unchanged" : "moved", (long long)before.steps, (long long)o.steps, scale,
                         o.scaler.scale, (long long)tracker, (long long)o.scaler.growth_tracker);
                check(0, "other_steps_are_taken_and_keep_the_scale", why);
            }
            taken_ok = 0;
        }
        snap_free(&before);
    }
    if (taken_ok) check(1, "other_steps_are_taken_and_keep_the_scale", "");
    snprintf(why, sizeof why, "scale %g at the end, want %g", o.scaler.scale, scale_before_k * 0.5f);
    check(o.scaler.scale == scale_before_k * 0.5f && o.steps == steps - 1, "scale_stays_halved", why);

    // the same run without the injection, one step shorter
    Model m2;
    Optimizer o2;
    if (model_alloc(&m2) || optimizer_alloc(&o2)) { fprintf(stderr, "scaler: out of memory\n"); return 2; }
    model_init(&m2, 7);
    model_zero_grad(&m2);
    for (int t = 0; t < steps - 1; t++) train_step(&m2, &o2, &batch, B, t, steps, 0);
    double num = 0, den = 0;
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        double a = m.params[i], b = m2.params[i];
        num = fmax(num, fabs(a - b));
        den = fmax(den, fabs(b));
    }
    snprintf(why, sizeof why, "max |skipped run - plain run| / max |plain run| = %.3g", num / den);
    printf("# %s (%s)\n", why, num == 0 ? "bit for bit" : "not bit for bit");
    check(num == 0 && o2.steps == o.steps, "skipped_step_changes_nothing_but_the_scale", why);
    model_free(&m);
    model_free(&m2);
    return failures ? 1 : 0;
}
