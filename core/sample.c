/* sample.c - the sampler chain: penalties, temperature, top-k, top-p, min-p,
 * draw (llama.cpp's and transformers' order).
 *
 * Penalties look at the last penalty_last_n ids of the history (prompt and
 * output; -1 all of it, 0 none): repetition as transformers (a seen token's
 * logit l becomes l / p when l > 0, else l * p, once however often it was
 * seen), presence and frequency as OpenAI and llama.cpp (l -= frequency *
 * count + presence * (count > 0)). They apply when greedy too.
 *
 * Temperature 0 is greedy (argmax; ties go to the lowest id, as torch.argmax),
 * and so is a temperature so small that logit / T overflows (the softmax's
 * limit). A NaN logit is never picked unless all are (then id 0). Min-p keeps
 * the tokens whose probability (after temperature, top-k and top-p) is at
 * least min_p times the largest one. The generator is splitmix64, so a seed
 * reproduces a run on any machine.
 */
#include "model_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
double gk_rng_uniform(gk_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Lowest index of the maximum; NaN is never chosen (all NaN: 0). */
static int32_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return (int32_t)best;
}

/* p[0..n) divided by their sum (summed in order). */
static void renormalize(double *p, int64_t n)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += p[i];
    for (int64_t i = 0; i < n; i++)
        p[i] /= sum;
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

static int i32_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

bool gk_sample_penalties_on(const gk_gen_opts *o)
{
    return o->penalty_last_n != 0 &&
           (o->repetition_penalty != 1.0f || o->presence_penalty != 0.0f || o->frequency_penalty != 0.0f);
}

bool gk_sample_needs_abi13(const gk_gen_opts *o) { return gk_sample_penalties_on(o) || o->min_p > 0.0f; }

bool gk_sample_host_only(const gk_backend *be, const gk_gen_opts *o)
{
    return gk_sample_needs_abi13(o) && (!be || be->abi_minor < 3);
}

/* Apply the penalties of o to x[n] (in place) from the window of history.
 * false when memory runs out. */
static bool apply_penalties(float *x, int64_t n, const gk_gen_opts *o, const int32_t *hist, int64_t n_hist)
{
    if (!gk_sample_penalties_on(o) || n_hist <= 0)
        return true;
    int64_t w = o->penalty_last_n < 0 || o->penalty_last_n > n_hist ? n_hist : o->penalty_last_n;
    int32_t *ids = malloc((size_t)w * sizeof *ids);
    if (!ids)
        return false;
    memcpy(ids, hist + (n_hist - w), (size_t)w * sizeof *ids);
    qsort(ids, (size_t)w, sizeof *ids, i32_cmp);
    for (int64_t i = 0; i < w;) {
        int64_t j = i;
        while (j < w && ids[j] == ids[i])
            j++;
        int32_t t = ids[i];
        if (t >= 0 && t < n) {
            float l = x[t];
            if (o->repetition_penalty != 1.0f)
                l = l > 0.0f ? l / o->repetition_penalty : l * o->repetition_penalty;
            l -= o->frequency_penalty * (float)(j - i) + o->presence_penalty;
            x[t] = l;
        }
        i = j;
    }
    free(ids);
    return true;
}

/* The chain after the penalties, on x[n] with the draw u given (backends'
 * samplers get the same u, so host and device pick alike when the chain is
 * one they know). */
static int32_t sample_u(const float *logits, int64_t n_vocab, const gk_gen_opts *o, double u)
{
    if (n_vocab <= 0)
        return -1;
    if (o->temperature <= 0.0f)
        return argmax(logits, n_vocab); /* min-p never drops the largest */
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
    double *p = malloc((size_t)n * sizeof *p);
    if (!p) {
        free(c);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        p[i] = exp((double)c[i].logit - (double)c[0].logit);
    renormalize(p, n);
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
        renormalize(p, n);
    }
    if (o->min_p > 0.0f) {
        /* p is non-increasing: keep the prefix with p >= min_p * p[0] (p[0]
         * always stays) */
        double cut = (double)o->min_p * p[0];
        int64_t keep = 1;
        while (keep < n && p[keep] >= cut)
            keep++;
        n = keep;
        renormalize(p, n);
    }
    /* p[0] > 0 and the p are finite and non-increasing. When rounding leaves
     * the total just below u, the pick is the last token that has any
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

int32_t gk_sample_u(const float *logits, int64_t n_vocab, const gk_gen_opts *o, const int32_t *hist,
                    int64_t n_hist, double u)
{
    if (!gk_sample_penalties_on(o) || n_hist <= 0)
        return sample_u(logits, n_vocab, o, u);
    float *x = malloc((size_t)n_vocab * sizeof *x);
    if (!x)
        return -1;
    memcpy(x, logits, (size_t)n_vocab * sizeof *x);
    int32_t t = apply_penalties(x, n_vocab, o, hist, n_hist) ? sample_u(x, n_vocab, o, u) : -1;
    free(x);
    return t;
}

bool gk_sample_is_greedy(const gk_gen_opts *o) { return o->temperature <= 0.0f; }

bool gk_sample_opts_invalid(const gk_gen_opts *o, char *why, size_t len)
{
    char tmp[8];
    if (!why) {
        why = tmp;
        len = sizeof tmp;
    }
    if (!isfinite(o->temperature) || o->temperature < 0.0f)
        snprintf(why, len, "temperature must be a finite number >= 0, got %g", (double)o->temperature);
    else if (!(o->top_p > 0.0f && o->top_p <= 1.0f)) /* also NaN */
        snprintf(why, len, "top_p must be in (0, 1], got %g", (double)o->top_p);
    else if (o->top_k < 0)
        snprintf(why, len, "top_k must not be negative, got %d", o->top_k);
    else if (!(o->min_p >= 0.0f && o->min_p <= 1.0f))
        snprintf(why, len, "min_p must be in [0, 1], got %g", (double)o->min_p);
    else if (!isfinite(o->repetition_penalty) || o->repetition_penalty <= 0.0f)
        snprintf(why, len, "repetition_penalty must be a finite number > 0, got %g", (double)o->repetition_penalty);
    else if (!isfinite(o->presence_penalty))
        snprintf(why, len, "presence_penalty must be a finite number, got %g", (double)o->presence_penalty);
    else if (!isfinite(o->frequency_penalty))
        snprintf(why, len, "frequency_penalty must be a finite number, got %g", (double)o->frequency_penalty);
    else if (o->penalty_last_n < -1)
        snprintf(why, len, "penalty_last_n must be -1 (the whole context), 0 (off) or positive, got %lld",
                 (long long)o->penalty_last_n);
    else
        return false;
    return true;
}

int32_t gk_sample_ex(const float *logits, int64_t n_vocab, const gk_gen_opts *o, const int32_t *history,
                     int64_t n_history, gk_rng *rng)
{
    if (!logits || !o || n_vocab <= 0 || n_vocab > INT32_MAX || gk_sample_opts_invalid(o, NULL, 0) ||
        (!gk_sample_is_greedy(o) && !rng) || n_history < 0 || (n_history > 0 && !history))
        return -1;
    double u = gk_sample_is_greedy(o) ? 0.0 : gk_rng_uniform(rng);
    return gk_sample_u(logits, n_vocab, o, history, n_history, u);
}

int32_t gk_sample(const float *logits, int64_t n_vocab, const gk_gen_opts *o, gk_rng *rng)
{
    return gk_sample_ex(logits, n_vocab, o, NULL, 0, rng);
}
