#!/usr/bin/env bash
# bench/overhead.sh — a whole generated program's time per step where the step itself is
# nearly free (issue 12: the Linear(10, 2) program at <= 1 µs a step, >= 40× PyTorch's loop).
#
# loom   bench/specs/linear.lua's train program (65536 samples, batch 4: 16384 steps an
#        epoch), run to completion with --epochs E1 and --epochs E2: everything the
#        program does per step (loading the batch, the step, logging, each epoch's
#        checkpoint) is (T(E2) - T(E1)) / (steps(E2) - steps(E1)), start-up excluded; the
#        E2 run's whole-process time per step (start-up included) is beside it.  Wall
#        and CPU time (user + system, all threads) of each process.
# torch  bench/torch_loop.py: the same model, loss, optimizer and batch over in-memory
#        tensors of the same size, the leanest PyTorch loop (no DataLoader); its loop's
#        wall and CPU time per step (interpreter start and import excluded).
# Sides alternate for ROUNDS rounds (fresh processes), so a loaded machine loads both;
# the table gives medians over rounds.  On a busy machine the wall times carry the load
# (a process runs a fraction of the time); the CPU times say what each side costs.
#
# BASE=path/to/an/older/loom adds its program's row (the same spec), run in the same rounds.
#
#   bench/overhead.sh                     # ROUNDS=3 E1=1 E2=5 TORCH_STEPS=4000
#   ROUNDS=5 BASE=/work/main/build/loom bench/overhead.sh
#
# Not part of `ninja test`: speed is measured here, never in tests.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
E1=${E1:-1}
E2=${E2:-5}
TORCH_STEPS=${TORCH_STEPS:-4000}
THREADS=${THREADS:-2}
BASE=${BASE:-}
PY=/usr/bin/python3            # Debian's python3-torch lives here only
OUT=build/bench/overhead
mkdir -p "$OUT"

echo "== bench/overhead.sh  $(date -u +%FT%TZ)  $(nproc) cores, THREADS=$THREADS, ROUNDS=$ROUNDS, E1=$E1, E2=$E2"
echo "== load: $(uptime)"
ninja build/loom >/dev/null
SIDES=loom
build/loom build bench/specs/linear.lua --accelerator=cpu -o "$OUT/loom" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
if [ -n "$BASE" ]; then
    SIDES="loom base"
    "$BASE" build bench/specs/linear.lua --accelerator=cpu -o "$OUT/base" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
fi

# runs a command; prints "wall=S cpu=S" (its wall and CPU seconds, children's rusage) and its output
timed() {
    $PY - "$@" <<'EOF'
import resource, subprocess, sys, time
t0 = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
t1 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
if r.returncode:
    sys.exit(f"overhead.sh: {' '.join(sys.argv[1:])} exited {r.returncode}")
print(f"wall={t1 - t0:.6f} cpu={ru.ru_utime + ru.ru_stime:.6f} " + " ".join(r.stdout.split()))
EOF
}

results=$OUT/results.txt
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    for side in $SIDES; do
        for e in "$E1" "$E2"; do
            rm -rf "$OUT/run"
            echo "round=$r side=$side epochs=$e $(OMP_NUM_THREADS=$THREADS timed "$OUT/$side/train" --quiet --epochs "$e" --out "$OUT/run")" | tee -a "$results"
        done
    done
    echo "round=$r $(OMP_NUM_THREADS=$THREADS $PY bench/torch_loop.py --size 65536 --batch 4 --epochs 1 \
        --max-steps "$TORCH_STEPS" --threads "$THREADS")" | tee -a "$results"
done

echo
echo "== load after the runs: $(uptime)"
$PY - "$results" "$E1" "$E2" <<'EOF'
import re, statistics, sys
e1, e2 = sys.argv[2], sys.argv[3]
runs, torch = {}, []
for line in open(sys.argv[1]):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if "side" in kv:
        steps = int(re.search(r"trained (\d+) steps", line).group(1))
        runs.setdefault(kv["side"], {}).setdefault(kv["round"], {})[kv["epochs"]] = (float(kv["wall"]), float(kv["cpu"]), steps)
    else:
        torch.append((float(kv["loop_us_per_step"]), float(kv["loop_cpu_us_per_step"])))
def per_step(rounds):
    marg_w, marg_c, whole = [], [], []
    for rd in rounds.values():
        (w1, c1, s1), (w2, c2, s2) = rd[e1], rd[e2]
        marg_w.append((w2 - w1) / (s2 - s1) * 1e6)
        marg_c.append((c2 - c1) / (s2 - s1) * 1e6)
        whole.append(w2 / s2 * 1e6)
    return marg_w, statistics.median(marg_w), statistics.median(marg_c), statistics.median(whole)
tw, tc = statistics.median(t[0] for t in torch), statistics.median(t[1] for t in torch)
print()
print("| side | wall µs/step | CPU µs/step | whole process µs/step |")
print("| --- | ---: | ---: | ---: |")
for side, label in (("loom", "loom Linear(10,2) program"), ("base", "BASE loom's program")):
    if side in runs:
        mw, w, c, whole = per_step(runs[side])
        print(f"| {label} | {w:.3f} ({min(mw):.3f}–{max(mw):.3f}) | {c:.3f} | {whole:.3f} |")
print(f"| torch loop | {tw:.2f} ({min(t[0] for t in torch):.2f}–{max(t[0] for t in torch):.2f}) | {tc:.2f} | - |")
_, lw, lc, _ = per_step(runs["loom"])
print()
print(f"torch/loom: {tw / lw:.0f}× wall, {tc / lc:.0f}× CPU (target: loom <= 1 µs a step, >= 40×: "
      f"{'ok' if lw <= 1 and tw / lw >= 40 else 'MISS'} on wall, {'ok' if lc <= 1 and tc / lc >= 40 else 'MISS'} on CPU)")
print(f"loom: (T(--epochs {e2}) - T(--epochs {e1})) / their steps' difference, median over rounds (range);")
print("torch: bench/torch_loop.py's loop per step; whole process: the --epochs " + e2 + " run's wall time / its steps.")
EOF
