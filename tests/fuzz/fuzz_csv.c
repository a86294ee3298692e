// libFuzzer harness: a CSV file (runtime/csv.c) from untrusted bytes, read with columns
// by name (a header) and as class indices: the dataset holds every row it counted, and a
// failure always says why.
#include "fuzz_file.h"
#include <string.h>
#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    static const csv_column cols[] = {{"a", -1}, {NULL, 1}}, tgt[] = {{"c", -1}};
    static const char *const names[] = {"x", "y", "z"};
    csv_opts o = {.path = path, .header = 1, .features = cols, .nfeatures = 2, .targets = tgt, .ntargets = 1,
                  .input = "x", .target = "t"};
    for (int mode = 0; mode < 3; mode++) {   // regression, class indices, class names
        o.classes = mode ? 3 : 0;
        o.class_names = mode == 2 ? names : NULL;
        dataset ds;
        data_err err;
        memset(&err, 0, sizeof err);
        if (csv_open(&o, &ds, &err) == DATA_OK) {
            float x[2], t;
            int64_t c;
            for (int64_t i = 0; i < ds.n; i++) {
                dataset_get(&ds, 0, i, x);
                if (mode) { dataset_get(&ds, 1, i, &c); if (c < 0 || c >= 3) abort(); }
                else dataset_get(&ds, 1, i, &t);
            }
            dataset_free(&ds);
        } else if (strlen(err.msg) == 0) {
            abort();
        }
    }
    return 0;
}
