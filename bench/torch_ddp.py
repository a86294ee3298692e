"""PyTorch DDP reference for bench/ddp.sh: bench/specs/ddp_mlp.lua's model (784-1024-1024-10
MLP, AdamW lr 1e-3 weight decay 0.01, batch 64 per rank) trained for STEPS steps by 2
processes over gloo on random data, one thread each (torch.set_num_threads(1)); rank 0
prints "trained N steps in S s" as the loom program does (the first step included).

    /usr/bin/python3 bench/torch_ddp.py --steps 200 [--ranks 2]
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def run(rank, world, steps):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    ddp = nn.parallel.DistributedDataParallel(model)   # bucket_cap_mb 25, as loom's default
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(steps, 64, 784, generator=g)
    y = torch.randint(0, 10, (steps, 64), generator=g)
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(steps):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(ddp(x[s]), y[s]).backward()
        opt.step()
    dist.barrier()
    if rank == 0:
        print("trained %d steps in %.3f s" % (steps, time.perf_counter() - t0), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", type=int, default=2)
    a = ap.parse_args()
    mp.spawn(run, args=(a.ranks, a.steps), nprocs=a.ranks)
