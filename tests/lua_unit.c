// build/lua_unit FILE [ARGS...]: runs a Lua test file in the generator's own Lua state
// (gen/host.c: its modules, embedded or from $LOOM_GEN_DIR, and loomc), with the
// arguments in the global `arg`.  tests/suite_passes.sh runs tests/passes/*.lua with it:
// unit tests of the middle stages (precision, autodiff, plan, fuse) called through their
// module API.  An error (a failed assertion outside a test, a diagnostic) prints its
// message and a traceback and exits 1.
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

#include "host.h"

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg && lua_istable(L, 1)) {   // a diagnostic of gen/diag.lua
        lua_getfield(L, 1, "text");
        msg = lua_tostring(L, -1);
    }
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: lua_unit FILE [ARGS...]\n");
        return 2;
    }
    lua_State *L = loom_new_state();
    if (!L) { fprintf(stderr, "lua_unit: out of memory\n"); return 1; }
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc - 1; i++) {
        lua_pushstring(L, argv[i + 1]);
        lua_seti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    int status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) status = lua_pcall(L, 0, 0, -2);
    if (status != LUA_OK) fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
