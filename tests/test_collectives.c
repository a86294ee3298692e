/* tests/test_collectives.c — runtime/collectives.{h,c} under mpirun (tests/suite_collectives.sh
 * runs it with 1, 2 and 3 ranks).  Every rank checks every case; the failures are summed
 * over ranks and rank 0 prints one TAP line per case, naming the first failing rank. */
#include "collectives.h"
#include "data.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NCASES = 15 };
static const char *names[NCASES] = {
  "rank, local rank and world size",
  "all-reduce sum f32",
  "all-reduce avg f64",
  "all-reduce avg in buckets (last bucket short)",
  "a bucket smaller than an element is refused",
  "non-blocking all-reduce: two started, then waited",
  "broadcast from rank 0 and from the last rank",
  "reduce-scatter sum",
  "all-gather",
  "barrier",
  "an MPI error comes back as one line, no abort",
  "data-parallel SGD: N ranks x batch B (sharded loader, bucketed avg) = 1 rank x batch N*B",
  "lc_test polls a started all-reduce to completion, then lc_wait scales it",
  "FSDP's shards (the last rank's shorter): reduce-scatter-v avg, all-gather-v in place, gather-v to rank 0",
  "bf16 and f16: all-reduce avg (started and waited) and reduce-scatter-v avg sum in float and round once; all-gather-v moves them",
};
static char detail[NCASES][256];

#define CHECK(i, cond, ...) do { if (!(cond)) { snprintf(detail[i], sizeof detail[i], __VA_ARGS__); return; } } while (0)

static int R, N;

static void case_sizes(void) {
  CHECK(0, N >= 1 && R >= 0 && R < N, "rank %d of %d", R, N);
  /* one node: the local rank is the rank */
  CHECK(0, lc_local_rank() == R, "local rank %d on rank %d", lc_local_rank(), R);
}
static void case_sum_f32(void) {
  float x[37];
  for (int i = 0; i < 37; i++) x[i] = (float)(R + 1) * (float)i;
  CHECK(1, lc_all_reduce(x, 37, LC_F32, LC_SUM) == 0, "%s", lc_error());
  float tri = (float)(N * (N + 1) / 2);
  for (int i = 0; i < 37; i++) CHECK(1, x[i] == tri * (float)i, "x[%d] = %g, want %g", i, x[i], tri * i);
}
static void case_avg_f64(void) {
  double x[5];
  for (int i = 0; i < 5; i++) x[i] = R * 10.0 + i;
  CHECK(2, lc_all_reduce(x, 5, LC_F64, LC_AVG) == 0, "%s", lc_error());
  for (int i = 0; i < 5; i++) {
    double want = 10.0 * (N - 1) / 2.0 + i;
    CHECK(2, fabs(x[i] - want) <= 1e-12 * fabs(want), "x[%d] = %.17g, want %.17g", i, x[i], want);
  }
}
static void case_buckets(void) {
  enum { C = 1001 };
  float *x = malloc(C * sizeof *x);
  for (int i = 0; i < C; i++) x[i] = (float)(R + 1) + 0.25f * (float)(i % 7);
  /* 96-byte buckets: 24 floats each, 1001 = 41*24 + 17 */
  int rc = lc_all_reduce_buckets(x, C, LC_F32, LC_AVG, 96);
  int bad = -1;
  for (int i = 0; i < C && rc == 0; i++) {
    float want = ((float)(N * (N + 1) / 2) + (float)N * 0.25f * (float)(i % 7)) * (1.0f / (float)N);
    if (fabsf(x[i] - want) > 1e-6f * fabsf(want)) { bad = i; break; }
  }
  float got = bad >= 0 ? x[bad] : 0;
  free(x);
  CHECK(3, rc == 0, "%s", lc_error());
  CHECK(3, bad < 0, "x[%d] = %g", bad, got);
}
static void case_tiny_bucket(void) {
  double x = 1;
  CHECK(4, lc_all_reduce_buckets(&x, 1, LC_F64, LC_SUM, 4) == -1, "a 4-byte bucket of doubles was accepted");
  CHECK(4, strstr(lc_error(), "holds no element") != NULL, "error: %s", lc_error());
}
static void case_nonblocking(void) {
  double a[3] = { R, R, R }, b[2] = { 1, 2 };
  lc_pending *pa, *pb;
  CHECK(5, lc_all_reduce_start(a, 3, LC_F64, LC_SUM, &pa) == 0, "%s", lc_error());
  CHECK(5, lc_all_reduce_start(b, 2, LC_F64, LC_AVG, &pb) == 0, "%s", lc_error());
  /* wait in the other order than started: each request completes on its own */
  CHECK(5, lc_wait(pb) == 0, "%s", lc_error());
  CHECK(5, lc_wait(pa) == 0, "%s", lc_error());
  double tri = N * (N - 1) / 2.0;
  for (int i = 0; i < 3; i++) CHECK(5, a[i] == tri, "a[%d] = %g, want %g", i, a[i], tri);
  CHECK(5, b[0] == 1 && b[1] == 2, "b = %g %g, want 1 2", b[0], b[1]);
}
static void case_broadcast(void) {
  int v[4];
  for (int i = 0; i < 4; i++) v[i] = R * 100 + i;
  CHECK(6, lc_broadcast(v, sizeof v, 0) == 0, "%s", lc_error());
  for (int i = 0; i < 4; i++) CHECK(6, v[i] == i, "from 0: v[%d] = %d", i, v[i]);
  for (int i = 0; i < 4; i++) v[i] = R * 100 + i;
  CHECK(6, lc_broadcast(v, sizeof v, N - 1) == 0, "%s", lc_error());
  for (int i = 0; i < 4; i++) CHECK(6, v[i] == (N - 1) * 100 + i, "from %d: v[%d] = %d", N - 1, i, v[i]);
}
static void case_reduce_scatter(void) {
  enum { C = 3 };
  float *send = malloc((size_t)N * C * sizeof *send), recv[C];
  for (int j = 0; j < N * C; j++) send[j] = (float)(j + R);
  int rc = lc_reduce_scatter(send, recv, C, LC_F32, LC_SUM);
  free(send);
  CHECK(7, rc == 0, "%s", lc_error());
  for (int i = 0; i < C; i++) {
    float want = (float)(N * (R * C + i)) + (float)(N * (N - 1) / 2);
    CHECK(7, recv[i] == want, "recv[%d] = %g, want %g", i, recv[i], want);
  }
}
static void case_all_gather(void) {
  double mine[2] = { R, -R }, *all = malloc((size_t)N * sizeof mine);
  int rc = lc_all_gather(mine, all, sizeof mine);
  int bad = -1;
  for (int r = 0; r < N && rc == 0; r++)
    if (all[2 * r] != r || all[2 * r + 1] != -r) { bad = r; break; }
  free(all);
  CHECK(8, rc == 0, "%s", lc_error());
  CHECK(8, bad < 0, "rank %d's slot is wrong", bad);
}
/* an arena of 10 floats cut as FSDP cuts it (runtime/ddp.c): ceil(10/N) per rank, the
 * last ranks shorter or empty (3 ranks: 4, 4, 2) */
static void case_shards_v(void) {
  enum { C = 10 };
  int counts[64], displs[64];
  int len = (C + N - 1) / N;
  for (int r = 0; r < N; r++) {
    int lo = len * r < C ? len * r : C, hi = len * (r + 1) < C ? len * (r + 1) : C;
    counts[r] = hi - lo;
    displs[r] = lo;
  }
  float grads[C], shard[C], full[C];
  for (int i = 0; i < C; i++) grads[i] = (float)(i + 10 * R);
  CHECK(13, lc_reduce_scatter_v(grads, shard, counts, LC_F32, LC_AVG) == 0, "%s", lc_error());
  for (int k = 0; k < counts[R]; k++) {
    float want = (float)(displs[R] + k) + 10.0f * (float)(N - 1) / 2.0f;
    CHECK(13, fabsf(shard[k] - want) <= 1e-6f * fabsf(want), "reduce-scatter-v: shard[%d] = %g, want %g", k, shard[k], want);
  }
  float params[C];
  for (int i = 0; i < C; i++) params[i] = -1;
  for (int k = 0; k < counts[R]; k++) params[displs[R] + k] = (float)(100 * R + k);   /* this rank's update */
  CHECK(13, lc_all_gather_v(params, counts, displs, LC_F32) == 0, "%s", lc_error());
  for (int r = 0; r < N; r++)
    for (int k = 0; k < counts[r]; k++)
      CHECK(13, params[displs[r] + k] == (float)(100 * r + k), "all-gather-v: params[%d] = %g", displs[r] + k, params[displs[r] + k]);
  float mine[C];
  for (int k = 0; k < counts[R]; k++) mine[k] = (float)(displs[R] + k) * 0.5f;
  for (int i = 0; i < C; i++) full[i] = -1;
  CHECK(13, lc_gather_v(mine, full, counts, displs, LC_F32, 0) == 0, "%s", lc_error());
  if (R == 0)
    for (int i = 0; i < C; i++) CHECK(13, full[i] == (float)i * 0.5f, "gather-v: full[%d] = %g", i, full[i]);
}
static void case_barrier(void) { CHECK(9, lc_barrier() == 0, "%s", lc_error()); }
static void case_error(void) {
  char b = 0;
  /* a root that is no rank: MPI checks the argument and returns the error to us */
  CHECK(10, lc_broadcast(&b, 1, N + 5) == -1, "a broadcast from rank %d succeeded", N + 5);
  CHECK(10, strncmp(lc_error(), "MPI_Bcast: ", 11) == 0 && !strchr(lc_error(), '\n'), "error: '%s'", lc_error());
}

/* What DDP composes from the runtime: weights broadcast from rank 0, each rank a
 * DistributedSampler shard of the epoch's permutation (loader num_replicas/rank), the
 * gradient of its mean loss averaged in buckets.  Least squares on synthetic data in
 * float64: after 20 steps the weights equal those of one process whose batch is the
 * union of the ranks' batches (computed on every rank with an unsharded loader). */
enum { FEAT = 4, NW = FEAT + 1, B_RANK = 4, STEPS = 20 };
static void sgd_grad(const data_batch *db, const double *w, double *g) {
  const double *x = db->data[0], *y = db->data[1];
  for (int k = 0; k < NW; k++) g[k] = 0;
  for (int64_t i = 0; i < db->size; i++) {
    double r = w[FEAT] - y[i];
    for (int k = 0; k < FEAT; k++) r += w[k] * x[i * FEAT + k];
    for (int k = 0; k < FEAT; k++) g[k] += 2 * r * x[i * FEAT + k] / (double)db->size;
    g[FEAT] += 2 * r / (double)db->size;
  }
}
static int train(const dataset *ds, int replicas, int rank, int64_t batch, int sync, double *w, char *why, size_t len) {
  loader *L = NULL;
  data_err err = {0};
  loader_opts o = { batch, 1, 7, 1, replicas, rank, 0, NULL };
  if (loader_open(&L, ds, &o, &err)) { snprintf(why, len, "loader: %.200s", err.msg); return -1; }
  int rc = 0;
  for (int step = 0; step < STEPS && rc == 0; ) {
    data_batch db;
    int got = loader_next(L, &db, &err);
    if (got == DATA_END) continue;
    if (got != DATA_OK) { snprintf(why, len, "loader: %.200s", err.msg); rc = -1; break; }
    double g[NW];
    sgd_grad(&db, w, g);
    /* 16-byte buckets: the 5 gradients go as 2 + 2 + 1 */
    if (sync && lc_all_reduce_buckets(g, NW, LC_F64, LC_AVG, 16)) { snprintf(why, len, "%s", lc_error()); rc = -1; break; }
    for (int k = 0; k < NW; k++) w[k] -= 0.05 * g[k];
    step++;
  }
  loader_close(L);
  return rc;
}
static void case_data_parallel(void) {
  enum { C = 11 };
  synth_field_spec f[2] = {
    { "x", DT_F64, 1, { FEAT }, SYNTH_NORMAL, 0, 1 },
    { "y", DT_F64, 0, { 0 }, SYNTH_NORMAL, 1, 2 },
  };
  dataset ds;
  data_err err = {0};
  /* 96 samples: a multiple of N*B for 1, 2 and 3 ranks, so no rank pads */
  CHECK(C, synth_open(f, 2, 96, 3, &ds, &err) == 0, "synth_open: %.200s", err.msg);
  double w[NW], ref[NW];
  for (int k = 0; k < NW; k++) w[k] = 0.1 * (k + 1) + R;   /* differs by rank until the broadcast */
  int rc = lc_broadcast(w, sizeof w, 0);
  for (int k = 0; k < NW; k++) ref[k] = 0.1 * (k + 1);
  char why[256] = "";
  if (rc) snprintf(why, sizeof why, "%s", lc_error());
  else rc = train(&ds, N, R, B_RANK, 1, w, why, sizeof why);
  if (!rc) rc = train(&ds, 1, 0, (int64_t)N * B_RANK, 0, ref, why, sizeof why);
  dataset_free(&ds);
  CHECK(C, rc == 0, "%s", why);
  for (int k = 0; k < NW; k++)
    CHECK(C, fabs(w[k] - ref[k]) <= 1e-12 * fabs(ref[k]), "w[%d] = %.17g, one process %.17g", k, w[k], ref[k]);
  CHECK(C, fabs(ref[0] - 0.1) > 1e-3, "the weights did not move (w[0] = %g)", ref[0]);
}

static void case_test_poll(void) {
  enum { C = 12 };
  float x[300];
  for (int i = 0; i < 300; i++) x[i] = (float)(R + 1);
  lc_pending *p;
  CHECK(C, lc_all_reduce_start(x, 300, LC_F32, LC_AVG, &p) == 0, "%s", lc_error());
  int done = 0;
  long polls = 0;
  /* every rank polls until its request completes (bounded: a hang is a failure, not a stuck test) */
  while (!done && polls < 100000000L) { done = lc_test(p); polls++; if (done < 0) break; }
  int rc = lc_wait(p);
  CHECK(C, done == 1, "lc_test returned %d after %ld polls (%s)", done, polls, lc_error());
  CHECK(C, rc == 0, "%s", lc_error());
  float want = (float)(N * (N + 1) / 2) * (1.0f / (float)N);
  for (int i = 0; i < 300; i++) CHECK(C, fabsf(x[i] - want) <= 1e-6f * want, "x[%d] = %g, want %g", i, x[i], want);
}

/* 16-bit values as the generated kernels round them (bf16: nearest even; f16: _Float16) */
static uint16_t to16(float x, lc_dtype t) {
  uint16_t h;
  if (t == LC_F16) { _Float16 f = (_Float16)x; memcpy(&h, &f, sizeof h); return h; }
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float from16(uint16_t h, lc_dtype t) {
  if (t == LC_F16) { _Float16 f; memcpy(&f, &h, sizeof f); return (float)f; }
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static void case_half(void) {
  enum { C = 13 };
  const lc_dtype types[2] = { LC_BF16, LC_F16 };
  for (int k = 0; k < 2; k++) {
    lc_dtype t = types[k];
    const char *tn = t == LC_BF16 ? "bf16" : "f16";
    /* rank r's value of element i (not exact in 16 bits: the sum's rounding shows) */
    #define V(i, r) to16(1.0f + 0.013f * (float)(i) + 0.37f * (float)(r), t)
    uint16_t x[C], want[C];
    for (int i = 0; i < C; i++) {
      x[i] = V(i, R);
      float sum = 0;
      for (int r = 0; r < N; r++) sum += from16(V(i, r), t);
      want[i] = to16(sum * (1.0f / (float)N), t);
    }
    lc_pending *p;
    CHECK(14, lc_all_reduce_start(x, C, t, LC_AVG, &p) == 0, "%s: %s", tn, lc_error());
    CHECK(14, lc_wait(p) == 0, "%s: %s", tn, lc_error());
    for (int i = 0; i < C; i++) CHECK(14, x[i] == want[i], "%s all-reduce: x[%d] = %g, want %g", tn, i, from16(x[i], t), from16(want[i], t));
    int counts[64], displs[64], len = (C + N - 1) / N;
    for (int r = 0; r < N; r++) {
      int lo = len * r < C ? len * r : C, hi = len * (r + 1) < C ? len * (r + 1) : C;
      counts[r] = hi - lo;
      displs[r] = lo;
    }
    uint16_t g[C], shard[C];
    for (int i = 0; i < C; i++) g[i] = V(i, R);
    CHECK(14, lc_reduce_scatter_v(g, shard, counts, t, LC_AVG) == 0, "%s: %s", tn, lc_error());
    for (int j = 0; j < counts[R]; j++)
      CHECK(14, shard[j] == want[displs[R] + j], "%s reduce-scatter-v: shard[%d] = %g, want %g", tn, j, from16(shard[j], t), from16(want[displs[R] + j], t));
    for (int i = 0; i < C; i++) g[i] = 0;
    for (int j = 0; j < counts[R]; j++) g[displs[R] + j] = V(displs[R] + j, R);
    CHECK(14, lc_all_gather_v(g, counts, displs, t) == 0, "%s: %s", tn, lc_error());
    for (int r = 0; r < N; r++)
      for (int j = 0; j < counts[r]; j++) CHECK(14, g[displs[r] + j] == V(displs[r] + j, r), "%s all-gather-v: element %d", tn, displs[r] + j);
    #undef V
  }
}

int main(int argc, char **argv) {
  if (lc_init(&argc, &argv)) {
    fprintf(stderr, "test_collectives: %s\n", lc_error());
    return 1;
  }
  R = lc_rank();
  N = lc_world_size();
  /* --kill-rank K: rank K dies (SIGKILL) while the others wait in an all-reduce
   * (tests/suite_collectives.sh: the job must end, non-zero, naming rank K) */
  if (argc == 3 && strcmp(argv[1], "--kill-rank") == 0) {
    if (R == atoi(argv[2])) raise(SIGKILL);
    double x = 1;
    if (lc_all_reduce(&x, 1, LC_F64, LC_SUM)) fprintf(stderr, "rank %d: %s\n", R, lc_error());
    lc_finalize();
    return 0;
  }
  void (*cases[NCASES])(void) = { case_sizes, case_sum_f32, case_avg_f64, case_buckets, case_tiny_bucket,
    case_nonblocking, case_broadcast, case_reduce_scatter, case_all_gather, case_barrier, case_error,
    case_data_parallel, case_test_poll, case_shards_v, case_half };
  for (int i = 0; i < NCASES; i++) cases[i]();
  /* the lowest failing rank of each case (N where none failed), and that rank's detail */
  double first[NCASES];
  for (int i = 0; i < NCASES; i++) first[i] = detail[i][0] ? R : N;
  int rc = 0;
  for (int i = 0; i < NCASES; i++) {
    double f = first[i];
    /* the interface reduces by sum and avg only: the lowest failing rank comes from a gather */
    double *all = malloc((size_t)N * sizeof *all);
    if (lc_all_gather(&f, all, sizeof f)) { fprintf(stderr, "test_collectives: %s\n", lc_error()); return 1; }
    int who = N;
    for (int r = 0; r < N; r++) if (all[r] < N) { who = r; break; }
    free(all);
    char line[256];
    memcpy(line, detail[i], sizeof line);
    if (lc_broadcast(line, sizeof line, who < N ? who : 0)) { fprintf(stderr, "test_collectives: %s\n", lc_error()); return 1; }
    if (R == 0) {
      if (who == N) printf("ok %d %s\n", i + 1, names[i]);
      else printf("not ok %d %s: rank %d: %s\n", i + 1, names[i], who, line);
    }
    if (who != N) rc = 1;
  }
  fflush(stdout);
  lc_finalize();
  return rc;
}
