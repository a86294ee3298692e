#!/usr/bin/env python3
"""Fine-tuning from PyTorch's weights, driven by tests/suite_finetune.sh:

    finetune.py data WORK              writes the batch (x.npy, target.npy) the spec reads
    finetune.py run WORK P32 P64 PBF16

P32, P64, PBF16 hold tests/finetune/finenet.lua built at 32-true, 64-true and bf16-true
(train, and model.py from --emit torch).  PyTorch builds the emitted module
(torch.manual_seed(0), every parameter and BatchNorm statistic moved off its default)
and writes its state_dict as safetensors files the way safetensors' save_file lays one
out (u64 LE header length, JSON header, raw bytes): the spec's train.load_raw and the
program's --load-raw read them.  The spec freezes features.2 (BatchNorm's affine) and
features.3 (a Linear) and trains the rest with AdamW (weight decay 0.1) for 5 steps on
one batch of 16; PyTorch trains the same module with the same parameters frozen
(requires_grad = False), on the same batch.

Measure, per tensor: err = max|loom - torch| / max|torch|, the losses of the steps as
one tensor; 32-true within 1e-4, 64-true within 1e-9.  Frozen parameters must be
bit-identical to the file's values converted as torch's .to() converts them.
Prints one TAP line per case.
"""
import csv
import glob
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import torch

torch.set_num_threads(1)
B, STEPS = 16, 5
FROZEN = [r"^features\.2\.", r"^features\.3\."]
NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int64: "I64", torch.int32: "I32"}


def frozen(name):
    return any(re.search(p, name) for p in FROZEN)


def write_safetensors(path, tensors):
    """safetensors' layout; 16-bit floats as their bits."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        b = (t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def module(d):
    spec = importlib.util.spec_from_file_location("finenet_%d" % abs(hash(d)), os.path.join(d, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference(mod):
    """The pretrained module: seeded, then moved off PyTorch's defaults."""
    torch.manual_seed(0)
    m = mod.FineNet()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        bn = m.features[2]
        bn.running_mean.copy_(0.5 * torch.randn(16, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(16, generator=g))
        bn.num_batches_tracked.fill_(7)
    return m


def batch(work, dtype):
    return {"x": torch.from_numpy(np.load(os.path.join(work, "x.npy"))).to(dtype),
            "target": torch.from_numpy(np.load(os.path.join(work, "target.npy")))}


def train_torch(mod, state, dtype, work):
    """PyTorch's fine-tuning: the state loaded, the frozen parameters requires_grad = False."""
    m = mod.FineNet().to(dtype)
    m.load_state_dict(state, strict=True)
    for n, p in m.named_parameters():
        p.requires_grad_(not frozen(n))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    b, losses = batch(work, dtype), []
    m.train()
    for _ in range(STEPS):
        opt.zero_grad()
        loss = m.training_loss(b)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return m, losses


def run(prog, work, out, *flags):
    r = subprocess.run([os.path.join(prog, "train"), "--out", out, "--quiet", *flags], cwd=work,
                       capture_output=True, text=True)
    return r.returncode, r.stderr.strip()


def loom_losses(work, out):
    path = glob.glob(os.path.join(work, out, "logs", "lightning_logs", "version_*", "metrics.csv"))[0]
    rows = [r for r in csv.DictReader(open(path)) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in rows]


def err(c, t):
    c, t = c.double(), t.double()
    scale = t.abs().max().item()
    return (c - t).abs().max().item() / (scale if scale > 0 else 1.0)


def result(name, bad, good):
    print(("not ok %s: %s" % (name, "; ".join(bad))) if bad else ("ok %s: %s" % (name, good)))


def parity_case(name, mod, prog, work, dtype, tol, file, flags=()):
    ref = reference(mod)
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    write_safetensors(os.path.join(work, file), state)
    out = "out_" + name
    rc, msg = run(prog, work, out, *flags)
    if rc != 0:
        return result(name, ["the program exited %d: %s" % (rc, msg)], "")
    got, _, _ = mod.load_loom_checkpoint(os.path.join(work, out, "last.safetensors"))
    m, losses = train_torch(mod, state, dtype, work)
    bad, worst = [], ("", 0.0)
    rows = [("losses", torch.tensor(loom_losses(work, out)), torch.tensor(losses))]
    for k, v in m.state_dict().items():
        rows.append((k, got[k], v))
    for k, c, t in rows:
        if c.shape != t.shape:
            bad.append("%s: shape %s, torch %s" % (k, list(c.shape), list(t.shape)))
            continue
        e = err(c, t)
        print("#   %-32s err %.2e" % (k, e))
        if not e <= tol:
            bad.append("%s err %.2e > %g" % (k, e, tol))
        if e > worst[1]:
            worst = (k, e)
    params = dict(m.named_parameters())   # (BatchNorm's running statistics still update)
    for k, v in state.items():
        if k in params and frozen(k) and not torch.equal(got[k], v):
            bad.append("frozen %s changed" % k)
    nfrozen = sum(frozen(k) for k in params)
    result(name, bad, "%d steps, worst %.2e (%s) over %d tensors; %d frozen tensors bit-identical"
           % (STEPS, worst[1], worst[0], len(rows), nfrozen))


def convert_case(name, mod, prog, work, dtype):
    """Tensors of every float dtype loaded into a run of `dtype`: the frozen ones (never
    updated) hold exactly torch's conversion; an I32 num_batches_tracked loads too."""
    ref = reference(mod)
    state = dict(ref.state_dict())
    g = torch.Generator().manual_seed(5)
    kinds = {"features.2.weight": torch.bfloat16, "features.2.bias": torch.float16,
             "features.3.weight": torch.float64, "features.3.bias": torch.float32}
    for k, dt in kinds.items():
        # float64 values with bits below float32's, so that the rounding is exercised
        state[k] = (state[k].double() + 1e-3 * torch.randn(state[k].shape, generator=g, dtype=torch.float64)).to(dt)
    state["features.2.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)
    file = "mixed_%s.safetensors" % name
    write_safetensors(os.path.join(work, file), state)
    out = "out_" + name
    rc, msg = run(prog, work, out, "--load-raw", file, "--max-steps", "1")
    if rc != 0:
        return result(name, ["the program exited %d: %s" % (rc, msg)], "")
    got, _, _ = mod.load_loom_checkpoint(os.path.join(work, out, "last.safetensors"))
    bad = []
    for k, dt in kinds.items():
        want = state[k].to(dtype)
        if got[k].dtype != dtype or not torch.equal(got[k], want):
            diff = (got[k].double() - want.double()).abs().max().item() if got[k].shape == want.shape else float("nan")
            bad.append("%s (%s → %s) differs from torch's conversion by %.3g" % (k, NAMES[dt], NAMES[dtype], diff))
    nbt = int(got["features.2.num_batches_tracked"])
    if nbt != 8:
        bad.append("num_batches_tracked %d after one step from 7 (I32)" % nbt)
    result(name, bad, "BF16, F16, F64, F32 → %s as torch converts them; I32 counter loaded" % NAMES[dtype])


def expect_fail(name, mod, prog, work, state, want, flags=(), corrupt=None):
    file = name + ".safetensors"
    path = os.path.join(work, file)
    write_safetensors(path, state)
    if corrupt:
        corrupt(path)
    rc, msg = run(prog, work, "out_" + name, "--load-raw", file, *flags)
    lines = msg.splitlines()
    if rc == 0:
        result(name, ["exited 0"], "")
    elif len(lines) != 1 or not all(w in lines[0] for w in [file] + want):
        result(name, ["expected one line naming %s and %s, got: %s" % (file, want, msg)], "")
    else:
        result(name, [], "exit %d: %s" % (rc, lines[0]))


def nonstrict_case(name, mod, prog, work):
    """strict = false: a missing tensor keeps the program's own initial value, an
    unexpected one is skipped, and one line lists both."""
    ref = reference(mod)
    state = dict(ref.state_dict())
    del state["features.3.bias"]
    state["extra.weight"] = torch.ones(3)
    write_safetensors(os.path.join(work, "partial.safetensors"), state)
    write_safetensors(os.path.join(work, "nothing.safetensors"), {"extra.weight": torch.ones(3)})
    flags = ("--load-raw-strict", "false", "--max-steps", "1")
    rc1, msg1 = run(prog, work, "out_ns_init", "--load-raw", "nothing.safetensors", *flags)
    rc2, msg2 = run(prog, work, "out_ns", "--load-raw", "partial.safetensors", *flags)
    bad = []
    if rc1 != 0 or rc2 != 0:
        return result(name, ["the program exited %d / %d: %s %s" % (rc1, rc2, msg1, msg2)], "")
    want = "partial.safetensors: loaded 10 of this model's 11 tensors (strict = false): " \
           "missing_keys=['features.3.bias'], unexpected_keys=['extra.weight']"
    if msg2 != want:
        bad.append("stderr %r, expected %r" % (msg2, want))
    if "unexpected_keys=['extra.weight']" not in msg1 or "missing_keys=['features.0.weight', " not in msg1:
        bad.append("stderr of the file with no tensor of the model: %r" % msg1)
    init, _, _ = mod.load_loom_checkpoint(os.path.join(work, "out_ns_init", "last.safetensors"))
    got, _, _ = mod.load_loom_checkpoint(os.path.join(work, "out_ns", "last.safetensors"))
    if not torch.equal(got["features.3.bias"], init["features.3.bias"]):
        bad.append("the missing features.3.bias is not the program's initial value")
    if not torch.equal(got["features.3.weight"], state["features.3.weight"]):
        bad.append("features.3.weight is not the file's")
    result(name, bad, msg2)


def main():
    if sys.argv[1] == "data":
        work = sys.argv[2]
        g = torch.Generator().manual_seed(3)
        np.save(os.path.join(work, "x.npy"), torch.randn(B, 12, generator=g).numpy())
        np.save(os.path.join(work, "target.npy"), torch.randint(0, 4, (B,), generator=g).numpy())
        return
    work, p32, p64, pbf16 = sys.argv[2:6]
    mod = module(p32)
    parity_case("finetune_parity32", mod, p32, work, torch.float32, 1e-4, "pretrained.safetensors")
    parity_case("finetune_parity64", mod, p64, work, torch.float64, 1e-9, "pretrained64.safetensors",
                ("--load-raw", "pretrained64.safetensors"))
    convert_case("finetune_convert32", mod, p32, work, torch.float32)
    convert_case("finetune_convert_bf16", mod, pbf16, work, torch.bfloat16)
    nonstrict_case("finetune_nonstrict", mod, p32, work)
    # a loom checkpoint (weights and optimizer state) loads strictly: its optimizer.* are skipped
    rc, msg = run(p32, work, "out_from_ckpt", "--load-raw", "out_finetune_parity32/last.safetensors", "--max-steps", "1")
    result("finetune_from_loom_checkpoint", [] if rc == 0 and msg == "" else ["exit %d: %s" % (rc, msg)],
           "a loom checkpoint's weights loaded strictly, its optimizer state skipped")
    state = dict(reference(mod).state_dict())
    missing = {k: v for k, v in state.items() if k != "head.bias"}
    expect_fail("finetune_strict_missing", mod, p32, work, missing, ["'head.bias'", "missing"])
    expect_fail("finetune_strict_unexpected", mod, p32, work, dict(state, **{"extra.weight": torch.ones(2)}),
                ["'extra.weight'", "not in this model"])
    expect_fail("finetune_shape_mismatch", mod, p32, work, dict(state, **{"features.3.weight": torch.ones(16, 8)}),
                ["'features.3.weight'", "[16, 8]", "[16, 16]"], ("--load-raw-strict", "false"))
    expect_fail("finetune_dtype_mismatch", mod, p32, work,
                dict(state, **{"head.weight": torch.ones(4, 16, dtype=torch.int64)}), ["'head.weight'", "I64"])

    def truncate(path):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    expect_fail("finetune_truncated", mod, p32, work, state, ["truncated"], corrupt=truncate)


if __name__ == "__main__":
    main()
