/* gemma2.c - Gemma 2 (gemma-2-2b, -9b, -27b and their -it).
 *
 * Gemma's decoder (embeddings scaled by sqrt(hidden_size), RMSNorm as
 * x / rms * (1 + w) in float32, a GeGLU MLP) with what modeling_gemma2.py
 * adds: four norms per layer (the attention and MLP outputs are normed too,
 * before their residual adds), attention scaled by query_pre_attn_scalar^-0.5
 * with its scores capped at attn_logit_softcapping, a sliding window of
 * sliding_window tokens on the layers layer_types calls "sliding_attention",
 * and the logits capped at final_logit_softcapping. Defaults are
 * Gemma2Config's: a key that is absent takes them, a key written as null
 * turns the feature off (as None does in transformers).
 * Not here: use_bidirectional_attention (refused).
 */
#include <gk/gk_plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define L GK_TF_LAYER
#define OPT GK_TF_OPTIONAL
#define BIAS GK_TF_COND_BIAS

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

static const char *const hf_archs[] = {"Gemma2ForCausalLM", NULL};
static const char *const model_types[] = {"gemma2", NULL};
static const char *const prefixes[] = {"", NULL};

static const gk_model_spec spec = {
    .name = "gemma2",
    .aliases = NULL,
    .hf_architectures = hf_archs,
    .model_types = model_types,
    .norm = GK_NORM_RMS,
    .act = GK_ACT_GELU_TANH,
    .use_rope = true,
    .use_qk_norm = false,
    .use_pos_embed = false,
};

/* ------------------------------------------------------------ config.json */

/* A softcap: the config's value, def when absent, 0 (off) when null. */
static gk_status read_softcap(const gk_config *c, const char *key, double def, double *out, gk_err *err)
{
    if (!gk_config_has(c, key)) {
        *out = gk_config_is_null(c, key) ? 0.0 : def;
        return GK_OK;
    }
    gk_status st = gk_config_get_float(c, key, def, out, err);
    if (st == GK_OK && !(*out > 0.0 && isfinite(*out)))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' must be a number > 0 or null, got %g", key, *out);
    return st;
}

/* Whether layer il attends through the sliding window: layer_types[il], or
 * Gemma2Config's default when layer_types is absent (every other layer,
 * starting with the first). */
static gk_status layer_sliding(const gk_config *c, int64_t il, bool *out, gk_err *err)
{
    if (!gk_config_has(c, "layer_types")) {
        *out = (il + 1) % 2 != 0;
        return GK_OK;
    }
    char key[48], type[32];
    snprintf(key, sizeof key, "layer_types.%lld", (long long)il);
    gk_status st = gk_config_get_string(c, key, NULL, type, sizeof type, err);
    if (st != GK_OK)
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

/* Gemma2Config's defaults where the generic parser has others or none:
 * hidden_activation (not hidden_act) picks the MLP's GELU, head_dim 256,
 * sliding_window 4096. */
static gk_status adjust_config(gk_config *c, gk_err *err)
{
    char act[32];
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
    return GK_OK;
}

static gk_status check_config(const gk_config *c, gk_err *err)
{
    gk_status st;
    bool bidir, sliding;
    double cap, scalar;
    if (c->norm != GK_NORM_RMS)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: gemma2 models use rms_norm_eps, not a layer norm");
    if ((st = gk_config_get_bool(c, "use_bidirectional_attention", false, &bidir, err)) != GK_OK)
        return st;
    if (bidir)
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: use_bidirectional_attention true is not supported (causal only)");
    /* transformers makes the sliding mask for every Gemma 2 and raises without a window */
    if (c->sliding_window < 1)
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'sliding_window' must be an integer >= 1, got null");
    if ((st = gk_config_get_float(c, "query_pre_attn_scalar", 256.0, &scalar, err)) != GK_OK)
        return st;
    if (!(scalar > 0.0 && isfinite(scalar)))
        return gk_err_set(err, GK_ERR_CONFIG, "config.json: 'query_pre_attn_scalar' must be a number > 0, got %g",
                          scalar);
    if ((st = read_softcap(c, "attn_logit_softcapping", 50.0, &cap, err)) != GK_OK ||
        (st = read_softcap(c, "final_logit_softcapping", 30.0, &cap, err)) != GK_OK)
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

/* What every layer shares, read once per build from the checked config. */
typedef struct attn_cfg {
    float scale;          /* query_pre_attn_scalar^-0.5 */
    float softcap;        /* attn_logit_softcapping, 0 = off */
} attn_cfg;

static gk_tensor *norm(gk_builder *b, gk_tensor *x, gk_tensor *w, const char *name, int il)
{
    return gk_build_rms_norm_offset(b, x, w, 0, gk_builder_config(b)->norm_eps, 1.0f, name, il);
}

/* One decoder layer, as Gemma2DecoderLayer.forward. */
static gk_tensor *block(gk_builder *b, gk_tensor *x, const attn_cfg *ac, bool sliding, int il)
{
#define W(role) gk_builder_weight(b, role, il)
    const gk_config *c = gk_builder_config(b);
    /* attention: x + post_attention_norm(o_proj(attn(rope(q), rope(k), v))) */
    gk_tensor *h = norm(b, x, W(GK_W_ATTN_NORM), "attn_norm", il);
    gk_tensor *q = gk_build_linear(b, h, W(GK_W_Q), W(GK_W_Q_B), "q", il);
    gk_tensor *k = gk_build_linear(b, h, W(GK_W_K), W(GK_W_K_B), "k", il);
    gk_tensor *v = gk_build_linear(b, h, W(GK_W_V), W(GK_W_V_B), "v", il);
    q = gk_build_rope(b, q, "q_rope", il);
    k = gk_build_rope(b, k, "k_rope", il);
    gk_attn_opts o = {.scale = ac->scale, .softcap = ac->softcap, .window = sliding ? c->sliding_window : 0};
    gk_tensor *a = gk_build_attn_ex(b, q, k, v, il, &o);
    a = gk_build_linear(b, a, W(GK_W_O), W(GK_W_O_B), "attn_out", il);
    a = norm(b, a, gk_builder_weight_named(b, POST_ATTN_NORM, il), "attn_post_norm", il);
    x = gk_build_add(b, x, a, "attn_res", il);

    /* MLP: x + post_feedforward_norm(down(gelu(gate(h)) * up(h))) */
    h = norm(b, x, W(GK_W_FFN_NORM), "ffn_norm", il);
    gk_tensor *g = gk_build_linear(b, h, W(GK_W_GATE), NULL, "gate", il);
    gk_tensor *u = gk_build_linear(b, h, W(GK_W_UP), NULL, "up", il);
    gk_tensor *f = gk_build_geglu(b, g, u, c->act == GK_ACT_GELU_TANH, "geglu", il);
    f = gk_build_linear(b, f, W(GK_W_DOWN), NULL, "ffn_out", il);
    f = norm(b, f, gk_builder_weight_named(b, POST_FFN_NORM, il), "ffn_post_norm", il);
    return gk_build_add(b, x, f, "l_out", il);
#undef W
}

static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    const gk_config *c = gk_builder_config(b);
    gk_status st;
    double scalar, cap;
    if ((st = gk_config_get_float(c, "query_pre_attn_scalar", 256.0, &scalar, err)) != GK_OK ||
        (st = read_softcap(c, "attn_logit_softcapping", 50.0, &cap, err)) != GK_OK)
        return st;
    attn_cfg ac = {.scale = (float)pow(scalar, -0.5), .softcap = (float)cap};

    /* Gemma2TextScaledWordEmbedding: rows * sqrt(hidden_size) in float32 */
    gk_tensor *x = gk_build_get_rows(b, gk_builder_weight(b, GK_W_TOK_EMBD, -1), gk_builder_ids(b), "tok_embd", -1);
    x = gk_build_scale(b, x, (float)sqrt((double)c->n_embd), 0.0f, "embd", -1);
    for (int il = 0; il < c->n_layer; il++) {
        bool sliding;
        if ((st = layer_sliding(c, il, &sliding, err)) != GK_OK)
            return st;
        x = block(b, x, &ac, sliding, il);
    }
    *out = norm(b, x, gk_builder_weight(b, GK_W_OUT_NORM, -1), "out_norm", -1);
    return GK_OK;
}

/* Gemma2ForCausalLM's head: lm_head, then final_logit_softcapping. */
static gk_status build_head(gk_builder *b, gk_tensor *hidden, gk_tensor **out, gk_err *err)
{
    double cap;
    gk_status st = read_softcap(gk_builder_config(b), "final_logit_softcapping", 30.0, &cap, err);
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

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "gemma2",
                 "Gemma 2 decoders (four norms a layer, sliding-window layers, logit softcaps)", NULL, NULL, &ops)
