"""PyTorch's side of tests/suite_step.sh: a spec's own training step (train.training_step)
against the same step written in PyTorch, on the same weights and batch.

    step_parity.py CASE WORK HARNESS32 HARNESS64 B STEPS
    step_parity.py loop CASE CKPT1 CKPT3 WORK 32|64   (the program's own loop: see loop())
    step_parity.py f16 CASE WORK HARNESS16 B STEPS    (16-mixed: see check16())
    step_parity.py true CASE WORK HARNESS B STEPS     (bf16-true: see check_true())
    step_parity.py logged METRICS_CSV WORK STEPS      (fabric.log_dict: see logged())

CASE is dcgan or vae (tests/step/CASE.lua; the modules below are the spec's, with
PyTorch's parameter names).  PyTorch initialises the model (seed 0), writes
WORK/weights.safetensors and one WORK/<field>.npy per batch field; each harness
(tests/harness/parity.c linked with the 32-true and the 64-true program: model_user_step
STEPS times on that batch) writes out.safetensors, compared with PyTorch's float32 and
float64 runs of the same step: every step's returned loss and every final parameter, as
max |loom - torch| / max |torch| per tensor, within 1e-4 (fp32) and 1e-9 (fp64).
Prints one TAP result per precision (step_CASE, step64_CASE).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import read_safetensors, rel, run_harness, write_safetensors  # noqa: E402  (exits 77 without torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TOL32, TOL64 = 1e-4, 1e-9


class GAN(nn.Module):
    """tests/step/dcgan.lua's model"""
    def __init__(self):
        super().__init__()
        self.G = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())
        self.D = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))

    def forward(self, b):
        return self.G(b["z"]).reshape(b["z"].shape[0], 1, 28, 28)


def gan_optimizers(m):
    return {"d": torch.optim.Adam(m.D.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            "g": torch.optim.Adam(m.G.parameters(), lr=2e-4, betas=(0.5, 0.999))}


def gan_step(m, opts, b, backward=lambda loss: loss.backward(), d_factor=1.0, log=None):
    """DCGAN's alternating updates, as the spec's training_step (`backward`: fabric.backward,
    16-mixed's scaled one; `d_factor`: the overflow variant's factor on d_loss; `log`:
    fabric.log_dict, the logged variant's)"""
    opt_d, opt_g = opts["d"], opts["g"]
    fake = m(b)
    opt_d.zero_grad()
    d_real = m.D(b["image"])
    d_fake = m.D(fake.detach())
    ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
    d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    if d_factor != 1.0:
        d_loss = d_loss * d_factor
    if log:
        log({"d_loss": d_loss.item(), "d_real": d_real.mean().item()})
    backward(d_loss)
    opt_d.step()
    opt_g.zero_grad()
    g_loss = F.binary_cross_entropy_with_logits(m.D(fake), ones)
    if log:
        log({"g_loss": g_loss.item()})
    backward(g_loss)
    opt_g.step()
    return g_loss


class VAE(nn.Module):
    """tests/step/vae.lua's model"""
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.mu = nn.Linear(64, 8)
        self.logvar = nn.Linear(64, 8)
        self.dec = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 784))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), self.logvar(h)


def vae_optimizers(m):
    return {"all": torch.optim.Adam(m.parameters(), lr=1e-3)}


def vae_step(m, opts, b):
    opt = opts["all"]
    opt.zero_grad()
    mu, logvar = m.encode(b["x"])
    z = mu + torch.exp(logvar * 0.5) * b["eps"]
    recon = F.binary_cross_entropy_with_logits(m.dec(z), torch.flatten(b["x"], 1)) * 784
    kl = torch.mean(torch.sum(1 + logvar - mu * mu - torch.exp(logvar), 1)) * -0.5
    loss = recon + kl
    loss.backward()
    opt.step()
    return loss


# case -> (model, optimizers, step, batch fields: name, per-sample shape, distribution)
CASES = {
    "dcgan": (GAN, gan_optimizers, gan_step, [("image", (1, 28, 28), "uniform"), ("z", (16,), "normal")]),
    "vae": (VAE, vae_optimizers, vae_step, [("x", (1, 28, 28), "uniform"), ("eps", (8,), "normal")]),
}


class ClippedStep:
    """An optimizer whose step() first clips its own parameters' gradients: Fabric's
    fabric.clip_gradients(model, opt, max_norm=N) before opt.step() (Fabric clips the
    optimizer's parameters).  CLIPPED counts the steps where the clip acted."""
    CLIPPED = [0, 0]

    def __init__(self, opt, max_norm=None, clip_val=None):
        self.opt, self.max_norm, self.clip_val = opt, max_norm, clip_val

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        params = [p for group in self.opt.param_groups for p in group["params"] if p.grad is not None]
        if self.clip_val is not None:   # fabric.clip_gradients(model, opt, clip_val=V)
            acted = any(p.grad.abs().max().item() > self.clip_val for p in params)
            torch.nn.utils.clip_grad_value_(params, self.clip_val)
        else:
            acted = torch.nn.utils.clip_grad_norm_(params, self.max_norm).item() > self.max_norm
        ClippedStep.CLIPPED[0] += int(acted)
        ClippedStep.CLIPPED[1] += 1
        self.opt.step()


# variants of a case, made by tests/suite_step.sh with sed from tests/step/BASE.lua:
# name -> (BASE, its optimizers, its schedulers on them or None)
#  dcgan_sched: g's lr 1e-3 (d's 2e-4) and train.scheduler = CosineAnnealingLR { T_max = 4,
#    eta_min = 1e-5, interval = "step" }: each optimizer its own instance on its own lr,
#    each stepped once after every training step (gen/user_step.lua's optim_c)
#  dcgan_clip: both optimizers SGD { lr = 0.05, momentum = 0.9 } (Adam's update would
#    hardly see a gradient scaled as a whole) and train.clip = { max_norm = 0.05 }: each
#    optimizer's gradients clipped by their own norm before its step
#  dcgan_clipval: the same with train.clip = { clip_val = 1e-3 } (clip_grad_value_)
#  dcgan_groups: parameter groups in a training_step's optimizers (both AdamW, lr 1e-3,
#    weight_decay 0.5): d's decay_min_ndim = 2 (no decay on its biases), g's groups =
#    { { params = "%.bias$", weight_decay = 0 }, { params = "^G%.2%.weight$", lr = 5e-3 } },
#    and a CosineAnnealingLR (eta_min 1e-5) per optimizer, on each group's own lr; the
#    reference must differ from the same run without groups by more than 10x the tolerance
#  dcgan_freeze: train.freeze = { "^D%.1%." }: D.1's weight and bias requires_grad = False
#    (no gradient; d's Adam skips them; the backwards still pass through them), and loom's
#    D.1 after the steps must be the starting weights exactly
VARIANTS = {
    "dcgan_sched": ("dcgan",
                    lambda m: {"d": torch.optim.Adam(m.D.parameters(), lr=2e-4, betas=(0.5, 0.999)),
                               "g": torch.optim.Adam(m.G.parameters(), lr=1e-3, betas=(0.5, 0.999))},
                    lambda opts: [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=1e-5) for o in opts.values()]),
    "dcgan_clip": ("dcgan",
                   lambda m: {"d": ClippedStep(torch.optim.SGD(m.D.parameters(), lr=0.05, momentum=0.9), 0.05),
                              "g": ClippedStep(torch.optim.SGD(m.G.parameters(), lr=0.05, momentum=0.9), 0.05)},
                   None),
    "dcgan_clipval": ("dcgan",
                      lambda m: {"d": ClippedStep(torch.optim.SGD(m.D.parameters(), lr=0.05, momentum=0.9), clip_val=1e-3),
                                 "g": ClippedStep(torch.optim.SGD(m.G.parameters(), lr=0.05, momentum=0.9), clip_val=1e-3)},
                      None),
    "dcgan_freeze": ("dcgan", lambda m: (m.D[1].requires_grad_(False), gan_optimizers(m))[1], None),
    "dcgan_groups": ("dcgan", lambda m: groups_optimizers(m),
                     lambda opts: [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=1e-5) for o in opts.values()]),
}


def groups_optimizers(m, grouped=True):
    """dcgan_groups' optimizers: torch.optim's param_groups as the spec's declare them
    (grouped=False: every parameter in its optimizer's own group, which the case must
    differ from, or it checks nothing of the groups)"""
    def split(named, rules):
        groups = [dict(r, params=[]) for r in rules] + [{"params": []}]
        for name, p in named:
            i = next((k for k, r in enumerate(rules) if r["match"](name)), len(rules))
            groups[i]["params"].append(p)
        for gr in groups:
            gr.pop("match", None)
        return [gr for gr in groups if gr["params"]]
    if not grouped:
        return {"d": torch.optim.AdamW(m.D.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=0.5),
                "g": torch.optim.AdamW(m.G.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=0.5)}
    # d: decay_min_ndim = 2 (nanoGPT's two groups: no decay on the 1-d biases)
    d = split(m.D.named_parameters(prefix="D"), [{"match": lambda n: m.get_parameter(n).dim() < 2, "weight_decay": 0.0}])
    # g: groups = { { params = "%.bias$", weight_decay = 0 }, { params = "^G%.2%.weight$", lr = 5e-3 } }
    g = split(m.G.named_parameters(prefix="G"), [{"match": lambda n: n.endswith(".bias"), "weight_decay": 0.0},
                                                  {"match": lambda n: n == "G.2.weight", "lr": 5e-3}])
    return {"d": torch.optim.AdamW(d, lr=1e-3, betas=(0.5, 0.999), weight_decay=0.5),
            "g": torch.optim.AdamW(g, lr=1e-3, betas=(0.5, 0.999), weight_decay=0.5)}
for _v, (_base, _opts, _scheds) in VARIANTS.items():
    CASES[_v] = (CASES[_base][0], _opts, CASES[_base][2], CASES[_base][3])


# 16-mixed (step16_CASE): Fabric's MixedPrecision("16-mixed") around the same step.
# PyTorch 1.13 has no float16 autocast on the CPU, nor CPU float16 kernels for linear
# and the activations, so GAN16 applies CUDA autocast's float16 rules by hand, as loom's
# precision plan does (gen/precision.lua): each call of the model takes its float inputs
# to float16 (convert_input); linear's operands are float16, its products summed in
# float32 and its output rounded to float16; ReLU, LeakyReLU and Tanh run on float16
# values (computed in float32, rounded); the outputs go back to float32 (convert_output)
# and the losses are float32.  The casts' backwards round the gradients to float16 where
# autocast's do (an activation gradient of 65520 or more becomes inf).
def _lin16(layer, x):
    return F.linear(x.float(), layer.weight.half().float(), layer.bias.half().float()).half()


def _act16(f, x):
    return f(x.float()).half()


class GAN16:
    """tests/step/dcgan.lua's GAN as a training step under Fabric's 16-mixed calls it"""
    def __init__(self, m):
        self.m = m

    def __call__(self, b):
        G = self.m.G
        z = b["z"].half()
        h = _act16(torch.relu, _lin16(G[0], z))
        out = _act16(torch.tanh, _lin16(G[2], h))
        return out.float().reshape(z.shape[0], 1, 28, 28)

    def D(self, x):
        D = self.m.D
        h = _act16(lambda v: F.leaky_relu(v, 0.2), _lin16(D[1], torch.flatten(x.half(), 1)))
        return _lin16(D[3], h).float()


class Scaler:
    """torch.cuda.amp.GradScaler() as Fabric's MixedPrecision drives it (it needs CUDA in
    PyTorch 1.13, so its rules are written again here, with its defaults):
    fabric.backward(loss) is (loss * scale).backward(); each optimizer.step() is
    scaler.step(opt) -- its gradients times float(1 / double(scale)), the step skipped
    when one of them is inf or NaN -- then scaler.update(): x0.5 after a skip, x2 after
    2000 good steps in a row.  SCALES: the scale after each training step; SKIPS: the
    steps skipped."""
    def __init__(self):
        self.scale, self.tracker, self.skips, self.scales = torch.tensor(65536.0), 0, 0, []

    def backward(self, loss):
        (loss * self.scale).backward()

    def step(self, opt, params, clip=None):
        inv = self.scale.double().reciprocal().float()
        found = False
        for p in params:
            if p.grad is not None:
                found |= not bool(torch.isfinite(p.grad).all())
                p.grad.mul_(inv)
        if clip:
            clip()
        if found:
            self.skips += 1
            self.scale, self.tracker = self.scale * 0.5, 0
        else:
            opt.step()
            self.tracker += 1
            if self.tracker == 2000:
                grown = self.scale * 2.0
                if torch.isfinite(grown):
                    self.scale = grown
                self.tracker = 0


class ScaledStep:
    """An optimizer whose step() goes through the Scaler (and, with max_norm, clips its
    unscaled gradients first: fabric.clip_gradients unscales before it clips)"""
    def __init__(self, opt, scaler, max_norm=None):
        self.opt, self.scaler, self.max_norm = opt, scaler, max_norm
        self.params = [p for group in opt.param_groups for p in group["params"]]

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        clip = (lambda: torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.max_norm)) \
            if self.max_norm else None
        self.scaler.step(self.opt, self.params, clip)


# 16-mixed variants (tests/suite_step.sh makes their specs with sed from tests/step/dcgan.lua
# and builds them with --precision=16-mixed): name -> (d's SGD lr, d_loss factor, clip
# max_norm, a CosineAnnealingLR per optimizer).  SGD (momentum 0.9) rather than Adam: its
# update is proportional to the gradient, so the parameters' changes carry float16's
# rounding (Adam's sign-like first steps would amplify one rounding tip into lr).
#  dcgan16: both optimizers SGD { lr = 0.05, momentum = 0.9 }, train.clip = { max_norm =
#    0.05 } (each optimizer's gradients unscaled, then clipped), train.scheduler =
#    CosineAnnealingLR { T_max = 4, eta_min = 1e-5, interval = "step" } and train.freeze =
#    { "^G%.0%." } (G.0 without gradient, out of g's step, clip and unscale; unchanged)
#  dcgan16_overflow: d's lr 1e-3 and d_loss times 4: at the scales 65536 and 32768 its
#    float16 gradients overflow, so d's first two steps are skipped and the scale backs
#    off to 16384, where they do not (g keeps stepping); the scale after each step must
#    be PyTorch's
F16_VARIANTS = {
    "dcgan16": (0.05, 1.0, 0.05, True, "G.0"),
    "dcgan16_overflow": (1e-3, 4.0, None, False, None),
}


def torch_run16(case, state, batch, steps, half):
    """STEPS training steps of a 16-mixed variant in PyTorch: (losses, state_dict, the
    gradients the last step left, the Scaler).  half=False: the same step in float32,
    without autocast and scaler (how far float16 moves each tensor)."""
    lr_d, factor, max_norm, sched, frozen = F16_VARIANTS[case]
    m = GAN()
    m.load_state_dict(state)
    if frozen:
        m.get_submodule(frozen).requires_grad_(False)
    scaler = Scaler()
    opts = {"d": torch.optim.SGD(m.D.parameters(), lr=lr_d, momentum=0.9),
            "g": torch.optim.SGD(m.G.parameters(), lr=0.05, momentum=0.9)}
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=1e-5) for o in opts.values()] if sched else []
    if half:
        wrapped = {k: ScaledStep(o, scaler, max_norm) for k, o in opts.items()}
    else:
        wrapped = {k: ScaledStep(o, None, max_norm) for k, o in opts.items()}
        for w in wrapped.values():
            w.step = (lambda w: lambda: (w.max_norm and torch.nn.utils.clip_grad_norm_(
                [p for p in w.params if p.grad is not None], w.max_norm), w.opt.step()))(w)
    losses = []
    for _ in range(steps):
        if half:
            loss = gan_step(GAN16(m), wrapped, batch, scaler.backward, factor)
        else:
            loss = gan_step(m, wrapped, batch, d_factor=factor)
        losses.append(loss.item())
        scaler.scales.append(scaler.scale.item())
        for sc in scheds:
            sc.step()
    grads = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    return torch.tensor(losses), {k: v.detach().clone() for k, v in m.state_dict().items()}, grads, scaler


F16_U = 2.0 ** -11   # float16's unit roundoff
F16_TOL = 8 * F16_U


def harness_output(name, exe, work, B, steps):
    """parity.run_harness's out.safetensors, or None after printing its failure as NAME's result"""
    try:
        return run_harness(exe, work, B, steps)
    except RuntimeError as e:
        print("not ok %s: %s" % (name, e))
        return None


def check16(case, work, exe, B, steps, state, batch):
    """step16_CASE: the 16-mixed program's STEPS steps (tests/harness/parity.c) against
    torch_run16: the scale after every step equal; each step's returned loss, the
    gradients the last step left and every parameter's change over the steps
    (p - p0, relative to its largest) within F16_TOL of PyTorch's (err = max|loom -
    torch| / max|torch|); and where float16 visibly moves a tensor (the losses always;
    others more than 4 x F16_TOL away in PyTorch's float32 run), closer to PyTorch's
    16-mixed than its float32 is (err <= 0.5 x dev): a program computing in float32, or
    not scaling, would sit at dev.  dcgan16_overflow must skip a step (and take one)."""
    name = "step16_" + case
    got = harness_output(name, exe, work, B, steps)
    if got is None:
        return 1
    l16, s16, g16, scaler = torch_run16(case, state, batch, steps, True)
    l32, s32, g32, _ = torch_run16(case, state, batch, steps, False)
    rows = [("loss", got["loss"].float(), l16, l32)]
    rows += [("grad." + n, got["grad." + n], g, g32[n]) for n, g in g16.items()]
    rows += [("delta." + n, got[n] - state[n], s16[n] - state[n], s32[n] - state[n]) for n in s16]
    bad, lines = [], []
    for n, c, t, t32 in rows:
        c = c.reshape(t.shape)
        if n.startswith("delta.") and not bool(t.any()):   # a frozen parameter: exactly unchanged
            ok = not bool(c.any())
            if not ok:
                bad.append(n)
            lines.append("#   %s %-24s %s" % ("  ok" if ok else "FAIL", n, "unchanged (frozen)" if ok else "moved, frozen in PyTorch"))
            continue
        fin = torch.isfinite(t)
        if not torch.equal(torch.isfinite(c), fin):   # inf/nan where PyTorch's are, and only there
            err = float("inf")
        else:   # (a skipped step leaves its inf gradients: the rest compared)
            c, t, t32 = c[fin], t[fin], t32[fin]
            err = rel(c, t) if t.numel() else 0.0
        dev = rel(t32, t) if t.numel() and bool(torch.isfinite(t32).all()) else float("inf")
        ok = err <= F16_TOL or err < 1e-6
        if (n == "loss" or dev > 4 * F16_TOL) and dev > 1e-6 and not n.startswith("grad."):
            ok = ok and err <= 0.5 * dev
        if not ok:
            bad.append(n)
        lines.append("#   %s %-24s err %.2e  (PyTorch fp32 vs 16-mixed %.2e)" % ("  ok" if ok else "FAIL", n, err, dev))
    scales = got["scale"].tolist()
    if scales != scaler.scales:
        bad.append("scale")
    lines.append("#   scale after each step: loom %s, torch %s; torch skipped %d optimizer steps" % (scales, scaler.scales, scaler.skips))
    if case == "dcgan16_overflow" and not (scaler.skips > 0 and bool((s16["D.1.weight"] != state["D.1.weight"]).any())):
        bad.append("(the case skipped no step, or every one: it checks nothing of the scaler)")
    print("%s %s: %d steps, %d tensors%s" % ("ok" if not bad else "not ok", name, steps, len(rows),
                                             "" if not bad else "; out of tolerance: " + ", ".join(bad[:5])))
    print("\n".join(lines))
    return 1 if bad else 0


# bf16-true (steptrue_CASE): Fabric's HalfPrecision("bf16-true") around the same step: the
# model converted to bfloat16 (convert_module), each call of it taking its float inputs to
# bfloat16 (convert_input) and giving its outputs back in float32 (convert_output), the
# losses float32 outside it, no GradScaler; torch.optim on the bfloat16 parameters (its
# state zeros_like them: bfloat16).  16-true cannot be computed so: PyTorch 1.13 has no
# float16 CPU kernels for linear (tests/suite_step.sh checks it against the built-in step
# instead, bit for bit).
class HalfCalls:
    """A model at bf16-true as the training step calls it: m(b) and m.D(x) as Fabric's
    module calls (convert_input, convert_output)"""
    def __init__(self, m, dtype):
        self.m, self.dtype = m, dtype

    def __call__(self, b):
        return self.m({k: v.to(self.dtype) for k, v in b.items()}).float()

    def D(self, x):
        return self.m.D(x.to(self.dtype)).float()


# bf16-true variants (made by tests/suite_step.sh with sed from tests/step/dcgan.lua):
#  dcgan_true: both optimizers SGD { lr = 0.05, momentum = 0.9 } (an update proportional
#    to the gradient, large enough to move bfloat16 weights by several ulps a step)
TRUE_VARIANTS = {"dcgan_true": lambda m: {"d": torch.optim.SGD(m.D.parameters(), lr=0.05),
                                          "g": torch.optim.SGD(m.G.parameters(), lr=0.05)}}
BF16_U = 2.0 ** -8   # bfloat16's unit roundoff


def torch_run_true(case, state, batch, steps, dtype):
    """STEPS steps of a bf16-true variant: dtype torch.bfloat16 as Fabric runs it, or
    torch.float32 (the same step at 32-true: how far bfloat16 moves each tensor)"""
    m = GAN().to(dtype)
    m.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    opts = TRUE_VARIANTS[case](m)
    calls = HalfCalls(m, dtype) if dtype != torch.float32 else m
    losses = [gan_step(calls, opts, batch).item() for _ in range(steps)]
    return torch.tensor(losses), {k: v.detach().float().clone() for k, v in m.state_dict().items()}


def check_true(case, work, exe, B, steps, state, batch):
    """steptrue_CASE: the bf16-true program's STEPS steps (tests/harness/parity.c) against
    torch_run_true.  Both round the same values to bfloat16 at the same places (the
    parameters, each op's output, the activation gradients), so they part only where a
    float sum's order tips a rounding (PyTorch's GEMMs are oneDNN's blocked ones) or where
    torch.optim rounds an intermediate (its bfloat16 momentum buffer: buf * 0.9 rounded,
    then + grad rounded; loom rounds the buffer once), which the next steps carry on.  So:
    each step's returned loss within 4u of PyTorch's bf16-true (u = 2^-8, relative) and
    every parameter within 4u (max |loom - torch| / max |torch|, as
    tests/torch/precision_parity.py); and bfloat16 must show: the losses closer to
    PyTorch's bf16-true than its float32 run is (err <= 0.5 x dev), and the parameters,
    element by element in ulps of bfloat16, on average within half the distance of that
    float32 run (a program that kept float32 weights would sit at it)."""
    name = "steptrue_" + case
    got = harness_output(name, exe, work, B, steps)
    if got is None:
        return 1
    l16, s16 = torch_run_true(case, state, batch, steps, torch.bfloat16)
    l32, s32 = torch_run_true(case, state, batch, steps, torch.float32)
    bad, lines = [], []
    err, dev = rel(got["loss"].float(), l16), rel(l32, l16)
    ok = err <= 4 * BF16_U and err <= 0.5 * dev
    if not ok:
        bad.append("loss")
    lines.append("#   %s %-12s err %.2e  (PyTorch fp32 vs bf16-true %.2e)  loom %s, torch %s" % (
        "  ok" if ok else "FAIL", "loss", err, dev, " ".join("%.6f" % x for x in got["loss"].tolist()),
        " ".join("%.6f" % x for x in l16.tolist())))
    ulps, ulps32, count = 0.0, 0.0, 0
    for n, t in s16.items():
        c = got[n].float().reshape(t.shape)
        err, dev = rel(c, t), rel(s32[n], t)
        # bfloat16's ulp at |t|: 2^(e-8) for |t| in [2^(e-1), 2^e) (|t| at least 2^-8 x max|t|)
        ulp = torch.frexp(t.abs().clamp_min(t.abs().max().item() * BF16_U))[1].float().sub(8).exp2()
        u, u32 = ((c - t).abs() / ulp).sum().item(), ((s32[n] - t).abs() / ulp).sum().item()
        ulps, ulps32, count = ulps + u, ulps32 + u32, count + t.numel()
        ok = err <= 4 * BF16_U
        if not ok:
            bad.append(n)
        lines.append("#   %s %-12s err %.2e  (PyTorch fp32 vs bf16-true %.2e); mean %.3f ulps of bfloat16 (fp32: %.3f)" % (
            "  ok" if ok else "FAIL", n, err, dev, u / t.numel(), u32 / t.numel()))
    if not ulps <= 0.5 * ulps32:
        bad.append("the parameters as far from PyTorch's bf16-true as its fp32 run is")
    lines.append("#   parameters: mean %.3f ulps of bfloat16 from PyTorch's bf16-true (its fp32 run: %.3f)" % (ulps / count, ulps32 / count))
    print("%s %s: %d steps, %d tensors%s" % ("ok" if not bad else "not ok", name, steps, len(s16) + 1,
                                             "" if not bad else "; out of tolerance: " + ", ".join(bad[:5])))
    print("\n".join(lines))
    return 1 if bad else 0


def torch_run(case, state, batch, steps, dtype):
    make, make_opts, step, _ = CASES[case]
    m = make().to(dtype)
    m.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    opts = make_opts(m)
    scheds = VARIANTS[case][2](opts) if case in VARIANTS and VARIANTS[case][2] else []
    b = {k: v.to(dtype) for k, v in batch.items()}
    losses = []
    for _ in range(steps):
        losses.append(step(m, opts, b).item())
        for sc in scheds:
            sc.step()
    return torch.tensor(losses, dtype=torch.float64), {k: v.detach() for k, v in m.state_dict().items()}


def loop(case, ckpt1, ckpt3, work, f64):
    """The generated training program itself (train.c's loop around model_user_step) on
    WORK's batch as an Npy source of one batch: its checkpoint after 1 step (weights and
    Adam's moments, each optimizer's step count 1) continued 2 steps by PyTorch against
    its checkpoint after 3 steps."""
    make, make_opts, step, fields = CASES[case]
    dtype, tol = (torch.float64, TOL64) if f64 else (torch.float32, TOL32)
    one, three = read_safetensors(ckpt1), read_safetensors(ckpt3)
    m = make().to(dtype)
    m.load_state_dict({k: v.to(dtype) for k, v in one.items() if not k.startswith("optimizer.")})
    opts = make_opts(m)
    for opt in opts.values():
        for group in opt.param_groups:
            for p in group["params"]:
                name = next(k for k, q in m.named_parameters() if q is p)
                opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": one["optimizer.exp_avg." + name].to(dtype).clone(),
                                "exp_avg_sq": one["optimizer.exp_avg_sq." + name].to(dtype).clone()}
    b = {name: torch.from_numpy(np.load(os.path.join(work, name + ".npy"))).to(dtype) for name, _, _ in fields}
    for _ in range(2):
        step(m, opts, b)
    worst, where = 0.0, "-"
    for k, v in m.state_dict().items():
        e = rel(three[k], v)
        if e > worst:
            worst, where = e, k
    for opt in opts.values():
        for p, st in opt.state.items():
            name = next(k for k, q in m.named_parameters() if q is p)
            for key in ("exp_avg", "exp_avg_sq"):
                e = rel(three["optimizer.%s.%s" % (key, name)], st[key])
                if e > worst:
                    worst, where = e, "optimizer.%s.%s" % (key, name)
    name = "loop%s_%s" % ("64" if f64 else "", case)
    msg = "steps 2-3 from the program's step-1 checkpoint: worst %.2e at %s (tolerance %.0e)" % (worst, where, tol)
    print(("ok %s\n# %s" % (name, msg)) if worst <= tol else ("not ok %s: %s" % (name, msg)))
    return 0


def logged(csv_path, work, steps):
    """log_dcgan: the program of tests/step/dcgan.lua with fabric.log_dict({ d_loss = d_loss,
    d_real = mean(d_real) }) before D's backward and fabric.log("g_loss", g_loss) before G's,
    started from WORK's weights (train.load_raw) on WORK's batch (Npy), logging every step:
    metrics.csv's train/d_loss, train/d_real and train/g_loss at each step against the
    values PyTorch's step computes there, within 1e-4."""
    import csv
    torch.set_num_threads(1)
    m = GAN()
    m.load_state_dict(read_safetensors(os.path.join(work, "weights.safetensors")))
    opts = gan_optimizers(m)
    b = {n: torch.from_numpy(np.load(os.path.join(work, n + ".npy"))) for n in ("image", "z")}
    ref = []
    for _ in range(steps):
        row = {}
        gan_step(m, opts, b, log=row.update)
        ref.append(row)
    rows = [r for r in csv.DictReader(open(csv_path)) if r.get("train/d_loss")]
    worst, where = 0.0, "-"
    if [int(r["step"]) for r in rows] != list(range(1, steps + 1)):
        worst, where = float("inf"), "the step rows are %s" % [r["step"] for r in rows]
    for r, want in zip(rows, ref):
        for k, v in want.items():
            e = abs(float(r["train/" + k]) - v) / max(abs(v), 1e-12)
            if e > worst:
                worst, where = e, "train/%s at step %s (loom %s, torch %.7g)" % (k, r["step"], r["train/" + k], v)
    msg = "%d steps, 3 metrics: worst %.2e at %s (tolerance 1e-04)" % (steps, worst, where)
    print(("ok log_dcgan\n# %s" % msg) if worst <= 1e-4 else ("not ok log_dcgan: %s" % msg))
    return 0


def main():
    if sys.argv[1] == "logged":   # step_parity.py logged METRICS_CSV WORK STEPS
        return logged(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    if sys.argv[1] == "loop":
        torch.set_num_threads(1)
        return loop(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "64")
    f16 = sys.argv[1] in ("f16", "true")
    if f16:   # step_parity.py f16|true CASE WORK HARNESS B STEPS
        case, work, h16, B, steps = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    else:
        case, work, h32, h64, B, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    make, _, _, fields = CASES["dcgan" if f16 else case]
    state = {k: v.detach().clone() for k, v in make().state_dict().items()}
    write_safetensors(os.path.join(work, "weights.safetensors"), state)
    gen = torch.Generator().manual_seed(1)
    batch = {}
    for name, shape, dist in fields:
        t = torch.rand((B,) + shape, generator=gen) if dist == "uniform" else torch.randn((B,) + shape, generator=gen)
        batch[name] = t
        np.save(os.path.join(work, name + ".npy"), t.numpy().astype(np.float32))
    if f16 and sys.argv[1] == "true":
        check_true(case, work, h16, B, steps, state, batch)
        return 0
    if f16:
        check16(case, work, h16, B, steps, state, batch)
        return 0
    failed = 0
    for label, exe, dtype, tol in (("step_", h32, torch.float32, TOL32), ("step64_", h64, torch.float64, TOL64)):
        name = label + case
        got = harness_output(name, exe, work, B, steps)
        if got is None:
            failed += 1
            continue
        ref_losses, ref_state = torch_run(case, state, batch, steps, dtype)
        worst, where = rel(got["loss"], ref_losses), "loss"
        for k, v in ref_state.items():
            e = rel(got[k], v)
            if e > worst:
                worst, where = e, k
        msg = "%d steps: losses %s (torch %s); worst %.2e at %s (tolerance %.0e)" % (
            steps, ", ".join("%.6f" % x for x in got["loss"].tolist()), ", ".join("%.6f" % x for x in ref_losses.tolist()),
            worst, where, tol)
        if case in ("dcgan_clip", "dcgan_clipval"):   # the clip must act, or this case checks nothing of it
            msg += "; the clip acted in %d of %d optimizer steps" % tuple(ClippedStep.CLIPPED)
            if ClippedStep.CLIPPED[0] == 0:
                worst = float("inf")
            ClippedStep.CLIPPED[:] = [0, 0]
        if case == "dcgan_groups":   # the groups must matter, or this case checks nothing of them
            CASES["dcgan_plain"] = (CASES[case][0], lambda m: groups_optimizers(m, False), CASES[case][2], CASES[case][3])
            VARIANTS["dcgan_plain"] = ("dcgan", None, VARIANTS[case][2])
            _, plain = torch_run("dcgan_plain", state, batch, steps, dtype)
            apart = max(rel(plain[k], v) for k, v in ref_state.items())
            msg += "; without the groups PyTorch's weights move %.2e" % apart
            if apart <= 10 * tol:
                worst = float("inf")
        if case == "dcgan_freeze":   # the frozen layer exactly as it started
            moved = [k for k in ("D.1.weight", "D.1.bias") if not torch.equal(got[k].double(), state[k].double())]
            msg += "; frozen D.1 %s" % ("moved: " + ", ".join(moved) if moved else "unchanged")
            if moved:
                worst = float("inf")
        if worst <= tol:
            print("ok %s\n# %s" % (name, msg))
        else:
            print("not ok %s: %s" % (name, msg))
            failed += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
