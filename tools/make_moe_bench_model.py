"""Usage: python3 tools/make_moe_bench_model.py OUT_DIR [N_LAYERS]

A random-weight bfloat16 checkpoint with the shapes of Qwen3-30B-A3B (hidden
2048, 32 query / 4 KV heads of 128, 128 experts of 768 with 8 active, vocab
151936; 48 layers unless N_LAYERS says fewer), in the layout transformers
saves (per-expert tensors), for decode speed runs: random weights do not
change the speed of memory-bound decode. Written shard by shard from the GPU
(needs torch and safetensors; the GPU machine has them), so no full copy of
the model is ever held on the host. Prints the bytes a decode step must read
(the active weights) and the bound that puts on tokens/s at a given stream
rate.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

H, HEADS, KV, HD, E, K, FF, V = 2048, 32, 4, 128, 128, 8, 768, 151936


def main(out, n_layers):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, scale=None):
        s = scale if scale is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g, device="cuda") * s).to(torch.bfloat16).cpu()

    def ones(n):
        return (1.0 + 0.1 * torch.randn(n, generator=g, device="cuda")).to(torch.bfloat16).cpu()

    index, shard, files = {}, 0, []

    def flush(t):
        nonlocal shard
        shard += 1
        name = f"model-{shard:05d}.safetensors"
        save_file(t, os.path.join(out, name), metadata={"format": "pt"})
        files.append(name)
        for k in t:
            index[k] = name

    flush({"model.embed_tokens.weight": rnd(V, H, scale=0.5), "model.norm.weight": ones(H),
           "lm_head.weight": rnd(V, H)})
    for il in range(n_layers):
        p = f"model.layers.{il}."
        t = {p + "input_layernorm.weight": ones(H), p + "post_attention_layernorm.weight": ones(H),
             p + "self_attn.q_proj.weight": rnd(HEADS * HD, H), p + "self_attn.k_proj.weight": rnd(KV * HD, H),
             p + "self_attn.v_proj.weight": rnd(KV * HD, H), p + "self_attn.o_proj.weight": rnd(H, HEADS * HD),
             p + "self_attn.q_norm.weight": ones(HD), p + "self_attn.k_norm.weight": ones(HD),
             p + "mlp.gate.weight": rnd(E, H)}
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            t[q + "gate_proj.weight"] = rnd(FF, H)
            t[q + "up_proj.weight"] = rnd(FF, H)
            t[q + "down_proj.weight"] = rnd(H, FF)
        flush(t)
    # the shard count is only known at the end: name them as transformers does
    n = len(files)
    for i, f in enumerate(files):
        new = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.rename(os.path.join(out, f), os.path.join(out, new))
        for k, v in index.items():
            if v == f:
                index[k] = new
    json.dump({"metadata": {}, "weight_map": index}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": V, "hidden_size": H,
           "intermediate_size": 6144, "moe_intermediate_size": FF, "num_hidden_layers": n_layers,
           "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD, "num_experts": E,
           "num_experts_per_tok": K, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
           "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu", "attention_bias": False,
           "bos_token_id": 151643, "eos_token_id": 151645}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    layer = HEADS * HD * H * 2 + KV * HD * H * 2 + E * H + K * 3 * FF * H + 2 * H + 2 * HD
    active = 2 * (n_layers * layer + V * H + H)  # bf16; the embedding row is negligible
    total = 2 * (n_layers * (layer + (E - K) * 3 * FF * H) + 2 * V * H + H)
    print(f"wrote {out}: {n_layers} layers, {total / 1e9:.2f} GB in all, {active / 1e9:.3f} GB active per token")
    for bw in (4.32e12, 4.8e12):
        print(f"  active-weight bound at {bw / 1e12:.2f} TB/s: {bw / active:.0f} tokens/s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 48)
