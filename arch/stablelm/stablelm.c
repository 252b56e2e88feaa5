/* stablelm.c - StableLM 2 and StableLM-3B-4E1T decoders.
 *
 * As transformers' modeling_stablelm.py: LayerNorm with bias (layer_norm_eps)
 * before attention and MLP and at the end, RoPE on the first
 * int(head_dim * partial_rotary_factor) columns of each head (default 0.25),
 * q/k/v biases when use_qkv_bias, a SiLU-gated MLP. With
 * use_parallel_residual the block is x + attn(ln1(x)) + mlp(ln1(x)) and has
 * no post_attention_layernorm. Not here: qk_layernorm (a LayerNorm of its own
 * per head of q and k, StableLM 2 12B), refused naming the key.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define QKV_B GK_TF_COND_BIAS /* config.attention_bias, set from use_qkv_bias */


static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "model.layers.%d.input_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_ATTN_NORM_B, "model.layers.%d.input_layernorm.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_Q, "model.layers.%d.self_attn.q_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_Q_B, "model.layers.%d.self_attn.q_proj.bias", {GK_DIM_Q, GK_DIM_NONE}, L | QKV_B, 0, 0},
    {GK_W_K, "model.layers.%d.self_attn.k_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_K_B, "model.layers.%d.self_attn.k_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | QKV_B, 0, 0},
    {GK_W_V, "model.layers.%d.self_attn.v_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_V_B, "model.layers.%d.self_attn.v_proj.bias", {GK_DIM_KV, GK_DIM_NONE}, L | QKV_B, 0, 0},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    /* absent with use_parallel_residual; build() requires them otherwise */
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L | OPT, 0, 0},
    {GK_W_FFN_NORM_B, "model.layers.%d.post_attention_layernorm.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | OPT, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_OUT_NORM_B, "model.norm.bias", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const aliases[] = {"stablelm2", NULL};
static const char *const hf_archs[] = {"StableLmForCausalLM", NULL};
static const char *const model_types[] = {"stablelm", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "stablelm",
    .aliases = aliases,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_LAYER,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

/* StableLmAttention: rotary_ndims = int(head_dim * partial_rotary_factor),
 * the factor from rope_parameters (transformers 5), else the top level,
 * else 0.25. */
static gk_status rotary_dim(const gk_config *c, int64_t *out, gk_err *err)
{
    const char *key = gk_config_has(c, "rope_parameters.partial_rotary_factor")
                          ? "rope_parameters.partial_rotary_factor"
                          : gk_config_has(c, "rope_scaling.partial_rotary_factor")
                                ? "rope_scaling.partial_rotary_factor"
                                : "partial_rotary_factor";
    double f;
    gk_status s = gk_config_get_float(c, key, 0.25, &f, err);
    if (s != GK_OK)
        return s;
    int64_t r = (int64_t)((double)c->head_dim * f);
    if (!(f > 0.0 && f <= 1.0) || r < 2 || r % 2 != 0)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: '%s' %g gives %lld rotary dimensions of head_dim %lld; "
                          "an even number from 2 to head_dim is needed",
                          key, f, (long long)r, (long long)c->head_dim);
    *out = r;
    return GK_OK;
}

/* StableLmConfig's keys: use_qkv_bias is the q/k/v biases (o_proj has none),
 * the norms are LayerNorms of layer_norm_eps (1e-5 when absent), head_dim is
 * always hidden_size / num_attention_heads. */
static gk_status adjust_config(gk_config *c, gk_err *err)
{
    bool qkv_bias;
    double eps;
    gk_status s;
    if ((s = gk_config_get_bool(c, "use_qkv_bias", false, &qkv_bias, err)) != GK_OK ||
        (s = gk_config_get_float(c, "layer_norm_eps", 1e-5, &eps, err)) != GK_OK)
        return s;
    c->attention_bias = qkv_bias;
    c->norm = GK_NORM_LAYER;
    c->norm_eps = (float)eps;
    if (c->n_head > 0 && c->n_embd % c->n_head != 0)
        return gk_err_set(err, GK_ERR_CONFIG,
                          "config.json: hidden_size %lld is not a multiple of num_attention_heads %lld",
                          (long long)c->n_embd, (long long)c->n_head);
    if (c->n_head > 0)
        c->head_dim = c->n_embd / c->n_head;
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for stablelm models");
    bool qk_ln;
    gk_status s = gk_config_get_bool(c, "qk_layernorm", false, &qk_ln, err);
    if (s != GK_OK)
        return s;
    if (qk_ln)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: 'qk_layernorm' true (a LayerNorm per head of q and k) is not "
                          "supported by the stablelm architecture");
    int64_t r;
    return rotary_dim(c, &r, err);
}

static gk_tensor *mlp(gk_builder *b, gk_tensor *h, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    return gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
#undef W
}

/* One decoder layer, as StableLmDecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il, const gk_rope_opts *rope, bool parallel)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    gk_tensor *h = gk_build_layer_norm(b, x, W(GK_W_ATTN_NORM), W(GK_W_ATTN_NORM_B), c->norm_eps,
                                       "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = gk_build_rope_ex(b, q, rope, "q_rope", il);
    k = gk_build_rope_ex(b, k, rope, "k_rope", il);
    gk_tensor *a = gk_build_attn(b, q, k, v, il);
    a = gk_build_linear(b, a, W(GK_W_O), NULL, "attn_out", il);

    if (parallel) {
        /* x + attn(ln1(x)) + mlp(ln1(x)) */
        gk_tensor *f = mlp(b, h, il);
        x = gk_build_add(b, x, a, "attn_res", il);
        return gk_build_add(b, x, f, "l_out", il);
    }
    /* x = x + attn(ln1(x)); x + mlp(ln2(x)) */
    x = gk_build_add(b, x, a, "attn_res", il);
    h = gk_build_layer_norm(b, x, W(GK_W_FFN_NORM), W(GK_W_FFN_NORM_B), c->norm_eps, "ffn_norm", il);
    return gk_build_add(b, x, mlp(b, h, il), "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    gk_rope_opts rope = {.use_config_scaling = true};
    bool parallel;
    gk_status s;
    if ((s = rotary_dim(c, &rope.rotary_dim, err)) != GK_OK ||
        (s = gk_config_get_bool(c, "use_parallel_residual", false, &parallel, err)) != GK_OK)
        return s;
    /* post_attention_layernorm exists exactly without the parallel residual */
    for (int il = 0; il < c->n_layer; il++) {
        bool has_w = gk_builder_has_weight(b, GK_W_FFN_NORM, il);
        bool has_b = gk_builder_has_weight(b, GK_W_FFN_NORM_B, il);
        if (!parallel && (!has_w || !has_b))
            gk_builder_fail(b, GK_ERR_FORMAT, "missing tensor 'model.layers.%d.post_attention_layernorm.%s' "
                            "(use_parallel_residual is false)", il, has_w ? "bias" : "weight");
        else if (parallel && (has_w || has_b))
            gk_builder_fail(b, GK_ERR_FORMAT, "unexpected tensor 'model.layers.%d.post_attention_layernorm.%s' "
                            "(use_parallel_residual is true: the block has no such norm)", il,
                            has_w ? "weight" : "bias");
    }
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il, &rope, parallel);
    *out = gk_build_layer_norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1),
                               gk_builder_weight(b, GK_W_OUT_NORM_B, -1), c->norm_eps, "out_norm", -1);
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

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "stablelm", "StableLM decoders (LayerNorm, partial RoPE, parallel residual)",
                 NULL, NULL, &ops)
