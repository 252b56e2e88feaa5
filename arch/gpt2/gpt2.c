/* gpt2.c - GPT-2.
 *
 * Learned absolute positions, pre-norm blocks with LayerNorm, fused c_attn
 * projection and a tanh-GELU MLP, as transformers' modeling_gpt2.py. Weights
 * are Conv1D ([in][out]); the tensor table marks them for transposing at load,
 * and c_attn is split into q, k and v there. Names come with or without the
 * "transformer." prefix; the head is tied to wte.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define T GK_TF_TRANSPOSE
#define OPT GK_TF_OPTIONAL

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "wte.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_POS_EMBD, "wpe.weight", {GK_DIM_POS, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "h.%d.ln_1.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_ATTN_NORM_B, "h.%d.ln_1.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_Q, "h.%d.attn.c_attn.weight", {GK_DIM_EMBD, GK_DIM_EMBD}, L | T, 1, 3},
    {GK_W_K, "h.%d.attn.c_attn.weight", {GK_DIM_EMBD, GK_DIM_EMBD}, L | T, 2, 3},
    {GK_W_V, "h.%d.attn.c_attn.weight", {GK_DIM_EMBD, GK_DIM_EMBD}, L | T, 3, 3},
    {GK_W_Q_B, "h.%d.attn.c_attn.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 1, 3},
    {GK_W_K_B, "h.%d.attn.c_attn.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 2, 3},
    {GK_W_V_B, "h.%d.attn.c_attn.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 3, 3},
    {GK_W_O, "h.%d.attn.c_proj.weight", {GK_DIM_EMBD, GK_DIM_EMBD}, L | T, 0, 0},
    {GK_W_O_B, "h.%d.attn.c_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_FFN_NORM, "h.%d.ln_2.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_FFN_NORM_B, "h.%d.ln_2.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_UP, "h.%d.mlp.c_fc.weight", {GK_DIM_FF, GK_DIM_EMBD}, L | T, 0, 0},
    {GK_W_UP_B, "h.%d.mlp.c_fc.bias", {GK_DIM_FF, GK_DIM_NONE}, L, 0, 0},
    {GK_W_DOWN, "h.%d.mlp.c_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L | T, 0, 0},
    {GK_W_DOWN_B, "h.%d.mlp.c_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_OUT_NORM, "ln_f.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_OUT_NORM_B, "ln_f.bias", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    /* Causal-mask buffers that older exports saved with the weights. */
    {GK_W_UNUSED, "h.%d.attn.bias", {GK_DIM_NONE, GK_DIM_NONE}, L | OPT, 0, 0},
    {GK_W_UNUSED, "h.%d.attn.masked_bias", {GK_DIM_NONE, GK_DIM_NONE}, L | OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"GPT2LMHeadModel", "GPT2Model", NULL};
static const char *const model_types[] = {"gpt2", NULL};
/* GPT2LMHeadModel saves "transformer.h.0..."; GPT2Model saves "h.0...". */
static const char *const prefixes[] = {"transformer.", "", NULL};

static const gk_model_spec spec = {
    .name = "gpt2",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_LAYER,
    .act = GK_ACT_GELU_TANH,
    .use_rope = false,
    .use_qk_norm = false,
    .use_pos_embed = true,
};

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_LAYER)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: gpt2 models use layer_norm_epsilon");
    if (c->act != GK_ACT_GELU_TANH)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: activation_function must be gelu_new for gpt2 models");
    if (c->n_head_kv != c->n_head)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: gpt2 has no grouped-query attention");
    return GK_OK;
}

/* One block, as GPT2Block.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    gk_tensor *h = gk_build_norm(b, x, W(GK_W_ATTN_NORM), W(GK_W_ATTN_NORM_B), "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    gk_tensor *a = gk_build_attn(b, q, k, v, il);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    h = gk_build_norm(b, x, W(GK_W_FFN_NORM), W(GK_W_FFN_NORM_B), "ffn_norm", il);
    h = gk_build_linear(b, h, W(GK_W_UP), W(GK_W_UP_B), "fc", il);
    h = gk_build_gelu_tanh(b, h, "gelu", il);
    h = gk_build_linear(b, h, W(GK_W_DOWN), W(GK_W_DOWN_B), "ffn_out", il);
    return gk_build_add(b, x, h, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    gk_tensor *tok = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "tok_embd", -1);
    gk_tensor *pos = gk_build_get_rows(b, gk_builder_weight(b, GK_W_POS_EMBD, -1), gk_builder_pos(b), "pos_embd", -1);
    gk_tensor *x = gk_build_add(b, tok, pos, "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il);
    *out = gk_build_norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1),
                         gk_builder_weight(b, GK_W_OUT_NORM_B, -1), "out_norm", -1);
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

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "gpt2", "GPT-2 (learned positions, LayerNorm, GELU)", NULL, NULL, &ops)
