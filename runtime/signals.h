#ifndef LOOM_SIGNALS_H
#define LOOM_SIGNALS_H
// Graceful stop on SIGINT / SIGTERM. The signal is only recorded; the training
// loop polls signals_stop_requested() after each step, then finishes what it is doing,
// checkpoints and exits 0. A second SIGINT (an impatient Ctrl-C) exits at once with
// status 130, as a shell expects of a process killed by SIGINT.
//
//   signals_install();
//   for (step...) { ...; if (signals_stop_requested()) { checkpoint(); return 0; } }

// Call it before any thread that runs compute kernels exists (OpenMP's team, the
// loader's prefetch thread): it blocks SIGINT and SIGTERM in the calling thread, so
// that every thread created afterwards inherits the block, and takes them on a watcher
// thread of its own (signals.c says why: oneDNN's sgemm and the heap).  A signal is
// therefore recorded a moment after it is sent, not at once; raise() from a blocked
// thread stays pending (send it to the process: kill(getpid(), sig)).  Also installs
// the handler (SA_RESTART) for threads that existed before.  Returns 0, or -1 with
// errno set.
int signals_install(void);
// Stops the watcher and puts back the signal mask and handlers from before signals_install.
void signals_restore(void);
// The signal that asked us to stop (SIGINT or SIGTERM), or 0.
int signals_stop_requested(void);
// Forgets a recorded request (tests; a program that chose to carry on).
void signals_clear(void);

#endif
