#!/usr/bin/env python3
"""Parity of a loom-generated model with its PyTorch reference (tests/torch/models.py),
driven by tests/suite_parity.sh with tests/harness/parity.c.

  parity.py run MANIFEST
      MANIFEST: one case a line, tab-separated:
        NAME SPEC B STEPS OPTIMIZER CLIP HARNESS32 HARNESS64
      OPTIMIZER is the spec's constructor text ('SGD { lr = 0.01, momentum = 0.9 }'),
      CLIP the spec's clip table ('{ max_norm = 0.5 }', or '-' for none), HARNESS32/64
      parity.c compiled against the model generated with that optimizer at
      --precision=32-true and 64-true.  STEPS = 0: one forward in training mode and one
      backward (dloss = 1); STEPS > 0: that many training steps on the one batch
      (forward, backward, clip_gradients, optimizer step), as torch.optim and Fabric's
      clip_gradients (clip_grad_norm_ / clip_grad_value_) take them.
      For each spec it builds the reference (torch.manual_seed(0)) with non-default
      BatchNorm affine parameters and running statistics (so the running-stat update
      starts from a non-trivial state), writes its state_dict as safetensors (fp32 and
      fp64; num_batches_tracked int64) and a batch as one .npy per field (the names of
      the spec's data source).  Each case prints two TAP lines: parity_NAME (fp32) and
      parity64_NAME (fp64), details as '#' lines.

What is compared: the loss (of every step), every gradient (STEPS = 0), and the state
after the forward / the steps: parameters, running statistics (which also covers
BatchNorm's momentum and unbiased variance), num_batches_tracked (must be equal).

The measure, per tensor:  err = max|c - t| / max|t|  (c: loom, t: PyTorch), relative to
the tensor's scale rather than elementwise; the losses of the steps count as one tensor.
  fp64 (loom --precision=64-true against the module in float64): err < 1e-8.  Both
      sides compute the same formulas: one step agrees to ~1e-14; 20 Adam steps amplify
      rounding to at most 7e-10 (measured); a difference in the math (bias correction,
      eps placement, weight decay, BatchNorm's unbiased variance) is >= 1e-4.
  fp32: err < max(1e-4, 10 x dev), dev = the same err between PyTorch in float32 and
      PyTorch in float64.  One forward/backward: dev ~ 1e-5 at most, so 1e-4 applies
      (and loom fp32 is as close to fp64 as PyTorch fp32 is).  But 20 Adam steps on one
      batch amplify rounding chaotically (the update m/sqrt(v) is scale-free, so small
      gradients' rounding noise becomes lr-sized steps; a max-pool near-tie decided
      differently changes a gradient by O(1)): PyTorch fp32 then differs from PyTorch
      fp64 by up to 1e-3 (FashionMLP), 1e-2 (FashionCNN) and 3e-2 (PawModel, B=4), even
      SGD by 5e-4 on PawModel, and no fp32 implementation can be held closer than that
      to PyTorch fp32: two fp32 implementations land up to ~7x dev apart (measured).

One class of tensor is compared differently: a parameter the loss does not depend on
in training mode, namely a bias followed (through max-pool, Flatten and Linear only)
by a training-mode BatchNorm, which subtracts the batch mean and the bias with it.  Its
gradient is 0 mathematically, both sides return rounding noise whose ratio means
nothing, and Adam turns that noise into +-lr steps of random sign.  For these
(ZERO_GRAD) the gradient must be below 1e-4 (fp32; 1e-9 fp64) x the largest gradient of
the model on both sides, and after optimizer steps they are not compared.
"""
import json
import math
import os
import re
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print("cannot import torch and numpy: %s" % e, file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402  (the hand-written references)

TOL32, TOL64, DEV_FACTOR = 1e-4, 1e-8, 10.0
# paw after training steps in fp32: its max-pools route each gradient to the larger of
# near-equal values, so another summation order (oneDNN's kernels differ between CPUs)
# can flip a route within 20 steps.  Measured on an Intel Xeon (AMX): img_input.7.weight
# 3.3e-4 from PyTorch after 20 SGD-Nesterov steps, the same with the code of stop 27
# (below 1e-4 on an AMD EPYC); the 64-true run checks the same steps within 1e-8.
STEPS_TOL32 = {"paw": 1e-3}

# spec -> (batch fields: name, per-sample shape, kind), the model's inputs, the loss
SPECS = {
    "fashion_mlp": ([("image", (1, 28, 28), "uniform"), ("label", (), ("randint", 10))],
                    ["image"], lambda out, b: F.cross_entropy(out, b["label"])),
    "fashion_cnn": ([("image", (1, 28, 28), "uniform"), ("label", (), ("randint", 10))],
                    ["image"], lambda out, b: F.cross_entropy(out, b["label"])),
    "paw": ([("img", (3, 128, 128), "uniform"), ("feat", (12,), "bernoulli"), ("target", (1,), "uniform")],
            ["img", "feat"], lambda out, b: F.binary_cross_entropy(out, b["target"])),
    "tiny_gpt": ([("idx", (models.GPT_T,), ("randint", 256)), ("targets", (models.GPT_T,), ("randint", 256))],
                 ["idx"], lambda out, b: F.cross_entropy(out.transpose(1, 2), b["targets"])),
}

# parameters whose gradient is identically zero in training mode (see the docstring)
ZERO_GRAD = {
    "fashion_mlp": set(),
    "fashion_cnn": {"features.0.bias", "features.4.bias"},
    "paw": {"img_input.7.bias", "img_input.10.bias", "feat_input.bias"},
    "tiny_gpt": set(),
}

DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "I64": (torch.int64, 8)}
NAMES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(path, tensors):
    """The safetensors layout: u64 LE header length, JSON header, raw LE bytes."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()   # numpy has no bf16
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        dt, size = DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype={torch.float32: np.float32, torch.float64: np.float64,
                                              torch.int64: np.int64}[dt])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out


def build_model(spec, seed):
    cls = models.SPECS[spec][0]
    torch.manual_seed(seed)
    model = cls()
    g = torch.Generator().manual_seed(seed + 1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            with torch.no_grad():
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.num_batches_tracked.fill_(3)
    return model


def prepare(spec, work, B, seed):
    """Writes WORK/w32/ and WORK/w64/, the directories the fp32 and fp64 harnesses
    read: weights.safetensors (the same values in float32 and float64) and one
    <field>.npy per batch field (float32 / int64, the same in both); returns the
    state_dict and the batch."""
    model = build_model(spec, seed)
    sd = model.state_dict()
    dirs = {sub: os.path.join(work, sub) for sub in ("w32", "w64")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(dirs["w32"], "weights.safetensors"), sd)
    write_safetensors(os.path.join(dirs["w64"], "weights.safetensors"),
                      {k: v.double() if v.is_floating_point() else v for k, v in sd.items()})
    g = torch.Generator().manual_seed(seed + 2)
    batch = {}
    for name, shape, kind in SPECS[spec][0]:
        if kind == "uniform":
            t = torch.rand((B,) + shape, generator=g)
        elif kind == "bernoulli":
            t = (torch.rand((B,) + shape, generator=g) < 0.5).float()
        else:
            t = torch.randint(0, kind[1], (B,) + shape, generator=g)
        batch[name] = t
        for d in dirs.values():
            np.save(os.path.join(d, name + ".npy"), t.numpy())
    return sd, batch


def lua_pattern(p):
    """A Lua pattern of the simple kind the tests use (%., ^, $, %d, %a) as a regex."""
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if c == "%" and i + 1 < len(p):
            n = p[i + 1]
            out += {"d": r"\d", "a": "[A-Za-z]", "w": r"\w", "s": r"\s"}.get(n, re.escape(n))
            i += 2
            continue
        out += c if c in "^$.*+?[]" else re.escape(c)
        i += 1
    return out.replace("-", "*?") if "-" in p else out


def parse_optimizer(text):
    """'SGD { lr = 0.01, momentum = 0.9, nesterov = true, betas = {0.8, 0.99} }' -> ('SGD', {...});
    groups = { { params = "pat", lr = x }, ... } -> a list of dicts"""
    m = re.fullmatch(r"\s*(\w+)\s*\{(.*)\}\s*", text)
    kind, body = m.group(1), m.group(2)
    args = {}
    g = re.search(r"groups\s*=\s*\{(.*\})\s*\}", body)
    if g:
        body = body[:g.start()] + body[g.end():]
        args["groups"] = []
        for grp in re.findall(r"\{([^}]*)\}", g.group(1)):
            d = {}
            for key, val in re.findall(r"(\w+)\s*=\s*(\"[^\"]*\"|[^,]+)", grp):
                val = val.strip()
                d[key] = val.strip('"') if val.startswith('"') else float(val)
            args["groups"].append(d)
    for key, val in re.findall(r"(\w+)\s*=\s*(\{[^}]*\}|[^,]+)", body):
        val = val.strip()
        if val.startswith("{"):
            args[key] = tuple(float(x) for x in val.strip("{}").split(","))
        elif val in ("true", "false"):
            args[key] = val == "true"
        else:
            args[key] = float(val)
    return kind, args


class NAdam2(torch.optim.NAdam):
    """torch.optim.NAdam with PyTorch 2.0's mu_product_next = mu_product * mu_next (1.13
    multiplies mu in twice; loom follows 2.0)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.)
                    st["mu_product"] = torch.tensor(1.)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                step = st["step"].item()
                grad = p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                md = group["momentum_decay"]
                mu = beta1 * (1. - 0.5 * (0.96 ** (step * md)))
                mu_next = beta1 * (1. - 0.5 * (0.96 ** ((step + 1) * md)))
                st["mu_product"] *= mu
                mu_product_next = st["mu_product"] * mu_next
                st["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = st["exp_avg_sq"].div(1 - beta2 ** step).sqrt().add_(group["eps"])
                p.addcdiv_(grad, denom, value=-group["lr"] * (1. - mu) / (1. - st["mu_product"].item()))
                p.addcdiv_(st["exp_avg"], denom, value=-group["lr"] * mu_next / (1. - mu_product_next.item()))


def make_optimizer(model, text):
    kind, a = parse_optimizer(text)
    if "betas" in a and len(a["betas"]) != 2:
        raise ValueError("betas: " + text)
    cls = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW,
           "RMSprop": torch.optim.RMSprop, "Adagrad": torch.optim.Adagrad, "Adamax": torch.optim.Adamax,
           "NAdam": NAdam2, "RAdam": torch.optim.RAdam}[kind]
    min_ndim = int(a.pop("decay_min_ndim", 0))
    specs = a.pop("groups", None)
    if specs:
        # loom's groups: a parameter is in the first group whose pattern its name matches
        named = list(model.named_parameters())
        groups = [{"params": []} for _ in specs] + [{"params": []}]
        for i, s in enumerate(specs):
            for k in ("lr", "weight_decay"):
                if k in s:
                    groups[i][k] = s[k]
        for n, p in named:
            i = next((i for i, s in enumerate(specs) if re.search(lua_pattern(s["params"]), n)), len(specs))
            groups[i]["params"].append(p)
        return cls(groups, **a)
    if min_ndim > 0:
        # AdamW's two parameter groups (nanoGPT's): weight decay on >= min_ndim dimensions only
        params = list(model.parameters())
        groups = [{"params": [p for p in params if p.dim() >= min_ndim]},
                  {"params": [p for p in params if p.dim() < min_ndim], "weight_decay": 0.0}]
        return cls(groups, **a)
    return cls(model.parameters(), **a)


def rel(c, t):
    c, t = c.double(), t.double()
    scale = t.abs().max().item()
    d = (c - t).abs().max().item()
    return d / scale if scale > 0 else d


def torch_run(spec, state, batch, steps, opt_text, clip_text, dtype):
    """PyTorch's side of a case: (losses, {param: grad} or None, state_dict after)."""
    fields, inputs, loss_fn = SPECS[spec]
    model = models.SPECS[spec][0]().to(dtype)
    model.load_state_dict(state, strict=True)
    model.train()
    b = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}

    def loss():
        return loss_fn(model(*[b[n] for n in inputs]), b)

    if steps == 0:
        L = loss()
        L.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        return [L.item()], grads, {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, opt_text)
    clip = parse_optimizer("clip " + clip_text)[1] if clip_text not in ("", "-") else {}
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        L = loss()
        L.backward()
        if "max_norm" in clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip["max_norm"], clip.get("norm_type", 2.0))
        elif "clip_val" in clip:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip["clip_val"])
        opt.step()
        losses.append(L.item())
    return losses, None, {k: v.detach().clone() for k, v in model.state_dict().items()}


def compare(spec, steps, got, ref, other, f64):
    """Rows (name, err, tolerance, note) of loom's output `got` against PyTorch `ref`;
    `other` is PyTorch in the other precision (for the fp32 tolerance)."""
    zero = ZERO_GRAD[spec]
    rows = []

    base32 = STEPS_TOL32.get(spec, TOL32) if steps > 0 else TOL32

    def tol(err_dev):
        return TOL64 if f64 else max(base32, DEV_FACTOR * err_dev)

    losses, grads, state = ref
    o_losses, o_grads, o_state = other
    cl = got["loss"].double().tolist()
    if len(cl) != len(losses):
        return [("loss", math.inf, 0, "%d losses, torch %d" % (len(cl), len(losses)))]
    le = rel(torch.tensor(cl), torch.tensor(losses))   # the losses of all steps as one tensor
    ld = rel(torch.tensor(o_losses), torch.tensor(losses))
    rows.append(("loss", le, tol(ld), "last %.8g, torch %.8g" % (cl[-1], losses[-1])))
    if grads is not None:
        gmax = max(g.abs().max().item() for g in grads.values())
        for n, g in grads.items():
            c = got["grad." + n]
            if n in zero:
                e = max(c.abs().max().item(), g.abs().max().item()) / gmax
                rows.append(("grad." + n, e, TOL64 if f64 else TOL32, "zero-gradient parameter: max|grad| / max|any grad|"))
            else:
                rows.append(("grad." + n, rel(c, g), tol(rel(o_grads[n], g)),
                             "" if f64 else "loom-vs-torch64 %.2e, torch-vs-torch64 %.2e" % (rel(c, o_grads[n]), rel(g, o_grads[n]))))
    for n, t in state.items():
        c = got[n]
        if t.dtype == torch.int64:
            same = torch.equal(c, t)
            rows.append((n, 0.0 if same else math.inf, 0.0, "%d, torch %d" % (c.item(), t.item())))
        elif steps > 0 and n in zero:
            rows.append((n, rel(c, t), math.inf, "not compared: the loss does not depend on it"))
        else:
            rows.append((n, rel(c, t), tol(rel(o_state[n], t)),
                         "" if f64 else "loom-vs-torch64 %.2e, torch-vs-torch64 %.2e" % (rel(c, o_state[n]), rel(t, o_state[n]))))
    return rows


def report(name, rows):
    bad = [r for r in rows if not r[1] <= r[2]]
    compared = [r for r in rows if r[2] != math.inf and "zero-gradient" not in r[3]]
    w = max(compared, key=lambda r: r[1] / r[2] if r[2] > 0 else (0 if r[1] == 0 else math.inf))
    summary = "worst %.3e (%s, tolerance %.1e)" % (w[1], w[0], w[2])
    if bad:
        print("not ok %s: %d tensors out of tolerance; %s" % (name, len(bad), summary))
    else:
        print("ok %s" % name)
    print("#   %s" % summary)
    for n, e, t, note in rows:
        print("#   %s %-36s err %.3e  tol %.1e  %s" % ("  ok" if e <= t else "FAIL", n, e, t, note))
    sys.stdout.flush()


def run_harness(exe, work, B, steps):
    r = subprocess.run([exe, work, str(B), str(steps)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (exe, r.returncode, (r.stderr or r.stdout).strip()))
    return read_safetensors(os.path.join(work, "out.safetensors"))


def run(manifest):
    root = os.path.dirname(os.path.abspath(manifest))
    prepared = {}
    failed = 0
    with open(manifest) as f:
        cases = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for name, spec, B, steps, opt_text, clip_text, h32, h64 in cases:
        B, steps = int(B), int(steps)
        if (spec, B) not in prepared:
            work = os.path.join(root, "%s.B%d" % (spec, B))
            prepared[(spec, B)] = (work,) + prepare(spec, work, B, 0)
        work, state, batch = prepared[(spec, B)]
        try:
            ref32 = torch_run(spec, state, batch, steps, opt_text, clip_text, torch.float32)
            ref64 = torch_run(spec, state, batch, steps, opt_text, clip_text, torch.float64)
        except Exception as e:   # noqa: BLE001 — a reference that does not run is a failed test
            for p in ("parity_", "parity64_"):
                print("not ok %s%s: PyTorch reference failed: %s" % (p, name, e))
            failed += 2
            continue
        for prefix, exe, sub, ref, other, f64 in (("parity_", h32, "w32", ref32, ref64, False),
                                                  ("parity64_", h64, "w64", ref64, ref32, True)):
            try:
                got = run_harness(exe, os.path.join(work, sub), B, steps)
            except Exception as e:   # noqa: BLE001
                print("not ok %s%s: %s" % (prefix, name, e))
                failed += 1
                continue
            rows = compare(spec, steps, got, ref, other, f64)
            report(prefix + name, rows)
            failed += any(not r[1] <= r[2] for r in rows)
    return 1 if failed else 0


def main():
    torch.set_num_threads(1)
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        return run(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
