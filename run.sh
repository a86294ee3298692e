#!/usr/bin/env bash
# The two commands of README.md:
#   ./run.sh main   install what is missing, build loom, run the main job
#   ./run.sh test   install what is missing, build loom, run every test
# Works on a fresh Debian 12 as root (uses sudo otherwise).
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential ninja-build pkg-config liblua5.4-dev libcmark-gfm-dev libcmark-gfm-extensions-dev libcriterion-dev
  libopenblas-openmp-dev libdnnl-dev libopenmpi-dev openmpi-bin zlib1g-dev libpng-dev libjpeg62-turbo-dev libsqlite3-dev python3 python3-torch
  python3-pil clang strace ccache
  dataset-fashion-mnist bible-kjv-text bible-kjv chromium git gdb)

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "run.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

case "${1:-}" in
  main)
    install_missing
    ninja >/dev/null
    build/loom inspect specs/fashion_cnn.lua
    build/loom train specs/fashion_cnn.lua -o out/fashion_cnn -- --out out/fashion_cnn/run
    ;;
  test)
    install_missing
    # python3-torch is installed above: a test that finds no torch fails instead of skipping
    export LOOM_REQUIRE_TORCH=1
    ninja
    ninja test
    ;;
  *)
    echo "usage: ./run.sh main | ./run.sh test" >&2
    exit 2
    ;;
esac
