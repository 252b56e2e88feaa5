/* attention.cu - ATTN on CUDA: store k, v at their cache rows, then causal
 * softmax attention of every query head over its kv head's cache rows
 * 0..pos[t] (GQA: query head h reads kv head h / (H / Hkv)).
 *
 * The caches are F32, F16 or BF16 (the model's KV dtype); kv_store_kernel
 * rounds k and v into them to nearest even, as cpu_ref does, and every
 * kernel reads the stored values. After the store, one of three kernels,
 * chosen per node on the host:
 *  - attn_decode_kernel (n <= DEC_MAX_TOKENS, head dim 64, 128 or 256):
 *    flash-decoding with a grid sized to the device: one wave of blocks
 *    (as many per multiprocessor as its registers allow, at most
 *    DEC_BLOCKS_PER_SM) once the cache holds a block step of rows per
 *    split; a few steps' rows take one split. The grid is (split, kv head
 *    x query-head tile, token); each block derives on the device, from
 *    pos[t], which rows 0..pos[t] are its split and how many query heads
 *    its tile has (short caches: small tiles, more blocks), so one captured
 *    graph replays at every length. Lanes read whole cache rows in 16-byte
 *    loads, several rows in flight per warp, with an online softmax in
 *    registers for up to GT query heads of one kv head (each K/V row is
 *    read once per tile). With several splits, each block leaves its (max,
 *    sum, acc) in scratch and the last block to finish (a ticket counter)
 *    merges them in split order, so results do not depend on scheduling.
 *    Before its PDL wait a block asks the L2 for its split's cache rows
 *    (up to DEC_PREFETCH_ROWS rows, one sequence), which earlier steps
 *    wrote, so its loads after the wait do not go to HBM.
 *  - cu_attn_flash (attn_flash.cu; prefill with F16/BF16 caches, head dim 64
 *    or 128): tensor cores.
 *  - attn_tiled_kernel (the rest): flash-attention style on CUDA cores,
 *    BQ queries x 32 keys per step in shared memory, online softmax in
 *    registers; keys up to the largest position of the block's queries,
 *    masked per query by its own position.
 * All softmax math is float with the precise expf. Scores are (q . k) *
 * scale, as in cpu_ref. Positions outside the cache are noted in the error
 * word by kv_store_kernel and clamped by the others, so nothing reads out of
 * bounds. Every kernel is PDL-ready (cuda_common.cuh).
 * (1.4) A sliding window W (i[3]) makes token t see only rows pos[t]-W+1..pos[t]:
 * the decode kernel splits just those rows, the tiled and flash kernels start
 * at the earliest row their block's queries see and mask per query. A
 * softcap c (f[1]) turns each visible score s into c*tanh(s/c) before the
 * softmax. Both are plain kernel arguments: with W = 0 and c = 0 every kernel
 * computes what it did before, bit for bit.
 * Not here: ALiBi, paged caches.
 */
#include "cuda_common.cuh"

#include <limits.h>
#include <math.h>

#define ATT_THREADS 128
#define DEC_WARPS (ATT_THREADS / 32)
#define DEC_MAX_TOKENS 8
#define DEC_MAX_SPLITS 256
#ifndef DEC_MAX_GT
#define DEC_MAX_GT 4
#endif
/* Floats of one split's partial result: HD accumulators, max, sum, padding
 * to 16 bytes (the merge reads the accumulators as float4). */
#define DEC_PART(hd) ((hd) + 4)
/* Decode tuning (#ifndef: tests/gpu/attn_decode_harness.cu builds variants;
 * docs/perf-notes.md, session 9, has the measurements behind the defaults):
 * - DEC_BLOCKS_PER_SM: blocks per SM the splits aim at (one wave);
 * - DEC_ONE_SPLIT_STEPS: rows up to this many of a block's steps take one
 *   split (a round of loads costs ~1 µs, the merge of splits ~2.4 µs);
 *   more rows are cut into splits of at least one step;
 * - DEC_STEPS, DEC_STEPS_GT8: row steps each warp has in flight for tiles
 *   of up to 4 query heads and for 8; DEC_STEPS_GT4_LONG: for tiles of 4
 *   where a split has more rows than one step (a wave of fewer, longer
 *   blocks);
 * - DEC_GT_SHORT: the largest tile of query heads up to DEC_SHORT_ROWS_64
 *   rows (head dim 64) or DEC_SHORT_ROWS (larger head dims): less work a
 *   block and more blocks where latency, not bytes, sets the time; beyond,
 *   tiles of up to DEC_MAX_GT heads (4 or 8) read each K/V row once per
 *   tile (4 measured faster than 8 for 8 heads a kv head at every length:
 *   session 10; the tiles of 8 are built only with -DDEC_MAX_GT=8);
 * - DEC_PREFETCH, DEC_PREFETCH_ROWS (below): the L2 asked for a block's
 *   rows before its wait, up to that many rows;
 * - DEC_MERGE_ONE: up to this many splits merge in one round of loads (each
 *   thread weighs its head's splits itself); DEC_MERGE_LOADS: beyond, the
 *   maxima and sums are staged in shared memory first and each output has
 *   this many splits' loads in flight. */
#ifndef DEC_BLOCKS_PER_SM
#define DEC_BLOCKS_PER_SM 4
#endif
#ifndef DEC_ONE_SPLIT_STEPS
#define DEC_ONE_SPLIT_STEPS 3
#endif
#ifndef DEC_STEPS
#define DEC_STEPS 4
#endif
#ifndef DEC_STEPS_GT8
#define DEC_STEPS_GT8 2
#endif
#ifndef DEC_STEPS_GT4_LONG
#define DEC_STEPS_GT4_LONG 8
#endif
#ifndef DEC_GT_SHORT
#define DEC_GT_SHORT 2
#endif
#ifndef DEC_SHORT_ROWS_64
#define DEC_SHORT_ROWS_64 2048
#endif
#ifndef DEC_SHORT_ROWS
#define DEC_SHORT_ROWS 1024
#endif
#ifndef DEC_MERGE_ONE
#define DEC_MERGE_ONE 16
#endif
#ifndef DEC_MERGE_LOADS
#define DEC_MERGE_LOADS 4
#endif
/* DEC_PREFETCH: before its PDL wait each block asks the L2 for its cache
 * rows (dec_prefetch_block) where a token has at most DEC_PREFETCH_ROWS of
 * them; 0 leaves them to the loads after the wait. Measured in the models
 * (session 10): faster at 32-160 rows, slower at 4000 (so not there). */
#ifndef DEC_PREFETCH
#define DEC_PREFETCH 1
#endif
#ifndef DEC_PREFETCH_ROWS
#define DEC_PREFETCH_ROWS 256
#endif
/* Harness variants of the prefetch, off (not yet measured):
 * DEC_PREFETCH_ONE_TILE 1: only the first tile of a kv head's query heads
 * asks (the others read the same rows); DEC_PREFETCH_TRIGGER 1: the PDL
 * trigger before the prefetch instead of after it (with CU_PDL_EARLY). */
#ifndef DEC_PREFETCH_ONE_TILE
#define DEC_PREFETCH_ONE_TILE 0
#endif
#ifndef DEC_PREFETCH_TRIGGER
#define DEC_PREFETCH_TRIGGER 0
#endif

/* -------------------------------------------------------------- kv store */

/* Cache rows pos[t] = k[t], v[t], rounded to T; grid (n). V4: kvw % 4 == 0
 * and k, v 16-byte aligned. */
template <typename T, bool V4>
__global__ void kv_store_kernel(const float *__restrict__ k, const float *__restrict__ v,
                                const int32_t *__restrict__ pos, const int32_t *__restrict__ slots,
                                T *__restrict__ kc, T *__restrict__ vc, int kvw, int n_ctx, int n_pos, int *ew)
{
    cu_pdl_enter();
    int t = blockIdx.x, p = pos[t];
    if (p < 0 || p >= n_pos) {
        if (threadIdx.x == 0)
            cu_note(ew, CU_ERR_BAD_POS, p, t, n_pos);
        return;
    }
    /* n_ctx: a slot's rows; slot s starts at row s * n_ctx */
    size_t src = (size_t)t * kvw,
           dst = ((slots ? (size_t)slots[t] * n_ctx : 0) + (size_t)cu_cache_row(p, n_ctx)) * kvw;
    if (V4) {
        for (int i = threadIdx.x; i < kvw / 4; i += blockDim.x) {
            float4 a = reinterpret_cast<const float4 *>(k + src)[i], b = reinterpret_cast<const float4 *>(v + src)[i];
            T *kd = kc + dst + 4 * i, *vd = vc + dst + 4 * i;
            kd[0] = cu_from_f32<T>(a.x), kd[1] = cu_from_f32<T>(a.y), kd[2] = cu_from_f32<T>(a.z);
            kd[3] = cu_from_f32<T>(a.w);
            vd[0] = cu_from_f32<T>(b.x), vd[1] = cu_from_f32<T>(b.y), vd[2] = cu_from_f32<T>(b.z);
            vd[3] = cu_from_f32<T>(b.w);
        }
    } else {
        for (int i = threadIdx.x; i < kvw; i += blockDim.x) {
            kc[dst + i] = cu_from_f32<T>(k[src + i]);
            vc[dst + i] = cu_from_f32<T>(v[src + i]);
        }
    }
}

static __device__ __forceinline__ int clamp_pos(int p, int n_ctx) { return min(max(p, 0), n_ctx - 1); }

/* A visible key's score: dot * scale, then (1.4) cap * tanh(score / cap)
 * when the node has a softcap (cap 0: the score as it always was). */
static __device__ __forceinline__ float attn_score(float dot, float scale, float cap)
{
    float s = dot * scale;
    return cap != 0.0f ? cap * tanhf(s / cap) : s;
}

/* ------------------------------------------------------- decode (splits) */

/* A head's row of HD elements of T: VB 16-byte vectors, LPR lanes a row
 * (VPL vectors, EPL elements each), RPW rows a warp step. */
template <typename T, int HD> struct dec_geom {
    static constexpr int VB = HD * (int)sizeof(T) / 16;
    static constexpr int LPR = VB < 32 ? VB : 32;
    static constexpr int VPL = VB / LPR;
    static constexpr int EPV = 16 / (int)sizeof(T);
    static constexpr int EPL = VPL * EPV;
    static constexpr int RPW = 32 / LPR;
};

/* Cache rows r_begin .. r_end - 1 of one split for a tile of GT query
 * heads (qv): warp `warp` takes steps of U row groups of RPW rows, each lane
 * its 16-byte vectors of the rows of group grp, with an online softmax
 * into m, l and acc. */
template <typename T, int HD, int GT, int U>
static __device__ __forceinline__ void dec_rows(const T *kb, const T *vb, size_t kvw, int n_ctx, int r_begin,
                                                int r_end, int warp, int grp, int li, float scale, float cap,
                                                const float (&qv)[GT][dec_geom<T, HD>::EPL], float (&m)[GT],
                                                float (&l)[GT], float (&acc)[GT][dec_geom<T, HD>::EPL])
{
    constexpr int LPR = dec_geom<T, HD>::LPR, VPL = dec_geom<T, HD>::VPL, EPV = dec_geom<T, HD>::EPV;
    constexpr int EPL = dec_geom<T, HD>::EPL, RPW = dec_geom<T, HD>::RPW, STEP = DEC_WARPS * RPW * U;
    for (int base = r_begin + warp * RPW * U; base < r_end; base += STEP) {
        uint4 kr[U][VPL], vr[U][VPL];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const size_t row = (size_t)cu_cache_row(min(base + u * RPW + grp, r_end - 1), n_ctx); /* past the end: masked */
#pragma unroll
            for (int j = 0; j < VPL; j++) {
                kr[u][j] = cu_ld_nc16(reinterpret_cast<const uint4 *>(kb + row * kvw + (j * LPR + li) * EPV));
                vr[u][j] = cu_ld_nc16(reinterpret_cast<const uint4 *>(vb + row * kvw + (j * LPR + li) * EPV));
            }
        }
        float s[U][GT];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[EPL];
#pragma unroll
            for (int j = 0; j < VPL; j++) {
                float f[EPV];
                cu_unpack16(kr[u][j], f, T());
#pragma unroll
                for (int e = 0; e < EPV; e++)
                    kf[j * EPV + e] = f[e];
            }
            const bool in = base + u * RPW + grp < r_end;
#pragma unroll
            for (int g = 0; g < GT; g++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    d = fmaf(qv[g][e], kf[e], d);
#pragma unroll
                for (int o = LPR / 2; o >= 1; o >>= 1)
                    d += __shfl_xor_sync(0xffffffffu, d, o);
                s[u][g] = in ? attn_score(d, scale, cap) : -INFINITY;
            }
        }
        float vf[U][EPL];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < VPL; j++) {
                float f[EPV];
                cu_unpack16(vr[u][j], f, T());
#pragma unroll
                for (int e = 0; e < EPV; e++)
                    vf[u][j * EPV + e] = f[e];
            }
#pragma unroll
        for (int g = 0; g < GT; g++) {
            float mx = s[0][g];
#pragma unroll
            for (int u = 1; u < U; u++)
                mx = fmaxf(mx, s[u][g]);
            const float m_new = fmaxf(m[g], mx);
            if (m_new == -INFINITY)
                continue; /* no visible row in this group yet */
            const float corr = expf(m[g] - m_new); /* 0 on the first visible rows */
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                acc[g][e] *= corr;
#pragma unroll
            for (int u = 0; u < U; u++) {
                const float p = expf(s[u][g] - m_new);
                l[g] += p;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    acc[g][e] = fmaf(p, vf[u][e], acc[g][e]);
            }
            m[g] = m_new;
        }
    }
}

/* A block's shared memory for tiles of up to GT query heads (a kernel
 * holding two tile sizes keeps the larger one's and lays the smaller one's
 * over it). */
template <int HD, int GT> struct dec_smem {
    float acc[DEC_WARPS][GT][HD];
    float m[DEC_WARPS][GT], l[DEC_WARPS][GT];
    float w[GT][DEC_MAX_SPLITS];
    float L[GT];
    bool last;
};

/* Rows a split of n_rows takes for tiles of GT heads: all of them up to
 * DEC_ONE_SPLIT_STEPS block steps, else a share of `splits` of at least a
 * step. */
template <typename T, int HD, int GT> static __device__ __forceinline__ int dec_chunk(int n_rows, int splits)
{
    constexpr int U = GT >= 8 ? DEC_STEPS_GT8 : DEC_STEPS;
    constexpr int STEP_ROWS = DEC_WARPS * dec_geom<T, HD>::RPW * U;
    return n_rows <= DEC_ONE_SPLIT_STEPS * STEP_ROWS ? n_rows : max((n_rows + splits - 1) / splits, STEP_ROWS);
}

/* Whether a token's n_rows take the small tiles of GTS heads, and how many
 * splits they have then (max_splits is one wave of the large tiles: as
 * many blocks in all). */
template <int HD, int GT, int GTS> static __device__ __forceinline__ bool dec_small(int n_rows)
{
    return GTS < GT && n_rows <= (HD <= 64 ? DEC_SHORT_ROWS_64 : DEC_SHORT_ROWS);
}
static __device__ __forceinline__ int dec_small_splits(int max_splits, int G, int GT, int n_gs)
{
    return max(1, max_splits * ((G + GT - 1) / GT) / n_gs);
}

/* The L2 asked for the cache rows r_begin..r_end - 1 of kv head kvh (K and
 * V, one prefetch a 128-byte line; the decode head dims make whole lines). */
template <typename T, int HD>
static __device__ __forceinline__ void dec_prefetch(const T *kb, const T *vb, size_t kvw, int n_ctx, int r_begin,
                                                    int r_end)
{
    constexpr int LINES = HD * (int)sizeof(T) / 128;
    static_assert(LINES >= 1 && HD * sizeof(T) % 128 == 0, "a cache row of whole 128-byte lines");
    const int n = (r_end - r_begin) * LINES;
    for (int i = threadIdx.x; i < 2 * n; i += ATT_THREADS) {
        const int ii = i < n ? i : i - n, r = r_begin + ii / LINES;
        const T *p = (i < n ? kb : vb) + (size_t)cu_cache_row(r, n_ctx) * kvw;
        asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char *>(p) + 128 * (ii % LINES)));
    }
}

/* Before the PDL wait, this block's cache rows into the L2, so that its
 * loads after the wait find them there instead of in HBM. The rows are the
 * earlier steps' (written before this step's graph began, as the position
 * was), but for this step's own, which the kernel before may be writing;
 * asking the L2 for those early is harmless (the reads after the wait see
 * what is there then). Only a hint: the position read here just picks
 * addresses inside the cache, the one read after the wait decides. One
 * sequence only (no slots), up to DEC_PREFETCH_ROWS rows. */
template <typename T, int HD, int GT, int GTS>
static __device__ __forceinline__ void dec_prefetch_block(const T *kc, const T *vc, int p, int Hkv, int n_ctx,
                                                          int n_pos, int max_splits, int window, int G, int n_gs,
                                                          int kvh, int j)
{
    const int rows = clamp_pos(p, n_pos) + 1, lo = window > 0 ? max(rows - window, 0) : 0;
    const int n_rows = rows - lo;
    if (n_rows > DEC_PREFETCH_ROWS)
        return;
    int chunk;
    if (dec_small<HD, GT, GTS>(n_rows))
        chunk = dec_chunk<T, HD, GTS>(n_rows, dec_small_splits(max_splits, G, GT, n_gs));
    else if (j * GT < G)
        chunk = dec_chunk<T, HD, GT>(n_rows, max_splits);
    else
        return;
    const int r_begin = lo + (int)blockIdx.x * chunk;
    if (r_begin >= rows)
        return;
    const size_t kvw = (size_t)Hkv * HD;
    dec_prefetch<T, HD>(kc + (size_t)kvh * HD, vc + (size_t)kvh * HD, kvw, n_ctx, r_begin, min(rows, r_begin + chunk));
}

/* One block's work: split `split` of the rows lo..rows-1 of token t for
 * query heads g0 .. g0 + GT - 1 of kv head kvh. Lane li of row group grp
 * owns 16-byte vectors j * LPR + li of its rows (LPR lanes per row, RPW
 * rows per warp step, U steps in flight). part holds, per (t, h, split), HD
 * accumulators then max and sum (max_splits of them a head); ticket
 * counts this tile's finished splits. */
template <typename T, int HD, int GT>
static __device__ __forceinline__ void dec_tile(dec_smem<HD, GT> &S, const float *__restrict__ q,
                                                const T *__restrict__ kc, const T *__restrict__ vc,
                                                const int32_t *__restrict__ slots, float *__restrict__ out,
                                                float *__restrict__ part, unsigned *ticket, int H, int Hkv,
                                                int n_ctx, int max_splits, int splits, float scale, float cap,
                                                int t, int split, int kvh, int g0, int lo, int rows)
{
    constexpr int LPR = dec_geom<T, HD>::LPR, VPL = dec_geom<T, HD>::VPL, EPV = dec_geom<T, HD>::EPV;
    constexpr int EPL = dec_geom<T, HD>::EPL, RPW = dec_geom<T, HD>::RPW;
    constexpr int U = GT >= 8 ? DEC_STEPS_GT8 : DEC_STEPS;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int grp = lane / LPR, li = lane % LPR;
    const int G = H / Hkv;
    /* this token's positions lo..rows-1: one split up to DEC_ONE_SPLIT_STEPS
     * steps, else at most `splits` chunks of at least a step; position j
     * is cache row cu_cache_row(j) */
    const int n_rows = rows - lo;
    const int chunk = dec_chunk<T, HD, GT>(n_rows, splits);
    const int used = (n_rows + chunk - 1) / chunk;
    if (split >= used) {
        return;
    }
    const int r_begin = lo + split * chunk, r_end = min(rows, r_begin + chunk);
    const size_t kvw = (size_t)Hkv * HD;

    float qv[GT][EPL], m[GT], l[GT], acc[GT][EPL];
#pragma unroll
    for (int g = 0; g < GT; g++) {
        const bool on = g0 + g < G;
        const float *qh = q + (size_t)t * H * HD + (size_t)(kvh * G + g0 + g) * HD;
#pragma unroll
        for (int j = 0; j < VPL; j++)
#pragma unroll
            for (int e = 0; e < EPV; e++) {
                qv[g][j * EPV + e] = on ? qh[(j * LPR + li) * EPV + e] : 0.0f;
                acc[g][j * EPV + e] = 0.0f;
            }
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    /* n_ctx: a slot's rows; this token's slot starts at row slot * n_ctx */
    const size_t slot0 = slots ? (size_t)slots[t] * n_ctx * kvw : 0;
    const T *kb = kc + slot0 + (size_t)kvh * HD, *vb = vc + slot0 + (size_t)kvh * HD;

    /* GT 4 tiles take longer steps where a split has more rows than one
     * step of DEC_STEPS (one wave of fewer blocks, fewer rounds of loads);
     * short splits keep the short steps, which spread rows over more warps */
    constexpr int UL = GT == 4 ? DEC_STEPS_GT4_LONG : U;
    if (UL != U && r_end - r_begin > DEC_WARPS * RPW * U)
        dec_rows<T, HD, GT, UL>(kb, vb, kvw, n_ctx, r_begin, r_end, warp, grp, li, scale, cap, qv, m, l, acc);
    else
        dec_rows<T, HD, GT, U>(kb, vb, kvw, n_ctx, r_begin, r_end, warp, grp, li, scale, cap, qv, m, l, acc);


    /* the warp's row groups merge (the same sums on both lanes of a pair) */
#pragma unroll
    for (int o = LPR; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < GT; g++) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo = __shfl_xor_sync(0xffffffffu, l[g], o);
            const float M = fmaxf(m[g], mo);
            const float c1 = m[g] == -INFINITY ? 0.0f : expf(m[g] - M);
            const float c2 = mo == -INFINITY ? 0.0f : expf(mo - M);
            l[g] = l[g] * c1 + lo * c2;
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                const float ao = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
                acc[g][e] = acc[g][e] * c1 + ao * c2;
            }
            m[g] = M;
        }
    }
    if (grp == 0) {
#pragma unroll
        for (int g = 0; g < GT; g++) {
#pragma unroll
            for (int j = 0; j < VPL; j++)
#pragma unroll
                for (int e = 0; e < EPV; e++)
                    S.acc[warp][g][(j * LPR + li) * EPV + e] = acc[g][j * EPV + e];
            if (li == 0) {
                S.m[warp][g] = m[g];
                S.l[warp][g] = l[g];
            }
        }
    }
    __syncthreads();

    /* the warps merge, in warp order; warp 0 always has rows */
    for (int i = tid; i < GT * HD; i += ATT_THREADS) {
        const int g = i / HD, e = i % HD;
        if (g0 + g >= G)
            continue;
        float M = S.m[0][g];
        for (int w = 1; w < DEC_WARPS; w++)
            M = fmaxf(M, S.m[w][g]);
        float L = 0.0f, A = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) {
            const float c = S.m[w][g] == -INFINITY ? 0.0f : expf(S.m[w][g] - M);
            L += S.l[w][g] * c;
            A += S.acc[w][g][e] * c;
        }
        const int h = kvh * G + g0 + g;
        if (used == 1) {
            out[(size_t)t * H * HD + (size_t)h * HD + e] = A / L;
        } else {
            float *pp = part + (((size_t)t * H + h) * max_splits + split) * DEC_PART(HD);
            pp[e] = A;
            if (e == 0) {
                pp[HD] = M;
                pp[HD + 1] = L;
            }
        }
    }
    if (used == 1)
        return;

    /* the last block of this (token, head tile) to finish merges the splits */
    __threadfence();
    __syncthreads();
    if (tid == 0)
        S.last = atomicAdd(ticket, 1u) == (unsigned)used - 1;
    __syncthreads();
    if (!S.last)
        return;
    __threadfence();
    const float *ph = part + ((size_t)t * H + kvh * G + g0) * max_splits * DEC_PART(HD);
    if (used <= DEC_MERGE_ONE) {
        /* few splits: a thread loads, in one round, its head's maximum and
         * sum and its four outputs' accumulators of every split, and weighs
         * them itself (every thread of a head the same loads in the same
         * order: the same weights) */
        for (int i = tid; i < GT * HD / 4; i += ATT_THREADS) {
            const int g = 4 * i / HD, e = (4 * i) % HD;
            if (g0 + g >= G)
                break; /* i grows with g */
            const float *pg = ph + (size_t)g * max_splits * DEC_PART(HD);
            float2 ml[DEC_MERGE_ONE];
            float4 a[DEC_MERGE_ONE];
#pragma unroll
            for (int sp = 0; sp < DEC_MERGE_ONE; sp++)
                if (sp < used) {
                    ml[sp] = __ldcg(reinterpret_cast<const float2 *>(pg + (size_t)sp * DEC_PART(HD) + HD));
                    a[sp] = __ldcg(reinterpret_cast<const float4 *>(pg + (size_t)sp * DEC_PART(HD) + e));
                }
            float M = ml[0].x;
#pragma unroll
            for (int sp = 1; sp < DEC_MERGE_ONE; sp++)
                if (sp < used)
                    M = fmaxf(M, ml[sp].x);
            float L = 0.0f;
            float4 A = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int sp = 0; sp < DEC_MERGE_ONE; sp++)
                if (sp < used) {
                    const float w = expf(ml[sp].x - M);
                    L += ml[sp].y * w;
                    A.x += a[sp].x * w;
                    A.y += a[sp].y * w;
                    A.z += a[sp].z * w;
                    A.w += a[sp].w * w;
                }
            *reinterpret_cast<float4 *>(out + (size_t)t * H * HD + (size_t)(kvh * G + g0 + g) * HD + e) =
                make_float4(A.x / L, A.y / L, A.z / L, A.w / L);
        }
        if (tid == 0)
            *ticket = 0; /* ready for the next launch */
        return;
    }
    /* every split's max and sum for the tile's heads, the loads in one
     * round (two past 128 splits), into shared memory: the maxima into S.w,
     * the sums over S.acc (free now: its reads were before the barriers
     * above) */
    float *s_ls = &S.acc[0][0][0]; /* [GT][DEC_MAX_SPLITS]: 4 x GT x HD >= GT x 256 floats */
    const int items = GT * used; /* (head g, split sp), g major */
    for (int i0 = tid; i0 < items; i0 += GT * ATT_THREADS) { /* one round up to 128 splits */
        float2 ml[GT];
#pragma unroll
        for (int u = 0; u < GT; u++) {
            const int i = i0 + u * ATT_THREADS, g = i / used, sp = i - g * used;
            ml[u] = i < items && g0 + g < G
                        ? __ldcg(reinterpret_cast<const float2 *>(ph + ((size_t)g * max_splits + sp) * DEC_PART(HD) + HD))
                        : make_float2(-INFINITY, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < GT; u++) {
            const int i = i0 + u * ATT_THREADS, g = i / used, sp = i - g * used;
            if (i < items) {
                S.w[g][sp] = ml[u].x;
                s_ls[g * DEC_MAX_SPLITS + sp] = ml[u].y;
            }
        }
    }
    __syncthreads();
    for (int g = warp; g < GT; g += DEC_WARPS) {
        if (g0 + g >= G)
            continue;
        float M = -INFINITY;
        for (int sp = lane; sp < used; sp += 32)
            M = fmaxf(M, S.w[g][sp]);
        M = cu_warp_max(M);
        float L = 0.0f;
        for (int sp = lane; sp < used; sp += 32) {
            const float w = expf(S.w[g][sp] - M);
            S.w[g][sp] = w;
            L += s_ls[g * DEC_MAX_SPLITS + sp] * w;
        }
        L = cu_warp_sum(L);
        if (lane == 0)
            S.L[g] = L;
    }
    __syncthreads();
    /* the outputs, four at a time (float4 of one head): each thread MO of
     * them, ML splits' loads in flight for each (one load round per ML
     * splits, not one per split); where the tile has fewer outputs than the
     * block has threads, TPO neighbouring lanes share one, each every
     * TPO-th split. A thread sums its splits in order, the TPO lanes by
     * shuffle tree: a fixed order for a given number of splits. */
    constexpr int NV4 = GT * HD / 4;
    constexpr int TPO = NV4 >= ATT_THREADS ? 1 : ATT_THREADS / NV4;
    constexpr int MO = NV4 / ATT_THREADS < 1 ? 1 : NV4 / ATT_THREADS;
    constexpr int ML = DEC_MERGE_LOADS / MO < 2 ? 2 : DEC_MERGE_LOADS / MO;
    const int sub = tid % TPO;
    float4 A[MO];
    const float *pk[MO];
    int gk[MO];
#pragma unroll
    for (int k = 0; k < MO; k++) {
        A[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const int i = min(tid / TPO + k * (ATT_THREADS / TPO), NV4 - 1);
        gk[k] = min(4 * i / HD, G - 1 - g0); /* past the group: a valid head, unused */
        pk[k] = ph + (size_t)gk[k] * max_splits * DEC_PART(HD) + (4 * i) % HD;
    }
    for (int sp0 = sub; sp0 < used; sp0 += ML * TPO) {
        float4 a[MO][ML];
#pragma unroll
        for (int k = 0; k < MO; k++)
#pragma unroll
            for (int u = 0; u < ML; u++)
                a[k][u] = sp0 + u * TPO < used ? __ldcg(reinterpret_cast<const float4 *>(
                                                     pk[k] + (size_t)(sp0 + u * TPO) * DEC_PART(HD)))
                                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int k = 0; k < MO; k++)
#pragma unroll
            for (int u = 0; u < ML; u++)
                if (sp0 + u * TPO < used) {
                    const float w = S.w[gk[k]][sp0 + u * TPO];
                    A[k].x += a[k][u].x * w;
                    A[k].y += a[k][u].y * w;
                    A[k].z += a[k][u].z * w;
                    A[k].w += a[k][u].w * w;
                }
    }
    for (int o = TPO / 2; o >= 1; o >>= 1) {
        A[0].x += __shfl_xor_sync(0xffffffffu, A[0].x, o);
        A[0].y += __shfl_xor_sync(0xffffffffu, A[0].y, o);
        A[0].z += __shfl_xor_sync(0xffffffffu, A[0].z, o);
        A[0].w += __shfl_xor_sync(0xffffffffu, A[0].w, o);
    }
#pragma unroll
    for (int k = 0; k < MO; k++) {
        const int i = tid / TPO + k * (ATT_THREADS / TPO), g = 4 * i / HD, e = (4 * i) % HD;
        if (sub == 0 && i < NV4 && g0 + g < G) {
            const float L = S.L[g];
            float4 r = make_float4(A[k].x / L, A[k].y / L, A[k].z / L, A[k].w / L);
            *reinterpret_cast<float4 *>(out + (size_t)t * H * HD + (size_t)(kvh * G + g0 + g) * HD + e) = r;
        }
    }
    if (tid == 0)
        *ticket = 0; /* ready for the next launch */
}

/* grid (max_splits, Hkv * tiles of GTS query heads, n). Rows beyond
 * DEC_SHORT_ROWS(_64) take tiles of GT heads (each K/V row read by fewer
 * blocks), fewer take tiles of GTS (GTS < GT: less work a block, more
 * blocks); with two sizes, the blocks past the large tiles return. */
template <typename T, int HD, int GT, int GTS>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_decode_kernel(const float *__restrict__ q, const T *__restrict__ kc, const T *__restrict__ vc,
                       const int32_t *__restrict__ pos, const int32_t *__restrict__ slots, float *__restrict__ out,
                       float *__restrict__ part, unsigned *__restrict__ tickets, int H, int Hkv, int n_ctx, int n_pos,
                       int max_splits, float scale, int window, float cap)
{
    __shared__ __align__(16) unsigned char raw[sizeof(dec_smem<HD, GT>)];
    const int t = blockIdx.z, G = H / Hkv, n_gs = (G + GTS - 1) / GTS;
    const int kvh = blockIdx.y / n_gs, j = blockIdx.y % n_gs;
#if DEC_PREFETCH
#if DEC_PREFETCH_TRIGGER && CU_PDL_EARLY
    cu_pdl_trigger(); /* as cu_pdl_enter would first (again there: no further effect) */
#endif
    if (!slots && (!DEC_PREFETCH_ONE_TILE || j == 0))
        dec_prefetch_block<T, HD, GT, GTS>(kc, vc, pos[t], Hkv, n_ctx, n_pos, max_splits, window, G, n_gs, kvh, j);
#endif
    cu_pdl_enter(); /* q and the rows just stored come from earlier kernels */
    const int rows = clamp_pos(pos[t], n_pos) + 1, lo = window > 0 ? max(rows - window, 0) : 0;
    unsigned *ticket = tickets + (size_t)t * gridDim.y + blockIdx.y;
    if (dec_small<HD, GT, GTS>(rows - lo)) {
        const int splits = dec_small_splits(max_splits, G, GT, n_gs);
        dec_tile<T, HD, GTS>(*reinterpret_cast<dec_smem<HD, GTS> *>(raw), q, kc, vc, slots, out, part, ticket, H,
                             Hkv, n_ctx, max_splits, splits, scale, cap, t, blockIdx.x, kvh, j * GTS, lo, rows);
    } else if (j * GT < G) {
        dec_tile<T, HD, GT>(*reinterpret_cast<dec_smem<HD, GT> *>(raw), q, kc, vc, slots, out, part, ticket, H, Hkv,
                            n_ctx, max_splits, max_splits, scale, cap, t, blockIdx.x, kvh, j * GT, lo, rows);
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
template <typename T, int HDP, int BQ>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_tiled_kernel(const float *__restrict__ q, const T *__restrict__ kc, const T *__restrict__ vc,
                      const int32_t *__restrict__ slots, const int32_t *__restrict__ pos, float *__restrict__ out,
                      int n, int H, int Hkv, int hd, int n_ctx, int n_pos, float scale, int window, float cap,
                      int nq)
{
    constexpr int RQ = BQ / 16, CK = TILE_BK / 8, CO = HDP / 8;
    extern __shared__ float4 smem4[];
    __shared__ int s_pos[BQ];
    const int ld = hd + 1;
    float *Qs = reinterpret_cast<float *>(smem4); /* [BQ][ld] */
    float *Ks = Qs + BQ * ld;                     /* [BK][ld] */
    float *Vs = Ks + TILE_BK * ld;                /* [BK][hd] */
    float *Ps = Vs + TILE_BK * hd;                /* [BQ][BK + 1] */

    cu_pdl_enter();
    const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;
    /* nq queries per block: BQ, or 1 where the node's tokens may be of
     * different sequence slots (each block then reads its token's slot) */
    const int t0 = blockIdx.x * nq, h = blockIdx.y, kvh = h / (H / Hkv);
    const size_t qw = (size_t)H * hd, kvw = (size_t)Hkv * hd;
    if (slots) { /* (1.5) the block's tokens are of token t0's slot of n_ctx rows */
        kc += (size_t)slots[t0] * n_ctx * kvw;
        vc += (size_t)slots[t0] * n_ctx * kvw;
    }
    if (tid < BQ)
        s_pos[tid] = tid < nq && t0 + tid < n ? clamp_pos(pos[t0 + tid], n_pos) : -1;
    for (int i = tid; i < BQ * hd; i += ATT_THREADS) {
        int r = i / hd, e = i % hd;
        Qs[r * ld + e] = r < nq && t0 + r < n ? q[(t0 + r) * qw + (size_t)h * hd + e] : 0.0f;
    }
    __syncthreads();
    /* keys kmin..kmax: from the earliest row a query's window reaches (0
     * without a window) to the block's last position */
    int kmax = -1, kmin = INT_MAX, myp[RQ];
    for (int r = 0; r < BQ; r++) {
        kmax = max(kmax, s_pos[r]);
        if (s_pos[r] >= 0)
            kmin = min(kmin, window > 0 ? max(s_pos[r] - window + 1, 0) : 0);
    }
    kmin = kmin == INT_MAX ? 0 : kmin / TILE_BK * TILE_BK;
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

    for (int j0 = kmin; j0 <= kmax; j0 += TILE_BK) {
        __syncthreads(); /* the last tile's readers are done */
        for (int i = tid; i < TILE_BK * hd; i += ATT_THREADS) {
            int r = i / hd, e = i % hd, j = j0 + r;
            bool in = j <= kmax;
            size_t off = (size_t)cu_cache_row(in ? j : 0, n_ctx) * kvw + (size_t)kvh * hd + e;
            Ks[r * ld + e] = in ? cu_to_f32(kc[off]) : 0.0f;
            Vs[r * hd + e] = in ? cu_to_f32(vc[off]) : 0.0f;
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
                const bool vis = j <= myp[i] && (window <= 0 || j > myp[i] - window);
                s[i][c] = vis ? attn_score(s[i][c], scale, cap) : -INFINITY;
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
        if (ty * RQ + i >= nq || t >= n)
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
    int n, H, Hkv, hd, n_ctx; /* n_ctx: rows of one sequence slot */
    bool mixed;            /* (1.5) tokens of several slots */
    bool decode;           /* attn_decode_kernel takes it */
    int gt;                /* query heads per block there */
    int gts;               /* and below DEC_SHORT_ROWS rows */
    int max_splits;
} attn_shape;

static int pow2_at_least(int g)
{
    int p = 1;
    while (p < g && p < DEC_MAX_GT)
        p *= 2;
    return p;
}

/* the short tile of an instance with tiles of GT heads */
static constexpr int dec_gts(int gt) { return gt < DEC_GT_SHORT ? gt : DEC_GT_SHORT; }

template <typename T, int HD, int GT> static int dec_occupancy(void)
{
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_decode_kernel<T, HD, GT, dec_gts(GT)>, ATT_THREADS,
                                                      0) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return n > 0 ? n : 1;
}

template <typename T, int HD> static int dec_occupancy_gt(int gt)
{
    return gt == 1 ? dec_occupancy<T, HD, 1>() : gt == 2 ? dec_occupancy<T, HD, 2>()
#if DEC_MAX_GT >= 8
           : gt == 8 ? dec_occupancy<T, HD, 8>()
#endif
                     : dec_occupancy<T, HD, 4>();
}

/* Blocks of attn_decode_kernel<cache dtype, hd, gt> one SM holds at once
 * (its registers decide: a GT 8 tile of half caches takes over 200 a
 * thread), at most DEC_BLOCKS_PER_SM: the grid is one wave of them. Asked of
 * the runtime once per instance. */
static int dec_blocks_per_sm(gk_dtype cache, int hd, int gt)
{
    static int memo[3][3][4]; /* dtype, hd 64/128/256, gt 1/2/4/8; 0 = not asked yet */
    const int di = cache == GK_DTYPE_F16 ? 0 : cache == GK_DTYPE_BF16 ? 1 : 2;
    const int hi = hd == 64 ? 0 : hd == 128 ? 1 : 2, gi = gt == 1 ? 0 : gt == 2 ? 1 : gt == 4 ? 2 : 3;
    int *m = &memo[di][hi][gi];
    if (*m == 0) {
        int n = 1;
        if (cache == GK_DTYPE_F16)
            n = hd == 64 ? dec_occupancy_gt<__half, 64>(gt) : hd == 128 ? dec_occupancy_gt<__half, 128>(gt)
                                                                       : dec_occupancy_gt<__half, 256>(gt);
        else if (cache == GK_DTYPE_BF16)
            n = hd == 64    ? dec_occupancy_gt<__nv_bfloat16, 64>(gt)
                : hd == 128 ? dec_occupancy_gt<__nv_bfloat16, 128>(gt)
                            : dec_occupancy_gt<__nv_bfloat16, 256>(gt);
        else
            n = hd == 64 ? dec_occupancy_gt<float, 64>(gt) : hd == 128 ? dec_occupancy_gt<float, 128>(gt)
                                                                        : dec_occupancy_gt<float, 256>(gt);
        *m = n < DEC_BLOCKS_PER_SM ? n : DEC_BLOCKS_PER_SM;
    }
    return *m;
}

static attn_shape plan(const cu_ctx *c, const gk_node *nd)
{
    attn_shape a;
    a.n = (int)nd->src[0]->rows;
    a.H = nd->i[0];
    a.Hkv = nd->i[1];
    a.hd = nd->i[2];
    a.n_ctx = cu_slot_rows(nd);
    a.mixed = nd->f[3] < 0.0f;
    a.gt = pow2_at_least(a.H / a.Hkv);
    a.gts = dec_gts(a.gt);
    const int tiles_long = a.Hkv * (int)cu_div_up(a.H / a.Hkv, a.gt);
    const int tiles_y = a.Hkv * (int)cu_div_up(a.H / a.Hkv, a.gts);
    /* tokens of several slots (one each, gk_seq_decode) take the decode
     * kernel at any count; it finds each token's slot */
    a.decode = (a.n <= DEC_MAX_TOKENS || a.mixed) && (a.hd == 64 || a.hd == 128 || a.hd == 256) &&
               cu_aligned16(nd->src[4]->data) && cu_aligned16(nd->src[5]->data) && cu_aligned16(nd->dst->data) &&
               (int64_t)a.n * tiles_y <= CU_TICKETS;
    /* enough splits for one wave of blocks (up to DEC_BLOCKS_PER_SM per SM)
     * once the cache has that many rows; each block finds its rows from the
     * position */
    const int per_sm = a.decode ? dec_blocks_per_sm(nd->src[4]->dtype, a.hd, a.gt) : 1;
    int want = (int)cu_div_up((int64_t)per_sm * c->n_sm, (int64_t)tiles_long * a.n);
    a.max_splits = want < 1 ? 1 : want > DEC_MAX_SPLITS ? DEC_MAX_SPLITS : want > a.n_ctx ? a.n_ctx : want;
    return a;
}

size_t cu_attn_scratch(const cu_ctx *c, const gk_node *nd)
{
    attn_shape a = plan(c, nd);
    if (!a.decode || a.max_splits == 1)
        return 0;
    return (size_t)a.n * a.H * a.max_splits * DEC_PART(a.hd) * sizeof(float);
}

template <typename T, int HD, int GT>
static cudaError_t decode_launch(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    dim3 grid(a.max_splits, a.Hkv * cu_div_up(a.H / a.Hkv, dec_gts(GT)), a.n);
    return cu_launch(c, attn_decode_kernel<T, HD, GT, dec_gts(GT)>, grid, dim3(ATT_THREADS), 0, (const float *)nd->src[0]->data,
                     (const T *)nd->src[4]->data, (const T *)nd->src[5]->data, (const int32_t *)nd->src[3]->data,
                     cu_slots(nd), (float *)nd->dst->data, a.max_splits > 1 ? (float *)c->scratch : nullptr, c->tickets, a.H,
                     a.Hkv, a.n_ctx, cu_cache_positions(nd), a.max_splits, nd->f[0], nd->i[3], nd->f[1]);
}

template <typename T, int HD>
static cudaError_t decode_gt(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    switch (a.gt) {
    case 1: return decode_launch<T, HD, 1>(c, a, nd);
    case 2: return decode_launch<T, HD, 2>(c, a, nd);
#if DEC_MAX_GT >= 8
    case 8: return decode_launch<T, HD, 8>(c, a, nd);
#endif
    default: return decode_launch<T, HD, 4>(c, a, nd);
    }
}

template <typename T>
static cudaError_t decode_run(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    switch (a.hd) {
    case 64: return decode_gt<T, 64>(c, a, nd);
    case 128: return decode_gt<T, 128>(c, a, nd);
    default: return decode_gt<T, 256>(c, a, nd);
    }
}

template <typename T, int HDP>
static cudaError_t tiled_launch(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    constexpr int BQ = tiled_bq(HDP);
    const int nq = a.mixed ? 1 : BQ;
    dim3 grid(cu_div_up(a.n, nq), a.H);
    return cu_launch(c, attn_tiled_kernel<T, HDP, BQ>, grid, dim3(ATT_THREADS), tiled_smem(a.hd, BQ),
                     (const float *)nd->src[0]->data, (const T *)nd->src[4]->data, (const T *)nd->src[5]->data,
                     cu_slots(nd),
                     (const int32_t *)nd->src[3]->data, (float *)nd->dst->data, a.n, a.H, a.Hkv, a.hd, a.n_ctx,
                     cu_cache_positions(nd), nd->f[0], nd->i[3], nd->f[1], nq);
}

template <typename T>
static cudaError_t tiled_run(cu_ctx *c, const attn_shape &a, const gk_node *nd)
{
    if (a.hd <= 32)
        return tiled_launch<T, 32>(c, a, nd);
    if (a.hd <= 64)
        return tiled_launch<T, 64>(c, a, nd);
    if (a.hd <= 128)
        return tiled_launch<T, 128>(c, a, nd);
    return tiled_launch<T, 256>(c, a, nd);
}

template <typename T, int HDP>
static gk_status tiled_setup(gk_err *err)
{
    constexpr int BQ = tiled_bq(HDP);
    cudaError_t e = cudaFuncSetAttribute(attn_tiled_kernel<T, HDP, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)tiled_smem(HDP, BQ));
    if (e != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: attention kernel for head dim %d needs %zu bytes of shared memory: %s",
                          HDP, tiled_smem(HDP, BQ), cudaGetErrorString(e));
    return GK_OK;
}

template <typename T>
static gk_status tiled_setup_all(gk_err *err)
{
    gk_status s = tiled_setup<T, 32>(err);
    if (s == GK_OK)
        s = tiled_setup<T, 64>(err);
    if (s == GK_OK)
        s = tiled_setup<T, 128>(err);
    if (s == GK_OK)
        s = tiled_setup<T, 256>(err);
    return s;
}

gk_status cu_attn_setup(cu_ctx *c, gk_err *err)
{
    gk_status s = tiled_setup_all<float>(err);
    if (s == GK_OK)
        s = tiled_setup_all<__half>(err);
    if (s == GK_OK)
        s = tiled_setup_all<__nv_bfloat16>(err);
    return s;
}

gk_status cu_attn_store(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *k = nd->src[1], *v = nd->src[2];
    int kvw = (int)k->cols, n_ctx = cu_slot_rows(nd), n_pos = cu_cache_positions(nd);
    const int32_t *slots = cu_slots(nd);
    bool v4 = kvw % 4 == 0 && cu_aligned16(k->data) && cu_aligned16(v->data);
    cudaError_t e;
    CU_WEIGHT_SWITCH(nd->src[4]->dtype, T, {
        if (v4)
            e = cu_launch(c, kv_store_kernel<T, true>, dim3((unsigned)k->rows), dim3(ATT_THREADS), 0,
                          (const float *)k->data, (const float *)v->data, (const int32_t *)nd->src[3]->data, slots,
                          (T *)nd->src[4]->data, (T *)nd->src[5]->data, kvw, n_ctx, n_pos, c->err_dev);
        else
            e = cu_launch(c, kv_store_kernel<T, false>, dim3((unsigned)k->rows), dim3(ATT_THREADS), 0,
                          (const float *)k->data, (const float *)v->data, (const int32_t *)nd->src[3]->data, slots,
                          (T *)nd->src[4]->data, (T *)nd->src[5]->data, kvw, n_ctx, n_pos, c->err_dev);
    });
    return cu_launch_result(e, nd, "kv_store_kernel", err);
}

gk_status cu_attn_stored(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    attn_shape a = plan(c, nd);
    cudaError_t e;
    if (a.decode) {
        CU_WEIGHT_SWITCH(nd->src[4]->dtype, T, { e = decode_run<T>(c, a, nd); });
        return cu_launch_result(e, nd, "attn_decode_kernel", err);
    }
    /* f[3] > 0: every token is of the slot of token 0, which the kernels
     * read on the device (a slotted prefill runs one sequence at a time);
     * f[3] < 0 without the decode kernel: the tiled one, a token per block */
    if (!a.mixed && cu_attn_flash_ok(c, nd))
        return cu_attn_flash(c, nd, err);
    CU_WEIGHT_SWITCH(nd->src[4]->dtype, T, { e = tiled_run<T>(c, a, nd); });
    return cu_launch_result(e, nd, "attn_tiled_kernel", err);
}

gk_status cu_attn(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    gk_status s = cu_attn_store(c, nd, err);
    return s == GK_OK ? cu_attn_stored(c, nd, err) : s;
}
