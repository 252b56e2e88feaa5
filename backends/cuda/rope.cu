/* rope.cu - the CUDA kernel of ROPE: HF rotate-half rotary embeddings.
 *
 * As in cpu_ref (and transformers), the angle is the float product
 * (float)pos * inv_freq[i] and cos/sin are scaled by f[0]; sincosf is the
 * precise one (no fast-math), so results match the host's cosf/sinf to a few
 * ulp. Positions are read on the device, so a captured graph replays with
 * new positions. A thread owns one frequency i and walks the heads of its
 * block, so each cos/sin is computed once per (token, block).
 * Two ROPE nodes at the same positions (q then k) share one launch.
 * (1.4) A rotary_dim r below hd turns only the first r columns of each head
 * (rotate-half within them, r/2 frequencies); the rest are copied.
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
                            const float *__restrict__ inv_freq, int hd, int rot, float scale)
{
    cu_pdl_enter();
    const bool second = blockIdx.y >= rp.split_y;
    const float *__restrict__ x = second ? rp.x[1] : rp.x[0];
    float *__restrict__ dst = second ? rp.dst[1] : rp.dst[0];
    const int n_heads = second ? rp.n_heads[1] : rp.n_heads[0];
    int t = blockIdx.x, half = rot / 2;
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
    /* (1.4) columns rot..hd of each head pass through (none when rot == hd) */
    for (int h = h0; h < h1; h++)
        for (int j = rot + threadIdx.x; j < hd; j += blockDim.x)
            dst[row + (size_t)h * hd + j] = x[row + (size_t)h * hd + j];
}

/* Can b be rotated in the same launch as a (same tokens, positions,
 * frequencies, head size and scale)? */
bool cu_rope_pairs(const gk_node *a, const gk_node *b)
{
    return a->op == GK_OP_ROPE && b->op == GK_OP_ROPE && b->src[0] != a->dst && a->src[1] == b->src[1] &&
           a->src[2] == b->src[2] &&
           a->i[0] == b->i[0] && a->i[1] == b->i[1] && a->f[0] == b->f[0] && a->src[0]->rows == b->src[0]->rows;
}

/* Rotate nds[0] (and nds[1] when count is 2) in one launch. */
gk_status cu_rope_n(cu_ctx *c, const gk_node *const *nds, int count, gk_err *err)
{
    const gk_node *nd = nds[0];
    int hd = nd->i[0], rot = nd->i[1] ? nd->i[1] : hd, half = rot / 2;
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
    cu_launch(c, rope_kernel, dim3(grid), dim3(threads), 0, rp, (const int32_t *)nd->src[1]->data,
                                                 (const float *)nd->src[2]->data, hd, rot, nd->f[0]);
    return cu_launch_check(nd, "rope_kernel", err);
}

gk_status cu_rope(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    return cu_rope_n(c, &nd, 1, err);
}

/* ---------------------------------------- QK-norm + RoPE + KV-cache store */

/* What one rope_store launch does for a block's attention inputs. */
struct rope_store_args {
    const float *q, *k, *v;      /* [n][H*hd], [n][Hkv*hd] x2: the projections */
    const void *qn_w, *kn_w;     /* QK-norm weights [hd] (norm_type), or NULL: no norm */
    float *q_norm, *k_norm;      /* the norms' outputs (written when normed) */
    float *q_rope, *k_rope;      /* the rotations' outputs */
    void *kc, *vc;               /* caches [n_ctx][Hkv*hd] */
    const int32_t *pos;
    const float *inv_freq;       /* [hd/2] */
    const int32_t *slots;        /* (1.5) each token's sequence slot, or NULL */
    int H, Hkv, hd, n_ctx;       /* n_ctx: the rows of a slot (of the caches, with one) */
    int n_pos;                   /* the positions they serve (INT_MAX: a ring, row p % n_ctx) */
    float eps, scale;
    int *ew;
};

/* grid (n, H + 2 Hkv): block y < H rotates query head y, then Hkv key heads
 * (rotated, and stored at cache row pos[t]), then Hkv value heads (stored).
 * Each step is the separate kernels' arithmetic: rms_norm_kernel's group
 * norm, rope_kernel's rotation, kv_store_kernel's rounding. */
template <typename NT, typename CT>
__global__ void rope_store_kernel(const rope_store_args a)
{
    __shared__ float red[32];
    __shared__ float xs[CU_ATTN_MAX_HEAD_DIM];
    cu_pdl_enter();
    const int t = blockIdx.x, y = blockIdx.y, hd = a.hd, half = hd / 2;
    const int kvw = a.Hkv * hd;
    const int p = a.pos[t];
    const bool p_ok = p >= 0 && p < a.n_pos;
    if (y == 0 && threadIdx.x == 0 && !p_ok)
        cu_note(a.ew, CU_ERR_BAD_POS, p, t, a.n_pos);
    const size_t row = p_ok ? (a.slots ? (size_t)a.slots[t] * a.n_ctx : 0) + (size_t)cu_cache_row(p, a.n_ctx) : 0;
    if (y >= a.H + a.Hkv) { /* a value head: into the cache */
        const int h = y - a.H - a.Hkv;
        const float *src = a.v + (size_t)t * kvw + (size_t)h * hd;
        if (p_ok)
            for (int j = threadIdx.x; j < hd; j += blockDim.x)
                ((CT *)a.vc)[row * kvw + (size_t)h * hd + j] = cu_from_f32<CT>(src[j]);
        return;
    }
    const bool is_q = y < a.H;
    const int h = is_q ? y : y - a.H, w = is_q ? a.H * hd : kvw;
    const float *src = (is_q ? a.q : a.k) + (size_t)t * w + (size_t)h * hd;
    const NT *nw = (const NT *)(is_q ? a.qn_w : a.kn_w);
    for (int j = threadIdx.x; j < hd; j += blockDim.x)
        xs[j] = src[j];
    if (nw) {
        float sq = 0.0f;
        for (int j = threadIdx.x; j < hd; j += blockDim.x)
            sq += xs[j] * xs[j];
        sq = cu_block_sum(sq, red); /* also orders the xs writes before the reads */
        const float r = 1.0f / sqrtf(sq / (float)hd + a.eps);
        float *no = (is_q ? a.q_norm : a.k_norm) + (size_t)t * w + (size_t)h * hd;
        for (int j = threadIdx.x; j < hd; j += blockDim.x) {
            float v = cu_to_f32(nw[j]) * (xs[j] * r);
            no[j] = v;
            xs[j] = v; /* each thread rewrites only its own j */
        }
    }
    __syncthreads();
    float *dst = (is_q ? a.q_rope : a.k_rope) + (size_t)t * w + (size_t)h * hd;
    CT *cache = (CT *)a.kc + row * kvw + (size_t)h * hd;
    const float pf = (float)p;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = pf * a.inv_freq[i], s, c;
        sincosf(angle, &s, &c);
        c *= a.scale;
        s *= a.scale;
        const float x1 = xs[i], x2 = xs[i + half];
        const float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
        dst[i] = y1;
        dst[i + half] = y2;
        if (!is_q && p_ok) {
            cache[i] = cu_from_f32<CT>(y1);
            cache[i + half] = cu_from_f32<CT>(y2);
        }
    }
}

/* nodes[0..count) from a query-side node on: [RMS_NORM q, RMS_NORM k,] ROPE q,
 * ROPE k, ATTN reading both rotations (and v straight from its projection).
 * Returns how many nodes one rope_store launch plus the attention cover
 * (4 or 6), or 0. */
int cu_rope_store_match(const gk_node *nodes, size_t count)
{
    size_t o = 0;
    const gk_node *qn = NULL, *kn = NULL;
    if (count >= 5 && nodes[0].op == GK_OP_RMS_NORM) {
        qn = &nodes[0];
        kn = &nodes[1];
        o = 2;
    }
    if (count < o + 3)
        return 0;
    const gk_node *rq = &nodes[o], *rk = &nodes[o + 1], *at = &nodes[o + 2];
    if (rq->op != GK_OP_ROPE || !cu_rope_pairs(rq, rk) || (rq->i[1] != 0 && rq->i[1] != rq->i[0]) ||
        at->op != GK_OP_ATTN || at->src[0] != rq->dst ||
        at->src[1] != rk->dst || at->src[3] != rq->src[1] || rq->i[0] != at->i[2] ||
        rq->src[0]->cols != (int64_t)at->i[0] * at->i[2] || at->i[2] > CU_ATTN_MAX_HEAD_DIM ||
        at->src[2]->rows != rq->src[0]->rows)
        return 0;
    if (qn) {
        const int64_t hd = at->i[2];
        if (kn->op != GK_OP_RMS_NORM || qn->i[0] != hd || kn->i[0] != hd || rq->src[0] != qn->dst ||
            rk->src[0] != kn->dst || qn->src[1]->dtype != kn->src[1]->dtype || qn->f[0] != kn->f[0] ||
            qn->f[1] != 0.0f || kn->f[1] != 0.0f)
            return 0;
    }
    return (int)o + 3;
}

gk_status cu_rope_store(cu_ctx *c, const gk_node *nodes, int count, gk_err *err)
{
    const bool normed = count == 5;
    const gk_node *rq = &nodes[normed ? 2 : 0], *rk = &nodes[normed ? 3 : 1], *at = &nodes[normed ? 4 : 2];
    rope_store_args a = {};
    a.q = (const float *)(normed ? nodes[0].src[0] : rq->src[0])->data;
    a.k = (const float *)(normed ? nodes[1].src[0] : rk->src[0])->data;
    a.v = (const float *)at->src[2]->data;
    if (normed) {
        a.qn_w = nodes[0].src[1]->data;
        a.kn_w = nodes[1].src[1]->data;
        a.q_norm = (float *)nodes[0].dst->data;
        a.k_norm = (float *)nodes[1].dst->data;
        a.eps = nodes[0].f[0];
    }
    a.q_rope = (float *)rq->dst->data;
    a.k_rope = (float *)rk->dst->data;
    a.kc = at->src[4]->data;
    a.vc = at->src[5]->data;
    a.pos = (const int32_t *)at->src[3]->data;
    a.inv_freq = (const float *)rq->src[2]->data;
    a.H = at->i[0];
    a.Hkv = at->i[1];
    a.hd = at->i[2];
    a.n_ctx = cu_slot_rows(at);
    a.n_pos = cu_cache_positions(at);
    a.slots = cu_slots(at);
    a.scale = rq->f[0];
    a.ew = c->err_dev;
    unsigned threads = (unsigned)((a.hd / 2 + 31) / 32 * 32);
    dim3 grid((unsigned)at->src[0]->rows, (unsigned)(a.H + 2 * a.Hkv));
    gk_dtype nt = normed ? nodes[0].src[1]->dtype : GK_DTYPE_F32;
    cudaError_t e = cudaSuccess;
    CU_WEIGHT_SWITCH(nt, N, {
        CU_WEIGHT_SWITCH(at->src[4]->dtype, C,
                         { e = cu_launch(c, rope_store_kernel<N, C>, grid, dim3(threads), 0, a); });
    });
    gk_status s = cu_launch_result(e, at, "rope_store_kernel", err);
    return s == GK_OK ? cu_attn_stored(c, at, err) : s;
}
