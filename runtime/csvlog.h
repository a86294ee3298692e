#ifndef LOOM_CSVLOG_H
#define LOOM_CSVLOG_H
// Metrics as Lightning's CSVLogger writes them, so that the same notebooks and scripts
// read loom runs and Lightning runs alike:
//
//   root_dir/name/version_N/metrics.csv    one row per log call; the columns are every
//                                          key ever logged, sorted (as Lightning's
//                                          _ExperimentWriter keeps them), cells of keys
//                                          not in a row left empty; CRLF line ends, as
//                                          Python's csv module writes
//   root_dir/name/version_N/hparams.yaml   the hyperparameters, keys sorted
//
// N is the next free version (one past the largest version_* already there). Rows are
// kept in memory and written every `flush_every` steps (when (step + 1) % flush_every
// == 0, Lightning's rule), on csvlog_save and on csvlog_close. When a new key appears
// the file is rewritten with the wider header, as Lightning does. Floats are written
// as Python's repr() writes them (shortest text that reads back to the same double).
#include <stddef.h>
#include <stdint.h>

#define CSVLOG_ERR_LEN 512

typedef struct { int key; int is_int; double f; int64_t i; } csvlog_cell;
typedef struct { int ncells; csvlog_cell *cells; } csvlog_row;
typedef struct { char *key; char *text; } csvlog_hparam;   // text already in YAML

typedef struct {
    char *dir;                      // root_dir/name/version_N
    int version;
    int flush_every;
    char **keys; int nkeys, cap_keys;             // in order of first appearance
    int nkeys_on_disk, file_written;              // header width of metrics.csv on disk
    csvlog_row *rows; int64_t nrows, cap_rows;    // rows not yet written
    csvlog_hparam *hparams; int nhparams, cap_hparams;
    int hparams_changed;                          // since hparams.yaml was last written
    char err[CSVLOG_ERR_LEN];
} csvlog;

// Creates root_dir/name/version_N (version < 0: the next free N) into dir; returns N,
// or -1 with the reason in err (CSVLOG_ERR_LEN bytes). TensorBoard's logger uses it too.
int csvlog_version_dir(const char *root_dir, const char *name, int version, char *dir, size_t len, char *err);
// Creates root_dir/name/version_N (version < 0: the next free N). name "" logs
// straight into root_dir/version_N. flush_every <= 0 means Lightning's default, 100.
int csvlog_open(csvlog *log, const char *root_dir, const char *name, int version, int flush_every);
// One row: step, epoch (epoch < 0: no epoch cell) and n metrics.
int csvlog_log(csvlog *log, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n);
int csvlog_log1(csvlog *log, int64_t step, int64_t epoch, const char *key, double value);
// Hyperparameters for hparams.yaml (written at the next save, and only when changed).
int csvlog_hparam_str(csvlog *log, const char *key, const char *value);
int csvlog_hparam_i64(csvlog *log, const char *key, int64_t value);
int csvlog_hparam_f64(csvlog *log, const char *key, double value);
int csvlog_hparam_bool(csvlog *log, const char *key, int value);
// Writes pending rows and hparams.yaml now.
int csvlog_save(csvlog *log);
// Saves and frees. Returns the save's result.
int csvlog_close(csvlog *log);

// A double as Python's repr() writes it: "0.1", "1.0", "1e-05", "1.5e+16", "nan", "-inf".
// buf needs 32 bytes.
char *csvlog_format_float(char *buf, double v);

#endif
