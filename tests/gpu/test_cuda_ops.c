/* test_cuda_ops.c - every graph op of the cuda backend against cpu_ref, the
 * oracle, on the same inputs; plus sampling, CUDA-graph replay and the
 * errors kernels report through the device.
 *
 * Both plugins are dlopen'd from the build tree inside each test (Criterion
 * runs each test in a forked child; the parent never touches CUDA), and the
 * test skips when the cuda backend says no GPU is usable. Inputs come from a
 * fixed-seed generator and are never all zeros; every CUDA output is poisoned
 * with NaN before a run, so an element a kernel forgot to write fails.
 *
 * Error bounds (per element, |cuda - cpu_ref|):
 *   get_rows, add               exact (the same float operation)
 *   silu_mul, gelu_tanh         1e-6 abs + 2e-6 rel  (CUDA expf/tanhf: 2 ulp)
 *   rms_norm                    1e-6 abs + 1e-5 rel  (tree vs sequential sums)
 *   layer_norm                  1e-5 abs + 1e-5 rel  (offset inputs: the mean's rounding)
 *   rope                        1e-6 abs + 1e-5 rel  (sincosf vs cosf/sinf, FMA)
 *   linear, GEMV (n <= 8)       1e-5 * sum|x w|       (any weight dtype: the same
 *                                                      decoded weights, float sums)
 *   linear, cuBLAS F32          3e-5 * sum|x w|       (no TF32; other sum order)
 *   linear, cuBLAS F16 / BF16   2e-3 / 8e-3 * sum|x w| (x rounded to the weight
 *                               dtype for the tensor cores: at most 2^-11 / 2^-8
 *                               of sum|x w|, plus the float sums)
 *   attn                        2e-5 abs + 1e-5 rel   (|v| < 1; online softmax; any cache
 *                                                      dtype: both read the same stored values)
 *   attn, prefill (n > 8) over  2e-3 / 1.2e-2 abs     (tensor cores: q and the probabilities
 *     an F16 / BF16 cache                              rounded to the cache dtype, 2^-11 / 2^-8)
 *   kv cache rows               exact bytes           (both round to nearest even)
 *   sample                      exact ids (the same rule, replicated here)
 *
 * When every test skipped, the program exits 77, which meson shows as SKIP.
 */
#include "gk/gk.h"
#include "gk/gk_plugin.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- the plugins */

typedef struct plug {
    void *dl;
    const gk_plugin_desc *desc;
    const gk_backend_ops *ops;
    void *state;
} plug;

enum { REF = 0, CU = 1 };
static plug be[2];

/* A tensor living on both backends: [REF] on cpu_ref, [CU] on cuda. */
typedef struct pt {
    gk_tensor t[2];
} pt;

#define MAX_PAIRS 4096
static pt *pairs[MAX_PAIRS];
static int n_pairs;

static void plug_close(plug *p)
{
    if (p->state && p->desc->fini)
        p->desc->fini(p->state);
    if (p->dl)
        dlclose(p->dl);
    memset(p, 0, sizeof *p);
}

/* Free the tensors made since the pool held `mark` of them. */
static void pairs_free_from(int mark)
{
    for (int i = mark; i < n_pairs; i++) {
        for (int s = 0; s < 2; s++)
            if (pairs[i]->t[s].data)
                be[s].ops->buffer_free(be[s].state, pairs[i]->t[s].data);
        free(pairs[i]);
    }
    n_pairs = mark;
}

static void teardown(void)
{
    pairs_free_from(0);
    plug_close(&be[CU]);
    plug_close(&be[REF]);
}

TestSuite(cuda_ops, .fini = teardown);

static void plug_open(plug *p, const char *dir, const char *name)
{
    const char *root = getenv("GK_TEST_BUILD_ROOT");
    cr_assert(root, "GK_TEST_BUILD_ROOT is not set (run through meson test)");
    char path[4096];
    snprintf(path, sizeof path, "%s/backends/%s/libgk-backend-%s.so", root, dir, name);
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert(p->dl, "dlopen %s: %s", path, dlerror());
    gk_plugin_entry_fn entry;
    *(void **)&entry = dlsym(p->dl, GK_PLUGIN_ENTRY_NAME);
    cr_assert(entry, "no %s in %s", GK_PLUGIN_ENTRY_NAME, path);
    p->desc = entry();
    cr_assert_eq(p->desc->abi_major, GK_ABI_MAJOR);
    cr_assert_str_eq(p->desc->name, name);
    gk_host host = {.abi_major = GK_ABI_MAJOR, .abi_minor = GK_ABI_MINOR};
    gk_err err = {0};
    cr_assert_eq(p->desc->init(&host, &p->state, &err), GK_OK, "%s init: %s", name, err.msg);
    p->ops = p->desc->ops;
    cr_assert_eq(p->ops->struct_size, sizeof(gk_backend_ops));
}

/* Every test starts here: both plugins up, or a skip when no GPU is usable. */
static void start(void)
{
    plug_open(&be[CU], "cuda", "cuda");
    char why[256] = "";
    if (!be[CU].ops->available(be[CU].state, why, sizeof why)) {
        plug_close(&be[CU]);
        cr_skip_test("no usable GPU: %s", why);
    }
    plug_open(&be[REF], "cpu_ref", "cpu_ref");
}

/* ------------------------------------------------------------ test values */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double rnd(void) /* uniform in [-1, 1), splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static float *rnd_vec(int64_t n, double scale, double offset)
{
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(offset + scale * rnd());
    return v;
}

static const gk_dtype wtypes[3] = {GK_DTYPE_F32, GK_DTYPE_F16, GK_DTYPE_BF16};

static const char *dt_str(gk_dtype d)
{
    return d == GK_DTYPE_F16 ? "F16" : d == GK_DTYPE_BF16 ? "BF16" : d == GK_DTYPE_F32 ? "F32" : "?";
}

/* ---------------------------------------------------------------- tensors */

static pt *pair_new(gk_dtype dt, int64_t rows, int64_t cols, const char *name)
{
    cr_assert(n_pairs < MAX_PAIRS, "tensor pool full");
    pt *p = calloc(1, sizeof *p);
    cr_assert(p);
    pairs[n_pairs++] = p;
    for (int s = 0; s < 2; s++) {
        gk_tensor *t = &p->t[s];
        t->dtype = dt;
        t->rows = rows;
        t->cols = cols;
        t->layer = -1;
        snprintf(t->name, sizeof t->name, "%s", name);
        gk_err err = {0};
        cr_assert_eq(be[s].ops->buffer_alloc(be[s].state, gk_tensor_nbytes(t), &t->data, &err), GK_OK,
                     "%s", err.msg);
    }
    return p;
}

static void upload(plug *b, gk_tensor *t, const void *src)
{
    gk_err err = {0};
    cr_assert_eq(b->ops->buffer_write(b->state, t->data, 0, src, gk_tensor_nbytes(t), &err), GK_OK, "%s",
                 err.msg);
}

static void pair_upload(pt *p, const void *src)
{
    upload(&be[REF], &p->t[REF], src);
    upload(&be[CU], &p->t[CU], src);
}

/* A tensor of dtype dt holding vals; vals becomes exactly what it holds. */
static pt *pair_f(gk_dtype dt, int64_t rows, int64_t cols, float *vals, const char *name)
{
    pt *p = pair_new(dt, rows, cols, name);
    int64_t ne = rows * cols;
    void *buf = malloc((size_t)ne * 4);
    cr_assert(buf);
    for (int64_t i = 0; i < ne; i++) {
        if (dt == GK_DTYPE_F16) {
            ((uint16_t *)buf)[i] = gk_f32_to_f16(vals[i]);
            vals[i] = gk_f16_to_f32(((uint16_t *)buf)[i]);
        } else if (dt == GK_DTYPE_BF16) {
            ((uint16_t *)buf)[i] = gk_f32_to_bf16(vals[i]);
            vals[i] = gk_bf16_to_f32(((uint16_t *)buf)[i]);
        } else {
            ((float *)buf)[i] = vals[i];
        }
    }
    pair_upload(p, buf);
    free(buf);
    return p;
}

static pt *pair_i(int64_t n, const int32_t *vals, const char *name)
{
    pt *p = pair_new(GK_DTYPE_I32, 1, n, name);
    pair_upload(p, vals);
    return p;
}

/* An I32 [rows][cols] tensor holding vals. */
static pt *pair_i2(int64_t rows, int64_t cols, const int32_t *vals, const char *name)
{
    pt *p = pair_new(GK_DTYPE_I32, rows, cols, name);
    pair_upload(p, vals);
    return p;
}

/* A fresh activation [rows][cols] of random values (scale, offset). */
static pt *pair_rnd(int64_t rows, int64_t cols, double scale, double offset, const char *name, float **vals)
{
    float *v = rnd_vec(rows * cols, scale, offset);
    pt *p = pair_f(GK_DTYPE_F32, rows, cols, v, name);
    if (vals)
        *vals = v;
    else
        free(v);
    return p;
}

/* t's elements as floats (F16 and BF16 widened). */
static float *download(int s, const gk_tensor *t)
{
    int64_t ne = gk_tensor_nelem(t);
    cr_assert(ne >= 0 && ne <= INT32_MAX, "tensor '%s' too large for a test", t->name);
    ne = ne > INT32_MAX ? 0 : ne; /* unreachable: keeps the size bounded for the compiler */
    float *out = malloc((size_t)(ne ? ne : 1) * sizeof *out);
    void *raw = malloc(gk_tensor_nbytes(t) ? gk_tensor_nbytes(t) : 1);
    cr_assert(out && raw);
    gk_err err = {0};
    cr_assert_eq(be[s].ops->buffer_read(be[s].state, t->data, 0, raw, gk_tensor_nbytes(t), &err), GK_OK, "%s",
                 err.msg);
    for (int64_t i = 0; i < ne; i++) {
        const uint16_t *h = raw;
        out[i] = t->dtype == GK_DTYPE_F16 ? gk_f16_to_f32(h[i])
               : t->dtype == GK_DTYPE_BF16 ? gk_bf16_to_f32(h[i])
                                           : ((const float *)raw)[i];
    }
    free(raw);
    return out;
}

/* NaN into every byte of the cuda side (0xff.. is a NaN). */
static void poison(pt *p)
{
    size_t nb = gk_tensor_nbytes(&p->t[CU]);
    void *buf = malloc(nb);
    cr_assert(buf);
    memset(buf, 0xff, nb);
    upload(&be[CU], &p->t[CU], buf);
    free(buf);
}

/* Rows [r0, r1) of both sides: no NaN on the cuda side, and within
 * atol + rtol * (mag ? mag[e] : |ref|) of cpu_ref. */
static void expect_rows(const pt *p, int64_t r0, int64_t r1, const double *mag, double rtol, double atol,
                        const char *what)
{
    float *r = download(REF, &p->t[REF]), *g = download(CU, &p->t[CU]);
    int64_t w = p->t[REF].cols;
    for (int64_t e = r0 * w; e < r1 * w; e++) {
        double tol = atol + rtol * (mag ? mag[e] : fabs((double)r[e]));
        cr_assert(!isnan(r[e]), "%s: cpu_ref gave NaN at [%lld][%lld]", what, (long long)(e / w),
                  (long long)(e % w));
        cr_assert(!isnan(g[e]) && fabs((double)g[e] - (double)r[e]) <= tol,
                  "%s: [%lld][%lld] cuda %.9g, cpu_ref %.9g (tol %.3g)", what, (long long)(e / w),
                  (long long)(e % w), g[e], r[e], tol);
    }
    free(r);
    free(g);
}

static void expect_match(const pt *p, const double *mag, double rtol, double atol, const char *what)
{
    expect_rows(p, 0, p->t[REF].rows, mag, rtol, atol, what);
}

/* ------------------------------------------------------------------ nodes */

typedef struct pnode {
    gk_op op;
    pt *src[GK_MAX_SRC];
    pt *dst;
    int32_t i[4];
    float f[4];
} pnode;

static gk_node side_node(const pnode *pn, int s)
{
    gk_node nd = {.op = pn->op};
    for (int k = 0; k < GK_MAX_SRC; k++)
        nd.src[k] = pn->src[k] ? &pn->src[k]->t[s] : NULL;
    nd.dst = &pn->dst->t[s];
    memcpy(nd.i, pn->i, sizeof nd.i);
    memcpy(nd.f, pn->f, sizeof nd.f);
    return nd;
}

/* A graph of up to 16 nodes on both backends; the gk_graph objects stay the
 * same across runs, as the core's do. */
typedef struct pgraph {
    gk_node nodes[2][16];
    gk_graph g[2];
    pt *dsts[16];
    int n;
} pgraph;

static void pgraph_init(pgraph *pg, const pnode *pns, int n)
{
    cr_assert(n <= 16);
    memset(pg, 0, sizeof *pg);
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < n; i++)
            pg->nodes[s][i] = side_node(&pns[i], s);
        pg->g[s] = (gk_graph){.nodes = pg->nodes[s], .n_nodes = (size_t)n,
                              .n_tokens = pg->nodes[s][n - 1].dst->rows};
    }
    for (int i = 0; i < n; i++) {
        pg->dsts[i] = pns[i].dst;
        cr_assert(be[CU].ops->supports_node(be[CU].state, &pg->nodes[CU][i]), "cuda refuses node %d (%s)", i,
                  gk_op_name(pns[i].op));
    }
    pg->n = n;
}

static void pgraph_run(pgraph *pg, const char *what)
{
    for (int i = 0; i < pg->n; i++)
        poison(pg->dsts[i]);
    for (int s = 0; s < 2; s++) {
        gk_err err = {0};
        gk_status st = be[s].ops->graph_compute(be[s].state, &pg->g[s], &err);
        if (st == GK_OK && be[s].ops->synchronize)
            st = be[s].ops->synchronize(be[s].state, &err);
        cr_assert_eq(st, GK_OK, "%s on %s: %s", what, s == CU ? "cuda" : "cpu_ref", err.msg);
    }
}

static void run1(const pnode *pn, const char *what)
{
    pgraph pg;
    pgraph_init(&pg, pn, 1);
    pgraph_run(&pg, what);
}

/* ------------------------------------------------------------- the backend */

Test(cuda_ops, reports_the_gpu_and_moves_bytes_both_ways)
{
    start();
    plug *c = &be[CU];
    gk_device_props p;
    gk_err err = {0};
    cr_assert_eq(c->ops->device_props(c->state, &p, &err), GK_OK, "%s", err.msg);
    cr_assert(p.is_gpu && p.name[0] && p.peak_bw_gbs > 0 && p.mem_free <= p.mem_total);

    /* small (direct) and large (staged through pinned memory) writes */
    const size_t sizes[2] = {4099, (size_t)150 << 20};
    for (int k = 0; k < 2; k++) {
        size_t n = sizes[k];
        unsigned char *in = malloc(n), *out = malloc(n);
        cr_assert(in && out);
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 131u + (i >> 13));
        void *buf;
        cr_assert_eq(c->ops->buffer_alloc(c->state, n + 64, &buf, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(c->ops->buffer_write(c->state, buf, 7, in, n, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(c->ops->buffer_read(c->state, (char *)buf + 3, 4, out, n, &err), GK_OK, "%s", err.msg);
        cr_assert(memcmp(in, out, n) == 0, "round trip of %zu bytes differs", n);
        c->ops->buffer_free(c->state, buf);
        free(in);
        free(out);
    }
}

Test(cuda_ops, refuses_what_it_cannot_run)
{
    start();
    plug *c = &be[CU];
    pt *q = pair_new(GK_DTYPE_F32, 1, 2 * 320, "q"), *k = pair_new(GK_DTYPE_F32, 1, 320, "k");
    pt *v = pair_new(GK_DTYPE_F32, 1, 320, "v"), *kc = pair_new(GK_DTYPE_F32, 8, 320, "k_cache");
    pt *vc = pair_new(GK_DTYPE_F32, 8, 320, "v_cache"), *pos = pair_new(GK_DTYPE_I32, 1, 1, "pos");
    pt *out = pair_new(GK_DTYPE_F32, 1, 2 * 320, "attn");
    pnode pn = {.op = GK_OP_ATTN, .src = {q, k, v, pos, kc, vc}, .dst = out, .i = {2, 1, 320}, .f = {0.05f}};
    gk_node nd = side_node(&pn, CU);
    cr_assert(!c->ops->supports_node(c->state, &nd), "head dim 320 is beyond the kernels");
    gk_graph g = {.nodes = &nd, .n_nodes = 1, .n_tokens = 1};
    gk_err err = {0};
    cr_assert_eq(c->ops->graph_compute(c->state, &g, &err), GK_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "attn"), "message: %s", err.msg);

    pt *w = pair_new(GK_DTYPE_F64, 4, 8, "w"), *x = pair_new(GK_DTYPE_F32, 1, 8, "x");
    pt *y = pair_new(GK_DTYPE_F32, 1, 4, "y");
    pnode lin = {.op = GK_OP_LINEAR, .src = {x, w}, .dst = y};
    nd = side_node(&lin, CU);
    cr_assert(!c->ops->supports_node(c->state, &nd), "F64 weights are not supported");
}

/* -------------------------------------------------------- element-wise ops */

static const int64_t ns[4] = {1, 7, 33, 513};

Test(cuda_ops, get_rows_matches_cpu_ref_exactly)
{
    start();
    const int64_t V = 1000, dims[2] = {37, 1000};
    for (int w = 0; w < 3; w++)
        for (int di = 0; di < 2; di++) {
            int64_t D = dims[di];
            float *tab = rnd_vec(V * D, 2.0, 0.0);
            pt *table = pair_f(wtypes[w], V, D, tab, "tok_embd");
            free(tab);
            for (int k = 0; k < 3; k++) {
                int64_t n = ns[k];
                int32_t id[64];
                for (int64_t t = 0; t < n; t++)
                    id[t] = t == 0 ? (int32_t)(V - 1) : t == 1 ? 0 : (int32_t)((t * 377 + 3) % V);
                pt *ids = pair_i(n, id, "ids"), *dst = pair_new(GK_DTYPE_F32, n, D, "embd");
                pnode pn = {.op = GK_OP_GET_ROWS, .src = {table, ids}, .dst = dst};
                run1(&pn, "get_rows");
                char what[64];
                snprintf(what, sizeof what, "get_rows %s D=%lld n=%lld", dt_str(wtypes[w]), (long long)D,
                         (long long)n);
                expect_match(dst, NULL, 0.0, 0.0, what);
            }
        }
}

Test(cuda_ops, get_rows_with_a_bad_id_is_reported_at_synchronize)
{
    start();
    float *tab = rnd_vec(5 * 3, 1.0, 0.0);
    pt *table = pair_f(GK_DTYPE_F32, 5, 3, tab, "tok_embd");
    free(tab);
    const int32_t bad[2] = {1, 5};
    pt *ids = pair_i(2, bad, "ids"), *dst = pair_new(GK_DTYPE_F32, 2, 3, "embd");
    pnode pn = {.op = GK_OP_GET_ROWS, .src = {table, ids}, .dst = dst};
    gk_node nd = side_node(&pn, CU);
    gk_graph g = {.nodes = &nd, .n_nodes = 1, .n_tokens = 2};
    gk_err err = {0};
    gk_status st = be[CU].ops->graph_compute(be[CU].state, &g, &err);
    if (st == GK_OK)
        st = be[CU].ops->synchronize(be[CU].state, &err);
    cr_assert_eq(st, GK_ERR_INVALID_ARG, "status %d: %s", st, err.msg);
    cr_assert(strstr(err.msg, "get_rows") && strstr(err.msg, "5"), "message: %s", err.msg);
    /* the note is cleared: the backend goes on working */
    cr_assert_eq(be[CU].ops->synchronize(be[CU].state, &err), GK_OK, "%s", err.msg);
}

static void binary_case(gk_op op, int64_t n, int64_t D, double rtol, double atol)
{
    pt *a = pair_rnd(n, D, 4.0, 0.0, "a", NULL), *b = pair_rnd(n, D, 3.0, 0.5, "b", NULL);
    pt *dst = pair_new(GK_DTYPE_F32, n, D, "out");
    pnode pn = {.op = op, .src = {a, op == GK_OP_GELU_TANH ? NULL : b}, .dst = dst};
    run1(&pn, gk_op_name(op));
    char what[64];
    snprintf(what, sizeof what, "%s [%lld][%lld]", gk_op_name(op), (long long)n, (long long)D);
    expect_match(dst, NULL, rtol, atol, what);
}

Test(cuda_ops, add_silu_mul_and_gelu_match_cpu_ref)
{
    start();
    const int64_t shapes[4][2] = {{1, 37}, {7, 1000}, {33, 4099}, {513, 64}};
    for (int s = 0; s < 4; s++) {
        binary_case(GK_OP_ADD, shapes[s][0], shapes[s][1], 0.0, 0.0);
        binary_case(GK_OP_SILU_MUL, shapes[s][0], shapes[s][1], 2e-6, 1e-6);
        binary_case(GK_OP_GELU_TANH, shapes[s][0], shapes[s][1], 2e-6, 1e-6);
    }
}

/* ------------------------------------------------------------------- norms */

Test(cuda_ops, rms_norm_whole_rows_and_groups_matches_cpu_ref)
{
    start();
    /* D, group (0 = whole row) */
    const int64_t cases[6][2] = {{37, 0}, {1000, 0}, {4096, 0}, {512, 64}, {1024, 128}, {96, 32}};
    for (int ci = 0; ci < 6; ci++)
        for (int w = 0; w < 3; w++)
            for (int k = 0; k < 3; k++) {
                int64_t D = cases[ci][0], G = cases[ci][1], n = ns[k];
                float *wv = rnd_vec(G ? G : D, 1.0, 1.0);
                pt *x = pair_rnd(n, D, 2.0, 0.3, "x", NULL), *tw = pair_f(wtypes[w], 1, G ? G : D, wv, "norm.w");
                free(wv);
                pt *dst = pair_new(GK_DTYPE_F32, n, D, "norm");
                pnode pn = {.op = GK_OP_RMS_NORM, .src = {x, tw}, .dst = dst, .i = {(int32_t)G}, .f = {1e-6f}};
                run1(&pn, "rms_norm");
                char what[80];
                snprintf(what, sizeof what, "rms_norm D=%lld G=%lld %s n=%lld", (long long)D, (long long)G,
                         dt_str(wtypes[w]), (long long)n);
                expect_match(dst, NULL, 1e-5, 1e-6, what);
            }
}

Test(cuda_ops, layer_norm_with_and_without_bias_matches_cpu_ref)
{
    start();
    const int64_t dims[3] = {37, 768, 1000};
    for (int di = 0; di < 3; di++)
        for (int w = 0; w < 3; w++)
            for (int k = 0; k < 3; k++)
                for (int hb = 0; hb < 2; hb++) {
                    int64_t D = dims[di], n = ns[k];
                    float *wv = rnd_vec(D, 1.0, 1.0), *bv = rnd_vec(D, 0.5, 0.0);
                    pt *x = pair_rnd(n, D, 1.5, 3.0, "x", NULL);
                    pt *tw = pair_f(wtypes[w], 1, D, wv, "ln.w"), *tb = pair_f(wtypes[w], 1, D, bv, "ln.b");
                    free(wv);
                    free(bv);
                    pt *dst = pair_new(GK_DTYPE_F32, n, D, "norm");
                    pnode pn = {.op = GK_OP_LAYER_NORM, .src = {x, tw, hb ? tb : NULL}, .dst = dst, .f = {1e-5f}};
                    run1(&pn, "layer_norm");
                    char what[80];
                    snprintf(what, sizeof what, "layer_norm D=%lld %s n=%lld bias=%d", (long long)D,
                             dt_str(wtypes[w]), (long long)n, hb);
                    /* outputs are unit-scale; the inputs' offset of 3 costs
                     * both sides ~eps * D * 3 in the mean, so 1e-5 absolute */
                    expect_match(dst, NULL, 1e-5, 1e-5, what);
                }
}

/* A residual ADD followed by a norm of its result runs as one fused kernel;
 * both outputs (the sum, read later as the residual, and the norm) must match
 * cpu_ref's two separate ops. A group norm (QK-norm shape) is not fused. */
Test(cuda_ops, residual_add_fused_with_the_next_norm_matches_cpu_ref)
{
    start();
    const int64_t dims[3] = {37, 1000, 2048};
    for (int di = 0; di < 3; di++)
        for (int w = 0; w < 3; w++)
            for (int k = 0; k < 4; k++)
                for (int kind = 0; kind < 3; kind++) {
                    int64_t D = dims[di], n = ns[k], G = kind == 2 ? (D % 2 ? D : D / 2) : 0;
                    float *wv = rnd_vec(G ? G : D, 1.0, 1.0), *bv = rnd_vec(D, 0.5, 0.0);
                    pt *a = pair_rnd(n, D, 2.0, 0.0, "a", NULL), *b = pair_rnd(n, D, 1.5, 0.3, "b", NULL);
                    pt *tw = pair_f(wtypes[w], 1, G ? G : D, wv, "norm.w"), *tb = pair_f(wtypes[w], 1, D, bv, "ln.b");
                    free(wv);
                    free(bv);
                    pt *sum = pair_new(GK_DTYPE_F32, n, D, "attn_res"), *dst = pair_new(GK_DTYPE_F32, n, D, "ffn_norm");
                    pnode pns[2] = {
                        {.op = GK_OP_ADD, .src = {a, b}, .dst = sum},
                        kind == 1 ? (pnode){.op = GK_OP_LAYER_NORM, .src = {sum, tw, tb}, .dst = dst, .f = {1e-5f}}
                                  : (pnode){.op = GK_OP_RMS_NORM, .src = {sum, tw}, .dst = dst,
                                            .i = {(int32_t)G}, .f = {1e-6f}},
                    };
                    pgraph pg;
                    pgraph_init(&pg, pns, 2);
                    pgraph_run(&pg, "add + norm");
                    char what[96];
                    snprintf(what, sizeof what, "add+%s D=%lld G=%lld %s n=%lld", kind == 1 ? "layer_norm" : "rms_norm",
                             (long long)D, (long long)G, dt_str(wtypes[w]), (long long)n);
                    expect_match(sum, NULL, 0.0, 0.0, what);
                    expect_match(dst, NULL, 1e-5, 1e-5, what);
                }
}

/* -------------------------------------------------------------------- rope */

Test(cuda_ops, rope_matches_cpu_ref_at_near_and_far_positions)
{
    start();
    const int64_t hds[4] = {16, 64, 128, 6}, heads[3] = {1, 3, 8};
    for (int hi = 0; hi < 4; hi++)
        for (int h = 0; h < 3; h++)
            for (int k = 0; k < 4; k++)
                for (int sc = 0; sc < 2; sc++) {
                    int64_t hd = hds[hi], H = heads[h], n = ns[k];
                    float *inv = malloc((size_t)(hd / 2) * sizeof *inv);
                    int32_t *p = malloc((size_t)n * sizeof *p);
                    cr_assert(inv && p);
                    for (int64_t i = 0; i < hd / 2; i++)
                        inv[i] = (float)(1.0 / pow(10000.0, (double)(2 * i) / (double)hd));
                    for (int64_t t = 0; t < n; t++)
                        p[t] = sc ? (int32_t)(3000 + 7 * t) : (int32_t)t;
                    pt *x = pair_rnd(n, H * hd, 1.0, 0.0, "q", NULL), *pos = pair_i(n, p, "pos");
                    pt *tf = pair_f(GK_DTYPE_F32, 1, hd / 2, inv, "inv_freq");
                    pt *dst = pair_new(GK_DTYPE_F32, n, H * hd, "q_rope");
                    pnode pn = {.op = GK_OP_ROPE, .src = {x, pos, tf}, .dst = dst, .i = {(int32_t)hd},
                                .f = {sc ? 0.75f : 1.0f}};
                    run1(&pn, "rope");
                    char what[80];
                    snprintf(what, sizeof what, "rope hd=%lld H=%lld n=%lld far=%d", (long long)hd, (long long)H,
                             (long long)n, sc);
                    expect_match(dst, NULL, 1e-5, 1e-6, what);
                    free(inv);
                    free(p);
                }
}

/* q and k rotated at the same positions share one launch on the cuda side;
 * all must match cpu_ref, including a rotation of a rotation's output, which
 * must not share its producer's launch. */
Test(cuda_ops, rope_of_q_and_k_together_matches_cpu_ref)
{
    start();
    const int64_t hds[2] = {64, 128}, heads[3][2] = {{32, 4}, {8, 8}, {12, 1}};
    for (int di = 0; di < 2; di++)
        for (int hi = 0; hi < 3; hi++)
            for (int k = 0; k < 3; k++) {
                int64_t hd = hds[di], H = heads[hi][0], Hkv = heads[hi][1], n = ns[k];
                float *inv = malloc((size_t)(hd / 2) * sizeof *inv);
                for (int64_t i = 0; i < hd / 2; i++)
                    inv[i] = (float)pow(10000.0, -2.0 * (double)i / (double)hd);
                int32_t *p = malloc((size_t)n * sizeof *p);
                for (int64_t t = 0; t < n; t++)
                    p[t] = (int32_t)(17 + 3 * t);
                pt *q = pair_rnd(n, H * hd, 1.0, 0.0, "q", NULL), *kk = pair_rnd(n, Hkv * hd, 1.0, 0.0, "k", NULL);
                pt *pos = pair_i(n, p, "pos"), *tf = pair_f(GK_DTYPE_F32, 1, hd / 2, inv, "inv_freq");
                pt *qr = pair_new(GK_DTYPE_F32, n, H * hd, "q_rope"), *kr = pair_new(GK_DTYPE_F32, n, Hkv * hd, "k_rope");
                pt *qr2 = pair_new(GK_DTYPE_F32, n, H * hd, "q_rope2");
                /* node 1 reads node 0's output, so those two may not share a
                 * launch; nodes 1 and 2 are independent and may */
                pnode pns[3] = {
                    {.op = GK_OP_ROPE, .src = {q, pos, tf}, .dst = qr, .i = {(int32_t)hd}, .f = {1.0f}},
                    {.op = GK_OP_ROPE, .src = {qr, pos, tf}, .dst = qr2, .i = {(int32_t)hd}, .f = {1.0f}},
                    {.op = GK_OP_ROPE, .src = {kk, pos, tf}, .dst = kr, .i = {(int32_t)hd}, .f = {1.0f}},
                };
                pgraph pg;
                pgraph_init(&pg, pns, 3);
                pgraph_run(&pg, "rope q, k");
                char what[80];
                snprintf(what, sizeof what, "rope pair hd=%lld H=%lld Hkv=%lld n=%lld", (long long)hd, (long long)H,
                         (long long)Hkv, (long long)n);
                expect_match(qr, NULL, 1e-5, 1e-6, what);
                expect_match(kr, NULL, 1e-5, 1e-6, what);
                expect_match(qr2, NULL, 1e-5, 1e-6, what);
                free(inv);
                free(p);
            }
}

/* ------------------------------------------------------------------ linear */

/* sum_i |x[t][i] w[o][i]| (+ |b[o]|) for every output: the scale of its
 * rounding error. */
static double *abs_dots(const float *x, const float *w, const float *b, int64_t n, int64_t in, int64_t out)
{
    double *m = malloc((size_t)(n * out) * sizeof *m);
    cr_assert(m);
    for (int64_t t = 0; t < n; t++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? fabs(b[o]) : 0.0;
            for (int64_t i = 0; i < in; i++)
                s += fabs((double)x[t * in + i] * (double)w[o * in + i]);
            m[t * out + o] = s;
        }
    return m;
}

static void linear_case(gk_dtype dt, int64_t n, int64_t in, int64_t out, bool bias)
{
    float *xv, *wv = rnd_vec(out * in, 0.5, 0.0), *bv = rnd_vec(out, 1.0, 0.0);
    pt *x = pair_rnd(n, in, 1.0, 0.1, "x", &xv);
    pt *w = pair_f(dt, out, in, wv, "proj.weight"), *b = pair_f(dt, 1, out, bv, "proj.bias");
    pt *dst = pair_new(GK_DTYPE_F32, n, out, "proj");
    pnode pn = {.op = GK_OP_LINEAR, .src = {x, w, bias ? b : NULL}, .dst = dst};
    run1(&pn, "linear");
    double *mag = abs_dots(xv, wv, bias ? bv : NULL, n, in, out);
    double rel = n <= 8 ? 1e-5 : dt == GK_DTYPE_F32 ? 3e-5 : dt == GK_DTYPE_F16 ? 2e-3 : 8e-3;
    char what[96];
    snprintf(what, sizeof what, "linear %s n=%lld in=%lld out=%lld bias=%d (%s)", dt_str(dt), (long long)n,
             (long long)in, (long long)out, bias, n <= 8 ? "GEMV" : "cuBLAS");
    expect_match(dst, mag, rel, 1e-7, what);
    free(xv);
    free(wv);
    free(bv);
    free(mag);
}

Test(cuda_ops, linear_gemv_path_matches_cpu_ref)
{
    start();
    /* n, in, out: aligned rows, odd widths (scalar kernel), several tokens */
    const int64_t cases[9][3] = {{1, 4096, 1000}, {1, 1000, 37}, {1, 37, 1000}, {1, 1001, 129}, {2, 1000, 513},
                                 {3, 64, 2048}, {5, 1000, 513}, {8, 1000, 513}, {8, 37, 40}};
    for (int w = 0; w < 3; w++)
        for (int c = 0; c < 9; c++)
            for (int hb = 0; hb < 2; hb++)
                linear_case(wtypes[w], cases[c][0], cases[c][1], cases[c][2], hb);
}

Test(cuda_ops, linear_cublas_path_matches_cpu_ref)
{
    start();
    const int64_t cases[4][3] = {{9, 64, 100}, {33, 1000, 1001}, {33, 37, 50}, {513, 256, 333}};
    for (int w = 0; w < 3; w++)
        for (int c = 0; c < 4; c++)
            for (int hb = 0; hb < 2; hb++)
                linear_case(wtypes[w], cases[c][0], cases[c][1], cases[c][2], hb);
}

/* In a graph that routes tokens (a TOPK node), a bf16 prefill GEMM takes its
 * activations as a bf16 pair (hi + lo): within 1e-4 of cpu_ref's float32
 * activations, where one bf16 rounding of them (the 8e-3 bound above) would
 * not be. */
Test(cuda_ops, bf16_prefill_linear_in_a_routed_graph_keeps_its_activations)
{
    start();
    const int64_t cases[3][3] = {{33, 64, 32}, {76, 1000, 8}, {513, 256, 128}};
    for (int c = 0; c < 3; c++) {
        int64_t n = cases[c][0], in = cases[c][1], out = cases[c][2];
        float *xv, *wv = rnd_vec(out * in, 0.5, 0.0);
        pt *x = pair_rnd(n, in, 1.0, 0.1, "x", &xv);
        pt *w = pair_f(GK_DTYPE_BF16, out, in, wv, "router.weight");
        pt *logits = pair_new(GK_DTYPE_F32, n, out, "router");
        pt *ids = pair_new(GK_DTYPE_I32, n, 2, "expert_ids");
        pnode pns[2] = {{.op = GK_OP_LINEAR, .src = {x, w}, .dst = logits},
                        {.op = GK_OP_TOPK, .src = {logits}, .dst = ids, .i = {2}}};
        pgraph pg;
        pgraph_init(&pg, pns, 2);
        pgraph_run(&pg, "routed linear");
        double *mag = abs_dots(xv, wv, NULL, n, in, out);
        char what[96];
        snprintf(what, sizeof what, "routed linear bf16 n=%lld in=%lld out=%lld", (long long)n, (long long)in,
                 (long long)out);
        expect_match(logits, mag, 1e-4, 1e-7, what);
        free(xv);
        free(wv);
        free(mag);
    }
}

/* LINEAR nodes that read the same x (q, k, v; gate, up) run as one grouped
 * GEMV launch on the cuda side; each output must still match its own node on
 * cpu_ref. Groups of 3 and 2, unequal widths, with and without biases, and a
 * fourth node after the group that must not join it. */
Test(cuda_ops, linear_nodes_sharing_their_input_match_cpu_ref)
{
    start();
    const int64_t outs[4] = {1000, 129, 129, 513};
    const int64_t ns2[3] = {1, 3, 8};
    for (int w = 0; w < 3; w++)
        for (int k = 0; k < 3; k++)
            for (int count = 2; count <= 4; count++) {
                int64_t n = ns2[k], in = 1024;
                float *xv;
                pt *x = pair_rnd(n, in, 1.0, 0.1, "x", &xv);
                pnode pns[4];
                pt *dsts[4];
                float *wvs[4], *bvs[4];
                for (int j = 0; j < count; j++) {
                    wvs[j] = rnd_vec(outs[j] * in, 0.5, 0.0);
                    bvs[j] = rnd_vec(outs[j], 1.0, 0.0);
                    pt *tw = pair_f(wtypes[w], outs[j], in, wvs[j], "proj.weight");
                    pt *tb = pair_f(wtypes[w], 1, outs[j], bvs[j], "proj.bias");
                    dsts[j] = pair_new(GK_DTYPE_F32, n, outs[j], "proj");
                    pns[j] = (pnode){.op = GK_OP_LINEAR, .src = {x, tw, j == 1 ? NULL : tb}, .dst = dsts[j]};
                }
                pgraph pg;
                pgraph_init(&pg, pns, count);
                pgraph_run(&pg, "grouped linear");
                for (int j = 0; j < count; j++) {
                    double *mag = abs_dots(xv, wvs[j], j == 1 ? NULL : bvs[j], n, in, outs[j]);
                    char what[96];
                    snprintf(what, sizeof what, "linear %d of %d %s n=%lld out=%lld", j, count, dt_str(wtypes[w]),
                             (long long)n, (long long)outs[j]);
                    expect_match(dsts[j], mag, 1e-5, 1e-7, what);
                    free(mag);
                    free(wvs[j]);
                    free(bvs[j]);
                }
                free(xv);
            }
}

/* --------------------------------------------------------------- attention */

typedef struct attn_fix {
    int64_t H, Hkv, hd, n_ctx;
    gk_dtype dt; /* of the caches */
    pt *kc, *vc;
} attn_fix;

/* vals [n] as dtype dt bytes (malloc'd). */
static void *to_dtype(gk_dtype dt, const float *vals, int64_t n)
{
    void *buf = malloc((size_t)(n ? n : 1) * 4);
    cr_assert(buf);
    for (int64_t i = 0; i < n; i++) {
        if (dt == GK_DTYPE_F16)
            ((uint16_t *)buf)[i] = gk_f32_to_f16(vals[i]);
        else if (dt == GK_DTYPE_BF16)
            ((uint16_t *)buf)[i] = gk_f32_to_bf16(vals[i]);
        else
            ((float *)buf)[i] = vals[i];
    }
    return buf;
}

/* Caches of dtype dt for a layer. With fill, both sides hold the same random
 * rows; else cpu_ref's hold zeros and cuda's NaN (0xff.. is a NaN in every
 * float format), so reading a row never written shows. */
static attn_fix attn_fix_new(int64_t H, int64_t Hkv, int64_t hd, int64_t n_ctx, bool fill, gk_dtype dt)
{
    attn_fix a = {H, Hkv, hd, n_ctx, dt, NULL, NULL};
    a.kc = pair_new(dt, n_ctx, Hkv * hd, "k_cache");
    a.vc = pair_new(dt, n_ctx, Hkv * hd, "v_cache");
    pt *c[2] = {a.kc, a.vc};
    for (int i = 0; i < 2; i++) {
        if (fill) {
            float *v = rnd_vec(n_ctx * Hkv * hd, 1.0, 0.0);
            void *raw = to_dtype(dt, v, n_ctx * Hkv * hd);
            pair_upload(c[i], raw);
            free(raw);
            free(v);
        } else {
            size_t nb = gk_tensor_nbytes(&c[i]->t[REF]);
            void *z = calloc(1, nb);
            cr_assert(z);
            upload(&be[REF], &c[i]->t[REF], z);
            free(z);
            poison(c[i]);
        }
    }
    return a;
}

/* Cache row r on both sides holds the same bytes (both round to nearest
 * even into a 16-bit cache; F32 rows are copies). */
static void expect_cache_row(const pt *c, int64_t r, const char *what)
{
    size_t rb = gk_tensor_nbytes(&c->t[REF]) / (size_t)c->t[REF].rows;
    unsigned char *a = malloc(rb), *b = malloc(rb);
    cr_assert(a && b);
    gk_err err = {0};
    cr_assert_eq(be[REF].ops->buffer_read(be[REF].state, c->t[REF].data, (size_t)r * rb, a, rb, &err), GK_OK);
    cr_assert_eq(be[CU].ops->buffer_read(be[CU].state, c->t[CU].data, (size_t)r * rb, b, rb, &err), GK_OK);
    cr_assert(!memcmp(a, b, rb), "%s %lld (%s): cuda's bytes differ from cpu_ref's", what, (long long)r,
              dt_str(c->t[REF].dtype));
    free(a);
    free(b);
}

/* What an ATTN node of the tests below sets beyond the shapes: (1.4) a
 * sliding window (0 = off), a softcap (0 = off), a ring cache; (1.5) slots
 * of S rows (0 = one sequence), the tokens' slots sl and whether they may
 * differ. */
typedef struct attn_case {
    const char *tag;
    int32_t window;
    float cap;
    bool ring;
    int64_t S;
    const int32_t *sl;
    bool mixed;
} attn_case;

/* One ATTN node over n tokens at positions p; compares the output and the
 * cache rows written (position p of slot s at row s * S + p % rows). */
static void attn_check(attn_fix *a, int64_t n, const int32_t *p, const attn_case *ac)
{
    int64_t qw = a->H * a->hd, kvw = a->Hkv * a->hd, rows = ac->S ? ac->S : a->n_ctx;
    int32_t *ps = malloc((size_t)(2 * n) * sizeof *ps);
    cr_assert(ps);
    memcpy(ps, p, (size_t)n * sizeof *ps);
    for (int64_t t = 0; t < n; t++)
        ps[n + t] = ac->S ? ac->sl[t] : 0;
    pt *q = pair_rnd(n, qw, 1.0, 0.0, "q", NULL), *k = pair_rnd(n, kvw, 1.0, 0.0, "k", NULL);
    pt *v = pair_rnd(n, kvw, 1.0, 0.0, "v", NULL);
    pt *pos = ac->S ? pair_i2(2, n, ps, "pos_slot") : pair_i(n, p, "pos");
    pt *out = pair_new(GK_DTYPE_F32, n, qw, "attn");
    pnode pn = {.op = GK_OP_ATTN, .src = {q, k, v, pos, a->kc, a->vc}, .dst = out,
                .i = {(int32_t)a->H, (int32_t)a->Hkv, (int32_t)a->hd, ac->window},
                .f = {1.0f / sqrtf((float)a->hd), ac->cap, ac->ring ? 1.0f : 0.0f,
                      (float)(ac->mixed ? -ac->S : ac->S)}};
    run1(&pn, "attn");
    char what[224];
    snprintf(what, sizeof what, "attn %s %s cache H=%lld Hkv=%lld hd=%lld n=%lld pos[0]=%d window=%d softcap=%g "
             "ring=%d slots of %lld rows%s slot[0]=%d", ac->tag, dt_str(a->dt), (long long)a->H, (long long)a->Hkv,
             (long long)a->hd, (long long)n, (int)p[0], (int)ac->window, (double)ac->cap, (int)ac->ring,
             (long long)ac->S, ac->mixed ? " (mixed)" : "", ac->S ? (int)ac->sl[0] : 0);
    /* prefill over a 16-bit cache may run on tensor cores (never for mixed
     * slots), which take q and the probabilities rounded to the cache dtype */
    double atol = 2e-5, rtol = 1e-5;
    if (n > 8 && !ac->mixed && a->dt == GK_DTYPE_F16)
        atol = 2e-3, rtol = 0.0;
    else if (n > 8 && !ac->mixed && a->dt == GK_DTYPE_BF16)
        atol = 1.2e-2, rtol = 0.0;
    expect_match(out, NULL, rtol, atol, what);
    for (int64_t t = 0; t < n; t++) {
        int64_t r = (ac->S ? ac->sl[t] * ac->S : 0) + p[t] % rows;
        expect_cache_row(a->kc, r, "k cache row");
        expect_cache_row(a->vc, r, "v cache row");
    }
    free(ps);
}

static void attn_step_wc(attn_fix *a, int64_t n, const int32_t *p, const char *tag, int32_t window, float cap)
{
    attn_check(a, n, p, &(attn_case){.tag = tag, .window = window, .cap = cap});
}

static void attn_step(attn_fix *a, int64_t n, const int32_t *p, const char *tag)
{
    attn_step_wc(a, n, p, tag, 0, 0.0f);
}

static void attn_prefill_then_decode(int64_t H, int64_t Hkv, int64_t hd, int64_t n, gk_dtype dt)
{
    attn_fix a = attn_fix_new(H, Hkv, hd, 1024, false, dt);
    int32_t *p = malloc((size_t)(n + 4) * sizeof *p);
    cr_assert(p);
    for (int64_t t = 0; t < n + 4; t++)
        p[t] = (int32_t)t;
    attn_step(&a, n, p, "prefill");
    attn_step(&a, 1, p + n, "decode");
    attn_step(&a, 1, p + n + 1, "decode");
    attn_step(&a, 2, p + n + 2, "decode2");
    free(p);
}

Test(cuda_ops, attn_prefill_and_decode_match_cpu_ref_for_gqa_ratios)
{
    start();
    /* H, Hkv: ratios 1, 2, 4, 8 and 3 (a query-head tile with padding) */
    const int64_t heads[5][2] = {{4, 4}, {8, 4}, {8, 2}, {16, 2}, {6, 2}};
    const int64_t hds[2] = {64, 128};
    for (int w = 0; w < 3; w++)
        for (int h = 0; h < 5; h++)
            for (int d = 0; d < 2; d++)
                for (int k = 0; k < 3; k++)
                    attn_prefill_then_decode(heads[h][0], heads[h][1], hds[d], ns[k], wtypes[w]);
}

Test(cuda_ops, attn_long_prefill_matches_cpu_ref)
{
    start();
    for (int w = 0; w < 3; w++) {
        attn_prefill_then_decode(8, 2, 128, 513, wtypes[w]);
        attn_prefill_then_decode(4, 4, 64, 513, wtypes[w]);
    }
}

Test(cuda_ops, attn_small_and_odd_head_dims_match_cpu_ref)
{
    start();
    /* the tiny reference models (16, 32), the largest (256), a multiple of 4
     * that is no power of 2 (20), and widths the decode kernel leaves to the
     * tiled one (18, 6) */
    const int64_t hds[6] = {16, 32, 256, 20, 18, 6};
    for (int w = 0; w < 3; w++)
        for (int d = 0; d < 6; d++) {
            attn_prefill_then_decode(4, 2, hds[d], 7, wtypes[w]);
            attn_prefill_then_decode(4, 1, hds[d], 33, wtypes[w]);
        }
}

Test(cuda_ops, attn_decode_over_a_long_filled_cache_matches_cpu_ref)
{
    start();
    /* many KV splits and their merge by the last block; positions far apart
     * in one batch; the same node run again (the tickets were reset) */
    for (int w = 0; w < 3; w++) {
        attn_fix a = attn_fix_new(32, 8, 128, 4096, true, wtypes[w]);
        const int32_t p1[1] = {4000}, p2[1] = {3}, p3[2] = {4095, 17}, p4[4] = {900, 40, 41, 2500};
        attn_step(&a, 1, p1, "long");
        attn_step(&a, 1, p1, "long again");
        attn_step(&a, 1, p2, "short");
        attn_step(&a, 2, p3, "mixed");
        attn_step(&a, 4, p4, "scattered");
        attn_fix b = attn_fix_new(8, 1, 64, 3000, true, wtypes[w]);
        const int32_t p5[1] = {2999}, p6[9] = {5, 2999, 100, 1000, 64, 63, 127, 128, 1};
        attn_step(&b, 1, p5, "long");
        attn_step(&b, 9, p6, "scattered prefill");
        attn_fix c = attn_fix_new(32, 4, 64, 4096, true, wtypes[w]); /* TinyLlama's heads */
        const int32_t p7[1] = {3999}, p8[8] = {3999, 0, 1, 2, 1000, 2048, 31, 32};
        attn_step(&c, 1, p7, "long");
        attn_step(&c, 8, p8, "eight tokens");
    }
}

Test(cuda_ops, attn_decode_at_its_split_and_tile_thresholds_matches_cpu_ref)
{
    start();
    /* one token at the lengths where the decode kernel changes its plan
     * (backends/cuda/attention.cu): one split up to three block steps (16-bit
     * caches: 32 rows a step at head dim 128, 64 at 64 for the tiles of up
     * to 4 heads built by default; F32: half), up to 16 splits merged in one
     * round, small tiles of query heads up to 1024 rows (head dim 128) or
     * 2048 (64), the largest tiles past them; each length and its
     * neighbours */
    const int32_t at[] = {95, 96, 97, 191, 192, 193, 511, 512, 1023, 1024, 1025, 2047, 2048, 2049};
    const int heads[4][3] = {{32, 8, 128}, {32, 4, 64}, {12, 4, 128} /* 3 a kv head: padded tiles */, {8, 2, 256}};
    for (int w = 0; w < 3; w++)
        for (int f = 0; f < 4; f++) {
            attn_fix a = attn_fix_new(heads[f][0], heads[f][1], heads[f][2], 2560, true, wtypes[w]);
            for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
                char what[48];
                snprintf(what, sizeof what, "H %d Hkv %d hd %d pos %d", heads[f][0], heads[f][1], heads[f][2],
                         at[i]);
                attn_step(&a, 1, &at[i], what);
            }
        }
}

Test(cuda_ops, attn_at_a_position_beyond_the_cache_is_reported)
{
    start();
    attn_fix a = attn_fix_new(2, 1, 16, 8, true, GK_DTYPE_F32);
    const int32_t p[1] = {8};
    pt *q = pair_rnd(1, 32, 1.0, 0.0, "q", NULL), *k = pair_rnd(1, 16, 1.0, 0.0, "k", NULL);
    pt *v = pair_rnd(1, 16, 1.0, 0.0, "v", NULL), *pos = pair_i(1, p, "pos");
    pt *out = pair_new(GK_DTYPE_F32, 1, 32, "attn");
    pnode pn = {.op = GK_OP_ATTN, .src = {q, k, v, pos, a.kc, a.vc}, .dst = out, .i = {2, 1, 16}, .f = {0.25f}};
    gk_node nd = side_node(&pn, CU);
    gk_graph g = {.nodes = &nd, .n_nodes = 1, .n_tokens = 1};
    gk_err err = {0};
    gk_status st = be[CU].ops->graph_compute(be[CU].state, &g, &err);
    if (st == GK_OK)
        st = be[CU].ops->synchronize(be[CU].state, &err);
    cr_assert_eq(st, GK_ERR_INVALID_ARG, "status %d: %s", st, err.msg);
    cr_assert(strstr(err.msg, "position 8"), "message: %s", err.msg);
}

/* ---------------------------------------------------------------- sampling */

/* core/generate.c's sample_u, replicated: the rule the backend must follow. */
typedef struct cand {
    float logit;
    int32_t id;
} cand;

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* *margin: how far u (and top_p) lie from the cumulative sums that decide;
 * where that is at rounding level, host and device may fairly differ. */
static int32_t host_sample(const float *logits, int64_t n_vocab, float temperature, int32_t top_k, float top_p,
                           double u, double *margin)
{
    *margin = INFINITY;
    if (temperature <= 0.0f || top_k == 1) {
        int64_t best = 0;
        for (int64_t i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        return (int32_t)best;
    }
    cand *c = malloc((size_t)n_vocab * sizeof *c);
    double *p = malloc((size_t)n_vocab * sizeof *p);
    cr_assert(c && p);
    for (int64_t i = 0; i < n_vocab; i++) {
        c[i].logit = logits[i] / temperature;
        c[i].id = (int32_t)i;
    }
    qsort(c, (size_t)n_vocab, sizeof *c, cand_cmp);
    int64_t n = n_vocab;
    if (top_k > 0 && top_k < n) {
        int64_t k = top_k;
        while (k < n && c[k].logit == c[top_k - 1].logit)
            k++;
        n = k;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        p[i] = exp((double)c[i].logit - (double)c[0].logit);
        sum += p[i];
    }
    for (int64_t i = 0; i < n; i++)
        p[i] /= sum;
    if (top_p > 0.0f && top_p < 1.0f) {
        double cum = 0.0;
        int64_t keep = 0;
        while (keep < n) {
            cum += p[keep++];
            if (fabs(cum - (double)top_p) < *margin)
                *margin = fabs(cum - (double)top_p);
            if (cum >= (double)top_p)
                break;
        }
        n = keep;
        sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += p[i];
        for (int64_t i = 0; i < n; i++)
            p[i] /= sum;
    }
    double cum = 0.0;
    int32_t pick = c[n - 1].id;
    for (int64_t i = 0; i < n; i++) {
        cum += p[i];
        if (fabs(cum - u) < *margin)
            *margin = fabs(cum - u);
        if (u < cum) {
            pick = c[i].id;
            break;
        }
    }
    free(p);
    free(c);
    return pick;
}

static void sample_case(const pt *logits, const float *vals, float temp, int32_t k, float top_p, double u)
{
    gk_sample_params sp = {.temperature = temp, .top_k = k, .top_p = top_p, .u = u};
    int32_t got = -1;
    gk_err err = {0};
    cr_assert_eq(be[CU].ops->sample(be[CU].state, &logits->t[CU], &sp, &got, &err), GK_OK, "%s", err.msg);
    double margin;
    int32_t want = host_sample(vals, gk_tensor_nelem(&logits->t[REF]), temp, k, top_p, u, &margin);
    if (margin < 1e-12)
        return; /* u or top_p sits on a boundary: either side is right */
    cr_assert_eq(got, want, "sample V=%lld temp=%g top_k=%d top_p=%g u=%g: cuda %d, rule %d",
                 (long long)gk_tensor_nelem(&logits->t[REF]), (double)temp, (int)k, (double)top_p, u, (int)got,
                 (int)want);
}

Test(cuda_ops, sample_follows_the_core_rule)
{
    start();
    cr_assert(be[CU].ops->sample, "the cuda backend samples on the device");
    const int64_t vocab[3] = {1000, 50000, 151936};
    const double us[5] = {0.0, 0.123, 0.4567, 0.987, 0.999999};
    for (int vi = 0; vi < 3; vi++) {
        int64_t V = vocab[vi];
        float *x = rnd_vec(V, 6.0, 0.0);
        /* a tie for the maximum: the lower id wins */
        x[V / 3] = x[V / 2] = 9.0f;
        pt *lg = pair_f(GK_DTYPE_F32, 1, V, x, "logits");
        sample_case(lg, x, 0.0f, 0, 1.0f, 0.0);
        sample_case(lg, x, 0.7f, 1, 1.0f, 0.5);
        for (int ui = 0; ui < 5; ui++) {
            sample_case(lg, x, 1.0f, 0, 1.0f, us[ui]);
            sample_case(lg, x, 0.7f, 50, 1.0f, us[ui]);
            sample_case(lg, x, 0.8f, 40, 0.9f, us[ui]);
            sample_case(lg, x, 1.3f, 0, 0.5f, us[ui]);
        }
        free(x);
    }
    /* logits on a few levels: many ties at the k-th, kept by top-k */
    int64_t V = 5000;
    float *x = rnd_vec(V, 1.0, 0.0);
    for (int64_t i = 0; i < V; i++)
        x[i] = roundf(x[i] * 3.0f);
    pt *lg = pair_f(GK_DTYPE_F32, 1, V, x, "logits");
    for (int ui = 0; ui < 5; ui++) {
        sample_case(lg, x, 1.0f, 10, 1.0f, us[ui]);
        sample_case(lg, x, 0.5f, 3, 0.8f, us[ui]);
        sample_case(lg, x, 2.0f, 0, 0.3f, us[ui]);
    }
    sample_case(lg, x, 0.0f, 0, 1.0f, 0.0);
    free(x);
}

/* I32 elements of one side. */
static void read_i32(int s, const pt *p, int32_t *dst, int64_t n)
{
    gk_err err = {0};
    cr_assert_eq(be[s].ops->buffer_read(be[s].state, p->t[s].data, 0, dst, (size_t)n * sizeof *dst, &err), GK_OK,
                 "%s", err.msg);
}

/* GK_OP_SAMPLE in a graph replayed step after step: both backends pick the
 * same ids (cpu_ref runs gk_sample with the generator after ctl's step
 * draws) and move the step and the position on, plain, captured and
 * replayed alike. */
Test(cuda_ops, sample_node_in_a_replayed_graph_matches_cpu_ref_and_advances)
{
    start();
    const struct { float temp; int32_t k; float p; } cfg[4] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.8f, 40, 0.9f},
                                                                {1.3f, 0, 0.5f}};
    const int64_t vocab[2] = {1000, 151936};
    for (int vi = 0; vi < 2; vi++)
        for (int ci = 0; ci < 4; ci++) {
            int64_t V = vocab[vi];
            float *x = rnd_vec(V, 3.0, 0.0);
            pt *lg = pair_f(GK_DTYPE_F32, 1, V, x, "logits");
            const int32_t ctl0[4] = {(int32_t)0x89abcdefu, 1234 + ci, 3, 0}, pos0[1] = {17};
            pt *ctl = pair_i(4, ctl0, "sample_ctl"), *pos = pair_i(1, pos0, "pos");
            pt *id = pair_new(GK_DTYPE_I32, 1, 1, "ids");
            pnode pn = {.op = GK_OP_SAMPLE, .src = {lg, ctl, pos}, .dst = id, .i = {cfg[ci].k},
                        .f = {cfg[ci].temp, cfg[ci].p}};
            pgraph pg;
            pgraph_init(&pg, &pn, 1);
            int distinct = 0, last = -1;
            for (int step = 0; step < 6; step++) {
                pgraph_run(&pg, "sample node");
                int32_t a[4], b[4], ia, ib, pa, pb;
                read_i32(REF, id, &ia, 1);
                read_i32(CU, id, &ib, 1);
                read_i32(REF, ctl, a, 4);
                read_i32(CU, ctl, b, 4);
                read_i32(REF, pos, &pa, 1);
                read_i32(CU, pos, &pb, 1);
                cr_assert_eq(ib, ia, "V=%lld temp=%g top_k=%d top_p=%g step %d: cuda %d, cpu_ref %d", (long long)V,
                             (double)cfg[ci].temp, (int)cfg[ci].k, (double)cfg[ci].p, step, (int)ib, (int)ia);
                cr_assert(ia >= 0 && ia < V);
                cr_assert_eq(a[2], 3 + step + 1, "cpu_ref step %d", a[2]);
                cr_assert_eq(b[2], a[2], "cuda step %d, cpu_ref %d", b[2], a[2]);
                cr_assert_eq(pa, 17 + step + 1);
                cr_assert_eq(pb, pa, "cuda position %d, cpu_ref %d", pb, pa);
                distinct += ia != last;
                last = ia;
            }
            if (cfg[ci].temp == 0.0f)
                cr_assert_eq(distinct, 1, "greedy over fixed logits picked different ids");
            else if (vi == 1)
                cr_assert_gt(distinct, 1, "draws at new steps never changed the pick");
            free(x);
        }
}

/* (ABI 1.3) GK_OP_SAMPLE with min-p and the penalties, replayed step after
 * step: the same ids as cpu_ref (gk_sample_ex over the ring's last W ids),
 * and the ring and ctl[3] move on alike. The ring holds repeats, ids outside
 * the vocabulary (skipped by both), wraps around (ctl[3] > R), and the
 * window is shorter than, equal to and longer than what the ring holds. */
Test(cuda_ops, sample_node_with_min_p_and_penalties_matches_cpu_ref)
{
    start();
    const struct {
        float temp; int32_t k; float p, min_p, rep, pres, freq; int32_t w, filled;
    } cfg[] = {
        {0.0f, 0, 1.0f, 0.0f, 3.0f, 0.0f, 0.0f, 8, 40},    /* greedy, repetition */
        {0.0f, 0, 1.0f, 0.0f, 1.0f, 1.5f, 0.7f, 64, 40},   /* greedy, presence + frequency, W > R */
        {0.0f, 0, 1.0f, 0.3f, 1.0f, 0.0f, 0.0f, 0, 0},     /* greedy, min-p (no effect) */
        {1.0f, 0, 1.0f, 0.1f, 1.0f, 0.0f, 0.0f, 0, 0},     /* min-p */
        {1.2f, 0, 0.9f, 0.3f, 1.0f, 0.0f, 0.0f, 0, 0},     /* top-p then min-p */
        {0.8f, 40, 0.95f, 0.05f, 1.3f, 0.2f, 0.1f, 16, 40}, /* everything, wrapped ring */
        {1.0f, 0, 1.0f, 0.0f, 0.7f, 0.0f, 0.0f, 32, 20},   /* repetition < 1, W = R > ctl[3], then the ring wraps */
        {1.5f, 0, 1.0f, 0.0f, 1.0f, -0.5f, 2.0f, 5, 3},    /* W > ctl[3] */
    };
    const int64_t vocab[2] = {1000, 151936};
    const int R = 32;
    for (int vi = 0; vi < 2; vi++)
        for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
            int64_t V = vocab[vi];
            float *x = rnd_vec(V, 3.0, 0.0);
            /* the window's tokens get the largest logits, so the penalties decide */
            int32_t ring0[32];
            for (int j = 0; j < R; j++) {
                ring0[j] = (int32_t)((j * 7) % 11) * (int32_t)(V / 13);
                x[ring0[j]] = 4.0f + (float)(j % 5) * 0.25f - (float)(j % 3);
            }
            ring0[3] = -1;
            ring0[9] = (int32_t)V + 5;
            x[0] = -2.5f;
            pt *lg = pair_f(GK_DTYPE_F32, 1, V, x, "logits");
            const int32_t ctl0[4] = {(int32_t)0x2468aceu, 99 + (int32_t)ci, 0, cfg[ci].filled};
            const float pen0[4] = {cfg[ci].rep, cfg[ci].pres, cfg[ci].freq, 0.0f};
            float pen_v[4];
            memcpy(pen_v, pen0, sizeof pen_v);
            pt *ctl = pair_i(4, ctl0, "sample_ctl"), *ring = pair_i(R, ring0, "sample_ring");
            pt *pen = pair_f(GK_DTYPE_F32, 1, 4, pen_v, "sample_penalties");
            pt *id = pair_new(GK_DTYPE_I32, 1, 1, "ids");
            pnode pn = {.op = GK_OP_SAMPLE, .src = {lg, ctl, NULL, ring, pen}, .dst = id,
                        .i = {cfg[ci].k, cfg[ci].w}, .f = {cfg[ci].temp, cfg[ci].p, cfg[ci].min_p}};
            pgraph pg;
            pgraph_init(&pg, &pn, 1);
            for (int step = 0; step < 12; step++) {
                pgraph_run(&pg, "sample node with penalties");
                int32_t a[4], b[4], ia, ib, ra[32], rb[32];
                read_i32(REF, id, &ia, 1);
                read_i32(CU, id, &ib, 1);
                read_i32(REF, ctl, a, 4);
                read_i32(CU, ctl, b, 4);
                read_i32(REF, ring, ra, R);
                read_i32(CU, ring, rb, R);
                cr_assert_eq(ib, ia, "V=%lld case %zu step %d: cuda %d, cpu_ref %d", (long long)V, ci, step, (int)ib,
                             (int)ia);
                cr_assert_eq(b[2], a[2], "case %zu: cuda step %d, cpu_ref %d", ci, b[2], a[2]);
                cr_assert_eq(b[3], a[3], "case %zu: cuda ring count %d, cpu_ref %d", ci, b[3], a[3]);
                cr_assert_eq(a[3], cfg[ci].w > 0 ? cfg[ci].filled + step + 1 : cfg[ci].filled);
                for (int j = 0; j < R; j++)
                    cr_assert_eq(rb[j], ra[j], "case %zu step %d: ring[%d] cuda %d, cpu_ref %d", ci, step, j, rb[j],
                                 ra[j]);
            }
            free(x);
        }
}

/* generate on llama-tiny (f32) with min-p and the penalties: the cuda
 * backend, whose decode steps now sample on the device, gives cpu_ref's
 * tokens one for one over long decodes, greedy and seeded. */
static void generate_on(gk_runtime *rt, const char *backend, const gk_gen_opts *o, const int32_t *prompt, int64_t np,
                        int32_t *out, int64_t *n_out)
{
    char dir[1024];
    const char *data = getenv("GK_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data ? data : "data");
    gk_model_opts mo = {.backend = backend, .dtype = "f32", .n_ctx = 256};
    gk_model *m = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s: %s", backend, err.msg);
    cr_assert_eq(gk_model_generate(m, prompt, np, o, out, n_out, NULL, &err), GK_OK, "%s: %s", backend, err.msg);
    gk_model_destroy(m);
}

Test(cuda_ops, generate_with_min_p_and_penalties_matches_cpu_ref_token_for_token)
{
    /* the GPU check in this child; both backends then through the runtime */
    plug_open(&be[CU], "cuda", "cuda");
    char why[256] = "";
    bool ok = be[CU].ops->available(be[CU].state, why, sizeof why);
    plug_close(&be[CU]);
    if (!ok)
        cr_skip_test("no usable GPU: %s", why);
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    const struct {
        const char *what;
        float temp; int32_t k; float p, min_p, rep, pres, freq; int64_t n;
    } cfg[] = {
        {"greedy repetition 1.5, last 16", 0.0f, 0, 1.0f, 0.0f, 1.5f, 0.0f, 0.0f, 16},
        {"greedy presence 0.8 frequency 0.5, all", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0.8f, 0.5f, -1},
        {"greedy min-p 0.2", 0.0f, 0, 1.0f, 0.2f, 1.0f, 0.0f, 0.0f, 64},
        {"min-p 0.1", 1.0f, 0, 1.0f, 0.1f, 1.0f, 0.0f, 0.0f, 64},
        {"top-p 0.9, min-p 0.3, temp 1.2", 1.2f, 0, 0.9f, 0.3f, 1.0f, 0.0f, 0.0f, 64},
        {"repetition 1.3, last 32", 0.9f, 0, 1.0f, 0.0f, 1.3f, 0.0f, 0.0f, 32},
        {"repetition 0.8, all", 1.0f, 0, 1.0f, 0.0f, 0.8f, 0.0f, 0.0f, -1},
        {"frequency 0.3, all", 1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.3f, -1},
        {"presence 0.5, last 8", 1.0f, 0, 1.0f, 0.0f, 1.0f, 0.5f, 0.0f, 8},
        {"everything, last 64", 0.9f, 40, 0.95f, 0.05f, 1.2f, 0.1f, 0.2f, 64},
        {"everything, last 1000 (> n_ctx)", 1.1f, 0, 0.97f, 0.02f, 1.1f, 0.3f, 0.1f, 1000},
    };
    const int32_t prompt[8] = {5, 17, 3, 42, 17, 5, 99, 3};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++)
        for (uint64_t seed = 1; seed <= (cfg[ci].temp > 0.0f ? 3u : 1u); seed++) {
            gk_gen_opts o = gk_gen_opts_default();
            o.max_new_tokens = 200;
            o.temperature = cfg[ci].temp;
            o.top_k = cfg[ci].k;
            o.top_p = cfg[ci].p;
            o.min_p = cfg[ci].min_p;
            o.repetition_penalty = cfg[ci].rep;
            o.presence_penalty = cfg[ci].pres;
            o.frequency_penalty = cfg[ci].freq;
            o.penalty_last_n = cfg[ci].n;
            o.seed = seed * 7919;
            int32_t a[200], b[200];
            int64_t na = 0, nb = 0;
            generate_on(rt, "cpu_ref", &o, prompt, 8, a, &na);
            generate_on(rt, "cuda", &o, prompt, 8, b, &nb);
            cr_assert_eq(na, 200, "%s: cpu_ref gave %lld tokens", cfg[ci].what, (long long)na);
            cr_assert_eq(nb, na, "%s seed %llu: cuda gave %lld tokens, cpu_ref %lld", cfg[ci].what,
                         (unsigned long long)o.seed, (long long)nb, (long long)na);
            for (int i = 0; i < 200; i++)
                cr_assert_eq(b[i], a[i], "%s seed %llu: token %d is %d on cuda, %d on cpu_ref", cfg[ci].what,
                             (unsigned long long)o.seed, i, b[i], a[i]);
        }
    gk_runtime_destroy(rt);
}

/* read_async / read_wait: copies land in order after the work queued before
 * them, several tickets may be open, and an expired ticket is an error. */
Test(cuda_ops, read_async_tickets_return_what_the_buffer_held_then)
{
    start();
    gk_status (*ra)(void *, const void *, size_t, size_t, uint64_t *, gk_err *) =
        GK_BACKEND_OP(be[CU].ops, read_async);
    gk_status (*rw)(void *, uint64_t, void *, size_t, gk_err *) = GK_BACKEND_OP(be[CU].ops, read_wait);
    cr_assert(ra && rw, "the cuda backend has read_async and read_wait");
    int32_t v[16];
    for (int i = 0; i < 16; i++)
        v[i] = 1000 + i;
    pt *b = pair_i(16, v, "buf");
    uint64_t t[3];
    gk_err err = {0};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(ra(be[CU].state, b->t[CU].data, (size_t)k * 16, 8, &t[k], &err), GK_OK, "%s", err.msg);
        v[0] = 2000 + k; /* a later write must not show in an earlier copy */
        upload(&be[CU], &b->t[CU], v);
    }
    for (int k = 2; k >= 0; k--) {
        int32_t got[2] = {0, 0};
        cr_assert_eq(rw(be[CU].state, t[k], got, 8, &err), GK_OK, "%s", err.msg);
        int32_t want0 = k == 0 ? 1000 : 1000 + 4 * k;
        cr_assert_eq(got[0], want0, "ticket %d: %d, want %d", k, got[0], want0);
        cr_assert_eq(got[1], want0 + 1);
    }
    for (int k = 0; k < 5; k++) {
        uint64_t x;
        cr_assert_eq(ra(be[CU].state, b->t[CU].data, 0, 4, &x, &err), GK_OK, "%s", err.msg);
    }
    int32_t got;
    cr_assert_eq(rw(be[CU].state, t[0], &got, 4, &err), GK_ERR_INVALID_ARG, "an expired ticket was read");
    cr_assert(strstr(err.msg, "ticket"), "%s", err.msg);
}

/* A temperature so small that logit / T overflows must give the argmax (the
 * softmax's limit, and what core/generate.c does), never the least likely
 * candidate; a NaN logit is never drawn. The argmax is computed here. */
Test(cuda_ops, sample_at_a_vanishing_temperature_is_the_argmax)
{
    start();
    const int64_t V = 50000;
    float *x = rnd_vec(V, 6.0, 0.0);
    x[V / 3] = x[V / 2] = 9.0f; /* tied maximum: the lower id */
    x[7] = NAN;
    int64_t want = -1;
    for (int64_t i = 0; i < V; i++)
        if (!isnan(x[i]) && (want < 0 || x[i] > x[want]))
            want = i;
    cr_assert_eq(want, V / 3);
    pt *lg = pair_f(GK_DTYPE_F32, 1, V, x, "logits");
    const double us[3] = {0.0, 0.5, 0.999999};
    const int32_t ks[2] = {0, 40};
    const float ps[2] = {1.0f, 0.9f};
    for (int ui = 0; ui < 3; ui++)
        for (int ki = 0; ki < 2; ki++)
            for (int pi = 0; pi < 2; pi++) {
                gk_sample_params sp = {.temperature = 1e-38f, .top_k = ks[ki], .top_p = ps[pi], .u = us[ui]};
                int32_t got = -1;
                gk_err err = {0};
                cr_assert_eq(be[CU].ops->sample(be[CU].state, &lg->t[CU], &sp, &got, &err), GK_OK, "%s", err.msg);
                cr_assert_eq(got, (int32_t)want, "temperature 1e-38, top_k %d, top_p %g, u %g: got %d, argmax %lld",
                             (int)ks[ki], (double)ps[pi], us[ui], (int)got, (long long)want);
            }
    /* every logit NaN: id 0, as the host's argmax */
    for (int64_t i = 0; i < V; i++)
        x[i] = NAN;
    pt *nan = pair_f(GK_DTYPE_F32, 1, V, x, "logits_nan");
    gk_sample_params sp = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .u = 0.5};
    int32_t got = -1;
    gk_err err = {0};
    cr_assert_eq(be[CU].ops->sample(be[CU].state, &nan->t[CU], &sp, &got, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(got, 0);
    free(x);
}

/* ------------------------------------------------------------ graph replay */

/* The MLP of a block at decode sizes, as the backend fuses it: norm into the
 * projections that read it, the activation and the residual add into their
 * epilogues. Every node's output, the intermediate ones too, must match
 * cpu_ref: Llama's (RMS norm, gate and up, SwiGLU, down, residual) and
 * GPT-2's (layer norm with bias, fc with bias, GELU, proj, residual). */
static void mlp_case(gk_dtype dt, int64_t n, bool gpt2)
{
    const int64_t D = 512, F = 1536;
    float *xv = rnd_vec(n * D, 1.0, 0.0), *nw = rnd_vec(D, 0.5, 1.0), *nb = rnd_vec(D, 0.1, 0.0);
    float *wg = rnd_vec(F * D, 0.05, 0.0), *wu = rnd_vec(F * D, 0.05, 0.0), *wd = rnd_vec(D * F, 0.05, 0.0);
    float *bf = rnd_vec(F, 0.1, 0.0);
    pt *x = pair_f(GK_DTYPE_F32, n, D, xv, "attn_res"), *t_nw = pair_f(dt, 1, D, nw, "ffn_norm.weight");
    pt *t_nb = pair_f(dt, 1, D, nb, "ffn_norm.bias"), *t_bf = pair_f(dt, 1, F, bf, "fc.bias");
    pt *t_wg = pair_f(dt, F, D, wg, "gate"), *t_wu = pair_f(dt, F, D, wu, "up"), *t_wd = pair_f(dt, D, F, wd, "down");
    pt *h = pair_new(GK_DTYPE_F32, n, D, "ffn_norm"), *g = pair_new(GK_DTYPE_F32, n, F, "gate");
    pt *u = pair_new(GK_DTYPE_F32, n, F, "up"), *a = pair_new(GK_DTYPE_F32, n, F, "act");
    pt *o = pair_new(GK_DTYPE_F32, n, D, "ffn_out"), *res = pair_new(GK_DTYPE_F32, n, D, "l_out");
    pnode pns[6];
    int nn;
    if (gpt2) {
        pns[0] = (pnode){.op = GK_OP_LAYER_NORM, .src = {x, t_nw, t_nb}, .dst = h, .f = {1e-5f}};
        pns[1] = (pnode){.op = GK_OP_LINEAR, .src = {h, t_wg, t_bf}, .dst = g};
        pns[2] = (pnode){.op = GK_OP_GELU_TANH, .src = {g}, .dst = a};
        pns[3] = (pnode){.op = GK_OP_LINEAR, .src = {a, t_wd}, .dst = o};
        pns[4] = (pnode){.op = GK_OP_ADD, .src = {x, o}, .dst = res};
        nn = 5;
    } else {
        pns[0] = (pnode){.op = GK_OP_RMS_NORM, .src = {x, t_nw}, .dst = h, .f = {1e-5f}};
        pns[1] = (pnode){.op = GK_OP_LINEAR, .src = {h, t_wg}, .dst = g};
        pns[2] = (pnode){.op = GK_OP_LINEAR, .src = {h, t_wu}, .dst = u};
        pns[3] = (pnode){.op = GK_OP_SILU_MUL, .src = {g, u}, .dst = a};
        pns[4] = (pnode){.op = GK_OP_LINEAR, .src = {a, t_wd}, .dst = o};
        pns[5] = (pnode){.op = GK_OP_ADD, .src = {o, x}, .dst = res};
        nn = 6;
    }
    pgraph pg;
    pgraph_init(&pg, pns, nn);
    for (int rep = 0; rep < 3; rep++) { /* plain, captured, replayed */
        pgraph_run(&pg, "mlp");
        char what[96];
        snprintf(what, sizeof what, "%s mlp %s n=%lld run %d", gpt2 ? "gpt2" : "llama", dt_str(dt), (long long)n,
                 rep);
        expect_match(h, NULL, 1e-5, 1e-6, what);
        /* GEMV bounds: 1e-5 of sum|h w| (|h| ~ 1.5, |w| <= 0.05 over 512 or
         * 1536 terms), then the activation and a second GEMV on top */
        expect_match(g, NULL, 1e-4, 1e-4, what);
        if (!gpt2)
            expect_match(u, NULL, 1e-4, 1e-4, what);
        expect_match(a, NULL, 1e-4, 1e-4, what);
        expect_match(o, NULL, 1e-4, 2e-4, what);
        expect_match(res, NULL, 1e-4, 2e-4, what);
    }
    free(xv);
    free(nw);
    free(nb);
    free(wg);
    free(wu);
    free(wd);
    free(bf);
}

Test(cuda_ops, fused_mlp_blocks_match_cpu_ref_node_by_node)
{
    start();
    const int64_t n[3] = {1, 2, 5};
    for (int w = 0; w < 3; w++)
        for (int k = 0; k < 3; k++) {
            mlp_case(wtypes[w], n[k], false);
            mlp_case(wtypes[w], n[k], true);
        }
}

/* A decode-shaped graph: embed, norm, q/k/v projections, RoPE, attention
 * through the cache, output projection. Run again and again with new ids and
 * positions (plain, then captured, then replayed), every result must equal
 * cpu_ref's fresh run. */
static void replay_case(gk_dtype dt, int64_t n, int steps, bool qk_norm)
{
    const int64_t V = 300, D = 256, H = 4, Hkv = 2, hd = 64, n_ctx = 64;
    float *emb = rnd_vec(V * D, 1.0, 0.0), *nw = rnd_vec(D, 0.5, 1.0);
    float *wq = rnd_vec(H * hd * D, 0.1, 0.0), *wk = rnd_vec(Hkv * hd * D, 0.1, 0.0);
    float *wv = rnd_vec(Hkv * hd * D, 0.1, 0.0), *wo = rnd_vec(D * H * hd, 0.1, 0.0);
    float *inv = malloc((size_t)(hd / 2) * sizeof *inv);
    cr_assert(inv);
    for (int64_t i = 0; i < hd / 2; i++)
        inv[i] = (float)(1.0 / pow(10000.0, (double)(2 * i) / (double)hd));
    pt *t_emb = pair_f(dt, V, D, emb, "tok_embd"), *t_nw = pair_f(dt, 1, D, nw, "attn_norm.weight");
    pt *t_wq = pair_f(dt, H * hd, D, wq, "q_proj"), *t_wk = pair_f(dt, Hkv * hd, D, wk, "k_proj");
    pt *t_wv = pair_f(dt, Hkv * hd, D, wv, "v_proj"), *t_wo = pair_f(dt, D, H * hd, wo, "o_proj");
    pt *t_inv = pair_f(GK_DTYPE_F32, 1, hd / 2, inv, "inv_freq");
    /* F32 caches (kv_dtype f32): with a 16-bit cache, k and v (GEMV results,
     * which differ by rounding) may round one unit apart on the two backends,
     * and that is no replay question; the attn tests cover 16-bit caches
     * with identical inputs on both sides */
    attn_fix a = attn_fix_new(H, Hkv, hd, n_ctx, false, GK_DTYPE_F32);
    pt *ids = pair_new(GK_DTYPE_I32, 1, n, "ids"), *pos = pair_new(GK_DTYPE_I32, 1, n, "pos");
    pt *x = pair_new(GK_DTYPE_F32, n, D, "embd"), *xn = pair_new(GK_DTYPE_F32, n, D, "attn_norm");
    pt *q = pair_new(GK_DTYPE_F32, n, H * hd, "q"), *k = pair_new(GK_DTYPE_F32, n, Hkv * hd, "k");
    pt *v = pair_new(GK_DTYPE_F32, n, Hkv * hd, "v"), *qr = pair_new(GK_DTYPE_F32, n, H * hd, "q_rope");
    pt *kr = pair_new(GK_DTYPE_F32, n, Hkv * hd, "k_rope"), *at = pair_new(GK_DTYPE_F32, n, H * hd, "attn");
    pt *o = pair_new(GK_DTYPE_F32, n, D, "attn_out"), *res = pair_new(GK_DTYPE_F32, n, D, "l_out");
    float *qnw = rnd_vec(hd, 0.5, 1.0), *knw = rnd_vec(hd, 0.5, 1.0);
    pt *t_qnw = pair_f(dt, 1, hd, qnw, "q_norm.weight"), *t_knw = pair_f(dt, 1, hd, knw, "k_norm.weight");
    pt *qn = pair_new(GK_DTYPE_F32, n, H * hd, "q_norm"), *kn = pair_new(GK_DTYPE_F32, n, Hkv * hd, "k_norm");
    pnode pns[12] = {
        {.op = GK_OP_GET_ROWS, .src = {t_emb, ids}, .dst = x},
        {.op = GK_OP_RMS_NORM, .src = {x, t_nw}, .dst = xn, .f = {1e-5f}},
        {.op = GK_OP_LINEAR, .src = {xn, t_wq}, .dst = q},
        {.op = GK_OP_LINEAR, .src = {xn, t_wk}, .dst = k},
        {.op = GK_OP_LINEAR, .src = {xn, t_wv}, .dst = v},
        {.op = GK_OP_ROPE, .src = {q, pos, t_inv}, .dst = qr, .i = {(int32_t)hd}, .f = {1.0f}},
        {.op = GK_OP_ROPE, .src = {k, pos, t_inv}, .dst = kr, .i = {(int32_t)hd}, .f = {1.0f}},
        {.op = GK_OP_ATTN, .src = {qr, kr, v, pos, a.kc, a.vc}, .dst = at,
         .i = {(int32_t)H, (int32_t)Hkv, (int32_t)hd}, .f = {1.0f / sqrtf((float)hd)}},
        {.op = GK_OP_LINEAR, .src = {at, t_wo}, .dst = o},
        {.op = GK_OP_ADD, .src = {o, x}, .dst = res},
    };
    int nn = 10;
    if (qk_norm) {
        /* Qwen3's order: a per-head RMS norm of q and of k before RoPE */
        memmove(&pns[7], &pns[5], 5 * sizeof pns[0]);
        pns[5] = (pnode){.op = GK_OP_RMS_NORM, .src = {q, t_qnw}, .dst = qn, .i = {(int32_t)hd}, .f = {1e-6f}};
        pns[6] = (pnode){.op = GK_OP_RMS_NORM, .src = {k, t_knw}, .dst = kn, .i = {(int32_t)hd}, .f = {1e-6f}};
        pns[7].src[0] = qn;
        pns[8].src[0] = kn;
        nn = 12;
    }
    pgraph pg;
    pgraph_init(&pg, pns, nn);
    int32_t idv[64], pv[64];
    for (int s = 0; s < steps; s++) {
        for (int64_t t = 0; t < n; t++) {
            idv[t] = (int32_t)((s * 97 + t * 31 + 5) % V);
            pv[t] = (int32_t)(s * n + t);
        }
        pair_upload(ids, idv);
        pair_upload(pos, pv);
        pgraph_run(&pg, "replayed graph");
        char what[96];
        snprintf(what, sizeof what, "graph %s n=%lld step %d", dt_str(dt), (long long)n, s);
        /* several linears of width 256 in a row: GEMV bounds times a few */
        expect_match(res, NULL, 1e-4, 1e-5, what);
        /* the fused launches still write every node's output */
        expect_match(kr, NULL, 1e-4, 1e-5, "k_rope");
        if (qk_norm)
            expect_match(qn, NULL, 1e-4, 1e-5, "q_norm");
        expect_rows(a.kc, 0, (s + 1) * n, NULL, 1e-5, 1e-5, "k cache after replay");
        expect_rows(a.vc, 0, (s + 1) * n, NULL, 1e-5, 1e-5, "v cache after replay");
    }
    free(emb);
    free(nw);
    free(wq);
    free(wk);
    free(wv);
    free(wo);
    free(inv);
    free(qnw);
    free(knw);
}

Test(cuda_ops, a_graph_replayed_with_new_positions_matches_fresh_runs)
{
    start();
    for (int qk = 0; qk < 2; qk++) {
        replay_case(GK_DTYPE_F16, 1, 5, qk);
        replay_case(GK_DTYPE_BF16, 1, 4, qk);
        replay_case(GK_DTYPE_F32, 3, 4, qk);
        /* cuBLAS (FP32) inside the capture */
        replay_case(GK_DTYPE_F32, 12, 3, qk);
    }
}

/* ------------------------------------------------ ABI 1.4 vocabulary
 * Error bounds (per element, |cuda - cpu_ref|):
 *   mul, gather, topk ids       exact (the same float operation / the same rule)
 *   scale                       1 ulp (x f0 + f1 rounded twice here; an FMA on the host would differ)
 *   softcap, gelu, geglu        1e-6 abs + 2e-6 rel  (CUDA tanhf/erff: 2 ulp)
 *   softmax                     1e-7 abs + 1e-5 rel  (tree vs sequential sums)
 *   moe_sum                     1e-6 abs + 1e-6 rel  (same order; libm-free)
 *   linear_id                   1e-5 * sum|x w|      (as the GEMV); a second linear_id
 *                               and moe_sum after it: 1e-4 rel + 2e-3 abs (the first's
 *                               differences carried through |w| < 0.5, out <= 128)
 *   rms_norm offset, rope rot   as rms_norm, rope above
 *   attn window / softcap       as attn above (tensor cores for n > 8 over 16-bit caches)
 */


Test(cuda_ops, mul_scale_softcap_gelu_geglu_and_softmax_match_cpu_ref)
{
    start();
    const int64_t shapes[4][2] = {{1, 37}, {7, 1000}, {33, 4099}, {513, 64}};
    for (int si = 0; si < 4; si++) {
        int64_t n = shapes[si][0], D = shapes[si][1];
        char what[96];
        for (int w = 0; w < 3; w++)
            for (int bc = 0; bc < 2; bc++) {
                float *bv = rnd_vec((bc ? 1 : n) * D, 2.0, 0.5);
                pt *a = pair_rnd(n, D, 4.0, 0.0, "a", NULL), *b = pair_f(wtypes[w], bc ? 1 : n, D, bv, "b");
                free(bv);
                pt *dst = pair_new(GK_DTYPE_F32, n, D, "mul");
                pnode pn = {.op = GK_OP_MUL, .src = {a, b}, .dst = dst};
                run1(&pn, "mul");
                snprintf(what, sizeof what, "mul [%lld][%lld] by %s [%lld][%lld]", (long long)n, (long long)D,
                         dt_str(wtypes[w]), (long long)(bc ? 1 : n), (long long)D);
                expect_match(dst, NULL, 0.0, 0.0, what);
            }
        pt *a = pair_rnd(n, D, 4.0, 0.0, "a", NULL), *b = pair_rnd(n, D, 3.0, 0.5, "b", NULL);
        struct {
            gk_op op;
            int32_t i0;
            float f0, f1;
            double rtol, atol;
        } cs[7] = {
            {GK_OP_SCALE, 0, 0.37f, -1.25f, 1.2e-7, 1e-7}, {GK_OP_SCALE, 0, 1.0f, 0.0f, 0.0, 0.0},
            {GK_OP_SOFTCAP, 0, 3.0f, 0, 2e-6, 1e-6},    {GK_OP_SOFTCAP, 0, 30.0f, 0, 2e-6, 1e-6},
            {GK_OP_GELU, 0, 0, 0, 2e-6, 1e-6},          {GK_OP_GEGLU, 0, 0, 0, 2e-6, 1e-6},
            {GK_OP_GEGLU, 1, 0, 0, 2e-6, 1e-6},
        };
        for (int c = 0; c < 7; c++) {
            pt *dst = pair_new(GK_DTYPE_F32, n, D, "out");
            pnode pn = {.op = cs[c].op, .src = {a, cs[c].op == GK_OP_GEGLU ? b : NULL}, .dst = dst,
                        .i = {cs[c].i0}, .f = {cs[c].f0, cs[c].f1}};
            run1(&pn, gk_op_name(cs[c].op));
            snprintf(what, sizeof what, "%s i0=%d f0=%g [%lld][%lld]", gk_op_name(cs[c].op), (int)cs[c].i0,
                     (double)cs[c].f0, (long long)n, (long long)D);
            expect_match(dst, NULL, cs[c].rtol, cs[c].atol, what);
        }
        /* softmax of logits spread over a wide range */
        pt *x = pair_rnd(n, D, 12.0, 1.0, "logits", NULL), *dst = pair_new(GK_DTYPE_F32, n, D, "probs");
        pnode pn = {.op = GK_OP_SOFTMAX, .src = {x}, .dst = dst};
        run1(&pn, "softmax");
        snprintf(what, sizeof what, "softmax [%lld][%lld]", (long long)n, (long long)D);
        expect_match(dst, NULL, 1e-5, 1e-7, what);
    }
}

Test(cuda_ops, topk_largest_first_with_ties_and_gather_match_cpu_ref)
{
    start();
    const int64_t Es[5] = {8, 60, 128, 512, 1000}, ks[4] = {1, 2, 8, 32}, nn[3] = {1, 7, 33};
    for (int ei = 0; ei < 5; ei++)
        for (int ki = 0; ki < 4; ki++)
            for (int ni = 0; ni < 3; ni++)
                for (int tie = 0; tie < 2; tie++) {
                    int64_t E = Es[ei], k = ks[ki], n = nn[ni];
                    if (k > E)
                        continue;
                    float *v = rnd_vec(n * E, 3.0, 0.0);
                    if (tie) /* few distinct values: many ties, broken by the lower column */
                        for (int64_t i = 0; i < n * E; i++)
                            v[i] = floorf(v[i] * 2.0f) / 2.0f;
                    pt *x = pair_f(GK_DTYPE_F32, n, E, v, "router");
                    free(v);
                    pt *ids = pair_new(GK_DTYPE_I32, n, k, "topk"), *g = pair_new(GK_DTYPE_F32, n, k, "gathered");
                    pnode pns[2] = {{.op = GK_OP_TOPK, .src = {x}, .dst = ids, .i = {(int32_t)k}},
                                    {.op = GK_OP_GATHER, .src = {x, ids}, .dst = g}};
                    pgraph pg;
                    pgraph_init(&pg, pns, 2);
                    pgraph_run(&pg, "topk + gather");
                    int32_t *ri = malloc((size_t)(n * k) * 4), *ci = malloc((size_t)(n * k) * 4);
                    cr_assert(ri && ci);
                    gk_err err = {0};
                    cr_assert_eq(be[REF].ops->buffer_read(be[REF].state, ids->t[REF].data, 0, ri, (size_t)(n * k) * 4,
                                                          &err), GK_OK);
                    cr_assert_eq(be[CU].ops->buffer_read(be[CU].state, ids->t[CU].data, 0, ci, (size_t)(n * k) * 4,
                                                         &err), GK_OK);
                    for (int64_t i = 0; i < n * k; i++)
                        cr_assert_eq(ci[i], ri[i], "topk E=%lld k=%lld n=%lld ties=%d: [%lld][%lld] cuda %d, cpu_ref %d",
                                     (long long)E, (long long)k, (long long)n, tie, (long long)(i / k),
                                     (long long)(i % k), ci[i], ri[i]);
                    free(ri);
                    free(ci);
                    char what[80];
                    snprintf(what, sizeof what, "gather E=%lld k=%lld n=%lld", (long long)E, (long long)k, (long long)n);
                    expect_match(g, NULL, 0.0, 0.0, what);
                }
}

Test(cuda_ops, gather_with_a_bad_column_is_reported_at_synchronize)
{
    start();
    pt *x = pair_rnd(2, 4, 1.0, 0.0, "router", NULL);
    const int32_t bad[4] = {0, 1, 3, 4};
    pt *ids = pair_i2(2, 2, bad, "ids"), *g = pair_new(GK_DTYPE_F32, 2, 2, "gathered");
    pnode pn = {.op = GK_OP_GATHER, .src = {x, ids}, .dst = g};
    gk_node nd = side_node(&pn, CU);
    gk_graph gr = {.nodes = &nd, .n_nodes = 1, .n_tokens = 2};
    gk_err err = {0};
    gk_status st = be[CU].ops->graph_compute(be[CU].state, &gr, &err);
    if (st == GK_OK)
        st = be[CU].ops->synchronize(be[CU].state, &err);
    cr_assert_eq(st, GK_ERR_INVALID_ARG, "status %d: %s", st, err.msg);
    cr_assert(strstr(err.msg, "gather") && strstr(err.msg, "4"), "message: %s", err.msg);
    cr_assert_eq(be[CU].ops->synchronize(be[CU].state, &err), GK_OK, "%s", err.msg);
}

/* Router -> top-k -> softmax of the picked -> expert linears -> weighted sum,
 * as a Mixtral / Qwen-MoE block routes a token; every node checked. */
static void moe_case(gk_dtype dt, int64_t n, int64_t E, int64_t k, int64_t in, int64_t out)
{
    float *xv, *wv = rnd_vec(E * out * in, 0.5, 0.0);
    pt *x = pair_rnd(n, in, 1.0, 0.0, "x", &xv), *W = pair_f(dt, E * out, in, wv, "experts.up");
    pt *W2 = pair_f(dt, E * in, out, wv, "experts.down"); /* the same values, [E*in][out] */
    pt *router = pair_rnd(n, E, 3.0, 0.0, "router", NULL);
    pt *ids = pair_new(GK_DTYPE_I32, n, k, "topk"), *g = pair_new(GK_DTYPE_F32, n, k, "picked");
    pt *pw = pair_new(GK_DTYPE_F32, n, k, "weights"), *h = pair_new(GK_DTYPE_F32, n, k * out, "up");
    pt *h2 = pair_new(GK_DTYPE_F32, n, k * in, "down"), *y = pair_new(GK_DTYPE_F32, n, in, "moe_out");
    pnode pns[6] = {
        {.op = GK_OP_TOPK, .src = {router}, .dst = ids, .i = {(int32_t)k}},
        {.op = GK_OP_GATHER, .src = {router, ids}, .dst = g},
        {.op = GK_OP_SOFTMAX, .src = {g}, .dst = pw},
        {.op = GK_OP_LINEAR_ID, .src = {x, W, ids}, .dst = h, .i = {(int32_t)E}},      /* shared x */
        {.op = GK_OP_LINEAR_ID, .src = {h, W2, ids}, .dst = h2, .i = {(int32_t)E}},    /* x per slot */
        {.op = GK_OP_MOE_SUM, .src = {h2, pw}, .dst = y},
    };
    pgraph pg;
    pgraph_init(&pg, pns, 6);
    pgraph_run(&pg, "moe block");
    char what[96];
    snprintf(what, sizeof what, "moe %s n=%lld E=%lld k=%lld in=%lld out=%lld", dt_str(dt), (long long)n,
             (long long)E, (long long)k, (long long)in, (long long)out);
    expect_match(pw, NULL, 1e-5, 1e-7, what);
    /* linear_id's bound: 1e-5 * sum_i |x_i w_ei| of the expert cpu_ref picked */
    int32_t *id = malloc((size_t)(n * k) * 4);
    cr_assert(id);
    gk_err err = {0};
    cr_assert_eq(be[REF].ops->buffer_read(be[REF].state, ids->t[REF].data, 0, id, (size_t)(n * k) * 4, &err), GK_OK);
    double *mag = calloc((size_t)(n * k * out), sizeof *mag);
    cr_assert(mag);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++)
            for (int64_t o = 0; o < out; o++) {
                double m = 0.0;
                for (int64_t i = 0; i < in; i++)
                    m += fabs((double)xv[t * in + i] * wv[((int64_t)id[t * k + j] * out + o) * in + i]);
                mag[(t * k + j) * out + o] = 1e-5 * m + 1e-7;
            }
    expect_match(h, mag, 1.0, 0.0, what);
    free(mag);
    /* the second linear_id and the sum: their inputs agree to the bound above */
    expect_match(h2, NULL, 1e-4, 2e-3, what);
    expect_match(y, NULL, 1e-4, 2e-3, what);
    free(id);
    free(xv);
    free(wv);
}

Test(cuda_ops, moe_routing_linear_id_and_moe_sum_match_cpu_ref)
{
    start();
    for (int w = 0; w < 3; w++) {
        moe_case(wtypes[w], 1, 8, 2, 256, 128);   /* decode, vector loads */
        moe_case(wtypes[w], 1, 64, 8, 96, 40);
        moe_case(wtypes[w], 7, 8, 2, 37, 19);     /* odd widths: scalar loads */
        moe_case(wtypes[w], 33, 128, 8, 64, 32);  /* prefill */
    }
}

Test(cuda_ops, rms_norm_with_a_weight_offset_matches_cpu_ref_alone_and_fused)
{
    start();
    const int64_t cases[3][2] = {{1000, 0}, {512, 64}, {2048, 0}};
    for (int ci = 0; ci < 3; ci++)
        for (int w = 0; w < 3; w++)
            for (int k = 0; k < 3; k++) {
                int64_t D = cases[ci][0], G = cases[ci][1], n = ns[k];
                float *wv = rnd_vec(G ? G : D, 0.5, 0.0);
                pt *x = pair_rnd(n, D, 2.0, 0.3, "x", NULL), *tw = pair_f(wtypes[w], 1, G ? G : D, wv, "norm.w");
                pt *b = pair_rnd(n, D, 1.0, 0.0, "b", NULL);
                free(wv);
                pt *dst = pair_new(GK_DTYPE_F32, n, D, "norm"), *sum = pair_new(GK_DTYPE_F32, n, D, "res");
                pt *dst2 = pair_new(GK_DTYPE_F32, n, D, "norm2");
                pnode pn = {.op = GK_OP_RMS_NORM, .src = {x, tw}, .dst = dst, .i = {(int32_t)G}, .f = {1e-6f, 1.0f}};
                run1(&pn, "rms_norm offset");
                char what[96];
                snprintf(what, sizeof what, "rms_norm+1 D=%lld G=%lld %s n=%lld", (long long)D, (long long)G,
                         dt_str(wtypes[w]), (long long)n);
                expect_match(dst, NULL, 1e-5, 1e-6, what);
                /* add + norm (fused on the cuda side) and a norm feeding a linear */
                float *lw = rnd_vec(64 * D, 0.5, 0.0);
                pt *W = pair_f(wtypes[w], 64, D, lw, "proj");
                pt *yl = pair_new(GK_DTYPE_F32, n, 64, "proj_out");
                pnode pns[3] = {
                    {.op = GK_OP_ADD, .src = {x, b}, .dst = sum},
                    {.op = GK_OP_RMS_NORM, .src = {sum, tw}, .dst = dst2, .i = {(int32_t)G}, .f = {1e-6f, 1.0f}},
                    {.op = GK_OP_LINEAR, .src = {dst2, W}, .dst = yl},
                };
                pgraph pg;
                pgraph_init(&pg, pns, 3);
                pgraph_run(&pg, "add + rms_norm offset + linear");
                expect_match(sum, NULL, 0.0, 0.0, what);
                expect_match(dst2, NULL, 1e-5, 1e-5, what);
                /* the linear's bound as linear_case's, on cpu_ref's norm output */
                float *hn = download(REF, &dst2->t[REF]);
                double *mag = abs_dots(hn, lw, NULL, n, D, 64);
                double rel = n <= 8 ? 3e-5 : wtypes[w] == GK_DTYPE_F32 ? 3e-5 : wtypes[w] == GK_DTYPE_F16 ? 2e-3 : 8e-3;
                expect_match(yl, mag, rel, 1e-6, what);
                free(mag);
                free(hn);
                free(lw);
            }
}

Test(cuda_ops, rope_with_a_partial_rotary_dim_matches_cpu_ref)
{
    start();
    /* head_dim, rotary_dim: a quarter (GPT-NeoX / Phi), a half (GLM), all */
    const int64_t cases[4][2] = {{64, 16}, {128, 64}, {80, 32}, {64, 64}};
    for (int ci = 0; ci < 4; ci++)
        for (int k = 0; k < 4; k++) {
            int64_t hd = cases[ci][0], r = cases[ci][1], H = 4, n = ns[k];
            float *inv = malloc((size_t)(r / 2) * sizeof *inv);
            int32_t *p = malloc((size_t)n * sizeof *p);
            cr_assert(inv && p);
            for (int64_t i = 0; i < r / 2; i++)
                inv[i] = (float)(1.0 / pow(10000.0, (double)(2 * i) / (double)r));
            for (int64_t t = 0; t < n; t++)
                p[t] = (int32_t)(5 + 13 * t);
            pt *x = pair_rnd(n, H * hd, 1.0, 0.0, "q", NULL), *y = pair_rnd(n, 2 * hd, 1.0, 0.0, "k", NULL);
            pt *pos = pair_i(n, p, "pos"), *tf = pair_f(GK_DTYPE_F32, 1, r / 2, inv, "inv_freq");
            pt *dq = pair_new(GK_DTYPE_F32, n, H * hd, "q_rope"), *dk = pair_new(GK_DTYPE_F32, n, 2 * hd, "k_rope");
            pnode pns[2] = {
                {.op = GK_OP_ROPE, .src = {x, pos, tf}, .dst = dq, .i = {(int32_t)hd, (int32_t)r}, .f = {1.0f}},
                {.op = GK_OP_ROPE, .src = {y, pos, tf}, .dst = dk, .i = {(int32_t)hd, (int32_t)r}, .f = {1.0f}},
            };
            pgraph pg;
            pgraph_init(&pg, pns, 2); /* q and k share a launch on the cuda side */
            pgraph_run(&pg, "rope partial");
            char what[80];
            snprintf(what, sizeof what, "rope hd=%lld rot=%lld n=%lld", (long long)hd, (long long)r, (long long)n);
            expect_match(dq, NULL, 1e-5, 1e-6, what);
            expect_match(dk, NULL, 1e-5, 1e-6, what);
            free(inv);
            free(p);
        }
}

/* Prefill then decode steps with a window and a softcap, over the decode,
 * tiled and tensor-core kernels (head dims 64, 128; 256 as Gemma's; 80 and 20
 * only the tiled kernel takes). */
Test(cuda_ops, attn_with_sliding_window_and_softcap_matches_cpu_ref)
{
    start();
    const int64_t hds[5] = {64, 128, 256, 80, 20};
    const int32_t windows[3] = {0, 1, 24};
    const float caps[2] = {0.0f, 0.7f}; /* scores of |q|,|k| < 1 vectors: 0.7 bends them */
    for (int w = 0; w < 3; w++)
        for (int d = 0; d < 5; d++)
            for (int wi = 0; wi < 3; wi++)
                for (int ci = 0; ci < 2; ci++) {
                    if (wi == 0 && ci == 0)
                        continue; /* the default: the tests above */
                    attn_fix a = attn_fix_new(4, 2, hds[d], 512, false, wtypes[w]);
                    int32_t p[160];
                    for (int t = 0; t < 160; t++)
                        p[t] = t;
                    attn_step_wc(&a, 100, p, "prefill", windows[wi], caps[ci]);
                    attn_step_wc(&a, 1, p + 100, "decode", windows[wi], caps[ci]);
                    attn_step_wc(&a, 3, p + 101, "decode3", windows[wi], caps[ci]);
                    attn_step_wc(&a, 9, p + 104, "prefill9", windows[wi], caps[ci]);
                }
    /* a long filled cache: the decode kernel splits only the window's rows */
    for (int w = 0; w < 3; w++) {
        attn_fix a = attn_fix_new(16, 4, 128, 4096, true, wtypes[w]);
        const int32_t p1[1] = {4000}, p2[2] = {4095, 17}, p3[4] = {900, 40, 41, 2500};
        attn_step_wc(&a, 1, p1, "long", 512, 0.0f);
        attn_step_wc(&a, 1, p1, "long capped", 4096, 0.5f);
        attn_step_wc(&a, 2, p2, "mixed", 100, 0.0f);
        attn_step_wc(&a, 4, p3, "scattered", 33, 0.9f);
    }
}

/* Ring caches of W + U - 1 rows fed U positions at a time, far past their
 * rows (each wraps many times), over the decode kernel (U <= 8), the tiled
 * and tensor-core kernels (U = 24) and head dims 64, 128, 256 and 80: every
 * output and every row stored is cpu_ref's. */
Test(cuda_ops, attn_on_a_ring_cache_matches_cpu_ref)
{
    start();
    const int64_t hds[4] = {64, 128, 256, 80};
    const int32_t us[3] = {1, 5, 24}, windows[2] = {7, 40};
    for (int w = 0; w < 3; w++)
        for (int d = 0; d < 4; d++)
            for (int ui = 0; ui < 3; ui++)
                for (int wi = 0; wi < 2; wi++) {
                    const int32_t U = us[ui], W = windows[wi];
                    const int mark = n_pairs;
                    attn_fix a = attn_fix_new(4, 2, hds[d], W + U - 1, false, wtypes[w]);
                    int32_t p[24];
                    for (int32_t start = 0; start < 3 * (W + U); start += U) {
                        for (int32_t t = 0; t < U; t++)
                            p[t] = start + t;
                        attn_check(&a, U, p, &(attn_case){.tag = "ring", .window = W, .ring = true});
                    }
                    pairs_free_from(mark);
                }
}

/* Four slots: each gets a prompt on its own (f[3] > 0: the tiled and
 * tensor-core kernels), then steps of one token from every slot at once at
 * different positions (f[3] < 0: the decode kernel, up to 40 tokens a node),
 * over head dims 64, 128, 256, with whole caches and rings. */
Test(cuda_ops, attn_over_sequence_slots_matches_cpu_ref)
{
    start();
    const int64_t hds[3] = {64, 128, 256};
    for (int w = 0; w < 3; w++)
        for (int d = 0; d < 3; d++)
            for (int ring = 0; ring < 2; ring++) {
                const int64_t n_slot = 40, S = ring ? 16 + 24 - 1 : 96;
                const int32_t W = ring ? 16 : 0;
                const int mark = n_pairs;
                attn_fix a = attn_fix_new(8, 2, hds[d], n_slot * S, false, wtypes[w]);
                int32_t p[40], sl[40], past[40];
                for (int s = 0; s < 4; s++) { /* prompts of 24 + s tokens into slots 3, 7, 11, 15 */
                    int32_t n = 24 - 3 * s;
                    for (int32_t t = 0; t < n; t++)
                        p[t] = t, sl[t] = 4 * s + 3;
                    attn_check(&a, n, p, &(attn_case){"one slot", W, 0.0f, ring, S, sl, false});
                }
                for (int s = 0; s < (int)n_slot; s++)
                    past[s] = s % 4 == 3 && s < 16 ? 24 - 3 * (s / 4) : 0;
                for (int step = 0; step < 30; step++) { /* every slot at once; the others start empty */
                    int32_t n = step < 10 ? 4 : 40;
                    for (int32_t t = 0; t < n; t++) {
                        int32_t s = n == 4 ? 4 * t + 3 : t;
                        sl[t] = s;
                        p[t] = past[s]++;
                    }
                    if (!ring && step >= 10 && past[0] > 60)
                        break;
                    attn_check(&a, n, p, &(attn_case){"slots", W, 0.0f, ring, S, sl, true});
                }
                pairs_free_from(mark);
            }
}

Test(cuda_ops, explain_node_names_what_was_refused)
{
    start();
    plug *c = &be[CU];
    cr_assert(GK_BACKEND_OP(c->ops, explain_node), "cuda has explain_node");
    pt *q = pair_new(GK_DTYPE_F32, 1, 2 * 320, "q"), *k = pair_new(GK_DTYPE_F32, 1, 320, "k");
    pt *v = pair_new(GK_DTYPE_F32, 1, 320, "v"), *kc = pair_new(GK_DTYPE_F32, 8, 320, "k_cache");
    pt *vc = pair_new(GK_DTYPE_F32, 8, 320, "v_cache"), *pos = pair_new(GK_DTYPE_I32, 1, 1, "pos");
    pt *out = pair_new(GK_DTYPE_F32, 1, 2 * 320, "attn");
    pnode pn = {.op = GK_OP_ATTN, .src = {q, k, v, pos, kc, vc}, .dst = out, .i = {2, 1, 320}, .f = {0.05f, 50.0f}};
    gk_node nd = side_node(&pn, CU);
    cr_assert(!c->ops->supports_node(c->state, &nd));
    char why[160] = "";
    c->ops->explain_node(c->state, &nd, why, sizeof why);
    cr_assert(strstr(why, "head_dim") && strstr(why, "320"), "why: %s", why);

    pt *x = pair_new(GK_DTYPE_F32, 2, 40, "router"), *ids = pair_new(GK_DTYPE_I32, 2, 40, "topk");
    pnode tk = {.op = GK_OP_TOPK, .src = {x}, .dst = ids, .i = {40}};
    nd = side_node(&tk, CU);
    cr_assert(c->ops->supports_node(c->state, &nd), "topk k = E = 40");
    pt *big = pair_new(GK_DTYPE_F32, 1, 100, "wide"), *ids2 = pair_new(GK_DTYPE_I32, 1, 65, "topk");
    pnode tk2 = {.op = GK_OP_TOPK, .src = {big}, .dst = ids2, .i = {65}};
    nd = side_node(&tk2, CU);
    cr_assert(!c->ops->supports_node(c->state, &nd), "k 65 is beyond the kernel");
    c->ops->explain_node(c->state, &nd, why, sizeof why);
    cr_assert(strstr(why, "topk") && strstr(why, "65"), "why: %s", why);

    pt *xr = pair_new(GK_DTYPE_F32, 1, 128, "x"), *po = pair_new(GK_DTYPE_I32, 1, 1, "pos");
    pt *fr = pair_new(GK_DTYPE_F32, 1, 40, "inv_freq"), *dr = pair_new(GK_DTYPE_F32, 1, 128, "x_rope");
    pnode rp = {.op = GK_OP_ROPE, .src = {xr, po, fr}, .dst = dr, .i = {64, 96}};
    nd = side_node(&rp, CU);
    cr_assert(!c->ops->supports_node(c->state, &nd), "rotary_dim above head_dim");
    c->ops->explain_node(c->state, &nd, why, sizeof why);
    cr_assert(strstr(why, "rotary_dim"), "why: %s", why);
}

/* ------------------------------------------------------------------ main */

#define SKIP_EXIT_NAME "cuda_ops"
#include "skip_exit.h"

/* Through the runtime: a model whose KV cache cannot fit in GPU memory is
 * refused before upload, naming what it needs and what is free. */
Test(cuda_ops, a_model_too_large_for_the_gpu_is_refused_with_the_sizes)
{
    start();
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    gk_model_opts o = {.backend = "cuda", .dtype = "f32", .n_ctx = 1000000000};
    gk_model *m = NULL;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", getenv("GK_TEST_DATA") ? getenv("GK_TEST_DATA") : "data");
    cr_expect_eq(gk_model_load(rt, dir, &o, &m, &err), GK_ERR_NOMEM, "%s", err.msg);
    cr_expect_null(m);
    cr_expect(strstr(err.msg, "needs 512.00 GB") && strstr(err.msg, "GB is free"), "%s", err.msg);
    gk_runtime_destroy(rt);
}
