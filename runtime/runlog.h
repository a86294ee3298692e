#ifndef LOOM_RUNLOG_H
#define LOOM_RUNLOG_H
// The run's loggers, several at once: the training loop logs each row once here and
// runlog hands it to every logger the spec chose (CSV, TensorBoard, MLflow).
//
// Step rows go to a logger when step % its every_n_steps == 0, or when the caller
// forces it (the last step of a run); epoch rows go to all. Each logger buffers; all are
// flushed when `flush_seconds` have passed since the last flush (checked at each row:
// one clock read), at runlog_close, and at exit: a program that dies (exit() after an
// error) has its rows written and its MLflow run marked FAILED by an atexit handler.
#include <stdint.h>

#include "csvlog.h"
#include "mlflowlog.h"
#include "tblog.h"

#define RUNLOG_MAX 8
#define RUNLOG_ERR_LEN 600

typedef struct {
    csvlog *csv[RUNLOG_MAX]; int csv_every[RUNLOG_MAX]; int ncsv;
    tblog *tb[RUNLOG_MAX]; int tb_every[RUNLOG_MAX]; int ntb;
    mlflowlog *ml[RUNLOG_MAX]; int ml_every[RUNLOG_MAX]; int nml;
    double flush_seconds, last_flush;
    char err[RUNLOG_ERR_LEN];
} runlog;

// Starts an empty set and registers it for the exit handler (one runlog per program).
void runlog_init(runlog *r, double flush_seconds);
// Adds an opened logger (owned by the caller, closed by runlog_close).
int runlog_add_csv(runlog *r, csvlog *c, int every_n_steps);
int runlog_add_tb(runlog *r, tblog *t, int every_n_steps);
int runlog_add_mlflow(runlog *r, mlflowlog *m, int every_n_steps);
// A step's row (force: to every logger, whatever its interval).
int runlog_step(runlog *r, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n, int force);
// An epoch's (or the test's) row, to every logger.
int runlog_epoch(runlog *r, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n);
// Hyperparameters: hparams.yaml of each CSV log, the HParams plugin's session of each
// TensorBoard log, params/ of each MLflow run.
int runlog_hparam_str(runlog *r, const char *key, const char *value);
int runlog_hparam_i64(runlog *r, const char *key, int64_t value);
int runlog_hparam_f64(runlog *r, const char *key, double value);
// Writes what every logger holds.
int runlog_flush(runlog *r);
// Flushes and closes every logger; MLflow runs end with `mlflow_status` (MLFLOW_*).
int runlog_close(runlog *r, int mlflow_status);

double runlog_wall_time(void);   // seconds since the epoch, for event wall times

#endif
