/* tokenizer_load.c - a HuggingFace tokenizer.json read into the pipeline of
 * tokenizer_impl.h, with HF `tokenizers`' own reading rules:
 *   - added token ids are assigned as TokenizerImpl's deserializer does (a content
 *     found in the model vocabulary keeps that id, others follow the largest);
 *   - legacy merges ("a b") are split on the one space, "#version" lines skipped;
 *   - Metaspace's legacy add_prefix_space maps onto prepend_scheme;
 *   - Sequence normalizers, pre-tokenizers, decoders and post-processors are
 *     flattened (a Sequence of post-processors becomes one template).
 * Anything else (another model, normalizer, pre-tokenizer, decoder or post-processor
 * type, BPE dropout, subword prefixes, regex replacements with $ groups) is
 * GK_ERR_UNSUPPORTED naming it: we never load a file we would tokenize differently.
 * Beyond HF's rules, ids must fit int32 and stay near the number of tokens (they
 * index dense tables), and a "\u0000" is kept whole in added-token contents and
 * refused everywhere else (keys, merges, names, patterns), never cut short.
 * What this file is not: tokenizer_config.json (tokenizer.c reads bos/eos there).
 */
#include "tokenizer_impl.h"

#include "gk_json.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ld {
    gk_tokenizer *t;
    const char *f;
    gk_err *err;
    const char *max_tok;      /* the token holding the largest id so far (in the JSON tree) */
    size_t max_tok_len;
} ld;

/* Quote buffer for a token or name read from the file, in a message. */
#define QN 128

static const char *GPT2_RE =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static gk_status nomem(ld *l)
{
    return gk_err_set(l->err, GK_ERR_NOMEM, "%s: out of memory", l->f);
}

static gk_status unsupported(ld *l, const char *what, const char *type)
{
    char q[QN];
    return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: %s type '%s' is not supported", l->f, what,
                      gk_quote(q, sizeof q, type));
}

/* ------------------------------------------------------------ JSON helpers */

/* A string item holding a NUL character ("\u0000"), which a C string would cut. */
static bool has_nul(const cJSON *v)
{
    return cJSON_IsString(v) && gk_json_strlen(v) != strlen(v->valuestring);
}

static gk_status nul_error(ld *l, const char *what, const char *key)
{
    return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" holds a NUL character (\\u0000), which is not supported there",
                      l->f, what, key);
}

/* A string and its length in bytes, NUL characters included. */
static gk_status get_strn(ld *l, const cJSON *o, const char *what, const char *key, bool required,
                          const char **out, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    *len = 0;
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s has no \"%s\"", l->f, what, key);
        return GK_OK;
    }
    if (!cJSON_IsString(v))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" is not a string", l->f, what, key);
    *out = v->valuestring;
    *len = gk_json_strlen(v);
    return GK_OK;
}

/* A string without NUL characters (everything but token contents). */
static gk_status get_str(ld *l, const cJSON *o, const char *what, const char *key, bool required,
                         const char **out)
{
    size_t n;
    gk_status st = get_strn(l, o, what, key, required, out, &n);
    if (st == GK_OK && *out && n != strlen(*out))
        return nul_error(l, what, key);
    return st;
}

static gk_status get_bool(ld *l, const cJSON *o, const char *what, const char *key, bool def,
                          bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!v || cJSON_IsNull(v))
        return GK_OK;
    if (!cJSON_IsBool(v))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" is not true/false", l->f, what, key);
    *out = cJSON_IsTrue(v);
    return GK_OK;
}

static gk_status get_uint(ld *l, const cJSON *o, const char *what, const char *key, bool required,
                          double max, size_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s has no \"%s\"", l->f, what, key);
        return GK_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (d < 0 || d > max || d != (double)(size_t)d)
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" is not an integer in [0, %.0f]",
                          l->f, what, key, max);
    *out = (size_t)d;
    return GK_OK;
}

static gk_status get_type(ld *l, const cJSON *o, const char *what, const char **type)
{
    if (!cJSON_IsObject(o))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s is not an object", l->f, what);
    return get_str(l, o, what, "type", true, type);
}

/* {"String": s} or {"Regex": r} */
static gk_status get_pattern(ld *l, const cJSON *o, const char *what, tk_pattern *p)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(v, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(v, "Regex");
    if (has_nul(s) || has_nul(r))
        return nul_error(l, what, "pattern");
    if (cJSON_IsString(s))
        return tk_pattern_literal(p, s->valuestring, l->err);
    if (cJSON_IsString(r))
        return tk_pattern_regex(p, r->valuestring, l->f, what, l->err);
    return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"pattern\" is not {\"String\": ...} or {\"Regex\": ...}",
                      l->f, what);
}

/* One character as a string ("▁"). */
static gk_status get_char(ld *l, const cJSON *o, const char *what, const char *key, uint32_t *cp)
{
    const char *s;
    gk_status st = get_str(l, o, what, key, true, &s);
    if (st != GK_OK)
        return st;
    size_t n = strlen(s);
    if (n == 0 || tk_utf8_valid_prefix(s, n) != n || tk_utf8_decode(s, cp) != n)
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" is not one character", l->f, what, key);
    return GK_OK;
}

static gk_status get_prepend(ld *l, const cJSON *o, const char *what, tk_prepend *out)
{
    const char *scheme;
    bool aps;
    gk_status st = get_str(l, o, what, "prepend_scheme", false, &scheme);
    if (st == GK_OK)
        st = get_bool(l, o, what, "add_prefix_space", true, &aps);
    if (st != GK_OK)
        return st;
    *out = TK_PREPEND_ALWAYS;
    if (scheme && !strcmp(scheme, "first"))
        *out = TK_PREPEND_FIRST;
    else if (scheme && !strcmp(scheme, "never"))
        *out = TK_PREPEND_NEVER;
    else if (scheme && strcmp(scheme, "always")) {
        char q[QN];
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s prepend_scheme '%s' is not first/never/always",
                          l->f, what, gk_quote(q, sizeof q, scheme));
    }
    if (!aps) {
        if (*out != TK_PREPEND_NEVER && scheme)
            return gk_err_set(l->err, GK_ERR_FORMAT,
                              "%s: %s add_prefix_space does not match prepend_scheme", l->f, what);
        *out = TK_PREPEND_NEVER;
    }
    return GK_OK;
}

/* ---------------------------------------------------------------- model */

static gk_status load_merge(ld *l, tk_bpe *m, const cJSON *it, size_t rank, tk_buf *tmp,
                            bool *skip)
{
    const char *a, *b;
    size_t an, bn;
    char q[QN];
    *skip = false;
    if (has_nul(it) || (cJSON_IsArray(it) && (has_nul(it->child) || (it->child && has_nul(it->child->next)))))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: merge %zu holds a NUL character (\\u0000), which no vocabulary token holds",
                          l->f, rank);
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        if (!strncmp(s, "#version", 8)) {
            *skip = true;
            return GK_OK;
        }
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: merge %zu '%s' is not two tokens split by one space",
                              l->f, rank, gk_quote(q, sizeof q, s));
        a = s;
        an = (size_t)(sp - s);
        b = sp + 1;
        bn = strlen(b);
    } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
               cJSON_IsString(it->child) && cJSON_IsString(it->child->next)) {
        a = it->child->valuestring;
        an = strlen(a);
        b = it->child->next->valuestring;
        bn = strlen(b);
    } else {
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: merge %zu is not \"a b\" or [a, b]", l->f, rank);
    }
    int32_t ia = tk_strtab_get(&m->vocab, a, an), ib = tk_strtab_get(&m->vocab, b, bn);
    tmp->len = 0;
    if (!tk_buf_put(tmp, a, an) || !tk_buf_put(tmp, b, bn))
        return nomem(l);
    int32_t ic = tk_strtab_get(&m->vocab, tmp->p, tmp->len);
    if (ia < 0 || ib < 0 || ic < 0) { /* name the missing one alone ("a" of "a b") */
        const char *bad = ia < 0 ? a : ib < 0 ? b : tmp->p;
        size_t n = ia < 0 ? an : ib < 0 ? bn : tmp->len;
        char part[QN];
        n = n < sizeof part ? n : sizeof part - 1;
        memcpy(part, bad, n);
        part[n] = '\0';
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: merge %zu: token '%s' is not in the vocabulary",
                          l->f, rank, gk_quote(q, sizeof q, part));
    }
    tk_bpe_merge_put(m, ia, ib, (uint32_t)rank, ic);
    return GK_OK;
}

static gk_status load_bpe(ld *l, const cJSON *model, int64_t *max_id)
{
    tk_bpe *m = &l->t->bpe;
    const char *type, *s;
    gk_status st = GK_OK;
    if (!cJSON_IsObject(model))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: no \"model\" object", l->f);
    if ((st = get_str(l, model, "model", "type", false, &type)) != GK_OK)
        return st;
    if (type && strcmp(type, "BPE"))
        return unsupported(l, "model", type);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!type && !merges)
        return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: model has no \"type\" and no \"merges\": only BPE is supported", l->f);
    if (!cJSON_IsObject(vocab))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: model has no \"vocab\" object", l->f);
    if (merges && !cJSON_IsArray(merges) && !cJSON_IsNull(merges))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: model \"merges\" is not an array", l->f);

    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0))
        return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", l->f);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        if ((st = get_str(l, model, "model", affixes[i], false, &s)) != GK_OK)
            return st;
        char q[QN];
        if (s && *s)
            return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: BPE %s '%s' is not supported", l->f,
                              affixes[i], gk_quote(q, sizeof q, s));
    }
    if ((st = get_bool(l, model, "model", "fuse_unk", false, &m->fuse_unk)) != GK_OK ||
        (st = get_bool(l, model, "model", "byte_fallback", false, &m->byte_fallback)) != GK_OK ||
        (st = get_bool(l, model, "model", "ignore_merges", false, &m->ignore_merges)) != GK_OK ||
        (st = get_str(l, model, "model", "unk_token", false, &s)) != GK_OK)
        return st;
    if (s && !(m->unk_token = gk_strdup(s)))
        return nomem(l);

    if (!tk_strtab_init(&m->vocab, (size_t)cJSON_GetArraySize(vocab)))
        return nomem(l);
    for (const cJSON *it = vocab->child; it; it = it->next) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
        char q[QN];
        if (d < 0 || d >= 2147483647.0 || d != (double)(int32_t)d)
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: vocab entry '%s' has no valid id", l->f,
                              gk_quote(q, sizeof q, it->string));
        size_t n = strlen(it->string); /* gk_json_parse refuses keys holding NUL */
        if (!tk_strtab_put(&m->vocab, it->string, n, (int32_t)d))
            return nomem(l);
        if ((int32_t)d > *max_id) {
            *max_id = (int32_t)d;
            l->max_tok = it->string;
            l->max_tok_len = n;
        }
    }
    m->unk_id = m->unk_token ? tk_strtab_get(&m->vocab, m->unk_token, strlen(m->unk_token)) : -1;

    size_t n_merges = merges ? (size_t)cJSON_GetArraySize(merges) : 0;
    if (!tk_bpe_merges_init(m, n_merges))
        return nomem(l);
    tk_buf tmp = {0};
    size_t rank = 0;
    for (const cJSON *it = merges ? merges->child : NULL; it && st == GK_OK; it = it->next) {
        bool skip;
        st = load_merge(l, m, it, rank, &tmp, &skip);
        if (!skip)
            rank++;
    }
    tk_buf_free(&tmp);
    if (st != GK_OK)
        return st;

    for (uint32_t cp = 0; cp < 2048; cp++) {
        char u[4];
        size_t n = tk_utf8_encode(cp, u);
        m->char_id[cp] = (cp >= 0xD800) ? -1 : tk_strtab_get(&m->vocab, u, n);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = tk_strtab_get(&m->vocab, name, 6);
    }
    return GK_OK;
}

/* ------------------------------------------------------------ normalizers */

static gk_status load_norm(ld *l, const cJSON *o)
{
    gk_tokenizer *t = l->t;
    const char *type;
    gk_status st;
    if (!o || cJSON_IsNull(o))
        return GK_OK;
    if ((st = get_type(l, o, "normalizer", &type)) != GK_OK)
        return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(arr))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: Sequence normalizer has no \"normalizers\" array", l->f);
        for (const cJSON *it = arr->child; it; it = it->next)
            if ((st = load_norm(l, it)) != GK_OK)
                return st;
        return GK_OK;
    }
    tk_norm nm = {0};
    if (!strcmp(type, "NFC"))
        nm.kind = TK_NORM_NFC;
    else if (!strcmp(type, "NFD"))
        nm.kind = TK_NORM_NFD;
    else if (!strcmp(type, "NFKC"))
        nm.kind = TK_NORM_NFKC;
    else if (!strcmp(type, "NFKD"))
        nm.kind = TK_NORM_NFKD;
    else if (!strcmp(type, "Lowercase"))
        nm.kind = TK_NORM_LOWERCASE;
    else if (!strcmp(type, "Strip")) {
        nm.kind = TK_NORM_STRIP;
        if ((st = get_bool(l, o, "Strip normalizer", "strip_left", false, &nm.left)) != GK_OK ||
            (st = get_bool(l, o, "Strip normalizer", "strip_right", false, &nm.right)) != GK_OK)
            return st;
    } else if (!strcmp(type, "Replace") || !strcmp(type, "Prepend")) {
        bool rep = type[0] == 'R';
        const char *content;
        nm.kind = rep ? TK_NORM_REPLACE : TK_NORM_PREPEND;
        if ((st = get_str(l, o, rep ? "Replace normalizer" : "Prepend normalizer",
                          rep ? "content" : "prepend", true, &content)) != GK_OK)
            return st;
        if (rep) {
            if ((st = get_pattern(l, o, "Replace normalizer", &nm.pat)) != GK_OK)
                return st;
            if ((nm.pat.re && strchr(content, '$')) || (nm.pat.literal && !nm.pat.lit_len)) {
                tk_pattern_free(&nm.pat);
                return gk_err_set(l->err, GK_ERR_UNSUPPORTED,
                                  "%s: Replace normalizer with an empty pattern or $ groups in \"content\" is not supported",
                                  l->f);
            }
        }
        if (!(nm.content = gk_strdup(content))) {
            tk_pattern_free(&nm.pat);
            return nomem(l);
        }
        nm.content_len = strlen(content);
    } else {
        return unsupported(l, "normalizer", type);
    }
    void *p = realloc(t->norms, (t->n_norms + 1) * sizeof *t->norms);
    if (!p) {
        tk_pattern_free(&nm.pat);
        free(nm.content);
        return nomem(l);
    }
    t->norms = p;
    t->norms[t->n_norms++] = nm;
    return GK_OK;
}

/* ---------------------------------------------------------- pre-tokenizers */

static gk_status push_pre(ld *l, tk_pre *p)
{
    gk_tokenizer *t = l->t;
    void *np = realloc(t->pres, (t->n_pres + 1) * sizeof *t->pres);
    if (!np) {
        tk_pattern_free(&p->pat);
        return nomem(l);
    }
    t->pres = np;
    t->pres[t->n_pres++] = *p;
    return GK_OK;
}

static gk_status load_pre(ld *l, const cJSON *o)
{
    const char *type, *s;
    gk_status st;
    if (!o || cJSON_IsNull(o))
        return GK_OK;
    if ((st = get_type(l, o, "pre_tokenizer", &type)) != GK_OK)
        return st;
    tk_pre p = {0};
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: Sequence pre_tokenizer has no \"pretokenizers\" array", l->f);
        for (const cJSON *it = arr->child; it; it = it->next)
            if ((st = load_pre(l, it)) != GK_OK)
                return st;
        return GK_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        bool use_regex;
        p.kind = TK_PRE_SPLIT;
        p.behavior = TK_ISOLATED;
        if ((st = get_bool(l, o, "ByteLevel pre_tokenizer", "add_prefix_space", true, &p.prefix_space)) != GK_OK ||
            (st = get_bool(l, o, "ByteLevel pre_tokenizer", "use_regex", true, &use_regex)) != GK_OK)
            return st;
        if (use_regex) {
            p.has_pattern = true;
            if ((st = tk_pattern_regex(&p.pat, GPT2_RE, l->f, "ByteLevel", l->err)) != GK_OK)
                return st;
        }
        if (p.prefix_space || p.has_pattern)
            if ((st = push_pre(l, &p)) != GK_OK)
                return st;
        tk_pre map = {.kind = TK_PRE_BYTEMAP};
        return push_pre(l, &map);
    }
    if (!strcmp(type, "Split")) {
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
        p.kind = TK_PRE_SPLIT;
        p.has_pattern = true;
        if ((st = get_str(l, o, "Split pre_tokenizer", "behavior", true, &s)) != GK_OK ||
            (st = get_bool(l, o, "Split pre_tokenizer", "invert", false, &p.invert)) != GK_OK)
            return st;
        size_t b = 0;
        while (b < 5 && strcmp(s, names[b]))
            b++;
        char q[QN];
        if (b == 5)
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: Split pre_tokenizer behavior '%s' is unknown", l->f,
                              gk_quote(q, sizeof q, s));
        p.behavior = (tk_behavior)b;
        if ((st = get_pattern(l, o, "Split pre_tokenizer", &p.pat)) != GK_OK)
            return st;
        return push_pre(l, &p);
    }
    if (!strcmp(type, "Digits")) {
        bool individual;
        if ((st = get_bool(l, o, "Digits pre_tokenizer", "individual_digits", false, &individual)) != GK_OK)
            return st;
        p.kind = TK_PRE_SPLIT;
        p.has_pattern = true;
        p.behavior = individual ? TK_ISOLATED : TK_CONTIGUOUS;
        if ((st = tk_pattern_regex(&p.pat, "\\p{N}", l->f, "Digits", l->err)) != GK_OK)
            return st;
        return push_pre(l, &p);
    }
    if (!strcmp(type, "Metaspace")) {
        uint32_t cp;
        p.kind = TK_PRE_METASPACE;
        if ((st = get_char(l, o, "Metaspace pre_tokenizer", "replacement", &cp)) != GK_OK ||
            (st = get_prepend(l, o, "Metaspace pre_tokenizer", &p.prepend)) != GK_OK ||
            (st = get_bool(l, o, "Metaspace pre_tokenizer", "split", true, &p.split)) != GK_OK)
            return st;
        p.rep_len = tk_utf8_encode(cp, p.rep);
        if ((st = tk_pattern_literal(&p.pat, p.rep, l->err)) != GK_OK)
            return st;
        return push_pre(l, &p);
    }
    return unsupported(l, "pre_tokenizer", type);
}

/* ---------------------------------------------------------------- decoders */

static gk_status load_dec(ld *l, const cJSON *o)
{
    gk_tokenizer *t = l->t;
    const char *type, *s;
    gk_status st;
    if (!o || cJSON_IsNull(o))
        return GK_OK;
    if ((st = get_type(l, o, "decoder", &type)) != GK_OK)
        return st;
    t->has_decoder = true;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(arr))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: Sequence decoder has no \"decoders\" array", l->f);
        for (const cJSON *it = arr->child; it; it = it->next)
            if ((st = load_dec(l, it)) != GK_OK)
                return st;
        return GK_OK;
    }
    tk_dec d = {0};
    if (!strcmp(type, "ByteLevel")) {
        d.kind = TK_DEC_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d.kind = TK_DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d.kind = TK_DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d.kind = TK_DEC_STRIP;
        if ((st = get_char(l, o, "Strip decoder", "content", &d.ch)) != GK_OK ||
            (st = get_uint(l, o, "Strip decoder", "start", false, 1e9, &d.start)) != GK_OK ||
            (st = get_uint(l, o, "Strip decoder", "stop", false, 1e9, &d.stop)) != GK_OK)
            return st;
    } else if (!strcmp(type, "Metaspace")) {
        tk_prepend pr;
        d.kind = TK_DEC_METASPACE;
        if ((st = get_char(l, o, "Metaspace decoder", "replacement", &d.ch)) != GK_OK ||
            (st = get_prepend(l, o, "Metaspace decoder", &pr)) != GK_OK)
            return st;
        d.prepend = pr != TK_PREPEND_NEVER;
    } else if (!strcmp(type, "Replace")) {
        d.kind = TK_DEC_REPLACE;
        if ((st = get_str(l, o, "Replace decoder", "content", true, &s)) != GK_OK ||
            (st = get_pattern(l, o, "Replace decoder", &d.pat)) != GK_OK)
            return st;
        if ((d.pat.re && strchr(s, '$')) || (d.pat.literal && !d.pat.lit_len)) {
            tk_pattern_free(&d.pat);
            return gk_err_set(l->err, GK_ERR_UNSUPPORTED,
                              "%s: Replace decoder with an empty pattern or $ groups in \"content\" is not supported",
                              l->f);
        }
        d.content_len = strlen(s);
        if (!(d.content = gk_strdup(s))) {
            tk_pattern_free(&d.pat);
            return nomem(l);
        }
    } else {
        return unsupported(l, "decoder", type);
    }
    void *p = realloc(t->decs, (t->n_decs + 1) * sizeof *t->decs);
    if (!p) {
        tk_pattern_free(&d.pat);
        free(d.content);
        return nomem(l);
    }
    t->decs = p;
    t->decs[t->n_decs++] = d;
    return GK_OK;
}

/* ---------------------------------------------------------- post-processor */

/* The single template of one processor, with the text at its "A". */
typedef struct tpl {
    tk_tpl_item *items;
    size_t n;
} tpl;

static gk_status tpl_push(ld *l, tpl *t, bool is_seq, int32_t id)
{
    void *p = realloc(t->items, (t->n + 1) * sizeof *t->items);
    if (!p)
        return nomem(l);
    t->items = p;
    t->items[t->n++] = (tk_tpl_item){.is_seq = is_seq, .id = id};
    return GK_OK;
}

/* ["[CLS]", 101] */
static gk_status pair_id(ld *l, const cJSON *o, const char *what, const char *key, int32_t *id)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(v->child->next) ||
        v->child->next->valuedouble < 0 || v->child->next->valuedouble > 2147483647.0)
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: %s \"%s\" is not [token, id]", l->f, what, key);
    *id = (int32_t)v->child->next->valuedouble;
    return GK_OK;
}

static gk_status load_template(ld *l, const cJSON *o, tpl *out)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: TemplateProcessing has no \"single\" array", l->f);
    gk_status st = GK_OK;
    for (const cJSON *it = single->child; it && st == GK_OK; it = it->next) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(seq ? seq : sp, "id");
        char q[QN];
        if (!cJSON_IsString(id))
            return gk_err_set(l->err, GK_ERR_FORMAT,
                              "%s: TemplateProcessing single item is not a Sequence or SpecialToken with an id", l->f);
        if (has_nul(id))
            return nul_error(l, "TemplateProcessing single item", "id");
        gk_quote(q, sizeof q, id->valuestring);
        if (seq) {
            if (strcmp(id->valuestring, "A"))
                return gk_err_set(l->err, GK_ERR_FORMAT, "%s: TemplateProcessing single refers to sequence '%s'",
                                  l->f, q);
            st = tpl_push(l, out, true, 0);
            continue;
        }
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(specials, id->valuestring);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(tok, "ids");
        if (!cJSON_IsArray(ids))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: TemplateProcessing special token '%s' has no ids",
                              l->f, q);
        for (const cJSON *x = ids->child; x && st == GK_OK; x = x->next) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2147483647.0)
                return gk_err_set(l->err, GK_ERR_FORMAT, "%s: TemplateProcessing special token '%s' has a bad id",
                                  l->f, q);
            st = tpl_push(l, out, false, (int32_t)x->valuedouble);
        }
    }
    return st;
}

/* One processor's template (a Sequence composes its parts). */
static gk_status load_post_one(ld *l, const cJSON *o, tpl *out)
{
    const char *type;
    gk_status st;
    if (!o || cJSON_IsNull(o))
        return tpl_push(l, out, true, 0);
    if ((st = get_type(l, o, "post_processor", &type)) != GK_OK)
        return st;
    if (!strcmp(type, "ByteLevel"))
        return tpl_push(l, out, true, 0);
    if (!strcmp(type, "TemplateProcessing"))
        return load_template(l, o, out);
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        int32_t cls, sep;
        if ((st = pair_id(l, o, type, "cls", &cls)) != GK_OK ||
            (st = pair_id(l, o, type, "sep", &sep)) != GK_OK)
            return st;
        if ((st = tpl_push(l, out, false, cls)) != GK_OK || (st = tpl_push(l, out, true, 0)) != GK_OK)
            return st;
        return tpl_push(l, out, false, sep);
    }
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(arr))
            return gk_err_set(l->err, GK_ERR_FORMAT, "%s: Sequence post_processor has no \"processors\" array", l->f);
        if ((st = tpl_push(l, out, true, 0)) != GK_OK)
            return st;
        for (const cJSON *it = arr->child; it; it = it->next) {
            tpl part = {0}, next = {0};
            st = load_post_one(l, it, &part);
            /* next = part with its A replaced by what we have so far */
            for (size_t i = 0; st == GK_OK && i < part.n; i++) {
                if (!part.items[i].is_seq) {
                    st = tpl_push(l, &next, false, part.items[i].id);
                    continue;
                }
                for (size_t k = 0; st == GK_OK && k < out->n; k++)
                    st = tpl_push(l, &next, out->items[k].is_seq, out->items[k].id);
            }
            free(part.items);
            free(out->items);
            *out = next;
            if (st != GK_OK)
                return st;
        }
        return GK_OK;
    }
    return unsupported(l, "post_processor", type);
}

static gk_status load_post(ld *l, const cJSON *o)
{
    tpl t = {0};
    gk_status st = load_post_one(l, o, &t);
    size_t seqs = 0, specials = 0;
    for (size_t i = 0; i < t.n; i++)
        t.items[i].is_seq ? seqs++ : specials++;
    if (st == GK_OK && seqs != 1)
        st = gk_err_set(l->err, GK_ERR_FORMAT, "%s: post_processor template holds the sequence %zu times",
                        l->f, seqs);
    if (st != GK_OK) {
        free(t.items);
        return st;
    }
    l->t->tpl = t.items;
    l->t->n_tpl = t.n;
    l->t->n_tpl_special = specials;
    return GK_OK;
}

/* ---------------------------------------------------- truncation, padding */

static gk_status load_trunc_pad(ld *l, const cJSON *root)
{
    gk_tokenizer *t = l->t;
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    const cJSON *pd = cJSON_GetObjectItemCaseSensitive(root, "padding");
    const char *s;
    gk_status st;
    if (tr && !cJSON_IsNull(tr)) {
        t->has_trunc = true;
        if ((st = get_uint(l, tr, "truncation", "max_length", true, 1e12, &t->trunc_max)) != GK_OK ||
            (st = get_uint(l, tr, "truncation", "stride", false, 1e12, &t->trunc_stride)) != GK_OK ||
            (st = get_str(l, tr, "truncation", "direction", false, &s)) != GK_OK)
            return st;
        t->trunc_left = s && !strcmp(s, "Left");
        if ((st = get_str(l, tr, "truncation", "strategy", false, &s)) != GK_OK)
            return st;
        char q[QN];
        if (s && strcmp(s, "LongestFirst") && strcmp(s, "OnlyFirst"))
            return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: truncation strategy '%s' is not supported", l->f,
                              gk_quote(q, sizeof q, s));
    }
    if (pd && !cJSON_IsNull(pd)) {
        size_t id = 0;
        t->has_pad = true;
        const cJSON *strat = cJSON_GetObjectItemCaseSensitive(pd, "strategy");
        const cJSON *fixed = cJSON_GetObjectItemCaseSensitive(strat, "Fixed");
        if (fixed) {
            if (!cJSON_IsNumber(fixed) || fixed->valuedouble < 0 || fixed->valuedouble > 1e12)
                return gk_err_set(l->err, GK_ERR_FORMAT, "%s: padding Fixed length is not a number in [0, 1e12]", l->f);
            t->pad_fixed = (size_t)fixed->valuedouble;
        } else if (!cJSON_IsString(strat) || has_nul(strat) || strcmp(strat->valuestring, "BatchLongest")) {
            return gk_err_set(l->err, GK_ERR_UNSUPPORTED, "%s: padding strategy is not supported", l->f);
        }
        if ((st = get_uint(l, pd, "padding", "pad_to_multiple_of", false, 1e9, &t->pad_multiple)) != GK_OK ||
            (st = get_uint(l, pd, "padding", "pad_id", false, 2147483647.0, &id)) != GK_OK ||
            (st = get_str(l, pd, "padding", "direction", false, &s)) != GK_OK)
            return st;
        t->pad_id = (int32_t)id;
        t->pad_left = s && !strcmp(s, "Left");
    }
    return GK_OK;
}

/* ------------------------------------------------------------ added tokens */

/* TokenizerImpl's deserializer: add_tokens / add_special_tokens one by one. A
 * content seen before keeps its first id and takes the new flags (special stays
 * once set); `seen` maps contents to their index in t->added. */
static gk_status load_added(ld *l, const cJSON *arr, int64_t *max_id)
{
    gk_tokenizer *t = l->t;
    if (!arr || cJSON_IsNull(arr))
        return GK_OK;
    if (!cJSON_IsArray(arr))
        return gk_err_set(l->err, GK_ERR_FORMAT, "%s: \"added_tokens\" is not an array", l->f);
    size_t n_items = (size_t)cJSON_GetArraySize(arr);
    tk_strtab seen;
    if (!tk_strtab_init(&seen, n_items))
        return nomem(l);
    if (!(t->added = calloc(n_items ? n_items : 1, sizeof *t->added))) {
        tk_strtab_free(&seen);
        return nomem(l);
    }
    int64_t model_size = (int64_t)t->bpe.vocab.count;
    int64_t max_added = -1;
    gk_status st = GK_OK;
    for (const cJSON *it = arr->child; it; it = it->next) {
        const char *content;
        size_t len;
        if ((st = get_strn(l, it, "added token", "content", true, &content, &len)) != GK_OK)
            break;
        if (!len)
            continue;
        tk_added a = {0};
        if ((st = get_bool(l, it, "added token", "single_word", false, &a.single_word)) != GK_OK ||
            (st = get_bool(l, it, "added token", "lstrip", false, &a.lstrip)) != GK_OK ||
            (st = get_bool(l, it, "added token", "rstrip", false, &a.rstrip)) != GK_OK ||
            (st = get_bool(l, it, "added token", "special", false, &a.special)) != GK_OK ||
            (st = get_bool(l, it, "added token", "normalized", !a.special, &a.normalized)) != GK_OK)
            break;
        int32_t k = tk_strtab_get(&seen, content, len);
        if (k >= 0) { /* same content again: the id stays, the flags follow */
            bool special = t->added[k].special || a.special;
            a.id = t->added[k].id;
            a.content = t->added[k].content;
            a.len = len;
            t->added[k] = a;
            t->added[k].special = special;
            continue;
        }
        int64_t id = tk_strtab_get(&t->bpe.vocab, content, len);
        if (id < 0) {
            if (max_added < 0)
                id = model_size;
            else
                id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
        }
        if (id > INT32_MAX) {
            char q[QN];
            st = gk_err_set(l->err, GK_ERR_FORMAT,
                            "%s: added token '%s' would get id %lld, past the largest supported id (%d)",
                            l->f, tk_quote_n(q, sizeof q, content, len), (long long)id, INT32_MAX);
            break;
        }
        if (id > max_added)
            max_added = id;
        if (id > *max_id) {
            *max_id = id;
            l->max_tok = content;
            l->max_tok_len = len;
        }
        a.id = (int32_t)id;
        a.len = len;
        if (!(a.content = malloc(len + 1)) ||
            !tk_strtab_put(&seen, content, len, (int32_t)t->n_added)) {
            free(a.content);
            st = nomem(l);
            break;
        }
        memcpy(a.content, content, len + 1);
        t->added[t->n_added++] = a;
    }
    tk_strtab_free(&seen);
    return st;
}

/* Ids index dense tables (id_str, id_len, id_special: 13 bytes an id), so a small
 * file naming one huge id would demand gigabytes. HF sets no bound, but real files
 * number their tokens densely; we accept ids below 4 per token plus 2^20 spare. */
static gk_status check_id_range(ld *l, int64_t max_id)
{
    gk_tokenizer *t = l->t;
    int64_t n_tokens = (int64_t)t->bpe.vocab.count + (int64_t)t->n_added;
    int64_t limit = 4 * n_tokens + ((int64_t)1 << 20);
    if (max_id < limit)
        return GK_OK;
    char q[QN];
    return gk_err_set(l->err, GK_ERR_FORMAT,
                      "%s: token '%s' has id %lld, far past the %lld tokens the file defines "
                      "(ids index dense tables, so they must stay below 4 x tokens + 2^20 = %lld)",
                      l->f, tk_quote_n(q, sizeof q, l->max_tok, l->max_tok_len), (long long)max_id,
                      (long long)n_tokens, (long long)limit);
}

/* ---------------------------------------------------------------- tables */

static gk_status build_tables(ld *l, int64_t max_id)
{
    gk_tokenizer *t = l->t;
    t->n_ids = max_id + 1;
    t->id_str = calloc((size_t)t->n_ids, sizeof *t->id_str);
    t->id_len = calloc((size_t)t->n_ids, sizeof *t->id_len);
    t->id_special = calloc((size_t)t->n_ids, sizeof *t->id_special);
    if (!t->id_str || !t->id_len || !t->id_special)
        return nomem(l);
    const tk_strtab *v = &t->bpe.vocab;
    for (size_t i = 0; i <= v->mask; i++) {
        const struct tk_slot *s = &v->slots[i];
        if (s->klen == UINT32_MAX)
            continue;
        t->id_str[s->val] = v->keys.p + s->koff;
        t->id_len[s->val] = s->klen;
    }
    /* ByteLevel alphabet: printable bytes map to themselves, the rest to 256 + n */
    for (int c = 0; c < 324; c++)
        t->byte_of_char[c] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : next++;
        t->byte_of_char[cp] = b;
        t->byte_char_len[b] = (uint8_t)tk_utf8_encode((uint32_t)cp, t->byte_char[b]);
    }
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].normalized) {
            t->any_added_norm = true; /* first bytes known once normalized */
        } else {
            t->added_first_byte[(unsigned char)t->added[i].content[0]] = true;
            t->any_added_raw = true;
        }
    }
    return GK_OK;
}

/* Normalized added tokens match the normalizer's output for their content. */
static gk_status normalize_added(ld *l)
{
    gk_tokenizer *t = l->t;
    if (!t->any_added_norm)
        return GK_OK;
    tk_enc e;
    gk_status st = tk_enc_init(&e, t, l->err);
    for (size_t i = 0; st == GK_OK && i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        if (!a->normalized)
            continue;
        const char *s;
        size_t n;
        bool orig0 = true;
        st = tk_normalize(&e, a->content, a->len, &s, &n, &orig0);
        if (st == GK_OK && !(a->norm_content = malloc(n + 1)))
            st = nomem(l);
        if (st == GK_OK) {
            memcpy(a->norm_content, s, n);
            a->norm_content[n] = '\0';
            a->norm_len = n;
            if (n)
                t->added_norm_first_byte[(unsigned char)s[0]] = true;
        }
    }
    tk_enc_free(&e);
    return st;
}

/* Added tokens' strings and special flags, once normalized contents are known.
 * Decoding (and gk_tokenizer_token) spells a normalized added token as the
 * normalizer's output (HF's normalized_cache), and skip_special tests the string
 * against the contents of special added tokens, as AddedVocabulary does. */
static gk_status added_strings(ld *l)
{
    gk_tokenizer *t = l->t;
    tk_strtab specials;
    if (!tk_strtab_init(&specials, t->n_added))
        return nomem(l);
    bool ok = true;
    for (size_t i = 0; ok && i < t->n_added; i++)
        if (t->added[i].special)
            ok = tk_strtab_put(&specials, t->added[i].content, t->added[i].len, 0);
    for (size_t i = 0; ok && i < t->n_added; i++) {
        const tk_added *a = &t->added[i];
        bool norm = a->normalized && t->n_norms;
        t->id_str[a->id] = norm ? a->norm_content : a->content;
        t->id_len[a->id] = (uint32_t)(norm ? a->norm_len : a->len);
    }
    for (size_t i = 0; ok && i < t->n_added; i++) {
        const tk_added *a = &t->added[i];
        if (tk_strtab_get(&specials, t->id_str[a->id], t->id_len[a->id]) >= 0)
            t->id_special[a->id] = true;
        /* a model id spelled like a special token */
        int32_t id = a->special ? tk_strtab_get(&t->bpe.vocab, a->content, a->len) : -1;
        if (id >= 0 && t->id_len[id] == a->len && !memcmp(t->id_str[id], a->content, a->len))
            t->id_special[id] = true;
    }
    tk_strtab_free(&specials);
    return ok ? GK_OK : nomem(l);
}

gk_status tk_load_json(gk_tokenizer *t, const char *text, size_t len, gk_err *err)
{
    ld l = {.t = t, .f = t->path, .err = err};
    cJSON *root;
    gk_status st = tk_json_load(t->path, text, len, &root, err);
    if (st != GK_OK)
        return st;
    int64_t max_id = -1;
    const char *version = NULL;
    if (!cJSON_IsObject(root)) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: top level is not a JSON object", t->path);
        goto out;
    }
    if ((st = get_str(&l, root, "tokenizer.json", "version", false, &version)) != GK_OK)
        goto out;
    if (version && strcmp(version, "1.0")) {
        char q[QN];
        st = gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: tokenizer.json version '%s' is not supported",
                        t->path, gk_quote(q, sizeof q, version));
        goto out;
    }
    if ((st = load_bpe(&l, cJSON_GetObjectItemCaseSensitive(root, "model"), &max_id)) != GK_OK ||
        (st = load_norm(&l, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) != GK_OK ||
        (st = load_pre(&l, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))) != GK_OK ||
        (st = load_post(&l, cJSON_GetObjectItemCaseSensitive(root, "post_processor"))) != GK_OK ||
        (st = load_dec(&l, cJSON_GetObjectItemCaseSensitive(root, "decoder"))) != GK_OK ||
        (st = load_trunc_pad(&l, root)) != GK_OK ||
        (st = load_added(&l, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &max_id)) != GK_OK)
        goto out;
    if (max_id < 0) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: the vocabulary is empty", t->path);
        goto out;
    }
    for (size_t i = 0; i < t->n_tpl; i++) {
        if (!t->tpl[i].is_seq && t->tpl[i].id > max_id) {
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: post_processor special id %d is outside the vocabulary",
                            t->path, t->tpl[i].id);
            goto out;
        }
    }
    if ((st = check_id_range(&l, max_id)) != GK_OK || (st = build_tables(&l, max_id)) != GK_OK ||
        (st = normalize_added(&l)) != GK_OK)
        goto out;
    st = added_strings(&l);
out:
    cJSON_Delete(root);
    return st;
}

void tk_free_pipeline(gk_tokenizer *t)
{
    tk_bpe_free(&t->bpe);
    for (size_t i = 0; i < t->n_norms; i++) {
        tk_pattern_free(&t->norms[i].pat);
        free(t->norms[i].content);
    }
    for (size_t i = 0; i < t->n_pres; i++)
        tk_pattern_free(&t->pres[i].pat);
    for (size_t i = 0; i < t->n_decs; i++) {
        tk_pattern_free(&t->decs[i].pat);
        free(t->decs[i].content);
    }
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm_content);
    }
    free(t->norms);
    free(t->pres);
    free(t->decs);
    free(t->added);
    free(t->tpl);
    free(t->id_str);
    free(t->id_len);
    free(t->id_special);
}
