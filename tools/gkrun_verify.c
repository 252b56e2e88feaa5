/* gkrun verify - check a model folder against reference data in the layout of
 * the reference pack (golden.safetensors beside the weights): logits of every
 * prompt at every position, per-layer hidden states, greedy generation through
 * the KV cache, and teacher-forced logits one token at a time through the cache.
 *
 * Tolerances: float32 compute, --tol absolute (default 1e-3). float16 and
 * bfloat16 weights: 1e-2 (f16) or 3e-2 (bf16) times max|golden| of the tensor
 * compared; argmax must agree wherever the golden top-1/top-2 margin exceeds
 * twice that bound, and generation is checked teacher-forced only, since a
 * correct low-precision model may take the other branch at a near tie.
 */
#include "gkrun.h"
#include "gkrun_args.h"
#include "gkrun_template.h"
#include "gkrun_tokenize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct verify {
    gk_model *m;
    gk_safetensors *golden;
    int64_t n_vocab, n_embd;
    double tol;          /* absolute, f32; relative factor otherwise */
    bool low_precision;
    int n_pass, n_fail;
} verify;

/* n x cols floats, or NULL when that does not fit or cannot be had. */
static float *alloc_rows(int64_t n, int64_t cols)
{
    size_t k;
    if (n < 0 || cols < 0 || !gk_size_mul((size_t)n, (size_t)cols, &k) || !gk_size_mul(k ? k : 1, sizeof(float), &k))
        return NULL;
    return malloc(k);
}

/* The golden logits must hold n rows of the vocabulary; else NULL after saying so. */
static float *check_rows(float *want, size_t cnt, const char *name, int64_t n, int64_t cols)
{
    if (want && cnt != (size_t)n * (size_t)cols) {
        fprintf(stderr, "gkrun: %s: golden '%s' holds %zu values, not %lld x %lld\n", gk_status_str(GK_ERR_FORMAT),
                name, cnt, (long long)n, (long long)cols);
        free(want);
        return NULL;
    }
    return want;
}

/* Load a golden tensor as floats (or ids). NULL after printing why. */
static float *golden_f32(verify *v, const char *name, size_t *count)
{
    gk_tensor_info ti;
    gk_err err = {0};
    if (gk_safetensors_info(v->golden, name, &ti, &err) != GK_OK) {
        gkrun_fail(&err);
        return NULL;
    }
    size_t n = 1, bytes;
    for (int d = 0; d < ti.n_dims; d++)
        if (ti.shape[d] < 0 || !gk_size_mul(n, (size_t)ti.shape[d], &n))
            n = SIZE_MAX;
    if (n == SIZE_MAX || !gk_size_mul(n ? n : 1, sizeof(float), &bytes)) {
        fprintf(stderr, "gkrun: %s: golden tensor '%s' is too large\n", gk_status_str(GK_ERR_FORMAT), name);
        return NULL;
    }
    float *x = malloc(bytes);
    if (x && gk_safetensors_read_f32(v->golden, name, x, n, &err) != GK_OK) {
        gkrun_fail(&err);
        free(x);
        return NULL;
    }
    *count = n;
    return x;
}

static int32_t *golden_ids(verify *v, const char *name, int64_t *count)
{
    gk_tensor_info ti;
    gk_err err = {0};
    if (gk_safetensors_info(v->golden, name, &ti, &err) != GK_OK) {
        gkrun_fail(&err);
        return NULL;
    }
    int64_t n = ti.n_dims ? ti.shape[0] : 1;
    size_t bytes;
    if (ti.n_dims > 1 || n < 1 || !gk_size_mul((size_t)n, sizeof(int64_t), &bytes)) {
        fprintf(stderr, "gkrun: %s: golden tensor '%s' is not a list of ids\n", gk_status_str(GK_ERR_FORMAT), name);
        return NULL;
    }
    int64_t *tmp = malloc(bytes);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!tmp || !ids || gk_safetensors_read_i64(v->golden, name, tmp, (size_t)n, &err) != GK_OK) {
        if (err.msg[0])
            gkrun_fail(&err);
        free(tmp);
        free(ids);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        if (tmp[i] < 0 || tmp[i] > INT32_MAX) {
            fprintf(stderr, "gkrun: %s: golden tensor '%s' holds id %lld, not a token id\n",
                    gk_status_str(GK_ERR_FORMAT), name, (long long)tmp[i]);
            free(tmp);
            free(ids);
            return NULL;
        }
        ids[i] = (int32_t)tmp[i];
    }
    free(tmp);
    *count = n;
    return ids;
}

/* Compare rows x rows of width w; report one check line. For low precision
 * the bound scales with max|golden| and argmax is checked where decisive. */
static void compare(verify *v, const char *what, const float *got, const float *want, int64_t rows,
                    int64_t w, bool is_logits)
{
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < rows * w; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= max_err))
            max_err = isnan(e) ? INFINITY : e;
        if (fabs(want[i]) > max_ref)
            max_ref = fabs(want[i]);
    }
    double bound = v->low_precision ? v->tol * max_ref : v->tol;
    bool ok = max_err <= bound;
    int argmax_bad = 0;
    if (is_logits) {
        for (int64_t r = 0; r < rows; r++) {
            const float *g = got + r * w, *y = want + r * w;
            int64_t a = 0, b = -1, ga = 0;
            for (int64_t j = 1; j < w; j++) {
                if (y[j] > y[a]) {
                    b = a;
                    a = j;
                } else if (b < 0 || y[j] > y[b]) {
                    b = j;
                }
                if (g[j] > g[ga])
                    ga = j;
            }
            double margin = b >= 0 ? (double)y[a] - (double)y[b] : INFINITY;
            bool decisive = v->low_precision ? margin > 2 * bound : true;
            if (decisive && ga != a)
                argmax_bad++;
        }
        ok = ok && argmax_bad == 0;
    }
    printf("%-36s max|err| %.3e  bound %.3e%s  %s\n", what, max_err, bound,
           argmax_bad ? "  (argmax differs)" : "", ok ? "PASS" : "FAIL");
    if (ok)
        v->n_pass++;
    else
        v->n_fail++;
}

static void fail_line(verify *v, const char *what, const gk_err *err)
{
    printf("%-36s error: %s  FAIL\n", what, err->msg);
    v->n_fail++;
}

/* ids from an empty cache, a micro-batch (gk_model_n_ubatch) per forward
 * call, so the logits of every row can be read: into got [n][n_vocab]. */
static bool forward_logits(verify *v, const int32_t *ids, int64_t n, float *got, gk_err *err)
{
    int64_t ub = gk_model_n_ubatch(v->m), step = ub > 0 && ub < n ? ub : n;
    if (gk_model_truncate(v->m, 0, err) != GK_OK)
        return false;
    for (int64_t t = 0; t < n; t += step) {
        int64_t k = n - t < step ? n - t : step;
        if (gk_model_forward(v->m, ids + t, k, NULL, err) != GK_OK ||
            gk_model_logits(v->m, got + t * v->n_vocab, err) != GK_OK)
            return false;
    }
    return true;
}

/* One forward pass over prompt K without the cache: logits at every position. */
static void check_prompt(verify *v, int k)
{
    char ids_name[32], logits_name[32], what[64];
    snprintf(ids_name, sizeof ids_name, "p%d.ids", k);
    snprintf(logits_name, sizeof logits_name, "p%d.logits", k);
    if (!gk_safetensors_has(v->golden, ids_name))
        return;
    int64_t n = 0;
    size_t cnt = 0;
    int32_t *ids = golden_ids(v, ids_name, &n);
    float *want = ids ? golden_f32(v, logits_name, &cnt) : NULL;
    want = check_rows(want, cnt, logits_name, n, v->n_vocab);
    float *got = ids ? alloc_rows(n, v->n_vocab) : NULL;
    gk_err err = {0};
    snprintf(what, sizeof what, "prompt p%d logits (%lld tokens)", k, (long long)n);
    if (!ids || !want || !got) {
        v->n_fail++;
    } else if (!forward_logits(v, ids, n, got, &err)) {
        fail_line(v, what, &err);
    } else {
        compare(v, what, got, want, n, v->n_vocab, true);
    }
    free(ids);
    free(want);
    free(got);
}

/* The index of node `name` of layer `layer` in the last forward, or -1. */
static size_t find_node(gk_model *m, const char *name, int layer)
{
    size_t idx = (size_t)-1;
    for (size_t i = 0; i < gk_model_node_count(m); i++) {
        const char *nm;
        int l;
        gk_model_node_info(m, i, &nm, &l, NULL, NULL);
        if (!strcmp(nm, name) && l == layer)
            idx = i;
    }
    return idx;
}

/* Hidden states of p1 after each block (read from the graph's named nodes,
 * a micro-batch at a time). */
static void check_hidden(verify *v)
{
    int64_t n = 0;
    int32_t *ids = golden_ids(v, "p1.ids", &n);
    gk_err err = {0};
    int64_t n_layer = gk_model_config(v->m)->n_layer;
    float *got = ids ? alloc_rows((n_layer + 1) * n, v->n_embd) : NULL; /* [L][n][n_embd] */
    bool *found = calloc((size_t)n_layer + 1, sizeof *found);
    int64_t ub = gk_model_n_ubatch(v->m), step = ub > 0 && ub < n ? ub : n;
    bool ok = ids && got && found && gk_model_truncate(v->m, 0, &err) == GK_OK;
    for (int64_t L = 0; ok && L <= n_layer; L++)
        found[L] = true;
    for (int64_t t = 0; ok && t < n; t += step) {
        int64_t k = n - t < step ? n - t : step;
        ok = gk_model_forward(v->m, ids + t, k, NULL, &err) == GK_OK;
        for (int64_t L = 0; ok && L <= n_layer; L++) {
            const char *want_node = L == 0 ? "embd" : L == n_layer ? "out_norm" : "l_out";
            size_t idx = find_node(v->m, want_node, L == 0 || L == n_layer ? -1 : (int)(L - 1));
            if (idx == (size_t)-1)
                found[L] = false;
            else
                ok = gk_model_node_read(v->m, idx, got + (L * n + t) * v->n_embd, &err) == GK_OK;
        }
    }
    if (!ok) {
        fail_line(v, "p1 hidden states", &err);
        n_layer = -1;
    }
    for (int64_t L = 0; L <= n_layer; L++) {
        const char *want_node = L == 0 ? "embd" : L == n_layer ? "out_norm" : "l_out";
        char gname[48], what[64];
        snprintf(gname, sizeof gname, "p1.hidden.%lld", (long long)L);
        snprintf(what, sizeof what, "p1 hidden state %lld (%s)", (long long)L, want_node);
        size_t cnt;
        float *want = golden_f32(v, gname, &cnt);
        if (!want || !found[L] || cnt != (size_t)(n * v->n_embd)) {
            printf("%-36s missing node or golden tensor  FAIL\n", what);
            v->n_fail++;
        } else {
            compare(v, what, got + L * n * v->n_embd, want, n, v->n_embd, false);
        }
        free(want);
    }
    free(found);
    free(got);
    free(ids);
}

/* Feed ids one token at a time through the cache; compare each step's logits. */
static void check_teacher_forced(verify *v, const char *ids_name, const char *logits_name)
{
    if (!gk_safetensors_has(v->golden, ids_name))
        return;
    int64_t n = 0;
    size_t cnt = 0;
    int32_t *ids = golden_ids(v, ids_name, &n);
    float *want = ids ? golden_f32(v, logits_name, &cnt) : NULL;
    want = check_rows(want, cnt, logits_name, n, v->n_vocab);
    float *got = ids ? alloc_rows(n, v->n_vocab) : NULL;
    char what[64];
    snprintf(what, sizeof what, "%s one at a time (%lld steps)", ids_name, (long long)n);
    gk_err err = {0};
    bool ok = ids && want && got && gk_model_truncate(v->m, 0, &err) == GK_OK;
    for (int64_t t = 0; ok && t < n; t++)
        ok = gk_model_forward(v->m, &ids[t], 1, NULL, &err) == GK_OK &&
             gk_model_logits(v->m, got + t * v->n_vocab, &err) == GK_OK;
    if (ok)
        compare(v, what, got, want, n, v->n_vocab, true);
    else
        fail_line(v, what, &err);
    free(ids);
    free(want);
    free(got);
}

/* Greedy generation through the cache must reproduce the golden tokens. */
static void check_greedy(verify *v, const char *ids_name, int64_t n_prompt)
{
    if (!gk_safetensors_has(v->golden, ids_name))
        return;
    int64_t n = 0;
    int32_t *ids = golden_ids(v, ids_name, &n);
    char what[64];
    snprintf(what, sizeof what, "greedy from %s[:%lld]", ids_name, (long long)n_prompt);
    if (!ids) {
        v->n_fail++;
        return;
    }
    int64_t n_new = n - n_prompt, n_out = 0;
    int32_t *out = malloc((size_t)(n_new > 0 ? n_new : 1) * sizeof *out);
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = n_new;
    gk_err err = {0};
    if (!out || gk_model_generate(v->m, ids, n_prompt, &o, out, &n_out, NULL, &err) != GK_OK) {
        fail_line(v, what, &err);
    } else {
        int64_t first_bad = -1;
        for (int64_t i = 0; i < n_new && first_bad < 0; i++)
            if (i >= n_out || out[i] != ids[n_prompt + i])
                first_bad = i;
        printf("%-36s %lld/%lld tokens match%s  %s\n", what, (long long)(first_bad < 0 ? n_new : first_bad),
               (long long)n_new, first_bad < 0 ? "" : " (first difference shown)", first_bad < 0 ? "PASS" : "FAIL");
        if (first_bad < 0)
            v->n_pass++;
        else
            v->n_fail++;
    }
    free(out);
    free(ids);
}

int gkrun_verify(int argc, char **argv, const gkrun_common *common)
{
    const char *dir = NULL, *backend = NULL, *dtype = NULL, *kv_dtype = NULL;
    double tol = 0; /* 0: the default for the dtype */
    int64_t ubatch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--ubatch") && i + 1 < argc) {
            if (!gkrun_arg_i64("--ubatch", argv[++i], 1, INT32_MAX, &ubatch))
                return 2;
        }
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc)
            kv_dtype = argv[++i];
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
            if (!gkrun_arg_f64_pos("--tol", argv[++i], INFINITY, &tol))
                return 2;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "gkrun verify: unknown option '%s'\n", argv[i]);
            return 2;
        } else
            dir = argv[i];
    }
    if (!dir) {
        fprintf(stderr, "usage: gkrun verify DIR [--backend NAME] [--dtype f32|f16|bf16] [--kv-dtype D] [--ubatch N] "
                        "[--tol X]\n");
        return 2;
    }
    if (gkrun_is_chat_golden(dir))
        return gkrun_verify_chat(dir);
    char golden_path[4096], tok_golden[4096];
    snprintf(golden_path, sizeof golden_path, "%s/golden.safetensors", dir);
    snprintf(tok_golden, sizeof tok_golden, "%s/golden.json", dir);
    /* a tokenizer folder: golden.json of cases, no golden.safetensors */
    if (access(golden_path, F_OK) != 0 && access(tok_golden, F_OK) == 0)
        return gkrun_verify_tokenizer(dir);
    verify v = {0};
    gk_err err = {0};
    int rc = 1;
    gk_runtime *rt = gkrun_runtime(common);
    if (!rt)
        return 1;
    if (gk_safetensors_open(golden_path, &v.golden, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    gk_model_opts mo = {.backend = backend, .dtype = dtype, .kv_dtype = kv_dtype, .n_ubatch = ubatch};
    if (gk_model_load(rt, dir, &mo, &v.m, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    v.n_vocab = gk_model_config(v.m)->n_vocab;
    v.n_embd = gk_model_config(v.m)->n_embd;
    gk_dtype dt = gk_model_dtype(v.m);
    v.low_precision = dt != GK_DTYPE_F32;
    v.tol = tol > 0 ? tol : dt == GK_DTYPE_F16 ? 1e-2 : dt == GK_DTYPE_BF16 ? 3e-2 : 1e-3;
    char kv[160];
    printf("verify %s: %s on %s, %s weights, tolerance %s %g, %s\n", dir, gk_model_spec_of(v.m)->name,
           gk_model_backend_name(v.m), gk_dtype_name(dt), v.low_precision ? "x max|golden|" : "abs", v.tol,
           gkrun_cache_desc(v.m, kv, sizeof kv));

    for (int k = 0; k < 4; k++)
        check_prompt(&v, k);
    check_hidden(&v);
    check_teacher_forced(&v, "gen.ids", "gen.logits");
    check_teacher_forced(&v, "gen3.ids", "gen3.logits");
    if (!v.low_precision) {
        int64_t n1;
        int32_t *p1 = golden_ids(&v, "p1.ids", &n1);
        free(p1);
        check_greedy(&v, "gen.ids", n1);
        if (gk_safetensors_has(v.golden, "p3.ids")) {
            int64_t n3;
            int32_t *p3 = golden_ids(&v, "p3.ids", &n3);
            free(p3);
            check_greedy(&v, "gen3.ids", n3);
        }
    }
    printf("summary: %d passed, %d failed: %s\n", v.n_pass, v.n_fail, v.n_fail ? "FAIL" : "PASS");
    rc = v.n_fail ? 1 : 0;
out:
    gk_model_destroy(v.m);
    gk_safetensors_close(v.golden);
    gk_runtime_destroy(rt);
    return rc;
}
