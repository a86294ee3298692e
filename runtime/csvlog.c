// Lightning-compatible CSV metrics. See csvlog.h.
#include "csvlog.h"
#include "sbuf.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int errf(csvlog *log, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log->err, CSVLOG_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

// A failed system call: the file and the reason for the user, the source line for us.
#define SYSFAIL(log, path, call) \
    errf(log, "%s: %s failed: %s (%s:%d)", path, call, strerror(errno), __FILE__, __LINE__)

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

// Grows *p (of *cap elements of size sz) to hold n + 1.
static int grow(void **p, int64_t *cap, int64_t n, size_t sz) {
    if (n < *cap) return 0;
    int64_t c = *cap ? 2 * *cap : 16;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return -1;
    *p = q; *cap = c;
    return 0;
}

char *csvlog_format_float(char *buf, double v) {
    if (isnan(v)) { strcpy(buf, "nan"); return buf; }
    if (isinf(v)) { strcpy(buf, v < 0 ? "-inf" : "inf"); return buf; }
    // Shortest significant digits that read back to v: what repr() finds with Gay's
    // algorithm, found here by a binary search over 1..17 digits (if k digits read
    // back, so do k + 1: more digits only come closer to v). 17 always do.
    char e[40];
    int lo = 0, hi = 16;   // precisions (digits - 1)
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        snprintf(e, sizeof e, "%.*e", mid, v);
        if (strtod(e, NULL) == v) hi = mid; else lo = mid + 1;
    }
    snprintf(e, sizeof e, "%.*e", lo, v);
    // e is "-d.ddde+XX": split into sign, digits and decimal exponent
    const char *s = e;
    int neg = *s == '-';
    if (neg) s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp10 = atoi(s + 1);
    int decpt = exp10 + 1;   // digits[0] is at position decpt of "0.ddd" notation
    char *o = buf;
    if (neg) *o++ = '-';
    if (decpt > -4 && decpt <= 16) {   // repr's rule for fixed notation: 1e-04 <= |v| < 1e16
        if (decpt <= 0) {
            *o++ = '0'; *o++ = '.';
            for (int k = 0; k < -decpt; k++) *o++ = '0';
            for (int k = 0; k < nd; k++) *o++ = digits[k];
        } else if (decpt >= nd) {
            for (int k = 0; k < nd; k++) *o++ = digits[k];
            for (int k = nd; k < decpt; k++) *o++ = '0';
            *o++ = '.'; *o++ = '0';
        } else {
            for (int k = 0; k < nd; k++) { if (k == decpt) *o++ = '.'; *o++ = digits[k]; }
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) { *o++ = '.'; for (int k = 1; k < nd; k++) *o++ = digits[k]; }
        sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return buf;
}

// ---------------------------------------------------------------------------------
// opening: root_dir/name/version_N

static int mkdir_p(csvlog *log, const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return errf(log, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return SYSFAIL(log, buf, "mkdir");
            *p = '/';
        }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return SYSFAIL(log, buf, "mkdir");
    return 0;
}

// One past the largest version_N in dir, as Lightning's _get_next_version.
static int next_version(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int next = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "version_", 8) != 0) continue;
        char *end;
        long v = strtol(e->d_name + 8, &end, 10);
        if (end == e->d_name + 8 || *end || v < 0 || v >= 1000000000) continue;   // not one of ours
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode) && v + 1 > next) next = (int)v + 1;
    }
    closedir(d);
    return next;
}

int csvlog_version_dir(const char *root_dir, const char *name, int version, char *dir, size_t len, char *err) {
    csvlog tmp;   // for its error text
    tmp.err[0] = 0;
    if (!dir || len == 0) { snprintf(err, CSVLOG_ERR_LEN, "csvlog_version_dir: no room for the path"); return -1; }
    char parent[4096];
    int rc = 0;
    if (name && *name) snprintf(parent, sizeof parent, "%s/%s", root_dir, name);
    else snprintf(parent, sizeof parent, "%s", root_dir);
    if (mkdir_p(&tmp, parent)) rc = -1;
    else if (version >= 0) {
        snprintf(dir, len, "%s/version_%d", parent, version);
        if (mkdir(dir, 0777) != 0 && errno != EEXIST) rc = SYSFAIL(&tmp, dir, "mkdir");
    } else {
        // mkdir, not mkdir -p: two runs starting together each get their own version
        for (version = next_version(parent);; version++) {
            snprintf(dir, len, "%s/version_%d", parent, version);
            if (mkdir(dir, 0777) == 0) break;
            if (errno != EEXIST) { rc = SYSFAIL(&tmp, dir, "mkdir"); break; }
        }
    }
    if (rc) { snprintf(err, CSVLOG_ERR_LEN, "%s", tmp.err); return -1; }
    return version;
}

int csvlog_open(csvlog *log, const char *root_dir, const char *name, int version, int flush_every) {
    memset(log, 0, sizeof *log);
    log->flush_every = flush_every > 0 ? flush_every : 100;
    char dir[4200];
    version = csvlog_version_dir(root_dir, name, version, dir, sizeof dir, log->err);
    if (version < 0) return -1;
    log->version = version;
    if (!(log->dir = xstrdup(dir))) return errf(log, "%s: out of memory", dir);
    return 0;
}

// ---------------------------------------------------------------------------------
// logging

static int key_id(csvlog *log, const char *key) {
    for (int i = 0; i < log->nkeys; i++)
        if (strcmp(log->keys[i], key) == 0) return i;
    int64_t cap = log->cap_keys;
    if (grow((void **)&log->keys, &cap, log->nkeys, sizeof *log->keys)) return -1;
    log->cap_keys = (int)cap;
    if (!(log->keys[log->nkeys] = xstrdup(key))) return -1;
    return log->nkeys++;
}

// Sets key in row r (a later value for the same key wins, as in a Python dict).
static int row_set(csvlog *log, csvlog_row *r, const char *key, int is_int, double f, int64_t i) {
    int k = key_id(log, key);
    if (k < 0) return errf(log, "%s: out of memory", log->dir);
    int c = 0;
    while (c < r->ncells && r->cells[c].key != k) c++;
    if (c == r->ncells) r->ncells++;
    r->cells[c] = (csvlog_cell){.key = k, .is_int = is_int, .f = f, .i = i};
    return 0;
}

int csvlog_log(csvlog *log, int64_t step, int64_t epoch, const char *const *keys, const double *values, int n) {
    if (grow((void **)&log->rows, &log->cap_rows, log->nrows, sizeof *log->rows)) return errf(log, "%s: out of memory", log->dir);
    csvlog_row *r = &log->rows[log->nrows];
    r->ncells = 0;
    if (!(r->cells = malloc((size_t)(n + 2) * sizeof *r->cells))) return errf(log, "%s: out of memory", log->dir);
    log->nrows++;
    for (int k = 0; k < n; k++)
        if (row_set(log, r, keys[k], 0, values[k], 0)) return -1;
    if (epoch >= 0 && row_set(log, r, "epoch", 1, 0, epoch)) return -1;
    if (row_set(log, r, "step", 1, 0, step)) return -1;   // last: the step argument wins
    if ((step + 1) % log->flush_every == 0) return csvlog_save(log);
    return 0;
}

int csvlog_log1(csvlog *log, int64_t step, int64_t epoch, const char *key, double value) {
    return csvlog_log(log, step, epoch, &key, &value, 1);
}

// ---------------------------------------------------------------------------------
// hparams.yaml, as yaml.dump(dict) writes it

static int yaml_plain_ok(const char *s) {
    static const char *reserved[] = {"yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
                                     "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", NULL};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == '/')) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("_./-", *p)))
            return 0;
    for (int i = 0; reserved[i]; i++)
        if (strcmp(s, reserved[i]) == 0) return 0;
    return 1;
}

// A YAML scalar for string s: plain when that reads back as the same string, else
// single-quoted, or double-quoted with escapes when it holds control characters.
static char *yaml_string(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(6 * n + 3), *o = out;
    if (!out) return NULL;
    if (yaml_plain_ok(s)) { memcpy(out, s, n + 1); return out; }
    int ctrl = 0;
    for (const char *p = s; *p; p++) ctrl |= (unsigned char)*p < 0x20;
    if (!ctrl) {
        *o++ = '\'';
        for (const char *p = s; *p; p++) { if (*p == '\'') *o++ = '\''; *o++ = *p; }
        *o++ = '\'';
    } else {
        *o++ = '"';
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
            if (*p == '"' || *p == '\\') { *o++ = '\\'; *o++ = (char)*p; }
            else if (*p == '\n') { *o++ = '\\'; *o++ = 'n'; }
            else if (*p == '\t') { *o++ = '\\'; *o++ = 't'; }
            else if (*p < 0x20) o += sprintf(o, "\\x%02X", *p);
            else *o++ = (char)*p;
        }
        *o++ = '"';
    }
    *o = 0;
    return out;
}

static int set_hparam(csvlog *log, const char *key, char *text) {
    if (!text) return errf(log, "%s: out of memory", log->dir);
    log->hparams_changed = 1;
    for (int i = 0; i < log->nhparams; i++)
        if (strcmp(log->hparams[i].key, key) == 0) { free(log->hparams[i].text); log->hparams[i].text = text; return 0; }
    int64_t cap = log->cap_hparams;
    if (grow((void **)&log->hparams, &cap, log->nhparams, sizeof *log->hparams)) { free(text); return errf(log, "%s: out of memory", log->dir); }
    log->cap_hparams = (int)cap;
    log->hparams[log->nhparams].key = xstrdup(key);
    log->hparams[log->nhparams].text = text;
    log->nhparams++;
    return 0;
}

int csvlog_hparam_str(csvlog *log, const char *key, const char *value) { return set_hparam(log, key, yaml_string(value)); }

int csvlog_hparam_i64(csvlog *log, const char *key, int64_t value) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    return set_hparam(log, key, xstrdup(buf));
}

int csvlog_hparam_f64(csvlog *log, const char *key, double value) {
    char buf[40];
    // PyYAML's represent_float: .nan/.inf, else repr() with ".0" put before a bare exponent
    if (isnan(value)) strcpy(buf, ".nan");
    else if (isinf(value)) strcpy(buf, value < 0 ? "-.inf" : ".inf");
    else {
        char r[32];
        csvlog_format_float(r, value);
        char *e = strchr(r, 'e');
        if (e && !strchr(r, '.')) snprintf(buf, sizeof buf, "%.*s.0%s", (int)(e - r), r, e);
        else strcpy(buf, r);
    }
    return set_hparam(log, key, xstrdup(buf));
}

int csvlog_hparam_bool(csvlog *log, const char *key, int value) { return set_hparam(log, key, xstrdup(value ? "true" : "false")); }

// ---------------------------------------------------------------------------------
// saving

// Writes text to dir/name through a temporary file and a rename, so a reader (or a
// crash) never sees half a file.

static int write_file(csvlog *log, const char *name, const sbuf *b, int append) {
    char path[4300], tmp[4400];
    snprintf(path, sizeof path, "%s/%s", log->dir, name);
    if (append) {
        FILE *f = fopen(path, "ab");
        if (!f) return SYSFAIL(log, path, "fopen");
        size_t k = fwrite(b->p, 1, b->n, f);
        if (fclose(f) != 0 || k != b->n) return SYSFAIL(log, path, "write");
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return SYSFAIL(log, tmp, "fopen");
    size_t k = fwrite(b->p, 1, b->n, f);
    if (fclose(f) != 0 || k != b->n) { SYSFAIL(log, tmp, "write"); unlink(tmp); return -1; }
    if (rename(tmp, path) != 0) { SYSFAIL(log, path, "rename"); unlink(tmp); return -1; }
    return 0;
}

// One CSV field as Python's csv module (QUOTE_MINIMAL) writes it.
static void csv_field(sbuf *b, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { sb_str(b, s); return; }
    sb_put(b, "\"", 1);
    for (; *s; s++) { if (*s == '"') sb_put(b, "\"", 1); sb_put(b, s, 1); }
    sb_put(b, "\"", 1);
}

static char **sort_keys;   // qsort has no context argument in C11
static int cmp_key_index(const void *a, const void *b) {
    return strcmp(sort_keys[*(const int *)a], sort_keys[*(const int *)b]);
}

static void csv_row(sbuf *b, const csvlog_row *r, const int *cols, int ncols) {
    for (int c = 0; c < ncols; c++) {
        if (c) sb_put(b, ",", 1);
        for (int k = 0; k < r->ncells; k++)
            if (r->cells[k].key == cols[c]) {
                char v[40];
                if (r->cells[k].is_int) snprintf(v, sizeof v, "%" PRId64, r->cells[k].i);
                else csvlog_format_float(v, r->cells[k].f);
                sb_str(b, v);
                break;
            }
    }
    sb_put(b, "\r\n", 2);   // csv.writer's default line terminator
}

static int save_hparams(csvlog *log) {
    sbuf b = {0};
    csvlog_hparam **h = malloc((size_t)(log->nhparams + 1) * sizeof *h);
    if (!h) return errf(log, "%s: out of memory", log->dir);
    for (int i = 0; i < log->nhparams; i++) h[i] = &log->hparams[i];
    for (int i = 1; i < log->nhparams; i++)   // insertion sort by key: yaml.dump sorts keys
        for (int j = i; j > 0 && strcmp(h[j - 1]->key, h[j]->key) > 0; j--) { csvlog_hparam *t = h[j]; h[j] = h[j - 1]; h[j - 1] = t; }
    if (log->nhparams == 0) sb_str(&b, "{}\n");
    for (int i = 0; i < log->nhparams; i++) {
        char *k = yaml_string(h[i]->key);
        if (!k) { b.oom = 1; break; }
        sb_str(&b, k); sb_str(&b, ": "); sb_str(&b, h[i]->text); sb_str(&b, "\n");
        free(k);
    }
    free(h);
    int rc = b.oom ? errf(log, "%s: out of memory", log->dir) : write_file(log, "hparams.yaml", &b, 0);
    free(b.p);
    return rc;
}

// Reads back the file written so far and re-emits its rows under the new header
// (Lightning's _rewrite_with_new_header). The old rows are not kept in memory: a long
// run logs millions of them. We wrote the file, so only the header can hold quotes.
static int rewrite_old_rows(csvlog *log, sbuf *b, const int *cols) {
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.csv", log->dir);
    FILE *f = fopen(path, "rb");
    if (!f) return SYSFAIL(log, path, "fopen");
    sbuf old = {0};
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) sb_put(&old, chunk, k);
    fclose(f);
    if (old.oom) { free(old.p); return errf(log, "%s: out of memory", path); }
    if (!old.p) return errf(log, "%s: empty, expected the header written before", path);
    // header: old column j holds key with index map[j] in the new order
    int *map = malloc((size_t)(log->nkeys + 1) * sizeof *map), nold = 0;
    char **cells = malloc((size_t)(log->nkeys + 1) * sizeof *cells);
    char *p = old.p, key[4096];
    int rc = 0;
    if (!map || !cells) { rc = errf(log, "%s: out of memory", path); goto done; }
    for (;;) {
        size_t n = 0;
        if (*p == '"') {
            for (p++; *p && !(*p == '"' && p[1] != '"'); p++) { if (*p == '"') p++; if (n < sizeof key - 1) key[n++] = *p; }
            if (*p == '"') p++;
        } else {
            while (*p && *p != ',' && *p != '\r' && n < sizeof key - 1) key[n++] = *p++;
        }
        key[n] = 0;
        int c = 0;
        while (c < log->nkeys && strcmp(log->keys[cols[c]], key) != 0) c++;
        if (c == log->nkeys || nold == log->nkeys) { rc = errf(log, "%s: header changed under us (column '%s')", path, key); goto done; }
        map[nold++] = c;
        if (*p == ',') { p++; continue; }
        if (p[0] == '\r' && p[1] == '\n') { p += 2; break; }
        rc = errf(log, "%s: malformed header", path);
        goto done;
    }
    while (*p) {
        char *eol = strstr(p, "\r\n");
        if (!eol) { rc = errf(log, "%s: last line unterminated", path); goto done; }
        *eol = 0;
        for (int c = 0; c < log->nkeys; c++) cells[c] = "";
        for (int j = 0; j < nold; j++) {
            char *comma = strchr(p, ',');
            if (comma) *comma = 0;
            cells[map[j]] = p;
            p = comma ? comma + 1 : p + strlen(p);
        }
        for (int c = 0; c < log->nkeys; c++) { if (c) sb_put(b, ",", 1); sb_str(b, cells[c]); }
        sb_put(b, "\r\n", 2);
        p = eol + 2;
    }
done:
    free(map); free(cells); free(old.p);
    return rc;
}

int csvlog_save(csvlog *log) {
    if (!log->dir) return errf(log, "csvlog_save: the log is not open");
    // hparams.yaml: at the first save, then only when a value changed (a save every
    // flush_every steps need not rewrite it)
    if ((log->hparams_changed || !log->file_written) && save_hparams(log)) return -1;
    log->hparams_changed = 0;
    if (log->nrows == 0) return 0;
    int *cols = malloc((size_t)(log->nkeys + 1) * sizeof *cols);
    if (!cols) return errf(log, "%s: out of memory", log->dir);
    for (int i = 0; i < log->nkeys; i++) cols[i] = i;
    sort_keys = log->keys;
    qsort(cols, (size_t)log->nkeys, sizeof *cols, cmp_key_index);
    // A new key since the last save widens the header: rewrite the file under the new
    // header; otherwise append the new rows.
    int rewrite = !log->file_written || log->nkeys != log->nkeys_on_disk;
    sbuf b = {0};
    int rc = 0;
    if (rewrite) {
        for (int c = 0; c < log->nkeys; c++) { if (c) sb_put(&b, ",", 1); csv_field(&b, log->keys[cols[c]]); }
        sb_put(&b, "\r\n", 2);
        if (log->file_written) rc = rewrite_old_rows(log, &b, cols);
    }
    for (int64_t r = 0; r < log->nrows; r++) csv_row(&b, &log->rows[r], cols, log->nkeys);
    free(cols);
    if (rc == 0) rc = b.oom ? errf(log, "%s: out of memory", log->dir) : write_file(log, "metrics.csv", &b, !rewrite);
    free(b.p);
    if (rc == 0) {
        for (int64_t r = 0; r < log->nrows; r++) free(log->rows[r].cells);
        log->nrows = 0;
        log->file_written = 1;
        log->nkeys_on_disk = log->nkeys;
    }
    return rc;
}

int csvlog_close(csvlog *log) {
    int rc = log->dir ? csvlog_save(log) : 0;
    for (int i = 0; i < log->nkeys; i++) free(log->keys[i]);
    for (int64_t r = 0; r < log->nrows; r++) free(log->rows[r].cells);
    for (int i = 0; i < log->nhparams; i++) { free(log->hparams[i].key); free(log->hparams[i].text); }
    free(log->keys); free(log->rows); free(log->hparams); free(log->dir);
    char err[CSVLOG_ERR_LEN];
    memcpy(err, log->err, sizeof err);
    memset(log, 0, sizeof *log);
    memcpy(log->err, err, sizeof err);   // the save's error outlives the close
    return rc;
}
