// data_dump: a dataset as runtime/ reads it, written as .npy files for tests/suite_data.sh
// to compare with its numpy/PIL/torch reference.
//   data_dump csv OUT PATH DELIM HEADER(0|1) CLASSES TARGET COLUMN...   -> OUT/x.npy, OUT/target.npy
//   data_dump images OUT ROOT CHANNELS H W MEAN STD                     -> OUT/image.npy, OUT/label.npy
//   data_dump augment OUT ROOT CHANNELS H W MEAN STD PADDING P SEED EPOCH -> the same, augmented as the
//       training loader does in epoch EPOCH (no shuffle: sample i is image i)
// A column or target given as #N is the 0-based index N.  Errors: the runtime's line, exit 1.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data.h"

static void die(const char *msg) { fprintf(stderr, "%s\n", msg); exit(1); }

static void write_field(const char *out, const dataset *ds, int f) {
    const data_field *fd = &ds->field[f];
    data_array a = {.dtype = fd->dtype, .ndim = fd->ndim + 1, .numel = ds->n * fd->numel};
    a.dims[0] = ds->n;
    for (int d = 0; d < fd->ndim; d++) a.dims[d + 1] = fd->shape[d];
    a.data = malloc(fd->nbytes * (size_t)ds->n);
    for (int64_t i = 0; i < ds->n; i++) dataset_get(ds, f, i, (char *)a.data + (size_t)i * fd->nbytes);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.npy", out, fd->name);
    data_err err;
    if (npy_write(path, &a, &err)) die(err.msg);
    array_free(&a);
}

static csv_column column(const char *s) {
    csv_column c = {NULL, 0};
    if (s[0] == '#') c.index = atoi(s + 1); else c.name = s;
    return c;
}

int main(int argc, char **argv) {
    data_err err;
    dataset ds;
    if (argc > 3 && strcmp(argv[1], "csv") == 0 && argc >= 9) {
        int nf = argc - 8;
        csv_column *cols = calloc((size_t)nf, sizeof *cols);
        for (int k = 0; k < nf; k++) cols[k] = column(argv[8 + k]);
        csv_column target = column(argv[7]);
        csv_opts o = {.path = argv[3], .delimiter = argv[4][0] == 't' ? '\t' : argv[4][0], .header = atoi(argv[5]),
                      .features = cols, .nfeatures = nf, .targets = &target, .ntargets = 1, .classes = atoll(argv[6]),
                      .input = "x", .target = "target"};
        if (csv_open(&o, &ds, &err)) die(err.msg);
        write_field(argv[2], &ds, 0);
        write_field(argv[2], &ds, 1);
        dataset_free(&ds);
        free(cols);
        return 0;
    }
    int augment = argc == 13 && strcmp(argv[1], "augment") == 0;
    if (augment || (argc == 9 && strcmp(argv[1], "images") == 0)) {
        image_folder_opts o = {.root = argv[3], .channels = atoi(argv[4]), .height = atoi(argv[5]), .width = atoi(argv[6]),
                               .input = "image", .target = "label"};
        for (int c = 0; c < IMAGE_MAX_CHANNELS; c++) { o.mean[c] = (float)atof(argv[7]); o.std[c] = (float)atof(argv[8]); }
        if (image_folder_open(&o, &ds, &err)) die(err.msg);
        if (augment) {
            augment_opts a = {.field = "image", .padding = atoll(argv[9]), .hflip = atof(argv[10])};
            for (int c = 0; c < IMAGE_MAX_CHANNELS; c++) a.fill[c] = -o.mean[c] / o.std[c];
            int64_t C = ds.field[0].shape[0], H = ds.field[0].shape[1], W = ds.field[0].shape[2];
            float *tmp = malloc(ds.field[0].nbytes), *img = malloc(ds.field[0].nbytes * (size_t)ds.n);
            for (int64_t i = 0; i < ds.n; i++) {
                float *x = img + i * ds.field[0].numel;
                dataset_get(&ds, 0, i, x);
                image_augment(&a, C, H, W, strtoull(argv[11], NULL, 10), atoll(argv[12]), i, x, tmp);
            }
            data_array arr = {.dtype = DT_F32, .ndim = 4, .dims = {ds.n, C, H, W}, .numel = ds.n * C * H * W, .data = img};
            char path[4096];
            snprintf(path, sizeof path, "%s/image.npy", argv[2]);
            if (npy_write(path, &arr, &err)) die(err.msg);
            free(tmp);
            free(img);
        } else {
            write_field(argv[2], &ds, 0);
        }
        write_field(argv[2], &ds, 1);
        dataset_free(&ds);
        return 0;
    }
    fprintf(stderr, "usage: data_dump csv|images|augment OUT ... (see tests/data/data_dump.c)\n");
    return 2;
}
