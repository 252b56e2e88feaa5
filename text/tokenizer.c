/* tokenizer.c - gk_tokenizer: HuggingFace tokenizer.json files, encoded and decoded
 * with exact parity to HF `tokenizers` (the reference pack's golden ids come from
 * tokenizers 0.23.2).
 *
 * Encoding, as TokenizerImpl::encode: check the UTF-8 (invalid input is
 * GK_ERR_INVALID_ARG naming the byte offset), cut out added tokens that match the
 * raw text (AddedVocabulary::find_matches: leftmost-longest, with single_word,
 * lstrip and rstrip), normalize each remaining piece, cut out "normalized" added
 * tokens, pre-tokenize, run the BPE model, then truncate, apply the post-processor
 * template (only with add_special) and pad, when tokenizer.json asks for those.
 * Decoding, as Tokenizer::decode: ids to token strings (added tokens first, a
 * "normalized" one spelled as the normalizer's output), special tokens dropped on
 * request, then the decoder chain. Where HF silently drops an id it has no token
 * for, we return GK_ERR_INVALID_ARG. Decoding never yields invalid
 * UTF-8: a byte-level sequence cut inside a character decodes with U+FFFD in its
 * place, as HF's String::from_utf8_lossy does (see tokenizer_decode.c).
 * bos/eos come from tokenizer_config.json beside the file, else from the
 * post-processor template, else from well-known added tokens.
 * Checked against HF beyond the golden files: every code point through each
 * normalizer, thousands of random texts through the five reference files and 32
 * variants of them (every pre-tokenizer, decoder, post-processor and added-token
 * option we read), and 5 MB of English with identical ids (tokenizers 0.23.2).
 * What this file is not: the stages themselves (tokenizer_text.c, tokenizer_bpe.c,
 * tokenizer_decode.c) or the reading of tokenizer.json (tokenizer_load.c).
 */
#include "tokenizer_impl.h"

#include "gk_json.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* --------------------------------------------------------------- bos / eos */

/* The id of n bytes of token text (NULs included), added tokens first; -1 if none. */
static int32_t lookup(const gk_tokenizer *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, s, n))
            return t->added[i].id;
    return tk_strtab_get(&t->bpe.vocab, s, n);
}

static int32_t well_known(const gk_tokenizer *t, const char *const *names)
{
    for (; *names; names++) {
        size_t n = strlen(*names);
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].len == n && !memcmp(t->added[i].content, *names, n))
                return t->added[i].id;
    }
    return -1;
}

/* bos_token / eos_token of tokenizer_config.json: a string, {"content": ...} or null. */
static gk_status config_token(const char *file, const cJSON *cfg, const char *key,
                              const gk_tokenizer *t, bool *have, int32_t *id, gk_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    *have = v != NULL;
    if (!v || cJSON_IsNull(v))
        return GK_OK;
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: \"%s\" is not a string or {\"content\": ...}",
                          file, key);
    *id = lookup(t, v->valuestring, gk_json_strlen(v));
    return GK_OK;
}

static gk_status find_bos_eos(gk_tokenizer *t, gk_err *err)
{
    static const char *const bos_names[] = {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>",
                                            "<|endoftext|>", NULL};
    static const char *const eos_names[] = {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", NULL};
    bool have_bos = false, have_eos = false;
    gk_status st = GK_OK;
    char *dir = gk_path_dirname(t->path);
    char *file = dir ? gk_path_join(dir, "tokenizer_config.json") : NULL;
    char *text = NULL;
    size_t len = 0;
    cJSON *cfg = NULL;
    if (!file) {
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory for a path");
        goto out;
    }
    if (gk_path_exists(file)) {
        if ((st = gk_read_file(file, &text, &len, err)) != GK_OK ||
            (st = tk_json_load(file, text, len, &cfg, err)) != GK_OK)
            goto out;
        if (!cJSON_IsObject(cfg)) {
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: not a JSON object", file);
            goto out;
        }
        if ((st = config_token(file, cfg, "bos_token", t, &have_bos, &t->bos_id, err)) != GK_OK ||
            (st = config_token(file, cfg, "eos_token", t, &have_eos, &t->eos_id, err)) != GK_OK)
            goto out;
    }
    if (!have_bos && t->n_tpl > 1 && !t->tpl[0].is_seq)
        t->bos_id = t->tpl[0].id;
    else if (!have_bos)
        t->bos_id = well_known(t, bos_names);
    if (!have_eos && t->n_tpl > 1 && !t->tpl[t->n_tpl - 1].is_seq)
        t->eos_id = t->tpl[t->n_tpl - 1].id;
    else if (!have_eos)
        t->eos_id = well_known(t, eos_names);
out:
    cJSON_Delete(cfg);
    free(text);
    free(file);
    free(dir);
    return st;
}

/* ------------------------------------------------------------ load, query */

gk_status gk_tokenizer_load(const char *path, gk_tokenizer **out, gk_err *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_tokenizer_load: path and out are required");
    gk_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for a tokenizer");
    pthread_mutex_init(&t->cache_lock, NULL);
    t->bos_id = t->eos_id = -1;
    char *text = NULL;
    size_t len = 0;
    gk_status st;
    t->path = gk_path_is_dir(path) ? gk_path_join(path, "tokenizer.json") : gk_strdup(path);
    if (!t->path) {
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory for a path");
        goto fail;
    }
    if ((st = gk_read_file(t->path, &text, &len, err)) != GK_OK ||
        (st = tk_load_json(t, text, len, err)) != GK_OK || (st = find_bos_eos(t, err)) != GK_OK)
        goto fail;
    t->cache = tk_cache_new();
    if (!t->cache) {
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory for the word cache");
        goto fail;
    }
    free(text);
    *out = t;
    return GK_OK;
fail:
    free(text);
    gk_tokenizer_destroy(t);
    return st;
}

void gk_tokenizer_destroy(gk_tokenizer *t)
{
    if (!t)
        return;
    tk_free_pipeline(t);
    tk_cache_free(t->cache);
    pthread_mutex_destroy(&t->cache_lock);
    free(t->path);
    free(t);
}

int64_t gk_tokenizer_vocab_size(const gk_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

int32_t gk_tokenizer_bos_id(const gk_tokenizer *t)
{
    return t ? t->bos_id : -1;
}

int32_t gk_tokenizer_eos_id(const gk_tokenizer *t)
{
    return t ? t->eos_id : -1;
}

const char *gk_tokenizer_token(const gk_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->n_ids)
        return NULL;
    return t->id_str[id];
}

int32_t gk_tokenizer_token_id(const gk_tokenizer *t, const char *token)
{
    return t && token ? lookup(t, token, strlen(token)) : -1;
}

/* ------------------------------------------------------------ added tokens */

/* Rust regex's \w (Alphabetic, marks, decimal digits, connector punctuation,
 * join controls), which HF's single_word test uses. */
static bool is_word(uint32_t cp)
{
    if (cp == 0x200C || cp == 0x200D)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

static size_t prev_char(const char *s, size_t i)
{
    do
        i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

static bool segs_push(tk_segs *v, size_t start, size_t end, int32_t id)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        tk_seg *p = realloc(v->p, cap * sizeof *p);
        if (!p)
            return false;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->len++] = (tk_seg){start, end, id};
    return true;
}

/* AddedVocabulary::find_matches over s[0..n) with the raw or the normalized set. */
static gk_status find_added(tk_enc *e, const char *s, size_t n, bool norm, tk_segs *out)
{
    const gk_tokenizer *t = e->t;
    const bool *first = norm ? t->added_norm_first_byte : t->added_first_byte;
    size_t start_offset = 0, pos = 0;
    bool ok = true;
    out->len = 0;
    while (ok && pos < n) {
        const tk_added *best = NULL;
        size_t best_len = 0, i;
        for (i = pos; i < n && !best; i++) {
            if (!first[(unsigned char)s[i]])
                continue;
            for (size_t k = 0; k < t->n_added; k++) {
                const tk_added *a = &t->added[k];
                if (a->normalized != norm)
                    continue;
                const char *c = norm ? a->norm_content : a->content;
                size_t cl = norm ? a->norm_len : a->len;
                if (cl > best_len && cl <= n - i && !memcmp(s + i, c, cl)) {
                    best = a;
                    best_len = cl;
                }
            }
        }
        if (!best)
            break;
        size_t start = i - 1, stop = start + best_len;
        pos = stop; /* the matcher goes on after the match, kept or not */
        uint32_t cp;
        if (best->single_word) {
            bool start_space = start == 0 || (tk_utf8_decode(s + prev_char(s, start), &cp), !is_word(cp));
            bool stop_space = stop == n || (tk_utf8_decode(s + stop, &cp), !is_word(cp));
            if (!start_space || !stop_space)
                continue;
        }
        if (best->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = prev_char(s, ns);
                tk_utf8_decode(s + p, &cp);
                if (!tk_is_white_space(cp))
                    break;
                ns = p;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (best->rstrip)
            while (stop < n && (tk_utf8_decode(s + stop, &cp), tk_is_white_space(cp)))
                stop += tk_utf8_decode(s + stop, &cp);
        if (start_offset < start)
            ok = segs_push(out, start_offset, start, -1);
        ok = ok && segs_push(out, start, stop, best->id);
        start_offset = stop;
    }
    if (ok && start_offset < n)
        ok = segs_push(out, start_offset, n, -1);
    return ok ? GK_OK : gk_err_set(e->err, GK_ERR_NOMEM, "no memory while encoding");
}

static gk_status encode_normalized(tk_enc *e, const char *s, size_t n, bool orig0)
{
    if (!e->t->any_added_norm)
        return tk_pretokenize(e, s, n, orig0);
    tk_segs *segs = &e->segs[1];
    gk_status st = find_added(e, s, n, true, segs);
    for (size_t i = 0; st == GK_OK && i < segs->len; i++) {
        tk_seg g = segs->p[i];
        if (g.id >= 0)
            st = tk_ivec_push(e->out, g.id) ? GK_OK : gk_err_set(e->err, GK_ERR_NOMEM, "no memory for ids");
        else
            st = tk_pretokenize(e, s + g.start, g.end - g.start, orig0 && g.start == 0);
    }
    return st;
}

static gk_status encode_text(tk_enc *e, const char *s, size_t n)
{
    const gk_tokenizer *t = e->t;
    tk_segs *segs = &e->segs[0];
    gk_status st = GK_OK;
    segs->len = 0;
    if (t->any_added_raw)
        st = find_added(e, s, n, false, segs);
    else if (n && !segs_push(segs, 0, n, -1))
        st = gk_err_set(e->err, GK_ERR_NOMEM, "no memory while encoding");
    for (size_t i = 0; st == GK_OK && i < segs->len; i++) {
        tk_seg g = segs->p[i];
        if (g.id >= 0) {
            if (!tk_ivec_push(e->out, g.id))
                st = gk_err_set(e->err, GK_ERR_NOMEM, "no memory for ids");
            continue;
        }
        if (g.end == g.start)
            continue;
        const char *ns;
        size_t nn;
        bool orig0 = g.start == 0;
        st = tk_normalize(e, s + g.start, g.end - g.start, &ns, &nn, &orig0);
        if (st == GK_OK && nn)
            st = encode_normalized(e, ns, nn, orig0);
    }
    return st;
}

/* ------------------------------------------------------------- encode */

/* Truncation, the single template (add_special only) and padding, in HF's order. */
static gk_status post_process(const gk_tokenizer *t, tk_ivec *v, bool add_special, gk_err *err)
{
    if (t->has_trunc) {
        size_t max = t->trunc_max;
        if (add_special && t->n_tpl_special) {
            if (max < t->n_tpl_special)
                return gk_err_set(err, GK_ERR_INVALID_ARG,
                                  "%s: truncation max_length %zu is below the %zu special tokens",
                                  t->path, max, t->n_tpl_special);
            max -= t->n_tpl_special;
        }
        if (v->len > max) {
            if (max > 0 && t->trunc_stride >= max)
                return gk_err_set(err, GK_ERR_INVALID_ARG,
                                  "%s: truncation stride %zu is not below max_length %zu", t->path,
                                  t->trunc_stride, max);
            if (t->trunc_left)
                memmove(v->p, v->p + v->len - max, max * sizeof *v->p);
            v->len = max;
        }
    }
    if (add_special && t->n_tpl > 1) {
        tk_ivec w = {0};
        if (!tk_ivec_reserve(&w, v->len + t->n_tpl))
            return gk_err_set(err, GK_ERR_NOMEM, "no memory for ids");
        for (size_t i = 0; i < t->n_tpl; i++) {
            if (!t->tpl[i].is_seq) {
                w.p[w.len++] = t->tpl[i].id;
            } else if (v->len) {
                memcpy(w.p + w.len, v->p, v->len * sizeof *v->p);
                w.len += v->len;
            }
        }
        tk_ivec_free(v);
        *v = w;
    }
    if (t->has_pad) {
        size_t target = t->pad_fixed ? t->pad_fixed : v->len;
        if (t->pad_multiple && target % t->pad_multiple)
            target += t->pad_multiple - target % t->pad_multiple;
        if (v->len < target) {
            size_t add = target - v->len;
            if (!tk_ivec_reserve(v, add))
                return gk_err_set(err, GK_ERR_NOMEM, "no memory for ids");
            if (t->pad_left)
                memmove(v->p + add, v->p, v->len * sizeof *v->p);
            for (size_t i = 0; i < add; i++)
                v->p[t->pad_left ? i : v->len + i] = t->pad_id;
            v->len = target;
        }
    }
    return GK_OK;
}

gk_status gk_tokenizer_encode(const gk_tokenizer *t, const char *text, size_t len,
                              bool add_special, int32_t **ids, size_t *n_ids, gk_err *err)
{
    if (ids)
        *ids = NULL;
    if (n_ids)
        *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_tokenizer_encode: tokenizer, text, ids and n_ids are required");
    size_t valid = tk_utf8_valid_prefix(text, len);
    if (valid != len)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "text: invalid UTF-8 at byte offset %zu (byte 0x%02X)",
                          valid, (unsigned char)text[valid]);
    tk_ivec out = {0};
    tk_enc e;
    gk_status st = tk_enc_init(&e, t, err);
    if (st != GK_OK)
        return st;
    e.out = &out;
    /* the word cache is the one mutable part of a tokenizer: whoever holds the lock
     * uses it, a concurrent caller goes without */
    pthread_mutex_t *lock = (pthread_mutex_t *)&t->cache_lock;
    bool locked = pthread_mutex_trylock(lock) == 0;
    e.cache = locked ? t->cache : NULL;
    st = encode_text(&e, text, len);
    if (locked)
        pthread_mutex_unlock(lock);
    tk_enc_free(&e);
    if (st == GK_OK)
        st = post_process(t, &out, add_special, err);
    if (st == GK_OK && !out.p && !tk_ivec_reserve(&out, 1))
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory for ids");
    if (st != GK_OK) {
        tk_ivec_free(&out);
        return st;
    }
    *ids = out.p;
    *n_ids = out.len;
    return GK_OK;
}

/* ------------------------------------------------------------- decode */

gk_status gk_tokenizer_decode(const gk_tokenizer *t, const int32_t *ids, size_t n_ids,
                              bool skip_special, char **text, size_t *len, gk_err *err)
{
    if (text)
        *text = NULL;
    if (len)
        *len = 0;
    if (!t || !text || (!ids && n_ids))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_tokenizer_decode: tokenizer, ids and text are required");
    const char **tok = malloc((n_ids ? n_ids : 1) * sizeof *tok);
    uint32_t *tok_len = malloc((n_ids ? n_ids : 1) * sizeof *tok_len);
    tk_buf out = {0};
    gk_status st = GK_OK;
    if (!tok || !tok_len) {
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory to decode %zu ids", n_ids);
        goto out;
    }
    size_t m = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_str[id]) {
            st = gk_err_set(err, GK_ERR_INVALID_ARG,
                            "id %d (position %zu) is outside the vocabulary of %s (%lld ids)", id, i,
                            t->path, (long long)t->n_ids);
            goto out;
        }
        if (skip_special && t->id_special[id])
            continue;
        tok[m] = t->id_str[id];
        tok_len[m++] = t->id_len[id];
    }
    if ((st = tk_decode_tokens(t, tok, tok_len, m, &out, err)) != GK_OK)
        goto out;
    if (!out.p && !tk_buf_put(&out, "", 0)) {
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory for text");
        goto out;
    }
    *text = out.p;
    if (len)
        *len = out.len;
    out.p = NULL;
out:
    tk_buf_free(&out);
    free(tok);
    free(tok_len);
    return st;
}
