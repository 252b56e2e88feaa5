/* gemv.cu - the fused decode GEMV (cu_gemv_desc in cuda_common.cuh): for
 * n <= CU_GEMV_MAX_TOKENS tokens, up to CU_GEMV_MAX_MATS matrices reading one
 * input, with the norm that makes the input (prologue) and the residual add
 * or activation that reads the outputs (epilogue), in one launch.
 *
 * Decode is memory-bound: the time is the time to stream W once, so the
 * kernel is built around keeping HBM busy from the first microsecond:
 *   - Work: a tile is a few rows of one matrix (SWIGLU: row r of gate and row
 *     r of up side by side, so the thread that finishes the tile can apply
 *     silu(gate) * up). A block of GEMV_WARPS warps takes tiles
 *     blockIdx.x, + gridDim.x, ...; inside a tile the warps are S K-slices
 *     times GEMV_WARPS / S row groups, each warp R rows. S grows (1..8) for
 *     short matrices, so that there are still enough tiles to fill the GPU.
 *   - Loads: every lane keeps 4..8 16-byte weight loads in flight
 *     (ld.global.nc.L1::no_allocate), a rolling pipeline that runs across
 *     tile boundaries. The first of them are issued before cu_pdl_wait(),
 *     which is legal because no kernel writes weights: with PDL they overlap
 *     the previous kernel's tail (measured on H200: 0.9-2.5 us less per
 *     launch than without, by shape).
 *   - Prologue (after the wait): each block reads x (n * in floats, from
 *     L2), computes the row statistics itself (fixed-order tree sums) and
 *     keeps h = norm(x) (or x) in shared memory, in a layout where each lane
 *     reads its 16 bytes of h without bank conflicts. Block 0 alone writes
 *     norm_out. Recomputing per block costs L2 reads (n * in floats per block)
 *     and needs no grid-wide synchronisation.
 *   - Reduction: lanes sum their K-slice in order, warps by shuffle tree,
 *     the S slices in shared memory in slice order: the same bits every run.
 *     One thread per (row group, token) adds the bias, writes y and the
 *     epilogue with the exact float formulas of elementwise.cu.
 * Not here: more tokens (cuBLAS in linear.cu), quantized weights, a K split
 * across blocks (it would need a second pass or atomics), inputs whose h does
 * not fit in shared memory (n * in > GEMV_MAX_H; the caller falls back).
 */
#include "cuda_common.cuh"

#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
/* Blocks per SM the grid is sized for (and __launch_bounds__ budgets
 * registers for: up to 128 a thread). (#ifndef: tuning from the harness.) */
#ifndef GEMV_BLOCKS_PER_SM
#define GEMV_BLOCKS_PER_SM 2
#endif
#define GEMV_MAX_IN 16384
/* Floats of h (n * in) one block keeps in shared memory: 96 KB, two blocks
 * per SM on H100/H200, one on A100 and smaller parts. */
#define GEMV_MAX_H 24576

/* Rows per warp: two for one or two tokens, four for more, where sharing the
 * h reads among rows keeps shared-memory traffic below its bandwidth. */
static __host__ __device__ constexpr int gemv_rows(int nt) { return nt <= 2 ? 2 : 4; }
/* 16-byte weight loads each lane keeps in flight: 8 for one or two tokens
 * (96..121 registers, no spills); 4 for more, whose accumulators need the
 * registers (measured on H200: 8 there is ~5% slower). */
#ifndef GEMV_LOADS_FEW
#define GEMV_LOADS_FEW 8
#endif
static __host__ __device__ constexpr int gemv_loads(int nt) { return nt <= 2 ? GEMV_LOADS_FEW : 4; }

/* What the kernel needs of a cu_gemv_desc plus the work split. */
struct gemv_args {
    const void *W[CU_GEMV_MAX_MATS];
    const void *bias[CU_GEMV_MAX_MATS];
    float *y[CU_GEMV_MAX_MATS];
    int out[CU_GEMV_MAX_MATS];
    int first[CU_GEMV_MAX_MATS + 1]; /* tiles of matrix k: first[k] .. first[k + 1] - 1 */
    int tiles;                       /* first[count] */
    int in, nv;                      /* input width, 16-byte vectors per row */
    int S, ns;                       /* K-slices per tile, steps per warp and tile */
    int rpw;                         /* rows per warp of one matrix (R, SWIGLU R / 2) */
    int pro, epi, norm_type;
    const void *norm_w, *norm_b;
    float eps;
    const float *x, *res;
    float *norm_out, *res_out, *act_out;
};

/* ------------------------------------------------------------- helpers */

/* a.f[k] for a runtime k, by selects: the parameters stay in the constant bank. */
#define GEMV_PICK(f, k) ((k) == 2 ? a.f[2] : (k) == 1 ? a.f[1] : a.f[0])

/* Matrix and first row of row group rw in tile `tile`. */
static __device__ __forceinline__ void gemv_tile(const gemv_args &a, int tile, int rw, int &k, int &row0)
{
    k = tile >= a.first[2] ? 2 : tile >= a.first[1] ? 1 : 0;
    row0 = ((tile - GEMV_PICK(first, k)) * (GEMV_WARPS / a.S) + rw) * a.rpw;
}

/* The R weight rows a warp of row group rw streams in tile `tile`; a row
 * past the end reads the last row instead (valid memory, result unused). */
template <typename T, int R>
static __device__ __forceinline__ void gemv_row_ptrs(const gemv_args &a, int tile, int rw, const uint4 *(&p)[R])
{
    int k, row0;
    gemv_tile(a, tile, rw, k, row0);
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int m = a.epi == CU_EPI_SWIGLU ? (r & 1) : k;
        const int row = a.epi == CU_EPI_SWIGLU ? row0 + (r >> 1) : row0 + r;
        const int out = GEMV_PICK(out, m);
        const T *W = (const T *)GEMV_PICK(W, m);
        p[r] = reinterpret_cast<const uint4 *>(W + (size_t)min(row, out - 1) * a.in);
    }
}

static __device__ __forceinline__ float gemv_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

static __device__ __forceinline__ float gemv_gelu(float v)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
}

/* y (and the epilogue) of one row of matrix m, token t, from its dot product. */
template <typename T>
static __device__ __forceinline__ float gemv_store(const gemv_args &a, int m, int t, int row, float s)
{
    const T *bias = (const T *)GEMV_PICK(bias, m);
    const int out = GEMV_PICK(out, m);
    const float v = bias ? s + cu_to_f32(bias[row]) : s;
    const size_t i = (size_t)t * out + row;
    GEMV_PICK(y, m)[i] = v;
    if (a.epi == CU_EPI_RESIDUAL)
        a.res_out[i] = a.res[i] + v;
    else if (a.epi == CU_EPI_GELU)
        a.act_out[i] = gemv_gelu(v);
    return v;
}

/* Sums of p[t] over the block, into tot[t]; red holds GEMV_WARPS * NT floats.
 * Fixed order: shuffle tree per warp, then warps in order. */
template <int NT>
static __device__ __forceinline__ void gemv_block_sums(float (&p)[NT], float *red, float *tot)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = cu_warp_sum(p[t]);
        if (lane == 0)
            red[warp * NT + t] = v;
    }
    __syncthreads();
    if (threadIdx.x < NT) {
        float s = 0.0f;
        for (int w = 0; w < GEMV_WARPS; w++)
            s += red[w * NT + threadIdx.x];
        tot[threadIdx.x] = s;
    }
    __syncthreads();
}

/* h = norm(x) (or x) of the NT tokens into shared memory hs, laid out
 * [NT][QV][nv] so that each lane reads its 16 bytes of h without bank
 * conflicts; block 0 alone writes norm_out. Row statistics by fixed-order
 * tree sums. Ends with a __syncthreads. */
template <typename T, int NT>
static __device__ __forceinline__ void gemv_prologue(const gemv_args &a, float4 *hs, float *red, float *mean,
                                                     float *scale)
{
    constexpr int VEC = 16 / sizeof(T), QV = VEC / 4;
    const int nv = a.nv;
    const int in = a.in, in4 = in / 4;
    const float4 *x4 = reinterpret_cast<const float4 *>(a.x);
    if (a.pro != CU_PRO_NONE) {
        float p[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            p[t] = 0.0f;
#pragma unroll 1
        for (int c = threadIdx.x; c < in4; c += GEMV_THREADS)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float4 v = x4[(size_t)t * in4 + c];
                p[t] += a.pro == CU_PRO_RMS ? v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w
                                            : v.x + v.y + v.z + v.w;
            }
        gemv_block_sums<NT>(p, red, scale);
        if (a.pro == CU_PRO_RMS) {
            if (threadIdx.x < NT)
                scale[threadIdx.x] = 1.0f / sqrtf(scale[threadIdx.x] / (float)in + a.eps);
        } else {
            if (threadIdx.x < NT)
                mean[threadIdx.x] = scale[threadIdx.x] / (float)in;
            __syncthreads();
#pragma unroll
            for (int t = 0; t < NT; t++)
                p[t] = 0.0f;
    #pragma unroll 1
        for (int c = threadIdx.x; c < in4; c += GEMV_THREADS)
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    float4 v = x4[(size_t)t * in4 + c];
                    const float m = mean[t];
                    p[t] += (v.x - m) * (v.x - m) + (v.y - m) * (v.y - m) + (v.z - m) * (v.z - m) +
                            (v.w - m) * (v.w - m);
                }
            gemv_block_sums<NT>(p, red, scale);
            if (threadIdx.x < NT)
                scale[threadIdx.x] = 1.0f / sqrtf(scale[threadIdx.x] / (float)in + a.eps);
        }
        __syncthreads();
    }
    const bool write_norm = blockIdx.x == 0 && a.norm_out;
#pragma unroll 1
    for (int c = threadIdx.x; c < in4; c += GEMV_THREADS) {
        float w[4] = {1.0f, 1.0f, 1.0f, 1.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (a.pro != CU_PRO_NONE)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                w[e] = cu_ld_elem(a.norm_w, a.norm_type, 4 * c + e);
                if (a.norm_b)
                    b[e] = cu_ld_elem(a.norm_b, a.norm_type, 4 * c + e);
            }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float4 v = x4[(size_t)t * in4 + c];
            float h[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (a.pro == CU_PRO_RMS) {
                    h[e] = w[e] * (h[e] * scale[t]);
                } else if (a.pro == CU_PRO_LAYER) {
                    h[e] = (h[e] - mean[t]) * scale[t] * w[e];
                    if (a.norm_b)
                        h[e] = h[e] + b[e];
                }
            }
            const float4 hv = make_float4(h[0], h[1], h[2], h[3]);
            hs[(t * QV + c % QV) * nv + c / QV] = hv;
            if (write_norm)
                reinterpret_cast<float4 *>(a.norm_out)[(size_t)t * in4 + c] = hv;
        }
    }
    __syncthreads();

}

/* ------------------------------------------------------------- kernel */

/* grid: at most tiles blocks; dynamic shared memory NT * in floats (h). */
template <typename T, int NT>
__global__ void __launch_bounds__(GEMV_THREADS, GEMV_BLOCKS_PER_SM) gemv_kernel(const gemv_args a)
{
    constexpr int VEC = 16 / sizeof(T), QV = VEC / 4;
    constexpr int R = gemv_rows(NT);
    constexpr int U = gemv_loads(NT) / R; /* steps in flight */
    extern __shared__ float4 hs[];                  /* [NT][QV][nv]: h, 16 bytes per lane */
    __shared__ float part[2][GEMV_WARPS][NT][R];    /* warp sums of a tile (two tiles alternate) */
    __shared__ float red[GEMV_WARPS * NT], mean[NT], scale[NT];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int S = a.S, ns = a.ns, nv = a.nv;
    const int j = warp % S, rw = warp / S;
    const int total = (a.tiles - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x * ns;

    /* the load cursor: tile lt, step ls, rows lp */
    uint4 buf[U][R];
    int lt = blockIdx.x, ls = 0;
    const uint4 *lp[R];
    gemv_row_ptrs<T, R>(a, lt, rw, lp);
#define GEMV_LOAD(dst)                                                   \
    do {                                                                 \
        const int v_ = min(lane + 32 * (j + S * ls), nv - 1);            \
        _Pragma("unroll") for (int r = 0; r < R; r++)                    \
            (dst)[r] = cu_ld_nc16(lp[r] + v_);                          \
        if (++ls == ns) {                                                \
            ls = 0;                                                      \
            lt += gridDim.x;                                             \
            if (lt < a.tiles)                                            \
                gemv_row_ptrs<T, R>(a, lt, rw, lp);                      \
        }                                                                \
    } while (0)
#pragma unroll
    for (int u = 0; u < U; u++)
        if (u < total)
            GEMV_LOAD(buf[u]);

    /* everything above touched only weights; from here on x, res and the
     * outputs, which kernels before this one write or read */
    cu_pdl_enter();

    /* ---- prologue: h = norm(x) or x, into shared memory */
    gemv_prologue<T, NT>(a, hs, red, mean, scale);

    /* ---- the stream: consume step g while step g + U loads */
    float acc[NT][R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[t][r] = 0.0f;
    int ut = blockIdx.x, us = 0, par = 0;
    for (int g0 = 0; g0 < total; g0 += U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (g0 + u >= total) /* the same for the whole block */
                break;
            uint4 wv[R];
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[r] = buf[u][r];
            if (g0 + u + U < total)
                GEMV_LOAD(buf[u]);
            const int v = lane + 32 * (j + S * us);
            if (v < nv) {
                float wf[R][VEC];
#pragma unroll
                for (int r = 0; r < R; r++)
                    cu_unpack16(wv[r], wf[r], T());
#pragma unroll
                for (int t = 0; t < NT; t++)
#pragma unroll
                    for (int q = 0; q < QV; q++) {
                        const float4 h = hs[(t * QV + q) * nv + v];
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            acc[t][r] = fmaf(wf[r][4 * q], h.x, acc[t][r]);
                            acc[t][r] = fmaf(wf[r][4 * q + 1], h.y, acc[t][r]);
                            acc[t][r] = fmaf(wf[r][4 * q + 2], h.z, acc[t][r]);
                            acc[t][r] = fmaf(wf[r][4 * q + 3], h.w, acc[t][r]);
                        }
                    }
            }
            if (++us < ns)
                continue;
            /* ---- tile ut done: warp sums, slices in order, outputs */
#pragma unroll
            for (int t = 0; t < NT; t++)
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float s = cu_warp_sum(acc[t][r]);
                    if (lane == 0)
                        part[par][warp][t][r] = s;
                    acc[t][r] = 0.0f;
                }
            __syncthreads();
            if (threadIdx.x < (GEMV_WARPS / S) * NT) {
                const int fw = threadIdx.x / NT, t = threadIdx.x % NT;
                float s[R];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    s[r] = part[par][fw * S][t][r];
                    for (int q = 1; q < S; q++)
                        s[r] += part[par][fw * S + q][t][r];
                }
                int k, row0;
                gemv_tile(a, ut, fw, k, row0);
                if (a.epi == CU_EPI_SWIGLU) {
#pragma unroll
                    for (int p = 0; p < R / 2; p++) {
                        const int row = row0 + p;
                        if (row < a.out[0]) {
                            const float g = gemv_store<T>(a, 0, t, row, s[2 * p]);
                            const float up = gemv_store<T>(a, 1, t, row, s[2 * p + 1]);
                            a.act_out[(size_t)t * a.out[0] + row] = gemv_silu_mul(g, up);
                        }
                    }
                } else {
                    const int out = GEMV_PICK(out, k);
#pragma unroll
                    for (int r = 0; r < R; r++)
                        if (row0 + r < out)
                            gemv_store<T>(a, k, t, row0 + r, s[r]);
                }
            }
            us = 0;
            ut += gridDim.x;
            par ^= 1;
        }
    }
#undef GEMV_LOAD
}


/* ------------------------------------------------------------- host */

static int gemv_vec(gk_dtype t) { return t == GK_DTYPE_F32 ? 4 : 8; }

static bool gemv_dtype_ok(gk_dtype t)
{
    return t == GK_DTYPE_F32 || t == GK_DTYPE_F16 || t == GK_DTYPE_BF16;
}

bool cu_gemv_ok(const cu_gemv_desc *d)
{
    if (!d || d->n < 1 || d->n > CU_GEMV_MAX_TOKENS || d->count < 1 || d->count > CU_GEMV_MAX_MATS)
        return false;
    if (!gemv_dtype_ok(d->wtype) || d->in < 1 || d->in > GEMV_MAX_IN || d->in % gemv_vec(d->wtype) != 0 ||
        d->n * d->in > GEMV_MAX_H)
        return false;
    if (!d->x || !cu_aligned16(d->x))
        return false;
    for (int k = 0; k < d->count; k++)
        if (!d->W[k] || !cu_aligned16(d->W[k]) || !d->y[k] || d->out[k] < 1)
            return false;
    if (d->pro != CU_PRO_NONE && d->pro != CU_PRO_RMS && d->pro != CU_PRO_LAYER)
        return false;
    if (d->pro != CU_PRO_NONE && (!gemv_dtype_ok(d->norm_type) || !d->norm_w || (d->pro == CU_PRO_RMS && d->norm_b)))
        return false;
    if (d->norm_out && (d->pro == CU_PRO_NONE || !cu_aligned16(d->norm_out)))
        return false;
    switch (d->epi) {
    case CU_EPI_NONE: return true;
    case CU_EPI_RESIDUAL: return d->count == 1 && d->res && d->res_out;
    case CU_EPI_SWIGLU: return d->count == 2 && d->out[0] == d->out[1] && d->act_out;
    case CU_EPI_GELU: return d->count == 1 && d->act_out;
    default: return false;
    }
}

/* Tiles of d with S K-slices per tile (R rows per warp); fills first[]. */
static int gemv_tiles(const cu_gemv_desc *d, int R, int S, int first[CU_GEMV_MAX_MATS + 1])
{
    const bool pair = d->epi == CU_EPI_SWIGLU;
    const int per_tile = (GEMV_WARPS / S) * (pair ? R / 2 : R);
    first[0] = 0;
    for (int k = 0; k < CU_GEMV_MAX_MATS; k++) {
        const bool used = pair ? k == 0 : k < d->count;
        first[k + 1] = first[k] + (used ? (int)cu_div_up(d->out[k], per_tile) : 0);
    }
    return first[CU_GEMV_MAX_MATS];
}

/* Instantiate gemv_kernel for the token count n (1..CU_GEMV_MAX_TOKENS). */
template <typename T, int NT>
static cudaError_t gemv_launch(cu_ctx *c, int n, const gemv_args &a, unsigned grid)
{
    if (n == NT) {
        const size_t smem = (size_t)NT * a.in * sizeof(float);
        if (smem > 40 * 1024) { /* dynamic + static past the 48 KB default */
            cudaError_t e = cudaFuncSetAttribute(gemv_kernel<T, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem);
            if (e != cudaSuccess)
                return e;
        }
        return cu_launch(c, gemv_kernel<T, NT>, dim3(grid), dim3(GEMV_THREADS), smem, a);
    }
    if constexpr (NT < CU_GEMV_MAX_TOKENS)
        return gemv_launch<T, NT + 1>(c, n, a, grid);
    return cudaErrorInvalidValue;
}


gk_status cu_gemv(cu_ctx *c, const cu_gemv_desc *d, const gk_node *nd, gk_err *err)
{
    if (!cu_gemv_ok(d))
        return gk_err_set(err, GK_ERR_INTERNAL, "cuda: fused GEMV given a descriptor it does not take");
    gemv_args a = {};
    for (int k = 0; k < CU_GEMV_MAX_MATS; k++) {
        const int s = k < d->count ? k : d->count - 1; /* unused slots repeat a valid one */
        a.W[k] = d->W[s];
        a.bias[k] = d->bias[s];
        a.y[k] = d->y[s];
        a.out[k] = d->out[s];
    }
    const int R = gemv_rows(d->n), vec = gemv_vec(d->wtype);
    a.in = d->in;
    a.nv = d->in / vec;
    /* split K across more warps of a block while that is what it takes to
     * give every block of the grid a tile, and every slice a full step */
    const int want = GEMV_BLOCKS_PER_SM * (c->n_sm > 0 ? c->n_sm : 1);
    a.S = 1;
    while (a.S < GEMV_WARPS && gemv_tiles(d, R, a.S, a.first) < want && a.nv >= 64 * a.S)
        a.S *= 2;
    a.tiles = gemv_tiles(d, R, a.S, a.first);
    a.ns = (int)cu_div_up(a.nv, 32 * a.S);
    a.rpw = d->epi == CU_EPI_SWIGLU ? R / 2 : R;
    a.pro = d->pro;
    a.epi = d->epi;
    a.norm_type = d->norm_type;
    a.norm_w = d->norm_w;
    a.norm_b = d->pro == CU_PRO_LAYER ? d->norm_b : nullptr;
    a.eps = d->eps;
    a.x = d->x;
    a.res = d->res;
    a.norm_out = d->norm_out;
    a.res_out = d->res_out;
    a.act_out = d->act_out;
    const unsigned grid = (unsigned)(a.tiles < want ? a.tiles : want);
    cudaError_t e = cudaSuccess;
    CU_WEIGHT_SWITCH(d->wtype, T, { e = gemv_launch<T, 1>(c, d->n, a, grid); });
    return cu_launch_result(e, nd, "gemv_kernel", err);
}
