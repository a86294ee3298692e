// cuda_emu: libnccl.so.2 for the emulated CUDA programs — only the NCCL calls loom's
// generated DDP programs make (runtime/ddp_nccl.c), over MPI, on the emulated device
// memory (host memory the emulator tracks).  tests/cuda_emu/build.sh links it into a ddp
// program's emulated build; a real build links NVIDIA's libnccl (never this).
//
// A collective is queued on its stream as a host function (cudaLaunchHostFunc, which the
// emulator exports): it runs when the stream reaches it, after whatever the stream waits
// for, so a missing event wait gives wrong numbers here as it would on a GPU.  Every rank
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
struct job {
    const void *send;
    void *recv;
    size_t count;
    ncclDataType_t type;
    ncclRedOp_t op;
    ncclComm *comm;
};

size_t type_size(ncclDataType_t t) { return t == ncclFloat64 ? 8 : t == ncclFloat32 ? 4 : 2; }

void run(void *arg) {
    job *j = (job *)arg;
    size_t n = j->count;
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
    delete j;
}
}   // namespace

extern "C" ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                      ncclComm_t comm, cudaStream_t stream) {
    if (type != ncclFloat32 && type != ncclFloat64 && type != ncclBfloat16 && type != ncclFloat16)
        return refuse(ncclInvalidArgument, "ncclAllReduce: data type %d is not emulated", (int)type);
    if (op != ncclSum && op != ncclAvg) return refuse(ncclInvalidArgument, "ncclAllReduce: reduction %d is not emulated", (int)op);
    if (count > (size_t)2147483647) return refuse(ncclInvalidArgument, "ncclAllReduce: more than 2^31 elements are not emulated");
    size_t bytes = count * type_size(type);
    emu_check_device(send, bytes, "ncclAllReduce send buffer");
    emu_check_device(recv, bytes, "ncclAllReduce receive buffer");
    job *j = new job{send, recv, count, type, op, comm};
    if (cudaLaunchHostFunc(stream, run, j) != cudaSuccess) {
        delete j;
        return refuse(ncclInvalidUsage, "ncclAllReduce: its stream refused the work (a capture?)");
    }
    return ncclSuccess;
}
