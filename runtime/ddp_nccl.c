/* runtime/ddp_nccl.c — runtime/ddp_nccl.h: NCCL, bootstrapped over runtime/ddp.h's MPI. */
#include "ddp_nccl.h"

#include <cuda_runtime.h>
#include <math.h>
#include <nccl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scalar_ops.h"   /* the GEMMs' 16-bit compute copy, rounded as the device rounds it */
#include "signals.h"

double ddp_nccl_reduced_bytes = 0;

static ncclComm_t comm_;
static cudaStream_t compute_, nccl_;   /* the model's stream; the gradients' own */
static cudaEvent_t done_;              /* the NCCL stream's last all-reduce of this step */
#define MAX_BUCKETS 4096
static cudaEvent_t ready_[MAX_BUCKETS];
static unsigned char started_[MAX_BUCKETS];
static const ddp_bucket *buckets_;
static int nbuckets_, syncing_, stop_bucket_ = -1;
static char *grads_;
static size_t numel_, esize_;
static ncclDataType_t type_;
/* pinned: { 0, 1 } in the arena's format, the reduced flag, and this step's stop request
 * (0 or 1, written by ddp_nccl_begin_backward: the source of the copy a graph replays) */
static unsigned char *flag_src_, *flag_out_, *stop_src_;

/* NCCL's failures: one line naming the rank and the call (runtime/ddp.h's ddp_die) */
static void nccl_check(ncclResult_t rc, const char *what) {
    if (rc == ncclSuccess) return;
    char line[512];
    snprintf(line, sizeof line, "%s failed: %s", what, ncclGetErrorString(rc));
    ddp_die(line);
}
static void cuda_check(cudaError_t rc, const char *what) {
    if (rc == cudaSuccess) return;
    char line[512];
    snprintf(line, sizeof line, "%s failed: %s", what, cudaGetErrorString(rc));
    ddp_die(line);
}
static void flags_alloc(int format);
static void set_format(int format) {
    type_ = format == LC_BF16 ? ncclBfloat16 : format == LC_F16 ? ncclFloat16 : ncclFloat32;
    esize_ = format == LC_F32 ? 4 : 2;
}

void ddp_nccl_init(void) {
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        char line[256];
        snprintf(line, sizeof line, "no CUDA device (%s): a ddp rank of the CUDA program needs one GPU",
                 rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices visible");
        ddp_die(line);
    }
    /* one GPU per rank of this node: NCCL refuses two ranks on one GPU */
    if (ddp_local_rank() >= count) {
        char line[256];
        snprintf(line, sizeof line, "local rank %d, but %d GPU%s visible on this node: each ddp rank needs a GPU of its own "
                 "(start at most %d ranks per node, or CUDA_VISIBLE_DEVICES)", ddp_local_rank(), count, count == 1 ? "" : "s", count);
        ddp_die(line);
    }
    cuda_check(cudaSetDevice(ddp_local_rank()), "cudaSetDevice");
    ncclUniqueId id;
    if (ddp_rank() == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    ddp_broadcast(&id, sizeof id);   /* the bootstrap: rank 0's id, over MPI */
    nccl_check(ncclCommInitRank(&comm_, ddp_world(), id, ddp_rank()), "ncclCommInitRank");
    cuda_check(cudaStreamCreateWithFlags(&nccl_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (NCCL's stream)");
    cuda_check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
}

void ddp_nccl_set_buckets(const ddp_bucket *b, int n, void *d_grads, size_t numel, int format, void *stream) {
    if (n > MAX_BUCKETS) ddp_die("too many gradient buckets (raise bucket_cap_mb)");
    buckets_ = b; nbuckets_ = n; grads_ = d_grads; numel_ = numel;
    compute_ = (cudaStream_t)stream;
    set_format(format);
    /* the stop request rides in the bucket that ends last (extended over the arena's
     * padding, zeros on every rank, to the element after it) */
    size_t end = 0;
    for (int i = 0; i < n; i++) {
        cuda_check(cudaEventCreateWithFlags(&ready_[i], cudaEventDisableTiming), "cudaEventCreateWithFlags");
        if (b[i].first + b[i].count > end) { end = b[i].first + b[i].count; stop_bucket_ = i; }
    }
    if (stop_bucket_ < 0 || end > numel) ddp_die("the gradient buckets do not fit the arena");
    flags_alloc(format);
}

/* flag_src_ (0 and 1 in the arena's format) and flag_out_ */
static void flags_alloc(int format) {
    cuda_check(cudaMallocHost((void **)&flag_src_, 4 * esize_), "cudaMallocHost");
    memset(flag_src_, 0, 4 * esize_);
    /* 1 in the arena's format: float, bfloat16, IEEE half */
    if (format == LC_F32) { float one = 1.0f; memcpy(flag_src_ + esize_, &one, sizeof one); }
    else { uint16_t one = format == LC_BF16 ? 0x3F80 : 0x3C00; memcpy(flag_src_ + esize_, &one, sizeof one); }
    flag_out_ = flag_src_ + 2 * esize_;
    stop_src_ = flag_src_ + 3 * esize_;
}

static int nunits_;
static void (*add_)(void *ctx, void *dst, const void *src, size_t n);   /* FULL_SHARD under accumulation */
static unsigned char *udone_;   /* FULL_SHARD: the units reduce-scattered in this backward */
/* FULL_SHARD under accumulation: this backward adds to the gradient shard (not a step's
 * first micro-batch), the last backward was a step's last */
static int accum_, last_boundary_ = 1;

/* the run's byte counts when this step began (a graph's capture: what its step adds) */
static double mark_reduced_, mark_gathered_, mark_synced_;

void ddp_nccl_begin_backward(int sync) {
    syncing_ = sync && ddp_world() > 1;
    memset(started_, 0, sizeof started_);
    if (udone_) memset(udone_, 0, (size_t)nunits_);
    accum_ = !last_boundary_;
    last_boundary_ = sync;
    /* this rank's stop request, read by the step's copy of it (queued or replayed): the
     * previous step's copy has run (the host read its loss) */
    if (stop_src_) memcpy(stop_src_, flag_src_ + (signals_stop_requested() ? esize_ : 0), esize_);
    mark_reduced_ = ddp_nccl_reduced_bytes;
    mark_gathered_ = fsdp_nccl_gathered_bytes;
    mark_synced_ = ddp_nccl_synced_bytes;
}

int fsdp_nccl_adding(void) { return accum_ && add_ != NULL; }

/* --cuda-graph: each graph's collectives' bytes, counted once as its capture queued them
 * and again at each later launch */
#define MAX_GRAPHS 16
static struct { const void *graph; double reduced, gathered, synced; } graphs_[MAX_GRAPHS];
static int ngraphs_;

void ddp_nccl_graph_launched(const void *graph) {
    for (int i = 0; i < ngraphs_; i++)
        if (graphs_[i].graph == graph) {
            ddp_nccl_reduced_bytes += graphs_[i].reduced;
            fsdp_nccl_gathered_bytes += graphs_[i].gathered;
            ddp_nccl_synced_bytes += graphs_[i].synced;
            return;
        }
    if (ngraphs_ == MAX_GRAPHS) ddp_die("more CUDA graphs than the byte counts keep (runtime/ddp_nccl.c's MAX_GRAPHS)");
    /* its capture, in this step: what the step queued since it began */
    graphs_[ngraphs_].graph = graph;
    graphs_[ngraphs_].reduced = ddp_nccl_reduced_bytes - mark_reduced_;
    graphs_[ngraphs_].gathered = fsdp_nccl_gathered_bytes - mark_gathered_;
    graphs_[ngraphs_].synced = ddp_nccl_synced_bytes - mark_synced_;
    ngraphs_++;
}

void ddp_nccl_grad_ready(int bucket) {
    if (!syncing_ || started_[bucket]) return;
    const ddp_bucket *b = &buckets_[bucket];
    size_t count = b->count;
    if (bucket == stop_bucket_) {   /* this rank's stop request, in the element after the arena */
        cuda_check(cudaMemcpyAsync(grads_ + numel_ * esize_, stop_src_, esize_, cudaMemcpyHostToDevice, compute_), "cudaMemcpyAsync (stop request)");
        count = numel_ + 1 - b->first;
    }
    /* the NCCL stream starts when the compute stream has queued the bucket's gradients */
    cuda_check(cudaEventRecord(ready_[bucket], compute_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(nccl_, ready_[bucket], 0), "cudaStreamWaitEvent");
    void *p = grads_ + b->first * esize_;
    nccl_check(ncclAllReduce(p, p, count, type_, ncclAvg, comm_, nccl_), "ncclAllReduce");
    started_[bucket] = 1;
    ddp_nccl_reduced_bytes += (double)count * (double)esize_;
}

void ddp_nccl_finish_grads(void) {
    if (!syncing_) return;
    for (int i = 0; i < nbuckets_; i++) ddp_nccl_grad_ready(i);   /* any the backward did not start */
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(compute_, done_, 0), "cudaStreamWaitEvent");   /* the optimizer reads the mean */
    cuda_check(cudaMemcpyAsync(flag_out_, grads_ + numel_ * esize_, esize_, cudaMemcpyDeviceToHost, compute_), "cudaMemcpyAsync (stop request)");
    syncing_ = 0;
}

int ddp_nccl_stop_requested(void) {
    if (ddp_world() <= 1) return signals_stop_requested() != 0;
    /* the mean of every rank's 0 or 1: not zero when any rank asked */
    for (size_t i = 0; i < esize_; i++)
        if (flag_out_[i]) return 1;
    return 0;
}

void ddp_nccl_broadcast(void *d_buf, size_t bytes, void *stream) {
    if (ddp_world() <= 1 || bytes == 0) return;
    cudaStream_t on = (cudaStream_t)stream;
    /* on NCCL's stream after what `stream` queued (the upload), and `stream` after it */
    cuda_check(cudaEventRecord(done_, on), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(nccl_, done_, 0), "cudaStreamWaitEvent");
    nccl_check(ncclBroadcast(d_buf, d_buf, bytes, ncclUint8, 0, comm_, nccl_), "ncclBroadcast");
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(on, done_, 0), "cudaStreamWaitEvent");
}

/* ---- FSDP SHARD_GRAD_OP: the gradients reduce-scattered, the parameters all-gathered ---- */
static char *fparams_, *fcompute_;   /* the parameters and their 16-bit compute copy (or NULL) */
static size_t flen_;                 /* each rank's part: runtime/ddp.h's fsdp_shard_len() */
static void *d_flag_;                /* the stop request, all-reduced beside the gradients */
static cudaEvent_t fready_;

void fsdp_nccl_init(void *d_params, void *d_grads, void *d_compute, size_t numel, int format, size_t state_esize, void *stream) {
    compute_ = (cudaStream_t)stream;
    set_format(format);
    grads_ = d_grads; numel_ = numel;
    fparams_ = d_params; fcompute_ = d_compute;
    fsdp_init_host(numel, esize_, state_esize);
    flen_ = fsdp_shard_len();
    cuda_check(cudaMalloc(&d_flag_, esize_), "cudaMalloc (the stop request)");
    cuda_check(cudaEventCreateWithFlags(&fready_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    flags_alloc(format);
}

static const fsdp_unit *units_;
static void unit_reduce(int u);

/* SHARD_GRAD_OP: NCCL's collectives take equal parts, so the arenas run on over their
 * padding (model_alloc's 64 bytes past the end) to world × part elements (checked at the
 * first collective: FULL_SHARD cuts its units instead) */
static void arena_padding(void) {
    static int done;
    if (done) return;
    done = 1;
    size_t numel = numel_;
    size_t pad = flen_ * (size_t)ddp_world() - numel;
    if (pad * esize_ > 64 || (fcompute_ && pad * 2 > 64)) {
        char line[256];
        snprintf(line, sizeof line, "fsdp: %d ranks cut %zu parameters into parts of %zu, past the arena's padding: use fewer ranks",
                 ddp_world(), numel, flen_);
        ddp_die(line);
    }
    cuda_check(cudaMemsetAsync(fparams_ + numel * esize_, 0, pad * esize_, compute_), "cudaMemsetAsync");
    if (fcompute_) cuda_check(cudaMemsetAsync(fcompute_ + numel * 2, 0, pad * 2, compute_), "cudaMemsetAsync");
}

void fsdp_nccl_finish_grads(void) {
    if (units_) {   /* FULL_SHARD: every unit the backward did not reduce yet (then the stop request) */
        for (int u = 0; u < nunits_; u++) unit_reduce(u);
    }
    if (!syncing_) return;
    if (!units_) arena_padding();
    cuda_check(cudaMemcpyAsync(d_flag_, stop_src_, esize_, cudaMemcpyHostToDevice, compute_), "cudaMemcpyAsync (stop request)");
    /* the NCCL stream starts when the compute stream has queued the backward */
    cuda_check(cudaEventRecord(fready_, compute_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(nccl_, fready_, 0), "cudaStreamWaitEvent");
    /* in place: this rank's part of the arena gets every rank's mean of it */
    if (!units_) nccl_check(ncclReduceScatter(grads_, grads_ + (size_t)ddp_rank() * flen_ * esize_, flen_, type_, ncclAvg, comm_, nccl_), "ncclReduceScatter");
    nccl_check(ncclAllReduce(d_flag_, d_flag_, 1, type_, ncclSum, comm_, nccl_), "ncclAllReduce (stop request)");
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(compute_, done_, 0), "cudaStreamWaitEvent");   /* the optimizer reads the mean */
    cuda_check(cudaMemcpyAsync(flag_out_, d_flag_, esize_, cudaMemcpyDeviceToHost, compute_), "cudaMemcpyAsync (stop request)");
    if (!units_) ddp_nccl_reduced_bytes += (double)flen_ * (double)ddp_world() * (double)esize_;
    syncing_ = 0;
}

void fsdp_nccl_gather_params(void) {
    if (ddp_world() <= 1) return;
    arena_padding();
    cuda_check(cudaEventRecord(fready_, compute_), "cudaEventRecord");   /* after the optimizer's update */
    cuda_check(cudaStreamWaitEvent(nccl_, fready_, 0), "cudaStreamWaitEvent");
    size_t at = (size_t)ddp_rank() * flen_;
    nccl_check(ncclAllGather(fparams_ + at * esize_, fparams_, flen_, type_, comm_, nccl_), "ncclAllGather");
    ddp_nccl_reduced_bytes += (double)flen_ * (double)ddp_world() * (double)esize_;
    if (fcompute_) {   /* the GEMMs' 16-bit copy, which the update wrote beside its shard (any 16-bit type: a copy) */
        nccl_check(ncclAllGather(fcompute_ + at * 2, fcompute_, flen_, ncclFloat16, comm_, nccl_), "ncclAllGather");
        ddp_nccl_reduced_bytes += (double)flen_ * (double)ddp_world() * 2;
    }
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(compute_, done_, 0), "cudaStreamWaitEvent");   /* the next forward reads them */
}

double ddp_nccl_synced_bytes = 0;

void ddp_nccl_sum(void *d_x, int n, void *stream) {
    if (ddp_world() <= 1) return;
    nccl_check(ncclAllReduce(d_x, d_x, (size_t)n, ncclFloat64, ncclSum, comm_, (cudaStream_t)stream), "ncclAllReduce (SyncBatchNorm)");
    ddp_nccl_synced_bytes += 8.0 * n;
}

/* ---- FSDP FULL_SHARD: the parameters sharded too, a unit gathered at a time ---- */
/* Each unit (a range of the flat arena) is cut into world equal parts of upart_[u]
 * elements (the last padded: NCCL's collectives take equal parts), rank r holding part r;
 * this rank's shard is its part of every unit, one after another (at uoff_[u]): the
 * parameters', the averaged gradients' and each optimizer state buffer's (PyTorch FSDP's
 * flat parameters, one per unit). */
static size_t *upart_, *uoff_, slen_, gathered_len_, part_max_;
static char *cshard_;     /* the compute copy's shard (16-bit), beside the parameters' */
static int cformat_;      /* its format: LC_BF16 or LC_F16 */
static char *landing_;   /* accumulation: where a micro-batch's part lands before it is added */
static void *add_ctx_;
static void *device_zeros(size_t bytes);
static char *pshard_, *gshard_, *ugrads_;   /* on the device */
double fsdp_nccl_gathered_bytes = 0;

void fsdp_nccl_set_units(const fsdp_unit *units, int n) {
    size_t world = (size_t)ddp_world();
    units_ = units; nunits_ = n;
    upart_ = calloc((size_t)n + 1, sizeof *upart_);
    uoff_ = calloc((size_t)n + 1, sizeof *uoff_);
    udone_ = calloc((size_t)n + 1, 1);
    if (!upart_ || !uoff_ || !udone_) ddp_die("out of memory");
    for (int u = 0; u < n; u++) {
        upart_[u] = (units[u].count + world - 1) / world;
        uoff_[u] = slen_;
        slen_ += upart_[u];
        if (upart_[u] * world > gathered_len_) gathered_len_ = upart_[u] * world;
        if (upart_[u] > part_max_) part_max_ = upart_[u];
    }
}

void fsdp_nccl_set_compute(int format) { cformat_ = format; }
void *fsdp_nccl_compute_shard(void) { return cshard_; }

void fsdp_nccl_set_add(void (*add)(void *ctx, void *dst, const void *src, size_t n), void *ctx) {
    add_ = add; add_ctx_ = ctx;
    if (!landing_) landing_ = device_zeros(part_max_ * esize_);
}

size_t fsdp_nccl_shard_len(void) { return slen_; }
size_t fsdp_nccl_gathered_len(void) { return gathered_len_; }
void *fsdp_nccl_param_shard(void) { return pshard_; }
void *fsdp_nccl_grad_shard(void) { return gshard_; }

/* this rank's part of unit u: [lo, hi) of the arena */
static void my_part(int u, size_t *lo, size_t *hi) {
    const fsdp_unit *un = &units_[u];
    size_t a = un->first + upart_[u] * (size_t)ddp_rank(), end = un->first + un->count;
    *lo = a < end ? a : end;
    *hi = a + upart_[u] < end ? a + upart_[u] : end;
}

void fsdp_nccl_shard_runs(const long long *ends, const unsigned char *groups, int n, unsigned char skip, void **d_ends, void **d_groups) {
    /* at most every arena run cut by each unit's part, plus a padding run per unit */
    size_t cap = (size_t)n + 2 * (size_t)nunits_ + 1, k = 0;
    long long *e = malloc(cap * sizeof *e);
    unsigned char *gr = malloc(cap);
    if (!e || !gr) ddp_die("out of memory");
#define RUN(END, G)                                                                  \
    do {                                                                             \
        if (k > 0 && gr[k - 1] == (G)) e[k - 1] = (END);   /* the same group: one run */ \
        else { e[k] = (END); gr[k] = (G); k++; }                                     \
    } while (0)
    for (int u = 0; u < nunits_; u++) {
        size_t lo, hi;
        my_part(u, &lo, &hi);
        int r = 0;
        for (size_t at = lo; at < hi;) {   /* the arena's runs over [lo, hi), at the shard's place */
            while (r < n && (size_t)ends[r] <= at) r++;
            if (r == n) ddp_die("fsdp: the parameter groups' runs end before the arena does");
            size_t to = (size_t)ends[r] < hi ? (size_t)ends[r] : hi;
            RUN((long long)(uoff_[u] + to - lo), groups[r]);
            at = to;
        }
        if (hi - lo < upart_[u]) RUN((long long)(uoff_[u] + upart_[u]), skip);   /* the part's padding */
    }
#undef RUN
    if (k == 0) { e[0] = 0; gr[0] = skip; k = 1; }   /* (no shard: the kernel reads one run) */
    cuda_check(cudaMalloc(d_ends, k * sizeof *e), "cudaMalloc (FSDP groups)");
    cuda_check(cudaMalloc(d_groups, k), "cudaMalloc (FSDP groups)");
    cuda_check(cudaMemcpy(*d_ends, e, k * sizeof *e, cudaMemcpyHostToDevice), "cudaMemcpy (FSDP groups)");
    cuda_check(cudaMemcpy(*d_groups, gr, k, cudaMemcpyHostToDevice), "cudaMemcpy (FSDP groups)");
    free(e);
    free(gr);
}

static void *device_zeros(size_t bytes) {
    void *p = NULL;
    cuda_check(cudaMalloc(&p, bytes + 64), "cudaMalloc (FSDP)");
    cuda_check(cudaMemsetAsync(p, 0, bytes + 64, compute_), "cudaMemsetAsync");
    return p;
}

void fsdp_nccl_shard_params(void **d_params, void **d_grads, void **d_compute, size_t grads_len) {
    pshard_ = device_zeros(slen_ * esize_);
    gshard_ = device_zeros(slen_ * esize_);
    if (d_compute) cshard_ = device_zeros(slen_ * 2);
    for (int u = 0; u < nunits_; u++) {
        size_t lo, hi;
        my_part(u, &lo, &hi);
        cuda_check(cudaMemcpyAsync(pshard_ + uoff_[u] * esize_, (char *)*d_params + lo * esize_, (hi - lo) * esize_,
                                   cudaMemcpyDeviceToDevice, compute_), "cudaMemcpyAsync (FSDP shard)");
        if (d_compute)
            cuda_check(cudaMemcpyAsync(cshard_ + uoff_[u] * 2, (char *)*d_compute + lo * 2, (hi - lo) * 2,
                                       cudaMemcpyDeviceToDevice, compute_), "cudaMemcpyAsync (FSDP shard)");
    }
    cuda_check(cudaStreamSynchronize(compute_), "cudaStreamSynchronize");
    /* the whole parameters and gradients are gone: a unit's at a time from here on (a
     * reduce-scatter reads a unit's buffer to world parts: up to world - 1 elements past it) */
    cuda_check(cudaFree(*d_params), "cudaFree");
    cuda_check(cudaFree(*d_grads), "cudaFree");
    *d_params = fparams_ = device_zeros(gathered_len_ * esize_);
    *d_grads = ugrads_ = device_zeros((grads_len + (size_t)ddp_world()) * esize_);
    if (d_compute) {   /* the GEMMs read a unit's 16-bit copy gathered as its parameters */
        cuda_check(cudaFree(*d_compute), "cudaFree");
        *d_compute = fcompute_ = device_zeros(gathered_len_ * 2);
    }
    cuda_check(cudaStreamSynchronize(compute_), "cudaStreamSynchronize");
}

void fsdp_nccl_gather_unit(int u) {
    cuda_check(cudaEventRecord(fready_, compute_), "cudaEventRecord");   /* the buffer's last readers queued */
    cuda_check(cudaStreamWaitEvent(nccl_, fready_, 0), "cudaStreamWaitEvent");
    nccl_check(ncclAllGather(pshard_ + uoff_[u] * esize_, fparams_, upart_[u], type_, comm_, nccl_), "ncclAllGather (a unit)");
    if (cshard_)   /* (any 16-bit type: a copy) */
        nccl_check(ncclAllGather(cshard_ + uoff_[u] * 2, fcompute_, upart_[u], ncclFloat16, comm_, nccl_), "ncclAllGather (a unit's compute copy)");
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(compute_, done_, 0), "cudaStreamWaitEvent");   /* its ops read it */
    double bytes = (double)upart_[u] * (double)ddp_world() * (double)esize_;
    ddp_nccl_reduced_bytes += bytes;
    fsdp_nccl_gathered_bytes += bytes;
}

/* unit u's gradients, in its buffer, reduce-scattered (averaged) into this rank's part of
 * the gradient shard; the buffer zeroed after it for the next unit written there */
static void unit_reduce(int u) {
    const fsdp_unit *un = &units_[u];
    if (udone_[u] || un->grad_at < 0) return;
    char *buf = ugrads_ + (size_t)un->grad_at * esize_;
    /* a step's first micro-batch lands in the shard itself; the others beside it, then added
     * (as PyTorch FSDP's sharded gradients accumulate) */
    int adding = accum_ && add_;
    char *to = adding ? landing_ : gshard_ + uoff_[u] * esize_;
    cuda_check(cudaEventRecord(fready_, compute_), "cudaEventRecord");   /* after the backward's writes */
    cuda_check(cudaStreamWaitEvent(nccl_, fready_, 0), "cudaStreamWaitEvent");
    nccl_check(ncclReduceScatter(buf, to, upart_[u], type_, ncclAvg, comm_, nccl_), "ncclReduceScatter (a unit)");
    cuda_check(cudaEventRecord(done_, nccl_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(compute_, done_, 0), "cudaStreamWaitEvent");
    if (adding) add_(add_ctx_, gshard_ + uoff_[u] * esize_, landing_, upart_[u]);
    cuda_check(cudaMemsetAsync(buf, 0, un->count * esize_, compute_), "cudaMemsetAsync");
    /* the padding of this rank's part (past the unit's end: what the reduce-scatter read
     * after the buffer) kept zero, for the norm a clip takes over the shard */
    size_t lo, hi;
    my_part(u, &lo, &hi);
    if (hi - lo < upart_[u])
        cuda_check(cudaMemsetAsync(gshard_ + (uoff_[u] + hi - lo) * esize_, 0, (upart_[u] - (hi - lo)) * esize_, compute_), "cudaMemsetAsync");
    ddp_nccl_reduced_bytes += (double)upart_[u] * (double)ddp_world() * (double)esize_;
    udone_[u] = 1;
}

void fsdp_nccl_unit_grads_ready(int u) { unit_reduce(u); }

void fsdp_nccl_gather_host(const void *d_shard, size_t esize, void *full) {
    size_t world = (size_t)ddp_world(), bytes = slen_ * esize;
    char *mine = malloc(bytes + 1), *all = malloc(world * bytes + 1);
    if (!mine || !all) ddp_die("out of memory gathering a checkpoint");
    cuda_check(cudaStreamSynchronize(compute_), "cudaStreamSynchronize");
    cuda_check(cudaMemcpy(mine, d_shard, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (a shard)");
    ddp_all_gather(mine, bytes, all);
    for (int u = 0; u < nunits_ && ddp_rank() == 0; u++) {
        const fsdp_unit *un = &units_[u];
        for (size_t r = 0; r < world; r++) {
            size_t lo = un->first + upart_[u] * r, end = un->first + un->count;
            size_t hi = lo + upart_[u] < end ? lo + upart_[u] : end;
            if (lo < hi) memcpy((char *)full + lo * esize, all + (r * slen_ + uoff_[u]) * esize, (hi - lo) * esize);
        }
    }
    free(mine);
    free(all);
}

void fsdp_nccl_keep_host(void *d_shard, size_t esize, const void *full) {
    char *mine = calloc(slen_ + 1, esize);
    if (!mine) ddp_die("out of memory");
    for (int u = 0; u < nunits_; u++) {
        size_t lo, hi;
        my_part(u, &lo, &hi);
        memcpy(mine + uoff_[u] * esize, (const char *)full + lo * esize, (hi - lo) * esize);
    }
    cuda_check(cudaStreamSynchronize(compute_), "cudaStreamSynchronize");
    cuda_check(cudaMemcpy(d_shard, mine, slen_ * esize, cudaMemcpyHostToDevice), "cudaMemcpy (a shard)");
    free(mine);
}

void ddp_nccl_memcpy(void *dst, const void *src, size_t bytes) {
    cuda_check(cudaStreamSynchronize(compute_), "cudaStreamSynchronize");
    cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
}

void ddp_nccl_any(void *d_flag, void *stream) {
    if (ddp_world() <= 1) return;
    nccl_check(ncclAllReduce(d_flag, d_flag, 1, ncclInt32, ncclMax, comm_, (cudaStream_t)stream), "ncclAllReduce (found_inf)");
}

void fsdp_nccl_keep_params_host(const void *full) {
    fsdp_nccl_keep_host(pshard_, esize_, full);
    if (!cshard_) return;
    /* the compute copy of this rank's parts, rounded from the (float32) parameters as the
     * update's kernel rounds it */
    so_u16 *mine = calloc(slen_ + 1, sizeof *mine);
    if (!mine) ddp_die("out of memory");
    const float *p = full;
    for (int u = 0; u < nunits_; u++) {
        size_t lo, hi;
        my_part(u, &lo, &hi);
        for (size_t i = lo; i < hi; i++)
            mine[uoff_[u] + i - lo] = cformat_ == LC_BF16 ? so_narrow_bf16(so_round_bf16(p[i])) : so_narrow_f16(so_round_f16(p[i]));
    }
    cuda_check(cudaMemcpy(cshard_, mine, slen_ * 2, cudaMemcpyHostToDevice), "cudaMemcpy (a shard)");
    free(mine);
}
