/* example.c - the complete example of docs/guide.md: load a HuggingFace model
 * folder, encode a prompt, sample 32 tokens while printing their text as it
 * arrives, then report the speed.
 *
 *   gk_example MODEL_DIR "prompt"
 *
 * MODEL_DIR holds config.json, the safetensors weights and tokenizer.json, as
 * published on the Hub. Plugins come from the built-in defaults (no INI file);
 * the backend is "auto" (cuda when a GPU is usable, else cpu_ref); the weights
 * keep the checkpoint's dtype. Text goes to stdout, the speed line to stderr.
 * Every failure prints gk's message and exits with status 1.
 *
 * What it deliberately is not: a chat front end (no chat template) or a
 * benchmark (gkrun bench is; the timings here include printing).
 */
#include <gk/gk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_NEW 32

/* What the per-token callback needs to print text as it arrives. */
typedef struct stream {
    gk_decode_stream *ds; /* the text of the prompt, then of each new token too */
    size_t n_printed;     /* bytes of that text already on stdout */
    gk_status status;     /* a decode failure stops generation ... */
    gk_err err;           /* ... and is reported once generate returns */
} stream;

/* Length of the part of text[0..len) that ends on a whole character. A token
 * may end inside a multi-byte UTF-8 sequence; a decoder shows such a tail as
 * the bare bytes or as U+FFFD until a later token completes it, so neither is
 * printed yet. */
static size_t complete_prefix(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t lead = len; /* back over continuation bytes to the last lead byte */
    while (lead > 0 && len - lead < 4 && (s[lead - 1] & 0xC0) == 0x80)
        lead--;
    if (lead > 0) {
        unsigned char c = s[lead - 1];
        size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (len - (lead - 1) < want)
            len = lead - 1;
    }
    while (len >= 3 && memcmp(text + len - 3, "\xEF\xBF\xBD", 3) == 0)
        len -= 3;
    return len;
}

/* Add n ids to the text and print what is new. The decode stream holds the
 * text of every id so far, not of each token alone, which keeps the spaces
 * and multi-byte characters that depend on neighbouring tokens right, at a
 * cost per token that does not grow with the text. When hold_back is false,
 * a tail complete_prefix would keep is printed too (the end of the stream). */
static gk_status print_new_text(stream *s, const int32_t *ids, size_t n, bool hold_back)
{
    gk_status st = gk_decode_stream_push(s->ds, ids, n, &s->err);
    if (st != GK_OK)
        return st;
    size_t len;
    const char *text = gk_decode_stream_text(s->ds, &len);
    size_t end = hold_back ? complete_prefix(text, len) : len;
    if (end > s->n_printed) {
        fwrite(text + s->n_printed, 1, end - s->n_printed, stdout);
        fflush(stdout);
        s->n_printed = end;
    }
    return GK_OK;
}

/* gk_gen_opts.on_token: called once per new token, at most N_NEW times. */
static bool on_token(int32_t token, void *user)
{
    stream *s = user;
    s->status = print_new_text(s, &token, 1, true);
    return s->status == GK_OK; /* false stops generation */
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR \"prompt\"\n", argv[0]);
        return 1;
    }
    const char *dir = argv[1], *prompt = argv[2];
    int rc = 1;
    gk_err err = {0};
    gk_runtime *rt = NULL;
    gk_model *model = NULL;
    gk_tokenizer *tok = NULL;
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    stream s = {0};
    int32_t out[N_NEW];
    int64_t n_out = 0, tok_eos;
    gk_gen_stats stats;
    gk_model_opts mo = {.backend = "auto"}; /* dtype and n_ctx: the defaults */
    const gk_config *cfg;
    gk_gen_opts go = gk_gen_opts_default();

    if (gk_runtime_create(NULL, &rt, &err) != GK_OK)
        goto fail;
    if (gk_model_load(rt, dir, &mo, &model, &err) != GK_OK)
        goto fail;
    if (gk_tokenizer_load(dir, &tok, &err) != GK_OK)
        goto fail;
    /* add_special = true: BOS and the like, as transformers adds them */
    if (gk_tokenizer_encode(tok, prompt, strlen(prompt), true, &prompt_ids, &n_prompt, &err) != GK_OK)
        goto fail;

    if (gk_decode_stream_new(tok, true, &s.ds, &err) != GK_OK) /* true: skip special tokens */
        goto fail;
    if (print_new_text(&s, prompt_ids, n_prompt, true) != GK_OK) { /* the prompt, as the tokenizer reads it */
        err = s.err;
        goto fail;
    }

    cfg = gk_model_config(model);
    go.max_new_tokens = N_NEW;
    go.temperature = 0.7f;
    go.top_p = 0.9f;
    go.seed = 1;
    go.n_eos = cfg->n_eos; /* from config.json, or generation_config.json */
    go.eos_ids = cfg->eos_ids;
    if (go.n_eos == 0 && (tok_eos = gk_tokenizer_eos_id(tok)) >= 0) {
        go.n_eos = 1; /* no EOS in the config: the tokenizer's */
        go.eos_ids = &tok_eos;
    }
    go.on_token = on_token;
    go.user = &s;
    if (gk_model_generate(model, prompt_ids, (int64_t)n_prompt, &go, out, &n_out, &stats, &err) != GK_OK)
        goto fail;
    if (s.status != GK_OK || print_new_text(&s, NULL, 0, false) != GK_OK) {
        err = s.err;
        goto fail;
    }
    putchar('\n');

    double total_s = stats.t_prefill_s + stats.t_decode_s;
    fprintf(stderr, "%lld prompt tokens, %lld new tokens in %.2f s: %.1f tokens/s", (long long)stats.n_prompt,
            (long long)stats.n_gen, total_s, total_s > 0 ? (double)stats.n_gen / total_s : 0.0);
    if (stats.n_gen > 1 && stats.t_decode_s > 0)
        fprintf(stderr, " (after the first token: %.1f tokens/s)", (double)(stats.n_gen - 1) / stats.t_decode_s);
    fprintf(stderr, " on %s\n", gk_model_backend_name(model));
    rc = 0;
    goto out;

fail:
    fprintf(stderr, "example: %s: %s\n", gk_status_str(err.code), err.msg);
out:
    gk_decode_stream_destroy(s.ds);
    free(prompt_ids);
    gk_tokenizer_destroy(tok);
    gk_model_destroy(model);
    gk_runtime_destroy(rt);
    return rc;
}
