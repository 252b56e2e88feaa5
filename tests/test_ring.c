/* test_ring.c - sliding-window layers on ring caches: a layer whose window W
 * bounds what it sees keeps W + n_ubatch - 1 cache rows instead of n_ctx,
 * and a forward longer than n_ubatch runs as micro-batches. Checked against
 * transformers (gkrun verify on the windowed fixtures with small
 * micro-batches, so the rings wrap many times) and against the same model
 * with full caches (every logit of a long teacher-forced run, truncation
 * and keep_cache past overwritten rows), plus the errors that name the
 * limits. */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <gk/gk.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gk_model *load(gk_runtime *rt, const char *name, int64_t n_ubatch)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/%s", data_dir(), name);
    gk_model_opts mo = {.backend = "cpu_ref", .dtype = "f32", .n_ubatch = n_ubatch};
    gk_model *m = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s: %s", name, err.msg);
    return m;
}

static gk_runtime *runtime(void)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    return rt;
}

/* ids of a fixed spread over the vocabulary */
static void spread(int32_t *ids, int64_t n, int64_t n_vocab, int salt)
{
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919 + 17 + salt * 31) % n_vocab);
}

static void expect_verify_ring(const char *model, int ubatch, const char *rings)
{
    char *out;
    int rc = run(&out, "verify %s/models/%s --backend cpu_ref --dtype f32 --ubatch %d", data_dir(), model, ubatch);
    cr_expect_eq(rc, 0, "%s: exit %d\n%s", model, rc, out);
    cr_expect(strstr(out, rings), "%s: no '%s' in\n%s", model, rings, out);
    cr_expect(strstr(out, "0 failed: PASS"), "%s:\n%s", model, out);
    cr_expect_null(strstr(out, "FAIL"), "%s:\n%s", model, out);
    free(out);
}

/* Mistral's window of 16 on every layer: rings of 16 + 4 - 1 rows, which the
 * 76-token prompt and the 96 teacher-forced steps wrap five times. */
Test(ring, mistral_window_on_rings_matches_transformers)
{
    expect_verify_ring("mistral-window", 4, "rings of at most 19 rows on 2 of 2 layers, 4 tokens per forward graph");
    expect_verify_ring("mistral-window", 1, "rings of at most 16 rows on 2 of 2 layers");
}

/* Gemma 2 and 3: only the sliding layers get rings; the global one keeps
 * every position. */
Test(ring, gemma_sliding_layers_on_rings_global_layer_whole)
{
    expect_verify_ring("gemma2-tiny", 3, "rings of at most 18 rows on 2 of 3 layers");
    expect_verify_ring("gemma3-tiny", 5, "rings of at most 20 rows on 2 of 3 layers");
}

/* Without a window, or with micro-batches so large the ring would not be
 * smaller, every layer keeps n_ctx rows. */
Test(ring, no_ring_without_a_window_or_a_saving)
{
    gk_runtime *rt = runtime();
    gk_model *m = load(rt, "llama-tiny", 4);
    for (int64_t l = 0; l < gk_model_config(m)->n_layer; l++)
        cr_expect_eq(gk_model_cache_rows(m, l), gk_model_n_ctx(m));
    cr_expect_eq(gk_model_n_ubatch(m), 4);
    gk_model_destroy(m);
    m = load(rt, "mistral-window", 0); /* 16 + 512 - 1 > 96 positions */
    cr_expect_eq(gk_model_cache_rows(m, 0), 96);
    cr_expect_eq(gk_model_n_ubatch(m), 0);
    cr_expect_eq(gk_model_cache_rows(m, 2), 0); /* no layer 2 */
    gk_model_destroy(m);
    gk_runtime_destroy(rt);
}

/* Every logit of 90 tokens, a few at a time through the cache, is what the
 * model with whole caches gives (f32: the same sums in the same order). */
Test(ring, rings_give_the_logits_of_whole_caches)
{
    gk_runtime *rt = runtime();
    gk_model *ring = load(rt, "mistral-window", 4), *full = load(rt, "mistral-window", 0);
    cr_assert_eq(gk_model_cache_rows(ring, 1), 19);
    int64_t V = gk_model_config(ring)->n_vocab;
    int32_t ids[90];
    spread(ids, 90, V, 0);
    float *a = malloc((size_t)V * 4 * sizeof *a), *b = malloc((size_t)V * 4 * sizeof *b);
    gk_err err = {0};
    double worst = 0;
    for (int64_t t = 0; t < 90;) {
        int64_t k = 1 + t % 4; /* 1, 2, 3, 4 tokens a call */
        if (t + k > 90)
            k = 90 - t;
        cr_assert_eq(gk_model_forward(ring, ids + t, k, NULL, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_logits(ring, a, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_forward(full, ids + t, k, NULL, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_logits(full, b, &err), GK_OK, "%s", err.msg);
        for (int64_t i = 0; i < k * V; i++)
            worst = fmax(worst, fabs((double)a[i] - b[i]));
        t += k;
    }
    cr_expect_lt(worst, 1e-5, "max |ring - whole| = %g", worst);
    free(a);
    free(b);
    gk_model_destroy(ring);
    gk_model_destroy(full);
    gk_runtime_destroy(rt);
}

/* A forward longer than n_ubatch runs as micro-batches: its hidden states are
 * all there, equal to one whole pass, but logits of every row are refused
 * by name (only the last micro-batch is kept). */
Test(ring, long_forward_runs_as_micro_batches)
{
    gk_runtime *rt = runtime();
    gk_model *ring = load(rt, "mistral-window", 4), *full = load(rt, "mistral-window", 0);
    int64_t D = gk_model_config(ring)->n_embd, V = gk_model_config(ring)->n_vocab;
    int32_t ids[41];
    spread(ids, 41, V, 1);
    float *ha = malloc((size_t)(41 * D) * sizeof *ha), *hb = malloc((size_t)(41 * D) * sizeof *hb);
    float *logits = malloc((size_t)(41 * V) * sizeof *logits);
    gk_err err = {0};
    cr_assert_eq(gk_model_forward(ring, ids, 41, ha, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_forward(full, ids, 41, hb, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_model_n_past(ring), 41);
    double worst = 0;
    for (int64_t i = 0; i < 41 * D; i++)
        worst = fmax(worst, fabs((double)ha[i] - hb[i]));
    cr_expect_lt(worst, 1e-5, "max |ring - whole| hidden = %g", worst);
    cr_expect_eq(gk_model_logits(ring, logits, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "11 micro-batches of at most 4 tokens (n_ubatch)"), "%s", err.msg);
    cr_expect_eq(gk_model_logits(full, logits, &err), GK_OK, "%s", err.msg);
    free(ha);
    free(hb);
    free(logits);
    gk_model_destroy(ring);
    gk_model_destroy(full);
    gk_runtime_destroy(rt);
}

/* Truncation may not reach back past rows a ring has overwritten: 60
 * positions written with n_ubatch 4 leave 56 as the least to keep. Keeping
 * 56 then gives the logits the whole caches give; keeping 30 is refused with
 * the numbers, and 0 always works. */
Test(ring, truncate_stops_at_overwritten_rows)
{
    gk_runtime *rt = runtime();
    gk_model *ring = load(rt, "mistral-window", 4), *full = load(rt, "mistral-window", 0);
    int64_t V = gk_model_config(ring)->n_vocab;
    int32_t ids[60], next[3];
    spread(ids, 60, V, 2);
    spread(next, 3, V, 3);
    gk_err err = {0};
    cr_assert_eq(gk_model_forward(ring, ids, 60, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_forward(full, ids, 60, NULL, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_model_min_keep(ring), 56);
    cr_expect_eq(gk_model_min_keep(full), 0);
    cr_expect_eq(gk_model_truncate(ring, 30, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "cannot keep 30 of 60 cached tokens") && strstr(err.msg, "ring of 19 rows") &&
                  strstr(err.msg, "keep 0 or at least 56"),
              "%s", err.msg);
    cr_expect_eq(gk_model_n_past(ring), 60, "a refused truncation changes nothing");
    cr_assert_eq(gk_model_truncate(ring, 56, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_truncate(full, 56, &err), GK_OK, "%s", err.msg);
    float *a = malloc((size_t)(3 * V) * sizeof *a), *b = malloc((size_t)(3 * V) * sizeof *b);
    cr_assert_eq(gk_model_forward(ring, next, 3, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_logits(ring, a, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_forward(full, next, 3, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_logits(full, b, &err), GK_OK, "%s", err.msg);
    double worst = 0;
    for (int64_t i = 0; i < 3 * V; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]));
    cr_expect_lt(worst, 1e-5, "max |ring - whole| after truncation = %g", worst);
    cr_expect_eq(gk_model_truncate(ring, 0, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_model_min_keep(ring), 0);
    free(a);
    free(b);
    gk_model_destroy(ring);
    gk_model_destroy(full);
    gk_runtime_destroy(rt);
}

/* keep_cache with a prompt that shares a prefix the ring no longer holds
 * runs the whole prompt again (n_reused 0) and generates what a fresh model
 * generates; one that shares a prefix the ring still holds reuses it. */
Test(ring, keep_cache_falls_back_to_the_whole_prompt)
{
    gk_runtime *rt = runtime();
    gk_model *ring = load(rt, "mistral-window", 4), *fresh = load(rt, "mistral-window", 0);
    int64_t V = gk_model_config(ring)->n_vocab;
    int32_t a[50], b[50], out_r[8], out_f[8];
    spread(a, 50, V, 4);
    memcpy(b, a, sizeof b);
    b[25] = (b[25] + 1) % (int32_t)V; /* shares 25 tokens: positions long overwritten */
    gk_gen_opts g = gk_gen_opts_default();
    g.max_new_tokens = 8;
    g.keep_cache = true;
    gk_gen_stats st;
    int64_t n_r = 0, n_f = 0;
    gk_err err = {0};
    cr_assert_eq(gk_model_generate(ring, a, 50, &g, out_r, &n_r, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_model_generate(ring, b, 50, &g, out_r, &n_r, &st, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(st.n_reused, 0);
    cr_assert_eq(gk_model_generate(fresh, b, 50, &g, out_f, &n_f, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(n_r, n_f);
    cr_expect_arr_eq(out_r, out_f, (size_t)n_r * sizeof *out_r);
    /* the conversation goes on (the prompt, the reply and more): everything
     * cached is still there to reuse */
    int32_t c[60];
    memcpy(c, b, sizeof b);
    memcpy(c + 50, out_r, 8 * sizeof *c);
    c[58] = 5, c[59] = 6;
    int64_t cached = gk_model_n_past(ring);
    cr_assert_eq(cached, 57);
    cr_assert_eq(gk_model_generate(ring, c, 60, &g, out_r, &n_r, &st, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(st.n_reused, cached);
    cr_assert_eq(gk_model_generate(fresh, c, 60, &g, out_f, &n_f, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(n_r, n_f);
    cr_expect_arr_eq(out_r, out_f, (size_t)n_r * sizeof *out_r);
    gk_model_destroy(ring);
    gk_model_destroy(fresh);
    gk_runtime_destroy(rt);
}

/* gk_model_opts grew n_ubatch: the gk_model_load symbol an application built
 * before it calls reads only the fields it knew, so what lies past them
 * (here a 4) is never taken for n_ubatch; the macro passes the new size. */
Test(ring, the_old_load_symbol_reads_only_the_old_options)
{
    gk_runtime *rt = runtime();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/mistral-window", data_dir());
    gk_model_opts mo = {.backend = "cpu_ref", .n_ubatch = 4};
    gk_model *m = NULL;
    gk_err err = {0};
    cr_assert_eq((gk_model_load)(rt, dir, &mo, &m, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_model_n_ubatch(m), 0);
    cr_expect_eq(gk_model_cache_rows(m, 0), 96);
    gk_model_destroy(m);
    cr_assert_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_model_n_ubatch(m), 4);
    cr_expect_eq(gk_model_cache_rows(m, 0), 19);
    gk_model_destroy(m);
    mo.n_ubatch = -1;
    cr_expect_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "n_ubatch") && strstr(err.msg, "got -1"), "%s", err.msg);
    cr_expect_eq(gk_model_load_sized(rt, dir, &mo, 8, &m, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "opts_size 8"), "%s", err.msg);
    gk_runtime_destroy(rt);
}

/* gkrun takes llama.cpp's spelling and refuses a bad value by name. */
Test(ring, gkrun_ubatch_flag)
{
    char *out;
    int rc = run(&out, "verify %s/models/mistral-window --ubatch 0", data_dir());
    cr_expect_eq(rc, 2, "exit %d\n%s", rc, out);
    cr_expect(strstr(out, "--ubatch"), "%s", out);
    free(out);
    rc = run(&out, "compare -m %s/models/mistral-window --backend cpu_ref --ubatch 3 --ids 1,2,3,4,5,6,7,8",
             data_dir());
    cr_expect_eq(rc, 0, "exit %d\n%s", rc, out);
    cr_expect(strstr(out, "8 tokens as micro-batches of 3; the last 3 are compared"), "%s", out);
    free(out);
}
