"""loom's random draws in Python, for parity tests: runtime/philox.h's Philox4x32-10 and
the generated randn / rand kernels (templates/cpu/kernels_pointwise.inc), written again
from their definitions, so a PyTorch reference can use the very numbers a loom program
drew (torch's own generator draws others; the distributions are the same).

    draws = LoomDraws(seed, model_c)   # the streams of model.c's randn/rand calls
    with draws.step(s):                # torch.randn/rand/_like return loom's draws of step s
        ...

Element i of a draw at step s is Philox(seed, s << 20 | node index, i): the uniform
(bits >> 8) / 2^24 of word i & 3 of counter (i >> 2, i >> 34, stream, stream >> 32);
randn's element i is Box-Muller of the uniforms 2i and 2i + 1 (u1 + 1e-12), in double.
"""
import contextlib
import math
import re

import torch

M32 = 0xFFFFFFFF


def philox4x32_10(key, c0, c1, c2, c3):
    k0, k1 = key & M32, (key >> 32) & M32
    x0, x1, x2, x3 = c0, c1, c2, c3
    for _ in range(10):
        p0, p1 = 0xD2511F53 * x0, 0xCD9E8D57 * x2
        x0, x1, x2, x3 = ((p1 >> 32) ^ x1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ x3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return x0, x1, x2, x3


# Random123's known-answer test (kat_vectors: philox4x32_10, counter and key all zero)
assert philox4x32_10(0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)


def uniform_at(seed, stream, i):
    r = philox4x32_10(seed, (i >> 2) & M32, (i >> 34) & M32, stream & M32, (stream >> 32) & M32)
    return (r[i & 3] >> 8) * (1.0 / 16777216.0)


def normal_at(seed, stream, i):
    u1, u2 = uniform_at(seed, stream, 2 * i) + 1e-12, uniform_at(seed, stream, 2 * i + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)


def streams(model_c):
    """(kind, node index) of the randn/rand ops in a generated model.c, in run order (a
    training_step's forward is also model_forward's, for validation: one op, two calls)."""
    calls = re.findall(r"k_(randn|rand)_forward_\w+\(.*, m->seed, \(m->step << 20 \| (\d+)u\)\);", open(model_c).read())
    return sorted({(k, int(i)) for k, i in calls}, key=lambda c: c[1])


class LoomDraws:
    """torch.randn/rand/randn_like/rand_like replaced, inside step(s), by loom's draws of
    step s: the n-th call takes the n-th stream of model.c (the calls must come in the
    order the program makes them, and be as many)."""

    def __init__(self, seed, model_c):
        self.seed, self.streams = seed, streams(model_c)

    def _draw(self, kind, size, dtype, device):
        if self.next >= len(self.streams):
            raise RuntimeError("more torch.%s calls than the loom program's %d draws" % (kind, len(self.streams)))
        want, index = self.streams[self.next]
        self.next += 1
        if want != kind:
            raise RuntimeError("torch.%s where the loom program's draw %d is %s" % (kind, self.next, want))
        stream = (self.s << 20) | index
        n = math.prod(size)
        f = normal_at if kind == "randn" else uniform_at
        vals = [f(self.seed, stream, i) for i in range(n)]
        return torch.tensor(vals, dtype=torch.float64).reshape(size).to(dtype=dtype or torch.get_default_dtype(), device=device)

    @contextlib.contextmanager
    def step(self, s):
        self.s, self.next = s, 0
        saved = {k: getattr(torch, k) for k in ("randn", "rand", "randn_like", "rand_like")}

        def sized(kind):
            def f(*size, dtype=None, device=None, **_):
                if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
                    size = tuple(size[0])
                return self._draw(kind, tuple(int(d) for d in size), dtype, device)
            return f

        def like(kind):
            return lambda x, **_: self._draw(kind, tuple(x.shape), x.dtype, x.device)

        torch.randn, torch.rand = sized("randn"), sized("rand")
        torch.randn_like, torch.rand_like = like("randn"), like("rand")
        try:
            yield self
            if self.next != len(self.streams):
                raise RuntimeError("%d torch random calls where the loom program draws %d times" % (self.next, len(self.streams)))
        finally:
            for k, f in saved.items():
                setattr(torch, k, f)
