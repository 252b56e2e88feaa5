/* test_gkrun.c - the gkrun command line, run as a user would: exit codes,
 * messages, and what inspect and verify print. */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <stdarg.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <gk/gk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run a shell command line in which "$GKRUN" is the gkrun under test. */
static int run_sh(char **out, const char *fmt, ...)
{
    char gkrun[1024], cmd[4096];
    snprintf(gkrun, sizeof gkrun, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    setenv("GKRUN", gkrun, 1);
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "(");
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, ") 2>&1", sizeof cmd - strlen(cmd) - 1);
    return capture(out, cmd);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void remove_tree(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
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
    const char *models[] = {"gpt2-tiny", "llama-tiny", "llama-tiny-f16-sharded", "qwen3-tiny", "mistral-window"};
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

/* --megakernel / --no-megakernel are taken anywhere on the line (they only
 * steer the cuda backend: the same text on cpu_ref), but not as the text of
 * -p; cpu_ref says nothing of its path. */
Test(gkrun_generate, megakernel_flags_anywhere_but_in_a_prompt)
{
    char *a, *b, *c;
    cr_assert_eq(run(&a, "-m %s --backend cpu_ref -p 'In the beginning' -n 8 --temp 0 --json", demo_dir()), 0, "%s", a);
    cr_assert_eq(run(&b, "--no-megakernel -m %s --backend cpu_ref -p 'In the beginning' -n 8 --temp 0 --megakernel "
                         "--json", demo_dir()), 0, "%s", b);
    const char *ta = strstr(a, "\"text\""), *tb = strstr(b, "\"text\"");
    cr_assert(ta && tb, "%s\n%s", a, b);
    cr_expect(strncmp(ta, tb, (size_t)(strstr(ta, "\"stats\"") - ta)) == 0, "%s\n%s", a, b);
    cr_expect(strstr(b, "\"path\":\"\""), "%s", b);
    cr_assert_eq(run(&c, "-m %s --backend cpu_ref -p --no-megakernel -n 2 --temp 0 --json", demo_dir()), 0, "%s", c);
    cr_expect(strstr(c, "\"prompt\":\"--no-megakernel\""), "%s", c);
    free(a);
    free(b);
    free(c);
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

/* ---------------------------------------------------- numeric arguments */

/* Every numeric flag of every subcommand takes a whole number in its range:
 * anything else exits 2 with one line naming the flag and the value, before
 * any model is run. */
Test(gkrun_args, bad_numbers_exit_2_naming_flag_and_value)
{
    const char *m = demo_dir();
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/models/llama-tiny", data_dir());
    struct { const char *sub, *args, *want; } cases[] = {
        {"", "-n ten", "gkrun: -n: 'ten' is not an integer"},
        {"", "-n -2", "gkrun: -n: -2 is out of range"},
        {"", "-n 99999999999999999999", "gkrun: -n: 99999999999999999999 is out of range"},
        {"", "--n-predict 5x", "gkrun: --n-predict: '5x' is not an integer"},
        {"", "-n ''", "gkrun: -n: '' is not an integer"},
        {"", "--temp hot", "gkrun: --temp: 'hot' is not a number"},
        {"", "--temp nan", "gkrun: --temp: 'nan' is not a finite number"},
        {"", "--temp inf", "gkrun: --temp: 'inf' is not a finite number"},
        {"", "--temp -0.5", "gkrun: --temp: -0.5 is out of range"},
        {"", "--temp 1e39", "gkrun: --temp: 1e39 is out of range"},
        {"", "--temp 1e999", "gkrun: --temp: 1e999 is out of range"},
        {"", "--top-k -1", "gkrun: --top-k: -1 is out of range"},
        {"", "--top-k 99999999999", "gkrun: --top-k: 99999999999 is out of range"},
        {"", "--top-p 0", "gkrun: --top-p: 0 is out of range (--top-p must be in (0, 1])"},
        {"", "--top-p 1.5", "gkrun: --top-p: 1.5 is out of range (--top-p must be in (0, 1])"},
        {"", "--top-p nan", "gkrun: --top-p: 'nan' is not a finite number"},
        {"", "--seed -2", "gkrun: --seed: '-2' is not a non-negative integer"},
        {"", "--seed text", "gkrun: --seed: 'text' is not a non-negative integer"},
        {"", "--seed 18446744073709551616", "gkrun: --seed: 18446744073709551616 is out of range"},
        {"", "--ctx -5", "gkrun: --ctx: -5 is out of range (1 to 2147483647)"},
        {"", "--ctx 0", "gkrun: --ctx: 0 is out of range (1 to 2147483647)"},
        {"", "-c 144115188075855872", "gkrun: -c: 144115188075855872 is out of range (1 to 2147483647)"},
        {"", "-n \"$(printf '1\\n2')\"", "gkrun: -n: '1\\n2' is not an integer"},
        {"bench", "-p x", "gkrun: -p: 'x' is not an integer"},
        {"bench", "-p 0", "gkrun: -p: 0 is out of range"},
        {"bench", "-n -1", "gkrun: -n: -1 is out of range"},
        {"bench", "--reps 2147483648", "gkrun: --reps: 2147483648 is out of range"},
        {"bench", "--reps 0", "gkrun: --reps: 0 is out of range"},
        {"verify", "--tol -1", "gkrun: --tol: -1 is out of range (--tol must be > 0)"},
        {"verify", "--tol 0", "gkrun: --tol: 0 is out of range (--tol must be > 0)"},
        {"verify", "--tol 1e-3x", "gkrun: --tol: '1e-3x' is not a number"},
        {"compare", "--tol nan", "gkrun: --tol: 'nan' is not a finite number"},
        {"compare", "--ids 1,x", "gkrun: --ids: 'x' is not an integer"},
        {"compare", "--ids 1,,2", "gkrun: --ids: '' is not an integer"},
        {"compare", "--ids 1,2,", "gkrun: --ids: '' is not an integer"},
        {"compare", "--ids -3", "gkrun: --ids: -3 is out of range (0 to 2147483647)"},
        {"compare", "--ids 4294967297", "gkrun: --ids: 4294967297 is out of range (0 to 2147483647)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        int rc;
        if (!*cases[i].sub)
            rc = run(&out, "-m %s --backend cpu_ref -p 'In the' -n 1 %s", m, cases[i].args);
        else if (!strcmp(cases[i].sub, "bench"))
            rc = run(&out, "bench -m %s --backend cpu_ref -p 2 -n 2 --reps 1 %s", m, cases[i].args);
        else if (!strcmp(cases[i].sub, "verify"))
            rc = run(&out, "verify %s --backend cpu_ref %s", tiny, cases[i].args);
        else
            rc = run(&out, "compare -m %s --backend cpu_ref --reference cpu_ref %s", tiny, cases[i].args);
        cr_expect_eq(rc, 2, "%s %s: exit %d\n%s", cases[i].sub, cases[i].args, rc, out);
        cr_expect(strncmp(out, cases[i].want, strlen(cases[i].want)) == 0, "%s %s: want '%s', got:\n%s",
                  cases[i].sub, cases[i].args, cases[i].want, out);
        cr_expect_eq(count_lines(out), 1, "%s %s: one line wanted:\n%s", cases[i].sub, cases[i].args, out);
        free(out);
    }
}

/* The "tokens" array of a --json result, printed (heap). */
static char *json_tokens(const char *out)
{
    cJSON *o = cJSON_Parse(out);
    cr_assert(o, "no JSON: %s", out);
    char *t = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "tokens"));
    cJSON_Delete(o);
    return t;
}

/* The ends of the ranges are accepted and mean what they say. */
Test(gkrun_args, range_ends_are_accepted)
{
    char *out;
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref -p 'In the' -n 2 --seed 18446744073709551615 --top-k 0 --top-p 1 "
                           "--temp 1", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "seed 18446744073709551615"), "%s", out);
    free(out);
    /* -n 0 generates nothing */
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref -p 'In the' -n 0 --json", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "\"tokens\":[]"), "%s", out);
    free(out);
    /* a top-p below float's range keeps the most likely token: greedy */
    char *greedy;
    cr_assert_eq(run(&greedy, "-m %s --backend cpu_ref -p 'In the' -n 6 --temp 0 --json", demo_dir()), 0);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the' -n 6 --temp 1.5 --top-p 1e-60 --seed 5 --json",
                     demo_dir()), 0, "%s", out);
    char *tg = json_tokens(greedy), *tp = json_tokens(out);
    cr_expect_str_eq(tp, tg);
    free(tg);
    free(tp);
    free(greedy);
    free(out);
    cr_expect_eq(run(&out, "verify %s/models/llama-tiny --backend cpu_ref --dtype f32 --tol 1e300", data_dir()), 0,
                 "%s", out);
    cr_expect(strstr(out, "tolerance abs 1e+300"), "%s", out);
    free(out);
}

/* Number of ids in the "tokens" array of a --json result. */
static int json_token_count(const char *out)
{
    cJSON *o = cJSON_Parse(out);
    cr_assert(o, "no JSON: %s", out);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(o, "tokens"));
    cJSON_Delete(o);
    return n;
}

/* -n beyond the context generates what fits (the prompt of 4 ids leaves
 * ctx + 1 - 4 new tokens, the last needing no cache row), also for the
 * largest -n, whose sum with the prompt length does not fit an int64; -n -1
 * asks for exactly that much without the note. */
Test(gkrun_generate, n_beyond_the_context_generates_what_fits)
{
    char *out;
    cr_assert_eq(run(&out, "tokenize -m %s 'In the beginning'", demo_dir()), 0, "%s", out);
    cr_assert_str_eq(out, "1143 259 1796 1239\n"); /* 4 ids */
    free(out);
    cr_expect_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref --ctx 16 -p 'In the beginning' "
                              "-n 9223372036854775807 --temp 0 --json 2>/dev/null", demo_dir()), 0, "%s", out);
    cr_expect_eq(json_token_count(out), 13, "%s", out);
    free(out);
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref --ctx 16 -p 'In the beginning' -n 9223372036854775807 --temp 0",
                     demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "gkrun: note: 13 new tokens fit in the context of 16"), "%s", out);
    free(out);
    cr_expect_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref --ctx 16 -p 'In the beginning' -n -1 --temp 0 "
                              "--json 2>/dev/null", demo_dir()), 0, "%s", out);
    cr_expect_eq(json_token_count(out), 13, "%s", out);
    free(out);
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref --ctx 16 -p 'In the beginning' -n -1 --temp 0", demo_dir()), 0);
    cr_expect_null(strstr(out, "note:"), "%s", out);
    free(out);
}

/* A prompt longer than the context is refused before any of it is echoed. */
Test(gkrun_generate, overlong_prompt_is_refused_before_it_is_echoed)
{
    char *out;
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref --ctx 4 -p 'In the beginning God created the heaven'", demo_dir()),
                 1);
    cr_expect(strncmp(out, "gkrun: invalid argument: the prompt is ", 39) == 0, "%s", out);
    cr_expect_null(strstr(out, "In the beginning"), "the prompt was echoed:\n%s", out);
    cr_expect_eq(count_lines(out), 1, "%s", out);
    free(out);
}

/* ----------------------------------------------------------------- bench */

/* bench sizes its buffers and KV cache from -p and -n: beyond the model's
 * max_position_embeddings they are refused up front, naming the flag and the
 * context, however large (no wrapped size, no run of quadratic attention
 * beyond the positions the model has). */
Test(gkrun_bench, sizes_beyond_the_context_are_refused)
{
    char path[1100], *out;
    snprintf(path, sizeof path, "%s/config.json", demo_dir());
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    static char buf[8192];
    buf[fread(buf, 1, sizeof buf - 1, f)] = '\0';
    fclose(f);
    cJSON *cfg = cJSON_Parse(buf);
    int ctx = cJSON_GetObjectItem(cfg, "max_position_embeddings")->valueint;
    cJSON_Delete(cfg);
    char ctx_msg[64];
    snprintf(ctx_msg, sizeof ctx_msg, "the model's context of %d tokens", ctx);

    char over_p[64], over_p_msg[96], over_n[64], over_n_msg[128];
    snprintf(over_p, sizeof over_p, "-p %d -n 1", ctx + 1);
    snprintf(over_p_msg, sizeof over_p_msg, "gkrun bench: -p %d is longer than", ctx + 1);
    /* one new token more than fits after the prompt */
    snprintf(over_n, sizeof over_n, "-p %d -n 12", ctx - 10);
    snprintf(over_n_msg, sizeof over_n_msg, "gkrun bench: -p %d with -n 12 does not fit", ctx - 10);
    struct { const char *args, *want; } cases[] = {
        {"-p 4611686018427387904 -n 4611686018427387904", "gkrun bench: -p 4611686018427387904 is longer than"},
        {"-p 9223372036854775807 -n 1", "gkrun bench: -p 9223372036854775807 is longer than"},
        {over_p, over_p_msg},
        {over_n, over_n_msg},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run(&out, "bench -m %s --backend cpu_ref --reps 1 %s", demo_dir(), cases[i].args);
        cr_expect_eq(rc, 2, "%s: exit %d\n%s", cases[i].args, rc, out);
        cr_expect(strncmp(out, cases[i].want, strlen(cases[i].want)) == 0 && strstr(out, ctx_msg),
                  "%s: want '%s ... %s', got:\n%s", cases[i].args, cases[i].want, ctx_msg, out);
        cr_expect_eq(count_lines(out), 1, "%s", out);
        free(out);
    }
    /* the largest run that fits is measured */
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref --reps 1 -p %d -n 11", demo_dir(), ctx - 10), 0, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "prefill: %d tokens", ctx - 10);
    cr_expect(strstr(out, want) && strstr(out, "decode:  11 tokens"), "%s", out);
    free(out);
    /* -n 1 measures no decode step and says so without dividing by zero */
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref --reps 1 -p 3 -n 1", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "prefill: 3 tokens") && strstr(out, "(0.000 ms/token;"), "%s", out);
    free(out);
}

/* --kv-dtype picks the KV cache's dtype (bench and --json say which); an
 * unknown one exits 1 naming the option and the value. */
Test(gkrun_bench, kv_dtype_is_chosen_and_reported)
{
    char *out;
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref --reps 1 -p 3 -n 2", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "F16 weights") && strstr(out, "F16 KV cache"), "the demo model's own dtype: %s", out);
    free(out);
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref --reps 1 -p 3 -n 2 --kv-dtype bf16 --json", demo_dir()), 0,
                 "%s", out);
    cr_expect(strstr(out, "\"kv_dtype\":\"BF16\""), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref --reps 1 -p 3 -n 2 --kv-dtype q4", demo_dir()), 1, "%s", out);
    cr_expect(strstr(out, "KV-cache dtype") && strstr(out, "'q4'"), "%s", out);
    free(out);
}

/* ------------------------------------------------------------ prompt input */

/* The ids after "prompt ids (N):" of --verbose-prompt, as "a b c" (heap). */
static char *verbose_ids(const char *out)
{
    const char *p = strstr(out, "prompt ids (");
    cr_assert(p, "no prompt ids in:\n%s", out);
    p = strstr(p, "): ");
    cr_assert(p);
    p += 3;
    return strndup(p, strcspn(p, "\n"));
}

/* The first line of the output of `gkrun tokenize` on a file (heap). */
static char *tokenize_file(const char *path, bool special)
{
    char *out;
    cr_assert_eq(run(&out, "tokenize -m %s %s - < %s", demo_dir(), special ? "--special" : "", path), 0, "%s", out);
    char *line = strndup(out, strcspn(out, "\n"));
    free(out);
    return line;
}

/* Every byte of a prompt is encoded, NUL bytes included, whether it comes from
 * --prompt-file, stdin or a chat line: the ids equal those `gkrun tokenize`
 * gives for the same bytes, and --verbose-prompt shows the whole text. */
Test(gkrun_generate, nul_bytes_in_a_prompt_are_encoded)
{
    char tmp[] = "/tmp/gk-nul-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char mid[256], lead[256], chat[256], chat_line[256];
    snprintf(mid, sizeof mid, "%s/mid.txt", tmp);
    snprintf(lead, sizeof lead, "%s/lead.txt", tmp);
    snprintf(chat, sizeof chat, "%s/chat.txt", tmp);
    snprintf(chat_line, sizeof chat_line, "%s/chat-line.txt", tmp);
    static const char mid_text[] = "In the beginning\0 God created the heaven";
    static const char lead_text[] = "\0In the beginning";
    write_file(mid, mid_text, sizeof mid_text - 1);
    write_file(lead, lead_text, sizeof lead_text - 1);
    write_file(chat, "he\0llo\n", 7);
    write_file(chat_line, "he\0llo", 6); /* what the chat turn renders (no template) */

    char *want = tokenize_file(mid, true), *out;
    cr_expect(strlen(want) > strlen("1143 259 1796 1239 189"), "tokenize stopped at the NUL: %s", want);
    char echo[256];
    snprintf(echo, sizeof echo, "%s/echo.txt", tmp);
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref --prompt-file %s -n 1 --temp 0 --verbose-prompt "
                              "2>&1 >%s", demo_dir(), mid, echo), 0, "%s", out);
    char *got = verbose_ids(out);
    cr_expect_str_eq(got, want, "--prompt-file: ids %s, tokenize %s", got, want);
    cr_expect(strstr(out, "prompt text: \"In the beginning\\0 God created the heaven\"\n"), "%s", out);
    free(got);
    free(out);
    /* the echo on stdout carries the NUL too */
    FILE *f = fopen(echo, "rb");
    cr_assert(f);
    char echoed[256];
    size_t n = fread(echoed, 1, sizeof echoed, f);
    fclose(f);
    cr_expect(n > sizeof mid_text - 1 && memcmp(echoed, mid_text, sizeof mid_text - 1) == 0, "echoed %zu bytes", n);
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref -n 1 --temp 0 --verbose-prompt < %s 2>&1 >/dev/null",
                        demo_dir(), mid), 0, "%s", out);
    got = verbose_ids(out);
    cr_expect_str_eq(got, want, "stdin: ids %s, tokenize %s", got, want);
    free(got);
    free(out);
    free(want);

    /* a leading NUL is a byte like any other, not an empty prompt */
    want = tokenize_file(lead, true);
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref --prompt-file %s -n 1 --temp 0 --verbose-prompt "
                              "2>&1 >/dev/null", demo_dir(), lead), 0, "%s", out);
    got = verbose_ids(out);
    cr_expect_str_eq(got, want, "leading NUL: ids %s, tokenize %s", got, want);
    free(got);
    free(out);
    free(want);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref --prompt-file %s -n 1 --temp 0 --json", demo_dir(), lead), 0,
                 "%s", out);
    cr_expect(strstr(out, "\"prompt\":\"\\u0000In the beginning\""), "%s", out);
    free(out);

    /* a chat line */
    want = tokenize_file(chat_line, false);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref --chat -n 1 --temp 0 --verbose-prompt < %s", demo_dir(), chat), 0,
                 "%s", out);
    got = verbose_ids(out);
    cr_expect_str_eq(got, want, "chat: ids %s, tokenize %s", got, want);
    cr_expect(strstr(out, "prompt text: \"he\\0llo\"\n"), "%s", out);
    free(got);
    free(out);
    free(want);
    remove_tree(tmp);
}

/* A prompt source that cannot be read says why, in one line, exit 1; a FIFO
 * named as --prompt-file is read like a file. */
Test(gkrun_generate, prompt_read_errors_name_the_cause)
{
    struct { const char *args, *want; } cases[] = {
        {"-n 1 <&-", "gkrun: cannot read the prompt from stdin: Bad file descriptor\n"},
        {"-n 1 < /", "gkrun: cannot read the prompt from stdin: Is a directory\n"},
        {"--prompt-file / -n 1", "gkrun: cannot read the prompt file /: Is a directory\n"},
        {"--prompt-file /nonexistent/p.txt -n 1",
         "gkrun: cannot open the prompt file /nonexistent/p.txt: No such file or directory\n"},
        {"--chat -n 1 <&-", "gkrun: cannot read the chat from stdin: Bad file descriptor\n"},
        {"--chat -n 1 < /", "gkrun: cannot read the chat from stdin: Is a directory\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        int rc = run(&out, "-m %s --backend cpu_ref %s", demo_dir(), cases[i].args);
        cr_expect_eq(rc, 1, "%s: exit %d\n%s", cases[i].args, rc, out);
        cr_expect_str_eq(out, cases[i].want, "%s", cases[i].args);
        free(out);
    }
    char tmp[] = "/tmp/gk-fifo-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char fifo[256], *out;
    snprintf(fifo, sizeof fifo, "%s/prompt", tmp);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_expect_eq(run_sh(&out, "(printf 'In the beginning' > %s &); \"$GKRUN\" -m %s --backend cpu_ref --prompt-file %s "
                              "-n 5 --temp 0 --json", fifo, demo_dir(), fifo), 0, "%s", out);
    cr_expect(strstr(out, "\"prompt\":\"In the beginning\"") && strstr(out, "\"text\":\" of the kingdom of God\""),
              "%s", out);
    free(out);
    remove_tree(tmp);
}

/* A tokenizer that does not cover every id the model can emit: the streaming
 * decode fails with the tokenizer's own reason, not a generic message. */
Test(gkrun_generate, streaming_decode_failure_names_the_cause)
{
    char tmp[] = "/tmp/gk-smalltok-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char cmd[4096], path[1100];
    snprintf(cmd, sizeof cmd, "cp %s/config.json %s/model.safetensors %s/", demo_dir(), demo_dir(), tmp);
    cr_assert_eq(system(cmd), 0);
    /* the demo tokenizer cut to its first 300 ids (the bytes and the first merges) */
    snprintf(path, sizeof path, "%s/tokenizer.json", demo_dir());
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cJSON *t = cJSON_Parse(buf);
    cJSON *model = cJSON_GetObjectItem(t, "model"), *vocab = cJSON_GetObjectItem(model, "vocab");
    for (cJSON *e = vocab->child, *next; e; e = next) {
        next = e->next;
        if (e->valueint >= 300)
            cJSON_Delete(cJSON_DetachItemViaPointer(vocab, e));
    }
    cJSON *merges = cJSON_GetObjectItem(model, "merges");
    for (int i = cJSON_GetArraySize(merges) - 1; i >= 0; i--) {
        const cJSON *mg = cJSON_GetArrayItem(merges, i);
        const char *a = cJSON_GetArrayItem(mg, 0)->valuestring, *b = cJSON_GetArrayItem(mg, 1)->valuestring;
        char ab[256];
        snprintf(ab, sizeof ab, "%s%s", a, b);
        if (!cJSON_GetObjectItemCaseSensitive(vocab, a) || !cJSON_GetObjectItemCaseSensitive(vocab, b) ||
            !cJSON_GetObjectItemCaseSensitive(vocab, ab))
            cJSON_DeleteItemFromArray(merges, i);
    }
    cr_assert_eq(cJSON_GetArraySize(vocab), 300);
    char *text = cJSON_PrintUnformatted(t);
    snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
    write_file(path, text, strlen(text));
    free(text);
    cJSON_Delete(t);

    char *out;
    cr_expect_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref -p 'In the beginning' -n 30 --temp 0 2>&1 >/dev/null",
                        tmp), 1, "%s", out);
    cr_expect(strncmp(out, "gkrun: invalid argument: id ", 28) == 0 && strstr(out, "is outside the vocabulary") &&
                  strstr(out, "(300 ids)"), "%s", out);
    cr_expect_eq(count_lines(out), 1, "%s", out);
    free(out);
    remove_tree(tmp);
}

/* --------------------------------------------------------------- inspect */

/* Tensor names and metadata read from a file cannot split the table or send
 * escape sequences to the terminal: control characters are escaped in the
 * table (--json keeps the names as they are, JSON-escaped). */
Test(gkrun, inspect_escapes_control_characters_in_names)
{
    char tmp[] = "/tmp/gk-esc-XXXXXX";
    cr_assert(mkdtemp(tmp));
    char path[256];
    snprintf(path, sizeof path, "%s/esc.safetensors", tmp);
    const char *header = "{\"a\\nFAKE-LINE F32 [1] 0.00\\u001b[31m\":"
                         "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"b\\u009b31m\\u00e9\\\\\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                         "\"__metadata__\":{\"k\\u001b]0;x\\u0007\":\"v\\r\\nw\"}}";
    uint64_t hlen = strlen(header);
    char file[1024];
    memcpy(file, &hlen, 8);
    memcpy(file + 8, header, hlen);
    memset(file + 8 + hlen, 0, 8);
    write_file(path, file, 8 + hlen + 8);

    char *out;
    cr_assert_eq(run(&out, "inspect %s", path), 0, "%s", out);
    cr_expect_null(strchr(out, '\x1b'), "ESC reached the output:\n%s", out);
    cr_expect_null(strstr(out, "\xc2\x9b"), "a C1 CSI reached the output:\n%s", out);
    cr_expect_null(strchr(out, '\r'), "%s", out);
    cr_expect_null(strstr(out, "\nFAKE-LINE"), "the name started a line of its own:\n%s", out);
    cr_expect(strstr(out, "\na\\nFAKE-LINE F32 [1] 0.00\\x1b[31m "), "%s", out);
    cr_expect(strstr(out, "\nb\\u009b31m\xc3\xa9\\\\ "), "%s", out); /* é is printed as it is */
    cr_expect(strstr(out, "\nmetadata: k\\x1b]0;x\\x07 = v\\r\\nw\n"), "%s", out);
    /* the table: its header, then one line per tensor */
    const char *table = strstr(out, "\nname ");
    cr_assert(table, "%s", out);
    cr_expect_eq(count_lines(table + 1), 3, "%s", table);
    free(out);

    cr_assert_eq(run(&out, "inspect --json %s", path), 0, "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert(j, "%s", out);
    const cJSON *t0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tensors"), 0);
    cr_expect_str_eq(cJSON_GetObjectItem(t0, "name")->valuestring, "a\nFAKE-LINE F32 [1] 0.00\x1b[31m");
    cJSON_Delete(j);
    free(out);
    remove_tree(tmp);
}

/* Output that cannot be written (a full device, a closed stdout) is an error
 * naming stdout, never a silent exit 0. */
Test(gkrun, unwritable_stdout_is_an_error)
{
    char *out;
    const char *cases[] = {"> /dev/full", ">&-"};
    for (int i = 0; i < 2; i++) {
        /* stderr goes to the pipe first, then stdout is redirected */
        cr_assert_eq(run(&out, "inspect %s 2>&1 %s; echo \"exit=$?\"", demo_dir(), cases[i]), 0, "%s", out);
        cr_expect_not_null(strstr(out, "gkrun: cannot write to stdout:"), "%s: %s", cases[i], out);
        cr_expect_not_null(strstr(out, "exit=1"), "%s: %s", cases[i], out);
        free(out);
    }
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the' -n 3 --seed 1 2>&1 > /dev/full; echo \"exit=$?\"",
                     demo_dir()), 0, "%s", out);
    cr_expect_not_null(strstr(out, "cannot write to stdout: No space left on device"), "%s", out);
    cr_expect_not_null(strstr(out, "exit=1"), "%s", out);
    free(out);
}

/* A golden file whose logits do not hold prompt-length rows of the vocabulary
 * is reported by name; verify never reads past what the file holds. */
Test(gkrun, verify_names_golden_logits_of_the_wrong_size)
{
    char dir[] = "/tmp/gk-verify-XXXXXX", p[512], *out;
    cr_assert_not_null(mkdtemp(dir));
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char src[512];
        snprintf(src, sizeof src, "%s/models/llama-tiny/%s", data_dir(), files[i]);
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        cr_assert_eq(symlink(src, p), 0);
    }
    /* p0.ids = [1] (I64), p0.logits = 3 floats: far fewer than 1 x vocab */
    const char *hdr = "{\"p0.ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                      "\"p0.logits\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[8,20]}}";
    uint64_t hl = strlen(hdr);
    snprintf(p, sizeof p, "%s/golden.safetensors", dir);
    FILE *f = fopen(p, "wb");
    cr_assert(f);
    int64_t id = 1;
    float lg[3] = {0.5f, 1.5f, 2.5f};
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    fwrite(&id, 8, 1, f);
    fwrite(lg, 4, 3, f);
    fclose(f);
    cr_assert_eq(run(&out, "verify %s --backend cpu_ref", dir), 1, "%s", out);
    cr_expect_not_null(strstr(out, "golden 'p0.logits' holds 3 values, not 1 x "), "%s", out);
    free(out);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* bench --json: one object whose counts are the run asked for (-d tokens of
 * context before the -p prompt, -n new tokens, --reps measured runs) and
 * whose rates are a median inside their own spread; -d leaving no room for a
 * prompt is refused. The fields are read with cJSON. */
Test(gkrun_bench, json_reports_median_and_spread_at_a_depth)
{
    char *out;
    cr_assert_eq(run(&out, "bench -m %s --backend cpu_ref -d 40 -p 5 -n 7 --reps 3 --json", demo_dir()), 0, "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j, "%s", out);
    cr_expect_eq(cJSON_GetObjectItem(j, "depth")->valueint, 40);
    cr_expect_eq(cJSON_GetObjectItem(j, "n_prompt")->valueint, 5);
    cr_expect_eq(cJSON_GetObjectItem(j, "n_prefill")->valueint, 45);
    cr_expect_eq(cJSON_GetObjectItem(j, "n_gen")->valueint, 7);
    cr_expect_eq(cJSON_GetObjectItem(j, "reps")->valueint, 3);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "backend")->valuestring, "cpu_ref");
    const char *rates[2] = {"prefill_tokens_per_s", "decode_tokens_per_s"};
    for (int k = 0; k < 2; k++) {
        const cJSON *r = cJSON_GetObjectItem(j, rates[k]);
        cr_assert_not_null(r, "%s", rates[k]);
        double med = cJSON_GetObjectItem(r, "median")->valuedouble, lo = cJSON_GetObjectItem(r, "min")->valuedouble,
               hi = cJSON_GetObjectItem(r, "max")->valuedouble;
        cr_expect(lo > 0 && lo <= med && med <= hi, "%s: %g %g %g", rates[k], lo, med, hi);
    }
    cJSON_Delete(j);
    free(out);
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref -d 4 -p 3 -n 2 --reps 1", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "context: 4 tokens of depth before the 3-token prompt") && strstr(out, "prefill: 7 tokens"),
              "%s", out);
    free(out);
    cr_expect_eq(run(&out, "bench -m %s --backend cpu_ref -d 100000", demo_dir()), 2, "%s", out);
    cr_expect(strstr(out, "gkrun bench: -d 100000 leaves no room for a prompt"), "%s", out);
    free(out);
}

/* ------------------------------------------- sampling flags and defaults */

/* A copy of the demo model folder with generation_config.json holding text
 * (NULL: none), in a fresh temporary folder (*dir, to remove_tree). */
static void demo_copy(char *dir, size_t n, const char *text)
{
    snprintf(dir, n, "/tmp/gk-gkrun-gencfg-XXXXXX");
    cr_assert(mkdtemp(dir));
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "cp '%s'/config.json '%s'/model.safetensors '%s'/tokenizer.json "
                              "'%s'/tokenizer_config.json '%s'/", demo_dir(), demo_dir(), demo_dir(), demo_dir(), dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    if (text) {
        char path[1100];
        snprintf(path, sizeof path, "%s/generation_config.json", dir);
        write_file(path, text, strlen(text));
    }
}

/* The "stats" "generated_tokens" of a --json result on stdout. */
static int json_generated(const char *out)
{
    cJSON *o = cJSON_Parse(out);
    cr_assert(o, "no JSON: %s", out);
    int n = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "stats"), "generated_tokens")->valueint;
    cJSON_Delete(o);
    return n;
}

/* generation_config.json's values are gkrun's defaults: the brief's example
 * generates exactly 5 greedy tokens, -v says where each value came from, and
 * -n overrides it. (What the repetition penalty does to the tokens is
 * test_generate.c's business: here only how many and what -v reports.) */
Test(gkrun_sampling, generation_config_sets_the_defaults_and_flags_override, .timeout = 120)
{
    char dir[64];
    demo_copy(dir, sizeof dir, "{\"do_sample\": false, \"max_new_tokens\": 5, \"repetition_penalty\": 1.3}");
    char *out;
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref -p 'In the beginning' --json 2>/dev/null", dir), 0,
                 "%s", out);
    cr_expect_eq(json_generated(out), 5, "%s", out);
    cr_expect_eq(json_token_count(out), 5, "%s", out);
    free(out);
    /* the plain stats say it too */
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -v", dir), 0, "%s", out);
    const char *want[] = {"decode:  5 tokens", ", greedy",
                          "sampler chain: penalties -> temperature -> top-k -> top-p -> min-p -> greedy",
                          "  max new tokens     5 (generation_config.json)\n",
                          "  repeat penalty     1.3 (generation_config.json)\n",
                          "  penalty window     the whole context (generation_config.json)\n",
                          "  temperature        0 = greedy (generation_config.json: do_sample false)\n",
                          "  top-k              0 (default, unused: greedy) = off\n",
                          "  presence penalty   0 (default)\n", "(random, unused: greedy)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    free(out);
    /* -n and the penalty flags win, and say so */
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref -p 'In the beginning' -n 3 --json 2>/dev/null", dir),
                 0, "%s", out);
    cr_expect_eq(json_generated(out), 3, "%s", out);
    free(out);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -n 3 --repeat-penalty 1.1 -v --top-k 7 "
                           "--presence-penalty -0.5 --frequency-penalty 0.25 --min-p 0.05 --stop END --stop \"$(printf 'a\\tb')\"",
                     dir), 0, "%s", out);
    const char *want2[] = {"decode:  3 tokens", "  max new tokens     3 (user)\n",
                           "  repeat penalty     1.1 (user)\n",
                           /* the file's whole-sequence window goes with the file's penalty */
                           "  penalty window     last 64 ids (default)\n",
                           "  presence penalty   -0.5 (user)\n", "  frequency penalty  0.25 (user)\n",
                           "  top-k              7 (user, unused: greedy)\n", "  min-p              0.05 (user",
                           "  stop string        \"END\" (user)\n", "  stop string        \"a\\tb\" (user)\n"};
    for (size_t i = 0; i < sizeof want2 / sizeof want2[0]; i++)
        cr_expect(strstr(out, want2[i]), "missing '%s' in:\n%s", want2[i], out);
    free(out);
    /* -n -1: until EOS or the context is full */
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref --ctx 12 -p 'In the beginning' -n -1 -v --repeat-last-n 0", dir),
                 0, "%s", out);
    cr_expect(strstr(out, "  max new tokens     until EOS or the context is full (user)\n"), "%s", out);
    cr_expect(strstr(out, "  penalty window     last 0 ids (user) = penalties off\n"), "%s", out);
    free(out);
    remove_tree(dir);
}

/* do_sample true: the file's temperature samples, with transformers' top-k
 * 50 where the file has none; --temp 0 makes it greedy again; max_length
 * counts the prompt; a broken file names itself and the key. */
Test(gkrun_sampling, sampling_files_max_length_and_bad_files, .timeout = 120)
{
    char dir[64];
    demo_copy(dir, sizeof dir, "{\"do_sample\": true, \"temperature\": 0.9, \"top_p\": 0.8, \"max_length\": 7}");
    char *out;
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -v --seed 11", dir), 0, "%s", out);
    const char *want[] = {"-> min-p -> draw\n", "  temperature        0.9 (generation_config.json)\n",
                          "  top-k              50 (generation_config.json)\n",
                          "  top-p              0.8 (generation_config.json)\n",
                          "  max new tokens     max_length 7 minus the prompt (generation_config.json)\n",
                          "  seed               11 (user)\n", "decode:  3 tokens", "seed 11\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    free(out);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -v --temp 0", dir), 0, "%s", out);
    cr_expect(strstr(out, "  temperature        0 (user) = greedy\n"), "%s", out);
    cr_expect(strstr(out, "-> greedy (the most likely token)"), "%s", out);
    free(out);
    /* --seed -1 is random: the seed used is printed, by -v and in the stats */
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -v --seed -1", dir), 0, "%s", out);
    unsigned long long seed_v = 0, seed_s = 1;
    const char *p = strstr(out, "  seed               "), *q = strstr(out, "ms/token, seed ");
    cr_assert(p && q, "%s", out);
    cr_expect_eq(sscanf(p, "  seed               %llu (random)", &seed_v), 1, "%s", out);
    cr_expect_eq(sscanf(q, "ms/token, seed %llu", &seed_s), 1, "%s", out);
    cr_expect_eq(seed_v, seed_s, "%s", out);
    free(out);
    /* the stats of --json carry the seed exactly */
    cr_assert_eq(run_sh(&out, "\"$GKRUN\" -m %s --backend cpu_ref -p 'In' --seed 18446744073709551615 --json "
                              "2>/dev/null", dir), 0, "%s", out);
    cr_expect(strstr(out, "\"sampled\":true,\"seed\":18446744073709551615}"), "%s", out);
    free(out);

    char path[1100];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    const char *bad = "{\"do_sample\": true, \"top_k\": -3}";
    write_file(path, bad, strlen(bad));
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning'", dir), 1);
    cr_expect(strstr(out, "generation_config.json: 'top_k' must be an integer >= 0 (0 = off), got -3"), "%s", out);
    cr_expect_eq(count_lines(out), 1, "%s", out);
    free(out);
    bad = "{\"num_beams\": 4}";
    write_file(path, bad, strlen(bad));
    cr_expect_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -n 1", dir), 0);
    cr_expect(strstr(out, "gkrun: note: generation_config.json sets what gkrun does not do; ignored: num_beams 4\n"),
              "%s", out);
    free(out);
    remove_tree(dir);
}

/* No generation_config.json: greedy, 128 tokens (gkrun's defaults); a file
 * without do_sample is greedy by transformers' default. */
Test(gkrun_sampling, without_a_file_gkrun_is_greedy, .timeout = 120)
{
    char *out, dir[64];
    demo_copy(dir, sizeof dir, NULL);
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In the beginning' -v --ignore-eos --ctx 200", dir), 0,
                 "%s", out);
    remove_tree(dir);
    const char *want[] = {"  max new tokens     128 (default)\n", "  temperature        0 (default) = greedy\n",
                          "  repeat penalty     1 (default) = off\n", "  eos ids            none (user: --ignore-eos)\n",
                          "decode:  128 tokens"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    free(out);
    /* the demo model's file has eos_token_id alone */
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In' -v --ctx 16", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "  temperature        0 = greedy (generation_config.json: no do_sample, transformers' "
                          "false)\n"), "%s", out);
    cr_expect(strstr(out, "  max new tokens     128 (default)\n"), "%s", out);
    cr_expect(strstr(out, "note: 128 new tokens") || strstr(out, "new tokens fit in the context of 16"), "%s", out);
    free(out);
    /* -sys is kept for the chat */
    cr_assert_eq(run(&out, "-m %s --backend cpu_ref -p 'In' -n 1 -v -sys 'Be brief.'", demo_dir()), 0, "%s", out);
    cr_expect(strstr(out, "  system prompt      \"Be brief.\" (user, unused without --chat)\n"), "%s", out);
    free(out);
}

/* Every numeric flag of every subcommand refuses each malformed value with
 * exit 2 and one line naming the flag, before any model runs. */
Test(gkrun_args, every_numeric_flag_refuses_malformed_values, .timeout = 300)
{
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/models/llama-tiny", data_dir());
    struct { const char *sub, *flag, *out_of_range; } flags[] = {
        {"", "-n", "-2"}, {"", "--n-predict", "-2"}, {"", "--temp", "-1"}, {"", "--top-k", "-1"},
        {"", "--top-p", "0"}, {"", "--min-p", "1.5"}, {"", "--repeat-penalty", "0"},
        {"", "--repeat-last-n", "-2"}, {"", "--presence-penalty", "1e39"}, {"", "--frequency-penalty", "-1e39"},
        {"", "--seed", "-2"}, {"", "-s", "18446744073709551616"}, {"", "--ctx", "0"}, {"", "-c", "2147483648"},
        {"", "--ctx-size", "-1"},
        {"bench", "-p", "0"}, {"bench", "-n", "0"}, {"bench", "-d", "-1"}, {"bench", "--reps", "100001"},
        {"verify", "--tol", "0"}, {"compare", "--tol", "-1"}, {"compare", "--ids", "-1"},
        {"detokenize", "token id", "2147483648"},
    };
    const char *values[] = {"abc", "1x", "", "nan", "1e999", " 1", "0x10", NULL};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        values[sizeof values / sizeof values[0] - 1] = flags[i].out_of_range;
        for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
            const char *sub = flags[i].sub, *flag = flags[i].flag, *v = values[k];
            if (!strcmp(sub, "detokenize") && v[0] == ' ')
                continue; /* ids may be separated by spaces: " 1" is the id 1 */
            char *out;
            int rc;
            if (!*sub)
                rc = run(&out, "-m %s --backend cpu_ref -p 'In the' -n 1 %s '%s'", demo_dir(), flag, v);
            else if (!strcmp(sub, "bench"))
                rc = run(&out, "bench -m %s --backend cpu_ref -p 2 -n 2 --reps 1 %s '%s'", demo_dir(), flag, v);
            else if (!strcmp(sub, "verify"))
                rc = run(&out, "verify %s --backend cpu_ref %s '%s'", tiny, flag, v);
            else if (!strcmp(sub, "compare"))
                rc = run(&out, "compare -m %s --backend cpu_ref --reference cpu_ref %s '%s'", tiny, flag, v);
            else
                rc = run(&out, "detokenize -m %s 1 '%s'", demo_dir(), v);
            char want[64];
            snprintf(want, sizeof want, "gkrun: %s: ", flag);
            cr_expect_eq(rc, 2, "%s %s '%s': exit %d\n%s", sub, flag, v, rc, out);
            cr_expect(strncmp(out, want, strlen(want)) == 0, "%s %s '%s': want '%s...', got:\n%s", sub, flag, v,
                      want, out);
            cr_expect_eq(count_lines(out), 1, "%s %s '%s': one line wanted:\n%s", sub, flag, v, out);
            free(out);
        }
    }
}

/* Unknown options and options without their value: exit 2, naming them. */
Test(gkrun_args, unknown_and_incomplete_options_exit_2)
{
    const char *subs[] = {"", "inspect", "verify", "compare", "bench", "tokenize", "detokenize"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char *out;
        bool positional = !strcmp(subs[i], "inspect") || !strcmp(subs[i], "verify");
        int rc = run(&out, "%s %s %s --bogus-flag", subs[i], positional ? "" : "-m", demo_dir());
        cr_expect_eq(rc, 2, "'%s': exit %d\n%s", subs[i], rc, out);
        cr_expect(strstr(out, "unknown option '--bogus-flag'") || strstr(out, "unknown argument '--bogus-flag'"),
                  "'%s': %s", subs[i], out);
        free(out);
    }
    struct { const char *args, *want; } cases[] = {
        {"-m x -p", "gkrun: option '-p' needs a value"},
        {"-m x --stop", "gkrun: option '--stop' needs a value"},
        {"-m x -p y --stop ''", "gkrun: --stop: the stop string must not be empty"},
        {"bench -m x --reps", "gkrun bench: option '--reps' needs a value"},
        {"compare -m x --ids", "gkrun compare: option '--ids' needs a value"},
        {"verify x --tol", "gkrun verify: option '--tol' needs a value"},
        {"frobnicate", "gkrun: unknown command 'frobnicate'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        cr_expect_eq(run(&out, "%s", cases[i].args), 2, "%s: %s", cases[i].args, out);
        cr_expect(strncmp(out, cases[i].want, strlen(cases[i].want)) == 0, "%s: want '%s', got %s", cases[i].args,
                  cases[i].want, out);
        cr_expect_eq(count_lines(out), 1, "%s: %s", cases[i].args, out);
        free(out);
    }
}

/* -h/--help anywhere on the line prints the usage (of the subcommand) on
 * stdout and exits 0, even after a bad option; as an option's value it is
 * just a value. --version prints libgk's version. */
Test(gkrun_args, help_anywhere_and_version)
{
    const char *subs[] = {"inspect", "verify", "compare", "bench", "tokenize", "detokenize"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        for (int h = 0; h < 2; h++) {
            char *out;
            int rc = run_sh(&out, "\"$GKRUN\" %s -m x --bogus %s 2>/dev/null", subs[i], h ? "-h" : "--help");
            char want[64];
            snprintf(want, sizeof want, "usage: gkrun %s ", subs[i]);
            cr_expect_eq(rc, 0, "%s: exit %d: %s", subs[i], rc, out);
            cr_expect(strncmp(out, want, strlen(want)) == 0, "%s: %s", subs[i], out);
            free(out);
        }
    }
    char *out;
    cr_expect_eq(run_sh(&out, "\"$GKRUN\" -m x -n 5 --bogus --help 2>/dev/null"), 0);
    cr_expect(strncmp(out, "usage: gkrun ", 13) == 0, "%s", out);
    /* the whole usage names every option and every command */
    const char *want[] = {"--min-p", "--repeat-penalty", "--repeat-last-n", "--presence-penalty", "--frequency-penalty",
                          "--stop", "--ignore-eos", "--seed", "--ctx-size", "--file", "--n-predict", "--temp",
                          "--top-k", "--top-p", "--system-prompt", "-sys", "--verbose", "--version", "--kv-dtype",
                          "--json", "--chat", "inspect", "verify", "compare", "bench", "tokenize", "detokenize"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "usage lacks '%s'", want[i]);
    free(out);
    cr_expect_eq(run(&out, "--help"), 0);
    cr_expect(strncmp(out, "usage: gkrun ", 13) == 0, "%s", out);
    free(out);
    /* a value, not a request for help: the missing model is the error */
    cr_expect_eq(run(&out, "-m /nonexistent/model -p --help"), 1, "%s", out);
    cr_expect(strstr(out, "/nonexistent/model"), "%s", out);
    free(out);
    char want_v[64];
    snprintf(want_v, sizeof want_v, "gkrun (gk) %s\n", gk_version());
    cr_expect_eq(run(&out, "--version"), 0);
    cr_expect_str_eq(out, want_v);
    free(out);
    cr_expect_eq(run(&out, "-m x --version"), 0);
    cr_expect_str_eq(out, want_v);
    free(out);
}

