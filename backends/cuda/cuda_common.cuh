/* cuda_common.cuh - what the CUDA backend's files share: the backend's run
 * context, the entry point of every op family, the device-side error word and
 * small device helpers (weight element loads, warp reductions).
 *
 * Each op family's .cu exports a launcher `cu_<family>(ctx, node, err)` that
 * queues its kernels on ctx->stream and returns a gk status (launch errors
 * turned into GK_ERR_DEVICE with CUDA's text), and where it needs temporary
 * device memory a `cu_<family>_scratch(ctx, node)` that says how many bytes,
 * so cuda_backend.cu can size one scratch region before a graph runs (and
 * before a capture, where allocating is not allowed).
 * Not here: kernels (one .cu per op family) or the plugin table (cuda_backend.cu).
 */
#ifndef GK_CUDA_COMMON_CUH
#define GK_CUDA_COMMON_CUH

#include <limits.h>
#include <math.h>
#include <gk/gk_plugin.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

/* ------------------------------------------------------------ run context */

/* What a launcher may use. Owned by the backend state in cuda_backend.cu. */
typedef struct cu_ctx {
    int device;
    int n_sm;                 /* multiprocessors, to size grids */
    cudaStream_t stream;      /* every kernel, copy and cuBLAS call goes here */
    cublasHandle_t blas;      /* bound to stream, with a fixed workspace */
    void *scratch;            /* [scratch_bytes] temporary memory of the node running */
    size_t scratch_bytes;
    int *err_dev;             /* device view of the error word (mapped host memory) */
    bool pdl;                 /* launches carry programmatic dependent launch (sm_90+) */
    /* The graph routes tokens (GK_OP_TOPK): its bf16 prefill GEMMs take the
     * activations as a bf16 pair (hi + lo, two GEMMs, ~16 mantissa bits)
     * instead of one bf16 rounding, whose error an expert choice amplifies. */
    bool split_act;
    unsigned *tickets;        /* [CU_TICKETS] zero between kernels: a grid's blocks count
                                 themselves here so its last block can finish the work */
    struct cu_mk *mk;         /* the persistent decode kernel's state (mk.cu) */
    char path[224];           /* how the last graph ran (path_note) */
} cu_ctx;
/* Decode attention takes n tokens x (kv heads x tiles of 2 query heads)
 * of them (attention.cu); 16384 keeps 1,024 tokens of several sequences
 * (gk_seq_decode) on the decode kernel for 8 kv heads of 4 query heads. */
#define CU_TICKETS 16384

/* ------------------------------------------- programmatic dependent launch */

/* With PDL (Hopper and newer) a kernel may start while the one before it on
 * the stream is still finishing, so its prologue (loading weights, which no
 * kernel writes) overlaps the other's tail. The contract every kernel launched
 * through cu_launch keeps: cu_pdl_wait() comes before its first read of
 * anything an earlier kernel wrote and before its first write of anything an
 * earlier kernel reads or writes (the wait returns once the previous grid has
 * completed and its memory is visible; that grid waited for its own
 * predecessor, so the order is transitive). cu_pdl_trigger() lets the next
 * kernel be scheduled; a kernel that never calls it triggers at its end.
 * Without PDL (older GPUs, GK_CUDA_PDL=0) both are no-ops. */
static __device__ __forceinline__ void cu_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void cu_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* The start of a kernel that reads or writes what earlier kernels touch from
 * its first instruction: let the next kernel be scheduled, then wait. The
 * trigger comes first so that a chain of kernels is resident ahead of the
 * one running (each still waits for its predecessor), and a GEMV further
 * down the chain starts its weight copies while this one waits.
 * CU_PDL_EARLY=0 triggers after the wait instead (the order before). */
#ifndef CU_PDL_EARLY
#define CU_PDL_EARLY 1
#endif
static __device__ __forceinline__ void cu_pdl_enter(void)
{
#if CU_PDL_EARLY
    cu_pdl_trigger();
    cu_pdl_wait();
#else
    cu_pdl_wait();
    cu_pdl_trigger();
#endif
}

/* kernel<<<grid, block, smem, c->stream>>>(args...), with the PDL attribute
 * when the context has it. The arguments convert to the kernel's parameter
 * types as in a plain launch. */
template <typename... P, typename... A>
static inline cudaError_t cu_launch(const cu_ctx *c, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                    A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = c->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}

/* The device-side error word: kernels that meet bad input (an id outside the
 * table, a position outside the cache) cannot return a status, so they leave
 * a note here; synchronize reads it after the stream drained. Writes are
 * plain stores (several failing threads may mix their fields): the note says
 * what kind of problem, the message is best effort. */
enum {
    CU_EW_CODE = 0,   /* cu_err_code, 0 = none */
    CU_EW_VALUE,      /* the offending id / position */
    CU_EW_INDEX,      /* token index */
    CU_EW_LIMIT,      /* table rows / cache rows */
    CU_EW_COUNT
};
enum cu_err_code { CU_ERR_NONE = 0, CU_ERR_BAD_ID = 1, CU_ERR_BAD_POS = 2,
                   CU_ERR_BAD_INDEX = 3 /* gather column / linear_id expert */ };

static __device__ __forceinline__ void cu_note(int *ew, int code, int value, int index, int limit)
{
    if (ew[CU_EW_CODE] == 0) {
        ew[CU_EW_VALUE] = value;
        ew[CU_EW_INDEX] = index;
        ew[CU_EW_LIMIT] = limit;
        __threadfence_system();
        ew[CU_EW_CODE] = code;
    }
}

/* ------------------------------------------------------------- launchers */

/* Each queues node nd on ctx->stream; nd was accepted by cu_node_ok. */
gk_status cu_get_rows(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_add(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_gelu_tanh(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_silu_mul(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_rms_norm(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_layer_norm(cu_ctx *c, const gk_node *nd, gk_err *err);
/* A residual ADD followed by a whole-row norm of its result: one kernel
 * writes both outputs. */
/* How many nodes from nodes[0] on (1..3) one GEMV launch can do: LINEAR
 * nodes of a few tokens sharing their input; then run them together. */
int cu_linear_group_size(const gk_node *nodes, size_t n_nodes);
gk_status cu_linear_group(cu_ctx *c, const gk_node *nodes, int count, gk_err *err);
/* Two ROPE nodes at the same positions (q, k) in one launch. */
bool cu_rope_pairs(const gk_node *a, const gk_node *b);
gk_status cu_rope_n(cu_ctx *c, const gk_node *const *nds, int count, gk_err *err);
bool cu_can_fuse_add_norm(const gk_node *add, const gk_node *norm);
gk_status cu_add_norm(cu_ctx *c, const gk_node *add, const gk_node *norm, gk_err *err);
gk_status cu_rope(cu_ctx *c, const gk_node *nd, gk_err *err);
/* The attention inputs of a block in one launch (rope.cu): nodes [RMS_NORM q,
 * RMS_NORM k (QK-norm),] ROPE q, ROPE k, ATTN; the norms and rotations write
 * their outputs, k and v go straight into the caches, then the attention
 * runs (cu_attn_stored). match returns the node count covered (3 or 5), or 0. */
int cu_rope_store_match(const gk_node *nodes, size_t count);
gk_status cu_rope_store(cu_ctx *c, const gk_node *nodes, int count, gk_err *err);
gk_status cu_linear(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_attn(cu_ctx *c, const gk_node *nd, gk_err *err);
/* The two halves of cu_attn: store the node's k, v rows into its caches;
 * then attend over the stored caches (a fused launcher that stored them
 * itself calls only the second). */
gk_status cu_attn_store(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_attn_stored(cu_ctx *c, const gk_node *nd, gk_err *err);

/* ABI 1.4's general vocabulary (vocab.cu) and the expert-indexed linear
 * (linear_id.cu). TOPK keeps a row of E values and E flags in shared memory
 * (cu_topk_smem bytes), so cu_node_ok bounds E by CU_TOPK_MAX_E. */
gk_status cu_mul(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_scale(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_softcap(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_gelu(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_geglu(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_softmax(cu_ctx *c, const gk_node *nd, gk_err *err);
#define CU_TOPK_MAX_E 8192
#define CU_TOPK_MAX_K 64
size_t cu_topk_smem(int64_t e_cols);
gk_status cu_topk(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_gather(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_moe_sum(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_linear_id(cu_ctx *c, const gk_node *nd, gk_err *err);

/* ---------------------------------------------------- fused decode GEMV */

/* One launch (gemv.cu) for the decode-sized LINEAR nodes (n <= CU_GEMV_MAX_TOKENS
 * tokens) of a block together with what sits around them: up to
 * CU_GEMV_MAX_MATS matrices reading one input, the norm that makes that input
 * (prologue) and the residual add or activation that reads the outputs
 * (epilogue). Every intermediate a node of the graph names is still written,
 * so verify and compare see all nodes. Results equal the unfused ops up to
 * the order of the dot products' float sums, which is fixed (no atomics):
 * the same inputs give the same bits on every run. */
#define CU_GEMV_MAX_TOKENS 8
#define CU_GEMV_MAX_MATS 3
typedef enum cu_gemv_pro { CU_PRO_NONE = 0, CU_PRO_RMS, CU_PRO_LAYER } cu_gemv_pro;
typedef enum cu_gemv_epi {
    CU_EPI_NONE = 0,
    CU_EPI_RESIDUAL, /* count 1: res_out = res + y[0] */
    CU_EPI_SWIGLU,   /* count 2, out[0] == out[1]: act_out = silu(y[0]) * y[1] */
    CU_EPI_GELU,     /* count 1: act_out = gelu_tanh(y[0]) */
} cu_gemv_epi;
typedef struct cu_gemv_desc {
    gk_dtype wtype;            /* dtype of every matrix and bias (F32, F16, BF16) */
    int n, in;                 /* tokens, input width */
    const float *x;            /* [n][in]: the input, or the norm's input */
    /* prologue: h = norm(x) as RMS_NORM (whole rows) / LAYER_NORM compute it,
     * written to norm_out [n][in] when that is not NULL; the matrices read h */
    cu_gemv_pro pro;
    gk_dtype norm_type;        /* dtype of norm_w / norm_b */
    const void *norm_w, *norm_b; /* [in]; norm_b may be NULL */
    float eps;
    float *norm_out;
    int count;                 /* matrices, 1..CU_GEMV_MAX_MATS */
    const void *W[CU_GEMV_MAX_MATS];    /* [out[k]][in] */
    const void *bias[CU_GEMV_MAX_MATS]; /* [out[k]] or NULL */
    float *y[CU_GEMV_MAX_MATS];         /* [n][out[k]]: y = h W^T + b, always written */
    int out[CU_GEMV_MAX_MATS];
    cu_gemv_epi epi;
    const float *res;          /* RESIDUAL: [n][out[0]] */
    float *res_out;            /* RESIDUAL: [n][out[0]] (may alias neither x nor y) */
    float *act_out;            /* SWIGLU, GELU: [n][out[0]] */
} cu_gemv_desc;
/* From nodes[0] on: [norm,] 1..CU_GEMV_MAX_MATS decode-sized LINEAR nodes
 * reading one input, [SILU_MUL of two | GELU_TANH of one | ADD of one and
 * another tensor] as one fused GEMV. Fills d and returns the node count it
 * covers, or 0 when the pattern is not there or cu_gemv declines. */
int cu_plan_gemv(const gk_node *nodes, size_t n_nodes, cu_gemv_desc *d);
/* Whether cu_gemv takes d (shapes, alignment, dtypes). */
bool cu_gemv_ok(const cu_gemv_desc *d);
/* Queue d on c->stream (through cu_launch, PDL-ready); nd names the node in
 * an error. */
gk_status cu_gemv(cu_ctx *c, const cu_gemv_desc *d, const gk_node *nd, gk_err *err);

/* ------------------------------------------- tensor-core prefill attention */

/* attn_flash.cu: the attention of an ATTN node with F16 or BF16 caches over
 * many tokens, on tensor cores. Runs after the node's k and v were stored in
 * the caches; reads q, the caches and pos, writes dst. */
bool cu_attn_flash_ok(const cu_ctx *c, const gk_node *nd);
gk_status cu_attn_flash(cu_ctx *c, const gk_node *nd, gk_err *err);

size_t cu_linear_scratch(const cu_ctx *c, const gk_node *nd);
size_t cu_attn_scratch(const cu_ctx *c, const gk_node *nd);

/* Once per context: raise the shared-memory limits of the kernels that need
 * more than 48 KB (attention.cu). */
gk_status cu_attn_setup(cu_ctx *c, gk_err *err);
/* Largest head dim the attention kernels take. */
#define CU_ATTN_MAX_HEAD_DIM 256

/* Sampling (sample.cu). Greedy needs no scratch; the sampler's own buffers
 * grow on demand in *buf (never inside a capture: sample is not a graph op). */
typedef struct cu_sample_buf {
    void *p;
    size_t bytes;
    int32_t *host_id;   /* pinned [1] */
} cu_sample_buf;
gk_status cu_sample(cu_ctx *c, cu_sample_buf *buf, const gk_tensor *logits,
                    const gk_sample_params *p, int32_t *token, gk_err *err);
void cu_sample_free(cu_sample_buf *buf);
/* GK_OP_SAMPLE as a graph node (capturable: its temporaries are scratch). */
size_t cu_sample_node_scratch(const cu_ctx *c, const gk_node *nd);
gk_status cu_sample_node(cu_ctx *c, const gk_node *nd, gk_err *err);

/* ------------------------------------------- persistent decode (mk.cu) */

/* A decode graph (one token) as one cooperative persistent kernel. run
 * plans g and, when every node up to a trailing GK_OP_SAMPLE has a stage,
 * queues the kernel and returns how many nodes it covers (the caller runs
 * the rest per-op); 0 when the graph goes per-op, with the reason in why.
 * GK_MEGAKERNEL=0 in the environment (gkrun --no-megakernel) turns it off. */
struct cu_mk;
struct cu_mk *cu_mk_new(void);
void cu_mk_free(struct cu_mk *m);
int cu_mk_run(cu_ctx *c, struct cu_mk *m, const gk_graph *g, gk_err *err);
const char *cu_mk_why(const struct cu_mk *m);
int cu_mk_stages(const struct cu_mk *m);
int cu_mk_grid(const struct cu_mk *m);

/* --------------------------------------------------------- error helpers */

/* GK_ERR_DEVICE naming the op and node when the last launch failed. */
static inline gk_status cu_launch_check(const gk_node *nd, const char *kernel, gk_err *err)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        return GK_OK;
    return gk_err_set(err, GK_ERR_DEVICE, "cuda: %s -> '%.48s': launching %s: %s",
                      gk_op_name(nd->op), nd->dst ? nd->dst->name : "", kernel,
                      cudaGetErrorString(e));
}

/* The same for a launch whose error came back from cu_launch. */
static inline gk_status cu_launch_result(cudaError_t e, const gk_node *nd, const char *kernel, gk_err *err)
{
    if (e == cudaSuccess)
        e = cudaGetLastError();
    else
        cudaGetLastError(); /* clear it */
    if (e == cudaSuccess)
        return GK_OK;
    return gk_err_set(err, GK_ERR_DEVICE, "cuda: %s -> '%.48s': launching %s: %s",
                      gk_op_name(nd->op), nd->dst ? nd->dst->name : "", kernel,
                      cudaGetErrorString(e));
}

static inline bool cu_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static inline unsigned cu_div_up(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

/* ------------------------------------------------------- device helpers */

/* The cache row of position p (>= 0): p itself in a cache of n_ctx rows,
 * p % rows in a ring (ATTN's f[2], ABI 1.4). */
static __device__ __forceinline__ int cu_cache_row(int p, int rows) { return p < rows ? p : p % rows; }
/* (1.5) Rows of one sequence slot of an attention node's caches: |f[3]|,
 * or all of them with one sequence. */
static inline int cu_slot_rows(const gk_node *nd)
{
    return nd->f[3] != 0.0f ? (int)fabsf(nd->f[3]) : (int)nd->src[4]->rows;
}
/* Each token's slot (src3's second row), or NULL with one sequence. */
static inline const int32_t *cu_slots(const gk_node *nd)
{
    return nd->f[3] != 0.0f ? (const int32_t *)nd->src[3]->data + nd->src[3]->cols : nullptr;
}
/* The positions a slot serves: its rows, or every one for a ring. */
static inline int cu_cache_positions(const gk_node *nd)
{
    return nd->f[2] != 0.0f ? INT_MAX : cu_slot_rows(nd);
}

/* Element i of p, of dtype ty (F16, BF16, else F32), as a float: for
 * weights whose dtype is only known at run time (norms, tables). */
static __device__ __forceinline__ float cu_ld_elem(const void *p, int ty, size_t i)
{
    if (ty == GK_DTYPE_F16)
        return __half2float(((const __half *)p)[i]);
    if (ty == GK_DTYPE_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

static __device__ __forceinline__ float cu_to_f32(float v) { return v; }
static __device__ __forceinline__ float cu_to_f32(__half v) { return __half2float(v); }
static __device__ __forceinline__ float cu_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> static __device__ __forceinline__ T cu_from_f32(float v);
template <> __device__ __forceinline__ float cu_from_f32<float>(float v) { return v; }
/* round to nearest even, as libgk's gk_f32_to_f16 / gk_f32_to_bf16 */
template <> __device__ __forceinline__ __half cu_from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 cu_from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* 16 bytes that no kernel writes while this one runs (weights, cache rows
 * stored by an earlier kernel): the read-only path, no L1 allocation.
 * volatile keeps loads issued before cu_pdl_wait where the code puts them;
 * the typed pointer lets the compiler see what is loaded (a void * parameter
 * measurably changed the GEMV's generated code). */
static __device__ __forceinline__ uint4 cu_ld_nc16(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* The 16 / sizeof(T) floats in 16 bytes of T (element 0 in the low bits). */
static __device__ __forceinline__ void cu_unpack16(uint4 u, float (&f)[4], float)
{
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}

static __device__ __forceinline__ float2 cu_h2f(unsigned w)
{
    return __half22float2(*reinterpret_cast<const __half2 *>(&w));
}

static __device__ __forceinline__ void cu_unpack16(uint4 u, float (&f)[8], __half)
{
    float2 a = cu_h2f(u.x), b = cu_h2f(u.y), c = cu_h2f(u.z), d = cu_h2f(u.w);
    f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

/* BF16 is the top half of an F32: widening is a shift. */
static __device__ __forceinline__ void cu_unpack16(uint4 u, float (&f)[8], __nv_bfloat16)
{
    f[0] = __uint_as_float(u.x << 16), f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16), f[3] = __uint_as_float(u.y & 0xffff0000u);
    f[4] = __uint_as_float(u.z << 16), f[5] = __uint_as_float(u.z & 0xffff0000u);
    f[6] = __uint_as_float(u.w << 16), f[7] = __uint_as_float(u.w & 0xffff0000u);
}

static __device__ __forceinline__ float cu_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float cu_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the first nw warps of the block (at most 32), which meet at
 * sync(); every thread of them gets the result, in a fixed order. red holds
 * 32 floats; the call begins and ends with sync() so red may be reused
 * right after. */
template <typename S>
static __device__ __forceinline__ float cu_warps_sum(float v, float *red, int nw, S sync)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = cu_warp_sum(v);
    sync();
    if (lane == 0)
        red[warp] = v;
    sync();
    float s = lane < nw ? red[lane] : 0.0f;
    s = cu_warp_sum(s);
    sync();
    return s;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
static __device__ __forceinline__ float cu_block_sum(float v, float *red)
{
    return cu_warps_sum(v, red, blockDim.x >> 5, [] { __syncthreads(); });
}

/* Launch a template kernel instantiated for the weight dtype of t:
 * CU_WEIGHT_SWITCH(t->dtype, T, { kernel<T><<<...>>>(...); }) */
#define CU_WEIGHT_SWITCH(dtype, T, ...)                                                      \
    do {                                                                                     \
        switch (dtype) {                                                                     \
        case GK_DTYPE_F16: {                                                                 \
            typedef __half T;                                                                \
            __VA_ARGS__                                                                      \
        } break;                                                                             \
        case GK_DTYPE_BF16: {                                                                \
            typedef __nv_bfloat16 T;                                                         \
            __VA_ARGS__                                                                      \
        } break;                                                                             \
        default: {                                                                           \
            typedef float T;                                                                 \
            __VA_ARGS__                                                                      \
        } break;                                                                             \
        }                                                                                    \
    } while (0)

#endif /* GK_CUDA_COMMON_CUH */
