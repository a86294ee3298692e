#ifndef LOOM_PROGRESS_H
#define LOOM_PROGRESS_H
// Training progress. On a terminal, one line redrawn in place:
//   epoch 2/10 [========>           ] 212/469 loss 0.4312 51234 items/s ETA 3:05
// Elsewhere (a log file, a pipe, CI) plain lines every `every` steps and at the end of
// each epoch, so that logs read well and grep cleanly:
//   epoch 2/10 step 200/469 loss 0.4312 51234 items/s ETA 3:05
// progress_step costs a clock read on a terminal and a division otherwise; it redraws
// at most every 0.1 s, so calling it every step never slows the loop.
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *out;
    int tty;                       // 1: redraw one line; 0: plain lines
    int epochs;
    int64_t steps_per_epoch;
    int64_t total_steps;           // the steps this run takes, for the ETA: epochs *
                                   // steps_per_epoch unless set after progress_init
                                   // (--max-steps, a resumed run's remaining steps)
    int64_t every;                 // plain mode: print every `every` steps
    double min_redraw_s;           // terminal mode: redraw no more often than this
    double (*clock)(void);         // seconds, monotonic; replaceable for tests
    // state
    double t_start, t_last;        // start, last line drawn
    int64_t steps_done, steps_at_last;   // over the whole run
    int64_t items_done, items_at_last;
    double rate;                   // items/s, smoothed on the terminal
    int line_open;                 // terminal: an unfinished line is on screen
} progress;

// epochs and steps_per_epoch size the bar and the ETA; `every` is the plain-line interval.
// Terminal mode is chosen by isatty(out); set p->tty afterwards to force either.
void progress_init(progress *p, FILE *out, int epochs, int64_t steps_per_epoch, int64_t every);
// After each step: epoch and step are the loop's 0-based indices (step within the
// epoch), loss the value to show, items the number of samples (or tokens) in the step.
// The line's step count ends where the epoch ends for this run: at total_steps where
// those run out within the epoch (--max-steps 300 of a 10000-step epoch: "step 100/300").
void progress_step(progress *p, int epoch, int64_t step, double loss, int64_t items);
// Prints a message line (e.g. validation results) without garbling the bar.
void progress_print(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Ends an open terminal line.
void progress_finish(progress *p);

#endif
