/* mk.cu - decode as one persistent kernel per step (the "megakernel").
 *
 * A decode graph (one token) is a chain of small steps, and at batch 1 each
 * is a stream of weights: what keeps a chain of kernels below the memory
 * limit is the boundary between them, where the next matrix waits until the
 * previous kernel has drained. Here the whole graph runs as one cooperative
 * kernel whose blocks (one per SM, all resident) walk a program of stages:
 *
 *   ROWS   an embedding row (GET_ROWS of one id)
 *   ADD    an elementwise sum (GPT-2's token + position embeddings)
 *   GEMV   [norm or activation of the input ->] 1..3 matrices reading it
 *          [-> residual add]: the fused decode GEMV's descriptor (gemv.cu)
 *   NORM   a whole-row RMS or layer norm read by something else than a GEMV
 *   ATTN   [QK-norm,] RoPE, the cache store of k and v, and the attention of
 *          the token over the cache: a block per (head, split), its warps
 *          merged in shared memory, the splits by the head's last block
 *
 * The planner (cu_mk_plan) takes any graph the architecture plugin built
 * and maps its nodes onto these stages with the same matchers the per-op
 * path fuses with (cu_plan_gemv, cu_rope_store_match); a node it has no
 * stage for sends the graph down the per-op path, with the reason kept for
 * `gkrun -v` / `gkrun bench`. A trailing GK_OP_SAMPLE runs after the kernel
 * as its own launch.
 *
 * Dependencies: stage s reads what stages < s wrote, so a block waits until
 * every block has arrived at the end of stage s - 1 (one counter, monotone
 * within a launch, reset by the last block out). The weights of a GEMV
 * stage depend on nothing, so they do not wait: the last warp of each
 * block is a producer that streams the block's weight tiles with the copy
 * engine (cp.async.bulk, completing on mbarriers) into a ring in shared
 * memory, stage after stage, as far ahead as the ring has room, while the
 * other 15 warps (the consumers) wait for the stages before to finish.
 * This is what the kernel boundary forbids.
 *
 * Work: a GEMV's rows are split evenly over the blocks (whole rows, in
 * order), and a block's rows into jobs of up to 4 KB (several short rows,
 * or one long row in pieces) that go to the consumer warps in turn; each
 * consumer warp owns depth slots of the ring and its producer lane fills
 * them in the order the warp reads them. The input h (normed, or
 * activated) is built once per block in shared memory after the wait.
 * Attention (head, split) units go to blocks. Activations are read with
 * ld.global.cg (L2): other SMs wrote them in this launch. Sums are in a
 * fixed order (lanes, then shuffle trees, splits in order), so a step gives
 * the same bits every run.
 *
 * Not here: prefill (many tokens: cuBLAS and the tiled kernels), sliding
 * windows, ring or slotted caches, softcaps, partial rotary, grouped norms
 * and quantized weights; graphs with those run per-op.
 */
#include "cuda_common.cuh"

#include <stdio.h>
#include <string.h>

#define MK_THREADS 512
#define MK_WARPS (MK_THREADS / 32)
#define MK_CW (MK_WARPS - 1)   /* consumer warps; the last warp is the producer */
#define MK_CT (MK_CW * 32)
#define MK_MAX_SLOTS 48        /* weight ring slots a block has at most */
#define MK_TILE_BYTES 4096     /* a ring slot: whole rows, or a piece of one */
#define MK_ATT_ROWS 4          /* cache rows a lane group has in flight */
#define MK_MAX_IN 16384        /* widest GEMV input (h in shared memory: 64 KB) */
#define MK_MAX_STAGES 1024
#define MK_PROGS 16            /* device copies of programs kept */
#define MK_PROF_W 8            /* (profiling) timestamps a stage has per block */
/* attention's shared memory (floats): QK-norm and inv_freq, q/k/v head
 * rows, a partial per consumer warp and the block's */
#define MK_ATT_FLOATS (6 * CU_ATTN_MAX_HEAD_DIM + (MK_CW + 1) * (CU_ATTN_MAX_HEAD_DIM + 2))

enum { MK_ROWS = 1, MK_ADD, MK_GEMV, MK_ATTN, MK_NORM };
enum { MK_ACT_NONE = 0, MK_ACT_SWIGLU, MK_ACT_GELU };

struct mk_rows {
    const void *table;
    const int32_t *ids;
    float *dst;
    int n_rows, d, dtype;
};

struct mk_add {
    const float *a, *b;
    float *dst;
    int n;
};

struct mk_norm {               /* a whole-row norm of one token (block 0) */
    const float *x;
    float *dst;
    const void *w, *b;
    int d, rms, dtype;
    float eps;
};

struct mk_gemv {
    const float *x, *x2;       /* input (gate with SWIGLU), up with SWIGLU */
    int pro, act, in, count;   /* prologue (cu_gemv_pro), input activation */
    int norm_type;
    const void *norm_w, *norm_b;
    float eps;
    float *norm_out, *act_out; /* written by block 0 when not NULL */
    const void *W[CU_GEMV_MAX_MATS], *bias[CU_GEMV_MAX_MATS];
    float *y[CU_GEMV_MAX_MATS];
    int first[CU_GEMV_MAX_MATS + 1]; /* rows of matrix k: first[k] .. first[k + 1] - 1 */
    const float *res;
    float *res_out;            /* residual epilogue (count 1) when not NULL */
};

struct mk_attn {
    const float *q, *k, *v;    /* projections [H*hd], [Hkv*hd] x2 */
    const void *qn_w, *kn_w;   /* QK-norm weights [hd] (norm_type) or NULL */
    float *q_norm, *k_norm;
    const float *inv_freq;     /* [hd/2], or NULL: no rotation */
    float *q_rope, *k_rope;
    void *kc, *vc;             /* caches [n_ctx][Hkv*hd] of cache_type */
    const int32_t *pos;
    float *out;                /* [H*hd] */
    int H, Hkv, hd, n_ctx, norm_type, cache_type, msp; /* msp: splits a head may use */
    float eps, rope_scale, scale;
};

struct mk_stage {
    int kind;
    union {
        mk_rows rows;
        mk_add add;
        mk_gemv gemv;
        mk_attn attn;
        mk_norm norm;
    };
};

/* A block's shared memory (dynamic): a work area of floats, then the
 * weight ring. GEMV: h [hmax], the norm's weight and bias as stored
 * ([nmax] floats of room each). Attention: its weights (QK-norm, inv_freq),
 * three head rows, a partial per warp (MK_ATT_FLOATS). The ring: tw x depth
 * slots of MK_TILE_BYTES; consumer warp w owns slots w * depth .. + depth - 1
 * and takes their uses in order, so a slot's mbarrier phases never run
 * ahead of each other. */
struct mk_ring {
    int hmax, nmax;
    int tw, depth;  /* warps that take tiles, slots each */
    int ring_off;   /* bytes from the start of dynamic shared memory */
};

/* (profiling, GK_MEGAKERNEL_PROFILE) where mk_wait notes when it returned */
__device__ unsigned long long *mk_prof_wait;

/* -------------------------------------------------------------- device */
/* The device code needs compute capability 9.0 (bulk copies, mbarrier
 * waits); for older targets the kernel is built empty and the host never
 * launches it there (cu_mk_run checks). */
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#include "mk_sync.cuh"

/* The consumer warps' barrier (named barrier 1: the producer warp runs
 * on its own and never joins). */
static __device__ __forceinline__ void mk_csync(void) { asm volatile("bar.sync 1, %0;" ::"n"(MK_CT) : "memory"); }

/* The block has finished its share of the stage: count it (a release:
 * every consumer's writes are ordered before it by the barrier). */
static __device__ __forceinline__ void mk_arrive(unsigned *bar)
{
    mk_csync();
    if (threadIdx.x == 0)
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(bar), "r"(1u) : "memory");
}

/* A sum over the consumer threads, in a fixed order. */
static __device__ __forceinline__ float mk_csum(float v, float *red)
{
    return cu_warps_sum(v, red, MK_CW, [] { mk_csync(); });
}

/* Every block has arrived `target` times in all. */
static __device__ __forceinline__ void mk_wait(const unsigned *bar, unsigned target)
{
    if (threadIdx.x == 0) {
        while (mk_ld_acquire(bar) < target)
            ;
        if (mk_prof_wait)
            mk_prof_wait[((size_t)(target / gridDim.x) * gridDim.x + blockIdx.x) * MK_PROF_W + 1] = mk_clock();
    }
    mk_csync();
}

static __device__ __forceinline__ float mk_round(float v, int ty)
{
    if (ty == GK_DTYPE_F16)
        return __half2float(__float2half_rn(v));
    if (ty == GK_DTYPE_BF16)
        return __bfloat162float(__float2bfloat16_rn(v));
    return v;
}

static __device__ __forceinline__ void mk_st_any(void *p, int ty, size_t i, float v)
{
    if (ty == GK_DTYPE_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else if (ty == GK_DTYPE_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}

/* Eight consecutive cache elements (8-element aligned) as floats. */
static __device__ __forceinline__ void mk_ld8(const void *base, int ty, size_t i, float (&f)[8])
{
    if (ty == GK_DTYPE_F32) {
        const uint4 *p = reinterpret_cast<const uint4 *>((const float *)base + i);
        float a[4], b[4];
        cu_unpack16(cu_ld_nc16(p), a, 0.0f);
        cu_unpack16(cu_ld_nc16(p + 1), b, 0.0f);
#pragma unroll
        for (int e = 0; e < 4; e++)
            f[e] = a[e], f[4 + e] = b[e];
    } else if (ty == GK_DTYPE_F16) {
        cu_unpack16(cu_ld_nc16(reinterpret_cast<const uint4 *>((const __half *)base + i)), f, __half());
    } else {
        cu_unpack16(cu_ld_nc16(reinterpret_cast<const uint4 *>((const __nv_bfloat16 *)base + i)), f,
                    __nv_bfloat16());
    }
}

static __device__ void mk_run_rows(const mk_rows &r, int gt, int nt, int *ew)
{
    const int id = __ldcg(r.ids);
    if (id < 0 || id >= r.n_rows) {
        if (gt == 0)
            cu_note(ew, CU_ERR_BAD_ID, id, 0, r.n_rows);
        for (int j = gt; j < r.d; j += nt)
            r.dst[j] = __int_as_float(0x7fc00000);
        return;
    }
    for (int j = gt; j < r.d; j += nt)
        r.dst[j] = cu_ld_elem(r.table, r.dtype, (size_t)id * r.d + j);
}

/* RMS_NORM / LAYER_NORM of one row, by block 0 alone (the formulas of
 * norm.cu; the sums in this kernel's order). */
static __device__ void mk_run_norm(const mk_norm &n, float *red)
{
    if (blockIdx.x != 0)
        return;
    float p = 0.0f;
    for (int j = threadIdx.x; j < n.d; j += MK_CT) {
        const float v = __ldcg(n.x + j);
        p += n.rms ? v * v : v;
    }
    float s = mk_csum(p, red), mean = 0.0f, scale;
    if (n.rms) {
        scale = 1.0f / sqrtf(s / (float)n.d + n.eps);
    } else {
        mean = s / (float)n.d;
        p = 0.0f;
        for (int j = threadIdx.x; j < n.d; j += MK_CT) {
            const float v = __ldcg(n.x + j) - mean;
            p += v * v;
        }
        s = mk_csum(p, red);
        scale = 1.0f / sqrtf(s / (float)n.d + n.eps);
    }
    for (int j = threadIdx.x; j < n.d; j += MK_CT) {
        const float v = __ldcg(n.x + j), w = cu_ld_elem(n.w, n.dtype, j);
        float h = n.rms ? w * (v * scale) : (v - mean) * scale * w;
        if (!n.rms && n.b)
            h = h + cu_ld_elem(n.b, n.dtype, j);
        n.dst[j] = h;
    }
}

static __device__ void mk_run_add(const mk_add &a, int gt, int nt)
{
    for (int j = gt; j < a.n; j += nt)
        a.dst[j] = __ldcg(a.a + j) + __ldcg(a.b + j);
}

static __device__ __forceinline__ float mk_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
static __device__ __forceinline__ float mk_gelu(float a)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * a * (1.0f + tanhf(k * (a + 0.044715f * a * a * a)));
}

/* 16 bytes global -> shared without a register (cp.async), and the wait for
 * all of this thread's. */
static __device__ __forceinline__ void mk_cp16(void *dst, const void *src)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
static __device__ __forceinline__ void mk_cp_wait(void) { asm volatile("cp.async.wait_all;" ::: "memory"); }

/* Block-wide: n bytes (a multiple of 16, 16-byte aligned) into shared memory. */
static __device__ __forceinline__ void mk_stage_bytes(void *dst, const void *src, int n)
{
    for (int i = threadIdx.x; i < n / 16; i += MK_CT)
        mk_cp16((char *)dst + 16 * i, (const char *)src + 16 * i);
}

/* The rows block b of G takes in a GEMV of R rows: [r0, r1). */
static __device__ __forceinline__ void mk_block_rows(int R, int b, int G, int &r0, int &r1)
{
    r0 = (int)((long long)b * R / G);
    r1 = (int)((long long)(b + 1) * R / G);
}

/* The GEMV's work is jobs. The block's rows of matrix k (a segment) are
 * cut into jobs of rpt rows that fit a tile (the last one shorter), or,
 * where one row does not fit, into single rows of np tiles of
 * MK_TILE_BYTES. The block's jobs are numbered in order across stages, and
 * job j goes to consumer warp j % tw, its tiles into that warp's slots in
 * turn. */
template <typename T>
static __device__ __forceinline__ void mk_job_shape(int in, int &np, int &rpt)
{
    constexpr int VEC = 16 / sizeof(T), PV = MK_TILE_BYTES / 16;
    const int nv = in / VEC;
    np = (nv + PV - 1) / PV;
    rpt = np > 1 ? 1 : min(32, MK_TILE_BYTES / (in * (int)sizeof(T)));
}

/* The first of warp w's jobs in a segment of nj jobs whose first job is
 * the block's job jb (nj: none), tw warps taking jobs in turn. */
static __device__ __forceinline__ int mk_first_job(int w, unsigned jb, int nj, int tw)
{
    return w < tw ? (int)(((unsigned)w + (unsigned)tw - jb % (unsigned)tw) % (unsigned)tw) : nj;
}

/* The producers (lane w of the last warp for consumer warp w): every tile
 * of warp w's jobs, stage after stage, into warp w's slots as soon as one
 * is free. They read only weights and the program, so they run ahead of
 * the dependencies: the copies of a stage's weights are in flight while
 * the stages before it finish. A lane a warp, so that the copies of all
 * warps go out side by side: one thread for all could not issue them as
 * fast as HBM delivers 4 KB tiles (docs/perf-notes.md, session 6). */
template <typename T, bool P>
static __device__ void mk_produce(const mk_stage *prog, int n_stages, const mk_ring &rg, unsigned char *ring,
                                  unsigned long long *full, unsigned long long *empty)
{
    constexpr int VEC = 16 / sizeof(T), PV = MK_TILE_BYTES / 16;
    const int w = threadIdx.x & 31;
    if (w >= rg.tw)
        return;
    unsigned long long policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    int si = 0;      /* the next of the warp's slots */
    unsigned us = 0; /* rounds of its slots used so far */
    unsigned jb = 0; /* the block's jobs so far */
    for (int s = 0; s < n_stages; s++) {
        if (__ldg(&prog[s].kind) != MK_GEMV)
            continue;
        /* (P: profiling) this stage's timestamps, time spent on empty slots */
        unsigned long long *pr = P ? mk_prof_wait + ((size_t)s * gridDim.x + blockIdx.x) * MK_PROF_W : nullptr, pw = 0;
        const mk_gemv *g = &prog[s].gemv;
        const int in = __ldg(&g->in), count = __ldg(&g->count), nv = in / VEC;
        const size_t rowb = (size_t)in * sizeof(T);
        int np, rpt, r0, r1;
        mk_job_shape<T>(in, np, rpt);
        mk_block_rows(__ldg(&g->first[count]), blockIdx.x, gridDim.x, r0, r1);
        for (int k = 0; k < count; k++) {
            const int fk = __ldg(&g->first[k]);
            const int sa = max(r0, fk), sb = min(r1, __ldg(&g->first[k + 1]));
            if (sa >= sb)
                continue;
            const int nj = (sb - sa + rpt - 1) / rpt, i0 = mk_first_job(w, jb, nj, rg.tw);
            jb += (unsigned)nj;
            const unsigned char *Wk =
                (const unsigned char *)__ldg(reinterpret_cast<const unsigned long long *>(&g->W[k]));
            for (int i = i0; i < nj; i += rg.tw) {
                const int ra = sa + i * rpt;
                const unsigned char *src = Wk + (size_t)(ra - fk) * rowb;
                for (int p = 0; p < np; p++) {
                    const unsigned slot = (unsigned)(w * rg.depth + si), use = us;
                    if (++si == rg.depth)
                        si = 0, us++;
                    if (use > 0) {
                        const unsigned long long t = pr ? mk_clock() : 0;
                        mk_mbar_wait(empty + slot, (use - 1) & 1u);
                        if (pr)
                            pw += mk_clock() - t;
                    }
                    const unsigned bytes = np > 1 ? (unsigned)min(PV, nv - p * PV) * 16u
                                                  : (unsigned)((size_t)min(rpt, sb - ra) * rowb);
                    mk_mbar_expect(full + slot, bytes);
                    mk_bulk_load(ring + (size_t)slot * MK_TILE_BYTES, src + (size_t)p * MK_TILE_BYTES, bytes,
                                 full + slot, policy);
                    if (pr) {
                        const unsigned long long t = mk_clock();
                        atomicCAS(pr + 4, 0ull, t);
                        atomicMax(pr + 5, t);
                    }
                }
            }
        }
        if (pr && pw)
            atomicAdd(pr + 7, pw);
    }
}

/* The norm's weights (and bias) into shared memory, before the wait: they
 * are weights, nothing in the step writes them. */
static __device__ __forceinline__ void mk_gemv_stage_norm(const mk_gemv &g, float *nw, float *nb_)
{
    if (g.pro == CU_PRO_NONE)
        return;
    const int nb = g.in * (g.norm_type == GK_DTYPE_F32 ? 4 : 2);
    mk_stage_bytes(nw, g.norm_w, nb);
    if (g.norm_b)
        mk_stage_bytes(nb_, g.norm_b, nb);
}

/* h = prologue(x) into shared memory, laid out [QV][nv] so a lane's 16
 * bytes of weights meet its h without bank conflicts; x is read once.
 * Consumer-wide; ends with a barrier. */
template <typename T>
static __device__ __noinline__ void mk_prologue(const mk_gemv &g, float *sm, const float *nws, const float *nbs,
                                                float *red)
{
    constexpr int VEC = 16 / sizeof(T), QV = VEC / 4;
    float4 *hs = reinterpret_cast<float4 *>(sm);
    const int in4 = g.in / 4, nv = g.in / VEC;
    const float4 *x4 = reinterpret_cast<const float4 *>(g.x);
    const float4 *u4 = reinterpret_cast<const float4 *>(g.x2);
    float p = 0.0f;
    for (int c = threadIdx.x; c < in4; c += MK_CT) {
        float4 v = __ldcg(x4 + c);
        if (g.act == MK_ACT_SWIGLU) {
            const float4 u = __ldcg(u4 + c);
            v = make_float4(mk_silu_mul(v.x, u.x), mk_silu_mul(v.y, u.y), mk_silu_mul(v.z, u.z), mk_silu_mul(v.w, u.w));
        } else if (g.act == MK_ACT_GELU) {
            v = make_float4(mk_gelu(v.x), mk_gelu(v.y), mk_gelu(v.z), mk_gelu(v.w));
        }
        hs[(c % QV) * nv + c / QV] = v;
        p += g.pro == CU_PRO_RMS ? v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w : v.x + v.y + v.z + v.w;
    }
    const bool writer = blockIdx.x == 0;
    if (g.pro == CU_PRO_NONE) {
        if (writer && g.act_out)
            for (int c = threadIdx.x; c < in4; c += MK_CT)
                reinterpret_cast<float4 *>(g.act_out)[c] = hs[(c % QV) * nv + c / QV];
        mk_csync();
        return;
    }
    mk_cp_wait(); /* the norm's weights (mk_gemv_stage_norm) */
    float mean = 0.0f, scale;
    float s = mk_csum(p, red);
    if (g.pro == CU_PRO_RMS) {
        scale = 1.0f / sqrtf(s / (float)g.in + g.eps);
    } else {
        mean = s / (float)g.in;
        p = 0.0f;
        for (int c = threadIdx.x; c < in4; c += MK_CT) {
            const float4 v = hs[(c % QV) * nv + c / QV];
            p += (v.x - mean) * (v.x - mean) + (v.y - mean) * (v.y - mean) + (v.z - mean) * (v.z - mean) +
                 (v.w - mean) * (v.w - mean);
        }
        s = mk_csum(p, red);
        scale = 1.0f / sqrtf(s / (float)g.in + g.eps);
    }
    for (int c = threadIdx.x; c < in4; c += MK_CT) {
        const float4 v = hs[(c % QV) * nv + c / QV];
        float h[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float w = cu_ld_elem(nws, g.norm_type, 4 * c + e);
            if (g.pro == CU_PRO_RMS) {
                h[e] = w * (h[e] * scale);
            } else {
                h[e] = (h[e] - mean) * scale * w;
                if (g.norm_b)
                    h[e] = h[e] + cu_ld_elem(nbs, g.norm_type, 4 * c + e);
            }
        }
        const float4 hv = make_float4(h[0], h[1], h[2], h[3]);
        hs[(c % QV) * nv + c / QV] = hv;
        if (writer && g.norm_out)
            reinterpret_cast<float4 *>(g.norm_out)[c] = hv;
    }
    mk_csync();
}

/* (profiling, GK_MEGAKERNEL_PROFILE) thread 0 notes when a stage's own
 * input is ready (h built, the head rows made) */
static __device__ __forceinline__ void mk_prof_mid(unsigned target)
{
    if (threadIdx.x == 0 && mk_prof_wait)
        mk_prof_wait[((size_t)(target / gridDim.x) * gridDim.x + blockIdx.x) * MK_PROF_W + 2] = mk_clock();
}

/* NR rows j0 .. j0 + NR - 1 of a tile of whole rows (ws, nv 16-byte
 * vectors a row) against h: lane j0 + j gets row j0 + j's sum. Each lane
 * sums its vectors in order, the warp by shuffle tree: the same bits for
 * every NR. NR is a constant so that the loop has no branches per row. */
template <typename T, int NR>
static __device__ __forceinline__ float mk_tile_rows(const uint4 *ws, const float4 *hs, int nv, int lane, int j0)
{
    constexpr int VEC = 16 / sizeof(T), QV = VEC / 4;
    float acc[NR];
#pragma unroll
    for (int jj = 0; jj < NR; jj++)
        acc[jj] = 0.0f;
    ws += (size_t)j0 * nv;
#pragma unroll 2
    for (int v = lane; v < nv; v += 32) {
        float4 h[QV];
#pragma unroll
        for (int q = 0; q < QV; q++)
            h[q] = hs[q * nv + v];
#pragma unroll
        for (int jj = 0; jj < NR; jj++) {
            float wf[VEC];
            cu_unpack16(ws[(size_t)jj * nv + v], wf, T());
#pragma unroll
            for (int q = 0; q < QV; q++)
                acc[jj] += wf[4 * q] * h[q].x + wf[4 * q + 1] * h[q].y + wf[4 * q + 2] * h[q].z + wf[4 * q + 3] * h[q].w;
        }
    }
    float out = 0.0f;
#pragma unroll
    for (int jj = 0; jj < NR; jj++) {
        const float sj = cu_warp_sum(acc[jj]);
        if (lane == j0 + jj)
            out = sj;
    }
    return out;
}

/* Warp `warp`'s next slot (*si, phase *ph), once its copy has landed; *si
 * and *ph move on. pr (profiling only): the wait's time is added to *cw. */
static __device__ __forceinline__ unsigned mk_full_slot(unsigned long long *full, int warp, int depth, int *si,
                                                        unsigned *ph, const unsigned long long *pr,
                                                        unsigned long long *cw)
{
    const unsigned slot = (unsigned)(warp * depth + *si);
    const unsigned long long t = pr ? mk_clock() : 0;
    mk_mbar_wait(full + slot, *ph);
    if (pr)
        *cw += mk_clock() - t;
    if (++*si == depth)
        *si = 0, *ph ^= 1u;
    return slot;
}

/* One GEMV stage on the consumer side: the norm's weights, the wait, h,
 * then this warp's jobs from the ring (*jobs counts the block's jobs so
 * far; *si, *ph: the warp's next slot and its phase). Several rows: four at a time (h read
 * once for the four), lane j writes row j. A row in pieces: the lanes'
 * sums go on across its tiles (the same order as in one pass). Bias and
 * residual are loaded before the tile's wait. */
template <typename T, bool P>
static __device__ __noinline__ void mk_run_gemv(const mk_gemv &g, float *sm, float *red, const mk_ring &rg,
                                                const unsigned char *ring, unsigned long long *full,
                                                unsigned long long *empty, unsigned *jobs, int *si_, unsigned *ph_,
                                                const unsigned *bar, unsigned target)
{
    constexpr int VEC = 16 / sizeof(T), QV = VEC / 4, PV = MK_TILE_BYTES / 16;
    const float4 *hs = reinterpret_cast<const float4 *>(sm);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nv = g.in / VEC;
    mk_gemv_stage_norm(g, sm + rg.hmax, sm + rg.hmax + rg.nmax);
    mk_wait(bar, target);
    mk_prologue<T>(g, sm, sm + rg.hmax, sm + rg.hmax + rg.nmax, red);
    mk_prof_mid(target);
    int np, rpt, r0, r1;
    mk_job_shape<T>(g.in, np, rpt);
    mk_block_rows(g.first[g.count], blockIdx.x, gridDim.x, r0, r1);
    unsigned jb = *jobs, ph = *ph_;
    int si = *si_;
    const unsigned tw = (unsigned)rg.tw;
    /* (P: profiling) the stage's timestamps, time spent on full slots */
    unsigned long long *pr = P ? mk_prof_wait + ((size_t)(target / gridDim.x) * gridDim.x + blockIdx.x) * MK_PROF_W
                               : nullptr,
                       cw = 0;
    for (int k = 0; k < g.count; k++) {
        const int sa = max(r0, g.first[k]), sb = min(r1, g.first[k + 1]);
        if (sa >= sb)
            continue;
        const int nj = (sb - sa + rpt - 1) / rpt;
        const int i0 = mk_first_job(warp, jb, nj, rg.tw);
        jb += (unsigned)nj;
        for (int i = i0; i < nj; i += (int)tw) {
            const int ra = sa + i * rpt, n = min(rpt, sb - ra), row = ra - g.first[k];
            const void *bias = k == 2 ? g.bias[2] : k == 1 ? g.bias[1] : g.bias[0];
            float *y = k == 2 ? g.y[2] : k == 1 ? g.y[1] : g.y[0];
            float bj = 0.0f, rj = 0.0f, out = 0.0f;
            if (lane < n) {
                if (bias)
                    bj = cu_to_f32(((const T *)bias)[row + lane]);
                if (g.res_out)
                    rj = __ldcg(g.res + row + lane);
            }
            if (np == 1) {
                const unsigned slot = mk_full_slot(full, warp, rg.depth, &si, &ph, pr, &cw);
                const uint4 *ws = reinterpret_cast<const uint4 *>(ring + (size_t)slot * MK_TILE_BYTES);
                /* one and two rows, the common tiles, called directly: the
                 * form measured and checked (perf-notes, session 7) */
                if (n == 1)
                    out = mk_tile_rows<T, 1>(ws, hs, nv, lane, 0);
                else if (n == 2)
                    out = mk_tile_rows<T, 2>(ws, hs, nv, lane, 0);
                else
                    for (int j0 = 0; j0 < n; j0 += 4) {
                        const float o = n - j0 >= 4   ? mk_tile_rows<T, 4>(ws, hs, nv, lane, j0)
                                        : n - j0 == 3 ? mk_tile_rows<T, 3>(ws, hs, nv, lane, j0)
                                        : n - j0 == 2 ? mk_tile_rows<T, 2>(ws, hs, nv, lane, j0)
                                                      : mk_tile_rows<T, 1>(ws, hs, nv, lane, j0);
                        if (lane >= j0 && lane < j0 + 4)
                            out = o;
                    }
                __syncwarp();
                if (lane == 0)
                    mk_mbar_arrive(empty + slot); /* the slot is the producer's again */
            } else {
                float acc = 0.0f;
                for (int p = 0; p < np; p++) {
                    const unsigned slot = mk_full_slot(full, warp, rg.depth, &si, &ph, pr, &cw);
                    const uint4 *ws = reinterpret_cast<const uint4 *>(ring + (size_t)slot * MK_TILE_BYTES);
                    const int pv = min(PV, nv - p * PV);
                    const float4 *hp = hs + p * PV;
#pragma unroll 4
                    for (int v = lane; v < pv; v += 32) {
                        float wf[VEC];
                        cu_unpack16(ws[v], wf, T());
#pragma unroll
                        for (int q = 0; q < QV; q++) {
                            const float4 h = hp[q * nv + v];
                            acc += wf[4 * q] * h.x + wf[4 * q + 1] * h.y + wf[4 * q + 2] * h.z + wf[4 * q + 3] * h.w;
                        }
                    }
                    __syncwarp();
                    if (lane == 0)
                        mk_mbar_arrive(empty + slot);
                }
                out = cu_warp_sum(acc);
            }
            if (lane < n) {
                const float v = bias ? out + bj : out;
                y[row + lane] = v;
                if (g.res_out)
                    g.res_out[row + lane] = rj + v;
            }
        }
    }
    if (pr && lane == 0 && cw)
        atomicAdd(pr + 6, cw);
    *jobs = jb;
    *si_ = si;
    *ph_ = ph;
}

/* The attention's small weights (QK-norm, inv_freq) into shared memory
 * before the wait; plain loads where they are not 16-byte aligned. */
static __device__ __forceinline__ void mk_attn_stage_weights(const mk_attn &a, float *sm)
{
    const int nb = a.hd * (a.norm_type == GK_DTYPE_F32 ? 4 : 2);
    if (a.qn_w) {
        mk_stage_bytes(sm, a.qn_w, nb);
        mk_stage_bytes(sm + CU_ATTN_MAX_HEAD_DIM, a.kn_w, nb);
    }
    if (a.inv_freq)
        mk_stage_bytes(sm + 2 * CU_ATTN_MAX_HEAD_DIM, a.inv_freq, a.hd / 2 * 4);
}

/* A head row (vals: element lane + 32 k, already loaded) into sh[hd]:
 * [RMS-normed,] [rotated]; the intermediates written when wn / wr are not
 * NULL. nw: the norm's weights in shared memory, or NULL. Warp-wide. */
static __device__ void mk_head(const mk_attn &a, const float (&vals)[CU_ATTN_MAX_HEAD_DIM / 32], const float *nw,
                               const float *freq, float *wn, float *wr, float *sh, float pf)
{
    const int lane = threadIdx.x & 31, hd = a.hd, half = hd / 2;
#pragma unroll
    for (int k = 0; k < CU_ATTN_MAX_HEAD_DIM / 32; k++)
        if (lane + 32 * k < hd)
            sh[lane + 32 * k] = vals[k];
    __syncwarp();
    if (nw) {
        float sq = 0.0f;
        for (int e = lane; e < hd; e += 32)
            sq += sh[e] * sh[e];
        sq = cu_warp_sum(sq);
        const float r = 1.0f / sqrtf(sq / (float)hd + a.eps);
        for (int e = lane; e < hd; e += 32) {
            const float v = cu_ld_elem(nw, a.norm_type, e) * (sh[e] * r);
            sh[e] = v;
            if (wn)
                wn[e] = v;
        }
        __syncwarp();
    }
    if (a.inv_freq) {
        float y1[CU_ATTN_MAX_HEAD_DIM / 64], y2[CU_ATTN_MAX_HEAD_DIM / 64];
#pragma unroll
        for (int k = 0; k < CU_ATTN_MAX_HEAD_DIM / 64; k++) {
            const int i = lane + 32 * k;
            if (i < half) {
                float s, c;
                sincosf(pf * freq[i], &s, &c);
                c *= a.rope_scale;
                s *= a.rope_scale;
                const float x1 = sh[i], x2 = sh[i + half];
                y1[k] = x1 * c - x2 * s;
                y2[k] = x2 * c + x1 * s;
            }
        }
        __syncwarp();
#pragma unroll
        for (int k = 0; k < CU_ATTN_MAX_HEAD_DIM / 64; k++) {
            const int i = lane + 32 * k;
            if (i < half) {
                sh[i] = y1[k];
                sh[i + half] = y2[k];
                if (wr) {
                    wr[i] = y1[k];
                    wr[i + half] = y2[k];
                }
            }
        }
    }
    __syncwarp();
}

/* Warp-wide: element lane + 32 k of a head row at src (activations: L2). */
static __device__ __forceinline__ void mk_ld_head(const float *src, int hd, float (&v)[CU_ATTN_MAX_HEAD_DIM / 32])
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < CU_ATTN_MAX_HEAD_DIM / 32; k++)
        v[k] = lane + 32 * k < hd ? __ldcg(src + lane + 32 * k) : 0.0f;
}

/* One warp's online softmax over cache rows [j0, j1) of kv head kvh (row pc
 * from ks / vs when `last`), merged over its lane groups: every lane ends
 * with (m, l) and its 8 accumulators. */
static __device__ __forceinline__ void mk_attn_rows(const mk_attn &a, const float (&q)[8], const float *ks,
                                                    const float *vs, int kvh, int j0, int j1, int pc, bool last,
                                                    float &m, float &l, float (&acc)[8])
{
    const int lane = threadIdx.x & 31, hd = a.hd, LPR = hd / 8, RPW = 32 / LPR;
    const int grp = lane / LPR, e0 = (lane % LPR) * 8, kvw = a.Hkv * hd;
    m = -INFINITY;
    l = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++)
        acc[e] = 0.0f;
    for (int jb = j0; jb < j1; jb += RPW * MK_ATT_ROWS) {
        /* MK_ATT_ROWS rows a lane group in flight: all loads first */
        float kf[MK_ATT_ROWS][8], vf[MK_ATT_ROWS][8];
#pragma unroll
        for (int r = 0; r < MK_ATT_ROWS; r++) {
            const int j = jb + r * RPW + grp;
            if (j < j1 && j == pc && last) {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    kf[r][e] = ks[e0 + e], vf[r][e] = vs[e0 + e];
            } else {
                const size_t off = (size_t)(j < j1 ? j : j0) * kvw + (size_t)kvh * hd + e0;
                mk_ld8(a.kc, a.cache_type, off, kf[r]);
                mk_ld8(a.vc, a.cache_type, off, vf[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < MK_ATT_ROWS; r++) {
            const int j = jb + r * RPW + grp;
            float d = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++)
                d += q[e] * kf[r][e];
            for (int o = LPR / 2; o > 0; o >>= 1)
                d += __shfl_xor_sync(0xffffffffu, d, o);
            if (j < j1) {
                const float sc = d * a.scale;
                const float mn = fmaxf(m, sc);
                const float corr = expf(m - mn); /* 0 on the first row (m = -inf) */
                const float pr = expf(sc - mn);
                l = l * corr + pr;
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[e] = acc[e] * corr + pr * vf[r][e];
                m = mn;
            }
        }
    }
    /* the row groups of the warp, merged (butterfly: every lane ends with the sum) */
    for (int o = LPR; o < 32; o <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        const float M = fmaxf(m, m2);
        const float c1 = m == -INFINITY ? 0.0f : expf(m - M), c2 = m2 == -INFINITY ? 0.0f : expf(m2 - M);
        l = l * c1 + l2 * c2;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float a2 = __shfl_xor_sync(0xffffffffu, acc[e], o);
            acc[e] = acc[e] * c1 + a2 * c2;
        }
        m = M;
    }
}

/* Partials [n][pw] (hd accumulators, max, sum) merged in order by one warp:
 * lane (li = lane % LPR, first group) writes its 8 outputs. */
static __device__ __forceinline__ void mk_attn_merge(const float *pp, int n, int pw, int hd, bool global_mem,
                                                     float *out)
{
    const int lane = threadIdx.x & 31, LPR = hd / 8, e0 = (lane % LPR) * 8;
    float M = -INFINITY;
    for (int s = 0; s < n; s++)
        M = fmaxf(M, global_mem ? __ldcg(pp + (size_t)s * pw + hd) : pp[(size_t)s * pw + hd]);
    float L = 0.0f, o8[8];
#pragma unroll
    for (int e = 0; e < 8; e++)
        o8[e] = 0.0f;
    for (int s = 0; s < n; s++) {
        const float *ps = pp + (size_t)s * pw;
        const float ms = global_mem ? __ldcg(ps + hd) : ps[hd];
        const float w = ms == -INFINITY ? 0.0f : expf(ms - M);
        L += (global_mem ? __ldcg(ps + hd + 1) : ps[hd + 1]) * w;
#pragma unroll
        for (int e = 0; e < 8; e++)
            o8[e] += w * (global_mem ? __ldcg(ps + e0 + e) : ps[e0 + e]);
    }
    if (lane < LPR)
#pragma unroll
        for (int e = 0; e < 8; e++)
            out[e0 + e] = o8[e] / L;
}

/* One ATTN stage. A unit is (head h, block split bs): one block, whose
 * warps share the split's rows and merge in shared memory; heads with more
 * rows than a block takes in two rounds of loads per warp are cut into
 * block splits, merged by the last block of the head (ticket cnt[h]).
 * Warp 0 makes the query head, warp 1 this token's key and value.
 * sm: the block's shared memory (weights from mk_attn_stage_weights first). */
static __device__ __noinline__ void mk_run_attn(const mk_attn &a, float *sm, float *part, unsigned *cnt, int *ew,
                                                const unsigned *bar, unsigned target)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, hd = a.hd, LPR = hd / 8, RPW = 32 / LPR;
    const int G = a.H / a.Hkv, kvw = a.Hkv * hd, pw = hd + 2;
    /* the position is the step's input (no stage writes an int32): read
     * before the wait, with the small weights and the cache rows this
     * block will read (into L2; they are earlier steps', not this one's) */
    const int p = __ldcg(a.pos);
    const bool p_ok = p >= 0 && p < a.n_ctx;
    if (blockIdx.x == 0 && threadIdx.x == 0 && !p_ok)
        cu_note(ew, CU_ERR_BAD_POS, p, 0, a.n_ctx);
    const int pc = min(max(p, 0), a.n_ctx - 1), n_rows = pc + 1;
    const int per_block = MK_CW * RPW * MK_ATT_ROWS * 2;
    int nbs = (n_rows + per_block - 1) / per_block;
    nbs = min(nbs, a.msp);
    const int rpb = (n_rows + nbs - 1) / nbs;
    mk_attn_stage_weights(a, sm);
    {
        const int eb = a.cache_type == GK_DTYPE_F32 ? 4 : 2, nl = (hd * eb + 127) / 128;
        for (int u = blockIdx.x; u < a.H * nbs; u += gridDim.x) {
            const int kvh = (u / nbs) / G, j0 = (u % nbs) * rpb, j1 = min(pc, j0 + rpb);
            for (int i = threadIdx.x; i < (j1 - j0) * nl * 2; i += MK_CT) {
                const int j = j0 + i / (nl * 2), l = i % (nl * 2);
                const char *base = (const char *)(l < nl ? a.kc : a.vc);
                const char *ptr = base + ((size_t)j * kvw + (size_t)kvh * hd) * eb + (size_t)(l % nl) * 128;
                asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(ptr));
            }
        }
    }
    mk_wait(bar, target);
    mk_cp_wait();
    mk_csync();
    const float pf = (float)p;
    const float *qn = a.qn_w ? sm : nullptr, *kn = a.qn_w ? sm + CU_ATTN_MAX_HEAD_DIM : nullptr;
    const float *freq = sm + 2 * CU_ATTN_MAX_HEAD_DIM;
    float *qs = sm + 3 * CU_ATTN_MAX_HEAD_DIM, *ks = qs + CU_ATTN_MAX_HEAD_DIM, *vs = ks + CU_ATTN_MAX_HEAD_DIM;
    float *wp = vs + CU_ATTN_MAX_HEAD_DIM; /* [MK_CW + 1][pw] */
    for (int u = blockIdx.x; u < a.H * nbs; u += gridDim.x) {
        const int h = u / nbs, bs = u % nbs, kvh = h / G;
        const int j0 = bs * rpb, j1 = min(n_rows, j0 + rpb);
        const bool last = j1 == n_rows;
        if (warp == 0) {
            float v[CU_ATTN_MAX_HEAD_DIM / 32];
            mk_ld_head(a.q + (size_t)h * hd, hd, v);
            mk_head(a, v, qn, freq, bs == 0 && a.q_norm ? a.q_norm + (size_t)h * hd : nullptr,
                    bs == 0 && a.q_rope ? a.q_rope + (size_t)h * hd : nullptr, qs, pf);
        } else if (warp == 1 && last) {
            /* this token's own key and value: computed here, rounded as the
             * cache stores them; the unit of the group's first head stores them */
            const bool store = h % G == 0;
            float kv[CU_ATTN_MAX_HEAD_DIM / 32], vv[CU_ATTN_MAX_HEAD_DIM / 32];
            mk_ld_head(a.k + (size_t)kvh * hd, hd, kv);
            mk_ld_head(a.v + (size_t)kvh * hd, hd, vv);
            mk_head(a, kv, kn, freq, store && a.k_norm ? a.k_norm + (size_t)kvh * hd : nullptr,
                    store && a.k_rope ? a.k_rope + (size_t)kvh * hd : nullptr, ks, pf);
#pragma unroll
            for (int k = 0; k < CU_ATTN_MAX_HEAD_DIM / 32; k++) {
                const int e = lane + 32 * k;
                if (e < hd) {
                    const float kf = ks[e];
                    ks[e] = mk_round(kf, a.cache_type);
                    vs[e] = mk_round(vv[k], a.cache_type);
                    if (store && p_ok) {
                        const size_t off = (size_t)pc * kvw + (size_t)kvh * hd + e;
                        mk_st_any(a.kc, a.cache_type, off, kf);
                        mk_st_any(a.vc, a.cache_type, off, vv[k]);
                    }
                }
            }
        }
        mk_csync();
        if (u == (int)blockIdx.x)
            mk_prof_mid(target);
        /* the warps' share of rows j0..j1 */
        const int per_warp = (j1 - j0 + MK_CW - 1) / MK_CW;
        const int w0 = min(j1, j0 + warp * per_warp), w1 = min(j1, w0 + per_warp);
        float q[8], m, l, acc[8];
        const int e0 = (lane % LPR) * 8;
#pragma unroll
        for (int e = 0; e < 8; e++)
            q[e] = qs[e0 + e];
        mk_attn_rows(a, q, ks, vs, kvh, w0, w1, pc, last, m, l, acc);
        float *mine = wp + (size_t)warp * pw;
        if (lane < LPR)
#pragma unroll
            for (int e = 0; e < 8; e++)
                mine[e0 + e] = acc[e];
        if (lane == 0) {
            mine[hd] = m;
            mine[hd + 1] = l;
        }
        mk_csync();
        float *out = a.out + (size_t)h * hd;
        if (nbs == 1) {
            if (warp == 0)
                mk_attn_merge(wp, MK_CW, pw, hd, false, out);
        } else {
            float *pp = part + (size_t)h * a.msp * pw;
            if (warp == 0) {
                /* the block's partial: the warps merged (out = acc / L), then
                 * acc = out * L with the warps' M and L */
                mk_attn_merge(wp, MK_CW, pw, hd, false, wp + (size_t)MK_CW * pw);
                __syncwarp();
                float M = -INFINITY, L = 0.0f;
                for (int w = 0; w < MK_CW; w++)
                    M = fmaxf(M, wp[(size_t)w * pw + hd]);
                for (int w = 0; w < MK_CW; w++) {
                    const float mw = wp[(size_t)w * pw + hd];
                    L += mw == -INFINITY ? 0.0f : wp[(size_t)w * pw + hd + 1] * expf(mw - M);
                }
                const float *o = wp + (size_t)MK_CW * pw;
                float *dst = pp + (size_t)bs * pw;
                for (int e = lane; e < hd; e += 32)
                    dst[e] = o[e] * L;
                if (lane == 0) {
                    dst[hd] = M;
                    dst[hd + 1] = L;
                }
                __threadfence();
                __syncwarp();
                unsigned old = 0;
                if (lane == 0)
                    old = atomicAdd(cnt + h, 1u);
                old = __shfl_sync(0xffffffffu, old, 0);
                if (old == (unsigned)nbs - 1) {
                    __threadfence();
                    mk_attn_merge(pp, nbs, pw, hd, true, out);
                    if (lane == 0)
                        cnt[h] = 0; /* zero again for the next attention stage */
                }
            }
        }
        mk_csync(); /* qs, ks, vs and wp are the next unit's */
    }
}

/* Block-wide: stage descriptor src into shared dst (4-byte words). */
static __device__ __forceinline__ void mk_fetch_stage(mk_stage *dst, const mk_stage *src)
{
    const int words = (int)(sizeof(mk_stage) / 4);
    for (int i = threadIdx.x; i < words; i += MK_CT)
        reinterpret_cast<int *>(dst)[i] = __ldg(reinterpret_cast<const int *>(src) + i);
}

#endif /* compute capability 9.0 */

/* grid: every SM's blocks, all resident (cooperative launch). bar[0] counts
 * arrivals, bar[1] blocks out; cnt[H] the attention merge tickets. All of
 * them are zero before and after a launch. The last warp produces (the
 * weight ring), the others consume: stages in order, stage s + 1's
 * descriptor coming into shared memory while stage s runs. */
template <typename T, bool P>
__global__ void __launch_bounds__(MK_THREADS, 1)
    mk_kernel(const mk_stage *__restrict__ prog, int n_stages, mk_ring rg, unsigned *bar, unsigned *cnt, float *part,
              int *ew, unsigned long long *prof)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 /* bulk copies and mbarrier waits; the host checks */
    extern __shared__ float4 mk_smem[];
    __shared__ float red[32];
    __shared__ mk_stage sd[2];
    __shared__ unsigned long long full[MK_MAX_SLOTS], empty[MK_MAX_SLOTS];
    float *sm = reinterpret_cast<float *>(mk_smem);
    unsigned char *ring = reinterpret_cast<unsigned char *>(mk_smem) + rg.ring_off;
    if (threadIdx.x == 0) {
        for (int i = 0; i < rg.tw * rg.depth; i++) {
            mk_mbar_init(full + i, 1);
            mk_mbar_init(empty + i, 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    cu_pdl_trigger();
    const int G = gridDim.x, warp = threadIdx.x >> 5;
    if (warp == MK_CW) {
        /* weights only: no need to wait for the previous kernel */
        mk_produce<T, P>(prog, n_stages, rg, ring, full, empty);
        return;
    }
    mk_fetch_stage(&sd[0], prog);
    cu_pdl_wait();
    mk_csync();
    const int gt = threadIdx.x * G + blockIdx.x, nt = G * MK_CT;
    unsigned jobs = 0, ph = 0; /* the block's GEMV jobs; this warp's slot phase */
    int si = 0;                /* and next slot */
    for (int s = 0; s < n_stages; s++) {
        const mk_stage *st = &sd[s & 1];
        if (s + 1 < n_stages)
            mk_fetch_stage(&sd[(s + 1) & 1], prog + s + 1); /* read after mk_arrive's barrier */
        const unsigned target = (unsigned)s * (unsigned)G;
        if (prof && threadIdx.x == 0)
            prof[((size_t)s * G + blockIdx.x) * MK_PROF_W] = mk_clock();
        switch (st->kind) {
        case MK_GEMV:
            mk_run_gemv<T, P>(st->gemv, sm, red, rg, ring, full, empty, &jobs, &si, &ph, bar, target);
            break;
        case MK_ATTN:
            mk_run_attn(st->attn, sm, part, cnt, ew, bar, target);
            break;
        case MK_ROWS:
            mk_wait(bar, target);
            mk_run_rows(st->rows, gt, nt, ew);
            break;
        case MK_ADD:
            mk_wait(bar, target);
            mk_run_add(st->add, gt, nt);
            break;
        case MK_NORM:
            mk_wait(bar, target);
            mk_run_norm(st->norm, red);
            break;
        default:
            break;
        }
        if (prof) {
            mk_csync();
            if (threadIdx.x == 0)
                prof[((size_t)s * G + blockIdx.x) * MK_PROF_W + 3] = mk_clock();
        }
        mk_arrive(bar);
    }
    if (threadIdx.x == 0) {
        const unsigned out = atomicAdd(bar + 1, 1u);
        if (out == (unsigned)G - 1) { /* the last block out: every wait is over */
            atomicExch(bar, 0u);
            atomicExch(bar + 1, 0u);
        }
    }
#endif
}

/* ---------------------------------------------------------------- host */

struct mk_prog_copy {
    uint64_t hash;
    size_t n;
    mk_stage *dev;
    uint64_t last_use;
};

struct cu_mk {
    bool off;                   /* not asked for (GK_MEGAKERNEL=1, --megakernel) */
    bool forced_off;            /* GK_MEGAKERNEL=0, --no-megakernel */
    bool broken;                /* a launch failed: per-op from then on */
    char why[200];              /* why the last graph ran per-op ("" when it did not) */
    int ran_stages;             /* stages of the last graph run persistent (0: per-op) */
    int grid;
    size_t smem_max;            /* dynamic shared memory a block may have */
    int depth_cap;              /* GK_MEGAKERNEL_DEPTH: ring slots a warp has at most (measuring aid) */
    float *part;
    size_t part_bytes;
    mk_prog_copy progs[MK_PROGS];
    uint64_t clock;
    mk_stage host[MK_MAX_STAGES];
};

static int mk_bytes(int dt) { return dt == GK_DTYPE_F32 ? 4 : 2; }

static bool mk_refuse(cu_mk *m, const gk_node *nd, const char *what)
{
    if (nd)
        snprintf(m->why, sizeof m->why, "%s '%.48s': %s", gk_op_name(nd->op), nd->dst ? nd->dst->name : "", what);
    else
        snprintf(m->why, sizeof m->why, "%s", what);
    return false;
}

/* The stages of graph g's nodes [0, *covered); false (m->why) where a node
 * has none. The weights of every GEMV must be of one dtype (*wtype). */
static bool mk_plan(cu_ctx *c, cu_mk *m, const gk_graph *g, int *n_stages, size_t *covered, gk_dtype *wtype,
                    size_t *part_need, int *cnt_need, mk_ring *rg)
{
    int n = 0;
    size_t i = 0;
    *wtype = GK_DTYPE_COUNT;
    *part_need = 0;
    *cnt_need = 0;
    memset(rg, 0, sizeof *rg);
    float *pending_act = nullptr; /* a SWIGLU / GELU output the next GEMV must read */
    int pending_kind = MK_ACT_NONE;
    const float *pend_a = nullptr, *pend_b = nullptr;
    for (size_t k = 0; k < g->n_nodes; k++)
        if (g->nodes[k].op == GK_OP_GET_ROWS && g->nodes[k].src[1]->cols != 1) {
            snprintf(m->why, sizeof m->why, "a graph of %lld tokens (the persistent kernel is decode's, one token)",
                     (long long)g->nodes[k].src[1]->cols);
            return false;
        }
    while (i < g->n_nodes) {
        const gk_node *nd = &g->nodes[i];
        if (n >= MK_MAX_STAGES)
            return mk_refuse(m, nd, "more than 1024 stages");
        if (nd->op == GK_OP_SAMPLE && i + 1 == g->n_nodes)
            break; /* runs after the kernel, as its own launch */
        if (pending_act && nd->op != GK_OP_LINEAR)
            return mk_refuse(m, nd, "reads an activation that only a projection may read here");
        mk_stage *st = &m->host[n];
        memset(st, 0, sizeof *st);
        int rs;
        cu_gemv_desc d;
        int used;
        if ((rs = cu_rope_store_match(nd, g->n_nodes - i)) > 0 || nd->op == GK_OP_ATTN) {
            const bool normed = rs == 5;
            const gk_node *at = rs > 0 ? &g->nodes[i + rs - 1] : nd;
            const gk_node *rq = rs > 0 ? &g->nodes[i + (normed ? 2 : 0)] : nullptr;
            const gk_node *rk = rs > 0 ? &g->nodes[i + (normed ? 3 : 1)] : nullptr;
            const int hd = at->i[2];
            if (at->src[0]->rows != 1)
                return mk_refuse(m, at, "more than one token");
            if (at->i[3] != 0 || at->f[1] != 0.0f || at->f[2] != 0.0f || at->f[3] != 0.0f)
                return mk_refuse(m, at, "a window, softcap, ring or sequence slots");
            if (hd % 8 != 0 || hd < 8 || hd > CU_ATTN_MAX_HEAD_DIM || 32 % (hd / 8) != 0)
                return mk_refuse(m, at, "a head_dim other than a power of two in 8..256");
            if (rq && ((rq->i[1] != 0 && rq->i[1] != rq->i[0]) || rq->i[0] != hd))
                return mk_refuse(m, rq, "partial rotary");
            if ((rq && !cu_aligned16(rq->src[2]->data)) ||
                (normed && (!cu_aligned16(g->nodes[i].src[1]->data) || !cu_aligned16(g->nodes[i + 1].src[1]->data) ||
                            g->nodes[i].src[1]->dtype != g->nodes[i + 1].src[1]->dtype)))
                return mk_refuse(m, at, "QK-norm or RoPE weights not 16-byte aligned, or of two dtypes");
            mk_attn &a = st->attn;
            st->kind = MK_ATTN;
            a.q = (const float *)(normed ? g->nodes[i].src[0] : rq ? rq->src[0] : at->src[0])->data;
            a.k = (const float *)(normed ? g->nodes[i + 1].src[0] : rk ? rk->src[0] : at->src[1])->data;
            a.v = (const float *)at->src[2]->data;
            if (normed) {
                a.qn_w = g->nodes[i].src[1]->data;
                a.kn_w = g->nodes[i + 1].src[1]->data;
                a.q_norm = (float *)g->nodes[i].dst->data;
                a.k_norm = (float *)g->nodes[i + 1].dst->data;
                a.eps = g->nodes[i].f[0];
                a.norm_type = g->nodes[i].src[1]->dtype;
            }
            if (rq) {
                a.inv_freq = (const float *)rq->src[2]->data;
                a.rope_scale = rq->f[0];
                a.q_rope = (float *)rq->dst->data;
                a.k_rope = (float *)rk->dst->data;
            }
            a.kc = at->src[4]->data;
            a.vc = at->src[5]->data;
            a.cache_type = at->src[4]->dtype;
            a.pos = (const int32_t *)at->src[3]->data;
            a.out = (float *)at->dst->data;
            a.H = at->i[0];
            a.Hkv = at->i[1];
            a.hd = hd;
            a.n_ctx = (int)at->src[4]->rows;
            a.scale = at->f[0];
            a.msp = 4 * m->grid / a.H > 1 ? 4 * m->grid / a.H : 1; /* block splits a head may use */
            const size_t pb = (size_t)a.H * a.msp * (hd + 2) * sizeof(float);
            if (pb > *part_need)
                *part_need = pb;
            if (a.H > *cnt_need)
                *cnt_need = a.H;
            i += rs > 0 ? (size_t)rs : 1;
        } else if ((used = cu_plan_gemv(nd, g->n_nodes - i, &d)) > 0) {
            if (d.n != 1)
                return mk_refuse(m, nd, "a GEMV of more than one token");
            if (*wtype != GK_DTYPE_COUNT && d.wtype != *wtype)
                return mk_refuse(m, nd, "matrices of two dtypes in one graph");
            if (d.in > MK_MAX_IN || d.in % (16 / mk_bytes(d.wtype)) != 0)
                return mk_refuse(m, nd, "an input wider than 16384 or not a whole 16 bytes");
            const int nb = d.in * (d.norm_type == GK_DTYPE_F32 ? 4 : 2);
            if (d.pro != CU_PRO_NONE && (!cu_aligned16(d.norm_w) || (d.norm_b && !cu_aligned16(d.norm_b)) || nb % 16))
                return mk_refuse(m, nd, "norm weights not 16-byte aligned");
            *wtype = d.wtype;
            rg->hmax = d.in > rg->hmax ? d.in : rg->hmax;
            if (d.pro != CU_PRO_NONE && d.in > rg->nmax)
                rg->nmax = d.in;
            mk_gemv &e = st->gemv;
            st->kind = MK_GEMV;
            e.x = d.x;
            e.pro = d.pro;
            e.in = d.in;
            e.count = d.count;
            e.norm_type = d.norm_type;
            e.norm_w = d.norm_w;
            e.norm_b = d.norm_b;
            e.eps = d.eps;
            e.norm_out = d.norm_out;
            e.first[0] = 0;
            for (int k = 0; k < CU_GEMV_MAX_MATS; k++) {
                e.W[k] = k < d.count ? d.W[k] : nullptr;
                e.bias[k] = k < d.count ? d.bias[k] : nullptr;
                e.y[k] = k < d.count ? d.y[k] : nullptr;
                e.first[k + 1] = e.first[k] + (k < d.count ? d.out[k] : 0);
            }
            if (pending_act) {
                if (d.x != pending_act || d.pro != CU_PRO_NONE)
                    return mk_refuse(m, nd, "an activation not read by the next projection");
                e.act = pending_kind;
                e.x = pend_a;
                e.x2 = pend_b;
                e.act_out = pending_act;
                pending_act = nullptr;
            }
            if (d.epi == CU_EPI_RESIDUAL) {
                e.res = d.res;
                e.res_out = d.res_out;
            } else if (d.epi == CU_EPI_SWIGLU || d.epi == CU_EPI_GELU) {
                /* the activation becomes the next GEMV's input transform */
                pending_act = d.act_out;
                pending_kind = d.epi == CU_EPI_SWIGLU ? MK_ACT_SWIGLU : MK_ACT_GELU;
                pend_a = d.y[0];
                pend_b = d.epi == CU_EPI_SWIGLU ? d.y[1] : nullptr;
            }
            i += (size_t)used;
        } else if (nd->op == GK_OP_GET_ROWS && nd->src[1]->cols == 1 && nd->src[0]->rows <= INT32_MAX &&
                   (size_t)nd->src[0]->rows * nd->src[0]->cols <= INT32_MAX) {
            st->kind = MK_ROWS;
            st->rows.table = nd->src[0]->data;
            st->rows.ids = (const int32_t *)nd->src[1]->data;
            st->rows.dst = (float *)nd->dst->data;
            st->rows.n_rows = (int)nd->src[0]->rows;
            st->rows.d = (int)nd->src[0]->cols;
            st->rows.dtype = nd->src[0]->dtype;
            i++;
        } else if (((nd->op == GK_OP_RMS_NORM && (nd->i[0] == 0 || nd->i[0] == nd->src[0]->cols) &&
                     nd->f[1] == 0.0f) ||
                    nd->op == GK_OP_LAYER_NORM) &&
                   nd->src[0]->rows == 1 && nd->src[0]->cols <= INT32_MAX) {
            st->kind = MK_NORM;
            st->norm.x = (const float *)nd->src[0]->data;
            st->norm.dst = (float *)nd->dst->data;
            st->norm.w = nd->src[1]->data;
            st->norm.b = nd->op == GK_OP_LAYER_NORM && nd->src[2] ? nd->src[2]->data : nullptr;
            st->norm.d = (int)nd->src[0]->cols;
            st->norm.rms = nd->op == GK_OP_RMS_NORM;
            st->norm.dtype = nd->src[1]->dtype;
            st->norm.eps = nd->f[0];
            i++;
        } else if (nd->op == GK_OP_ADD && nd->src[0]->rows == 1 && nd->src[1]->rows == 1 &&
                   nd->src[0]->cols == nd->src[1]->cols && nd->src[0]->dtype == GK_DTYPE_F32 &&
                   nd->src[1]->dtype == GK_DTYPE_F32) {
            st->kind = MK_ADD;
            st->add.a = (const float *)nd->src[0]->data;
            st->add.b = (const float *)nd->src[1]->data;
            st->add.dst = (float *)nd->dst->data;
            st->add.n = (int)nd->src[0]->cols;
            i++;
        } else {
            return mk_refuse(m, nd, "no persistent stage for it");
        }
        n++;
    }
    if (pending_act)
        return mk_refuse(m, nullptr, "an activation at the end of the graph");
    if (n == 0 || *wtype == GK_DTYPE_COUNT)
        return mk_refuse(m, nullptr, "no projection in the graph");
    *n_stages = n;
    *covered = i;
    return true;
}

/* The device copy of m->host[0..n), uploaded once per distinct program
 * (never inside a stream capture: NULL there when it is new). */
static mk_stage *mk_upload(cu_ctx *c, cu_mk *m, int n)
{
    const size_t bytes = (size_t)n * sizeof(mk_stage);
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)m->host;
    for (size_t k = 0; k < bytes; k++) {
        h ^= p[k];
        h *= 1099511628211ull;
    }
    mk_prog_copy *v = &m->progs[0];
    for (int k = 0; k < MK_PROGS; k++) {
        mk_prog_copy *e = &m->progs[k];
        if (e->dev && e->hash == h && e->n == (size_t)n) {
            e->last_use = ++m->clock;
            return e->dev;
        }
        if (!e->dev || (v->dev && e->last_use < v->last_use))
            v = e;
    }
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone)
        return nullptr;
    if (v->dev) {
        cudaStreamSynchronize(c->stream); /* it may be in use by queued work */
        cudaFree(v->dev);
        v->dev = nullptr;
    }
    if (cudaMalloc(&v->dev, bytes) != cudaSuccess) {
        cudaGetLastError();
        v->dev = nullptr;
        return nullptr;
    }
    if (cudaMemcpy(v->dev, m->host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(v->dev);
        v->dev = nullptr;
        return nullptr;
    }
    v->hash = h;
    v->n = (size_t)n;
    v->last_use = ++m->clock;
    return v->dev;
}

cu_mk *cu_mk_new(void)
{
    cu_mk *m = (cu_mk *)calloc(1, sizeof(cu_mk));
    if (!m)
        return nullptr;
    /* off unless asked for: on the H200 it is still slower than the per-op
     * path (docs/perf-notes.md) */
    const char *e = getenv("GK_MEGAKERNEL");
    m->off = !(e && !strcmp(e, "1"));
    m->forced_off = e && !strcmp(e, "0");
    const char *d = getenv("GK_MEGAKERNEL_DEPTH");
    m->depth_cap = d ? atoi(d) : 0;
    return m;
}

void cu_mk_free(cu_mk *m)
{
    if (!m)
        return;
    for (int k = 0; k < MK_PROGS; k++)
        cudaFree(m->progs[k].dev);
    cudaFree(m->part);
    free(m);
}

template <typename T>
static cudaError_t mk_launch(cu_ctx *c, cu_mk *m, const mk_stage *dev, int n, const mk_ring &rg, size_t smem,
                             bool pdl, unsigned long long *prof)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)m->grid);
    cfg.blockDim = dim3(MK_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 2 : 1;
    return prof ? cudaLaunchKernelEx(&cfg, mk_kernel<T, true>, dev, n, rg, c->tickets, c->tickets + 2, m->part,
                                     c->err_dev, prof)
                : cudaLaunchKernelEx(&cfg, mk_kernel<T, false>, dev, n, rg, c->tickets, c->tickets + 2, m->part,
                                     c->err_dev, prof);
}

/* The most dynamic shared memory a block of mk_kernel<T> may have, with
 * one block an SM resident at that size; false if not even the work area
 * and two slots fit. */
template <typename T, bool P>
static bool mk_grid(cu_ctx *c, cu_mk *m)
{
    int optin = 0;
    cudaFuncAttributes fa;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device) != cudaSuccess ||
        cudaFuncGetAttributes(&fa, mk_kernel<T, P>) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    const size_t smem = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
    if (smem < (size_t)MK_ATT_FLOATS * 4 + 2 * MK_TILE_BYTES)
        return false;
    if (cudaFuncSetAttribute(mk_kernel<T, P>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mk_kernel<T, P>, MK_THREADS, smem) != cudaSuccess ||
        per_sm < 1) {
        cudaGetLastError();
        return false;
    }
    if (!m->smem_max || smem < m->smem_max)
        m->smem_max = smem;
    m->grid = c->n_sm; /* one block an SM: fewer arrivals per barrier */
    return true;
}

/* GK_MEGAKERNEL_PROFILE=N: time the stages of the N-th plain (uncaptured)
 * launch per block with %globaltimer and print, per stage kind, how long
 * the barrier took to release the blocks and how long the slowest block
 * worked; for the GEMVs also when the producer issued their copies and how
 * long either side of the ring waited on the other (that launch runs
 * mk_kernel<T, true>, whose ring loops carry the timers). A measuring aid:
 * it synchronizes the stream. */
static int mk_prof_calls;
static unsigned long long *mk_profile_begin(cu_ctx *c, cu_mk *m, int n)
{
    const char *e = getenv("GK_MEGAKERNEL_PROFILE");
    if (!e)
        return nullptr;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone)
        return nullptr;
    if (++mk_prof_calls != atoi(e))
        return nullptr;
    unsigned long long *p = nullptr;
    if (cudaMalloc(&p, (size_t)n * m->grid * MK_PROF_W * 8) != cudaSuccess)
        return nullptr;
    cudaMemset(p, 0, (size_t)n * m->grid * MK_PROF_W * 8);
    cudaMemcpyToSymbol(mk_prof_wait, &p, sizeof p);
    return p;
}

static void mk_profile_end(cu_ctx *c, cu_mk *m, unsigned long long *p, int n)
{
    cudaStreamSynchronize(c->stream);
    const int G = m->grid;
    unsigned long long *h = (unsigned long long *)malloc((size_t)n * G * MK_PROF_W * 8);
    cudaMemcpy(h, p, (size_t)n * G * MK_PROF_W * 8, cudaMemcpyDeviceToHost);
    double rel[6] = {0}, spread[6] = {0}, mid[6] = {0}, work[6] = {0}, cntk[6] = {0};
    unsigned long long t0 = h[0], prev_done = 0, t_end = 0;
    double iss_a = 0, iss_z = 0, cons_w = 0, prod_w = 0;
    int n_iss = 0;
    for (int s = 0; s < n; s++) {
        unsigned long long wmin = ~0ull, wmax = 0, mmax = 0, dmax = 0;
        for (int b = 0; b < G; b++) {
            const unsigned long long *r = h + ((size_t)s * G + b) * MK_PROF_W;
            const unsigned long long w = r[1] ? r[1] : r[0];
            if (w < wmin) wmin = w;
            if (w > wmax) wmax = w;
            if (r[2] > mmax) mmax = r[2];
            if (r[3] > dmax) dmax = r[3];
            if (r[0] < t0) t0 = r[0];
        }
        const int k = m->host[s].kind;
        if (k == MK_GEMV) { /* the producer's copies and the waits on either side of the ring */
            double a = 0, z = 0, cwt = 0, pwt = 0;
            int nb = 0;
            for (int b = 0; b < G; b++) {
                const unsigned long long *r = h + ((size_t)s * G + b) * MK_PROF_W;
                if (!r[4])
                    continue;
                a += (double)(long long)(r[4] - wmin);
                z += (double)(long long)(r[5] - wmin);
                cwt += (double)r[6];
                pwt += (double)r[7];
                nb++;
            }
            if (nb) {
                iss_a += a / nb, iss_z += z / nb, cons_w += cwt / nb / MK_CW, prod_w += pwt / nb / MK_CW;
                n_iss++;
            }
        }
        if (s > 0)
            rel[k] += (double)(wmin - prev_done);
        spread[k] += (double)(wmax - wmin);
        mid[k] += mmax > wmin ? (double)(mmax - wmin) : 0.0;
        work[k] += (double)(dmax - wmin);
        cntk[k] += 1;
        prev_done = dmax;
        t_end = dmax;
    }
    const char *names[6] = {"?", "rows", "add", "gemv", "attn", "norm"};
    fprintf(stderr, "mk profile: %d stages on %d blocks, %.1f us in all (us per stage: release = first block out of "
                    "the wait after the last block of the stage before; spread = the last block out after the first; "
                    "input = until the last block has its input made (h, head rows); work = until the last block is done)\n",
            n, G, (t_end - t0) / 1e3);
    for (int k = 1; k < 6; k++)
        if (cntk[k] > 0)
            fprintf(stderr, "  %-5s x%-4.0f release %6.2f  spread %6.2f  input %6.2f  work %7.2f  in all %8.1f us\n",
                    names[k], cntk[k], rel[k] / cntk[k] / 1e3, spread[k] / cntk[k] / 1e3, mid[k] / cntk[k] / 1e3,
                    work[k] / cntk[k] / 1e3, (rel[k] + work[k]) / 1e3);
    if (n_iss)
        fprintf(stderr, "  gemv ring: copies issued from %+.2f to %+.2f us of the first block out of the wait; per warp "
                        "%.2f us waiting on full slots, per producer lane %.2f us on empty ones (averages over blocks)\n",
                iss_a / n_iss / 1e3, iss_z / n_iss / 1e3, cons_w / n_iss / 1e3, prod_w / n_iss / 1e3);
    free(h);
    void *z = nullptr;
    cudaMemcpyToSymbol(mk_prof_wait, &z, sizeof z);
    cudaFree(p);
}

int cu_mk_run(cu_ctx *c, cu_mk *m, const gk_graph *g, gk_err *err)
{
    if (!m)
        return 0;
    m->ran_stages = 0;
    if (m->off) {
        snprintf(m->why, sizeof m->why, "%s",
                 m->forced_off ? "turned off (--no-megakernel / GK_MEGAKERNEL=0)"
                               : "the persistent kernel is off by default (--megakernel turns it on)");
        return 0;
    }
    if (m->broken)
        return 0; /* m->why says why, from the first time */
    if (!m->grid) { /* once: the device can, and a block fits an SM */
        int coop = 0, major = 0;
        if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, c->device) != cudaSuccess || !coop) {
            cudaGetLastError();
            m->broken = true;
            snprintf(m->why, sizeof m->why, "the device has no cooperative launch");
            return 0;
        }
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) != cudaSuccess ||
            major < 9) {
            cudaGetLastError();
            m->broken = true;
            snprintf(m->why, sizeof m->why,
                     "the persistent kernel needs compute capability 9.0 or newer (bulk copies, mbarriers)");
            return 0;
        }
        bool ok = mk_grid<__half, false>(c, m) && mk_grid<__nv_bfloat16, false>(c, m) && mk_grid<float, false>(c, m) &&
                  mk_grid<__half, true>(c, m) && mk_grid<__nv_bfloat16, true>(c, m) && mk_grid<float, true>(c, m);
        if (!ok) {
            m->broken = true;
            m->grid = 0;
            snprintf(m->why, sizeof m->why, "a block of %d threads with its shared memory does not fit an SM",
                     MK_THREADS);
            return 0;
        }
    }
    int n = 0, cnt_need = 0;
    size_t covered = 0, part_need = 0;
    gk_dtype wt;
    mk_ring rg;
    if (!mk_plan(c, m, g, &n, &covered, &wt, &part_need, &cnt_need, &rg))
        return 0;
    /* the work area, then as many ring slots as fit (each at least a
     * tile's worth and the widest row) */
    size_t work = (size_t)(rg.hmax + 2 * rg.nmax) > (size_t)MK_ATT_FLOATS ? (size_t)(rg.hmax + 2 * rg.nmax)
                                                                          : (size_t)MK_ATT_FLOATS;
    work = (work * sizeof(float) + 127) / 128 * 128;
    size_t ns = m->smem_max > work ? (m->smem_max - work) / MK_TILE_BYTES : 0;
    if (ns > MK_MAX_SLOTS)
        ns = MK_MAX_SLOTS;
    if (ns < 1) {
        snprintf(m->why, sizeof m->why, "inputs of %d leave no shared memory for the weight ring", rg.hmax);
        return 0;
    }
    rg.tw = ns < MK_CW ? (int)ns : MK_CW;
    rg.depth = (int)ns / rg.tw;
    if (m->depth_cap > 0 && rg.depth > m->depth_cap)
        rg.depth = m->depth_cap;
    rg.ring_off = (int)work;
    const size_t smem = work + (size_t)rg.tw * rg.depth * MK_TILE_BYTES;
    if (cnt_need + 2 > CU_TICKETS) {
        snprintf(m->why, sizeof m->why, "%d attention heads (at most %d)", cnt_need, CU_TICKETS - 2);
        return 0;
    }
    if (part_need > m->part_bytes) {
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
            cudaGetLastError();
            snprintf(m->why, sizeof m->why, "attention scratch to grow inside a capture");
            return 0;
        }
        cudaStreamSynchronize(c->stream);
        cudaFree(m->part);
        m->part = nullptr;
        m->part_bytes = 0;
        if (cudaMalloc(&m->part, part_need) != cudaSuccess) {
            cudaGetLastError();
            snprintf(m->why, sizeof m->why, "no device memory for %zu bytes of attention scratch", part_need);
            return 0;
        }
        m->part_bytes = part_need;
    }
    mk_stage *dev = mk_upload(c, m, n);
    if (!dev) {
        snprintf(m->why, sizeof m->why, "the program could not be uploaded (new inside a capture, or no memory)");
        return 0;
    }
    unsigned long long *prof = mk_profile_begin(c, m, n);
    cudaError_t e = cudaSuccess;
    for (int attempt = 0; attempt < 2; attempt++) {
        const bool pdl = c->pdl && attempt == 0;
        CU_WEIGHT_SWITCH(wt, T, { e = mk_launch<T>(c, m, dev, n, rg, smem, pdl, prof); });
        if (e == cudaSuccess)
            break;
        cudaGetLastError();
    }
    if (e != cudaSuccess) {
        m->broken = true;
        snprintf(m->why, sizeof m->why, "the cooperative launch failed: %s", cudaGetErrorString(e));
        return 0;
    }
    if (prof)
        mk_profile_end(c, m, prof, n);
    m->why[0] = 0;
    m->ran_stages = n;
    (void)err;
    return (int)covered;
}

const char *cu_mk_why(const cu_mk *m) { return m ? m->why : "no state"; }
int cu_mk_stages(const cu_mk *m) { return m ? m->ran_stages : 0; }
int cu_mk_grid(const cu_mk *m) { return m ? m->grid : 0; }
