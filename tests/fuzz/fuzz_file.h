// tests/fuzz/fuzz_file.h — the readers under fuzzing take a path, so each input is put
// in an in-memory file (memfd) and read through /proc/self/fd/N: no disk traffic, and
// mmap (the checkpoint reader's) works on it.
#ifndef LOOM_FUZZ_FILE_H
#define LOOM_FUZZ_FILE_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

// Replaces the memfd's contents with data; returns its path (static storage).
static const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("loom-fuzz", 0);
        if (fd < 0) { perror("memfd_create"); abort(); }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    return path;
}
#endif
