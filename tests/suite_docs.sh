#!/usr/bin/env bash
# The spec language's reference and guide cannot rot:
# - docs/SPEC.md is what `loom help --markdown` renders now (`ninja docs` regenerates it);
# - every name of the spec environment has a complete entry, and every entry a name
#   (tests/docs/check.lua);
# - every entry's example, made a whole spec, builds (loom inspect), as does every
#   ```lua block of docs/GUIDE.md (a block whose first line is `-- fragment` is skipped:
#   it shows part of a spec given whole elsewhere);
# - `loom help NAME` answers for every name.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
LUA_UNIT=${LUA_UNIT:-build/lua_unit}
LOOM=$(cd "$(dirname "$LOOM")" && pwd)/$(basename "$LOOM")   # the examples run elsewhere
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/examples" "$work/guide"
lines=()

if "$LOOM" help --markdown | cmp -s - docs/SPEC.md; then lines+=("ok SPEC.md is up to date")
else lines+=("not ok SPEC.md is stale: run ninja docs"); fi

check=$("$LUA_UNIT" tests/docs/check.lua "$work/examples" 2>&1)
rc=$?
while IFS= read -r l; do [ -n "$l" ] && lines+=("$l"); done <<<"$check"
[ $rc -eq 0 ] || lines+=("not ok tests/docs/check.lua exited $rc")

# the .npy files that the Npy example (and GUIDE.md's PawModel) read: zeros, written
# without numpy (format 1.0: magic, header length, header padded to 64 bytes, data)
/usr/bin/python3 - "$work" <<'PY'
import sys
def save(path, descr, shape, itemsize):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join("%d, " % d for d in shape).rstrip(" ") if len(shape) > 1 else "%d," % shape[0])
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    n = 1
    for d in shape: n *= d
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(n * itemsize))
w = sys.argv[1]
save(w + "/examples/x.npy", "<f4", (64, 4), 4)
save(w + "/examples/target.npy", "<i8", (64,), 8)
save(w + "/guide/img.npy", "<f4", (8, 3, 128, 128), 4)
save(w + "/guide/feat.npy", "<f4", (8, 12), 4)
save(w + "/guide/target.npy", "<f4", (8, 1), 4)
PY

# GUIDE.md's lua blocks
awk -v dir="$work/guide" '
  /^```lua$/ { n++; file = sprintf("%s/block%02d.lua", dir, n); inblock = 1; printf "" > file; next }
  /^```$/ && inblock { inblock = 0; close(file); next }
  inblock { print >> file }' docs/GUIDE.md

# an example with a train block is generated whole (every stage, the C program's files,
# not compiled); one without, run through the front end (loom inspect).  A name the C
# backend refuses still has to pass the front end, and says so.
run_spec() {   # name file dir
  local err
  if grep -q '^train {' "$2"; then
    err=$(cd "$3" && "$LOOM" build --no-compile --accelerator=cpu -o "$work/out" "$2" 2>&1 >/dev/null)
  else
    err=$(cd "$3" && "$LOOM" inspect "$2" 2>&1 >/dev/null)
  fi
  local rc=$?
  local first=${err%%$'\n'*}
  if [ $rc -ne 0 ] && [[ "$first" == *"is not supported by the C backend yet"* ]] \
     && (cd "$3" && "$LOOM" inspect "$2" >/dev/null 2>&1); then
    lines+=("ok $1 passes the front end; the generator refuses it: ${first#*: }")
  elif [ $rc -eq 0 ]; then lines+=("ok $1 builds")
  else lines+=("not ok $1 does not build: $first"); fi
}
for f in "$work"/examples/*.lua; do
  run_spec "example/$(basename "$f" .lua)" "$f" "$work/examples"
done
shopt -s nullglob
for f in "$work"/guide/*.lua; do
  if [ "$(head -n 1 "$f")" = "-- fragment" ]; then continue; fi
  run_spec "guide/$(basename "$f" .lua)" "$f" "$work/guide"
done
[ -e "$work/guide/block01.lua" ] || lines+=("not ok docs/GUIDE.md has no lua blocks")

for name in $("$LOOM" help | sed -n 's/^  //p'); do
  if out=$("$LOOM" help "$name" 2>&1) && [ -n "$out" ]; then lines+=("ok help/$name")
  else lines+=("not ok help/$name: ${out%%$'\n'*}"); fi
done

# the command line: --version, each command's --help, program flags before --
expect_line() {   # name expected-first-line expected-rc command...
  local name=$1 want=$2 want_rc=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want_rc" ]; then lines+=("not ok cli/$name: exit $rc, expected $want_rc: ${out%%$'\n'*}")
  elif [[ "${out%%$'\n'*}" != $want ]]; then lines+=("not ok cli/$name: got '${out%%$'\n'*}'")
  else lines+=("ok cli/$name"); fi
}
expect_line version "loom [0-9]*.[0-9]*.[0-9]* (commit [0-9a-f]*)" 0 "$LOOM" --version
for cmd in inspect explain build train help; do
  expect_line "$cmd-help" "usage: loom $cmd *" 0 "$LOOM" "$cmd" --help
done
expect_line flags-before-dashes \
  "loom: '--epochs' is a flag of the generated program: pass it after --, as in loom train SPEC -- --epochs 1 (loom --help for usage)" \
  2 "$LOOM" train specs/fashion_mlp.lua --epochs 1
expect_line flags-before-dashes-eq \
  "loom: '--max-steps' is a flag of the generated program: pass it after --, as in loom train SPEC -- --max-steps 5 (loom --help for usage)" \
  2 "$LOOM" train specs/fashion_mlp.lua --max-steps=5
# Fabric's legacy precision aliases are taken, with Fabric's warning
printf 'model "E" { inputs = Tensor{4}, net = Linear(4, 2), forward = function(m, x) return m.net(x) end }\nfabric { precision = "bf16" }\n' > "$work/bf16.lua"
expect_line precision-alias-note \
  "$work/bf16.lua:2: note: precision = 'bf16' is Fabric's legacy alias of 'bf16-mixed' (Fabric warns the same); write precision = \"bf16-mixed\"" \
  0 "$LOOM" inspect "$work/bf16.lua"
expect_line help-not-yet "loom: RNN is not supported yet; supported modules: *" 2 "$LOOM" help RNN
expect_line help-typo "loom: unknown name 'Conv2D' (did you mean 'Conv2d'?) (loom help lists every name)" 2 "$LOOM" help Conv2D

echo "1..${#lines[@]}"
printf '%s\n' "${lines[@]}"
