// libFuzzer harness: an IDX file (runtime/idx.c), plain or gzip, from untrusted bytes.
#include "fuzz_file.h"
#include "fuzz_array.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_check_read(idx_read, fuzz_file(data, size));
    return 0;
}
