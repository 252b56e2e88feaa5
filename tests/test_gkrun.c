/* test_gkrun.c - the gkrun command line, run as a user would: exit codes,
 * messages, and what inspect and verify print. */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdint.h>

#include <cjson/cJSON.h>
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

/* Run a shell command; stdout+stderr into *out (heap). Returns the exit code. */
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

/* Number of tensors in a safetensors header, counted independently of libgk. */
static int header_tensor_count(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    uint64_t n;
    cr_assert_eq(fread(&n, 8, 1, f), 1);
    char *h = malloc(n + 1);
    cr_assert_eq(fread(h, 1, n, f), n);
    h[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(h);
    int count = cJSON_GetArraySize(j) - (cJSON_GetObjectItem(j, "__metadata__") ? 1 : 0);
    cJSON_Delete(j);
    free(h);
    return count;
}

static int index_tensor_count(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    int count = cJSON_GetArraySize(cJSON_GetObjectItem(j, "weight_map"));
    cJSON_Delete(j);
    return count;
}

Test(gkrun, inspect_every_reference_checkpoint)
{
    struct { const char *dir, *arch; bool sharded; } cases[] = {
        {"gpt2-tiny", "gpt2", false},
        {"llama-tiny", "llama", false},
        {"llama-tiny-f16-sharded", "llama", true},
        {"qwen3-tiny", "qwen3", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[1024], file[1100];
        snprintf(dir, sizeof dir, "%s/models/%s", data_dir(), cases[i].dir);
        snprintf(file, sizeof file, "%s/%s", dir,
                 cases[i].sharded ? "model.safetensors.index.json" : "model.safetensors");
        int want = cases[i].sharded ? index_tensor_count(file) : header_tensor_count(file);
        char *out;
        cr_assert_eq(run(&out, "inspect --json %s", dir), 0, "%s", out);
        cJSON *j = cJSON_Parse(out);
        cr_assert(j, "inspect --json printed no JSON: %s", out);
        cr_expect_eq(cJSON_GetObjectItem(j, "tensor_count")->valueint, want, "%s", cases[i].dir);
        cr_expect_str_eq(cJSON_GetObjectItem(j, "architecture")->valuestring, cases[i].arch);
        cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "tensors")), want);
        cJSON_Delete(j);
        free(out);
        /* the table form names the architecture and the count too */
        cr_assert_eq(run(&out, "inspect %s", file), 0, "%s", out);
        char line[64];
        snprintf(line, sizeof line, "tensors: %d\n", want);
        cr_expect(strstr(out, line), "%s", out);
        snprintf(line, sizeof line, "architecture: %s\n", cases[i].arch);
        cr_expect(strstr(out, line), "%s", out);
        free(out);
    }
}

Test(gkrun, inspect_bad_input_fails_with_a_message)
{
    char tmp[] = "/tmp/gk-gkrun-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    FILE *f = fopen(path, "wb");
    uint64_t len = 1000; /* header length beyond the file */
    fwrite(&len, 8, 1, f);
    fputs("{}", f);
    fclose(f);
    char *out;
    cr_expect_eq(run(&out, "inspect %s", path), 1);
    cr_expect(strstr(out, "format error") && strstr(out, "model.safetensors"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "inspect %s", tmp), 1); /* folder: same file found */
    free(out);
    cr_expect_eq(run(&out, "inspect /nonexistent/model"), 1);
    cr_expect(strstr(out, "/nonexistent/model"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "inspect"), 2);
    free(out);
    cr_expect_eq(run(&out, "frobnicate"), 2);
    cr_expect(strstr(out, "unknown command 'frobnicate'"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/gk.ini", tmp);
    f = fopen(path, "w");
    fputs("[plugins]\nwhat = 1\n", f);
    fclose(f);
    char model[1024];
    snprintf(model, sizeof model, "%s/models/llama-tiny", data_dir());
    cr_expect_eq(run(&out, "--config %s inspect %s", path, model), 1);
    cr_expect(strstr(out, "gk.ini:2: unknown key 'what'"), "%s", out);
    free(out);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    (void)!system(cmd);
}

/* The definition of correct: every reference model matches transformers in
 * float32 on the reference backend, through every check of verify. */
Test(gkrun, verify_every_reference_model_on_cpu_ref, .timeout = 300)
{
    const char *models[] = {"gpt2-tiny", "llama-tiny", "llama-tiny-f16-sharded", "qwen3-tiny"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char *out;
        int rc = run(&out, "verify %s/models/%s --backend cpu_ref --dtype f32", data_dir(), models[i]);
        cr_expect_eq(rc, 0, "%s:\n%s", models[i], out);
        cr_expect(strstr(out, "0 failed: PASS"), "%s", out);
        cr_expect(strstr(out, "greedy from gen.ids[:7]              20/20 tokens match  PASS"), "%s", out);
        cr_expect(strstr(out, "gen3.ids one at a time"), "%s", out);
        cr_expect_null(strstr(out, "FAIL"), "%s", out);
        free(out);
    }
}

/* A checkpoint stored in F16/BF16 checks against the low-precision bounds. */
Test(gkrun, verify_low_precision_bounds)
{
    char *out;
    cr_expect_eq(run(&out, "verify %s/models/qwen3-tiny", data_dir()), 0, "%s", out);
    cr_expect(strstr(out, "BF16 weights, tolerance x max|golden| 0.03"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "verify %s/models/llama-tiny --dtype f16", data_dir()), 0, "%s", out);
    cr_expect(strstr(out, "F16 weights"), "%s", out);
    free(out);
}

/* verify fails when the model does not match: a tolerance no float32 run can
 * meet makes the logits checks fail and the exit status non-zero. */
Test(gkrun, verify_fails_on_mismatch)
{
    char *out;
    cr_expect_eq(run(&out, "verify %s/models/llama-tiny --tol 1e-12", data_dir()), 1, "%s", out);
    cr_expect(strstr(out, "FAIL"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "verify %s/models/llama-tiny --backend nosuch", data_dir()), 1, "%s", out);
    cr_expect(strstr(out, "backend 'nosuch' is not loaded"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------ generation */

static char *demo_dir(void)
{
    static char d[1024];
    snprintf(d, sizeof d, "%s/../../models/kjv-demo", data_dir());
    return d;
}

/* Greedy text from the demo model equals transformers' greedy continuation
 * (tests/data/demo-golden.json, tools/make_demo_golden.py), token for token. */
Test(gkrun_generate, demo_model_greedy_matches_transformers, .timeout = 120)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/demo-golden.json", data_dir());
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        const cJSON *ids = cJSON_GetObjectItem(c, "ids");
        char *out;
        int rc = run(&out, "-m %s --backend cpu_ref -p '%s' -n %d --temp 0 --json", demo_dir(), prompt,
                     cJSON_GetArraySize(ids));
        cr_assert_eq(rc, 0, "%s", out);
        cJSON *o = cJSON_Parse(out);
        cr_assert(o, "no JSON: %s", out);
        const cJSON *got = cJSON_GetObjectItem(o, "tokens");
        cr_assert_eq(cJSON_GetArraySize(got), cJSON_GetArraySize(ids), "%s", out);
        for (int i = 0; i < cJSON_GetArraySize(ids); i++)
            cr_expect_eq(cJSON_GetArrayItem(got, i)->valueint, cJSON_GetArrayItem(ids, i)->valueint,
                         "'%s': token %d", prompt, i);
        cr_expect_str_eq(cJSON_GetObjectItem(o, "text")->valuestring, cJSON_GetObjectItem(c, "text")->valuestring);
        const cJSON *st = cJSON_GetObjectItem(o, "stats");
        cr_expect_eq(cJSON_GetObjectItem(st, "generated_tokens")->valueint, cJSON_GetArraySize(ids));
        cr_expect(cJSON_GetObjectItem(st, "decode_tokens_per_s")->valuedouble > 0);
        cr_expect(cJSON_GetObjectItem(st, "peak_memory_bytes")->valuedouble > 6e6);
        cJSON_Delete(o);
        free(out);
    }
    cJSON_Delete(j);
}

/* Streaming prints the prompt then exactly the decoded continuation, and the
 * statistics on stderr name what a user asks for. */
Test(gkrun_generate, streams_text_and_prints_stats)
{
    char *out;
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -n 12 --temp 0", demo_dir()), 0, "%s", out);
    cr_expect(strncmp(out, "In the beginning of the kingdom of God", 38) == 0, "%s", out);
    const char *want[] = {"load:", "prompt:  ", "prefill", "decode:  12 tokens", "ms/token", "weights:", "GB/s",
                          "memory:"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    free(out);
}

Test(gkrun_generate, seed_reproduces_sampling)
{
    char *a, *b, *c;
    cr_assert_eq(run(&a, "-m %s --backend cpu_ref -p 'And God said' -n 20 --seed 7 --json", demo_dir()), 0);
    cr_assert_eq(run(&b, "-m %s --backend cpu_ref -p 'And God said' -n 20 --seed 7 --json", demo_dir()), 0);
    cr_assert_eq(run(&c, "-m %s --backend cpu_ref -p 'And God said' -n 20 --seed 8 --temp 1.5 --json", demo_dir()), 0);
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b), *jc = cJSON_Parse(c);
    char *ta = cJSON_PrintUnformatted(cJSON_GetObjectItem(ja, "tokens"));
    char *tb = cJSON_PrintUnformatted(cJSON_GetObjectItem(jb, "tokens"));
    char *tc = cJSON_PrintUnformatted(cJSON_GetObjectItem(jc, "tokens"));
    cr_expect_str_eq(ta, tb);
    cr_expect_str_neq(ta, tc);
    free(ta), free(tb), free(tc), free(a), free(b), free(c);
    cJSON_Delete(ja), cJSON_Delete(jb), cJSON_Delete(jc);
}

/* Prompt from stdin; an overlong prompt and bad flags fail with a message. */
Test(gkrun_generate, input_and_errors)
{
    char *out;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "sh -c \"printf 'In the beginning' | %s/tools/gkrun -m %s --backend cpu_ref -n 5 --temp 0 --json\" 2>&1",
             getenv("GK_TEST_BUILD_ROOT"), demo_dir());
    FILE *p = popen(cmd, "r");
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_expect_eq(pclose(p), 0, "%s", buf);
    cr_expect(strstr(buf, "\"prompt\":\"In the beginning\"") && strstr(buf, "\"text\":\" of the kingdom of God\""), "%s", buf);

    cr_expect_eq(run(&out, "-m %s --backend cpu_ref --ctx 4 -p 'In the beginning God created the heaven'", demo_dir()), 1);
    cr_expect(strstr(out, "longer than the context of 4"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "-m %s --top-p 0 -p x", demo_dir()), 2);
    cr_expect(strstr(out, "--top-p must be in (0, 1]"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "-m /nonexistent/model -p x"), 1);
    cr_expect(strstr(out, "/nonexistent/model"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "-p x"), 2);
    cr_expect(strstr(out, "no model"), "%s", out);
    free(out);
}

/* --chat without a known template says so and completes plain text. */
Test(gkrun_generate, chat_without_template_falls_back)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "sh -c \"printf 'In the beginning\\n' | %s/tools/gkrun -m %s --backend cpu_ref --chat -n 6 --temp 0\" 2>&1",
             getenv("GK_TEST_BUILD_ROOT"), demo_dir());
    FILE *p = popen(cmd, "r");
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_expect_eq(pclose(p), 0, "%s", buf);
    cr_expect(strstr(buf, "no chat template gkrun knows"), "%s", buf);
    cr_expect(strstr(buf, " of the kingdom of God"), "%s", buf);
}

/* ------------------------------------------------------------- tokenizer */

/* tokenize prints HF's ids for the demo prompts (demo-golden.json holds the
 * ids HF tokenizers gave), detokenize gives the text back. */
Test(gkrun_tokenizer, tokenize_and_detokenize_match_hf_ids)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/demo-golden.json", data_dir());
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        char want[512] = "", *out;
        size_t used = 0;
        const cJSON *id;
        cJSON_ArrayForEach(id, cJSON_GetObjectItem(c, "prompt_ids"))
            used += (size_t)snprintf(want + used, sizeof want - used, "%s%d", used ? " " : "", id->valueint);
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        cr_assert_eq(run(&out, "tokenize -m %s '%s'", demo_dir(), prompt), 0, "%s", out);
        cr_expect(strncmp(out, want, strlen(want)) == 0 && out[strlen(want)] == '\n', "got %s want %s", out, want);
        free(out);
        cr_assert_eq(run(&out, "detokenize -m %s %s", demo_dir(), want), 0, "%s", out);
        cr_expect(strncmp(out, prompt, strlen(prompt)) == 0, "got '%s' want '%s'", out, prompt);
        free(out);
    }
    cJSON_Delete(j);
}

/* verify on a tokenizer folder checks every golden case; one altered id fails it. */
Test(gkrun_tokenizer, verify_tokenizer_folder)
{
    char tmp[] = "/tmp/gk-tokv-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd, "cp %s/qwen3-tokenizer.json %s/tokenizer.json && cp %s/tokenizers/qwen3/golden.json %s/",
             getenv("GK_TEST_TOKENIZERS"), tmp, data_dir(), tmp);
    cr_assert_eq(system(cmd), 0);
    cr_expect_eq(run(&out, "verify %s", tmp), 0, "%s", out);
    cr_expect(strstr(out, "summary: 15 passed, 0 failed: PASS"), "%s", out);
    free(out);
    /* the first case's first id changed: that case must now fail */
    char gpath[512];
    snprintf(gpath, sizeof gpath, "%s/golden.json", tmp);
    FILE *f = fopen(gpath, "rb");
    cr_assert(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "cases"), 0), "ids"), 0);
    cJSON_SetNumberValue(first, first->valueint + 1);
    char *text = cJSON_Print(j);
    f = fopen(gpath, "wb");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(j);
    cr_expect_eq(run(&out, "verify %s", tmp), 1, "%s", out);
    cr_expect(strstr(out, "FAIL"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    (void)!system(cmd);
}
