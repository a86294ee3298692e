#!/usr/bin/env bash
# bench/precision.sh — training-step time of one spec at every precision on the CPU
# (issue 4), beside 32-true and beside PyTorch (float32 and Fabric's bf16-mixed:
# bfloat16 inputs, torch.autocast("cpu", torch.bfloat16)), in one run.
#
# loom: bench/step_bench.c linked with the program generated at each precision
# (forward + backward + clip + AdamW step + zero_grad on a fixed batch; for 16-mixed
# without the loss scaler's pass over the gradients).  The programs and PyTorch run
# alternately, ROUNDS rounds of fresh processes; the table gives the median over
# rounds of each process's median step, and the ratio to loom's 32-true.
#
#   bench/precision.sh                          # fashion_cnn, B=128, 3 rounds
#   SPEC=fashion_mlp ROUNDS=5 bench/precision.sh
# Not part of the tests: speed is measured here, never in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${SPEC:-fashion_cnn}
B=${B:-128}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3}
STEPS=${STEPS:-20}
PRECISIONS=${PRECISIONS:-"32-true bf16-mixed 16-mixed bf16-true 16-true 64-true"}
PY=/usr/bin/python3
OUT=build/bench/precision
mkdir -p "$OUT"
echo "== bench/precision.sh  $(date -u +%FT%TZ)  $SPEC B=$B  $(nproc) cores, THREADS=$THREADS, ROUNDS=$ROUNDS"
echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  bf16 instructions: $(grep -qw avx512_bf16 /proc/cpuinfo && echo avx512_bf16 || echo none)"
echo "== load: $(uptime)"
ninja build/loom >/dev/null
for prec in $PRECISIONS; do
    dir=$OUT/$SPEC-$prec
    build/loom build "specs/$SPEC.lua" --accelerator=cpu --precision="$prec" --devices=1 -o "$dir/gen" >"$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
    cflags=$(sed -n 's/^cflags = //p' "$dir/gen/build.ninja")
    ldlibs=$(sed -n 's/^ldlibs = //p' "$dir/gen/build.ninja")
    # shellcheck disable=SC2086
    cc $cflags -I"$dir/gen" -Ibench bench/step_bench.c "$dir/gen/obj/model.o" "$dir/gen/obj/optim.o" "$dir/gen/obj/threads.o" -o "$dir/step_bench" $ldlibs
done
have_torch=0
"$PY" -c "import torch" 2>/dev/null && have_torch=1
results=$OUT/results.txt
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    for prec in $PRECISIONS; do
        OMP_NUM_THREADS=$THREADS "$OUT/$SPEC-$prec/step_bench" --batch "$B" --warmup "$WARMUP" --steps "$STEPS" \
            --label "$prec" | sed "s/^/round=$r /" | tee -a "$results"
    done
    if [ $have_torch = 1 ]; then
        for ac in "" bf16; do
            OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$THREADS $PY bench/torch_step.py "$SPEC" --batch "$B" --warmup "$WARMUP" \
                --steps "$STEPS" --threads "$THREADS" ${ac:+--autocast $ac} | sed "s/^/round=$r /" | tee -a "$results"
        done
    fi
done
echo "== load after: $(uptime)"
$PY - "$results" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f if "=" in x)
    rows.setdefault((f[1], f[2]), []).append(float(kv["median_ms"]))
base = statistics.median(rows[("loom", "32-true")])
print()
print("| program | median step ms | spread over rounds | vs loom 32-true |")
print("| --- | ---: | ---: | ---: |")
for (side, name), v in rows.items():
    m = statistics.median(v)
    print(f"| {side} {name} | {m:.2f} | {min(v):.2f}–{max(v):.2f} | {m / base:.2f}× |")
PYEOF
