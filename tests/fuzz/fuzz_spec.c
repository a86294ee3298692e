// libFuzzer harness: the spec front end (the Lua DSL sandbox, tracing, shapes: what
// `loom inspect` runs) on untrusted spec text, through the C host as the loom binary
// runs it.  Any outcome but success (0) or a user error (2, one diagnostic) is a crash:
// an internal error (70, a traceback), a sanitizer report, a hang past -timeout (the
// sandbox's CPU limit, LOOM_SPEC_SECONDS, is 1 s here) or memory past -rss_limit_mb.
// loom's own output is captured, and printed only with a crash.
// Dictionary: tests/fuzz/spec.dict.
//
// Coverage: libFuzzer sees the C it compiled (the host), but the front end is Lua run by
// Debian's uninstrumented liblua: alone it saw about 25 points.  So each line the Lua
// code runs (loom's modules and the spec) counts too: a line hook hashes (chunk, line)
// and the pair (previous line, line), a Lua-level edge, into libFuzzer's extra counters.
// gen/diag.lua's own hook (the sandbox's limits) would replace it: debug.sethook is
// wrapped so that both run.
//
// A spec stuck inside one C library call ends loom with exit 2 from a CPU-time signal
// (gen/host.c's backstop); here the handler jumps back to this input instead, so one
// such input does not end a long fuzzing run.  A state left from a signal handler may
// be half-updated (an object allocated but not yet linked), so lua_close could leak or
// worse: every block of loom's states is kept on a list (loom_alloc_wrapper) and the
// input's blocks are freed from it.  A signal inside the allocator itself waits for
// the allocator's return (or the timer's next tick, 10 ms later).
#include "host.h"

#include <lauxlib.h>

#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

// libFuzzer reads this section as coverage counters, cleared before each input
enum { LUA_EDGES = 1 << 16 };
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];

static lua_Hook inner_hook;   // the hook debug.sethook set (gen/diag.lua's), or NULL
static int inner_mask;
static uint32_t previous_line;

static void coverage_hook(lua_State *L, lua_Debug *ar) {
    if (ar->event == LUA_HOOKLINE && lua_getinfo(L, "S", ar)) {
        uint32_t h = 2166136261u;   // FNV-1a of the chunk's name, then the line
        for (const char *c = ar->source; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
        h = (h ^ (uint32_t)ar->currentline) * 16777619u;
        uint8_t *line = &lua_edges[h % (LUA_EDGES / 2)], *edge = &lua_edges[LUA_EDGES / 2 + ((h ^ (previous_line >> 1)) % (LUA_EDGES / 2))];
        if (*line < 255) (*line)++;
        if (*edge < 255) (*edge)++;
        previous_line = h;
    }
    int bit = ar->event == LUA_HOOKTAILCALL ? LUA_MASKCALL : 1 << ar->event;
    if (inner_hook && (inner_mask & bit)) inner_hook(L, ar);
}

// debug.sethook(...): the real one (the hook table, its C hook), then ours around it
static int wrapped_sethook(lua_State *L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 0);
    inner_hook = lua_gethook(L);
    inner_mask = lua_gethookmask(L);
    lua_sethook(L, coverage_hook, inner_mask | LUA_MASKLINE, lua_gethookcount(L));
    return 0;
}

// Where the CPU-time backstop returns to: a spec stuck inside one C call (a
// backtracking pattern) is a user error loom ends with exit 2; here the input ends as
// that and fuzzing goes on.
static sigjmp_buf stuck_input;
static volatile sig_atomic_t input_running;

// Every live block of loom's states, behind a header that links it into `live`.
typedef struct block { struct block *prev, *next; size_t size, pad; } block;
static block live = { &live, &live, 0, 0 };
static lua_Alloc loom_allocator;   // loom's own, which tracked_alloc wraps
static volatile sig_atomic_t in_allocator, leave_pending;

static void leave_now(void) {
    leave_pending = 0;
    siglongjmp(stuck_input, 1);
}

static void link_block(block *b) {
    b->next = live.next;
    b->prev = &live;
    live.next->prev = b;
    live.next = b;
}

static void *tracked_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    loom_allocator = *(const lua_Alloc *)ud;
    in_allocator = 1;
    block *b = ptr ? (block *)ptr - 1 : NULL, *grown = NULL;
    if (b) { b->prev->next = b->next; b->next->prev = b->prev; }
    size_t old = b ? b->size + sizeof(block) : osize;   // for a new object, osize is its type
    if (nsize == 0) {
        loom_allocator(NULL, b, old, 0);
    } else {
        grown = loom_allocator(NULL, b, old, nsize + sizeof(block));
        if (grown) { grown->size = nsize; link_block(grown); }
        else if (b) link_block(b);   // refused: the old block stays as it was
    }
    in_allocator = 0;
    if (leave_pending && input_running) leave_now();
    return grown ? grown + 1 : NULL;
}

// Frees the blocks of states the input left behind, through loom's allocator (which
// keeps the heap's count)
static void free_abandoned_blocks(void) {
    while (live.next != &live) {
        block *b = live.next;
        live.next = b->next;
        b->next->prev = &live;
        loom_allocator(NULL, b, b->size + sizeof(block), 0);
    }
}

static void leave_stuck_input(void) {
    if (!input_running) return;
    if (!in_allocator) leave_now();
    leave_pending = 1;   // leave at the allocator's return, or at the next tick
    struct itimerval tick = { .it_value = { .tv_usec = 10000 } };
    setitimer(ITIMER_PROF, &tick, NULL);
}

static void install_coverage(lua_State *L) {
    inner_hook = NULL;
    inner_mask = 0;
    previous_line = 0;
    lua_sethook(L, coverage_hook, LUA_MASKLINE, 0);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "sethook");
    lua_pushcclosure(L, wrapped_sethook, 1);
    lua_setfield(L, -2, "sethook");
    lua_pop(L, 1);
}

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
    // FUZZ_SPEC_NO_LUA_COVERAGE=1: without it (to measure what it adds)
    loom_state_hook = getenv("FUZZ_SPEC_NO_LUA_COVERAGE") ? NULL : install_coverage;
    loom_backstop_hook = leave_stuck_input;
    loom_alloc_wrapper = tracked_alloc;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(path); abort(); }
    if (ftruncate(captured, 0) != 0 || lseek(captured, 0, SEEK_SET) != 0) abort();
    fflush(stdout); fflush(stderr);
    dup2(captured, 1); dup2(captured, 2);
    char *argv[] = { "loom", "inspect", path, NULL };
    int rc;
    leave_pending = 0;
    if (sigsetjmp(stuck_input, 1) == 0) {
        input_running = 1;
        rc = loom_main(3, argv);
        input_running = 0;
    } else {   // the backstop fired: what loom exits with (its message is captured)
        input_running = 0;
        loom_spec_limits_off();
        free_abandoned_blocks();
        rc = 2;
    }
    fflush(stdout); fflush(stderr);
    dup2(real_stdout, 1); dup2(real_stderr, 2);
    struct itimerval timer;
    if (getitimer(ITIMER_PROF, &timer) == 0 && (timer.it_value.tv_sec || timer.it_value.tv_usec)) {
        fprintf(stderr, "fuzz_spec: loom inspect returned %d with the spec's CPU timer still set\n", rc);
        abort();
    }
    if (rc != 0 && rc != 2) {
        char out[4096];
        ssize_t n = pread(captured, out, sizeof out - 1, 0);
        out[n > 0 ? n : 0] = 0;
        fprintf(stderr, "fuzz_spec: loom inspect exited %d (not 0 or 2):\n%s\n", rc, out);
        abort();
    }
    return 0;
}
