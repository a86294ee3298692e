// TensorBoard event files. See tblog.h.
#include "tblog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int errf(tblog *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, TBLOG_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

// ---------------------------------------------------------------------------------
// CRC-32C, reflected polynomial 0x82F63B78, one table lookup per byte

static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t tblog_crc32c(const void *data, size_t n) {
    if (!crc_table[1]) crc_init();
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t tblog_masked_crc(const void *data, size_t n) {
    uint32_t c = tblog_crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

// ---------------------------------------------------------------------------------
// protobuf wire format: a field's key is (number << 3) | wire type

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

static void pb_varint(sbuf *b, uint64_t v) {
    char buf[10];
    int n = 0;
    do { buf[n++] = (char)((v & 0x7F) | (v > 0x7F ? 0x80 : 0)); v >>= 7; } while (v);
    sb_put(b, buf, (size_t)n);
}
static void pb_key(sbuf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }
static void pb_le(sbuf *b, uint64_t v, int bytes) {
    char buf[8];
    for (int i = 0; i < bytes; i++) buf[i] = (char)(v >> (8 * i));
    sb_put(b, buf, (size_t)bytes);
}
static void pb_double(sbuf *b, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_key(b, field, WIRE_I64);
    pb_le(b, u, 8);
}
static void pb_bytes(sbuf *b, int field, const void *p, size_t n) {
    pb_key(b, field, WIRE_LEN);
    pb_varint(b, n);
    sb_put(b, p, n);
}
// A nested message: its bytes are built first, then written with their length.
static void pb_message(sbuf *b, int field, sbuf *msg) {
    pb_bytes(b, field, msg->p ? msg->p : "", msg->n);
    if (msg->oom) b->oom = 1;
    free(msg->p);
    *msg = (sbuf){0};
}

// The message numbers, from tensorflow/core/util/event.proto, framework/summary.proto
// and framework/tensor.proto.
enum { EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5 };
enum { SUMMARY_VALUE = 1 };
enum { VALUE_TAG = 1, VALUE_TENSOR = 8, VALUE_METADATA = 9 };
enum { METADATA_PLUGIN_DATA = 1, PLUGIN_NAME = 1 };
enum { TENSOR_DTYPE = 1, TENSOR_SHAPE = 2, TENSOR_DOUBLE_VAL = 6, DT_DOUBLE = 2 };

// One TFRecord around an Event's bytes.
static void frame(sbuf *out, const sbuf *event) {
    char len[8];
    uint64_t n = event->n;
    for (int i = 0; i < 8; i++) len[i] = (char)(n >> (8 * i));
    sb_put(out, len, 8);
    sbuf crc = {0};
    pb_le(&crc, tblog_masked_crc(len, 8), 4);
    pb_le(&crc, tblog_masked_crc(event->p ? event->p : "", event->n), 4);
    if (crc.oom) { out->oom = 1; free(crc.p); return; }
    sb_put(out, crc.p, 4);
    sb_put(out, event->p ? event->p : "", event->n);
    sb_put(out, crc.p + 4, 4);
    free(crc.p);
}

static int add_event(tblog *t, sbuf *event) {
    int oom = event->oom;
    if (!oom) frame(&t->pending, event);
    free(event->p);
    *event = (sbuf){0};
    if (oom || t->pending.oom) return errf(t, "%s: out of memory", t->path);
    return 0;
}

// ---------------------------------------------------------------------------------

static int mkdir_p(tblog *t, const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return errf(t, "%s: path too long", path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return errf(t, "%s: mkdir failed: %s", buf, strerror(errno));
            if (!c) break;
            *p = c;
        }
    return 0;
}

int tblog_open(tblog *t, const char *dir, double wall_time) {
    memset(t, 0, sizeof *t);
    if (mkdir_p(t, dir)) return -1;
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    size_t n = strlen(dir) + strlen(host) + 96;
    if (!(t->path = malloc(n))) return errf(t, "%s: out of memory", dir);
    snprintf(t->path, n, "%s/events.out.tfevents.%lld.%s.%ld.0", dir, (long long)wall_time, host, (long)getpid());
    FILE *f = fopen(t->path, "wbx");   // never another writer's file
    if (!f) return errf(t, "%s: fopen failed: %s", t->path, strerror(errno));
    fclose(f);
    sbuf ev = {0};
    pb_double(&ev, EVENT_WALL_TIME, wall_time);
    pb_bytes(&ev, EVENT_FILE_VERSION, "brain.Event:2", 13);
    if (add_event(t, &ev)) return -1;
    return tblog_flush(t);
}

// ---------------------------------------------------------------------------------
// hyperparameters: the HParams plugin's messages (tensorboard/plugins/hparams/api.proto,
// plugin_data.proto; google/protobuf/struct.proto's Value)
enum { HP_DATA_EXPERIMENT = 2, HP_DATA_SESSION_START = 3, HP_DATA_SESSION_END = 4 };   // HParamsPluginData
enum { SSI_HPARAMS = 1, SSI_START_TIME = 5 };                                        // SessionStartInfo
enum { SEI_STATUS = 1, SEI_END_TIME = 2 };                                           // SessionEndInfo
enum { EXP_TIME_CREATED = 3, EXP_HPARAM_INFOS = 4, EXP_METRIC_INFOS = 5 };           // Experiment
enum { HPI_NAME = 1, HPI_TYPE = 4, DATA_TYPE_STRING = 1, DATA_TYPE_FLOAT64 = 3 };    // HParamInfo
enum { MI_NAME = 1, MN_TAG = 2 };                                                    // MetricInfo, MetricName
enum { MAP_KEY = 1, MAP_VALUE = 2, PBV_NUMBER = 2, PBV_STRING = 3 };                 // map entry, Value
enum { PLUGIN_CONTENT = 2 };

static int hparam(tblog *t, const char *key, const char *str, double num) {
    sbuf value = {0}, entry = {0}, info = {0};
    if (str) pb_bytes(&value, PBV_STRING, str, strlen(str));
    else pb_double(&value, PBV_NUMBER, num);
    pb_bytes(&entry, MAP_KEY, key, strlen(key));
    pb_message(&entry, MAP_VALUE, &value);
    pb_message(&t->hp_values, SSI_HPARAMS, &entry);
    pb_bytes(&info, HPI_NAME, key, strlen(key));
    pb_key(&info, HPI_TYPE, WIRE_VARINT);
    pb_varint(&info, str ? DATA_TYPE_STRING : DATA_TYPE_FLOAT64);
    pb_message(&t->hp_infos, EXP_HPARAM_INFOS, &info);
    t->hp_count++;
    if (t->hp_values.oom || t->hp_infos.oom) return errf(t, "%s: out of memory", t->path ? t->path : "tblog");
    return 0;
}
int tblog_hparam_str(tblog *t, const char *key, const char *value) { return hparam(t, key, value, 0); }
int tblog_hparam_f64(tblog *t, const char *key, double value) { return hparam(t, key, NULL, value); }

// One event whose summary is the HParams plugin's `tag` with `data` (HParamsPluginData's
// bytes) as its metadata's content, no value (as TensorBoard's own hparams() writes it)
static int hparams_event(tblog *t, double wall_time, const char *tag, sbuf *data) {
    sbuf plugin = {0}, meta = {0}, value = {0}, summary = {0}, ev = {0};
    pb_bytes(&plugin, PLUGIN_NAME, "hparams", 7);
    pb_bytes(&plugin, PLUGIN_CONTENT, data->p ? data->p : "", data->n);
    if (data->oom) plugin.oom = 1;
    free(data->p);
    *data = (sbuf){0};
    pb_bytes(&value, VALUE_TAG, tag, strlen(tag));
    pb_message(&meta, METADATA_PLUGIN_DATA, &plugin);
    pb_message(&value, VALUE_METADATA, &meta);
    pb_message(&summary, SUMMARY_VALUE, &value);
    pb_double(&ev, EVENT_WALL_TIME, wall_time);
    pb_message(&ev, EVENT_SUMMARY, &summary);
    return add_event(t, &ev);
}

// The session_start_info, once, before the first scalars
static int start_session(tblog *t, double wall_time) {
    if (t->hp_written || t->hp_count == 0) return 0;
    t->hp_written = 1;
    sbuf ssi = {0}, data = {0};
    sb_put(&ssi, t->hp_values.p ? t->hp_values.p : "", t->hp_values.n);
    pb_double(&ssi, SSI_START_TIME, wall_time);
    pb_message(&data, HP_DATA_SESSION_START, &ssi);
    return hparams_event(t, wall_time, "_hparams_/session_start_info", &data);
}

// the scalar tags logged so far (the experiment's metrics)
static int remember_tag(tblog *t, const char *tag) {
    for (int i = 0; i < t->ntags; i++) if (!strcmp(t->tags[i], tag)) return 0;
    if (t->ntags == t->cap_tags) {
        int cap = t->cap_tags ? 2 * t->cap_tags : 16;
        char **q = realloc(t->tags, sizeof *q * (size_t)cap);
        if (!q) return errf(t, "%s: out of memory", t->path);
        t->tags = q; t->cap_tags = cap;
    }
    if (!(t->tags[t->ntags] = strdup(tag))) return errf(t, "%s: out of memory", t->path);
    t->ntags++;
    return 0;
}

int tblog_end_session(tblog *t, double wall_time, int status) {
    if (t->hp_count == 0) return 0;
    if (start_session(t, wall_time)) return -1;
    sbuf exp = {0}, data = {0}, sei = {0};
    pb_double(&exp, EXP_TIME_CREATED, wall_time);
    sb_put(&exp, t->hp_infos.p ? t->hp_infos.p : "", t->hp_infos.n);
    for (int i = 0; i < t->ntags; i++) {
        sbuf name = {0}, info = {0};
        pb_bytes(&name, MN_TAG, t->tags[i], strlen(t->tags[i]));
        pb_message(&info, MI_NAME, &name);
        pb_message(&exp, EXP_METRIC_INFOS, &info);
    }
    pb_message(&data, HP_DATA_EXPERIMENT, &exp);
    if (hparams_event(t, wall_time, "_hparams_/experiment", &data)) return -1;
    pb_key(&sei, SEI_STATUS, WIRE_VARINT);
    pb_varint(&sei, (uint64_t)status);
    pb_double(&sei, SEI_END_TIME, wall_time);
    pb_message(&data, HP_DATA_SESSION_END, &sei);
    return hparams_event(t, wall_time, "_hparams_/session_end_info", &data);
}

int tblog_scalars(tblog *t, int64_t step, double wall_time, const char *const *tags, const double *values, int n) {
    if (start_session(t, wall_time)) return -1;
    for (int i = 0; i < n; i++) if (remember_tag(t, tags[i])) return -1;
    sbuf summary = {0}, value = {0}, meta = {0}, plugin = {0}, tensor = {0}, ev = {0};
    for (int i = 0; i < n; i++) {
        pb_bytes(&value, VALUE_TAG, tags[i], strlen(tags[i]));
        pb_key(&tensor, TENSOR_DTYPE, WIRE_VARINT);
        pb_varint(&tensor, DT_DOUBLE);
        pb_bytes(&tensor, TENSOR_SHAPE, "", 0);   // no dims: a scalar
        uint64_t u;
        memcpy(&u, &values[i], 8);
        pb_key(&tensor, TENSOR_DOUBLE_VAL, WIRE_LEN);   // packed repeated double
        pb_varint(&tensor, 8);
        pb_le(&tensor, u, 8);
        pb_message(&value, VALUE_TENSOR, &tensor);
        pb_bytes(&plugin, PLUGIN_NAME, "scalars", 7);
        pb_message(&meta, METADATA_PLUGIN_DATA, &plugin);
        pb_message(&value, VALUE_METADATA, &meta);
        pb_message(&summary, SUMMARY_VALUE, &value);
    }
    pb_double(&ev, EVENT_WALL_TIME, wall_time);
    pb_key(&ev, EVENT_STEP, WIRE_VARINT);
    pb_varint(&ev, (uint64_t)step);
    pb_message(&ev, EVENT_SUMMARY, &summary);
    return add_event(t, &ev);
}

int tblog_flush(tblog *t) {
    if (!t->path) return errf(t, "tblog_flush: the log is not open");
    if (t->pending.n == 0) return 0;
    FILE *f = fopen(t->path, "ab");
    if (!f) return errf(t, "%s: fopen failed: %s", t->path, strerror(errno));
    size_t k = fwrite(t->pending.p, 1, t->pending.n, f);
    if (fclose(f) != 0 || k != t->pending.n) return errf(t, "%s: write failed: %s", t->path, strerror(errno));
    t->pending.n = 0;
    return 0;
}

int tblog_close(tblog *t) {
    int rc = t->path ? tblog_flush(t) : 0;
    free(t->path);
    free(t->pending.p);
    free(t->hp_values.p);
    free(t->hp_infos.p);
    for (int i = 0; i < t->ntags; i++) free(t->tags[i]);
    free(t->tags);
    char err[TBLOG_ERR_LEN];
    memcpy(err, t->err, sizeof err);
    memset(t, 0, sizeof *t);
    memcpy(t->err, err, sizeof err);
    return rc;
}
