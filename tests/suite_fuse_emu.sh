#!/usr/bin/env bash
# The fuse pass under the CUDA emulator (tests/cuda_emu): a fused program and its
# --no-fuse twin run the same steps from the same seed on the emulated device, and the
# CPU program runs them too.  Fusing changes no arithmetic (values kept in registers are
# rounded as their buffers would round them; ReLU in cuBLASLt's epilogue commutes with
# the output's rounding), so fused and unfused checkpoints must be identical byte for
# byte; against the CPU program they agree within a bound per precision (GEMM
# summation order, bf16/f16 storage).
#  - tests/fuse/chains.lua at 32-true and bf16-mixed: an 8-op chain, a value with two
#    readers, a broadcast operand's gradient (a reduction kernel), Dropout's mask;
#  - tests/fuse/conv_tail.lua at 32-true and bf16-mixed: conv + residual + ReLU + Dropout in
#    the conv's kernel, BatchNorm + ReLU in BN's, linear + ReLU in cuBLASLt's epilogue;
#  - tests/fuse/gelu_epilogue.lua: linear + GELU (tanh) in the epilogue, the pre-activation
#    through its aux output: cuBLASLt computes that GELU, so fused and unfused agree
#    within a bound, not bit for bit.
# SKIPs without the CUDA toolkit (the emulator compiles kernels with NVRTC) or numpy.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
CUDA=${CUDA_HOME:-/usr/local/cuda}
PY=/usr/bin/python3
# NAME SPEC PRECISION STEPS CPU_BOUND [FUSED_VS_UNFUSED: "same", or a bound where an epilogue computes on its own]
CASES=("chains tests/fuse/chains.lua 32-true 3 1e-6 same" "chains tests/fuse/chains.lua bf16-mixed 3 1e-3 same"
       "conv_tail tests/fuse/conv_tail.lua 32-true 3 1e-5 same" "conv_tail tests/fuse/conv_tail.lua bf16-mixed 3 1e-3 same"
       "gelu_epilogue tests/fuse/gelu_epilogue.lua 32-true 3 1e-5 1e-5")
echo "1..$((2 * ${#CASES[@]}))"   # fuse_emu_fused_equals_unfused_NAME_PREC, fuse_emu_matches_cpu_NAME_PREC
if [ ! -x "$CUDA/bin/nvcc" ] || ! "$PY" -c "import numpy" 2>/dev/null; then
  for c in "${CASES[@]}"; do set -- $c
    echo "ok fuse_emu_fused_equals_unfused_$1_$3 # SKIP no CUDA toolkit or no numpy"
    echo "ok fuse_emu_matches_cpu_$1_$3 # SKIP no CUDA toolkit or no numpy"
  done
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# objects of the runtime and of kernels other programs have (tests/cuda_emu/build.sh)
export CUDA_EMU_CACHE=${CUDA_EMU_CACHE:-$PWD/build/cuda_emu_cache}
for c in "${CASES[@]}"; do
  set -- $c
  name=$1 spec=$2 prec=$3 steps=$4 atol=$5 same=$6
  d="$tmp/${name}_$prec"
  why=""
  for v in fused nofuse; do
    flag=""; [ $v = nofuse ] && flag=--no-fuse
    if ! "$LOOM" build "$spec" --accelerator=cuda --precision="$prec" $flag --no-compile -o "$d/$v" >"$d.$v.log" 2>&1 ||
       ! tests/cuda_emu/build.sh "$d/$v" >>"$d.$v.log" 2>&1 ||
       ! "$d/$v/emu/run" --max-steps "$steps" --seed 11 --out "$d/run_$v" >>"$d.$v.log" 2>&1; then
      why="$v: $(tail -n 1 "$d.$v.log")"; break
    fi
  done
  if [ -z "$why" ]; then
    if [ "$same" = same ]; then
      if out=$("$PY" tests/fuse/compare_ckpt.py "$d/run_fused/last.safetensors" "$d/run_nofuse/last.safetensors") && [ "$out" = identical ]; then
        echo "ok fuse_emu_fused_equals_unfused_${name}_$prec ($steps steps: checkpoints identical)"
      else echo "not ok fuse_emu_fused_equals_unfused_${name}_$prec: $out"; fi
    elif out=$("$PY" tests/fuse/compare_ckpt.py "$d/run_fused/last.safetensors" "$d/run_nofuse/last.safetensors" "$same"); then
      echo "ok fuse_emu_fused_equals_unfused_${name}_$prec ($steps steps: $out; the epilogue's GELU is cuBLASLt's, bound $same)"
    else echo "not ok fuse_emu_fused_equals_unfused_${name}_$prec: $out (bound $same)"; fi
  else
    echo "not ok fuse_emu_fused_equals_unfused_${name}_$prec: $why"
  fi
  if "$LOOM" build "$spec" --accelerator=cpu --precision="$prec" -o "$d/cpu" >"$d.cpu.log" 2>&1 &&
     "$d/cpu/train" --max-steps "$steps" --seed 11 --out "$d/run_cpu" >>"$d.cpu.log" 2>&1 && [ -z "$why" ]; then
    if out=$("$PY" tests/fuse/compare_ckpt.py "$d/run_fused/last.safetensors" "$d/run_cpu/last.safetensors" "$atol"); then
      echo "ok fuse_emu_matches_cpu_${name}_$prec ($out; bound $atol)"
    else echo "not ok fuse_emu_matches_cpu_${name}_$prec: $out (bound $atol)"; fi
  else
    echo "not ok fuse_emu_matches_cpu_${name}_$prec: ${why:-the CPU program: $(tail -n 1 "$d.cpu.log")}"
  fi
done
