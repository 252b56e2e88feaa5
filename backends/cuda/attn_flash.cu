/* attn_flash.cu - the prefill attention of an ATTN node whose KV caches are
 * F16 or BF16, on tensor cores: FlashAttention-2 with mma.sync m16n8k16.
 *
 * attention.cu has already stored the node's k and v in the caches; this
 * replaces its float32 attn_tiled_kernel for head dims 64 and 128 when more
 * than 8 tokens come at once. Grid (H, query tiles of FA_BQ = 64 tokens),
 * heaviest tiles first; 4 warps, each owning 16 query rows. Q goes from the
 * F32 q tensor straight into mma A fragments in registers. K and V tiles of
 * 64 cache rows stream through shared memory (rows padded by 16 bytes, so
 * ldmatrix is conflict-free) with 16-byte cp.async, double buffered: 36 KB
 * per block at head dim 64 (3 blocks per SM), 68 KB at 128 (2 per SM). S =
 * Q K^T, causal mask, online softmax and O += P V (V through ldmatrix.trans)
 * stay in registers. Key tiles run up to the largest clamped position of the
 * block's tokens; each row is masked by its own position (any order, gaps
 * allowed); a warp skips tiles none of its rows sees and the mask where all
 * see the whole tile. GQA: query head h reads kv head h / (H / Hkv).
 *
 * Numerics: Q is rounded to the cache dtype, K and V are used as stored; S
 * and O accumulate in float, the softmax is float (exp2 of the scores times
 * scale * log2 e), P is rounded to the cache dtype for the P V product, and
 * the row sum l adds the unrounded float P. Against a float64 reference on
 * values below 1 the max abs error measured 4e-4 (F16) and 2.7e-3 (BF16).
 * Positions outside the cache are clamped as attention.cu does (kv_store
 * notes them in the error word); cache rows past the block's largest
 * position are never read (zeros in shared memory), so nothing reads outside
 * the cache. Padding rows past n compute on zeros and are never written.
 * Not here: decode (n <= 8: attention.cu's decode kernel), other head dims,
 * F32 caches, ALiBi, wgmma/TMA (plain sm_80 instructions).
 * (1.4) A sliding window starts the key tiles at the earliest row the
 * block's queries see and masks each row's lower bound too; a softcap turns
 * the raw scores into cap tanh(s scale / cap) before the log2-domain softmax.
 * With neither, the kernel computes what it did before.
 * tests/gpu/flash_harness.cu checks it against float64 and times it.
 */
#include "cuda_common.cuh"

#include <limits.h>
#include <math.h>
#include <type_traits>

#define FA_THREADS 128
#define FA_BQ 64   /* query rows per block: 4 warps x 16 */
#define FA_PAD 8   /* shared row padding (elements): ldmatrix rows fall in distinct banks */
/* Cache rows per key tile and the blocks per SM the registers are sized for.
 * Measured on H200 (tests/gpu/flash_harness.cu): 32-row tiles with 3 (hd 128)
 * or 4 (hd 64) blocks per SM ran 15-30% slower, 4 blocks of hd 64 spill. */
static constexpr __host__ __device__ int fa_bk(int hd) { return 64; }
static constexpr __host__ __device__ int fa_minb(int hd) { return hd == 64 ? 3 : 2; }
/* K and V tiles, double buffered */
static constexpr size_t flash_smem(int hd) { return (size_t)2 * 2 * fa_bk(hd) * (hd + FA_PAD) * 2; }

/* ------------------------------------------------------ device helpers */

static __device__ __forceinline__ int fa_clamp_pos(int p, int n_ctx) { return min(max(p, 0), n_ctx - 1); }

/* Two floats rounded to T, packed as an mma operand register (low half = a). */
template <typename T> static __device__ __forceinline__ uint32_t fa_pack(float a, float b);
template <> __device__ __forceinline__ uint32_t fa_pack<__half>(float a, float b)
{
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
}
template <> __device__ __forceinline__ uint32_t fa_pack<__nv_bfloat16>(float a, float b)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* d += a b: a 16x16 (row), b 16x8 (col), d 16x8 float. */
template <typename T>
static __device__ __forceinline__ void fa_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    if constexpr (std::is_same<T, __half>::value)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void fa_ldmatrix_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void fa_ldmatrix_x4_trans(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* 16 bytes global -> shared; zeros when !in (src is then not read). */
static __device__ __forceinline__ void fa_cp16(uint32_t dst, const void *src, bool in)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(in ? 16 : 0)
                 : "memory");
}
static __device__ __forceinline__ void fa_cp_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
static __device__ __forceinline__ void fa_cp_wait1(void) { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

/* ---------------------------------------------------------------- kernel */

/* grid (H, query tiles), heaviest tiles (latest tokens) first. Thread lane
 * owns, in mma fragment layout, rows g = lane / 4 and g + 8 of its warp's 16
 * and columns 2 (lane % 4) + {0, 1} of every 8-wide block. */
template <typename T, int HD>
__global__ void __launch_bounds__(FA_THREADS, fa_minb(HD))
    attn_flash_kernel(const float *__restrict__ q, const T *__restrict__ kc, const T *__restrict__ vc,
                      const int32_t *__restrict__ pos, const int32_t *__restrict__ slots, float *__restrict__ out,
                      int n, int H, int Hkv, int n_ctx, int n_pos, float scale_log2, int window, float cap,
                      float cap_in)
{
    constexpr int BK = fa_bk(HD);     /* cache rows per key tile */
    constexpr int LDS = HD + FA_PAD;  /* shared row stride, elements */
    constexpr int KS = HD / 16;       /* k-steps of Q K^T */
    constexpr int SN = BK / 8;        /* 8-wide key blocks of S */
    constexpr int ON = HD / 8;        /* 8-wide column blocks of O */
    constexpr int CPR = HD / 8;       /* 16-byte chunks per cache row */
    extern __shared__ uint4 fa_smem[];
    __shared__ int s_pos[FA_BQ];
    T *Ks = reinterpret_cast<T *>(fa_smem); /* [2][BK][LDS] */
    T *Vs = Ks + 2 * BK * LDS;              /* [2][BK][LDS] */

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
    const int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * FA_BQ, kvh = h / (H / Hkv);
    const size_t qw = (size_t)H * HD, kvw = (size_t)Hkv * HD;
    const int r_lo = warp * 16 + g, r_hi = r_lo + 8;
    const bool in_lo = t0 + r_lo < n, in_hi = t0 + r_hi < n;

    cu_pdl_wait();
    if (tid < FA_BQ)
        s_pos[tid] = t0 + tid < n ? fa_clamp_pos(pos[t0 + tid], n_pos) : -1;

    /* Q as A fragments: a0 (g, 2c), a1 (g+8, 2c), a2 (g, 2c+8), a3 (g+8, 2c+8) */
    uint32_t qa[KS][4];
    {
        const float *ql = q + (size_t)(t0 + r_lo) * qw + (size_t)h * HD + 2 * c;
        const float *qh = q + (size_t)(t0 + r_hi) * qw + (size_t)h * HD + 2 * c;
        const float2 z = make_float2(0.0f, 0.0f);
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            float2 a0 = in_lo ? *reinterpret_cast<const float2 *>(ql + kk * 16) : z;
            float2 a1 = in_hi ? *reinterpret_cast<const float2 *>(qh + kk * 16) : z;
            float2 a2 = in_lo ? *reinterpret_cast<const float2 *>(ql + kk * 16 + 8) : z;
            float2 a3 = in_hi ? *reinterpret_cast<const float2 *>(qh + kk * 16 + 8) : z;
            qa[kk][0] = fa_pack<T>(a0.x, a0.y);
            qa[kk][1] = fa_pack<T>(a1.x, a1.y);
            qa[kk][2] = fa_pack<T>(a2.x, a2.y);
            qa[kk][3] = fa_pack<T>(a3.x, a3.y);
        }
    }
    __syncthreads();

    /* kmax: the block's last key; kmin: the earliest any of its rows sees
     * (0 without a window); [wmin, wmax]: its warp's real rows */
    int kmax = 0, wmin = INT_MAX, wmax = -1, kmin = INT_MAX;
    for (int r = 0; r < FA_BQ; r++) {
        kmax = max(kmax, s_pos[r]);
        if (s_pos[r] >= 0)
            kmin = min(kmin, window > 0 ? max(s_pos[r] - window + 1, 0) : 0);
    }
    if (kmin == INT_MAX)
        kmin = 0;
#pragma unroll
    for (int r = 0; r < 16; r++) {
        int p = s_pos[warp * 16 + r];
        if (p >= 0) {
            wmin = min(wmin, p);
            wmax = max(wmax, p);
        }
    }
    const int p_lo = max(s_pos[r_lo], 0), p_hi = max(s_pos[r_hi], 0); /* padding rows see key 0 */

    const uint32_t ks_addr = (uint32_t)__cvta_generic_to_shared(Ks);
    const uint32_t vs_addr = (uint32_t)__cvta_generic_to_shared(Vs);
    /* ldmatrix lane addresses: K (non-trans) matrices (keys 0-7 | 8-15) x
     * (k 0-7 | 8-15) as b0, b1 of two key blocks; V (trans) (keys 0-7 | 8-15)
     * x (cols 0-7 | 8-15) as b0, b1 of two column blocks. */
    const int k_row = (lane % 8) + (lane / 16) * 8, k_col = ((lane / 8) % 2) * 8;
    const int v_row = (lane % 8) + ((lane / 8) % 2) * 8, v_col = (lane / 16) * 8;

    /* K and V rows j0.. of this kv head into buffer buf; rows past kmax are zeros */
    /* (1.5) every token of the node is of token 0's slot of n_ctx rows */
    const size_t slot0 = slots ? (size_t)slots[0] * n_ctx * kvw : 0;
    const T *kb = kc + slot0 + (size_t)kvh * HD, *vb = vc + slot0 + (size_t)kvh * HD;
    auto load_tile = [&](int buf, int j0) {
#pragma unroll
        for (int k = 0; k < BK * CPR / FA_THREADS; k++) {
            int i = tid + k * FA_THREADS, r = i / CPR, ch = i % CPR, j = j0 + r;
            bool in = j <= kmax;
            size_t off = (size_t)cu_cache_row(in ? j : 0, n_ctx) * kvw + ch * 8; /* a ring: row j % n_ctx */
            uint32_t so = (uint32_t)(((buf * BK + r) * LDS + ch * 8) * sizeof(T));
            fa_cp16(ks_addr + so, kb + off, in);
            fa_cp16(vs_addr + so, vb + off, in);
        }
    };

    float o[ON][4], m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
#pragma unroll
    for (int nb = 0; nb < ON; nb++)
        o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.0f;

    const int it0 = kmin / BK, n_tiles = kmax / BK + 1;
    /* tile it+1 loads while tile it is used. (Waiting for K and V apart, with
     * a barrier between S and P V, measured 6% slower: the warps of a block
     * no longer overlap one's softmax with another's mma.) */
    load_tile(0, it0 * BK);
    fa_cp_commit();
    for (int it = it0; it < n_tiles; it++) {
        const int j0 = it * BK, buf = (it - it0) & 1;
        /* else no row of this warp sees the tile */
        const bool active = j0 <= wmax && (window <= 0 || j0 + BK - 1 > wmin - window);
        if (it + 1 < n_tiles)
            load_tile(buf ^ 1, j0 + BK);
        fa_cp_commit();
        fa_cp_wait1();   /* tile it is in */
        __syncthreads(); /* ... for all threads */

        if (active) {
            /* S = Q K^T */
            float s[SN][4];
#pragma unroll
            for (int nb = 0; nb < SN; nb++)
                s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
            const uint32_t kt = ks_addr + (uint32_t)(((buf * BK + k_row) * LDS + k_col) * sizeof(T));
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
#pragma unroll
                for (int nb2 = 0; nb2 < SN / 2; nb2++) {
                    uint32_t b[4];
                    fa_ldmatrix_x4(b, kt + (uint32_t)((nb2 * 16 * LDS + kk * 16) * sizeof(T)));
                    fa_mma<T>(s[2 * nb2], qa[kk], b[0], b[1]);
                    fa_mma<T>(s[2 * nb2 + 1], qa[kk], b[2], b[3]);
                }
            }

            /* (1.4) softcap: s -> cap tanh(s scale / cap), and scale_log2 is
             * then log2 e alone */
            if (cap != 0.0f) {
#pragma unroll
                for (int nb = 0; nb < SN; nb++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        s[nb][e] = cap * tanhf(s[nb][e] * cap_in);
            }
            /* causal mask (and the window's lower bound), online softmax in
             * the log2 domain (scale > 0, so the max of raw scores is the
             * max of scaled ones) */
            const bool mask = j0 + BK - 1 > wmin || (window > 0 && j0 <= wmax - window);
            const int lb_lo = window > 0 ? p_lo - window : INT_MIN, lb_hi = window > 0 ? p_hi - window : INT_MIN;
            float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
            for (int nb = 0; nb < SN; nb++) {
                const int j = j0 + nb * 8 + 2 * c;
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (mask && (j + (e & 1) > (e < 2 ? p_lo : p_hi) || j + (e & 1) <= (e < 2 ? lb_lo : lb_hi)))
                        s[nb][e] = -INFINITY;
                mx_lo = fmaxf(mx_lo, fmaxf(s[nb][0], s[nb][1]));
                mx_hi = fmaxf(mx_hi, fmaxf(s[nb][2], s[nb][3]));
            }
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
            const float mn_lo = fmaxf(m_lo, mx_lo * scale_log2), mn_hi = fmaxf(m_hi, mx_hi * scale_log2);
            /* a row with nothing visible yet subtracts 0, not -inf: its terms are exp2(-inf) = 0 */
            const float mu_lo = mn_lo == -INFINITY ? 0.0f : mn_lo, mu_hi = mn_hi == -INFINITY ? 0.0f : mn_hi;
            const float cr_lo = exp2f(m_lo - mu_lo), cr_hi = exp2f(m_hi - mu_hi);
            m_lo = mn_lo;
            m_hi = mn_hi;
            l_lo *= cr_lo;
            l_hi *= cr_hi;
#pragma unroll
            for (int nb = 0; nb < ON; nb++) {
                o[nb][0] *= cr_lo;
                o[nb][1] *= cr_lo;
                o[nb][2] *= cr_hi;
                o[nb][3] *= cr_hi;
            }
            uint32_t pa[SN / 2][4]; /* P as A fragments, one per 16 keys */
#pragma unroll
            for (int nb = 0; nb < SN; nb++) {
                float p0 = exp2f(fmaf(s[nb][0], scale_log2, -mu_lo)), p1 = exp2f(fmaf(s[nb][1], scale_log2, -mu_lo));
                float p2 = exp2f(fmaf(s[nb][2], scale_log2, -mu_hi)), p3 = exp2f(fmaf(s[nb][3], scale_log2, -mu_hi));
                l_lo += p0 + p1;
                l_hi += p2 + p3;
                pa[nb / 2][(nb % 2) * 2] = fa_pack<T>(p0, p1);
                pa[nb / 2][(nb % 2) * 2 + 1] = fa_pack<T>(p2, p3);
            }

            /* O += P V */
            const uint32_t vt = vs_addr + (uint32_t)(((buf * BK + v_row) * LDS + v_col) * sizeof(T));
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
#pragma unroll
                for (int nb2 = 0; nb2 < ON / 2; nb2++) {
                    uint32_t b[4];
                    fa_ldmatrix_x4_trans(b, vt + (uint32_t)((kk * 16 * LDS + nb2 * 16) * sizeof(T)));
                    fa_mma<T>(o[2 * nb2], pa[kk], b[0], b[1]);
                    fa_mma<T>(o[2 * nb2 + 1], pa[kk], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* buf is refilled by the next iteration's load */
    }
    cu_pdl_trigger();

    /* out = O / l; the quad's partial sums first */
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
    const float il_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f, il_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
    float *ol = out + (size_t)(t0 + r_lo) * qw + (size_t)h * HD + 2 * c;
    float *oh = out + (size_t)(t0 + r_hi) * qw + (size_t)h * HD + 2 * c;
#pragma unroll
    for (int nb = 0; nb < ON; nb++) {
        if (in_lo)
            *reinterpret_cast<float2 *>(ol + nb * 8) = make_float2(o[nb][0] * il_lo, o[nb][1] * il_lo);
        if (in_hi)
            *reinterpret_cast<float2 *>(oh + nb * 8) = make_float2(o[nb][2] * il_hi, o[nb][3] * il_hi);
    }
}

/* ---------------------------------------------------------------- host */

bool cu_attn_flash_ok(const cu_ctx *c, const gk_node *nd)
{
    const gk_tensor *q = nd->src[0], *pos = nd->src[3], *kc = nd->src[4], *vc = nd->src[5], *dst = nd->dst;
    if (!q || !pos || !kc || !vc || !dst)
        return false;
    const int H = nd->i[0], Hkv = nd->i[1], hd = nd->i[2];
    if (kc->dtype != vc->dtype || (kc->dtype != GK_DTYPE_F16 && kc->dtype != GK_DTYPE_BF16))
        return false;
    if (q->dtype != GK_DTYPE_F32 || dst->dtype != GK_DTYPE_F32 || pos->dtype != GK_DTYPE_I32)
        return false;
    if ((hd != 64 && hd != 128) || H <= 0 || Hkv <= 0 || H % Hkv != 0 || !(nd->f[0] > 0.0f))
        return false;
    if (q->rows <= 8 || q->rows > (int64_t)FA_BQ * 65535 || q->cols != (int64_t)H * hd ||
        kc->cols != (int64_t)Hkv * hd || vc->cols != kc->cols || vc->rows != kc->rows || kc->rows < 1 ||
        kc->rows > INT_MAX)
        return false;
    return cu_aligned16(q->data) && cu_aligned16(kc->data) && cu_aligned16(vc->data) && cu_aligned16(dst->data);
}

template <typename T, int HD>
static gk_status flash_launch(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    static bool smem_raised = false; /* once per instantiation (one device per process) */
    constexpr size_t smem = flash_smem(HD);
    if (smem > 48 * 1024 && !smem_raised) {
        cudaError_t e = cudaFuncSetAttribute(attn_flash_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) {
            cudaGetLastError();
            return gk_err_set(err, GK_ERR_DEVICE,
                              "cuda: tensor-core attention for head dim %d needs %zu bytes of shared memory: %s", HD,
                              smem, cudaGetErrorString(e));
        }
        smem_raised = true;
    }
    const int n = (int)nd->src[0]->rows;
    const float cap = nd->f[1];
    dim3 grid(nd->i[0], cu_div_up(n, FA_BQ));
    cudaError_t e = cu_launch(c, attn_flash_kernel<T, HD>, grid, dim3(FA_THREADS), smem,
                              (const float *)nd->src[0]->data, (const T *)nd->src[4]->data,
                              (const T *)nd->src[5]->data, (const int32_t *)nd->src[3]->data, cu_slots(nd),
                              (float *)nd->dst->data, n, nd->i[0], nd->i[1], cu_slot_rows(nd), cu_cache_positions(nd),
                              cap != 0.0f ? 1.4426950408889634f : nd->f[0] * 1.4426950408889634f, nd->i[3], cap,
                              cap != 0.0f ? nd->f[0] / cap : 0.0f);
    return cu_launch_result(e, nd, "attn_flash_kernel", err);
}

gk_status cu_attn_flash(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const bool bf = nd->src[4]->dtype == GK_DTYPE_BF16;
    if (nd->i[2] == 64)
        return bf ? flash_launch<__nv_bfloat16, 64>(c, nd, err) : flash_launch<__half, 64>(c, nd, err);
    return bf ? flash_launch<__nv_bfloat16, 128>(c, nd, err) : flash_launch<__half, 128>(c, nd, err);
}
