/* elementwise.cu - the CUDA kernels of the ops that touch each element once:
 * GET_ROWS (a table row to float), ADD, GELU_TANH and SILU_MUL.
 *
 * All are memory-bound: grid-stride loops with 16-byte accesses where the
 * pointers and sizes allow, scalar otherwise. The math is cpu_ref's, term for
 * term, with the precise expf/tanhf (the build has no fast-math).
 * Not here: norms (norm.cu), RoPE (rope.cu), anything with a reduction.
 */
#include "cuda_common.cuh"

/* ---------------------------------------------------------------- get_rows */

/* dst[t] = table[ids[t]] as float; grid (n, column blocks). A bad id leaves a
 * note in the error word and NaNs in the row. */
template <typename T>
__global__ void get_rows_kernel(const T *__restrict__ table, const int32_t *__restrict__ ids,
                                float *__restrict__ dst, int64_t n_rows, int d, int *ew)
{
    cu_pdl_enter();
    int t = blockIdx.x;
    int32_t id = ids[t];
    float *out = dst + (size_t)t * d;
    if (id < 0 || id >= n_rows) {
        if (blockIdx.y == 0 && threadIdx.x == 0)
            cu_note(ew, CU_ERR_BAD_ID, id, t, (int)n_rows);
        for (int j = blockIdx.y * blockDim.x + threadIdx.x; j < d; j += gridDim.y * blockDim.x)
            out[j] = __int_as_float(0x7fc00000);
        return;
    }
    const T *row = table + (size_t)id * d;
    for (int j = blockIdx.y * blockDim.x + threadIdx.x; j < d; j += gridDim.y * blockDim.x)
        out[j] = cu_to_f32(row[j]);
}

gk_status cu_get_rows(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const gk_tensor *table = nd->src[0], *ids = nd->src[1];
    int n = (int)ids->cols, d = (int)table->cols;
    dim3 grid(n, cu_div_up(d, 256) < 8 ? cu_div_up(d, 256) : 8);
    CU_WEIGHT_SWITCH(table->dtype, T, {
        cu_launch(c, get_rows_kernel<T>, dim3(grid), dim3(256), 0, (const T *)table->data, (const int32_t *)ids->data, (float *)nd->dst->data,
            table->rows, d, c->err_dev);
    });
    return cu_launch_check(nd, "get_rows_kernel", err);
}

/* ------------------------------------------------------------- binary ops */

enum { EW_ADD, EW_SILU_MUL, EW_GELU_TANH };

template <int OP>
static __device__ __forceinline__ float ew_apply(float a, float b)
{
    if (OP == EW_ADD)
        return a + b;
    if (OP == EW_SILU_MUL)
        return a / (1.0f + expf(-a)) * b;
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * a * (1.0f + tanhf(k * (a + 0.044715f * a * a * a)));
}

/* dst = op(a, b) over ne elements (b unused by GELU), float4 at a time. */
template <int OP>
__global__ void ew_vec4_kernel(const float4 *__restrict__ a, const float4 *__restrict__ b,
                               float4 *__restrict__ dst, int64_t n4)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 x = a[i], y = OP == EW_GELU_TANH ? x : b[i], r;
        r.x = ew_apply<OP>(x.x, y.x);
        r.y = ew_apply<OP>(x.y, y.y);
        r.z = ew_apply<OP>(x.z, y.z);
        r.w = ew_apply<OP>(x.w, y.w);
        dst[i] = r;
    }
}

template <int OP>
__global__ void ew_scalar_kernel(const float *__restrict__ a, const float *__restrict__ b,
                                 float *__restrict__ dst, int64_t ne)
{
    cu_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ne;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = ew_apply<OP>(a[i], OP == EW_GELU_TANH ? 0.0f : b[i]);
}

template <int OP>
static gk_status ew_launch(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    const float *a = (const float *)nd->src[0]->data;
    const float *b = OP == EW_GELU_TANH ? a : (const float *)nd->src[1]->data;
    float *dst = (float *)nd->dst->data;
    int64_t ne = gk_tensor_nelem(nd->dst);
    /* enough blocks to fill the GPU a few times over, no more */
    int64_t cap = 8LL * c->n_sm;
    if (ne % 4 == 0 && cu_aligned16(a) && cu_aligned16(b) && cu_aligned16(dst)) {
        int64_t blocks = (ne / 4 + 255) / 256;
        cu_launch(c, ew_vec4_kernel<OP>, dim3((unsigned)(blocks < cap ? blocks : cap)), dim3(256), 0, (const float4 *)a, (const float4 *)b, (float4 *)dst, ne / 4);
        return cu_launch_check(nd, "ew_vec4_kernel", err);
    }
    int64_t blocks = (ne + 255) / 256;
    cu_launch(c, ew_scalar_kernel<OP>, dim3((unsigned)(blocks < cap ? blocks : cap)), dim3(256), 0, a, b, dst, ne);
    return cu_launch_check(nd, "ew_scalar_kernel", err);
}

gk_status cu_add(cu_ctx *c, const gk_node *nd, gk_err *err) { return ew_launch<EW_ADD>(c, nd, err); }

gk_status cu_silu_mul(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    return ew_launch<EW_SILU_MUL>(c, nd, err);
}

gk_status cu_gelu_tanh(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    return ew_launch<EW_GELU_TANH>(c, nd, err);
}
