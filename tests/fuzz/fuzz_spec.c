// libFuzzer harness: the spec front end (the Lua DSL sandbox, tracing, shapes: what
// `loom inspect` runs) on untrusted spec text, through the C host as the loom binary
// runs it.  Any outcome but success (0) or a user error (2, one diagnostic) is a crash:
// an internal error (70, a traceback), a sanitizer report, a hang past -timeout (the
// sandbox's CPU limit, LOOM_SPEC_SECONDS, is 1 s here) or memory past -rss_limit_mb.
// Dictionary: tests/fuzz/spec.dict; run with -close_fd_mask=3 (loom's output muted).
#include "host.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[64];
static void remove_spec(void) { remove(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    setenv("LOOM_SPEC_SECONDS", "1", 0);
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%.40s/fuzz_spec.%ld.lua", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    atexit(remove_spec);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(path); abort(); }
    char *argv[] = { "loom", "inspect", path, NULL };
    int rc = loom_main(3, argv);
    if (rc != 0 && rc != 2) {
        fprintf(stderr, "fuzz_spec: loom inspect exited %d (not 0 or 2)\n", rc);
        abort();
    }
    return 0;
}
