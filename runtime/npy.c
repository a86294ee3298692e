// .npy reader and writer (numpy's format, versions 1.0, 2.0 and 3.0).
//
// Layout:
//   "\x93NUMPY"  major  minor
//   header length: u16 little-endian (1.0) or u32 (2.0, 3.0)
//   header: a Python dict literal (latin-1 in 1.0/2.0, utf-8 in 3.0), e.g.
//     {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }
//   padded with spaces and ended by '\n' so the data starts at a multiple of 64
//   data: prod(shape) elements
// The header is parsed as a dict, not matched as a string: any key order, either
// quote, any whitespace, trailing commas, Python 2's "3L" shapes.
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "data_internal.h"

#define NPY_HEADER_MAX (1 << 20)  // refuse headers longer than this: the file is not .npy

// ----------------------------------------------------------------------------
// the header dict

typedef struct {
    const char *s, *end;
    const char *path;
    data_err *err;
} hparser;

static void skip_ws(hparser *p) { while (p->s < p->end && isspace((unsigned char)*p->s)) p->s++; }

static int hfail(hparser *p, const char *what) {
    char near[24];
    size_t n = (size_t)(p->end - p->s) < sizeof near - 1 ? (size_t)(p->end - p->s) : sizeof near - 1;
    memcpy(near, p->s, n);
    near[n] = '\0';
    for (char *c = near; *c; c++) if (*c == '\n') *c = ' ';
    while (n > 0 && near[n - 1] == ' ') near[--n] = '\0';  // the header's padding
    return data_fail(p->err, DATA_EFORMAT, "%s: bad .npy header: %s at '%s'", p->path, what, near);
}

// Consumes c (after whitespace) or fails.
static int expect(hparser *p, char c) {
    skip_ws(p);
    if (p->s >= p->end || *p->s != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return hfail(p, what);
    }
    p->s++;
    return DATA_OK;
}

// A Python string literal in '...' or "..." (no escapes: numpy never writes them here).
static int parse_str(hparser *p, char *buf, size_t bufsize) {
    skip_ws(p);
    if (p->s >= p->end || (*p->s != '\'' && *p->s != '"')) return hfail(p, "expected a string");
    char q = *p->s++;
    const char *start = p->s;
    while (p->s < p->end && *p->s != q) p->s++;
    if (p->s >= p->end) return hfail(p, "unterminated string");
    size_t n = (size_t)(p->s - start);
    if (n >= bufsize) return hfail(p, "string too long");
    memcpy(buf, start, n);
    buf[n] = '\0';
    p->s++;
    return DATA_OK;
}

static int parse_bool(hparser *p, int *v) {
    skip_ws(p);
    if (p->end - p->s >= 4 && memcmp(p->s, "True", 4) == 0) { *v = 1; p->s += 4; return DATA_OK; }
    if (p->end - p->s >= 5 && memcmp(p->s, "False", 5) == 0) { *v = 0; p->s += 5; return DATA_OK; }
    return hfail(p, "expected True or False");
}

// A tuple of non-negative integers: (), (3,), (3, 4), (3L, 4L).
static int parse_shape(hparser *p, int64_t *dims, int *ndim) {
    int rc;
    if ((rc = expect(p, '('))) return rc;
    *ndim = 0;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == ')') { p->s++; return DATA_OK; }
        if (p->s >= p->end || !isdigit((unsigned char)*p->s)) return hfail(p, "expected a dimension");
        int64_t v = 0;
        while (p->s < p->end && isdigit((unsigned char)*p->s)) {
            if (v > (INT64_MAX - 9) / 10) return hfail(p, "dimension too large");
            v = v * 10 + (*p->s++ - '0');
        }
        if (p->s < p->end && (*p->s == 'L' || *p->s == 'l')) p->s++;
        if (*ndim == DATA_MAX_DIMS) return hfail(p, "more than 8 dimensions");
        dims[(*ndim)++] = v;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') p->s++;
        else if (p->s < p->end && *p->s == ')') { p->s++; return DATA_OK; }
        else return hfail(p, "expected ',' or ')' in the shape");
    }
}

// '<f4' -> DT_F32 etc.  Fails naming the descr when it is not one we read.
static int descr_dtype(const char *path, const char *d, data_dtype *t, data_err *err) {
    static const struct { const char *code; data_dtype t; } codes[] = {
        {"u1", DT_U8}, {"i1", DT_I8}, {"i2", DT_I16}, {"i4", DT_I32}, {"i8", DT_I64}, {"f4", DT_F32}, {"f8", DT_F64},
    };
    char order = d[0];
    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        if (order == '\0' || strcmp(d + 1, codes[k].code) != 0) continue;
        int one_byte = codes[k].code[1] == '1';
        if (order == '<' || (one_byte && (order == '|' || order == '>' || order == '='))) { *t = codes[k].t; return DATA_OK; }
        if (order == '>') return data_fail(err, DATA_EFORMAT, "%s: big-endian dtype '%s' is not supported (save it as '<%s')", path, d, codes[k].code);
    }
    return data_fail(err, DATA_EFORMAT, "%s: unsupported dtype '%s' (supported: little-endian uint8, int8, int16, int32, int64, float32, float64)", path, d);
}

// Parses the header dict into out's dtype and dims.
static int parse_header(const char *path, const char *h, size_t len, data_array *out, data_err *err) {
    hparser p = {h, h + len, path, err};
    char key[64], descr[64];
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0, rc;
    if ((rc = expect(&p, '{'))) return rc;
    for (;;) {
        skip_ws(&p);
        if (p.s < p.end && *p.s == '}') { p.s++; break; }
        if ((rc = parse_str(&p, key, sizeof key))) return rc;
        if ((rc = expect(&p, ':'))) return rc;
        if (strcmp(key, "descr") == 0) {
            skip_ws(&p);
            if (p.s < p.end && *p.s == '[') return data_fail(err, DATA_EFORMAT, "%s: structured dtypes (a list descr) are not supported", path);
            if ((rc = parse_str(&p, descr, sizeof descr))) return rc;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if ((rc = parse_bool(&p, &fortran))) return rc;
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if ((rc = parse_shape(&p, out->dims, &out->ndim))) return rc;
            have_shape = 1;
        } else {
            return data_fail(err, DATA_EFORMAT, "%s: bad .npy header: unexpected key '%s'", path, key);
        }
        skip_ws(&p);
        if (p.s < p.end && *p.s == ',') { p.s++; continue; }
        if ((rc = expect(&p, '}'))) return rc;
        break;
    }
    skip_ws(&p);
    if (p.s != p.end) return hfail(&p, "text after the dict");
    if (!have_descr || !have_fortran || !have_shape)
        return data_fail(err, DATA_EFORMAT, "%s: bad .npy header: missing key '%s'", path,
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if (fortran)
        return data_fail(err, DATA_EFORMAT, "%s: fortran_order is True; only C order is supported (save np.ascontiguousarray(x))", path);
    return descr_dtype(path, descr, &out->dtype, err);
}

// ----------------------------------------------------------------------------
// read

int npy_read(const char *path, data_array *out, data_err *err) {
    memset(out, 0, sizeof *out);
    data_file f;
    int rc = dfile_open(&f, path, err);
    if (rc) return rc;
    uint8_t pre[12];
    char *header = NULL, dims[256];
    void *data = NULL;
    size_t got;

    // magic, version, header length
    if ((rc = dfile_read(&f, pre, 10, &got, "the .npy preamble", err))) goto fail;
    if (got < 8 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = data_fail(err, DATA_EFORMAT, "%s: bad magic: not a .npy file (expected \\x93NUMPY)", path);
        goto fail;
    }
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0) {
        rc = data_fail(err, DATA_EFORMAT, "%s: .npy format version %d.%d is not supported (1.0, 2.0, 3.0)", path, major, minor);
        goto fail;
    }
    size_t lensize = major == 1 ? 2 : 4;
    if (lensize == 4) {
        size_t more;
        if ((rc = dfile_read(&f, pre + 10, 2, &more, "the .npy preamble", err))) goto fail;
        got += more;
    }
    if (got < 8 + lensize) { rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: the file ends inside the .npy preamble", path, f.truncated_gz ? " gzip stream" : ""); goto fail; }
    size_t hlen = lensize == 2 ? (size_t)pre[8] | (size_t)pre[9] << 8
                               : (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    if (hlen > NPY_HEADER_MAX) { rc = data_fail(err, DATA_EFORMAT, "%s: .npy header length %zu is implausible", path, hlen); goto fail; }

    // header
    if (!(header = data_malloc(hlen + 1, ".npy header", err))) { rc = err->code; goto fail; }
    if ((rc = dfile_read(&f, header, hlen, &got, "the .npy header", err))) goto fail;
    if (got < hlen) { rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: the file ends inside the %zu-byte .npy header", path, f.truncated_gz ? " gzip stream" : "", hlen); goto fail; }
    header[hlen] = '\0';
    if ((rc = parse_header(path, header, hlen, out, err))) goto fail;
    out->numel = dims_numel(out->dims, out->ndim, dtype_size(out->dtype));
    dims_str(out->dims, out->ndim, dims, sizeof dims);
    if (out->numel < 0) { rc = data_fail(err, DATA_EFORMAT, "%s: shape %s is too large", path, dims); goto fail; }

    // data (size-checked against the file first when it is plain)
    size_t want = (size_t)out->numel * dtype_size(out->dtype);
    if (!f.compressed) {
        struct stat st;
        if (stat(path, &st) == 0 && (uint64_t)st.st_size < (uint64_t)f.pos + want) {
            rc = data_fail(err, DATA_ETRUNC, "%s: truncated: expected %zu bytes of data for %s %s, got %lld",
                           path, want, dims, dtype_name(out->dtype), (long long)(st.st_size - f.pos));
            goto fail;
        }
    }
    if (!(data = data_malloc(want, ".npy data", err))) { rc = err->code; goto fail; }
    if ((rc = dfile_read(&f, data, want, &got, "the .npy data", err))) goto fail;
    if (got < want) {
        rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: expected %zu bytes of data for %s %s, got %zu", path, f.truncated_gz ? " gzip stream" : "", want, dims, dtype_name(out->dtype), got);
        goto fail;
    }
    if ((rc = dfile_expect_eof(&f, err))) goto fail;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "npy.c reads little-endian data as is: add a byte swap for big-endian hosts"
#endif
    dfile_close(&f);
    free(header);
    out->data = data;
    return data_ok(err);
fail:
    dfile_close(&f);
    free(header);
    free(data);
    memset(out, 0, sizeof *out);
    return rc;
}

// ----------------------------------------------------------------------------
// write

int npy_write(const char *path, const data_array *a, data_err *err) {
    static const char *descr[DT_COUNT] = {"|u1", "|i1", "<i2", "<i4", "<i8", "<f4", "<f8"};
    if ((unsigned)a->dtype >= DT_COUNT || a->ndim < 0 || a->ndim > DATA_MAX_DIMS)
        return data_fail(err, DATA_EARG, "%s: npy_write: bad dtype or ndim", path);
    // the dict, then spaces and '\n' up to a multiple of 64 bytes (preamble included)
    char dict[512], shape[256];
    size_t len = 0;
    shape[0] = '\0';
    for (int d = 0; d < a->ndim; d++)
        len += snprintf(shape + len, sizeof shape - len, "%lld,%s", (long long)a->dims[d], d + 1 < a->ndim ? " " : "");
    if (a->ndim > 1) shape[len - 1] = '\0';  // numpy writes (3,) but (3, 4)
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr[a->dtype], shape);
    int major = 1;
    size_t pre = 10, total = ((pre + (size_t)dl + 1 + 63) / 64) * 64;
    if (total - pre > 65535) { major = 2; pre = 12; total = ((pre + (size_t)dl + 1 + 63) / 64) * 64; }
    size_t hlen = total - pre;
    unsigned char head[640];
    memcpy(head, "\x93NUMPY", 6);
    head[6] = (unsigned char)major;
    head[7] = 0;
    for (size_t k = 0; k < pre - 8; k++) head[8 + k] = (unsigned char)(hlen >> (8 * k));
    memcpy(head + pre, dict, (size_t)dl);
    memset(head + pre + dl, ' ', hlen - (size_t)dl - 1);
    head[total - 1] = '\n';

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return data_fail(err, DATA_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    size_t bytes = (size_t)a->numel * dtype_size(a->dtype);
    int ok = fwrite(head, 1, total, fp) == total && fwrite(a->data, 1, bytes, fp) == bytes;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return data_fail(err, DATA_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return data_ok(err);
}
