/* test_arch_gemma.c - the Gemma, Gemma 2 and Gemma 3 plugins: each tiny
 * random checkpoint matches transformers (its eager-attention goldens) in
 * float32 on the reference backend through every check of gkrun verify, and
 * a config the plugins cannot run is refused with the key named. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d ? d : "data";
}

/* Run gkrun with the arguments (shell syntax); stdout+stderr into *out (heap).
 * Returns the exit code. */
static int run(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "%s/tools/gkrun ", getenv("GK_TEST_BUILD_ROOT"));
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

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
Test(arch_gemma, verify_every_gemma_model_on_cpu_ref, .timeout = 300)
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

/* gemma2-tiny with layer_types[1] = "chunked_attention": refused at load,
 * naming the key and the value, before any check runs. */
Test(arch_gemma, unknown_layer_type_is_refused_naming_the_key)
{
    char dir[] = "/tmp/gk-gemma2-XXXXXX", src[1024], dst[1200];
    cr_assert_not_null(mkdtemp(dir));
    const char *files[] = {"model.safetensors", "golden.safetensors", "golden.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/models/gemma2-tiny/%s", data_dir(), files[i]);
        char *abs = realpath(src, NULL);
        if (!abs)
            continue; /* a fixture without this file */
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        cr_assert_eq(symlink(abs, dst), 0, "%s", dst);
        free(abs);
    }
    snprintf(src, sizeof src, "%s/models/gemma2-tiny/config.json", data_dir());
    char *text = read_text(src);
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    cJSON *types = cJSON_GetObjectItem(cfg, "layer_types");
    cr_assert(cJSON_IsArray(types) && cJSON_GetArraySize(types) >= 2, "gemma2-tiny has layer_types");
    cJSON_ReplaceItemInArray(types, 1, cJSON_CreateString("chunked_attention"));
    char *edited = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    FILE *f = fopen(dst, "w");
    cr_assert(f, "%s", dst);
    fputs(edited, f);
    fclose(f);
    free(edited);

    char *out;
    cr_expect_eq(run(&out, "verify %s --backend cpu_ref --dtype f32", dir), 1, "%s", out);
    cr_expect(strstr(out, "'layer_types.1' \"chunked_attention\" is not supported"), "%s", out);
    cr_expect_null(strstr(out, "summary:"), "%s", out);
    free(out);

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}
