/* gkrun generation: text in, streamed text out, in llama.cpp's spirit.
 *
 *   gkrun -m DIR -p "text" [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]
 *         [--backend NAME] [--dtype D] [--ctx N] [--json] [--prompt-file F]
 *   gkrun -m DIR --chat        (or -i): multi-turn chat with the model's template
 *
 * Without -p or --prompt-file the prompt is read from stdin. Decoded text is
 * printed as tokens arrive; a UTF-8 character split over tokens is held back
 * until complete. Generation stops at any EOS id of generation_config.json,
 * config.json or the tokenizer. Statistics go to stderr (--json: one object on
 * stdout instead). Not here: the chat templates themselves (gkrun_chat.c).
 */
#include "gkrun.h"
#include "gkrun_chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct gen_args {
    const char *dir, *prompt, *prompt_file, *backend, *dtype;
    int64_t n_new, n_ctx;
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
    bool failed;
    char *text;              /* last full decode */
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
        size_t cap = s->cap ? 2 * s->cap : 256;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p) {
            s->failed = true;
            return false;
        }
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = token;
    char *text;
    size_t len;
    if (gk_tokenizer_decode(s->tok, s->ids, s->n, true, &text, &len, NULL) != GK_OK) {
        s->failed = true;
        return false;
    }
    free(s->text);
    s->text = text;
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
        size_t len = strlen(s->text);
        if (len > s->printed)
            fwrite(s->text + s->printed, 1, len - s->printed, stdout);
        fflush(stdout);
    }
}

static void streamer_reset(streamer *s)
{
    s->n = 0;
    s->printed = 0;
    free(s->text);
    s->text = NULL;
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

static char *read_stream(FILE *f)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += r;
        if (len + 1 == cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
        }
    }
    if (buf)
        buf[len] = '\0';
    return buf;
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

/* Encode text, generate, stream. Returns 0 or 1 (message printed). */
static int complete(gk_model *m, const gk_tokenizer *tok, const char *text, bool add_special, const gen_args *a,
                    const int64_t *eos, int n_eos, streamer *s, gk_gen_stats *st)
{
    gk_err err = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (gk_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n_ids, &err) != GK_OK)
        return gkrun_fail(&err);
    if (verbose_prompt) {
        fprintf(stderr, "prompt text: \"%s\"\nprompt ids (%zu):", text, n_ids);
        for (size_t i = 0; i < n_ids; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    if (n_ids == 0) {
        free(ids);
        fprintf(stderr, "gkrun: the prompt encodes to no tokens\n");
        return 1;
    }
    int64_t n_ctx = gk_model_n_ctx(m);
    if ((int64_t)n_ids > n_ctx) {
        fprintf(stderr, "gkrun: invalid argument: the prompt is %zu tokens, longer than the context of %lld (--ctx)\n",
                n_ids, (long long)n_ctx);
        free(ids);
        return 1;
    }
    int64_t n_new = a->n_new;
    if ((int64_t)n_ids + n_new - 1 > n_ctx) {
        n_new = n_ctx + 1 - (int64_t)n_ids;
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
    int32_t *out = malloc((size_t)(n_new > 0 ? n_new : 1) * sizeof *out);
    int64_t n_out = 0;
    int rc = 0;
    if (!out) {
        fprintf(stderr, "gkrun: out of memory\n");
        rc = 1;
    } else if (gk_model_generate(m, ids, (int64_t)n_ids, &o, out, &n_out, st, &err) != GK_OK) {
        rc = gkrun_fail(&err);
    } else if (s->failed) {
        fprintf(stderr, "gkrun: could not decode the generated tokens\n");
        rc = 1;
    }
    streamer_finish(s);
    free(out);
    free(ids);
    return rc;
}

static int chat_loop(gk_model *m, const gk_tokenizer *tok, float temp, int top_k, float top_p, uint64_t seed,
                     int64_t n_new, const int64_t *eos, int n_eos, const char *dir);

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
        else if ((!strcmp(o, "-f") || !strcmp(o, "--prompt-file")) && has)
            a->prompt_file = argv[++i];
        else if ((!strcmp(o, "-n") || !strcmp(o, "--n-predict")) && has)
            a->n_new = atoll(argv[++i]);
        else if (!strcmp(o, "--temp") && has)
            a->temp = strtof(argv[++i], NULL);
        else if (!strcmp(o, "--top-k") && has)
            a->top_k = atoi(argv[++i]);
        else if (!strcmp(o, "--top-p") && has)
            a->top_p = strtof(argv[++i], NULL);
        else if (!strcmp(o, "--seed") && has) {
            a->seed = strtoull(argv[++i], NULL, 10);
            a->seed_set = true;
        } else if (!strcmp(o, "--backend") && has)
            a->backend = argv[++i];
        else if (!strcmp(o, "--dtype") && has)
            a->dtype = argv[++i];
        else if ((!strcmp(o, "--ctx") || !strcmp(o, "-c")) && has)
            a->n_ctx = atoll(argv[++i]);
        else if (!strcmp(o, "--json"))
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
    if (a->n_new < 0 || a->temp < 0 || a->top_k < 0 || !(a->top_p > 0 && a->top_p <= 1)) {
        fprintf(stderr, "gkrun: -n, --temp and --top-k must not be negative; --top-p must be in (0, 1]\n");
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
    streamer s = {0};
    rc = 1;

    if (!a.chat && !a.prompt) {
        FILE *f = a.prompt_file ? fopen(a.prompt_file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "gkrun: cannot open prompt file %s\n", a.prompt_file);
            return 1;
        }
        prompt = read_stream(f);
        if (f != stdin)
            fclose(f);
        if (!prompt) {
            fprintf(stderr, "gkrun: cannot read the prompt\n");
            return 1;
        }
    }
    if (gk_tokenizer_load(a.dir, &tok, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    rt = gkrun_runtime(common);
    if (!rt)
        goto out;
    int last_pct = -1;
    gk_model_opts mo = {.backend = a.backend, .dtype = a.dtype, .n_ctx = a.n_ctx};
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
        rc = chat_loop(m, tok, a.temp, a.top_k, a.top_p, a.seed, a.n_new, eos, n_eos, a.dir);
        goto out;
    }
    const char *text = a.prompt ? a.prompt : prompt;
    gk_gen_stats stats = {0};
    s.echo = !a.json;
    if (s.echo) {
        fputs(text, stdout);
        fflush(stdout);
    }
    rc = complete(m, tok, text, true, &a, eos, n_eos, &s, &stats);
    if (rc == 0 && a.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", text);
        cJSON_AddStringToObject(o, "text", s.text ? s.text : "");
        cJSON *ids = cJSON_AddArrayToObject(o, "tokens");
        for (size_t i = 0; i < s.n; i++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(s.ids[i]));
        cJSON_AddItemToObject(o, "stats", stats_json(m, &stats, t_load));
        char *j = cJSON_PrintUnformatted(o);
        if (j)
            puts(j);
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

/* ----------------------------------------------------- shared for chat */

static int generate_turn(gk_model *m, const gk_tokenizer *tok, const char *text, float temp, int top_k, float top_p,
                        uint64_t seed, int64_t n_new, const int64_t *eos, int n_eos, char **reply)
{
    gen_args a = {.n_new = n_new, .temp = temp, .top_k = top_k, .top_p = top_p, .seed = seed};
    streamer s = {.tok = tok, .echo = true};
    gk_gen_stats st;
    /* the template already holds any BOS */
    int rc = complete(m, tok, text, false, &a, eos, n_eos, &s, &st);
    *reply = s.text ? s.text : strdup("");
    s.text = NULL;
    free(s.ids);
    streamer_reset(&s);
    return rc;
}

/* ------------------------------------------------------------ chat loop */

static char *read_line(void)
{
    size_t cap = 0;
    char *line = NULL;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static int chat_loop(gk_model *m, const gk_tokenizer *tok, float temp, int top_k, float top_p, uint64_t seed,
               int64_t n_new, const int64_t *eos, int n_eos, const char *dir)
{
    char *tmpl = gkrun_chat_template(dir);
    chat_kind kind = gkrun_chat_kind(tmpl);
    free(tmpl);
    static const char *const names[] = {"none", "ChatML", "Llama 3", "Zephyr"};
    if (kind == CHAT_NONE)
        fprintf(stderr, "gkrun: %s has no chat template gkrun knows (ChatML, Llama 3, Zephyr); "
                        "continuing as plain completion of the conversation\n", dir);
    else
        fprintf(stderr, "gkrun: chat with the %s template; /exit or end of input quits\n", names[kind]);
    int32_t bos_id = gk_tokenizer_bos_id(tok);
    const char *bos = bos_id >= 0 ? gk_tokenizer_token(tok, bos_id) : NULL;

    chat_msg *msgs = NULL;
    char **owned = NULL;
    size_t n = 0;
    int rc = 0;
    bool tty = isatty(STDIN_FILENO);
    for (;;) {
        if (tty)
            fprintf(stderr, "\n> ");
        char *line = read_line();
        if (!line || !strcmp(line, "/exit")) {
            free(line);
            break;
        }
        chat_msg *mp = realloc(msgs, (n + 2) * sizeof *mp);
        char **op = realloc(owned, (n + 2) * sizeof *op);
        if (!mp || !op) {
            free(mp ? mp : msgs);
            free(op ? op : owned);
            free(line);
            fprintf(stderr, "gkrun: out of memory\n");
            return 1;
        }
        msgs = mp;
        owned = op;
        owned[n] = line;
        msgs[n++] = (chat_msg){.role = "user", .content = line};
        char *text = gkrun_chat_render(kind, msgs, n, bos);
        char *reply = NULL;
        rc = text ? generate_turn(m, tok, text, temp, top_k, top_p, seed++, n_new, eos, n_eos, &reply) : 1;
        free(text);
        if (rc != 0) {
            free(reply);
            break;
        }
        fputc('\n', stdout);
        fflush(stdout);
        owned[n] = reply;
        msgs[n++] = (chat_msg){.role = "assistant", .content = reply};
    }
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}
