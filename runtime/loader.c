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
// Prefetch is a ring of slots (2 to LOADER_SLOTS, as many as fit in LOADER_RING_BYTES).
// The caller holds one slot (the batch it is training on) while the thread fills the
// others with the next batches; the next loader_next hands the held slot back and takes
// the next filled one.  A full ring puts the thread to sleep until the caller has given
// back half of it, and either side signals only a sleeping other: with small batches a
// step costs a mutex, not a futex wake and a context switch (issue 12).
#include <pthread.h>
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

enum { SLOT_FREE, SLOT_READY, SLOT_HELD };
#define LOADER_SLOTS 8
#define LOADER_RING_BYTES ((size_t)4 << 20)

typedef struct {
    void *buf[DATA_MAX_FIELDS];  // field f: (batch_size, *field shape)
    int64_t *sample;             // (batch_size,) dataset indices
    int64_t size, epoch, index;
    int state;                   // SLOT_*, under the mutex
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
    int nslots;
    slot slots[LOADER_SLOTS];
    int next_slot;  // the slot the caller takes next
    int held;       // the slot the caller holds, or -1
    // under the mutex: free slots, how many wake a sleeping thread, who sleeps
    int nfree, wake_at, p_waiting, c_waiting;
    int running, stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

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

// The prefetch thread: fill slot 0, 1, ..., nslots-1, 0, ... in batch order, each
// once the caller has given it back, until told to stop.  The caller frees slots in
// ring order, so the free ones start at w.
static void *loader_thread(void *arg) {
    loader *L = arg;
    int w = 0;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        if (!L->stop && L->slots[w].state != SLOT_FREE) {
            L->p_waiting = 1;   // the ring is full: sleep until half of it is free
            while (!L->stop && (L->slots[w].state != SLOT_FREE || L->nfree < L->wake_at)) pthread_cond_wait(&L->cv, &L->mu);
            L->p_waiting = 0;
        }
        if (L->stop) break;
        L->nfree--;
        pthread_mutex_unlock(&L->mu);
        loader_fill(L, &L->slots[w], L->p_epoch, L->p_batch);  // the slow part, unlocked
        advance(L, &L->p_epoch, &L->p_batch);
        pthread_mutex_lock(&L->mu);
        L->slots[w].state = SLOT_READY;
        if (L->c_waiting) pthread_cond_broadcast(&L->cv);
        w = (w + 1) % L->nslots;
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

// Starts the prefetch thread at the caller's position, all slots free.
static int loader_start(loader *L, data_err *err) {
    L->p_epoch = L->epoch;
    L->p_batch = L->batch;
    if (L->p_batch >= L->nbatches) { L->p_batch = 0; L->p_epoch++; }
    for (int k = 0; k < L->nslots; k++) L->slots[k].state = SLOT_FREE;
    L->next_slot = 0;
    L->held = -1;
    L->nfree = L->nslots;
    L->wake_at = L->nslots / 2 > 1 ? L->nslots / 2 : 1;
    L->p_waiting = L->c_waiting = 0;
    if (!L->o.prefetch) return data_ok(err);
    L->stop = 0;
    PTHREAD_CHECK(pthread_create(&L->thread, NULL, loader_thread, L));
    L->running = 1;
    return data_ok(err);
}

// Stops and joins the prefetch thread (if any); the slots' contents are dropped.
static void loader_stop(loader *L) {
    if (!L->running) return;
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
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
    L->nslots = 1;
    if (o->prefetch) {   // a ring of up to LOADER_RING_BYTES, 2 slots at least
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
    if (!L->o.prefetch) {
        s = &L->slots[0];
        loader_fill(L, s, L->epoch, L->batch);
    } else {
        pthread_mutex_lock(&L->mu);
        if (L->held >= 0) {  // the caller is done with the previous batch: the thread may refill it
            L->slots[L->held].state = SLOT_FREE;
            L->nfree++;
            if (L->p_waiting && L->nfree >= L->wake_at) pthread_cond_broadcast(&L->cv);
        }
        s = &L->slots[L->next_slot];
        if (s->state != SLOT_READY) {
            L->c_waiting = 1;
            while (s->state != SLOT_READY) pthread_cond_wait(&L->cv, &L->mu);
            L->c_waiting = 0;
        }
        s->state = SLOT_HELD;
        L->held = L->next_slot;
        L->next_slot = (L->next_slot + 1) % L->nslots;
        pthread_mutex_unlock(&L->mu);
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
