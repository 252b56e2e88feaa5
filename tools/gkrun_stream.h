/* gkrun_stream.h - the generated text as it comes (gkrun_stream.c): generate
 * and chat keep the text of the new tokens so far (a gk_decode_stream) and
 * print only what is new and complete, holding back half a UTF-8 character
 * and any text that may begin a stop string. */
#ifndef GKRUN_STREAM_H
#define GKRUN_STREAM_H

#include <gk/gk.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct gkrun_stream {
    /* set by the caller */
    const gk_tokenizer *tok;
    int n_stop;
    const char *const *stop;            /* [n_stop] */
    bool echo;                          /* print to stdout as tokens come */
    const volatile sig_atomic_t *interrupt; /* non-zero: stop after this token (NULL: never) */
    /* kept by the stream */
    int32_t *ids;                       /* [n] the tokens so far (capacity cap) */
    size_t n, cap;
    gk_decode_stream *ds;               /* their text */
    const char *text;                   /* ds's text, len bytes (NUL bytes possible; valid until
                                         * the next token; len ends it after a cut) */
    size_t len, printed;                /* printed: bytes of text already on stdout */
    bool failed;                        /* err says why */
    gk_err err;
} gkrun_stream;

/* The gk_token_cb: user is the gkrun_stream. */
bool gkrun_stream_token(int32_t token, void *user);
/* After a generate that ended on a stop string: the text ends where it starts. */
void gkrun_stream_cut(gkrun_stream *s, const gk_gen_stats *st);
/* With echo: print what was held back (the text is final). */
void gkrun_stream_flush(gkrun_stream *s);
/* The text (len bytes) as a malloc'd NUL-terminated copy; NULL when out of memory. */
char *gkrun_stream_take(const gkrun_stream *s);
void gkrun_stream_free(gkrun_stream *s);

#endif
