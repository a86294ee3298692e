// step_bench: times one training step of a loom-generated model, the same step the
// generated train.c runs: forward + backward + clip_gradients + optimizer_step +
// zero_grad (a spec with its own train.training_step: model_user_step + zero_grad),
// on one fixed random batch (no data loading).  Generic over specs: it
// only uses the Model API of model.h / optim.h, and is compiled against a generated
// directory and linked with its model.o and optim.o (the kernels are header-only):
//
//   cc $CFLAGS -I GENDIR bench/step_bench.c GENDIR/obj/model.o GENDIR/obj/optim.o GENDIR/obj/threads.o
//      -ldnnl -lopenblas -lm -fopenmp
//
// bench/speed.sh does that for every benchmarked spec.  Usage:
//
//   step_bench [--batch B] [--warmup N] [--steps N] [--seed S] [--label NAME]
//
// Prints one line:
//   loom NAME B=.. threads=.. steps=.. median_ms=.. min_ms=.. mean_ms=.. maxrss_kb=.. loss0=.. lossN=..
// Every step is timed on its own (CLOCK_MONOTONIC; STEP_CLOCK=cpu: CPU time); the median
// is the number to use.
//
// Built with -DSTEP_PROF and a model.c instrumented by bench/prof_model.py, it also
// prints where the step's time goes, op by op (see bench/step_prof.h).
#include "model.h"
#include "optim.h"
#include "threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <omp.h>

#ifdef STEP_PROF
#include "step_prof.h"
#else
#define PROF_MARK(label) ((void)0)
#define PROF_STOP() ((void)0)
#endif

// The Batch struct is NUM_BATCH_FIELDS pointers, in model_batch_info order.
_Static_assert(sizeof(Batch) == NUM_BATCH_FIELDS * sizeof(void *), "Batch is not a plain list of pointers");

// STEP_CLOCK=cpu: the process's CPU time instead (on a loaded machine at 1 thread, the
// work without the time other processes held the core; at more threads it counts spinning)
static double now_ms(void) {
    static int clock_id = -1;
    if (clock_id < 0) {
        const char *c = getenv("STEP_CLOCK");
        clock_id = c && strcmp(c, "cpu") == 0 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
    }
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

#ifdef STEP_PROF
// the hooks of step_prof.h: time between consecutive marks, summed per label over
// a step; every timed step's sums are kept, for a median per label
#define PROF_MAX 256
static const char *prof_label[PROF_MAX];
static double prof_cur_ms[PROF_MAX];   // this step
static double *prof_rows = NULL;       // steps x PROF_MAX, timed steps only
static long prof_nrows = 0, prof_cap = 0;
static int prof_n = 0, prof_cur = -1;
static double prof_t = 0;
int prof_register(const char *label) {
    if (prof_n == PROF_MAX) { fprintf(stderr, "step_bench: too many profile labels\n"); exit(1); }
    prof_label[prof_n] = label;
    return prof_n++;
}
void prof_mark(int id) {
    double t = now_ms();
    if (prof_cur >= 0) prof_cur_ms[prof_cur] += t - prof_t;
    prof_cur = id;
    prof_t = now_ms();   // the clock call itself is not charged to the op
}
void prof_stop(void) { prof_mark(-1); }
static void prof_start(long steps) {   // called before the first timed step
    prof_cap = steps;
    prof_rows = calloc((size_t)steps * PROF_MAX, sizeof *prof_rows);
    if (!prof_rows) exit(1);
}
static void prof_step_done(void) {
    if (prof_rows && prof_nrows < prof_cap) memcpy(prof_rows + prof_nrows++ * PROF_MAX, prof_cur_ms, sizeof prof_cur_ms);
    memset(prof_cur_ms, 0, sizeof prof_cur_ms);
}
static int cmp_double(const void *a, const void *b);
void prof_print(FILE *f, long steps, double median_step_ms) {
    (void)steps;
    double *col = malloc((size_t)prof_nrows * sizeof *col), med_sum = 0, mean_sum = 0;
    double med[PROF_MAX], mean[PROF_MAX], lo[PROF_MAX];
    for (int i = 0; i < prof_n; i++) {
        mean[i] = 0;
        for (long r = 0; r < prof_nrows; r++) { col[r] = prof_rows[r * PROF_MAX + i]; mean[i] += col[r]; }
        mean[i] /= prof_nrows;
        qsort(col, (size_t)prof_nrows, sizeof *col, cmp_double);
        lo[i] = col[0];
        med[i] = prof_nrows % 2 ? col[prof_nrows / 2] : 0.5 * (col[prof_nrows / 2 - 1] + col[prof_nrows / 2]);
        med_sum += med[i]; mean_sum += mean[i];
    }
    fprintf(f, "per-op breakdown over %ld steps: median, min and mean ms per step of each op (sums %.3f / %.3f ms; median step %.3f ms)\n",
            prof_nrows, med_sum, mean_sum, median_step_ms);
    fprintf(f, "  median ms  share   min ms  mean ms  op\n");
    for (int i = 0; i < prof_n; i++)
        fprintf(f, "  %9.3f  %5.1f%%  %7.3f  %7.3f  %s\n", med[i], 100 * med[i] / med_sum, lo[i], mean[i], prof_label[i]);
    free(col);
}
#endif

// splitmix64: the batch is the same for every run with the same seed
static uint64_t rng_state;
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (rng_next() >> 11) * 0x1.0p-53; }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long arg_long(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) { fprintf(stderr, "step_bench: %s needs a value\n", argv[*i]); exit(2); }
    return strtol(argv[++*i], NULL, 10);
}

int main(int argc, char **argv) {
    threads_setup(argv);   // OpenMP's settings as the generated train.c makes them
    int B = BATCH_MAX;
    long warmup = 10, steps = 50;
    uint64_t seed = 1234;
    const char *label = MODEL_NAME;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch")) B = (int)arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--warmup")) warmup = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--steps")) steps = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--seed")) seed = (uint64_t)arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--label")) { if (i + 1 >= argc) return 2; label = argv[++i]; }
        else { fprintf(stderr, "usage: %s [--batch B] [--warmup N] [--steps N] [--seed S] [--label NAME]\n", argv[0]); return 2; }
    }
    if (B < 1 || B > BATCH_MAX || steps < 1 || warmup < 0) {
        fprintf(stderr, "step_bench: need 1 <= batch <= %d, steps >= 1, warmup >= 0\n", BATCH_MAX);
        return 2;
    }

    // the model, the optimizer and one random batch: floats uniform in [0, 1) (the
    // range of the real data sources), class indices uniform in [0, high)
    Model m;
    Optimizer opt;
    if (model_alloc(&m) || optimizer_alloc(&opt)) { fprintf(stderr, "step_bench: out of memory\n"); return 1; }
    model_init(&m, seed);
    Batch batch;
    void **slots = (void **)&batch;
    rng_state = seed;
    for (int f = 0; f < NUM_BATCH_FIELDS; f++) {
        const batch_field_info *fi = &model_batch_info[f];
        size_t n = (size_t)BATCH_MAX * fi->per_sample;
        if (fi->is_int) {
            int64_t *p = malloc(n * sizeof *p);
            if (!p) return 1;
            for (size_t i = 0; i < n; i++) p[i] = fi->high > 0 ? (int64_t)(rng_next() % (uint64_t)fi->high) : 0;
            slots[f] = p;
        } else {
            real *p = malloc(n * sizeof *p);
            if (!p) return 1;
            for (size_t i = 0; i < n; i++) p[i] = (real)rng_uniform();
            slots[f] = p;
        }
        if (batch_field(&batch, f) != slots[f]) { fprintf(stderr, "step_bench: Batch field %d is not where expected\n", f); return 1; }
    }

    // the loop: the step exactly as train.c runs it (ACCUMULATE = 1)
    long total = warmup + steps;
    double *t = malloc((size_t)steps * sizeof *t);
    double loss0 = NAN, lossN = NAN;
    model_zero_grad(&m);
    for (long s = 0; s < total; s++) {
#ifdef STEP_PROF
        if (s == warmup) prof_start(steps);
#endif
        double t0 = now_ms();
#ifdef LOOM_USER_STEP
        // the spec's train.training_step: its forwards, backwards and optimizer steps
        // in its own order, as train.c calls it
        real loss = model_user_step(&m, &opt, &batch, B, s, 0, total);
#else
        real loss = model_forward(&m, &batch, B, 1);
        model_backward(&m, &batch, B, (real)1);
        PROF_MARK("step: clip_gradients");
        clip_gradients(&m);
        PROF_MARK("step: optimizer_step");
        double lr = lr_at(s, 0, total);
        optimizer_step(&opt, &m, lr, momentum_at(s, total), s);
#endif
        PROF_MARK("step: zero_grad");
        model_zero_grad(&m);
        m.step = (uint64_t)(s + 1);
        PROF_STOP();
#ifdef STEP_PROF
        if (s >= warmup) prof_step_done(); else memset(prof_cur_ms, 0, sizeof prof_cur_ms);
#endif
        double t1 = now_ms();
        if (s >= warmup) t[s - warmup] = t1 - t0;
        if (s == 0) loss0 = loss;
        lossN = loss;
        if (!isfinite(loss)) { fprintf(stderr, "step_bench: loss is %g at step %ld\n", (double)loss, s); return 1; }
    }

    double sum = 0;
    for (long i = 0; i < steps; i++) sum += t[i];
    qsort(t, (size_t)steps, sizeof *t, cmp_double);
    double median = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("loom %s B=%d threads=%d steps=%ld median_ms=%.4f min_ms=%.4f mean_ms=%.4f maxrss_kb=%ld loss0=%.5f lossN=%.5f\n",
           label, B, omp_get_max_threads(), steps, median, t[0], sum / steps, ru.ru_maxrss, (double)loss0, (double)lossN);
#ifdef STEP_PROF
    prof_print(stdout, steps, median);
#endif
    return 0;
}
