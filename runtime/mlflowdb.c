// MLflow's SQL store in a SQLite database (tracking_uri "sqlite:///PATH"). See mlflowlog.h.
//
// The database holds MLflow's schema at alembic revision MLFLOWDB_SCHEMA (MLflow 2.x's
// last; MLflow 3 upgrades it with `mlflow db upgrade sqlite:///PATH`): a new file gets
// every table of that revision (the tracking tables this logger writes, and the model
// registry, dataset and trace tables MLflow expects beside them), one at another revision
// is refused.  A run is what MLflow's SqlAlchemyStore writes: the experiment by name
// (made once, then reused; Default, id 0, made with the schema), a `runs` row (status
// RUNNING, then FINISHED, FAILED or KILLED with its end time), `params`, `tags`,
// `metrics` (a NaN stored as 0 with is_nan = 1, an infinity as ±DBL_MAX, as MLflow
// stores them) and `latest_metrics` (per key, the value of the largest (step,
// timestamp, value)).  Every flush is one transaction.
#include "mlflowlog.h"

#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sqlite3 *db_of(mlflowlog *m) { return (sqlite3 *)m->db; }

// one line naming the database and SQLite's message
static int sql_fail(mlflowlog *m, const char *what) {
    const char *file = sqlite3_db_filename(db_of(m), "main");
    return mlflowlog_errf(m, "%s: %s: %s", file && *file ? file : "MLflow database", what, sqlite3_errmsg(db_of(m)));
}

static int exec(mlflowlog *m, const char *sql) {
    return sqlite3_exec(db_of(m), sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : sql_fail(m, sql);
}

// A prepared statement with its arguments bound: "t" text, "i" int64, "d" double, "n" NULL.
static sqlite3_stmt *prepare(mlflowlog *m, const char *sql, const char *types, ...) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db_of(m), sql, -1, &st, NULL) != SQLITE_OK) { sql_fail(m, sql); return NULL; }
    va_list ap;
    va_start(ap, types);
    int rc = SQLITE_OK;
    for (int i = 0; types[i] && rc == SQLITE_OK; i++) {
        switch (types[i]) {
        case 't': rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT); break;
        case 'i': rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t)); break;
        case 'd': rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double)); break;
        default: rc = sqlite3_bind_null(st, i + 1); break;
        }
    }
    va_end(ap);
    if (rc != SQLITE_OK) { sql_fail(m, sql); sqlite3_finalize(st); return NULL; }
    return st;
}

// runs a prepared statement to its end (a statement that returns no rows, or whose rows
// are not wanted)
static int run(mlflowlog *m, sqlite3_stmt *st) {
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
    int bad = rc != SQLITE_DONE ? sql_fail(m, sqlite3_sql(st)) : 0;
    sqlite3_finalize(st);
    return bad;
}

// MLflow's tables at revision MLFLOWDB_SCHEMA, as its migrations leave them in SQLite
// (written from its migration scripts: the tracking tables, the model registry's, the
// datasets' and the traces'), with its indexes on run_uuid and its Default experiment.
static const char SCHEMA[] =
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));"
    "CREATE TABLE experiments (experiment_id INTEGER NOT NULL, name VARCHAR(256) NOT NULL, artifact_location VARCHAR(256),"
    " lifecycle_stage VARCHAR(32), creation_time BIGINT, last_update_time BIGINT, CONSTRAINT experiment_pk PRIMARY KEY (experiment_id),"
    " UNIQUE (name), CONSTRAINT experiments_lifecycle_stage CHECK (lifecycle_stage IN ('active', 'deleted')));"
    "CREATE TABLE experiment_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), experiment_id INTEGER NOT NULL,"
    " CONSTRAINT experiment_tag_pk PRIMARY KEY (key, experiment_id), FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));"
    "CREATE TABLE runs (run_uuid VARCHAR(32) NOT NULL, name VARCHAR(250), source_type VARCHAR(20), source_name VARCHAR(500),"
    " entry_point_name VARCHAR(50), user_id VARCHAR(256), status VARCHAR(9), start_time BIGINT, end_time BIGINT,"
    " source_version VARCHAR(50), lifecycle_stage VARCHAR(20), artifact_uri VARCHAR(200), experiment_id INTEGER, deleted_time BIGINT,"
    " CONSTRAINT run_pk PRIMARY KEY (run_uuid), FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id),"
    " CONSTRAINT runs_lifecycle_stage CHECK (lifecycle_stage IN ('active', 'deleted')),"
    " CONSTRAINT source_type CHECK (source_type IN ('NOTEBOOK', 'JOB', 'LOCAL', 'UNKNOWN', 'PROJECT')),"
    " CHECK (status IN ('SCHEDULED', 'FAILED', 'FINISHED', 'RUNNING', 'KILLED')));"
    "CREATE TABLE params (key VARCHAR(250) NOT NULL, value VARCHAR(8000) NOT NULL, run_uuid VARCHAR(32) NOT NULL,"
    " CONSTRAINT param_pk PRIMARY KEY (key, run_uuid), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));"
    "CREATE TABLE tags (key VARCHAR(250) NOT NULL, value VARCHAR(8000), run_uuid VARCHAR(32) NOT NULL,"
    " CONSTRAINT tag_pk PRIMARY KEY (key, run_uuid), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));"
    "CREATE TABLE metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL, run_uuid VARCHAR(32) NOT NULL,"
    " step BIGINT DEFAULT '0' NOT NULL, is_nan BOOLEAN DEFAULT '0' NOT NULL,"
    " CONSTRAINT metric_pk PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan),"
    " FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid), CHECK (is_nan IN (0, 1)));"
    "CREATE TABLE latest_metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT, step BIGINT NOT NULL,"
    " is_nan BOOLEAN NOT NULL, run_uuid VARCHAR(32) NOT NULL, CONSTRAINT latest_metric_pk PRIMARY KEY (key, run_uuid),"
    " FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid), CHECK (is_nan IN (0, 1)));"
    "CREATE INDEX index_metrics_run_uuid ON metrics (run_uuid);"
    "CREATE INDEX index_latest_metrics_run_uuid ON latest_metrics (run_uuid);"
    "CREATE INDEX index_params_run_uuid ON params (run_uuid);"
    "CREATE INDEX index_tags_run_uuid ON tags (run_uuid);"
    "CREATE TABLE registered_models (name VARCHAR(256) NOT NULL, creation_time BIGINT, last_updated_time BIGINT,"
    " description VARCHAR(5000), CONSTRAINT registered_model_pk PRIMARY KEY (name), UNIQUE (name));"
    "CREATE TABLE model_versions (name VARCHAR(256) NOT NULL, version INTEGER NOT NULL, creation_time BIGINT,"
    " last_updated_time BIGINT, description VARCHAR(5000), user_id VARCHAR(256), current_stage VARCHAR(20), source VARCHAR(500),"
    " run_id VARCHAR(32), status VARCHAR(20), status_message VARCHAR(500), run_link VARCHAR(500), storage_location VARCHAR(500),"
    " CONSTRAINT model_version_pk PRIMARY KEY (name, version), FOREIGN KEY(name) REFERENCES registered_models (name) ON UPDATE CASCADE);"
    "CREATE TABLE registered_model_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), name VARCHAR(256) NOT NULL,"
    " CONSTRAINT registered_model_tag_pk PRIMARY KEY (key, name), FOREIGN KEY(name) REFERENCES registered_models (name) ON UPDATE CASCADE);"
    "CREATE TABLE model_version_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), name VARCHAR(256) NOT NULL, version INTEGER NOT NULL,"
    " CONSTRAINT model_version_tag_pk PRIMARY KEY (key, name, version),"
    " FOREIGN KEY(name, version) REFERENCES model_versions (name, version) ON UPDATE CASCADE);"
    "CREATE TABLE registered_model_aliases (alias VARCHAR(256) NOT NULL, version INTEGER NOT NULL, name VARCHAR(256) NOT NULL,"
    " CONSTRAINT registered_model_alias_pk PRIMARY KEY (name, alias), CONSTRAINT registered_model_alias_name_fkey"
    " FOREIGN KEY(name) REFERENCES registered_models (name) ON DELETE CASCADE ON UPDATE CASCADE);"
    "CREATE TABLE datasets (dataset_uuid VARCHAR(36) NOT NULL, experiment_id INTEGER NOT NULL, name VARCHAR(500) NOT NULL,"
    " digest VARCHAR(36) NOT NULL, dataset_source_type VARCHAR(36) NOT NULL, dataset_source TEXT NOT NULL, dataset_schema TEXT,"
    " dataset_profile TEXT, CONSTRAINT dataset_pk PRIMARY KEY (experiment_id, name, digest),"
    " CONSTRAINT fk_datasets_experiment_id_experiments FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id) ON DELETE CASCADE);"
    "CREATE INDEX index_datasets_dataset_uuid ON datasets (dataset_uuid);"
    "CREATE INDEX index_datasets_experiment_id_dataset_source_type ON datasets (experiment_id, dataset_source_type);"
    "CREATE TABLE inputs (input_uuid VARCHAR(36) NOT NULL, source_type VARCHAR(36) NOT NULL, source_id VARCHAR(36) NOT NULL,"
    " destination_type VARCHAR(36) NOT NULL, destination_id VARCHAR(36) NOT NULL,"
    " CONSTRAINT inputs_pk PRIMARY KEY (source_type, source_id, destination_type, destination_id));"
    "CREATE INDEX index_inputs_input_uuid ON inputs (input_uuid);"
    "CREATE INDEX index_inputs_destination_type_destination_id_source_type ON inputs (destination_type, destination_id, source_type);"
    "CREATE TABLE input_tags (input_uuid VARCHAR(36) NOT NULL, name VARCHAR(255) NOT NULL, value VARCHAR(500) NOT NULL,"
    " CONSTRAINT input_tags_pk PRIMARY KEY (input_uuid, name));"
    "CREATE TABLE trace_info (request_id VARCHAR(50) NOT NULL, experiment_id INTEGER NOT NULL, timestamp_ms BIGINT NOT NULL,"
    " execution_time_ms BIGINT, status VARCHAR(50) NOT NULL, CONSTRAINT trace_info_pk PRIMARY KEY (request_id),"
    " CONSTRAINT fk_trace_info_experiment_id FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));"
    "CREATE INDEX index_trace_info_experiment_id_timestamp_ms ON trace_info (experiment_id, timestamp_ms);"
    "CREATE TABLE trace_tags (key VARCHAR(250) NOT NULL, value VARCHAR(8000), request_id VARCHAR(50) NOT NULL,"
    " CONSTRAINT trace_tag_pk PRIMARY KEY (key, request_id),"
    " CONSTRAINT fk_trace_tags_request_id FOREIGN KEY(request_id) REFERENCES trace_info (request_id) ON DELETE CASCADE);"
    "CREATE INDEX index_trace_tags_request_id ON trace_tags (request_id);"
    "CREATE TABLE trace_request_metadata (key VARCHAR(250) NOT NULL, value VARCHAR(8000), request_id VARCHAR(50) NOT NULL,"
    " CONSTRAINT trace_request_metadata_pk PRIMARY KEY (key, request_id),"
    " CONSTRAINT fk_trace_request_metadata_request_id FOREIGN KEY(request_id) REFERENCES trace_info (request_id) ON DELETE CASCADE);"
    "CREATE INDEX index_trace_request_metadata_request_id ON trace_request_metadata (request_id);"
    "INSERT INTO alembic_version (version_num) VALUES ('" MLFLOWDB_SCHEMA "');";

static const char *STATUS[] = { [MLFLOW_RUNNING] = "RUNNING", [MLFLOW_FINISHED] = "FINISHED",
                                [MLFLOW_FAILED] = "FAILED", [MLFLOW_KILLED] = "KILLED" };

// one int64 or text column of the first row of a query ("" / -1 when there is none)
static int query_text(mlflowlog *m, sqlite3_stmt *st, char *out, size_t len) {
    if (!st) return -1;
    out[0] = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0)) snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    int bad = rc != SQLITE_ROW && rc != SQLITE_DONE ? sql_fail(m, sqlite3_sql(st)) : 0;
    sqlite3_finalize(st);
    return bad;
}

// The schema: made in a new database, checked in an existing one.
static int ensure_schema(mlflowlog *m, const char *artifact_root, int64_t now_ms) {
    char n[32], version[64];
    if (query_text(m, prepare(m, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", ""), n, sizeof n)) return -1;
    if (strcmp(n, "0") == 0) {
        if (exec(m, "BEGIN IMMEDIATE") || exec(m, SCHEMA)) return -1;
        // the Default experiment, as SqlAlchemyStore makes it in a new database
        char loc[PATH_MAX + 64];
        snprintf(loc, sizeof loc, "file://%s/0", artifact_root);
        if (run(m, prepare(m, "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)"
                              " VALUES (0, 'Default', ?, 'active', ?, ?)", "tii", loc, now_ms, now_ms)))
            return -1;
        return exec(m, "COMMIT");
    }
    if (query_text(m, prepare(m, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'", ""), n, sizeof n))
        return -1;
    if (strcmp(n, "1") != 0 ||
        query_text(m, prepare(m, "SELECT version_num FROM alembic_version", ""), version, sizeof version))
        return mlflowlog_errf(m, "%s: not an MLflow database (it has tables but no alembic_version)", sqlite3_db_filename(db_of(m), "main"));
    if (strcmp(version, MLFLOWDB_SCHEMA) != 0)
        return mlflowlog_errf(m, "%s: MLflow schema revision '%s'; loom writes revision '%s' (MLflow 2.x's last): use another database file",
                    sqlite3_db_filename(db_of(m), "main"), version, MLFLOWDB_SCHEMA);
    return 0;
}

static int put(mlflowlog *m, const char *table, const char *key, const char *value) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO %s (key, value, run_uuid) VALUES (?, ?, ?)", table);
    return run(m, prepare(m, sql, "ttt", key, value, m->run_id));
}

// Each buffered metric line "<ms> <value> <step>" (mlflowlog_metric_log's) as a row of
// metrics, and latest_metrics kept at the largest (step, timestamp, value) per key.
static int flush(mlflowlog *m) {
    int any = 0;
    for (int i = 0; i < m->nmetrics; i++) any |= m->metrics[i].lines.n > 0;
    if (!any) return 0;
    if (exec(m, "BEGIN IMMEDIATE")) return -1;
    sqlite3_stmt *ins = prepare(m, "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)", "");
    sqlite3_stmt *latest = prepare(m,
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?1, ?2, ?3, ?5, ?6, ?4)"
        " ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp,"
        " step = excluded.step, is_nan = excluded.is_nan"
        " WHERE (excluded.step, excluded.timestamp, excluded.value) > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)", "");
    int bad = !ins || !latest;
    for (int i = 0; i < m->nmetrics && !bad; i++) {
        sbuf *b = &m->metrics[i].lines;
        for (char *line = b->p; line && *line && !bad;) {
            char *end;
            int64_t ts = strtoll(line, &end, 10);
            double v = strtod(end, &end);
            int64_t step = strtoll(end, &end, 10);
            line = *end == '\n' ? end + 1 : end + strlen(end);
            int is_nan = isnan(v);
            if (is_nan) v = 0;
            else if (isinf(v)) v = v > 0 ? DBL_MAX : -DBL_MAX;
            for (sqlite3_stmt *st = ins; st && !bad; st = st == ins ? latest : NULL) {
                sqlite3_reset(st);
                bad = sqlite3_bind_text(st, 1, m->metrics[i].key, -1, SQLITE_STATIC) || sqlite3_bind_double(st, 2, v) ||
                      sqlite3_bind_int64(st, 3, ts) || sqlite3_bind_text(st, 4, m->run_id, -1, SQLITE_STATIC) ||
                      sqlite3_bind_int64(st, 5, step) || sqlite3_bind_int(st, 6, is_nan) || sqlite3_step(st) != SQLITE_DONE;
                if (bad) sql_fail(m, sqlite3_sql(st));
            }
        }
        b->n = 0;
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(latest);
    if (bad) { sqlite3_exec(db_of(m), "ROLLBACK", NULL, NULL, NULL); return -1; }
    return exec(m, "COMMIT");
}

static int end(mlflowlog *m, int status, int64_t end_ms) {
    int rc = run(m, prepare(m, "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", "tit", STATUS[status], end_ms, m->run_id));
    if (sqlite3_close(db_of(m)) != SQLITE_OK && !rc) rc = mlflowlog_errf(m, "%s: close failed", m->run_dir);
    m->db = NULL;
    return rc;
}

static const mlflowlog_sql SQL = { put, flush, end };

// A run that resumes from step `resume_step`: RUNNING again, without the rows the killed
// run logged past its checkpoint, latest_metrics recomputed from what is left.
static int resume_run(mlflowlog *m, int64_t resume_step) {
    if (exec(m, "BEGIN IMMEDIATE")) return -1;
    if (run(m, prepare(m, "UPDATE runs SET status = 'RUNNING', end_time = NULL WHERE run_uuid = ?", "t", m->run_id))) return -1;
    if (resume_step >= 0) {
        if (run(m, prepare(m, "DELETE FROM metrics WHERE run_uuid = ? AND step > ?", "ti", m->run_id, resume_step)) ||
            run(m, prepare(m, "DELETE FROM latest_metrics WHERE run_uuid = ?", "t", m->run_id)) ||
            run(m, prepare(m,
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                " SELECT key, value, timestamp, step, is_nan, run_uuid FROM metrics AS a WHERE run_uuid = ?1 AND NOT EXISTS"
                " (SELECT 1 FROM metrics AS b WHERE b.run_uuid = ?1 AND b.key = a.key AND"
                "  (b.step, b.timestamp, b.value) > (a.step, a.timestamp, a.value))"
                " GROUP BY key", "t", m->run_id)))
            return -1;
    }
    return exec(m, "COMMIT");
}

int mlflowlog_open_sqlite(mlflowlog *m, const char *db_path, const char *artifact_root, const char *experiment,
                          const char *run_name, const char *run_id, int64_t resume_step, int64_t now_ms) {
    memset(m, 0, sizeof *m);
    char dir[PATH_MAX], root[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", db_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) { *slash = 0; if (mlflowlog_mkdir_p(m, dir)) return -1; }
    if (mlflowlog_mkdir_p(m, artifact_root)) return -1;
    if (!realpath(artifact_root, root)) return mlflowlog_errf(m, "%s: realpath failed", artifact_root);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        mlflowlog_errf(m, "%s: cannot open the MLflow database: %s", db_path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    m->db = db;
    m->sql = &SQL;
    sqlite3_busy_timeout(db, 10000);   // another run writing the same database
    if (exec(m, "PRAGMA foreign_keys = ON") || ensure_schema(m, root, now_ms)) goto fail;
    char exp_id[32] = "", name[1024] = "", start[32] = "";
    int resumed = run_id && *run_id;
    if (resumed) {
        if (strlen(run_id) != 32 || strspn(run_id, "0123456789abcdef") != 32) { mlflowlog_errf(m, "%s: run id '%s' is not 32 hex digits", db_path, run_id); goto fail; }
        snprintf(m->run_id, sizeof m->run_id, "%s", run_id);
        if (query_text(m, prepare(m, "SELECT experiment_id FROM runs WHERE run_uuid = ?", "t", run_id), exp_id, sizeof exp_id)) goto fail;
        if (!exp_id[0]) { mlflowlog_errf(m, "%s: no run '%s'", db_path, run_id); goto fail; }
        if (query_text(m, prepare(m, "SELECT name FROM runs WHERE run_uuid = ?", "t", run_id), name, sizeof name) ||
            query_text(m, prepare(m, "SELECT start_time FROM runs WHERE run_uuid = ?", "t", run_id), start, sizeof start) ||
            resume_run(m, resume_step))
            goto fail;
    } else {
        // the experiment by name, or a new one (its id the next integer, as SQLite assigns it)
        if (exec(m, "BEGIN IMMEDIATE")) goto fail;
        if (query_text(m, prepare(m, "SELECT experiment_id FROM experiments WHERE name = ?", "t", experiment), exp_id, sizeof exp_id)) goto fail;
        if (!exp_id[0]) {
            if (run(m, prepare(m, "INSERT INTO experiments (name, lifecycle_stage, creation_time, last_update_time) VALUES (?, 'active', ?, ?)",
                               "tii", experiment, now_ms, now_ms)))
                goto fail;
            snprintf(exp_id, sizeof exp_id, "%lld", (long long)sqlite3_last_insert_rowid(db));
            char loc[PATH_MAX + 64];
            snprintf(loc, sizeof loc, "file://%s/%s", root, exp_id);
            if (run(m, prepare(m, "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", "ti", loc, (int64_t)atoll(exp_id))))
                goto fail;
        }
        if (mlflowlog_new_run_id(m, m->run_id)) goto fail;
        snprintf(name, sizeof name, "%s", run_name && *run_name ? run_name : m->run_id);
        const char *user = getenv("USER");
        char uri[PATH_MAX + 128];
        snprintf(uri, sizeof uri, "file://%s/%s/%s/artifacts", root, exp_id, m->run_id);
        if (run(m, prepare(m, "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,"
                              " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time)"
                              " VALUES (?, ?, 'LOCAL', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                           "tttiti", m->run_id, name, user && *user ? user : "unknown", now_ms, uri, (int64_t)atoll(exp_id))) ||
            exec(m, "COMMIT"))
            goto fail;
    }
    snprintf(m->experiment_id, sizeof m->experiment_id, "%s", exp_id);
    m->start_ms = start[0] ? strtoll(start, NULL, 10) : now_ms;
    size_t n = strlen(root) + 128;
    m->run_dir = malloc(n);
    m->artifact_uri = malloc(n + 16);
    m->run_name = malloc(strlen(name) + 1);
    if (!m->run_dir || !m->artifact_uri || !m->run_name) { mlflowlog_errf(m, "%s: out of memory", db_path); goto fail; }
    snprintf(m->run_dir, n, "%s/%s/%s", root, m->experiment_id, m->run_id);
    snprintf(m->artifact_uri, n + 16, "file://%s/artifacts", m->run_dir);
    memcpy(m->run_name, name, strlen(name) + 1);
    char art[PATH_MAX + 160];
    snprintf(art, sizeof art, "%s/artifacts", m->run_dir);
    if (mlflowlog_mkdir_p(m, art)) goto fail;
    return put(m, "tags", "mlflow.runName", m->run_name);
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    m->db = NULL;
    m->sql = NULL;   // mlflowlog_close then frees what was allocated
    return -1;
}
