/* gk.h - the public API of libgk for people who run models.
 *
 * Conventions (every declaration below follows them):
 *   - Action functions return gk_status; GK_OK is 0. When a gk_err pointer is
 *     given (it may be NULL), a failure fills it with the code and a message
 *     naming the file, tensor or key at fault.
 *   - Objects are made by gk_x_create/open/load(..., gk_x **out) and released by
 *     gk_x_destroy/close(gk_x *), which accept NULL. On failure *out is NULL.
 *   - A returned const pointer stays valid until the object it came from is
 *     destroyed, unless the comment says otherwise. The caller frees nothing it
 *     did not allocate.
 * Plugin authors include gk_plugin.h, which includes this file.
 */
#ifndef GK_GK_H
#define GK_GK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(GK_BUILDING_LIB)
#define GK_API __attribute__((visibility("default")))
#else
#define GK_API
#endif

/* ---------------------------------------------------------------- errors */

typedef enum gk_status {
    GK_OK = 0,
    GK_ERR_NOMEM,        /* host or device allocation failed */
    GK_ERR_IO,           /* open/read/mmap failed */
    GK_ERR_FORMAT,       /* a file breaks its format's rules */
    GK_ERR_CONFIG,       /* config.json / INI value missing, wrong type or out of range */
    GK_ERR_UNSUPPORTED,  /* valid input we do not implement (op, dtype, feature) */
    GK_ERR_ABI,          /* plugin built against an incompatible ABI */
    GK_ERR_NOT_FOUND,    /* plugin, tensor, architecture or backend not found */
    GK_ERR_INVALID_ARG,  /* caller passed a value outside the documented range */
    GK_ERR_DEVICE,       /* GPU missing, driver too old, kernel failure */
    GK_ERR_PLUGIN,       /* plugin could not be opened or its init failed */
    GK_ERR_INTERNAL,     /* a bug in gk: please report */
    GK_ERR_BUSY,         /* (ABI 1.5) every sequence slot of the model is in use */
} gk_status;

/* Caller-owned error detail. code mirrors the returned status. */
typedef struct gk_err {
    gk_status code;
    char msg[512];
} gk_err;

/* Static name of a status ("format error"), never NULL. */
GK_API const char *gk_status_str(gk_status s);
/* libgk's version, the meson project version ("0.1.0"); static, never NULL. */
GK_API const char *gk_version(void);

/* ------------------------------------------------------ checked arithmetic */

/* Sizes and counts that size an allocation go through these: each stores the
 * exact result in *out and returns true, or returns false (leaving *out
 * unspecified) when the result does not fit the type. */
static inline bool gk_size_mul(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool gk_size_add(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool gk_i64_mul(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool gk_i64_add(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

/* ---------------------------------------------------------------- dtypes */

typedef enum gk_dtype {
    GK_DTYPE_F32 = 0,
    GK_DTYPE_F16,
    GK_DTYPE_BF16,
    GK_DTYPE_F64,
    GK_DTYPE_I64,
    GK_DTYPE_I32,
    GK_DTYPE_I16,
    GK_DTYPE_I8,
    GK_DTYPE_U64,
    GK_DTYPE_U32,
    GK_DTYPE_U16,
    GK_DTYPE_U8,
    GK_DTYPE_BOOL,
    GK_DTYPE_F8_E4M3,
    GK_DTYPE_F8_E5M2,
    GK_DTYPE_COUNT
} gk_dtype;

/* safetensors spelling ("F16", "BF16", ...); NULL for an out-of-range value. */
GK_API const char *gk_dtype_name(gk_dtype t);
/* Bytes per element (0 for an out-of-range value). */
GK_API size_t gk_dtype_size(gk_dtype t);
/* Parse the safetensors spelling; false when unknown or name is NULL (out
 * untouched then; out may be NULL to only test the name). */
GK_API bool gk_dtype_parse(const char *name, gk_dtype *out);

/* Scalar conversions used by every loader and backend (round to nearest even). */
GK_API float gk_f16_to_f32(uint16_t h);
GK_API uint16_t gk_f32_to_f16(float f);
GK_API float gk_bf16_to_f32(uint16_t h);
GK_API uint16_t gk_f32_to_bf16(float f);

/* ------------------------------------------------------------ safetensors */

#define GK_MAX_DIMS 8

typedef struct gk_safetensors gk_safetensors;

typedef struct gk_tensor_info {
    const char *name;          /* valid until gk_safetensors_close */
    gk_dtype dtype;
    int n_dims;
    int64_t shape[GK_MAX_DIMS];
    uint64_t nbytes;           /* size of the data in bytes */
    int shard;                 /* index of the file holding it (0 for a single file) */
} gk_tensor_info;

/* Open a .safetensors file, a model.safetensors.index.json (shards are opened
 * lazily, on first access to one of their tensors), or a model folder holding
 * either (the index first). Only headers are read; data
 * is mmap'd and never copied. Errors: GK_ERR_IO (missing, unreadable, not a
 * regular file, a symlink loop: the system's reason), GK_ERR_FORMAT (message
 * names the file and, where there is one, the tensor; names read from the
 * file are quoted with control characters escaped), GK_ERR_NOT_FOUND (a
 * folder with neither file), GK_ERR_INVALID_ARG (path or out NULL). Sizes that
 * overflow 64 bits are GK_ERR_FORMAT. Close with gk_safetensors_close. */
GK_API gk_status gk_safetensors_open(const char *path, gk_safetensors **out, gk_err *err);
GK_API void gk_safetensors_close(gk_safetensors *st);

/* The getters below accept NULL st (and an out-of-range i or a NULL name or
 * key): they answer 0, NULL or false, never crash. */
GK_API size_t gk_safetensors_count(const gk_safetensors *st);
/* Names in the order of the header (index order for a sharded checkpoint);
 * NULL for i >= count. */
GK_API const char *gk_safetensors_name(const gk_safetensors *st, size_t i);
/* Total size in bytes of every file making up the checkpoint (index excluded). */
GK_API uint64_t gk_safetensors_file_size(const gk_safetensors *st);
/* Distinct files of the checkpoint (1 for a single file). */
GK_API size_t gk_safetensors_shard_count(const gk_safetensors *st);
GK_API bool gk_safetensors_has(const gk_safetensors *st, const char *name);
/* The tensor lookups (info, bytes, read_*): GK_ERR_INVALID_ARG for a NULL st
 * or name, GK_ERR_NOT_FOUND when absent, and a shard's own error (GK_ERR_IO,
 * GK_ERR_FORMAT) when its file must be opened to answer and cannot be. */
/* Shapes come from the header (sharded: the shard's header is opened to
 * answer). out may be NULL (only checks the tensor). */
GK_API gk_status gk_safetensors_info(gk_safetensors *st, const char *name,
                                     gk_tensor_info *out, gk_err *err);
/* Zero-copy view of the raw bytes; *data valid until close. data and nbytes
 * may each be NULL. */
GK_API gk_status gk_safetensors_bytes(gk_safetensors *st, const char *name,
                                      const void **data, uint64_t *nbytes, gk_err *err);
/* Copy the values as float32 (from F32, F16, BF16, F64, I64, I32) into dst, which
 * holds `count` floats; count must equal the element count (else
 * GK_ERR_INVALID_ARG, as for dst NULL with count > 0); another dtype is
 * GK_ERR_UNSUPPORTED. */
GK_API gk_status gk_safetensors_read_f32(gk_safetensors *st, const char *name,
                                         float *dst, size_t count, gk_err *err);
/* Copy integer values (I64, I32) as int64 into dst of `count` elements; the
 * same rules as read_f32. */
GK_API gk_status gk_safetensors_read_i64(gk_safetensors *st, const char *name,
                                         int64_t *dst, size_t count, gk_err *err);
/* __metadata__ string values (first file, or the index's "metadata"). */
GK_API size_t gk_safetensors_meta_count(const gk_safetensors *st);
/* NULL for i >= meta_count. */
GK_API const char *gk_safetensors_meta_key(const gk_safetensors *st, size_t i);
/* NULL when absent (or st or key NULL). */
GK_API const char *gk_safetensors_meta(const gk_safetensors *st, const char *key);

/* ------------------------------------------------------------------ config */

typedef enum gk_norm { GK_NORM_RMS = 0, GK_NORM_LAYER } gk_norm;
typedef enum gk_act { GK_ACT_SILU = 0, GK_ACT_GELU_TANH, GK_ACT_GELU } gk_act;
typedef enum gk_rope_scaling {
    GK_ROPE_NONE = 0, GK_ROPE_LINEAR, GK_ROPE_LLAMA3
} gk_rope_scaling;

#define GK_MAX_EOS 8

#define GK_CONFIG_VERSION 2   /* 2: struct_size, version, the config.json text */
#define GK_CONFIG_JSON_MAX 65536

/* A model's hyperparameters: what transformers calls the config (TransformerConfig
 * in the original). Plain data: copy it freely.
 *
 * Growth: fields are only ever added at the end. gk_config_load and
 * gk_config_parse are macros passing the caller's sizeof(gk_config), and the
 * library writes no more than that, so an application built against an older
 * header keeps working; struct_size and version say what the library filled. */
typedef struct gk_config {
    uint32_t struct_size;       /* bytes the library filled (<= the caller's sizeof) */
    uint32_t version;           /* GK_CONFIG_VERSION of the library that filled it */
    char model_type[32];        /* "llama", "gpt2", ... ("" when absent) */
    char architecture[64];      /* architectures[0], "" when absent */
    int64_t n_vocab;
    int64_t n_embd;             /* hidden_size / n_embd */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;          /* = n_head when absent */
    int64_t head_dim;           /* explicit, else n_embd / n_head */
    int64_t n_ff;               /* intermediate_size / n_inner, else 4 * n_embd */
    int64_t n_ctx_train;        /* max_position_embeddings / n_positions */
    gk_norm norm;
    float norm_eps;
    gk_act act;
    bool has_norm_type;         /* norm/eps came from the file (rms_norm_eps or layer_norm_epsilon) */
    float rope_theta;           /* of full-attention layers where rope_parameters is keyed by
                                   layer type (transformers 5); gk_config_get_* reads the others */
    gk_rope_scaling rope_scaling;
    float rope_factor;
    float rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_orig_ctx;      /* original_max_position_embeddings (llama3) */
    bool tie_word_embeddings;
    bool attention_bias;        /* q/k/v (and o, for Llama) carry biases */
    bool mlp_bias;
    int64_t sliding_window;     /* tokens a query may look back (key j is seen from query i
                                   when i - window < j <= i); 0 = unlimited */
    gk_dtype dtype;             /* torch_dtype / dtype; F32 when absent */
    /* generation_config.json (or config.json as a fallback) */
    int64_t bos_id;             /* -1 when absent */
    int n_eos;
    int64_t eos_ids[GK_MAX_EOS];
    /* (version 2) config.json as read, for gk_config_get_*; "" when it is
     * longer than GK_CONFIG_JSON_MAX - 1 bytes (the getters then say so) */
    char json[GK_CONFIG_JSON_MAX];
} gk_config;

/* Parse config.json at `path` (a file, or a folder holding config.json), then
 * generation_config.json beside it when present (present but unreadable, e.g.
 * a folder or a symlink loop, is GK_ERR_IO). Errors name the key:
 * GK_ERR_CONFIG for bad values (integers must lie in [0, 2^31), so products of
 * two fit int64), GK_ERR_FORMAT for broken JSON, GK_ERR_IO,
 * GK_ERR_INVALID_ARG for path or out NULL, or out_size smaller than version
 * 1's struct. The first out_size bytes of *out are zeroed on failure. */
GK_API gk_status gk_config_load_sized(const char *path, gk_config *out, size_t out_size, gk_err *err);
#define gk_config_load(path, out, err) gk_config_load_sized((path), (out), sizeof *(out), (err))
/* The same from NUL-terminated JSON text already in memory (gen_json may be
 * NULL: no generation config; config_json or out NULL is GK_ERR_INVALID_ARG). */
GK_API gk_status gk_config_parse_sized(const char *config_json, const char *gen_json, gk_config *out,
                                       size_t out_size, gk_err *err);
#define gk_config_parse(cfg_json, gen_json, out, err) \
    gk_config_parse_sized((cfg_json), (gen_json), (out), sizeof *(out), (err))

/* Any config.json value, for architecture plugins and applications. key is a
 * path: "partial_rotary_factor", "rope_parameters.sliding_attention.rope_theta",
 * "layer_types.3" (arrays take an index). Absent or null: *out = def and
 * GK_OK. A value of the wrong type (a float where an integer is asked, a
 * string for a bool...) is GK_ERR_CONFIG naming the key and the value. A
 * config without its text (a struct from an older library, or a config.json
 * over GK_CONFIG_JSON_MAX) is GK_ERR_UNSUPPORTED. */
GK_API gk_status gk_config_get_int(const gk_config *c, const char *key, int64_t def, int64_t *out, gk_err *err);
GK_API gk_status gk_config_get_float(const gk_config *c, const char *key, double def, double *out, gk_err *err);
GK_API gk_status gk_config_get_bool(const gk_config *c, const char *key, bool def, bool *out, gk_err *err);
/* Copies a string value into out[cap] (longer is GK_ERR_CONFIG); def may be NULL
 * (then an absent key gives ""). */
GK_API gk_status gk_config_get_string(const gk_config *c, const char *key, const char *def, char *out,
                                      size_t cap, gk_err *err);
/* A numeric array into out[cap]: *n = its length (0 when absent or null); a
 * longer array or a non-number element is GK_ERR_CONFIG. */
GK_API gk_status gk_config_get_array(const gk_config *c, const char *key, double *out, size_t cap, size_t *n,
                                     gk_err *err);
/* Whether key is present and not null. */
GK_API bool gk_config_has(const gk_config *c, const char *key);
/* Whether key is present with the value null (transformers often gives an
 * absent key its default and a null one None). */
GK_API bool gk_config_is_null(const gk_config *c, const char *key);

/* ----------------------------------------------------------------- runtime */

typedef struct gk_runtime gk_runtime;

/* Load plugins. ini_path may be NULL: then the built-in defaults load every
 * plugin found next to libgk (build tree or install tree). Errors: GK_ERR_IO
 * (the INI cannot be read or is not a regular file), GK_ERR_CONFIG (bad INI,
 * with its line: a line longer than 197 bytes or holding a NUL byte is refused,
 * not split), GK_ERR_NOT_FOUND (plugin file, listing the folders searched),
 * GK_ERR_PLUGIN (not a plugin, init failed), GK_ERR_ABI; GK_ERR_INVALID_ARG
 * when out is NULL. */
GK_API gk_status gk_runtime_create(const char *ini_path, gk_runtime **out, gk_err *err);
/* Unloads the plugins; NULL is a no-op. */
GK_API void gk_runtime_destroy(gk_runtime *rt);

/* Registered plugins of each kind, for listing. Names valid until destroy.
 * Counts are 0 for a NULL rt; names are NULL for a NULL rt or i >= count. */
GK_API size_t gk_runtime_arch_count(const gk_runtime *rt);
GK_API const char *gk_runtime_arch_name(const gk_runtime *rt, size_t i);
GK_API size_t gk_runtime_backend_count(const gk_runtime *rt);
GK_API const char *gk_runtime_backend_name(const gk_runtime *rt, size_t i);
/* The INI's [runtime] backend ("auto" unless set); NULL for a NULL rt. */
GK_API const char *gk_runtime_default_backend(const gk_runtime *rt);

/* Architecture facts, the original's ModelSpec. */
typedef struct gk_model_spec {
    const char *name;               /* "llama" */
    const char *const *aliases;     /* NULL-terminated, may be NULL: {"mistral", "qwen2", NULL} */
    const char *const *hf_architectures; /* NULL-terminated: {"LlamaForCausalLM", NULL} */
    const char *const *model_types; /* NULL-terminated config.json model_type values */
    gk_norm norm;
    gk_act act;
    bool use_rope;
    bool use_qk_norm;
    bool use_pos_embed;             /* learned absolute positions (GPT-2) */
} gk_model_spec;

/* Look up by name or alias; NULL when unknown or when rt or name is NULL. */
GK_API const gk_model_spec *gk_runtime_find_arch(const gk_runtime *rt, const char *name);
/* Pick the architecture of a checkpoint from its config (architectures,
 * model_type; cfg may be NULL) and tensor names (st may be NULL: config only).
 * GK_ERR_NOT_FOUND names what was seen and lists the registered architectures;
 * GK_ERR_INVALID_ARG when rt or out is NULL. */
GK_API gk_status gk_runtime_detect_arch(const gk_runtime *rt, gk_safetensors *st,
                                        const gk_config *cfg, const gk_model_spec **out,
                                        gk_err *err);

/* ------------------------------------------------------------------- model */

typedef struct gk_model gk_model;

typedef struct gk_model_opts {
    const char *backend;   /* backend plugin name, "auto" or NULL (the runtime default) */
    const char *dtype;     /* "f32", "f16", "bf16", "auto" or NULL (= the checkpoint's) */
    const char *arch;      /* architecture name/alias, or NULL to detect */
    int64_t n_ctx;         /* KV-cache length; 0 = min(max positions, 4096); see gk_model_load */
    /* KV-cache dtype: "f32", "f16", "bf16", "auto" or NULL (= the model dtype:
     * a half-precision model keeps half the cache bytes; an f32 model keeps f32) */
    const char *kv_dtype;
    /* (optional) called as weights upload: bytes done of total. */
    void (*progress)(uint64_t done, uint64_t total, void *user);
    void *progress_user;
    /* (ABI 1.4) the most tokens one forward graph takes (llama.cpp's
     * n_ubatch): a longer gk_model_forward runs as several micro-batches.
     * 0 = 512 where a layer keeps a sliding-window ring cache (see
     * gk_model_cache_rows), else the whole call in one graph. */
    int64_t n_ubatch;
    /* (ABI 1.5) sequences the model holds at once, each with its own KV-cache
     * slot (gk_seq_*); 0 = 1. The model's own calls (gk_model_forward,
     * generate) use slot 0 while no gk_seq has it. */
    int64_t n_seq_max;
} gk_model_opts;

/* Load a model folder (config.json + safetensors), a .safetensors file or an
 * index file. Weights are checked against the architecture's tensor table (a
 * missing tensor, wrong shape or unknown name is GK_ERR_FORMAT naming it; so
 * is a bias tensor the config's attention_bias / mlp_bias does not announce).
 * opts may be NULL (all defaults); rt, path or out NULL is GK_ERR_INVALID_ARG.
 * The context is checked before anything is uploaded, in this order: n_ctx < 0
 * or n_ubatch < 0 is GK_ERR_INVALID_ARG; a KV cache whose size overflows 64
 * bits is GK_ERR_INVALID_ARG naming n_ctx; weights plus cache beyond the
 * device's free memory is GK_ERR_NOMEM giving both sizes; more than 2^31 - 1
 * positions is GK_ERR_INVALID_ARG. Where config.json has a sliding window
 * (or layer_types), layers may keep smaller ring caches: the weights alone
 * are checked first, and the cache, once its rows are known, against what
 * is free after them (GK_ERR_NOMEM naming both). opts_size below
 * offsetof(gk_model_opts, n_ubatch) with opts non-NULL is
 * GK_ERR_INVALID_ARG. */
GK_API gk_status gk_model_load_sized(gk_runtime *rt, const char *path, const gk_model_opts *opts,
                                     size_t opts_size, gk_model **out, gk_err *err);
/* gk_model_load passes the caller's sizeof(gk_model_opts), so fields added
 * at its end are read only from callers that know them. The function
 * gk_model_load, which applications built before n_ubatch call, takes the
 * struct as it was then. */
GK_API gk_status(gk_model_load)(gk_runtime *rt, const char *path, const gk_model_opts *opts, gk_model **out,
                                 gk_err *err);
#define gk_model_load(rt, path, opts, out, err) \
    gk_model_load_sized((rt), (path), (opts), sizeof(gk_model_opts), (out), (err))
GK_API void gk_model_destroy(gk_model *m);

/* Getters: a NULL model gives NULL (pointers), GK_DTYPE_COUNT (dtype) or 0. */
GK_API const gk_config *gk_model_config(const gk_model *m);
GK_API const gk_model_spec *gk_model_spec_of(const gk_model *m);
GK_API const char *gk_model_backend_name(const gk_model *m);
GK_API gk_dtype gk_model_dtype(const gk_model *m);
GK_API int64_t gk_model_n_ctx(const gk_model *m);
/* The dtype the KV cache is stored in. */
GK_API gk_dtype gk_model_kv_dtype(const gk_model *m);
/* Tokens currently in the KV cache. */
GK_API int64_t gk_model_n_past(const gk_model *m);
/* The most tokens one forward graph takes (gk_model_opts.n_ubatch as
 * resolved; 0 = no limit). */
GK_API int64_t gk_model_n_ubatch(const gk_model *m);
/* Rows of layer il's K (and V) cache: n_ctx, or fewer where the layer's
 * attention has a sliding window W and the backend keeps a ring of
 * W + n_ubatch - 1 rows (position p in row p % rows). 0 for a NULL model or
 * a layer outside [0, n_layer). */
GK_API int64_t gk_model_cache_rows(const gk_model *m, int64_t il);
/* What the backend runs on. */
typedef struct gk_device_props {
    char name[128];          /* "NVIDIA H100 80GB HBM3", "cpu" */
    uint64_t mem_total;      /* bytes usable by the backend */
    uint64_t mem_free;
    double peak_bw_gbs;      /* memory bandwidth, 0 when unknown */
    bool is_gpu;
} gk_device_props;
/* The model's backend device, with its memory now. m or out NULL:
 * GK_ERR_INVALID_ARG. */
GK_API gk_status gk_model_device(const gk_model *m, gk_device_props *out, gk_err *err);
/* (1.6) How the backend ran the model's last graph, one line for a person
 * (the CUDA backend: the persistent decode kernel or the per-op path, and
 * why); "" when the backend does not say. buf NULL or len 0: nothing. */
GK_API void gk_model_path_note(const gk_model *m, char *buf, size_t len);
/* Bytes of weights held by the backend. */
GK_API uint64_t gk_model_weight_bytes(const gk_model *m);
/* Weight bytes one decode step reads: every weight of the one-token graph and
 * the LM head, but one row of an embedding table and, for an expert-indexed
 * linear, only the k selected experts' share. Equals gk_model_weight_bytes
 * for a dense model with an untied head less its embedding; the basis of
 * a decode roofline. 0 for a NULL model. */
GK_API uint64_t gk_model_step_weight_bytes(const gk_model *m);
/* The most bytes the model has held on its backend at once since load:
 * weights, KV cache and activations. */
GK_API uint64_t gk_model_mem_peak(const gk_model *m);

/* Run n tokens at positions n_past .. n_past+n-1 through the model, appending
 * their keys and values to the cache. hidden (may be NULL) receives the final
 * normed hidden states [n][n_embd]. GK_ERR_INVALID_ARG when m or ids is NULL,
 * n < 1, the cache would overflow (any n > n_ctx - n_past) or an id is outside
 * the vocabulary; the model is unchanged then. */
GK_API gk_status gk_model_forward(gk_model *m, const int32_t *ids, int64_t n,
                                  float *hidden, gk_err *err);
/* Logits [n][n_vocab] of the last forward call (rows selected: all of them).
 * GK_ERR_INVALID_ARG when m or logits is NULL or no forward call ran yet;
 * gk_model_generate leaves none to read (its decode steps are graphs of their
 * own), until the next gk_model_forward. A forward of more than n_ubatch
 * tokens keeps only its last micro-batch's rows: its logits are
 * GK_ERR_INVALID_ARG saying so (forward at most n_ubatch tokens at a time to
 * read every row). */
GK_API gk_status gk_model_logits(gk_model *m, float *logits, gk_err *err);
/* Drop cached positions >= n_keep (0 clears the cache). GK_ERR_INVALID_ARG
 * when m is NULL or n_keep is outside [0, n_past] (nothing changes), and
 * where a ring cache (gk_model_cache_rows) has overwritten rows the kept
 * positions need: then n_keep must be 0 or at least gk_model_min_keep. */
GK_API gk_status gk_model_truncate(gk_model *m, int64_t n_keep, gk_err *err);
/* The smallest n_keep > 0 gk_model_truncate accepts now (0 without ring
 * caches): positions written since the cache was last cleared, less
 * n_ubatch. */
GK_API int64_t gk_model_min_keep(const gk_model *m);

/* ------------------------------------------------- sequences (ABI 1.5)
 * A model loaded with n_seq_max > 1 holds that many sequences, each with its
 * own KV-cache slot of n_ctx positions (or rings: gk_model_cache_rows), so
 * requests can share a model: gk_seq_decode runs one token of each of many
 * sequences in one forward pass (one read of the weights for all of them). */
typedef struct gk_seq gk_seq;
/* A new empty sequence in a free slot (slot 0, the model's own, last):
 * GK_ERR_BUSY when every slot is taken; GK_ERR_INVALID_ARG for NULLs. */
GK_API gk_status gk_seq_new(gk_model *m, gk_seq **out, gk_err *err);
/* Frees the slot (NULL: nothing). Before gk_model_destroy. */
GK_API void gk_seq_free(gk_seq *s);
GK_API int64_t gk_seq_n_past(const gk_seq *s);
/* As gk_model_truncate, for the sequence (ring rules included). */
GK_API gk_status gk_seq_truncate(gk_seq *s, int64_t n_keep, gk_err *err);
/* The smallest n_keep > 0 gk_seq_truncate accepts now (as gk_model_min_keep). */
GK_API int64_t gk_seq_min_keep(const gk_seq *s);
/* The ids cached at positions [0, n_past) (valid until the next call on s). */
GK_API const int32_t *gk_seq_ids(const gk_seq *s);
typedef struct gk_seq_input {
    gk_seq *seq;
    const int32_t *ids; /* n ids, fed at the sequence's next positions */
    int64_t n;          /* >= 1 */
} gk_seq_input;
/* Feed each input's ids to its sequence; logits (may be NULL) receives
 * [n_in][n_vocab]: the logits after each input's last id. All the inputs
 * run in one forward pass (prompt chunks beside the single tokens of running
 * sequences) while they total at most max(512, n_ubatch) ids and none is
 * longer than n_ubatch (when set); otherwise each longer one runs first in
 * its own micro-batches, and the single ids together. GK_ERR_INVALID_ARG (nothing
 * changes) for a NULL, n < 1, an id outside the vocabulary, a sequence of
 * another model or given twice, or more ids than its slot has room for. */
GK_API gk_status gk_seq_decode(gk_model *m, const gk_seq_input *in, int64_t n_in, float *logits, gk_err *err);

/* Graph nodes of the last forward call, for comparing backends node by node.
 * Names are valid until the next forward call. Before any forward call (or
 * after gk_model_generate, as for gk_model_logits), or
 * for a NULL model, there are none: count 0, and info/read of any i (as of
 * i >= count) are GK_ERR_INVALID_ARG. name, layer, rows and cols may each be
 * NULL. */
GK_API size_t gk_model_node_count(const gk_model *m);
GK_API gk_status gk_model_node_info(const gk_model *m, size_t i, const char **name,
                                    int *layer, int64_t *rows, int64_t *cols);
/* Copy node i's output (rows*cols floats) to dst (NULL: GK_ERR_INVALID_ARG). */
GK_API gk_status gk_model_node_read(gk_model *m, size_t i, float *dst, gk_err *err);

/* ---------------------------------------------------------------- generate */

/* Called with each new token; return false to stop. */
typedef bool (*gk_token_cb)(int32_t token, void *user);

typedef struct gk_tokenizer gk_tokenizer;

typedef struct gk_gen_opts {
    int64_t max_new_tokens;  /* 0 generates nothing; -1 = until an EOS id or a
                                full context; otherwise >= 0 */
    float temperature;       /* 0 = greedy; finite, >= 0. One so small that
                                logit / temperature overflows is greedy too */
    int top_k;               /* 0 = off; >= 0 */
    float top_p;             /* 1 = off; (0, 1] (NaN is out of range) */
    uint64_t seed;
    int n_eos;               /* >= 0 */
    const int64_t *eos_ids;  /* [n_eos], stop after emitting any of these;
                                may be NULL only when n_eos is 0 */
    bool use_cache;          /* false: recompute the whole sequence each step */
    gk_token_cb on_token;    /* may be NULL */
    void *user;
    /* The sampler chain, in this order (as llama.cpp's and transformers'):
     * penalties, temperature, top-k, top-p, min-p, draw. Penalties apply
     * when greedy too. With a penalty or min-p on, the decode steps sample
     * on the device when the backend's GK_OP_SAMPLE knows them (ABI 1.3:
     * cpu_ref, cuda); on an older backend, and for the first token, they
     * are sampled on the host from the logits, which costs a logits read
     * per token but gives the same picks. */
    float min_p;             /* 0 = off; [0, 1]: drop tokens whose probability
                                is below min_p times the largest one */
    float repetition_penalty; /* 1 = off; finite, > 0: a logit l of a token seen
                                in the window becomes l / p (l > 0) or l * p */
    float presence_penalty;  /* 0 = off; finite: l -= presence_penalty once per
                                token seen in the window (repetition applies
                                first, then l -= frequency * count +
                                presence * (count > 0)) */
    float frequency_penalty; /* 0 = off; finite: l -= frequency_penalty * count */
    int64_t penalty_last_n;  /* the window: the last N ids of prompt and output
                                (0 = penalties off, -1 = the whole context) */
    /* Stop strings, matched on the decoded text of the new tokens (across
     * token boundaries): generation ends with the token that completes one;
     * stats say which and where its text starts, so the caller leaves it
     * out. Needs the tokenizer. The text is gk_tokenizer_decode of the new
     * tokens with skip_special (ids beyond the tokenizer's vocabulary, the
     * embedding's padding, have no text), decoded whole after each token
     * (so a string split over tokens or over one character's bytes is
     * found as in the final text). */
    int n_stop;              /* >= 0 */
    const char *const *stop; /* [n_stop] non-empty NUL-terminated strings */
    const gk_tokenizer *tokenizer; /* for stop strings; NULL when n_stop is 0 */
    bool keep_cache;         /* keep the cached positions the prompt shares with
                                what the cache holds and prefill only the rest
                                (false: clear the cache first). The model
                                remembers the ids it cached (gk_model_forward,
                                gk_model_truncate, generate); when the whole
                                prompt is cached, its last token is run again
                                for its logits. Only with use_cache. Tokens
                                and logits are those of a fresh run. */
} gk_gen_opts;

/* Defaults as in transformers' generate: greedy, 100 tokens, cache on. */
GK_API gk_gen_opts gk_gen_opts_default(void);

/* ---------------------------------------------------- generation_config.json */

/* Where a generation setting came from, for telling the user. */
typedef enum gk_gen_src {
    GK_GEN_SRC_DEFAULT = 0, /* the caller's default (e.g. gk_gen_opts_default) */
    GK_GEN_SRC_FILE,        /* the model's generation_config.json */
    GK_GEN_SRC_USER         /* the caller's user (a flag, a request field): only
                               callers set this one */
} gk_gen_src;

/* What gk_gen_config_load found, beside the values it wrote into opts. */
typedef struct gk_gen_sources {
    gk_gen_src do_sample, temperature, top_k, top_p, min_p, repetition_penalty,
               penalty_last_n, max_new_tokens, eos;
    bool do_sample_value;     /* the file's do_sample (false when absent, as in
                                 transformers) */
    int64_t max_length;       /* the file's max_length when it has no
                                 max_new_tokens, else -1. It counts the prompt:
                                 the caller makes it max_new_tokens =
                                 max(0, max_length - prompt tokens) */
    int n_eos;                /* the file's eos_token_id; opts->eos_ids points */
    int64_t eos_ids[GK_MAX_EOS]; /* here when the file has the key */
    char ignored[256];        /* "" or what the file sets that gk does not do
                                 ("num_beams 4; temperature 0.6 (do_sample is
                                 false)"), for a note to the user */
} gk_gen_sources;

/* Apply the generation_config.json of model_dir (a model folder, or a file in
 * it such as its config.json) to opts, with transformers' meaning: opts holds
 * the caller's defaults on entry and only what the file sets is replaced.
 * Keys read: do_sample, temperature, top_k, top_p, min_p, repetition_penalty,
 * max_new_tokens (else max_length, see gk_gen_sources), eos_token_id (an id or
 * a list; an empty list: no EOS). do_sample false, or absent from a file that
 * exists, is greedy whatever temperature says (temperature 0); do_sample true
 * takes the file's temperature, top_k and top_p or transformers' defaults 1,
 * 50 and 1 (min_p: off). The file's top_k, top_p and min_p are kept with
 * do_sample false too, for a caller that turns sampling on. A file's
 * repetition_penalty covers the whole sequence in transformers, so it sets
 * penalty_last_n to -1. null is the same as absent; other keys are ignored.
 * src is filled from scratch (src->ignored names keys whose setting gk does
 * not implement, such as num_beams > 1); opts->eos_ids may point into src, so
 * src outlives opts' use. No file: GK_OK with opts untouched and every source
 * GK_GEN_SRC_DEFAULT. Errors (opts and src untouched): GK_ERR_FORMAT for broken
 * JSON or a top level that is not an object (naming the file and where),
 * GK_ERR_CONFIG for a value of the wrong type or range (naming the file and the
 * key: "temperature must be a finite number >= 0, got -1"), GK_ERR_IO for a
 * file that exists and cannot be read, GK_ERR_INVALID_ARG for a NULL
 * argument. */
GK_API gk_status gk_gen_config_load(const char *model_dir, gk_gen_opts *opts, gk_gen_sources *src,
                                    gk_err *err);
/* The same from NUL-terminated JSON text; name is the file name for messages
 * (NULL: "generation_config.json"). */
GK_API gk_status gk_gen_config_parse(const char *json, const char *name, gk_gen_opts *opts,
                                     gk_gen_sources *src, gk_err *err);
/* "default", "generation_config.json" or "user"; "?" for another value. */
GK_API const char *gk_gen_src_str(gk_gen_src s);

typedef enum gk_finish {
    GK_FINISH_LENGTH = 0, /* max_new_tokens reached */
    GK_FINISH_EOS,        /* an EOS id was emitted (it is in out) */
    GK_FINISH_STOP,       /* a stop string was completed */
    GK_FINISH_CALLBACK,   /* on_token returned false */
    GK_FINISH_CONTEXT     /* the context is full (max_new_tokens -1) */
} gk_finish;

typedef struct gk_gen_stats {
    int64_t n_prompt, n_gen;
    double t_prefill_s, t_decode_s;
    int64_t n_reused;        /* prompt tokens found in the cache (keep_cache) */
    int64_t n_prefill;       /* prompt tokens run through the model */
    gk_finish finish;
    /* finish is set on every return that generated: with several reasons at
     * one token, STOP wins over EOS, EOS over CALLBACK, CALLBACK over
     * LENGTH/CONTEXT. A stop string found at the same token as another is
     * the one starting first (then the lower index). */
    int stop_index;          /* GK_FINISH_STOP: which stop string; else -1 */
    size_t stop_offset;      /* GK_FINISH_STOP: bytes of the decoded new
                                tokens before the stop string starts */
} gk_gen_stats;

/* Clear the cache (or, with keep_cache, keep what it shares with the prompt),
 * run the prompt, then sample up to max_new_tokens. out receives the new
 * tokens (capacity max_new_tokens, or n_ctx - n_prompt for -1); *n_out their
 * count. stats may be NULL. Also GK_ERR_INVALID_ARG: n_stop > 0 without the
 * tokenizer, a NULL or empty stop string, max_new_tokens below -1.
 * GK_ERR_INVALID_ARG (nothing generated, *n_out 0 when n_out is given) when m,
 * prompt, opts, out or n_out is NULL, n_prompt < 1, a prompt id is outside the
 * vocabulary, an option is outside the range given in gk_gen_opts ("temperature
 * must be a finite number >= 0", ...), or prompt plus new tokens exceed the
 * context (compared without overflow, so any max_new_tokens is safe). */
GK_API gk_status gk_model_generate(gk_model *m, const int32_t *prompt, int64_t n_prompt,
                                   const gk_gen_opts *opts, int32_t *out, int64_t *n_out,
                                   gk_gen_stats *stats, gk_err *err);

/* Pick a token from one row of logits as generate does (rng state advanced,
 * except when greedy). Exposed so tests can check the sampling rules against an
 * oracle. A NaN logit is never picked unless all are (then 0). Returns -1 when
 * logits or opts is NULL, n_vocab is outside [1, 2^31 - 1], an option is
 * outside the range given in gk_gen_opts, rng is NULL while not greedy, or
 * memory runs out. */
/* splitmix64: each draw adds 0x9E3779B97F4A7C15 to s, then mixes s into the
 * output; so the draw after k draws from seed S is a function of (S, k),
 * which a backend's sampler (GK_OP_SAMPLE) computes the same way. */
typedef struct gk_rng { uint64_t s; } gk_rng;
/* r NULL: nothing happens. */
GK_API void gk_rng_seed(gk_rng *r, uint64_t seed);
GK_API int32_t gk_sample(const float *logits, int64_t n_vocab, const gk_gen_opts *opts,
                         gk_rng *rng);
/* gk_sample with the penalties: history[n_history] is the sequence so far
 * (prompt and output; the window penalty_last_n is taken from its end). -1
 * also when n_history < 0, or history is NULL while n_history > 0. gk_sample
 * is this with no history (so no penalties; min-p applies). */
GK_API int32_t gk_sample_ex(const float *logits, int64_t n_vocab, const gk_gen_opts *opts,
                            const int32_t *history, int64_t n_history, gk_rng *rng);

/* --------------------------------------------------------------- tokenizer */

/* Load a HuggingFace tokenizer.json (path to the file, or a folder holding it;
 * tokenizer_config.json beside it is read for bos/eos when present). A feature
 * of the file we do not implement is GK_ERR_UNSUPPORTED naming it, never
 * silently different ids. path or out NULL is GK_ERR_INVALID_ARG. Destroy with
 * gk_tokenizer_destroy. */
GK_API gk_status gk_tokenizer_load(const char *path, gk_tokenizer **out, gk_err *err);
GK_API void gk_tokenizer_destroy(gk_tokenizer *t);
/* The getters accept a NULL tokenizer: vocab_size 0, ids -1, token NULL. */
/* Vocabulary size including added tokens (highest id + 1). */
GK_API int64_t gk_tokenizer_vocab_size(const gk_tokenizer *t);
/* -1 when the tokenizer has none. */
GK_API int32_t gk_tokenizer_bos_id(const gk_tokenizer *t);
GK_API int32_t gk_tokenizer_eos_id(const gk_tokenizer *t);
/* The token's string as stored in the vocabulary (NULL for an unknown or
 * out-of-range id), and the id of a token string (-1 when absent or token is
 * NULL). */
GK_API const char *gk_tokenizer_token(const gk_tokenizer *t, int32_t id);
GK_API int32_t gk_tokenizer_token_id(const gk_tokenizer *t, const char *token);
/* Encode len bytes of UTF-8 text (invalid UTF-8 is GK_ERR_INVALID_ARG naming
 * the byte offset). add_special applies the post-processor (e.g. BOS), as
 * transformers' add_special_tokens=True. *ids is malloc'd: the caller frees it.
 * text may be NULL only when len is 0; t, ids or n_ids NULL is
 * GK_ERR_INVALID_ARG (*ids NULL and *n_ids 0 on any failure, where given). */
GK_API gk_status gk_tokenizer_encode(const gk_tokenizer *t, const char *text, size_t len,
                                     bool add_special, int32_t **ids, size_t *n_ids, gk_err *err);
/* Decode ids to UTF-8 (NUL-terminated, malloc'd: the caller frees it). skip_special
 * drops special tokens, as transformers' skip_special_tokens. An id outside the
 * vocabulary is GK_ERR_INVALID_ARG naming its position. ids may be NULL only
 * when n_ids is 0; len may be NULL; t or text NULL is GK_ERR_INVALID_ARG
 * (*text NULL on any failure, where given). */
GK_API gk_status gk_tokenizer_decode(const gk_tokenizer *t, const int32_t *ids, size_t n_ids,
                                     bool skip_special, char **text, size_t *len, gk_err *err);

/* Streaming decode: ids pushed a few at a time (generated tokens), whose text
 * is at every point what gk_tokenizer_decode(all of them, skip_special)
 * gives, at a cost per push that does not grow with the ids before it (for
 * the decoders of every tokenizer.json we have met; a file whose decoders
 * rewrite the joined text as a whole, such as a Replace after Fuse, is
 * decoded whole at each push). The end of the text may change at a later
 * push: a U+FFFD at its end can be half of a character that a later id
 * completes, and with ByteFallback a run of <0xXX> tokens that a later byte
 * leaves invalid becomes one U+FFFD per byte (as a whole decode has it). The
 * tokenizer must outlive the stream; t or out NULL is GK_ERR_INVALID_ARG. */
typedef struct gk_decode_stream gk_decode_stream;
GK_API gk_status gk_decode_stream_new(const gk_tokenizer *t, bool skip_special, gk_decode_stream **out,
                                      gk_err *err);
/* Append n ids (ids may be NULL when n is 0). An id outside the vocabulary is
 * GK_ERR_INVALID_ARG naming it; on any failure nothing is appended and the
 * text is as it was. */
GK_API gk_status gk_decode_stream_push(gk_decode_stream *s, const int32_t *ids, size_t n, gk_err *err);
/* The text of every id pushed so far: NUL-terminated (NUL bytes possible
 * inside; *len is its length, len may be NULL), owned by the stream, valid
 * until the next push or destroy. NULL for a NULL stream. */
GK_API const char *gk_decode_stream_text(const gk_decode_stream *s, size_t *len);
GK_API void gk_decode_stream_destroy(gk_decode_stream *s);

/* ------------------------------------------------------------ chat templates */

/* A model's Jinja chat template, rendered the way transformers'
 * apply_chat_template(tokenize=False) does (trim_blocks, lstrip_blocks, loop
 * controls, tojson, raise_exception, strftime_now; variables messages,
 * add_generation_prompt, tools, documents, the special tokens, and any extra
 * ones). */
typedef struct gk_chat_template gk_chat_template;

/* From a model folder: tokenizer_config.json's chat_template (a string, or a
 * list of {name, template}: name selects one, NULL the "default"), else
 * chat_template.jinja; bos/eos and the other special tokens from
 * tokenizer_config.json. GK_ERR_NOT_FOUND when the folder has no template; a
 * syntax error or an unsupported construct is GK_ERR_UNSUPPORTED naming the
 * line and column. */
GK_API gk_status gk_chat_template_load(const char *model_dir, const char *name, gk_chat_template **out,
                                       gk_err *err);
/* From template text; special_tokens_json is an object of token names to
 * strings ({"bos_token": "<s>", ...}) or NULL. */
GK_API gk_status gk_chat_template_parse(const char *text, size_t len, const char *special_tokens_json,
                                        gk_chat_template **out, gk_err *err);
GK_API void gk_chat_template_destroy(gk_chat_template *t);

/* One message. content NULL is a message without content (None); the JSON
 * fields, when not NULL, are parsed and passed as values (tool_calls: an
 * array as OpenAI's API gives it). */
typedef struct gk_chat_msg {
    const char *role;            /* "system", "user", "assistant", "tool", ... */
    const char *content;
    const char *tool_calls_json; /* assistant: [{"type": "function", "function": {...}}] */
    const char *tool_call_id;    /* tool */
    const char *name;            /* tool: the function's name */
} gk_chat_msg;

/* Render msgs (n >= 1). extra_json: NULL or an object of further variables
 * ("tools", "documents", "enable_thinking", a special token's override...).
 * *out is malloc'd (NUL-terminated; *len, when given, its length). The
 * template's raise_exception(msg) is GK_ERR_INVALID_ARG with msg as the
 * message; any other failure while rendering names its cause. */
GK_API gk_status gk_chat_render(const gk_chat_template *t, const gk_chat_msg *msgs, size_t n,
                                bool add_generation_prompt, const char *extra_json, char **out, size_t *len,
                                gk_err *err);
/* The same with the messages as a JSON array of objects (any fields: they
 * reach the template as they are). */
GK_API gk_status gk_chat_render_json(const gk_chat_template *t, const char *messages_json,
                                     bool add_generation_prompt, const char *extra_json, char **out, size_t *len,
                                     gk_err *err);

/* Fix the clock strftime_now reads, in seconds since the epoch read as a
 * naive UTC time (0: the real local clock again), for reproducible renders
 * and golden checks. Process-wide. */
GK_API void gk_chat_set_clock(int64_t unix_seconds);

#ifdef __cplusplus
}
#endif
#endif /* GK_GK_H */
