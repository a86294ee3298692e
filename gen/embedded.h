#ifndef LOOM_EMBEDDED_H
#define LOOM_EMBEDDED_H
#include <stddef.h>

// One Lua module of the generator, compiled into the binary by gen/embed.c.
struct embedded_file {
    const char *module;   // "spec", "graph", ...
    const char *path;     // "gen/spec.lua", for tracebacks
    const char *source;
    size_t length;
};

extern const struct embedded_file embedded_files[];  // ends with module == NULL

#endif
