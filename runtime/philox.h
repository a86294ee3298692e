#ifndef LOOM_PHILOX_H
#define LOOM_PHILOX_H
// Counter-based RNG: Philox4x32-10 (Salmon et al., "Parallel random numbers: as
// easy as 1, 2, 3", SC'11).  Stateless: the random numbers for (key, counter) are
// a pure function of them, so every element of every step can be drawn
// independently, in any order, on any thread, and identically on CPU and GPU
// (this header compiles as CUDA device code too).  Written by hand: it is a few
// lines, and no Debian library offers it as a C header.
#include <stdint.h>

#ifdef __CUDACC__
#define LOOM_RNG_FN static __host__ __device__ inline
#else
#define LOOM_RNG_FN static inline
#endif

typedef struct { uint32_t v[4]; } philox4x32;

LOOM_RNG_FN uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

// Four 32-bit random words for the 128-bit counter (c0..c3) under the 64-bit key.
LOOM_RNG_FN philox4x32 philox4x32_10(uint64_t key, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = philox_mulhilo(0xD2511F53u, x0, &hi0);
        uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, x2, &hi1);
        uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
        x0 = y0; x1 = y1; x2 = y2; x3 = y3;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    philox4x32 r = {{x0, x1, x2, x3}};
    return r;
}

// A float in [0, 1) from 24 random bits.
LOOM_RNG_FN float philox_uniform(uint32_t bits) { return (float)(bits >> 8) * (1.0f / 16777216.0f); }

// The i-th uniform of stream `stream` (e.g. one dropout layer at one step) under `seed`.
LOOM_RNG_FN float philox_uniform_at(uint64_t seed, uint64_t stream, uint64_t i) {
    philox4x32 r = philox4x32_10(seed, (uint32_t)(i >> 2), (uint32_t)(i >> 34), (uint32_t)stream, (uint32_t)(stream >> 32));
    return philox_uniform(r.v[i & 3]);
}

#endif
