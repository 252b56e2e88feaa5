/* fuzz_encode.c - libFuzzer harness: arbitrary text and ids through the shipped
 * tokenizers (the five of tests/data/tokenizers and the demo model's), loaded once.
 *
 * Input: byte 0 picks the tokenizer, byte 1 holds flags (1: add special tokens,
 * 2: skip special tokens when decoding, 4: fold the raw ids into -1..vocab), the
 * rest is the text; read as int32s it is also a list of ids to decode.
 * Checked, as gk.h documents: a text encodes if and only if it is valid UTF-8;
 * encoded ids have a token each and decode; decoding succeeds if and only if
 * every id has a token, and gives NUL-terminated, valid UTF-8; the same ids
 * pushed into a gk_decode_stream (1 to 3 a push) give the same text, after
 * each push for the first 64 ids and at the end. Not here: loading arbitrary
 * tokenizer.json files (fuzz_tokenizer.c).
 */
#include "fuzz.h"

static const char *const names[] = {"gpt2", "llama2", "llama3", "qwen3", "gpt35turbo"};
#define N_TOK 6
static gk_tokenizer *toks[N_TOK];

/* <scratch>/NAME/tokenizer.json (unpacked by the build) beside its tokenizer_config.json. */
static void load_shipped(int i)
{
    char dir[FZ_PATH_MAX], src[FZ_PATH_MAX], dst[FZ_PATH_MAX + 32];
    fz_mkdir(fz_path(dir, names[i]));
    snprintf(src, sizeof src, "%s/%s-tokenizer.json", FZ_TOKENIZERS(), names[i]);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    fz_link(src, dst);
    snprintf(src, sizeof src, "%s/tokenizers/%s/tokenizer_config.json", FZ_DATA(), names[i]);
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    if (access(src, F_OK) == 0)
        fz_link(src, dst);
    gk_err e;
    if (gk_tokenizer_load(dir, &toks[i], &e) != GK_OK)
        fz_die("cannot load a shipped tokenizer", e.msg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (int i = 0; i < N_TOK - 1; i++)
        load_shipped(i);
    gk_err e;
    if (gk_tokenizer_load(FZ_DEMO(), &toks[N_TOK - 1], &e) != GK_OK)
        fz_die("cannot load the demo tokenizer", e.msg);
    return 0;
}

static bool all_known(const gk_tokenizer *t, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!gk_tokenizer_token(t, ids[i]))
            return false;
    return true;
}

/* ids[0..n) (all with tokens, decoding to want) through a decode stream. */
static void stream(const gk_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, const char *want,
                   size_t want_len)
{
    gk_decode_stream *ds = NULL;
    gk_err e;
    gk_status st = gk_decode_stream_new(t, skip_special, &ds, &e);
    if (st == GK_ERR_NOMEM)
        return;
    if (st != GK_OK)
        fz_fail("gk_decode_stream_new failed", e.msg);
    const char *got = NULL;
    size_t len = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 1 + (size_t)((uint32_t)ids[i] % 3);
        k = k < n - i ? k : n - i;
        st = gk_decode_stream_push(ds, ids + i, k, &e);
        if (st == GK_ERR_NOMEM)
            break;
        if (st != GK_OK)
            fz_fail("gk_decode_stream_push refused ids that all have tokens", e.msg);
        i += k;
        got = gk_decode_stream_text(ds, &len);
        if (i <= 64) {
            char *whole = NULL;
            size_t wl = 0;
            if (gk_tokenizer_decode(t, ids, i, skip_special, &whole, &wl, &e) == GK_OK &&
                (wl != len || memcmp(whole, got, len) || got[len] != '\0'))
                fz_fail("a decode stream's text differs from the whole decode", NULL);
            free(whole);
        } else if (i == n && (len != want_len || memcmp(got, want, len) || got[len] != '\0')) {
            fz_fail("a decode stream's final text differs from the whole decode", NULL);
        }
    }
    gk_decode_stream_destroy(ds);
}

/* Decode and check the outcome against the rule above. */
static void decode(const gk_tokenizer *t, const int32_t *ids, size_t n, bool skip_special)
{
    char *text = NULL;
    size_t len = 0;
    gk_err e;
    gk_status st = gk_tokenizer_decode(t, ids, n, skip_special, &text, &len, &e);
    bool known = all_known(t, ids, n);
    if (st == GK_OK && !known)
        fz_fail("decode accepted an id without a token", NULL);
    if (st != GK_OK && st != GK_ERR_NOMEM && known)
        fz_fail("decode refused ids that all have tokens", e.msg);
    if (st == GK_OK && (text[len] != '\0' || !fz_utf8_valid((const unsigned char *)text, len)))
        fz_fail("decode gave invalid UTF-8 or no NUL terminator", NULL);
    if (st == GK_OK)
        stream(t, ids, n, skip_special, text, len);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 2)
        return 0;
    const gk_tokenizer *t = toks[d[0] % N_TOK];
    bool add_special = d[1] & 1, skip_special = d[1] & 2, fold = d[1] & 4;
    const char *text = (const char *)d + 2;
    size_t len = n - 2;

    int32_t *ids = NULL;
    size_t n_ids = 0;
    gk_err e;
    gk_status st = gk_tokenizer_encode(t, text, len, add_special, &ids, &n_ids, &e);
    bool valid = fz_utf8_valid((const unsigned char *)text, len);
    if (st == GK_OK && !valid)
        fz_fail("encode accepted invalid UTF-8", NULL);
    if (st != GK_OK && st != GK_ERR_NOMEM && valid)
        fz_fail("encode refused valid UTF-8", e.msg);
    if (st == GK_OK) {
        if (!all_known(t, ids, n_ids))
            fz_fail("encode gave an id without a token", NULL);
        decode(t, ids, n_ids, skip_special);
        free(ids);
    }

    size_t n_raw = len / 4;
    int32_t *raw = malloc((n_raw + 1) * sizeof *raw);
    if (!raw)
        fz_die("out of memory", "ids");
    memcpy(raw, text, n_raw * sizeof *raw);
    uint32_t span = (uint32_t)gk_tokenizer_vocab_size(t) + 2;
    for (size_t i = 0; fold && i < n_raw; i++)
        raw[i] = (int32_t)((uint32_t)raw[i] % span) - 1;
    decode(t, raw, n_raw, skip_special);
    free(raw);
    return 0;
}
