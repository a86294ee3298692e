// Parity with PyTorch: runs a generated model on weights and a batch that PyTorch
// wrote, and writes what PyTorch compares (tests/torch/parity.py, tests/suite_parity.sh).
//
// Generic over models: compiled against the files of `loom build SPEC -o DIR`:
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/parity.c DIR/model.c DIR/optim.c
//      DIR/ckpt.c DIR/data.c DIR/npy.c DIR/idx.c DIR/tokens.c -ldnnl -lopenblas -lz -lm
//   ./parity WORK B STEPS
//
// Reads WORK/weights.safetensors (the state_dict: parameters, BatchNorm running
// statistics, int64 num_batches_tracked; every name the model has must be there) and
// one WORK/<field>.npy per Batch field (float32 or int64, B samples).  The weights may
// be F32, F64, BF16 or F16, whatever the model's state_t: they are converted into it
// (rounded to nearest even where it is narrower).  Parameters, gradients and buffers
// are written in state_t's own dtype, or as F32 (exactly) when state_t is 16 bits.
//   STEPS = 0: one model_forward(training=1) and model_backward(dloss=1); writes
//     WORK/out.safetensors with "loss" (shape [1]), "grad.<param>" for every parameter
//     and the state after the forward (parameters, running statistics, counters).
//   STEPS > 0: STEPS training steps on that one batch, as train.c takes them:
//     forward, backward, clip_gradients, optimizer_step(lr_at, momentum_at), zero_grad;
//     (every zero_grad finds the gradients NaN-poisoned: poison_grads)
//     with a training_step (LOOM_USER_STEP), model_user_step and zero_grad, "loss" what it returns,
//     and "grad.<param>" the gradients the last step left (what its backwards added since
//     each optimizer's zero_grad: PyTorch's .grad after the step);
//     writes "loss" (shape [STEPS], the loss of each step's forward) and the final state.
//     With LOSS_SCALING (16-mixed) the steps go through the GradScaler as in train.c
//     (backward from loss × scale, unscale, skip on inf/nan; a training_step's in
//     model_user_step); "scale" (shape [STEPS]) holds the scale after each step.
#include "ckpt.h"
#include "data.h"
#include "model.h"
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *msg) {
    fprintf(stderr, "parity: %s: %s\n", what, msg);
    exit(2);
}

static ckpt_dtype real_dtype(void) { return sizeof(real) == 8 ? CKPT_F64 : CKPT_F32; }

// state_t's dtype, and how a value of it is read and written as a double
#define CKPT_f32 CKPT_F32
#define CKPT_f64 CKPT_F64
#define CKPT_bf16 CKPT_BF16
#define CKPT_f16 CKPT_F16
#define STATE_CKPT_(fmt) CKPT_##fmt
#define STATE_CKPT(fmt) STATE_CKPT_(fmt)
static ckpt_dtype state_dtype(void) { return STATE_CKPT(STATE_FORMAT); }
// what parameters, gradients and buffers are written as: their own dtype, or F32 for 16 bits
static ckpt_dtype out_dtype(void) { return STATE_IS_REAL ? state_dtype() : CKPT_F32; }

static uint16_t bits16(const void *p) { uint16_t u; memcpy(&u, p, 2); return u; }
static double widen_any(ckpt_dtype dt, const unsigned char *p) {
    switch (dt) {
    case CKPT_F32: { float x; memcpy(&x, p, 4); return x; }
    case CKPT_F64: { double x; memcpy(&x, p, 8); return x; }
    case CKPT_BF16: { uint32_t u = (uint32_t)bits16(p) << 16; float x; memcpy(&x, &u, 4); return x; }
    case CKPT_F16: { _Float16 h; memcpy(&h, p, 2); return (double)h; }
    default: return NAN;
    }
}
// x rounded to nearest even into state_t (16 bits: from float, as model_init does)
static state_t to_state(double x) {
#if STATE_IS_REAL
    return (state_t)x;
#else
    float f = (float)x;
    if (state_dtype() == CKPT_F16) { _Float16 h = (_Float16)f; state_t s; memcpy(&s, &h, sizeof s); return s; }
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t b = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    state_t s;
    memcpy(&s, &b, sizeof s);
    return s;
#endif
}
static double from_state(state_t s) { return widen_any(state_dtype(), (const unsigned char *)&s); }

// One group of float tensors into state_t: read directly when the file holds state_t's
// dtype, else converted element by element.
static void read_group(ckpt_file *f, const tensor_info *info, int n, state_t *base) {
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *t = ckpt_find(f, info[i].name);
        ckpt_dtype dt = t ? t->dtype : state_dtype();   // a missing tensor: ckpt_read_into says so
        if (dt != CKPT_F32 && dt != CKPT_F64 && dt != CKPT_BF16 && dt != CKPT_F16) dt = state_dtype();   // refused there
        if (dt == state_dtype()) {
            if (ckpt_read_into(f, info[i].name, dt, info[i].ndim, info[i].shape, base + info[i].offset)) die("weights", f->err);
            continue;
        }
        size_t esize = (size_t)ckpt_dtype_size(dt);
        unsigned char *tmp = malloc(info[i].numel * esize + 1);
        if (ckpt_read_into(f, info[i].name, dt, info[i].ndim, info[i].shape, tmp)) die("weights", f->err);
        for (size_t j = 0; j < info[i].numel; j++) base[info[i].offset + j] = to_state(widen_any(dt, tmp + j * esize));
        free(tmp);
    }
}
static void read_counters(ckpt_file *f, const tensor_info *info, int n, int64_t *base) {
    for (int i = 0; i < n; i++)
        if (ckpt_read_into(f, info[i].name, CKPT_I64, info[i].ndim, info[i].shape, base + info[i].offset))
            die("weights", f->err);
}
// state_t buffer (n) as out_dtype(): itself, or widened to float (exact)
static const void *as_out(const state_t *x, size_t n) {
    if (STATE_IS_REAL) return x;
    float *y = malloc(n * sizeof *y + 1);
    for (size_t j = 0; j < n; j++) y[j] = (float)from_state(x[j]);
    return y;
}

static void add_group(ckpt_writer *w, const char *prefix, const tensor_info *info, int n, const void *base,
                      ckpt_dtype dt) {
    size_t esize = (size_t)ckpt_dtype_size(dt);
    for (int i = 0; i < n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, info[i].name);
        if (ckpt_writer_add(w, name, dt, info[i].ndim, info[i].shape, (const char *)base + info[i].offset * esize))
            die("output", w->err);
    }
}

// Every parameter's gradient NaN before each model_zero_grad (all-ones bytes: NaN in
// every state_t): one that the next backward neither stores (its first writer, after
// zero_grad) nor finds cleared by zero_grad reaches the compared gradients and weights.
static void poison_grads(Model *m) {
    for (int i = 0; i < NUM_PARAM_TENSORS; i++)
        memset(m->grads + model_param_info[i].offset, 0xff, sizeof(state_t) * model_param_info[i].numel);
}

int main(int argc, char **argv) {
    if (argc != 4) die("usage", "parity WORK B STEPS");
    const char *work = argv[1];
    int B = atoi(argv[2]), steps = atoi(argv[3]);
    if (B < 1 || B > BATCH_MAX) die("B", "outside [1, BATCH_MAX]");
    char path[4096];

    Model m;
    if (model_alloc(&m) != 0) die("model", "out of memory");
    model_init(&m, 0);   // every value is then overwritten by the weights file
    m.step = 0;
    ckpt_file f;
    snprintf(path, sizeof path, "%s/weights.safetensors", work);
    if (ckpt_open(&f, path)) die(path, f.err);
    read_group(&f, model_param_info, NUM_PARAM_TENSORS, m.params);
    read_group(&f, model_buffer_info, NUM_BUFFER_TENSORS, m.buffers);
    read_counters(&f, model_counter_info, NUM_COUNTER_TENSORS, m.counters);
    ckpt_close(&f);

    // The batch: every member of Batch is a pointer, one per field, in field order.
    Batch batch;
    _Static_assert(sizeof(Batch) == NUM_BATCH_FIELDS * sizeof(void *), "Batch holds one pointer per field");
    data_array arrays[NUM_BATCH_FIELDS];
    for (int i = 0; i < NUM_BATCH_FIELDS; i++) {
        const batch_field_info *fi = &model_batch_info[i];
        data_err err;
        snprintf(path, sizeof path, "%s/%s.npy", work, fi->name);
        if (npy_read(path, &arrays[i], &err)) die(path, err.msg);
        data_array *a = &arrays[i];
        if (a->numel != (int64_t)B * (int64_t)fi->per_sample) die(path, "wrong number of elements for B");
        void *p = a->data;
        if (fi->is_int) {
            if (a->dtype != DT_I64) die(path, "expected int64");
        } else {
            if (a->dtype != DT_F32) die(path, "expected float32");
            if (sizeof(real) != sizeof(float)) {   // 64-true: widen once
                real *q = malloc((size_t)a->numel * sizeof *q);
                for (int64_t j = 0; j < a->numel; j++) q[j] = ((const float *)a->data)[j];
                p = q;
            }
        }
        ((void **)&batch)[i] = p;
        if (batch_field(&batch, i) != p) die("Batch", "layout is not one pointer per field");
    }

    ckpt_writer w;
    ckpt_writer_init(&w);
    int nloss = steps > 0 ? steps : 1;
    real *losses = calloc((size_t)nloss, sizeof *losses);
    poison_grads(&m);
    model_zero_grad(&m);
    if (steps == 0) {
        losses[0] = model_forward(&m, &batch, B, 1);
        model_backward(&m, &batch, B, (real)1);
        add_group(&w, "grad.", model_param_info, NUM_PARAM_TENSORS, as_out(m.grads, NUM_PARAMS), out_dtype());
    } else {
        Optimizer o;
        if (optimizer_alloc(&o) != 0) die("optimizer", "out of memory");
#if LOSS_SCALING
        float *scales = calloc((size_t)steps, sizeof *scales);
#endif
        for (int s = 0; s < steps; s++) {
#ifndef LOOM_USER_STEP
            losses[s] = model_forward(&m, &batch, B, 1);
#endif
#if defined(LOOM_USER_STEP)
            // a training_step (gen/user_step.lua): the spec's own calls, as train.c runs them
            // (16-mixed: through its GradScaler, in model_user_step)
            losses[s] = model_user_step(&m, &o, &batch, B, s, 0, steps);
            // the gradients the last step leaves (PyTorch's .grad after it): "grad.<param>"
            // (copied: the writer keeps a pointer, and poison_grads overwrites m.grads)
            if (s == steps - 1) {
                state_t *g = malloc(sizeof *g * NUM_PARAMS + 1);
                if (!g) die("gradients", "out of memory");
                memcpy(g, m.grads, sizeof *g * NUM_PARAMS);
                add_group(&w, "grad.", model_param_info, NUM_PARAM_TENSORS, as_out(g, NUM_PARAMS), out_dtype());
            }
#elif LOSS_SCALING
            // as train.c: GradScaler's scaled backward, unscale, skip on inf/nan
            model_backward(&m, &batch, B, (real)o.scaler.scale);
            double lr = lr_at(o.steps, 0, steps);
            int found_inf = scaler_unscale_and_check(&o.scaler, &m);
            if (!found_inf) {
                clip_gradients(&m);
                optimizer_step(&o, &m, lr, momentum_at(o.steps, steps), o.steps);
                o.steps++;
            }
            scaler_update(&o.scaler, found_inf);
#else
            model_backward(&m, &batch, B, (real)1);
            clip_gradients(&m);
            double lr = lr_at(s, 0, steps);
            optimizer_step(&o, &m, lr, momentum_at(s, steps), s);
#endif
#if LOSS_SCALING
            scales[s] = o.scaler.scale;
#endif
            poison_grads(&m);
            model_zero_grad(&m);
            m.step = (uint64_t)(s + 1);
        }
#if LOSS_SCALING
        int64_t sshape[1] = {steps};
        if (ckpt_writer_add(&w, "scale", CKPT_F32, 1, sshape, scales)) die("output", w.err);
#endif
    }
    int64_t shape[1] = {nloss};
    if (ckpt_writer_add(&w, "loss", real_dtype(), 1, shape, losses)) die("output", w.err);
    add_group(&w, "", model_param_info, NUM_PARAM_TENSORS, as_out(m.params, NUM_PARAMS), out_dtype());
    add_group(&w, "", model_buffer_info, NUM_BUFFER_TENSORS, as_out(m.buffers, NUM_BUFFERS), out_dtype());
    add_group(&w, "", model_counter_info, NUM_COUNTER_TENSORS, m.counters, CKPT_I64);
    snprintf(path, sizeof path, "%s/out.safetensors", work);
    if (ckpt_write(&w, path)) die(path, w.err);
    ckpt_writer_free(&w);
    return 0;
}
