/* test_arch_gemma.c - the Gemma, Gemma 2 and Gemma 3 plugins: each tiny
 * random checkpoint matches transformers (its eager-attention goldens) in
 * float32 on the reference backend through every check of gkrun verify, and
 * a config the plugins cannot run is refused with the key named. */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Each fixture, its architecture, through every check of verify. */
Test(arch_gemma, verify_every_gemma_model_on_cpu_ref)
{
    struct { const char *dir, *arch; } models[] = {
        {"gemma-tiny", "gemma"}, {"gemma2-tiny", "gemma2"}, {"gemma3-tiny", "gemma3"},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char *out, want[128];
        int rc = run(&out, "verify %s/models/%s --backend cpu_ref --dtype f32", data_dir(), models[i].dir);
        cr_expect_eq(rc, 0, "%s:\n%s", models[i].dir, out);
        snprintf(want, sizeof want, "/models/%s: %s on cpu_ref", models[i].dir, models[i].arch);
        cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
        cr_expect(strstr(out, "0 failed: PASS"), "%s", out);
        cr_expect(strstr(out, "tokens match  PASS"), "%s", out);
        cr_expect(strstr(out, "gen3.ids one at a time"), "%s", out);
        cr_expect_null(strstr(out, "FAIL"), "%s", out);
        free(out);
    }
}

/* A copy of fixture src in a new /tmp folder (*dir, heap) whose config.json
 * edit() changed; the weights and goldens are links to the fixture's. */
static char *variant(const char *src_model, void (*edit)(cJSON *cfg))
{
    char *dir = strdup("/tmp/gk-gemma-XXXXXX"), src[1024], dst[1200];
    cr_assert_not_null(mkdtemp(dir));
    const char *files[] = {"model.safetensors", "golden.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/models/%s/%s", data_dir(), src_model, files[i]);
        char *abs = realpath(src, NULL);
        cr_assert_not_null(abs, "%s", src);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        cr_assert_eq(symlink(abs, dst), 0, "%s", dst);
        free(abs);
    }
    snprintf(src, sizeof src, "%s/models/%s/config.json", data_dir(), src_model);
    char *text = read_text(src);
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(cfg, "%s", src);
    edit(cfg);
    char *edited = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    FILE *f = fopen(dst, "w");
    cr_assert(f, "%s", dst);
    fputs(edited, f);
    fclose(f);
    free(edited);
    return dir;
}

static void remove_variant(char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
    free(dir);
}

static void drop_layer_types(cJSON *c) { cJSON_DeleteItemFromObject(c, "layer_types"); }
static void gemma3_pattern_2(cJSON *c)
{
    cJSON_DeleteItemFromObject(c, "layer_types");
    cJSON_AddNumberToObject(c, "sliding_window_pattern", 2);
}
/* the layout published Gemma 3 checkpoints use: rope_theta and rope_scaling
 * for the full layers, rope_local_base_freq for the sliding ones */
static void gemma3_older_rope(cJSON *c)
{
    cJSON_DeleteItemFromObject(c, "rope_parameters");
    cJSON_AddNumberToObject(c, "rope_theta", 1e6);
    cJSON_AddNumberToObject(c, "rope_local_base_freq", 1e4);
    cJSON *s = cJSON_AddObjectToObject(c, "rope_scaling");
    cJSON_AddStringToObject(s, "rope_type", "linear");
    cJSON_AddNumberToObject(s, "factor", 8.0);
}

/* Configs that say the same as the fixture's in another way still match its
 * goldens: layer_types absent (Gemma2Config's alternating default, Gemma 3's
 * sliding_window_pattern), Gemma 3's older rope keys. */
Test(arch_gemma, equivalent_configs_match_the_same_goldens)
{
    struct { const char *model; void (*edit)(cJSON *); const char *what; } cases[] = {
        {"gemma2-tiny", drop_layer_types, "gemma2 without layer_types"},
        {"gemma3-tiny", gemma3_pattern_2, "gemma3 with sliding_window_pattern 2"},
        {"gemma3-tiny", gemma3_older_rope, "gemma3 with rope_theta, rope_scaling, rope_local_base_freq"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = variant(cases[i].model, cases[i].edit), *out;
        int rc = run(&out, "verify %s --backend cpu_ref --dtype f32", dir);
        cr_expect_eq(rc, 0, "%s:\n%s", cases[i].what, out);
        cr_expect(strstr(out, "0 failed: PASS"), "%s:\n%s", cases[i].what, out);
        free(out);
        remove_variant(dir);
    }
}

static void unknown_layer_type(cJSON *c)
{
    cJSON *types = cJSON_GetObjectItem(c, "layer_types");
    cr_assert(cJSON_IsArray(types) && cJSON_GetArraySize(types) >= 2, "the fixture has layer_types");
    cJSON_ReplaceItemInArray(types, 1, cJSON_CreateString("chunked_attention"));
}
static void short_layer_types(cJSON *c) { cJSON_DeleteItemFromArray(cJSON_GetObjectItem(c, "layer_types"), 2); }
static void yarn_sliding_rope(cJSON *c)
{
    cJSON *sw = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "rope_parameters"), "sliding_attention");
    cr_assert_not_null(sw, "the fixture has rope_parameters.sliding_attention");
    cJSON_ReplaceItemInObject(sw, "rope_type", cJSON_CreateString("yarn"));
}
static void relu_activation(cJSON *c)
{
    cJSON_ReplaceItemInObject(c, "hidden_activation", cJSON_CreateString("relu"));
}
static void null_window(cJSON *c) { cJSON_ReplaceItemInObject(c, "sliding_window", cJSON_CreateNull()); }
static void bidirectional(cJSON *c)
{
    cJSON_ReplaceItemInObject(c, "use_bidirectional_attention", cJSON_CreateTrue());
}

/* What the plugins cannot run is refused at load, naming the key (and the
 * value), before any check runs. */
Test(arch_gemma, unrunnable_configs_are_refused_naming_the_key)
{
    struct { const char *model; void (*edit)(cJSON *); const char *want; } cases[] = {
        {"gemma2-tiny", unknown_layer_type, "'layer_types.1' \"chunked_attention\" is not supported"},
        {"gemma3-tiny", short_layer_types, "'layer_types.2' is missing"},
        {"gemma3-tiny", yarn_sliding_rope, "'rope_parameters.sliding_attention.rope_type' \"yarn\" is not supported"},
        {"gemma2-tiny", relu_activation, "'hidden_activation' \"relu\" is not supported"},
        {"gemma2-tiny", null_window, "'sliding_window' must be an integer >= 1, got null"},
        {"gemma3-tiny", bidirectional, "use_bidirectional_attention true is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = variant(cases[i].model, cases[i].edit), *out;
        cr_expect_eq(run(&out, "verify %s --backend cpu_ref --dtype f32", dir), 1, "%s", out);
        cr_expect(strstr(out, cases[i].want), "want '%s' in:\n%s", cases[i].want, out);
        cr_expect_null(strstr(out, "summary:"), "%s", out);
        free(out);
        remove_variant(dir);
    }
}
