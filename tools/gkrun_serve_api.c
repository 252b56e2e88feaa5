/* gkrun_serve_api.c - the HTTP endpoints of gkrun serve, in OpenAI's shapes:
 * POST /v1/chat/completions, POST /v1/completions (both with stream: true as
 * server-sent events), GET /v1/models, GET /health, GET /metrics.
 *
 * A request body is read whole (at most SERVE_MAX_BODY bytes), checked and
 * tokenized (gkrun_serve_request.c), and queued for the engine.
 * Connections run one thread each (libmicrohttpd's thread per connection),
 * so a response waits for its tokens by blocking in its own thread; while it
 * waits it looks at its socket every 100 ms, and a client that has closed it
 * cancels the request, which frees its slot.
 *
 * Not here: the fields (gkrun_serve_request.c), the batching
 * (gkrun_serve_engine.c), the flags (gkrun_serve.c).
 */
#include "gkrun_serve.h"
#include "gkrun.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One HTTP request, from its first header to its completion. */
typedef struct conn {
    serve *s;
    struct MHD_Connection *c;
    char *body;
    size_t len, cap;
    bool too_big;
    /* a streaming response */
    serve_req *r;
    bool chat, include_usage, sent_head, sent_done;
    char id[48], *model;
    int64_t created;
    char *out;            /* formatted, not yet sent: out[off, n) */
    size_t off, n, cap_out;
    size_t text_off;      /* bytes of text sent (completions' text_offset) */
    int refs;             /* under s->mu: the request (until completed) and a stream's response */
} conn;

/* Under no lock: drop one of k's references, freeing it with the last. */
static void conn_unref(conn *k)
{
    serve *s = k->s;
    pthread_mutex_lock(&s->mu);
    bool last = --k->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    free(k->body);
    free(k->out);
    free(k->model);
    free(k);
}

/* ------------------------------------------------------------- responses */

static enum MHD_Result send_text(conn *k, int status, const char *type, const char *text, const char *endpoint)
{
    struct MHD_Response *res = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!res)
        return MHD_NO;
    MHD_add_response_header(res, "Content-Type", type);
    if (status == 405)
        MHD_add_response_header(res, "Allow", !strcmp(endpoint, "/v1/chat/completions") ||
                                                  !strcmp(endpoint, "/v1/completions") ? "POST" : "GET");
    if (status == 401)
        MHD_add_response_header(res, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(k->c, (unsigned)status, res);
    MHD_destroy_response(res);
    serve_count(k->s, endpoint, status);
    return ok;
}

static enum MHD_Result send_json(conn *k, int status, cJSON *j, const char *endpoint)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!t)
        return send_text(k, 500, "application/json",
                         "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                         "\"code\":\"out_of_memory\"}}", endpoint);
    enum MHD_Result ok = send_text(k, status, "application/json", t, endpoint);
    free(t);
    return ok;
}

static cJSON *error_json(const char *msg, const char *type, const char *param, const char *code)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    cJSON_AddStringToObject(e, "code", code);
    return o;
}

static enum MHD_Result send_error(conn *k, int status, const char *endpoint, const char *param, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(conn *k, int status, const char *endpoint, const char *param, const char *code,
                                  const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 401 ? "authentication_error" : status == 404 ? "not_found_error"
                     : status == 429 ? "rate_limit_error" : status == 503 ? "unavailable_error"
                     : status >= 500 ? "server_error" : "invalid_request_error";
    return send_json(k, status, error_json(msg, type, param, code), endpoint);
}

/* ------------------------------------------------------------ the output */

static char *token_text(serve *s, int32_t id, size_t *len)
{
    char *t = NULL;
    *len = 0;
    if (gk_tokenizer_decode(s->tok, &id, 1, false, &t, len, NULL) != GK_OK)
        return strdup("");
    return t;
}

static cJSON *bytes_json(const char *t, size_t len)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < len; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)t[i]));
    return a;
}

/* Chat's logprobs.content entries for pieces[n] (appended to arr). */
static void chat_logprobs(serve *s, const serve_piece *p, size_t n, cJSON *arr)
{
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *t = token_text(s, p[i].id, &len);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "token", t ? t : "");
        cJSON_AddNumberToObject(e, "logprob", p[i].logprob);
        cJSON_AddItemToObject(e, "bytes", bytes_json(t ? t : "", t ? len : 0));
        free(t);
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < p[i].n_top; k++) {
            char *u = token_text(s, p[i].top_id[k], &len);
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "token", u ? u : "");
            cJSON_AddNumberToObject(x, "logprob", p[i].top_lp[k]);
            cJSON_AddItemToObject(x, "bytes", bytes_json(u ? u : "", u ? len : 0));
            cJSON_AddItemToArray(top, x);
            free(u);
        }
        cJSON_AddItemToArray(arr, e);
    }
}

/* Completions' logprobs object (tokens, token_logprobs, top_logprobs, text_offset). */
static cJSON *completion_logprobs(serve *s, const serve_piece *p, size_t n, size_t *text_off)
{
    cJSON *o = cJSON_CreateObject(), *toks = cJSON_AddArrayToObject(o, "tokens"),
          *lps = cJSON_AddArrayToObject(o, "token_logprobs"), *tops = cJSON_AddArrayToObject(o, "top_logprobs"),
          *offs = cJSON_AddArrayToObject(o, "text_offset");
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *t = token_text(s, p[i].id, &len);
        cJSON_AddItemToArray(toks, cJSON_CreateString(t ? t : ""));
        free(t);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(p[i].logprob));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < p[i].n_top; k++) {
            char *u = token_text(s, p[i].top_id[k], &len);
            if (!cJSON_GetObjectItemCaseSensitive(top, u ? u : ""))
                cJSON_AddNumberToObject(top, u ? u : "", p[i].top_lp[k]);
            free(u);
        }
        cJSON_AddItemToArray(tops, top);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*text_off));
        *text_off += strlen(p[i].text);
    }
    return o;
}

static cJSON *usage_json(const serve_req *r)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)r->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)r->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(r->n_prompt + r->n_gen));
    return u;
}

static cJSON *head_json(const conn *k, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)k->created);
    cJSON_AddStringToObject(o, "model", k->model);
    cJSON_AddStringToObject(o, "system_fingerprint", "gk");
    return o;
}

/* One streamed chunk for pieces[n] (n 0: the head or the end). */
static cJSON *chunk_json(conn *k, const serve_piece *p, size_t n, const char *finish, bool role)
{
    serve_req *r = k->r;
    cJSON *o = head_json(k, k->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    size_t tl = 0;
    for (size_t i = 0; i < n; i++)
        tl += strlen(p[i].text);
    char *text = malloc(tl + 1);
    if (text) {
        tl = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(text + tl, p[i].text, strlen(p[i].text));
            tl += strlen(p[i].text);
        }
        text[tl] = '\0';
    }
    if (k->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (role || n)
            cJSON_AddStringToObject(d, "content", text ? text : "");
        if (r->n_logprobs >= 0 && n) {
            cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
            chat_logprobs(k->s, p, n, cJSON_AddArrayToObject(lp, "content"));
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
        if (r->n_logprobs >= 0 && n)
            cJSON_AddItemToObject(c, "logprobs", completion_logprobs(k->s, p, n, &k->text_off));
        else
            cJSON_AddNullToObject(c, "logprobs");
    }
    free(text);
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return o;
}

/* The whole (non-streamed) answer of a finished request. */
static cJSON *answer_json(conn *k)
{
    serve_req *r = k->r;
    cJSON *o = head_json(k, k->chat ? "chat.completion" : "text_completion");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    size_t tl = 0;
    for (size_t i = 0; i < r->n_pieces; i++)
        tl += strlen(r->pieces[i].text);
    char *text = malloc(tl + 1);
    if (!text) {
        cJSON_Delete(o);
        return NULL;
    }
    tl = 0;
    for (size_t i = 0; i < r->n_pieces; i++) {
        size_t n = strlen(r->pieces[i].text);
        memcpy(text + tl, r->pieces[i].text, n);
        tl += n;
    }
    text[tl] = '\0';
    if (k->chat) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", text);
        if (r->n_logprobs >= 0) {
            cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
            chat_logprobs(k->s, r->pieces, r->n_pieces, cJSON_AddArrayToObject(lp, "content"));
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        cJSON_AddStringToObject(c, "text", text);
        size_t off = 0;
        if (r->n_logprobs >= 0)
            cJSON_AddItemToObject(c, "logprobs", completion_logprobs(k->s, r->pieces, r->n_pieces, &off));
        else
            cJSON_AddNullToObject(c, "logprobs");
    }
    free(text);
    cJSON_AddStringToObject(c, "finish_reason", r->finish ? r->finish : "stop");
    cJSON_AddItemToObject(o, "usage", usage_json(r));
    return o;
}

/* -------------------------------------------------------------- waiting */

/* Whether the client has closed its end (a read would see EOF or an error). */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP))
        return true;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Under s->mu: wait up to 100 ms for r to change. */
static void wait_a_while(serve *s, serve_req *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->cond, &s->mu, &ts);
}

/* ------------------------------------------------------------ streaming */

static bool out_add(conn *k, const char *data, size_t n)
{
    if (k->n + n > k->cap_out) {
        size_t cap = (k->n + n) * 2 + 256;
        char *p = realloc(k->out, cap);
        if (!p)
            return false;
        k->out = p;
        k->cap_out = cap;
    }
    memcpy(k->out + k->n, data, n);
    k->n += n;
    return true;
}

static bool out_event(conn *k, cJSON *j)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    bool ok = t && out_add(k, "data: ", 6) && out_add(k, t, strlen(t)) && out_add(k, "\n\n", 2);
    free(t);
    return ok;
}

/* The MHD content reader of a stream: blocks (its own thread) until the
 * engine has tokens or the request ends; one chunk per token. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    conn *k = cls;
    serve *s = k->s;
    serve_req *r = k->r;
    while (k->off == k->n) {
        k->off = k->n = 0;
        if (k->sent_done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!k->sent_head) {
            k->sent_head = true;
            if (k->chat && !out_event(k, chunk_json(k, NULL, 0, NULL, true)))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        while (r->n_pieces == 0 && r->state != REQ_DONE) {
            wait_a_while(s, r);
            if (r->n_pieces == 0 && r->state != REQ_DONE && client_gone(k->c)) {
                pthread_mutex_unlock(&s->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        serve_piece *p = r->pieces;
        size_t n = r->n_pieces;
        bool done = r->state == REQ_DONE;
        r->pieces = NULL;
        r->n_pieces = r->cap_pieces = 0;
        pthread_mutex_unlock(&s->mu);
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++) /* one chunk per token */
            ok = out_event(k, chunk_json(k, p + i, 1, NULL, false));
        for (size_t i = 0; i < n; i++)
            free(p[i].text);
        free(p);
        if (ok && done) {
            if (r->error[0]) {
                ok = out_event(k, error_json(r->error, "server_error", NULL, "generation_failed"));
            } else {
                ok = out_event(k, chunk_json(k, NULL, 0, r->finish, false));
                if (ok && k->include_usage) {
                    cJSON *u = head_json(k, k->chat ? "chat.completion.chunk" : "text_completion");
                    cJSON_AddArrayToObject(u, "choices");
                    cJSON_AddItemToObject(u, "usage", usage_json(r));
                    ok = out_event(k, u);
                }
            }
            ok = ok && out_add(k, "data: [DONE]\n\n", 14);
            k->sent_done = true;
        }
        if (!ok)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = k->n - k->off < max ? k->n - k->off : max;
    memcpy(buf, k->out + k->off, n);
    k->off += n;
    return (ssize_t)n;
}

/* The stream's response is gone (sent, or the connection closed). */
static void stream_free(void *cls)
{
    conn *k = cls;
    if (k->r) {
        serve_cancel(k->s, k->r); /* no-op for a finished request */
        serve_req_release(k->s, k->r);
        k->r = NULL;
    }
    conn_unref(k);
}

/* ------------------------------------------------------------ endpoints */

static enum MHD_Result generate(conn *k, const char *endpoint, bool chat)
{
    serve *s = k->s;
    serve_req *r = serve_req_new();
    if (!r)
        return send_error(k, 500, endpoint, NULL, "out_of_memory", "out of memory");
    serve_ask a = {0};
    if (!serve_parse(s, k->body ? k->body : "", k->len, chat, r, &a)) {
        serve_req_release(s, r);
        return send_error(k, a.status, endpoint, a.param[0] ? a.param : NULL, a.code, "%s", a.msg);
    }
    bool stream = a.stream, usage = a.include_usage;
    k->model = a.model;
    static atomic_uint_fast64_t n_ids;
    snprintf(k->id, sizeof k->id, "%s-%llx%06llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)time(NULL),
             (unsigned long long)atomic_fetch_add(&n_ids, 1));
    k->created = (int64_t)time(NULL);
    k->chat = chat;
    k->include_usage = usage;
    r->t_arrive = gk_now_s();
    int sub = serve_submit(s, r);
    if (sub != SUBMIT_OK) {
        serve_req_release(s, r);
        if (sub == SUBMIT_DRAINING)
            return send_error(k, 503, endpoint, NULL, "draining", "the server is shutting down");
        return send_error(k, 429, endpoint, NULL, "queue_full",
                          "the queue is full (%d requests waiting for %d slots); try again later", s->queue_max,
                          s->n_parallel);
    }
    k->r = r;
    if (stream) {
        pthread_mutex_lock(&s->mu);
        k->refs++; /* the response's: stream_free drops it */
        pthread_mutex_unlock(&s->mu);
        struct MHD_Response *res = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, k,
                                                                     stream_free);
        if (!res) {
            stream_free(k);
            return MHD_NO;
        }
        MHD_add_response_header(res, "Content-Type", "text/event-stream");
        MHD_add_response_header(res, "Cache-Control", "no-cache");
        enum MHD_Result q = MHD_queue_response(k->c, 200, res);
        MHD_destroy_response(res);
        serve_count(s, endpoint, 200);
        return q;
    }
    pthread_mutex_lock(&s->mu);
    while (r->state != REQ_DONE) {
        wait_a_while(s, r);
        if (r->state != REQ_DONE && client_gone(k->c)) {
            pthread_mutex_unlock(&s->mu);
            serve_cancel(s, r);
            serve_req_release(s, r);
            k->r = NULL;
            serve_count(s, endpoint, 499);
            return MHD_NO; /* nobody to answer: close */
        }
    }
    pthread_mutex_unlock(&s->mu);
    enum MHD_Result q;
    if (r->error[0])
        q = send_error(k, 500, endpoint, NULL, "generation_failed", "%s", r->error);
    else
        q = send_json(k, 200, answer_json(k), endpoint);
    serve_req_release(s, r);
    k->r = NULL;
    return q;
}

static enum MHD_Result models(conn *k)
{
    serve *s = k->s;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddItemToArray(d, m);
    cJSON_AddStringToObject(m, "id", s->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "gk");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    cJSON_AddNumberToObject(meta, "n_ctx", (double)s->n_ctx);
    cJSON_AddNumberToObject(meta, "n_parallel", s->n_parallel);
    cJSON_AddNumberToObject(meta, "n_vocab", (double)s->n_vocab);
    cJSON_AddStringToObject(meta, "backend", gk_model_backend_name(s->m));
    return send_json(k, 200, o, "/v1/models");
}

static void hist_text(FILE *f, const char *name, const char *help, const uint64_t *h, uint64_t count, double sum)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < 15; b++) {
        cum += h[b];
        fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, serve_buckets[b], cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name, count, name, sum,
            name, count);
}

static enum MHD_Result metrics(conn *k)
{
    serve *s = k->s;
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f)
        return send_error(k, 500, "/metrics", NULL, "out_of_memory", "out of memory");
    pthread_mutex_lock(&s->mu);
    serve_metrics m = s->met;
    int queued = s->n_queue, busy = s->n_running;
    pthread_mutex_unlock(&s->mu);
    fprintf(f, "# HELP gk_requests_total HTTP requests answered, by endpoint and status.\n"
               "# TYPE gk_requests_total counter\n");
    for (int i = 0; i < m.n_by; i++)
        fprintf(f, "gk_requests_total{endpoint=\"%s\",status=\"%d\"} %" PRIu64 "\n", m.by[i].endpoint,
                m.by[i].status, m.by[i].n);
    fprintf(f, "# HELP gk_prompt_tokens_total Prompt tokens of the requests admitted to a slot.\n"
               "# TYPE gk_prompt_tokens_total counter\ngk_prompt_tokens_total %" PRIu64 "\n"
               "# HELP gk_generated_tokens_total Tokens generated.\n"
               "# TYPE gk_generated_tokens_total counter\ngk_generated_tokens_total %" PRIu64 "\n"
               "# HELP gk_queue_depth Requests waiting for a slot.\n# TYPE gk_queue_depth gauge\ngk_queue_depth %d\n"
               "# HELP gk_busy_slots Slots running a request.\n# TYPE gk_busy_slots gauge\ngk_busy_slots %d\n"
               "# HELP gk_slots Slots (--parallel).\n# TYPE gk_slots gauge\ngk_slots %d\n"
               "# HELP gk_engine_steps_total Engine steps (gk_seq_decode calls, one forward pass for all decodes).\n"
               "# TYPE gk_engine_steps_total counter\ngk_engine_steps_total %" PRIu64 "\n"
               "# HELP gk_engine_decode_inputs_total One-token decode inputs over all steps (divided by the steps: "
               "the mean batch).\n"
               "# TYPE gk_engine_decode_inputs_total counter\ngk_engine_decode_inputs_total %" PRIu64 "\n"
               "# HELP gk_engine_prefill_tokens_total Prompt tokens fed (in chunks of at most 256 per request and "
               "step).\n"
               "# TYPE gk_engine_prefill_tokens_total counter\ngk_engine_prefill_tokens_total %" PRIu64 "\n",
            m.prompt_tokens, m.gen_tokens, queued, busy, s->n_parallel, m.steps, m.step_decodes, m.step_prefill);
    hist_text(f, "gk_request_duration_seconds", "From queueing to the last token, per request.", m.lat,
              m.n_lat, m.sum_lat);
    hist_text(f, "gk_time_to_first_token_seconds", "From queueing to the first token.", m.ttft,
              m.n_ttft, m.sum_ttft);
    hist_text(f, "gk_time_per_output_token_seconds",
              "Mean time between tokens after the first, per request.", m.tpot, m.n_tpot, m.sum_tpot);
    if (fclose(f) != 0 || !text) {
        free(text);
        return send_error(k, 500, "/metrics", NULL, "out_of_memory", "out of memory");
    }
    enum MHD_Result q = send_text(k, 200, "text/plain; version=0.0.4", text, "/metrics");
    free(text);
    return q;
}

void serve_count(serve *s, const char *endpoint, int status)
{
    pthread_mutex_lock(&s->mu);
    serve_metrics *m = &s->met;
    int i = 0;
    while (i < m->n_by && (m->by[i].status != status || strcmp(m->by[i].endpoint, endpoint)))
        i++;
    if (i == m->n_by && m->n_by < (int)(sizeof m->by / sizeof m->by[0])) {
        snprintf(m->by[i].endpoint, sizeof m->by[i].endpoint, "%s", endpoint);
        m->by[i].status = status;
        m->by[i].n = 0;
        m->n_by++;
    }
    if (i < m->n_by)
        m->by[i].n++;
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------- dispatch */

/* Bearer KEY against --api-key, in time that depends only on the key's length. */
static bool key_ok(const serve *s, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    const char *got = h + 7, *want = s->api_key;
    size_t gl = strlen(got), wl = strlen(want);
    volatile unsigned char d = gl != wl;
    for (size_t i = 0; i < wl; i++)
        d |= (unsigned char)(want[i] ^ (gl ? got[i % gl] : 0));
    return d == 0;
}

enum MHD_Result serve_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    serve *s = cls;
    conn *k = *con_cls;
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k)
            return MHD_NO;
        k->s = s;
        k->c = c;
        k->refs = 1;
        *con_cls = k;
        pthread_mutex_lock(&s->mu);
        s->open_requests++;
        pthread_mutex_unlock(&s->mu);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > SERVE_MAX_BODY)
            k->too_big = true;
        if (!k->too_big)
            return MHD_YES;
    }
    if (*upload_size) {
        /* a body over the limit is read and dropped: the 413 goes out once
         * it is all in (libmicrohttpd answers mid-upload only on the first call) */
        if (k->too_big || k->len + *upload_size > SERVE_MAX_BODY) {
            k->too_big = true;
        } else {
            if (k->len + *upload_size + 1 > k->cap) {
                size_t cap = (k->len + *upload_size + 1) * 2;
                cap = cap > SERVE_MAX_BODY + 1 ? SERVE_MAX_BODY + 1 : cap;
                char *p = realloc(k->body, cap);
                if (!p)
                    return MHD_NO;
                k->body = p;
                k->cap = cap;
            }
            memcpy(k->body + k->len, upload, *upload_size);
            k->len += *upload_size;
            k->body[k->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    *upload_size = 0;
    (void)version;
    struct { const char *path, *method; bool open; } routes[] = {
        {"/v1/chat/completions", "POST", false}, {"/v1/completions", "POST", false},
        {"/v1/models", "GET", true}, {"/health", "GET", true}, {"/metrics", "GET", false},
    };
    int route = -1;
    for (int i = 0; i < (int)(sizeof routes / sizeof routes[0]); i++)
        if (!strcmp(url, routes[i].path))
            route = i;
    if (route < 0)
        return send_error(k, 404, "other", NULL, "not_found", "no endpoint %s %.200s", method, url);
    const char *ep = routes[route].path;
    if (strcmp(method, routes[route].method) && !(route >= 2 && !strcmp(method, "HEAD")))
        return send_error(k, 405, ep, NULL, "method_not_allowed", "%s takes %s, not %.20s", ep, routes[route].method,
                          method);
    if (s->api_key && !routes[route].open && !key_ok(s, c))
        return send_error(k, 401, ep, NULL, "invalid_api_key",
                          "missing or wrong API key (send the header Authorization: Bearer KEY)");
    if (k->too_big)
        return send_error(k, 413, ep, NULL, "body_too_large", "the request body is larger than %u bytes",
                          SERVE_MAX_BODY);
    switch (route) {
    case 0: return generate(k, ep, true);
    case 1: return generate(k, ep, false);
    case 2: return models(k);
    case 3: {
        pthread_mutex_lock(&s->mu);
        bool draining = s->draining;
        pthread_mutex_unlock(&s->mu);
        if (draining)
            return send_error(k, 503, ep, NULL, "draining", "the server is shutting down");
        return send_text(k, 200, "application/json", "{\"status\":\"ok\"}", ep);
    }
    default: return metrics(k);
    }
}

void serve_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    serve *s = cls;
    conn *k = *con_cls;
    (void)c, (void)toe;
    if (!k)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&s->mu);
    s->open_requests--;
    pthread_mutex_unlock(&s->mu);
    conn_unref(k); /* a stream's response may outlive this (stream_free) */
}
