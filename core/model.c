/* model.c - loading a checkpoint into a backend, and running forward passes.
 *
 * Loading reads config.json, picks the architecture, checks every tensor of the
 * checkpoint against the architecture's table (missing, misshaped and unknown
 * tensors are errors naming them), converts to the model dtype and uploads.
 * The KV cache is allocated at load for n_ctx positions. Not here: building
 * graphs (graph.c) and sampling (generate.c).
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------ model tensors */

gk_status gk_model_tensor_new(gk_model *m, gk_dtype dt, int64_t rows, int64_t cols,
                              const char *name, int layer, gk_tensor **out, gk_err *err)
{
    *out = NULL;
    gk_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    t->dtype = dt;
    t->rows = rows;
    t->cols = cols;
    t->layer = layer;
    snprintf(t->name, sizeof t->name, "%s", name);
    if (gk_tensor_nbytes(t) == SIZE_MAX) {
        free(t);
        return gk_err_set(err, GK_ERR_NOMEM, "tensor '%s' [%lld][%lld] is too large to allocate (its size overflows)",
                          name, (long long)rows, (long long)cols);
    }
    gk_status st = m->be.ops->buffer_alloc(m->be.state, gk_tensor_nbytes(t), &t->data, err);
    if (st != GK_OK) {
        free(t);
        return st;
    }
    gk_model_mem_add(m, gk_tensor_nbytes(t));
    *out = t;
    return GK_OK;
}

void gk_model_tensor_free(gk_model *m, gk_tensor *t)
{
    if (!t)
        return;
    if (t->data) {
        m->be.ops->buffer_free(m->be.state, t->data);
        m->mem_bytes -= gk_tensor_nbytes(t);
    }
    free(t);
}

/* ------------------------------------------------------------ weights */

static int64_t dim_value(const gk_model *m, gk_dim d)
{
    const gk_config *c = &m->cfg;
    if (d >= GK_DIM_KEY0 && d < GK_DIM_KEY0 + GK_MAX_DIM_KEYS)
        return m->dims[d - GK_DIM_KEY0];
    switch (d) {
    case GK_DIM_NONE: return 0;
    case GK_DIM_ONE: return 1;
    case GK_DIM_VOCAB: return c->n_vocab;
    case GK_DIM_EMBD: return c->n_embd;
    case GK_DIM_Q: return c->n_head * c->head_dim;
    case GK_DIM_KV: return c->n_head_kv * c->head_dim;
    case GK_DIM_FF: return c->n_ff;
    case GK_DIM_HEAD: return c->head_dim;
    case GK_DIM_POS: return c->n_ctx_train;
    case GK_DIM_QKV: return (c->n_head + 2 * c->n_head_kv) * c->head_dim;
    default: return 0;
    }
}

/* The architecture's config sizes (GK_DIM_KEY), read once at load. */
static gk_status read_dims(gk_model *m, gk_err *err)
{
    const gk_dim_key *k = GK_ARCH_OP(m->arch, dim_keys);
    for (int i = 0; k && k[i].key; i++) {
        if (i == GK_MAX_DIM_KEYS)
            return gk_err_set(err, GK_ERR_PLUGIN, "architecture '%s' declares more than %d dim_keys",
                              m->arch->spec->name, GK_MAX_DIM_KEYS);
        const char *key = k[i].key;
        if (!gk_config_has(&m->cfg, key) && k[i].alt && gk_config_has(&m->cfg, k[i].alt))
            key = k[i].alt;
        int64_t v;
        gk_status st = gk_config_get_int(&m->cfg, key, k[i].def, &v, err);
        if (st != GK_OK)
            return st;
        if (v < 0)
            return gk_err_set(err, GK_ERR_CONFIG, "config.json: missing key '%s' (the %s architecture needs it)", key,
                              m->arch->spec->name);
        if (v < 1 || v > INT32_MAX)
            return gk_err_set(err, GK_ERR_CONFIG, "config.json: '%s' is %lld, expected 1 .. %d", key, (long long)v,
                              INT32_MAX);
        m->dims[i] = v;
    }
    return GK_OK;
}

/* The checkpoint name of an entry for layer il and expert ie (prefix tried in
 * order); false when absent. */
static bool resolve_name(const gk_arch_ops *arch, gk_safetensors *st, const gk_tensor_entry *e,
                         int il, int ie, char *out, size_t len)
{
    static const char *const no_prefix[] = {"", NULL};
    const char *const *prefixes = arch->name_prefixes ? arch->name_prefixes : no_prefix;
    char base[256];
    if ((e->flags & GK_TF_EXPERT) && !(e->flags & GK_TF_LAYER))
        snprintf(base, sizeof base, e->name, ie);
    else
        snprintf(base, sizeof base, e->name, il, ie);
    for (const char *const *p = prefixes; *p; p++) {
        snprintf(out, len, "%s%s", *p, base);
        if (gk_safetensors_has(st, out))
            return true;
    }
    snprintf(out, len, "%s%s", prefixes[0], base);
    return false;
}

static void shape_str(const gk_tensor_info *ti, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ti->n_dims && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)ti->shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* Convert n floats into dst of dtype dt. */
static void store_as(gk_dtype dt, const float *src, void *dst, size_t n)
{
    if (dt == GK_DTYPE_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dt == GK_DTYPE_F16) {
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = gk_f32_to_f16(src[i]);
    } else {
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = gk_f32_to_bf16(src[i]);
    }
}

/* How an entry's block sits in its stored tensor: `skip` rows before it and
 * `total` rows in all (after transposing), `count` stacked copies. */
typedef struct placement {
    int64_t rows, cols, skip, total, count;
} placement;

static placement place(const gk_model *m, const gk_tensor_entry *e)
{
    placement pl = {0};
    bool is_1d = e->shape[1] == GK_DIM_NONE;
    pl.rows = is_1d ? 1 : dim_value(m, e->shape[0]);
    pl.cols = is_1d ? dim_value(m, e->shape[0]) : dim_value(m, e->shape[1]);
    int64_t unit = is_1d ? pl.cols : pl.rows; /* the split axis: rows, or a 1-D tensor's length */
    pl.count = e->flags & (GK_TF_EXPERT | GK_TF_STACKED) ? dim_value(m, (gk_dim)e->n_parts) : 1;
    pl.total = unit;
    if (e->flags & GK_TF_SPLIT) {
        pl.total = 0;
        for (const gk_tensor_entry *o = m->arch->tensors; o->name; o++) {
            if (!(o->flags & GK_TF_SPLIT) || strcmp(o->name, e->name) != 0)
                continue;
            int64_t u = dim_value(m, o->shape[0]); /* rows, or a 1-D tensor's length */
            pl.total += u;
            if (o->part < e->part)
                pl.skip += u;
        }
    } else if (e->part && !(e->flags & (GK_TF_EXPERT | GK_TF_STACKED))) {
        pl.total = unit * e->n_parts;
        pl.skip = unit * (e->part - 1);
    }
    return pl;
}

/* Is the stored tensor `name` of a weight dtype and of the shape the config
 * gives this entry? Checked before anything is allocated for it. */
static gk_status check_stored(gk_safetensors *st, const gk_tensor_entry *e, const char *name, const placement *pl,
                              gk_tensor_info *out, gk_err *err)
{
    gk_tensor_info ti;
    gk_status s = gk_safetensors_info(st, name, &ti, err);
    if (s != GK_OK)
        return s;
    if (ti.dtype != GK_DTYPE_F32 && ti.dtype != GK_DTYPE_F16 && ti.dtype != GK_DTYPE_BF16)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "tensor '%s' is %s; only F32, F16 and BF16 weights load",
                          name, gk_dtype_name(ti.dtype));
    bool is_1d = e->shape[1] == GK_DIM_NONE, stacked = e->flags & GK_TF_STACKED;
    int64_t want[3];
    int want_dims = 0;
    if (stacked)
        want[want_dims++] = pl->count;
    if (is_1d) {
        want[want_dims++] = pl->total;
    } else if (e->flags & GK_TF_TRANSPOSE) {
        want[want_dims++] = pl->cols;
        want[want_dims++] = pl->total;
    } else {
        want[want_dims++] = pl->total;
        want[want_dims++] = pl->cols;
    }
    bool ok = ti.n_dims == want_dims;
    for (int i = 0; ok && i < want_dims; i++)
        ok = ti.shape[i] == want[i];
    if (!ok) {
        char got[96], exp[96];
        shape_str(&ti, got, sizeof got);
        gk_tensor_info w = {.n_dims = want_dims};
        for (int i = 0; i < want_dims; i++)
            w.shape[i] = want[i];
        shape_str(&w, exp, sizeof exp);
        return gk_err_set(err, GK_ERR_FORMAT, "tensor '%s' has shape %s, expected %s from config.json", name, got,
                          exp);
    }
    *out = ti;
    return GK_OK;
}

/* Load the stored tensor `name` (one expert's, or all of a stacked entry)
 * into rows [dst_row, ..) of t. */
static gk_status load_into(gk_model *m, gk_safetensors *st, const gk_tensor_entry *e, const char *name,
                           const placement *pl, gk_tensor *t, int64_t dst_row, gk_err *err)
{
    gk_tensor_info ti;
    gk_status s = check_stored(st, e, name, pl, &ti, err);
    if (s != GK_OK)
        return s;
    bool is_1d = e->shape[1] == GK_DIM_NONE, stacked = e->flags & GK_TF_STACKED;
    int64_t copies = stacked ? pl->count : 1;
    size_t n = (size_t)(pl->rows * pl->cols), esz = gk_dtype_size(t->dtype);
    bool plain = ti.dtype == t->dtype && pl->skip == 0 && pl->total == (is_1d ? pl->cols : pl->rows) &&
                 !(e->flags & GK_TF_TRANSPOSE);
    if (plain) {
        const void *raw;
        uint64_t nb;
        s = gk_safetensors_bytes(st, name, &raw, &nb, err);
        if (s == GK_OK)
            s = m->be.ops->buffer_write(m->be.state, t->data, (size_t)dst_row * (size_t)pl->cols * esz, raw,
                                        (size_t)nb, err);
        return s;
    }
    size_t block = (size_t)(is_1d ? pl->total : pl->total * pl->cols); /* one copy's stored elements */
    float *all = malloc(block * (size_t)copies * sizeof(float));
    float *sel = malloc(n * sizeof(float));
    void *conv = malloc(n * esz);
    if (!all || !sel || !conv) {
        s = gk_err_set(err, GK_ERR_NOMEM, "out of memory converting '%s'", name);
        goto out;
    }
    s = gk_safetensors_read_f32(st, name, all, block * (size_t)copies, err);
    for (int64_t c = 0; s == GK_OK && c < copies; c++) {
        const float *src = all + (size_t)c * block;
        if (e->flags & GK_TF_TRANSPOSE && !is_1d) {
            /* stored [cols][total]: element (r, k) of the block is src[k][skip + r] */
            for (int64_t r = 0; r < pl->rows; r++)
                for (int64_t k = 0; k < pl->cols; k++)
                    sel[r * pl->cols + k] = src[k * pl->total + pl->skip + r];
        } else {
            memcpy(sel, src + (size_t)pl->skip * (is_1d ? 1 : (size_t)pl->cols), n * sizeof(float));
        }
        store_as(t->dtype, sel, conv, n);
        s = m->be.ops->buffer_write(m->be.state, t->data, (size_t)(dst_row + c * pl->rows) * (size_t)pl->cols * esz,
                                    conv, n * esz, err);
    }
out:
    free(all);
    free(sel);
    free(conv);
    return s;
}

/* Is this entry required for this model? */
static bool entry_required(const gk_model *m, const gk_tensor_entry *e)
{
    if (e->flags & GK_TF_COND_BIAS)
        return m->cfg.attention_bias;
    if (e->flags & GK_TF_COND_MLP_BIAS)
        return m->cfg.mlp_bias;
    if (e->flags & GK_TF_COND_QKN)
        return m->arch->spec->use_qk_norm;
    return !(e->flags & GK_TF_OPTIONAL);
}

static void claim(gk_safetensors *st, bool *claimed, const char *name)
{
    size_t n = gk_safetensors_count(st);
    for (size_t i = 0; i < n; i++)
        if (strcmp(gk_safetensors_name(st, i), name) == 0)
            claimed[i] = true;
}

/* One table entry for one layer: into *slot (NULL: claim only). */
static gk_status load_entry(gk_model *m, gk_safetensors *st, const gk_tensor_entry *e, int il, gk_tensor **slot,
                            bool *claimed, gk_err *err)
{
    char name[320];
    bool layered = e->flags & GK_TF_LAYER, experts = e->flags & GK_TF_EXPERT;
    placement pl = place(m, e);
    if ((e->flags & (GK_TF_EXPERT | GK_TF_STACKED)) && pl.count < 1)
        return gk_err_set(err, GK_ERR_PLUGIN, "architecture '%s': entry '%s' has an expert count dim of 0",
                          m->arch->spec->name, e->name);
    int n_files = experts ? (int)pl.count : 1;
    /* all present, or all absent */
    int present = 0;
    for (int ie = 0; ie < n_files; ie++) {
        bool have = resolve_name(m->arch, st, e, il, ie, name, sizeof name);
        present += have;
        if (!have && (present || entry_required(m, e)) && e->role != GK_W_LM_HEAD)
            return gk_err_set(err, GK_ERR_FORMAT, "missing tensor '%s' (%s architecture)", name, m->arch->spec->name);
    }
    if (!present)
        return GK_OK;
    for (int ie = 0; present < n_files && ie < n_files; ie++) /* some experts, not all */
        if (!resolve_name(m->arch, st, e, il, ie, name, sizeof name))
            return gk_err_set(err, GK_ERR_FORMAT, "missing tensor '%s' (%s architecture)", name, m->arch->spec->name);
    resolve_name(m->arch, st, e, il, 0, name, sizeof name);
    if ((e->flags & GK_TF_COND_BIAS) && !m->cfg.attention_bias)
        return gk_err_set(err, GK_ERR_FORMAT, "tensor '%s' is present but config.json says attention_bias is false",
                          name);
    if ((e->flags & GK_TF_COND_MLP_BIAS) && !m->cfg.mlp_bias)
        return gk_err_set(err, GK_ERR_FORMAT, "tensor '%s' is present but config.json says mlp_bias is false", name);
    gk_status s = GK_OK;
    if (slot && !*slot) {
        int64_t rows;
        if (!gk_i64_mul(pl.rows, pl.count, &rows))
            return gk_err_set(err, GK_ERR_CONFIG, "tensor '%s': %lld experts of %lld rows overflow", name,
                              (long long)pl.count, (long long)pl.rows);
        gk_tensor_info ti;
        for (int ie = 0; s == GK_OK && ie < n_files; ie++) {
            resolve_name(m->arch, st, e, il, ie, name, sizeof name);
            s = check_stored(st, e, name, &pl, &ti, err);
        }
        resolve_name(m->arch, st, e, il, 0, name, sizeof name);
        if (s == GK_OK)
            s = gk_model_tensor_new(m, m->dtype, rows, pl.cols, name, layered ? il : -1, slot, err);
        for (int ie = 0; s == GK_OK && ie < n_files; ie++) {
            resolve_name(m->arch, st, e, il, ie, name, sizeof name);
            s = load_into(m, st, e, name, &pl, *slot, experts ? ie * pl.rows : 0, err);
        }
        if (s != GK_OK) {
            gk_model_tensor_free(m, *slot);
            *slot = NULL;
            return s;
        }
        m->weight_bytes += gk_tensor_nbytes(*slot);
    }
    for (int ie = 0; ie < n_files; ie++) {
        resolve_name(m->arch, st, e, il, ie, name, sizeof name);
        claim(st, claimed, name);
    }
    return s;
}

static gk_status load_weights(gk_model *m, gk_safetensors *st, const gk_model_opts *opts, uint64_t total,
                              gk_err *err)
{
    size_t n_names = gk_safetensors_count(st);
    bool *claimed = calloc(n_names ? n_names : 1, sizeof *claimed);
    m->n_entries = 0;
    for (const gk_tensor_entry *e = m->arch->tensors; e->name; e++)
        m->n_entries++;
    m->ew = calloc(m->n_entries ? m->n_entries : 1, sizeof *m->ew);
    if (!claimed || !m->ew) {
        free(claimed);
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    }
    gk_status s = GK_OK;
    size_t idx = 0;
    for (const gk_tensor_entry *e = m->arch->tensors; e->name && s == GK_OK; e++, idx++) {
        bool layered = e->flags & GK_TF_LAYER;
        int n_l = layered ? (int)m->cfg.n_layer : 1;
        if ((unsigned)e->role >= GK_W_COUNT) {
            s = gk_err_set(err, GK_ERR_PLUGIN, "architecture '%s': entry '%s' has role %d, outside gk_role",
                           m->arch->spec->name, e->name, (int)e->role);
            break;
        }
        gk_tensor ***arr = e->role == GK_W_NAMED ? &m->ew[idx] : layered && e->role != GK_W_UNUSED ? &m->lw[e->role]
                                                                                                    : NULL;
        if (arr && !*arr) {
            *arr = calloc((size_t)n_l, sizeof(gk_tensor *));
            if (!*arr) {
                s = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
                break;
            }
        }
        for (int il = 0; il < n_l && s == GK_OK; il++) {
            /* a tied head's own copy and known-unused tensors are claimed, not loaded */
            bool skip = e->role == GK_W_UNUSED || (e->role == GK_W_LM_HEAD && m->cfg.tie_word_embeddings);
            gk_tensor **slot = skip ? NULL : arr ? &(*arr)[il] : &m->w[e->role];
            uint64_t before = m->weight_bytes;
            s = load_entry(m, st, e, layered ? il : -1, slot, claimed, err);
            if (s == GK_OK && m->weight_bytes != before && opts->progress)
                opts->progress(m->weight_bytes, total, opts->progress_user);
        }
    }
    if (s == GK_OK && !m->w[GK_W_LM_HEAD] && !m->cfg.tie_word_embeddings)
        s = gk_err_set(err, GK_ERR_FORMAT,
                       "missing LM head tensor and config.json has tie_word_embeddings = false");
    for (size_t i = 0; s == GK_OK && i < n_names; i++) {
        if (!claimed[i]) {
            char q[200];
            s = gk_err_set(err, GK_ERR_FORMAT, "unknown tensor '%s' for the %s architecture",
                           gk_quote(q, sizeof q, gk_safetensors_name(st, i)), m->arch->spec->name);
        }
    }
    free(claimed);
    return s;
}

/* ---------------------------------------------------------------- RoPE */

/* inv_freq[i] = theta^(-2i/d), then the checkpoint's scaling (as transformers'
 * rope init functions compute it). */
void gk_rope_freqs(const gk_config *c, float theta, int64_t r, gk_rope_scaling scaling, float factor, float *inv)
{
    int64_t half = r / 2;
    for (int64_t i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)r;
        inv[i] = (float)(1.0 / pow((double)theta, (double)expo));
    }
    if (scaling == GK_ROPE_LINEAR) {
        for (int64_t i = 0; i < half; i++)
            inv[i] /= factor;
    } else if (scaling == GK_ROPE_LLAMA3) {
        double old = (double)c->rope_orig_ctx;
        double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
        double low_wavelen = old / lo, high_wavelen = old / hi;
        for (int64_t i = 0; i < half; i++) {
            double f = inv[i], wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (old / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
            inv[i] = (float)f;
        }
    }
}

/* ---------------------------------------------------------------- load */

/* what names the option in the error: "dtype", "KV-cache dtype". */
static gk_status parse_dtype(const char *what, const char *s, gk_dtype stored, gk_dtype *out, gk_err *err)
{
    if (!s || !strcmp(s, "auto")) {
        *out = stored;
        return GK_OK;
    }
    if (!strcmp(s, "f32") || !strcmp(s, "float32"))
        *out = GK_DTYPE_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "float16"))
        *out = GK_DTYPE_F16;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
        *out = GK_DTYPE_BF16;
    else
        return gk_err_set(err, GK_ERR_INVALID_ARG, "unknown %s '%s' (use f32, f16, bf16 or auto)", what, s);
    return GK_OK;
}

/* The folder of a model path (the path itself, or the folder of a file). */
static gk_status model_folder(const char *path, char **dir, gk_err *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) /* the cause as the system gives it: missing, a symlink loop, no permission */
        return gk_err_set(err, GK_ERR_IO, "%s: %s", path, strerror(errno));
    *dir = S_ISDIR(sb.st_mode) ? gk_strdup(path) : gk_path_dirname(path);
    return *dir ? GK_OK : gk_err_set(err, GK_ERR_NOMEM, "out of memory");
}

static gk_status alloc_caches(gk_model *m, gk_err *err)
{
    const gk_config *c = &m->cfg;
    int64_t half = c->head_dim / 2;
    float *inv = malloc((size_t)(half ? half : 1) * sizeof(float));
    if (!inv)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    gk_rope_freqs(c, c->rope_theta, c->head_dim, c->rope_scaling, c->rope_factor, inv);
    gk_status s = gk_model_tensor_new(m, GK_DTYPE_F32, 1, half, "inv_freq", -1, &m->inv_freq, err);
    if (s == GK_OK)
        s = m->be.ops->buffer_write(m->be.state, m->inv_freq->data, 0, inv, (size_t)half * sizeof(float), err);
    free(inv);
    /* the caches' descriptors: their rows (and memory) come after the
     * first graph build says which layers have a window (place_caches) */
    m->k_cache = calloc((size_t)c->n_layer, sizeof *m->k_cache);
    m->v_cache = calloc((size_t)c->n_layer, sizeof *m->v_cache);
    m->win = calloc((size_t)c->n_layer, sizeof *m->win);
    m->srows = calloc((size_t)c->n_layer, sizeof *m->srows);
    m->slot_used = calloc((size_t)m->n_slots, sizeof *m->slot_used);
    if (s == GK_OK && (!m->k_cache || !m->v_cache || !m->win || !m->srows || !m->slot_used))
        s = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    int64_t kv = c->n_head_kv * c->head_dim;
    for (int64_t l = 0; l < c->n_layer && s == GK_OK; l++) {
        m->srows[l] = m->n_ctx; /* until place_caches */
        for (int i = 0; i < 2 && s == GK_OK; i++) {
            gk_tensor *t = calloc(1, sizeof *t);
            if (!t) {
                s = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
                break;
            }
            *t = (gk_tensor){.dtype = m->kv_dtype, .rows = m->n_ctx, .cols = kv, .layer = (int)l};
            snprintf(t->name, sizeof t->name, "%s", i ? "v_cache" : "k_cache");
            *(i ? &m->v_cache[l] : &m->k_cache[l]) = t;
        }
    }
    if (s == GK_OK) {
        m->host_logits = malloc((size_t)c->n_vocab * sizeof(float));
        m->cache_ids = malloc((size_t)(m->n_ctx > 0 ? m->n_ctx : 1) * sizeof *m->cache_ids);
    }
    if (s == GK_OK && (!m->host_logits || !m->cache_ids))
        s = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    return s;
}

/* Rows for each layer's caches, then their memory. A layer whose attention
 * was built with a window W keeps a ring of W + n_ubatch - 1 rows (a chunk
 * of n_ubatch tokens stores its keys before it attends, and its first query
 * still needs the W - 1 before it) where that is fewer than n_ctx and the
 * backend knows rings (ABI 1.4); every other layer keeps n_ctx rows. */
static gk_status place_caches(gk_model *m, uint64_t mem_free, gk_err *err)
{
    const gk_config *c = &m->cfg;
    int64_t ubatch = m->n_ubatch_opt > 0 ? m->n_ubatch_opt : GK_RING_UBATCH;
    m->n_ring = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        int64_t rows = m->n_ctx;
        if (m->be.abi_minor >= 4 && m->win[l] > 0 && m->win[l] + ubatch - 1 < m->n_ctx)
            rows = m->win[l] + ubatch - 1;
        m->n_ring += rows < m->n_ctx;
        m->srows[l] = rows;
        m->k_cache[l]->rows = m->v_cache[l]->rows = rows * m->n_slots; /* fits: n_ctx * n_slots did */
    }
    /* micro-batches: as asked, else GK_RING_UBATCH where a ring needs them */
    m->n_ubatch = m->n_ubatch_opt > 0 ? m->n_ubatch_opt : m->n_ring ? GK_RING_UBATCH : 0;
    uint64_t bytes = 0;
    for (int64_t l = 0; l < c->n_layer; l++)
        bytes += 2 * (uint64_t)gk_tensor_nbytes(m->k_cache[l]); /* each fits: n_ctx rows did */
    if (mem_free && bytes > mem_free)
        return gk_err_set(err, GK_ERR_NOMEM,
                          "out of memory: the %lld-token KV cache needs %.2f GB and %.2f GB is free after the "
                          "weights; a shorter context (n_ctx, gkrun --ctx) needs less",
                          (long long)m->n_ctx, bytes / 1e9, mem_free / 1e9);
    for (int64_t l = 0; l < c->n_layer; l++) {
        for (int i = 0; i < 2; i++) {
            gk_tensor *t = i ? m->v_cache[l] : m->k_cache[l];
            gk_status s = m->be.ops->buffer_alloc(m->be.state, gk_tensor_nbytes(t), &t->data, err);
            if (s != GK_OK)
                return s;
            gk_model_mem_add(m, gk_tensor_nbytes(t));
        }
    }
    return GK_OK;
}

/* Bytes of the K and V caches, kv_dtype [n_layer][n_ctx][Hkv*hd] each; false
 * when that does not fit 64 bits. */
static bool kv_cache_bytes(const gk_model *m, uint64_t *out)
{
    int64_t n;
    if (!gk_i64_mul(m->cfg.n_head_kv, m->cfg.head_dim, &n) || !gk_i64_mul(n, m->n_ctx, &n) ||
        !gk_i64_mul(n, m->n_slots, &n) ||
        !gk_i64_mul(n, m->cfg.n_layer, &n) || !gk_i64_mul(n, 2 * (int64_t)gk_dtype_size(m->kv_dtype), &n) ||
        n < 0)
        return false;
    *out = (uint64_t)n;
    return true;
}

/* Weight bytes the model will need on the backend, to refuse early when they
 * (with the cache) don't fit. */
static uint64_t planned_weight_bytes(const gk_model *m, gk_safetensors *st)
{
    uint64_t total = 0;
    size_t n = gk_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        gk_tensor_info ti;
        if (gk_safetensors_info(st, gk_safetensors_name(st, i), &ti, NULL) == GK_OK && ti.dtype != GK_DTYPE_COUNT)
            total += ti.nbytes / (gk_dtype_size(ti.dtype) ? gk_dtype_size(ti.dtype) : 1) * gk_dtype_size(m->dtype);
    }
    return total;
}

/* What applications built before gk_model_opts grew n_ubatch call. */
gk_status(gk_model_load)(gk_runtime *rt, const char *path, const gk_model_opts *opts, gk_model **out, gk_err *err)
{
    return gk_model_load_sized(rt, path, opts, offsetof(gk_model_opts, n_ubatch), out, err);
}

gk_status gk_model_load_sized(gk_runtime *rt, const char *path, const gk_model_opts *user_opts, size_t opts_size,
                              gk_model **out, gk_err *err)
{
    if (!out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_load: out is NULL");
    *out = NULL;
    if (!rt || !path)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_load: %s is NULL", rt ? "path" : "rt");
    if (user_opts && opts_size < offsetof(gk_model_opts, n_ubatch))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_load: opts_size %zu is smaller than the first "
                          "gk_model_opts (%zu bytes)", opts_size, offsetof(gk_model_opts, n_ubatch));
    /* the caller's fields; those its header did not have stay 0 */
    gk_model_opts copy = {0};
    if (user_opts)
        memcpy(&copy, user_opts, opts_size < sizeof copy ? opts_size : sizeof copy);
    const gk_model_opts *opts = &copy;
    if (opts->n_ctx < 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "n_ctx (the context length) must be >= 0 (0 = the model's default), got %lld",
                          (long long)opts->n_ctx);
    if (opts->n_ubatch < 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "n_ubatch (tokens per forward graph, gkrun --ubatch) must be >= 0 (0 = the default), "
                          "got %lld",
                          (long long)opts->n_ubatch);
    if (opts->n_seq_max < 0 || opts->n_seq_max > GK_MAX_SEQ)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "n_seq_max (sequences at once, gkrun serve --parallel) must be 0 to %d, got %lld",
                          GK_MAX_SEQ, (long long)opts->n_seq_max);
    gk_model *m = calloc(1, sizeof *m);
    if (!m)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    m->rt = rt;
    gk_safetensors *st = NULL;
    char *dir = NULL, *cfg_path = NULL;
    gk_status s = model_folder(path, &dir, err);
    if (s != GK_OK)
        goto fail;
    cfg_path = gk_path_join(dir, "config.json");
    struct stat sb;
    if (!cfg_path || (lstat(cfg_path, &sb) != 0 && errno == ENOENT)) {
        /* only a missing entry is "no config.json"; a broken one is reported by the reader */
        s = gk_err_set(err, GK_ERR_NOT_FOUND, "%s: no config.json beside the weights", dir);
        goto fail;
    }
    s = gk_config_load(cfg_path, &m->cfg, err);
    if (s != GK_OK)
        goto fail;
    s = gk_safetensors_open(path, &st, err);
    if (s != GK_OK)
        goto fail;

    const gk_model_spec *spec = NULL;
    if (opts->arch) {
        spec = gk_runtime_find_arch(rt, opts->arch);
        if (!spec) {
            s = gk_err_set(err, GK_ERR_NOT_FOUND, "unknown architecture '%s'", opts->arch);
            goto fail;
        }
    } else {
        s = gk_runtime_detect_arch(rt, st, &m->cfg, &spec, err);
        if (s != GK_OK)
            goto fail;
    }
    m->arch = gk_runtime_arch_ops(rt, spec->name);
    gk_status (*adjust)(gk_config *, gk_err *) = GK_ARCH_OP(m->arch, adjust_config);
    if (adjust && (s = adjust(&m->cfg, err)) != GK_OK)
        goto fail;
    if ((s = read_dims(m, err)) != GK_OK)
        goto fail;
    if (m->arch->check_config) {
        s = m->arch->check_config(&m->cfg, err);
        if (s != GK_OK)
            goto fail;
    }
    s = gk_runtime_backend(rt, opts->backend, &m->be, err);
    if (s != GK_OK)
        goto fail;

    /* The checkpoint's dtype is that of its token embedding. */
    gk_dtype stored = m->cfg.dtype;
    for (size_t i = 0; i < gk_safetensors_count(st); i++) {
        gk_tensor_info ti;
        if (gk_safetensors_info(st, gk_safetensors_name(st, i), &ti, NULL) == GK_OK &&
            (ti.dtype == GK_DTYPE_F32 || ti.dtype == GK_DTYPE_F16 || ti.dtype == GK_DTYPE_BF16)) {
            stored = ti.dtype;
            break;
        }
    }
    s = parse_dtype("dtype", opts->dtype, stored, &m->dtype, err);
    if (s == GK_OK)
        s = parse_dtype("KV-cache dtype (kv_dtype, gkrun --kv-dtype)", opts->kv_dtype, m->dtype, &m->kv_dtype, err);
    if (s != GK_OK)
        goto fail;
    int64_t train_ctx = m->cfg.n_ctx_train > 0 ? m->cfg.n_ctx_train : 4096;
    m->n_ctx = opts->n_ctx > 0 ? opts->n_ctx : (train_ctx < 4096 ? train_ctx : 4096);
    m->n_slots = opts->n_seq_max > 1 ? opts->n_seq_max : 1;
    if (m->n_slots > 1 && m->be.abi_minor < 5) {
        s = gk_err_set(err, GK_ERR_UNSUPPORTED,
                       "backend '%s' (built for ABI %d.%u) holds one sequence; n_seq_max %lld needs ABI 1.5",
                       m->be.name, GK_ABI_MAJOR, m->be.abi_minor, (long long)m->n_slots);
        goto fail;
    }
    if (m->n_slots > 1 && m->n_ctx > GK_MAX_SEQ_CTX) {
        s = gk_err_set(err, GK_ERR_INVALID_ARG,
                       "a context of %lld tokens is beyond the %d each of several sequences may have",
                       (long long)m->n_ctx, GK_MAX_SEQ_CTX);
        goto fail;
    }
    /* An architecture built for ABI 1.4 applies the window itself
     * (gk_build_attn_ex); an older one cannot, so its context stays within it. */
    if (m->cfg.sliding_window > 0 && m->n_ctx > m->cfg.sliding_window &&
        m->arch->struct_size < offsetof(gk_arch_ops, build_head) + sizeof m->arch->build_head) {
        s = gk_err_set(err, GK_ERR_UNSUPPORTED,
                       "config.json: sliding_window is %lld tokens and architecture '%s' was built for an ABI "
                       "without sliding-window attention, so the context must not exceed it (asked for %lld)",
                       (long long)m->cfg.sliding_window, spec->name, (long long)m->n_ctx);
        goto fail;
    }
    if (spec->use_pos_embed && m->n_ctx > train_ctx) {
        s = gk_err_set(err, GK_ERR_INVALID_ARG,
                       "context %lld exceeds the %lld learned positions of this model",
                       (long long)m->n_ctx, (long long)train_ctx);
        goto fail;
    }

    gk_device_props props;
    memset(&props, 0, sizeof props);
    s = m->be.ops->device_props(m->be.state, &props, err);
    if (s != GK_OK)
        goto fail;
    uint64_t w_bytes = planned_weight_bytes(m, st), kv_bytes, need;
    if (!kv_cache_bytes(m, &kv_bytes) || (need = w_bytes + kv_bytes) < w_bytes) {
        s = gk_err_set(err, GK_ERR_INVALID_ARG,
                       "context of %lld tokens (n_ctx, gkrun --ctx) is too large: its KV cache would need more "
                       "than 2^64 bytes",
                       (long long)m->n_ctx);
        goto fail;
    }
    /* where a layer may have a window, rings may make the cache smaller: it
     * is checked once the first graph says (place_caches) */
    bool windowed = m->cfg.sliding_window > 0 || gk_config_has(&m->cfg, "layer_types");
    if (props.mem_free && windowed && w_bytes > props.mem_free) {
        s = gk_err_set(err, GK_ERR_NOMEM, "out of memory on %s: the weights need %.2f GB, %.2f GB is free",
                       props.name, w_bytes / 1e9, props.mem_free / 1e9);
        goto fail;
    }
    if (props.mem_free && !windowed && need > props.mem_free) {
        s = gk_err_set(err, GK_ERR_NOMEM,
                       "out of memory on %s: the model needs %.2f GB (weights and a %lld-token KV cache), %.2f GB is "
                       "free; a shorter context (n_ctx, gkrun --ctx) needs less",
                       props.name, need / 1e9, (long long)m->n_ctx, props.mem_free / 1e9);
        goto fail;
    }
    /* positions are I32 in the graph */
    if (m->n_ctx > INT32_MAX) {
        s = gk_err_set(err, GK_ERR_INVALID_ARG,
                       "context of %lld tokens (n_ctx, gkrun --ctx) is beyond the %lld positions gk supports",
                       (long long)m->n_ctx, (long long)INT32_MAX);
        goto fail;
    }
    m->n_ubatch_opt = opts->n_ubatch;
    s = load_weights(m, st, opts, w_bytes, err);
    if (s == GK_OK)
        s = alloc_caches(m, err);
    /* Build the decode graph now: an op the backend cannot run is an error at
     * load, naming the op, not at the first token. This first build also
     * says which layers have windows; with the caches placed, it is built
     * again (ring layers' attention nodes then carry n_ctx). */
    if (s == GK_OK)
        s = gk_fgraph_build_forward(m, 1, &m->g1, err);
    if (s == GK_OK) {
        uint64_t free_now = 0;
        if (props.mem_free) {
            gk_device_props now;
            memset(&now, 0, sizeof now);
            s = m->be.ops->device_props(m->be.state, &now, err);
            free_now = now.mem_free ? now.mem_free : 1;
        }
        if (s == GK_OK)
            s = place_caches(m, free_now, err);
    }
    if (s == GK_OK && (m->n_ring || m->n_slots > 1)) {
        gk_fgraph_destroy(m, m->g1);
        m->g1 = NULL;
        s = gk_fgraph_build_forward(m, 1, &m->g1, err);
    }
    if (s != GK_OK)
        goto fail;
    m->fwd = m->g1;
    gk_safetensors_close(st);
    free(dir);
    free(cfg_path);
    *out = m;
    return GK_OK;

fail:
    gk_safetensors_close(st);
    free(dir);
    free(cfg_path);
    gk_model_destroy(m);
    return s;
}

void gk_model_destroy(gk_model *m)
{
    if (!m)
        return;
    if (m->be.ops) {
        gk_fgraph_destroy(m, m->step);
        gk_fgraph_destroy(m, m->gb);
        gk_fgraph_destroy(m, m->gn);
        gk_fgraph_destroy(m, m->g1);
        for (int r = 0; r < GK_W_COUNT; r++) {
            gk_model_tensor_free(m, m->w[r]);
            for (int64_t l = 0; m->lw[r] && l < m->cfg.n_layer; l++)
                gk_model_tensor_free(m, m->lw[r][l]);
        }
        for (int64_t l = 0; l < m->cfg.n_layer; l++) {
            if (m->k_cache)
                gk_model_tensor_free(m, m->k_cache[l]);
            if (m->v_cache)
                gk_model_tensor_free(m, m->v_cache[l]);
        }
        gk_model_tensor_free(m, m->inv_freq);
        for (int i = 0; i < m->n_ropes; i++)
            gk_model_tensor_free(m, m->ropes[i].t);
        for (size_t i = 0; m->ew && i < m->n_entries; i++) {
            bool layered = m->arch->tensors[i].flags & GK_TF_LAYER;
            for (int64_t l = 0; m->ew[i] && l < (layered ? m->cfg.n_layer : 1); l++)
                gk_model_tensor_free(m, m->ew[i][l]);
        }
    }
    for (size_t i = 0; m->ew && i < m->n_entries; i++)
        free(m->ew[i]);
    free(m->ew);
    for (int r = 0; r < GK_W_COUNT; r++)
        free(m->lw[r]);
    free(m->k_cache);
    free(m->v_cache);
    free(m->win);
    free(m->srows);
    free(m->slot_used);
    free(m->host_logits);
    free(m->cache_ids);
    free(m);
}

/* Getters: a NULL model gives NULL, 0 or GK_DTYPE_COUNT. */
const gk_config *gk_model_config(const gk_model *m) { return m ? &m->cfg : NULL; }
const gk_model_spec *gk_model_spec_of(const gk_model *m) { return m ? m->arch->spec : NULL; }
const char *gk_model_backend_name(const gk_model *m) { return m ? m->be.name : NULL; }
gk_dtype gk_model_dtype(const gk_model *m) { return m ? m->dtype : GK_DTYPE_COUNT; }
int64_t gk_model_n_ctx(const gk_model *m) { return m ? m->n_ctx : 0; }
gk_dtype gk_model_kv_dtype(const gk_model *m) { return m ? m->kv_dtype : GK_DTYPE_COUNT; }
int64_t gk_model_n_past(const gk_model *m) { return m ? m->n_past : 0; }
uint64_t gk_model_weight_bytes(const gk_model *m) { return m ? m->weight_bytes : 0; }
uint64_t gk_model_mem_peak(const gk_model *m) { return m ? m->mem_peak : 0; }

/* A model weight (not an activation of fg, a cache or an input). */
static bool is_weight(const gk_model *m, const gk_fgraph *fg, const gk_tensor *t)
{
    if (!t || t == m->inv_freq || t->dtype == GK_DTYPE_I32)
        return false;
    for (size_t i = 0; i < fg->n_owned; i++)
        if (fg->owned[i] == t)
            return false;
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        if (t == m->k_cache[l] || t == m->v_cache[l])
            return false;
    for (int i = 0; i < m->n_ropes; i++)
        if (t == m->ropes[i].t)
            return false;
    return true;
}

uint64_t gk_model_step_weight_bytes(const gk_model *m)
{
    if (!m || !m->g1)
        return 0;
    const gk_fgraph *fg = m->g1;
    uint64_t total = 0;
    /* each weight once, however many nodes read it */
    const gk_tensor **seen = calloc(fg->g.n_nodes * GK_MAX_SRC + 1, sizeof *seen);
    size_t n_seen = 0;
    if (!seen)
        return 0;
    for (size_t i = 0; i < fg->g.n_nodes; i++) {
        const gk_node *nd = &fg->g.nodes[i];
        for (int k = 0; k < GK_MAX_SRC; k++) {
            const gk_tensor *t = nd->src[k];
            bool dup = false;
            for (size_t j = 0; j < n_seen && !dup; j++)
                dup = seen[j] == t;
            if (dup || !is_weight(m, fg, t))
                continue;
            seen[n_seen++] = t;
            uint64_t b = gk_tensor_nbytes(t);
            if (nd->op == GK_OP_GET_ROWS && k == 0)
                b = (uint64_t)t->cols * gk_dtype_size(t->dtype); /* one row */
            else if (nd->op == GK_OP_LINEAR_ID && k == 1 && nd->i[0] > 0 && nd->src[2])
                b = b / (uint64_t)nd->i[0] * (uint64_t)nd->src[2]->cols; /* k of E experts */
            total += b;
        }
    }
    free(seen);
    const gk_tensor *head = m->w[GK_W_LM_HEAD] ? m->w[GK_W_LM_HEAD] : m->w[GK_W_TOK_EMBD];
    return total + (head ? gk_tensor_nbytes(head) : 0);
}

gk_status gk_model_device(const gk_model *m, gk_device_props *out, gk_err *err)
{
    if (!m || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_device: %s is NULL", m ? "out" : "the model");
    memset(out, 0, sizeof *out);
    return m->be.ops->device_props(m->be.state, out, err);
}

void gk_model_path_note(const gk_model *m, char *buf, size_t len)
{
    if (!buf || len == 0)
        return;
    buf[0] = 0;
    if (!m)
        return;
    void (*note)(void *, char *, size_t) = GK_BACKEND_OP(m->be.ops, path_note);
    if (note) {
        note(m->be.state, buf, len);
        buf[len - 1] = 0;
    }
}

/* ------------------------------------------------------------- forward */

/* Queue a graph. No wait: the next read of a result (buffer_read, or the
 * backend's sampler) waits, so a decode step has one synchronisation. */
static gk_status run(gk_model *m, gk_fgraph *fg, gk_err *err)
{
    return m->be.ops->graph_compute(m->be.state, &fg->g, err);
}

/* Where forward_one reads and records a sequence: the model's own (slot 0)
 * or a gk_seq's. */
typedef struct seq_ref {
    int64_t slot, *n_past, *kv_hi;
    int32_t *ids;
} seq_ref;

static seq_ref own_seq(gk_model *m) { return (seq_ref){0, &m->n_past, &m->kv_hi, m->cache_ids}; }

/* Write n positions from `first` (and the slot, with several slots) into fg. */
static gk_status write_inputs(gk_model *m, gk_fgraph *fg, const int32_t *ids, int64_t n, const int32_t *pos_in,
                              int64_t first, const int32_t *slots_in, int64_t slot, gk_err *err)
{
    int32_t small[128];
    int32_t *buf = 2 * n <= 128 ? small : malloc((size_t)(2 * n) * sizeof *buf);
    if (!buf)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        buf[i] = pos_in ? pos_in[i] : (int32_t)(first + i);
        buf[n + i] = slots_in ? slots_in[i] : (int32_t)slot;
    }
    gk_status s = m->be.ops->buffer_write(m->be.state, fg->ids->data, 0, ids, (size_t)n * sizeof *ids, err);
    if (s == GK_OK)
        s = m->be.ops->buffer_write(m->be.state, fg->pos->data, 0, buf,
                                    (size_t)(fg->pos_slot ? 2 * n : n) * sizeof *buf, err);
    if (buf != small)
        free(buf);
    return s;
}

/* One graph of n tokens (at most n_ubatch) of sequence q at its next positions. */
static gk_status forward_one(gk_model *m, seq_ref q, const int32_t *ids, int64_t n, float *hidden, gk_err *err)
{
    gk_status s;
    /* the graph of this size: the one-token graph, or the kept one of another
     * size (rebuilt when the size changed) */
    gk_fgraph **slot = n == 1 ? &m->g1 : &m->gn;
    if (!*slot || (*slot)->g.n_tokens != n) {
        if (m->fwd == *slot)
            m->fwd = NULL, m->ran = false;
        gk_fgraph_destroy(m, *slot);
        *slot = NULL;
        s = gk_fgraph_build_forward(m, n, slot, err);
        if (s != GK_OK)
            return s;
    }
    m->fwd = *slot;
    s = write_inputs(m, m->fwd, ids, n, NULL, *q.n_past, NULL, q.slot, err);
    if (s == GK_OK)
        s = run(m, m->fwd, err);
    if (s != GK_OK)
        return s;
    memcpy(q.ids + *q.n_past, ids, (size_t)n * sizeof *ids);
    *q.n_past += n;
    gk_kv_wrote(q.kv_hi, *q.n_past);
    m->ran = true;
    if (hidden)
        s = m->be.ops->buffer_read(m->be.state, m->fwd->out->data, 0, hidden,
                                   gk_tensor_nbytes(m->fwd->out), err);
    return s;
}

gk_status gk_model_forward(gk_model *m, const int32_t *ids, int64_t n, float *hidden, gk_err *err)
{
    if (!m || !ids)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_forward: %s is NULL", m ? "ids" : "the model");
    if (n <= 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "forward needs at least one token");
    if (m->own_busy)
        return gk_err_set(err, GK_ERR_BUSY, "the model's own sequence slot is a gk_seq's (gk_seq_new took it)");
    if (n > m->n_ctx - m->n_past) /* not n_past + n: a huge n must not overflow */
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "%lld tokens after %lld cached ones exceed the context of %lld tokens",
                          (long long)n, (long long)m->n_past, (long long)m->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.n_vocab)
            return gk_err_set(err, GK_ERR_INVALID_ARG, "token id %d at index %lld is outside the vocabulary of %lld",
                              ids[i], (long long)i, (long long)m->cfg.n_vocab);
    /* micro-batches of at most n_ubatch tokens, in order */
    int64_t step = m->n_ubatch > 0 && m->n_ubatch < n ? m->n_ubatch : n;
    gk_status s = GK_OK;
    m->fwd_chunks = 0;
    for (int64_t done = 0; s == GK_OK && done < n; done += step) {
        int64_t k = n - done < step ? n - done : step;
        s = forward_one(m, own_seq(m), ids + done, k, hidden ? hidden + done * m->cfg.n_embd : NULL, err);
        m->fwd_chunks++;
    }
    return s;
}

gk_status gk_model_logits(gk_model *m, float *logits, gk_err *err)
{
    if (!m || !logits)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_logits: %s is NULL", m ? "logits" : "the model");
    if (!m->ran)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "logits asked with no forward call to read (none ran yet, or generate ran since)");
    if (m->fwd_chunks > 1)
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "the last forward ran as %lld micro-batches of at most %lld tokens (n_ubatch), and only "
                          "the last one's rows are kept; forward at most n_ubatch tokens at a time to read the "
                          "logits of every row",
                          (long long)m->fwd_chunks, (long long)m->n_ubatch);
    gk_status s = GK_OK;
    gk_fgraph *f = m->fwd;
    if (!f->head)
        s = gk_fgraph_build_head(m, f->out, &f->head, err);
    if (s == GK_OK)
        s = run(m, f->head, err);
    if (s == GK_OK)
        s = m->be.ops->buffer_read(m->be.state, f->head->out->data, 0, logits, gk_tensor_nbytes(f->head->out), err);
    return s;
}

gk_status gk_model_run_last_logits(gk_model *m, gk_tensor **out, gk_err *err)
{
    if (!m->ran)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "logits asked with no forward call to read (none ran yet, or generate ran since)");
    gk_status s = GK_OK;
    gk_fgraph *f = m->fwd;
    if (!f->head_last) {
        f->last_row = *f->out;
        f->last_row.rows = 1;
        f->last_row.data = (char *)f->out->data + (size_t)(f->out->rows - 1) * (size_t)f->out->cols * sizeof(float);
        s = gk_fgraph_build_head(m, &f->last_row, &f->head_last, err);
    }
    if (s == GK_OK)
        s = run(m, f->head_last, err);
    *out = s == GK_OK ? f->head_last->out : NULL;
    return s;
}

gk_status gk_model_last_logits(gk_model *m, gk_err *err)
{
    gk_tensor *logits;
    gk_status s = gk_model_run_last_logits(m, &logits, err);
    if (s == GK_OK)
        s = m->be.ops->buffer_read(m->be.state, logits->data, 0, m->host_logits,
                                   (size_t)m->cfg.n_vocab * sizeof(float), err);
    return s;
}

/* Position p of a ring of R = W + U - 1 rows is intact while nothing at
 * p + R or later was written; the next query at n_keep needs
 * n_keep - W + 1 on, so n_keep + U must exceed the highest position written
 * (kv_hi - 1). */
static int64_t ring_min_keep(const gk_model *m, int64_t kv_hi)
{
    return m->n_ring && kv_hi - m->n_ubatch > 0 ? kv_hi - m->n_ubatch : 0;
}

/* n_keep of a sequence holding n_past (kv_hi written): kept, or why not. */
static gk_status truncate_seq(gk_model *m, int64_t n_keep, int64_t *n_past, int64_t *kv_hi, gk_err *err)
{
    if (n_keep < 0 || n_keep > *n_past)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cannot keep %lld of %lld cached tokens",
                          (long long)n_keep, (long long)*n_past);
    int64_t least = ring_min_keep(m, *kv_hi);
    if (n_keep > 0 && n_keep < least) {
        int64_t l = 0;
        while (l < m->cfg.n_layer && m->srows[l] == m->n_ctx)
            l++;
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "cannot keep %lld of %lld cached tokens: layer %lld's sliding-window cache is a ring of "
                          "%lld rows, and positions up to %lld have overwritten rows that position %lld needs; "
                          "keep 0 or at least %lld",
                          (long long)n_keep, (long long)*n_past, (long long)l, (long long)m->srows[l],
                          (long long)(*kv_hi - 1), (long long)n_keep, (long long)least);
    }
    *n_past = n_keep;
    if (n_keep == 0)
        *kv_hi = 0; /* every row is rewritten before it is read again */
    return GK_OK;
}

gk_status gk_model_truncate(gk_model *m, int64_t n_keep, gk_err *err)
{
    if (!m)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_truncate: the model is NULL");
    if (m->own_busy)
        return gk_err_set(err, GK_ERR_BUSY, "the model's own sequence slot is a gk_seq's (gk_seq_new took it)");
    return truncate_seq(m, n_keep, &m->n_past, &m->kv_hi, err);
}

int64_t gk_model_min_keep(const gk_model *m) { return m ? ring_min_keep(m, m->kv_hi) : 0; }

int64_t gk_model_n_ubatch(const gk_model *m) { return m ? m->n_ubatch : 0; }

/* ------------------------------------------------------------ sequences */

gk_status gk_seq_new(gk_model *m, gk_seq **out, gk_err *err)
{
    if (!m || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_new: %s is NULL", m ? "out" : "the model");
    *out = NULL;
    /* slots 1.. first; slot 0 is the model's own while its calls may want it */
    int64_t slot = -1;
    for (int64_t i = 1; i < m->n_slots && slot < 0; i++)
        if (!m->slot_used[i])
            slot = i;
    if (slot < 0 && !m->slot_used[0] && m->n_past == 0)
        slot = 0;
    if (slot < 0)
        return gk_err_set(err, GK_ERR_BUSY, "all %lld sequence slots of the model are in use (n_seq_max)",
                          (long long)m->n_slots);
    gk_seq *q = calloc(1, sizeof *q);
    if (q)
        q->ids = malloc((size_t)m->n_ctx * sizeof *q->ids);
    if (!q || !q->ids) {
        if (q)
            free(q);
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    }
    q->m = m;
    q->slot = slot;
    m->slot_used[slot] = true;
    if (slot == 0)
        m->own_busy = true;
    *out = q;
    return GK_OK;
}

void gk_seq_free(gk_seq *q)
{
    if (!q)
        return;
    q->m->slot_used[q->slot] = false;
    if (q->slot == 0) {
        q->m->own_busy = false;
        q->m->n_past = q->m->kv_hi = 0;
    }
    free(q->ids);
    free(q);
}

int64_t gk_seq_n_past(const gk_seq *q) { return q ? q->n_past : 0; }
const int32_t *gk_seq_ids(const gk_seq *q) { return q ? q->ids : NULL; }
int64_t gk_seq_min_keep(const gk_seq *q) { return q ? ring_min_keep(q->m, q->kv_hi) : 0; }

gk_status gk_seq_truncate(gk_seq *q, int64_t n_keep, gk_err *err)
{
    if (!q)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_truncate: the sequence is NULL");
    return truncate_seq(q->m, n_keep, &q->n_past, &q->kv_hi, err);
}

static seq_ref seq_of(gk_seq *q) { return (seq_ref){q->slot, &q->n_past, &q->kv_hi, q->ids}; }

gk_status gk_seq_decode(gk_model *m, const gk_seq_input *in, int64_t n_in, float *logits, gk_err *err);

/* Inputs too many tokens for one pass: each longer input in its own
 * micro-batches (its logits from the last row), then the one-token inputs
 * together through gk_seq_decode. */
static gk_status seq_decode_apart(gk_model *m, const gk_seq_input *in, int64_t n_in, float *logits, gk_err *err)
{
    int64_t V = m->cfg.n_vocab, n_one = 0;
    gk_status s = GK_OK;
    for (int64_t i = 0; s == GK_OK && i < n_in; i++) {
        const gk_seq_input *x = &in[i];
        if (x->n == 1) {
            n_one++;
            continue;
        }
        int64_t step = m->n_ubatch > 0 && m->n_ubatch < x->n ? m->n_ubatch : x->n;
        if (step > GK_SEQ_STEP_MAX)
            step = GK_SEQ_STEP_MAX;
        for (int64_t done = 0; s == GK_OK && done < x->n; done += step) {
            int64_t k = x->n - done < step ? x->n - done : step;
            s = forward_one(m, seq_of(x->seq), x->ids + done, k, NULL, err);
        }
        gk_tensor *last = NULL;
        if (s == GK_OK && logits)
            s = gk_model_run_last_logits(m, &last, err);
        if (s == GK_OK && logits)
            s = m->be.ops->buffer_read(m->be.state, last->data, 0, logits + i * V, (size_t)V * sizeof *logits, err);
    }
    m->ran = false;
    if (s != GK_OK || !n_one)
        return s;
    gk_seq_input *one = malloc((size_t)n_one * sizeof *one);
    float *rows = logits ? malloc((size_t)(n_one * V) * sizeof *rows) : NULL;
    if (!one || (logits && !rows)) {
        free(one);
        free(rows);
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0, j = 0; i < n_in; i++)
        if (in[i].n == 1)
            one[j++] = in[i];
    for (int64_t j = 0; s == GK_OK && j < n_one; j += GK_SEQ_STEP_MAX) /* a pass each GK_SEQ_STEP_MAX */
        s = gk_seq_decode(m, one + j, n_one - j < GK_SEQ_STEP_MAX ? n_one - j : GK_SEQ_STEP_MAX,
                          rows ? rows + j * V : NULL, err);
    for (int64_t i = 0, j = 0; s == GK_OK && logits && i < n_in; i++)
        if (in[i].n == 1)
            memcpy(logits + i * V, rows + (j++) * V, (size_t)V * sizeof *rows);
    free(one);
    free(rows);
    return s;
}

gk_status gk_seq_decode(gk_model *m, const gk_seq_input *in, int64_t n_in, float *logits, gk_err *err)
{
    if (!m || (!in && n_in > 0))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_decode: %s is NULL", m ? "in" : "the model");
    if (n_in < 0)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_decode: %lld inputs", (long long)n_in);
    int64_t V = m->cfg.n_vocab;
    for (int64_t i = 0; i < n_in; i++) {
        const gk_seq_input *x = &in[i];
        if (!x->seq || !x->ids || x->seq->m != m)
            return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_decode: input %lld has %s", (long long)i,
                              !x->seq ? "no sequence" : !x->ids ? "no ids" : "a sequence of another model");
        if (x->n < 1 || x->n > m->n_ctx - x->seq->n_past)
            return gk_err_set(err, GK_ERR_INVALID_ARG,
                              "gk_seq_decode: input %lld: %lld tokens after %lld cached ones (the context is %lld)",
                              (long long)i, (long long)x->n, (long long)x->seq->n_past, (long long)m->n_ctx);
        for (int64_t j = 0; j < x->n; j++)
            if (x->ids[j] < 0 || x->ids[j] >= V)
                return gk_err_set(err, GK_ERR_INVALID_ARG,
                                  "gk_seq_decode: input %lld: token id %d is outside the vocabulary of %lld",
                                  (long long)i, x->ids[j], (long long)V);
        for (int64_t k = 0; k < i; k++)
            if (in[k].seq == x->seq)
                return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_seq_decode: inputs %lld and %lld are one sequence",
                                  (long long)k, (long long)i);
    }
    gk_status s = GK_OK;
    m->ran = false; /* the model's own logits and nodes are not these */
    int64_t T = 0, n_max = 0;
    for (int64_t i = 0; i < n_in; i++) {
        T += in[i].n;
        n_max = in[i].n > n_max ? in[i].n : n_max;
    }
    int64_t step_max = m->n_ubatch > GK_SEQ_STEP_MAX ? m->n_ubatch : GK_SEQ_STEP_MAX;
    if (T > step_max || (m->n_ubatch > 0 && n_max > m->n_ubatch))
        return seq_decode_apart(m, in, n_in, logits, err);
    if (!T)
        return GK_OK;
    /* everything in one forward pass: prompt chunks and single tokens of
     * any sequences, each token at its sequence's position in its slot */
    if (!m->gb || m->gb->g.n_tokens != T) {
        gk_fgraph_destroy(m, m->gb);
        m->gb = NULL;
        s = gk_fgraph_build_mixed(m, T, &m->gb, err);
        if (s != GK_OK)
            return s;
    }
    int32_t *buf = malloc((size_t)(3 * T + n_in) * sizeof *buf);
    if (!buf)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    int32_t *ids = buf, *pos = buf + T, *slots = buf + 2 * T, *last = buf + 3 * T;
    for (int64_t i = 0, t = 0; i < n_in; i++) {
        for (int64_t j = 0; j < in[i].n; j++, t++) {
            ids[t] = in[i].ids[j];
            pos[t] = (int32_t)(in[i].seq->n_past + j);
            slots[t] = (int32_t)in[i].seq->slot;
        }
        last[i] = (int32_t)(t - 1);
    }
    s = write_inputs(m, m->gb, ids, T, pos, 0, slots, 0, err);
    if (s == GK_OK)
        s = run(m, m->gb, err);
    if (s == GK_OK) {
        for (int64_t i = 0; i < n_in; i++) {
            gk_seq *q = in[i].seq;
            memcpy(q->ids + q->n_past, in[i].ids, (size_t)in[i].n * sizeof *q->ids);
            q->n_past += in[i].n;
            gk_kv_wrote(&q->kv_hi, q->n_past);
        }
    }
    /* the head on each input's last row only */
    gk_fgraph *f = m->gb;
    if (s == GK_OK && logits && (!f->head || f->head->g.n_tokens != n_in)) {
        gk_fgraph_destroy(m, f->head);
        f->head = NULL;
        s = gk_fgraph_build_head_rows(m, f->out, n_in, &f->head, err);
    }
    if (s == GK_OK && logits)
        s = m->be.ops->buffer_write(m->be.state, f->head->ids->data, 0, last, (size_t)n_in * sizeof *last, err);
    if (s == GK_OK && logits)
        s = run(m, f->head, err);
    if (s == GK_OK && logits)
        s = m->be.ops->buffer_read(m->be.state, f->head->out->data, 0, logits, gk_tensor_nbytes(f->head->out), err);
    free(buf);
    return s;
}

int64_t gk_model_cache_rows(const gk_model *m, int64_t il)
{
    if (!m || il < 0 || il >= m->cfg.n_layer || !m->srows)
        return 0;
    return m->srows[il];
}

/* ------------------------------------------------------- node access */

static const gk_node *node_at(const gk_model *m, size_t i)
{
    if (!m || !m->ran)
        return NULL;
    size_t nf = m->fwd ? m->fwd->g.n_nodes : 0;
    if (i < nf)
        return &m->fwd->g.nodes[i];
    i -= nf;
    if (m->fwd && m->fwd->head && i < m->fwd->head->g.n_nodes)
        return &m->fwd->head->g.nodes[i];
    return NULL;
}

size_t gk_model_node_count(const gk_model *m)
{
    if (!m || !m->ran)
        return 0;
    return (m->fwd ? m->fwd->g.n_nodes : 0) + (m->fwd && m->fwd->head ? m->fwd->head->g.n_nodes : 0);
}

gk_status gk_model_node_info(const gk_model *m, size_t i, const char **name, int *layer, int64_t *rows,
                             int64_t *cols)
{
    const gk_node *nd = node_at(m, i);
    if (!nd)
        return GK_ERR_INVALID_ARG;
    if (name)
        *name = nd->dst->name;
    if (layer)
        *layer = nd->dst->layer;
    if (rows)
        *rows = nd->dst->rows;
    if (cols)
        *cols = nd->dst->cols;
    return GK_OK;
}

gk_status gk_model_node_read(gk_model *m, size_t i, float *dst, gk_err *err)
{
    if (!dst)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_model_node_read: dst is NULL");
    const gk_node *nd = node_at(m, i);
    if (!nd)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "no node %zu (%zu after the last forward call)", i,
                          gk_model_node_count(m));
    return m->be.ops->buffer_read(m->be.state, nd->dst->data, 0, dst, gk_tensor_nbytes(nd->dst), err);
}
