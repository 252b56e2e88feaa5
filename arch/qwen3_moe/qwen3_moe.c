/* qwen3_moe.c - Qwen3 mixture-of-experts decoders (Qwen3-30B-A3B, -235B-A22B).
 *
 * As transformers' modeling_qwen3_moe.py: Qwen3's attention (RMSNorm over each
 * head of q and k before RoPE) and a sparse MLP: a router over num_experts
 * SiLU-gated experts of moe_intermediate_size, each token using
 * num_experts_per_tok of them, weighted by softmax(logits) over all experts
 * at the chosen ones, renormalized to sum 1 when norm_topk_prob. A layer in
 * mlp_only_layers, or one where (layer + 1) % decoder_sparse_step != 0, has
 * a dense MLP of intermediate_size instead. The experts load as the
 * checkpoint stores them (mlp.experts.E.*_proj), stacked per layer.
 */
#include <gk/gk_plugin.h>

#include <stdio.h>
#include <stddef.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define BIAS GK_TF_COND_BIAS
#define QKN GK_TF_COND_QKN
#define EXPERT (GK_TF_LAYER | GK_TF_EXPERT | GK_TF_OPTIONAL) /* sparse layers only */
#define N_EXPERT GK_DIM_KEY(0)
#define MOE_FF GK_DIM_KEY(1)

#define ROUTER "model.layers.%d.mlp.gate.weight"
#define EXP_GATE "model.layers.%d.mlp.experts.%d.gate_proj.weight"
#define EXP_UP "model.layers.%d.mlp.experts.%d.up_proj.weight"
#define EXP_DOWN "model.layers.%d.mlp.experts.%d.down_proj.weight"

static const gk_dim_key dim_keys[] = {
    /* Qwen3MoeConfig's num_experts, which transformers 5 writes as num_local_experts */
    {"num_local_experts", "num_experts", 128}, /* N_EXPERT */
    {"moe_intermediate_size", NULL, 768},      /* MOE_FF */
    {NULL, NULL, 0},
};

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
    {GK_W_O_B, "model.layers.%d.self_attn.o_proj.bias", {GK_DIM_EMBD, GK_DIM_NONE}, L | BIAS, 0, 0},
    {GK_W_Q_NORM, "model.layers.%d.self_attn.q_norm.weight", {GK_DIM_HEAD, GK_DIM_NONE}, L | QKN, 0, 0},
    {GK_W_K_NORM, "model.layers.%d.self_attn.k_norm.weight", {GK_DIM_HEAD, GK_DIM_NONE}, L | QKN, 0, 0},
    {GK_W_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    /* sparse layers: the router [E][D] and the experts, stacked */
    {GK_W_NAMED, ROUTER, {N_EXPERT, GK_DIM_EMBD}, L | OPT, 0, 0},
    {GK_W_NAMED, EXP_GATE, {MOE_FF, GK_DIM_EMBD}, EXPERT, 0, N_EXPERT},
    {GK_W_NAMED, EXP_UP, {MOE_FF, GK_DIM_EMBD}, EXPERT, 0, N_EXPERT},
    {GK_W_NAMED, EXP_DOWN, {GK_DIM_EMBD, MOE_FF}, EXPERT, 0, N_EXPERT},
    /* dense layers (Qwen3MoeMLP of intermediate_size) */
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L | OPT, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L | OPT, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L | OPT, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const hf_archs[] = {"Qwen3MoeForCausalLM", NULL};
static const char *const model_types[] = {"qwen3_moe", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "qwen3_moe",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_SILU,
    .use_rope = true,
    .use_qk_norm = true,
    .use_pos_embed = false,
};

/* The router's settings, read once per build. */
typedef struct moe_cfg {
    int64_t n_expert, k, sparse_step;
    bool norm_topk;
} moe_cfg;

static gk_status read_moe(const gk_config *c, moe_cfg *m, gk_err *err)
{
    const char *e_key = gk_config_has(c, "num_local_experts") || !gk_config_has(c, "num_experts")
                            ? "num_local_experts"
                            : "num_experts";
    gk_status s;
    if ((s = gk_config_get_int(c, e_key, 128, &m->n_expert, err)) != GK_OK ||
        (s = gk_config_get_int(c, "num_experts_per_tok", 8, &m->k, err)) != GK_OK ||
        (s = gk_config_get_int(c, "decoder_sparse_step", 1, &m->sparse_step, err)) != GK_OK ||
        (s = gk_config_get_bool(c, "norm_topk_prob", false, &m->norm_topk, err)) != GK_OK)
        return s;
    if (m->n_expert < 1)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: '%s' %lld: a model without experts is not "
                          "supported by the qwen3_moe architecture", e_key, (long long)m->n_expert);
    if (m->k < 1 || m->k > m->n_expert)
        return gk_err_set(err, GK_ERR_CONFIG,
                          "config.json: 'num_experts_per_tok' must be from 1 to '%s' (%lld), got %lld", e_key,
                          (long long)m->n_expert, (long long)m->k);
    if (m->sparse_step < 1)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'decoder_sparse_step' must be at least 1, got %lld",
                          (long long)m->sparse_step);
    return GK_OK;
}

/* Qwen3MoeDecoderLayer.__init__: whether layer il has the sparse MLP. */
static gk_status layer_is_sparse(const gk_config *c, const moe_cfg *m, int il, bool *sparse, gk_err *err)
{
    double only[1024];
    size_t n;
    gk_status s = gk_config_get_array(c, "mlp_only_layers", only, sizeof only / sizeof only[0], &n, err);
    if (s != GK_OK)
        return s;
    *sparse = (il + 1) % m->sparse_step == 0;
    for (size_t i = 0; i < n; i++)
        if (only[i] == (double)il)
            *sparse = false;
    return GK_OK;
}

static gk_status adjust_config(gk_config *c, gk_err *err)
{
    /* Qwen3MoeConfig: sliding_window = sliding_window if use_sliding_window else None */
    bool use_sw;
    gk_status s = gk_config_get_bool(c, "use_sliding_window", false, &use_sw, err);
    if (s != GK_OK)
        return s;
    if (!use_sw)
        c->sliding_window = 0;
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: qwen3_moe models use rms_norm_eps, not a layer norm");
    if (c->act != GK_ACT_SILU)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: hidden_act must be silu for qwen3_moe models");
    moe_cfg m;
    gk_status s = read_moe(c, &m, err);
    bool sparse;
    if (s == GK_OK)
        s = layer_is_sparse(c, &m, 0, &sparse, err); /* mlp_only_layers is a list of numbers */
    return s;
}

/* Fail the build unless the table entry name is present in layer il exactly
 * when want says (the entries of both MLP kinds are optional in the table). */
static void expect(gk_builder *b, gk_tensor *t, const char *name, int il, bool want, const char *why)
{
    if ((t != NULL) == want)
        return;
    /* the layer's name; "experts.*" for the experts (all of them, or some, are at fault) */
    char full[160];
    size_t n = 0;
    int subs = 0;
    for (const char *p = name; *p && n + 16 < sizeof full; p++) {
        if (p[0] == '%' && p[1] == 'd') {
            n += (size_t)(subs++ == 0 ? snprintf(full + n, sizeof full - n, "%d", il)
                                      : snprintf(full + n, sizeof full - n, "*"));
            p++;
        } else {
            full[n++] = *p;
        }
    }
    full[n] = '\0';
    gk_builder_fail(b, GK_ERR_FORMAT, "%s tensor '%s' (layer %d %s)", want ? "missing" : "unexpected", full, il,
                    why);
}

/* Qwen3MoeSparseMoeBlock.forward. */
static gk_tensor *moe(gk_builder *b, gk_tensor *h, int il, const moe_cfg *m)
{
    const char *why = "has the sparse MLP";
    gk_tensor *router = gk_builder_weight_named(b, ROUTER, il);
    gk_tensor *wg = gk_builder_weight_named(b, EXP_GATE, il);
    gk_tensor *wu = gk_builder_weight_named(b, EXP_UP, il);
    gk_tensor *wd = gk_builder_weight_named(b, EXP_DOWN, il);
    expect(b, router, ROUTER, il, true, why);
    expect(b, wg, EXP_GATE, il, true, why);
    expect(b, wu, EXP_UP, il, true, why);
    expect(b, wd, EXP_DOWN, il, true, why);
    expect(b, gk_builder_weight(b, GK_W_GATE, il), "model.layers.%d.mlp.gate_proj.weight", il, false, why);
    expect(b, gk_builder_weight(b, GK_W_UP, il), "model.layers.%d.mlp.up_proj.weight", il, false, why);
    expect(b, gk_builder_weight(b, GK_W_DOWN, il), "model.layers.%d.mlp.down_proj.weight", il, false, why);

    int k = (int)m->k;
    gk_tensor *logits = gk_build_linear(b, h, router, NULL, "router", il);
    gk_tensor *ids, *w;
    if (m->norm_topk) {
        /* top-k of softmax, renormalized = softmax of the k chosen logits */
        ids = gk_build_topk(b, logits, k, "expert_ids", il);
        w = gk_build_softmax(b, gk_build_gather(b, logits, ids, "expert_logits", il), "expert_weights", il);
    } else {
        gk_tensor *p = gk_build_softmax(b, logits, "router_probs", il);
        ids = gk_build_topk(b, p, k, "expert_ids", il);
        w = gk_build_gather(b, p, ids, "expert_weights", il);
    }
    gk_tensor *g = gk_build_linear_id(b, h, wg, ids, m->n_expert, "gate", il); /* [n][k*moe_ff] */
    gk_tensor *u = gk_build_linear_id(b, h, wu, ids, m->n_expert, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    f = gk_build_linear_id(b, f, wd, ids, m->n_expert, "expert_out", il); /* [n][k*D] */
    return gk_build_moe_sum(b, f, w, "ffn_out", il);
}

/* Qwen3MoeMLP.forward, for the dense layers. */
static gk_tensor *dense(gk_builder *b, gk_tensor *h, int il)
{
    const char *why = "has the dense MLP";
    gk_tensor *wg = gk_builder_weight(b, GK_W_GATE, il);
    gk_tensor *wu = gk_builder_weight(b, GK_W_UP, il);
    gk_tensor *wd = gk_builder_weight(b, GK_W_DOWN, il);
    expect(b, wg, "model.layers.%d.mlp.gate_proj.weight", il, true, why);
    expect(b, wu, "model.layers.%d.mlp.up_proj.weight", il, true, why);
    expect(b, wd, "model.layers.%d.mlp.down_proj.weight", il, true, why);
    expect(b, gk_builder_weight_named(b, ROUTER, il), ROUTER, il, false, why);
    expect(b, gk_builder_weight_named(b, EXP_GATE, il), EXP_GATE, il, false, why);
    expect(b, gk_builder_weight_named(b, EXP_UP, il), EXP_UP, il, false, why);
    expect(b, gk_builder_weight_named(b, EXP_DOWN, il), EXP_DOWN, il, false, why);

    gk_tensor *g = gk_build_linear(b, h, wg, NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, wu, NULL, "up", il);
    gk_tensor *f = gk_build_silu_mul(b, g, u, "swiglu", il);
    return gk_build_linear(b, f, wd, NULL, "ffn_out", il);
}

/* One decoder layer, as Qwen3MoeDecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, int il, const gk_attn_opts *attn, const moe_cfg *m,
                        bool sparse)
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
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, attn);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    h = gk_build_norm(b, x, W(GK_W_FFN_NORM), NULL, "ffn_norm", il);
    gk_tensor *f = sparse ? moe(b, h, il, m) : dense(b, h, il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    moe_cfg m;
    gk_status s = read_moe(c, &m, err);
    if (s != GK_OK)
        return s;
    gk_attn_opts attn = {.window = c->sliding_window};
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "embd", -1);
    for (int il = 0; il < c->n_layer; il++) {
        bool sparse;
        if ((s = layer_is_sparse(c, &m, il, &sparse, err)) != GK_OK)
            return s;
        x = block(b, x, il, &attn, &m, sparse);
    }
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

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "qwen3_moe", "Qwen3 mixture-of-experts decoders (QK-norm, sparse and dense MLPs)",
                 NULL, NULL, &ops)
