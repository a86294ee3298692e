// Criterion tests for the data runtime (runtime/data.h): IDX and .npy readers and
// their one-line errors, Fashion-MNIST, synthetic and .npy datasets, shuffle, rank
// sharding, prefetch and resume; CSV files, the random split and image augmentation.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "data.h"

#define FASHION "/usr/share/datasets/fashion-mnist"

// ----------------------------------------------------------------------------
// helpers

// A fresh directory for one test's files (each Criterion test runs in its own process).
static const char *tmpdir(void) {
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/loom_test_data_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    return dir;
}

static const char *path_in(const char *dir, const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

// Writes bytes to path, gzip-compressed when gz (cut to `cut` compressed bytes when cut > 0).
static void write_file(const char *path, const void *bytes, size_t n, int gz, long cut) {
    if (gz) {
        gzFile g = gzopen(path, "wb");
        cr_assert_not_null(g);
        cr_assert_eq(gzwrite(g, bytes, (unsigned)n), (int)n);
        gzclose(g);
        if (cut > 0) cr_assert_eq(truncate(path, cut), 0);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(bytes, 1, n, f), n);
        fclose(f);
    }
}

// An IDX file: header (00 00 code ndim, dims big-endian) then `data` (already big-endian).
static void write_idx(const char *path, int gz, int code, int ndim, const uint32_t *dims, const void *data, size_t nbytes) {
    size_t hn = 4 + 4 * (size_t)ndim;
    uint8_t *buf = malloc(hn + nbytes);
    buf[0] = 0; buf[1] = 0; buf[2] = (uint8_t)code; buf[3] = (uint8_t)ndim;
    for (int d = 0; d < ndim; d++)
        for (int k = 0; k < 4; k++) buf[4 + 4 * d + k] = (uint8_t)(dims[d] >> (24 - 8 * k));
    if (nbytes) memcpy(buf + hn, data, nbytes);
    write_file(path, buf, hn + nbytes, gz, 0);
    free(buf);
}

// A small Fashion-like pair: n images (28x28, pixel = (i + j) % 256) and nl labels (i % 10).
static void write_fashion_pair(const char *dir, const char *images, const char *labels, uint32_t n, uint32_t nl, int gz) {
    uint8_t *px = malloc((size_t)n * 784), *lb = malloc(nl);
    for (uint32_t i = 0; i < n; i++)
        for (int j = 0; j < 784; j++) px[(size_t)i * 784 + j] = (uint8_t)((i + j) % 256);
    for (uint32_t i = 0; i < nl; i++) lb[i] = (uint8_t)(i % 10);
    uint32_t idims[3] = {n, 28, 28}, ldims[1] = {nl};
    write_idx(path_in(dir, images), gz, 0x08, 3, idims, px, (size_t)n * 784);
    write_idx(path_in(dir, labels), gz, 0x08, 1, ldims, lb, nl);
    free(px);
    free(lb);
}

static int have_fashion(void) { return access(FASHION "/train-images-idx3-ubyte.gz", R_OK) == 0; }

// ----------------------------------------------------------------------------
// IDX

Test(idx, fashion_mnist_real_files) {
    if (!have_fashion()) cr_skip_test("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
    data_array img, lab;
    data_err err;
    cr_assert_eq(idx_read(FASHION "/train-images-idx3-ubyte.gz", &img, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(img.dtype, DT_U8);
    cr_assert_eq(img.ndim, 3);
    cr_assert_eq(img.dims[0], 60000);
    cr_assert_eq(img.dims[1], 28);
    cr_assert_eq(img.dims[2], 28);
    long sum = 0;  // python3: sum(gzip.open(...).read()[16:16+784]) == 76247
    for (int j = 0; j < 784; j++) sum += ((uint8_t *)img.data)[j];
    cr_assert_eq(sum, 76247);
    array_free(&img);
    cr_assert_eq(idx_read(FASHION "/train-labels-idx1-ubyte.gz", &lab, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(lab.ndim, 1);
    cr_assert_eq(lab.dims[0], 60000);
    // python3: list(gzip.open('train-labels-idx1-ubyte.gz').read()[8:18])
    const uint8_t first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    cr_assert_arr_eq(lab.data, first, 10);
    for (int i = 0; i < 60000; i++) cr_assert_leq(((uint8_t *)lab.data)[i], 9);
    array_free(&lab);
    cr_assert_eq(idx_read(FASHION "/t10k-labels-idx1-ubyte.gz", &lab, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(lab.dims[0], 10000);
    const uint8_t tfirst[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    cr_assert_arr_eq(lab.data, tfirst, 10);
    array_free(&lab);
}

Test(idx, missing_file) {
    data_array a;
    data_err err;
    cr_assert_eq(idx_read("/nonexistent/train-images-idx3-ubyte.gz", &a, &err), DATA_EIO);
    cr_assert_str_eq(err.msg, "/nonexistent/train-images-idx3-ubyte.gz: cannot open: No such file or directory");
    cr_assert_eq(err.code, DATA_EIO);
    cr_assert_null(a.data);
}

Test(idx, corrupt_magic) {
    const char *d = tmpdir(), *p = path_in(d, "bad.idx");
    write_file(p, "\x01\x02\x08\x01\x00\x00\x00\x01x", 9, 0, 0);
    data_array a;
    data_err err;
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
    char want[512];
    snprintf(want, sizeof want, "%s: bad magic 01 02 08 01: not an IDX file (expected 00 00, a dtype code 08..0e, ndim)", p);
    cr_assert_str_eq(err.msg, want);
    // an unknown dtype code is bad magic too
    write_file(p, "\x00\x00\x07\x01\x00\x00\x00\x01x", 9, 1, 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
    cr_assert(strstr(err.msg, "bad magic 00 00 07 01") != NULL, "%s", err.msg);
    // and so is a text file
    write_file(p, "hello\n", 6, 0, 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
}

Test(idx, bad_ndim_and_short_header) {
    const char *d = tmpdir(), *p = path_in(d, "x.idx");
    data_array a;
    data_err err;
    char want[512];
    write_file(p, "\x00\x00\x08\x00", 4, 0, 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: 0 dimensions, expected 1..8", p);
    cr_assert_str_eq(err.msg, want);
    write_file(p, "\x00\x00", 2, 0, 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: 2 bytes, too short for an IDX header", p);
    cr_assert_str_eq(err.msg, want);
    write_file(p, "\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", 10, 0, 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: the header ends inside its 3 dimensions", p);
    cr_assert_str_eq(err.msg, want);
}

Test(idx, truncated_data) {
    const char *d = tmpdir(), *p = path_in(d, "train-images-idx3-ubyte");
    uint8_t px[1000] = {0};
    uint32_t dims[3] = {60000, 28, 28};
    write_idx(p, 0, 0x08, 3, dims, px, sizeof px);
    data_array a;
    data_err err;
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    char want[512];
    snprintf(want, sizeof want, "%s: truncated: expected 47040000 bytes of data for 60000x28x28 uint8, got 1000", p);
    cr_assert_str_eq(err.msg, want);
    // the same, complete gzip stream of too little data
    p = path_in(d, "train-images-idx3-ubyte.gz");
    write_idx(p, 1, 0x08, 3, dims, px, sizeof px);
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: expected 47040000 bytes of data for 60000x28x28 uint8, got 1000", p);
    cr_assert_str_eq(err.msg, want);
}

Test(idx, truncated_gzip_stream) {
    const char *d = tmpdir(), *p = path_in(d, "t.gz");
    // 100 KB of incompressible-ish data, gzipped, then the file cut in the middle
    enum { N = 100 * 1024 };
    uint8_t *buf = malloc(N + 8);
    uint32_t x = 12345;
    memcpy(buf, "\x00\x00\x08\x01", 4);
    buf[4] = 0; buf[5] = 1; buf[6] = 0x90; buf[7] = 0;  // dims[0] = 0x00019000 = 102400
    for (int i = 0; i < N; i++) { x = x * 1664525u + 1013904223u; buf[8 + i] = (uint8_t)(x >> 24); }
    write_file(p, buf, N + 8, 1, 50000);
    data_array a;
    data_err err;
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    char want[512];
    snprintf(want, sizeof want, "%s: truncated gzip stream: expected 102400 bytes of data for 102400 uint8, got ", p);
    cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
    // cut only the 8-byte trailer (CRC + size): all the data is there, the stream is not whole
    write_file(p, buf, N + 8, 1, 0);
    struct stat st;
    stat(p, &st);
    cr_assert_eq(truncate(p, st.st_size - 8), 0);
    cr_assert_eq(idx_read(p, &a, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated gzip stream: it ends without its trailer", p);
    cr_assert_str_eq(err.msg, want);
    free(buf);
}

Test(idx, corrupt_gzip_stream) {
    const char *d = tmpdir(), *p = path_in(d, "c.gz");
    uint8_t data[4000];
    for (int i = 0; i < 4000; i++) data[i] = (uint8_t)(i * 7);
    uint32_t dims[1] = {4000};
    write_idx(p, 1, 0x08, 1, dims, data, sizeof data);
    // flip a byte of the CRC in the trailer
    FILE *f = fopen(p, "r+b");
    fseek(f, -6, SEEK_END);
    int c = fgetc(f);
    fseek(f, -6, SEEK_END);
    fputc(c ^ 0xff, f);
    fclose(f);
    data_array a;
    data_err err;
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
    cr_assert(strstr(err.msg, "corrupt gzip stream (incorrect data check)") != NULL, "%s", err.msg);
}

Test(idx, trailing_bytes) {
    const char *d = tmpdir(), *p = path_in(d, "l.idx");
    uint8_t data[5] = {1, 2, 3, 4, 5};
    uint32_t dims[1] = {3};
    write_idx(p, 0, 0x08, 1, dims, data, 5);
    data_array a;
    data_err err;
    cr_assert_eq(idx_read(p, &a, &err), DATA_EFORMAT);
    char want[512];
    snprintf(want, sizeof want, "%s: 2 unexpected bytes after the data (the header says the data ends at byte 11)", p);
    cr_assert_str_eq(err.msg, want);
}

Test(idx, gzip_detected_by_magic_not_name) {
    const char *d = tmpdir();
    uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    uint32_t dims[2] = {2, 3};
    write_idx(path_in(d, "gz_named_plain.idx"), 1, 0x08, 2, dims, data, 6);   // gzip inside, no .gz
    write_idx(path_in(d, "plain_named.gz"), 0, 0x08, 2, dims, data, 6);       // plain inside, .gz name
    data_array a;
    data_err err;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(idx_read(path_in(d, k ? "plain_named.gz" : "gz_named_plain.idx"), &a, &err), DATA_OK, "%s", err.msg);
        cr_assert_eq(a.ndim, 2);
        cr_assert_eq(a.dims[1], 3);
        cr_assert_arr_eq(a.data, data, 6);
        array_free(&a);
    }
}

Test(idx, other_dtypes_big_endian) {
    const char *d = tmpdir(), *p = path_in(d, "f.idx");
    // float32 {1.5, -2} and int32 {1, -2} and int16 {258} big-endian
    const uint8_t f32[8] = {0x3f, 0xc0, 0, 0, 0xc0, 0, 0, 0};
    const uint8_t i32[8] = {0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe};
    const uint8_t i16[2] = {1, 2};
    uint32_t two[1] = {2}, one[1] = {1};
    data_array a;
    data_err err;
    write_idx(p, 0, 0x0D, 1, two, f32, 8);
    cr_assert_eq(idx_read(p, &a, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(a.dtype, DT_F32);
    cr_assert_float_eq(((float *)a.data)[0], 1.5f, 0);
    cr_assert_float_eq(((float *)a.data)[1], -2.0f, 0);
    array_free(&a);
    write_idx(p, 1, 0x0C, 1, two, i32, 8);
    cr_assert_eq(idx_read(p, &a, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(a.dtype, DT_I32);
    cr_assert_eq(((int32_t *)a.data)[0], 1);
    cr_assert_eq(((int32_t *)a.data)[1], -2);
    array_free(&a);
    write_idx(p, 0, 0x0B, 1, one, i16, 2);
    cr_assert_eq(idx_read(p, &a, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(((int16_t *)a.data)[0], 258);
    array_free(&a);
}

// ----------------------------------------------------------------------------
// Fashion-MNIST datasets

Test(fashion, open_split_and_normalise) {
    if (!have_fashion()) cr_skip_test("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
    dataset train, val, test;
    data_err err;
    fashion_opts o = {.val_split = 10000};
    cr_assert_eq(fashion_open(FASHION, &o, &train, &val, &test, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(train.n, 50000);
    cr_assert_eq(val.n, 10000);
    cr_assert_eq(test.n, 10000);
    int fi = dataset_field(&train, "image"), fl = dataset_field(&train, "label");
    cr_assert_eq(fi, 0);
    cr_assert_eq(fl, 1);
    cr_assert_eq(train.field[fi].dtype, DT_F32);
    cr_assert_eq(train.field[fi].ndim, 3);
    cr_assert_eq(train.field[fi].shape[0], 1);
    cr_assert_eq(train.field[fi].nbytes, 784 * 4);
    cr_assert_eq(train.field[fl].dtype, DT_I64);
    cr_assert_eq(train.field[fl].ndim, 0);
    float img[784];
    int64_t label;
    dataset_get(&train, fi, 0, img);
    double sum = 0;
    for (int j = 0; j < 784; j++) { cr_assert(img[j] >= 0 && img[j] <= 1); sum += img[j]; }
    cr_assert_float_eq(sum, 76247 / 255.0, 1e-3);
    dataset_get(&train, fl, 0, &label);
    cr_assert_eq(label, 9);
    dataset_get(&test, fl, 1, &label);
    cr_assert_eq(label, 2);
    // val is the tail of the training file: val[0] is training sample 50000
    data_array lab;
    cr_assert_eq(idx_read(FASHION "/train-labels-idx1-ubyte.gz", &lab, &err), DATA_OK);
    for (int i = 0; i < 10000; i += 997) {
        dataset_get(&val, fl, i, &label);
        cr_assert_eq(label, ((uint8_t *)lab.data)[50000 + i]);
    }
    array_free(&lab);
    dataset_free(&train);
    dataset_free(&val);
    dataset_free(&test);
    // normalised: (x/255 - mean) / std
    o = (fashion_opts){.val_split = 0, .mean = 0.2860f, .std = 0.3530f};
    cr_assert_eq(fashion_open(FASHION, &o, &train, NULL, NULL, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(train.n, 60000);
    dataset_get(&train, 0, 0, img);
    cr_assert_float_eq(img[0], (0 / 255.0 - 0.2860) / 0.3530, 1e-5);  // the corner pixel is 0
    dataset_free(&train);
}

Test(fashion, label_count_mismatch) {
    const char *d = tmpdir();
    write_fashion_pair(d, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 20, 19, 1);
    dataset train;
    data_err err;
    cr_assert_eq(fashion_open(d, NULL, &train, NULL, NULL, &err), DATA_EMISMATCH);
    char want[512];
    snprintf(want, sizeof want, "%s/train-labels-idx1-ubyte.gz: has 19 labels but %s/train-images-idx3-ubyte.gz has 20 images", d, d);
    cr_assert_str_eq(err.msg, want);
}

Test(fashion, small_files_plain_and_missing) {
    const char *d = tmpdir();
    dataset train, val, test;
    data_err err;
    char want[512];
    cr_assert_eq(fashion_open(d, NULL, &train, NULL, NULL, &err), DATA_EIO);
    snprintf(want, sizeof want, "%s/train-images-idx3-ubyte.gz: cannot open: No such file or directory (nor %s/train-images-idx3-ubyte)", d, d);
    cr_assert_str_eq(err.msg, want);
    write_fashion_pair(d, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 30, 30, 0);
    write_fashion_pair(d, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 7, 7, 0);
    fashion_opts o = {.val_split = 5};
    cr_assert_eq(fashion_open(d, &o, &train, &val, &test, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(train.n, 25);
    cr_assert_eq(val.n, 5);
    cr_assert_eq(test.n, 7);
    float img[784];
    int64_t lab;
    dataset_get(&val, 0, 2, img);  // sample 27: pixel j = (27 + j) % 256
    cr_assert_float_eq(img[5], 32 / 255.0f, 1e-7);
    dataset_get(&val, 1, 2, &lab);
    cr_assert_eq(lab, 7);
    dataset_free(&train);
    dataset_free(&val);
    dataset_free(&test);
    // a label out of range
    uint8_t bad[3] = {1, 12, 3};
    uint32_t ld[1] = {3};
    write_fashion_pair(d, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 3, 3, 0);
    write_idx(path_in(d, "train-labels-idx1-ubyte"), 0, 0x08, 1, ld, bad, 3);
    cr_assert_eq(fashion_open(d, NULL, &train, NULL, NULL, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s/train-labels-idx1-ubyte: label 12 of sample 1 is not a class 0..9", d);
    cr_assert_str_eq(err.msg, want);
}

// val_split as large as the training set: the message names the bound, read before the
// store is released (it was read after: a use after free, issue 11, finding 2)
Test(fashion, val_split_too_large_names_the_bound) {
    const char *d = tmpdir();
    write_fashion_pair(d, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 100, 100, 0);
    write_fashion_pair(d, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 7, 7, 0);
    dataset train, val, test;
    data_err err;
    char want[512];
    fashion_opts o = {.val_split = 60000};
    cr_assert_eq(fashion_open(d, &o, &train, &val, &test, &err), DATA_EARG);
    snprintf(want, sizeof want, "%s: val_split 60000 must be in 0..99", d);
    cr_assert_str_eq(err.msg, want);
}

// ----------------------------------------------------------------------------
// .npy

// A .npy file written byte by byte: version major, the header text as given (padding
// added), then data.
static void write_npy_raw(const char *path, int major, const char *dict, const void *data, size_t nbytes) {
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict), total = ((pre + dl + 1 + 63) / 64) * 64, hlen = total - pre;
    uint8_t *buf = calloc(1, total + nbytes);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    for (size_t k = 0; k < pre - 8; k++) buf[8 + k] = (uint8_t)(hlen >> (8 * k));
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hlen - dl - 1);
    buf[total - 1] = '\n';
    memcpy(buf + total, data, nbytes);
    write_file(path, buf, total + nbytes, 0, 0);
    free(buf);
}

Test(npy, roundtrip_all_dtypes) {
    const char *d = tmpdir(), *p = path_in(d, "a.npy");
    uint8_t raw[6 * 8];
    for (int i = 0; i < 48; i++) raw[i] = (uint8_t)(i * 37 + 1);
    for (int t = 0; t < DT_COUNT; t++) {
        data_array a = {.dtype = (data_dtype)t, .ndim = 2, .dims = {2, 3}, .numel = 6, .data = raw}, b;
        data_err err;
        cr_assert_eq(npy_write(p, &a, &err), DATA_OK, "%s", err.msg);
        cr_assert_eq(npy_read(p, &b, &err), DATA_OK, "%s: %s", dtype_name((data_dtype)t), err.msg);
        cr_assert_eq(b.dtype, (data_dtype)t);
        cr_assert_eq(b.ndim, 2);
        cr_assert_eq(b.dims[0], 2);
        cr_assert_eq(b.dims[1], 3);
        cr_assert_arr_eq(b.data, raw, 6 * dtype_size((data_dtype)t));
        array_free(&b);
    }
    // what numpy writes, byte for byte: np.save(f, np.arange(3, dtype='<i8'))
    int64_t v[3] = {0, 1, 2};
    data_array a = {.dtype = DT_I64, .ndim = 1, .dims = {3}, .numel = 3, .data = v};
    data_err err;
    cr_assert_eq(npy_write(p, &a, &err), DATA_OK);
    FILE *f = fopen(p, "rb");
    char head[129] = {0};
    cr_assert_eq(fread(head, 1, 128, f), 128);
    fclose(f);
    const char *dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
    cr_assert(memcmp(head, "\x93NUMPY\x01\x00\x76\x00", 10) == 0);
    cr_assert(memcmp(head + 10, dict, strlen(dict)) == 0);
    cr_assert_eq(head[127], '\n');
    // a scalar
    float s = 2.5f;
    a = (data_array){.dtype = DT_F32, .ndim = 0, .numel = 1, .data = &s};
    data_array b;
    cr_assert_eq(npy_write(p, &a, &err), DATA_OK);
    cr_assert_eq(npy_read(p, &b, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(b.ndim, 0);
    cr_assert_float_eq(*(float *)b.data, 2.5f, 0);
    array_free(&b);
}

Test(npy, header_versions_and_styles) {
    const char *d = tmpdir(), *p = path_in(d, "h.npy");
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint8_t u[4] = {1, 2, 3, 4};
    const struct { int major; const char *dict; data_dtype t; int ndim; int64_t d0, d1; const void *data; size_t n; } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", DT_F32, 2, 2, 3, x, 24},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", DT_F32, 1, 6, 0, x, 24},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", DT_F32, 2, 3, 2, x, 24},
        {1, "{\"shape\":(2,2),\"descr\":\"|u1\",\"fortran_order\":False}", DT_U8, 2, 2, 2, u, 4},   // any order, " quotes
        {1, "{ 'descr' : '<u1' ,\n 'fortran_order' : False , 'shape' : ( 4L , ) , }", DT_U8, 1, 4, 0, u, 4},  // spaces, 4L
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_npy_raw(p, cases[k].major, cases[k].dict, cases[k].data, cases[k].n);
        data_array a;
        data_err err;
        cr_assert_eq(npy_read(p, &a, &err), DATA_OK, "case %zu: %s", k, err.msg);
        cr_assert_eq(a.dtype, cases[k].t, "case %zu", k);
        cr_assert_eq(a.ndim, cases[k].ndim, "case %zu", k);
        cr_assert_eq(a.dims[0], cases[k].d0, "case %zu", k);
        if (a.ndim > 1) cr_assert_eq(a.dims[1], cases[k].d1, "case %zu", k);
        cr_assert_arr_eq(a.data, cases[k].data, cases[k].n, "case %zu", k);
        array_free(&a);
    }
}

Test(npy, errors) {
    const char *d = tmpdir(), *p = path_in(d, "e.npy");
    float x[4] = {0};
    data_array a;
    data_err err;
    char want[512];
    const struct { int major; const char *dict; size_t n; int code; const char *msg; } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, DATA_EFORMAT,
         "fortran_order is True; only C order is supported (save np.ascontiguousarray(x))"},
        {1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", 16, DATA_EFORMAT,
         "big-endian dtype '>f4' is not supported (save it as '<f4')"},
        {1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16, DATA_EFORMAT,
         "unsupported dtype '<c8' (supported: little-endian uint8, int8, int16, int32, int64, float32, float64)"},
        {1, "{'descr': '<f4', 'shape': (4,), }", 16, DATA_EFORMAT, "bad .npy header: missing key 'fortran_order'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", 16, DATA_EFORMAT, "bad .npy header: unexpected key 'x'"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4 3), }", 16, DATA_EFORMAT,
         "bad .npy header: expected ',' or ')' in the shape at '3), }'"},
        {1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", 16, DATA_EFORMAT,
         "structured dtypes (a list descr) are not supported"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 10, DATA_ETRUNC,
         "truncated: expected 16 bytes of data for 4 float32, got 10"},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 16, DATA_EFORMAT,
         "4 unexpected bytes after the data (the header says the data ends at byte 140)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_npy_raw(p, cases[k].major, cases[k].dict, x, cases[k].n);
        cr_assert_eq(npy_read(p, &a, &err), cases[k].code, "case %zu: %s", k, err.msg);
        snprintf(want, sizeof want, "%s: %s", p, cases[k].msg);
        cr_assert_str_eq(err.msg, want, "case %zu: got `%s`", k, err.msg);
        cr_assert_null(a.data);
    }
    write_file(p, "\x93NUMPX\x01\x00", 8, 0, 0);
    cr_assert_eq(npy_read(p, &a, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: bad magic: not a .npy file (expected \\x93NUMPY)", p);
    cr_assert_str_eq(err.msg, want);
    write_file(p, "\x93NUMPY\x04\x00\x10\x00", 10, 0, 0);
    cr_assert_eq(npy_read(p, &a, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: .npy format version 4.0 is not supported (1.0, 2.0, 3.0)", p);
    cr_assert_str_eq(err.msg, want);
    write_file(p, "\x93NUMPY\x01\x00\x76\x00{'descr'", 18, 0, 0);
    cr_assert_eq(npy_read(p, &a, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: the file ends inside the 118-byte .npy header", p);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(npy_read(path_in(d, "none.npy"), &a, &err), DATA_EIO);
}

Test(npy, dataset_fields) {
    const char *d = tmpdir();
    uint8_t x[5 * 4];
    int64_t y[5] = {4, 3, 2, 1, 0};
    for (int i = 0; i < 20; i++) x[i] = (uint8_t)(i * 10);
    data_array ax = {.dtype = DT_U8, .ndim = 3, .dims = {5, 2, 2}, .numel = 20, .data = x};
    data_array ay = {.dtype = DT_I64, .ndim = 1, .dims = {5}, .numel = 5, .data = y};
    data_err err;
    cr_assert_eq(npy_write(path_in(d, "x.npy"), &ax, &err), DATA_OK);
    cr_assert_eq(npy_write(path_in(d, "y.npy"), &ay, &err), DATA_OK);
    npy_field_spec f[2] = {
        {.name = "x", .path = path_in(d, "x.npy"), .convert = 1, .out_dtype = DT_F32, .scale = 1 / 255.0f, .mean = 0.5f, .std = 0.25f},
        {.name = "y", .path = path_in(d, "y.npy")},
    };
    dataset ds;
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(ds.n, 5);
    cr_assert_eq(ds.field[0].ndim, 2);
    cr_assert_eq(ds.field[0].numel, 4);
    cr_assert_eq(ds.field[1].dtype, DT_I64);
    float xs[4];
    int64_t ys;
    dataset_get(&ds, 0, 3, xs);
    for (int j = 0; j < 4; j++) cr_assert_float_eq(xs[j], ((12 + j) * 10 / 255.0 - 0.5) / 0.25, 1e-5);
    dataset_get(&ds, 1, 3, &ys);
    cr_assert_eq(ys, 1);
    dataset_free(&ds);
    // sample counts that differ
    ay.dims[0] = 4;
    ay.numel = 4;
    cr_assert_eq(npy_write(path_in(d, "y.npy"), &ay, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EMISMATCH);
    char want[512];
    snprintf(want, sizeof want, "%s: has 4 samples but %s has 5", f[1].path, f[0].path);
    cr_assert_str_eq(err.msg, want);
}

// A file generated for one shape and dtype is checked against them (issue 11, finding 1):
// rows of another shape, another dtype, labels of shape (N, 1) or float labels, and
// labels out of range are refused naming the file (and the sample).
Test(npy, dataset_checked_against_the_compiled_shape) {
    const char *d = tmpdir();
    float x[256 * 5] = {0};
    int64_t y[256];
    for (int i = 0; i < 256; i++) y[i] = i % 3;
    data_err err;
    dataset ds;
    char want[1024];
    const char *xp = path_in(d, "x.npy"), *yp = path_in(d, "y.npy");
    data_array ay = {.dtype = DT_I64, .ndim = 1, .dims = {256}, .numel = 256, .data = y};
    cr_assert_eq(npy_write(yp, &ay, &err), DATA_OK);
    npy_field_spec f[2] = {
        {.name = "x", .path = xp, .convert = 1, .out_dtype = DT_F32, .scale = 1, .std = 1,
         .check = 1, .ndim = 1, .shape = {4}, .dtypes = 1u << DT_F32 | 1u << DT_F64},
        {.name = "y", .path = yp, .convert = 1, .out_dtype = DT_I64, .check = 1, .ndim = 0,
         .dtypes = 1u << DT_I32 | 1u << DT_I64, .lo = 0, .hi = 3, .except = -100, .range_what = "class index"},
    };
    // (256, 4): what the program was generated for
    data_array ax = {.dtype = DT_F32, .ndim = 2, .dims = {256, 4}, .numel = 256 * 4, .data = x};
    cr_assert_eq(npy_write(xp, &ax, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_OK, "%s", err.msg);
    dataset_free(&ds);
    // (256, 3), (256, 5) and (256, 2, 2): refused
    const int64_t shapes[3][3] = {{2, 256, 3}, {2, 256, 5}, {3, 256, 2}};
    const char *shown[3] = {"3", "5", "2x2"}, *whole[3] = {"256x3", "256x5", "256x2x2"};
    for (int k = 0; k < 3; k++) {
        ax = (data_array){.dtype = DT_F32, .ndim = (int)shapes[k][0], .dims = {256, shapes[k][2], 2}, .numel = 256 * shapes[k][2] * (shapes[k][0] == 3 ? 2 : 1), .data = x};
        cr_assert_eq(npy_write(xp, &ax, &err), DATA_OK);
        cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EMISMATCH, "case %d", k);
        snprintf(want, sizeof want, "%s: field 'x': one sample has shape %s, but this program was generated for 4 (the file is %s)", xp, shown[k], whole[k]);
        cr_assert_str_eq(err.msg, want);
    }
    // float64 is accepted, uint8 is not (the program scales uint8 pixels, and was not told to)
    double x64[256 * 4] = {0};
    ax = (data_array){.dtype = DT_F64, .ndim = 2, .dims = {256, 4}, .numel = 256 * 4, .data = x64};
    cr_assert_eq(npy_write(xp, &ax, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_OK, "%s", err.msg);
    dataset_free(&ds);
    ax = (data_array){.dtype = DT_U8, .ndim = 2, .dims = {256, 4}, .numel = 256 * 4, .data = x};
    cr_assert_eq(npy_write(xp, &ax, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EMISMATCH);
    snprintf(want, sizeof want, "%s: field 'x' is uint8, but this program was generated for float32 or float64", xp);
    cr_assert_str_eq(err.msg, want);
    ax = (data_array){.dtype = DT_F32, .ndim = 2, .dims = {256, 4}, .numel = 256 * 4, .data = x};
    cr_assert_eq(npy_write(xp, &ax, &err), DATA_OK);
    // labels of shape (N, 1)
    ay = (data_array){.dtype = DT_I64, .ndim = 2, .dims = {256, 1}, .numel = 256, .data = y};
    cr_assert_eq(npy_write(yp, &ay, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EMISMATCH);
    snprintf(want, sizeof want, "%s: field 'y': one sample has shape 1, but this program was generated for () (the file is 256x1)", yp);
    cr_assert_str_eq(err.msg, want);
    // float labels
    float yf[256] = {0};
    ay = (data_array){.dtype = DT_F32, .ndim = 1, .dims = {256}, .numel = 256, .data = yf};
    cr_assert_eq(npy_write(yp, &ay, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EMISMATCH);
    snprintf(want, sizeof want, "%s: field 'y' is float32, but this program was generated for int32 or int64", yp);
    cr_assert_str_eq(err.msg, want);
    // a label out of range names the file and the sample; ignore_index is allowed
    y[7] = -100;
    y[200] = 3;
    ay = (data_array){.dtype = DT_I64, .ndim = 1, .dims = {256}, .numel = 256, .data = y};
    cr_assert_eq(npy_write(yp, &ay, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: sample 200: class index 3 is out of range [0, 3)", yp);
    cr_assert_str_eq(err.msg, want);
    y[200] = 2;
    cr_assert_eq(npy_write(yp, &ay, &err), DATA_OK);
    cr_assert_eq(npy_dataset_open(f, 2, &ds, &err), DATA_OK, "%s", err.msg);
    dataset_free(&ds);
}

// A FIFO (or any file that is not a regular file) is refused, never opened: opening
// one with no writer blocks forever (issue 11, finding 10).
Test(npy, fifo_is_refused_not_waited_on, .timeout = 10) {
    const char *d = tmpdir(), *p = path_in(d, "fifo.npy");
    cr_assert_eq(mkfifo(p, 0600), 0);
    data_array a;
    data_err err;
    char want[512];
    cr_assert_eq(npy_read(p, &a, &err), DATA_EIO);
    snprintf(want, sizeof want, "%s: cannot open: not a regular file", p);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(idx_read(p, &a, &err), DATA_EIO);
    cr_assert_str_eq(err.msg, want);
}

// ----------------------------------------------------------------------------
// shuffle and sharding

static int is_permutation(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

Test(sampler, shuffle_determinism) {
    enum { N = 1000 };
    int64_t a[N], b[N], c[N], e[N];
    sampler_permute(42, 3, N, a);
    sampler_permute(42, 3, N, b);
    sampler_permute(42, 4, N, c);
    sampler_permute(43, 3, N, e);
    cr_assert(is_permutation(a, N));
    cr_assert(is_permutation(c, N));
    cr_assert_arr_eq(a, b, sizeof a, "same seed and epoch, same order");
    cr_assert(memcmp(a, c, sizeof a) != 0, "another epoch, another order");
    cr_assert(memcmp(a, e, sizeof a) != 0, "another seed, another order");
    int fixed = 0;
    for (int i = 0; i < N; i++) fixed += a[i] == i;
    cr_assert_lt(fixed, 10, "a shuffle leaves ~1 element in place, not %d", fixed);
    // uniformity: over many epochs each of 4 elements lands in position 0 about 1/4 of the time
    int count[4] = {0};
    for (int ep = 0; ep < 4000; ep++) { int64_t q[4]; sampler_permute(7, ep, 4, q); count[q[0]]++; }
    for (int k = 0; k < 4; k++) cr_assert(count[k] > 850 && count[k] < 1150, "position 0 holds %d %d times of 4000", k, count[k]);
}

Test(sampler, shard_like_distributed_sampler) {
    // N = 10, R = 3: DistributedSampler pads [0..9] to [0..9, 0, 1] and takes every 3rd
    int64_t order[10], out[4];
    for (int i = 0; i < 10; i++) order[i] = i;
    const int64_t want[3][4] = {{0, 3, 6, 9}, {1, 4, 7, 0}, {2, 5, 8, 1}};
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(sampler_shard(order, 10, 3, r, out), 4);
        cr_assert_arr_eq(out, want[r], sizeof out);
    }
    // padding longer than the dataset: N = 2, R = 5 -> [a b a b a], rank r gets [r % 2]
    int64_t o2[2] = {7, 3}, one[1];
    for (int r = 0; r < 5; r++) { cr_assert_eq(sampler_shard(o2, 2, 5, r, one), 1); cr_assert_eq(one[0], o2[r % 2]); }
    // shuffled: the ranks together cover every index; the extra ones are the first of the order
    enum { N = 103, R = 4 };
    int64_t perm[N], shard[R][(N + R - 1) / R];
    sampler_permute(1, 0, N, perm);
    int cnt[N] = {0};
    for (int r = 0; r < R; r++) {
        int64_t m = sampler_shard(perm, N, R, r, shard[r]);
        cr_assert_eq(m, 26);
        for (int p = 0; p < m; p++) cnt[shard[r][p]]++;
    }
    for (int i = 0; i < N; i++) {
        int pad = 0;  // total 104: one padded index, perm[0]
        if (i == perm[0]) pad = 1;
        cr_assert_eq(cnt[i], 1 + pad, "index %d seen %d times", i, cnt[i]);
    }
}

// ----------------------------------------------------------------------------
// loader

// A synthetic dataset with a float field x (2, 3) and an int64 label y.
static dataset small_synth(int64_t n, uint64_t seed) {
    synth_field_spec f[2] = {
        {.name = "x", .dtype = DT_F32, .ndim = 2, .shape = {2, 3}, .dist = SYNTH_NORMAL, .a = 0, .b = 1},
        {.name = "y", .dtype = DT_I64, .ndim = 0, .dist = SYNTH_RANDINT, .a = 0, .b = 10},
    };
    dataset ds;
    data_err err;
    cr_assert_eq(synth_open(f, 2, n, seed, &ds, &err), DATA_OK, "%s", err.msg);
    return ds;
}

// Every batch of `epochs` epochs, flattened: for each batch its epoch, index, size,
// samples and bytes, so two runs can be compared with memcmp.
typedef struct { char *buf; size_t len, cap; } trace;
static void trace_add(trace *t, const void *p, size_t n) {
    if (t->len + n > t->cap) { t->cap = (t->len + n) * 2; t->buf = realloc(t->buf, t->cap); }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}
static trace run_loader(loader *L, int epochs, int64_t max_batches) {
    trace t = {0};
    data_batch b;
    data_err err;
    int64_t nb = 0;
    for (int e = 0; e < epochs && nb < max_batches;) {
        int rc = loader_next(L, &b, &err);
        if (rc == DATA_END) { e++; trace_add(&t, "END", 3); continue; }
        cr_assert_eq(rc, DATA_OK, "%s", err.msg);
        trace_add(&t, &b.epoch, 8);
        trace_add(&t, &b.index, 8);
        trace_add(&t, &b.size, 8);
        trace_add(&t, b.sample, 8 * (size_t)b.size);
        for (int f = 0; f < b.nfields; f++) trace_add(&t, b.data[f], b.field[f].nbytes * (size_t)b.size);
        nb++;
    }
    return t;
}

Test(loader, batches_hold_the_right_samples) {
    dataset ds = small_synth(10, 5);
    loader *L;
    data_err err;
    loader_opts o = {.batch_size = 4};
    cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(loader_len(L), 3);
    data_batch b;
    int64_t sizes[3] = {4, 4, 2};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(loader_next(L, &b, &err), DATA_OK);
        cr_assert_eq(b.size, sizes[k]);
        cr_assert_eq(b.index, k);
        for (int s = 0; s < b.size; s++) {
            cr_assert_eq(b.sample[s], 4 * k + s);  // no shuffle: in order
            float x[6];
            int64_t y;
            dataset_get(&ds, 0, b.sample[s], x);
            dataset_get(&ds, 1, b.sample[s], &y);
            cr_assert_arr_eq((float *)b.data[0] + 6 * s, x, sizeof x);
            cr_assert_eq(((int64_t *)b.data[1])[s], y);
        }
    }
    cr_assert_eq(loader_next(L, &b, &err), DATA_END);
    cr_assert_eq(loader_next(L, &b, &err), DATA_OK);
    cr_assert_eq(b.epoch, 1);
    cr_assert_eq(b.index, 0);
    loader_close(L);
    // drop_last: 10 samples, batch 4 -> 2 batches
    o.drop_last = 1;
    cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_OK);
    cr_assert_eq(loader_len(L), 2);
    loader_close(L);
    dataset_free(&ds);  // the loader held its own reference; freeing in either order is fine
}

Test(loader, bad_options) {
    dataset ds = small_synth(10, 5);
    loader *L;
    data_err err;
    loader_opts o = {.batch_size = 0};
    cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "loader: batch_size 0 must be >= 1");
    o = (loader_opts){.batch_size = 2, .num_replicas = 2, .rank = 2};
    cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "loader: rank 2 must be in 0..1 (num_replicas 2)");
    o = (loader_opts){.batch_size = 11, .drop_last = 1};
    cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "loader: drop_last with 10 samples per rank and batch_size 11 leaves no batch");
    dataset_free(&ds);
}

Test(loader, sharded_batches_cover_the_epoch) {
    dataset ds = small_synth(23, 1);
    int cnt[23] = {0};
    for (int r = 0; r < 3; r++) {
        loader *L;
        data_err err;
        loader_opts o = {.batch_size = 3, .shuffle = 1, .seed = 9, .num_replicas = 3, .rank = r, .prefetch = r};   // each LOADER_PREFETCH_*
        cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_OK);
        cr_assert_eq(loader_len(L), 3);  // ceil(23/3) = 8 per rank -> 3, 3, 2
        int64_t perm[23], shard[8], p = 0;
        sampler_permute(9, 0, 23, perm);
        sampler_shard(perm, 23, 3, r, shard);
        data_batch b;
        while (loader_next(L, &b, &err) == DATA_OK)
            for (int s = 0; s < b.size; s++, p++) { cr_assert_eq(b.sample[s], shard[p]); cnt[b.sample[s]]++; }
        cr_assert_eq(p, 8);
        loader_close(L);
    }
    int64_t perm[23];
    sampler_permute(9, 0, 23, perm);
    for (int i = 0; i < 23; i++) cr_assert_eq(cnt[i], 1 + (i == perm[0]), "index %d", i);  // 24 = 23 + perm[0]
    dataset_free(&ds);
}

Test(loader, prefetch_equals_synchronous) {
    dataset ds = small_synth(101, 3);
    for (int drop = 0; drop < 2; drop++) {
        // 60 epochs of 6-7 batches: the thread's ring (256 slots of these small batches)
        // wraps, fills up and sleeps, and is woken, again and again
        trace t[3];
        for (int pf = LOADER_PREFETCH_NONE; pf <= LOADER_PREFETCH_ALWAYS; pf++) {
            loader *L;
            data_err err;
            loader_opts o = {.batch_size = 8, .shuffle = 1, .seed = 77, .drop_last = drop, .num_replicas = 2, .rank = 1, .prefetch = pf};
            cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_OK);
            cr_assert_eq(loader_threaded(L), pf == LOADER_PREFETCH_ALWAYS);   // AUTO: in memory, no thread
            t[pf] = run_loader(L, 60, INT64_MAX);
            loader_close(L);
        }
        for (int pf = 1; pf < 3; pf++) {
            cr_assert_eq(t[0].len, t[pf].len);
            cr_assert(memcmp(t[0].buf, t[pf].buf, t[0].len) == 0, "prefetch %d's batches differ from synchronous ones", pf);
        }
        for (int pf = 0; pf < 3; pf++) free(t[pf].buf);
    }
    dataset_free(&ds);
}

// AUTO's thread: for samples computed on each read (a synthetic set too large to
// generate up front) and augmented images; a dataset in memory has none.
Test(loader, auto_prefetch_threads_only_costly_batches) {
    synth_field_spec big = {.name = "x", .dtype = DT_F32, .ndim = 1, .shape = {32}, .dist = SYNTH_UNIFORM, .a = 0, .b = 1};
    synth_field_spec img = {.name = "img", .dtype = DT_F32, .ndim = 3, .shape = {1, 4, 4}, .dist = SYNTH_UNIFORM, .a = 0, .b = 1};
    dataset lazy, small;
    data_err err;
    cr_assert_eq(synth_open(&big, 1, 1 << 20, 1, &lazy, &err), DATA_OK, "%s", err.msg);   // 128 MiB: generated per read
    cr_assert_eq(synth_open(&img, 1, 64, 1, &small, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(dataset_in_memory(&lazy), 0);
    cr_assert_eq(dataset_in_memory(&small), 1);
    augment_opts aug = {.field = "img", .padding = 1};
    const struct { dataset *ds; const augment_opts *aug; int threaded; } cases[] = {
        { &lazy, NULL, 1 }, { &small, NULL, 0 }, { &small, &aug, 1 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        loader *L;
        loader_opts o = {.batch_size = 4, .shuffle = 1, .seed = 3, .prefetch = LOADER_PREFETCH_AUTO, .augment = cases[c].aug};
        cr_assert_eq(loader_open(&L, cases[c].ds, &o, &err), DATA_OK, "%s", err.msg);
        cr_assert_eq(loader_threaded(L), cases[c].threaded, "case %zu", c);
        data_batch b;
        cr_assert_eq(loader_next(L, &b, &err), DATA_OK);
        loader_close(L);
    }
    dataset_free(&lazy);
    dataset_free(&small);
}

Test(loader, resume_mid_epoch_is_exact) {
    dataset ds = small_synth(50, 11);
    for (int pf = LOADER_PREFETCH_NONE; pf <= LOADER_PREFETCH_ALWAYS; pf++) {
        loader_opts o = {.batch_size = 6, .shuffle = 1, .seed = 5, .prefetch = pf};
        loader *A, *B;
        data_err err;
        cr_assert_eq(loader_open(&A, &ds, &o, &err), DATA_OK);
        trace head = run_loader(A, 100, 13);  // 13 batches: into epoch 1 (9 batches per epoch)
        free(head.buf);
        loader_state s = loader_state_get(A);
        cr_assert_eq(s.epoch, 1);
        cr_assert_eq(s.batch, 4);
        // a fresh loader (another prefetch mode, to show it does not matter) seeks to s
        o.prefetch = (pf + 1) % 3;
        cr_assert_eq(loader_open(&B, &ds, &o, &err), DATA_OK);
        trace warm = run_loader(B, 100, 3);  // B has been used: seek must still be exact
        free(warm.buf);
        cr_assert_eq(loader_seek(B, &s, &err), DATA_OK, "%s", err.msg);
        trace ta = run_loader(A, 3, INT64_MAX), tb = run_loader(B, 3, INT64_MAX);
        cr_assert_eq(ta.len, tb.len);
        cr_assert(memcmp(ta.buf, tb.buf, ta.len) == 0, "resumed batches differ");
        free(ta.buf);
        free(tb.buf);
        // a state from another setup is refused
        s.seed = 6;
        cr_assert_eq(loader_seek(B, &s, &err), DATA_EMISMATCH);
        cr_assert_str_eq(err.msg, "loader: the saved state is from a loader with another seed");
        loader_close(A);
        loader_close(B);
    }
    dataset_free(&ds);
}

Test(loader, close_while_prefetching) {
    dataset ds = small_synth(1000, 2);
    for (int k = 0; k < 50; k++) {
        loader *L;
        data_err err;
        loader_opts o = {.batch_size = 16, .shuffle = 1, .seed = (uint64_t)k, .prefetch = LOADER_PREFETCH_ALWAYS};
        cr_assert_eq(loader_open(&L, &ds, &o, &err), DATA_OK);
        data_batch b;
        for (int j = 0; j < k % 4; j++) cr_assert_eq(loader_next(L, &b, &err), DATA_OK);
        loader_close(L);  // must join without hanging, whatever the thread is doing
    }
    dataset_free(&ds);
}

Test(loader, fashion_batches) {
    if (!have_fashion()) cr_skip_test("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
    dataset train, val;
    data_err err;
    fashion_opts fo = {.val_split = 10000};
    cr_assert_eq(fashion_open(FASHION, &fo, &train, &val, NULL, &err), DATA_OK, "%s", err.msg);
    loader *L;
    loader_opts o = {.batch_size = 128, .shuffle = 1, .seed = 1, .prefetch = 1};
    cr_assert_eq(loader_open(&L, &train, &o, &err), DATA_OK);
    cr_assert_eq(loader_len(L), 391);  // ceil(50000 / 128)
    data_batch b;
    int64_t seen = 0;
    while (loader_next(L, &b, &err) == DATA_OK) {
        const int64_t *y = b.data[1];
        for (int s = 0; s < b.size; s++) cr_assert(y[s] >= 0 && y[s] <= 9);
        seen += b.size;
    }
    cr_assert_eq(seen, 50000);
    cr_assert_eq(b.size, 50000 - 390 * 128);
    loader_close(L);
    dataset_free(&train);
    dataset_free(&val);
}

// ----------------------------------------------------------------------------
// synthetic data

// One field of each distribution, FOUR_K elements a sample.
#define FOUR_K 4
static const synth_field_spec four_dists[4] = {
    {.name = "u", .dtype = DT_F32, .ndim = 1, .shape = {FOUR_K}, .dist = SYNTH_UNIFORM, .a = 2, .b = 5},
    {.name = "n", .dtype = DT_F64, .ndim = 1, .shape = {FOUR_K}, .dist = SYNTH_NORMAL, .a = 1, .b = 2},
    {.name = "b", .dtype = DT_U8, .ndim = 1, .shape = {FOUR_K}, .dist = SYNTH_BERNOULLI, .a = 0.3},
    {.name = "r", .dtype = DT_I64, .ndim = 1, .shape = {FOUR_K}, .dist = SYNTH_RANDINT, .a = -3, .b = 7},
};

// A set that fits is generated at open; a larger one on each read: the same values.
Test(synth, generated_up_front_or_per_read_alike) {
    enum { N = 5000 };
    const synth_field_spec *f = four_dists;
    dataset mem, lazy;
    data_err err;
    cr_assert_eq(synth_open(f, 4, N, 7, &mem, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(synth_open(f, 4, 1 << 20, 7, &lazy, &err), DATA_OK, "%s", err.msg);   // 84 MiB
    cr_assert_eq(dataset_in_memory(&mem), 1);
    cr_assert_eq(dataset_in_memory(&lazy), 0);
    for (int64_t i = 0; i < N; i++)
        for (int k = 0; k < 4; k++) {
            char a[64], b[64];
            dataset_get(&mem, k, i, a);
            dataset_get(&lazy, k, i, b);
            cr_assert_arr_eq(a, b, mem.field[k].nbytes, "field %s sample %lld", f[k].name, (long long)i);
        }
    dataset_free(&mem);
    dataset_free(&lazy);
}

Test(synth, deterministic_and_independent_of_n_and_other_fields) {
    dataset a = small_synth(100, 42), b = small_synth(1000, 42), c = small_synth(100, 43);
    float xa[6], xb[6], xc[6];
    int diff = 0;
    for (int i = 0; i < 100; i++) {
        dataset_get(&a, 0, i, xa);
        dataset_get(&b, 0, i, xb);
        dataset_get(&c, 0, i, xc);
        cr_assert_arr_eq(xa, xb, sizeof xa, "sample %d depends on n", i);
        diff += memcmp(xa, xc, sizeof xa) != 0;
    }
    cr_assert_eq(diff, 100, "another seed gives other samples");
    // field "x" alone, at another position, gives the same values
    synth_field_spec only = {.name = "x", .dtype = DT_F32, .ndim = 2, .shape = {2, 3}, .dist = SYNTH_NORMAL, .a = 0, .b = 1};
    dataset d;
    data_err err;
    cr_assert_eq(synth_open(&only, 1, 100, 42, &d, &err), DATA_OK);
    dataset_get(&a, 0, 57, xa);
    dataset_get(&d, 0, 57, xb);
    cr_assert_arr_eq(xa, xb, sizeof xa);
    dataset_free(&a);
    dataset_free(&b);
    dataset_free(&c);
    dataset_free(&d);
}

Test(synth, distributions) {
    enum { N = 20000, K = FOUR_K };
    const synth_field_spec *f = four_dists;
    dataset ds;
    data_err err;
    cr_assert_eq(synth_open(f, 4, N, 2024, &ds, &err), DATA_OK, "%s", err.msg);
    double s[4] = {0}, s2[4] = {0}, lo[4], hi[4];
    for (int k = 0; k < 4; k++) { lo[k] = 1e9; hi[k] = -1e9; }
    for (int i = 0; i < N; i++) {
        float u[K];
        double n[K];
        uint8_t b[K];
        int64_t r[K];
        dataset_get(&ds, 0, i, u);
        dataset_get(&ds, 1, i, n);
        dataset_get(&ds, 2, i, b);
        dataset_get(&ds, 3, i, r);
        for (int j = 0; j < K; j++) {
            double v[4] = {u[j], n[j], b[j], (double)r[j]};
            for (int k = 0; k < 4; k++) {
                s[k] += v[k]; s2[k] += v[k] * v[k];
                if (v[k] < lo[k]) lo[k] = v[k];
                if (v[k] > hi[k]) hi[k] = v[k];
            }
        }
    }
    double M = N * K, mean[4], var[4];
    for (int k = 0; k < 4; k++) { mean[k] = s[k] / M; var[k] = s2[k] / M - mean[k] * mean[k]; }
    // expected mean, variance; tolerances ~5 standard errors
    cr_assert_float_eq(mean[0], 3.5, 0.02);  cr_assert_float_eq(var[0], 0.75, 0.02);
    cr_assert(lo[0] >= 2 && hi[0] < 5);
    cr_assert_float_eq(mean[1], 1.0, 0.04);  cr_assert_float_eq(var[1], 4.0, 0.12);
    cr_assert_float_eq(mean[2], 0.3, 0.008); cr_assert_float_eq(var[2], 0.21, 0.01);
    cr_assert(lo[2] == 0 && hi[2] == 1);
    cr_assert_float_eq(mean[3], 1.5, 0.05);  cr_assert_float_eq(var[3], 8.25, 0.2);
    cr_assert(lo[3] == -3 && hi[3] == 6);
    dataset_free(&ds);
}

Test(synth, bad_specs) {
    synth_field_spec f = {.name = "y", .dtype = DT_I64, .ndim = 0, .dist = SYNTH_NORMAL, .a = 0, .b = 1};
    dataset ds;
    data_err err;
    cr_assert_eq(synth_open(&f, 1, 10, 1, &ds, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "synthetic dataset: field 'y': an integer field needs a bernoulli or randint distribution");
    f = (synth_field_spec){.name = "u", .dtype = DT_F32, .ndim = 0, .dist = SYNTH_UNIFORM, .a = 1, .b = 1};
    cr_assert_eq(synth_open(&f, 1, 10, 1, &ds, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "synthetic dataset: field 'u': uniform needs a < b");
}

Test(dataset, split_views) {
    dataset ds = small_synth(10, 8), tr, va;
    data_err err;
    cr_assert_eq(dataset_split(&ds, 3, &tr, &va, &err), DATA_OK);
    cr_assert_eq(tr.n, 7);
    cr_assert_eq(va.n, 3);
    int64_t y1, y2;
    dataset_get(&va, 1, 0, &y1);
    dataset_get(&ds, 1, 7, &y2);
    cr_assert_eq(y1, y2);
    dataset_free(&ds);  // the views keep the samples alive
    dataset_get(&tr, 1, 6, &y1);
    dataset_free(&tr);
    dataset_free(&va);
    cr_assert_eq(dataset_split(&(dataset){.n = 4}, 4, &tr, &va, &err), DATA_EARG);
    cr_assert_str_eq(err.msg, "dataset: val_split 4 must be in 0..3 (the dataset has 4 samples)");
}

// ----------------------------------------------------------------------------
// token files (llm.c's layout) and token windows

// A token file of n tokens, token i = (i * 7 + 3) % mod.
static const char *token_file(const char *dir, const char *name, int64_t n, int mod) {
    uint16_t *t = malloc((size_t)n * 2 + 2);
    for (int64_t i = 0; i < n; i++) t[i] = (uint16_t)((i * 7 + 3) % mod);
    const char *p = path_in(dir, name);
    data_err err;
    cr_assert_eq(tokens_write(p, t, n, &err), DATA_OK, "%s", err.msg);
    free(t);
    return p;
}

Test(tokens, roundtrip_and_llmc_layout) {
    const char *dir = tmpdir();
    const char *p = token_file(dir, "a.bin", 1000, 50257);
    // the bytes: int32 header (magic, version, count), then little-endian uint16
    FILE *f = fopen(p, "rb");
    unsigned char raw[1030];
    cr_assert_eq(fread(raw, 1, sizeof raw, f), 1030);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_size, 1024 + 2 * 1000);
    fclose(f);
    int32_t head[3];
    memcpy(head, raw, sizeof head);
    cr_assert_eq(head[0], 20240520);
    cr_assert_eq(head[1], 1);
    cr_assert_eq(head[2], 1000);
    cr_assert_eq(raw[1024] | raw[1025] << 8, 3);
    cr_assert_eq(raw[1026] | raw[1027] << 8, 10);
    uint16_t *t;
    int64_t n;
    data_err err;
    cr_assert_eq(tokens_read(p, &t, &n, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(n, 1000);
    for (int64_t i = 0; i < n; i++) cr_assert_eq(t[i], (i * 7 + 3) % 50257);
    free(t);
}

Test(tokens, corrupt_and_short_files_one_line) {
    const char *dir = tmpdir();
    const char *p = token_file(dir, "a.bin", 100, 256);
    uint16_t *t;
    int64_t n;
    data_err err;
    char want[512];
    // cut inside the tokens
    cr_assert_eq(truncate(p, 1024 + 150), 0);
    cr_assert_eq(tokens_read(p, &t, &n, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: the header says 100 tokens, the file holds 75", p);
    cr_assert_str_eq(err.msg, want);
    // cut inside the header
    cr_assert_eq(truncate(p, 10), 0);
    cr_assert_eq(tokens_read(p, &t, &n, &err), DATA_ETRUNC);
    snprintf(want, sizeof want, "%s: truncated: 10 bytes, shorter than a token file's 1024-byte header", p);
    cr_assert_str_eq(err.msg, want);
    // not a token file (a text)
    char text[2048];
    memset(text, 'a', sizeof text);
    const char *q = path_in(dir, "text.bin");
    write_file(q, text, sizeof text, 0, 0);
    cr_assert_eq(tokens_read(q, &t, &n, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: not a token file: magic 1633771873, expected 20240520 (llm.c's layout)", q);
    cr_assert_str_eq(err.msg, want);
    // another version, trailing bytes
    p = token_file(dir, "b.bin", 10, 256);
    FILE *f = fopen(p, "r+b");
    int32_t v = 2;
    fseek(f, 4, SEEK_SET);
    fwrite(&v, 4, 1, f);
    fclose(f);
    cr_assert_eq(tokens_read(p, &t, &n, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: token file version 2, expected 1 (uint16 tokens)", p);
    cr_assert_str_eq(err.msg, want);
    p = token_file(dir, "c.bin", 10, 256);
    f = fopen(p, "ab");
    fputs("xyz", f);
    fclose(f);
    cr_assert_eq(tokens_read(p, &t, &n, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: 3 unexpected bytes after the 10 tokens the header gives", p);
    cr_assert_str_eq(err.msg, want);
    // missing
    cr_assert_eq(tokens_read(path_in(dir, "none.bin"), &t, &n, &err), DATA_EIO);
    cr_assert(strstr(err.msg, "none.bin: cannot open: No such file or directory"), "%s", err.msg);
}

Test(tokens, windows_sequential_and_random) {
    const char *dir = tmpdir();
    const char *p = token_file(dir, "a.bin", 103, 256);
    data_err err;
    dataset ds;
    // sequential: stride T = 10 -> windows at 0, 10, ..., 90 (90 + 11 <= 103)
    tokens_opts o = {.path = p, .context = 10, .stride = 10, .vocab = 256, .input = "idx", .target = "targets"};
    cr_assert_eq(tokens_open(&o, &ds, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(ds.n, 10);
    cr_assert_eq(ds.nfields, 2);
    cr_assert_str_eq(ds.field[1].name, "targets");
    int64_t x[10], y[10];
    dataset_get(&ds, 0, 9, x);
    dataset_get(&ds, 1, 9, y);
    for (int j = 0; j < 10; j++) {
        cr_assert_eq(x[j], ((90 + j) * 7 + 3) % 256);
        cr_assert_eq(y[j], ((91 + j) * 7 + 3) % 256);   // the next token
    }
    dataset_free(&ds);
    // random windows: every offset is a sample; a shuffling loader draws them seeded
    o.stride = 1;
    cr_assert_eq(tokens_open(&o, &ds, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(ds.n, 93);
    loader_opts lo = {.batch_size = 4, .shuffle = 1, .seed = 5};
    loader *L;
    cr_assert_eq(loader_open(&L, &ds, &lo, &err), DATA_OK, "%s", err.msg);
    data_batch b;
    cr_assert_eq(loader_next(L, &b, &err), DATA_OK);
    int64_t perm[93];
    sampler_permute(5, 0, 93, perm);
    for (int s = 0; s < 4; s++) {
        cr_assert_eq(b.sample[s], perm[s]);
        cr_assert_eq(((int64_t *)b.data[0])[10 * s], (perm[s] * 7 + 3) % 256);
        cr_assert_eq(((int64_t *)b.data[1])[10 * s + 9], ((perm[s] + 10) * 7 + 3) % 256);
    }
    loader_close(L);
    dataset_free(&ds);
}

Test(tokens, window_errors) {
    const char *dir = tmpdir();
    data_err err;
    dataset ds;
    char want[512];
    const char *p = token_file(dir, "short.bin", 10, 256);
    tokens_opts o = {.path = p, .context = 10, .stride = 1, .vocab = 256, .input = "idx", .target = "targets"};
    cr_assert_eq(tokens_open(&o, &ds, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: 10 tokens, fewer than one window of context + 1 = 11", p);
    cr_assert_str_eq(err.msg, want);
    // GPT-2 tokens into a byte-level program: out of the vocabulary
    p = token_file(dir, "gpt2.bin", 100, 50257);
    o.path = p;
    cr_assert_eq(tokens_open(&o, &ds, &err), DATA_EFORMAT);
    snprintf(want, sizeof want, "%s: token 37 is 262, out of the vocabulary [0, 256) this program was generated for", p);
    cr_assert_str_eq(err.msg, want);
    o.vocab = 0;
    cr_assert_eq(tokens_open(&o, &ds, &err), DATA_OK, "%s", err.msg);
    dataset_free(&ds);
}

// ----------------------------------------------------------------------------
// CSV (runtime/csv.c), the random split, image augmentation

static int csv_try(const char *path, const csv_opts *base, dataset *ds, data_err *err) {
    csv_opts o = *base;
    o.path = path;
    return csv_open(&o, ds, err);
}

Test(csv, columns_by_name_quotes_and_gzip) {
    const char *d = tmpdir();
    const char *text = "\"x,1\";y;\"say \"\"hi\"\"\"\r\n1.5; -2 ;0\r\n\r\n3e2;4;1\n";
    write_file(path_in(d, "a.csv"), text, strlen(text), 0, 0);
    write_file(path_in(d, "a.csv.gz"), text, strlen(text), 1, 0);
    csv_column cols[] = {{"y", -1}, {"x,1", -1}}, tgt[] = {{"say \"hi\"", -1}};
    csv_opts o = {.delimiter = ';', .header = 1, .features = cols, .nfeatures = 2, .targets = tgt, .ntargets = 1,
                  .classes = 2, .input = "x", .target = "t"};
    for (int gz = 0; gz < 2; gz++) {
        dataset ds;
        data_err err;
        cr_assert_eq(csv_try(path_in(d, gz ? "a.csv.gz" : "a.csv"), &o, &ds, &err), DATA_OK, "%s", err.msg);
        cr_assert_eq(ds.n, 2);
        float x[2];
        int64_t t;
        dataset_get(&ds, 0, 0, x); dataset_get(&ds, 1, 0, &t);
        cr_assert(x[0] == -2.0f && x[1] == 1.5f && t == 0);
        dataset_get(&ds, 0, 1, x); dataset_get(&ds, 1, 1, &t);
        cr_assert(x[0] == 4.0f && x[1] == 300.0f && t == 1);
        dataset_free(&ds);
    }
}

Test(csv, errors_name_file_line_and_column) {
    const char *d = tmpdir();
    csv_column cols[] = {{"a", -1}}, tgt[] = {{NULL, 1}};
    csv_opts o = {.header = 1, .features = cols, .nfeatures = 1, .targets = tgt, .ntargets = 1, .input = "x", .target = "y"};
    struct { const char *text, *want; } cases[] = {
        {"a,b\n1,2\n1,nan\n", ":3: column '1': 'nan' is not a number"},
        {"a,b\n1,2\n,2\n", ":3: column 'a': '' is not a number"},
        {"a,b\n1,2\n1,2,3\n", ":3: 3 fields, but the header has 2"},
        {"b,c\n1,2\n", ":1: no column 'a' in the header (it has 'b', 'c')"},
        {"a,b\n", ": has a header but no rows"},
        {"a,b\n\"1,2\n", ":2: a quoted cell is not closed on its line"},
        {"a,b\n\"1\n\",2\n3,4\n", ":2: a quoted cell is not closed on its line"},
        {"a,b,c\n1,2,3\n", ""},   // (column 1 is b: fine)
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "c%zu.csv", k);
        write_file(path_in(d, name), cases[k].text, strlen(cases[k].text), 0, 0);
        dataset ds;
        data_err err;
        int rc = csv_try(path_in(d, name), &o, &ds, &err);
        if (!cases[k].want[0]) { cr_assert_eq(rc, DATA_OK, "%s", err.msg); dataset_free(&ds); continue; }
        cr_assert_neq(rc, DATA_OK, "case %zu", k);
        cr_assert(strstr(err.msg, name) && strstr(err.msg, cases[k].want), "case %zu: %s", k, err.msg);
        cr_assert_null(strchr(err.msg, '\n'));
    }
    dataset ds;
    data_err err;
    cr_assert_eq(csv_try(path_in(d, "none.csv"), &o, &ds, &err), DATA_EIO);
    cr_assert(strstr(err.msg, "none.csv: cannot open"), "%s", err.msg);
}

Test(dataset, random_split_is_seeded_and_disjoint) {
    const char *d = tmpdir();
    char text[4096];
    size_t len = (size_t)snprintf(text, sizeof text, "v,c\n");
    for (int i = 0; i < 50; i++) len += (size_t)snprintf(text + len, sizeof text - len, "%d,%d\n", i, i % 3);
    write_file(path_in(d, "s.csv"), text, len, 0, 0);
    csv_column cols[] = {{"v", -1}}, tgt[] = {{"c", -1}};
    csv_opts o = {.header = 1, .features = cols, .nfeatures = 1, .targets = tgt, .ntargets = 1, .classes = 3, .input = "x", .target = "y"};
    dataset all, tr[2], va[2];
    data_err err;
    cr_assert_eq(csv_try(path_in(d, "s.csv"), &o, &all, &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(data_split_count(0.2, 50), 10);
    cr_assert_eq(data_split_count(0.21, 50), 11);   // rounded up, as scikit-learn's test_size
    cr_assert_eq(data_split_count(7, 50), 7);
    for (int k = 0; k < 2; k++) cr_assert_eq(dataset_random_split(&all, 10, 3, &tr[k], &va[k], &err), DATA_OK, "%s", err.msg);
    cr_assert_eq(tr[0].n, 40);
    cr_assert_eq(va[0].n, 10);
    int seen[50] = {0}, moved = 0;
    for (int64_t i = 0; i < 50; i++) {
        float a, b;
        const dataset *p = i < 40 ? &tr[0] : &va[0], *q = i < 40 ? &tr[1] : &va[1];
        int64_t j = i < 40 ? i : i - 40;
        dataset_get(p, 0, j, &a);
        dataset_get(q, 0, j, &b);
        cr_assert_eq(a, b);   // the same seed, the same split
        seen[(int)a]++;
        moved += i >= 40 && (int)a < 40;
        int64_t c;
        dataset_get(p, 1, j, &c);
        cr_assert_eq(c, (int)a % 3);   // fields stay together
    }
    for (int i = 0; i < 50; i++) cr_assert_eq(seen[i], 1);
    cr_assert_gt(moved, 0, "the validation rows are drawn at random, not the last ones");
    cr_assert_neq(dataset_random_split(&all, 50, 3, &tr[0], &va[0], &err), DATA_OK);
    for (int k = 0; k < 2; k++) { dataset_free(&tr[k]); dataset_free(&va[k]); }
    dataset_free(&all);
}

Test(augment, crop_and_flip_are_pure_and_in_range) {
    enum { C = 2, H = 5, W = 7 };
    float src[C * H * W], a[C * H * W], b[C * H * W], tmp[C * H * W];
    for (int k = 0; k < C * H * W; k++) src[k] = (float)k;
    augment_opts o = {.field = "img", .padding = 2, .hflip = 0.5, .fill = {-1.0f, -2.0f}};
    int flipped = 0, shifted = 0;
    for (int64_t s = 0; s < 200; s++) {
        memcpy(a, src, sizeof a);
        memcpy(b, src, sizeof b);
        image_augment(&o, C, H, W, 11, 3, s, a, tmp);
        image_augment(&o, C, H, W, 11, 3, s, b, tmp);
        cr_assert_eq(memcmp(a, b, sizeof a), 0);
        // some (dy, dx, flip) in range explains every output value
        int found = 0;
        for (int dy = -2; dy <= 2 && !found; dy++)
            for (int dx = -2; dx <= 2 && !found; dx++)
                for (int fl = 0; fl < 2 && !found; fl++) {
                    int same = 1;
                    for (int c = 0; c < C && same; c++)
                        for (int y = 0; y < H && same; y++)
                            for (int x = 0; x < W && same; x++) {
                                int sy = y + dy, sx = (fl ? W - 1 - x : x) + dx;
                                float want = sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(c * H + sy) * W + sx] : o.fill[c];
                                same = a[(c * H + y) * W + x] == want;
                            }
                    if (same) { found = 1; flipped += fl; shifted += dy != 0 || dx != 0; }
                }
        cr_assert(found, "sample %lld is no crop/flip of its image", (long long)s);
    }
    cr_assert(flipped > 60 && flipped < 140, "%d of 200 flipped at p = 0.5", flipped);
    cr_assert_gt(shifted, 150);
}
