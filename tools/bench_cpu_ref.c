/* bench_cpu_ref.c - how fast the reference backend decodes a GPT-2-124M-shaped model.
 *
 * Usage: bench_cpu_ref [PLUGIN.so] [STEPS] [DTYPE]
 *   PLUGIN.so  default build/backends/cpu_ref/libgk-backend-cpu_ref.so (from cwd)
 *   STEPS      decode steps to time, default 16 (after one untimed warm-up step)
 *   DTYPE      of the weights: F32 (default), F16 or BF16
 *
 * It dlopens the plugin as the core does and runs the node sequence GPT-2's
 * builder makes (embd 768, 12 heads, 12 layers, ff 3072, vocab 50257, a
 * 128-row KV cache, tied head) on random weights, one token per step, and
 * prints tokens/s. It is not a correctness test (tests/test_cpu_ref_ops.c is)
 * and needs no checkpoint.
 */
#include "gk/gk_plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { N_EMBD = 768, N_HEAD = 12, HEAD_DIM = 64, N_LAYER = 12, N_FF = 3072,
       N_VOCAB = 50257, N_CTX = 128, MAX_TENSORS = 512, MAX_NODES = 256 };

typedef struct bench {
    const gk_backend_ops *ops;
    void *state;
    gk_tensor tensors[MAX_TENSORS];
    int n_tensors;
    gk_node nodes[MAX_NODES];
    int n_nodes;
    gk_dtype wtype;  /* of weight matrices, tables and biases */
    bool failed;
    gk_err err;
    uint64_t rng;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A backend tensor; when scale > 0 it is filled with uniform(-scale, scale),
 * when scale < 0 with the constant -scale (norm weights of 1). F32, F16, BF16. */
static gk_tensor *tensor(bench *b, gk_dtype dt, int64_t rows, int64_t cols, const char *name,
                         int il, float scale)
{
    if (b->failed || b->n_tensors == MAX_TENSORS) {
        b->failed = true;
        return NULL;
    }
    gk_tensor *t = &b->tensors[b->n_tensors];
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->rows = rows;
    t->cols = cols;
    t->layer = il;
    snprintf(t->name, sizeof t->name, "%s", name);
    if (b->ops->buffer_alloc(b->state, gk_tensor_nbytes(t), &t->data, &b->err) != GK_OK) {
        b->failed = true;
        return NULL;
    }
    b->n_tensors++;
    if (scale != 0.0f) {
        size_t ne = (size_t)gk_tensor_nelem(t);
        void *host = malloc(gk_tensor_nbytes(t));
        if (!host) {
            b->failed = true;
            return NULL;
        }
        for (size_t e = 0; e < ne; e++) {
            b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)(b->rng >> 40) / 16777216.0f * 2.0f - 1.0f;
            float val = scale > 0 ? scale * u : -scale;
            if (dt == GK_DTYPE_F16)
                ((uint16_t *)host)[e] = gk_f32_to_f16(val);
            else if (dt == GK_DTYPE_BF16)
                ((uint16_t *)host)[e] = gk_f32_to_bf16(val);
            else
                ((float *)host)[e] = val;
        }
        if (b->ops->buffer_write(b->state, t->data, 0, host, gk_tensor_nbytes(t), &b->err) != GK_OK)
            b->failed = true;
        free(host);
    }
    return t;
}

static gk_tensor *weight(bench *b, int64_t rows, int64_t cols, const char *name, int il)
{
    return tensor(b, b->wtype, rows, cols, name, il, 0.02f);
}

/* Append a node writing a new F32 [rows][cols] tensor; returns that tensor. */
static gk_tensor *node(bench *b, gk_op op, int64_t rows, int64_t cols, const char *name, int il,
                       gk_tensor *s0, gk_tensor *s1, gk_tensor *s2)
{
    gk_tensor *dst = tensor(b, GK_DTYPE_F32, rows, cols, name, il, 0.0f);
    if (!dst || b->n_nodes == MAX_NODES) {
        b->failed = true;
        return NULL;
    }
    gk_node *nd = &b->nodes[b->n_nodes++];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->dst = dst;
    nd->src[0] = s0;
    nd->src[1] = s1;
    nd->src[2] = s2;
    if (op == GK_OP_LAYER_NORM)
        nd->f[0] = 1e-5f;
    return dst;
}

/* x W^T + bias with a fresh W [out][x->cols] and bias [1][out]. */
static gk_tensor *linear(bench *b, gk_tensor *x, int64_t out, const char *name, int il)
{
    if (!x)
        return NULL;
    gk_tensor *w = weight(b, out, x->cols, name, il);
    gk_tensor *bias = weight(b, 1, out, name, il);
    return node(b, GK_OP_LINEAR, x->rows, out, name, il, x, w, bias);
}

/* LayerNorm with weight 1 and a random bias. */
static gk_tensor *layer_norm(bench *b, gk_tensor *x, const char *name, int il)
{
    gk_tensor *w = tensor(b, b->wtype, 1, N_EMBD, name, il, -1.0f);
    gk_tensor *bias = weight(b, 1, N_EMBD, name, il);
    return x ? node(b, GK_OP_LAYER_NORM, x->rows, N_EMBD, name, il, x, w, bias) : NULL;
}

/* One decode step of GPT-2: tokens -> final norm -> logits over the vocabulary. */
static void build_gpt2(bench *b, gk_tensor *ids, gk_tensor *pos)
{
    const int64_t n = 1;
    gk_tensor *wte = weight(b, N_VOCAB, N_EMBD, "wte", -1);
    gk_tensor *wpe = weight(b, N_CTX, N_EMBD, "wpe", -1);
    gk_tensor *tok = node(b, GK_OP_GET_ROWS, n, N_EMBD, "tok_embd", -1, wte, ids, NULL);
    gk_tensor *pe = node(b, GK_OP_GET_ROWS, n, N_EMBD, "pos_embd", -1, wpe, pos, NULL);
    gk_tensor *x = node(b, GK_OP_ADD, n, N_EMBD, "embd", -1, tok, pe, NULL);

    for (int il = 0; il < N_LAYER && !b->failed; il++) {
        gk_tensor *h = layer_norm(b, x, "attn_norm", il);
        gk_tensor *q = linear(b, h, N_EMBD, "q", il);
        gk_tensor *k = linear(b, h, N_EMBD, "k", il);
        gk_tensor *v = linear(b, h, N_EMBD, "v", il);
        gk_tensor *kc = tensor(b, GK_DTYPE_F32, N_CTX, N_EMBD, "cache_k", il, 0.0f);
        gk_tensor *vc = tensor(b, GK_DTYPE_F32, N_CTX, N_EMBD, "cache_v", il, 0.0f);
        gk_tensor *att = node(b, GK_OP_ATTN, n, N_EMBD, "attn", il, q, k, v);
        if (att) {
            gk_node *nd = &b->nodes[b->n_nodes - 1];
            nd->src[3] = pos;
            nd->src[4] = kc;
            nd->src[5] = vc;
            nd->i[0] = N_HEAD;
            nd->i[1] = N_HEAD;
            nd->i[2] = HEAD_DIM;
            nd->f[0] = 0.125f;  /* 1/sqrt(64) */
        }
        gk_tensor *o = linear(b, att, N_EMBD, "attn_out", il);
        gk_tensor *x1 = node(b, GK_OP_ADD, n, N_EMBD, "attn_res", il, x, o, NULL);
        h = layer_norm(b, x1, "ffn_norm", il);
        gk_tensor *up = linear(b, h, N_FF, "ffn_up", il);
        gk_tensor *act = node(b, GK_OP_GELU_TANH, n, N_FF, "ffn_act", il, up, NULL, NULL);
        gk_tensor *down = linear(b, act, N_EMBD, "ffn_out", il);
        x = node(b, GK_OP_ADD, n, N_EMBD, "l_out", il, x1, down, NULL);
    }
    gk_tensor *h = layer_norm(b, x, "out_norm", -1);
    node(b, GK_OP_LINEAR, n, N_VOCAB, "logits", -1, h, wte, NULL);  /* tied head */
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "build/backends/cpu_ref/libgk-backend-cpu_ref.so";
    int steps = argc > 2 ? atoi(argv[2]) : 16;
    if (steps < 1 || steps >= N_CTX) {
        fprintf(stderr, "bench_cpu_ref: STEPS must be in 1..%d\n", N_CTX - 1);
        return 2;
    }
    gk_dtype wtype = GK_DTYPE_F32;
    if (argc > 3 && (!gk_dtype_parse(argv[3], &wtype) ||
                     (wtype != GK_DTYPE_F32 && wtype != GK_DTYPE_F16 && wtype != GK_DTYPE_BF16))) {
        fprintf(stderr, "bench_cpu_ref: DTYPE must be F32, F16 or BF16, not %s\n", argv[3]);
        return 2;
    }
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "bench_cpu_ref: cannot open %s: %s\n", path, dlerror());
        return 1;
    }
    gk_plugin_entry_fn entry;
    *(void **)&entry = dlsym(dl, GK_PLUGIN_ENTRY_NAME);
    const gk_plugin_desc *desc = entry ? entry() : NULL;
    if (!desc || desc->kind != GK_PLUGIN_KIND_BACKEND || desc->abi_major != GK_ABI_MAJOR) {
        fprintf(stderr, "bench_cpu_ref: %s is not a backend plugin of ABI %d\n", path,
                GK_ABI_MAJOR);
        dlclose(dl);
        return 1;
    }

    int rc = 1;
    bench *b = calloc(1, sizeof *b);
    if (!b)
        goto out_close;
    b->ops = desc->ops;
    b->rng = 42;
    b->wtype = wtype;
    gk_host host = {.abi_major = GK_ABI_MAJOR, .abi_minor = GK_ABI_MINOR};
    if (desc->init && desc->init(&host, &b->state, &b->err) != GK_OK) {
        fprintf(stderr, "bench_cpu_ref: init of %s failed: %s\n", desc->name, b->err.msg);
        goto out_free;
    }

    double t_build = now_s();
    gk_tensor *ids = tensor(b, GK_DTYPE_I32, 1, 1, "ids", -1, 0.0f);
    gk_tensor *pos = tensor(b, GK_DTYPE_I32, 1, 1, "pos", -1, 0.0f);
    build_gpt2(b, ids, pos);
    if (b->failed) {
        fprintf(stderr, "bench_cpu_ref: building the graph failed: %s\n",
                b->err.msg[0] ? b->err.msg : "too many tensors or out of memory");
        goto out_fini;
    }
    for (int i = 0; i < b->n_nodes; i++) {
        if (!b->ops->supports_node(b->state, &b->nodes[i])) {
            fprintf(stderr, "bench_cpu_ref: %s rejects node %d (%s '%s')\n", desc->name, i,
                    gk_op_name(b->nodes[i].op), b->nodes[i].dst->name);
            goto out_fini;
        }
    }
    uint64_t n_weights = 0;
    for (int i = 0; i < b->n_tensors; i++)
        if (b->tensors[i].dtype == b->wtype && b->tensors[i].rows > 1 &&
            strncmp(b->tensors[i].name, "cache", 5) != 0)
            n_weights += (uint64_t)gk_tensor_nelem(&b->tensors[i]);
    printf("graph: %d nodes, %.1f M weights in matrices and tables, set up in %.1f s\n",
           b->n_nodes, (double)n_weights / 1e6, now_s() - t_build);

    gk_graph g = {.nodes = b->nodes, .n_nodes = (size_t)b->n_nodes, .n_tokens = 1};
    double t0 = 0.0;
    for (int32_t p = 0; p <= steps; p++) {  /* step 0 warms up, untimed */
        int32_t id = (int32_t)((p * 7919 + 13) % N_VOCAB);
        if (p == 1)
            t0 = now_s();
        if (b->ops->buffer_write(b->state, ids->data, 0, &id, sizeof id, &b->err) != GK_OK ||
            b->ops->buffer_write(b->state, pos->data, 0, &p, sizeof p, &b->err) != GK_OK ||
            b->ops->graph_compute(b->state, &g, &b->err) != GK_OK) {
            fprintf(stderr, "bench_cpu_ref: step %d: %s\n", (int)p, b->err.msg);
            goto out_fini;
        }
    }
    double dt = now_s() - t0;
    float logit0;
    b->ops->buffer_read(b->state, b->nodes[b->n_nodes - 1].dst->data, 0, &logit0, sizeof logit0,
                        &b->err);
    printf("%s: GPT-2-124M %s decode, %d steps at positions 1..%d: %.2f tokens/s "
           "(%.1f ms/token; logits[0] = %g)\n",
           desc->name, gk_dtype_name(wtype), steps, steps, steps / dt, 1e3 * dt / steps, logit0);
    rc = 0;

out_fini:
    for (int i = 0; i < b->n_tensors; i++)
        b->ops->buffer_free(b->state, b->tensors[i].data);
    if (desc->fini)
        desc->fini(b->state);
out_free:
    free(b);
out_close:
    dlclose(dl);
    return rc;
}
