/* gkrun bench - batch-1 generation speed of a model, beside the memory-bandwidth
 * roofline of its device.
 *
 *   gkrun bench -m DIR [--backend NAME] [--dtype D] [--kv-dtype D] [-p PROMPT_TOKENS] [-n NEW_TOKENS]
 *               [-d DEPTH] [--reps R] [--json]
 *
 * Prompt ids are a fixed spread over the vocabulary; decoding is greedy and
 * never stops at EOS. With -d, DEPTH tokens of context come before the prompt
 * (as llama-bench's -d): decode then runs over a cache of DEPTH + PROMPT
 * tokens, and the prefill figure covers all DEPTH + PROMPT tokens. Decode
 * reads every weight once per token, so the roofline is peak bandwidth /
 * the weight bytes a step reads (gk_model_step_weight_bytes: an MoE's selected
 * experts only); "streamed" counts weight bytes only (not the KV cache). One
 * warm-up run, then R measured runs: the median is printed with the spread
 * (min..max). Context plus new tokens must fit the model's
 * max_position_embeddings: a longer run would time attention the model was
 * never trained for.
 */
#include "gkrun.h"
#include "gkrun_args.h"

#include <cjson/cJSON.h>
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of n values (sorts v). */
typedef struct spread {
    double median, min, max;
} spread;

static spread spread_of(double *v, int64_t n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return (spread){med, v[0], v[n - 1]};
}

static bool is_parallel(const char *a) { return !strcmp(a, "-np") || !strcmp(a, "--parallel"); }

/* --parallel B: B sequences of one model (gk_seq_*), each prefilled with its
 * own prompt of n_prompt ids, then n_new - 1 steps that decode one token of
 * every sequence in one gk_seq_decode call (greedy, the logits of every
 * sequence read back and picked on the host with gk_sample, as a server does). Prints the
 * aggregate decode tokens/s and the time per step, median of reps. */
static int bench_parallel(gk_runtime *rt, const char *dir, const char *backend, const char *dtype,
                          const char *kv_dtype, int64_t ubatch, int64_t B_max, const int64_t *Bs, int n_B,
                          int64_t n_prompt, int64_t n_new, int64_t reps, bool json)
{

    gk_err err = {0};
    gk_model *m = NULL;
    gk_model_opts mo = {.backend = backend, .dtype = dtype, .n_ctx = n_prompt + n_new - 1, .kv_dtype = kv_dtype,
                        .n_ubatch = ubatch, .n_seq_max = B_max};
    if (gk_model_load(rt, dir, &mo, &m, &err) != GK_OK)
        return gkrun_fail(&err);
    int rc = 1;
    int64_t V = gk_model_config(m)->n_vocab;
    const gk_gen_opts greedy = gk_gen_opts_default(); /* the server's greedy pick */
    gk_seq **q = calloc((size_t)B_max, sizeof *q);
    gk_seq_input *in = calloc((size_t)B_max, sizeof *in);
    int32_t *prompt = malloc((size_t)(B_max * n_prompt) * sizeof *prompt), *tok = malloc((size_t)B_max * sizeof *tok);
    float *logits = malloc((size_t)(B_max * V) * sizeof *logits);
    double *step_v = calloc((size_t)reps, sizeof *step_v), *pre_v = calloc((size_t)reps, sizeof *pre_v);
    double *pick_v = calloc((size_t)reps, sizeof *pick_v);
    if (!q || !in || !prompt || !tok || !logits || !step_v || !pre_v || !pick_v) {
        fprintf(stderr, "gkrun bench: out of memory for %lld sequences\n", (long long)B_max);
        goto out;
    }
    for (int64_t b = 0; b < B_max; b++) {
        if (gk_seq_new(m, &q[b], &err) != GK_OK) {
            rc = gkrun_fail(&err);
            goto out;
        }
        for (int64_t i = 0; i < n_prompt; i++)
            prompt[b * n_prompt + i] = (int32_t)((i * 7919 + 17 + b * 104729) % V);
    }
    gk_device_props dev;
    memset(&dev, 0, sizeof dev);
    gk_model_device(m, &dev, &err);
    for (int ib = 0; ib < n_B; ib++) {
        const int64_t B = Bs[ib]; /* the first B of the B_max sequences */
        for (int64_t r = 0; r <= reps; r++) { /* the first run warms up */
            double t0 = gk_now_s();
            for (int64_t b = 0; b < B; b++) {
                if (gk_seq_truncate(q[b], 0, &err) != GK_OK) {
                    rc = gkrun_fail(&err);
                    goto out;
                }
                in[b] = (gk_seq_input){q[b], prompt + b * n_prompt, n_prompt};
            }
            if (gk_seq_decode(m, in, B, logits, &err) != GK_OK) {
                rc = gkrun_fail(&err);
                goto out;
            }
            for (int64_t b = 0; b < B; b++)
                tok[b] = gk_sample(logits + b * V, V, &greedy, NULL);
            double t1 = gk_now_s(), t_pick = 0;
            for (int64_t k = 1; k < n_new; k++) {
                for (int64_t b = 0; b < B; b++)
                    in[b] = (gk_seq_input){q[b], &tok[b], 1};
                if (gk_seq_decode(m, in, B, logits, &err) != GK_OK) {
                    rc = gkrun_fail(&err);
                    goto out;
                }
                double tp = gk_now_s();
                for (int64_t b = 0; b < B; b++)
                    tok[b] = gk_sample(logits + b * V, V, &greedy, NULL);
                t_pick += gk_now_s() - tp;
            }
            double t2 = gk_now_s();
            pick_v[r > 0 ? r - 1 : 0] = n_new > 1 ? t_pick / (double)(n_new - 1) : 0;
            if (r == 0)
                continue;
            pre_v[r - 1] = t1 > t0 ? (double)(B * n_prompt) / (t1 - t0) : 0;
            step_v[r - 1] = n_new > 1 ? (t2 - t1) / (double)(n_new - 1) : 0;
        }
        spread st = spread_of(step_v, reps), pre = spread_of(pre_v, reps), pk = spread_of(pick_v, reps);
        double agg = st.median > 0 ? (double)B / st.median : 0;
        if (json) {
            printf("{\"model\":\"%s\",\"backend\":\"%s\",\"device\":\"%s\",\"dtype\":\"%s\",\"parallel\":%lld,"
                   "\"n_prompt\":%lld,\"n_gen\":%lld,\"reps\":%lld,\"step_s\":%.6g,\"step_s_min\":%.6g,"
                   "\"step_s_max\":%.6g,\"pick_s\":%.6g,\"decode_tokens_per_s\":%.6g,"
                   "\"prefill_tokens_per_s\":%.6g}\n",
                   dir, gk_model_backend_name(m), dev.name, gk_dtype_name(gk_model_dtype(m)), (long long)B,
                   (long long)n_prompt, (long long)n_new, (long long)reps, st.median, st.min, st.max, pk.median, agg,
                   pre.median);
        } else {
            printf("bench %s: %s, %s weights, %lld sequences at once, %s on %s\n", dir, gk_model_spec_of(m)->name,
                   gk_dtype_name(gk_model_dtype(m)), (long long)B, gk_model_backend_name(m), dev.name);
            printf("prefill: %lld prompts of %lld tokens at %.1f tokens/s (median of %lld)\n", (long long)B,
                   (long long)n_prompt, pre.median, (long long)reps);
            printf("decode:  %lld steps of %lld tokens: %.3f ms per step (%.3f..%.3f; %.3f of it picking on the "
                   "host), %.1f tokens/s in all, %.1f per sequence\n",
                   (long long)(n_new - 1), (long long)B, st.median * 1e3, st.min * 1e3, st.max * 1e3, pk.median * 1e3,
                   agg, agg / (double)B);
        }
    }
    rc = 0;
out:
    for (int64_t b = 0; q && b < B_max; b++)
        gk_seq_free(q[b]);
    free(q);
    free(in);
    free(prompt);
    free(tok);
    free(logits);
    free(step_v);
    free(pre_v);
    free(pick_v);
    gk_model_destroy(m);
    return rc;
}

int gkrun_bench(int argc, char **argv, const gkrun_common *common)
{
    const char *dir = NULL, *backend = NULL, *dtype = NULL, *kv_dtype = NULL;
    int64_t n_prompt = 32, n_new = 128, reps = 3, depth = 0, ubatch = 0, parallel = 0, par[16];
    int n_par = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc)
            kv_dtype = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
            if (!gkrun_arg_i64("-p", argv[++i], 1, INT64_MAX, &n_prompt))
                return 2;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            if (!gkrun_arg_i64("-n", argv[++i], 1, INT64_MAX, &n_new))
                return 2;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (!gkrun_arg_i64("--reps", argv[++i], 1, 100000, &reps))
                return 2;
        } else if (!strcmp(argv[i], "-d") && i + 1 < argc) {
            if (!gkrun_arg_i64("-d", argv[++i], 0, INT32_MAX, &depth))
                return 2;
        } else if (is_parallel(argv[i]) && i + 1 < argc) {
            /* N, or a list N1,N2,... run in turn on one load */
            const char *flag = argv[i++];
            char *list = strdup(argv[i]), *save = NULL;
            if (!list)
                return 2;
            n_par = 0;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (n_par == 16 || !gkrun_arg_i64(flag, t, 1, 4096, &par[n_par])) {
                    if (n_par == 16)
                        fprintf(stderr, "gkrun: %s: at most 16 values\n", flag);
                    free(list);
                    return 2;
                }
                parallel = par[n_par] > parallel ? par[n_par] : parallel;
                n_par++;
            }
            free(list);
            if (!n_par) {
                fprintf(stderr, "gkrun: %s: no value in '%s'\n", flag, argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--ubatch") && i + 1 < argc) {
            if (!gkrun_arg_i64("--ubatch", argv[++i], 1, INT32_MAX, &ubatch))
                return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "gkrun bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: gkrun bench -m DIR [--backend NAME] [--dtype D] [--kv-dtype D] [-p N] [-n N] [-d DEPTH] [--reps R] "
                        "[--ubatch N] [-np N] [--json]\n");
        return 2;
    }
    /* Checked before loading, so the KV cache is never sized from them. The
     * last new token needs no cache row: n_prompt + n_new - 1 positions. */
    int64_t n_pos = model_positions(dir);
    if (n_pos == 0)
        return 1;
    if (depth > n_pos - 1) {
        fprintf(stderr, "gkrun bench: -d %lld leaves no room for a prompt in the model's context of %lld tokens\n",
                (long long)depth, (long long)n_pos);
        return 2;
    }
    n_pos -= depth; /* what the prompt and new tokens may use */
    if (n_prompt > n_pos) {
        fprintf(stderr, "gkrun bench: -p %lld is longer than the model's context of %lld tokens%s\n",
                (long long)n_prompt, (long long)n_pos, depth ? " left after -d" : "");
        return 2;
    }
    if (n_new - 1 > n_pos - n_prompt) {
        fprintf(stderr, "gkrun bench: -p %lld with -n %lld does not fit the model's context of %lld tokens%s "
                        "(at most -n %lld after that prompt)\n",
                (long long)n_prompt, (long long)n_new, (long long)n_pos, depth ? " left after -d" : "",
                (long long)(n_pos - n_prompt + 1));
        return 2;
    }
    gk_runtime *rt = gkrun_runtime(common);
    if (!rt)
        return 1;
    if (parallel) {
        int prc = bench_parallel(rt, dir, backend, dtype, kv_dtype, ubatch, parallel, par, n_par, depth + n_prompt,
                                 n_new, reps, json);
        gk_runtime_destroy(rt);
        return prc;
    }
    int rc = 1;
    gk_err err = {0};
    gk_model *m = NULL;
    int32_t *prompt = NULL, *out = NULL;
    int64_t n_ctx_ids = depth + n_prompt; /* the prompt generate sees */
    double *dec_v = NULL, *pre_v = NULL;
    gk_model_opts mo = {.backend = backend, .dtype = dtype, .n_ctx = n_ctx_ids + n_new - 1, .kv_dtype = kv_dtype,
                        .n_ubatch = ubatch};
    if (gk_model_load(rt, dir, &mo, &m, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    const gk_config *cfg = gk_model_config(m);
    prompt = alloc_ids(n_ctx_ids, "prompt");
    out = prompt ? alloc_ids(n_new, "output") : NULL;
    dec_v = out ? calloc((size_t)reps, sizeof *dec_v) : NULL;
    pre_v = dec_v ? calloc((size_t)reps, sizeof *pre_v) : NULL;
    if (!pre_v) {
        if (out)
            fprintf(stderr, "gkrun bench: out of memory for %lld results\n", (long long)reps);
        goto out;
    }
    for (int64_t i = 0; i < n_ctx_ids; i++)
        prompt[i] = (int32_t)((i * 7919 + 17) % cfg->n_vocab);
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = n_new;
    gk_gen_stats last = {0};
    for (int64_t r = 0; r <= reps; r++) { /* the first run warms up */
        gk_gen_stats st;
        int64_t n_out;
        if (gk_model_generate(m, prompt, n_ctx_ids, &o, out, &n_out, &st, &err) != GK_OK) {
            rc = gkrun_fail(&err);
            goto out;
        }
        if (r == 0)
            continue;
        /* -n 1 measures no decode step: its rate is 0 */
        dec_v[r - 1] = st.n_gen > 1 && st.t_decode_s > 0 ? (double)(st.n_gen - 1) / st.t_decode_s : 0;
        pre_v[r - 1] = st.t_prefill_s > 0 ? (double)st.n_prompt / st.t_prefill_s : 0;
        last = st;
    }
    spread dec = spread_of(dec_v, reps), pre = spread_of(pre_v, reps);
    gk_device_props dev;
    if (gk_model_device(m, &dev, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    double wbytes = (double)gk_model_weight_bytes(m);
    /* what a step reads: the selected experts of an MoE, one embedding row */
    double sbytes = (double)gk_model_step_weight_bytes(m);
    double achieved = dec.median * sbytes / 1e9;
    double roof = dev.peak_bw_gbs > 0 && sbytes > 0 ? dev.peak_bw_gbs * 1e9 / sbytes : 0;
    char path[256]; /* how the last decode step ran */
    gk_model_path_note(m, path, sizeof path);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", dir);
        cJSON_AddStringToObject(j, "arch", gk_model_spec_of(m)->name);
        cJSON_AddStringToObject(j, "dtype", gk_dtype_name(gk_model_dtype(m)));
        cJSON_AddStringToObject(j, "kv_dtype", gk_dtype_name(gk_model_kv_dtype(m)));
        cJSON_AddStringToObject(j, "backend", gk_model_backend_name(m));
        cJSON_AddStringToObject(j, "device", dev.name);
        cJSON_AddNumberToObject(j, "weight_bytes", wbytes);
        cJSON_AddNumberToObject(j, "step_weight_bytes", sbytes);
        cJSON_AddNumberToObject(j, "depth", (double)depth);
        cJSON_AddNumberToObject(j, "n_prompt", (double)n_prompt);
        cJSON_AddNumberToObject(j, "n_prefill", (double)last.n_prompt); /* depth + prompt */
        cJSON_AddNumberToObject(j, "n_gen", (double)last.n_gen);
        cJSON_AddNumberToObject(j, "reps", (double)reps);
        const spread *sp[2] = {&pre, &dec};
        const char *names[2] = {"prefill_tokens_per_s", "decode_tokens_per_s"};
        for (int k = 0; k < 2; k++) {
            cJSON *o2 = cJSON_AddObjectToObject(j, names[k]);
            cJSON_AddNumberToObject(o2, "median", sp[k]->median);
            cJSON_AddNumberToObject(o2, "min", sp[k]->min);
            cJSON_AddNumberToObject(o2, "max", sp[k]->max);
        }
        cJSON_AddNumberToObject(j, "weights_gb_per_s", achieved);
        cJSON_AddNumberToObject(j, "peak_gb_per_s", dev.peak_bw_gbs);
        cJSON_AddNumberToObject(j, "roofline_tokens_per_s", roof);
        cJSON_AddNumberToObject(j, "mem_peak_bytes", (double)gk_model_mem_peak(m));
        cJSON_AddNumberToObject(j, "n_ubatch", (double)gk_model_n_ubatch(m));
        cJSON_AddStringToObject(j, "decode_path", path);
        cJSON_AddNumberToObject(j, "cache_rows_layer0", (double)gk_model_cache_rows(m, 0));
        char *txt = cJSON_PrintUnformatted(j);
        if (txt)
            puts(txt);
        free(txt);
        cJSON_Delete(j);
    } else {
        printf("bench %s: %s, %s weights (%.2f GB), %s KV cache, %s on %s\n", dir, gk_model_spec_of(m)->name,
               gk_dtype_name(gk_model_dtype(m)), wbytes / 1e9, gk_dtype_name(gk_model_kv_dtype(m)),
               gk_model_backend_name(m), dev.name);
        if (depth)
            printf("context: %lld tokens of depth before the %lld-token prompt\n", (long long)depth,
                   (long long)n_prompt);
        printf("prefill: %lld tokens at %.1f tokens/s (median of %lld; %.1f..%.1f)\n", (long long)last.n_prompt,
               pre.median, (long long)reps, pre.min, pre.max);
        printf("decode:  %lld tokens at %.1f tokens/s (%.3f ms/token; median of %lld, %.1f..%.1f), weights "
               "streamed at %.1f GB/s\n",
               (long long)last.n_gen, dec.median, dec.median > 0 ? 1e3 / dec.median : 0.0, (long long)reps, dec.min,
               dec.max, achieved);
        if (roof > 0)
            printf("roofline: %.2f GB read per step, %.1f GB/s peak -> %.1f tokens/s; decode at %.1f%% of it\n",
                   sbytes / 1e9, dev.peak_bw_gbs, roof, 100.0 * achieved / dev.peak_bw_gbs);
        char kv[160];
        printf("peak memory on the backend: %.2f GB (%s)\n", gk_model_mem_peak(m) / 1e9,
               gkrun_cache_desc(m, kv, sizeof kv));
        if (path[0])
            printf("decode path: %s\n", path);
    }
    rc = 0;
out:
    free(dec_v);
    free(pre_v);
    free(prompt);
    free(out);
    gk_model_destroy(m);
    gk_runtime_destroy(rt);
    return rc;
}
