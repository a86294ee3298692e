// Parity with PyTorch: runs a generated model on weights and a batch that PyTorch
// wrote, and writes what PyTorch compares (tests/torch/parity.py, tests/suite_parity.sh).
//
// Generic over models: compiled against the files of `loom build SPEC -o DIR`:
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/parity.c DIR/model.c DIR/optim.c
//      DIR/ckpt.c DIR/data.c DIR/npy.c DIR/idx.c -lopenblas -lz -lm
//   ./parity WORK B STEPS
//
// Reads WORK/weights.safetensors (the state_dict: parameters, BatchNorm running
// statistics, int64 num_batches_tracked; every name the model has must be there) and
// one WORK/<field>.npy per Batch field (float32 or int64, B samples).
//   STEPS = 0: one model_forward(training=1) and model_backward(dloss=1); writes
//     WORK/out.safetensors with "loss" (shape [1]), "grad.<param>" for every parameter
//     and the state after the forward (parameters, running statistics, counters).
//   STEPS > 0: STEPS training steps on that one batch, as train.c takes them:
//     forward, backward, clip_gradients, optimizer_step(lr_at, momentum_at), zero_grad;
//     writes "loss" (shape [STEPS], the loss of each step's forward) and the final state.
#include "ckpt.h"
#include "data.h"
#include "model.h"
#include "optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *msg) {
    fprintf(stderr, "parity: %s: %s\n", what, msg);
    exit(2);
}

static ckpt_dtype real_dtype(void) { return sizeof(real) == 8 ? CKPT_F64 : CKPT_F32; }

static void read_group(ckpt_file *f, const tensor_info *info, int n, void *base, ckpt_dtype dt) {
    size_t esize = (size_t)ckpt_dtype_size(dt);
    for (int i = 0; i < n; i++)
        if (ckpt_read_into(f, info[i].name, dt, info[i].ndim, info[i].shape, (char *)base + info[i].offset * esize))
            die("weights", f->err);
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
    read_group(&f, model_param_info, NUM_PARAM_TENSORS, m.params, real_dtype());
    read_group(&f, model_buffer_info, NUM_BUFFER_TENSORS, m.buffers, real_dtype());
    read_group(&f, model_counter_info, NUM_COUNTER_TENSORS, m.counters, CKPT_I64);
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
    model_zero_grad(&m);
    if (steps == 0) {
        losses[0] = model_forward(&m, &batch, B, 1);
        model_backward(&m, &batch, B, (real)1);
        add_group(&w, "grad.", model_param_info, NUM_PARAM_TENSORS, m.grads, real_dtype());
    } else {
        Optimizer o;
        if (optimizer_alloc(&o) != 0) die("optimizer", "out of memory");
        for (int s = 0; s < steps; s++) {
            losses[s] = model_forward(&m, &batch, B, 1);
            model_backward(&m, &batch, B, (real)1);
            clip_gradients(&m);
            double lr = lr_at(s, 0, steps);
            optimizer_step(&o, &m, lr, momentum_at(s, steps), s);
            model_zero_grad(&m);
            m.step = (uint64_t)(s + 1);
        }
    }
    int64_t shape[1] = {nloss};
    if (ckpt_writer_add(&w, "loss", real_dtype(), 1, shape, losses)) die("output", w.err);
    add_group(&w, "", model_param_info, NUM_PARAM_TENSORS, m.params, real_dtype());
    add_group(&w, "", model_buffer_info, NUM_BUFFER_TENSORS, m.buffers, real_dtype());
    add_group(&w, "", model_counter_info, NUM_COUNTER_TENSORS, m.counters, CKPT_I64);
    snprintf(path, sizeof path, "%s/out.safetensors", work);
    if (ckpt_write(&w, path)) die(path, w.err);
    ckpt_writer_free(&w);
    return 0;
}
