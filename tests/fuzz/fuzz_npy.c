// libFuzzer harness: a .npy file (runtime/npy.c) from untrusted bytes.
// Whatever it reads must hold exactly the elements its dims say.
#include "fuzz_file.h"
#include "data.h"

#include <string.h>

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    data_array a;
    data_err err;
    memset(&a, 0, sizeof a);
    memset(&err, 0, sizeof err);
    if (npy_read(fuzz_file(data, size), &a, &err) == DATA_OK) {
        int64_t n = 1;
        for (int i = 0; i < a.ndim; i++) n *= a.dims[i];
        if (n != a.numel) abort();
        // touch every byte: ASan sees a buffer shorter than numel elements
        for (size_t i = 0; i < (size_t)a.numel * dtype_size(a.dtype); i++) sink += ((const uint8_t *)a.data)[i];
    } else if (strlen(err.msg) == 0) {
        abort();   // a failure always says why
    }
    array_free(&a);
    return 0;
}
