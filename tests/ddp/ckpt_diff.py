#!/usr/bin/env python3
"""ckpt_diff.py A B [PREFIX]: the largest |a - b| / max(|b|) over the float tensors (F64,
F32, BF16, F16) of two safetensors checkpoints whose names start with PREFIX (default:
all but the optimizer's), printed with the tensor's name.  Standard library only."""
import json, struct, sys, array

def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__" or t["dtype"] not in ("F64", "F32", "BF16", "F16"):
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] in ("F32", "F64"):
            v = array.array("f" if t["dtype"] == "F32" else "d")
            v.frombytes(raw)
        elif t["dtype"] == "F16":
            v = list(struct.unpack("<%de" % (len(raw) // 2), raw))
        else:   # bfloat16: the top half of a float32
            h = array.array("H")
            h.frombytes(raw)
            v = array.array("f")
            v.frombytes(array.array("I", (x << 16 for x in h)).tobytes())
        out[name] = v
    return out

A, B = load(sys.argv[1]), load(sys.argv[2])
prefix = sys.argv[3] if len(sys.argv) > 3 else ""
worst, where = 0.0, "-"
for name, b in B.items():
    if not name.startswith(prefix) or (not prefix and name.startswith("optimizer.")):
        continue
    a = A[name]
    scale = max(max(abs(x) for x in b), 1e-30)
    d = max(abs(x - y) for x, y in zip(a, b)) / scale
    if d > worst:
        worst, where = d, name
print("%.3g %s" % (worst, where))
