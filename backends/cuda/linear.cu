/* linear.cu - LINEAR (y = x W^T + b) on CUDA: a weight-streaming GEMV for a
 * few tokens, cuBLAS on tensor cores for more.
 *
 * Decode (n <= GEMV_MAX_TOKENS) is memory-bound: the time is the time to read
 * W once. gemv_vec_kernel gives each warp R weight rows; each lane loads 16
 * bytes of every row per step (8 F16/BF16 or 4 F32 weights) through the
 * non-coherent path without allocating in L1, with GEMV_UNROLL steps in flight
 * before the first use, so that L1 keeps x, which every warp of the block
 * reads (x is at most 8 rows and stays in L1/L2). Accumulation is float; the
 * warp's partial sums meet by shuffles and lane 0 adds the bias and stores.
 * Rows or pointers not 16-byte aligned take gemv_scalar_kernel (one warp per
 * row, scalar loads): correct, not fast.
 *
 * Prefill (more tokens) is compute-bound: cuBLAS GEMM, column-major view
 * y^T[out][n] = W[out][in] . x^T[in][n], i.e. op_T on W (stored [in] x [out]
 * column-major) and op_N on x. F16/BF16 weights: x is first rounded to the
 * weight dtype into scratch (that rounding is the only extra error, bounded by
 * ~2^-11 (F16) or 2^-8 (BF16) of sum|x*w|), accumulated in float
 * (CUBLAS_COMPUTE_32F), output float. F32 weights: plain FP32 GEMM (no TF32,
 * the default math mode). Bias is a separate small kernel.
 * Consecutive LINEAR nodes that read the same x (q, k, v; gate, up) share one
 * launch: one grid whose blocks are split among the matrices. Decode-sized
 * LINEAR nodes mostly go to gemv.cu's fused GEMV instead; this one takes
 * what that declines (wide inputs at 8 tokens, odd alignment).
 * Not here: quantized weights, split-K GEMV for very short matrices.
 */
#include "cuda_common.cuh"

#include <type_traits>

#define GEMV_MAX_TOKENS 8
#define GEMV_WARPS 4

/* --------------------------------------------------------------- helpers */

/* ------------------------------------------------------------------ GEMV */

/* Steps of 16 bytes per lane and row issued before the first is used. */
template <int NT> struct gemv_unroll {
    static constexpr int value = NT == 1 ? 4 : NT <= 4 ? 2 : 1;
};

/* y[t][row] = sum_i W[row][i] x[t][i] (+ bias[row]) for NT tokens. Block:
 * GEMV_WARPS warps, warp w owns rows (block * GEMV_WARPS + w) * R .. + R-1.
 * Needs in % (16 / sizeof(T)) == 0 and W, x 16-byte aligned. */
/* Up to GEMV_GROUP matrices that read the same x (q, k and v; gate and up),
 * done by one launch: matrix k owns blocks first[k] .. first[k + 1] - 1. */
#define GEMV_GROUP 3 /* GEMV_PICK below is written for 3 */
template <typename T> struct gemv_group {
    const T *W[GEMV_GROUP];
    const T *bias[GEMV_GROUP];
    float *y[GEMV_GROUP];
    int out[GEMV_GROUP];
    unsigned first[GEMV_GROUP + 1];
};

template <typename T, int NT, int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32, 4)
    gemv_vec_kernel(const gemv_group<T> grp, const float *__restrict__ x, int in)
{
    cu_pdl_enter();
    constexpr int VEC = 16 / sizeof(T);
    constexpr int U = gemv_unroll<NT>::value;
    /* which matrix: selects on constant indices, so the parameters stay in
     * the constant bank instead of being copied to local memory */
    const bool k1 = blockIdx.x >= grp.first[1], k2 = blockIdx.x >= grp.first[2];
#define GEMV_PICK(f) (k2 ? grp.f[2] : k1 ? grp.f[1] : grp.f[0])
    const T *__restrict__ W = GEMV_PICK(W);
    const T *__restrict__ bias = GEMV_PICK(bias);
    float *__restrict__ y = GEMV_PICK(y);
    const int out = GEMV_PICK(out);
    const unsigned first = GEMV_PICK(first);
#undef GEMV_PICK
    const int lane = threadIdx.x & 31;
    const int row0 = ((blockIdx.x - first) * GEMV_WARPS + (threadIdx.x >> 5)) * R;
    if (row0 >= out)
        return;
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        wr[r] = reinterpret_cast<const uint4 *>(W + (size_t)min(row0 + r, out - 1) * in);
    const int nv = in / VEC;
    float acc[NT][R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[t][r] = 0.0f;

    for (int v0 = lane; v0 < nv; v0 += 32 * U) {
        uint4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = cu_ld_nc16(wr[r] + min(v0 + 32 * u, nv - 1)); /* past the end: unused */
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int v = v0 + 32 * u;
            if (v >= nv)
                break;
            float wf[R][VEC];
#pragma unroll
            for (int r = 0; r < R; r++)
                cu_unpack16(wv[u][r], wf[r], T());
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * in + (size_t)v * VEC);
                float xf[VEC];
#pragma unroll
                for (int q = 0; q < VEC / 4; q++) {
                    float4 a = __ldg(xp + q);
                    xf[4 * q] = a.x;
                    xf[4 * q + 1] = a.y;
                    xf[4 * q + 2] = a.z;
                    xf[4 * q + 3] = a.w;
                }
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int e = 0; e < VEC; e++)
                        acc[t][r] = fmaf(wf[r][e], xf[e], acc[t][r]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[t][r] = cu_warp_sum(acc[t][r]);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int row = row0 + r;
            if (row >= out)
                break;
            float b = bias ? cu_to_f32(bias[row]) : 0.0f;
#pragma unroll
            for (int t = 0; t < NT; t++)
                y[(size_t)t * out + row] = bias ? acc[t][r] + b : acc[t][r];
        }
    }
}

/* The same for any alignment and width: one warp per row, scalar loads. */
template <typename T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_scalar_kernel(const T *__restrict__ W, const float *__restrict__ x, const T *__restrict__ bias,
                       float *__restrict__ y, int n, int in, int out)
{
    cu_pdl_enter();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= out)
        return;
    const T *wr = W + (size_t)row * in;
    float acc[GEMV_MAX_TOKENS];
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOKENS; t++)
        acc[t] = 0.0f;
    for (int i = lane; i < in; i += 32) {
        float w = cu_to_f32(wr[i]);
#pragma unroll
        for (int t = 0; t < GEMV_MAX_TOKENS; t++)
            if (t < n)
                acc[t] = fmaf(w, x[(size_t)t * in + i], acc[t]);
    }
#pragma unroll
    for (int t = 0; t < GEMV_MAX_TOKENS; t++) {
        if (t >= n)
            break;
        float s = cu_warp_sum(acc[t]);
        if (lane == 0)
            y[(size_t)t * out + row] = bias ? s + cu_to_f32(bias[row]) : s;
    }
}

/* Instantiate gemv_vec_kernel for the token count n (1..GEMV_MAX_TOKENS). */
template <typename T, int NT>
static void gemv_vec_launch(cu_ctx *c, int n, int rows_per_warp, const gemv_group<T> &g, unsigned blocks,
                            const float *x, int in)
{
    if (n == NT) {
        if (rows_per_warp == 2)
            cu_launch(c, gemv_vec_kernel<T, NT, 2>, dim3(blocks), dim3(GEMV_WARPS * 32), 0, g, x, in);
        else
            cu_launch(c, gemv_vec_kernel<T, NT, 1>, dim3(blocks), dim3(GEMV_WARPS * 32), 0, g, x, in);
    } else if constexpr (NT < GEMV_MAX_TOKENS) {
        gemv_vec_launch<T, NT + 1>(c, n, rows_per_warp, g, blocks, x, in);
    }
}

/* Can node nd take the vectorised GEMV? */
template <typename T> static bool gemv_vec_ok(const gk_node *nd)
{
    constexpr int VEC = 16 / sizeof(T);
    return nd->src[0]->cols % VEC == 0 && cu_aligned16(nd->src[1]->data) && cu_aligned16(nd->src[0]->data);
}

/* count LINEAR nodes that share x, in one launch (vectorised path only). */
template <typename T>
static gk_status gemv_group_launch(cu_ctx *c, const gk_node *const *nds, int count, gk_err *err)
{
    const gk_tensor *x = nds[0]->src[0];
    int n = (int)x->rows, in = (int)x->cols, total = 0;
    for (int k = 0; k < count; k++)
        total += (int)nds[k]->src[1]->rows;
    /* two rows per warp halve the x traffic, unless that leaves the GPU
     * with too few blocks to keep its memory system busy */
    int rpw = cu_div_up(total, GEMV_WARPS * 2) >= 2u * (unsigned)c->n_sm ? 2 : 1;
    gemv_group<T> g = {};
    g.first[0] = 0;
    for (int k = 0; k < GEMV_GROUP; k++) {
        const gk_node *nd = nds[k < count ? k : count - 1];
        g.W[k] = (const T *)nd->src[1]->data;
        g.bias[k] = nd->src[2] ? (const T *)nd->src[2]->data : nullptr;
        g.y[k] = (float *)nd->dst->data;
        g.out[k] = (int)nd->src[1]->rows;
        g.first[k + 1] = g.first[k] + (k < count ? cu_div_up(g.out[k], GEMV_WARPS * rpw) : 0);
    }
    gemv_vec_launch<T, 1>(c, n, rpw, g, g.first[GEMV_GROUP], (const float *)x->data, in);
    return cu_launch_check(nds[0], "gemv_vec_kernel", err);
}

template <typename T>
static gk_status gemv(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    if (gemv_vec_ok<T>(nd))
        return gemv_group_launch<T>(c, &nd, 1, err);
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    int n = (int)x->rows, in = (int)x->cols, out = (int)w->rows;
    cu_launch(c, gemv_scalar_kernel<T>, dim3(cu_div_up(out, GEMV_WARPS)), dim3(GEMV_WARPS * 32), 0, (const T *)w->data, (const float *)x->data, b ? (const T *)b->data : nullptr, (float *)nd->dst->data, n,
        in, out);
    return cu_launch_check(nd, "gemv_scalar_kernel", err);
}

/* ---------------------------------------------------------------- cuBLAS */

template <typename T>
__global__ void to_dtype_kernel(const float *__restrict__ x, T *__restrict__ dst, int64_t ne)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = cu_from_f32<T>(x[i]);
}

/* x = hi + lo with hi = bf16(x), lo = bf16(x - hi). */
__global__ void split_bf16_kernel(const float *__restrict__ x, __nv_bfloat16 *__restrict__ hi,
                                  __nv_bfloat16 *__restrict__ lo, int64_t ne)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x) {
        __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
        hi[i] = h;
        lo[i] = __float2bfloat16_rn(x[i] - __bfloat162float(h));
    }
}

template <typename T>
__global__ void add_bias_kernel(float *__restrict__ y, const T *__restrict__ bias, int64_t ne, int out)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += cu_to_f32(bias[i % out]);
}

static unsigned grid_for(const cu_ctx *c, int64_t ne)
{
    int64_t blocks = (ne + 255) / 256, cap = 8LL * c->n_sm;
    return (unsigned)(blocks < cap ? blocks : cap);
}

static gk_status blas_check(cublasStatus_t s, const gk_node *nd, gk_err *err)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return GK_OK;
    return gk_err_set(err, GK_ERR_DEVICE, "cuda: %s -> '%.48s': cublasGemmEx: %s", gk_op_name(nd->op),
                      nd->dst->name, cublasGetStatusString(s));
}

template <typename T>
static gk_status gemm(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    int n = (int)x->rows, in = (int)x->cols, out = (int)w->rows;
    int64_t nx = (int64_t)n * in, ny = (int64_t)n * out;
    const void *B = x->data;
    cudaDataType_t ab = CUDA_R_32F;
    const float one = 1.0f, zero = 0.0f;
    if (std::is_same<T, __nv_bfloat16>::value && c->split_act) {
        /* y = W hi + W lo: the activations to ~16 bits, the weights as stored */
        __nv_bfloat16 *hi = (__nv_bfloat16 *)c->scratch, *lo = hi + nx;
        cu_launch(c, split_bf16_kernel, dim3(grid_for(c, nx)), dim3(256), 0, (const float *)x->data, hi, lo, nx);
        gk_status s = cu_launch_check(nd, "split_bf16_kernel", err);
        for (int part = 0; part < 2 && s == GK_OK; part++)
            s = blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w->data, CUDA_R_16BF, in,
                                        part ? lo : hi, CUDA_R_16BF, in, part ? &one : &zero, nd->dst->data,
                                        CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                           nd, err);
        if (s != GK_OK || !b)
            return s;
        cu_launch(c, add_bias_kernel<T>, dim3(grid_for(c, ny)), dim3(256), 0, (float *)nd->dst->data,
                  (const T *)b->data, ny, out);
        return cu_launch_check(nd, "add_bias_kernel", err);
    }
    if (sizeof(T) == 2) {
        cu_launch(c, to_dtype_kernel<T>, dim3(grid_for(c, nx)), dim3(256), 0, (const float *)x->data, (T *)c->scratch, nx);
        gk_status s = cu_launch_check(nd, "to_dtype_kernel", err);
        if (s != GK_OK)
            return s;
        B = c->scratch;
        ab = std::is_same<T, __half>::value ? CUDA_R_16F : CUDA_R_16BF;
    }
    gk_status s = blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w->data, ab, in,
                                          B, ab, in, &zero, nd->dst->data, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT),
                             nd, err);
    if (s != GK_OK || !b)
        return s;
    cu_launch(c, add_bias_kernel<T>, dim3(grid_for(c, ny)), dim3(256), 0, (float *)nd->dst->data, (const T *)b->data, ny,
                                                               out);
    return cu_launch_check(nd, "add_bias_kernel", err);
}

/* ---------------------------------------------------------------- entry */

size_t cu_linear_scratch(const cu_ctx *c, const gk_node *nd)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1];
    if (x->rows <= GEMV_MAX_TOKENS || w->dtype == GK_DTYPE_F32)
        return 0;
    bool pair = c->split_act && w->dtype == GK_DTYPE_BF16;
    return (size_t)(x->rows * x->cols) * 2 * (pair ? 2 : 1);
}

gk_status cu_linear(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    bool few = nd->src[0]->rows <= GEMV_MAX_TOKENS;
    gk_status s = GK_OK;
    CU_WEIGHT_SWITCH(nd->src[1]->dtype, T, { s = few ? gemv<T>(c, nd, err) : gemm<T>(c, nd, err); });
    return s;
}

/* Consecutive LINEAR nodes reading the same few tokens with weights of one
 * dtype (q, k, v; gate, up) run as one GEMV launch. */
int cu_linear_group_size(const gk_node *nodes, size_t n_nodes)
{
    const gk_node *a = &nodes[0];
    if (a->op != GK_OP_LINEAR || a->src[0]->rows > GEMV_MAX_TOKENS)
        return 1;
    int k = 1;
    while ((size_t)k < n_nodes && k < GEMV_GROUP) {
        const gk_node *b = &nodes[k];
        if (b->op != GK_OP_LINEAR || b->src[0] != a->src[0] || b->src[1]->dtype != a->src[1]->dtype)
            break;
        k++;
    }
    bool ok = true;
    for (int j = 0; j < k && ok; j++)
        CU_WEIGHT_SWITCH(a->src[1]->dtype, T, { ok = gemv_vec_ok<T>(&nodes[j]); });
    return ok ? k : 1;
}

gk_status cu_linear_group(cu_ctx *c, const gk_node *nodes, int count, gk_err *err)
{
    const gk_node *nds[GEMV_GROUP];
    for (int k = 0; k < count; k++)
        nds[k] = &nodes[k];
    gk_status s = GK_OK;
    CU_WEIGHT_SWITCH(nodes[0].src[1]->dtype, T, { s = gemv_group_launch<T>(c, nds, count, err); });
    return s;
}
