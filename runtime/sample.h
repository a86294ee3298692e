#ifndef LOOM_SAMPLE_H
#define LOOM_SAMPLE_H
// sample: drawing the next token from a model's logits, as nanoGPT's generate does:
// the logits divided by the temperature, all but the top k set to -inf, softmax, one
// draw.  Seeded: the n-th draw reads Philox (seed, stream SAMPLE_STREAM, n), so the same
// seed gives the same tokens.  Temperature 0 or top-k 1: the most likely token (the
// first of equal ones), no draw.
#include <stdint.h>

typedef struct {
    double temperature;   // > 0, or 0 for the most likely token
    int top_k;            // 0: every token
    uint64_t seed;
    uint64_t drawn;       // draws so far (the Philox counter)
} sampler;

void sampler_init(sampler *s, double temperature, int top_k, uint64_t seed);
// The token drawn from logits[0..n); `scratch` holds n doubles.
int sampler_pick(sampler *s, const double *logits, int n, double *scratch);

#endif
