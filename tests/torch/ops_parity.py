#!/usr/bin/env python3
"""Parity of one op spec (tests/ops/*.lua) with PyTorch, driven by tests/suite_ops.sh:

    ops_parity.py NAME DIR B PRINT [nan]

PRINT holds `loom inspect SPEC`'s print(model), which the emitted module must print.

DIR holds `loom build SPEC --precision=32-true --emit torch` (model.py, model.c) and
DIR/parity, tests/harness/parity.c compiled against it.  PyTorch builds the emitted
module (torch.manual_seed(0), then every parameter moved by 0.1 N(0, 1), so that norms'
affine parameters are not the identity), writes its state_dict and a batch (float fields
N(0, 1) of shape (B, per sample), int fields uniform in [0, high) of shape (B,)), the
harness runs one forward (training mode) and backward (torch.randn and the like giving
the loom program's draws: tests/torch/philox.py), and the loss and every gradient
are compared with the module's training_loss(batch).backward() in float32.

Measure, per tensor: err = max|loom - torch| / max|torch|; tolerance 1e-4 (the issue's:
one fp32 forward and backward, where only the order of additions differs).  With `nan`
(a spec whose values are NaN by design) a NaN must be at the same elements in both, and
err is over the other elements; without it any NaN fails.
Prints one line: "ok NAME: worst ..." or "not ok NAME: ...", and '#' lines per tensor.
"""
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import read_safetensors, write_safetensors  # noqa: E402
from philox import LoomDraws  # noqa: E402

TOL = 1e-4
torch.set_num_threads(1)


def bce_weight_loss(model, b):
    """tests/ops/bce_weight.lua's loss through PyTorch's own weight and pos_weight (loom
    writes them with element-wise ops around the unweighted loss, which the emitted
    module repeats: this is the independent reference)."""
    F = torch.nn.functional
    y, z, t = model.a(b["x"]), model.b(b["x"]), b["target"]
    pw, w = torch.tensor([3.0, 0.5, 1.0, 2.0]), torch.tensor([1.5, 1.0, 0.25, 2.0])
    return (F.binary_cross_entropy_with_logits(y, t, pos_weight=pw)
            + F.binary_cross_entropy_with_logits(y, t, weight=w, pos_weight=torch.tensor([4.0]), reduction="sum") * 0.1
            # PyTorch 1.13 refuses a weight that needs a gradient: its definition, by hand
            + (F.binary_cross_entropy_with_logits(z, t, reduction="none") * torch.sigmoid(y)).mean()
            + F.binary_cross_entropy(torch.sigmoid(z), t, weight=w))


# specs whose loss is checked against PyTorch's functions written here, not the emitted module's
REFERENCE_LOSS = {"bce_weight": bce_weight_loss}


def fields(model_c):
    """The batch fields of model.c's model_batch_info: (name, is_int, per_sample, high)."""
    src = open(model_c).read()
    table = src[src.index("model_batch_info[] = {"):]
    table = table[:table.index("};")]
    return [(n, int(i), int(p), int(h)) for n, i, p, h in re.findall(r'\{"(\w+)", (\d), (\d+), (\d+)\}', table)]


def main():
    name, d, B, printed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    nan_ok = sys.argv[5:] == ["nan"]
    spec = importlib.util.spec_from_file_location("emitted_" + name, os.path.join(d, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = [c for c in vars(mod).values() if isinstance(c, type) and hasattr(c, "training_loss")][0]
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    work = os.path.join(d, "work")
    os.makedirs(work, exist_ok=True)
    write_safetensors(os.path.join(work, "weights.safetensors"), model.state_dict())
    batch = {}
    g = torch.Generator().manual_seed(1)
    for f, is_int, per, high in fields(os.path.join(d, "model.c")):
        if is_int:
            t = torch.randint(0, high, (B,) if per == 1 else (B, per), generator=g, dtype=torch.int64)
        else:
            t = torch.randn(B, per, generator=g, dtype=torch.float32)
        np.save(os.path.join(work, f + ".npy"), t.numpy())
        batch[f] = t
    r = subprocess.run([os.path.join(d, "parity"), work, str(B), "0"], capture_output=True, text=True)
    if r.returncode != 0:
        print("not ok %s: the harness exited %d: %s" % (name, r.returncode, (r.stderr or r.stdout).strip()))
        return
    got = read_safetensors(os.path.join(work, "out.safetensors"))
    model.train()
    # randn/rand in the spec: loom's draws at step 0 under the harness's seed 0 (tests/torch/philox.py)
    with LoomDraws(0, os.path.join(d, "model.c")).step(0):
        loss = REFERENCE_LOSS[name](model, batch) if name in REFERENCE_LOSS else model.training_loss(batch)
    loss.backward()
    rows = [("loss", got["loss"].reshape(-1)[:1].double(), loss.detach().reshape(1).double())]
    for pname, p in model.named_parameters():
        rows.append(("grad." + pname, got["grad." + pname].double(), p.grad.double()))
    worst, bad = ("", 0.0), []
    expected = open(printed).read().rstrip("\n")
    if str(model) != expected:
        bad.append("print(model) differs from loom inspect's:\n%s\n# loom:\n%s" % (model, expected))
    nans = 0
    for tname, c, t in rows:
        if nan_ok:
            nans += int(torch.isnan(t).sum())
            if not torch.equal(torch.isnan(c), torch.isnan(t)):
                bad.append("%s: NaN at %d elements, PyTorch's at %d (not the same)" % (tname, torch.isnan(c).sum(), torch.isnan(t).sum()))
                continue
            keep = ~torch.isnan(t)
            c, t = c[keep], t[keep]
            if t.numel() == 0:
                print("#   %-32s NaN in both" % tname)
                continue
        scale = t.abs().max().item()
        err = (c - t).abs().max().item() / (scale if scale > 0 else 1.0)
        print("#   %-32s err %.2e (scale %.3g)" % (tname, err, scale))
        if not err <= TOL:
            bad.append("%s %.2e" % (tname, err))
        if err > worst[1]:
            worst = (tname, err)
    if nan_ok and nans == 0:
        bad.append("no NaN in PyTorch's values: the spec does not test what it is for")
    if bad:
        print("not ok %s: %s above %g" % (name, ", ".join(bad), TOL))
    else:
        print("ok %s: loss %.6g, worst %.2e (%s) over %d tensors%s" % (name, loss.item(), worst[1], worst[0], len(rows),
              ", NaN at the same %d elements" % nans if nan_ok else ""))


if __name__ == "__main__":
    main()
