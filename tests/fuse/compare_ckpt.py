# tests/fuse/compare_ckpt.py A B [ATOL]: compares two safetensors checkpoints tensor by
# tensor.  Prints "identical" when every byte of every tensor agrees, else the largest
# absolute and relative differences; exits 1 when a tensor is missing or the largest
# absolute difference exceeds ATOL (given).
import json, struct, sys
import numpy as np

DTYPES = {'F32': np.float32, 'F64': np.float64, 'I64': np.int64, 'F16': np.float16}

def load(path):
    with open(path, 'rb') as f:
        b = f.read()
    n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        raw = b[8 + n + s:8 + n + e]
        if v['dtype'] == 'BF16':
            out[k] = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            out[k] = np.frombuffer(raw, dtype=DTYPES[v['dtype']])
    return out, b[8 + n:]

a, araw = load(sys.argv[1])
b, braw = load(sys.argv[2])
if set(a) != set(b):
    print('the checkpoints hold different tensors')
    sys.exit(1)
if araw == braw:
    print('identical')
    sys.exit(0)
worst_abs, worst_rel, where = 0.0, 0.0, ''
for k in a:
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    if x.size == 0:
        continue
    d = np.abs(x - y)
    i = int(np.argmax(d))
    if d[i] > worst_abs:
        worst_abs, where = float(d[i]), k
    worst_rel = max(worst_rel, float(np.max(d / np.maximum(np.abs(y), 1e-3))))
print(f'largest difference {worst_abs:.3g} (in {where}), relative {worst_rel:.3g}')
if len(sys.argv) > 3 and worst_abs > float(sys.argv[3]):
    sys.exit(1)
