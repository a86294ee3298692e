// Token files in llm.c's layout: a header of 256 little-endian int32 (magic 20240520,
// version 1, the token count, the rest zero), then the tokens as little-endian uint16.
// The reader and the writer (`loom data tokens` writes the same layout from the
// generator, gen/loom.lua; tests/suite_tokens.sh reads its files back through this
// reader).  The dataset of (T+1)-token windows over a file is in data.c (it lives in
// the shared store).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "data_internal.h"

static void put_le32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}
static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int tokens_write(const char *path, const uint16_t *tokens, int64_t n, data_err *err) {
    if (n < 0 || n > INT32_MAX)
        return data_fail(err, DATA_EARG, "%s: %lld tokens: a token file holds 0..%d", path, (long long)n, INT32_MAX);
    unsigned char head[TOKENS_HEADER_BYTES] = {0};
    put_le32(head, TOKENS_MAGIC);
    put_le32(head + 4, TOKENS_VERSION);
    put_le32(head + 8, (uint32_t)n);
    unsigned char *body = data_malloc((size_t)n * 2, "the tokens to write", err);
    if (!body) return err->code;
    for (int64_t i = 0; i < n; i++) { body[2 * i] = (unsigned char)tokens[i]; body[2 * i + 1] = (unsigned char)(tokens[i] >> 8); }
    // written beside it and renamed: a crash never leaves half a file under the name
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) { free(body); return data_fail(err, DATA_EIO, "%s: cannot write: the path is too long", path); }
    FILE *fp = fopen(tmp, "wb");
    if (!fp) { int e = errno; free(body); return data_fail(err, DATA_EIO, "%s: cannot write: %s", tmp, strerror(e)); }
    int ok = fwrite(head, 1, sizeof head, fp) == sizeof head && fwrite(body, 1, (size_t)n * 2, fp) == (size_t)n * 2;
    ok = (fclose(fp) == 0) && ok;
    free(body);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return data_fail(err, DATA_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return data_ok(err);
}

int tokens_read(const char *path, uint16_t **tokens, int64_t *n, data_err *err) {
    *tokens = NULL;
    *n = 0;
    struct stat st;
    if (stat(path, &st) != 0) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return data_fail(err, DATA_EIO, "%s: cannot open: not a regular file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char head[TOKENS_HEADER_BYTES];
    size_t got = fread(head, 1, sizeof head, fp);
    if (got < sizeof head) {
        fclose(fp);
        return data_fail(err, DATA_ETRUNC, "%s: truncated: %zu bytes, shorter than a token file's %d-byte header", path, got, TOKENS_HEADER_BYTES);
    }
    uint32_t magic = get_le32(head), version = get_le32(head + 4), count = get_le32(head + 8);
    if (magic != TOKENS_MAGIC) {
        fclose(fp);
        return data_fail(err, DATA_EFORMAT, "%s: not a token file: magic %u, expected %u (llm.c's layout)", path, magic, TOKENS_MAGIC);
    }
    if (version != TOKENS_VERSION) {
        fclose(fp);
        return data_fail(err, DATA_EFORMAT, "%s: token file version %u, expected %u (uint16 tokens)", path, version, TOKENS_VERSION);
    }
    if (count > INT32_MAX) {
        fclose(fp);
        return data_fail(err, DATA_EFORMAT, "%s: corrupt header: token count %u is negative", path, count);
    }
    int64_t body = (int64_t)st.st_size - TOKENS_HEADER_BYTES;
    if (body < 2 * (int64_t)count) {
        fclose(fp);
        return data_fail(err, DATA_ETRUNC, "%s: truncated: the header says %u tokens, the file holds %lld", path, count, (long long)(body / 2));
    }
    if (body > 2 * (int64_t)count) {
        fclose(fp);
        return data_fail(err, DATA_EFORMAT, "%s: %lld unexpected bytes after the %u tokens the header gives", path,
                         (long long)(body - 2 * (int64_t)count), count);
    }
    unsigned char *raw = data_malloc((size_t)count * 2, "the tokens", err);
    if (!raw) { fclose(fp); return err->code; }
    got = fread(raw, 1, (size_t)count * 2, fp);
    fclose(fp);
    if (got < (size_t)count * 2) {
        free(raw);
        return data_fail(err, DATA_ETRUNC, "%s: truncated while reading: %zu of %u tokens", path, got / 2, count);
    }
    // in place: token i (2 bytes at 2i) is written at 2i, after it was read
    uint16_t *t = (uint16_t *)(void *)raw;
    for (int64_t i = 0; i < count; i++) t[i] = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
    *tokens = t;
    *n = count;
    return data_ok(err);
}
