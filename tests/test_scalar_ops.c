// templates/common/scalar_ops.h against the CPU kernels (templates/cpu/): the CUDA
// backend's fused kernels are loops around these functions, so matching the CPU
// kernels here, bit for bit, is what makes the CPU tests cover the GPU arithmetic.
// Compiled with -ffp-contract=off so that the comparison is of the expressions as
// written; NVRTC (default --fmad=true) may contract a*b+c into an FMA, one rounding
// fewer: the GPU test (tests/gpu/run.sh) compares with tolerances for that reason.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "scalar_ops.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() >> 8) / 16777216.0f; }

static int same_bits(float a, float b) {
    if (isnan(a) && isnan(b)) return 1;
    uint32_t x, y;
    memcpy(&x, &a, 4); memcpy(&y, &b, 4);
    return x == y;
}
// the sweeps of the function tests: v runs over every 1031st bit pattern of a float
// (all exponents, both signs), then two steps past the last: +inf and -inf
static float sweep_float(uint64_t v, uint32_t *bits) {
    *bits = v > 0xffffffffu ? 0x7f800000u ^ (uint32_t)(v & 1) << 31 : (uint32_t)v;
    float x;
    memcpy(&x, bits, 4);
    return x;
}
#define N 4099

Test(scalar_ops, bf16_matches_cpu_conversions) {
    // every 16-bit pattern widens as the CPU widens it
    for (uint32_t h = 0; h < 65536; h++)
        cr_assert(same_bits(so_widen_bf16((so_u16)h), k_widen_bf16((k_bf16)h)), "widen bf16 %04x", h);
    // narrowing: random bit patterns (all exponents), ties, and specials
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = next_u32() ^ ((uint32_t)next_u32() << 16);
        if (i % 4 == 1) u = (u & 0xffff0000u) | 0x8000u;   // exact ties
        float x;
        memcpy(&x, &u, 4);
        cr_assert_eq(so_narrow_bf16(x), k_narrow_bf16(x), "narrow bf16 %08x", u);
    }
    const float special[] = { 0.0f, -0.0f, INFINITY, -INFINITY, NAN, 3.4028235e38f, 1e-45f };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        cr_assert_eq(so_narrow_bf16(special[i]), k_narrow_bf16(special[i]));
}

Test(scalar_ops, f16_matches_cpu_conversions) {
    for (uint32_t h = 0; h < 65536; h++) {
        k_f16 v;
        uint16_t b = (uint16_t)h;
        memcpy(&v, &b, 2);
        cr_assert(same_bits(so_widen_f16((so_u16)h), k_widen_f16(v)), "widen f16 %04x", h);
    }
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = next_u32() ^ ((uint32_t)next_u32() << 16);
        if (i % 2) u = (u & 0x80000000u) | ((uint32_t)(100 + next_u32() % 50) << 23) | (u & 0x7fffffu);  // f16's range
        if (i % 8 == 3) u = (u & 0xffffe000u) | 0x1000u;   // ties
        float x;
        memcpy(&x, &u, 4);
        k_f16 r = k_narrow_f16(x);
        uint16_t rb;
        memcpy(&rb, &r, 2);
        if (isnan(x)) { cr_assert((so_narrow_f16(x) & 0x7c00u) == 0x7c00u && (so_narrow_f16(x) & 0x3ffu)); continue; }
        cr_assert_eq(so_narrow_f16(x), rb, "narrow f16 %08x (%g): %04x, cpu %04x", u, x, so_narrow_f16(x), rb);
    }
    for (int i = 0; i < 100000; i++) {
        float x = uniform(-70000, 70000);
        cr_assert(same_bits(so_round_f16(x), k_round_f16(x)));
        cr_assert(same_bits(so_round_bf16(x), k_round_bf16(x)));
    }
}

// erf (so_erf, the CPU kernels' and the CUDA kernels': polynomials and exp arithmetic, not
// libm's): within 2 ulp of the double erf over every 1031st float pattern, and the edges:
// zeros, subnormals, the branch point, the clamp, infinities, NaN
Test(scalar_ops, erf_is_accurate) {
    double worst = 0;
    for (uint64_t v = 0; v <= 0xffffffffu + 1031ull; v += 1031) {
        uint32_t u;
        float x = sweep_float(v, &u);
        float k = so_erf(x);
        if (isnan(x)) { cr_assert(isnan(k)); continue; }
        double t = erf((double)x);
        float tf = (float)t;
        double ulp = fabsf(tf) == 1 ? 0x1p-24 : fabsf(tf) < 0x1p-126f ? 0x1p-149 : nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
        double e = fabs(k - t) / ulp;
        if (e > worst) worst = e;
        cr_assert(e <= 2, "erf(%a) = %a, double %a: %.2f ulp", x, k, t, e);
        cr_assert(signbit(k) == signbit(x), "erf(%a) = %a: sign", x, k);
    }
    const float edge[] = { 0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, 0.921875f, -0.921875f, 0x1.d7ffffp-1f, 3.9f, 4.5f, 4.6f,
                           3.4028235e38f, -3.4028235e38f, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        float x = edge[i];
        double t = erf((double)x);
        cr_assert(fabs(so_erf(x) - t) <= 0x1p-23 * fabs(t) + 0x1p-149, "erf(%a) = %a, double %a", x, so_erf(x), t);
    }
    cr_assert(isnan(so_erf(NAN)) && isnan(so_erf(-NAN)));
    cr_assert(worst > 0.5, "the sweep reached %.2f ulp at most: did it run?", worst);
}

// exp (so_exp, the CPU kernels' and the CUDA kernels': a polynomial and two power-of-two
// factors, not libm's), over every 1031st float pattern and the edges: within 1.5 ulp of the
// double exp where the result is normal, within one unit of the last place where it is
// subnormal, 0 below -104, inf above the largest float's log, NaN in NaN out
Test(scalar_ops, exp_is_accurate) {
    double worst = 0;
    for (uint64_t v = 0; v <= 0xffffffffu + 1031ull; v += 1031) {
        uint32_t u;
        float x = sweep_float(v, &u);
        float k = so_exp(x);
        if (isnan(x)) { cr_assert(isnan(k)); continue; }
        double t = exp((double)x);
        if (t > 0x1.fffffep127) { cr_assert(isinf(k) && k > 0, "exp(%a) = %a: overflow", x, k); continue; }
        if (t < 0x1p-149 / 2) { cr_assert(k == 0 || k == 0x1p-149f, "exp(%a) = %a: underflow", x, k); continue; }
        if (t < 0x1p-126) { cr_assert(fabs(k - t) <= 0x1p-149, "exp(%a) = %a, double %a: subnormal", x, k, t); continue; }
        float tf = (float)t;
        double ulp = nextafterf(tf, INFINITY) - tf;
        double e = fabs(k - t) / ulp;
        if (e > worst) worst = e;
        cr_assert(e <= 1.5, "exp(%a) = %a, double %a: %.2f ulp", x, k, t, e);
    }
    const float edge[] = { 0.0f, -0.0f, 1e-45f, -1e-45f, 1.0f, -1.0f, 88.72f, 88.73f, 89.0f, -87.3f, -103.9f, -104.0f,
                           -150.0f, 3.4028235e38f, -3.4028235e38f, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        float x = edge[i];
        double t = exp((double)x);
        cr_assert(t > 0x1.fffffep127 ? isinf(so_exp(x)) : fabs(so_exp(x) - t) <= 0x1p-23 * t + 0x1p-149,
                  "exp(%a) = %a, double %a", x, so_exp(x), t);
    }
    cr_assert(same_bits(so_exp(0.0f), 1.0f) && same_bits(so_exp(-INFINITY), 0.0f));
    cr_assert(isnan(so_exp(NAN)) && isnan(so_exp(-NAN)));
    cr_assert(worst > 0.5, "the sweep reached %.2f ulp at most: did it run?", worst);
}

// tanh (so_tanh, the CPU kernels' and the CUDA kernels': a polynomial and exp arithmetic,
// not libm's): within 2 ulp of the double tanh, over every 1031st float pattern (all
// exponents, both signs) and the edges: zeros, subnormals, the branch point, where it
// rounds to 1, huge values, infinities, NaN
Test(scalar_ops, tanh_is_accurate) {
    double worst = 0;
    for (uint64_t v = 0; v <= 0xffffffffu + 1031ull; v += 1031) {
        uint32_t u;
        float x = sweep_float(v, &u);
        float k = so_tanh(x);
        if (isnan(x)) { cr_assert(isnan(k)); continue; }
        double t = tanh((double)x);
        float tf = (float)t;
        double ulp = fabsf(tf) == 1 ? 0x1p-24 : nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
        double e = fabs(k - t) / ulp;
        if (e > worst) worst = e;
        cr_assert(e <= 2, "tanh(%a) = %a, double %a: %.2f ulp", x, k, t, e);
        cr_assert(signbit(k) == signbit(x), "tanh(%a) = %a: sign", x, k);
    }
    const float edge[] = { 0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, 0.5493f, -0.5493f, 0x1.193ddap-1f, 9.01f, 9.02f,
                           10.0f, 88.7f, 3.4028235e38f, -3.4028235e38f, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        float x = edge[i];
        cr_assert(same_bits(so_tanh(x), tanhf(x)) || fabs(so_tanh(x) - tanh((double)x)) <= 0x1p-24 * fabs(tanh((double)x)),
                  "tanh(%a) = %a, libm %a", x, so_tanh(x), tanhf(x));
    }
    cr_assert(isnan(so_tanh(NAN)) && isnan(so_tanh(-NAN)));
    cr_assert(worst > 0.5, "the sweep reached %.2f ulp at most: did it run?", worst);
}

Test(scalar_ops, activations_match_cpu_kernels) {
    static float x[N], y[N], dy[N], dx[N], ys[N], dxs[N];
    for (int i = 0; i < N; i++) { x[i] = uniform(-8, 8); dy[i] = uniform(-1, 1); }
    k_relu_forward_f32(y, x, N);
    memset(dx, 0, sizeof dx);
    k_relu_backward_f32(dx, dy, y, N, 1);
    for (int i = 0; i < N; i++) {
        ys[i] = so_relu(x[i]);
        dxs[i] = 0 + so_relu_grad(dy[i], ys[i]);
        cr_assert(same_bits(ys[i], y[i]) && same_bits(dxs[i], dx[i]), "relu at %d", i);
    }
    k_sigmoid_forward_f32(y, x, N);
    memset(dx, 0, sizeof dx);
    k_sigmoid_backward_f32(dx, dy, y, N, 1);
    for (int i = 0; i < N; i++) {
        ys[i] = so_sigmoid(x[i]);
        dxs[i] = 0 + so_sigmoid_grad(dy[i], ys[i]);
        cr_assert(same_bits(ys[i], y[i]) && same_bits(dxs[i], dx[i]), "sigmoid at %d", i);
    }
    // tanh reads the output; silu and gelu (both forms) the input
    k_tanh_forward_f32(y, x, N);
    memset(dx, 0, sizeof dx);
    k_tanh_backward_f32(dx, dy, y, N, 1);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(so_tanh(x[i]), y[i]) && same_bits(0 + so_tanh_grad(dy[i], y[i]), dx[i]), "tanh at %d", i);
    k_silu_forward_f32(y, x, N);
    memset(dx, 0, sizeof dx);
    k_silu_backward_f32(dx, dy, x, N, 1);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(so_silu(x[i]), y[i]) && same_bits(0 + so_silu_grad(dy[i], x[i]), dx[i]), "silu at %d", i);
    for (int approx = 0; approx < 2; approx++) {
        k_gelu_forward_f32(y, x, N, approx);
        memset(dx, 0, sizeof dx);
        k_gelu_backward_f32(dx, dy, x, N, approx, 1);
        for (int i = 0; i < N; i++) {
            float f = approx ? so_gelu_tanh(x[i]) : so_gelu(x[i]);
            float d = 0 + (approx ? so_gelu_tanh_grad(dy[i], x[i]) : so_gelu_grad(dy[i], x[i]));
            cr_assert(same_bits(f, y[i]) && same_bits(d, dx[i]), "gelu (tanh %d) at %d", approx, i);
        }
    }
}

// add, sub, mul, div: each form of the CPU kernels (equal shapes, rows, broadcast,
// scalar on either side) against scalar_ops' value and partial derivatives, the
// reductions of broadcast gradients summed in the CPU's order
typedef float (*so_fwd)(float, float);
typedef float (*so_bwd)(float, float, float);
Test(scalar_ops, arithmetic_matches_cpu_kernels) {
    enum { M = 7, K = 13, MK = M * K };
    static float a[MK], b[MK], r[K], y[MK], dy[MK], da[MK], db[MK], dr[K];
    for (int i = 0; i < MK; i++) { a[i] = uniform(-4, 4); b[i] = uniform(0.25f, 3); dy[i] = uniform(-1, 1); }
    for (int k = 0; k < K; k++) r[k] = uniform(0.5f, 2);
    const float s = 1.7f;
    struct { const char *name; so_fwd f; so_bwd fa, fb; } op[] = {
        { "add", so_add, so_add_da, so_add_db }, { "sub", so_sub, so_sub_da, so_sub_db },
        { "mul", so_mul, so_mul_da, so_mul_db }, { "div", so_div, so_div_da, so_div_db },
    };
    for (int o = 0; o < 4; o++) {
        float want_da, want_db;
        // equal shapes
        memset(da, 0, sizeof da); memset(db, 0, sizeof db);
        switch (o) {
        case 0: k_add_forward_f32(y, a, b, MK); k_add_backward_f32(da, db, dy, a, b, MK, 1, 1); break;
        case 1: k_sub_forward_f32(y, a, b, MK); k_sub_backward_f32(da, db, dy, a, b, MK, 1, 1); break;
        case 2: k_mul_forward_f32(y, a, b, MK); k_mul_backward_f32(da, db, dy, a, b, MK, 1, 1); break;
        default: k_div_forward_f32(y, a, b, MK); k_div_backward_f32(da, db, dy, a, b, MK, 1, 1); break;
        }
        for (int i = 0; i < MK; i++) {
            want_da = 0 + op[o].fa(dy[i], a[i], b[i]);
            want_db = 0 + op[o].fb(dy[i], a[i], b[i]);
            cr_assert(same_bits(op[o].f(a[i], b[i]), y[i]) && same_bits(want_da, da[i]) && same_bits(want_db, db[i]),
                      "%s at %d", op[o].name, i);
        }
        // rows: a (M, K) op r (K); r's gradient summed over rows in order
        memset(da, 0, sizeof da); memset(dr, 0, sizeof dr);
        switch (o) {
        case 0: k_add_row_forward_f32(y, a, r, M, K); k_add_row_backward_f32(da, dr, dy, a, r, M, K); break;
        case 1: k_sub_row_forward_f32(y, a, r, M, K); k_sub_row_backward_f32(da, dr, dy, a, r, M, K); break;
        case 2: k_mul_row_forward_f32(y, a, r, M, K); k_mul_row_backward_f32(da, dr, dy, a, r, M, K); break;
        default: k_div_row_forward_f32(y, a, r, M, K); k_div_row_backward_f32(da, dr, dy, a, r, M, K); break;
        }
        for (int k = 0; k < K; k++) {
            float sum = 0;
            for (int m = 0; m < M; m++) {
                int i = m * K + k;
                sum = sum + op[o].fb(dy[i], a[i], r[k]);
                cr_assert(same_bits(op[o].f(a[i], r[k]), y[i]) && same_bits(0 + op[o].fa(dy[i], a[i], r[k]), da[i]),
                          "%s rows at %d", op[o].name, i);
            }
            cr_assert(same_bits(sum, dr[k]), "%s rows: gradient of the row operand at %d", op[o].name, k);
        }
        // a scalar on the right, and (sub, div) on the left
        memset(da, 0, sizeof da);
        switch (o) {
        case 0: k_add_scalar_forward_f32(y, a, s, MK); k_add_scalar_backward_f32(da, dy, a, s, MK); break;
        case 1: k_sub_scalar_forward_f32(y, a, s, MK); k_sub_scalar_backward_f32(da, dy, a, s, MK); break;
        case 2: k_mul_scalar_forward_f32(y, a, s, MK); k_mul_scalar_backward_f32(da, dy, a, s, MK); break;
        default: k_div_scalar_forward_f32(y, a, s, MK); k_div_scalar_backward_f32(da, dy, a, s, MK); break;
        }
        for (int i = 0; i < MK; i++)
            cr_assert(same_bits(op[o].f(a[i], s), y[i]) && same_bits(0 + op[o].fa(dy[i], a[i], s), da[i]), "%s scalar at %d",
                      op[o].name, i);
        if (o == 1 || o == 3) {
            memset(da, 0, sizeof da);
            if (o == 1) { k_rsub_scalar_forward_f32(y, b, s, MK); k_rsub_scalar_backward_f32(da, dy, b, s, MK); }
            else { k_rdiv_scalar_forward_f32(y, b, s, MK); k_rdiv_scalar_backward_f32(da, dy, b, s, MK); }
            for (int i = 0; i < MK; i++)
                cr_assert(same_bits(op[o].f(s, b[i]), y[i]) && same_bits(0 + op[o].fb(dy[i], s, b[i]), da[i]),
                          "%s scalar_left at %d", op[o].name, i);
        }
    }
    // general broadcast: a (M, 1, K) op b (3, 1) -> (M, 3, K); both gradients summed
    // over their broadcast dims, in the CPU's order
    enum { J = 3 };
    static float bb[J], y3[M * J * K], dy3[M * J * K], dbb[J];
    for (int j = 0; j < J; j++) bb[j] = uniform(0.5f, 2);
    for (int i = 0; i < M * J * K; i++) dy3[i] = uniform(-1, 1);
    k_bcast_dims d = { 3, { M, J, K }, { K, 0, 1 }, { 0, 1, 0 } };
    memset(da, 0, sizeof da); memset(dbb, 0, sizeof dbb);
    k_mul_bcast_forward_f32(y3, a, bb, &d);
    k_mul_bcast_backward_f32(da, dbb, dy3, a, bb, &d);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            float sum = 0;
            for (int j = 0; j < J; j++) {
                int i = (m * J + j) * K + k;
                cr_assert(same_bits(so_mul(a[m * K + k], bb[j]), y3[i]), "mul broadcast at %d", i);
                sum = sum + so_mul_da(dy3[i], a[m * K + k], bb[j]);
            }
            cr_assert(same_bits(sum, da[m * K + k]), "mul broadcast: gradient of a at %d,%d", m, k);
        }
    for (int j = 0; j < J; j++) {
        float sum = 0;
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) sum = sum + so_mul_db(dy3[(m * J + j) * K + k], a[m * K + k], bb[j]);
        cr_assert(same_bits(sum, dbb[j]), "mul broadcast: gradient of b at %d", j);
    }
}

Test(scalar_ops, losses_match_cpu_kernels) {
    static float p[N], t[N], l[N], dp[N];
    for (int i = 0; i < N; i++) { p[i] = i % 97 == 0 ? 0.0f : uniform(0, 1); t[i] = uniform(0, 1); }
    p[5] = 1.0f;
    float loss[N];
    k_bce_forward_f32(loss, p, t, N, K_REDUCTION_NONE);
    float g = 0.37f;
    for (int i = 0; i < N; i++) l[i] = g;
    memset(dp, 0, sizeof dp);
    k_bce_backward_f32(dp, l, p, t, N, K_REDUCTION_NONE);
    for (int i = 0; i < N; i++) {
        cr_assert(same_bits(so_bce(p[i], t[i]), loss[i]), "bce at %d", i);
        cr_assert(same_bits(0 + so_bce_grad(g, p[i], t[i]), dp[i]), "bce grad at %d", i);
    }
    // cross entropy: the gradient from the log-probabilities the forward saves
    enum { R = 37, C = 10 };
    static float logits[R * C], logp[R * C], dl[R * C];
    int64_t target[R];
    for (int i = 0; i < R * C; i++) logits[i] = uniform(-5, 5);
    for (int r = 0; r < R; r++) target[r] = r % 7 == 3 ? -100 : (int64_t)(next_u32() % C);
    float mean;
    k_cross_entropy_forward_f32(&mean, logp, logits, target, NULL, R, C, 1, -100, 0.1f, K_REDUCTION_MEAN);
    memset(dl, 0, sizeof dl);
    float one = 1;
    k_cross_entropy_backward_f32(dl, &one, logp, logits, target, NULL, R, C, 1, -100, 0.1f, K_REDUCTION_MEAN);
    double count = 0;
    for (int r = 0; r < R; r++) count += target[r] != -100;
    float gm = (float)(1.0 / count);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float want = target[r] == -100 ? 0 : 0 + so_ce_grad(gm, logp[r * C + c], so_ce_q(c == target[r], 0.1f, C));
            cr_assert(same_bits(want, dl[r * C + c]), "cross entropy grad at %d,%d", r, c);
        }
    // (N, C, S) logits, S > 1 (a language model's (B, V, T)): along S, sum reduction, no smoothing
    enum { NB = 3, CS = 9, S = 21 };
    static float lg3[NB * CS * S], lp3[NB * CS * S], dl3[NB * CS * S];
    int64_t t3[NB * S];
    for (int i = 0; i < NB * CS * S; i++) lg3[i] = uniform(-5, 5);
    for (int i = 0; i < NB * S; i++) t3[i] = i % 5 == 2 ? -100 : (int64_t)(next_u32() % CS);
    float sum, g3 = 0.625f;
    k_cross_entropy_forward_f32(&sum, lp3, lg3, t3, NULL, NB, CS, S, -100, 0, K_REDUCTION_SUM);
    memset(dl3, 0, sizeof dl3);
    k_cross_entropy_backward_f32(dl3, &g3, lp3, lg3, t3, NULL, NB, CS, S, -100, 0, K_REDUCTION_SUM);
    for (int n = 0; n < NB; n++)
        for (int c = 0; c < CS; c++)
            for (int s3 = 0; s3 < S; s3++) {
                const int64_t t = t3[n * S + s3];
                const int j = (n * CS + c) * S + s3;
                float want = t == -100 ? 0 : 0 + so_ce_grad(g3, lp3[j], so_ce_q(c == t, 0, CS));
                cr_assert(same_bits(want, dl3[j]), "cross entropy (N, C, S) grad at %d,%d,%d", n, c, s3);
            }
}

Test(scalar_ops, batch_norm_matches_cpu_kernels) {
    enum { NB = 5, C = 3, S = 17 };
    static float x[NB * C * S], y[NB * C * S], dy[NB * C * S], dx[NB * C * S], w[C], b[C], mean[C], invstd[C], dw[C], db[C];
    for (int i = 0; i < NB * C * S; i++) { x[i] = uniform(-3, 3); dy[i] = uniform(-1, 1); }
    for (int c = 0; c < C; c++) { w[c] = uniform(0.5f, 1.5f); b[c] = uniform(-1, 1); }
    k_batch_norm_forward_train_f32(y, mean, invstd, NULL, NULL, NULL, x, w, b, NB, C, S, 1e-5f, 0.1f);
    memset(dx, 0, sizeof dx); memset(dw, 0, sizeof dw); memset(db, 0, sizeof db);
    k_batch_norm_backward_f32(dx, dw, db, dy, x, w, mean, invstd, NB, C, S, 1, 1);
    for (int c = 0; c < C; c++) {
        // the reductions as the CPU does them (in double), the elementwise parts from scalar_ops
        double sdy = 0, sdyx = 0;
        for (int n = 0; n < NB; n++)
            for (int s = 0; s < S; s++) {
                size_t i = ((size_t)n * C + c) * S + s;
                cr_assert(same_bits(so_bn_apply(x[i], mean[c], w[c] * invstd[c], b[c]), y[i]), "bn forward at %zu", i);
                sdy += dy[i];
                sdyx += (double)dy[i] * (x[i] - mean[c]);
            }
        sdyx *= invstd[c];
        float k = w[c] * invstd[c], mdy = (float)(sdy / (NB * S)), mdyx = (float)(sdyx / (NB * S));
        for (int n = 0; n < NB; n++)
            for (int s = 0; s < S; s++) {
                size_t i = ((size_t)n * C + c) * S + s;
                float got = 0 + so_bn_grad(dy[i], x[i], mean[c], invstd[c], k, mdy, mdyx);
                cr_assert(fabsf(got - dx[i]) <= 1e-6f * (1 + fabsf(dx[i])), "bn backward at %zu: %g vs %g", i, got, dx[i]);
            }
    }
}

// The AdamW step the C backend emits (gen/emit_train.lua, optimizer_code), transcribed,
// against so_adam with the same float constants.
Test(scalar_ops, adamw_matches_emitted_update) {
    const double lr = 1e-3, wd = 0.01, beta1 = 0.9;
    for (int64_t step = 0; step < 5; step++) {
        const double bc1 = 1.0 - pow(beta1, (double)(step + 1)), bc2 = 1.0 - pow(0.999, (double)(step + 1));
        so_adam_consts c = { (float)(1.0 - lr * wd), 0, (float)(1.0 - beta1), 0.999f, 0.0010000000000000009f,
                             (float)(lr / bc1), (float)sqrt(bc2), 1e-08f };
        for (int i = 0; i < 1000; i++) {
            float p = uniform(-1, 1), m = uniform(-0.1f, 0.1f), v = uniform(0, 0.01f), g = uniform(-1, 1);
            float p2 = p, m2 = m, v2 = v;
            // emitted:
            p *= c.decay;
            m += c.one_minus_beta1 * (g - m);
            v = 0.999f * v + 0.0010000000000000009f * g * g;
            float denom = sqrtf(v) / c.bc2_sqrt + 1e-08f;
            p -= c.step_size * m / denom;
            so_adam(&p2, &m2, &v2, g, &c);
            cr_assert(same_bits(p, p2) && same_bits(m, m2) && same_bits(v, v2), "adamw step %lld element %d", (long long)step, i);
        }
    }
}

// SGD: so_sgd against the CPU kernel k_sgd_step_f32, every combination of momentum,
// dampening, nesterov, weight_decay and maximize, first step and later ones
Test(scalar_ops, sgd_matches_cpu_kernel) {
    enum { M = 1037 };
    static float p[M], g[M], buf[M], p2[M], buf2[M];
    const double lrs[] = { 0.1, 0.013 }, moms[] = { 0, 0.9 }, damps[] = { 0, 0.1 }, wds[] = { 0, 1e-3 };
    for (int combo = 0; combo < 2 * 2 * 2 * 2 * 2 * 2; combo++) {
        double lr = lrs[combo & 1], mom = moms[(combo >> 1) & 1], damp = damps[(combo >> 2) & 1], wd = wds[(combo >> 3) & 1];
        int nesterov = (combo >> 4) & 1, maximize = (combo >> 5) & 1;
        for (int i = 0; i < M; i++) { p[i] = p2[i] = uniform(-1, 1); buf[i] = buf2[i] = 0; }
        for (int step = 0; step < 3; step++) {
            for (int i = 0; i < M; i++) g[i] = uniform(-1, 1);
            k_sgd_step_f32(p, g, mom != 0 ? buf : NULL, M, lr, mom, damp, wd, nesterov, maximize, step == 0);
            so_sgd_consts c = { (float)lr, (float)mom, (float)(1 - damp), (float)wd, wd != 0, mom != 0, nesterov, maximize, step == 0 };
            for (int i = 0; i < M; i++) so_sgd(&p2[i], &buf2[i], g[i], &c);
            for (int i = 0; i < M; i++)
                cr_assert(same_bits(p[i], p2[i]) && (mom == 0 || same_bits(buf[i], buf2[i])),
                          "sgd combo %d step %d element %d: %a vs %a", combo, step, i, p[i], p2[i]);
        }
    }
}

// clipping: the norm's terms summed in the CPU's order give k_grad_norm_f32's sum; the
// coefficient and the scaling equal k_scale_f32; by value equals k_clamp_f32
Test(scalar_ops, clipping_matches_cpu_kernels) {
    static float g[N], a[N], b[N];
    for (int i = 0; i < N; i++) g[i] = uniform(-2, 2);
    g[7] = NAN; g[8] = INFINITY; g[9] = -INFINITY;
    double s = 0;
    for (int i = 10; i < N; i++) s += so_norm_sq(g[i]);
    cr_assert(s == k_grad_norm_f32(g + 10, N - 10), "sum of squares");
    double mx = 0, sp = 0;
    for (int i = 10; i < N; i++) { mx = fmax(mx, so_norm_abs(g[i])); sp += so_norm_pow(g[i], 3.0); }
    double mx2 = 0, sp2 = 0;
    for (int i = 10; i < N; i++) { mx2 = fmax(mx2, fabs((double)g[i])); sp2 += pow(fabs((double)g[i]), 3.0); }
    cr_assert(mx == mx2 && sp == sp2, "inf and 3-norm terms");
    double coef = so_clip_coef(sqrt(s), 0.5);
    cr_assert(coef == 0.5 / (sqrt(s) + 1e-6));
    memcpy(a, g, sizeof g);
    k_scale_f32(a, N, coef);
    for (int i = 0; i < N; i++) cr_assert(same_bits(a[i], so_clip_scale(g[i], (float)coef)), "scale at %d", i);
    const float vs[] = { 0.002f, 0.5f, 1.0f };
    for (int j = 0; j < 3; j++) {
        memcpy(a, g, sizeof g);
        k_clamp_f32(a, N, -(double)vs[j], (double)vs[j]);
        for (int i = 0; i < N; i++) {
            float x = g[i];
            b[i] = x > vs[j] ? vs[j] : (x < -vs[j] ? -vs[j] : x);   // the C backend's emitted clip_gradients
            cr_assert(same_bits(a[i], so_clip_value(g[i], vs[j])) && same_bits(b[i], so_clip_value(g[i], vs[j])), "clamp at %d", i);
        }
    }
}

// dropout: the Philox stream reimplemented without stdint equals runtime/philox.h, and
// the mask and scaling equal k_dropout_forward_f32 / k_dropout_backward_f32
Test(scalar_ops, dropout_matches_cpu_kernels) {
    const uint64_t seeds[] = { 0, 42, 0x123456789abcdefull };
    for (int s = 0; s < 3; s++)
        for (uint64_t i = 0; i < 20000; i++) {
            uint64_t stream = ((uint64_t)(i % 7) << 20) | (i % 5), at = i % 3 == 0 ? i : i * 0x9e3779b97ull;
            cr_assert(same_bits(so_philox_uniform_at(seeds[s], stream, at), philox_uniform_at(seeds[s], stream, at)), "philox %llu", (unsigned long long)i);
        }
    static float x[N], y[N], dy[N], dx[N];
    const float ps[] = { 0.1f, 0.5f, 0.9f, 1.0f };
    for (int j = 0; j < 4; j++) {
        uint64_t seed = 1234 + j, stream = (uint64_t)(j + 3) << 20 | 17u;
        for (int i = 0; i < N; i++) { x[i] = uniform(-3, 3); dy[i] = uniform(-1, 1); dx[i] = uniform(-1, 1); }
        float dx0[N];
        memcpy(dx0, dx, sizeof dx);
        k_dropout_forward_f32(y, x, N, ps[j], seed, stream);
        k_dropout_backward_f32(dx, dy, N, ps[j], seed, stream);
        float scale = so_dropout_scale(ps[j]);
        int kept = 0;
        for (int i = 0; i < N; i++) {
            int keep = so_dropout_keep(seed, stream, (so_u64)i, ps[j]);
            kept += keep;
            cr_assert(same_bits(y[i], so_dropout(x[i], keep, scale)), "dropout p=%g at %d", ps[j], i);
            float want = dx0[i];
            if (keep) want += so_dropout(dy[i], keep, scale);
            cr_assert(same_bits(dx[i], want), "dropout backward p=%g at %d", ps[j], i);
        }
        cr_assert(j < 3 || kept == 0);
    }
}

// ---------------------------------------------------------------------------
// layer norm, softmax, avg_pool2d's divisor and the remaining losses (gen/ops_cuda.lua's
// rules for them); each reduction as the CPU kernel does it, the per-element parts here

Test(scalar_ops, layer_norm_matches_cpu_kernels) {
    enum { R = 7, D = 37 };
    static float x[R * D], y[R * D], y0[R * D], dy[R * D], dx[R * D], w[D], b[D], dw[D], db[D], mean[R], rstd[R];
    for (int i = 0; i < R * D; i++) { x[i] = uniform(-3, 3); dy[i] = uniform(-1, 1); }
    for (int i = 0; i < D; i++) { w[i] = uniform(0.5f, 1.5f); b[i] = uniform(-1, 1); }
    k_layer_norm_forward_f32(y, mean, rstd, x, w, b, R, D, 1e-5f);
    k_layer_norm_forward_f32(y0, NULL, NULL, x, NULL, NULL, R, D, 1e-5f);   // no affine
    memset(dx, 0, sizeof dx); memset(dw, 0, sizeof dw); memset(db, 0, sizeof db);
    k_layer_norm_backward_f32(dx, dw, db, dy, x, w, mean, rstd, R, D);
    for (int r = 0; r < R; r++) {
        // the kernel's order: K_LN_LANES lane sums (lane l: elements l, l + K_LN_LANES, ...), then the tail
        double l1[K_LN_LANES] = {0}, l2[K_LN_LANES] = {0}, s1 = 0, s2 = 0;
        const int full = D / K_LN_LANES * K_LN_LANES;
        for (int i = 0; i < D; i++) {
            int j = r * D + i;
            cr_assert(same_bits(so_ln_apply(x[j], mean[r], rstd[r], w[i], b[i]), y[j]), "layer norm at %d", j);
            cr_assert(same_bits(so_ln_apply(x[j], mean[r], rstd[r], 1, 0), y0[j]), "layer norm without affine at %d", j);
            if (i < full) {
                float g = dy[j] * w[i];
                l1[i % K_LN_LANES] += g;
                l2[i % K_LN_LANES] += so_ln_term(g, x[j], mean[r], rstd[r]);
            }
        }
        for (int l = 0; l < K_LN_LANES; l++) { s1 += l1[l]; s2 += l2[l]; }
        for (int i = full; i < D; i++) {
            float g = dy[r * D + i] * w[i];
            s1 += g;
            s2 += so_ln_term(g, x[r * D + i], mean[r], rstd[r]);
        }
        float m1 = (float)(s1 / D), m2 = (float)(s2 / D);
        for (int i = 0; i < D; i++) {
            int j = r * D + i;
            cr_assert(same_bits(0 + so_ln_grad(dy[j] * w[i], x[j], mean[r], rstd[r], m1, m2), dx[j]), "layer norm dx at %d", j);
        }
    }
    for (int i = 0; i < D; i++) {
        float sw = 0, sb = 0;
        for (int r = 0; r < R; r++) { sw += so_ln_term(dy[r * D + i], x[r * D + i], mean[r], rstd[r]); sb += dy[r * D + i]; }
        cr_assert(same_bits(sw, dw[i]) && same_bits(sb, db[i]), "layer norm dw, db at %d", i);
    }
}

// softmax and log_softmax over (O, D, IN): the kernels' maxima, sums along d in order
// (the CUDA kernels' thread per column) and so_exp: rows (IN = 1, exponentials in
// vectors), columns fewer than a block, and past one block of K_SM_CB columns
static void check_softmax(int O, int D, int IN) {
    const int n = O * D * IN;
    float *x = malloc(sizeof(float) * 6 * n), *y = x + n, *ly = y + n, *dy = ly + n, *dx = dy + n, *ldx = dx + n;
    for (int i = 0; i < n; i++) { x[i] = uniform(-6, 6); dy[i] = uniform(-1, 1); }
    x[IN] = -INFINITY;   // a masked entry
    k_softmax_forward_f32(y, x, O, D, IN);
    k_log_softmax_forward_f32(ly, x, O, D, IN);
    memset(dx, 0, sizeof(float) * n); memset(ldx, 0, sizeof(float) * n);
    k_softmax_backward_f32(dx, dy, y, O, D, IN);
    k_log_softmax_backward_f32(ldx, dy, ly, O, D, IN);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < IN; i++) {
            const int base = o * D * IN + i;
            float mx = -INFINITY, s = 0, ls = 0, gy = 0, gs = 0;
            for (int d = 0; d < D; d++) if (x[base + d * IN] > mx) mx = x[base + d * IN];
            for (int d = 0; d < D; d++) { s += so_exp_shifted(x[base + d * IN], mx); ls += so_exp_shifted(x[base + d * IN], mx); }
            for (int d = 0; d < D; d++) {
                const int j = base + d * IN;
                cr_assert(same_bits(so_exp_shifted(x[j], mx) * (1 / s), y[j]), "softmax (%d, %d, %d) at %d", O, D, IN, j);
                cr_assert(same_bits(so_log_softmax(x[j], mx, ls), ly[j]), "log_softmax (%d, %d, %d) at %d", O, D, IN, j);
                gy += dy[j] * y[j];
                gs += dy[j];
            }
            for (int d = 0; d < D; d++) {
                const int j = base + d * IN;
                cr_assert(same_bits(0 + so_softmax_grad(dy[j], y[j], gy), dx[j]), "softmax grad (%d, %d, %d) at %d", O, D, IN, j);
                cr_assert(same_bits(0 + so_log_softmax_grad(dy[j], ly[j], gs), ldx[j]), "log_softmax grad (%d, %d, %d) at %d", O, D, IN, j);
            }
        }
    free(x);
}
Test(scalar_ops, softmax_matches_cpu_kernels) {
    check_softmax(3, 11, 5);
    check_softmax(4, 300, 1);    // rows: lane maxima, exponentials in blocks of K_SM_CB
    check_softmax(2, 13, K_SM_CB + 7);
}

Test(scalar_ops, avg_pool_divisor_matches_cpu_kernel) {
    for (int it = 0; it < 2000; it++) {
        k_pool2d_dims d = { 1, 1, 3 + (int)(next_u32() % 9), 3 + (int)(next_u32() % 9), 1 + (int)(next_u32() % 4), 1 + (int)(next_u32() % 4),
                            1 + (int)(next_u32() % 3), 1 + (int)(next_u32() % 3), 0, 0, 1, 1, 0, 0, (int)(next_u32() % 2) };
        d.PH = (int)(next_u32() % (d.KH / 2 + 1)); d.PW = (int)(next_u32() % (d.KW / 2 + 1));
        d.OH = (d.H + 2 * d.PH - d.KH + d.SH - 1) / d.SH + 1;   // ceil mode's extra window included
        d.OW = (d.W + 2 * d.PW - d.KW + d.SW - 1) / d.SW + 1;
        for (int oh = 0; oh < d.OH; oh++)
            for (int ow = 0; ow < d.OW; ow++) {
                int h0, h1, w0, w1, div;
                k_avg_pool2d_window_f32(&d, oh, ow, &h0, &h1, &w0, &w1, &div);
                cr_assert_eq(so_avg_pool_divisor(oh * d.SH - d.PH, ow * d.SW - d.PW, d.KH, d.KW, d.H, d.W, d.PH, d.PW, d.count_include_pad), div);
            }
    }
}

Test(scalar_ops, more_losses_match_cpu_kernels) {
    static float x[N], t[N], l[N], g[N], dx[N];
    for (int i = 0; i < N; i++) { x[i] = uniform(-20, 20); t[i] = uniform(0, 1); g[i] = uniform(-1, 1); }
    x[3] = 0; t[3] = 0;   // l1's sign at 0
    float mean;
    k_bce_with_logits_forward_f32(l, x, t, N, K_REDUCTION_NONE);
    memset(dx, 0, sizeof dx);
    k_bce_with_logits_backward_f32(dx, g, x, t, N, K_REDUCTION_NONE);
    for (int i = 0; i < N; i++) {
        cr_assert(same_bits(so_bce_logits(x[i], t[i]), l[i]), "bce_with_logits at %d", i);
        cr_assert(same_bits(0 + so_bce_logits_grad(g[i], x[i], t[i]), dx[i]), "bce_with_logits grad at %d", i);
    }
    k_mse_forward_f32(l, x, t, N, K_REDUCTION_NONE);
    memset(dx, 0, sizeof dx);
    k_mse_backward_f32(dx, g, x, t, N, K_REDUCTION_NONE);
    for (int i = 0; i < N; i++) {
        cr_assert(same_bits(so_mse(x[i], t[i]), l[i]) && same_bits(0 + so_mse_grad(g[i], x[i], t[i]), dx[i]), "mse at %d", i);
    }
    k_l1_forward_f32(l, x, t, N, K_REDUCTION_NONE);
    memset(dx, 0, sizeof dx);
    k_l1_backward_f32(dx, g, x, t, N, K_REDUCTION_NONE);
    for (int i = 0; i < N; i++) {
        cr_assert(same_bits(so_l1(x[i], t[i]), l[i]) && same_bits(0 + so_l1_grad(g[i], x[i], t[i]), dx[i]), "l1 at %d", i);
    }
    // mean: the factor from the one dloss
    float one = 0.75f;
    memset(dx, 0, sizeof dx);
    k_mse_forward_f32(&mean, x, t, N, K_REDUCTION_MEAN);
    k_mse_backward_f32(dx, &one, x, t, N, K_REDUCTION_MEAN);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(0 + so_mse_grad(so_loss_grad(one, 1, (double)N), x[i], t[i]), dx[i]), "mse mean grad at %d", i);
    // cross entropy with probability targets (label smoothing 0.1)
    enum { R = 29, C = 7 };
    static float logits[R * C], tg[R * C], logp[R * C], dl[R * C];
    for (int i = 0; i < R * C; i++) { logits[i] = uniform(-5, 5); tg[i] = uniform(0, 1); }
    float loss;
    k_cross_entropy_soft_forward_f32(&loss, logp, logits, tg, NULL, R, C, 1, 0.1f, K_REDUCTION_MEAN);
    memset(dl, 0, sizeof dl);
    k_cross_entropy_soft_backward_f32(dl, &one, logp, logits, tg, NULL, R, C, 1, 0.1f, K_REDUCTION_MEAN);
    double total = 0;
    for (int r = 0; r < R; r++) {
        float lr = 0, qsum = 0;
        for (int c = 0; c < C; c++) { lr -= so_ce_soft_q(tg[r * C + c], 0.1f, C) * logp[r * C + c]; qsum += so_ce_soft_q(tg[r * C + c], 0.1f, C); }
        total += lr;
        float gr = so_loss_grad(one, 1, (double)R);
        for (int c = 0; c < C; c++) {
            float want = 0 + so_ce_soft_grad(gr, logp[r * C + c], qsum, so_ce_soft_q(tg[r * C + c], 0.1f, C));
            cr_assert(same_bits(want, dl[r * C + c]), "soft cross entropy grad at %d,%d", r, c);
        }
    }
    cr_assert(same_bits((float)(total / R), loss), "soft cross entropy loss");
}

// train.log's metrics on the device: abs (a pointwise op with its gradient), accuracy's
// argmax and threshold scoring, and log_reduce's max (a NaN wins) against the CPU's
Test(scalar_ops, metrics_match_cpu_kernels) {
    static float x[N], dy[N], y[N], dx[N];
    for (int i = 0; i < N; i++) { x[i] = i % 97 == 0 ? 0.0f : uniform(-4, 4); dy[i] = uniform(-1, 1); }
    k_abs_forward_f32(y, x, N, 0, 0);
    memset(dx, 0, sizeof dx);
    k_abs_backward_f32(dx, dy, x, N, 0, 0);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(so_abs(x[i]), y[i]) && same_bits(0 + so_abs_grad(dy[i], x[i]), dx[i]), "abs at %d", i);
    // rows of 5 classes with ties and NaNs: the argmax the CPU's accuracy scores
    enum { R = 400, C = 5 };
    static float rows[R * C], t[R * C];
    static int64_t label[R];
    for (int i = 0; i < R * C; i++) {
        rows[i] = (float)(int)uniform(-3, 3);   // integers: many ties
        if (i % 37 == 0) rows[i] = NAN;
        t[i] = uniform(0, 1);
    }
    int64_t right = 0;
    for (int r = 0; r < R; r++) {
        int best = 0;
        for (int c = 1; c < C; c++) if (so_argmax_takes(rows[r * C + c], rows[r * C + best])) best = c;
        label[r] = r % 3 == 0 ? best : (best + 1) % C;
        right += best == label[r];
    }
    float acc;
    k_accuracy_forward_f32(&acc, rows, label, NULL, R, C, 0);
    cr_assert(same_bits(acc, (float)((double)right / R)) && right == (R + 2) / 3, "accuracy by argmax: %g", acc);
    right = 0;
    for (int i = 0; i < R * C; i++) right += so_threshold_right(rows[i], 0.5f, t[i]);
    k_accuracy_forward_f32(&acc, rows, NULL, t, R, C, 0.5f);
    cr_assert(same_bits(acc, (float)((double)right / (R * C))), "accuracy by threshold: %g", acc);
    // max over batches: the CPU program's max_nan (gen/emit_train.lua)
    const double v[] = { 1, -2, NAN, 3, INFINITY };
    cr_assert(so_max_nan(1, -2) == 1 && so_max_nan(-2, 1) == 1 && isnan(so_max_nan(1, NAN)) && isnan(so_max_nan(NAN, 3)));
    double m = -INFINITY;
    for (int i = 0; i < 5; i++) m = so_max_nan(m, v[i]);
    cr_assert(isnan(m));
}

// the elementwise functions with constants (K_UNARY) and maximum / minimum / pow of two
// tensors (K_DEFINE_BINARY) against scalar_ops' so_u_* and so_maximum_* ...
typedef void (*k_unary_fwd)(float *, const float *, size_t, float, float);
typedef void (*k_unary_bwd)(float *, const float *, const float *, size_t, float, float);
typedef float (*so_unary)(float, float, float);
typedef float (*so_unary_grad)(float, float, float, float);
Test(scalar_ops, unary_and_binary_functions_match_cpu_kernels) {
    static float x[N], y[N], dy[N], dx[N], p[N];
    for (int i = 0; i < N; i++) { x[i] = uniform(-6, 6); p[i] = uniform(0.05f, 4); dy[i] = uniform(-1, 1); }
    x[0] = 0; x[1] = -3; x[2] = 3; x[3] = 0.6f; x[4] = -0.4f;   // kinks and edges
    struct { const char *name; k_unary_fwd kf; k_unary_bwd kb; so_unary f; so_unary_grad fg; float a, b; int positive, reads_out; } op[] = {
        { "leaky_relu", k_leaky_relu_forward_f32, k_leaky_relu_backward_f32, so_u_leaky_relu, so_u_leaky_relu_grad, 0.2f, 0, 0, 0 },
        { "elu", k_elu_forward_f32, k_elu_backward_f32, so_u_elu, so_u_elu_grad, 0.7f, 0, 0, 0 },
        { "mish", k_mish_forward_f32, k_mish_backward_f32, so_u_mish, so_u_mish_grad, 0, 0, 0, 0 },
        { "softplus", k_softplus_forward_f32, k_softplus_backward_f32, so_u_softplus, so_u_softplus_grad, 2, 1.5f, 0, 0 },
        { "hardswish", k_hardswish_forward_f32, k_hardswish_backward_f32, so_u_hardswish, so_u_hardswish_grad, 0, 0, 0, 0 },
        { "hardtanh", k_hardtanh_forward_f32, k_hardtanh_backward_f32, so_u_hardtanh, so_u_hardtanh_grad, -0.4f, 0.6f, 0, 0 },
        { "exp", k_exp_forward_f32, k_exp_backward_f32, so_u_exp, so_u_exp_grad, 0, 0, 0, 1 },
        { "log", k_log_forward_f32, k_log_backward_f32, so_u_log, so_u_log_grad, 0, 0, 1, 0 },
        { "sqrt", k_sqrt_forward_f32, k_sqrt_backward_f32, so_u_sqrt, so_u_sqrt_grad, 0, 0, 1, 1 },
        { "rsqrt", k_rsqrt_forward_f32, k_rsqrt_backward_f32, so_u_rsqrt, so_u_rsqrt_grad, 0, 0, 1, 1 },
        { "pow", k_pow_forward_f32, k_pow_backward_f32, so_u_pow, so_u_pow_grad, 1.7f, 0, 1, 0 },
        { "clamp", k_clamp_forward_f32, k_clamp_backward_f32, so_u_clamp, so_u_clamp_grad, -0.4f, 0.6f, 0, 0 },
    };
    for (size_t o = 0; o < sizeof op / sizeof op[0]; o++) {
        const float *in = op[o].positive ? p : x;
        op[o].kf(y, in, N, op[o].a, op[o].b);
        memset(dx, 0, sizeof dx);
        op[o].kb(dx, dy, op[o].reads_out ? y : in, N, op[o].a, op[o].b);
        for (int i = 0; i < N; i++) {
            const float s = op[o].reads_out ? y[i] : in[i];
            cr_assert(same_bits(op[o].f(in[i], op[o].a, op[o].b), y[i]) &&
                      same_bits(0 + op[o].fg(dy[i], s, op[o].a, op[o].b), dx[i]), "%s at %d (x = %g)", op[o].name, i, in[i]);
        }
    }
    static float b[N], da[N], db[N];
    for (int i = 0; i < N; i++) b[i] = i % 7 == 0 ? x[i] : uniform(-2, 2);   // ties
    struct { const char *name; void (*kf)(float *, const float *, const float *, size_t);
             void (*kb)(float *, float *, const float *, const float *, const float *, size_t, int, int);
             so_fwd f; so_bwd fa, fb; } bin[] = {
        { "maximum", k_maximum_forward_f32, k_maximum_backward_f32, so_maximum, so_maximum_da, so_maximum_db },
        { "minimum", k_minimum_forward_f32, k_minimum_backward_f32, so_minimum, so_minimum_da, so_minimum_db },
        { "pow_tensor", k_pow_tensor_forward_f32, k_pow_tensor_backward_f32, so_pow_tensor, so_pow_tensor_da, so_pow_tensor_db },
    };
    for (size_t o = 0; o < sizeof bin / sizeof bin[0]; o++) {
        const float *a = o == 2 ? p : x;
        bin[o].kf(y, a, b, N);
        memset(da, 0, sizeof da); memset(db, 0, sizeof db);
        bin[o].kb(da, db, dy, a, b, N, 1, 1);
        for (int i = 0; i < N; i++)
            cr_assert(same_bits(bin[o].f(a[i], b[i]), y[i]) && same_bits(0 + bin[o].fa(dy[i], a[i], b[i]), da[i]) &&
                      same_bits(0 + bin[o].fb(dy[i], a[i], b[i]), db[i]), "%s at %d", bin[o].name, i);
    }
}

// smooth L1, Huber and KL divergence (reduction none, each element's value and gradients)
Test(scalar_ops, constant_losses_match_cpu_kernels) {
    static float x[N], t[N], l[N], g[N], dx[N], dt[N];
    for (int i = 0; i < N; i++) { x[i] = uniform(-3, 3); t[i] = i % 11 == 0 ? 0.0f : uniform(-1, 2); g[i] = uniform(-1, 1); }
    const float c = 0.7f;
    k_smooth_l1_forward_f32(l, x, t, N, K_REDUCTION_NONE, c);
    memset(dx, 0, sizeof dx);
    k_smooth_l1_backward_f32(dx, g, x, t, N, K_REDUCTION_NONE, c);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(so_smooth_l1(x[i], t[i], c), l[i]) && same_bits(0 + so_smooth_l1_grad(g[i], x[i], t[i], c), dx[i]),
                  "smooth_l1 at %d", i);
    k_huber_forward_f32(l, x, t, N, K_REDUCTION_NONE, c);
    memset(dx, 0, sizeof dx);
    k_huber_backward_f32(dx, g, x, t, N, K_REDUCTION_NONE, c);
    for (int i = 0; i < N; i++)
        cr_assert(same_bits(so_huber(x[i], t[i], c), l[i]) && same_bits(0 + so_huber_grad(g[i], x[i], t[i], c), dx[i]),
                  "huber at %d", i);
    for (int lt = 0; lt < 2; lt++) {
        k_kl_div_forward_f32(l, x, t, N, K_REDUCTION_NONE, lt, N);
        memset(dx, 0, sizeof dx); memset(dt, 0, sizeof dt);
        k_kl_div_backward_f32(dx, dt, g, x, t, N, K_REDUCTION_NONE, lt, N);
        for (int i = 0; i < N; i++)
            cr_assert(same_bits(so_kl_div(x[i], t[i], (float)lt), l[i]) && same_bits(0 + so_kl_div_grad(g[i], x[i], t[i], (float)lt), dx[i]) &&
                      same_bits(0 + so_kl_div_dt(g[i], x[i], t[i], (float)lt), dt[i]), "kl_div (log_target %d) at %d", lt, i);
    }
}
