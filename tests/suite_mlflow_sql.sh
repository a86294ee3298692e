#!/usr/bin/env bash
# MLflow's SQL store (issue 16; runtime/mlflowdb.c): MLFlowLogger { tracking_uri =
# "sqlite:///PATH" } writes MLflow's schema at alembic revision 0584bdc529eb through
# libsqlite3; tests/mlflow_sql/read_db.py reads the tables back with python3's sqlite3:
#  - a finished run: every table of the revision, the experiment and run rows (ids, status,
#    times, artifact URIs), every metric row = metrics.csv, latest_metrics; log_model's
#    checkpoint in the run's artifact directory; a second run reuses the experiment;
#  - a run killed outright (SIGKILL at its second checkpoint) is left RUNNING; resumed, it
#    continues the same run id, FINISHED, with the metrics of a run never stopped;
#  - SIGTERM: KILLED, with its end time;
#  - refused: a tracking_uri that names no file (at the spec's line), a database at another
#    schema revision (one line, non-zero exit); a program without a SQL store links no libsqlite3.
set -u
LOOM=${LOOM:-build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"
READ="/usr/bin/python3 $(dirname "$0")/mlflow_sql/read_db.py"
plan 9

db=$work/store/mlflow.db   # absolute: sqlite:////ABS (SQLAlchemy's four slashes)
spec() {   # FILE URI: 3 epochs of 7 steps, a train.log metric, CSV and MLflow (SQL) loggers
  cat >"$1" <<LUA
model "Net" {
  inputs = { x = Tensor{4} },
  hidden = Linear(4, 16), out = Linear(16, 3),
  forward = function(m, b) return m.out(relu(m.hidden(b.x))) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 64, val_size = 24 },
  batch_size = 10, log_every_n_steps = 1,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  log = function(m, b, out) return { worst = max(abs(out)) } end,
  log_reduce = { worst = "max" },
  optimizer = SGD { lr = 0.1 }, epochs = 3,
  loggers = { CSVLogger {}, MLFlowLogger { experiment_name = "e", run_name = "first",
    tracking_uri = "$2", log_model = true } },
}
LUA
}
csv_of() { ls "$1"/logs/lightning_logs/version_*/metrics.csv 2>/dev/null | head -1; }
newest() { /usr/bin/python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT run_uuid FROM runs ORDER BY start_time DESC, rowid DESC").fetchone()[0])' "$1"; }

spec "$work/s.lua" "sqlite:///$db"
if "$LOOM" build "$work/s.lua" -o "$work/s" >"$work/build.log" 2>&1 && "$work/s/train" --quiet --out "$work/a" >"$work/a.log" 2>&1; then
  v=$($READ run "$db" e "$(csv_of "$work/a")" FINISHED)
  id=$(echo "$v" | cut -d' ' -f2)
  art="$work/store/mlruns/1/$id/artifacts/checkpoints/last.safetensors"
  if [ "${v%% *}" = ok ] && cmp -s "$art" "$work/a/last.safetensors"; then ok "a finished run: MLflow's tables, rows and ids; every metric = metrics.csv; the checkpoint artifact (${v#ok })"
  else fail "a finished run" "$v; artifact $art"; fi
  "$work/s/train" --quiet --out "$work/b" >>"$work/a.log" 2>&1
  n=$(/usr/bin/python3 -c 'import sqlite3, sys; d = sqlite3.connect(sys.argv[1]); print(d.execute("SELECT count(*) FROM experiments").fetchone()[0], d.execute("SELECT count(*) FROM runs WHERE experiment_id = 1").fetchone()[0])' "$db")
  v=$($READ run "$db" e "$(csv_of "$work/b")" FINISHED)
  [ "$n" = "2 2" ] && [ "${v%% *}" = ok ] && ok "a second run reuses the experiment (2 experiments with Default, 2 runs)" || fail "a second run reuses the experiment" "experiments, runs: $n; $v"
else
  fail "a finished run" "$(tail -3 "$work/build.log" "$work/a.log" | tr '\n' ' ')"
  fail "a second run reuses the experiment" "the build or the run failed"
fi

# killed outright at its second checkpoint (the first epoch's is the newest), then resumed
if cc -Wall -Wextra -Werror -shared -fPIC tests/harness/kill_at_rename.c -o "$work/kill_at_rename.so" -ldl >>"$work/build.log" 2>&1 && [ -x "$work/s/train" ]; then
  LD_PRELOAD="$work/kill_at_rename.so" LOOM_KILL_AT_RENAME=2 "$work/s/train" --quiet --out "$work/k" >"$work/k.log" 2>&1
  krc=$?
  id=$(newest "$db")
  st=$($READ status "$db" "$id")
  [ $krc = 137 ] && [ "$st" = "RUNNING no-end" ] && ok "a run killed outright is left RUNNING" || fail "a run killed outright is left RUNNING" "exit $krc, $st"
  "$work/s/train" --quiet --resume "$work/k/last.safetensors" --out "$work/k" >>"$work/k.log" 2>&1
  st=$($READ status "$db" "$id")
  ref=$($READ run "$db" e "$(csv_of "$work/b")" FINISHED >/dev/null; /usr/bin/python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT run_uuid FROM runs WHERE name = ? ORDER BY start_time DESC LIMIT 1 OFFSET 1", ("first",)).fetchone()[0])' "$db")
  v=$($READ same "$db" "$id" "$ref")
  n=$(/usr/bin/python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM runs").fetchone()[0])' "$db")
  [ "$st" = "FINISHED ended" ] && [ "${v%% *}" = ok ] && [ "$n" = 3 ] && ok "resumed: the same run id, FINISHED, the metrics of a run never stopped ($v)" ||
    fail "resumed: the same run id" "status $st, $n runs, metrics: $v"
  # SIGTERM: the run stops at a step, checkpoints, and is KILLED
  "$work/s/train" --quiet --epochs 100000 --out "$work/t" >"$work/t.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -f "$work/t/last.safetensors" ] && break; sleep 0.1; done
  kill -TERM $pid; wait $pid
  st=$($READ status "$db" "$(newest "$db")")
  grep -q "stopped by signal" "$work/t.log" && [ "$st" = "KILLED ended" ] && ok "a run stopped by SIGTERM is KILLED, with its end time" ||
    fail "a run stopped by SIGTERM is KILLED" "$st; $(tail -1 "$work/t.log")"
else
  for t in "a run killed outright is left RUNNING" "resumed: the same run id" "a run stopped by SIGTERM is KILLED"; do fail "$t" "no program or shim"; done
fi

# only a program with a SQL store links libsqlite3
if grep -q -- "-lsqlite3" "$work/s/build.ninja" 2>/dev/null && [ -f "$work/s/mlflowdb.c" ] && ldd "$work/s/train" | grep -q libsqlite3; then
  sed 's|tracking_uri = "[^"]*"|save_dir = "mlruns"|' "$work/s.lua" >"$work/f.lua"
  "$LOOM" build "$work/f.lua" -o "$work/f" --no-compile >/dev/null 2>&1
  if [ -f "$work/f/train.c" ] && ! grep -q -- "-lsqlite3" "$work/f/build.ninja" && [ ! -f "$work/f/mlflowdb.c" ]; then ok "libsqlite3 only where a logger has a sqlite:/// tracking_uri"
  else fail "libsqlite3 only where a SQL store is" "the file store's program has $(grep -o -- '-lsqlite3' "$work/f/build.ninja") $(ls "$work/f" | grep mlflowdb)"; fi
else fail "libsqlite3 only where a SQL store is" "the SQL store's program does not link it"; fi

# refused: another schema revision (one line, non-zero), a URI that names no file (the spec's line)
/usr/bin/python3 -c 'import sqlite3, sys; d = sqlite3.connect(sys.argv[1]); d.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"); d.execute("INSERT INTO alembic_version VALUES (?)", ("1b5f0d9ad7c1",)); d.commit()' "$work/other.db"
spec "$work/o.lua" "sqlite:///$work/other.db"
if [ -d "$work/s" ] && cp -a "$work/s" "$work/o" && "$LOOM" build "$work/o.lua" -o "$work/o" >/dev/null 2>&1; then
  expect_error "a database at another schema revision: one line" "other.db: MLflow schema revision '1b5f0d9ad7c1'; loom writes revision '0584bdc529eb'" \
    "$work/o/train" --quiet --out "$work/o_run"
else fail "a database at another schema revision: one line" "build failed"; fi
for uri in "sqlite://x.db" "sqlite:///dir/"; do
  spec "$work/bad.lua" "$uri"
  err=$("$LOOM" build "$work/bad.lua" --no-compile -o "$work/bad" 2>&1); rc=$?
  first=$(echo "$err" | head -1)
  [ $rc = 2 ] && [[ "$first" == *"bad.lua:15:"*"'$uri' names no SQLite file; write sqlite:///RELATIVE/PATH.db"* ]] && ! echo "$err" | grep -q Traceback &&
    ok "refused at the spec's line: tracking_uri '$uri'" || fail "tracking_uri '$uri' refused" "rc $rc: $first"
done
