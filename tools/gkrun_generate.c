/* gkrun generation: text in, streamed text out, in llama.cpp's spirit.
 *
 *   gkrun -m DIR -p "text" [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]
 *         [--repeat-penalty P] [--repeat-last-n N] [--presence-penalty P] [--frequency-penalty P]
 *         [--seed S] [--stop STR]... [--ignore-eos] [--backend NAME] [--dtype D] [--ctx N]
 *         [--json] [-v] [--prompt-file F]
 *   gkrun -m DIR --chat        (or -i): multi-turn chat with the model's template
 *
 * The sampler chain starts from gkrun's defaults (greedy, 128 tokens), then the
 * model's generation_config.json (gk_gen_config_load: transformers' meaning),
 * then the flags; -v prints the chain and where each value came from.
 * Without -p or --prompt-file the prompt is read from stdin; every byte read
 * is encoded, NUL bytes included. -n -1 generates until EOS or a full context.
 * Decoded text is printed as tokens arrive; a UTF-8 character split over
 * tokens is held back until complete, and so is text that may begin a stop
 * string. Generation stops at any EOS id of generation_config.json,
 * config.json or the tokenizer (unless --ignore-eos). Statistics go to
 * stderr (--json: one object on stdout instead). Not here: the chat
 * (gkrun_chat.c), which gets the sampler chain from here.
 */
#include "gkrun.h"
#include "gkrun_file.h"
#include "gkrun_args.h"
#include "gkrun_chat.h"
#include "gkrun_stream.h"

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
    const char *system_prompt; /* -sys: the chat's system message (NULL: none) */
    int64_t n_new;           /* -1: until EOS or the context is full */
    int64_t n_ctx;           /* 0: the library's default */
    int64_t n_ubatch;        /* 0: the library's default */
    float temp, top_p;
    int top_k;
    uint64_t seed;
    bool seed_set, json, chat;
} gen_args;

/* The sampler chain beyond what gen_args carries (penalties, min-p, stop
 * strings, EOS policy), resolved once per run from gkrun's defaults,
 * generation_config.json and the flags, with the source of each value.
 * File-scope like verbose_prompt; the chat (gkrun_chat.c) gets it, with
 * gen_args' part, as its gkrun_chat_opts.gen. */
typedef struct chain {
    gk_gen_opts o;           /* min_p, penalties, penalty_last_n (the rest: gen_args) */
    gk_gen_sources src;      /* default / generation_config.json / user of each */
    gk_gen_src seed_src;     /* user, or default = random */
    bool use_max_length;     /* -n from the file's max_length (counts the prompt) */
    bool ignore_eos;
    int n_stop;
    const char **stop;       /* [n_stop] from --stop (argv strings) */
    bool verbose;            /* -v */
} chain;

static chain run_chain;

/* --verbose-prompt: print the exact prompt text and its ids on stderr. */
static bool verbose_prompt;

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
    double gbs = dec * (double)gk_model_step_weight_bytes(m) / 1e9;
    fprintf(stderr, "\n\nload:    %.2f s (%s, %s weights %.2f GB, %s on %s)\n", t_load, gk_model_spec_of(m)->name,
            gk_dtype_name(gk_model_dtype(m)), wbytes / 1e9, gk_model_backend_name(m), have_dev ? dev.name : "?");
    fprintf(stderr, "prompt:  %lld tokens, prefill %.1f tokens/s\n", (long long)st->n_prompt,
            st->t_prefill_s > 0 ? (double)st->n_prompt / st->t_prefill_s : 0.0);
    fprintf(stderr, "decode:  %lld tokens, %.1f tokens/s, %.2f ms/token", (long long)st->n_gen, dec,
            dec > 0 ? 1e3 / dec : 0.0);
    if (sampled)
        fprintf(stderr, ", seed %llu", (unsigned long long)seed);
    else
        fprintf(stderr, ", greedy");
    fprintf(stderr, "\nweights: %.1f GB/s", gbs);
    if (have_dev && dev.peak_bw_gbs > 0)
        fprintf(stderr, " = %.1f%% of the device's %.0f GB/s", 100.0 * gbs / dev.peak_bw_gbs, dev.peak_bw_gbs);
    char kv[160];
    fprintf(stderr, "\nmemory:  %.3f GB peak on the backend (%s)\n", gk_model_mem_peak(m) / 1e9,
            gkrun_cache_desc(m, kv, sizeof kv));
    char path[256];
    gk_model_path_note(m, path, sizeof path);
    if (path[0])
        fprintf(stderr, "path:    %s\n", path);
}

static cJSON *stats_json(gk_model *m, const gk_gen_stats *st, double t_load, uint64_t seed, bool sampled)
{
    cJSON *o = cJSON_CreateObject();
    char seed_text[24];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    double dec = st->n_gen > 1 && st->t_decode_s > 0 ? (double)(st->n_gen - 1) / st->t_decode_s : 0;
    gk_device_props dev;
    bool have_dev = gk_model_device(m, &dev, NULL) == GK_OK;
    cJSON_AddNumberToObject(o, "load_s", t_load);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)st->n_prompt);
    cJSON_AddNumberToObject(o, "prefill_tokens_per_s", st->t_prefill_s > 0 ? st->n_prompt / st->t_prefill_s : 0);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)st->n_gen);
    cJSON_AddNumberToObject(o, "decode_tokens_per_s", dec);
    cJSON_AddNumberToObject(o, "ms_per_token", dec > 0 ? 1e3 / dec : 0);
    cJSON_AddNumberToObject(o, "weight_gb_per_s", dec * gk_model_step_weight_bytes(m) / 1e9);
    if (have_dev && dev.peak_bw_gbs > 0)
        cJSON_AddNumberToObject(o, "peak_bandwidth_fraction",
                                dec * gk_model_step_weight_bytes(m) / 1e9 / dev.peak_bw_gbs);
    cJSON_AddNumberToObject(o, "peak_memory_bytes", (double)gk_model_mem_peak(m));
    cJSON_AddStringToObject(o, "backend", gk_model_backend_name(m));
    cJSON_AddStringToObject(o, "device", have_dev ? dev.name : "?");
    char path[256];
    gk_model_path_note(m, path, sizeof path);
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddBoolToObject(o, "sampled", sampled);
    if (sampled) /* raw: a double cannot hold every 64-bit seed */
        cJSON_AddRawToObject(o, "seed", seed_text);
    return o;
}

/* ------------------------------------------------------------- one turn */

/* Encode len bytes of text (NUL bytes included), check that it fits the
 * context, echo it to stdout when asked, then generate and stream. Nothing
 * is echoed for a prompt that is refused. Returns 0 or 1 (message printed). */
static int complete(gk_model *m, const gk_tokenizer *tok, const char *text, size_t len, bool add_special,
                    bool echo_prompt, const gen_args *a, const int64_t *eos, int n_eos, gkrun_stream *s,
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
    if (run_chain.use_max_length) /* transformers' max_length counts the prompt */
        n_new = run_chain.src.max_length > (int64_t)n_ids ? run_chain.src.max_length - (int64_t)n_ids : 0;
    if (n_new < 0) {
        n_new = room;
    } else if (n_new > room) {
        n_new = room;
        fprintf(stderr, "gkrun: note: %lld new tokens fit in the context of %lld; generating that many\n",
                (long long)n_new, (long long)n_ctx);
    }
    gk_gen_opts o = run_chain.o;
    o.max_new_tokens = n_new;
    o.temperature = a->temp;
    o.top_k = a->top_k;
    o.top_p = a->top_p;
    o.seed = a->seed;
    o.eos_ids = run_chain.ignore_eos ? NULL : eos;
    o.n_eos = run_chain.ignore_eos ? 0 : n_eos;
    o.n_stop = run_chain.n_stop;
    o.stop = run_chain.stop;
    o.tokenizer = run_chain.n_stop ? tok : NULL;
    o.on_token = gkrun_stream_token;
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
    if (gs == GK_OK)
        gkrun_stream_cut(s, st);
    gkrun_stream_flush(s);
    free(out);
    free(ids);
    return rc;
}

/* --------------------------------------------------------------- main */

/* A float flag in [lo, hi] (finite). */
static bool arg_float(const char *flag, const char *v, double lo, double hi, float *out)
{
    double d;
    if (!gkrun_arg_f64(flag, v, lo, hi, &d))
        return false;
    *out = (float)d;
    return true;
}

/* The flags the user gave, beside gen_args: which of the chain they set. */
typedef struct user_set {
    bool n, temp, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence, frequency;
} user_set;

static bool is(const char *o, const char *a, const char *b, const char *c)
{
    return !strcmp(o, a) || (b && !strcmp(o, b)) || (c && !strcmp(o, c));
}

static int parse(int argc, char **argv, gen_args *a, chain *ch, user_set *u)
{
    *a = (gen_args){.n_new = 128, .temp = 0.0f, .top_k = 0, .top_p = 1.0f};
    *u = (user_set){0};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        /* every option that takes a value has one (gkrun.c checked) */
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool has = v != NULL, ok = true;
        if (is(o, "-m", "--model", NULL) && has)
            a->dir = argv[++i];
        else if (is(o, "-p", "--prompt", NULL) && has)
            a->prompt = argv[++i];
        else if (is(o, "-f", "--file", "--prompt-file") && has)
            a->prompt_file = argv[++i];
        else if (is(o, "-sys", "--system-prompt", NULL) && has)
            a->system_prompt = argv[++i];
        else if (is(o, "-n", "--n-predict", NULL) && has)
            ok = u->n = gkrun_arg_i64(o, argv[++i], -1, INT64_MAX, &a->n_new);
        else if (!strcmp(o, "--temp") && has)
            ok = u->temp = arg_float(o, argv[++i], 0, FLT_MAX, &a->temp);
        else if (!strcmp(o, "--top-k") && has) {
            int64_t k = 0;
            ok = u->top_k = gkrun_arg_i64(o, argv[++i], 0, INT_MAX, &k);
            a->top_k = (int)k;
        } else if (!strcmp(o, "--top-p") && has) {
            double p = 1;
            ok = u->top_p = gkrun_arg_f64_pos(o, argv[++i], 1, &p);
            /* below float's range a P still keeps only the most likely token */
            a->top_p = p < FLT_MIN ? FLT_MIN : (float)p;
        } else if (!strcmp(o, "--min-p") && has)
            ok = u->min_p = arg_float(o, argv[++i], 0, 1, &ch->o.min_p);
        else if (!strcmp(o, "--repeat-penalty") && has) {
            double p = 1;
            ok = u->repeat_penalty = gkrun_arg_f64_pos(o, argv[++i], FLT_MAX, &p);
            ch->o.repetition_penalty = p < FLT_MIN ? FLT_MIN : (float)p;
        } else if (!strcmp(o, "--repeat-last-n") && has)
            ok = u->repeat_last_n = gkrun_arg_i64(o, argv[++i], -1, INT32_MAX, &ch->o.penalty_last_n);
        else if (!strcmp(o, "--presence-penalty") && has)
            ok = u->presence = arg_float(o, argv[++i], -FLT_MAX, FLT_MAX, &ch->o.presence_penalty);
        else if (!strcmp(o, "--frequency-penalty") && has)
            ok = u->frequency = arg_float(o, argv[++i], -FLT_MAX, FLT_MAX, &ch->o.frequency_penalty);
        else if (is(o, "-s", "--seed", NULL) && has) {
            /* -1: random, as llama.cpp */
            if (!strcmp(argv[++i], "-1"))
                a->seed_set = false;
            else
                ok = a->seed_set = gkrun_arg_u64(o, argv[i], &a->seed);
        } else if (!strcmp(o, "--stop") && has) {
            if (!*argv[++i]) {
                fprintf(stderr, "gkrun: --stop: the stop string must not be empty\n");
                return 2;
            }
            const char **p = realloc(ch->stop, sizeof *p * (size_t)(ch->n_stop + 1));
            if (!p) {
                fprintf(stderr, "gkrun: out of memory\n");
                return 2;
            }
            ch->stop = p;
            ch->stop[ch->n_stop++] = argv[i];
        } else if (!strcmp(o, "--ignore-eos"))
            ch->ignore_eos = true;
        else if (!strcmp(o, "--backend") && has)
            a->backend = argv[++i];
        else if (!strcmp(o, "--dtype") && has)
            a->dtype = argv[++i];
        else if (!strcmp(o, "--kv-dtype") && has)
            a->kv_dtype = argv[++i];
        else if (is(o, "--ctx", "-c", "--ctx-size") && has) {
            /* the library checks the KV cache against the device's memory */
            ok = gkrun_arg_i64(o, argv[++i], 1, INT32_MAX, &a->n_ctx);
        } else if (is(o, "--ubatch", "-ub", "--ubatch-size") && has)
            ok = gkrun_arg_i64(o, argv[++i], 1, INT32_MAX, &a->n_ubatch); else if (!strcmp(o, "--json"))
            a->json = true;
        else if (is(o, "--chat", "-i", "--interactive"))
            a->chat = true;
        else if (is(o, "-v", "--verbose", NULL))
            ch->verbose = true;
        else if (!strcmp(o, "--verbose-prompt"))
            verbose_prompt = true;
        else {
            fprintf(stderr, "gkrun: unknown option '%s' (gkrun --help lists them)\n", o);
            return 2;
        }
        if (!ok)
            return 2;
    }
    if (!a->dir) {
        fprintf(stderr, "gkrun: no model: use -m DIR (a folder with config.json, weights and tokenizer.json)\n");
        return 2;
    }
    if (!a->seed_set)
        a->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* gkrun's defaults, then generation_config.json, then the flags: into a and
 * ch, with the source of each value in ch->src. 0, or 1 after the message. */
static int resolve(gen_args *a, chain *ch, const user_set *u)
{
    gk_gen_opts f = gk_gen_opts_default();
    f.max_new_tokens = 128;
    gk_gen_sources fs;
    gk_err err = {0};
    if (gk_gen_config_load(a->dir, &f, &fs, &err) != GK_OK)
        return gkrun_fail(&err);
    gk_gen_sources *src = &ch->src;
    gk_gen_opts *o = &ch->o;
    *src = fs;
    src->eos = GK_GEN_SRC_DEFAULT; /* gkrun's EOS ids: gk_config's and the tokenizer's */
#define TAKE(flag, field, dst, val)                                                                    \
    do {                                                                                               \
        if (u->flag)                                                                                   \
            src->field = GK_GEN_SRC_USER;                                                              \
        else                                                                                           \
            (dst) = (val);                                                                             \
    } while (0)
    TAKE(n, max_new_tokens, a->n_new, f.max_new_tokens);
    TAKE(temp, temperature, a->temp, f.temperature);
    TAKE(top_k, top_k, a->top_k, f.top_k);
    TAKE(top_p, top_p, a->top_p, f.top_p);
    TAKE(min_p, min_p, o->min_p, f.min_p);
    TAKE(repeat_penalty, repetition_penalty, o->repetition_penalty, f.repetition_penalty);
    /* the file's whole-sequence window goes with the file's penalty only */
    if (u->repeat_last_n)
        src->penalty_last_n = GK_GEN_SRC_USER;
    else if (u->repeat_penalty && fs.penalty_last_n == GK_GEN_SRC_FILE)
        o->penalty_last_n = gk_gen_opts_default().penalty_last_n, src->penalty_last_n = GK_GEN_SRC_DEFAULT;
    else
        o->penalty_last_n = f.penalty_last_n;
#undef TAKE
    if (!u->presence)
        o->presence_penalty = f.presence_penalty;
    if (!u->frequency)
        o->frequency_penalty = f.frequency_penalty;
    ch->use_max_length = !u->n && fs.max_new_tokens == GK_GEN_SRC_DEFAULT && fs.max_length >= 0;
    ch->seed_src = a->seed_set ? GK_GEN_SRC_USER : GK_GEN_SRC_DEFAULT;
    if (fs.ignored[0])
        fprintf(stderr, "gkrun: note: generation_config.json sets what gkrun does not do; ignored: %s\n", fs.ignored);
    return 0;
}

/* -v: the chain in the order it runs, each value with its source. */
static void print_chain(const gen_args *a, const chain *ch, const int64_t *eos, int n_eos, const char *pres,
                        const char *freq)
{
    const gk_gen_sources *s = &ch->src;
    const gk_gen_opts *o = &ch->o;
    bool greedy = !(a->temp > 0);
    fprintf(stderr, "sampler chain: penalties -> temperature -> top-k -> top-p -> min-p -> %s\n",
            greedy ? "greedy (the most likely token)" : "draw");
    if (ch->use_max_length)
        fprintf(stderr, "  max new tokens     max_length %lld minus the prompt (generation_config.json)\n",
                (long long)s->max_length);
    else if (a->n_new < 0)
        fprintf(stderr, "  max new tokens     until EOS or the context is full (%s)\n", gk_gen_src_str(s->max_new_tokens));
    else
        fprintf(stderr, "  max new tokens     %lld (%s)\n", (long long)a->n_new, gk_gen_src_str(s->max_new_tokens));
    fprintf(stderr, "  repeat penalty     %g (%s)%s\n", (double)o->repetition_penalty, gk_gen_src_str(s->repetition_penalty),
            o->repetition_penalty == 1.0f ? " = off" : "");
    if (o->penalty_last_n < 0)
        fprintf(stderr, "  penalty window     the whole context (%s)\n", gk_gen_src_str(s->penalty_last_n));
    else
        fprintf(stderr, "  penalty window     last %lld ids (%s)%s\n", (long long)o->penalty_last_n,
                gk_gen_src_str(s->penalty_last_n), o->penalty_last_n == 0 ? " = penalties off" : "");
    fprintf(stderr, "  presence penalty   %g (%s)\n", (double)o->presence_penalty, pres);
    fprintf(stderr, "  frequency penalty  %g (%s)\n", (double)o->frequency_penalty, freq);
    const char *unused = greedy ? ", unused: greedy" : "";
    if (s->temperature == GK_GEN_SRC_FILE && greedy && s->do_sample == GK_GEN_SRC_FILE)
        fprintf(stderr, "  temperature        0 = greedy (generation_config.json: do_sample false)\n");
    else if (s->temperature == GK_GEN_SRC_FILE && greedy)
        fprintf(stderr, "  temperature        0 = greedy (generation_config.json: no do_sample, transformers' false)\n");
    else
        fprintf(stderr, "  temperature        %g (%s)%s\n", (double)a->temp, gk_gen_src_str(s->temperature),
                greedy ? " = greedy" : "");
    fprintf(stderr, "  top-k              %d (%s%s)%s\n", a->top_k, gk_gen_src_str(s->top_k), unused,
            a->top_k == 0 ? " = off" : "");
    fprintf(stderr, "  top-p              %g (%s%s)%s\n", (double)a->top_p, gk_gen_src_str(s->top_p), unused,
            a->top_p == 1.0f ? " = off" : "");
    fprintf(stderr, "  min-p              %g (%s%s)%s\n", (double)o->min_p, gk_gen_src_str(s->min_p), unused,
            o->min_p == 0.0f ? " = off" : "");
    if (greedy)
        fprintf(stderr, "  seed               %llu (%s, unused: greedy)\n", (unsigned long long)a->seed,
                ch->seed_src == GK_GEN_SRC_USER ? "user" : "random");
    else
        fprintf(stderr, "  seed               %llu (%s)\n", (unsigned long long)a->seed,
                ch->seed_src == GK_GEN_SRC_USER ? "user" : "random");
    if (ch->ignore_eos) {
        fprintf(stderr, "  eos ids            none (user: --ignore-eos)\n");
    } else {
        fprintf(stderr, "  eos ids           ");
        for (int i = 0; i < n_eos; i++)
            fprintf(stderr, " %lld", (long long)eos[i]);
        fprintf(stderr, "%s (generation_config.json, config.json, tokenizer)\n", n_eos ? "" : " none");
    }
    for (int i = 0; i < ch->n_stop; i++) {
        fprintf(stderr, "  stop string        \"");
        gkrun_put_escaped(stderr, ch->stop[i], strlen(ch->stop[i]));
        fprintf(stderr, "\" (user)\n");
    }
    if (a->system_prompt) {
        fprintf(stderr, "  system prompt      \"");
        gkrun_put_escaped(stderr, a->system_prompt, strlen(a->system_prompt));
        fprintf(stderr, "\" (user%s)\n", a->chat ? "" : ", unused without --chat");
    }
}

int gkrun_generate(int argc, char **argv, const gkrun_common *common)
{
    gen_args a;
    user_set u;
    chain *ch = &run_chain;
    *ch = (chain){.o = gk_gen_opts_default()};
    int rc = parse(argc, argv, &a, ch, &u);
    if (rc == 0)
        rc = resolve(&a, ch, &u);
    if (rc) {
        free(ch->stop);
        return rc;
    }
    gk_err err = {0};
    gk_runtime *rt = NULL;
    gk_model *m = NULL;
    gk_tokenizer *tok = NULL;
    char *prompt = NULL;
    size_t prompt_len = 0;
    gkrun_stream s = {0};
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
    gk_model_opts mo = {.backend = a.backend, .dtype = a.dtype, .n_ctx = a.n_ctx, .kv_dtype = a.kv_dtype,
                        .n_ubatch = a.n_ubatch};
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
    s.n_stop = run_chain.n_stop;
    s.stop = run_chain.stop;
    if (ch->verbose)
        print_chain(&a, ch, eos, n_eos, u.presence ? "user" : "default", u.frequency ? "user" : "default");

    if (a.chat) {
        gkrun_chat_opts co = {.model_dir = a.dir, .system_prompt = a.system_prompt, .gen = ch->o,
                              .n_new = a.n_new, .verbose_prompt = verbose_prompt};
        co.gen.temperature = a.temp;
        co.gen.top_k = a.top_k;
        co.gen.top_p = a.top_p;
        co.gen.seed = a.seed;
        co.gen.eos_ids = ch->ignore_eos ? NULL : eos;
        co.gen.n_eos = ch->ignore_eos ? 0 : n_eos;
        co.gen.n_stop = ch->n_stop;
        co.gen.stop = ch->stop;
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
        cJSON_AddItemToObject(o, "stats", stats_json(m, &stats, t_load, a.seed, a.temp > 0));
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
    free(ch->stop);
    ch->stop = NULL;
    ch->n_stop = 0;
    gkrun_stream_free(&s);
    free(prompt);
    gk_model_destroy(m);
    gk_tokenizer_destroy(tok);
    gk_runtime_destroy(rt);
    return rc;
}
