// The emulated CUDA runtime's semantics that the comparisons with the CPU program rely
// on, each shown on a small case: barriers and shuffles, lazy streams (a read before its
// synchronisation sees stale data, a wait on an event orders two streams), capture that
// records kernel parameters at capture time, graph update and replay (a forked stream
// joined back; one not joined is an error), and the checks
// that abort with one line (a copy against its direction, a host pointer given to a
// kernel, a barrier after a divergent return).  Prints TAP lines.
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

extern "C" void *emu_find_kernel(const char *name);
extern "C" int emu_launch_kernel(void *entry, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned shmem, void *stream, void **params, void **extra);

static int failures;
static void check(bool ok, const char *name, const std::string &why = "") {
    if (ok) printf("ok %s\n", name);
    else { printf("not ok %s: %s\n", name, why.c_str()); failures++; }
    fflush(stdout);
}
static void launch(const char *k, unsigned grid, unsigned block, cudaStream_t s, void **args) {
    emu_launch_kernel(emu_find_kernel(k), grid, 1, 1, block, 1, 1, 0, (void *)s, args, nullptr);
}
// runs `f` in a child: it must abort, and its stderr must contain `expect`
static void expect_abort(const char *name, const char *expect, const std::function<void()> &f) {
    int fds[2];
    if (pipe(fds)) { perror("pipe"); return; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        f();
        _exit(0);
    }
    close(fds[1]);
    std::string err;
    char buf[512];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    check(aborted && err.find(expect) != std::string::npos, name, "status " + std::to_string(status) + ", stderr: " + err);
}

int main() {
    cudaStream_t s, t;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking);
    float *d, *h;
    cudaMalloc((void **)&d, 1024 * sizeof(float));
    cudaMallocHost((void **)&h, 1024 * sizeof(float));

    // fresh device memory reads as NaN
    cudaMemcpy(h, d, 4 * sizeof(float), cudaMemcpyDeviceToHost);
    check(std::isnan(h[0]) && std::isnan(h[3]), "emu_poisoned_malloc");

    // barriers: a block reverses itself through shared memory; shuffles: warp sums
    for (int i = 0; i < 1024; i++) h[i] = (float)i;
    cudaMemcpy(d, h, 1024 * sizeof(float), cudaMemcpyHostToDevice);
    int n = 1000;
    void *a1[] = {&d, &n};
    launch("block_reverse", 4, 256, s, a1);
    cudaStreamSynchronize(s);
    cudaMemcpy(h, d, 1024 * sizeof(float), cudaMemcpyDeviceToHost);
    check(h[0] == 255 && h[255] == 0 && h[256] == 511 && h[999] == 792 && h[768] == 0, "emu_syncthreads",
          "h[0] " + std::to_string(h[0]) + " h[999] " + std::to_string(h[999]));
    float *sums;
    cudaMalloc((void **)&sums, 32 * sizeof(float));
    for (int i = 0; i < 1024; i++) h[i] = 1.0f + (float)(i % 32);
    cudaMemcpy(d, h, 1024 * sizeof(float), cudaMemcpyHostToDevice);
    void *a2[] = {&d, &sums};
    launch("warp_sums", 4, 256, s, a2);
    cudaMemcpyAsync(h, sums, 32 * sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    check(h[0] == 528 && h[31] == 528, "emu_shfl_xor", std::to_string(h[0]));

    // lazy streams: a pinned read before the synchronisation sees what was there
    h[0] = -1;
    cudaMemsetAsync(d, 0, sizeof(float), s);
    cudaMemcpyAsync(h, d, sizeof(float), cudaMemcpyDeviceToHost, s);
    float before = h[0];
    cudaStreamSynchronize(s);
    check(before == -1 && h[0] == 0, "emu_lazy_stream_read_before_sync");
    // ... and a pinned buffer rewritten before its queued copy ran is copied rewritten
    h[0] = 1;
    cudaMemcpyAsync(d, h, sizeof(float), cudaMemcpyHostToDevice, s);
    h[0] = 2;
    cudaStreamSynchronize(s);   // (a synchronous cudaMemcpy would not wait: s is non-blocking)
    cudaMemcpy(h + 1, d, sizeof(float), cudaMemcpyDeviceToHost);
    check(h[1] == 2, "emu_lazy_stream_pinned_source");
    // two streams: without the event stream t reads the old value, with it the new one
    float v = 5;
    cudaMemset(d, 0, sizeof(float));
    long long one = 1;
    void *a3[] = {&d, &v, &one};
    launch("add_scalar", 1, 32, s, a3);
    cudaMemcpyAsync(h, d, sizeof(float), cudaMemcpyDeviceToHost, t);
    cudaStreamSynchronize(t);
    float unordered = h[0];
    cudaEvent_t e;
    cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    launch("add_scalar", 1, 32, s, a3);
    cudaEventRecord(e, s);
    cudaStreamWaitEvent(t, e, 0);
    cudaMemcpyAsync(h, d, sizeof(float), cudaMemcpyDeviceToHost, t);
    cudaStreamSynchronize(t);
    check(unordered == 0 && h[0] == 10, "emu_stream_wait_event", std::to_string(unordered) + " " + std::to_string(h[0]));
    cudaDeviceSynchronize();

    // capture: parameters are taken at capture; the graph replays them; an update
    // with new parameters replaces them
    cudaMemset(d, 0, sizeof(float));
    cudaGraph_t g;
    cudaGraphExec_t x;
    v = 1;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    launch("add_scalar", 1, 32, s, a3);
    cudaStreamEndCapture(s, &g);
    cudaGraphInstantiate(&x, g, 0);
    v = 100;   // too late for the graph
    cudaGraphLaunch(x, s);
    cudaGraphLaunch(x, s);
    cudaMemcpyAsync(h, d, sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    float replayed = h[0];
    cudaGraph_t g2;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    launch("add_scalar", 1, 32, s, a3);   // v = 100 now
    cudaStreamEndCapture(s, &g2);
    cudaGraphExecUpdateResultInfo info;
    cudaError_t up = cudaGraphExecUpdate(x, g2, &info);
    cudaGraphLaunch(x, s);
    cudaMemcpyAsync(h, d, sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    check(replayed == 2 && up == cudaSuccess && h[0] == 102, "emu_graph_capture_replay_update",
          std::to_string(replayed) + " " + std::to_string(h[0]));
    // a stream forked into a capture (waiting for its event) and joined back (the origin
    // waiting for the forked stream's): the graph orders the forked node after the fork
    // point and before the join, and replays it lazily, where the join needs it
    cudaMemset(d, 0, sizeof(float));
    cudaEvent_t fork, join;
    cudaEventCreateWithFlags(&fork, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&join, cudaEventDisableTiming);
    float *d2;
    cudaMalloc((void **)&d2, sizeof(float));
    cudaMemset(d2, 0, sizeof(float));
    void *a4[] = {&d2, &v, &one};   // v = 100
    v = 1;
    cudaGraph_t g4;
    cudaGraphExec_t x4;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    launch("add_scalar", 1, 32, s, a3);                                            // d += 1 (origin)
    cudaEventRecord(fork, s);
    cudaStreamWaitEvent(t, fork, 0);                                               // t joins the capture
    cudaMemcpyAsync(d2, d, sizeof(float), cudaMemcpyDeviceToDevice, t);           // d2 = d (forked)
    cudaEventRecord(join, t);
    cudaStreamWaitEvent(s, join, 0);                                               // joined back
    launch("add_scalar", 1, 32, s, a4);                                            // d2 += 1 (origin, after the join)
    cudaError_t fj = cudaStreamEndCapture(s, &g4);
    cudaGraphInstantiate(&x4, g4, 0);
    cudaGraphLaunch(x4, s);
    cudaGraphLaunch(x4, s);
    cudaMemcpyAsync(h, d2, sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    check(fj == cudaSuccess && h[0] == 3, "emu_graph_fork_join", std::to_string(h[0]) + " (d2 = d + 1 after 2 replays: 3)");
    // a fork never joined back: cudaErrorStreamCaptureUnjoined, as CUDA's
    cudaGraph_t g5;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    launch("add_scalar", 1, 32, s, a3);
    cudaEventRecord(fork, s);
    cudaStreamWaitEvent(t, fork, 0);
    cudaMemcpyAsync(d2, d, sizeof(float), cudaMemcpyDeviceToDevice, t);
    cudaError_t unjoined = cudaStreamEndCapture(s, &g5);
    check(unjoined == cudaErrorStreamCaptureUnjoined, "emu_graph_unjoined_fork", cudaGetErrorString(unjoined));
    (void)cudaGetLastError();
    // a synchronous call inside a capture fails and invalidates it
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    cudaError_t m = cudaMalloc((void **)&sums, 4);
    cudaGraph_t g3;
    cudaError_t end = cudaStreamEndCapture(s, &g3);
    check(m == cudaErrorStreamCaptureUnsupported && end == cudaErrorStreamCaptureInvalidated, "emu_capture_forbids_malloc");
    (void)cudaGetLastError();

    // what aborts with one line
    float host_array[4];
    expect_abort("emu_copy_direction_checked", "is device memory, but the copy's direction says host",
                 [&] { cudaMemcpy(d, host_array, 4, cudaMemcpyDeviceToHost); });
    expect_abort("emu_copy_overrun_checked", "overrun",
                 [&] { cudaMemcpy(d + 1000, host_array, 100, cudaMemcpyHostToDevice); });
    expect_abort("emu_kernel_host_pointer_checked", "points into neither device nor pinned memory", [&] {
        float *p = host_array;
        void *a[] = {&p, &n};
        launch("block_reverse", 1, 256, s, a);
    });
    expect_abort("emu_divergent_barrier_detected", "a barrier after a divergent return", [&] {
        int *q;
        cudaMalloc((void **)&q, 256 * sizeof(int));
        void *a[] = {&q};
        launch("divergent_barrier", 1, 256, s, a);
        cudaStreamSynchronize(s);
    });
    return failures ? 1 : 0;
}
