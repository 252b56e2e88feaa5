/* model_impl.h - the model object and the graph builder, shared by model.c,
 * graph.c and generate.c. */
#ifndef GK_MODEL_IMPL_H
#define GK_MODEL_IMPL_H

#include "runtime_impl.h"

/* A compiled forward pass for a fixed token count: nodes plus one activation
 * arena in backend memory. Positions and ids are inputs, so one graph serves
 * every step of the same size. */
typedef struct gk_fgraph {
    gk_graph g;
    size_t cap_nodes;
    gk_tensor **owned;            /* tensors the builder made */
    size_t n_owned, cap_owned;
    void *arena;                  /* backend buffer for all owned tensors */
    size_t arena_bytes;
    gk_tensor *ids, *pos;         /* I32 [1][n] inputs */
    /* (a model of several sequence slots) positions and slots, I32 [2][n]:
     * attention's src3; pos is then pos_view, its first row */
    gk_tensor *pos_slot;
    gk_tensor pos_view;
    bool mixed;                   /* its tokens may be of different slots (gk_seq_decode) */
    gk_tensor *out;               /* hidden [n][n_embd], or logits for a head or step graph */
    struct gk_fgraph *head;       /* (on demand) logits of every row of out */
    struct gk_fgraph *head_last;  /* (on demand) logits of out's last row */
    gk_tensor last_row;           /* view of out's last row, head_last's input */
    /* a step graph: forward of one token, the LM head and GK_OP_SAMPLE, whose
     * output is ids; ctl I32 [1][4] steers the sampler */
    gk_tensor *ctl;
    size_t sample;                /* index of the SAMPLE node */
    /* (a backend of ABI 1.3 or later) the SAMPLE node's ring of the last
     * ids, I32 [1][n_ctx], and its penalties, F32 [1][4]; NULL otherwise */
    gk_tensor *ring, *pen;
} gk_fgraph;

struct gk_builder {
    gk_model *m;
    gk_fgraph *fg;
    bool failed;
    /* the first failure's cause when known (a missing weight, gk_builder_fail);
     * code 0: out of memory or a NULL argument */
    gk_status fail_code;
    char fail_msg[256];
    /* the last weight asked for and absent (may be an optional one) */
    char missing_name[128];
    int missing_layer;
};

/* gk_model_opts.n_seq_max at most, and the context each may have (slot rows
 * are an attention parameter of float type: exact to 2^24). */
#define GK_MAX_SEQ 4096
#define GK_MAX_SEQ_CTX (1 << 24)
/* Tokens gk_seq_decode runs in one forward pass (more: prompts apart). */
#define GK_SEQ_STEP_MAX 512

/* Micro-batch of a model with ring caches when gk_model_opts.n_ubatch is 0. */
#define GK_RING_UBATCH 512

/* RoPE frequencies made for a gk_rope_opts (gk_build_rope_ex), kept with the model. */
#define GK_MAX_ROPE_TABLES 8
typedef struct gk_rope_table {
    float theta, factor;
    int64_t rotary_dim;
    gk_rope_scaling scaling;
    gk_tensor *t;
} gk_rope_table;

struct gk_model {
    gk_runtime *rt;
    gk_config cfg;
    const gk_arch_ops *arch;
    gk_backend be;
    gk_dtype dtype;
    int64_t n_ctx, n_past;
    gk_tensor *w[GK_W_COUNT];     /* non-layer weights */
    gk_tensor **lw[GK_W_COUNT];   /* [n_layer] per-layer weights, NULL when absent */
    gk_tensor *inv_freq;          /* F32 [1][head_dim/2], RoPE frequencies after scaling */
    gk_rope_table ropes[GK_MAX_ROPE_TABLES]; /* others, made on demand */
    int n_ropes;
    size_t n_entries;             /* rows of the architecture's tensor table */
    gk_tensor ***ew;              /* [n_entries][n_layer, or 1] GK_W_NAMED weights */
    int64_t dims[GK_MAX_DIM_KEYS]; /* GK_DIM_KEY(i) values */
    gk_dtype kv_dtype;            /* of the caches: F32, F16 or BF16 */
    gk_tensor **k_cache, **v_cache; /* [n_layer] each kv_dtype [rows][Hkv*hd]: n_ctx rows,
                                       or a ring (gk_model_cache_rows) */
    int64_t *win;                 /* [n_layer] the window each layer's attention was built
                                     with (gk_build_attn_ex; 0 = none) */
    int64_t *srows;               /* [n_layer] cache rows per slot: n_ctx, or a ring's */
    int64_t n_slots;              /* sequence slots (gk_model_opts.n_seq_max); each layer's
                                     caches hold n_slots * srows[l] rows, slot s from row
                                     s * srows[l] */
    bool *slot_used;              /* [n_slots] held by a gk_seq */
    bool own_busy;                /* slot 0 is a gk_seq's: the model's own calls are refused */
    gk_fgraph *gb;                /* gk_seq_decode's graph of one token per sequence, kept
                                     for its size */
    int n_ring;                   /* layers whose caches are rings */
    int64_t n_ubatch_opt;         /* gk_model_opts.n_ubatch as given */
    int64_t n_ubatch;             /* tokens per forward graph (0 = no limit) */
    int64_t kv_hi;                /* 1 + the highest position written since the cache
                                     was last cleared (what a ring may have overwritten) */
    int64_t fwd_chunks;           /* micro-batches the last forward ran as */
    uint64_t weight_bytes;
    uint64_t mem_bytes;           /* everything allocated on the backend now */
    uint64_t mem_peak;            /* the most mem_bytes has been */
    /* Forward graphs are kept for the next call of their size: one token
     * (decode, built at load) and the last other count (prefill chunks). */
    gk_fgraph *g1, *gn;
    gk_fgraph *fwd;               /* the one run last (g1 or gn): the model's current nodes */
    gk_fgraph *step;              /* generate's decode step (built on first use) */
    bool step_unsupported;        /* the backend refused the step graph's GK_OP_SAMPLE */
    bool ran;                     /* a forward has run: logits and nodes are valid */
    float *host_logits;           /* [n_vocab] scratch for generate */
    int32_t *cache_ids;           /* [n_ctx] the ids at the cached positions
                                     [0, n_past) (keep_cache) */
};

/* The rope frequencies of the config (theta, scaling) for rotary dim r. */
GK_INTERNAL void gk_rope_freqs(const gk_config *c, float theta, int64_t r, gk_rope_scaling scaling, float factor,
                               float *inv);
/* Build the forward graph for n tokens through the architecture plugin. */
GK_INTERNAL gk_status gk_fgraph_build_forward(gk_model *m, int64_t n, gk_fgraph **out, gk_err *err);
/* The same where the tokens may be of different sequence slots. */
GK_INTERNAL gk_status gk_fgraph_build_mixed(gk_model *m, int64_t n, gk_fgraph **out, gk_err *err);
/* The LM head on n_rows rows of `hidden` chosen by the graph's ids input
 * (I32 [1][n_rows], row indices). */
GK_INTERNAL gk_status gk_fgraph_build_head_rows(gk_model *m, gk_tensor *hidden, int64_t n_rows, gk_fgraph **out,
                                                gk_err *err);
/* A graph applying the LM head to `hidden` (an existing tensor, not owned). */
GK_INTERNAL gk_status gk_fgraph_build_head(gk_model *m, gk_tensor *hidden, gk_fgraph **out,
                                           gk_err *err);
/* Forward of one token, the LM head on it and GK_OP_SAMPLE writing the
 * picked id into the graph's own ids input (generate's decode step). */
GK_INTERNAL gk_status gk_fgraph_build_step(gk_model *m, gk_fgraph **out, gk_err *err);
/* A fresh graph id, for a graph whose nodes changed (see gk_graph.id). */
GK_INTERNAL void gk_fgraph_new_id(gk_fgraph *fg);
/* Frees fg with its head graphs (NULL: nothing). */
GK_INTERNAL void gk_fgraph_destroy(gk_model *m, gk_fgraph *fg);
/* Check every node with the backend's supports_node; an unsupported op is an
 * error naming it (never a silent fallback). */
GK_INTERNAL gk_status gk_fgraph_check(gk_model *m, const gk_fgraph *fg, gk_err *err);
/* A sequence of gk_seq_*: its slot and what the model keeps for its own
 * (n_past, kv_hi, cache_ids). */
struct gk_seq {
    gk_model *m;
    int64_t slot, n_past, kv_hi;
    int32_t *ids; /* [n_ctx] */
};

/* Positions below `end` of a sequence (the model's own, or a gk_seq's
 * kv_hi) have been written to the caches. */
static inline void gk_kv_wrote(int64_t *kv_hi, int64_t end)
{
    if (end > *kv_hi)
        *kv_hi = end;
}
/* Account n bytes allocated on the backend (the peak follows). */
static inline void gk_model_mem_add(gk_model *m, uint64_t n)
{
    m->mem_bytes += n;
    if (m->mem_bytes > m->mem_peak)
        m->mem_peak = m->mem_bytes;
}
/* Backend-allocated tensor owned by the model (weights, caches). */
GK_INTERNAL gk_status gk_model_tensor_new(gk_model *m, gk_dtype dt, int64_t rows, int64_t cols,
                                          const char *name, int layer, gk_tensor **out, gk_err *err);
GK_INTERNAL void gk_model_tensor_free(gk_model *m, gk_tensor *t);
/* Run the LM head on the last row of the last forward; *out is the logits
 * tensor [1][n_vocab] in backend memory. */
GK_INTERNAL gk_status gk_model_run_last_logits(gk_model *m, gk_tensor **out, gk_err *err);
/* Logits of the last row of the last forward into m->host_logits. */
GK_INTERNAL gk_status gk_model_last_logits(gk_model *m, gk_err *err);

/* The sampler chain (sample.c). */
GK_INTERNAL double gk_rng_uniform(gk_rng *r);
GK_INTERNAL bool gk_sample_is_greedy(const gk_gen_opts *o);
/* Penalties take effect (a penalty set and a window other than 0). */
GK_INTERNAL bool gk_sample_penalties_on(const gk_gen_opts *o);
/* Options of the chain that GK_OP_SAMPLE knows only from ABI 1.3 on (the
 * penalties, min-p). */
GK_INTERNAL bool gk_sample_needs_abi13(const gk_gen_opts *o);
/* The chain o must be sampled on the host: it uses an option that backend be
 * (NULL: a backend's plain `sample` entry, which has none of them) cannot
 * run on the device. */
GK_INTERNAL bool gk_sample_host_only(const gk_backend *be, const gk_gen_opts *o);
/* true, with the rule and the value in why (may be NULL), when an option of
 * the chain is out of range. */
GK_INTERNAL bool gk_sample_opts_invalid(const gk_gen_opts *o, char *why, size_t len);
/* The chain with the draw u given; hist[n_hist] feeds the penalties. -1 when
 * memory runs out. */
GK_INTERNAL int32_t gk_sample_u(const float *logits, int64_t n_vocab, const gk_gen_opts *o,
                                const int32_t *hist, int64_t n_hist, double u);

#endif
