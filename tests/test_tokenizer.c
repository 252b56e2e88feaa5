/* test_tokenizer.c - gk_tokenizer against HuggingFace `tokenizers`.
 *
 * Oracles, in order of strength:
 *   - the reference pack's golden.json for gpt2, llama2, llama3, qwen3 and
 *     gpt35turbo (ids, ids_with_special, decoded, all from tokenizers 0.23.2);
 *   - examples from HF's own unit tests (Split behaviours, Metaspace, added-token
 *     lstrip/rstrip/single_word, unknown-token fusing, merges), rebuilt as tiny
 *     tokenizer.json files whose vocabulary holds the expected pieces whole
 *     (ignore_merges), so the ids show exactly where the text was cut;
 *   - properties that hold by HF's definition: decode(encode(x)) == x for
 *     byte-level files on random Unicode (NFC(x) for Qwen3), text around added
 *     tokens encodes independently, word-by-word concatenation, cache and thread
 *     independence; Unicode's "maximal subpart" rule for invalid decoded bytes;
 *   - error statuses and messages naming the thing at fault (escaped when they
 *     quote the file), for hostile files too (huge ids, NUL characters);
 *   - gkrun's tokenize, detokenize and verify, run as processes.
 * Fixtures: GK_TEST_TOKENIZERS holds NAME-tokenizer.json (unpacked at build time),
 * GK_TEST_DATA/tokenizers/NAME the golden.json and tokenizer_config.json,
 * GK_TEST_BUILD_ROOT/tools/gkrun the command-line tool.
 * Not covered here: texts that only HF on the GPU machine can judge
 * (tools/tokenizer_extra_texts.json with tools/make_tokenizer_golden.py).
 */
#include <criterion/criterion.h>

#include "gk/gk.h"

#include <cjson/cJSON.h>

#include "gk_json.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static const char *env_or(const char *name, const char *def)
{
    const char *d = getenv(name);
    return d && *d ? d : def;
}

static char *tok_file(const char *name)
{
    static char path[2][1024];
    static int k;
    k ^= 1;
    snprintf(path[k], sizeof path[k], "%s/%s-tokenizer.json",
             env_or("GK_TEST_TOKENIZERS", "../build/tests"), name);
    return path[k];
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static gk_tokenizer *load(const char *path)
{
    gk_tokenizer *t = NULL;
    gk_err err = {0};
    gk_status st = gk_tokenizer_load(path, &t, &err);
    cr_assert_eq(st, GK_OK, "%s: %s (%s)", path, gk_status_str(st), err.msg);
    return t;
}

static gk_tokenizer *load_named(const char *name)
{
    return load(tok_file(name));
}

static size_t enc(const gk_tokenizer *t, const char *s, size_t n, bool special, int32_t **ids)
{
    gk_err err = {0};
    size_t k = 0;
    gk_status st = gk_tokenizer_encode(t, s, n, special, ids, &k, &err);
    cr_assert_eq(st, GK_OK, "encode \"%.40s\": %s (%s)", s, gk_status_str(st), err.msg);
    return k;
}

static char *dec(const gk_tokenizer *t, const int32_t *ids, size_t n, bool skip, size_t *len)
{
    gk_err err = {0};
    char *s = NULL;
    gk_status st = gk_tokenizer_decode(t, ids, n, skip, &s, len, &err);
    cr_assert_eq(st, GK_OK, "decode: %s (%s)", gk_status_str(st), err.msg);
    return s;
}

static void expect_ids(const int32_t *got, size_t n, const int32_t *want, size_t wn, const char *what)
{
    cr_assert_eq(n, wn, "%s: %zu ids, want %zu", what, n, wn);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s: id %zu is %d, want %d", what, i, got[i], want[i]);
}

/* Encode text and expect the ids of these whole vocabulary pieces. */
static void expect_pieces_(const gk_tokenizer *t, const char *text, const char *const *pieces)
{
    int32_t want[64];
    size_t wn = 0;
    for (; pieces[wn]; wn++) {
        want[wn] = gk_tokenizer_token_id(t, pieces[wn]);
        cr_assert_geq(want[wn], 0, "test bug: piece \"%s\" is not in the vocabulary", pieces[wn]);
    }
    int32_t *ids;
    size_t n = enc(t, text, strlen(text), false, &ids);
    expect_ids(ids, n, want, wn, text);
    free(ids);
}
#define expect_pieces(t, text, ...) expect_pieces_(t, text, (const char *const[]){__VA_ARGS__, NULL})

/* DIR/tokenizer.json in a fresh temporary folder (nothing else beside it). */
static char *write_tmp(const char *json)
{
    char dir[] = "/tmp/gk-tok-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char *path = malloc(sizeof dir + 16);
    snprintf(path, sizeof dir + 16, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    size_t n = strlen(json);
    cr_assert_eq(fwrite(json, 1, n, f), n);
    fclose(f);
    return path;
}

static void rm_tmp(char *path)
{
    unlink(path);
    *strrchr(path, '/') = '\0';
    rmdir(path);
    free(path);
}

/* A synthetic tokenizer.json. model is a whole object; the others may be "null". */
static char *synth(const char *added, const char *norm, const char *pre, const char *post,
                   const char *decoder, const char *model)
{
    size_t n = strlen(added) + strlen(norm) + strlen(pre) + strlen(post) + strlen(decoder) +
               strlen(model) + 256;
    char *json = malloc(n);
    snprintf(json, n,
             "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":%s,"
             "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":%s,\"decoder\":%s,"
             "\"model\":%s}",
             added, norm, pre, post, decoder, model);
    char *path = write_tmp(json);
    free(json);
    return path;
}

static gk_tokenizer *load_synth(const char *added, const char *norm, const char *pre,
                                const char *post, const char *decoder, const char *model)
{
    char *path = synth(added, norm, pre, post, decoder, model);
    gk_tokenizer *t = load(path);
    rm_tmp(path);
    return t;
}

/* Load must fail with this status and a message holding want. */
static void expect_load_error(const char *json, gk_status code, const char *want)
{
    char *path = write_tmp(json);
    gk_tokenizer *t = NULL;
    gk_err err = {0};
    gk_status st = gk_tokenizer_load(path, &t, &err);
    rm_tmp(path);
    cr_assert_eq(st, code, "want %s, got %s (%s)", gk_status_str(code), gk_status_str(st), err.msg);
    cr_assert_null(t);
    cr_assert_not_null(strstr(err.msg, want), "message \"%s\" does not name \"%s\"", err.msg, want);
}

/* ------------------------------------------------------------ golden */

/* Every case of a golden file made by HF tokenizers: ids without and with
 * special tokens, and the decoded text, compared in full (texts may hold NUL
 * characters, so lengths come from gk_json_strlen). */
static void check_golden_file(const char *name, const char *path)
{
    size_t json_len;
    char *json = slurp(path, &json_len);
    cJSON *root = gk_json_parse(json, json_len, NULL);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    cr_assert(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0, "%s: no cases", path);
    gk_tokenizer *t = load_named(name);
    int k = 0;
    for (const cJSON *c = cases->child; c; c = c->next, k++) {
        const cJSON *text_item = cJSON_GetObjectItemCaseSensitive(c, "text");
        const char *text = text_item->valuestring;
        size_t text_len = gk_json_strlen(text_item);
        const char *keys[] = {"ids", "ids_with_special"};
        int32_t *plain = NULL;
        size_t n_plain = 0;
        for (int s = 0; s < 2; s++) {
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, keys[s]);
            int32_t *ids;
            size_t n = enc(t, text, text_len, s == 1, &ids);
            cr_assert_eq(n, (size_t)cJSON_GetArraySize(want), "%s case %d \"%s\": %s: %zu ids, want %d",
                         name, k, text, keys[s], n, cJSON_GetArraySize(want));
            size_t i = 0;
            for (const cJSON *w = want->child; w; w = w->next, i++)
                cr_assert_eq(ids[i], (int32_t)w->valuedouble, "%s case %d \"%s\": %s[%zu] = %d, want %d",
                             name, k, text, keys[s], i, ids[i], (int32_t)w->valuedouble);
            if (s == 0) {
                plain = ids;
                n_plain = n;
            } else {
                free(ids);
            }
        }
        size_t len;
        char *out = dec(t, plain, n_plain, false, &len);
        const cJSON *want_item = cJSON_GetObjectItemCaseSensitive(c, "decoded");
        const char *want = want_item->valuestring;
        cr_assert(len == gk_json_strlen(want_item) && !memcmp(out, want, len),
                  "%s case %d: decoded \"%s\" (%zu bytes), want \"%s\" (%zu bytes)", name, k, out, len, want,
                  gk_json_strlen(want_item));
        free(out);
        free(plain);
    }
    gk_tokenizer_destroy(t);
    cJSON_Delete(root);
    free(json);
}

static void check_golden(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizers/%s/golden.json", env_or("GK_TEST_DATA", "data"), name);
    check_golden_file(name, path);
}

/* Texts holding NUL characters (tests/data/tokenizer-nul: HF tokenizers 0.23.2
 * on texts.json there). */
static void check_golden_nul(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer-nul/%s.golden.json", env_or("GK_TEST_DATA", "data"), name);
    check_golden_file(name, path);
}

Test(golden_nul, gpt2) { check_golden_nul("gpt2"); }
Test(golden_nul, llama2) { check_golden_nul("llama2"); }
Test(golden_nul, llama3) { check_golden_nul("llama3"); }
Test(golden_nul, qwen3) { check_golden_nul("qwen3"); }
Test(golden_nul, gpt35turbo) { check_golden_nul("gpt35turbo"); }

Test(golden, gpt2) { check_golden("gpt2"); }
Test(golden, llama2) { check_golden("llama2"); }
Test(golden, llama3) { check_golden("llama3"); }
Test(golden, qwen3) { check_golden("qwen3"); }
Test(golden, gpt35turbo) { check_golden("gpt35turbo"); }

/* ------------------------------------------------------------ vocabulary, bos/eos */

Test(vocab, sizes_and_lookups)
{
    static const struct { const char *name; int64_t size; } sizes[] = {
        {"gpt2", 50257}, {"llama2", 32000}, {"llama3", 128256}, {"qwen3", 151669}, {"gpt35turbo", 100277},
    };
    for (size_t i = 0; i < 5; i++) {
        gk_tokenizer *t = load_named(sizes[i].name);
        cr_expect_eq(gk_tokenizer_vocab_size(t), sizes[i].size, "%s", sizes[i].name);
        gk_tokenizer_destroy(t);
    }
    gk_tokenizer *t = load_named("gpt2");
    cr_expect_str_eq(gk_tokenizer_token(t, 50256), "<|endoftext|>");
    cr_expect_str_eq(gk_tokenizer_token(t, 15496), "Hello");
    cr_expect_eq(gk_tokenizer_token_id(t, "Hello"), 15496);
    cr_expect_eq(gk_tokenizer_token_id(t, "no such token"), -1);
    cr_expect_null(gk_tokenizer_token(t, -1));
    cr_expect_null(gk_tokenizer_token(t, 50257));
    gk_tokenizer_destroy(t);
    t = load_named("gpt35turbo"); /* ids 100261..100275 are holes */
    cr_expect_null(gk_tokenizer_token(t, 100265));
    cr_expect_str_eq(gk_tokenizer_token(t, 100276), "<|endofprompt|>");
    gk_tokenizer_destroy(t);
}

/* A folder holding the unpacked tokenizer.json and the fixture's tokenizer_config.json. */
static char *model_dir(const char *name)
{
    char *dir = strdup("/tmp/gk-tokdir-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/tokenizer.json", dir);
    cr_assert_eq(symlink(tok_file(name), a), 0);
    snprintf(a, sizeof a, "%s/tokenizers/%s/tokenizer_config.json", env_or("GK_TEST_DATA", "data"), name);
    if (access(a, R_OK) == 0) {
        char *real = realpath(a, NULL);
        snprintf(b, sizeof b, "%s/tokenizer_config.json", dir);
        cr_assert_eq(symlink(real, b), 0);
        free(real);
    }
    return dir;
}

static void remove_dir(char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    rmdir(dir);
    free(dir);
}

Test(vocab, bos_eos_from_config_template_and_known_tokens)
{
    static const struct { const char *name; int32_t bos, eos; } cfg[] = {
        {"llama2", 1, 2},             /* tokenizer_config.json: <s>, </s> */
        {"llama3", 128000, 128001},   /* <|begin_of_text|>, <|end_of_text|> */
        {"qwen3", -1, 151645},        /* bos_token null, eos <|im_end|> */
        {"gpt35turbo", 100257, 100257},
        {"gpt2", 50256, 50256},       /* no config: <|endoftext|> */
    };
    for (size_t i = 0; i < 5; i++) {
        char *dir = model_dir(cfg[i].name);
        gk_tokenizer *t = load(dir);
        cr_expect_eq(gk_tokenizer_bos_id(t), cfg[i].bos, "%s bos", cfg[i].name);
        cr_expect_eq(gk_tokenizer_eos_id(t), cfg[i].eos, "%s eos", cfg[i].name);
        gk_tokenizer_destroy(t);
        remove_dir(dir);
    }
    /* without tokenizer_config.json: llama2's template gives <s>, </s> is well known */
    gk_tokenizer *t = load_named("llama2");
    cr_expect_eq(gk_tokenizer_bos_id(t), 1);
    cr_expect_eq(gk_tokenizer_eos_id(t), 2);
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ added tokens */

/* HF splits at added tokens first: the text around one encodes on its own. */
static void check_added_split(const char *name, const char *special, const char *a, const char *b)
{
    gk_tokenizer *t = load_named(name);
    int32_t sid = gk_tokenizer_token_id(t, special);
    cr_assert_geq(sid, 0);
    char text[512];
    snprintf(text, sizeof text, "%s%s%s", a, special, b);
    int32_t *ia, *ib, *all;
    size_t na = enc(t, a, strlen(a), false, &ia), nb = enc(t, b, strlen(b), false, &ib);
    size_t n = enc(t, text, strlen(text), false, &all);
    int32_t want[256];
    memcpy(want, ia, na * sizeof *ia);
    want[na] = sid;
    memcpy(want + na + 1, ib, nb * sizeof *ib);
    expect_ids(all, n, want, na + nb + 1, text);
    /* skip_special drops exactly the special token; without it, it decodes as itself */
    char *s = dec(t, all, n, true, NULL);
    char *ab = dec(t, want, na + nb + 1, false, NULL);
    memmove(want + na, want + na + 1, nb * sizeof *want);
    char *joined = dec(t, want, na + nb, false, NULL);
    cr_expect_str_eq(s, joined, "%s: skip_special", name);
    cr_expect_not_null(strstr(ab, special), "%s: decoded \"%s\" lacks %s", name, ab, special);
    free(s);
    free(ab);
    free(joined);
    free(ia);
    free(ib);
    free(all);
    gk_tokenizer_destroy(t);
}

Test(added, text_around_added_tokens_encodes_independently)
{
    check_added_split("gpt2", "<|endoftext|>", "Hello world", " and more");
    check_added_split("qwen3", "<|im_start|>", "system prompt ", "user\nhi there");
    check_added_split("llama3", "<|begin_of_text|>", "Once upon", " a time");
    check_added_split("gpt35turbo", "<|endofprompt|>", "x = 1", "\n  y");
    check_added_split("llama2", "</s>", "Hello world", " again");
}

Test(added, non_special_added_token_survives_skip_special)
{
    gk_tokenizer *t = load_named("qwen3");
    const char *text = "<think>ok</think><|im_end|>";
    int32_t *ids;
    size_t n = enc(t, text, strlen(text), false, &ids);
    cr_assert_eq(ids[0], 151667);
    cr_assert_eq(ids[n - 1], 151645);
    char *s = dec(t, ids, n, true, NULL);
    cr_expect_str_eq(s, "<think>ok</think>");
    free(s);
    s = dec(t, ids, n, false, NULL);
    cr_expect_str_eq(s, text);
    free(s);
    free(ids);
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ round trips */

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t put_cp(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Code points unchanged by NFC in any context, and some that are not. */
static uint32_t stable_cp(uint64_t *s, bool llama2)
{
    static const uint32_t odd_space[] = {0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0xA0, 0x85, 0x1680,
                                         0x2002, 0x2003, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F,
                                         0x3000, 0x180E, 0xFEFF, 0x200B};
    static const uint32_t latin[] = {0xE9, 0xF1, 0xDF, 0xFC, 0xC5, 0x153, 0x142, 0x10D, 0x11F};
    switch (rng(s) % 10) {
    case 0: case 1: case 2: {
        uint32_t c = 0x20 + (uint32_t)(rng(s) % 95);
        return llama2 && c == '<' ? 'x' : c;
    }
    case 3: return odd_space[rng(s) % (sizeof odd_space / 4)];
    case 4: return latin[rng(s) % (sizeof latin / 4)];
    case 5: return 0x4E00 + (uint32_t)(rng(s) % 0x5000);          /* CJK */
    case 6: return 0xAC00 + (uint32_t)(rng(s) % 11172);           /* Hangul syllables */
    case 7: return 0x1F300 + (uint32_t)(rng(s) % 0x300);          /* emoji */
    case 8: return rng(s) % 3 == 0 ? 0x7F : (uint32_t)(rng(s) % 0x20); /* controls, NUL */
    default: {
        static const uint32_t misc[] = {0x200D, 0x1F3FB, 0x1F1FA, 0x1F1F8, 0xFE0F, 0xE000, 0xFFFD,
                                        0xFFFF, 0x10FFFF, 0x2764, 0x0627, 0x05D0, 0x0E01, 0x0915};
        return misc[rng(s) % (sizeof misc / 4)];
    }
    }
}

static uint32_t unstable_cp(uint64_t *s)
{
    static const uint32_t cps[] = {0x301, 0x308, 0x327, 0x1100, 0x1161, 0x11A8, 0x212B, 0x2126,
                                   0xF900, 0x0387, 0x1E0A, 0x323, 0x0344, 0x2000};
    return cps[rng(s) % (sizeof cps / 4)];
}

/* Random text of runs: single characters, long repeats, words. */
static size_t random_text(uint64_t *s, char *buf, size_t cap, bool stable_only, bool llama2)
{
    size_t n = 0, want = 1 + rng(s) % 200;
    while (n + 64 < cap && n < want) {
        uint64_t r = rng(s) % 20;
        uint32_t cp = (!stable_only && r == 0) ? unstable_cp(s) : stable_cp(s, llama2);
        if (llama2 && cp == 0x2581)
            cp = 'y';
        size_t reps = r == 1 ? 1 + rng(s) % 300 : 1;
        for (size_t k = 0; k < reps && n + 8 < cap; k++)
            n += put_cp(buf + n, cp);
    }
    return n;
}

static void check_round_trip(const char *name, bool nfc)
{
    gk_tokenizer *t = load_named(name);
    bool llama2 = !strcmp(name, "llama2");
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    static char buf[16384];
    for (int iter = 0; iter < 400; iter++) {
        bool stable = nfc || llama2 ? iter % 2 == 0 : false;
        size_t n = random_text(&seed, buf, sizeof buf, stable || llama2, llama2);
        int32_t *ids;
        size_t k = enc(t, buf, n, false, &ids), len;
        char *out = dec(t, ids, k, false, &len);
        if (!nfc || stable) {
            cr_assert(len == n && !memcmp(out, buf, n), "%s: round trip %d differs (%zu vs %zu bytes)",
                      name, iter, len, n);
        } else { /* NFC: decode gives NFC(x); encoding that again changes nothing */
            int32_t *again;
            size_t k2 = enc(t, out, len, false, &again);
            expect_ids(again, k2, ids, k, "NFC idempotence");
            free(again);
        }
        free(out);
        free(ids);
    }
    gk_tokenizer_destroy(t);
}

Test(round_trip, gpt2) { check_round_trip("gpt2", false); }
Test(round_trip, llama3) { check_round_trip("llama3", false); }
Test(round_trip, gpt35turbo) { check_round_trip("gpt35turbo", false); }
Test(round_trip, qwen3_nfc) { check_round_trip("qwen3", true); }
Test(round_trip, llama2_byte_fallback) { check_round_trip("llama2", false); }

/* ------------------------------------------------------------ consistency */

/* " word" is one pre-token for these regexes: a text of such words encodes as the
 * concatenation of its words. */
Test(consistency, words_concatenate)
{
    const char *names[] = {"gpt2", "llama3", "qwen3", "gpt35turbo"};
    static const uint32_t letters[] = {'a', 'e', 'i', 'o', 'n', 's', 't', 'r', 'Q', 'Z', 0xE9, 0x4E2D, 0x6587, 0x3042};
    for (int k = 0; k < 4; k++) {
        gk_tokenizer *t = load_named(names[k]);
        uint64_t seed = 12345 + (uint64_t)k;
        for (int iter = 0; iter < 50; iter++) {
            char text[4096];
            size_t n = 0;
            int32_t want[2048];
            size_t wn = 0;
            for (int w = 0; w < 20; w++) {
                char word[64];
                size_t wl = 0;
                word[wl++] = ' ';
                for (uint64_t c = 0, len = 1 + rng(&seed) % 10; c < len; c++)
                    wl += put_cp(word + wl, letters[rng(&seed) % 14]);
                memcpy(text + n, word, wl);
                n += wl;
                int32_t *ids;
                size_t m = enc(t, word, wl, false, &ids);
                memcpy(want + wn, ids, m * sizeof *ids);
                wn += m;
                free(ids);
            }
            int32_t *ids;
            size_t m = enc(t, text, n, false, &ids);
            expect_ids(ids, m, want, wn, names[k]);
            free(ids);
        }
        gk_tokenizer_destroy(t);
    }
}

/* The word cache must not change results: a warm tokenizer agrees with a fresh one. */
Test(consistency, warm_cache_equals_fresh)
{
    const char *x = "The cat sat on the mat. The cat ran. Caterpillars catapult cats!";
    const char *y = "cat catapult Caterpillars mat sat, the end; cats and more cats.";
    gk_tokenizer *warm = load_named("qwen3"), *fresh = load_named("qwen3");
    int32_t *a, *b, *c;
    free((enc(warm, x, strlen(x), false, &a), a));
    size_t na = enc(warm, y, strlen(y), false, &b), nb = enc(fresh, y, strlen(y), false, &c);
    expect_ids(b, na, c, nb, "warm vs fresh");
    free(b);
    free(c);
    gk_tokenizer_destroy(warm);
    gk_tokenizer_destroy(fresh);
}

typedef struct job {
    const gk_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    gk_status st;
} job;

static void *run_job(void *p)
{
    job *j = p;
    gk_err err;
    j->st = gk_tokenizer_encode(j->t, j->text, j->len, true, &j->ids, &j->n, &err);
    return NULL;
}

Test(consistency, concurrent_encodes_agree)
{
    gk_tokenizer *t = load_named("llama3");
    static char text[200000];
    size_t len = 0;
    uint64_t seed = 99;
    while (len < sizeof text - 8192)
        len += random_text(&seed, text + len, 8192, false, false);
    int32_t *serial;
    size_t n = enc(t, text, len, true, &serial);
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){.t = t, .text = text, .len = len};
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(jobs[i].st, GK_OK);
        expect_ids(jobs[i].ids, jobs[i].n, serial, n, "thread");
        free(jobs[i].ids);
    }
    free(serial);
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ decoding bytes */

/* GPT-2's byte -> character table (printable bytes are themselves, the rest 256+n). */
static uint32_t byte_char(int b)
{
    int n = 0;
    for (int x = 0; x < 256; x++) {
        bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        if (x == b)
            return printable ? (uint32_t)x : 256u + (uint32_t)n;
        if (!printable)
            n++;
    }
    return 0;
}

static void expect_bytes_decode(const gk_tokenizer *t, const char *bytes, size_t nb, const char *want)
{
    int32_t ids[16];
    for (size_t i = 0; i < nb; i++) {
        char u[5] = {0};
        put_cp(u, byte_char((unsigned char)bytes[i]));
        ids[i] = gk_tokenizer_token_id(t, u);
        cr_assert_geq(ids[i], 0);
    }
    size_t len;
    char *s = dec(t, ids, nb, false, &len);
    cr_expect(len == strlen(want) && !memcmp(s, want, len), "decoded %zu bytes, want \"%s\"", len, want);
    free(s);
}

#define FFFD "\xEF\xBF\xBD"

/* Unicode 3.9 / Rust from_utf8_lossy: one U+FFFD per maximal ill-formed subpart. */
Test(decode, cut_characters_become_replacement_characters)
{
    gk_tokenizer *t = load_named("gpt2");
    expect_bytes_decode(t, "\xF0\x9F\x99\x82", 4, "\xF0\x9F\x99\x82");
    expect_bytes_decode(t, "\xF0\x9F\x99", 3, FFFD);
    expect_bytes_decode(t, "\xF0\x9F\x99" "A", 4, FFFD "A");
    expect_bytes_decode(t, "\x9F", 1, FFFD);
    expect_bytes_decode(t, "\xED\xA0\x80", 3, FFFD FFFD FFFD);  /* a surrogate */
    expect_bytes_decode(t, "\xC0\xAF", 2, FFFD FFFD);           /* overlong */
    expect_bytes_decode(t, "\xE2\x82" "\xE2\x82\xAC", 5, FFFD "\xE2\x82\xAC");
    expect_bytes_decode(t, "\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* above U+10FFFF */
    gk_tokenizer_destroy(t);
}

/* ByteFallback: a run of <0xXX> that is not UTF-8 gives one U+FFFD per byte. */
Test(decode, byte_fallback_runs)
{
    gk_tokenizer *t = load_named("llama2");
    int32_t b[4];
    const char *names[] = {"<0xF0>", "<0x9F>", "<0x99>", "<0x82>"};
    for (int i = 0; i < 4; i++)
        b[i] = gk_tokenizer_token_id(t, names[i]);
    char *s = dec(t, b, 4, false, NULL);
    cr_expect_str_eq(s, "\xF0\x9F\x99\x82");
    free(s);
    s = dec(t, b, 2, false, NULL);
    cr_expect_str_eq(s, FFFD FFFD);
    free(s);
    int32_t mixed[] = {b[0], gk_tokenizer_token_id(t, "▁the"), b[3]};
    s = dec(t, mixed, 3, false, NULL);
    cr_expect_str_eq(s, FFFD " the" FFFD);
    free(s);
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ HF's own examples */

#define CHARS_VOCAB "\"<unk>\":0,\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9," \
    "\"n\":10,\"o\":11,\"r\":12,\"s\":13,\"t\":14,\"u\":15,\"w\":16,\"y\":17,\"H\":18,\"m\":19,\"?\":20," \
    "\" \":21,\"!\":22,\"l\":23,\"<\":24,\">\":25,\"\\t\":26"

static char *bpe_model(const char *extra_vocab, const char *merges, const char *opts)
{
    static char buf[8192];
    snprintf(buf, sizeof buf,
             "{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"continuing_subword_prefix\":null,"
             "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":true%s,"
             "\"vocab\":{" CHARS_VOCAB "%s},\"merges\":[%s]}",
             opts, extra_vocab, merges);
    return buf;
}

/* tokenizers/src/pre_tokenizers/split.rs, test "basic". */
Test(hf_examples, split_behaviours)
{
    const char *vocab = ",\"How\":100,\"are\":101,\"you\":102,\"doing\":103,\"How \":104,\"are \":105,"
                        "\"you \":106,\" are\":107,\" you\":108,\" doing\":109,\"doing?\":110";
    const char *behaviours[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    gk_tokenizer *t[5];
    for (int i = 0; i < 5; i++) {
        char pre[256];
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+|[^\\\\w\\\\s]+\"},\"behavior\":\"%s\",\"invert\":true}",
                 behaviours[i]);
        t[i] = load_synth("[]", "null", pre, "null", "null", bpe_model(vocab, "", ""));
    }
    const char *s = "How are you doing?";
    expect_pieces(t[0], s, "How", "are", "you", "doing", "?");
    expect_pieces(t[1], s, "How", " ", "are", " ", "you", " ", "doing", "?");
    expect_pieces(t[2], s, "How ", "are ", "you ", "doing", "?");
    expect_pieces(t[3], s, "How", " are", " you", " doing", "?");
    expect_pieces(t[4], s, "How", " ", "are", " ", "you", " ", "doing?");
    for (int i = 0; i < 5; i++)
        gk_tokenizer_destroy(t[i]);
}

/* tokenizers/src/pre_tokenizers/metaspace.rs: "basic", "multiple_spaces",
 * "non_legacy_meta_space" and "decode". */
Test(hf_examples, metaspace)
{
    const char *vocab = ",\"▁Hey\":100,\"▁friend!\":101,\"▁\":102,\"how\":103,\"▁how\":104,\"<s>\":105";
    const char *added = "[{\"id\":105,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,"
                        "\"rstrip\":false,\"normalized\":false,\"special\":true}]";
    gk_tokenizer *always = load_synth("[]", "null",
        "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"always\",\"split\":true}",
        "null", "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"always\",\"split\":true}",
        bpe_model(vocab, "", ""));
    expect_pieces(always, "Hey friend!", "▁Hey", "▁friend!");
    expect_pieces(always, "Hey   friend!", "▁Hey", "▁", "▁", "▁friend!");
    int32_t ids[] = {100, 101};
    char *s = dec(always, ids, 2, false, NULL);
    cr_expect_str_eq(s, "Hey friend!");
    free(s);
    gk_tokenizer_destroy(always);

    gk_tokenizer *first = load_synth(added, "null",
        "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"first\",\"split\":true}",
        "null", "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"add_prefix_space\":false}",
        bpe_model(vocab, "", ""));
    expect_pieces(first, " Hey <s>how", "▁Hey", "▁", "<s>", "how");
    expect_pieces(first, "Hey <s>how", "▁Hey", "▁", "<s>", "how");
    s = dec(first, ids, 2, false, NULL); /* prepend never: the first ▁ is a space too */
    cr_expect_str_eq(s, " Hey friend!");
    free(s);
    gk_tokenizer_destroy(first);

    gk_tokenizer *legacy = load_synth(added, "null",
        "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"add_prefix_space\":true}", "null", "null",
        bpe_model(vocab, "", ""));
    expect_pieces(legacy, "Hey <s>how", "▁Hey", "▁", "<s>", "▁how");
    gk_tokenizer_destroy(legacy);
}

/* tokenizers/src/tokenizer/added_vocabulary.rs: "options_use_cases",
 * "test_single_word_is_correct", "test_lstrip_unicode_space". */
Test(hf_examples, added_token_options)
{
    const char *vocab = ",\" is anthony \":100,\" my name \":101,\" a<mask> <mask>ony \":102,\"hi\":103,\"there\":104";
    char added[1024];
    snprintf(added, sizeof added, "[%s,%s,%s,%s,%s]",
             "{\"id\":105,\"content\":\"my\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":true,\"special\":false}",
             "{\"id\":106,\"content\":\"name\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false}",
             "{\"id\":107,\"content\":\"ony\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false}",
             "{\"id\":108,\"content\":\"[CLS]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}",
             "{\"id\":109,\"content\":\"[SEP]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}");
    const char *lower = "{\"type\":\"Lowercase\"}";
    gk_tokenizer *t = load_synth(added, lower, "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "[CLS] My name is Anthony [SEP]", "[CLS]", "my", "name", " is anthony ", "[SEP]");
    gk_tokenizer_destroy(t);

    t = load_synth("[{\"id\":105,\"content\":\"<mask>\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,"
                   "\"normalized\":true,\"special\":false}]",
                   lower, "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "<mask> My name <mask> A<mask> <mask>ony <mask>", "<mask>", " my name ", "<mask>",
                  " a<mask> <mask>ony ", "<mask>");
    gk_tokenizer_destroy(t);

    t = load_synth("[{\"id\":105,\"content\":\"<mask>\",\"single_word\":true,\"lstrip\":true,\"rstrip\":true,"
                   "\"normalized\":true,\"special\":false}]",
                   lower, "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "Hi <mask> there\t<mask>\t<mask>\u2000", "hi", "<mask>", "there", "<mask>", "<mask>");
    gk_tokenizer_destroy(t);
}

/* tokenizers/src/models/bpe/model.rs: "test_unk_not_fused", "test_unk_get_fused",
 * "test_tokenize_with_and_without_dropout" (no dropout). */
Test(hf_examples, bpe_unknown_and_merges)
{
    const char *model = "{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":%s,"
                        "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2},\"merges\":[]}";
    char m[512];
    snprintf(m, sizeof m, model, "false");
    gk_tokenizer *t = load_synth("[]", "null", "null", "null", "null", m);
    int32_t *ids;
    size_t n = enc(t, "accb", 4, false, &ids);
    expect_ids(ids, n, (int32_t[]){1, 0, 0, 2}, 4, "unk not fused");
    free(ids);
    gk_tokenizer_destroy(t);
    snprintf(m, sizeof m, model, "true");
    t = load_synth("[]", "null", "null", "null", "null", m);
    n = enc(t, "accb", 4, false, &ids);
    expect_ids(ids, n, (int32_t[]){1, 0, 2}, 3, "unk fused");
    free(ids);
    n = enc(t, "cc", 2, false, &ids);
    expect_ids(ids, n, (int32_t[]){0}, 1, "unk fused");
    free(ids);
    gk_tokenizer_destroy(t);

    t = load_synth("[]", "null", "null", "null", "null",
        "{\"type\":\"BPE\",\"vocab\":{\"u\":0,\"n\":1,\"r\":2,\"e\":3,\"l\":4,\"a\":5,\"t\":6,\"d\":7,\"re\":8,"
        "\"at\":9,\"ed\":10,\"un\":11,\"ated\":12,\"rel\":13,\"related\":14,\"unrelated\":15},"
        "\"merges\":[\"r e\",[\"a\",\"t\"],\"e d\",\"u n\",\"at ed\",\"re l\",\"rel ated\",\"un related\"]}");
    n = enc(t, "unrelated", 9, false, &ids);
    expect_ids(ids, n, (int32_t[]){15}, 1, "merges");
    free(ids);
    n = enc(t, "relate", 6, false, &ids); /* r e l a t e -> re l at e -> rel at e */
    expect_ids(ids, n, (int32_t[]){13, 9, 3}, 3, "partial merges");
    free(ids);
    gk_tokenizer_destroy(t);
}

/* Oniguruma's \s: White_Space (with U+0085, without U+180E), unlike PCRE2's. */
Test(hf_examples, regex_space_is_onigurumas)
{
    const char *vocab = ",\"a\xE1\xA0\x8E" "b\":100";
    gk_tokenizer *t = load_synth("[]", "null",
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Removed\",\"invert\":false}",
        "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "a\xE1\xA0\x8E" "b c", "a\xE1\xA0\x8E" "b", "c");
    expect_pieces(t, "a\xC2\x85" "b", "a", "b");
    gk_tokenizer_destroy(t);
}

Test(hf_examples, normalizers)
{
    const char *vocab = ",\"\xCC\x81\":100,\"fi\":101,\"xyz\":102,\"PRExyz\":103";
    gk_tokenizer *t = load_synth("[]", "{\"type\":\"NFD\"}", "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "\xC3\xA9", "e", "\xCC\x81");
    gk_tokenizer_destroy(t);
    t = load_synth("[]", "{\"type\":\"NFKC\"}", "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, "\xEF\xAC\x81", "fi");
    gk_tokenizer_destroy(t);
    t = load_synth("[]",
        "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true},"
        "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"[0-9]+\"},\"content\":\"xyz\"},"
        "{\"type\":\"Prepend\",\"prepend\":\"PRE\"}]}",
        "null", "null", "null", bpe_model(vocab, "", ""));
    expect_pieces(t, " \t 42\xE3\x80\x80", "PRExyz");
    gk_tokenizer_destroy(t);
}

/* Round trip through a byte-level tokenizer: the text its normalizer makes. */
static void expect_normalized(const gk_tokenizer *t, const char *in, const char *want)
{
    int32_t *ids;
    size_t n = enc(t, in, strlen(in), false, &ids), len;
    char *out = dec(t, ids, n, false, &len);
    cr_expect(len == strlen(want) && !memcmp(out, want, len), "\"%s\" normalized to \"%s\", want \"%s\"",
              in, out, want);
    free(out);
    free(ids);
}

/* gpt2's tokenizer.json with one top-level key replaced (a normalizer, say). */
static gk_tokenizer *gpt2_with(const char *key, const char *value)
{
    char *text = slurp(tok_file("gpt2"), NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObjectCaseSensitive(root, key, cJSON_Parse(value));
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    char *path = write_tmp(json);
    free(json);
    gk_tokenizer *t = load(path);
    rm_tmp(path);
    return t;
}

/* HF's NFC tables are Unicode 9.0's (unicode-normalization-alignments): characters
 * added since neither move nor compose. Expectations checked against HF tokenizers
 * 0.23.2 (its node bindings), as was every code point in six contexts. */
Test(normalizers, nfc_as_hf_unicode9)
{
    gk_tokenizer *t = load_named("qwen3");
    expect_normalized(t, "e\u0301", "\u00e9");
    expect_normalized(t, "e\u0316\u0301", "\u00e9\u0316");
    expect_normalized(t, "A\u030a \u212b", "\u00c5 \u00c5");
    expect_normalized(t, "\u1100\u1161\u11a8", "\uac01");
    expect_normalized(t, "e\u1ac6\u0316", "e\u1ac6\u0316");         /* U+1AC6: Unicode 14 */
    expect_normalized(t, "\U00011935\U00011930", "\U00011935\U00011930"); /* composes in 13.0 */
    expect_normalized(t, "\uac00\u11a7", "\uac00\u11a7");           /* not a trailing jamo */
    gk_tokenizer_destroy(t);
}

/* Rust's char::to_lowercase per character (no final sigma, İ -> i̇, Unicode 16). */
Test(normalizers, lowercase_and_strip_as_hf)
{
    gk_tokenizer *t = gpt2_with("normalizer", "{\"type\":\"Lowercase\"}");
    expect_normalized(t, "ΣΑΣ İstanbul ẞ ÅNGSTRÖM", "σασ i\u0307stanbul ß ångström");
    expect_normalized(t, "\u1c89 \U00010d50", "\u1c8a \U00010d70");
    gk_tokenizer_destroy(t);
    t = gpt2_with("normalizer", "{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":false}");
    expect_normalized(t, "\u3000\xC2\x85 \t x \u2029", "x \u2029");
    expect_normalized(t, "\u180e x", "\u180e x"); /* not White_Space */
    gk_tokenizer_destroy(t);
}

/* A very long run of spaces needs more than PCRE2's default JIT stack. */
Test(consistency, huge_runs_encode)
{
    size_t n = 400000;
    char *text = malloc(n + 2);
    memset(text, ' ', n);
    text[n] = 'x';
    text[n + 1] = '\0';
    const char *names[] = {"gpt2", "qwen3"};
    for (int k = 0; k < 2; k++) {
        gk_tokenizer *t = load_named(names[k]);
        int32_t *ids;
        size_t m = enc(t, text, n + 1, false, &ids), len;
        char *out = dec(t, ids, m, false, &len);
        cr_expect(len == n + 1 && !memcmp(out, text, len), "%s: round trip", names[k]);
        free(out);
        free(ids);
        gk_tokenizer_destroy(t);
    }
    free(text);
}

/* ------------------------------------------------------------ post-processing */

Test(post, template_truncation_padding)
{
    const char *post = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                       "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"</s>\",\"type_id\":0}}],"
                       "\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[90],\"tokens\":[\"<s>\"]},"
                       "\"</s>\":{\"id\":\"</s>\",\"ids\":[91],\"tokens\":[\"</s>\"]}}}";
    const char *vocab = ",\"<s>\":90,\"</s>\":91,\"<pad>\":92";
    const char *model = bpe_model(vocab, "", "");
    size_t n = strlen(post) + strlen(model) + 1024;
    char *json = malloc(n);
    snprintf(json, n,
             "{\"truncation\":{\"direction\":\"%s\",\"max_length\":5,\"strategy\":\"LongestFirst\",\"stride\":0},"
             "\"padding\":{\"strategy\":{\"Fixed\":8},\"direction\":\"Right\",\"pad_to_multiple_of\":null,"
             "\"pad_id\":92,\"pad_type_id\":0,\"pad_token\":\"<pad>\"},"
             "\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":null,\"post_processor\":%s,"
             "\"decoder\":null,\"model\":%s}",
             "Right", post, model);
    char *path = write_tmp(json);
    gk_tokenizer *t = load(path);
    rm_tmp(path);
    int32_t *ids;
    size_t k = enc(t, "abcdefg", 7, true, &ids);
    expect_ids(ids, k, (int32_t[]){90, 1, 2, 3, 91, 92, 92, 92}, 8, "right, special");
    free(ids);
    k = enc(t, "abcdefg", 7, false, &ids);
    expect_ids(ids, k, (int32_t[]){1, 2, 3, 4, 5, 92, 92, 92}, 8, "right");
    free(ids);
    gk_tokenizer_destroy(t);

    snprintf(json, n,
             "{\"truncation\":{\"direction\":\"Left\",\"max_length\":5,\"strategy\":\"LongestFirst\",\"stride\":0},"
             "\"padding\":{\"strategy\":\"BatchLongest\",\"direction\":\"Left\",\"pad_to_multiple_of\":4,"
             "\"pad_id\":92,\"pad_type_id\":0,\"pad_token\":\"<pad>\"},"
             "\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":null,\"post_processor\":%s,"
             "\"decoder\":null,\"model\":%s}",
             post, model);
    path = write_tmp(json);
    t = load(path);
    rm_tmp(path);
    k = enc(t, "abcdefg", 7, true, &ids);
    expect_ids(ids, k, (int32_t[]){92, 92, 92, 90, 5, 6, 7, 91}, 8, "left, special");
    free(ids);
    cr_expect_eq(gk_tokenizer_bos_id(t), 90);
    cr_expect_eq(gk_tokenizer_eos_id(t), 91);
    gk_tokenizer_destroy(t);
    free(json);
}

/* ------------------------------------------------------------ errors */

#define MIN_MODEL "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"
#define TOKJSON(norm, pre, dec, model)                                                       \
    "{\"added_tokens\":[],\"normalizer\":" norm ",\"pre_tokenizer\":" pre ","               \
    "\"post_processor\":null,\"decoder\":" dec ",\"model\":" model "}"

Test(errors, unsupported_features_are_named)
{
    expect_load_error(TOKJSON("{\"type\":\"BertNormalizer\",\"lowercase\":true}", "null", "null", MIN_MODEL),
                      GK_ERR_UNSUPPORTED, "normalizer type 'BertNormalizer'");
    expect_load_error(TOKJSON("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Precompiled\"}]}",
                              "null", "null", MIN_MODEL),
                      GK_ERR_UNSUPPORTED, "'Precompiled'");
    expect_load_error(TOKJSON("null", "{\"type\":\"Whitespace\"}", "null", MIN_MODEL),
                      GK_ERR_UNSUPPORTED, "pre_tokenizer type 'Whitespace'");
    expect_load_error(TOKJSON("null", "null", "{\"type\":\"WordPiece\",\"prefix\":\"##\"}", MIN_MODEL),
                      GK_ERR_UNSUPPORTED, "decoder type 'WordPiece'");
    expect_load_error(TOKJSON("null", "null", "null", "{\"type\":\"Unigram\",\"vocab\":[]}"),
                      GK_ERR_UNSUPPORTED, "model type 'Unigram'");
    expect_load_error(TOKJSON("null", "null", "null",
                              "{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}"),
                      GK_ERR_UNSUPPORTED, "dropout");
    expect_load_error(TOKJSON("null", "null", "null",
                              "{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"vocab\":{\"a\":0},\"merges\":[]}"),
                      GK_ERR_UNSUPPORTED, "continuing_subword_prefix");
    expect_load_error(TOKJSON("null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\bx\"},\"behavior\":\"Isolated\",\"invert\":false}",
                              "null", MIN_MODEL),
                      GK_ERR_UNSUPPORTED, "\\bx");
    expect_load_error("{\"model\":" MIN_MODEL ",\"post_processor\":{\"type\":\"Mystery\"}}",
                      GK_ERR_UNSUPPORTED, "post_processor type 'Mystery'");
}

Test(errors, broken_files)
{
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", GK_ERR_FORMAT, "not valid JSON");
    expect_load_error("[1, 2]", GK_ERR_FORMAT, "not a JSON object");
    expect_load_error(TOKJSON("null", "null", "null", "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a zz\"]}"),
                      GK_ERR_FORMAT, "'zz'");
    expect_load_error(TOKJSON("null", "null", "null", "{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}"),
                      GK_ERR_FORMAT, "'a'");
    /* a real file cut in half */
    size_t len;
    char *text = slurp(tok_file("gpt2"), &len);
    text[len / 2] = '\0';
    expect_load_error(text, GK_ERR_FORMAT, "not valid JSON");
    free(text);
    gk_tokenizer *t = NULL;
    gk_err err = {0};
    cr_expect_eq(gk_tokenizer_load("/nonexistent/tokenizer.json", &t, &err), GK_ERR_IO);
    cr_expect_not_null(strstr(err.msg, "/nonexistent/tokenizer.json"));
}

Test(errors, invalid_utf8_names_the_offset)
{
    gk_tokenizer *t = load_named("qwen3");
    static const struct { const char *s; size_t n; const char *at; } bad[] = {
        {"ab\xFF" "cd", 5, "offset 2"},
        {"hello \xE2\x82", 8, "offset 6"},
        {"x\xED\xA0\x80", 4, "offset 1"},          /* surrogate */
        {"\xC0\xAF", 2, "offset 0"},               /* overlong */
        {"0123456789\xF4\x90\x80\x80", 14, "offset 10"},
        {"caf\xC3\xA9 \x80", 7, "offset 6"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        gk_err err = {0};
        gk_status st = gk_tokenizer_encode(t, bad[i].s, bad[i].n, false, &ids, &n, &err);
        cr_expect_eq(st, GK_ERR_INVALID_ARG, "case %zu", i);
        cr_expect_null(ids);
        cr_expect_eq(n, 0);
        cr_expect_not_null(strstr(err.msg, bad[i].at), "case %zu: \"%s\" lacks \"%s\"", i, err.msg, bad[i].at);
    }
    /* NUL is valid UTF-8 */
    int32_t *ids;
    size_t n = enc(t, "a\0b", 3, false, &ids);
    cr_expect_geq(n, 1);
    free(ids);
    gk_tokenizer_destroy(t);
}

Test(errors, decode_ids_outside_the_vocabulary)
{
    gk_tokenizer *t = load_named("gpt35turbo");
    int32_t bad[][2] = {{9906, 100277}, {9906, -1}, {9906, 100265}};
    for (int i = 0; i < 3; i++) {
        char *s = (char *)1;
        size_t len = 9;
        gk_err err = {0};
        gk_status st = gk_tokenizer_decode(t, bad[i], 2, false, &s, &len, &err);
        cr_expect_eq(st, GK_ERR_INVALID_ARG, "case %d", i);
        cr_expect_null(s);
        char want[32];
        snprintf(want, sizeof want, "id %d", bad[i][1]);
        cr_expect_not_null(strstr(err.msg, want), "\"%s\" lacks \"%s\"", err.msg, want);
    }
    size_t len = 5;
    char *s = dec(t, NULL, 0, false, &len);
    cr_expect_str_eq(s, "");
    cr_expect_eq(len, 0);
    free(s);
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ limits */

/* HF numbers an added token that is not in the vocabulary after the largest id so
 * far: after a vocabulary id of 2^31 - 2 the second such token would need 2^31. */
Test(limits, added_token_ids_past_int32_are_refused_by_name)
{
    expect_load_error("{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\",\"vocab\":{\"b\":2147483646},\"merges\":[]},"
                      "\"added_tokens\":[{\"id\":0,\"content\":\"b\",\"special\":true},"
                      "{\"id\":1,\"content\":\"zz\",\"special\":true},{\"id\":2,\"content\":\"yy\",\"special\":true}]}",
                      GK_ERR_FORMAT, "added token 'yy' would get id 2147483648, past the largest supported id");
}

/* Id tables are sized by the largest id: one far past the number of tokens is
 * refused with the id, the token and the file; a sparse but bounded one loads. */
Test(limits, ids_far_past_the_token_count_are_refused)
{
    const char *json = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2147483646},\"merges\":[]}}";
    char *path = write_tmp(json);
    gk_tokenizer *t = NULL;
    gk_err err = {0};
    gk_status st = gk_tokenizer_load(path, &t, &err);
    cr_expect_eq(st, GK_ERR_FORMAT, "%s (%s)", gk_status_str(st), err.msg);
    cr_expect_null(t);
    cr_expect_not_null(strstr(err.msg, "token 'b' has id 2147483646"), "%s", err.msg);
    cr_expect_not_null(strstr(err.msg, path), "\"%s\" does not name %s", err.msg, path);
    rm_tmp(path);
    gk_tokenizer_destroy(t);

    /* 2^20 spare ids: a hole of a million still loads, and the ids around it work */
    t = load_synth("[]", "null", "null", "null", "null",
                   "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1000000},\"merges\":[]}");
    cr_expect_eq(gk_tokenizer_vocab_size(t), 1000001);
    cr_expect_str_eq(gk_tokenizer_token(t, 1000000), "b");
    cr_expect_null(gk_tokenizer_token(t, 999999));
    int32_t *ids;
    size_t n = enc(t, "ba", 2, false, &ids);
    expect_ids(ids, n, (int32_t[]){1000000, 0}, 2, "ba");
    free(ids);
    gk_tokenizer_destroy(t);
}

/* A JSON array of n special added tokens "<t0000000>"... with ids from first_id
 * (the ids written are HF's; HF numbers them itself), then extra (JSON, may be ""). */
static char *many_added(size_t n, int first_id, const char *extra)
{
    size_t cap = n * 64 + strlen(extra) + 16, k = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    s[k++] = '[';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%s{\"id\":%zu,\"content\":\"<t%07zu>\",\"special\":true}",
                              i ? "," : "", first_id + i, i);
    k += (size_t)snprintf(s + k, cap - k, "%s%s]", *extra ? "," : "", extra);
    return s;
}

/* 200,000 added tokens load (in linear time; the test asserts only results) and
 * keep HF's numbering: each new content takes the next id after the vocabulary,
 * a repeated content keeps its first id and takes no new one, while its flags
 * follow the repeat ("special" stays once set, as HF's special-token set). */
Test(limits, many_added_tokens_keep_hf_numbering)
{
    enum { N = 200000 };
    char *added = many_added(N, 27,
                             "{\"id\":0,\"content\":\"<d>\",\"special\":false},"
                             "{\"id\":0,\"content\":\"<t0000007>\",\"special\":false},"
                             "{\"id\":0,\"content\":\"<d>\",\"special\":true},"
                             "{\"id\":0,\"content\":\"<e>\",\"special\":false}");
    gk_tokenizer *t = load_synth(added, "null", "null", "null", "null", bpe_model("", "", ""));
    free(added);
    const int32_t base = 27; /* CHARS_VOCAB holds ids 0..26 */
    cr_expect_eq(gk_tokenizer_vocab_size(t), base + N + 2);
    cr_expect_eq(gk_tokenizer_token_id(t, "<t0000000>"), base);
    cr_expect_eq(gk_tokenizer_token_id(t, "<t0123456>"), base + 123456);
    cr_expect_eq(gk_tokenizer_token_id(t, "<t0199999>"), base + N - 1);
    cr_expect_eq(gk_tokenizer_token_id(t, "<d>"), base + N);
    cr_expect_eq(gk_tokenizer_token_id(t, "<e>"), base + N + 1);
    cr_expect_str_eq(gk_tokenizer_token(t, base + 54321), "<t0054321>");
    /* encoding finds an added token in text, among its 200,001 companions */
    int32_t *ids;
    size_t n = enc(t, "ab<t0123456>c<d>", 16, false, &ids);
    expect_ids(ids, n, (int32_t[]){1, 2, base + 123456, 3, base + N}, 5, "ab<t0123456>c<d>");
    /* "<d>" became special on its repeat: skip_special drops it; "<t0000007>"
     * stays special although repeated as not special (no decoder: HF joins with " ") */
    int32_t ds[] = {1, base + N, base + 7, base + N + 1};
    char *s = dec(t, ds, 4, true, NULL);
    cr_expect_str_eq(s, "a <e>");
    free(s);
    free(ids);
    gk_tokenizer_destroy(t);
}

/* HF's BPE drops a character it has no token for when there is no unk_token: a
 * word of such characters gives no ids at all, cached or not. */
Test(limits, word_of_dropped_characters_gives_no_ids)
{
    gk_tokenizer *t = load_synth("[]", "null", "null", "null", "null",
                                 "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}");
    for (int pass = 0; pass < 2; pass++) { /* the second pass hits the word cache */
        int32_t *ids;
        size_t n = enc(t, "b", 1, false, &ids);
        cr_expect_eq(n, 0, "pass %d", pass);
        free(ids);
        n = enc(t, "bab", 3, false, &ids);
        expect_ids(ids, n, (int32_t[]){0}, 1, "bab");
        free(ids);
    }
    gk_tokenizer_destroy(t);
}

/* ------------------------------------------------------------ NUL characters */

/* "\u0000" inside an added token's content is part of it: the token matches only
 * the whole content, and decodes to it. */
Test(nul, added_token_content_holding_nul_matches_whole)
{
    gk_tokenizer *t = load_synth("[{\"id\":0,\"content\":\"<x\\u0000>\",\"special\":true}]", "null", "null",
                                 "null", "null",
                                 "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"<\":2,\"x\":3,\">\":4},\"merges\":[]}");
    int32_t *ids;
    size_t n = enc(t, "a<x\0>b", 6, false, &ids);
    expect_ids(ids, n, (int32_t[]){0, 5, 1}, 3, "a<x\\0>b");
    free(ids);
    n = enc(t, "a<x>", 4, false, &ids);
    expect_ids(ids, n, (int32_t[]){0, 2, 3, 4}, 4, "a<x>");
    free(ids);
    size_t len;
    char *s = dec(t, (int32_t[]){5}, 1, false, &len);
    cr_expect(len == 4 && !memcmp(s, "<x\0>", 4), "decoded %zu bytes", len);
    free(s);
    gk_tokenizer_destroy(t);
}

/* tokenizer_config.json's bos_token / eos_token are matched whole, NULs included. */
Test(nul, config_tokens_holding_nul_are_matched_whole)
{
    char *path = synth("[{\"id\":0,\"content\":\"<s>\",\"special\":true},"
                       "{\"id\":0,\"content\":\"<s>\\u0000\",\"special\":true}]",
                       "null", "null", "null", "null", "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}");
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s", path);
    strcpy(strrchr(cfg, '/') + 1, "tokenizer_config.json");
    FILE *f = fopen(cfg, "wb");
    cr_assert_not_null(f);
    fputs("{\"bos_token\": \"<s>\\u0000\", \"eos_token\": {\"content\": \"<s>\"}}", f);
    fclose(f);
    gk_tokenizer *t = load(path);
    unlink(cfg);
    rm_tmp(path);
    cr_expect_eq(gk_tokenizer_token_id(t, "<s>"), 1);
    cr_expect_eq(gk_tokenizer_bos_id(t), 2);
    cr_expect_eq(gk_tokenizer_eos_id(t), 1);
    gk_tokenizer_destroy(t);
}

/* Where a NUL cannot be kept (object keys, so vocabulary tokens; merges, which
 * name vocabulary tokens; type names, patterns) the file is refused, never cut. */
Test(nul, nul_where_it_cannot_be_kept_is_refused_by_name)
{
    const char *key_nul = TOKJSON("null", "null", "null",
                                  "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\\u0000b\":1},\"merges\":[]}");
    char want[128];
    snprintf(want, sizeof want, "key at byte %zu ('a\\\\u0000b') holds a NUL character",
             (size_t)(strstr(key_nul, "\"a\\u0000b\"") - key_nul));
    expect_load_error(key_nul, GK_ERR_FORMAT, want);
    expect_load_error(TOKJSON("null", "null", "null",
                              "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\\u0000\",\"b\"]]}"),
                      GK_ERR_FORMAT, "merge 0 holds a NUL character");
    expect_load_error(TOKJSON("null", "null", "null",
                              "{\"type\":\"BPE\\u0000x\",\"vocab\":{\"a\":0},\"merges\":[]}"),
                      GK_ERR_FORMAT, "model \"type\" holds a NUL character");
    expect_load_error(TOKJSON("null", "{\"type\":\"Split\",\"pattern\":{\"String\":\"a\\u0000\"},\"behavior\":\"Isolated\"}",
                              "null", MIN_MODEL),
                      GK_ERR_FORMAT, "Split pre_tokenizer \"pattern\" holds a NUL character");
}

/* ------------------------------------------------------------ names in messages */

/* Names read from the file reach messages escaped: a newline or an escape
 * sequence in a type, token or regex cannot forge a line or drive a terminal. */
Test(errors, names_from_the_file_are_escaped)
{
    static const struct { const char *json; const char *want; } cases[] = {
        {TOKJSON("null", "{\"type\":\"Evil\\nFAKE\\u001b[31m\"}", "null", MIN_MODEL),
         "pre_tokenizer type 'Evil\\nFAKE\\x1b[31m'"},
        {TOKJSON("null", "null", "null", "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a z\\r\\u0007\"]}"),
         "token 'z\\x0d\\x07' is not in the vocabulary"},
        {TOKJSON("null", "null", "null", "{\"type\":\"BPE\",\"vocab\":{\"a\\tb\\n\":-1},\"merges\":[]}"),
         "vocab entry 'a\\tb\\n' has no valid id"},
        {TOKJSON("null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\\n\"},\"behavior\":\"Isolated\"}",
                 "null", MIN_MODEL),
         "regex '(\\n' does not compile"},
        {"{\"version\":\"2.0\\u001b]0;x\\u0007\",\"model\":" MIN_MODEL "}", "version '2.0\\x1b]0;x\\x07'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *path = write_tmp(cases[i].json);
        gk_tokenizer *t = NULL;
        gk_err err = {0};
        cr_expect_neq(gk_tokenizer_load(path, &t, &err), GK_OK, "case %zu", i);
        rm_tmp(path);
        cr_expect_not_null(strstr(err.msg, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                           cases[i].want);
        for (const char *p = err.msg; *p; p++)
            cr_expect((unsigned char)*p >= 0x20 && *p != 0x7f, "case %zu: control byte 0x%02x in \"%s\"", i,
                      (unsigned char)*p, err.msg);
    }
}

/* ------------------------------------------------------------ gkrun's tokenizer commands */

/* Exit status of `sh -c "gkrun ARGS 2>&1"`, its output in *out (caller frees). */
static int gkrun(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "%s/tools/gkrun ", env_or("GK_TEST_BUILD_ROOT", "../build"));
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += r;
        if (len + 1 == cap)
            cr_assert_not_null(buf = realloc(buf, cap *= 2));
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A vocabulary id of gpt2's tokenizer.json read with cJSON, not with gk. */
static int vocab_id(const cJSON *vocab, const char *token)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(vocab, token);
    cr_assert(cJSON_IsNumber(v), "test bug: '%s' is not in gpt2's vocabulary", token);
    return v->valueint;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* `gkrun verify` encodes a golden text holding "\u0000" with its NUL and compares
 * decoded texts in full. Oracle: GPT-2's byte-level alphabet maps byte 0 to U+0100
 * (byte_char) and its regex cuts "a", "\0", "b" apart, so the ids are those of the
 * three one-character tokens, looked up in the vocabulary with cJSON. */
Test(gkrun_tools, verify_compares_golden_texts_with_nul_in_full)
{
    char *json = slurp(tok_file("gpt2"), NULL);
    cJSON *root = cJSON_Parse(json);
    free(json);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "vocab");
    char nul_char[5] = {0};
    put_cp(nul_char, byte_char(0));
    int a = vocab_id(vocab, "a"), z = vocab_id(vocab, nul_char), b = vocab_id(vocab, "b");
    cJSON_Delete(root);

    /* the library itself, given the length */
    gk_tokenizer *t = load_named("gpt2");
    int32_t *ids;
    size_t n = enc(t, "a\0b", 3, false, &ids);
    expect_ids(ids, n, (int32_t[]){a, z, b}, 3, "a\\0b");
    free(ids);
    gk_tokenizer_destroy(t);

    char dir[] = "/tmp/gk-tokvn-XXXXXX", tok[64], golden[64], text[512], *out;
    cr_assert_not_null(mkdtemp(dir));
    snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
    snprintf(golden, sizeof golden, "%s/golden.json", dir);
    cr_assert_eq(symlink(tok_file("gpt2"), tok), 0);
    snprintf(text, sizeof text,
             "{\"cases\": [{\"text\": \"a\\u0000b\", \"ids\": [%d, %d, %d], \"ids_with_special\": [%d, %d, %d], "
             "\"decoded\": \"a\\u0000b\"}, {\"text\": \"\\u0000\", \"ids\": [%d], \"decoded\": \"\\u0000\"}]}",
             a, z, b, a, z, b, z);
    write_file(golden, text);
    cr_expect_eq(gkrun(&out, "verify %s", dir), 0, "%s", out);
    cr_expect_not_null(strstr(out, "ids 2/2, ids_with_special 1/1, decodes 2/2"), "%s", out);
    cr_expect_not_null(strstr(out, "summary: 2 passed, 0 failed: PASS"), "%s", out);
    free(out);
    /* what the text cut at its NUL would give must fail: ids, then the decoded text */
    snprintf(text, sizeof text, "{\"cases\": [{\"text\": \"a\\u0000b\", \"ids\": [%d]}]}", a);
    write_file(golden, text);
    cr_expect_eq(gkrun(&out, "verify %s", dir), 1, "%s", out);
    cr_expect_not_null(strstr(out, "case 0: text \"a\\x00b\""), "%s", out);
    free(out);
    snprintf(text, sizeof text, "{\"cases\": [{\"text\": \"a\\u0000b\", \"ids\": [%d, %d, %d], \"decoded\": \"a\"}]}",
             a, z, b);
    write_file(golden, text);
    cr_expect_eq(gkrun(&out, "verify %s", dir), 1, "%s", out);
    cr_expect_not_null(strstr(out, "decoded differs: got \"a\\x00b\", want \"a\""), "%s", out);
    free(out);
    unlink(golden);
    unlink(tok);
    rmdir(dir);
}

/* A stdin that cannot be read is named as such, with the system's reason. */
Test(gkrun_tools, stdin_read_errors_are_named)
{
    char *out;
    cr_expect_eq(gkrun(&out, "tokenize --tokenizer %s - <&-", tok_file("gpt2")), 1, "%s", out);
    cr_expect_not_null(strstr(out, "cannot read stdin: Bad file descriptor"), "%s", out);
    free(out);
    cr_expect_eq(gkrun(&out, "tokenize --tokenizer %s - < /", tok_file("gpt2")), 1, "%s", out);
    cr_expect_not_null(strstr(out, "cannot read stdin: Is a directory"), "%s", out);
    free(out);
    cr_expect_eq(gkrun(&out, "detokenize --tokenizer %s < /", tok_file("gpt2")), 1, "%s", out);
    cr_expect_not_null(strstr(out, "cannot read stdin: Is a directory"), "%s", out);
    free(out);
}

/* detokenize takes whole decimal ids in [0, 2^31 - 1] only, from arguments or
 * stdin (where a NUL byte is not taken for the end), and names what it refuses. */
Test(gkrun_tools, detokenize_refuses_what_is_not_an_id)
{
    static const struct { const char *args; const char *want; } cases[] = {
        {"12abc", "'12abc' is not an integer"},
        {"-1", "-1 is out of range (0 to 2147483647)"},
        {"2147483648", "2147483648 is out of range (0 to 2147483647)"},
        {"99999999999999999999999999", "is not a token id"},
        {"%d,", NULL}, /* a separator at the end is fine */
    };
    char *json = slurp(tok_file("gpt2"), NULL);
    cJSON *root = cJSON_Parse(json);
    free(json);
    int hello = vocab_id(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "vocab"),
                         "Hello");
    cJSON_Delete(root);
    char *out, args[32];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(args, sizeof args, cases[i].args, hello);
        int rc = gkrun(&out, "detokenize --tokenizer %s %s", tok_file("gpt2"), args);
        if (cases[i].want) {
            cr_expect_eq(rc, 2, "%s: %s", args, out);
            cr_expect_not_null(strstr(out, cases[i].want), "%s: %s", args, out);
        } else {
            cr_expect_eq(rc, 0, "%s: %s", args, out);
            cr_expect_str_eq(out, "Hello\n", "%s", args);
        }
        free(out);
    }
    char path[] = "/tmp/gk-tokids-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    char ids[32];
    int n = snprintf(ids, sizeof ids, "%d %c %d", hello, '\0', hello);
    cr_assert_eq(write(fd, ids, (size_t)n), n);
    close(fd);
    char want[64];
    snprintf(want, sizeof want, "a NUL byte (at byte %zu of the input)", strlen(ids));
    cr_expect_eq(gkrun(&out, "detokenize --tokenizer %s < %s", tok_file("gpt2"), path), 2, "%s", out);
    cr_expect_not_null(strstr(out, want), "%s", out);
    free(out);
    unlink(path);
}

/* tokenizer.json must be UTF-8 text, as HF requires: a token whose bytes are
 * not UTF-8 (here a lone lead byte at the end of a vocab key, then a stray
 * continuation byte) is refused with its offset, never decoded past its end. */
Test(errors, tokenizer_json_that_is_not_utf8_is_refused_with_the_offset)
{
    const char *bad[2] = {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\xf0\":1},\"merges\":[]}}",
                          "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\x80\":0},\"merges\":[]}}"};
    for (int i = 0; i < 2; i++) {
        size_t at = strcspn(bad[i], "\x80\xf0");
        char want[64];
        snprintf(want, sizeof want, "not UTF-8 text: byte 0x%02x at offset %zu", (unsigned char)bad[i][at], at);
        expect_load_error(bad[i], GK_ERR_FORMAT, want);
    }
}

/* ------------------------------------------------------------ streaming decode */

/* Push ids a few at a time (1, or 3 at every seventh push) into a decode
 * stream; after each push its text must be the whole decode of the ids so
 * far (gk_tokenizer_decode, checked against HF by the golden tests). */
static void check_stream(const gk_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *what)
{
    gk_decode_stream *s = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_decode_stream_new(t, skip, &s, &err), GK_OK, "%s", err.msg);
    size_t len = 99;
    const char *txt = gk_decode_stream_text(s, &len);
    cr_assert(txt && len == 0 && txt[0] == '\0', "%s: a new stream's text is not empty", what);
    for (size_t i = 0, p = 0; i < n; p++) {
        size_t k = p % 7 == 3 ? 3 : 1;
        if (k > n - i)
            k = n - i;
        cr_assert_eq(gk_decode_stream_push(s, ids + i, k, &err), GK_OK, "%s: push at %zu: %s", what, i, err.msg);
        i += k;
        size_t wl;
        char *want = dec(t, ids, i, skip, &wl);
        txt = gk_decode_stream_text(s, &len);
        cr_assert(len == wl && !memcmp(txt, want, wl) && txt[len] == '\0',
                  "%s: after %zu ids the stream has \"%s\" (%zu bytes), the whole decode \"%s\" (%zu bytes)", what,
                  i, txt, len, want, wl);
        free(want);
    }
    gk_decode_stream_destroy(s);
}

static uint64_t stream_rng = 0x2545F4914F6CDD1Dull;
static uint32_t stream_next(void)
{
    stream_rng ^= stream_rng << 13;
    stream_rng ^= stream_rng >> 7;
    stream_rng ^= stream_rng << 17;
    return (uint32_t)(stream_rng >> 32);
}

/* n ids of t's vocabulary: a third from its first 300 ids (the byte
 * alphabet of ByteLevel files and the <0xXX> tokens of ByteFallback ones,
 * so that characters are cut between ids), a tenth special (BOS, EOS), the
 * rest anywhere. */
static int32_t *random_ids(const gk_tokenizer *t, size_t n)
{
    const int64_t nv = gk_tokenizer_vocab_size(t);
    int32_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++) {
        const uint32_t r = stream_next() % 30;
        int32_t id = -1;
        if (r < 3)
            id = r == 0 ? gk_tokenizer_bos_id(t) : gk_tokenizer_eos_id(t);
        while (id < 0 || !gk_tokenizer_token(t, id))
            id = (int32_t)(stream_next() % (r < 13 ? (uint32_t)(nv < 300 ? nv : 300) : (uint32_t)nv));
        ids[i] = id;
    }
    return ids;
}

/* The golden texts (their ids with special tokens, each case alone and all
 * of them in one list) and random ids, with and without skip_special. */
static void check_stream_named(const char *name)
{
    gk_tokenizer *t = load_named(name);
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizers/%s/golden.json", env_or("GK_TEST_DATA", "data"), name);
    size_t json_len;
    char *json = slurp(path, &json_len);
    cJSON *root = gk_json_parse(json, json_len, NULL);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    cr_assert(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0, "%s: no cases", path);
    int32_t *all = NULL;
    size_t n_all = 0;
    int k = 0;
    for (const cJSON *c = cases->child; c; c = c->next, k++) {
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids_with_special");
        const size_t n = (size_t)cJSON_GetArraySize(want);
        all = realloc(all, (n_all + n + 1) * sizeof *all);
        cr_assert_not_null(all);
        size_t i = n_all;
        for (const cJSON *w = want->child; w; w = w->next)
            all[i++] = (int32_t)w->valuedouble;
        char what[96];
        snprintf(what, sizeof what, "%s golden case %d", name, k);
        check_stream(t, all + n_all, n, false, what);
        check_stream(t, all + n_all, n, true, what);
        n_all += n;
    }
    char what[96];
    snprintf(what, sizeof what, "%s golden cases in one list", name);
    check_stream(t, all, n_all, false, what);
    check_stream(t, all, n_all, true, what);
    free(all);
    int32_t *ids = random_ids(t, 1500);
    snprintf(what, sizeof what, "%s random ids", name);
    check_stream(t, ids, 1500, false, what);
    check_stream(t, ids, 1500, true, what);
    free(ids);
    gk_tokenizer_destroy(t);
    cJSON_Delete(root);
    free(json);
}

Test(stream, gpt2) { check_stream_named("gpt2"); }
Test(stream, llama2) { check_stream_named("llama2"); }
Test(stream, llama3) { check_stream_named("llama3"); }
Test(stream, qwen3) { check_stream_named("qwen3"); }
Test(stream, gpt35turbo) { check_stream_named("gpt35turbo"); }

/* Decoders of other shapes, on a small vocabulary: none (pieces joined by
 * spaces), Metaspace with and without a first-piece rule, a Strip of the
 * fused text's start, and steps that rewrite the fused text (Replace, an
 * end Strip: decoded whole each time, and still right). */
Test(stream, other_decoders)
{
    const char *vocab = ",\"▁Hey\":100,\"▁friend!\":101,\"▁\":102,\"how\":103,\"▁how\":104,\"<s>\":105,\"▁▁\":106";
    const char *added = "[{\"id\":105,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,"
                        "\"rstrip\":false,\"normalized\":false,\"special\":true}]";
    const char *decoders[] = {
        "null",
        "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"always\",\"split\":true}",
        "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"never\",\"split\":true}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},\"content\":\" \"},"
        "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁▁\"},\"content\":\"_\"}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},\"content\":\" \"},"
        "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":0,\"stop\":1}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Strip\",\"content\":\"▁\",\"start\":1,\"stop\":1},"
        "{\"type\":\"Fuse\"}]}",
    };
    for (size_t d = 0; d < sizeof decoders / sizeof *decoders; d++) {
        gk_tokenizer *t = load_synth(added, "null", "null", "null", decoders[d], bpe_model(vocab, "", ""));
        int32_t ids[400];
        for (size_t i = 0; i < 400; i++) {
            const uint32_t r = stream_next() % 10;
            ids[i] = r < 7 ? (int32_t)(100 + stream_next() % 7) : (int32_t)(stream_next() % 27);
        }
        char what[64];
        snprintf(what, sizeof what, "decoder %zu", d);
        check_stream(t, ids, 400, false, what);
        check_stream(t, ids, 400, true, what);
        gk_tokenizer_destroy(t);
    }
}

/* ByteFallback: a run of <0xXX> tokens is valid UTF-8 or one U+FFFD per byte
 * as a whole, so a byte that ends a valid run can still turn it all into
 * U+FFFD: such runs, and runs around ordinary tokens, and many random bytes. */
Test(stream, byte_fallback_runs)
{
    gk_tokenizer *t = load_named("llama2");
    int32_t b[256];
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        b[i] = gk_tokenizer_token_id(t, name);
        cr_assert_geq(b[i], 0, "%s is not in llama2's vocabulary", name);
    }
    const int32_t the = gk_tokenizer_token_id(t, "▁the");
    const int32_t runs[][6] = {
        {b[0xC3], b[0xA9], b[0x41], b[0xC3], the, b[0x41]},
        {b[0x41], b[0x42], b[0xC3], b[0xA9], b[0x43], b[0xFF]},
        {the, b[0x41], b[0x80], the, b[0xE2], b[0x82]},
        {b[0xE2], b[0x82], b[0xAC], b[0x41], b[0x80], the},
        {b[0xF0], b[0x9F], b[0x99], b[0x82], b[0x41], b[0xF0]},
    };
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        char what[32];
        snprintf(what, sizeof what, "byte run %zu", r);
        check_stream(t, runs[r], 6, false, what);
    }
    int32_t ids[2000];
    for (size_t i = 0; i < 2000; i++) {
        const uint32_t r = stream_next() % 10;
        ids[i] = r < 5 ? b[0x20 + stream_next() % 0x60] : r < 8 ? b[0x80 + stream_next() % 0x80] : the;
    }
    check_stream(t, ids, 2000, false, "random bytes");
    gk_tokenizer_destroy(t);
}

/* An id outside the vocabulary is refused by name and appends nothing; the
 * stream goes on. NULL arguments are refused. */
Test(stream, bad_ids_and_arguments)
{
    gk_tokenizer *t = load_named("gpt2");
    gk_decode_stream *s = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_decode_stream_new(NULL, true, &s, &err), GK_ERR_INVALID_ARG);
    cr_assert_null(s);
    cr_assert_eq(gk_decode_stream_new(t, true, NULL, &err), GK_ERR_INVALID_ARG);
    cr_assert_eq(gk_decode_stream_new(t, true, &s, &err), GK_OK, "%s", err.msg);
    int32_t *hello;
    const size_t nh = enc(t, "Hello, world", 12, false, &hello);
    cr_assert_eq(gk_decode_stream_push(s, hello, nh, &err), GK_OK, "%s", err.msg);
    const int32_t bad[2] = {hello[0], (int32_t)gk_tokenizer_vocab_size(t) + 5};
    cr_assert_eq(gk_decode_stream_push(s, bad, 2, &err), GK_ERR_INVALID_ARG);
    char want_id[32];
    snprintf(want_id, sizeof want_id, "%d", bad[1]);
    cr_assert_not_null(strstr(err.msg, want_id), "\"%s\" does not name the id", err.msg);
    const int32_t neg = -1;
    cr_assert_eq(gk_decode_stream_push(s, &neg, 1, &err), GK_ERR_INVALID_ARG);
    cr_assert_eq(gk_decode_stream_push(s, NULL, 1, &err), GK_ERR_INVALID_ARG);
    cr_assert_eq(gk_decode_stream_push(NULL, hello, 1, &err), GK_ERR_INVALID_ARG);
    size_t len;
    cr_assert_str_eq(gk_decode_stream_text(s, &len), "Hello, world");
    cr_assert_eq(len, 12);
    cr_assert_eq(gk_decode_stream_push(s, NULL, 0, &err), GK_OK);
    cr_assert_eq(gk_decode_stream_push(s, hello, nh, &err), GK_OK, "%s", err.msg);
    cr_assert_str_eq(gk_decode_stream_text(s, &len), "Hello, worldHello, world");
    cr_assert_null(gk_decode_stream_text(NULL, &len));
    cr_assert_eq(len, 0);
    gk_decode_stream_destroy(s);
    gk_decode_stream_destroy(NULL);
    free(hello);
    gk_tokenizer_destroy(t);
}
