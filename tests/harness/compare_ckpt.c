// compare_ckpt A B TOL [ROUNDOFF [PTOL]]: the CUDA program's checkpoint (A; on a GPU,
// tests/gpu/run.sh, or under the emulator, tests/suite_cuda_emu.sh) against the CPU
// program's (B) after the same first step, with what makes a plain per-tensor
// comparison fail for a legitimate reason taken out (`0 0 0`: bit for bit).  Adam's
// first step is lr * g / (|g| + eps): about lr * sign(g) whatever the size of g, so an
// element whose gradient is round-off (every element of a bias right before a
// BatchNorm, which subtracts it out again; single elements of any tensor) moves by
// ±lr in one program and maybe the other way in the other.  So:
//  - gradients (optimizer.exp_avg.* = 0.1 g): max |a - b| / max |b| per tensor; a
//    tensor whose gradient is all round-off (max below ROUNDOFF, default 1e-4, of the
//    model's largest: 16-bit formats need about 1e-2) is measured against the model's
//    largest gradient instead;
//  - Adam's parameters: per tensor, only the elements whose gradient is larger than
//    twice the largest difference of that tensor's gradients between the two programs
//    (the step's sign is the same in both) and at least 1e-2 of the tensor's largest
//    (far from Adam's eps), against PTOL (default 2e-5: such steps agree to the last
//    bits, and a wrong weight decay, lr * wd * p ~ 1e-5 p, shows); their exp_avg_sq
//    the same elements, against TOL;
//  - every other F32 tensor (buffers, SGD's parameters and momentum): per tensor, all
//    elements, against TOL.
// Prints the worst of each class; exits 1 above TOL.
#include "ckpt.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// bf16-true / 16-true checkpoints hold 16-bit tensors: each is compared as the float
// values it holds (widening is exact), so every tensor of either program is F32 here.
static float widen16(uint16_t h, ckpt_dtype dt) {
    if (dt == CKPT_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}
static void widen_tensors(ckpt_file *f) {
    for (int i = 0; i < f->ntensors; i++) {
        ckpt_tensor *t = &f->tensors[i];
        if (t->dtype != CKPT_BF16 && t->dtype != CKPT_F16) continue;
        int64_t n = (int64_t)(t->end - t->begin) / 2;
        float *w = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));   // freed at exit
        if (!w) { fprintf(stderr, "compare_ckpt: out of memory\n"); exit(2); }
        const unsigned char *src = t->data;
        for (int64_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            w[k] = widen16(h, t->dtype);
        }
        t->data = w;
        t->dtype = CKPT_F32;
        t->end = t->begin + 4 * (uint64_t)n;
    }
}

static const char EXP_AVG[] = "optimizer.exp_avg.", EXP_AVG_SQ[] = "optimizer.exp_avg_sq.";

static double max_abs(const ckpt_tensor *t) {
    const float *x = (const float *)t->data;
    double m = 0;
    for (int64_t k = 0; k < (int64_t)(t->end - t->begin) / 4; k++)
        if (fabs((double)x[k]) > m) m = fabs((double)x[k]);
    return m;
}

// the parameter a tensor belongs to: its own name, or the name after an optimizer prefix
static const char *param_of(const char *name) {
    if (!strncmp(name, EXP_AVG, sizeof EXP_AVG - 1)) return name + sizeof EXP_AVG - 1;
    if (!strncmp(name, EXP_AVG_SQ, sizeof EXP_AVG_SQ - 1)) return name + sizeof EXP_AVG_SQ - 1;
    return name;
}

typedef struct { double worst; const char *name; int n; } worst;
static void note(worst *w, double rel, const char *name) {
    w->n++;
    if (!(rel <= w->worst)) { w->worst = rel; w->name = name; }   // NaN counts as the worst
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) { fprintf(stderr, "usage: compare_ckpt A.safetensors B.safetensors TOL [ROUNDOFF [PTOL]]\n"); return 2; }
    ckpt_file a, b;
    if (ckpt_open(&a, argv[1])) { fprintf(stderr, "%s\n", a.err); return 2; }
    if (ckpt_open(&b, argv[2])) { fprintf(stderr, "%s\n", b.err); return 2; }
    widen_tensors(&a);
    widen_tensors(&b);
    double tol = atof(argv[3]), roundoff = argc >= 5 ? atof(argv[4]) : 1e-4,
           ptol = argc >= 6 ? atof(argv[5]) : 2e-5, largest_grad = 0;
    for (int i = 0; i < b.ntensors; i++)
        if (b.tensors[i].dtype == CKPT_F32 && !strncmp(b.tensors[i].name, EXP_AVG, sizeof EXP_AVG - 1)) {
            double m = max_abs(&b.tensors[i]);
            if (m > largest_grad) largest_grad = m;
        }
    worst params = {0, "", 0}, grads = {0, "", 0}, other = {0, "", 0};
    int noise = 0;
    for (int i = 0; i < a.ntensors; i++) {
        const ckpt_tensor *ta = &a.tensors[i];
        if (ta->dtype != CKPT_F32) continue;
        const ckpt_tensor *tb = ckpt_find(&b, ta->name);
        if (!tb || tb->dtype != CKPT_F32 || tb->end - tb->begin != ta->end - ta->begin) {
            fprintf(stderr, "%s: missing or different in %s\n", ta->name, argv[2]);
            return 1;
        }
        char grad_name[600];
        snprintf(grad_name, sizeof grad_name, "%s%s", EXP_AVG, param_of(ta->name));
        const ckpt_tensor *g = ckpt_find(&b, grad_name);
        double gmax = g && g->dtype == CKPT_F32 && g->end - g->begin == ta->end - ta->begin ? max_abs(g) : -1;
        int is_noise = gmax >= 0 && gmax < roundoff * largest_grad;
        int is_grad = !strncmp(ta->name, EXP_AVG, sizeof EXP_AVG - 1);
        if (is_noise && !is_grad) continue;   // the parameter and exp_avg_sq of a round-off gradient
        int64_t n = (int64_t)(ta->end - ta->begin) / 4;
        const float *x = (const float *)ta->data, *y = (const float *)tb->data;
        const float *gy = NULL;
        double gdiff = 0;
        if (gmax >= 0 && !is_grad) {   // the gradient's disagreement, for the mask
            const ckpt_tensor *ga = ckpt_find(&a, grad_name);
            if (!ga || ga->dtype != CKPT_F32 || ga->end - ga->begin != g->end - g->begin) {
                fprintf(stderr, "%s: missing or different in %s\n", grad_name, argv[1]);
                return 1;
            }
            gy = (const float *)g->data;
            for (int64_t k = 0; k < n; k++) {
                double d = fabs((double)((const float *)ga->data)[k] - gy[k]);
                if (!(d <= gdiff)) gdiff = d;
            }
        }
        double diff = 0, scale = 1e-6;
        for (int64_t k = 0; k < n; k++) {
            if (fabs((double)y[k]) > scale) scale = fabs((double)y[k]);
            if (gy && !(fabs((double)gy[k]) > 2 * gdiff && fabs((double)gy[k]) >= 1e-2 * gmax)) continue;
            double d = fabs((double)x[k] - y[k]);
            if (!(d <= diff)) diff = d;
        }
        if (is_noise) { scale = largest_grad; noise++; }
        double rel = diff / scale;
        note(is_grad ? &grads : gy && strncmp(ta->name, "optimizer.", 10) ? &params : &other, rel, ta->name);
    }
    int ok = params.n + grads.n + other.n > 0 && params.worst <= ptol && grads.worst <= tol && other.worst <= tol;
    printf("worst relative differences: gradients %.3g (%s), Adam's parameters %.3g (%s), the rest %.3g (%s); "
           "%d round-off gradients; tolerances %g, parameters %g\n",
           grads.worst, grads.name, params.worst, params.name, other.worst, other.name, noise, tol, ptol);
    ckpt_close(&a);
    ckpt_close(&b);
    return ok ? 0 : 1;
}
