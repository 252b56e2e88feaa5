/* gemma.c - Gemma (the first generation: gemma-2b, gemma-7b and their -it).
 *
 * A Llama-shaped decoder with Gemma's three differences, as transformers'
 * modeling_gemma.py: the token embeddings are scaled by sqrt(hidden_size);
 * every RMSNorm is x / rms * (1 + w), computed in float32; the MLP is
 * down(act(gate) * up) with act = hidden_act (gelu_pytorch_tanh by default,
 * the erf GELU for "gelu"). head_dim defaults to 256 (GemmaConfig), not
 * hidden_size / heads. The head is tied to the embedding unless lm_head is
 * stored. Not here: use_bidirectional_attention (refused), Gemma 2 and 3
 * (their own plugins).
 */
#include <gk/gk_plugin.h>

#include <math.h>
#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define BIAS GK_TF_COND_BIAS

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "model.layers.%d.input_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_Q, "model.layers.%d.self_attn.q_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_Q_B, "model.layers.%d.self_attn.q_proj.bias", {GK_DIM_Q, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_K, "model.layers.%d.self_attn.k_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_K_B, "model.layers.%d.self_attn.k_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_V, "model.layers.%d.self_attn.v_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_V_B, "model.layers.%d.self_attn.v_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    /* GemmaAttention: bias=config.attention_bias on all four projections */
    {GK_W_O_B, "model.layers.%d.self_attn.o_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"GemmaForCausalLM", NULL};
static const char *const model_types[] = {"gemma", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "gemma",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_GELU_TANH,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

/* GemmaConfig's defaults where the generic parser has others: hidden_act
 * gelu_pytorch_tanh (the parser's default is silu) and head_dim 256. */
static gk_status adjust_config(gk_config *c, gk_err *err)
{
    if (!gk_config_has(c, "hidden_act"))
        c->act = GK_ACT_GELU_TANH;
    if (!gk_config_has(c, "head_dim"))
        c->head_dim = 256;
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    gk_status st;
    bool bidir;
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: gemma models use rms_norm_eps, not a layer norm");
    if ((st = gk_config_get_bool(c, "use_bidirectional_attention", false, &bidir, err)) != GK_OK)
        return st;
    if (bidir)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: use_bidirectional_attention true is not supported (causal only)");
    return GK_OK;
}

/* act(gate) * up by the config's hidden_act (ACT2FN[config.hidden_act]). */
static gk_tensor *gated(gk_builder *b, gk_tensor *g, gk_tensor *u, int il)
{
    const gk_config *c = gk_builder_config(b);
    if (c->act == GK_ACT_SILU)
        return gk_build_silu_mul(b, g, u, "swiglu", il);
    return gk_build_geglu(b, g, u, c->act == GK_ACT_GELU_TANH, "geglu", il);
}

/* One decoder layer, as GemmaDecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    /* attention: h = x + o_proj(attn(rope(q), rope(k), v)), scale head_dim^-0.5 */
    gk_tensor *h = gk_build_rms_norm_offset(b, x, W(GK_W_ATTN_NORM), 0, c->norm_eps, 1.0f, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = gk_build_rope(b, q, "q_rope", il);
    k = gk_build_rope(b, k, "k_rope", il);
    gk_tensor *a = gk_build_attn(b, q, k, v, il);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* MLP: x + down(act(gate(h)) * up(h)) */
    h = gk_build_rms_norm_offset(b, x, W(GK_W_FFN_NORM), 0, c->norm_eps, 1.0f, "ffn_norm", il);
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gated(b, g, u, il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    /* GemmaTextScaledWordEmbedding: rows * sqrt(hidden_size), the normalizer
     * in the activations' dtype (float32 here) */
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "tok_embd", -1);
    x = gk_build_scale(b, x, (float)sqrt((double)c->n_embd), 0.0f, "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il);
    *out = gk_build_rms_norm_offset(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1), 0, c->norm_eps, 1.0f,
                                    "out_norm", -1);
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
    .dim_keys = NULL,
    .adjust_config = adjust_config,
    .build_head = NULL,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "gemma", "Gemma decoders (scaled embeddings, 1 + w RMSNorm, GeGLU)",
                 NULL, NULL, &ops)
