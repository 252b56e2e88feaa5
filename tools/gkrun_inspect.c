/* gkrun inspect - what a checkpoint holds, without loading its data.
 *
 * Names and strings read from the files are printed escaped (control
 * characters cannot split the table or reach the terminal); --json leaves the
 * escaping to JSON. */
#include "gkrun.h"

#include <cjson/cJSON.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void shape_str(const gk_tensor_info *ti, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ti->n_dims && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)ti->shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* Text read from a file, escaped, then padded with spaces to width bytes. */
static void put_text(const char *s, size_t width)
{
    if (!s)
        s = "";
    for (size_t w = gkrun_put_escaped(stdout, s, strlen(s)); w < width; w++)
        putchar(' ');
}

static const char *norm_name(gk_norm n) { return n == GK_NORM_LAYER ? "layernorm" : "rmsnorm"; }
static const char *act_name(gk_act a)
{
    return a == GK_ACT_SILU ? "silu" : a == GK_ACT_GELU_TANH ? "gelu_tanh" : "gelu";
}
static const char *rope_name(gk_rope_scaling r)
{
    return r == GK_ROPE_LLAMA3 ? "llama3" : r == GK_ROPE_LINEAR ? "linear" : "none";
}

static cJSON *config_json(const gk_config *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    cJSON_AddStringToObject(o, "architecture", c->architecture);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->n_vocab);
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->n_embd);
    cJSON_AddNumberToObject(o, "num_layers", (double)c->n_layer);
    cJSON_AddNumberToObject(o, "num_heads", (double)c->n_head);
    cJSON_AddNumberToObject(o, "num_kv_heads", (double)c->n_head_kv);
    cJSON_AddNumberToObject(o, "head_dim", (double)c->head_dim);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->n_ff);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)c->n_ctx_train);
    cJSON_AddStringToObject(o, "norm_type", norm_name(c->norm));
    cJSON_AddNumberToObject(o, "norm_eps", c->norm_eps);
    cJSON_AddStringToObject(o, "activation", act_name(c->act));
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(o, "rope_scaling", rope_name(c->rope_scaling));
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddBoolToObject(o, "attention_bias", c->attention_bias);
    cJSON_AddStringToObject(o, "dtype", gk_dtype_name(c->dtype));
    cJSON *eos = cJSON_AddArrayToObject(o, "eos_token_ids");
    for (int i = 0; i < c->n_eos; i++)
        cJSON_AddItemToArray(eos, cJSON_CreateNumber((double)c->eos_ids[i]));
    return o;
}

static void print_config(const gk_config *c)
{
    fputs("config: ", stdout);
    put_text(c->model_type[0] ? c->model_type : "?", 0);
    fputs(" (", stdout);
    put_text(c->architecture[0] ? c->architecture : "?", 0);
    fputs(")\n", stdout);
    printf("  vocab %lld, hidden %lld, layers %lld, heads %lld (kv %lld), head_dim %lld, ff %lld\n",
           (long long)c->n_vocab, (long long)c->n_embd, (long long)c->n_layer, (long long)c->n_head,
           (long long)c->n_head_kv, (long long)c->head_dim, (long long)c->n_ff);
    printf("  %s eps %g, %s, rope theta %g scaling %s, max positions %lld, tied head %s, dtype %s\n",
           norm_name(c->norm), (double)c->norm_eps, act_name(c->act), (double)c->rope_theta,
           rope_name(c->rope_scaling), (long long)c->n_ctx_train, c->tie_word_embeddings ? "yes" : "no",
           gk_dtype_name(c->dtype));
}

int gkrun_inspect(int argc, char **argv, const gkrun_common *common)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "gkrun inspect: unknown option '%s'\n", argv[i]);
            return 2;
        } else
            path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: gkrun inspect PATH [--json]\n");
        return 2;
    }
    int rc = 1;
    gk_err err = {0};
    gk_safetensors *st = NULL;
    gk_runtime *rt = NULL;
    cJSON *root = NULL;
    const char *weights = path;
    if (gk_safetensors_open(path, &st, &err) != GK_OK) {
        rc = gkrun_fail(&err);
        goto out;
    }
    /* config.json in the folder, or beside the file, when there is one */
    struct stat sb;
    char cfg_path[4096];
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", path);
    } else {
        char *dcopy = strdup(path);
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dcopy ? dirname(dcopy) : ".");
        free(dcopy);
    }
    gk_config cfg;
    bool have_cfg = false;
    if (stat(cfg_path, &sb) == 0) {
        if (gk_config_load(cfg_path, &cfg, &err) != GK_OK) {
            rc = gkrun_fail(&err);
            goto out;
        }
        have_cfg = true;
    }
    rt = gkrun_runtime(common);
    if (!rt)
        goto out;
    const gk_model_spec *spec = NULL;
    gk_err derr = {0};
    gk_runtime_detect_arch(rt, st, have_cfg ? &cfg : NULL, &spec, &derr);

    size_t n = gk_safetensors_count(st);
    if (json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "path", weights);
        cJSON_AddNumberToObject(root, "file_size", (double)gk_safetensors_file_size(st));
        cJSON_AddNumberToObject(root, "shards", (double)gk_safetensors_shard_count(st));
        cJSON_AddNumberToObject(root, "tensor_count", (double)n);
        if (spec)
            cJSON_AddStringToObject(root, "architecture", spec->name);
        else
            cJSON_AddStringToObject(root, "architecture_error", derr.msg);
        if (have_cfg)
            cJSON_AddItemToObject(root, "config", config_json(&cfg));
        cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
        for (size_t i = 0; i < gk_safetensors_meta_count(st); i++) {
            const char *k = gk_safetensors_meta_key(st, i);
            cJSON_AddStringToObject(meta, k, gk_safetensors_meta(st, k));
        }
        cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
        for (size_t i = 0; i < n; i++) {
            gk_tensor_info ti;
            if (gk_safetensors_info(st, gk_safetensors_name(st, i), &ti, &err) != GK_OK) {
                rc = gkrun_fail(&err);
                goto out;
            }
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "name", ti.name);
            cJSON_AddStringToObject(t, "dtype", gk_dtype_name(ti.dtype));
            cJSON *shape = cJSON_AddArrayToObject(t, "shape");
            for (int d = 0; d < ti.n_dims; d++)
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ti.shape[d]));
            cJSON_AddNumberToObject(t, "nbytes", (double)ti.nbytes);
            cJSON_AddItemToArray(arr, t);
        }
        char *text = cJSON_Print(root);
        if (text)
            puts(text);
        free(text);
    } else {
        printf("path: %s\n", weights);
        printf("file size: %.2f MB in %zu file(s)\n", gk_safetensors_file_size(st) / 1e6,
               gk_safetensors_shard_count(st));
        printf("tensors: %zu\n", n);
        printf("architecture: %s\n", spec ? spec->name : derr.msg);
        if (have_cfg)
            print_config(&cfg);
        else
            printf("config: no config.json beside the weights\n");
        for (size_t i = 0; i < gk_safetensors_meta_count(st); i++) {
            const char *k = gk_safetensors_meta_key(st, i);
            fputs("metadata: ", stdout);
            put_text(k, 0);
            fputs(" = ", stdout);
            put_text(gk_safetensors_meta(st, k), 0);
            putchar('\n');
        }
        printf("\n%-60s %-5s %-20s %10s\n", "name", "dtype", "shape", "MB");
        for (size_t i = 0; i < n; i++) {
            gk_tensor_info ti;
            if (gk_safetensors_info(st, gk_safetensors_name(st, i), &ti, &err) != GK_OK) {
                rc = gkrun_fail(&err);
                goto out;
            }
            char shape[96];
            shape_str(&ti, shape, sizeof shape);
            put_text(ti.name, 60);
            printf(" %-5s %-20s %10.3f\n", gk_dtype_name(ti.dtype), shape, ti.nbytes / 1e6);
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    gk_runtime_destroy(rt);
    gk_safetensors_close(st);
    return rc;
}
