/* runtime/ddp.h — DistributedDataParallel's glue for a generated program (issue 13): the
 * ranks, the gradient buckets and their all-reduce (runtime/collectives.h, on MPI), the
 * watchdog that ends a job whose other rank died or is stuck, and errors that name
 * their rank.  Only a program whose strategy is ddp includes it (and links MPI).
 *
 *   main:      ddp_init(&argc, &argv, spec_timeout) → ddp_rank(), ddp_world()
 *   setup:     ddp_set_buckets(table, n, grads, numel, dtype); ddp_broadcast(params, bytes)
 *   each step: ddp_begin_backward(sync) before the backward (sync: the step's last
 *              micro-batch, else no all-reduce: Fabric's no_backward_sync);
 *              model_backward calls ddp_grad_ready(bucket) when a bucket's gradients are
 *              final (its all-reduce starts then) and ddp_progress() between its ops;
 *              ddp_finish_grads() before the optimizer (starts any bucket not started,
 *              waits for all: the gradients are then the mean over ranks)
 *   the stop request rides with the gradients, not in a collective of its own: grads has
 *   numel + 1 elements, and the bucket that ends last is reduced to the end with this
 *   rank's request (1 when it has a stop signal as that bucket starts, else 0) in the
 *   last; ddp_stop_requested() after ddp_finish_grads is then the same on every rank
 */
#ifndef LOOM_DDP_H
#define LOOM_DDP_H
#include <stddef.h>
#include <stdint.h>
/* lc_dtype (the CPU program's gradients): a CUDA program includes loom_cuda.h first,
 * whose formats share the LC_ names, and reduces its gradients through ddp_nccl.h */
#ifndef LOOM_CUDA_H
#include "collectives.h"
#endif

typedef struct {
    size_t first, count;   /* elements of the gradient arena */
} ddp_bucket;

/* MPI up; --ddp-timeout S taken out of argv (default: the spec's); the exit hook that
 * finalizes MPI (or not, after an error: mpirun then ends the other ranks) */
void ddp_init(int *argc, char ***argv, double default_timeout);
int ddp_rank(void);
int ddp_local_rank(void);   /* among this node's ranks (a CUDA rank's GPU) */
int ddp_world(void);
double ddp_timeout(void);
/* the watchdog around a wait of the caller's own that ends only when every rank got there
 * (a CUDA step's read-back, behind its NCCL all-reduce): longer than the timeout ends the
 * job with one line naming `what` (a string literal), as a collective here would */
void ddp_watch(const char *what);
void ddp_unwatch(void);
/* one line "rank R: what" on stderr, then exit(1) (without MPI_Finalize: mpirun ends the job) */
void ddp_die(const char *what);
/* a private directory for a rank other than 0 (its outputs are not the run's), removed at exit */
const char *ddp_private_dir(void);

#ifndef LOOM_CUDA_H
void ddp_set_buckets(const ddp_bucket *buckets, int n, void *grads, size_t numel, lc_dtype t);
/* a training_step's (gen/user_step.lua), in place of the buckets: before an optimizer's
 * step, the runs of the gradient arena `grads` (elements of type t) that the step's
 * backwards changed since they were last averaged, each all-reduced to its mean over the
 * ranks (all started, then waited for; counted in ddp_wait_seconds, ddp_reduced_bytes) */
void ddp_average_grads(void *grads, const ddp_bucket *runs, int n, lc_dtype t);
#endif
void ddp_begin_backward(int sync);
void ddp_grad_ready(int bucket);
void ddp_progress(void);
void ddp_finish_grads(void);
/* 1 on every rank when any rank had a stop signal as the step's gradients were reduced (one
 * rank: this one's signal); after the step's ddp_finish_grads */
int ddp_stop_requested(void);

/* rank 0's bytes on every rank */
void ddp_broadcast(void *buf, size_t bytes);
/* in place: the sum over ranks of n doubles */
void ddp_sum(double *x, int n);
/* every rank's `bytes` at mine, rank by rank, into all (world × bytes) */
void ddp_all_gather(const void *mine, size_t bytes, void *all);
/* 1 on every rank when any rank passes 1 (a stop request) */
int ddp_any(int flag);
/* every rank's n doubles, rank by rank, into all (world * n): the logged metrics are
 * combined from them in rank order, so every rank computes the same values (its
 * callbacks then decide alike) and a max or a NaN is reduced as the program says */
void ddp_gather(const double *x, int n, double *all);

/* FSDP with sharding_strategy SHARD_GRAD_OP (ZeRO-2's split; gen/strategy.lua): every rank
 * holds the whole parameters; the flat parameter arena [0, numel) is cut into world shards
 * of ceil(numel/world) elements, and rank r owns [fsdp_lo(), fsdp_hi()): its optimizer
 * state (fsdp_shard_len() elements per buffer) and its averaged gradients.
 *   setup:     fsdp_init(numel, params, grads, dtype) after ddp_init
 *   each step: ddp_begin_backward(sync) as DDP's (no reduce-scatter on accumulation
 *              micro-steps); fsdp_finish_grads() before the optimizer: the gradients
 *              reduce-scattered (averaged), this rank's shard written to grads[lo, hi)
 *              (the rest of grads stays this rank's own sum: nothing reads it); the
 *              optimizer updates params[lo, hi); fsdp_gather_params() after it: every
 *              rank's updated shard on every rank
 *   checkpoints (a full state dict, Fabric's default): fsdp_gather(shard) returns the
 *              full tensor on rank 0 (NULL elsewhere; every rank calls it; free() it);
 *              fsdp_keep_shard(shard, full) keeps this rank's part of a full tensor read
 *              from a checkpoint */
#ifndef LOOM_CUDA_H
void fsdp_init(size_t numel, void *params, void *grads, lc_dtype t);
/* the optimizer state's type when it is not the parameters' (16-true: float state); after
 * fsdp_init, before the first fsdp_shard_alloc */
void fsdp_state_dtype(lc_dtype t);
#endif
/* the CUDA program's host side (runtime/ddp_nccl.h's fsdp_nccl_init calls it): the
 * shards' bounds, fsdp_gather and fsdp_keep_shard for elements of these sizes (bytes) */
void fsdp_init_host(size_t numel, size_t esize, size_t state_esize);
size_t fsdp_lo(void);
size_t fsdp_hi(void);
size_t fsdp_shard_len(void);
void *fsdp_shard_alloc(void);   /* zeroed, fsdp_shard_len() elements; NULL: out of memory */
void fsdp_finish_grads(void);
void fsdp_gather_params(void);
void *fsdp_gather(const void *shard);
void fsdp_keep_shard(void *shard, const void *full);
/* FSDP with FULL_SHARD (FSDPStrategy's default): the parameters are sharded as the
 * gradients' shards above, [fsdp_lo(), fsdp_hi()) of the flat arena, and the model's
 * `params` is one gathered buffer of the largest unit's elements.  A unit is a range of
 * the arena (its wrapped module's parameters); the generated model_forward and
 * model_backward all-gather a unit into the buffer before the ops that read it (again
 * before its backward: reshard_after_forward) and reduce-scatter its gradients as soon
 * as its backward made them final.
 *   setup:     fsdp_init, fsdp_set_units(table, n) (the table outlives the run); the full
 *              parameters initialised (or resumed) in model.params, then
 *              m.params = fsdp_shard_params(m.params): this rank's shard kept, the full
 *              arena freed, model.params now the gathered buffer (fsdp_gathered_len() elements)
 *   model:     fsdp_gather_unit(u); fsdp_unit_grads_ready(u) (every unit a gradient
 *              reaches, on every micro-batch)
 *   each step: fsdp_finish_grads(), the optimizer on fsdp_param_shard() and
 *              fsdp_grad_shard() (indexed from fsdp_lo()); no fsdp_gather_params() */
typedef struct {
    size_t first, count;   /* elements of the flat parameter arena */
    long grad_at;          /* where the backward writes its gradients in the units' buffers (-1: none reach it) */
} fsdp_unit;
void fsdp_set_units(const fsdp_unit *units, int n);
void *fsdp_shard_params(void *full);
/* the gradients as the parameters: m.grads = fsdp_shard_grads(m.grads, len, accumulate)
 * frees the whole arena and returns the units' buffers (len elements, zeroed: the backward
 * writes a unit's gradients at its grad_at); fsdp_begin_backward(first) before each
 * micro-batch's backward (first: a step's first); fsdp_unit_grads_ready reduce-scatters a
 * unit's gradients into this rank's shard, fsdp_grad_shard() (fsdp_shard_len() elements,
 * indexed from fsdp_lo()), on every micro-batch — the first straight into it, the others
 * (accumulate: ACCUMULATE > 1, a landing buffer of a unit's part) added to it, as PyTorch
 * FSDP's sharded gradients — and zeroes the unit's buffer; fsdp_zero_grads() zeroes the
 * shard after the step */
void *fsdp_shard_grads(void *full, size_t len, int accumulate);
void fsdp_begin_backward(int first);
void *fsdp_grad_shard(void);
void fsdp_zero_grads(void);
size_t fsdp_gathered_len(void);
void *fsdp_param_shard(void);
/* the parameters' shards (in their type, not the optimizer state's: 16-true) whole on rank
 * 0 (NULL elsewhere; every rank calls it; free() it), and this rank's part of whole ones */
void *fsdp_gather_param_shards(void);
void fsdp_keep_param_shard(const void *full);
void fsdp_gather_unit(int u);
void fsdp_unit_grads_ready(int u);
extern double fsdp_gathered_bytes;   /* all-gathered by fsdp_gather_unit in this run */

/* the bytes each rank holds (its startup line and the tests): parameters, the backward's
 * gradient arena (FULL_SHARD: the units' buffers and the part of one a reduce-scatter brings),
 * the gradient shard, one optimizer state buffer's shard */
void fsdp_bytes(double *params, double *grads, double *grad_shard, double *state_shard);

/* for the report / bench: seconds spent waiting in ddp_finish_grads, all-reduced bytes */
extern double ddp_wait_seconds;
extern double ddp_reduced_bytes;   /* (FSDP: reduce-scattered and all-gathered) */
#endif
