/* cuda_backend.cu - the CUDA backend plugin: device discovery, device memory
 * and the dispatch of graph nodes to kernels.
 *
 * Every CUDA error becomes a gk status at its call site, with CUDA's own text.
 * Without a usable GPU the plugin still loads; available() says why it cannot
 * run. Not here: the kernels (one .cu per op family beside this file).
 */
#include <gk/gk_plugin.h>

#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cuda_state {
    int device;
    bool usable;
    char why[256];
    cudaDeviceProp prop;
} cuda_state;

#define CUDA_TRY(call, err, what)                                                            \
    ({                                                                                       \
        cudaError_t e_ = (call);                                                             \
        e_ == cudaSuccess ? GK_OK                                                            \
                          : gk_err_set((err), GK_ERR_DEVICE, "%s: %s (%s:%d)", (what),       \
                                       cudaGetErrorString(e_), __FILE__, __LINE__);         \
    })

static gk_status cuda_init(const gk_host *host, void **out, gk_err *err)
{
    cuda_state *s = (cuda_state *)calloc(1, sizeof *s);
    if (!s)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(s->why, sizeof s->why, "no usable CUDA device: %s", cudaGetErrorString(e));
        cudaGetLastError();
    } else if (n == 0) {
        snprintf(s->why, sizeof s->why, "no CUDA device found");
    } else if ((e = cudaGetDeviceProperties(&s->prop, 0)) != cudaSuccess) {
        snprintf(s->why, sizeof s->why, "cannot query CUDA device 0: %s", cudaGetErrorString(e));
    } else if (s->prop.major < 8) {
        snprintf(s->why, sizeof s->why, "%s has compute capability %d.%d; gk needs 8.0 or newer",
                 s->prop.name, s->prop.major, s->prop.minor);
    } else {
        s->usable = true;
    }
    *out = s;
    return GK_OK;
}

static void cuda_fini(void *state) { free(state); }

static bool cuda_available(void *state, char *why, size_t len)
{
    cuda_state *s = (cuda_state *)state;
    if (!s->usable && why)
        snprintf(why, len, "%s", s->why);
    return s->usable;
}

static gk_status cuda_props(void *state, gk_device_props *p, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    memset(p, 0, sizeof *p);
    if (!s->usable)
        return gk_err_set(err, GK_ERR_DEVICE, "%s", s->why);
    size_t free_b = 0, total_b = 0;
    gk_status st = CUDA_TRY(cudaMemGetInfo(&free_b, &total_b), err, "cudaMemGetInfo");
    if (st != GK_OK)
        return st;
    snprintf(p->name, sizeof p->name, "%s", s->prop.name);
    p->mem_total = total_b;
    p->mem_free = free_b;
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, s->device);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, s->device);
    p->peak_bw_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    p->is_gpu = true;
    return GK_OK;
}

static gk_status cuda_alloc(void *state, size_t n, void **out, gk_err *err)
{
    *out = NULL;
    cudaError_t e = cudaMalloc(out, n ? n : 1);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return gk_err_set(err, GK_ERR_NOMEM, "out of GPU memory: needed %.1f MB, %.1f MB free",
                          n / 1e6, free_b / 1e6);
    }
    return CUDA_TRY(e, err, "cudaMalloc");
}

static void cuda_free(void *state, void *buf) { cudaFree(buf); }

static gk_status cuda_write(void *state, void *buf, size_t off, const void *src, size_t n, gk_err *err)
{
    return CUDA_TRY(cudaMemcpy((char *)buf + off, src, n, cudaMemcpyHostToDevice), err, "upload");
}

static gk_status cuda_read(void *state, const void *buf, size_t off, void *dst, size_t n, gk_err *err)
{
    return CUDA_TRY(cudaMemcpy(dst, (const char *)buf + off, n, cudaMemcpyDeviceToHost), err, "download");
}

/* FIXME(gk): no kernels yet; every node is refused, so a model load on this
 * backend fails with the name of the first op instead of running wrongly. */
static bool cuda_supports(void *state, const gk_node *node) { return false; }

static gk_status cuda_compute(void *state, const gk_graph *g, gk_err *err)
{
    return gk_err_set(err, GK_ERR_UNSUPPORTED, "the cuda backend has no kernels yet");
}

static gk_status cuda_sync(void *state, gk_err *err)
{
    return CUDA_TRY(cudaDeviceSynchronize(), err, "kernel execution");
}

static const gk_backend_ops ops = {
    .struct_size = sizeof(gk_backend_ops),
    .available = cuda_available,
    .device_props = cuda_props,
    .buffer_alloc = cuda_alloc,
    .buffer_free = cuda_free,
    .buffer_write = cuda_write,
    .buffer_read = cuda_read,
    .supports_node = cuda_supports,
    .graph_compute = cuda_compute,
    .synchronize = cuda_sync,
};

extern "C" {
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, "cuda", "NVIDIA GPUs through CUDA and cuBLAS", cuda_init, cuda_fini, &ops)
}
