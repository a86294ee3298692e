// The generator's C host.  Follows lua.c: everything, including set-up, runs
// under lua_pcall, and a message handler adds a traceback only to internal errors
// (a user's mistake in a spec arrives as a diagnostic table, already formatted).
#include "host.h"
#include "embedded.h"
#include "../build/version.h"   // LOOM_VERSION, LOOM_COMMIT (gen/version.sh)

#include <cmark-gfm.h>
#include <cmark-gfm-core-extensions.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_INTERNAL = 70 };

// cmark-gfm (GitHub's libcmark) rather than plain libcmark: the report is mostly
// tables, and only the GFM table extension renders them.
char *loom_markdown_to_html(const char *markdown, size_t length) {
    cmark_gfm_core_extensions_ensure_registered();
    cmark_parser *parser = cmark_parser_new(CMARK_OPT_DEFAULT);
    if (!parser) return NULL;
    cmark_syntax_extension *table = cmark_find_syntax_extension("table");
    if (table) cmark_parser_attach_syntax_extension(parser, table);
    cmark_parser_feed(parser, markdown, length);
    cmark_node *doc = cmark_parser_finish(parser);
    char *html = doc ? cmark_render_html(doc, CMARK_OPT_DEFAULT, cmark_parser_get_syntax_extensions(parser)) : NULL;
    if (doc) cmark_node_free(doc);
    cmark_parser_free(parser);
    return html;
}

int loom_mkdir_p(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    return 0;
}

int loom_write_file_atomic(const char *path, const char *data, size_t length,
                           char *err, size_t errlen) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    size_t done = 0;
    while (done < length) {
        ssize_t w = write(fd, data + done, length - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            close(fd); unlink(tmp);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

// The child being waited for by loom_spawn, for forwarding SIGTERM.
static volatile sig_atomic_t spawned_child = 0;

static void forward_signal(int sig) {
    if (spawned_child > 0) kill((pid_t)spawned_child, sig);
}

int loom_spawn(char *const argv[], const char *log_path, int *status, char *err, size_t errlen) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    if (log_path) {
        posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    // As system() does: while the child runs, Ctrl-C and Ctrl-\ are the child's to
    // handle (a training program checkpoints on SIGINT) and loom waits for it; a
    // SIGTERM sent to loom is passed on.  The child starts with default handlers.
    struct sigaction ignore = {.sa_handler = SIG_IGN}, forward = {.sa_handler = forward_signal};
    struct sigaction old_int, old_quit, old_term;
    sigemptyset(&ignore.sa_mask);
    sigemptyset(&forward.sa_mask);
    sigaction(SIGINT, &ignore, &old_int);
    sigaction(SIGQUIT, &ignore, &old_quit);
    sigaction(SIGTERM, &forward, &old_term);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGQUIT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &actions, &attr, argv, environ)
                                   : posix_spawnp(&pid, argv[0], &actions, &attr, argv, environ);
    int result = 0;
    if (rc != 0) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(rc));
        result = -1;
    } else {
        spawned_child = pid;
        while (waitpid(pid, status, 0) < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "waiting for %s: %s", argv[0], strerror(errno));
            result = -1;
            break;
        }
        spawned_child = 0;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return result;
}

/* ---- limits on a spec's evaluation --------------------------------------- */

// The Lua heap in bytes, and while a spec runs its cap (0: none).  A spec cannot
// catch these limits for good: the allocator refuses past the cap and keeps
// `exceeded` set for gen/diag.lua to report, and a CPU-time timer ends loom from
// a signal handler when the spec is stuck where no Lua hook runs (inside a C
// library call: a string pattern that backtracks for ever).
static struct { size_t used, limit; int exceeded; } heap;
static char backstop_message[1024];
static size_t backstop_length;

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    size_t old = ptr ? osize : 0;   // for a new object, osize is its type
    if (nsize == 0) {
        free(ptr);
        heap.used -= old;
        return NULL;
    }
    if (heap.limit && nsize > old && heap.used - old + nsize > heap.limit) {
        // the first refusal leaves room to report it, should the spec hold
        // nearly all it may
        if (!heap.exceeded) heap.limit += 16 << 20;
        heap.exceeded = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) heap.used = heap.used - old + nsize;
    return p;
}

void (*loom_backstop_hook)(void);
lua_Alloc loom_alloc_wrapper;
static const lua_Alloc loom_alloc = capped_alloc;

static void backstop(int sig) {
    (void)sig;
    ssize_t w = write(STDERR_FILENO, backstop_message, backstop_length);
    (void)w;
    if (loom_backstop_hook) {   // the spec fuzzer leaves this input instead
        loom_backstop_hook();
        return;
    }
    _exit(EXIT_USAGE);
}

// loomc.spec_limits(seconds, bytes, message): from now, the Lua heap may grow by
// `bytes`, and after `seconds` of CPU time loom prints `message` and exits 2.
// loomc.spec_limits(): both off.
void loom_spec_limits_off(void) {
    struct itimerval off = {0};
    setitimer(ITIMER_PROF, &off, NULL);
    heap.limit = 0;
    heap.exceeded = 0;
}

static int l_spec_limits(lua_State *L) {
    struct itimerval timer = {0};
    if (lua_isnoneornil(L, 1)) {
        loom_spec_limits_off();
        return 0;
    }
    double seconds = luaL_checknumber(L, 1);
    lua_Integer bytes = luaL_checkinteger(L, 2);
    size_t n;
    const char *msg = luaL_checklstring(L, 3, &n);
    luaL_argcheck(L, seconds > 0 && seconds < 1e9, 1, "seconds out of range");
    luaL_argcheck(L, bytes > 0, 2, "bytes out of range");
    if (n > sizeof backstop_message - 2) n = sizeof backstop_message - 2;
    memcpy(backstop_message, msg, n);
    backstop_message[n] = '\n';
    backstop_length = n + 1;
    struct sigaction sa = {.sa_handler = backstop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    timer.it_value.tv_sec = (time_t)seconds;
    timer.it_value.tv_usec = (suseconds_t)((seconds - (double)timer.it_value.tv_sec) * 1e6);
    if (timer.it_value.tv_sec == 0 && timer.it_value.tv_usec == 0) timer.it_value.tv_usec = 1;
    setitimer(ITIMER_PROF, &timer, NULL);
    heap.limit = heap.used + (size_t)bytes;
    heap.exceeded = 0;
    return 0;
}

// loomc.memory_exceeded(): whether the allocator refused since spec_limits.
static int l_memory_exceeded(lua_State *L) {
    lua_pushboolean(L, heap.exceeded);
    return 1;
}

/* ---- native functions for Lua ------------------------------------------- */

static int l_markdown_to_html(lua_State *L) {
    size_t n;
    const char *md = luaL_checklstring(L, 1, &n);
    char *html = loom_markdown_to_html(md, n);
    if (!html) return luaL_error(L, "cmark failed");
    lua_pushstring(L, html);
    free(html);
    return 1;
}

static int l_write_file(lua_State *L) {
    size_t n;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &n);
    char err[4200];
    if (loom_write_file_atomic(path, data, n, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_mkdir_p(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (loom_mkdir_p(path) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

// Whether path names a regular file: true, false (it exists but is a FIFO, a device, a
// directory: opening a FIFO to read would wait for a writer), or nil and why it cannot
// be looked at.
static int l_is_regular_file(lua_State *L) {
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, S_ISREG(st.st_mode));
    return 1;
}

// The names in a directory, sorted (no "." or ".."), or nil and why.
static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) break;
            names = p;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free(names[i]);
    }
    free(names);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

// The text of a file embedded at build time (templates/, runtime/), by path.
static int l_embedded(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    for (const struct embedded_file *e = embedded_files; e->module; e++) {
        if (strcmp(e->path, path) == 0) {
            lua_pushlstring(L, e->source, e->length);
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

// Paths of every embedded file under a directory prefix ("runtime/").
static int l_embedded_list(lua_State *L) {
    size_t n;
    const char *prefix = luaL_checklstring(L, 1, &n);
    lua_newtable(L);
    int i = 1;
    for (const struct embedded_file *e = embedded_files; e->module; e++) {
        if (strncmp(e->path, prefix, n) == 0) {
            lua_pushstring(L, e->path);
            lua_seti(L, -2, i++);
        }
    }
    return 1;
}

// loomc.spawn({prog, args...} [, log]): runs prog (looked up on PATH unless it
// has a '/') with exactly those arguments, no shell, and waits.  With `log`, the
// child's stdout and stderr go to that file.  Returns "exit", code or "signal",
// number, or nil and why it could not run.
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *log_path = luaL_optstring(L, 2, NULL);
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n >= 1, 1, "empty argument list");
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 1, i) != LUA_TSTRING) return luaL_error(L, "spawn: argument %d is not a string", (int)i);
        argv[i - 1] = (char *)lua_tostring(L, -1);   // the table keeps the string alive
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    int status;
    char err[512];
    if (loom_spawn(argv, log_path, &status, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (WIFSIGNALED(status)) {
        lua_pushliteral(L, "signal");
        lua_pushinteger(L, WTERMSIG(status));
    } else {
        lua_pushliteral(L, "exit");
        lua_pushinteger(L, WEXITSTATUS(status));
    }
    return 2;
}

static const luaL_Reg loomc_functions[] = {
    {"spawn", l_spawn},
    {"spec_limits", l_spec_limits},
    {"memory_exceeded", l_memory_exceeded},
    {"embedded", l_embedded},
    {"embedded_list", l_embedded_list},
    {"markdown_to_html", l_markdown_to_html},
    {"write_file", l_write_file},
    {"mkdir_p", l_mkdir_p},
    {"isatty", l_isatty},
    {"is_regular_file", l_is_regular_file},
    {"list_dir", l_list_dir},
    {NULL, NULL},
};

static int open_loomc(lua_State *L) {
    luaL_newlib(L, loomc_functions);
    lua_pushstring(L, cmark_version_string());
    lua_setfield(L, -2, "cmark_version");
    lua_pushstring(L, LOOM_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, LOOM_COMMIT);
    lua_setfield(L, -2, "commit");
    return 1;
}

/* ---- finding the generator's modules ------------------------------------- */

// package.searchers entry: $LOOM_GEN_DIR/NAME.lua when set (developing), else the
// copy embedded at build time.
static int search_generator(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *dir = getenv("LOOM_GEN_DIR");
    if (dir && *dir) {
        lua_pushfstring(L, "%s/%s.lua", dir, name);
        const char *path = lua_tostring(L, -1);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            if (luaL_loadfile(L, path) != LUA_OK) return lua_error(L);
            lua_insert(L, -2);  // loader, path
            return 2;
        }
        lua_pop(L, 1);
    }
    for (const struct embedded_file *e = embedded_files; e->module; e++) {
        size_t plen = strlen(e->path);
        if (plen < 4 || strcmp(e->path + plen - 4, ".lua") != 0) continue;
        if (strcmp(e->module, name) != 0) continue;
        lua_pushfstring(L, "@%s", e->path);
        if (luaL_loadbuffer(L, e->source, e->length, lua_tostring(L, -1)) != LUA_OK)
            return lua_error(L);
        lua_pushstring(L, e->path);
        return 2;
    }
    lua_pushfstring(L, "no generator module '%s'", name);
    return 1;
}

static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "loom: internal error: unprotected Lua error: %s\n", msg ? msg : "(not a string)");
    return 0;   // Lua aborts
}

void (*loom_state_hook)(lua_State *L);

lua_State *loom_new_state(void) {
    // luaL_newstate with an allocator that counts (and, while a spec runs, caps) the heap
    lua_State *L = loom_alloc_wrapper ? lua_newstate(loom_alloc_wrapper, (void *)&loom_alloc)
                                      : lua_newstate(capped_alloc, NULL);
    if (!L) return NULL;
    lua_atpanic(L, panic);
    luaL_openlibs(L);
    if (loom_state_hook) loom_state_hook(L);
    luaL_requiref(L, "loomc", open_loomc, 0);
    lua_pop(L, 1);
    // Put our searcher first so a stray gen/*.lua on package.path never wins.
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = n; i >= 1; i--) {
        lua_geti(L, -1, i);
        lua_seti(L, -2, i + 1);
    }
    lua_pushcfunction(L, search_generator);
    lua_seti(L, -2, 1);
    lua_pop(L, 2);
    return L;
}

/* ---- main ---------------------------------------------------------------- */

// Message handler: a diagnostic (a table from gen/diag.lua) passes through; any
// other error is loom's own bug and gets a traceback.
static int message_handler(lua_State *L) {
    if (lua_istable(L, 1)) return 1;
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    lua_getglobal(L, "require");
    lua_pushstring(L, "loom");
    lua_call(L, 1, 1);                 // the driver module
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_seti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;                          // exit code
}

int loom_main(int argc, char **argv) {
    lua_State *L = loom_new_state();
    if (!L) { fprintf(stderr, "loom: out of memory\n"); return EXIT_FAIL; }
    lua_pushcfunction(L, message_handler);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 1);
    int code;
    if (status == LUA_OK) {
        code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_OK;
    } else if (lua_istable(L, -1)) {
        // A user error that escaped the driver's own reporting: print its text.
        lua_getfield(L, -1, "text");
        fprintf(stderr, "%s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "loom: error");
        code = EXIT_USAGE;
    } else {
        fprintf(stderr, "loom: internal error: %s\n", lua_tostring(L, -1));
        code = EXIT_INTERNAL;
    }
    fflush(stdout);
    lua_close(L);
    // a user error raised while the spec ran leaves its limits set: they must not
    // outlive this call (a caller that runs loom again, as the spec fuzzer does, had
    // its next run cut off by the old CPU timer)
    loom_spec_limits_off();
    return code;
}
