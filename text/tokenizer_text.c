/* tokenizer_text.c - the text stages of encoding: normalizers and pre-tokenizers,
 * each with HF `tokenizers`' exact rules.
 *
 * Normalizers rewrite one piece of text (what lies between added tokens) into a
 * ping-pong buffer. Unicode forms go through utf8proc, with HF's Unicode 9.0 view of
 * characters added since (see POST_UNICODE9); runs of ASCII are copied as they are,
 * since no normalization form changes ASCII or composes across a following ASCII
 * character.
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
    bool ok = tk_match_init(&e->m);
    size_t n = t->n_pres ? t->n_pres : 1;
    e->stage_buf = calloc(n, sizeof *e->stage_buf);
    e->stage_spans = calloc(n, sizeof *e->stage_spans);
    if (!ok || !e->stage_buf || !e->stage_spans) {
        tk_enc_free(e);
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for the encoder's scratch state");
    }
    return GK_OK;
}

void tk_enc_free(tk_enc *e)
{
    tk_match_free(&e->m);
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
    free(e->sym);
    free(e->heap);
    *e = (tk_enc){0};
}

static gk_status nomem(tk_enc *e)
{
    return gk_err_set(e->err, GK_ERR_NOMEM, "no memory while encoding");
}

/* ------------------------------------------------------------ normalizers */

/* Code points that HF's normalizer tables (Unicode 9.0, from the
 * unicode-normalization-alignments crate) do not know, but utf8proc's (Unicode 15.0)
 * give a combining class or a (compatibility) decomposition: HF leaves them as they
 * are, as starters that neither move nor compose. Every one was added to Unicode
 * after 9.0; the list is what a probe of every code point through HF tokenizers
 * 0.23.2's NFC/NFD/NFKC/NFKD found different from utf8proc 2.8, plus U+11930 and
 * U+11935, which utf8proc composes into U+11938 (a pair probe of every composition
 * start against every combining or second character found no other). A utf8proc
 * with a newer Unicode would need the characters of that version added here. */
static const uint32_t POST_UNICODE9[][2] = {
    {0x07FD, 0x07FD}, {0x0898, 0x089F}, {0x08CA, 0x08D3}, {0x09FE, 0x09FE}, {0x0C3C, 0x0C3C},
    {0x0D3B, 0x0D3C}, {0x0EBA, 0x0EBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA},
    {0x32FF, 0x32FF}, {0xA7F2, 0xA7F4}, {0xA82C, 0xA82C}, {0xAB69, 0xAB69}, {0x10781, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC},
    {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070},
    {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930},
    {0x11935, 0x11935}, {0x11938, 0x11938},
    {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34},
    {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45},
    {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1}, {0x1E030, 0x1E06D},
    {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

static bool post_unicode9(uint32_t cp)
{
    size_t lo = 0, hi = sizeof POST_UNICODE9 / sizeof *POST_UNICODE9;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < POST_UNICODE9[mid][0])
            hi = mid;
        else if (cp > POST_UNICODE9[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* Length of the character at s[i] when it passes through any normalization form
 * unchanged and splits the text into independent parts, 0 otherwise: ASCII, the
 * characters above, and U+11A7 (a jungseong that composes with nothing, which
 * utf8proc 2.8 wrongly absorbs into a preceding LV syllable as trailing index 0). */
static size_t inert(const char *s, size_t i)
{
    if ((unsigned char)s[i] < 0x80)
        return 1;
    uint32_t cp;
    size_t k = tk_utf8_decode(s + i, &cp);
    return cp == 0x11A7 || (cp >= 0x0780 && post_unicode9(cp)) ? k : 0;
}

static gk_status unicode_form(tk_enc *e, tk_buf *dst, const char *s, size_t n, int flags)
{
    size_t i = 0;
    while (i < n) {
        size_t p = i, k;
        while (p < n && (k = inert(s, p)))
            p += k;
        if (p == n)
            return tk_buf_put(dst, s + i, n - i) ? GK_OK : nomem(e);
        /* the ASCII character before the run may compose with it */
        size_t start = p > i && (unsigned char)s[p - 1] < 0x80 ? p - 1 : p;
        size_t j = p;
        while (j < n && !inert(s, j)) {
            uint32_t cp;
            j += tk_utf8_decode(s + j, &cp);
        }
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

/* Lowercase mappings of capitals added in Unicode 16.0, which HF tokenizers 0.23.2
 * (Rust's char::to_lowercase) applies and utf8proc 2.8 (Unicode 15.0) lacks: {first,
 * last, delta}. Found by probing every code point through HF's Lowercase; used only
 * where utf8proc leaves the character unchanged. */
static const int32_t LOWER_UNICODE16[][3] = {
    {0x1C89, 0x1C89, 1}, {0xA7CB, 0xA7CB, -42343}, {0xA7CC, 0xA7CC, 1}, {0xA7CE, 0xA7CE, 1},
    {0xA7D2, 0xA7D2, 1}, {0xA7D4, 0xA7D4, 1}, {0xA7DA, 0xA7DA, 1}, {0xA7DC, 0xA7DC, -42561},
    {0x10D50, 0x10D65, 32}, {0x16EA0, 0x16EB8, 27},
};

static uint32_t to_lower(uint32_t cp)
{
    uint32_t lc = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
    if (lc != cp)
        return lc;
    for (size_t i = 0; i < sizeof LOWER_UNICODE16 / sizeof *LOWER_UNICODE16; i++)
        if ((int32_t)cp >= LOWER_UNICODE16[i][0] && (int32_t)cp <= LOWER_UNICODE16[i][1])
            return (uint32_t)((int32_t)cp + LOWER_UNICODE16[i][2]);
    return cp;
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
            k = tk_utf8_encode(to_lower(cp), tmp);
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
    gk_status st = tk_pattern_find(&nm->pat, &e->m, s, n, sp, e->err);
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
    gk_status st = tk_pattern_find(pat, &e->m, s, n, sp, e->err);
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
