/* test_config.c - config.json / generation_config.json parsing (gk_config_load, _parse).
 *
 * Covers: the reference pack's configs, hand-written copies of published configs
 * (tests/data/configs/), both rope layouts, generation_config.json overrides, and a
 * table of broken configs each failing with the right status and a message naming
 * the key. Not covered here: whether the model loader uses the values correctly.
 */
#include <criterion/criterion.h>

#include "gk/gk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d && *d ? d : "data";
}

static void load(const char *rel, gk_config *c)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", data_dir(), rel);
    gk_err err = { 0 };
    gk_status st = gk_config_load(path, c, &err);
    cr_assert_eq(st, GK_OK, "%s: %s (%s)", rel, gk_status_str(st), err.msg);
}

static char *slurp(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", data_dir(), rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Every field equal (no memcmp: padding bytes are unspecified). */
static void expect_same(const gk_config *a, const gk_config *b, const char *what)
{
    cr_expect_str_eq(a->model_type, b->model_type, "%s: model_type", what);
    cr_expect_str_eq(a->architecture, b->architecture, "%s: architecture", what);
    cr_expect_eq(a->n_vocab, b->n_vocab, "%s: n_vocab", what);
    cr_expect_eq(a->n_embd, b->n_embd, "%s: n_embd", what);
    cr_expect_eq(a->n_layer, b->n_layer, "%s: n_layer", what);
    cr_expect_eq(a->n_head, b->n_head, "%s: n_head", what);
    cr_expect_eq(a->n_head_kv, b->n_head_kv, "%s: n_head_kv", what);
    cr_expect_eq(a->head_dim, b->head_dim, "%s: head_dim", what);
    cr_expect_eq(a->n_ff, b->n_ff, "%s: n_ff", what);
    cr_expect_eq(a->n_ctx_train, b->n_ctx_train, "%s: n_ctx_train", what);
    cr_expect_eq(a->norm, b->norm, "%s: norm", what);
    cr_expect_eq(a->norm_eps, b->norm_eps, "%s: norm_eps", what);
    cr_expect_eq(a->act, b->act, "%s: act", what);
    cr_expect_eq(a->has_norm_type, b->has_norm_type, "%s: has_norm_type", what);
    cr_expect_eq(a->rope_theta, b->rope_theta, "%s: rope_theta", what);
    cr_expect_eq(a->rope_scaling, b->rope_scaling, "%s: rope_scaling", what);
    cr_expect_eq(a->rope_factor, b->rope_factor, "%s: rope_factor", what);
    cr_expect_eq(a->rope_low_freq_factor, b->rope_low_freq_factor, "%s: low_freq", what);
    cr_expect_eq(a->rope_high_freq_factor, b->rope_high_freq_factor, "%s: high_freq", what);
    cr_expect_eq(a->rope_orig_ctx, b->rope_orig_ctx, "%s: rope_orig_ctx", what);
    cr_expect_eq(a->tie_word_embeddings, b->tie_word_embeddings, "%s: tie", what);
    cr_expect_eq(a->attention_bias, b->attention_bias, "%s: attention_bias", what);
    cr_expect_eq(a->mlp_bias, b->mlp_bias, "%s: mlp_bias", what);
    cr_expect_eq(a->dtype, b->dtype, "%s: dtype", what);
    cr_expect_eq(a->bos_id, b->bos_id, "%s: bos_id", what);
    cr_expect_eq(a->n_eos, b->n_eos, "%s: n_eos", what);
    for (int i = 0; i < a->n_eos && i < b->n_eos; i++)
        cr_expect_eq(a->eos_ids[i], b->eos_ids[i], "%s: eos_ids[%d]", what, i);
}

/* ------------------------------------------------------------ reference pack */

Test(config_ref, llama_tiny_gqa_untied_f32)
{
    gk_config c;
    load("models/llama-tiny", &c);
    cr_expect_str_eq(c.model_type, "llama");
    cr_expect_str_eq(c.architecture, "LlamaForCausalLM");
    cr_expect_eq(c.n_vocab, 512);
    cr_expect_eq(c.n_embd, 64);
    cr_expect_eq(c.n_layer, 2);
    cr_expect_eq(c.n_head, 4);
    cr_expect_eq(c.n_head_kv, 2);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.n_ff, 176);
    cr_expect_eq(c.n_ctx_train, 256);
    cr_expect_eq(c.norm, GK_NORM_RMS);
    cr_expect_eq(c.norm_eps, 1e-5f);
    cr_expect(c.has_norm_type);
    cr_expect_eq(c.act, GK_ACT_SILU);
    cr_expect_eq(c.rope_theta, 10000.0f);
    cr_expect_eq(c.rope_scaling, GK_ROPE_NONE);
    cr_expect_not(c.tie_word_embeddings);
    cr_expect_not(c.attention_bias);
    cr_expect_not(c.mlp_bias);
    cr_expect_eq(c.dtype, GK_DTYPE_F32);
    cr_expect_eq(c.bos_id, 1);
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_ids[0], 2);
}

Test(config_ref, llama_tiny_sharded_f16_three_layers)
{
    gk_config c;
    load("models/llama-tiny-f16-sharded/config.json", &c);
    cr_expect_eq(c.n_layer, 3);
    cr_expect_eq(c.n_head_kv, 2);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.dtype, GK_DTYPE_F16);
    cr_expect_not(c.tie_word_embeddings);
}

Test(config_ref, qwen3_tiny_explicit_head_dim_bf16_tied)
{
    gk_config c;
    load("models/qwen3-tiny", &c);
    cr_expect_str_eq(c.model_type, "qwen3");
    cr_expect_str_eq(c.architecture, "Qwen3ForCausalLM");
    cr_expect_eq(c.n_embd, 64);
    cr_expect_eq(c.n_head, 4);
    cr_expect_eq(c.n_head_kv, 2);
    cr_expect_eq(c.head_dim, 32, "head_dim comes from the file, not 64 / 4");
    cr_expect_eq(c.n_ff, 128);
    cr_expect_eq(c.n_layer, 2);
    cr_expect_eq(c.norm, GK_NORM_RMS);
    cr_expect_eq(c.norm_eps, 1e-6f);
    cr_expect_eq(c.rope_theta, 1e6f);
    cr_expect_eq(c.dtype, GK_DTYPE_BF16);
    cr_expect(c.tie_word_embeddings);
    cr_expect_not(c.attention_bias);
    cr_expect_eq(c.bos_id, -1, "bos_token_id null");
    cr_expect_eq(c.n_eos, 0, "eos_token_id null");
}

Test(config_ref, gpt2_tiny_layer_norm_gelu_tanh)
{
    gk_config c;
    load("models/gpt2-tiny", &c);
    cr_expect_str_eq(c.model_type, "gpt2");
    cr_expect_str_eq(c.architecture, "GPT2LMHeadModel");
    cr_expect_eq(c.n_vocab, 512);
    cr_expect_eq(c.n_embd, 64);
    cr_expect_eq(c.n_layer, 2);
    cr_expect_eq(c.n_head, 4);
    cr_expect_eq(c.n_head_kv, 4);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.n_ff, 256, "n_inner null -> 4 * n_embd");
    cr_expect_eq(c.n_ctx_train, 128);
    cr_expect_eq(c.norm, GK_NORM_LAYER);
    cr_expect_eq(c.norm_eps, 1e-5f);
    cr_expect(c.has_norm_type);
    cr_expect_eq(c.act, GK_ACT_GELU_TANH);
    cr_expect(c.tie_word_embeddings);
    cr_expect_eq(c.dtype, GK_DTYPE_F32);
    cr_expect_eq(c.bos_id, 50256);
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_ids[0], 50256);
}

/* ------------------------------------------------------------ published configs */

Test(config_published, tinyllama_gqa_32_4)
{
    gk_config c;
    load("configs/tinyllama-1.1b-chat", &c);
    cr_expect_eq(c.n_vocab, 32000);
    cr_expect_eq(c.n_embd, 2048);
    cr_expect_eq(c.n_layer, 22);
    cr_expect_eq(c.n_head, 32);
    cr_expect_eq(c.n_head_kv, 4);
    cr_expect_eq(c.head_dim, 64);
    cr_expect_eq(c.n_ff, 5632);
    cr_expect_eq(c.n_ctx_train, 2048);
    cr_expect_eq(c.rope_scaling, GK_ROPE_NONE, "rope_scaling null");
    cr_expect_eq(c.rope_theta, 10000.0f);
    cr_expect_not(c.tie_word_embeddings);
    cr_expect_eq(c.dtype, GK_DTYPE_BF16);
    cr_expect_eq(c.bos_id, 1);
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_ids[0], 2);
}

static void expect_llama32_1b(const gk_config *c)
{
    cr_expect_str_eq(c->model_type, "llama");
    cr_expect_eq(c->n_vocab, 128256);
    cr_expect_eq(c->n_embd, 2048);
    cr_expect_eq(c->n_layer, 16);
    cr_expect_eq(c->n_head, 32);
    cr_expect_eq(c->n_head_kv, 8);
    cr_expect_eq(c->head_dim, 64);
    cr_expect_eq(c->n_ff, 8192);
    cr_expect_eq(c->n_ctx_train, 131072);
    cr_expect_eq(c->norm_eps, 1e-5f);
    cr_expect_eq(c->rope_theta, 500000.0f);
    cr_expect_eq(c->rope_scaling, GK_ROPE_LLAMA3);
    cr_expect_eq(c->rope_factor, 32.0f);
    cr_expect_eq(c->rope_low_freq_factor, 1.0f);
    cr_expect_eq(c->rope_high_freq_factor, 4.0f);
    cr_expect_eq(c->rope_orig_ctx, 8192);
    cr_expect(c->tie_word_embeddings);
    cr_expect_eq(c->dtype, GK_DTYPE_BF16);
    cr_expect_eq(c->bos_id, 128000);
}

Test(config_published, llama32_rope_llama3_and_generation_eos_list)
{
    gk_config c;
    load("configs/llama-3.2-1b", &c);
    expect_llama32_1b(&c);
    /* generation_config.json (Instruct's) replaces config.json's single 128001 */
    cr_expect_eq(c.n_eos, 3);
    cr_expect_eq(c.eos_ids[0], 128001);
    cr_expect_eq(c.eos_ids[1], 128008);
    cr_expect_eq(c.eos_ids[2], 128009);
}

Test(config_published, llama32_config_text_alone_keeps_its_eos)
{
    char *text = slurp("configs/llama-3.2-1b/config.json");
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_parse(text, NULL, &c, &err), GK_OK, "%s", err.msg);
    expect_llama32_1b(&c);
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_ids[0], 128001);
    free(text);
}

Test(config_published, rope_parameters_layout_equals_rope_scaling_layout)
{
    gk_config classic, tf5;
    load("configs/llama-3.2-1b", &classic);
    load("configs/llama-3.2-1b-tf5", &tf5);
    expect_llama32_1b(&tf5);
    expect_same(&classic, &tf5, "folder");

    char *a = slurp("configs/llama-3.2-1b/config.json");
    char *b = slurp("configs/llama-3.2-1b-tf5/config.json");
    gk_err err = { 0 };
    cr_assert_eq(gk_config_parse(a, NULL, &classic, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_config_parse(b, NULL, &tf5, &err), GK_OK, "%s", err.msg);
    expect_same(&classic, &tf5, "text");
    free(a);
    free(b);
}

Test(config_published, mistral_7b)
{
    gk_config c;
    load("configs/mistral-7b", &c);
    cr_expect_str_eq(c.model_type, "mistral");
    cr_expect_str_eq(c.architecture, "MistralForCausalLM");
    cr_expect_eq(c.n_vocab, 32000);
    cr_expect_eq(c.n_embd, 4096);
    cr_expect_eq(c.n_layer, 32);
    cr_expect_eq(c.n_head, 32);
    cr_expect_eq(c.n_head_kv, 8);
    cr_expect_eq(c.head_dim, 128);
    cr_expect_eq(c.n_ff, 14336);
    cr_expect_eq(c.n_ctx_train, 32768);
    cr_expect_not(c.tie_word_embeddings);
    cr_expect_not(c.attention_bias);
}

Test(config_published, qwen2_has_qkv_bias_without_the_key)
{
    gk_config c;
    load("configs/qwen2-0.5b", &c);
    cr_expect_str_eq(c.model_type, "qwen2");
    cr_expect_eq(c.n_vocab, 151936);
    cr_expect_eq(c.n_embd, 896);
    cr_expect_eq(c.n_layer, 24);
    cr_expect_eq(c.n_head, 14);
    cr_expect_eq(c.n_head_kv, 2);
    cr_expect_eq(c.head_dim, 64);
    cr_expect_eq(c.n_ff, 4864);
    cr_expect_eq(c.norm_eps, 1e-6f);
    cr_expect_eq(c.rope_theta, 1e6f);
    cr_expect(c.attention_bias, "qwen2 without attention_bias means q/k/v biases");
    cr_expect_not(c.mlp_bias);
    cr_expect(c.tie_word_embeddings);
    cr_expect_eq(c.bos_id, 151643);
    cr_expect_eq(c.eos_ids[0], 151643);
}

Test(config_published, qwen3_8b_untied)
{
    gk_config c;
    load("configs/qwen3-8b", &c);
    cr_expect_eq(c.n_embd, 4096);
    cr_expect_eq(c.n_layer, 36);
    cr_expect_eq(c.n_head, 32);
    cr_expect_eq(c.n_head_kv, 8);
    cr_expect_eq(c.head_dim, 128);
    cr_expect_eq(c.n_ff, 12288);
    cr_expect_eq(c.n_ctx_train, 40960);
    cr_expect_eq(c.rope_theta, 1e6f, "integer rope_theta");
    cr_expect_eq(c.rope_scaling, GK_ROPE_NONE);
    cr_expect_not(c.tie_word_embeddings);
    cr_expect_not(c.attention_bias);
    cr_expect_eq(c.dtype, GK_DTYPE_BF16);
}

Test(config_published, qwen3_06b_head_dim_not_hidden_over_heads)
{
    gk_config c;
    load("configs/qwen3-0.6b", &c);
    cr_expect_eq(c.n_embd, 1024);
    cr_expect_eq(c.n_head, 16);
    cr_expect_eq(c.n_head_kv, 8);
    cr_expect_eq(c.head_dim, 128, "explicit head_dim, not 1024 / 16 = 64");
    cr_expect_eq(c.n_layer, 28);
    cr_expect_eq(c.n_ff, 3072);
    cr_expect(c.tie_word_embeddings);
    cr_expect_eq(c.bos_id, 151643);
    cr_expect_eq(c.n_eos, 2, "generation_config.json's list");
    cr_expect_eq(c.eos_ids[0], 151645);
    cr_expect_eq(c.eos_ids[1], 151643);
}

Test(config_published, gpt2_124m)
{
    gk_config c;
    load("configs/gpt2/config.json", &c);
    cr_expect_eq(c.n_vocab, 50257);
    cr_expect_eq(c.n_embd, 768);
    cr_expect_eq(c.n_layer, 12);
    cr_expect_eq(c.n_head, 12);
    cr_expect_eq(c.n_head_kv, 12);
    cr_expect_eq(c.head_dim, 64);
    cr_expect_eq(c.n_ff, 3072, "n_inner null -> 4 * 768");
    cr_expect_eq(c.n_ctx_train, 1024);
    cr_expect_eq(c.norm, GK_NORM_LAYER);
    cr_expect_eq(c.norm_eps, 1e-5f);
    cr_expect_eq(c.act, GK_ACT_GELU_TANH);
    cr_expect(c.tie_word_embeddings, "absent tie_word_embeddings -> true");
    cr_expect_eq(c.dtype, GK_DTYPE_F32, "absent torch_dtype -> float32");
    cr_expect_eq(c.eos_ids[0], 50256);
}

/* ------------------------------------------------------------ files and defaults */

Test(config_load, file_and_folder_give_the_same_config)
{
    gk_config a, b;
    load("configs/qwen3-0.6b", &a);
    load("configs/qwen3-0.6b/config.json", &b);
    expect_same(&a, &b, "qwen3-0.6b");
}

Test(config_load, missing_file_is_io_error_naming_the_path)
{
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_load("/nonexistent/gk-model", &c, &err), GK_ERR_IO);
    cr_expect_eq(err.code, GK_ERR_IO);
    cr_expect(strstr(err.msg, "/nonexistent/gk-model") != NULL, "%s", err.msg);
}

Test(config_load, broken_file_message_starts_with_its_path_and_position)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/broken", data_dir());
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_load(path, &c, &err), GK_ERR_FORMAT, "%s", err.msg);
    char prefix[1100];
    snprintf(prefix, sizeof prefix, "%s/config.json: ", path);
    cr_expect(strncmp(err.msg, prefix, strlen(prefix)) == 0, "%s", err.msg);
    cr_expect(strstr(err.msg, "line 4") != NULL, "%s", err.msg);
}

Test(config_load, null_arguments_are_invalid)
{
    gk_config c;
    gk_err err = { 0 };
    cr_expect_eq(gk_config_parse(NULL, NULL, &c, &err), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_config_parse("{}", NULL, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_config_load(NULL, &c, &err), GK_ERR_INVALID_ARG);
}

#define MIN_LLAMA                                                                  \
    "\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 2, "        \
    "\"num_attention_heads\": 4, \"max_position_embeddings\": 128"

Test(config_parse, defaults_when_keys_are_absent)
{
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_parse("{" MIN_LLAMA "}", NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_str_eq(c.model_type, "");
    cr_expect_str_eq(c.architecture, "");
    cr_expect_eq(c.n_head_kv, 4);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.n_ff, 256);
    cr_expect_eq(c.norm, GK_NORM_RMS);
    cr_expect_eq(c.norm_eps, 1e-6f);
    cr_expect_not(c.has_norm_type);
    cr_expect_eq(c.act, GK_ACT_SILU);
    cr_expect_eq(c.rope_theta, 10000.0f);
    cr_expect_eq(c.rope_scaling, GK_ROPE_NONE);
    cr_expect(c.tie_word_embeddings);
    cr_expect_not(c.attention_bias);
    cr_expect_not(c.mlp_bias);
    cr_expect_eq(c.dtype, GK_DTYPE_F32);
    cr_expect_eq(c.bos_id, -1);
    cr_expect_eq(c.n_eos, 0);
}

Test(config_parse, linear_rope_and_gelu_and_biases)
{
    gk_config c;
    gk_err err = { 0 };
    const char *j = "{" MIN_LLAMA ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 4}, "
                    "\"hidden_act\": \"gelu\", \"attention_bias\": true, \"mlp_bias\": true, "
                    "\"model_type\": \"qwen2\", \"layer_norm_eps\": 1e-5, \"dtype\": \"float16\"}";
    cr_assert_eq(gk_config_parse(j, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.rope_scaling, GK_ROPE_LINEAR);
    cr_expect_eq(c.rope_factor, 4.0f);
    cr_expect_eq(c.act, GK_ACT_GELU);
    cr_expect(c.attention_bias);
    cr_expect(c.mlp_bias);
    cr_expect_eq(c.norm, GK_NORM_LAYER);
    cr_expect_eq(c.dtype, GK_DTYPE_F16);

    j = "{" MIN_LLAMA ", \"model_type\": \"qwen2\", \"attention_bias\": false}";
    cr_assert_eq(gk_config_parse(j, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_not(c.attention_bias, "an explicit attention_bias wins over the qwen2 rule");
}

Test(config_parse, generation_config_overrides_bos_and_eos)
{
    gk_config c;
    gk_err err = { 0 };
    const char *j = "{" MIN_LLAMA ", \"bos_token_id\": 1, \"eos_token_id\": 2}";
    cr_assert_eq(gk_config_parse(j, "{\"bos_token_id\": 5, \"eos_token_id\": [7, 8]}", &c, &err),
                 GK_OK, "%s", err.msg);
    cr_expect_eq(c.bos_id, 5);
    cr_expect_eq(c.n_eos, 2);
    cr_expect_eq(c.eos_ids[0], 7);
    cr_expect_eq(c.eos_ids[1], 8);

    cr_assert_eq(gk_config_parse(j, "{\"do_sample\": true}", &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.bos_id, 1, "generation config without the keys keeps config.json's");
    cr_expect_eq(c.n_eos, 1);
    cr_expect_eq(c.eos_ids[0], 2);
}

Test(config_parse, broken_generation_config_names_that_file)
{
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_parse("{" MIN_LLAMA "}", "{\"eos_token_id\": [1,}", &c, &err),
                 GK_ERR_FORMAT);
    cr_expect(strncmp(err.msg, "generation_config.json: ", 24) == 0, "%s", err.msg);

    cr_assert_eq(gk_config_parse("{" MIN_LLAMA "}", "{\"eos_token_id\": -1}", &c, &err),
                 GK_ERR_CONFIG);
    cr_expect(strncmp(err.msg, "generation_config.json: ", 24) == 0, "%s", err.msg);
    cr_expect(strstr(err.msg, "eos_token_id") != NULL, "%s", err.msg);
}

/* ------------------------------------------------------------ bad configs */

typedef struct bad_case {
    const char *name;
    const char *json;
    gk_status want;
    const char *needle;   /* the key the message must name */
    const char *needle2;  /* another piece it must contain, or NULL */
} bad_case;

#define BASE_NO_HEADS                                                              \
    "\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 2, "        \
    "\"max_position_embeddings\": 128"

static const bad_case bad_cases[] = {
    { "heads do not divide hidden, no head_dim",
      "{" BASE_NO_HEADS ", \"num_attention_heads\": 3, \"num_key_value_heads\": 1}",
      GK_ERR_CONFIG, "num_attention_heads", "head_dim" },
    { "zero layers",
      "{\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 0, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "num_hidden_layers", "got 0" },
    { "negative vocab",
      "{\"vocab_size\": -5, \"hidden_size\": 64, \"num_hidden_layers\": 2, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "vocab_size", "-5" },
    { "string hidden_size",
      "{\"vocab_size\": 100, \"hidden_size\": \"64\", \"num_hidden_layers\": 2, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "hidden_size", "\"64\"" },
    { "null hidden_size",
      "{\"vocab_size\": 100, \"hidden_size\": null, \"num_hidden_layers\": 2, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "hidden_size", "null" },
    { "float layers",
      "{\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 2.5, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "num_hidden_layers", "2.5" },
    { "huge layers",
      "{\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 1e12, "
      "\"num_attention_heads\": 4, \"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "num_hidden_layers", "too large" },
    { "kv heads do not divide heads",
      "{" MIN_LLAMA ", \"num_key_value_heads\": 3}", GK_ERR_CONFIG, "num_key_value_heads", NULL },
    { "more kv heads than heads",
      "{" MIN_LLAMA ", \"num_key_value_heads\": 8}", GK_ERR_CONFIG, "num_key_value_heads", NULL },
    { "zero head_dim", "{" MIN_LLAMA ", \"head_dim\": 0}", GK_ERR_CONFIG, "head_dim", NULL },
    { "unknown activation", "{" MIN_LLAMA ", \"hidden_act\": \"quick_gelu\"}",
      GK_ERR_UNSUPPORTED, "hidden_act", "quick_gelu" },
    { "unknown GPT-2 activation", "{" MIN_LLAMA ", \"activation_function\": \"relu\"}",
      GK_ERR_UNSUPPORTED, "activation_function", "relu" },
    { "yarn rope",
      "{" MIN_LLAMA ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
      GK_ERR_UNSUPPORTED, "rope_scaling.rope_type", "yarn" },
    { "classic dynamic rope",
      "{" MIN_LLAMA ", \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}",
      GK_ERR_UNSUPPORTED, "rope_scaling.type", "dynamic" },
    { "transformers 5 longrope",
      "{" MIN_LLAMA ", \"rope_parameters\": {\"rope_type\": \"longrope\", \"rope_theta\": 1e4}}",
      GK_ERR_UNSUPPORTED, "rope_parameters.rope_type", "longrope" },
    { "per-layer-type rope_parameters without full_attention",
      "{" MIN_LLAMA ", \"rope_parameters\": {\"chunked_attention\": {\"rope_type\": \"default\"}}}",
      GK_ERR_UNSUPPORTED, "rope_parameters", "chunked_attention" },
    { "llama3 rope without original context",
      "{" MIN_LLAMA ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
      "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}}",
      GK_ERR_CONFIG, "rope_scaling.original_max_position_embeddings", NULL },
    { "rope_scaling without a type", "{" MIN_LLAMA ", \"rope_scaling\": {\"factor\": 8.0}}",
      GK_ERR_CONFIG, "rope_scaling.rope_type", NULL },
    { "string rope_theta", "{" MIN_LLAMA ", \"rope_theta\": \"1e4\"}", GK_ERR_CONFIG,
      "rope_theta", NULL },
    { "negative rms_norm_eps", "{" MIN_LLAMA ", \"rms_norm_eps\": -1e-6}", GK_ERR_CONFIG,
      "rms_norm_eps", NULL },
    { "string tie_word_embeddings", "{" MIN_LLAMA ", \"tie_word_embeddings\": \"false\"}",
      GK_ERR_CONFIG, "tie_word_embeddings", NULL },
    { "float8 dtype", "{" MIN_LLAMA ", \"torch_dtype\": \"float8_e4m3fn\"}", GK_ERR_UNSUPPORTED,
      "torch_dtype", "float8_e4m3fn" },
    { "numeric dtype", "{" MIN_LLAMA ", \"dtype\": 16}", GK_ERR_CONFIG, "dtype", NULL },
    { "broken JSON", "{\"vocab_size\": 100,\n \"hidden_size\": 64 \"num_hidden_layers\": 2}",
      GK_ERR_FORMAT, "line 2", NULL },
    { "trailing garbage", "{" MIN_LLAMA "} x", GK_ERR_FORMAT, "invalid JSON", NULL },
    { "top level not an object", "[1, 2]", GK_ERR_FORMAT, "object", NULL },
    { "empty text", "", GK_ERR_FORMAT, "invalid JSON", NULL },
    { "missing vocab_size",
      "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
      "\"max_position_embeddings\": 128}",
      GK_ERR_CONFIG, "missing key 'vocab_size'", NULL },
    { "missing layers, GPT-2 spelling",
      "{\"vocab_size\": 100, \"n_embd\": 64, \"n_head\": 4, \"n_positions\": 128}",
      GK_ERR_CONFIG, "missing key 'num_hidden_layers' (or 'n_layer')", NULL },
    { "eos list with a string", "{" MIN_LLAMA ", \"eos_token_id\": [2, \"3\"]}", GK_ERR_CONFIG,
      "eos_token_id", "\"3\"" },
    { "too many eos ids", "{" MIN_LLAMA ", \"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}",
      GK_ERR_UNSUPPORTED, "eos_token_id", NULL },
    { "bos list", "{" MIN_LLAMA ", \"bos_token_id\": [1, 2]}", GK_ERR_CONFIG, "bos_token_id",
      NULL },
    { "architectures not a list", "{" MIN_LLAMA ", \"architectures\": \"LlamaForCausalLM\"}",
      GK_ERR_CONFIG, "architectures", NULL },
    { "model_type too long",
      "{" MIN_LLAMA ", \"model_type\": \"a_model_type_longer_than_thirty_one_characters\"}",
      GK_ERR_CONFIG, "model_type", NULL },
};

Test(config_bad, each_bad_config_fails_naming_the_key)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *b = &bad_cases[i];
        gk_config c;
        gk_err err = { 0 };
        gk_status st = gk_config_parse(b->json, NULL, &c, &err);
        cr_expect_eq(st, b->want, "%s: got %s, want %s (%s)", b->name, gk_status_str(st),
                     gk_status_str(b->want), err.msg);
        cr_expect_eq(err.code, st, "%s: err.code mirrors the status", b->name);
        cr_expect(strncmp(err.msg, "config.json: ", 13) == 0, "%s: prefix: %s", b->name, err.msg);
        cr_expect(strstr(err.msg, b->needle) != NULL, "%s: '%s' not in: %s", b->name, b->needle,
                  err.msg);
        if (b->needle2)
            cr_expect(strstr(err.msg, b->needle2) != NULL, "%s: '%s' not in: %s", b->name,
                      b->needle2, err.msg);
    }
}

/* sliding_window counts for Mistral whenever set; for Qwen2/Qwen3 only with
 * use_sliding_window (false when absent, as transformers' default). */
Test(config, sliding_window_by_model_type)
{
    gk_config c;
    gk_err err = {0};
    const char *base = "\"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
                       "\"num_attention_heads\": 2, \"intermediate_size\": 16, \"max_position_embeddings\": 64";
    char text[512];
    snprintf(text, sizeof text, "{\"model_type\": \"mistral\", \"sliding_window\": 32, %s}", base);
    cr_assert_eq(gk_config_parse(text, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 32);
    snprintf(text, sizeof text, "{\"model_type\": \"mistral\", \"sliding_window\": null, %s}", base);
    cr_assert_eq(gk_config_parse(text, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 0);
    snprintf(text, sizeof text, "{\"model_type\": \"qwen2\", \"sliding_window\": 32, %s}", base);
    cr_assert_eq(gk_config_parse(text, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 0);
    snprintf(text, sizeof text, "{\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"sliding_window\": 32, %s}",
             base);
    cr_assert_eq(gk_config_parse(text, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 32);
    snprintf(text, sizeof text, "{\"model_type\": \"mistral\", \"sliding_window\": \"wide\", %s}", base);
    cr_expect_eq(gk_config_parse(text, NULL, &c, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "sliding_window"), "%s", err.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/mistral-7b/config.json", getenv("GK_TEST_DATA"));
    cr_assert_eq(gk_config_load(path, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 4096);
    snprintf(path, sizeof path, "%s/configs/qwen3-8b/config.json", getenv("GK_TEST_DATA"));
    cr_assert_eq(gk_config_load(path, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.sliding_window, 0);
}

/* A key read from the file is quoted in the message with control characters
 * escaped (no forged line, no terminal escape). */
Test(config_parse, keys_from_the_file_are_escaped_in_messages)
{
    const char *j = "{" MIN_LLAMA ", \"rope_parameters\": {\"full\\n\\u001b[31mX\": {\"rope_type\": \"default\"}}}";
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_parse(j, NULL, &c, &err), GK_ERR_UNSUPPORTED, "%s", err.msg);
    cr_expect(strstr(err.msg, "'full\\n\\x1b[31mX'") != NULL, "%s", err.msg);
    for (const char *q = err.msg; *q; q++)
        cr_expect((unsigned char)*q >= 0x20, "control byte 0x%02x in: %s", (unsigned char)*q, err.msg);
}

/* generation_config.json that is there but unreadable (a symlink loop, a
 * folder) is an error naming it, not silently skipped: its eos ids matter. */
Test(config_load, unreadable_generation_config_is_io_error_naming_it)
{
    char dir[] = "/tmp/gk-config-XXXXXX";
    cr_assert(mkdtemp(dir));
    char cfg[256], gen[256];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    FILE *f = fopen(cfg, "wb");
    cr_assert(f);
    fputs("{" MIN_LLAMA "}", f);
    fclose(f);
    gk_config c;
    gk_err err = { 0 };
    cr_assert_eq(gk_config_load(dir, &c, &err), GK_OK, "no generation config is fine: %s", err.msg);
    cr_assert_eq(symlink("generation_config.json", gen), 0);
    cr_expect_eq(gk_config_load(dir, &c, &err), GK_ERR_IO, "%s", err.msg);
    cr_expect(strstr(err.msg, gen) && strstr(err.msg, strerror(ELOOP)), "%s", err.msg);
    cr_assert_eq(unlink(gen), 0);
    cr_assert_eq(mkdir(gen, 0755), 0);
    cr_expect_eq(gk_config_load(dir, &c, &err), GK_ERR_IO, "%s", err.msg);
    cr_expect(strstr(err.msg, gen) && strstr(err.msg, "not a regular file"), "%s", err.msg);
    rmdir(gen);
    unlink(cfg);
    rmdir(dir);
}

/* ------------------------------------------------------------ getters */

static const char *getter_json =
    "{" MIN_LLAMA ", \"partial_rotary_factor\": 0.25, \"num_local_experts\": 8, \"use_qkv_bias\": true,"
    " \"hidden_activation\": \"gelu_pytorch_tanh\", \"layer_types\": [\"sliding_attention\", \"full_attention\"],"
    " \"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1e6},"
    " \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000}},"
    " \"long_factor\": [1, 2.5, 3], \"nothing\": null}";

Test(config_getters, read_any_key_by_path_with_defaults)
{
    gk_config c;
    gk_err err = {0};
    cr_assert_eq(gk_config_parse(getter_json, NULL, &c, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(c.struct_size, sizeof c);
    cr_expect_eq(c.version, GK_CONFIG_VERSION);
    int64_t i;
    double f;
    bool b;
    char s[32];
    cr_expect_eq(gk_config_get_int(&c, "num_local_experts", -1, &i, &err), GK_OK);
    cr_expect_eq(i, 8);
    cr_expect_eq(gk_config_get_int(&c, "num_experts", 7, &i, &err), GK_OK);
    cr_expect_eq(i, 7, "absent: the default");
    cr_expect_eq(gk_config_get_int(&c, "nothing", 3, &i, &err), GK_OK);
    cr_expect_eq(i, 3, "null: the default");
    cr_expect_eq(gk_config_get_float(&c, "partial_rotary_factor", 1.0, &f, &err), GK_OK);
    cr_expect_eq(f, 0.25);
    cr_expect_eq(gk_config_get_float(&c, "rope_parameters.sliding_attention.rope_theta", 0, &f, &err), GK_OK);
    cr_expect_eq(f, 10000.0);
    cr_expect_eq(gk_config_get_bool(&c, "use_qkv_bias", false, &b, &err), GK_OK);
    cr_expect(b);
    cr_expect_eq(gk_config_get_string(&c, "layer_types.1", NULL, s, sizeof s, &err), GK_OK);
    cr_expect_str_eq(s, "full_attention");
    cr_expect_eq(gk_config_get_string(&c, "layer_types.2", "full_attention", s, sizeof s, &err), GK_OK);
    cr_expect_str_eq(s, "full_attention", "past the end: the default");
    double arr[4];
    size_t n;
    cr_expect_eq(gk_config_get_array(&c, "long_factor", arr, 4, &n, &err), GK_OK);
    cr_expect(n == 3 && arr[0] == 1 && arr[1] == 2.5 && arr[2] == 3);
    cr_expect(gk_config_has(&c, "hidden_activation"));
    cr_expect_not(gk_config_has(&c, "nothing"));
    cr_expect(gk_config_is_null(&c, "nothing"), "present as null");
    cr_expect_not(gk_config_is_null(&c, "num_experts"), "absent is not null");
    cr_expect_not(gk_config_is_null(&c, "num_local_experts"), "a number is not null");
    /* the per-layer-type rope: the config's own is full attention's */
    cr_expect_eq(c.rope_theta, 1e6f);
    cr_expect_eq(c.rope_scaling, GK_ROPE_LINEAR);
    cr_expect_eq(c.rope_factor, 8.0f);
}

Test(config_getters, wrong_types_name_the_key_and_value)
{
    gk_config c;
    gk_err err = {0};
    cr_assert_eq(gk_config_parse(getter_json, NULL, &c, &err), GK_OK, "%s", err.msg);
    int64_t i;
    bool b;
    char s[8];
    double arr[2];
    size_t n;
    cr_expect_eq(gk_config_get_int(&c, "partial_rotary_factor", 0, &i, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "'partial_rotary_factor' must be an integer, got 0.25"), "%s", err.msg);
    cr_expect_eq(gk_config_get_bool(&c, "hidden_activation", false, &b, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "'hidden_activation' must be true or false"), "%s", err.msg);
    cr_expect_eq(gk_config_get_string(&c, "layer_types.0", NULL, s, sizeof s, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "'layer_types.0' is longer than 7 bytes"), "%s", err.msg);
    cr_expect_eq(gk_config_get_array(&c, "long_factor", arr, 2, &n, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "'long_factor' has 3 elements"), "%s", err.msg);
    cr_expect_eq(gk_config_get_array(&c, "layer_types", arr, 2, &n, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "'layer_types.0' must be a number"), "%s", err.msg);
    /* a config without its text (as from an older library) says so */
    c.version = 1;
    cr_expect_eq(gk_config_get_int(&c, "num_local_experts", 0, &i, &err), GK_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "'num_local_experts'"), "%s", err.msg);
}

/* An application built against an older, smaller gk_config gets only what
 * fits: nothing past its size is written. */
Test(config_getters, a_smaller_struct_is_filled_only_to_its_size)
{
    size_t v1 = offsetof(gk_config, json);
    unsigned char *buf = malloc(sizeof(gk_config));
    memset(buf, 0xAB, sizeof(gk_config));
    gk_err err = {0};
    cr_assert_eq(gk_config_parse_sized(getter_json, NULL, (gk_config *)buf, v1, &err), GK_OK, "%s", err.msg);
    gk_config *c = (gk_config *)buf;
    cr_expect_eq(c->struct_size, v1);
    cr_expect_eq(c->n_layer, 2);
    cr_expect_eq(buf[v1], 0xAB, "byte past the caller's struct untouched");
    cr_expect_eq(buf[sizeof(gk_config) - 1], 0xAB);
    cr_expect_eq(gk_config_parse_sized(getter_json, NULL, (gk_config *)buf, v1 - 1, &err), GK_ERR_INVALID_ARG);
    free(buf);
}
