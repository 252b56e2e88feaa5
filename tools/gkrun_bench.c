/* gkrun bench - batch-1 generation speed of a model, beside the memory-bandwidth
 * roofline of its device.
 *
 *   gkrun bench -m DIR [--backend NAME] [--dtype D] [-p PROMPT_TOKENS] [-n NEW_TOKENS] [--reps R]
 *
 * Prompt ids are a fixed spread over the vocabulary; decoding is greedy and
 * never stops at EOS. Decode reads every weight once per token, so the roofline
 * is peak bandwidth / weight bytes; "achieved" counts weight bytes only (the KV
 * cache read is small at these lengths). The best of R runs is printed.
 */
#include "gkrun.h"

#include <stdlib.h>
#include <string.h>

int gkrun_bench(int argc, char **argv, const gkrun_common *common)
{
    const char *dir = NULL, *backend = NULL, *dtype = NULL;
    int64_t n_prompt = 32, n_new = 128;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc)
            n_prompt = atoll(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n_new = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "gkrun bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir || n_prompt < 1 || n_new < 1 || reps < 1) {
        fprintf(stderr, "usage: gkrun bench -m DIR [--backend NAME] [--dtype D] [-p N] [-n N] [--reps R]\n");
        return 2;
    }
    gk_runtime *rt = gkrun_runtime(common);
    if (!rt)
        return 1;
    int rc = 1;
    gk_err err = {0};
    gk_model *m = NULL;
    int32_t *prompt = NULL, *out = NULL;
    gk_model_opts mo = {.backend = backend, .dtype = dtype, .n_ctx = n_prompt + n_new};
    if (gk_model_load(rt, dir, &mo, &m, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    const gk_config *cfg = gk_model_config(m);
    prompt = malloc((size_t)n_prompt * sizeof *prompt);
    out = malloc((size_t)n_new * sizeof *out);
    if (!prompt || !out)
        goto out;
    for (int64_t i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((i * 7919 + 17) % cfg->n_vocab);
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = n_new;
    gk_gen_stats best = {0};
    double best_decode = 0, best_prefill = 0;
    for (int r = 0; r < reps + 1; r++) { /* the first run warms up */
        gk_gen_stats st;
        int64_t n_out;
        if (gk_model_generate(m, prompt, n_prompt, &o, out, &n_out, &st, &err) != GK_OK) {
            rc = gkrun_fail(&err);
            goto out;
        }
        double dec = st.n_gen > 1 ? (double)(st.n_gen - 1) / st.t_decode_s : 0;
        double pre = (double)st.n_prompt / st.t_prefill_s;
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
           (long long)best.n_gen, best_decode, 1e3 / best_decode, achieved);
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
