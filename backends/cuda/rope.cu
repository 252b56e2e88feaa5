/* rope.cu - the CUDA kernel of ROPE: HF rotate-half rotary embeddings.
 *
 * As in cpu_ref (and transformers), the angle is the float product
 * (float)pos * inv_freq[i] and cos/sin are scaled by f[0]; sincosf is the
 * precise one (no fast-math), so results match the host's cosf/sinf to a few
 * ulp. Positions are read on the device, so a captured graph replays with
 * new positions. A thread owns one frequency i and walks the heads of its
 * block, so each cos/sin is computed once per (token, block).
 * Not here: the frequencies themselves (core/model.c computes inv_freq).
 */
#include "cuda_common.cuh"

#define ROPE_HEADS_PER_BLOCK 8

/* grid (n, head blocks); x and dst are [n][n_heads * hd]. */
__global__ void rope_kernel(const float *__restrict__ x, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, float *__restrict__ dst, int n_heads,
                            int hd, float scale)
{
    int t = blockIdx.x, half = hd / 2;
    int h0 = blockIdx.y * ROPE_HEADS_PER_BLOCK;
    int h1 = min(h0 + ROPE_HEADS_PER_BLOCK, n_heads);
    float p = (float)pos[t];
    size_t row = (size_t)t * n_heads * hd;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = p * inv_freq[i], s, c;
        sincosf(angle, &s, &c);
        c *= scale;
        s *= scale;
        for (int h = h0; h < h1; h++) {
            const float *xr = x + row + (size_t)h * hd;
            float *yr = dst + row + (size_t)h * hd;
            float x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c - x2 * s;
            yr[i + half] = x2 * c + x1 * s;
        }
    }
}

gk_status cu_rope(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0];
    int hd = nd->i[0], n_heads = (int)(x->cols / hd), half = hd / 2;
    unsigned threads = (unsigned)((half + 31) / 32 * 32);
    if (threads > 128)
        threads = 128;
    dim3 grid((unsigned)x->rows, cu_div_up(n_heads, ROPE_HEADS_PER_BLOCK));
    rope_kernel<<<grid, threads, 0, c->stream>>>((const float *)x->data, (const int32_t *)nd->src[1]->data,
                                                 (const float *)nd->src[2]->data, (float *)nd->dst->data,
                                                 n_heads, hd, nd->f[0]);
    return cu_launch_check(nd, "rope_kernel", err);
}
