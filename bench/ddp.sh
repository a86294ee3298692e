#!/usr/bin/env bash
# bench/ddp.sh — DDP's step time, loom's 2 ranks over MPI against PyTorch DDP's 2 processes
# over gloo (issue 13), and loom's fsdp SHARD_GRAD_OP on the same spec, on bench/specs/ddp_mlp.lua (1.9 M parameters, batch 64 per rank,
# AdamW, float32, one thread per rank on both sides).
#   loom   the generated program under mpirun -np 2 (OMP_NUM_THREADS=1), --max-steps STEPS;
#          its "trained N steps in S s" (the training loop, MPI's start-up excluded)
#   torch  bench/torch_ddp.py: DistributedDataParallel (bucket_cap_mb 25, as loom's
#          default), the same steps timed from after the process group is up
# The sides run alternately (loom, torch, loom, ...; ROUNDS rounds, a fresh job each) so
# machine noise hits both; the table gives each side's median ms per step over rounds and
# the ratio torch / loom (above 1: loom is faster).  On a shared machine say so beside
# the numbers.
#
#   bench/ddp.sh                    # ROUNDS=3 STEPS=200
#   ROUNDS=5 STEPS=400 bench/ddp.sh
#   LOOM_BASE=/other/build/loom bench/ddp.sh   # adds that loom's ddp program, alternated too
#                                             # (a change's per-step cost, before/after)
#
# Not part of `ninja test`: speed is measured here, never in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-200}
LOOM=${LOOM:-$PWD/build/loom}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$LOOM" build bench/specs/ddp_mlp.lua -o "$work/prog" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
# the same spec as fsdp SHARD_GRAD_OP (reduce-scatter + all-gather instead of the all-reduce)
sed 's/strategy = "ddp", devices = 2 }/strategy = "fsdp", devices = 2, sharding_strategy = "SHARD_GRAD_OP" }/' bench/specs/ddp_mlp.lua >"$work/fsdp_mlp.lua"
cp -a "$work/prog" "$work/fsdp"
"$LOOM" build "$work/fsdp_mlp.lua" -o "$work/fsdp" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
if [ -n "${LOOM_BASE:-}" ]; then
  cp -a "$work/prog" "$work/base"
  "$LOOM_BASE" build bench/specs/ddp_mlp.lua -o "$work/base" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
fi
MPI="mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -np 2"
secs() { grep -o 'trained [0-9]* steps in [0-9.]* s' | awk '{ print $5 }'; }
loom_ms=() fsdp_ms=() torch_ms=() base_ms=()
for r in $(seq "$ROUNDS"); do
  if [ -n "${LOOM_BASE:-}" ]; then
    s=$(TMPDIR=$work $MPI "$work/base/train" --out "$work/bout$r" --max-steps "$STEPS" 2>&1 | secs)
    base_ms+=("$(awk -v s="$s" -v n="$STEPS" 'BEGIN { printf "%.2f", 1000 * s / n }')")
  fi
  s=$(TMPDIR=$work $MPI "$work/prog/train" --out "$work/out$r" --max-steps "$STEPS" 2>&1 | secs)
  loom_ms+=("$(awk -v s="$s" -v n="$STEPS" 'BEGIN { printf "%.2f", 1000 * s / n }')")
  s=$(TMPDIR=$work $MPI "$work/fsdp/train" --out "$work/fout$r" --max-steps "$STEPS" 2>&1 | secs)
  fsdp_ms+=("$(awk -v s="$s" -v n="$STEPS" 'BEGIN { printf "%.2f", 1000 * s / n }')")
  s=$(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_ddp.py --steps "$STEPS" 2>&1 | secs)
  torch_ms+=("$(awk -v s="$s" -v n="$STEPS" 'BEGIN { printf "%.2f", 1000 * s / n }')")
  echo "round $r: loom ddp ${loom_ms[-1]}, loom fsdp ${fsdp_ms[-1]}, torch ddp ${torch_ms[-1]} ms/step" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
lm=$(median "${loom_ms[@]}"); fm=$(median "${fsdp_ms[@]}"); tm=$(median "${torch_ms[@]}")
echo "| side | ms/step (median of $ROUNDS) | rounds |"
echo "| --- | ---: | --- |"
echo "| loom ddp, 2 ranks x 1 thread (MPI) | $lm | ${loom_ms[*]} |"
[ -n "${LOOM_BASE:-}" ] && echo "| loom ddp built by $LOOM_BASE | $(median "${base_ms[@]}") | ${base_ms[*]} |"
echo "| loom fsdp SHARD_GRAD_OP, 2 ranks x 1 thread (MPI) | $fm | ${fsdp_ms[*]} |"
echo "| PyTorch DDP, 2 processes x 1 thread (gloo) | $tm | ${torch_ms[*]} |"
awk -v l="$lm" -v t="$tm" 'BEGIN { printf "torch / loom: %.2f\n", t / l }'
