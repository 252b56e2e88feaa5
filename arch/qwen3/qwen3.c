/* qwen3.c - Qwen3 dense decoders.
 *
 * A Llama-style block with one addition: RMSNorm over each head of q and k
 * (q_norm, k_norm) before RoPE, as transformers' modeling_qwen3.py; head_dim
 * is explicit in config.json and need not be hidden/heads. Not here: Qwen3-MoE.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL

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
    {GK_W_O_B, "model.layers.%d.self_attn.o_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | GK_TF_COND_BIAS, 0, 0},
    {GK_W_Q_NORM, "model.layers.%d.self_attn.q_norm.weight", {GK_DIM_HEAD, GK_DIM_NONE}, L | GK_TF_COND_QKN, 0, 0},
    {GK_W_K_NORM, "model.layers.%d.self_attn.k_norm.weight", {GK_DIM_HEAD, GK_DIM_NONE}, L | GK_TF_COND_QKN, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"Qwen3ForCausalLM", NULL};
static const char *const model_types[] = {"qwen3", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "qwen3",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = true,
    .use_pos_embed = false,
};

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: qwen3 models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for qwen3 models");
    return GK_OK;
}

/* One decoder layer, as Qwen3DecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    gk_tensor *h = gk_build_norm(b, x, W(GK_W_ATTN_NORM), NULL, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    /* q_norm / k_norm: RMSNorm over each head_dim slice, before RoPE */
    q = gk_build_rms_norm(b, q, W(GK_W_Q_NORM), c->head_dim, c->norm_eps, "q_norm", il);
    k = gk_build_rms_norm(b, k, W(GK_W_K_NORM), c->head_dim, c->norm_eps, "k_norm", il);
    q = gk_build_rope(b, q, "q_rope", il);
    k = gk_build_rope(b, k, "k_rope", il);
    gk_attn_opts ao = {.window = gk_builder_layer_window(b, il)};
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, &ao);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    h = gk_build_norm(b, x, W(GK_W_FFN_NORM), NULL, "ffn_norm", il);
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
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

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "qwen3", "Qwen3 dense decoders (QK-norm, explicit head_dim)",
                 NULL, NULL, &ops)
