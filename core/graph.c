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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *gk_op_name(gk_op op)
{
    static const char *const names[GK_OP_COUNT] = {
        [GK_OP_GET_ROWS] = "get_rows", [GK_OP_ADD] = "add", [GK_OP_LAYER_NORM] = "layer_norm",
        [GK_OP_RMS_NORM] = "rms_norm", [GK_OP_LINEAR] = "linear", [GK_OP_ROPE] = "rope",
        [GK_OP_ATTN] = "attn", [GK_OP_GELU_TANH] = "gelu_tanh", [GK_OP_SILU_MUL] = "silu_mul",
        [GK_OP_SAMPLE] = "sample", [GK_OP_MUL] = "mul", [GK_OP_SCALE] = "scale",
        [GK_OP_SOFTCAP] = "softcap", [GK_OP_GELU] = "gelu", [GK_OP_GEGLU] = "geglu",
        [GK_OP_SOFTMAX] = "softmax", [GK_OP_TOPK] = "topk", [GK_OP_GATHER] = "gather",
        [GK_OP_LINEAR_ID] = "linear_id", [GK_OP_MOE_SUM] = "moe_sum",
    };
    return (unsigned)op < GK_OP_COUNT ? names[op] : "?";
}

/* ------------------------------------------------------- op parameters */

static const gk_op_param p_rms[] = {
    {"group", 'i', 0, 0, 0}, {"eps", 'f', 0, 0, 0}, {"weight_offset", 'f', 1, 4, 0},
};
static const gk_op_param p_layer_norm[] = {{"eps", 'f', 0, 0, 0}};
static const gk_op_param p_rope[] = {
    {"head_dim", 'i', 0, 0, 0}, {"rotary_dim", 'i', 1, 4, 0}, {"scale", 'f', 0, 0, 1},
};
static const gk_op_param p_attn[] = {
    {"n_head", 'i', 0, 0, 0}, {"n_head_kv", 'i', 1, 0, 0}, {"head_dim", 'i', 2, 0, 0},
    {"window", 'i', 3, 4, 0}, {"scale", 'f', 0, 0, 0}, {"softcap", 'f', 1, 4, 0}, {"ring", 'f', 2, 4, 0},
    {"slot_rows", 'f', 3, 5, 0},
};
static const gk_op_param p_sample[] = {
    {"top_k", 'i', 0, 2, 0}, {"penalty_window", 'i', 1, 3, 0}, {"temperature", 'f', 0, 2, 0},
    {"top_p", 'f', 1, 2, 1}, {"min_p", 'f', 2, 3, 0},
};
static const gk_op_param p_scale[] = {{"scale", 'f', 0, 4, 1}, {"bias", 'f', 1, 4, 0}};
static const gk_op_param p_softcap[] = {{"cap", 'f', 0, 4, 0}};
static const gk_op_param p_geglu[] = {{"exact", 'i', 0, 4, 0}};
static const gk_op_param p_topk[] = {{"k", 'i', 0, 4, 0}};
static const gk_op_param p_linear_id[] = {{"n_expert", 'i', 0, 4, 0}};

#define PARAMS(a) a, sizeof a / sizeof a[0]
static const struct {
    const gk_op_param *p;
    size_t n;
    uint32_t since;
} op_info[GK_OP_COUNT] = {
    [GK_OP_LAYER_NORM] = {PARAMS(p_layer_norm), 0}, [GK_OP_RMS_NORM] = {PARAMS(p_rms), 0},
    [GK_OP_ROPE] = {PARAMS(p_rope), 0},             [GK_OP_ATTN] = {PARAMS(p_attn), 0},
    [GK_OP_SAMPLE] = {PARAMS(p_sample), 2},         [GK_OP_MUL] = {NULL, 0, 4},
    [GK_OP_SCALE] = {PARAMS(p_scale), 4},           [GK_OP_SOFTCAP] = {PARAMS(p_softcap), 4},
    [GK_OP_GELU] = {NULL, 0, 4},                    [GK_OP_GEGLU] = {PARAMS(p_geglu), 4},
    [GK_OP_SOFTMAX] = {NULL, 0, 4},                 [GK_OP_TOPK] = {PARAMS(p_topk), 4},
    [GK_OP_GATHER] = {NULL, 0, 4},                  [GK_OP_LINEAR_ID] = {PARAMS(p_linear_id), 4},
    [GK_OP_MOE_SUM] = {NULL, 0, 4},
};

const gk_op_param *gk_op_params(gk_op op, size_t *n)
{
    bool in = (unsigned)op < GK_OP_COUNT;
    if (n)
        *n = in ? op_info[op].n : 0;
    return in ? op_info[op].p : NULL;
}

uint32_t gk_op_since_minor(gk_op op) { return (unsigned)op < GK_OP_COUNT ? op_info[op].since : UINT32_MAX; }

/* The first parameter of nd set away from its default that a backend of ABI
 * 1.minor predates; NULL when none. */
static const gk_op_param *newer_param(const gk_node *nd, uint32_t minor)
{
    size_t n;
    const gk_op_param *p = gk_op_params(nd->op, &n);
    for (size_t i = 0; i < n; i++) {
        double v = p[i].kind == 'i' ? (double)nd->i[p[i].slot] : (double)nd->f[p[i].slot];
        if (p[i].since_minor > minor && v != p[i].def)
            return &p[i];
    }
    return NULL;
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

static void fail_msg(gk_builder *b, gk_status code, const char *fmt, va_list ap)
{
    if (!b || b->fail_code)
        return;
    b->failed = true;
    b->fail_code = code;
    vsnprintf(b->fail_msg, sizeof b->fail_msg, fmt, ap);
}

void gk_builder_fail(gk_builder *b, gk_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_msg(b, code ? code : GK_ERR_INTERNAL, fmt, ap);
    va_end(ap);
}

/* Any NULL input poisons the build (a missing weight is caught at load). */
static bool inputs_ok_(gk_builder *b, const gk_tensor *x, const char *name, int il)
{
    if (!b)
        return false;
    if (!x && !b->failed) {
        if (b->missing_name[0])
            gk_builder_fail(b, GK_ERR_FORMAT,
                            "node '%s' (layer %d) has no input: the weight '%s' (layer %d) is absent from the "
                            "checkpoint",
                            name ? name : "?", il, b->missing_name, b->missing_layer);
        else
            b->failed = true;
    }
    return !b->failed;
}
#define inputs_ok(b, x) inputs_ok_((b), (x), name, il)

static void shape_fail(gk_builder *b, const char *name, int il, const char *what, const gk_tensor *x,
                       const gk_tensor *y);

/* ------------------------------------------------------------- helpers */

const gk_config *gk_builder_config(const gk_builder *b) { return b ? &b->m->cfg : NULL; }
gk_tensor *gk_builder_ids(gk_builder *b) { return b ? b->fg->ids : NULL; }
gk_tensor *gk_builder_pos(gk_builder *b) { return b ? b->fg->pos : NULL; }

static gk_tensor *weight_of(gk_builder *b, gk_role role, int il)
{
    if (!b || (unsigned)role >= GK_W_COUNT)
        return NULL;
    gk_model *m = b->m;
    if (m->lw[role])
        return il >= 0 && il < m->cfg.n_layer ? m->lw[role][il] : NULL;
    return m->w[role];
}

static const char *role_entry_name(const gk_model *m, gk_role role);

/* Remember an absent weight, so that a node given it as input names it. */
static gk_tensor *note_missing(gk_builder *b, gk_tensor *t, const char *what, int il)
{
    if (b && !t && what) {
        snprintf(b->missing_name, sizeof b->missing_name, "%s", what);
        b->missing_layer = il;
    }
    return t;
}

/* The table name of a role's entry, for messages. */
static const char *role_entry_name(const gk_model *m, gk_role role)
{
    for (const gk_tensor_entry *e = m->arch->tensors; e->name; e++)
        if (e->role == role)
            return e->name;
    return NULL;
}

gk_tensor *gk_builder_weight(gk_builder *b, gk_role role, int il)
{
    if (!b)
        return NULL;
    return note_missing(b, weight_of(b, role, il), (unsigned)role < GK_W_COUNT ? role_entry_name(b->m, role) : NULL,
                        il);
}

bool gk_builder_has_weight(gk_builder *b, gk_role role, int il) { return weight_of(b, role, il) != NULL; }

gk_tensor *gk_builder_head_weight(gk_builder *b)
{
    if (!b)
        return NULL;
    return b->m->w[GK_W_LM_HEAD] ? b->m->w[GK_W_LM_HEAD] : b->m->w[GK_W_TOK_EMBD];
}

gk_tensor *gk_builder_weight_named(gk_builder *b, const char *table_name, int il)
{
    if (!b || !table_name)
        return NULL;
    gk_model *m = b->m;
    size_t i = 0;
    for (const gk_tensor_entry *e = m->arch->tensors; e->name; e++, i++) {
        if (e->role != GK_W_NAMED || strcmp(e->name, table_name) != 0)
            continue;
        bool layered = e->flags & GK_TF_LAYER;
        if (layered && (il < 0 || il >= m->cfg.n_layer)) {
            gk_builder_fail(b, GK_ERR_INVALID_ARG, "weight '%s' asked for layer %d, outside [0, %lld)",
                            table_name, il, (long long)m->cfg.n_layer);
            return NULL;
        }
        return note_missing(b, m->ew && m->ew[i] ? m->ew[i][layered ? il : 0] : NULL, table_name, il);
    }
    gk_builder_fail(b, GK_ERR_INTERNAL, "architecture '%s' asked for weight '%s', which its tensor table lacks",
                    m->arch->spec->name, table_name);
    return NULL;
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
    if (!inputs_ok(b, y) || !inputs_ok(b, x))
        return NULL;
    if (x->rows != y->rows || x->cols != y->cols) {
        shape_fail(b, name, il, "add of two shapes", x, y);
        return NULL;
    }
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
    if (!inputs_ok(b, w) || !inputs_ok(b, x))
        return NULL;
    if (x->cols != w->cols) {
        shape_fail(b, name, il, "linear of x by a weight of another width", x, w);
        return NULL;
    }
    if (bias && bias->cols * bias->rows != w->rows) {
        shape_fail(b, name, il, "linear bias of the wrong length", w, bias);
        return NULL;
    }
    gk_tensor *d = unary(b, GK_OP_LINEAR, x, w->rows, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = w;
        nd->src[2] = bias;
    }
    return d;
}

/* The frequencies for o: the model's own table when o asks for the config's rope. */
static gk_tensor *rope_table(gk_builder *b, const gk_rope_opts *o, int64_t r)
{
    gk_model *m = b->m;
    const gk_config *c = &m->cfg;
    float theta = o->theta > 0 ? o->theta : c->rope_theta;
    gk_rope_scaling sc = o->use_config_scaling ? c->rope_scaling : o->scaling;
    float factor = o->use_config_scaling ? c->rope_factor : (o->factor > 0 ? o->factor : 1.0f);
    if (theta == c->rope_theta && r == c->head_dim && sc == c->rope_scaling &&
        (sc == GK_ROPE_NONE || factor == c->rope_factor))
        return m->inv_freq;
    for (int i = 0; i < m->n_ropes; i++) {
        gk_rope_table *t = &m->ropes[i];
        if (t->theta == theta && t->rotary_dim == r && t->scaling == sc && t->factor == factor)
            return t->t;
    }
    if (m->n_ropes == GK_MAX_ROPE_TABLES) {
        gk_builder_fail(b, GK_ERR_UNSUPPORTED, "more than %d distinct RoPE settings in one model",
                        GK_MAX_ROPE_TABLES);
        return NULL;
    }
    int64_t half = r / 2;
    float *inv = malloc((size_t)(half ? half : 1) * sizeof *inv);
    gk_tensor *t = NULL;
    gk_err err = {0};
    if (!inv || gk_model_tensor_new(m, GK_DTYPE_F32, 1, half, "inv_freq", -1, &t, &err) != GK_OK) {
        free(inv);
        gk_builder_fail(b, GK_ERR_NOMEM, "out of memory for RoPE frequencies%s%s", err.msg[0] ? ": " : "",
                        err.msg);
        return NULL;
    }
    gk_rope_freqs(c, theta, r, sc, factor, inv);
    gk_status st = m->be.ops->buffer_write(m->be.state, t->data, 0, inv, (size_t)half * sizeof *inv, &err);
    free(inv);
    if (st != GK_OK) {
        gk_model_tensor_free(m, t);
        gk_builder_fail(b, st, "uploading RoPE frequencies: %s", err.msg);
        return NULL;
    }
    m->ropes[m->n_ropes++] = (gk_rope_table){theta, factor, r, sc, t};
    return t;
}

gk_tensor *gk_build_rope_ex(gk_builder *b, gk_tensor *x, const gk_rope_opts *o, const char *name, int il)
{
    if (!inputs_ok(b, x))
        return NULL;
    const gk_config *c = &b->m->cfg;
    gk_rope_opts def = {.use_config_scaling = true};
    if (!o)
        o = &def;
    int64_t hd = c->head_dim, r = o->rotary_dim ? o->rotary_dim : hd;
    if (r < 2 || r > hd || r % 2 || hd <= 0 || x->cols % hd) {
        gk_builder_fail(b, GK_ERR_CONFIG,
                        "node '%s' (layer %d): RoPE over %lld of head_dim %lld columns on [%lld][%lld] (rotary_dim "
                        "must be even, 2..head_dim, and the columns whole heads)",
                        name ? name : "?", il, (long long)r, (long long)hd, (long long)x->rows, (long long)x->cols);
        return NULL;
    }
    gk_tensor *freqs = rope_table(b, o, r);
    if (!freqs)
        return NULL;
    gk_tensor *d = unary(b, GK_OP_ROPE, x, x->cols, name, il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = b->fg->pos;
        nd->src[2] = freqs;
        nd->i[0] = (int32_t)hd;
        nd->i[1] = r == hd ? 0 : (int32_t)r;
        nd->f[0] = o->attention_scaling > 0 ? o->attention_scaling : 1.0f;
    }
    return d;
}

gk_tensor *gk_build_rope(gk_builder *b, gk_tensor *x, const char *name, int il)
{
    return gk_build_rope_ex(b, x, NULL, name, il);
}

gk_tensor *gk_build_attn_ex(gk_builder *b, gk_tensor *q, gk_tensor *k, gk_tensor *v, int il, const gk_attn_opts *o)
{
    const char *name = "attn";
    if (!b)
        return NULL;
    const gk_config *c = &b->m->cfg;
    if (!inputs_ok(b, q) || !inputs_ok(b, k) || !inputs_ok(b, v))
        return NULL;
    if (il < 0 || il >= c->n_layer) {
        gk_builder_fail(b, GK_ERR_INVALID_ARG, "attention of layer %d, outside [0, %lld)", il,
                        (long long)c->n_layer);
        return NULL;
    }
    int64_t kv = c->n_head_kv * c->head_dim;
    if (q->cols != c->n_head * c->head_dim || k->cols != kv || v->cols != kv || k->rows != q->rows ||
        v->rows != q->rows) {
        gk_builder_fail(b, GK_ERR_CONFIG,
                        "attention of layer %d: q [%lld][%lld], k [%lld][%lld], v [%lld][%lld] do not fit %lld heads "
                        "and %lld kv heads of head_dim %lld",
                        il, (long long)q->rows, (long long)q->cols, (long long)k->rows, (long long)k->cols,
                        (long long)v->rows, (long long)v->cols, (long long)c->n_head, (long long)c->n_head_kv,
                        (long long)c->head_dim);
        return NULL;
    }
    gk_attn_opts def = {0};
    if (!o)
        o = &def;
    if (o->window < 0 || o->window > INT32_MAX || o->softcap < 0 || !(o->scale >= 0)) {
        gk_builder_fail(b, GK_ERR_CONFIG, "attention of layer %d: window %lld, softcap %g, scale %g out of range", il,
                        (long long)o->window, (double)o->softcap, (double)o->scale);
        return NULL;
    }
    gk_tensor *d = unary(b, GK_OP_ATTN, q, q->cols, "attn", il);
    if (d) {
        gk_node *nd = &b->fg->g.nodes[b->fg->g.n_nodes - 1];
        nd->src[1] = k;
        nd->src[2] = v;
        nd->src[3] = b->fg->pos_slot ? b->fg->pos_slot : b->fg->pos;
        nd->src[4] = b->m->k_cache[il];
        nd->src[5] = b->m->v_cache[il];
        nd->i[0] = (int32_t)c->n_head;
        nd->i[1] = (int32_t)c->n_head_kv;
        nd->i[2] = (int32_t)c->head_dim;
        nd->i[3] = (int32_t)o->window;
        /* a ring cache: fewer rows than positions, position p in row p % rows */
        int64_t srows = b->m->srows ? b->m->srows[il] : b->m->n_ctx;
        nd->f[2] = srows < b->m->n_ctx ? 1.0f : 0.0f;
        /* (1.5) sequence slots of srows rows each; negative: the tokens may
         * be of different slots */
        if (b->fg->pos_slot)
            nd->f[3] = (float)(b->fg->mixed ? -srows : srows);
        if (b->m->win)
            b->m->win[il] = o->window;
        nd->f[0] = o->scale > 0 ? o->scale : 1.0f / sqrtf((float)c->head_dim);
        nd->f[1] = o->softcap;
    }
    return d;
}

int64_t gk_builder_layer_window(gk_builder *b, int il)
{
    if (!b)
        return 0;
    const gk_config *c = &b->m->cfg;
    if (c->sliding_window <= 0 && !gk_config_has(c, "layer_types"))
        return 0;
    char key[48], type[32];
    snprintf(key, sizeof key, "layer_types.%d", il);
    gk_err err = {0};
    if (gk_config_has(c, "layer_types")) {
        if (gk_config_get_string(c, key, NULL, type, sizeof type, &err) != GK_OK) {
            gk_builder_fail(b, err.code, "%s", err.msg);
            return 0;
        }
        if (!strcmp(type, "full_attention"))
            return 0;
        if (!strcmp(type, "sliding_attention") && c->sliding_window > 0)
            return c->sliding_window;
        gk_builder_fail(b, GK_ERR_UNSUPPORTED,
                        "config.json: '%s' is \"%s\" (known: full_attention, and sliding_attention with a "
                        "sliding_window)",
                        key, type);
        return 0;
    }
    if (!strcmp(c->model_type, "qwen2") || !strcmp(c->model_type, "qwen3")) {
        int64_t first = 0;
        if (gk_config_get_int(c, "max_window_layers", c->n_layer, &first, &err) != GK_OK) {
            gk_builder_fail(b, err.code, "%s", err.msg);
            return 0;
        }
        return il >= first ? c->sliding_window : 0;
    }
    return c->sliding_window;
}

gk_tensor *gk_build_attn(gk_builder *b, gk_tensor *q, gk_tensor *k, gk_tensor *v, int il)
{
    return gk_build_attn_ex(b, q, k, v, il, NULL);
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

/* ------------------------------------------------ ABI 1.4 vocabulary */

/* A node of op over x with one more input y (may be NULL), dst [x->rows][cols]. */
static gk_tensor *binary(gk_builder *b, gk_op op, gk_tensor *x, gk_tensor *y, gk_dtype dt, int64_t cols,
                         const char *name, int il)
{
    if (!inputs_ok(b, x))
        return NULL;
    gk_tensor *d = new_tensor(b, dt, x->rows, cols, name, il);
    gk_node *nd = new_node(b, op, d);
    if (!nd)
        return NULL;
    nd->src[0] = x;
    nd->src[1] = y;
    return d;
}

static gk_node *last_node(gk_builder *b) { return &b->fg->g.nodes[b->fg->g.n_nodes - 1]; }

static void shape_fail(gk_builder *b, const char *name, int il, const char *what, const gk_tensor *x,
                       const gk_tensor *y)
{
    gk_builder_fail(b, GK_ERR_CONFIG, "node '%s' (layer %d): %s: [%lld][%lld] ('%s') and [%lld][%lld] ('%s')",
                    name ? name : "?", il, what, (long long)x->rows, (long long)x->cols, x->name, (long long)y->rows,
                    (long long)y->cols, y->name);
}

gk_tensor *gk_build_mul(gk_builder *b, gk_tensor *x, gk_tensor *y, const char *name, int il)
{
    if (!inputs_ok(b, x) || !inputs_ok(b, y))
        return NULL;
    if (y->cols != x->cols || (y->rows != x->rows && y->rows != 1)) {
        shape_fail(b, name, il, "mul needs equal shapes or a [1][D] second operand", x, y);
        return NULL;
    }
    return binary(b, GK_OP_MUL, x, y, GK_DTYPE_F32, x->cols, name, il);
}

gk_tensor *gk_build_scale(gk_builder *b, gk_tensor *x, float scale, float bias, const char *name, int il)
{
    gk_tensor *d = binary(b, GK_OP_SCALE, x, NULL, GK_DTYPE_F32, x ? x->cols : 0, name, il);
    if (d) {
        last_node(b)->f[0] = scale;
        last_node(b)->f[1] = bias;
    }
    return d;
}

gk_tensor *gk_build_softcap(gk_builder *b, gk_tensor *x, float cap, const char *name, int il)
{
    if (b && !(cap > 0)) {
        gk_builder_fail(b, GK_ERR_CONFIG, "node '%s' (layer %d): softcap %g must be > 0", name ? name : "?", il,
                        (double)cap);
        return NULL;
    }
    gk_tensor *d = binary(b, GK_OP_SOFTCAP, x, NULL, GK_DTYPE_F32, x ? x->cols : 0, name, il);
    if (d)
        last_node(b)->f[0] = cap;
    return d;
}

gk_tensor *gk_build_gelu(gk_builder *b, gk_tensor *x, const char *name, int il)
{
    return binary(b, GK_OP_GELU, x, NULL, GK_DTYPE_F32, x ? x->cols : 0, name, il);
}

gk_tensor *gk_build_geglu(gk_builder *b, gk_tensor *gate, gk_tensor *up, bool tanh_approx, const char *name, int il)
{
    if (!inputs_ok(b, gate) || !inputs_ok(b, up))
        return NULL;
    if (gate->rows != up->rows || gate->cols != up->cols) {
        shape_fail(b, name, il, "geglu needs gate and up of one shape", gate, up);
        return NULL;
    }
    gk_tensor *d = binary(b, GK_OP_GEGLU, gate, up, GK_DTYPE_F32, gate->cols, name, il);
    if (d)
        last_node(b)->i[0] = tanh_approx ? 0 : 1;
    return d;
}

gk_tensor *gk_build_softmax(gk_builder *b, gk_tensor *x, const char *name, int il)
{
    return binary(b, GK_OP_SOFTMAX, x, NULL, GK_DTYPE_F32, x ? x->cols : 0, name, il);
}

gk_tensor *gk_build_topk(gk_builder *b, gk_tensor *x, int k, const char *name, int il)
{
    if (!inputs_ok(b, x))
        return NULL;
    if (k < 1 || k > x->cols) {
        gk_builder_fail(b, GK_ERR_CONFIG, "node '%s' (layer %d): top-%d of %lld columns", name ? name : "?", il, k,
                        (long long)x->cols);
        return NULL;
    }
    gk_tensor *d = binary(b, GK_OP_TOPK, x, NULL, GK_DTYPE_I32, k, name, il);
    if (d)
        last_node(b)->i[0] = k;
    return d;
}

gk_tensor *gk_build_gather(gk_builder *b, gk_tensor *x, gk_tensor *ids, const char *name, int il)
{
    if (!inputs_ok(b, x) || !inputs_ok(b, ids))
        return NULL;
    if (ids->dtype != GK_DTYPE_I32 || ids->rows != x->rows) {
        shape_fail(b, name, il, "gather needs I32 ids with a row per row of x", x, ids);
        return NULL;
    }
    return binary(b, GK_OP_GATHER, x, ids, GK_DTYPE_F32, ids->cols, name, il);
}

gk_tensor *gk_build_linear_id(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *ids, int64_t n_expert,
                              const char *name, int il)
{
    if (!inputs_ok(b, x) || !inputs_ok(b, w) || !inputs_ok(b, ids))
        return NULL;
    int64_t k = ids->cols;
    if (n_expert < 1 || w->rows % n_expert || ids->dtype != GK_DTYPE_I32 || ids->rows != x->rows ||
        (x->cols != w->cols && x->cols != k * w->cols)) {
        gk_builder_fail(b, GK_ERR_CONFIG,
                        "node '%s' (layer %d): expert linear of x [%lld][%lld] through %lld experts stacked in '%s' "
                        "[%lld][%lld] with ids [%lld][%lld] (x must be [n][in] or [n][k*in], the rows a multiple of "
                        "the experts)",
                        name ? name : "?", il, (long long)x->rows, (long long)x->cols, (long long)n_expert, w->name,
                        (long long)w->rows, (long long)w->cols, (long long)ids->rows, (long long)ids->cols);
        return NULL;
    }
    gk_tensor *d = binary(b, GK_OP_LINEAR_ID, x, w, GK_DTYPE_F32, k * (w->rows / n_expert), name, il);
    if (d) {
        last_node(b)->src[2] = ids;
        last_node(b)->i[0] = (int32_t)n_expert;
    }
    return d;
}

gk_tensor *gk_build_moe_sum(gk_builder *b, gk_tensor *x, gk_tensor *weights, const char *name, int il)
{
    if (!inputs_ok(b, x) || !inputs_ok(b, weights))
        return NULL;
    if (weights->rows != x->rows || weights->cols < 1 || x->cols % weights->cols) {
        shape_fail(b, name, il, "moe_sum needs x [n][k*D] and weights [n][k]", x, weights);
        return NULL;
    }
    return binary(b, GK_OP_MOE_SUM, x, weights, GK_DTYPE_F32, x->cols / weights->cols, name, il);
}

gk_tensor *gk_build_rms_norm_offset(gk_builder *b, gk_tensor *x, gk_tensor *w, int64_t group, float eps,
                                    float offset, const char *name, int il)
{
    gk_tensor *d = gk_build_rms_norm(b, x, w, group, eps, name, il);
    if (d)
        last_node(b)->f[1] = offset;
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
        /* what the backend predates it never sees */
        uint32_t minor = m->be.abi_minor;
        if (gk_op_since_minor(nd->op) > minor)
            return gk_err_set(err, GK_ERR_UNSUPPORTED,
                              "backend '%s' (built for ABI %d.%u) cannot run op '%s' (node '%s', layer %d): the op "
                              "needs ABI %d.%u",
                              m->be.name, GK_ABI_MAJOR, minor, gk_op_name(nd->op), nd->dst->name, nd->dst->layer,
                              GK_ABI_MAJOR, gk_op_since_minor(nd->op));
        const gk_op_param *p = newer_param(nd, minor);
        if (p)
            return gk_err_set(err, GK_ERR_UNSUPPORTED,
                              "backend '%s' (built for ABI %d.%u) cannot run node '%s' (op '%s', layer %d): its "
                              "parameter '%s' = %g needs ABI %d.%u",
                              m->be.name, GK_ABI_MAJOR, minor, nd->dst->name, gk_op_name(nd->op), nd->dst->layer,
                              p->name, p->kind == 'i' ? (double)nd->i[p->slot] : (double)nd->f[p->slot],
                              GK_ABI_MAJOR, p->since_minor);
        if (!m->be.ops->supports_node(m->be.state, nd)) {
            void (*explain)(void *, const gk_node *, char *, size_t) = GK_BACKEND_OP(m->be.ops, explain_node);
            char why[160] = "";
            if (explain)
                explain(m->be.state, nd, why, sizeof why);
            char types[64] = "";
            size_t used = 0;
            for (int k = 0; k < GK_MAX_SRC && nd->src[k]; k++)
                used += (size_t)snprintf(types + used, sizeof types - used, "%s%s", k ? ", " : "",
                                         gk_dtype_name(nd->src[k]->dtype));
            return gk_err_set(err, GK_ERR_UNSUPPORTED,
                              "backend '%s' cannot run op '%s' (node '%s', layer %d; operands %s)%s%s",
                              m->be.name, gk_op_name(nd->op), nd->dst->name, nd->dst->layer, types,
                              why[0] ? ": " : "", why);
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
    if (st == GK_OK && b->failed && b->fail_code)
        st = gk_err_set(err, b->fail_code, "architecture '%s': %s", m->arch->spec->name, b->fail_msg);
    else if (st == GK_OK && b->failed)
        st = gk_err_set(err, GK_ERR_NOMEM,
                        "out of memory (or a NULL or out-of-range builder argument) building the graph");
    if (st == GK_OK)
        st = place_arena(m, b->fg, err);
    if (st == GK_OK && b->fg->pos_slot) {
        /* pos is the first row; the slots start as slot 0's */
        b->fg->pos_view.data = b->fg->pos_slot->data;
        int32_t *zero = calloc((size_t)b->fg->pos_slot->cols, sizeof *zero);
        st = zero ? m->be.ops->buffer_write(m->be.state, b->fg->pos_slot->data, (size_t)b->fg->pos_slot->cols * 4,
                                            zero, (size_t)b->fg->pos_slot->cols * 4, err)
                  : gk_err_set(err, GK_ERR_NOMEM, "out of memory");
        free(zero);
    }
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

/* The ids and positions inputs of n tokens; with several sequence slots,
 * positions and slots as one [2][n] tensor whose first row is pos. */
static void make_inputs(gk_builder *b, int64_t n)
{
    gk_fgraph *fg = b->fg;
    fg->ids = new_tensor(b, GK_DTYPE_I32, 1, n, "ids", -1);
    if (b->m->n_slots <= 1) {
        fg->pos = new_tensor(b, GK_DTYPE_I32, 1, n, "pos", -1);
        return;
    }
    fg->pos_slot = new_tensor(b, GK_DTYPE_I32, 2, n, "pos_slot", -1);
    fg->pos_view = (gk_tensor){.dtype = GK_DTYPE_I32, .rows = 1, .cols = n, .layer = -1};
    snprintf(fg->pos_view.name, sizeof fg->pos_view.name, "pos");
    fg->pos = &fg->pos_view;
}

static gk_status build_forward(gk_model *m, int64_t n, bool mixed, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = n;
    fg->mixed = mixed;
    gk_builder b = {.m = m, .fg = fg};
    make_inputs(&b, n);
    gk_status st = b.failed ? GK_ERR_NOMEM : m->arch->build(&b, &fg->out, err);
    if (st == GK_OK && !b.failed && (!fg->out || fg->out->rows != n || fg->out->cols != m->cfg.n_embd))
        st = gk_err_set(err, GK_ERR_INTERNAL, "architecture '%s' built no [%lld][%lld] output",
                        m->arch->spec->name, (long long)n, (long long)m->cfg.n_embd);
    return finish(m, &b, st, out, err);
}

gk_status gk_fgraph_build_forward(gk_model *m, int64_t n, gk_fgraph **out, gk_err *err)
{
    return build_forward(m, n, false, out, err);
}

gk_status gk_fgraph_build_mixed(gk_model *m, int64_t n, gk_fgraph **out, gk_err *err)
{
    return build_forward(m, n, true, out, err);
}

/* The LM head: the architecture's hook, else linear by the head weight. */
static gk_status build_logits(gk_builder *b, gk_tensor *hidden, gk_tensor **logits, gk_err *err)
{
    gk_model *m = b->m;
    gk_status (*hook)(gk_builder *, gk_tensor *, gk_tensor **, gk_err *) = GK_ARCH_OP(m->arch, build_head);
    *logits = NULL;
    if (!hidden || b->failed)
        return GK_OK; /* finish() reports the failure */
    if (!hook) {
        *logits = gk_build_linear(b, hidden, gk_builder_head_weight(b), NULL, "logits", -1);
        return GK_OK;
    }
    gk_status st = hook(b, hidden, logits, err);
    if (st == GK_OK && !b->failed && (!*logits || (*logits)->rows != hidden->rows || (*logits)->cols != m->cfg.n_vocab))
        st = gk_err_set(err, GK_ERR_INTERNAL, "architecture '%s': its build_head made no [%lld][%lld] logits",
                        m->arch->spec->name, (long long)hidden->rows, (long long)m->cfg.n_vocab);
    return st;
}

gk_status gk_fgraph_build_head(gk_model *m, gk_tensor *hidden, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = hidden->rows;
    gk_builder b = {.m = m, .fg = fg};
    gk_status st = build_logits(&b, hidden, &fg->out, err);
    return finish(m, &b, st, out, err);
}

gk_status gk_fgraph_build_head_rows(gk_model *m, gk_tensor *hidden, int64_t n_rows, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = n_rows;
    gk_builder b = {.m = m, .fg = fg};
    fg->ids = new_tensor(&b, GK_DTYPE_I32, 1, n_rows, "rows", -1);
    gk_tensor *h = gk_build_get_rows(&b, hidden, fg->ids, "head_rows", -1);
    gk_status st = build_logits(&b, h, &fg->out, err);
    return finish(m, &b, st, out, err);
}

gk_status gk_fgraph_build_step(gk_model *m, gk_fgraph **out, gk_err *err)
{
    *out = NULL;
    gk_fgraph *fg = calloc(1, sizeof *fg);
    if (!fg)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    fg->g.n_tokens = 1;
    gk_builder b = {.m = m, .fg = fg};
    make_inputs(&b, 1);
    fg->ctl = new_tensor(&b, GK_DTYPE_I32, 1, 4, "sample_ctl", -1);
    gk_tensor *hidden = NULL;
    gk_status st = b.failed ? GK_ERR_NOMEM : m->arch->build(&b, &hidden, err);
    if (st == GK_OK && !b.failed && (!hidden || hidden->rows != 1 || hidden->cols != m->cfg.n_embd))
        st = gk_err_set(err, GK_ERR_INTERNAL, "architecture '%s' built no [1][%lld] output", m->arch->spec->name,
                        (long long)m->cfg.n_embd);
    if (st == GK_OK)
        st = build_logits(&b, hidden, &fg->out, err);
    if (st == GK_OK && fg->out) {
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
