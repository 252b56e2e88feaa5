/* test_sampling.c - the sampler chain's penalties and min-p, its order, and
 * what generate does with them: max_new_tokens -1, finish reasons, stop
 * strings, keep_cache.
 *
 * The references are computed by hand in the comments on tiny logit vectors:
 * greedy picks for the penalties (argmax of the penalised logits), and the
 * survivors of the chain for min-p and the order (drawn many times: exactly
 * the survivors appear, with their renormalised frequencies).
 */
#include <criterion/criterion.h>

#include "gk/gk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gk_gen_opts greedy(void)
{
    gk_gen_opts o = gk_gen_opts_default();
    o.penalty_last_n = -1;
    return o;
}

static int32_t pick(const float *l, int n, const gk_gen_opts *o, const int32_t *h, int nh)
{
    gk_rng r;
    gk_rng_seed(&r, 1);
    return gk_sample_ex(l, n, o, h, nh, &r);
}

/* ------------------------------------------------------------ penalties */

Test(penalty, repetition_divides_positive_and_multiplies_negative_logits)
{
    gk_gen_opts o = greedy();
    o.repetition_penalty = 2.0f;
    /* [2, 1.5, -1, -0.8], seen {0, 2}: 2 / 2 = 1, -1 * 2 = -2 -> [1, 1.5, -2, -0.8]: 1 */
    const float l[4] = {2.0f, 1.5f, -1.0f, -0.8f};
    const int32_t h[2] = {0, 2};
    cr_expect_eq(pick(l, 4, &o, h, 2), 1);
    cr_expect_eq(pick(l, 4, &o, NULL, 0), 0, "no history: no penalty");
    cr_expect_eq(gk_sample(l, 4, &o, NULL), 0, "gk_sample has no history");
    /* negative: [-1, -1.5], seen {0}: -1 * 2 = -2 < -1.5: 1 (dividing would give -0.5: 0) */
    const float n[2] = {-1.0f, -1.5f};
    const int32_t h0[1] = {0};
    cr_expect_eq(pick(n, 2, &o, h0, 1), 1);
    /* once however often seen: [3, 1], seen {0,0,0}: 3 / 2 = 1.5 > 1: 0
     * (three times would be 0.375: 1) */
    const float r[2] = {3.0f, 1.0f};
    const int32_t h3[3] = {0, 0, 0};
    cr_expect_eq(pick(r, 2, &o, h3, 3), 0);
    /* below 1 it rewards: [1, 1.5], seen {0}, p 0.5: 1 / 0.5 = 2: 0 */
    o.repetition_penalty = 0.5f;
    const float w[2] = {1.0f, 1.5f};
    cr_expect_eq(pick(w, 2, &o, h0, 1), 0);
}

Test(penalty, frequency_counts_and_presence_once)
{
    /* [3, 2, 1], seen {0, 0, 1} (counts 2 and 1) */
    const float l[3] = {3.0f, 2.0f, 1.0f};
    const int32_t h[3] = {0, 0, 1};
    gk_gen_opts o = greedy();
    /* presence 1.1: [1.9, 0.9, 1]: 0 */
    o.presence_penalty = 1.1f;
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    /* frequency 0.5: [2, 1.5, 1]: 0 */
    o = greedy();
    o.frequency_penalty = 0.5f;
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    /* both: 3 - 2 * 0.5 - 1.1 = 0.9, 2 - 0.5 - 1.1 = 0.4, 1: 2 */
    o.presence_penalty = 1.1f;
    cr_expect_eq(pick(l, 3, &o, h, 3), 2);
    /* frequency 1.2: [0.6, 0.8, 1]: 2; frequency 0.8: [1.4, 1.2, 1]: 0 */
    o = greedy();
    o.frequency_penalty = 1.2f;
    cr_expect_eq(pick(l, 3, &o, h, 3), 2);
    o.frequency_penalty = 0.8f;
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    /* presence once: [3, 2.5], seen {0,0,0}, presence 0.4: 2.6 > 2.5: 0
     * (per occurrence it would be 1.8: 1) */
    const float p[2] = {3.0f, 2.5f};
    const int32_t h3[3] = {0, 0, 0};
    o = greedy();
    o.presence_penalty = 0.4f;
    cr_expect_eq(pick(p, 2, &o, h3, 3), 0);
    /* a negative presence rewards: [1, 2], seen {0}, -1.5: 2.5: 0 */
    const float q[2] = {1.0f, 2.0f};
    o.presence_penalty = -1.5f;
    cr_expect_eq(pick(q, 2, &o, h3, 1), 0);
}

Test(penalty, repetition_applies_before_presence)
{
    /* [4, 1.2], seen {0}, repetition 2, presence 1: 4 / 2 - 1 = 1 < 1.2: 1
     * (the other order, (4 - 1) / 2 = 1.5, would pick 0) */
    const float l[2] = {4.0f, 1.2f};
    const int32_t h[1] = {0};
    gk_gen_opts o = greedy();
    o.repetition_penalty = 2.0f;
    o.presence_penalty = 1.0f;
    cr_expect_eq(pick(l, 2, &o, h, 1), 1);
}

Test(penalty, window_is_the_last_n_ids_all_or_none)
{
    /* [2, 1.9, 0], history {0, 2, 2}, presence 1 */
    const float l[3] = {2.0f, 1.9f, 0.0f};
    const int32_t h[3] = {0, 2, 2};
    gk_gen_opts o = greedy();
    o.presence_penalty = 1.0f;
    o.penalty_last_n = 2; /* {2, 2}: 0 unpenalised: 0 */
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    o.penalty_last_n = 3; /* {0, 2, 2}: [1, 1.9, -1]: 1 */
    cr_expect_eq(pick(l, 3, &o, h, 3), 1);
    o.penalty_last_n = 100; /* longer than the history: all of it */
    cr_expect_eq(pick(l, 3, &o, h, 3), 1);
    o.penalty_last_n = -1; /* the whole history */
    cr_expect_eq(pick(l, 3, &o, h, 3), 1);
    o.penalty_last_n = 0; /* off */
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    o.penalty_last_n = 1; /* {2} */
    cr_expect_eq(pick(l, 3, &o, h, 3), 0);
    /* ids outside the vocabulary in the history are ignored */
    const int32_t odd[3] = {-5, 7, 0};
    o.penalty_last_n = -1;
    cr_expect_eq(pick(l, 3, &o, odd, 3), 1);
}

/* ---------------------------------------------------- survivors by drawing */

#define DRAWS 40000

/* Draw DRAWS tokens; the frequencies match q (4 standard errors), and ids with
 * q 0 never appear. */
static void check_draws(const float *l, int n, const gk_gen_opts *o, const int32_t *h, int nh, const double *q)
{
    long count[16] = {0};
    gk_rng r;
    gk_rng_seed(&r, 77);
    for (int d = 0; d < DRAWS; d++) {
        int32_t t = gk_sample_ex(l, n, o, h, nh, &r);
        cr_assert(t >= 0 && t < n, "drew %d", t);
        count[t]++;
    }
    for (int i = 0; i < n; i++) {
        double f = (double)count[i] / DRAWS;
        if (q[i] == 0.0) {
            cr_expect_eq(count[i], 0, "id %d is filtered out but drawn %ld times", i, count[i]);
        } else {
            double se = sqrt(q[i] * (1 - q[i]) / DRAWS);
            cr_expect(fabs(f - q[i]) <= 4 * se + 1e-9, "id %d: frequency %g, expected %g", i, f, q[i]);
        }
    }
}

static void logs_of(const double *p, float *l, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)log(p[i]);
}

Test(min_p, drops_tokens_below_min_p_times_the_largest_probability)
{
    /* probabilities [0.5, 0.3, 0.15, 0.05] at temperature 1 */
    const double p[4] = {0.5, 0.3, 0.15, 0.05};
    float l[4];
    logs_of(p, l, 4);
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 1.0f;
    /* min_p 0.25: cut 0.125, survivors {0, 1, 2} renormalised by 0.95 */
    o.min_p = 0.25f;
    const double q1[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
    check_draws(l, 4, &o, NULL, 0, q1);
    /* min_p 0.5: cut 0.25, {0, 1} by 0.8 */
    o.min_p = 0.5f;
    const double q2[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
    check_draws(l, 4, &o, NULL, 0, q2);
    /* min_p 0.7: cut 0.35, {0} */
    o.min_p = 0.7f;
    const double q3[4] = {1, 0, 0, 0};
    check_draws(l, 4, &o, NULL, 0, q3);
    /* min_p 0: off */
    o.min_p = 0.0f;
    check_draws(l, 4, &o, NULL, 0, p);
    /* min_p 1 keeps every token tied with the largest: [1, 1, 0.5] logits 0 */
    const float t[3] = {0.0f, 0.0f, (float)log(0.5)};
    o.min_p = 1.0f;
    const double q4[3] = {0.5, 0.5, 0};
    check_draws(t, 3, &o, NULL, 0, q4);
    /* greedy: min-p never drops the argmax */
    o = gk_gen_opts_default();
    o.min_p = 0.9f;
    cr_expect_eq(gk_sample(l, 4, &o, NULL), 0);
}

Test(chain, min_p_applies_after_top_p)
{
    /* [0.6, 0.3, 0.1], top_p 0.65: 0.6 < 0.65, 0.9 >= it: {0, 1}; min_p 0.2:
     * cut 0.12 of the kept: both stay: {0, 1} as 2/3, 1/3. (min-p first:
     * {0, 1} renormalised to 2/3, 1/3, then top-p 0.65 keeps {0} alone.) */
    const double p[3] = {0.6, 0.3, 0.1};
    float l[3];
    logs_of(p, l, 3);
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 1.0f;
    o.top_p = 0.65f;
    o.min_p = 0.2f;
    const double q[3] = {2.0 / 3, 1.0 / 3, 0};
    check_draws(l, 3, &o, NULL, 0, q);
}

Test(chain, min_p_applies_after_temperature)
{
    /* [0.6, 0.3, 0.1] at T 2: proportional to the square roots 0.7746,
     * 0.5477, 0.3162 (sum 1.6385): [0.4727, 0.3343, 0.1930]; min_p 0.4: cut
     * 0.1891: all three stay. (At T 1 the cut 0.24 would drop id 2.) */
    const double p[3] = {0.6, 0.3, 0.1};
    float l[3];
    logs_of(p, l, 3);
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 2.0f;
    o.min_p = 0.4f;
    double s = sqrt(0.6) + sqrt(0.3) + sqrt(0.1);
    const double q[3] = {sqrt(0.6) / s, sqrt(0.3) / s, sqrt(0.1) / s};
    check_draws(l, 3, &o, NULL, 0, q);
}

Test(chain, penalties_apply_before_temperature)
{
    /* [2, 1.5], seen {0}, presence 1: [1, 1.5]; T 0.5: [2, 3]; p0 / p1 =
     * e^-1 = 0.37 < min_p 0.5: {1} alone. (Temperature first, [4, 3] - [1, 0]
     * = [3, 3], would keep both.) */
    const float l[2] = {2.0f, 1.5f};
    const int32_t h[1] = {0};
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 0.5f;
    o.presence_penalty = 1.0f;
    o.min_p = 0.5f;
    const double q[2] = {0, 1};
    check_draws(l, 2, &o, h, 1, q);
    /* penalties before top-k: [3, 2.9, 0], seen {0}, presence 1: [2, 2.9, 0];
     * top_k 1: {1} */
    const float k[3] = {3.0f, 2.9f, 0.0f};
    o = gk_gen_opts_default();
    o.temperature = 1.0f;
    o.top_k = 1;
    o.presence_penalty = 1.0f;
    const double qk[3] = {0, 1, 0};
    check_draws(k, 3, &o, h, 1, qk);
}

Test(validation, out_of_range_chain_options_give_minus_one)
{
    const float l[2] = {1.0f, 0.0f};
    const int32_t h[1] = {0};
    gk_rng r;
    gk_rng_seed(&r, 1);
    const float bad_min_p[] = {-0.1f, 1.5f, NAN};
    for (size_t i = 0; i < 3; i++) {
        gk_gen_opts o = gk_gen_opts_default();
        o.min_p = bad_min_p[i];
        cr_expect_eq(gk_sample_ex(l, 2, &o, h, 1, &r), -1, "min_p %g", (double)bad_min_p[i]);
    }
    const float bad_rep[] = {0.0f, -1.0f, INFINITY, NAN};
    for (size_t i = 0; i < 4; i++) {
        gk_gen_opts o = gk_gen_opts_default();
        o.repetition_penalty = bad_rep[i];
        cr_expect_eq(gk_sample_ex(l, 2, &o, h, 1, &r), -1, "repetition_penalty %g", (double)bad_rep[i]);
    }
    gk_gen_opts o = gk_gen_opts_default();
    o.presence_penalty = INFINITY;
    cr_expect_eq(gk_sample_ex(l, 2, &o, h, 1, &r), -1);
    o = gk_gen_opts_default();
    o.frequency_penalty = NAN;
    cr_expect_eq(gk_sample_ex(l, 2, &o, h, 1, &r), -1);
    o = gk_gen_opts_default();
    o.penalty_last_n = -2;
    cr_expect_eq(gk_sample_ex(l, 2, &o, h, 1, &r), -1);
    o = gk_gen_opts_default();
    cr_expect_eq(gk_sample_ex(l, 2, &o, NULL, 1, &r), -1, "history NULL with n_history 1");
    cr_expect_eq(gk_sample_ex(l, 2, &o, h, -1, &r), -1, "n_history -1");
    cr_expect_eq(gk_sample_ex(l, 2, &o, NULL, 0, &r), 0, "no history is fine");
    o.min_p = 1.0f;
    o.repetition_penalty = 1e-30f;
    o.penalty_last_n = -1;
    cr_expect_geq(gk_sample_ex(l, 2, &o, h, 1, &r), 0, "the edges of the ranges are allowed");
}

/* ------------------------------------------------------------- generate */

typedef struct fixture {
    gk_runtime *rt;
    gk_model *m;
    int32_t prompt[8];
    int64_t n_prompt; /* 7: the golden prompt p1 */
    int32_t golden[32]; /* its 20 greedy tokens */
    int64_t n_vocab;
} fixture;

static fixture open_model(const char *model, int64_t n_ctx)
{
    fixture f = {0};
    gk_err err = {0};
    const char *root = getenv("GK_TEST_DATA");
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/models/%s", root ? root : "data", model);
    cr_assert_eq(gk_runtime_create(NULL, &f.rt, &err), GK_OK, "%s", err.msg);
    gk_model_opts mo = {.backend = "cpu_ref", .dtype = "f32", .n_ctx = n_ctx};
    cr_assert_eq(gk_model_load(f.rt, dir, &mo, &f.m, &err), GK_OK, "%s: %s", dir, err.msg);
    f.n_vocab = gk_model_config(f.m)->n_vocab;
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    gk_safetensors *g;
    cr_assert_eq(gk_safetensors_open(path, &g, &err), GK_OK, "%s", err.msg);
    gk_tensor_info ti;
    cr_assert_eq(gk_safetensors_info(g, "p1.ids", &ti, &err), GK_OK, "%s", err.msg);
    f.n_prompt = ti.shape[0];
    cr_assert_eq(f.n_prompt, 7);
    int64_t tmp[64];
    cr_assert_eq(gk_safetensors_info(g, "gen.ids", &ti, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(ti.shape[0], 27);
    cr_assert_eq(gk_safetensors_read_i64(g, "gen.ids", tmp, 27, &err), GK_OK, "%s", err.msg);
    for (int i = 0; i < 7; i++)
        f.prompt[i] = (int32_t)tmp[i];
    for (int i = 0; i < 20; i++)
        f.golden[i] = (int32_t)tmp[7 + i];
    gk_safetensors_close(g);
    return f;
}

static void close_model(fixture *f)
{
    gk_model_destroy(f->m);
    gk_runtime_destroy(f->rt);
}

static gk_gen_opts gen_opts(int64_t max_new)
{
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = max_new;
    return o;
}

static int64_t gen(fixture *f, const int32_t *prompt, int64_t n_prompt, const gk_gen_opts *o, int32_t *out,
                   gk_gen_stats *st)
{
    int64_t n_out = -1;
    gk_err err = {0};
    cr_assert_eq(gk_model_generate(f->m, prompt, n_prompt, o, out, &n_out, st, &err), GK_OK, "%s", err.msg);
    return n_out;
}

/* The oracle: the whole sequence through gk_model_forward each step, its last
 * row into gk_sample_ex with the sequence as history. */
static void oracle(fixture *f, const gk_gen_opts *o, int64_t n_new, int32_t *out)
{
    int32_t seq[64];
    int64_t len = f->n_prompt;
    memcpy(seq, f->prompt, (size_t)len * sizeof *seq);
    float *logits = malloc((size_t)(64 * f->n_vocab) * sizeof *logits);
    cr_assert(logits);
    gk_rng rng;
    gk_rng_seed(&rng, o->seed);
    gk_err err = {0};
    for (int64_t s = 0; s < n_new; s++) {
        cr_assert_eq(gk_model_truncate(f->m, 0, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_forward(f->m, seq, len, NULL, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_logits(f->m, logits, &err), GK_OK, "%s", err.msg);
        int32_t t = gk_sample_ex(logits + (len - 1) * f->n_vocab, f->n_vocab, o, seq, len, &rng);
        cr_assert_geq(t, 0);
        out[s] = seq[len++] = t;
    }
    free(logits);
}

Test(generate, penalties_and_min_p_follow_the_host_chain_with_and_without_cache)
{
    const char *models[] = {"llama-tiny", "gpt2-tiny"};
    for (int mi = 0; mi < 2; mi++) {
        fixture f = open_model(models[mi], 0);
        for (int c = 0; c < 4; c++) {
            gk_gen_opts o = gen_opts(16);
            if (c == 0) { /* greedy with a strong repetition penalty over 4 ids */
                o.repetition_penalty = 3.0f;
                o.penalty_last_n = 4;
            } else if (c == 1) { /* greedy with presence and frequency, whole context */
                o.presence_penalty = 0.7f;
                o.frequency_penalty = 0.4f;
                o.penalty_last_n = -1;
            } else if (c == 2) { /* sampled with min-p */
                o.temperature = 1.3f;
                o.min_p = 0.1f;
                o.seed = 99;
            } else { /* everything */
                o.temperature = 0.9f;
                o.top_k = 40;
                o.top_p = 0.95f;
                o.min_p = 0.05f;
                o.repetition_penalty = 1.3f;
                o.frequency_penalty = 0.2f;
                o.presence_penalty = 0.1f;
                o.penalty_last_n = 8;
                o.seed = 5;
            }
            int32_t want[16];
            oracle(&f, &o, 16, want);
            for (int cache = 1; cache >= 0; cache--) {
                o.use_cache = cache;
                int32_t out[16];
                cr_assert_eq(gen(&f, f.prompt, f.n_prompt, &o, out, NULL), 16);
                for (int i = 0; i < 16; i++)
                    cr_expect_eq(out[i], want[i], "%s case %d cache %d: token %d is %d, oracle %d", models[mi], c,
                                 cache, i, out[i], want[i]);
            }
            if (c == 0) {
                /* the penalty changes the greedy continuation */
                bool differs = false;
                for (int i = 0; i < 16; i++)
                    differs |= want[i] != f.golden[i];
                cr_expect(differs, "%s: repetition penalty 3 left the greedy tokens alone", models[mi]);
            }
        }
        close_model(&f);
    }
}

Test(generate, minus_one_runs_until_the_context_is_full)
{
    fixture f = open_model("llama-tiny", 16);
    for (int cache = 1; cache >= 0; cache--) {
        gk_gen_opts o = gen_opts(-1);
        o.use_cache = cache;
        int32_t out[16];
        gk_gen_stats st = {0};
        /* prompt 7 + output 9 fill 16 */
        cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), 9, "cache %d", cache);
        cr_expect_eq(st.finish, GK_FINISH_CONTEXT);
        cr_expect_eq(st.n_gen, 9);
        cr_expect_eq(st.stop_index, -1);
        for (int i = 0; i < 9; i++)
            cr_expect_eq(out[i], f.golden[i], "cache %d token %d", cache, i);
        /* an EOS first */
        int64_t eos = f.golden[3];
        o.n_eos = 1;
        o.eos_ids = &eos;
        int64_t n = gen(&f, f.prompt, 7, &o, out, &st);
        cr_expect_eq(st.finish, GK_FINISH_EOS);
        cr_expect_eq(out[n - 1], eos);
        cr_expect_leq(n, 4);
    }
    /* a prompt filling the context: nothing to generate */
    int32_t full[16];
    for (int i = 0; i < 16; i++)
        full[i] = f.prompt[i % 7];
    gk_gen_opts o = gen_opts(-1);
    int32_t out[1];
    gk_gen_stats st = {0};
    cr_expect_eq(gen(&f, full, 16, &o, out, &st), 0);
    cr_expect_eq(st.finish, GK_FINISH_CONTEXT);
    close_model(&f);
}

static bool stop_at_3(int32_t t, void *user)
{
    (void)t;
    return ++*(int *)user < 3;
}

Test(generate, finish_says_why_generation_ended)
{
    fixture f = open_model("llama-tiny", 0);
    int32_t out[32];
    gk_gen_stats st;
    gk_gen_opts o = gen_opts(5);
    memset(&st, 0xff, sizeof st);
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), 5);
    cr_expect_eq(st.finish, GK_FINISH_LENGTH);
    cr_expect_eq(st.stop_index, -1);
    o = gen_opts(0);
    memset(&st, 0xff, sizeof st);
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), 0);
    cr_expect_eq(st.finish, GK_FINISH_LENGTH);
    cr_expect_eq(st.n_gen, 0);
    o = gen_opts(20);
    int64_t eos = f.golden[4];
    o.n_eos = 1;
    o.eos_ids = &eos;
    int64_t n = gen(&f, f.prompt, 7, &o, out, &st);
    cr_expect_eq(st.finish, GK_FINISH_EOS);
    cr_expect_eq(out[n - 1], eos);
    o = gen_opts(20);
    int calls = 0;
    o.on_token = stop_at_3;
    o.user = &calls;
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), 3);
    cr_expect_eq(st.finish, GK_FINISH_CALLBACK);
    /* EOS wins over the callback at the same token: the callback stops at
     * the third token, which is the EOS id (or an earlier one is) */
    calls = 0;
    eos = f.golden[2];
    o.n_eos = 1;
    o.eos_ids = &eos;
    int first = 0;
    while (f.golden[first] != eos)
        first++;
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), first + 1);
    cr_expect_eq(st.finish, GK_FINISH_EOS);
    /* the same on the host path (a penalty on) */
    o = gen_opts(20);
    o.repetition_penalty = 1.01f;
    calls = 0;
    o.on_token = stop_at_3;
    o.user = &calls;
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, &st), 3);
    cr_expect_eq(st.finish, GK_FINISH_CALLBACK);
    close_model(&f);
}

/* ---------------------------------------------------------- stop strings */

static gk_tokenizer *gpt2_tokenizer(void)
{
    const char *dir = getenv("GK_TEST_TOKENIZERS");
    char path[1024];
    snprintf(path, sizeof path, "%s/gpt2-tokenizer.json", dir ? dir : "../build/tests");
    gk_tokenizer *t = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_tokenizer_load(path, &t, &err), GK_OK, "%s: %s", path, err.msg);
    return t;
}

static char *decode(gk_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    char *text = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_tokenizer_decode(t, ids, n, true, &text, len, &err), GK_OK, "%s", err.msg);
    return text;
}

/* First k for which the decoded out[0..k] holds w, and where; -1 if none. */
static int first_holding(gk_tokenizer *t, const int32_t *out, int n, const char *w, size_t *at)
{
    for (int k = 1; k <= n; k++) {
        size_t len;
        char *s = decode(t, out, (size_t)k, &len);
        long off = -1;
        for (size_t i = 0; off < 0 && i + strlen(w) <= len; i++)
            if (!memcmp(s + i, w, strlen(w)))
                off = (long)i;
        free(s);
        if (off >= 0) {
            *at = (size_t)off;
            return k;
        }
    }
    return -1;
}

Test(stop, a_stop_string_across_a_token_boundary_ends_with_the_token_completing_it)
{
    fixture f = open_model("gpt2-tiny", 0);
    gk_tokenizer *t = gpt2_tokenizer();
    const int N = 20;
    int32_t ref[20];
    gk_gen_opts o = gen_opts(N);
    cr_assert_eq(gen(&f, f.prompt, 7, &o, ref, NULL), N);
    /* a 2-byte string: the last byte of token k's text and the first of
     * token k + 1's, found first at k + 1 */
    int found = 0;
    for (int k = 0; k + 1 < N && !found; k++) {
        size_t la, lb;
        char *a = decode(t, ref, (size_t)k + 1, &la);
        char *b = decode(t, ref, (size_t)k + 2, &lb);
        if (la > 0 && lb > la && !strncmp(a, b, la) && a[la - 1] && b[la]) {
            char w[3] = {a[la - 1], b[la], 0};
            size_t at = 0;
            if (first_holding(t, ref, N, w, &at) == k + 2 && (unsigned char)w[0] < 0x80 &&
                (unsigned char)w[1] < 0x80) {
                found = 1;
                for (int cache = 1; cache >= 0; cache--) {
                    for (int host = 0; host < 2; host++) {
                        gk_gen_opts so = gen_opts(N);
                        so.use_cache = cache;
                        if (host)
                            so.min_p = 1e-6f; /* the host path (greedy: same tokens) */
                        const char *stops[2] = {"\x01never", w};
                        so.n_stop = 2;
                        so.stop = stops;
                        so.tokenizer = t;
                        int32_t out[20];
                        gk_gen_stats st = {0};
                        int64_t n = gen(&f, f.prompt, 7, &so, out, &st);
                        cr_expect_eq(n, k + 2, "stop \"%s\" cache %d host %d: %lld tokens, expected %d", w, cache,
                                     host, (long long)n, k + 2);
                        cr_expect_eq(st.finish, GK_FINISH_STOP);
                        cr_expect_eq(st.stop_index, 1);
                        cr_expect_eq(st.stop_offset, at, "offset %zu, expected %zu", st.stop_offset, at);
                        cr_expect_eq(st.stop_offset, la - 1);
                        for (int i = 0; i < n; i++)
                            cr_expect_eq(out[i], ref[i]);
                    }
                }
            }
        }
        free(a);
        free(b);
    }
    cr_assert(found, "no two tokens in the greedy continuation to split a stop string over");
    /* two strings: the one starting first wins; a string never found leaves
     * the length as the reason */
    size_t l3;
    char *s3 = decode(t, ref, 3, &l3);
    cr_assert_geq(l3, 2);
    char late[2] = {s3[l3 - 1], 0}, early[3] = {s3[0], s3[1], 0};
    size_t at_late = 0, at_early = 0;
    int k_late = first_holding(t, ref, N, late, &at_late);
    int k_early = first_holding(t, ref, N, early, &at_early);
    gk_gen_opts so = gen_opts(N);
    const char *stops[2] = {late, early};
    so.n_stop = 2;
    so.stop = stops;
    so.tokenizer = t;
    int32_t out[20];
    gk_gen_stats st = {0};
    int64_t n = gen(&f, f.prompt, 7, &so, out, &st);
    int k_first = k_late < k_early ? k_late : k_early;
    cr_expect_eq(n, k_first);
    cr_expect_eq(st.finish, GK_FINISH_STOP);
    if (k_late == k_early) /* found at one token: the earlier start */
        cr_expect_eq(st.stop_index, at_early <= at_late ? 1 : 0);
    const char *none[1] = {"\x02\x03 not in any text"};
    so.stop = none;
    so.n_stop = 1;
    cr_expect_eq(gen(&f, f.prompt, 7, &so, out, &st), N);
    cr_expect_eq(st.finish, GK_FINISH_LENGTH);
    cr_expect_eq(st.stop_index, -1);
    free(s3);
    gk_tokenizer_destroy(t);
    close_model(&f);
}

/* ------------------------------------------------------------ keep_cache */

Test(keep_cache, reuses_the_common_prefix_with_the_same_tokens_and_logits_as_a_fresh_run)
{
    fixture f = open_model("llama-tiny", 0);
    gk_err err = {0};
    int32_t fresh[10], out[10];
    gk_gen_stats st = {0};
    gk_gen_opts o = gen_opts(10);
    cr_assert_eq(gen(&f, f.prompt, 7, &o, fresh, &st), 10);
    cr_expect_eq(st.n_reused, 0);
    cr_expect_eq(st.n_prefill, 7);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(fresh[i], f.golden[i]);
    /* the same prompt again: all but its last token are cached */
    o.keep_cache = true;
    cr_assert_eq(gen(&f, f.prompt, 7, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 6);
    cr_expect_eq(st.n_prefill, 1);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(out[i], fresh[i], "token %d", i);
    /* a prompt extending the last sequence (prompt + 5 outputs): the cache
     * holds prompt + 9 outputs, so all 12 match: 11 reused, 1 run */
    int32_t ext[12];
    memcpy(ext, f.prompt, 7 * sizeof *ext);
    memcpy(ext + 7, fresh, 5 * sizeof *ext);
    cr_assert_eq(gen(&f, ext, 12, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 11);
    cr_expect_eq(st.n_prefill, 1);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(out[i], f.golden[5 + i], "extended: token %d", i);
    /* a prompt diverging at index 4: 4 reused, 3 run; the same as fresh */
    int32_t div[7];
    memcpy(div, f.prompt, sizeof div);
    div[4] = (div[4] + 1) % (int32_t)f.n_vocab;
    int32_t want[10];
    gk_gen_opts fo = gen_opts(10);
    cr_assert_eq(gen(&f, div, 7, &fo, want, NULL), 10);
    cr_assert_eq(gen(&f, f.prompt, 7, &fo, out, NULL), 10); /* cache back to the golden prompt */
    cr_assert_eq(gen(&f, div, 7, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 4);
    cr_expect_eq(st.n_prefill, 3);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(out[i], want[i], "diverging: token %d", i);
    /* the logits after it equal a fresh forward of the whole sequence */
    int64_t V = f.n_vocab;
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)(17 * V) * sizeof *b);
    cr_assert(a && b);
    cr_assert_eq(gk_model_n_past(f.m), 16);
    cr_assert_eq(gk_model_forward(f.m, &out[9], 1, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_logits(f.m, a, &err), GK_OK, "%s", err.msg);
    int32_t seq[17];
    memcpy(seq, div, sizeof div);
    memcpy(seq + 7, out, sizeof out);
    cr_assert_eq(gk_model_truncate(f.m, 0, &err), GK_OK);
    cr_assert_eq(gk_model_forward(f.m, seq, 17, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_logits(f.m, b, &err), GK_OK, "%s", err.msg);
    for (int64_t i = 0; i < V; i++)
        cr_expect(fabsf(a[i] - b[16 * V + i]) <= 1e-5f * (1 + fabsf(b[16 * V + i])), "logit %lld: %g vs %g",
                  (long long)i, (double)a[i], (double)b[16 * V + i]);
    free(a);
    free(b);
    /* the cache follows gk_model_forward and gk_model_truncate: 17 tokens of
     * seq; keep 3, then 2 other tokens: the prompt shares 3 */
    cr_assert_eq(gk_model_truncate(f.m, 3, &err), GK_OK);
    int32_t other[2] = {(div[3] + 1) % (int32_t)V, 5};
    cr_assert_eq(gk_model_forward(f.m, other, 2, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gen(&f, div, 7, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 3);
    cr_expect_eq(st.n_prefill, 4);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(out[i], want[i], "after truncate: token %d", i);
    /* keep_cache off clears it */
    o.keep_cache = false;
    cr_assert_eq(gen(&f, div, 7, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 0);
    cr_expect_eq(st.n_prefill, 7);
    /* with the host path (a penalty) too */
    o = gen_opts(10);
    o.repetition_penalty = 1.5f;
    int32_t pw[10];
    cr_assert_eq(gen(&f, f.prompt, 7, &o, pw, NULL), 10);
    o.keep_cache = true;
    cr_assert_eq(gen(&f, f.prompt, 7, &o, out, &st), 10);
    cr_expect_eq(st.n_reused, 6);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(out[i], pw[i], "penalised: token %d", i);
    close_model(&f);
}

/* ------------------------------------------------------------ validation */

static void expect_invalid(fixture *f, const gk_gen_opts *o, const char *msg)
{
    int32_t out[4];
    int64_t n_out = -1;
    gk_err err = {0};
    cr_expect_eq(gk_model_generate(f->m, f->prompt, 7, o, out, &n_out, NULL, &err), GK_ERR_INVALID_ARG, "%s", msg);
    cr_expect(strstr(err.msg, msg), "message \"%s\" should say \"%s\"", err.msg, msg);
    cr_expect_eq(n_out, 0);
}

Test(validation, generate_names_the_rule_broken)
{
    fixture f = open_model("llama-tiny", 0);
    gk_gen_opts o = gen_opts(4);
    o.min_p = 1.5f;
    expect_invalid(&f, &o, "min_p must be in [0, 1], got 1.5");
    o = gen_opts(4);
    o.min_p = NAN;
    expect_invalid(&f, &o, "min_p must be in [0, 1]");
    o = gen_opts(4);
    o.repetition_penalty = 0.0f;
    expect_invalid(&f, &o, "repetition_penalty must be a finite number > 0, got 0");
    o = gen_opts(4);
    o.presence_penalty = INFINITY;
    expect_invalid(&f, &o, "presence_penalty must be a finite number");
    o = gen_opts(4);
    o.frequency_penalty = NAN;
    expect_invalid(&f, &o, "frequency_penalty must be a finite number");
    o = gen_opts(4);
    o.penalty_last_n = -2;
    expect_invalid(&f, &o, "penalty_last_n must be -1 (the whole context), 0 (off) or positive, got -2");
    o = gen_opts(-2);
    expect_invalid(&f, &o, "max_new_tokens must be -1");
    const char *stops[2] = {"a", ""};
    o = gen_opts(4);
    o.n_stop = 1;
    o.stop = stops;
    expect_invalid(&f, &o, "stop strings need the tokenizer");
    gk_tokenizer *t = gpt2_tokenizer();
    o.tokenizer = t;
    o.n_stop = 2;
    expect_invalid(&f, &o, "stop string 1 is empty");
    o.stop = NULL;
    expect_invalid(&f, &o, "stop hold that many strings");
    o.n_stop = -1;
    o.stop = stops;
    expect_invalid(&f, &o, "n_stop must be >= 0");
    const char *nul[1] = {NULL};
    o.n_stop = 1;
    o.stop = nul;
    expect_invalid(&f, &o, "stop string 0 is NULL");
    /* and it still generates after all that */
    o = gen_opts(4);
    int32_t out[4];
    cr_expect_eq(gen(&f, f.prompt, 7, &o, out, NULL), 4);
    gk_tokenizer_destroy(t);
    close_model(&f);
}

/* ------------------------------------------------------------ the whole-sort rule */

/* The chain as its definition reads (and as core/sample.c did until it
 * sorted only the prefix the chain reads): every token sorted by scaled
 * logit, descending, ties by id; top-k keeping ties; softmax over the
 * survivors; top-p, min-p, the draw with u. *margin: how near u, top_p or
 * min-p's cut lie to a sum or a probability that decides, where rounding may
 * fairly go either way. */
typedef struct ref_cand {
    float logit;
    int32_t id;
} ref_cand;

static int ref_cmp(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t ref_argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return (int32_t)best;
}

static void ref_renorm(double *p, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += p[i];
    for (int64_t i = 0; i < n; i++)
        p[i] /= s;
}

static int32_t ref_sample(const float *logits, int64_t nv, const gk_gen_opts *o, double u, double *margin)
{
    *margin = INFINITY;
    if (o->temperature <= 0.0f)
        return ref_argmax(logits, nv);
    ref_cand *c = malloc((size_t)nv * sizeof *c);
    double *p = malloc((size_t)nv * sizeof *p);
    cr_assert(c && p);
    for (int64_t i = 0; i < nv; i++) {
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i] / o->temperature;
        c[i].id = (int32_t)i;
    }
    qsort(c, (size_t)nv, sizeof *c, ref_cmp);
    if (!isfinite(c[0].logit)) {
        free(c);
        free(p);
        return ref_argmax(logits, nv);
    }
    int64_t n = nv;
    if (o->top_k > 0 && o->top_k < n) {
        int64_t k = o->top_k;
        while (k < n && c[k].logit == c[o->top_k - 1].logit)
            k++;
        n = k;
    }
    for (int64_t i = 0; i < n; i++)
        p[i] = exp((double)c[i].logit - (double)c[0].logit);
    ref_renorm(p, n);
    if (o->top_p > 0.0f && o->top_p < 1.0f) {
        double cum = 0.0;
        int64_t keep = 0;
        while (keep < n) {
            cum += p[keep++];
            *margin = fmin(*margin, fabs(cum - (double)o->top_p));
            if (cum >= (double)o->top_p)
                break;
        }
        n = keep;
        ref_renorm(p, n);
    }
    if (o->min_p > 0.0f) {
        double cut = (double)o->min_p * p[0];
        int64_t keep = 1;
        while (keep < n && p[keep] >= cut)
            keep++;
        if (keep < n)
            *margin = fmin(*margin, fabs(p[keep] - cut) / cut);
        *margin = fmin(*margin, fabs(p[keep - 1] - cut) / cut);
        n = keep;
        ref_renorm(p, n);
    }
    double cum = 0.0;
    int32_t pick = c[0].id;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] > 0.0)
            pick = c[i].id;
        cum += p[i];
        *margin = fmin(*margin, fabs(cum - u));
        if (u < cum)
            break;
    }
    free(p);
    free(c);
    return pick;
}

/* gk_rng_uniform's draw after seeding with s (gk.h: splitmix64, the top 53
 * bits). */
static double first_draw(uint64_t s)
{
    uint64_t z = s + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static uint64_t ws_state = 0x853C49E6748FEA9Bull;
static double ws_unit(void) /* (0, 1) */
{
    ws_state ^= ws_state << 13;
    ws_state ^= ws_state >> 7;
    ws_state ^= ws_state << 17;
    return ((double)(ws_state >> 11) + 0.5) * 0x1.0p-53;
}

/* Rows of logits of several shapes (gaussian of a few widths, many ties,
 * a few huge values, NaN and -inf entries, all equal) and vocabulary sizes
 * up to Qwen3's, through every mix of temperature, top-k, top-p and min-p:
 * gk_sample must pick what the whole-sort rule picks, but where u, top_p or
 * min-p's cut lies within 1e-12 of what decides. */
Test(chain, picks_follow_the_whole_sort_rule)
{
    const int64_t sizes[] = {1, 2, 7, 100, 1000, 32000, 151936};
    const float temps[] = {0.3f, 0.7f, 1.0f, 1.6f};
    const int32_t top_ks[] = {0, 1, 5, 40, -1, -2}; /* -1: n - 1, -2: n */
    const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
    const float min_ps[] = {0.0f, 0.05f, 0.3f};
    int checked = 0, on_edge = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int64_t nv = sizes[si];
        float *x = malloc((size_t)nv * sizeof *x);
        cr_assert_not_null(x);
        const int shapes = 6;
        for (int sh = 0; sh < shapes; sh++) {
            const double sd = sh == 0 ? 0.5 : sh == 1 ? 3.0 : 10.0;
            for (int64_t i = 0; i < nv; i++) {
                double g = sqrt(-2.0 * log(ws_unit())) * cos(6.283185307179586 * ws_unit()) * sd;
                x[i] = sh == 3 ? (float)(floor(g * 2.0) / 2.0) : sh == 5 ? 1.25f : (float)g;
            }
            if (sh == 4 && nv > 4) { /* a few peaks, a NaN, a -inf */
                x[nv / 3] = 40.0f;
                x[nv / 2] = 38.5f;
                x[nv - 1] = NAN;
                x[1] = -INFINITY;
            }
            /* the big vocabularies: fewer option mixes (the reference sorts
             * every row) */
            const size_t step = nv >= 100000 ? 12 : nv >= 32000 ? 5 : 1;
            size_t mix = 0;
            for (size_t ti = 0; ti < sizeof temps / sizeof *temps; ti++)
                for (size_t ki = 0; ki < sizeof top_ks / sizeof *top_ks; ki++)
                    for (size_t pi = 0; pi < sizeof top_ps / sizeof *top_ps; pi++)
                        for (size_t mi = 0; mi < sizeof min_ps / sizeof *min_ps; mi++, mix++) {
                            if (mix % step != (size_t)sh % step)
                                continue;
                            gk_gen_opts o = gk_gen_opts_default();
                            o.temperature = temps[ti];
                            o.top_k = top_ks[ki] == -1 ? (int32_t)(nv - 1) : top_ks[ki] == -2 ? (int32_t)nv : top_ks[ki];
                            if (o.top_k < 0)
                                o.top_k = 0;
                            o.top_p = top_ps[pi];
                            o.min_p = min_ps[mi];
                            const uint64_t seed = 1000003ull * mix + (uint64_t)sh * 7919u + (uint64_t)nv;
                            gk_rng r;
                            gk_rng_seed(&r, seed);
                            const int32_t got = gk_sample(x, nv, &o, &r);
                            double margin;
                            const int32_t want = ref_sample(x, nv, &o, first_draw(seed), &margin);
                            if (margin < 1e-12) {
                                on_edge++;
                                continue;
                            }
                            cr_assert_eq(got, want,
                                         "V=%lld shape %d T=%g top_k=%d top_p=%g min_p=%g seed %llu: picked %d, the "
                                         "rule %d (margin %g)",
                                         (long long)nv, sh, (double)o.temperature, (int)o.top_k, (double)o.top_p,
                                         (double)o.min_p, (unsigned long long)seed, (int)got, (int)want, margin);
                            checked++;
                        }
        }
        free(x);
    }
    cr_assert_gt(checked, 5000, "only %d picks checked (%d on an edge)", checked, on_edge);
}

/* Greedy picks: the lowest index of the largest logit, NaN never (all NaN:
 * 0), +0 and -0 alike; rows with ties, NaN, infinities and signed zeros of
 * every length up to 40 and a long one, against a plain scan. */
Test(chain, greedy_picks_the_first_largest)
{
    const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, NAN, INFINITY, -INFINITY, 2.5f, 1e30f, -1e30f};
    const int np = sizeof pool / sizeof *pool;
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 0.0f;
    static float x[200000];
    for (int len = 1; len <= 40; len++)
        for (int rep = 0; rep < 300; rep++) {
            for (int i = 0; i < len; i++)
                x[i] = pool[(unsigned)(ws_unit() * np) % np];
            gk_rng r;
            gk_rng_seed(&r, 1);
            const int32_t got = gk_sample(x, len, &o, &r), want = ref_argmax(x, len);
            cr_assert_eq(got, want, "len %d rep %d: picked %d, the first largest is %d", len, rep, got, want);
        }
    for (int i = 0; i < 200000; i++)
        x[i] = (float)(ws_unit() * 10.0);
    x[123457] = 11.0f;
    x[199999] = 11.0f;
    x[7] = NAN;
    gk_rng r;
    gk_rng_seed(&r, 1);
    cr_assert_eq(gk_sample(x, 200000, &o, &r), 123457);
    for (int i = 0; i < 200000; i++)
        x[i] = NAN;
    cr_assert_eq(gk_sample(x, 200000, &o, &r), 0);
    x[199998] = -INFINITY;
    cr_assert_eq(gk_sample(x, 200000, &o, &r), 199998);
}
