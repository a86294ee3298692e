#!/usr/bin/env python3
"""metrics_diff.py A B: two runs' metrics.csv (Lightning's CSVLogger layout) row by row,
keyed by (epoch, step): the same rows, the same columns, the same cells filled, and the
largest |a - b| / max(1, |b|) over every value but train/throughput (a rate of the
machine), printed with its column.  Standard library only."""
import csv, sys

def rows(path):
    with open(path, newline="") as f:
        r = list(csv.DictReader(f))
    out = {}
    for row in r:
        key = (row["epoch"], row["step"], tuple(k for k in sorted(row) if row[k] != ""))
        if key in out:
            sys.exit(f"{path}: two rows at epoch {row['epoch']} step {row['step']}")
        out[key] = row
    return out

a, b = rows(sys.argv[1]), rows(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit(f"different rows or cells: {sorted(set(a) ^ set(b))[:3]}")
worst, where, n = 0.0, "", 0
for key, ra in a.items():
    rb = b[key]
    for col in key[2]:
        if col in ("epoch", "step", "train/throughput"):
            continue
        x, y = float(ra[col]), float(rb[col])
        d = abs(x - y) / max(1.0, abs(y))
        n += 1
        if d >= worst:
            worst, where = d, f"{col} at step {key[1]}: {x} vs {y}"
print(f"{worst:.3g} over {n} values (largest: {where})")
