"""PyTorch's side of tests/suite_step.sh: a spec's own training step (train.training_step)
against the same step written in PyTorch, on the same weights and batch.

    step_parity.py CASE WORK HARNESS32 HARNESS64 B STEPS
    step_parity.py loop CASE CKPT1 CKPT3 WORK 32|64   (the program's own loop: see loop())

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
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import read_safetensors, rel, write_safetensors  # noqa: E402  (exits 77 without torch)

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


def gan_step(m, opts, b):
    """DCGAN's alternating updates, as the spec's training_step"""
    opt_d, opt_g = opts["d"], opts["g"]
    fake = m(b)
    opt_d.zero_grad()
    d_real = m.D(b["image"])
    d_fake = m.D(fake.detach())
    ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
    d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss = F.binary_cross_entropy_with_logits(m.D(fake), ones)
    g_loss.backward()
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
}
for _v, (_base, _opts, _scheds) in VARIANTS.items():
    CASES[_v] = (CASES[_base][0], _opts, CASES[_base][2], CASES[_base][3])


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


def main():
    if sys.argv[1] == "loop":
        torch.set_num_threads(1)
        return loop(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "64")
    case, work, h32, h64, B, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    make, _, _, fields = CASES[case]
    state = {k: v.detach().clone() for k, v in make().state_dict().items()}
    write_safetensors(os.path.join(work, "weights.safetensors"), state)
    gen = torch.Generator().manual_seed(1)
    batch = {}
    for name, shape, dist in fields:
        t = torch.rand((B,) + shape, generator=gen) if dist == "uniform" else torch.randn((B,) + shape, generator=gen)
        batch[name] = t
        np.save(os.path.join(work, name + ".npy"), t.numpy().astype(np.float32))
    failed = 0
    for label, exe, dtype, tol in (("step_", h32, torch.float32, TOL32), ("step64_", h64, torch.float64, TOL64)):
        name = label + case
        r = subprocess.run([exe, work, str(B), str(steps)], capture_output=True, text=True)
        if r.returncode != 0:
            print("not ok %s: the harness exited %d: %s" % (name, r.returncode, (r.stderr or r.stdout).strip()))
            failed += 1
            continue
        got = read_safetensors(os.path.join(work, "out.safetensors"))
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
        if worst <= tol:
            print("ok %s\n# %s" % (name, msg))
        else:
            print("not ok %s: %s" % (name, msg))
            failed += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
