#!/usr/bin/env bash
# Golden files: the model.c, model.h and train.c loom generates for the CPU, and the
# model.cu, model.h and train.c for CUDA, of each case of tests/golden/cases, must equal
# the files under tests/golden/ byte for byte.  A change to what loom generates shows
# here as its first differing lines (diff -u, golden --- / +++ generated); when the
# change is meant, `ninja regen-golden` rewrites the files and the diff is reviewed.
set -u
cd "$(dirname "$0")/.."
export LOOM=${LOOM:-build/loom}
. tests/tap.sh   # plan, ok, fail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tests/golden/golden.sh "$tmp/new" >"$tmp/gen.log" 2>&1
# every file of either tree: one result each
files=$( (cd tests/golden && find . -mindepth 3 -type f; cd "$tmp/new" 2>/dev/null && find . -mindepth 3 -type f) |
  sed 's|^\./||' | sort -u)
plan "$(echo "$files" | grep -c .)"
sed 's/^/# /' "$tmp/gen.log"
for f in $files; do
  name="golden_$(echo "$f" | tr '/' '_')"
  if [ ! -f "$tmp/new/$f" ]; then fail "$name" "not generated (not a case of tests/golden/cases, or it did not generate)"
  elif [ ! -f "tests/golden/$f" ]; then fail "$name" "no golden file: ninja regen-golden writes it"
  elif cmp -s "tests/golden/$f" "$tmp/new/$f"; then ok "$name"
  else
    fail "$name" "differs from tests/golden/$f (ninja regen-golden rewrites it once the change is meant)"
    diff -u --label "tests/golden/$f" --label "generated $f" "tests/golden/$f" "$tmp/new/$f" | head -20 | sed 's/^/# /'
  fi
done
