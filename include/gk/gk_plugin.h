/* gk_plugin.h - what a plugin author needs: the descriptor every plugin exports,
 * the backend ops table, the architecture ops table, and the graph a backend
 * runs and an architecture builds.
 *
 * A plugin is a shared object exporting exactly one symbol, GK_PLUGIN_ENTRY,
 * written with GK_PLUGIN_DEFINE. The core checks the ABI before calling anything
 * else in it. Memory a plugin allocates, that plugin frees. Plugins are never
 * unloaded while anything they made is alive (only at gk_runtime_destroy).
 */
#ifndef GK_GK_PLUGIN_H
#define GK_GK_PLUGIN_H

#include "gk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GK_ABI_MAJOR 1
#define GK_ABI_MINOR 6   /* 1.1: ops tables carry a magic naming their kind;
                            1.2: graph ids, GK_OP_SAMPLE, read_async / read_wait;
                            1.3: GK_OP_SAMPLE's min-p and penalties (f[2], i[1],
                            src3, src4, ctl[3]);
                            1.4: the general op vocabulary (mul ... moe_sum), new
                            parameters of rms_norm, rope and attn (gk_op_params),
                            tensor-table splits, experts, named weights and
                            config dims, gk_arch_ops adjust_config / build_head,
                            gk_backend_ops explain_node;
                            1.5: attn's sequence slots (f[3]: gk_seq_*);
                            1.6: gk_backend_ops path_note */
#define GK_PLUGIN_ENTRY_NAME "gk_plugin_entry"

/* ----------------------------------------------------------------- tensors */

/* A 2-D row-major tensor living in a backend's memory. Graph tensors are made
 * by the builder; weights by the core at load. data is the backend's pointer
 * (host memory for cpu_ref, device memory for cuda): only that backend reads it. */
typedef struct gk_tensor {
    gk_dtype dtype;
    int64_t rows, cols;   /* [rows][cols]; a vector is [1][n] */
    void *data;
    char name[48];        /* "attn_out", "blk.3.q_proj" ... */
    int layer;            /* block index, -1 outside blocks */
} gk_tensor;

/* Element and byte counts. A shape whose count does not fit (or a negative
 * dimension) saturates to INT64_MAX / SIZE_MAX, which no allocation can
 * satisfy, so an oversized tensor fails to allocate instead of wrapping; code
 * adding such sizes must check for these values (gk_size_add). An
 * out-of-range dtype has 0 bytes (gk_dtype_size). t must not be NULL. */
static inline int64_t gk_tensor_nelem(const gk_tensor *t)
{
    int64_t n;
    if (t->rows < 0 || t->cols < 0 || !gk_i64_mul(t->rows, t->cols, &n))
        return INT64_MAX;
    return n;
}
static inline size_t gk_tensor_nbytes(const gk_tensor *t)
{
    int64_t n = gk_tensor_nelem(t);
    size_t b;
    if (n == INT64_MAX || (uint64_t)n > SIZE_MAX || !gk_size_mul((size_t)n, gk_dtype_size(t->dtype), &b))
        return SIZE_MAX;
    return b;
}

/* ------------------------------------------------------------------- graph */

/* Activations (every dst, and x inputs) are F32. Weights are F32, F16 or BF16.
 * Ids and positions are I32. Shapes are [rows][cols]; n = number of tokens. */
typedef enum gk_op {
    GK_OP_GET_ROWS = 0, /* src0 table [V][D], src1 ids I32 [1][n]  -> [n][D] */
    GK_OP_ADD,          /* src0 [n][D] + src1 [n][D]                -> [n][D] */
    GK_OP_LAYER_NORM,   /* src0 x [n][D], src1 w [1][D], src2 b [1][D] or NULL; f[0] eps */
    GK_OP_RMS_NORM,     /* src0 x [n][D], src1 w [1][G]; i[0] G (0 = D; groups of G
                           columns normed apart: G = head_dim is QK-norm); f[0] eps;
                           (1.4) f[1] weight offset: x / rms * (f[1] + w) */
    GK_OP_LINEAR,       /* src0 x [n][in], src1 W [out][in], src2 bias [1][out] or NULL
                           -> x W^T + b  [n][out] */
    GK_OP_ROPE,         /* src0 x [n][H*hd], src1 pos I32 [1][n], src2 inv_freq F32
                           [1][hd/2]; i[0] hd; f[0] cos/sin scale. HF rotate-half.
                           (1.4) i[1] rotary_dim r (0 = hd): only the first r columns of
                           each head turn, src2 is [1][r/2] */
    GK_OP_ATTN,         /* src0 q [n][H*hd], src1 k [n][Hkv*hd], src2 v [n][Hkv*hd],
                           src3 pos I32 [1][n], src4 K cache [n_ctx][Hkv*hd],
                           src5 V cache (caches F32, F16 or BF16, both alike); i[0] H,
                           i[1] Hkv, i[2] hd; f[0] scale. Stores k,v at rows pos[t] of
                           the caches (rounded to nearest even into a 16-bit cache),
                           then token t attends causally to cache rows 0..pos[t] as
                           stored. -> [n][H*hd]
                           (1.4) i[3] window W (0 = off): token t sees only rows j with
                           pos[t] - W < j; f[1] softcap c (0 = off): scores s*scale
                           become c*tanh(s*scale/c) before the softmax; f[2] ring (0 =
                           off): the caches hold R rows, fewer than the positions,
                           and position p is row p % R (the core gives one only with
                           W > 0 and R >= W + n - 1, so the n rows stored first never
                           overwrite a key a token of the node sees).
                           (1.5) f[3] slot rows S (0 = off): the caches hold slots of
                           S rows, src3 is I32 [2][n] (positions, then each token's
                           slot) and token t's rows are slot[t]*S + (row within the
                           slot, as above with S rows); S > 0: every token of the
                           node is of one slot, S < 0 (|S| rows): they may differ */
    GK_OP_GELU_TANH,    /* src0 -> 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))) */
    GK_OP_SILU_MUL,     /* src0 gate, src1 up -> silu(gate) * up */
    GK_OP_SAMPLE,       /* (ABI 1.2) src0 logits F32 [1][V]; src1 ctl I32 [1][4] =
                           {seed low 32 bits, seed high 32 bits, step, 0}; src2 pos I32
                           [1][1] or NULL; f[0] temperature, i[0] top_k, f[1] top_p (the
                           ranges of gk_gen_opts) -> dst I32 [1][1]: the token gk_sample
                           picks with a gk_rng seeded with seed after `step` draws (the
                           draw unused when greedy); then ctl step += 1 and pos[0] += 1,
                           so a decode graph whose ids input is dst feeds itself.
                           (ABI 1.3) f[2] min_p (0 = off); i[1] the penalty window W
                           (0 = off: src3, src4 and ctl[3] unused); src3 ring I32
                           [1][R] of the last ids, src4 F32 [1][4] = {repetition,
                           presence, frequency, 0}; ctl[3] = how many ids the ring
                           has received in all (id k at ring[k % R]). With W > 0
                           the penalties of gk_sample_ex apply to the last
                           min(W, ctl[3], R) ids, then the pick is stored at
                           ring[ctl[3] % R] and ctl[3] += 1. The core gives these
                           only to backends built for 1.3 or later (others see
                           f[2] = 0, i[1] = 0, src3 = src4 = NULL) */
    /* ---- ABI 1.4: the general vocabulary. Broadcast: a src1 of [1][D] applies
       to every row of an [n][D] src0. */
    GK_OP_MUL,          /* src0 [n][D] * src1 [n][D] or [1][D] (F32, or a weight's dtype) */
    GK_OP_SCALE,        /* src0 * f[0] + f[1] */
    GK_OP_SOFTCAP,      /* f[0] * tanh(src0 / f[0]) (Gemma 2's logit and attention caps) */
    GK_OP_GELU,         /* src0 -> 0.5x(1+erf(x/sqrt(2))) (exact GELU) */
    GK_OP_GEGLU,        /* src0 gate, src1 up -> gelu(gate) * up; i[0] 0 = tanh GELU
                           (gelu_pytorch_tanh), 1 = exact (erf) GELU */
    GK_OP_SOFTMAX,      /* row-wise softmax of src0 [n][D] */
    GK_OP_TOPK,         /* src0 [n][E] -> dst I32 [n][k], k = i[0]: the columns of the k
                           largest values, largest first; equal values: lower column first */
    GK_OP_GATHER,       /* src0 [n][E], src1 I32 [n][k] -> [n][k]: src0[t][src1[t][j]] */
    GK_OP_LINEAR_ID,    /* expert-indexed linear: src0 x [n][in] (every slot reads the row)
                           or [n][k*in] (slot j reads its own block j), src1 W stacked
                           experts [E*out][in] (expert e = rows e*out ..), src2 ids I32
                           [n][k]; i[0] E -> [n][k*out], block j = x_j W_{ids[t][j]}^T.
                           A backend reads only the selected experts' rows. */
    GK_OP_MOE_SUM,      /* src0 [n][k*D], src1 weights [n][k] -> [n][D] = sum_j w[t][j] *
                           src0 block j, j ascending */
    GK_OP_COUNT
} gk_op;

/* ------------------------------------------------------- op parameters
 * Each op's parameters live in its node's i[] and f[] slots; these are their
 * names, defaults and the ABI minor that introduced them. A backend built for
 * an older minor never sees an op or a parameter (set to a value other than
 * its default) that it predates: the core refuses that node at load, naming
 * the node, the op and the parameter. A backend of a newer minor states per
 * node, in supports_node, whether it runs the op with those parameters, and
 * may say why not in explain_node. */
typedef struct gk_op_param {
    const char *name;     /* "softcap" */
    char kind;            /* 'i' or 'f': the slot array */
    int slot;             /* index into i[] or f[] */
    uint32_t since_minor; /* ABI 1.x that introduced it */
    double def;           /* the value meaning "off" / the old behaviour */
} gk_op_param;

/* The parameters of op (n of them; NULL and 0 for an op without any or out of
 * range), and the ABI minor that introduced the op itself. */
GK_API const gk_op_param *gk_op_params(gk_op op, size_t *n);
GK_API uint32_t gk_op_since_minor(gk_op op);



#define GK_MAX_SRC 6

typedef struct gk_node {
    gk_op op;
    gk_tensor *src[GK_MAX_SRC];
    gk_tensor *dst;
    int32_t i[4];
    float f[4];
} gk_node;

typedef struct gk_graph {
    gk_node *nodes;
    size_t n_nodes;
    int64_t n_tokens;
    /* (ABI 1.2) Nonzero: names these nodes, tensors and parameters for the
     * life of the process (the core never gives two graphs one id, and gives
     * a graph a new id when it changes a node), so a backend may key what it
     * recorded by it. 0: unknown; compare the content. */
    uint64_t id;
} gk_graph;

/* Named views of the slots of the ops with the most parameters. */
typedef struct gk_attn_params {
    int32_t n_head, n_head_kv, head_dim;   /* i[0], i[1], i[2] */
    int32_t window;       /* i[3] (1.4): key j is seen from query i when i - window < j <= i;
                             0 = every earlier key */
    float scale;          /* f[0]: on q.k */
    float softcap;        /* f[1] (1.4): scores -> softcap * tanh(scores / softcap) before
                             the softmax; 0 = off */
    int32_t ring;         /* f[2] (1.4) nonzero: the caches are a ring, position p in row
                             p % rows (any p >= 0 is valid); 0 = row p, p < rows */
    int32_t slot_rows;    /* |f[3]| (1.5): rows per sequence slot (0 = one sequence) */
    int32_t mixed_slots;  /* f[3] < 0 (1.5): the node's tokens may be of different slots */
} gk_attn_params;
static inline gk_attn_params gk_node_attn_params(const gk_node *n)
{
    gk_attn_params p = {n->i[0], n->i[1], n->i[2], n->i[3], n->f[0], n->f[1], n->f[2] != 0.0f,
                        (int32_t)(n->f[3] < 0 ? -n->f[3] : n->f[3]), n->f[3] < 0};
    return p;
}
typedef struct gk_rope_params {
    int32_t head_dim;     /* i[0] */
    int32_t rotary_dim;   /* i[1] (1.4): columns of each head rotated (rotate-half within
                             them), the rest pass through; 0 = head_dim. src2 holds
                             rotary_dim/2 frequencies */
    float scale;          /* f[0]: on cos and sin */
} gk_rope_params;
static inline gk_rope_params gk_node_rope_params(const gk_node *n)
{
    gk_rope_params p = {n->i[0], n->i[1], n->f[0]};
    return p;
}
typedef struct gk_rms_norm_params {
    int32_t group;        /* i[0]: columns normed together (0 = the row) */
    float eps;            /* f[0] */
    float weight_offset;  /* f[1] (1.4): y = x / rms * (weight_offset + w); Gemma's 1 + w */
} gk_rms_norm_params;
static inline gk_rms_norm_params gk_node_rms_norm_params(const gk_node *n)
{
    gk_rms_norm_params p = {n->i[0], n->f[0], n->f[1]};
    return p;
}

/* Static op name ("rms_norm"), "?" when out of range. */
GK_API const char *gk_op_name(gk_op op);

/* ---------------------------------------------------------------- backends */


/* What the sampler needs besides the logits. u is the uniform draw in [0, 1)
 * the core took from its generator (unused when greedy). */
typedef struct gk_sample_params {
    float temperature;   /* 0 = greedy */
    int32_t top_k;       /* 0 = off */
    float top_p;         /* 1 = off */
    double u;
} gk_sample_params;

/* Each ops table starts with its size and a magic saying which table it is
 * (ABI 1.1), so that a descriptor pointing at the wrong kind of table is
 * refused. The magic took what was padding in 1.0; plugins built for 1.0 have
 * 0 there and are not checked. */
#define GK_BACKEND_OPS_MAGIC 0x676b4245u  /* "gkBE" */

/* One backend = this table + the state its plugin's init returned. Only the
 * core's wrappers call through it. Entries marked optional may be NULL. */
typedef struct gk_backend_ops {
    uint32_t struct_size;    /* sizeof(gk_backend_ops) the plugin was built with */
    uint32_t magic;          /* GK_BACKEND_OPS_MAGIC */
    /* Usable right now (a GPU backend says no without a GPU, with why). */
    bool (*available)(void *state, char *why, size_t why_len);
    gk_status (*device_props)(void *state, gk_device_props *out, gk_err *err);
    gk_status (*buffer_alloc)(void *state, size_t nbytes, void **out, gk_err *err);
    /* buffer_free takes what buffer_alloc returned; buffer_write and buffer_read
     * take any pointer inside such a block (a tensor's data) plus an offset. */
    void (*buffer_free)(void *state, void *buf);
    gk_status (*buffer_write)(void *state, void *buf, size_t offset, const void *src,
                              size_t nbytes, gk_err *err);
    gk_status (*buffer_read)(void *state, const void *buf, size_t offset, void *dst,
                             size_t nbytes, gk_err *err);
    /* Whether the node (op and the dtypes of its tensors) can run here. */
    bool (*supports_node)(void *state, const gk_node *node);
    /* Run every node in order. The same gk_graph (same pointer, same nodes) is
     * run many times with new ids and positions in its input tensors, so a
     * backend may record it once and replay it (a CUDA graph). */
    gk_status (*graph_compute)(void *state, const gk_graph *g, gk_err *err);
    /* (optional) wait for queued work; default: nothing to wait for. */
    gk_status (*synchronize)(void *state, gk_err *err);
    /* (optional) pick a token from logits F32 [1][n_vocab] where they live, by
     * the rules of gk_sample (temperature, then top-k keeping ties, then top-p,
     * then the draw u; greedy = lowest index of the maximum); only the id comes
     * back. Default: the core downloads the logits and samples on the host. */
    gk_status (*sample)(void *state, const gk_tensor *logits, const gk_sample_params *p,
                        int32_t *token, gk_err *err);
    /* (optional, ABI 1.2) Queue a copy of nbytes (at most GK_READ_ASYNC_MAX)
     * at buf + offset that happens after the work queued so far, without
     * waiting; *ticket names it. read_wait(ticket) blocks until that copy is
     * done, puts the bytes in dst and reports any fault of the work before it.
     * The GK_READ_ASYNC_SLOTS most recent tickets stay readable; an older one
     * is an error. Default: the core queues less and reads with buffer_read. */
    gk_status (*read_async)(void *state, const void *buf, size_t offset, size_t nbytes, uint64_t *ticket,
                            gk_err *err);
    gk_status (*read_wait)(void *state, uint64_t ticket, void *dst, size_t nbytes, gk_err *err);
    /* (optional, ABI 1.4) Why supports_node refuses node, one line naming the
     * parameter or operand ("softcap with head_dim 320"); called only after it
     * refused. Default: the core names the op and the operand dtypes. */
    void (*explain_node)(void *state, const gk_node *node, char *why, size_t len);
    /* (optional, ABI 1.6) How the last graph_compute ran, one line for a
     * person ("persistent kernel: 91 stages on 132 blocks, then 1 node
     * per-op" / "per-op: attn 'attn': a sliding window"). Default: nothing
     * to say. */
    void (*path_note)(void *state, char *buf, size_t len);
} gk_backend_ops;
#define GK_READ_ASYNC_MAX 64
#define GK_READ_ASYNC_SLOTS 4

/* The entry f of backend table o, or NULL when o is too old to have it (its
 * struct_size ends before f) or leaves it out. */
#define GK_BACKEND_OP(o, f)                                                                   \
    ((o)->struct_size >= offsetof(gk_backend_ops, f) + sizeof((o)->f) ? (o)->f : NULL)

/* ----------------------------------------------------------- architectures */

/* What a weight is for. The builder asks for weights by role and layer. */
typedef enum gk_role {
    GK_W_TOK_EMBD = 0, GK_W_POS_EMBD,
    GK_W_ATTN_NORM, GK_W_ATTN_NORM_B,
    GK_W_Q, GK_W_Q_B, GK_W_K, GK_W_K_B, GK_W_V, GK_W_V_B, GK_W_O, GK_W_O_B,
    GK_W_Q_NORM, GK_W_K_NORM,
    GK_W_FFN_NORM, GK_W_FFN_NORM_B,
    GK_W_GATE, GK_W_GATE_B, GK_W_UP, GK_W_UP_B, GK_W_DOWN, GK_W_DOWN_B,
    GK_W_OUT_NORM, GK_W_OUT_NORM_B, GK_W_LM_HEAD,
    GK_W_UNUSED,   /* a known tensor the model does not need (GPT-2's attn.bias mask) */
    GK_W_NAMED,    /* (1.4) a weight with no role: the builder asks for it by its table
                      name (gk_builder_weight_named), e.g. Gemma 2's post_feedforward_layernorm */
    GK_W_COUNT
} gk_role;

/* Symbolic sizes for the shape a weight must have. */
typedef enum gk_dim {
    GK_DIM_NONE = 0, GK_DIM_ONE, GK_DIM_VOCAB, GK_DIM_EMBD, GK_DIM_Q /* H*hd */,
    GK_DIM_KV /* Hkv*hd */, GK_DIM_FF, GK_DIM_HEAD, GK_DIM_POS, GK_DIM_QKV /* Q+2KV */,
    /* (1.4) sizes read from config.json: the architecture's dim_keys[i] */
    GK_DIM_KEY0 = 64
} gk_dim;
#define GK_DIM_KEY(i) ((gk_dim)(GK_DIM_KEY0 + (i)))
#define GK_MAX_DIM_KEYS 16

/* (1.4) A size from config.json for GK_DIM_KEY(i): key (or alt when key is
 * absent; alt may be NULL), an integer >= 1; def when both are absent, and
 * def < 0 makes it required (a load error naming the key). */
typedef struct gk_dim_key {
    const char *key, *alt;
    int64_t def;
} gk_dim_key;

/* Flags of a tensor-table entry. */
#define GK_TF_LAYER     0x01u  /* name has a %d for the block index */
#define GK_TF_OPTIONAL  0x02u  /* may be absent (e.g. a tied head) */
#define GK_TF_TRANSPOSE 0x04u  /* stored [in][out] (GPT-2 Conv1D): transposed at load */
#define GK_TF_COND_BIAS 0x08u  /* required iff config.attention_bias */
#define GK_TF_COND_QKN  0x10u  /* required iff the spec uses QK-norm */
#define GK_TF_COND_MLP_BIAS 0x20u /* required iff config.mlp_bias (ABI 1.1) */
/* (1.4) The stored tensor is the concatenation, in part order 1..n_parts, of
 * the row blocks of every SPLIT entry with the same name, each of its own
 * shape: unequal splits (Phi-3's qkv_proj with any GQA ratio). */
#define GK_TF_SPLIT     0x40u
/* (1.4) One tensor per expert: the name has a second %d (after the layer's)
 * for the expert index; n_parts holds the gk_dim of the expert count (part is
 * 0). They load as one stacked tensor [count*rows][cols], GK_OP_LINEAR_ID's
 * layout (Mixtral's experts.%d.w1, Qwen3-MoE's experts.%d.gate_proj). */
#define GK_TF_EXPERT    0x80u
/* (1.4) The stored tensor is already stacked, 3-D [count][rows][cols]; n_parts
 * holds the gk_dim of the count. Loads as [count*rows][cols]. */
#define GK_TF_STACKED   0x100u
/* A COND_BIAS or COND_MLP_BIAS tensor present while the config says false is
 * an error naming it, as is any tensor the table does not claim. */

/* One row of an architecture's tensor table: role <- HF name. When `part` is
 * set the stored tensor is the concatenation of n_parts equal row blocks (after
 * transposing), and this role takes block part-1 (GPT-2's fused c_attn); with
 * GK_TF_SPLIT the blocks are those of the entries sharing the name. Entries of
 * role GK_W_NAMED are found by name (gk_builder_weight_named). */
typedef struct gk_tensor_entry {
    gk_role role;
    const char *name;      /* "model.layers.%d.self_attn.q_proj.weight" */
    gk_dim shape[2];       /* rows, cols as the model uses it ([out][in]); NONE = 1-D */
    uint32_t flags;
    int part, n_parts;
} gk_tensor_entry;

typedef struct gk_builder gk_builder;

#define GK_ARCH_OPS_MAGIC 0x676b4152u  /* "gkAR"; see GK_BACKEND_OPS_MAGIC */

/* An architecture plugin's table. */
typedef struct gk_arch_ops {
    uint32_t struct_size;    /* sizeof(gk_arch_ops) the plugin was built with */
    uint32_t magic;          /* GK_ARCH_OPS_MAGIC */
    const gk_model_spec *spec;
    const gk_tensor_entry *tensors;   /* terminated by an entry with name NULL */
    /* Prefixes tried in front of every table name, in order; NULL-terminated.
     * {"", NULL} when names are used as written. */
    const char *const *name_prefixes;
    /* (optional) reject configs this architecture cannot run, naming the key. */
    gk_status (*check_config)(const gk_config *cfg, gk_err *err);
    /* Build the forward pass: tokens -> final normed hidden [n][n_embd].
     * Called with the builder's inputs ready (gk_builder_ids / _pos). Three node
     * names are a contract (verify and compare read them): "embd" (layer -1, the
     * input to block 0), "l_out" (layer i, the output of block i) and
     * "out_norm" (layer -1, the final normed hidden state). */
    gk_status (*build)(gk_builder *b, gk_tensor **out_hidden, gk_err *err);
    /* ---- ABI 1.4: optional; a table built for 1.3 ends here (GK_ARCH_OP). */
    /* Sizes from config.json for GK_DIM_KEY(i), i < GK_MAX_DIM_KEYS; ends
     * with a NULL key; may be NULL. */
    const gk_dim_key *dim_keys;
    /* Set architecture defaults and read architecture keys (gk_config_get_*)
     * before check_config: e.g. Gemma's hidden_activation, StableLM's
     * use_qkv_bias into attention_bias. */
    gk_status (*adjust_config)(gk_config *cfg, gk_err *err);
    /* The LM head: final hidden [n][n_embd] -> logits [n][n_vocab]. Default:
     * linear by gk_builder_head_weight. Gemma 2's final softcap goes here. */
    gk_status (*build_head)(gk_builder *b, gk_tensor *hidden, gk_tensor **out_logits, gk_err *err);
} gk_arch_ops;

/* The entry f of architecture table o, or NULL when o predates it. */
#define GK_ARCH_OP(o, f) \
    ((o)->struct_size >= offsetof(gk_arch_ops, f) + sizeof((o)->f) ? (o)->f : NULL)

/* --------------------------------------------------------- builder helpers */
/* Each returns the new node's output tensor, or NULL when out of memory or
 * when an input tensor it needs is NULL (a missing weight); the builder
 * remembers the failure, later helpers return NULL too, and the core fails
 * the build after build() returns (build() may check once at the end). Bias
 * arguments of linear and layer_norm may be NULL (no bias). A NULL builder
 * gives NULL from every function here. Shapes are not checked here: the
 * backend's supports_node refuses a node whose shapes disagree, an error
 * naming the op and node. Names identify nodes across backends (cut to 47
 * bytes; NULL becomes "?"); il is the block index or -1. */

GK_API const gk_config *gk_builder_config(const gk_builder *b);
GK_API gk_tensor *gk_builder_ids(gk_builder *b);  /* I32 [1][n] */
GK_API gk_tensor *gk_builder_pos(gk_builder *b);  /* I32 [1][n] */
/* The weight of a role (il ignored for non-layer roles); NULL when absent, for
 * a role outside gk_role or a layer il outside [0, n_layer). */
GK_API gk_tensor *gk_builder_weight(gk_builder *b, gk_role role, int il);

GK_API gk_tensor *gk_build_get_rows(gk_builder *b, gk_tensor *table, gk_tensor *ids,
                                    const char *name, int il);
GK_API gk_tensor *gk_build_add(gk_builder *b, gk_tensor *x, gk_tensor *y,
                               const char *name, int il);
GK_API gk_tensor *gk_build_layer_norm(gk_builder *b, gk_tensor *x, gk_tensor *w,
                                      gk_tensor *bias, float eps, const char *name, int il);
/* group = 0 norms whole rows. */
GK_API gk_tensor *gk_build_rms_norm(gk_builder *b, gk_tensor *x, gk_tensor *w, int64_t group,
                                    float eps, const char *name, int il);
/* Norm by the config's kind (RMS or layer norm with its bias). */
GK_API gk_tensor *gk_build_norm(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *bias,
                                const char *name, int il);
GK_API gk_tensor *gk_build_linear(gk_builder *b, gk_tensor *x, gk_tensor *w,
                                  gk_tensor *bias, const char *name, int il);
/* RoPE with the config's theta and scaling, on n_head heads of head_dim. */
GK_API gk_tensor *gk_build_rope(gk_builder *b, gk_tensor *x, const char *name, int il);
/* Causal attention through layer il's KV cache, with the config's head counts;
 * il outside [0, n_layer) fails the build. */
GK_API gk_tensor *gk_build_attn(gk_builder *b, gk_tensor *q, gk_tensor *k, gk_tensor *v,
                                int il);
GK_API gk_tensor *gk_build_gelu_tanh(gk_builder *b, gk_tensor *x, const char *name, int il);
GK_API gk_tensor *gk_build_silu_mul(gk_builder *b, gk_tensor *gate, gk_tensor *up,
                                    const char *name, int il);

/* ---- ABI 1.4 helpers. A plugin calling one of these must be built for 1.4
 * (GK_PLUGIN_DEFINE records the minor); the core refuses a plugin built for a
 * newer minor than its own by version, before any of its code runs. */

/* The weight of a GK_W_NAMED table entry, by the name as written in the table
 * ("model.layers.%d.post_feedforward_layernorm.weight"); il as for
 * gk_builder_weight. NULL (and the build fails, naming it) when the table has
 * no such entry; NULL for an optional entry that is absent. */
GK_API gk_tensor *gk_builder_weight_named(gk_builder *b, const char *table_name, int il);
/* A required weight the builder did not find fails the build with an error
 * naming the role (or name) and layer; this says whether one is present
 * without failing anything. */
GK_API bool gk_builder_has_weight(gk_builder *b, gk_role role, int il);
/* The LM head's weight: lm_head, or the token embedding when tied. */
GK_API gk_tensor *gk_builder_head_weight(gk_builder *b);
/* Fail the build with this message (printf-style), e.g. a shape the
 * architecture cannot take; the first failure wins. */
GK_API void gk_builder_fail(gk_builder *b, gk_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

GK_API gk_tensor *gk_build_mul(gk_builder *b, gk_tensor *x, gk_tensor *y, const char *name, int il);
GK_API gk_tensor *gk_build_scale(gk_builder *b, gk_tensor *x, float scale, float bias, const char *name,
                                 int il);
GK_API gk_tensor *gk_build_softcap(gk_builder *b, gk_tensor *x, float cap, const char *name, int il);
GK_API gk_tensor *gk_build_gelu(gk_builder *b, gk_tensor *x, const char *name, int il);
/* tanh: gelu_pytorch_tanh (true) or exact GELU (false). */
GK_API gk_tensor *gk_build_geglu(gk_builder *b, gk_tensor *gate, gk_tensor *up, bool tanh_approx,
                                 const char *name, int il);
GK_API gk_tensor *gk_build_softmax(gk_builder *b, gk_tensor *x, const char *name, int il);
GK_API gk_tensor *gk_build_topk(gk_builder *b, gk_tensor *x, int k, const char *name, int il);
GK_API gk_tensor *gk_build_gather(gk_builder *b, gk_tensor *x, gk_tensor *ids, const char *name, int il);
/* n_expert experts stacked in w ([n_expert*out][in], a GK_TF_EXPERT or
 * GK_TF_STACKED entry). */
GK_API gk_tensor *gk_build_linear_id(gk_builder *b, gk_tensor *x, gk_tensor *w, gk_tensor *ids,
                                     int64_t n_expert, const char *name, int il);
GK_API gk_tensor *gk_build_moe_sum(gk_builder *b, gk_tensor *x, gk_tensor *weights, const char *name,
                                   int il);
/* RMS norm with a weight offset: x / rms * (offset + w). */
GK_API gk_tensor *gk_build_rms_norm_offset(gk_builder *b, gk_tensor *x, gk_tensor *w, int64_t group,
                                           float eps, float offset, const char *name, int il);

/* RoPE frequencies: theta^(-2i/rotary_dim) for i < rotary_dim/2, then the
 * scaling (GK_ROPE_NONE, _LINEAR by factor, _LLAMA3 with the config's llama3
 * factors). Made once per distinct set and kept with the model. */
typedef struct gk_rope_opts {
    float theta;                /* 0: the config's rope_theta */
    int64_t rotary_dim;         /* 0: head_dim; even, <= head_dim */
    gk_rope_scaling scaling;    /* with use_config_scaling false */
    float factor;
    bool use_config_scaling;    /* the config's rope_scaling, factor and llama3 factors */
    float attention_scaling;    /* on cos and sin; 0 = 1 */
} gk_rope_opts;
/* RoPE over n heads of head_dim (x->cols / head_dim) with o (NULL = the
 * config's, as gk_build_rope). */
GK_API gk_tensor *gk_build_rope_ex(gk_builder *b, gk_tensor *x, const gk_rope_opts *o, const char *name,
                                   int il);

typedef struct gk_attn_opts {
    float scale;                /* 0: 1/sqrt(head_dim) */
    float softcap;              /* 0: off */
    int64_t window;             /* 0: the whole cache (causal) */
} gk_attn_opts;
/* The sliding window of layer il as transformers decides it, 0 for full
 * attention: layer_types[il] when config.json has it ("sliding_attention":
 * sliding_window, "full_attention": 0, anything else fails the build naming
 * the key); else, for model_type qwen2 / qwen3, sliding_window
 * on layers il >= max_window_layers; else sliding_window on every layer
 * (Mistral). */
GK_API int64_t gk_builder_layer_window(gk_builder *b, int il);
/* Causal attention through layer il's cache with o (NULL = defaults). */
GK_API gk_tensor *gk_build_attn_ex(gk_builder *b, gk_tensor *q, gk_tensor *k, gk_tensor *v, int il,
                                   const gk_attn_opts *o);

/* ---------------------------------------------------------- the descriptor */

typedef enum gk_plugin_kind { GK_PLUGIN_KIND_ARCH = 1, GK_PLUGIN_KIND_BACKEND = 2 } gk_plugin_kind;

/* What the core offers a plugin at init. */
typedef struct gk_host {
    uint32_t abi_major, abi_minor;
    void (*log)(const char *plugin, const char *msg);
} gk_host;

typedef struct gk_plugin_desc {
    uint32_t abi_major, abi_minor;   /* GK_ABI_* the plugin was built with */
    uint32_t struct_size;            /* sizeof(gk_plugin_desc) at build time */
    gk_plugin_kind kind;
    const char *name;                /* "llama", "cuda": must match its file name */
    const char *version;
    const char *description;
    /* (optional) set up the plugin; *state is handed to every op. On failure
     * fill err with the reason. */
    gk_status (*init)(const gk_host *host, void **state, gk_err *err);
    void (*fini)(void *state);       /* (optional) */
    const void *ops;                 /* gk_backend_ops* or gk_arch_ops* by kind */
    void *reserved[4];               /* zero; room to grow */
} gk_plugin_desc;

typedef const gk_plugin_desc *(*gk_plugin_entry_fn)(void);

/* Plugin files are libgk-arch-NAME.so and libgk-backend-NAME.so. */
#define GK_PLUGIN_DEFINE(KIND, NAME, DESCRIPTION, INIT, FINI, OPS)              \
    __attribute__((visibility("default"))) const gk_plugin_desc *gk_plugin_entry(void); \
    const gk_plugin_desc *gk_plugin_entry(void)                                  \
    {                                                                            \
        static const gk_plugin_desc d = {                                        \
            .abi_major = GK_ABI_MAJOR, .abi_minor = GK_ABI_MINOR,                \
            .struct_size = sizeof(gk_plugin_desc), .kind = (KIND),               \
            .name = (NAME), .version = "1.0", .description = (DESCRIPTION),     \
            .init = (INIT), .fini = (FINI), .ops = (OPS),                        \
            .reserved = {NULL, NULL, NULL, NULL},                                \
        };                                                                       \
        return &d;                                                               \
    }

/* printf-style fill of a gk_err (err may be NULL); returns code. */
GK_API gk_status gk_err_set(gk_err *err, gk_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* GK_GK_PLUGIN_H */
