/* test_arch_more.c - the phi3, stablelm, olmo2, mixtral and qwen3_moe
 * architectures against transformers: gkrun verify on each tiny checkpoint of
 * tools/make_arch_models.py (logits, hidden states and greedy tokens from the
 * goldens), and the configs they refuse, each refusal naming the key or
 * tensor at fault. */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each checkpoint passes every check of verify on the reference backend in
 * float32, at verify's own tolerances. */
static void expect_verify_pass(const char *model)
{
    char *out;
    int rc = run(&out, "verify %s/models/%s --backend cpu_ref --dtype f32", data_dir(), model);
    cr_expect_eq(rc, 0, "%s: exit %d\n%s", model, rc, out);
    cr_expect(strstr(out, "0 failed: PASS"), "%s:\n%s", model, out);
    cr_expect(strstr(out, "20/20 tokens match  PASS"), "%s:\n%s", model, out);
    cr_expect_null(strstr(out, "FAIL"), "%s:\n%s", model, out);
    free(out);
}

Test(arch_more, phi3_fused_qkv_and_gate_up)
{
    expect_verify_pass("phi3-tiny");
}

Test(arch_more, phi3_32_heads_of_head_dim_4)
{
    expect_verify_pass("phi3-mini-shaped");
}

Test(arch_more, phi3_partial_rotary)
{
    expect_verify_pass("phi3-partial");
}

Test(arch_more, stablelm_layer_norm_qkv_bias_partial_rotary)
{
    expect_verify_pass("stablelm-tiny");
}

Test(arch_more, stablelm_parallel_residual)
{
    expect_verify_pass("stablelm-parallel");
}

Test(arch_more, olmo2_post_norms_whole_row_qk_norm)
{
    expect_verify_pass("olmo2-tiny");
}

Test(arch_more, mixtral_top2_of_4_experts)
{
    expect_verify_pass("mixtral-tiny");
}

Test(arch_more, qwen3_moe_normalized_top_k_with_a_dense_layer)
{
    expect_verify_pass("qwen3moe-tiny");
}

Test(arch_more, qwen3_moe_unnormalized_top_k)
{
    expect_verify_pass("qwen3moe-nonorm");
}

/* ------------------------------------------------------------ refusals */

/* A copy of tests/data/models/<model> in a fresh temporary folder whose
 * config.json has key set to the JSON value json (parsed by cJSON); the
 * caller removes it with remove_copy. */
static char *copy_with(const char *model, const char *key, const char *json)
{
    char tmpl[] = "/tmp/gk-arch-more-XXXXXX";
    cr_assert(mkdtemp(tmpl), "mkdtemp");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s/models/%s/* '%s'/", data_dir(), model, tmpl);
    cr_assert_eq(system(cmd), 0, "%s", cmd);

    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", tmpl);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root, "%s does not parse", path);
    cJSON *v = cJSON_Parse(json);
    cr_assert(v, "%s", json);
    if (cJSON_GetObjectItemCaseSensitive(root, key))
        cJSON_ReplaceItemInObjectCaseSensitive(root, key, v);
    else
        cJSON_AddItemToObject(root, key, v);
    char *s = cJSON_Print(root);
    f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    fputs(s, f);
    fclose(f);
    free(s);
    cJSON_Delete(root);
    return strdup(tmpl);
}

static void remove_copy(char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
    free(dir);
}

/* verify on the altered copy exits non-zero and says each of the words. */
static void expect_refused(const char *model, const char *key, const char *json, const char *word1,
                           const char *word2)
{
    char *dir = copy_with(model, key, json);
    char *out;
    int rc = run(&out, "verify '%s' --backend cpu_ref --dtype f32", dir);
    cr_expect_neq(rc, 0, "%s with %s = %s: exit 0\n%s", model, key, json, out);
    cr_expect(strstr(out, word1), "%s with %s = %s: no '%s' in\n%s", model, key, json, word1, out);
    if (word2)
        cr_expect(strstr(out, word2), "%s with %s = %s: no '%s' in\n%s", model, key, json, word2, out);
    cr_expect_null(strstr(out, "0 failed: PASS"), "%s", out);
    free(out);
    remove_copy(dir);
}

/* StableLM 2 12B's per-head q/k LayerNorm is not implemented: refused by name. */
Test(arch_more, stablelm_qk_layernorm_refused_naming_the_key)
{
    expect_refused("stablelm-tiny", "qk_layernorm", "true", "qk_layernorm", NULL);
}

/* use_qkv_bias decides whether q/k/v biases belong to the model: with it
 * false, the checkpoint's q_proj.bias is a tensor the model does not have. */
Test(arch_more, stablelm_qkv_bias_follows_use_qkv_bias)
{
    expect_refused("stablelm-tiny", "use_qkv_bias", "false", "q_proj.bias", NULL);
}

/* More experts per token than there are experts: refused naming the key. */
Test(arch_more, mixtral_more_experts_per_token_than_experts_refused)
{
    expect_refused("mixtral-tiny", "num_experts_per_tok", "5", "num_experts_per_tok", NULL);
}

/* With no mlp_only_layers, qwen3moe-tiny's layer 1 must be sparse, and its
 * checkpoint has no router there: the build fails naming the tensor. */
Test(arch_more, qwen3_moe_sparse_layer_without_router_names_the_tensor)
{
    expect_refused("qwen3moe-tiny", "mlp_only_layers", "[]", "model.layers.1.mlp.gate.weight", NULL);
}

/* Phi-3's rotary part must be an even number of columns: 0.3 of head_dim 16
 * is 4.8, cut to 4 (even, accepted); 0.1 is 1.6 -> 1, refused naming the key. */
Test(arch_more, phi3_odd_rotary_dim_refused_naming_the_key)
{
    expect_refused("phi3-partial", "partial_rotary_factor", "0.1", "partial_rotary_factor", NULL);
}

/* Rewrite the safetensors file path without tensor drop: the other tensors
 * keep their bytes and order, their offsets closed up (the format wants the
 * data tiled, no holes). */
typedef struct span {
    cJSON *offsets;
    double begin, end;
} span;

static int by_begin(const void *a, const void *b)
{
    double x = ((const span *)a)->begin, y = ((const span *)b)->begin;
    return (x > y) - (x < y);
}

static void drop_tensor(const char *path, const char *drop)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    cJSON *h = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    cr_assert(h, "%s: header does not parse", path);
    const unsigned char *data = buf + 8 + hlen;

    cr_assert(cJSON_GetObjectItemCaseSensitive(h, drop), "%s has no tensor %s", path, drop);
    cJSON_DeleteItemFromObjectCaseSensitive(h, drop);
    int n = cJSON_GetArraySize(h), k = 0;
    span *sp = calloc((size_t)n, sizeof *sp);
    for (cJSON *t = h->child; t; t = t->next) {
        if (strcmp(t->string, "__metadata__") == 0)
            continue;
        cJSON *o = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        sp[k++] = (span){o, cJSON_GetArrayItem(o, 0)->valuedouble, cJSON_GetArrayItem(o, 1)->valuedouble};
    }
    qsort(sp, (size_t)k, sizeof *sp, by_begin);
    double at = 0;
    for (int i = 0; i < k; i++) {
        double len = sp[i].end - sp[i].begin;
        cJSON_ReplaceItemInArray(sp[i].offsets, 0, cJSON_CreateNumber(at));
        cJSON_ReplaceItemInArray(sp[i].offsets, 1, cJSON_CreateNumber(at + len));
        at += len;
    }
    char *text = cJSON_PrintUnformatted(h);
    size_t tlen = strlen(text), plen = (tlen + 7) / 8 * 8;
    f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(plen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(text, 1, tlen, f);
    for (size_t i = tlen; i < plen; i++)
        fputc(' ', f);
    for (int i = 0; i < k; i++)
        fwrite(data + (size_t)sp[i].begin, 1, (size_t)(sp[i].end - sp[i].begin), f);
    fclose(f);
    free(text);
    free(sp);
    cJSON_Delete(h);
    free(buf);
}

/* A Mixtral checkpoint lacking one expert's tensor fails to load, naming it. */
Test(arch_more, mixtral_missing_expert_tensor_named)
{
    const char *gone = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
    char *dir = copy_with("mixtral-tiny", "num_experts_per_tok", "2");
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    drop_tensor(path, gone);
    char *out;
    int rc = run(&out, "verify '%s' --backend cpu_ref --dtype f32", dir);
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect(strstr(out, gone), "no '%s' in\n%s", gone, out);
    /* and it is the tensor that is missing, not the rewritten file that is broken */
    cr_expect(strstr(out, "missing tensor"), "%s", out);
    free(out);
    remove_copy(dir);
}
