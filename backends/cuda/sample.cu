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
 * (ABI 1.3) In a graph, min-p and the penalties too: the penalties on a
 * copy of the logits in scratch before anything else (a histogram of the
 * window's ids, then one thread per token seen applies them with the host's
 * float operations in the host's order), min-p in pick_kernel after top-p
 * (the prefix with p_i >= min_p * p_0, renormalized), and the picking thread
 * appends the id to the ring.
 * Not here: min-p and penalties for the plain `sample` entry (the core
 * samples on the host then), batched sampling.
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

/* After a GK_OP_SAMPLE pick t: the step and the position move on, and with
 * a penalty window t goes into the ring at ctl[3] % r (NULL: a plain sample
 * call, no window). Thread 0 of the picking block. */
static __device__ __forceinline__ void advance(int32_t *ctl, int32_t *pos, int32_t *ring, int r, int32_t t)
{
    if (ctl)
        ctl[2]++;
    if (ctl && ring) {
        int total = ctl[3] > 0 ? ctl[3] : 0;
        ring[total % r] = t;
        ctl[3] = total + 1;
    }
    if (pos)
        (*pos)++;
}

/* ------------------------------------------------------------- penalties */

/* The window: the ring's last min(w, ctl[3], r) ids. */
static __device__ __forceinline__ int window_len(const int32_t *ctl, int w, int r)
{
    int total = ctl[3] > 0 ? ctl[3] : 0;
    int n = w < total ? w : total;
    return n < r ? n : r;
}

static __device__ __forceinline__ int32_t window_id(const int32_t *ring, const int32_t *ctl, int r, int len, int j)
{
    int total = ctl[3] > 0 ? ctl[3] : 0;
    return ring[(int)(((int64_t)total - len + j) % r)];
}

/* y = the logits, counts = 0. */
__global__ void pen_init_kernel(const float *__restrict__ x, int n, float *__restrict__ y, int *__restrict__ counts)
{
    cu_pdl_enter();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = x[i];
        counts[i] = 0;
    }
}

/* counts[t] = how often t is in the window (ids outside [0, n) skipped, as
 * the host skips them). */
__global__ void pen_count_kernel(const int32_t *__restrict__ ring, int r, int w, const int32_t *__restrict__ ctl,
                                 int n, int *counts)
{
    cu_pdl_enter();
    int len = window_len(ctl, w, r);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < len; j += gridDim.x * blockDim.x) {
        int32_t t = window_id(ring, ctl, r, len, j);
        if (t >= 0 && t < n)
            atomicAdd(&counts[t], 1);
    }
}

/* Once per token seen (the window entry whose exchange takes its count):
 * core/sample.c's apply_penalties, operation for operation in float:
 * l = l > 0 ? l / rep : l * rep (when rep != 1), then
 * l -= frequency * (float)count + presence. No contraction into FMAs. */
__global__ void pen_apply_kernel(const int32_t *__restrict__ ring, int r, int w, const int32_t *__restrict__ ctl,
                                 int n, int *counts, const float *__restrict__ pen, float *__restrict__ y)
{
    cu_pdl_enter();
    int len = window_len(ctl, w, r);
    const float rep = pen[0], presence = pen[1], frequency = pen[2];
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < len; j += gridDim.x * blockDim.x) {
        int32_t t = window_id(ring, ctl, r, len, j);
        if (t < 0 || t >= n)
            continue;
        int c = atomicExch(&counts[t], 0);
        if (c == 0)
            continue;
        float l = y[t];
        if (rep != 1.0f)
            l = l > 0.0f ? __fdiv_rn(l, rep) : __fmul_rn(l, rep);
        l = __fsub_rn(l, __fadd_rn(__fmul_rn(frequency, __int2float_rn(c)), presence));
        y[t] = l;
    }
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_final_kernel(const best *__restrict__ part, int n_part,
                                                                      int32_t *__restrict__ id, int32_t *ctl,
                                                                      int32_t *pos, int32_t *ring, int r)
{
    cu_pdl_enter();
    best b = {-INFINITY, 0x7fffffff};
    for (int i = threadIdx.x; i < n_part; i += blockDim.x)
        b = better(b, part[i]);
    b = block_best<ARGMAX_THREADS>(b);
    if (threadIdx.x == 0) {
        int32_t t = b.i == 0x7fffffff ? 0 : b.i; /* all NaN: id 0, as the host's argmax */
        *id = t;
        advance(ctl, pos, ring, r, t);
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
                int n, int top_k, float top_p, float min_p, double u, int32_t *__restrict__ id, int32_t *ctl,
                int32_t *pos, int32_t *ring, int r)
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
            int32_t t = b.i == 0x7fffffff ? 0 : b.i;
            *id = t;
            advance(ctl, pos, ring, r, t);
        }
        return;
    }
    __shared__ union {
        pick_reduce::TempStorage reduce;
        pick_scan::TempStorage scan;
    } tmp;
    __shared__ int s_n, s_found;
    __shared__ double s_sum, s_cum, s_mass;
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
    /* p_i as the host has them after top-p */
    auto prob_p = [&](int i) {
        double p = exp((double)keys[i] - k0) / sum;
        return renorm ? p / norm : p;
    };
    /* min-p: keep the prefix before the first i >= 1 with p_i < min_p * p_0
     * (the host's scan), renormalized by its mass */
    double mass_m = 1.0;
    if (min_p > 0.0f) {
        const double cut = (double)min_p * prob_p(0);
        if (threadIdx.x == 0)
            s_found = keep;
        __syncthreads();
        for (int i = 1 + threadIdx.x; i < keep; i += PICK_THREADS)
            if (prob_p(i) < cut) {
                atomicMin(&s_found, i);
                break; /* later i of this thread are larger */
            }
        __syncthreads();
        keep = s_found;
        double part_m = 0.0;
        for (int i = threadIdx.x; i < keep; i += PICK_THREADS)
            part_m += prob_p(i);
        double tot = pick_reduce(tmp.reduce).Sum(part_m);
        if (threadIdx.x == 0)
            s_mass = tot;
        __syncthreads();
        mass_m = s_mass;
    }
    const bool renorm_m = min_p > 0.0f;
    auto draw = [&](int i) {
        double p = prob_p(i);
        return renorm_m ? p / mass_m : p;
    };
    int f = first_crossing(keep, draw, u, false, &cum_at, tmp.scan, &s_found, &s_cum);
    if (threadIdx.x == 0) {
        int32_t t = ids[f < keep ? f : keep - 1];
        *id = t;
        advance(ctl, pos, ring, r, t);
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
        argmax_final_kernel<<<1, ARGMAX_THREADS, 0, c->stream>>>(part, blocks, d_id, nullptr, nullptr, nullptr, 0);
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
        pick_kernel<<<1, PICK_THREADS, 0, c->stream>>>(x, keys_sorted, ids_sorted, n, p->top_k, p->top_p, 0.0f, p->u,
                                                       d_id, nullptr, nullptr, nullptr, 0);
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

/* Bytes of the chain's own temporaries (argmax partials, or keys, ids and
 * the sort's); with a penalty window the penalized logits and the counts
 * follow. */
static size_t base_scratch(const gk_node *nd, int n)
{
    if (node_greedy(nd))
        return align256(argmax_blocks(n) * sizeof(best));
    return 4 * align256((size_t)n * 4) + align256(sort_bytes_for(n));
}

size_t cu_sample_node_scratch(const cu_ctx *c, const gk_node *nd)
{
    int n = (int)nd->src[0]->cols;
    size_t b = base_scratch(nd, n);
    return nd->i[1] > 0 ? b + 2 * align256((size_t)n * 4) : b;
}

static int grid_for(const cu_ctx *c, int n)
{
    int blocks = (int)cu_div_up(n > 0 ? n : 1, 256);
    return blocks > 8 * c->n_sm ? 8 * c->n_sm : blocks;
}

gk_status cu_sample_node(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    int n = (int)nd->src[0]->cols;
    const float *x = (const float *)nd->src[0]->data;
    int32_t *ctl = (int32_t *)nd->src[1]->data, *pos = nd->src[2] ? (int32_t *)nd->src[2]->data : nullptr;
    int32_t *id = (int32_t *)nd->dst->data;
    const int w = nd->i[1];
    int32_t *ring = w > 0 ? (int32_t *)nd->src[3]->data : nullptr;
    const int r = w > 0 ? (int)nd->src[3]->cols : 0;
    if (w > 0) {
        /* the penalties, on a copy of the logits that the rest then reads */
        char *pb = (char *)c->scratch + base_scratch(nd, n);
        float *y = (float *)pb;
        int *counts = (int *)(pb + align256((size_t)n * 4));
        const float *pen = (const float *)nd->src[4]->data;
        cudaError_t e = cu_launch(c, pen_init_kernel, dim3(grid_for(c, n)), dim3(256), 0, x, n, y, counts);
        if (e == cudaSuccess)
            e = cu_launch(c, pen_count_kernel, dim3(grid_for(c, w < r ? w : r)), dim3(256), 0,
                          (const int32_t *)ring, r, w, (const int32_t *)ctl, n, counts);
        if (e == cudaSuccess)
            e = cu_launch(c, pen_apply_kernel, dim3(grid_for(c, w < r ? w : r)), dim3(256), 0,
                          (const int32_t *)ring, r, w, (const int32_t *)ctl, n, counts, pen, y);
        if (e != cudaSuccess)
            return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: penalties: %s", cudaGetErrorString(e));
        gk_status s = check("penalties", err);
        if (s != GK_OK)
            return s;
        x = y;
    }
    if (node_greedy(nd)) {
        int blocks = argmax_blocks(n);
        best *part = (best *)c->scratch;
        cudaError_t e = cu_launch(c, argmax_partial_kernel, dim3(blocks), dim3(ARGMAX_THREADS), 0, x, n, part);
        if (e == cudaSuccess)
            e = cu_launch(c, argmax_final_kernel, dim3(1), dim3(ARGMAX_THREADS), 0, (const best *)part, blocks, id,
                          ctl, pos, ring, r);
        return e == cudaSuccess ? check("argmax", err)
                                : gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: argmax: %s", cudaGetErrorString(e));
    }
    size_t arr = align256((size_t)n * 4), sort_bytes = sort_bytes_for(n);
    char *b = (char *)c->scratch;
    float *keys = (float *)b, *keys_sorted = (float *)(b + arr);
    int32_t *ids = (int32_t *)(b + 2 * arr), *ids_sorted = (int32_t *)(b + 3 * arr);
    cudaError_t le = cu_launch(c, keys_kernel, dim3(grid_for(c, n)), dim3(256), 0, x, n, nd->f[0], keys, ids);
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
                   (const int32_t *)ids_sorted, n, nd->i[0], nd->f[1], nd->f[2], 0.0, id, ctl, pos, ring, r);
    if (le != cudaSuccess)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: sample: pick: %s", cudaGetErrorString(le));
    return check("pick", err);
}
