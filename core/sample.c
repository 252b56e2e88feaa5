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
 * reproduces a run on any machine. Only the part of the sorted vocabulary
 * the chain reads is sorted (sample_u): a pick from Qwen3's 151,936 logits
 * takes about 1-2 ms on one core, not the 19 ms of a whole sort.
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

/* The chain after top-k on the survivors c[0..n) (sorted by cand_cmp):
 * softmax (p = exp(logit - c[0]'s) over z; z <= 0: over their sum, in
 * order), top-p, min-p, the draw. all: c holds every survivor. When c is
 * only a prefix of them (all false) and the top-p prefix or the draw would
 * read past its end, *short_ is set and -2 returned: the caller runs it on
 * every survivor. A prefix for min-p without top-p must reach below its cut. */
static int32_t chain(const cand *c, int64_t n, bool all, double z, const gk_gen_opts *o, double u, bool *short_)
{
    *short_ = false;
    double *p = malloc((size_t)n * sizeof *p);
    if (!p)
        return -1;
    for (int64_t i = 0; i < n; i++)
        p[i] = exp((double)c[i].logit - (double)c[0].logit);
    if (z > 0.0) {
        for (int64_t i = 0; i < n; i++)
            p[i] /= z;
    } else {
        renormalize(p, n);
    }
    const bool top_p = o->top_p > 0.0f && o->top_p < 1.0f;
    if (top_p) {
        /* smallest prefix whose mass reaches top_p; always at least one token */
        double cum = 0.0;
        int64_t keep = 0;
        bool reached = false;
        while (keep < n) {
            cum += p[keep++];
            if (cum >= (double)o->top_p) {
                reached = true;
                break;
            }
        }
        if (!reached && !all)
            goto too_short;
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
        n = keep; /* (a prefix without top-p reaches below the cut: sample_u) */
        renormalize(p, n);
    } else if (!top_p && !all) {
        /* the draw reads p as fractions of every survivor's mass */
        double cum = 0.0;
        int64_t i = 0;
        while (i < n && !(u < (cum += p[i])))
            i++;
        if (i == n)
            goto too_short;
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
    return pick;
too_short:
    free(p);
    *short_ = true;
    return -2;
}

/* The k-th largest of x[0..n) (1 <= k <= n; no NaN): a three-way
 * quickselect on a copy, linear on average, also with many equal values. */
static bool kth_largest(const float *x, int64_t n, int64_t k, float *out)
{
    float *a = malloc((size_t)n * sizeof *a);
    if (!a)
        return false;
    memcpy(a, x, (size_t)n * sizeof *a);
    int64_t lo = 0, hi = n, want = k - 1; /* its index in descending order */
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (;;) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        const float pv = a[lo + (int64_t)(r % (uint64_t)(hi - lo))];
        /* [lo, gt): > pv, [gt, lt): == pv, [lt, hi): < pv */
        int64_t gt = lo, i = lo, lt = hi;
        while (i < lt) {
            const float v = a[i];
            if (v > pv) {
                a[i++] = a[gt];
                a[gt++] = v;
            } else if (v < pv) {
                a[i] = a[--lt];
                a[lt] = v;
            } else {
                i++;
            }
        }
        if (want < gt) {
            hi = gt;
        } else if (want >= lt) {
            lo = lt;
        } else {
            *out = pv;
            free(a);
            return true;
        }
    }
}

/* Every id whose scaled logit is >= floor_ (a prefix of cand_cmp's order),
 * sorted; NULL when memory runs out. */
static cand *gather(const float *l, int64_t n_vocab, float floor_, int64_t *n)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n_vocab; i++)
        m += l[i] >= floor_;
    cand *c = malloc((size_t)(m ? m : 1) * sizeof *c);
    if (!c)
        return NULL;
    m = 0;
    for (int64_t i = 0; i < n_vocab; i++)
        if (l[i] >= floor_)
            c[m++] = (cand){l[i], (int32_t)i};
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
    *n = m;
    return c;
}

/* The chain after the penalties, on x[n] with the draw u given (backends'
 * samplers get the same u, so host and device pick alike when the chain is
 * one they know). The rule reads the tokens in descending order of scaled
 * logit (ties by id), but only as far as top-k, top-p, min-p and the draw
 * go, so only that prefix is sorted:
 *  - top-k: the survivors are the ids at or above the k-th largest (every
 *    tie kept, as transformers), found by a quickselect; the chain runs on
 *    them exactly as on the whole sorted vocabulary.
 *  - otherwise the softmax's sum z is taken over the whole vocabulary (in id
 *    order), the scaled logits go into SAMPLE_NB buckets below the largest,
 *    and the prefix is every bucket down to the one where the mass reaches
 *    what top-p or the draw needs (a little more), and at least down to
 *    min-p's cut. Where the chain would still read past it (rounding at its
 *    edge), it runs again on every token.
 * So the picks are a whole sort's but for rounding at a boundary (z summed
 * in another order), as between host and device. */
#define SAMPLE_NB 4096
static int32_t sample_u(const float *logits, int64_t n_vocab, const gk_gen_opts *o, double u)
{
    if (n_vocab <= 0)
        return -1;
    if (o->temperature <= 0.0f)
        return argmax(logits, n_vocab); /* min-p never drops the largest */
    float *l = malloc((size_t)n_vocab * sizeof *l);
    if (!l)
        return -1;
    float mx = -INFINITY, mn = INFINITY;
    for (int64_t i = 0; i < n_vocab; i++) {
        /* a NaN logit is never drawn, as never by argmax */
        l[i] = isnan(logits[i]) ? -INFINITY : logits[i] / o->temperature;
        mx = l[i] > mx ? l[i] : mx;
        mn = l[i] < mn && isfinite(l[i]) ? l[i] : mn;
    }
    if (!isfinite(mx)) {
        /* No finite best score: a temperature so small that logit / T overflows
         * (to +inf, or every score to -inf), or logits that are all infinite.
         * The softmax's limit as T -> 0 is the argmax: be greedy. */
        free(l);
        return argmax(logits, n_vocab);
    }
    int32_t pick = -1;
    int64_t n = 0;
    cand *c = NULL;
    bool short_ = false;
    if (o->top_k > 0 && o->top_k < n_vocab) {
        float vk;
        if (kth_largest(l, n_vocab, o->top_k, &vk) && (c = gather(l, n_vocab, vk, &n)))
            pick = chain(c, n, true, 0.0, o, u, &short_);
        free(c);
        free(l);
        return pick;
    }
    double *e = malloc((size_t)n_vocab * sizeof *e), *mass = calloc(SAMPLE_NB, sizeof *mass);
    if (!e || !mass) {
        free(e);
        free(mass);
        free(l);
        return -1;
    }
    double z = 0.0;
    for (int64_t i = 0; i < n_vocab; i++)
        z += e[i] = exp((double)l[i] - (double)mx);
    const double range = (double)mx - (double)mn, w = range > 0.0 ? range / SAMPLE_NB : 1.0;
    for (int64_t i = 0; i < n_vocab; i++) {
        const double b = isfinite(l[i]) ? ((double)mx - (double)l[i]) / w : (double)SAMPLE_NB;
        mass[b < SAMPLE_NB - 1 ? (int)b : SAMPLE_NB - 1] += e[i];
    }
    const bool top_p = o->top_p > 0.0f && o->top_p < 1.0f;
    const double need = (top_p ? (double)o->top_p : u) * z * (1.0 + 1e-9);
    int nb = 0;
    double acc = 0.0;
    while (nb < SAMPLE_NB - 1 && !((acc += mass[nb]) >= need))
        nb++;
    /* buckets 0..nb are the ids with (mx - l) / w < nb + 1; a floor a little
     * below that bucket's edge takes them all (gather's prefix is by value) */
    float floor_ = nb >= SAMPLE_NB - 1 ? -INFINITY : (float)((double)mx - (double)(nb + 1) * w * (1.0 + 1e-6));
    if (!top_p && o->min_p > 0.0f) { /* min-p's cut (e >= min_p: the largest has e = 1), a little wide */
        const float cut = (float)((double)mx + log((double)o->min_p) - 1e-6 * (1.0 + fabs((double)mx)));
        floor_ = cut < floor_ ? cut : floor_;
    }
    free(e);
    free(mass);
    if ((c = gather(l, n_vocab, floor_, &n))) {
        pick = chain(c, n, n == n_vocab, z, o, u, &short_);
        free(c);
        if (short_ && (c = gather(l, n_vocab, -INFINITY, &n))) {
            pick = chain(c, n, true, z, o, u, &short_);
            free(c);
        } else if (short_) {
            pick = -1;
        }
    }
    free(l);
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
