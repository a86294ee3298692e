// Kernels for test_runtime.cpp, compiled as the emulator compiles a program's kernels
// (-include emu_device.h).
extern "C" __global__ void __launch_bounds__(256) block_reverse(float *x, int n) {
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();   // every thread's write before any read
    int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - threadIdx.x);
    if (j < n) x[j] = tile[threadIdx.x];
}
EMU_KERNEL(block_reverse)

extern "C" __global__ void __launch_bounds__(256) warp_sums(const float *x, float *out) {
    float v = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (threadIdx.x % 32 == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
}
EMU_KERNEL(warp_sums)

extern "C" __global__ void __launch_bounds__(256) add_scalar(float *x, float v, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) x[i] += v;
}
EMU_KERNEL(add_scalar)

extern "C" __global__ void __launch_bounds__(256) divergent_barrier(int *x) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    x[threadIdx.x] = 1;
}
EMU_KERNEL(divergent_barrier)
