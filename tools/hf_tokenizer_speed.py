#!/usr/bin/env python3
"""hf_tokenizer_speed.py - single-thread encode speed of HF `tokenizers`, to set
beside tools/bench_tokenizer on the same bytes.

    ./build/tools/bench_tokenizer --write-text /tmp/bench.txt   # the built-in text
    python3 tools/hf_tokenizer_speed.py --text /tmp/bench.txt \\
        /work/shared/reference/tokenizers/{qwen3,llama3,gpt2,gpt35turbo,llama2}
    ./build/tools/bench_tokenizer --text /tmp/bench.txt \\
        /work/shared/reference/tokenizers/{qwen3,llama3,gpt2,gpt35turbo,llama2}

For each tokenizer it prints
    qwen3: HF encode X MB/s (N tokens) [one string]
    qwen3: HF encode X MB/s [line by line]
    qwen3: HF encode_batch X MB/s [lines, 1 thread]
    qwen3: ids fnv1a64 H
The "one string" run is what bench_tokenizer times (one encode call over the whole
text, add_special_tokens=False); equal token counts and equal fnv1a64 hashes (FNV-1a
over the ids as int32 little-endian) mean gk produced exactly HF's ids for all of it.
RAYON_NUM_THREADS=1 is set before tokenizers is imported, so nothing runs in
parallel. Not a test: timings only, plus the hash.
"""
import argparse
import array
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def fnv1a64(ids):
    """FNV-1a over the ids as int32 little-endian, as bench_tokenizer prints it."""
    data = array.array("i", ids)
    if sys.byteorder != "little":
        data.byteswap()
    h = 0xCBF29CE484222325
    for b in data.tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def best_of(reps, fn):
    best, out = None, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="text file (e.g. from bench_tokenizer --write-text)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("tokenizers", nargs="+", help="[NAME=]PATH, PATH a folder or tokenizer.json")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    with open(args.text, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    lines = text.splitlines(keepends=True)
    mb = len(raw) / 1e6
    print(f"text: {mb:.2f} MB ({args.text}), tokenizers {tokenizers.__version__}")
    for arg in args.tokenizers:
        name, _, path = arg.rpartition("=")
        path = path.rstrip("/")
        if not path.endswith(".json"):
            path = os.path.join(path, "tokenizer.json")
        name = name or os.path.basename(os.path.dirname(os.path.abspath(path)))
        tok = Tokenizer.from_file(path)
        dt, enc = best_of(args.reps, lambda: tok.encode(text, add_special_tokens=False))
        ids = enc.ids
        print(f"{name}: HF encode {mb / dt:.1f} MB/s ({len(ids)} tokens) [one string]", flush=True)
        dt, _ = best_of(args.reps, lambda: [tok.encode(l, add_special_tokens=False) for l in lines])
        print(f"{name}: HF encode {mb / dt:.1f} MB/s [line by line]", flush=True)
        dt, _ = best_of(args.reps, lambda: tok.encode_batch(lines, add_special_tokens=False))
        print(f"{name}: HF encode_batch {mb / dt:.1f} MB/s [lines, 1 thread]", flush=True)
        print(f"{name}: ids fnv1a64 {fnv1a64(ids):016x}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
