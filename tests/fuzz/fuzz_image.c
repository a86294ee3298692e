// libFuzzer harness: a PNG or JPEG file (runtime/images.c: libpng and libjpeg-turbo with
// their errors turned into one line by longjmp) from untrusted bytes, decoded at its own
// size and resized: what it returns is the size it says, and a failure says why.
#include "fuzz_file.h"
#include <string.h>
#include "data.h"

static volatile uint8_t fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    for (int mode = 0; mode < 2; mode++) {   // RGB at the file's size; gray resized to 7 x 5
        uint8_t *img = NULL;
        int h = 0, w = 0, c = mode ? 1 : 3;
        data_err err;
        memset(&err, 0, sizeof err);
        if (image_read(path, c, mode ? 7 : 0, mode ? 5 : 0, &img, &h, &w, &err) == DATA_OK) {
            if (h < 1 || w < 1 || (mode && (h != 7 || w != 5))) abort();
            for (size_t i = 0; i < (size_t)c * (size_t)h * (size_t)w; i++) fuzz_sink += img[i];
            free(img);
        } else if (strlen(err.msg) == 0 || img) {
            abort();
        }
    }
    return 0;
}
