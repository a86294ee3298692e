// The cost of one logged row with all three loggers (CSV, TensorBoard, MLflow) through
// runtime/runlog, in CPU time (so a loaded machine does not inflate it): rows of the
// step's four metrics, every flush the loggers do included (each 5 s and at the close).
//   cc -O2 -D_GNU_SOURCE -Iruntime bench/runlog_bench.c runtime/{runlog,csvlog,tblog,mlflowlog}.c -o runlog_bench
//   ./runlog_bench [ROWS]
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runlog.h"

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    long rows = argc > 1 ? atol(argv[1]) : 100000;
    char dir[] = "/tmp/loom_runlog_bench_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char path[256];
    static csvlog csv;
    static tblog tb;
    static mlflowlog ml;
    runlog r;
    runlog_init(&r, 5.0);
    snprintf(path, sizeof path, "%s/logs", dir);
    if (csvlog_open(&csv, path, "lightning_logs", -1, 100) || runlog_add_csv(&r, &csv, 1)) { fprintf(stderr, "%s\n", csv.err); return 1; }
    snprintf(path, sizeof path, "%s/tb", dir);
    if (tblog_open(&tb, path, runlog_wall_time()) || runlog_add_tb(&r, &tb, 1)) { fprintf(stderr, "%s\n", tb.err); return 1; }
    snprintf(path, sizeof path, "%s/mlruns", dir);
    if (mlflowlog_open(&ml, path, "bench", NULL, NULL, -1, (int64_t)(runlog_wall_time() * 1000)) || runlog_add_mlflow(&r, &ml, 1)) {
        fprintf(stderr, "%s\n", ml.err);
        return 1;
    }
    const char *keys[] = { "train/loss", "lr-AdamW", "train/throughput", "scale" };
    double t0 = cpu_seconds();
    for (long i = 1; i <= rows; i++) {
        double values[] = { 1.0 / (double)i, 1e-3 * (double)(rows - i) / (double)rows, 50000.0 + (double)(i % 97), 65536.0 };
        if (runlog_step(&r, i, i / 430, keys, values, 4, 0)) { fprintf(stderr, "%s\n", r.err); return 1; }
    }
    if (runlog_close(&r, MLFLOW_FINISHED)) { fprintf(stderr, "%s\n", r.err); return 1; }
    double t = cpu_seconds() - t0;
    printf("%ld rows of 4 metrics to CSV + TensorBoard + MLflow: %.2f us of CPU a row\n", rows, 1e6 * t / (double)rows);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
