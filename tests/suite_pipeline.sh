#!/usr/bin/env bash
# The generator's pipeline (gen/pipeline.lua, issue 10):
#  - pipeline_traced_once_ACCEL: a spec runs once per `loom build` (a print() in it
#    prints once), for the CPU, the CUDA and the "auto" (both programs) builds;
#  - pipeline_dump_STAGE_BACKEND: --dump=STAGE prints what every stage made and writes
#    no program.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
. tests/tap.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
STAGES=(spec graph assign autodiff fold strategy plan entries fuse emit)
echo "1..$((3 + 2 * ${#STAGES[@]}))"

{ echo 'print("traced-marker")'; cat specs/fashion_mlp.lua; } >"$tmp/printing.lua"
for accel in cpu cuda auto; do
  out=$("$LOOM" build "$tmp/printing.lua" --no-compile --accelerator=$accel -o "$tmp/out_$accel" 2>&1)
  n=$(printf '%s\n' "$out" | grep -c '^traced-marker$')
  if [ "$n" -eq 1 ]; then ok "pipeline_traced_once_$accel"; else fail "pipeline_traced_once_$accel" "the spec printed $n times: $out"; fi
done

for backend in cpu cuda; do
  for s in "${STAGES[@]}"; do
    name="pipeline_dump_${s}_$backend"
    out=$("$LOOM" build specs/fashion_cnn.lua --accelerator=$backend --dump=$s -o "$tmp/dump" 2>&1); rc=$?
    if [ $rc -ne 0 ]; then fail "$name" "exit $rc: $(printf '%s\n' "$out" | head -3)"
    elif [ -z "$out" ]; then fail "$name" "printed nothing"
    elif [ -e "$tmp/dump" ]; then fail "$name" "wrote the program"
    else ok "$name"; fi
  done
done
