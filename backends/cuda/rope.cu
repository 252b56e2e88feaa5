/* rope.cu - the CUDA kernel of ROPE: HF rotate-half rotary embeddings.
 *
 * As in cpu_ref (and transformers), the angle is the float product
 * (float)pos * inv_freq[i] and cos/sin are scaled by f[0]; sincosf is the
 * precise one (no fast-math), so results match the host's cosf/sinf to a few
 * ulp. Positions are read on the device, so a captured graph replays with
 * new positions. A thread owns one frequency i and walks the heads of its
 * block, so each cos/sin is computed once per (token, block).
 * Two ROPE nodes at the same positions (q then k) share one launch.
 * Not here: the frequencies themselves (core/model.c computes inv_freq).
 */
#include "cuda_common.cuh"

#define ROPE_HEADS_PER_BLOCK 8

/* One or two tensors rotated at the same positions (q and k of a block):
 * blocks y < split_y do tensor 0, the rest tensor 1. */
struct rope_pair {
    const float *x[2];
    float *dst[2];
    int n_heads[2];
    unsigned split_y;
};

/* grid (n, head blocks of tensor 0 + of tensor 1); x and dst are
 * [n][n_heads * hd]. */
__global__ void rope_kernel(const rope_pair rp, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, int hd, float scale)
{
    const bool second = blockIdx.y >= rp.split_y;
    const float *__restrict__ x = second ? rp.x[1] : rp.x[0];
    float *__restrict__ dst = second ? rp.dst[1] : rp.dst[0];
    const int n_heads = second ? rp.n_heads[1] : rp.n_heads[0];
    int t = blockIdx.x, half = hd / 2;
    int h0 = (blockIdx.y - (second ? rp.split_y : 0)) * ROPE_HEADS_PER_BLOCK;
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

/* Can b be rotated in the same launch as a (same tokens, positions,
 * frequencies, head size and scale)? */
bool cu_rope_pairs(const gk_node *a, const gk_node *b)
{
    return a->op == GK_OP_ROPE && b->op == GK_OP_ROPE && b->src[0] != a->dst && a->src[1] == b->src[1] &&
           a->src[2] == b->src[2] &&
           a->i[0] == b->i[0] && a->f[0] == b->f[0] && a->src[0]->rows == b->src[0]->rows;
}

/* Rotate nds[0] (and nds[1] when count is 2) in one launch. */
gk_status cu_rope_n(cu_ctx *c, const gk_node *const *nds, int count, gk_err *err)
{
    const gk_node *nd = nds[0];
    int hd = nd->i[0], half = hd / 2;
    rope_pair rp = {};
    unsigned blocks_y = 0;
    for (int k = 0; k < 2; k++) {
        const gk_node *e = nds[k < count ? k : 0];
        rp.x[k] = (const float *)e->src[0]->data;
        rp.dst[k] = (float *)e->dst->data;
        rp.n_heads[k] = (int)(e->src[0]->cols / hd);
        unsigned by = k < count ? cu_div_up(rp.n_heads[k], ROPE_HEADS_PER_BLOCK) : 0;
        if (k == 0)
            rp.split_y = by;
        blocks_y += by;
    }
    unsigned threads = (unsigned)((half + 31) / 32 * 32);
    if (threads > 128)
        threads = 128;
    dim3 grid((unsigned)nd->src[0]->rows, blocks_y);
    rope_kernel<<<grid, threads, 0, c->stream>>>(rp, (const int32_t *)nd->src[1]->data,
                                                 (const float *)nd->src[2]->data, hd, nd->f[0]);
    return cu_launch_check(nd, "rope_kernel", err);
}

gk_status cu_rope(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    return cu_rope_n(c, &nd, 1, err);
}
