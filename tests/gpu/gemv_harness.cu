/* gemv_harness.cu - dev tool for the fused decode GEMV (backends/cuda/gemv.cu):
 * checks cu_gemv against a float64 CPU reference, then times it against the
 * GEMV of linear.cu. Not built by meson (the Criterion suite in
 * test_cuda_ops.c is the spec); run it by hand after touching gemv.cu.
 *
 * Build and run from the repository root, on a machine with an sm_90 GPU:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fopenmp \
 *        -Iinclude -Ibackends/cuda tests/gpu/gemv_harness.cu backends/cuda/gemv.cu \
 *        backends/cuda/linear.cu -lcublas -lgomp -o /tmp/gemv_harness && /tmp/gemv_harness
 * Arguments: "check" or "time" runs only that half (default both); after
 * "time", a dtype (f16, bf16, f32) times only that one. GEMV_NO_PDL=1 in the
 * environment launches without programmatic dependent launch; "time chains"
 * times only the GEMVs of whole decoder layers at four models' shapes.
 * Tuning variants build with -D of gemv.cu's macros (GEMV_BLOCKS_PER_SM,
 * GEMV_LOADS_FEW).
 *
 * Checks, per weight dtype, shape, token count n in {1, 2, 5, 8} and fusion
 * (prologue none / RMS / layer norm; epilogue none / residual / SwiGLU /
 * GELU; 1..3 matrices), with outputs poisoned with NaN and fresh non-zero
 * inputs:
 *   y          |gpu - ref| <= 1e-5 * (sum|h w| + |b|), ref in float64 from the
 *              same decoded weights
 *   norm_out   1e-6 abs + 1e-5 rel against the float64 norm
 *   res_out    exactly res + y (the same float add as ADD)
 *   act_out    1e-6 abs + 2e-6 rel against the activation of the gpu's y in
 *              float64 (expf / tanhf are 2 ulp)
 * and that a second run gives the same bits. Timing: ~20+ launches over
 * different weight copies (more than L2 holds) captured in one CUDA graph,
 * replayed; the median replay over the launches is us per launch, and GB/s
 * counts weight bytes only.
 */
#include "harness.h"

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

static cu_ctx g_ctx;
static gk_tensor g_dst_t = {GK_DTYPE_F32, 1, 1, NULL, "gemv_harness", -1};
static gk_node g_node = {GK_OP_LINEAR, {NULL}, &g_dst_t, {0}, {0}};

static void run_gemv(const cu_gemv_desc *d)
{
    gk_err err = {};
    if (cu_gemv(&g_ctx, d, &g_node, &err) != GK_OK) {
        fprintf(stderr, "cu_gemv: %s\n", err.msg);
        exit(1);
    }
}

/* ------------------------------------------------------------- host data */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) /* [0, 1) */
{
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
/* non-zero, either sign, magnitude in [lo, hi) */
static double srand_nz(double lo, double hi) { return (urand() < 0.5 ? -1 : 1) * (lo + (hi - lo) * urand()); }

static const char *dt_name(gk_dtype t) { return t == GK_DTYPE_F32 ? "f32" : t == GK_DTYPE_F16 ? "f16" : "bf16"; }
static size_t dt_size(gk_dtype t) { return t == GK_DTYPE_F32 ? 4 : 2; }

/* v rounded to dtype t, stored at raw[i]; returns the decoded value */
static double put(void *raw, gk_dtype t, size_t i, double v)
{
    if (t == GK_DTYPE_F32) {
        ((float *)raw)[i] = (float)v;
        return ((float *)raw)[i];
    }
    if (t == GK_DTYPE_F16) {
        ((__half *)raw)[i] = __float2half((float)v);
        return __half2float(((__half *)raw)[i]);
    }
    ((__nv_bfloat16 *)raw)[i] = __float2bfloat16((float)v);
    return __bfloat162float(((__nv_bfloat16 *)raw)[i]);
}

/* A device array of ne values of dtype t, and its decoded copy. */
struct darr {
    void *dev = NULL;
    std::vector<double> val;
};
static darr make_arr(gk_dtype t, size_t ne, double lo, double hi, double offset = 0)
{
    darr a;
    std::vector<char> raw(ne * dt_size(t));
    a.val.resize(ne);
    for (size_t i = 0; i < ne; i++)
        a.val[i] = put(raw.data(), t, i, offset + srand_nz(lo, hi));
    CK(cudaMalloc(&a.dev, raw.size() + 16));
    CK(cudaMemcpy(a.dev, raw.data(), raw.size(), cudaMemcpyHostToDevice));
    return a;
}

static float *dev_f32(size_t ne)
{
    float *p;
    CK(cudaMalloc(&p, ne * 4 + 16));
    CK(cudaMemset(p, 0xff, ne * 4)); /* NaN */
    return p;
}

static std::vector<float> get_f32(const float *p, size_t ne)
{
    std::vector<float> h(ne);
    CK(cudaMemcpy(h.data(), p, ne * 4, cudaMemcpyDeviceToHost));
    return h;
}

/* ------------------------------------------------------------- checks */

struct tally {
    int cases = 0, failed = 0, skipped = 0;
};

/* One fusion pattern of the check matrix. */
struct config {
    const char *name;
    int count;
    cu_gemv_pro pro;
    cu_gemv_epi epi;
    bool bias, norm_b, norm_out;
};
static const config g_configs[] = {
    {"plain+bias", 1, CU_PRO_NONE, CU_EPI_NONE, true, false, false},
    {"rms+qkv", 3, CU_PRO_RMS, CU_EPI_NONE, true, false, true},
    {"layer+b+gelu", 1, CU_PRO_LAYER, CU_EPI_GELU, true, true, true},
    {"residual", 1, CU_PRO_NONE, CU_EPI_RESIDUAL, true, false, false},
    {"rms+swiglu", 2, CU_PRO_RMS, CU_EPI_SWIGLU, false, false, true},
    {"layer+residual", 1, CU_PRO_LAYER, CU_EPI_RESIDUAL, false, false, false},
};

static int g_bad_prints = 0;
static bool near(const char *what, double got, double ref, double tol, size_t i)
{
    if (fabs(got - ref) <= tol) /* false for NaN */
        return true;
    if (g_bad_prints++ < 12)
        fprintf(stderr, "    %s[%zu]: got %.9g want %.9g (tol %.3g)\n", what, i, got, ref, tol);
    return false;
}

/* The weights of one (dtype, shape): three [out][in] matrices and biases. */
struct mats {
    gk_dtype wt;
    int in, out;
    darr W[3], B[3];
};

static bool check_case(const mats &m, int n, const config &cf, gk_dtype nt, tally &ta)
{
    const int in = m.in;
    int outs[3] = {m.out, m.out, m.out};
    if (cf.count == 3)
        outs[1] = std::max(1, std::min(m.out, m.out / 2 + 3)), outs[2] = std::max(1, m.out / 4 + 1);
    cu_gemv_desc d = {};
    d.wtype = m.wt;
    d.n = n;
    d.in = in;
    d.pro = cf.pro;
    d.norm_type = nt;
    d.eps = 1e-5f;
    d.count = cf.count;
    d.epi = cf.epi;
    /* inputs: fresh, non-zero; layer norm inputs offset so the mean matters */
    darr x = make_arr(GK_DTYPE_F32, (size_t)n * in, 0.05, 1.0, cf.pro == CU_PRO_LAYER ? 0.7 : 0.0);
    darr nw = make_arr(nt, in, 0.5, 1.5), nb = make_arr(nt, in, 0.01, 0.3);
    darr res = make_arr(GK_DTYPE_F32, (size_t)n * m.out, 0.05, 2.0);
    d.x = (const float *)x.dev;
    if (cf.pro != CU_PRO_NONE)
        d.norm_w = nw.dev, d.norm_b = cf.norm_b ? nb.dev : NULL;
    float *norm_out = cf.norm_out ? dev_f32((size_t)n * in) : NULL;
    d.norm_out = norm_out;
    float *y[3] = {};
    for (int k = 0; k < cf.count; k++) {
        d.W[k] = m.W[k].dev;
        d.bias[k] = cf.bias && k != 2 ? m.B[k].dev : NULL;
        d.out[k] = outs[k];
        d.y[k] = y[k] = dev_f32((size_t)n * outs[k]);
    }
    float *res_out = cf.epi == CU_EPI_RESIDUAL ? dev_f32((size_t)n * m.out) : NULL;
    float *act_out = cf.epi == CU_EPI_SWIGLU || cf.epi == CU_EPI_GELU ? dev_f32((size_t)n * m.out) : NULL;
    d.res = cf.epi == CU_EPI_RESIDUAL ? (const float *)res.dev : NULL;
    d.res_out = res_out;
    d.act_out = act_out;
    bool ok = true;
    if (!cu_gemv_ok(&d)) {
        ta.skipped++;
        ok = false;
        goto out;
    }
    {
        /* reference h */
        std::vector<double> h((size_t)n * in);
        for (int t = 0; t < n; t++) {
            const double *xr = &x.val[(size_t)t * in];
            double mean = 0, sc = 1;
            if (cf.pro == CU_PRO_RMS) {
                double ss = 0;
                for (int i = 0; i < in; i++)
                    ss += xr[i] * xr[i];
                sc = 1 / sqrt(ss / in + (double)d.eps);
            } else if (cf.pro == CU_PRO_LAYER) {
                for (int i = 0; i < in; i++)
                    mean += xr[i];
                mean /= in;
                double v = 0;
                for (int i = 0; i < in; i++)
                    v += (xr[i] - mean) * (xr[i] - mean);
                sc = 1 / sqrt(v / in + (double)d.eps);
            }
            for (int i = 0; i < in; i++) {
                double hv = xr[i];
                if (cf.pro == CU_PRO_RMS)
                    hv = nw.val[i] * (xr[i] * sc);
                else if (cf.pro == CU_PRO_LAYER)
                    hv = (xr[i] - mean) * sc * nw.val[i] + (cf.norm_b ? nb.val[i] : 0);
                h[(size_t)t * in + i] = hv;
            }
        }
        std::vector<float> first[5];
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) { /* poison again: the second run must write everything again */
                for (int k = 0; k < cf.count; k++)
                    CK(cudaMemset(y[k], 0xff, (size_t)n * outs[k] * 4));
                if (norm_out)
                    CK(cudaMemset(norm_out, 0xff, (size_t)n * in * 4));
                if (res_out)
                    CK(cudaMemset(res_out, 0xff, (size_t)n * m.out * 4));
                if (act_out)
                    CK(cudaMemset(act_out, 0xff, (size_t)n * m.out * 4));
            }
            run_gemv(&d);
            CK(cudaStreamSynchronize(g_ctx.stream));
            std::vector<float> got[5];
            for (int k = 0; k < cf.count; k++)
                got[k] = get_f32(y[k], (size_t)n * outs[k]);
            if (norm_out)
                got[3] = get_f32(norm_out, (size_t)n * in);
            if (res_out)
                got[4] = get_f32(res_out, (size_t)n * m.out);
            if (act_out)
                got[4] = get_f32(act_out, (size_t)n * m.out);
            if (pass == 1) {
                for (int q = 0; q < 5; q++)
                    if (got[q].size() && memcmp(got[q].data(), first[q].data(), got[q].size() * 4) != 0) {
                        fprintf(stderr, "    output %d differs between two runs\n", q);
                        ok = false;
                    }
                break;
            }
            for (int q = 0; q < 5; q++)
                first[q] = got[q];
            /* y */
            for (int k = 0; k < cf.count; k++) {
                const int ok_out = outs[k];
                std::vector<char> bad(ok_out, 0);
#pragma omp parallel for schedule(dynamic, 16)
                for (int o = 0; o < ok_out; o++) {
                    const double *w = &m.W[k].val[(size_t)o * in];
                    for (int t = 0; t < n; t++) {
                        const double *hr = &h[(size_t)t * in];
                        double s = 0, a = 0;
                        for (int i = 0; i < in; i++)
                            s += hr[i] * w[i], a += fabs(hr[i] * w[i]);
                        double b = d.bias[k] ? m.B[k].val[o] : 0;
                        double g = got[k][(size_t)t * ok_out + o];
                        if (!(fabs(g - (s + b)) <= 1e-5 * (a + fabs(b))))
                            bad[o] = 1;
                    }
                }
                for (int o = 0; o < ok_out; o++)
                    if (bad[o]) {
                        ok = false;
                        for (int t = 0; t < n; t++) {
                            const double *w = &m.W[k].val[(size_t)o * in];
                            double s = 0, a = 0;
                            for (int i = 0; i < in; i++)
                                s += h[(size_t)t * in + i] * w[i], a += fabs(h[(size_t)t * in + i] * w[i]);
                            double b = d.bias[k] ? m.B[k].val[o] : 0;
                            near("y", got[k][(size_t)t * ok_out + o], s + b, 1e-5 * (a + fabs(b)),
                                 (size_t)t * ok_out + o);
                        }
                        break;
                    }
            }
            if (norm_out)
                for (size_t i = 0; i < h.size(); i++)
                    ok &= near("norm_out", got[3][i], h[i], 1e-6 + 1e-5 * fabs(h[i]), i);
            if (res_out) {
                std::vector<float> rv = get_f32((const float *)res.dev, (size_t)n * m.out);
                for (size_t i = 0; i < rv.size(); i++)
                    ok &= near("res_out", got[4][i], (double)(rv[i] + got[0][i]), 0.0, i);
            }
            if (act_out)
                for (size_t i = 0; i < got[4].size(); i++) {
                    double a = got[0][i], r;
                    if (cf.epi == CU_EPI_SWIGLU)
                        r = a / (1 + exp(-a)) * got[1][i];
                    else
                        r = 0.5 * a * (1 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)));
                    ok &= near("act_out", got[4][i], r, 1e-6 + 2e-6 * fabs(r), i);
                }
        }
    }
    ta.cases++;
    if (!ok)
        ta.failed++;
out:
    cudaFree(x.dev), cudaFree(nw.dev), cudaFree(nb.dev), cudaFree(res.dev);
    for (int k = 0; k < 3; k++)
        cudaFree(y[k]);
    cudaFree(norm_out), cudaFree(res_out), cudaFree(act_out);
    return ok;
}

/* Descriptors cu_gemv_ok must refuse. */
static bool check_refusals(const mats &m)
{
    cu_gemv_desc d = {};
    d.wtype = GK_DTYPE_F16, d.n = 1, d.in = 64, d.x = (const float *)m.W[0].dev, d.count = 1;
    d.W[0] = m.W[0].dev, d.y[0] = (float *)m.W[1].dev, d.out[0] = 16;
    bool ok = cu_gemv_ok(&d);
    if (!ok)
        fprintf(stderr, "  refusals: the base descriptor is refused\n");
    cu_gemv_desc e;
#define REFUSE(what, change)                                              \
    e = d;                                                                \
    change;                                                               \
    if (cu_gemv_ok(&e)) {                                                 \
        fprintf(stderr, "  refusals: %s accepted\n", what);             \
        ok = false;                                                       \
    }
    REFUSE("n = 0", e.n = 0);
    REFUSE("n = 9", e.n = 9);
    REFUSE("count = 4", e.count = 4);
    REFUSE("in % 8 != 0 (f16)", e.in = 60);
    REFUSE("in > 16384", e.in = 16392);
    REFUSE("n * in too big", (e.n = 8, e.in = 4096));
    REFUSE("x misaligned", e.x = d.x + 1);
    REFUSE("W misaligned", e.W[0] = (const char *)d.W[0] + 2);
    REFUSE("swiglu count 1", (e.epi = CU_EPI_SWIGLU, e.act_out = e.y[0]));
    REFUSE("swiglu outs differ",
           (e.epi = CU_EPI_SWIGLU, e.count = 2, e.W[1] = d.W[0], e.y[1] = d.y[0], e.out[1] = 8, e.act_out = e.y[0]));
    REFUSE("residual without res", (e.epi = CU_EPI_RESIDUAL, e.res_out = e.y[0]));
    REFUSE("gelu count 2", (e.epi = CU_EPI_GELU, e.count = 2, e.W[1] = d.W[0], e.y[1] = d.y[0], e.out[1] = 16,
                            e.act_out = e.y[0]));
    REFUSE("rms without weight", e.pro = CU_PRO_RMS);
    REFUSE("dtype f64", e.wtype = GK_DTYPE_F64);
#undef REFUSE
    return ok;
}

static void run_checks(void)
{
    static const int shapes[][2] = {/* out, in */
                                    {256, 2048}, {1024, 1024}, {2048, 2048}, {5632, 2048}, {2048, 5632},
                                    {512, 4096}, {37, 136},    {100, 64},    {3, 16384},   {1000, 8}};
    static const int ns[] = {1, 2, 5, 8};
    static const gk_dtype wts[] = {GK_DTYPE_F32, GK_DTYPE_F16, GK_DTYPE_BF16};
    tally all;
    printf("== correctness\n");
    for (gk_dtype wt : wts)
        for (auto &sh : shapes) {
            if (sh[1] % (wt == GK_DTYPE_F32 ? 4 : 8) != 0)
                continue;
            mats m;
            m.wt = wt, m.out = sh[0], m.in = sh[1];
            for (int k = 0; k < 3; k++) {
                m.W[k] = make_arr(wt, (size_t)m.out * m.in, 0.01, 1.0);
                m.B[k] = make_arr(wt, m.out, 0.01, 0.5);
            }
            if (wt == GK_DTYPE_F16 && sh[0] == 256 && !check_refusals(m))
                all.failed++;
            for (size_t c = 0; c < sizeof g_configs / sizeof g_configs[0]; c++) {
                tally ta;
                const gk_dtype nt = wts[(c + (int)wt) % 3];
                for (int n : ns)
                    check_case(m, n, g_configs[c], nt, ta);
                printf("  %-4s %5dx%-5d %-15s norm %-4s: %d cases, %d failed, %d refused (n*in too big)%s\n",
                       dt_name(wt), m.out, m.in, g_configs[c].name, dt_name(nt), ta.cases, ta.failed, ta.skipped,
                       ta.failed ? "  FAIL" : "");
                all.cases += ta.cases, all.failed += ta.failed, all.skipped += ta.skipped;
            }
            for (int k = 0; k < 3; k++)
                cudaFree(m.W[k].dev), cudaFree(m.B[k].dev);
        }
    printf("== correctness: %d cases, %d failed, %d refused: %s\n", all.cases, all.failed, all.skipped,
           all.failed ? "FAIL" : "PASS");
}

/* ------------------------------------------------------------- timing */

template <typename T> __global__ void fill_kernel(T *w, size_t ne, uint32_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < ne; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        w[i] = (T)(((float)(h & 0xffff) - 32768.0f) * (1.0f / 32768.0f));
    }
}

/* Median us per launch of `launch(i)` for i in 0..cnt-1, captured in a graph. */
template <typename F> static double time_graph(int cnt, F launch)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(g_ctx.stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < cnt; i++)
        launch(i);
    CK(cudaStreamEndCapture(g_ctx.stream, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaGraphLaunch(ge, g_ctx.stream)); /* warm-up */
    std::vector<double> ts;
    for (int r = 0; r < 9; r++) {
        CK(cudaEventRecord(e0, g_ctx.stream));
        CK(cudaGraphLaunch(ge, g_ctx.stream));
        CK(cudaEventRecord(e1, g_ctx.stream));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms * 1e3 / cnt);
    }
    std::sort(ts.begin(), ts.end());
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
    return ts[ts.size() / 2];
}

static void time_shape(gk_dtype wt, int out, int in)
{
    const size_t bytes = (size_t)out * in * dt_size(wt);
    const int cnt = (int)std::min<size_t>(256, std::max<size_t>(20, (size_t)(400e6 / bytes) + 1));
    std::vector<void *> W(cnt);
    for (int i = 0; i < cnt; i++) {
        CK(cudaMalloc(&W[i], bytes));
        CU_WEIGHT_SWITCH(wt, T, { fill_kernel<T><<<1024, 256, 0, g_ctx.stream>>>((T *)W[i], bytes / sizeof(T), i); });
    }
    const int n_max = 8;
    float *x = dev_f32((size_t)n_max * in), *y = dev_f32((size_t)n_max * out);
    CK(cudaMemset(x, 0, (size_t)n_max * in * 4));
    void *nw;
    CK(cudaMalloc(&nw, (size_t)in * 4));
    CK(cudaMemset(nw, 0, (size_t)in * 4));
    float *nout = dev_f32((size_t)n_max * in);
    CK(cudaStreamSynchronize(g_ctx.stream));
    /* the old path: linear.cu's GEMV, one LINEAR node per copy */
    std::vector<gk_tensor> wt_t(cnt);
    gk_tensor xt = {GK_DTYPE_F32, 1, in, x, "x", -1}, yt = {GK_DTYPE_F32, 1, out, y, "y", -1};
    std::vector<gk_node> nodes(cnt);
    for (int i = 0; i < cnt; i++) {
        wt_t[i] = {wt, out, in, W[i], "w", -1};
        nodes[i] = {GK_OP_LINEAR, {&xt, &wt_t[i], NULL}, &yt, {0}, {0}};
    }
    struct variant {
        const char *name;
        int n;
        cu_gemv_pro pro;
        bool old;
    } vs[] = {{"old linear.cu", 1, CU_PRO_NONE, true}, {"gemv", 1, CU_PRO_NONE, false},
              {"gemv rms+norm_out", 1, CU_PRO_RMS, false}, {"old linear.cu", 8, CU_PRO_NONE, true},
              {"gemv", 8, CU_PRO_NONE, false}};
    for (auto &v : vs) {
        cu_gemv_desc d = {};
        d.wtype = wt, d.n = v.n, d.in = in, d.x = x, d.pro = v.pro, d.norm_type = GK_DTYPE_F32, d.eps = 1e-5f;
        d.norm_w = v.pro != CU_PRO_NONE ? nw : NULL;
        d.norm_out = v.pro != CU_PRO_NONE ? nout : NULL;
        d.count = 1, d.W[0] = W[0], d.y[0] = y, d.out[0] = out;
        if (!v.old && !cu_gemv_ok(&d)) {
            printf("  %-4s %6dx%-5d n=%d %-18s   refused (n * in > limit)\n", dt_name(wt), out, in, v.n, v.name);
            continue;
        }
        xt.rows = v.n, yt.rows = v.n;
        double us = time_graph(cnt, [&](int i) {
            if (v.old) {
                gk_err err;
                if (cu_linear(&g_ctx, &nodes[i], &err) != GK_OK)
                    fprintf(stderr, "cu_linear: %s\n", err.msg), exit(1);
            } else {
                cu_gemv_desc di = d;
                di.W[0] = W[i];
                run_gemv(&di);
            }
        });
        printf("  %-4s %6dx%-5d n=%d %-18s %8.1f MB %9.2f us %8.0f GB/s\n", dt_name(wt), out, in, v.n, v.name,
               bytes / 1e6, us, bytes / us / 1e3);
    }
    /* the MLP of a decoder block, fused: rms + gate/up + swiglu */
    if (out > in && cnt >= 2) {
        cu_gemv_desc d = {};
        d.wtype = wt, d.n = 1, d.in = in, d.x = x, d.pro = CU_PRO_RMS, d.norm_type = GK_DTYPE_F32, d.eps = 1e-5f;
        d.norm_w = nw, d.norm_out = nout, d.count = 2, d.epi = CU_EPI_SWIGLU;
        float *y1 = dev_f32(out), *act = dev_f32(out);
        d.y[0] = y, d.y[1] = y1, d.out[0] = d.out[1] = out, d.act_out = act;
        double us = time_graph(cnt / 2, [&](int i) {
            cu_gemv_desc di = d;
            di.W[0] = W[2 * i], di.W[1] = W[2 * i + 1];
            run_gemv(&di);
        });
        printf("  %-4s %6dx%-5d n=1 %-18s %8.1f MB %9.2f us %8.0f GB/s\n", dt_name(wt), out, in,
               "gemv rms+gate/up+swiglu", 2 * bytes / 1e6, us, 2 * bytes / us / 1e3);
        cudaFree(y1), cudaFree(act);
    }
    for (int i = 0; i < cnt; i++)
        cudaFree(W[i]);
    cudaFree(x), cudaFree(y), cudaFree(nw), cudaFree(nout);
}


/* The GEMVs of `layers` decoder layers back to back, as a decode step runs
 * them (rms + q/k/v, o + residual, rms + gate/up + SwiGLU, down + residual),
 * each layer with its own weights: us per layer and weight GB/s, boundaries
 * between the four shapes included. */
static void time_layers(const char *name, gk_dtype wt, int hidden, int q_out, int kv_out, int inter, int layers)
{
    const size_t es = dt_size(wt);
    const int outs[7] = {q_out, kv_out, kv_out, hidden, inter, inter, hidden};
    const int ins[7] = {hidden, hidden, hidden, q_out, hidden, hidden, inter};
    size_t per_layer = 0;
    for (int k = 0; k < 7; k++)
        per_layer += (size_t)outs[k] * ins[k] * es;
    std::vector<void *> W((size_t)layers * 7);
    for (int l = 0; l < layers; l++)
        for (int k = 0; k < 7; k++) {
            const size_t ne = (size_t)outs[k] * ins[k];
            void **w = &W[(size_t)l * 7 + k];
            CK(cudaMalloc(w, ne * es));
            CU_WEIGHT_SWITCH(wt, T, { fill_kernel<T><<<1024, 256, 0, g_ctx.stream>>>((T *)*w, ne, l * 7 + k); });
        }
    const int wide = std::max(std::max(q_out, inter), hidden);
    std::vector<float *> buf(11);
    for (float *&p : buf) {
        p = dev_f32(wide);
        CK(cudaMemset(p, 0, (size_t)wide * 4));
    }
    float *x = buf[0], *nrm = buf[1], *q = buf[2], *k = buf[3], *v = buf[4], *o = buf[5], *x2 = buf[6];
    float *g = buf[7], *u = buf[8], *act = buf[9], *dn = buf[10];
    void *nw;
    CK(cudaMalloc(&nw, (size_t)hidden * 4));
    CK(cudaMemset(nw, 0, (size_t)hidden * 4));
    CK(cudaStreamSynchronize(g_ctx.stream));
    double us = time_graph(layers, [&](int l) {
        void **w = &W[(size_t)l * 7];
        cu_gemv_desc d = {};
        d.wtype = wt, d.n = 1, d.in = hidden, d.x = x, d.pro = CU_PRO_RMS, d.norm_type = GK_DTYPE_F32;
        d.eps = 1e-5f, d.norm_w = nw, d.norm_out = nrm, d.count = 3;
        d.W[0] = w[0], d.W[1] = w[1], d.W[2] = w[2], d.y[0] = q, d.y[1] = k, d.y[2] = v;
        d.out[0] = q_out, d.out[1] = kv_out, d.out[2] = kv_out;
        run_gemv(&d);
        d = {};
        d.wtype = wt, d.n = 1, d.in = q_out, d.x = q, d.count = 1, d.W[0] = w[3], d.y[0] = o, d.out[0] = hidden;
        d.epi = CU_EPI_RESIDUAL, d.res = x, d.res_out = x2;
        run_gemv(&d);
        d = {};
        d.wtype = wt, d.n = 1, d.in = hidden, d.x = x2, d.pro = CU_PRO_RMS, d.norm_type = GK_DTYPE_F32;
        d.eps = 1e-5f, d.norm_w = nw, d.norm_out = nrm, d.count = 2, d.W[0] = w[4], d.W[1] = w[5];
        d.y[0] = g, d.y[1] = u, d.out[0] = d.out[1] = inter, d.epi = CU_EPI_SWIGLU, d.act_out = act;
        run_gemv(&d);
        d = {};
        d.wtype = wt, d.n = 1, d.in = inter, d.x = act, d.count = 1, d.W[0] = w[6], d.y[0] = dn, d.out[0] = hidden;
        d.epi = CU_EPI_RESIDUAL, d.res = x2, d.res_out = x;
        run_gemv(&d);
    });
    printf("  %-12s %-4s %d layers of %6.1f MB: %8.2f us per layer %8.0f GB/s\n", name, dt_name(wt), layers,
           per_layer / 1e6, us, per_layer / us / 1e3);
    for (void *p : W)
        cudaFree(p);
    for (float *p : buf)
        cudaFree(p);
    cudaFree(nw);
}

static void run_timing(const char *only)
{
    static const int shapes[][2] = {{256, 2048},  {1024, 1024},  {2048, 2048},  {5632, 2048},
                                    {2048, 5632}, {12288, 4096}, {4096, 12288}, {151936, 1024}};
    static const gk_dtype wts[] = {GK_DTYPE_F16, GK_DTYPE_BF16, GK_DTYPE_F32};
    const bool chains = only && strcmp(only, "chains") == 0;
    printf("== decoder-layer GEMV chains (graph, median)\n");
    if (!only || chains || strcmp(only, "f16") == 0)
        time_layers("TinyLlama", GK_DTYPE_F16, 2048, 2048, 256, 5632, 22);
    if (!only || chains || strcmp(only, "bf16") == 0) {
        time_layers("Qwen3-0.6B", GK_DTYPE_BF16, 1024, 2048, 1024, 3072, 28);
        time_layers("Llama-1B", GK_DTYPE_BF16, 2048, 2048, 512, 8192, 16);
        time_layers("Qwen3-8B", GK_DTYPE_BF16, 4096, 4096, 1024, 12288, 12);
    }
    if (chains)
        return;
    printf("== timing (graph of back-to-back launches over distinct weight copies, median)\n");
    for (gk_dtype wt : wts)
        if (!only || strcmp(only, dt_name(wt)) == 0)
            for (auto &sh : shapes)
                time_shape(wt, sh[0], sh[1]);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    CK(cudaSetDevice(0));
    g_ctx.device = 0;
    g_ctx.n_sm = p.multiProcessorCount;
    g_ctx.pdl = p.major >= 9 && !getenv("GEMV_NO_PDL");
    CK(cudaStreamCreateWithFlags(&g_ctx.stream, cudaStreamNonBlocking));
    CK(cudaMalloc(&g_ctx.err_dev, 64));
    CK(cudaMemset(g_ctx.err_dev, 0, 64));
    printf("%s, %d SMs, pdl %d\n", p.name, g_ctx.n_sm, (int)g_ctx.pdl);
    if (strcmp(what, "time") != 0)
        run_checks();
    if (strcmp(what, "check") != 0)
        run_timing(argc > 2 ? argv[2] : NULL);
    return 0;
}
