"""Weights and a batch for tests/suite_export.sh, written as PyTorch would: the
hand-written module of tests/torch/models.py with its default initialisation, its
BatchNorm running statistics set away from (0, 1) so that eval mode shows in the
outputs, saved as a safetensors state_dict; and one .npy per batch field.

    /usr/bin/python3 tests/torch/export_case.py SPEC_NAME WORK B [bf16|f16]

writes WORK/weights.safetensors (its floating tensors in bf16 or f16 when asked: the
checkpoint of a bf16-true or 16-true program), WORK/<field>.npy (the model's inputs and the loss's
targets, B samples each), and prints the model's output elements per sample.
Also: export_case.py same A.npy B.bin SPEC_NAME  (exit 0 when B.bin's raw float32 equals A.npy's data
bit for bit; else prints the first difference).
"""
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import models  # noqa: E402
from parity import write_safetensors  # noqa: E402

# the batch's fields of each spec: name, per-sample shape, dtype, high (ints)
FIELDS = {
    "fashion_cnn": [("image", (1, 28, 28), "f", 0), ("label", (), "i", 10)],
    "paw": [("img", (3, 128, 128), "f", 0), ("feat", (12,), "f", 0), ("target", (1,), "u", 0)],
    "tiny_transformer": [("idx", (64,), "i", 256), ("targets", (64,), "i", 256)],
}


STATE_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def case(name, work, B, stored="f32"):
    torch.manual_seed(0)
    cls, inputs = models.SPECS[name]
    model = cls()
    state = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in state.items():
        if k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.5)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) * 1.5 + 0.5)
        elif k.endswith("num_batches_tracked"):
            v.fill_(7)
    write_safetensors(work + "/weights.safetensors",
                      {k: v.to(STATE_DTYPE[stored]) if v.is_floating_point() else v for k, v in state.items()})
    rng = np.random.default_rng(2)
    for fname, shape, kind, high in FIELDS[name]:
        if kind == "i":
            a = rng.integers(0, high, (B,) + shape).astype(np.int64)
        elif kind == "u":
            a = rng.uniform(0, 1, (B,) + shape).astype(np.float32)
        else:
            a = rng.standard_normal((B,) + shape).astype(np.float32)
        np.save("%s/%s.npy" % (work, fname), a)
    model.eval()
    model.to(STATE_DTYPE[stored]).float()   # the stored weights' values
    args = [torch.from_numpy(np.load("%s/%s.npy" % (work, f[0]))) for f in FIELDS[name][:len(inputs)]]
    with torch.no_grad():
        out = model(*args)
    print(out[0].numel())


def same(npy, raw, spec):
    a = np.load(npy)
    b = np.fromfile(raw, dtype=a.dtype)
    if spec == "tiny_transformer" and a.size == b.size:   # its loss reads transpose(m(b), 1, 2)
        b = np.ascontiguousarray(b.reshape(a.shape[0], a.shape[2], a.shape[1]).transpose(0, 2, 1)).ravel()
    if a.size != b.size:
        print("sizes differ: %d and %d" % (a.size, b.size))
        return 1
    a = a.ravel()
    d = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
    if len(d):
        print("%d of %d elements differ, the first at %d: %r vs %r" % (len(d), a.size, d[0], a[d[0]], b[d[0]]))
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "same":
        sys.exit(same(sys.argv[2], sys.argv[3], sys.argv[4]))
    case(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
