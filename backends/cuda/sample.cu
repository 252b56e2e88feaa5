/* sample.cu - the optional `sample` op on CUDA: a token id from logits that
 * stay on the device, by the rules of core/generate.c's sample_u.
 *
 * Greedy (temperature <= 0 or top_k == 1): a grid-wide argmax in two small
 * kernels (per-block best, then the best of those), ties to the lowest id,
 * NaN never chosen. Otherwise: keys logit / temperature (float, as the host
 * divides), a stable descending radix sort of (key, id) (ties keep ids
 * ascending, the host's order), then one block applies top-k (keeping every
 * tie of the k-th), the softmax in double relative to the best key, top-p
 * (the smallest prefix whose mass reaches top_p) and the draw u, with block
 * scans instead of the host's sequential sums (same values, other rounding
 * order: a pick can differ only when u lies within ~1e-15 of a boundary).
 * Only the int32 id is copied back, into pinned memory. The same kernels
 * are GK_OP_SAMPLE inside a graph (cu_sample_node): temporaries in the
 * graph's scratch, the draw computed on the device from the node's ctl
 * (splitmix64 after `step` draws, as gk_rng), the id written to the node's
 * output and the step and position advanced by the picking thread.
 * Not here: repetition penalties, min-p, batched sampling.
 */
#include "cuda_common.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <math.h>
#include <stdlib.h>

#define ARGMAX_THREADS 256
#define ARGMAX_BLOCKS_MAX 512
#define PICK_THREADS 1024

/* ---------------------------------------------------------------- greedy */

struct best {
    float v;
    int i;
};

static __device__ __forceinline__ best better(best a, best b)
{
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

template <int THREADS>
static __device__ __forceinline__ best block_best(best b)
{
    __shared__ best red[THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        best x = {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
        b = better(b, x);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        red[warp] = b;
    __syncthreads();
    if (warp == 0) {
        b = lane < THREADS / 32 ? red[lane] : best{-INFINITY, 0x7fffffff};
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            best x = {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
            b = better(b, x);
        }
    }
    return b; /* valid in thread 0 */
}

/* Per block: the best (value, lowest index) of its grid-stride share. */
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_partial_kernel(const float *__restrict__ x, int n,
                                                                        best *__restrict__ part)
{
    cu_pdl_enter();
    best b = {-INFINITY, 0x7fffffff};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = x[i];
        if (!isnan(v))
            b = better(b, best{v, i});
    }
    b = block_best<ARGMAX_THREADS>(b);
    if (threadIdx.x == 0)
        part[blockIdx.x] = b;
}

/* After a GK_OP_SAMPLE pick: the step and the position move on (NULL: a
 * plain sample call). Thread 0 of the picking block. */
static __device__ __forceinline__ void advance(int32_t *ctl, int32_t *pos)
{
    if (ctl)
        ctl[2]++;
    if (pos)
        (*pos)++;
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_final_kernel(const best *__restrict__ part, int n_part,
                                                                      int32_t *__restrict__ id, int32_t *ctl,
                                                                      int32_t *pos)
{
    cu_pdl_enter();
    best b = {-INFINITY, 0x7fffffff};
    for (int i = threadIdx.x; i < n_part; i += blockDim.x)
        b = better(b, part[i]);
    b = block_best<ARGMAX_THREADS>(b);
    if (threadIdx.x == 0) {
        *id = b.i == 0x7fffffff ? 0 : b.i; /* all NaN: id 0, as the host's argmax */
        advance(ctl, pos);
    }
}

/* The draw gk_rng gives after ctl[2] draws from the seed in ctl[0..1]
 * (splitmix64, as core/generate.c). */
static __device__ double draw_at(const int32_t *ctl)
{
    uint64_t seed = (uint64_t)(uint32_t)ctl[0] | (uint64_t)(uint32_t)ctl[1] << 32;
    uint64_t z = seed + ((uint64_t)(uint32_t)ctl[2] + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* --------------------------------------------------------------- sampled */

__global__ void keys_kernel(const float *__restrict__ logits, int n, float temperature, float *__restrict__ keys,
                            int32_t *__restrict__ ids)
{
    cu_pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        /* + 0: -0 sorts with +0, as the host compares; a NaN logit is never drawn */
        float l = logits[i];
        keys[i] = isnan(l) ? -INFINITY : l / temperature + 0.0f;
        ids[i] = i;
    }
}

typedef cub::BlockReduce<double, PICK_THREADS> pick_reduce;
typedef cub::BlockScan<double, PICK_THREADS> pick_scan;

/* First index i < n (scanning tiles in order) where the running sum of
 * f(i) passes `target` (>= when ge, else >); n when none. *cum_at gets the
 * running sum there. One block. */
template <typename F>
static __device__ int first_crossing(int n, F f, double target, bool ge, double *cum_at,
                                     typename pick_scan::TempStorage &tmp, int *s_found, double *s_cum)
{
    double carry = 0.0;
    for (int base = 0; base < n; base += PICK_THREADS) {
        int i = base + threadIdx.x;
        double x = i < n ? f(i) : 0.0, incl, total;
        pick_scan(tmp).InclusiveSum(x, incl, total);
        double cum = carry + incl;
        if (threadIdx.x == 0)
            *s_found = n;
        __syncthreads();
        bool hit = i < n && (ge ? cum >= target : target < cum);
        if (hit)
            atomicMin(s_found, i);
        __syncthreads();
        int found = *s_found;
        if (found < n) {
            if (i == found)
                *s_cum = cum;
            __syncthreads();
            *cum_at = *s_cum;
            return found;
        }
        carry += total;
        __syncthreads(); /* tmp is reused */
    }
    return n;
}

/* keys/ids sorted descending (ties by id ascending); one block. */
__global__ void __launch_bounds__(PICK_THREADS)
    pick_kernel(const float *__restrict__ logits, const float *__restrict__ keys, const int32_t *__restrict__ ids,
                int n, int top_k, float top_p, double u, int32_t *__restrict__ id, int32_t *ctl, int32_t *pos)
{
    cu_pdl_enter();
    if (ctl)
        u = draw_at(ctl);
    if (!isfinite(keys[0])) {
        /* No finite best score: a temperature so small that logit / T overflows,
         * or no finite logit at all. The softmax's limit as T -> 0 is the
         * argmax, which is what the host does too. Uniform over the block. */
        best b = {-INFINITY, 0x7fffffff};
        for (int i = threadIdx.x; i < n; i += PICK_THREADS) {
            float v = logits[i];
            if (!isnan(v))
                b = better(b, best{v, i});
        }
        b = block_best<PICK_THREADS>(b);
        if (threadIdx.x == 0) {
            *id = b.i == 0x7fffffff ? 0 : b.i;
            advance(ctl, pos);
        }
        return;
    }
    __shared__ union {
        pick_reduce::TempStorage reduce;
        pick_scan::TempStorage scan;
    } tmp;
    __shared__ int s_n, s_found;
    __shared__ double s_sum, s_cum;
    if (threadIdx.x == 0) {
        int m = n;
        if (top_k > 0 && top_k < n) {
            /* keep every key equal to the k-th: they sit right after it */
            float kth = keys[top_k - 1];
            int lo = top_k, hi = n;
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                if (keys[mid] == kth)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            m = lo;
        }
        s_n = m;
    }
    __syncthreads();
    const int m = s_n;
    const double k0 = (double)keys[0];

    double part = 0.0;
    for (int i = threadIdx.x; i < m; i += PICK_THREADS)
        part += exp((double)keys[i] - k0);
    double sum = pick_reduce(tmp.reduce).Sum(part);
    if (threadIdx.x == 0)
        s_sum = sum;
    __syncthreads();
    sum = s_sum;

    /* p_i = e_i / sum; top-p keeps the shortest prefix reaching top_p and
     * renormalizes by its mass */
    int keep = m;
    double mass = 1.0;
    if (top_p > 0.0f && top_p < 1.0f) {
        double cum_at = 1.0;
        auto prob = [&](int i) { return exp((double)keys[i] - k0) / sum; };
        int f = first_crossing(m, prob, (double)top_p, true, &cum_at, tmp.scan, &s_found, &s_cum);
        if (f < m) {
            keep = f + 1;
            mass = cum_at;
        }
        __syncthreads();
    }
    double cum_at;
    const double norm = mass;
    const bool renorm = keep != m || (top_p > 0.0f && top_p < 1.0f);
    auto draw = [&](int i) {
        double p = exp((double)keys[i] - k0) / sum;
        return renorm ? p / norm : p;
    };
    int f = first_crossing(keep, draw, u, false, &cum_at, tmp.scan, &s_found, &s_cum);
    if (threadIdx.x == 0) {
        *id = ids[f < keep ? f : keep - 1];
        advance(ctl, pos);
    }
}

/* ---------------------------------------------------------------- entry */

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static gk_status grow(cu_ctx *c, cu_sample_buf *buf, size_t need, gk_err *err)
{
    if (!buf->host_id) {
        cudaError_t e = cudaHostAlloc((void **)&buf->host_id, sizeof(int32_t), cudaHostAllocDefault);
        if (e != cudaSuccess) {
            buf->host_id = NULL;
            return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: cudaHostAlloc: %s", cudaGetErrorString(e));
        }
    }
    if (need <= buf->bytes)
        return GK_OK;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) {
        cudaFree(buf->p);
        buf->p = NULL;
        buf->bytes = 0;
        e = cudaMalloc(&buf->p, need);
    }
    if (e != cudaSuccess) {
        buf->p = NULL;
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: %zu bytes of scratch: %s", need,
                          cudaGetErrorString(e));
    }
    buf->bytes = need;
    return GK_OK;
}

void cu_sample_free(cu_sample_buf *buf)
{
    cudaFree(buf->p);
    if (buf->host_id)
        cudaFreeHost(buf->host_id);
    buf->p = NULL;
    buf->host_id = NULL;
    buf->bytes = 0;
}

static gk_status check(const char *what, gk_err *err)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        return GK_OK;
    return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: %s: %s", what, cudaGetErrorString(e));
}

gk_status cu_sample(cu_ctx *c, cu_sample_buf *buf, const gk_tensor *logits, const gk_sample_params *p,
                    int32_t *token, gk_err *err)
{
    int n = (int)gk_tensor_nelem(logits);
    const float *x = (const float *)logits->data;
    bool greedy = p->temperature <= 0.0f || p->top_k == 1;
    gk_status s;
    int32_t *d_id;
    if (greedy) {
        int blocks = (int)cu_div_up(n, ARGMAX_THREADS * 8);
        if (blocks > ARGMAX_BLOCKS_MAX)
            blocks = ARGMAX_BLOCKS_MAX;
        if ((s = grow(c, buf, align256(blocks * sizeof(best)) + 256, err)) != GK_OK)
            return s;
        best *part = (best *)buf->p;
        d_id = (int32_t *)((char *)buf->p + align256(blocks * sizeof(best)));
        argmax_partial_kernel<<<blocks, ARGMAX_THREADS, 0, c->stream>>>(x, n, part);
        argmax_final_kernel<<<1, ARGMAX_THREADS, 0, c->stream>>>(part, blocks, d_id, nullptr, nullptr);
        if ((s = check("argmax", err)) != GK_OK)
            return s;
    } else {
        size_t sort_bytes = 0;
        cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(NULL, sort_bytes, (const float *)NULL, (float *)NULL,
                                                                  (const int32_t *)NULL, (int32_t *)NULL, n, 0,
                                                                  32, c->stream);
        if (e != cudaSuccess)
            return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: sort size: %s", cudaGetErrorString(e));
        size_t arr = align256((size_t)n * 4);
        if ((s = grow(c, buf, 4 * arr + align256(sort_bytes) + 256, err)) != GK_OK)
            return s;
        char *b = (char *)buf->p;
        float *keys = (float *)b, *keys_sorted = (float *)(b + arr);
        int32_t *ids = (int32_t *)(b + 2 * arr), *ids_sorted = (int32_t *)(b + 3 * arr);
        void *sort_tmp = b + 4 * arr;
        d_id = (int32_t *)(b + 4 * arr + align256(sort_bytes));
        int blocks = (int)cu_div_up(n, 256);
        if (blocks > 8 * c->n_sm)
            blocks = 8 * c->n_sm;
        keys_kernel<<<blocks, 256, 0, c->stream>>>(x, n, p->temperature, keys, ids);
        if ((s = check("keys", err)) != GK_OK)
            return s;
        e = cub::DeviceRadixSort::SortPairsDescending(sort_tmp, sort_bytes, keys, keys_sorted, ids, ids_sorted, n, 0,
                                                      32, c->stream);
        if (e != cudaSuccess)
            return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: sort: %s", cudaGetErrorString(e));
        pick_kernel<<<1, PICK_THREADS, 0, c->stream>>>(x, keys_sorted, ids_sorted, n, p->top_k, p->top_p, p->u, d_id,
                                                       nullptr, nullptr);
        if ((s = check("pick", err)) != GK_OK)
            return s;
    }
    cudaError_t e = cudaMemcpyAsync(buf->host_id, d_id, sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: %s", cudaGetErrorString(e));
    *token = *buf->host_id;
    return GK_OK;
}

/* ------------------------------------------------------------ graph op */

/* GK_OP_SAMPLE inside a graph: the same kernels, temporaries in the graph's
 * scratch (sized by cu_sample_node_scratch before any capture), the draw
 * computed on the device from the node's ctl, the id written to dst. */
static bool node_greedy(const gk_node *nd) { return nd->f[0] <= 0.0f || nd->i[0] == 1; }

static int argmax_blocks(int n)
{
    int blocks = (int)cu_div_up(n, ARGMAX_THREADS * 8);
    return blocks > ARGMAX_BLOCKS_MAX ? ARGMAX_BLOCKS_MAX : blocks;
}

static size_t sort_bytes_for(int n)
{
    size_t b = 0;
    cub::DeviceRadixSort::SortPairsDescending(NULL, b, (const float *)NULL, (float *)NULL, (const int32_t *)NULL,
                                              (int32_t *)NULL, n, 0, 32, (cudaStream_t)0);
    return b;
}

size_t cu_sample_node_scratch(const cu_ctx *c, const gk_node *nd)
{
    int n = (int)nd->src[0]->cols;
    if (node_greedy(nd))
        return align256(argmax_blocks(n) * sizeof(best));
    return 4 * align256((size_t)n * 4) + align256(sort_bytes_for(n));
}

gk_status cu_sample_node(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    int n = (int)nd->src[0]->cols;
    const float *x = (const float *)nd->src[0]->data;
    int32_t *ctl = (int32_t *)nd->src[1]->data, *pos = nd->src[2] ? (int32_t *)nd->src[2]->data : nullptr;
    int32_t *id = (int32_t *)nd->dst->data;
    if (node_greedy(nd)) {
        int blocks = argmax_blocks(n);
        best *part = (best *)c->scratch;
        cudaError_t e = cu_launch(c, argmax_partial_kernel, dim3(blocks), dim3(ARGMAX_THREADS), 0, x, n, part);
        if (e == cudaSuccess)
            e = cu_launch(c, argmax_final_kernel, dim3(1), dim3(ARGMAX_THREADS), 0, (const best *)part, blocks, id,
                          ctl, pos);
        return e == cudaSuccess ? check("argmax", err)
                                : gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: argmax: %s", cudaGetErrorString(e));
    }
    size_t arr = align256((size_t)n * 4), sort_bytes = sort_bytes_for(n);
    char *b = (char *)c->scratch;
    float *keys = (float *)b, *keys_sorted = (float *)(b + arr);
    int32_t *ids = (int32_t *)(b + 2 * arr), *ids_sorted = (int32_t *)(b + 3 * arr);
    int blocks = (int)cu_div_up(n, 256);
    if (blocks > 8 * c->n_sm)
        blocks = 8 * c->n_sm;
    cudaError_t le = cu_launch(c, keys_kernel, dim3(blocks), dim3(256), 0, x, n, nd->f[0], keys, ids);
    if (le != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: keys: %s", cudaGetErrorString(le));
    gk_status s = check("keys", err);
    if (s != GK_OK)
        return s;
    cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(b + 4 * arr, sort_bytes, keys, keys_sorted, ids,
                                                              ids_sorted, n, 0, 32, c->stream);
    if (e != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: sort: %s", cudaGetErrorString(e));
    /* after cub's kernels (plain launches): the wait is immediate */
    le = cu_launch(c, pick_kernel, dim3(1), dim3(PICK_THREADS), 0, x, (const float *)keys_sorted,
                   (const int32_t *)ids_sorted, n, nd->i[0], nd->f[1], 0.0, id, ctl, pos);
    if (le != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: pick: %s", cudaGetErrorString(le));
    return check("pick", err);
}
