"""PyTorch eager reference for bench/conv_bench.c: nn.Conv2d forward + backward
(input gradient too, as inside a network) at the same shapes, 2 threads.
Run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/conv_bench_torch.py"""
import time
import torch

torch.set_num_threads(2)
SHAPES = [  # N, C, H, W, OC, K, pad, needs input grad
    (128, 1, 28, 28, 32, 3, 1, False),
    (128, 32, 14, 14, 64, 3, 1, True),
]
for N, C, H, W, OC, K, P, dx in SHAPES:
    conv = torch.nn.Conv2d(C, OC, K, padding=P)
    x = torch.randn(N, C, H, W, requires_grad=dx)
    def step():
        y = conv(x)
        y.backward(torch.ones_like(y))
    for _ in range(3):
        step()
    best = {}
    for name, fn in (("fwd", lambda: conv(x)), ("fwd+bwd", step)):
        times = []
        with torch.set_grad_enabled(name != "fwd"):
            for _ in range(30):
                t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
        best[name] = min(times) * 1e3
    print(f"torch conv N={N} {C}->{OC} {H}x{W} k{K}: fwd {best['fwd']:.2f} ms  fwd+bwd {best['fwd+bwd']:.2f} ms")
