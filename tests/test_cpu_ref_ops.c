/* test_cpu_ref_ops.c - every graph op of the cpu_ref backend against an oracle.
 *
 * The plugin is dlopen'd from the build tree and driven only through its
 * descriptor and ops table, as the core drives it. Each oracle is the
 * textbook formula in double precision on the very values the backend saw
 * (inputs rounded to float, weights rounded to F16/BF16 and decoded here, not
 * by libgk), so tolerances stay at float rounding (~1e-5 relative).
 * Speed is not tested here: see tools/bench_cpu_ref.c.
 */
#include "gk/gk_plugin.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- the plugin */

static void *dl;
static const gk_plugin_desc *desc;
static const gk_backend_ops *ops;
static void *be;  /* the backend's state */

#define MAX_TENSORS 512
static gk_tensor pool[MAX_TENSORS];
static int n_pool;

static void setup(void)
{
    const char *root = getenv("GK_TEST_BUILD_ROOT");
    cr_assert(root, "GK_TEST_BUILD_ROOT is not set (run through meson test)");
    char path[4096];
    snprintf(path, sizeof path, "%s/backends/cpu_ref/libgk-backend-cpu_ref.so", root);
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert(dl, "dlopen %s: %s", path, dlerror());
    gk_plugin_entry_fn entry;
    *(void **)&entry = dlsym(dl, GK_PLUGIN_ENTRY_NAME);
    cr_assert(entry, "no %s in %s", GK_PLUGIN_ENTRY_NAME, path);
    desc = entry();
    cr_assert_eq(desc->abi_major, GK_ABI_MAJOR);
    cr_assert_eq(desc->struct_size, sizeof(gk_plugin_desc));
    cr_assert_eq(desc->kind, GK_PLUGIN_KIND_BACKEND);
    cr_assert_str_eq(desc->name, "cpu_ref");
    gk_host host = {.abi_major = GK_ABI_MAJOR, .abi_minor = GK_ABI_MINOR};
    gk_err err = {0};
    cr_assert_eq(desc->init(&host, &be, &err), GK_OK, "init: %s", err.msg);
    ops = desc->ops;
    cr_assert_eq(ops->struct_size, sizeof(gk_backend_ops));
}

static void teardown(void)
{
    for (int i = 0; i < n_pool; i++)
        ops->buffer_free(be, pool[i].data);
    n_pool = 0;
    if (desc->fini)
        desc->fini(be);
    dlclose(dl);
}

TestSuite(cpu_ref, .init = setup, .fini = teardown);

/* ------------------------------------------------------------ test values */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double rnd(void)  /* uniform in [-1, 1), splitmix64 */
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static double *rnd_vec(int64_t n, double scale, double offset)
{
    double *v = malloc((size_t)n * sizeof *v);
    cr_assert(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = offset + scale * rnd();
    return v;
}

/* Independent F16 / BF16 codecs: encode any normal value, decode exactly. */
static uint16_t enc_f16(double v)
{
    uint16_t sign = v < 0 ? 0x8000 : 0;
    int e;
    double m = frexp(fabs(v), &e);  /* |v| = m 2^e, m in [0.5, 1) */
    if (m == 0.0 || e - 1 < -14)
        return sign;  /* below the normal range: zero is a fine test value */
    long f = lround((2.0 * m - 1.0) * 1024.0);
    if (f == 1024) {
        f = 0;
        e++;
    }
    return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)f);
}

static double dec_f16(uint16_t h)
{
    int e = (h >> 10) & 31, f = h & 1023;
    double v = e == 0 ? ldexp(f, -24) : ldexp(1024 + f, e - 25);
    return h & 0x8000 ? -v : v;
}

static uint16_t enc_bf16(double v)
{
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);  /* truncation: any bf16 is a valid weight */
}

static double dec_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---------------------------------------------------------------- tensors */

static gk_tensor *tensor(gk_dtype dt, int64_t rows, int64_t cols, const char *name)
{
    cr_assert(n_pool < MAX_TENSORS, "tensor pool full");
    gk_tensor *t = &pool[n_pool];
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->rows = rows;
    t->cols = cols;
    t->layer = -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    gk_err err = {0};
    cr_assert_eq(ops->buffer_alloc(be, gk_tensor_nbytes(t), &t->data, &err), GK_OK, "%s",
                 err.msg);
    n_pool++;
    return t;
}

static void upload(gk_tensor *t, const void *src)
{
    gk_err err = {0};
    cr_assert_eq(ops->buffer_write(be, t->data, 0, src, gk_tensor_nbytes(t), &err), GK_OK,
                 "%s", err.msg);
}

/* A tensor of dtype dt holding vals [rows][cols]; vals is replaced by exactly
 * what the tensor holds (rounded to float, F16 or BF16). */
static gk_tensor *filled(gk_dtype dt, int64_t rows, int64_t cols, double *vals, const char *name)
{
    gk_tensor *t = tensor(dt, rows, cols, name);
    int64_t ne = rows * cols;
    void *buf = malloc((size_t)ne * 4);
    cr_assert(buf);
    for (int64_t i = 0; i < ne; i++) {
        if (dt == GK_DTYPE_F16) {
            uint16_t h = enc_f16(vals[i]);
            ((uint16_t *)buf)[i] = h;
            vals[i] = dec_f16(h);
        } else if (dt == GK_DTYPE_BF16) {
            uint16_t h = enc_bf16(vals[i]);
            ((uint16_t *)buf)[i] = h;
            vals[i] = dec_bf16(h);
        } else {
            ((float *)buf)[i] = (float)vals[i];
            vals[i] = (float)vals[i];
        }
    }
    upload(t, buf);
    free(buf);
    return t;
}

static gk_tensor *act(int64_t rows, int64_t cols, double *vals, const char *name)
{
    return filled(GK_DTYPE_F32, rows, cols, vals, name);
}

static gk_tensor *ints(int64_t n, const int32_t *vals, const char *name)
{
    gk_tensor *t = tensor(GK_DTYPE_I32, 1, n, name);
    upload(t, vals);
    return t;
}

static float *download(const gk_tensor *t)
{
    float *out = malloc((size_t)gk_tensor_nbytes(t));
    cr_assert(out);
    gk_err err = {0};
    cr_assert_eq(ops->buffer_read(be, t->data, 0, out, gk_tensor_nbytes(t), &err), GK_OK,
                 "%s", err.msg);
    return out;
}

/* Every element of t within atol + rtol * mag of want (mag NULL: |want|). */
static void expect_close(const gk_tensor *t, const double *want, const double *mag,
                         double rtol, double atol, const char *what)
{
    float *got = download(t);
    for (int64_t e = 0; e < gk_tensor_nelem(t); e++) {
        double tol = atol + rtol * (mag ? mag[e] : fabs(want[e]));
        cr_assert(fabs(got[e] - want[e]) <= tol && !isnan(got[e]),
                  "%s: [%lld][%lld] is %.9g, want %.9g (tol %.3g)", what,
                  (long long)(e / t->cols), (long long)(e % t->cols), got[e], want[e], tol);
    }
    free(got);
}

static const char *dt_str(gk_dtype d)
{
    return d == GK_DTYPE_F16 ? "F16" : d == GK_DTYPE_BF16 ? "BF16" : "F32";
}

static gk_status run(gk_node *nd, gk_err *err)
{
    gk_graph g = {.nodes = nd, .n_nodes = 1, .n_tokens = nd->dst->rows};
    return ops->graph_compute(be, &g, err);
}

static void run_ok(gk_node *nd, const char *what)
{
    cr_assert(ops->supports_node(be, nd), "%s: supports_node said no", what);
    gk_err err = {0};
    gk_status s = run(nd, &err);
    cr_assert_eq(s, GK_OK, "%s: %s", what, err.msg);
}

static const gk_dtype wtypes[3] = {GK_DTYPE_F32, GK_DTYPE_F16, GK_DTYPE_BF16};
static const int64_t ns[3] = {1, 7, 33};

/* ------------------------------------------------------------- the backend */

Test(cpu_ref, reports_a_cpu_and_allocates_host_memory)
{
    char why[64] = "";
    cr_assert(ops->available(be, why, sizeof why));
    gk_device_props p;
    gk_err err = {0};
    cr_assert_eq(ops->device_props(be, &p, &err), GK_OK);
    cr_assert_str_eq(p.name, "cpu");
    cr_assert(!p.is_gpu);
    cr_assert(p.mem_total > 0 && p.mem_free <= p.mem_total);

    void *empty = NULL;
    cr_assert_eq(ops->buffer_alloc(be, 0, &empty, &err), GK_OK);
    cr_assert(empty, "a 0-byte buffer must still be a pointer");
    ops->buffer_free(be, empty);

    void *buf;
    cr_assert_eq(ops->buffer_alloc(be, 64, &buf, &err), GK_OK);
    char in[16] = "abcdefghijklmno", out[16] = "";
    cr_assert_eq(ops->buffer_write(be, buf, 10, in, 16, &err), GK_OK);
    cr_assert_eq(ops->buffer_read(be, (char *)buf + 4, 6, out, 16, &err), GK_OK);
    cr_assert_str_eq(out, in);
    ops->buffer_free(be, buf);

#ifndef __SANITIZE_ADDRESS__  /* ASan treats an impossible malloc as a fatal error */
    void *huge = NULL;
    cr_assert_eq(ops->buffer_alloc(be, SIZE_MAX / 2, &huge, &err), GK_ERR_NOMEM);
    cr_assert(strstr(err.msg, "bytes"), "message: %s", err.msg);
#endif
}

/* ---------------------------------------------------------------- get_rows */

Test(cpu_ref, get_rows_copies_the_named_rows_as_float)
{
    const int64_t V = 11, D = 37;
    for (int w = 0; w < 3; w++) {
        for (int k = 0; k < 3; k++) {
            int64_t n = ns[k];
            double *tab = rnd_vec(V * D, 2.0, 0.0);
            gk_tensor *table = filled(wtypes[w], V, D, tab, "tok_embd");
            int32_t *id = malloc((size_t)n * sizeof *id);
            for (int64_t t = 0; t < n; t++)
                id[t] = t == 0 ? (int32_t)(V - 1) : (int32_t)((t * 5 + 3) % V);
            gk_tensor *ids = ints(n, id, "ids");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "embd");
            gk_node nd = {.op = GK_OP_GET_ROWS, .src = {table, ids}, .dst = dst};
            run_ok(&nd, "get_rows");

            double *want = malloc((size_t)(n * D) * sizeof *want);
            for (int64_t t = 0; t < n; t++)
                for (int64_t j = 0; j < D; j++)
                    want[t * D + j] = tab[id[t] * D + j];
            expect_close(dst, want, NULL, 0.0, 0.0, dt_str(wtypes[w]));
            free(tab);
            free(id);
            free(want);
        }
    }
}

Test(cpu_ref, get_rows_with_an_id_out_of_range_is_invalid_arg)
{
    const int64_t V = 5, D = 3;
    double *tab = rnd_vec(V * D, 1.0, 0.0);
    gk_tensor *table = filled(GK_DTYPE_F32, V, D, tab, "tok_embd");
    const int32_t bad[2][2] = {{0, 5}, {-1, 2}};
    for (int b = 0; b < 2; b++) {
        gk_tensor *ids = ints(2, bad[b], "ids");
        gk_tensor *dst = tensor(GK_DTYPE_F32, 2, D, "embd");
        gk_node nd = {.op = GK_OP_GET_ROWS, .src = {table, ids}, .dst = dst};
        cr_assert(ops->supports_node(be, &nd), "shapes and dtypes are fine");
        gk_err err = {0};
        cr_assert_eq(run(&nd, &err), GK_ERR_INVALID_ARG);
        cr_assert_eq(err.code, GK_ERR_INVALID_ARG);
        cr_assert(strstr(err.msg, "get_rows") && strstr(err.msg, "tok_embd"), "message: %s",
                  err.msg);
    }
    free(tab);
}

/* --------------------------------------------------------------------- add */

Test(cpu_ref, add_is_elementwise)
{
    const int64_t D = 37;
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        double *a = rnd_vec(n * D, 3.0, 0.0), *b = rnd_vec(n * D, 3.0, 0.0);
        gk_tensor *ta = act(n, D, a, "a"), *tb = act(n, D, b, "b");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "sum");
        gk_node nd = {.op = GK_OP_ADD, .src = {ta, tb}, .dst = dst};
        run_ok(&nd, "add");
        double *want = malloc((size_t)(n * D) * sizeof *want);
        for (int64_t e = 0; e < n * D; e++)
            want[e] = a[e] + b[e];
        expect_close(dst, want, NULL, 1e-7, 0.0, "add");
        free(a);
        free(b);
        free(want);
    }
}

/* ------------------------------------------------------------------- norms */

Test(cpu_ref, layer_norm_matches_torch_layer_norm)
{
    const int64_t dims[2] = {37, 768};
    const float eps = 1e-5f;
    for (int di = 0; di < 2; di++) {
        int64_t D = dims[di];
        for (int w = 0; w < 3; w++) {
            for (int k = 0; k < 3; k++) {
                int64_t n = ns[k];
                double *x = rnd_vec(n * D, 1.5, 3.0);  /* a mean far from 0 */
                double *wv = rnd_vec(D, 1.0, 1.0), *bv = rnd_vec(D, 0.5, 0.0);
                gk_tensor *tx = act(n, D, x, "x");
                gk_tensor *tw = filled(wtypes[w], 1, D, wv, "ln.weight");
                gk_tensor *tb = filled(wtypes[w], 1, D, bv, "ln.bias");
                gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "norm");
                gk_node nd = {.op = GK_OP_LAYER_NORM, .src = {tx, tw, tb}, .dst = dst,
                              .f = {eps}};
                run_ok(&nd, "layer_norm");

                double *want = malloc((size_t)(n * D) * sizeof *want);
                for (int64_t t = 0; t < n; t++) {
                    const double *r = x + t * D;
                    double mean = 0.0, var = 0.0;
                    for (int64_t j = 0; j < D; j++)
                        mean += r[j] / (double)D;
                    for (int64_t j = 0; j < D; j++)
                        var += (r[j] - mean) * (r[j] - mean) / (double)D;
                    for (int64_t j = 0; j < D; j++)
                        want[t * D + j] = (r[j] - mean) / sqrt(var + eps) * wv[j] + bv[j];
                }
                char what[64];
                snprintf(what, sizeof what, "layer_norm D=%lld %s n=%lld", (long long)D,
                         dt_str(wtypes[w]), (long long)n);
                expect_close(dst, want, NULL, 1e-5, 1e-5, what);
                free(x);
                free(wv);
                free(bv);
                free(want);
            }
        }
    }
}

/* out = x / sqrt(mean(x^2 over its group of g) + eps) * w[j % g] */
static void rms_oracle(const double *x, const double *w, int64_t n, int64_t d, int64_t g,
                       double eps, double *out)
{
    for (int64_t t = 0; t < n; t++)
        for (int64_t g0 = 0; g0 < d; g0 += g) {
            double ms = 0.0;
            for (int64_t j = 0; j < g; j++)
                ms += x[t * d + g0 + j] * x[t * d + g0 + j] / (double)g;
            for (int64_t j = 0; j < g; j++)
                out[t * d + g0 + j] = x[t * d + g0 + j] / sqrt(ms + eps) * w[j];
        }
}

Test(cpu_ref, rms_norm_over_whole_rows_matches_llama_rms_norm)
{
    const int64_t D = 37;
    const float eps = 1e-6f;
    for (int w = 0; w < 3; w++) {
        for (int k = 0; k < 3; k++) {
            for (int gi = 0; gi < 2; gi++) {  /* i[0] = 0 and i[0] = D both mean "whole row" */
                int64_t n = ns[k];
                double *x = rnd_vec(n * D, 2.0, 0.5), *wv = rnd_vec(D, 1.0, 0.2);
                gk_tensor *tx = act(n, D, x, "x");
                gk_tensor *tw = filled(wtypes[w], 1, D, wv, "attn_norm.weight");
                gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "attn_norm");
                gk_node nd = {.op = GK_OP_RMS_NORM, .src = {tx, tw}, .dst = dst,
                              .i = {gi ? (int32_t)D : 0}, .f = {eps}};
                run_ok(&nd, "rms_norm");
                double *want = malloc((size_t)(n * D) * sizeof *want);
                rms_oracle(x, wv, n, D, D, eps, want);
                char what[64];
                snprintf(what, sizeof what, "rms_norm %s n=%lld i0=%d", dt_str(wtypes[w]),
                         (long long)n, (int)nd.i[0]);
                expect_close(dst, want, NULL, 1e-5, 1e-6, what);
                free(x);
                free(wv);
                free(want);
            }
        }
    }
}

Test(cpu_ref, rms_norm_in_groups_norms_each_head_apart)
{
    /* QK-norm: x is [n][H*hd], the weight [1][hd] is shared by every head. */
    const int64_t hds[2] = {8, 64}, heads[2] = {3, 4};
    for (int hi = 0; hi < 2; hi++) {
        for (int w = 0; w < 3; w++) {
            int64_t hd = hds[hi], D = heads[hi] * hd, n = 7;
            double *x = rnd_vec(n * D, 1.0, 0.0), *wv = rnd_vec(hd, 1.0, 1.0);
            for (int64_t t = 0; t < n; t++)  /* heads of very different sizes */
                for (int64_t j = 0; j < hd; j++)
                    x[t * D + j] *= 10.0;
            gk_tensor *tx = act(n, D, x, "q");
            gk_tensor *tw = filled(wtypes[w], 1, hd, wv, "q_norm.weight");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "q_normed");
            gk_node nd = {.op = GK_OP_RMS_NORM, .src = {tx, tw}, .dst = dst,
                          .i = {(int32_t)hd}, .f = {1e-6f}};
            run_ok(&nd, "rms_norm groups");
            double *want = malloc((size_t)(n * D) * sizeof *want);
            rms_oracle(x, wv, n, D, hd, 1e-6, want);
            char what[64];
            snprintf(what, sizeof what, "qk-norm hd=%lld %s", (long long)hd, dt_str(wtypes[w]));
            expect_close(dst, want, NULL, 1e-5, 1e-6, what);
            free(x);
            free(wv);
            free(want);
        }
    }
}

/* ------------------------------------------------------------------ linear */

Test(cpu_ref, linear_is_x_times_w_transposed_plus_bias)
{
    const int64_t ins[2] = {37, 64}, outs[2] = {5, 65};
    for (int w = 0; w < 3; w++)
        for (int ii = 0; ii < 2; ii++)
            for (int oi = 0; oi < 2; oi++)
                for (int k = 0; k < 3; k++)
                    for (int has_b = 0; has_b < 2; has_b++) {
                        int64_t n = ns[k], in = ins[ii], out = outs[oi];
                        double *x = rnd_vec(n * in, 1.0, 0.0), *wv = rnd_vec(out * in, 0.5, 0.0);
                        double *bv = rnd_vec(out, 1.0, 0.0);
                        gk_tensor *tx = act(n, in, x, "x");
                        gk_tensor *tw = filled(wtypes[w], out, in, wv, "blk.0.q_proj");
                        gk_tensor *tb = has_b ? filled(wtypes[w], 1, out, bv, "q_bias") : NULL;
                        gk_tensor *dst = tensor(GK_DTYPE_F32, n, out, "q");
                        gk_node nd = {.op = GK_OP_LINEAR, .src = {tx, tw, tb}, .dst = dst};
                        run_ok(&nd, "linear");

                        double *want = malloc((size_t)(n * out) * sizeof *want);
                        double *mag = malloc((size_t)(n * out) * sizeof *mag);
                        for (int64_t t = 0; t < n; t++)
                            for (int64_t o = 0; o < out; o++) {
                                double s = has_b ? bv[o] : 0.0, m = fabs(s);
                                for (int64_t i = 0; i < in; i++) {
                                    s += x[t * in + i] * wv[o * in + i];
                                    m += fabs(x[t * in + i] * wv[o * in + i]);
                                }
                                want[t * out + o] = s;
                                mag[t * out + o] = m;
                            }
                        char what[96];
                        snprintf(what, sizeof what, "linear %s n=%lld in=%lld out=%lld bias=%d",
                                 dt_str(wtypes[w]), (long long)n, (long long)in,
                                 (long long)out, has_b);
                        expect_close(dst, want, mag, 1e-5, 0.0, what);
                        free(x);
                        free(wv);
                        free(bv);
                        free(want);
                        free(mag);
                    }
}

/* -------------------------------------------------------------------- rope */

static void rope_case(int64_t hd, int64_t H, int64_t n, const int32_t *p, float scale)
{
    int64_t D = H * hd, half = hd / 2;
    double *x = rnd_vec(n * D, 1.0, 0.0);
    double *inv = malloc((size_t)half * sizeof *inv);
    for (int64_t i = 0; i < half; i++)  /* HF: 1 / theta^(2i/hd), stored as float */
        inv[i] = 1.0 / pow(10000.0, 2.0 * (double)i / (double)hd);
    gk_tensor *tx = act(n, D, x, "q"), *tinv = act(1, half, inv, "inv_freq");
    gk_tensor *pos = ints(n, p, "pos");
    gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "q_rope");
    gk_node nd = {.op = GK_OP_ROPE, .src = {tx, pos, tinv}, .dst = dst, .i = {(int32_t)hd},
                  .f = {scale}};
    run_ok(&nd, "rope");

    double *want = malloc((size_t)(n * D) * sizeof *want);
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < half; i++) {
                /* transformers forms the angle as a float32 product; that float
                 * is this op's real input, so the oracle starts from it. */
                float angle = (float)p[t] * (float)inv[i];
                double c = cos((double)angle) * scale, s = sin((double)angle) * scale;
                double x1 = x[t * D + h * hd + i], x2 = x[t * D + h * hd + i + half];
                want[t * D + h * hd + i] = x1 * c - x2 * s;
                want[t * D + h * hd + i + half] = x2 * c + x1 * s;
            }
    char what[64];
    snprintf(what, sizeof what, "rope hd=%lld n=%lld scale=%g", (long long)hd, (long long)n,
             scale);
    expect_close(dst, want, NULL, 1e-5, 1e-6, what);
    free(x);
    free(inv);
    free(want);
}

Test(cpu_ref, rope_rotates_halves_like_hf)
{
    const int32_t p1[1] = {0};
    const int32_t p7[7] = {0, 1, 2, 3, 4, 5, 6};
    const int32_t far[7] = {17, 100, 511, 2047, 4095, 8191, 131071};
    const int64_t hds[2] = {8, 64};
    for (int hi = 0; hi < 2; hi++) {
        rope_case(hds[hi], 3, 1, p1, 1.0f);
        rope_case(hds[hi], 3, 7, p7, 1.0f);
        rope_case(hds[hi], 2, 7, far, 1.0f);
        rope_case(hds[hi], 2, 7, far, 0.75f);  /* attention_scaling */
    }
}

/* -------------------------------------------------------------- attention */

typedef struct attn_case {
    int64_t H, Hkv, hd, n_ctx;
    gk_tensor *kc, *vc;
} attn_case;

static attn_case attn_new(int64_t H, int64_t Hkv, int64_t hd, int64_t n_ctx)
{
    attn_case a = {H, Hkv, hd, n_ctx, NULL, NULL};
    a.kc = tensor(GK_DTYPE_F32, n_ctx, Hkv * hd, "cache_k");
    a.vc = tensor(GK_DTYPE_F32, n_ctx, Hkv * hd, "cache_v");
    return a;
}

static gk_node attn_node(const attn_case *a, gk_tensor *q, gk_tensor *k, gk_tensor *v,
                         gk_tensor *pos, gk_tensor *dst)
{
    gk_node nd = {.op = GK_OP_ATTN, .src = {q, k, v, pos, a->kc, a->vc}, .dst = dst,
                  .i = {(int32_t)a->H, (int32_t)a->Hkv, (int32_t)a->hd},
                  .f = {(float)(1.0 / sqrt((double)a->hd))}};
    return nd;
}

/* Causal attention of n tokens at positions 0..n-1, straight from the formula. */
static void attn_oracle(const double *q, const double *k, const double *v, int64_t n,
                        int64_t H, int64_t Hkv, int64_t hd, double *out)
{
    int64_t qw = H * hd, kvw = Hkv * hd;
    double *p = malloc((size_t)n * sizeof *p);
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++) {
            int64_t kh = h / (H / Hkv);
            double max = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j <= t; j++) {
                double s = 0.0;
                for (int64_t e = 0; e < hd; e++)
                    s += q[t * qw + h * hd + e] * k[j * kvw + kh * hd + e];
                p[j] = s * (double)(float)(1.0 / sqrt((double)hd));
                max = fmax(max, p[j]);
            }
            for (int64_t j = 0; j <= t; j++)
                sum += p[j] = exp(p[j] - max);
            for (int64_t e = 0; e < hd; e++) {
                double o = 0.0;
                for (int64_t j = 0; j <= t; j++)
                    o += p[j] / sum * v[j * kvw + kh * hd + e];
                out[t * qw + h * hd + e] = o;
            }
        }
    free(p);
}

Test(cpu_ref, attn_is_causal_softmax_attention_with_gqa)
{
    const int64_t hds[2] = {8, 64}, ratios[3] = {1, 2, 4};
    for (int hi = 0; hi < 2; hi++)
        for (int ri = 0; ri < 3; ri++)
            for (int k = 0; k < 3; k++) {
                int64_t hd = hds[hi], Hkv = 2, H = Hkv * ratios[ri], n = ns[k];
                attn_case a = attn_new(H, Hkv, hd, 40);
                double *q = rnd_vec(n * H * hd, 2.0, 0.0);
                double *kk = rnd_vec(n * Hkv * hd, 2.0, 0.0), *v = rnd_vec(n * Hkv * hd, 1.0, 0.0);
                int32_t p[33];
                for (int64_t t = 0; t < n; t++)
                    p[t] = (int32_t)t;
                gk_tensor *tq = act(n, H * hd, q, "q"), *tk = act(n, Hkv * hd, kk, "k");
                gk_tensor *tv = act(n, Hkv * hd, v, "v"), *pos = ints(n, p, "pos");
                gk_tensor *dst = tensor(GK_DTYPE_F32, n, H * hd, "attn");
                gk_node nd = attn_node(&a, tq, tk, tv, pos, dst);
                run_ok(&nd, "attn");

                double *want = malloc((size_t)(n * H * hd) * sizeof *want);
                attn_oracle(q, kk, v, n, H, Hkv, hd, want);
                char what[64];
                snprintf(what, sizeof what, "attn hd=%lld H=%lld Hkv=%lld n=%lld",
                         (long long)hd, (long long)H, (long long)Hkv, (long long)n);
                expect_close(dst, want, NULL, 1e-5, 1e-5, what);

                /* k and v landed in cache rows 0..n-1 */
                float *kc = download(a.kc), *vc = download(a.vc);
                for (int64_t e = 0; e < n * Hkv * hd; e++) {
                    cr_assert_eq(kc[e], (float)kk[e], "%s: k cache element %lld", what,
                                 (long long)e);
                    cr_assert_eq(vc[e], (float)v[e], "%s: v cache element %lld", what,
                                 (long long)e);
                }
                free(kc);
                free(vc);
                free(q);
                free(kk);
                free(v);
                free(want);
            }
}

/* Round-to-nearest-even encoders, independent of libgk: the compiler's
 * _Float16 conversion, and the bf16 bit rule (finite values). */
static uint16_t rne_f16(float f)
{
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static double f16_val(uint16_t u)
{
    _Float16 h;
    memcpy(&h, &u, 2);
    return (double)h;
}

static uint16_t rne_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* A 16-bit cache stores k and v rounded to nearest even and attends over the
 * stored values: the float64 formula on the rounded k and v, and the cache
 * rows hold exactly the rounded bits. */
Test(cpu_ref, attn_over_a_16_bit_cache_uses_the_rounded_values)
{
    const gk_dtype dts[2] = {GK_DTYPE_F16, GK_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        int64_t hd = 64, Hkv = 2, H = 4, n = 17, kvw = Hkv * hd;
        attn_case a = {H, Hkv, hd, 24, tensor(dts[d], 24, kvw, "cache_k"), tensor(dts[d], 24, kvw, "cache_v")};
        double *q = rnd_vec(n * H * hd, 2.0, 0.0), *kk = rnd_vec(n * kvw, 2.0, 0.0), *v = rnd_vec(n * kvw, 1.0, 0.0);
        int32_t p[17];
        for (int64_t t = 0; t < n; t++)
            p[t] = (int32_t)t;
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, H * hd, "attn");
        gk_node nd = attn_node(&a, act(n, H * hd, q, "q"), act(n, kvw, kk, "k"), act(n, kvw, v, "v"),
                               ints(n, p, "pos"), dst);
        run_ok(&nd, "attn 16-bit cache");
        /* what the cache must hold: each float input rounded once */
        double *kr = malloc((size_t)(n * kvw) * sizeof *kr), *vr = malloc((size_t)(n * kvw) * sizeof *vr);
        const uint16_t *kc = a.kc->data, *vc = a.vc->data;
        for (int64_t e = 0; e < n * kvw; e++) {
            /* kk and v hold the floats the tensors got (act rounds them) */
            uint16_t kb = dts[d] == GK_DTYPE_F16 ? rne_f16((float)kk[e]) : rne_bf16((float)kk[e]);
            uint16_t vb = dts[d] == GK_DTYPE_F16 ? rne_f16((float)v[e]) : rne_bf16((float)v[e]);
            cr_assert_eq(kc[e], kb, "%s: k cache element %lld", gk_dtype_name(dts[d]), (long long)e);
            cr_assert_eq(vc[e], vb, "%s: v cache element %lld", gk_dtype_name(dts[d]), (long long)e);
            kr[e] = dts[d] == GK_DTYPE_F16 ? f16_val(kb) : dec_bf16(kb);
            vr[e] = dts[d] == GK_DTYPE_F16 ? f16_val(vb) : dec_bf16(vb);
        }
        double *want = malloc((size_t)(n * H * hd) * sizeof *want);
        attn_oracle(q, kr, vr, n, H, Hkv, hd, want);
        expect_close(dst, want, NULL, 1e-5, 1e-5, gk_dtype_name(dts[d]));
        /* the unrounded formula is farther off than rounding noise allows */
        double *plain = malloc((size_t)(n * H * hd) * sizeof *plain);
        attn_oracle(q, kk, v, n, H, Hkv, hd, plain);
        float *got = download(dst);
        double worst = 0.0;
        for (int64_t e = 0; e < n * H * hd; e++)
            worst = fmax(worst, fabs((double)got[e] - plain[e]));
        cr_assert(worst > 1e-5, "%s: the output ignores the cache rounding (max diff %g)", gk_dtype_name(dts[d]),
                  worst);
        free(got);
        free(plain);
        free(want);
        free(kr);
        free(vr);
        free(q);
        free(kk);
        free(v);
    }
}

/* Rows [r0, r0+n) of a [*][cols] double matrix as an F32 tensor. */
static gk_tensor *slice(const double *m, int64_t r0, int64_t n, int64_t cols, const char *name)
{
    double *part = malloc((size_t)(n * cols) * sizeof *part);
    memcpy(part, m + r0 * cols, (size_t)(n * cols) * sizeof *part);
    gk_tensor *t = act(n, cols, part, name);
    free(part);
    return t;
}

Test(cpu_ref, attn_appended_to_a_filled_cache_equals_the_whole_sequence_at_once)
{
    const int64_t hds[2] = {8, 64}, chunks[4] = {20, 1, 7, 5}, N = 33;
    for (int hi = 0; hi < 2; hi++) {
        int64_t hd = hds[hi], H = 8, Hkv = 2, qw = H * hd, kvw = Hkv * hd;
        double *q = rnd_vec(N * qw, 2.0, 0.0), *k = rnd_vec(N * kvw, 2.0, 0.0);
        double *v = rnd_vec(N * kvw, 1.0, 0.0);
        for (int64_t e = 0; e < N * qw; e++)
            q[e] = (float)q[e];
        for (int64_t e = 0; e < N * kvw; e++) {
            k[e] = (float)k[e];
            v[e] = (float)v[e];
        }

        /* the whole sequence in one call */
        attn_case whole = attn_new(H, Hkv, hd, 48);
        int32_t p[33];
        for (int64_t t = 0; t < N; t++)
            p[t] = (int32_t)t;
        gk_tensor *all = tensor(GK_DTYPE_F32, N, qw, "attn");
        gk_node nd = attn_node(&whole, slice(q, 0, N, qw, "q"), slice(k, 0, N, kvw, "k"),
                               slice(v, 0, N, kvw, "v"), ints(N, p, "pos"), all);
        run_ok(&nd, "attn whole");
        float *ref = download(all);

        /* the same tokens in chunks at positions 20, 21, 28 after a prefill */
        attn_case inc = attn_new(H, Hkv, hd, 48);
        int64_t t0 = 0;
        double *want = malloc((size_t)(N * qw) * sizeof *want);
        attn_oracle(q, k, v, N, H, Hkv, hd, want);
        for (int c = 0; c < 4; c++) {
            int64_t n = chunks[c];
            gk_tensor *out = tensor(GK_DTYPE_F32, n, qw, "attn");
            gk_node step = attn_node(&inc, slice(q, t0, n, qw, "q"), slice(k, t0, n, kvw, "k"),
                                     slice(v, t0, n, kvw, "v"), ints(n, p + t0, "pos"), out);
            run_ok(&step, "attn chunk");
            double *part = malloc((size_t)(n * qw) * sizeof *part);
            for (int64_t e = 0; e < n * qw; e++)
                part[e] = ref[t0 * qw + e];
            char what[64];
            snprintf(what, sizeof what, "hd=%lld chunk at pos %lld vs whole", (long long)hd,
                     (long long)t0);
            expect_close(out, part, NULL, 1e-6, 1e-7, what);
            snprintf(what, sizeof what, "hd=%lld chunk at pos %lld vs oracle", (long long)hd,
                     (long long)t0);
            expect_close(out, want + t0 * qw, NULL, 1e-5, 1e-5, what);
            free(part);
            t0 += n;
        }
        cr_assert_eq(t0, N);
        free(ref);
        free(q);
        free(k);
        free(v);
        free(want);
    }
}

Test(cpu_ref, attn_at_a_position_beyond_the_cache_is_an_error)
{
    const int64_t H = 2, Hkv = 1, hd = 8, n_ctx = 8;
    attn_case a = attn_new(H, Hkv, hd, n_ctx);
    const float zeros[8 * 1 * 8] = {0};  /* [n_ctx][Hkv*hd] */
    upload(a.kc, zeros);
    upload(a.vc, zeros);
    const int32_t bad[3][2] = {{7, 8}, {-1, 0}, {100000, 1}};
    for (int b = 0; b < 3; b++) {
        double *q = rnd_vec(2 * H * hd, 1.0, 0.0), *kv = rnd_vec(2 * Hkv * hd, 1.0, 0.0);
        gk_tensor *dst = tensor(GK_DTYPE_F32, 2, H * hd, "attn");
        gk_node nd = attn_node(&a, act(2, H * hd, q, "q"), act(2, Hkv * hd, kv, "k"),
                               act(2, Hkv * hd, kv, "v"), ints(2, bad[b], "pos"), dst);
        gk_err err = {0};
        cr_assert_eq(run(&nd, &err), GK_ERR_INVALID_ARG, "pos {%d, %d}", bad[b][0], bad[b][1]);
        cr_assert(strstr(err.msg, "attn"), "message: %s", err.msg);
        free(q);
        free(kv);
    }
    /* nothing was written: positions are checked before the caches change */
    float *kc = download(a.kc);
    for (int64_t e = 0; e < n_ctx * Hkv * hd; e++)
        cr_assert_eq(kc[e], 0.0f, "cache element %lld changed", (long long)e);
    free(kc);
}

/* ------------------------------------------------------------ activations */

Test(cpu_ref, gelu_tanh_matches_gpt2_gelu_new)
{
    const int64_t D = 37;
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        double *x = rnd_vec(n * D, 6.0, 0.0);
        x[0] = 0.0;
        if (n > 1) {
            x[1] = -20.0;
            x[2] = 20.0;
        }
        gk_tensor *tx = act(n, D, x, "ffn_up");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "ffn_act");
        gk_node nd = {.op = GK_OP_GELU_TANH, .src = {tx}, .dst = dst};
        run_ok(&nd, "gelu_tanh");
        double *want = malloc((size_t)(n * D) * sizeof *want);
        for (int64_t e = 0; e < n * D; e++) {
            double v = x[e];
            want[e] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        }
        expect_close(dst, want, NULL, 1e-5, 1e-6, "gelu_tanh");
        free(x);
        free(want);
    }
}

Test(cpu_ref, silu_mul_is_silu_of_gate_times_up)
{
    const int64_t D = 37;
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        double *g = rnd_vec(n * D, 8.0, 0.0), *u = rnd_vec(n * D, 2.0, 0.0);
        g[0] = 0.0;
        if (n > 1) {
            g[1] = -100.0;  /* exp(100) overflows float: still a clean -0 */
            g[2] = 100.0;
        }
        gk_tensor *tg = act(n, D, g, "ffn_gate"), *tu = act(n, D, u, "ffn_up");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "ffn_act");
        gk_node nd = {.op = GK_OP_SILU_MUL, .src = {tg, tu}, .dst = dst};
        run_ok(&nd, "silu_mul");
        double *want = malloc((size_t)(n * D) * sizeof *want);
        for (int64_t e = 0; e < n * D; e++)
            want[e] = g[e] / (1.0 + exp(-g[e])) * u[e];
        expect_close(dst, want, NULL, 1e-5, 1e-6, "silu_mul");
        free(g);
        free(u);
        free(want);
    }
}

/* ------------------------------------------------------------------ graphs */

Test(cpu_ref, a_graph_runs_its_nodes_in_order)
{
    /* embd = table[ids]; h = rms_norm(embd); out = h W^T */
    const int64_t V = 9, D = 37, O = 11, n = 7;
    double *tab = rnd_vec(V * D, 1.0, 0.0), *nw = rnd_vec(D, 0.5, 1.0);
    double *wv = rnd_vec(O * D, 0.5, 0.0);
    const int32_t id[7] = {3, 1, 4, 1, 5, 8, 2};
    gk_tensor *table = filled(GK_DTYPE_BF16, V, D, tab, "tok_embd");
    gk_tensor *tnw = filled(GK_DTYPE_F16, 1, D, nw, "norm.weight");
    gk_tensor *tw = filled(GK_DTYPE_F32, O, D, wv, "head");
    gk_tensor *ids = ints(n, id, "ids");
    gk_tensor *embd = tensor(GK_DTYPE_F32, n, D, "embd");
    gk_tensor *h = tensor(GK_DTYPE_F32, n, D, "out_norm");
    gk_tensor *out = tensor(GK_DTYPE_F32, n, O, "logits");
    gk_node nodes[3] = {
        {.op = GK_OP_GET_ROWS, .src = {table, ids}, .dst = embd},
        {.op = GK_OP_RMS_NORM, .src = {embd, tnw}, .dst = h, .f = {1e-5f}},
        {.op = GK_OP_LINEAR, .src = {h, tw}, .dst = out},
    };
    gk_graph g = {.nodes = nodes, .n_nodes = 3, .n_tokens = n};
    gk_err err = {0};
    cr_assert_eq(ops->graph_compute(be, &g, &err), GK_OK, "%s", err.msg);

    double x[7 * 37], hn[7 * 37], want[7 * 11], mag[7 * 11];
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < D; j++)
            x[t * D + j] = tab[id[t] * D + j];
    rms_oracle(x, nw, n, D, D, 1e-5, hn);
    for (int64_t t = 0; t < n; t++)
        for (int64_t o = 0; o < O; o++) {
            want[t * O + o] = mag[t * O + o] = 0.0;
            for (int64_t j = 0; j < D; j++) {
                want[t * O + o] += hn[t * D + j] * wv[o * D + j];
                mag[t * O + o] += fabs(hn[t * D + j] * wv[o * D + j]);
            }
        }
    expect_close(out, want, mag, 2e-5, 0.0, "get_rows -> rms_norm -> linear");
    free(tab);
    free(nw);
    free(wv);
}

/* ------------------------------------------------------------------ errors */

Test(cpu_ref, supports_node_rejects_wrong_dtypes_and_shapes)
{
    gk_tensor *x = tensor(GK_DTYPE_F32, 3, 8, "x");
    gk_tensor *x16 = tensor(GK_DTYPE_F16, 3, 8, "x16");
    gk_tensor *w = tensor(GK_DTYPE_F16, 5, 8, "w");
    gk_tensor *wi = tensor(GK_DTYPE_I32, 5, 8, "w_i32");
    gk_tensor *w7 = tensor(GK_DTYPE_F32, 5, 7, "w_7");
    gk_tensor *ids = tensor(GK_DTYPE_I32, 1, 3, "ids");
    gk_tensor *idsf = tensor(GK_DTYPE_F32, 1, 3, "ids_f32");
    gk_tensor *out5 = tensor(GK_DTYPE_F32, 3, 5, "out");
    gk_tensor *out8 = tensor(GK_DTYPE_F32, 3, 8, "out8");
    gk_tensor *out8h = tensor(GK_DTYPE_F16, 3, 8, "out8_f16");
    gk_tensor *c = tensor(GK_DTYPE_F32, 16, 8, "cache");
    gk_tensor *c16 = tensor(GK_DTYPE_F16, 16, 8, "cache_f16");

    gk_node good = {.op = GK_OP_LINEAR, .src = {x, w}, .dst = out5};
    cr_assert(ops->supports_node(be, &good));
    gk_node bad[] = {
        {.op = GK_OP_LINEAR, .src = {x16, w}, .dst = out5},          /* F16 activation */
        {.op = GK_OP_LINEAR, .src = {x, wi}, .dst = out5},           /* I32 weight */
        {.op = GK_OP_LINEAR, .src = {x, w7}, .dst = out5},           /* in 7 vs 8 */
        {.op = GK_OP_LINEAR, .src = {x, w}, .dst = out8},            /* dst cols */
        {.op = GK_OP_LINEAR, .src = {x, w, x}, .dst = out5},         /* bias shape */
        {.op = GK_OP_LINEAR, .src = {x}, .dst = out5},               /* no weight */
        {.op = GK_OP_GET_ROWS, .src = {w, idsf}, .dst = out8},       /* F32 ids */
        {.op = GK_OP_GELU_TANH, .src = {x}, .dst = out8h},           /* F16 dst */
        {.op = GK_OP_ADD, .src = {x, out5}, .dst = out8},            /* shapes differ */
        {.op = GK_OP_RMS_NORM, .src = {x, w}, .dst = out8, .i = {3}}, /* 3 does not divide 8 */
        {.op = GK_OP_ROPE, .src = {x, ids, x}, .dst = out8, .i = {8}}, /* inv_freq shape */
        {.op = GK_OP_ROPE, .src = {x, ids, x}, .dst = out8, .i = {3}}, /* odd head dim */
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c16, c}, .dst = out8, .i = {1, 1, 8}},
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8, .i = {3, 2, 8}},
        {.op = GK_OP_COUNT, .src = {x}, .dst = out8},                /* unknown op */
        {.op = (gk_op)-1, .src = {x}, .dst = out8},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(!ops->supports_node(be, &bad[i]), "bad node %zu (%s) accepted", i,
                  gk_op_name(bad[i].op));
    gk_node ok_attn = {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8,
                       .i = {1, 1, 8}};
    cr_assert(ops->supports_node(be, &ok_attn));
}

Test(cpu_ref, graph_compute_names_the_op_and_tensor_it_cannot_run)
{
    gk_tensor *x = tensor(GK_DTYPE_F32, 3, 8, "x");
    gk_tensor *wi = tensor(GK_DTYPE_I32, 5, 8, "blk.2.q_proj");
    gk_tensor *out = tensor(GK_DTYPE_F32, 3, 5, "q");
    gk_node nd = {.op = GK_OP_LINEAR, .src = {x, wi}, .dst = out};
    gk_err err = {0};
    cr_assert_eq(run(&nd, &err), GK_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "linear") && strstr(err.msg, "blk.2.q_proj"), "message: %s",
              err.msg);

    gk_tensor *w7 = tensor(GK_DTYPE_F32, 5, 7, "blk.2.k_proj");
    gk_node shape = {.op = GK_OP_LINEAR, .src = {x, w7}, .dst = out};
    cr_assert_eq(run(&shape, &err), GK_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "linear") && strstr(err.msg, "blk.2.k_proj"), "message: %s",
              err.msg);

    gk_node missing = {.op = GK_OP_ADD, .src = {x, NULL}, .dst = tensor(GK_DTYPE_F32, 3, 8, "s")};
    cr_assert_eq(run(&missing, &err), GK_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "add"), "message: %s", err.msg);

    gk_node alias = {.op = GK_OP_GELU_TANH, .src = {x}, .dst = x};
    cr_assert_eq(run(&alias, &err), GK_ERR_INVALID_ARG);
}

/* ======================================================= ABI 1.4 ops */

/* An I32 tensor [rows][cols] holding vals. */
static gk_tensor *ints2(int64_t rows, int64_t cols, const int32_t *vals, const char *name)
{
    gk_tensor *t = tensor(GK_DTYPE_I32, rows, cols, name);
    upload(t, vals);
    return t;
}

static int32_t *download_ints(const gk_tensor *t)
{
    return (int32_t *)download(t);  /* the same bytes: 4 per element */
}

/* -------------------------------------------------------------------- mul */

Test(cpu_ref, mul_is_elementwise_and_broadcasts_a_row)
{
    const int64_t D = 37;
    for (int w = 0; w < 3; w++)
        for (int bc = 0; bc < 2; bc++)
            for (int k = 0; k < 3; k++) {
                int64_t n = ns[k], yr = bc ? 1 : n;
                double *x = rnd_vec(n * D, 3.0, 0.0), *y = rnd_vec(yr * D, 2.0, 0.0);
                gk_tensor *tx = act(n, D, x, "x");
                gk_tensor *ty = filled(wtypes[w], yr, D, y, "scale.weight");
                gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "prod");
                gk_node nd = {.op = GK_OP_MUL, .src = {tx, ty}, .dst = dst};
                run_ok(&nd, "mul");
                double *want = malloc((size_t)(n * D) * sizeof *want);
                for (int64_t t = 0; t < n; t++)
                    for (int64_t j = 0; j < D; j++)
                        want[t * D + j] = x[t * D + j] * y[(bc ? 0 : t) * D + j];
                char what[64];
                snprintf(what, sizeof what, "mul %s broadcast=%d n=%lld", dt_str(wtypes[w]), bc,
                         (long long)n);
                expect_close(dst, want, NULL, 1e-7, 0.0, what);
                free(x);
                free(y);
                free(want);
            }
}

/* -------------------------------------------------- scale and softcap */

Test(cpu_ref, scale_is_x_times_f0_plus_f1)
{
    const int64_t D = 37;
    const float sc[3][2] = {{2.5f, 0.0f}, {-0.125f, 3.0f}, {1.0f, -1.5f}};
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 3; k++) {
            int64_t n = ns[k];
            double *x = rnd_vec(n * D, 4.0, 0.0);
            gk_tensor *tx = act(n, D, x, "x");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "scaled");
            gk_node nd = {.op = GK_OP_SCALE, .src = {tx}, .dst = dst, .f = {sc[c][0], sc[c][1]}};
            run_ok(&nd, "scale");
            double *want = malloc((size_t)(n * D) * sizeof *want);
            for (int64_t e = 0; e < n * D; e++)
                want[e] = x[e] * (double)sc[c][0] + (double)sc[c][1];
            expect_close(dst, want, NULL, 1e-6, 1e-6, "scale");
            free(x);
            free(want);
        }
}

Test(cpu_ref, softcap_is_cap_times_tanh_of_x_over_cap)
{
    const int64_t D = 37;
    const float caps[3] = {30.0f, 50.0f, 2.5f};  /* Gemma 2's final and attention caps, a tight one */
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 3; k++) {
            int64_t n = ns[k];
            double *x = rnd_vec(n * D, 100.0, 0.0);
            x[0] = 0.0;
            if (n > 1)
                x[1] = 1e4;  /* saturates at the cap */
            gk_tensor *tx = act(n, D, x, "logits");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "capped");
            gk_node nd = {.op = GK_OP_SOFTCAP, .src = {tx}, .dst = dst, .f = {caps[c]}};
            run_ok(&nd, "softcap");
            double *want = malloc((size_t)(n * D) * sizeof *want);
            for (int64_t e = 0; e < n * D; e++)
                want[e] = caps[c] * tanh(x[e] / caps[c]);
            expect_close(dst, want, NULL, 1e-6, 1e-6, "softcap");
            free(x);
            free(want);
        }
}

/* ------------------------------------------------------------------ gelu */

static double gelu_erf_oracle(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static double gelu_tanh_oracle(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

Test(cpu_ref, gelu_is_the_exact_erf_gelu)
{
    const int64_t D = 37;
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        double *x = rnd_vec(n * D, 6.0, 0.0);
        x[0] = 0.0;
        if (n > 1) {
            x[1] = -20.0;
            x[2] = 20.0;
        }
        gk_tensor *tx = act(n, D, x, "ffn_up");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "ffn_act");
        gk_node nd = {.op = GK_OP_GELU, .src = {tx}, .dst = dst};
        run_ok(&nd, "gelu");
        double *want = malloc((size_t)(n * D) * sizeof *want);
        for (int64_t e = 0; e < n * D; e++)
            want[e] = gelu_erf_oracle(x[e]);
        expect_close(dst, want, NULL, 1e-5, 1e-6, "gelu");
        free(x);
        free(want);
    }
}

Test(cpu_ref, geglu_is_gelu_of_gate_times_up_in_both_modes)
{
    const int64_t D = 37, n = 33;
    for (int mode = 0; mode < 2; mode++) {
        double *g = rnd_vec(n * D, 4.0, 0.0), *u = rnd_vec(n * D, 2.0, 0.0);
        gk_tensor *tg = act(n, D, g, "ffn_gate"), *tu = act(n, D, u, "ffn_up");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "ffn_act");
        gk_node nd = {.op = GK_OP_GEGLU, .src = {tg, tu}, .dst = dst, .i = {mode}};
        run_ok(&nd, "geglu");
        double *want = malloc((size_t)(n * D) * sizeof *want);
        double worst_other = 0.0;  /* how far the other mode's formula is */
        for (int64_t e = 0; e < n * D; e++) {
            double tn = gelu_tanh_oracle(g[e]) * u[e], ex = gelu_erf_oracle(g[e]) * u[e];
            want[e] = mode ? ex : tn;
            worst_other = fmax(worst_other, fabs(mode ? tn - ex : ex - tn));
        }
        expect_close(dst, want, NULL, 1e-5, 1e-6, mode ? "geglu erf" : "geglu tanh");
        /* the two modes differ by far more than the tolerance, so the mode is seen */
        cr_assert(worst_other > 1e-4, "the inputs do not tell the modes apart (%g)", worst_other);
        free(g);
        free(u);
        free(want);
    }
}

/* --------------------------------------------------------------- softmax */

Test(cpu_ref, softmax_is_row_wise_and_survives_large_values)
{
    const int64_t dims[3] = {1, 8, 37};
    for (int di = 0; di < 3; di++)
        for (int k = 0; k < 3; k++) {
            int64_t n = ns[k], D = dims[di];
            double *x = rnd_vec(n * D, 20.0, 0.0);
            for (int64_t j = 0; j < D; j++)
                x[j] += 200.0;  /* exp(200) overflows float: the max must be subtracted */
            gk_tensor *tx = act(n, D, x, "router_logits");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "router_probs");
            gk_node nd = {.op = GK_OP_SOFTMAX, .src = {tx}, .dst = dst};
            run_ok(&nd, "softmax");
            double *want = malloc((size_t)(n * D) * sizeof *want);
            for (int64_t t = 0; t < n; t++) {
                double max = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < D; j++)
                    max = fmax(max, x[t * D + j]);
                for (int64_t j = 0; j < D; j++)
                    sum += exp(x[t * D + j] - max);
                for (int64_t j = 0; j < D; j++)
                    want[t * D + j] = exp(x[t * D + j] - max) / sum;
            }
            char what[64];
            snprintf(what, sizeof what, "softmax D=%lld n=%lld", (long long)D, (long long)n);
            expect_close(dst, want, NULL, 1e-5, 1e-7, what);
            free(x);
            free(want);
        }
}

/* ------------------------------------------------------------------ topk */

/* The columns of row r [E] by value descending, equal values by column
 * ascending: an insertion sort on (value desc, column asc). */
static void topk_oracle(const double *r, int64_t E, int32_t *order)
{
    for (int64_t e = 0; e < E; e++) {
        int64_t i = e;
        while (i > 0 && r[order[i - 1]] < r[e])
            i--;
        memmove(order + i + 1, order + i, (size_t)(e - i) * sizeof *order);
        order[i] = (int32_t)e;
    }
}

Test(cpu_ref, topk_takes_the_largest_first_and_the_lower_column_on_ties)
{
    const int64_t E = 11, n = 9;
    const int32_t ks[3] = {1, 2, 11};
    double *x = rnd_vec(n * E, 1.0, 0.0);
    for (int64_t e = 0; e < n * E; e++)  /* values in {-3 .. 3}: many ties */
        x[e] = round(x[e] * 3.0);
    for (int64_t j = 0; j < E; j++)  /* row 0: all equal */
        x[j] = 0.5;
    x[E + 10] = x[E + 3] = 7.0;  /* row 1: a tie at the top */
    for (int ki = 0; ki < 3; ki++) {
        int32_t k = ks[ki];
        gk_tensor *tx = act(n, E, x, "router_logits");
        gk_tensor *dst = tensor(GK_DTYPE_I32, n, k, "experts");
        gk_node nd = {.op = GK_OP_TOPK, .src = {tx}, .dst = dst, .i = {k}};
        run_ok(&nd, "topk");
        int32_t *got = download_ints(dst), order[11];
        for (int64_t t = 0; t < n; t++) {
            topk_oracle(x + t * E, E, order);
            for (int32_t j = 0; j < k; j++)
                cr_assert_eq(got[t * k + j], order[j], "topk k=%d: row %lld slot %d is %d, want %d", k,
                             (long long)t, j, got[t * k + j], order[j]);
        }
        if (k >= 2) {
            cr_assert_eq(got[0], 0);
            cr_assert_eq(got[1], 1);
            cr_assert_eq(got[k], 3, "row 1's tie: the lower column first");
            cr_assert_eq(got[k + 1], 10);
        }
        free(got);
    }
    free(x);
}

/* ---------------------------------------------------------------- gather */

Test(cpu_ref, gather_picks_columns_per_row_and_zero_for_an_id_out_of_range)
{
    const int64_t E = 8, n = 5, k = 3;
    double *x = rnd_vec(n * E, 2.0, 0.0);
    int32_t id[5 * 3];
    for (int64_t e = 0; e < n * k; e++)
        id[e] = (int32_t)((e * 5 + 1) % E);
    id[4] = -1;
    id[7] = (int32_t)E;
    id[13] = 1 << 30;
    gk_tensor *tx = act(n, E, x, "router_probs");
    gk_tensor *ids = ints2(n, k, id, "experts");
    gk_tensor *dst = tensor(GK_DTYPE_F32, n, k, "expert_weights");
    gk_node nd = {.op = GK_OP_GATHER, .src = {tx, ids}, .dst = dst};
    run_ok(&nd, "gather");
    double want[5 * 3];
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++) {
            int32_t c = id[t * k + j];
            want[t * k + j] = c >= 0 && c < E ? x[t * E + c] : 0.0;
        }
    expect_close(dst, want, NULL, 0.0, 0.0, "gather");
    free(x);
}

/* ------------------------------------------------------------- linear_id */

Test(cpu_ref, linear_id_multiplies_each_slot_by_its_expert)
{
    const int64_t E = 5, in = 37, out = 6, k = 2;
    for (int w = 0; w < 3; w++)
        for (int own = 0; own < 2; own++)  /* x [n][in] shared, or [n][k*in] per slot */
            for (int ki = 0; ki < 3; ki++) {
                int64_t n = ns[ki], xc = own ? k * in : in;
                double *x = rnd_vec(n * xc, 1.0, 0.0), *wv = rnd_vec(E * out * in, 0.5, 0.0);
                /* expert 4 is never selected: poison it where the dtype has a NaN
                 * encoding here, so that reading it shows */
                if (wtypes[w] != GK_DTYPE_F16)
                    for (int64_t e = 4 * out * in; e < E * out * in; e++)
                        wv[e] = NAN;
                int32_t *id = malloc((size_t)(n * k) * sizeof *id);
                for (int64_t e = 0; e < n * k; e++)
                    id[e] = (int32_t)((e * 3 + e / 2) % 4);
                id[0] = 2;
                id[1] = 2;  /* both slots of a token on one expert */
                gk_tensor *tx = act(n, xc, x, "x");
                gk_tensor *tw = filled(wtypes[w], E * out, in, wv, "blk.0.experts.w1");
                gk_tensor *ids = ints2(n, k, id, "experts");
                gk_tensor *dst = tensor(GK_DTYPE_F32, n, k * out, "ffn_gate");
                gk_node nd = {.op = GK_OP_LINEAR_ID, .src = {tx, tw, ids}, .dst = dst,
                              .i = {(int32_t)E}};
                run_ok(&nd, "linear_id");

                double *want = malloc((size_t)(n * k * out) * sizeof *want);
                double *mag = malloc((size_t)(n * k * out) * sizeof *mag);
                for (int64_t t = 0; t < n; t++)
                    for (int64_t j = 0; j < k; j++)
                        for (int64_t o = 0; o < out; o++) {
                            const double *xj = x + t * xc + (own ? j * in : 0);
                            const double *row = wv + (id[t * k + j] * out + o) * in;
                            double s = 0.0, m = 0.0;
                            for (int64_t i = 0; i < in; i++) {
                                s += xj[i] * row[i];
                                m += fabs(xj[i] * row[i]);
                            }
                            want[(t * k + j) * out + o] = s;
                            mag[(t * k + j) * out + o] = m;
                        }
                char what[96];
                snprintf(what, sizeof what, "linear_id %s x=[%lld][%lld]", dt_str(wtypes[w]),
                         (long long)n, (long long)xc);
                expect_close(dst, want, mag, 1e-5, 0.0, what);
                free(x);
                free(wv);
                free(id);
                free(want);
                free(mag);
            }
}

Test(cpu_ref, linear_id_with_an_expert_out_of_range_writes_zeros_and_reads_nothing_outside)
{
    const int64_t E = 3, in = 8, out = 4, k = 2, n = 2;
    double *x = rnd_vec(n * in, 1.0, 0.0), *wv = rnd_vec(E * out * in, 1.0, 0.0);
    const int32_t id[4] = {1, 3, -1, 0};
    gk_tensor *tx = act(n, in, x, "x");
    gk_tensor *tw = filled(GK_DTYPE_F32, E * out, in, wv, "experts.w1");
    gk_tensor *dst = tensor(GK_DTYPE_F32, n, k * out, "out");
    gk_node nd = {.op = GK_OP_LINEAR_ID, .src = {tx, tw, ints2(n, k, id, "experts")}, .dst = dst,
                  .i = {(int32_t)E}};
    run_ok(&nd, "linear_id out of range");
    double want[2 * 2 * 4];
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++)
            for (int64_t o = 0; o < out; o++) {
                int32_t e = id[t * k + j];
                double s = 0.0;
                for (int64_t i = 0; e >= 0 && e < E && i < in; i++)
                    s += x[t * in + i] * wv[(e * out + o) * in + i];
                want[(t * k + j) * out + o] = s;
            }
    expect_close(dst, want, NULL, 1e-5, 1e-6, "linear_id out of range");
    free(x);
    free(wv);
}

/* --------------------------------------------------------------- moe_sum */

Test(cpu_ref, moe_sum_weights_and_adds_the_slot_blocks)
{
    const int64_t D = 37;
    const int64_t kk[2] = {1, 3};
    for (int ki = 0; ki < 2; ki++)
        for (int t3 = 0; t3 < 3; t3++) {
            int64_t n = ns[t3], k = kk[ki];
            double *x = rnd_vec(n * k * D, 2.0, 0.0), *w = rnd_vec(n * k, 0.5, 0.5);
            gk_tensor *tx = act(n, k * D, x, "experts_out");
            gk_tensor *tw = act(n, k, w, "expert_weights");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "ffn_out");
            gk_node nd = {.op = GK_OP_MOE_SUM, .src = {tx, tw}, .dst = dst};
            run_ok(&nd, "moe_sum");
            double *want = malloc((size_t)(n * D) * sizeof *want);
            double *mag = malloc((size_t)(n * D) * sizeof *mag);
            for (int64_t t = 0; t < n; t++)
                for (int64_t c = 0; c < D; c++) {
                    want[t * D + c] = mag[t * D + c] = 0.0;
                    for (int64_t j = 0; j < k; j++) {
                        double p = w[t * k + j] * x[t * k * D + j * D + c];
                        want[t * D + c] += p;
                        mag[t * D + c] += fabs(p);
                    }
                }
            expect_close(dst, want, mag, 1e-6, 0.0, "moe_sum");
            free(x);
            free(w);
            free(want);
            free(mag);
        }
}

/* ------------------------------------------------------ rms_norm offset */

Test(cpu_ref, rms_norm_with_a_weight_offset_multiplies_by_offset_plus_w)
{
    const int64_t D = 37, hd = 8, H = 4;
    for (int w = 0; w < 3; w++)
        for (int grp = 0; grp < 2; grp++) {
            int64_t n = 7, d = grp ? H * hd : D, g = grp ? hd : d;
            double *x = rnd_vec(n * d, 2.0, 0.5), *wv = rnd_vec(g, 0.3, 0.0);  /* Gemma: w near 0 */
            gk_tensor *tx = act(n, d, x, "x");
            gk_tensor *tw = filled(wtypes[w], 1, g, wv, "input_layernorm.weight");
            gk_tensor *dst = tensor(GK_DTYPE_F32, n, d, "attn_norm");
            gk_node nd = {.op = GK_OP_RMS_NORM, .src = {tx, tw}, .dst = dst,
                          .i = {grp ? (int32_t)hd : 0}, .f = {1e-6f, 1.0f}};
            run_ok(&nd, "rms_norm offset");
            double *w1 = malloc((size_t)g * sizeof *w1), *want = malloc((size_t)(n * d) * sizeof *want);
            for (int64_t j = 0; j < g; j++)
                w1[j] = 1.0 + wv[j];
            rms_oracle(x, w1, n, d, g, 1e-6, want);
            char what[64];
            snprintf(what, sizeof what, "rms_norm offset %s group=%lld", dt_str(wtypes[w]), (long long)g);
            expect_close(dst, want, NULL, 1e-5, 1e-6, what);
            free(x);
            free(wv);
            free(w1);
            free(want);
        }
}

/* ------------------------------------------------------ rope rotary_dim */

Test(cpu_ref, rope_with_a_rotary_dim_turns_only_the_first_columns_of_each_head)
{
    const int64_t hd = 16, H = 3, n = 7, D = H * hd;
    const int32_t rots[3] = {4, 8, 16};
    const int32_t p[7] = {0, 1, 5, 17, 100, 2047, 65535};
    for (int ri = 0; ri < 3; ri++) {
        int64_t r = rots[ri], half = r / 2;
        double *x = rnd_vec(n * D, 1.0, 0.0);
        double *inv = malloc((size_t)half * sizeof *inv);
        for (int64_t i = 0; i < half; i++)  /* 1 / theta^(2i/r) */
            inv[i] = 1.0 / pow(10000.0, 2.0 * (double)i / (double)r);
        gk_tensor *tx = act(n, D, x, "k"), *tinv = act(1, half, inv, "inv_freq");
        gk_tensor *dst = tensor(GK_DTYPE_F32, n, D, "k_rope");
        gk_node nd = {.op = GK_OP_ROPE, .src = {tx, ints(n, p, "pos"), tinv}, .dst = dst,
                      .i = {(int32_t)hd, (int32_t)r}, .f = {1.0f}};
        run_ok(&nd, "rope rotary_dim");

        double *want = malloc((size_t)(n * D) * sizeof *want);
        for (int64_t e = 0; e < n * D; e++)
            want[e] = x[e];
        for (int64_t t = 0; t < n; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < half; i++) {
                    float angle = (float)p[t] * (float)inv[i];
                    double c = cos((double)angle), s = sin((double)angle);
                    double x1 = x[t * D + h * hd + i], x2 = x[t * D + h * hd + i + half];
                    want[t * D + h * hd + i] = x1 * c - x2 * s;
                    want[t * D + h * hd + i + half] = x2 * c + x1 * s;
                }
        char what[64];
        snprintf(what, sizeof what, "rope hd=%lld rotary_dim=%lld", (long long)hd, (long long)r);
        expect_close(dst, want, NULL, 1e-5, 1e-6, what);
        /* the columns past r are the input, bit for bit */
        float *got = download(dst);
        for (int64_t t = 0; t < n; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t e = r; e < hd; e++)
                    cr_assert_eq(got[t * D + h * hd + e], (float)x[t * D + h * hd + e],
                                 "%s: pass-through column %lld of head %lld, token %lld", what,
                                 (long long)e, (long long)h, (long long)t);
        free(got);
        free(x);
        free(inv);
        free(want);
    }
}

/* ----------------------------------------- attention window and softcap */

/* attn_oracle with a window W (0 = off: query t sees keys t-W < j <= t) and a
 * softcap c (0 = off) on the scaled scores. */
static void attn_oracle_ex(const double *q, const double *k, const double *v, int64_t n, int64_t H,
                           int64_t Hkv, int64_t hd, int64_t window, double cap, double *out)
{
    int64_t qw = H * hd, kvw = Hkv * hd;
    double scale = (double)(float)(1.0 / sqrt((double)hd));
    double *p = malloc((size_t)n * sizeof *p);
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++) {
            int64_t kh = h / (H / Hkv), j0 = window > 0 ? t - window + 1 : 0;
            if (j0 < 0)
                j0 = 0;
            double max = -INFINITY, sum = 0.0;
            for (int64_t j = j0; j <= t; j++) {
                double s = 0.0;
                for (int64_t e = 0; e < hd; e++)
                    s += q[t * qw + h * hd + e] * k[j * kvw + kh * hd + e];
                s *= scale;
                p[j] = cap > 0.0 ? cap * tanh(s / cap) : s;
                max = fmax(max, p[j]);
            }
            for (int64_t j = j0; j <= t; j++)
                sum += p[j] = exp(p[j] - max);
            for (int64_t e = 0; e < hd; e++) {
                double o = 0.0;
                for (int64_t j = j0; j <= t; j++)
                    o += p[j] / sum * v[j * kvw + kh * hd + e];
                out[t * qw + h * hd + e] = o;
            }
        }
    free(p);
}

/* One attention of n tokens at positions 0..n-1 with window and softcap into
 * a fresh F32 cache; returns the output downloaded. */
static float *attn_run(int64_t H, int64_t Hkv, int64_t hd, int64_t n, const double *q, const double *k,
                       const double *v, int32_t window, float cap)
{
    attn_case a = attn_new(H, Hkv, hd, 40);
    int32_t p[40];
    for (int64_t t = 0; t < n; t++)
        p[t] = (int32_t)t;
    gk_tensor *dst = tensor(GK_DTYPE_F32, n, H * hd, "attn");
    gk_node nd = attn_node(&a, slice(q, 0, n, H * hd, "q"), slice(k, 0, n, Hkv * hd, "k"),
                           slice(v, 0, n, Hkv * hd, "v"), ints(n, p, "pos"), dst);
    nd.i[3] = window;
    nd.f[1] = cap;
    run_ok(&nd, "attn window/softcap");
    return download(dst);
}

/* q, k, v [n][*] of random values already rounded to float. */
static void attn_inputs(int64_t n, int64_t H, int64_t Hkv, int64_t hd, double **q, double **k, double **v)
{
    *q = rnd_vec(n * H * hd, 2.0, 0.0);
    *k = rnd_vec(n * Hkv * hd, 2.0, 0.0);
    *v = rnd_vec(n * Hkv * hd, 1.0, 0.0);
    for (int64_t e = 0; e < n * H * hd; e++)
        (*q)[e] = (float)(*q)[e];
    for (int64_t e = 0; e < n * Hkv * hd; e++) {
        (*k)[e] = (float)(*k)[e];
        (*v)[e] = (float)(*v)[e];
    }
}

static void expect_close_f(const float *got, const double *want, int64_t ne, double rtol, double atol,
                           const char *what)
{
    for (int64_t e = 0; e < ne; e++)
        cr_assert(fabs(got[e] - want[e]) <= atol + rtol * fabs(want[e]) && !isnan(got[e]),
                  "%s: element %lld is %.9g, want %.9g", what, (long long)e, got[e], want[e]);
}

Test(cpu_ref, attn_with_a_window_sees_only_the_last_w_rows)
{
    const int64_t H = 4, Hkv = 2, hd = 8, n = 33, qw = H * hd, kvw = Hkv * hd;
    const int32_t windows[3] = {1, 5, 16};
    double *q, *k, *v;
    attn_inputs(n, H, Hkv, hd, &q, &k, &v);
    double *want = malloc((size_t)(n * qw) * sizeof *want);
    for (int wi = 0; wi < 3; wi++) {
        float *got = attn_run(H, Hkv, hd, n, q, k, v, windows[wi], 0.0f);
        attn_oracle_ex(q, k, v, n, H, Hkv, hd, windows[wi], 0.0, want);
        char what[64];
        snprintf(what, sizeof what, "attn window=%d", windows[wi]);
        expect_close_f(got, want, n * qw, 1e-5, 1e-5, what);
        if (windows[wi] == 1)  /* each token sees itself only: its own v */
            for (int64_t t = 0; t < n; t++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t e = 0; e < hd; e++)
                        cr_assert_eq(got[t * qw + h * hd + e], (float)v[t * kvw + h / (H / Hkv) * hd + e],
                                     "window 1: token %lld head %lld", (long long)t, (long long)h);
        free(got);
    }
    /* the full causal result is farther from a windowed one than rounding */
    float *full = attn_run(H, Hkv, hd, n, q, k, v, 0, 0.0f);
    attn_oracle_ex(q, k, v, n, H, Hkv, hd, 5, 0.0, want);
    double worst = 0.0;
    for (int64_t e = 0; e < n * qw; e++)
        worst = fmax(worst, fabs(full[e] - want[e]));
    cr_assert(worst > 1e-3, "window 5 and no window agree (%g): the window is not seen", worst);
    free(full);
    free(want);
    free(q);
    free(k);
    free(v);
}

Test(cpu_ref, attn_with_window_0_or_a_window_past_every_row_is_the_causal_result_bit_for_bit)
{
    const int64_t H = 4, Hkv = 2, hd = 8, n = 33, qw = H * hd;
    double *q, *k, *v;
    attn_inputs(n, H, Hkv, hd, &q, &k, &v);
    float *off = attn_run(H, Hkv, hd, n, q, k, v, 0, 0.0f);
    float *wide = attn_run(H, Hkv, hd, n, q, k, v, 40, 0.0f);
    float *exact = attn_run(H, Hkv, hd, n, q, k, v, 33, 0.0f);  /* token 32 sees row 0 still */
    cr_assert(memcmp(off, wide, (size_t)(n * qw) * sizeof *off) == 0, "window 40 differs from window 0");
    cr_assert(memcmp(off, exact, (size_t)(n * qw) * sizeof *off) == 0, "window 33 differs from window 0");
    double *want = malloc((size_t)(n * qw) * sizeof *want);
    attn_oracle(q, k, v, n, H, Hkv, hd, want);
    expect_close_f(off, want, n * qw, 1e-5, 1e-5, "window 0 vs the causal oracle");
    free(off);
    free(wide);
    free(exact);
    free(want);
    free(q);
    free(k);
    free(v);
}

Test(cpu_ref, attn_window_over_a_filled_cache_counts_from_the_position)
{
    /* prefill 20 tokens, then one decode step at position 20 with window 6:
     * it sees rows 15..20 of the cache only */
    const int64_t H = 2, Hkv = 1, hd = 8, N = 21, qw = H * hd, kvw = Hkv * hd;
    const int32_t W = 6;
    double *q, *k, *v;
    attn_inputs(N, H, Hkv, hd, &q, &k, &v);
    attn_case a = attn_new(H, Hkv, hd, 32);
    int32_t p[21];
    for (int64_t t = 0; t < N; t++)
        p[t] = (int32_t)t;
    gk_tensor *pre = tensor(GK_DTYPE_F32, 20, qw, "attn");
    gk_node nd = attn_node(&a, slice(q, 0, 20, qw, "q"), slice(k, 0, 20, kvw, "k"), slice(v, 0, 20, kvw, "v"),
                           ints(20, p, "pos"), pre);
    nd.i[3] = W;
    run_ok(&nd, "prefill");
    gk_tensor *dec = tensor(GK_DTYPE_F32, 1, qw, "attn");
    gk_node step = attn_node(&a, slice(q, 20, 1, qw, "q"), slice(k, 20, 1, kvw, "k"),
                             slice(v, 20, 1, kvw, "v"), ints(1, p + 20, "pos"), dec);
    step.i[3] = W;
    run_ok(&step, "decode");
    double *want = malloc((size_t)(N * qw) * sizeof *want);
    attn_oracle_ex(q, k, v, N, H, Hkv, hd, W, 0.0, want);
    expect_close(pre, want, NULL, 1e-5, 1e-5, "prefill with window");
    expect_close(dec, want + 20 * qw, NULL, 1e-5, 1e-5, "decode with window");
    free(want);
    free(q);
    free(k);
    free(v);
}

Test(cpu_ref, attn_softcap_caps_the_scaled_scores_before_the_softmax)
{
    const int64_t H = 4, Hkv = 2, hd = 8, n = 17, qw = H * hd;
    const float caps[2] = {0.5f, 50.0f};
    double *q, *k, *v;
    attn_inputs(n, H, Hkv, hd, &q, &k, &v);
    for (int64_t e = 0; e < n * qw; e++)
        q[e] = (float)(q[e] * 2.0);  /* scores of several units: a cap of 0.5 bites */
    double *want = malloc((size_t)(n * qw) * sizeof *want), *plain = malloc((size_t)(n * qw) * sizeof *plain);
    attn_oracle_ex(q, k, v, n, H, Hkv, hd, 0, 0.0, plain);
    for (int ci = 0; ci < 2; ci++)
        for (int wi = 0; wi < 2; wi++) {
            int32_t W = wi ? 4 : 0;
            float *got = attn_run(H, Hkv, hd, n, q, k, v, W, caps[ci]);
            attn_oracle_ex(q, k, v, n, H, Hkv, hd, W, caps[ci], want);
            char what[64];
            snprintf(what, sizeof what, "attn softcap=%g window=%d", caps[ci], W);
            expect_close_f(got, want, n * qw, 1e-5, 1e-5, what);
            if (ci == 0 && W == 0) {
                double worst = 0.0;
                for (int64_t e = 0; e < n * qw; e++)
                    worst = fmax(worst, fabs(got[e] - plain[e]));
                cr_assert(worst > 1e-3, "softcap 0.5 is not seen (%g)", worst);
            }
            free(got);
        }
    free(want);
    free(plain);
    free(q);
    free(k);
    free(v);
}

/* ---------------------------------------------------- 1.4 node checking */

Test(cpu_ref, supports_node_checks_the_shapes_and_parameters_of_the_1_4_ops)
{
    gk_tensor *x = tensor(GK_DTYPE_F32, 3, 8, "x");
    gk_tensor *x2 = tensor(GK_DTYPE_F32, 3, 8, "x2");
    gk_tensor *row = tensor(GK_DTYPE_BF16, 1, 8, "row");
    gk_tensor *row7 = tensor(GK_DTYPE_F32, 1, 7, "row7");
    gk_tensor *two = tensor(GK_DTYPE_F32, 2, 8, "two_rows");
    gk_tensor *out8 = tensor(GK_DTYPE_F32, 3, 8, "out8");
    gk_tensor *out4 = tensor(GK_DTYPE_F32, 3, 4, "out4");
    gk_tensor *out2 = tensor(GK_DTYPE_F32, 3, 2, "out2");
    gk_tensor *out6 = tensor(GK_DTYPE_F32, 3, 6, "out6");
    gk_tensor *top2 = tensor(GK_DTYPE_I32, 3, 2, "top2");
    gk_tensor *ids2 = tensor(GK_DTYPE_I32, 3, 2, "ids2");
    gk_tensor *ids2r = tensor(GK_DTYPE_I32, 2, 2, "ids2_rows");
    gk_tensor *w12 = tensor(GK_DTYPE_F16, 12, 8, "experts_w");   /* E = 4, out = 3 */
    gk_tensor *w12_4 = tensor(GK_DTYPE_F16, 12, 4, "experts_w4"); /* in = 4: x cols 8 = k*in */
    gk_tensor *w12_3 = tensor(GK_DTYPE_F16, 12, 3, "experts_w3"); /* in = 3: 8 is neither */
    gk_tensor *wts = tensor(GK_DTYPE_F32, 3, 2, "weights");
    gk_tensor *ids = tensor(GK_DTYPE_I32, 1, 3, "pos");
    gk_tensor *inv2 = tensor(GK_DTYPE_F32, 1, 2, "inv_freq2");
    gk_tensor *c = tensor(GK_DTYPE_F32, 16, 8, "cache");

    gk_node good[] = {
        {.op = GK_OP_MUL, .src = {x, x2}, .dst = out8},
        {.op = GK_OP_MUL, .src = {x, row}, .dst = out8},
        {.op = GK_OP_SCALE, .src = {x}, .dst = out8, .f = {2.0f, 1.0f}},
        {.op = GK_OP_SOFTCAP, .src = {x}, .dst = out8, .f = {30.0f}},
        {.op = GK_OP_GELU, .src = {x}, .dst = out8},
        {.op = GK_OP_GEGLU, .src = {x, x2}, .dst = out8, .i = {1}},
        {.op = GK_OP_SOFTMAX, .src = {x}, .dst = out8},
        {.op = GK_OP_TOPK, .src = {x}, .dst = top2, .i = {2}},
        {.op = GK_OP_GATHER, .src = {x, ids2}, .dst = out2},
        {.op = GK_OP_LINEAR_ID, .src = {x, w12, ids2}, .dst = out6, .i = {4}},
        {.op = GK_OP_LINEAR_ID, .src = {x, w12_4, ids2}, .dst = out6, .i = {4}},
        {.op = GK_OP_MOE_SUM, .src = {x, wts}, .dst = out4},
        {.op = GK_OP_ROPE, .src = {x, ids, inv2}, .dst = out8, .i = {8, 4}},
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8, .i = {1, 1, 8, 4}, .f = {0.3f, 50.0f}},
        {.op = GK_OP_RMS_NORM, .src = {x, row}, .dst = out8, .f = {1e-6f, 1.0f}},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(ops->supports_node(be, &good[i]), "good node %zu (op %d) refused", i, (int)good[i].op);

    gk_node bad[] = {
        {.op = GK_OP_MUL, .src = {x, row7}, .dst = out8},                    /* cols 7 vs 8 */
        {.op = GK_OP_MUL, .src = {x, two}, .dst = out8},                     /* 2 rows vs 3 */
        {.op = GK_OP_MUL, .src = {x, x2}, .dst = out4},                      /* dst shape */
        {.op = GK_OP_SOFTCAP, .src = {x}, .dst = out8, .f = {0.0f}},         /* cap 0 */
        {.op = GK_OP_GEGLU, .src = {x, x2}, .dst = out8, .i = {2}},          /* no mode 2 */
        {.op = GK_OP_GEGLU, .src = {x, two}, .dst = out8},                   /* up shape */
        {.op = GK_OP_TOPK, .src = {x}, .dst = top2, .i = {9}},               /* k > E */
        {.op = GK_OP_TOPK, .src = {x}, .dst = out2, .i = {2}},               /* F32 dst */
        {.op = GK_OP_TOPK, .src = {x}, .dst = top2, .i = {3}},               /* dst cols vs k */
        {.op = GK_OP_GATHER, .src = {x, ids2r}, .dst = out2},                /* ids rows */
        {.op = GK_OP_GATHER, .src = {x, wts}, .dst = out2},                  /* F32 ids */
        {.op = GK_OP_LINEAR_ID, .src = {x, w12, ids2}, .dst = out6, .i = {5}},   /* 12 % 5 */
        {.op = GK_OP_LINEAR_ID, .src = {x, w12, ids2}, .dst = out6, .i = {0}},   /* no experts */
        {.op = GK_OP_LINEAR_ID, .src = {x, w12_3, ids2}, .dst = out6, .i = {4}}, /* x cols */
        {.op = GK_OP_LINEAR_ID, .src = {x, w12, ids2}, .dst = out8, .i = {4}},   /* dst cols */
        {.op = GK_OP_LINEAR_ID, .src = {x, w12, ids2r}, .dst = out6, .i = {4}},  /* ids rows */
        {.op = GK_OP_MOE_SUM, .src = {x, tensor(GK_DTYPE_F32, 3, 3, "w3")}, .dst = out4}, /* 8 % 3 */
        {.op = GK_OP_MOE_SUM, .src = {x, wts}, .dst = out8},                 /* dst cols */
        {.op = GK_OP_ROPE, .src = {x, ids, inv2}, .dst = out8, .i = {8, 3}},  /* odd rotary dim */
        {.op = GK_OP_ROPE, .src = {x, ids, inv2}, .dst = out8, .i = {8, 10}}, /* rotary > head */
        {.op = GK_OP_ROPE, .src = {x, ids, inv2}, .dst = out8, .i = {8, 0}},  /* inv_freq [1][4] wanted */
        {.op = GK_OP_ROPE, .src = {x, ids, inv2}, .dst = out8, .i = {8, -4}}, /* negative */
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8, .i = {1, 1, 8, -1}}, /* window */
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8, .i = {1, 1, 8}, .f = {0.3f, -1.0f}},
        {.op = GK_OP_ATTN, .src = {x, x, x, ids, c, c}, .dst = out8, .i = {1, 1, 8}, .f = {0.3f, NAN}},
        {.op = GK_OP_RMS_NORM, .src = {x, row}, .dst = out8, .f = {1e-6f, INFINITY}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert(!ops->supports_node(be, &bad[i]), "bad node %zu (op %d) accepted", i, (int)bad[i].op);
        char why[256] = "";
        cr_assert(ops->explain_node, "cpu_ref explains its refusals");
        ops->explain_node(be, &bad[i], why, sizeof why);
        cr_assert(strncmp(why, "cpu_ref: ", 9) == 0 && strlen(why) > 12, "bad node %zu: why is '%s'", i, why);
    }
    char why[256] = "";
    ops->explain_node(be, &bad[0], why, sizeof why);
    cr_assert(strstr(why, "row7"), "names the operand: %s", why);
    ops->explain_node(be, &bad[19], why, sizeof why);
    cr_assert(strstr(why, "rotary dim i[1]"), "names the parameter: %s", why);
}
