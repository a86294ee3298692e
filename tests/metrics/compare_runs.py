#!/usr/bin/env python3
"""Two runs' metrics.csv against each other, and the CUDA program's read-backs (no torch).

  compare_runs.py same CSV_A CSV_B TOL      the same rows (step, epoch, which keys) and every value
                                            within TOL (|a - b| <= TOL (|b| + 1e-3)); train/throughput,
                                            a timing, is left out; TOL 0: bit for bit
  compare_runs.py readbacks CSV STDOUT      the CUDA program's "train.log's metrics: R read-backs, W ..."
                                            line: R == the rows that log train.log's metrics (step rows,
                                            one per epoch, each validation, the test) and W == 0

The per-step comparison is what fails when a step row's metrics were read back on
another step (the previous logged step's accumulator, or one emptied by the next step):
each step row's train/NAME must be that step's own.
Prints "ok" or the first problem.
"""
import csv, math, re, sys

SKIP = {"train/throughput"}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same(a_path, b_path, tol):
    a, b = rows(a_path), rows(b_path)
    if len(a) != len(b):
        return f"{len(a)} rows against {len(b)}"
    if set(a[0]) != set(b[0]):
        return f"columns differ: {sorted(set(a[0]) ^ set(b[0]))}"
    worst = (0.0, "")
    for i, (ra, rb) in enumerate(zip(a, b)):
        where = f"row {i + 1} (step {ra['step']}, epoch {ra['epoch']})"
        for k in ra:
            if k in SKIP:
                continue
            x, y = ra[k], rb[k]
            if (x == "") != (y == ""):
                return f"{where}: {k} is '{x}' against '{y}'"
            if x == "" or k in ("step", "epoch"):
                if x != y:
                    return f"{where}: {k} {x} against {y}"
                continue
            x, y = float(x), float(y)
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(x - y) / (abs(y) + 1e-3)
            if not d <= tol:
                return f"{where}: {k} {x!r} against {y!r} (relative {d:.3g}, tolerance {tol})"
            if d > worst[0]:
                worst = (d, k)
    return "ok" if tol == 0 else f"ok (worst relative difference {worst[0]:.2g} in {worst[1] or '-'})"


def readbacks(csv_path, stdout_path):
    r = rows(csv_path)
    names = [k[len("train/"):] for k in r[0] if k.startswith("train/") and k + "_epoch" in r[0] and k != "train/loss"]
    if not names:
        return "no train.log metric in the csv"
    n = names[0]
    want = sum(1 for x in r if x.get("train/" + n)) + sum(1 for x in r if x.get("train/" + n + "_epoch"))
    want += sum(1 for x in r if x.get("val/" + n)) + sum(1 for x in r if x.get("test/" + n))
    m = re.search(r"train.log's metrics: (\d+) read-backs, (\d+) of a step's row waited", open(stdout_path).read())
    if not m:
        return "no read-back line in the program's output"
    got, waited = int(m.group(1)), int(m.group(2))
    if got != want or waited != 0:
        return f"{got} read-backs ({waited} waited) for {want} logged rows (and none waited)"
    return f"ok ({got} read-backs)"


if __name__ == "__main__":
    try:
        if sys.argv[1] == "same":
            print(same(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        elif sys.argv[1] == "readbacks":
            print(readbacks(sys.argv[2], sys.argv[3]))
        else:
            print("usage: compare_runs.py same|readbacks ...")
    except Exception as e:   # a missing file, a malformed row: the first problem
        print(f"{type(e).__name__}: {e}")
