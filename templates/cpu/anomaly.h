// anomaly.h: fabric { detect_anomaly = true } (or loom build --detect-anomaly), as
// torch.autograd.detect_anomaly: after every op of the forward and the backward the
// program checks the tensors the op made for NaN and Inf, and stops at the first one
// with the op, its spec line and its inputs' statistics.  Included, and its checks
// emitted, only when it is on: a program without it is byte for byte the one it was.
#ifndef LOOM_ANOMALY_H
#define LOOM_ANOMALY_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "kernels.h"

enum { ANOMALY_F32, ANOMALY_F64, ANOMALY_BF16, ANOMALY_F16 };

// a tensor an op read or made: its name in the message, storage, format, elements
typedef struct { const char *name; const void *data; int fmt; long long n; } anomaly_tensor;

static double anomaly_at(const anomaly_tensor *t, long long i) {
    switch (t->fmt) {
    case ANOMALY_F64: return ((const double *)t->data)[i];
    case ANOMALY_BF16: return k_widen_bf16(((const k_bf16 *)t->data)[i]);
    case ANOMALY_F16: return k_widen_f16(((const k_f16 *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

// min, max over the finite values; the count of the others and the first one's index
typedef struct { double min, max; long long nonfinite, first; } anomaly_stats;
static anomaly_stats anomaly_scan(const anomaly_tensor *t) {
    anomaly_stats s = { INFINITY, -INFINITY, 0, -1 };
    for (long long i = 0; i < t->n; i++) {
        double v = anomaly_at(t, i);
        if (!isfinite(v)) { if (!s.nonfinite++) s.first = i; continue; }
        if (v < s.min) s.min = v;
        if (v > s.max) s.max = v;
    }
    return s;
}

// After an op: `made` (its output in the forward, the gradients it added to in the
// backward) all finite, or one line per tensor and exit(1).
static void anomaly_check(const char *phase, const char *op, const char *where, uint64_t step,
                          const anomaly_tensor *made, int nmade, const anomaly_tensor *inputs, int ninputs) {
    for (int k = 0; k < nmade; k++) {
        anomaly_stats s = anomaly_scan(&made[k]);
        if (!s.nonfinite) continue;
        double v = anomaly_at(&made[k], s.first);
        fprintf(stderr, "%s: error: detect_anomaly: %s of %s made %s (micro-batch %llu): %s has %lld non-finite of %lld values, "
                "the first at %lld\n", where, phase, op, isnan(v) ? "NaN" : "Inf", (unsigned long long)step, made[k].name,
                s.nonfinite, made[k].n, s.first);
        for (int i = 0; i < ninputs; i++) {
            anomaly_stats a = anomaly_scan(&inputs[i]);
            if (a.nonfinite == inputs[i].n)
                fprintf(stderr, "    %s: %lld values, none finite\n", inputs[i].name, inputs[i].n);
            else
                fprintf(stderr, "    %s: %lld values, min %.9g, max %.9g, %lld non-finite\n", inputs[i].name, inputs[i].n,
                        a.min, a.max, a.nonfinite);
        }
        fflush(stderr);
        exit(1);
    }
}
#endif
