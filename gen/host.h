#ifndef LOOM_HOST_H
#define LOOM_HOST_H
// The C host of the generator: a Lua 5.4 state with the generator's modules
// (embedded, or from $LOOM_GEN_DIR while developing) and a few native helpers
// the passes need (Markdown → HTML through cmark, atomic file writes, mkdir -p).
#include <stddef.h>
#include <lua.h>

// Runs `loom ARGS...`; returns the process exit code
// (0 ok, 1 failure, 2 user error in a spec or on the command line, 70 internal error).
int loom_main(int argc, char **argv);

// A fresh Lua state with the standard libraries, `require` able to find the
// generator's modules, and the native module "loomc".  NULL when out of memory.
lua_State *loom_new_state(void);

// When set, called with each new state once its libraries are open (the spec
// fuzzer, tests/fuzz/fuzz_spec.c, installs its Lua line-coverage hook this way).
extern void (*loom_state_hook)(lua_State *L);

// When set, called from the SIGPROF handler when a spec has used up its CPU time inside
// one C library call (where no Lua hook runs; loom then prints why and exits 2), and
// the handler returns instead of exiting: the hook leaves the input (siglongjmp) or
// arranges to leave it soon.  The spec fuzzer sets it, so that one stuck input does
// not end the fuzzing process.
extern void (*loom_backstop_hook)(void);

// When set, every state loom_new_state makes allocates through it, with a pointer to
// loom's own allocator (a `const lua_Alloc *`) as its `ud`.  The spec fuzzer keeps a
// list of each block this way: a state it leaves from a signal handler may be
// inconsistent, so it frees the blocks rather than calling lua_close.
extern lua_Alloc loom_alloc_wrapper;

// Ends a spec's CPU timer and heap cap (loom_main does this however it returns).
void loom_spec_limits_off(void);

// Markdown → HTML (CommonMark, via libcmark).  Caller frees.  NULL on failure.
char *loom_markdown_to_html(const char *markdown, size_t length);

// Writes `data` to `path` through a temporary file, fsync and rename, so a reader
// never sees a half-written file.  Returns 0, or -1 with a message in `err`.
int loom_write_file_atomic(const char *path, const char *data, size_t length,
                           char *err, size_t errlen);

// mkdir -p.  Returns 0, or -1 with errno set.
int loom_mkdir_p(const char *path);

// Runs argv[0] (on PATH unless it contains '/') with argv, without a shell, and
// waits for it; with `log_path`, its stdout and stderr go to that file.  While it
// runs, SIGINT and SIGQUIT are left to the child and SIGTERM is passed on to it.
// Returns 0 with the wait status in *status, or -1 with a message in `err`.
int loom_spawn(char *const argv[], const char *log_path, int *status, char *err, size_t errlen);

#endif
