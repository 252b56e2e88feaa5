/* fuzz_tokenizer.c - libFuzzer harness for tokenizer.json (and the bos/eos of
 * tokenizer_config.json), then encode and decode with what was loaded.
 *
 * Input: tokenizer.json, then optionally the separator "\n\x01\x02\x03" and a
 * text to encode, then optionally the separator again and a tokenizer_config.json
 * written beside it. Without a text a fixed one is encoded (ASCII, CJK, an added
 * token's look-alike, blank lines). The text is encoded with and without special
 * tokens and decoded back; the ids found, then 64 ids spread over the
 * vocabulary, are looked up and decoded. Everything must come back as a status.
 * Not here: the shipped tokenizers on arbitrary text (fuzz_encode.c).
 */
#include "fuzz.h"

static const char sep[4] = "\n\x01\x02\x03";
static const char fixed_text[] = "Hello world, it's 2024!  \xe4\xbd\xa0\xe5\xa5\xbd <s> \n\n";
static char path[FZ_PATH_MAX], config_path[FZ_PATH_MAX];

static void decode(const gk_tokenizer *t, const int32_t *ids, size_t n, bool skip_special)
{
    char *text = NULL;
    size_t len;
    gk_err e;
    if (gk_tokenizer_decode(t, ids, n, skip_special, &text, &len, &e) == GK_OK)
        free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (!path[0]) {
        fz_path(path, "tokenizer.json");
        fz_path(config_path, "tokenizer_config.json");
    }
    const uint8_t *s1 = memmem(d, n, sep, sizeof sep);
    const uint8_t *s2 = s1 ? memmem(s1 + 4, n - (size_t)(s1 + 4 - d), sep, sizeof sep) : NULL;
    const uint8_t *end = d + n;
    fz_write(path, d, s1 ? (size_t)(s1 - d) : n);
    if (s2)
        fz_write(config_path, s2 + 4, (size_t)(end - s2 - 4));
    else
        unlink(config_path);
    const char *text = s1 ? (const char *)s1 + 4 : fixed_text;
    size_t text_len = s1 ? (size_t)((s2 ? s2 : end) - s1 - 4) : strlen(fixed_text);

    gk_tokenizer *t = NULL;
    gk_err e;
    if (gk_tokenizer_load(path, &t, &e) != GK_OK)
        return 0;
    int64_t vocab = gk_tokenizer_vocab_size(t);
    (void)gk_tokenizer_bos_id(t);
    (void)gk_tokenizer_eos_id(t);
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (gk_tokenizer_encode(t, text, text_len, special, &ids, &n_ids, &e) != GK_OK)
            continue;
        decode(t, ids, n_ids, special);
        for (size_t i = 0; i < n_ids && i < 64; i++) {
            const char *tok = gk_tokenizer_token(t, ids[i]);
            if (tok)
                (void)gk_tokenizer_token_id(t, tok);
        }
        free(ids);
    }
    int32_t spread[64];
    size_t n_spread = 0;
    for (int64_t i = 0; i < vocab && n_spread < 64; i += 1 + vocab / 64)
        spread[n_spread++] = (int32_t)i;
    decode(t, spread, n_spread, false);
    decode(t, spread, n_spread, true);
    gk_tokenizer_destroy(t);
    return 0;
}
