// sample: the next token from logits: temperature, top-k, a seeded draw (sample.h).
#include "sample.h"
#include "philox.h"

#include <math.h>
#include <string.h>

#define SAMPLE_STREAM 0x53414d50u   // "SAMP": the sampler's Philox stream

void sampler_init(sampler *s, double temperature, int top_k, uint64_t seed) {
    s->temperature = temperature;
    s->top_k = top_k;
    s->seed = seed;
    s->drawn = 0;
}

static int argmax(const double *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// the k-th largest of x[0..n) (1 <= k <= n), by quickselect on a copy in `a`
static double kth_largest(const double *x, int n, int k, double *a) {
    memcpy(a, x, sizeof(double) * (size_t)n);
    int lo = 0, hi = n - 1, want = k - 1;   // position in descending order
    while (lo < hi) {
        double pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) { double t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return a[want];
}

int sampler_pick(sampler *s, const double *logits, int n, double *scratch) {
    if (s->temperature == 0 || s->top_k == 1 || n == 1) return argmax(logits, n);
    // as torch.topk + masked_fill(logits < v[-1], -inf): ties with the k-th are kept
    double threshold = s->top_k > 0 && s->top_k < n ? kth_largest(logits, n, s->top_k, scratch) : -INFINITY;
    double max = logits[argmax(logits, n)], sum = 0;
    for (int i = 0; i < n; i++) {
        scratch[i] = logits[i] >= threshold ? exp((logits[i] - max) / s->temperature) : 0;
        sum += scratch[i];
    }
    double u = philox_uniform_at(s->seed, SAMPLE_STREAM, s->drawn++) * sum, run = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (scratch[i] == 0) continue;
        run += scratch[i];
        last = i;
        if (u < run) return i;
    }
    return last;   // u rounded up to the sum
}
