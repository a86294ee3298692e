// SIGINT / SIGTERM -> a flag the training loop checks. See signals.h.
//
// The signals are taken on a thread of their own.  oneDNN's JIT sgemm kernels (before
// oneDNN 3.11; uxlfoundation/oneDNN#4845) point rsp into a heap buffer while they run,
// so a handler entered on a thread inside one writes its signal frame over the heap
// below that buffer: glibc later aborts ("corrupted size vs. prev_size") or the program
// segfaults.  Every thread of a training program may run those kernels (the main
// thread and OpenMP's team), so signals_install blocks SIGINT and SIGTERM in the
// calling thread, which every thread it creates afterwards inherits, and a watcher
// thread that runs nothing else takes them with sigwait.
#include "signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

// Written by the watcher (or a handler) and read by the loop: a lock-free atomic, which
// a handler may write too.
static atomic_int stop_signal = 0;
static struct sigaction old_int, old_term;
static sigset_t stop_set, old_mask;
static pthread_t watcher;
static int installed = 0;

// write(2) is async-signal-safe; printf is not.
static void say(const char *s) {
    ssize_t r = write(STDERR_FILENO, s, strlen(s));
    (void)r;
}

static void on_signal(int sig) {
    if (sig == SIGINT && stop_signal != 0) {
        say("\nloom: second interrupt, exiting now without a checkpoint\n");
        _exit(128 + SIGINT);   // _exit, not exit: atexit handlers are not signal-safe
    }
    if (stop_signal == 0) {
        stop_signal = sig;
        say(sig == SIGINT ? "\nloom: interrupt: finishing this step, then checkpointing and exiting (Ctrl-C again to exit now)\n"
                          : "\nloom: SIGTERM: finishing this step, then checkpointing and exiting\n");
    }
}

static void *watch(void *arg) {
    (void)arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&stop_set, &sig) == 0) on_signal(sig);   // (sigwait is a cancellation point)
    }
    return NULL;
}

int signals_install(void) {
    // The handler stays for threads that existed before (an MPI or CUDA helper thread
    // with the signals unblocked); they run no oneDNN kernel.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, &old_int) != 0) return -1;
    if (sigaction(SIGTERM, &sa, &old_term) != 0) { sigaction(SIGINT, &old_int, NULL); return -1; }
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    int rc = pthread_sigmask(SIG_BLOCK, &stop_set, &old_mask);
    if (rc == 0 && (rc = pthread_create(&watcher, NULL, watch, NULL)) != 0) pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (rc != 0) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        errno = rc;
        return -1;
    }
    installed = 1;
    return 0;
}

void signals_restore(void) {
    if (!installed) return;
    pthread_cancel(watcher);
    pthread_join(watcher, NULL);
    // unblocked while our handler is still there: one that came meanwhile is recorded
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    installed = 0;
}

int signals_stop_requested(void) { return stop_signal; }
void signals_clear(void) { stop_signal = 0; }
