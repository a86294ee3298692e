#ifndef LOOM_NVRTC_CACHE_H
#define LOOM_NVRTC_CACHE_H
// The CUDA backend's kernel JIT: fused kernels ship as CUDA C source strings, are
// compiled by NVRTC at start-up for the device's architecture, and are cached on disk
// so that the second run of a program starts without compiling anything.
//
//   jit_image img;
//   char err[512];
//   if (jit_compile("bias_gelu", src, 8, 0, NULL, &img, err, sizeof err) != 0) {
//       fprintf(stderr, "%s\n", err); return 1;
//   }
//   jit_kernel k;
//   if (jit_load(&img, "bias_gelu", &k, err, sizeof err) != 0) ...
//   jit_image_free(&img);
//
// Linking: NVRTC (libnvrtc.so.*) and the driver (libcuda.so.1) are opened with dlopen
// on first use, never linked: a program built with this runtime starts on a machine
// without CUDA and says "NVRTC is unavailable" / "no CUDA device" when asked to JIT,
// instead of failing to start in the dynamic loader. The few entry points used are
// declared in nvrtc_cache.c (no CUDA headers needed to build it); where the CUDA
// headers are on the include path, their constants are checked against ours at
// compile time. $LOOM_NVRTC names the NVRTC library to use instead of the search.
//
// The cache: one file per kernel, `<cache_dir>/<key>.cubin` (or `.ptx`), where `key`
// is 16 hex digits of a 64-bit FNV-1a hash of the source text, the requested
// architecture, the NVRTC version and every compile option (which name the target and
// the kind of image). FNV-1a and not a cryptographic hash: the key guards against
// staleness, not against an attacker (anyone who can write the cache directory can
// write any cubin into it anyway), and at 64 bits an accidental collision needs about
// 2^32 distinct kernels in one directory; it is ten lines instead of a hand-written
// SHA-256. Each file starts with a 40-byte header: magic "LOOMJIT\0", format version,
// kind, key, payload size and a 64-bit FNV-1a checksum of the payload. A file that is
// truncated, foreign, for another key or corrupted is rejected (said in `note`),
// recompiled and replaced, never loaded. Files are written to a temporary name in the
// same directory and renamed into place: concurrent processes compiling the same kernel
// each write a whole file and the last rename wins. No fsync: a file half-written by a
// power cut fails its size or checksum test and is simply recompiled.
//
// Headers: a source may #include headers that are not files but strings, handed to
// NVRTC with the program (nvrtcCreateProgram's headers / includeNames). A generated
// program's kernels all #include "loom_prelude.h" (scalar_ops.h and the state types),
// which the program holds once. When there are headers, the key hashes each one's name
// and text after the source, so a changed header never reuses a stale cubin; a source
// compiled without headers keeps the key it always had.
//
// A cache hit reads the file and creates no NVRTC program (the only NVRTC calls are
// the one-time nvrtcVersion / nvrtcGetSupportedArchs that the key needs):
// jit_get_stats().compiles counts the calls to nvrtcCompileProgram, for tests.
//
// Errors never exit: a function returns -1 and leaves one line in `err`, naming the
// kernel or file and what failed, e.g.
//   bias_gelu: NVRTC 13.0 failed to compile for sm_80: bias_gelu.cu(4): error: expected a ";" | 1 error detected ...
//
// Thread safety: the libraries are opened once (pthread_once) and the counters are
// atomic; jit_compile may be called from several threads.
#include <stddef.h>
#include <stdint.h>

typedef enum { JIT_CUBIN = 1, JIT_PTX = 2 } jit_kind;

#define JIT_PATH_LEN 4096
#define JIT_NOTE_LEN 512

typedef struct {
    jit_kind kind;
    unsigned char *data;       // malloc'd; PTX text ends with its NUL, which `size` counts
    size_t size;
    int sm_major, sm_minor;    // the target: for a PTX fallback, older than the one asked for
    uint64_t key;              // the cache key (also the file name)
    int from_cache;            // 1 when read from the cache (no compilation)
    double seconds;            // wall time to get it: compile + write, or read
    char cache_path[JIT_PATH_LEN];  // the cache file, "" when not caching
    char note[JIT_NOTE_LEN];   // "" or one line about the cache: a rejected file, a failed write
} jit_image;

// The image of one kernel for compute capability sm_major.sm_minor: a cubin, or PTX for
// the newest architecture NVRTC knows when the device is newer than this NVRTC (the
// driver JIT-compiles that PTX) or when NVRTC cannot produce cubins (before 11.1).
// `name` is the kernel's name (the __global__ function, extern "C"), used in messages
// and as the source's file name in NVRTC's log. `cache_dir`: NULL for the default
// (jit_cache_dir_default), "" for no cache; created (mode 0700) when missing. A cache
// that cannot be read or written is not an error: the image is compiled, `note` says
// why the cache was not used. Returns 0, or -1 with `err` set and `out` zeroed.
int jit_compile(const char *name, const char *source, int sm_major, int sm_minor,
                const char *cache_dir, jit_image *out, char *err, size_t errlen);
// The same, always PTX (target compute_XY), cached as `<key>.ptx`: for inspection with
// ptxas / cuobjdump, or for a driver to JIT.
int jit_compile_ptx(const char *name, const char *source, int sm_major, int sm_minor,
                    const char *cache_dir, jit_image *out, char *err, size_t errlen);

// A header a source #includes by `name` ("loom_prelude.h"), with its whole text.
typedef struct { const char *name; const char *text; } jit_header;
#define JIT_MAX_HEADERS 8
// jit_compile (want JIT_CUBIN) or jit_compile_ptx (JIT_PTX) of a source that #includes
// `headers` (nheaders of them, at most JIT_MAX_HEADERS; NULL and 0 for none).
int jit_compile_with_headers(jit_kind want, const char *name, const char *source, const jit_header *headers,
                             int nheaders, int sm_major, int sm_minor, const char *cache_dir, jit_image *out,
                             char *err, size_t errlen);
void jit_image_free(jit_image *img);

// The cache directory: $LOOM_KERNEL_CACHE, else $XDG_CACHE_HOME/loom/kernels (when
// absolute, as the XDG spec asks), else $HOME/.cache/loom/kernels. Returns 0, or -1
// when none of them is set (or the path does not fit).
int jit_cache_dir_default(char *buf, size_t len, char *err, size_t errlen);

// Opens NVRTC if needed and gives its version. -1: "NVRTC is unavailable: <why>".
int jit_nvrtc_version(int *major, int *minor, char *err, size_t errlen);

typedef struct {
    long compiles;        // nvrtcCompileProgram calls (failed ones included)
    long hits;            // images read from the cache
    long misses;          // no usable cache file (absent or rejected)
    long rejected;        // cache files found but rejected (truncated, foreign, corrupt)
    long write_failures;  // compiled images that could not be written to the cache
} jit_stats;
// Counters since the process started (a forked child inherits its parent's).
jit_stats jit_get_stats(void);
// jit_get_stats().compiles: the number of times this process has called NVRTC to compile.
long jit_nvrtc_calls(void);

// --- Loading into a CUDA context (needs a device) ---
typedef struct {
    void *module;     // CUmodule
    void *function;   // CUfunction, for cuLaunchKernel
} jit_kernel;

// The compute capability of device `ordinal`. -1: "no CUDA device: <why>" when the
// driver is absent or sees no device.
int jit_device_arch(int ordinal, int *major, int *minor, char *err, size_t errlen);
// Loads the image into the current CUDA context (when there is none, device 0's
// primary context, the one the runtime API uses, is retained and made current) and
// finds the kernel `name` in it. -1 with "no CUDA device: <why>" on a machine without
// one, or the driver's error and JIT log naming the kernel.
int jit_load(const jit_image *img, const char *name, jit_kernel *out, char *err, size_t errlen);
void jit_unload(jit_kernel *k);

#endif
