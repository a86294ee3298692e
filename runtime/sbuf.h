#ifndef LOOM_SBUF_H
#define LOOM_SBUF_H
// A growable, always NUL-terminated byte buffer (checkpoint headers, CSV text).
// Out of memory is sticky: later appends do nothing and `oom` stays set, so a caller
// checks once at the end.
#include <stdlib.h>
#include <string.h>

typedef struct { char *p; size_t n, cap; int oom; } sbuf;

static inline void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + n + 1 > cap) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q; b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

#endif
