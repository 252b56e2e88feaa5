#!/bin/sh
# An architecture plugin built out of tree against the INSTALLED SDK through
# pkg-config alone (the gpt2 plugin's one source file, nothing of the build
# tree), loaded through GK_PLUGIN_PATH by the installed gkrun (its RUNPATH,
# no LD_LIBRARY_PATH), and checked with `gkrun verify` on the gpt2-tiny
# reference model on cpu_ref.
# Arguments: BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d /tmp/gk-sdk-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; o={x["name"]: x["value"] for x in json.load(sys.stdin)}; print(o["prefix"]); print(o["libdir"])')
pfx=$(echo "$prefix" | sed -n 1p)
libdir=$(echo "$prefix" | sed -n 2p)
case $libdir in /*) ;; *) libdir=$pfx/$libdir ;; esac
export PKG_CONFIG_PATH="$tmp/root$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs gk)
mkdir "$tmp/plugins"
cp "$src/arch/gpt2/gpt2.c" "$tmp/myarch.c"
cc -std=c11 -shared -fPIC -fvisibility=hidden -o "$tmp/plugins/libgk-arch-gpt2.so" "$tmp/myarch.c" $flags
# only the plugin built here can serve gpt2: the staged built-in one goes
rm -f "$tmp/root$libdir/gk/plugins/libgk-arch-gpt2.so"
# the installed gkrun carries a RUNPATH to the real libdir; staged under a
# destdir, libgk is found through LD_LIBRARY_PATH instead
gkrun="$tmp/root$pfx/bin/gkrun"
readelf -d "$gkrun" | grep -q "RUNPATH.*\[$libdir\]" || { echo "gkrun has no RUNPATH to $libdir"; exit 1; }
out=$(LD_LIBRARY_PATH="$tmp/root$libdir" GK_PLUGIN_PATH="$tmp/plugins" "$gkrun" verify "$src/tests/data/models/gpt2-tiny" --backend cpu_ref 2>&1) || {
    echo "$out"
    exit 1
}
echo "$out" | tail -1
echo "$out" | grep -q "summary: .* 0 failed: PASS"
