// conv_bench: k_conv2d forward and forward+backward at the shapes of a small
// Fashion-MNIST CNN, batch 128, best of 30.  Compare with bench/conv_bench_torch.py:
//   ninja build/bench/conv_bench && OMP_NUM_THREADS=2 build/bench/conv_bench
//   OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/conv_bench_torch.py
#include <stdio.h>
#include <time.h>
#include "kernels.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

int main(void) {
    struct { int N, C, H, W, OC, K, P, dx; } shapes[] = {
        { 128, 1, 28, 28, 32, 3, 1, 0 },     // first layer: no input gradient
        { 128, 32, 14, 14, 64, 3, 1, 1 },
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int N = shapes[si].N, C = shapes[si].C, H = shapes[si].H, W = shapes[si].W, OC = shapes[si].OC, K = shapes[si].K, P = shapes[si].P;
        k_conv2d_dims d = { N, C, H, W, OC, K, K, 1, 1, P, P, 1, 1, 1, H + 2 * P - K + 1, W + 2 * P - K + 1 };
        size_t nx = (size_t)N * C * H * W, nw = (size_t)OC * C * K * K, ny = (size_t)N * OC * d.OH * d.OW;
        float *x = malloc(nx * 4), *dx = calloc(nx, 4), *w = malloc(nw * 4), *dw = calloc(nw, 4), *b = malloc(OC * 4);
        float *db = calloc(OC, 4), *y = malloc(ny * 4), *dy = malloc(ny * 4);
        float *scratch = malloc(k_conv2d_scratch_f32(&d) * 4);
        for (size_t i = 0; i < nx; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500 - 1;
        for (size_t i = 0; i < nw; i++) w[i] = (float)((i * 40503u) % 1000) / 5000 - 0.1f;
        for (int i = 0; i < OC; i++) b[i] = 0.01f * i;
        for (size_t i = 0; i < ny; i++) dy[i] = 1;
        double best_f = 1e30, best_fb = 1e30;
        for (int it = 0; it < 33; it++) {
            double t0 = now_ms();
            k_conv2d_forward_f32(y, x, w, b, scratch, &d);
            double t1 = now_ms();
            k_conv2d_backward_f32(shapes[si].dx ? dx : NULL, dw, db, dy, x, w, scratch, &d, 1, 1);
            double t2 = now_ms();
            if (it >= 3) {   // warm-up first
                if (t1 - t0 < best_f) best_f = t1 - t0;
                if (t2 - t0 < best_fb) best_fb = t2 - t0;
            }
        }
        double gflop = 2.0 * N * OC * d.OH * d.OW * C * K * K * 1e-9;
        printf("loom  conv N=%d %d->%d %dx%d k%d: fwd %.2f ms  fwd+bwd %.2f ms  (%.1f GFLOP/s fwd, %d threads)\n",
               N, C, OC, H, W, K, best_f, best_fb, gflop / (best_f * 1e-3), omp_get_max_threads());
        free(x); free(dx); free(w); free(dw); free(b); free(db); free(y); free(dy); free(scratch);
    }
    return 0;
}
