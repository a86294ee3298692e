#ifndef LOOM_HOOKS_H
#define LOOM_HOOKS_H
// User hooks (Fabric's fabric.call): a spec's `hooks = Hooks { source = "my_hooks.c",
// on_train_batch_end = "my_fn", ... }` names C functions of the user's own file, which
// loom compiles into the program (with -Wall -Wextra -Werror). Each is
//
//   void my_fn(const loom_hook_info *info);
//
// and is called, on the training thread, at its point of the run:
//
//   on_train_batch_end   after each optimizer step (metrics: train/loss, lr-<optimizer>)
//   on_validation_end    after each validation (metrics: the epoch's row: train/loss_epoch,
//                        val/loss, val/acc where the run scores accuracy)
//   on_save_checkpoint   before each checkpoint is written (checkpoint: its path)
//   on_train_end         once, when training ends (also after a stop by signal)
//
// Everything it is given is read-only and lives only for the call. A hook that wants to
// stream metrics to its own system copies what it needs.
#include <stdint.h>

// A parameter of the model under PyTorch's name (as in model.state_dict()).
typedef struct {
    const char *name;
    const char *dtype;         // the state's format: "float32", "float64", "bfloat16", "float16"
    int ndim;
    const int64_t *shape;      // ndim dims
    int64_t numel;
    const void *data;          // numel elements of dtype, row-major
} loom_param_view;

typedef struct {
    const char *point;                 // "on_train_batch_end", ...
    int64_t step;                      // optimizer steps done
    int64_t epoch;                     // the epoch (0-based) the run is in
    int nmetrics;
    const char *const *metric_names;
    const double *metric_values;
    const char *checkpoint;            // on_save_checkpoint: the file about to be written; else NULL
    const char *out_dir;               // the run's --out
    // The model's parameters. On the CPU always; on CUDA (where they live on the
    // device) only at on_save_checkpoint, after the checkpoint's copy to the host, and
    // nparams is 0 elsewhere.
    int nparams;
    const loom_param_view *params;
} loom_hook_info;

typedef void (*loom_hook)(const loom_hook_info *info);

#endif
