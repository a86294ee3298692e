#!/usr/bin/env bash
# bench/speed.sh — training-step time, loom against PyTorch eager at its fastest (issues 3, 12).
#
# For each benchmarked spec, the same model, batch size, optimizer (the spec's: AdamW lr
# 1e-3, weight decay 0.01 for the first four) and thread count on both sides:
#   loom   bench/step_bench.c linked with the generated model.o/optim.o: forward +
#          backward + clip_gradients + optimizer_step + zero_grad on a fixed batch
#   torch  bench/torch_step.py: opt.zero_grad(); loss_fn(model(x), y).backward();
#          opt.step(), torch.set_num_threads(THREADS), the OpenBLAS pool pinned to one
#          thread through openblas_set_num_threads, once with each of Debian's OpenBLAS
#          builds (pthread, openmp: chosen by LD_LIBRARY_PATH, since installing one
#          moves the libblas.so.3 alternative machine-wide); the faster is PyTorch's
#          number, and the table names it.  Issue 18's families (resnet18, unet,
#          vit_tiny, audio_conv1d) have no hand-written reference: PyTorch runs the
#          module `loom build --emit torch` writes (its training_loss).
# Each process warms up, times every step on its own and reports the median.  The
# sides run alternately (loom, torch-pthread, torch-openmp, loom, ...; ROUNDS rounds, a
# fresh process each), so machine noise hits all; the table gives the median over
# rounds of the per-process medians, with the spread of the round medians.
# BF16=1 adds rows at bf16: loom --precision=bf16-mixed against PyTorch's bf16 autocast.
# CONTEND=1 keeps one core busy with a spinning process during every run (both sides):
# compare its table with a plain run's for each side's slowdown under contention.
# Then (OMP_SWEEP=1) the loom side alone under OpenMP environment settings.
#
#   bench/speed.sh                       # everything (a few minutes on 2 quiet cores)
#   ROUNDS=5 OMP_SWEEP=0 bench/speed.sh  # more rounds, no OpenMP sweep
#   SPECS="fashion_cnn paw" BF16=1 bench/speed.sh
#   SPECS="resnet18 vit_tiny" OMP_SWEEP=0 bench/speed.sh   # the two larger families (seconds a step)
#   CONTEND=1 OMP_SWEEP=0 bench/speed.sh
#   STEP_DIV=4 ROUNDS=2 bench/speed.sh   # a quick look: a quarter of the timed steps
#
# Not part of `ninja test`: speed is measured here, never in tests.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
OMP_SWEEP=${OMP_SWEEP:-1}
BF16=${BF16:-0}
CONTEND=${CONTEND:-0}
BLAS_BUILDS=${BLAS_BUILDS:-"pthread openmp"}
BLAS_DIR=/usr/lib/x86_64-linux-gnu
OMP_ROUNDS=${OMP_ROUNDS:-2}
SPECS=${SPECS:-"fashion_mlp fashion_cnn paw linear tiny_gpt unet audio_conv1d char_lstm llama"}
STEP_DIV=${STEP_DIV:-1}        # divide the step counts (a quick look on a busy machine)
PY=/usr/bin/python3            # Debian's python3-torch lives here only
OUT=build/bench/speed
mkdir -p "$OUT"
# each PyTorch row names the OpenBLAS build it ran on: a missing one would silently be
# the other (the libblas.so.3 alternative), so refuse instead.  Installing one moves the
# machine's alternative: `update-alternatives --set` puts it back.
for blas in $BLAS_BUILDS; do
    if [ ! -e "$BLAS_DIR/openblas-$blas/libblas.so.3" ]; then
        echo "speed.sh: no $BLAS_DIR/openblas-$blas/libblas.so.3: apt-get install libopenblas0-$blas, or BLAS_BUILDS=\"${BLAS_BUILDS/$blas/}\"" >&2
        exit 2
    fi
done

# name | spec file | batch | precision override | warmup | loom steps | torch steps | target ratio
spec_row() {
    spec_row_full "$1" | awk -v d="$STEP_DIV" '{ for (i = 4; i <= 6; i++) { $i = int($i / d); if ($i < 3) $i = 3 } print }'
}
spec_row_full() {
    case "$1" in
        fashion_mlp) echo "specs/fashion_mlp.lua 128 - 20 300 200 2" ;;
        fashion_cnn) echo "specs/fashion_cnn.lua 128 - 5 40 30 2" ;;
        paw)         echo "specs/paw.lua 32 32-true 3 12 10 2" ;;   # fp32 on both sides (bench/precision.sh compares precisions)
        linear)      echo "bench/specs/linear.lua 4 - 200 5000 2000 250" ;;
        tiny_gpt)    echo "specs/tiny_gpt.lua 8 - 3 20 15 2" ;;    # B=8, T=128: tokens/s = 1024 × 1000 / ms
        # issue 18's model families (their own optimizers; PyTorch runs the module --emit torch writes)
        resnet18)    echo "specs/resnet18.lua 16 - 2 8 8 1" ;;
        unet)        echo "specs/unet.lua 8 - 2 8 8 1" ;;
        vit_tiny)    echo "specs/vit_tiny.lua 32 - 2 8 8 1" ;;
        audio_conv1d) echo "specs/audio_conv1d.lua 64 - 3 20 20 1" ;;
        char_lstm)   echo "specs/char_lstm.lua 32 - 3 20 15 1" ;;  # against its emitted model.py; the spec's Adam + clip
        llama)       echo "specs/llama.lua 16 - 3 20 15 1" ;;      # against its emitted model.py; the spec's AdamW groups + clip
        *) echo "speed.sh: unknown spec $1" >&2; exit 2 ;;
    esac
}

echo "== bench/speed.sh  $(date -u +%FT%TZ)  $(nproc) cores, THREADS=$THREADS, ROUNDS=$ROUNDS, BF16=$BF16, CONTEND=$CONTEND"
echo "== load: $(uptime)"
ninja build/loom >/dev/null

# generate each program, build the harness against it, count its FLOPs
# the loom programs: NAME at the row's precision, NAME.bf16 at bf16-mixed (BF16=1)
VARIANTS=""
for name in $SPECS; do
    VARIANTS+=" $name"
    [ "$BF16" = 1 ] && [ "$name" != linear ] && VARIANTS+=" $name.bf16"
done
for variant in $VARIANTS; do
    name=${variant%.bf16}
    read -r spec B prec warm lsteps tsteps target <<<"$(spec_row "$name")"
    dir=$OUT/$variant
    popt=(); [ "$prec" != - ] && popt=(--precision="$prec")
    [ "$variant" != "$name" ] && popt=(--precision=bf16-mixed)
    build/loom build "$spec" --accelerator=cpu --devices=1 --emit torch -o "$dir/gen" "${popt[@]}" >"$dir.build.log" 2>&1 \
        || { cat "$dir.build.log"; exit 1; }
    build/loom explain "$spec" -o "$dir/explain" "${popt[@]}" >/dev/null
    cflags=$(sed -n 's/^cflags = //p' "$dir/gen/build.ninja")
    ldlibs=$(sed -n 's/^ldlibs = //p' "$dir/gen/build.ninja")
    # shellcheck disable=SC2086
    cc $cflags -I"$dir/gen" -Ibench bench/step_bench.c "$dir/gen/obj/model.o" "$dir/gen/obj/optim.o" \
        "$dir/gen/obj/threads.o" -o "$dir/step_bench" $ldlibs
    # the same, with a per-op timing hook (bench/profile.sh runs it)
    $PY bench/prof_model.py "$dir/gen/model.c" "$dir/model_prof.c"
    # shellcheck disable=SC2086
    cc $cflags -DSTEP_PROF -I"$dir/gen" -Ibench "$dir/model_prof.c" bench/step_bench.c "$dir/gen/obj/optim.o" \
        "$dir/gen/obj/threads.o" -o "$dir/step_prof" $ldlibs
    # forward FLOPs per sample of the training-step trace (the loss), from the report
    awk '/^## Traced ops: `loss/ { on = 1 } on && /FLOPs per sample/ { gsub(/[*,]/, ""); for (i = 1; i <= NF; i++) if ($(i+1) == "FLOPs") { print $i; exit } }' \
        "$dir/explain/REPORT.md" >"$dir/flops"
    [ -s "$dir/flops" ] || { echo "speed.sh: no FLOPs in $dir/explain/REPORT.md" >&2; exit 1; }
done

run_loom() {   # variant [env assignments...]
    local variant=$1; shift
    read -r spec B prec warm lsteps tsteps target <<<"$(spec_row "${variant%.bf16}")"
    env OMP_NUM_THREADS="$THREADS" "$@" "$OUT/$variant/step_bench" --batch "$B" --warmup "$warm" --steps "$lsteps" --label "$variant"
}
run_torch() {   # variant blas-build
    local variant=$1 blas=$2 name=${1%.bf16} ac=()
    [ "$variant" != "$name" ] && ac=(--autocast bf16)
    read -r spec B prec warm lsteps tsteps target <<<"$(spec_row "$name")"
    # a spec without a hand-written reference (tests/torch/models.py): the emitted module, the spec's optimizer
    case $name in fashion_mlp|fashion_cnn|paw|linear|tiny_gpt) ;;
        *) ac+=(--emitted "$OUT/$name/gen" --optimizer "$(sed -n 's/^[[:space:]]*optimizer = \(.*[}]\),[[:space:]]*$/\1/p' "$spec")") ;;
    esac
    LD_LIBRARY_PATH="$BLAS_DIR/openblas-$blas" OMP_NUM_THREADS="$THREADS" $PY bench/torch_step.py "$name" --batch "$B" \
        --warmup "$warm" --steps "$tsteps" --threads "$THREADS" "${ac[@]}"
}

# CONTEND=1: a process that spins on one core for as long as the runs take
spinner=""
if [ "$CONTEND" = 1 ]; then
    sh -c 'while :; do :; done' &
    spinner=$!
    trap 'kill "$spinner" 2>/dev/null' EXIT
    echo "== CONTEND=1: pid $spinner spins on a core during every run"
fi

results=$OUT/results.txt
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    for variant in $VARIANTS; do
        run_loom "$variant" | sed "s/^/round=$r /" | tee -a "$results"
        for blas in $BLAS_BUILDS; do
            run_torch "$variant" "$blas" | sed "s/^/round=$r /;s/-bf16-autocast / /" | sed "s/^\(round=$r torch\) \([^ ]*\)/\1 $variant/" | tee -a "$results"
        done
    done
done
[ -n "$spinner" ] && { kill "$spinner"; wait "$spinner" 2>/dev/null || true; trap - EXIT; }

# the table
flops_args=()
for variant in $VARIANTS; do
    read -r spec B prec warm lsteps tsteps target <<<"$(spec_row "${variant%.bf16}")"
    flops_args+=("$variant=$(cat "$OUT/$variant/flops"):$B:$target")
done
echo
echo "== load after the runs: $(uptime)"
$PY - "$results" "${flops_args[@]}" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    side, name = f[1], f[2]
    kv = dict(x.split("=", 1) for x in f if "=" in x)
    rows.setdefault((side, name), []).append(kv)
    if side == "torch":   # each OpenBLAS build on its own too
        rows.setdefault(("torch:" + kv.get("blas", "?"), name), []).append(kv)
print()
print("| spec | B | loom median ms | torch best median ms (OpenBLAS) | torch per OpenBLAS build ms | torch/loom | target | loom GFLOP/s | loom peak RSS MiB | torch peak RSS MiB |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for arg in sys.argv[2:]:
    name, rest = arg.split("=", 1)
    flops, B, target = rest.split(":")
    def stat(side):
        rs = rows.get((side, name), [])
        med = [float(r["median_ms"]) for r in rs]
        rss = max(int(r["maxrss_kb"]) for r in rs) / 1024 if rs else float("nan")
        return (statistics.median(med) if med else float("nan"), min(med, default=float("nan")), max(med, default=float("nan")), rss)
    lm, llo, lhi, lrss = stat("loom")
    builds = sorted({k[0] for k in rows if k[0].startswith("torch:") and k[1] == name})
    per = {b.split(":")[1]: stat(b) for b in builds}
    best = min(per, key=lambda b: per[b][0]) if per else None
    tm, tlo, thi, trss = per[best] if best else stat("torch")
    each = " / ".join(f"{b} {per[b][0]:.3f}" for b in sorted(per))
    ratio = tm / lm
    gflops = 3 * float(flops) * int(B) / (lm * 1e-3) * 1e-9
    ok = "ok" if ratio >= float(target) else "MISS"
    print(f"| {name} | {B} | {lm:.3f} ({llo:.3f}–{lhi:.3f}) | {tm:.3f} ({tlo:.3f}–{thi:.3f}) {best} | {each} | {ratio:.2f}× | ≥{target}× {ok} | {gflops:.1f} | {lrss:.1f} | {trss:.1f} |")
print()
print("medians over rounds of per-process step medians (range of the round medians in brackets);")
print("torch: the faster OpenBLAS build's median (each build's in the next column); NAME.bf16 rows: loom bf16-mixed")
print("against PyTorch's bf16 autocast.  GFLOP/s = 3 × forward FLOPs per sample (REPORT.md, loss trace) × B / loom median.")
EOF

if [ "$OMP_SWEEP" = 1 ]; then
    echo
    echo "== OpenMP settings, loom side only ($OMP_ROUNDS rounds, configs interleaved); load: $(uptime)"
    configs=(
        "default|"
        "OMP_WAIT_POLICY=passive|OMP_WAIT_POLICY=passive"
        "OMP_WAIT_POLICY=active|OMP_WAIT_POLICY=active"
        "GOMP_SPINCOUNT=10000|GOMP_SPINCOUNT=10000"
        "GOMP_SPINCOUNT=10000000|GOMP_SPINCOUNT=10000000"
        "OMP_PROC_BIND=close OMP_PLACES=cores|OMP_PROC_BIND=close OMP_PLACES=cores"
    )
    sweep=$OUT/omp_sweep.txt
    : >"$sweep"
    for r in $(seq 1 "$OMP_ROUNDS"); do
        for c in "${configs[@]}"; do
            label=${c%%|*}; vars=${c#*|}
            for name in $SPECS; do
                # shellcheck disable=SC2086
                line=$(run_loom "$name" $vars)
                echo "config=${label// /+} $line" >>"$sweep"
            done
        done
    done
    $PY - "$sweep" $SPECS <<'EOF'
import statistics, sys
res = {}
order = []
for line in open(sys.argv[1]):
    f = line.split()
    cfg = f[0].split("=", 1)[1].replace("+", " ")
    if cfg not in order: order.append(cfg)
    kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
    res.setdefault((cfg, f[2]), []).append(float(kv["median_ms"]))
specs = sys.argv[2:]
print()
print("| OpenMP setting | " + " | ".join(f"{s} ms" for s in specs) + " |")
print("| --- |" + " ---: |" * len(specs))
for cfg in order:
    cells = []
    for s in specs:
        v = res.get((cfg, s), [])
        cells.append(f"{statistics.median(v):.3f}" if v else "-")
    print(f"| {cfg} | " + " | ".join(cells) + " |")
print()
print("median over rounds of per-process step medians, OMP_NUM_THREADS as above.")
EOF
fi
echo "== done: $(uptime)"
