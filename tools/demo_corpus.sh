#!/bin/sh
# Extract the King James Bible (public domain) from Debian's bible-kjv
# packages into plain text, one verse per line, for tools/train_demo.py.
# Usage: tools/demo_corpus.sh OUT.txt   (needs apt-get download; no root)
set -eu
out=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download bible-kjv bible-kjv-text >/dev/null)
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
"$tmp/root/usr/bin/bible" -p "$tmp/root/usr/lib" "Gen1:1-Rev22:21" |
    awk '
        /^[A-Z0-9][A-Za-z ]* [0-9]+$/ { next }              # chapter headings
        /^  *[0-9]+ / { if (v != "") print v; sub(/^ *[0-9]+ /, ""); v = $0; next }
        /^$/ { next }
        { v = v " " $0 }
        END { if (v != "") print v }' > "$out"
echo "wrote $(wc -l < "$out") verses, $(wc -c < "$out") bytes to $out"
