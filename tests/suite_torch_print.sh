#!/usr/bin/env bash
# loom's `inspect` against PyTorch, for every spec in specs/: the model print must
# equal print(model) of the hand-written module in tests/torch/models.py character
# for character, and the parameter and buffer tables must list named_parameters()
# and named_buffers() in the same order, with the same shapes (and buffer dtypes).
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
specs=(fashion_mlp fashion_cnn paw tiny_transformer)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/tap.sh   # no_torch
echo "1..$((2 * ${#specs[@]}))"   # torch_print_SPEC, torch_state_SPEC

if py_lacks torch; then
  for s in "${specs[@]}"; do
    no_torch "torch_print_$s" "$PY has no torch"
    no_torch "torch_state_$s" "$PY has no torch"
  done
  exit 0
fi

# loom's Parameters / Buffers tables → the lines models.py prints
state_lines() {
  awk '
    /^$/ { section = "" ; next }
    /^Parameters$/ { section = "param"; header = 1; next }
    /^Buffers$/ { section = "buffer"; header = 1; next }
    section != "" && header { header = 0; next }
    section == "param" { match($0, /\[[^]]*\]/); printf "param %s %s\n", $1, substr($0, RSTART, RLENGTH) }
    section == "buffer" { match($0, /\[[^]]*\]/); rest = substr($0, RSTART + RLENGTH); split(rest, f, " ");
                          printf "buffer %s %s %s\n", $1, substr($0, RSTART, RLENGTH), f[1] }
  ' "$1"
}

for s in "${specs[@]}"; do
  if ! "$LOOM" inspect "specs/$s.lua" >"$tmp/$s.loom" 2>"$tmp/$s.err"; then
    echo "not ok torch_print_$s: loom inspect failed: $(head -3 "$tmp/$s.err" | tr '\n' ' ')"
    echo "not ok torch_state_$s: loom inspect failed"
    continue
  fi
  if ! "$PY" tests/torch/models.py "$s" >"$tmp/$s.torch" 2>"$tmp/$s.perr"; then
    echo "not ok torch_print_$s: tests/torch/models.py failed: $(tail -3 "$tmp/$s.perr" | tr '\n' ' ')"
    echo "not ok torch_state_$s: tests/torch/models.py failed"
    continue
  fi
  # (a) everything before the first empty line
  sed '/^$/,$d' "$tmp/$s.loom" >"$tmp/$s.loom.print"
  sed '/^$/,$d' "$tmp/$s.torch" >"$tmp/$s.torch.print"
  if cmp -s "$tmp/$s.loom.print" "$tmp/$s.torch.print"; then
    echo "ok torch_print_$s"
  else
    echo "not ok torch_print_$s: loom inspect's model print differs from print(model) (--- torch, +++ loom)"
    diff -u "$tmp/$s.torch.print" "$tmp/$s.loom.print" | sed 's/^/# /'
  fi
  # (b) parameters and buffers, names, shapes and order
  state_lines "$tmp/$s.loom" >"$tmp/$s.loom.state"
  sed '1,/^$/d' "$tmp/$s.torch" >"$tmp/$s.torch.state"
  if cmp -s "$tmp/$s.loom.state" "$tmp/$s.torch.state"; then
    echo "ok torch_state_$s"
  else
    echo "not ok torch_state_$s: parameters/buffers differ from named_parameters()/named_buffers() (--- torch, +++ loom)"
    diff -u "$tmp/$s.torch.state" "$tmp/$s.loom.state" | sed 's/^/# /'
  fi
done
