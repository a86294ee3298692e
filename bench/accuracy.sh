#!/usr/bin/env bash
# bench/accuracy.sh — test accuracy on Fashion-MNIST of the generated training
# programs (issue 3): fashion_mlp after 5 epochs, fashion_cnn after 3 and after 10,
# each trained from scratch by `build/loom train SPEC -- --epochs N --out DIR`
# (the spec's own hyperparameters: AdamW lr 1e-3 wd 0.01, batch 128, 5000 of the
# training images held out for validation, the spec's callbacks).
# Targets: fashion_mlp >= 0.870 (5 epochs); fashion_cnn >= 0.900 (3), >= 0.915 (10).
#
#   bench/accuracy.sh            # loom only (about 15 minutes on 2 quiet cores)
#   TORCH=1 bench/accuracy.sh    # also the same models in PyTorch eager, for reference
#   RUNS="fashion_mlp:5" bench/accuracy.sh
#
# Not part of `ninja test`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-"fashion_mlp:5:0.870 fashion_cnn:3:0.900 fashion_cnn:10:0.915"}
TORCH=${TORCH:-0}
THREADS=${THREADS:-2}
OUT=build/bench/accuracy
mkdir -p "$OUT"

echo "== bench/accuracy.sh  $(date -u +%FT%TZ)  $(nproc) cores, OMP_NUM_THREADS=$THREADS"
echo "== load: $(uptime)"
ninja build/loom >/dev/null

table=$OUT/table.txt
: >"$table"
for run in $RUNS; do
    IFS=: read -r spec epochs target <<<"$run"
    dir=$OUT/$spec-$epochs
    rm -rf "$dir"
    echo
    echo "== loom: $spec, $epochs epochs"
    log=$OUT/$spec-$epochs.log
    OMP_NUM_THREADS=$THREADS build/loom train "specs/$spec.lua" -- --epochs "$epochs" --out "$dir" 2>&1 \
        | tee "$log" | grep -E '^epoch|test/|trained' || true
    acc=$(sed -n 's/.*test\/acc \([0-9.]*\).*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^trained .* in \([0-9.]*\) s$/\1/p' "$log" | tail -1)
    [ -n "$acc" ] || { echo "accuracy.sh: no test/acc in $log" >&2; exit 1; }
    ok=$(awk -v a="$acc" -v t="$target" 'BEGIN { print (a >= t) ? "ok" : "MISS" }')
    echo "loom $spec $epochs $acc $target $ok ${secs:-?}" >>"$table"
    if [ "$TORCH" = 1 ]; then
        echo "== torch: $spec, $epochs epochs"
        line=$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_train.py "$spec" --epochs "$epochs" --threads "$THREADS" \
            | tee "$OUT/torch-$spec-$epochs.log" | tail -1)
        echo "$line"
        tacc=$(sed -n 's/.*test\/acc \([0-9.]*\).*/\1/p' <<<"$line")
        tsecs=$(sed -n 's/.*in \([0-9.]*\) s.*/\1/p' <<<"$line")
        tok=$(awk -v a="$tacc" -v t="$target" 'BEGIN { print (a >= t) ? "ok" : "MISS" }')
        echo "torch $spec $epochs $tacc $target $tok ${tsecs:-?}" >>"$table"
    fi
done

echo
echo "== load after the runs: $(uptime)"
echo
echo "| side | spec | epochs | test acc | target | | train time s |"
echo "| --- | --- | ---: | ---: | ---: | --- | ---: |"
while read -r side spec epochs acc target ok secs; do
    echo "| $side | $spec | $epochs | $acc | ≥ $target | $ok | $secs |"
done <"$table"
