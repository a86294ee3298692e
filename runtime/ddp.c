/* runtime/ddp.c — runtime/ddp.h on runtime/collectives.h (MPI). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ddp.h"
#include "signals.h"

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

double ddp_wait_seconds = 0, ddp_reduced_bytes = 0;

static int rank_ = 0, world_ = 1, failed_ = 0;
static double timeout_ = 300;
static char private_dir[256];
static const ddp_bucket *buckets_;
static int nbuckets_;
static char *grads_;
static lc_dtype dtype_;
static size_t esize_;
static int syncing_;
static size_t numel_;             /* the gradient arena's elements; grads_[numel_]: the stop request */
static int stop_bucket_ = -1, stop_agreed_;
static int nunits_;                 /* FSDP FULL_SHARD's units (below) */
static unsigned char *unit_done_;   /* each reduce-scattered in this backward */
static size_t dtype_size(lc_dtype t) { return t == LC_F64 ? sizeof(double) : t == LC_F32 ? sizeof(float) : sizeof(uint16_t); }
#define MAX_BUCKETS 4096
static lc_pending *pending_[MAX_BUCKETS];
static unsigned char started_[MAX_BUCKETS];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int ddp_rank(void) { return rank_; }
int ddp_local_rank(void) { return lc_local_rank(); }
int ddp_world(void) { return world_; }
double ddp_timeout(void) { return timeout_; }

/* ---- the watchdog: a collective that waits longer than the timeout ends the job ---- */
static const char *waiting_in = "";
static void on_alarm(int sig) {
    (void)sig;
    char line[512];
    int n = snprintf(line, sizeof line, "rank %d: waited more than %g s in %s for the other ranks (one died or is stuck): ending the job\n",
                     rank_, timeout_, waiting_in);
    if (n > 0) { ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1); (void)w; }
    _exit(1);
}
static void arm(const char *what) {
    waiting_in = what;
    struct itimerval it = { { 0, 0 }, { (time_t)timeout_, (suseconds_t)((timeout_ - (double)(time_t)timeout_) * 1e6) } };
    setitimer(ITIMER_REAL, &it, NULL);
}
static void disarm(void) {
    struct itimerval it = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

void ddp_watch(const char *what) { if (world_ > 1) arm(what); }
void ddp_unwatch(void) { if (world_ > 1) disarm(); }

void ddp_die(const char *what) {
    fprintf(stderr, "rank %d: %s\n", rank_, what);
    failed_ = 1;
    exit(1);
}
static void check(int rc) { if (rc) ddp_die(lc_error()); }

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}
static void at_exit(void) {
    disarm();
    if (private_dir[0]) nftw(private_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    /* after an error the others may be waiting in a collective: no MPI_Finalize (it could
     * wait for them); mpirun sees a rank end without it and ends the job */
    if (!failed_) lc_finalize();
}

void ddp_init(int *argc, char ***argv, double default_timeout) {
    timeout_ = default_timeout;
    /* --ddp-timeout S is ours: taken out before the program parses its flags */
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp((*argv)[i], "--ddp-timeout")) {
            char *end = NULL;
            double t = i + 1 < *argc ? strtod((*argv)[i + 1], &end) : 0;
            if (!end || *end || !(t > 0)) { fprintf(stderr, "train: --ddp-timeout expects a positive number of seconds\n"); exit(2); }
            timeout_ = t;
            i++;
        } else {
            (*argv)[out++] = (*argv)[i];
        }
    }
    *argc = out;
    (*argv)[out] = NULL;
    if (lc_init(argc, argv)) { fprintf(stderr, "train: %s\n", lc_error()); exit(1); }
    rank_ = lc_rank();
    world_ = lc_world_size();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    atexit(at_exit);
}

const char *ddp_private_dir(void) {
    if (!private_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(private_dir, sizeof private_dir, "%s/loom-rank%d-XXXXXX", tmp && *tmp ? tmp : "/tmp", rank_);
        if (!mkdtemp(private_dir)) { private_dir[0] = 0; ddp_die("cannot create a private directory for this rank's outputs"); }
    }
    return private_dir;
}

void ddp_set_buckets(const ddp_bucket *b, int n, void *grads, size_t numel, lc_dtype t) {
    if (n > MAX_BUCKETS) ddp_die("too many gradient buckets (raise bucket_cap_mb)");
    buckets_ = b; nbuckets_ = n; grads_ = grads; dtype_ = t; numel_ = numel;
    esize_ = dtype_size(t);
    /* the stop request rides in the bucket that ends last, extended over the arena's
     * padding (zeros on every rank) to the element after it */
    size_t end = 0;
    for (int i = 0; i < n; i++)
        if (b[i].first + b[i].count > end) { end = b[i].first + b[i].count; stop_bucket_ = i; }
    if (stop_bucket_ < 0 || end > numel) ddp_die("the gradient buckets do not fit the arena");
}

/* 1 (or 0) in the arena's type at grads_[numel_] */
static void put_flag(int on) {
    char *p = grads_ + numel_ * esize_;
    if (dtype_ == LC_F64) { double x = on; memcpy(p, &x, sizeof x); }
    else if (dtype_ == LC_F32) { float x = (float)on; memcpy(p, &x, sizeof x); }
    else { uint16_t x = !on ? 0 : dtype_ == LC_BF16 ? 0x3F80 : 0x3C00; memcpy(p, &x, sizeof x); }
}

int ddp_stop_requested(void) { return world_ <= 1 ? signals_stop_requested() != 0 : stop_agreed_; }

void ddp_begin_backward(int sync) {
    syncing_ = sync && world_ > 1;
    memset(started_, 0, sizeof started_);
    if (unit_done_) memset(unit_done_, 0, (size_t)nunits_);   /* FULL_SHARD: every backward reduces its units */
}

void ddp_grad_ready(int bucket) {
    if (!syncing_ || started_[bucket]) return;
    const ddp_bucket *b = &buckets_[bucket];
    size_t count = b->count;
    if (bucket == stop_bucket_) {   /* this rank's stop request, after the arena */
        put_flag(signals_stop_requested() != 0);
        count = numel_ + 1 - b->first;
    }
    check(lc_all_reduce_start(grads_ + b->first * esize_, count, dtype_, LC_AVG, &pending_[bucket]));
    started_[bucket] = 1;
    ddp_reduced_bytes += (double)count * esize_;
}

void ddp_progress(void) {
    if (!syncing_) return;
    /* the first started bucket still running: MPI advances it (and those behind it) here */
    for (int i = 0; i < nbuckets_; i++)
        if (started_[i] == 1) {
            int rc = lc_test(pending_[i]);
            if (rc < 0) ddp_die(lc_error());
            if (rc == 0) return;
            started_[i] = 3;   /* complete: lc_wait returns at once */
        }
}

void ddp_finish_grads(void) {
    if (!syncing_) return;
    for (int i = 0; i < nbuckets_; i++) ddp_grad_ready(i);   /* any the backward did not start */
    double t0 = now();
    arm("the gradients' all-reduce");
    for (int i = 0; i < nbuckets_; i++) {
        check(lc_wait(pending_[i]));
        pending_[i] = NULL;
        started_[i] = 2;
    }
    disarm();
    ddp_wait_seconds += now() - t0;
    /* the mean of every rank's 0 or 1: not zero when any rank asked */
    const unsigned char *flag = (const unsigned char *)grads_ + numel_ * esize_;
    stop_agreed_ = 0;
    for (size_t i = 0; i < esize_; i++) stop_agreed_ |= flag[i] != 0;
    syncing_ = 0;
}

void ddp_average_grads(void *grads, const ddp_bucket *runs, int n, lc_dtype t) {
    if (world_ <= 1 || n <= 0) return;
    if (n > MAX_BUCKETS) ddp_die("too many gradient runs to average (raise bucket_cap_mb)");
    size_t esize = dtype_size(t);
    double t0 = now();
    arm("the gradients' all-reduce");
    for (int i = 0; i < n; i++) {
        check(lc_all_reduce_start((char *)grads + runs[i].first * esize, runs[i].count, t, LC_AVG, &pending_[i]));
        ddp_reduced_bytes += (double)runs[i].count * esize;
    }
    for (int i = 0; i < n; i++) {
        check(lc_wait(pending_[i]));
        pending_[i] = NULL;
    }
    disarm();
    ddp_wait_seconds += now() - t0;
}

void ddp_broadcast(void *buf, size_t bytes) {
    if (world_ <= 1) return;
    arm("a broadcast from rank 0");
    check(lc_broadcast(buf, bytes, 0));
    disarm();
}

void ddp_sum(double *x, int n) {
    if (world_ <= 1) return;
    arm("an all-reduce of metrics");
    check(lc_all_reduce(x, (size_t)n, LC_F64, LC_SUM));
    disarm();
}

void ddp_gather(const double *x, int n, double *all) {
    if (world_ <= 1) { memcpy(all, x, sizeof(double) * (size_t)n); return; }
    arm("an all-gather of metrics");
    check(lc_all_gather(x, all, sizeof(double) * (size_t)n));
    disarm();
}

void ddp_all_gather(const void *mine, size_t bytes, void *all) {
    if (world_ <= 1) { memcpy(all, mine, bytes); return; }
    arm("an all-gather");
    check(lc_all_gather(mine, all, bytes));
    disarm();
}

int ddp_any(int flag) {
    if (world_ <= 1) return flag;
    double x = flag ? 1 : 0;
    ddp_sum(&x, 1);
    return x > 0;
}

/* ---- FSDP, SHARD_GRAD_OP ---- */
static size_t fsdp_numel_, fsdp_len_, fsdp_lo_, fsdp_hi_;
static char *fsdp_params_, *fsdp_grads_, *fsdp_grad_shard_;
static int *fsdp_counts_, *fsdp_displs_;
/* the optimizer state's type: the parameters' but at 16-true (float state, f16 parameters) */
static lc_dtype state_dtype_;
static size_t state_esize_;
/* FULL_SHARD's (below) */
static const fsdp_unit *units_;
static size_t gathered_max_;
static char *pshard_;
static int *unit_counts_, *unit_displs_;   /* nunits_ × world_: each rank's part of each unit */
static char *unit_recv_;
static char *unit_grads_, *gshard_;   /* the units' gradient buffers; this rank's shard of the averaged gradients */
static size_t unit_grads_len_, recv_len_;
static int accumulating_;   /* this backward adds to what the gradient shard holds (not a step's first micro-batch) */
static void unit_reduce(int u);

/* the shards' bounds, every rank's and this one's */
static void shards(size_t numel) {
    fsdp_numel_ = numel;
    fsdp_len_ = (numel + (size_t)world_ - 1) / (size_t)world_;
    if (fsdp_len_ * esize_ > (size_t)2147483647) ddp_die("an FSDP shard of more than 2^31 bytes (MPI's int counts): use more ranks");
    fsdp_counts_ = calloc((size_t)world_, sizeof(int));
    fsdp_displs_ = calloc((size_t)world_, sizeof(int));
    if (!fsdp_counts_ || !fsdp_displs_) ddp_die("out of memory");
    for (int r = 0; r < world_; r++) {
        size_t lo = fsdp_len_ * (size_t)r, hi = lo + fsdp_len_;
        if (lo > numel) lo = numel;
        if (hi > numel) hi = numel;
        fsdp_counts_[r] = (int)(hi - lo);
        fsdp_displs_[r] = (int)lo;
        if (r == rank_) { fsdp_lo_ = lo; fsdp_hi_ = hi; }
    }
}

void fsdp_init(size_t numel, void *params, void *grads, lc_dtype t) {
    dtype_ = t;
    esize_ = dtype_size(t);
    fsdp_state_dtype(t);
    shards(numel);
    fsdp_params_ = params; fsdp_grads_ = grads;
    fsdp_grad_shard_ = calloc(fsdp_len_ ? fsdp_len_ : 1, esize_);
    if (!fsdp_grad_shard_) ddp_die("out of memory");
}

/* (checkpoints' gathers and keeps only copy: any 2-byte type serves for both 16-bit ones) */
static lc_dtype of_size(size_t esize) { return esize == 8 ? LC_F64 : esize == 4 ? LC_F32 : LC_BF16; }
void fsdp_init_host(size_t numel, size_t esize, size_t state_esize) {
    dtype_ = of_size(esize);
    esize_ = esize;
    fsdp_state_dtype(of_size(state_esize));
    shards(numel);
}

size_t fsdp_lo(void) { return fsdp_lo_; }
size_t fsdp_hi(void) { return fsdp_hi_; }
size_t fsdp_shard_len(void) { return fsdp_len_; }
void fsdp_state_dtype(lc_dtype t) { state_dtype_ = t; state_esize_ = dtype_size(t); }
void *fsdp_shard_alloc(void) { return calloc(fsdp_len_ ? fsdp_len_ : 1, state_esize_); }

void fsdp_finish_grads(void) {
    if (!syncing_) return;
    if (units_) {   /* FULL_SHARD: model_backward reduced every unit a gradient reaches */
        syncing_ = 0;
        return;
    }
    double t0 = now();
    arm("the gradients' reduce-scatter");
    check(lc_reduce_scatter_v(fsdp_grads_, fsdp_grad_shard_, fsdp_counts_, dtype_, LC_AVG));
    disarm();
    ddp_wait_seconds += now() - t0;
    memcpy(fsdp_grads_ + fsdp_lo_ * esize_, fsdp_grad_shard_, (fsdp_hi_ - fsdp_lo_) * esize_);
    ddp_reduced_bytes += (double)fsdp_numel_ * esize_;
    syncing_ = 0;
}

void fsdp_gather_params(void) {
    if (world_ <= 1) return;
    arm("the parameters' all-gather");
    check(lc_all_gather_v(fsdp_params_, fsdp_counts_, fsdp_displs_, dtype_));
    disarm();
    ddp_reduced_bytes += (double)fsdp_numel_ * esize_;
}

/* a tensor set's shards (elements of t) whole on rank 0 */
static void *gather_as(const void *shard, lc_dtype t) {
    char *full = NULL;
    if (rank_ == 0 && !(full = malloc(fsdp_numel_ ? fsdp_numel_ * dtype_size(t) : 1))) ddp_die("out of memory gathering a checkpoint");
    arm("gathering a checkpoint's shards");
    check(lc_gather_v(shard, full, fsdp_counts_, fsdp_displs_, t, 0));
    disarm();
    return full;
}
static void keep_as(void *shard, const void *full, size_t esize) {
    memcpy(shard, (const char *)full + fsdp_lo_ * esize, (fsdp_hi_ - fsdp_lo_) * esize);
}

void *fsdp_gather(const void *shard) { return gather_as(shard, state_dtype_); }
void fsdp_keep_shard(void *shard, const void *full) { keep_as(shard, full, state_esize_); }

/* ---- FSDP, FULL_SHARD: the parameters sharded too, gathered per unit ---- */
double fsdp_gathered_bytes = 0;

/* rank r's elements of unit u: [lo_r, hi_r) ∩ [first, first + count) */
static void unit_part(const fsdp_unit *u, int r, size_t *lo, size_t *hi) {
    size_t a = fsdp_len_ * (size_t)r, b = a + fsdp_len_;
    if (a > fsdp_numel_) a = fsdp_numel_;
    if (b > fsdp_numel_) b = fsdp_numel_;
    *lo = a > u->first ? a : u->first;
    *hi = b < u->first + u->count ? b : u->first + u->count;
    if (*hi < *lo) *hi = *lo;
}

void fsdp_set_units(const fsdp_unit *units, int n) {
    units_ = units; nunits_ = n;
    unit_counts_ = calloc((size_t)n * (size_t)world_, sizeof(int));
    unit_displs_ = calloc((size_t)n * (size_t)world_, sizeof(int));
    unit_done_ = calloc((size_t)n, 1);
    if (!unit_counts_ || !unit_displs_ || !unit_done_) ddp_die("out of memory");
    size_t part_max = 0;   /* this rank's largest part of a unit: what a reduce-scatter brings */
    for (int k = 0; k < n; k++) {
        if (units[k].count > gathered_max_) gathered_max_ = units[k].count;
        for (int r = 0; r < world_; r++) {
            size_t lo, hi;
            unit_part(&units[k], r, &lo, &hi);
            unit_counts_[k * world_ + r] = (int)(hi - lo);
            unit_displs_[k * world_ + r] = (int)(lo - units[k].first);
            if (r == rank_ && hi - lo > part_max) part_max = hi - lo;
        }
    }
    recv_len_ = part_max;
}

size_t fsdp_gathered_len(void) { return gathered_max_; }
void *fsdp_param_shard(void) { return pshard_; }
void *fsdp_gather_param_shards(void) { return gather_as(pshard_, dtype_); }
void fsdp_keep_param_shard(const void *full) { keep_as(pshard_, full, esize_); }

void *fsdp_shard_params(void *full) {
    pshard_ = calloc(fsdp_len_ ? fsdp_len_ : 1, esize_);   /* (the parameters' type: 16-true's float16) */
    char *gathered = calloc(gathered_max_ ? gathered_max_ : 1, esize_);
    if (!pshard_ || !gathered) ddp_die("out of memory");
    keep_as(pshard_, full, esize_);
    free(full);   /* the full parameters are gone: a unit at a time from here on */
    fsdp_params_ = gathered;
    return gathered;
}

void fsdp_gather_unit(int u) {
    const fsdp_unit *un = &units_[u];
    size_t lo, hi;
    unit_part(un, rank_, &lo, &hi);
    memcpy(fsdp_params_ + (lo - un->first) * esize_, pshard_ + (lo - fsdp_lo_) * esize_, (hi - lo) * esize_);
    if (world_ > 1) {
        arm("a unit's all-gather of the parameters");
        check(lc_all_gather_v(fsdp_params_, unit_counts_ + u * world_, unit_displs_ + u * world_, dtype_));
        disarm();
    }
    ddp_reduced_bytes += (double)un->count * esize_;
    fsdp_gathered_bytes += (double)un->count * esize_;
}

/* unit u's gradients, in its buffer, reduce-scattered (averaged) and added into this
 * rank's part of the gradient shard (a step's micro-batches accumulate there); the
 * buffer is left zeroed for the next unit that writes in it */
static void unit_reduce(int u) {
    const fsdp_unit *un = &units_[u];
    if (un->grad_at < 0) return;   /* no gradient reaches it: its shard stays zero */
    size_t lo, hi;
    unit_part(un, rank_, &lo, &hi);
    char *buf = unit_grads_ + (size_t)un->grad_at * esize_;
    if (world_ > 1) {
        /* a step's first micro-batch lands in the (zeroed) shard itself; the others beside it, then added */
        char *to = accumulating_ ? unit_recv_ : gshard_ + (lo - fsdp_lo_) * esize_;
        double t0 = now();
        arm("a unit's reduce-scatter of the gradients");
        check(lc_reduce_scatter_v(buf, to, unit_counts_ + u * world_, dtype_, LC_AVG));
        disarm();
        ddp_wait_seconds += now() - t0;
        if (accumulating_) lc_add(gshard_ + (lo - fsdp_lo_) * esize_, unit_recv_, hi - lo, dtype_);
        ddp_reduced_bytes += (double)un->count * esize_;
    } else {
        lc_add(gshard_ + (lo - fsdp_lo_) * esize_, buf + (lo - un->first) * esize_, hi - lo, dtype_);
    }
    memset(buf, 0, un->count * esize_);
    unit_done_[u] = 1;
}

void fsdp_unit_grads_ready(int u) {
    if (!unit_done_[u]) unit_reduce(u);
}

void *fsdp_shard_grads(void *full, size_t len, int accumulate) {
    free(full);   /* the whole gradient arena is never written: a unit's buffer at a time */
    unit_grads_len_ = len;
    unit_grads_ = calloc(len ? len : 1, esize_);
    gshard_ = fsdp_grad_shard_;   /* (SHARD_GRAD_OP's reduce-scatter target: FULL_SHARD's shard) */
    if (!accumulate || world_ <= 1) recv_len_ = 0;   /* every reduce-scatter lands in the shard */
    unit_recv_ = calloc(recv_len_ ? recv_len_ : 1, esize_);
    if (!unit_grads_ || !unit_recv_) ddp_die("out of memory");
    fsdp_grads_ = NULL;
    return unit_grads_;
}

void fsdp_begin_backward(int first) {
    ddp_begin_backward(1);
    accumulating_ = !first;
}

void *fsdp_grad_shard(void) { return gshard_; }
void fsdp_zero_grads(void) { memset(gshard_, 0, (fsdp_len_ ? fsdp_len_ : 1) * esize_); }

void fsdp_bytes(double *params, double *grads, double *grad_shard, double *state_shard) {
    if (pshard_ || units_) {   /* FULL_SHARD: this rank's shard and one gathered unit */
        *params = (double)(fsdp_len_ + gathered_max_) * esize_;
        *grads = (double)(unit_grads_len_ + recv_len_) * esize_;   /* the units' gradient buffers, a reduce-scatter's landing */
        *grad_shard = (double)fsdp_len_ * esize_;
        *state_shard = (double)fsdp_len_ * state_esize_;
        return;
    }
    *params = (double)fsdp_numel_ * esize_;
    *grads = (double)fsdp_numel_ * esize_;
    *grad_shard = (double)fsdp_len_ * esize_;
    *state_shard = (double)fsdp_len_ * state_esize_;
}
