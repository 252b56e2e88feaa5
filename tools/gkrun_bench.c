/* gkrun bench - batch-1 generation speed of a model, beside the memory-bandwidth
 * roofline of its device.
 *
 *   gkrun bench -m DIR [--backend NAME] [--dtype D] [-p PROMPT_TOKENS] [-n NEW_TOKENS] [--reps R]
 *
 * Prompt ids are a fixed spread over the vocabulary; decoding is greedy and
 * never stops at EOS. Decode reads every weight once per token, so the roofline
 * is peak bandwidth / weight bytes; "achieved" counts weight bytes only (the KV
 * cache read is small at these lengths). The best of R runs is printed.
 * Prompt plus new tokens must fit the model's max_position_embeddings: a
 * longer run would time attention the model was never trained for.
 */
#include "gkrun.h"
#include "gkrun_args.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The model's positions (max_position_embeddings) from the config.json that
 * gk_model_load will read: in the folder, or beside the file. 0 after the
 * message. */
static int64_t model_positions(const char *path)
{
    struct stat sb;
    char *copy = NULL;
    const char *dir = path;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        copy = strdup(path);
        dir = copy ? dirname(copy) : ".";
    }
    gk_config cfg;
    gk_err err = {0};
    gk_status st = gk_config_load(dir, &cfg, &err);
    free(copy);
    if (st != GK_OK) {
        gkrun_fail(&err);
        return 0;
    }
    return cfg.n_ctx_train > 0 ? cfg.n_ctx_train : 4096;
}

/* A buffer of n ids, or NULL after the message. */
static int32_t *alloc_ids(int64_t n, const char *what)
{
    size_t bytes;
    int32_t *p = gk_size_mul((size_t)n, sizeof *p, &bytes) ? malloc(bytes) : NULL;
    if (!p)
        fprintf(stderr, "gkrun bench: out of memory: %lld ids for the %s\n", (long long)n, what);
    return p;
}

int gkrun_bench(int argc, char **argv, const gkrun_common *common)
{
    const char *dir = NULL, *backend = NULL, *dtype = NULL;
    int64_t n_prompt = 32, n_new = 128, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
            if (!gkrun_arg_i64("-p", argv[++i], 1, INT64_MAX, &n_prompt))
                return 2;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            if (!gkrun_arg_i64("-n", argv[++i], 1, INT64_MAX, &n_new))
                return 2;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (!gkrun_arg_i64("--reps", argv[++i], 1, INT32_MAX, &reps))
                return 2;
        } else {
            fprintf(stderr, "gkrun bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: gkrun bench -m DIR [--backend NAME] [--dtype D] [-p N] [-n N] [--reps R]\n");
        return 2;
    }
    /* Checked before loading, so the KV cache is never sized from them. The
     * last new token needs no cache row: n_prompt + n_new - 1 positions. */
    int64_t n_pos = model_positions(dir);
    if (n_pos == 0)
        return 1;
    if (n_prompt > n_pos) {
        fprintf(stderr, "gkrun bench: -p %lld is longer than the model's context of %lld tokens\n",
                (long long)n_prompt, (long long)n_pos);
        return 2;
    }
    if (n_new - 1 > n_pos - n_prompt) {
        fprintf(stderr, "gkrun bench: -p %lld with -n %lld does not fit the model's context of %lld tokens "
                        "(at most -n %lld after that prompt)\n",
                (long long)n_prompt, (long long)n_new, (long long)n_pos, (long long)(n_pos - n_prompt + 1));
        return 2;
    }
    gk_runtime *rt = gkrun_runtime(common);
    if (!rt)
        return 1;
    int rc = 1;
    gk_err err = {0};
    gk_model *m = NULL;
    int32_t *prompt = NULL, *out = NULL;
    gk_model_opts mo = {.backend = backend, .dtype = dtype, .n_ctx = n_prompt + n_new - 1};
    if (gk_model_load(rt, dir, &mo, &m, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    const gk_config *cfg = gk_model_config(m);
    prompt = alloc_ids(n_prompt, "prompt");
    out = prompt ? alloc_ids(n_new, "output") : NULL;
    if (!out)
        goto out;
    for (int64_t i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((i * 7919 + 17) % cfg->n_vocab);
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = n_new;
    gk_gen_stats best = {0};
    double best_decode = 0, best_prefill = 0;
    for (int64_t r = 0; r <= reps; r++) { /* the first run warms up */
        gk_gen_stats st;
        int64_t n_out;
        if (gk_model_generate(m, prompt, n_prompt, &o, out, &n_out, &st, &err) != GK_OK) {
            rc = gkrun_fail(&err);
            goto out;
        }
        double dec = st.n_gen > 1 && st.t_decode_s > 0 ? (double)(st.n_gen - 1) / st.t_decode_s : 0;
        double pre = st.t_prefill_s > 0 ? (double)st.n_prompt / st.t_prefill_s : 0;
        if (r == 1)
            best = st; /* -n 1 measures no decode step */
        if (r > 0 && dec > best_decode) {
            best_decode = dec;
            best = st;
        }
        if (r > 0 && pre > best_prefill)
            best_prefill = pre;
    }
    gk_device_props dev;
    if (gk_model_device(m, &dev, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    double wbytes = (double)gk_model_weight_bytes(m);
    double achieved = best_decode * wbytes / 1e9;
    printf("bench %s: %s, %s weights (%.2f GB), %s on %s\n", dir, gk_model_spec_of(m)->name,
           gk_dtype_name(gk_model_dtype(m)), wbytes / 1e9, gk_model_backend_name(m), dev.name);
    printf("prefill: %lld tokens at %.1f tokens/s\n", (long long)best.n_prompt, best_prefill);
    printf("decode:  %lld tokens at %.1f tokens/s (%.3f ms/token), weights streamed at %.1f GB/s\n",
           (long long)best.n_gen, best_decode, best_decode > 0 ? 1e3 / best_decode : 0.0, achieved);
    if (dev.peak_bw_gbs > 0)
        printf("roofline: %.1f GB/s peak -> %.1f tokens/s; decode at %.1f%% of it\n", dev.peak_bw_gbs,
               dev.peak_bw_gbs * 1e9 / wbytes, 100.0 * achieved / dev.peak_bw_gbs);
    printf("peak memory on the backend: %.2f GB\n", gk_model_mem_peak(m) / 1e9);
    rc = 0;
out:
    free(prompt);
    free(out);
    gk_model_destroy(m);
    gk_runtime_destroy(rt);
    return rc;
}
