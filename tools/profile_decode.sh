#!/usr/bin/env bash
# profile_decode.sh - where a decode step's GPU time goes, by kernel, for a
# machine with a GPU and Nsight Compute: runs `gkrun bench` (greedy) on MODEL
# for a 16-token prompt and N new tokens under ncu (clocks left alone), then
# sums each kernel's duration over the measured run's N - 1 decode steps and
# prints one line per kernel: launches per step, µs per step, share. ncu serialises kernels and flushes caches between them,
# so the sum runs above the real step time; the shares are the lead.
#   tools/profile_decode.sh GKRUN MODEL_DIR [NEW_TOKENS]   (default 4)
# Not here: timing a whole step (gkrun bench does that), llama.cpp (peers.sh).
set -euo pipefail
GKRUN=${1:?usage: profile_decode.sh GKRUN MODEL_DIR [NEW_TOKENS]}
MODEL=${2:?usage: profile_decode.sh GKRUN MODEL_DIR [NEW_TOKENS]}
N=${3:-4}
NCU=${NCU:-ncu}
CSV=$(mktemp /tmp/profile_decode.XXXXXX.csv)
trap 'rm -f "$CSV"' EXIT
"$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    "$GKRUN" bench -m "$MODEL" --backend cuda -p 16 -n "$N" --reps 1 >"$CSV" 2>/dev/null || {
    echo "profile_decode: ncu failed (is Nsight Compute installed, and a GPU usable?)" >&2
    exit 1
}
python3 - "$CSV" "$N" <<'PY'
import csv, re, sys, collections
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
        if r.get("Metric Name") == "gpu__time_duration.sum"]
steps = int(sys.argv[2])
# Each greedy decode step ends with argmax_final_kernel (the sampler), and
# so does the backend's pick of the first token after the prefill; the last
# N - 1 such segments are the measured run's decode steps (one graph each).
ends = [i for i, r in enumerate(rows) if "argmax_final" in r["Kernel Name"]]
n_steps = steps - 1
if n_steps < 1 or len(ends) < n_steps + 1:
    sys.exit("profile_decode: found %d sampler kernels, want at least %d" % (len(ends), n_steps + 1))
dec = rows[ends[-n_steps - 1] + 1:ends[-1] + 1]
tot = collections.OrderedDict()
cnt = collections.Counter()
for r in dec:
    name = re.sub(r"\(.*", "", r["Kernel Name"]).strip()
    v = float(r["Metric Value"].replace(",", "")) / 1e3  # ns -> us
    tot[name] = tot.get(name, 0.0) + v
    cnt[name] += 1
step = sum(tot.values()) / n_steps
print(f"decode step: {step:.1f} us summed over {sum(cnt.values()) / n_steps:.0f} launches (ncu, serialised)")
for name, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{cnt[name] / n_steps:8.1f} x {v / n_steps:9.1f} us  {100 * v / n_steps / step:5.1f}%  {name}")
PY
