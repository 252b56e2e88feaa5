/* config.c - a HuggingFace config.json (and generation_config.json) read into a gk_config.
 *
 * What it is: key lookup with transformers' spellings (GPT-2's n_embd, n_layer, ...),
 * transformers' defaults for absent keys, both rope layouts (classic "rope_scaling" and
 * transformers 5 "rope_parameters"), and type/range checks whose messages start with the
 * file and name the key and the value seen.
 * What it is not: an architecture's hparams parser (plugins read their extra keys
 * themselves), a cross-check against the weights (the model loader does that), or a
 * tokenizer config reader. Integers are bounded to [0, 2^31) so that callers may multiply
 * two of them in int64 without overflow. JSON has one number type: 2.0 passes as 2.
 */
#include "gk_internal.h"

#include "gk_json.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ JSON helpers */

/* Where messages come from: the file name ("config.json" or a path) and the sink. */
typedef struct src {
    const char *file;
    gk_err *err;
} src;

static gk_status parse_json(const src *s, const char *text, cJSON **out)
{
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(text, &end, true);
    if (*out) {
        if (cJSON_IsObject(*out))
            return GK_OK;
        cJSON_Delete(*out);
        *out = NULL;
        return gk_err_set(s->err, GK_ERR_FORMAT, "%s: top level is not a JSON object", s->file);
    }
    if (!end || end < text)
        return gk_err_set(s->err, GK_ERR_FORMAT, "%s: invalid JSON", s->file);
    int line, col;
    gk_json_line_col(text, (size_t)(end - text), &line, &col);
    char near[24];
    size_t k = 0;
    for (const char *q = end; *q && *q != '\n' && k + 1 < sizeof near; q++)
        near[k++] = (*q >= 0x20 && *q < 0x7f) ? *q : '?';
    near[k] = '\0';
    const char *pre = *end == '\0' ? " at end of text" : k ? " near '" : "";
    return gk_err_set(s->err, GK_ERR_FORMAT,
                      "%s: invalid JSON at line %d, column %d (byte %zu)%s%s%s", s->file, line,
                      col, (size_t)(end - text), pre, near, k ? "'" : "");
}


static bool is_absent(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

/* The item under `name`, else under `alias` (may be NULL); a non-null value wins over
 * a null one. *used gets the key found (name when neither is there). */
static const cJSON *get_alias(const cJSON *obj, const char *name, const char *alias,
                              const char **used)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, name);
    const cJSON *b = alias ? cJSON_GetObjectItemCaseSensitive(obj, alias) : NULL;
    *used = name;
    if (!is_absent(a) || (is_absent(b) && a))
        return a;
    if (b)
        *used = alias;
    return b;
}

static const cJSON *get(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* An integer in [min, 2^31). */
static gk_status read_int(const src *s, const char *key, const cJSON *v, int64_t min,
                          int64_t *out)
{
    char val[64];
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d == floor(d) && d >= (double)min && d <= (double)INT32_MAX) {
            *out = (int64_t)d;
            return GK_OK;
        }
        if (isfinite(d) && d == floor(d) && d > (double)INT32_MAX) {
            gk_json_describe(v, val, sizeof val);
            return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' is too large (%s; the limit is %d)",
                              s->file, key, val, INT32_MAX);
        }
    }
    gk_json_describe(v, val, sizeof val);
    return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a %s integer, got %s", s->file,
                      key, min > 0 ? "positive" : "non-negative", val);
}

/* A finite number that fits a float: > 0, or >= 0 when allow_zero. */
static gk_status read_float(const src *s, const char *key, const cJSON *v, bool allow_zero,
                            float *out)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d <= FLT_MAX && (d > 0 || (allow_zero && d == 0))) {
            *out = (float)d;
            return GK_OK;
        }
    }
    char val[64];
    gk_json_describe(v, val, sizeof val);
    return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a %s number, got %s", s->file, key,
                      allow_zero ? "non-negative" : "positive", val);
}

/* Absent or null leaves *out as it is. */
static gk_status read_bool(const src *s, const char *key, const cJSON *v, bool *out)
{
    if (is_absent(v))
        return GK_OK;
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return GK_OK;
    }
    char val[64];
    gk_json_describe(v, val, sizeof val);
    return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be true or false, got %s", s->file,
                      key, val);
}

/* Absent or null leaves *out as it is. */
static gk_status read_str(const src *s, const char *key, const cJSON *v, char *out, size_t cap)
{
    if (is_absent(v))
        return GK_OK;
    char val[64];
    gk_json_describe(v, val, sizeof val);
    if (!cJSON_IsString(v))
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a string, got %s", s->file,
                          key, val);
    if (strlen(v->valuestring) >= cap)
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' is longer than %zu characters: %s",
                          s->file, key, cap - 1, val);
    snprintf(out, cap, "%s", v->valuestring);
    return GK_OK;
}

/* A required positive integer under name (or alias). *used may be NULL. */
static gk_status req_int(const src *s, const cJSON *root, const char *name, const char *alias,
                         int64_t *out, const char **used)
{
    const char *key;
    const cJSON *v = get_alias(root, name, alias, &key);
    if (used)
        *used = key;
    if (!v) {
        if (alias)
            return gk_err_set(s->err, GK_ERR_CONFIG, "%s: missing key '%s' (or '%s')", s->file,
                              name, alias);
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: missing key '%s'", s->file, name);
    }
    return read_int(s, key, v, 1, out);
}

/* ------------------------------------------------------------ token ids */

/* eos_token_id: an id or a list of ids. Absent or null leaves *n at its value. */
static gk_status read_eos(const src *s, const cJSON *root, gk_config *c)
{
    const cJSON *v = get(root, "eos_token_id");
    if (is_absent(v))
        return GK_OK;
    if (!cJSON_IsArray(v)) {
        gk_status st = read_int(s, "eos_token_id", v, 0, &c->eos_ids[0]);
        if (st == GK_OK)
            c->n_eos = 1;
        return st;
    }
    int n = cJSON_GetArraySize(v);
    if (n > GK_MAX_EOS)
        return gk_err_set(s->err, GK_ERR_UNSUPPORTED,
                          "%s: 'eos_token_id' lists %d ids, more than the %d supported", s->file,
                          n, GK_MAX_EOS);
    int64_t ids[GK_MAX_EOS];
    for (int i = 0; i < n; i++) {
        char key[40];
        snprintf(key, sizeof key, "eos_token_id[%d]", i);
        gk_status st = read_int(s, key, cJSON_GetArrayItem(v, i), 0, &ids[i]);
        if (st != GK_OK)
            return st;
    }
    memcpy(c->eos_ids, ids, sizeof ids[0] * (size_t)n);
    c->n_eos = n;
    return GK_OK;
}

static gk_status read_bos(const src *s, const cJSON *root, gk_config *c)
{
    const cJSON *v = get(root, "bos_token_id");
    if (is_absent(v))
        return GK_OK;
    return read_int(s, "bos_token_id", v, 0, &c->bos_id);
}

/* ------------------------------------------------------------ rope */

/* A required number of a rope object: "rope_scaling.factor". */
static gk_status rope_num(const src *s, const cJSON *obj, const char *obj_key, const char *name,
                          float *out)
{
    char key[80];
    snprintf(key, sizeof key, "%s.%s", obj_key, name);
    const cJSON *v = get(obj, name);
    if (!v)
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: missing key '%s'", s->file, key);
    return read_float(s, key, v, false, out);
}

/* rope_theta (top level or in rope_parameters) and the scaling rule, from "rope_parameters"
 * (transformers 5) or "rope_scaling" (earlier). */
static gk_status read_rope(const src *s, const cJSON *root, gk_config *c)
{
    gk_status st;
    const cJSON *params = get(root, "rope_parameters");
    const cJSON *scaling = get(root, "rope_scaling");
    if (!is_absent(params) && !cJSON_IsObject(params)) {
        char val[64];
        gk_json_describe(params, val, sizeof val);
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: 'rope_parameters' must be an object, got %s",
                          s->file, val);
    }
    if (!is_absent(scaling) && !cJSON_IsObject(scaling)) {
        char val[64];
        gk_json_describe(scaling, val, sizeof val);
        return gk_err_set(s->err, GK_ERR_CONFIG,
                          "%s: 'rope_scaling' must be an object or null, got %s", s->file, val);
    }

    const char *obj_key = "rope_parameters";
    const cJSON *obj = is_absent(params) ? NULL : params;
    if (obj && !get(obj, "rope_type") && !get(obj, "type") && !get(obj, "rope_theta")) {
        /* transformers 5 keys rope_parameters by layer type for mixed-attention
         * models: the config's rope is that of full-attention layers, the
         * architecture reads the others (gk_config_get_*) */
        const cJSON *full = get(obj, "full_attention");
        if (cJSON_IsObject(full)) {
            obj = params = full;
            obj_key = "rope_parameters.full_attention";
        }
        for (const cJSON *it = obj == full ? NULL : obj->child; it; it = it->next) {
            if (cJSON_IsObject(it)) {
                char q[64];
                return gk_err_set(s->err, GK_ERR_UNSUPPORTED,
                                  "%s: 'rope_parameters' per layer type ('%s', ...) "
                                  "is not supported",
                                  s->file, gk_quote(q, sizeof q, it->string));
            }
        }
    }
    if (!obj && !is_absent(scaling)) {
        obj = scaling;
        obj_key = "rope_scaling";
    }

    c->rope_theta = 10000.0f;
    const cJSON *theta = get(root, "rope_theta");
    char theta_key[64] = "rope_theta";
    if (is_absent(theta) && obj) {
        theta = get(obj, "rope_theta");
        snprintf(theta_key, sizeof theta_key, "%s.rope_theta", obj_key);
    }
    if (!is_absent(theta) && (st = read_float(s, theta_key, theta, false, &c->rope_theta)) != GK_OK)
        return st;

    c->rope_scaling = GK_ROPE_NONE;
    c->rope_factor = 1.0f;
    if (!obj)
        return GK_OK;
    char type_key[48];
    const cJSON *type = get(obj, "rope_type");
    snprintf(type_key, sizeof type_key, "%s.rope_type", obj_key);
    if (!type && (type = get(obj, "type")))
        snprintf(type_key, sizeof type_key, "%s.type", obj_key);
    if (!type) {
        if (obj == params)
            return GK_OK; /* only rope_theta inside: default rope */
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: missing key '%s'", s->file, type_key);
    }
    char val[64];
    gk_json_describe(type, val, sizeof val);
    if (!cJSON_IsString(type))
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a string, got %s", s->file,
                          type_key, val);
    const char *t = type->valuestring;
    if (strcmp(t, "default") == 0)
        return GK_OK;
    if (strcmp(t, "linear") == 0) {
        c->rope_scaling = GK_ROPE_LINEAR;
        return rope_num(s, obj, obj_key, "factor", &c->rope_factor);
    }
    if (strcmp(t, "llama3") != 0)
        return gk_err_set(s->err, GK_ERR_UNSUPPORTED,
                          "%s: '%s' %s is not supported (known: default, linear, llama3)", s->file,
                          type_key, val);
    c->rope_scaling = GK_ROPE_LLAMA3;
    if ((st = rope_num(s, obj, obj_key, "factor", &c->rope_factor)) != GK_OK ||
        (st = rope_num(s, obj, obj_key, "low_freq_factor", &c->rope_low_freq_factor)) != GK_OK ||
        (st = rope_num(s, obj, obj_key, "high_freq_factor", &c->rope_high_freq_factor)) != GK_OK)
        return st;
    if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return gk_err_set(s->err, GK_ERR_CONFIG,
                          "%s: '%s.high_freq_factor' (%g) must be greater than "
                          "'%s.low_freq_factor' (%g)",
                          s->file, obj_key, (double)c->rope_high_freq_factor, obj_key,
                          (double)c->rope_low_freq_factor);
    char key[80];
    snprintf(key, sizeof key, "%s.original_max_position_embeddings", obj_key);
    const cJSON *v = get(obj, "original_max_position_embeddings");
    if (!v)
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: missing key '%s'", s->file, key);
    return read_int(s, key, v, 1, &c->rope_orig_ctx);
}

/* ------------------------------------------------------------ config.json */

static gk_status read_norm_act(const src *s, const cJSON *root, gk_config *c)
{
    gk_status st;
    bool gpt2 = strcmp(c->model_type, "gpt2") == 0;
    /* absent: the defaults of transformers' GPT2Config and LlamaConfig */
    c->norm = gpt2 ? GK_NORM_LAYER : GK_NORM_RMS;
    c->norm_eps = gpt2 ? 1e-5f : 1e-6f;
    c->has_norm_type = false;
    static const struct { const char *key; gk_norm norm; } eps_keys[] = {
        { "rms_norm_eps", GK_NORM_RMS },
        { "layer_norm_epsilon", GK_NORM_LAYER },
        { "layer_norm_eps", GK_NORM_LAYER },
    };
    for (size_t i = 0; i < sizeof eps_keys / sizeof eps_keys[0]; i++) {
        const cJSON *v = get(root, eps_keys[i].key);
        if (is_absent(v))
            continue;
        if ((st = read_float(s, eps_keys[i].key, v, true, &c->norm_eps)) != GK_OK)
            return st;
        c->norm = eps_keys[i].norm;
        c->has_norm_type = true;
        break;
    }

    const char *key;
    const cJSON *v = get_alias(root, "hidden_act", "activation_function", &key);
    c->act = gpt2 ? GK_ACT_GELU_TANH : GK_ACT_SILU;
    if (is_absent(v))
        return GK_OK;
    char val[64];
    gk_json_describe(v, val, sizeof val);
    if (!cJSON_IsString(v))
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a string, got %s", s->file,
                          key, val);
    static const struct { const char *name; gk_act act; } acts[] = {
        { "silu", GK_ACT_SILU },
        { "swish", GK_ACT_SILU },
        { "gelu_new", GK_ACT_GELU_TANH },
        { "gelu_pytorch_tanh", GK_ACT_GELU_TANH },
        { "gelu_fast", GK_ACT_GELU_TANH },
        { "gelu", GK_ACT_GELU },
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        if (strcmp(v->valuestring, acts[i].name) == 0) {
            c->act = acts[i].act;
            return GK_OK;
        }
    }
    return gk_err_set(s->err, GK_ERR_UNSUPPORTED,
                      "%s: '%s' %s is not supported (known: silu, swish, gelu, gelu_new, "
                      "gelu_pytorch_tanh, gelu_fast)", s->file, key, val);
}

static gk_status read_dtype(const src *s, const cJSON *root, gk_config *c)
{
    const char *key;
    const cJSON *v = get_alias(root, "torch_dtype", "dtype", &key);
    c->dtype = GK_DTYPE_F32;
    if (is_absent(v))
        return GK_OK;
    char val[64];
    gk_json_describe(v, val, sizeof val);
    if (!cJSON_IsString(v))
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' must be a string, got %s", s->file,
                          key, val);
    static const struct { const char *name; gk_dtype t; } dtypes[] = {
        { "float32", GK_DTYPE_F32 },
        { "float16", GK_DTYPE_F16 },
        { "bfloat16", GK_DTYPE_BF16 },
    };
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(v->valuestring, dtypes[i].name) == 0) {
            c->dtype = dtypes[i].t;
            return GK_OK;
        }
    }
    return gk_err_set(s->err, GK_ERR_UNSUPPORTED,
                      "%s: '%s' %s is not supported (known: float32, float16, bfloat16)", s->file,
                      key, val);
}

/* Shapes: sizes, heads, head_dim, feed-forward width, trained context. */
static gk_status read_shapes(const src *s, const cJSON *root, gk_config *c)
{
    gk_status st;
    const char *embd_key, *head_key, *kv_key = "num_key_value_heads";
    if ((st = req_int(s, root, "vocab_size", NULL, &c->n_vocab, NULL)) != GK_OK ||
        (st = req_int(s, root, "hidden_size", "n_embd", &c->n_embd, &embd_key)) != GK_OK ||
        (st = req_int(s, root, "num_hidden_layers", "n_layer", &c->n_layer, NULL)) != GK_OK ||
        (st = req_int(s, root, "num_attention_heads", "n_head", &c->n_head, &head_key)) != GK_OK)
        return st;

    const cJSON *v = get(root, kv_key);
    c->n_head_kv = c->n_head;
    if (!is_absent(v) && (st = read_int(s, kv_key, v, 1, &c->n_head_kv)) != GK_OK)
        return st;
    if (c->n_head % c->n_head_kv != 0)
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: '%s' (%lld) must divide '%s' (%lld)",
                          s->file, kv_key, (long long)c->n_head_kv, head_key,
                          (long long)c->n_head);

    v = get(root, "head_dim");
    if (!is_absent(v)) {
        if ((st = read_int(s, "head_dim", v, 1, &c->head_dim)) != GK_OK)
            return st;
    } else if (c->n_embd % c->n_head != 0) {
        return gk_err_set(s->err, GK_ERR_CONFIG,
                          "%s: '%s' (%lld) does not divide '%s' (%lld) and there is no 'head_dim'",
                          s->file, head_key, (long long)c->n_head, embd_key,
                          (long long)c->n_embd);
    } else {
        c->head_dim = c->n_embd / c->n_head;
    }

    const char *key;
    v = get_alias(root, "intermediate_size", "n_inner", &key);
    c->n_ff = 4 * c->n_embd; /* GPT-2's rule for n_inner null */
    if (!is_absent(v) && (st = read_int(s, key, v, 1, &c->n_ff)) != GK_OK)
        return st;

    return req_int(s, root, "max_position_embeddings", "n_positions", &c->n_ctx_train, NULL);
}

static gk_status read_names(const src *s, const cJSON *root, gk_config *c)
{
    gk_status st = read_str(s, "model_type", get(root, "model_type"), c->model_type,
                            sizeof c->model_type);
    if (st != GK_OK)
        return st;
    const cJSON *v = get(root, "architectures");
    if (is_absent(v))
        return GK_OK;
    if (!cJSON_IsArray(v)) {
        char val[64];
        gk_json_describe(v, val, sizeof val);
        return gk_err_set(s->err, GK_ERR_CONFIG, "%s: 'architectures' must be a list, got %s",
                          s->file, val);
    }
    if (cJSON_GetArraySize(v) == 0)
        return GK_OK;
    return read_str(s, "architectures[0]", cJSON_GetArrayItem(v, 0), c->architecture,
                    sizeof c->architecture);
}

static gk_status read_config(const src *s, const cJSON *root, gk_config *c)
{
    gk_status st;
    if ((st = read_names(s, root, c)) != GK_OK || (st = read_shapes(s, root, c)) != GK_OK ||
        (st = read_norm_act(s, root, c)) != GK_OK || (st = read_rope(s, root, c)) != GK_OK ||
        (st = read_dtype(s, root, c)) != GK_OK)
        return st;

    c->tie_word_embeddings = true;     /* PretrainedConfig's default */
    c->attention_bias = strcmp(c->model_type, "qwen2") == 0; /* Qwen2 always has q/k/v bias */
    c->mlp_bias = false;
    if ((st = read_bool(s, "tie_word_embeddings", get(root, "tie_word_embeddings"),
                        &c->tie_word_embeddings)) != GK_OK ||
        (st = read_bool(s, "attention_bias", get(root, "attention_bias"),
                        &c->attention_bias)) != GK_OK ||
        (st = read_bool(s, "mlp_bias", get(root, "mlp_bias"), &c->mlp_bias)) != GK_OK)
        return st;

    /* Sliding-window attention: Mistral applies sliding_window whenever it is
     * set; Qwen2/Qwen3 only with use_sliding_window, false by default. */
    bool use_sw = strcmp(c->model_type, "qwen2") != 0 && strcmp(c->model_type, "qwen3") != 0;
    c->sliding_window = 0;
    if ((st = read_bool(s, "use_sliding_window", get(root, "use_sliding_window"), &use_sw)) != GK_OK)
        return st;
    const cJSON *sw = get(root, "sliding_window");
    if (use_sw && !is_absent(sw) && (st = read_int(s, "sliding_window", sw, 1, &c->sliding_window)) != GK_OK)
        return st;

    c->bos_id = -1;
    c->n_eos = 0;
    if ((st = read_bos(s, root, c)) != GK_OK)
        return st;
    return read_eos(s, root, c);
}

/* Both texts into *out, zeroed scratch the caller keeps only on success; gen_text may be NULL. */
static gk_status parse_texts(const char *cfg_name, const char *cfg_text, const char *gen_name,
                             const char *gen_text, gk_config *out, gk_err *err)
{
    src cs = { cfg_name, err }, gs = { gen_name, err };
    cJSON *root = NULL, *gen = NULL;
    gk_config *c = out; /* zeroed by the caller, which keeps it only on success */
    gk_status st = parse_json(&cs, cfg_text, &root);
    if (st != GK_OK)
        goto out;
    if ((st = read_config(&cs, root, c)) != GK_OK)
        goto out;
    if (gen_text) {
        if ((st = parse_json(&gs, gen_text, &gen)) != GK_OK)
            goto out;
        /* generation_config.json wins where it has the key */
        if ((st = read_bos(&gs, gen, c)) != GK_OK || (st = read_eos(&gs, gen, c)) != GK_OK)
            goto out;
    }
    size_t len = strlen(cfg_text);
    if (len < sizeof c->json)
        memcpy(c->json, cfg_text, len + 1);
out:
    cJSON_Delete(gen);
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------ public */

/* Version 1's struct: everything before the config.json text. */
#define CONFIG_V1_SIZE offsetof(gk_config, json)

/* Copy c into out's first out_size bytes, saying what was filled. */
static void store(gk_config *c, gk_config *out, size_t out_size)
{
    size_t n = out_size < sizeof *c ? out_size : sizeof *c;
    c->struct_size = (uint32_t)n;
    c->version = GK_CONFIG_VERSION;
    memcpy(out, c, n);
}

gk_status gk_config_parse_sized(const char *config_json, const char *gen_json, gk_config *out, size_t out_size,
                                gk_err *err)
{
    if (!out || out_size < CONFIG_V1_SIZE)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_parse: out is %s", out ? "too small" : "NULL");
    memset(out, 0, out_size < sizeof *out ? out_size : sizeof *out);
    if (!config_json)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_parse: config_json is NULL");
    gk_config *c = calloc(1, sizeof *c);
    if (!c)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    gk_status st = parse_texts("config.json", config_json, "generation_config.json", gen_json, c, err);
    if (st == GK_OK)
        store(c, out, out_size);
    free(c);
    return st;
}

gk_status gk_config_load_sized(const char *path, gk_config *out, size_t out_size, gk_err *err)
{
    if (!out || out_size < CONFIG_V1_SIZE)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_load: out is %s", out ? "too small" : "NULL");
    memset(out, 0, out_size < sizeof *out ? out_size : sizeof *out);
    if (!path)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_load: path is NULL");

    gk_status st;
    gk_config *c = NULL;
    char *cfg_path = NULL, *dir = NULL, *gen_path = NULL, *cfg_text = NULL, *gen_text = NULL;
    if (gk_path_is_dir(path)) {
        dir = gk_strdup(path);
        cfg_path = gk_path_join(path, "config.json");
    } else {
        dir = gk_path_dirname(path);
        cfg_path = gk_strdup(path);
    }
    gen_path = dir ? gk_path_join(dir, "generation_config.json") : NULL;
    c = calloc(1, sizeof *c);
    if (!cfg_path || !gen_path || !c) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: out of memory", path);
        goto out_free;
    }
    if ((st = gk_read_file(cfg_path, &cfg_text, NULL, err)) != GK_OK)
        goto out_free;
    /* absent is fine; present but unreadable (a folder, a symlink loop) is an error */
    struct stat sb;
    if ((lstat(gen_path, &sb) == 0 || errno != ENOENT) &&
        (st = gk_read_file(gen_path, &gen_text, NULL, err)) != GK_OK)
        goto out_free;
    st = parse_texts(cfg_path, cfg_text, gen_path, gen_text, c, err);
    if (st == GK_OK)
        store(c, out, out_size);
out_free:
    free(c);
    free(gen_text);
    free(cfg_text);
    free(gen_path);
    free(cfg_path);
    free(dir);
    return st;
}

/* ------------------------------------------------------------ getters */

/* Parse c's config.json text and find key (a dotted path; a number indexes an
 * array). *root is what to cJSON_Delete; *v NULL when absent. */
static gk_status lookup_raw(const gk_config *c, const char *key, cJSON **root, const cJSON **v, gk_err *err)
{
    *root = NULL;
    *v = NULL;
    if (!c || !key)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_get: %s is NULL", c ? "key" : "the config");
    if (c->struct_size < sizeof *c || c->version < 2 || !c->json[0])
        return gk_err_set(err, GK_ERR_UNSUPPORTED,
                          "config.json: key '%s' cannot be read: the config holds no config.json text (a struct from "
                          "an older library, or a file over %d bytes)",
                          key, GK_CONFIG_JSON_MAX - 1);
    *root = cJSON_Parse(c->json);
    if (!*root)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory parsing config.json for key '%s'", key);
    const cJSON *cur = *root;
    char part[128];
    for (const char *p = key; cur;) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof part)
            return gk_err_set(err, GK_ERR_INVALID_ARG, "config.json: malformed key '%s'", key);
        memcpy(part, p, n);
        part[n] = '\0';
        if (cJSON_IsArray(cur)) {
            char *end;
            long idx = strtol(part, &end, 10);
            cur = *end || idx < 0 ? NULL : cJSON_GetArrayItem(cur, (int)idx);
        } else {
            cur = cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, part) : NULL;
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    *v = cur;
    return GK_OK;
}

/* The same, null answered as absent. */
static gk_status lookup(const gk_config *c, const char *key, cJSON **root, const cJSON **v, gk_err *err)
{
    gk_status st = lookup_raw(c, key, root, v, err);
    if (*v && cJSON_IsNull(*v))
        *v = NULL;
    return st;
}

static gk_status wrong_type(const cJSON *v, const char *key, const char *want, gk_err *err)
{
    char val[64];
    gk_json_describe(v, val, sizeof val);
    return gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' must be %s, got %s", key, want, val);
}

bool gk_config_has(const gk_config *c, const char *key)
{
    cJSON *root;
    const cJSON *v;
    bool has = lookup(c, key, &root, &v, NULL) == GK_OK && v;
    cJSON_Delete(root);
    return has;
}

bool gk_config_is_null(const gk_config *c, const char *key)
{
    cJSON *root;
    const cJSON *v;
    bool null = lookup_raw(c, key, &root, &v, NULL) == GK_OK && v && cJSON_IsNull(v);
    cJSON_Delete(root);
    return null;
}

gk_status gk_config_get_int(const gk_config *c, const char *key, int64_t def, int64_t *out, gk_err *err)
{
    cJSON *root;
    const cJSON *v;
    gk_status st = lookup(c, key, &root, &v, err);
    if (st == GK_OK && !v)
        *out = def;
    else if (st == GK_OK && (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
                             fabs(v->valuedouble) > 9007199254740992.0))
        st = wrong_type(v, key, "an integer", err);
    else if (st == GK_OK)
        *out = (int64_t)v->valuedouble;
    cJSON_Delete(root);
    return st;
}

gk_status gk_config_get_float(const gk_config *c, const char *key, double def, double *out, gk_err *err)
{
    cJSON *root;
    const cJSON *v;
    gk_status st = lookup(c, key, &root, &v, err);
    if (st == GK_OK && !v)
        *out = def;
    else if (st == GK_OK && !cJSON_IsNumber(v))
        st = wrong_type(v, key, "a number", err);
    else if (st == GK_OK)
        *out = v->valuedouble;
    cJSON_Delete(root);
    return st;
}

gk_status gk_config_get_bool(const gk_config *c, const char *key, bool def, bool *out, gk_err *err)
{
    cJSON *root;
    const cJSON *v;
    gk_status st = lookup(c, key, &root, &v, err);
    if (st == GK_OK && !v)
        *out = def;
    else if (st == GK_OK && !cJSON_IsBool(v))
        st = wrong_type(v, key, "true or false", err);
    else if (st == GK_OK)
        *out = cJSON_IsTrue(v);
    cJSON_Delete(root);
    return st;
}

gk_status gk_config_get_string(const gk_config *c, const char *key, const char *def, char *out, size_t cap,
                               gk_err *err)
{
    cJSON *root;
    const cJSON *v;
    if (!out || cap == 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_get_string: no room for '%s'", key ? key : "?");
    out[0] = '\0';
    gk_status st = lookup(c, key, &root, &v, err);
    const char *s = st != GK_OK ? NULL : v ? (cJSON_IsString(v) ? v->valuestring : NULL) : (def ? def : "");
    if (st == GK_OK && !s)
        st = wrong_type(v, key, "a string", err);
    else if (st == GK_OK && strlen(s) >= cap)
        st = gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' is longer than %zu bytes", key, cap - 1);
    else if (st == GK_OK)
        memcpy(out, s, strlen(s) + 1);
    cJSON_Delete(root);
    return st;
}

gk_status gk_config_get_array(const gk_config *c, const char *key, double *out, size_t cap, size_t *n, gk_err *err)
{
    cJSON *root;
    const cJSON *v;
    if (!n)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_config_get_array: n is NULL");
    *n = 0;
    gk_status st = lookup(c, key, &root, &v, err);
    if (st == GK_OK && v && !cJSON_IsArray(v))
        st = wrong_type(v, key, "an array of numbers", err);
    size_t len = st == GK_OK && v ? (size_t)cJSON_GetArraySize(v) : 0;
    if (st == GK_OK && len > cap)
        st = gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' has %zu elements, more than the %zu expected", key, len,
                        cap);
    size_t i = 0;
    for (const cJSON *it = v ? v->child : NULL; st == GK_OK && it; it = it->next, i++) {
        if (!cJSON_IsNumber(it)) {
            char k[160];
            snprintf(k, sizeof k, "%s.%zu", key, i);
            st = wrong_type(it, k, "a number", err);
        } else {
            out[i] = it->valuedouble;
        }
    }
    if (st == GK_OK)
        *n = len;
    cJSON_Delete(root);
    return st;
}
