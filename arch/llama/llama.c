/* llama.c - the Llama family: LLaMA 2/3, TinyLlama, Mistral, Qwen2.
 *
 * Pre-norm decoder blocks with RMSNorm, grouped-query attention with RoPE and a
 * SiLU-gated MLP, as transformers' modeling_llama.py. Qwen2 is the same graph
 * with q/k/v biases (config attention_bias, implied for model_type qwen2);
 * Mistral is the same graph with sliding-window attention on every layer
 * (config sliding_window); Qwen2's window covers layers from
 * max_window_layers on (gk_builder_layer_window).
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define MLP_B GK_TF_COND_MLP_BIAS

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "model.layers.%d.input_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_Q, "model.layers.%d.self_attn.q_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_Q_B, "model.layers.%d.self_attn.q_proj.bias", {GK_DIM_Q, GK_DIM_NONE}, L | GK_TF_COND_BIAS, 0, 0},
    {GK_W_K, "model.layers.%d.self_attn.k_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_K_B, "model.layers.%d.self_attn.k_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | GK_TF_COND_BIAS, 0, 0},
    {GK_W_V, "model.layers.%d.self_attn.v_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_V_B, "model.layers.%d.self_attn.v_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | GK_TF_COND_BIAS, 0, 0},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    /* Llama with attention_bias has an o_proj bias; Qwen2 has none. */
    {GK_W_O_B, "model.layers.%d.self_attn.o_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | OPT, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    /* LlamaMLP: bias=config.mlp_bias on all three */
    {GK_W_GATE_B, "model.layers.%d.mlp.gate_proj.bias", {GK_DIM_FF, GK_DIM_NONE}, L | MLP_B, 0, 0},
    {GK_W_UP_B, "model.layers.%d.mlp.up_proj.bias", {GK_DIM_FF, GK_DIM_NONE}, L | MLP_B, 0, 0},
    {GK_W_DOWN_B, "model.layers.%d.mlp.down_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | MLP_B, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    /* Old checkpoints store the rotary table; we compute it. */
    {GK_W_UNUSED, "model.layers.%d.self_attn.rotary_emb.inv_freq", {GK_DIM_NONE, GK_DIM_NONE}, L | OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const aliases[] = {"mistral", "qwen2", "tinyllama", NULL};
static const char *const hf_archs[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", NULL};
static const char *const model_types[] = {"llama", "mistral", "qwen2", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "llama",
    .aliases = aliases,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: llama models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for llama models");
    return GK_OK;
}

/* One decoder layer, as LlamaDecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    /* attention: h = x + o_proj(attn(rope(q), rope(k), v)) */
    gk_tensor *h = gk_build_norm(b, x, W(GK_W_ATTN_NORM), NULL, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = gk_build_rope(b, q, "q_rope", il);
    k = gk_build_rope(b, k, "k_rope", il);
    gk_attn_opts ao = {.window = gk_builder_layer_window(b, il)};
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, &ao);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* MLP: x + down(silu(gate(h)) * up(h)) */
    h = gk_build_norm(b, x, W(GK_W_FFN_NORM), NULL, "ffn_norm", il);
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), W(GK_W_GATE_B), "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), W(GK_W_UP_B), "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), W(GK_W_DOWN_B), "ffn_out", il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il);
    *out = gk_build_norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1), NULL, "out_norm", -1);
    return GK_OK;
}

static const gk_arch_ops ops = {
    .struct_size = sizeof(gk_arch_ops),
    .magic = GK_ARCH_OPS_MAGIC,
    .spec = &spec,
    .tensors = tensors,
    .name_prefixes = prefixes,
    .check_config = check_config,
    .build = build,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "llama", "LLaMA 2/3, TinyLlama, Mistral and Qwen2 decoders",
                 NULL, NULL, &ops)
