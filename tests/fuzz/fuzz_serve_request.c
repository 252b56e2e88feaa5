/* fuzz_serve_request.c - libFuzzer harness: the body of an HTTP request to
 * gkrun serve, through serve_parse (tools/gkrun_serve_request.c), the check
 * of every field a chat or completion request may carry.
 *
 * Input: byte 0 picks the endpoint (bit 0: chat) and, for chat, the template
 * (bit 1: a small Jinja template; else the plain transcript of a model
 * without one); the rest is the JSON body. The tokenizer is the demo
 * model's; the context 64 positions. A body is either accepted, with a
 * prompt inside the context and the vocabulary, max_new >= 1 within the
 * room left, and the stop strings non-empty, or refused with a 4xx/500
 * status, an error code and a message; never a crash or a leak.
 */
#include "fuzz.h"

#include "gkrun_serve.h"

static gk_tokenizer *tok;
static gk_chat_template *tmpl;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    gk_err e;
    char path[FZ_PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", FZ_DEMO());
    if (gk_tokenizer_load(path, &tok, &e) != GK_OK)
        fz_die("gk_tokenizer_load", e.msg);
    static const char t[] = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                            "{% if add_generation_prompt %}<|assistant|>{% endif %}";
    if (gk_chat_template_parse(t, sizeof t - 1, NULL, &tmpl, &e) != GK_OK)
        fz_die("gk_chat_template_parse", e.msg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 1)
        return 0;
    serve s = {.model_name = "kjv-demo", .tok = tok, .tmpl = (d[0] & 2) ? tmpl : NULL, .n_ctx = 64,
               .n_vocab = gk_tokenizer_vocab_size(tok), .n_parallel = 1};
    s.base = gk_gen_opts_default();
    s.eos[0] = gk_tokenizer_eos_id(tok);
    s.n_eos = s.eos[0] >= 0;
    serve_req r = {.n_logprobs = -1};
    serve_ask a = {0};
    bool ok = serve_parse(&s, (const char *)d + 1, n - 1, d[0] & 1, &r, &a);
    if (ok) {
        if (r.n_prompt < 1 || r.n_prompt > s.n_ctx || r.max_new < 1 || r.n_prompt + r.max_new > s.n_ctx + 1)
            fz_fail("accepted a request that does not fit the context", NULL);
        for (int64_t i = 0; i < r.n_prompt; i++)
            if (r.prompt[i] < 0 || r.prompt[i] >= s.n_vocab)
                fz_fail("accepted a prompt id outside the vocabulary", NULL);
        for (int i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || !r.stop[i][0])
                fz_fail("accepted an empty stop string", NULL);
        if (!a.model)
            fz_fail("accepted without the model's name", NULL);
    } else if (a.status < 400 || a.status > 599 || !a.code || !a.msg[0]) {
        fz_fail("refused without a status, a code and a message", a.msg);
    }
    free(r.prompt);
    for (int i = 0; i < r.n_stop; i++)
        free(r.stop[i]);
    free(a.model);
    return 0;
}
