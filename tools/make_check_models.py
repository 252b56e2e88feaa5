"""Usage: python3 tools/make_check_models.py OUT_DIR

Write tiny random-weight checkpoints in layouts the bundled reference pack does
not cover, each with golden data from HuggingFace transformers in the layout
`gkrun verify` reads (see docs/verify.md). Needs torch, transformers and
safetensors (the GPU machine has them); the output is for checking, not for
the repository.

  gpt2-noprefix        GPT-2 with names as the hub's original gpt2 (no "transformer.")
  gpt2-f16             GPT-2 stored in float16
  qwen3-bf16-sharded   Qwen3, 4:1 GQA, untied head, bfloat16, several shards
  qwen2-bias           Qwen2 (q/k/v biases, no o bias)
  mistral              Mistral
  llama3-rope-tied     Llama 3 RoPE scaling, tied head, config in the transformers-5 layout
"""
import json
import os
import sys

import torch
import transformers as tf
from safetensors.torch import load_file, save_file

VOCAB = 384


def randomize(model, seed):
    """Every parameter random, so a forgotten bias or norm weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif any(k in name for k in ("wte", "wpe", "embed_tokens")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                conv1d = any(k in name for k in ("c_attn", "c_proj", "c_fc"))
                fan_in = p.shape[0] if conv1d else p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def greedy_full(model, ids, n):
    """Greedy tokens by repeated full forward passes (no cache involved)."""
    seq = ids[None]
    for _ in range(n):
        nxt = model(seq).logits[0, -1].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0]


def write_golden(d, cls, ctx, seed):
    m = cls.from_pretrained(d, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    t = {}
    with torch.no_grad():
        for i, n in enumerate((1, 7, 33, ctx - 20)):
            p = torch.randint(0, VOCAB, (n,), generator=g)
            out = m(p[None], output_hidden_states=True)
            t[f"p{i}.ids"] = p.to(torch.int64).contiguous()
            t[f"p{i}.logits"] = out.logits[0].float().contiguous()
            if i == 1:
                for layer, h in enumerate(out.hidden_states):
                    t[f"p1.hidden.{layer}"] = h[0].float().contiguous()
            if i in (1, 3):
                seq = greedy_full(m, p, 20)
                key = "gen" if i == 1 else "gen3"
                t[f"{key}.ids"] = seq.to(torch.int64).contiguous()
                t[f"{key}.logits"] = m(seq[None]).logits[0].float().contiguous()
    save_file(t, os.path.join(d, "golden.safetensors"))


def classic_config(d):
    """Rewrite config.json in the classic layout most published checkpoints use."""
    path = os.path.join(d, "config.json")
    c = json.load(open(path))
    rp = c.pop("rope_parameters", None)
    if rp:
        c["rope_theta"] = rp.get("rope_theta", 10000.0)
        if rp.get("rope_type", "default") != "default":
            c["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    json.dump(c, open(path, "w"), indent=2)


def build(root, name, cls, cfg, dtype, seed, ctx, **kw):
    try:
        build_one(root, name, cls, cfg, dtype, seed, ctx, **kw)
    except Exception as e:  # one broken variant should not hide the others
        print("FAILED to build", name, ":", repr(e), flush=True)


def build_one(root, name, cls, cfg, dtype, seed, ctx, shard=None, strip=None, v5_layout=False):
    d = os.path.join(root, name)
    cfg = cfg() if callable(cfg) else cfg
    torch.manual_seed(seed)
    m = cls(cfg)
    randomize(m, seed)
    m = m.to(dtype)
    m.save_pretrained(d, max_shard_size=shard) if shard else m.save_pretrained(d)
    write_golden(d, cls, ctx, seed + 1)  # golden before renaming: transformers reads its own layout
    if strip:
        path = os.path.join(d, "model.safetensors")
        sd = load_file(path)
        sd = {k[len(strip):] if k.startswith(strip) else k: v for k, v in sd.items()}
        save_file(sd, path, metadata={"format": "pt"})
    if not v5_layout:
        classic_config(d)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    print("built", name, sorted(os.listdir(d)), flush=True)


def main(root):
    os.makedirs(root, exist_ok=True)
    gpt2 = dict(vocab_size=VOCAB, n_positions=96, n_embd=64, n_layer=2, n_head=4)
    build(root, "gpt2-noprefix", tf.GPT2LMHeadModel, tf.GPT2Config(**gpt2), torch.float32, 101, 96,
          strip="transformer.")
    build(root, "gpt2-f16", tf.GPT2LMHeadModel, tf.GPT2Config(**gpt2), torch.float16, 111, 96)
    build(root, "qwen3-bf16-sharded", tf.Qwen3ForCausalLM,
          tf.Qwen3Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=192, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=160, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=False),
          torch.bfloat16, 121, 160, shard="100KB")
    build(root, "qwen2-bias", tf.Qwen2ForCausalLM,
          tf.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=160,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False),
          torch.float32, 131, 160)
    build(root, "mistral", tf.MistralForCausalLM,
          tf.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                           max_position_embeddings=160, rms_norm_eps=1e-5, rope_theta=10000.0,
                           sliding_window=None, tie_word_embeddings=False),
          torch.float32, 141, 160)
    build(root, "llama3-rope-tied", tf.LlamaForCausalLM, llama3_config, torch.float32, 151, 160, v5_layout=True)


def llama3_config():
    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=160,
                         rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 32})


if __name__ == "__main__":
    main(sys.argv[1])
