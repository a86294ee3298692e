/* runtime/collectives.h — the collectives a multi-rank program uses (issue 13), behind
 * one small interface so the strategy code never names the engine.  The implementation
 * here is MPI (runtime/collectives.c, OpenMPI from Debian); a program built for one
 * device neither includes this header nor links it.
 *
 * Every call returns 0, or -1 with one line in lc_error() (the MPI error string and the
 * call that failed); MPI's errors return to us instead of aborting the job. */
#ifndef LOOM_COLLECTIVES_H
#define LOOM_COLLECTIVES_H
#include <stddef.h>

/* BF16 and F16: 16-bit floats (bfloat16, IEEE binary16) as uint16_t.  Their reductions
 * sum in float and round once to nearest even at the end (the average divided in float
 * first), so N ranks round as one rank would round the sum; gathers move them as they are. */
typedef enum { LC_F32, LC_F64, LC_BF16, LC_F16 } lc_dtype;
typedef enum { LC_SUM, LC_AVG } lc_op;   /* AVG: the sum divided by the world size */

/* init once, before any other call (MPI_Init with thread support FUNNELED); finalize once */
int lc_init(int *argc, char ***argv);
int lc_finalize(void);
int lc_rank(void);         /* 0 .. world_size-1 */
int lc_local_rank(void);   /* rank among the processes of this node (shared memory) */
int lc_world_size(void);
const char *lc_error(void);

/* in place, on every rank: buf[i] = op over ranks of buf[i] */
int lc_all_reduce(void *buf, size_t count, lc_dtype t, lc_op op);
/* the same on a contiguous arena cut into buckets of at most bucket_bytes (the last
 * may be shorter): every bucket's reduction is started before the first is waited on,
 * so the engine pipelines them (PyTorch DDP's bucketing; 25 MB is its default) */
int lc_all_reduce_buckets(void *buf, size_t count, lc_dtype t, lc_op op, size_t bucket_bytes);

/* non-blocking: start a bucket's reduction (e.g. when its gradients are final in
 * backward) and wait for it later; *pending is owned by the caller until the wait */
typedef struct lc_pending lc_pending;
int lc_all_reduce_start(void *buf, size_t count, lc_dtype t, lc_op op, lc_pending **pending);
int lc_wait(lc_pending *pending);   /* completes, applies AVG's scale, frees pending */
/* 1 when the reduction has completed (lc_wait then returns at once), 0 while it runs,
 * -1 on error.  MPI advances a non-blocking collective only inside MPI calls: backward
 * calls this between its ops so the buckets started earlier make progress meanwhile. */
int lc_test(lc_pending *pending);

int lc_broadcast(void *buf, size_t bytes, int root);
int lc_barrier(void);
/* send has count*world_size elements; rank r receives op over ranks of send[r*count ..] */
int lc_reduce_scatter(const void *send, void *recv, size_t count, lc_dtype t, lc_op op);
/* recv has bytes*world_size bytes: rank r's send lands at recv + r*bytes */
int lc_all_gather(const void *send, void *recv, size_t bytes);

/* The same three on a flat arena cut into one range per rank, rank r's counts[r]
 * elements at displs[r] (FSDP's shards: the last rank's may be shorter, or empty).
 * reduce-scatter: send has the whole arena; rank r receives op over ranks of its range
 * (counts[r] elements).  all-gather, in place: every rank's range of buf is its own on
 * entry, every range is its owner's on return.  gather: root's recv gets every rank's
 * send (counts[r] elements) at displs[r]; recv is unused elsewhere. */
int lc_reduce_scatter_v(const void *send, void *recv, const int *counts, lc_dtype t, lc_op op);
int lc_all_gather_v(void *buf, const int *counts, const int *displs, lc_dtype t);
int lc_gather_v(const void *send, void *recv, const int *counts, const int *displs, lc_dtype t, int root);
/* dst[i] += src[i], n elements of t (a 16-bit type added in float and rounded once, as the
 * reductions above): FSDP's gradient shard accumulating micro-batches' reduce-scatters */
void lc_add(void *dst, const void *src, size_t n, lc_dtype t);

#endif
