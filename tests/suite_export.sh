#!/usr/bin/env bash
# loom export: the inference library and CLI (gen/emit_export.lua, templates/export/).
#  - exported forward of fashion_cnn, paw and tiny_transformer (32-true), and of
#    fashion_cnn at bf16-true and 16-true (16-bit weights and running statistics), equals
#    the training program's eval-mode forward (tests/harness/eval_forward.c) bit for bit,
#    on PyTorch's weights (tests/torch/export_case.py: running statistics away from 0/1);
#  - the header compiles in a C++ program (tests/harness/export_use.cpp) that calls the
#    library from 4 threads at once (outputs equal to one thread's), gets error values
#    for bad arguments and bad checkpoints, survives random batch sizes and bits (fuzz,
#    runs counted) and each of its allocations failing in turn (ENOMEM, never an exit);
#    the same at bf16-true and 16-true, whose running statistics are 16-bit (the library
#    maps its weights read-only: a forward that wrote one would fault);
#  - the CLI's bad inputs (shape, dtype, missing file, corrupt .npy, options) give one
#    line and a non-zero exit; a checkpoint of another model or precision is refused,
#    naming the tensor;
#  - libNAME.so exports only the API and links no Lua, MPI or training code;
#  - a --debug build stops at a kernel under gdb;
#  - a sampling method (tests/harness/small_gpt.sh's generate) exported as gpt_generate:
#    the CLI's --generate gives the training program's --sample bytes from the same
#    checkpoint (greedy, seeded, top-k, the default seed; the window restarting), the
#    header with it compiles as C++; its bad arguments get one line and a non-zero exit.
set -u
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/tap.sh"
SPECS="fashion_cnn paw tiny_transformer"
plan 31
export OMP_WAIT_POLICY=passive   # threads of several teams on 2 cores: no spinning
B=5
CCFLAGS="-std=c11 -O2 -fopenmp -march=native -D_GNU_SOURCE"
LIBS="-ldnnl -lopenblas -lz -lpthread -lm -fopenmp"
# export_use.cpp makes the library's n-th allocation fail through these
WRAP="-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=mmap"
USE_TESTS="threads errors fuzz checkpoints out-of-memory"

if py_lacks torch numpy; then
  for s in $SPECS; do no_torch "export $s equals the training program's eval forward at 32-true" "$PY has no torch or numpy"; done
  for p in bf16-true 16-true; do no_torch "export fashion_cnn equals the training program's eval forward at $p" "$PY has no torch or numpy"; done
  for p in 32-true bf16-true 16-true; do for t in $USE_TESTS; do no_torch "export $p C++ $t" "$PY has no torch or numpy"; done; done
  have_torch=0
else
  have_torch=1
fi

# bit-exact against the training program's eval forward: SPEC PRECISION WORK (which holds
# export_case.py's weights and batch, PER_SAMPLE its output's elements) EXPORT_DIR
same_as_training() {
  local s=$1 prec=$2 w=$3 x=$4 per=$5 name="export $s equals the training program's eval forward at $2"
  "$LOOM" build "specs/$s.lua" --accelerator=cpu --precision=$prec --devices=1 --no-compile -o "$w/train" >"$w/gen.log" 2>&1 \
    || { fail "$name" "loom build: $(tail -1 "$w/gen.log")"; return; }
  local d="$w/train" ins
  cc $CCFLAGS -I"$d" tests/harness/eval_forward.c "$d/model.c" "$d/ckpt.c" "$d/data.c" "$d/npy.c" "$d/idx.c" "$d/tokens.c" \
    $LIBS -o "$w/eval_forward" 2>"$w/cc.log" || { fail "$name" "eval_forward: $(grep -m1 error "$w/cc.log")"; return; }
  PER_SAMPLE=$per "$w/eval_forward" "$w/weights.safetensors" "$w" $B "$w/train.bin" 2>"$w/ef.log" \
    || { fail "$name" "eval_forward: $(tail -1 "$w/ef.log")"; return; }
  # the inputs: the model's (the loss's targets stay out)
  case $s in fashion_cnn) ins="$w/image.npy" ;; paw) ins="img=$w/img.npy feat=$w/feat.npy" ;; *) ins="$w/idx.npy" ;; esac
  "$x/$s" $ins -o "$w" >"$w/cli.log" 2>&1 || { fail "$name" "CLI: $(tail -1 "$w/cli.log")"; return; }
  local why
  why=$("$PY" tests/torch/export_case.py same "$w/output.npy" "$w/train.bin" "$s" 2>&1) && ok "$name" || fail "$name" "$why"
}
for s in $SPECS; do
  [ $have_torch = 1 ] || break
  w="$work/$s"; mkdir -p "$w"
  name="export $s equals the training program's eval forward at 32-true"
  per=$("$PY" tests/torch/export_case.py "$s" "$w" $B 2>"$w/py.log") || { fail "$name" "export_case.py: $(tail -1 "$w/py.log")"; continue; }
  "$LOOM" export "specs/$s.lua" --precision=32-true --checkpoint "$w/weights.safetensors" --max-batch 8 -o "$w/x" >"$w/x.log" 2>&1 \
    || { fail "$name" "loom export: $(tail -1 "$w/x.log")"; continue; }
  same_as_training $s 32-true "$w" "$w/x" $per
done

x="$work/fashion_cnn/x"; lib=fashion_cnn
# export_use.cpp on DIR's library, WEIGHTS: 5 results named "export PREC C++ ..."
use_cases() {
  local prec=$1 dir=$2 weights=$3
  if ! g++ -std=c++17 -O1 -Wall -Wextra -Werror -DWRAPPED -DNAME=$lib -DNAME_UPPER=FASHION_CNN -I"$dir" tests/harness/export_use.cpp \
      "$dir/lib$lib.a" $LIBS $WRAP -o "$work/use_$prec" 2>"$work/use_$prec.log"; then
    for t in $USE_TESTS; do fail "export $prec C++ $t" "the header does not compile in C++: $(grep -m1 error "$work/use_$prec.log")"; done
    return
  fi
  harness "export $prec C++ use" 5 "s/^\(ok\|not ok\) /\1 export $prec C++ /" "$work/use_$prec" "$weights" 4 $4 \
    "$work/tiny_transformer/weights.safetensors"
}
if [ $have_torch = 1 ] && [ -x "$x/$lib" ]; then
  use_cases 32-true "$x" "$work/fashion_cnn/weights.safetensors" 400
elif [ $have_torch = 1 ]; then
  for t in $USE_TESTS; do fail "export 32-true C++ $t" "no exported fashion_cnn"; done
fi
# 16-bit exports: their checkpoints as such a training program writes them (16-bit state)
for p in bf16:bf16-true f16:16-true; do
  [ $have_torch = 1 ] || break
  dt=${p%%:*} prec=${p##*:} w="$work/fashion_cnn_$dt"; mkdir -p "$w"
  if ! per=$("$PY" tests/torch/export_case.py fashion_cnn "$w" $B $dt 2>"$w/py.log"); then
    fail "export fashion_cnn equals the training program's eval forward at $prec" "export_case.py: $(tail -1 "$w/py.log")"
    for t in $USE_TESTS; do fail "export $prec C++ $t" "export_case.py: $(tail -1 "$w/py.log")"; done
    continue
  fi
  if ! "$LOOM" export specs/fashion_cnn.lua --precision=$prec --checkpoint "$w/weights.safetensors" --max-batch 8 -o "$w/x" \
      >"$w/x.log" 2>&1; then
    fail "export fashion_cnn equals the training program's eval forward at $prec" "loom export: $(tail -1 "$w/x.log")"
    for t in $USE_TESTS; do fail "export $prec C++ $t" "loom export: $(tail -1 "$w/x.log")"; done
    continue
  fi
  same_as_training fashion_cnn $prec "$w" "$w/x" $per
  use_cases $prec "$w/x" "$w/weights.safetensors" 100
done

# the CLI's bad inputs: one line naming the file, non-zero exit
if [ $have_torch = 1 ] && [ -x "$x/$lib" ]; then
  "$PY" - "$work" <<'PYEOF'
import sys, numpy as np
w = sys.argv[1]
np.save(w + "/shape.npy", np.zeros((2, 1, 28, 27), np.float32))
np.save(w + "/dtype.npy", np.zeros((2, 1, 28, 28), np.float64))
open(w + "/corrupt.npy", "wb").write(b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'fortran_order'")
np.save(w + "/short.npy", np.zeros((2, 1, 28, 28), np.float32))
b = open(w + "/short.npy", "rb").read()
open(w + "/short.npy", "wb").write(b[:len(b) - 100])
PYEOF
  expect_error "export CLI: wrong shape names the file and the shapes" "shape.npy: input 'image' must have shape (N, 1, 28, 28)" "$x/$lib" "$work/shape.npy" -o "$work"
  expect_error "export CLI: wrong dtype names the file" "dtype.npy: input 'image' is float64; it must be float32" "$x/$lib" "$work/dtype.npy" -o "$work"
  expect_error "export CLI: missing file" "missing.npy" "$x/$lib" "$work/missing.npy" -o "$work"
  expect_error "export CLI: corrupt and truncated .npy" "corrupt.npy" "$x/$lib" "$work/corrupt.npy" -o "$work"
  expect_error "export CLI: unknown option and unknown input" "unknown option '--fast'" "$x/$lib" --fast
else
  for t in "wrong shape names the file and the shapes" "wrong dtype names the file" "missing file" "corrupt and truncated .npy" \
    "unknown option and unknown input"; do no_torch "export CLI: $t" "$PY has no torch or numpy (no weights)"; done
fi

# another model's checkpoint, another precision's: refused at export, naming the tensor
if [ $have_torch = 1 ]; then
  expect_error "export refuses another model's checkpoint, naming the tensor" "tensor 'features.0.weight' of model FashionCNN is not in the checkpoint" \
    "$LOOM" export specs/fashion_cnn.lua --checkpoint "$work/tiny_transformer/weights.safetensors" -o "$work/bad1"
  expect_error "export refuses another precision's checkpoint, naming the tensor" "tensor 'features.0.weight'" \
    "$LOOM" export specs/fashion_cnn.lua --precision=64-true --checkpoint "$work/fashion_cnn/weights.safetensors" -o "$work/bad2"
else
  no_torch "export refuses another model's checkpoint, naming the tensor" "no weights"
  no_torch "export refuses another precision's checkpoint, naming the tensor" "no weights"
fi

# what the library is: the API only, no Lua, MPI or training code
if [ -f "$x/lib$lib.so" ]; then
  syms=$(nm -D --defined-only "$x/lib$lib.so" | awk '{print $3}' | sort | tr '\n' ' ')
  want="fashion_cnn_close fashion_cnn_forward fashion_cnn_forward_arrays fashion_cnn_input fashion_cnn_open fashion_cnn_output "
  deps=$(ldd "$x/lib$lib.so" | grep -Ei 'lua|mpi|cmark' || true)
  train=$(nm "$x/lib$lib.a" 2>/dev/null | grep -Ei 'adam|sgd|backward|optimizer|loader' || true)
  if [ "$syms" != "$want" ]; then fail "export lib exports the API only and links no Lua, MPI or training code" "exports: $syms"
  elif [ -n "$deps" ]; then fail "export lib exports the API only and links no Lua, MPI or training code" "links: $deps"
  elif [ -n "$train" ]; then fail "export lib exports the API only and links no Lua, MPI or training code" "has: $(echo "$train" | head -1)"
  else ok "export lib exports the API only and links no Lua, MPI or training code"; fi
else
  skip "export lib exports the API only and links no Lua, MPI or training code" "no exported fashion_cnn"
fi

# --debug: -O0 -g, and gdb stops at a kernel of the forward
name="export --debug: gdb stops at a kernel"
if ! command -v gdb >/dev/null; then skip "$name" "no gdb"
elif [ $have_torch = 0 ]; then no_torch "$name" "no weights"
else
  "$LOOM" export specs/fashion_cnn.lua --debug --checkpoint "$work/fashion_cnn/weights.safetensors" -o "$work/dbg" >"$work/dbg.log" 2>&1 \
    || { fail "$name" "loom export --debug: $(tail -1 "$work/dbg.log")"; }
  if [ -x "$work/dbg/$lib" ]; then
    out=$(gdb -batch -ex 'break k_linear_forward_f32' -ex run -ex bt --args "$work/dbg/$lib" "$work/fashion_cnn/image.npy" -o "$work/dbg" 2>&1 </dev/null)
    if printf '%s\n' "$out" | grep -q "Breakpoint 1, k_linear_forward_f32" && printf '%s\n' "$out" | grep -q "model_forward" \
       && grep -q -- "-O0 -g" "$work/dbg/build.ninja"; then ok "$name"
    else fail "$name" "$(printf '%s\n' "$out" | grep -m1 -E 'Breakpoint|No symbol|error' || echo 'no breakpoint hit')"; fi
  fi
fi

# a sampling method beside forward: NAME_<method> and the CLI's --generate, against the
# training program's --sample on the same checkpoint (60 tokens: the 16-position window
# restarts several times)
. tests/harness/small_gpt.sh
g="$work/gpt"; mkdir -p "$g"
gpt 'generate = function(m, x) return autoregress(m(x), x.idx, { temperature = 0.8, top_k = 20 }) end,' >"$g/gpt.lua"
name="export a sampling method: --generate equals the training program's --sample"
if ! "$LOOM" build "$g/gpt.lua" --accelerator=cpu -o "$g/prog" >"$g/build.log" 2>&1 || ! "$g/prog/train" --out "$g/run" --quiet >"$g/train.log" 2>&1; then
  fail "$name" "loom build or training: $(tail -1 "$g/build.log" "$g/train.log")"
  fail "export a sampling method: bad arguments get one line" "no checkpoint"
elif ! "$LOOM" export "$g/gpt.lua" --checkpoint "$g/run/last.safetensors" --max-batch 2 -o "$g/x" >"$g/x.log" 2>&1; then
  fail "$name" "loom export: $(tail -1 "$g/x.log")"
  fail "export a sampling method: bad arguments get one line" "loom export: $(tail -1 "$g/x.log")"
else
  why=""
  for a in "--temperature 0" "--seed 7" "--seed 8 --top-k 5 --temperature 1.5" ""; do
    "$g/prog/train" --resume "$g/run/last.safetensors" --sample 60 --prompt "In the beginning" $a >"$g/t.txt" 2>"$g/t.err" \
      || { why="train --sample $a: $(tail -1 "$g/t.err")"; break; }
    "$g/x/gpt" --generate 60 --prompt "In the beginning" $a >"$g/e.txt" 2>"$g/e.err" || { why="gpt --generate $a: $(tail -1 "$g/e.err")"; break; }
    cmp -s "$g/t.txt" "$g/e.txt" || { why="--generate 60 $a: '$(head -c 80 "$g/e.txt")' against --sample's '$(head -c 80 "$g/t.txt")'"; break; }
  done
  if [ -z "$why" ] && ! printf '#include "gpt.h"\nint main() { return gpt_generate(nullptr, nullptr, 0, 0, -1, -1, 0, nullptr, nullptr, 0) == GPT_EARG ? 0 : 1; }\n' \
      | g++ -std=c++17 -Wall -Wextra -Werror -I"$g/x" -x c++ - -x none "$g/x/libgpt.a" $LIBS -o "$g/use" 2>"$g/use.log"; then
    why="gpt.h in C++: $(grep -m1 error "$g/use.log")"
  elif [ -z "$why" ] && ! "$g/use"; then why="gpt_generate(NULL model) is not GPT_EARG"; fi
  [ -z "$why" ] && ok "$name" || fail "$name" "$why"
  expect_error "export a sampling method: bad arguments get one line" "prompt token 195 at 0 is out of [0, 128)" \
    "$g/x/gpt" --generate 5 --prompt "é"
fi

