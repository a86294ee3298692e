#!/usr/bin/env bash
# `ninja test-asan`: everything a user can run, under AddressSanitizer and
# UndefinedBehaviorSanitizer (leaks included, no suppressions).  loom itself
# (build/asan/loom) runs inspect, explain and build on every spec in specs/ and every
# tests/spec_fail case; each spec's program is generated with the sanitizers
# ($LOOM_CFLAGS / $LOOM_LDFLAGS), trains a few steps, and resumes from its checkpoint;
# the data and checkpoint Criterion suites run sanitized.  A test fails on a non-zero
# exit where success is expected, or on any sanitizer report, which its line names
# (the first frame in loom's own code: file:line).  Exits 1 when a test failed.
# Not part of `ninja test` (about 10 minutes on two cores, see the closing note of issue 11).
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh   # ok, fail, skip

LOOM=build/asan/loom
# recoverable UBSan checks (what -fsanitize=undefined gives; GCC's warnings differ
# with -fno-sanitize-recover), halting at the first report all the same (UBSAN_OPTIONS)
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
# the generated programs at -O1 with debug information (file:line in reports); GCC
# warns differently at each level, so ASAN_OPT=-O3 builds them as shipped
export LOOM_CFLAGS="${ASAN_OPT:--O1} -g $SAN" LOOM_LDFLAGS="$SAN"
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LOOM_SPEC_SECONDS=${LOOM_SPEC_SECONDS:-2}
export GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=2
STEPS=${ASAN_STEPS:-3}
work=$(mktemp -d)
mkdir -p "$work/run"
trap 'rm -rf "$work"' EXIT

for b in "$LOOM" build/asan/tests/test_data build/asan/tests/test_ckpt; do
  [ -x "$b" ] || { fail "asan" "$b is not built (run 'ninja test-asan', which builds it)"; exit 1; }
done

# The sanitizer's report in LOG, as one line: its kind and the first frame that is
# ours (not libc, the sanitizer runtime, Lua or OpenBLAS); empty when there is none.
report() {
  local log=$1 kind frame
  kind=$(grep -m1 -oE "ERROR: (AddressSanitizer|LeakSanitizer): [a-z-]+|runtime error: .*" "$log")
  [ -n "$kind" ] || return 0
  frame=$(grep -E "^ +#[0-9]+ " "$log" | grep -vE "libsanitizer|/libc|libasan|libubsan|liblua|libopenblas|libgomp|libcriterion| in __(asan|interceptor|ubsan|sanitizer)|\(<unknown|/lib/x86_64" | head -1 |
          sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //')
  [ -n "$frame" ] || frame=$(grep -m1 -oE "[A-Za-z0-9_./-]+\.(c|inc|h):[0-9]+" "$log")
  echo "$kind at $frame"
}

# run NAME EXPECT CMD...: EXPECT is "0" (must succeed) or "fail" (must exit non-zero,
# a user error); either way no sanitizer report
run() {
  local name=$1 expect=$2; shift 2
  local log="$work/log.$((++nlog))" rc rep
  "$@" >"$log" 2>&1; rc=$?
  rep=$(report "$log")
  if [ -n "$rep" ]; then fail "$name" "$rep"
  elif [ "$expect" = 0 ] && [ $rc -ne 0 ]; then
    fail "$name" "exit $rc: $( (grep -m1 -E "error: " "$log" || tail -2 "$log") | tr '\n' ' ')"
  elif [ "$expect" = fail ] && { [ $rc -eq 0 ] || [ $rc -ge 70 ]; }; then fail "$name" "exit $rc, expected a user error: $(head -1 "$log")"
  else ok "$name"; return $rc; fi
  nfail=$((nfail + 1))
  return $rc
}
nlog=0 nfail=0

# every mistake in tests/spec_fail, through each command's way into the front end
for f in tests/spec_fail/*.lua; do
  c=$(basename "$f" .lua)
  run "asan inspect spec_fail/$c" fail "$LOOM" inspect "$f"
  run "asan explain spec_fail/$c" fail "$LOOM" explain "$f" -o "$work/fail/$c"
  run "asan build spec_fail/$c" fail "$LOOM" build "$f" -o "$work/fail/$c" --no-compile
done

# every spec: inspect, explain, build (with the sanitizers), train, resume.  tiny_gpt's
# program reads small token files of the same names (--data): validating on the whole
# KJV validation file would take minutes under the sanitizers
mkdir -p "$work/kjv_small"
head -c 65536 build/kjv.txt >"$work/kjv_small.txt" 2>/dev/null
"$LOOM" data tokens "$work/kjv_small.txt" -o "$work/kjv_small/kjv.bin" --val 0.1 >/dev/null 2>&1
for spec in specs/*.lua; do
  s=$(basename "$spec" .lua)
  data=()
  [ "$s" = tiny_gpt ] && data=(--data "$work/kjv_small")
  run "asan inspect $s" 0 "$LOOM" inspect "$spec"
  run "asan explain $s" 0 "$LOOM" explain "$spec" -o "$work/explain/$s"
  if ! run "asan build $s" 0 "$LOOM" build "$spec" -o "$work/$s"; then
    skip "asan train $s" "did not build"; skip "asan resume $s" "did not build"; continue
  fi
  if run "asan train $s ($STEPS steps)" 0 "$work/$s/train" --max-steps "$STEPS" --out "$work/run/$s" --quiet "${data[@]}"; then
    run "asan resume $s" 0 "$work/$s/train" --max-steps $((STEPS * 2)) --resume "$work/run/$s/last.safetensors" \
      --out "$work/run/$s.resumed" --quiet "${data[@]}"
  else skip "asan resume $s" "training failed"; fi
done

# the runtime's data and checkpoint suites (Criterion forks each test: the report is
# in the child's output)
for t in test_data test_ckpt; do
  run "asan $t" 0 "build/asan/tests/$t" --jobs 1
done

# bad data given to a program: refused with a message, never read out of bounds
#  - Fashion-MNIST files of 100 images, fewer than fashion_mlp's val_split
if [ -x "$work/fashion_mlp/train" ] && [ -d /usr/share/datasets/fashion-mnist ]; then
  /usr/bin/python3 - /usr/share/datasets/fashion-mnist "$work/fashion100" <<'EOF'
import gzip, os, struct, sys
src, dst = sys.argv[1:]
os.makedirs(dst)
for name in os.listdir(src):
    b = gzip.open(os.path.join(src, name)).read()
    ndim = b[3]
    dims = list(struct.unpack(">%dI" % ndim, b[4:4 + 4 * ndim]))
    per = 1
    for d in dims[1:]: per *= d
    n = min(dims[0], 100)
    out = b[:4] + struct.pack(">%dI" % ndim, n, *dims[1:]) + b[4 + 4 * ndim:4 + 4 * ndim + n * per]
    open(os.path.join(dst, name), "wb").write(gzip.compress(out, mtime=0))
EOF
  run "asan fashion_mlp on 100 images (val_split 5000) is refused" fail \
    "$work/fashion_mlp/train" --data "$work/fashion100" --max-steps 1 --out "$work/run/f100" --quiet
else skip "asan fashion_mlp on 100 images (val_split 5000) is refused" "no fashion_mlp program or no Fashion-MNIST"; fi

#  - .npy inputs whose per-sample shape is not the compiled one
npy() {   # npy FILE DESCR SHAPE...: a .npy file of zeros (no numpy needed)
  /usr/bin/python3 - "$@" <<'EOF'
import struct, sys
path, descr, shape = sys.argv[1], sys.argv[2], tuple(int(x) for x in sys.argv[3:])
h = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, shape)
h += " " * (-(len(h) + 11) % 64) + "\n"
n = 1
for d in shape: n *= d
open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + bytes(n * int(descr[2:])))
EOF
}
mkdir -p "$work/npy/good" "$work/npy/narrow"
npy "$work/npy/good/x.npy" "<f4" 256 4; npy "$work/npy/good/y.npy" "<i8" 256
npy "$work/npy/narrow/x.npy" "<f4" 256 3; npy "$work/npy/narrow/y.npy" "<i8" 256
cat >"$work/npy/spec.lua" <<EOF
model "NpyNet" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 2),
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Npy { fields = { x = "$work/npy/good/x.npy", y = "$work/npy/good/y.npy" } },
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.y) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
EOF
if run "asan build npy spec" 0 "$LOOM" build "$work/npy/spec.lua" -o "$work/npy/b"; then
  run "asan npy with 3 features for Tensor{4} is refused" fail \
    "$work/npy/b/train" --data "$work/npy/narrow" --max-steps 2 --out "$work/run/npy" --quiet
else skip "asan npy with 3 features for Tensor{4} is refused" "did not build"; fi

# the exit status for ninja: any "not ok" fails the target
[ "$nfail" -eq 0 ]
