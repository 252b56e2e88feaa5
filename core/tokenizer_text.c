/* tokenizer_text.c - the text stages of encoding: normalizers and pre-tokenizers,
 * each with HF `tokenizers`' exact rules.
 *
 * Normalizers rewrite one piece of text (what lies between added tokens) into a
 * ping-pong buffer. Unicode forms go through utf8proc; runs of ASCII are copied as
 * they are, since no normalization form changes ASCII or composes across a
 * following ASCII character.
 * Pre-tokenizer stages cut a piece into words and hand each word to the next
 * stage, the last to the BPE model. Empty words are dropped at every stage, as
 * PreTokenizedString::split does. Metaspace's prepend_scheme "first" needs to know
 * whether a word starts at offset 0 of the original text; that travels as orig0.
 * What this file is not: the added-token split or the post-processor (tokenizer.c).
 */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

gk_status tk_enc_init(tk_enc *e, const gk_tokenizer *t, gk_err *err)
{
    *e = (tk_enc){.t = t, .err = err};
    e->md = pcre2_match_data_create(1, NULL);
    size_t n = t->n_pres ? t->n_pres : 1;
    e->stage_buf = calloc(n, sizeof *e->stage_buf);
    e->stage_spans = calloc(n, sizeof *e->stage_spans);
    if (!e->md || !e->stage_buf || !e->stage_spans) {
        tk_enc_free(e);
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for the encoder's scratch state");
    }
    return GK_OK;
}

void tk_enc_free(tk_enc *e)
{
    pcre2_match_data_free(e->md);
    if (e->stage_buf)
        for (size_t i = 0; i < (e->t->n_pres ? e->t->n_pres : 1); i++)
            tk_buf_free(&e->stage_buf[i]);
    if (e->stage_spans)
        for (size_t i = 0; i < (e->t->n_pres ? e->t->n_pres : 1); i++)
            free(e->stage_spans[i].p);
    free(e->stage_buf);
    free(e->stage_spans);
    tk_buf_free(&e->norm[0]);
    tk_buf_free(&e->norm[1]);
    free(e->segs[0].p);
    free(e->segs[1].p);
    tk_buf_free(&e->word);
    free(e->sym);
    free(e->heap);
    *e = (tk_enc){0};
}

static gk_status nomem(tk_enc *e)
{
    return gk_err_set(e->err, GK_ERR_NOMEM, "no memory while encoding");
}

/* ------------------------------------------------------------ normalizers */

static gk_status unicode_form(tk_enc *e, tk_buf *dst, const char *s, size_t n, int flags)
{
    size_t i = 0;
    while (i < n) {
        size_t k = i;
        while (k < n && (unsigned char)s[k] < 0x80)
            k++;
        if (k == n)
            return tk_buf_put(dst, s + i, n - i) ? GK_OK : nomem(e);
        /* the ASCII character before a non-ASCII run may compose with it */
        size_t start = k > i ? k - 1 : k;
        size_t j = k;
        while (j < n && (unsigned char)s[j] >= 0x80)
            j++;
        if (!tk_buf_put(dst, s + i, start - i))
            return nomem(e);
        utf8proc_uint8_t *res = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s + start,
                                          (utf8proc_ssize_t)(j - start), &res,
                                          (utf8proc_option_t)(UTF8PROC_STABLE | flags));
        if (r < 0) {
            free(res);
            return gk_err_set(e->err, r == UTF8PROC_ERROR_NOMEM ? GK_ERR_NOMEM : GK_ERR_INVALID_ARG,
                              "text: Unicode normalization failed at byte %zu: %s", start,
                              utf8proc_errmsg(r));
        }
        bool ok = tk_buf_put(dst, res, (size_t)r);
        free(res);
        if (!ok)
            return nomem(e);
        i = j;
    }
    return GK_OK;
}

static gk_status lowercase(tk_enc *e, tk_buf *dst, const char *s, size_t n)
{
    if (!tk_buf_reserve(dst, n + 8))
        return nomem(e);
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x80) {
            char c = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
            if (!tk_buf_put(dst, &c, 1))
                return nomem(e);
            i++;
            continue;
        }
        uint32_t cp;
        i += tk_utf8_decode(s + i, &cp);
        char tmp[8];
        size_t k;
        if (cp == 0x130) { /* the one unconditional multi-character lowercase mapping */
            k = tk_utf8_encode('i', tmp);
            k += tk_utf8_encode(0x307, tmp + k);
        } else {
            k = tk_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), tmp);
        }
        if (!tk_buf_put(dst, tmp, k))
            return nomem(e);
    }
    return GK_OK;
}

static size_t prev_char(const char *s, size_t i)
{
    do
        i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

static gk_status replace(tk_enc *e, const tk_norm *nm, tk_buf *dst, const char *s, size_t n,
                         bool *orig0)
{
    tk_spans *sp = &e->stage_spans[0];
    gk_status st = tk_pattern_find(&nm->pat, e->md, s, n, sp, e->err);
    if (st != GK_OK)
        return st;
    for (size_t i = 0; i < sp->len; i++) {
        const tk_span *x = &sp->p[i];
        bool ok = x->match ? tk_buf_put(dst, nm->content, nm->content_len)
                           : tk_buf_put(dst, s + x->start, x->end - x->start);
        if (!ok)
            return nomem(e);
        /* text removed at the start: what follows no longer begins at offset 0 */
        if (i == 0 && x->match && x->end > 0 && nm->content_len == 0)
            *orig0 = false;
    }
    return GK_OK;
}

gk_status tk_normalize(tk_enc *e, const char *s, size_t n, const char **out, size_t *out_n,
                       bool *orig0)
{
    const gk_tokenizer *t = e->t;
    int which = 0;
    for (size_t k = 0; k < t->n_norms; k++) {
        const tk_norm *nm = &t->norms[k];
        tk_buf *dst = &e->norm[which];
        dst->len = 0;
        if (!tk_buf_put(dst, "", 0))
            return nomem(e);
        gk_status st = GK_OK;
        switch (nm->kind) {
        case TK_NORM_NFC:
        case TK_NORM_NFD:
        case TK_NORM_NFKC:
        case TK_NORM_NFKD: {
            static const int flags[] = {
                [TK_NORM_NFC] = UTF8PROC_COMPOSE,
                [TK_NORM_NFD] = UTF8PROC_DECOMPOSE,
                [TK_NORM_NFKC] = UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                [TK_NORM_NFKD] = UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
            };
            size_t i = 0;
            while (i < n && (unsigned char)s[i] < 0x80)
                i++;
            if (i == n)
                continue; /* ASCII only: unchanged, no copy */
            st = unicode_form(e, dst, s, n, flags[nm->kind]);
            break;
        }
        case TK_NORM_LOWERCASE:
            st = lowercase(e, dst, s, n);
            break;
        case TK_NORM_STRIP: {
            size_t a = 0, b = n;
            uint32_t cp;
            while (nm->left && a < b && (tk_utf8_decode(s + a, &cp), tk_is_white_space(cp)))
                a += tk_utf8_decode(s + a, &cp);
            while (nm->right && b > a) {
                size_t p = prev_char(s, b);
                tk_utf8_decode(s + p, &cp);
                if (!tk_is_white_space(cp))
                    break;
                b = p;
            }
            if (a > 0 && a < n)
                *orig0 = false;
            s += a;
            n = b - a;
            continue; /* a view of the same text: no buffer swap */
        }
        case TK_NORM_REPLACE:
            st = replace(e, nm, dst, s, n, orig0);
            break;
        case TK_NORM_PREPEND:
            if (n == 0)
                continue;
            if (!tk_buf_put(dst, nm->content, nm->content_len) || !tk_buf_put(dst, s, n))
                return nomem(e);
            break;
        }
        if (st != GK_OK)
            return st;
        s = dst->p;
        n = dst->len;
        which ^= 1;
    }
    *out = s;
    *out_n = n;
    return GK_OK;
}

/* ---------------------------------------------------------- pre-tokenizers */

static gk_status stage(tk_enc *e, size_t k, const char *s, size_t n, bool orig0);

/* Cut s by pattern with HF's SplitDelimiterBehavior, then run stage k+1 on each piece. */
static gk_status split_run(tk_enc *e, size_t k, const tk_pattern *pat, tk_behavior behavior,
                           bool invert, const char *s, size_t n, bool orig0)
{
    tk_spans *sp = &e->stage_spans[k];
    gk_status st = tk_pattern_find(pat, e->md, s, n, sp, e->err);
    if (st != GK_OK)
        return st;
    tk_span *v = sp->p;
    size_t len = sp->len, first = 0, w = 0;
    if (invert)
        for (size_t i = 0; i < len; i++)
            v[i].match = !v[i].match;
    switch (behavior) {
    case TK_ISOLATED:
        w = len;
        break;
    case TK_REMOVED:
        for (size_t i = 0; i < len; i++)
            if (!v[i].match)
                v[w++] = v[i];
        break;
    case TK_CONTIGUOUS:
    case TK_MERGED_PREV: {
        bool prev = false;
        for (size_t i = 0; i < len; i++) {
            bool m = v[i].match;
            bool join = behavior == TK_CONTIGUOUS ? m == prev : (m && !prev);
            if (join && w > 0)
                v[w - 1].end = v[i].end;
            else
                v[w++] = v[i];
            prev = m;
        }
        break;
    }
    case TK_MERGED_NEXT: {
        bool prev = false;
        w = len;
        for (size_t i = len; i-- > 0;) {
            bool m = v[i].match;
            if (m && !prev && w < len)
                v[w].start = v[i].start;
            else
                v[--w] = v[i];
            prev = m;
        }
        first = w;
        w = len;
        break;
    }
    }
    for (size_t i = first; i < w; i++) {
        /* the recursion never touches stage k's spans: read each piece afresh */
        tk_span x = sp->p[i];
        st = stage(e, k + 1, s + x.start, x.end - x.start, orig0 && x.start == 0);
        if (st != GK_OK)
            return st;
    }
    return GK_OK;
}

static gk_status stage(tk_enc *e, size_t k, const char *s, size_t n, bool orig0)
{
    if (n == 0)
        return GK_OK;
    const gk_tokenizer *t = e->t;
    if (k == t->n_pres)
        return tk_bpe_word(e, s, n);
    const tk_pre *p = &t->pres[k];
    tk_buf *buf = &e->stage_buf[k];
    buf->len = 0;
    switch (p->kind) {
    case TK_PRE_BYTEMAP:
        if (!tk_buf_reserve(buf, 2 * n + 1))
            return nomem(e);
        for (size_t i = 0; i < n; i++) {
            unsigned char b = (unsigned char)s[i];
            memcpy(buf->p + buf->len, t->byte_char[b], 2);
            buf->len += t->byte_char_len[b];
        }
        return stage(e, k + 1, buf->p, buf->len, orig0);
    case TK_PRE_SPLIT:
        if (p->prefix_space && s[0] != ' ') {
            if (!tk_buf_put(buf, " ", 1) || !tk_buf_put(buf, s, n))
                return nomem(e);
            s = buf->p;
            n = buf->len;
        }
        if (!p->has_pattern)
            return stage(e, k + 1, s, n, orig0);
        return split_run(e, k, &p->pat, p->behavior, p->invert, s, n, orig0);
    case TK_PRE_METASPACE: {
        bool starts = s[0] == ' ' || (n >= p->rep_len && !memcmp(s, p->rep, p->rep_len));
        bool add = !starts && (p->prepend == TK_PREPEND_ALWAYS ||
                               (p->prepend == TK_PREPEND_FIRST && orig0));
        if (!tk_buf_reserve(buf, n * p->rep_len + p->rep_len + 1))
            return nomem(e);
        if (add)
            tk_buf_put(buf, p->rep, p->rep_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ')
                tk_buf_put(buf, p->rep, p->rep_len);
            else
                buf->p[buf->len++] = s[i];
        }
        if (!p->split)
            return stage(e, k + 1, buf->p, buf->len, orig0);
        return split_run(e, k, &p->pat, TK_MERGED_NEXT, false, buf->p, buf->len, orig0);
    }
    }
    return GK_OK;
}

gk_status tk_pretokenize(tk_enc *e, const char *s, size_t n, bool orig0)
{
    return stage(e, 0, s, n, orig0);
}
