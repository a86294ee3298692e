// Safetensors checkpoints: see ckpt.h for the format and the guarantees.
#include "ckpt.h"
#include "sbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

// A header larger than this is corrupt rather than big: the reference implementation
// refuses headers over 100 MB too, and it stops a bad length from allocating gigabytes.
#define CKPT_MAX_HEADER (100u * 1000u * 1000u)

static const struct { const char *name; int size; } dtypes[CKPT_NDTYPES] = {
    [CKPT_F32] = {"F32", 4}, [CKPT_F64] = {"F64", 8}, [CKPT_F16] = {"F16", 2},
    [CKPT_BF16] = {"BF16", 2}, [CKPT_I64] = {"I64", 8}, [CKPT_I32] = {"I32", 4},
    [CKPT_I16] = {"I16", 2}, [CKPT_I8] = {"I8", 1}, [CKPT_U8] = {"U8", 1},
    [CKPT_BOOL] = {"BOOL", 1},
};

const char *ckpt_dtype_name(ckpt_dtype dt) { return (unsigned)dt < CKPT_NDTYPES ? dtypes[dt].name : "?"; }
int ckpt_dtype_size(ckpt_dtype dt) { return (unsigned)dt < CKPT_NDTYPES ? dtypes[dt].size : 0; }

int ckpt_dtype_from_name(const char *name, ckpt_dtype *dt) {
    for (int i = 0; i < CKPT_NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) { *dt = (ckpt_dtype)i; return 0; }
    return -1;
}

int64_t ckpt_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

// Element count times element size, or -1 when it does not fit in 63 bits (a corrupt
// shape must not wrap around into a size that happens to match its offsets).
static int64_t nbytes_checked(ckpt_dtype dt, int ndim, const int64_t *shape) {
    int64_t n = ckpt_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

// "[256, 784]" into buf (shapes in messages read as Python prints them).
static const char *shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
    return buf;
}

// One-line error into err: "what: message". Returns -1 so callers can `return errf(...)`.
static int errf(char *err, const char *what, const char *fmt, ...) {
    int k = snprintf(err, CKPT_ERR_LEN, "%s: ", what);
    if (k < 0 || k >= CKPT_ERR_LEN) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, CKPT_ERR_LEN - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

// A failed system call: the user gets the file and the reason, a developer the line.
#define SYSFAIL(err, path, call) \
    errf(err, path, "%s failed: %s (%s:%d)", call, strerror(errno), __FILE__, __LINE__)

// The metadata key of a tensor's checksum, and the checksum of its bytes (zlib's CRC-32).
#define CRC_PREFIX "crc32:"
static int is_crc_key(const char *key) { return strncmp(key, CRC_PREFIX, sizeof CRC_PREFIX - 1) == 0; }
static uint32_t data_crc(const void *data, uint64_t n) {
    return (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), data, (z_size_t)n);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

// ---------------------------------------------------------------------------------
// writing

void ckpt_writer_init(ckpt_writer *w) { memset(w, 0, sizeof *w); }

void ckpt_writer_free(ckpt_writer *w) {
    for (int i = 0; i < w->ntensors; i++) free((char *)w->tensors[i].name);
    for (int i = 0; i < w->nmeta; i++) { free(w->meta[i].key); free(w->meta[i].value); }
    free(w->tensors);
    free(w->meta);
    memset(w, 0, sizeof *w);
}

int ckpt_writer_add(ckpt_writer *w, const char *name, ckpt_dtype dt, int ndim,
                    const int64_t *shape, const void *data) {
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return errf(w->err, "ckpt_writer_add", "tensor name '%s' is not allowed", name ? name : "(null)");
    if ((unsigned)dt >= CKPT_NDTYPES)
        return errf(w->err, "ckpt_writer_add", "tensor '%s': unknown dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > CKPT_MAX_DIMS)
        return errf(w->err, "ckpt_writer_add", "tensor '%s': %d dimensions (at most %d)", name, ndim, CKPT_MAX_DIMS);
    int64_t nb = nbytes_checked(dt, ndim, shape);
    if (nb < 0) return errf(w->err, "ckpt_writer_add", "tensor '%s': bad shape", name);
    if (nb > 0 && !data) return errf(w->err, "ckpt_writer_add", "tensor '%s': no data", name);
    if (w->ntensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        ckpt_tensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) return errf(w->err, "ckpt_writer_add", "out of memory");
        w->tensors = t; w->cap_tensors = cap;
    }
    ckpt_tensor *t = &w->tensors[w->ntensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = xstrdup(name))) return errf(w->err, "ckpt_writer_add", "out of memory");
    t->dtype = dt; t->ndim = ndim; t->data = data;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    w->ntensors++;
    return 0;
}

int ckpt_writer_set_meta(ckpt_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            char *v = xstrdup(value);
            if (!v) return errf(w->err, "ckpt_writer_set_meta", "out of memory");
            free(w->meta[i].value); w->meta[i].value = v;
            return 0;
        }
    if (w->nmeta == w->cap_meta) {
        int cap = w->cap_meta ? 2 * w->cap_meta : 16;
        ckpt_meta *m = realloc(w->meta, (size_t)cap * sizeof *m);
        if (!m) return errf(w->err, "ckpt_writer_set_meta", "out of memory");
        w->meta = m; w->cap_meta = cap;
    }
    ckpt_meta *m = &w->meta[w->nmeta];
    m->key = xstrdup(key); m->value = xstrdup(value);
    if (!m->key || !m->value) { free(m->key); free(m->value); return errf(w->err, "ckpt_writer_set_meta", "out of memory"); }
    w->nmeta++;
    return 0;
}

int ckpt_writer_set_meta_i64(ckpt_writer *w, const char *key, int64_t value) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    return ckpt_writer_set_meta(w, key, buf);
}

int ckpt_writer_set_meta_f64(ckpt_writer *w, const char *key, double value) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", value);   // 17 significant digits round-trip any double
    return ckpt_writer_set_meta(w, key, buf);
}


// A JSON string literal; names and metadata may hold any byte but '\0'.
static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; sb_put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); sb_put(b, esc, 6); }
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(ckpt_tensor *const *)a)->name, (*(ckpt_tensor *const *)b)->name);
}

static int write_all(int fd, const void *buf, uint64_t n) {
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;   // write() caps one call near 2 GB
        ssize_t k = write(fd, p, chunk);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        p += k; n -= (uint64_t)k;
    }
    return 0;
}

// fsync the directory holding path, so that the rename itself survives a power cut.
static int fsync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int ckpt_write(ckpt_writer *w, const char *path) {
    // Names must be unique: a second 'x' would silently shadow the first on load.
    if (w->ntensors > 0) {
        ckpt_tensor **s = malloc((size_t)w->ntensors * sizeof *s);
        if (!s) return errf(w->err, path, "out of memory");
        for (int i = 0; i < w->ntensors; i++) s[i] = &w->tensors[i];
        qsort(s, (size_t)w->ntensors, sizeof *s, cmp_tensor_ptr_name);
        for (int i = 1; i < w->ntensors; i++)
            if (strcmp(s[i - 1]->name, s[i]->name) == 0) {
                errf(w->err, path, "tensor '%s' added twice", s[i]->name);
                free(s);
                return -1;
            }
        free(s);
    }

    // The header: metadata first, then the tensors in data order.
    // The caller's metadata, then each tensor's checksum (the caller's own "crc32:"
    // keys, if any, are replaced: a checksum is always of the bytes written).
    sbuf h = {0};
    sb_str(&h, "{");
    int have_meta = 0;
    for (int i = 0; i < w->nmeta; i++) {
        if (is_crc_key(w->meta[i].key)) continue;
        sb_str(&h, have_meta++ ? "," : "\"__metadata__\":{");
        sb_json_string(&h, w->meta[i].key);
        sb_str(&h, ":");
        sb_json_string(&h, w->meta[i].value);
    }
    for (int i = 0; i < w->ntensors; i++) {
        ckpt_tensor *t = &w->tensors[i];
        char crc[16];
        char *key = malloc(sizeof CRC_PREFIX + strlen(t->name));
        if (!key) { h.oom = 1; break; }
        snprintf(key, sizeof CRC_PREFIX + strlen(t->name), CRC_PREFIX "%s", t->name);
        snprintf(crc, sizeof crc, "%08" PRIx32, data_crc(t->data, (uint64_t)nbytes_checked(t->dtype, t->ndim, t->shape)));
        sb_str(&h, have_meta++ ? "," : "\"__metadata__\":{");
        sb_json_string(&h, key);
        sb_str(&h, ":");
        sb_json_string(&h, crc);
        free(key);
    }
    if (have_meta) sb_str(&h, "}");
    uint64_t off = 0;
    for (int i = 0; i < w->ntensors; i++) {
        ckpt_tensor *t = &w->tensors[i];
        char num[64];
        if (i || have_meta) sb_str(&h, ",");
        sb_json_string(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, ckpt_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            sb_str(&h, num);
        }
        t->begin = off;
        t->end = off + (uint64_t)nbytes_checked(t->dtype, t->ndim, t->shape);
        off = t->end;
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->begin, t->end);
        sb_str(&h, num);
    }
    sb_str(&h, "}");
    while (h.n % 8 != 0) sb_str(&h, " ");   // so that the data starts 8-byte aligned
    if (h.oom) { free(h.p); return errf(w->err, path, "out of memory"); }

    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(h.p);
        return errf(w->err, path, "path too long");
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { free(h.p); return SYSFAIL(w->err, tmp, "open"); }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    int rc = write_all(fd, len8, 8);
    if (rc == 0) rc = write_all(fd, h.p, h.n);
    for (int i = 0; rc == 0 && i < w->ntensors; i++) {
        const ckpt_tensor *t = &w->tensors[i];
        if (t->end > t->begin) rc = write_all(fd, t->data, t->end - t->begin);
    }
    free(h.p);
    if (rc != 0) { SYSFAIL(w->err, tmp, "write"); close(fd); unlink(tmp); return -1; }
    // The data must be on disk before the rename makes it the checkpoint; otherwise a
    // crash could leave `path` naming a file whose blocks were never written.
    if (fsync(fd) != 0) { SYSFAIL(w->err, tmp, "fsync"); close(fd); unlink(tmp); return -1; }
    if (close(fd) != 0) { SYSFAIL(w->err, tmp, "close"); unlink(tmp); return -1; }
    if (rename(tmp, path) != 0) { SYSFAIL(w->err, path, "rename"); unlink(tmp); return -1; }
    if (fsync_dir_of(path) != 0) return SYSFAIL(w->err, path, "fsync of its directory");
    return 0;
}

// ---------------------------------------------------------------------------------
// reading: a small JSON parser for exactly the subset safetensors headers use (objects,
// arrays of non-negative integers, strings), written here rather than pulling in a
// JSON library. It follows the expected schema as it goes, so it builds no tree, and
// every malformed input stops it with an error naming the byte where it went wrong.

typedef struct {
    ckpt_file *f;
    const char *s; size_t n, i;   // the header text, its length, the read position
    char *out;                    // where the next decoded string goes (f->strings)
} jparser;

static int jfail(jparser *p, const char *fmt, ...) {
    char msg[CKPT_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    // byte offsets count from the start of the file, as a hex dump would show them
    return errf(p->f->err, p->f->path, "bad header JSON at byte %zu: %s", p->i + 8, msg);
}

static void jws(jparser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

// Skips whitespace and consumes c, or fails saying what was there instead.
static int jexpect(jparser *p, char c, const char *context) {
    jws(p);
    if (p->i >= p->n) return jfail(p, "expected '%c' %s, found the end of the header", c, context);
    if (p->s[p->i] != c) {
        unsigned char got = (unsigned char)p->s[p->i];
        if (got >= 0x20 && got < 0x7f) return jfail(p, "expected '%c' %s, found '%c'", c, context, got);
        return jfail(p, "expected '%c' %s, found byte 0x%02x", c, context, got);
    }
    p->i++;
    return 0;
}

static int jpeek(jparser *p) { jws(p); return p->i < p->n ? (unsigned char)p->s[p->i] : -1; }

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

// Decodes a string literal into p->out and returns it via *out. A decoded string plus
// its '\0' never takes more bytes than its literal, so f->strings (header length + 1)
// always has room.
static int jstring(jparser *p, const char **out, const char *context) {
    if (jexpect(p, '"', context)) return -1;
    char *d = p->out;
    *out = d;
    for (;;) {
        if (p->i >= p->n) return jfail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') { p->i++; break; }
        if (c < 0x20) return jfail(p, "control byte 0x%02x inside a string", c);
        if (c != '\\') { *d++ = (char)c; p->i++; continue; }
        if (p->i + 1 >= p->n) return jfail(p, "unterminated string");
        char e = p->s[p->i + 1];
        p->i += 2;
        switch (e) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u': {
            unsigned u;
            if (p->i + 4 > p->n || hex4(p->s + p->i, &u)) return jfail(p, "bad \\u escape");
            p->i += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {   // a UTF-16 surrogate pair
                unsigned lo;
                if (p->i + 6 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' || hex4(p->s + p->i + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return jfail(p, "unpaired surrogate in \\u escape");
                p->i += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                return jfail(p, "unpaired surrogate in \\u escape");
            }
            if (u == 0) return jfail(p, "\\u0000 inside a string");   // would cut a C string short
            if (u < 0x80) *d++ = (char)u;
            else if (u < 0x800) { *d++ = (char)(0xC0 | (u >> 6)); *d++ = (char)(0x80 | (u & 0x3F)); }
            else if (u < 0x10000) {
                *d++ = (char)(0xE0 | (u >> 12)); *d++ = (char)(0x80 | ((u >> 6) & 0x3F)); *d++ = (char)(0x80 | (u & 0x3F));
            } else {
                *d++ = (char)(0xF0 | (u >> 18)); *d++ = (char)(0x80 | ((u >> 12) & 0x3F));
                *d++ = (char)(0x80 | ((u >> 6) & 0x3F)); *d++ = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default: p->i--; return jfail(p, "bad escape '\\%c'", e);
        }
    }
    *d++ = 0;
    p->out = d;
    return 0;
}

// A non-negative integer (all that shapes and offsets hold), at most INT64_MAX.
static int juint(jparser *p, uint64_t *v, const char *context) {
    jws(p);
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return jfail(p, "expected a non-negative integer %s", context);
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return jfail(p, "leading zero in a number %s", context);
    uint64_t x = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned dgt = (unsigned)(p->s[p->i] - '0');
        if (x > ((uint64_t)INT64_MAX - dgt) / 10) return jfail(p, "number too large %s", context);
        x = x * 10 + dgt;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return jfail(p, "expected an integer %s, found a fraction or exponent", context);
    *v = x;
    return 0;
}

// "[a, b, ...]" of at most max integers; the count goes to *count.
static int juint_array(jparser *p, uint64_t *vals, int max, int *count, const char *context) {
    if (jexpect(p, '[', context)) return -1;
    *count = 0;
    if (jpeek(p) == ']') { p->i++; return 0; }
    for (;;) {
        if (*count == max) return jfail(p, "more than %d numbers %s", max, context);
        if (juint(p, &vals[(*count)++], context)) return -1;
        int c = jpeek(p);
        if (c == ',') { p->i++; continue; }
        if (c == ']') { p->i++; return 0; }
        return jexpect(p, ']', context);   // reports what was found instead
    }
}

static int jtensor(jparser *p, ckpt_tensor *t) {
    char ctx[300];
    snprintf(ctx, sizeof ctx, "in tensor '%.200s'", t->name);
    if (jexpect(p, '{', ctx)) return -1;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (jpeek(p) != '}')
        for (;;) {
            const char *key;
            char *mark = p->out;
            size_t at = p->i;
            if (jstring(p, &key, ctx) || jexpect(p, ':', ctx)) return -1;
            if (strcmp(key, "dtype") == 0) {
                if (have_dtype++) { p->i = at; return jfail(p, "\"dtype\" given twice %s", ctx); }
                const char *dt;
                size_t vat = (jws(p), p->i);
                if (jstring(p, &dt, ctx)) return -1;
                if (ckpt_dtype_from_name(dt, &t->dtype)) { p->i = vat; return jfail(p, "unknown dtype \"%.40s\" %s", dt, ctx); }
            } else if (strcmp(key, "shape") == 0) {
                if (have_shape++) { p->i = at; return jfail(p, "\"shape\" given twice %s", ctx); }
                uint64_t v[CKPT_MAX_DIMS];
                if (juint_array(p, v, CKPT_MAX_DIMS, &t->ndim, ctx)) return -1;
                for (int d = 0; d < t->ndim; d++) t->shape[d] = (int64_t)v[d];
            } else if (strcmp(key, "data_offsets") == 0) {
                if (have_offsets++) { p->i = at; return jfail(p, "\"data_offsets\" given twice %s", ctx); }
                uint64_t v[2];
                int k;
                size_t vat = (jws(p), p->i);
                if (juint_array(p, v, 2, &k, ctx)) return -1;
                if (k != 2) { p->i = vat; return jfail(p, "\"data_offsets\" needs 2 numbers, has %d, %s", k, ctx); }
                t->begin = v[0]; t->end = v[1];
            } else {
                p->i = at;
                return jfail(p, "unknown field \"%.40s\" %s", key, ctx);
            }
            p->out = mark;   // the field name is not kept
            int c = jpeek(p);
            if (c == ',') { p->i++; continue; }
            break;
        }
    if (jexpect(p, '}', ctx)) return -1;
    if (!have_dtype || !have_shape || !have_offsets)
        return jfail(p, "tensor '%.200s' has no \"%s\"", t->name, !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return 0;
}

static int jmetadata(jparser *p) {
    ckpt_file *f = p->f;
    if (jexpect(p, '{', "after \"__metadata__\"")) return -1;
    int cap = 0;
    if (jpeek(p) != '}')
        for (;;) {
            const char *k, *v;
            size_t at = (jws(p), p->i);
            if (jstring(p, &k, "in __metadata__") || jexpect(p, ':', "in __metadata__")) return -1;
            if (jpeek(p) != '"') return jfail(p, "metadata '%.200s' is not a string (safetensors metadata maps strings to strings)", k);
            if (jstring(p, &v, "in __metadata__")) return -1;
            for (int i = 0; i < f->nmeta; i++)
                if (strcmp(f->meta[i].key, k) == 0) { p->i = at; return jfail(p, "metadata '%.200s' given twice", k); }
            if (f->nmeta == cap) {
                cap = cap ? 2 * cap : 16;
                ckpt_meta *m = realloc(f->meta, (size_t)cap * sizeof *m);
                if (!m) return jfail(p, "out of memory");
                f->meta = m;
            }
            f->meta[f->nmeta].key = (char *)k;
            f->meta[f->nmeta].value = (char *)v;
            f->nmeta++;
            int c = jpeek(p);
            if (c == ',') { p->i++; continue; }
            break;
        }
    return jexpect(p, '}', "to close \"__metadata__\"");
}

static int jheader(jparser *p) {
    ckpt_file *f = p->f;
    int cap = 0, have_meta = 0;
    if (jexpect(p, '{', "at the start of the header")) return -1;
    if (jpeek(p) != '}')
        for (;;) {
            const char *name;
            size_t at = (jws(p), p->i);
            if (jstring(p, &name, "(a tensor name)") || jexpect(p, ':', "after a tensor name")) return -1;
            if (strcmp(name, "__metadata__") == 0) {
                if (have_meta++) { p->i = at; return jfail(p, "\"__metadata__\" given twice"); }
                if (jmetadata(p)) return -1;
            } else {
                if (f->ntensors == cap) {
                    cap = cap ? 2 * cap : 64;
                    ckpt_tensor *t = realloc(f->tensors, (size_t)cap * sizeof *t);
                    if (!t) return jfail(p, "out of memory");
                    f->tensors = t;
                }
                ckpt_tensor *t = &f->tensors[f->ntensors++];
                memset(t, 0, sizeof *t);
                t->name = name;
                if (jtensor(p, t)) return -1;
            }
            int c = jpeek(p);
            if (c == ',') { p->i++; continue; }
            break;
        }
    if (jexpect(p, '}', "to close the header")) return -1;
    jws(p);   // the padding
    if (p->i != p->n) return jfail(p, "unexpected bytes after the header's closing '}'");
    return 0;
}

// The header must be UTF-8 (the reference reader refuses anything else).
static long bad_utf8_at(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 && c >= 0xC2 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 && c <= 0xF4 ? 4 : 0;
        if (len == 0 || i + (size_t)len > n) return (long)i;
        for (int k = 1; k < len; k++)
            if ((s[i + (size_t)k] & 0xC0) != 0x80) return (long)i;
        i += (size_t)len;
    }
    return -1;
}

static int cmp_offsets(const void *a, const void *b) {
    const ckpt_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int validate_layout(ckpt_file *f, uint64_t data_size) {
    char sh[256], nbs[32];
    for (int i = 0; i < f->ntensors; i++) {
        ckpt_tensor *t = &f->tensors[i];
        if (t->end < t->begin)
            return errf(f->err, f->path, "tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] that run backwards",
                        t->name, t->begin, t->end);
        if (t->end > data_size)
            return errf(f->err, f->path,
                        "tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] past the end of the data (%" PRIu64
                        " bytes): the file is truncated or the offsets are wrong", t->name, t->begin, t->end, data_size);
        int64_t nb = nbytes_checked(t->dtype, t->ndim, t->shape);
        if (nb < 0 || (uint64_t)nb != t->end - t->begin) {
            if (nb < 0) snprintf(nbs, sizeof nbs, "too many");
            else snprintf(nbs, sizeof nbs, "%" PRId64, nb);
            return errf(f->err, f->path, "tensor '%s' is %s %s, %s bytes, but its data_offsets [%" PRIu64 ", %" PRIu64
                        "] span %" PRIu64, t->name, ckpt_dtype_name(t->dtype), shape_str(sh, sizeof sh, t->ndim, t->shape),
                        nbs, t->begin, t->end, t->end - t->begin);
        }
    }
    // The data must be covered exactly once, with no gaps: the header may list the
    // tensors in any order (the reference writer sorts names, not offsets), so sort first.
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_offsets);
    uint64_t at = 0;
    for (int i = 0; i < f->ntensors; i++) {
        ckpt_tensor *t = &f->tensors[i];
        if (t->begin < at)
            return errf(f->err, f->path, "tensors '%s' and '%s' overlap (data_offsets [%" PRIu64 ", %" PRIu64 "] and [%" PRIu64
                        ", %" PRIu64 "])", f->tensors[i - 1].name, t->name, f->tensors[i - 1].begin, f->tensors[i - 1].end,
                        t->begin, t->end);
        if (t->begin > at)
            return errf(f->err, f->path, "data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor (before '%s')", at,
                        t->begin, t->name);
        at = t->end;
    }
    if (at != data_size)
        return errf(f->err, f->path, "%" PRIu64 " bytes after the last tensor's data: the offsets do not cover the file",
                    data_size - at);
    return 0;
}

static int cmp_name(const void *a, const void *b) { return cmp_tensor_ptr_name(a, b); }
const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name);

// Every "crc32:NAME" of the metadata against the bytes of tensor NAME; the keys are
// then dropped from f->meta (they are the format's, not the caller's metadata).
static int verify_checksums(ckpt_file *f) {
    int kept = 0;
    for (int i = 0; i < f->nmeta; i++) {
        const char *key = f->meta[i].key, *v = f->meta[i].value;
        if (!is_crc_key(key)) { f->meta[kept++] = f->meta[i]; continue; }
        const char *name = key + sizeof CRC_PREFIX - 1;
        const ckpt_tensor *t = ckpt_find(f, name);
        if (!t) return errf(f->err, f->path, "metadata '%.200s' is the checksum of a tensor the file does not have", key);
        char *end;
        errno = 0;
        unsigned long want = strtoul(v, &end, 16);
        if (strlen(v) != 8 || *end || errno || want > 0xffffffffUL)
            return errf(f->err, f->path, "metadata '%.200s' is \"%.60s\", not a CRC-32 (8 hex digits)", key, v);
        uint32_t got = data_crc(t->data, t->end - t->begin);
        if (got != (uint32_t)want)
            return errf(f->err, f->path, "tensor '%.200s': its data do not match their checksum (CRC-32 %08lx in the header, "
                        "%08" PRIx32 " of the bytes): the file is corrupt", name, want, got);
    }
    f->nmeta = kept;
    return 0;
}

static int ckpt_open_fd(ckpt_file *f, const char *path);
int ckpt_open(ckpt_file *f, const char *path) {
    int rc = ckpt_open_fd(f, path);
    if (rc && f->fd >= 0) { close(f->fd); f->fd = -1; }
    return rc;
}
static int ckpt_open_fd(ckpt_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = xstrdup(path);
    if (!f->path) return errf(f->err, path, "out of memory");
    // O_NONBLOCK: opening a FIFO with no writer would wait forever (it is refused below)
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return errf(f->err, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return SYSFAIL(f->err, path, "fstat"); }
    if (!S_ISREG(st.st_mode)) { close(fd); return errf(f->err, path, "not a regular file"); }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        close(fd);
        return errf(f->err, path, "file too short (%" PRIu64 " bytes): a safetensors file starts with an 8-byte header length", size);
    }
    // mmap rather than read: a checkpoint can be most of RAM (the header, the checksums
    // and ckpt_load's conversions read the mapping); the descriptor is kept for
    // ckpt_read_into, which reads each tensor once, straight from the page cache.
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) { close(fd); return SYSFAIL(f->err, path, "mmap"); }
    f->fd = fd;
    f->map = map; f->map_size = (size_t)size;

    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)f->map[i] << (8 * i);
    if (hlen == 0) return errf(f->err, path, "header length is 0: not a safetensors file");
    if (hlen > CKPT_MAX_HEADER || hlen > size - 8)
        return errf(f->err, path, "header length %" PRIu64 " is larger than the file (%" PRIu64 " bytes): truncated or not a safetensors file",
                    hlen, size);
    const char *hdr = (const char *)f->map + 8;
    long bad = bad_utf8_at((const unsigned char *)hdr, hlen);
    if (bad >= 0) return errf(f->err, path, "bad header JSON at byte %ld: not UTF-8", bad + 8);
    if (!(f->strings = malloc(hlen + 1))) return errf(f->err, path, "out of memory");
    jparser p = {.f = f, .s = hdr, .n = hlen, .i = 0, .out = f->strings};
    if (jheader(&p)) return -1;

    if (f->ntensors > 0) {
        if (!(f->by_name = malloc((size_t)f->ntensors * sizeof *f->by_name))) return errf(f->err, path, "out of memory");
        if (validate_layout(f, size - 8 - hlen)) return -1;
        for (int i = 0; i < f->ntensors; i++) {
            f->tensors[i].data = f->map + 8 + hlen + f->tensors[i].begin;
            f->by_name[i] = &f->tensors[i];
        }
        qsort(f->by_name, (size_t)f->ntensors, sizeof *f->by_name, cmp_name);
        for (int i = 1; i < f->ntensors; i++)
            if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
                return errf(f->err, path, "tensor '%s' appears twice in the header", f->by_name[i]->name);
    } else if (size - 8 - hlen != 0) {
        return errf(f->err, path, "%" PRIu64 " bytes of data but no tensors", size - 8 - hlen);
    }
    return verify_checksums(f);
}

void ckpt_close(ckpt_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    if (f->fd >= 0) close(f->fd);
    free(f->path); free(f->strings); free(f->tensors); free(f->by_name); free(f->meta);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name) {
    ckpt_tensor key = {.name = name}, *kp = &key;
    if (f->ntensors == 0) return NULL;
    ckpt_tensor **hit = bsearch(&kp, f->by_name, (size_t)f->ntensors, sizeof *f->by_name, cmp_name);
    return hit ? *hit : NULL;
}

// Compares one tensor of the model with the checkpoint's; 0 when they agree.
static int check_one(ckpt_file *f, const char *name, ckpt_dtype dt, int ndim, const int64_t *shape, const ckpt_tensor **out) {
    const ckpt_tensor *t = ckpt_find(f, name);
    if (!t) return errf(f->err, f->path, "tensor '%s' of this model is missing from the checkpoint", name);
    char a[256], b[256];
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same)
        return errf(f->err, f->path, "tensor '%s' has shape %s in the checkpoint but %s in this model", name,
                    shape_str(a, sizeof a, t->ndim, t->shape), shape_str(b, sizeof b, ndim, shape));
    if (t->dtype != dt)
        return errf(f->err, f->path, "tensor '%s' has dtype %s in the checkpoint but %s in this model", name,
                    ckpt_dtype_name(t->dtype), ckpt_dtype_name(dt));
    if (out) *out = t;
    return 0;
}

int ckpt_read_into(ckpt_file *f, const char *name, ckpt_dtype dt, int ndim, const int64_t *shape, void *dst) {
    const ckpt_tensor *t;
    if (check_one(f, name, dt, ndim, shape, &t)) return -1;
    // pread, not a copy from the mapping: the mapping's pages are each a page fault at
    // their first touch (8-15 us in a VM with shadow page tables: 4.6 MB of paw's
    // weights, 1100 pages, took 8-10 ms through the mapping and 2 through pread); the
    // mapping where the descriptor cannot read them
    size_t n = (size_t)(t->end - t->begin), done = 0;
    const unsigned char *src = (const unsigned char *)t->data;
    while (f->fd >= 0 && done < n) {
        ssize_t r = pread(f->fd, (char *)dst + done, n - done, (off_t)(src - f->map) + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += (size_t)r;
    }
    if (done < n) memcpy((char *)dst + done, src + done, n - done);
    return 0;
}

int ckpt_check_against(ckpt_file *f, const ckpt_tensor *expected, int n) {
    for (int i = 0; i < n; i++)
        if (check_one(f, expected[i].name, expected[i].dtype, expected[i].ndim, expected[i].shape, NULL)) return -1;
    // Every tensor of the model is there; is some checkpoint tensor not in the model?
    // Name the first one in file order.
    const ckpt_tensor **e = malloc((size_t)(n > 0 ? n : 1) * sizeof *e);
    if (!e) return errf(f->err, f->path, "out of memory");
    for (int i = 0; i < n; i++) e[i] = &expected[i];
    qsort(e, (size_t)n, sizeof *e, cmp_name);
    for (int i = 0; i < f->ntensors; i++) {
        const ckpt_tensor *kp = &f->tensors[i];
        if (!bsearch(&kp, e, (size_t)n, sizeof *e, cmp_name)) {
            free(e);
            return errf(f->err, f->path, "tensor '%s' in the checkpoint is not in this model", kp->name);
        }
    }
    free(e);
    if (n != f->ntensors) return errf(f->err, f->path, "this model lists a tensor twice");
    return 0;
}

// ---------------------------------------------------------------------------------
// weights from elsewhere (load_raw)

static int is_float_dtype(ckpt_dtype dt) { return dt == CKPT_F64 || dt == CKPT_F32 || dt == CKPT_F16 || dt == CKPT_BF16; }
static int is_int_dtype(ckpt_dtype dt) { return dt == CKPT_I64 || dt == CKPT_I32 || dt == CKPT_I16 || dt == CKPT_I8 || dt == CKPT_U8; }

// The value of one stored float element (every F16/BF16/F32 value is exact as a double).
static double float_at(ckpt_dtype dt, const unsigned char *p) {
    switch (dt) {
    case CKPT_F64: { double v; memcpy(&v, p, 8); return v; }
    case CKPT_F32: { float v; memcpy(&v, p, 4); return v; }
    case CKPT_BF16: {
        uint32_t bits = (uint32_t)(p[0] | p[1] << 8) << 16;
        float v;
        memcpy(&v, &bits, 4);
        return v;
    }
    default: {   // F16: sign, 5 exponent bits (bias 15), 10 fraction bits
        unsigned h = (unsigned)(p[0] | p[1] << 8), e = (h >> 10) & 31, m = h & 1023;
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, (int)e - 25);
        return (h & 0x8000) ? -v : v;
    }
    }
}

// x rounded to nearest even with `bits` significant bits, the smallest normal 2^emin
// (below it, the subnormals' fixed quantum), overflowing to infinity above `max`:
// the value a 16-bit format stores, exactly as a double (scaling by 2^k is exact).
static double round_to_format(double x, int bits, int emin, double max) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    frexp(fabs(x), &e);   // |x| in [2^(e-1), 2^e)
    int q = (e - 1 < emin ? emin : e - 1) - (bits - 1);   // the quantum's exponent
    double r = ldexp(nearbyint(ldexp(x, -q)), q);
    return fabs(r) > max ? copysign(INFINITY, x) : r;
}

// Stores x as dtype dt.  A double goes to F16/BF16 through float32 (two roundings, as
// torch's .to() converts: c10::Half and c10::BFloat16 are made from a float).
static void float_put(ckpt_dtype dt, unsigned char *p, double x) {
    if (dt == CKPT_F16 || dt == CKPT_BF16) x = (float)x;
    switch (dt) {
    case CKPT_F64: memcpy(p, &x, 8); return;
    case CKPT_F32: { float v = (float)x; memcpy(p, &v, 4); return; }
    case CKPT_BF16: {
        uint32_t bits;
        if (isnan(x)) bits = 0x7FC00000u | (signbit(x) ? 0x80000000u : 0);
        else { float v = (float)round_to_format(x, 8, -126, 0x1.FEp127); memcpy(&bits, &v, 4); }
        p[0] = (unsigned char)(bits >> 16); p[1] = (unsigned char)(bits >> 24);
        return;
    }
    default: {   // F16
        unsigned h = signbit(x) ? 0x8000u : 0;
        double a = fabs(round_to_format(x, 11, -14, 65504.0));
        if (isnan(x)) h |= 0x7E00;
        else if (isinf(a)) h |= 0x7C00;
        else if (a < 0x1p-14) h |= (unsigned)(a * 0x1p24);   // subnormal (2^-14 itself reads as exponent 1)
        else {
            int e;
            double m = frexp(a, &e);   // a = m 2^e, m in [0.5, 1)
            h |= (unsigned)(e + 14) << 10 | ((unsigned)(m * 2048) & 1023);
        }
        p[0] = (unsigned char)h; p[1] = (unsigned char)(h >> 8);
        return;
    }
    }
}

static int64_t int_at(ckpt_dtype dt, const unsigned char *p) {
    switch (dt) {
    case CKPT_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case CKPT_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case CKPT_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case CKPT_I8: return (int8_t)p[0];
    default: return p[0];   // U8
    }
}

int ckpt_convert(ckpt_dtype to, void *dst, ckpt_dtype from, const void *src, int64_t n) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t ss = (size_t)ckpt_dtype_size(from), ds = (size_t)ckpt_dtype_size(to);
    if (to == from) { memcpy(dst, src, (size_t)n * ss); return 0; }
    if (is_float_dtype(to) && is_float_dtype(from)) {
        for (int64_t i = 0; i < n; i++) float_put(to, d + (size_t)i * ds, float_at(from, s + (size_t)i * ss));
        return 0;
    }
    if (to == CKPT_I64 && is_int_dtype(from)) {
        for (int64_t i = 0; i < n; i++) { int64_t v = int_at(from, s + (size_t)i * ss); memcpy(d + (size_t)i * 8, &v, 8); }
        return 0;
    }
    return -1;
}

// Appends "'name'" (comma-separated) to a list in buf, or "..." once it would not fit.
static void list_append(char *buf, size_t len, size_t *k, int *first, int *cut, const char *name) {
    if (*cut) return;
    size_t need = strlen(name) + 8;
    if (*k + need + 8 >= len) { *k += (size_t)snprintf(buf + *k, len - *k, "%s...", *first ? "" : ", "); *cut = 1; return; }
    *k += (size_t)snprintf(buf + *k, len - *k, "%s'%s'", *first ? "" : ", ", name);
    *first = 0;
}

int ckpt_load_raw(const char *path, const ckpt_slot *slots, int n, int strict, char *err, char *note, size_t note_len) {
    ckpt_file f;
    if (note_len) note[0] = 0;
    if (ckpt_open(&f, path)) { memcpy(err, f.err, CKPT_ERR_LEN); ckpt_close(&f); return -1; }
    char a[256], b[256];
    int rc = 0, loaded = 0, missing = 0, unexpected = 0;
    // a loom checkpoint (it has a spec_hash) holds the optimizer's state beside the
    // weights: loading its weights is Fabric's load(path, {"model": model}), not an
    // unexpected tensor
    int loom_ckpt = ckpt_meta_get(&f, "spec_hash") != NULL;
    // every slot's tensor: there, of this shape and kind (strict: there at all)
    for (int i = 0; i < n && !rc; i++) {
        const ckpt_tensor *t = ckpt_find(&f, slots[i].name);
        if (!t) {
            missing++;
            if (strict) rc = errf(err, path, "tensor '%s' of this model is missing from the file (strict = false loads the others)", slots[i].name);
            continue;
        }
        int same = t->ndim == slots[i].ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == slots[i].shape[d];
        if (!same) {
            rc = errf(err, path, "tensor '%s' has shape %s in the file but %s in this model", slots[i].name,
                      shape_str(a, sizeof a, t->ndim, t->shape), shape_str(b, sizeof b, slots[i].ndim, slots[i].shape));
        } else if (!(is_float_dtype(slots[i].dtype) ? is_float_dtype(t->dtype) : is_int_dtype(t->dtype))) {
            rc = errf(err, path, "tensor '%s' has dtype %s in the file; this model's is %s (%s)", slots[i].name,
                      ckpt_dtype_name(t->dtype), ckpt_dtype_name(slots[i].dtype),
                      is_float_dtype(slots[i].dtype) ? "F64, F32, F16 or BF16 convert to it" : "an integer dtype converts to it");
        }
    }
    // every tensor of the file: a slot (strict)
    for (int i = 0; i < f.ntensors && !rc; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = strcmp(f.tensors[i].name, slots[j].name) == 0;
        if (!found && loom_ckpt && strncmp(f.tensors[i].name, "optimizer.", 10) == 0) continue;
        if (!found) {
            unexpected++;
            if (strict) rc = errf(err, path, "tensor '%s' in the file is not in this model (strict = false skips it)", f.tensors[i].name);
        }
    }
    for (int i = 0; i < n && !rc; i++) {
        const ckpt_tensor *t = ckpt_find(&f, slots[i].name);
        if (!t) continue;
        if (ckpt_convert(slots[i].dtype, slots[i].dst, t->dtype, t->data, ckpt_numel(t->ndim, t->shape)))
            rc = errf(err, path, "tensor '%s': cannot convert %s to %s", slots[i].name, ckpt_dtype_name(t->dtype), ckpt_dtype_name(slots[i].dtype));
        else loaded++;
    }
    if (!rc && (missing || unexpected) && note_len) {
        // PyTorch's _IncompatibleKeys(missing_keys=[...], unexpected_keys=[...])
        size_t k = (size_t)snprintf(note, note_len, "%s: loaded %d of this model's %d tensors (strict = false): missing_keys=[", path, loaded, n);
        int first = 1, cut = 0;
        for (int i = 0; i < n && k < note_len; i++)
            if (!ckpt_find(&f, slots[i].name)) list_append(note, note_len, &k, &first, &cut, slots[i].name);
        if (k < note_len) k += (size_t)snprintf(note + k, note_len - k, "], unexpected_keys=[");
        first = 1; cut = 0;
        for (int i = 0; i < f.ntensors && k < note_len; i++) {
            int found = 0;
            for (int j = 0; j < n && !found; j++) found = strcmp(f.tensors[i].name, slots[j].name) == 0;
            if (!found && !(loom_ckpt && strncmp(f.tensors[i].name, "optimizer.", 10) == 0)) list_append(note, note_len, &k, &first, &cut, f.tensors[i].name);
        }
        if (k < note_len) snprintf(note + k, note_len - k, "]");
    }
    ckpt_close(&f);
    return rc;
}

const char *ckpt_meta_get(const ckpt_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

int ckpt_meta_get_i64(ckpt_file *f, const char *key, int64_t *out) {
    const char *v = ckpt_meta_get(f, key);
    if (!v) return errf(f->err, f->path, "metadata '%s' is missing", key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return errf(f->err, f->path, "metadata '%s' is \"%.60s\", not an integer", key, v);
    *out = (int64_t)x;
    return 0;
}

int ckpt_meta_get_i64_in(ckpt_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    int64_t v;
    if (ckpt_meta_get_i64(f, key, &v)) return -1;
    if (v < lo || v > hi)
        return errf(f->err, f->path, "metadata '%s' is %" PRId64 ", out of range [%" PRId64 ", %" PRId64 "]", key, v, lo, hi);
    *out = v;
    return 0;
}

int ckpt_meta_get_f64(ckpt_file *f, const char *key, double *out) {
    const char *v = ckpt_meta_get(f, key);
    if (!v) return errf(f->err, f->path, "metadata '%s' is missing", key);
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end) return errf(f->err, f->path, "metadata '%s' is \"%.60s\", not a number", key, v);
    *out = x;
    return 0;
}

// ---------------------------------------------------------------------------------
// a training run's plan and position

int ckpt_run_save(ckpt_writer *w, const ckpt_run *r) {
    const struct { const char *key; int64_t v; } kv[] = {
        {"step", r->step}, {"epoch", r->epoch}, {"batch", r->batch}, {"seed", r->seed},
        {"loader_epoch", r->loader_epoch}, {"loader_batch", r->loader_batch},
        {"epochs", r->epochs}, {"max_steps", r->max_steps}, {"total_steps", r->total_steps},
        {"batch_size", r->batch_size}, {"train_size", r->train_size},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (ckpt_writer_set_meta_i64(w, kv[i].key, kv[i].v)) return -1;
    return 0;
}

int ckpt_run_load(ckpt_file *f, const char *spec_hash, ckpt_run *r) {
    if (spec_hash) {
        const char *h = ckpt_meta_get(f, "spec_hash");
        if (!h) return errf(f->err, f->path, "metadata 'spec_hash' is missing: not a checkpoint of a loom training run");
        if (strcmp(h, spec_hash) != 0)
            return errf(f->err, f->path, "a checkpoint of another version of the spec (spec hash %.40s; this program's is %s): "
                        "resume it with the program generated from that spec", h, spec_hash);
    }
    // the plan first: the position is checked against it
    if (ckpt_meta_get_i64_in(f, "epochs", 0, CKPT_MAX_EPOCHS, &r->epochs) ||
        ckpt_meta_get_i64_in(f, "max_steps", 0, CKPT_MAX_COUNT, &r->max_steps) ||
        ckpt_meta_get_i64_in(f, "total_steps", 0, CKPT_MAX_COUNT, &r->total_steps) ||
        ckpt_meta_get_i64_in(f, "batch_size", 1, CKPT_MAX_COUNT, &r->batch_size) ||
        ckpt_meta_get_i64_in(f, "train_size", 1, CKPT_MAX_COUNT, &r->train_size) ||
        ckpt_meta_get_i64_in(f, "seed", 0, INT64_MAX, &r->seed) ||
        ckpt_meta_get_i64_in(f, "step", 0, CKPT_MAX_COUNT, &r->step) ||
        ckpt_meta_get_i64_in(f, "epoch", 0, CKPT_MAX_EPOCHS, &r->epoch) ||
        ckpt_meta_get_i64_in(f, "batch", 0, r->train_size, &r->batch) ||
        ckpt_meta_get_i64_in(f, "loader_epoch", 0, CKPT_MAX_EPOCHS, &r->loader_epoch) ||
        ckpt_meta_get_i64_in(f, "loader_batch", 0, r->train_size, &r->loader_batch))
        return -1;
    return 0;
}

int ckpt_run_resume(const char *path, const ckpt_run *saved, ckpt_run *run, unsigned given, char *err) {
    if ((given & CKPT_GIVEN_SEED) && run->seed != saved->seed)
        return errf(err, path, "--seed %" PRId64 " contradicts the checkpoint's seed %" PRId64
                    " (its shuffle and dropout continue from it): resume without --seed", run->seed, saved->seed);
    unsigned differ = 0;
    if (!(given & CKPT_GIVEN_EPOCHS)) run->epochs = saved->epochs;
    else if (run->epochs != saved->epochs) differ |= CKPT_GIVEN_EPOCHS;
    if (!(given & CKPT_GIVEN_MAX_STEPS)) run->max_steps = saved->max_steps;
    else if (run->max_steps != saved->max_steps) differ |= CKPT_GIVEN_MAX_STEPS;
    run->seed = saved->seed;
    return (int)differ;
}

int ckpt_run_check(const char *path, const ckpt_run *saved, const ckpt_run *run, int64_t batches_per_epoch,
                   int64_t steps_per_epoch, unsigned overridden, int spans, char *err, char *note) {
    note[0] = '\0';
    if (saved->train_size != run->train_size)
        return errf(err, path, "the checkpoint's run trained on %" PRId64 " samples, this data has %" PRId64
                    " (the continuation would shuffle other samples)", saved->train_size, run->train_size);
    if (saved->batch_size != run->batch_size)
        return errf(err, path, "the checkpoint's run used batches of %" PRId64 ", this program %" PRId64, saved->batch_size, run->batch_size);
    int64_t max_epochs = saved->epochs ? saved->epochs
                       : steps_per_epoch ? (saved->max_steps + steps_per_epoch - 1) / steps_per_epoch : 0;
    // steps: at most one per micro-batch of its epochs, and at most max_steps
    int64_t most = INT64_MAX;
    if (saved->epochs && __builtin_mul_overflow(saved->epochs, batches_per_epoch, &most)) most = INT64_MAX;
    if (saved->max_steps && saved->max_steps < most) most = saved->max_steps;
    if (saved->step > most)
        return errf(err, path, "metadata 'step' is %" PRId64 ", more than the run's %" PRId64 " steps", saved->step, most);
    if (saved->epoch > max_epochs)
        return errf(err, path, "metadata 'epoch' is %" PRId64 ", past the run's %" PRId64 " epochs", saved->epoch, max_epochs);
    if (saved->batch > batches_per_epoch || saved->loader_batch > batches_per_epoch)
        return errf(err, path, "metadata 'batch' (%" PRId64 ") or 'loader_batch' (%" PRId64 ") is past the %" PRId64
                    " batches of an epoch", saved->batch, saved->loader_batch, batches_per_epoch);
    if (saved->loader_epoch > max_epochs)
        return errf(err, path, "metadata 'loader_epoch' is %" PRId64 ", past the run's %" PRId64 " epochs", saved->loader_epoch, max_epochs);
    if (!overridden) return 0;
    const char *flag = overridden & CKPT_GIVEN_EPOCHS ? "--epochs" : "--max-steps";
    int64_t v = overridden & CKPT_GIVEN_EPOCHS ? run->epochs : run->max_steps;
    int64_t was = overridden & CKPT_GIVEN_EPOCHS ? saved->epochs : saved->max_steps;
    if (spans && run->total_steps != saved->total_steps)
        snprintf(note, CKPT_ERR_LEN, "note: %s %" PRId64 " overrides the checkpoint's %" PRId64 ": the learning-rate schedule now spans %"
                 PRId64 " steps, not the %" PRId64 " it was planned for (resume without %s to continue that run)",
                 flag, v, was, run->total_steps, saved->total_steps, flag);
    else snprintf(note, CKPT_ERR_LEN, "note: %s %" PRId64 " overrides the checkpoint's %" PRId64 " (this run stops at step %" PRId64 ")",
             flag, v, was, run->total_steps);
    return 0;
}

// ---------------------------------------------------------------------------------
// the run directory

int ckpt_dir_lock(const char *dir, char *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errf(err, dir, "cannot open the directory: %s", strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return errf(err, dir, "another training run is using this directory (--out): wait for it to finish or choose another");
        return errf(err, dir, "cannot lock the directory: %s", strerror(e));
    }
    return fd;
}

int ckpt_dir_clean(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        const char *tag = strstr(e->d_name, ".safetensors.tmp.");
        if (!tag) continue;
        char *end;
        errno = 0;
        long pid = strtol(tag + strlen(".safetensors.tmp."), &end, 10);
        if (errno || *end || pid <= 0) continue;   // not one of ours
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   // its writer is alive (or not ours to ask)
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        if (remove(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

void ckpt_pending_add(ckpt_pending *p, const char *path) {
    if (p->n < CKPT_PENDING_MAX) snprintf(p->path[p->n++], sizeof p->path[0], "%s", path);
}

void ckpt_pending_remove(ckpt_pending *p) {
    for (int i = 0; i < p->n; i++) remove(p->path[i]);
    p->n = 0;
}
