/* olmo2.c - OLMo 2 decoders.
 *
 * As transformers' modeling_olmo2.py: no norm before attention or MLP;
 * instead each sublayer's output is RMS-normed before it joins the residual
 * (post_attention_layernorm, post_feedforward_layernorm). q_norm and k_norm
 * are RMSNorms over the whole projected q ([H hd]) and k ([Hkv hd]) rows,
 * not per head, before RoPE. Not here: OLMo 1 (modeling_olmo.py, a
 * weightless LayerNorm) and OLMoE.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define BIAS GK_TF_COND_BIAS

/* post-norms: no role describes a norm of a sublayer's output */
#define POST_ATTN_NORM "model.layers.%d.post_attention_layernorm.weight"
#define POST_FFN_NORM "model.layers.%d.post_feedforward_layernorm.weight"

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_Q, "model.layers.%d.self_attn.q_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_Q_B, "model.layers.%d.self_attn.q_proj.bias", {GK_DIM_Q, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_K, "model.layers.%d.self_attn.k_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_K_B, "model.layers.%d.self_attn.k_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_V, "model.layers.%d.self_attn.v_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_V_B, "model.layers.%d.self_attn.v_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    {GK_W_O_B, "model.layers.%d.self_attn.o_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | BIAS, 0, 0},
    /* over the whole row: [H hd] and [Hkv hd], not [hd] */
    {GK_W_Q_NORM, "model.layers.%d.self_attn.q_norm.weight", {GK_DIM_Q, GK_DIM_NONE}, L, 0, 0},
    {GK_W_K_NORM, "model.layers.%d.self_attn.k_norm.weight", {GK_DIM_KV, GK_DIM_NONE}, L, 0, 0},
    {GK_W_NAMED, POST_ATTN_NORM, {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    {GK_W_NAMED, POST_FFN_NORM, {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"Olmo2ForCausalLM", NULL};
static const char *const model_types[] = {"olmo2", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "olmo2",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = false, /* its q/k norms are whole-row, in the table above */
    .use_pos_embed = false,
};

static gk_status adjust_config(gk_config *c, gk_err *err)
{
    (void)err;
    if (!gk_config_has(c, "rms_norm_eps"))
        c->norm_eps = 1e-5f; /* Olmo2Config's default */
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: olmo2 models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for olmo2 models");
    return GK_OK;
}

/* One decoder layer, as Olmo2DecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    /* h = x + post_attention_layernorm(o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))) */
    gk_tensor *q = gk_build_linear(b, x, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, x, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, x, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = gk_build_rms_norm(b, q, W(GK_W_Q_NORM), 0, c->norm_eps, "q_norm", il);
    k = gk_build_rms_norm(b, k, W(GK_W_K_NORM), 0, c->norm_eps, "k_norm", il);
    q = gk_build_rope(b, q, "q_rope", il);
    k = gk_build_rope(b, k, "k_rope", il);
    gk_tensor *a = gk_build_attn(b, q, k, v, il);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    a = gk_build_rms_norm(b, a, gk_builder_weight_named(b, POST_ATTN_NORM, il), 0, c->norm_eps,
                          "attn_post_norm", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* out = h + post_feedforward_layernorm(down(silu(gate(h)) * up(h))) */
    gk_tensor *g = gk_build_linear(b, x, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, x, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
    f = gk_build_rms_norm(b, f, gk_builder_weight_named(b, POST_FFN_NORM, il), 0, c->norm_eps,
                          "ffn_post_norm", il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    (void)err;
    const gk_config *c = gk_builder_config(b);
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il);
    *out = gk_build_rms_norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1), 0, c->norm_eps, "out_norm", -1);
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
    .adjust_config = adjust_config,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "olmo2", "OLMo 2 decoders (post-norms, whole-row QK-norm)",
                 NULL, NULL, &ops)
