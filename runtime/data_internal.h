#ifndef LOOM_DATA_INTERNAL_H
#define LOOM_DATA_INTERNAL_H
// Helpers shared by data.c, idx.c, npy.c and loader.c; not part of the API.
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include "data.h"

// Fills err with (code, one formatted line) and returns code, so that a failing
// path reads `return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, ...);`.
int data_fail(data_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// data_ok(err): clears err and returns DATA_OK.
int data_ok(data_err *err);

// malloc that reports failure as DATA_ENOMEM with the caller's file:line and what
// the memory was for.  Usage: p = data_malloc(bytes, "image data", err); if (!p) return err->code;
void *data_malloc_at(size_t bytes, const char *what, data_err *err, const char *file, int line);
#define data_malloc(bytes, what, err) data_malloc_at((bytes), (what), (err), __FILE__, __LINE__)

// A pthread call that should never fail: on failure return DATA_EINTERNAL naming
// file:line and the call.  Only inside functions that return a data_code and have `err`.
#define PTHREAD_CHECK(call) do { \
    int rc_ = (call); \
    if (rc_ != 0) return data_fail(err, DATA_EINTERNAL, "%s:%d: %s failed: %s (loom bug or out of resources)", \
                                   __FILE__, __LINE__, #call, strerror(rc_)); \
} while (0)

// A file read through zlib: gzip-compressed or plain, decided by its first two bytes
// (gzopen's transparent mode), never by its name.
typedef struct {
    gzFile gz;
    const char *path;
    int compressed;  // 1 if the file is gzip
    int64_t pos;     // uncompressed bytes consumed so far
    int truncated_gz;  // zlib said "unexpected end of file": the gzip stream is cut short
    int64_t size;      // the file's size on disk
} data_file;

int dfile_open(data_file *f, const char *path, data_err *err);
// The most uncompressed bytes the rest of the file can hold: what is left of a plain
// file; deflate's largest ratio (1032:1) times the size of a gzip file.  Readers size
// their buffers by it, so a header that claims more than the file holds costs no large
// allocation.
int64_t dfile_most_left(const data_file *f);
// Reads up to n bytes; *got = how many were read (fewer only at end of data).  A
// gzip stream that ends early or is corrupt is an error (DATA_ETRUNC / DATA_EFORMAT)
// whose message ends with `context` (what was being read).
int dfile_read(data_file *f, void *buf, size_t n, size_t *got, const char *context, data_err *err);
// Checks that nothing follows the data (a file with extra bytes is probably not
// what its header says).
int dfile_expect_eof(data_file *f, data_err *err);
void dfile_close(data_file *f);

// A field of a dataset over arrays in memory (dataset_of_arrays): arr (N, *sample
// shape) is taken over (freed with the dataset, also on failure).  Float output is
// x * a[c] + b[c], c = the channel (the sample's first dimension) when nchan > 1, else
// x * a[0] + b[0].
typedef struct {
    const char *name;
    data_dtype dtype;   // in batches
    data_array arr;
    int nchan;
    double a[IMAGE_MAX_CHANNELS], b[IMAGE_MAX_CHANNELS];
} array_field;
int dataset_of_arrays(array_field *fields, int nfields, dataset *out, data_err *err);

// "60000x28x28" into buf (a scalar is "()").
const char *dims_str(const int64_t *dims, int ndim, char *buf, size_t bufsize);
// numel = prod(dims), or -1 on overflow of int64 (or of size_t bytes of elemsize).
int64_t dims_numel(const int64_t *dims, int ndim, size_t elemsize);

#endif
