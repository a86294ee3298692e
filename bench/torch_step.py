"""PyTorch eager reference for bench/step_bench.c: one training step of the same
model, batch size and optimizer, timed step by step.

    [LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread] /usr/bin/python3 bench/torch_step.py SPEC \
        [--batch B] [--warmup N] [--steps N] [--threads T] [--autocast bf16]

SPEC is a key of tests/torch/models.py's SPECS (fashion_mlp, fashion_cnn, paw, tiny_gpt)
or "linear" (bench/specs/linear.lua: one Linear(10, 2), mse); with --emitted DIR (a
`loom build --emit torch` directory) and --optimizer TEXT (the spec's optimizer line),
any spec with a loss: the step is then model.training_loss(batch) of the emitted module,
on a batch of model.h's fields (floats uniform in [0, 1), int fields uniform in [0, high)),
with the spec's optimizer (tests/torch/parity.py's make_optimizer); --optimizer step: a
spec with its own train.training_step (dcgan, vae), whose step is written again in PyTorch
by tests/torch/family_parity.py's USER_STEPS (its optimizers, zero_grads, backwards and
steps, on the emitted module; torch.randn draws PyTorch's own noise).  Otherwise the step is
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()
with AdamW(lr=1e-3, weight_decay=0.01) (tiny_gpt: its spec's AdamW with two parameter
groups and clip_grad_norm_(1.0) before the step), the model in train mode, on one fixed
random batch (floats uniform in [0, 1), class indices uniform, paw's feat
Bernoulli(0.5)), as the loom harness.  Prints one line in step_bench's format:
    torch SPEC B=.. threads=.. blas=.. steps=.. median_ms=.. min_ms=.. mean_ms=.. maxrss_kb=.. loss0=.. lossN=..
The BLAS pool is pinned to one thread: Debian's torch calls OpenBLAS through the
libblas.so.3 alternative, whose own pool would otherwise fight PyTorch's OpenMP threads
over the same cores.  OPENBLAS_NUM_THREADS does not reach the OpenMP build of OpenBLAS
(it sizes its pool from OpenMP), so the library torch really loaded is found in
/proc/self/maps and pinned with openblas_set_num_threads(1); `blas=` names it
(pthread or openmp: LD_LIBRARY_PATH picks either, bench/speed.sh runs both).
STEP_CLOCK=cpu times each step by the process's CPU time, as bench/step_bench.c does (on
a loaded machine at one thread: the work without the time other processes held the core).
"""
import ctypes
import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "torch"))
import models  # noqa: E402  (hand-written PyTorch equivalents of the specs)
from family_parity import USER_STEPS, FabricBF16, batch_fields  # noqa: E402  (imported before main sets the thread count: it sets 1)
from parity import make_optimizer as spec_optimizer  # noqa: E402


def setup(spec, B, g):
    """model, input tuple, target, loss function"""
    if spec == "linear":
        model = nn.Linear(10, 2)
        return model, (torch.rand(B, 10, generator=g),), torch.rand(B, 2, generator=g), F.mse_loss
    cls, _ = models.SPECS[spec]
    model = cls()
    if spec in ("fashion_mlp", "fashion_cnn"):
        x = torch.rand(B, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (B,), generator=g)
        return model, (x,), y, F.cross_entropy
    if spec == "paw":
        img = torch.rand(B, 3, 128, 128, generator=g)
        feat = (torch.rand(B, 12, generator=g) < 0.5).float()
        target = torch.rand(B, 1, generator=g)
        return model, (img, feat), target, F.binary_cross_entropy
    if spec == "tiny_gpt":
        T = models.GPT_T
        idx = torch.randint(0, models.GPT_V, (B, T), generator=g)
        targets = torch.randint(0, models.GPT_V, (B, T), generator=g)
        return model, (idx,), targets, lambda out, y: F.cross_entropy(out.transpose(1, 2), y)
    raise SystemExit(f"torch_step.py: no benchmark setup for spec {spec!r} (an emitted module: --emitted DIR)")


def setup_emitted(d, B, g):
    """model, batch dict: the module `loom build --emit torch` wrote to d, and a batch of its fields"""
    import importlib.util
    spec = importlib.util.spec_from_file_location("emitted", os.path.join(d, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = [c for c in vars(mod).values() if isinstance(c, type) and hasattr(c, "training_loss")][0]
    batch = {}
    for f, is_int, shape, high in batch_fields(os.path.join(d, "model.h"), os.path.join(d, "model.c")):
        batch[f] = torch.randint(0, high, (B,) + shape, generator=g) if is_int else torch.rand((B,) + shape, generator=g)
    return cls(), batch


def pin_openblas():
    """openblas_set_num_threads(1) on the OpenBLAS torch loaded; returns its build's name"""
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "openblas" in line and line.split()[-1].startswith("/")})
    if not libs:
        return "none"
    for lib in libs:
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(1)
        except (OSError, AttributeError):
            pass
    return "openmp" if any("openblas-openmp" in lib for lib in libs) else \
        "pthread" if any("openblas-pthread" in lib for lib in libs) else os.path.basename(libs[0])


def make_optimizer(spec, model):
    """the spec's optimizer: tiny_gpt's AdamW parameter groups (decay_min_ndim = 2), else
    AdamW(lr=1e-3, weight_decay=0.01) as bench/speed.sh sets for the other specs"""
    if spec == "tiny_gpt":
        params = list(model.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--emitted", help="a `loom build --emit torch` directory: time its module's training_loss")
    ap.add_argument("--optimizer", help="with --emitted: the spec's optimizer, e.g. 'SGD { lr = 0.1, momentum = 0.9 }'; "
                    "'step': the spec's own training_step (family_parity.py's USER_STEPS)")
    ap.add_argument("--autocast", choices=["bf16"], help="Fabric's bf16-mixed: inputs to bfloat16, "
                    "the forward under torch.autocast('cpu', torch.bfloat16), the output back to float32")
    args = ap.parse_args()

    # pinned first: the OpenMP build's openblas_set_num_threads also sets OpenMP's
    # default team size, which torch's own threads then set back
    blas = pin_openblas()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    if args.emitted:
        if not args.optimizer:
            raise SystemExit("torch_step.py: --emitted takes --optimizer")
        model, batch = setup_emitted(args.emitted, args.batch, g)

        def step_loss():
            """the spec's loss, its forward included; under --autocast all of it in the autocast
            region (the module computes its own loss; autocast keeps losses and softmaxes in float)"""
            if not args.autocast:
                return model.training_loss(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model.training_loss(batch).float()
        if args.optimizer == "step":
            if args.spec not in USER_STEPS:
                raise SystemExit(f"torch_step.py: no PyTorch training_step for {args.spec!r} (tests/torch/family_parity.py's USER_STEPS)")
            make_opts, user_step = USER_STEPS[args.spec]
            opts = make_opts(model)
        else:
            opt = spec_optimizer(model, args.optimizer)
    else:
        model, xs, y, loss_fn = setup(args.spec, args.batch, g)
        step_loss = lambda: loss_fn(model(*xs), y)   # noqa: E731
        opt = make_optimizer(args.spec, model)
    model.train()
    clip = {"tiny_gpt": 1.0, "llama": 1.0, "char_lstm": 5.0}.get(args.spec)   # the spec's clip by global norm

    def train_step():
        """one training step; returns its loss"""
        if args.optimizer == "step":   # the spec's own: its zero_grads, backwards and steps
            # (--autocast: each call of the model under Fabric's bf16-mixed, family_parity.py's
            # FabricBF16, with this PyTorch's own autocast lists: its fastest)
            return user_step(FabricBF16(model, by_hand=False) if args.autocast else model, opts, batch)
        opt.zero_grad()
        if args.autocast and not args.emitted:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                # (floating inputs only, as Fabric's bf16-mixed converts them: token ids stay integers)
                out = model(*[x.to(torch.bfloat16) if x.is_floating_point() else x for x in xs])
            loss = loss_fn(out.float(), y)
        else:
            loss = step_loss()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    times = []
    loss0 = lossN = float("nan")
    # STEP_CLOCK=cpu: the process's CPU time, as step_bench.c's (a loaded machine, one thread)
    clock = time.process_time if os.environ.get("STEP_CLOCK") == "cpu" else time.perf_counter
    for s in range(args.warmup + args.steps):
        t0 = clock()
        loss = train_step()
        t1 = clock()
        if s >= args.warmup:
            times.append((t1 - t0) * 1e3)
        lossN = loss.item()   # after the clock: .item() is not part of the step
        if s == 0:
            loss0 = lossN
    ru = resource.getrusage(resource.RUSAGE_SELF)
    label = args.spec + ("-bf16-autocast" if args.autocast else "")
    print(f"torch {label} B={args.batch} threads={torch.get_num_threads()} blas={blas} steps={args.steps} "
          f"median_ms={statistics.median(times):.4f} min_ms={min(times):.4f} mean_ms={statistics.fmean(times):.4f} "
          f"maxrss_kb={ru.ru_maxrss} loss0={loss0:.5f} lossN={lossN:.5f}")


if __name__ == "__main__":
    main()
