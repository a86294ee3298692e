// step_prof.h: timing hooks for a per-op breakdown of one training step.
// bench/prof_model.py copies a generated model.c and puts PROF_MARK("op label")
// before every op (the "// module  <- spec:line" comments the emitter writes);
// bench/step_bench.c (built with -DSTEP_PROF) defines the functions and marks the
// optimizer part of the step.  A mark closes the running segment (its time goes to
// the previous label) and opens the next; PROF_STOP closes it without opening one.
// Marks sit between kernels, outside parallel regions, so they cost two
// clock_gettime calls per op and change nothing else.
#ifndef STEP_PROF_H
#define STEP_PROF_H
#include <stdio.h>

int prof_register(const char *label);
void prof_mark(int id);
void prof_stop(void);
void prof_print(FILE *f, long steps, double median_step_ms);

#define PROF_MARK(label) do { static int prof_id_ = -1; if (prof_id_ < 0) prof_id_ = prof_register(label); prof_mark(prof_id_); } while (0)
#define PROF_STOP() prof_stop()

#endif
