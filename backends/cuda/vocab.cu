/* vocab.cu - the CUDA kernels of ABI 1.4's general op vocabulary: the
 * element-wise MUL, SCALE, SOFTCAP, GELU and GEGLU, the row-wise SOFTMAX, and
 * the routing ops of mixture-of-experts blocks, TOPK, GATHER and MOE_SUM.
 *
 * The element-wise ops are grid-stride loops over the elements, with the
 * math written as cpu_ref writes it (the precise expf/tanhf/erff; products
 * and sums that cpu_ref rounds apart are rounded apart here, __fmul_rn /
 * __fadd_rn, so the compiler does not fuse them into an FMA). SOFTMAX and
 * TOPK take one block per row. A bad index (GATHER) leaves a note in the
 * error word and a NaN in the output.
 * Not here: the expert-indexed linear (linear_id.cu), norms, attention.
 */
#include "cuda_common.cuh"

#include <math.h>

#define VOC_THREADS 256

static unsigned voc_blocks(const cu_ctx *c, int64_t ne)
{
    int64_t blocks = (ne + VOC_THREADS - 1) / VOC_THREADS, cap = 8LL * c->n_sm;
    return (unsigned)(blocks < 1 ? 1 : blocks < cap ? blocks : cap);
}

/* ------------------------------------------------------- element-wise */

enum { V_SCALE, V_SOFTCAP, V_GELU, V_GEGLU_TANH, V_GEGLU_ERF };

static __device__ __forceinline__ float voc_gelu_erf(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* As elementwise.cu's GELU_TANH, term for term. */
static __device__ __forceinline__ float voc_gelu_tanh(float a)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * a * (1.0f + tanhf(k * (a + 0.044715f * a * a * a)));
}

template <int OP>
__global__ void voc_unary_kernel(const float *__restrict__ a, const float *__restrict__ b,
                                 float *__restrict__ dst, int64_t ne, float f0, float f1)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x) {
        const float x = a[i];
        float y;
        if (OP == V_SCALE)
            y = __fadd_rn(__fmul_rn(x, f0), f1);
        else if (OP == V_SOFTCAP)
            y = __fmul_rn(f0, tanhf(x / f0));
        else if (OP == V_GELU)
            y = voc_gelu_erf(x);
        else if (OP == V_GEGLU_TANH)
            y = __fmul_rn(voc_gelu_tanh(x), b[i]);
        else
            y = __fmul_rn(voc_gelu_erf(x), b[i]);
        dst[i] = y;
    }
}

template <int OP>
static gk_status voc_unary(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const int64_t ne = gk_tensor_nelem(nd->dst);
    const float *b = nd->src[1] ? (const float *)nd->src[1]->data : nullptr;
    cudaError_t e = cu_launch(c, voc_unary_kernel<OP>, dim3(voc_blocks(c, ne)), dim3(VOC_THREADS), 0,
                              (const float *)nd->src[0]->data, b, (float *)nd->dst->data, ne, nd->f[0], nd->f[1]);
    return cu_launch_result(e, nd, "voc_unary_kernel", err);
}

gk_status cu_scale(cu_ctx *c, const gk_node *nd, gk_err *err) { return voc_unary<V_SCALE>(c, nd, err); }
gk_status cu_softcap(cu_ctx *c, const gk_node *nd, gk_err *err) { return voc_unary<V_SOFTCAP>(c, nd, err); }
gk_status cu_gelu(cu_ctx *c, const gk_node *nd, gk_err *err) { return voc_unary<V_GELU>(c, nd, err); }
gk_status cu_geglu(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    return nd->i[0] == 1 ? voc_unary<V_GEGLU_ERF>(c, nd, err) : voc_unary<V_GEGLU_TANH>(c, nd, err);
}

/* dst[t][j] = a[t][j] * b[bcast ? 0 : t][j], b of a weight's dtype or F32. */
template <typename T>
__global__ void voc_mul_kernel(const float *__restrict__ a, const T *__restrict__ b, float *__restrict__ dst,
                               int64_t ne, int64_t d, bool bcast)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __fmul_rn(a[i], cu_to_f32(b[bcast ? i % d : i]));
}

gk_status cu_mul(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *a = nd->src[0], *b = nd->src[1];
    const int64_t ne = gk_tensor_nelem(nd->dst);
    const bool bcast = b->rows == 1 && a->rows != 1;
    cudaError_t e = cudaSuccess;
    CU_WEIGHT_SWITCH(b->dtype, T, {
        e = cu_launch(c, voc_mul_kernel<T>, dim3(voc_blocks(c, ne)), dim3(VOC_THREADS), 0, (const float *)a->data,
                      (const T *)b->data, (float *)nd->dst->data, ne, a->cols, bcast);
    });
    return cu_launch_result(e, nd, "voc_mul_kernel", err);
}

/* ------------------------------------------------------------ softmax */

/* One block per row: the max, then sum of expf(x - max), then each term over
 * the sum (three passes; the later ones hit L1/L2). */
__global__ void voc_softmax_kernel(const float *__restrict__ x, float *__restrict__ dst, int d)
{
    cu_pdl_enter();
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * d;
    float *yr = dst + (size_t)blockIdx.x * d;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        mx = fmaxf(mx, xr[j]);
    mx = cu_warp_max(mx);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = (threadIdx.x & 31) < (blockDim.x >> 5) ? red[threadIdx.x & 31] : -INFINITY;
    mx = cu_warp_max(mx);
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        s += expf(xr[j] - mx);
    s = cu_block_sum(s, red);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        yr[j] = expf(xr[j] - mx) / s;
}

gk_status cu_softmax(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0];
    int64_t t = (x->cols + 31) / 32 * 32;
    unsigned threads = (unsigned)(t < VOC_THREADS ? t : VOC_THREADS);
    cudaError_t e = cu_launch(c, voc_softmax_kernel, dim3((unsigned)x->rows), dim3(threads), 0,
                              (const float *)x->data, (float *)nd->dst->data, (int)x->cols);
    return cu_launch_result(e, nd, "voc_softmax_kernel", err);
}

/* --------------------------------------------------------------- top-k */

/* a before b: larger value, or equal and lower column. */
static __device__ __forceinline__ bool voc_before(float av, int ai, float bv, int bi)
{
    if (ai < 0)
        return false; /* no candidate */
    return bi < 0 || av > bv || (av == bv && ai < bi);
}

/* One block per row: the row in shared memory, then k rounds of a block
 * arg-max over the columns not taken yet. */
__global__ void voc_topk_kernel(const float *__restrict__ x, int32_t *__restrict__ dst, int e_cols, int k)
{
    extern __shared__ float voc_row[]; /* [e_cols] values, then [e_cols] taken flags */
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    cu_pdl_enter();
    unsigned char *taken = reinterpret_cast<unsigned char *>(voc_row + e_cols);
    const float *xr = x + (size_t)blockIdx.x * e_cols;
    for (int j = threadIdx.x; j < e_cols; j += blockDim.x) {
        voc_row[j] = xr[j];
        taken[j] = 0;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int r = 0; r < k; r++) {
        float bv = -INFINITY;
        int bi = -1;
        for (int j = threadIdx.x; j < e_cols; j += blockDim.x)
            if (!taken[j] && voc_before(voc_row[j], j, bv, bi))
                bv = voc_row[j], bi = j;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (voc_before(ov, oi, bv, bi))
                bv = ov, bi = oi;
        }
        if (lane == 0) {
            s_v[warp] = bv;
            s_i[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float v = s_v[0];
            int i = s_i[0];
            for (int w = 1; w < nw; w++)
                if (voc_before(s_v[w], s_i[w], v, i))
                    v = s_v[w], i = s_i[w];
            dst[(size_t)blockIdx.x * k + r] = i;
            if (i >= 0)
                taken[i] = 1;
        }
        __syncthreads();
    }
}

size_t cu_topk_smem(int64_t e_cols) { return (size_t)e_cols * (sizeof(float) + 1); }

gk_status cu_topk(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0];
    int64_t t = (x->cols + 31) / 32 * 32;
    unsigned threads = (unsigned)(t < VOC_THREADS ? t : VOC_THREADS);
    cudaError_t e = cu_launch(c, voc_topk_kernel, dim3((unsigned)x->rows), dim3(threads), cu_topk_smem(x->cols),
                              (const float *)x->data, (int32_t *)nd->dst->data, (int)x->cols, nd->i[0]);
    return cu_launch_result(e, nd, "voc_topk_kernel", err);
}

/* -------------------------------------------------------------- gather */

/* dst[t][j] = x[t][ids[t][j]]; ids outside 0..e_cols-1 give NaN and a note. */
__global__ void voc_gather_kernel(const float *__restrict__ x, const int32_t *__restrict__ ids,
                                  float *__restrict__ dst, int64_t ne, int e_cols, int k, int *ew)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / k;
        const int32_t id = ids[i];
        if (id < 0 || id >= e_cols) {
            cu_note(ew, CU_ERR_BAD_INDEX, id, (int)t, e_cols);
            dst[i] = __int_as_float(0x7fc00000);
        } else {
            dst[i] = x[t * e_cols + id];
        }
    }
}

gk_status cu_gather(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const int64_t ne = gk_tensor_nelem(nd->dst);
    cudaError_t e = cu_launch(c, voc_gather_kernel, dim3(voc_blocks(c, ne)), dim3(VOC_THREADS), 0,
                              (const float *)nd->src[0]->data, (const int32_t *)nd->src[1]->data,
                              (float *)nd->dst->data, ne, (int)nd->src[0]->cols, (int)nd->src[1]->cols, c->err_dev);
    return cu_launch_result(e, nd, "voc_gather_kernel", err);
}

/* ------------------------------------------------------------- moe_sum */

/* dst[t][d] = sum_j w[t][j] * x[t][j*D + d], j ascending, each product
 * rounded before its add (as cpu_ref's plain loop). */
__global__ void voc_moe_sum_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                   float *__restrict__ dst, int64_t ne, int d, int k)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / d;
        const int e = (int)(i % d);
        const float *xr = x + (size_t)t * k * d + e;
        const float *wr = w + (size_t)t * k;
        float acc = 0.0f;
        for (int j = 0; j < k; j++)
            acc = __fadd_rn(acc, __fmul_rn(wr[j], xr[(size_t)j * d]));
        dst[i] = acc;
    }
}

gk_status cu_moe_sum(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const int64_t ne = gk_tensor_nelem(nd->dst);
    cudaError_t e = cu_launch(c, voc_moe_sum_kernel, dim3(voc_blocks(c, ne)), dim3(VOC_THREADS), 0,
                              (const float *)nd->src[0]->data, (const float *)nd->src[1]->data,
                              (float *)nd->dst->data, ne, (int)nd->dst->cols, (int)nd->src[1]->cols);
    return cu_launch_result(e, nd, "voc_moe_sum_kernel", err);
}
