// NVRTC JIT with an on-disk cache: see nvrtc_cache.h for the design and the file format.
#include "nvrtc_cache.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------
// The slice of the NVRTC and driver APIs we use, declared here so that this file
// builds without the CUDA headers (the libraries are opened with dlopen). The handle
// types are opaque pointers and the result types C enums (int-sized) in nvrtc.h and
// cuda.h; the values below are the ones in those headers, checked just after.
typedef int lj_nvrtc_result;                       // nvrtcResult
typedef struct lj_nvrtc_prog *lj_nvrtc_program;    // nvrtcProgram
typedef int lj_cu_result;                          // CUresult
typedef int lj_cu_device;                          // CUdevice
typedef void *lj_cu_context, *lj_cu_module, *lj_cu_function;
enum {
    LJ_NVRTC_SUCCESS = 0,
    LJ_CUDA_SUCCESS = 0,
    LJ_CUDA_ERROR_NO_DEVICE = 100,
    LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    LJ_CU_JIT_ERROR_LOG_BUFFER = 5,
    LJ_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
};

#if defined(__has_include)
#if __has_include(<nvrtc.h>) && __has_include(<cuda.h>)
#include <cuda.h>
#include <nvrtc.h>
_Static_assert(sizeof(nvrtcResult) == sizeof(lj_nvrtc_result), "nvrtcResult is not int-sized");
_Static_assert(sizeof(CUresult) == sizeof(lj_cu_result), "CUresult is not int-sized");
_Static_assert(sizeof(CUdevice) == sizeof(lj_cu_device), "CUdevice is not an int");
_Static_assert(sizeof(CUjit_option) == sizeof(int), "CUjit_option is not int-sized");
_Static_assert((int)NVRTC_SUCCESS == (int)LJ_NVRTC_SUCCESS, "NVRTC_SUCCESS");
_Static_assert((int)CUDA_SUCCESS == (int)LJ_CUDA_SUCCESS, "CUDA_SUCCESS");
_Static_assert((int)CUDA_ERROR_NO_DEVICE == (int)LJ_CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE");
_Static_assert((int)CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR == (int)LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "CC major");
_Static_assert((int)CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR == (int)LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "CC minor");
_Static_assert((int)CU_JIT_ERROR_LOG_BUFFER == (int)LJ_CU_JIT_ERROR_LOG_BUFFER, "CU_JIT_ERROR_LOG_BUFFER");
_Static_assert((int)CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES == (int)LJ_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, "CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES");
#endif
#endif

static struct {
    void *lib;
    char why[512];            // why it could not be opened
    int major, minor;         // nvrtcVersion
    int archs[64], narchs;    // nvrtcGetSupportedArchs, ascending; 0 when unknown
    lj_nvrtc_result (*Version)(int *, int *);
    lj_nvrtc_result (*CreateProgram)(lj_nvrtc_program *, const char *, const char *, int,
                                     const char *const *, const char *const *);
    lj_nvrtc_result (*DestroyProgram)(lj_nvrtc_program *);
    lj_nvrtc_result (*CompileProgram)(lj_nvrtc_program, int, const char *const *);
    lj_nvrtc_result (*GetProgramLogSize)(lj_nvrtc_program, size_t *);
    lj_nvrtc_result (*GetProgramLog)(lj_nvrtc_program, char *);
    lj_nvrtc_result (*GetPTXSize)(lj_nvrtc_program, size_t *);
    lj_nvrtc_result (*GetPTX)(lj_nvrtc_program, char *);
    lj_nvrtc_result (*GetCUBINSize)(lj_nvrtc_program, size_t *);    // NULL before 11.1
    lj_nvrtc_result (*GetCUBIN)(lj_nvrtc_program, char *);
    lj_nvrtc_result (*GetNumSupportedArchs)(int *);                 // NULL before 11.2
    lj_nvrtc_result (*GetSupportedArchs)(int *);
    const char *(*GetErrorString)(lj_nvrtc_result);
} nv;
static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

static struct {
    void *lib;
    char why[512];            // why there is no usable device ("" when there is one)
    lj_cu_result (*Init)(unsigned);
    lj_cu_result (*DeviceGetCount)(int *);
    lj_cu_result (*DeviceGet)(lj_cu_device *, int);
    lj_cu_result (*DeviceGetAttribute)(int *, int, lj_cu_device);
    lj_cu_result (*DevicePrimaryCtxRetain)(lj_cu_context *, lj_cu_device);
    lj_cu_result (*CtxGetCurrent)(lj_cu_context *);
    lj_cu_result (*CtxSetCurrent)(lj_cu_context);
    lj_cu_result (*ModuleLoadDataEx)(lj_cu_module *, const void *, unsigned, int *, void **);
    lj_cu_result (*ModuleGetFunction)(lj_cu_function *, lj_cu_module, const char *);
    lj_cu_result (*ModuleUnload)(lj_cu_module);
    lj_cu_result (*GetErrorName)(lj_cu_result, const char **);
} cu;
static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static atomic_long n_compiles, n_hits, n_misses, n_rejected, n_write_failures;

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// ---------------------------------------------------------------------------------
// Opening the libraries

#define SYM(lib, dst, name) (*(void **)&(dst) = dlsym((lib), (name)))

static void nv_open(void) {
    static const char *const sonames[] = {
        "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so.11.1",
        "libnvrtc.so.11.0", "libnvrtc.so",
    };
    const char *forced = getenv("LOOM_NVRTC");
    char first_err[400] = "";
    if (forced && *forced) {
        nv.lib = dlopen(forced, RTLD_NOW | RTLD_LOCAL);
        if (!nv.lib) snprintf(first_err, sizeof first_err, "%s (from $LOOM_NVRTC)", dlerror());
    } else {
        int n = (int)(sizeof sonames / sizeof sonames[0]);
        for (int pass = 0; pass < 2 && !nv.lib; pass++)
            for (int i = 0; i < n && !nv.lib; i++) {
                char path[256];
                snprintf(path, sizeof path, "%s%s", pass ? "/usr/local/cuda/lib64/" : "", sonames[i]);
                nv.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
                if (!nv.lib && !first_err[0]) snprintf(first_err, sizeof first_err, "%s", dlerror());
            }
        if (!nv.lib) {
            snprintf(nv.why, sizeof nv.why, "NVRTC is unavailable: %s (also tried libnvrtc.so.12, .11.x "
                     "and /usr/local/cuda/lib64; $LOOM_NVRTC names another)", first_err);
            return;
        }
    }
    if (!nv.lib) { snprintf(nv.why, sizeof nv.why, "NVRTC is unavailable: %s", first_err); return; }
    SYM(nv.lib, nv.Version, "nvrtcVersion");
    SYM(nv.lib, nv.CreateProgram, "nvrtcCreateProgram");
    SYM(nv.lib, nv.DestroyProgram, "nvrtcDestroyProgram");
    SYM(nv.lib, nv.CompileProgram, "nvrtcCompileProgram");
    SYM(nv.lib, nv.GetProgramLogSize, "nvrtcGetProgramLogSize");
    SYM(nv.lib, nv.GetProgramLog, "nvrtcGetProgramLog");
    SYM(nv.lib, nv.GetPTXSize, "nvrtcGetPTXSize");
    SYM(nv.lib, nv.GetPTX, "nvrtcGetPTX");
    SYM(nv.lib, nv.GetErrorString, "nvrtcGetErrorString");
    SYM(nv.lib, nv.GetCUBINSize, "nvrtcGetCUBINSize");
    SYM(nv.lib, nv.GetCUBIN, "nvrtcGetCUBIN");
    SYM(nv.lib, nv.GetNumSupportedArchs, "nvrtcGetNumSupportedArchs");
    SYM(nv.lib, nv.GetSupportedArchs, "nvrtcGetSupportedArchs");
    if (!nv.Version || !nv.CreateProgram || !nv.DestroyProgram || !nv.CompileProgram ||
        !nv.GetProgramLogSize || !nv.GetProgramLog || !nv.GetPTXSize || !nv.GetPTX ||
        !nv.GetErrorString) {
        snprintf(nv.why, sizeof nv.why, "NVRTC is unavailable: the library lacks nvrtcCompileProgram & co.");
        goto unusable;
    }
    if (nv.Version(&nv.major, &nv.minor) != LJ_NVRTC_SUCCESS) {
        snprintf(nv.why, sizeof nv.why, "NVRTC is unavailable: nvrtcVersion failed");
        goto unusable;
    }
    if (!nv.GetCUBINSize || !nv.GetCUBIN) nv.GetCUBINSize = NULL, nv.GetCUBIN = NULL;
    int n = 0;
    if (nv.GetNumSupportedArchs && nv.GetSupportedArchs &&
        nv.GetNumSupportedArchs(&n) == LJ_NVRTC_SUCCESS && n > 0 && n <= 64 &&
        nv.GetSupportedArchs(nv.archs) == LJ_NVRTC_SUCCESS) {
        nv.narchs = n;
        for (int i = 1; i < n; i++)   // ascending, whatever NVRTC's order
            for (int j = i; j > 0 && nv.archs[j - 1] > nv.archs[j]; j--) {
                int t = nv.archs[j]; nv.archs[j] = nv.archs[j - 1]; nv.archs[j - 1] = t;
            }
    }
    return;
unusable:
    dlclose(nv.lib);
    nv.lib = NULL;
}

static int nv_ready(char *err, size_t errlen) {
    pthread_once(&nv_once, nv_open);
    if (!nv.lib) return fail(err, errlen, "%s", nv.why);
    return 0;
}

int jit_nvrtc_version(int *major, int *minor, char *err, size_t errlen) {
    if (nv_ready(err, errlen) != 0) return -1;
    if (major) *major = nv.major;
    if (minor) *minor = nv.minor;
    return 0;
}

static const char *cu_errname(lj_cu_result r) {
    const char *s = NULL;
    if (cu.GetErrorName && cu.GetErrorName(r, &s) == LJ_CUDA_SUCCESS && s) return s;
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "CUDA error %d", r);   // 34: the toolkit's stub libcuda
    return buf;
}

static void cu_open(void) {
    cu.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu.lib) {
        snprintf(cu.why, sizeof cu.why, "no CUDA device: the CUDA driver is not installed (%s)", dlerror());
        return;
    }
    SYM(cu.lib, cu.Init, "cuInit");
    SYM(cu.lib, cu.DeviceGetCount, "cuDeviceGetCount");
    SYM(cu.lib, cu.DeviceGet, "cuDeviceGet");
    SYM(cu.lib, cu.DeviceGetAttribute, "cuDeviceGetAttribute");
    SYM(cu.lib, cu.DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    SYM(cu.lib, cu.CtxGetCurrent, "cuCtxGetCurrent");
    SYM(cu.lib, cu.CtxSetCurrent, "cuCtxSetCurrent");
    SYM(cu.lib, cu.ModuleLoadDataEx, "cuModuleLoadDataEx");
    SYM(cu.lib, cu.ModuleGetFunction, "cuModuleGetFunction");
    SYM(cu.lib, cu.ModuleUnload, "cuModuleUnload");
    SYM(cu.lib, cu.GetErrorName, "cuGetErrorName");
    if (!cu.Init || !cu.DeviceGetCount || !cu.DeviceGet || !cu.DeviceGetAttribute ||
        !cu.DevicePrimaryCtxRetain || !cu.CtxGetCurrent || !cu.CtxSetCurrent ||
        !cu.ModuleLoadDataEx || !cu.ModuleGetFunction || !cu.ModuleUnload) {
        snprintf(cu.why, sizeof cu.why, "no CUDA device: libcuda.so.1 lacks the driver API entry points");
        return;
    }
    lj_cu_result r = cu.Init(0);
    int count = 0;
    if (r != LJ_CUDA_SUCCESS)
        snprintf(cu.why, sizeof cu.why, "no CUDA device: cuInit: %s", cu_errname(r));
    else if ((r = cu.DeviceGetCount(&count)) != LJ_CUDA_SUCCESS)
        snprintf(cu.why, sizeof cu.why, "no CUDA device: cuDeviceGetCount: %s", cu_errname(r));
    else if (count == 0)
        snprintf(cu.why, sizeof cu.why, "no CUDA device: the driver sees none");
}

static int cu_ready(char *err, size_t errlen) {
    pthread_once(&cu_once, cu_open);
    if (cu.why[0]) return fail(err, errlen, "%s", cu.why);
    return 0;
}

// ---------------------------------------------------------------------------------
// Keys and cache files

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

#define CACHE_MAGIC "LOOMJIT"   // + its NUL: 8 bytes
#define CACHE_VERSION 1u
#define HEADER_SIZE 40

// What one compilation will be: the kind of image, its target and NVRTC's options.
typedef struct {
    jit_kind kind;
    int arch;                 // 80 for sm_80 / compute_80
    const char *opts[4];
    int nopts;
    char arch_opt[64];
} plan;

static int make_plan(const char *name, jit_kind want, int major, int minor, plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (major < 1 || major > 99 || minor < 0 || minor > 9)
        return fail(err, errlen, "%s: %d.%d is not a compute capability", name, major, minor);
    int req = major * 10 + minor;
    p->arch = req;
    p->kind = want == JIT_PTX || !nv.GetCUBIN ? JIT_PTX : JIT_CUBIN;
    if (nv.narchs > 0) {
        int lo = nv.archs[0], hi = nv.archs[nv.narchs - 1], known = 0;
        for (int i = 0; i < nv.narchs; i++) known |= nv.archs[i] == req;
        if (req < lo)
            return fail(err, errlen, "%s: NVRTC %d.%d cannot compile for sm_%d (the oldest it supports is sm_%d)",
                        name, nv.major, nv.minor, req, lo);
        if (req > hi) {               // a device newer than this NVRTC: PTX its driver can JIT
            p->arch = hi;
            p->kind = JIT_PTX;
        } else if (!known) {
            return fail(err, errlen, "%s: NVRTC %d.%d does not know sm_%d", name, nv.major, nv.minor, req);
        }
    }
    snprintf(p->arch_opt, sizeof p->arch_opt, "--gpu-architecture=%s_%d",
             p->kind == JIT_CUBIN ? "sm" : "compute", p->arch);
    p->opts[p->nopts++] = p->arch_opt;
    return 0;
}

// The key: the plan, the source, then (when there are any) each header's name and text.
// With headers every string is hashed with its NUL, so that no two lists of strings
// give the same bytes; without, the source alone as it always was (caches stay valid).
static uint64_t make_key(const plan *p, const char *source, const jit_header *headers, int nheaders) {
    char head[128];
    int n = snprintf(head, sizeof head, "loom-jit %u|nvrtc %d.%d|kind %d|arch %d|",
                     CACHE_VERSION, nv.major, nv.minor, (int)p->kind, p->arch);
    uint64_t h = fnv1a(FNV_OFFSET, head, (size_t)n);
    for (int i = 0; i < p->nopts; i++) h = fnv1a(h, p->opts[i], strlen(p->opts[i]) + 1);   // with the NUL
    if (nheaders == 0) return fnv1a(h, source, strlen(source));
    h = fnv1a(h, source, strlen(source) + 1);
    for (int i = 0; i < nheaders; i++) {
        h = fnv1a(h, headers[i].name, strlen(headers[i].name) + 1);
        h = fnv1a(h, headers[i].text, strlen(headers[i].text) + 1);
    }
    return h;
}

static void put_u32(unsigned char *b, uint32_t v) { for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *b, uint64_t v) { for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get_u32(const unsigned char *b) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | b[i]; return v; }
static uint64_t get_u64(const unsigned char *b) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | b[i]; return v; }

// Checks that an image looks like its kind: a cubin is an ELF file, PTX is text that
// ends with its NUL.
static const char *image_problem(jit_kind kind, const unsigned char *d, size_t n) {
    if (kind == JIT_CUBIN) return n >= 4 && memcmp(d, "\177ELF", 4) == 0 ? NULL : "not an ELF cubin";
    return n >= 1 && d[n - 1] == 0 && memchr(d, 0, n) == d + n - 1 ? NULL : "PTX text not NUL-terminated";
}

static int read_at(int fd, unsigned char *buf, size_t n, off_t at) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, at + (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        got += (size_t)k;
    }
    return 0;
}

// 1: a valid file, read into img; 0: no file; -1: a file that cannot be used (why in img->note).
// The header is checked before the image is read: a foreign file is never read whole.
static int cache_read(const char *path, uint64_t key, jit_kind kind, jit_image *img) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        fail(img->note, sizeof img->note, "%s: cannot read: %s; recompiled", path, strerror(errno));
        return -1;
    }
    struct stat st;
    unsigned char h[HEADER_SIZE], *buf = NULL;
    char why[200];
    if (fstat(fd, &st) != 0) { fail(why, sizeof why, "fstat: %s", strerror(errno)); goto bad; }
    uint64_t fsize = (uint64_t)st.st_size;
    if (fsize < HEADER_SIZE) {
        fail(why, sizeof why, "truncated (%llu bytes, shorter than the %d-byte header)", (unsigned long long)fsize, HEADER_SIZE);
        goto bad;
    }
    if (read_at(fd, h, HEADER_SIZE, 0) != 0) { fail(why, sizeof why, "cannot read its header"); goto bad; }
    if (memcmp(h, CACHE_MAGIC, 8) != 0) { fail(why, sizeof why, "not a loom kernel cache file (bad magic)"); goto bad; }
    uint32_t version = get_u32(h + 8), fkind = get_u32(h + 12);
    uint64_t fkey = get_u64(h + 16), size = get_u64(h + 24), sum = get_u64(h + 32);
    if (version != CACHE_VERSION) {
        fail(why, sizeof why, "cache format version %u, expected %u", version, CACHE_VERSION);
        goto bad;
    }
    if (fkey != key || fkind != (uint32_t)kind) {
        fail(why, sizeof why, "holds key %016llx kind %u, expected %016llx kind %d",
             (unsigned long long)fkey, fkind, (unsigned long long)key, (int)kind);
        goto bad;
    }
    if (size != fsize - HEADER_SIZE) {
        fail(why, sizeof why, "truncated or padded (header says %llu bytes of image, the file has %llu)",
             (unsigned long long)size, (unsigned long long)(fsize - HEADER_SIZE));
        goto bad;
    }
    if (size == 0 || size > ((uint64_t)1 << 31) || !(buf = malloc((size_t)size))) {
        fail(why, sizeof why, "implausible image size %llu", (unsigned long long)size);
        goto bad;
    }
    if (read_at(fd, buf, (size_t)size, HEADER_SIZE) != 0) { fail(why, sizeof why, "short read"); goto bad; }
    if (fnv1a(FNV_OFFSET, buf, (size_t)size) != sum) { fail(why, sizeof why, "corrupt (checksum mismatch)"); goto bad; }
    const char *problem = image_problem(kind, buf, (size_t)size);
    if (problem) { fail(why, sizeof why, "%s", problem); goto bad; }
    close(fd);
    img->data = buf;
    img->size = (size_t)size;
    return 1;
bad:
    close(fd);
    free(buf);
    fail(img->note, sizeof img->note, "%s: %s; recompiled", path, why);
    return -1;
}

// mkdir -p, creating missing directories with mode 0700 (a cache is per user).
static int mkdir_p(const char *dir) {
    char p[JIT_PATH_LEN];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0700) != 0 && errno != EEXIST) return -1;
            *s = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    return 0;
}

static int write_all(int fd, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

// Writes the file atomically: a temporary file in the same directory, renamed over
// `path`. Returns 0, or -1 with the reason in `why`.
static int cache_write(const char *dir, const char *path, uint64_t key, jit_kind kind,
                       const unsigned char *data, size_t size, char *why, size_t whylen) {
    if (mkdir_p(dir) != 0) return fail(why, whylen, "cannot create %s: %s", dir, strerror(errno));
    char tmp[JIT_PATH_LEN + 32];
    snprintf(tmp, sizeof tmp, "%s/.%016llx.XXXXXX", dir, (unsigned long long)key);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) return fail(why, whylen, "cannot create a file in %s: %s", dir, strerror(errno));
    unsigned char h[HEADER_SIZE];
    memcpy(h, CACHE_MAGIC, 8);
    put_u32(h + 8, CACHE_VERSION);
    put_u32(h + 12, (uint32_t)kind);
    put_u64(h + 16, key);
    put_u64(h + 24, (uint64_t)size);
    put_u64(h + 32, fnv1a(FNV_OFFSET, data, size));
    int rc = write_all(fd, h, sizeof h) == 0 && write_all(fd, data, size) == 0 ? 0 : -1;
    int saved = errno;
    if (close(fd) != 0 && rc == 0) rc = -1, saved = errno;
    if (rc != 0) { unlink(tmp); return fail(why, whylen, "cannot write %s: %s", tmp, strerror(saved)); }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return fail(why, whylen, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return 0;
}

// ---------------------------------------------------------------------------------
// Compiling

// Appends a compiler log to err on the same line: its lines that say "error" (or, when
// none does, its first lines), at most four, joined by " | ", and how many were left out.
static void append_log(char *err, size_t errlen, const char *log) {
    enum { MAX_LINES = 4 };
    int has_error = strstr(log, "error") != NULL, shown = 0, more = 0;
    size_t used = strlen(err);
    for (const char *s = log; *s;) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
        const char *t = s;
        while (n && (*t == ' ' || *t == '\t')) t++, n--;
        int wanted = n && (!has_error || memmem(t, n, "error", 5));
        if (wanted && shown < MAX_LINES) {
            if (used + 1 < errlen) {
                int k = snprintf(err + used, errlen - used, "%s%.*s", shown ? " | " : ": ", (int)n, t);
                used += k > 0 ? (size_t)k : 0;
                if (used >= errlen) used = errlen - 1;
            }
            shown++;
        } else if (n) {
            more++;
        }
        if (!e) break;
        s = e + 1;
    }
    if (more && used + 1 < errlen) snprintf(err + used, errlen - used, " | (%d more log lines)", more);
}

static int nvrtc_build(const char *name, const char *source, const jit_header *headers, int nheaders,
                       const plan *p, unsigned char **data, size_t *size, char *err, size_t errlen) {
    char file[256];
    snprintf(file, sizeof file, "%s.cu", name);
    const char *texts[JIT_MAX_HEADERS], *names[JIT_MAX_HEADERS];
    for (int i = 0; i < nheaders; i++) { texts[i] = headers[i].text; names[i] = headers[i].name; }
    lj_nvrtc_program prog = NULL;
    lj_nvrtc_result r = nv.CreateProgram(&prog, source, file, nheaders, texts, names);
    if (r != LJ_NVRTC_SUCCESS)
        return fail(err, errlen, "%s: nvrtcCreateProgram: %s", name, nv.GetErrorString(r));
    atomic_fetch_add(&n_compiles, 1);
    const char *target = strchr(p->arch_opt, '=') + 1;
    r = nv.CompileProgram(prog, p->nopts, p->opts);
    if (r != LJ_NVRTC_SUCCESS) {
        fail(err, errlen, "%s: NVRTC %d.%d failed to compile for %s (%s)", name, nv.major, nv.minor,
             target, nv.GetErrorString(r));
        size_t n = 0;
        if (nv.GetProgramLogSize(prog, &n) == LJ_NVRTC_SUCCESS && n > 1) {
            char *log = malloc(n + 1);
            if (log && nv.GetProgramLog(prog, log) == LJ_NVRTC_SUCCESS) {
                log[n] = 0;
                append_log(err, errlen, log);
            }
            free(log);
        }
        nv.DestroyProgram(&prog);
        return -1;
    }
    size_t n = 0;
    int cubin = p->kind == JIT_CUBIN;
    r = cubin ? nv.GetCUBINSize(prog, &n) : nv.GetPTXSize(prog, &n);
    unsigned char *buf = r == LJ_NVRTC_SUCCESS && n ? malloc(n) : NULL;
    if (buf) r = cubin ? nv.GetCUBIN(prog, (char *)buf) : nv.GetPTX(prog, (char *)buf);
    nv.DestroyProgram(&prog);
    if (r != LJ_NVRTC_SUCCESS || !buf) {
        free(buf);
        return fail(err, errlen, "%s: cannot get the %s for %s from NVRTC: %s", name, cubin ? "cubin" : "PTX",
                    target, r != LJ_NVRTC_SUCCESS ? nv.GetErrorString(r) : n ? "out of memory" : "empty image");
    }
    const char *why = image_problem(p->kind, buf, n);
    if (why) { free(buf); return fail(err, errlen, "%s: NVRTC returned a bad image for %s: %s", name, target, why); }
    *data = buf;
    *size = n;
    return 0;
}

int jit_compile_with_headers(jit_kind want, const char *name, const char *source, const jit_header *headers,
                             int nheaders, int sm_major, int sm_minor, const char *cache_dir, jit_image *out,
                             char *err, size_t errlen) {
    double t0 = now_s();
    memset(out, 0, sizeof *out);
    if (!name || !*name) name = "kernel";
    if (!source) return fail(err, errlen, "%s: no source", name);
    if (nheaders < 0 || nheaders > JIT_MAX_HEADERS || (nheaders > 0 && !headers))
        return fail(err, errlen, "%s: %d headers (at most %d)", name, nheaders, JIT_MAX_HEADERS);
    for (int i = 0; i < nheaders; i++)
        if (!headers[i].name || !*headers[i].name || !headers[i].text)
            return fail(err, errlen, "%s: header %d has no name or no text", name, i);
    if (nv_ready(err, errlen) != 0) return -1;
    plan p;
    if (make_plan(name, want, sm_major, sm_minor, &p, err, errlen) != 0) return -1;
    out->kind = p.kind;
    out->sm_major = p.arch / 10;
    out->sm_minor = p.arch % 10;
    out->key = make_key(&p, source, headers, nheaders);

    char dirbuf[JIT_PATH_LEN];
    if (!cache_dir) {
        char why[JIT_NOTE_LEN];
        if (jit_cache_dir_default(dirbuf, sizeof dirbuf, why, sizeof why) == 0) cache_dir = dirbuf;
        else fail(out->note, sizeof out->note, "not caching: %s", why);
    }
    if (cache_dir && *cache_dir) {
        int n = snprintf(out->cache_path, sizeof out->cache_path, "%s/%016llx.%s", cache_dir,
                         (unsigned long long)out->key, p.kind == JIT_CUBIN ? "cubin" : "ptx");
        if (n >= (int)sizeof out->cache_path) {
            snprintf(out->note, sizeof out->note, "not caching: the cache directory's path is too long");
            out->cache_path[0] = 0;
        }
    }
    if (out->cache_path[0]) {
        int r = cache_read(out->cache_path, out->key, p.kind, out);
        if (r == 1) {
            atomic_fetch_add(&n_hits, 1);
            out->from_cache = 1;
            out->seconds = now_s() - t0;
            return 0;
        }
        if (r < 0) atomic_fetch_add(&n_rejected, 1);
    }
    atomic_fetch_add(&n_misses, 1);
    if (nvrtc_build(name, source, headers, nheaders, &p, &out->data, &out->size, err, errlen) != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    if (out->cache_path[0]) {
        char why[JIT_NOTE_LEN];
        if (cache_write(cache_dir, out->cache_path, out->key, out->kind, out->data, out->size, why, sizeof why) != 0) {
            atomic_fetch_add(&n_write_failures, 1);
            size_t used = strlen(out->note);
            snprintf(out->note + used, sizeof out->note - used, "%snot cached: %s", used ? "; " : "", why);
        }
    }
    out->seconds = now_s() - t0;
    return 0;
}

int jit_compile(const char *name, const char *source, int sm_major, int sm_minor,
                const char *cache_dir, jit_image *out, char *err, size_t errlen) {
    return jit_compile_with_headers(JIT_CUBIN, name, source, NULL, 0, sm_major, sm_minor, cache_dir, out, err, errlen);
}

int jit_compile_ptx(const char *name, const char *source, int sm_major, int sm_minor,
                    const char *cache_dir, jit_image *out, char *err, size_t errlen) {
    return jit_compile_with_headers(JIT_PTX, name, source, NULL, 0, sm_major, sm_minor, cache_dir, out, err, errlen);
}

void jit_image_free(jit_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
    img->size = 0;
}

int jit_cache_dir_default(char *buf, size_t len, char *err, size_t errlen) {
    const char *v;
    int n;
    if ((v = getenv("LOOM_KERNEL_CACHE")) && *v) n = snprintf(buf, len, "%s", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && v[0] == '/') n = snprintf(buf, len, "%s/loom/kernels", v);
    else if ((v = getenv("HOME")) && *v) n = snprintf(buf, len, "%s/.cache/loom/kernels", v);
    else return fail(err, errlen, "no kernel cache directory: none of $LOOM_KERNEL_CACHE, $XDG_CACHE_HOME, $HOME is set");
    if (n < 0 || (size_t)n >= len) return fail(err, errlen, "kernel cache directory: path too long (%s...)", v);
    return 0;
}

jit_stats jit_get_stats(void) {
    jit_stats s = {
        .compiles = atomic_load(&n_compiles), .hits = atomic_load(&n_hits),
        .misses = atomic_load(&n_misses), .rejected = atomic_load(&n_rejected),
        .write_failures = atomic_load(&n_write_failures),
    };
    return s;
}

long jit_nvrtc_calls(void) { return atomic_load(&n_compiles); }

// ---------------------------------------------------------------------------------
// Loading

int jit_device_arch(int ordinal, int *major, int *minor, char *err, size_t errlen) {
    if (cu_ready(err, errlen) != 0) return -1;
    int count = 0, ma = 0, mi = 0;
    lj_cu_device dev;
    lj_cu_result r = cu.DeviceGetCount(&count);
    if (r != LJ_CUDA_SUCCESS) return fail(err, errlen, "cuDeviceGetCount: %s", cu_errname(r));
    if (ordinal < 0 || ordinal >= count)
        return fail(err, errlen, "CUDA device %d does not exist (%d device%s)", ordinal, count, count == 1 ? "" : "s");
    if ((r = cu.DeviceGet(&dev, ordinal)) != LJ_CUDA_SUCCESS ||
        (r = cu.DeviceGetAttribute(&ma, LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)) != LJ_CUDA_SUCCESS ||
        (r = cu.DeviceGetAttribute(&mi, LJ_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)) != LJ_CUDA_SUCCESS)
        return fail(err, errlen, "CUDA device %d: cannot read its compute capability: %s", ordinal, cu_errname(r));
    if (major) *major = ma;
    if (minor) *minor = mi;
    return 0;
}

int jit_load(const jit_image *img, const char *name, jit_kernel *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!name || !*name) return fail(err, errlen, "jit_load: no kernel name");
    if (!img || !img->data || !img->size) return fail(err, errlen, "%s: no image to load", name);
    const char *why = image_problem(img->kind, img->data, img->size);
    if (why) return fail(err, errlen, "%s: cannot load: %s", name, why);
    if (cu_ready(err, errlen) != 0) return -1;
    lj_cu_context ctx = NULL;
    lj_cu_result r = cu.CtxGetCurrent(&ctx);
    if (r != LJ_CUDA_SUCCESS) return fail(err, errlen, "%s: cuCtxGetCurrent: %s", name, cu_errname(r));
    if (!ctx) {
        lj_cu_device dev;
        if ((r = cu.DeviceGet(&dev, 0)) != LJ_CUDA_SUCCESS || (r = cu.DevicePrimaryCtxRetain(&ctx, dev)) != LJ_CUDA_SUCCESS ||
            (r = cu.CtxSetCurrent(ctx)) != LJ_CUDA_SUCCESS)
            return fail(err, errlen, "%s: cannot make device 0's primary context current: %s", name, cu_errname(r));
    }
    char log[1024] = "";
    int opts[2] = {LJ_CU_JIT_ERROR_LOG_BUFFER, LJ_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[2] = {log, (void *)(uintptr_t)sizeof log};
    lj_cu_module mod = NULL;
    r = cu.ModuleLoadDataEx(&mod, img->data, 2, opts, vals);
    if (r != LJ_CUDA_SUCCESS) {
        fail(err, errlen, "%s: cuModuleLoadData (%s for sm_%d%d): %s", name, img->kind == JIT_CUBIN ? "cubin" : "PTX",
             img->sm_major, img->sm_minor, cu_errname(r));
        log[sizeof log - 1] = 0;
        if (log[0]) append_log(err, errlen, log);
        return -1;
    }
    lj_cu_function fn = NULL;
    if ((r = cu.ModuleGetFunction(&fn, mod, name)) != LJ_CUDA_SUCCESS) {
        cu.ModuleUnload(mod);
        return fail(err, errlen, "%s: no such kernel in its image (cuModuleGetFunction: %s; is it extern \"C\"?)",
                    name, cu_errname(r));
    }
    out->module = mod;
    out->function = fn;
    return 0;
}

void jit_unload(jit_kernel *k) {
    if (!k || !k->module) return;
    if (cu.ModuleUnload) cu.ModuleUnload(k->module);
    k->module = k->function = NULL;
}
