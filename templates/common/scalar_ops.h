// scalar_ops.h: the per-element arithmetic of loom's kernels, written once and
// compiled twice: as C by the CPU test suite (tests/test_scalar_ops.c checks every
// function here against the CPU kernels of templates/cpu/, bit for bit) and as CUDA C
// by NVRTC, where each fused kernel of the CUDA backend (gen/ops_cuda.lua) is a loop
// around these functions.  What the CPU tests prove about them holds on the GPU.  The
// CPU kernels include it too (templates/cpu/kernels.h), for the functions they share
// rather than mirror: so_tanh, so_erf, so_exp.
//
// No libc: NVRTC compiles this without any system header.  The math functions used
// (expf, logf, erff, sqrtf, fabs, fabsf, pow) are NVRTC built-ins; on the CPU the includer provides <math.h>.
// Storage formats as gen/precision.lua names them: f32 (float), bf16 and f16 (16-bit
// patterns in an unsigned short, converted here bit by bit, rounding to nearest even,
// so that the GPU needs neither cuda_bf16.h nor cuda_fp16.h and rounds as the CPU does).
#ifndef LOOM_SCALAR_OPS_H
#define LOOM_SCALAR_OPS_H

#if defined(__CUDACC_RTC__)
#define SO_FN static __device__ __forceinline__
#elif defined(__CUDACC__)
// nvcc: model.cu's host code converts too (parameters initialised in 16 bits)
#define SO_FN static __host__ __device__ __forceinline__
#else
#define SO_FN static inline
#endif

typedef unsigned int so_u32;
typedef unsigned short so_u16;

SO_FN so_u32 so_float_bits(float x) {
#if defined(__CUDACC_RTC__) || defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    union { float f; so_u32 u; } c;
    c.f = x;
    return c.u;
#endif
}
SO_FN float so_bits_float(so_u32 u) {
#if defined(__CUDACC_RTC__) || defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    union { float f; so_u32 u; } c;
    c.u = u;
    return c.f;
#endif
}

// ---------------------------------------------------------------------------
// formats: widen (to float, exact), narrow (from float, nearest even), round (both)

SO_FN float so_widen_f32(float x) { return x; }
SO_FN float so_narrow_f32(float x) { return x; }
SO_FN float so_round_f32(float x) { return x; }
// int64 tensors (masks, indices, comparisons' 0/1) read as float (exact below 2^24) and
// stored truncated, as the CPU promotes an integer compared with a float
SO_FN float so_widen_i64(long long x) { return (float)x; }
SO_FN long long so_narrow_i64(float x) { return (long long)x; }
SO_FN float so_round_i64(float x) { return x; }

SO_FN float so_widen_bf16(so_u16 h) { return so_bits_float((so_u32)h << 16); }
// NaN stays NaN (quiet), overflow gives inf
SO_FN so_u16 so_narrow_bf16(float x) {
    so_u32 u = so_float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (so_u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (so_u16)(u >> 16);
}
SO_FN float so_round_bf16(float x) { return so_widen_bf16(so_narrow_bf16(x)); }

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits
SO_FN float so_widen_f16(so_u16 h) {
    so_u32 sign = (so_u32)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (e == 0x1fu) return so_bits_float(sign | 0x7f800000u | (mant << 13));   // inf, NaN
    if (e == 0) {
        if (mant == 0) return so_bits_float(sign);
        // subnormal: mant * 2^-24, exact in float
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return so_bits_float(sign | ((e + 112u) << 23) | (mant << 13));
}
SO_FN so_u16 so_narrow_f16(float x) {
    so_u32 u = so_float_bits(x);
    so_u16 sign = (so_u16)((u >> 16) & 0x8000u);
    so_u32 a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (so_u16)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));   // NaN, quiet
    if (a >= 0x477ff000u) return (so_u16)(sign | 0x7c00u);   // rounds to >= 65520: inf
    if (a < 0x38800000u) {
        // below the smallest normal (2^-14): subnormal or zero, in units of 2^-24
        if (a < 0x33000000u) return sign;   // < 2^-25: rounds to 0 (2^-25 itself ties to even 0)
        so_u32 e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        so_u32 shift = 126u - e;   // value = m * 2^(e-150); in units of 2^-24: m >> (126 - e)
        so_u32 q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (so_u16)(sign | q);
    }
    // normal: drop 13 mantissa bits, nearest even (a carry into the exponent is right)
    so_u32 r = a - 0x38000000u;   // rebias 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);
    return (so_u16)(sign | (r >> 13));
}
SO_FN float so_round_f16(float x) { return so_widen_f16(so_narrow_f16(x)); }

// A value as a kernel of its own would leave it: a fused kernel passes each op's result
// to the next through this.  On the GPU it is an exact add (x + -0 is x for every x,
// -0 and NaN included) that the compiler may not contract with the arithmetic around
// it, so that NVRTC (--fmad=true) cannot turn one op's a*b and the next op's + c into
// an FMA the unfused kernels would not compute.  Elsewhere (the CPU, the emulator) the
// value itself.
SO_FN float so_keep(float x) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(x, -0.0f);
#else
    return x;
#endif
}

// ---------------------------------------------------------------------------
// activations (the backward of relu, sigmoid and tanh reads the output)

SO_FN float so_relu(float x) { return x > 0 ? x : 0; }
SO_FN float so_relu_grad(float dy, float y) { return y > 0 ? dy : 0; }
SO_FN float so_sigmoid(float x) { return 1 / (1 + expf(-x)); }
SO_FN float so_sigmoid_grad(float dy, float y) { return dy * y * (1 - y); }
// tanh, vectorisable on the CPU (libm's tanhf is a call per element, and the tanh GELU of
// a GPT spent a quarter of its step there): |x| < 0.5493 (tanh < 1/2) an odd polynomial,
// beyond it 1 - 2/(e^{2|x|} + 1) with e^y = 2^n e^r, |r| <= ln2/2, a polynomial in r.
// Coefficients: relative minimax fits (degree 4 in x^2; degree 6 in r).  Within 1.54 ulp
// of tanh on every float (libm's tanhf: 2.2; tests/test_scalar_ops.c); exact signs and
// zeros, +-1 from |x| > 9.01 on (the argument clamped at 10, so no overflow), NaN in NaN out.
SO_FN float so_tanh(float x) {
    float a = fabsf(x), z = a * a;
    float p = a + a * z * (-0.3333331822510353f + z * (0.1333260846478368f + z * (-0.05385463649990026f
              + z * (0.02108122300801763f + z * -0.006287718246235597f))));
    float y = 2 * (a < 10 ? a : 10);
    float n = (y * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
    float r = (y - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float e = 1.0000000005541667f + r * (1.0000000363231931f + r * (0.4999999207980303f + r * (0.16666420169864485f
              + r * (0.041668225572550954f + r * (0.00837481580328982f + r * 0.0013836845821370526f)))));
    float t = a < 0.5493f ? p : 1 - 2 / (e * so_bits_float((so_u32)((int)n + 127) << 23) + 1);
    t = so_bits_float(so_float_bits(t) | (so_float_bits(x) & 0x80000000u));
    return x != x ? x + x : t;
}
SO_FN float so_tanh_grad(float dy, float y) { return dy * (1 - y * y); }
// abs: f' = sign(x) (0 at 0), as the CPU's K_UNARY(abs)
SO_FN float so_abs(float x) { return fabsf(x); }
SO_FN float so_abs_grad(float dy, float x) { return dy * (float)((x > 0) - (x < 0)); }
// The elementwise functions with constants a, b (the CPU's K_UNARY, gen/ops.lua's
// UNARY: each op's `consts`): so_u_OP(x, a, b) and so_u_OP_grad(g, s, a, b), s the input,
// or the output for exp, sqrt and rsqrt.  (log1pf, powf: NVRTC built-ins too.)
SO_FN float so_u_leaky_relu(float x, float a, float b) { (void)b; return x > 0 ? x : a * x; }
SO_FN float so_u_leaky_relu_grad(float g, float s, float a, float b) { (void)b; return s > 0 ? g : g * a; }
SO_FN float so_u_elu(float x, float a, float b) { (void)b; return x > 0 ? x : a * (expf(x) - 1); }
SO_FN float so_u_elu_grad(float g, float s, float a, float b) { (void)b; return s > 0 ? g : g * a * expf(s); }
SO_FN float so_u_mish(float x, float a, float b) { (void)a; (void)b; return x * tanhf(log1pf(expf(x))); }
SO_FN float so_u_mish_grad(float g, float s, float a, float b) {
    (void)a; (void)b;
    return g * (tanhf(log1pf(expf(s))) + s / (1 + expf(-s)) * (1 - tanhf(log1pf(expf(s))) * tanhf(log1pf(expf(s)))));
}
SO_FN float so_u_softplus(float x, float a, float b) { return x * a > b ? x : log1pf(expf(x * a)) / a; }
SO_FN float so_u_softplus_grad(float g, float s, float a, float b) { return s * a > b ? g : g * expf(s * a) / (expf(s * a) + 1); }
SO_FN float so_u_hardswish(float x, float a, float b) { (void)a; (void)b; return x <= -3 ? 0 : x >= 3 ? x : x * (x + 3) / 6; }
SO_FN float so_u_hardswish_grad(float g, float s, float a, float b) {
    (void)a; (void)b;
    return s < -3 ? 0 : s <= 3 ? g * (s / 3 + 0.5f) : g;
}
SO_FN float so_u_hardtanh(float x, float a, float b) { return x <= a ? a : x >= b ? b : x; }
SO_FN float so_u_hardtanh_grad(float g, float s, float a, float b) { return (s <= a || s >= b) ? 0 : g; }
SO_FN float so_u_exp(float x, float a, float b) { (void)a; (void)b; return expf(x); }
SO_FN float so_u_exp_grad(float g, float s, float a, float b) { (void)a; (void)b; return g * s; }
SO_FN float so_u_log(float x, float a, float b) { (void)a; (void)b; return logf(x); }
SO_FN float so_u_log_grad(float g, float s, float a, float b) { (void)a; (void)b; return g / s; }
SO_FN float so_u_sqrt(float x, float a, float b) { (void)a; (void)b; return sqrtf(x); }
SO_FN float so_u_sqrt_grad(float g, float s, float a, float b) { (void)a; (void)b; return g / (2 * s); }
SO_FN float so_u_rsqrt(float x, float a, float b) { (void)a; (void)b; return 1 / sqrtf(x); }
SO_FN float so_u_rsqrt_grad(float g, float s, float a, float b) { (void)a; (void)b; return -0.5f * g * s * s * s; }
SO_FN float so_u_pow(float x, float a, float b) { (void)b; return powf(x, a); }
SO_FN float so_u_pow_grad(float g, float s, float a, float b) { (void)b; return a == 0 ? 0 : g * a * powf(s, a - 1); }
SO_FN float so_u_clamp(float x, float a, float b) { return x < a ? a : x > b ? b : x; }
SO_FN float so_u_clamp_grad(float g, float s, float a, float b) { return (s >= a && s <= b) ? g : 0; }
// maximum / minimum (an exact tie gives each half) and pow of two tensors (d/db = out
// log a, 0 where a = 0 and b >= 0), as the CPU's K_DEFINE_BINARY ones
SO_FN float so_maximum(float a, float b) { return a > b ? a : b; }
SO_FN float so_maximum_da(float g, float a, float b) { return a > b ? g : a == b ? g / 2 : 0; }
SO_FN float so_maximum_db(float g, float a, float b) { return b > a ? g : a == b ? g / 2 : 0; }
SO_FN float so_minimum(float a, float b) { return a < b ? a : b; }
SO_FN float so_minimum_da(float g, float a, float b) { return a < b ? g : a == b ? g / 2 : 0; }
SO_FN float so_minimum_db(float g, float a, float b) { return b < a ? g : a == b ? g / 2 : 0; }
SO_FN float so_pow_tensor(float a, float b) { return powf(a, b); }
SO_FN float so_pow_tensor_da(float g, float a, float b) { return b == 0 ? 0 : g * b * powf(a, b - 1); }
SO_FN float so_pow_tensor_db(float g, float a, float b) { return (a == 0 && b >= 0) ? 0 : g * powf(a, b) * logf(a); }
// erf, vectorisable on the CPU (libm's erff is a call per element, and the exact GELU of
// vit_tiny spent about 16% of its step there): |x| < 0.921875 x + x q(x^2), beyond it
// 1 - e^{-x^2} g(1/x) with e^y as in so_tanh (x clamped at 4.5, where erf rounds to 1).
// Coefficients: relative fits (degree 6 in x^2, relative error 4e-10; degree 10 in
// 1/x - 0.65, 8.5e-9).  Within 1.1 ulp of erf on the floats checked (libm's erff:
// 0.97), odd, +-1 at +-inf, NaN in NaN out.
SO_FN float so_erf(float x) {
    float a = fabsf(x), z = a * a;
    float p = a + a * (0.1283791666373875f + z * (-0.3761263373486643f + z * (0.11283695491220992f
              + z * (-0.026859398136328851f + z * (0.0052010320228708887f + z * (-0.00081427015811516481f
              + z * 8.3700900076633737e-05f))))));
    float b = a > 0.921875f ? (a < 4.5f ? a : 4.5f) : 0.921875f;
    float w = 1 / b - 0.65f;
    float g = 0.31540303370444833f + w * (0.37374750816973412f + w * (-0.16903213979309359f
              + w * (0.045815370142677767f + w * (0.017862729959631306f + w * (-0.040690720221651502f
              + w * (0.038553117240215547f + w * (-0.026622278890948099f + w * (0.0092976614137126098f
              + w * (0.021411509936881328f + w * -0.030688770758467345f)))))))));
    float y = -(b * b);
    float n = (y * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
    float r = (y - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float e = 1.0000000005541667f + r * (1.0000000363231931f + r * (0.4999999207980303f + r * (0.16666420169864485f
              + r * (0.041668225572550954f + r * (0.00837481580328982f + r * 0.0013836845821370526f)))));
    float t = a < 0.921875f ? p : 1 - e * so_bits_float((so_u32)((int)n + 127) << 23) * g;
    t = so_bits_float(so_float_bits(t) | (so_float_bits(x) & 0x80000000u));
    return x != x ? x + x : t;
}
// exp, vectorisable on the CPU (libm's expf is a call per element): the softmax family's
// and cross-entropy's exponentials (so_exp_shifted, so_log_softmax_grad, so_ce_grad,
// so_ce_soft_grad) and the attention softmax.  e^x = 2^n e^r, n = round(x / ln2),
// |r| <= ln2/2, e^r so_tanh's degree-6 polynomial; 2^n applied as two factors, so
// subnormal results come out right (within one unit of the last subnormal place).
// Within 1.33 ulp of exp over the normal range (every 7th float checked); 0 below -104,
// inf above 88.73, NaN in NaN out.
SO_FN float so_exp(float x) {
    float y = x > -104 ? (x < 89 ? x : 89) : -104;
    float n = (y * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
    float r = (y - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float e = 1.0000000005541667f + r * (1.0000000363231931f + r * (0.4999999207980303f + r * (0.16666420169864485f
              + r * (0.041668225572550954f + r * (0.00837481580328982f + r * 0.0013836845821370526f)))));
    int ni = (int)n, h = ni / 2;
    e = e * so_bits_float((so_u32)(h + 127) << 23) * so_bits_float((so_u32)(ni - h + 127) << 23);
    return x != x ? x + x : e;
}
// silu and gelu: the backward reads the input
SO_FN float so_silu(float x) { return x / (1 + expf(-x)); }
SO_FN float so_silu_grad(float dy, float x) {
    float s = 1 / (1 + expf(-x));
    return dy * s * (1 + x * (1 - s));
}
// gelu, exact: x/2 (1 + erf(x/sqrt 2));  d = Phi(x) + x phi(x)
SO_FN float so_gelu(float x) { return 0.5f * x * (1 + so_erf(x * (float)0.7071067811865476)); }
SO_FN float so_gelu_grad(float dy, float x) {
    float cdf = 0.5f * (1 + so_erf(x * (float)0.7071067811865476));
    float pdf = (float)0.3989422804014327 * expf(-0.5f * x * x);
    return dy * (cdf + x * pdf);
}
// gelu, tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
SO_FN float so_gelu_tanh(float x) {
    return 0.5f * x * (1 + so_tanh((float)0.7978845608028654 * (x + 0.044715f * x * x * x)));
}
SO_FN float so_gelu_tanh_grad(float dy, float x) {
    float t = so_tanh((float)0.7978845608028654 * (x + 0.044715f * x * x * x));
    float du = (float)0.7978845608028654 * (1 + 3 * 0.044715f * x * x);
    return dy * (0.5f * (1 + t) + 0.5f * x * (1 - t * t) * du);
}

// ---------------------------------------------------------------------------
// add, sub, mul, div: the value, and the gradient g times the partial derivative for
// each operand (_da, _db); `s op a` (a scalar on the left) is the same op with the
// operands swapped, its gradient the _db one

SO_FN float so_add(float a, float b) { return a + b; }
SO_FN float so_add_da(float g, float a, float b) { (void)a; (void)b; return g; }
SO_FN float so_add_db(float g, float a, float b) { (void)a; (void)b; return g; }
SO_FN float so_sub(float a, float b) { return a - b; }
SO_FN float so_sub_da(float g, float a, float b) { (void)a; (void)b; return g; }
SO_FN float so_sub_db(float g, float a, float b) { (void)a; (void)b; return -g; }
SO_FN float so_mul(float a, float b) { return a * b; }
SO_FN float so_mul_da(float g, float a, float b) { (void)a; return g * b; }
SO_FN float so_mul_db(float g, float a, float b) { (void)b; return g * a; }
SO_FN float so_div(float a, float b) { return a / b; }
SO_FN float so_div_da(float g, float a, float b) { (void)a; return g / b; }
SO_FN float so_div_db(float g, float a, float b) { return -g * a / (b * b); }

// ---------------------------------------------------------------------------
// losses

// binary cross entropy of probability p against target t, logs clamped at -100 (torch)
SO_FN float so_bce(float p, float t) {
    float lp = logf(p), l1p = logf(1 - p);
    if (lp < -100) lp = -100;
    if (l1p < -100) l1p = -100;
    return -(t * lp + (1 - t) * l1p);
}
// its gradient, g = dloss of this element
SO_FN float so_bce_grad(float g, float p, float t) {
    float den = p * (1 - p);
    if (den < 1e-12f) den = 1e-12f;
    return g * (p - t) / den;
}
// cross entropy: the gradient of one logit from its log-probability lp and q, the
// target's weight of its class ((1 - eps) * onehot + eps / C)
SO_FN float so_ce_grad(float g, float lp, float q) { return g * (so_exp(lp) - q); }
SO_FN float so_ce_q(int is_target, float smoothing, int C) { return smoothing / C + (is_target ? 1 - smoothing : 0); }

// ---------------------------------------------------------------------------
// batch norm (training statistics computed by the kernel's reduction)

// forward: (x - mean) * scale + shift, scale = w * invstd
SO_FN float so_bn_apply(float x, float mean, float scale, float shift) { return (x - mean) * scale + shift; }
// eval: x * scale + shift with shift = b - running_mean * scale
SO_FN float so_bn_eval(float x, float scale, float shift) { return x * scale + shift; }
// backward of the training forward: k = w * invstd, mdy = mean(dy), mdyx = mean(dy * xhat)
SO_FN float so_bn_grad(float dy, float x, float mean, float invstd, float k, float mdy, float mdyx) {
    return k * (dy - mdy - (x - mean) * invstd * mdyx);
}

// ---------------------------------------------------------------------------
// normalisation, softmax, pooling and the remaining losses (the CUDA rules of
// gen/ops_cuda.lua for layer_norm, softmax/log_softmax, attention, avg_pool2d, sum/mean,
// cross_entropy with probability targets, bce_with_logits, mse, l1), each as the CPU
// kernel of templates/cpu/ writes it

// layer norm forward: (x - mean) * rstd * w + b   (w = 1, b = 0 when the module has none:
// the CPU's `v` and `v + 0` are the same floats)
SO_FN float so_ln_apply(float x, float mean, float rstd, float w, float b) { return (x - mean) * rstd * w + b; }
// one term of the backward's sums: g * xhat, g = dy * w for dx's, g = dy for dw's
SO_FN float so_ln_term(float g, float x, float mean, float rstd) { return g * (x - mean) * rstd; }
// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
SO_FN float so_ln_grad(float dxhat, float x, float mean, float rstd, float m1, float m2) {
    return rstd * (dxhat - m1 - (x - mean) * rstd * m2);
}

// softmax: exp(x - max); log_softmax: x - (max + log(sum exp(x - max)))
SO_FN float so_exp_shifted(float x, float mx) { return so_exp(x - mx); }
SO_FN float so_log_softmax(float x, float mx, float sum) { return x - (mx + logf(sum)); }
// backward: softmax dx = y * (dy - sum(dy * y));  log_softmax dx = dy - exp(y) * sum(dy)
SO_FN float so_softmax_grad(float dy, float y, float s) { return y * (dy - s); }
SO_FN float so_log_softmax_grad(float dy, float y, float s) { return dy - so_exp(y) * s; }

// avg_pool2d's divisor for the window starting at (hs, ws) (PyTorch: the window clipped to
// the padded input with count_include_pad, else the number of real inputs in it)
SO_FN int so_avg_pool_divisor(int hs, int ws, int KH, int KW, int H, int W, int PH, int PW, int count_include_pad) {
    int he = hs + KH, we = ws + KW;
    if (he > H + PH) he = H + PH;
    if (we > W + PW) we = W + PW;
    const int pool = (he - hs) * (we - ws);
    if (hs < 0) hs = 0;
    if (ws < 0) ws = 0;
    if (he > H) he = H;
    if (we > W) we = W;
    return count_include_pad ? pool : (he - hs) * (we - ws);
}

// a loss's gradient factor: dloss / count for mean, dloss for sum and none
SO_FN float so_loss_grad(float dloss, int mean, double count) { return mean ? (float)(dloss / count) : dloss; }
// cross entropy with probability targets: q = (1 - eps) * t + eps / C, l = -sum q * logp,
// dlogit = g * (softmax * sum(q) - q)
SO_FN float so_ce_soft_q(float t, float smoothing, int C) { return (1 - smoothing) * t + smoothing / C; }
SO_FN float so_ce_soft_grad(float g, float lp, float qsum, float q) { return g * (so_exp(lp) * qsum - q); }
// binary cross entropy on logits, stably: (1 - t) x + m + log(exp(-m) + exp(-x - m)), m = max(-x, 0)
SO_FN float so_bce_logits(float x, float t) {
    const float m = x < 0 ? -x : 0;
    return (1 - t) * x + m + logf(expf(-m) + expf(-x - m));
}
SO_FN float so_bce_logits_grad(float g, float x, float t) { return g * (1 / (1 + expf(-x)) - t); }
SO_FN float so_mse(float x, float t) { return (x - t) * (x - t); }
SO_FN float so_mse_grad(float g, float x, float t) { return g * 2 * (x - t); }
SO_FN float so_l1(float x, float t) { return fabsf(x - t); }
SO_FN float so_l1_grad(float g, float x, float t) { const float d = x - t; return g * (float)((d > 0) - (d < 0)); }
// smooth L1 (c = beta), Huber (c = delta), KL divergence (c = log_target; dt: its target's
// gradient), as the CPU's k_smooth_l1_* / k_huber_* / k_kl_div_*
SO_FN float so_smooth_l1(float x, float t, float c) {
    const float d = x - t, a = fabsf(d);
    return a < c ? 0.5f * d * d / c : a - 0.5f * c;
}
SO_FN float so_smooth_l1_grad(float g, float x, float t, float c) { const float d = x - t; return g * (d < -c ? -1 : d > c ? 1 : d / c); }
SO_FN float so_huber(float x, float t, float c) {
    const float d = x - t, a = fabsf(d);
    return a <= c ? 0.5f * d * d : c * (a - 0.5f * c);
}
SO_FN float so_huber_grad(float g, float x, float t, float c) { const float d = x - t; return g * (d < -c ? -c : d > c ? c : d); }
SO_FN float so_kl_div(float x, float t, float c) { return c != 0 ? expf(t) * (t - x) : (t > 0 ? t * (logf(t) - x) : 0); }
SO_FN float so_kl_div_grad(float g, float x, float t, float c) { (void)x; return g * (c != 0 ? -expf(t) : -t); }
SO_FN float so_kl_div_dt(float g, float x, float t, float c) {
    return g * (c != 0 ? expf(t) * (t - x + 1) : (t > 0 ? logf(t) + 1 - x : 0));
}

// train.log's metrics: does v displace best as a row's argmax (accuracy: the first largest;
// NaN wins, as torch.argmax), is x scored right against a float target t, and a metric's
// max over batches (log_reduce "max": a NaN wins, as torch.max)
SO_FN int so_argmax_takes(float v, float best) { return v > best || (v != v && best == best); }
SO_FN int so_threshold_right(float x, float threshold, float t) { return (x > threshold) == (t > 0.5f); }
SO_FN double so_max_nan(double a, double v) { return a != a ? a : (v > a || v != v) ? v : a; }

// ---------------------------------------------------------------------------
// optimizers (torch.optim's single-tensor rules; constants from the host, in float)

typedef struct {
    float decay;              // 1 - lr * weight_decay (AdamW), 1 otherwise
    float l2;                 // weight_decay (Adam's L2 penalty), 0 otherwise
    float one_minus_beta1, beta2, one_minus_beta2;
    float step_size;          // lr / (1 - beta1^t)
    float bc2_sqrt;           // sqrt(1 - beta2^t)
    float eps;
} so_adam_consts;

SO_FN void so_adam(float *p, float *m, float *v, float g, const so_adam_consts *c) {
    g += c->l2 * *p;
    *p *= c->decay;
    *m += c->one_minus_beta1 * (g - *m);   // lerp, as torch
    *v = c->beta2 * *v + c->one_minus_beta2 * g * g;
    float denom = sqrtf(*v) / c->bc2_sqrt + c->eps;
    *p -= c->step_size * *m / denom;
}

// SGD (torch.optim.SGD; the CPU's k_sgd_step): constants in float as T = float takes them
typedef struct {
    float lr, momentum, damp;   // damp = 1 - dampening
    float wd;                   // weight_decay
    int has_wd, has_momentum;   // weight_decay != 0, momentum != 0 (as doubles, on the host)
    int nesterov, maximize;
    int first;                  // the momentum buffer is still empty (torch's buf is None)
} so_sgd_consts;

SO_FN void so_sgd(float *p, float *buf, float g, const so_sgd_consts *c) {
    float d = c->maximize ? -g : g;
    if (c->has_wd) d += c->wd * *p;
    if (c->has_momentum) {
        float b = c->first ? d : c->momentum * *buf + c->damp * d;
        *buf = b;
        d = c->nesterov ? d + c->momentum * b : b;
    }
    *p -= c->lr * d;
}

// ---------------------------------------------------------------------------
// gradient clipping (Fabric's clip_gradients: torch.nn.utils.clip_grad_norm_ /
// clip_grad_value_, as the C backend's clip_gradients computes them)

// one gradient's term of the norm, in double: |g|^2, |g|^p, or |g| (inf-norm, max-reduced)
SO_FN double so_norm_sq(float g) { return (double)g * g; }
SO_FN double so_norm_abs(float g) { return fabs((double)g); }
SO_FN double so_norm_pow(float g, double p) { return pow(fabs((double)g), p); }
// the clip coefficient from the total norm (applied only when < 1)
SO_FN double so_clip_coef(double total, double max_norm) { return max_norm / (total + 1e-6); }
SO_FN float so_clip_scale(float g, float coef) { return g * coef; }
// by value: clamped to [-v, v] (NaN stays)
SO_FN float so_clip_value(float g, float v) { return g > v ? v : (g < -v ? -v : g); }

// ---------------------------------------------------------------------------
// dropout: runtime/philox.h's Philox4x32-10 and its (seed, stream, i) mapping, without
// <stdint.h>, so that a device's mask is the CPU's (k_dropout_*) bit for bit

typedef unsigned long long so_u64;

// the uniform philox_uniform_at(seed, stream, i) gives
SO_FN float so_philox_uniform_at(so_u64 seed, so_u64 stream, so_u64 i) {
    so_u32 k0 = (so_u32)seed, k1 = (so_u32)(seed >> 32);
    so_u32 x0 = (so_u32)(i >> 2), x1 = (so_u32)(i >> 34), x2 = (so_u32)stream, x3 = (so_u32)(stream >> 32);
    for (int round = 0; round < 10; round++) {
        so_u64 p0 = (so_u64)0xD2511F53u * x0, p1 = (so_u64)0xCD9E8D57u * x2;
        so_u32 hi0 = (so_u32)(p0 >> 32), lo0 = (so_u32)p0, hi1 = (so_u32)(p1 >> 32), lo1 = (so_u32)p1;
        so_u32 y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
        x0 = y0; x1 = y1; x2 = y2; x3 = y3;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    so_u32 w = (i & 3) == 0 ? x0 : (i & 3) == 1 ? x1 : (i & 3) == 2 ? x2 : x3;
    return (float)(w >> 8) * (1.0f / 16777216.0f);
}
// element i is kept unless its uniform is < p; kept ones are scaled by 1/(1-p)
SO_FN int so_dropout_keep(so_u64 seed, so_u64 stream, so_u64 i, float p) { return !(so_philox_uniform_at(seed, stream, i) < p); }
SO_FN float so_dropout_scale(float p) { return p < 1 ? 1 / (1 - p) : 0; }
SO_FN float so_dropout(float x, int keep, float scale) { return keep ? x * scale : 0; }


#endif
