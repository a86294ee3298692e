// A sampled model's decode step against its own forward, at the program's precision
// (tests/suite_sample.sh).  Compiled against the objects of `loom build SPEC -o DIR`
// for a spec whose loss reads cross_entropy(transpose(m(b), 1, 2), ...), so that
// model_prediction() is the logits as (B, V, T):
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/sample_step.c DIR/obj/model.o DIR/obj/threads.o
//      -ldnnl -lopenblas -lm
//   ./sample_step OUT [REF]
//
// Initialises the model (seed 1), runs model_forward(training = 0) on one window of
// fixed tokens and model_sample_step position by position over the same window (each
// call one new position over the cache), and prints
//   decode_vs_forward D scale S mean Dm [ref_vs_forward R mean Rm]
// D: the largest |decode - forward| logit, S: the largest |forward| logit, R: the
// largest |REF - forward| (REF: another program's OUT, e.g. 32-true's forward); Dm and
// Rm the mean absolute differences.  (In 16 bits one rounding that goes the other way
// gives D one unit in the last place of S while Rm stays below half of one: the mean
// says which forward the decode step follows.)
// OUT gets the forward's logits as float32, (T, V).
#include "kernels.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define FMT_f32 1
#define FMT_f64 2
#define FMT_bf16 3
#define FMT_f16 4
#define FMT_(f) FMT_##f
#define FMT(f) FMT_(f)

static double pred_at(const void *p, size_t i) {
#if FMT(MODEL_PREDICTION_FORMAT) == FMT_bf16
    return k_widen_bf16(((const k_bf16 *)p)[i]);
#elif FMT(MODEL_PREDICTION_FORMAT) == FMT_f16
    return k_widen_f16(((const k_f16 *)p)[i]);
#else
    return ((const real *)p)[i];
#endif
}

int main(int argc, char **argv) {
    enum { T = SAMPLE_CONTEXT, V = SAMPLE_VOCAB };
    if (argc < 2) { fprintf(stderr, "usage: sample_step OUT [REF]\n"); return 2; }
    Model m;
    if (model_alloc(&m) || model_sample_begin(&m)) { fprintf(stderr, "sample_step: out of memory\n"); return 2; }
    model_init(&m, 1);
    static int64_t idx[T], targets[T];
    uint64_t x = 12345;
    for (int t = 0; t < T; t++) { x = x * 6364136223846793005ull + 1442695040888963407ull; idx[t] = (int64_t)(x >> 33) % SAMPLE_VOCAB_IN; }
    Batch b = { idx, targets };
    model_forward(&m, &b, 1, 0);
    const void *pred = model_prediction(&m);
    static float fwd[T][V];
    for (int t = 0; t < T; t++)
        for (int v = 0; v < V; v++) fwd[t][v] = (float)pred_at(pred, (size_t)v * T + t);
    if (model_sample_begin(&m)) { fprintf(stderr, "sample_step: out of memory\n"); return 2; }
    double d = 0, s = 0, r = 0, dm = 0, rm = 0;
    for (int t = 0; t < T; t++) {
        const real *lg = model_sample_step(&m, idx, t, t + 1);
        for (int v = 0; v < V; v++) {
            d = fmax(d, fabs((double)lg[v] - fwd[t][v]));
            dm += fabs((double)lg[v] - fwd[t][v]) / (T * V);
            s = fmax(s, fabs((double)fwd[t][v]));
        }
    }
    FILE *o = fopen(argv[1], "wb");
    if (!o || fwrite(fwd, sizeof fwd, 1, o) != 1 || fclose(o)) { fprintf(stderr, "sample_step: cannot write %s\n", argv[1]); return 2; }
    printf("decode_vs_forward %.6g scale %.6g mean %.6g", d, s, dm);
    if (argc > 2) {
        static float ref[T][V];
        FILE *f = fopen(argv[2], "rb");
        if (!f || fread(ref, sizeof ref, 1, f) != 1) { fprintf(stderr, "sample_step: cannot read %s\n", argv[2]); return 2; }
        fclose(f);
        for (int t = 0; t < T; t++)
            for (int v = 0; v < V; v++) {
                r = fmax(r, fabs((double)ref[t][v] - fwd[t][v]));
                rm += fabs((double)ref[t][v] - fwd[t][v]) / (T * V);
            }
        printf(" ref_vs_forward %.6g mean %.6g", r, rm);
    }
    printf("\n");
    model_free(&m);
    return 0;
}
