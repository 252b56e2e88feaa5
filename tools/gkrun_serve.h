/* gkrun_serve.h - gkrun serve, an OpenAI-compatible HTTP server: what its
 * parts share. gkrun_serve.c has the flags, the HTTP daemon and the
 * shutdown; gkrun_serve_api.c the endpoints (OpenAI JSON, server-sent
 * events, metrics); gkrun_serve_request.c the checking of a request's
 * fields; gkrun_serve_engine.c the one thread that owns the model and runs
 * every request in continuous batches.
 *
 * Locking: one mutex (srv.mu) guards the queue, the slots and each
 * request's output and flags; each request has a condition variable its
 * connection thread waits on. The engine holds the mutex only to move
 * requests and results, never while the model runs.
 */
#ifndef GKRUN_SERVE_H
#define GKRUN_SERVE_H

#include <gk/gk.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define SERVE_PREFILL_CHUNK 256  /* prompt tokens per request per engine step */
/* Tokens of one engine step in all: what gk_seq_decode runs in one forward
 * pass (prompt chunks beside the running requests' single tokens) */
#define SERVE_STEP_TOKENS 512
#define SERVE_MAX_BODY (8u << 20) /* request bodies beyond this are 413 */
#define SERVE_MAX_TOP_LOGPROBS 20
#define SERVE_MAX_STOP 16

/* One generated token as the connection sees it. */
typedef struct serve_piece {
    int32_t id;
    char *text;          /* the text this token released (may be ""), heap */
    float logprob;       /* log-softmax of the raw logits at id */
    int n_top;
    int32_t top_id[SERVE_MAX_TOP_LOGPROBS];
    float top_lp[SERVE_MAX_TOP_LOGPROBS];
} serve_piece;

typedef enum serve_state {
    REQ_QUEUED = 0,
    REQ_RUNNING,
    REQ_DONE,      /* finished (finish says how) or failed (error set) */
} serve_state;

typedef struct serve_req {
    /* set by the connection before queueing, read-only after */
    int32_t *prompt;     /* [n_prompt] heap */
    int64_t n_prompt;
    int64_t max_new;     /* >= 1, fits the context */
    gk_gen_opts o;       /* the sampler chain (eos and stop strings point below) */
    char *stop[SERVE_MAX_STOP];
    int n_stop;
    int n_logprobs;      /* -1: none; 0..20: the chosen token's, plus that many alternatives */
    double t_arrive;
    /* engine-private */
    gk_seq *seq;
    int64_t n_fed;       /* prompt tokens fed so far */
    int32_t *hist;       /* [n_prompt + max_new] prompt then output */
    int64_t n_hist;
    gk_rng rng;
    gk_decode_stream *ds; /* the output's text as it grows */
    const char *text;    /* decoded output so far (ds's, until the next token) */
    size_t len, released; /* released: bytes already handed out */
    /* shared, under srv.mu */
    serve_state state;
    bool cancelled;      /* the client went away: free the slot */
    serve_piece *pieces; /* handed out, not yet taken by the connection */
    size_t n_pieces, cap_pieces;
    int64_t n_gen;
    const char *finish;  /* "stop" or "length" once done; NULL with error */
    char error[640];     /* non-empty: the request failed (a 500) */
    double t_first;      /* monotonic time of the first token, 0 before */
    double t_done;
    int refs;            /* the connection and the engine each hold one */
    pthread_cond_t cond; /* signalled whenever pieces, state or finish change */
} serve_req;

typedef struct serve_metrics {
    uint64_t prompt_tokens, gen_tokens;
    uint64_t steps;          /* engine steps: gk_seq_decode calls */
    uint64_t step_decodes;   /* one-token inputs over all steps (mean batch = this / steps) */
    uint64_t step_prefill;   /* prompt tokens fed */
    /* histograms: counts per bucket, with the sum */
    uint64_t lat[16], ttft[16], tpot[16];
    uint64_t n_lat, n_ttft, n_tpot;
    double sum_lat, sum_ttft, sum_tpot;
    /* requests by endpoint and status */
    struct { char endpoint[32]; int status; uint64_t n; } by[64];
    int n_by;
} serve_metrics;

typedef struct serve {
    /* configuration */
    const char *model_dir, *model_name, *api_key;
    int n_parallel, queue_max;
    gk_model *m;
    const gk_tokenizer *tok;
    gk_chat_template *tmpl;   /* NULL: the plain transcript */
    gk_gen_opts base;         /* gkrun's defaults then generation_config.json */
    gk_gen_sources src;
    bool use_max_length;      /* the default max_tokens comes from max_length */
    int64_t eos[GK_MAX_EOS];
    int n_eos;
    int64_t n_ctx, n_vocab;
    /* shared state */
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* the engine: new work or stop */
    serve_req **queue;        /* [queue_max] FIFO */
    int n_queue;
    serve_req **running;      /* [n_parallel] NULL: free slot */
    int n_running;
    int open_requests;        /* responses not yet completed */
    bool draining, stop_engine;
    serve_metrics met;
    pthread_t engine;
} serve;

/* engine (gkrun_serve_engine.c) */
int serve_engine_start(serve *s);
void serve_engine_stop(serve *s);
/* Queue r (takes a reference) unless the queue is full (429) or the server
 * drains (503). Under no lock. */
enum { SUBMIT_OK, SUBMIT_FULL, SUBMIT_DRAINING };
int serve_submit(serve *s, serve_req *r);
/* Drop a reference; the last one frees r. Takes srv.mu itself. */
void serve_req_release(serve *s, serve_req *r);
serve_req *serve_req_new(void);
/* The client is gone: the engine frees the slot at its next step. */
void serve_cancel(serve *s, serve_req *r);

/* requests (gkrun_serve_request.c) */
typedef struct serve_ask {
    /* on failure: the status (400, or 500 when out of memory), the OpenAI
     * error code, the first bad field ("" for none) and why */
    int status;
    const char *code;     /* static */
    char param[64], msg[400];
    /* on success */
    bool stream, include_usage;
    char *model;          /* heap: the request's model, else the served name */
} serve_ask;
/* Check the JSON body of a chat (chat true) or completion request and fill
 * r: its prompt tokens, max_new, sampler chain, stop strings, logprobs.
 * false with a filled in (r stays the caller's to release). */
bool serve_parse(serve *s, const char *body, size_t len, bool chat, serve_req *r, serve_ask *a);

/* API (gkrun_serve_api.c) */
/* The libmicrohttpd access handler (cls is the serve). */
enum MHD_Result serve_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **con_cls);
/* MHD_OPTION_NOTIFY_COMPLETED: the request's state is freed. */
void serve_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe);
/* Bucket bounds of the histograms, in seconds (a 16th bucket is +Inf). */
extern const double serve_buckets[15];
void serve_count(serve *s, const char *endpoint, int status);

#endif
