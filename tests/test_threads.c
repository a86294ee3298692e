// Criterion tests of runtime/threads: the thread count from the affinity mask and the
// cgroup quota, and the re-exec that sets OpenMP's environment before libgomp starts.
#include <criterion/criterion.h>

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../runtime/threads.h"

static const char *cpu_max_file(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/loom_cpu_max_%d", (int)getpid());
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int affinity_count(void) {
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

Test(threads, no_quota_is_the_affinity_mask) {
    const char *p = cpu_max_file("max 100000\n");
    cr_expect_eq(threads_available(p), affinity_count());
    cr_expect_eq(threads_available("/nonexistent/cpu.max"), affinity_count());
    unlink(p);
}

Test(threads, quota_caps_and_rounds_up) {
    const char *p = cpu_max_file("50000 100000\n");   // half a core: one thread
    cr_expect_eq(threads_available(p), 1);
    unlink(p);
    p = cpu_max_file("100000000 100000\n");            // 1000 cores: the mask decides
    cr_expect_eq(threads_available(p), affinity_count());
    unlink(p);
}

Test(threads, affinity_of_one_core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu(), &set);
    cr_assert_eq(sched_setaffinity(0, sizeof set, &set), 0);
    cr_expect_eq(threads_available("/nonexistent/cpu.max"), 1);
}

// A fake cgroup tree under /tmp: root/REL gets the file NAME holding TEXT.
static char cg_root[64];
static void cg_file(const char *rel, const char *name, const char *text) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/%s && printf '%%s' '%s' > %s/%s/%s", cg_root, rel, text, cg_root, rel, name);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}
static void cg_setup(void) {
    snprintf(cg_root, sizeof cg_root, "/tmp/loom_cgroup_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", cg_root, cg_root);
    cr_assert_eq(system(cmd), 0);
}
static void cg_teardown(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cg_root);
    cr_assert_eq(system(cmd), 0);
}
static double quota_of(const char *proc_cgroup) {
    cg_file(".", "self_cgroup", proc_cgroup);
    char path[160];
    snprintf(path, sizeof path, "%s/self_cgroup", cg_root);
    return threads_cgroup_quota(path, cg_root);
}

Test(threads, cgroup_v2_quota_is_the_smallest_on_the_path, .init = cg_setup, .fini = cg_teardown) {
    cg_file(".", "cpu.max", "300000 100000\n");   // the root: 3 cores
    cg_file("x", "cpu.max", "max 100000\n");
    cg_file("x/y", "cpu.max", "50000 100000\n");  // half a core, below
    cr_expect_float_eq(quota_of("0::/x/y\n"), 0.5, 1e-12);
    cr_expect_float_eq(quota_of("0::/x\n"), 3.0, 1e-12);
    // a container's view: its own cgroup is the root, the path is the host's
    cr_expect_float_eq(quota_of("0::/not/here\n"), 3.0, 1e-12);
}

Test(threads, cgroup_v1_cfs_quota, .init = cg_setup, .fini = cg_teardown) {
    cg_file("cpu,cpuacct/a", "cpu.cfs_quota_us", "150000\n");
    cg_file("cpu,cpuacct/a", "cpu.cfs_period_us", "100000\n");
    cg_file("cpu,cpuacct/a/b", "cpu.cfs_quota_us", "-1\n");   // none of its own
    cg_file("cpu,cpuacct/a/b", "cpu.cfs_period_us", "100000\n");
    cr_expect_float_eq(quota_of("4:memory:/m\n3:cpu,cpuacct:/a/b\n0::/\n"), 1.5, 1e-12);
    cr_expect_float_eq(quota_of("3:cpuacct,cpu:/c\n"), 0.0, 1e-12);   // mounted under another name: none found
    cr_expect_float_eq(quota_of("4:memory:/m\n"), 0.0, 1e-12);          // no cpu controller
}

// threads_setup re-executes with the variables set; here the program it re-executes is
// a shell that checks them, and reports through its exit status.
static int setup_in_child(const char *spincount, const char *check) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        unsetenv("LOOM_THREADS_SET");
        unsetenv("OMP_WAIT_POLICY");
        unsetenv("OMP_NUM_THREADS");
        if (spincount) setenv("GOMP_SPINCOUNT", spincount, 1); else unsetenv("GOMP_SPINCOUNT");
        char *argv[] = { "sh", "-c", (char *)check, NULL };
        threads_setup_exec("/bin/sh", argv);
        _exit(99);   // exec failed
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(threads, setup_sets_what_is_unset_and_reexecutes) {
    cr_expect_eq(setup_in_child(NULL,
        "[ \"$GOMP_SPINCOUNT\" = 3000 ] && [ \"$OMP_NUM_THREADS\" -ge 1 ] && [ \"$LOOM_THREADS_SET\" = 1 ]"), 0);
    // the user's own spin count is kept
    cr_expect_eq(setup_in_child("300000", "[ \"$GOMP_SPINCOUNT\" = 300000 ] && [ \"$OMP_NUM_THREADS\" -ge 1 ]"), 0);
}

// `taskset -c 0 ./train`: the re-executed program runs one OpenMP thread
Test(threads, setup_follows_a_one_core_affinity_mask) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(sched_getcpu(), &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) _exit(98);
        unsetenv("LOOM_THREADS_SET");
        unsetenv("OMP_NUM_THREADS");
        char *argv[] = { "sh", "-c", "[ \"$OMP_NUM_THREADS\" = 1 ]", NULL };
        threads_setup_exec("/bin/sh", argv);
        _exit(99);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "OMP_NUM_THREADS is not 1 under a one-core mask (status %d)", status);
}

Test(threads, nothing_to_set_means_no_reexec) {
    setenv("GOMP_SPINCOUNT", "5", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    unsetenv("LOOM_THREADS_SET");
    char *argv[] = { "false", NULL };
    threads_setup_exec("/bin/false", argv);   // returns: nothing was unset
    cr_expect_null(getenv("LOOM_THREADS_SET"));
}
