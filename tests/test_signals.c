// Criterion tests of runtime/signals.
#include <criterion/criterion.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../runtime/signals.h"

Test(signals, sigint_sets_the_flag) {
    cr_assert_eq(signals_install(), 0);
    cr_expect_eq(signals_stop_requested(), 0);
    raise(SIGINT);   // handled: the process lives on
    cr_expect_eq(signals_stop_requested(), SIGINT);
    signals_clear();
    cr_expect_eq(signals_stop_requested(), 0);
    signals_restore();
}

Test(signals, sigterm_sets_the_flag) {
    cr_assert_eq(signals_install(), 0);
    raise(SIGTERM);
    cr_expect_eq(signals_stop_requested(), SIGTERM);
    raise(SIGTERM);   // a repeated SIGTERM does not kill: we are already stopping
    cr_expect_eq(signals_stop_requested(), SIGTERM);
    signals_restore();
}

Test(signals, second_sigint_exits_at_once) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signals_install();
        raise(SIGINT);
        raise(SIGINT);
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
        raise(SIGINT);   // the default action again: killed
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
}
