"""Checks a loom program's initial parameters (tests/harness/init.c's lines on stdin)
against torch.nn.init, for tests/suite_init.sh's spec:

    /usr/bin/python3 tests/torch/init.py < lines

The spec's train.init and PyTorch's defaults, parameter by parameter: constants
exactly; orthogonal_ by W W^T = gain^2 I; random ones by their mean, standard deviation
and bounds against a large sample of torch's own function on a tensor of the same
shape (so fan and gain rules are torch's), within 5 standard errors.  Prints one
"ok"/"not ok" line per parameter.
"""
import math
import sys

import torch

torch.manual_seed(0)
init = torch.nn.init
loom = {}
for line in sys.stdin:
    parts = line.split()
    if parts:
        loom[parts[0]] = torch.tensor([float(v) for v in parts[1:]], dtype=torch.float64)

# name -> (shape, what torch does to a tensor of it, kind)
# kind: "const" (exact), "orth" (gain), "random" (statistics), "bounded" (statistics and [lo, hi])
CASES = {
    "l1.weight": ((256, 64), lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), "random"),
    "l1.bias": ((256,), lambda t: init.constant_(t, 0.5), "const"),
    "l2.weight": ((128, 256), lambda t: init.xavier_uniform_(t, init.calculate_gain("tanh")), "uniform"),
    "l2.bias": ((128,), lambda t: init.zeros_(t), "const"),
    "l3.weight": ((512, 128), lambda t: init.orthogonal_(t), ("orth", 1.0)),
    "l3.bias": ((512,), lambda t: init.normal_(t, 1.0, 0.5), "random"),
    "l4.weight": ((64, 512), lambda t: init.trunc_normal_(t, 0.1, 0.05, 0.0, 0.15), ("bounded", 0.0, 0.15)),
    "l4.bias": ((64,), lambda t: init.uniform_(t, -0.3, 0.7), ("bounded", -0.3, 0.7)),
    "l5.weight": ((300, 64), lambda t: init.xavier_normal_(t), "random"),
    # untouched: PyTorch's Linear default (kaiming_uniform_(a=sqrt(5)), bias U(+-1/sqrt(fan_in)))
    "l5.bias": ((300,), lambda t: init.uniform_(t, -1 / math.sqrt(64), 1 / math.sqrt(64)), "uniform"),
    "l6.weight": ((10, 300), lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)), "uniform"),
    "l6.bias": ((10,), lambda t: init.ones_(t), "const"),
    "c1.weight": ((32, 16, 3, 3), lambda t: init.kaiming_uniform_(t, a=0.2), "uniform"),
    "c1.bias": ((32,), lambda t: init.uniform_(t, -1 / math.sqrt(144), 1 / math.sqrt(144)), "uniform"),
    "c2.weight": ((16, 32, 3, 3), lambda t: init.orthogonal_(t, 2.0), ("orth", 2.0)),
    "c2.bias": ((16,), lambda t: init.constant_(t, -1.25), "const"),
}

bad = 0
for name, (shape, fn, kind) in CASES.items():
    x = loom.get(name)
    n = math.prod(shape)
    if x is None or x.numel() != n:
        print("not ok %s: loom printed %s values, expected %d" % (name, "no" if x is None else x.numel(), n))
        bad += 1
        continue
    why = None
    if kind == "const":
        want = fn(torch.empty(shape, dtype=torch.float64)).flatten()
        if not torch.equal(x, want):
            why = "values differ from torch's (max |diff| %.3g)" % (x - want).abs().max()
        detail = "exact"
    elif kind[0] == "orth":
        gain = kind[1]
        w = x.reshape(shape[0], -1)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        err = (gram - gain * gain * torch.eye(gram.shape[0], dtype=torch.float64)).abs().max().item()
        # torch's own, for the same property at the same shape
        t = fn(torch.empty(shape)).reshape(shape[0], -1).double()
        tgram = t @ t.T if t.shape[0] <= t.shape[1] else t.T @ t
        terr = (tgram - gain * gain * torch.eye(tgram.shape[0], dtype=torch.float64)).abs().max().item()
        if err > 1e-5 * gain * gain:
            why = "W W^T differs from gain^2 I by %.3g (torch's own: %.3g)" % (err, terr)
        detail = "|W W^T - gain^2 I| %.2g (torch %.2g)" % (err, terr)
    else:
        # torch's distribution, from a sample of at least 2M values
        reps = max(1, 2_000_000 // n)
        ref = torch.cat([fn(torch.empty(shape, dtype=torch.float64)).flatten() for _ in range(reps)])
        mu, sd = ref.mean().item(), ref.std().item()
        m, s = x.mean().item(), x.std().item()
        se_mean = sd / math.sqrt(n)
        # the sample std's standard error: sd * sqrt((kurtosis - 1) / (4n))
        kurt = (((ref - mu) / sd) ** 4).mean().item()
        se_sd = sd * math.sqrt((kurt - 1) / (4 * n))
        if abs(m - mu) > 5 * se_mean + 1e-12:
            why = "mean %.5g, torch's %.5g (5 standard errors: %.3g)" % (m, mu, 5 * se_mean)
        elif abs(s - sd) > 5 * se_sd + 1e-12:
            why = "std %.5g, torch's %.5g (5 standard errors: %.3g)" % (s, sd, 5 * se_sd)
        lo, hi = ref.min().item(), ref.max().item()
        if why is None and kind != "random":
            if kind != "uniform":
                lo, hi = kind[1], kind[2]
            slack = 1e-6 * max(abs(lo), abs(hi))
            if x.min().item() < lo - slack or x.max().item() > hi + slack:
                why = "values in [%.6g, %.6g], outside torch's [%.6g, %.6g]" % (x.min(), x.max(), lo, hi)
            # n uniform values leave a gap of k / n of the range at an end with probability about e^-k
            elif kind == "uniform" and (x.max().item() < hi - max(0.05, 12 / n) * (hi - lo)
                                        or x.min().item() > lo + max(0.05, 12 / n) * (hi - lo)):
                why = "values in [%.6g, %.6g] do not fill torch's [%.6g, %.6g]" % (x.min(), x.max(), lo, hi)
        detail = "mean %.4g (torch %.4g), std %.4g (torch %.4g)" % (m, mu, s, sd)
    if why:
        bad += 1
        print("not ok %s: %s" % (name, why))
    else:
        print("ok %s: %s" % (name, detail))
sys.exit(1 if bad else 0)
