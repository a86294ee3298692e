// LD_PRELOAD shim for tests/suite_resume.sh: the process kills itself (SIGKILL) at its
// Nth checkpoint rename (LOOM_KILL_AT_RENAME=N; a rename onto a *.safetensors file),
// before the rename: the run has trained the epoch past its newest checkpoint, whose
// temporary is written and left behind, the moment a kill -9 loses the most.
// Build: cc -shared -fPIC kill_at_rename.c -o kill_at_rename.so -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

int rename(const char *from, const char *to) {
    static int seen;
    const char *n = getenv("LOOM_KILL_AT_RENAME");
    size_t len = strlen(to);
    if (n && len >= 12 && strcmp(to + len - 12, ".safetensors") == 0 && ++seen == atoi(n)) raise(SIGKILL);
    int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    return real(from, to);
}
