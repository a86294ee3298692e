/* runtime/ddp_nccl.h — DistributedDataParallel's gradient all-reduce and FSDP's
 * collectives on the GPU, over NCCL (issue 13).  The ranks, their errors, the watchdog and
 * the host's collectives (metrics, the data's shards, checkpoints' gathers) stay
 * runtime/ddp.h's, on MPI; NCCL is bootstrapped over it (rank 0's ncclUniqueId broadcast
 * with MPI) and carries the device's tensors (the parameters' broadcast at start, the
 * gradients, FSDP's parameters) on a stream of its own, so the buckets' all-reduces overlap
 * the rest of backward.  Only a CUDA program whose strategy is ddp or fsdp includes it (and
 * links NCCL and MPI).
 *
 *   main:      ddp_init (runtime/ddp.h), then ddp_nccl_init(): this rank's GPU is its
 *              local rank (refused past the node's GPUs); the communicator over every rank
 *   setup:     ddp_nccl_set_buckets(table, n, d_grads, format, esize, compute stream)
 *   each step: ddp_nccl_begin_backward(sync) on the host before the step is queued or its
 *              graph launched (model.cu's model_train_step; sync: the step's last
 *              micro-batch, else no all-reduce: Fabric's no_backward_sync); then, queued on
 *              the compute stream (model.cu's step_ops, or captured into a graph by it):
 *              ddp_nccl_grad_ready(bucket) where the backward has queued a bucket's last
 *              gradient (the NCCL stream waits for that point, then all-reduces it);
 *              ddp_nccl_finish_grads() before the optimizer (any bucket not started, then
 *              the compute stream waits for the NCCL stream: the gradients are the mean)
 *   the stop request rides with the gradients: one more element after the arena's end
 *   (d_grads[numel], the bucket that ends last extended over the padding to it), 1 on a rank that has a stop
 *   signal when its step began (copied from a pinned word ddp_nccl_begin_backward writes,
 *   so a graph's replay copies each step's), so after the all-reduce every rank reads the
 *   same answer; ddp_nccl_stop_requested() after the step's loss was read.
 *   --cuda-graph: everything a step queues here may be captured (NCCL >= 2.9 captures its
 *   collectives; the NCCL stream joins the capture through the compute stream's events and
 *   is joined back by the compute stream's waits); the host's choices (which buckets, the
 *   shard's landing) are made per kind of step, the graph's key (model.cu). */
#ifndef LOOM_DDP_NCCL_H
#define LOOM_DDP_NCCL_H
#include <stddef.h>
#include "loom_cuda.h"   /* first: its formats (LC_F32, ...) stand for collectives.h's here */
#include "ddp.h"

void ddp_nccl_init(void);
/* format: loom_cuda.h's LC_F32, LC_BF16 or LC_F16 (the gradient arena's); d_grads holds
 * numel + 1 elements (the last: the stop request) */
void ddp_nccl_set_buckets(const ddp_bucket *buckets, int n, void *d_grads, size_t numel, int format, void *stream);
void ddp_nccl_begin_backward(int sync);
/* after each cudaGraphLaunch of a step (--cuda-graph): the bytes its collectives move,
 * counted when `graph` was captured in this step, added again at each later launch */
void ddp_nccl_graph_launched(const void *graph);
void ddp_nccl_grad_ready(int bucket);
void ddp_nccl_finish_grads(void);
/* 1 on every rank when any rank had a stop signal as the step's gradients were reduced
 * (one process: this one's signal); read after the step has run (its loss was read) */
int ddp_nccl_stop_requested(void);
/* rank 0's `bytes` at d_buf on every rank's device, ordered after what `stream` queued
 * and before what it queues next (DDP's broadcast at wrap time: parameters and buffers) */
void ddp_nccl_broadcast(void *d_buf, size_t bytes, void *stream);

/* an int32 flag on the device set on every rank where any rank set it (ncclMax), queued on
 * `stream` (FSDP's GradScaler: the inf check over every rank's part) */
void ddp_nccl_any(void *d_flag, void *stream);
/* bytes from src to dst, host or device (after the compute stream's queued work) */
void ddp_nccl_memcpy(void *dst, const void *src, size_t bytes);

/* SyncBatchNorm (sync_batchnorm): n doubles at d_x summed over the ranks in place,
 * queued on `stream` (the compute stream: the kernel after it reads the sums) */
void ddp_nccl_sum(void *d_x, int n, void *stream);
extern double ddp_nccl_synced_bytes;   /* for the summary */

/* FSDP with sharding_strategy SHARD_GRAD_OP on the GPU (ZeRO-2's split, as runtime/ddp.h's
 * on the CPU): every rank holds the whole parameters and gradients on its device; the
 * flat arena [0, numel) is cut into world parts of runtime/ddp.h's fsdp_shard_len(), and
 * rank r owns [fsdp_lo(), fsdp_hi()): its optimizer state (a buffer of the part) and its
 * averaged gradients.
 *   setup:     fsdp_nccl_init(d_params, d_grads, d_compute or NULL, numel, format,
 *              state element size, compute stream) after ddp_nccl_init (it sets up
 *              runtime/ddp.h's shards for the host: fsdp_gather, fsdp_keep_shard)
 *   each step: ddp_nccl_begin_backward(sync) before the backward, as DDP's;
 *              fsdp_nccl_finish_grads() before the optimizer: ncclReduceScatter (mean) in
 *              place on NCCL's stream, this rank's part of d_grads then the mean over ranks
 *              (the stop request all-reduced beside it: ddp_nccl_stop_requested); the
 *              optimizer updates the part; fsdp_nccl_gather_params() after it:
 *              ncclAllGather in place of every rank's part (and of the compute copy) */
void fsdp_nccl_init(void *d_params, void *d_grads, void *d_compute, size_t numel, int format, size_t state_esize, void *stream);
void fsdp_nccl_finish_grads(void);
void fsdp_nccl_gather_params(void);
/* FSDP with FULL_SHARD on the GPU: the parameters sharded too.  Each unit (runtime/ddp.h's
 * fsdp_unit: a range of the arena, its gradients' place in the units' buffers) is cut into
 * world equal parts (the last padded), rank r holding part r of every unit, one after
 * another: its shard of the parameters, of the averaged gradients and of each optimizer
 * state buffer (fsdp_nccl_shard_len() elements, PyTorch FSDP's flat parameters).
 *   setup:     fsdp_nccl_init, then fsdp_nccl_set_units(table, n) (the table outlives the
 *              run); once the run has its starting weights in the whole d_params (init and
 *              broadcast, or resumed), fsdp_nccl_shard_params(&d_params, &d_grads,
 *              grads_len): the shards kept, the whole arenas freed, d_params now the buffer
 *              a unit is gathered into and d_grads the units' gradient buffers
 *   model:     fsdp_nccl_gather_unit(u) before the ops that read unit u (forward, and
 *              again backward); fsdp_nccl_unit_grads_ready(u) once its gradients are
 *              final: ncclReduceScatter (mean) into the gradient shard, the buffer zeroed
 *   each step: fsdp_nccl_finish_grads(); the optimizer on fsdp_nccl_param_shard() and
 *              fsdp_nccl_grad_shard()
 *   checkpoints: fsdp_nccl_gather_host(d_shard, esize, full) puts the whole tensors on
 *              rank 0's host (every rank calls it); fsdp_nccl_keep_host(d_shard, esize,
 *              full) this rank's parts of whole ones on its device */
void fsdp_nccl_set_units(const fsdp_unit *units, int n);
/* (d_compute: the GEMMs' 16-bit copy of the float32 parameters, COMPUTE_COPY, else NULL:
 * sharded and gathered as they are; its format set first with fsdp_nccl_set_compute) */
void fsdp_nccl_set_compute(int format);
void *fsdp_nccl_compute_shard(void);
void fsdp_nccl_shard_params(void **d_params, void **d_grads, void **d_compute, size_t grads_len);
/* the whole parameters on this rank's host: its parts on its device (and their compute copy) */
void fsdp_nccl_keep_params_host(const void *full);
/* under accumulation (a step of several micro-batches): add(ctx, dst, src, n) queues
 * dst[i] += src[i] (n elements of the gradients' type) on the compute stream, the model's
 * kernel; each micro-batch's reduce-scatter after a step's first lands beside the shard and
 * is added into it (call before each backward) */
void fsdp_nccl_set_add(void (*add)(void *ctx, void *dst, const void *src, size_t n), void *ctx);
/* after ddp_nccl_begin_backward: 1 when this backward adds its reduce-scattered parts into
 * the gradient shard (a step's later micro-batch under accumulation): another graph */
int fsdp_nccl_adding(void);
/* FULL_SHARD's parameter groups: n runs of the arena (ends[i]: run i's end, runs i - 1's
 * end to it; groups[i]: its group) as runs of this rank's shard (its part of each unit,
 * one after another; a part's padding past its unit's end in group `skip`), copied to the
 * device (*d_ends: long long, *d_groups: unsigned char) for the update's kernel; after
 * fsdp_nccl_set_units, outside any capture (it allocates) */
void fsdp_nccl_shard_runs(const long long *ends, const unsigned char *groups, int n, unsigned char skip, void **d_ends, void **d_groups);
size_t fsdp_nccl_shard_len(void);
size_t fsdp_nccl_gathered_len(void);   /* the buffer a unit is gathered into (elements) */
void *fsdp_nccl_param_shard(void);
void *fsdp_nccl_grad_shard(void);
void fsdp_nccl_gather_unit(int u);
void fsdp_nccl_unit_grads_ready(int u);
void fsdp_nccl_gather_host(const void *d_shard, size_t esize, void *full);
void fsdp_nccl_keep_host(void *d_shard, size_t esize, const void *full);
extern double fsdp_nccl_gathered_bytes;   /* all-gathered by fsdp_nccl_gather_unit in this run */
/* for the summary: the bytes all-reduced in this run (FSDP: reduce-scattered and all-gathered) */
extern double ddp_nccl_reduced_bytes;
#endif
