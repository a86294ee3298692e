"""PyTorch's side of tiny_gpt's validation-loss comparison (issue 14): the same model
(tests/torch/models.py's TinyGPT, held equal to loom's by tests/suite_parity.sh), the
same token files, batch, optimizer, schedule and clipping as specs/tiny_gpt.lua:

  - training windows of T + 1 tokens at random offsets of the training file (loom draws
    every offset once per epoch in a seeded order, this draws them uniformly: the same
    distribution, not the same windows);
  - AdamW(lr 2e-3, betas (0.9, 0.95), weight decay 0.1 on the >= 2-D parameters only);
  - loom's WarmupCosine: lr = base * (s + 1) / warmup for s < warmup, then cosine from
    base to min_lr over the rest of total_steps (warmup 100, total 5000, min_lr 1e-4);
  - clip_grad_norm_(1.0);
  - validation: every non-overlapping window of the validation file, the mean loss per
    token, which for bytes is nats per byte.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/tiny_gpt_val.py data/kjv.bin data/kjv_val.bin --eval 200,2000
Prints "torch step S val/loss X" at each step of --eval.  The defaults are the spec's;
--lr, --weight-decay, --warmup, --total-steps and --min-lr follow a changed spec.
"""
import argparse
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "torch"))
import models  # noqa: E402


def read_tokens(path):
    """llm.c's layout: 256 int32 (magic 20240520, version 1, count), then uint16 tokens"""
    with open(path, "rb") as f:
        head = f.read(1024)
        magic, version, count = struct.unpack("<iii", head[:12])
        if magic != 20240520 or version != 1:
            raise SystemExit(f"{path}: not a token file (magic {magic}, version {version})")
        t = np.frombuffer(f.read(), dtype="<u2")
    if len(t) != count:
        raise SystemExit(f"{path}: the header says {count} tokens, the file holds {len(t)}")
    return torch.from_numpy(t.astype(np.int64))


def lr_at(step, base, warmup, total, min_lr):
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup if total > warmup else 1)
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model, val, B, T):
    model.eval()
    n = (len(val) - T - 1) // T + 1
    total = 0.0
    for i in range(0, n, B):
        offs = torch.arange(i, min(i + B, n)) * T
        w = torch.stack([val[o:o + T + 1] for o in offs.tolist()])
        out = model(w[:, :T])
        total += F.cross_entropy(out.transpose(1, 2), w[:, 1:]).item() * len(offs)
    model.train()
    return total / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--eval", default="200,2000", help="steps after which to evaluate")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    # specs/tiny_gpt.lua's optimizer and schedule (keep equal to the spec's)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--total-steps", type=int, default=5000)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    T, B = models.GPT_T, args.batch
    train, val = read_tokens(args.train), read_tokens(args.val)
    model = models.TinyGPT()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2]},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    evals = sorted(int(s) for s in args.eval.split(","))
    t0 = time.time()
    for step in range(evals[-1]):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, args.total_steps, args.min_lr)
        offs = torch.randint(0, len(train) - T, (B,), generator=g).tolist()
        w = torch.stack([train[o:o + T + 1] for o in offs])
        opt.zero_grad()
        loss = F.cross_entropy(model(w[:, :T]).transpose(1, 2), w[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step + 1 in evals:
            print(f"torch step {step + 1} train/loss {loss.item():.4f} val/loss {evaluate(model, val, B, T):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
