/* mixtral.c - Mixtral sparse mixture-of-experts decoders.
 *
 * As transformers' modeling_mixtral.py: Mistral's attention (GQA, RoPE,
 * sliding_window when set) and, in place of the MLP, a router over
 * num_local_experts SiLU-gated experts of which each token uses
 * num_experts_per_tok. The router's weights are softmax(logits) over all
 * experts, the top k kept and renormalized to sum 1: the softmax of the k
 * chosen logits. Experts load as the checkpoint stores them
 * (block_sparse_moe.experts.E.w1/w3/w2), stacked per layer. Not here: the
 * 3-D experts.gate_up_proj layout transformers holds in memory.
 */
#include <gk/gk_plugin.h>

#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define EXPERT (GK_TF_LAYER | GK_TF_EXPERT)
#define N_EXPERT GK_DIM_KEY(0)

#define ROUTER "model.layers.%d.block_sparse_moe.gate.weight"

static const gk_dim_key dim_keys[] = {
    {"num_local_experts", "num_experts", 8}, /* N_EXPERT; MixtralConfig's default */
    {NULL, NULL, 0},
};

static const gk_tensor_entry tensors[] = {
    {GK_W_TOK_EMBD, "model.embed_tokens.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, 0, 0, 0},
    {GK_W_ATTN_NORM, "model.layers.%d.input_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_Q, "model.layers.%d.self_attn.q_proj.weight", {GK_DIM_Q, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_K, "model.layers.%d.self_attn.k_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_V, "model.layers.%d.self_attn.v_proj.weight", {GK_DIM_KV, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_O, "model.layers.%d.self_attn.o_proj.weight", {GK_DIM_EMBD, GK_DIM_Q}, L, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    /* the router: [E][D] */
    {GK_W_NAMED, ROUTER, {N_EXPERT, GK_DIM_EMBD}, L, 0, 0},
    /* experts, stacked to [E*ff][D] (w1 gate, w3 up) and [E*D][ff] (w2 down) */
    {GK_W_GATE, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", {GK_DIM_FF, GK_DIM_EMBD}, EXPERT, 0, N_EXPERT},
    {GK_W_UP, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", {GK_DIM_FF, GK_DIM_EMBD}, EXPERT, 0, N_EXPERT},
    {GK_W_DOWN, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", {GK_DIM_EMBD, GK_DIM_FF}, EXPERT, 0, N_EXPERT},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"MixtralForCausalLM", NULL};
static const char *const model_types[] = {"mixtral", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "mixtral",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

/* The expert count and how many each token uses, checked: 1 <= k <= E. */
static gk_status moe_sizes(const gk_config *c, int64_t *n_expert, int64_t *k, gk_err *err)
{
    const char *e_key = gk_config_has(c, "num_local_experts") || !gk_config_has(c, "num_experts")
                            ? "num_local_experts"
                            : "num_experts";
    gk_status s;
    if ((s = gk_config_get_int(c, e_key, 8, n_expert, err)) != GK_OK ||
        (s = gk_config_get_int(c, "num_experts_per_tok", 2, k, err)) != GK_OK)
        return s;
    if (*n_expert < 1)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' must be at least 1, got %lld", e_key,
                          (long long)*n_expert);
    if (*k < 1 || *k > *n_expert)
        return gk_err_set(err, GK_ERR_CONFIG,
                          "config.json: 'num_experts_per_tok' must be from 1 to '%s' (%lld), got %lld", e_key,
                          (long long)*n_expert, (long long)*k);
    return GK_OK;
}

static gk_status adjust_config(gk_config *c, gk_err *err)
{
    (void)err;
    if (!gk_config_has(c, "rms_norm_eps"))
        c->norm_eps = 1e-5f; /* MixtralConfig's defaults */
    if (!gk_config_has(c, "rope_theta") && !gk_config_has(c, "rope_parameters.rope_theta") &&
        !gk_config_has(c, "rope_scaling.rope_theta"))
        c->rope_theta = 1e6f;
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: mixtral models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for mixtral models");
    int64_t e, k;
    return moe_sizes(c, &e, &k, err);
}

/* MixtralSparseMoeBlock.forward: route each token to its top k experts and
 * sum their outputs weighted by the renormalized router probabilities. */
static gk_tensor *moe(gk_builder *b, gk_tensor *h, int il, int64_t n_expert, int k)
{
#define W(role) gk_builder_weight(b, role, il)
    gk_tensor *logits = gk_build_linear(b, h, gk_builder_weight_named(b, ROUTER, il), NULL, "router", il);
    gk_tensor *ids = gk_build_topk(b, logits, k, "expert_ids", il);       /* [n][k] */
    gk_tensor *w = gk_build_gather(b, logits, ids, "expert_logits", il);  /* [n][k] */
    w = gk_build_softmax(b, w, "expert_weights", il);
    gk_tensor *g = gk_build_linear_id(b, h, W(GK_W_GATE), ids, n_expert, "gate", il); /* [n][k*ff] */
    gk_tensor *u = gk_build_linear_id(b, h, W(GK_W_UP), ids, n_expert, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    f = gk_build_linear_id(b, f, W(GK_W_DOWN), ids, n_expert, "expert_out", il); /* [n][k*D] */
    return gk_build_moe_sum(b, f, w, "ffn_out", il);
#undef W
}

/* One decoder layer, as MixtralDecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il, const gk_attn_opts *attn, int64_t n_expert, int k)
{
#define W(role) gk_builder_weight(b, role, il)
    gk_tensor *h = gk_build_norm(b, x, W(GK_W_ATTN_NORM), NULL, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), NULL, "q", il);
    gk_tensor *kk = gk_build_linear(b, h, W(GK_W_K), NULL, "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), NULL, "v", il);
    q = gk_build_rope(b, q, "q_rope", il);
    kk = gk_build_rope(b, kk, "k_rope", il);
    gk_tensor *a = gk_build_attn_ex(b, q, kk, v, il, attn);
    a = gk_build_linear(b, a, W(GK_W_O), NULL, "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    h = gk_build_norm(b, x, W(GK_W_FFN_NORM), NULL, "ffn_norm", il);
    return gk_build_add(b, x, moe(b, h, il, n_expert, k), "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    int64_t n_expert, k;
    gk_status s = moe_sizes(c, &n_expert, &k, err);
    if (s != GK_OK)
        return s;
    gk_attn_opts attn = {.window = c->sliding_window};
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++)
        x = block(b, x, il, &attn, n_expert, (int)k);
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
    .dim_keys = dim_keys,
    .adjust_config = adjust_config,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "mixtral", "Mixtral sparse mixture-of-experts decoders",
                 NULL, NULL, &ops)
