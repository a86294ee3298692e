// The run's loggers. See runlog.h.
#include "runlog.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static runlog *open_log;   // what the exit handler closes

static int errf(runlog *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, RUNLOG_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

double runlog_wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void close_at_exit(void) {
    if (!open_log) return;
    runlog *r = open_log;
    runlog_close(r, MLFLOW_FAILED);   // exit() before runlog_close: the program failed
}

void runlog_init(runlog *r, double flush_seconds) {
    memset(r, 0, sizeof *r);
    r->flush_seconds = flush_seconds;
    r->last_flush = mono();
    if (!open_log) atexit(close_at_exit);
    open_log = r;
}

#define ADD(kind, count, everyv)                                                     \
    if (r->count == RUNLOG_MAX) return errf(r, "more than %d loggers of a kind", RUNLOG_MAX); \
    r->kind[r->count] = x; r->everyv[r->count] = every > 0 ? every : 1; r->count++;  \
    return 0;
int runlog_add_csv(runlog *r, csvlog *x, int every) { ADD(csv, ncsv, csv_every) }
int runlog_add_tb(runlog *r, tblog *x, int every) { ADD(tb, ntb, tb_every) }
int runlog_add_mlflow(runlog *r, mlflowlog *x, int every) { ADD(ml, nml, ml_every) }

int runlog_flush(runlog *r) {
    r->last_flush = mono();
    for (int i = 0; i < r->ncsv; i++)
        if (csvlog_save(r->csv[i])) return errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++)
        if (tblog_flush(r->tb[i])) return errf(r, "%s", r->tb[i]->err);
    for (int i = 0; i < r->nml; i++)
        if (mlflowlog_flush(r->ml[i])) return errf(r, "%s", r->ml[i]->err);
    return 0;
}

// One row to the loggers whose interval it meets (all: every = 1).
static int row(runlog *r, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n, int all) {
    double wall = -1;
    int64_t ms = 0;
    for (int i = 0; i < r->ncsv; i++)
        if ((all || step % r->csv_every[i] == 0) && csvlog_log(r->csv[i], step, epoch, keys, values, n))
            return errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++) {
        if (!(all || step % r->tb_every[i] == 0)) continue;
        if (wall < 0) wall = runlog_wall_time();
        if (tblog_scalars(r->tb[i], step, wall, keys, values, n)) return errf(r, "%s", r->tb[i]->err);
    }
    for (int i = 0; i < r->nml; i++) {
        if (!(all || step % r->ml_every[i] == 0)) continue;
        if (wall < 0) wall = runlog_wall_time();
        ms = (int64_t)(wall * 1000);
        for (int k = 0; k < n; k++)
            if (mlflowlog_metric_log(r->ml[i], keys[k], values[k], step, ms)) return errf(r, "%s", r->ml[i]->err);
        if (epoch >= 0 && mlflowlog_metric_log(r->ml[i], "epoch", (double)epoch, step, ms)) return errf(r, "%s", r->ml[i]->err);
    }
    if (mono() - r->last_flush >= r->flush_seconds) return runlog_flush(r);
    return 0;
}

int runlog_step(runlog *r, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n, int force) {
    return row(r, step, epoch, keys, values, n, force);
}

int runlog_epoch(runlog *r, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n) {
    return row(r, step, epoch, keys, values, n, 1);
}

int runlog_hparam_str(runlog *r, const char *key, const char *value) {
    for (int i = 0; i < r->ncsv; i++)
        if (csvlog_hparam_str(r->csv[i], key, value)) return errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++)
        if (tblog_hparam_str(r->tb[i], key, value)) return errf(r, "%s", r->tb[i]->err);
    for (int i = 0; i < r->nml; i++)
        if (mlflowlog_param(r->ml[i], key, value)) return errf(r, "%s", r->ml[i]->err);
    return 0;
}

int runlog_hparam_i64(runlog *r, const char *key, int64_t value) {
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, value);
    for (int i = 0; i < r->ncsv; i++)
        if (csvlog_hparam_i64(r->csv[i], key, value)) return errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++)   // (HParams values are numbers: doubles)
        if (tblog_hparam_f64(r->tb[i], key, (double)value)) return errf(r, "%s", r->tb[i]->err);
    for (int i = 0; i < r->nml; i++)
        if (mlflowlog_param(r->ml[i], key, text)) return errf(r, "%s", r->ml[i]->err);
    return 0;
}

int runlog_hparam_f64(runlog *r, const char *key, double value) {
    char text[40];
    csvlog_format_float(text, value);
    for (int i = 0; i < r->ncsv; i++)
        if (csvlog_hparam_f64(r->csv[i], key, value)) return errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++)
        if (tblog_hparam_f64(r->tb[i], key, value)) return errf(r, "%s", r->tb[i]->err);
    for (int i = 0; i < r->nml; i++)
        if (mlflowlog_param(r->ml[i], key, text)) return errf(r, "%s", r->ml[i]->err);
    return 0;
}

int runlog_close(runlog *r, int mlflow_status) {
    if (open_log == r) open_log = NULL;
    int rc = 0;
    int64_t end_ms = (int64_t)(runlog_wall_time() * 1000);
    for (int i = 0; i < r->ncsv; i++)
        if (csvlog_close(r->csv[i]) && !rc) rc = errf(r, "%s", r->csv[i]->err);
    for (int i = 0; i < r->ntb; i++) {   // the HParams session ends as the MLflow run does: a failure only on an error
        int status = mlflow_status == MLFLOW_FAILED ? TBLOG_STATUS_FAILURE : TBLOG_STATUS_SUCCESS;
        if (tblog_end_session(r->tb[i], runlog_wall_time(), status) && !rc) rc = errf(r, "%s", r->tb[i]->err);
        if (tblog_close(r->tb[i]) && !rc) rc = errf(r, "%s", r->tb[i]->err);
    }
    for (int i = 0; i < r->nml; i++)
        if (mlflowlog_close(r->ml[i], mlflow_status, end_ms) && !rc) rc = errf(r, "%s", r->ml[i]->err);
    r->ncsv = r->ntb = r->nml = 0;
    return rc;
}
