// The training program's eval-mode forward on a checkpoint and a batch, for comparing
// loom export's library with it (tests/suite_export.sh).  Compiled against the files
// of `loom build SPEC -o DIR`:
//
//   cc -std=c11 -O2 -fopenmp -IDIR tests/harness/eval_forward.c DIR/model.c DIR/ckpt.c
//      DIR/data.c DIR/npy.c DIR/idx.c DIR/tokens.c -ldnnl -lopenblas -lz -lm
//   ./eval_forward CKPT WORK B OUT
//
// Reads the checkpoint's parameters, buffers and counters (state_t's dtype), one
// WORK/<field>.npy per Batch field (float32 or int64, B samples), runs
// model_forward(training = 0) and writes model_prediction()'s B samples to OUT as raw
// bytes of real (float32 but at 64-true), widened from their storage format as the
// library's output is.
#include "ckpt.h"
#include "data.h"
#include "kernels.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *msg) {
    fprintf(stderr, "eval_forward: %s: %s\n", what, msg);
    exit(2);
}

#define CKPT_f32 CKPT_F32
#define CKPT_f64 CKPT_F64
#define CKPT_bf16 CKPT_BF16
#define CKPT_f16 CKPT_F16
#define STATE_CKPT_(fmt) CKPT_##fmt
#define STATE_CKPT(fmt) STATE_CKPT_(fmt)

static void read_group(ckpt_file *f, const tensor_info *info, int n, void *base, ckpt_dtype dt) {
    size_t esize = (size_t)ckpt_dtype_size(dt);
    for (int i = 0; i < n; i++)
        if (ckpt_read_into(f, info[i].name, dt, info[i].ndim, info[i].shape, (char *)base + info[i].offset * esize))
            die("weights", f->err);
}

int main(int argc, char **argv) {
    if (argc != 5) die("usage", "eval_forward CKPT WORK B OUT");
    int B = atoi(argv[3]);
    if (B < 1 || B > BATCH_MAX) die("B", "outside [1, BATCH_MAX]");
    Model m;
    if (model_alloc(&m)) die("model", "out of memory");
    ckpt_file f;
    if (ckpt_open(&f, argv[1])) die(argv[1], f.err);
    read_group(&f, model_param_info, NUM_PARAM_TENSORS, m.params, STATE_CKPT(STATE_FORMAT));
    read_group(&f, model_buffer_info, NUM_BUFFER_TENSORS, m.buffers, STATE_CKPT(STATE_FORMAT));
    read_group(&f, model_counter_info, NUM_COUNTER_TENSORS, m.counters, CKPT_I64);
    ckpt_close(&f);
    Batch batch;
    _Static_assert(sizeof(Batch) == NUM_BATCH_FIELDS * sizeof(void *), "Batch holds one pointer per field");
    data_array arrays[NUM_BATCH_FIELDS];
    char path[4096];
    for (int i = 0; i < NUM_BATCH_FIELDS; i++) {
        const batch_field_info *fi = &model_batch_info[i];
        data_err err;
        snprintf(path, sizeof path, "%s/%s.npy", argv[2], fi->name);
        if (npy_read(path, &arrays[i], &err)) die(path, err.msg);
        if (arrays[i].numel != (int64_t)B * (int64_t)fi->per_sample) die(path, "wrong number of elements for B");
        if (arrays[i].dtype != (fi->is_int ? DT_I64 : DT_F32) || (!fi->is_int && sizeof(real) != 4)) die(path, "wrong dtype");
        ((void **)&batch)[i] = arrays[i].data;
    }
    model_forward(&m, &batch, B, 0);
    // the prediction's size: its per-sample elements are what the test passes as B's
    // multiple; written as the whole B-sample block the forward made
    FILE *o = fopen(argv[4], "wb");
    if (!o) die(argv[4], "cannot create");
    const char *n_env = getenv("PER_SAMPLE");
    if (!n_env) die("PER_SAMPLE", "not set (elements of the prediction per sample)");
    size_t n = (size_t)B * (size_t)atol(n_env);
    const void *pred = model_prediction(&m);
    real *wide = malloc(n * sizeof(real));
    if (!wide) die("prediction", "out of memory");
    for (size_t i = 0; i < n; i++) {
#define FMT_f32 1
#define FMT_f64 2
#define FMT_bf16 3
#define FMT_f16 4
#define FMT_(f) FMT_##f
#define FMT(f) FMT_(f)
#if FMT(MODEL_PREDICTION_FORMAT) == FMT_bf16
        wide[i] = (real)k_widen_bf16(((const k_bf16 *)pred)[i]);
#elif FMT(MODEL_PREDICTION_FORMAT) == FMT_f16
        wide[i] = (real)k_widen_f16(((const k_f16 *)pred)[i]);
#else
        wide[i] = ((const real *)pred)[i];
#endif
    }
    if (fwrite(wide, sizeof(real), n, o) != n || fclose(o)) die(argv[4], "cannot write");
    free(wide);
    model_free(&m);
    return 0;
}
