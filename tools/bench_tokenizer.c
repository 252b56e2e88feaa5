/* bench_tokenizer - single-thread encode speed of gk_tokenizer on English text.
 *
 *   bench_tokenizer [--text FILE] [--write-text FILE] [--mb N] [--reps R] [NAME=]PATH...
 *
 * PATH is a tokenizer folder or tokenizer.json; NAME defaults to the folder's name.
 * The text is FILE, or about N MB (default 5) of English-like text made by
 * shuffling the sentences of built-in public-domain paragraphs (Austen, Carroll,
 * Lincoln) with a fixed seed, so every run and machine sees the same bytes.
 * --write-text saves those bytes, so that tools/hf_tokenizer_speed.py can time HF
 * `tokenizers` on exactly the same input. For each tokenizer it prints
 *   qwen3: encode X MB/s (N tokens)
 * (best of R runs of one encode call over the whole text), then decode speed,
 * load time and an FNV-1a hash of the ids, which hf_tokenizer_speed.py prints too:
 * equal hashes mean identical ids for the whole text; then the cost an id of
 * streamed output (the text's first 1,000 and 8,000 ids pushed one at a time
 * into a gk_decode_stream, against a whole decode of the ids so far after each).
 * Not a test: parity is checked by the tokenizer suite and gkrun verify.
 */
#include "gk/gk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const PARAGRAPHS[] = {
    /* Jane Austen, Pride and Prejudice (1813), chapter 1 */
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters. \"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that "
    "Netherfield Park is let at last?\" Mr. Bennet replied that he had not. \"But it is,\" returned "
    "she; \"for Mrs. Long has just been here, and she told me all about it.\" Mr. Bennet made no "
    "answer. \"Do you not want to know who has taken it?\" cried his wife impatiently. \"You want "
    "to tell me, and I have no objection to hearing it.\" This was invitation enough. ",
    /* Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter 1 */
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, \"and what is the use of a book,\" thought Alice \"without "
    "pictures or conversations?\" So she was considering in her own mind (as well as she could, for "
    "the hot day made her feel very sleepy and stupid), whether the pleasure of making a "
    "daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a "
    "White Rabbit with pink eyes ran close by her. There was nothing so very remarkable in that; "
    "nor did Alice think it so very much out of the way to hear the Rabbit say to itself, \"Oh "
    "dear! Oh dear! I shall be late!\" In another moment down went Alice after it, never once "
    "considering how in the world she was to get out again. ",
    /* Abraham Lincoln, the Gettysburg Address (1863) */
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal. Now we "
    "are engaged in a great civil war, testing whether that nation, or any nation so conceived and "
    "so dedicated, can long endure. We are met on a great battle-field of that war. We have come to "
    "dedicate a portion of that field, as a final resting place for those who here gave their lives "
    "that that nation might live. It is altogether fitting and proper that we should do this. But, "
    "in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this "
    "ground. The world will little note, nor long remember what we say here, but it can never "
    "forget what they did here. ",
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ~mb MB of shuffled sentences, paragraphs of 3 to 8 sentences, a number now and then. */
static char *make_text(double mb, size_t *len)
{
    const char *sent[256];
    size_t sent_len[256], ns = 0;
    for (size_t p = 0; p < sizeof PARAGRAPHS / sizeof *PARAGRAPHS; p++) {
        const char *s = PARAGRAPHS[p];
        while (*s && ns < 256) {
            const char *e = s;
            while (*e && !((e[0] == '.' || e[0] == '?' || e[0] == '!' || e[0] == ';') && e[1] == ' '))
                e++;
            if (*e)
                e += 2;
            sent[ns] = s;
            sent_len[ns++] = (size_t)(e - s);
            s = e;
        }
    }
    size_t want = (size_t)(mb * 1e6), cap = want + 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    int in_par = 0, par_len = 3;
    while (n < want) {
        size_t k = rng_next(&seed) % ns;
        memcpy(buf + n, sent[k], sent_len[k]);
        n += sent_len[k];
        if (rng_next(&seed) % 16 == 0)
            n += (size_t)snprintf(buf + n, cap - n, "In %u, %u.%02u%% of them agreed. ",
                                  (unsigned)(1700 + rng_next(&seed) % 320),
                                  (unsigned)(rng_next(&seed) % 100), (unsigned)(rng_next(&seed) % 100));
        if (++in_par >= par_len) {
            if (n > 0 && buf[n - 1] == ' ')
                n--;
            memcpy(buf + n, "\n\n", 2);
            n += 2;
            in_par = 0;
            par_len = 3 + (int)(rng_next(&seed) % 6);
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* Folder name of PATH (the folder itself, or the one holding the file). */
static void default_name(const char *path, char *out, size_t cap)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/')
        tmp[--n] = '\0';
    if (n > 5 && !strcmp(tmp + n - 5, ".json")) {
        char *slash = strrchr(tmp, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(tmp, sizeof tmp, ".");
    }
    const char *base = strrchr(tmp, '/');
    snprintf(out, cap, "%s", base ? base + 1 : tmp);
}

static int bench_one(const char *arg, const char *text, size_t len, int reps)
{
    char name[256];
    const char *path = arg, *eq = strchr(arg, '=');
    if (eq && eq > arg) {
        snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
        path = eq + 1;
    } else {
        default_name(arg, name, sizeof name);
    }
    gk_err err = {0};
    gk_tokenizer *tok = NULL;
    double t0 = now_s();
    if (gk_tokenizer_load(path, &tok, &err) != GK_OK) {
        fprintf(stderr, "%s: %s: %s\n", name, gk_status_str(err.code), err.msg);
        return 1;
    }
    double t_load = now_s() - t0, best = 1e30, best_dec = 1e30;
    int32_t *ids = NULL;
    size_t n = 0;
    for (int r = 0; r < reps; r++) {
        free(ids);
        t0 = now_s();
        if (gk_tokenizer_encode(tok, text, len, false, &ids, &n, &err) != GK_OK) {
            fprintf(stderr, "%s: %s: %s\n", name, gk_status_str(err.code), err.msg);
            gk_tokenizer_destroy(tok);
            return 1;
        }
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
    }
    for (int r = 0; r < reps; r++) {
        char *out = NULL;
        size_t olen = 0;
        t0 = now_s();
        gk_status st = gk_tokenizer_decode(tok, ids, n, false, &out, &olen, &err);
        double dt = now_s() - t0;
        free(out);
        if (st != GK_OK) {
            fprintf(stderr, "%s: decode: %s: %s\n", name, gk_status_str(st), err.msg);
            break;
        }
        best_dec = dt < best_dec ? dt : best_dec;
    }
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the ids as int32 little-endian */
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) {
            h ^= (uint8_t)((uint32_t)ids[i] >> (8 * b));
            h *= 0x100000001b3ull;
        }
    printf("%s: encode %.1f MB/s (%zu tokens)\n", name, (double)len / best / 1e6, n);
    printf("%s: decode %.1f MB/s, load %.2f s, ids fnv1a64 %016llx\n", name,
           (double)len / best_dec / 1e6, t_load, (unsigned long long)h);
    /* streamed output: the first k ids one at a time, through a
     * gk_decode_stream, and as a whole decode of the ids so far after each */
    const size_t ks[2] = {1000, 8000};
    for (int q = 0; q < 2 && ks[q] <= n; q++) {
        const size_t k = ks[q];
        gk_decode_stream *ds = NULL;
        double t_stream = 0, t_whole = 0;
        if (gk_decode_stream_new(tok, true, &ds, &err) == GK_OK) {
            t0 = now_s();
            for (size_t i = 0; i < k && gk_decode_stream_push(ds, ids + i, 1, &err) == GK_OK; i++)
                ;
            t_stream = now_s() - t0;
            gk_decode_stream_destroy(ds);
        }
        t0 = now_s();
        for (size_t i = 1; i <= k; i++) {
            char *out = NULL;
            if (gk_tokenizer_decode(tok, ids, i, true, &out, NULL, &err) != GK_OK)
                break;
            free(out);
        }
        t_whole = now_s() - t0;
        printf("%s: streaming %zu ids one at a time: %.2f us an id (a whole decode after each: %.2f us)\n", name, k,
               t_stream / (double)k * 1e6, t_whole / (double)k * 1e6);
    }
    fflush(stdout);
    free(ids);
    gk_tokenizer_destroy(tok);
    return 0;
}

int main(int argc, char **argv)
{
    const char *text_path = NULL, *write_path = NULL;
    double mb = 5;
    int reps = 3, first = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc)
            text_path = argv[++i];
        else if (!strcmp(argv[i], "--write-text") && i + 1 < argc)
            write_path = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "bench_tokenizer: unknown option '%s'\n", argv[i]);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if ((first == argc && !write_path) || reps < 1 || mb <= 0) {
        fprintf(stderr, "usage: bench_tokenizer [--text FILE] [--write-text FILE] [--mb N] [--reps R] [NAME=]PATH...\n");
        return 2;
    }
    size_t len = 0;
    char *text = text_path ? read_file(text_path, &len) : make_text(mb, &len);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: cannot %s\n", text_path ? text_path : "allocate the text");
        return 1;
    }
    if (write_path) {
        FILE *f = fopen(write_path, "wb");
        if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "bench_tokenizer: cannot write %s\n", write_path);
            free(text);
            return 1;
        }
        printf("wrote %zu bytes to %s\n", len, write_path);
    }
    printf("text: %.2f MB (%s)\n", (double)len / 1e6, text_path ? text_path : "built-in sentences");
    int rc = 0;
    for (int i = first; i < argc; i++)
        rc |= bench_one(argv[i], text, len, reps);
    free(text);
    return rc;
}
