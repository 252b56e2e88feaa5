/* norm.cu - the CUDA kernels of RMS_NORM (whole rows, or groups of G columns
 * for QK-norm; (1.4) with f[1] added to the weight, Gemma's 1 + w) and
 * LAYER_NORM.
 *
 * One block per row (or per group): the block sums in float with a
 * warp-shuffle tree, then writes w * (x * r) exactly as cpu_ref does, with
 * r = 1 / sqrtf(mean + eps) (not rsqrtf, whose last bit differs). Rows are
 * read twice (sum, then scale); the second read comes from L1/L2.
 * Also the residual add fused with the norm that reads it (ADD then a norm of
 * its result, as every pre-norm block has): one pass writes both the sum and
 * the normed row. cuda_backend.cu spots the pair.
 */
#include "cuda_common.cuh"

/* Threads for a row of d elements: a multiple of 32, at most 256. */
static unsigned norm_threads(int64_t d)
{
    int64_t t = (d + 31) / 32 * 32;
    return (unsigned)(t < 256 ? t : 256);
}

/* RMS_NORM's weight: (1.4) f[1] + w, or w itself when the offset is 0 (so a
 * -0 weight stays -0 and the default path is what it always was). */
template <typename T> static __device__ __forceinline__ float norm_weight(T w, float off)
{
    float v = cu_to_f32(w);
    return off != 0.0f ? off + v : v;
}

/* grid (n * groups); block b norms group b % groups of row b / groups. */
template <typename T>
__global__ void rms_norm_kernel(const float *__restrict__ x, const T *__restrict__ w,
                                float *__restrict__ dst, int g, float eps, float off)
{
    cu_pdl_enter();
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * g;
    float *yr = dst + (size_t)blockIdx.x * g;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < g; j += blockDim.x)
        sq += xr[j] * xr[j];
    sq = cu_block_sum(sq, red);
    float r = 1.0f / sqrtf(sq / (float)g + eps);
    for (int j = threadIdx.x; j < g; j += blockDim.x)
        yr[j] = norm_weight(w[j], off) * (xr[j] * r);
}

gk_status cu_rms_norm(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1];
    int64_t d = x->cols, g = nd->i[0] == 0 ? d : nd->i[0];
    /* groups tile each row, and rows follow each other: block b is group b */
    unsigned blocks = (unsigned)(x->rows * (d / g));
    CU_WEIGHT_SWITCH(w->dtype, T, {
        cu_launch(c, rms_norm_kernel<T>, dim3(blocks), dim3(norm_threads(g)), 0, (const float *)x->data, (const T *)w->data, (float *)nd->dst->data, (int)g, nd->f[0], nd->f[1]);
    });
    return cu_launch_check(nd, "rms_norm_kernel", err);
}

/* torch.nn.LayerNorm, two passes like cpu_ref: mean, then the biased
 * variance of (x - mean). grid (n). */
template <typename T>
__global__ void layer_norm_kernel(const float *__restrict__ x, const T *__restrict__ w,
                                  const T *__restrict__ b, float *__restrict__ dst, int d, float eps)
{
    cu_pdl_enter();
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * d;
    float *yr = dst + (size_t)blockIdx.x * d;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        sum += xr[j];
    float mean = cu_block_sum(sum, red) / (float)d;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        sq += (xr[j] - mean) * (xr[j] - mean);
    float rstd = 1.0f / sqrtf(cu_block_sum(sq, red) / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float y = (xr[j] - mean) * rstd * cu_to_f32(w[j]);
        yr[j] = b ? y + cu_to_f32(b[j]) : y;
    }
}

gk_status cu_layer_norm(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    /* the bias has the weight's dtype (cu_node_ok checks it) */
    CU_WEIGHT_SWITCH(w->dtype, T, {
        cu_launch(c, layer_norm_kernel<T>, dim3((unsigned)x->rows), dim3(norm_threads(x->cols)), 0, (const float *)x->data, (const T *)w->data, b ? (const T *)b->data : (const T *)nullptr,
            (float *)nd->dst->data, (int)x->cols, nd->f[0]);
    });
    return cu_launch_check(nd, "layer_norm_kernel", err);
}

/* ---------------------------------------------- residual add + norm */

/* dst_sum = a + b, and dst = norm(dst_sum): one block per row. The sum stays
 * in registers for its first reduction and is re-read from L1 after. */
template <typename T>
__global__ void add_rms_norm_kernel(const float *__restrict__ a, const float *__restrict__ b,
                                    float *__restrict__ sum, const T *__restrict__ w,
                                    float *__restrict__ dst, int d, float eps, float w_off)
{
    cu_pdl_enter();
    __shared__ float red[32];
    size_t off = (size_t)blockIdx.x * d;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = a[off + j] + b[off + j];
        sum[off + j] = v;
        sq += v * v;
    }
    sq = cu_block_sum(sq, red);
    float r = 1.0f / sqrtf(sq / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dst[off + j] = norm_weight(w[j], w_off) * (sum[off + j] * r);
}

template <typename T>
__global__ void add_layer_norm_kernel(const float *__restrict__ a, const float *__restrict__ b,
                                      float *__restrict__ sum, const T *__restrict__ w,
                                      const T *__restrict__ bias, float *__restrict__ dst, int d, float eps)
{
    cu_pdl_enter();
    __shared__ float red[32];
    size_t off = (size_t)blockIdx.x * d;
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = a[off + j] + b[off + j];
        sum[off + j] = v;
        s += v;
    }
    float mean = cu_block_sum(s, red) / (float)d;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        sq += (sum[off + j] - mean) * (sum[off + j] - mean);
    float rstd = 1.0f / sqrtf(cu_block_sum(sq, red) / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float y = (sum[off + j] - mean) * rstd * cu_to_f32(w[j]);
        dst[off + j] = bias ? y + cu_to_f32(bias[j]) : y;
    }
}

bool cu_can_fuse_add_norm(const gk_node *add, const gk_node *norm)
{
    if (add->op != GK_OP_ADD || norm->src[0] != add->dst)
        return false;
    if (norm->op == GK_OP_RMS_NORM)
        return norm->i[0] == 0 || norm->i[0] == norm->src[0]->cols;
    return norm->op == GK_OP_LAYER_NORM;
}

gk_status cu_add_norm(cu_ctx *c, const gk_node *add, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = add->dst, *w = nd->src[1], *bias = nd->src[2];
    const float *a = (const float *)add->src[0]->data, *b = (const float *)add->src[1]->data;
    unsigned rows = (unsigned)x->rows, threads = norm_threads(x->cols);
    if (nd->op == GK_OP_RMS_NORM) {
        CU_WEIGHT_SWITCH(w->dtype, T, {
            cu_launch(c, add_rms_norm_kernel<T>, dim3(rows), dim3(threads), 0, a, b, (float *)x->data, (const T *)w->data,
                                                                     (float *)nd->dst->data, (int)x->cols, nd->f[0], nd->f[1]);
        });
        return cu_launch_check(nd, "add_rms_norm_kernel", err);
    }
    CU_WEIGHT_SWITCH(w->dtype, T, {
        cu_launch(c, add_layer_norm_kernel<T>, dim3(rows), dim3(threads), 0, a, b, (float *)x->data, (const T *)w->data, bias ? (const T *)bias->data : (const T *)nullptr,
            (float *)nd->dst->data, (int)x->cols, nd->f[0]);
    });
    return cu_launch_check(nd, "add_layer_norm_kernel", err);
}
