#!/usr/bin/env bash
# bench/profile.sh — where a loom training step's time goes (issue 3), for the specs
# bench/speed.sh benchmarks (run speed.sh first: it builds the programs).
#   1. per op: step_bench built with -DSTEP_PROF against a copy of model.c with a
#      timing mark before every op (bench/prof_model.py): median / min / mean ms of
#      each op per step, at THREADS threads and at 1 thread;
#   2. per function: `perf record` of the same step loop, top symbols (kernels are
#      inlined into model_forward/model_backward; BLAS, libgomp and the kernel show).
#
#   bench/profile.sh                     # fashion_cnn and paw
#   SPECS="fashion_mlp linear" bench/profile.sh
#   SPECS="unet resnet18" THREADS_ONLY=1 bench/profile.sh   # only at THREADS threads
#   SPECS=tiny_gpt bench/profile.sh      # after SPECS=tiny_gpt bench/speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
SPECS=${SPECS:-"fashion_cnn paw"}
OUT=build/bench/speed

steps_of() {   # batch warmup steps
    case "$1" in
        fashion_mlp) echo "128 20 300" ;;
        fashion_cnn) echo "128 5 40" ;;
        paw) echo "32 3 15" ;;
        linear) echo "4 200 20000" ;;
        tiny_gpt) echo "8 3 15" ;;
        tiny_transformer) echo "16 5 40" ;;
        unet) echo "8 2 8" ;;         # issue 18's families, as bench/speed.sh runs them
        resnet18) echo "16 2 8" ;;
        *) echo "profile.sh: no step counts for $1 (steps_of)" >&2; exit 2 ;;
    esac
}

echo "== bench/profile.sh  $(date -u +%FT%TZ)  load: $(uptime)"
for name in $SPECS; do
    [ -x "$OUT/$name/step_prof" ] || { echo "profile.sh: run bench/speed.sh first ($OUT/$name/step_prof missing)" >&2; exit 1; }
    read -r B warm steps <<<"$(steps_of "$name")"
    threads="$THREADS 1"; [ "${THREADS_ONLY:-0}" = 1 ] && threads=$THREADS
    for t in $threads; do
        echo
        echo "== $name, per op, OMP_NUM_THREADS=$t"
        OMP_NUM_THREADS=$t "$OUT/$name/step_prof" --batch "$B" --warmup "$warm" --steps "$steps" --label "$name"
    done
    if command -v perf >/dev/null; then
        echo
        echo "== $name, perf, OMP_NUM_THREADS=$THREADS: top symbols (self time)"
        OMP_NUM_THREADS=$THREADS perf record -q -o "$OUT/$name/perf.data" \
            "$OUT/$name/step_bench" --batch "$B" --warmup "$warm" --steps "$steps" >/dev/null 2>&1
        perf report -i "$OUT/$name/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -25
    fi
done
echo "== done: $(uptime)"
