/* attention.cu - ATTN on CUDA: store k, v at their cache rows, then causal
 * softmax attention of every query head over its kv head's cache rows
 * 0..pos[t] (GQA: query head h reads kv head h / (H / Hkv)).
 *
 * Three kernels after kv_store_kernel, chosen per node on the host:
 *  - attn_split_kernel (decode, n <= DEC_MAX_TOKENS, head dim a multiple of
 *    4): flash-decoding. The grid is (KV split, kv head x query-head tile,
 *    token); a block streams its split's cache rows in tiles through shared
 *    memory with an online softmax, for up to GT query heads of one kv head at
 *    once (each K/V row is read once per group, not once per head). With more
 *    than one split, attn_combine_kernel merges the partial (max, sum, acc).
 *    The split count is fixed by the cache size and the grid, never by the
 *    position, which the kernels read on the device: splits past pos[t] return
 *    at once, and a captured graph replays at any position.
 *  - attn_tiled_kernel (prefill, or any head dim): flash-attention style,
 *    BQ queries x 32 keys per step in shared memory, online softmax in
 *    registers, no n x n matrix anywhere; keys up to the largest position of
 *    the block's queries, masked per query by its own position.
 * All math is float; exp is the precise expf. Scores are (q . k) * scale, as
 * in cpu_ref. Positions outside the cache are noted in the error word by
 * kv_store_kernel and clamped by the others, so nothing reads out of bounds.
 * Not here: sliding windows, ALiBi, paged caches, tensor-core attention.
 */
#include "cuda_common.cuh"

#include <math.h>

#define ATT_THREADS 128
#define DEC_MAX_TOKENS 8
#define DEC_MAX_SPLITS 128
#define DEC_MAX_GT 8

/* -------------------------------------------------------------- kv store */

/* Cache rows pos[t] = k[t], v[t]; grid (n). */
template <bool V4>
__global__ void kv_store_kernel(const float *__restrict__ k, const float *__restrict__ v,
                                const int32_t *__restrict__ pos, float *__restrict__ kc,
                                float *__restrict__ vc, int kvw, int n_ctx, int *ew)
{
    int t = blockIdx.x, p = pos[t];
    if (p < 0 || p >= n_ctx) {
        if (threadIdx.x == 0)
            cu_note(ew, CU_ERR_BAD_POS, p, t, n_ctx);
        return;
    }
    size_t src = (size_t)t * kvw, dst = (size_t)p * kvw;
    if (V4) {
        for (int i = threadIdx.x; i < kvw / 4; i += blockDim.x) {
            reinterpret_cast<float4 *>(kc + dst)[i] = reinterpret_cast<const float4 *>(k + src)[i];
            reinterpret_cast<float4 *>(vc + dst)[i] = reinterpret_cast<const float4 *>(v + src)[i];
        }
    } else {
        for (int i = threadIdx.x; i < kvw; i += blockDim.x) {
            kc[dst + i] = k[src + i];
            vc[dst + i] = v[src + i];
        }
    }
}

static __device__ __forceinline__ int clamp_pos(int p, int n_ctx) { return min(max(p, 0), n_ctx - 1); }

/* ------------------------------------------------------- split-KV decode */

/* Shared floats of attn_split_kernel: q [GT][hd], a K tile [rows][hd + 4]
 * (reused at the end for the row groups' partial outputs), probabilities
 * [GT][rows]. */
static int split_rows_tile(int hd) { return hd <= 64 ? 128 : hd <= 128 ? 64 : 32; }
static int split_ks_floats(int hd, int gt, int rows)
{
    int kt = rows * (hd + 4), rg = ATT_THREADS / (hd / 4);
    return kt > rg * gt * hd ? kt : rg * gt * hd;
}
static size_t split_smem(int hd, int gt, int rows)
{
    return (size_t)(gt * hd + split_ks_floats(hd, gt, rows) + gt * rows) * sizeof(float);
}

/* grid (n_split, Hkv * tiles of GT query heads, n). Block: ROWS cache rows per
 * tile; thread (row, slice) scores one row for HPT heads; thread (column
 * quad, row group) accumulates p V for all GT heads. part holds, per (t, h,
 * split), hd accumulators then max and sum; with one split the block writes
 * the normalized output itself. */
template <int GT, int ROWS>
__global__ void __launch_bounds__(ATT_THREADS, 4)
    attn_split_kernel(const float *__restrict__ q, const float *__restrict__ kc, const float *__restrict__ vc,
                      const int32_t *__restrict__ pos, float *__restrict__ out, float *__restrict__ part, int H,
                      int Hkv, int hd, int n_ctx, int split_rows, int n_split, int ks_floats, float scale)
{
    constexpr int HS = ATT_THREADS / ROWS;      /* head slices in the score phase */
    constexpr int HPT = GT >= HS ? GT / HS : 1; /* heads per thread there */
    extern __shared__ float4 smem4[];
    __shared__ float s_m[GT], s_l[GT], s_corr[GT];
    float *qs = reinterpret_cast<float *>(smem4);
    float *ks = qs + GT * hd;
    float *ps = ks + ks_floats;

    const int tid = threadIdx.x, t = blockIdx.z, split = blockIdx.x;
    const int G = H / Hkv, n_gt = (G + GT - 1) / GT;
    const int kvh = blockIdx.y / n_gt, g0 = (blockIdx.y % n_gt) * GT;
    const int kvw = Hkv * hd, hd4 = hd / 4;
    const int p = clamp_pos(pos[t], n_ctx);
    const int r_begin = split * split_rows, r_end = min(r_begin + split_rows, p + 1);
    if (r_begin >= r_end)
        return; /* past this token's position: the combine skips it */

    for (int i = tid; i < GT * hd; i += ATT_THREADS) {
        int g = i / hd, e = i % hd;
        qs[i] = g0 + g < G ? q[(size_t)t * H * hd + (size_t)(kvh * G + g0 + g) * hd + e] : 0.0f;
    }
    if (tid < GT) {
        s_m[tid] = -INFINITY;
        s_l[tid] = 0.0f;
    }
    const int pv_c = tid % hd4, pv_rg = tid / hd4, RG = ATT_THREADS / hd4;
    const bool pv_on = pv_rg < RG;
    const int sc_r = tid % ROWS, sc_s = tid / ROWS;
    const float *kb = kc + (size_t)kvh * hd, *vb = vc + (size_t)kvh * hd;
    float acc[GT][4];
#pragma unroll
    for (int g = 0; g < GT; g++)
        acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.0f;

    for (int r0 = r_begin; r0 < r_end; r0 += ROWS) {
        const int nr = min(ROWS, r_end - r0);
        __syncthreads(); /* the last tile's readers are done (and q is in) */
        for (int i = tid; i < nr * hd4; i += ATT_THREADS) {
            int r = i / hd4, c4 = i % hd4;
            reinterpret_cast<float4 *>(ks + r * (hd + 4))[c4] =
                reinterpret_cast<const float4 *>(kb + (size_t)(r0 + r) * kvw)[c4];
        }
        __syncthreads();

        /* scores: one row per thread, HPT heads from q in shared memory */
        if (sc_s * HPT < GT) {
            float s[HPT];
#pragma unroll
            for (int j = 0; j < HPT; j++)
                s[j] = 0.0f;
            if (sc_r < nr) {
                const float4 *kr = reinterpret_cast<const float4 *>(ks + sc_r * (hd + 4));
                const float4 *qr = reinterpret_cast<const float4 *>(qs + sc_s * HPT * hd);
                for (int c4 = 0; c4 < hd4; c4++) {
                    float4 kv = kr[c4];
#pragma unroll
                    for (int j = 0; j < HPT; j++) {
                        float4 qv = qr[j * hd4 + c4];
                        s[j] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < HPT; j++)
                ps[(sc_s * HPT + j) * ROWS + sc_r] = sc_r < nr ? s[j] * scale : -INFINITY;
        }
        __syncthreads();

        /* online softmax, one warp per head */
        const int warp = tid / 32, lane = tid % 32;
        for (int g = warp; g < GT; g += ATT_THREADS / 32) {
            float *pr = ps + g * ROWS;
            float mx = -INFINITY;
            for (int r = lane; r < nr; r += 32)
                mx = fmaxf(mx, pr[r]);
            mx = cu_warp_max(mx);
            float m_old = s_m[g], m_new = fmaxf(m_old, mx), sum = 0.0f;
            for (int r = lane; r < nr; r += 32) {
                float e = expf(pr[r] - m_new);
                pr[r] = e;
                sum += e;
            }
            sum = cu_warp_sum(sum);
            if (lane == 0) {
                float corr = expf(m_old - m_new); /* 0 on the first tile */
                s_corr[g] = corr;
                s_l[g] = s_l[g] * corr + sum;
                s_m[g] = m_new;
            }
        }
        __syncthreads();

        /* acc = acc * corr + p V, V rows straight from the cache */
        if (pv_on) {
#pragma unroll
            for (int g = 0; g < GT; g++) {
                float cr = s_corr[g];
                acc[g][0] *= cr;
                acc[g][1] *= cr;
                acc[g][2] *= cr;
                acc[g][3] *= cr;
            }
            for (int r = pv_rg; r < nr; r += RG) {
                float4 v = reinterpret_cast<const float4 *>(vb + (size_t)(r0 + r) * kvw)[pv_c];
#pragma unroll
                for (int g = 0; g < GT; g++) {
                    float pg = ps[g * ROWS + r];
                    acc[g][0] += pg * v.x;
                    acc[g][1] += pg * v.y;
                    acc[g][2] += pg * v.z;
                    acc[g][3] += pg * v.w;
                }
            }
        }
    }

    /* the row groups' partial sums meet in shared memory [RG][GT][hd] */
    __syncthreads();
    float *red = ks;
    if (pv_on) {
#pragma unroll
        for (int g = 0; g < GT; g++)
            reinterpret_cast<float4 *>(red + (pv_rg * GT + g) * hd)[pv_c] =
                make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    }
    __syncthreads();
    for (int i = tid; i < GT * hd; i += ATT_THREADS) {
        int g = i / hd, e = i % hd;
        if (g0 + g >= G)
            continue;
        float sum = 0.0f;
        for (int rg = 0; rg < RG; rg++)
            sum += red[(rg * GT + g) * hd + e];
        int h = kvh * G + g0 + g;
        if (n_split == 1) {
            out[(size_t)t * H * hd + (size_t)h * hd + e] = sum / s_l[g];
        } else {
            float *pp = part + (((size_t)t * H + h) * n_split + split) * (hd + 2);
            pp[e] = sum;
            if (e == 0) {
                pp[hd] = s_m[g];
                pp[hd + 1] = s_l[g];
            }
        }
    }
}

/* out[t][h] = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M) over the splits
 * that reached pos[t]; grid (H, n). */
__global__ void __launch_bounds__(ATT_THREADS)
    attn_combine_kernel(const float *__restrict__ part, const int32_t *__restrict__ pos, float *__restrict__ out,
                        int H, int hd, int n_ctx, int split_rows, int n_split)
{
    __shared__ float w[DEC_MAX_SPLITS];
    const int h = blockIdx.x, t = blockIdx.y;
    const int used = clamp_pos(pos[t], n_ctx) / split_rows + 1;
    const float *pp = part + ((size_t)t * H + h) * n_split * (hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < used; s++)
        M = fmaxf(M, pp[s * (hd + 2) + hd]);
    for (int s = 0; s < used; s++)
        L += pp[s * (hd + 2) + hd + 1] * expf(pp[s * (hd + 2) + hd] - M);
    for (int s = threadIdx.x; s < used; s += blockDim.x)
        w[s] = expf(pp[s * (hd + 2) + hd] - M);
    __syncthreads();
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < used; s++)
            o += pp[s * (hd + 2) + e] * w[s];
        out[(size_t)t * H * hd + (size_t)h * hd + e] = o / L;
    }
}

/* -------------------------------------------------------- tiled prefill */

#define TILE_BK 32

static constexpr int tiled_bq(int hdp) { return hdp > 128 ? 16 : 32; }
static size_t tiled_smem(int hd, int bq)
{
    return (size_t)(bq * (hd + 1) + TILE_BK * (hd + 1) + TILE_BK * hd + bq * (TILE_BK + 1)) * sizeof(float);
}

/* grid (query tiles of BQ, H). Thread (ty 0..15, tx 0..7) owns query rows
 * ty*RQ.., keys tx + 8c of each tile and output columns tx + 8c; the 8
 * threads of a row are adjacent lanes, so row max and sum are 3 shuffles. */
template <int HDP, int BQ>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_tiled_kernel(const float *__restrict__ q, const float *__restrict__ kc, const float *__restrict__ vc,
                      const int32_t *__restrict__ pos, float *__restrict__ out, int n, int H, int Hkv, int hd,
                      int n_ctx, float scale)
{
    constexpr int RQ = BQ / 16, CK = TILE_BK / 8, CO = HDP / 8;
    extern __shared__ float4 smem4[];
    __shared__ int s_pos[BQ];
    const int ld = hd + 1;
    float *Qs = reinterpret_cast<float *>(smem4); /* [BQ][ld] */
    float *Ks = Qs + BQ * ld;                     /* [BK][ld] */
    float *Vs = Ks + TILE_BK * ld;                /* [BK][hd] */
    float *Ps = Vs + TILE_BK * hd;                /* [BQ][BK + 1] */

    const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;
    const int t0 = blockIdx.x * BQ, h = blockIdx.y, kvh = h / (H / Hkv);
    const size_t qw = (size_t)H * hd, kvw = (size_t)Hkv * hd;
    if (tid < BQ)
        s_pos[tid] = t0 + tid < n ? clamp_pos(pos[t0 + tid], n_ctx) : -1;
    for (int i = tid; i < BQ * hd; i += ATT_THREADS) {
        int r = i / hd, e = i % hd;
        Qs[r * ld + e] = t0 + r < n ? q[(t0 + r) * qw + (size_t)h * hd + e] : 0.0f;
    }
    __syncthreads();
    int kmax = -1, myp[RQ];
    for (int r = 0; r < BQ; r++)
        kmax = max(kmax, s_pos[r]);
#pragma unroll
    for (int i = 0; i < RQ; i++)
        myp[i] = s_pos[ty * RQ + i];

    float m[RQ], l[RQ], o[RQ][CO];
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < CO; c++)
            o[i][c] = 0.0f;
    }

    for (int j0 = 0; j0 <= kmax; j0 += TILE_BK) {
        __syncthreads(); /* the last tile's readers are done */
        for (int i = tid; i < TILE_BK * hd; i += ATT_THREADS) {
            int r = i / hd, e = i % hd, j = j0 + r;
            bool in = j <= kmax;
            size_t off = (size_t)j * kvw + (size_t)kvh * hd + e;
            Ks[r * ld + e] = in ? kc[off] : 0.0f;
            Vs[r * hd + e] = in ? vc[off] : 0.0f;
        }
        __syncthreads();

        float s[RQ][CK];
#pragma unroll
        for (int i = 0; i < RQ; i++)
#pragma unroll
            for (int c = 0; c < CK; c++)
                s[i][c] = 0.0f;
#pragma unroll 4
        for (int e = 0; e < hd; e++) {
            float qv[RQ];
#pragma unroll
            for (int i = 0; i < RQ; i++)
                qv[i] = Qs[(ty * RQ + i) * ld + e];
#pragma unroll
            for (int c = 0; c < CK; c++) {
                float kv = Ks[(tx + 8 * c) * ld + e];
#pragma unroll
                for (int i = 0; i < RQ; i++)
                    s[i][c] += qv[i] * kv;
            }
        }

#pragma unroll
        for (int i = 0; i < RQ; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < CK; c++) {
                int j = j0 + tx + 8 * c;
                s[i][c] = j <= myp[i] ? s[i][c] * scale : -INFINITY;
                mx = fmaxf(mx, s[i][c]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            float m_new = fmaxf(m[i], mx), corr = 1.0f, sum = 0.0f;
            if (m_new != -INFINITY) { /* else: nothing visible yet (a padding row) */
                corr = expf(m[i] - m_new);
#pragma unroll
                for (int c = 0; c < CK; c++) {
                    s[i][c] = expf(s[i][c] - m_new);
                    sum += s[i][c];
                }
            } else {
#pragma unroll
                for (int c = 0; c < CK; c++)
                    s[i][c] = 0.0f;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            sum += __shfl_xor_sync(0xffffffffu, sum, 4);
            l[i] = l[i] * corr + sum;
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < CO; c++)
                o[i][c] *= corr;
#pragma unroll
            for (int c = 0; c < CK; c++)
                Ps[(ty * RQ + i) * (TILE_BK + 1) + tx + 8 * c] = s[i][c];
        }
        __syncthreads();

        const int jn = min(TILE_BK, kmax - j0 + 1);
        for (int j = 0; j < jn; j++) {
            float pv[RQ];
#pragma unroll
            for (int i = 0; i < RQ; i++)
                pv[i] = Ps[(ty * RQ + i) * (TILE_BK + 1) + j];
#pragma unroll
            for (int c = 0; c < CO; c++) {
                int e = tx + 8 * c;
                if (e < hd) {
                    float v = Vs[j * hd + e];
#pragma unroll
                    for (int i = 0; i < RQ; i++)
                        o[i][c] += pv[i] * v;
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < RQ; i++) {
        int t = t0 + ty * RQ + i;
        if (t >= n)
            continue;
#pragma unroll
        for (int c = 0; c < CO; c++) {
            int e = tx + 8 * c;
            if (e < hd)
                out[t * qw + (size_t)h * hd + e] = o[i][c] / l[i];
        }
    }
}

/* ---------------------------------------------------------------- host */

typedef struct attn_shape {
    int n, H, Hkv, hd, n_ctx;
    bool split;            /* the decode path */
    int gt, rows;          /* query heads per block, cache rows per tile */
    int split_rows, n_split;
} attn_shape;

static int pow2_at_least(int g)
{
    int p = 1;
    while (p < g && p < DEC_MAX_GT)
        p *= 2;
    return p;
}

static attn_shape plan(const cu_ctx *c, const gk_node *nd)
{
    attn_shape a;
    a.n = (int)nd->src[0]->rows;
    a.H = nd->i[0];
    a.Hkv = nd->i[1];
    a.hd = nd->i[2];
    a.n_ctx = (int)nd->src[4]->rows;
    a.split = a.n <= DEC_MAX_TOKENS && a.hd % 4 == 0 && cu_aligned16(nd->src[4]->data) &&
              cu_aligned16(nd->src[5]->data);
    a.gt = pow2_at_least(a.H / a.Hkv);
    a.rows = split_rows_tile(a.hd);
    /* splits enough for ~4 blocks per SM at a full cache, each a whole number
     * of tiles */
    int per_split = a.Hkv * (int)cu_div_up(a.H / a.Hkv, a.gt) * a.n;
    int tiles = (int)cu_div_up(a.n_ctx, a.rows);
    int want = (int)cu_div_up(4 * c->n_sm, per_split);
    if (want > tiles)
        want = tiles;
    if (want > DEC_MAX_SPLITS)
        want = DEC_MAX_SPLITS;
    if (want < 1)
        want = 1;
    a.split_rows = (int)cu_div_up(tiles, want) * a.rows;
    a.n_split = (int)cu_div_up(a.n_ctx, a.split_rows);
    return a;
}

size_t cu_attn_scratch(const cu_ctx *c, const gk_node *nd)
{
    attn_shape a = plan(c, nd);
    if (!a.split || a.n_split == 1)
        return 0;
    return (size_t)a.n * a.H * a.n_split * (a.hd + 2) * sizeof(float);
}

template <int GT>
static void split_launch(cu_ctx *c, const attn_shape &a, const gk_node *nd, float *part)
{
    dim3 grid(a.n_split, a.Hkv * cu_div_up(a.H / a.Hkv, GT), a.n);
    int ksf = split_ks_floats(a.hd, GT, a.rows);
    size_t smem = split_smem(a.hd, GT, a.rows);
    const float *q = (const float *)nd->src[0]->data;
    const float *kc = (const float *)nd->src[4]->data, *vc = (const float *)nd->src[5]->data;
    const int32_t *pos = (const int32_t *)nd->src[3]->data;
    float *out = (float *)nd->dst->data;
#define SPLIT_ARGS q, kc, vc, pos, out, part, a.H, a.Hkv, a.hd, a.n_ctx, a.split_rows, a.n_split, ksf, nd->f[0]
    if (a.rows == 128)
        attn_split_kernel<GT, 128><<<grid, ATT_THREADS, smem, c->stream>>>(SPLIT_ARGS);
    else if (a.rows == 64)
        attn_split_kernel<GT, 64><<<grid, ATT_THREADS, smem, c->stream>>>(SPLIT_ARGS);
    else
        attn_split_kernel<GT, 32><<<grid, ATT_THREADS, smem, c->stream>>>(SPLIT_ARGS);
#undef SPLIT_ARGS
}

template <int HDP>
static void tiled_launch(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    constexpr int BQ = tiled_bq(HDP);
    dim3 grid(cu_div_up(a.n, BQ), a.H);
    attn_tiled_kernel<HDP, BQ><<<grid, ATT_THREADS, tiled_smem(a.hd, BQ), c->stream>>>(
        (const float *)nd->src[0]->data, (const float *)nd->src[4]->data, (const float *)nd->src[5]->data,
        (const int32_t *)nd->src[3]->data, (float *)nd->dst->data, a.n, a.H, a.Hkv, a.hd, a.n_ctx, nd->f[0]);
}

template <int HDP>
static gk_status tiled_setup(gk_err *err)
{
    constexpr int BQ = tiled_bq(HDP);
    cudaError_t e = cudaFuncSetAttribute(attn_tiled_kernel<HDP, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)tiled_smem(HDP, BQ));
    if (e != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: attention kernel for head dim %d needs %zu bytes of shared memory: %s",
                          HDP, tiled_smem(HDP, BQ), cudaGetErrorString(e));
    return GK_OK;
}

gk_status cu_attn_setup(cu_ctx *c, gk_err *err)
{
    gk_status s = tiled_setup<32>(err);
    if (s == GK_OK)
        s = tiled_setup<64>(err);
    if (s == GK_OK)
        s = tiled_setup<128>(err);
    if (s == GK_OK)
        s = tiled_setup<256>(err);
    return s;
}

gk_status cu_attn(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *k = nd->src[1], *v = nd->src[2];
    attn_shape a = plan(c, nd);
    int kvw = a.Hkv * a.hd;
    bool v4 = kvw % 4 == 0 && cu_aligned16(k->data) && cu_aligned16(v->data) && cu_aligned16(nd->src[4]->data) &&
              cu_aligned16(nd->src[5]->data);
#define STORE_ARGS (const float *)k->data, (const float *)v->data, (const int32_t *)nd->src[3]->data, \
                   (float *)nd->src[4]->data, (float *)nd->src[5]->data, kvw, a.n_ctx, c->err_dev
    if (v4)
        kv_store_kernel<true><<<a.n, ATT_THREADS, 0, c->stream>>>(STORE_ARGS);
    else
        kv_store_kernel<false><<<a.n, ATT_THREADS, 0, c->stream>>>(STORE_ARGS);
#undef STORE_ARGS
    gk_status s = cu_launch_check(nd, "kv_store_kernel", err);
    if (s != GK_OK)
        return s;

    if (!a.split) {
        if (a.hd <= 32)
            tiled_launch<32>(c, a, nd);
        else if (a.hd <= 64)
            tiled_launch<64>(c, a, nd);
        else if (a.hd <= 128)
            tiled_launch<128>(c, a, nd);
        else
            tiled_launch<256>(c, a, nd);
        return cu_launch_check(nd, "attn_tiled_kernel", err);
    }
    float *part = a.n_split > 1 ? (float *)c->scratch : nullptr;
    switch (a.gt) {
    case 1: split_launch<1>(c, a, nd, part); break;
    case 2: split_launch<2>(c, a, nd, part); break;
    case 4: split_launch<4>(c, a, nd, part); break;
    default: split_launch<8>(c, a, nd, part); break;
    }
    if ((s = cu_launch_check(nd, "attn_split_kernel", err)) != GK_OK || a.n_split == 1)
        return s;
    attn_combine_kernel<<<dim3(a.H, a.n), ATT_THREADS, 0, c->stream>>>(
        part, (const int32_t *)nd->src[3]->data, (float *)nd->dst->data, a.H, a.hd, a.n_ctx, a.split_rows,
        a.n_split);
    return cu_launch_check(nd, "attn_combine_kernel", err);
}
