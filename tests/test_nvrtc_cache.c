// Criterion tests of runtime/nvrtc_cache: NVRTC compiles a fused elementwise kernel to
// cubin / PTX, the on-disk cache (hits without NVRTC, misses on any change, rejects and
// rewrites damaged files, is shared between processes), errors carry NVRTC's log, and
// ptxas finds no register spills. Every test that needs NVRTC skips itself (with the
// reason) on a machine without it; no test needs a GPU.
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/nvrtc_cache.h"

// Each test runs in its own process (and two at a time): each gets its own directory.
static char dir[64];
static char cache[128];
static void make_dir(void) {
    strcpy(dir, "/tmp/loom_test_nvrtc_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cache, sizeof cache, "%s/kernels", dir);
}
static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(nvrtc, .init = make_dir, .fini = remove_dir);

// y = gelu(x + b[column]): bias add and erf-GELU fused, grid-stride over n elements of
// an [n / c, c] tensor.
static const char *bias_gelu_src =
    "extern \"C\" __global__ void bias_gelu(float *y, const float *x, const float *b, int n, int c) {\n"
    "    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {\n"
    "        float v = x[i] + b[i % c];\n"
    "        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));\n"
    "    }\n"
    "}\n";

static void need_nvrtc(void) {
    char err[512];
    int major, minor;
    if (jit_nvrtc_version(&major, &minor, err, sizeof err) != 0) cr_skip_test("%s", err);
}

static char err[1024];

static jit_image compile_ok(const char *src, int major, int minor) {
    jit_image img;
    int rc = jit_compile("bias_gelu", src, major, minor, cache, &img, err, sizeof err);
    cr_assert_eq(rc, 0, "jit_compile: %s", err);
    return img;
}

static int file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int)st.st_size : -1;
}

static int count_files(const char *d) {
    DIR *h = opendir(d);
    if (!h) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(h)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(h);
    return n;
}

static void expect_cache_name(const jit_image *img, const char *ext) {
    char want[256];
    snprintf(want, sizeof want, "%s/%016llx.%s", cache, (unsigned long long)img->key, ext);
    cr_expect_str_eq(img->cache_path, want);
    cr_expect_gt(file_size(want), 40 + (int)img->size - 1, "%s: missing or short", want);
    cr_expect_eq(file_size(want), 40 + (int)img->size);
}

Test(nvrtc, compiles_cubins_for_sm80_and_sm90) {
    need_nvrtc();
    long calls = jit_nvrtc_calls();
    jit_image a = compile_ok(bias_gelu_src, 8, 0), b = compile_ok(bias_gelu_src, 9, 0);
    cr_expect_eq(jit_nvrtc_calls(), calls + 2);
    const jit_image *imgs[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        const jit_image *m = imgs[i];
        cr_expect_eq(m->kind, JIT_CUBIN);
        cr_expect_eq(m->from_cache, 0);
        cr_expect_str_empty(m->note);
        cr_assert_gt(m->size, 64);
        cr_expect_eq(memcmp(m->data, "\177ELF", 4), 0, "not an ELF file");
        cr_expect_eq(m->data[4], 2, "not a 64-bit ELF");
        cr_expect_eq(m->data[18] | m->data[19] << 8, 190, "e_machine is not EM_CUDA");
        expect_cache_name(m, "cubin");
    }
    cr_expect_eq(a.sm_major, 8); cr_expect_eq(a.sm_minor, 0);
    cr_expect_eq(b.sm_major, 9); cr_expect_eq(b.sm_minor, 0);
    cr_expect_neq(a.key, b.key);
    cr_expect_eq(count_files(cache), 2);
    jit_image_free(&a);
    jit_image_free(&b);
}

Test(nvrtc, ptx_for_sm80) {
    need_nvrtc();
    jit_image p;
    cr_assert_eq(jit_compile_ptx("bias_gelu", bias_gelu_src, 8, 0, cache, &p, err, sizeof err), 0, "%s", err);
    cr_expect_eq(p.kind, JIT_PTX);
    cr_assert_gt(p.size, 1);
    cr_expect_eq(p.data[p.size - 1], 0, "PTX without its NUL");
    const char *s = (const char *)p.data;
    cr_expect_not_null(strstr(s, ".version "));
    cr_expect_not_null(strstr(s, ".target sm_80"));
    cr_expect_not_null(strstr(s, ".entry bias_gelu("));
    expect_cache_name(&p, "ptx");
    // and the cubin for the same kernel is another entry
    jit_image c = compile_ok(bias_gelu_src, 8, 0);
    cr_expect_neq(c.key, p.key);
    cr_expect_eq(count_files(cache), 2);
    jit_image_free(&p);
    jit_image_free(&c);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

Test(nvrtc, second_compile_is_a_cache_hit_without_nvrtc) {
    need_nvrtc();
    double t0 = now_s();
    jit_image a = compile_ok(bias_gelu_src, 8, 0);
    double t1 = now_s();
    jit_stats s0 = jit_get_stats();
    jit_image b = compile_ok(bias_gelu_src, 8, 0);
    double t2 = now_s();
    jit_stats s1 = jit_get_stats();
    cr_expect_eq(b.from_cache, 1);
    cr_expect_eq(s1.compiles, s0.compiles, "NVRTC was called on a cache hit");
    cr_expect_eq(s1.hits, s0.hits + 1);
    cr_expect_eq(b.key, a.key);
    cr_expect_str_eq(b.cache_path, a.cache_path);
    cr_assert_eq(b.size, a.size);
    cr_expect_eq(memcmp(a.data, b.data, a.size), 0);
    cr_log_info("bias_gelu sm_80: compile %.1f ms, cache hit %.3f ms", 1e3 * (t1 - t0), 1e3 * (t2 - t1));
    jit_image_free(&a);
    jit_image_free(&b);
}

Test(nvrtc, one_character_changed_is_a_miss) {
    need_nvrtc();
    jit_image a = compile_ok(bias_gelu_src, 8, 0);
    char *src = strdup(bias_gelu_src);
    char *k = strstr(src, "0.5f");
    cr_assert_not_null(k);
    k[2] = '6';   // 0.5f -> 0.6f
    long calls = jit_nvrtc_calls();
    jit_image b = compile_ok(src, 8, 0);
    cr_expect_eq(b.from_cache, 0);
    cr_expect_eq(jit_nvrtc_calls(), calls + 1);
    cr_expect_neq(a.key, b.key);
    cr_expect_eq(count_files(cache), 2);
    // whitespace counts too: the key is the text, not its meaning
    src[strlen(src) - 1] = ' ';
    jit_image c = compile_ok(src, 8, 0);
    cr_expect_eq(c.from_cache, 0);
    cr_expect_neq(c.key, b.key);
    free(src);
    jit_image_free(&a);
    jit_image_free(&b);
    jit_image_free(&c);
}

// The kernels of a generated program #include "loom_prelude.h", a header NVRTC gets as
// a string: the key covers its text (a changed prelude is a miss, never a stale cubin)
// and its name; the same header again is a hit.
static const char *prelude_src =
    "#include \"loom_prelude.h\"\n"
    "extern \"C\" __global__ void scaled(float *y, const float *x, int n) {\n"
    "    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = scale(x[i]);\n"
    "}\n";

static jit_image compile_with(jit_kind want, const char *name, const char *text, long *calls) {
    jit_header h = { name, text };
    jit_image img;
    long before = jit_nvrtc_calls();
    int rc = jit_compile_with_headers(want, "scaled", prelude_src, &h, 1, 8, 0, cache, &img, err, sizeof err);
    cr_assert_eq(rc, 0, "jit_compile_with_headers: %s", err);
    *calls = jit_nvrtc_calls() - before;
    return img;
}

Test(nvrtc, header_text_is_in_the_key) {
    need_nvrtc();
    const char *five = "static __device__ float scale(float v) { return 5.0f * v; }\n";
    const char *three = "static __device__ float scale(float v) { return 3.0f * v; }\n";
    long calls;
    jit_image a = compile_with(JIT_CUBIN, "loom_prelude.h", five, &calls);
    cr_expect_eq(calls, 1);
    cr_expect_eq(a.from_cache, 0);
    jit_image b = compile_with(JIT_CUBIN, "loom_prelude.h", five, &calls);
    cr_expect_eq(calls, 0, "the same source and header: NVRTC called again");
    cr_expect_eq(b.from_cache, 1);
    cr_expect_eq(b.key, a.key);
    jit_image c = compile_with(JIT_CUBIN, "loom_prelude.h", three, &calls);
    cr_expect_eq(calls, 1, "a changed header read a cached cubin");
    cr_expect_eq(c.from_cache, 0);
    cr_expect_neq(c.key, a.key);
    cr_expect(c.size != a.size || memcmp(c.data, a.data, a.size) != 0, "5x and 3x compiled to the same cubin");
    // the header's text appended to the source is another program, with another key
    size_t n = strlen(five) + strlen(prelude_src) + 1;
    char *joined = malloc(n);
    snprintf(joined, n, "%s%s", five, strstr(prelude_src, "extern"));
    jit_image d;
    cr_assert_eq(jit_compile("scaled", joined, 8, 0, cache, &d, err, sizeof err), 0, "%s", err);
    cr_expect_neq(d.key, a.key);
    // PTX: the header is in its key too
    jit_image e = compile_with(JIT_PTX, "loom_prelude.h", five, &calls);
    jit_image f = compile_with(JIT_PTX, "loom_prelude.h", three, &calls);
    cr_expect_neq(e.key, f.key);
    cr_expect_not_null(strstr((const char *)e.data, "0f40A00000"), "no 5.0f in the PTX of the first header");   // 5.0f
    cr_expect_not_null(strstr((const char *)f.data, "0f40400000"), "no 3.0f in the PTX of the second header");  // 3.0f
    free(joined);
    jit_image *all[] = { &a, &b, &c, &d, &e, &f };
    for (int i = 0; i < 6; i++) jit_image_free(all[i]);
}

Test(nvrtc, header_name_is_in_the_key_and_a_missing_header_fails) {
    need_nvrtc();
    const char *five = "static __device__ float scale(float v) { return 5.0f * v; }\n";
    jit_header h = { "loom_prelude.h", five };
    jit_image a, b;
    cr_assert_eq(jit_compile_with_headers(JIT_CUBIN, "scaled", prelude_src, &h, 1, 8, 0, cache, &a, err, sizeof err), 0, "%s", err);
    // the same text under two names (the source includes one): another key, and it compiles
    jit_header two_names[] = { { "other.h", five }, { "loom_prelude.h", five } };
    cr_assert_eq(jit_compile_with_headers(JIT_CUBIN, "scaled", prelude_src, two_names, 2, 8, 0, cache, &b, err, sizeof err), 0, "%s", err);
    cr_expect_neq(a.key, b.key);
    jit_image_free(&a);
    jit_image_free(&b);
    // under another name only, the include fails with NVRTC's log, naming the kernel
    jit_header wrong = { "prelude.h", five };
    cr_expect_eq(jit_compile_with_headers(JIT_CUBIN, "scaled", prelude_src, &wrong, 1, 8, 0, cache, &a, err, sizeof err), -1);
    cr_expect_eq(strncmp(err, "scaled: NVRTC ", 14), 0, "err: %s", err);
    cr_expect_not_null(strstr(err, "loom_prelude.h"), "err: %s", err);
    jit_header noname = { NULL, five };
    cr_expect_eq(jit_compile_with_headers(JIT_CUBIN, "scaled", prelude_src, &noname, 1, 8, 0, cache, &a, err, sizeof err), -1);
    cr_expect_str_eq(err, "scaled: header 0 has no name or no text");
}

// Damages the cache file of bias_gelu/sm_80 with `damage`, then checks that the next
// compile says so in `note` (containing `why`), calls NVRTC, rewrites a good file,
// and that the compile after that is a hit again.
static void check_damage(void (*damage)(const char *path, size_t size), const char *why) {
    need_nvrtc();
    jit_image a = compile_ok(bias_gelu_src, 8, 0);
    damage(a.cache_path, a.size);
    jit_stats s0 = jit_get_stats();
    jit_image b = compile_ok(bias_gelu_src, 8, 0);
    jit_stats s1 = jit_get_stats();
    cr_expect_eq(b.from_cache, 0, "a damaged cache file was loaded");
    cr_expect_eq(s1.compiles, s0.compiles + 1);
    cr_expect_eq(s1.rejected, s0.rejected + 1);
    cr_expect_not_null(strstr(b.note, why), "note: '%s', expected '%s'", b.note, why);
    cr_expect_not_null(strstr(b.note, a.cache_path), "note does not name the file: '%s'", b.note);
    cr_assert_eq(b.size, a.size);
    cr_expect_eq(memcmp(a.data, b.data, a.size), 0);
    cr_expect_eq(file_size(a.cache_path), 40 + (int)a.size, "the cache file was not rewritten");
    jit_image c = compile_ok(bias_gelu_src, 8, 0);
    cr_expect_eq(c.from_cache, 1);
    cr_expect_eq(jit_nvrtc_calls(), s1.compiles);
    cr_expect_eq(count_files(cache), 1, "temporary files left behind");
    jit_image_free(&a);
    jit_image_free(&b);
    jit_image_free(&c);
}

static void truncate_half(const char *path, size_t size) { cr_assert_eq(truncate(path, (off_t)(40 + size / 2)), 0); }
static void truncate_header(const char *path, size_t size) { (void)size; cr_assert_eq(truncate(path, 20), 0); }
static void flip_a_byte(const char *path, size_t size) {
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char c;
    off_t at = (off_t)(40 + size / 3);
    cr_assert_eq(pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    cr_assert_eq(pwrite(fd, &c, 1, at), 1);
    close(fd);
}
static void foreign(const char *path, size_t size) {
    (void)size;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 100; i++) fputs("not a kernel ", f);
    fclose(f);
}
static void zero_length(const char *path, size_t size) { (void)size; cr_assert_eq(truncate(path, 0), 0); }

Test(nvrtc, truncated_cache_file_is_recompiled) { check_damage(truncate_half, "truncated"); }
Test(nvrtc, truncated_header_is_recompiled) { check_damage(truncate_header, "shorter than the 40-byte header"); }
Test(nvrtc, empty_cache_file_is_recompiled) { check_damage(zero_length, "truncated"); }
Test(nvrtc, corrupted_cache_file_is_recompiled) { check_damage(flip_a_byte, "checksum"); }
Test(nvrtc, foreign_cache_file_is_recompiled) { check_damage(foreign, "not a loom kernel cache file"); }

Test(nvrtc, cache_file_of_another_key_is_rejected) {
    need_nvrtc();
    jit_image a = compile_ok(bias_gelu_src, 8, 0), b = compile_ok(bias_gelu_src, 9, 0);
    cr_assert_eq(rename(b.cache_path, a.cache_path), 0);   // sm_90's file under sm_80's name
    jit_image c = compile_ok(bias_gelu_src, 8, 0);
    cr_expect_eq(c.from_cache, 0);
    cr_expect_not_null(strstr(c.note, "expected"), "note: %s", c.note);
    cr_assert_eq(c.size, a.size);
    cr_expect_eq(memcmp(c.data, a.data, a.size), 0);
    jit_image_free(&a);
    jit_image_free(&b);
    jit_image_free(&c);
}

Test(nvrtc, syntax_error_names_the_kernel_with_nvrtc_log) {
    need_nvrtc();
    char *src = strdup(bias_gelu_src);
    char *semi = strstr(src, "b[i % c];");
    cr_assert_not_null(semi);
    semi[8] = ' ';   // drop the ';'
    jit_image img;
    memset(&img, 0xab, sizeof img);
    long calls = jit_nvrtc_calls();
    int rc = jit_compile("bias_gelu", src, 8, 0, cache, &img, err, sizeof err);
    cr_expect_eq(rc, -1);
    cr_expect_eq(jit_nvrtc_calls(), calls + 1);
    cr_expect_null(img.data);
    cr_expect_eq(strncmp(err, "bias_gelu: NVRTC ", 17), 0, "err: %s", err);
    cr_expect_not_null(strstr(err, "for sm_80"), "err: %s", err);
    cr_expect_not_null(strstr(err, "bias_gelu.cu("), "no NVRTC log line in: %s", err);
    cr_expect_not_null(strstr(err, "error"), "err: %s", err);
    cr_expect_null(strchr(err, '\n'), "err is not one line: %s", err);
    cr_expect_leq(count_files(cache), 0, "a failed compile left files in the cache");
    fprintf(stderr, "# %s\n", err);
    free(src);
}

// A child process fills the cache; the parent, which has never compiled anything, hits.
// Then a second child reads what the parent's earlier compile of another kernel wrote.
Test(nvrtc, another_process_hits_the_same_cache) {
    need_nvrtc();
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        jit_image img;
        char e[512];
        long before = jit_nvrtc_calls();
        if (jit_compile("bias_gelu", bias_gelu_src, 9, 0, cache, &img, e, sizeof e) != 0) _exit(2);
        _exit(img.from_cache == 0 && jit_nvrtc_calls() == before + 1 ? 0 : 3);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
    cr_assert_eq(jit_nvrtc_calls(), 0);
    jit_image a = compile_ok(bias_gelu_src, 9, 0);
    cr_expect_eq(a.from_cache, 1);
    cr_expect_eq(jit_nvrtc_calls(), 0, "the parent called NVRTC although the child had cached the kernel");
    cr_expect_eq(memcmp(a.data, "\177ELF", 4), 0);

    jit_image b = compile_ok(bias_gelu_src, 8, 0);   // parent writes sm_80
    cr_expect_eq(b.from_cache, 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        jit_image img;
        char e[512];
        long before = jit_nvrtc_calls();
        if (jit_compile("bias_gelu", bias_gelu_src, 8, 0, cache, &img, e, sizeof e) != 0) _exit(2);
        _exit(img.from_cache == 1 && jit_nvrtc_calls() == before && img.size == b.size ? 0 : 3);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "second child: status %d", status);
    jit_image_free(&a);
    jit_image_free(&b);
}

// Four processes compile the same kernel into an empty cache at once: each gets its
// image, and what stays is one whole file and no temporary files.
Test(nvrtc, concurrent_writers_leave_one_good_file) {
    need_nvrtc();
    enum { N = 4 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            jit_image img;
            char e[512];
            if (jit_compile("bias_gelu", bias_gelu_src, 8, 0, cache, &img, e, sizeof e) != 0) _exit(2);
            _exit(img.note[0] ? 3 : 0);
        }
    }
    for (int i = 0; i < N; i++) {
        int status;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d: status %d", i, status);
    }
    cr_expect_eq(count_files(cache), 1);
    jit_image a = compile_ok(bias_gelu_src, 8, 0);
    cr_expect_eq(a.from_cache, 1, "note: %s", a.note);
    cr_expect_str_empty(a.note);
    jit_image_free(&a);
}

Test(nvrtc, empty_cache_dir_means_no_cache) {
    need_nvrtc();
    jit_image a, b;
    cr_assert_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 0, "", &a, err, sizeof err), 0, "%s", err);
    cr_assert_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 0, "", &b, err, sizeof err), 0, "%s", err);
    cr_expect_eq(b.from_cache, 0);
    cr_expect_str_empty(a.cache_path);
    cr_expect_eq(jit_nvrtc_calls(), 2);
    cr_expect_eq(count_files(cache), -1, "the cache directory was created");
    jit_image_free(&a);
    jit_image_free(&b);
}

Test(nvrtc, null_cache_dir_uses_the_default) {
    need_nvrtc();
    setenv("LOOM_KERNEL_CACHE", cache, 1);
    jit_image a;
    cr_assert_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 0, NULL, &a, err, sizeof err), 0, "%s", err);
    expect_cache_name(&a, "cubin");
    jit_image_free(&a);
}

Test(nvrtc, unwritable_cache_is_not_an_error) {
    need_nvrtc();
    char file[128], sub[160];
    snprintf(file, sizeof file, "%s/file", dir);   // a file where the cache's parent should be
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(sub, sizeof sub, "%s/kernels", file);
    jit_image a;
    cr_assert_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 0, sub, &a, err, sizeof err), 0, "%s", err);
    cr_expect_eq(memcmp(a.data, "\177ELF", 4), 0);
    cr_expect_not_null(strstr(a.note, "not cached: cannot create"), "note: %s", a.note);
    cr_expect_eq(jit_get_stats().write_failures, 1);
    jit_image_free(&a);
}

Test(nvrtc, unsupported_architectures) {
    need_nvrtc();
    jit_image a;
    // Older than any NVRTC 12/13 supports (sm_52 went in 13, sm_35 in 12).
    cr_expect_eq(jit_compile("bias_gelu", bias_gelu_src, 3, 0, cache, &a, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "bias_gelu: NVRTC"), "err: %s", err);
    cr_expect_not_null(strstr(err, "sm_30"), "err: %s", err);
    cr_expect_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 12, cache, &a, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "not a compute capability"), "err: %s", err);
    // Newer than this NVRTC: PTX for the newest architecture it knows, for the driver to JIT.
    cr_assert_eq(jit_compile("bias_gelu", bias_gelu_src, 99, 9, cache, &a, err, sizeof err), 0, "%s", err);
    cr_expect_eq(a.kind, JIT_PTX);
    cr_expect_lt(a.sm_major * 10 + a.sm_minor, 999);
    char target[32];
    snprintf(target, sizeof target, ".target sm_%d%d", a.sm_major, a.sm_minor);
    cr_expect_not_null(strstr((const char *)a.data, target), "no '%s' in the PTX", target);
    expect_cache_name(&a, "ptx");
    jit_image_free(&a);
}

Test(nvrtc, nvrtc_unavailable_is_reported) {
    setenv("LOOM_NVRTC", "/nonexistent/libnvrtc.so.13", 1);
    jit_image a;
    memset(&a, 0xab, sizeof a);
    cr_expect_eq(jit_compile("bias_gelu", bias_gelu_src, 8, 0, cache, &a, err, sizeof err), -1);
    cr_expect_null(a.data);
    cr_expect_eq(strncmp(err, "NVRTC is unavailable: ", 22), 0, "err: %s", err);
    cr_expect_not_null(strstr(err, "/nonexistent/libnvrtc.so.13"), "err: %s", err);
    cr_expect_eq(jit_nvrtc_version(NULL, NULL, err, sizeof err), -1);
}

Test(nvrtc, default_cache_dir) {
    char buf[256];
    setenv("LOOM_KERNEL_CACHE", "/x/kc", 1);
    setenv("XDG_CACHE_HOME", "/x/xdg", 1);
    setenv("HOME", "/x/home", 1);
    cr_assert_eq(jit_cache_dir_default(buf, sizeof buf, err, sizeof err), 0);
    cr_expect_str_eq(buf, "/x/kc");
    unsetenv("LOOM_KERNEL_CACHE");
    cr_assert_eq(jit_cache_dir_default(buf, sizeof buf, err, sizeof err), 0);
    cr_expect_str_eq(buf, "/x/xdg/loom/kernels");
    setenv("XDG_CACHE_HOME", "relative", 1);   // not absolute: ignored, as the XDG spec says
    cr_assert_eq(jit_cache_dir_default(buf, sizeof buf, err, sizeof err), 0);
    cr_expect_str_eq(buf, "/x/home/.cache/loom/kernels");
    unsetenv("XDG_CACHE_HOME");
    cr_assert_eq(jit_cache_dir_default(buf, sizeof buf, err, sizeof err), 0);
    cr_expect_str_eq(buf, "/x/home/.cache/loom/kernels");
    unsetenv("HOME");
    cr_expect_eq(jit_cache_dir_default(buf, sizeof buf, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "HOME"), "err: %s", err);
    char small[8];
    setenv("LOOM_KERNEL_CACHE", "/a/rather/long/path", 1);
    cr_expect_eq(jit_cache_dir_default(small, sizeof small, err, sizeof err), -1);
}

// ptxas (the assembler NVRTC and the driver use) on the PTX for sm_80: the kernel must
// not spill registers to local memory.
Test(nvrtc, ptxas_reports_no_spills_on_sm80) {
    need_nvrtc();
    const char *ptxas = "/usr/local/cuda/bin/ptxas";
    if (access(ptxas, X_OK) != 0) cr_skip_test("%s is absent", ptxas);
    jit_image p;
    cr_assert_eq(jit_compile_ptx("bias_gelu", bias_gelu_src, 8, 0, cache, &p, err, sizeof err), 0, "%s", err);
    char ptx[128], cmd[512];
    snprintf(ptx, sizeof ptx, "%s/bias_gelu.ptx", dir);
    FILE *f = fopen(ptx, "w");
    cr_assert_not_null(f);
    fwrite(p.data, 1, p.size - 1, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -v -arch=sm_80 -o /dev/null '%s' 2>&1", ptxas, ptx);
    FILE *out = popen(cmd, "r");
    cr_assert_not_null(out);
    char line[512];
    int seen = 0, spill_stores = -1, spill_loads = -1, regs = -1;
    while (fgets(line, sizeof line, out)) {
        fprintf(stderr, "# %s", line);
        const char *s = strstr(line, "bytes stack frame, ");
        if (s && sscanf(s, "bytes stack frame, %d bytes spill stores, %d bytes spill loads", &spill_stores, &spill_loads) == 2)
            seen++;
        if ((s = strstr(line, "Used ")) != NULL) sscanf(s, "Used %d registers", &regs);
    }
    cr_assert_eq(pclose(out), 0, "ptxas failed");
    cr_assert_eq(seen, 1, "no spill line from ptxas -v");
    cr_expect_eq(spill_stores, 0);
    cr_expect_eq(spill_loads, 0);
    cr_expect_gt(regs, 0);
    jit_image_free(&p);
}

// No GPU in these tests: loading either fails cleanly naming the missing device, or,
// on a machine with one, finds the kernel.
Test(nvrtc, load_needs_a_device) {
    need_nvrtc();
    jit_kernel k;
    jit_image empty = {0};
    cr_expect_eq(jit_load(&empty, "bias_gelu", &k, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "no image"), "err: %s", err);
    int major = 0, minor = 0;
    if (jit_device_arch(0, &major, &minor, err, sizeof err) != 0) {
        cr_expect_eq(strncmp(err, "no CUDA device", 14), 0, "err: %s", err);
        fprintf(stderr, "# %s\n", err);
        jit_image a = compile_ok(bias_gelu_src, 8, 0);
        cr_expect_eq(jit_load(&a, "bias_gelu", &k, err, sizeof err), -1);
        cr_expect_eq(strncmp(err, "no CUDA device", 14), 0, "err: %s", err);
        cr_expect_null(k.module);
        jit_image_free(&a);
        return;
    }
    jit_image a = compile_ok(bias_gelu_src, major, minor);
    cr_assert_eq(jit_load(&a, "bias_gelu", &k, err, sizeof err), 0, "%s", err);
    cr_expect_not_null(k.function);
    jit_unload(&k);
    cr_expect_eq(jit_load(&a, "no_such_kernel", &k, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "no_such_kernel"), "err: %s", err);
    jit_image_free(&a);
}
