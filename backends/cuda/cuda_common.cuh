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
} cu_ctx;

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
enum cu_err_code { CU_ERR_NONE = 0, CU_ERR_BAD_ID = 1, CU_ERR_BAD_POS = 2 };

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
gk_status cu_linear(cu_ctx *c, const gk_node *nd, gk_err *err);
gk_status cu_attn(cu_ctx *c, const gk_node *nd, gk_err *err);

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

static inline bool cu_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static inline unsigned cu_div_up(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

/* ------------------------------------------------------- device helpers */

static __device__ __forceinline__ float cu_to_f32(float v) { return v; }
static __device__ __forceinline__ float cu_to_f32(__half v) { return __half2float(v); }
static __device__ __forceinline__ float cu_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

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

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result. red holds 32 floats; the call begins and ends with
 * a barrier so red may be reused right after. */
static __device__ __forceinline__ float cu_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float s = lane < nw ? red[lane] : 0.0f;
    s = cu_warp_sum(s);
    __syncthreads();
    return s;
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
