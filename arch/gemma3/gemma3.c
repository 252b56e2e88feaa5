/* gemma3.c - Gemma 3 text decoders (gemma-3-1b, and the language model of the
 * larger ones saved as Gemma3ForCausalLM, model_type gemma3_text).
 *
 * Gemma 2's layer (embeddings scaled by sqrt(hidden_size), four
 * x / rms * (1 + w) norms a layer, a GeGLU MLP, attention scaled by
 * query_pre_attn_scalar^-0.5, sliding-window layers by layer_types) with
 * what modeling_gemma3.py changes: RMSNorm (1 + w) over each head of q and k
 * before RoPE; two RoPEs, the sliding layers' from
 * rope_parameters.sliding_attention (older configs: rope_local_base_freq,
 * unscaled) and the full layers' from rope_parameters.full_attention (older
 * configs: rope_theta and rope_scaling), thetas defaulting to 10^4 and 10^6;
 * layer_types defaulting to one full layer in sliding_window_pattern (6);
 * no attention softcap (Gemma3Attention does not pass
 * attn_logit_softcapping on, so it is ignored here too) and a final logit
 * softcap only when the config sets one.
 * Not here: the vision tower (Gemma3ForConditionalGeneration, model_type
 * gemma3), use_bidirectional_attention (refused).
 */
#include <gk/gk_plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define BIAS GK_TF_COND_BIAS
#define QKN GK_TF_COND_QKN

static const char POST_ATTN_NORM[] = "model.layers.%d.post_attention_layernorm.weight";
static const char POST_FFN_NORM[] = "model.layers.%d.post_feedforward_layernorm.weight";

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
    /* the norm of the attention's output, before the residual add */
    {GK_W_NAMED, POST_ATTN_NORM, {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    /* the norm in front of the MLP */
    {GK_W_FFN_NORM, "model.layers.%d.pre_feedforward_layernorm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_GATE, "model.layers.%d.mlp.gate_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_UP, "model.layers.%d.mlp.up_proj.weight", {GK_DIM_FF, GK_DIM_EMBD}, L, 0, 0},
    {GK_W_DOWN, "model.layers.%d.mlp.down_proj.weight", {GK_DIM_EMBD, GK_DIM_FF}, L, 0, 0},
    /* the norm of the MLP's output, before the residual add */
    {GK_W_NAMED, POST_FFN_NORM, {GK_DIM_EMBD, GK_DIM_NONE}, L, 0, 0},
    {GK_W_OUT_NORM, "model.norm.weight", {GK_DIM_EMBD, GK_DIM_NONE}, 0, 0, 0},
    {GK_W_LM_HEAD, "lm_head.weight", {GK_DIM_VOCAB, GK_DIM_EMBD}, OPT, 0, 0},
    {0, NULL, {0, 0}, 0, 0, 0},
};

static const char *const aliases[] = {"gemma3_text", NULL};
static const char *const hf_archs[] = {"Gemma3ForCausalLM", NULL};
static const char *const model_types[] = {"gemma3_text", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "gemma3",
    .aliases = aliases,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_GELU_TANH,
    .use_rope = true,
    .use_qk_norm = true,
    .use_pos_embed = false,
};

/* ------------------------------------------------------------ config.json */

/* rope_parameters keyed by layer type (transformers 5), or the older flat keys. */
static bool per_layer_rope(const gk_config *c)
{
    return gk_config_has(c, "rope_parameters.full_attention") ||
           gk_config_has(c, "rope_parameters.sliding_attention");
}

/* The sliding layers' RoPE: rope_parameters.sliding_attention's type and
 * theta, else rope_local_base_freq without scaling. */
static gk_status sliding_rope(const gk_config *c, gk_rope_opts *o, gk_err *err)
{
    gk_status st;
    double theta, factor;
    char type[32];
    *o = (gk_rope_opts){.scaling = GK_ROPE_NONE, .factor = 1.0f, .use_config_scaling = false};
    if (!per_layer_rope(c)) {
        if ((st = gk_config_get_float(c, "rope_local_base_freq", 10000.0, &theta, err)) != GK_OK)
            return st;
        o->theta = (float)theta;
        return GK_OK;
    }
    if ((st = gk_config_get_float(c, "rope_parameters.sliding_attention.rope_theta", 10000.0, &theta, err)) !=
            GK_OK ||
        (st = gk_config_get_string(c, "rope_parameters.sliding_attention.rope_type", "default", type, sizeof type,
                                   err)) != GK_OK)
        return st;
    o->theta = (float)theta;
    if (!strcmp(type, "default"))
        return GK_OK;
    if (strcmp(type, "linear") != 0)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: 'rope_parameters.sliding_attention.rope_type' "
                          "\"%s\" is not supported (known: default, linear)", type);
    if (!gk_config_has(c, "rope_parameters.sliding_attention.factor"))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: missing key 'rope_parameters.sliding_attention.factor'");
    if ((st = gk_config_get_float(c, "rope_parameters.sliding_attention.factor", 1.0, &factor, err)) != GK_OK)
        return st;
    if (!(factor > 0.0 && isfinite(factor)))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'rope_parameters.sliding_attention.factor' must be a "
                          "number > 0, got %g", factor);
    o->scaling = GK_ROPE_LINEAR;
    o->factor = (float)factor;
    return GK_OK;
}

/* Whether layer il attends through the sliding window: layer_types[il], or
 * Gemma3TextConfig's default when layer_types is absent (every
 * sliding_window_pattern-th layer is full). */
static gk_status layer_sliding(const gk_config *c, int64_t il, bool *out, gk_err *err)
{
    gk_status st;
    if (!gk_config_has(c, "layer_types")) {
        int64_t pattern;
        if ((st = gk_config_get_int(c, "sliding_window_pattern", 6, &pattern, err)) != GK_OK)
            return st;
        if (pattern < 1)
            return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'sliding_window_pattern' must be >= 1, got %lld",
                              (long long)pattern);
        *out = (il + 1) % pattern != 0;
        return GK_OK;
    }
    char key[48], type[32];
    snprintf(key, sizeof key, "layer_types.%lld", (long long)il);
    if ((st = gk_config_get_string(c, key, NULL, type, sizeof type, err)) != GK_OK)
        return st;
    if (!strcmp(type, "sliding_attention") || !strcmp(type, "full_attention")) {
        *out = type[0] == 's';
        return GK_OK;
    }
    if (!type[0])
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'layer_types' has fewer entries than "
                          "num_hidden_layers (%lld): '%s' is missing", (long long)c->n_layer, key);
    return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: '%s' \"%s\" is not supported "
                      "(known: sliding_attention, full_attention)", key, type);
}

/* Gemma3TextConfig's defaults where the generic parser has others or none:
 * hidden_activation (not hidden_act) picks the MLP's GELU, head_dim 256,
 * sliding_window 4096, the full layers' theta 10^6 (the per-layer-type
 * full_attention theta wins over a top-level rope_theta, as in
 * convert_rope_params_to_dict). */
static gk_status adjust_config(gk_config *c, gk_err *err)
{
    char act[32];
    double theta;
    gk_status st = gk_config_get_string(c, "hidden_activation", "gelu_pytorch_tanh", act, sizeof act, err);
    if (st != GK_OK)
        return st;
    if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_fast"))
        c->act = GK_ACT_GELU_TANH;
    else if (!strcmp(act, "gelu"))
        c->act = GK_ACT_GELU;
    else
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: 'hidden_activation' \"%s\" is not supported "
                          "(known: gelu_pytorch_tanh, gelu, gelu_new, gelu_fast)", act);
    if (!gk_config_has(c, "head_dim"))
        c->head_dim = 256;
    if (!gk_config_has(c, "sliding_window") && !gk_config_is_null(c, "sliding_window"))
        c->sliding_window = 4096;
    const char *full_theta = "rope_parameters.full_attention.rope_theta";
    if (gk_config_has(c, full_theta)) {
        if ((st = gk_config_get_float(c, full_theta, 1e6, &theta, err)) != GK_OK)
            return st;
        c->rope_theta = (float)theta;
    } else if (!gk_config_has(c, "rope_theta")) {
        c->rope_theta = 1e6f;
    }
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    gk_status st;
    bool bidir, sliding;
    double v;
    gk_rope_opts ro;
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: gemma3 models use rms_norm_eps, not a layer norm");
    if ((st = gk_config_get_bool(c, "use_bidirectional_attention", false, &bidir, err)) != GK_OK)
        return st;
    if (bidir)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: use_bidirectional_attention true is not supported (causal only)");
    if (gk_config_has(c, "rope_parameters") && !per_layer_rope(c))
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "config.json: 'rope_parameters' of a gemma3_text model must be "
                          "keyed by layer type (full_attention, sliding_attention)");
    /* transformers makes the sliding mask for every Gemma 3 and raises without a window */
    if (c->sliding_window < 1)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'sliding_window' must be an integer >= 1, got null");
    if ((st = gk_config_get_float(c, "query_pre_attn_scalar", 256.0, &v, err)) != GK_OK)
        return st;
    if (!(v > 0.0 && isfinite(v)))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'query_pre_attn_scalar' must be a number > 0, got %g", v);
    if ((st = gk_config_get_float(c, "final_logit_softcapping", 0.0, &v, err)) != GK_OK)
        return st;
    if (gk_config_has(c, "final_logit_softcapping") && !(v > 0.0 && isfinite(v)))
        return gk_err_set(err, GK_ERR_CONFIG,
                          "config.json: 'final_logit_softcapping' must be a number > 0 or null, got %g", v);
    if ((st = sliding_rope(c, &ro, err)) != GK_OK)
        return st;
    for (int64_t il = 0; il < c->n_layer; il++)
        if ((st = layer_sliding(c, il, &sliding, err)) != GK_OK)
            return st;
    char extra[48];
    snprintf(extra, sizeof extra, "layer_types.%lld", (long long)c->n_layer);
    if (gk_config_has(c, extra))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'layer_types' has more entries than "
                          "num_hidden_layers (%lld)", (long long)c->n_layer);
    return GK_OK;
}

/* ------------------------------------------------------------------ graph */

/* What the layers share, read once per build from the checked config. */
typedef struct layer_cfg {
    float scale;               /* query_pre_attn_scalar^-0.5 */
    gk_rope_opts local_rope;   /* the sliding layers' RoPE */
} layer_cfg;

static gk_tensor *norm(gk_builder *b, gk_tensor *x, gk_tensor *w, int64_t group, const char *name, int il)
{
    return gk_build_rms_norm_offset(b, x, w, group, gk_builder_config(b)->norm_eps, 1.0f, name, il);
}

/* One decoder layer, as Gemma3DecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, const layer_cfg *lc, bool sliding, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    /* attention: x + post_attention_norm(o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))) */
    gk_tensor *h = norm(b, x, W(GK_W_ATTN_NORM), 0, "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = norm(b, q, W(GK_W_Q_NORM), c->head_dim, "q_norm", il);
    k = norm(b, k, W(GK_W_K_NORM), c->head_dim, "k_norm", il);
    const gk_rope_opts *ro = sliding ? &lc->local_rope : NULL; /* full layers: the config's RoPE */
    q = gk_build_rope_ex(b, q, ro, "q_rope", il);
    k = gk_build_rope_ex(b, k, ro, "k_rope", il);
    gk_attn_opts o = {.scale = lc->scale, .softcap = 0.0f, .window = sliding ? c->sliding_window : 0};
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, &o);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    a = norm(b, a, gk_builder_weight_named(b, POST_ATTN_NORM, il), 0, "attn_post_norm", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* MLP: x + post_feedforward_norm(down(gelu(gate(h)) * up(h))) */
    h = norm(b, x, W(GK_W_FFN_NORM), 0, "ffn_norm", il);
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gk_build_geglu(b, g, u, c->act == GK_ACT_GELU_TANH, "geglu", il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
    f = norm(b, f, gk_builder_weight_named(b, POST_FFN_NORM, il), 0, "ffn_post_norm", il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    gk_status st;
    double scalar;
    layer_cfg lc;
    if ((st = gk_config_get_float(c, "query_pre_attn_scalar", 256.0, &scalar, err)) != GK_OK ||
        (st = sliding_rope(c, &lc.local_rope, err)) != GK_OK)
        return st;
    lc.scale = (float)pow(scalar, -0.5);

    /* Gemma3TextScaledWordEmbedding: rows * sqrt(hidden_size) in float32 */
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "tok_embd", -1);
    x = gk_build_scale(b, x, (float)sqrt((double)c->n_embd), 0.0f, "embd", -1);
    for (int il = 0; il < c->n_layer; il++) {
        bool sliding;
        if ((st = layer_sliding(c, il, &sliding, err)) != GK_OK)
            return st;
        x = block(b, x, &lc, sliding, il);
    }
    *out = norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1), 0, "out_norm", -1);
    return GK_OK;
}

/* Gemma3ForCausalLM's head: lm_head, then final_logit_softcapping when set. */
static gk_status build_head(gk_builder *b, gk_tensor *hidden, gk_tensor **out, gk_err *err)
{
    double cap;
    gk_status st = gk_config_get_float(gk_builder_config(b), "final_logit_softcapping", 0.0, &cap, err);
    if (st != GK_OK)
        return st;
    if (cap == 0.0) {
        *out = gk_build_linear(b, hidden, gk_builder_head_weight(b), NULL, "logits", -1);
        return GK_OK;
    }
    gk_tensor *logits = gk_build_linear(b, hidden, gk_builder_head_weight(b), NULL, "lm_head", -1);
    *out = gk_build_softcap(b, logits, (float)cap, "logits", -1);
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
    .build_head = build_head,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "gemma3",
                 "Gemma 3 text decoders (QK-norm, local and global RoPE, sliding-window layers)", NULL, NULL, &ops)
