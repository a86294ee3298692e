#ifndef LOOM_THREADS_H
#define LOOM_THREADS_H
// OpenMP's settings for a machine that is rarely idle, made before the OpenMP
// runtime starts.  libgomp reads its environment when the program loads, before main,
// so threads_setup sets what the user left unset and re-executes the program once:
//  - GOMP_SPINCOUNT=10000 (unless it or OMP_WAIT_POLICY is set): a thread waiting at
//    a barrier sleeps after ~10 µs instead of spinning ~0.3 s, so a team whose member
//    lost its core to another process does not burn the other cores waiting for it;
//  - OMP_NUM_THREADS (unless set): the cores this process may really use, the
//    smaller of its affinity mask and its cgroup's CPU quota (cpu.max), rounded up.
// A program started with both already set (or re-executed) goes on at once; one
// whose re-exec fails goes on with libgomp's defaults.
//
//   int main(int argc, char **argv) { threads_setup(argv); ... }
void threads_setup(char **argv);
// The same, re-executing `exe` (threads_setup: /proc/self/exe); tests run a shell.
void threads_setup_exec(const char *exe, char **argv);

// The cores available: the affinity mask's count, capped by a cgroup v2 quota
// ("QUOTA PERIOD" in the file `cpu_max`, "max" for none; NULL: /sys/fs/cgroup/cpu.max).
// At least 1.
int threads_available(const char *cpu_max);

#endif
