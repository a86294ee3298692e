// LD_PRELOAD shim for tests/suite_train.sh: the process kills itself (SIGKILL) right
// after it deletes a checkpoint file (a name with "epoch=" in it), the worst moment for
// ModelCheckpoint's bookkeeping: every file last.safetensors' callback state names must
// still exist.  Build: cc -shared -fPIC kill_after_remove.c -o kill_after_remove.so -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void maybe_die(const char *path, int rc) {
    if (rc == 0 && strstr(path, "epoch=") && strstr(path, ".safetensors") && !strstr(path, ".tmp.")) raise(SIGKILL);
}

int remove(const char *path) {
    int (*real)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "remove");
    int rc = real(path);
    maybe_die(path, rc);
    return rc;
}

int unlink(const char *path) {
    int (*real)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int rc = real(path);
    maybe_die(path, rc);
    return rc;
}
