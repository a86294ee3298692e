"""PyTorch eager reference for bench/accuracy.sh: trains the hand-written PyTorch
equivalent of a Fashion-MNIST spec (tests/torch/models.py) with the spec's
hyperparameters — AdamW lr 1e-3 weight decay 0.01, batch 128, inputs scaled to
[0, 1], the last 5000 training images held out (as val_split = 5000) — and prints
the test accuracy after N epochs.  No early stopping or checkpoint selection: the
model after the last epoch is tested.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_train.py fashion_cnn --epochs 3 [--threads 2]
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "torch"))
import models  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", choices=["fashion_mlp", "fashion_cnn"])
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x = torch.from_numpy(idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    yt = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x, y = x[:-5000], y[:-5000]

    model = models.SPECS[args.spec][0]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total, n = 0.0, 0
        for i in range(0, len(x), 128):
            j = perm[i:i + 128]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[j]), y[j])
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
            n += len(j)
        print(f"epoch {epoch + 1}: train/loss {total / n:.4f}", flush=True)
    secs = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xt), 1000):
            correct += (model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum().item()
    print(f"torch {args.spec} epochs={args.epochs} test/acc {correct / len(xt):.4f} trained in {secs:.1f} s")


if __name__ == "__main__":
    main()
