// The conversion loops of templates/cpu/kernels_cast.inc work on blocks of 8 values
// (F16C's 8-wide instructions for f16) and finish the tail one value at a time:
// every block result must equal the one-value path bit for bit, for every pair of
// formats and every loop (load, store, accumulate, convert, accumulate-convert), on
// values that cover normal numbers, f16 subnormals and overflow, and bf16 ties.
#include <criterion/criterion.h>
#include "kernels.h"

#define N 1003   // 125 blocks and a tail of 3

static uint32_t rng_state;
static float draw(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    uint32_t r = rng_state;
    switch (r % 6) {
    case 0: { float f; memcpy(&f, &r, sizeof f); return isnan(f) ? 1.0f : f; }   // any bit pattern
    case 1: return ((float)(r >> 8) / 16777216.0f - 0.5f) * 1e-5f;              // f16 subnormals
    case 2: return ((float)(r >> 8) / 16777216.0f - 0.5f) * 2e5f;               // f16 overflow
    case 3: return k_widen_bf16((k_bf16)(r >> 16)) * (1.0f + 1.0f / 256);       // bf16 ties
    default: return ((float)(r >> 8) / 16777216.0f - 0.5f) * 6.0f;
    }
}

#define CHECK_PAIR(S, V)                                                                             \
    do {                                                                                             \
        static float src[N], a[N], b[N];                                                             \
        static k_##S st[N], sa[N], sb[N];                                                            \
        static k_##V vs[N], va[N], vb[N];                                                            \
        for (int i = 0; i < N; i++) { src[i] = draw(); st[i] = k_narrow_##S(draw()); vs[i] = k_narrow_##V(draw()); } \
        k_load_##S##_as_##V(a, st, N);                                                               \
        for (int i = 0; i < N; i++) b[i] = k_round_##V(k_widen_##S(st[i]));                         \
        cr_expect(memcmp(a, b, sizeof a) == 0, "k_load_%s_as_%s", #S, #V);                          \
        k_store_##S##_from_##V(sa, src, N);                                                          \
        for (int i = 0; i < N; i++) sb[i] = k_narrow_##S(k_round_##V(src[i]));                      \
        cr_expect(memcmp(sa, sb, sizeof sa) == 0, "k_store_%s_from_%s", #S, #V);                     \
        memcpy(sa, st, sizeof sa); memcpy(sb, st, sizeof sb);                                        \
        k_accum_##S##_from_##V(sa, src, N);                                                          \
        for (int i = 0; i < N; i++) sb[i] = k_narrow_##S(k_widen_##S(sb[i]) + k_round_##V(src[i])); \
        cr_expect(memcmp(sa, sb, sizeof sa) == 0, "k_accum_%s_from_%s", #S, #V);                     \
        k_convert_##S##_##V(va, st, N);                                                              \
        for (int i = 0; i < N; i++) vb[i] = k_narrow_##V(k_widen_##S(st[i]));                       \
        cr_expect(memcmp(va, vb, sizeof va) == 0, "k_convert_%s_%s", #S, #V);                        \
        memcpy(va, vs, sizeof va); memcpy(vb, vs, sizeof vb);                                        \
        k_accum_convert_##S##_##V(va, st, N);                                                        \
        for (int i = 0; i < N; i++) vb[i] = k_narrow_##V(k_widen_##V(vb[i]) + k_widen_##S(st[i]));  \
        cr_expect(memcmp(va, vb, sizeof va) == 0, "k_accum_convert_%s_%s", #S, #V);                  \
    } while (0)

Test(cast_blocks, every_pair_equals_the_one_value_path) {
    rng_state = 12345;
    CHECK_PAIR(f32, f32);  CHECK_PAIR(f32, bf16);  CHECK_PAIR(f32, f16);
    CHECK_PAIR(bf16, f32); CHECK_PAIR(bf16, bf16); CHECK_PAIR(bf16, f16);
    CHECK_PAIR(f16, f32);  CHECK_PAIR(f16, bf16);  CHECK_PAIR(f16, f16);
}

// the 8-wide f16 conversions against the scalar _Float16 ones on all 65536 patterns
Test(cast_blocks, f16_blocks_cover_every_pattern) {
    static k_f16 h[65536], back[65536];
    static float w[65536];
    for (uint32_t i = 0; i < 65536; i++) { uint16_t u = (uint16_t)i; memcpy(&h[i], &u, 2); }
    k_load_f16_as_f32(w, h, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        float want = k_widen_f16(h[i]);
        if (isnan(want)) cr_expect(isnan(w[i]), "pattern %04x", i);
        else cr_expect(memcmp(&w[i], &want, sizeof want) == 0, "pattern %04x", i);
    }
    k_store_f16_from_f32(back, w, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        if (isnan(w[i])) continue;
        cr_expect(memcmp(&back[i], &h[i], 2) == 0, "pattern %04x does not round-trip", i);
    }
}
