// SIGINT / SIGTERM -> a flag the training loop checks. See signals.h.
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

// Only a volatile sig_atomic_t may be written by a handler and read by the loop.
static volatile sig_atomic_t stop_signal = 0;
static struct sigaction old_int, old_term;
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

int signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, &old_int) != 0) return -1;
    if (sigaction(SIGTERM, &sa, &old_term) != 0) { sigaction(SIGINT, &old_int, NULL); return -1; }
    installed = 1;
    return 0;
}

void signals_restore(void) {
    if (!installed) return;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    installed = 0;
}

int signals_stop_requested(void) { return stop_signal; }
void signals_clear(void) { stop_signal = 0; }
