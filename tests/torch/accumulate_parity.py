#!/usr/bin/env python3
"""Gradient accumulation over an epoch that is not a multiple of `accumulate`, in PyTorch
as Lightning's Trainer runs it, against loom's program (tests/suite_train.sh).

  accumulate_parity.py START END X.npy Y.npy ACCUMULATE LR MOMENTUM

START is loom's checkpoint at an epoch's start, END its checkpoint one epoch later; the
model is suite_train.sh's Sequential(Linear(4, 6), Tanh(), Linear(6, 1)) with mse, in
float64, SGD with momentum.  The epoch's batches are those loom's loader gives (the same
Philox Fisher-Yates shuffle of runtime/loader.c, from the checkpoint's seed and epoch).
Lightning zeroes the gradients on a window's first batch, divides each micro-batch's
loss by accumulate_grad_batches (also in the epoch's last, shorter window) and steps on
a window's last batch or on the epoch's last batch.  Prints "ok" or what differs.
Exit status 77 when torch is missing (the caller skips).
"""
import json
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(77)

M32 = 0xFFFFFFFF


def philox4x32_10(key, c):
    """runtime/philox.h's Philox4x32-10: four 32-bit words for counter c under key."""
    k0, k1 = key & M32, (key >> 32) & M32
    x0, x1, x2, x3 = c
    for _ in range(10):
        p0, p1 = 0xD2511F53 * x0, 0xCD9E8D57 * x2
        x0, x1, x2, x3 = ((p1 >> 32) ^ x1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ x3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return x0, x1, x2, x3


def permutation(seed, epoch, n):
    """runtime/loader.c's sampler_permute."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        r = philox4x32_10(seed, (i & M32, (i >> 32) & M32, epoch & M32, ((epoch >> 32) & M32) ^ 0x53485546))
        j = ((r[0] << 32) | r[1]) % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def read(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__")
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F64", f"{path}: {name} is {info['dtype']}, expected F64"
        b, e = info["data_offsets"]
        tensors[name] = torch.tensor(np.frombuffer(data[b:e], dtype=np.float64).reshape(info["shape"]))
    return tensors, meta


def main():
    start, end, xfile, yfile = sys.argv[1:5]
    accumulate, lr, momentum = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    t0, meta = read(start)
    t1, meta1 = read(end)
    x = torch.tensor(np.load(xfile), dtype=torch.float64)
    y = torch.tensor(np.load(yfile), dtype=torch.float64)
    B, N = int(meta["batch_size"]), x.shape[0]
    seed, epoch = int(meta["seed"]), int(meta["epoch"])
    assert int(meta["batch"]) == 0, "START must be a checkpoint at an epoch's start"

    model = torch.nn.Module()
    model.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    model.double()
    model.load_state_dict({k: v for k, v in t0.items() if not k.startswith("optimizer.")})
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    names = dict(model.named_parameters())
    opt.load_state_dict({"state": {i: {"momentum_buffer": t0["optimizer.momentum_buffer." + k].clone()}
                                   for i, k in enumerate(names)},
                         "param_groups": opt.state_dict()["param_groups"]})

    order = permutation(seed, epoch, N)
    batches = [order[i:i + B] for i in range(0, N, B)]
    steps = 0
    for batch_idx, idx in enumerate(batches):
        if batch_idx % accumulate == 0:
            opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model.net(x[idx]), y[idx]) / accumulate
        loss.backward()
        if (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == len(batches):
            opt.step()
            steps += 1

    if int(meta1["step"]) - int(meta["step"]) != steps:
        print(f"loom took {int(meta1['step']) - int(meta['step'])} steps in the epoch, PyTorch {steps}")
        return
    state = opt.state_dict()["state"]
    worst, where = 0.0, None
    for i, (k, p) in enumerate(names.items()):
        for name, ref in ((k, p.detach()), ("optimizer.momentum_buffer." + k, state[i]["momentum_buffer"])):
            err = ((t1[name] - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()
            if err > worst:
                worst, where = err, name
    print("ok" if worst < 1e-12 else f"{where}: relative error {worst:.3g} against PyTorch")


if __name__ == "__main__":
    main()
