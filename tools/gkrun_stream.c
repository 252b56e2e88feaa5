/* gkrun_stream.c - see gkrun_stream.h. The text is always that of every
 * token so far (gk_decode_stream), never of each token alone: that is what
 * keeps SentencePiece spaces and multi-byte characters right. */
#include "gkrun_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ends_with_replacement(const char *s, size_t len)
{
    return len >= 3 && (unsigned char)s[len - 3] == 0xEF && (unsigned char)s[len - 2] == 0xBF &&
           (unsigned char)s[len - 1] == 0xBD;
}

/* Of text[printed, ready), the end that may be printed: before any stop
 * string found there, and before an end that is the start of one. */
static size_t stop_hold(const gkrun_stream *s, const char *text, size_t ready)
{
    size_t keep = ready;
    for (int i = 0; i < s->n_stop; i++) {
        const char *w = s->stop[i];
        size_t wl = strlen(w);
        const char *at = ready > s->printed ? memmem(text + s->printed, ready - s->printed, w, wl) : NULL;
        if (at && (size_t)(at - text) < keep)
            keep = (size_t)(at - text);
        for (size_t k = wl - 1; k > 0; k--) {
            if (k <= ready - s->printed && !memcmp(text + ready - k, w, k)) {
                if (ready - k < keep)
                    keep = ready - k;
                break;
            }
        }
    }
    return keep;
}

bool gkrun_stream_token(int32_t token, void *user)
{
    gkrun_stream *s = user;
    if (s->n == s->cap) {
        size_t cap, bytes;
        int32_t *p = NULL;
        if (gk_size_mul(s->cap ? s->cap : 128, 2, &cap) && gk_size_mul(cap, sizeof *p, &bytes))
            p = realloc(s->ids, bytes);
        if (!p) {
            s->err.code = GK_ERR_NOMEM;
            snprintf(s->err.msg, sizeof s->err.msg, "cannot keep more than %zu generated tokens", s->n);
            s->failed = true;
            return false;
        }
        s->ids = p;
        s->cap = cap;
    }
    if ((!s->ds && gk_decode_stream_new(s->tok, true, &s->ds, &s->err) != GK_OK) ||
        gk_decode_stream_push(s->ds, &token, 1, &s->err) != GK_OK) {
        s->failed = true;
        return false;
    }
    s->ids[s->n++] = token;
    size_t len;
    const char *text = gk_decode_stream_text(s->ds, &len);
    s->text = text;
    s->len = len;
    /* a replacement character at the end may be half a character: wait */
    size_t ready = stop_hold(s, text, ends_with_replacement(text, len) ? len - 3 : len);
    if (s->echo && ready > s->printed) {
        fwrite(text + s->printed, 1, ready - s->printed, stdout);
        fflush(stdout);
        s->printed = ready;
    }
    return !(s->interrupt && *s->interrupt);
}

void gkrun_stream_cut(gkrun_stream *s, const gk_gen_stats *st)
{
    if (st->finish != GK_FINISH_STOP || st->stop_index < 0 || st->stop_index >= s->n_stop || !s->text)
        return;
    const char *w = s->stop[st->stop_index];
    const char *at = memmem(s->text, s->len, w, strlen(w));
    size_t cut = at ? (size_t)(at - s->text) : st->stop_offset <= s->len ? st->stop_offset : s->len;
    if (cut < s->len)
        s->len = cut;
    if (s->printed > s->len) /* cannot happen while held back; never print past the cut */
        s->printed = s->len;
}

void gkrun_stream_flush(gkrun_stream *s)
{
    if (!s->echo || !s->text)
        return;
    if (s->len > s->printed)
        fwrite(s->text + s->printed, 1, s->len - s->printed, stdout);
    s->printed = s->len;
    fflush(stdout);
}

char *gkrun_stream_take(const gkrun_stream *s)
{
    char *t = malloc(s->len + 1);
    if (t) {
        if (s->len)
            memcpy(t, s->text, s->len);
        t[s->len] = '\0';
    }
    return t;
}

void gkrun_stream_free(gkrun_stream *s)
{
    free(s->ids);
    gk_decode_stream_destroy(s->ds);
    s->ids = NULL;
    s->ds = NULL;
    s->text = NULL;
    s->n = s->cap = s->len = s->printed = 0;
}
