/* linear_id.cu - the CUDA kernel of LINEAR_ID, the expert-indexed linear of
 * mixture-of-experts blocks: for token t and slot j, block j of dst[t] is
 * x_j W_e^T with e = ids[t][j], W the experts stacked [E*out][in].
 *
 * A GEMV: grid (output-row tiles, slots, tokens), one warp per output row,
 * lanes striding the row in 16-byte loads where the shapes allow (scalar
 * loads otherwise), float sums and a warp-shuffle tree. Only the selected
 * experts' rows are read, which is the whole cost at decode (n = 1). Prefill
 * runs the same kernel per (token, slot): correct, and reads each selected
 * expert once per token that picked it (a grouped GEMM would read it once).
 * An expert id outside 0..E-1 leaves a note in the error word and NaNs.
 * Not here: biases (LINEAR_ID has none), the routing (vocab.cu).
 */
#include "cuda_common.cuh"

#define LID_WARPS 8

template <typename T, bool VEC>
__global__ void __launch_bounds__(LID_WARPS * 32)
    linear_id_kernel(const float *__restrict__ x, const T *__restrict__ W, const int32_t *__restrict__ ids,
                     float *__restrict__ dst, int in, int out, int k, int n_exp, bool per_slot, int *ew)
{
    cu_pdl_enter();
    const int lane = threadIdx.x & 31, row = blockIdx.x * LID_WARPS + (threadIdx.x >> 5);
    const int j = blockIdx.y, t = blockIdx.z;
    if (row >= out)
        return;
    const int32_t e = ids[(size_t)t * k + j];
    float *y = dst + ((size_t)t * k + j) * out + row;
    if (e < 0 || e >= n_exp) {
        if (lane == 0) {
            if (row == 0)
                cu_note(ew, CU_ERR_BAD_INDEX, e, t, n_exp);
            *y = __int_as_float(0x7fc00000);
        }
        return;
    }
    const float *xr = x + ((size_t)t * (per_slot ? k : 1) + (per_slot ? j : 0)) * in;
    const T *wr = W + ((size_t)e * out + row) * in;
    float acc = 0.0f;
    if (VEC) {
        constexpr int EPV = 16 / (int)sizeof(T);
        const uint4 *wv = reinterpret_cast<const uint4 *>(wr);
        for (int v = lane; v < in / EPV; v += 32) {
            float f[EPV];
            cu_unpack16(cu_ld_nc16(wv + v), f, T());
#pragma unroll
            for (int q = 0; q < EPV; q += 4) {
                const float4 xv = *reinterpret_cast<const float4 *>(xr + (size_t)v * EPV + q);
                acc = fmaf(xv.x, f[q], acc);
                acc = fmaf(xv.y, f[q + 1], acc);
                acc = fmaf(xv.z, f[q + 2], acc);
                acc = fmaf(xv.w, f[q + 3], acc);
            }
        }
    } else {
        for (int c = lane; c < in; c += 32)
            acc = fmaf(xr[c], cu_to_f32(wr[c]), acc);
    }
    acc = cu_warp_sum(acc);
    if (lane == 0)
        *y = acc;
}

gk_status cu_linear_id(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *W = nd->src[1], *ids = nd->src[2];
    const int n_exp = nd->i[0], k = (int)ids->cols, in = (int)W->cols, out = (int)(W->rows / n_exp);
    const bool per_slot = x->cols != W->cols;
    const int epv = 16 / (int)gk_dtype_size(W->dtype);
    const bool vec = in % epv == 0 && cu_aligned16(W->data) && cu_aligned16(x->data);
    dim3 grid(cu_div_up(out, LID_WARPS), (unsigned)k, (unsigned)x->rows);
    cudaError_t e = cudaSuccess;
    CU_WEIGHT_SWITCH(W->dtype, T, {
        if (vec)
            e = cu_launch(c, linear_id_kernel<T, true>, grid, dim3(LID_WARPS * 32), 0, (const float *)x->data,
                          (const T *)W->data, (const int32_t *)ids->data, (float *)nd->dst->data, in, out, k, n_exp,
                          per_slot, c->err_dev);
        else
            e = cu_launch(c, linear_id_kernel<T, false>, grid, dim3(LID_WARPS * 32), 0, (const float *)x->data,
                          (const T *)W->data, (const int32_t *)ids->data, (float *)nd->dst->data, in, out, k, n_exp,
                          per_slot, c->err_dev);
    });
    return cu_launch_result(e, nd, "linear_id_kernel", err);
}
