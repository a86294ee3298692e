// The loader: a dataset cut into batches, shuffled per epoch, sharded over ranks as
// torch.utils.data.DistributedSampler does, assembled on a prefetch thread.
//
// Which samples batch b of epoch e holds on rank r (R ranks, batch size B):
//   order  = sampler_permute(seed, e, N)   (or 0..N-1 without shuffle)
//   shard  = order[(r + p*R) % N] for p = 0 .. ceil(N/R) - 1
//   batch  = shard[b*B .. min((b+1)*B, ceil(N/R)))   (the short tail dropped with drop_last)
// Every batch is a pure function of (seed, e, b, r), which is what makes prefetch and
// resume exact: the prefetch thread computes the same function ahead of time, and a
// resumed loader computes it from the saved (e, b).
//
// With LOADER_PREFETCH_AUTO, a dataset in memory without augmentation has no thread:
// loader_next copies batch b's rows and starts batch b+1's on their way to the cache.
// A prefetch thread fills a ring of slots (2 to LOADER_SLOTS, as many as fit in
// LOADER_RING_BYTES: a small batch gets a deep ring).  The caller holds one slot (the
// batch it is training on) while the thread fills the others with the next batches; the
// next loader_next hands the held slot back and takes the next filled one.  The two sides
// meet through two counters (batches filled, slots freed) read and written atomically:
// a step that finds its batch ready costs no lock and no system call.  A full ring puts
// the thread to sleep until the caller has given back a quarter of it (one wake-up per
// quarter ring, not per step, and the woken thread has the other three quarters to catch
// up in before the caller runs dry); a caller that finds its batch not ready spins
// briefly, then sleeps until the thread has filled it.  Either side signals the other
// only when it sleeps (issue 12).
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "data_internal.h"
#include "philox.h"

// ----------------------------------------------------------------------------
// sampling

// (sampler_permute is in data.c: the random split uses it, and programs that link data.c
// without the loader, the export CLI and the test harnesses, must still link)

int64_t sampler_shard(const int64_t *order, int64_t n, int num_replicas, int rank, int64_t *out) {
    int64_t R = num_replicas > 0 ? num_replicas : 1, per_rank = (n + R - 1) / R;
    // DistributedSampler: indices += indices[:padding] (repeated as often as needed), then indices[rank::R]
    for (int64_t p = 0; p < per_rank; p++) out[p] = order[(rank + p * R) % n];
    return per_rank;
}

// ----------------------------------------------------------------------------
// augmentation

void image_augment(const augment_opts *a, int64_t C, int64_t H, int64_t W, uint64_t seed, int64_t epoch, int64_t sample,
                   float *img, float *tmp) {
    philox4x32 r = philox4x32_10(seed, (uint32_t)sample, (uint32_t)((uint64_t)sample >> 32), (uint32_t)epoch,
                                 (uint32_t)((uint64_t)epoch >> 32) ^ 0x4155474Du);   // "AUGM"
    int64_t p = a->padding;
    // RandomCrop(padding = p): of the (H + 2p) x (W + 2p) padded image, the H x W window
    // at (top, left), each uniform in 0..2p; output (y, x) is input (y + top - p, x + left - p)
    int64_t dy = p > 0 ? (int64_t)(r.v[0] % (uint32_t)(2 * p + 1)) - p : 0;
    int64_t dx = p > 0 ? (int64_t)(r.v[1] % (uint32_t)(2 * p + 1)) - p : 0;
    int flip = a->hflip > 0 && (double)r.v[2] * 0x1p-32 < a->hflip;
    if (dy == 0 && dx == 0 && !flip) return;
    memcpy(tmp, img, sizeof(float) * (size_t)(C * H * W));
    for (int64_t c = 0; c < C; c++) {
        const float *in = tmp + c * H * W;
        float *out = img + c * H * W, fill = a->fill[c < IMAGE_MAX_CHANNELS ? c : 0];
        for (int64_t y = 0; y < H; y++) {
            int64_t sy = y + dy;
            for (int64_t x = 0; x < W; x++) {
                int64_t sx = (flip ? W - 1 - x : x) + dx;   // the flip is applied to the crop's output
                out[y * W + x] = sy >= 0 && sy < H && sx >= 0 && sx < W ? in[sy * W + sx] : fill;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// the loader

#define LOADER_SLOTS 256
#define LOADER_RING_BYTES ((size_t)4 << 20)
#define LOADER_SPIN 2000   // pause instructions a caller spins (a few µs) before it sleeps

typedef struct {
    void *buf[DATA_MAX_FIELDS];  // field f: (batch_size, *field shape)
    int64_t *sample;             // (batch_size,) dataset indices
    int64_t size, epoch, index;
} slot;

struct loader {
    dataset ds;        // our own reference
    loader_opts o;
    int R, rank;
    int64_t per_rank;  // samples this rank sees per epoch: ceil(N / R)
    int64_t nbatches;  // batches per epoch
    int64_t epoch, batch;  // the caller's position: the batch loader_next returns next
    // the producer's position and order: touched only by the thread (or by the
    // caller when there is no thread, or while the thread is stopped)
    int64_t p_epoch, p_batch;
    int64_t *order;       // (N,) sample order of epoch order_epoch
    augment_opts aug;     // (aug_field >= 0) the training images' augmentation
    int aug_field;
    float *aug_tmp;       // one image of scratch (only the producer augments)
    int64_t order_epoch;  // -1: none yet
    int threaded;   // a prefetch thread fills the ring (else loader_next fills slot 0)
    int nslots;
    slot slots[LOADER_SLOTS];
    // The ring since the thread started: batch k is in slot k % nslots.  filled is
    // written by the thread (release: the slot's contents come before it), freed by
    // the caller (release: its reads of the slot come before it).
    _Atomic int64_t filled;
    char apart[64];   // filled and freed on lines of their own: the two sides write them
    _Atomic int64_t freed;
    int64_t taken;   // the caller's: batches taken (it holds batch taken - 1 while holding)
    int holding;
    int wake_at;     // free slots that wake a sleeping thread
    // who sleeps on cv (set under the mutex; read by the other side without it)
    _Atomic int p_waiting, c_waiting;
    _Atomic int stop;
    int running;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// Assembles batch `index` of epoch `epoch` into s.
static void loader_fill(loader *L, slot *s, int64_t epoch, int64_t index) {
    int64_t N = L->ds.n, B = L->o.batch_size;
    if (L->order_epoch != epoch && (L->o.shuffle || L->order_epoch < 0)) {
        if (L->o.shuffle) sampler_permute(L->o.seed, epoch, N, L->order);
        else for (int64_t i = 0; i < N; i++) L->order[i] = i;
        L->order_epoch = epoch;
    }
    int64_t start = index * B, size = L->per_rank - start < B ? L->per_rank - start : B;
    for (int64_t k = 0; k < size; k++) {
        int64_t i = L->order[(L->rank + (start + k) * L->R) % N];
        s->sample[k] = i;
        for (int f = 0; f < L->ds.nfields; f++)
            dataset_get(&L->ds, f, i, (char *)s->buf[f] + (size_t)k * L->ds.field[f].nbytes);
        if (L->aug_field >= 0) {
            const data_field *fd = &L->ds.field[L->aug_field];
            image_augment(&L->aug, fd->shape[0], fd->shape[1], fd->shape[2], L->o.seed, epoch, i,
                          (float *)((char *)s->buf[L->aug_field] + (size_t)k * fd->nbytes), L->aug_tmp);
        }
    }
    s->size = size;
    s->epoch = epoch;
    s->index = index;
}

// (epoch, batch) -> the position after it.
static void advance(const loader *L, int64_t *epoch, int64_t *batch) {
    if (++*batch >= L->nbatches) { *batch = 0; ++*epoch; }
}

// Wakes the other side, asleep on cv (the caller of this saw its flag set).
static void wake(loader *L) {
    pthread_mutex_lock(&L->mu);
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
}

// The prefetch thread: fill batch k into slot k % nslots, in batch order, once the
// caller has freed that slot, until told to stop.  Sleeping and waking: each side sets
// its flag, then reads the other's counter (both sequentially consistent), and the other
// writes its counter, then reads the flag; so one of them sees the other, and the wake
// takes the mutex the sleeper holds until it waits: no wake-up is lost.  The waker
// clears the flag as it wakes (one wake per sleep, however late the sleeper runs), and
// the sleeper sets it again before each wait.
static void *loader_thread(void *arg) {
    loader *L = arg;
    int64_t k = 0;   // batches filled
    while (!atomic_load(&L->stop)) {
        if (k - atomic_load_explicit(&L->freed, memory_order_acquire) >= L->nslots) {
            pthread_mutex_lock(&L->mu);   // the ring is full: sleep until a quarter of it is free
            for (;;) {
                atomic_store(&L->p_waiting, 1);   // (again after each wake: the waker cleared it)
                if (atomic_load(&L->stop) || L->nslots - (k - atomic_load(&L->freed)) >= L->wake_at) break;
                pthread_cond_wait(&L->cv, &L->mu);
            }
            atomic_store(&L->p_waiting, 0);
            pthread_mutex_unlock(&L->mu);
            continue;
        }
        loader_fill(L, &L->slots[k % L->nslots], L->p_epoch, L->p_batch);
        advance(L, &L->p_epoch, &L->p_batch);
        atomic_store(&L->filled, ++k);
        if (atomic_load(&L->c_waiting) && atomic_exchange(&L->c_waiting, 0)) wake(L);
    }
    return NULL;
}

// Starts the prefetch thread at the caller's position, all slots free.
static int loader_start(loader *L, data_err *err) {
    L->p_epoch = L->epoch;
    L->p_batch = L->batch;
    if (L->p_batch >= L->nbatches) { L->p_batch = 0; L->p_epoch++; }
    atomic_store(&L->filled, 0);
    atomic_store(&L->freed, 0);
    L->taken = 0;
    L->holding = 0;
    L->wake_at = L->nslots / 4 > 1 ? L->nslots / 4 : 1;
    atomic_store(&L->p_waiting, 0);
    atomic_store(&L->c_waiting, 0);
    if (!L->threaded) return data_ok(err);
    atomic_store(&L->stop, 0);
    PTHREAD_CHECK(pthread_create(&L->thread, NULL, loader_thread, L));
    L->running = 1;
    return data_ok(err);
}

// Stops and joins the prefetch thread (if any); the slots' contents are dropped.
static void loader_stop(loader *L) {
    if (!L->running) return;
    atomic_store(&L->stop, 1);
    wake(L);
    pthread_join(L->thread, NULL);
    L->running = 0;
}

int loader_open(loader **out, const dataset *ds, const loader_opts *o, data_err *err) {
    *out = NULL;
    int R = o->num_replicas > 0 ? o->num_replicas : 1;
    if (o->batch_size < 1) return data_fail(err, DATA_EARG, "loader: batch_size %lld must be >= 1", (long long)o->batch_size);
    if (o->rank < 0 || o->rank >= R) return data_fail(err, DATA_EARG, "loader: rank %d must be in 0..%d (num_replicas %d)", o->rank, R - 1, R);
    if (ds->n < 1) return data_fail(err, DATA_EARG, "loader: the dataset is empty");
    int64_t per_rank = (ds->n + R - 1) / R;
    int64_t nbatches = o->drop_last ? per_rank / o->batch_size : (per_rank + o->batch_size - 1) / o->batch_size;
    if (nbatches < 1)
        return data_fail(err, DATA_EARG, "loader: drop_last with %lld samples per rank and batch_size %lld leaves no batch",
                         (long long)per_rank, (long long)o->batch_size);
    loader *L = data_malloc(sizeof *L, "the loader", err);
    if (!L) return err->code;
    memset(L, 0, sizeof *L);
    L->o = *o;
    L->o.num_replicas = R;
    L->R = R;
    L->rank = o->rank;
    L->per_rank = per_rank;
    L->nbatches = nbatches;
    L->order_epoch = -1;
    L->aug_field = -1;
    if (o->augment) {
        int f = dataset_field(ds, o->augment->field);
        const data_field *fd = f >= 0 ? &ds->field[f] : NULL;
        if (!fd || fd->dtype != DT_F32 || fd->ndim != 3 || fd->shape[0] > IMAGE_MAX_CHANNELS) {
            free(L);
            return data_fail(err, DATA_EARG, "loader: augmentation needs a float32 (channels, height, width) image field '%s'", o->augment->field);
        }
        if (!(L->aug_tmp = data_malloc(fd->nbytes, "augmentation", err))) { free(L); return err->code; }
        L->aug = *o->augment;
        L->aug.field = NULL;   // (the caller's string; the index is kept instead)
        L->o.augment = NULL;
        L->aug_field = f;
    }
    L->ds = dataset_ref(ds);
    L->threaded = o->prefetch == LOADER_PREFETCH_ALWAYS ||
                  (o->prefetch == LOADER_PREFETCH_AUTO && (L->aug_field >= 0 || !dataset_in_memory(ds)));
    L->nslots = 1;
    if (L->threaded) {   // a ring of up to LOADER_RING_BYTES, 2 slots at least
        size_t batch_bytes = sizeof(int64_t) * (size_t)o->batch_size;
        for (int f = 0; f < ds->nfields; f++) batch_bytes += ds->field[f].nbytes * (size_t)o->batch_size;
        size_t fit = LOADER_RING_BYTES / batch_bytes;
        L->nslots = fit < 2 ? 2 : fit > LOADER_SLOTS ? LOADER_SLOTS : (int)fit;
    }
    int rc = DATA_OK;
    if (pthread_mutex_init(&L->mu, NULL) != 0 || pthread_cond_init(&L->cv, NULL) != 0) {
        // (only on resource exhaustion; the leaked mutex, if any, holds no memory on Linux)
        rc = data_fail(err, DATA_EINTERNAL, "%s:%d: pthread mutex/cond init failed", __FILE__, __LINE__);
        dataset_free(&L->ds);
        free(L->aug_tmp);
        free(L);
        return rc;
    }
    if (!(L->order = data_malloc(sizeof(int64_t) * (size_t)ds->n, "the sample order", err))) { rc = err->code; goto fail; }
    for (int k = 0; k < L->nslots; k++) {
        slot *s = &L->slots[k];
        if (!(s->sample = data_malloc(sizeof(int64_t) * (size_t)o->batch_size, "a batch", err))) { rc = err->code; goto fail; }
        for (int f = 0; f < ds->nfields; f++)
            if (!(s->buf[f] = data_malloc(ds->field[f].nbytes * (size_t)o->batch_size, "a batch", err))) { rc = err->code; goto fail; }
    }
    if ((rc = loader_start(L, err))) goto fail;
    *out = L;
    return data_ok(err);
fail:
    loader_close(L);  // frees what was allocated (free(NULL) is fine); no thread runs yet
    return rc;
}

int loader_next(loader *L, data_batch *b, data_err *err) {
    if (L->batch >= L->nbatches) {  // the epoch is over: say so once, then go on with the next
        L->epoch++;
        L->batch = 0;
        data_ok(err);
        return DATA_END;
    }
    slot *s;
    if (!L->threaded) {
        s = &L->slots[0];
        loader_fill(L, s, L->epoch, L->batch);
        if (L->o.prefetch && L->batch + 1 < L->nbatches) {
            // the next batch's rows, fetched while the caller trains on this one
            int64_t N = L->ds.n, B = L->o.batch_size, start = (L->batch + 1) * B;
            int64_t end = start + B < L->per_rank ? start + B : L->per_rank;
            for (int64_t p = start; p < end; p++) dataset_prefetch(&L->ds, L->order[(L->rank + p * L->R) % N]);
        }
    } else {
        if (L->holding) {  // the caller is done with the previous batch: the thread may refill it
            atomic_store(&L->freed, L->taken);
            if (atomic_load(&L->p_waiting) && L->nslots - (atomic_load(&L->filled) - L->taken) >= L->wake_at &&
                atomic_exchange(&L->p_waiting, 0))
                wake(L);
        }
        if (atomic_load_explicit(&L->filled, memory_order_acquire) <= L->taken) {
            // not ready: spin a few µs (the thread is usually about to publish it), then sleep
            for (int i = 0; i < LOADER_SPIN && atomic_load_explicit(&L->filled, memory_order_acquire) <= L->taken; i++) cpu_relax();
            if (atomic_load_explicit(&L->filled, memory_order_acquire) <= L->taken) {
                pthread_mutex_lock(&L->mu);
                for (;;) {
                    atomic_store(&L->c_waiting, 1);
                    if (atomic_load(&L->filled) > L->taken) break;
                    pthread_cond_wait(&L->cv, &L->mu);
                }
                atomic_store(&L->c_waiting, 0);
                pthread_mutex_unlock(&L->mu);
            }
        }
        s = &L->slots[L->taken % L->nslots];
        L->taken++;
        L->holding = 1;
        if (s->epoch != L->epoch || s->index != L->batch)
            return data_fail(err, DATA_EINTERNAL, "%s:%d: prefetched batch %lld of epoch %lld, expected %lld of %lld (loom bug)", __FILE__, __LINE__,
                             (long long)s->index, (long long)s->epoch, (long long)L->batch, (long long)L->epoch);
    }
    memset(b, 0, sizeof *b);
    b->size = s->size;
    b->epoch = s->epoch;
    b->index = s->index;
    b->nfields = L->ds.nfields;
    b->field = L->ds.field;
    for (int f = 0; f < L->ds.nfields; f++) b->data[f] = s->buf[f];
    b->sample = s->sample;
    L->batch++;
    return data_ok(err);
}

int64_t loader_len(const loader *L) { return L->nbatches; }
int loader_threaded(const loader *L) { return L->threaded; }

loader_state loader_state_get(const loader *L) {
    loader_state s = {
        .epoch = L->epoch, .batch = L->batch, .seed = L->o.seed, .n = L->ds.n, .batch_size = L->o.batch_size,
        .num_replicas = L->R, .rank = L->rank, .shuffle = !!L->o.shuffle, .drop_last = !!L->o.drop_last,
    };
    return s;
}

int loader_seek(loader *L, const loader_state *s, data_err *err) {
    loader_state me = loader_state_get(L);
    const char *what = s->n != me.n ? "dataset size" : s->batch_size != me.batch_size ? "batch_size"
                     : s->seed != me.seed ? "seed" : s->num_replicas != me.num_replicas ? "num_replicas"
                     : s->rank != me.rank ? "rank" : s->shuffle != me.shuffle ? "shuffle"
                     : s->drop_last != me.drop_last ? "drop_last" : NULL;
    if (what) return data_fail(err, DATA_EMISMATCH, "loader: the saved state is from a loader with another %s", what);
    if (s->epoch < 0 || s->batch < 0 || s->batch > L->nbatches)
        return data_fail(err, DATA_EARG, "loader: saved position epoch %lld batch %lld is out of range (%lld batches per epoch)",
                         (long long)s->epoch, (long long)s->batch, (long long)L->nbatches);
    loader_stop(L);
    L->epoch = s->epoch;
    L->batch = s->batch;
    return loader_start(L, err);
}

void loader_close(loader *L) {
    if (!L) return;
    loader_stop(L);
    pthread_cond_destroy(&L->cv);
    pthread_mutex_destroy(&L->mu);
    for (int k = 0; k < L->nslots; k++) {
        free(L->slots[k].sample);
        for (int f = 0; f < L->ds.nfields; f++) free(L->slots[k].buf[f]);
    }
    free(L->order);
    free(L->aug_tmp);
    dataset_free(&L->ds);
    free(L);
}
