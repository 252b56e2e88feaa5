/* tokenizer_stream.c - gk_decode_stream: the text of a growing list of ids,
 * always what gk_tokenizer_decode gives for the whole list, at a cost per id
 * that does not grow with the list (streamed output used to decode the
 * whole output again after every token).
 *
 * The decoders (tokenizer_decode.c) work piece by piece except in three
 * places: the first piece (Metaspace drops its leading space; a Strip after
 * the pieces are fused strips the text's start), a character whose bytes
 * come from several ids (ByteLevel; a run of ByteFallback <0xXX> tokens),
 * and a step that rewrites the fused text as a whole (a Replace, a
 * ByteFallback, an end Strip or a Strip of more than one character after
 * ByteLevel or Fuse). So when the text so far ends on a whole character and
 * its last id (the anchor) is an ordinary token whose text of its own is
 * not empty and ends on a whole character, the text of any longer list is
 * the text so far followed by what the anchor and the ids after it decode
 * to beyond the anchor's own text. The stream keeps the text so far and
 * decodes only the anchor and what came after it: two short decodes a push. A file with a rewriting
 * step never takes an anchor (each push decodes everything, as before), and
 * a window whose text does not begin with the anchor's own text (not
 * expected) is decoded whole again. test_tokenizer.c checks the text after
 * every id against a whole decode on the five reference tokenizers.
 */
#include "tokenizer_impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_ANCHOR SIZE_MAX

struct gk_decode_stream {
    const gk_tokenizer *t;
    bool skip_special;
    bool local;          /* the file's decoders allow an anchor */
    bool fallback;       /* a ByteFallback step: <0xXX> tokens are never anchors (a later
                          * byte can turn their whole run into U+FFFD; the window check
                          * would catch it, at the cost of a whole decode) */
    int32_t *ids;        /* [n] every id pushed */
    size_t n, cap;
    size_t anchor;       /* index of the anchor in ids, or NO_ANCHOR */
    size_t frozen;       /* bytes of text up to and including the anchor's: final */
    tk_buf anchor_text;  /* what the anchor decodes to alone */
    tk_buf text;         /* the text of ids[0..n), NUL-terminated */
};

static bool ends_with_replacement(const char *s, size_t len)
{
    return len >= 3 && !memcmp(s + len - 3, "\xEF\xBF\xBD", 3);
}

gk_status gk_decode_stream_new(const gk_tokenizer *t, bool skip_special, gk_decode_stream **out, gk_err *err)
{
    if (out)
        *out = NULL;
    if (!t || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_decode_stream_new: tokenizer and out are required");
    gk_decode_stream *s = calloc(1, sizeof *s);
    if (!s)
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for a decode stream");
    s->t = t;
    s->skip_special = skip_special;
    s->anchor = NO_ANCHOR;
    s->local = true;
    bool fused = false;
    for (size_t k = 0; k < t->n_decs; k++) {
        const tk_dec *d = &t->decs[k];
        switch (d->kind) {
        case TK_DEC_BYTELEVEL:
        case TK_DEC_FUSE:
            fused = true;
            break;
        case TK_DEC_REPLACE:
            s->local = s->local && !fused;
            break;
        case TK_DEC_BYTEFALLBACK:
            s->fallback = true;
            s->local = s->local && !fused;
            break;
        case TK_DEC_STRIP:
            s->local = s->local && (!fused || (d->stop == 0 && d->start <= 1));
            break;
        case TK_DEC_METASPACE:
            break;
        }
    }
    if (!tk_buf_put(&s->text, "", 0)) {
        free(s);
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for a decode stream");
    }
    *out = s;
    return GK_OK;
}

/* Decode ids[a..n) into a fresh malloc'd string. */
static gk_status decode_span(const gk_decode_stream *s, size_t a, char **text, size_t *len, gk_err *err)
{
    return gk_tokenizer_decode(s->t, s->ids + a, s->n - a, s->skip_special, text, len, err);
}

/* ids[n - 1] as the anchor, where the text so far and the id allow it.
 * Only a saving: where it fails (no memory), the anchor before stays, and
 * it is still right. */
static void take_anchor(gk_decode_stream *s)
{
    if (!s->local || s->n == 0 || ends_with_replacement(s->text.p, s->text.len))
        return;
    const int32_t id = s->ids[s->n - 1];
    if (s->skip_special && s->t->id_special[id])
        return;
    if (s->fallback && tk_byte_token(s->t->id_str[id], s->t->id_len[id]) >= 0)
        return;
    char *alone;
    size_t len;
    if (gk_tokenizer_decode(s->t, &id, 1, s->skip_special, &alone, &len, NULL) != GK_OK)
        return;
    if (len > 0 && !ends_with_replacement(alone, len)) {
        s->anchor_text.len = 0;
        if (tk_buf_put(&s->anchor_text, alone, len)) {
            s->anchor = s->n - 1;
            s->frozen = s->text.len;
        } else {
            s->anchor = NO_ANCHOR;
        }
    }
    free(alone);
}

gk_status gk_decode_stream_push(gk_decode_stream *s, const int32_t *ids, size_t n, gk_err *err)
{
    if (!s || (!ids && n))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_decode_stream_push: stream and ids are required");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->t->n_ids || !s->t->id_str[ids[i]])
            return gk_err_set(err, GK_ERR_INVALID_ARG,
                              "id %d (position %zu of the push) is outside the vocabulary of %s (%lld ids)", ids[i],
                              i, s->t->path, (long long)s->t->n_ids);
    if (n == 0)
        return GK_OK;
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n) {
            if (cap > SIZE_MAX / 2 / sizeof *s->ids)
                return gk_err_set(err, GK_ERR_NOMEM, "cannot keep more than %zu ids", s->n);
            cap *= 2;
        }
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p)
            return gk_err_set(err, GK_ERR_NOMEM, "cannot keep more than %zu ids", s->n);
        s->ids = p;
        s->cap = cap;
    }
    const size_t n0 = s->n;
    memcpy(s->ids + s->n, ids, n * sizeof *ids);
    s->n += n;
    char *w = NULL;
    size_t wl = 0;
    gk_status st = decode_span(s, s->anchor == NO_ANCHOR ? 0 : s->anchor, &w, &wl, err);
    bool whole = s->anchor == NO_ANCHOR;
    if (st == GK_OK && !whole &&
        (wl < s->anchor_text.len || memcmp(w, s->anchor_text.p, s->anchor_text.len))) {
        free(w); /* not expected (see the top): decode everything */
        s->anchor = NO_ANCHOR;
        whole = true;
        st = decode_span(s, 0, &w, &wl, err);
    }
    if (st != GK_OK) {
        s->n = n0; /* nothing appended */
        return st;
    }
    const size_t keep = whole ? 0 : s->frozen, skip = whole ? 0 : s->anchor_text.len;
    const size_t old_len = s->text.len;
    s->text.len = keep;
    if (!tk_buf_reserve(&s->text, wl - skip + 1)) { /* the text is as it was */
        free(w);
        s->text.len = old_len;
        s->n = n0;
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for %zu bytes of text", keep + wl - skip);
    }
    memcpy(s->text.p + keep, w + skip, wl - skip);
    s->text.len = keep + wl - skip;
    s->text.p[s->text.len] = '\0';
    free(w);
    take_anchor(s);
    return GK_OK;
}

const char *gk_decode_stream_text(const gk_decode_stream *s, size_t *len)
{
    if (len)
        *len = s ? s->text.len : 0;
    return s ? s->text.p : NULL;
}

void gk_decode_stream_destroy(gk_decode_stream *s)
{
    if (!s)
        return;
    free(s->ids);
    tk_buf_free(&s->anchor_text);
    tk_buf_free(&s->text);
    free(s);
}
