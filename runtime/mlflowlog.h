#ifndef LOOM_MLFLOWLOG_H
#define LOOM_MLFLOWLOG_H
// A run in MLflow's file store, the `mlruns/` directory `mlflow ui` opens as it is:
//
//   mlruns/0/meta.yaml                     the Default experiment (made if missing, as
//                                          MLflow's FileStore does on first use)
//   mlruns/<exp id>/meta.yaml              the experiment, found by name or created
//   mlruns/<exp id>/<run id>/meta.yaml     run id, name, status, start/end times, ...
//   .../<run id>/params/<key>              one value, no newline
//   .../<run id>/tags/<key>                one value, no newline
//   .../<run id>/metrics/<key>             lines "<ms since epoch> <value> <step>"
//   .../<run id>/artifacts/                files copied in by mlflowlog_artifact
//
// Keys holding '/' are subdirectories (as MLflow writes them). Metric lines are kept in
// memory and appended by mlflowlog_flush (the caller decides when) and mlflowlog_close.
// The run's status is RUNNING while it trains: a run killed outright stays RUNNING, as
// MLflow leaves it; mlflowlog_close writes FINISHED, FAILED or KILLED and the end time.
// Opening an existing run id (a resumed run) continues it: its status is RUNNING again
// and metric lines past the step it resumes from (logged after its last checkpoint, by
// the run that was killed) are dropped, so the store holds one history.
//
// MLflow's SQL store (tracking_uri "sqlite:///PATH"): mlflowlog_open_sqlite, in
// runtime/mlflowdb.c (only a program with such a logger compiles it and links
// libsqlite3), writes the same run into MLflow's tables; params, tags, metrics and the
// run's end go through the same calls, artifacts to the run's artifact directory.
#include <stdint.h>

#include "sbuf.h"

#define MLFLOWLOG_ERR_LEN 512

enum { MLFLOW_RUNNING = 1, MLFLOW_FINISHED = 3, MLFLOW_FAILED = 4, MLFLOW_KILLED = 5 };

typedef struct { char *key; sbuf lines; } mlflowlog_metric;

// the SQL store's calls (runtime/mlflowdb.c), NULL for the file store: mlflowlog.c calls
// them through these pointers, so a program without a SQL store does not link libsqlite3
struct mlflowlog;
typedef struct {
    int (*put)(struct mlflowlog *m, const char *table, const char *key, const char *value);   // params, tags
    int (*flush)(struct mlflowlog *m);
    int (*end)(struct mlflowlog *m, int status, int64_t end_ms);   // the run's status and end, then closed
} mlflowlog_sql;

typedef struct mlflowlog {
    char *run_dir;              // mlruns/<exp id>/<run id> (the SQL store: the run's artifact root's)
    char experiment_id[32];
    char run_id[33];
    char *run_name;
    char *artifact_uri;
    int64_t start_ms;
    mlflowlog_metric *metrics; int nmetrics, cap_metrics;
    const mlflowlog_sql *sql;   // the SQL store's calls; NULL: the file store
    void *db;                   // the SQL store's connection
    char err[MLFLOWLOG_ERR_LEN];
} mlflowlog;

// Opens run `run_id` (NULL or "": a new run) in experiment `experiment` of the store at
// `store_dir` (made if missing; an absolute path is best, the artifact URIs name it).
// resume_step >= 0 with an existing run: drops its metric lines past that step.
int mlflowlog_open(mlflowlog *m, const char *store_dir, const char *experiment, const char *run_name,
                   const char *run_id, int64_t resume_step, int64_t now_ms);
// The same run in MLflow's SQL store, the SQLite database at `db_path` (made with
// MLflow's schema at alembic revision MLFLOWDB_SCHEMA if missing; one at another
// revision is refused); artifacts go to <artifact_root>/<exp id>/<run id>/artifacts, as
// MLflow's SqlAlchemyStore places them.  runtime/mlflowdb.c.
#define MLFLOWDB_SCHEMA "0584bdc529eb"
int mlflowlog_open_sqlite(mlflowlog *m, const char *db_path, const char *artifact_root, const char *experiment,
                          const char *run_name, const char *run_id, int64_t resume_step, int64_t now_ms);
int mlflowlog_param(mlflowlog *m, const char *key, const char *value);
int mlflowlog_tag(mlflowlog *m, const char *key, const char *value);
int mlflowlog_metric_log(mlflowlog *m, const char *key, double value, int64_t step, int64_t ts_ms);
// Copies the file at src to artifacts/<name> (name may hold '/').
int mlflowlog_artifact(mlflowlog *m, const char *src, const char *name);
// The git commit (40 hex digits) of the repository holding `path` (a file or directory), read from
// .git as git does (HEAD, a branch's loose ref or packed-refs; a worktree's .git file and
// its commondir): 0, or -1 where the file is in no repository (out is then "").  What a
// run tags as mlflow.source.git.commit, as MLflow does for a script in a git checkout.
int mlflowlog_git_commit(const char *path, char *out, size_t len);
int mlflowlog_flush(mlflowlog *m);
// for runtime/mlflowdb.c: m->err set from a format (returns -1); a directory and its
// parents; a new run id (32 hex digits, uuid4)
int mlflowlog_errf(mlflowlog *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mlflowlog_mkdir_p(mlflowlog *m, const char *path);
int mlflowlog_new_run_id(mlflowlog *m, char *id);
// Flushes, writes the final status and end time to meta.yaml, and frees.
int mlflowlog_close(mlflowlog *m, int status, int64_t end_ms);

#endif
