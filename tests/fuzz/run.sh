#!/bin/sh
# run.sh - one bounded libFuzzer run, as each test of the 'fuzz' meson suite
# makes it:  run.sh HARNESS SEED_CORPUS FINDINGS_DIR SECONDS [libFuzzer flags]
# New inputs go to a fresh scratch corpus (removed afterwards, with the
# harness's scratch files); the committed corpus is only read. A crash,
# sanitizer report, leak, timeout or OOM leaves its input in FINDINGS_DIR and
# the exit status non-zero. GKFZ_SECONDS overrides SECONDS.
set -eu
harness=$1 seeds=$2 findings=$3 secs=${GKFZ_SECONDS:-$4}
shift 4
name=$(basename "$harness")
work=$(mktemp -d "${TMPDIR:-/tmp}/gkfz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$findings"
rc=0
GKFZ_TMPDIR=$work "$harness" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
    -error_exitcode=1 -print_final_stats=1 -artifact_prefix="$findings/$name-" "$@" \
    "$work/corpus" "$seeds" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "$name: exit status $rc; a finding's input is kept in $findings/ (reproduce: $harness FILE)" >&2
    [ "$rc" -ne 77 ] || rc=1 # 77 would read as "skipped" to meson
fi
exit "$rc"
