// tests/faults/failsys.c — an LD_PRELOAD shim that fails one checkpoint system call.
// It counts the calls a checkpoint write makes (reading one is left alone) (runtime/ckpt.c: open of the temporary
// *.safetensors.tmp.PID, its writes, fsync and close, the rename onto *.safetensors,
// and the open and fsync of the directory) and fails the Nth:
//   LOOM_FAULT_NTH=N        the call to fail (1-based; 0 or unset: fail none, only count)
//   LOOM_FAULT_ERRNO=E      its errno (default 28, ENOSPC)
//   LOOM_FAULT_COUNT=FILE   at exit, the number of counted calls is written here
// A failed close still closes the descriptor; nothing else reaches the kernel.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096
static char tracked[MAX_FD];   // 1: a checkpoint file's descriptor, 2: a directory's
static long calls, nth = -1;
static int fail_errno = ENOSPC;

static void init(void) {
    if (nth >= 0) return;
    const char *n = getenv("LOOM_FAULT_NTH"), *e = getenv("LOOM_FAULT_ERRNO");
    nth = n ? atol(n) : 0;
    if (e) fail_errno = atoi(e);
}

// Counts one call; 1 when it is the one to fail.  LOOM_FAULT_TRACE=1 lists them.
static int fault_at(const char *what) {
    init();
    ++calls;
    if (getenv("LOOM_FAULT_TRACE")) fprintf(stderr, "failsys: %ld %s%s\n", calls, what, calls == nth ? " (fails)" : "");
    return calls == nth;
}
#define fault() fault_at(__func__)

static int is_ckpt_path(const char *p) { return p && strstr(p, ".safetensors") != NULL; }

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("LOOM_FAULT_COUNT");
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (f) { fprintf(f, "%ld\n", calls); fclose(f); }
}

static int track_open(int (*real)(), int dirfd, int at, const char *path, int flags, mode_t mode) {
    // a checkpoint opened for writing, or a directory (to fsync it); not a checkpoint read
    int ours = (is_ckpt_path(path) && (flags & (O_WRONLY | O_RDWR))) || (flags & O_DIRECTORY);
    if (ours && fault()) { errno = fail_errno; return -1; }
    int fd = at ? real(dirfd, path, flags, mode) : real(path, flags, mode);
    if (ours && fd >= 0 && fd < MAX_FD) tracked[fd] = (flags & O_DIRECTORY) ? 2 : 1;
    return fd;
}

int open(const char *path, int flags, ...) {
    static int (*real)();
    if (!real) real = (int (*)())dlsym(RTLD_NEXT, "open");
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return track_open(real, 0, 0, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    static int (*real)();
    if (!real) real = (int (*)())dlsym(RTLD_NEXT, "open64");
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return track_open(real, 0, 0, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    static int (*real)();
    if (!real) real = (int (*)())dlsym(RTLD_NEXT, "openat");
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return track_open(real, dirfd, 1, path, flags, mode);
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (fd >= 0 && fd < MAX_FD && tracked[fd] && fault()) { errno = fail_errno; return -1; }
    return real(fd, buf, n);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (fd >= 0 && fd < MAX_FD && tracked[fd] && fault()) { errno = fail_errno; return -1; }
    return real(fd);
}

int close(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "close");
    // a directory's close is not counted: its fsync is what matters
    int ours = fd >= 0 && fd < MAX_FD && tracked[fd] == 1;
    if (fd >= 0 && fd < MAX_FD) tracked[fd] = 0;
    int rc = real(fd);
    if (ours && fault()) { errno = fail_errno; return -1; }
    return rc;
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    if (is_ckpt_path(to) && fault()) { errno = fail_errno; return -1; }
    return real(from, to);
}
