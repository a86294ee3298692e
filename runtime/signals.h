#ifndef LOOM_SIGNALS_H
#define LOOM_SIGNALS_H
// Graceful stop on SIGINT / SIGTERM. The handler only records the signal; the training
// loop polls signals_stop_requested() after each step, then finishes what it is doing,
// checkpoints and exits 0. A second SIGINT (an impatient Ctrl-C) exits at once with
// status 130, as a shell expects of a process killed by SIGINT.
//
//   signals_install();
//   for (step...) { ...; if (signals_stop_requested()) { checkpoint(); return 0; } }

// Installs the handlers (sigaction, SA_RESTART so that reads of data files are not
// cut short). Returns 0, or -1 with errno set.
int signals_install(void);
// Puts back the handlers that were there before signals_install.
void signals_restore(void);
// The signal that asked us to stop (SIGINT or SIGTERM), or 0.
int signals_stop_requested(void);
// Forgets a recorded request (tests; a program that chose to carry on).
void signals_clear(void);

#endif
