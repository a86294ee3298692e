// Loader throughput on Fashion-MNIST (60000 training samples, batch 128, shuffled):
// batches/s with and without the prefetch thread, first with nothing to do between
// batches (raw assembly speed), then with a simulated training step (busy-waiting
// `step_us` microseconds), where prefetch should hide batch assembly entirely.
//   build/bench/data_bench [fashion root] [step_us]
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "data.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// A stand-in for forward/backward: spin for us microseconds, touching the batch.
static float fake_step(const data_batch *b, double us) {
    float acc = 0;
    const float *x = b->data[0];
    double end = now() + us * 1e-6;
    while (now() < end) acc += x[0];
    return acc;
}

// batches/s over `epochs` epochs of a fresh loader.
static double run(const dataset *ds, int prefetch, double step_us, int epochs) {
    loader *L;
    data_err err;
    loader_opts o = {.batch_size = 128, .shuffle = 1, .seed = 1, .prefetch = prefetch};
    if (loader_open(&L, ds, &o, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    data_batch b;
    long n = 0;
    volatile float sink = 0;
    double t0 = now();
    for (int e = 0; e < epochs;) {
        int rc = loader_next(L, &b, &err);
        if (rc == DATA_END) { e++; continue; }
        if (rc) { fprintf(stderr, "%s\n", err.msg); exit(1); }
        if (step_us > 0) sink += fake_step(&b, step_us);
        n++;
    }
    double dt = now() - t0;
    loader_close(L);
    (void)sink;
    return n / dt;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
    double step_us = argc > 2 ? atof(argv[2]) : 200;
    dataset train;
    data_err err;
    fashion_opts fo = {.val_split = 0};
    double t0 = now();
    if (fashion_open(root, &fo, &train, NULL, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("fashion_open (train, gzip): %.2f s\n", now() - t0);
    printf("batch 128, %lld samples, %d batches/epoch\n", (long long)train.n, (int)((train.n + 127) / 128));
    run(&train, 0, 0, 1);  // warm-up
    double c0 = cpu_now();
    run(&train, 0, 0, 2);
    printf("assembly CPU time: %.1f us/batch (load-independent)\n", (cpu_now() - c0) * 1e6 / (2 * ((train.n + 127) / 128)));
    printf("no step:          sync %8.0f batches/s   prefetch %8.0f batches/s\n", run(&train, 0, 0, 5), run(&train, 1, 0, 5));
    printf("step %4.0f us:     sync %8.0f batches/s   prefetch %8.0f batches/s   (ideal %.0f)\n", step_us,
           run(&train, 0, step_us, 2), run(&train, 1, step_us, 2), 1e6 / step_us);
    dataset_free(&train);
    return 0;
}
