// Criterion tests of runtime/progress, with a fake clock so the lines are exact.
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/progress.h"

static double fake_now;
static double fake_clock(void) { return fake_now; }

static char *slurp(FILE *f) {
    static char buf[8192];
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    return buf;
}

Test(progress, plain_lines_when_not_a_tty) {
    FILE *f = tmpfile();   // a file, as when stdout is redirected
    cr_assert_not_null(f);
    progress p;
    progress_init(&p, f, 2, 5, 2);
    cr_expect_eq(p.tty, 0);
    p.clock = fake_clock;
    fake_now = 100.0;
    for (int e = 0; e < 2; e++) {
        for (int s = 0; s < 5; s++) {
            fake_now += 0.5;   // 0.5 s a step, 32 items a step: 64 items/s
            progress_step(&p, e, s, 1.0 / (1 + e * 5 + s), 32);
        }
        progress_print(&p, "validation: loss %.3f", 0.25);
    }
    progress_finish(&p);
    // the clock starts at the first step: per-step time is measured from it
    cr_expect_str_eq(slurp(f), "epoch 1/2 step 2/5 loss 0.5000 64 items/s ETA 0:04\n"
                               "epoch 1/2 step 4/5 loss 0.2500 64 items/s ETA 0:03\n"
                               "epoch 1/2 step 5/5 loss 0.2000 64 items/s ETA 0:03\n"
                               "validation: loss 0.250\n"
                               "epoch 2/2 step 2/5 loss 0.1429 64 items/s ETA 0:02\n"
                               "epoch 2/2 step 4/5 loss 0.1111 64 items/s ETA 0:01\n"
                               "epoch 2/2 step 5/5 loss 0.1000 64 items/s ETA 0:00\n"
                               "validation: loss 0.250\n");
    fclose(f);
}

Test(progress, terminal_mode_redraws_at_most_every_100ms) {
    FILE *f = tmpfile();
    progress p;
    progress_init(&p, f, 1, 1000, 100);
    p.tty = 1;   // as if on a terminal
    p.clock = fake_clock;
    fake_now = 0;
    for (int s = 0; s < 1000; s++) {   // 1 ms a step: about 10 redraws a second of run
        fake_now += 0.001;
        progress_step(&p, 0, s, 0.5, 10);
    }
    progress_finish(&p);
    char *out = slurp(f);
    int draws = 0;
    for (char *c = out; *c; c++) draws += *c == '\r';
    cr_expect(draws >= 9 && draws <= 12, "%d redraws", draws);
    cr_expect_eq(out[strlen(out) - 1], '\n');
    cr_expect_not_null(strstr(out, "\repoch 1/1 [====================] 1000/1000 loss 0.5000 "), "%s", out);
    cr_expect_not_null(strstr(out, "\repoch 1/1 [==>                 ] "), "%s", out);
    fclose(f);
}

// --max-steps (or a resumed run's remaining steps) sets total_steps: the ETA counts
// those, not the epochs' steps.
Test(progress, eta_counts_total_steps) {
    FILE *f = tmpfile();
    progress p;
    progress_init(&p, f, 10, 100, 10);
    cr_expect_eq(p.total_steps, 1000);
    p.total_steps = 20;   // --max-steps 20 of a 10-epoch plan
    p.clock = fake_clock;
    fake_now = 0;
    for (int s = 0; s < 10; s++) {
        fake_now += 1.0;   // 1 s a step
        progress_step(&p, 0, s, 0.5, 1);
    }
    // 10 steps done, 10 left at 1 s each (the full plan would say 16:30); the run ends
    // at the epoch's step 20, which the line counts to
    cr_expect_not_null(strstr(slurp(f), "epoch 1/10 step 10/20 loss 0.5000 1 items/s ETA 0:10\n"), "%s", slurp(f));
    fclose(f);
}

// A run resumed mid-epoch with 15 steps left: it ends at the epoch's step 65, and that
// step, the run's last, gets its line.
Test(progress, step_count_ends_where_the_run_does) {
    FILE *f = tmpfile();
    progress p;
    progress_init(&p, f, 2, 100, 10);
    p.total_steps = 15;
    p.clock = fake_clock;
    fake_now = 0;
    for (int s = 50; s < 65; s++) {
        fake_now += 1.0;
        progress_step(&p, 0, s, 0.5, 1);
    }
    cr_expect_str_eq(slurp(f), "epoch 1/2 step 60/65 loss 0.5000 1 items/s ETA 0:05\n"
                               "epoch 1/2 step 65/65 loss 0.5000 1 items/s ETA 0:00\n");
    fclose(f);
}
