#!/bin/sh
# Install the Debian packages GPUkit builds against, when they are missing.
# The CUDA toolkit (nvcc, cuBLAS) is optional: without it the cuda backend is
# skipped at configure time. clang, libFuzzer (libclang-rt-dev) and
# llvm-symbolizer (llvm) are for the fuzz build of tests/fuzz. gkrun serve
# needs libmicrohttpd; its tests run curl and, through node, the official
# openai npm package pinned in tests/serve (npm ci, when node_modules is missing).
# Usage: tools/install-deps.sh
set -eu
pkgs="gcc meson ninja-build pkg-config xz-utils libinih-dev libcjson-dev libcriterion-dev libpcre2-dev libutf8proc-dev clang libclang-rt-dev llvm libmicrohttpd-dev curl"
# node and npm may come from elsewhere (NodeSource's nodejs holds npm and
# conflicts with Debian's): the packages only where the commands are missing
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -q
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
serve_tests="$(dirname "$0")/../tests/serve"
if [ ! -d "$serve_tests/node_modules" ]; then
    echo "npm ci in tests/serve (the openai client for tests/test_serve.c)"
    (cd "$serve_tests" && npm ci --no-audit --no-fund)
fi
