#ifndef LOOM_DATA_H
#define LOOM_DATA_H
// Data for generated training programs: file readers (IDX, optionally gzipped, and
// .npy), datasets (named per-sample fields over N samples: Fashion-MNIST, .npy files,
// synthetic), and a loader that cuts a dataset into batches: seeded per-epoch shuffle,
// DistributedSampler-style rank sharding, a prefetch thread, resumable state.
//
// Errors are values: every call that can fail returns a data_code (DATA_OK == 0) and
// writes ONE line into a data_err, naming the file and the problem, e.g.
//   /data/train-images-idx3-ubyte.gz: truncated: expected 47040000 bytes of data for 60000x28x28 uint8, got 1000
// The generated program prints err.msg and exits non-zero; the tests compare it.
//
// Randomness (shuffle, synthetic data) comes only from Philox (philox.h), so the
// epoch-e permutation and synthetic sample i are pure functions of (seed, e) and
// (seed, field, i): the same on every run, every rank, every thread.
//
// Files: data.h (this), data_internal.h, data.c (errors, arrays, datasets),
// idx.c, npy.c, tokens.c, csv.c, loader.c (with the image augmentation); images.c
// (image folders: libpng and libjpeg) only in programs that read images.
// Link with -lz -lpthread -lm (and -lpng -ljpeg with images.c).
#include <stddef.h>
#include <stdint.h>

#define DATA_MAX_DIMS   8    // dimensions of an array (or of one sample of a field)
#define DATA_MAX_FIELDS 8    // fields of a dataset
#define DATA_NAME_MAX   32   // field name length, including the NUL
#define DATA_ERR_MAX    1024 // an error line, including the NUL

// ----------------------------------------------------------------------------
// errors

typedef enum {
    DATA_OK = 0,
    DATA_END = 1,         // loader_next: the epoch is over (not an error)
    DATA_EIO = -1,        // cannot open / read a file
    DATA_EFORMAT = -2,    // not the format it claims to be: magic, header, dtype, layout
    DATA_ETRUNC = -3,     // the file (or gzip stream) ends before the data does
    DATA_EMISMATCH = -4,  // files that belong together disagree (sample counts, shapes)
    DATA_EARG = -5,       // a bad argument from the caller (batch size 0, rank >= replicas, ...)
    DATA_ENOMEM = -6,     // out of memory
    DATA_EINTERNAL = -7,  // a system call that should not fail did (pthread); message has file:line
} data_code;

typedef struct {
    int code;                 // a data_code; DATA_OK when nothing went wrong
    char msg[DATA_ERR_MAX];   // one line, no trailing newline
} data_err;

// ----------------------------------------------------------------------------
// arrays: what the file readers return

typedef enum { DT_U8, DT_I8, DT_I16, DT_I32, DT_I64, DT_F32, DT_F64, DT_COUNT } data_dtype;

const char *dtype_name(data_dtype t);  // "uint8", "float32", ...
size_t dtype_size(data_dtype t);       // bytes per element

typedef struct {
    data_dtype dtype;
    int ndim;                        // 0 (a scalar) .. DATA_MAX_DIMS
    int64_t dims[DATA_MAX_DIMS];     // C order: the last dimension varies fastest
    int64_t numel;                   // product of dims
    void *data;                      // numel elements of dtype, host byte order; malloc'd
} data_array;

void array_free(data_array *a);  // frees a->data; a stays valid and empty

// ----------------------------------------------------------------------------
// file readers

// Reads an IDX file (LeCun's MNIST format), plain or gzip-compressed: which one is
// decided by the file's first bytes (1f 8b), never by its name.  All six IDX dtypes
// (uint8, int8, int16, int32, float32, float64; big-endian on disk) are read and
// converted to host order.  Validates magic, dtype, ndim, and that the file holds
// exactly prod(dims) elements (fewer: "truncated", more: "trailing bytes").
int idx_read(const char *path, data_array *out, data_err *err);

// Reads a .npy file (format versions 1.0, 2.0, 3.0), little-endian uint8, int8,
// int16, int32, int64, float32 or float64, C order only.
int npy_read(const char *path, data_array *out, data_err *err);

// Writes a as a version 1.0 .npy file (2.0 if the header needs it) that numpy.load
// reads; written to path.tmp and renamed, so a crash never leaves half a file.
int npy_write(const char *path, const data_array *a, data_err *err);

// ----------------------------------------------------------------------------
// datasets: N samples, each a set of named fields

typedef struct {
    char name[DATA_NAME_MAX];      // "image", "label", ...
    data_dtype dtype;              // dtype in batches
    int ndim;                      // dims of ONE sample (0 for a scalar label)
    int64_t shape[DATA_MAX_DIMS];  // e.g. image: (1, 28, 28)
    int64_t numel;                 // elements per sample
    size_t nbytes;                 // bytes per sample = numel * dtype_size(dtype)
} data_field;

typedef struct data_store data_store;  // the samples, shared by views (train/val), refcounted

// A dataset is a view [start, start + n) of a store.  It is a plain value: copy it
// freely, but every dataset filled in by an _open/_split call must be given to
// dataset_free once.
typedef struct {
    int nfields;
    data_field field[DATA_MAX_FIELDS];
    int64_t n;        // samples in this view
    int64_t start;    // first sample of the store in this view
    data_store *store;
} dataset;

// Writes sample i (0 <= i < ds->n) of field f into out (field[f].nbytes bytes).
// Never fails: the data is in memory (or synthetic); thread-safe (read-only).
void dataset_get(const dataset *ds, int f, int64_t i, void *out);
// 1 when every field's samples are in memory as they are read (dataset_get copies or
// converts them), 0 when they are computed on each read (a large synthetic set).
int dataset_in_memory(const dataset *ds);
// Starts loading sample i's rows into the cache (a hint; nothing for computed samples).
void dataset_prefetch(const dataset *ds, int64_t i);
int dataset_field(const dataset *ds, const char *name);  // index of the field, or -1
void dataset_free(dataset *ds);
// A second reference to the same samples (the loader holds one).
dataset dataset_ref(const dataset *ds);

// Splits ds into train = the first n - val_split samples and val = the last
// val_split samples (a fixed split, no shuffling); val_split may be 0 (val empty).
int dataset_split(const dataset *ds, int64_t val_split, dataset *train, dataset *val, data_err *err);

// Fashion-MNIST from root (the four *-idx?-ubyte[.gz] files; .gz preferred when both
// exist).  Fields: image float32 (1, 28, 28) = (pixel / 255 - mean) / std
// (mean 0, std 1 leave pixels in [0, 1]); label int64 () in 0..9.
// train/val come from the 60000 training samples (val = the last val_split of them),
// test from the 10000 test samples.  val or test may be NULL when not wanted.
typedef struct {
    int64_t val_split;   // 0 .. 59999
    float mean, std;     // std == 0 means 1
} fashion_opts;
int fashion_open(const char *root, const fashion_opts *o, dataset *train, dataset *val, dataset *test, data_err *err);

// A dataset whose fields are .npy files (all with the same first dimension N; one
// sample of a field is one row).  The batch dtype is the file's, except: out_dtype
// converts (e.g. uint8 -> float32), and for float32/float64 output
// value = (x * scale - mean) / std (scale 0 means 1, std 0 means 1).
//
// A generated program was compiled for one per-sample shape and dtype: with `check`
// set, a file (e.g. under --data) whose rows have another shape, or whose dtype is not
// in `dtypes`, is refused naming the file, and with hi > lo every value of an integer
// field must lie in [lo, hi) or equal `except` (a class index, cross_entropy's
// ignore_index), else the file and the sample are named.
typedef struct {
    const char *name;
    const char *path;
    int convert;          // 0: keep the file's dtype; 1: convert to out_dtype
    data_dtype out_dtype;
    float scale, mean, std;
    int check;                       // 1: the file must match ndim/shape and dtypes
    int ndim;                        // dims of one sample (a row)
    int64_t shape[DATA_MAX_DIMS];
    unsigned dtypes;                 // file dtypes accepted: bit 1u << DT_x for each
    int64_t lo, hi, except;          // integer values: [lo, hi) or `except` (hi > lo)
    const char *range_what;          // what the values are, for the message ("class index")
} npy_field_spec;
int npy_dataset_open(const npy_field_spec *fields, int nfields, dataset *out, data_err *err);

// A synthetic dataset: element j of sample i of field `name` is a pure function of
// (seed, name, i, j) (Philox with the counter (j, i, hash(name))), so it does not
// depend on n, on the other fields, or on the order of reads.
typedef enum {
    SYNTH_UNIFORM,    // uniform in [a, b)
    SYNTH_NORMAL,     // normal, mean a, standard deviation b (Box-Muller)
    SYNTH_BERNOULLI,  // 1 with probability a, else 0
    SYNTH_RANDINT,    // integer uniform in [a, b)
} synth_dist;
typedef struct {
    const char *name;
    data_dtype dtype;              // DT_F32, DT_F64, DT_I64, DT_I32 or DT_U8
    int ndim;
    int64_t shape[DATA_MAX_DIMS];  // one sample
    synth_dist dist;
    double a, b;
} synth_field_spec;
int synth_open(const synth_field_spec *fields, int nfields, int64_t n, uint64_t seed, dataset *out, data_err *err);

// ----------------------------------------------------------------------------
// token files (runtime/tokens.c): llm.c's layout, a header of 256 little-endian int32
// (magic 20240520, version 1, the token count) and then uint16 tokens

#define TOKENS_MAGIC 20240520u
#define TOKENS_VERSION 1u
#define TOKENS_HEADER_BYTES 1024

// Writes n tokens to path (through path.tmp and a rename).
int tokens_write(const char *path, const uint16_t *tokens, int64_t n, data_err *err);
// Reads a token file: *tokens (malloc'd, *n of them).  A short file, a wrong magic or
// version, or bytes beyond the count the header gives are one-line errors.
int tokens_read(const char *path, uint16_t **tokens, int64_t *n, data_err *err);

// A dataset of windows of a token file: sample i is the T + 1 tokens from offset
// i * stride; field `input` (T,) int64 holds its first T, field `target` (T,) int64 its
// last T (the next token of each).  stride 1: every offset is a sample, so a shuffling
// loader draws random windows (seeded, without repeats in an epoch, sharded by rank);
// stride T: sequential, non-overlapping windows (validation).  With vocab > 0 every
// token must be < vocab (an embedding's size), else the file and the position are named.
typedef struct {
    const char *path;
    int64_t context;     // T
    int64_t stride;      // >= 1
    int64_t vocab;       // 0: no check
    const char *input, *target;   // field names ("idx", "targets")
} tokens_opts;
int tokens_open(const tokens_opts *o, dataset *out, data_err *err);

// Splits ds at random, as torch.utils.data.random_split with a seeded generator: val
// gets val_count samples drawn by sampler_permute(seed, -1, n), train the others (both
// in the dataset's order).  The samples are copied into a new store: only datasets of
// arrays (CSV, image folders, .npy, Fashion-MNIST) can be split so.
int dataset_random_split(const dataset *ds, int64_t val_count, uint64_t seed, dataset *train, dataset *val, data_err *err);
// How many samples a validation split of `val` means for n samples, as scikit-learn's
// train_test_split reads test_size: 0 < val < 1 a fraction (rounded up), else a count.
int64_t data_split_count(double val, int64_t n);

// ----------------------------------------------------------------------------
// CSV files (runtime/csv.c): numeric columns chosen by name (or 0-based index), read
// once into memory.  Fields: `input` float32 (nfeatures,) and `target`: int64 () class
// indices when classes > 0 (cells are integers in [0, classes), or with class_names
// the names, class i being class_names[i]), else float32 (ntargets,).
// Every row must have as many cells as the header (the first row without one); a cell
// of a chosen column must be a finite number.  Errors name the file and the line:
//   data/iris.csv:17: column 'petal_width': 'abc' is not a number
typedef struct {
    const char *name;   // the header's name of the column, or NULL: by index
    int index;          // 0-based column (when name is NULL)
} csv_column;
typedef struct {
    const char *path;
    char delimiter;                 // ',' (0 means ',')
    int header;                     // 1: the first row names the columns
    const csv_column *features;     // the input field's columns, in this order
    int nfeatures;
    const csv_column *targets;      // the target field's columns (one with classes)
    int ntargets;
    int64_t classes;                // > 0: classification; 0: regression (float targets)
    const char *const *class_names; // NULL, or the classes' names (classes of them)
    const char *input, *target;     // field names
} csv_opts;
int csv_open(const csv_opts *o, dataset *out, data_err *err);

// ----------------------------------------------------------------------------
// image folders (runtime/images.c): torchvision's ImageFolder layout, root/CLASS/FILE,
// classes sorted by name (strcmp) are the labels 0, 1, ...; files sorted by name in each
// class; PNG (libpng) and JPEG (libjpeg-turbo), told apart by their first bytes.  Other
// files are skipped as ImageFolder skips them, except other image formats (.bmp, .gif,
// .webp, .tif, .ppm, .pgm), which are refused.  Every image is decoded once at open:
// converted to gray (PIL's convert("L"): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16)
// or RGB, resized to height x width bilinearly as torch's interpolate(align_corners =
// False, antialias = False) does on the uint8 image in float (torchvision's
// Resize(antialias=False) on a tensor image), rounded to uint8.  Field `input` float32
// (channels, height, width) = (pixel / 255 - mean[c]) / std[c]; field `target` int64 ().
#define IMAGE_MAX_CHANNELS 3
typedef struct {
    const char *root;
    int channels;                     // 1 (gray) or 3 (RGB)
    int height, width;
    float mean[IMAGE_MAX_CHANNELS], std[IMAGE_MAX_CHANNELS];
    const char *input, *target;       // field names
    const char *classes_from;         // NULL, or the root whose class folders this one must have (a val folder: the train folder's)
    int64_t max_classes;              // > 0: more class folders than this is an error (the model's outputs)
} image_folder_opts;
int image_folder_open(const image_folder_opts *o, dataset *out, data_err *err);
// Decodes one PNG or JPEG file to (channels, height, width) uint8 as image_folder_open
// does (*out malloc'd).  height/width 0: the file's own size, returned in *h, *w.
int image_read(const char *path, int channels, int height, int width, uint8_t **out, int *h, int *w, data_err *err);

// ----------------------------------------------------------------------------
// augmentation (runtime/loader.c), on the training loader's image field: torchvision's
// RandomCrop(size = the image's, padding) and RandomHorizontalFlip(p), in that order.
// The draws of sample i in epoch e are Philox(seed; i, e, "AUGM"): a pure function of
// (seed, epoch, sample), so prefetch, resume and ranks see the same images.
typedef struct {
    const char *field;                // the image field: float32 (channels, height, width)
    int64_t padding;                  // RandomCrop: pad every side by this, crop back at a random offset; 0: no crop
    double hflip;                     // RandomHorizontalFlip's p; 0: no flip
    float fill[IMAGE_MAX_CHANNELS];   // the padded value of channel c (what a 0 pixel normalises to)
} augment_opts;
// img (C, H, W) augmented in place (tmp: C*H*W floats of scratch) for sample `sample`
// of epoch `epoch`.
void image_augment(const augment_opts *a, int64_t C, int64_t H, int64_t W, uint64_t seed, int64_t epoch, int64_t sample,
                   float *img, float *tmp);

// ----------------------------------------------------------------------------
// sampling: shuffle and shard, as torch.utils.data.DistributedSampler does

// perm (n,) = the permutation of epoch `epoch`: Fisher-Yates driven by Philox keyed
// by seed, so a pure function of (seed, epoch, n).
void sampler_permute(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

// The samples rank `rank` of num_replicas sees, in order: out (ceil(n/R),) with
// out[p] = order[(rank + p*R) % n]: the order padded to a multiple of R by repeating
// its first indices, then every R-th from rank.  Returns ceil(n/R).
int64_t sampler_shard(const int64_t *order, int64_t n, int num_replicas, int rank, int64_t *out);

// ----------------------------------------------------------------------------
// the loader

// loader_opts.prefetch.  AUTO keeps the thread for batches that cost more than copying
// memory (augmented images, synthetic samples too many to generate up front) and
// assembles the others in loader_next, with the next batch's rows already on their way
// to the cache: a thread of its own costs a tiny model more in hand-offs than the copy,
// and takes a core from the training threads on a machine with none to spare (issue 12).
enum { LOADER_PREFETCH_NONE, LOADER_PREFETCH_AUTO, LOADER_PREFETCH_ALWAYS };

typedef struct {
    int64_t batch_size;
    int shuffle;          // reshuffle every epoch (sampler_permute(seed, epoch))
    uint64_t seed;
    int drop_last;        // drop this rank's last, incomplete batch
    int num_replicas;     // 0 or 1: no sharding
    int rank;
    int prefetch;         // LOADER_PREFETCH_*: assemble the next batches on a background thread
    const augment_opts *augment;   // NULL, or the image augmentation (training data only)
} loader_opts;

typedef struct {
    int64_t size;                 // B: samples in this batch (last one may be smaller)
    int64_t epoch, index;         // batch `index` of epoch `epoch`
    int nfields;
    const data_field *field;      // field[f] describes data[f]
    void *data[DATA_MAX_FIELDS];  // field f: (B, *field[f].shape) contiguous, field[f].dtype
    const int64_t *sample;        // (B,) dataset index of each sample
} data_batch;

// Where a loader is: batch `batch` of epoch `epoch` is the next to come.  Saved in
// checkpoints; the other members let loader_seek refuse a state from another setup.
typedef struct {
    int64_t epoch, batch;
    uint64_t seed;
    int64_t n, batch_size;
    int32_t num_replicas, rank, shuffle, drop_last;
} loader_state;

typedef struct loader loader;

// Opens a loader over ds (it keeps its own reference) at epoch 0, batch 0.
int loader_open(loader **out, const dataset *ds, const loader_opts *o, data_err *err);
// Fills *b with the next batch (DATA_OK), or returns DATA_END once after an epoch's
// last batch; the call after that starts the next epoch.  b's buffers belong to the
// loader and stay valid until the next loader_next / loader_seek / loader_close.
// With a prefetch thread (loader_opts.prefetch), the batch was assembled in the
// background and the ones after it are being assembled while the caller trains.
int loader_next(loader *L, data_batch *b, data_err *err);
int64_t loader_len(const loader *L);  // batches per epoch for this rank
int loader_threaded(const loader *L);  // 1 when a prefetch thread assembles the batches
loader_state loader_state_get(const loader *L);
// Continues from s (saved by loader_state_get): the batches that follow are bit-for-bit
// those the saved loader would have produced.  Refuses a state from another setup.
int loader_seek(loader *L, const loader_state *s, data_err *err);
void loader_close(loader *L);  // stops and joins the prefetch thread, frees everything

#endif
