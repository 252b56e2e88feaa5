/* test_seq.c - many sequences in one model (gk_seq_*): each has its own
 * KV-cache slot, and gk_seq_decode runs one token of every sequence in one
 * forward pass. The oracle is the same checkpoint with one sequence, fed
 * each sequence alone: every logit of every step must match it, on models
 * with RoPE (llama, qwen3), learned positions (gpt2) and sliding-window ring
 * caches (mistral-window), with prompts arriving while others decode. Also
 * the slot accounting and the errors, each naming its cause. */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <gk/gk.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Built twice: for cpu_ref (the oracle is exact there: the same sums in the
 * same order, batched or not) and, in the GPU suite, for cuda, where one
 * token and many take different kernels (GEMV and GEMM), so the bound is a
 * float32 rounding one. */
#ifndef GK_SEQ_BACKEND
#define GK_SEQ_BACKEND "cpu_ref"
#define GK_SEQ_BOUND 1e-4
#endif

static gk_runtime *rt;

static void setup(void)
{
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data_dir());
    gk_model_opts mo = {.backend = GK_SEQ_BACKEND};
    gk_model *m = NULL;
    gk_status s = gk_model_load(rt, dir, &mo, &m, &err);
    gk_model_destroy(m);
    if (s == GK_ERR_DEVICE || s == GK_ERR_NOT_FOUND)
        cr_skip_test("%s", err.msg);
}

static void teardown(void) { gk_runtime_destroy(rt); }

TestSuite(seq, .init = setup, .fini = teardown);

static gk_model *load(const char *name, int64_t n_seq, int64_t n_ubatch, int64_t n_ctx)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/%s", data_dir(), name);
    gk_model_opts mo = {.backend = GK_SEQ_BACKEND, .dtype = "f32", .n_seq_max = n_seq, .n_ubatch = n_ubatch,
                        .n_ctx = n_ctx};
    gk_model *m = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s: %s", name, err.msg);
    return m;
}

static int32_t argmax(const float *x, int64_t n)
{
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int32_t)i;
    return best;
}

/* S sequences with prompts of different lengths arriving at different steps
 * (a prompt joins while the others decode), greedy, `steps` tokens each; every
 * row of logits against the one-sequence model run on that sequence alone. */
static void expect_batch_matches_alone(const char *name, int64_t n_ubatch, int64_t n_ctx)
{
    enum { S = 3, STEPS = 24 };
    gk_model *m = load(name, S, n_ubatch, n_ctx), *one = load(name, 1, n_ubatch, n_ctx);
    int64_t V = gk_model_config(m)->n_vocab;
    const int64_t plen[S] = {5, 17, 1}, join[S] = {0, 3, 7}; /* when each prompt arrives */
    int32_t prompt[S][17], tok[S][STEPS];
    for (int s = 0; s < S; s++)
        for (int64_t i = 0; i < plen[s]; i++)
            prompt[s][i] = (int32_t)((i * 131 + s * 57 + 3) % V);
    gk_seq *q[S];
    gk_err err = {0};
    for (int s = 0; s < S; s++)
        cr_assert_eq(gk_seq_new(m, &q[s], &err), GK_OK, "%s", err.msg);
    float *lg = malloc((size_t)(S * V) * sizeof *lg);
    /* the batched run: step k feeds each joined sequence its prompt (the
     * step it joins) or its last token */
    float *got[S];
    int n_got[S] = {0};
    for (int s = 0; s < S; s++)
        got[s] = malloc((size_t)(STEPS * V) * sizeof(float));
    for (int64_t k = 0; k < STEPS + 7; k++) {
        gk_seq_input in[S];
        int who[S], n_in = 0;
        for (int s = 0; s < S; s++) {
            if (k < join[s] || n_got[s] >= STEPS)
                continue;
            if (k == join[s])
                in[n_in] = (gk_seq_input){q[s], prompt[s], plen[s]};
            else
                in[n_in] = (gk_seq_input){q[s], &tok[s][n_got[s] - 1], 1};
            who[n_in++] = s;
        }
        if (!n_in)
            continue;
        cr_assert_eq(gk_seq_decode(m, in, n_in, lg, &err), GK_OK, "%s step %lld: %s", name, (long long)k, err.msg);
        for (int i = 0; i < n_in; i++) {
            int s = who[i];
            memcpy(got[s] + n_got[s] * V, lg + i * V, (size_t)V * sizeof *lg);
            tok[s][n_got[s]] = argmax(lg + i * V, V);
            n_got[s]++;
        }
    }
    /* each alone on the one-sequence model, through gk_model_forward */
    float *want = malloc((size_t)(17 * V) * sizeof *want);
    double worst = 0;
    for (int s = 0; s < S; s++) {
        cr_assert_eq(gk_seq_n_past(q[s]), plen[s] + STEPS - 1);
        cr_assert_eq(gk_model_truncate(one, 0, &err), GK_OK, "%s", err.msg);
        for (int64_t k = 0; k < STEPS; k++) {
            const int32_t *ids = k == 0 ? prompt[s] : &tok[s][k - 1];
            int64_t n = k == 0 ? plen[s] : 1;
            int64_t ub = gk_model_n_ubatch(one), done = 0;
            while (n - done > (ub > 0 ? ub : n)) { /* micro-batches: logits of the last only */
                cr_assert_eq(gk_model_forward(one, ids + done, ub, NULL, &err), GK_OK, "%s", err.msg);
                done += ub;
            }
            cr_assert_eq(gk_model_forward(one, ids + done, n - done, NULL, &err), GK_OK, "%s", err.msg);
            cr_assert_eq(gk_model_logits(one, want, &err), GK_OK, "%s", err.msg);
            const float *last = want + (n - done - 1) * V;
            for (int64_t v = 0; v < V; v++)
                worst = fmax(worst, fabs((double)got[s][k * V + v] - last[v]));
            cr_expect_eq(tok[s][k], argmax(last, V), "%s seq %d step %lld", name, s, (long long)k);
        }
        cr_expect_arr_eq(gk_seq_ids(q[s]), prompt[s], (size_t)plen[s] * sizeof(int32_t));
    }
    cr_expect_lt(worst, GK_SEQ_BOUND, "%s: max |batched - alone| = %g", name, worst);
    for (int s = 0; s < S; s++) {
        free(got[s]);
        gk_seq_free(q[s]);
    }
    free(want);
    free(lg);
    gk_model_destroy(m);
    gk_model_destroy(one);
}

Test(seq, llama_batched_decode_matches_each_sequence_alone)
{
    expect_batch_matches_alone("llama-tiny", 0, 64);
}

Test(seq, qwen3_batched_decode_matches_each_sequence_alone)
{
    expect_batch_matches_alone("qwen3-tiny", 0, 64);
}

Test(seq, gpt2_batched_decode_matches_each_sequence_alone)
{
    expect_batch_matches_alone("gpt2-tiny", 0, 64);
}

/* rings of 16 + 4 - 1 rows per slot, which 40 positions wrap twice */
Test(seq, ring_slots_batched_decode_matches_each_sequence_alone)
{
    expect_batch_matches_alone("mistral-window", 4, 96);
}

/* Slots 1.. are handed out first, slot 0 (the model's own) last; with every
 * slot taken a new sequence is GK_ERR_BUSY, and while a sequence holds slot
 * 0 the model's own calls are refused by name; freeing it gives them back. */
Test(seq, slots_run_out_and_come_back)
{
    gk_model *m = load("llama-tiny", 3, 0, 32);
    gk_err err = {0};
    gk_seq *a, *b, *c, *d = NULL;
    int32_t id = 7;
    cr_assert_eq(gk_model_forward(m, &id, 1, NULL, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_seq_new(m, &a, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_seq_new(m, &b, &err), GK_OK, "%s", err.msg);
    /* slot 0 holds the model's own token: not taken from it */
    cr_expect_eq(gk_seq_new(m, &c, &err), GK_ERR_BUSY);
    cr_expect(strstr(err.msg, "all 3 sequence slots"), "%s", err.msg);
    cr_assert_eq(gk_model_truncate(m, 0, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_seq_new(m, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_seq_new(m, &d, &err), GK_ERR_BUSY);
    cr_expect_null(d);
    cr_expect_eq(gk_model_forward(m, &id, 1, NULL, &err), GK_ERR_BUSY);
    cr_expect(strstr(err.msg, "gk_seq"), "%s", err.msg);
    gk_gen_opts g = gk_gen_opts_default();
    int32_t out[2];
    int64_t n_out;
    cr_expect_eq(gk_model_generate(m, &id, 1, &g, out, &n_out, NULL, &err), GK_ERR_BUSY);
    gk_seq_free(c);
    cr_expect_eq(gk_model_forward(m, &id, 1, NULL, &err), GK_OK, "%s", err.msg);
    gk_seq_free(a);
    cr_assert_eq(gk_seq_new(m, &a, &err), GK_OK, "%s", err.msg);
    gk_seq_free(a);
    gk_seq_free(b);
    gk_seq_free(NULL);
    gk_model_destroy(m);
}

/* A bad input refuses the whole call and changes no sequence. */
Test(seq, bad_inputs_change_nothing)
{
    gk_model *m = load("llama-tiny", 2, 0, 16);
    int64_t V = gk_model_config(m)->n_vocab;
    gk_err err = {0};
    gk_seq *a, *b;
    cr_assert_eq(gk_seq_new(m, &a, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_seq_new(m, &b, &err), GK_OK, "%s", err.msg);
    int32_t ok[3] = {1, 2, 3}, bad[1] = {(int32_t)V}, many[17] = {0};
    gk_seq_input twice[2] = {{a, ok, 1}, {a, ok, 1}};
    cr_expect_eq(gk_seq_decode(m, twice, 2, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "inputs 0 and 1 are one sequence"), "%s", err.msg);
    gk_seq_input oob[2] = {{a, ok, 3}, {b, bad, 1}};
    cr_expect_eq(gk_seq_decode(m, oob, 2, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "outside the vocabulary"), "%s", err.msg);
    gk_seq_input full[1] = {{b, many, 17}};
    cr_expect_eq(gk_seq_decode(m, full, 1, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "17 tokens after 0 cached ones (the context is 16)"), "%s", err.msg);
    gk_seq_input empty[1] = {{b, ok, 0}};
    cr_expect_eq(gk_seq_decode(m, empty, 1, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_seq_n_past(a), 0);
    cr_expect_eq(gk_seq_n_past(b), 0);
    cr_expect_eq(gk_seq_truncate(a, 1, &err), GK_ERR_INVALID_ARG);
    gk_seq_input fine[2] = {{a, ok, 3}, {b, ok, 1}};
    cr_expect_eq(gk_seq_decode(m, fine, 2, NULL, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_seq_n_past(a), 3);
    cr_expect_eq(gk_seq_truncate(a, 1, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_seq_n_past(a), 1);
    gk_seq_free(a);
    gk_seq_free(b);
    gk_model_destroy(m);
    gk_model_opts mo = {.backend = GK_SEQ_BACKEND, .n_seq_max = -1};
    char dir[1024];
    gk_model *x = NULL;
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data_dir());
    cr_expect_eq(gk_model_load(rt, dir, &mo, &x, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "n_seq_max") && strstr(err.msg, "got -1"), "%s", err.msg);
}

#ifdef GK_SEQ_SKIP_EXIT
/* The GPU build: SKIP (77) with the reason when there is no usable GPU. */
#define SKIP_EXIT_NAME "cuda_seq"
#include "skip_exit.h"
#endif
