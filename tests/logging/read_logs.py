#!/usr/bin/env python3
"""Reads a run's logs back without loom's code, and checks them against each other.

  read_logs.py tb RUN_TB_DIR METRICS_CSV      every TensorBoard scalar == metrics.csv
  read_logs.py tbhparams RUN_TB_DIR HPARAMS_YAML   the HParams plugin's summaries == hparams.yaml
  read_logs.py mlflow STORE RUN_ID METRICS_CSV [STATUS]   the mlruns/ layout, every metric

The TensorBoard reader is written from the TFRecord format (a little-endian uint64
length, its masked CRC-32C, the data, the data's masked CRC-32C) and protobuf's wire
format with the field numbers of event.proto, summary.proto and tensor.proto; every CRC
is checked and every scalar decoded. The MLflow check follows MLflow's FileStore layout
(mlruns/<exp>/meta.yaml, <exp>/<run>/{meta.yaml,params,tags,metrics,artifacts}).
Prints "ok" or the first problem.
"""
import csv, os, re, struct, sys

import yaml


# ---- CRC-32C (Castagnoli), bit by bit from its definition (reflected 0x82F63B78)
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283   # the check value of CRC-32C


# ---- protobuf wire format: a message as {field: [values]} (bytes for length-delimited)
def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]; i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def message(buf):
    fields, i = {}, 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v = buf[i:i + 8]; i += 8
        elif wire == 2:
            n, i = varint(buf, i)
            v = buf[i:i + n]; i += n
            if i > len(buf):
                raise ValueError("a length-delimited field runs past its message")
        elif wire == 5:
            v = buf[i:i + 4]; i += 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append((wire, v))
    return fields


def records(path):
    data = open(path, "rb").read()
    i, out = 0, []
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError(f"{path}: a record header cut short at byte {i}")
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
        if hcrc != masked(header):
            raise ValueError(f"{path}: length CRC wrong at byte {i}")
        body = data[i + 12:i + 12 + n]
        (dcrc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if len(body) != n or dcrc != masked(body):
            raise ValueError(f"{path}: data CRC wrong at byte {i}")
        out.append(body)
        i += 16 + n
    return out


def scalars(path):
    """[(step, tag, value)] of an events file, and its file_version."""
    evs = [message(r) for r in records(path)]
    version = evs[0].get(3, [(2, b"")])[0][1].decode()
    out = []
    for ev in evs[1:]:
        (wall_wire, wall), = ev[1]
        assert wall_wire == 1 and struct.unpack("<d", wall)[0] > 1e9, "wall_time is seconds since 1970"
        step = ev.get(2, [(0, 0)])[0][1]
        for _, summary in ev.get(5, []):
            for _, value in message(summary).get(1, []):
                v = message(value)
                tag = v[1][0][1].decode()
                if tag.startswith("_hparams_/"):   # the HParams plugin's (hparams() below)
                    continue
                if 2 in v:   # simple_value: a float
                    x = struct.unpack("<f", v[2][0][1])[0]
                else:        # tensor: dtype 2 (DT_DOUBLE), no dims, one packed double_val
                    t = message(v[8][0][1])
                    assert t[1][0][1] == 2, f"{tag}: dtype {t[1][0][1]}"
                    assert not message(t.get(2, [(2, b"")])[0][1]), f"{tag}: not a scalar shape"
                    (x,) = struct.unpack("<d", t[6][0][1])
                    plugin = message(message(v[9][0][1])[1][0][1])[1][0][1].decode()
                    assert plugin == "scalars", f"{tag}: plugin {plugin}"
                out.append((step, tag, x))
    return version, out


def hparams(path):
    """The HParams plugin's summaries of an events file (tensorboard/plugins/hparams/
    plugin_data.proto, api.proto; google/protobuf/struct.proto's Value), as
    [(event index, tag, HParamsPluginData fields)], and the index of the first scalar event."""
    out, first_scalar = [], None
    for k, r in enumerate(records(path)):
        ev = message(r)
        for _, summary in ev.get(5, []):
            for _, value in message(summary).get(1, []):
                v = message(value)
                tag = v[1][0][1].decode()
                if not tag.startswith("_hparams_/"):
                    first_scalar = k if first_scalar is None else first_scalar
                    continue
                assert 8 not in v and 2 not in v, f"{tag}: carries a value"
                plugin = message(message(v[9][0][1])[1][0][1])
                assert plugin[1][0][1] == b"hparams", f"{tag}: plugin {plugin[1][0][1]!r}"
                data = message(plugin[2][0][1]) if 2 in plugin else {}
                assert data.get(1, [(0, 0)])[0][1] == 0, f"{tag}: HParamsPluginData version is not 0"
                out.append((k, tag, data))
    return out, first_scalar


def check_tb_hparams(tb_dir, yaml_path):
    """The session_start_info holds every hyperparameter of hparams.yaml, before the first
    scalar; the experiment names them (with their types) and every scalar tag as a metric;
    the session_end_info says STATUS_SUCCESS."""
    files = [f for f in os.listdir(tb_dir) if f.startswith("events.out.tfevents.")]
    path = os.path.join(tb_dir, files[0])
    got, first_scalar = hparams(path)
    by_tag = {tag: (k, data) for k, tag, data in got}
    want = yaml.safe_load(open(yaml_path))
    if set(by_tag) != {"_hparams_/session_start_info", "_hparams_/experiment", "_hparams_/session_end_info"}:
        return f"HParams summaries {sorted(by_tag)}"
    k, data = by_tag["_hparams_/session_start_info"]
    if first_scalar is not None and k > first_scalar:
        return "session_start_info comes after the first scalar"
    ssi = message(data[3][0][1])
    values = {}
    for _, entry in ssi.get(1, []):
        e = message(entry)
        val = message(e[2][0][1])
        values[e[1][0][1].decode()] = struct.unpack("<d", val[2][0][1])[0] if 2 in val else val[3][0][1].decode()
    if set(values) != set(want):
        return f"hparams {sorted(values)}, hparams.yaml {sorted(want)}"
    for key, w in want.items():
        g = values[key]
        if (isinstance(w, str) and g != w) or (not isinstance(w, str) and float(g) != float(w)):
            return f"hparam {key}: TensorBoard {g!r}, hparams.yaml {w!r}"
    exp = message(by_tag["_hparams_/experiment"][1][2][0][1])
    infos = {message(i)[1][0][1].decode(): message(i)[4][0][1] for _, i in exp.get(4, [])}
    types = {key: 1 if isinstance(w, str) else 3 for key, w in want.items()}   # DATA_TYPE_STRING, DATA_TYPE_FLOAT64
    if infos != types:
        return f"experiment's hparam_infos {infos}, expected {types}"
    metrics = {message(message(i)[1][0][1])[2][0][1].decode() for _, i in exp.get(5, [])}
    tags = {tag for _, tag, _ in scalars(path)[1]}
    if metrics != tags:
        return f"experiment's metrics {sorted(metrics)}, scalar tags {sorted(tags)}"
    sei = message(by_tag["_hparams_/session_end_info"][1][4][0][1])
    if sei[1][0][1] != 1:
        return f"session_end_info status {sei[1][0][1]}, not STATUS_SUCCESS"
    return f"ok {len(values)}"


def csv_values(path):
    """[(step, key, value)] of every filled metric cell of metrics.csv (epoch aside)."""
    out = []
    for row in csv.DictReader(open(path, newline="")):
        for k, v in row.items():
            if k not in ("step", "epoch") and v != "":
                out.append((int(row["step"]), k, float(v)))
    return out


def check_tb(tb_dir, csv_path):
    files = [f for f in os.listdir(tb_dir) if f.startswith("events.out.tfevents.")]
    if len(files) != 1:
        return f"{tb_dir}: {len(files)} events files"
    version, got = scalars(os.path.join(tb_dir, files[0]))
    if version != "brain.Event:2":
        return f"file_version {version!r}"
    want = csv_values(csv_path)
    if sorted(got) != sorted(want):
        extra = sorted(set(got) - set(want))[:3]
        missing = sorted(set(want) - set(got))[:3]
        return f"TensorBoard and metrics.csv differ: {len(got)} vs {len(want)} values; only in TB {extra}; only in CSV {missing}"
    return f"ok {len(got)}"


def check_mlflow(store, run_id, csv_path, status):
    exps = [d for d in os.listdir(store) if d.isdigit()]
    if "0" not in exps:
        return "no Default experiment 0"
    run_exp = [e for e in exps if os.path.isdir(os.path.join(store, e, run_id))]
    if len(run_exp) != 1:
        return f"run {run_id} in {len(run_exp)} experiments"
    exp = run_exp[0]
    for e in exps:
        m = yaml.safe_load(open(os.path.join(store, e, "meta.yaml")))
        keys = {"artifact_location", "creation_time", "experiment_id", "last_update_time", "lifecycle_stage", "name"}
        if set(m) != keys:
            return f"experiment {e} meta.yaml keys {sorted(m)}"
        if m["experiment_id"] != e or not isinstance(m["experiment_id"], str) or m["lifecycle_stage"] != "active":
            return f"experiment {e} meta.yaml: {m}"
        if m["artifact_location"] != "file://" + os.path.realpath(os.path.join(store, e)):
            return f"experiment {e} artifact_location {m['artifact_location']}"
    names = [yaml.safe_load(open(os.path.join(store, e, "meta.yaml")))["name"] for e in exps]
    if len(set(names)) != len(names):
        return f"experiment names repeat: {names}"
    run = os.path.join(store, exp, run_id)
    meta = yaml.safe_load(open(os.path.join(run, "meta.yaml")))
    keys = {"artifact_uri", "end_time", "entry_point_name", "experiment_id", "lifecycle_stage", "run_id", "run_name",
            "run_uuid", "source_name", "source_type", "source_version", "start_time", "status", "tags", "user_id"}
    if set(meta) != keys:
        return f"run meta.yaml keys {sorted(meta)}"
    if not re.fullmatch(r"[0-9a-f]{32}", run_id) or meta["run_id"] != run_id or meta["run_uuid"] != run_id:
        return f"run id {meta['run_id']} in {run_id}"
    if meta["experiment_id"] != exp or meta["artifact_uri"] != "file://" + os.path.realpath(run) + "/artifacts":
        return f"run meta.yaml: {meta}"
    if meta["status"] != int(status):
        return f"status {meta['status']}, expected {status}"
    if int(status) == 1:
        if meta["end_time"] is not None:
            return f"a running run has end_time {meta['end_time']}"
    elif not (isinstance(meta["end_time"], int) and meta["end_time"] >= meta["start_time"] > 1e12):
        return f"start {meta['start_time']} end {meta['end_time']}"
    def tree(sub):
        out = {}
        base = os.path.join(run, sub)
        for root, _, files in os.walk(base):
            for f in files:
                out[os.path.relpath(os.path.join(root, f), base)] = open(os.path.join(root, f)).read()
        return out
    tags = tree("tags")
    for t in ("mlflow.runName", "mlflow.source.name", "loom.spec_hash", "loom.precision"):
        if t not in tags:
            return f"no tag {t}"
    if tags["mlflow.runName"] != meta["run_name"]:
        return f"mlflow.runName {tags['mlflow.runName']} vs run_name {meta['run_name']}"
    hp = yaml.safe_load(open(os.path.join(os.path.dirname(csv_path), "hparams.yaml")))
    params = tree("params")
    if params != {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in hp.items()}:
        return f"params {params} vs hparams.yaml {hp}"
    got = []
    for key, text in tree("metrics").items():
        if text and not text.endswith("\n"):
            return f"metric {key}: last line unterminated"
        for line in text.splitlines():
            ts, value, step = line.split(" ")
            if int(ts) < meta["start_time"] - 1000:
                return f"metric {key}: timestamp {ts} before the run's start"
            if key != "epoch":
                got.append((int(step), key, float(value)))
    want = csv_values(csv_path)
    if sorted(got) != sorted(want):
        extra = sorted(set(got) - set(want))[:3]
        missing = sorted(set(want) - set(got))[:3]
        return f"MLflow and metrics.csv differ: {len(got)} vs {len(want)}; only in MLflow {extra}; only in CSV {missing}"
    return f"ok {len(got)}"


if __name__ == "__main__":
    try:
        if sys.argv[1] == "tb":
            print(check_tb(sys.argv[2], sys.argv[3]))
        elif sys.argv[1] == "tbhparams":
            print(check_tb_hparams(sys.argv[2], sys.argv[3]))
        else:
            print(check_mlflow(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else 3))
    except Exception as e:   # a malformed file: say which and why
        print(f"{type(e).__name__}: {e}")
