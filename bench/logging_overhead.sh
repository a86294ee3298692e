#!/usr/bin/env bash
# Logging's cost per step on fashion_mlp (the smallest step): the same program with all
# three loggers writing every step (the worst case), every 50 steps (the default), and
# with one CSVLogger that logs no step row (as near to no logging as a run gets: the
# epoch rows only). Runs alternate, so a loaded machine loads each alike.
#   bench/logging_overhead.sh [STEPS] [ROUNDS]
set -eu
LOOM=${LOOM:-build/loom}
steps=${1:-400} rounds=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
variant() {   # NAME LOGGERS
  sed "s|loggers = { CSVLogger { root_dir = \"logs\" } },|$2|" specs/fashion_mlp.lua >"$work/$1.lua"
  "$LOOM" build "$work/$1.lua" -o "$work/$1" >/dev/null
}
ALL='loggers = { CSVLogger { root_dir = "logs" }, TensorBoardLogger { root_dir = "tb" }, MLFlowLogger { experiment_name = "bench" } },'
variant none 'loggers = { CSVLogger { root_dir = "logs", every_n_steps = 1000000 } },'
variant all1 "$ALL log_every_n_steps = 1,"
variant all50 "$ALL log_every_n_steps = 50,"
for r in $(seq "$rounds"); do
  for v in none all1 all50; do
    t=$("$work/$v/train" --quiet --max-steps "$steps" --out "$work/run_${v}_$r" | sed -n 's/^trained [0-9]* steps in \([0-9.]*\) s$/\1/p')
    echo "$v $t"
  done
done | awk -v steps="$steps" '{ s[$1] += $2; n[$1]++ } END {
  for (v in s) printf "%-6s %.3f ms/step (mean of %d runs of %d steps)\n", v, 1000 * s[v] / n[v] / steps, n[v], steps }' | sort
