/* gkrun generation: text in, streamed text out, in llama.cpp's spirit.
 *
 *   gkrun -m DIR -p "text" [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]
 *         [--backend NAME] [--dtype D] [--ctx N] [--json] [--prompt-file F]
 *   gkrun -m DIR --chat        (or -i): multi-turn chat with the model's template
 *
 * Without -p or --prompt-file the prompt is read from stdin; every byte read
 * is encoded, NUL bytes included. -n -1 generates until the context is full.
 * Decoded text is printed as tokens arrive; a UTF-8 character split over
 * tokens is held back until complete. Generation stops at any EOS id of
 * generation_config.json, config.json or the tokenizer. Statistics go to
 * stderr (--json: one object on stdout instead). Not here: the chat
 * (gkrun_chat.c), which gets the sampling options from here.
 */
#include "gkrun.h"
#include "gkrun_file.h"
#include "gkrun_args.h"
#include "gkrun_chat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct gen_args {
    const char *dir, *prompt, *prompt_file, *backend, *dtype, *kv_dtype;
    const char *system_prompt; /* --chat: the first message; NULL: none */
    int64_t n_new;           /* -1: until the context is full */
    int64_t n_ctx;           /* 0: the library's default */
    float temp, top_p;
    int top_k;
    uint64_t seed;
    bool seed_set, json, chat;
} gen_args;

/* --verbose-prompt: print the exact prompt text and its ids on stderr. */
static bool verbose_prompt;

/* Streams the text of the tokens generated so far, printing only what is new
 * and complete. */
typedef struct streamer {
    const gk_tokenizer *tok;
    int32_t *ids;
    size_t n, cap;
    size_t printed;          /* bytes of the decoded text already printed */
    bool echo;               /* print to stdout as tokens come */
    bool failed;             /* err says why */
    gk_err err;
    char *text;              /* last full decode, len bytes (NUL bytes possible) */
    size_t len;
} streamer;

static bool ends_with_replacement(const char *s, size_t len)
{
    return len >= 3 && (unsigned char)s[len - 3] == 0xEF && (unsigned char)s[len - 2] == 0xBF &&
           (unsigned char)s[len - 1] == 0xBD;
}

static bool on_token(int32_t token, void *user)
{
    streamer *s = user;
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
    s->ids[s->n++] = token;
    char *text;
    size_t len;
    if (gk_tokenizer_decode(s->tok, s->ids, s->n, true, &text, &len, &s->err) != GK_OK) {
        s->failed = true;
        return false;
    }
    free(s->text);
    s->text = text;
    s->len = len;
    /* a replacement character at the end may be half a character: wait */
    size_t ready = ends_with_replacement(text, len) ? len - 3 : len;
    if (s->echo && ready > s->printed) {
        fwrite(text + s->printed, 1, ready - s->printed, stdout);
        fflush(stdout);
        s->printed = ready;
    }
    return true;
}

static void streamer_finish(streamer *s)
{
    if (s->echo && s->text) {
        if (s->len > s->printed)
            fwrite(s->text + s->printed, 1, s->len - s->printed, stdout);
        fflush(stdout);
    }
}

/* ------------------------------------------------------------ progress */

static void progress(uint64_t done, uint64_t total, void *user)
{
    int *last = user;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (pct > 100)
        pct = 100;
    if (pct == *last)
        return;
    *last = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\rloading [%s] %3d%% %.2f GB", bar, pct, done / 1e9);
}

/* ---------------------------------------------------------------- misc */

/* The prompt from --prompt-file (path) or stdin (path NULL). A FIFO the user
 * names is read like a file; a folder or a failed read is an error naming it.
 * Returns 0, or 1 after the message. */
static int read_prompt(const char *path, char **text, size_t *len)
{
    FILE *f = stdin;
    if (path) {
        f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "gkrun: cannot open the prompt file %s: %s\n", path, strerror(errno));
            return 1;
        }
        struct stat sb;
        if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "gkrun: cannot read the prompt file %s: %s\n", path, strerror(EISDIR));
            fclose(f);
            return 1;
        }
    }
    int e = gkrun_read_stream(f, text, len);
    if (f != stdin)
        fclose(f);
    if (e == ENOMEM)
        fprintf(stderr, "gkrun: out of memory reading the prompt %s%s\n", path ? "file " : "from stdin",
                path ? path : "");
    else if (e && path)
        fprintf(stderr, "gkrun: cannot read the prompt file %s: %s\n", path, strerror(e));
    else if (e)
        fprintf(stderr, "gkrun: cannot read the prompt from stdin: %s\n", strerror(e));
    return e ? 1 : 0;
}

/* A JSON string literal of len bytes, NUL bytes as \u0000 (which a cJSON
 * string cannot hold). Heap; NULL when out of memory. */
static char *json_quote(const char *s, size_t len)
{
    size_t cap;
    if (!gk_size_mul(len, 6, &cap) || !gk_size_add(cap, 3, &cap))
        return NULL;
    char *q = malloc(cap), *o = q;
    if (!q)
        return NULL;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (esc) {
            memcpy(o, esc, 2);
            o += 2;
        } else if (c < 0x20) {
            o += sprintf(o, "\\u%04x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return q;
}

/* EOS ids: the model config's, then the tokenizer's when not already there. */
static int collect_eos(const gk_config *cfg, const gk_tokenizer *tok, int64_t *eos)
{
    int n = 0;
    for (int i = 0; i < cfg->n_eos && n < GK_MAX_EOS; i++)
        eos[n++] = cfg->eos_ids[i];
    int32_t t = gk_tokenizer_eos_id(tok);
    bool have = false;
    for (int i = 0; i < n; i++)
        have = have || eos[i] == t;
    if (t >= 0 && !have && n < GK_MAX_EOS)
        eos[n++] = t;
    return n;
}

static void print_stats(gk_model *m, const gk_gen_stats *st, double t_load, uint64_t seed, bool sampled)
{
    gk_device_props dev;
    gk_err err = {0};
    bool have_dev = gk_model_device(m, &dev, &err) == GK_OK;
    double wbytes = (double)gk_model_weight_bytes(m);
    double dec = st->n_gen > 1 && st->t_decode_s > 0 ? (double)(st->n_gen - 1) / st->t_decode_s : 0;
    double gbs = dec * wbytes / 1e9;
    fprintf(stderr, "\n\nload:    %.2f s (%s, %s weights %.2f GB, %s on %s)\n", t_load, gk_model_spec_of(m)->name,
            gk_dtype_name(gk_model_dtype(m)), wbytes / 1e9, gk_model_backend_name(m), have_dev ? dev.name : "?");
    fprintf(stderr, "prompt:  %lld tokens, prefill %.1f tokens/s\n", (long long)st->n_prompt,
            st->t_prefill_s > 0 ? (double)st->n_prompt / st->t_prefill_s : 0.0);
    fprintf(stderr, "decode:  %lld tokens, %.1f tokens/s, %.2f ms/token", (long long)st->n_gen, dec,
            dec > 0 ? 1e3 / dec : 0.0);
    if (sampled)
        fprintf(stderr, ", seed %llu", (unsigned long long)seed);
    fprintf(stderr, "\nweights: %.1f GB/s", gbs);
    if (have_dev && dev.peak_bw_gbs > 0)
        fprintf(stderr, " = %.1f%% of the device's %.0f GB/s", 100.0 * gbs / dev.peak_bw_gbs, dev.peak_bw_gbs);
    fprintf(stderr, "\nmemory:  %.3f GB peak on the backend\n", gk_model_mem_peak(m) / 1e9);
}

static cJSON *stats_json(gk_model *m, const gk_gen_stats *st, double t_load)
{
    cJSON *o = cJSON_CreateObject();
    double dec = st->n_gen > 1 && st->t_decode_s > 0 ? (double)(st->n_gen - 1) / st->t_decode_s : 0;
    gk_device_props dev;
    bool have_dev = gk_model_device(m, &dev, NULL) == GK_OK;
    cJSON_AddNumberToObject(o, "load_s", t_load);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)st->n_prompt);
    cJSON_AddNumberToObject(o, "prefill_tokens_per_s", st->t_prefill_s > 0 ? st->n_prompt / st->t_prefill_s : 0);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)st->n_gen);
    cJSON_AddNumberToObject(o, "decode_tokens_per_s", dec);
    cJSON_AddNumberToObject(o, "ms_per_token", dec > 0 ? 1e3 / dec : 0);
    cJSON_AddNumberToObject(o, "weight_gb_per_s", dec * gk_model_weight_bytes(m) / 1e9);
    if (have_dev && dev.peak_bw_gbs > 0)
        cJSON_AddNumberToObject(o, "peak_bandwidth_fraction", dec * gk_model_weight_bytes(m) / 1e9 / dev.peak_bw_gbs);
    cJSON_AddNumberToObject(o, "peak_memory_bytes", (double)gk_model_mem_peak(m));
    cJSON_AddStringToObject(o, "backend", gk_model_backend_name(m));
    cJSON_AddStringToObject(o, "device", have_dev ? dev.name : "?");
    return o;
}

/* ------------------------------------------------------------- one turn */

/* Encode len bytes of text (NUL bytes included), check that it fits the
 * context, echo it to stdout when asked, then generate and stream. Nothing
 * is echoed for a prompt that is refused. Returns 0 or 1 (message printed). */
static int complete(gk_model *m, const gk_tokenizer *tok, const char *text, size_t len, bool add_special,
                    bool echo_prompt, const gen_args *a, const int64_t *eos, int n_eos, streamer *s,
                    gk_gen_stats *st)
{
    gk_err err = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (gk_tokenizer_encode(tok, text, len, add_special, &ids, &n_ids, &err) != GK_OK)
        return gkrun_fail(&err);
    if (verbose_prompt) {
        fputs("prompt text: \"", stderr);
        gkrun_put_escaped(stderr, text, len);
        fprintf(stderr, "\"\nprompt ids (%zu):", n_ids);
        for (size_t i = 0; i < n_ids; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    if (n_ids == 0) {
        free(ids);
        fprintf(stderr, "gkrun: %s\n", len ? "the prompt encodes to no tokens" : "the prompt is empty");
        return 1;
    }
    int64_t n_ctx = gk_model_n_ctx(m);
    if (n_ids > (uint64_t)n_ctx) {
        fprintf(stderr, "gkrun: invalid argument: the prompt is %zu tokens, longer than the context of %lld (--ctx)\n",
                n_ids, (long long)n_ctx);
        free(ids);
        return 1;
    }
    /* the last new token is never fed back, so it needs no cache row;
     * compared without adding, so a huge -n cannot overflow */
    int64_t room = n_ctx + 1 - (int64_t)n_ids, n_new = a->n_new;
    if (n_new < 0) {
        n_new = room;
    } else if (n_new > room) {
        n_new = room;
        fprintf(stderr, "gkrun: note: %lld new tokens fit in the context of %lld; generating that many\n",
                (long long)n_new, (long long)n_ctx);
    }
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = n_new;
    o.temperature = a->temp;
    o.top_k = a->top_k;
    o.top_p = a->top_p;
    o.seed = a->seed;
    o.eos_ids = eos;
    o.n_eos = n_eos;
    o.on_token = on_token;
    o.user = s;
    size_t out_bytes;
    int32_t *out = NULL;
    if (gk_size_mul((size_t)(n_new > 0 ? n_new : 1), sizeof *out, &out_bytes))
        out = malloc(out_bytes);
    int64_t n_out = 0;
    int rc = 0;
    if (!out) {
        fprintf(stderr, "gkrun: out of memory: room for %lld new tokens\n", (long long)n_new);
        free(ids);
        return 1;
    }
    if (echo_prompt) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    gk_status gs = gk_model_generate(m, ids, (int64_t)n_ids, &o, out, &n_out, st, &err);
    if ((gs != GK_OK || s->failed) && s->echo && (echo_prompt || s->printed)) {
        /* end the streamed line, so the message starts a line of its own */
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (gs != GK_OK)
        rc = gkrun_fail(&err);
    else if (s->failed) /* the tokenizer's reason, e.g. an id outside its vocabulary */
        rc = gkrun_fail(&s->err);
    streamer_finish(s);
    free(out);
    free(ids);
    return rc;
}

/* --------------------------------------------------------------- main */

static int parse(int argc, char **argv, gen_args *a)
{
    *a = (gen_args){.n_new = 128, .temp = 0.8f, .top_k = 40, .top_p = 0.95f};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        bool has = i + 1 < argc;
        if ((!strcmp(o, "-m") || !strcmp(o, "--model")) && has)
            a->dir = argv[++i];
        else if ((!strcmp(o, "-p") || !strcmp(o, "--prompt")) && has)
            a->prompt = argv[++i];
        else if ((!strcmp(o, "-sys") || !strcmp(o, "--system-prompt")) && has)
            a->system_prompt = argv[++i];
        else if ((!strcmp(o, "-f") || !strcmp(o, "--prompt-file")) && has)
            a->prompt_file = argv[++i];
        else if ((!strcmp(o, "-n") || !strcmp(o, "--n-predict")) && has) {
            if (!gkrun_arg_i64(o, argv[++i], -1, INT64_MAX, &a->n_new))
                return 2;
        } else if (!strcmp(o, "--temp") && has) {
            double v;
            if (!gkrun_arg_f64(o, argv[++i], 0, FLT_MAX, &v))
                return 2;
            a->temp = (float)v;
        } else if (!strcmp(o, "--top-k") && has) {
            int64_t v;
            if (!gkrun_arg_i64(o, argv[++i], 0, INT_MAX, &v))
                return 2;
            a->top_k = (int)v;
        } else if (!strcmp(o, "--top-p") && has) {
            double v;
            if (!gkrun_arg_f64_pos(o, argv[++i], 1, &v))
                return 2;
            /* below float's range a P still keeps only the most likely token */
            a->top_p = v < FLT_MIN ? FLT_MIN : (float)v;
        } else if (!strcmp(o, "--seed") && has) {
            if (!gkrun_arg_u64(o, argv[++i], &a->seed))
                return 2;
            a->seed_set = true;
        } else if (!strcmp(o, "--backend") && has)
            a->backend = argv[++i];
        else if (!strcmp(o, "--dtype") && has)
            a->dtype = argv[++i];
        else if (!strcmp(o, "--kv-dtype") && has)
            a->kv_dtype = argv[++i];
        else if ((!strcmp(o, "--ctx") || !strcmp(o, "-c")) && has) {
            /* the library checks the KV cache against the device's memory */
            if (!gkrun_arg_i64(o, argv[++i], 1, INT32_MAX, &a->n_ctx))
                return 2;
        } else if (!strcmp(o, "--json"))
            a->json = true;
        else if (!strcmp(o, "--chat") || !strcmp(o, "-i") || !strcmp(o, "--interactive"))
            a->chat = true;
        else if (!strcmp(o, "--verbose-prompt"))
            verbose_prompt = true;
        else {
            fprintf(stderr, "gkrun: unknown or incomplete option '%s'\n", o);
            return 2;
        }
    }
    if (!a->dir) {
        fprintf(stderr, "gkrun: no model: use -m DIR (a folder with config.json, weights and tokenizer.json)\n");
        return 2;
    }
    if (!a->seed_set)
        a->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

int gkrun_generate(int argc, char **argv, const gkrun_common *common)
{
    gen_args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc;
    gk_err err = {0};
    gk_runtime *rt = NULL;
    gk_model *m = NULL;
    gk_tokenizer *tok = NULL;
    char *prompt = NULL;
    size_t prompt_len = 0;
    streamer s = {0};
    rc = 1;

    /* stdin closed or a folder: say so now, before loading the model (and
     * before a file opened later takes a closed descriptor 0) */
    if (a.chat || (!a.prompt && !a.prompt_file)) {
        struct stat sb;
        int e = fstat(STDIN_FILENO, &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? EISDIR : 0;
        if (e) {
            fprintf(stderr, "gkrun: cannot read the %s from stdin: %s\n", a.chat ? "chat" : "prompt", strerror(e));
            return 1;
        }
    }
    if (!a.chat && !a.prompt && read_prompt(a.prompt_file, &prompt, &prompt_len) != 0)
        return 1;
    if (gk_tokenizer_load(a.dir, &tok, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    rt = gkrun_runtime(common);
    if (!rt)
        goto out;
    int last_pct = -1;
    gk_model_opts mo = {.backend = a.backend, .dtype = a.dtype, .n_ctx = a.n_ctx, .kv_dtype = a.kv_dtype};
    if (isatty(STDERR_FILENO) && !a.json) {
        mo.progress = progress;
        mo.progress_user = &last_pct;
    }
    double t0 = gk_now_s();
    gk_status st = gk_model_load(rt, a.dir, &mo, &m, &err);
    if (last_pct >= 0)
        fprintf(stderr, "\n");
    if (st != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    double t_load = gk_now_s() - t0;
    int64_t eos[GK_MAX_EOS];
    int n_eos = collect_eos(gk_model_config(m), tok, eos);
    s.tok = tok;

    if (a.chat) {
        gkrun_chat_opts co = {.model_dir = a.dir, .system_prompt = a.system_prompt, .gen = gk_gen_opts_default(),
                              .n_new = a.n_new, .verbose_prompt = verbose_prompt};
        co.gen.temperature = a.temp;
        co.gen.top_k = a.top_k;
        co.gen.top_p = a.top_p;
        co.gen.seed = a.seed;
        co.gen.eos_ids = eos;
        co.gen.n_eos = n_eos;
        rc = gkrun_chat_run(m, tok, &co);
        goto out;
    }
    const char *text = a.prompt ? a.prompt : prompt;
    size_t text_len = a.prompt ? strlen(a.prompt) : prompt_len;
    gk_gen_stats stats = {0};
    s.echo = !a.json;
    rc = complete(m, tok, text, text_len, true, s.echo, &a, eos, n_eos, &s, &stats);
    if (rc == 0 && a.json) {
        cJSON *o = cJSON_CreateObject();
        /* raw literals: a prompt or text holding NUL bytes is printed whole */
        char *qp = json_quote(text, text_len), *qt = json_quote(s.text ? s.text : "", s.len);
        if (qp && qt) {
            cJSON_AddRawToObject(o, "prompt", qp);
            cJSON_AddRawToObject(o, "text", qt);
        }
        free(qp);
        free(qt);
        cJSON *ids = cJSON_AddArrayToObject(o, "tokens");
        for (size_t i = 0; i < s.n; i++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(s.ids[i]));
        cJSON_AddItemToObject(o, "stats", stats_json(m, &stats, t_load));
        char *j = cJSON_PrintUnformatted(o);
        if (j && cJSON_GetObjectItem(o, "text")) {
            puts(j);
        } else {
            fprintf(stderr, "gkrun: out of memory printing the JSON result\n");
            rc = 1;
        }
        free(j);
        cJSON_Delete(o);
    } else if (rc == 0) {
        print_stats(m, &stats, t_load, a.seed, a.temp > 0);
    }
out:
    free(s.ids);
    free(s.text);
    free(prompt);
    gk_model_destroy(m);
    gk_tokenizer_destroy(tok);
    gk_runtime_destroy(rt);
    return rc;
}
