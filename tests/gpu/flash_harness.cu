/* flash_harness.cu - standalone check and timing of the tensor-core prefill
 * attention (backends/cuda/attn_flash.cu) against a float64 CPU reference.
 *
 * A dev tool kept in the tree, not built by meson. From the repository root,
 * on a machine with an sm_80+ GPU:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Ibackends/cuda \
 *        -Xcompiler -pthread tests/gpu/flash_harness.cu backends/cuda/attn_flash.cu -o /tmp/flash && /tmp/flash
 * Add -DFLASH_BASELINE and backends/cuda/attention.cu to the sources to time
 * the float32 path (kv_store + attn_tiled_kernel) beside it.
 * Arguments: none = all checks then timings; "check" or "time" = one half;
 * "small" = a few small checks (to run under compute-sanitizer).
 *
 * Checks: head dims 64 and 128, (H, Hkv) in (32,4) (32,8) (16,8) (12,12)
 * (6,2), n in 9 100 512 513, positions consecutive from 0 (cache of exactly
 * n rows), from 700 (cache 2048, earlier rows filled) and scattered unsorted
 * (cache 2048), plus positions outside the cache (clamped), for F16 and BF16
 * caches holding values in [-1, 1). The reference uses the same rounded K/V
 * and the float q. out is poisoned with NaN first; every element must be
 * written and finite. Exit status 1 when any check fails.
 * Timings: pp512 shapes of five models, median of batches, TFLOP/s counted as
 * 4 n avg_visible hd H.
 */
#include "harness.h"

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <thread>
#include <vector>

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rng_unit(void) { return (float)(rng_u32() & 0xffffff) / 16777216.0f * 2.0f - 1.0f; } /* [-1, 1) */

/* v rounded to the cache dtype: the stored bits and their float value */
static uint16_t to_half_bits(gk_dtype dt, float v, float *back)
{
    uint16_t b;
    if (dt == GK_DTYPE_F16) {
        __half h = __float2half_rn(v);
        *back = __half2float(h);
        memcpy(&b, &h, 2);
    } else {
        __nv_bfloat16 h = __float2bfloat16_rn(v);
        *back = __bfloat162float(h);
        memcpy(&b, &h, 2);
    }
    return b;
}

static cu_ctx make_ctx(void)
{
    cu_ctx c = {};
    CK(cudaGetDevice(&c.device));
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, c.device));
    c.n_sm = pr.multiProcessorCount;
    CK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
    CK(cudaMalloc(&c.err_dev, CU_EW_COUNT * sizeof(int)));
    CK(cudaMemset(c.err_dev, 0, CU_EW_COUNT * sizeof(int)));
    c.pdl = pr.major >= 9;
    printf("device %s, %d SMs, sm_%d%d, pdl %d\n", pr.name, c.n_sm, pr.major, pr.minor, (int)c.pdl);
    return c;
}

/* One ATTN problem on the host and the device. */
typedef struct problem {
    gk_dtype dt;
    int hd, H, Hkv, n, n_ctx;
    float scale;
    std::vector<float> q;       /* [n][H*hd] */
    std::vector<float> kf, vf;  /* [n_ctx][Hkv*hd], the rounded cache values */
    std::vector<uint16_t> kb, vb;
    std::vector<int32_t> pos;   /* [n] */
    float *d_q, *d_out;
    void *d_kc, *d_vc;
    int32_t *d_pos;
    gk_tensor tq, tk, tv, tpos, tkc, tvc, tout;
    gk_node nd;
} problem;

enum { POS_ZERO = 0, POS_OFFSET, POS_SCATTER, POS_BAD };
static const char *mode_name[] = {"from 0", "from 700", "scattered", "out of range"};

static void make_positions(problem &p, int mode, int offset)
{
    p.pos.resize(p.n);
    if (mode == POS_ZERO || mode == POS_OFFSET) {
        for (int t = 0; t < p.n; t++)
            p.pos[t] = offset + t;
        return;
    }
    std::vector<int32_t> all(p.n_ctx);
    for (int i = 0; i < p.n_ctx; i++)
        all[i] = i;
    for (int i = p.n_ctx - 1; i > 0; i--)
        std::swap(all[i], all[rng_u32() % (i + 1)]);
    for (int t = 0; t < p.n; t++)
        p.pos[t] = all[t];
    if (mode == POS_BAD) {
        p.pos[0] = p.n_ctx + 100;
        p.pos[p.n / 2] = -5;
        p.pos[p.n - 1] = p.n_ctx;
    }
}

static void problem_init(problem &p, gk_dtype dt, int hd, int H, int Hkv, int n, int n_ctx, int mode, int offset)
{
    p.dt = dt;
    p.hd = hd;
    p.H = H;
    p.Hkv = Hkv;
    p.n = n;
    p.n_ctx = n_ctx;
    p.scale = 1.0f / sqrtf((float)hd);
    size_t qn = (size_t)n * H * hd, cn = (size_t)n_ctx * Hkv * hd;
    p.q.resize(qn);
    for (auto &x : p.q)
        x = 2.0f * rng_unit(); /* |q| < 2: scores spread enough to make the softmax peaked */
    p.kf.resize(cn);
    p.vf.resize(cn);
    p.kb.resize(cn);
    p.vb.resize(cn);
    for (size_t i = 0; i < cn; i++) {
        p.kb[i] = to_half_bits(dt, rng_unit(), &p.kf[i]);
        p.vb[i] = to_half_bits(dt, rng_unit(), &p.vf[i]);
    }
    make_positions(p, mode, offset);

    CK(cudaMalloc(&p.d_q, qn * 4));
    CK(cudaMalloc(&p.d_out, qn * 4));
    CK(cudaMalloc(&p.d_kc, cn * 2));
    CK(cudaMalloc(&p.d_vc, cn * 2));
    CK(cudaMalloc(&p.d_pos, n * 4));
    CK(cudaMemcpy(p.d_q, p.q.data(), qn * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(p.d_kc, p.kb.data(), cn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(p.d_vc, p.vb.data(), cn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(p.d_pos, p.pos.data(), n * 4, cudaMemcpyHostToDevice));

    auto T = [](gk_tensor &t, gk_dtype d, int64_t r, int64_t c, void *data, const char *name) {
        memset(&t, 0, sizeof t);
        t.dtype = d;
        t.rows = r;
        t.cols = c;
        t.data = data;
        snprintf(t.name, sizeof t.name, "%s", name);
        t.layer = 0;
    };
    /* k, v (src1, src2) were stored by kv_store already; flash never reads them */
    T(p.tq, GK_DTYPE_F32, n, (int64_t)H * hd, p.d_q, "q");
    T(p.tk, GK_DTYPE_F32, n, (int64_t)Hkv * hd, nullptr, "k");
    T(p.tv, GK_DTYPE_F32, n, (int64_t)Hkv * hd, nullptr, "v");
    T(p.tpos, GK_DTYPE_I32, 1, n, p.d_pos, "pos");
    T(p.tkc, dt, n_ctx, (int64_t)Hkv * hd, p.d_kc, "k_cache");
    T(p.tvc, dt, n_ctx, (int64_t)Hkv * hd, p.d_vc, "v_cache");
    T(p.tout, GK_DTYPE_F32, n, (int64_t)H * hd, p.d_out, "attn_out");
    memset(&p.nd, 0, sizeof p.nd);
    p.nd.op = GK_OP_ATTN;
    p.nd.src[0] = &p.tq;
    p.nd.src[1] = &p.tk;
    p.nd.src[2] = &p.tv;
    p.nd.src[3] = &p.tpos;
    p.nd.src[4] = &p.tkc;
    p.nd.src[5] = &p.tvc;
    p.nd.dst = &p.tout;
    p.nd.i[0] = H;
    p.nd.i[1] = Hkv;
    p.nd.i[2] = hd;
    p.nd.f[0] = p.scale;
}

static void problem_free(problem &p)
{
    cudaFree(p.d_q);
    cudaFree(p.d_out);
    cudaFree(p.d_kc);
    cudaFree(p.d_vc);
    cudaFree(p.d_pos);
}

/* float64 attention over the rounded caches, rows [t_begin, t_end) */
static void reference_rows(const problem &p, std::vector<double> &ref, int t_begin, int t_end)
{
    const int hd = p.hd, G = p.H / p.Hkv, kvw = p.Hkv * hd;
    std::vector<double> s(p.n_ctx), acc(hd);
    for (int t = t_begin; t < t_end; t++) {
        int ps = std::min(std::max((int)p.pos[t], 0), p.n_ctx - 1);
        for (int h = 0; h < p.H; h++) {
            const float *qr = &p.q[((size_t)t * p.H + h) * hd];
            const int kvh = h / G;
            double mx = -INFINITY;
            for (int j = 0; j <= ps; j++) {
                const float *kr = &p.kf[(size_t)j * kvw + (size_t)kvh * hd];
                double d = 0.0;
                for (int e = 0; e < hd; e++)
                    d += (double)qr[e] * (double)kr[e];
                s[j] = d * (double)p.scale;
                mx = std::max(mx, s[j]);
            }
            double sum = 0.0;
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int j = 0; j <= ps; j++) {
                double w = exp(s[j] - mx);
                sum += w;
                const float *vr = &p.vf[(size_t)j * kvw + (size_t)kvh * hd];
                for (int e = 0; e < hd; e++)
                    acc[e] += w * (double)vr[e];
            }
            for (int e = 0; e < hd; e++)
                ref[((size_t)t * p.H + h) * hd + e] = acc[e] / sum;
        }
    }
}

static void reference(const problem &p, std::vector<double> &ref)
{
    ref.assign((size_t)p.n * p.H * p.hd, 0.0);
    int nt = (int)std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
    std::vector<std::thread> th;
    for (int k = 0; k < nt; k++) {
        int a = (int)((int64_t)p.n * k / nt), b = (int)((int64_t)p.n * (k + 1) / nt);
        th.emplace_back(reference_rows, std::cref(p), std::ref(ref), a, b);
    }
    for (auto &x : th)
        x.join();
}

/* --------------------------------------------------------------- checks */

static int n_fail = 0;
static double worst[2] = {0.0, 0.0}; /* F16, BF16 */

static void check_case(cu_ctx &c, gk_dtype dt, int hd, int H, int Hkv, int n, int mode)
{
    const int n_ctx = mode == POS_ZERO ? n : 2048, offset = mode == POS_OFFSET ? 700 : 0;
    problem p;
    problem_init(p, dt, hd, H, Hkv, n, n_ctx, mode, offset);
    const char *dn = dt == GK_DTYPE_F16 ? "f16" : "bf16";
    const double tol = dt == GK_DTYPE_F16 ? 2e-3 : 1.2e-2;
    size_t qn = (size_t)n * H * hd;
    bool ok = cu_attn_flash_ok(&c, &p.nd);
    double err_max = 0.0;
    size_t unwritten = 0;
    if (ok) {
        CK(cudaMemset(p.d_out, 0xff, qn * 4)); /* NaN */
        gk_err err = {};
        gk_status s = cu_attn_flash(&c, &p.nd, &err);
        if (s != GK_OK) {
            printf("FAIL %s: %s\n", dn, err.msg);
            n_fail++;
            problem_free(p);
            return;
        }
        CK(cudaStreamSynchronize(c.stream));
        std::vector<float> got(qn);
        CK(cudaMemcpy(got.data(), p.d_out, qn * 4, cudaMemcpyDeviceToHost));
        std::vector<double> ref;
        reference(p, ref);
        for (size_t i = 0; i < qn; i++) {
            if (!isfinite(got[i])) {
                unwritten++;
                continue;
            }
            err_max = std::max(err_max, fabs((double)got[i] - ref[i]));
        }
    }
    bool pass = ok && unwritten == 0 && err_max < tol;
    if (!pass)
        n_fail++;
    int wi = dt == GK_DTYPE_F16 ? 0 : 1;
    worst[wi] = std::max(worst[wi], err_max);
    printf("%s %-4s hd %3d H %2d Hkv %2d n %3d %-12s max abs err %.3e%s%s\n", pass ? "ok  " : "FAIL", dn, hd, H,
           Hkv, n, mode_name[mode], err_max, ok ? "" : " (cu_attn_flash_ok refused)",
           unwritten ? " (elements not written / not finite)" : "");
    problem_free(p);
}

static void run_checks(cu_ctx &c, bool small)
{
    static const int hds[] = {64, 128};
    static const int heads[][2] = {{32, 4}, {32, 8}, {16, 8}, {12, 12}, {6, 2}};
    static const int ns[] = {9, 100, 512, 513};
    static const gk_dtype dts[] = {GK_DTYPE_F16, GK_DTYPE_BF16};
    if (small) {
        for (gk_dtype dt : dts)
            for (int hd : hds) {
                check_case(c, dt, hd, 6, 2, 100, POS_ZERO);
                check_case(c, dt, hd, 6, 2, 77, POS_BAD);
            }
        return;
    }
    for (gk_dtype dt : dts)
        for (int hd : hds)
            for (auto &hh : heads)
                for (int n : ns)
                    for (int mode = POS_ZERO; mode <= POS_SCATTER; mode++)
                        check_case(c, dt, hd, hh[0], hh[1], n, mode);
    for (gk_dtype dt : dts)
        for (int hd : hds)
            check_case(c, dt, hd, 32, 8, 100, POS_BAD);
    /* not taken: decode-sized n, other head dims */
    problem p;
    problem_init(p, GK_DTYPE_F16, 64, 4, 2, 8, 64, POS_ZERO, 0);
    bool refused8 = !cu_attn_flash_ok(&c, &p.nd);
    problem_free(p);
    problem_init(p, GK_DTYPE_F16, 96, 4, 2, 64, 64, POS_ZERO, 0);
    bool refused96 = !cu_attn_flash_ok(&c, &p.nd);
    problem_free(p);
    printf("%s refuses n = 8: %d, hd = 96: %d\n", refused8 && refused96 ? "ok  " : "FAIL", refused8, refused96);
    if (!refused8 || !refused96)
        n_fail++;
}

/* -------------------------------------------------------------- timings */

/* median over batches of `per` launches, ms per launch */
template <typename F>
static float time_ms(cu_ctx &c, F launch)
{
    const int per = 20, batches = 15;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 5; i++)
        launch();
    std::vector<float> ms;
    for (int k = 0; k < batches; k++) {
        CK(cudaEventRecord(a, c.stream));
        for (int i = 0; i < per; i++)
            launch();
        CK(cudaEventRecord(b, c.stream));
        CK(cudaEventSynchronize(b));
        float x;
        CK(cudaEventElapsedTime(&x, a, b));
        ms.push_back(x / per);
    }
    std::sort(ms.begin(), ms.end());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms[ms.size() / 2];
}

#ifdef FLASH_BASELINE
/* the float32 path on the same problem: F32 caches, kv_store + attn_tiled_kernel */
static float time_baseline(cu_ctx &c, const problem &p)
{
    size_t cn = (size_t)p.n_ctx * p.Hkv * p.hd, kn = (size_t)p.n * p.Hkv * p.hd;
    float *kc, *vc, *k, *v;
    CK(cudaMalloc(&kc, cn * 4));
    CK(cudaMalloc(&vc, cn * 4));
    CK(cudaMalloc(&k, kn * 4));
    CK(cudaMalloc(&v, kn * 4));
    CK(cudaMemcpy(kc, p.kf.data(), cn * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(vc, p.vf.data(), cn * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(k, 0, kn * 4));
    CK(cudaMemset(v, 0, kn * 4));
    gk_tensor tk = p.tk, tv = p.tv, tkc = p.tkc, tvc = p.tvc;
    tk.data = k;
    tv.data = v;
    tkc.dtype = tvc.dtype = GK_DTYPE_F32;
    tkc.data = kc;
    tvc.data = vc;
    gk_node nd = p.nd;
    nd.src[1] = &tk;
    nd.src[2] = &tv;
    nd.src[4] = &tkc;
    nd.src[5] = &tvc;
    gk_err err = {};
    if (cu_attn_setup(&c, &err) != GK_OK) {
        printf("baseline setup: %s\n", err.msg);
        return 0.0f;
    }
    float ms = time_ms(c, [&] { cu_attn(&c, &nd, &err); });
    cudaFree(kc);
    cudaFree(vc);
    cudaFree(k);
    cudaFree(v);
    return ms;
}
#endif

static void run_timings(cu_ctx &c)
{
    static const struct {
        const char *model;
        int H, Hkv, hd;
    } shapes[] = {
        {"Qwen3-8B", 32, 8, 128}, {"Qwen3-0.6B", 16, 8, 128}, {"TinyLlama", 32, 4, 64},
        {"Llama-3.2-1B", 32, 8, 64}, {"GPT-2", 12, 12, 64},
    };
    static const gk_dtype dts[] = {GK_DTYPE_BF16, GK_DTYPE_F16};
    const int n = 512, n_ctx = 4096;
    for (auto &sh : shapes)
        for (gk_dtype dt : dts)
            for (int offset : {0, 3488}) {
                problem p;
                problem_init(p, dt, sh.hd, sh.H, sh.Hkv, n, n_ctx, POS_OFFSET, offset);
                gk_err err = {};
                float ms = time_ms(c, [&] { cu_attn_flash(&c, &p.nd, &err); });
                CK(cudaStreamSynchronize(c.stream));
                double vis = offset + (n + 1) / 2.0; /* mean of pos + 1 */
                double flop = 4.0 * n * vis * sh.hd * sh.H;
                printf("%-12s %-4s H %2d Hkv %2d hd %3d n %d pos %4d..%4d: %8.1f us  %6.1f TFLOP/s", sh.model,
                       dt == GK_DTYPE_F16 ? "f16" : "bf16", sh.H, sh.Hkv, sh.hd, n, offset, offset + n - 1,
                       ms * 1e3, flop / (ms * 1e-3) / 1e12);
#ifdef FLASH_BASELINE
                if (dt == GK_DTYPE_BF16) {
                    float bms = time_baseline(c, p);
                    printf("   (f32 path %8.1f us, x%.1f)", bms * 1e3, bms / ms);
                }
#endif
                printf("%s\n", err.msg[0] ? err.msg : "");
                problem_free(p);
            }
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    cu_ctx c = make_ctx();
    bool small = !strcmp(what, "small");
    if (small || !strcmp(what, "all") || !strcmp(what, "check")) {
        run_checks(c, small);
        printf("worst max abs err: f16 %.3e (tol 2e-3), bf16 %.3e (tol 1.2e-2); %d failed\n", worst[0], worst[1],
               n_fail);
    }
    if (!small && (!strcmp(what, "all") || !strcmp(what, "time")))
        run_timings(c);
    int ew[CU_EW_COUNT];
    CK(cudaMemcpy(ew, c.err_dev, sizeof ew, cudaMemcpyDeviceToHost));
    CK(cudaDeviceSynchronize());
    return n_fail ? 1 : 0;
}
