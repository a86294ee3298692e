#!/usr/bin/env bash
# tests/fuzz/lua_lib.sh OUT CC CFLAGS...: the Lua 5.4 library fuzz_spec links, as OUT (an
# archive).  Debian's liblua5.4 is not instrumented, so libFuzzer is blind to the lexer,
# parser and VM that a spec's text drives; this builds the same library from Debian's
# own source package (the version of the installed liblua5.4-dev, with Debian's
# patches, fetched by `apt-get source` through a private apt configuration: nothing in
# /etc/apt changes) with CC CFLAGS (-fsanitize=fuzzer-no-link, ASan).  The source stays
# in build/fuzz/lua-src/ (fetched once).  Where it cannot be fetched (no deb-src
# reachable) OUT is Debian's uninstrumented static library and OUT.note says why:
# tests/fuzz/run.sh prints it with the spec target's result.
set -u
out=$1 cc=$2
shift 2
here=$(cd "$(dirname "$0")/../.." && pwd)
src=$here/build/fuzz/lua-src
mkdir -p "$(dirname "$out")" "$src"
rm -f "$out" "$out.note"

fallback() {   # WHY
  echo "tests/fuzz/lua_lib.sh: $1; fuzz_spec links Debian's uninstrumented liblua5.4.a" >&2
  local a
  a=$(ls /usr/lib/*/liblua5.4.a 2>/dev/null | head -1)
  [ -n "$a" ] || { echo "tests/fuzz/lua_lib.sh: no liblua5.4.a (liblua5.4-dev) either" >&2; exit 1; }
  cp "$a" "$out"
  echo "Lua uninstrumented: $1" >"$out.note"
  exit 0
}

version=$(dpkg-query -W -f='${source:Version}' liblua5.4-dev 2>/dev/null) || fallback "liblua5.4-dev is not installed"
dir=$src/lua5.4-$version
if [ ! -f "$dir/src/lvm.c" ]; then
  # deb-src for the suites this machine's apt uses (its deb822 or one-line sources)
  apt=$src/apt
  rm -rf "$apt" && mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial"
  suites=$(grep -hE '^Suites:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | cut -d: -f2-)
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
  [ -n "$suites" ] || suites=$(. /etc/os-release && echo "$VERSION_CODENAME")
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$suites" >"$apt/sources/src.sources"
  opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt/sources" -o Dir::State::Lists="$apt/lists"
        -o Dir::Cache="$apt/cache" -o APT::Sandbox::User=root -qq)
  timeout 120 apt-get "${opts[@]}" update >"$src/fetch.log" 2>&1 || fallback "apt-get update of deb-src ($uri) failed: $(tail -1 "$src/fetch.log")"
  (cd "$src" && timeout 120 apt-get "${opts[@]}" source --download-only "lua5.4=$version" >>"$src/fetch.log" 2>&1) ||
    fallback "apt-get source lua5.4=$version failed: $(tail -1 "$src/fetch.log")"
  rm -rf "$dir"
  (cd "$src" && dpkg-source -x "lua5.4_${version#*:}.dsc" "$dir" >>"$src/fetch.log" 2>&1) || fallback "dpkg-source -x failed: $(tail -1 "$src/fetch.log")"
  rm -rf "$apt"
fi

# Debian's build: `make linux-readline` (LUA_COMPAT_5_3, LUA_USE_LINUX), its luaconf.h
# reading DEB_HOST_MULTIARCH from a generated header; the library without lua.c, luac.c
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT
printf '#define DEB_HOST_MULTIARCH "%s"\n' "$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)" >"$obj/lua5.4-deb-multiarch.h"
for c in "$dir"/src/*.c; do
  case $(basename "$c") in lua.c|luac.c) continue ;; esac
  "$cc" "$@" -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -I"$obj" -c "$c" -o "$obj/$(basename "${c%.c}").o" || exit 1
done
ar rcs "$out" "$obj"/*.o
