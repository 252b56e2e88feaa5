#!/bin/sh
# Install the Debian packages GPUkit builds against, when they are missing.
# The CUDA toolkit (nvcc, cuBLAS) is optional: without it the cuda backend is
# skipped at configure time. clang, libFuzzer (libclang-rt-dev) and
# llvm-symbolizer (llvm) are for the fuzz build of tests/fuzz.
# Usage: tools/install-deps.sh
set -eu
pkgs="gcc meson ninja-build pkg-config xz-utils libinih-dev libcjson-dev libcriterion-dev libpcre2-dev libutf8proc-dev clang libclang-rt-dev llvm"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
