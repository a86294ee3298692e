#!/usr/bin/env python3
"""A model-family spec (specs/char_lstm.lua, specs/llama.lua) against the PyTorch module
that `--emit torch` writes for it, driven by tests/suite_families.sh:

    family_parity.py NAME DIR B STEPS PRINT OPTIMIZER CLIP

DIR holds `loom build SPEC --precision=32-true --emit torch` of the spec without its
learning-rate schedule (model.py, model.c) and DIR/parity, tests/harness/parity.c
compiled against it.  PRINT holds `loom inspect SPEC`'s print(model).  OPTIMIZER and
CLIP are the spec's `optimizer = ...` and `clip = ...` values ("-": none).

Prints two TAP results:
  print_NAME   str(model) of the emitted module equals loom inspect's print(model);
  parity_NAME  PyTorch builds the emitted module (torch.manual_seed(0), every parameter
               then moved by 0.1 N(0, 1) so that RMSNorm's weights are not ones), writes its
               state_dict and a batch (int fields uniform in [0, high)); the harness runs
               STEPS training steps on that batch (forward, backward, clip, the spec's
               optimizer at a constant lr) and PyTorch the same with torch.optim: every
               step's loss and every final parameter within 1e-4 relative (fp32), measured
               per tensor as max|loom - torch| / max|torch|; where PyTorch's own fp32
               run is farther than 1e-4/DEV_FACTOR from its fp64 one (Adam near zero
               gradients), DEV_FACTOR times that distance (tests/torch/parity.py's rule).
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ops_parity import fields  # noqa: E402
from parity import DEV_FACTOR, make_optimizer, parse_optimizer, read_safetensors, rel, write_safetensors  # noqa: E402

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

TOL = 1e-4
torch.set_num_threads(1)


def run_torch(model, state, batch, steps, opt_text, clip_text, dtype):
    """STEPS steps in DTYPE from STATE: (the losses, {parameter: final value})."""
    model = model.to(dtype)
    model.load_state_dict(state, strict=True)
    model.train()
    opt = make_optimizer(model, opt_text)
    clip = parse_optimizer("clip " + clip_text)[1] if clip_text != "-" else {}
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        if "max_norm" in clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip["max_norm"])
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64), {n: p.detach().double().clone() for n, p in model.named_parameters()}


def main():
    name, d, B, steps, printed, opt_text, clip_text = sys.argv[1:8]
    B, steps = int(B), int(steps)
    spec = importlib.util.spec_from_file_location("emitted_" + name, os.path.join(d, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = [c for c in vars(mod).values() if isinstance(c, type) and hasattr(c, "training_loss")][0]
    torch.manual_seed(0)
    model = cls()
    expected = open(printed).read().rstrip("\n")
    if str(model) == expected:
        print("ok print_%s: the emitted module prints as loom inspect" % name)
    else:
        print("not ok print_%s: print(model) differs from loom inspect's:\n%s\n# loom:\n%s" % (name, model, expected))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    work = os.path.join(d, "work")
    os.makedirs(work, exist_ok=True)
    write_safetensors(os.path.join(work, "weights.safetensors"), model.state_dict())
    batch = {}
    g = torch.Generator().manual_seed(1)
    for f, is_int, per, high in fields(os.path.join(d, "model.c")):
        if not is_int:
            raise SystemExit("not ok parity_%s: float batch field %s (the family specs read token files)" % (name, f))
        t = torch.randint(0, high, (B,) if per == 1 else (B, per), generator=g, dtype=torch.int64)
        np.save(os.path.join(work, f + ".npy"), t.numpy())
        batch[f] = t
    r = subprocess.run([os.path.join(d, "parity"), work, str(B), str(steps)], capture_output=True, text=True)
    if r.returncode != 0:
        print("not ok parity_%s: the harness exited %d: %s" % (name, r.returncode, (r.stderr or r.stdout).strip()))
        return
    got = read_safetensors(os.path.join(work, "out.safetensors"))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ref32, ref64 = run_torch(model, state, batch, steps, opt_text, clip_text, torch.float32), \
        run_torch(model, state, batch, steps, opt_text, clip_text, torch.float64)
    rows = [("loss", got["loss"].reshape(-1), ref32[0], ref64[0])]
    for pname, p in ref32[1].items():
        rows.append((pname, got[pname], p, ref64[1][pname]))
    worst, bad = ("", 0.0), []
    for tname, c, t, t64 in rows:
        # Adam's steps divide by √v: where a gradient is near zero, fp32 rounding moves a
        # parameter visibly; PyTorch's own fp32 run then differs from its fp64 one too, and
        # loom may differ by up to DEV_FACTOR times that (tests/torch/parity.py's rule)
        dev = rel(t, t64)
        tol = max(TOL, DEV_FACTOR * dev)
        err = rel(c, t) if c.shape == t.shape else float("inf")
        print("#   %-48s err %.2e  tol %.1e (torch32-vs-torch64 %.2e, loom-vs-torch64 %.2e)" % (
            tname, err, tol, dev, rel(c, t64) if c.shape == t.shape else float("inf")))
        if not err <= tol:
            bad.append("%s %.2e" % (tname, err))
        if err / tol > worst[1]:
            worst = (tname, err / tol)
    if bad:
        print("not ok parity_%s: %s above tolerance" % (name, ", ".join(bad)))
    else:
        print("ok parity_%s: %d steps, losses %s, worst err/tol %.2f (%s) over %d tensors" % (
            name, steps, " ".join("%.6g" % x for x in ref32[0].tolist()), worst[1], worst[0], len(rows)))


if __name__ == "__main__":
    main()
