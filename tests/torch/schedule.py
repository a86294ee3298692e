"""Compares a loom program's learning-rate (and momentum) schedule with PyTorch's:

    /usr/bin/python3 tests/torch/schedule.py KIND STEPS STEPS_PER_EPOCH < loom_output

KIND is one of tests/suite_schedule.sh's cases (the settings
tests/suite_schedule.sh writes into the spec).  Prints "ok" or "not ok: why".
"""
import math
import sys
import warnings

import torch

warnings.filterwarnings("ignore")   # SequentialLR's step(0) and the first step's order: torch's own

kind, steps, per_epoch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loom = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
p = torch.nn.Parameter(torch.zeros(1))
ref = []
if kind == "warmupcosine":   # not a PyTorch class: LambdaLR with the same formula
    warm, total, base = 5, steps, 0.1
    for s in range(steps):
        if s < warm:
            ref.append((base * (s + 1) / warm, 0.9))
        else:
            prog = min(1.0, (s - warm) / max(1, total - warm))
            ref.append((0.5 * base * (1 + math.cos(math.pi * prog)), 0.9))
else:
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    if kind == "steplr_epoch":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    elif kind == "onecycle_cos":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps)
    elif kind == "onecycle_linear3":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps, anneal_strategy="linear",
                                                    three_phase=True, pct_start=0.25)
    elif kind == "exponential_epoch":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
    elif kind == "multistep_step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 10, 25], gamma=0.3)
    elif kind == "linear_step":
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.9, total_iters=12)
    elif kind == "cosine_step":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15, eta_min=0.01)
    elif kind == "lambda_epoch":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (e + 1) / 2 if e < 2 else 0.8 ** (e - 2) * math.cos(e / 10))
    elif kind == "lambda_step":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / math.sqrt(max(s, 4)) + (s % 7) // 3 * 0.05 - (-s) ** 2 / 1e4)
    elif kind == "sequential_step":
        L = torch.optim.lr_scheduler
        sched = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=0.2, total_iters=6), L.CosineAnnealingLR(opt, T_max=10, eta_min=0.02),
                                     L.MultiStepLR(opt, milestones=[3, 9], gamma=0.5)], milestones=[5, 18])
    elif kind == "sequential_epoch":
        L = torch.optim.lr_scheduler
        sched = L.SequentialLR(opt, [L.LambdaLR(opt, lambda e: (e + 1) / 2), L.StepLR(opt, step_size=2, gamma=0.5)], milestones=[2])
    for s in range(steps):
        g = opt.param_groups[0]
        ref.append((g["lr"], g["momentum"]))
        opt.step()
        if kind.endswith("_epoch"):
            if (s + 1) % per_epoch == 0:
                sched.step()
        else:
            sched.step()
worst = max(max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(l, r)) for l, r in zip(loom, ref))
if len(loom) != len(ref) or worst > 1e-9:
    print("not ok: worst relative difference %.3e over %d steps (loom %d lines)" % (worst, len(ref), len(loom)))
    for s, (l, r) in enumerate(zip(loom, ref)):
        if max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(l, r)) > 1e-9:
            print("#   step %d: loom %s torch %s" % (s, l, r))
            break
else:
    print("ok (worst relative difference %.1e over %d steps)" % (worst, len(ref)))
