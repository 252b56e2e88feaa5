/* generate.c - sampling and the generation loop.
 *
 * Sampling follows transformers' order of logits processors: temperature, then
 * top-k, then top-p (nucleus), then a draw from the softmax. Temperature 0 is
 * greedy (argmax; ties go to the lowest id, as torch.argmax), and so is a
 * temperature so small that logit / T overflows (the softmax's limit). A NaN
 * logit is never picked unless all are (then id 0). The generator is
 * splitmix64, so a seed reproduces a run on any machine. Not here: the forward
 * pass (model.c).
 */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest forward pass generate makes: bounds the activation memory. */
#define PREFILL_CHUNK 512

gk_gen_opts gk_gen_opts_default(void)
{
    return (gk_gen_opts){
        .max_new_tokens = 100,
        .temperature = 0.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .seed = 0,
        .use_cache = true,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
    };
}

void gk_rng_seed(gk_rng *r, uint64_t seed)
{
    if (r)
        r->s = seed;
}

static uint64_t rng_next(gk_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_uniform(gk_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Lowest index of the maximum; NaN is never chosen (all NaN: 0). */
static int32_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return (int32_t)best;
}

typedef struct cand {
    float logit;
    int32_t id;
} cand;

/* Descending by logit, ties by id (a deterministic order). */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The rules of gk_sample with the draw u given (backends' samplers get the
 * same u, so host and device pick alike). */
static int32_t sample_u(const float *logits, int64_t n_vocab, const gk_gen_opts *o, double u)
{
    if (n_vocab <= 0)
        return -1;
    if (o->temperature <= 0.0f)
        return argmax(logits, n_vocab);
    cand *c = malloc((size_t)n_vocab * sizeof *c);
    if (!c)
        return -1;
    for (int64_t i = 0; i < n_vocab; i++) {
        /* a NaN logit is never drawn, as never by argmax */
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i] / o->temperature;
        c[i].id = (int32_t)i;
    }
    qsort(c, (size_t)n_vocab, sizeof *c, cand_cmp);
    if (!isfinite(c[0].logit)) {
        /* No finite best score: a temperature so small that logit / T overflows
         * (to +inf, or every score to -inf), or logits that are all infinite.
         * The softmax's limit as T -> 0 is the argmax: be greedy. */
        free(c);
        return argmax(logits, n_vocab);
    }
    int64_t n = n_vocab;
    if (o->top_k > 0 && o->top_k < n) {
        /* transformers keeps every token tied with the k-th logit */
        int64_t k = o->top_k;
        while (k < n && c[k].logit == c[o->top_k - 1].logit)
            k++;
        n = k;
    }
    /* softmax over the survivors */
    double sum = 0.0;
    double *p = malloc((size_t)n * sizeof *p);
    if (!p) {
        free(c);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        p[i] = exp((double)c[i].logit - (double)c[0].logit);
        sum += p[i];
    }
    for (int64_t i = 0; i < n; i++)
        p[i] /= sum;
    if (o->top_p > 0.0f && o->top_p < 1.0f) {
        /* smallest prefix whose mass reaches top_p; always at least one token */
        double cum = 0.0;
        int64_t keep = 0;
        while (keep < n) {
            cum += p[keep++];
            if (cum >= (double)o->top_p)
                break;
        }
        n = keep;
        sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += p[i];
        for (int64_t i = 0; i < n; i++)
            p[i] /= sum;
    }
    /* p[0] = 1 / sum > 0 and the p are finite and non-increasing. When rounding
     * leaves the total just below u, the pick is the last token that has any
     * probability, never one whose probability is 0. */
    double cum = 0.0;
    int32_t pick = c[0].id;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] > 0.0)
            pick = c[i].id;
        cum += p[i];
        if (u < cum)
            break;
    }
    free(p);
    free(c);
    return pick;
}

/* Only temperature 0 is greedy: top_k = 1 still draws among tokens tied for
 * the maximum, as transformers' top-k keeps ties. */
static bool is_greedy(const gk_gen_opts *o) { return o->temperature <= 0.0f; }

/* The options gk_sample and generate accept; NULL when fine, else why not. */
static const char *opts_invalid(const gk_gen_opts *o)
{
    if (!isfinite(o->temperature) || o->temperature < 0.0f)
        return "temperature must be a finite number >= 0";
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f)) /* also NaN */
        return "top_p must be in (0, 1]";
    if (o->top_k < 0)
        return "top_k must not be negative";
    return NULL;
}

int32_t gk_sample(const float *logits, int64_t n_vocab, const gk_gen_opts *o, gk_rng *rng)
{
    if (!logits || !o || n_vocab <= 0 || n_vocab > INT32_MAX || opts_invalid(o) || (!is_greedy(o) && !rng))
        return -1;
    double u = is_greedy(o) ? 0.0 : rng_uniform(rng);
    return sample_u(logits, n_vocab, o, u);
}

/* Next token from the last forward: on the backend when it samples, else here. */
static gk_status next_token(gk_model *m, const gk_gen_opts *o, gk_rng *rng, int32_t *tok, gk_err *err)
{
    double u = is_greedy(o) ? 0.0 : rng_uniform(rng);
    gk_status (*sample)(void *, const gk_tensor *, const gk_sample_params *, int32_t *, gk_err *) =
        GK_BACKEND_OP(m->be.ops, sample);
    gk_status (*sync)(void *, gk_err *) = GK_BACKEND_OP(m->be.ops, synchronize);
    if (sample) {
        gk_tensor *logits;
        gk_status s = gk_model_run_last_logits(m, &logits, err);
        if (s != GK_OK)
            return s;
        gk_sample_params p = {.temperature = o->temperature, .top_k = o->top_k, .top_p = o->top_p, .u = u};
        s = sample(m->be.state, logits, &p, tok, err);
        /* the step's one wait, which also reports any fault of its kernels */
        if (s == GK_OK && sync)
            s = sync(m->be.state, err);
        return s;
    }
    gk_status s = gk_model_last_logits(m, err);
    if (s != GK_OK)
        return s;
    *tok = sample_u(m->host_logits, m->cfg.n_vocab, o, u);
    if (*tok < 0)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory while sampling");
    return GK_OK;
}

static bool is_eos(const gk_gen_opts *o, int32_t t)
{
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos_ids[i] == t)
            return true;
    return false;
}

/* Steps of generate after the first token, with the host out of the loop:
 * the step graph (forward, LM head, GK_OP_SAMPLE) writes the picked id into
 * its own input and advances the position on the device, so a step is one
 * graph launch. The next step is queued before this one's token is read
 * (read_async), so the device never waits for the host; a step queued past
 * an end (EOS, the callback saying stop) computes a token nobody sees and a
 * cache row beyond n_past, which the next call overwrites. Without
 * read_async the token is read after each step. A backend that cannot run
 * GK_OP_SAMPLE (built for ABI 1.1) sets *unsupported, and generate steps
 * on the host as before: forward, then sample. */
static gk_status decode_on_device(gk_model *m, const gk_gen_opts *o, int32_t *seq, int64_t *len,
                                  int32_t *out, int64_t *n_out, gk_gen_stats *st, bool *unsupported, gk_err *err)
{
    gk_status s = GK_OK;
    if (!m->step) {
        /* the forward's ops passed at load, so a refusal is GK_OP_SAMPLE's */
        s = gk_fgraph_build_step(m, &m->step, err);
        *unsupported = s == GK_ERR_UNSUPPORTED;
        if (s != GK_OK)
            return s;
    }
    gk_fgraph *g = m->step;
    gk_node *nd = &g->g.nodes[g->sample];
    float temp = is_greedy(o) ? 0.0f : o->temperature;
    if (nd->f[0] != temp || nd->i[0] != o->top_k || nd->f[1] != o->top_p) {
        nd->f[0] = temp;
        nd->i[0] = o->top_k;
        nd->f[1] = o->top_p;
        gk_fgraph_new_id(g); /* other parameters: a backend must not replay the old recording */
    }
    /* the generator after the draws taken so far (one per token sampled on
     * the host); the device counts on from there */
    uint64_t seed = o->seed;
    int32_t draws = is_greedy(o) ? 0 : (int32_t)st->n_gen;
    int32_t ctl[4] = {(int32_t)(uint32_t)seed, (int32_t)(uint32_t)(seed >> 32), draws, 0};
    int32_t tok = seq[*len - 1], pos = (int32_t)(*len - 1);
    const gk_backend_ops *ops = m->be.ops;
    s = ops->buffer_write(m->be.state, g->ids->data, 0, &tok, sizeof tok, err);
    if (s == GK_OK)
        s = ops->buffer_write(m->be.state, g->pos->data, 0, &pos, sizeof pos, err);
    if (s == GK_OK)
        s = ops->buffer_write(m->be.state, g->ctl->data, 0, ctl, sizeof ctl, err);
    if (s != GK_OK)
        return s;
    gk_status (*read_async)(void *, const void *, size_t, size_t, uint64_t *, gk_err *) =
        GK_BACKEND_OP(ops, read_async);
    gk_status (*read_wait)(void *, uint64_t, void *, size_t, gk_err *) = GK_BACKEND_OP(ops, read_wait);
    const bool pipelined = read_async && read_wait;
    const int64_t want = o->max_new_tokens - st->n_gen; /* steps to run */
    uint64_t ticket[2] = {0, 0};
    int64_t issued = 0, done = 0;
    /* the caller's n_past counts the tokens fed and kept */
    m->n_past = *len - 1;
    while (done < want) {
        while (issued < want && issued - done < (pipelined ? 2 : 1)) {
            s = ops->graph_compute(m->be.state, &g->g, err);
            if (s == GK_OK && pipelined)
                s = read_async(m->be.state, g->ids->data, 0, sizeof(int32_t), &ticket[issued % 2], err);
            if (s != GK_OK)
                return s;
            issued++;
        }
        int32_t t;
        s = pipelined ? read_wait(m->be.state, ticket[done % 2], &t, sizeof t, err)
                      : ops->buffer_read(m->be.state, g->ids->data, 0, &t, sizeof t, err);
        if (s != GK_OK)
            return s;
        done++;
        m->n_past++; /* the token this step fed is in the cache now */
        if (t < 0 || t >= m->cfg.n_vocab)
            return gk_err_set(err, GK_ERR_INTERNAL, "the backend's sampler gave token %d, outside the vocabulary "
                              "of %lld", (int)t, (long long)m->cfg.n_vocab);
        seq[(*len)++] = t;
        out[(*n_out)++] = t;
        st->n_gen++;
        if ((o->on_token && !o->on_token(t, o->user)) || is_eos(o, t))
            break;
    }
    return GK_OK;
}

gk_status gk_model_generate(gk_model *m, const int32_t *prompt, int64_t n_prompt, const gk_gen_opts *o,
                            int32_t *out, int64_t *n_out, gk_gen_stats *stats, gk_err *err)
{
    if (n_out)
        *n_out = 0;
    if (!m || !prompt || !o || !out || !n_out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_generate: %s is NULL",
                          !m ? "the model" : !prompt ? "prompt" : !o ? "opts" : !out ? "out" : "n_out");
    if (n_prompt <= 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "the prompt is empty");
    const char *why = opts_invalid(o);
    if (why)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "%s, got temperature %g, top_p %g, top_k %d", why,
                          (double)o->temperature, (double)o->top_p, o->top_k);
    if (o->max_new_tokens < 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "max_new_tokens must not be negative, got %lld",
                          (long long)o->max_new_tokens);
    if (o->n_eos < 0 || (o->n_eos > 0 && !o->eos_ids))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "n_eos must be >= 0 and eos_ids hold that many ids, got n_eos %d "
                          "and eos_ids %s", o->n_eos, o->eos_ids ? "set" : "NULL");
    /* The last sampled token is never fed back, so it needs no cache row.
     * Compared without adding, so a huge max_new_tokens cannot overflow. */
    if (n_prompt > m->n_ctx || o->max_new_tokens > m->n_ctx + 1 - n_prompt)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "prompt of %lld tokens plus %lld new ones exceeds the context of %lld tokens",
                          (long long)n_prompt, (long long)o->max_new_tokens, (long long)m->n_ctx);
    int64_t total = n_prompt + o->max_new_tokens;
    int32_t *seq = malloc((size_t)total * sizeof *seq);
    if (!seq)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    gk_rng rng;
    gk_rng_seed(&rng, o->seed);
    gk_gen_stats s0 = {.n_prompt = n_prompt};
    gk_status s = gk_model_truncate(m, 0, err);

    double t0 = gk_now();
    int64_t len = n_prompt;
    /* Prefill (and, without a cache, every step): forward passes in chunks,
     * so activations stay bounded however long the prompt, then the next
     * token from the last row's logits. */
    for (int64_t step = 0; s == GK_OK && step < o->max_new_tokens; step++) {
        if (step > 0 && o->use_cache && !m->step_unsupported) {
            /* the rest runs on the device, unless the backend lacks GK_OP_SAMPLE */
            bool unsupported = false;
            s = decode_on_device(m, o, seq, &len, out, n_out, &s0, &unsupported, err);
            if (!unsupported)
                break;
            m->step_unsupported = true;
            s = GK_OK;
            if (err)
                memset(err, 0, sizeof *err); /* the refusal was handled */
        }
        if (step > 0 && o->use_cache) {
            /* one token through the cache; sampled here or by the backend */
            s = gk_model_forward(m, &seq[len - 1], 1, NULL, err);
        } else {
            s = gk_model_truncate(m, 0, err);
            for (int64_t done = 0; s == GK_OK && done < len; done += PREFILL_CHUNK) {
                int64_t n = len - done < PREFILL_CHUNK ? len - done : PREFILL_CHUNK;
                s = gk_model_forward(m, seq + done, n, NULL, err);
            }
        }
        int32_t tok = -1;
        if (s == GK_OK)
            s = next_token(m, o, &rng, &tok, err);
        if (s != GK_OK)
            break;
        if (step == 0) {
            s0.t_prefill_s = gk_now() - t0;
            t0 = gk_now();
        }
        seq[len++] = tok;
        out[(*n_out)++] = tok;
        s0.n_gen++;
        if ((o->on_token && !o->on_token(tok, o->user)) || is_eos(o, tok))
            break;
    }
    if (s0.n_gen > 0)
        s0.t_decode_s = gk_now() - t0;
    m->ran = false; /* the graphs it ran are not a forward call to read */
    if (stats)
        *stats = s0;
    free(seq);
    return s;
}
