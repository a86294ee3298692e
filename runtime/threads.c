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

// cores = QUOTA / PERIOD of a cgroup v2 cpu.max file ("max PERIOD": none), 0 for none
static double quota_v2(const char *file) {
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char quota[32] = "";
    long long period = 0;
    double cores = 0;
    if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0 && atoll(quota) > 0)
        cores = (double)atoll(quota) / (double)period;
    fclose(f);
    return cores;
}

static long long read_ll(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    long long v = 0;
    if (!f) return 0;
    if (fscanf(f, "%lld", &v) != 1) v = 0;
    fclose(f);
    return v;
}

// cores = cpu.cfs_quota_us / cpu.cfs_period_us of a cgroup v1 directory (-1: none), 0 for none
static double quota_v1(const char *dir) {
    long long q = read_ll(dir, "cpu.cfs_quota_us"), p = read_ll(dir, "cpu.cfs_period_us");
    return q > 0 && p > 0 ? (double)q / (double)p : 0;
}

static double min_quota(double a, double b) { return a <= 0 ? b : b <= 0 ? a : a < b ? a : b; }

// The smallest quota from base/path up to base (a parent's quota caps its children;
// base itself too: a container sees its own cgroup as the root, and `path` may not exist
// in its view).
static double walk_quota(const char *base, const char *path, int v1) {
    char dir[4096], file[4200];
    size_t nb = strlen(base);
    if (snprintf(dir, sizeof dir, "%s%s", base, path) >= (int)sizeof dir) return 0;
    double q = 0;
    for (;;) {
        if (v1) q = min_quota(q, quota_v1(dir));
        else { snprintf(file, sizeof file, "%s/cpu.max", dir); q = min_quota(q, quota_v2(file)); }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= nb || !slash || slash < dir + nb) break;
        *slash = 0;
    }
    return q;
}

double threads_cgroup_quota(const char *proc_cgroup, const char *root) {
    if (!root) root = "/sys/fs/cgroup";
    FILE *f = fopen(proc_cgroup ? proc_cgroup : "/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[4096], base[4200];
    double q = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        // "ID:CONTROLLERS:PATH": v2 is "0::PATH"; v1's cpu controller a line of its own
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        const char *controllers = c1 + 1, *path = c2 + 1;
        if (!strcmp(line, "0") && !*controllers) {
            snprintf(base, sizeof base, "%s", root);
            q = min_quota(q, walk_quota(base, path, 0));
            continue;
        }
        int cpu = 0;
        char list[256];
        snprintf(list, sizeof list, "%s", controllers);
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) cpu |= !strcmp(t, "cpu");
        if (!cpu) continue;
        // mounted as root/cpu (often a link to cpu,cpuacct), or by the controllers' names
        const char *mounts[] = { "cpu", controllers };
        for (int m = 0; m < 2; m++) {
            snprintf(base, sizeof base, "%s/%s", root, mounts[m]);
            if (access(base, F_OK) == 0) { q = min_quota(q, walk_quota(base, path, 1)); break; }
        }
    }
    fclose(f);
    return q;
}

int threads_available(const char *cpu_max) {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    double q = cpu_max ? quota_v2(cpu_max) : threads_cgroup_quota(NULL, NULL);
    if (q > 0) {
        int cores = q < n ? (int)q : n;
        if (cores < q - 1e-9) cores++;   // a quota of 1.5 cores: 2 threads
        if (cores < 1) cores = 1;
        if (cores < n) n = cores;
    }
    return n;
}

void threads_setup_exec(const char *exe, char **argv) {
    // the marker stops a second re-exec even if the user's environment is odd
    if (getenv("LOOM_THREADS_SET")) return;
    int changed = 0;
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY")) {
        setenv("GOMP_SPINCOUNT", "3000", 1);
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
