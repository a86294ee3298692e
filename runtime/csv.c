// CSV files: numeric columns by name into a dataset of arrays, read once at start.
// Parsed by hand: Debian's libcsv (libcsv-dev) would only split the fields, through
// callbacks, for one more package and library in every CSV program; the numbers, the
// column selection and the errors naming line and column are ours either way, and the
// format needed is small: RFC 4180 fields (double quotes, "" inside them; a quoted cell
// ends on its line), one row a line (\n or \r\n), blank lines skipped as pandas and numpy
// skip them.  See data.h.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "data_internal.h"

// The whole file (plain or gzip) into a NUL-terminated buffer.
static int slurp(const char *path, char **text, size_t *len, data_err *err) {
    data_file f;
    int rc = dfile_open(&f, path, err);
    if (rc) return rc;
    size_t cap = f.size > 0 ? (size_t)f.size + 1 : 4096, n = 0;
    char *buf = data_malloc(cap, "a CSV file", err);
    if (!buf) { dfile_close(&f); return err->code; }
    for (;;) {
        size_t got;
        if (n + 1 >= cap) {
            char *more = realloc(buf, cap * 2);
            if (!more) { free(buf); dfile_close(&f); return data_fail(err, DATA_ENOMEM, "%s: out of memory reading the file", path); }
            buf = more;
            cap *= 2;
        }
        if ((rc = dfile_read(&f, buf + n, cap - 1 - n, &got, "the CSV text", err))) { free(buf); dfile_close(&f); return rc; }
        n += got;
        if (got == 0 || n + 1 < cap) break;
    }
    dfile_close(&f);
    if (memchr(buf, '\0', n)) { free(buf); return data_fail(err, DATA_EFORMAT, "%s: not a text file (it holds NUL bytes)", path); }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return data_ok(err);
}

// One row's cells: cell k is text[start[k] .. end[k]), quotes removed in place.
typedef struct {
    int n, cap;
    char **cell;
} row_cells;

// Splits the line at *p (up to its newline) into cells, unquoting in place (the text is
// ours); *p moves past the newline.  Returns 0, or -1 for an unclosed quote.
static int split_row(char **p, char delim, row_cells *r, data_err *err, const char *path, int64_t line) {
    char *s = *p;
    r->n = 0;
    for (;;) {
        if (r->n == r->cap) {
            int cap = r->cap ? r->cap * 2 : 16;
            char **more = realloc(r->cell, sizeof *more * (size_t)cap);
            if (!more) return data_fail(err, DATA_ENOMEM, "%s:%lld: out of memory splitting the row", path, (long long)line);
            r->cell = more;
            r->cap = cap;
        }
        char *out = s, *start = s;
        r->cell[r->n++] = start;
        if (*s == '"') {   // a quoted cell: up to the closing quote, "" is one quote
            s++;
            for (;;) {
                if (*s == '\0' || *s == '\n')   // (a cell over several lines is RFC 4180's, but never a number's)
                    return data_fail(err, DATA_EFORMAT, "%s:%lld: a quoted cell is not closed on its line", path, (long long)line);
                if (*s == '"' && s[1] == '"') { *out++ = '"'; s += 2; }
                else if (*s == '"') { s++; break; }
                else *out++ = *s++;
            }
            while (*s && *s != delim && *s != '\n' && *s != '\r') *out++ = *s++;   // text after the quote, kept as pandas keeps it
        } else {
            while (*s && *s != delim && *s != '\n') s++;
            out = s;
            if (out > start && out[-1] == '\r') out--;
        }
        char end = *s;
        if (end == '\r' && s[1] == '\n') { s++; end = '\n'; }
        *out = '\0';
        if (end == delim) { s++; continue; }
        if (end == '\n') s++;
        *p = s;
        return data_ok(err);
    }
}

// Is the line at p blank (only spaces, tabs, \r)?
static int blank_line(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r') p++;
    return *p == '\n' || *p == '\0';
}

static const char *skip_line(const char *p) {
    while (*p && *p != '\n') p++;
    return *p ? p + 1 : p;
}

// A cell as a finite number (spaces around it allowed); 0 when it is not one.
static int parse_number(const char *cell, double *v) {
    char *end;
    while (*cell == ' ' || *cell == '\t') cell++;
    if (!*cell) return 0;
    errno = 0;
    *v = strtod(cell, &end);
    while (*end == ' ' || *end == '\t') end++;
    return *end == '\0' && isfinite(*v);
}

// Resolves the columns' names against the header (or checks their indices).
static int find_columns(const csv_opts *o, const csv_column *cols, int ncols, const row_cells *head, int nf, int *index, data_err *err) {
    for (int k = 0; k < ncols; k++) {
        if (cols[k].name) {
            if (!o->header)
                return data_fail(err, DATA_EARG, "%s: column '%s' is named, but the file has no header (header = false): give its 0-based index", o->path, cols[k].name);
            index[k] = -1;
            for (int j = 0; j < nf; j++)
                if (strcmp(head->cell[j], cols[k].name) == 0) { index[k] = j; break; }
            if (index[k] < 0) {
                char have[512];
                size_t len = 0;
                have[0] = '\0';
                for (int j = 0; j < nf && len + 4 < sizeof have; j++)
                    len += (size_t)snprintf(have + len, sizeof have - len, "%s'%s'", j ? ", " : "", head->cell[j]);
                if (len >= sizeof have) memcpy(have + sizeof have - 4, "...", 4);
                return data_fail(err, DATA_EFORMAT, "%s:1: no column '%s' in the header (it has %s)", o->path, cols[k].name, have);
            }
        } else {
            if (cols[k].index < 0 || cols[k].index >= nf)
                return data_fail(err, DATA_EFORMAT, "%s: column %d does not exist (the rows have %d columns)", o->path, cols[k].index, nf);
            index[k] = cols[k].index;
        }
    }
    return data_ok(err);
}

int csv_open(const csv_opts *o, dataset *out, data_err *err) {
    char delim = o->delimiter ? o->delimiter : ',';
    if (o->nfeatures < 1 || o->ntargets < 1 || (o->classes > 0 && o->ntargets != 1) || o->nfeatures > 1 << 20 || o->ntargets > 1 << 20)
        return data_fail(err, DATA_EARG, "%s: CSV: %d feature and %d target columns (classes: one target)", o->path, o->nfeatures, o->ntargets);
    char *text = NULL;
    size_t len = 0;
    int rc = slurp(o->path, &text, &len, err);
    if (rc) return rc;
    row_cells r = {0};
    int *index = NULL;
    array_field fields[2];
    memset(fields, 0, sizeof fields);
    // count the rows (lines that are not blank) to size the arrays
    int64_t rows = 0;
    for (const char *p = text; *p; p = skip_line(p)) rows += !blank_line(p);
    char *p = text;
    int64_t line = 1;
    while (*p && blank_line(p)) { p = (char *)skip_line(p); line++; }
    if (!*p) { free(text); return data_fail(err, DATA_EFORMAT, "%s: has no rows", o->path); }
    // the header (or the first row, which sets the number of columns)
    // split a copy: without a header the first row is read again as data
    const char *eol = skip_line(p);
    char *head_text = strndup(p, (size_t)(eol - p)), *hp = head_text;
    if (!head_text) { free(text); return data_fail(err, DATA_ENOMEM, "%s: out of memory reading the header", o->path); }
    rc = split_row(&hp, delim, &r, err, o->path, line);
    if (rc) { free(head_text); goto done; }
    int nf = r.n;
    row_cells head = r;
    memset(&r, 0, sizeof r);
    if (!(index = data_malloc(sizeof(int) * (size_t)(o->nfeatures + o->ntargets), "the CSV columns", err))) { rc = err->code; goto head_done; }
    if ((rc = find_columns(o, o->features, o->nfeatures, &head, nf, index, err))) goto head_done;
    if ((rc = find_columns(o, o->targets, o->ntargets, &head, nf, index + o->nfeatures, err))) goto head_done;
    if (o->header) { rows--; line++; p = (char *)eol; }
    if (rows < 1) { rc = data_fail(err, DATA_EFORMAT, "%s: has a header but no rows", o->path); goto head_done; }
    fields[0] = (array_field){.name = o->input, .dtype = DT_F32, .nchan = 1, .a = {1}, .b = {0}};
    fields[0].arr = (data_array){.dtype = DT_F32, .ndim = 2, .dims = {rows, o->nfeatures}, .numel = rows * o->nfeatures};
    int classes = o->classes > 0;
    fields[1] = (array_field){.name = o->target, .dtype = classes ? DT_I64 : DT_F32, .nchan = 1, .a = {1}, .b = {0}};
    fields[1].arr = classes ? (data_array){.dtype = DT_I64, .ndim = 1, .dims = {rows}, .numel = rows}
                            : (data_array){.dtype = DT_F32, .ndim = 2, .dims = {rows, o->ntargets}, .numel = rows * o->ntargets};
    if (!(fields[0].arr.data = data_malloc(sizeof(float) * (size_t)fields[0].arr.numel, "the CSV features", err)) ||
        !(fields[1].arr.data = data_malloc(dtype_size(fields[1].arr.dtype) * (size_t)fields[1].arr.numel, "the CSV targets", err))) {
        rc = err->code;
        goto head_done;
    }
    float *x = fields[0].arr.data;
    for (int64_t i = 0; i < rows; i++) {
        while (*p && blank_line(p)) { p = (char *)skip_line(p); line++; }
        if ((rc = split_row(&p, delim, &r, err, o->path, line))) goto head_done;
        if (r.n != nf) {
            rc = data_fail(err, DATA_EFORMAT, "%s:%lld: %d fields, but the %s has %d", o->path, (long long)line, r.n,
                           o->header ? "header" : "first row", nf);
            goto head_done;
        }
        for (int k = 0; k < o->nfeatures + o->ntargets; k++) {
            const char *cell = r.cell[index[k]];
            const char *colname = k < o->nfeatures ? o->features[k].name : o->targets[k - o->nfeatures].name;
            char colbuf[32];
            if (!colname) { snprintf(colbuf, sizeof colbuf, "%d", index[k]); colname = colbuf; }
            double v = 0;
            if (k >= o->nfeatures && classes) {
                int64_t c = -1;
                for (int64_t j = 0; o->class_names && j < o->classes; j++)
                    if (strcmp(cell, o->class_names[j]) == 0) { c = j; break; }
                if (!o->class_names && parse_number(cell, &v) && v == floor(v) && v >= 0 && v < (double)o->classes) c = (int64_t)v;
                if (c < 0) {
                    rc = o->class_names
                        ? data_fail(err, DATA_EFORMAT, "%s:%lld: column '%s': '%s' is not one of the %lld class names", o->path, (long long)line, colname, cell, (long long)o->classes)
                        : data_fail(err, DATA_EFORMAT, "%s:%lld: column '%s': '%s' is not a class index in [0, %lld)", o->path, (long long)line, colname, cell, (long long)o->classes);
                    goto head_done;
                }
                ((int64_t *)fields[1].arr.data)[i] = c;
                continue;
            }
            if (!parse_number(cell, &v)) {
                rc = data_fail(err, DATA_EFORMAT, "%s:%lld: column '%s': '%s' is not a number", o->path, (long long)line, colname, cell);
                goto head_done;
            }
            if (k < o->nfeatures) x[i * o->nfeatures + k] = (float)v;
            else ((float *)fields[1].arr.data)[i * o->ntargets + (k - o->nfeatures)] = (float)v;
        }
        line++;
    }
    free(head.cell);
    free(head_text);
    free(r.cell);
    free(index);
    free(text);
    return dataset_of_arrays(fields, 2, out, err);
head_done:
    free(head.cell);
    free(head_text);
done:
    free(r.cell);
    free(index);
    array_free(&fields[0].arr);
    array_free(&fields[1].arr);
    free(text);
    return rc;
}
