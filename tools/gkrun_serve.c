/* gkrun_serve.c - gkrun serve: an OpenAI-compatible HTTP server over one
 * model, in the manner of llama-server.
 *
 *   gkrun serve -m DIR [--host ADDR] [--port N] [-np N] [-c N] [--api-key KEY]
 *               [--timeout S] [--alias NAME] [--backend NAME] [--dtype D] [--kv-dtype D]
 *
 * Loads the model with --parallel sequence slots of --ctx-size positions
 * each, starts the engine thread (gkrun_serve_engine.c) and libmicrohttpd
 * with a thread per connection (gkrun_serve_api.c), prints the address it
 * listens on, and waits for SIGINT or SIGTERM: then new requests get 503,
 * those queued and running finish, and it exits 0. The sampling defaults
 * are gkrun's and the model's generation_config.json, as for gkrun -m DIR
 * -p TEXT; a request's fields override them. Not here: HTTP handling and
 * JSON (gkrun_serve_api.c), the batching (gkrun_serve_engine.c).
 */
#include "gkrun.h"
#include "gkrun_args.h"
#include "gkrun_serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct serve_args {
    const char *dir, *host, *api_key, *backend, *dtype, *kv_dtype, *alias;
    int64_t port, parallel, n_ctx, timeout;
} serve_args;

static bool is(const char *o, const char *a, const char *b)
{
    return !strcmp(o, a) || (b && !strcmp(o, b));
}

static int parse(int argc, char **argv, serve_args *a)
{
    *a = (serve_args){.host = "127.0.0.1", .port = 8080, .parallel = 4, .timeout = 600};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        bool has = i + 1 < argc, ok = true;
        if (is(o, "-m", "--model") && has)
            a->dir = argv[++i];
        else if (!strcmp(o, "--host") && has)
            a->host = argv[++i];
        else if (!strcmp(o, "--port") && has)
            ok = gkrun_arg_i64(o, argv[++i], 0, 65535, &a->port);
        else if (is(o, "-np", "--parallel") && has)
            ok = gkrun_arg_i64(o, argv[++i], 1, 256, &a->parallel);
        else if (is(o, "-c", "--ctx-size") && has)
            ok = gkrun_arg_i64(o, argv[++i], 1, INT32_MAX, &a->n_ctx);
        else if (!strcmp(o, "--api-key") && has) {
            a->api_key = argv[++i];
            if (!*a->api_key) {
                fprintf(stderr, "gkrun serve: --api-key must not be empty\n");
                return 2;
            }
        } else if (!strcmp(o, "--timeout") && has)
            ok = gkrun_arg_i64(o, argv[++i], 1, 86400, &a->timeout);
        else if (!strcmp(o, "--alias") && has)
            a->alias = argv[++i];
        else if (!strcmp(o, "--backend") && has)
            a->backend = argv[++i];
        else if (!strcmp(o, "--dtype") && has)
            a->dtype = argv[++i];
        else if (!strcmp(o, "--kv-dtype") && has)
            a->kv_dtype = argv[++i];
        else {
            fprintf(stderr, "gkrun serve: unknown option '%s' (gkrun serve --help lists them)\n", o);
            return 2;
        }
        if (!ok)
            return 2;
    }
    if (!a->dir) {
        fprintf(stderr, "gkrun serve: no model: use -m DIR (a folder with config.json, weights and tokenizer.json)\n");
        return 2;
    }
    struct in_addr ip;
    if (inet_pton(AF_INET, a->host, &ip) != 1) {
        fprintf(stderr, "gkrun serve: --host: '%s' is not an IPv4 address (127.0.0.1, 0.0.0.0, ...)\n", a->host);
        return 2;
    }
    return 0;
}

/* gkrun's defaults (greedy, penalties off), then generation_config.json:
 * as gkrun -m DIR -p TEXT resolves them without flags. */
static int defaults(serve *s, const gk_config *cfg)
{
    gk_gen_opts f = gk_gen_opts_default();
    f.max_new_tokens = 128;
    gk_err err = {0};
    if (gk_gen_config_load(s->model_dir, &f, &s->src, &err) != GK_OK)
        return gkrun_fail(&err);
    s->base = gk_gen_opts_default();
    s->base.max_new_tokens = f.max_new_tokens;
    s->base.temperature = f.temperature;
    s->base.top_k = f.top_k;
    s->base.top_p = f.top_p;
    s->base.min_p = f.min_p;
    s->base.repetition_penalty = f.repetition_penalty;
    s->base.penalty_last_n = f.penalty_last_n;
    s->base.presence_penalty = f.presence_penalty;
    s->base.frequency_penalty = f.frequency_penalty;
    s->use_max_length = s->src.max_new_tokens == GK_GEN_SRC_DEFAULT && s->src.max_length >= 0;
    if (s->src.ignored[0])
        fprintf(stderr, "gkrun serve: note: generation_config.json sets what gk does not do; ignored: %s\n",
                s->src.ignored);
    /* EOS ids: the config's, then the tokenizer's (as gkrun) */
    for (int i = 0; i < cfg->n_eos && s->n_eos < GK_MAX_EOS; i++)
        s->eos[s->n_eos++] = cfg->eos_ids[i];
    int32_t t = gk_tokenizer_eos_id(s->tok);
    bool have = false;
    for (int i = 0; i < s->n_eos; i++)
        have = have || s->eos[i] == t;
    if (t >= 0 && !have && s->n_eos < GK_MAX_EOS)
        s->eos[s->n_eos++] = t;
    return 0;
}

/* The last part of the model folder's path, the name /v1/models gives. */
static const char *base_name(const char *dir, char *buf, size_t len)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(buf, len, "%.*s", (int)(n - b), dir + b);
    return buf;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    fputs("gkrun serve: libmicrohttpd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int gkrun_serve(int argc, char **argv, const gkrun_common *common)
{
    serve_args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc;
    serve s = {.model_dir = a.dir, .api_key = a.api_key, .n_parallel = (int)a.parallel,
               .queue_max = 4 * (int)a.parallel};
    char name[256];
    s.model_name = a.alias ? a.alias : base_name(a.dir, name, sizeof name);
    gk_err err = {0};
    gk_runtime *rt = NULL;
    gk_tokenizer *tok = NULL;
    struct MHD_Daemon *d = NULL;
    rc = 1;
    /* SIGINT and SIGTERM are taken by sigwait below, in every thread */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (gk_tokenizer_load(a.dir, &tok, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    s.tok = tok;
    rt = gkrun_runtime(common);
    if (!rt)
        goto out;
    gk_model_opts mo = {.backend = a.backend, .dtype = a.dtype, .kv_dtype = a.kv_dtype, .n_ctx = a.n_ctx,
                        .n_seq_max = a.parallel};
    double t0 = gk_now_s();
    if (gk_model_load(rt, a.dir, &mo, &s.m, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    s.n_ctx = gk_model_n_ctx(s.m);
    s.n_vocab = gk_model_config(s.m)->n_vocab;
    if (defaults(&s, gk_model_config(s.m)) != 0)
        goto out;
    gk_status ts = gk_chat_template_load(a.dir, NULL, &s.tmpl, &err);
    if (ts == GK_ERR_NOT_FOUND)
        fprintf(stderr, "gkrun serve: %s has no chat template: /v1/chat/completions completes the plain transcript "
                        "(as gkrun --chat)\n", a.dir);
    else if (ts != GK_OK)
        fprintf(stderr, "gkrun serve: %s; /v1/chat/completions completes the plain transcript\n", err.msg);
    s.queue = calloc((size_t)s.queue_max, sizeof *s.queue);
    s.running = calloc((size_t)s.n_parallel, sizeof *s.running);
    if (!s.queue || !s.running) {
        fprintf(stderr, "gkrun serve: out of memory\n");
        goto out;
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.wake, NULL);
    if (serve_engine_start(&s) != 0) {
        fprintf(stderr, "gkrun serve: cannot start the engine thread\n");
        goto out_sync;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a.port)};
    inet_pton(AF_INET, a.host, &addr.sin_addr);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                         (uint16_t)a.port, NULL, NULL, serve_handle, &s,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)a.timeout,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(s.queue_max + s.n_parallel + 64),
                         MHD_OPTION_NOTIFY_COMPLETED, serve_completed, &s,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "gkrun serve: cannot listen on %s:%lld: %s\n", a.host, (long long)a.port,
                strerror(errno ? errno : EADDRINUSE));
        serve_engine_stop(&s);
        goto out_sync;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char kv[160];
    fprintf(stderr, "gkrun serve: %s (%s, %s) loaded in %.2f s: %d slots of %s\n", s.model_name,
            gk_model_spec_of(s.m)->name, gk_model_backend_name(s.m), gk_now_s() - t0, s.n_parallel,
            gkrun_cache_desc(s.m, kv, sizeof kv));
    fprintf(stderr, "gkrun serve: listening on http://%s:%u (queue of %d)\n", a.host,
            di ? (unsigned)di->port : (unsigned)a.port, s.queue_max);
    fflush(stderr);
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    fprintf(stderr, "gkrun serve: %s: finishing the running requests, refusing new ones\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    pthread_mutex_lock(&s.mu);
    s.draining = true;
    pthread_mutex_unlock(&s.mu);
    serve_engine_stop(&s); /* returns once the queue is empty and every slot free */
    /* let the connections send what the engine handed them */
    for (int i = 0; i < 3000; i++) {
        pthread_mutex_lock(&s.mu);
        int open = s.open_requests;
        pthread_mutex_unlock(&s.mu);
        if (open == 0)
            break;
        struct timespec ts10 = {0, 10 * 1000 * 1000};
        nanosleep(&ts10, NULL);
    }
    MHD_stop_daemon(d);
    fprintf(stderr, "gkrun serve: stopped\n");
    rc = 0;
out_sync:
    pthread_cond_destroy(&s.wake);
    pthread_mutex_destroy(&s.mu);
out:
    free(s.queue);
    free(s.running);
    gk_chat_template_destroy(s.tmpl);
    gk_model_destroy(s.m);
    gk_tokenizer_destroy(tok);
    gk_runtime_destroy(rt);
    return rc;
}
