#!/usr/bin/env python3
"""read_db.py: an MLflow SQLite store written by a loom program, read back with
python3's sqlite3 module (tests/suite_mlflow_sql.sh).  Prints "ok ..." or what differs.

  read_db.py run DB EXPERIMENT CSV STATUS   the newest run of EXPERIMENT: MLflow's tables
      and revision, the experiment's and run's rows (ids, status, times, artifact URIs),
      every metric row equal to metrics.csv's cell at the same step, each key's
      latest_metrics row the metrics row with the largest (step, timestamp, value)
  read_db.py same DB RUN_A RUN_B   two runs' metrics (key, step, value), throughput aside
  read_db.py status DB RUN          the run's status and whether it has an end time
"""
import csv, math, os, re, sqlite3, sys

TABLES = {"alembic_version", "experiments", "experiment_tags", "runs", "params", "tags", "metrics", "latest_metrics",
          "registered_models", "model_versions", "registered_model_tags", "model_version_tags", "registered_model_aliases",
          "datasets", "inputs", "input_tags", "trace_info", "trace_tags", "trace_request_metadata"}
HEAD = "0584bdc529eb"   # MLflow 2.x's last alembic revision

def fail(msg):
    print(msg)
    sys.exit(0)

def connect(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db

def metric_rows(db, run, skip=("train/throughput",)):
    """(key, step, value) of every row, each once; `epoch` once per step (a step row and the
    epoch's row both carry it: one row, or two when logged in different milliseconds)"""
    rows = [(r["key"], r["step"], None if r["is_nan"] else r["value"])
            for r in db.execute("SELECT * FROM metrics WHERE run_uuid = ?", (run,)) if r["key"] not in skip]
    return sorted(set(r for r in rows if r[0] == "epoch")) + sorted(r for r in rows if r[0] != "epoch")

def check_run(db_path, experiment, csv_path, status):
    db = connect(db_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables != TABLES:
        fail(f"tables: missing {sorted(TABLES - tables)}, extra {sorted(tables - TABLES)}")
    rev = [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]
    if rev != [HEAD]:
        fail(f"alembic_version {rev}, want [{HEAD}]")
    exps = {r["name"]: r for r in db.execute("SELECT * FROM experiments")}
    if "Default" not in exps or exps["Default"]["experiment_id"] != 0 or experiment not in exps:
        fail(f"experiments {sorted((r['experiment_id'], n) for n, r in exps.items())}")
    e = exps[experiment]
    root = os.path.dirname(db_path) + "/mlruns"
    if e["artifact_location"] != f"file://{os.path.realpath(root)}/{e['experiment_id']}" or e["lifecycle_stage"] != "active":
        fail(f"experiment {dict(e)}")
    runs = db.execute("SELECT * FROM runs WHERE experiment_id = ? ORDER BY start_time DESC", (e["experiment_id"],)).fetchall()
    if not runs:
        fail("no run")
    r = runs[0]
    rid = r["run_uuid"]
    if not re.fullmatch(r"[0-9a-f]{32}", rid) or r["status"] != status or r["lifecycle_stage"] != "active" or r["source_type"] != "LOCAL":
        fail(f"run {dict(r)}")
    if status != "RUNNING" and not (r["end_time"] and r["end_time"] >= r["start_time"] > 1.6e12):
        fail(f"run times {r['start_time']} .. {r['end_time']}")
    art = f"{os.path.realpath(root)}/{e['experiment_id']}/{rid}/artifacts"
    if r["artifact_uri"] != "file://" + art or not os.path.isdir(art):
        fail(f"artifact_uri {r['artifact_uri']} (want file://{art}, a directory)")
    tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (rid,)).fetchall())
    if tags.get("mlflow.runName") != r["name"]:
        fail(f"mlflow.runName {tags.get('mlflow.runName')} vs name {r['name']}")
    # every metric row against metrics.csv's cell (CSV's repr() round-trips the double)
    want = {}
    for row in csv.DictReader(open(csv_path)):
        for k, v in row.items():
            if k not in ("step",) and v != "":
                want.setdefault((k, int(row["step"])), []).append(float(v))
    got = {}
    for m in db.execute("SELECT * FROM metrics WHERE run_uuid = ?", (rid,)):
        got.setdefault((m["key"], m["step"]), []).append(math.nan if m["is_nan"] else m["value"])
    # as sets: a step row and the epoch's row both carry `epoch`, one metrics row when
    # logged in the same millisecond (the row is metrics' primary key)
    same = lambda a, b: set(map(repr, a)) == set(map(repr, b))
    if set(got) != set(want) or any(not same(got[k], want[k]) for k in want):
        bad = [k for k in sorted(set(got) | set(want)) if not same(got.get(k, []), want.get(k, []))][:3]
        fail(f"metrics differ from metrics.csv at {[(k, got.get(k), want.get(k)) for k in bad]}")
    latest = {m["key"]: (m["step"], m["timestamp"], m["value"]) for m in db.execute("SELECT * FROM latest_metrics WHERE run_uuid = ?", (rid,))}
    best = {}
    for m in db.execute("SELECT * FROM metrics WHERE run_uuid = ?", (rid,)):
        t = (m["step"], m["timestamp"], m["value"])
        if m["key"] not in best or t > best[m["key"]]:
            best[m["key"]] = t
    if latest != best:
        fail(f"latest_metrics {sorted(latest.items())[:2]} vs {sorted(best.items())[:2]}")
    print(f"ok {rid} {sum(len(v) for v in got.values())} metric rows, {len(latest)} keys")

def same_runs(db_path, a, b):
    db = connect(db_path)
    ra, rb = metric_rows(db, a), metric_rows(db, b)
    if not ra or ra != rb:
        fail(f"{len(ra)} vs {len(rb)} rows; first differing: {next((x, y) for x, y in zip(ra + [None], rb + [None]) if x != y)}")
    print(f"ok {len(ra)} rows")

def status(db_path, run):
    db = connect(db_path)
    r = db.execute("SELECT status, end_time FROM runs WHERE run_uuid = ?", (run,)).fetchone()
    print(f"{r['status']} {'ended' if r['end_time'] else 'no-end'}" if r else "no run")

if __name__ == "__main__":
    {"run": lambda: check_run(*sys.argv[2:6]), "same": lambda: same_runs(*sys.argv[2:5]),
     "status": lambda: status(*sys.argv[2:4])}[sys.argv[1]]()
