/* test_generate.c - sampling rules and the generation loop.
 *
 * gk_sample is checked statistically against distributions computed here, in
 * double precision, following transformers' logits processors as they are
 * written (temperature, then TopK keeping every token tied with the k-th score,
 * then TopP removing sorted tokens whose ascending cumulative mass is
 * <= 1 - top_p). gk_model_generate is checked against the golden greedy
 * continuation of the reference pack and against a loop written here from
 * gk_model_forward, gk_model_logits and gk_sample.
 *
 * Not here: the forward pass itself (test_model.c).
 */
#include <criterion/criterion.h>

#include "gk/gk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------- sampling oracle */

#define N_DRAWS 200000
#define MAX_V 16

/* Distribution transformers would sample from, into q[n]. */
static void oracle_dist(const float *logits, int n, double temperature, int top_k, double top_p, double *q)
{
    double s[MAX_V];
    for (int i = 0; i < n; i++)
        s[i] = (double)logits[i] / temperature;
    bool keep[MAX_V];
    for (int i = 0; i < n; i++)
        keep[i] = true;
    if (top_k > 0 && top_k < n) {
        /* k-th largest score; everything strictly below it goes */
        double sorted[MAX_V];
        memcpy(sorted, s, sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (sorted[j] > sorted[i]) {
                    double t = sorted[i];
                    sorted[i] = sorted[j];
                    sorted[j] = t;
                }
        for (int i = 0; i < n; i++)
            keep[i] = s[i] >= sorted[top_k - 1];
    }
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        if (keep[i] && s[i] > mx)
            mx = s[i];
    for (int i = 0; i < n; i++) {
        q[i] = keep[i] ? exp(s[i] - mx) : 0.0;
        sum += q[i];
    }
    for (int i = 0; i < n; i++)
        q[i] /= sum;
    if (top_p < 1.0) {
        /* ascending order; cumulative mass up to and including each token */
        int order[MAX_V];
        for (int i = 0; i < n; i++)
            order[i] = i;
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (q[order[j]] < q[order[i]]) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
        double cum = 0;
        for (int r = 0; r < n - 1; r++) { /* the top token always stays */
            cum += q[order[r]];
            if (cum <= 1.0 - top_p)
                keep[order[r]] = false;
        }
        sum = 0;
        for (int i = 0; i < n; i++) {
            if (!keep[i])
                q[i] = 0;
            sum += q[i];
        }
        for (int i = 0; i < n; i++)
            q[i] /= sum;
    }
}

static gk_gen_opts sample_opts(float temperature, int top_k, float top_p)
{
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = temperature;
    o.top_k = top_k;
    o.top_p = top_p;
    return o;
}

/* Draw N_DRAWS tokens; every frequency within 4 standard errors of q, and ids
 * with q = 0 never drawn. */
static void check_frequencies(const float *logits, int n, float temperature, int top_k, float top_p,
                              uint64_t seed)
{
    double q[MAX_V];
    oracle_dist(logits, n, temperature, top_k, top_p, q);
    gk_gen_opts o = sample_opts(temperature, top_k, top_p);
    gk_rng rng;
    gk_rng_seed(&rng, seed);
    long count[MAX_V] = {0};
    for (int d = 0; d < N_DRAWS; d++) {
        int32_t t = gk_sample(logits, n, &o, &rng);
        cr_assert(t >= 0 && t < n, "T %g top_k %d top_p %g: drew %d", temperature, top_k, top_p, t);
        count[t]++;
    }
    for (int i = 0; i < n; i++) {
        double f = (double)count[i] / N_DRAWS;
        if (q[i] == 0.0) {
            cr_expect_eq(count[i], 0, "T %g top_k %d top_p %g: id %d is filtered out but drawn %ld times",
                         temperature, top_k, top_p, i, count[i]);
        } else {
            double se = sqrt(q[i] * (1 - q[i]) / N_DRAWS);
            cr_expect_leq(fabs(f - q[i]), 4 * se + 1e-12,
                          "T %g top_k %d top_p %g: id %d frequency %.5f, expected %.5f (4 se = %.5f)",
                          temperature, top_k, top_p, i, f, q[i], 4 * se);
        }
    }
}

/* Distinct scores; at T 0.7 the nucleus of 0.5 is {1, 4}, of 0.7 too, and
 * at T 1 the nucleus of 0.7 is {1, 4, 7}. */
static const float L8[8] = {1.0f, 2.5f, -0.5f, 0.3f, 2.0f, -1.2f, 0.8f, 1.7f};

static int support_size(const float *logits, int n, float t, int k, float p)
{
    double q[MAX_V];
    oracle_dist(logits, n, t, k, p, q);
    int s = 0;
    for (int i = 0; i < n; i++)
        s += q[i] > 0;
    return s;
}

Test(sample, temperature_draws_follow_softmax_of_logits_over_temperature)
{
    check_frequencies(L8, 8, 0.7f, 0, 1.0f, 1);
    check_frequencies(L8, 8, 1.0f, 0, 1.0f, 2);
    check_frequencies(L8, 8, 2.0f, 0, 1.0f, 3);
}

Test(sample, top_k_draws_only_the_k_largest_with_renormalised_softmax)
{
    cr_assert_eq(support_size(L8, 8, 0.7f, 3, 1.0f), 3, "oracle sanity");
    check_frequencies(L8, 8, 0.7f, 3, 1.0f, 4);
    check_frequencies(L8, 8, 1.0f, 2, 1.0f, 5);
    check_frequencies(L8, 8, 1.0f, 7, 1.0f, 6);
    /* k at or beyond the vocabulary is no filter */
    check_frequencies(L8, 8, 1.0f, 8, 1.0f, 7);
    check_frequencies(L8, 8, 1.0f, 100, 1.0f, 8);
}

Test(sample, top_p_draws_only_the_nucleus_with_renormalised_softmax)
{
    cr_assert_eq(support_size(L8, 8, 0.7f, 0, 0.5f), 2, "oracle sanity");
    cr_assert_eq(support_size(L8, 8, 1.0f, 0, 0.7f), 3, "oracle sanity");
    check_frequencies(L8, 8, 0.7f, 0, 0.5f, 9);
    check_frequencies(L8, 8, 0.7f, 0, 0.7f, 10);
    check_frequencies(L8, 8, 1.0f, 0, 0.7f, 11);
    check_frequencies(L8, 8, 1.0f, 0, 0.95f, 12);
}

/* The nucleus is taken from the top-k survivors renormalised: at T 0.7 the
 * top 3 renormalise id 1 to 0.553, which alone passes top_p 0.5 (on the full
 * softmax the nucleus would be {1, 4}). */
Test(sample, top_p_applies_after_top_k_and_temperature_before_both)
{
    cr_assert_eq(support_size(L8, 8, 0.7f, 3, 0.5f), 1, "oracle sanity");
    check_frequencies(L8, 8, 0.7f, 3, 0.5f, 13);
    check_frequencies(L8, 8, 0.7f, 3, 0.8f, 14);
    check_frequencies(L8, 8, 1.3f, 4, 0.9f, 15);
}

Test(sample, top_p_one_is_no_filter)
{
    /* ids 2 and 5 hold 0.7% and 0.2% at T 0.7: they must still be drawn */
    check_frequencies(L8, 8, 0.7f, 0, 1.0f, 16);
    gk_gen_opts o = sample_opts(0.7f, 0, 1.0f);
    gk_rng rng;
    gk_rng_seed(&rng, 17);
    long tail = 0;
    for (int d = 0; d < N_DRAWS; d++) {
        int32_t t = gk_sample(L8, 8, &o, &rng);
        tail += t == 5;
    }
    cr_expect_gt(tail, 0, "the least likely id was never drawn with top_p 1");
}

/* Four equal logits hold exactly 0.25 each. transformers removes a token when
 * the ascending cumulative mass up to it is <= 1 - top_p, i.e. keeps the
 * smallest top set whose mass reaches top_p: 1, 2, 3 and 4 tokens for top_p
 * 0.25, 0.5, 0.75 and 1 (with top_p an exact float). */
Test(sample, top_p_keeps_the_smallest_set_whose_mass_reaches_p_exactly)
{
    static const float flat[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const float ps[4] = {0.25f, 0.5f, 0.75f, 1.0f};
    for (int k = 0; k < 4; k++) {
        gk_gen_opts o = sample_opts(1.0f, 0, ps[k]);
        gk_rng rng;
        gk_rng_seed(&rng, 30 + (uint64_t)k);
        long count[4] = {0};
        for (int d = 0; d < N_DRAWS; d++) {
            int32_t t = gk_sample(flat, 4, &o, &rng);
            cr_assert(t >= 0 && t < 4);
            count[t]++;
        }
        int support = 0;
        for (int i = 0; i < 4; i++)
            support += count[i] > 0;
        cr_expect_eq(support, k + 1, "top_p %g over 4 equal tokens drew %d distinct ids, want %d", ps[k], support,
                     k + 1);
        double q = 1.0 / (k + 1), se = sqrt(q * (1 - q) / N_DRAWS);
        for (int i = 0; i < 4; i++)
            if (count[i])
                cr_expect_leq(fabs((double)count[i] / N_DRAWS - q), 4 * se + 1e-12,
                              "top_p %g: id %d frequency %.5f, want %.5f", ps[k], i, (double)count[i] / N_DRAWS, q);
    }
}

/* transformers' TopK keeps every token whose score equals the k-th one. */
Test(sample, top_k_keeps_every_token_tied_with_the_kth)
{
    static const float tied[8] = {3.0f, 2.0f, 2.0f, 2.0f, 1.0f, 0.0f, -1.0f, 0.5f};
    cr_assert_eq(support_size(tied, 8, 1.0f, 2, 1.0f), 4, "oracle sanity");
    check_frequencies(tied, 8, 1.0f, 2, 1.0f, 18);
    check_frequencies(tied, 8, 1.0f, 3, 1.0f, 19);
    check_frequencies(tied, 8, 0.5f, 4, 1.0f, 20);
    check_frequencies(tied, 8, 1.0f, 5, 1.0f, 21);
}

/* The same rule at k = 1: two ids tied for the maximum are both kept, so both
 * are drawn about half the time each (TopKLogitsWarper removes only scores
 * strictly below the k-th; transformers has no top_k = 1 shortcut).
 * top_k = 1 is not greedy: like transformers it keeps every token tied for
 * the maximum and draws among them. */
Test(sample, top_k_one_keeps_every_token_tied_for_the_max)
{
    static const float tied_max[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.0f};
    cr_assert_eq(support_size(tied_max, 6, 1.0f, 1, 1.0f), 2, "oracle sanity");
    check_frequencies(tied_max, 6, 1.0f, 1, 1.0f, 22);
}

Test(sample, greedy_settings_return_the_argmax)
{
    gk_rng rng;
    gk_rng_seed(&rng, 23);
    const struct { float t; int k; float p; } cases[] = {
        {0.0f, 0, 1.0f}, {0.0f, 5, 0.5f}, {1.0f, 1, 1.0f}, {5.0f, 1, 1.0f}, {1.0f, 0, 1e-6f}, {3.0f, 0, 1e-6f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gk_gen_opts o = sample_opts(cases[c].t, cases[c].k, cases[c].p);
        for (int d = 0; d < 2000; d++) {
            int32_t t = gk_sample(L8, 8, &o, &rng);
            cr_assert_eq(t, 1, "T %g top_k %d top_p %g drew %d, argmax is 1", cases[c].t, cases[c].k, cases[c].p, t);
        }
    }
    /* an argmax tie at temperature 0 goes to the lowest id, as torch.argmax */
    static const float tie[5] = {0.0f, 1.0f, 3.0f, -2.0f, 3.0f};
    gk_gen_opts o = sample_opts(0.0f, 0, 1.0f);
    cr_expect_eq(gk_sample(tie, 5, &o, &rng), 2);
}

Test(sample, same_seed_same_draws_different_seed_different_draws)
{
    gk_gen_opts o = sample_opts(1.0f, 0, 1.0f);
    gk_rng a, b, c;
    gk_rng_seed(&a, 42);
    gk_rng_seed(&b, 42);
    gk_rng_seed(&c, 43);
    int same_ab = 0, same_ac = 0;
    for (int d = 0; d < 1000; d++) {
        int32_t x = gk_sample(L8, 8, &o, &a), y = gk_sample(L8, 8, &o, &b), z = gk_sample(L8, 8, &o, &c);
        same_ab += x == y;
        same_ac += x == z;
    }
    cr_expect_eq(same_ab, 1000);
    /* independent streams agree with probability sum(q^2) ~ 0.24 per draw */
    cr_expect_lt(same_ac, 400, "seeds 42 and 43 agree on %d of 1000 draws", same_ac);
}

/* Lowest index of the largest non-NaN value: the oracle for greedy picks. */
static int32_t oracle_argmax(const float *x, int n)
{
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best]))
            best = i;
    return best < 0 ? 0 : best;
}

/* As T -> 0 the softmax of logits / T puts all its mass on the argmax. A
 * positive temperature so small that logit / T overflows float (to inf, or
 * every score to -inf) must give that limit, the greedy pick, not a NaN
 * softmax's arbitrary token. */
Test(sample, temperature_so_small_that_logits_over_it_overflow_gives_the_argmax)
{
    static const float big[6] = {10.0f, 25.0f, -3.0f, 20.0f, 24.5f, 0.0f};
    static const float neg[5] = {-5.0f, -1.0f, -3.0f, -2.0f, -1.5f};
    const float temps[] = {1e-38f, 1e-40f, 1e-45f};
    const struct { int k; float p; } filters[] = {{0, 1.0f}, {3, 1.0f}, {0, 0.5f}, {2, 0.9f}};
    gk_rng rng;
    gk_rng_seed(&rng, 31);
    for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
        for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
            gk_gen_opts o = sample_opts(temps[t], filters[f].k, filters[f].p);
            gk_gen_opts g = sample_opts(0.0f, filters[f].k, filters[f].p);
            for (int d = 0; d < 200; d++) {
                int32_t x = gk_sample(big, 6, &o, &rng), y = gk_sample(neg, 5, &o, &rng);
                cr_assert_eq(x, oracle_argmax(big, 6), "T %g top_k %d top_p %g: drew %d", (double)temps[t],
                             filters[f].k, (double)filters[f].p, x);
                cr_assert_eq(x, gk_sample(big, 6, &g, &rng), "T %g: not the greedy pick", (double)temps[t]);
                cr_assert_eq(y, oracle_argmax(neg, 5), "T %g top_k %d top_p %g, negative logits: drew %d",
                             (double)temps[t], filters[f].k, (double)filters[f].p, y);
            }
        }
    }
}

/* A NaN logit is never picked: greedy takes the largest of the others, a draw
 * never lands on it; only when every logit is NaN does id 0 come back. */
Test(sample, nan_logits_are_never_picked)
{
    static const float with_nan[6] = {NAN, 1.0f, 3.0f, NAN, 2.0f, 0.5f};
    static const float all_nan[3] = {NAN, NAN, NAN};
    gk_rng rng;
    gk_rng_seed(&rng, 37);
    gk_gen_opts greedy = sample_opts(0.0f, 0, 1.0f);
    cr_expect_eq(gk_sample(with_nan, 6, &greedy, &rng), 2);
    cr_expect_eq(gk_sample(all_nan, 3, &greedy, &rng), 0);
    const float temps[] = {1.0f, 1e-45f};
    for (size_t t = 0; t < 2; t++) {
        gk_gen_opts o = sample_opts(temps[t], 0, 1.0f);
        long count[6] = {0};
        for (int d = 0; d < 20000; d++) {
            int32_t x = gk_sample(with_nan, 6, &o, &rng);
            cr_assert(x >= 0 && x < 6, "T %g drew %d", (double)temps[t], x);
            count[x]++;
        }
        cr_expect_eq(count[0] + count[3], 0, "T %g: NaN ids drawn %ld and %ld times", (double)temps[t], count[0],
                     count[3]);
        cr_expect_gt(count[2], 0);
        cr_expect_eq(gk_sample(all_nan, 3, &o, &rng), 0, "T %g, all NaN", (double)temps[t]);
    }
}

/* gk_sample answers -1 for options generate would refuse. */
Test(sample, non_finite_temperature_or_out_of_range_top_p_gives_minus_one)
{
    gk_rng rng;
    gk_rng_seed(&rng, 41);
    const float bad_t[] = {NAN, INFINITY, -INFINITY, -1.0f};
    for (size_t i = 0; i < sizeof bad_t / sizeof bad_t[0]; i++) {
        gk_gen_opts o = sample_opts(bad_t[i], 0, 1.0f);
        cr_expect_eq(gk_sample(L8, 8, &o, &rng), -1, "temperature %g", (double)bad_t[i]);
    }
    const float bad_p[] = {NAN, 0.0f, -0.5f, 1.5f, INFINITY};
    for (size_t i = 0; i < sizeof bad_p / sizeof bad_p[0]; i++) {
        gk_gen_opts o = sample_opts(1.0f, 0, bad_p[i]);
        cr_expect_eq(gk_sample(L8, 8, &o, &rng), -1, "top_p %g", (double)bad_p[i]);
    }
    gk_gen_opts o = sample_opts(1.0f, -2, 1.0f);
    cr_expect_eq(gk_sample(L8, 8, &o, &rng), -1, "top_k -2");
}

/* ------------------------------------------------------- generation */

static void model_dir(const char *model, char *buf, size_t len)
{
    const char *root = getenv("GK_TEST_DATA");
    snprintf(buf, len, "%s/models/%s", root ? root : "data", model);
}

typedef struct fixture {
    gk_runtime *rt;
    gk_model *m;
    int32_t *gen;      /* golden gen.ids: prompt p1 then 20 greedy tokens */
    int64_t n_gen;
    int64_t n_prompt;  /* 7 */
    int64_t n_vocab;
} fixture;

static fixture open_model(const char *model, int64_t n_ctx)
{
    fixture f = {0};
    gk_err err = {0};
    char dir[1024], path[1100];
    model_dir(model, dir, sizeof dir);
    cr_assert_eq(gk_runtime_create(NULL, &f.rt, &err), GK_OK, "%s", err.msg);
    gk_model_opts mo = {.backend = "cpu_ref", .dtype = "f32", .n_ctx = n_ctx};
    cr_assert_eq(gk_model_load(f.rt, dir, &mo, &f.m, &err), GK_OK, "%s: %s", dir, err.msg);
    f.n_vocab = gk_model_config(f.m)->n_vocab;

    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    gk_safetensors *g;
    cr_assert_eq(gk_safetensors_open(path, &g, &err), GK_OK, "%s", err.msg);
    gk_tensor_info ti;
    cr_assert_eq(gk_safetensors_info(g, "gen.ids", &ti, &err), GK_OK, "%s", err.msg);
    f.n_gen = ti.shape[0];
    int64_t tmp[64];
    cr_assert_leq(f.n_gen, 64);
    cr_assert_eq(gk_safetensors_read_i64(g, "gen.ids", tmp, (size_t)f.n_gen, &err), GK_OK, "%s", err.msg);
    f.gen = malloc((size_t)f.n_gen * sizeof *f.gen);
    cr_assert(f.gen);
    for (int64_t i = 0; i < f.n_gen; i++)
        f.gen[i] = (int32_t)tmp[i];
    cr_assert_eq(gk_safetensors_info(g, "p1.ids", &ti, &err), GK_OK, "%s", err.msg);
    f.n_prompt = ti.shape[0];
    gk_safetensors_close(g);
    return f;
}

static void close_model(fixture *f)
{
    free(f->gen);
    gk_model_destroy(f->m);
    gk_runtime_destroy(f->rt);
}

/* Generate from the golden prompt; returns n_out, asserting GK_OK. */
static int64_t gen_ok(fixture *f, const gk_gen_opts *o, int32_t *out)
{
    int64_t n_out = -1;
    gk_err err = {0};
    cr_assert_eq(gk_model_generate(f->m, f->gen, f->n_prompt, o, out, &n_out, NULL, &err), GK_OK, "%s", err.msg);
    return n_out;
}

static gk_gen_opts gen_opts(int64_t max_new)
{
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = max_new;
    return o;
}

static const char *const gen_models[] = {"llama-tiny", "gpt2-tiny", "qwen3-tiny", "llama-tiny-f16-sharded"};

Test(generate, greedy_reproduces_the_golden_continuation_with_and_without_cache)
{
    for (size_t mi = 0; mi < sizeof gen_models / sizeof gen_models[0]; mi++) {
        fixture f = open_model(gen_models[mi], 0);
        int64_t n_new = f.n_gen - f.n_prompt;
        cr_assert_eq(n_new, 20);
        for (int cache = 1; cache >= 0; cache--) {
            gk_gen_opts o = gen_opts(n_new);
            o.use_cache = cache;
            int32_t out[32] = {0};
            gk_gen_stats st = {0};
            int64_t n_out = -1;
            gk_err err = {0};
            cr_assert_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, &st, &err), GK_OK, "%s",
                         err.msg);
            cr_expect_eq(n_out, n_new, "%s cache %d", gen_models[mi], cache);
            for (int64_t i = 0; i < n_out && i < n_new; i++)
                cr_expect_eq(out[i], f.gen[f.n_prompt + i], "%s cache %d: token %lld is %d, golden %d",
                             gen_models[mi], cache, (long long)i, out[i], f.gen[f.n_prompt + i]);
            cr_expect_eq(st.n_prompt, f.n_prompt);
            cr_expect_eq(st.n_gen, n_out);
            cr_expect(st.t_prefill_s >= 0 && st.t_decode_s >= 0);
            /* the cache holds prompt and output but the last, which was never fed */
            cr_expect_eq(gk_model_n_past(f.m), f.n_prompt + n_out - 1, "%s cache %d", gen_models[mi], cache);
            /* generate leaves no forward call whose logits or nodes could be read */
            float one[1];
            cr_expect_eq(gk_model_logits(f.m, one, &err), GK_ERR_INVALID_ARG, "%s", gen_models[mi]);
            cr_expect(strstr(err.msg, "generate ran since"), "%s", err.msg);
            cr_expect_eq(gk_model_node_count(f.m), 0);
        }
        close_model(&f);
    }
}

Test(generate, generate_starts_from_an_empty_cache)
{
    fixture f = open_model("llama-tiny", 0);
    gk_err err = {0};
    /* leave unrelated tokens in the cache first */
    int32_t junk[5] = {9, 8, 7, 6, 5};
    cr_assert_eq(gk_model_forward(f.m, junk, 5, NULL, &err), GK_OK, "%s", err.msg);
    gk_gen_opts o = gen_opts(20);
    int32_t out[20];
    cr_assert_eq(gen_ok(&f, &o, out), 20);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(out[i], f.gen[f.n_prompt + i], "token %d", i);
    close_model(&f);
}

/* Oracle for sampled generation: the whole sequence through gk_model_forward
 * each step, its last row of logits into gk_sample with one rng seeded once. */
static void oracle_sampled(fixture *f, const gk_gen_opts *o, int64_t n_new, int32_t *out)
{
    int32_t seq[64];
    int64_t len = f->n_prompt;
    memcpy(seq, f->gen, (size_t)len * sizeof *seq);
    float *logits = malloc((size_t)(64 * f->n_vocab) * sizeof *logits);
    cr_assert(logits);
    gk_rng rng;
    gk_rng_seed(&rng, o->seed);
    gk_err err = {0};
    for (int64_t s = 0; s < n_new; s++) {
        cr_assert_eq(gk_model_truncate(f->m, 0, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_forward(f->m, seq, len, NULL, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_logits(f->m, logits, &err), GK_OK, "%s", err.msg);
        int32_t t = gk_sample(logits + (len - 1) * f->n_vocab, f->n_vocab, o, &rng);
        out[s] = seq[len++] = t;
    }
    free(logits);
}

static void check_sampled(const char *model)
{
    fixture f = open_model(model, 0);
    gk_gen_opts o = gen_opts(20);
    o.temperature = 1.0f;
    o.seed = 1234;
    int32_t a[20], b[20], c[20], nc[20], want[20];
    cr_assert_eq(gen_ok(&f, &o, a), 20);
    cr_assert_eq(gen_ok(&f, &o, b), 20);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(a[i], b[i], "%s: same seed, token %d differs", model, i);

    oracle_sampled(&f, &o, 20, want);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(a[i], want[i], "%s: token %d is %d, the forward+gk_sample loop gives %d", model, i, a[i],
                     want[i]);

    o.use_cache = false;
    cr_assert_eq(gen_ok(&f, &o, nc), 20);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(nc[i], a[i], "%s: use_cache=false token %d differs", model, i);

    o.use_cache = true;
    o.seed = 98765;
    cr_assert_eq(gen_ok(&f, &o, c), 20);
    int same = 0;
    for (int i = 0; i < 20; i++)
        same += a[i] == c[i];
    cr_expect_lt(same, 20, "%s: seeds 1234 and 98765 give the same 20 tokens", model);

    /* with filters too, cache on and off agree */
    o.top_k = 40;
    o.top_p = 0.9f;
    o.temperature = 0.8f;
    cr_assert_eq(gen_ok(&f, &o, a), 20);
    o.use_cache = false;
    cr_assert_eq(gen_ok(&f, &o, nc), 20);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(nc[i], a[i], "%s: top_k/top_p, use_cache=false token %d differs", model, i);
    close_model(&f);
}

Test(generate, seeded_sampling_is_reproducible_seed_dependent_and_cache_independent_llama)
{
    check_sampled("llama-tiny");
}

Test(generate, seeded_sampling_is_reproducible_seed_dependent_and_cache_independent_gpt2)
{
    check_sampled("gpt2-tiny");
}

Test(generate, top_k_one_at_temperature_one_is_greedy)
{
    for (size_t mi = 0; mi < 2; mi++) {
        fixture f = open_model(gen_models[mi], 0);
        gk_gen_opts o = gen_opts(20);
        o.temperature = 1.0f;
        o.top_k = 1;
        o.seed = 5;
        int32_t out[20];
        cr_assert_eq(gen_ok(&f, &o, out), 20);
        for (int i = 0; i < 20; i++)
            cr_expect_eq(out[i], f.gen[f.n_prompt + i], "%s token %d", gen_models[mi], i);
        close_model(&f);
    }
}

Test(generate, max_new_tokens_is_respected)
{
    fixture f = open_model("llama-tiny", 0);
    const int64_t counts[] = {1, 3, 13};
    for (size_t c = 0; c < 3; c++) {
        gk_gen_opts o = gen_opts(counts[c]);
        int32_t out[21];
        for (int i = 0; i < 21; i++)
            out[i] = -7;
        cr_expect_eq(gen_ok(&f, &o, out), counts[c]);
        for (int64_t i = 0; i < counts[c]; i++)
            cr_expect_eq(out[i], f.gen[f.n_prompt + i]);
        cr_expect_eq(out[counts[c]], -7, "wrote past max_new_tokens = %lld", (long long)counts[c]);
    }
    gk_gen_opts o = gen_opts(0);
    int32_t sentinel = -7;
    cr_expect_eq(gen_ok(&f, &o, &sentinel), 0);
    cr_expect_eq(sentinel, -7, "max_new_tokens 0 wrote a token");
    close_model(&f);
}

/* The first step at or after `from` whose golden token did not come earlier. */
static int64_t first_new_token_step(const fixture *f, int64_t from)
{
    const int32_t *cont = f->gen + f->n_prompt;
    for (int64_t s = from; s < f->n_gen - f->n_prompt; s++) {
        bool seen = false;
        for (int64_t j = 0; j < s; j++)
            seen = seen || cont[j] == cont[s];
        if (!seen)
            return s;
    }
    return -1;
}

Test(generate, eos_stops_after_emitting_it)
{
    fixture f = open_model("llama-tiny", 0);
    const int32_t *cont = f.gen + f.n_prompt;
    cr_assert_eq(first_new_token_step(&f, 5), 5, "fixture: step 5 of llama-tiny is a new token");
    int64_t eos = cont[5];
    gk_gen_opts o = gen_opts(20);
    o.eos_ids = &eos;
    o.n_eos = 1;
    int32_t out[20];
    int64_t n = gen_ok(&f, &o, out);
    cr_expect_eq(n, 6);
    cr_expect_eq(out[n - 1], eos);
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(out[i], cont[i]);

    /* several ids: the first one emitted stops; absent ones change nothing */
    int64_t several[] = {100000, cont[8], -3, cont[5]};
    o.eos_ids = several;
    o.n_eos = 4;
    cr_expect_eq(gen_ok(&f, &o, out), 6);
    int64_t absent[] = {100000, -3};
    o.eos_ids = absent;
    o.n_eos = 2;
    cr_expect_eq(gen_ok(&f, &o, out), 20);
    /* also without the cache */
    o.eos_ids = &eos;
    o.n_eos = 1;
    o.use_cache = false;
    cr_expect_eq(gen_ok(&f, &o, out), 6);
    close_model(&f);
}

Test(generate, eos_stops_at_its_first_occurrence_gpt2)
{
    fixture f = open_model("gpt2-tiny", 0);
    const int32_t *cont = f.gen + f.n_prompt;
    /* gpt2-tiny repeats tokens: EOS = step 5's token stops at its first occurrence */
    int64_t eos = cont[5], first = 0;
    while (cont[first] != eos)
        first++;
    gk_gen_opts o = gen_opts(20);
    o.eos_ids = &eos;
    o.n_eos = 1;
    int32_t out[20];
    int64_t n = gen_ok(&f, &o, out);
    cr_expect_eq(n, first + 1);
    cr_expect_eq(out[n - 1], eos);
    close_model(&f);
}

typedef struct seen {
    int32_t toks[64];
    int n;
    int stop_after; /* return false on this call (1-based); 0 never */
} seen;

static bool record(int32_t t, void *user)
{
    seen *s = user;
    if (s->n < 64)
        s->toks[s->n] = t;
    s->n++;
    return !(s->stop_after && s->n == s->stop_after);
}

Test(generate, on_token_sees_every_token_in_order_and_false_stops)
{
    fixture f = open_model("llama-tiny", 0);
    seen s = {0};
    gk_gen_opts o = gen_opts(20);
    o.on_token = record;
    o.user = &s;
    int32_t out[20];
    int64_t n = gen_ok(&f, &o, out);
    cr_expect_eq(n, 20);
    cr_expect_eq(s.n, 20);
    for (int i = 0; i < 20; i++) {
        cr_expect_eq(s.toks[i], out[i], "callback token %d", i);
        cr_expect_eq(s.toks[i], f.gen[f.n_prompt + i], "callback token %d vs golden", i);
    }

    s = (seen){.stop_after = 3};
    n = gen_ok(&f, &o, out);
    cr_expect_eq(s.n, 3, "callback called %d times after returning false on call 3", s.n);
    cr_expect_eq(n, 3, "the token the callback saw last is the last one out");
    for (int i = 0; i < 3; i++)
        cr_expect_eq(out[i], f.gen[f.n_prompt + i]);

    /* the EOS token is passed to the callback too, and nothing after it */
    int64_t eos = f.gen[f.n_prompt + 5];
    s = (seen){0};
    o.eos_ids = &eos;
    o.n_eos = 1;
    n = gen_ok(&f, &o, out);
    cr_expect_eq(n, 6);
    cr_expect_eq(s.n, 6);
    cr_expect_eq(s.toks[5], eos);
    close_model(&f);
}

Test(generate, prompt_plus_new_tokens_beyond_the_context_is_invalid_arg)
{
    fixture f = open_model("llama-tiny", 16);
    /* the last token is never fed back: 7 + 10 needs 16 cache rows */
    for (int cache = 1; cache >= 0; cache--) {
        gk_gen_opts o = gen_opts(10);
        o.use_cache = cache;
        int32_t out[16];
        cr_expect_eq(gen_ok(&f, &o, out), 10, "cache %d", cache);
        for (int i = 0; i < 10; i++)
            cr_expect_eq(out[i], f.gen[f.n_prompt + i], "cache %d token %d", cache, i);
        o.max_new_tokens = 11;
        int64_t n_out = -1;
        gk_err err = {0};
        cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG,
                     "cache %d", cache);
        cr_expect_eq(n_out, 0);
        cr_expect(strstr(err.msg, "context") && strstr(err.msg, "16"), "message should give the context: %s",
                  err.msg);
    }
    /* a prompt alone longer than the context */
    int32_t long_prompt[20];
    for (int i = 0; i < 20; i++)
        long_prompt[i] = f.gen[i];
    gk_gen_opts o = gen_opts(1);
    int32_t out[1];
    int64_t n_out = -1;
    gk_err err = {0};
    cr_expect_eq(gk_model_generate(f.m, long_prompt, 20, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG);
    /* and the model still generates correctly afterwards */
    o.max_new_tokens = 5;
    int32_t again[5];
    cr_expect_eq(gen_ok(&f, &o, again), 5);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(again[i], f.gen[f.n_prompt + i]);
    close_model(&f);
}

/* A max_new_tokens so large that prompt + max_new_tokens overflows int64 is
 * still beyond the context.
 * A max_new_tokens near INT64_MAX is refused, not overflowed into a tiny
 * buffer. */
Test(generate, huge_max_new_tokens_is_invalid_arg_not_an_overflow)
{
    fixture f = open_model("llama-tiny", 16);
    gk_gen_opts o = gen_opts(INT64_MAX);
    int32_t out[32];
    int64_t n_out = -1;
    gk_err err = {0};
    cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG,
                 "%s", err.msg);
    cr_expect_eq(n_out, 0);
    close_model(&f);
}

Test(generate, out_of_range_options_are_invalid_arg)
{
    fixture f = open_model("llama-tiny", 0);
    const float bad_p[] = {0.0f, -0.5f, 1.0001f, 2.0f};
    int32_t out[4];
    for (size_t i = 0; i < 4; i++) {
        gk_gen_opts o = gen_opts(4);
        o.temperature = 1.0f;
        o.top_p = bad_p[i];
        int64_t n_out = -1;
        gk_err err = {0};
        cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG,
                     "top_p %g", bad_p[i]);
        cr_expect(strstr(err.msg, "top_p"), "%s", err.msg);
        cr_expect_eq(n_out, 0);
    }
    gk_gen_opts o = gen_opts(4);
    int64_t n_out = -1;
    gk_err err = {0};
    o.temperature = -1.0f;
    cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG);
    o = gen_opts(4);
    o.top_k = -1;
    cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG);
    o = gen_opts(-2);
    cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG);
    o = gen_opts(4);
    cr_expect_eq(gk_model_generate(f.m, f.gen, 0, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG, "empty prompt");
    int32_t bad_prompt[2] = {1, (int32_t)f.n_vocab};
    cr_expect_eq(gk_model_generate(f.m, bad_prompt, 2, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG,
                 "token outside the vocabulary");
    cr_expect_eq(n_out, 0);
    /* top_p exactly 1 is allowed */
    o.top_p = 1.0f;
    cr_expect_eq(gen_ok(&f, &o, out), 4);
    close_model(&f);
}

/* NaN or infinite temperature and NaN top_p are refused before any work,
 * with the rule in the message, instead of generating garbage. */
Test(generate, non_finite_temperature_or_nan_top_p_is_invalid_arg_naming_the_rule)
{
    fixture f = open_model("llama-tiny", 0);
    int32_t out[4];
    const float bad_t[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_t / sizeof bad_t[0]; i++) {
        gk_gen_opts o = gen_opts(4);
        o.temperature = bad_t[i];
        int64_t n_out = -1;
        gk_err err = {0};
        cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG,
                     "temperature %g", (double)bad_t[i]);
        cr_expect(strstr(err.msg, "temperature must be a finite number >= 0"), "%s", err.msg);
        cr_expect_eq(n_out, 0);
    }
    gk_gen_opts o = gen_opts(4);
    o.temperature = 1.0f;
    o.top_p = NAN;
    int64_t n_out = -1;
    gk_err err = {0};
    cr_expect_eq(gk_model_generate(f.m, f.gen, f.n_prompt, &o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "top_p must be in (0, 1]"), "%s", err.msg);
    cr_expect_eq(n_out, 0);
    close_model(&f);
}

/* A temperature far below any logit's scale (logit / T overflows float) is
 * the greedy limit: the golden greedy continuation, with the cache and
 * without. */
Test(generate, tiny_temperature_generates_the_greedy_continuation)
{
    const float temps[] = {1e-38f, 1e-45f};
    for (size_t mi = 0; mi < 2; mi++) {
        fixture f = open_model(gen_models[mi], 0);
        for (size_t t = 0; t < 2; t++) {
            for (int cache = 1; cache >= 0; cache--) {
                gk_gen_opts o = gen_opts(20);
                o.temperature = temps[t];
                o.seed = 3;
                o.use_cache = cache;
                int32_t out[20];
                cr_assert_eq(gen_ok(&f, &o, out), 20);
                for (int i = 0; i < 20; i++)
                    cr_expect_eq(out[i], f.gen[f.n_prompt + i], "%s T %g cache %d: token %d is %d, greedy %d",
                                 gen_models[mi], (double)temps[t], cache, i, out[i], f.gen[f.n_prompt + i]);
            }
        }
        close_model(&f);
    }
}
