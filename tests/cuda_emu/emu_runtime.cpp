// cuda_emu: the CUDA runtime, cuBLASLt and the device, emulated on the CPU for a
// generated loom CUDA program (see README.md).  The program's own model.cu, loom_cuda.cu,
// nvrtc_cache.c and train.c are compiled against the real CUDA headers and linked with
// this file instead of libcudart and libcublasLt; the driver API (libcuda.so.1, opened
// with dlopen by the program) is emu_driver.cpp, which calls back into this file.
//
// Streams run lazily: work queued on a stream runs only when something waits for it (a
// stream/event/device synchronisation, a synchronous copy, another stream's wait on an
// event of it).  So a host read of a device-to-host copy before its synchronisation, a
// host write into a pinned buffer a queued copy has not read yet, and a stream that uses
// another stream's results without waiting for its event all give wrong numbers here,
// as they may on a GPU.  Stream capture records (kernel parameters copied at capture time,
// as CUDA does) a graph of nodes and their dependencies (the node before on its stream, the
// events it waited for); cudaGraphLaunch replays it as lazily as streams run: the origin
// stream's nodes in order, each after the nodes it depends on, so a node of a forked
// stream (NCCL's) runs only where a wait on its event needs it — a missing wait gives
// wrong numbers inside a graph too.  Every pointer handed to a copy, a memset, a
// kernel or a matmul is checked against the allocations it must lie in.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "emu_kernel.h"
extern "C" {
#include "scalar_ops.h"   // the program's own 16-bit conversions (round to nearest even)
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// ---------------------------------------------------------------------------
// diagnostics: a misuse the emulator detects is the program's bug: say what, and abort
// (a core / gdb / ASan shows where)

[[noreturn]] __attribute__((format(printf, 1, 2))) static void emu_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("cuda_emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

__attribute__((format(printf, 1, 2))) static void emu_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda_emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static cudaError_t last_error = cudaSuccess;
static cudaError_t set_error(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
    return e;
}

// ---------------------------------------------------------------------------
// allocations: device memory is host memory; every allocation is tracked so that each
// pointer the program hands over can be checked for where it came from

enum mem_kind { MEM_DEVICE = 1, MEM_PINNED = 2 };
struct allocation { size_t size; mem_kind kind; };
static std::map<uintptr_t, allocation> allocations;
static size_t device_bytes, device_peak;

static const allocation *find_allocation(const void *p, uintptr_t *base) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return nullptr;
    --it;
    if (a > it->first + it->second.size) return nullptr;   // one past the end still belongs
    if (base) *base = it->first;
    return &it->second;
}

static const char *kind_name(int k) { return k == MEM_DEVICE ? "device" : k == MEM_PINNED ? "pinned host" : "pageable host"; }

static int kind_of(const void *p) {
    const allocation *a = find_allocation(p, nullptr);
    return a ? a->kind : 0;
}

// [p, p + n) must lie in one allocation of one of the kinds in `kinds` (a bit set)
static void check_region(const void *p, size_t n, int kinds, const char *what) {
    uintptr_t base = 0;
    const allocation *a = find_allocation(p, &base);
    if (!a || !(a->kind & kinds)) {
        emu_fail("%s: %p (%zu bytes) is %s memory, expected %s%s", what, p, n, a ? kind_name(a->kind) : "not device or pinned (pageable host?)",
                 kinds & MEM_DEVICE ? "device" : "", kinds == (MEM_DEVICE | MEM_PINNED) ? " or pinned host" : kinds == MEM_PINNED ? "pinned host" : "");
    }
    if ((uintptr_t)p + n > base + a->size)
        emu_fail("%s: %zu bytes at offset %zu overrun the %s allocation of %zu bytes", what, n, (size_t)((uintptr_t)p - base),
                 kind_name(a->kind), a->size);
}

static void *emu_alloc(size_t size, mem_kind kind) {
    size_t rounded = (size + 255) & ~(size_t)255;
    void *p = aligned_alloc(256, rounded ? rounded : 256);
    if (!p) return nullptr;
    // CUDA does not clear fresh memory: all-ones bytes read as NaN in f32, bf16 and f16
    // (and -1 as an integer), so a read of memory nothing wrote shows up
    if (!getenv("CUDA_EMU_NO_POISON")) memset(p, 0xff, rounded ? rounded : 256);
    allocations[(uintptr_t)p] = allocation{size, kind};
    if (kind == MEM_DEVICE) {
        device_bytes += size;
        if (device_bytes > device_peak) device_peak = device_bytes;
    }
    return p;
}

static cudaError_t emu_free(void *p, mem_kind kind, const char *what) {
    if (!p) return cudaSuccess;
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end() || it->second.kind != kind)
        emu_fail("%s(%p): not the start of a %s allocation%s", what, p, kind_name(kind),
                 it == allocations.end() ? "" : " (it is the other kind)");
    if (kind == MEM_DEVICE) device_bytes -= it->second.size;
    allocations.erase(it);
    free(p);
    return cudaSuccess;
}

extern "C" void emu_check_kernel_pointer(const char *kernel, int index, const void *p) {
    if (!p) return;
    if (!kind_of(p)) emu_fail("kernel %s: argument %d (%p) points into neither device nor pinned memory", kernel, index, p);
}

// ---------------------------------------------------------------------------
// kernels: the registry (filled by the kernels' translation units before main) and
// the block scheduler

struct kernel_entry { std::string name; emu_binder bind; };
static std::map<std::string, kernel_entry> &kernel_registry() {
    static std::map<std::string, kernel_entry> r;
    return r;
}
extern "C" void emu_register_kernel(const char *name, emu_binder bind) {
    kernel_registry()[name] = kernel_entry{name, bind};
}
extern "C" void *emu_find_kernel(const char *name) {
    auto it = kernel_registry().find(name);
    return it == kernel_registry().end() ? nullptr : &it->second;
}

extern "C" {
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
}

// The threads of a block run on fibers, lazily: a fiber runs thread after thread to
// completion on its own stack, and only a thread that reaches a barrier (or warp sync,
// shuffle) parks its fiber; the next thread then starts on another fiber.  A block
// without barriers costs one fiber start; with barriers, one park/resume per thread and
// barrier.  When every thread has started, the parked ones are released barrier by
// barrier (warp barriers first), in thread order.
enum thread_state { NOT_STARTED, RUNNABLE, AT_BARRIER, AT_WARP, DONE };
struct fiber {
    ucontext_t ctx;
    void *sp;   // the saved stack pointer (fast switch)
    char *stack;
    void *fake_stack;
};
static const size_t FIBER_STACK = EMU_ASAN ? (1u << 20) : (256u << 10);
static std::deque<fiber> fibers;   // a deque: a parked fiber's element must not move
static size_t fibers_used;             // fibers started in this block
static std::vector<thread_state> thread_states;
static std::vector<int> thread_fiber;   // the fiber a thread runs on
static unsigned block_threads, next_thread, threads_done;
[[maybe_unused]] static ucontext_t scheduler_ctx;   // ucontext switching only
static void *scheduler_sp;

// A thread switch without ucontext's signal-mask system calls (x86-64; ASan builds keep
// ucontext, which ASan's fiber annotations are made for): callee-saved registers, the
// SSE and x87 control words, then the stack pointer.
#if !EMU_ASAN && defined(__x86_64__)
#define EMU_FAST_SWITCH 1
extern "C" void emu_fiber_switch(void **save_sp, void *new_sp);
asm(".text\n"
    ".globl emu_fiber_switch\n"
    ".type emu_fiber_switch,@function\n"
    "emu_fiber_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_fiber_switch, .-emu_fiber_switch\n");
#else
#define EMU_FAST_SWITCH 0
#endif

static int current_fiber = -1;
static int current_thread = -1;
static emu_bound_call *current_call;
static const char *current_kernel = "";
static std::vector<uint64_t> shuffle_slots;
#if EMU_ASAN
static const void *scheduler_stack_bottom;
static size_t scheduler_stack_size;
#endif
static unsigned long long kernel_launches, fiber_switches;

static void set_thread_index(unsigned t) {
    if (blockDim.y == 1 && blockDim.z == 1) {   // 1-D blocks (all of loom's): no division
        threadIdx.x = t;
        threadIdx.y = threadIdx.z = 0;
        return;
    }
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

// from a fiber to the scheduler
static void park(thread_state st) {
    fiber &f = fibers[(size_t)current_fiber];
    thread_states[(size_t)current_thread] = st;
    fiber_switches++;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, scheduler_stack_bottom, scheduler_stack_size);
#endif
#if EMU_FAST_SWITCH
    emu_fiber_switch(&f.sp, scheduler_sp);
#else
    swapcontext(&f.ctx, &scheduler_ctx);
#endif
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

// from the scheduler to a fiber
static void resume(int fi) {
    fiber &f = fibers[(size_t)fi];
    current_fiber = fi;
    fiber_switches++;
#if EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, FIBER_STACK);
#endif
#if EMU_FAST_SWITCH
    emu_fiber_switch(&scheduler_sp, f.sp);
#else
    swapcontext(&scheduler_ctx, &f.ctx);
#endif
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    current_fiber = -1;
}

static void fiber_main() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
    int me = current_fiber;
    while (next_thread < block_threads) {
        unsigned t = next_thread++;
        current_thread = (int)t;
        thread_fiber[t] = me;
        thread_states[t] = RUNNABLE;
        set_thread_index(t);
        current_call->call();
        thread_states[t] = DONE;
        threads_done++;
    }
    // out of threads: back to the scheduler for good (ucontext: through uc_link)
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, scheduler_stack_bottom, scheduler_stack_size);
#endif
#if EMU_FAST_SWITCH
    void *dead;
    emu_fiber_switch(&dead, scheduler_sp);
    abort();
#endif
}

static void start_fiber(void) {
    if (fibers_used == fibers.size()) {
        fibers.emplace_back();
        void *s = mmap(nullptr, FIBER_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s == MAP_FAILED) emu_fail("cannot map a fiber stack");
        fibers.back().stack = (char *)s;
    }
    int fi = (int)fibers_used++;
    fiber &f = fibers[(size_t)fi];
#if EMU_FAST_SWITCH
    // a fresh stack as emu_fiber_switch leaves one: control words, six registers, and
    // fiber_main as the return address (16-byte aligned, as after a call)
    uint64_t *top = (uint64_t *)(f.stack + FIBER_STACK - 64);
    uint32_t csr[2];
    asm volatile("stmxcsr %0\n fnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
    top[0] = (uint64_t)(uintptr_t)fiber_main;
    for (int r = 1; r <= 6; r++) top[-r] = 0;
    memcpy(&top[-7], csr, 8);
    f.sp = &top[-7];
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = FIBER_STACK;
    f.ctx.uc_link = &scheduler_ctx;
    makecontext(&f.ctx, fiber_main, 0);
#endif
    resume(fi);
}

static void need_fiber(const char *what) {
    if (current_fiber < 0) emu_fail("kernel %s: %s outside a kernel thread", current_kernel, what);
}

extern "C" void emu_syncthreads(void) {
    need_fiber("__syncthreads()");
    park(AT_BARRIER);
}

extern "C" void emu_syncwarp(void) {
    need_fiber("__syncwarp()");
    park(AT_WARP);
}

extern "C" uint64_t emu_shfl(uint64_t bits, int arg, int width, int mode) {
    need_fiber("a shuffle");
    if (width <= 0 || width > 32 || (width & (width - 1))) emu_fail("kernel %s: shuffle width %d", current_kernel, width);
    int t = current_thread, lane = t % 32, seg = lane & ~(width - 1), src = lane;
    switch (mode) {
    case EMU_SHFL_IDX: src = seg + (arg % width); break;
    case EMU_SHFL_XOR: src = lane ^ arg; if (src >= seg + width) src = lane; break;
    case EMU_SHFL_DOWN: src = lane + arg; if (src >= seg + width) src = lane; break;
    case EMU_SHFL_UP: src = lane - arg; if (src < seg) src = lane; break;
    }
    int from = t - lane + src;
    if (from >= (int)block_threads) from = t;   // a lane past the end of a partial warp
    shuffle_slots[(size_t)t] = bits;
    park(AT_WARP);   // every lane has published
    uint64_t r = shuffle_slots[(size_t)from];
    park(AT_WARP);   // every lane has read before anyone publishes again
    return r;
}

static void run_block(unsigned nthreads) {
    block_threads = nthreads;
    next_thread = 0;
    threads_done = 0;
    fibers_used = 0;
    if (thread_states.size() < nthreads) {
        thread_states.resize(nthreads);
        thread_fiber.resize(nthreads);
        shuffle_slots.resize(nthreads);
    }
    std::fill(thread_states.begin(), thread_states.begin() + nthreads, NOT_STARTED);
    while (next_thread < nthreads) start_fiber();   // every thread runs until its end or first barrier
    for (;;) {
        if (threads_done == nthreads) return;   // no barrier (or all passed): no scan
        unsigned done = 0, at_barrier = 0, at_warp = 0;
        for (unsigned t = 0; t < nthreads; t++) {
            done += thread_states[t] == DONE;
            at_barrier += thread_states[t] == AT_BARRIER;
            at_warp += thread_states[t] == AT_WARP;
        }
        if (done == nthreads) return;
        int released = 0;
        if (at_warp) {
            // release each warp whose every lane waits at the warp barrier
            for (unsigned w = 0; w < nthreads; w += 32) {
                unsigned end = w + 32 < nthreads ? w + 32 : nthreads, waiting = 0;
                for (unsigned t = w; t < end; t++) waiting += thread_states[t] == AT_WARP;
                if (!waiting) continue;
                if (waiting != end - w)
                    emu_fail("kernel %s block (%u,%u,%u) warp %u: %u lanes wait at a warp sync/shuffle while %u have "
                             "returned or wait at __syncthreads() (a deadlock or undefined on a GPU)",
                             current_kernel, blockIdx.x, blockIdx.y, blockIdx.z, w / 32, waiting, end - w - waiting);
                for (unsigned t = w; t < end; t++) thread_states[t] = RUNNABLE;
                released++;
            }
        }
        if (!released) {
            if (done)
                emu_fail("kernel %s block (%u,%u,%u): %u threads wait at __syncthreads() while %u have returned "
                         "(a barrier after a divergent return)",
                         current_kernel, blockIdx.x, blockIdx.y, blockIdx.z, at_barrier, done);
            for (unsigned t = 0; t < nthreads; t++) thread_states[t] = RUNNABLE;
        }
        for (unsigned t = 0; t < nthreads; t++) {
            if (thread_states[t] != RUNNABLE) continue;
            current_thread = (int)t;
            set_thread_index(t);
            resume(thread_fiber[t]);
        }
    }
}

static void run_kernel(const kernel_entry *k, emu_bound_call *call, dim3 grid, dim3 block) {
    kernel_launches++;
    current_kernel = k->name.c_str();
    current_call = call;
    gridDim = grid;
    blockDim = block;
    unsigned nthreads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
                run_block(nthreads);
            }
    current_kernel = "";
}

// ---------------------------------------------------------------------------
// streams, events, graphs

enum op_kind { OP_KERNEL, OP_MEMCPY, OP_MEMSET, OP_MATMUL, OP_WAIT, OP_GRAPH, OP_HOST };
struct op {
    op_kind kind;
    const void *what;   // the kernel entry, for cudaGraphExecUpdate's topology check
    std::function<void()> run;
};

// a captured graph: its nodes in capture order, each node's dependencies (node indices:
// what its stream had queued before it, and the events that stream waited for)
struct CUgraph_st {
    std::vector<op> ops;
    std::vector<std::vector<int>> deps;
    std::vector<int> last;   // the origin stream's frontier at the end of the capture
};
struct CUgraphExec_st {
    std::vector<op> ops;
    std::vector<std::vector<int>> deps;
    std::vector<int> last;
};
struct CUstream_st {
    std::deque<op> queue;
    uint64_t issued = 0, done = 0;
    bool nonblocking = false;
    cudaGraph_t capture = nullptr;   // recording into this graph
    cudaStream_t capture_origin = nullptr;
    bool capture_invalid = false;
    std::vector<int> frontier;       // in a capture: the nodes the stream's next node depends on
};
struct CUevent_st {
    cudaStream_t stream = nullptr;   // where it was last recorded (outside capture)
    uint64_t seq = 0;                // complete when stream->done reaches seq
    cudaGraph_t graph = nullptr;     // recorded inside this capture
    std::vector<int> frontier;       // (in a capture) its stream's frontier when recorded
};

// a replay: the nodes `last` depends on, each after its own dependencies (depth first,
// without recursion: a step is thousands of nodes), then any node nothing waited for
static void replay(const std::vector<op> &ops, const std::vector<std::vector<int>> &deps, const std::vector<int> &last) {
    std::vector<char> done(ops.size(), 0);
    std::vector<std::pair<int, size_t>> stack;   // (node, the next of its dependencies to visit)
    auto visit = [&](int root) {
        if (done[(size_t)root]) return;
        stack.push_back({root, 0});
        while (!stack.empty()) {
            auto &top = stack.back();
            const std::vector<int> &d = deps[(size_t)top.first];
            if (top.second < d.size()) {
                int next = d[top.second++];
                if (!done[(size_t)next]) stack.push_back({next, 0});
                continue;
            }
            int n = top.first;
            stack.pop_back();
            if (done[(size_t)n]) continue;
            done[(size_t)n] = 1;
            op o = ops[(size_t)n];
            o.run();
        }
    };
    for (int n : last) visit(n);
    for (size_t n = 0; n < ops.size(); n++) visit((int)n);
}

static CUstream_st legacy_stream;
static std::vector<cudaStream_t> streams;   // created ones, for cudaDeviceSynchronize
static int drain_depth;

static cudaStream_t resolve(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &legacy_stream;
    return s;
}

static void drain(cudaStream_t s, uint64_t upto) {
    if (++drain_depth > 64) emu_fail("streams wait on each other in a cycle");
    while (s->done < upto) {
        op o = std::move(s->queue.front());
        s->queue.pop_front();
        o.run();
        s->done++;
    }
    drain_depth--;
}
static void drain_all(void) {
    drain(&legacy_stream, legacy_stream.issued);
    for (cudaStream_t s : streams) drain(s, s->issued);
}
// what a synchronous call on the legacy default stream waits for: it and the blocking
// streams, not the streams created with cudaStreamNonBlocking
static void drain_legacy(void) {
    for (cudaStream_t s : streams)
        if (!s->nonblocking) drain(s, s->issued);
    drain(&legacy_stream, legacy_stream.issued);
}

static void enqueue(cudaStream_t s, op o) {
    s = resolve(s);
    if (s->capture) {
        cudaGraph_t g = s->capture;
        g->ops.push_back(std::move(o));
        g->deps.push_back(s->frontier);
        s->frontier.assign(1, (int)g->ops.size() - 1);
        return;
    }
    // the legacy default stream waits for the blocking streams, and they for it
    if (s == &legacy_stream) {
        for (cudaStream_t b : streams)
            if (!b->nonblocking) drain(b, b->issued);
    } else if (!s->nonblocking)
        drain(&legacy_stream, legacy_stream.issued);
    s->queue.push_back(std::move(o));
    s->issued++;
}

static bool capturing_any(void) {
    if (legacy_stream.capture) return true;
    for (cudaStream_t s : streams)
        if (s->capture) return true;
    return false;
}

// a call CUDA forbids while a stream of this thread captures (cudaStreamCaptureModeThreadLocal/Global)
static bool unsafe_in_capture(const char *what) {
    if (!capturing_any()) return false;
    emu_note("%s during stream capture: not permitted (cudaErrorStreamCaptureUnsupported); the capture is invalidated", what);
    for (cudaStream_t s : streams)
        if (s->capture) s->capture_invalid = true;
    if (legacy_stream.capture) legacy_stream.capture_invalid = true;
    return true;
}

// ---------------------------------------------------------------------------
// the CUDA runtime API

extern "C" {

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureIsolation: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorGraphExecUpdateFailure: return "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureUnjoined: return "capture sequence contains a fork that was not joined to the primary stream";
    default: return "cuda_emu: unknown error";
    }
}
const char *cudaGetErrorName(cudaError_t e) {
    static char buf[32];
    snprintf(buf, sizeof buf, "cudaError_%d", (int)e);
    return buf;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

// $CUDA_EMU_DEVICES (default 1) identical devices for a ddp program's ranks (one each, as
// NCCL wants): a process selects one and sees no difference (one memory, one driver device)
static int emu_devices(void) {
    const char *e = getenv("CUDA_EMU_DEVICES");
    int n = e ? atoi(e) : 1;
    return n >= 1 ? n : 1;
}
static int current_device;
cudaError_t cudaGetDeviceCount(int *count) {
    *count = emu_devices();
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= emu_devices()) return set_error(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= emu_devices()) return set_error(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 8; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 108; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    default: emu_note("cudaDeviceGetAttribute(%d): not emulated", (int)attr); return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    *total = (size_t)80 << 30;
    *free_bytes = *total - device_bytes;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t size) {
    if (unsafe_in_capture("cudaMalloc")) return set_error(cudaErrorStreamCaptureUnsupported);
    *p = emu_alloc(size, MEM_DEVICE);
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void *p) {
    if (unsafe_in_capture("cudaFree")) return set_error(cudaErrorStreamCaptureUnsupported);
    drain_all();   // cudaFree waits for the device
    return emu_free(p, MEM_DEVICE, "cudaFree");
}
cudaError_t cudaMallocHost(void **p, size_t size) {
    if (unsafe_in_capture("cudaMallocHost")) return set_error(cudaErrorStreamCaptureUnsupported);
    *p = emu_alloc(size, MEM_PINNED);
    return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int) { return cudaMallocHost(p, size); }
cudaError_t cudaFreeHost(void *p) {
    if (unsafe_in_capture("cudaFreeHost")) return set_error(cudaErrorStreamCaptureUnsupported);
    drain_all();
    return emu_free(p, MEM_PINNED, "cudaFreeHost");
}

// the kinds each side of a copy may be, by direction
static void copy_sides(cudaMemcpyKind kind, int *dst_kinds, int *src_kinds) {
    switch (kind) {
    case cudaMemcpyHostToDevice: *dst_kinds = MEM_DEVICE; *src_kinds = 0; break;
    case cudaMemcpyDeviceToHost: *dst_kinds = 0; *src_kinds = MEM_DEVICE; break;
    case cudaMemcpyDeviceToDevice: *dst_kinds = MEM_DEVICE; *src_kinds = MEM_DEVICE; break;
    case cudaMemcpyHostToHost: *dst_kinds = 0; *src_kinds = 0; break;
    default: *dst_kinds = -1; *src_kinds = -1; break;   // cudaMemcpyDefault: any
    }
}
static void check_copy_side(const void *p, size_t n, int kinds, const char *side, const char *what) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s %s", what, side);
    if (kinds == -1) {
        if (kind_of(p)) check_region(p, n, MEM_DEVICE | MEM_PINNED, buf);
    } else if (kinds == 0) {   // host: pinned or pageable, never device
        if (kind_of(p) == MEM_DEVICE) emu_fail("%s: %p is device memory, but the copy's direction says host", buf, p);
        if (kind_of(p)) check_region(p, n, MEM_PINNED, buf);
    } else
        check_region(p, n, kinds, buf);
}

static cudaError_t memcpy_async(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t stream, const char *what) {
    int dk, sk;
    copy_sides(kind, &dk, &sk);
    if (dk == -1 && kind != cudaMemcpyDefault) emu_fail("%s: cudaMemcpyKind %d", what, (int)kind);
    check_copy_side(dst, n, dk, "destination", what);
    check_copy_side(src, n, sk, "source", what);
    if (n == 0) return cudaSuccess;
    cudaStream_t s = resolve(stream);
    bool src_pageable = !kind_of(src), dst_pageable = !kind_of(dst);
    if (s->capture && (src_pageable || dst_pageable)) {
        emu_note("%s of pageable host memory during stream capture: a graph cannot copy it (use pinned memory)", what);
        s->capture_invalid = true;
        return set_error(cudaErrorStreamCaptureUnsupported);
    }
    if (dst_pageable) {   // to pageable memory: the copy is done when the call returns
        drain(s, s->issued);
        memcpy(dst, src, n);
        return cudaSuccess;
    }
    if (src_pageable) {   // from pageable memory: CUDA stages the bytes before returning
        auto staged = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
        enqueue(s, op{OP_MEMCPY, nullptr, [dst, staged, n] { memcpy(dst, staged->data(), n); }});
        return cudaSuccess;
    }
    enqueue(s, op{OP_MEMCPY, nullptr, [dst, src, n] { memmove(dst, src, n); }});
    return cudaSuccess;
}

// a host function in stream order (the emulated NCCL's collectives, tests/cuda_emu/emu_nccl.cpp,
// run as one when their stream reaches them); captured, a host node that each replay runs
// (with the same `data`: the caller keeps it alive as long as the graph)
cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void *data) {
    enqueue(stream, op{OP_HOST, (const void *)fn, [fn, data] { fn(data); }});
    return cudaSuccess;
}
// for the emulated NCCL: [p, p + n) must be device memory (one cuda_emu line and abort if not)
extern "C" void emu_check_device(const void *p, size_t n, const char *what) { check_region(p, n, MEM_DEVICE, what); }

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
    return memcpy_async(dst, src, n, kind, stream, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (unsafe_in_capture("cudaMemcpy")) return set_error(cudaErrorStreamCaptureUnsupported);
    cudaError_t e = memcpy_async(dst, src, n, kind, nullptr, "cudaMemcpy");
    drain_legacy();
    return e;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t stream) {
    check_region(p, n, MEM_DEVICE, "cudaMemsetAsync");
    enqueue(stream, op{OP_MEMSET, nullptr, [p, value, n] { memset(p, value, n); }});
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t n) {
    if (unsafe_in_capture("cudaMemset")) return set_error(cudaErrorStreamCaptureUnsupported);
    check_region(p, n, MEM_DEVICE, "cudaMemset");
    enqueue(nullptr, op{OP_MEMSET, nullptr, [p, value, n] { memset(p, value, n); }});
    drain_legacy();
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    *s = new CUstream_st;
    (*s)->nonblocking = (flags & cudaStreamNonBlocking) != 0;
    streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || resolve(s) == &legacy_stream) return set_error(cudaErrorInvalidResourceHandle);
    drain(s, s->issued);   // queued work still completes
    for (size_t i = 0; i < streams.size(); i++)
        if (streams[i] == s) streams.erase(streams.begin() + (long)i);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    cudaStream_t s = resolve(stream);
    if (s->capture) {
        emu_note("cudaStreamSynchronize of a capturing stream: not permitted; the capture is invalidated");
        s->capture_invalid = true;
        return set_error(cudaErrorStreamCaptureUnsupported);
    }
    drain(s, s->issued);
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
    cudaStream_t s = resolve(stream);
    return s->done == s->issued ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaDeviceSynchronize(void) {
    if (unsafe_in_capture("cudaDeviceSynchronize")) return set_error(cudaErrorStreamCaptureUnsupported);
    drain_all();
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) {
    *e = new CUevent_st;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
    cudaStream_t s = resolve(stream);
    if (s->capture) {
        e->graph = s->capture;
        e->stream = nullptr;
        e->frontier = s->frontier;
        return cudaSuccess;
    }
    if (!s->nonblocking && s != &legacy_stream) drain(&legacy_stream, legacy_stream.issued);
    e->graph = nullptr;
    e->stream = s;
    e->seq = s->issued;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (e->graph) {
        emu_note("cudaEventSynchronize of an event recorded in a capture: not permitted");
        return set_error(cudaErrorCapturedEvent);
    }
    if (e->stream) drain(e->stream, e->seq);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (e->graph) return set_error(cudaErrorCapturedEvent);
    return !e->stream || e->stream->done >= e->seq ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t e, unsigned int flags) {
    cudaStream_t s = resolve(stream);
    if (s->capture && !e->graph && (flags & cudaEventWaitExternal)) {
        // an external event node: at each replay, wait for the event as it is then
        enqueue(s, op{OP_WAIT, nullptr, [e] {
                          if (e->stream) drain(e->stream, e->seq);
                      }});
        return cudaSuccess;
    }
    if (e->graph) {
        // an event of a capture: the waiting stream joins the capture (fork), or a stream
        // in it depends on the event's point from here on (join)
        if (s->capture && s->capture != e->graph) return set_error(cudaErrorStreamCaptureIsolation);
        if (!s->capture) {
            s->capture = e->graph;
            s->capture_origin = nullptr;
            s->frontier = e->frontier;
        } else
            for (int n : e->frontier)
                if (std::find(s->frontier.begin(), s->frontier.end(), n) == s->frontier.end()) s->frontier.push_back(n);
        return cudaSuccess;
    }
    if (!e->stream) return cudaSuccess;   // never recorded: nothing to wait for
    if (s->capture) {
        emu_note("cudaStreamWaitEvent: a capturing stream waits on an event recorded outside the capture "
                 "without cudaEventWaitExternal (cudaErrorStreamCaptureIsolation)");
        s->capture_invalid = true;
        return set_error(cudaErrorStreamCaptureIsolation);
    }
    cudaStream_t other = e->stream;
    uint64_t seq = e->seq;
    enqueue(s, op{OP_WAIT, nullptr, [other, seq] { drain(other, seq); }});
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
    cudaStream_t s = resolve(stream);
    if (s == &legacy_stream) return set_error(cudaErrorStreamCaptureUnsupported);
    if (s->capture) return set_error(cudaErrorIllegalState);
    s->capture = new CUgraph_st;
    s->capture_origin = s;
    s->capture_invalid = false;
    s->frontier.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    cudaStream_t s = resolve(stream);
    if (!s->capture || s->capture_origin != s) return set_error(cudaErrorIllegalState);
    cudaGraph_t g = s->capture;
    bool invalid = s->capture_invalid;
    for (cudaStream_t o : streams)
        if (o != s && o->capture == g) {
            invalid |= o->capture_invalid;
            o->capture = nullptr;   // joined streams leave the capture with it
            o->frontier.clear();
        }
    g->last = s->frontier;
    s->capture = nullptr;
    s->capture_origin = nullptr;
    s->frontier.clear();
    if (invalid) {
        delete g;
        *graph = nullptr;
        return set_error(cudaErrorStreamCaptureInvalidated);
    }
    // every node must lead to the origin stream's end: a stream forked into the capture
    // and never joined back (the origin waiting for an event of it) is CUDA's error too
    std::vector<char> reach(g->ops.size(), 0);
    std::vector<int> todo = g->last;
    while (!todo.empty()) {
        int n = todo.back();
        todo.pop_back();
        if (reach[(size_t)n]) continue;
        reach[(size_t)n] = 1;
        for (int d : g->deps[(size_t)n]) todo.push_back(d);
    }
    for (size_t n = 0; n < g->ops.size(); n++)
        if (!reach[n]) {
            emu_note("cudaStreamEndCapture: node %zu of the capture (a forked stream's) is not joined back to the origin stream "
                     "(cudaErrorStreamCaptureUnjoined)", n);
            delete g;
            *graph = nullptr;
            return set_error(cudaErrorStreamCaptureUnjoined);
        }
    *graph = g;
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status) {
    cudaStream_t s = resolve(stream);
    *status = !s->capture ? cudaStreamCaptureStatusNone
              : s->capture_invalid ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    *e = new CUgraphExec_st;
    (*e)->ops = g->ops;
    (*e)->deps = g->deps;
    (*e)->last = g->last;
    return cudaSuccess;
}
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t e, cudaGraph_t g, cudaGraphExecUpdateResultInfo *info) {
    // the same nodes of the same kinds (and the same kernels) in the same order: only
    // parameters change, which is what an update may do
    cudaGraphExecUpdateResult r = cudaGraphExecUpdateSuccess;
    if (g->ops.size() != e->ops.size() || g->deps != e->deps || g->last != e->last) r = cudaGraphExecUpdateErrorTopologyChanged;
    else
        for (size_t i = 0; i < g->ops.size() && r == cudaGraphExecUpdateSuccess; i++)
            if (g->ops[i].kind != e->ops[i].kind) r = cudaGraphExecUpdateErrorNodeTypeChanged;
            else if (g->ops[i].what != e->ops[i].what) r = cudaGraphExecUpdateErrorFunctionChanged;
    if (info) {
        memset(info, 0, sizeof *info);
        info->result = r;
    }
    if (r != cudaGraphExecUpdateSuccess) return set_error(cudaErrorGraphExecUpdateFailure);
    e->ops = g->ops;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t stream) {
    auto x = std::make_shared<CUgraphExec_st>(*e);   // the exec may be updated before this runs
    enqueue(stream, op{OP_GRAPH, nullptr, [x] { replay(x->ops, x->deps, x->last); }});
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}

}   // extern "C"

// ---------------------------------------------------------------------------
// the driver side (emu_driver.cpp, libcuda.so.1, calls these)

extern "C" int emu_launch_kernel(void *entry, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned shmem, void *stream, void **params, void **extra) {
    const kernel_entry *k = (const kernel_entry *)entry;
    if (extra) emu_fail("cuLaunchKernel(%s): `extra` parameters are not emulated", k->name.c_str());
    if (shmem) emu_fail("cuLaunchKernel(%s): dynamic shared memory (%u bytes) is not emulated", k->name.c_str(), shmem);
    if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024 || gy > 65535 || gz > 65535)
        emu_fail("cuLaunchKernel(%s): invalid launch grid (%u,%u,%u) block (%u,%u,%u)", k->name.c_str(), gx, gy, gz, bx, by, bz);
    std::shared_ptr<emu_bound_call> call(k->bind(params));   // the parameters are copied now
    dim3 grid = {gx, gy, gz}, block = {bx, by, bz};
    enqueue((cudaStream_t)stream, op{OP_KERNEL, k, [k, call, grid, block] { run_kernel(k, call.get(), grid, block); }});
    return 0;
}

extern "C" int emu_kernel_count(void) { return (int)kernel_registry().size(); }

// ---------------------------------------------------------------------------
// cuBLASLt: the documented semantics (column-major unless ORDER_ROW), on float
// operands through the host's sgemm; accumulation in float

struct lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    int64_t bias_stride = 0;
    int32_t bias_type = -1;
    void *aux = nullptr;
    int64_t aux_ld = 0, aux_stride = 0;
    int32_t aux_type = -1;
};
struct lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t order = CUBLASLT_ORDER_COL;
    int32_t batch = 1;
    int64_t stride = 0;
};
struct lt_pref { uint64_t workspace = 0; };

static cublasStatus_t lt_unsupported(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static cublasStatus_t lt_unsupported(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda_emu: cuBLASLt: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (not emulated)\n", stderr);
    va_end(ap);
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

static size_t type_size(int t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF: case CUDA_R_16F: return 2;
    default: return 0;
    }
}
static const char *type_name(int t) {
    return t == CUDA_R_32F ? "32F" : t == CUDA_R_16BF ? "16BF" : t == CUDA_R_16F ? "16F" : "an unsupported type";
}

static float tf32_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {   // finite: keep 10 mantissa bits, nearest even
        u += 0xfffu + ((u >> 13) & 1u);
        u &= ~0x1fffu;
    }
    memcpy(&x, &u, 4);
    return x;
}
static float load_elem(const void *p, int type, int64_t i) {
    switch (type) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_16BF: return so_widen_bf16(((const uint16_t *)p)[i]);
    default: return so_widen_f16(((const uint16_t *)p)[i]);
    }
}
static void store_elem(void *p, int type, int64_t i, float v) {
    switch (type) {
    case CUDA_R_32F: ((float *)p)[i] = v; break;
    case CUDA_R_16BF: ((uint16_t *)p)[i] = so_narrow_bf16(v); break;
    default: ((uint16_t *)p)[i] = so_narrow_f16(v); break;
    }
}
static int64_t elem_index(const lt_layout &l, int64_t batch, uint64_t r, uint64_t c) {
    return batch * l.stride + (l.order == CUBLASLT_ORDER_ROW ? (int64_t)r * l.ld + (int64_t)c : (int64_t)c * l.ld + (int64_t)r);
}
// elements from the first to one past the last that a layout touches
static int64_t layout_extent(const lt_layout &l) {
    int64_t one = l.order == CUBLASLT_ORDER_ROW ? ((int64_t)l.rows - 1) * l.ld + (int64_t)l.cols
                                                : ((int64_t)l.cols - 1) * l.ld + (int64_t)l.rows;
    return (int64_t)(l.batch - 1) * l.stride + one;
}

static float gelu_tanh(float x) {   // cuBLASLt's GELU: the tanh approximation
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
static float gelu_tanh_grad(float x) {
    float t = tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

template <typename T> static cublasStatus_t set_attr(T *dst, const void *buf, size_t size, const char *name) {
    if (size != sizeof(T)) {
        emu_note("cuBLASLt: %s set with %zu bytes, expected %zu", name, size, sizeof(T));
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(dst, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = (cublasLtHandle_t) new int(1);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete (int *)h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        return lt_unsupported("MatmulDescCreate: compute type %d (CUBLAS_COMPUTE_32F and _32F_FAST_TF32 are)", (int)compute);
    if (scale != CUDA_R_32F) return lt_unsupported("MatmulDescCreate: scale type %d (CUDA_R_32F is)", (int)scale);
    lt_desc *p = new lt_desc;
    p->compute = compute;
    p->scale = scale;
    *d = (cublasLtMatmulDesc_t)p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete (lt_desc *)d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size) {
    lt_desc *d = (lt_desc *)desc;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: {
        int32_t c;
        cublasStatus_t s = set_attr(&c, buf, size, "COMPUTE_TYPE");
        if (s) return s;
        if (c != CUBLAS_COMPUTE_32F && c != CUBLAS_COMPUTE_32F_FAST_TF32) return lt_unsupported("compute type %d", c);
        d->compute = (cublasComputeType_t)c;
        return s;
    }
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: {
        int32_t t;
        cublasStatus_t s = set_attr(&t, buf, size, "SCALE_TYPE");
        if (s) return s;
        if (t != CUDA_R_32F) return lt_unsupported("scale type %d", t);
        return s;
    }
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: {
        cublasStatus_t s = set_attr(&d->pointer_mode, buf, size, "POINTER_MODE");
        if (!s && d->pointer_mode != CUBLASLT_POINTER_MODE_HOST && d->pointer_mode != CUBLASLT_POINTER_MODE_DEVICE)
            return lt_unsupported("pointer mode %d", d->pointer_mode);
        return s;
    }
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_attr(&d->transa, buf, size, "TRANSA");
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_attr(&d->transb, buf, size, "TRANSB");
    case CUBLASLT_MATMUL_DESC_TRANSC: {
        int32_t t;
        cublasStatus_t s = set_attr(&t, buf, size, "TRANSC");
        return s ? s : t != CUBLAS_OP_N ? lt_unsupported("TRANSC %d", t) : s;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        cublasStatus_t s = set_attr(&d->epilogue, buf, size, "EPILOGUE");
        if (s) return s;
        switch (d->epilogue) {
        case CUBLASLT_EPILOGUE_DEFAULT: case CUBLASLT_EPILOGUE_RELU: case CUBLASLT_EPILOGUE_RELU_AUX:
        case CUBLASLT_EPILOGUE_BIAS: case CUBLASLT_EPILOGUE_RELU_BIAS: case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
        case CUBLASLT_EPILOGUE_DRELU: case CUBLASLT_EPILOGUE_DRELU_BGRAD: case CUBLASLT_EPILOGUE_GELU:
        case CUBLASLT_EPILOGUE_GELU_AUX: case CUBLASLT_EPILOGUE_GELU_BIAS: case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
        case CUBLASLT_EPILOGUE_DGELU: case CUBLASLT_EPILOGUE_DGELU_BGRAD: case CUBLASLT_EPILOGUE_BGRADA:
        case CUBLASLT_EPILOGUE_BGRADB: return s;
        default: return lt_unsupported("epilogue %u", d->epilogue);
        }
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_attr(&d->bias, buf, size, "BIAS_POINTER");
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return set_attr(&d->bias_stride, buf, size, "BIAS_BATCH_STRIDE");
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: {
        cublasStatus_t s = set_attr(&d->bias_type, buf, size, "BIAS_DATA_TYPE");
        return s ? s : !type_size(d->bias_type) ? lt_unsupported("bias data type %d", d->bias_type) : s;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return set_attr(&d->aux, buf, size, "EPILOGUE_AUX_POINTER");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return set_attr(&d->aux_ld, buf, size, "EPILOGUE_AUX_LD");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE: return set_attr(&d->aux_stride, buf, size, "EPILOGUE_AUX_BATCH_STRIDE");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: {
        cublasStatus_t s = set_attr(&d->aux_type, buf, size, "EPILOGUE_AUX_DATA_TYPE");
        return s ? s : !type_size(d->aux_type) ? lt_unsupported("aux data type %d", d->aux_type) : s;
    }
    default: return lt_unsupported("MatmulDescSetAttribute: attribute %d", (int)attr);
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (!type_size(type)) return lt_unsupported("MatrixLayoutCreate: data type %d", (int)type);
    lt_layout *p = new lt_layout;
    p->type = type;
    p->rows = rows;
    p->cols = cols;
    p->ld = ld;
    *l = (cublasLtMatrixLayout_t)p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(const cublasLtMatrixLayout_t l) {
    delete (lt_layout *)l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr, const void *buf,
                                                size_t size) {
    lt_layout *l = (lt_layout *)layout;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: {
        uint32_t t;
        cublasStatus_t s = set_attr(&t, buf, size, "LAYOUT_TYPE");
        if (s) return s;
        if (!type_size((int)t)) return lt_unsupported("layout data type %u", t);
        l->type = (cudaDataType_t)t;
        return s;
    }
    case CUBLASLT_MATRIX_LAYOUT_ORDER: {
        cublasStatus_t s = set_attr(&l->order, buf, size, "LAYOUT_ORDER");
        if (!s && l->order != CUBLASLT_ORDER_COL && l->order != CUBLASLT_ORDER_ROW) return lt_unsupported("layout order %d", l->order);
        return s;
    }
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return set_attr(&l->rows, buf, size, "LAYOUT_ROWS");
    case CUBLASLT_MATRIX_LAYOUT_COLS: return set_attr(&l->cols, buf, size, "LAYOUT_COLS");
    case CUBLASLT_MATRIX_LAYOUT_LD: return set_attr(&l->ld, buf, size, "LAYOUT_LD");
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return set_attr(&l->batch, buf, size, "LAYOUT_BATCH_COUNT");
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return set_attr(&l->stride, buf, size, "LAYOUT_STRIDED_BATCH_OFFSET");
    default: return lt_unsupported("MatrixLayoutSetAttribute: attribute %d", (int)attr);
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t) new lt_pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete (lt_pref *)p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
    lt_pref *p = (lt_pref *)pref;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return set_attr(&p->workspace, buf, size, "PREF_MAX_WORKSPACE_BYTES");
    default: return CUBLAS_STATUS_SUCCESS;   // the others restrict the choice of algorithm: there is one
    }
}

}   // extern "C"

// the checks cuBLASLt makes (or would fail in), on a snapshot of the descriptors
static cublasStatus_t check_matmul(const lt_desc &d, const lt_layout &a, const lt_layout &b, const lt_layout &c, const lt_layout &dl,
                                   bool pointers, uint64_t *k_out) {
    uint64_t m = dl.rows, n = dl.cols;
    uint64_t k = d.transa == CUBLAS_OP_N ? a.cols : a.rows;
    uint64_t am = d.transa == CUBLAS_OP_N ? a.rows : a.cols;
    uint64_t bk = d.transb == CUBLAS_OP_N ? b.rows : b.cols, bn = d.transb == CUBLAS_OP_N ? b.cols : b.rows;
    if ((d.transa != CUBLAS_OP_N && d.transa != CUBLAS_OP_T) || (d.transb != CUBLAS_OP_N && d.transb != CUBLAS_OP_T))
        return lt_unsupported("transa %d / transb %d", d.transa, d.transb);
    if (am != m || bk != k || bn != n || c.rows != m || c.cols != n) {
        emu_note("cuBLASLt: inconsistent shapes: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu", (unsigned long long)am,
                 (unsigned long long)k, (unsigned long long)bk, (unsigned long long)bn, (unsigned long long)c.rows,
                 (unsigned long long)c.cols, (unsigned long long)m, (unsigned long long)n);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const lt_layout *ls[4] = {&a, &b, &c, &dl};
    const char *names = "ABCD";
    for (int i = 0; i < 4; i++) {
        const lt_layout &l = *ls[i];
        uint64_t need = l.order == CUBLASLT_ORDER_ROW ? l.cols : l.rows;
        if (l.ld < (int64_t)need) {
            emu_note("cuBLASLt: %c's leading dimension %lld < %llu", names[i], (long long)l.ld, (unsigned long long)need);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (l.batch != dl.batch) {
            emu_note("cuBLASLt: %c's batch count %d differs from D's %d", names[i], l.batch, dl.batch);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    if (a.type != b.type) return lt_unsupported("A in %s with B in %s", type_name(a.type), type_name(b.type));
    if (c.type != dl.type) return lt_unsupported("C in %s with D in %s", type_name(c.type), type_name(dl.type));
    if (a.type == CUDA_R_32F && dl.type != CUDA_R_32F) return lt_unsupported("32F operands with a %s output", type_name(dl.type));
    if (d.compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a.type != CUDA_R_32F)
        return lt_unsupported("CUBLAS_COMPUTE_32F_FAST_TF32 with %s operands", type_name(a.type));
    uint32_t e = d.epilogue;
    bool needs_bias = (e & CUBLASLT_EPILOGUE_BIAS) || (e & 16) || e == CUBLASLT_EPILOGUE_BGRADA || e == CUBLASLT_EPILOGUE_BGRADB;
    // the heuristic does not need the pointers (a null one only says nothing of alignment)
    if (pointers && needs_bias && !d.bias) {
        emu_note("cuBLASLt: epilogue %u needs CUBLASLT_MATMUL_DESC_BIAS_POINTER", e);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (e & 128) {
        bool relu = (e & 2) || (e & 8);
        if ((pointers && !d.aux) || d.aux_ld < (int64_t)m || d.aux_ld % (relu ? 128 : 8)) {
            emu_note("cuBLASLt: epilogue %u needs EPILOGUE_AUX_POINTER and EPILOGUE_AUX_LD >= %llu, divisible by %d (got %p, %lld)", e,
                     (unsigned long long)m, relu ? 128 : 8, d.aux, (long long)d.aux_ld);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    *k_out = k;
    return CUBLAS_STATUS_SUCCESS;
}

static void run_matmul(const lt_desc &d, float alpha, float beta, const float *alpha_dev, const float *beta_dev, const void *A,
                       const lt_layout &a, const void *B, const lt_layout &b, const void *C, const lt_layout &c, void *D,
                       const lt_layout &dl, uint64_t k) {
    if (alpha_dev) alpha = *alpha_dev;
    if (beta_dev) beta = *beta_dev;
    const int64_t m = (int64_t)dl.rows, n = (int64_t)dl.cols, kk = (int64_t)k;
    const bool tf32 = d.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    const uint32_t e = d.epilogue;
    const int bias_type = d.bias_type >= 0 ? d.bias_type : dl.type;
    const int aux_type = d.aux_type >= 0 ? d.aux_type : dl.type;
    // operand copies kept between calls (clearing fresh ones cost more than the GEMMs)
    static std::vector<float> am, bt, acc, bgrad;
    if (am.size() < (size_t)(m * kk)) am.resize((size_t)(m * kk));
    if (bt.size() < (size_t)(n * kk)) bt.resize((size_t)(n * kk));
    if (acc.size() < (size_t)(m * n)) acc.resize((size_t)(m * n));
    for (int64_t batch = 0; batch < dl.batch; batch++) {
        // op(A) row-major m x k, op(B) transposed: n x k
        for (int64_t i = 0; i < m; i++)
            for (int64_t l = 0; l < kk; l++) {
                float v = load_elem(A, a.type, d.transa == CUBLAS_OP_N ? elem_index(a, batch, i, l) : elem_index(a, batch, l, i));
                am[i * kk + l] = tf32 ? tf32_round(v) : v;
            }
        for (int64_t j = 0; j < n; j++)
            for (int64_t l = 0; l < kk; l++) {
                float v = load_elem(B, b.type, d.transb == CUBLAS_OP_N ? elem_index(b, batch, l, j) : elem_index(b, batch, j, l));
                bt[j * kk + l] = tf32 ? tf32_round(v) : v;
            }
        if (kk > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)kk, 1.0f, am.data(), (int)kk, bt.data(), (int)kk,
                        0.0f, acc.data(), (int)n);
        else
            std::fill(acc.begin(), acc.begin() + m * n, 0.0f);
        char *bias = (char *)d.bias + batch * d.bias_stride * (int64_t)type_size(bias_type);
        char *aux = (char *)d.aux;
        if (e & 16) bgrad.assign((size_t)m, 0.0f);
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                float v = alpha * acc[(size_t)(i * n + j)];
                if (beta != 0.0f) v += beta * load_elem(C, c.type, elem_index(c, batch, (uint64_t)i, (uint64_t)j));
                int64_t ai = batch * d.aux_stride + j * d.aux_ld + i;   // aux: column-major, in elements (bits for ReLU)
                switch (e) {
                case CUBLASLT_EPILOGUE_DRELU:
                case CUBLASLT_EPILOGUE_DRELU_BGRAD:
                    if (!((((const uint8_t *)aux)[ai >> 3] >> (ai & 7)) & 1)) v = 0.0f;
                    break;
                case CUBLASLT_EPILOGUE_DGELU:
                case CUBLASLT_EPILOGUE_DGELU_BGRAD: v *= gelu_tanh_grad(load_elem(aux, aux_type, ai)); break;
                case CUBLASLT_EPILOGUE_BGRADA:
                case CUBLASLT_EPILOGUE_BGRADB:
                case CUBLASLT_EPILOGUE_DEFAULT: break;
                default:   // the forward epilogues: bias, then the aux output, then the activation
                    if (e & CUBLASLT_EPILOGUE_BIAS) v += load_elem(bias, bias_type, i);
                    if (e & 128) {
                        if (e & 2) {
                            uint8_t *byte = (uint8_t *)aux + (ai >> 3), bit = (uint8_t)(1u << (ai & 7));
                            *byte = v > 0.0f ? (uint8_t)(*byte | bit) : (uint8_t)(*byte & ~bit);
                        } else
                            store_elem(aux, aux_type, ai, v);
                    }
                    if (e & 2) v = v > 0.0f ? v : 0.0f;
                    if (e & 32) v = gelu_tanh(v);
                }
                store_elem(D, dl.type, elem_index(dl, batch, (uint64_t)i, (uint64_t)j), v);
                if (e & 16) bgrad[(size_t)i] += v;
            }
        if (e & 16)
            for (int64_t i = 0; i < m; i++) store_elem(bias, bias_type, i, bgrad[(size_t)i]);
        if (e == CUBLASLT_EPILOGUE_BGRADA)
            for (int64_t i = 0; i < m; i++) {
                float s = 0;
                for (int64_t l = 0; l < kk; l++) s += am[i * kk + l];
                store_elem(bias, bias_type, i, s);
            }
        if (e == CUBLASLT_EPILOGUE_BGRADB)
            for (int64_t j = 0; j < n; j++) {
                float s = 0;
                for (int64_t l = 0; l < kk; l++) s += bt[j * kk + l];
                store_elem(bias, bias_type, j, s);
            }
    }
}

extern "C" {

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                              cublasLtMatmulPreference_t, int requested, cublasLtMatmulHeuristicResult_t *results,
                                              int *returned) {
    uint64_t k;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = check_matmul(*(lt_desc *)desc, *(lt_layout *)a, *(lt_layout *)b, *(lt_layout *)c, *(lt_layout *)dl, false, &k);
    *returned = 0;
    if (s == CUBLAS_STATUS_INVALID_VALUE) return s;
    if (s) return CUBLAS_STATUS_SUCCESS;   // no algorithm for it
    memset(&results[0], 0, sizeof results[0]);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void *alpha, const void *A, cublasLtMatrixLayout_t adesc,
                              const void *B, cublasLtMatrixLayout_t bdesc, const void *beta, const void *C, cublasLtMatrixLayout_t cdesc,
                              void *D, cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t *, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
    // the descriptors as they are now: a later change must not reach a queued or captured matmul
    lt_desc d = *(lt_desc *)desc;
    lt_layout a = *(lt_layout *)adesc, b = *(lt_layout *)bdesc, c = *(lt_layout *)cdesc, dl = *(lt_layout *)ddesc;
    uint64_t k;
    cublasStatus_t s = check_matmul(d, a, b, c, dl, true, &k);
    if (s) return s;
    float al = 0, be = 0;
    const float *al_dev = nullptr, *be_dev = nullptr;
    if (d.pointer_mode == CUBLASLT_POINTER_MODE_HOST) {
        al = *(const float *)alpha;
        be = *(const float *)beta;
    } else {
        check_region(alpha, 4, MEM_DEVICE, "cublasLtMatmul alpha (pointer mode device)");
        check_region(beta, 4, MEM_DEVICE, "cublasLtMatmul beta (pointer mode device)");
        al_dev = (const float *)alpha;
        be_dev = (const float *)beta;
    }
    check_region(A, (size_t)layout_extent(a) * type_size(a.type), MEM_DEVICE, "cublasLtMatmul A");
    check_region(B, (size_t)layout_extent(b) * type_size(b.type), MEM_DEVICE, "cublasLtMatmul B");
    if (d.pointer_mode != CUBLASLT_POINTER_MODE_HOST || be != 0.0f)
        check_region(C, (size_t)layout_extent(c) * type_size(c.type), MEM_DEVICE, "cublasLtMatmul C");
    check_region(D, (size_t)layout_extent(dl) * type_size(dl.type), MEM_DEVICE, "cublasLtMatmul D");
    if (C != D && (uintptr_t)C < (uintptr_t)D + (size_t)layout_extent(dl) * type_size(dl.type) &&
        (uintptr_t)D < (uintptr_t)C + (size_t)layout_extent(c) * type_size(c.type))
        emu_fail("cublasLtMatmul: C and D overlap without being the same matrix");
    int bias_type = d.bias_type >= 0 ? d.bias_type : dl.type;
    uint32_t e = d.epilogue;
    if (d.bias && ((e & CUBLASLT_EPILOGUE_BIAS) || (e & 16) || e == CUBLASLT_EPILOGUE_BGRADA || e == CUBLASLT_EPILOGUE_BGRADB)) {
        uint64_t len = e == CUBLASLT_EPILOGUE_BGRADB ? dl.cols : dl.rows;
        check_region(d.bias, (size_t)(((int64_t)dl.batch - 1) * d.bias_stride + (int64_t)len) * type_size(bias_type), MEM_DEVICE,
                     "cublasLtMatmul bias");
    }
    if (e & 128) {
        bool relu = (e & 2) || (e & 8);
        int64_t elems = ((int64_t)dl.batch - 1) * d.aux_stride + ((int64_t)dl.cols - 1) * d.aux_ld + (int64_t)dl.rows;
        size_t bytes = relu ? (size_t)(elems + 7) / 8 : (size_t)elems * type_size(d.aux_type >= 0 ? d.aux_type : dl.type);
        check_region(d.aux, bytes, MEM_DEVICE, "cublasLtMatmul aux");
    }
    if (workspace && workspace_bytes) check_region(workspace, workspace_bytes, MEM_DEVICE, "cublasLtMatmul workspace");
    enqueue(stream, op{OP_MATMUL, nullptr, [=] { run_matmul(d, al, be, al_dev, be_dev, A, a, B, b, C, c, D, dl, k); }});
    return CUBLAS_STATUS_SUCCESS;
}

}   // extern "C"

// a summary at exit when CUDA_EMU_STATS is set
__attribute__((destructor)) static void emu_stats(void) {
    if (!getenv("CUDA_EMU_STATS")) return;
    fprintf(stderr, "cuda_emu: %llu kernel launches, %llu fiber switches, peak device memory %.1f MiB, %zu allocations left\n",
            kernel_launches, fiber_switches, device_peak / 1048576.0, allocations.size());
}
