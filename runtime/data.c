// Data: errors, arrays, files through zlib, and the datasets (Fashion-MNIST, .npy
// fields, synthetic) over a shared, refcounted store.  See data.h for the API.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "data_internal.h"
#include "philox.h"

// ----------------------------------------------------------------------------
// errors, dtypes, arrays

int data_fail(data_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int data_ok(data_err *err) {
    if (err) { err->code = DATA_OK; err->msg[0] = '\0'; }
    return DATA_OK;
}

void *data_malloc_at(size_t bytes, const char *what, data_err *err, const char *file, int line) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) data_fail(err, DATA_ENOMEM, "%s:%d: out of memory allocating %zu bytes for %s", file, line, bytes, what);
    return p;
}

static const struct { const char *name; size_t size; } dtypes[DT_COUNT] = {
    [DT_U8] = {"uint8", 1}, [DT_I8] = {"int8", 1}, [DT_I16] = {"int16", 2}, [DT_I32] = {"int32", 4},
    [DT_I64] = {"int64", 8}, [DT_F32] = {"float32", 4}, [DT_F64] = {"float64", 8},
};
const char *dtype_name(data_dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].name : "?"; }
size_t dtype_size(data_dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].size : 0; }

void array_free(data_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}

const char *dims_str(const int64_t *dims, int ndim, char *buf, size_t bufsize) {
    size_t len = 0;
    buf[0] = '\0';
    if (ndim == 0) { snprintf(buf, bufsize, "()"); return buf; }
    for (int d = 0; d < ndim && len < bufsize; d++)
        len += snprintf(buf + len, bufsize - len, d ? "x%lld" : "%lld", (long long)dims[d]);
    return buf;
}

int64_t dims_numel(const int64_t *dims, int ndim, size_t elemsize) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 0) return -1;
        if (dims[d] != 0 && n > INT64_MAX / dims[d]) return -1;
        n *= dims[d];
    }
    if (elemsize && (uint64_t)n > SIZE_MAX / elemsize) return -1;
    return n;
}

// ----------------------------------------------------------------------------
// files: plain or gzip through zlib

int dfile_open(data_file *f, const char *path, data_err *err) {
    memset(f, 0, sizeof *f);
    f->path = path;
    struct stat st;
    if (stat(path, &st) != 0) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return data_fail(err, DATA_EIO, "%s: cannot open: is a directory", path);
    // a FIFO would block the open (and then the read) forever, a device has no end
    if (!S_ISREG(st.st_mode)) return data_fail(err, DATA_EIO, "%s: cannot open: not a regular file", path);
    f->gz = gzopen(path, "rb");
    if (!f->gz) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    // zlib's buffers (this size for the input, twice it for the output) are allocated
    // at the first read: 1 MiB makes the reads of a large file few, but a small file
    // (a label file, a fuzzer's input) needs no more than its own size (8 KiB at least,
    // zlib's default)
    off_t want = st.st_size < (1 << 20) ? st.st_size : (1 << 20);
    gzbuffer(f->gz, want > 8192 ? (unsigned)want : 8192u);
    f->compressed = !gzdirect(f->gz);  // looks at the magic bytes 1f 8b
    f->size = st.st_size;
    return data_ok(err);
}

int64_t dfile_most_left(const data_file *f) {
    if (!f->compressed) return f->size > f->pos ? f->size - f->pos : 0;
    return f->size > INT64_MAX / 1032 ? INT64_MAX : f->size * 1032;
}

// The error zlib holds after a read: 0 if none (or only "unexpected end of file",
// which the caller reports as truncation, seeing fewer bytes than it asked for).
static int dfile_check(data_file *f, const char *context, data_err *err) {
    int errnum;
    const char *zmsg = gzerror(f->gz, &errnum);
    if (errnum == Z_OK) return DATA_OK;
    if (errnum == Z_BUF_ERROR) { f->truncated_gz = 1; return DATA_OK; }
    if (errnum == Z_ERRNO) return data_fail(err, DATA_EIO, "%s: read error while reading %s: %s", f->path, context, strerror(errno));
    if (errnum == Z_MEM_ERROR) return data_fail(err, DATA_ENOMEM, "%s: out of memory in zlib while reading %s", f->path, context);
    size_t plen = strlen(f->path);  // zlib's message starts with "path: "
    if (strncmp(zmsg, f->path, plen) == 0 && zmsg[plen] == ':') zmsg += plen + 2;
    return data_fail(err, DATA_EFORMAT, "%s: corrupt gzip stream (%s)", f->path, zmsg);
}

int dfile_read(data_file *f, void *buf, size_t n, size_t *got, const char *context, data_err *err) {
    *got = 0;
    while (*got < n) {
        size_t chunk = n - *got < (1u << 30) ? n - *got : (1u << 30);
        int r = gzread(f->gz, (char *)buf + *got, (unsigned)chunk);
        if (r > 0) { *got += (size_t)r; f->pos += r; }
        if (r <= 0 || (size_t)r < chunk) break;
    }
    return dfile_check(f, context, err);
}

int dfile_expect_eof(data_file *f, data_err *err) {
    char buf[1 << 14];
    int64_t extra = 0;
    int r;
    while ((r = gzread(f->gz, buf, sizeof buf)) > 0) extra += r;
    int rc = dfile_check(f, "the end of the file", err);
    if (rc) return rc;
    if (extra) return data_fail(err, DATA_EFORMAT, "%s: %lld unexpected bytes after the data (the header says the data ends at byte %lld)",
                                f->path, (long long)extra, (long long)f->pos);
    if (f->truncated_gz)
        return data_fail(err, DATA_ETRUNC, "%s: truncated gzip stream: it ends without its trailer", f->path);
    return data_ok(err);
}

void dfile_close(data_file *f) {
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

// ----------------------------------------------------------------------------
// the store: the samples behind one or more dataset views

enum { SF_ARRAY, SF_SYNTH, SF_TOKENS };

typedef struct {
    int kind;
    // SF_ARRAY: arr (n, *sample shape) in the file's dtype; out = x * a + b for float output
    // (nchan > 1: x * ca[c] + cb[c] for channel c, the sample's first dimension)
    data_array arr;
    double a, b;
    int nchan;
    double ca[IMAGE_MAX_CHANNELS], cb[IMAGE_MAX_CHANNELS];
    // SF_SYNTH
    synth_dist dist;
    double p0, p1;
    uint32_t hash;  // of the field name: the Philox stream of this field
    // SF_TOKENS: sample i is store->tokens[i * stride + shift ...][0, numel)
    int64_t stride, shift;
} store_field;

struct data_store {
    atomic_int refs;
    int64_t n;
    int nfields;
    data_field field[DATA_MAX_FIELDS];
    store_field sf[DATA_MAX_FIELDS];
    uint64_t seed;
    uint16_t *tokens;   // a token dataset's file, shared by its two fields
};

static data_store *store_new(int64_t n, data_err *err) {
    data_store *s = data_malloc(sizeof *s, "a dataset", err);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    atomic_init(&s->refs, 1);
    s->n = n;
    return s;
}

static void store_unref(data_store *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (int f = 0; f < s->nfields; f++) array_free(&s->sf[f].arr);
    free(s->tokens);
    free(s);
}

// Declares field f of s: its name, batch dtype and per-sample shape.
static int store_add_field(data_store *s, const char *name, data_dtype dtype, int ndim, const int64_t *shape, data_err *err) {
    if (s->nfields == DATA_MAX_FIELDS) return data_fail(err, DATA_EARG, "dataset: more than %d fields", DATA_MAX_FIELDS);
    if (!name || !name[0] || strlen(name) >= DATA_NAME_MAX)
        return data_fail(err, DATA_EARG, "dataset: field name '%s' is empty or longer than %d characters", name ? name : "", DATA_NAME_MAX - 1);
    for (int f = 0; f < s->nfields; f++)
        if (strcmp(s->field[f].name, name) == 0) return data_fail(err, DATA_EARG, "dataset: field '%s' given twice", name);
    if (ndim < 0 || ndim > DATA_MAX_DIMS) return data_fail(err, DATA_EARG, "dataset: field '%s' has %d dimensions (0..%d)", name, ndim, DATA_MAX_DIMS);
    data_field *fd = &s->field[s->nfields];
    memset(fd, 0, sizeof *fd);
    snprintf(fd->name, sizeof fd->name, "%s", name);
    fd->dtype = dtype;
    fd->ndim = ndim;
    for (int d = 0; d < ndim; d++) fd->shape[d] = shape[d];
    fd->numel = dims_numel(shape, ndim, dtype_size(dtype));
    if (fd->numel <= 0) return data_fail(err, DATA_EARG, "dataset: field '%s' has an empty or too large sample shape", name);
    fd->nbytes = (size_t)fd->numel * dtype_size(dtype);
    s->nfields++;
    return data_ok(err);
}

// A dataset viewing samples [start, start + n) of s (takes a reference).
static dataset view_of(data_store *s, int64_t start, int64_t n) {
    dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.nfields = s->nfields;
    memcpy(ds.field, s->field, sizeof ds.field);
    ds.start = start;
    ds.n = n;
    ds.store = s;
    atomic_fetch_add(&s->refs, 1);
    return ds;
}

dataset dataset_ref(const dataset *ds) { return view_of(ds->store, ds->start, ds->n); }

void dataset_free(dataset *ds) {
    store_unref(ds->store);
    memset(ds, 0, sizeof *ds);
}

int dataset_field(const dataset *ds, const char *name) {
    for (int f = 0; f < ds->nfields; f++)
        if (strcmp(ds->field[f].name, name) == 0) return f;
    return -1;
}

int dataset_split(const dataset *ds, int64_t val_split, dataset *train, dataset *val, data_err *err) {
    if (val_split < 0 || val_split >= ds->n)
        return data_fail(err, DATA_EARG, "dataset: val_split %lld must be in 0..%lld (the dataset has %lld samples)",
                         (long long)val_split, (long long)ds->n - 1, (long long)ds->n);
    *train = view_of(ds->store, ds->start, ds->n - val_split);
    if (val) *val = view_of(ds->store, ds->start + ds->n - val_split, val_split);
    return data_ok(err);
}

// ----------------------------------------------------------------------------
// dataset_get: one sample of one field

// x[k] of an array of dtype t, as a double (exact for every dtype but int64 > 2^53).
static double elem_get(const void *x, data_dtype t, int64_t k) {
    switch (t) {
    case DT_U8: return ((const uint8_t *)x)[k];
    case DT_I8: return ((const int8_t *)x)[k];
    case DT_I16: return ((const int16_t *)x)[k];
    case DT_I32: return ((const int32_t *)x)[k];
    case DT_I64: return (double)((const int64_t *)x)[k];
    case DT_F32: return ((const float *)x)[k];
    case DT_F64: return ((const double *)x)[k];
    default: return 0;
    }
}

static void elem_set(void *y, data_dtype t, int64_t k, double v) {
    switch (t) {
    case DT_U8: ((uint8_t *)y)[k] = (uint8_t)v; break;
    case DT_I8: ((int8_t *)y)[k] = (int8_t)v; break;
    case DT_I16: ((int16_t *)y)[k] = (int16_t)v; break;
    case DT_I32: ((int32_t *)y)[k] = (int32_t)v; break;
    case DT_I64: ((int64_t *)y)[k] = (int64_t)v; break;
    case DT_F32: ((float *)y)[k] = (float)v; break;
    case DT_F64: ((double *)y)[k] = v; break;
    default: break;
    }
}

static int is_float(data_dtype t) { return t == DT_F32 || t == DT_F64; }

// A double in [0, 1) from 53 random bits.
static double u53(uint32_t hi, uint32_t lo) { return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53; }

// Element j of sample i of a synthetic field: Philox(seed; j, i, hash(name)).
static double synth_value(const store_field *sf, uint64_t seed, int64_t i, int64_t j) {
    philox4x32 r = philox4x32_10(seed, (uint32_t)j, (uint32_t)i, (uint32_t)((uint64_t)i >> 32), sf->hash);
    switch (sf->dist) {
    case SYNTH_UNIFORM: return sf->p0 + (sf->p1 - sf->p0) * u53(r.v[0], r.v[1]);
    case SYNTH_NORMAL: {
        double u1 = 1.0 - u53(r.v[0], r.v[1]);  // (0, 1]: log(u1) is finite
        double u2 = u53(r.v[2], r.v[3]);
        return sf->p0 + sf->p1 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    }
    case SYNTH_BERNOULLI: return u53(r.v[0], r.v[1]) < sf->p0 ? 1.0 : 0.0;
    case SYNTH_RANDINT: {
        uint64_t range = (uint64_t)((int64_t)sf->p1 - (int64_t)sf->p0);
        uint64_t bits = ((uint64_t)r.v[0] << 32) | r.v[1];
        return (double)((int64_t)sf->p0 + (int64_t)(bits % range));  // bias <= range / 2^64
    }
    }
    return 0;
}

// y (n,) = p (n,) * a + b: uint8 pixels to float32 (restrict: no overlap, so it vectorizes).
// Written 8 at a time so that -O2's basic-block vectorizer packs it (-O3 needs no help).
static void u8_to_f32(float *restrict y, const uint8_t *restrict p, int64_t n, float a, float b) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        y[j + 0] = (float)p[j + 0] * a + b; y[j + 1] = (float)p[j + 1] * a + b;
        y[j + 2] = (float)p[j + 2] * a + b; y[j + 3] = (float)p[j + 3] * a + b;
        y[j + 4] = (float)p[j + 4] * a + b; y[j + 5] = (float)p[j + 5] * a + b;
        y[j + 6] = (float)p[j + 6] * a + b; y[j + 7] = (float)p[j + 7] * a + b;
    }
    for (; j < n; j++) y[j] = (float)p[j] * a + b;
}

void dataset_get(const dataset *ds, int f, int64_t i, void *out) {
    const data_store *s = ds->store;
    const store_field *sf = &s->sf[f];
    const data_field *fd = &s->field[f];
    int64_t row = ds->start + i;  // index in the store
    if (sf->kind == SF_SYNTH) {
        for (int64_t j = 0; j < fd->numel; j++) elem_set(out, fd->dtype, j, synth_value(sf, s->seed, row, j));
        return;
    }
    if (sf->kind == SF_TOKENS) {
        const uint16_t *t = s->tokens + row * sf->stride + sf->shift;
        int64_t *y = out;
        for (int64_t j = 0; j < fd->numel; j++) y[j] = t[j];
        return;
    }
    const data_array *a = &sf->arr;
    const char *x = (const char *)a->data + (size_t)row * fd->numel * dtype_size(a->dtype);
    if (sf->nchan > 1) {   // an image: each channel its own mean and std
        int64_t per = fd->numel / sf->nchan;
        for (int c = 0; c < sf->nchan; c++) {
            if (a->dtype == DT_U8 && fd->dtype == DT_F32) {
                u8_to_f32((float *)out + c * per, (const uint8_t *)x + c * per, per, (float)sf->ca[c], (float)sf->cb[c]);
            } else {
                for (int64_t j = c * per; j < (c + 1) * per; j++)
                    elem_set(out, fd->dtype, j, elem_get(x, a->dtype, j) * sf->ca[c] + sf->cb[c]);
            }
        }
        return;
    }
    // the common cases first: uint8 pixels -> float32, uint8 labels -> int64, same dtype
    if (a->dtype == DT_U8 && fd->dtype == DT_F32) {
        u8_to_f32(out, (const uint8_t *)x, fd->numel, (float)sf->a, (float)sf->b);
    } else if (a->dtype == DT_U8 && fd->dtype == DT_I64) {
        const uint8_t *p = (const uint8_t *)x;
        int64_t *y = out;
        for (int64_t j = 0; j < fd->numel; j++) y[j] = p[j];
    } else if (a->dtype == fd->dtype && (!is_float(fd->dtype) || (sf->a == 1.0 && sf->b == 0.0))) {
        memcpy(out, x, fd->nbytes);
    } else {
        for (int64_t j = 0; j < fd->numel; j++) {
            double v = elem_get(x, a->dtype, j);
            elem_set(out, fd->dtype, j, is_float(fd->dtype) ? v * sf->a + sf->b : v);
        }
    }
}

int dataset_in_memory(const dataset *ds) {
    for (int f = 0; f < ds->nfields; f++)
        if (ds->store->sf[f].kind == SF_SYNTH) return 0;
    return 1;
}

void dataset_prefetch(const dataset *ds, int64_t i) {
    const data_store *s = ds->store;
    int64_t row = ds->start + i;
    for (int f = 0; f < s->nfields; f++) {
        const store_field *sf = &s->sf[f];
        const char *p;
        size_t bytes;
        if (sf->kind == SF_ARRAY) {
            bytes = (size_t)s->field[f].numel * dtype_size(sf->arr.dtype);
            p = (const char *)sf->arr.data + (size_t)row * bytes;
        } else if (sf->kind == SF_TOKENS) {
            bytes = (size_t)s->field[f].numel * sizeof(uint16_t);
            p = (const char *)(s->tokens + row * sf->stride + sf->shift);
        } else {
            continue;
        }
        // the first lines: the hardware prefetcher follows a long row by itself
        for (size_t o = 0; o < bytes && o < 512; o += 64) __builtin_prefetch(p + o);
    }
}

// ----------------------------------------------------------------------------
// Fashion-MNIST

// Reads root/base.gz, or root/base when that does not exist.
static int fashion_read(const char *root, const char *base, char *path, size_t pathsize, data_array *a, data_err *err) {
    int n = snprintf(path, pathsize, "%s/%s.gz", root, base);
    if (n < 0 || (size_t)n >= pathsize) return data_fail(err, DATA_EIO, "%s: cannot open: the path is too long", root);
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        path[n - 3] = '\0';   // root/base, without ".gz"
        if (stat(path, &st) != 0)
            return data_fail(err, DATA_EIO, "%s/%s.gz: cannot open: %s (nor %s)", root, base, strerror(e), path);
    }
    return idx_read(path, a, err);
}

// One split of Fashion-MNIST (images + labels) into a new store, validated.
static int fashion_store(const char *root, const char *images, const char *labels, const fashion_opts *o,
                         data_store **out, data_err *err) {
    char ipath[4096], lpath[4096], dims[128];
    data_array img = {0}, lab = {0};
    int rc = fashion_read(root, images, ipath, sizeof ipath, &img, err);
    if (rc == DATA_OK) rc = fashion_read(root, labels, lpath, sizeof lpath, &lab, err);
    if (rc != DATA_OK) goto fail;
    if (img.dtype != DT_U8 || img.ndim != 3 || img.dims[1] != 28 || img.dims[2] != 28) {
        rc = data_fail(err, DATA_EFORMAT, "%s: expected uint8 images Nx28x28, got %s %s", ipath, dtype_name(img.dtype), dims_str(img.dims, img.ndim, dims, sizeof dims));
        goto fail;
    }
    if (lab.dtype != DT_U8 || lab.ndim != 1) {
        rc = data_fail(err, DATA_EFORMAT, "%s: expected uint8 labels N, got %s %s", lpath, dtype_name(lab.dtype), dims_str(lab.dims, lab.ndim, dims, sizeof dims));
        goto fail;
    }
    if (lab.dims[0] != img.dims[0]) {
        rc = data_fail(err, DATA_EMISMATCH, "%s: has %lld labels but %s has %lld images", lpath, (long long)lab.dims[0], ipath, (long long)img.dims[0]);
        goto fail;
    }
    if (img.dims[0] == 0) { rc = data_fail(err, DATA_EFORMAT, "%s: has no images", ipath); goto fail; }
    for (int64_t i = 0; i < lab.numel; i++) {
        int v = ((uint8_t *)lab.data)[i];
        if (v > 9) { rc = data_fail(err, DATA_EFORMAT, "%s: label %d of sample %lld is not a class 0..9", lpath, v, (long long)i); goto fail; }
    }
    data_store *s = store_new(img.dims[0], err);
    if (!s) { rc = err->code; goto fail; }
    int64_t ishape[3] = {1, 28, 28};
    store_add_field(s, "image", DT_F32, 3, ishape, err);
    store_add_field(s, "label", DT_I64, 0, NULL, err);
    // image = (x / 255 - mean) / std = x * a + b
    double stdv = o->std != 0 ? o->std : 1.0;
    s->sf[0] = (store_field){.kind = SF_ARRAY, .arr = img, .a = 1.0 / (255.0 * stdv), .b = -o->mean / stdv};
    s->sf[1] = (store_field){.kind = SF_ARRAY, .arr = lab, .a = 1.0, .b = 0.0};
    *out = s;
    return data_ok(err);
fail:
    array_free(&img);
    array_free(&lab);
    return rc;
}

int fashion_open(const char *root, const fashion_opts *o, dataset *train, dataset *val, dataset *test, data_err *err) {
    fashion_opts def = {0};
    if (!o) o = &def;
    data_store *tr = NULL, *te = NULL;
    int rc = fashion_store(root, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", o, &tr, err);
    if (rc) return rc;
    if (test) {
        rc = fashion_store(root, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", o, &te, err);
        if (rc) { store_unref(tr); return rc; }
    }
    if (o->val_split < 0 || o->val_split >= tr->n) {
        // the message first: it reads tr->n, which store_unref frees
        data_fail(err, DATA_EARG, "%s: val_split %lld must be in 0..%lld", root, (long long)o->val_split, (long long)tr->n - 1);
        store_unref(tr);
        store_unref(te);
        return DATA_EARG;
    }
    *train = view_of(tr, 0, tr->n - o->val_split);
    if (val) *val = view_of(tr, tr->n - o->val_split, o->val_split);
    if (test) *test = view_of(te, 0, te->n);
    store_unref(tr);  // the views hold their own references
    store_unref(te);
    return data_ok(err);
}

// ----------------------------------------------------------------------------
// .npy fields

static int is_integer(data_dtype t) { return t == DT_U8 || t == DT_I8 || t == DT_I16 || t == DT_I32 || t == DT_I64; }

// The file against what the program was compiled for (fs->check): the shape of one
// row, the dtype, and an integer field's values.
static int npy_field_check(const npy_field_spec *fs, const data_array *a, data_err *err) {
    if (!fs->check) return data_ok(err);
    char got[256], want[256], kinds[128];
    int same = a->ndim - 1 == fs->ndim;
    for (int d = 0; same && d < fs->ndim; d++) same = a->dims[d + 1] == fs->shape[d];
    if (!same) {
        dims_str(a->dims + 1, a->ndim - 1, got, sizeof got);
        dims_str(fs->shape, fs->ndim, want, sizeof want);
        return data_fail(err, DATA_EMISMATCH, "%s: field '%s': one sample has shape %s, but this program was generated for %s (the file is %s)",
                         fs->path, fs->name, got, want, dims_str(a->dims, a->ndim, kinds, sizeof kinds));
    }
    if (fs->dtypes && !(fs->dtypes & (1u << a->dtype))) {
        size_t k = 0;
        kinds[0] = '\0';
        for (int t = 0; t < DT_COUNT && k < sizeof kinds; t++)
            if (fs->dtypes & (1u << t)) k += (size_t)snprintf(kinds + k, sizeof kinds - k, "%s%s", k ? " or " : "", dtype_name((data_dtype)t));
        return data_fail(err, DATA_EMISMATCH, "%s: field '%s' is %s, but this program was generated for %s", fs->path, fs->name,
                         dtype_name(a->dtype), kinds);
    }
    if (fs->hi > fs->lo) {
        if (!is_integer(a->dtype))
            return data_fail(err, DATA_EMISMATCH, "%s: field '%s' is %s, but its values are %ss (an integer dtype)", fs->path, fs->name,
                             dtype_name(a->dtype), fs->range_what ? fs->range_what : "integer");
        int64_t per = a->ndim > 1 ? a->numel / a->dims[0] : 1;
        for (int64_t k = 0; k < a->numel; k++) {
            double v = elem_get(a->data, a->dtype, k);
            if ((v < (double)fs->lo || v >= (double)fs->hi) && v != (double)fs->except)
                return data_fail(err, DATA_EFORMAT, "%s: sample %lld: %s %lld is out of range [%lld, %lld)", fs->path,
                                 (long long)(k / per), fs->range_what ? fs->range_what : "value", (long long)v, (long long)fs->lo, (long long)fs->hi);
        }
    }
    return data_ok(err);
}

int npy_dataset_open(const npy_field_spec *fields, int nfields, dataset *out, data_err *err) {
    if (nfields < 1 || nfields > DATA_MAX_FIELDS) return data_fail(err, DATA_EARG, "npy dataset: %d fields (1..%d)", nfields, DATA_MAX_FIELDS);
    data_store *s = NULL;
    int rc = DATA_OK;
    for (int f = 0; f < nfields; f++) {
        const npy_field_spec *fs = &fields[f];
        data_array a = {0};
        if ((rc = npy_read(fs->path, &a, err))) goto fail;
        if (a.ndim < 1) { rc = data_fail(err, DATA_EFORMAT, "%s: a scalar, expected one row per sample", fs->path); array_free(&a); goto fail; }
        if (a.dims[0] == 0) { rc = data_fail(err, DATA_EFORMAT, "%s: has no samples", fs->path); array_free(&a); goto fail; }
        if (!s && !(s = store_new(a.dims[0], err))) { rc = err->code; array_free(&a); goto fail; }
        if (a.dims[0] != s->n) {
            rc = data_fail(err, DATA_EMISMATCH, "%s: has %lld samples but %s has %lld", fs->path, (long long)a.dims[0], fields[0].path, (long long)s->n);
            array_free(&a);
            goto fail;
        }
        if ((rc = npy_field_check(fs, &a, err))) { array_free(&a); goto fail; }
        data_dtype dt = fs->convert ? fs->out_dtype : a.dtype;
        if ((unsigned)dt >= DT_COUNT) { rc = data_fail(err, DATA_EARG, "%s: field '%s': unknown out_dtype %d", fs->path, fs->name, (int)dt); array_free(&a); goto fail; }
        if ((rc = store_add_field(s, fs->name, dt, a.ndim - 1, a.dims + 1, err))) { array_free(&a); goto fail; }
        double scale = fs->scale != 0 ? fs->scale : 1.0, stdv = fs->std != 0 ? fs->std : 1.0;
        s->sf[f] = (store_field){.kind = SF_ARRAY, .arr = a, .a = scale / stdv, .b = -fs->mean / stdv};
    }
    *out = view_of(s, 0, s->n);
    store_unref(s);
    return data_ok(err);
fail:
    store_unref(s);
    return rc;
}

// ----------------------------------------------------------------------------
// datasets of arrays in memory (CSV, image folders) and the random split

int dataset_of_arrays(array_field *fields, int nfields, dataset *out, data_err *err) {
    data_store *s = NULL;
    int f = 0, rc = DATA_OK;
    if (nfields < 1 || nfields > DATA_MAX_FIELDS) { rc = data_fail(err, DATA_EARG, "dataset: %d fields (1..%d)", nfields, DATA_MAX_FIELDS); goto fail; }
    if (!(s = store_new(fields[0].arr.dims[0], err))) { rc = err->code; goto fail; }
    for (; f < nfields; f++) {
        array_field *af = &fields[f];
        if (af->arr.ndim < 1 || af->arr.dims[0] != s->n || af->nchan > IMAGE_MAX_CHANNELS ||
            (af->nchan > 1 && (af->arr.ndim < 2 || af->arr.dims[1] != af->nchan))) {
            rc = data_fail(err, DATA_EARG, "dataset: field '%s': %lld rows, %d channels do not fit the others (loom bug)",
                           af->name, (long long)(af->arr.ndim ? af->arr.dims[0] : 0), af->nchan);
            goto fail;
        }
        if ((rc = store_add_field(s, af->name, af->dtype, af->arr.ndim - 1, af->arr.dims + 1, err))) goto fail;
        store_field *sf = &s->sf[f];
        *sf = (store_field){.kind = SF_ARRAY, .arr = af->arr, .a = af->a[0], .b = af->b[0], .nchan = af->nchan};
        for (int c = 0; c < af->nchan; c++) { sf->ca[c] = af->a[c]; sf->cb[c] = af->b[c]; }
        memset(&af->arr, 0, sizeof af->arr);   // the store owns it now
    }
    *out = view_of(s, 0, s->n);
    store_unref(s);
    return data_ok(err);
fail:
    for (; f < nfields; f++) array_free(&fields[f].arr);
    store_unref(s);
    return rc;
}

void sampler_permute(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    // Fisher-Yates: for i = n-1 .. 1 swap perm[i] with perm[j], j uniform in 0..i,
    // j drawn from Philox(seed; i, epoch, "SHUF"): 64 random bits mod (i+1)
    for (int64_t i = n - 1; i > 0; i--) {
        philox4x32 r = philox4x32_10(seed, (uint32_t)i, (uint32_t)((uint64_t)i >> 32), (uint32_t)epoch,
                                     (uint32_t)((uint64_t)epoch >> 32) ^ 0x53485546u);
        uint64_t bits = ((uint64_t)r.v[0] << 32) | r.v[1];
        int64_t j = (int64_t)(bits % (uint64_t)(i + 1));
        int64_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
}

int64_t data_split_count(double val, int64_t n) {
    if (val > 0 && val < 1) return (int64_t)ceil(val * (double)n - 1e-9);
    return (int64_t)val;
}

int dataset_random_split(const dataset *ds, int64_t val_count, uint64_t seed, dataset *train, dataset *val, data_err *err) {
    const data_store *s = ds->store;
    int64_t n = ds->n;
    if (val_count < 1 || val_count >= n)
        return data_fail(err, DATA_EARG, "dataset: a validation split of %lld samples must be in 1..%lld (the dataset has %lld)",
                         (long long)val_count, (long long)n - 1, (long long)n);
    for (int f = 0; f < s->nfields; f++)
        if (s->sf[f].kind != SF_ARRAY) return data_fail(err, DATA_EARG, "dataset: only datasets of arrays split at random (loom bug)");
    int64_t *perm = data_malloc(sizeof(int64_t) * (size_t)n, "the random split", err);
    char *is_val = perm ? data_malloc((size_t)n, "the random split", err) : NULL;
    if (!is_val) { free(perm); return err->code; }
    sampler_permute(seed, -1, n, perm);
    memset(is_val, 0, (size_t)n);
    for (int64_t k = n - val_count; k < n; k++) is_val[perm[k]] = 1;
    data_store *t = store_new(n, err);
    int rc = t ? DATA_OK : err->code;
    for (int f = 0; rc == DATA_OK && f < s->nfields; f++) {
        const store_field *sf = &s->sf[f];
        size_t row = (size_t)s->field[f].numel * dtype_size(sf->arr.dtype);
        data_array a = sf->arr;
        a.dims[0] = n;
        a.numel = n * s->field[f].numel;
        if (!(a.data = data_malloc(row * (size_t)n, "the random split", err))) { rc = err->code; break; }
        int64_t k = 0;   // the training samples first, then the validation samples, each in order
        for (int pass = 0; pass < 2; pass++)
            for (int64_t i = 0; i < n; i++)
                if (is_val[i] == pass) memcpy((char *)a.data + row * (size_t)k++, (const char *)sf->arr.data + row * (size_t)(ds->start + i), row);
        t->field[f] = s->field[f];
        t->sf[f] = *sf;
        t->sf[f].arr = a;
        t->nfields = f + 1;
    }
    free(perm);
    free(is_val);
    if (rc) { store_unref(t); return rc; }
    *train = view_of(t, 0, n - val_count);
    if (val) *val = view_of(t, n - val_count, val_count);
    store_unref(t);
    return data_ok(err);
}

// ----------------------------------------------------------------------------
// synthetic

// FNV-1a of the field name: the field's Philox stream.
static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

#define SYNTH_IN_MEMORY_BYTES ((double)(64 << 20))

// Every synthetic field of s generated into an array of its batch dtype (SF_ARRAY, a copy
// per sample in dataset_get).
static int synth_materialize(data_store *s, data_err *err) {
    for (int f = 0; f < s->nfields; f++) {
        store_field *sf = &s->sf[f];
        const data_field *fd = &s->field[f];
        void *data = data_malloc(fd->nbytes * (size_t)s->n, "synthetic data", err);
        if (!data) return err->code;
        for (int64_t i = 0; i < s->n; i++) {
            char *row = (char *)data + (size_t)i * fd->nbytes;
            for (int64_t j = 0; j < fd->numel; j++) elem_set(row, fd->dtype, j, synth_value(sf, s->seed, i, j));
        }
        store_field a = {.kind = SF_ARRAY, .a = 1.0, .b = 0.0};
        a.arr = (data_array){.dtype = fd->dtype, .ndim = 2, .dims = {s->n, fd->numel}, .numel = fd->numel * s->n, .data = data};
        *sf = a;
    }
    return data_ok(err);
}

int synth_open(const synth_field_spec *fields, int nfields, int64_t n, uint64_t seed, dataset *out, data_err *err) {
    if (nfields < 1 || nfields > DATA_MAX_FIELDS) return data_fail(err, DATA_EARG, "synthetic dataset: %d fields (1..%d)", nfields, DATA_MAX_FIELDS);
    if (n < 1) return data_fail(err, DATA_EARG, "synthetic dataset: n = %lld samples, must be >= 1", (long long)n);
    data_store *s = store_new(n, err);
    if (!s) return err->code;
    s->seed = seed;
    int rc;
    double bytes = 0;
    for (int f = 0; f < nfields; f++) {
        const synth_field_spec *fs = &fields[f];
        if ((rc = store_add_field(s, fs->name, fs->dtype, fs->ndim, fs->shape, err))) goto fail;
        data_dtype t = fs->dtype;
        int ok_dtype = t == DT_F32 || t == DT_F64 || t == DT_I64 || t == DT_I32 || t == DT_U8;
        int int_dist = fs->dist == SYNTH_BERNOULLI || fs->dist == SYNTH_RANDINT;
        const char *why = NULL;
        if (!ok_dtype) why = "dtype must be float32, float64, int64, int32 or uint8";
        else if (!is_float(t) && !int_dist) why = "an integer field needs a bernoulli or randint distribution";
        else if (fs->dist == SYNTH_UNIFORM && !(fs->b > fs->a)) why = "uniform needs a < b";
        else if (fs->dist == SYNTH_NORMAL && !(fs->b >= 0)) why = "normal needs a standard deviation b >= 0";
        else if (fs->dist == SYNTH_BERNOULLI && !(fs->a >= 0 && fs->a <= 1)) why = "bernoulli needs 0 <= p = a <= 1";
        else if (fs->dist == SYNTH_RANDINT && !(fs->a == floor(fs->a) && fs->b == floor(fs->b) && fs->b > fs->a)) why = "randint needs integers a < b";
        else if (fs->dist == SYNTH_RANDINT && t == DT_U8 && !(fs->a >= 0 && fs->b <= 256)) why = "randint into uint8 needs 0 <= a < b <= 256";
        else if ((unsigned)fs->dist > SYNTH_RANDINT) why = "unknown distribution";
        else if (s->field[f].numel > UINT32_MAX) why = "more than 2^32 elements per sample";
        if (why) { rc = data_fail(err, DATA_EARG, "synthetic dataset: field '%s': %s", fs->name, why); goto fail; }
        s->sf[f] = (store_field){.kind = SF_SYNTH, .dist = fs->dist, .p0 = fs->a, .p1 = fs->b, .hash = name_hash(fs->name)};
        bytes += (double)n * (double)s->field[f].nbytes;
    }
    // A set that fits is generated once, here, and batches copy it (as a file's are):
    // Philox per element costs a loader ~0.4 µs per 12-float sample, every epoch, and a
    // tiny model's step far less (issue 12).  The values are the same either way.
    if (bytes <= SYNTH_IN_MEMORY_BYTES && (rc = synth_materialize(s, err))) goto fail;
    *out = view_of(s, 0, n);
    store_unref(s);
    return data_ok(err);
fail:
    store_unref(s);
    return rc;
}

// ----------------------------------------------------------------------------
// token windows

int tokens_open(const tokens_opts *o, dataset *out, data_err *err) {
    if (o->context < 1 || o->stride < 1 || o->vocab < 0 || !o->input || !o->target)
        return data_fail(err, DATA_EARG, "%s: token dataset: context %lld and stride %lld must be >= 1, and both fields named",
                         o->path, (long long)o->context, (long long)o->stride);
    uint16_t *tok;
    int64_t n;
    int rc = tokens_read(o->path, &tok, &n, err);
    if (rc) return rc;
    if (n < o->context + 1) {
        free(tok);
        return data_fail(err, DATA_EFORMAT, "%s: %lld tokens, fewer than one window of context + 1 = %lld", o->path, (long long)n,
                         (long long)o->context + 1);
    }
    for (int64_t i = 0; o->vocab > 0 && i < n; i++)
        if (tok[i] >= o->vocab) {
            int v = tok[i];
            free(tok);
            return data_fail(err, DATA_EFORMAT, "%s: token %lld is %d, out of the vocabulary [0, %lld) this program was generated for",
                             o->path, (long long)i, v, (long long)o->vocab);
        }
    data_store *s = store_new((n - o->context - 1) / o->stride + 1, err);
    if (!s) { free(tok); return err->code; }
    s->tokens = tok;
    int64_t shape[1] = {o->context};
    if ((rc = store_add_field(s, o->input, DT_I64, 1, shape, err)) || (rc = store_add_field(s, o->target, DT_I64, 1, shape, err))) {
        store_unref(s);
        return rc;
    }
    s->sf[0] = (store_field){.kind = SF_TOKENS, .stride = o->stride, .shift = 0};
    s->sf[1] = (store_field){.kind = SF_TOKENS, .stride = o->stride, .shift = 1};
    *out = view_of(s, 0, s->n);
    store_unref(s);
    return data_ok(err);
}
