// IDX reader (the MNIST / Fashion-MNIST format), plain or gzip.
//
// Layout (all big-endian):
//   byte 0, 1   0x00 0x00
//   byte 2      dtype: 08 uint8, 09 int8, 0B int16, 0C int32, 0D float32, 0E float64
//   byte 3      ndim
//   ndim x u32  dims
//   data        prod(dims) elements, C order
#include <stdlib.h>
#include <string.h>
#include "data_internal.h"

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

// IDX dtype code -> data_dtype, or -1.
static int idx_dtype(int code) {
    switch (code) {
    case 0x08: return DT_U8;
    case 0x09: return DT_I8;
    case 0x0B: return DT_I16;
    case 0x0C: return DT_I32;
    case 0x0D: return DT_F32;
    case 0x0E: return DT_F64;
    default: return -1;
    }
}

// Big-endian elements of `size` bytes (n of them) to host order, in place.
static void swap_to_host(void *data, int64_t n, size_t size) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return;  // already in host order
#endif
    if (size == 1) return;
    uint8_t *p = data;
    for (int64_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) { uint8_t t = p[a]; p[a] = p[b]; p[b] = t; }
}

int idx_read(const char *path, data_array *out, data_err *err) {
    memset(out, 0, sizeof *out);
    data_file f;
    int rc = dfile_open(&f, path, err);
    if (rc) return rc;
    uint8_t head[4], dimbuf[4 * 255];
    size_t got;
    char dims[256];
    void *data = NULL;

    // magic: 00 00 dtype ndim
    if ((rc = dfile_read(&f, head, 4, &got, "the IDX header", err))) goto fail;
    if (got < 4) { rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: %zu bytes, too short for an IDX header", path, f.truncated_gz ? " gzip stream" : "", got); goto fail; }
    if (head[0] != 0 || head[1] != 0 || idx_dtype(head[2]) < 0) {
        rc = data_fail(err, DATA_EFORMAT, "%s: bad magic %02x %02x %02x %02x: not an IDX file (expected 00 00, a dtype code 08..0e, ndim)",
                       path, head[0], head[1], head[2], head[3]);
        goto fail;
    }
    data_dtype dt = (data_dtype)idx_dtype(head[2]);
    int ndim = head[3];
    if (ndim < 1 || ndim > DATA_MAX_DIMS) {
        rc = data_fail(err, DATA_EFORMAT, "%s: %d dimensions, expected 1..%d", path, ndim, DATA_MAX_DIMS);
        goto fail;
    }

    // dims
    if ((rc = dfile_read(&f, dimbuf, 4 * (size_t)ndim, &got, "the IDX dimensions", err))) goto fail;
    if (got < 4 * (size_t)ndim) {
        rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: the header ends inside its %d dimensions", path, f.truncated_gz ? " gzip stream" : "", ndim);
        goto fail;
    }
    out->dtype = dt;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->dims[d] = be32(dimbuf + 4 * d);
    out->numel = dims_numel(out->dims, ndim, dtype_size(dt));
    dims_str(out->dims, ndim, dims, sizeof dims);
    if (out->numel < 0) { rc = data_fail(err, DATA_EFORMAT, "%s: dimensions %s are too large", path, dims); goto fail; }

    // data: read in growing pieces, so that a corrupt header claiming terabytes
    // fails as "truncated" instead of as a huge malloc (the first no larger than the
    // file can hold: a whole file's data in one piece)
    size_t want = (size_t)out->numel * dtype_size(dt), have = 0, cap = want < (64u << 20) ? want : (64u << 20);
    int64_t most = dfile_most_left(&f);
    if ((uint64_t)most < cap) cap = most > 4096 ? (size_t)most : want < 4096 ? want : 4096;
    data = data_malloc(cap, "IDX data", err);
    if (!data) { rc = err->code; goto fail; }
    while (have < want) {
        if (have == cap) {
            cap = cap * 2 < want ? cap * 2 : want;
            void *p = realloc(data, cap);
            if (!p) { rc = data_fail(err, DATA_ENOMEM, "%s:%d: out of memory allocating %zu bytes for %s", __FILE__, __LINE__, cap, path); goto fail; }
            data = p;
        }
        if ((rc = dfile_read(&f, (char *)data + have, cap - have, &got, "the IDX data", err))) goto fail;
        have += got;
        if (have < cap) break;  // end of data
    }
    if (have < want) {
        rc = data_fail(err, DATA_ETRUNC, "%s: truncated%s: expected %zu bytes of data for %s %s, got %zu",
                       path, f.truncated_gz ? " gzip stream" : "", want, dims, dtype_name(dt), have);
        goto fail;
    }
    if ((rc = dfile_expect_eof(&f, err))) goto fail;
    dfile_close(&f);
    swap_to_host(data, out->numel, dtype_size(dt));
    out->data = data;
    return data_ok(err);
fail:
    dfile_close(&f);
    free(data);
    memset(out, 0, sizeof *out);
    return rc;
}
