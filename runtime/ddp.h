/* runtime/ddp.h — DistributedDataParallel's glue for a generated program (issue 13): the
 * ranks, the gradient buckets and their all-reduce (runtime/collectives.h, on MPI), the
 * watchdog that ends a job whose other rank died or is stuck, and errors that name
 * their rank.  Only a program whose strategy is ddp includes it (and links MPI).
 *
 *   main:      ddp_init(&argc, &argv, spec_timeout) → ddp_rank(), ddp_world()
 *   setup:     ddp_set_buckets(table, n, grads, dtype); ddp_broadcast(params, bytes)
 *   each step: ddp_begin_backward(sync) before the backward (sync: the step's last
 *              micro-batch, else no all-reduce: Fabric's no_backward_sync);
 *              model_backward calls ddp_grad_ready(bucket) when a bucket's gradients are
 *              final (its all-reduce starts then) and ddp_progress() between its ops;
 *              ddp_finish_grads() before the optimizer (starts any bucket not started,
 *              waits for all: the gradients are then the mean over ranks)
 */
#ifndef LOOM_DDP_H
#define LOOM_DDP_H
#include <stddef.h>
#include <stdint.h>
#include "collectives.h"

typedef struct {
    size_t first, count;   /* elements of the gradient arena */
} ddp_bucket;

/* MPI up; --ddp-timeout S taken out of argv (default: the spec's); the exit hook that
 * finalizes MPI (or not, after an error: mpirun then ends the other ranks) */
void ddp_init(int *argc, char ***argv, double default_timeout);
int ddp_rank(void);
int ddp_world(void);
double ddp_timeout(void);
/* one line "rank R: what" on stderr, then exit(1) (without MPI_Finalize: mpirun ends the job) */
void ddp_die(const char *what);
/* a private directory for a rank other than 0 (its outputs are not the run's), removed at exit */
const char *ddp_private_dir(void);

void ddp_set_buckets(const ddp_bucket *buckets, int n, void *grads, lc_dtype t);
void ddp_begin_backward(int sync);
void ddp_grad_ready(int bucket);
void ddp_progress(void);
void ddp_finish_grads(void);

/* rank 0's bytes on every rank */
void ddp_broadcast(void *buf, size_t bytes);
/* in place: the sum over ranks of n doubles */
void ddp_sum(double *x, int n);
/* 1 on every rank when any rank passes 1 (a stop request) */
int ddp_any(int flag);

/* for the report / bench: seconds spent waiting in ddp_finish_grads, all-reduced bytes */
extern double ddp_wait_seconds;
extern double ddp_reduced_bytes;
#endif
