/* cuda_backend.cu - the CUDA backend plugin: device discovery, device memory,
 * the one dispatch of graph nodes to kernels, and CUDA-graph replay.
 *
 * Everything runs on one stream; cuBLAS is bound to it with a fixed
 * workspace, and per-node temporaries come from one scratch region sized
 * before a graph runs, so a whole forward pass can be captured. graph_compute
 * runs a graph plainly the first time it sees it, captures it into a CUDA
 * graph the second time, and replays that afterwards (see "graph replay"),
 * knowing a graph by the core's id where it gives one and by its content
 * otherwise; GK_CUDA_GRAPHS=0 in the environment turns that off, and
 * GK_CUDA_PDL=0 programmatic dependent launch, for debugging. The dispatch
 * fuses runs of nodes into one launch (decode GEMVs with their norm and
 * epilogue, RoPE with the cache store); every node's output is still
 * written. read_async / read_wait copy small results through pinned slots,
 * each with an event, so the core can queue the next step first.
 * Every CUDA error becomes a gk status at its call site, with CUDA's own text;
 * kernels that meet bad ids or positions leave a note in a mapped error word
 * that synchronize turns into GK_ERR_INVALID_ARG. Without a usable GPU the
 * plugin still loads and available() says why; the stream, cuBLAS and the
 * rest are made on first use, so loading the plugin costs nothing.
 * Not here: the kernels (one .cu per op family beside this file).
 */
#include "cuda_common.cuh"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAPH_CACHE 8                   /* captured graphs kept (decode + a few prefill sizes) */
#define BLAS_WORKSPACE (32u << 20)      /* cuBLAS's recommendation for Hopper */
#define STAGE_MIN (8u << 20)            /* writes above this go through pinned staging */
#define STAGE_CHUNK (64u << 20)

/* One graph seen before: its signature (every pointer, shape and parameter
 * the launches depend on), and once captured, the executable graph. */
typedef struct graph_entry {
    uint64_t id;          /* the core's graph id, or 0: known by signature */
    uint64_t hash;
    uint64_t *sig;        /* [sig_len] */
    size_t sig_len;
    cudaGraphExec_t exec; /* NULL until captured */
    bool no_capture;      /* capture failed once: always run plainly */
    uint64_t last_use;
    char path[224];       /* how its launches ran (cu_ctx.path) */
} graph_entry;

typedef struct cuda_state {
    int device;
    bool usable;
    char why[256];
    cudaDeviceProp prop;

    bool no_graphs;       /* GK_CUDA_GRAPHS=0: never capture (for debugging) */
    bool ready;           /* the members below exist */
    cu_ctx ctx;
    void *blas_ws;
    int *err_host;        /* mapped pinned [CU_EW_COUNT] */
    graph_entry graphs[GRAPH_CACHE];
    uint64_t use_clock;
    uint64_t *sig;        /* [sig_cap] the signature being built */
    size_t sig_cap;
    void *stage[2];       /* pinned [STAGE_CHUNK] each, for large writes */
    cudaEvent_t stage_done[2];
    cu_sample_buf sample;
    /* read_async: pinned slots, each with the event its copy completes */
    char *async_host;     /* [GK_READ_ASYNC_SLOTS][GK_READ_ASYNC_MAX] pinned */
    cudaEvent_t async_done[GK_READ_ASYNC_SLOTS];
    uint64_t async_next;  /* the next ticket; ticket t uses slot t % SLOTS */
} cuda_state;

#define CUDA_TRY(call, err, what)                                                            \
    ({                                                                                       \
        cudaError_t e_ = (call);                                                             \
        e_ == cudaSuccess ? GK_OK                                                            \
                          : gk_err_set((err), GK_ERR_DEVICE, "cuda: %s: %s (%s:%d)", (what), \
                                       cudaGetErrorString(e_), __FILE__, __LINE__);         \
    })

/* ---------------------------------------------------------- life cycle */

/* cuBLAS and cuBLASLt each carry a C++ runtime whose exception pool is
 * malloc'd when they load and never freed; unloaded with this plugin, a leak
 * checker reports it. Keep them loaded for the life of the process. */
static void pin_blas(void)
{
    char name[64];
    snprintf(name, sizeof name, "libcublas.so.%d", CUBLAS_VER_MAJOR);
    void *h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    if (h)
        dlclose(h);
    snprintf(name, sizeof name, "libcublasLt.so.%d", CUBLAS_VER_MAJOR);
    h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    if (h)
        dlclose(h);
}

static gk_status cuda_init(const gk_host *host, void **out, gk_err *err)
{
    cuda_state *s = (cuda_state *)calloc(1, sizeof *s);
    if (!s)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    pin_blas();
    const char *graphs = getenv("GK_CUDA_GRAPHS");
    s->no_graphs = graphs && !strcmp(graphs, "0");
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

static void drop_graph(graph_entry *g)
{
    if (g->exec)
        cudaGraphExecDestroy(g->exec);
    free(g->sig);
    memset(g, 0, sizeof *g);
}

static void drop_graphs(cuda_state *s)
{
    for (int i = 0; i < GRAPH_CACHE; i++)
        drop_graph(&s->graphs[i]);
}

static void cuda_fini(void *state)
{
    cuda_state *s = (cuda_state *)state;
    if (s->ready) {
        cudaStreamSynchronize(s->ctx.stream);
        drop_graphs(s);
        cu_sample_free(&s->sample);
        for (int i = 0; i < GK_READ_ASYNC_SLOTS; i++)
            if (s->async_done[i])
                cudaEventDestroy(s->async_done[i]);
        if (s->async_host)
            cudaFreeHost(s->async_host);
        for (int i = 0; i < 2; i++) {
            if (s->stage[i])
                cudaFreeHost(s->stage[i]);
            if (s->stage_done[i])
                cudaEventDestroy(s->stage_done[i]);
        }
        cu_mk_free(s->ctx.mk);
        cudaFree(s->ctx.scratch);
        cudaFree(s->ctx.tickets);
        cudaFree(s->blas_ws);
        cublasDestroy(s->ctx.blas);
        cudaFreeHost(s->err_host);
        cudaStreamDestroy(s->ctx.stream);
    }
    free(s->sig);
    free(s);
}

/* The stream, cuBLAS and the error word, made on first use. */
static gk_status ready(cuda_state *s, gk_err *err)
{
    if (s->ready)
        return GK_OK;
    if (!s->usable)
        return gk_err_set(err, GK_ERR_DEVICE, "cuda: %s", s->why);
    cu_ctx *c = &s->ctx;
    gk_status st = CUDA_TRY(cudaSetDevice(s->device), err, "cudaSetDevice");
    if (st == GK_OK)
        st = CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), err, "cudaStreamCreate");
    if (st != GK_OK)
        return st;
    c->device = s->device;
    c->n_sm = s->prop.multiProcessorCount;
    const char *pdl = getenv("GK_CUDA_PDL");
    c->pdl = s->prop.major >= 9 && !(pdl && !strcmp(pdl, "0"));
    st = CUDA_TRY(cudaHostAlloc((void **)&s->err_host, CU_EW_COUNT * sizeof(int), cudaHostAllocMapped), err,
                  "cudaHostAlloc (error word)");
    if (st == GK_OK) {
        memset(s->err_host, 0, CU_EW_COUNT * sizeof(int));
        st = CUDA_TRY(cudaHostGetDevicePointer((void **)&c->err_dev, s->err_host, 0), err,
                      "cudaHostGetDevicePointer");
    }
    if (st == GK_OK)
        st = CUDA_TRY(cudaMalloc(&s->blas_ws, BLAS_WORKSPACE), err, "cudaMalloc (cuBLAS workspace)");
    if (st == GK_OK) {
        cublasStatus_t b = cublasCreate(&c->blas);
        if (b == CUBLAS_STATUS_SUCCESS)
            b = cublasSetStream(c->blas, c->stream);
        if (b == CUBLAS_STATUS_SUCCESS)
            b = cublasSetWorkspace(c->blas, s->blas_ws, BLAS_WORKSPACE);
        if (b == CUBLAS_STATUS_SUCCESS)
            b = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH); /* FP32 stays FP32: no TF32 */
        if (b != CUBLAS_STATUS_SUCCESS)
            st = gk_err_set(err, GK_ERR_DEVICE, "cuda: cuBLAS setup: %s", cublasGetStatusString(b));
    }
    if (st == GK_OK)
        st = CUDA_TRY(cudaMalloc((void **)&c->tickets, CU_TICKETS * sizeof(unsigned)), err, "cudaMalloc (tickets)");
    if (st == GK_OK)
        st = CUDA_TRY(cudaMemsetAsync(c->tickets, 0, CU_TICKETS * sizeof(unsigned), c->stream), err, "cudaMemset");
    if (st == GK_OK)
        st = cu_attn_setup(c, err);
    if (st == GK_OK && !(c->mk = cu_mk_new()))
        st = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    if (st != GK_OK) {
        cudaFree(c->tickets);
        /* leave nothing half made: the next call tries again */
        if (c->blas)
            cublasDestroy(c->blas);
        cudaFree(s->blas_ws);
        if (s->err_host)
            cudaFreeHost(s->err_host);
        cudaStreamDestroy(c->stream);
        memset(c, 0, sizeof *c);
        s->blas_ws = NULL;
        s->err_host = NULL;
        return st;
    }
    s->ready = true;
    return GK_OK;
}

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
    snprintf(p->name, sizeof p->name, "%.127s", s->prop.name);
    p->mem_total = total_b;
    p->mem_free = free_b;
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, s->device);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, s->device);
    p->peak_bw_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    p->is_gpu = true;
    return GK_OK;
}

/* -------------------------------------------------------------- memory */

/* Wait for the stream, then turn a kernel's note in the error word into a
 * status (and clear it). */
/* A note a kernel left in the error word, as a status (then cleared). */
static gk_status take_note(cuda_state *s, gk_err *err)
{
    volatile int *ew = s->err_host;
    int code = ew[CU_EW_CODE];
    if (code == CU_ERR_NONE)
        return GK_OK;
    int value = ew[CU_EW_VALUE], index = ew[CU_EW_INDEX], limit = ew[CU_EW_LIMIT];
    ew[CU_EW_CODE] = CU_ERR_NONE;
    if (code == CU_ERR_BAD_ID)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: get_rows: id %d at %d outside the table of %d rows",
                          value, index, limit);
    if (code == CU_ERR_BAD_INDEX)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "cuda: gather / linear_id: index %d of token %d outside 0..%d (columns / experts)", value,
                          index, limit - 1);
    return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: attn: position %d at %d outside the %d rows of the KV cache",
                      value, index, limit);
}

static gk_status drain(cuda_state *s, const char *what, gk_err *err)
{
    gk_status st = CUDA_TRY(cudaStreamSynchronize(s->ctx.stream), err, what);
    return st == GK_OK ? take_note(s, err) : st;
}

static gk_status cuda_alloc(void *state, size_t n, void **out, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    *out = NULL;
    gk_status st = ready(s, err);
    if (st != GK_OK)
        return st;
    cudaError_t e = cudaMalloc(out, n ? n : 1);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        *out = NULL;
        return gk_err_set(err, GK_ERR_NOMEM, "out of GPU memory: needed %.1f MB, %.1f MB free", n / 1e6,
                          free_b / 1e6);
    }
    return CUDA_TRY(e, err, "cudaMalloc");
}

static void cuda_free(void *state, void *buf) { cudaFree(buf); }

/* Large uploads (weights): chunks copied into two pinned buffers in turn, each
 * DMA overlapping the next memcpy; an event says when a buffer is free again. */
static gk_status staged_write(cuda_state *s, char *dst, const char *src, size_t n, gk_err *err)
{
    gk_status st = GK_OK;
    for (int i = 0; i < 2 && st == GK_OK; i++) {
        if (!s->stage[i])
            st = CUDA_TRY(cudaHostAlloc(&s->stage[i], STAGE_CHUNK, cudaHostAllocDefault), err,
                          "cudaHostAlloc (upload staging)");
        if (st == GK_OK && !s->stage_done[i])
            st = CUDA_TRY(cudaEventCreateWithFlags(&s->stage_done[i], cudaEventDisableTiming), err,
                          "cudaEventCreate");
    }
    if (st != GK_OK) /* no pinned memory to spare: the plain path */
        return CUDA_TRY(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), err, "upload");
    for (size_t off = 0, k = 0; off < n && st == GK_OK; off += STAGE_CHUNK, k ^= 1) {
        size_t len = n - off < STAGE_CHUNK ? n - off : STAGE_CHUNK;
        st = CUDA_TRY(cudaEventSynchronize(s->stage_done[k]), err, "upload");
        if (st != GK_OK)
            break;
        memcpy(s->stage[k], src + off, len);
        st = CUDA_TRY(cudaMemcpyAsync(dst + off, s->stage[k], len, cudaMemcpyHostToDevice, s->ctx.stream), err,
                      "upload");
        if (st == GK_OK)
            st = CUDA_TRY(cudaEventRecord(s->stage_done[k], s->ctx.stream), err, "upload");
    }
    return st;
}

static gk_status cuda_write(void *state, void *buf, size_t off, const void *src, size_t n, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    gk_status st = ready(s, err);
    if (st != GK_OK || n == 0)
        return st;
    if (n > STAGE_MIN)
        return staged_write(s, (char *)buf + off, (const char *)src, n, err);
    /* from pageable memory the source is copied out before this returns */
    return CUDA_TRY(cudaMemcpyAsync((char *)buf + off, src, n, cudaMemcpyHostToDevice, s->ctx.stream), err,
                    "upload");
}

static gk_status cuda_read(void *state, const void *buf, size_t off, void *dst, size_t n, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    gk_status st = ready(s, err);
    if (st != GK_OK || n == 0)
        return st;
    st = CUDA_TRY(cudaMemcpyAsync(dst, (const char *)buf + off, n, cudaMemcpyDeviceToHost, s->ctx.stream), err,
                  "download");
    if (st == GK_OK)
        st = drain(s, "download", err);
    return st;
}

/* ------------------------------------------------------------- support */

#define DT(x) (1u << (x))
#define DT_WEIGHT (DT(GK_DTYPE_F32) | DT(GK_DTYPE_F16) | DT(GK_DTYPE_BF16))
#define DT_ACT DT(GK_DTYPE_F32)
#define DT_INT DT(GK_DTYPE_I32)
#define ANY (-1)

/* t present, of an accepted dtype, [rows][cols] (ANY: unchecked), non-empty,
 * and small enough for the kernels' 32-bit row and column indices. */
static bool fits(const gk_tensor *t, unsigned dtypes, int64_t rows, int64_t cols)
{
    return t && (unsigned)t->dtype < 32 && (dtypes & DT(t->dtype)) && t->rows >= 1 && t->cols >= 1 &&
           t->rows < INT32_MAX && t->cols < INT32_MAX && (rows == ANY || t->rows == rows) &&
           (cols == ANY || t->cols == cols);
}

/* A refusal: false, with why (when wanted) saying what the kernels cannot take. */
static bool refuse(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool refuse(char *why, size_t len, const char *fmt, ...)
{
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* The dtypes and shapes of an op's operands as its kernels need them. */
static bool bad_operands(const gk_node *nd, char *why, size_t len, const char *want)
{
    return refuse(why, len, "%s: operands outside what the kernels take (%s)", gk_op_name(nd->op), want);
}

/* What the kernels take: cpu_ref's shape rules (caches F32, F16 or BF16),
 * plus head dim <= 256 and biases of the weight's dtype; when not, why says
 * which parameter or operand (why may be NULL). */
static bool node_check(const gk_node *nd, char *why, size_t len)
{
    const gk_tensor *x = nd->src[0], *y = nd->src[1], *d = nd->dst;
    switch (nd->op) {
    case GK_OP_GET_ROWS:
        if (fits(x, DT_WEIGHT, ANY, ANY) && fits(y, DT_INT, 1, ANY) && fits(d, DT_ACT, y->cols, x->cols))
            return true;
        return bad_operands(nd, why, len, "table F32/F16/BF16 [V][D], ids I32 [1][n], dst F32 [n][D]");
    case GK_OP_ADD:
    case GK_OP_SILU_MUL:
        if (fits(x, DT_ACT, ANY, ANY) && fits(y, DT_ACT, x->rows, x->cols) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][D] twice -> F32 [n][D]");
    case GK_OP_GEGLU:
        if (nd->i[0] != 0 && nd->i[0] != 1)
            return refuse(why, len, "geglu: GELU kind i[0] = %d (0 tanh, 1 erf)", (int)nd->i[0]);
        if (fits(x, DT_ACT, ANY, ANY) && fits(y, DT_ACT, x->rows, x->cols) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][D] twice -> F32 [n][D]");
    case GK_OP_SOFTCAP:
        if (!(nd->f[0] != 0.0f) || !isfinite(nd->f[0]))
            return refuse(why, len, "softcap: cap f[0] = %g (nonzero and finite)", (double)nd->f[0]);
        [[fallthrough]];
    case GK_OP_GELU_TANH:
    case GK_OP_GELU:
    case GK_OP_SCALE:
        if (fits(x, DT_ACT, ANY, ANY) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][D] -> F32 [n][D]");
    case GK_OP_SOFTMAX:
        if (fits(x, DT_ACT, ANY, ANY) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][D] -> F32 [n][D]");
    case GK_OP_MUL:
        if (fits(x, DT_ACT, ANY, ANY) && (fits(y, DT_WEIGHT, x->rows, x->cols) || fits(y, DT_WEIGHT, 1, x->cols)) &&
            fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][D] times F32/F16/BF16 [n][D] or [1][D] -> F32 [n][D]");
    case GK_OP_TOPK: {
        int64_t k = nd->i[0];
        if (!fits(x, DT_ACT, ANY, ANY) || !fits(d, DT_INT, x->rows, ANY))
            return bad_operands(nd, why, len, "F32 [n][E] -> I32 [n][k]");
        if (k < 1 || k > x->cols || d->cols != k)
            return refuse(why, len, "topk: k i[0] = %lld with E %lld and dst [%lld][%lld]", (long long)k,
                          (long long)x->cols, (long long)d->rows, (long long)d->cols);
        if (k > CU_TOPK_MAX_K || x->cols > CU_TOPK_MAX_E || x->rows > INT32_MAX)
            return refuse(why, len, "topk: k %lld of E %lld (the kernel takes k <= %d, E <= %d)", (long long)k,
                          (long long)x->cols, CU_TOPK_MAX_K, CU_TOPK_MAX_E);
        return true;
    }
    case GK_OP_GATHER:
        if (fits(x, DT_ACT, ANY, ANY) && fits(y, DT_INT, x->rows, ANY) && fits(d, DT_ACT, x->rows, y->cols))
            return true;
        return bad_operands(nd, why, len, "F32 [n][E], ids I32 [n][k] -> F32 [n][k]");
    case GK_OP_MOE_SUM:
        if (fits(y, DT_ACT, ANY, ANY) && fits(x, DT_ACT, y->rows, ANY) && fits(d, DT_ACT, y->rows, ANY) &&
            x->cols == y->cols * d->cols)
            return true;
        return bad_operands(nd, why, len, "F32 [n][k*D], weights F32 [n][k] -> F32 [n][D]");
    case GK_OP_LINEAR_ID: {
        const gk_tensor *ids = nd->src[2];
        int64_t E = nd->i[0];
        if (!fits(x, DT_ACT, ANY, ANY) || !fits(y, DT_WEIGHT, ANY, ANY) || !fits(ids, DT_INT, x->rows, ANY) ||
            !fits(d, DT_ACT, x->rows, ANY) || nd->src[3])
            return bad_operands(nd, why, len, "x F32 [n][in] or [n][k*in], W F32/F16/BF16 [E*out][in], ids I32 "
                                              "[n][k] -> F32 [n][k*out]");
        if (E < 1 || y->rows % E != 0)
            return refuse(why, len, "linear_id: E i[0] = %lld does not divide the %lld rows of the stacked experts",
                          (long long)E, (long long)y->rows);
        int64_t k = ids->cols, out = y->rows / E;
        if ((x->cols != y->cols && x->cols != k * y->cols) || d->cols != k * out)
            return bad_operands(nd, why, len, "x [n][in] or [n][k*in], dst [n][k*out]");
        if (x->rows > 65535 || k > 65535)
            return refuse(why, len, "linear_id: %lld tokens x %lld slots (the kernel takes up to 65535 each)",
                          (long long)x->rows, (long long)k);
        return true;
    }
    case GK_OP_LAYER_NORM:
        if (fits(x, DT_ACT, ANY, ANY) && fits(y, DT_WEIGHT, 1, x->cols) &&
            (!nd->src[2] || (fits(nd->src[2], DT_WEIGHT, 1, x->cols) && nd->src[2]->dtype == y->dtype)) &&
            fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "x F32 [n][D], w [1][D], bias of w's dtype [1][D] or none");
    case GK_OP_RMS_NORM: {
        if (!fits(x, DT_ACT, ANY, ANY))
            return bad_operands(nd, why, len, "x F32 [n][D]");
        int64_t g = nd->i[0] == 0 ? x->cols : nd->i[0];
        if (g < 1 || x->cols % g != 0)
            return refuse(why, len, "rms_norm: group i[0] = %d does not divide D %lld", (int)nd->i[0],
                          (long long)x->cols);
        if (!isfinite(nd->f[1]))
            return refuse(why, len, "rms_norm: weight offset f[1] = %g", (double)nd->f[1]);
        if (fits(y, DT_WEIGHT, 1, g) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "x F32 [n][D], w F32/F16/BF16 [1][G] -> F32 [n][D]");
    }
    case GK_OP_LINEAR:
        if (fits(x, DT_ACT, ANY, ANY) && fits(y, DT_WEIGHT, ANY, x->cols) &&
            (!nd->src[2] || (fits(nd->src[2], DT_WEIGHT, 1, y->rows) && nd->src[2]->dtype == y->dtype)) &&
            fits(d, DT_ACT, x->rows, y->rows))
            return true;
        return bad_operands(nd, why, len, "x F32 [n][in], W F32/F16/BF16 [out][in], bias of W's dtype [1][out]");
    case GK_OP_ROPE: {
        if (!fits(x, DT_ACT, ANY, ANY))
            return bad_operands(nd, why, len, "x F32 [n][H*hd]");
        int64_t hd = nd->i[0], r = nd->i[1] == 0 ? hd : nd->i[1];
        if (hd < 2 || hd % 2 != 0 || x->cols % hd != 0)
            return refuse(why, len, "rope: head_dim i[0] = %lld with %lld columns", (long long)hd, (long long)x->cols);
        if (r < 2 || r % 2 != 0 || r > hd)
            return refuse(why, len, "rope: rotary_dim i[1] = %d with head_dim %lld (even, 2..head_dim)",
                          (int)nd->i[1], (long long)hd);
        if (fits(y, DT_INT, 1, x->rows) && fits(nd->src[2], DT_ACT, 1, r / 2) && fits(d, DT_ACT, x->rows, x->cols))
            return true;
        return bad_operands(nd, why, len, "pos I32 [1][n], inv_freq F32 [1][rotary_dim/2], dst F32 like x");
    }
    case GK_OP_ATTN: {
        int64_t nh = nd->i[0], nkv = nd->i[1], hd = nd->i[2];
        if (nh < 1 || nkv < 1 || hd < 1 || nh % nkv != 0)
            return refuse(why, len, "attn: heads %lld / %lld, head_dim %lld", (long long)nh, (long long)nkv,
                          (long long)hd);
        if (hd > CU_ATTN_MAX_HEAD_DIM)
            return refuse(why, len, "attn: head_dim %lld (the kernels take up to %d)", (long long)hd,
                          CU_ATTN_MAX_HEAD_DIM);
        if (nd->i[3] < 0)
            return refuse(why, len, "attn: window i[3] = %d", (int)nd->i[3]);
        if (!(nd->f[1] >= 0.0f) || !isfinite(nd->f[1]))
            return refuse(why, len, "attn: softcap f[1] = %g (0 = off, else positive)", (double)nd->f[1]);
        if (nd->f[2] != 0.0f && nd->i[3] <= 0)
            return refuse(why, len, "attn: a ring cache (f[2]) needs a window i[3]");
        /* (1.5) sequence slots: src3 [2][n], whole slots of |f[3]| rows */
        const float S = fabsf(nd->f[3]);
        if (S != 0.0f && (S != floorf(S) || S > (float)INT_MAX || nd->src[4]->rows % (int64_t)S != 0))
            return refuse(why, len, "attn: slot rows f[3] = %g must be a whole number dividing the cache's %lld rows",
                          (double)nd->f[3], (long long)nd->src[4]->rows);
        if (nd->f[3] < 0.0f && x->rows > 65535)
            return refuse(why, len, "attn: %lld tokens of several sequence slots (at most 65535)",
                          (long long)x->rows);
        if (fits(x, DT_ACT, ANY, nh * hd) && fits(y, DT_ACT, x->rows, nkv * hd) &&
            fits(nd->src[2], DT_ACT, x->rows, nkv * hd) && fits(nd->src[3], DT_INT, S != 0.0f ? 2 : 1, x->rows) &&
            fits(nd->src[4], DT_WEIGHT, ANY, nkv * hd) &&
            fits(nd->src[5], DT(nd->src[4]->dtype), nd->src[4]->rows, nkv * hd) && fits(d, DT_ACT, x->rows, nh * hd))
            return true;
        return bad_operands(nd, why, len, "q, k, v F32, pos I32 [1][n] ([2][n] with slots), caches alike F32/F16/BF16 [rows][Hkv*hd]");
    }
    case GK_OP_SAMPLE: {
        float temp = nd->f[0], top_p = nd->f[1];
        /* (ABI 1.3) min-p f[2]; the penalty window i[1] over ring src3 with the penalties src4 */
        float min_p = nd->f[2];
        if (temp >= 0.0f && isfinite(temp) && top_p > 0.0f && top_p <= 1.0f && nd->i[0] >= 0 &&
            min_p >= 0.0f && min_p <= 1.0f && nd->i[1] >= 0 &&
            (nd->i[1] == 0 || (fits(nd->src[3], DT_INT, 1, ANY) && nd->src[3]->cols <= INT32_MAX &&
                               fits(nd->src[4], DT_ACT, 1, 4))) &&
            fits(x, DT_ACT, 1, ANY) && fits(y, DT_INT, 1, 4) && (!nd->src[2] || fits(nd->src[2], DT_INT, 1, 1)) &&
            fits(d, DT_INT, 1, 1))
            return true;
        return bad_operands(nd, why, len, "logits F32 [1][V], ctl I32 [1][4], parameters in range");
    }
    default:
        return refuse(why, len, "op %d (%s) is not one the cuda backend runs", (int)nd->op, gk_op_name(nd->op));
    }
}

static bool cu_node_ok(const gk_node *nd) { return node_check(nd, NULL, 0); }

static bool cuda_supports(void *state, const gk_node *node) { return node && cu_node_ok(node); }

static void cuda_explain(void *state, const gk_node *node, char *why, size_t len)
{
    if (!why || !len)
        return;
    if (!node) {
        snprintf(why, len, "no node");
        return;
    }
    if (node_check(node, why, len))
        snprintf(why, len, "%s: supported", gk_op_name(node->op));
}

/* ------------------------------------------------------------ dispatch */

/* Bytes of scratch node nd needs while it runs. */
static size_t node_scratch(const cu_ctx *c, const gk_node *nd)
{
    switch (nd->op) {
    case GK_OP_LINEAR: return cu_linear_scratch(c, nd);
    case GK_OP_ATTN: return cu_attn_scratch(c, nd);
    case GK_OP_SAMPLE: return cu_sample_node_scratch(c, nd);
    default: return 0;
    }
}

/* Queue one node: the one place that maps ops to kernels. */
static gk_status launch_node(cu_ctx *c, const gk_node *nd, gk_err *err)
{
    switch (nd->op) {
    case GK_OP_GET_ROWS: return cu_get_rows(c, nd, err);
    case GK_OP_ADD: return cu_add(c, nd, err);
    case GK_OP_LAYER_NORM: return cu_layer_norm(c, nd, err);
    case GK_OP_RMS_NORM: return cu_rms_norm(c, nd, err);
    case GK_OP_LINEAR: return cu_linear(c, nd, err);
    case GK_OP_ROPE: return cu_rope(c, nd, err);
    case GK_OP_ATTN: return cu_attn(c, nd, err);
    case GK_OP_GELU_TANH: return cu_gelu_tanh(c, nd, err);
    case GK_OP_SILU_MUL: return cu_silu_mul(c, nd, err);
    case GK_OP_SAMPLE: return cu_sample_node(c, nd, err);
    case GK_OP_MUL: return cu_mul(c, nd, err);
    case GK_OP_SCALE: return cu_scale(c, nd, err);
    case GK_OP_SOFTCAP: return cu_softcap(c, nd, err);
    case GK_OP_GELU: return cu_gelu(c, nd, err);
    case GK_OP_GEGLU: return cu_geglu(c, nd, err);
    case GK_OP_SOFTMAX: return cu_softmax(c, nd, err);
    case GK_OP_TOPK: return cu_topk(c, nd, err);
    case GK_OP_GATHER: return cu_gather(c, nd, err);
    case GK_OP_LINEAR_ID: return cu_linear_id(c, nd, err);
    case GK_OP_MOE_SUM: return cu_moe_sum(c, nd, err);
    default: return gk_err_set(err, GK_ERR_UNSUPPORTED, "cuda: unknown op %d", (int)nd->op);
    }
}

/* A whole-row norm whose output only LINEAR nodes read next: the prologue
 * (which has no weight offset). */
static bool is_row_norm(const gk_node *nd)
{
    return (nd->op == GK_OP_RMS_NORM && (nd->i[0] == 0 || nd->i[0] == nd->src[0]->cols) && nd->f[1] == 0.0f) ||
           nd->op == GK_OP_LAYER_NORM;
}

int cu_plan_gemv(const gk_node *nodes, size_t n_nodes, cu_gemv_desc *d)
{
    memset(d, 0, sizeof *d);
    size_t i = 0;
    const gk_node *norm = NULL;
    if (n_nodes >= 2 && is_row_norm(&nodes[0]) && nodes[1].op == GK_OP_LINEAR && nodes[1].src[0] == nodes[0].dst) {
        norm = &nodes[0];
        i = 1;
    }
    const gk_node *lin = &nodes[i];
    if (i >= n_nodes || lin->op != GK_OP_LINEAR || lin->src[0]->rows > CU_GEMV_MAX_TOKENS)
        return 0;
    int count = 0;
    while (i + count < n_nodes && count < CU_GEMV_MAX_MATS) {
        const gk_node *l = &nodes[i + count];
        if (l->op != GK_OP_LINEAR || l->src[0] != lin->src[0] || l->src[1]->dtype != lin->src[1]->dtype)
            break;
        d->W[count] = l->src[1]->data;
        d->bias[count] = l->src[2] ? l->src[2]->data : NULL;
        d->y[count] = (float *)l->dst->data;
        d->out[count] = (int)l->src[1]->rows;
        count++;
    }
    d->wtype = lin->src[1]->dtype;
    d->n = (int)lin->src[0]->rows;
    d->in = (int)lin->src[0]->cols;
    d->count = count;
    if (norm) {
        d->x = (const float *)norm->src[0]->data;
        d->pro = norm->op == GK_OP_RMS_NORM ? CU_PRO_RMS : CU_PRO_LAYER;
        d->norm_type = norm->src[1]->dtype;
        d->norm_w = norm->src[1]->data;
        d->norm_b = norm->op == GK_OP_LAYER_NORM && norm->src[2] ? norm->src[2]->data : NULL;
        d->eps = norm->f[0];
        d->norm_out = (float *)norm->dst->data;
    } else {
        d->x = (const float *)lin->src[0]->data;
    }
    size_t used = i + (size_t)count;
    const gk_node *e = used < n_nodes ? &nodes[used] : NULL;
    const gk_node *l0 = &nodes[i], *l1 = count > 1 ? &nodes[i + 1] : NULL;
    if (e && count == 2 && e->op == GK_OP_SILU_MUL && e->src[0] == l0->dst && e->src[1] == l1->dst) {
        d->epi = CU_EPI_SWIGLU;
        d->act_out = (float *)e->dst->data;
        used++;
    } else if (e && count == 1 && e->op == GK_OP_GELU_TANH && e->src[0] == l0->dst) {
        d->epi = CU_EPI_GELU;
        d->act_out = (float *)e->dst->data;
        used++;
    } else if (e && count == 1 && e->op == GK_OP_ADD && (e->src[0] == l0->dst) != (e->src[1] == l0->dst)) {
        d->epi = CU_EPI_RESIDUAL;
        d->res = (const float *)(e->src[0] == l0->dst ? e->src[1] : e->src[0])->data;
        d->res_out = (float *)e->dst->data;
        used++;
    }
    return cu_gemv_ok(d) ? (int)used : 0;
}

static gk_status launch_all(cu_ctx *c, const gk_graph *g, gk_err *err)
{
    /* a decode graph: one persistent kernel for all of it but the sampler */
    const size_t persistent = c->mk ? (size_t)cu_mk_run(c, c->mk, g, err) : 0;
    if (persistent)
        snprintf(c->path, sizeof c->path, "persistent kernel: %zu nodes as %d stages on %d blocks, then %zu per-op",
                 persistent, cu_mk_stages(c->mk), cu_mk_grid(c->mk), g->n_nodes - persistent);
    else
        snprintf(c->path, sizeof c->path, "per-op: %s", c->mk ? cu_mk_why(c->mk) : "no persistent kernel state");
    for (size_t i = persistent; i < g->n_nodes; i++) {
        gk_status st;
        /* a residual add and the norm of its result: one kernel, both outputs */
        int group, rs, fused;
        cu_gemv_desc gd;
        if ((rs = cu_rope_store_match(&g->nodes[i], g->n_nodes - i)) > 0) {
            /* [QK-norm,] RoPE and the cache store in one launch, then attention */
            st = cu_rope_store(c, &g->nodes[i], rs, err);
            i += (size_t)rs - 1;
        } else if ((fused = cu_plan_gemv(&g->nodes[i], g->n_nodes - i, &gd)) > 0) {
            /* [norm ->] projections sharing an input [-> activation or residual] */
            st = cu_gemv(c, &gd, &g->nodes[i], err);
            i += (size_t)fused - 1;
        } else if (i + 1 < g->n_nodes && cu_can_fuse_add_norm(&g->nodes[i], &g->nodes[i + 1])) {
            st = cu_add_norm(c, &g->nodes[i], &g->nodes[i + 1], err);
            i++;
        } else if (i + 1 < g->n_nodes && cu_rope_pairs(&g->nodes[i], &g->nodes[i + 1])) {
            const gk_node *pair[2] = {&g->nodes[i], &g->nodes[i + 1]};
            st = cu_rope_n(c, pair, 2, err);
            i++;
        } else if ((group = cu_linear_group_size(&g->nodes[i], g->n_nodes - i)) > 1) {
            /* q, k, v (or gate, up) read the same input: one GEMV launch */
            st = cu_linear_group(c, &g->nodes[i], group, err);
            i += (size_t)group - 1;
        } else {
            st = launch_node(c, &g->nodes[i], err);
        }
        if (st != GK_OK)
            return st;
    }
    return GK_OK;
}

/* Every node runnable, and the scratch large enough for the largest need.
 * Growing the scratch moves it, so captured graphs (which name the old one)
 * are dropped. */
static gk_status prepare(cuda_state *s, const gk_graph *g, gk_err *err)
{
    size_t need = 0;
    s->ctx.split_act = false;
    for (size_t i = 0; i < g->n_nodes; i++)
        s->ctx.split_act = s->ctx.split_act || g->nodes[i].op == GK_OP_TOPK;
    for (size_t i = 0; i < g->n_nodes; i++) {
        const gk_node *nd = &g->nodes[i];
        char why[160];
        if (!node_check(nd, why, sizeof why))
            return gk_err_set(err, GK_ERR_UNSUPPORTED, "cuda: cannot run op '%s' (node '%.48s'): %s",
                              gk_op_name(nd->op), nd->dst ? nd->dst->name : "", why);
        for (int k = 0; k < GK_MAX_SRC; k++)
            if ((nd->src[k] && !nd->src[k]->data) || !nd->dst->data)
                return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: %s -> '%.48s': a tensor has no data",
                                  gk_op_name(nd->op), nd->dst->name);
        size_t b = node_scratch(&s->ctx, nd);
        if (b > need)
            need = b;
    }
    if (need <= s->ctx.scratch_bytes)
        return GK_OK;
    need = (need + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    gk_status st = CUDA_TRY(cudaStreamSynchronize(s->ctx.stream), err, "kernel execution");
    if (st != GK_OK)
        return st;
    drop_graphs(s);
    cudaFree(s->ctx.scratch);
    s->ctx.scratch = NULL;
    s->ctx.scratch_bytes = 0;
    st = CUDA_TRY(cudaMalloc(&s->ctx.scratch, need), err, "cudaMalloc (scratch)");
    if (st == GK_OK)
        s->ctx.scratch_bytes = need;
    return st;
}

/* ------------------------------------------------------- graph replay */

/* A graph is recognised by content, not by address: the core frees and
 * rebuilds graphs (a new token count, a new head), and a new graph may reuse
 * the old one's addresses with other tensors behind them. The signature holds
 * what the launches depend on: per node the op, its parameters, and each
 * tensor's data pointer, dtype and shape. Equal signatures launch identical
 * kernels on identical memory, so a replay is exact. */
static gk_status build_sig(cuda_state *s, const gk_graph *g, size_t *len, uint64_t *hash, gk_err *err)
{
    const size_t per_node = 1 + 4 + 4 + (GK_MAX_SRC + 1) * 3;
    size_t need = 1 + g->n_nodes * per_node;
    if (need > s->sig_cap) {
        uint64_t *p = (uint64_t *)realloc(s->sig, need * sizeof *p);
        if (!p)
            return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
        s->sig = p;
        s->sig_cap = need;
    }
    uint64_t *w = s->sig;
    *w++ = g->n_nodes;
    for (size_t i = 0; i < g->n_nodes; i++) {
        const gk_node *nd = &g->nodes[i];
        *w++ = (uint64_t)nd->op;
        for (int k = 0; k < 4; k++) {
            uint32_t fb;
            memcpy(&fb, &nd->f[k], sizeof fb);
            *w++ = (uint64_t)(uint32_t)nd->i[k];
            *w++ = fb;
        }
        for (int k = 0; k <= GK_MAX_SRC; k++) {
            const gk_tensor *t = k < GK_MAX_SRC ? nd->src[k] : nd->dst;
            *w++ = t ? (uint64_t)(uintptr_t)t->data : 0;
            *w++ = t ? (uint64_t)t->dtype : ~0ull;
            *w++ = t ? ((uint64_t)t->rows << 32) ^ (uint64_t)t->cols : 0;
        }
    }
    *len = (size_t)(w - s->sig);
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the words */
    for (size_t i = 0; i < *len; i++) {
        h ^= s->sig[i];
        h *= 1099511628211ull;
    }
    *hash = h;
    return GK_OK;
}

static graph_entry *find_graph(cuda_state *s, uint64_t hash, size_t len)
{
    for (int i = 0; i < GRAPH_CACHE; i++) {
        graph_entry *g = &s->graphs[i];
        if (!g->id && g->sig && g->hash == hash && g->sig_len == len && !memcmp(g->sig, s->sig, len * sizeof *s->sig))
            return g;
    }
    return NULL;
}

static graph_entry *find_id(cuda_state *s, uint64_t id)
{
    for (int i = 0; i < GRAPH_CACHE; i++)
        if (s->graphs[i].id == id)
            return &s->graphs[i];
    return NULL;
}

/* The least recently used entry, emptied. */
static graph_entry *victim(cuda_state *s)
{
    graph_entry *v = &s->graphs[0];
    for (int i = 0; i < GRAPH_CACHE; i++) {
        if (!s->graphs[i].sig && !s->graphs[i].id) {
            v = &s->graphs[i];
            break;
        }
        if (s->graphs[i].last_use < v->last_use)
            v = &s->graphs[i];
    }
    drop_graph(v);
    return v;
}

/* Remember a graph the core named (evicting the least recently used). */
static graph_entry *remember_id(cuda_state *s, uint64_t id)
{
    graph_entry *v = victim(s);
    v->id = id;
    return v;
}

/* Remember the signature just built (evicting the least recently used). */
static graph_entry *remember_graph(cuda_state *s, uint64_t hash, size_t len)
{
    graph_entry *victim = ::victim(s);
    victim->sig = (uint64_t *)malloc(len * sizeof *victim->sig);
    if (!victim->sig)
        return NULL; /* just not remembered */
    memcpy(victim->sig, s->sig, len * sizeof *s->sig);
    victim->sig_len = len;
    victim->hash = hash;
    return victim;
}

/* Record g's launches into an executable graph; false (and CUDA's error state
 * cleared) when anything in the capture fails. */
static bool capture(cuda_state *s, const gk_graph *g, cudaGraphExec_t *exec)
{
    cu_ctx *c = &s->ctx;
    *exec = NULL;
    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    gk_err ignored;
    gk_status st = launch_all(c, g, &ignored);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (st == GK_OK && e == cudaSuccess && graph)
        e = cudaGraphInstantiate(exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (st != GK_OK || e != cudaSuccess || !*exec) {
        cudaGetLastError();
        *exec = NULL;
        return false;
    }
    return true;
}

/* A graph seen before: capture it the first time back (unless a capture of
 * it failed once), then launch the capture; plain launches when there is
 * none. */
static gk_status replay(cuda_state *s, graph_entry *ge, const gk_graph *g, gk_err *err)
{
    ge->last_use = ++s->use_clock;
    if (!ge->exec && !ge->no_capture) {
        if (capture(s, g, &ge->exec))
            memcpy(ge->path, s->ctx.path, sizeof ge->path);
        else
            ge->no_capture = true;
    }
    if (!ge->exec)
        return launch_all(&s->ctx, g, err);
    memcpy(s->ctx.path, ge->path, sizeof ge->path);
    return CUDA_TRY(cudaGraphLaunch(ge->exec, s->ctx.stream), err, "cudaGraphLaunch");
}

/* First sight of a graph: plain launches. Second: capture, then launch the
 * capture. After: replay. A capture that fails marks the graph to run plainly
 * from then on; nothing is reported, since plain launches are correct. */
static gk_status cuda_compute(void *state, const gk_graph *g, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    if (!g || (g->n_nodes && !g->nodes))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: graph_compute without nodes");
    gk_status st = ready(s, err);
    if (st != GK_OK)
        return st;
    if (g->id && !s->no_graphs) {
        /* replayed before and still captured: checked then, and a scratch
         * that grew since would have dropped the capture */
        graph_entry *ge = find_id(s, g->id);
        if (ge && ge->exec)
            return replay(s, ge, g, err);
    }
    st = prepare(s, g, err);
    if (st != GK_OK || g->n_nodes == 0)
        return st;
    if (s->no_graphs)
        return launch_all(&s->ctx, g, err);

    graph_entry *ge;
    size_t len = 0;
    uint64_t hash = 0;
    if (g->id) {
        ge = find_id(s, g->id); /* the core names the graph: no signature to build */
    } else {
        if (build_sig(s, g, &len, &hash, err) != GK_OK)
            return launch_all(&s->ctx, g, err);
        ge = find_graph(s, hash, len);
    }
    if (ge)
        return replay(s, ge, g, err);
    /* first sight: remember it, run it plainly */
    ge = g->id ? remember_id(s, g->id) : remember_graph(s, hash, len);
    if (ge)
        ge->last_use = ++s->use_clock;
    return launch_all(&s->ctx, g, err);
}

static void cuda_path_note(void *state, char *buf, size_t len)
{
    cuda_state *s = (cuda_state *)state;
    snprintf(buf, len, "%s", s->ready ? s->ctx.path : "");
}

static gk_status cuda_sync(void *state, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    if (!s->ready)
        return GK_OK;
    return drain(s, "kernel execution", err);
}

static gk_status cuda_sample(void *state, const gk_tensor *logits, const gk_sample_params *p, int32_t *token,
                             gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    gk_status st = ready(s, err);
    if (st != GK_OK)
        return st;
    if (!fits(logits, DT_ACT, ANY, ANY) || !logits->data)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: sample: logits must be a non-empty F32 tensor");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f) || p->top_k < 0 || !(p->u >= 0.0 && p->u < 1.0))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: sample: top_p %g, top_k %d or u %g out of range",
                          (double)p->top_p, (int)p->top_k, p->u);
    st = cu_sample(&s->ctx, &s->sample, logits, p, token, err);
    if (st == GK_OK)
        st = drain(s, "sample", err);
    return st;
}

static gk_status cuda_read_async(void *state, const void *buf, size_t off, size_t n, uint64_t *ticket,
                                 gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    gk_status st = ready(s, err);
    if (st != GK_OK)
        return st;
    if (n > GK_READ_ASYNC_MAX || !buf || !ticket)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: read_async of %zu bytes (at most %d, to a ticket)", n,
                          GK_READ_ASYNC_MAX);
    if (!s->async_host) {
        st = CUDA_TRY(cudaHostAlloc((void **)&s->async_host, GK_READ_ASYNC_SLOTS * GK_READ_ASYNC_MAX,
                                    cudaHostAllocDefault), err, "cudaHostAlloc (read_async)");
        for (int i = 0; st == GK_OK && i < GK_READ_ASYNC_SLOTS; i++)
            st = CUDA_TRY(cudaEventCreateWithFlags(&s->async_done[i], cudaEventDisableTiming), err, "cudaEventCreate");
        if (st != GK_OK)
            return st;
    }
    uint64_t t = s->async_next;
    int k = (int)(t % GK_READ_ASYNC_SLOTS);
    /* an earlier copy into this slot may still be queued: ordered on the stream before this one */
    st = CUDA_TRY(cudaMemcpyAsync(s->async_host + k * GK_READ_ASYNC_MAX, (const char *)buf + off, n,
                                  cudaMemcpyDeviceToHost, s->ctx.stream), err, "read_async");
    if (st == GK_OK)
        st = CUDA_TRY(cudaEventRecord(s->async_done[k], s->ctx.stream), err, "read_async");
    if (st == GK_OK) {
        *ticket = t;
        s->async_next = t + 1;
    }
    return st;
}

static gk_status cuda_read_wait(void *state, uint64_t ticket, void *dst, size_t n, gk_err *err)
{
    cuda_state *s = (cuda_state *)state;
    if (!s->async_host || ticket >= s->async_next || s->async_next - ticket > GK_READ_ASYNC_SLOTS ||
        n > GK_READ_ASYNC_MAX || !dst)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cuda: read_wait: ticket %llu is not one of the last %d",
                          (unsigned long long)ticket, GK_READ_ASYNC_SLOTS);
    int k = (int)(ticket % GK_READ_ASYNC_SLOTS);
    /* the slot's event is the newest copy into it, which is this ticket's */
    gk_status st = CUDA_TRY(cudaEventSynchronize(s->async_done[k]), err, "kernel execution");
    if (st == GK_OK)
        st = take_note(s, err);
    if (st == GK_OK)
        memcpy(dst, s->async_host + k * GK_READ_ASYNC_MAX, n);
    return st;
}

static const gk_backend_ops ops = {
    .struct_size = sizeof(gk_backend_ops),
    .magic = GK_BACKEND_OPS_MAGIC,
    .available = cuda_available,
    .device_props = cuda_props,
    .buffer_alloc = cuda_alloc,
    .buffer_free = cuda_free,
    .buffer_write = cuda_write,
    .buffer_read = cuda_read,
    .supports_node = cuda_supports,
    .graph_compute = cuda_compute,
    .synchronize = cuda_sync,
    .sample = cuda_sample,
    .read_async = cuda_read_async,
    .read_wait = cuda_read_wait,
    .explain_node = cuda_explain,
    .path_note = cuda_path_note,
};

extern "C" {
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, "cuda", "NVIDIA GPUs through CUDA and cuBLAS", cuda_init, cuda_fini, &ops)
}
