#ifndef LOOM_THREADS_H
#define LOOM_THREADS_H
// OpenMP's settings for a machine that is rarely idle, made before the OpenMP
// runtime starts.  libgomp reads its environment when the program loads, before main,
// so threads_setup sets what the user left unset and re-executes the program once:
//  - GOMP_SPINCOUNT=3000 (unless it or OMP_WAIT_POLICY is set): a thread waiting at
//    a barrier sleeps after ~30 µs (a `pause` is ~10 ns on this Xeon) instead of
//    spinning ~3 ms (libgomp's 300000), so a team whose member lost its core to another
//    process does not burn the other cores waiting for it.  Measured on tiny_transformer
//    (2 threads, step_bench medians, issue 12): quiet 1000 is 25% slower than 3000
//    (11.1 ms against 8.7-9.1; 3000 = 10000 there), with one core busy 3000 24 ms,
//    1000 18.7, 10000 29-39; fashion_cnn the same at all three;
//  - OMP_NUM_THREADS (unless set): the cores this process may really use, the
//    smaller of its affinity mask and its cgroups' CPU quota (v2 cpu.max, v1
//    cpu.cfs_quota_us), rounded up.
// A program started with both already set (or re-executed) goes on at once; one
// whose re-exec fails goes on with libgomp's defaults.
//
//   int main(int argc, char **argv) { threads_setup(argv); ... }
void threads_setup(char **argv);
// The same, re-executing `exe` (threads_setup: /proc/self/exe); tests run a shell.
void threads_setup_exec(const char *exe, char **argv);

// The cores available: the affinity mask's count, capped by the CPU quota, rounded up:
// that of the cgroup v2 file `cpu_max` ("QUOTA PERIOD", "max PERIOD" for none) when given,
// else threads_cgroup_quota's.  At least 1.
int threads_available(const char *cpu_max);

// This process's CPU quota in cores, the smallest along its cgroups' paths (v2 cpu.max,
// v1 cpu.cfs_quota_us / cpu.cfs_period_us), or 0 for none.  proc_cgroup and root: a
// /proc/self/cgroup file and where the hierarchies are mounted (NULL: this process's,
// /sys/fs/cgroup); tests give their own.
double threads_cgroup_quota(const char *proc_cgroup, const char *root);

#endif
