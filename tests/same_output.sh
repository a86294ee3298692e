#!/usr/bin/env bash
# tests/same_output.sh [REV]: does the working tree's loom generate the same files as
# REV's (default: the merge-base with main)?  For a refactoring of the generator that
# must not change what it generates.
#
# For every spec in specs/, tests/cuda_specs/ and tests/fuse/ it runs, with REV's loom
# (built in a temporary git worktree under /tmp) and with this tree's (build/loom, or
# $LOOM):
#  - loom build --no-compile --accelerator=cpu --emit torch at each precision the C
#    backend runs;
#  - loom build --no-compile --accelerator=cuda at the CUDA backend's five precisions,
#    with --devices=1, and once with --no-fuse and the spec's devices;
#  - loom explain --accelerator=auto at each C precision (REPORT.md, REPORT.html);
# and compares the output directories file by file (diff -r), and what loom printed
# (its exit status, stdout and stderr, with the directory's name made neutral).  A
# combination that fails the same way with both is reported as skipped; a difference
# prints its first lines.  Exits 1 on any difference.
set -u
cd "$(dirname "$0")/.."
root=$PWD
rev=${1:-$(git merge-base HEAD main)}
if [ -z "${LOOM:-}" ]; then nice -n 5 ninja build/loom >/dev/null || { echo "same_output: build/loom does not build" >&2; exit 2; }; fi
NEW=${LOOM:-$root/build/loom}
[ -x "$NEW" ] || { echo "same_output: no $NEW (run ninja first)" >&2; exit 2; }
tmp=$(mktemp -d /tmp/same_output.XXXXXX)
cleanup() {
  git -C "$root" worktree remove --force "$tmp/ref_tree" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

# REV's loom, built in its own worktree (its build/ is its own)
git -C "$root" worktree add --detach "$tmp/ref_tree" "$rev" >/dev/null 2>&1 ||
  { echo "same_output: cannot check out $rev" >&2; exit 2; }
(cd "$tmp/ref_tree" && nice -n 5 ninja build/loom >"$tmp/ref_build.log" 2>&1) ||
  { cat "$tmp/ref_build.log" >&2; echo "same_output: $rev's loom does not build" >&2; exit 2; }
REF=$tmp/ref_tree/build/loom

CPU_PRECISIONS=(32-true 64-true bf16-mixed 16-mixed bf16-true 16-true)
CUDA_PRECISIONS=(32-true bf16-mixed 16-mixed bf16-true 16-true)
SPECS=(specs/*.lua tests/cuda_specs/*.lua tests/fuse/*.lua)

same=0 skipped=0 differ=0
# run NAME ARGS...: `loom ARGS... -o DIR` with both looms, then compare
run() {
  local name=$1; shift
  local side loom out
  for side in ref new; do
    if [ $side = ref ]; then loom=$REF; else loom=$NEW; fi
    out=$tmp/$side/$name
    mkdir -p "$out"
    # the spec is given by its path in this tree for both, so diagnostics name the same file
    (cd "$root" && LOOM_GEN_DIR= "$loom" "$@" -o "$out/files" >"$out/stdout" 2>"$out/stderr"; echo "exit $?" >"$out/status")
    sed -i "s|$tmp/$side/|OUT/|g" "$out/stdout" "$out/stderr"
  done
  local a=$tmp/ref/$name b=$tmp/new/$name
  if ! grep -qx "exit 0" "$a/status" && diff -r "$a" "$b" >/dev/null 2>&1; then
    echo "ok $name # SKIP fails the same way with both: $(head -c 160 "$a/stderr" | head -1)"
    skipped=$((skipped + 1))
  elif diff -r "$a" "$b" >"$tmp/diff" 2>&1; then
    echo "ok $name"
    same=$((same + 1))
  else
    echo "not ok $name: generated output differs"
    head -n 40 "$tmp/diff" | sed 's/^/#   /'
    differ=$((differ + 1))
  fi
}

for spec in "${SPECS[@]}"; do
  base=$(basename "$spec" .lua)
  for p in "${CPU_PRECISIONS[@]}"; do
    run "build_cpu_${base}_$p" build "$spec" --no-compile --accelerator=cpu --emit torch --precision="$p"
    run "explain_${base}_$p" explain "$spec" --accelerator=auto --precision="$p"
  done
  for p in "${CUDA_PRECISIONS[@]}"; do
    # (--devices=1: paw asks for two, which the CUDA backend refuses; the --no-fuse run below keeps that case)
    run "build_cuda_${base}_$p" build "$spec" --no-compile --accelerator=cuda --devices=1 --precision="$p"
  done
  run "build_cuda_${base}_no_fuse" build "$spec" --no-compile --accelerator=cuda --no-fuse
done

echo "# against $(git -C "$root" log --oneline -1 "$rev" | cut -c1-60): $same same, $skipped failing the same way with both, $differ different"
[ $differ -eq 0 ]
