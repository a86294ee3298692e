// Criterion tests of runtime/signals.
#include <criterion/criterion.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/signals.h"

// The watcher records a signal a moment after it is sent: wait for it (at most 10 s,
// the machine may be busy).
static int wait_for_flag(int want) {
    for (int i = 0; i < 10000 && signals_stop_requested() != want; i++) {
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
    }
    return signals_stop_requested();
}

Test(signals, sigint_sets_the_flag) {
    cr_assert_eq(signals_install(), 0);
    cr_expect_eq(signals_stop_requested(), 0);
    kill(getpid(), SIGINT);   // handled: the process lives on
    cr_expect_eq(wait_for_flag(SIGINT), SIGINT);
    signals_clear();
    cr_expect_eq(signals_stop_requested(), 0);
    signals_restore();
}

Test(signals, sigterm_sets_the_flag) {
    cr_assert_eq(signals_install(), 0);
    kill(getpid(), SIGTERM);
    cr_expect_eq(wait_for_flag(SIGTERM), SIGTERM);
    kill(getpid(), SIGTERM);   // a repeated SIGTERM does not kill: we are already stopping
    usleep(100000);
    cr_expect_eq(signals_stop_requested(), SIGTERM);
    signals_restore();
}

Test(signals, second_sigint_exits_at_once) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signals_install();
        kill(getpid(), SIGINT);
        if (wait_for_flag(SIGINT) != SIGINT) _exit(3);
        kill(getpid(), SIGINT);
        sleep(10);
        _exit(0);   // not reached
    }
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 130, "status %#x", status);
}

Test(signals, restore_puts_back_the_old_handler) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signals_install();
        signals_restore();
        raise(SIGINT);   // the default action again, and unblocked: killed
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) == 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGINT, "status %#x", status);
}

static void *report_mask(void *arg) {
    sigset_t *mask = arg;
    pthread_sigmask(SIG_BLOCK, NULL, mask);
    return NULL;
}

// The threads that run kernels never take the signals: the caller and the threads it
// creates afterwards (OpenMP's team, the loader's) have them blocked.
Test(signals, threads_created_after_install_block_the_stop_signals) {
    cr_assert_eq(signals_install(), 0);
    sigset_t mine, theirs;
    pthread_sigmask(SIG_BLOCK, NULL, &mine);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, report_mask, &theirs), 0);
    pthread_join(t, NULL);
    int team_blocks = 1;
    omp_set_num_threads(2);
    #pragma omp parallel reduction(&&: team_blocks)
    {
        sigset_t m;
        pthread_sigmask(SIG_BLOCK, NULL, &m);
        team_blocks = sigismember(&m, SIGTERM) && sigismember(&m, SIGINT);
    }
    cr_expect(sigismember(&mine, SIGTERM) && sigismember(&mine, SIGINT), "the installing thread takes the signals");
    cr_expect(sigismember(&theirs, SIGTERM) && sigismember(&theirs, SIGINT), "a thread created afterwards takes the signals");
    cr_expect(team_blocks, "an OpenMP team thread takes the signals");
    signals_restore();
    pthread_sigmask(SIG_BLOCK, NULL, &mine);
    cr_expect(!sigismember(&mine, SIGTERM), "signals_restore leaves SIGTERM blocked");
}

// The bug this layout fixes (a SIGTERM-stopped fashion_mlp run aborted with "corrupted
// size vs. prev_size"): a storm of SIGTERMs at a process running oneDNN sgemm on a team
// of two, with the heap busy, as the training loop's.  A handler on a kernel thread
// corrupts the heap within a few hundred signals; here the run must end cleanly.
Test(signals, sigterm_storm_during_onednn_sgemm_leaves_the_heap_intact, .timeout = 120) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (signals_install()) _exit(4);
        omp_set_num_threads(2);
        pid_t me = getpid();
        pid_t storm = fork();
        if (storm == 0) {
            for (int i = 0; i < 1500; i++) { kill(me, SIGTERM); usleep(300); }
            _exit(0);
        }
        const int M = 128, N = 256, K = 784;   // fashion_mlp's first Linear at batch 128
        for (int it = 0; waitpid(storm, NULL, WNOHANG) == 0 || it < 50; it++) {
            float *A = calloc((size_t)M * K, sizeof(float)), *B = calloc((size_t)N * K, sizeof(float));
            float *C = malloc((size_t)M * N * sizeof(float));
            char *small[8];
            for (int k = 0; k < 8; k++) small[k] = malloc((size_t)64 << k);   // chunks beside the kernels' buffers
            dnnl_sgemm('N', 'T', M, N, K, 1, A, K, B, K, 0, C, N);
            dnnl_sgemm('T', 'N', N, K, M, 1, C, N, A, K, 1, B, K);
            for (int k = 0; k < 8; k++) free(small[k]);
            free(A); free(B); free(C);
        }
        _exit(signals_stop_requested() == SIGTERM ? 0 : 5);
    }
    // a corrupted heap may also leave a malloc lock held: a child still running after
    // 60 s (it needs about 1 s) is killed and fails the test
    int status = 0, hung = 1;
    for (int i = 0; i < 600; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) { hung = 0; break; }
        usleep(100000);
    }
    if (hung) { kill(pid, SIGKILL); waitpid(pid, &status, 0); }
    cr_expect(!hung, "the process hung (a malloc lock held by a corrupted heap?)");
    cr_expect(hung || (WIFEXITED(status) && WEXITSTATUS(status) == 0), "status %#x (signal %d: the heap was corrupted)", status,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
