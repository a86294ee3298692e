/* runtime/collectives.c — runtime/collectives.h on MPI.  Built with mpicc; only a
 * program whose strategy has more than one rank links it. */
#include "collectives.h"

#include <limits.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char error_line[512];
static int world_rank = -1, world_size_ = 0, node_rank = -1;

const char *lc_error(void) { return error_line; }

static int failed(const char *what, int code) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
  snprintf(error_line, sizeof error_line, "%s: %s", what, msg);
  return -1;
}
static int refused(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error_line, sizeof error_line, fmt, ap);
  va_end(ap);
  return -1;
}
#define CALL(what, expr) do { int rc_ = (expr); if (rc_ != MPI_SUCCESS) return failed(what, rc_); } while (0)

int lc_init(int *argc, char ***argv) {
  int provided = 0;
  /* FUNNELED: only the main thread calls MPI (the kernels' OpenMP threads never do) */
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return refused("MPI_Init_thread failed (code %d)", rc);
  /* errors come back to the caller (one line naming the call), not an abort from inside MPI */
  CALL("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  CALL("MPI_Comm_rank", MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  CALL("MPI_Comm_size", MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  MPI_Comm node;
  CALL("MPI_Comm_split_type", MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node));
  CALL("MPI_Comm_rank (node)", MPI_Comm_rank(node, &node_rank));
  CALL("MPI_Comm_free", MPI_Comm_free(&node));
  return 0;
}

int lc_finalize(void) {
  CALL("MPI_Finalize", MPI_Finalize());
  return 0;
}

int lc_rank(void) { return world_rank; }
int lc_local_rank(void) { return node_rank; }
int lc_world_size(void) { return world_size_; }

static int half(lc_dtype t) { return t == LC_BF16 || t == LC_F16; }
/* a 16-bit type travels as uint16_t and is reduced in float (a scratch copy) */
static MPI_Datatype mpi_type(lc_dtype t) { return t == LC_F64 ? MPI_DOUBLE : half(t) ? MPI_UINT16_T : MPI_FLOAT; }
static size_t type_size(lc_dtype t) { return t == LC_F64 ? sizeof(double) : half(t) ? sizeof(uint16_t) : sizeof(float); }

static void scale(void *buf, size_t count, lc_dtype t) {
  if (t == LC_F64) {
    double s = 1.0 / world_size_, *x = buf;
    for (size_t i = 0; i < count; i++) x[i] *= s;
  } else {
    /* the same division PyTorch DDP does (sum, then divide by the world size) */
    float s = 1.0f / (float)world_size_, *x = buf;
    for (size_t i = 0; i < count; i++) x[i] *= s;
  }
}

/* 16-bit floats <-> float (the same conversions as the generated kernels': bf16 the top
 * half of a float rounded to nearest even, NaN kept quiet; f16 by the compiler's _Float16) */
static float widen(uint16_t h, lc_dtype t) {
  if (t == LC_F16) { _Float16 f; memcpy(&f, &h, sizeof f); return (float)f; }
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint16_t narrow(float x, lc_dtype t) {
  uint16_t h;
  if (t == LC_F16) { _Float16 f = (_Float16)x; memcpy(&h, &f, sizeof h); return h; }
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
/* a float copy of n 16-bit values (NULL: out of memory) */
static float *widened(const void *src, size_t n, lc_dtype t) {
  float *f = malloc((n ? n : 1) * sizeof(float));
  const uint16_t *h = src;
  if (f) for (size_t i = 0; i < n; i++) f[i] = widen(h[i], t);
  return f;
}
static void narrowed(void *dst, const float *f, size_t n, lc_dtype t) {
  uint16_t *h = dst;
  for (size_t i = 0; i < n; i++) h[i] = narrow(f[i], t);
}

void lc_add(void *dst, const void *src, size_t n, lc_dtype t) {
  if (t == LC_F64) {
    double *d = dst;
    const double *x = src;
    for (size_t i = 0; i < n; i++) d[i] += x[i];
  } else if (t == LC_F32) {
    float *d = dst;
    const float *x = src;
    for (size_t i = 0; i < n; i++) d[i] += x[i];
  } else {
    uint16_t *d = dst;
    const uint16_t *x = src;
    for (size_t i = 0; i < n; i++) d[i] = narrow(widen(d[i], t) + widen(x[i], t), t);
  }
}

/* MPI counts are ints: a longer buffer goes as several requests */
#define MAX_CHUNK ((size_t)1 << 30)

struct lc_pending {
  void *buf;
  float *wide;   /* a 16-bit buffer's float copy, reduced in its place (else NULL) */
  size_t count;
  lc_dtype t;
  lc_op op;
  int n;
  MPI_Request req[];
};

int lc_all_reduce_start(void *buf, size_t count, lc_dtype t, lc_op op, lc_pending **pending) {
  *pending = NULL;
  if (world_size_ <= 0) return refused("lc_all_reduce_start: lc_init was not called");
  int n = (int)((count + MAX_CHUNK - 1) / MAX_CHUNK);
  lc_pending *p = malloc(sizeof *p + (size_t)(n ? n : 1) * sizeof(MPI_Request));
  if (!p) return refused("lc_all_reduce_start: out of memory");
  *p = (lc_pending){ .buf = buf, .count = count, .t = t, .op = op, .n = 0 };
  if (half(t) && !(p->wide = widened(buf, count, t))) { free(p); return refused("lc_all_reduce_start: out of memory"); }
  char *at = p->wide ? (char *)p->wide : buf;
  lc_dtype rt = p->wide ? LC_F32 : t;
  for (size_t done = 0; done < count; done += MAX_CHUNK) {
    size_t c = count - done < MAX_CHUNK ? count - done : MAX_CHUNK;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, at + done * type_size(rt), (int)c, mpi_type(rt), MPI_SUM, MPI_COMM_WORLD, &p->req[p->n]);
    if (rc != MPI_SUCCESS) {
      MPI_Waitall(p->n, p->req, MPI_STATUSES_IGNORE);
      free(p->wide);
      free(p);
      return failed("MPI_Iallreduce", rc);
    }
    p->n++;
  }
  *pending = p;
  return 0;
}

int lc_wait(lc_pending *p) {
  if (!p) return 0;
  int rc = MPI_Waitall(p->n, p->req, MPI_STATUSES_IGNORE);
  if (rc == MPI_SUCCESS && p->op == LC_AVG) scale(p->wide ? (void *)p->wide : p->buf, p->count, p->wide ? LC_F32 : p->t);
  if (rc == MPI_SUCCESS && p->wide) narrowed(p->buf, p->wide, p->count, p->t);   /* one rounding, after the sum */
  free(p->wide);
  free(p);
  return rc == MPI_SUCCESS ? 0 : failed("MPI_Waitall (all-reduce)", rc);
}

int lc_test(lc_pending *p) {
  if (!p) return 1;
  int done = 0;
  int rc = MPI_Testall(p->n, p->req, &done, MPI_STATUSES_IGNORE);
  if (rc != MPI_SUCCESS) return failed("MPI_Testall (all-reduce)", rc);
  /* completed requests are MPI_REQUEST_NULL now: lc_wait's Waitall returns at once */
  return done ? 1 : 0;
}

int lc_all_reduce(void *buf, size_t count, lc_dtype t, lc_op op) {
  lc_pending *p;
  if (lc_all_reduce_start(buf, count, t, op, &p)) return -1;
  return lc_wait(p);
}

int lc_all_reduce_buckets(void *buf, size_t count, lc_dtype t, lc_op op, size_t bucket_bytes) {
  size_t per = bucket_bytes / type_size(t);
  if (per == 0) return refused("lc_all_reduce_buckets: a bucket of %zu bytes holds no element", bucket_bytes);
  size_t nb = (count + per - 1) / per;
  lc_pending **ps = calloc(nb ? nb : 1, sizeof *ps);
  if (!ps) return refused("lc_all_reduce_buckets: out of memory");
  int rc = 0;
  size_t started = 0;
  for (; started < nb; started++) {
    size_t off = started * per, c = count - off < per ? count - off : per;
    if (lc_all_reduce_start((char *)buf + off * type_size(t), c, t, op, &ps[started])) { rc = -1; break; }
  }
  char first_error[sizeof error_line];
  memcpy(first_error, error_line, sizeof error_line);
  for (size_t i = 0; i < started; i++)
    if (lc_wait(ps[i]) && rc == 0) { rc = -1; memcpy(first_error, error_line, sizeof error_line); }
  memcpy(error_line, first_error, sizeof error_line);
  free(ps);
  return rc;
}

int lc_broadcast(void *buf, size_t bytes, int root) {
  for (size_t done = 0; done < bytes; done += MAX_CHUNK) {
    size_t c = bytes - done < MAX_CHUNK ? bytes - done : MAX_CHUNK;
    CALL("MPI_Bcast", MPI_Bcast((char *)buf + done, (int)c, MPI_BYTE, root, MPI_COMM_WORLD));
  }
  return 0;
}

int lc_barrier(void) {
  CALL("MPI_Barrier", MPI_Barrier(MPI_COMM_WORLD));
  return 0;
}

int lc_reduce_scatter(const void *send, void *recv, size_t count, lc_dtype t, lc_op op) {
  if (count > INT_MAX) return refused("lc_reduce_scatter: %zu elements per rank is more than MPI's int count", count);
  if (half(t)) {   /* in float: the whole send buffer widened, this rank's part narrowed once */
    float *ws = widened(send, count * (size_t)world_size_, t), *wr = malloc((count ? count : 1) * sizeof(float));
    int rc = ws && wr ? lc_reduce_scatter(ws, wr, count, LC_F32, op) : refused("lc_reduce_scatter: out of memory");
    if (!rc) narrowed(recv, wr, count, t);
    free(ws); free(wr);
    return rc;
  }
  CALL("MPI_Reduce_scatter_block", MPI_Reduce_scatter_block(send, recv, (int)count, mpi_type(t), MPI_SUM, MPI_COMM_WORLD));
  if (op == LC_AVG) scale(recv, count, t);
  return 0;
}

int lc_all_gather(const void *send, void *recv, size_t bytes) {
  if (bytes > INT_MAX) return refused("lc_all_gather: %zu bytes per rank is more than MPI's int count", bytes);
  CALL("MPI_Allgather", MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD));
  return 0;
}

int lc_reduce_scatter_v(const void *send, void *recv, const int *counts, lc_dtype t, lc_op op) {
  if (half(t)) {   /* in float, as lc_reduce_scatter */
    size_t total = 0, mine = (size_t)counts[world_rank];
    for (int r = 0; r < world_size_; r++) total += (size_t)counts[r];
    float *ws = widened(send, total, t), *wr = malloc((mine ? mine : 1) * sizeof(float));
    int rc = ws && wr ? lc_reduce_scatter_v(ws, wr, counts, LC_F32, op) : refused("lc_reduce_scatter_v: out of memory");
    if (!rc) narrowed(recv, wr, mine, t);
    free(ws); free(wr);
    return rc;
  }
  CALL("MPI_Reduce_scatter", MPI_Reduce_scatter(send, recv, counts, mpi_type(t), MPI_SUM, MPI_COMM_WORLD));
  if (op == LC_AVG) scale(recv, (size_t)counts[world_rank], t);
  return 0;
}

int lc_all_gather_v(void *buf, const int *counts, const int *displs, lc_dtype t) {
  CALL("MPI_Allgatherv", MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, mpi_type(t), MPI_COMM_WORLD));
  return 0;
}

int lc_gather_v(const void *send, void *recv, const int *counts, const int *displs, lc_dtype t, int root) {
  CALL("MPI_Gatherv", MPI_Gatherv(send, counts[world_rank], mpi_type(t), recv, counts, displs, mpi_type(t), root, MPI_COMM_WORLD));
  return 0;
}
