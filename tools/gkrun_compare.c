/* gkrun compare - run the same tokens through two backends and diff every
 * named graph node, layer by layer, to find the first op that diverges.
 *
 *   gkrun compare -m DIR --backend cuda --reference cpu_ref [--dtype D]
 *                 [--ids 1,2,3] [--tol X] [--all]
 *
 * Bound per node: tol x max|reference| of that node (default tol: 1e-3 for
 * f32, 1e-2 for f16, 3e-2 for bf16, as verify's). The exit status is non-zero
 * when the logits differ beyond it; earlier nodes over it are marked, the first
 * one with "<-- first".
 */
#include "gkrun.h"
#include "gkrun_args.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --ids 1,2,3: each id a whole integer in [0, INT32_MAX] (the model checks it
 * against its vocabulary). 0, or 2 after the message (1 when out of memory). */
static int parse_ids(const char *s, int32_t **out, int64_t *n)
{
    size_t count = 1, bytes;
    for (const char *p = s; *p; p++)
        count += *p == ',';
    char *copy = strdup(s);
    int32_t *ids = gk_size_mul(count, sizeof *ids, &bytes) ? malloc(bytes) : NULL;
    if (!copy || !ids) {
        free(copy);
        free(ids);
        fprintf(stderr, "gkrun compare: out of memory: %zu ids\n", count);
        return 1;
    }
    char *item = copy;
    for (size_t k = 0; k < count; k++) {
        char *comma = strchr(item, ',');
        if (comma)
            *comma = '\0';
        int64_t v;
        if (!gkrun_arg_i64("--ids", item, 0, INT32_MAX, &v)) {
            free(copy);
            free(ids);
            return 2;
        }
        ids[k] = (int32_t)v;
        item = comma ? comma + 1 : item + strlen(item);
    }
    free(copy);
    *out = ids;
    *n = (int64_t)count;
    return 0;
}

int gkrun_compare(int argc, char **argv, const gkrun_common *common)
{
    const char *dir = NULL, *backend = "cuda", *reference = "cpu_ref", *dtype = NULL, *kv_dtype = NULL, *ids_s = NULL;
    double tol = 0; /* 0: the default for the dtype */
    int64_t ubatch = 0;
    bool all = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            backend = argv[++i];
        else if (!strcmp(argv[i], "--reference") && i + 1 < argc)
            reference = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc)
            kv_dtype = argv[++i];
        else if (!strcmp(argv[i], "--ids") && i + 1 < argc)
            ids_s = argv[++i];
        else if (!strcmp(argv[i], "--ubatch") && i + 1 < argc) {
            if (!gkrun_arg_i64("--ubatch", argv[++i], 1, INT32_MAX, &ubatch))
                return 2;
        }
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
            if (!gkrun_arg_f64_pos("--tol", argv[++i], INFINITY, &tol))
                return 2;
        }
        else if (!strcmp(argv[i], "--all"))
            all = true;
        else {
            fprintf(stderr, "gkrun compare: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: gkrun compare -m DIR [--backend cuda] [--reference cpu_ref] [--dtype D] "
                        "[--ids 1,2,3] [--tol X] [--all]\n");
        return 2;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = ids_s ? parse_ids(ids_s, &ids, &n) : 0; /* before the slow part */
    if (rc != 0)
        return rc;
    gk_runtime *rt = gkrun_runtime(common);
    if (!rt) {
        free(ids);
        return 1;
    }
    rc = 1;
    gk_err err = {0};
    gk_model *a = NULL, *b = NULL;
    float *xa = NULL, *xb = NULL;
    gk_model_opts oa = {.backend = backend, .dtype = dtype, .kv_dtype = kv_dtype, .n_ubatch = ubatch},
                  ob = {.backend = reference, .dtype = dtype, .kv_dtype = kv_dtype, .n_ubatch = ubatch};
    if (gk_model_load(rt, dir, &oa, &a, &err) != GK_OK || gk_model_load(rt, dir, &ob, &b, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    const gk_config *cfg = gk_model_config(a);
    if (!ids_s) {
        /* a fixed spread of ids over the vocabulary */
        n = 8;
        ids = malloc((size_t)n * sizeof *ids);
        for (int64_t i = 0; ids && i < n; i++)
            ids[i] = (int32_t)((i * 7919 + 17) % cfg->n_vocab);
    }
    size_t logits_bytes;
    if (ids && gk_size_mul((size_t)n, (size_t)cfg->n_vocab, &logits_bytes) &&
        gk_size_mul(logits_bytes, sizeof *xa, &logits_bytes)) {
        xa = malloc(logits_bytes);
        xb = malloc(logits_bytes);
    }
    if (!ids || !xa || !xb) {
        fprintf(stderr, "gkrun compare: out of memory\n");
        goto out;
    }
    /* the ids before the last micro-batch, then that one: its nodes and
     * logits are compared (all of them without micro-batches) */
    int64_t ub = gk_model_n_ubatch(a), last = ub > 0 && ub < n ? ub : n, head = n - last;
    if ((head && (gk_model_forward(a, ids, head, NULL, &err) != GK_OK ||
                  gk_model_forward(b, ids, head, NULL, &err) != GK_OK)) ||
        gk_model_forward(a, ids + head, last, NULL, &err) != GK_OK || gk_model_logits(a, xa, &err) != GK_OK ||
        gk_model_forward(b, ids + head, last, NULL, &err) != GK_OK || gk_model_logits(b, xb, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    if (head)
        printf("compare: %lld tokens as micro-batches of %lld; the last %lld are compared\n", (long long)n,
               (long long)ub, (long long)last);
    n = last;
    gk_dtype dt = gk_model_dtype(a);
    if (tol <= 0)
        tol = dt == GK_DTYPE_F16 ? 1e-2 : dt == GK_DTYPE_BF16 ? 3e-2 : 1e-3;
    printf("compare %s: %s vs %s, %s weights, %lld tokens, bound %g x max|ref| per node\n", dir, backend,
           reference, gk_dtype_name(dt), (long long)n, tol);
    printf("%-6s %-12s %-14s %12s %12s %12s\n", "layer", "node", "shape", "max|err|", "max|ref|", "rel");
    size_t count = gk_model_node_count(a);
    if (count != gk_model_node_count(b)) {
        fprintf(stderr, "gkrun compare: the graphs differ (%zu vs %zu nodes)\n", count, gk_model_node_count(b));
        goto out;
    }
    bool first_marked = false, logits_bad = false;
    int over = 0;
    for (size_t i = 0; i < count; i++) {
        const char *name;
        int layer;
        int64_t rows, cols;
        gk_model_node_info(a, i, &name, &layer, &rows, &cols);
        size_t len, bytes;
        float *na = NULL, *nb = NULL;
        if (gk_size_mul((size_t)rows, (size_t)cols, &len) && gk_size_mul(len, sizeof *na, &bytes)) {
            na = malloc(bytes);
            nb = malloc(bytes);
        }
        if (!na || !nb || gk_model_node_read(a, i, na, &err) != GK_OK || gk_model_node_read(b, i, nb, &err) != GK_OK) {
            free(na);
            free(nb);
            rc = err.msg[0] ? gkrun_fail(&err) : 1;
            goto out;
        }
        double max_err = 0, max_ref = 0;
        for (size_t k = 0; k < len; k++) {
            double e = fabs((double)na[k] - (double)nb[k]);
            if (!(e <= max_err))
                max_err = isnan(e) ? INFINITY : e;
            if (fabs(nb[k]) > max_ref)
                max_ref = fabs(nb[k]);
        }
        free(na);
        free(nb);
        double rel = max_ref > 0 ? max_err / max_ref : max_err;
        bool bad = !(rel <= tol);
        over += bad;
        if (!strcmp(name, "logits"))
            logits_bad = bad;
        const char *mark = "";
        if (bad && !first_marked) {
            mark = "  <-- first over the bound";
            first_marked = true;
        } else if (bad) {
            mark = "  over";
        }
        if (all || bad || layer < 0 || !strcmp(name, "l_out")) {
            char shape[32];
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)rows, (long long)cols);
            printf("%-6d %-12s %-14s %12.4e %12.4e %12.4e%s\n", layer, name, shape, max_err, max_ref, rel, mark);
        }
    }
    printf("summary: %zu nodes, %d over the bound; logits %s\n", count, over,
           logits_bad ? "DIFFER beyond the bound: FAIL" : "within the bound: PASS");
    rc = logits_bad ? 1 : 0;
out:
    free(ids);
    free(xa);
    free(xb);
    gk_model_destroy(a);
    gk_model_destroy(b);
    gk_runtime_destroy(rt);
    return rc;
}
