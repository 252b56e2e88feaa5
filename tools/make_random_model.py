"""Usage: python3 tools/make_random_model.py CONFIG_JSON OUT_DIR [float16|bfloat16|float32]

Write a checkpoint of the architecture and shapes in CONFIG_JSON with random
weights (norm weights near 1, linear weights scaled by 1/sqrt(fan_in)), saved by
transformers' save_pretrained in its usual sharded layout. For speed figures
and backend comparisons at real sizes, where only the shapes matter. Needs torch
and transformers; uses the GPU when there is one.
"""
import json
import os
import shutil
import sys

import torch
import transformers as tf


def main(cfg_path, out, dtype_name="bfloat16"):
    dtype = getattr(torch, dtype_name)
    cfg = tf.AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(cfg_path)))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.05 * torch.randn_like(p))
            elif "embed" in name or "wte" in name or "wpe" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    model.save_pretrained(out, max_shard_size="4GB")
    gen = os.path.join(os.path.dirname(os.path.abspath(cfg_path)), "generation_config.json")
    if os.path.exists(gen):
        shutil.copy(gen, out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n / 1e9:.2f} B parameters in {dtype_name}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
