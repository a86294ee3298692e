// Prints lr_at and momentum_at of a generated program for steps 0..STEPS-1, one
// "lr momentum" line each, for tests/torch/schedule.py to compare with
// torch.optim.lr_scheduler.  Links with the program's optim.c (and model.c).
#include "optim.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: schedule STEPS STEPS_PER_EPOCH TOTAL_STEPS\n"); return 2; }
    long steps = atol(argv[1]), per_epoch = atol(argv[2]), total = atol(argv[3]);
    for (long s = 0; s < steps; s++)
        printf("%.17g %.17g\n", lr_at(s, s / per_epoch, total), momentum_at(s, total));
    return 0;
}
