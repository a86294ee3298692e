// Image folders: torchvision's ImageFolder layout decoded once into memory (PNG through
// libpng, JPEG through libjpeg-turbo), converted, resized and normalised.  See data.h.
// Both libraries report errors by calling a function that must not return (libjpeg's
// default exits the process): ours keep the message and longjmp back to the reader,
// which turns it into one line naming the file.
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <png.h>
#include <jpeglib.h>
#include "data_internal.h"

// ----------------------------------------------------------------------------
// decoding: to interleaved 8-bit RGB (h, w, 3)

typedef struct {
    jmp_buf jmp;
    char msg[256];
} decode_error;

static void png_fail(png_structp png, png_const_charp msg) {
    decode_error *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    longjmp(e->jmp, 1);
}
static void png_warn(png_structp png, png_const_charp msg) { (void)png; (void)msg; }   // (a warning does not stop PIL either)

static int read_png(FILE *fp, const char *path, uint8_t **rgb, int *h, int *w, data_err *err) {
    decode_error e = {0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &e, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    // volatile: assigned after setjmp and read after the longjmp
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return data_fail(err, DATA_ENOMEM, "%s: out of memory in libpng", path); }
    if (setjmp(e.jmp)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return data_fail(err, DATA_EFORMAT, "%s: corrupt PNG: %s", path, e.msg);
    }
    png_init_io(png, fp);
    png_read_info(png, info);
    int ww = (int)png_get_image_width(png, info), hh = (int)png_get_image_height(png, info);
    int type = png_get_color_type(png, info);
    png_set_expand(png);          // palette -> RGB, gray below 8 bits -> 8, tRNS -> alpha
    png_set_strip_16(png);        // 16 bits -> the high byte
    png_set_strip_alpha(png);     // PIL's convert("RGB") drops alpha, composites nothing
    if (!(type & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)ww * 3) png_error(png, "unexpected row layout after conversion");
    if ((size_t)ww * (size_t)hh > ((size_t)1 << 28)) png_error(png, "image too large");
    pixels = malloc((size_t)ww * (size_t)hh * 3);
    rows = malloc(sizeof(png_bytep) * (size_t)hh);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (int y = 0; y < hh; y++) rows[y] = pixels + (size_t)y * (size_t)ww * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *rgb = pixels;
    *h = hh;
    *w = ww;
    return data_ok(err);
}

typedef struct {
    struct jpeg_error_mgr pub;
    decode_error *e;
} jpeg_errors;

static void jpeg_fail(j_common_ptr cinfo) {
    jpeg_errors *je = (jpeg_errors *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    je->pub.format_message(cinfo, buf);
    snprintf(je->e->msg, sizeof je->e->msg, "%s", buf);
    longjmp(je->e->jmp, 1);
}
// libjpeg goes on after corrupt data with a warning (level -1) and grey pixels; PIL
// refuses such a file ("image file is truncated"), and so do we
static void jpeg_message(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_fail(cinfo);
}

static int read_jpeg(FILE *fp, const char *path, uint8_t **rgb, int *h, int *w, data_err *err) {
    decode_error e = {0};
    struct jpeg_decompress_struct cinfo;
    jpeg_errors je;
    uint8_t *volatile pixels = NULL;
    cinfo.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_fail;
    je.pub.emit_message = jpeg_message;
    je.e = &e;
    if (setjmp(e.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return data_fail(err, DATA_EFORMAT, "%s: corrupt JPEG: %s", path, e.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, fp);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        snprintf(e.msg, sizeof e.msg, "CMYK JPEGs are not read (convert it to RGB)");
        longjmp(e.jmp, 1);
    }
    cinfo.out_color_space = JCS_RGB;   // gray JPEGs too: as PIL's convert("RGB"), each gray value three times
    jpeg_start_decompress(&cinfo);
    int ww = (int)cinfo.output_width, hh = (int)cinfo.output_height;
    if ((size_t)ww * (size_t)hh > ((size_t)1 << 28)) { snprintf(e.msg, sizeof e.msg, "image too large"); longjmp(e.jmp, 1); }
    pixels = malloc((size_t)ww * (size_t)hh * 3);
    if (!pixels) { snprintf(e.msg, sizeof e.msg, "out of memory"); longjmp(e.jmp, 1); }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * (size_t)ww * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *rgb = pixels;
    *h = hh;
    *w = ww;
    return data_ok(err);
}

// ----------------------------------------------------------------------------
// conversion and resizing

// torch's upsample_bilinear2d (align_corners = False) source index and weight for
// output index d of a side n_in -> n_out: src = max((d + 0.5) * n_in / n_out - 0.5, 0)
static void bilinear_tap(int d, int n_in, int n_out, int *i0, int *i1, float *l1) {
    if (n_in == n_out) { *i0 = *i1 = d; *l1 = 0; return; }   // torch copies an unchanged side
    float scale = (float)n_in / (float)n_out;
    float src = scale * ((float)d + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    int i = (int)src;
    *i0 = i;
    *i1 = i + (i < n_in - 1);
    *l1 = src - (float)i;
}

// rgb (h, w, 3) -> out (channels, oh, ow): gray as PIL's convert("L"), then bilinear with
// torch's taps and weights in float, rounded half to even (torch.round) to uint8.  Torch's
// vectorised kernel sums in another order: a value within float rounding of a .5 tie may
// round to the other level (measured: about 0.5% of values when resizing, never by more
// than one level; tests/suite_data.sh checks both bounds).
static void convert_resize(const uint8_t *rgb, int h, int w, int channels, int oh, int ow, uint8_t *out) {
    int *x0 = malloc(sizeof(int) * (size_t)ow * 2), *x1 = x0 ? x0 + ow : NULL;
    float *lx = malloc(sizeof(float) * (size_t)ow);
    uint8_t *plane = malloc((size_t)h * (size_t)w);
    if (!x0 || !lx || !plane) abort();   // (a few KB; the images themselves were allocated)
    for (int x = 0; x < ow; x++) bilinear_tap(x, w, ow, &x0[x], &x1[x], &lx[x]);
    for (int c = 0; c < channels; c++) {
        for (int64_t k = 0; k < (int64_t)h * w; k++) {
            const uint8_t *p = rgb + 3 * k;
            plane[k] = channels == 1 ? (uint8_t)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16) : p[c];
        }
        uint8_t *o = out + (size_t)c * (size_t)oh * (size_t)ow;
        for (int y = 0; y < oh; y++) {
            int y0, y1;
            float ly1;
            bilinear_tap(y, h, oh, &y0, &y1, &ly1);
            float ly0 = 1.0f - ly1;
            const uint8_t *r0 = plane + (size_t)y0 * (size_t)w, *r1 = plane + (size_t)y1 * (size_t)w;
            for (int x = 0; x < ow; x++) {
                float l1 = lx[x], l0 = 1.0f - l1;
                float v = ly0 * (l0 * (float)r0[x0[x]] + l1 * (float)r0[x1[x]]) + ly1 * (l0 * (float)r1[x0[x]] + l1 * (float)r1[x1[x]]);
                v = nearbyintf(v);
                o[(size_t)y * (size_t)ow + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    free(x0);
    free(lx);
    free(plane);
}

int image_read(const char *path, int channels, int height, int width, uint8_t **out, int *h, int *w, data_err *err) {
    *out = NULL;
    if (channels != 1 && channels != 3) return data_fail(err, DATA_EARG, "%s: %d channels (1 or 3)", path, channels);
    struct stat st;
    if (stat(path, &st) != 0) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return data_fail(err, DATA_EIO, "%s: cannot open: not a regular file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return data_fail(err, DATA_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, fp);
    rewind(fp);
    uint8_t *rgb = NULL;
    int hh = 0, ww = 0, rc;
    if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) rc = read_png(fp, path, &rgb, &hh, &ww, err);
    else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) rc = read_jpeg(fp, path, &rgb, &hh, &ww, err);
    else rc = data_fail(err, DATA_EFORMAT, "%s: not a PNG or JPEG image (by its first bytes)", path);
    fclose(fp);
    if (rc) return rc;
    if (hh < 1 || ww < 1) { free(rgb); return data_fail(err, DATA_EFORMAT, "%s: an empty image", path); }
    int oh = height > 0 ? height : hh, ow = width > 0 ? width : ww;
    uint8_t *img = malloc((size_t)channels * (size_t)oh * (size_t)ow);
    if (!img) { free(rgb); return data_fail(err, DATA_ENOMEM, "%s: out of memory", path); }
    convert_resize(rgb, hh, ww, channels, oh, ow, img);
    free(rgb);
    *out = img;
    *h = oh;
    *w = ow;
    return data_ok(err);
}

// ----------------------------------------------------------------------------
// the folder

typedef struct {
    char **name;
    int n, cap;
} name_list;

static int list_add(name_list *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        char **more = realloc(l->name, sizeof *more * (size_t)cap);
        if (!more) return -1;
        l->name = more;
        l->cap = cap;
    }
    if (!(l->name[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->name[i]);
    free(l->name);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_ext(const char *name, const char *const *exts) {
    const char *dot = strrchr(name, '.');
    for (int i = 0; dot && exts[i]; i++)
        if (strcasecmp(dot, exts[i]) == 0) return 1;
    return 0;
}

// The entries of dir that are directories (dirs = 1) or files (dirs = 0), sorted.
static int list_dir(const char *dir, int dirs, name_list *out, data_err *err) {
    DIR *d = opendir(dir);
    if (!d) return data_fail(err, DATA_EIO, "%s: cannot open the folder: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;   // ., .., hidden files (ImageFolder's find_classes skips neither, but no class is hidden)
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if ((dirs && S_ISDIR(st.st_mode)) || (!dirs && !S_ISDIR(st.st_mode))) {
            if (list_add(out, e->d_name)) { closedir(d); return data_fail(err, DATA_ENOMEM, "%s: out of memory listing the folder", dir); }
        } else if (!dirs && S_ISDIR(st.st_mode)) {
            closedir(d);
            return data_fail(err, DATA_EFORMAT, "%s: a folder inside a class folder; images sit directly in root/CLASS/", path);
        }
    }
    closedir(d);
    if (out->n) qsort(out->name, (size_t)out->n, sizeof *out->name, by_name);
    return data_ok(err);
}

int image_folder_open(const image_folder_opts *o, dataset *out, data_err *err) {
    static const char *const decoded[] = {".png", ".jpg", ".jpeg", NULL};
    static const char *const other_images[] = {".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", NULL};
    if ((o->channels != 1 && o->channels != 3) || o->height < 1 || o->width < 1)
        return data_fail(err, DATA_EARG, "%s: image folder: %d channels (1 or 3), size %dx%d", o->root, o->channels, o->height, o->width);
    name_list classes = {0}, want = {0}, files = {0};
    data_array img = {0}, lab = {0};
    char path[4096];
    int rc = list_dir(o->root, 1, &classes, err);
    if (rc) goto done;
    if (classes.n == 0) { rc = data_fail(err, DATA_EFORMAT, "%s: no class folders (ImageFolder's layout: root/CLASS/image.png)", o->root); goto done; }
    if (o->classes_from) {
        if ((rc = list_dir(o->classes_from, 1, &want, err))) goto done;
        int same = want.n == classes.n;
        for (int c = 0; same && c < classes.n; c++) same = strcmp(want.name[c], classes.name[c]) == 0;
        if (!same) {
            rc = data_fail(err, DATA_EMISMATCH, "%s: its %d class folders are not those of %s (%d): the labels would differ", o->root, classes.n,
                           o->classes_from, want.n);
            goto done;
        }
    }
    if (o->max_classes > 0 && classes.n > o->max_classes) {
        rc = data_fail(err, DATA_EMISMATCH, "%s: %d class folders, but the model was generated for %lld classes", o->root, classes.n, (long long)o->max_classes);
        goto done;
    }
    // every class's image files, with their label
    int64_t *labels = NULL;
    int64_t nlabels = 0, cap = 0;
    for (int c = 0; c < classes.n; c++) {
        name_list names = {0};
        snprintf(path, sizeof path, "%s/%s", o->root, classes.name[c]);
        if ((rc = list_dir(path, 0, &names, err))) { free(labels); goto done; }
        for (int k = 0; k < names.n; k++) {
            snprintf(path, sizeof path, "%s/%s/%s", o->root, classes.name[c], names.name[k]);
            if (has_ext(names.name[k], other_images)) {
                rc = data_fail(err, DATA_EFORMAT, "%s: only PNG and JPEG images are read", path);
            } else if (has_ext(names.name[k], decoded)) {
                if (nlabels == cap) {
                    cap = cap ? cap * 2 : 256;
                    int64_t *more = realloc(labels, sizeof *labels * (size_t)cap);
                    if (!more) rc = data_fail(err, DATA_ENOMEM, "%s: out of memory listing the images", o->root);
                    else labels = more;
                }
                if (!rc && list_add(&files, path)) rc = data_fail(err, DATA_ENOMEM, "%s: out of memory listing the images", o->root);
                if (!rc) labels[nlabels++] = c;
            }
            if (rc) break;
        }
        list_free(&names);
        if (rc) { free(labels); goto done; }
    }
    if (files.n == 0) { free(labels); rc = data_fail(err, DATA_EFORMAT, "%s: no PNG or JPEG images in its class folders", o->root); goto done; }
    int64_t N = files.n, per = (int64_t)o->channels * o->height * o->width;
    img = (data_array){.dtype = DT_U8, .ndim = 4, .dims = {N, o->channels, o->height, o->width}, .numel = N * per};
    lab = (data_array){.dtype = DT_I64, .ndim = 1, .dims = {N}, .numel = N, .data = labels};
    if (!(img.data = data_malloc((size_t)img.numel, "the images", err))) { rc = err->code; goto done; }
    for (int64_t i = 0; i < N; i++) {
        uint8_t *one;
        int h, w;
        if ((rc = image_read(files.name[i], o->channels, o->height, o->width, &one, &h, &w, err))) goto done;
        memcpy((uint8_t *)img.data + i * per, one, (size_t)per);
        free(one);
    }
    array_field fields[2] = {
        {.name = o->input, .dtype = DT_F32, .arr = img, .nchan = o->channels},
        {.name = o->target, .dtype = DT_I64, .arr = lab, .nchan = 1, .a = {1}, .b = {0}},
    };
    for (int c = 0; c < o->channels; c++) {   // (x / 255 - mean) / std
        double sd = o->std[c] != 0 ? o->std[c] : 1.0;
        fields[0].a[c] = 1.0 / (255.0 * sd);
        fields[0].b[c] = -o->mean[c] / sd;
    }
    if (o->channels == 1) { fields[0].nchan = 1; }   // one channel: the scalar affine
    memset(&img, 0, sizeof img);
    memset(&lab, 0, sizeof lab);
    rc = dataset_of_arrays(fields, 2, out, err);
done:
    array_free(&img);
    array_free(&lab);
    list_free(&classes);
    list_free(&want);
    list_free(&files);
    return rc;
}
