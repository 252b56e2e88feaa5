"""Usage: python3 tools/make_arch_models.py OUT_DIR

Write tiny random-weight checkpoints of architectures beyond the llama family,
each with golden data from HuggingFace transformers in the layout `gkrun verify`
reads (see docs/verify.md). Built on tools/make_check_models.py (same
randomization, prompts and golden tensors); needs torch, transformers (written
against 5.17) and safetensors. Vocabulary 384, context 96 (the long prompt p3 is
76 tokens), float32 unless noted:

  gemma-tiny          Gemma, MQA 4:1, head_dim 32 (not hidden/heads), tied head
  gemma2-tiny         Gemma 2, sliding/full/sliding, window 16, attention softcap 5,
                      final softcap 3, query_pre_attn_scalar 24, GQA 4:2, bfloat16
  gemma3-tiny         Gemma 3 text, sliding/full/sliding, window 16, per-layer-type
                      rope (full: linear x8 theta 1e6; sliding: default 1e4),
                      query_pre_attn_scalar 32, config in the transformers-5 layout
  phi3-tiny           Phi-3, fused qkv (4:2) and gate_up, untied
  phi3-mini-shaped    Phi-3, hidden 128, 32 heads / 32 kv heads (head_dim 4)
  phi3-partial        Phi-3, partial_rotary_factor 0.5, head_dim 16
  stablelm-tiny       StableLM, LayerNorm, partial rotary 0.25, qkv bias, serial residual
  stablelm-parallel   StableLM, parallel residual, no qkv bias, GQA 4:2
  olmo2-tiny          OLMo 2 (q/k norms over all heads, post-norms), GQA 4:2
  mixtral-tiny        Mixtral, 4 experts top-2, GQA 4:2 (hidden 32 to stay small)
  qwen3moe-tiny       Qwen3-MoE, 8 experts top-2, normalized top-k, layer 1 dense
  qwen3moe-nonorm     Qwen3-MoE, top-k weights not renormalized, no dense layer
  mistral-window      Mistral, sliding window 16, GQA 4:1

Goldens are computed with attn_implementation="eager": transformers' sdpa path
drops Gemma 2's attention softcapping. The greedy runs use full forward passes
(no cache), so sliding windows are applied by transformers' own masks.
"""
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_check_models as mcm  # noqa: E402

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

VOCAB = mcm.VOCAB
CTX = 96


def randomize(model, seed):
    """make_check_models.randomize, then fused expert tensors ([experts, out, in]) scaled by their fan-in."""
    mcm.randomize(model, seed)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 3:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


class Eager:
    """Stands in for a model class in make_check_models.write_golden: loads with eager attention."""

    def __init__(self, cls):
        self.cls = cls

    def from_pretrained(self, d, **kw):
        return self.cls.from_pretrained(d, attn_implementation="eager", **kw)


def check_names(model, name):
    names = [n for n, _ in model.named_parameters()]
    if not any("embed_tokens" in n for n in names):
        raise RuntimeError(f"{name}: no embed_tokens parameter among {names[:4]}...")
    n3 = [n for n, p in model.named_parameters() if p.dim() == 3]
    if n3:
        print(f"  {name}: 3-D (fused expert) parameters: {len(n3)}, e.g. {n3[0]}", flush=True)


def min_margin(d):
    """Smallest golden top-1 minus top-2 logit over the generated steps of gen and gen3."""
    t = load_file(os.path.join(d, "golden.safetensors"))
    out = []
    for key in ("gen", "gen3"):
        ids, logits = t[f"{key}.ids"], t[f"{key}.logits"].float()
        n = ids.shape[0] - 20  # the prompt; rows n-1 .. end-2 chose the 20 generated tokens
        top = logits[n - 1:ids.shape[0] - 1].topk(2, dim=-1).values
        out.append(float((top[:, 0] - top[:, 1]).min()))
    return out


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def build_one(root, name, cls, cfg, dtype, seed, v5_layout=False):
    d = os.path.join(root, name)
    cfg = cfg() if callable(cfg) else cfg
    torch.manual_seed(seed)
    m = cls(cfg)
    check_names(m, name)
    randomize(m, seed)
    m = m.to(dtype)
    m.save_pretrained(d)
    mcm.write_golden(d, Eager(cls), CTX, seed + 1)
    if not v5_layout:
        path = os.path.join(d, "config.json")
        rp = json.load(open(path)).get("rope_parameters") or {}
        mcm.classic_config(d)
        prf = rp.get("partial_rotary_factor") if isinstance(rp, dict) else None
        if prf is not None and prf != 1.0:  # classic configs keep it at the top level
            c = json.load(open(path))
            c.setdefault("partial_rotary_factor", prf)
            json.dump(c, open(path, "w"), indent=2)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    print("built", name, sorted(os.listdir(d)), flush=True)


def rope(theta, **extra):
    return dict(rope_type="default", rope_theta=float(theta), **extra)


SW, FA = "sliding_attention", "full_attention"


def models():
    common = dict(vocab_size=VOCAB, max_position_embeddings=CTX)
    return [
        ("gemma-tiny", tf.GemmaForCausalLM, lambda: tf.GemmaConfig(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=32,
            hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters=rope(10000.0)),
         torch.float32, 201, {}),
        ("gemma2-tiny", tf.Gemma2ForCausalLM, lambda: tf.Gemma2Config(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters=rope(10000.0), query_pre_attn_scalar=24, sliding_window=16,
            layer_types=[SW, FA, SW], attn_logit_softcapping=5.0, final_logit_softcapping=15.0),
         torch.bfloat16, 211, {}),
        ("gemma3-tiny", tf.Gemma3ForCausalLM, lambda: tf.Gemma3TextConfig(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
            query_pre_attn_scalar=32, sliding_window=16, layer_types=[SW, FA, SW],
            rope_parameters={FA: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                             SW: {"rope_type": "default", "rope_theta": 10000.0}}),
         torch.float32, 221, {"v5_layout": True}),
        ("phi3-tiny", tf.Phi3ForCausalLM, lambda: tf.Phi3Config(
            **common, original_max_position_embeddings=CTX, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0),
            bos_token_id=1, eos_token_id=2, pad_token_id=2),
         torch.float32, 231, {}),
        ("phi3-mini-shaped", tf.Phi3ForCausalLM, lambda: tf.Phi3Config(
            **common, original_max_position_embeddings=CTX, hidden_size=128, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0),
            bos_token_id=1, eos_token_id=2, pad_token_id=2),
         torch.float32, 241, {}),
        ("phi3-partial", tf.Phi3ForCausalLM, lambda: tf.Phi3Config(
            **common, original_max_position_embeddings=CTX, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0, partial_rotary_factor=0.5),
            partial_rotary_factor=0.5, bos_token_id=1, eos_token_id=2, pad_token_id=2),
         torch.float32, 251, {}),
        ("stablelm-tiny", tf.StableLmForCausalLM, lambda: tf.StableLmConfig(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, layer_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0, partial_rotary_factor=0.25),
            partial_rotary_factor=0.25, use_qkv_bias=True, use_parallel_residual=False,
            qk_layernorm=False),
         torch.float32, 261, {}),
        ("stablelm-parallel", tf.StableLmForCausalLM, lambda: tf.StableLmConfig(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, layer_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0, partial_rotary_factor=0.25),
            partial_rotary_factor=0.25, use_qkv_bias=False, use_parallel_residual=True,
            qk_layernorm=False),
         torch.float32, 271, {}),
        ("olmo2-tiny", tf.Olmo2ForCausalLM, lambda: tf.Olmo2Config(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            tie_word_embeddings=False, rope_parameters=rope(500000.0),
            pad_token_id=1, eos_token_id=2),
         torch.float32, 281, {}),
        ("mixtral-tiny", tf.MixtralForCausalLM, lambda: tf.MixtralConfig(
            **common, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(1000000.0), sliding_window=None,
            num_local_experts=4, num_experts_per_tok=2, router_jitter_noise=0.0),
         torch.float32, 291, {}),
        ("qwen3moe-tiny", tf.Qwen3MoeForCausalLM, lambda: tf.Qwen3MoeConfig(
            **common, hidden_size=32, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            tie_word_embeddings=False, rope_parameters=rope(1000000.0),
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=48, norm_topk_prob=True,
            mlp_only_layers=[1], decoder_sparse_step=1),
         torch.float32, 301, {}),
        ("qwen3moe-nonorm", tf.Qwen3MoeForCausalLM, lambda: tf.Qwen3MoeConfig(
            **common, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            tie_word_embeddings=False, rope_parameters=rope(1000000.0),
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=48, norm_topk_prob=False,
            mlp_only_layers=[], decoder_sparse_step=1),
         torch.float32, 311, {}),
        ("mistral-window", tf.MistralForCausalLM, lambda: tf.MistralConfig(
            **common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope_parameters=rope(10000.0), sliding_window=16),
         torch.float32, 321, {}),
    ]


def main(root):
    os.makedirs(root, exist_ok=True)
    print("transformers", tf.__version__, "torch", torch.__version__, flush=True)
    summary = []
    try:
        specs = models()
    except Exception as e:  # a missing class name: say so rather than build nothing silently
        traceback.print_exc()
        print("FAILED to list the models:", repr(e), flush=True)
        sys.exit(1)
    # MoE stored in bfloat16 as published: a bf16 run then computes with the
    # stored weights (bf16 rounding of float32 weights is another model whose
    # expert routing flips where router logits nearly tie)
    specs += [(n + "-bf16", c, f, torch.bfloat16, sd + 5, kw) for n, c, f, _, sd, kw in specs
              if n in ("mixtral-tiny", "qwen3moe-tiny")]
    only = [x for x in os.environ.get("ONLY", "").split(",") if x]
    specs = [sp for sp in specs if not only or sp[0] in only]
    for name, cls, cfg, dtype, seed, kw in specs:
        try:
            build_one(root, name, cls, cfg, dtype, seed, **kw)
            margins = min_margin(os.path.join(root, name))
            size = dir_bytes(os.path.join(root, name))
            summary.append(f"built   {name:18s} {size / 1024:7.0f} KiB  min top1-top2 margin "
                           f"gen {margins[0]:.4g} gen3 {margins[1]:.4g}")
        except Exception as e:  # one broken variant should not hide the others
            traceback.print_exc()
            print("FAILED to build", name, ":", repr(e), flush=True)
            summary.append(f"FAILED  {name:18s} {e!r}"[:300])
    print("\nsummary:")
    for line in summary:
        print(line)
    failed = sum(line.startswith("FAILED") for line in summary)
    print(f"{len(summary) - failed} built, {failed} failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
