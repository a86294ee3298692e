// threads.c: OpenMP's wait policy and thread count, set before libgomp starts (threads.h)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "threads.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int threads_available(const char *cpu_max) {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    FILE *f = fopen(cpu_max ? cpu_max : "/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32] = "";
        long long period = 0;
        if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
            long long q = atoll(quota);
            if (q > 0) {
                long long cores = (q + period - 1) / period;   // a quota of 1.5 cores: 2 threads
                if (cores < n) n = (int)cores;
            }
        }
        fclose(f);
    }
    return n;
}

void threads_setup_exec(const char *exe, char **argv) {
    // the marker stops a second re-exec even if the user's environment is odd
    if (getenv("LOOM_THREADS_SET")) return;
    int changed = 0;
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY")) {
        setenv("GOMP_SPINCOUNT", "10000", 1);
        changed = 1;
    }
    if (!getenv("OMP_NUM_THREADS")) {
        char n[16];
        snprintf(n, sizeof n, "%d", threads_available(NULL));
        setenv("OMP_NUM_THREADS", n, 1);
        changed = 1;
    }
    if (!changed) return;
    setenv("LOOM_THREADS_SET", "1", 1);
    execv(exe, argv);
    // no /proc, or exec refused: carry on with libgomp's defaults (already loaded)
}

void threads_setup(char **argv) { threads_setup_exec("/proc/self/exe", argv); }
