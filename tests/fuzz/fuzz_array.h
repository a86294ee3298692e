// tests/fuzz/fuzz_array.h — what every data reader's harness checks of one read
// (runtime/data.h): what it returns must hold exactly the elements its dims say, and a
// failure always says why.
#ifndef LOOM_FUZZ_ARRAY_H
#define LOOM_FUZZ_ARRAY_H
#include "data.h"

#include <stdlib.h>
#include <string.h>

typedef int (*fuzz_reader)(const char *path, data_array *a, data_err *err);

static volatile uint8_t fuzz_sink;

// Reads path with `read`, checks the result, frees it.
static void fuzz_check_read(fuzz_reader read, const char *path) {
    data_array a;
    data_err err;
    memset(&a, 0, sizeof a);
    memset(&err, 0, sizeof err);
    if (read(path, &a, &err) == DATA_OK) {
        int64_t n = 1;
        for (int i = 0; i < a.ndim; i++) n *= a.dims[i];
        if (n != a.numel) abort();
        // touch every byte: ASan sees a buffer shorter than numel elements
        for (size_t i = 0; i < (size_t)a.numel * dtype_size(a.dtype); i++) fuzz_sink += ((const uint8_t *)a.data)[i];
    } else if (strlen(err.msg) == 0) {
        abort();
    }
    array_free(&a);
}
#endif
