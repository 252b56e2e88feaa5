/* gkrun_serve_engine.c - the thread that owns the model: continuous batching
 * over the model's sequence slots (gk_seq_*).
 *
 * Each step admits queued requests into free slots, then makes ONE
 * gk_seq_decode call holding, for every running request, either its next
 * prompt chunk or the one token it sampled last. Chunks are at most
 * SERVE_PREFILL_CHUNK tokens, and a step at most SERVE_STEP_TOKENS in all
 * (a prompt past that waits a step), so the library runs the whole step as
 * one forward pass and long prompts interleave with the decodes of the
 * others.
 * Each request samples from its own row with its own seeded rng and the
 * history prompt + output, exactly as gk_model_generate does (so a request
 * gives gkrun's tokens for the same seed and settings), decodes its output
 * so far, and hands the text that is final (not half a UTF-8 character, not
 * what may begin a stop string) to its connection. Stop strings, EOS ids and
 * max_new end a request; a cancelled one (the client left) frees its slot
 * at the next step.
 *
 * Not here: HTTP and JSON (gkrun_serve_api.c).
 */
#include "gkrun_serve.h"
#include "gkrun.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ requests */

serve_req *serve_req_new(void)
{
    serve_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->n_logprobs = -1;
    r->refs = 1;
    pthread_cond_init(&r->cond, NULL);
    return r;
}

static void req_free(serve_req *r)
{
    for (size_t i = 0; i < r->n_pieces; i++)
        free(r->pieces[i].text);
    free(r->pieces);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->prompt);
    free(r->hist);
    gk_decode_stream_destroy(r->ds);
    gk_seq_free(r->seq);
    pthread_cond_destroy(&r->cond);
    free(r);
}

/* Under s->mu. */
static void req_unref_locked(serve_req *r)
{
    if (--r->refs == 0)
        req_free(r);
}

void serve_req_release(serve *s, serve_req *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&s->mu);
    req_unref_locked(r);
    pthread_mutex_unlock(&s->mu);
}

int serve_submit(serve *s, serve_req *r)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->draining ? SUBMIT_DRAINING : s->n_queue < s->queue_max ? SUBMIT_OK : SUBMIT_FULL;
    if (rc == SUBMIT_OK) {
        r->refs++;
        r->state = REQ_QUEUED;
        s->queue[s->n_queue++] = r;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void serve_cancel(serve *s, serve_req *r)
{
    pthread_mutex_lock(&s->mu);
    r->cancelled = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

/* ----------------------------------------------------------- histograms */

/* Bucket bounds in seconds, shared by the three histograms (the last is +Inf). */
const double serve_buckets[15] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

static void observe(uint64_t *h, uint64_t *n, double *sum, double v)
{
    int b = 0;
    while (b < 15 && v > serve_buckets[b])
        b++;
    h[b]++;
    (*n)++;
    *sum += v;
}

/* Under s->mu: r ends (finish or error set); its slot is free again. */
static void req_end_locked(serve *s, serve_req *r, double now)
{
    gk_seq_free(r->seq);
    r->seq = NULL;
    r->state = REQ_DONE;
    r->t_done = now;
    serve_metrics *mt = &s->met;
    if (!r->cancelled && !r->error[0]) {
        observe(mt->lat, &mt->n_lat, &mt->sum_lat, now - r->t_arrive);
        if (r->t_first > 0)
            observe(mt->ttft, &mt->n_ttft, &mt->sum_ttft, r->t_first - r->t_arrive);
        if (r->n_gen > 1)
            observe(mt->tpot, &mt->n_tpot, &mt->sum_tpot, (now - r->t_first) / (double)(r->n_gen - 1));
    }
    for (int i = 0; i < s->n_parallel; i++)
        if (s->running[i] == r) {
            s->running[i] = NULL;
            s->n_running--;
        }
    pthread_cond_broadcast(&r->cond);
    req_unref_locked(r);
}

/* --------------------------------------------------------------- a token */

static bool ends_with_replacement(const char *t, size_t len)
{
    return len >= 3 && (unsigned char)t[len - 3] == 0xEF && (unsigned char)t[len - 2] == 0xBF &&
           (unsigned char)t[len - 1] == 0xBD;
}

/* Of text[released, ready), the end that may be handed out: before an end
 * that may be the start of a stop string (gkrun_stream's rule). */
static size_t stop_hold(const serve_req *r, size_t ready)
{
    size_t keep = ready;
    for (int i = 0; i < r->n_stop; i++) {
        const char *w = r->stop[i];
        size_t wl = strlen(w);
        for (size_t k = wl - 1; k > 0; k--) {
            if (k <= ready - r->released && !memcmp(r->text + ready - k, w, k)) {
                if (ready - k < keep)
                    keep = ready - k;
                break;
            }
        }
    }
    return keep;
}

/* First occurrence of w (not empty) in t[len]; SIZE_MAX when none. */
static size_t find_bytes(const char *t, size_t len, const char *w)
{
    const char *at = memmem(t, len, w, strlen(w));
    return at ? (size_t)(at - t) : SIZE_MAX;
}

/* log-softmax of the raw logits at id, and the n best alternatives. */
static void logprobs(const float *row, int64_t n_vocab, int32_t id, int n, serve_piece *p)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n_vocab; i++)
        if (row[i] > mx)
            mx = row[i];
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; i++)
        sum += exp((double)row[i] - mx);
    float lse = mx + (float)log(sum);
    p->logprob = row[id] - lse;
    /* one pass keeping the n best in order (ties: the lower id first) */
    p->n_top = 0;
    for (int64_t i = 0; i < n_vocab && n > 0; i++) {
        if (p->n_top == n && !(row[i] > row[p->top_id[n - 1]]))
            continue;
        int k = p->n_top < n ? p->n_top++ : n - 1;
        while (k > 0 && row[i] > row[p->top_id[k - 1]]) {
            p->top_id[k] = p->top_id[k - 1];
            k--;
        }
        p->top_id[k] = (int32_t)i;
    }
    for (int k = 0; k < p->n_top; k++)
        p->top_lp[k] = row[p->top_id[k]] - lse;
}

/* Take token t sampled from row: decode, look for stop strings and EOS,
 * fill *p with what is released. *done: the request ends ("stop" or
 * "length" in *finish). GK_OK or a failure with msg. */
static gk_status take(serve *s, serve_req *r, int32_t t, const float *row, serve_piece *p, const char **finish,
                      gk_err *err)
{
    r->hist[r->n_hist++] = t;
    int64_t n_out = r->n_hist - r->n_prompt;
    *p = (serve_piece){.id = t};
    if (r->n_logprobs >= 0)
        logprobs(row, s->n_vocab, t, r->n_logprobs, p);
    /* ids beyond the tokenizer's vocabulary (the embedding's padding) have no text */
    gk_status st = r->ds ? GK_OK : gk_decode_stream_new(s->tok, true, &r->ds, err);
    if (st == GK_OK && t >= 0 && t < gk_tokenizer_vocab_size(s->tok))
        st = gk_decode_stream_push(r->ds, &t, 1, err);
    if (st != GK_OK)
        return st;
    size_t len = 0;
    const char *text = gk_decode_stream_text(r->ds, &len);
    r->text = text;
    r->len = len;
    *finish = NULL;
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->n_stop; i++) {
        size_t at = find_bytes(text, len, r->stop[i]);
        best = at < best ? at : best;
    }
    bool eos = false;
    for (int i = 0; i < r->o.n_eos; i++)
        eos = eos || r->o.eos_ids[i] == t;
    if (best != SIZE_MAX) {
        r->len = best < r->released ? r->released : best; /* released text never contains it */
        *finish = "stop";
    } else if (eos) {
        *finish = "stop";
    } else if (n_out >= r->max_new) {
        *finish = "length";
    }
    size_t ready = r->len;
    if (!*finish)
        ready = stop_hold(r, ends_with_replacement(r->text, r->len) ? r->len - 3 : r->len);
    if (ready < r->released)
        ready = r->released;
    p->text = malloc(ready - r->released + 1);
    if (!p->text)
        return GK_ERR_NOMEM;
    memcpy(p->text, r->text + r->released, ready - r->released);
    p->text[ready - r->released] = '\0';
    r->released = ready;
    return GK_OK;
}

/* ---------------------------------------------------------------- a step */

/* Threads that share out a step's per-request work (sampling, logprobs,
 * decoding, stop strings: each request's own), the engine thread among
 * them. Picking from 64 rows of 151936 logits one after another is about
 * half of a 64-sequence step on an H200. */
typedef struct pool {
    pthread_t *th;
    int n_th;                       /* workers besides the engine thread */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;                   /* a new job when it changes */
    int busy;                       /* workers not finished with this job */
    bool quit;
    int n_items, next;              /* the job's items; the next one to take (under mu) */
    void (*fn)(void *ctx, int i);
    void *ctx;
} pool;

/* The next item of the job, or -1. */
static int pool_take(pool *p)
{
    pthread_mutex_lock(&p->mu);
    int i = p->next < p->n_items ? p->next++ : -1;
    pthread_mutex_unlock(&p->mu);
    return i;
}

static void *pool_main(void *arg)
{
    pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->quit && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        for (int i; (i = pool_take(p)) >= 0;)
            p->fn(p->ctx, i);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Up to n_th workers (fewer when threads cannot be made: then the engine
 * thread does more of it). */
static void pool_start(pool *p, int n_th)
{
    *p = (pool){0};
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->th = n_th > 0 ? calloc((size_t)n_th, sizeof *p->th) : NULL;
    for (int i = 0; p->th && i < n_th; i++)
        if (pthread_create(&p->th[p->n_th], NULL, pool_main, p) == 0)
            p->n_th++;
}

static void pool_stop(pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_th; i++)
        pthread_join(p->th[i], NULL);
    free(p->th);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
}

/* fn(ctx, i) for every i in [0, n), on the workers and the caller; returns
 * when all are done. */
static void pool_run(pool *p, int n, void (*fn)(void *, int), void *ctx)
{
    if (p->n_th == 0 || n < 2) {
        for (int i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->next = 0;
    p->busy = p->n_th;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i; (i = pool_take(p)) >= 0;)
        fn(ctx, i);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

typedef struct engine {
    pool pool;
    serve *s;
    int *row;              /* [n_parallel] each input's row of logits (-1: not in the call) */
    gk_err *errs;          /* [n_parallel] each input's failure */
    serve_req **act;       /* [n_parallel] this step's requests */
    gk_seq_input *in;      /* [n_parallel] */
    serve_req **in_req;    /* [n_parallel] the request of each input */
    bool *sample;          /* [n_parallel] the input's row is sampled from */
    float *logits;         /* [n_parallel][n_vocab] */
    serve_piece *piece;    /* [n_parallel] */
    const char **finish;   /* [n_parallel] */
    gk_status *st;         /* [n_parallel] */
} engine;

/* Under s->mu: drop cancelled requests, admit queued ones into free slots.
 * Returns how many run this step (copied into e->act, a reference each). */
static int step_begin(serve *s, engine *e, double now)
{
    for (int i = 0; i < s->n_parallel; i++)
        if (s->running[i] && s->running[i]->cancelled)
            req_end_locked(s, s->running[i], now);
    int k = 0;
    while (k < s->n_queue && s->n_running < s->n_parallel) {
        serve_req *r = s->queue[k];
        if (r->cancelled) {
            memmove(s->queue + k, s->queue + k + 1, (size_t)(s->n_queue - k - 1) * sizeof *s->queue);
            s->n_queue--;
            r->state = REQ_DONE;
            pthread_cond_broadcast(&r->cond);
            req_unref_locked(r);
            continue;
        }
        gk_err err = {0};
        if (gk_seq_new(s->m, &r->seq, &err) != GK_OK) {
            if (s->n_running > 0)
                break; /* try again when a running request has freed its slot */
            /* nothing runs, so nothing will free one: the request fails */
            memmove(s->queue + k, s->queue + k + 1, (size_t)(s->n_queue - k - 1) * sizeof *s->queue);
            s->n_queue--;
            snprintf(r->error, sizeof r->error, "no sequence slot: %s", err.msg);
            r->state = REQ_DONE;
            pthread_cond_broadcast(&r->cond);
            req_unref_locked(r);
            continue;
        }
        memmove(s->queue + k, s->queue + k + 1, (size_t)(s->n_queue - k - 1) * sizeof *s->queue);
        s->n_queue--;
        r->state = REQ_RUNNING;
        for (int i = 0; i < s->n_parallel; i++)
            if (!s->running[i]) {
                s->running[i] = r;
                break;
            }
        s->n_running++;
        s->met.prompt_tokens += (uint64_t)r->n_prompt;
    }
    int n = 0;
    for (int i = 0; i < s->n_parallel; i++)
        if (s->running[i]) {
            s->running[i]->refs++;
            e->act[n++] = s->running[i];
        }
    return n;
}

/* Input i of this step: sample from its row and take the token (a pool job). */
static void sample_one(void *ctx, int i)
{
    engine *e = ctx;
    serve *s = e->s;
    serve_req *r = e->in_req[i];
    if (e->st[i] != GK_OK || !e->sample[i])
        return;
    const float *lg = e->logits + (size_t)e->row[i] * (size_t)s->n_vocab;
    int32_t t = gk_sample_ex(lg, s->n_vocab, &r->o, r->hist, r->n_hist, &r->rng);
    if (t < 0) {
        e->st[i] = GK_ERR_NOMEM;
        snprintf(e->errs[i].msg, sizeof e->errs[i].msg, "out of memory while sampling");
        return;
    }
    e->st[i] = take(s, r, t, lg, &e->piece[i], &e->finish[i], &e->errs[i]);
}

static void step(serve *s, engine *e, int n_act)
{
    int n_in = 0;
    uint64_t n_dec = 0, n_pre = 0; /* for the metrics */
    /* the step's token budget: one for each running request, the rest for
     * prompts in arrival order (a prompt past it waits for the next step) */
    int64_t budget = SERVE_STEP_TOKENS;
    for (int i = 0; i < n_act; i++)
        budget -= e->act[i]->hist && e->act[i]->n_fed == e->act[i]->n_prompt;
    for (int i = 0; i < n_act; i++) {
        serve_req *r = e->act[i];
        if (r->hist && r->n_fed < r->n_prompt && budget <= 0)
            continue;
        if (!r->hist && budget <= 0)
            continue;
        if (!r->hist) {
            r->hist = malloc((size_t)(r->n_prompt + r->max_new) * sizeof *r->hist);
            if (r->hist) {
                memcpy(r->hist, r->prompt, (size_t)r->n_prompt * sizeof *r->hist);
                r->n_hist = r->n_prompt;
                gk_rng_seed(&r->rng, r->o.seed);
            }
        }
        if (!r->hist) {
            e->in_req[n_in] = r, e->st[n_in] = GK_ERR_NOMEM, e->sample[n_in] = false;
            e->in[n_in++] = (gk_seq_input){0};
            continue;
        }
        gk_seq_input in = {.seq = r->seq};
        if (r->n_fed < r->n_prompt) {
            int64_t n = r->n_prompt - r->n_fed;
            in.n = n > SERVE_PREFILL_CHUNK ? SERVE_PREFILL_CHUNK : n;
            in.n = in.n > budget ? budget : in.n;
            budget -= in.n;
            in.ids = r->prompt + r->n_fed;
            r->n_fed += in.n;
            n_pre += (uint64_t)in.n;
        } else {
            in.ids = &r->hist[r->n_hist - 1];
            in.n = 1;
            n_dec++;
        }
        e->sample[n_in] = r->n_fed == r->n_prompt;
        e->st[n_in] = GK_OK;
        e->in_req[n_in] = r;
        e->in[n_in++] = in;
    }
    /* the inputs that could not start are left out of the call */
    gk_seq_input *run = malloc((size_t)(n_in ? n_in : 1) * sizeof *run);
    int n_run = 0;
    gk_err err = {0};
    gk_status ds = run ? GK_OK : GK_ERR_NOMEM;
    for (int i = 0; run && i < n_in; i++)
        if (e->st[i] == GK_OK)
            run[n_run++] = e->in[i];
    if (run && n_run)
        ds = gk_seq_decode(s->m, run, n_run, e->logits, &err);
    for (int i = 0, row = 0; i < n_in; i++) {
        e->finish[i] = NULL;
        e->piece[i] = (serve_piece){.id = -1};
        e->errs[i] = err;
        e->row[i] = e->st[i] == GK_OK ? row++ : -1;
        if (e->st[i] == GK_OK && ds != GK_OK)
            e->st[i] = ds;
    }
    /* each request's own sampling and text, on the pool */
    pool_run(&e->pool, n_in, sample_one, e);
    free(run);
    double now = gk_now_s();
    pthread_mutex_lock(&s->mu);
    if (n_run && ds == GK_OK) {
        s->met.steps++;
        s->met.step_decodes += n_dec;
        s->met.step_prefill += n_pre;
    }
    for (int i = 0; i < n_in; i++) {
        serve_req *r = e->in_req[i];
        serve_piece *p = &e->piece[i];
        if (e->st[i] != GK_OK) {
            snprintf(r->error, sizeof r->error, "%s: %s", gk_status_str(e->st[i]),
                     e->errs[i].msg[0] ? e->errs[i].msg : "generation failed");
            free(p->text);
            req_end_locked(s, r, now);
            continue;
        }
        if (p->id < 0)
            continue;
        if (r->n_pieces == r->cap_pieces) {
            size_t cap = r->cap_pieces ? 2 * r->cap_pieces : 16;
            serve_piece *q = realloc(r->pieces, cap * sizeof *q);
            if (!q) {
                snprintf(r->error, sizeof r->error, "out of memory");
                free(p->text);
                req_end_locked(s, r, now);
                continue;
            }
            r->pieces = q;
            r->cap_pieces = cap;
        }
        r->pieces[r->n_pieces++] = *p;
        r->n_gen++;
        s->met.gen_tokens++;
        if (r->t_first == 0)
            r->t_first = now;
        pthread_cond_broadcast(&r->cond);
        if (e->finish[i]) {
            r->finish = e->finish[i];
            req_end_locked(s, r, now);
        }
    }
    for (int i = 0; i < n_act; i++)
        req_unref_locked(e->act[i]);
    pthread_mutex_unlock(&s->mu);
}

static void *engine_main(void *arg)
{
    serve *s = arg;
    size_t np = (size_t)s->n_parallel;
    engine e = {
        .act = calloc(np, sizeof *e.act), .in = calloc(np, sizeof *e.in), .in_req = calloc(np, sizeof *e.in_req),
        .sample = calloc(np, sizeof *e.sample), .logits = malloc(np * (size_t)s->n_vocab * sizeof *e.logits),
        .piece = calloc(np, sizeof *e.piece), .finish = calloc(np, sizeof *e.finish), .st = calloc(np, sizeof *e.st),
    };
    e.s = s;
    e.row = calloc(np, sizeof *e.row);
    e.errs = calloc(np, sizeof *e.errs);
    bool ok = e.act && e.in && e.in_req && e.sample && e.logits && e.piece && e.finish && e.st && e.row && e.errs;
    /* workers: one per further core, at most 15, no more than the slots */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n_th = (int)(cores > 16 ? 16 : cores < 1 ? 1 : cores) - 1;
    pool_start(&e.pool, n_th < s->n_parallel - 1 ? n_th : s->n_parallel - 1);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop_engine && s->n_queue == 0 && s->n_running == 0)
            pthread_cond_wait(&s->wake, &s->mu);
        if (s->stop_engine && s->n_queue == 0 && s->n_running == 0)
            break;
        if (!ok) { /* no memory for the step: fail what comes */
            for (int i = 0; i < s->n_queue; i++) {
                snprintf(s->queue[i]->error, sizeof s->queue[i]->error, "out of memory in the engine");
                s->queue[i]->state = REQ_DONE;
                pthread_cond_broadcast(&s->queue[i]->cond);
                req_unref_locked(s->queue[i]);
            }
            s->n_queue = 0;
            continue;
        }
        int n = step_begin(s, &e, gk_now_s());
        pthread_mutex_unlock(&s->mu);
        if (n > 0)
            step(s, &e, n);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    pool_stop(&e.pool);
    free(e.row);
    free(e.errs);
    free(e.act);
    free(e.in);
    free(e.in_req);
    free(e.sample);
    free(e.logits);
    free(e.piece);
    free(e.finish);
    free(e.st);
    return NULL;
}

int serve_engine_start(serve *s)
{
    return pthread_create(&s->engine, NULL, engine_main, s);
}

/* Runs what is queued and running to its end, then joins the thread. */
void serve_engine_stop(serve *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop_engine = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->engine, NULL);
}
