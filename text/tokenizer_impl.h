/* tokenizer_impl.h - what the tokenizer files share: the loaded pipeline and the
 * scratch state of one encode call. Not installed, not API.
 *
 * The pipeline mirrors HuggingFace `tokenizers` step for step: added tokens are cut
 * out of the raw text, the rest is normalized, cut again on "normalized" added tokens,
 * run through the pre-tokenizer stages and finally through the BPE model; the
 * post-processor then wraps the ids. Every stage keeps HF's exact rules (which split
 * is dropped when empty, which regex engine semantics apply); where our tools differ
 * (PCRE2 for Oniguruma) the difference is patched, not ignored.
 */
#ifndef GK_TOKENIZER_IMPL_H
#define GK_TOKENIZER_IMPL_H

#include "gk_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

/* ------------------------------------------------------------ byte buffers */

typedef struct tk_buf {
    char *p;
    size_t len, cap;
} tk_buf;

GK_INTERNAL bool tk_buf_reserve(tk_buf *b, size_t extra);
/* A ByteFallback byte token "<0xAB>": its byte, else -1 (tokenizer_decode.c). */
GK_INTERNAL int tk_byte_token(const char *s, size_t n);
GK_INTERNAL bool tk_buf_put(tk_buf *b, const void *src, size_t n);
GK_INTERNAL void tk_buf_free(tk_buf *b);

/* Growable array of int32 (ids, spans). */
typedef struct tk_ivec {
    int32_t *p;
    size_t len, cap;
} tk_ivec;

GK_INTERNAL bool tk_ivec_reserve(tk_ivec *v, size_t extra);
GK_INTERNAL bool tk_ivec_push(tk_ivec *v, int32_t x);
GK_INTERNAL void tk_ivec_free(tk_ivec *v);

GK_INTERNAL uint64_t tk_hash(const void *p, size_t n);

/* gk_quote for a string of n bytes that may hold NULs (each shown as \x00);
 * s[n] must be NUL. Returns buf. For tokens read from files, in messages. */
GK_INTERNAL const char *tk_quote_n(char *buf, size_t cap, const char *s, size_t n);

/* ------------------------------------------------------------------ JSON */

struct cJSON;
/* Parse a whole JSON file's text with gk_json_parse (strings keep their NUL
 * characters: read their length with gk_json_strlen). On failure *out is NULL
 * and the GK_ERR_FORMAT message names the file and the byte offset (for an
 * object key holding a NUL, which is refused, the key). */
GK_INTERNAL gk_status tk_json_load(const char *file, const char *text, size_t len,
                                   struct cJSON **out, gk_err *err);

/* ------------------------------------------------------ string -> id table */

/* Open addressing; keys live in one arena. Values are ids (>= 0). */
typedef struct tk_strtab {
    struct tk_slot {
        uint32_t hash;
        uint32_t klen;
        uint32_t koff;
        int32_t val;
    } *slots;          /* [mask + 1]; klen == UINT32_MAX marks an empty slot */
    size_t mask, count;
    tk_buf keys;
} tk_strtab;

GK_INTERNAL bool tk_strtab_init(tk_strtab *t, size_t expect);
GK_INTERNAL void tk_strtab_free(tk_strtab *t);
/* -1 when absent. */
GK_INTERNAL int32_t tk_strtab_get(const tk_strtab *t, const char *k, size_t n);
/* Insert or overwrite. false when out of memory. */
GK_INTERNAL bool tk_strtab_put(tk_strtab *t, const char *k, size_t n, int32_t val);

/* ----------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 prefix of s[0..n) (== n when all is valid). */
GK_INTERNAL size_t tk_utf8_valid_prefix(const char *s, size_t n);
/* Decode one code point of valid UTF-8; returns its byte length. */
GK_INTERNAL size_t tk_utf8_decode(const char *s, uint32_t *cp);
GK_INTERNAL size_t tk_utf8_encode(uint32_t cp, char *out);
/* Append s with every ill-formed sequence replaced by U+FFFD, as Rust's
 * String::from_utf8_lossy (one U+FFFD per maximal ill-formed subpart). */
GK_INTERNAL bool tk_utf8_lossy(tk_buf *out, const char *s, size_t n);
/* Unicode White_Space (Rust's char::is_whitespace), from utf8proc's categories. */
GK_INTERNAL bool tk_is_white_space(uint32_t cp);

/* --------------------------------------------------------------- patterns */

/* A Split / Replace pattern: a literal string or a PCRE2 regex compiled with
 * Oniguruma's meaning of \s (see tokenizer_text.c). */
typedef struct tk_pattern {
    char *literal;            /* String pattern (NUL-terminated), or NULL */
    size_t lit_len;
    pcre2_code *re;           /* Regex pattern, or NULL */
    pcre2_code *re_onig;      /* variant with U+180E outside \s; NULL when identical */
} tk_pattern;

typedef struct tk_span {
    uint32_t start, end;
    bool match;
} tk_span;

typedef struct tk_spans {
    tk_span *p;
    size_t len, cap;
} tk_spans;

/* Match state for one thread: the match data, and a large JIT stack made only when
 * a match needs more than PCRE2's default (a long run of spaces can). */
typedef struct tk_match {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
} tk_match;

GK_INTERNAL bool tk_match_init(tk_match *m);
GK_INTERNAL void tk_match_free(tk_match *m);

GK_INTERNAL gk_status tk_pattern_regex(tk_pattern *p, const char *re, const char *file,
                                       const char *what, gk_err *err);
GK_INTERNAL gk_status tk_pattern_literal(tk_pattern *p, const char *s, gk_err *err);
GK_INTERNAL void tk_pattern_free(tk_pattern *p);
/* HF's Pattern::find_matches: contiguous spans covering s[0..n), alternating
 * non-match / match (matches may be adjacent), one non-match span for "". */
GK_INTERNAL gk_status tk_pattern_find(const tk_pattern *p, tk_match *m,
                                      const char *s, size_t n, tk_spans *out, gk_err *err);

/* ------------------------------------------------------------- pipeline */

typedef enum tk_norm_kind {
    TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD,
    TK_NORM_LOWERCASE, TK_NORM_STRIP, TK_NORM_REPLACE, TK_NORM_PREPEND,
} tk_norm_kind;

typedef struct tk_norm {
    tk_norm_kind kind;
    tk_pattern pat;           /* REPLACE */
    char *content;            /* REPLACE, PREPEND */
    size_t content_len;
    bool left, right;         /* STRIP */
} tk_norm;

typedef enum tk_behavior {
    TK_REMOVED, TK_ISOLATED, TK_MERGED_PREV, TK_MERGED_NEXT, TK_CONTIGUOUS,
} tk_behavior;

typedef enum tk_pre_kind {
    TK_PRE_SPLIT,      /* optional prefix space, then split on pattern */
    TK_PRE_BYTEMAP,    /* ByteLevel's byte -> printable char mapping */
    TK_PRE_METASPACE,
} tk_pre_kind;

typedef enum tk_prepend { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend;

typedef struct tk_pre {
    tk_pre_kind kind;
    bool prefix_space;        /* SPLIT: ByteLevel add_prefix_space */
    bool has_pattern;         /* SPLIT: false for ByteLevel(use_regex=false) */
    tk_pattern pat;           /* SPLIT; METASPACE: the replacement as a literal */
    tk_behavior behavior;
    bool invert;
    char rep[5];              /* METASPACE replacement, UTF-8 */
    size_t rep_len;
    tk_prepend prepend;
    bool split;
} tk_pre;

typedef enum tk_dec_kind {
    TK_DEC_BYTELEVEL, TK_DEC_REPLACE, TK_DEC_BYTEFALLBACK, TK_DEC_FUSE, TK_DEC_STRIP,
    TK_DEC_METASPACE,
} tk_dec_kind;

typedef struct tk_dec {
    tk_dec_kind kind;
    tk_pattern pat;           /* REPLACE */
    char *content;            /* REPLACE */
    size_t content_len;
    uint32_t ch;              /* STRIP content, METASPACE replacement */
    size_t start, stop;       /* STRIP */
    bool prepend;             /* METASPACE: prepend_scheme != never */
} tk_dec;

/* One element of the post-processor's single-sequence template. */
typedef struct tk_tpl_item {
    bool is_seq;              /* the encoded text goes here */
    int32_t id;               /* otherwise this special id */
} tk_tpl_item;

typedef struct tk_bpe {
    tk_strtab vocab;
    struct tk_merge {
        uint64_t key;         /* (left << 32) | right; UINT64_MAX = empty */
        uint32_t rank;
        int32_t id;
    } *merges;                /* [merge_mask + 1] */
    size_t merge_mask;
    int32_t char_id[2048];    /* id of a one-char token for code points < 2048, or -1 */
    int32_t byte_id[256];     /* id of "<0xXX>" (byte_fallback), or -1 */
    bool byte_fallback, fuse_unk, ignore_merges;
    char *unk_token;          /* NULL when none */
    int32_t unk_id;           /* -1 when unk_token is absent from the vocabulary */
} tk_bpe;

typedef struct tk_added {
    char *content;
    size_t len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
    char *norm_content;       /* content through the normalizer (normalized tokens) */
    size_t norm_len;
} tk_added;

/* Word cache of the BPE model (HF keeps one too). Guarded by gk_tokenizer.cache_lock;
 * an encode call that cannot take the lock works without it. */
typedef struct tk_cache {
    struct tk_centry {
        uint64_t hash;
        uint32_t koff, ioff;
        uint16_t klen, nids;  /* klen == 0 marks an empty slot (words are never empty) */
    } *slots;
    size_t mask, count;
    tk_buf keys;
    tk_ivec ids;
} tk_cache;

struct gk_tokenizer {
    char *path;
    tk_bpe bpe;

    tk_norm *norms;
    size_t n_norms;
    tk_pre *pres;
    size_t n_pres;
    tk_dec *decs;
    size_t n_decs;
    bool has_decoder;         /* false: decode joins tokens with " " (HF's default) */

    tk_tpl_item *tpl;         /* single template, always holding one is_seq item */
    size_t n_tpl;
    size_t n_tpl_special;

    bool has_trunc;
    size_t trunc_max, trunc_stride;
    bool trunc_left;
    bool has_pad;
    size_t pad_fixed;         /* 0: BatchLongest (the sequence's own length) */
    size_t pad_multiple;
    bool pad_left;
    int32_t pad_id;

    tk_added *added;
    size_t n_added;
    bool added_first_byte[256];      /* raw (non-normalized) tokens start with these */
    bool added_norm_first_byte[256]; /* normalized tokens */
    bool any_added_raw, any_added_norm;

    /* id -> token string (added tokens first, then the model), NULL for holes */
    const char **id_str;
    uint32_t *id_len;
    bool *id_special;
    int64_t n_ids;

    int32_t bos_id, eos_id;

    int32_t byte_of_char[324];       /* ByteLevel decoder: code point -> byte, -1 */
    char byte_char[256][3];          /* ByteLevel: byte -> UTF-8 of its char */
    uint8_t byte_char_len[256];

    pthread_mutex_t cache_lock;
    tk_cache *cache;
};

/* A piece of text between added tokens (id < 0), or an added token. */
typedef struct tk_seg {
    size_t start, end;
    int32_t id;
} tk_seg;

typedef struct tk_segs {
    tk_seg *p;
    size_t len, cap;
} tk_segs;

/* Scratch state of one encode call. */
typedef struct tk_enc {
    const gk_tokenizer *t;
    gk_err *err;
    tk_ivec *out;              /* ids produced so far */
    tk_match m;
    tk_cache *cache;           /* NULL when the lock was busy */
    tk_buf norm[2];            /* normalizer ping-pong */
    tk_buf *stage_buf;         /* [n_pres] */
    tk_spans *stage_spans;     /* [n_pres] */
    tk_segs segs[2];           /* added-token splits: raw text, normalized text */
    struct tk_sym { int32_t c, prev, next; uint32_t len; } *sym;
    size_t sym_cap;
    struct tk_heap_item { uint32_t rank, pos; int32_t id; } *heap;
    size_t heap_cap;
} tk_enc;

/* tokenizer_load.c */
GK_INTERNAL gk_status tk_load_json(gk_tokenizer *t, const char *text, size_t len, gk_err *err);
GK_INTERNAL void tk_free_pipeline(gk_tokenizer *t);

/* tokenizer_text.c */
GK_INTERNAL gk_status tk_enc_init(tk_enc *e, const gk_tokenizer *t, gk_err *err);
GK_INTERNAL void tk_enc_free(tk_enc *e);
GK_INTERNAL gk_status tk_normalize(tk_enc *e, const char *s, size_t n, const char **out,
                                   size_t *out_n, bool *orig0);
GK_INTERNAL gk_status tk_pretokenize(tk_enc *e, const char *s, size_t n, bool orig0);

/* tokenizer_bpe.c */
GK_INTERNAL gk_status tk_bpe_word(tk_enc *e, const char *w, size_t n);
GK_INTERNAL bool tk_bpe_merges_init(tk_bpe *m, size_t n);
GK_INTERNAL void tk_bpe_merge_put(tk_bpe *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
GK_INTERNAL void tk_bpe_free(tk_bpe *m);
GK_INTERNAL tk_cache *tk_cache_new(void);
GK_INTERNAL void tk_cache_free(tk_cache *c);

/* tokenizer_decode.c */
GK_INTERNAL gk_status tk_decode_tokens(const gk_tokenizer *t, const char *const *tok,
                                       const uint32_t *tok_len, size_t n, tk_buf *out,
                                       gk_err *err);

#endif
