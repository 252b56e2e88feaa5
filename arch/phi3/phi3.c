/* phi3.c - Phi-3 (mini, medium) decoders.
 *
 * The Llama block with two fusions, as transformers' modeling_phi3.py: one
 * qkv_proj whose rows are q, then k, then v ([(H + 2 Hkv) hd][D], unequal
 * parts with GQA), and one gate_up_proj whose first half is the gate and
 * second half the up projection. RoPE turns the first int(hd *
 * partial_rotary_factor) columns of each head; sliding_window, when set,
 * limits what each query sees. Not here: longrope (Phi-3 -128k, Phi-3.5),
 * which the config parser refuses naming rope_parameters.rope_type.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define SPLIT GK_TF_SPLIT

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "model.layers.%d.input_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    /* qkv_proj: rows [0, H hd) are q, then Hkv hd of k, then Hkv hd of v */
    {GK_W_Q, "model.layers.%d.self_attn.qkv_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L | SPLIT, 1, 3},
    {GK_W_K, "model.layers.%d.self_attn.qkv_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L | SPLIT, 2, 3},
    {GK_W_V, "model.layers.%d.self_attn.qkv_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L | SPLIT, 3, 3},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    /* gate_up_proj: gate, up = chunk(2) */
    {GK_W_GATE, "model.layers.%d.mlp.gate_up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 1, 2},
    {GK_W_UP, "model.layers.%d.mlp.gate_up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 2, 2},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"Phi3ForCausalLM", NULL};
static const char *const model_types[] = {"phi3", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "phi3",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

/* Phi3Config: rotary_dim = int(head_dim * partial_rotary_factor), the factor
 * from rope_parameters (transformers 5), else the top level, else 1. */
static gk_status rotary_dim(const gk_config *c, int64_t *out, gk_err *err)
{
    const char *key = gk_config_has(c, "rope_parameters.partial_rotary_factor")
                          ? "rope_parameters.partial_rotary_factor"
                          : gk_config_has(c, "rope_scaling.partial_rotary_factor")
                                ? "rope_scaling.partial_rotary_factor"
                                : "partial_rotary_factor";
    double f;
    gk_status s = gk_config_get_float(c, key, 1.0, &f, err);
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

static gk_status adjust_config(gk_config *c, gk_err *err)
{
    (void)err;
    if (!gk_config_has(c, "rms_norm_eps"))
        c->norm_eps = 1e-5f; /* Phi3Config's default */
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: phi3 models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for phi3 models");
    /* Phi3Config accepts only default and longrope (refused by the parser) */
    if (c->rope_scaling != GK_ROPE_NONE)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: 'rope_parameters.rope_type' must be default for phi3 models");
    int64_t r;
    return rotary_dim(c, &r, err);
}

/* One decoder layer, as Phi3DecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il, const gk_rope_opts *rope,
                        const gk_attn_opts *attn)
{
#define W(role) gk_builder_weight(b, role, il)
    /* attention: h = x + o_proj(attn(rope(q), rope(k), v)), q, k, v from qkv_proj */
    gk_tensor *h = gk_build_norm(b, x, W(GK_W_ATTN_NORM), NULL, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), NULL, "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), NULL, "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), NULL, "v", il);
    q = gk_build_rope_ex(b, q, rope, "q_rope", il);
    k = gk_build_rope_ex(b, k, rope, "k_rope", il);
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, attn);
    a = gk_build_linear(b, a, W(GK_W_O), NULL, "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* MLP: x + down(up * silu(gate)), gate and up from gate_up_proj */
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
    gk_rope_opts rope = {.use_config_scaling = true};
    gk_status s = rotary_dim(c, &rope.rotary_dim, err);
    if (s != GK_OK)
        return s;
    gk_attn_opts attn = {.window = c->sliding_window};
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il, &rope, &attn);
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
    .adjust_config = adjust_config,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "phi3", "Phi-3 decoders (fused qkv and gate_up, partial RoPE)",
                 NULL, NULL, &ops)
