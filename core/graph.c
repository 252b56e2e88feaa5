/* graph.c - building forward graphs: the gk_build_* helpers architectures call,
 * and laying out the activation arena.
 *
 * A builder only records nodes and tensor shapes; memory comes afterwards in
 * one backend allocation, so building never touches the device. Every node
 * output is its own region of the arena (nothing is reused), which keeps every
 * intermediate readable for `gkrun compare`. Not here: running graphs (model.c).
 */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *gk_op_name(gk_op op)
{
    static const char *const names[GK_OP_COUNT] = {
        [GK_OP_GET_ROWS] = "get_rows", [GK_OP_ADD] = "add", [GK_OP_LAYER_NORM] = "layer_norm",
        [GK_OP_RMS_NORM] = "rms_norm", [GK_OP_LINEAR] = "linear", [GK_OP_ROPE] = "rope",
        [GK_OP_ATTN] = "attn", [GK_OP_GELU_TANH] = "gelu_tanh", [GK_OP_SILU_MUL] = "silu_mul",
        [GK_OP_SAMPLE] = "sample",
    };
    return (unsigned)op < GK_OP_COUNT ? names[op] : "?";
}

/* ------------------------------------------------------------- tensors */

static gk_tensor *new_tensor(gk_builder *b, gk_dtype dt, int64_t rows, int64_t cols,
                             const char *name, int il)
{
    if (!b || b->failed)
        return NULL;
    gk_fgraph *fg = b->fg;
    if (fg->n_owned == fg->cap_owned) {
        size_t cap = fg->cap_owned ? 2 * fg->cap_owned : 64;
        gk_tensor **p = realloc(fg->owned, cap * sizeof *p);
        if (!p)
            goto fail;
        fg->owned = p;
        fg->cap_owned = cap;
    }
    gk_tensor *t = calloc(1, sizeof *t);
    if (!t)
        goto fail;
    t->dtype = dt;
    t->rows = rows;
    t->cols = cols;
    t->layer = il;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "?");
    fg->owned[fg->n_owned++] = t;
    return t;
fail:
    b->failed = true;
    return NULL;
}

static gk_node *new_node(gk_builder *b, gk_op op, gk_tensor *dst)
{
    if (!b || b->failed || !dst)
        return NULL;
    gk_fgraph *fg = b->fg;
    if (fg->g.n_nodes == fg->cap_nodes) {
        size_t cap = fg->cap_nodes ? 2 * fg->cap_nodes : 64;
        gk_node *p = realloc(fg->g.nodes, cap * sizeof *p);
        if (!p) {
            b->failed = true;
            return NULL;
        }
        fg->g.nodes = p;
        fg->cap_nodes = cap;
    }
    gk_node *nd = &fg->g.nodes[fg->g.n_nodes++];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->dst = dst;
    return nd;
}

/* Any NULL input poisons the build (a missing weight is caught at load). */
static bool inputs_ok(gk_builder *b, const gk_tensor *x)
{
    if (!b)
        return false;
    if (!x)
        b->failed = true;
    return !b->failed;
}

/* ------------------------------------------------------------- helpers */

const gk_config *gk_builder_config(const gk_builder *b) { return b ? &b->m->cfg : NULL; }
gk_tensor *gk_builder_ids(gk_builder *b) { return b ? b->fg->ids : NULL; }
gk_tensor *gk_builder_pos(gk_builder *b) { return b ? b->fg->pos : NULL; }

gk_tensor *gk_builder_weight(gk_builder *b, gk_role role, int il)
{
    if (!b || (unsigned)role >= GK_W_COUNT)
        return NULL;
    gk_model *m = b->m;
    if (m->lw[role])
        return il >= 0 && il < m->cfg.n_layer ? m->lw[role][il] : NULL;
    return m->w[role];
}

static gk_tensor *unary(gk_builder *b, gk_op op, gk_tensor *x, int64_t cols, const char *name, int il)
{
    if (!inputs_ok(b, x))
        return NULL;
    gk_tensor *d = new_tensor(b, GK_DTYPE_F32, x->rows, cols, name, il);
    gk_node *nd = new_node(b, op, d);
    if (!nd)
        return NULL;
    nd->src[0] = x;
    return d;
}

gk_tensor *gk_build_get_rows(gk_builder *b, gk_tensor *table, gk_tensor *ids, const char *name, int il)
{
    if (!inputs_ok(b, table) || !inputs_ok(b, ids))
        return NULL;
    gk_tensor *d = new_tensor(b, GK_DTYPE_F32, ids->cols, table->cols, name, il);
    gk_node *nd = new_node(b, GK_OP_GET_ROWS, d);
    if (!nd)
        return NULL;
    nd->src[0] = table;
    nd->src[1] = ids;
    return d;
}

gk_tensor *gk_build_add(gk_builder *b, gk_tensor *x, gk_tensor *y, const char *name, int il)
{
    if (!inputs_ok(b, y))
        return NULL;
    gk_tensor *d = unary(b, GK_OP_ADD, x, x ? x->cols : 0, name, il);
    if (d)
        b->fg->g.nodes[b->fg->g.n_nodes - 1].src[1] = y;
    return d;
}

gk_tensor *gk_build_layer_norm(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *bias,
                               float eps, const char *name, int il)
{
    if (!inputs_ok(b, w)) /* bias may be NULL, as the op allows */
        return NULL;
    gk_tensor *d = unary(b, GK_OP_LAYER_NORM, x, x ? x->cols : 0, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = w;
        nd->src[2] = bias;
        nd->f[0] = eps;
    }
    return d;
}

gk_tensor *gk_build_rms_norm(gk_builder *b, gk_tensor *x, gk_tensor *w, int64_t group, float eps,
                             const char *name, int il)
{
    if (!inputs_ok(b, w))
        return NULL;
    gk_tensor *d = unary(b, GK_OP_RMS_NORM, x, x ? x->cols : 0, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = w;
        nd->i[0] = (int32_t)(group ? group : x->cols);
        nd->f[0] = eps;
    }
    return d;
}

gk_tensor *gk_build_norm(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *bias,
                         const char *name, int il)
{
    if (!b)
        return NULL;
    const gk_config *c = &b->m->cfg;
    if (c->norm == GK_NORM_LAYER)
        return gk_build_layer_norm(b, x, w, bias, c->norm_eps, name, il);
    return gk_build_rms_norm(b, x, w, 0, c->norm_eps, name, il);
}

gk_tensor *gk_build_linear(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *bias,
                           const char *name, int il)
{
    if (!inputs_ok(b, w))
        return NULL;
    gk_tensor *d = unary(b, GK_OP_LINEAR, x, w->rows, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = w;
        nd->src[2] = bias;
    }
    return d;
}

gk_tensor *gk_build_rope(gk_builder *b, gk_tensor *x, const char *name, int il)
{
    gk_tensor *d = unary(b, GK_OP_ROPE, x, x ? x->cols : 0, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = b->fg->pos;
        nd->src[2] = b->m->inv_freq;
        nd->i[0] = (int32_t)b->m->cfg.head_dim;
        nd->f[0] = 1.0f;
    }
    return d;
}

gk_tensor *gk_build_attn(gk_builder *b, gk_tensor *q, gk_tensor *k, gk_tensor *v, int il)
{
    if (!b)
        return NULL;
    const gk_config *c = &b->m->cfg;
    if (!inputs_ok(b, k) || !inputs_ok(b, v) || il < 0 || il >= c->n_layer) {
        b->failed = true;
        return NULL;
    }
    gk_tensor *d = unary(b, GK_OP_ATTN, q, q ? q->cols : 0, "attn", il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = k;
        nd->src[2] = v;
        nd->src[3] = b->fg->pos;
        nd->src[4] = b->m->k_cache[il];
        nd->src[5] = b->m->v_cache[il];
        nd->i[0] = (int32_t)c->n_head;
        nd->i[1] = (int32_t)c->n_head_kv;
        nd->i[2] = (int32_t)c->head_dim;
        nd->f[0] = 1.0f / sqrtf((float)c->head_dim);
    }
    return d;
}

gk_tensor *gk_build_gelu_tanh(gk_builder *b, gk_tensor *x, const char *name, int il)
{
    return unary(b, GK_OP_GELU_TANH, x, x ? x->cols : 0, name, il);
}

gk_tensor *gk_build_silu_mul(gk_builder *b, gk_tensor *gate, gk_tensor *up, const char *name, int il)
{
    if (!inputs_ok(b, up))
        return NULL;
    gk_tensor *d = unary(b, GK_OP_SILU_MUL, gate, gate ? gate->cols : 0, name, il);
    if (d)
        b->fg->g.nodes[b->fg->g.n_nodes - 1].src[1] = up;
    return d;
}

/* --------------------------------------------------------------- arena */

/* n rounded up to 256 bytes; false when that overflows. */
static bool align_up(size_t n, size_t *out)
{
    if (!gk_size_add(n, 255, out))
        return false;
    *out &= ~(size_t)255;
    return true;
}

static gk_status place_arena(gk_model *m, gk_fgraph *fg, gk_err *err)
{
    size_t total = 0, a;
    for (size_t i = 0; i < fg->n_owned; i++) {
        const gk_tensor *t = fg->owned[i];
        if (!align_up(gk_tensor_nbytes(t), &a) || !gk_size_add(total, a, &total))
            return gk_err_set(err, GK_ERR_NOMEM,
                              "the graph for %lld tokens is too large: its activations overflow the address space "
                              "(node '%s' [%lld][%lld])",
                              (long long)fg->g.n_tokens, t->name, (long long)t->rows, (long long)t->cols);
    }
    gk_status st = m->be.ops->buffer_alloc(m->be.state, total, &fg->arena, err);
    if (st != GK_OK)
        return st;
    fg->arena_bytes = total;
    gk_model_mem_add(m, total);
    size_t off = 0;
    for (size_t i = 0; i < fg->n_owned; i++) {
        fg->owned[i]->data = (char *)fg->arena + off;
        align_up(gk_tensor_nbytes(fg->owned[i]), &a); /* checked above */
        off += a;
    }
    return GK_OK;
}

void gk_fgraph_destroy(gk_model *m, gk_fgraph *fg)
{
    if (!fg)
        return;
    gk_fgraph_destroy(m, fg->head);
    gk_fgraph_destroy(m, fg->head_last);
    if (fg->arena) {
        m->be.ops->buffer_free(m->be.state, fg->arena);
        m->mem_bytes -= fg->arena_bytes;
    }
    for (size_t i = 0; i < fg->n_owned; i++)
        free(fg->owned[i]);
    free(fg->owned);
    free(fg->g.nodes);
    free(fg);
}

gk_status gk_fgraph_check(gk_model *m, const gk_fgraph *fg, gk_err *err)
{
    for (size_t i = 0; i < fg->g.n_nodes; i++) {
        const gk_node *nd = &fg->g.nodes[i];
        if (!m->be.ops->supports_node(m->be.state, nd)) {
            char types[64] = "";
            size_t used = 0;
            for (int k = 0; k < GK_MAX_SRC && nd->src[k]; k++)
                used += (size_t)snprintf(types + used, sizeof types - used, "%s%s", k ? ", " : "",
                                         gk_dtype_name(nd->src[k]->dtype));
            return gk_err_set(err, GK_ERR_UNSUPPORTED,
                              "backend '%s' cannot run op '%s' (node '%s', layer %d; operands %s)",
                              m->be.name, gk_op_name(nd->op), nd->dst->name, nd->dst->layer, types);
        }
    }
    return GK_OK;
}

void gk_fgraph_new_id(gk_fgraph *fg)
{
    static uint64_t last; /* ids are never reused, in any model of the process */
    fg->g.id = __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
}

static gk_status finish(gk_model *m, gk_builder *b, gk_status st, gk_fgraph **out, gk_err *err)
{
    if (st == GK_OK && b->failed)
        st = gk_err_set(err, GK_ERR_NOMEM,
                        "out of memory (or a missing weight or a NULL or out-of-range builder argument) building "
                        "the graph");
    if (st == GK_OK)
        st = place_arena(m, b->fg, err);
    if (st == GK_OK)
        st = gk_fgraph_check(m, b->fg, err);
    if (st != GK_OK) {
        gk_fgraph_destroy(m, b->fg);
        return st;
    }
    gk_fgraph_new_id(b->fg);
    *out = b->fg;
    return GK_OK;
}

gk_status gk_fgraph_build_forward(gk_model *m, int64_t n, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = n;
    gk_builder b = {.m = m, .fg = fg};
    fg->ids = new_tensor(&b, GK_DTYPE_I32, 1, n, "ids", -1);
    fg->pos = new_tensor(&b, GK_DTYPE_I32, 1, n, "pos", -1);
    gk_status st = b.failed ? GK_ERR_NOMEM : m->arch->build(&b, &fg->out, err);
    if (st == GK_OK && !b.failed && (!fg->out || fg->out->rows != n || fg->out->cols != m->cfg.n_embd))
        st = gk_err_set(err, GK_ERR_INTERNAL, "architecture '%s' built no [%lld][%lld] output",
                        m->arch->spec->name, (long long)n, (long long)m->cfg.n_embd);
    return finish(m, &b, st, out, err);
}

gk_status gk_fgraph_build_head(gk_model *m, gk_tensor *hidden, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = hidden->rows;
    gk_builder b = {.m = m, .fg = fg};
    gk_tensor *head = m->w[GK_W_LM_HEAD] ? m->w[GK_W_LM_HEAD] : m->w[GK_W_TOK_EMBD];
    fg->out = gk_build_linear(&b, hidden, head, NULL, "logits", -1);
    return finish(m, &b, GK_OK, out, err);
}

gk_status gk_fgraph_build_step(gk_model *m, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = 1;
    gk_builder b = {.m = m, .fg = fg};
    fg->ids = new_tensor(&b, GK_DTYPE_I32, 1, 1, "ids", -1);
    fg->pos = new_tensor(&b, GK_DTYPE_I32, 1, 1, "pos", -1);
    fg->ctl = new_tensor(&b, GK_DTYPE_I32, 1, 4, "sample_ctl", -1);
    gk_tensor *hidden = NULL;
    gk_status st = b.failed ? GK_ERR_NOMEM : m->arch->build(&b, &hidden, err);
    if (st == GK_OK && !b.failed && (!hidden || hidden->rows != 1 || hidden->cols != m->cfg.n_embd))
        st = gk_err_set(err, GK_ERR_INTERNAL, "architecture '%s' built no [1][%lld] output", m->arch->spec->name,
                        (long long)m->cfg.n_embd);
    if (st == GK_OK) {
        gk_tensor *head = m->w[GK_W_LM_HEAD] ? m->w[GK_W_LM_HEAD] : m->w[GK_W_TOK_EMBD];
        fg->out = gk_build_linear(&b, hidden, head, NULL, "logits", -1);
        /* the sampled id becomes the next step's input */
        gk_node *nd = new_node(&b, GK_OP_SAMPLE, fg->ids);
        if (nd) {
            nd->src[0] = fg->out;
            nd->src[1] = fg->ctl;
            nd->src[2] = fg->pos;
            nd->f[1] = 1.0f;
            fg->sample = fg->g.n_nodes - 1;
            if (m->be.abi_minor >= 3) {
                /* min-p and the penalties on the device (ABI 1.3): W = i[1]
                 * stays 0 until generate sets it */
                fg->ring = new_tensor(&b, GK_DTYPE_I32, 1, m->n_ctx, "sample_ring", -1);
                fg->pen = new_tensor(&b, GK_DTYPE_F32, 1, 4, "sample_penalties", -1);
                nd->src[3] = fg->ring;
                nd->src[4] = fg->pen;
            }
        }
    }
    return finish(m, &b, st, out, err);
}
