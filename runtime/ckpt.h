#ifndef LOOM_CKPT_H
#define LOOM_CKPT_H
// Checkpoints as safetensors files (the format of Hugging Face's `safetensors`), so
// that PyTorch, the `safetensors` package and anything else that reads them can load a
// loom checkpoint, and loom can load theirs.
//
//   u64 little-endian  N, the length of the header
//   N bytes            JSON header, padded with spaces so that N is a multiple of 8:
//                        {"__metadata__": {"step": "1200", ...},
//                         "net.0.weight": {"dtype": "F32", "shape": [128, 784],
//                                          "data_offsets": [0, 401408]}, ...}
//   the data           every tensor's bytes, little-endian, C order; data_offsets are
//                      relative to the first byte after the header, with no gaps.
//
// Writing is atomic (temporary file, fsync, rename, fsync of the directory): a reader
// sees the old checkpoint or the new one, never half of one, and a crash at any moment
// leaves the previous checkpoint intact.
//
// Errors never exit: a function returns non-zero and leaves one line in `err`, naming
// the file and the problem, e.g.
//   ckpt.safetensors: tensor 'net.1.weight' has shape [256, 784] in the checkpoint but [128, 784] in this model
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CKPT_F32, CKPT_F64, CKPT_F16, CKPT_BF16, CKPT_I64, CKPT_I32, CKPT_I16, CKPT_I8,
    CKPT_U8, CKPT_BOOL, CKPT_NDTYPES
} ckpt_dtype;

#define CKPT_MAX_DIMS 8
#define CKPT_ERR_LEN 512

// One tensor: in a writer, `data` points at the caller's memory (not copied: it must
// stay valid until ckpt_write); in an opened file, into the file's mapping.
typedef struct {
    const char *name;
    ckpt_dtype dtype;
    int ndim;                       // 0 for a scalar (one element)
    int64_t shape[CKPT_MAX_DIMS];
    const void *data;
    uint64_t begin, end;            // byte range in the data section (files only)
} ckpt_tensor;

typedef struct { char *key, *value; } ckpt_meta;

typedef struct {
    ckpt_tensor *tensors; int ntensors, cap_tensors;   // in the order added = data order
    ckpt_meta *meta; int nmeta, cap_meta;
    char err[CKPT_ERR_LEN];
} ckpt_writer;

typedef struct {
    char *path;
    unsigned char *map; size_t map_size;               // the whole file, read-only
    char *strings;                                     // names/metadata, decoded, owned
    ckpt_tensor *tensors; int ntensors;                // sorted by data offset
    ckpt_tensor **by_name;                             // sorted by name, for ckpt_find
    ckpt_meta *meta; int nmeta;
    char err[CKPT_ERR_LEN];
} ckpt_file;

// dtype <-> safetensors name ("F32", "BF16", ...) and element size in bytes.
const char *ckpt_dtype_name(ckpt_dtype dt);
int ckpt_dtype_size(ckpt_dtype dt);
int ckpt_dtype_from_name(const char *name, ckpt_dtype *dt);   // 0 when known
int64_t ckpt_numel(int ndim, const int64_t *shape);

// --- writing ---
void ckpt_writer_init(ckpt_writer *w);
void ckpt_writer_free(ckpt_writer *w);
// Adds a tensor (name is copied; data is not). Tensors are laid out in the order added.
int ckpt_writer_add(ckpt_writer *w, const char *name, ckpt_dtype dt, int ndim,
                    const int64_t *shape, const void *data);
// Sets (or replaces) a "__metadata__" string.
int ckpt_writer_set_meta(ckpt_writer *w, const char *key, const char *value);
int ckpt_writer_set_meta_i64(ckpt_writer *w, const char *key, int64_t value);
int ckpt_writer_set_meta_f64(ckpt_writer *w, const char *key, double value);  // round-trips exactly
// Writes `path` atomically: path.tmp.PID, fsync, rename over path, fsync the directory.
int ckpt_write(ckpt_writer *w, const char *path);

// --- reading ---
// Maps and validates the whole file: header JSON, dtypes, shapes against byte sizes,
// offsets contiguous and inside the file. On failure f->err says why; call
// ckpt_close either way.
int ckpt_open(ckpt_file *f, const char *path);
void ckpt_close(ckpt_file *f);
const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name);   // NULL if absent
// Copies tensor `name` into dst after checking that it exists with this dtype and shape.
int ckpt_read_into(ckpt_file *f, const char *name, ckpt_dtype dt, int ndim,
                   const int64_t *shape, void *dst);
// Compares the checkpoint with the tensors a model expects (name, dtype, shape) and
// names the first difference: a tensor of the model missing from the checkpoint or of
// another shape/dtype (in the model's order), else a checkpoint tensor the model lacks.
int ckpt_check_against(ckpt_file *f, const ckpt_tensor *expected, int n);
const char *ckpt_meta_get(const ckpt_file *f, const char *key);         // NULL if absent
int ckpt_meta_get_i64(ckpt_file *f, const char *key, int64_t *out);    // missing/bad -> error
int ckpt_meta_get_f64(ckpt_file *f, const char *key, double *out);

#endif
