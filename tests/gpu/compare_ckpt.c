// compare_ckpt A B TOL: every F32 tensor of A against the same tensor of B; prints the
// worst relative error (max |a - b| / max(max |b|, 1e-6), per tensor) and exits 1 when it
// exceeds TOL.  The GPU test (tests/gpu/run.sh) compares a CUDA program's checkpoint
// after its first step with the CPU program's: parameters, and optimizer.exp_avg.* which
// after one Adam step is (1 - beta1) times the gradient.
#include "ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: compare_ckpt A.safetensors B.safetensors TOL\n"); return 2; }
    ckpt_file a, b;
    if (ckpt_open(&a, argv[1])) { fprintf(stderr, "%s\n", a.err); return 2; }
    if (ckpt_open(&b, argv[2])) { fprintf(stderr, "%s\n", b.err); return 2; }
    double tol = atof(argv[3]), worst = 0;
    const char *worst_name = "";
    int compared = 0;
    for (int i = 0; i < a.ntensors; i++) {
        const ckpt_tensor *ta = &a.tensors[i];
        if (ta->dtype != CKPT_F32) continue;
        const ckpt_tensor *tb = ckpt_find(&b, ta->name);
        if (!tb || tb->dtype != CKPT_F32 || tb->end - tb->begin != ta->end - ta->begin) {
            fprintf(stderr, "%s: missing or different in %s\n", ta->name, argv[2]);
            return 1;
        }
        int64_t n = (int64_t)(ta->end - ta->begin) / 4;
        const float *x = (const float *)ta->data, *y = (const float *)tb->data;
        double diff = 0, scale = 1e-6;
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)x[k] - y[k]);
            if (!(d <= diff)) diff = d;   // NaN counts as the worst
            if (fabs((double)y[k]) > scale) scale = fabs((double)y[k]);
        }
        double rel = diff / scale;
        if (!(rel <= worst)) { worst = rel; worst_name = ta->name; }
        compared++;
    }
    printf("%d tensors, worst relative difference %.3g (%s), tolerance %g\n", compared, worst, worst_name, tol);
    ckpt_close(&a);
    ckpt_close(&b);
    return compared > 0 && worst <= tol ? 0 : 1;
}
