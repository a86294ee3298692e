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
// Each tensor's data carry a CRC-32 (zlib's) in the metadata, "crc32:NAME" = 8 hex
// digits: ckpt_open verifies every one present and names the tensor whose bytes do not
// match (safetensors itself has no checksum); a file without them (written by PyTorch
// or the safetensors package) loads as before.  The keys are the format's, not the
// caller's: ckpt_meta_get does not see them.
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
    int fd;                                            // the file, open until ckpt_close (-1: none)
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
// offsets contiguous and inside the file; the file stays open (f->fd) until ckpt_close,
// for ckpt_read_into's reads. On failure f->err says why; call ckpt_close either way.
int ckpt_open(ckpt_file *f, const char *path);
void ckpt_close(ckpt_file *f);
const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name);   // NULL if absent
// Copies tensor `name` into dst (pread from f->fd) after checking that it exists with
// this dtype and shape.
int ckpt_read_into(ckpt_file *f, const char *name, ckpt_dtype dt, int ndim,
                   const int64_t *shape, void *dst);
// Compares the checkpoint with the tensors a model expects (name, dtype, shape) and
// names the first difference: a tensor of the model missing from the checkpoint or of
// another shape/dtype (in the model's order), else a checkpoint tensor the model lacks.
int ckpt_check_against(ckpt_file *f, const ckpt_tensor *expected, int n);
const char *ckpt_meta_get(const ckpt_file *f, const char *key);         // NULL if absent
int ckpt_meta_get_i64(ckpt_file *f, const char *key, int64_t *out);    // missing/bad -> error
int ckpt_meta_get_f64(ckpt_file *f, const char *key, double *out);
// An integer in [lo, hi]; out of range is an error naming the file, the key and the range.
int ckpt_meta_get_i64_in(ckpt_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out);

// --- weights from elsewhere: Fabric's load_raw(path, model, strict) ---
// One tensor the program wants from a weights-only file (a state_dict written by
// safetensors' save_file): its PyTorch name, the dtype it is kept in here, its shape,
// and where its elements go.
typedef struct {
    const char *name;
    ckpt_dtype dtype;
    int ndim;
    const int64_t *shape;
    void *dst;
} ckpt_slot;
// Copies element data of dtype `from` into `to` (n elements): the float dtypes (F64,
// F32, F16, BF16) convert among themselves, rounded to nearest even as torch's .to()
// does (F64 to F16/BF16 through F32, as torch); the integer dtypes (I64, I32, I16, I8, U8) into I64.  -1 for any other pair.
int ckpt_convert(ckpt_dtype to, void *dst, ckpt_dtype from, const void *src, int64_t n);
// Loads `path` into `slots` by name.  A tensor of another shape, or of another kind
// (integer for a float slot, float for an integer one), is an error naming the file and
// the tensor, strict or not (as PyTorch's load_state_dict).  strict: a slot missing
// from the file, or a tensor of the file that is no slot, is an error naming the first;
// not strict: those are skipped (a missing slot keeps its value) and `note` (note_len
// bytes) lists them in one line as PyTorch's _IncompatibleKeys; empty when none.  A loom
// checkpoint's optimizer state ("optimizer.*" in a file with a "spec_hash") is skipped:
// its weights load as from a weights-only file.
// Returns 0, or -1 with one line in err.
int ckpt_load_raw(const char *path, const ckpt_slot *slots, int n, int strict, char *err, char *note, size_t note_len);

// --- a training run: what --resume continues besides the tensors ---
// Every count a run keeps is at most CKPT_MAX_COUNT (2^52: exact as a double, and no
// arithmetic on it overflows int64); the limits --epochs and --max-steps at most
// CKPT_MAX_EPOCHS / CKPT_MAX_COUNT.
#define CKPT_MAX_COUNT (INT64_C(1) << 52)
#define CKPT_MAX_EPOCHS INT64_C(2147483647)
typedef struct {
    int64_t step, epoch, batch;            // optimizer steps done; the epoch and batch to continue at
    int64_t loader_epoch, loader_batch;    // the training loader's position
    int64_t seed;                          // weights, shuffle, dropout and synthetic data
    int64_t epochs, max_steps;             // the run's limits (--epochs, --max-steps; 0: none)
    int64_t total_steps;                   // the steps it was planned for: the schedule's horizon
    int64_t batch_size, train_size;        // samples per batch, and in the training set
} ckpt_run;
// Flags given on the command line (ckpt_run_resume's `given`)
enum { CKPT_GIVEN_EPOCHS = 1, CKPT_GIVEN_MAX_STEPS = 2, CKPT_GIVEN_SEED = 4 };
int ckpt_run_save(ckpt_writer *w, const ckpt_run *r);
// Reads a run saved by ckpt_run_save: every key present and in range, and, when
// spec_hash is not NULL, the checkpoint's "spec_hash" equal to it (a checkpoint of
// another version of the spec is refused).  Errors name the file.
int ckpt_run_load(ckpt_file *f, const char *spec_hash, ckpt_run *r);
// --resume: `run` holds this program's flags (epochs, max_steps, seed), `given` which of
// them the command line set.  Those not given take the checkpoint's; a --seed other than
// the checkpoint's is refused.  Returns -1 (err says why) or the given flags that differ
// from the checkpoint's (CKPT_GIVEN_*), for ckpt_run_check.
int ckpt_run_resume(const char *path, const ckpt_run *saved, ckpt_run *run, unsigned given, char *err);
// After the data is open: `run` holds this program's batch_size, train_size and
// total_steps.  A checkpoint of another data size or batch size is refused; so is one
// whose position does not fit its own plan (steps past its total, batches past an epoch).
// `overridden` (from ckpt_run_resume) flags are noted in `note` (empty when none): where
// `spans` (the learning-rate schedule spans the run's steps) and the total changes, the
// note says that the schedule is not the one the checkpoint's run followed.
int ckpt_run_check(const char *path, const ckpt_run *saved, const ckpt_run *run, int64_t batches_per_epoch,
                   int64_t steps_per_epoch, unsigned overridden, int spans, char *err, char *note);

// --- files a newer checkpoint replaces ---
// ModelCheckpoint's old best is deleted only once the checkpoints that stop naming it
// (the new best, last.safetensors) are on disk: a kill in between leaves a stray file,
// never a callback state that names a deleted one.
#define CKPT_PENDING_MAX 16
typedef struct { char path[CKPT_PENDING_MAX][4096]; int n; } ckpt_pending;
void ckpt_pending_add(ckpt_pending *p, const char *path);   // beyond CKPT_PENDING_MAX: left on disk
void ckpt_pending_remove(ckpt_pending *p);                  // deletes them, and empties p

// --- the run directory ---
// Locks dir (flock on the directory itself) for as long as the process lives: a second
// run on the same directory is refused with one line instead of deleting the first
// one's temporaries.  Returns the lock's descriptor, or -1 with err set.
int ckpt_dir_lock(const char *dir, char *err);
// Removes the temporaries (NAME.safetensors.tmp.PID) that dead processes left in dir
// (a run killed while writing); those of live processes stay.  Returns how many.
int ckpt_dir_clean(const char *dir);

#endif
