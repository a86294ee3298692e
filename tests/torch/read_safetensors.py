#!/usr/bin/env python3
"""Reads a safetensors file with only the standard library and torch.frombuffer, to
prove that tools other than loom read loom checkpoints (and the other way round).

  read_safetensors.py FILE           prints metadata, then one line per tensor:
                                     name dtype [shape] sum-of-elements, and
                                     "crc ok" when loom's CRC-32 of it matches
  read_safetensors.py --write FILE   writes a file laid out as Hugging Face's writer
                                     lays it out (header keys sorted, data sorted by
                                     alignment then name), for loom to read
Exit status 77 when torch is missing (the caller skips).
"""
import json
import zlib
import struct
import sys

try:
    import torch
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(77)

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = bytearray(blob[8 + n:])
    meta = header.pop("__metadata__", {})
    for k, v in sorted(meta.items()):
        if not k.startswith("crc32:"):   # loom's per-tensor checksums: checked below
            print(f"meta {k}={v}")
    for name, info in header.items():   # in header order
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        if end > begin:
            t = torch.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
        else:
            t = torch.zeros(info["shape"], dtype=dtype)
        crc = meta.get("crc32:" + name)
        check = "" if crc is None else " crc ok" if int(crc, 16) == zlib.crc32(data[begin:end]) else " crc BAD"
        print(f"{name} {info['dtype']} {list(t.shape)} {t.double().sum().item()!r}{check}")


def write(path):
    tensors = {
        "z.bias": torch.arange(3, dtype=torch.float32),
        "a.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3),
        "m.steps": torch.tensor(7, dtype=torch.int64),
        "b.mask": torch.tensor([1, 0, 1], dtype=torch.uint8),
    }
    names = {v: k for k, v in DTYPES.items()}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, off, data = {}, 0, b""
    for k in order:
        raw = tensors[k].contiguous().numpy().tobytes()
        header[k] = {"dtype": names[tensors[k].dtype], "shape": list(tensors[k].shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    header["__metadata__"] = {"format": "pt", "note": "caf\u00e9 \"quoted\""}
    text = json.dumps(header, sort_keys=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write(sys.argv[2])
    elif len(sys.argv) == 2:
        read(sys.argv[1])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
