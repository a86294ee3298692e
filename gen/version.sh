#!/bin/sh
# Writes $1, a C header naming loom's version (the VERSION file) and the commit it
# was built from (with "-dirty" for uncommitted changes); rewritten only when that
# changes, so ninja (restat) rebuilds nothing after a commit that does not change it.
out=$1
dir=$(dirname "$0")/..
version=$(cat "$dir/VERSION" 2>/dev/null || echo unknown)
commit=$(git -C "$dir" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
printf '#define LOOM_VERSION "%s"\n#define LOOM_COMMIT "%s"\n' "$version" "$commit" > "$out.tmp"
if cmp -s "$out.tmp" "$out"; then rm -f "$out.tmp"; else mv "$out.tmp" "$out"; fi
