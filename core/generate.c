/* generate.c - the generation loop: the prompt (or what the cache does not
 * hold of it, keep_cache), then one token at a time until max_new_tokens, an
 * EOS id, a stop string, the callback or a full context. Not here: the
 * sampler chain (sample.c), the forward pass (model.c).
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

/* One generate call's state. */
typedef struct gen {
    gk_model *m;
    const gk_gen_opts *o;
    int32_t *seq;      /* prompt then output */
    int64_t len;
    int32_t *out;
    int64_t *n_out;
    int64_t limit;     /* tokens at most: max_new_tokens, or what fits the context */
    gk_gen_stats st;
} gen;

/* Next token from the last forward: on the backend when it samples (and the
 * chain is one its plain `sample` entry knows: no min-p, no penalties), else
 * here. */
static gk_status next_token(gen *g, gk_rng *rng, int32_t *tok, gk_err *err)
{
    gk_model *m = g->m;
    const gk_gen_opts *o = g->o;
    double u = gk_sample_is_greedy(o) ? 0.0 : gk_rng_uniform(rng);
    gk_status (*sample)(void *, const gk_tensor *, const gk_sample_params *, int32_t *, gk_err *) =
        GK_BACKEND_OP(m->be.ops, sample);
    gk_status (*sync)(void *, gk_err *) = GK_BACKEND_OP(m->be.ops, synchronize);
    if (sample && !gk_sample_host_only(NULL, o)) {
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
    *tok = gk_sample_u(m->host_logits, m->cfg.n_vocab, o, g->seq, g->len, u);
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

/* First occurrence of w[wl] in text[len]; SIZE_MAX when none. */
static size_t find_bytes(const char *text, size_t len, const char *w, size_t wl)
{
    for (size_t i = 0; wl <= len && i <= len - wl; i++)
        if (text[i] == w[0] && !memcmp(text + i, w, wl))
            return i;
    return SIZE_MAX;
}

/* The stop string found earliest in the decoded output (special tokens
 * and ids beyond the tokenizer's vocabulary skipped, as a caller shows it):
 * *index -1 when none. The whole output is
 * decoded each time, so a string split over tokens, or over the bytes of one
 * character, is found as in the final text. */
static gk_status find_stop(gen *g, int *index, size_t *offset, gk_err *err)
{
    *index = -1;
    /* ids in the embedding's padding (beyond the tokenizer's vocabulary)
     * have no text */
    int64_t nv = gk_tokenizer_vocab_size(g->o->tokenizer), n = 0;
    int32_t *ids = malloc((size_t)(*g->n_out > 0 ? *g->n_out : 1) * sizeof *ids);
    if (!ids)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < *g->n_out; i++)
        if (g->out[i] >= 0 && g->out[i] < nv)
            ids[n++] = g->out[i];
    char *text = NULL;
    size_t len = 0;
    gk_status s = gk_tokenizer_decode(g->o->tokenizer, ids, (size_t)n, true, &text, &len, err);
    free(ids);
    if (s != GK_OK)
        return s;
    size_t best = SIZE_MAX;
    for (int i = 0; i < g->o->n_stop; i++) {
        size_t at = find_bytes(text, len, g->o->stop[i], strlen(g->o->stop[i]));
        if (at < best) {
            best = at;
            *index = i;
        }
    }
    *offset = best;
    free(text);
    return GK_OK;
}

/* Take the sampled token t; *end when generation ends with it (st.finish
 * says why: a stop string, then EOS, then the callback, then the limit). */
static gk_status take(gen *g, int32_t t, bool *end, gk_err *err)
{
    const gk_gen_opts *o = g->o;
    g->seq[g->len++] = t;
    g->out[(*g->n_out)++] = t;
    g->st.n_gen++;
    bool cb_stop = o->on_token && !o->on_token(t, o->user);
    int si = -1;
    size_t off = 0;
    if (o->n_stop > 0) {
        gk_status s = find_stop(g, &si, &off, err);
        if (s != GK_OK)
            return s;
    }
    *end = true;
    if (si >= 0) {
        g->st.finish = GK_FINISH_STOP;
        g->st.stop_index = si;
        g->st.stop_offset = off;
    } else if (is_eos(o, t)) {
        g->st.finish = GK_FINISH_EOS;
    } else if (cb_stop) {
        g->st.finish = GK_FINISH_CALLBACK;
    } else {
        *end = g->st.n_gen >= g->limit; /* st.finish holds LENGTH or CONTEXT */
    }
    return GK_OK;
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
 * on the host as before: forward, then sample. Min-p and the penalties go
 * to the node only on a backend of ABI 1.3 or later (the step graph then
 * has the ring, filled here with the history so far); one whose
 * supports_node refuses them sets *refused, and this call steps on the
 * host. */
static gk_status decode_on_device(gen *gn, bool *unsupported, bool *refused, gk_err *err)
{
    gk_model *m = gn->m;
    const gk_gen_opts *o = gn->o;
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
    float temp = gk_sample_is_greedy(o) ? 0.0f : o->temperature;
    /* min-p and the penalties (ABI 1.3: the graph has the ring): the window
     * W is the last penalty_last_n ids (-1: the context), at most the ring */
    float min_p = g->ring ? o->min_p : 0.0f;
    int32_t win = 0;
    if (g->ring && gk_sample_penalties_on(o))
        win = (int32_t)(o->penalty_last_n < 0 || o->penalty_last_n > g->ring->cols ? g->ring->cols
                                                                                  : o->penalty_last_n);
    if (nd->f[0] != temp || nd->i[0] != o->top_k || nd->f[1] != o->top_p || nd->f[2] != min_p ||
        nd->i[1] != win) {
        nd->f[0] = temp;
        nd->i[0] = o->top_k;
        nd->f[1] = o->top_p;
        nd->f[2] = min_p;
        nd->i[1] = win;
        gk_fgraph_new_id(g); /* other parameters: a backend must not replay the old recording */
    }
    bool (*supports)(void *, const gk_node *) = m->be.ops->supports_node;
    if ((min_p > 0.0f || win > 0) && supports && !supports(m->be.state, nd)) {
        *refused = true; /* the host samples this call, with the same picks */
        return GK_OK;
    }
    /* the generator after the draws taken so far (one per token sampled on
     * the host); the device counts on from there */
    uint64_t seed = o->seed;
    int32_t draws = gk_sample_is_greedy(o) ? 0 : (int32_t)gn->st.n_gen;
    int32_t ctl[4] = {(int32_t)(uint32_t)seed, (int32_t)(uint32_t)(seed >> 32), draws, 0};
    int32_t tok = gn->seq[gn->len - 1], pos = (int32_t)(gn->len - 1);
    const gk_backend_ops *ops = m->be.ops;
    s = GK_OK;
    if (win > 0) {
        /* the history so far (prompt and output) into the ring: id k at
         * ring[k % R]; ctl[3] counts them */
        const int64_t r = g->ring->cols, n = gn->len < r ? gn->len : r, first = gn->len - n;
        ctl[3] = (int32_t)gn->len;
        const float pen[4] = {o->repetition_penalty, o->presence_penalty, o->frequency_penalty, 0.0f};
        for (int64_t k = first; s == GK_OK && k < gn->len;) {
            int64_t at = k % r, run = r - at < gn->len - k ? r - at : gn->len - k;
            s = ops->buffer_write(m->be.state, g->ring->data, (size_t)at * sizeof(int32_t), gn->seq + k,
                                  (size_t)run * sizeof(int32_t), err);
            k += run;
        }
        if (s == GK_OK)
            s = ops->buffer_write(m->be.state, g->pen->data, 0, pen, sizeof pen, err);
    }
    if (s == GK_OK)
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
    const int64_t want = gn->limit - gn->st.n_gen; /* steps to run */
    uint64_t ticket[2] = {0, 0};
    int64_t issued = 0, done = 0;
    /* the caller's n_past counts the tokens fed and kept */
    m->n_past = gn->len - 1;
    while (done < want) {
        while (issued < want && issued - done < (pipelined ? 2 : 1)) {
            s = ops->graph_compute(m->be.state, &g->g, err);
            gk_kv_wrote(&m->kv_hi, pos + issued + 1); /* a ring's rows, even for a step nobody reads */
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
        /* the token this step fed is in the cache now */
        m->cache_ids[m->n_past++] = gn->seq[gn->len - 1];
        if (t < 0 || t >= m->cfg.n_vocab)
            return gk_err_set(err, GK_ERR_INTERNAL, "the backend's sampler gave token %d, outside the vocabulary "
                              "of %lld", (int)t, (long long)m->cfg.n_vocab);
        bool end = false;
        s = take(gn, t, &end, err);
        if (s != GK_OK || end)
            return s;
    }
    return GK_OK;
}

/* Forward seq[from, to) in chunks, so activations stay bounded however long
 * the prompt. */
static gk_status forward_chunks(gk_model *m, const int32_t *seq, int64_t from, int64_t to, gk_err *err)
{
    gk_status s = GK_OK;
    for (int64_t done = from; s == GK_OK && done < to; done += PREFILL_CHUNK) {
        int64_t n = to - done < PREFILL_CHUNK ? to - done : PREFILL_CHUNK;
        s = gk_model_forward(m, seq + done, n, NULL, err);
    }
    return s;
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
    if (m->own_busy)
        return gk_err_set(err, GK_ERR_BUSY, "the model's own sequence slot is a gk_seq's (gk_seq_new took it)");
    char why[160];
    if (gk_sample_opts_invalid(o, why, sizeof why))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "%s", why);
    if (o->max_new_tokens < -1)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "max_new_tokens must be -1 (until EOS or a full context) or "
                          ">= 0, got %lld", (long long)o->max_new_tokens);
    if (o->n_eos < 0 || (o->n_eos > 0 && !o->eos_ids))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "n_eos must be >= 0 and eos_ids hold that many ids, got n_eos %d "
                          "and eos_ids %s", o->n_eos, o->eos_ids ? "set" : "NULL");
    if (o->n_stop < 0 || (o->n_stop > 0 && !o->stop))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "n_stop must be >= 0 and stop hold that many strings, got n_stop "
                          "%d and stop %s", o->n_stop, o->stop ? "set" : "NULL");
    if (o->n_stop > 0 && !o->tokenizer)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "stop strings need the tokenizer to decode the output "
                          "(opts.tokenizer is NULL)");
    for (int i = 0; i < o->n_stop; i++)
        if (!o->stop[i] || !o->stop[i][0])
            return gk_err_set(err, GK_ERR_INVALID_ARG, "stop string %d is %s: each must be a non-empty string", i,
                              o->stop[i] ? "empty" : "NULL");
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->cfg.n_vocab)
            return gk_err_set(err, GK_ERR_INVALID_ARG, "prompt token id %d at index %lld is outside the vocabulary "
                              "of %lld", prompt[i], (long long)i, (long long)m->cfg.n_vocab);
    /* The last sampled token is never fed back, so it needs no cache row.
     * Compared without adding, so a huge max_new_tokens cannot overflow.
     * -1 runs until prompt and output fill the context. */
    if (n_prompt > m->n_ctx || (o->max_new_tokens >= 0 && o->max_new_tokens > m->n_ctx + 1 - n_prompt))
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "prompt of %lld tokens plus %lld new ones exceeds the context of %lld tokens",
                          (long long)n_prompt, (long long)o->max_new_tokens, (long long)m->n_ctx);
    gen g = {.m = m, .o = o, .out = out, .n_out = n_out, .len = n_prompt};
    g.limit = o->max_new_tokens < 0 ? m->n_ctx - n_prompt : o->max_new_tokens;
    g.st = (gk_gen_stats){.n_prompt = n_prompt, .stop_index = -1,
                          .finish = o->max_new_tokens < 0 ? GK_FINISH_CONTEXT : GK_FINISH_LENGTH};
    g.seq = malloc((size_t)(n_prompt + g.limit) * sizeof *g.seq);
    if (!g.seq)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    memcpy(g.seq, prompt, (size_t)n_prompt * sizeof *g.seq);
    gk_rng rng;
    gk_rng_seed(&rng, o->seed);

    /* keep_cache: the longest prefix the cache shares with the prompt, less
     * the prompt's last token when it is all there (its logits are needed) */
    int64_t reuse = 0;
    if (o->keep_cache && o->use_cache) {
        while (reuse < m->n_past && reuse < n_prompt && m->cache_ids[reuse] == prompt[reuse])
            reuse++;
        if (reuse == n_prompt)
            reuse--;
        /* a ring cache may have overwritten what that prefix needs: then
         * the whole prompt runs again, as llama.cpp does */
        if (reuse > 0 && reuse < gk_model_min_keep(m))
            reuse = 0;
    }
    gk_status s = gk_model_truncate(m, reuse, err);
    g.st.n_reused = reuse;
    g.st.n_prefill = n_prompt - reuse;
    bool host = gk_sample_host_only(&m->be, o);

    double t0 = gk_now();
    for (int64_t step = 0; s == GK_OK && step < g.limit; step++) {
        if (step > 0 && o->use_cache && !host && !m->step_unsupported) {
            /* the rest runs on the device, unless the backend lacks GK_OP_SAMPLE */
            bool unsupported = false, refused = false;
            s = decode_on_device(&g, &unsupported, &refused, err);
            if (!unsupported && !refused)
                break;
            if (unsupported)
                m->step_unsupported = true;
            host = true; /* this call: the backend refused these parameters */
            s = GK_OK;
            if (err)
                memset(err, 0, sizeof *err); /* the refusal was handled */
        }
        if (step > 0 && o->use_cache) {
            /* one token through the cache; sampled here or by the backend */
            s = gk_model_forward(m, &g.seq[g.len - 1], 1, NULL, err);
        } else if (step == 0 && o->use_cache) {
            s = forward_chunks(m, g.seq, reuse, g.len, err);
        } else {
            /* no cache: the whole sequence each step */
            s = gk_model_truncate(m, 0, err);
            if (s == GK_OK)
                s = forward_chunks(m, g.seq, 0, g.len, err);
        }
        int32_t tok = -1;
        if (s == GK_OK)
            s = next_token(&g, &rng, &tok, err);
        if (s != GK_OK)
            break;
        if (step == 0) {
            g.st.t_prefill_s = gk_now() - t0;
            t0 = gk_now();
        }
        bool end = false;
        s = take(&g, tok, &end, err);
        if (end)
            break;
    }
    if (g.st.n_gen > 0)
        g.st.t_decode_s = gk_now() - t0;
    m->ran = false; /* the graphs it ran are not a forward call to read */
    if (stats)
        *stats = g.st;
    free(g.seq);
    return s;
}
