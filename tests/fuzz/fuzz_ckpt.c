// libFuzzer harness: a safetensors checkpoint (runtime/ckpt.c) from untrusted bytes.
// Opens it, then uses it as the generated program's loader does: every tensor found by
// name and copied out with its own dtype and shape, the metadata read as integers and
// doubles, and the file checked against a model's expected tensors.
#include "fuzz_file.h"
#include "ckpt.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ckpt_file f;
    if (ckpt_open(&f, fuzz_file(data, size)) == 0) {
        for (int i = 0; i < f.ntensors; i++) {
            const ckpt_tensor *t = &f.tensors[i];
            if (ckpt_find(&f, t->name) != t) abort();   // names are unique, found again
            size_t bytes = (size_t)(t->end - t->begin);
            void *dst = malloc(bytes ? bytes : 1);
            if (!dst) abort();
            if (ckpt_read_into(&f, t->name, t->dtype, t->ndim, t->shape, dst) != 0) abort();
            free(dst);
        }
        for (int i = 0; i < f.nmeta; i++) {
            int64_t v; double d;
            (void)ckpt_meta_get_i64(&f, f.meta[i].key, &v);
            (void)ckpt_meta_get_f64(&f, f.meta[i].key, &d);
            if (ckpt_meta_get(&f, f.meta[i].key) == NULL) abort();
        }
        // a model of one tensor, "w" F32 [2, 3]: the first difference is named
        ckpt_tensor want = { .name = "w", .dtype = CKPT_F32, .ndim = 2, .shape = { 2, 3 } };
        (void)ckpt_check_against(&f, &want, 1);
        float w[6];
        (void)ckpt_read_into(&f, "w", CKPT_F32, 2, want.shape, w);
    }
    if (strlen(f.err) >= CKPT_ERR_LEN) abort();
    ckpt_close(&f);
    return 0;
}
