#!/usr/bin/env bash
# detect_anomaly (fabric { detect_anomaly = true } or loom build --detect-anomaly): the
# CPU training program checks every op's output and gradients for NaN/Inf
# (gen/kernels_c.lua's anomaly_lines, templates/cpu/anomaly.h).
#  - a NaN made in the forward (log of a negative: tests/anomaly/forward_nan.lua) stops
#    the program at that op's spec line, with its inputs' statistics;
#  - a NaN made only in the backward (sqrt's gradient at 0: tests/anomaly/backward_nan.lua)
#    stops it at the backward of that op;
#  - off (the field false or absent), the generated files are byte for byte the same;
#    the command-line flag generates what the spec's field does;
#  - on, a run without a NaN trains exactly as the run without checks (the same last
#    checkpoint, bit for bit);
#  - the CUDA backend refuses it, pointing at the spec's line.
set -u
LOOM=${LOOM:-build/loom}
LOOM=$(cd "$(dirname "$LOOM")" && pwd)/$(basename "$LOOM")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"
plan 6
export OMP_NUM_THREADS=1

# CASE NAME SPEC WANT...: build SPEC, run 3 steps: a non-zero exit whose stderr starts with
# the first WANT and contains the others
stops_at() {
  local name=$1 spec=$2 want=$3; shift 3
  local d="$work/$(basename "$spec" .lua)"
  if ! "$LOOM" build "$spec" -o "$d" >"$d.log" 2>&1; then fail "$name" "loom build: $(tail -1 "$d.log")"; return; fi
  local err rc
  err=$("$d/train" --max-steps 3 --out "$d/run" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ]; then fail "$name" "the program exited 0"; return; fi
  case "$err" in "$want"*) ;; *) fail "$name" "expected '$want' first, got: $(printf '%s\n' "$err" | head -1)"; return ;; esac
  for w in "$@"; do
    case "$err" in *"$w"*) ;; *) fail "$name" "expected '$w' in: $err"; return ;; esac
  done
  ok "$name"
}
stops_at "a NaN made in the forward stops at the op's spec line" tests/anomaly/forward_nan.lua \
  "tests/anomaly/forward_nan.lua:8: error: detect_anomaly: forward of log made NaN" \
  "    input 1 (B, 3): 12 values, min -1" ", 0 non-finite"
stops_at "a NaN made only in the backward stops at the backward of its op" tests/anomaly/backward_nan.lua \
  "tests/anomaly/backward_nan.lua:9: error: detect_anomaly: backward of sqrt made Inf" \
  "the gradient of input 1 (B, 3) has 12 non-finite of 12 values" "    the gradient of its output: 12 values"

# off: the same files whether the field is false or absent; the flag = the field
for v in absent false true; do
  mkdir -p "$work/$v"
  case $v in
    absent) sed 's/, detect_anomaly = true//' tests/anomaly/forward_nan.lua ;;
    *) sed "s/detect_anomaly = true/detect_anomaly = $v/" tests/anomaly/forward_nan.lua ;;
  esac >"$work/$v/spec.lua"
done
gen() { (cd "$work/$1" && "$LOOM" build spec.lua --no-compile -o "out${2:-}" ${3:-} >gen.log 2>&1) || echo "loom build ($1): $(tail -1 "$work/$1/gen.log")"; }
why="$(gen absent) $(gen false) $(gen absent _flag --detect-anomaly) $(gen true)"
if [ -n "${why// /}" ]; then
  fail "off, the generated files are byte for byte the same" "$why"
  fail "--detect-anomaly generates what the spec's field does" "$why"
else
  # (but the spec's hash, of its text, which differs)
  d=$(diff -r -I '^#define MODEL_SPEC_HASH ' "$work/absent/out" "$work/false/out" | head -3)
  if [ -n "$d" ]; then fail "off, the generated files are byte for byte the same" "$d"
  elif grep -q anomaly "$work/absent/out/model.c"; then fail "off, the generated files are byte for byte the same" "model.c names anomaly"
  else ok "off, the generated files are byte for byte the same"; fi
  d=$(diff "$work/absent/out_flag/model.c" "$work/true/out/model.c" | head -3)
  if [ -n "$d" ]; then fail "--detect-anomaly generates what the spec's field does" "$d"
  elif ! grep -q "anomaly_check" "$work/true/out/model.c"; then fail "--detect-anomaly generates what the spec's field does" "no checks in model.c"
  else ok "--detect-anomaly generates what the spec's field does"; fi
fi

# on, without a NaN (forward_nan.lua with log(h * h + 1) for its log of a negative): the same run
name="with checks, a run without a NaN trains as the run without them"
a="$work/finite"; mkdir -p "$a"
sed 's/log(h - 100)/log(h * h + 1)/; s/, detect_anomaly = true//' tests/anomaly/forward_nan.lua >"$a/spec.lua"
if "$LOOM" build "$a/spec.lua" -o "$a/off" >"$a/off.log" 2>&1 && "$LOOM" build "$a/spec.lua" --detect-anomaly -o "$a/on" >"$a/on.log" 2>&1; then
  "$a/off/train" --epochs 3 --out "$a/off/run" >"$a/off.out" 2>&1; rc_off=$?
  "$a/on/train" --epochs 3 --out "$a/on/run" >"$a/on.out" 2>&1; rc_on=$?
  if [ $rc_off -ne 0 ] || [ $rc_on -ne 0 ]; then fail "$name" "exit status $rc_off without, $rc_on with: $(tail -1 "$a/on.out")"
  elif ! grep -q anomaly_check "$a/on/model.c"; then fail "$name" "no checks in the program built with --detect-anomaly"
  elif ! cmp -s "$a/off/run/last.safetensors" "$a/on/run/last.safetensors"; then fail "$name" "the last checkpoints differ"
  else ok "$name"; fi
else
  fail "$name" "loom build: $(tail -1 "$a/on.log")"
fi

name="the CUDA backend refuses detect_anomaly at the spec's line"
err=$("$LOOM" build tests/anomaly/forward_nan.lua --accelerator=cuda --no-compile -o "$work/cuda" 2>&1); rc=$?
want="tests/anomaly/forward_nan.lua:12: detect_anomaly is not supported by the CUDA backend yet"
if [ $rc -eq 0 ]; then fail "$name" "loom build exited 0"
else case "$(printf '%s\n' "$err" | head -1)" in "$want"*) ok "$name" ;; *) fail "$name" "expected '$want', got: $err" ;; esac; fi
