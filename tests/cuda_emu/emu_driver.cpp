// cuda_emu: the emulated CUDA driver, built as libcuda.so.1 (the program opens the
// driver with dlopen).  One device of compute capability 8.0.  A module is the image
// NVRTC really produced (cubin or PTX); cuModuleGetFunction checks that the image names
// the kernel and resolves it in the registry of host-compiled kernels of the program
// (emu_runtime.cpp, exported by the executable: it is linked with -rdynamic).
#include <cuda.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" void *emu_find_kernel(const char *name);
extern "C" int emu_launch_kernel(void *entry, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned shmem, void *stream, void **params, void **extra);

struct CUctx_st { int device; };
struct CUmod_st { std::vector<char> image; };
static CUctx_st primary = {0};
static CUcontext current;
static bool initialised;

static bool image_names(const CUmod_st *m, const char *name) {
    size_t n = strlen(name);
    const char *p = m->image.data(), *end = p + m->image.size();
    while (p + n <= end) {
        const char *hit = (const char *)memmem(p, (size_t)(end - p), name, n);
        if (!hit) return false;
        // the whole name, not a prefix of a longer one
        char after = hit + n < end ? hit[n] : 0;
        char before = hit > m->image.data() ? hit[-1] : 0;
        bool ident_after = after == '_' || (after >= '0' && after <= '9') || (after >= 'a' && after <= 'z') || (after >= 'A' && after <= 'Z');
        bool ident_before = before == '_' || (before >= '0' && before <= '9') || (before >= 'a' && before <= 'z') || (before >= 'A' && before <= 'Z');
        if (!ident_after && !ident_before) return true;
        p = hit + 1;
    }
    return false;
}

extern "C" {

CUresult cuInit(unsigned int flags) {
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    initialised = true;
    return CUDA_SUCCESS;
}
// NVRTC itself opens libcuda.so.1 and asks for the driver's private export tables;
// without an answer it dereferences null: there are none here
CUresult cuGetExportTable(const void **table, const CUuuid *) {
    *table = nullptr;
    return CUDA_ERROR_NOT_SUPPORTED;
}
CUresult cuDriverGetVersion(int *v) {
    *v = CUDA_VERSION;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int *count) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *dev = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute attr, CUdevice dev) {
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attr) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 8; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 108; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; return CUDA_SUCCESS;
    default: fprintf(stderr, "cuda_emu: cuDeviceGetAttribute(%d) is not emulated\n", (int)attr); return CUDA_ERROR_INVALID_VALUE;
    }
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = &primary;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext *ctx) {
    *ctx = current;
    return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext ctx) {
    current = ctx;
    return CUDA_SUCCESS;
}

static CUresult load(CUmodule *mod, const void *image) {
    if (!current) return CUDA_ERROR_INVALID_CONTEXT;
    const unsigned char *p = (const unsigned char *)image;
    size_t size;
    if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F') {   // a cubin: its size from the ELF64 header
        uint64_t shoff;
        uint16_t shentsize, shnum;
        memcpy(&shoff, p + 0x28, 8);
        memcpy(&shentsize, p + 0x3a, 2);
        memcpy(&shnum, p + 0x3c, 2);
        size = shoff + (size_t)shentsize * shnum;
    } else if (strstr((const char *)p, ".version") && strstr((const char *)p, ".target")) {
        size = strlen((const char *)p) + 1;   // PTX text
    } else
        return CUDA_ERROR_INVALID_IMAGE;
    CUmod_st *m = new CUmod_st;
    m->image.assign((const char *)p, (const char *)p + size);
    *mod = m;
    return CUDA_SUCCESS;
}
CUresult cuModuleLoadData(CUmodule *mod, const void *image) { return load(mod, image); }
CUresult cuModuleLoadDataEx(CUmodule *mod, const void *image, unsigned int, CUjit_option *, void **) { return load(mod, image); }
CUresult cuModuleUnload(CUmodule mod) {
    delete mod;
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name) {
    if (!image_names(mod, name)) return CUDA_ERROR_NOT_FOUND;
    void *k = emu_find_kernel(name);
    if (!k) {
        fprintf(stderr, "cuda_emu: kernel %s is in the NVRTC image but was not compiled for the emulator (kernels/%s.cu)\n", name, name);
        return CUDA_ERROR_NOT_FOUND;
    }
    *fn = (CUfunction)k;
    return CUDA_SUCCESS;
}
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem,
                        CUstream stream, void **params, void **extra) {
    if (!current) return CUDA_ERROR_INVALID_CONTEXT;
    return (CUresult)emu_launch_kernel((void *)f, gx, gy, gz, bx, by, bz, shmem, (void *)stream, params, extra);
}
CUresult cuGetErrorName(CUresult r, const char **s) {
    switch (r) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    default: *s = "CUDA_ERROR_UNKNOWN (cuda_emu)"; break;
    }
    return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult r, const char **s) { return cuGetErrorName(r, s); }

}   // extern "C"
