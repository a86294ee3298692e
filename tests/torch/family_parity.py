#!/usr/bin/env python3
"""Parity of one model-family spec (specs/*.lua) with the PyTorch module that
`loom build SPEC --emit torch` writes, driven by tests/suite_families.sh:

    family_parity.py NAME DIR DIR64 B STEPS OPTIMIZER PRINT [CLIP [DIRBF16]]

torch.randn and the like (a spec's randn, randn_like, rand, rand_like) return the loom
program's draws at each step (tests/torch/philox.py: Philox and Box-Muller written again
in Python, the streams read from model.c), so the two sides see the same noise.

OPTIMIZER "step": the spec writes its own train.training_step, which USER_STEPS below
writes again in PyTorch (its optimizers and its step, on the emitted module); the
checks are then NAME_print and NAME_steps (a training step has no one backward), and
with DIRBF16 (the spec built at bf16-mixed, with its parity harness) NAME_bf16: one
step against PyTorch's with Fabric's bf16-mixed (check_bf16 says how), and with DIR16
(the spec at 16-mixed) NAME_f16: the same with float16 and its GradScaler (check_f16).

DIR holds `loom build SPEC --precision=32-true --emit torch --no-compile` of the spec
(its scheduler taken out: the reference steps torch.optim at a constant lr) and
DIR/parity, tests/harness/parity.c compiled against it; DIR64 the same at 64-true.  OPTIMIZER is the spec's
optimizer text ('AdamW { lr = 1e-3 }'); PRINT holds `loom inspect SPEC`'s print(model);
CLIP the spec's `clip = ...` value ('{ max_norm = 1.0 }'; '-' or absent: none), applied
after each backward as clip_grad_norm_.

PyTorch builds the emitted module (torch.manual_seed(0): PyTorch's own initialisation,
then every bias and norm parameter moved by 0.1 N(0, 1), so that no affine parameter is
the identity), writes its state_dict and a batch (the shapes of model.h's Batch; float
fields N(0, 1), int fields uniform in [0, high)).  Three checks, one TAP line each:
  NAME_print  print(model) of the emitted module equals loom inspect's;
  NAME_grad   one forward (training mode) and backward: the loss and every gradient,
              max|loom - torch| / max|torch| per tensor within 1e-4 (fp32); a gradient
              that is zero but for rounding (a conv's bias before BatchNorm, whose mean
              BatchNorm removes: max|torch| below 1e-6 of the largest gradient) is
              measured as max(|loom|, |torch|) / the largest gradient (parity.py's rule);
  NAME_steps  STEPS training steps on that batch with the spec's optimizer: in fp32
              every step's loss within 1e-4; in fp64 (the 64-true program against
              PyTorch in float64) every step's loss and the final state_dict
              (parameters, running statistics) within 1e-8, counters equal.  The fp32
              parameters after Adam steps are not compared: Adam divides by sqrt(v), so
              where a gradient is near zero (1e-7 of the largest) float32 rounding alone
              moves the update by up to lr, in PyTorch's own float32 run as in loom's.
"""
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import TOL32, TOL64, make_optimizer, parse_optimizer, read_safetensors, rel, write_safetensors  # noqa: E402
from step_parity import gan_optimizers, gan_step  # noqa: E402  (tests/step/dcgan.lua's, as specs/dcgan.lua's)
from philox import LoomDraws  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)


def vae_step(m, opts, b, backward=lambda loss: loss.backward()):
    """specs/vae.lua's training_step: the negative ELBO, reparameterised with randn_like
    (`backward`: fabric.backward, 16-mixed's scaled one)"""
    opt = opts["all"]
    opt.zero_grad()
    mu, logvar = m.encode(b)
    z = mu + torch.exp(logvar * 0.5) * torch.randn_like(mu)
    logits = m.decoder(m.decoder_input(z).reshape(-1, 64, 7, 7))
    recon = F.binary_cross_entropy_with_logits(torch.flatten(logits, 1), torch.flatten(b["image"], 1)) * 784
    kl = torch.mean(torch.sum(1 + logvar - mu * mu - torch.exp(logvar), 1)) * -0.5
    loss = recon + kl
    backward(loss)
    opt.step()
    return loss


# bf16-mixed (NAME_bf16): Fabric's MixedPrecision around each call of the model the step
# makes (m(b), m.D(x), m:encode(b), a submodule's call; loom's precision plan casts the
# same way, gen/precision.lua): the call's float inputs to bfloat16 (convert_input), its
# ops under torch.autocast("cpu", bfloat16), its float outputs back to float32
# (convert_output); what the step computes between the calls (the losses) in float32.
# PyTorch 1.13's CPU autocast leaves conv_transpose in float32 where PyTorch 2's (and
# CUDA autocast) run it in bfloat16, as loom's op table does, and its CPU bfloat16
# conv_transpose2d fails (it checks the channels as a convolution's): here it is the
# bfloat16 op by hand, its operands rounded to bfloat16, the sums in float32, the result
# rounded to bfloat16 (the gradients round at the same casts going back).
def _to(x, dtype):
    if torch.is_tensor(x):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to(v, dtype) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, dtype) for v in x)
    return x


def _conv_transpose2d_lowp(orig):
    def f(x, w, b=None, *args, **kw):
        if not torch.is_autocast_cpu_enabled():
            return orig(x, w, b, *args, **kw)
        bf = torch.get_autocast_cpu_dtype()
        with torch.autocast("cpu", enabled=False):
            low = lambda t: t.to(bf).float()   # noqa: E731
            return orig(low(x), low(w), None if b is None else low(b), *args, **kw).to(bf)
    return f


def _autocast_call(f, args, by_hand=True):
    saved = F.conv_transpose2d
    if by_hand:
        F.conv_transpose2d = _conv_transpose2d_lowp(saved)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = f(*_to(args, torch.bfloat16))
    finally:
        F.conv_transpose2d = saved
    return _to(out, torch.float32)


class FabricBF16:
    """The model as a training step under Fabric's bf16-mixed sees it: every call (the
    model's, a submodule's, a method's) through _autocast_call.  by_hand=False leaves
    conv_transpose2d to this PyTorch's autocast (float32: bench/torch_step.py's timing)."""

    def __init__(self, m, by_hand=True):
        object.__setattr__(self, "_m", m)
        object.__setattr__(self, "_by_hand", by_hand)

    def __call__(self, *args):
        return _autocast_call(self._m, args, self._by_hand)

    def __getattr__(self, k):
        v = getattr(self._m, k)
        return (lambda *args: _autocast_call(v, args, self._by_hand)) if callable(v) else v


# 16-mixed (NAME_f16): Fabric's MixedPrecision("16-mixed") around each call of the model,
# with float16 for bfloat16.  PyTorch 1.13 has no float16 autocast on the CPU, nor CPU
# float16 kernels for convolutions, linear, BatchNorm or the activations, so each is
# CUDA autocast's float16 rule by hand (as tests/torch/step_parity.py's GAN16): linear,
# conv2d and conv_transpose2d take float16 operands, sum in float32 and round their
# output to float16; BatchNorm, ReLU, LeakyReLU and Tanh compute a float16 input in
# float32 and round their output (BatchNorm's statistics and affine in float32, as
# cuDNN's); the call's float inputs go to float16 and its outputs back to float32.
def _lowp16(orig):
    def f(x, w, b=None, *args, **kw):
        low = lambda t: t.half().float()   # noqa: E731
        return orig(low(x), low(w), None if b is None else low(b), *args, **kw).half()
    return f


def _in_float16(orig):
    def f(x, *args, **kw):
        kw.pop("inplace", None)
        if len(args) >= 2 and orig is _F_ORIG["leaky_relu"]:
            args = args[:1]   # (negative_slope, inplace): out of place here
        return orig(x.float(), *args, **kw).half() if x.dtype == torch.float16 else orig(x, *args, **kw)
    return f


_F_ORIG = {"linear": F.linear, "conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d,
           "batch_norm": F.batch_norm, "relu": F.relu, "leaky_relu": F.leaky_relu}


def _f16_call(f, args):
    saved_tanh = torch.tanh
    for k in ("linear", "conv2d", "conv_transpose2d"):
        setattr(F, k, _lowp16(_F_ORIG[k]))
    for k in ("batch_norm", "relu", "leaky_relu"):
        setattr(F, k, _in_float16(_F_ORIG[k]))
    torch.tanh = lambda x: saved_tanh(x.float()).half() if x.dtype == torch.float16 else saved_tanh(x)
    try:
        out = f(*_to(args, torch.float16))
    finally:
        for k, v in _F_ORIG.items():
            setattr(F, k, v)
        torch.tanh = saved_tanh
    return _to(out, torch.float32)


class FabricF16:
    """The model as a training step under Fabric's 16-mixed sees it: every call through _f16_call"""

    def __init__(self, m):
        object.__setattr__(self, "_m", m)

    def __call__(self, *args):
        return _f16_call(self._m, args)

    def __getattr__(self, k):
        v = getattr(self._m, k)
        return (lambda *args: _f16_call(v, args)) if callable(v) else v


# spec -> (its optimizers on the module, its training step)
USER_STEPS = {
    "dcgan": (gan_optimizers, gan_step),
    "vae": (lambda m: {"all": torch.optim.Adam(m.parameters(), lr=1e-3)}, vae_step),
}


def batch_fields(model_h, model_c):
    """(name, is_int, per-sample shape, high) of every Batch field, from model.h's
    struct comments ('real *image;   // (B, 3, 32, 32)') and model.c's batch info."""
    shapes = {n: tuple(int(d) for d in dims.split(",")[1:] if d.strip())
              for n, dims in re.findall(r"\*(\w+);\s*// \(B((?:, \d+)*)\)", open(model_h).read())}
    src = open(model_c).read()
    table = src[src.index("model_batch_info[] = {"):]
    table = table[:table.index("};")]
    return [(n, int(i), shapes[n], int(h)) for n, i, p, h in re.findall(r'\{"(\w+)", (\d), (\d+), (\d+)\}', table)]


def harness(d, work, B, steps):
    r = subprocess.run([os.path.join(d, "parity"), work, str(B), str(steps)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("the harness exited %d: %s" % (r.returncode, (r.stderr or r.stdout).strip()))
    return read_safetensors(os.path.join(work, "out.safetensors"))


def torch_steps(name, cls, state, batch, steps, opt_text, clip, dtype, draws):
    """PyTorch's STEPS steps in dtype: (the losses, the final state_dict).  `draws`: the
    loom program's randn/rand draws, which step s's torch.randn and the like return."""
    model = cls().to(dtype)
    model.load_state_dict(state, strict=True)
    model.train()
    b = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    if opt_text == "step":
        make_opts, step = USER_STEPS[name]
        opts = make_opts(model)
        losses = []
        for s in range(steps):
            with draws.step(s):
                losses.append(step(model, opts, b).item())
        return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, opt_text)
    losses = []
    for s in range(steps):
        opt.zero_grad()
        with draws.step(s):
            L = model.training_loss(b)
        L.backward()
        if "max_norm" in clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip["max_norm"])
        opt.step()
        losses.append(L.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


U = 2.0 ** -8   # bfloat16's unit roundoff: tests/torch/precision_parity.py's tolerances
BF16_TOL, BF16_DEV_FACTOR = 4 * U, 0.5
# As precision_parity.py's ILL_CONDITIONED: where BatchNorm over a small batch amplifies
# which float32 summation order tips a bf16 rounding, a tensor within BF16_ILL_FRACTION of
# PyTorch's own fp32-vs-bf16 distance passes (a program computing in fp32 sits at that
# distance).  dcgan at batch 4 (D's BatchNorm over 4 x 8 x 8): with oneDNN's direct bf16
# convolution (jit_bf16:avx512_core_bf16) for D.2 where PyTorch 1.13 sums D.2's forward
# in another order, grad.D.2.weight measured err 7.6e-2 against a distance of 1.9e-1
# (4.3e-3 where both sides run im2col-like GEMMs, ONEDNN_MAX_CPU_ISA=AVX512_CORE), the
# loss 6.3e-4 against 1.2e-3.
BF16_ILL_CONDITIONED, BF16_ILL_FRACTION = {"dcgan"}, 0.75


def user_step_once(name, cls, state, batch, draws, mixed):
    """One training step of the spec's own step in float32, the model as Fabric's
    bf16-mixed calls it when `mixed`: (its loss, {param: .grad after it}, state_dict)."""
    model = cls()
    model.load_state_dict(state, strict=True)
    model.train()
    make_opts, step = USER_STEPS[name]
    opts = make_opts(model)
    with draws.step(0):
        loss = step(FabricBF16(model) if mixed else model, opts, batch)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach().reshape(1), grads, {k: v.detach().clone() for k, v in model.state_dict().items()}


F16_U = 2.0 ** -11   # float16's unit roundoff
F16_TOL = 8 * F16_U
# steps of NAME_f16: vae's first two overflow at 65536 and 32768 (both skipped: the scale
# backs off twice); dcgan's first overflows (D's step skipped, G's taken at 32768), and a
# second step through its BatchNorms over batch 4 amplifies float16's roundings past any
# fixed tolerance (5e-2 to 1e-1 on D's gradients, PyTorch's own fp32 distance 0.3 to 0.6)
F16_STEPS = {"dcgan": 1, "vae": 2}
# dcgan (BF16_ILL_CONDITIONED: BatchNorm over batch 4): within 0.75 of PyTorch's own
# fp32-vs-16-mixed distance, as at bf16; its D gradients after the step hold G's backward
# still scaled, which the float32 step has no counterpart of: within 4 x F16_TOL (bf16's
# tolerance), measured 7.5e-3 (grad.D.2.weight, the convolution before D's BatchNorm)
F16_ILL_FRACTION, F16_ILL_GRAD_TOL = 0.75, 32 * F16_U


def check_f16(name, d16, work, B, cls, state, batch):
    """NAME_f16: the 16-mixed program's F16_STEPS training steps (from the same weights and
    batch) against the same steps in PyTorch under Fabric's 16-mixed (FabricF16, and
    tests/torch/step_parity.py's Scaler: torch.cuda.amp.GradScaler's rules, each backward
    from loss x scale, each optimizer's step unscaling its gradients and skipped on
    inf/nan): the scale after each step equal (see F16_STEPS: both specs overflow at
    65536, so the scaler skips and backs off); each returned loss, the gradients the last
    step leaves and the running statistics within 8u = 3.9e-3 of PyTorch's (dcgan: see
    F16_ILL_FRACTION); the losses closer to PyTorch's 16-mixed than its float32 steps are
    (a program computing in float32 would sit there)."""
    from step_parity import Scaler, ScaledStep
    try:
        w = os.path.join(d16, "work_f16")
        shutil.rmtree(w, ignore_errors=True)
        shutil.copytree(work, w)
        got = harness(d16, w, B, F16_STEPS[name])
        draws = LoomDraws(0, os.path.join(d16, "model.c"))
        make_opts, step = USER_STEPS[name]
        runs = {}
        for mixed in (True, False):
            b = batch
            model = cls()
            model.load_state_dict(state, strict=True)
            model.train()
            scaler = Scaler()
            opts = make_opts(model)
            if mixed:
                opts = {k: ScaledStep(o, scaler) for k, o in opts.items()}
            losses = []
            for s in range(F16_STEPS[name]):
                for o in opts.values():
                    o.zero_grad()   # (the harness's loop zeroes every gradient after a step)
                with draws.step(s):
                    losses.append(step(FabricF16(model) if mixed else model, opts, b,
                                       scaler.backward if mixed else (lambda L: L.backward())).detach().reshape(1))
                scaler.scales.append(scaler.scale.item())
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            runs[mixed] = (torch.cat(losses), grads, {k: v.detach().clone() for k, v in model.state_dict().items()}, scaler)
        ref, f32 = runs[True], runs[False]
        rows = [("loss", got["loss"], ref[0], f32[0])]
        rows += [("grad." + n, got["grad." + n], g, f32[1][n]) for n, g in ref[1].items()]
        rows += [(n, got[n], t, f32[2][n]) for n, t in ref[2].items() if t.is_floating_point() and "running" in n]
        bad, lines = 0, []
        ill = name in BF16_ILL_CONDITIONED
        for n, c, t, t32 in rows:
            c = c.reshape(t.shape)
            if not torch.equal(torch.isfinite(c), torch.isfinite(t)):
                err = math.inf
            else:
                fin = torch.isfinite(t)
                err = rel(c[fin], t[fin]) if fin.any() else 0.0
            dev = rel(t32, t) if bool(torch.isfinite(t).all()) else math.inf
            # a gradient the step leaves scaled (a GAN's D after G's backward) has no float32
            # distance (the float32 step does not scale): ill-conditioned, bf16's tolerance
            scaled = n.startswith("grad.") and not dev < 0.9
            limit = F16_TOL if not ill else (F16_ILL_GRAD_TOL if scaled else max(F16_TOL, F16_ILL_FRACTION * dev))
            ok = err <= limit or err < 1e-6
            if n == "loss" and dev > 1e-6:
                ok = ok and err <= BF16_DEV_FACTOR * dev
            bad += not ok
            lines.append("#   %s %-32s err %.2e  (PyTorch fp32 vs 16-mixed %.2e; limit %.1e)" % ("  ok" if ok else "FAIL", n, err, dev, limit))
        scales = got["scale"].tolist()
        lines.append("#   scale after each step: loom %s, torch %s (torch skipped %d optimizer steps)" % (scales, ref[3].scales, ref[3].skips))
        if scales != ref[3].scales:
            bad += 1
        print("%s %s_f16: %d 16-mixed steps, %d tensors%s" % ("ok" if bad == 0 else "not ok", name, F16_STEPS[name], len(rows),
                                                               "" if bad == 0 else ", %d out of tolerance" % bad))
        print("\n".join(lines))
        return bad == 0
    except Exception as e:   # noqa: BLE001 - a harness or reference that fails is a failed test
        print("not ok %s_f16: %s" % (name, e))
        return False


def check_bf16(name, dbf, work, B, cls, state, batch):
    """NAME_bf16: the bf16-mixed program's training step (one, from the same weights and
    batch) against the same step in PyTorch with Fabric's bf16-mixed (FabricBF16): its
    returned loss, the gradients it leaves, the running statistics.  The tolerances are
    tests/torch/precision_parity.py's: each tensor within 4u = 1.6e-2 of PyTorch's
    (err = max|loom - torch| / max|torch|), and, where bf16 visibly changes it (the loss
    always; others where PyTorch's float32 step is more than 4 x 4u away), closer to
    PyTorch's bf16-mixed than PyTorch's float32 is (err <= 0.5 x dev): a program that
    ignored the precision would sit at dev."""
    try:
        w = os.path.join(dbf, "work_bf16")
        shutil.rmtree(w, ignore_errors=True)
        shutil.copytree(work, w)
        got = harness(dbf, w, B, 1)
        draws = LoomDraws(0, os.path.join(dbf, "model.c"))
        ref = user_step_once(name, cls, state, batch, draws, True)
        f32 = user_step_once(name, cls, state, batch, draws, False)
        rows = [("loss", got["loss"], ref[0], f32[0])]
        rows += [("grad." + n, got["grad." + n], g, f32[1][n]) for n, g in ref[1].items()]
        rows += [(n, got[n], t, f32[2][n]) for n, t in ref[2].items() if t.is_floating_point() and "running" in n]
        bad, lines = 0, []
        for n, c, t, t32 in rows:
            err, dev = rel(c.reshape(t.shape), t), rel(t32, t)
            ill = name in BF16_ILL_CONDITIONED
            ok = err <= max(BF16_TOL, BF16_ILL_FRACTION * dev if ill else 0.0) or err < 1e-6
            if not ill and (n == "loss" or dev > 4 * BF16_TOL) and dev > 1e-6:
                ok = ok and err <= BF16_DEV_FACTOR * dev
            bad += not ok
            lines.append("#   %s %-32s err %.2e  (PyTorch fp32 vs bf16-mixed %.2e)" % ("  ok" if ok else "FAIL", n, err, dev))
        print("%s %s_bf16: one bf16-mixed step, %d tensors%s" % ("ok" if bad == 0 else "not ok", name, len(rows),
                                                                 "" if bad == 0 else ", %d out of tolerance" % bad))
        print("\n".join(lines))
        return bad == 0
    except Exception as e:   # noqa: BLE001 - a harness or reference that fails is a failed test
        print("not ok %s_bf16: %s" % (name, e))
        return False


def verdict(name, rows):
    """rows: (tensor, err, tolerance); prints the TAP line and the rows as comments."""
    bad = [r for r in rows if not r[1] <= r[2]]
    w = max(rows, key=lambda r: r[1] / r[2] if r[2] > 0 else (0 if r[1] == 0 else math.inf))
    if bad:
        print("not ok %s: %d of %d tensors out of tolerance (%s); worst %.2e (%s)"
              % (name, len(bad), len(rows), ", ".join(r[0] for r in bad[:4]), w[1], w[0]))
    else:
        print("ok %s: %d tensors, worst %.2e (%s, tolerance %.1e)" % (name, len(rows), w[1], w[0], w[2]))
    for n, e, t in sorted(rows, key=lambda r: -r[1])[:max(3, len(bad))]:   # the failures, or the worst three
        print("#   %s %-40s err %.2e  tol %.1e" % ("  ok" if e <= t else "FAIL", n, e, t))
    return not bad


def check_grad(name, d, work, B, model, batch):
    """NAME_grad: the harness's one forward and backward against training_loss(batch).backward()."""
    try:
        got = harness(d, work, B, 0)
        model.train()
        with LoomDraws(0, os.path.join(d, "model.c")).step(0):
            loss = model.training_loss(batch)
        loss.backward()
        rows = [("loss", rel(got["loss"].reshape(-1)[:1], loss.detach().reshape(1)), TOL32)]
        gmax = max(p.grad.abs().max().item() for p in model.parameters())
        for pname, p in model.named_parameters():
            c = got["grad." + pname]
            if p.grad.abs().max().item() < 1e-6 * gmax:
                rows.append(("grad." + pname + " (zero)", max(c.abs().max().item(), p.grad.abs().max().item()) / gmax, TOL32))
            else:
                rows.append(("grad." + pname, rel(c, p.grad), TOL32))
        print("#   loss: loom %.8g, torch %.8g" % (got["loss"].reshape(-1)[0].item(), loss.item()))
        return verdict(name + "_grad", rows)
    except Exception as e:   # noqa: BLE001 - a harness or reference that fails is a failed test
        print("not ok %s_grad: %s" % (name, e))
        return False


def main():
    name, d, d64, B, steps, opt_text, printed = sys.argv[1:3] + [sys.argv[3], int(sys.argv[4]), int(sys.argv[5])] + sys.argv[6:8]
    clip_text = sys.argv[8] if len(sys.argv) > 8 else "-"
    dbf = sys.argv[9] if len(sys.argv) > 9 and sys.argv[9] != "-" else None
    d16 = sys.argv[10] if len(sys.argv) > 10 and sys.argv[10] != "-" else None
    clip = parse_optimizer("clip " + clip_text)[1] if clip_text != "-" else {}
    spec = importlib.util.spec_from_file_location("emitted_" + name, os.path.join(d, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    expected = open(printed).read().rstrip("\n")
    cls = getattr(mod, expected.split("(", 1)[0])   # the model's class: print(model)'s first word
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() <= 1:
                p.add_(0.1 * torch.randn_like(p))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    work = os.path.join(d, "work")
    os.makedirs(work, exist_ok=True)
    write_safetensors(os.path.join(work, "weights.safetensors"), state)
    batch = {}
    g = torch.Generator().manual_seed(1)
    for f, is_int, shape, high in batch_fields(os.path.join(d, "model.h"), os.path.join(d, "model.c")):
        if is_int:
            t = torch.randint(0, high, (B,) + shape, generator=g, dtype=torch.int64)
        else:
            t = torch.randn((B,) + shape, generator=g, dtype=torch.float32)
        np.save(os.path.join(work, f + ".npy"), t.numpy())
        batch[f] = t
    ok = True

    if str(model) == expected:
        print("ok %s_print: print(model) of the emitted module equals loom inspect's" % name)
    else:
        ok = False
        print("not ok %s_print: print(model) differs from loom inspect's" % name)
        print("\n".join("# " + l for l in str(model).splitlines()))

    # one forward and backward from the same weights (a training step's backwards: NAME_steps)
    if opt_text != "step":
        ok &= check_grad(name, d, work, B, model, batch)

    # a training step at bf16-mixed
    if dbf:
        ok &= check_bf16(name, dbf, work, B, cls, state, batch)
    # and at 16-mixed
    if d16:
        ok &= check_f16(name, d16, work, B, cls, state, batch)

    # STEPS steps with the spec's optimizer
    try:
        got = {}
        for p, dd in (("32", d), ("64", d64)):   # the weights and batch are the same: F32 widens exactly
            w = os.path.join(dd, "work_steps")
            shutil.rmtree(w, ignore_errors=True)
            shutil.copytree(work, w)
            got[p] = harness(dd, w, B, steps)
            if got[p]["loss"].numel() != steps:
                raise RuntimeError("the %s-true harness wrote %d losses for %d steps" % (p, got[p]["loss"].numel(), steps))
        # the harness's seed is 0 (tests/harness/parity.c); each program's own draw streams
        l32, _ = torch_steps(name, cls, state, batch, steps, opt_text, clip, torch.float32, LoomDraws(0, os.path.join(d, "model.c")))
        l64, s64 = torch_steps(name, cls, state, batch, steps, opt_text, clip, torch.float64, LoomDraws(0, os.path.join(d64, "model.c")))
        rows = [("loss (fp32, %d steps)" % steps, rel(got["32"]["loss"], torch.tensor(l32)), TOL32),
                ("loss (fp64, %d steps)" % steps, rel(got["64"]["loss"], torch.tensor(l64, dtype=torch.float64)), TOL64)]
        for n, t in s64.items():
            if t.dtype == torch.int64:
                rows.append((n + " (fp64)", 0.0 if torch.equal(got["64"][n], t) else math.inf, 0.0))
            else:
                rows.append((n + " (fp64)", rel(got["64"][n], t), TOL64))
        ok &= verdict(name + "_steps", rows)
        print("#   fp32 losses: loom %s, torch %s" % (" ".join("%.7g" % x for x in got["32"]["loss"].tolist()),
                                                      " ".join("%.7g" % x for x in l32)))
    except Exception as e:   # noqa: BLE001
        ok = False
        print("not ok %s_steps: %s" % (name, e))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
