/* tokenizer_decode.c - HF `tokenizers` decoders: the token strings of some ids
 * become text through a chain of steps, each taking a list of strings to a list.
 *
 * ByteLevel maps each token's characters back to bytes (a token with a character
 * outside the byte alphabet, such as an added token, contributes its own UTF-8)
 * and turns the concatenation into text with Rust's String::from_utf8_lossy: a
 * sequence cut inside a character gives one U+FFFD per maximal ill-formed
 * subpart, exactly as HF decode does. ByteFallback turns runs of <0xXX> tokens into
 * text and, when a run is not valid UTF-8, one U+FFFD per byte (HF's rule).
 * The result of every decoder is therefore valid UTF-8.
 * What this file is not: id validation or special-token skipping (tokenizer.c).
 */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* A list of strings: string i is text[off[i] .. off[i + 1]). */
typedef struct toks {
    tk_buf text;
    size_t *off;
    size_t n, cap;
} toks;

static bool toks_end(toks *t)
{
    if (t->n + 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        while (cap < t->n + 2)
            cap *= 2;
        size_t *p = realloc(t->off, cap * sizeof *p);
        if (!p)
            return false;
        t->off = p;
        t->cap = cap;
    }
    t->n++;
    t->off[t->n] = t->text.len;
    return true;
}

static bool toks_add(toks *t, const char *s, size_t n)
{
    return tk_buf_put(&t->text, s, n) && toks_end(t);
}

static void toks_reset(toks *t)
{
    t->text.len = 0;
    t->n = 0;
    if (!t->off) {
        t->off = malloc(64 * sizeof *t->off);
        t->cap = t->off ? 64 : 0;
    }
    if (t->off)
        t->off[0] = 0;
}

static void toks_free(toks *t)
{
    tk_buf_free(&t->text);
    free(t->off);
}

#define TOK(l, i) ((l)->text.p + (l)->off[i])
#define TOKLEN(l, i) ((l)->off[(i) + 1] - (l)->off[i])

static bool byte_level(const gk_tokenizer *t, const toks *in, toks *out)
{
    tk_buf bytes = {0};
    bool ok = tk_buf_reserve(&bytes, in->text.len + 1);
    for (size_t i = 0; ok && i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = TOKLEN(in, i), start = bytes.len;
        bool all = true;
        for (size_t k = 0; k < n && all;) {
            uint32_t cp;
            k += tk_utf8_decode(s + k, &cp);
            if (cp < 324 && t->byte_of_char[cp] >= 0)
                bytes.p[bytes.len++] = (char)t->byte_of_char[cp];
            else
                all = false;
        }
        if (!all) {
            bytes.len = start;
            ok = tk_buf_put(&bytes, s, n);
        }
    }
    ok = ok && tk_utf8_lossy(&out->text, bytes.p ? bytes.p : "", bytes.len) && toks_end(out);
    tk_buf_free(&bytes);
    return ok;
}

/* "<0xAB>" as u8::from_str_radix reads it (which also accepts a '+' sign). */
int tk_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
        return -1;
    int v = 0;
    for (size_t i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : -1;
        if (d < 0) {
            if (i == 3 && c == '+')
                continue;
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

static bool flush_bytes(toks *out, tk_buf *run)
{
    bool ok = true;
    if (!run->len)
        return true;
    if (tk_utf8_valid_prefix(run->p, run->len) == run->len)
        ok = toks_add(out, run->p, run->len);
    else
        for (size_t i = 0; ok && i < run->len; i++)
            ok = toks_add(out, "\xEF\xBF\xBD", 3);
    run->len = 0;
    return ok;
}

static bool byte_fallback(const toks *in, toks *out)
{
    tk_buf run = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < in->n; i++) {
        int b = tk_byte_token(TOK(in, i), TOKLEN(in, i));
        if (b >= 0) {
            char c = (char)b;
            ok = tk_buf_put(&run, &c, 1);
        } else {
            ok = flush_bytes(out, &run) && toks_add(out, TOK(in, i), TOKLEN(in, i));
        }
    }
    ok = ok && flush_bytes(out, &run);
    tk_buf_free(&run);
    return ok;
}

static bool strip(const tk_dec *d, const toks *in, toks *out)
{
    char c[4];
    size_t cl = tk_utf8_encode(d->ch, c);
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = TOKLEN(in, i), a = 0, b = n, nchars = 0;
        for (size_t k = 0; k < n; nchars++) {
            uint32_t cp;
            k += tk_utf8_decode(s + k, &cp);
        }
        size_t cut = 0;
        while (cut < d->start && a + cl <= n && !memcmp(s + a, c, cl)) {
            a += cl;
            cut++;
        }
        size_t left = nchars - cut;
        for (size_t k = 0; k < d->stop && k < left && b >= a + cl && !memcmp(s + b - cl, c, cl); k++)
            b -= cl;
        if (!toks_add(out, s + a, b - a))
            return false;
    }
    return true;
}

static bool metaspace(const tk_dec *d, const toks *in, toks *out)
{
    char c[4];
    size_t cl = tk_utf8_encode(d->ch, c);
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = TOKLEN(in, i), run = 0;
        bool ok = true;
        for (size_t k = 0; ok && k < n;) {
            if (k + cl <= n && !memcmp(s + k, c, cl)) {
                ok = tk_buf_put(&out->text, s + run, k - run);
                if (ok && !(i == 0 && d->prepend))
                    ok = tk_buf_put(&out->text, " ", 1);
                k += cl;
                run = k;
            } else {
                k++;
            }
        }
        if (!ok || !tk_buf_put(&out->text, s + run, n - run) || !toks_end(out))
            return false;
    }
    return true;
}

static gk_status replace(const tk_dec *d, const toks *in, toks *out, gk_err *err)
{
    tk_spans sp = {0};
    tk_match m;
    gk_status st = tk_match_init(&m) ? GK_OK : gk_err_set(err, GK_ERR_NOMEM, "no memory for a regex match");
    for (size_t i = 0; st == GK_OK && i < in->n; i++) {
        const char *s = TOK(in, i);
        st = tk_pattern_find(&d->pat, &m, s, TOKLEN(in, i), &sp, err);
        for (size_t k = 0; st == GK_OK && k < sp.len; k++) {
            const tk_span *x = &sp.p[k];
            bool ok = x->match ? tk_buf_put(&out->text, d->content, d->content_len)
                               : tk_buf_put(&out->text, s + x->start, x->end - x->start);
            if (!ok)
                st = gk_err_set(err, GK_ERR_NOMEM, "no memory while decoding");
        }
        if (st == GK_OK && !toks_end(out))
            st = gk_err_set(err, GK_ERR_NOMEM, "no memory while decoding");
    }
    tk_match_free(&m);
    free(sp.p);
    return st;
}

gk_status tk_decode_tokens(const gk_tokenizer *t, const char *const *tok, const uint32_t *tok_len,
                           size_t n, tk_buf *out, gk_err *err)
{
    toks a = {0}, b = {0};
    toks *in = &a, *nx = &b;
    gk_status st = GK_OK;
    toks_reset(in);
    bool ok = in->off != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = toks_add(in, tok[i], tok_len[i]);
    for (size_t k = 0; ok && st == GK_OK && k < t->n_decs; k++) {
        const tk_dec *d = &t->decs[k];
        toks_reset(nx);
        ok = nx->off != NULL;
        if (!ok)
            break;
        switch (d->kind) {
        case TK_DEC_BYTELEVEL:
            ok = byte_level(t, in, nx);
            break;
        case TK_DEC_BYTEFALLBACK:
            ok = byte_fallback(in, nx);
            break;
        case TK_DEC_FUSE:
            ok = tk_buf_put(&nx->text, in->text.p ? in->text.p : "", in->text.len) && toks_end(nx);
            break;
        case TK_DEC_STRIP:
            ok = strip(d, in, nx);
            break;
        case TK_DEC_METASPACE:
            ok = metaspace(d, in, nx);
            break;
        case TK_DEC_REPLACE:
            st = replace(d, in, nx, err);
            break;
        }
        toks *tmp = in;
        in = nx;
        nx = tmp;
    }
    /* the decoders' pieces are joined with "", or with " " when there is none */
    for (size_t i = 0; ok && st == GK_OK && i < in->n; i++) {
        if (i > 0 && !t->has_decoder)
            ok = tk_buf_put(out, " ", 1);
        ok = ok && tk_buf_put(out, TOK(in, i), TOKLEN(in, i));
    }
    if (ok && st == GK_OK)
        ok = tk_buf_put(out, "", 0);
    if (!ok && st == GK_OK)
        st = gk_err_set(err, GK_ERR_NOMEM, "no memory while decoding");
    toks_free(&a);
    toks_free(&b);
    return st;
}
