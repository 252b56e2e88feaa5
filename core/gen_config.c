/* gen_config.c - a model's generation_config.json applied to gk_gen_opts, with
 * where each value came from.
 *
 * What it is: transformers' reading of the file (GenerationConfig): do_sample
 * decides greedy or sampling, whatever temperature says; the sampling defaults
 * (temperature 1, top_k 50, top_p 1) hold only when do_sample is true; max_new_tokens
 * wins over max_length, which counts the prompt; a repetition_penalty covers the
 * whole sequence. Values are checked against gk_gen_opts' ranges and a bad one is
 * an error naming the file and the key.
 * What it is not: beam search or any other decoding gk does not do (such keys are
 * listed in gk_gen_sources.ignored, not refused), nor the bos/eos reading of
 * gk_config_load (config.c), which also falls back to config.json.
 */
#include "gk_internal.h"
#include "gk_json.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* transformers' GenerationConfig defaults, used when do_sample is true */
#define HF_TEMPERATURE 1.0f
#define HF_TOP_K 50
#define HF_TOP_P 1.0f

typedef struct reader {
    const char *file;
    const cJSON *root;
    gk_err *err;
} reader;

/* ------------------------------------------------------------ values */

/* The key's value; NULL when absent or null. */
static const cJSON *get(const reader *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static gk_status bad(const reader *r, const char *key, const cJSON *v, const char *what)
{
    char val[64];
    gk_json_describe(v, val, sizeof val);
    return gk_err_set(r->err, GK_ERR_CONFIG, "%s: '%s' must be %s, got %s", r->file, key, what, val);
}

/* A number in [lo, hi] (finite, fits a float); *set tells whether the key was there. */
static gk_status read_num(const reader *r, const char *key, double lo, double hi, bool lo_open,
                          const char *what, float *out, bool *set)
{
    const cJSON *v = get(r, key);
    *set = false;
    if (!v)
        return GK_OK;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        return bad(r, key, v, what);
    *out = (float)d;
    *set = true;
    return GK_OK;
}

/* An integer in [lo, 2^31). */
static gk_status read_int(const reader *r, const char *key, const cJSON *v, int64_t lo, const char *what,
                          int64_t *out)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)INT32_MAX)
        return bad(r, key, v, what);
    *out = (int64_t)d;
    return GK_OK;
}

/* eos_token_id: an id or a list of ids (empty: none). */
static gk_status read_eos(const reader *r, gk_gen_sources *src)
{
    const cJSON *v = get(r, "eos_token_id");
    if (!v)
        return GK_OK;
    if (!cJSON_IsArray(v)) {
        gk_status st = read_int(r, "eos_token_id", v, 0, "a token id (an integer >= 0) or a list of them",
                                &src->eos_ids[0]);
        if (st == GK_OK) {
            src->n_eos = 1;
            src->eos = GK_GEN_SRC_FILE;
        }
        return st;
    }
    int n = cJSON_GetArraySize(v);
    if (n > GK_MAX_EOS)
        return gk_err_set(r->err, GK_ERR_UNSUPPORTED, "%s: 'eos_token_id' lists %d ids, more than the %d supported",
                          r->file, n, GK_MAX_EOS);
    for (int i = 0; i < n; i++) {
        char key[40];
        snprintf(key, sizeof key, "eos_token_id[%d]", i);
        gk_status st = read_int(r, key, cJSON_GetArrayItem(v, i), 0, "a token id (an integer >= 0)", &src->eos_ids[i]);
        if (st != GK_OK)
            return st;
    }
    src->n_eos = n;
    src->eos = GK_GEN_SRC_FILE;
    return GK_OK;
}

/* Append "; what" to src->ignored (cut when full: it is a note). */
static void note(gk_gen_sources *src, const char *fmt, ...)
{
    size_t used = strlen(src->ignored);
    if (used + 3 >= sizeof src->ignored)
        return;
    if (used)
        used += (size_t)snprintf(src->ignored + used, sizeof src->ignored - used, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(src->ignored + used, sizeof src->ignored - used, fmt, ap);
    va_end(ap);
}

/* Keys of decoding strategies gk does not implement, with their no-op value. */
static void note_unsupported(const reader *r, gk_gen_sources *src)
{
    static const struct { const char *key; double off; } keys[] = {
        {"num_beams", 1}, {"num_beam_groups", 1}, {"penalty_alpha", 0}, {"no_repeat_ngram_size", 0},
        {"typical_p", 1}, {"epsilon_cutoff", 0}, {"eta_cutoff", 0}, {"diversity_penalty", 0},
        {"encoder_repetition_penalty", 1}, {"guidance_scale", 1}, {"top_a", 0},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = get(r, keys[i].key);
        if (v && !(cJSON_IsNumber(v) && v->valuedouble == keys[i].off)) {
            char val[40];
            gk_json_describe(v, val, sizeof val);
            note(src, "%s %s", keys[i].key, val);
        }
    }
}

/* ------------------------------------------------------------ the file */

static gk_status apply(const reader *r, gk_gen_opts *o, gk_gen_sources *src)
{
    gk_status st;
    bool sample = false, set;
    const cJSON *v = get(r, "do_sample");
    if (v) {
        if (!cJSON_IsBool(v))
            return bad(r, "do_sample", v, "true or false");
        sample = cJSON_IsTrue(v);
        src->do_sample = GK_GEN_SRC_FILE;
    }
    src->do_sample_value = sample;

    float temp = HF_TEMPERATURE, top_p = HF_TOP_P, min_p = 0, rep = 1;
    if ((st = read_num(r, "temperature", 0, FLT_MAX, false, "a finite number >= 0", &temp, &set)) != GK_OK)
        return st;
    if (sample) {
        o->temperature = temp;
    } else {
        if (set && temp != HF_TEMPERATURE)
            note(src, "temperature %g (do_sample is %s)", (double)temp, v ? "false" : "absent");
        o->temperature = 0.0f; /* greedy */
    }
    /* the decision is the file's (do_sample's absence means greedy there) */
    src->temperature = GK_GEN_SRC_FILE;

    v = get(r, "top_k");
    if (v) {
        int64_t k;
        if ((st = read_int(r, "top_k", v, 0, "an integer >= 0 (0 = off)", &k)) != GK_OK)
            return st;
        o->top_k = (int)k;
        src->top_k = GK_GEN_SRC_FILE;
    } else if (sample) {
        o->top_k = HF_TOP_K;
        src->top_k = GK_GEN_SRC_FILE;
    }
    if ((st = read_num(r, "top_p", 0, 1, true, "a number in (0, 1]", &top_p, &set)) != GK_OK)
        return st;
    if (set || sample) {
        o->top_p = top_p;
        src->top_p = GK_GEN_SRC_FILE;
    }
    if ((st = read_num(r, "min_p", 0, 1, false, "a number in [0, 1]", &min_p, &set)) != GK_OK)
        return st;
    if (set || sample) {
        o->min_p = min_p;
        src->min_p = GK_GEN_SRC_FILE;
    }
    if ((st = read_num(r, "repetition_penalty", 0, FLT_MAX, true, "a finite number > 0", &rep, &set)) != GK_OK)
        return st;
    if (set) {
        o->repetition_penalty = rep;
        src->repetition_penalty = GK_GEN_SRC_FILE;
        o->penalty_last_n = -1; /* transformers penalizes every id of the sequence */
        src->penalty_last_n = GK_GEN_SRC_FILE;
    }

    v = get(r, "max_new_tokens");
    if (v) {
        if ((st = read_int(r, "max_new_tokens", v, 0, "an integer >= 0", &o->max_new_tokens)) != GK_OK)
            return st;
        src->max_new_tokens = GK_GEN_SRC_FILE;
    } else if ((v = get(r, "max_length"))) {
        if ((st = read_int(r, "max_length", v, 1, "an integer >= 1", &src->max_length)) != GK_OK)
            return st;
    }
    if ((st = read_eos(r, src)) != GK_OK)
        return st;
    if (src->eos == GK_GEN_SRC_FILE) {
        o->n_eos = src->n_eos;
        o->eos_ids = src->n_eos ? src->eos_ids : NULL;
    }
    note_unsupported(r, src);
    return GK_OK;
}

static void sources_reset(gk_gen_sources *src)
{
    memset(src, 0, sizeof *src);
    src->max_length = -1;
}

gk_status gk_gen_config_parse(const char *json, const char *name, gk_gen_opts *opts, gk_gen_sources *src,
                              gk_err *err)
{
    if (!json || !opts || !src)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_gen_config_parse: %s is NULL",
                          !json ? "json" : !opts ? "opts" : "src");
    reader r = {.file = name ? name : "generation_config.json", .err = err};
    gk_json_error je = {0};
    cJSON *root = gk_json_parse(json, strlen(json), &je);
    if (!root) {
        int line, col;
        gk_json_line_col(json, je.at, &line, &col);
        return gk_err_set(err, GK_ERR_FORMAT, "%s: %s at line %d, column %d (byte %zu)", r.file,
                          je.why ? je.why : "invalid JSON", line, col, je.at);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return gk_err_set(err, GK_ERR_FORMAT, "%s: top level is not a JSON object", r.file);
    }
    r.root = root;
    gk_gen_opts o = *opts;
    gk_gen_sources s;
    sources_reset(&s);
    gk_status st = apply(&r, &o, &s);
    cJSON_Delete(root);
    if (st != GK_OK)
        return st;
    *src = s;
    if (o.eos_ids == s.eos_ids) /* point into the caller's copy, not ours */
        o.eos_ids = src->eos_ids;
    *opts = o;
    return GK_OK;
}

gk_status gk_gen_config_load(const char *model_dir, gk_gen_opts *opts, gk_gen_sources *src, gk_err *err)
{
    if (!model_dir || !opts || !src)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_gen_config_load: %s is NULL",
                          !model_dir ? "model_dir" : !opts ? "opts" : "src");
    char *dir = gk_path_is_dir(model_dir) ? gk_strdup(model_dir) : gk_path_dirname(model_dir);
    char *path = dir ? gk_path_join(dir, "generation_config.json") : NULL;
    char *text = NULL;
    gk_status st = GK_OK;
    if (!path) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: out of memory", model_dir);
        goto out;
    }
    /* absent is fine; present but unreadable (a folder, a symlink loop) is not */
    struct stat sb;
    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        sources_reset(src);
        goto out;
    }
    if ((st = gk_read_file(path, &text, NULL, err)) != GK_OK)
        goto out;
    st = gk_gen_config_parse(text, path, opts, src, err);
out:
    free(text);
    free(path);
    free(dir);
    return st;
}

const char *gk_gen_src_str(gk_gen_src s)
{
    switch (s) {
    case GK_GEN_SRC_DEFAULT: return "default";
    case GK_GEN_SRC_FILE: return "generation_config.json";
    case GK_GEN_SRC_USER: return "user";
    }
    return "?";
}
