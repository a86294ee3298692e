"""PyTorch 1.13's side of bench/export.sh: the spec's hand-written module
(tests/torch/models.py) with the same weights as the exported library
(tests/torch/export_case.py's safetensors), eval mode, under torch.no_grad(), on THREADS
threads, run one of three ways:

    eager    the module itself
    script   torch.jit.script(module), frozen (torch.jit.freeze)
    trace    torch.jit.trace(module, a batch), frozen (torch.jit.freeze)

    /usr/bin/python3 bench/export_torch.py SPEC WEIGHTS MODE MAX_BATCH SECONDS [THREADS]

Prints what the exported CLI's --bench prints (startup_ms: from after `import torch` to
the first batch-1 output, the module built, weights loaded and compiled; batch-1 latency
percentiles and CPU time per call (every thread's); MAX_BATCH throughput; peak RSS), or `unsupported: why` (a module that does
not script).  Inputs are random, as the CLI's are.
"""
import resource
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/../tests/torch")
import models  # noqa: E402
from parity import read_safetensors  # noqa: E402


def main():
    spec, weights, mode, max_batch, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else 2)
    t0 = time.perf_counter()
    cls, inputs = models.SPECS[spec]
    model = cls()
    model.load_state_dict(read_safetensors(weights), strict=True)
    model.eval()
    g = torch.Generator().manual_seed(0)

    def batch(B):
        return tuple(torch.randn((B,) + shape, generator=g) if dt == torch.float32 else
                     torch.randint(0, 2, (B,) + shape, generator=g) for shape, dt in inputs)

    one, big = batch(1), batch(max_batch)
    with torch.no_grad():
        if mode == "script":
            try:
                model = torch.jit.freeze(torch.jit.script(model))
            except Exception as e:  # noqa: BLE001 (any scripting failure: reported, not fatal)
                print("unsupported: " + str(e).strip().splitlines()[0])
                return
        elif mode == "trace":
            model = torch.jit.freeze(torch.jit.trace(model, one))
        model(*one)
        startup = time.perf_counter() - t0
        for _ in range(10):
            model(*one)
        lat, start, cpu0 = [], time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds / 2 or len(lat) < 20:
            a = time.perf_counter()
            model(*one)
            lat.append(time.perf_counter() - a)
        cpu1 = (time.process_time() - cpu0) / len(lat)  # the process's CPU time (every thread's) per call
        lat.sort()
        model(*big)
        nb, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2 or nb < 3:
            model(*big)
            nb += 1
        tput = nb * max_batch / (time.perf_counter() - start)
    n = len(lat)
    print("startup_ms %.3f" % (1e3 * startup))
    print("batch1_runs %d\nbatch1_p50_us %.1f\nbatch1_p90_us %.1f\nbatch1_p99_us %.1f" %
          (n, 1e6 * lat[n // 2], 1e6 * lat[int(0.9 * (n - 1))], 1e6 * lat[int(0.99 * (n - 1))]))
    print("batch1_cpu_us %.1f" % (1e6 * cpu1))
    print("batch%d_samples_per_s %.1f" % (max_batch, tput))
    print("peak_rss_kib %d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()
