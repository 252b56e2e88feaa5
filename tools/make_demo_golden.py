"""Usage: python3 tools/make_demo_golden.py MODEL_DIR OUT.json

Greedy continuations of a few prompts by the demo model, computed by
transformers in float32 on the CPU from the stored float16 weights, with the
prompt encoded by HF tokenizers: the oracle for tests/test_gkrun.c's check of
`gkrun -m models/kjv-demo --temp 0`.
"""
import json
import sys

import torch
import transformers as tf
from tokenizers import Tokenizer

PROMPTS = ["In the beginning", "And Jesus said unto them,", "The LORD is my shepherd"]


def main(model_dir, out):
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    m = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cases = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok.encode(p).ids
            seq = torch.tensor([ids])
            for _ in range(40):
                nxt = m(seq).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
            new = seq[0, len(ids):].tolist()
            cases.append({"prompt": p, "prompt_ids": ids, "ids": new, "text": tok.decode(new)})
            print(repr(p), "->", repr(cases[-1]["text"]), flush=True)
    json.dump({"note": "transformers " + tf.__version__ + ", float32 on CPU, 40 greedy tokens by full forwards",
               "cases": cases}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
