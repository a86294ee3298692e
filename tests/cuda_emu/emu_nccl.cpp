// cuda_emu: libnccl.so.2 for the emulated CUDA programs — only the NCCL calls loom's
// generated DDP and FSDP programs make (runtime/ddp_nccl.c: all-reduce, reduce-scatter,
// all-gather, broadcast), over MPI, on the emulated device
// memory (host memory the emulator tracks).  tests/cuda_emu/build.sh links it into a ddp
// program's emulated build; a real build links NVIDIA's libnccl (never this).
//
// A collective is queued on its stream as a host function (cudaLaunchHostFunc, which the
// emulator exports): it runs when the stream reaches it, after whatever the stream waits
// for, so a missing event wait gives wrong numbers here as it would on a GPU.  Queued on
// a capturing stream (--cuda-graph), it is a host node of the graph, run at each replay
// after the nodes it depends on.  Every rank
// runs its collectives in the same order (the streams drain at the same program points
// on every rank), on a communicator of their own (MPI_Comm_dup), so they never meet the
// host's MPI collectives (runtime/collectives.c).  Sums are in float (double for F64),
// divided by the ranks for ncclAvg and rounded once to a 16-bit format, as
// runtime/collectives.c reduces the CPU program's gradients.
#include <cuda_runtime.h>
#define OMPI_SKIP_MPICXX 1   // the C API only (no libmpi_cxx)
#include <mpi.h>
#include <nccl.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <unistd.h>
#include <vector>

extern "C" {
#include "scalar_ops.h"   // the program's own 16-bit conversions (round to nearest even)
void emu_check_device(const void *p, size_t n, const char *what);   // emu_runtime.cpp
}

struct ncclComm {
    MPI_Comm comm;
    int rank, size;
};

static const char MAGIC[] = "loom cuda_emu nccl";

static ncclResult_t refuse(ncclResult_t rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda_emu: nccl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return rc;
}

extern "C" const char *ncclGetErrorString(ncclResult_t rc) {
    switch (rc) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    case ncclSystemError: return "system error (emulated NCCL: an MPI call failed)";
    default: return "unhandled error (emulated NCCL)";
    }
}

// rank 0's id: the magic, its process id and the time (the bootstrap must carry it to
// every rank: ncclCommInitRank checks that they all hold the same one)
extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "%s %ld %ld", MAGIC, (long)getpid(), (long)time(nullptr));
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *out, int nranks, ncclUniqueId id, int rank) {
    int up = 0;
    MPI_Initialized(&up);
    if (!up) return refuse(ncclInvalidUsage, "ncclCommInitRank before MPI_Init (the emulation runs over MPI)");
    if (strncmp(id.internal, MAGIC, sizeof MAGIC - 1) != 0)
        return refuse(ncclInvalidArgument, "ncclCommInitRank: not an id from ncclGetUniqueId (was rank 0's broadcast?)");
    ncclComm *c = new ncclComm;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) return refuse(ncclSystemError, "MPI_Comm_dup failed");
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    if (c->size != nranks || c->rank != rank)
        return refuse(ncclInvalidArgument, "ncclCommInitRank(nranks %d, rank %d): MPI has rank %d of %d", nranks, rank, c->rank, c->size);
    // every rank must hold rank 0's id
    ncclUniqueId root = id;
    MPI_Bcast(&root, sizeof root, MPI_BYTE, 0, c->comm);
    if (memcmp(&root, &id, sizeof id) != 0) return refuse(ncclInvalidArgument, "ncclCommInitRank: rank %d holds another id than rank 0's", rank);
    *out = c;
    return ncclSuccess;
}

namespace {
enum kind { ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST };
struct job {
    const void *send;
    void *recv;
    size_t count;   // (reduce-scatter: each rank's part; all-gather: each rank's send)
    ncclDataType_t type;
    ncclRedOp_t op;
    ncclComm *comm;
    kind what;
    int root;
    bool kept = false;   // captured into a graph: each replay runs it again (never freed)
};

size_t type_size(ncclDataType_t t) {
    return t == ncclFloat64 ? 8 : (t == ncclFloat32 || t == ncclInt32) ? 4 : (t == ncclInt8 || t == ncclUint8) ? 1 : 2;
}

void mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    fprintf(stderr, "cuda_emu: nccl: %s failed (%d)\n", what, rc);
    abort();
}

// the float sums' type: n elements of `t` at p widened (F32 copied), for a reduction
std::vector<float> widen(const void *p, size_t n, ncclDataType_t t) {
    std::vector<float> x(n);
    if (t == ncclFloat32) memcpy(x.data(), p, n * 4);
    else {
        const so_u16 *h = (const so_u16 *)p;
        for (size_t i = 0; i < n; i++) x[i] = t == ncclBfloat16 ? so_widen_bf16(h[i]) : so_widen_f16(h[i]);
    }
    return x;
}
void narrow(void *p, const float *x, size_t n, ncclDataType_t t) {
    if (t == ncclFloat32) { memcpy(p, x, n * 4); return; }
    so_u16 *h = (so_u16 *)p;
    for (size_t i = 0; i < n; i++) h[i] = t == ncclBfloat16 ? so_narrow_bf16(x[i]) : so_narrow_f16(x[i]);
}

// reduce-scatter: rank r gets the sum (mean) of every rank's part r (count elements); the
// send buffer is read whole before the receive one is written (the in-place form)
void reduce_scatter(job *j) {
    size_t n = j->count;
    int size = j->comm->size;
    if (j->type == ncclFloat64) {
        std::vector<double> all(n * (size_t)size), part(n);
        memcpy(all.data(), j->send, all.size() * 8);
        mpi_check(MPI_Reduce_scatter_block(all.data(), part.data(), (int)n, MPI_DOUBLE, MPI_SUM, j->comm->comm), "MPI_Reduce_scatter_block");
        if (j->op == ncclAvg)
            for (double &v : part) v *= 1.0 / size;
        memcpy(j->recv, part.data(), n * 8);
        return;
    }
    std::vector<float> all = widen(j->send, n * (size_t)size, j->type), part(n);
    mpi_check(MPI_Reduce_scatter_block(all.data(), part.data(), (int)n, MPI_FLOAT, MPI_SUM, j->comm->comm), "MPI_Reduce_scatter_block");
    if (j->op == ncclAvg) {
        float s = 1.0f / (float)size;
        for (float &v : part) v *= s;
    }
    narrow(j->recv, part.data(), n, j->type);
}

void run(void *arg) {
    job *j = (job *)arg;
    size_t n = j->count;
    if (j->type == ncclInt32) {   // (ALL_REDUCE: a max or sum of ints)
        if (j->send != j->recv) memcpy(j->recv, j->send, n * 4);
        mpi_check(MPI_Allreduce(MPI_IN_PLACE, j->recv, (int)n, MPI_INT, j->op == ncclMax ? MPI_MAX : MPI_SUM, j->comm->comm), "MPI_Allreduce");
        if (!j->kept) delete j;
        return;
    }
    if (j->what != ALL_REDUCE) {
        size_t bytes = n * type_size(j->type);
        if (j->what == REDUCE_SCATTER) reduce_scatter(j);
        else if (j->what == ALL_GATHER) {   // (a copy of the send part first: the in-place form)
            std::vector<char> mine((const char *)j->send, (const char *)j->send + bytes);
            mpi_check(MPI_Allgather(mine.data(), (int)bytes, MPI_BYTE, j->recv, (int)bytes, MPI_BYTE, j->comm->comm), "MPI_Allgather");
        } else {
            if (j->comm->rank == j->root && j->send != j->recv) memmove(j->recv, j->send, bytes);
            mpi_check(MPI_Bcast(j->recv, (int)bytes, MPI_BYTE, j->root, j->comm->comm), "MPI_Bcast");
        }
        if (!j->kept) delete j;
        return;
    }
    int size = j->comm->size;
    int rc;
    if (j->type == ncclFloat64) {
        if (j->send != j->recv) memcpy(j->recv, j->send, n * 8);
        double *x = (double *)j->recv;
        rc = MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, j->comm->comm);
        if (j->op == ncclAvg)
            for (size_t i = 0; i < n; i++) x[i] *= 1.0 / size;
    } else {
        // float, or 16 bits widened to float and rounded once at the end
        std::vector<float> wide;
        float *x = (float *)j->recv;
        if (j->type == ncclFloat32) {
            if (j->send != j->recv) memcpy(j->recv, j->send, n * 4);
        } else {
            wide.resize(n);
            const so_u16 *h = (const so_u16 *)j->send;
            for (size_t i = 0; i < n; i++) wide[i] = j->type == ncclBfloat16 ? so_widen_bf16(h[i]) : so_widen_f16(h[i]);
            x = wide.data();
        }
        rc = MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, j->comm->comm);
        if (j->op == ncclAvg) {
            float s = 1.0f / (float)size;
            for (size_t i = 0; i < n; i++) x[i] *= s;
        }
        if (j->type != ncclFloat32) {
            so_u16 *h = (so_u16 *)j->recv;
            for (size_t i = 0; i < n; i++) h[i] = j->type == ncclBfloat16 ? so_narrow_bf16(x[i]) : so_narrow_f16(x[i]);
        }
    }
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "cuda_emu: nccl: ncclAllReduce: MPI_Allreduce failed (%d)\n", rc);
        abort();
    }
    if (!j->kept) delete j;
}
}   // namespace

// a collective queued on a capturing stream is a node of the graph (NCCL >= 2.9 captures
// its kernels): a host node here, run at each replay in the graph's order
static bool captured(cudaStream_t stream) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(stream, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone;
}

extern "C" ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                      ncclComm_t comm, cudaStream_t stream) {
    const bool flag = type == ncclInt32 && (op == ncclMax || op == ncclSum);   // (an int flag: FSDP's found_inf)
    if (!flag && type != ncclFloat32 && type != ncclFloat64 && type != ncclBfloat16 && type != ncclFloat16)
        return refuse(ncclInvalidArgument, "ncclAllReduce: data type %d is not emulated", (int)type);
    if (!flag && op != ncclSum && op != ncclAvg) return refuse(ncclInvalidArgument, "ncclAllReduce: reduction %d is not emulated", (int)op);
    if (count > (size_t)2147483647) return refuse(ncclInvalidArgument, "ncclAllReduce: more than 2^31 elements are not emulated");
    size_t bytes = count * type_size(type);
    emu_check_device(send, bytes, "ncclAllReduce send buffer");
    emu_check_device(recv, bytes, "ncclAllReduce receive buffer");
    job *j = new job{send, recv, count, type, op, comm, ALL_REDUCE, 0};
    j->kept = captured(stream);
    if (cudaLaunchHostFunc(stream, run, j) != cudaSuccess) {
        delete j;
        return refuse(ncclInvalidUsage, "ncclAllReduce: its stream refused the work (a capture?)");
    }
    return ncclSuccess;
}

// the other collectives, queued as the all-reduce (in stream order)
static ncclResult_t queue(const char *name, job *j, size_t send_bytes, size_t recv_bytes, cudaStream_t stream) {
    if (j->count > (size_t)2147483647 / 8 / (size_t)j->comm->size) { delete j; return refuse(ncclInvalidArgument, "%s: too many elements for the emulation", name); }
    char what[96];
    snprintf(what, sizeof what, "%s send buffer", name);
    emu_check_device(j->send, send_bytes, what);
    snprintf(what, sizeof what, "%s receive buffer", name);
    emu_check_device(j->recv, recv_bytes, what);
    j->kept = captured(stream);
    if (cudaLaunchHostFunc(stream, run, j) != cudaSuccess) {
        delete j;
        return refuse(ncclInvalidUsage, "%s: its stream refused the work (a capture?)", name);
    }
    return ncclSuccess;
}

extern "C" ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t type, ncclRedOp_t op,
                                          ncclComm_t comm, cudaStream_t stream) {
    if (type != ncclFloat32 && type != ncclFloat64 && type != ncclBfloat16 && type != ncclFloat16)
        return refuse(ncclInvalidArgument, "ncclReduceScatter: data type %d is not emulated", (int)type);
    if (op != ncclSum && op != ncclAvg) return refuse(ncclInvalidArgument, "ncclReduceScatter: reduction %d is not emulated", (int)op);
    size_t es = type_size(type);
    return queue("ncclReduceScatter", new job{send, recv, recvcount, type, op, comm, REDUCE_SCATTER, 0},
                 recvcount * es * (size_t)comm->size, recvcount * es, stream);
}

extern "C" ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                                      cudaStream_t stream) {
    size_t es = type_size(type);
    return queue("ncclAllGather", new job{send, recv, sendcount, type, ncclSum, comm, ALL_GATHER, 0},
                 sendcount * es, sendcount * es * (size_t)comm->size, stream);
}

extern "C" ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                                      cudaStream_t stream) {
    if (root < 0 || root >= comm->size) return refuse(ncclInvalidArgument, "ncclBroadcast: root %d of %d ranks", root, comm->size);
    size_t es = type_size(type);
    return queue("ncclBroadcast", new job{send, recv, count, type, ncclSum, comm, BROADCAST, root},
                 comm->rank == root ? count * es : 0, count * es, stream);
}
