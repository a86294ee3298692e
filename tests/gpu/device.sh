#!/usr/bin/env bash
# tests/gpu/run.sh on a lent GPU machine (issue 17): the machine has a GPU, nvcc, NVRTC,
# cuBLASLt and python3, but no loom, Lua, OpenBLAS or oneDNN, a 15-minute budget for the
# whole session and 64 MiB of working tree that travels.  So every program is built here
# (the CPU ones too, run there with the libraries they need carried beside them) and one
# call runs them all (measured here, 2026-12-07, on a loaded machine: pack 15 minutes,
# 111 MiB unpacked, bundle.tar.xz 17 MiB; not yet run on a GPU):
#
#   tests/gpu/device.sh pack        here (no GPU): tests/gpu/run.sh --prepare into
#                                   build/gpu_bundle (every program built and stripped: the
#                                   CUDA ones for sm_80 + sm_90; the CPU programs' oneDNN,
#                                   OpenBLAS and the rest; the cut-down data, compare_ckpt),
#                                   packed as gpu_bundle/bundle.tar.xz (git-ignored), its
#                                   size checked
#   tests/gpu/device.sh run [OUT]   there, in the repository root with gpu_bundle carried:
#                                   an inventory (GPU, driver, nvcc, the libraries found),
#                                   the bundle unpacked in /tmp, tests/gpu/run.sh --device
#                                   under a time limit (the CPU programs run there too); the
#                                   log and a summary (counts, every `not ok` line, the
#                                   sampling speeds) in OUT ($OUT by default)
#   tests/gpu/device.sh dry-run     here: `run`'s steps without a GPU (the unpacking, the
#                                   library search, run.sh --device's SKIP lines), to check
#                                   the script before spending device time on it
#
# The device call (the `device` tool's run):
#   command: tests/gpu/device.sh run     carry: ["gpu_bundle"]     timeout_s: 480
# DEVICE_LIMIT (seconds, default 420) bounds run.sh --device there, so that the summary is
# written; a rerun after fixes takes GPU_ONLY=REGEX (run.sh: only those tests).
set -u
cd "$(dirname "$0")/../.."
BUNDLE=gpu_bundle   # what travels: bundle.tar.xz
TREE=build/gpu_bundle
MAX_MIB=56   # the working tree travels too (about 4 MiB of tracked files): 64 MiB in all

case "${1:-}" in
pack)
  rm -rf "$BUNDLE" "$TREE"
  start=$(date +%s)
  tests/gpu/run.sh --prepare "$TREE" || exit 1
  mkdir -p "$BUNDLE"
  tar -C "$(dirname "$TREE")" -cf - "$(basename "$TREE")" | xz -T2 -6 >"$BUNDLE/bundle.tar.xz" || exit 1
  mib=$(( ($(stat -c %s "$BUNDLE/bundle.tar.xz") + 1048575) / 1048576 ))
  echo "tests/gpu/device.sh pack: $BUNDLE/bundle.tar.xz is $mib MiB (at most $MAX_MIB; $(du -sm "$TREE" | cut -f1) MiB unpacked), made in $(( $(date +%s) - start )) s"
  if [ -n "$(ls "$TREE"/*/error 2>/dev/null)" ]; then
    echo "tests/gpu/device.sh pack: cases that will report not ok:"; head -n1 "$TREE"/*/error
  fi
  [ "$mib" -le $MAX_MIB ] || { echo "tests/gpu/device.sh pack: $BUNDLE is over $MAX_MIB MiB"; exit 1; }
  ;;
run|dry-run)
  out=${2:-${OUT:-$PWD/$BUNDLE/out}}
  mkdir -p "$out"
  [ -f "$BUNDLE/bundle.tar.xz" ] || { echo "tests/gpu/device.sh: no $BUNDLE/bundle.tar.xz (tests/gpu/device.sh pack, then carry $BUNDLE)"; exit 1; }
  there=${DEVICE_TMP:-/tmp/loom_gpu}
  rm -rf "$there"; mkdir -p "$there"
  # (python3's tarfile where tar or xz is missing)
  { xz -dc "$BUNDLE/bundle.tar.xz" | tar -C "$there" -xf - ; } 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE/bundle.tar.xz" "$there" || exit 1
  T="$there/$(basename "$TREE")"
  {
    echo "== inventory ($(date -u +%FT%TZ))"
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 || echo "no nvidia-smi"
    command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "no nvcc on PATH"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tail -1
  } | tee "$out/inventory.txt"
  # the programs link cuBLASLt (rpath /usr/local/cuda/lib64) and open NVRTC and the driver
  # with dlopen: where the toolkit is not there, the Python packages' copies are
  libdirs=""
  for lib in libcublasLt.so.13 libnvrtc.so.13; do
    if ldconfig -p 2>/dev/null | grep -q "$lib" || [ -e "/usr/local/cuda/lib64/$lib" ]; then echo "$lib: the system's" | tee -a "$out/inventory.txt"; continue; fi
    f=$(find / -xdev -name "$lib" -path "*nvidia*" 2>/dev/null | head -1)
    if [ -n "$f" ]; then libdirs="$libdirs:$(dirname "$f")"; echo "$lib: $f" | tee -a "$out/inventory.txt"
    else echo "$lib: not found" | tee -a "$out/inventory.txt"; fi
  done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$libdirs"
  export LOOM_KERNEL_CACHE="$out/kernel_cache"
  limit=${DEVICE_LIMIT:-420}
  start=$(date +%s)
  set -o pipefail
  if [ "$1" = dry-run ]; then
    # here: the bundle's programs are x86-64 for this toolkit; without a GPU, run.sh skips
    echo "== dry run: run.sh --device without a GPU prints its SKIP lines"
    ldd "$T"/fashion_mlp_32-true/gpu/train | grep -i "not found\|cublas" | tee -a "$out/inventory.txt"
    LD_LIBRARY_PATH="$T/lib" ldd "$T"/fashion_mlp_32-true/cpu/train | grep -i "not found\|dnnl\|openblas" | tee -a "$out/inventory.txt"
  fi
  timeout -k 10 "$limit" tests/gpu/run.sh --device "$T" 2>&1 | tee "$out/gpu_tests.txt"
  rc=$?
  {
    echo "== summary: $(grep -c '^ok' "$out/gpu_tests.txt") ok, $(grep -c '^not ok' "$out/gpu_tests.txt") not ok" \
         "of $(tests/gpu/run.sh --list | wc -l) in $(( $(date +%s) - start )) s$([ $rc -eq 124 ] && echo "; stopped at DEVICE_LIMIT=$limit s")"
    grep '^not ok' "$out/gpu_tests.txt"
    grep '^ok gpu_sample' "$out/gpu_tests.txt"
  } | tee "$out/summary.txt"
  # one failing case's logs beside the summary (what the tool brings back: files, no folders deeper than 2)
  for f in "$T"/*/gpu/out.txt; do
    k=$(basename "$(dirname "$(dirname "$f")")")
    grep -q "^not ok [a-z_]*$k\b" "$out/gpu_tests.txt" && { cp "$f" "$out/first_failure_$k.txt"; break; }
  done
  rm -rf "$out/kernel_cache"
  [ $rc -eq 0 ] || [ $rc -eq 1 ]   # run.sh: 0 whatever the results; a timeout is a failure of this script
  ;;
*)
  echo "usage: tests/gpu/device.sh pack | run [OUT] | dry-run [OUT]" >&2; exit 2 ;;
esac
