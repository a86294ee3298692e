#!/usr/bin/env python3
"""train.log's metrics (issue 16) against PyTorch on the same weights and batches.

  check_metrics.py data DIR                 writes x.npy, target.npy, onehot.npy (50 + 20 samples)
  check_metrics.py values RUN_OUT CSV B     every epoch's and validation's metric == PyTorch's
  check_metrics.py same CKPT_A CKPT_B       the two checkpoints' tensors are equal (bit for bit)

The run trains with lr = 0, so its weights are its initial ones, the ones in
RUN_OUT/last.safetensors.  The training batches are shuffled, so the epoch rows are
checked with metrics whose reduction does not depend on the order (a per-sample mean
weighted by batch size, sums, maxima) and the step rows against the epoch rows; the
validation batches are sequential, so there every reduction is checked batch by batch.
Prints "ok" or the first problem.
"""
import csv, json, math, struct, sys

import numpy as np
import torch

N_TRAIN, N_VAL = 50, 20


def safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64}[e["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt).reshape(e["shape"]).copy())
    return out


def write_data(d):
    rng = np.random.default_rng(7)
    n = N_TRAIN + N_VAL
    x = rng.standard_normal((n, 4)).astype(np.float32)
    t = rng.integers(0, 3, n).astype(np.int64)
    np.save(f"{d}/x.npy", x)
    np.save(f"{d}/target.npy", t)
    np.save(f"{d}/onehot.npy", np.eye(3, dtype=np.float32)[t])


# the spec's train.log, in PyTorch (tests/suite_metrics.sh's spec)
REDUCE = {"hits": "mean", "bits": "mean", "spread": "mean", "total": "sum", "worst": "max", "peak": "max", "bsum": "sum"}


def metrics(w, x, t, onehot):
    out = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, w["hidden.weight"], w["hidden.bias"])),
                                     w["out.weight"], w["out.bias"])
    return {
        "hits": (out.argmax(1) == t).float().mean().item(),
        "bits": ((out > 0) == (onehot > 0.5)).float().mean().item(),
        "spread": out.abs().mean().item(),
        "total": out.sum().item(),
        "worst": out.abs().max().item(),
        "peak": out.mean().item(),            # max over batches of the batch's mean
        "bsum": out.abs().mean().item(),      # sum over batches of the batch's mean
    }


def close(a, b, what):
    if not (abs(a - b) <= 2e-5 * max(1.0, abs(b))):
        raise AssertionError(f"{what}: loom {a!r}, PyTorch {b!r}")


def reduce(values, sizes, how):
    if how == "mean":
        return sum(v * s for v, s in zip(values, sizes)) / sum(sizes)
    if how == "sum":
        return sum(values)
    return max(values)


def check_values(out_dir, csv_path, batch):
    w = safetensors(f"{out_dir}/last.safetensors")
    x = torch.from_numpy(np.load(f"{out_dir}/../x.npy"))
    t = torch.from_numpy(np.load(f"{out_dir}/../target.npy"))
    oh = torch.from_numpy(np.load(f"{out_dir}/../onehot.npy"))
    rows = list(csv.DictReader(open(csv_path, newline="")))
    names = sorted(REDUCE)
    for k in names:
        for col in (f"train/{k}", f"train/{k}_epoch", f"val/{k}"):
            if col not in rows[0]:
                return f"no column {col} in metrics.csv"
    # validation: sequential batches of `batch`
    vb = [metrics(w, x[i:i + batch], t[i:i + batch], oh[i:i + batch])
          for i in range(N_TRAIN, N_TRAIN + N_VAL, batch)]
    vs = [min(batch, N_TRAIN + N_VAL - i) for i in range(N_TRAIN, N_TRAIN + N_VAL, batch)]
    epoch_rows = [r for r in rows if r["val/loss"]]
    if len(epoch_rows) != 2:
        return f"{len(epoch_rows)} epoch rows, expected 2"
    for r in epoch_rows:
        for k in names:
            close(float(r[f"val/{k}"]), reduce([b[k] for b in vb], vs, REDUCE[k]), f"epoch {r['epoch']} val/{k}")
        close(float(r["val/hits"]), float(r["val/acc"]), "val/hits against the built-in val/acc")
    # training epochs: the whole training set, whatever the order, for the order-free metrics
    whole = metrics(w, x[:N_TRAIN], t[:N_TRAIN], oh[:N_TRAIN])
    per_sample_max = whole["worst"]
    for r in epoch_rows:
        for k in ("hits", "bits", "spread", "total", "worst"):
            close(float(r[f"train/{k}_epoch"]), whole[k] if k != "worst" else per_sample_max, f"epoch {r['epoch']} train/{k}_epoch")
    # step rows: every step logged; their reduction, with each step's batch size, is the epoch's
    steps_per_epoch = math.ceil(N_TRAIN / batch)
    for e in (0, 1):
        steps = [r for r in rows if r["train/loss"] and int(r["epoch"]) == e]
        if len(steps) != steps_per_epoch:
            return f"epoch {e}: {len(steps)} step rows, expected {steps_per_epoch}"
        sizes = [batch] * (steps_per_epoch - 1) + [N_TRAIN - batch * (steps_per_epoch - 1)]
        for k in names:
            got = reduce([float(s[f"train/{k}"]) for s in steps], sizes, REDUCE[k])
            close(got, float(epoch_rows[e][f"train/{k}_epoch"]), f"epoch {e}: train/{k} over the steps against train/{k}_epoch")
    return "ok"


def same(a, b):
    wa, wb = safetensors(a), safetensors(b)
    if sorted(wa) != sorted(wb):
        return f"tensors differ: {sorted(wa)} / {sorted(wb)}"
    for k in wa:
        if not torch.equal(wa[k], wb[k]):
            return f"{k} differs by {(wa[k].double() - wb[k].double()).abs().max().item()}"
    return "ok"


if __name__ == "__main__":
    try:
        if sys.argv[1] == "data":
            write_data(sys.argv[2])
            print("ok")
        elif sys.argv[1] == "values":
            print(check_values(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        else:
            print(same(sys.argv[2], sys.argv[3]))
    except AssertionError as e:
        print(e)
