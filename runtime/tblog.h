#ifndef LOOM_TBLOG_H
#define LOOM_TBLOG_H
// Scalars in TensorBoard's event-file format, so that `tensorboard --logdir` opens loom
// runs as they are:
//
//   dir/events.out.tfevents.<seconds>.<host>.<pid>.0
//
// The file is a TFRecord stream (each record: its length as a little-endian uint64, the
// length's masked CRC-32C, the data, the data's masked CRC-32C) of Event protobufs:
// the first carries file_version "brain.Event:2", each later one a wall time, a step
// and a Summary whose values are scalars (tag, a float64 TensorProto of shape [] and
// the "scalars" plugin's metadata: the value is kept as the double metrics.csv holds).
// No C library for this ships in Debian: the protobuf wire format needed here (varints,
// 64-bit, 32-bit and length-delimited fields) is small and written by hand.
//
// Records are kept in memory and written by tblog_flush (the caller decides when) and
// tblog_close; a record is only ever appended whole.
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

#define TBLOG_ERR_LEN 512

typedef struct {
    char *path;    // the events file
    sbuf pending;  // framed records not yet written
    // hyperparameters for the HParams plugin: the session's values (SessionStartInfo's
    // map entries) and their HParamInfos, written as one session_start_info event
    // before the first scalars; the scalar tags seen, the experiment's metrics
    sbuf hp_values, hp_infos;
    int hp_count, hp_written;
    char **tags;
    int ntags, cap_tags;
    char err[TBLOG_ERR_LEN];
} tblog;

// Creates dir (and its parents) and the events file in it, with the file_version event.
int tblog_open(tblog *t, const char *dir, double wall_time);
// One Event at `step` holding n scalars.
int tblog_scalars(tblog *t, int64_t step, double wall_time, const char *const *tags, const double *values, int n);
// Hyperparameters (TensorBoard's HPARAMS tab): a string or a number each, recorded
// before the first scalars (TensorBoard's HParams plugin, api.proto and plugin_data.proto:
// a "_hparams_/session_start_info" summary).
int tblog_hparam_str(tblog *t, const char *key, const char *value);
int tblog_hparam_f64(tblog *t, const char *key, double value);
// The session's end, as the HParams plugin reads it: "_hparams_/experiment" (the
// hyperparameters and every scalar tag logged, as its metrics) and
// "_hparams_/session_end_info" with `status` (TBLOG_STATUS_*).  Only with hyperparameters.
enum { TBLOG_STATUS_SUCCESS = 1, TBLOG_STATUS_FAILURE = 2 };
int tblog_end_session(tblog *t, double wall_time, int status);
// Appends the pending records to the file.
int tblog_flush(tblog *t);
// Flushes and frees. Returns the flush's result.
int tblog_close(tblog *t);

// CRC-32C (Castagnoli) and TFRecord's masking of it.
uint32_t tblog_crc32c(const void *data, size_t n);
uint32_t tblog_masked_crc(const void *data, size_t n);

#endif
