// libFuzzer harness: the spec front end (the Lua DSL sandbox, tracing, shapes: what
// `loom inspect` runs) on untrusted spec text, through the C host as the loom binary
// runs it.  Any outcome but success (0) or a user error (2, one diagnostic) is a crash:
// an internal error (70, a traceback), a sanitizer report, a hang past -timeout (the
// sandbox's CPU limit, LOOM_SPEC_SECONDS, is 1 s here) or memory past -rss_limit_mb.
// loom's own output is captured, and printed only with a crash.
// Dictionary: tests/fuzz/spec.dict.
#include "host.h"

#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static char path[64];
static int real_stdout, real_stderr, captured;
static void remove_spec(void) { remove(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    setenv("LOOM_SPEC_SECONDS", "1", 0);
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%.40s/fuzz_spec.%ld.lua", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    atexit(remove_spec);
    real_stdout = dup(1);
    real_stderr = dup(2);
    captured = memfd_create("loom-output", 0);
    if (real_stdout < 0 || real_stderr < 0 || captured < 0) { perror("fuzz_spec"); abort(); }
    __sanitizer_set_report_fd((void *)(intptr_t)real_stderr);   // reports bypass the capture
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(path); abort(); }
    if (ftruncate(captured, 0) != 0 || lseek(captured, 0, SEEK_SET) != 0) abort();
    fflush(stdout); fflush(stderr);
    dup2(captured, 1); dup2(captured, 2);
    char *argv[] = { "loom", "inspect", path, NULL };
    int rc = loom_main(3, argv);
    fflush(stdout); fflush(stderr);
    dup2(real_stdout, 1); dup2(real_stderr, 2);
    if (rc != 0 && rc != 2) {
        char out[4096];
        ssize_t n = pread(captured, out, sizeof out - 1, 0);
        out[n > 0 ? n : 0] = 0;
        fprintf(stderr, "fuzz_spec: loom inspect exited %d (not 0 or 2):\n%s\n", rc, out);
        abort();
    }
    return 0;
}
