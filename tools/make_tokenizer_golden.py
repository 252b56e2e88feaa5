#!/usr/bin/env python3
"""make_tokenizer_golden.py - HF `tokenizers` golden ids for extra texts.

For each tokenizer folder (holding tokenizer.json, maybe tokenizer_config.json) it
writes OUT/NAME/ with copies of those files and a golden.json whose "cases" hold,
for every text of tools/tokenizer_extra_texts.json, exactly what the reference
pack's golden.json holds:
    ids              = encode(text, add_special_tokens=False).ids
    ids_with_special = encode(text).ids
    decoded          = decode(ids, skip_special_tokens=False)
    decoded_skip_special = decode(ids, skip_special_tokens=True)
Then `gkrun verify OUT/NAME` checks gk_tokenizer against them. Run it where HF
`tokenizers` is installed (the GPU machine), e.g.

    python3 tools/make_tokenizer_golden.py --out /tmp/tokgold \\
        /work/shared/reference/tokenizers/{gpt2,llama2,llama3,qwen3,gpt35turbo}
    for d in /tmp/tokgold/*; do ./build/tools/gkrun verify "$d"; done

Not a test by itself, and its output is not committed: it is data for gkrun verify.
"""
import argparse
import json
import os
import shutil
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", default=os.path.join(here, "tokenizer_extra_texts.json"))
    ap.add_argument("--out", required=True, help="output folder (one sub-folder per tokenizer)")
    ap.add_argument("folders", nargs="+", help="tokenizer folders (or tokenizer.json files)")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)["texts"]
    for src in args.folders:
        src = src.rstrip("/")
        path = src if src.endswith(".json") else os.path.join(src, "tokenizer.json")
        folder = os.path.dirname(os.path.abspath(path))
        name = os.path.basename(folder)
        tok = Tokenizer.from_file(path)
        cases = []
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            cases.append({
                "text": text,
                "ids": ids,
                "ids_with_special": tok.encode(text).ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            })
        dst = os.path.join(args.out, name)
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(path, os.path.join(dst, "tokenizer.json"))
        cfg = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(cfg):
            shutil.copyfile(cfg, os.path.join(dst, "tokenizer_config.json"))
        with open(os.path.join(dst, "golden.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizers_version": tokenizers.__version__, "cases": cases}, f, ensure_ascii=False)
        print(f"{name}: {len(cases)} cases -> {dst}/golden.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
