// libFuzzer harness: a .npy file (runtime/npy.c) from untrusted bytes.
#include "fuzz_file.h"
#include "fuzz_array.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_check_read(npy_read, fuzz_file(data, size));
    return 0;
}
