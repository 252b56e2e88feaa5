/* cpu_ref.c - the reference backend: every graph op as plain C loops on host
 * memory, matching HuggingFace transformers run in float32.
 *
 * It is the oracle the other backends are compared against, so it is written
 * to be read, not to be fast: one obvious loop nest per op, float math in the
 * order transformers does it, no SIMD, no threads, no blocking. Buffers are
 * malloc'd host memory. Every node is checked (dtypes and shapes) before it
 * runs; a bad node or a bad id/position is an error status naming the op and
 * tensor, never a crash.
 *
 * It deliberately is not: a fast CPU backend, or a place for ops the graph
 * header does not define.
 */
#include "gk/gk_plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cpu_state {
    gk_host host;
    /* libgk's F16 and BF16 conversions of every 16-bit pattern, so the inner
     * loops index a table instead of calling into libgk per element. */
    float f16[65536], bf16[65536];
} cpu_state;

/* ------------------------------------------------------------ element access */

/* Element idx of a weight tensor (F32, F16 or BF16) as float. */
static float weight_at(const cpu_state *cs, const gk_tensor *t, int64_t idx)
{
    switch (t->dtype) {
    case GK_DTYPE_F16: return cs->f16[((const uint16_t *)t->data)[idx]];
    case GK_DTYPE_BF16: return cs->bf16[((const uint16_t *)t->data)[idx]];
    default: return ((const float *)t->data)[idx];
    }
}

/* Row r of weight W [out][n] dotted with x [n], accumulated in float. */
static float dot_weight_row(const cpu_state *cs, const gk_tensor *w, int64_t r, const float *x,
                            int64_t n)
{
    float acc = 0.0f;
    if (w->dtype == GK_DTYPE_F32) {
        const float *row = (const float *)w->data + r * n;
        for (int64_t i = 0; i < n; i++)
            acc += row[i] * x[i];
    } else {
        const float *to_f32 = w->dtype == GK_DTYPE_F16 ? cs->f16 : cs->bf16;
        const uint16_t *row = (const uint16_t *)w->data + r * n;
        for (int64_t i = 0; i < n; i++)
            acc += to_f32[row[i]] * x[i];
    }
    return acc;
}

static float *f32(const gk_tensor *t) { return (float *)t->data; }
static const int32_t *i32(const gk_tensor *t) { return (const int32_t *)t->data; }

/* -------------------------------------------------------------------- ops */

/* dst[t] = table[ids[t]] as float. */
static gk_status op_get_rows(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *table = nd->src[0], *ids = nd->src[1];
    int64_t n = ids->cols, d = table->cols;
    for (int64_t t = 0; t < n; t++) {
        int32_t id = i32(ids)[t];
        if (id < 0 || id >= table->rows)
            return gk_err_set(err, GK_ERR_INVALID_ARG,
                              "cpu_ref: get_rows: id %d at %lld outside '%.48s' of %lld rows",
                              (int)id, (long long)t, table->name, (long long)table->rows);
    }
    for (int64_t t = 0; t < n; t++) {
        int64_t id = i32(ids)[t];
        for (int64_t j = 0; j < d; j++)
            f32(nd->dst)[t * d + j] = weight_at(cs, table, id * d + j);
    }
    return GK_OK;
}

static gk_status op_add(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++)
        f32(nd->dst)[e] = f32(nd->src[0])[e] + f32(nd->src[1])[e];
    return GK_OK;
}

/* torch.nn.LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance. */
static gk_status op_layer_norm(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    int64_t n = x->rows, d = x->cols;
    float eps = nd->f[0];
    for (int64_t t = 0; t < n; t++) {
        const float *xr = f32(x) + t * d;
        float *yr = f32(nd->dst) + t * d;
        /* reductions in double: the oracle should not carry the rounding of
         * a long sequential float sum (torch reduces pairwise) */
        double sum = 0.0;
        for (int64_t j = 0; j < d; j++)
            sum += xr[j];
        float mean = (float)(sum / (double)d);
        double sq = 0.0;
        for (int64_t j = 0; j < d; j++)
            sq += ((double)xr[j] - mean) * ((double)xr[j] - mean);
        float rstd = (float)(1.0 / sqrt(sq / (double)d + eps));
        for (int64_t j = 0; j < d; j++) {
            float y = (xr[j] - mean) * rstd * weight_at(cs, w, j);
            yr[j] = b ? y + weight_at(cs, b, j) : y;
        }
    }
    return GK_OK;
}

/* LlamaRMSNorm per group of G columns: w * (x * rsqrt(mean(x^2) + eps)); with
 * a weight offset f[1] (1.4) GemmaRMSNorm's (offset + w) in float. */
static gk_status op_rms_norm(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1];
    int64_t n = x->rows, d = x->cols;
    int64_t g = nd->i[0] == 0 ? d : nd->i[0];
    float eps = nd->f[0], offset = nd->f[1];
    for (int64_t t = 0; t < n; t++) {
        for (int64_t g0 = 0; g0 < d; g0 += g) {
            const float *xr = f32(x) + t * d + g0;
            float *yr = f32(nd->dst) + t * d + g0;
            double sq = 0.0; /* in double, as in layer norm */
            for (int64_t j = 0; j < g; j++)
                sq += (double)xr[j] * xr[j];
            float r = (float)(1.0 / sqrt(sq / (double)g + eps));
            for (int64_t j = 0; j < g; j++) {
                /* offset 0 multiplies by w itself (a -0 weight stays -0) */
                float wj = offset != 0.0f ? offset + weight_at(cs, w, j) : weight_at(cs, w, j);
                yr[j] = wj * (xr[j] * r);
            }
        }
    }
    return GK_OK;
}

/* dst = x W^T (+ bias); W rows are contiguous, so each output is one dot. */
static gk_status op_linear(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    int64_t n = x->rows, in = x->cols, out = w->rows;
    for (int64_t o = 0; o < out; o++) {
        float bo = b ? weight_at(cs, b, o) : 0.0f;
        for (int64_t t = 0; t < n; t++) {
            float acc = dot_weight_row(cs, w, o, f32(x) + t * in, in);
            f32(nd->dst)[t * out + o] = b ? acc + bo : acc;
        }
    }
    return GK_OK;
}

/* HF rotate-half RoPE. As in transformers, the angle pos * inv_freq is a
 * float32 product and cos/sin are scaled by f[0] (attention_scaling). With a
 * rotary_dim r < hd (1.4, partial rotary) the halves are those of the first r
 * columns of each head and the other hd - r columns are copied. */
static gk_status op_rope(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *pos = nd->src[1], *inv_freq = nd->src[2];
    int64_t n = x->rows, d = x->cols, hd = nd->i[0];
    int64_t rot = nd->i[1] == 0 ? hd : nd->i[1], half = rot / 2;
    float scale = nd->f[0];
    for (int64_t t = 0; t < n; t++)
        for (int64_t h0 = 0; h0 < d; h0 += hd)
            for (int64_t e = rot; e < hd; e++)
                f32(nd->dst)[t * d + h0 + e] = f32(x)[t * d + h0 + e];
    for (int64_t t = 0; t < n; t++) {
        for (int64_t i = 0; i < half; i++) {
            float angle = (float)i32(pos)[t] * f32(inv_freq)[i];
            float c = cosf(angle) * scale, s = sinf(angle) * scale;
            for (int64_t h0 = 0; h0 < d; h0 += hd) {
                const float *xr = f32(x) + t * d + h0;
                float *yr = f32(nd->dst) + t * d + h0;
                float x1 = xr[i], x2 = xr[i + half];
                yr[i] = x1 * c - x2 * s;
                yr[i + half] = x2 * c + x1 * s;
            }
        }
    }
    return GK_OK;
}

/* n floats into cache c (F32, F16 or BF16) from element off on, rounded to
 * nearest even as the cache dtype; a GPU backend's stores round the same way. */
static void cache_store(const gk_tensor *c, int64_t off, const float *x, int64_t n)
{
    if (c->dtype == GK_DTYPE_F32) {
        memcpy((float *)c->data + off, x, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = (uint16_t *)c->data + off;
    for (int64_t i = 0; i < n; i++)
        d[i] = c->dtype == GK_DTYPE_F16 ? gk_f32_to_f16(x[i]) : gk_f32_to_bf16(x[i]);
}

/* Store k, v at cache rows pos[t] (in the caches' dtype: F32, or F16/BF16 as
 * the model's KV cache is kept); then each query head attends causally to
 * cache rows 0..pos[t] of its kv head (GQA: H/Hkv query heads share one),
 * reading the stored values. (1.4) A window W > 0 keeps only rows
 * pos[t] - W < j; a softcap c > 0 turns each score s into c * tanh(s / c)
 * (Gemma 2) before the softmax. */
static gk_status op_attn(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *q = nd->src[0], *k = nd->src[1], *v = nd->src[2], *pos = nd->src[3];
    const gk_tensor *kc = nd->src[4], *vc = nd->src[5];
    int64_t n = q->rows, rows = kc->rows;
    int64_t nh = nd->i[0], nkv = nd->i[1], hd = nd->i[2], group = nh / nkv;
    int64_t qw = nh * hd, kvw = nkv * hd;
    int64_t window = nd->i[3];
    float scale = nd->f[0], cap = nd->f[1];
    bool ring = nd->f[2] != 0.0f; /* position p in row p % rows */
    /* (1.5) slots of S rows: token t's are rows slot[t] * S .. (src3 row 1) */
    int64_t S = (int64_t)fabsf(nd->f[3]), n_slot = 1;
    const int32_t *slot = S > 0 ? i32(pos) + n : NULL;
    if (S > 0) {
        n_slot = rows / S;
        rows = S;
    }

    for (int64_t t = 0; t < n; t++) {
        int32_t p = i32(pos)[t];
        if (p < 0 || (!ring && p >= rows))
            return gk_err_set(err, GK_ERR_INVALID_ARG,
                              "cpu_ref: attn: position %d at %lld outside the %lld rows of '%.48s'",
                              (int)p, (long long)t, (long long)rows, kc->name);
        if (slot && (slot[t] < 0 || slot[t] >= n_slot))
            return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: attn: slot %d at %lld outside the %lld of '%.48s'",
                              (int)slot[t], (long long)t, (long long)n_slot, kc->name);
    }
    /* a ring: what the node stores must not overwrite a key one of its
     * tokens sees, so two tokens of one slot at p < q need q - p + W <= rows */
    for (int64_t t = 0; ring && t < n; t++)
        for (int64_t u = t + 1; u < n; u++) {
            int64_t d = (int64_t)i32(pos)[t] - i32(pos)[u];
            if ((!slot || slot[t] == slot[u]) && (d < 0 ? -d : d) + window > rows)
                return gk_err_set(err, GK_ERR_INVALID_ARG,
                                  "cpu_ref: attn: a ring cache of %lld rows cannot serve positions %d and %d of one "
                                  "sequence with a window of %lld",
                                  (long long)rows, (int)i32(pos)[t], (int)i32(pos)[u], (long long)window);
        }
    float *prob = malloc((size_t)rows * sizeof *prob);  /* the scores of the <= rows keys seen */
    if (!prob)
        return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: attn: %zu bytes of scores",
                          (size_t)rows * sizeof *prob);

    for (int64_t t = 0; t < n; t++) {
        int64_t r = (slot ? slot[t] * rows : 0) + i32(pos)[t] % rows;
        cache_store(kc, r * kvw, f32(k) + t * kvw, kvw);
        cache_store(vc, r * kvw, f32(v) + t * kvw, kvw);
    }
    for (int64_t t = 0; t < n; t++) {
        int64_t p = i32(pos)[t], base = slot ? slot[t] * rows * kvw : 0;
        int64_t j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;  /* first position seen */
        for (int64_t h = 0; h < nh; h++) {
            int64_t kvh = h / group;
            const float *qr = f32(q) + t * qw + h * hd;
            float *out = f32(nd->dst) + t * qw + h * hd;

            float max = -INFINITY; /* prob[j - j0]: the score of position j */
            for (int64_t j = j0; j <= p; j++) {
                int64_t kr = base + j % rows * kvw + kvh * hd;
                float s = 0.0f;
                for (int64_t e = 0; e < hd; e++)
                    s += qr[e] * weight_at(cs, kc, kr + e);
                prob[j - j0] = s * scale;
                if (cap > 0.0f)
                    prob[j - j0] = cap * tanhf(prob[j - j0] / cap);
                if (prob[j - j0] > max)
                    max = prob[j - j0];
            }
            float sum = 0.0f;
            for (int64_t j = j0; j <= p; j++) {
                prob[j - j0] = expf(prob[j - j0] - max);
                sum += prob[j - j0];
            }
            for (int64_t j = j0; j <= p; j++)
                prob[j - j0] /= sum;

            for (int64_t e = 0; e < hd; e++)
                out[e] = 0.0f;
            for (int64_t j = j0; j <= p; j++) {
                int64_t vr = base + j % rows * kvw + kvh * hd;
                for (int64_t e = 0; e < hd; e++)
                    out[e] += prob[j - j0] * weight_at(cs, vc, vr + e);
            }
        }
    }
    free(prob);
    return GK_OK;
}

/* GPT-2's gelu_new, which is also gelu_pytorch_tanh (GK_OP_GEGLU's i[0] = 0). */
static float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f;  /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static gk_status op_gelu_tanh(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++)
        f32(nd->dst)[e] = gelu_tanh(f32(nd->src[0])[e]);
    return GK_OK;
}

static gk_status op_silu_mul(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++) {
        float g = f32(nd->src[0])[e];
        f32(nd->dst)[e] = g / (1.0f + expf(-g)) * f32(nd->src[1])[e];
    }
    return GK_OK;
}

/* ------------------------------------------------- the 1.4 vocabulary */

/* x * y, y of [n][D] or a [1][D] row for every token, F32 or a weight dtype. */
static gk_status op_mul(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *y = nd->src[1];
    int64_t n = x->rows, d = x->cols;
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < d; j++) {
            int64_t yi = (y->rows == 1 ? 0 : t * d) + j;
            f32(nd->dst)[t * d + j] = f32(x)[t * d + j] * weight_at(cs, y, yi);
        }
    return GK_OK;
}

static gk_status op_scale(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++)
        f32(nd->dst)[e] = f32(nd->src[0])[e] * nd->f[0] + nd->f[1];
    return GK_OK;
}

/* Gemma 2's cap: c * tanh(x / c). */
static gk_status op_softcap(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    float c = nd->f[0];
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++)
        f32(nd->dst)[e] = c * tanhf(f32(nd->src[0])[e] / c);
    return GK_OK;
}

/* torch.nn.functional.gelu(x), approximate='none'. */
static float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static gk_status op_gelu(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++)
        f32(nd->dst)[e] = gelu_erf(f32(nd->src[0])[e]);
    return GK_OK;
}

/* gelu(gate) * up; i[0] 0 = tanh GELU, 1 = exact GELU. */
static gk_status op_geglu(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int64_t ne = gk_tensor_nelem(nd->dst);
    for (int64_t e = 0; e < ne; e++) {
        float g = f32(nd->src[0])[e];
        f32(nd->dst)[e] = (nd->i[0] == 1 ? gelu_erf(g) : gelu_tanh(g)) * f32(nd->src[1])[e];
    }
    return GK_OK;
}

/* Row-wise softmax: exp(x - max) / sum, the sum in double. */
static gk_status op_softmax(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0];
    int64_t n = x->rows, d = x->cols;
    for (int64_t t = 0; t < n; t++) {
        const float *xr = f32(x) + t * d;
        float *yr = f32(nd->dst) + t * d;
        float max = -INFINITY;
        for (int64_t j = 0; j < d; j++)
            if (xr[j] > max)
                max = xr[j];
        double sum = 0.0;
        for (int64_t j = 0; j < d; j++) {
            yr[j] = expf(xr[j] - max);
            sum += yr[j];
        }
        for (int64_t j = 0; j < d; j++)
            yr[j] = (float)(yr[j] / sum);
    }
    return GK_OK;
}

/* a ranks above b: larger, a NaN below every number. */
static bool ranks_above(float a, float b) { return !isnan(a) && (isnan(b) || a > b); }

/* The columns of the k largest values of each row, largest first; of equal
 * values the lower column first. k passes of a plain arg-max. */
static gk_status op_topk(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0];
    int64_t n = x->rows, ne = x->cols, k = nd->i[0];
    bool *taken = malloc((size_t)ne * sizeof *taken);  /* [E] */
    if (!taken)
        return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: topk: %zu bytes", (size_t)ne * sizeof *taken);
    for (int64_t t = 0; t < n; t++) {
        const float *xr = f32(x) + t * ne;
        memset(taken, 0, (size_t)ne * sizeof *taken);
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < ne; e++)
                if (!taken[e] && (best < 0 || ranks_above(xr[e], xr[best])))
                    best = e;
            taken[best] = true;
            ((int32_t *)nd->dst->data)[t * k + j] = (int32_t)best;
        }
    }
    free(taken);
    return GK_OK;
}

/* dst[t][j] = x[t][ids[t][j]]; an id outside [0, E) gives 0 (the builder's
 * ids come from topk, so one out of range is a bug upstream; nothing outside
 * the row is read). */
static gk_status op_gather(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *ids = nd->src[1];
    int64_t n = x->rows, ne = x->cols, k = ids->cols;
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++) {
            int64_t id = i32(ids)[t * k + j];
            f32(nd->dst)[t * k + j] = id >= 0 && id < ne ? f32(x)[t * ne + id] : 0.0f;
        }
    return GK_OK;
}

/* Block j of row t = x_j W_e^T with e = ids[t][j], W_e the rows e*out .. of
 * the stacked weight; x_j is the whole row of x [n][in] or block j of x
 * [n][k*in]. Only the selected experts' rows are read; an expert id outside
 * [0, E) gives a block of zeros. */
static gk_status op_linear_id(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1], *ids = nd->src[2];
    int64_t n = x->rows, k = ids->cols, in = w->cols, n_exp = nd->i[0];
    int64_t out = w->rows / n_exp, xc = x->cols;
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++) {
            int64_t e = i32(ids)[t * k + j];
            const float *xj = f32(x) + t * xc + (xc == in ? 0 : j * in);
            float *yj = f32(nd->dst) + t * k * out + j * out;
            for (int64_t o = 0; o < out; o++)
                yj[o] = e >= 0 && e < n_exp ? dot_weight_row(cs, w, e * out + o, xj, in) : 0.0f;
        }
    return GK_OK;
}

/* dst[t] = sum over j ascending of w[t][j] * block j of x[t], in float. */
static gk_status op_moe_sum(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    const gk_tensor *x = nd->src[0], *w = nd->src[1];
    int64_t n = x->rows, k = w->cols, d = x->cols / k;
    for (int64_t t = 0; t < n; t++)
        for (int64_t c = 0; c < d; c++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < k; j++)
                acc += f32(w)[t * k + j] * f32(x)[t * k * d + j * d + c];
            f32(nd->dst)[t * d + c] = acc;
        }
    return GK_OK;
}

/* ---------------------------------------------------------------- checking */

#define DT(x) (1u << (x))
#define DT_WEIGHT (DT(GK_DTYPE_F32) | DT(GK_DTYPE_F16) | DT(GK_DTYPE_BF16))
#define DT_ACT DT(GK_DTYPE_F32)
#define DT_INT DT(GK_DTYPE_I32)
#define ANY (-1)  /* a size need() does not check */

static const char *dt_name(gk_dtype d)
{
    const char *s = gk_dtype_name(d);
    return s ? s : "?";
}

static const char *accepted(unsigned mask)
{
    if (mask == DT_WEIGHT) return "F32, F16 or BF16";
    if (mask == DT_INT) return "I32";
    return "F32";
}

/* Slot `slot` of node nd (-1 = dst), called `role` in messages: present,
 * of an accepted dtype, [rows][cols] (ANY = not checked), non-empty, and
 * with data when `run`. */
static gk_status need(const gk_node *nd, int slot, const char *role, unsigned dtypes,
                      int64_t rows, int64_t cols, bool run, gk_err *err)
{
    const char *op = gk_op_name(nd->op);
    const gk_tensor *t = slot < 0 ? nd->dst : nd->src[slot];
    if (!t)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: %s: %s is missing", op, role);
    if ((unsigned)t->dtype >= 32 || !(dtypes & DT(t->dtype)))
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "cpu_ref: %s: %s '%.48s' is %s, want %s",
                          op, role, t->name, dt_name(t->dtype), accepted(dtypes));
    if (t->rows < 1 || t->cols < 1 || (rows != ANY && t->rows != rows) ||
        (cols != ANY && t->cols != cols)) {
        char r[24] = "*", c[24] = "*";
        if (rows != ANY)
            snprintf(r, sizeof r, "%lld", (long long)rows);
        if (cols != ANY)
            snprintf(c, sizeof c, "%lld", (long long)cols);
        return gk_err_set(err, GK_ERR_INVALID_ARG,
                          "cpu_ref: %s: %s '%.48s' is [%lld][%lld], want [%s][%s] (non-empty)",
                          op, role, t->name, (long long)t->rows, (long long)t->cols, r, c);
    }
    if (run && !t->data)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: %s: %s '%.48s' has no data", op,
                          role, t->name);
    return GK_OK;
}

static gk_status bad_param(const gk_node *nd, gk_err *err, const char *what)
{
    return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: %s -> '%.48s': %s",
                      gk_op_name(nd->op), nd->dst ? nd->dst->name : "", what);
}

/* Whether nd is an op this backend runs, with dtypes and shapes that agree.
 * With `run`, also that every tensor has data and dst shares none with a
 * source. Each chain stops at the first failure, so a later shape may read a
 * tensor an earlier check proved present. */
static gk_status check_node(const gk_node *nd, bool run, gk_err *err)
{
    gk_status s = GK_OK;
    const gk_tensor *x = nd->src[0], *y = nd->src[1];

    switch (nd->op) {
    case GK_OP_GET_ROWS:
        if ((s = need(nd, 0, "table", DT_WEIGHT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "ids", DT_INT, 1, ANY, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, y->cols, x->cols, run, err)))
            return s;
        break;
    case GK_OP_ADD:
    case GK_OP_SILU_MUL:
        if ((s = need(nd, 0, "a", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "b", DT_ACT, x->rows, x->cols, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_GELU_TANH:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_LAYER_NORM:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "weight", DT_WEIGHT, 1, x->cols, run, err)) ||
            (nd->src[2] && (s = need(nd, 2, "bias", DT_WEIGHT, 1, x->cols, run, err))) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_RMS_NORM: {
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)))
            return s;
        int64_t g = nd->i[0] == 0 ? x->cols : nd->i[0];
        if (g < 1 || x->cols % g != 0)
            return bad_param(nd, err, "group size i[0] must divide the columns");
        if (!isfinite(nd->f[1]))
            return bad_param(nd, err, "weight offset f[1] must be finite");
        if ((s = need(nd, 1, "weight", DT_WEIGHT, 1, g, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    }
    case GK_OP_LINEAR:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "weight", DT_WEIGHT, ANY, x->cols, run, err)) ||
            (nd->src[2] && (s = need(nd, 2, "bias", DT_WEIGHT, 1, y->rows, run, err))) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, y->rows, run, err)))
            return s;
        break;
    case GK_OP_ROPE: {
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)))
            return s;
        int64_t hd = nd->i[0], rot = nd->i[1] == 0 ? hd : nd->i[1];
        if (hd < 2 || hd % 2 != 0 || x->cols % hd != 0)
            return bad_param(nd, err, "head dim i[0] must be even and divide the columns");
        if (rot < 2 || rot % 2 != 0 || rot > hd)
            return bad_param(nd, err, "rotary dim i[1] must be 0 or even, >= 2 and <= head dim i[0]");
        if ((s = need(nd, 1, "pos", DT_INT, 1, x->rows, run, err)) ||
            (s = need(nd, 2, "inv_freq", DT_ACT, 1, rot / 2, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    }
    case GK_OP_ATTN: {
        int64_t nh = nd->i[0], nkv = nd->i[1], hd = nd->i[2];
        if (nh < 1 || nkv < 1 || hd < 1 || nh % nkv != 0)
            return bad_param(nd, err, "heads i[0] must be a multiple of kv heads i[1] "
                                      "and head dim i[2] positive");
        if (nd->i[3] < 0 || !(nd->f[1] >= 0.0f && isfinite(nd->f[1])))
            return bad_param(nd, err, "window i[3] must be >= 0 and softcap f[1] finite and >= 0");
        if (nd->f[2] != 0.0f && nd->i[3] <= 0)
            return bad_param(nd, err, "a ring cache (f[2]) needs a window i[3]");
        int64_t S = (int64_t)fabsf(nd->f[3]);
        if (nd->f[3] != (float)(nd->f[3] < 0 ? -S : S) || (S > 0 && nd->src[4]->rows % S != 0))
            return bad_param(nd, err, "slot rows f[3] must be a whole number dividing the cache's rows");
        if ((s = need(nd, 3, "pos", DT_INT, S > 0 ? 2 : 1, x->rows, run, err)))
            return s;
        if ((s = need(nd, 0, "q", DT_ACT, ANY, nh * hd, run, err)) ||
            (s = need(nd, 1, "k", DT_ACT, x->rows, nkv * hd, run, err)) ||
            (s = need(nd, 2, "v", DT_ACT, x->rows, nkv * hd, run, err)) ||
            (s = need(nd, 4, "k cache", DT_WEIGHT, ANY, nkv * hd, run, err)) ||
            (s = need(nd, 5, "v cache", DT(nd->src[4]->dtype), nd->src[4]->rows, nkv * hd, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, nh * hd, run, err)))
            return s;
        break;
    }
    case GK_OP_SAMPLE: {
        float temp = nd->f[0], top_p = nd->f[1];
        if (!(temp >= 0.0f && isfinite(temp)) || !(top_p > 0.0f && top_p <= 1.0f) || nd->i[0] < 0)
            return bad_param(nd, err, "temperature f[0] must be finite and >= 0, top_p f[1] in (0, 1] "
                                      "and top_k i[0] >= 0");
        float min_p = nd->f[2];
        if (!(min_p >= 0.0f && min_p <= 1.0f) || nd->i[1] < 0)
            return bad_param(nd, err, "min_p f[2] must be in [0, 1] and the penalty window i[1] >= 0");
        if ((s = need(nd, 0, "logits", DT_ACT, 1, ANY, run, err)) ||
            (s = need(nd, 1, "ctl", DT_INT, 1, 4, run, err)) ||
            (nd->src[2] && (s = need(nd, 2, "pos", DT_INT, 1, 1, run, err))) ||
            (nd->i[1] > 0 && ((s = need(nd, 3, "ring", DT_INT, 1, ANY, run, err)) ||
                              (s = need(nd, 4, "penalties", DT_ACT, 1, 4, run, err)))) ||
            (s = need(nd, -1, "dst", DT_INT, 1, 1, run, err)))
            return s;
        if (x->cols > INT32_MAX)
            return bad_param(nd, err, "more than 2^31 - 1 logits");
        break;
    }
    case GK_OP_MUL:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "y", DT_WEIGHT, y && y->rows == 1 ? 1 : x->rows, x->cols, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_SOFTCAP:
        if (!(nd->f[0] > 0.0f && isfinite(nd->f[0])))
            return bad_param(nd, err, "cap f[0] must be finite and > 0");
        /* fall through */
    case GK_OP_SCALE:
    case GK_OP_GELU:
    case GK_OP_SOFTMAX:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_GEGLU:
        if (nd->i[0] != 0 && nd->i[0] != 1)
            return bad_param(nd, err, "i[0] must be 0 (tanh GELU) or 1 (exact GELU)");
        if ((s = need(nd, 0, "gate", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "up", DT_ACT, x->rows, x->cols, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols, run, err)))
            return s;
        break;
    case GK_OP_TOPK:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)))
            return s;
        if (nd->i[0] < 1 || nd->i[0] > x->cols || x->cols > INT32_MAX)
            return bad_param(nd, err, "k i[0] must be in [1, columns of x] (at most 2^31 - 1)");
        if ((s = need(nd, -1, "dst", DT_INT, x->rows, nd->i[0], run, err)))
            return s;
        break;
    case GK_OP_GATHER:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "ids", DT_INT, x->rows, ANY, run, err)) ||
            (s = need(nd, -1, "dst", DT_ACT, x->rows, y->cols, run, err)))
            return s;
        break;
    case GK_OP_LINEAR_ID: {
        const gk_tensor *ids = nd->src[2];
        int64_t n_exp = nd->i[0];
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "weight", DT_WEIGHT, ANY, ANY, run, err)))
            return s;
        if (n_exp < 1 || y->rows % n_exp != 0)
            return bad_param(nd, err, "expert count i[0] must be >= 1 and divide the weight's rows");
        if ((s = need(nd, 2, "ids", DT_INT, x->rows, ANY, run, err)))
            return s;
        int64_t in = y->cols, k = ids->cols, out = y->rows / n_exp;
        if (x->cols != in && (x->cols % k != 0 || x->cols / k != in))
            return bad_param(nd, err, "x must have the weight's columns (in) or k * in");
        if (nd->src[3])
            return bad_param(nd, err, "no bias operand (src3)");
        if ((s = need(nd, -1, "dst", DT_ACT, x->rows, k * out, run, err)))
            return s;
        break;
    }
    case GK_OP_MOE_SUM:
        if ((s = need(nd, 0, "x", DT_ACT, ANY, ANY, run, err)) ||
            (s = need(nd, 1, "weights", DT_ACT, x->rows, ANY, run, err)))
            return s;
        if (x->cols % y->cols != 0)
            return bad_param(nd, err, "x's columns must be k (the weights' columns) times D");
        if ((s = need(nd, -1, "dst", DT_ACT, x->rows, x->cols / y->cols, run, err)))
            return s;
        break;
    default:
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "cpu_ref: unknown op %d", (int)nd->op);
    }

    if (run) {
        for (int k = 0; k < GK_MAX_SRC; k++)
            if (nd->src[k] && nd->src[k]->data == nd->dst->data)
                return gk_err_set(err, GK_ERR_INVALID_ARG,
                                  "cpu_ref: %s: dst '%.48s' aliases source '%.48s'",
                                  gk_op_name(nd->op), nd->dst->name, nd->src[k]->name);
    }
    return GK_OK;
}

/* ------------------------------------------------------------- ops table */

static gk_status cpu_init(const gk_host *host, void **state, gk_err *err)
{
    cpu_state *s = calloc(1, sizeof *s);
    if (!s)
        return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: %zu bytes of state", sizeof *s);
    if (host)
        s->host = *host;
    for (uint32_t h = 0; h < 65536; h++) {
        s->f16[h] = gk_f16_to_f32((uint16_t)h);
        s->bf16[h] = gk_bf16_to_f32((uint16_t)h);
    }
    *state = s;
    return GK_OK;
}

static void cpu_fini(void *state) { free(state); }

static bool cpu_available(void *state, char *why, size_t why_len)
{
    return true;
}

static gk_status cpu_device_props(void *state, gk_device_props *out, gk_err *err)
{
    long page = sysconf(_SC_PAGESIZE);
    long total = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "cpu");
    out->mem_total = page > 0 && total > 0 ? (uint64_t)page * (uint64_t)total : 0;
    out->mem_free = page > 0 && avail > 0 ? (uint64_t)page * (uint64_t)avail : 0;
    out->peak_bw_gbs = 0.0;
    out->is_gpu = false;
    return GK_OK;
}

static gk_status cpu_buffer_alloc(void *state, size_t nbytes, void **out, gk_err *err)
{
    *out = malloc(nbytes ? nbytes : 1);
    if (!*out)
        return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: cannot allocate %zu bytes", nbytes);
    return GK_OK;
}

static void cpu_buffer_free(void *state, void *buf) { free(buf); }

static gk_status cpu_buffer_write(void *state, void *buf, size_t offset, const void *src,
                                  size_t nbytes, gk_err *err)
{
    if (nbytes == 0)
        return GK_OK;
    if (!buf || !src)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: buffer_write to/from NULL");
    memcpy((char *)buf + offset, src, nbytes);
    return GK_OK;
}

static gk_status cpu_buffer_read(void *state, const void *buf, size_t offset, void *dst,
                                 size_t nbytes, gk_err *err)
{
    if (nbytes == 0)
        return GK_OK;
    if (!buf || !dst)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: buffer_read to/from NULL");
    memcpy(dst, (const char *)buf + offset, nbytes);
    return GK_OK;
}

/* The token gk_sample picks, with the generator after ctl[2] draws from the
 * seed in ctl[0..1]; then the step and the position move on. */
static gk_status op_sample(const cpu_state *cs, const gk_node *nd, gk_err *err)
{
    int32_t *ctl = (int32_t *)nd->src[1]->data;
    uint64_t seed = (uint64_t)(uint32_t)ctl[0] | (uint64_t)(uint32_t)ctl[1] << 32;
    gk_rng r_;
    gk_rng_seed(&r_, seed);
    r_.s += (uint64_t)(uint32_t)ctl[2] * 0x9E3779B97F4A7C15ull; /* splitmix64's step per draw */
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = nd->f[0];
    o.top_k = nd->i[0];
    o.top_p = nd->f[1];
    o.min_p = nd->f[2];
    /* (ABI 1.3) the penalties over the ring's last min(W, ctl[3], R) ids */
    int32_t *ring = nd->i[1] > 0 ? (int32_t *)nd->src[3]->data : NULL, *hist = NULL;
    int64_t r = ring ? nd->src[3]->cols : 0, total = ring && ctl[3] > 0 ? ctl[3] : 0, w = 0;
    if (ring) {
        const float *pen = f32(nd->src[4]);
        o.repetition_penalty = pen[0];
        o.presence_penalty = pen[1];
        o.frequency_penalty = pen[2];
        w = nd->i[1] < total ? nd->i[1] : total;
        if (w > r)
            w = r;
        o.penalty_last_n = w;
        if (w > 0 && !(hist = malloc((size_t)w * sizeof *hist)))
            return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: sample: out of memory");
        for (int64_t j = 0; j < w; j++)
            hist[j] = ring[(total - w + j) % r];
    }
    int32_t t = gk_sample_ex(f32(nd->src[0]), nd->src[0]->cols, &o, hist, w, &r_);
    free(hist);
    if (t < 0)
        return gk_err_set(err, GK_ERR_NOMEM, "cpu_ref: sample: out of memory or an option out of range");
    *(int32_t *)nd->dst->data = t;
    ctl[2]++;
    if (ring) {
        ring[total % r] = t;
        ctl[3] = (int32_t)(total + 1);
    }
    if (nd->src[2])
        (*(int32_t *)nd->src[2]->data)++;
    return GK_OK;
}

static bool cpu_supports_node(void *state, const gk_node *node)
{
    return node && check_node(node, false, NULL) == GK_OK;
}

/* The message check_node gives for the refusal (it names the operand or the
 * parameter). */
static void cpu_explain_node(void *state, const gk_node *node, char *why, size_t len)
{
    gk_err err = {0};
    if (!why || len == 0)
        return;
    if (!node)
        snprintf(why, len, "cpu_ref: no node");
    else if (check_node(node, false, &err) != GK_OK)
        snprintf(why, len, "%s", err.msg);
    else
        snprintf(why, len, "cpu_ref: runs this node");
}

typedef gk_status (*op_fn)(const cpu_state *cs, const gk_node *nd, gk_err *err);

static const op_fn op_table[GK_OP_COUNT] = {
    [GK_OP_GET_ROWS] = op_get_rows,     [GK_OP_ADD] = op_add,
    [GK_OP_LAYER_NORM] = op_layer_norm, [GK_OP_RMS_NORM] = op_rms_norm,
    [GK_OP_LINEAR] = op_linear,         [GK_OP_ROPE] = op_rope,
    [GK_OP_ATTN] = op_attn,             [GK_OP_GELU_TANH] = op_gelu_tanh,
    [GK_OP_SILU_MUL] = op_silu_mul,     [GK_OP_SAMPLE] = op_sample,
    [GK_OP_MUL] = op_mul,               [GK_OP_SCALE] = op_scale,
    [GK_OP_SOFTCAP] = op_softcap,       [GK_OP_GELU] = op_gelu,
    [GK_OP_GEGLU] = op_geglu,           [GK_OP_SOFTMAX] = op_softmax,
    [GK_OP_TOPK] = op_topk,             [GK_OP_GATHER] = op_gather,
    [GK_OP_LINEAR_ID] = op_linear_id,   [GK_OP_MOE_SUM] = op_moe_sum,
};

static gk_status cpu_graph_compute(void *state, const gk_graph *g, gk_err *err)
{
    if (!g || (g->n_nodes && !g->nodes))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "cpu_ref: graph_compute without nodes");
    for (size_t i = 0; i < g->n_nodes; i++) {
        const gk_node *nd = &g->nodes[i];
        gk_status s = check_node(nd, true, err);
        if (s == GK_OK)
            s = op_table[nd->op](state, nd, err);
        if (s != GK_OK)
            return s;
    }
    return GK_OK;
}

static const gk_backend_ops cpu_ops = {
    .struct_size = sizeof(gk_backend_ops),
    .magic = GK_BACKEND_OPS_MAGIC,
    .available = cpu_available,
    .device_props = cpu_device_props,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .supports_node = cpu_supports_node,
    .graph_compute = cpu_graph_compute,
    .synchronize = NULL,
    .explain_node = cpu_explain_node,
};

GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, "cpu_ref",
                 "reference CPU backend: plain loops in float32, the oracle for the others",
                 cpu_init, cpu_fini, &cpu_ops)
