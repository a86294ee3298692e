// MLflow's file store. See mlflowlog.h.
#include "mlflowlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *csvlog_format_float(char *buf, double v);   // runtime/csvlog.c: Python's repr()

#define PATH_BUF (PATH_MAX + 512)   // the store's real path and what goes under it

int mlflowlog_errf(mlflowlog *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, MLFLOWLOG_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}
#define SYSFAIL(m, path, call) mlflowlog_errf(m, "%s: %s failed: %s", path, call, strerror(errno))

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int mlflowlog_mkdir_p(mlflowlog *m, const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return mlflowlog_errf(m, "%s: path too long", path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return SYSFAIL(m, buf, "mkdir");
            if (!c) break;
            *p = c;
        }
    return 0;
}

static int read_file(const char *path, sbuf *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) sb_put(b, chunk, k);
    int bad = ferror(f);
    fclose(f);
    return bad || b->oom ? -1 : 0;
}

// Writes through a temporary file and a rename: a reader never sees half a file.
static int write_file(mlflowlog *m, const char *path, const char *text, size_t n) {
    char tmp[PATH_BUF + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return SYSFAIL(m, tmp, "fopen");
    size_t k = fwrite(text, 1, n, f);
    if (fclose(f) != 0 || k != n) { SYSFAIL(m, tmp, "write"); unlink(tmp); return -1; }
    if (rename(tmp, path) != 0) { SYSFAIL(m, path, "rename"); unlink(tmp); return -1; }
    return 0;
}

// MLflow's key rule: letters, digits, "_-. /"; no "..", no leading '/'.
// a relative path inside the run of characters from `allowed` besides letters and digits
static int name_ok(const char *k, const char *allowed) {
    if (!*k || *k == '/' || strstr(k, "..") || strstr(k, "//") || k[strlen(k) - 1] == '/') return 0;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr(allowed, *p)))
            return 0;
    return 1;
}
static int key_ok(const char *k) { return name_ok(k, "_-. /"); }   // MLflow's keys
// an artifact's path: '=' too (Lightning's checkpoint names, epoch=E-step=S)
static int artifact_ok(const char *k) { return name_ok(k, "_-. /="); }

// A YAML single-quoted scalar (always valid, whatever the text but control characters).
static void yaml_quoted(sbuf *b, const char *s) {
    sb_put(b, "'", 1);
    for (; *s; s++) { if (*s == '\'') sb_put(b, "'", 1); sb_put(b, s, 1); }
    sb_put(b, "'", 1);
}

// The value of `key: ...` in a meta.yaml (ours or MLflow's), unquoted, into out.
static int yaml_get(const char *text, const char *key, char *out, size_t len) {
    size_t kn = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, kn) || line[kn] != ':' || line[kn + 1] != ' ') continue;
        const char *v = line + kn + 2, *eol = strchr(v, '\n');
        size_t n = eol ? (size_t)(eol - v) : strlen(v), o = 0;
        if (n && v[0] == '\'') {
            for (size_t i = 1; i < n && o + 1 < len; i++) {
                if (v[i] == '\'') { if (i + 1 < n && v[i + 1] == '\'') i++; else break; }
                out[o++] = v[i];
            }
        } else {
            while (o < n && o + 1 < len) { out[o] = v[o]; o++; }
        }
        out[o] = 0;
        return 0;
    }
    return -1;
}

static int write_experiment_meta(mlflowlog *m, const char *store, const char *id, const char *name, int64_t now_ms) {
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/%s", store, id);
    if (mlflowlog_mkdir_p(m, path)) return -1;
    sbuf b = {0};
    char num[32];
    sb_str(&b, "artifact_location: "); yaml_quoted(&b, "file://"); b.n--;   // file://<store>/<id>, quoted
    sb_str(&b, store); sb_str(&b, "/"); sb_str(&b, id); sb_str(&b, "'\n");
    snprintf(num, sizeof num, "%" PRId64, now_ms);
    sb_str(&b, "creation_time: "); sb_str(&b, num); sb_str(&b, "\n");
    sb_str(&b, "experiment_id: '"); sb_str(&b, id); sb_str(&b, "'\n");
    sb_str(&b, "last_update_time: "); sb_str(&b, num); sb_str(&b, "\n");
    sb_str(&b, "lifecycle_stage: active\n");
    sb_str(&b, "name: "); yaml_quoted(&b, name); sb_str(&b, "\n");
    snprintf(path, sizeof path, "%s/%s/meta.yaml", store, id);
    int rc = b.oom ? mlflowlog_errf(m, "%s: out of memory", path) : write_file(m, path, b.p, b.n);
    free(b.p);
    return rc;
}

static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (*s < '0' || *s > '9') return 0;
    return 1;
}

// The experiment named `name` (its id into id), or a new one, one past the largest id.
static int find_or_create_experiment(mlflowlog *m, const char *store, const char *name, int64_t now_ms, char *id) {
    DIR *d = opendir(store);
    if (!d) return SYSFAIL(m, store, "opendir");
    long long next = 1;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (!is_number(e->d_name) || strlen(e->d_name) > 18) continue;
        long long v = atoll(e->d_name);
        if (v + 1 > next) next = v + 1;
        char path[PATH_BUF], got[1024];
        snprintf(path, sizeof path, "%s/%s/meta.yaml", store, e->d_name);
        sbuf text = {0};
        if (read_file(path, &text) == 0 && yaml_get(text.p ? text.p : "", "name", got, sizeof got) == 0 &&
            strcmp(got, name) == 0) {
            memcpy(id, e->d_name, strlen(e->d_name) + 1);   // <= 18 digits
            found = 1;
        }
        free(text.p);
    }
    closedir(d);
    if (found) return 0;
    snprintf(id, 32, "%lld", next);
    return write_experiment_meta(m, store, id, name, now_ms);
}

static int write_run_meta(mlflowlog *m, int status, int64_t end_ms) {
    sbuf b = {0};
    char num[32];
    const char *user = getenv("USER");
    sb_str(&b, "artifact_uri: "); yaml_quoted(&b, m->artifact_uri); sb_str(&b, "\n");
    if (end_ms < 0) sb_str(&b, "end_time: null\n");
    else { snprintf(num, sizeof num, "%" PRId64, end_ms); sb_str(&b, "end_time: "); sb_str(&b, num); sb_str(&b, "\n"); }
    sb_str(&b, "entry_point_name: ''\n");
    sb_str(&b, "experiment_id: '"); sb_str(&b, m->experiment_id); sb_str(&b, "'\n");
    sb_str(&b, "lifecycle_stage: active\n");
    sb_str(&b, "run_id: "); sb_str(&b, m->run_id); sb_str(&b, "\n");
    sb_str(&b, "run_name: "); yaml_quoted(&b, m->run_name); sb_str(&b, "\n");
    sb_str(&b, "run_uuid: "); sb_str(&b, m->run_id); sb_str(&b, "\n");
    sb_str(&b, "source_name: ''\n");
    sb_str(&b, "source_type: 4\n");   // SourceType.LOCAL
    sb_str(&b, "source_version: ''\n");
    snprintf(num, sizeof num, "%" PRId64, m->start_ms);
    sb_str(&b, "start_time: "); sb_str(&b, num); sb_str(&b, "\n");
    snprintf(num, sizeof num, "%d", status);
    sb_str(&b, "status: "); sb_str(&b, num); sb_str(&b, "\n");
    sb_str(&b, "tags: []\n");
    sb_str(&b, "user_id: "); yaml_quoted(&b, user && *user ? user : "unknown"); sb_str(&b, "\n");
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/meta.yaml", m->run_dir);
    int rc = b.oom ? mlflowlog_errf(m, "%s: out of memory", path) : write_file(m, path, b.p, b.n);
    free(b.p);
    return rc;
}

int mlflowlog_new_run_id(mlflowlog *m, char *id) {
    unsigned char r[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(r, 1, 16, f) != 16) { if (f) fclose(f); return SYSFAIL(m, "/dev/urandom", "read"); }
    fclose(f);
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40);   // a version-4 UUID, as uuid.uuid4().hex
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
    for (int i = 0; i < 16; i++) sprintf(id + 2 * i, "%02x", r[i]);
    return 0;
}

// The experiment holding run `id`, into exp.
static int find_run(const char *store, const char *id, char *exp) {
    DIR *d = opendir(store);
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while (found && (e = readdir(d))) {
        if (!is_number(e->d_name) || strlen(e->d_name) > 18) continue;
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s/%s/meta.yaml", store, e->d_name, id);
        if (access(path, F_OK) == 0) { memcpy(exp, e->d_name, strlen(e->d_name) + 1); found = 0; }   // <= 18 digits
    }
    closedir(d);
    return found;
}

// Drops the lines of a metric file whose step is past the resumed one.
static int64_t truncate_step;
static mlflowlog *truncate_log;
static int truncate_metric(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)ftw;
    if (type != FTW_F) return 0;
    sbuf text = {0}, kept = {0};
    if (read_file(path, &text)) { free(text.p); return SYSFAIL(truncate_log, path, "read"); }
    int changed = 0;
    for (char *line = text.p; line && *line;) {
        char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line + 1) : strlen(line);
        const char *last = memrchr(line, ' ', n);
        if (last && strtoll(last + 1, NULL, 10) > truncate_step) changed = 1;
        else sb_put(&kept, line, n);
        line += n;
    }
    int rc = 0;
    if (changed) rc = kept.oom ? mlflowlog_errf(truncate_log, "%s: out of memory", path) : write_file(truncate_log, path, kept.p ? kept.p : "", kept.n);
    free(text.p); free(kept.p);
    return rc;
}

int mlflowlog_open(mlflowlog *m, const char *store_dir, const char *experiment, const char *run_name,
                   const char *run_id, int64_t resume_step, int64_t now_ms) {
    memset(m, 0, sizeof *m);
    if (mlflowlog_mkdir_p(m, store_dir)) return -1;
    char store[PATH_MAX], path[PATH_BUF];
    if (!realpath(store_dir, store)) return SYSFAIL(m, store_dir, "realpath");
    // the Default experiment, as MLflow's FileStore makes it on first use
    snprintf(path, sizeof path, "%s/0/meta.yaml", store);
    if (access(path, F_OK) != 0 && write_experiment_meta(m, store, "0", "Default", now_ms)) return -1;
    int resumed = run_id && *run_id;
    if (resumed) {
        if (strlen(run_id) != 32 || strspn(run_id, "0123456789abcdef") != 32)
            return mlflowlog_errf(m, "%s: run id '%s' is not 32 hex digits", store, run_id);
        if (find_run(store, run_id, m->experiment_id))
            return mlflowlog_errf(m, "%s: no run '%s' in any experiment", store, run_id);
        snprintf(m->run_id, sizeof m->run_id, "%s", run_id);
    } else {
        if (find_or_create_experiment(m, store, experiment, now_ms, m->experiment_id)) return -1;
        if (mlflowlog_new_run_id(m, m->run_id)) return -1;
    }
    size_t n = strlen(store) + 128;
    m->run_dir = malloc(n);
    m->artifact_uri = malloc(n + 16);
    if (!m->run_dir || !m->artifact_uri) return mlflowlog_errf(m, "%s: out of memory", store);
    snprintf(m->run_dir, n, "%s/%s/%s", store, m->experiment_id, m->run_id);
    snprintf(m->artifact_uri, n + 16, "file://%s/artifacts", m->run_dir);
    m->start_ms = now_ms;
    char name[1024] = "";
    if (resumed) {
        // keep its name and start time; what it logged past the checkpoint goes
        snprintf(path, sizeof path, "%s/meta.yaml", m->run_dir);
        sbuf text = {0};
        char start[32];
        if (read_file(path, &text)) { free(text.p); return SYSFAIL(m, path, "read"); }
        if (yaml_get(text.p, "start_time", start, sizeof start) == 0) m->start_ms = strtoll(start, NULL, 10);
        yaml_get(text.p, "run_name", name, sizeof name);
        free(text.p);
        if (resume_step >= 0) {
            snprintf(path, sizeof path, "%s/metrics", m->run_dir);
            truncate_step = resume_step; truncate_log = m;
            if (access(path, F_OK) == 0 && nftw(path, truncate_metric, 16, FTW_PHYS) != 0) return -1;
        }
    }
    if (!name[0]) snprintf(name, sizeof name, "%s", run_name && *run_name ? run_name : m->run_id);
    if (!(m->run_name = xstrdup(name))) return mlflowlog_errf(m, "out of memory");
    static const char *subdirs[] = {"metrics", "params", "tags", "artifacts"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", m->run_dir, subdirs[i]);
        if (mlflowlog_mkdir_p(m, path)) return -1;
    }
    if (write_run_meta(m, MLFLOW_RUNNING, -1)) return -1;
    return mlflowlog_tag(m, "mlflow.runName", m->run_name);
}

// dir/key written with value (a key's '/' makes subdirectories).
static int write_keyed(mlflowlog *m, const char *dir, const char *key, const char *value) {
    if (!key_ok(key)) return mlflowlog_errf(m, "%s: '%s' is not a valid MLflow key (letters, digits, '_-. /')", m->run_dir, key);
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/%s/%s", m->run_dir, dir, key);
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (mlflowlog_mkdir_p(m, path)) return -1;
    *slash = '/';
    return write_file(m, path, value, strlen(value));
}

int mlflowlog_param(mlflowlog *m, const char *key, const char *value) {
    if (m->sql) return key_ok(key) ? m->sql->put(m, "params", key, value) : mlflowlog_errf(m, "'%s' is not a valid MLflow key", key);
    return write_keyed(m, "params", key, value);
}
int mlflowlog_tag(mlflowlog *m, const char *key, const char *value) {
    if (m->sql) return key_ok(key) ? m->sql->put(m, "tags", key, value) : mlflowlog_errf(m, "'%s' is not a valid MLflow key", key);
    return write_keyed(m, "tags", key, value);
}

// the first line of dir/name, without its newline, into out (0), or -1 (a path too long
// for the buffers is as good as missing here)
static int first_line(const char *dir, const char *name, char *out, size_t len) {
    char p[PATH_BUF];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p) return -1;
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    char *r = fgets(out, (int)len, f);
    fclose(f);
    if (!r) return -1;
    out[strcspn(out, "\r\n")] = 0;
    return 0;
}

static int is_hash(const char *s) {
    int n = 0;
    while (s[n] && strchr("0123456789abcdef", s[n])) n++;
    return n == 40 && !s[n];
}

int mlflowlog_git_commit(const char *path, char *out, size_t len) {
    char dir[PATH_BUF], gitdir[PATH_BUF], common[PATH_BUF], line[PATH_BUF];
    out[0] = 0;
    if (len < 41 || !realpath(path, dir)) return -1;
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) *strrchr(dir, '/') = 0;   // the file's directory
    for (;;) {   // up from there to the first .git (a directory, or a worktree's file naming one)
        if (!*dir) strcpy(dir, "/");
        if (snprintf(gitdir, sizeof gitdir, "%s/.git", strcmp(dir, "/") ? dir : "") >= (int)sizeof gitdir) return -1;
        if (stat(gitdir, &st) == 0) break;
        char *slash = strrchr(dir, '/');
        if (!slash || !strcmp(dir, "/")) return -1;
        *slash = 0;
    }
    if (S_ISREG(st.st_mode)) {   // "gitdir: PATH", relative to the directory holding .git
        if (first_line(dir, ".git", line, sizeof line) || strncmp(line, "gitdir: ", 8)) return -1;
        int n = line[8] == '/' ? snprintf(gitdir, sizeof gitdir, "%s", line + 8)
                               : snprintf(gitdir, sizeof gitdir, "%s/%s", dir, line + 8);
        if (n >= (int)sizeof gitdir) return -1;
    }
    if (snprintf(common, sizeof common, "%s", gitdir) >= (int)sizeof common) return -1;   // a worktree's refs live in its commondir
    if (first_line(gitdir, "commondir", line, sizeof line) == 0) {
        int n = line[0] == '/' ? snprintf(common, sizeof common, "%s", line)
                               : snprintf(common, sizeof common, "%s/%s", gitdir, line);
        if (n >= (int)sizeof common) return -1;
    }
    char head[PATH_BUF];
    if (first_line(gitdir, "HEAD", head, sizeof head)) return -1;
    for (int depth = 0; depth < 5 && !strncmp(head, "ref: ", 5); depth++) {   // symbolic refs
        char ref[PATH_BUF];
        if (snprintf(ref, sizeof ref, "%s", head + 5) >= (int)sizeof ref) return -1;
        if (first_line(gitdir, ref, head, sizeof head) && first_line(common, ref, head, sizeof head)) {
            // packed-refs: "<hash> <ref>" lines
            char p[PATH_BUF];
            if (snprintf(p, sizeof p, "%s/packed-refs", common) >= (int)sizeof p) return -1;
            FILE *f = fopen(p, "r");
            if (!f) return -1;
            head[0] = 0;
            while (fgets(line, sizeof line, f)) {
                line[strcspn(line, "\r\n")] = 0;
                if (strlen(line) > 41 && line[40] == ' ' && !strcmp(line + 41, ref)) { memcpy(head, line, 40); head[40] = 0; break; }
            }
            fclose(f);
        }
    }
    if (!is_hash(head)) return -1;   // an unborn branch, or a layout not read here
    memcpy(out, head, 41);
    return 0;
}

int mlflowlog_metric_log(mlflowlog *m, const char *key, double value, int64_t step, int64_t ts_ms) {
    int i = 0;
    while (i < m->nmetrics && strcmp(m->metrics[i].key, key) != 0) i++;
    if (i == m->nmetrics) {
        if (!key_ok(key)) return mlflowlog_errf(m, "%s: '%s' is not a valid MLflow key (letters, digits, '_-. /')", m->run_dir, key);
        if (m->nmetrics == m->cap_metrics) {
            int c = m->cap_metrics ? 2 * m->cap_metrics : 16;
            mlflowlog_metric *p = realloc(m->metrics, (size_t)c * sizeof *p);
            if (!p) return mlflowlog_errf(m, "%s: out of memory", m->run_dir);
            m->metrics = p; m->cap_metrics = c;
        }
        m->metrics[i] = (mlflowlog_metric){ .key = xstrdup(key) };
        if (!m->metrics[i].key) return mlflowlog_errf(m, "%s: out of memory", m->run_dir);
        m->nmetrics++;
    }
    char v[40], line[128];
    snprintf(line, sizeof line, "%" PRId64 " %s %" PRId64 "\n", ts_ms, csvlog_format_float(v, value), step);
    sb_str(&m->metrics[i].lines, line);
    return m->metrics[i].lines.oom ? mlflowlog_errf(m, "%s: out of memory", m->run_dir) : 0;
}

int mlflowlog_flush(mlflowlog *m) {
    if (m->sql) return m->sql->flush(m);
    for (int i = 0; i < m->nmetrics; i++) {
        sbuf *b = &m->metrics[i].lines;
        if (b->n == 0) continue;
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/metrics/%s", m->run_dir, m->metrics[i].key);
        char *slash = strrchr(path, '/');
        *slash = 0;
        if (mlflowlog_mkdir_p(m, path)) return -1;
        *slash = '/';
        FILE *f = fopen(path, "ab");
        if (!f) return SYSFAIL(m, path, "fopen");
        size_t k = fwrite(b->p, 1, b->n, f);
        if (fclose(f) != 0 || k != b->n) return SYSFAIL(m, path, "write");
        b->n = 0;
    }
    return 0;
}

int mlflowlog_artifact(mlflowlog *m, const char *src, const char *name) {
    if (!artifact_ok(name)) return mlflowlog_errf(m, "%s: '%s' is not a valid artifact name", m->run_dir, name);
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/artifacts/%s", m->run_dir, name);
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (mlflowlog_mkdir_p(m, path)) return -1;
    *slash = '/';
    sbuf data = {0};
    if (read_file(src, &data)) { free(data.p); return SYSFAIL(m, src, "read"); }
    int rc = write_file(m, path, data.p ? data.p : "", data.n);
    free(data.p);
    return rc;
}

int mlflowlog_close(mlflowlog *m, int status, int64_t end_ms) {
    int rc = 0;
    if (m->sql) {
        rc = m->sql->flush(m);
        if (m->sql->end(m, rc ? MLFLOW_FAILED : status, end_ms)) rc = -1;
    } else if (m->run_dir) {
        rc = mlflowlog_flush(m);
        if (write_run_meta(m, rc ? MLFLOW_FAILED : status, end_ms)) rc = -1;
    }
    for (int i = 0; i < m->nmetrics; i++) { free(m->metrics[i].key); free(m->metrics[i].lines.p); }
    free(m->metrics); free(m->run_dir); free(m->artifact_uri); free(m->run_name);
    char err[MLFLOWLOG_ERR_LEN];
    memcpy(err, m->err, sizeof err);
    memset(m, 0, sizeof *m);
    memcpy(m->err, err, sizeof err);
    return rc;
}
