/* attn_decode_harness.cu - timing of the decode attention (one token, the
 * attn_decode_kernel of backends/cuda/attention.cu) at the real shapes, as
 * KV bytes read per second, with a float64 check of a few outputs.
 *
 * A dev tool kept in the tree, not built by meson. From the repository root,
 * on a machine with an sm_80+ GPU:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Ibackends/cuda \
 *        tests/gpu/attn_decode_harness.cu backends/cuda/attention.cu backends/cuda/attn_flash.cu \
 *        -o /tmp/dec && /tmp/dec
 * Variants of the kernel's tuning build with -D of attention.cu's DEC_
 * tuning macros (DEC_BLOCKS_PER_SM, DEC_ONE_SPLIT_STEPS, DEC_STEPS,
 * DEC_STEPS_GT8, DEC_STEPS_GT4_LONG, DEC_GT_SHORT, DEC_SHORT_ROWS_64,
 * DEC_SHORT_ROWS, DEC_MERGE_ONE, DEC_MERGE_LOADS, DEC_MAX_GT, DEC_PREFETCH,
 * DEC_PREFETCH_ROWS, DEC_PREFETCH_ONE_TILE, DEC_PREFETCH_TRIGGER); build
 * several and run them in one device call.
 *
 * For each shape (GPT-2, TinyLlama, Qwen3-0.6B, Llama-3.2-1B, Qwen3-8B heads)
 * and cache dtype (F16, BF16) and position (31, 511, 3999, or the positions
 * given as arguments): as many layers
 * as it takes for their caches to be several times the L2 (each layer its own
 * cache, as in a model), one launch per layer captured in a CUDA graph, the
 * median of 15 replays (with -hbm as the first argument: as many layers as
 * keep the rows read at the first position, up to 32 GB of caches, out of
 * the L2, as a model's weights do between two layers); printed: µs per
 * layer and the cache bytes the token
 * reads (rows 0..pos of K and V) over that time. The check compares one
 * layer's output with a float64 attention over the same stored values
 * (|err| < 1e-4, values in [-1, 1)). Exit status 1 when a check fails.
 */
#include "harness.h"

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <vector>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rng_unit(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static uint16_t half_bits(gk_dtype dt, float v, float *back)
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

/* The -D tuning this build was given (attention.cu's defaults for the rest). */
#define STR2(x) #x
#define STR(x) STR2(x)
#ifdef DEC_BLOCKS_PER_SM
#define T0 " DEC_BLOCKS_PER_SM=" STR(DEC_BLOCKS_PER_SM)
#else
#define T0 ""
#endif
#ifdef DEC_ONE_SPLIT_STEPS
#define T1 " DEC_ONE_SPLIT_STEPS=" STR(DEC_ONE_SPLIT_STEPS)
#else
#define T1 ""
#endif
#ifdef DEC_STEPS
#define T2 " DEC_STEPS=" STR(DEC_STEPS)
#else
#define T2 ""
#endif
#ifdef DEC_STEPS_GT8
#define T3 " DEC_STEPS_GT8=" STR(DEC_STEPS_GT8)
#else
#define T3 ""
#endif
#ifdef DEC_STEPS_GT4_LONG
#define T4 " DEC_STEPS_GT4_LONG=" STR(DEC_STEPS_GT4_LONG)
#else
#define T4 ""
#endif
#ifdef DEC_GT_SHORT
#define T5 " DEC_GT_SHORT=" STR(DEC_GT_SHORT)
#else
#define T5 ""
#endif
#ifdef DEC_SHORT_ROWS_64
#define T6 " DEC_SHORT_ROWS_64=" STR(DEC_SHORT_ROWS_64)
#else
#define T6 ""
#endif
#ifdef DEC_SHORT_ROWS
#define T7 " DEC_SHORT_ROWS=" STR(DEC_SHORT_ROWS)
#else
#define T7 ""
#endif
#ifdef DEC_MERGE_ONE
#define T8 " DEC_MERGE_ONE=" STR(DEC_MERGE_ONE)
#else
#define T8 ""
#endif
#ifdef DEC_MERGE_LOADS
#define T9 " DEC_MERGE_LOADS=" STR(DEC_MERGE_LOADS)
#else
#define T9 ""
#endif
#ifdef DEC_MAX_GT
#define T10 " DEC_MAX_GT=" STR(DEC_MAX_GT)
#else
#define T10 ""
#endif
#ifdef DEC_PREFETCH
#define T11 " DEC_PREFETCH=" STR(DEC_PREFETCH)
#else
#define T11 ""
#endif
#ifdef DEC_PREFETCH_ROWS
#define T12 " DEC_PREFETCH_ROWS=" STR(DEC_PREFETCH_ROWS)
#else
#define T12 ""
#endif
#ifdef DEC_PREFETCH_ONE_TILE
#define T13 " DEC_PREFETCH_ONE_TILE=" STR(DEC_PREFETCH_ONE_TILE)
#else
#define T13 ""
#endif
#ifdef DEC_PREFETCH_TRIGGER
#define T14 " DEC_PREFETCH_TRIGGER=" STR(DEC_PREFETCH_TRIGGER)
#else
#define T14 ""
#endif
#define TUNING "defaults" T0 T1 T2 T3 T4 T5 T6 T7 T8 T9 T10 T11 T12 T13 T14

/* ---------------------------------------------------------------- cases */

struct shape {
    const char *name;
    int H, Hkv, hd;
};

static const shape shapes[] = {
    {"GPT-2", 12, 12, 64},    {"TinyLlama", 32, 4, 64}, {"Qwen3-0.6B", 16, 8, 128},
    {"Llama-3.2-1B", 32, 8, 64}, {"Qwen3-8B", 32, 8, 128},
};

struct layer {
    void *kc, *vc;  /* [n_ctx][Hkv*hd] */
    float *q, *out; /* [1][H*hd] */
    gk_tensor t_q, t_k, t_v, t_pos, t_kc, t_vc, t_out;
    gk_node nd;
};

static bool check(const shape &sh, gk_dtype dt, const std::vector<float> &kf, const std::vector<float> &vf,
                  const std::vector<float> &qf, const float *out_dev, int pos)
{
    const int kvw = sh.Hkv * sh.hd, G = sh.H / sh.Hkv;
    std::vector<float> got((size_t)sh.H * sh.hd);
    CK(cudaMemcpy(got.data(), out_dev, got.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0.0;
    const double scale = 1.0 / sqrt((double)sh.hd);
    std::vector<double> p(pos + 1);
    for (int h = 0; h < sh.H; h++) {
        int kh = h / G;
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j <= pos; j++) {
            double s = 0.0;
            for (int e = 0; e < sh.hd; e++)
                s += (double)qf[(size_t)h * sh.hd + e] * kf[(size_t)j * kvw + kh * sh.hd + e];
            p[j] = s * (double)(float)scale;
            mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= pos; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int e = 0; e < sh.hd; e++) {
            double o = 0.0;
            for (int j = 0; j <= pos; j++)
                o += p[j] / sum * vf[(size_t)j * kvw + kh * sh.hd + e];
            double d = fabs(o - got[(size_t)h * sh.hd + e]);
            worst = std::max(worst, d != d ? INFINITY : d);
        }
    }
    if (worst >= 1e-4)
        printf("CHECK FAILED %s %s pos %d: max|err| %.3g\n", sh.name, dt == GK_DTYPE_F16 ? "F16" : "BF16", pos,
               worst);
    return worst < 1e-4;
}

int main(int argc, char **argv)
{
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    cu_ctx c = {};
    c.n_sm = prop.multiProcessorCount;
    c.pdl = prop.major >= 9;
    CK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
    CK(cudaMalloc((void **)&c.err_dev, CU_EW_COUNT * sizeof(int)));
    CK(cudaMemset(c.err_dev, 0, CU_EW_COUNT * sizeof(int)));
    CK(cudaMalloc((void **)&c.tickets, CU_TICKETS * sizeof(unsigned)));
    CK(cudaMemset(c.tickets, 0, CU_TICKETS * sizeof(unsigned)));
    c.scratch_bytes = 64u << 20;
    CK(cudaMalloc(&c.scratch, c.scratch_bytes));
    printf("%s, %d SMs; tuning: %s\n", prop.name, c.n_sm, TUNING);
    printf("%-13s %-5s %6s %7s %10s %9s\n", "shape", "cache", "pos", "layers", "us/layer", "KV TB/s");
    /* positions: the arguments (each below n_ctx), or 31, 511 and 3999 */
    const int n_ctx = 4096;
    std::vector<int> positions = {31, 511, 3999};
    /* -hbm first: as many layers as keep the rows read at the first
     * position out of the L2 (in a model, the weights between two layers'
     * attention evict the cache rows) */
    const bool from_hbm = argc > 1 && strcmp(argv[1], "-hbm") == 0;
    if (argc > 1 + from_hbm) {
        positions.clear();
        for (int i = 1 + from_hbm; i < argc; i++) {
            const int p = atoi(argv[i]);
            if (p < 0 || p >= n_ctx) {
                fprintf(stderr, "position %s: not in [0, %d)\n", argv[i], n_ctx);
                return 2;
            }
            positions.push_back(p);
        }
    }
    const gk_dtype dts[2] = {GK_DTYPE_F16, GK_DTYPE_BF16};
    bool ok = true;
    for (const shape &sh : shapes)
        for (gk_dtype dt : dts) {
            const int kvw = sh.Hkv * sh.hd;
            const size_t cache_bytes = (size_t)n_ctx * kvw * 2;
            /* enough layers that the rows read at pos 3999 are 4x the L2 */
            int L = (int)std::max<size_t>(2, (size_t)4 * prop.l2CacheSize / (2 * (size_t)4000 * kvw * 2) + 1);
            if (from_hbm) { /* the rows at the first position 4x the L2, at most 32 GB of caches */
                const size_t want = (size_t)4 * prop.l2CacheSize / (2 * (size_t)(positions[0] + 1) * kvw * 2) + 1;
                const size_t most = ((size_t)32 << 30) / (2 * cache_bytes);
                L = (int)std::max<size_t>(L, std::min(want, most));
            }
            std::vector<layer> ls(L);
            std::vector<uint16_t> kb((size_t)n_ctx * kvw), vb(kb.size());
            std::vector<float> kf(kb.size()), vf(kb.size()), qf((size_t)sh.H * sh.hd);
            for (size_t i = 0; i < kb.size(); i++) {
                kb[i] = half_bits(dt, rng_unit(), &kf[i]);
                vb[i] = half_bits(dt, rng_unit(), &vf[i]);
            }
            for (float &x : qf)
                x = rng_unit();
            int32_t *pos_dev;
            CK(cudaMalloc((void **)&pos_dev, sizeof(int32_t)));
            for (layer &l : ls) {
                CK(cudaMalloc(&l.kc, cache_bytes));
                CK(cudaMalloc(&l.vc, cache_bytes));
                CK(cudaMalloc((void **)&l.q, qf.size() * 4));
                CK(cudaMalloc((void **)&l.out, qf.size() * 4));
                if (&l == &ls[0]) {
                    CK(cudaMemcpy(l.kc, kb.data(), cache_bytes, cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(l.vc, vb.data(), cache_bytes, cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(l.q, qf.data(), qf.size() * 4, cudaMemcpyHostToDevice));
                } else {
                    CK(cudaMemcpy(l.kc, ls[0].kc, cache_bytes, cudaMemcpyDeviceToDevice));
                    CK(cudaMemcpy(l.vc, ls[0].vc, cache_bytes, cudaMemcpyDeviceToDevice));
                    CK(cudaMemcpy(l.q, ls[0].q, qf.size() * 4, cudaMemcpyDeviceToDevice));
                }
                auto t = [](gk_dtype d, int64_t r, int64_t cols, void *p) {
                    gk_tensor x = {};
                    x.dtype = d;
                    x.rows = r;
                    x.cols = cols;
                    x.data = p;
                    x.layer = -1;
                    snprintf(x.name, sizeof x.name, "attn");
                    return x;
                };
                l.t_q = t(GK_DTYPE_F32, 1, (int64_t)sh.H * sh.hd, l.q);
                l.t_k = t(GK_DTYPE_F32, 1, kvw, l.q); /* not read: the rows are stored already */
                l.t_v = t(GK_DTYPE_F32, 1, kvw, l.q);
                l.t_pos = t(GK_DTYPE_I32, 1, 1, pos_dev);
                l.t_kc = t(dt, n_ctx, kvw, l.kc);
                l.t_vc = t(dt, n_ctx, kvw, l.vc);
                l.t_out = t(GK_DTYPE_F32, 1, (int64_t)sh.H * sh.hd, l.out);
                memset(&l.nd, 0, sizeof l.nd);
                l.nd.op = GK_OP_ATTN;
                l.nd.src[0] = &l.t_q;
                l.nd.src[1] = &l.t_k;
                l.nd.src[2] = &l.t_v;
                l.nd.src[3] = &l.t_pos;
                l.nd.src[4] = &l.t_kc;
                l.nd.src[5] = &l.t_vc;
                l.nd.dst = &l.t_out;
                l.nd.i[0] = sh.H;
                l.nd.i[1] = sh.Hkv;
                l.nd.i[2] = sh.hd;
                l.nd.f[0] = 1.0f / sqrtf((float)sh.hd);
            }
            if (cu_attn_scratch(&c, &ls[0].nd) > c.scratch_bytes) {
                printf("scratch too small for %s\n", sh.name);
                return 2;
            }
            for (int pos : positions) {
                CK(cudaMemcpy(pos_dev, &pos, sizeof pos, cudaMemcpyHostToDevice));
                cudaGraph_t g;
                cudaGraphExec_t ge;
                CK(cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal));
                for (layer &l : ls) {
                    gk_err err = {};
                    if (cu_attn_stored(&c, &l.nd, &err) != GK_OK) {
                        printf("launch failed: %s\n", err.msg);
                        return 2;
                    }
                }
                CK(cudaStreamEndCapture(c.stream, &g));
                CK(cudaGraphInstantiate(&ge, g, 0));
                CK(cudaMemsetAsync(ls[0].out, 0xff, qf.size() * 4, c.stream)); /* NaN: every element written */
                CK(cudaGraphLaunch(ge, c.stream));
                CK(cudaStreamSynchronize(c.stream));
                ok &= check(sh, dt, kf, vf, qf, ls[0].out, pos);
                cudaEvent_t a, b;
                CK(cudaEventCreate(&a));
                CK(cudaEventCreate(&b));
                std::vector<float> ms;
                for (int r = 0; r < 16; r++) {
                    CK(cudaEventRecord(a, c.stream));
                    CK(cudaGraphLaunch(ge, c.stream));
                    CK(cudaEventRecord(b, c.stream));
                    CK(cudaEventSynchronize(b));
                    float t;
                    CK(cudaEventElapsedTime(&t, a, b));
                    if (r > 0)
                        ms.push_back(t);
                }
                std::sort(ms.begin(), ms.end());
                double us = ms[ms.size() / 2] * 1e3 / L;
                double bytes = 2.0 * (pos + 1) * kvw * 2;
                printf("%-13s %-5s %6d %7d %10.2f %9.2f\n", sh.name, dt == GK_DTYPE_F16 ? "F16" : "BF16", pos, L, us,
                       bytes / (us * 1e-6) / 1e12);
                CK(cudaEventDestroy(a));
                CK(cudaEventDestroy(b));
                CK(cudaGraphExecDestroy(ge));
                CK(cudaGraphDestroy(g));
            }
            for (layer &l : ls) {
                CK(cudaFree(l.kc));
                CK(cudaFree(l.vc));
                CK(cudaFree(l.q));
                CK(cudaFree(l.out));
            }
            CK(cudaFree(pos_dev));
        }
    int note = 0;
    CK(cudaMemcpy(&note, c.err_dev, sizeof note, cudaMemcpyDeviceToHost));
    if (note)
        printf("the kernels left error note %d\n", note);
    printf(ok && !note ? "all checks passed\n" : "CHECKS FAILED\n");
    return ok && !note ? 0 : 1;
}
