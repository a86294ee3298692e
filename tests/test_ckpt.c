// Criterion tests of runtime/ckpt: round trips, atomicity (including SIGKILL in the
// middle of a write), strict validation of malformed files, model mismatches, and
// interchange with PyTorch (tests/torch/read_safetensors.py).
#include <criterion/criterion.h>

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/ckpt.h"

// Each test runs in its own process (and two at a time): each gets its own directory.
static char dir[64];
static void make_dir(void) {
    strcpy(dir, "/tmp/loom_test_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(ckpt, .init = make_dir, .fini = remove_dir);

static char *in_dir(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

// Writes 8-byte length + header (padded with spaces to 8) + data; hlen overrides the
// length field when non-zero.
static void write_raw(const char *path, const char *header, const void *data, size_t ndata, uint64_t hlen) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    size_t n = strlen(header), pad = (8 - n % 8) % 8;
    uint64_t len = hlen ? hlen : n + pad;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(len >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    if (ndata) fwrite(data, 1, ndata, f);
    fclose(f);
}

Test(ckpt, round_trip_every_dtype) {
    float f32[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 3.4e38f};
    double f64[3] = {0.1, -1e300, 5e-324};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001}, bf16[2] = {0x3F80, 0xFF80};
    int64_t i64[2] = {INT64_MIN, INT64_MAX};
    int32_t i32[3] = {-1, 0, 2147483647};
    int16_t i16[2] = {-32768, 7};
    int8_t i8[2] = {-128, 127};
    uint8_t u8[5] = {0, 1, 2, 254, 255}, bools[2] = {1, 0};
    float scalar = 42.5f;
    int64_t s23[] = {2, 3}, s3[] = {3}, s4[] = {4}, s2[] = {2}, s5[] = {5}, s121[] = {1, 2, 1}, s03[] = {0, 3};
    ckpt_writer w;
    ckpt_writer_init(&w);
    cr_assert_eq(ckpt_writer_add(&w, "f32", CKPT_F32, 2, s23, f32), 0);
    cr_assert_eq(ckpt_writer_add(&w, "f64", CKPT_F64, 1, s3, f64), 0);
    cr_assert_eq(ckpt_writer_add(&w, "f16", CKPT_F16, 1, s4, f16), 0);   // odd sizes before wider types:
    cr_assert_eq(ckpt_writer_add(&w, "bf16", CKPT_BF16, 1, s2, bf16), 0); // unaligned data must still work
    cr_assert_eq(ckpt_writer_add(&w, "i64", CKPT_I64, 1, s2, i64), 0);
    cr_assert_eq(ckpt_writer_add(&w, "i32", CKPT_I32, 1, s3, i32), 0);
    cr_assert_eq(ckpt_writer_add(&w, "i16", CKPT_I16, 1, s2, i16), 0);
    cr_assert_eq(ckpt_writer_add(&w, "i8", CKPT_I8, 1, s2, i8), 0);
    cr_assert_eq(ckpt_writer_add(&w, "u8", CKPT_U8, 1, s5, u8), 0);
    cr_assert_eq(ckpt_writer_add(&w, "bool", CKPT_BOOL, 3, s121, bools), 0);
    cr_assert_eq(ckpt_writer_add(&w, "scalar", CKPT_F32, 0, NULL, &scalar), 0);
    cr_assert_eq(ckpt_writer_add(&w, "empty", CKPT_F32, 2, s03, NULL), 0);
    cr_assert_eq(ckpt_write(&w, in_dir("all.safetensors")), 0, "%s", w.err);
    ckpt_writer_free(&w);

    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, in_dir("all.safetensors")), 0, "%s", f.err);
    cr_assert_eq(f.ntensors, 12);
    struct { const char *name; ckpt_dtype dt; int ndim; const int64_t *shape; const void *data; size_t n; } want[] = {
        {"f32", CKPT_F32, 2, s23, f32, sizeof f32}, {"f64", CKPT_F64, 1, s3, f64, sizeof f64},
        {"f16", CKPT_F16, 1, s4, f16, sizeof f16}, {"bf16", CKPT_BF16, 1, s2, bf16, sizeof bf16},
        {"i64", CKPT_I64, 1, s2, i64, sizeof i64}, {"i32", CKPT_I32, 1, s3, i32, sizeof i32},
        {"i16", CKPT_I16, 1, s2, i16, sizeof i16}, {"i8", CKPT_I8, 1, s2, i8, sizeof i8},
        {"u8", CKPT_U8, 1, s5, u8, sizeof u8}, {"bool", CKPT_BOOL, 3, s121, bools, sizeof bools},
        {"scalar", CKPT_F32, 0, NULL, &scalar, sizeof scalar}, {"empty", CKPT_F32, 2, s03, NULL, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const ckpt_tensor *t = ckpt_find(&f, want[i].name);
        cr_assert_not_null(t, "%s", want[i].name);
        cr_expect_eq(t->dtype, want[i].dt, "%s", want[i].name);
        cr_assert_eq(t->ndim, want[i].ndim, "%s", want[i].name);
        for (int d = 0; d < t->ndim; d++) cr_expect_eq(t->shape[d], want[i].shape[d]);
        cr_assert_eq(t->end - t->begin, want[i].n, "%s", want[i].name);
        char buf[64] = {0};
        cr_assert_eq(ckpt_read_into(&f, want[i].name, want[i].dt, want[i].ndim, want[i].shape, buf), 0, "%s", f.err);
        if (want[i].n) cr_expect_eq(memcmp(buf, want[i].data, want[i].n), 0, "%s differs", want[i].name);
    }
    cr_expect_null(ckpt_find(&f, "nope"));
    // tensors in the file in the order added, header padded so data starts 8-aligned
    cr_expect_str_eq(f.tensors[0].name, "f32");
    cr_expect_str_eq(f.tensors[11].name, "empty");
    uint64_t hlen;
    memcpy(&hlen, f.map, 8);
    cr_expect_eq(hlen % 8, 0);
    ckpt_close(&f);
}

Test(ckpt, metadata_round_trip) {
    ckpt_writer w;
    ckpt_writer_init(&w);
    float x = 1;
    int64_t s1[] = {1};
    cr_assert_eq(ckpt_writer_add(&w, "x", CKPT_F32, 1, s1, &x), 0);
    cr_assert_eq(ckpt_writer_set_meta(&w, "model", "PawModel"), 0);
    cr_assert_eq(ckpt_writer_set_meta(&w, "tricky", "quote \" backslash \\ newline \n tab \t caf\xc3\xa9 \x01"), 0);
    cr_assert_eq(ckpt_writer_set_meta(&w, "empty", ""), 0);
    cr_assert_eq(ckpt_writer_set_meta_i64(&w, "step", 123456789012LL), 0);
    cr_assert_eq(ckpt_writer_set_meta_i64(&w, "neg", -5), 0);
    cr_assert_eq(ckpt_writer_set_meta_f64(&w, "lr", 0.1), 0);
    cr_assert_eq(ckpt_writer_set_meta_f64(&w, "tiny", 5e-324), 0);
    cr_assert_eq(ckpt_writer_set_meta(&w, "model", "PawModel2"), 0);   // replaces
    cr_assert_eq(ckpt_write(&w, in_dir("m.safetensors")), 0, "%s", w.err);
    ckpt_writer_free(&w);

    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, in_dir("m.safetensors")), 0, "%s", f.err);
    cr_expect_eq(f.nmeta, 7);
    cr_expect_str_eq(ckpt_meta_get(&f, "model"), "PawModel2");
    cr_expect_str_eq(ckpt_meta_get(&f, "tricky"), "quote \" backslash \\ newline \n tab \t caf\xc3\xa9 \x01");
    cr_expect_str_eq(ckpt_meta_get(&f, "empty"), "");
    int64_t i;
    double d;
    cr_assert_eq(ckpt_meta_get_i64(&f, "step", &i), 0);
    cr_expect_eq(i, 123456789012LL);
    cr_assert_eq(ckpt_meta_get_i64(&f, "neg", &i), 0);
    cr_expect_eq(i, -5);
    cr_assert_eq(ckpt_meta_get_f64(&f, "lr", &d), 0);
    cr_expect_eq(d, 0.1);
    cr_assert_eq(ckpt_meta_get_f64(&f, "tiny", &d), 0);
    cr_expect_eq(d, 5e-324);
    cr_expect_null(ckpt_meta_get(&f, "absent"));
    cr_expect_neq(ckpt_meta_get_i64(&f, "absent", &i), 0);
    cr_expect_str_eq(f.err, in_dir("m.safetensors: metadata 'absent' is missing"));
    cr_expect_neq(ckpt_meta_get_i64(&f, "model", &i), 0);
    cr_expect_str_eq(f.err, in_dir("m.safetensors: metadata 'model' is \"PawModel2\", not an integer"));
    ckpt_close(&f);
}

static int write_one(const char *path, float value, const char *gen) {
    float data[256];
    for (int i = 0; i < 256; i++) data[i] = value;
    int64_t s[] = {16, 16};
    ckpt_writer w;
    ckpt_writer_init(&w);
    ckpt_writer_add(&w, "w", CKPT_F32, 2, s, data);
    ckpt_writer_set_meta(&w, "gen", gen);
    int rc = ckpt_write(&w, path);
    ckpt_writer_free(&w);
    return rc;
}

Test(ckpt, atomic_replace) {
    const char *path = in_dir("a.safetensors");
    cr_assert_eq(write_one(path, 1.0f, "1"), 0);
    ckpt_file old;
    cr_assert_eq(ckpt_open(&old, path), 0, "%s", old.err);
    cr_assert_eq(write_one(path, 2.0f, "2"), 0);
    // a reader that had the old file open keeps a whole old file (rename swaps inodes,
    // nothing was written in place) ...
    cr_expect_str_eq(ckpt_meta_get(&old, "gen"), "1");
    cr_expect_eq(((const float *)ckpt_find(&old, "w")->data)[255], 1.0f);
    ckpt_close(&old);
    // ... and a new reader sees the whole new one
    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, path), 0, "%s", f.err);
    cr_expect_str_eq(ckpt_meta_get(&f, "gen"), "2");
    cr_expect_eq(((const float *)ckpt_find(&f, "w")->data)[0], 2.0f);
    ckpt_close(&f);
    // no temporary file is left behind
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    cr_expect_eq(system(cmd), 0, "stray files in %s", dir);
    // a failed write (directory missing) leaves an error naming the file, not a crash
    cr_expect_neq(write_one(in_dir("no/such/dir.safetensors"), 3.0f, "3"), 0);
}

// A child rewrites a 200 MB checkpoint in a loop; the parent SIGKILLs it at a random
// moment. Whatever moment that was, the checkpoint must open and be one complete
// generation: every data byte equal to that generation's fill byte.
Test(ckpt, sigkill_during_write_leaves_previous_checkpoint, .timeout = 600) {
    const char *path = in_dir("big.safetensors");
    const size_t big = 200u * 1000u * 1000u;
    unsigned char *buf = malloc(big);
    cr_assert_not_null(buf);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int gen = 0;
    struct timespec t0, t1;
    memset(buf, 0, big);   // fault the pages in before timing a write
    clock_gettime(CLOCK_MONOTONIC, &t0);
    {   // generation 0, complete, before any kill
        int64_t s[] = {(int64_t)big};
        ckpt_writer w;
        ckpt_writer_init(&w);
        ckpt_writer_add(&w, "big", CKPT_U8, 1, s, buf);
        ckpt_writer_set_meta_i64(&w, "gen", 0);
        cr_assert_eq(ckpt_write(&w, path), 0, "%s", w.err);
        ckpt_writer_free(&w);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    // Kill anywhere in the first ~3 writes, so that some kills land mid-write and
    // some after a newer generation completed, whatever this disk's speed.
    long write_us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    cr_log_info("one 200 MB checkpoint write takes %.2f s", write_us / 1e6);
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            for (int g = gen + 1;; g++) {
                memset(buf, g & 0xff, big);
                int64_t s[] = {(int64_t)big}, s4[] = {4};
                float small[4] = {(float)g, (float)g, (float)g, (float)g};
                ckpt_writer w;
                ckpt_writer_init(&w);
                ckpt_writer_add(&w, "small", CKPT_F32, 1, s4, small);
                ckpt_writer_add(&w, "big", CKPT_U8, 1, s, buf);
                ckpt_writer_set_meta_i64(&w, "gen", g);
                if (ckpt_write(&w, path) != 0) _exit(1);
                ckpt_writer_free(&w);
            }
        }
        usleep((useconds_t)(20000 + rand() % (3 * write_us + 1)));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the writer failed before the kill");
        char tmp[300];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)pid);
        unlink(tmp);   // a killed writer leaves its partial temporary file; never the checkpoint

        ckpt_file f;
        cr_assert_eq(ckpt_open(&f, path), 0, "round %d: %s", round, f.err);
        int64_t g;
        cr_assert_eq(ckpt_meta_get_i64(&f, "gen", &g), 0, "%s", f.err);
        cr_assert_geq(g, gen, "round %d: generation went back from %d to %lld", round, gen, (long long)g);
        const ckpt_tensor *t = ckpt_find(&f, "big");
        cr_assert_not_null(t);
        cr_assert_eq(t->end - t->begin, big);
        const unsigned char *d = t->data;
        for (size_t i = 0; i < big; i++)
            if (d[i] != (unsigned char)(g & 0xff)) cr_assert_fail("round %d: byte %zu of generation %lld is %d", round, i, (long long)g, d[i]);
        if (g > 0) cr_assert_eq(((const float *)ckpt_find(&f, "small")->data)[3], (float)g);
        cr_log_info("round %d: killed during generation %lld+1; generation %lld intact", round, (long long)g, (long long)g);
        gen = (int)g;
        ckpt_close(&f);
    }
    free(buf);
}

// --- malformed files: each gives one line naming the file and the problem ---

static void expect_open_error(const char *path, const char *want_after_path) {
    ckpt_file f;
    cr_assert_neq(ckpt_open(&f, path), 0, "opened a malformed file");
    char want[600];
    snprintf(want, sizeof want, "%s: %s", path, want_after_path);
    cr_expect_str_eq(f.err, want);
    cr_expect_null(strchr(f.err, '\n'), "error is not one line");
    ckpt_close(&f);
}

static const float four[4] = {1, 2, 3, 4};

Test(ckpt, malformed_truncated) {
    const char *p = in_dir("t.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", four, 10, 0);
    expect_open_error(p, "tensor 'w' has data_offsets [0, 16] past the end of the data (10 bytes): the file is truncated or the offsets are wrong");
    write_raw(p, "", NULL, 0, 0);
    expect_open_error(p, "header length is 0: not a safetensors file");
    FILE *f = fopen(p, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_open_error(p, "file too short (3 bytes): a safetensors file starts with an 8-byte header length");
    expect_open_error(in_dir("missing.safetensors"), "cannot open: No such file or directory");
}

Test(ckpt, malformed_header_length) {
    const char *p = in_dir("h.safetensors");
    write_raw(p, "{}", NULL, 0, 1000);
    expect_open_error(p, "header length 1000 is larger than the file (16 bytes): truncated or not a safetensors file");
    write_raw(p, "{}", NULL, 0, 0x3f3f3f3f3f3f3f3fULL);   // text where the length should be
    expect_open_error(p, "header length 4557430888798830399 is larger than the file (16 bytes): truncated or not a safetensors file");
}

Test(ckpt, malformed_json) {
    const char *p = in_dir("j.safetensors");
    write_raw(p, "{\"w\" {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 13: expected ':' after a tensor name, found '{'");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 64: expected '}' to close the header, found the end of the header");
    write_raw(p, "{\"w\":{\"dtype\":\"F99\",\"shape\":[4],\"data_offsets\":[0,16]}}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 22: unknown dtype \"F99\" in tensor 'w'");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 37: expected a non-negative integer in tensor 'w'");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"x\":1}}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 62: unknown field \"x\" in tensor 'w'");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", four, 16, 0);
    expect_open_error(p, "bad header JSON at byte 50: tensor 'w' has no \"shape\"");
    write_raw(p, "{\"__metadata__\":{\"step\":5}}", NULL, 0, 0);
    expect_open_error(p, "bad header JSON at byte 32: metadata 'step' is not a string (safetensors metadata maps strings to strings)");
    write_raw(p, "{} x", NULL, 0, 0);
    expect_open_error(p, "bad header JSON at byte 11: unexpected bytes after the header's closing '}'");
    write_raw(p, "{\"w\xff\":{}}", NULL, 0, 0);
    expect_open_error(p, "bad header JSON at byte 11: not UTF-8");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", (const float[8]){0}, 32, 0);
    expect_open_error(p, "tensor 'w' appears twice in the header");
}

Test(ckpt, malformed_offsets) {
    const char *p = in_dir("o.safetensors");
    float eight[8] = {0};
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", eight, 24, 0);
    expect_open_error(p, "tensors 'a' and 'b' overlap (data_offsets [0, 16] and [8, 24])");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[20,36]}}", eight, 32, 0);
    expect_open_error(p, "tensor 'b' has data_offsets [20, 36] past the end of the data (32 bytes): the file is truncated or the offsets are wrong");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]}}", eight, 32, 0);
    expect_open_error(p, "data bytes [16, 20) belong to no tensor (before 'b')");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight, 32, 0);
    expect_open_error(p, "16 bytes after the last tensor's data: the offsets do not cover the file");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", eight, 16, 0);
    expect_open_error(p, "tensor 'a' is F32 [2, 3], 24 bytes, but its data_offsets [0, 16] span 16");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", eight, 16, 0);
    expect_open_error(p, "tensor 'a' has data_offsets [16, 0] that run backwards");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", eight, 16, 0);
    expect_open_error(p, "tensor 'a' is F32 [4294967296, 4294967296], too many bytes, but its data_offsets [0, 16] span 16");
}

// The layout Hugging Face's writer produces: keys sorted in the header, metadata last,
// data in another order than the header's. Offsets decide, not header order.
Test(ckpt, reads_other_writers_layout) {
    const char *p = in_dir("hf.safetensors");
    unsigned char data[20];
    for (int i = 0; i < 20; i++) data[i] = (unsigned char)i;
    write_raw(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[16,20]}, \"b\" : {\"shape\":[2, 2],\"dtype\":\"F32\","
                 "\"data_offsets\":[0,16]},\n\"__metadata__\":{\"format\":\"pt\",\"caf\\u00e9\":\"\\ud83d\\ude00\"}}", data, 20, 0);
    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, p), 0, "%s", f.err);
    cr_expect_str_eq(f.tensors[0].name, "b");
    cr_expect_eq(((const unsigned char *)ckpt_find(&f, "a")->data)[0], 16);
    cr_expect_str_eq(ckpt_meta_get(&f, "format"), "pt");
    cr_expect_str_eq(ckpt_meta_get(&f, "caf\xc3\xa9"), "\xf0\x9f\x98\x80");
    ckpt_close(&f);
}

static void model_ckpt(const char *path) {
    static float w1[256 * 784], b1[256], w2[10 * 256];
    int64_t s1[] = {256, 784}, sb[] = {256}, s2[] = {10, 256};
    ckpt_writer w;
    ckpt_writer_init(&w);
    ckpt_writer_add(&w, "net.1.weight", CKPT_F32, 2, s1, w1);
    ckpt_writer_add(&w, "net.1.bias", CKPT_F32, 1, sb, b1);
    ckpt_writer_add(&w, "net.3.weight", CKPT_F32, 2, s2, w2);
    cr_assert_eq(ckpt_write(&w, path), 0, "%s", w.err);
    ckpt_writer_free(&w);
}

Test(ckpt, check_against_names_first_mismatch) {
    const char *p = in_dir("ckpt.safetensors");
    model_ckpt(p);
    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, p), 0, "%s", f.err);
    ckpt_tensor same[] = {{.name = "net.1.weight", .dtype = CKPT_F32, .ndim = 2, .shape = {256, 784}},
                          {.name = "net.1.bias", .dtype = CKPT_F32, .ndim = 1, .shape = {256}},
                          {.name = "net.3.weight", .dtype = CKPT_F32, .ndim = 2, .shape = {10, 256}}};
    cr_expect_eq(ckpt_check_against(&f, same, 3), 0, "%s", f.err);

    ckpt_tensor smaller[] = {{.name = "net.1.weight", .dtype = CKPT_F32, .ndim = 2, .shape = {128, 784}},
                             {.name = "net.1.bias", .dtype = CKPT_F32, .ndim = 1, .shape = {128}},
                             {.name = "net.3.weight", .dtype = CKPT_F32, .ndim = 2, .shape = {10, 128}}};
    cr_expect_neq(ckpt_check_against(&f, smaller, 3), 0);
    cr_expect_str_eq(f.err, in_dir("ckpt.safetensors: tensor 'net.1.weight' has shape [256, 784] in the checkpoint but [128, 784] in this model"));

    ckpt_tensor extra[] = {same[0], same[1], {.name = "net.3.bias", .dtype = CKPT_F32, .ndim = 1, .shape = {10}}, same[2]};
    cr_expect_neq(ckpt_check_against(&f, extra, 4), 0);
    cr_expect_str_eq(f.err, in_dir("ckpt.safetensors: tensor 'net.3.bias' of this model is missing from the checkpoint"));

    cr_expect_neq(ckpt_check_against(&f, same, 2), 0);
    cr_expect_str_eq(f.err, in_dir("ckpt.safetensors: tensor 'net.3.weight' in the checkpoint is not in this model"));

    ckpt_tensor half[] = {same[0], {.name = "net.1.bias", .dtype = CKPT_BF16, .ndim = 1, .shape = {256}}, same[2]};
    cr_expect_neq(ckpt_check_against(&f, half, 3), 0);
    cr_expect_str_eq(f.err, in_dir("ckpt.safetensors: tensor 'net.1.bias' has dtype F32 in the checkpoint but BF16 in this model"));

    ckpt_tensor scalar[] = {{.name = "net.1.bias", .dtype = CKPT_F32, .ndim = 0}};
    float x;
    cr_expect_neq(ckpt_read_into(&f, "net.1.bias", CKPT_F32, 0, scalar[0].shape, &x), 0);
    cr_expect_str_eq(f.err, in_dir("ckpt.safetensors: tensor 'net.1.bias' has shape [256] in the checkpoint but [] in this model"));
    ckpt_close(&f);
}

Test(ckpt, writer_rejects_bad_input) {
    ckpt_writer w;
    ckpt_writer_init(&w);
    float x = 0;
    int64_t s1[] = {1}, sneg[] = {-1};
    cr_expect_neq(ckpt_writer_add(&w, "__metadata__", CKPT_F32, 1, s1, &x), 0);
    cr_expect_neq(ckpt_writer_add(&w, "x", CKPT_F32, 1, sneg, &x), 0);
    cr_expect_str_eq(w.err, "ckpt_writer_add: tensor 'x': bad shape");
    cr_expect_eq(ckpt_writer_add(&w, "x", CKPT_F32, 1, s1, &x), 0);
    cr_expect_eq(ckpt_writer_add(&w, "x", CKPT_F32, 1, s1, &x), 0);
    cr_expect_neq(ckpt_write(&w, in_dir("dup.safetensors")), 0);
    cr_expect_str_eq(w.err, in_dir("dup.safetensors: tensor 'x' added twice"));
    ckpt_writer_free(&w);
}

// Other tools read loom's files, loom reads theirs: PyTorch with nothing but the
// standard library and torch.frombuffer (tests/torch/read_safetensors.py).
static const char *python_with_torch(void) {
    if (access("tests/torch/read_safetensors.py", R_OK) != 0) return NULL;   // not run from the repository root
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) return NULL;
    return "/usr/bin/python3 tests/torch/read_safetensors.py";
}

static void run_capture(const char *cmd, char *out, size_t len) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0, "%s failed:\n%s", cmd, out);
}

Test(ckpt, pytorch_reads_loom_checkpoint, .timeout = 120) {
    const char *py = python_with_torch();
    if (!py) cr_skip_test("/usr/bin/python3 has no torch (or not run from the repository root)");
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3C00, 0x4000, 0x4200};   // F16 1, 2, 3
    uint16_t bf[2] = {0x3F80, 0x4040};           // BF16 1, 3
    int64_t steps = 7, s23[] = {2, 3}, s3[] = {3}, s2[] = {2};
    ckpt_writer wr;
    ckpt_writer_init(&wr);
    ckpt_writer_add(&wr, "net.0.weight", CKPT_F32, 2, s23, w);
    ckpt_writer_add(&wr, "net.0.half", CKPT_F16, 1, s3, h);
    ckpt_writer_add(&wr, "net.0.bf", CKPT_BF16, 1, s2, bf);
    ckpt_writer_add(&wr, "steps", CKPT_I64, 0, NULL, &steps);
    ckpt_writer_set_meta(&wr, "model", "Tiny");
    cr_assert_eq(ckpt_write(&wr, in_dir("loom.safetensors")), 0, "%s", wr.err);
    ckpt_writer_free(&wr);
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "%s '%s' 2>&1", py, in_dir("loom.safetensors"));
    run_capture(cmd, out, sizeof out);
    cr_expect_str_eq(out, "meta model=Tiny\n"
                          "net.0.weight F32 [2, 3] 21.0 crc ok\n"
                          "net.0.half F16 [3] 6.0 crc ok\n"
                          "net.0.bf BF16 [2] 4.0 crc ok\n"
                          "steps I64 [] 7.0 crc ok\n");
}

Test(ckpt, loom_reads_pytorch_written_file, .timeout = 120) {
    const char *py = python_with_torch();
    if (!py) cr_skip_test("/usr/bin/python3 has no torch (or not run from the repository root)");
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "%s --write '%s' 2>&1", py, in_dir("torch.safetensors"));
    run_capture(cmd, out, sizeof out);
    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, in_dir("torch.safetensors")), 0, "%s", f.err);
    cr_expect_str_eq(ckpt_meta_get(&f, "note"), "caf\xc3\xa9 \"quoted\"");
    ckpt_tensor want[] = {{.name = "z.bias", .dtype = CKPT_F32, .ndim = 1, .shape = {3}},
                          {.name = "a.weight", .dtype = CKPT_F16, .ndim = 2, .shape = {2, 3}},
                          {.name = "m.steps", .dtype = CKPT_I64, .ndim = 0},
                          {.name = "b.mask", .dtype = CKPT_U8, .ndim = 1, .shape = {3}}};
    cr_assert_eq(ckpt_check_against(&f, want, 4), 0, "%s", f.err);
    int64_t steps;
    float bias[3];
    cr_assert_eq(ckpt_read_into(&f, "m.steps", CKPT_I64, 0, want[2].shape, &steps), 0, "%s", f.err);
    cr_expect_eq(steps, 7);
    cr_assert_eq(ckpt_read_into(&f, "z.bias", CKPT_F32, 1, want[0].shape, bias), 0, "%s", f.err);
    cr_expect(bias[0] == 0 && bias[1] == 1 && bias[2] == 2);
    ckpt_close(&f);
}

// ---------------------------------------------------------------------------------
// issue 11: checksums, FIFOs, the run's plan and range checks, the run directory

// A flipped data byte is caught (safetensors has no checksum: 10 of 10 went unnoticed),
// naming the file and the tensor; a file without checksums loads.
Test(ckpt, checksum_catches_a_flipped_data_byte) {
    float a[64], b[3] = {1, 2, 3};
    for (int i = 0; i < 64; i++) a[i] = (float)i;
    int64_t s64[] = {8, 8}, s3[] = {3};
    ckpt_writer w;
    ckpt_writer_init(&w);
    ckpt_writer_add(&w, "net.0.weight", CKPT_F32, 2, s64, a);
    ckpt_writer_add(&w, "net.0.bias", CKPT_F32, 1, s3, b);
    ckpt_writer_set_meta(&w, "model", "M");
    cr_assert_eq(ckpt_write(&w, in_dir("c.safetensors")), 0, "%s", w.err);
    ckpt_writer_free(&w);
    ckpt_file f;
    cr_assert_eq(ckpt_open(&f, in_dir("c.safetensors")), 0, "%s", f.err);
    cr_expect_eq(f.nmeta, 1);   // the checksums are not the caller's metadata
    cr_expect_null(ckpt_meta_get(&f, "crc32:net.0.bias"));
    ckpt_close(&f);
    // flip one bit of the first tensor's data (the last 12 bytes are the bias)
    struct stat st;
    cr_assert_eq(stat(in_dir("c.safetensors"), &st), 0);
    int fd = open(in_dir("c.safetensors"), O_RDWR);
    unsigned char byte;
    off_t at = st.st_size - 12 - 100;
    cr_assert_eq(pread(fd, &byte, 1, at), 1);
    byte ^= 0x10;
    cr_assert_eq(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    cr_assert_neq(ckpt_open(&f, in_dir("c.safetensors")), 0);
    cr_expect(strstr(f.err, in_dir("c.safetensors: tensor 'net.0.weight': its data do not match their checksum")) == f.err, "%s", f.err);
    ckpt_close(&f);
    // without checksums (as PyTorch writes it) the same bytes load
    const char *hdr = "{\"__metadata__\":{\"model\":\"M\"},\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    write_raw(in_dir("plain.safetensors"), hdr, b, 12, 0);
    cr_assert_eq(ckpt_open(&f, in_dir("plain.safetensors")), 0, "%s", f.err);
    ckpt_close(&f);
    // a checksum of a tensor the file lacks, or not 8 hex digits, is refused
    hdr = "{\"__metadata__\":{\"crc32:y\":\"00000000\"},\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    write_raw(in_dir("bad.safetensors"), hdr, b, 12, 0);
    cr_assert_neq(ckpt_open(&f, in_dir("bad.safetensors")), 0);
    cr_expect_str_eq(f.err, in_dir("bad.safetensors: metadata 'crc32:y' is the checksum of a tensor the file does not have"));
    ckpt_close(&f);
}

// A FIFO given as --resume is refused at once (open() on one with no writer waits forever).
Test(ckpt, fifo_is_refused_not_waited_on, .timeout = 10) {
    cr_assert_eq(mkfifo(in_dir("fifo.safetensors"), 0600), 0);
    ckpt_file f;
    cr_assert_neq(ckpt_open(&f, in_dir("fifo.safetensors")), 0);
    cr_expect_str_eq(f.err, in_dir("fifo.safetensors: not a regular file"));
    ckpt_close(&f);
}

static const ckpt_run RUN = {.step = 30, .epoch = 1, .batch = 0, .loader_epoch = 1, .loader_batch = 0, .seed = 7,
                             .epochs = 2, .max_steps = 0, .total_steps = 60, .batch_size = 32, .train_size = 960};

// A run's plan with one key replaced by `value` (NULL: as saved).
static void write_run(const char *path, const char *key, const char *value) {
    float x = 1;
    ckpt_writer w;
    ckpt_writer_init(&w);
    ckpt_writer_add(&w, "x", CKPT_F32, 0, NULL, &x);
    ckpt_writer_set_meta(&w, "spec_hash", "00000000000000ab");
    cr_assert_eq(ckpt_run_save(&w, &RUN), 0);
    if (key) ckpt_writer_set_meta(&w, key, value);
    cr_assert_eq(ckpt_write(&w, path), 0, "%s", w.err);
    ckpt_writer_free(&w);
}

static const char *load_run_error(const char *key, const char *value) {
    static char err[CKPT_ERR_LEN];
    write_run(in_dir("r.safetensors"), key, value);
    ckpt_file f;
    ckpt_run r;
    cr_assert_eq(ckpt_open(&f, in_dir("r.safetensors")), 0, "%s", f.err);
    int rc = ckpt_run_load(&f, "00000000000000ab", &r);
    snprintf(err, sizeof err, "%s", rc ? f.err : "");
    ckpt_close(&f);
    return err;
}

// Out-of-range metadata is refused naming the file (step = INT64_MAX trained
// "-9223372036854774089 steps"), as is a checkpoint of another version of the spec.
Test(ckpt, run_metadata_is_range_checked) {
    cr_expect_str_eq(load_run_error(NULL, NULL), "");
    cr_expect_str_eq(load_run_error("step", "9223372036854775807"),
                     in_dir("r.safetensors: metadata 'step' is 9223372036854775807, out of range [0, 4503599627370496]"));
    cr_expect_str_eq(load_run_error("step", "-1"), in_dir("r.safetensors: metadata 'step' is -1, out of range [0, 4503599627370496]"));
    cr_expect_str_eq(load_run_error("epoch", "-3"), in_dir("r.safetensors: metadata 'epoch' is -3, out of range [0, 2147483647]"));
    cr_expect_str_eq(load_run_error("seed", "-5"), in_dir("r.safetensors: metadata 'seed' is -5, out of range [0, 9223372036854775807]"));
    cr_expect_str_eq(load_run_error("batch_size", "0"), in_dir("r.safetensors: metadata 'batch_size' is 0, out of range [1, 4503599627370496]"));
    cr_expect_str_eq(load_run_error("batch", "961"), in_dir("r.safetensors: metadata 'batch' is 961, out of range [0, 960]"));
    cr_expect_str_eq(load_run_error("epochs", "99999999999"), in_dir("r.safetensors: metadata 'epochs' is 99999999999, out of range [0, 2147483647]"));
    cr_expect_str_eq(load_run_error("total_steps", "x"), in_dir("r.safetensors: metadata 'total_steps' is \"x\", not an integer"));
    cr_expect_str_eq(load_run_error("spec_hash", "1111111111111111"),
                     in_dir("r.safetensors: a checkpoint of another version of the spec (spec hash 1111111111111111; this program's is "
                            "00000000000000ab): resume it with the program generated from that spec"));
    // the position against the plan (30 batches an epoch, 2 epochs)
    char err[CKPT_ERR_LEN], note[CKPT_ERR_LEN];
    ckpt_run saved = RUN, now = RUN;
    cr_expect_eq(ckpt_run_check("r", &saved, &now, 30, 30, 0, 1, err, note), 0, "%s", err);
    saved.step = 61;
    saved.epochs = 0; saved.max_steps = 60;
    cr_expect_neq(ckpt_run_check("r", &saved, &now, 30, 30, 0, 1, err, note), 0);
    cr_expect_str_eq(err, "r: metadata 'step' is 61, more than the run's 60 steps");
    saved = RUN; saved.epoch = 3;
    cr_expect_neq(ckpt_run_check("r", &saved, &now, 30, 30, 0, 1, err, note), 0);
    cr_expect_str_eq(err, "r: metadata 'epoch' is 3, past the run's 2 epochs");
    saved = RUN; saved.loader_batch = 31;
    cr_expect_neq(ckpt_run_check("r", &saved, &now, 30, 30, 0, 1, err, note), 0);
    cr_expect_str_eq(err, "r: metadata 'batch' (0) or 'loader_batch' (31) is past the 30 batches of an epoch");
}

// --resume continues the checkpoint's run: its seed, limits and data; a flag that
// contradicts them is refused, or (where nothing depends on it) noted.
Test(ckpt, resume_flags_against_the_plan) {
    char err[CKPT_ERR_LEN], note[CKPT_ERR_LEN];
    ckpt_run now = {.epochs = 5, .max_steps = 0, .seed = 1};
    // nothing given: the checkpoint's seed and limits
    cr_expect_eq(ckpt_run_resume("r", &RUN, &now, 0, err), 0);
    cr_expect_eq(now.seed, 7);
    cr_expect_eq(now.epochs, 2);
    // another --seed
    now.seed = 3;
    cr_expect_eq(ckpt_run_resume("r", &RUN, &now, CKPT_GIVEN_SEED, err), -1);
    cr_expect_str_eq(err, "r: --seed 3 contradicts the checkpoint's seed 7 (its shuffle and dropout continue from it): resume without --seed");
    // the same --seed, another --epochs
    now.seed = 7; now.epochs = 4;
    int over = ckpt_run_resume("r", &RUN, &now, CKPT_GIVEN_SEED | CKPT_GIVEN_EPOCHS, err);
    cr_expect_eq(over, CKPT_GIVEN_EPOCHS);
    now.batch_size = 32; now.train_size = 960; now.total_steps = 120;
    cr_expect_eq(ckpt_run_check("r", &RUN, &now, 30, 30, (unsigned)over, 1, err, note), 0, "%s", err);   // the schedule spans the run
    cr_expect_str_eq(note, "note: --epochs 4 overrides the checkpoint's 2: the learning-rate schedule now spans 120 steps, "
                           "not the 60 it was planned for (resume without --epochs to continue that run)");
    cr_expect_eq(ckpt_run_check("r", &RUN, &now, 30, 30, (unsigned)over, 0, err, note), 0, "%s", err);   // a constant one
    cr_expect_str_eq(note, "note: --epochs 4 overrides the checkpoint's 2 (this run stops at step 120)");
    // another data or batch size
    now.train_size = 900;
    cr_expect_eq(ckpt_run_check("r", &RUN, &now, 30, 30, 0, 1, err, note), -1);
    cr_expect_str_eq(err, "r: the checkpoint's run trained on 960 samples, this data has 900 (the continuation would shuffle other samples)");
    now.train_size = 960; now.batch_size = 16;
    cr_expect_eq(ckpt_run_check("r", &RUN, &now, 30, 30, 0, 1, err, note), -1);
    cr_expect_str_eq(err, "r: the checkpoint's run used batches of 32, this program 16");
}

// One run per directory: a second lock is refused; temporaries of dead writers go,
// those of live ones stay (start-up cleaning deleted a live run's temporary).
Test(ckpt, run_directory_lock_and_clean) {
    char err[CKPT_ERR_LEN];
    int fd = ckpt_dir_lock(dir, err);
    cr_assert_geq(fd, 0, "%s", err);
    cr_expect_eq(ckpt_dir_lock(dir, err), -1);
    char want[CKPT_ERR_LEN];
    snprintf(want, sizeof want, "%s: another training run is using this directory (--out): wait for it to finish or choose another", dir);
    cr_expect_str_eq(err, want);
    close(fd);
    fd = ckpt_dir_lock(dir, err);
    cr_expect_geq(fd, 0, "%s", err);   // free again once the holder closes (or exits)
    close(fd);
    // a dead writer: a child that exited
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    char dead[64], live[64];
    snprintf(dead, sizeof dead, "last.safetensors.tmp.%ld", (long)child);
    snprintf(live, sizeof live, "last.safetensors.tmp.%ld", (long)getpid());
    write_raw(in_dir(dead), "{}", NULL, 0, 0);
    write_raw(in_dir(live), "{}", NULL, 0, 0);
    cr_expect_eq(ckpt_dir_clean(dir), 1);
    cr_expect_neq(access(in_dir(dead), F_OK), 0);
    cr_expect_eq(access(in_dir(live), F_OK), 0);
}

// ckpt_convert: round to nearest even into F16/BF16 (ties, subnormals, overflow, NaN),
// exact decoding back, integer widening; no float <-> integer.
Test(ckpt, convert_rounds_as_torch) {
    float in[] = {1.0f, 1.00390625f /* BF16 tie: even (down) */, 1.01171875f /* tie: even (up) */, 65504.0f,
                  65519.0f, 65520.0f /* F16 tie at the top: infinity */, 0x1p-24f, 0x1p-25f /* tie: 0 */,
                  0x1.8p-25f, 0x1p-14f, -2.0f, NAN};
    enum { N = sizeof in / sizeof in[0] };
    uint16_t bf[N], h[N];
    cr_assert_eq(ckpt_convert(CKPT_BF16, bf, CKPT_F32, in, N), 0);
    cr_assert_eq(ckpt_convert(CKPT_F16, h, CKPT_F32, in, N), 0);
    cr_expect_eq(bf[0], 0x3F80); cr_expect_eq(bf[1], 0x3F80); cr_expect_eq(bf[2], 0x3F82);
    cr_expect_eq(h[3], 0x7BFF); cr_expect_eq(h[4], 0x7BFF); cr_expect_eq(h[5], 0x7C00);
    cr_expect_eq(h[6], 0x0001); cr_expect_eq(h[7], 0x0000); cr_expect_eq(h[8], 0x0001);
    cr_expect_eq(h[9], 0x0400); cr_expect_eq(h[10], 0xC000); cr_expect_eq(h[11] & 0x7E00, 0x7E00);
    float back[N];
    cr_assert_eq(ckpt_convert(CKPT_F32, back, CKPT_F16, h, N), 0);
    cr_expect_eq(back[6], 0x1p-24f); cr_expect_eq(back[9], 0x1p-14f); cr_expect_eq(back[10], -2.0f);
    cr_expect(isinf(back[5]) && back[5] > 0); cr_expect(isnan(back[11]));
    double d[N];
    cr_assert_eq(ckpt_convert(CKPT_F64, d, CKPT_BF16, bf, N), 0);
    cr_expect_eq(d[2], 1.015625);
    int32_t i32[2] = {-5, 7};
    int64_t i64[2];
    cr_assert_eq(ckpt_convert(CKPT_I64, i64, CKPT_I32, i32, 2), 0);
    cr_expect(i64[0] == -5 && i64[1] == 7);
    cr_expect_eq(ckpt_convert(CKPT_F32, back, CKPT_I32, i32, 2), -1);
    cr_expect_eq(ckpt_convert(CKPT_I64, i64, CKPT_F32, in, 2), -1);
}

// ckpt_load_raw: strict names the first missing/unexpected tensor; not strict lists them
// and leaves a missing slot as it was; a shape mismatch fails either way.
Test(ckpt, load_raw_strict_and_not) {
    double w[4] = {1, 2, 3, 4};
    int64_t s2[2] = {2, 2}, s4[1] = {4};
    ckpt_writer wr;
    ckpt_writer_init(&wr);
    cr_assert_eq(ckpt_writer_add(&wr, "fc.weight", CKPT_F64, 2, s2, w), 0);
    cr_assert_eq(ckpt_writer_add(&wr, "extra", CKPT_F64, 1, s4, w), 0);
    cr_assert_eq(ckpt_write(&wr, in_dir("raw.safetensors")), 0);
    ckpt_writer_free(&wr);
    float fw[4] = {0}, fb[2] = {9, 9};
    int64_t sb[1] = {2};
    ckpt_slot slots[] = { {"fc.weight", CKPT_F32, 2, s2, fw}, {"fc.bias", CKPT_F32, 1, sb, fb} };
    char err[CKPT_ERR_LEN], note[512];
    cr_expect_eq(ckpt_load_raw(in_dir("raw.safetensors"), slots, 2, 1, err, note, sizeof note), -1);
    cr_expect(strstr(err, "raw.safetensors: tensor 'fc.bias' of this model is missing") != NULL, "%s", err);
    cr_assert_eq(ckpt_load_raw(in_dir("raw.safetensors"), slots, 2, 0, err, note, sizeof note), 0, "%s", err);
    cr_expect(strstr(note, "missing_keys=['fc.bias'], unexpected_keys=['extra']") != NULL, "%s", note);
    cr_expect(fw[0] == 1 && fw[3] == 4 && fb[0] == 9 && fb[1] == 9);
    ckpt_slot one[] = { {"fc.weight", CKPT_F32, 2, s2, fw}, {"extra", CKPT_F32, 1, sb, fb} };
    cr_expect_eq(ckpt_load_raw(in_dir("raw.safetensors"), one, 2, 0, err, note, sizeof note), -1);
    cr_expect(strstr(err, "tensor 'extra' has shape [4] in the file but [2] in this model") != NULL, "%s", err);
}
