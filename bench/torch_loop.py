"""PyTorch eager reference for bench/overhead.sh: the whole training loop of
bench/specs/linear.lua (one Linear(10, 2), mse, AdamW lr 1e-3 weight decay 0.01, batch 4)
over an in-memory data set of the same size, written as a PyTorch user writes it at its
leanest: a fresh permutation each epoch, the batch indexed out of the tensors, zero_grad,
forward, loss, backward, step, the loss read (.item()) every 50 steps as loom's CSV row
is written.  No DataLoader (its per-batch collation would cost PyTorch more).

    /usr/bin/python3 bench/torch_loop.py --size 65536 --batch 4 --epochs 3 [--max-steps N] [--threads 2]

Prints one line:
    torch linear-loop B=.. blas=.. steps=.. loop_us_per_step=.. loop_cpu_us_per_step=.. process_s=..
loop_us_per_step: the loop's wall time (from before the first epoch to after the last
step) per step; loop_cpu_us_per_step: the CPU time of all the process's threads over the
loop, per step; process_s: the whole process, interpreter and import included.
"""
import argparse
import time

T0 = time.perf_counter()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from torch_step import pin_openblas  # noqa: E402  (the OpenBLAS pool pinned to one thread)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the epochs')")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    blas = pin_openblas()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.size, 10, generator=g)
    y = torch.rand(args.size, 2, generator=g)
    model = nn.Linear(10, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    B, steps, last = args.batch, 0, float("nan")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        if steps == args.max_steps > 0:
            break
        perm = torch.randperm(args.size, generator=g)
        for i in range(0, args.size, B):
            j = perm[i:i + B]
            opt.zero_grad()
            loss = F.mse_loss(model(x[j]), y[j])
            loss.backward()
            opt.step()
            steps += 1
            if steps % 50 == 0:
                last = loss.item()
            if steps == args.max_steps > 0:
                break
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"torch linear-loop B={B} blas={blas} steps={steps} loop_us_per_step={(t1 - t0) / steps * 1e6:.3f} "
          f"loop_cpu_us_per_step={(c1 - c0) / steps * 1e6:.3f} "
          f"process_s={t1 - T0:.3f} loss={last:.5f}")


if __name__ == "__main__":
    main()
