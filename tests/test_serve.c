/* test_serve.c - gkrun serve as a client sees it, on cpu_ref with the demo
 * model: the official openai npm client gets the text gkrun itself prints
 * for the same prompt, seed and settings; concurrent requests get what they
 * get alone; every error case answers its status with an OpenAI error
 * object naming the field; a client that leaves mid-stream frees its slot;
 * SIGTERM lets running requests finish and exits 0.
 *
 * Each test starts its own server on --port 0 (the port it printed is
 * read from its log), so suites and tests may run in parallel. The oracle
 * is always gkrun run from the test (--json, or --chat for the chat), never
 * text written here. The server's log is checked for sanitizer reports.
 */
#include <criterion/criterion.h>

#include "gkrun_run.h"

#include <cjson/cJSON.h>
#include <gk/gk.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MODEL "../models/kjv-demo"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = '\0';
    fclose(f);
    return b;
}

/* ------------------------------------------------------------- a server */

typedef struct server {
    pid_t pid;
    int port;
    char log[256], url[64];
} server;

/* gkrun serve on the demo model with the extra arguments (NULL-terminated). */
static void server_start(server *sv, ...)
{
    const char *argv[32];
    int n = 0;
    static char gkrun[1024];
    snprintf(gkrun, sizeof gkrun, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    argv[n++] = gkrun;
    argv[n++] = "serve";
    argv[n++] = "-m";
    argv[n++] = MODEL;
    argv[n++] = "--backend";
    argv[n++] = "cpu_ref";
    argv[n++] = "--port";
    argv[n++] = "0";
    va_list ap;
    va_start(ap, sv);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 31;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    snprintf(sv->log, sizeof sv->log, "/tmp/gk_serve_test_%d_%ld.log", (int)getpid(), (long)random());
    fflush(NULL);
    sv->pid = fork();
    cr_assert(sv->pid >= 0);
    if (sv->pid == 0) {
        /* a failed assertion ends the test process: the server goes with it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(sv->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1), dup2(fd, 2);
        execv(gkrun, (char *const *)argv);
        _exit(121);
    }
    double end = now_s() + 60;
    for (;;) {
        char *t = read_all(sv->log);
        const char *at = strstr(t, "listening on http://127.0.0.1:");
        if (at) {
            sv->port = atoi(at + strlen("listening on http://127.0.0.1:"));
            snprintf(sv->url, sizeof sv->url, "http://127.0.0.1:%d", sv->port);
            free(t);
            return;
        }
        int st;
        if (waitpid(sv->pid, &st, WNOHANG) == sv->pid || now_s() > end)
            cr_assert_fail("gkrun serve did not start: %s", t);
        free(t);
        sleep_ms(20);
    }
}

/* SIGTERM (or sig), then the exit status and the log (heap) once it has gone. */
static int server_stop_sig(server *sv, int sig, char **log)
{
    kill(sv->pid, sig);
    int st = 0;
    double end = now_s() + 60;
    while (waitpid(sv->pid, &st, WNOHANG) != sv->pid) {
        if (now_s() > end) {
            kill(sv->pid, SIGKILL);
            waitpid(sv->pid, &st, 0);
            break;
        }
        sleep_ms(20);
    }
    char *t = read_all(sv->log);
    unlink(sv->log);
    cr_expect(!strstr(t, "ERROR: AddressSanitizer") && !strstr(t, "ERROR: LeakSanitizer") &&
              !strstr(t, "runtime error:"), "sanitizer report from gkrun serve:\n%s", t);
    if (log)
        *log = t;
    else
        free(t);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void server_stop_with(server *sv, int sig)
{
    char *log;
    int rc = server_stop_sig(sv, sig, &log);
    cr_expect_eq(rc, 0, "gkrun serve exited %d after signal %d:\n%s", rc, sig, log);
    cr_expect(strstr(log, sig == SIGINT ? "SIGINT: finishing" : "SIGTERM: finishing") && strstr(log, "stopped"),
              "%s", log);
    free(log);
}

static void server_stop_ok(server *sv)
{
    server_stop_with(sv, SIGTERM);
}

/* ----------------------------------------------------------------- HTTP */

/* curl with the arguments (shell syntax) against URL+path: *body heap,
 * returns the HTTP status (0: no answer). */
static int http(char **body, const server *sv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int http(char **body, const server *sv, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "curl -s -S --max-time 60 -w '\\n%%{http_code}' %s", args);
    char *out = NULL;
    capture(&out, cmd);
    char *nl = strrchr(out, '\n');
    int status = nl ? atoi(nl + 1) : 0;
    if (nl)
        *nl = '\0';
    *body = out;
    (void)sv;
    return status;
}

/* The error object of a body: asserts its shape and returns it (owned by j). */
static const cJSON *error_of(cJSON *j, const char *body)
{
    cr_assert(j, "not JSON: %s", body);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    cr_assert(cJSON_IsObject(e), "no error object: %s", body);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(e, "message")), "%s", body);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(e, "type")), "%s", body);
    cr_assert(cJSON_GetObjectItem(e, "param"), "%s", body);
    cr_assert(cJSON_GetObjectItem(e, "code"), "%s", body);
    return e;
}

static void expect_error(const server *sv, const char *method_args, int want, const char *param, const char *code)
{
    char *body;
    int st = http(&body, sv, "%s", method_args);
    cr_expect_eq(st, want, "%s: status %d, body %s", method_args, st, body);
    cJSON *j = cJSON_Parse(body);
    const cJSON *e = error_of(j, body);
    const cJSON *p = cJSON_GetObjectItem(e, "param");
    if (param)
        cr_expect(cJSON_IsString(p) && !strcmp(p->valuestring, param), "%s: param should be %s: %s", method_args,
                  param, body);
    if (code)
        cr_expect_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, code, "%s: %s", method_args, body);
    cJSON_Delete(j);
    free(body);
}

/* The text of a completion, streamed (SSE) or not. */
static char *text_of(const char *body, bool chat, const char **finish_out)
{
    static char finish[32];
    finish[0] = '\0';
    size_t cap = strlen(body) + 1, len = 0;
    char *text = calloc(1, cap);
    if (strncmp(body, "data: ", 6)) {
        cJSON *j = cJSON_Parse(body);
        cr_assert(j, "not JSON: %s", body);
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        const cJSON *t = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content")
                              : cJSON_GetObjectItem(c, "text");
        cr_assert(cJSON_IsString(t), "%s", body);
        snprintf(text, cap, "%s", t->valuestring);
        snprintf(finish, sizeof finish, "%s", cJSON_GetObjectItem(c, "finish_reason")->valuestring);
        cJSON_Delete(j);
    } else {
        bool done = false;
        for (const char *p = body; (p = strstr(p, "data: ")); p += 6) {
            const char *end = strstr(p, "\n\n");
            cr_assert(end, "an event without its blank line: %s", p);
            if (!strncmp(p, "data: [DONE]", 12)) {
                done = true;
                break;
            }
            cJSON *j = cJSON_ParseWithLength(p + 6, (size_t)(end - p - 6));
            cr_assert(j, "bad chunk: %.*s", (int)(end - p), p);
            const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
            const cJSON *t = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "content")
                                  : cJSON_GetObjectItem(c, "text");
            if (cJSON_IsString(t)) {
                memcpy(text + len, t->valuestring, strlen(t->valuestring));
                len += strlen(t->valuestring);
            }
            const cJSON *f = cJSON_GetObjectItem(c, "finish_reason");
            if (cJSON_IsString(f))
                snprintf(finish, sizeof finish, "%s", f->valuestring);
            cJSON_Delete(j);
        }
        cr_assert(done, "the stream did not end with data: [DONE]: %s", body);
    }
    if (finish_out)
        *finish_out = finish;
    return text;
}

/* ---------------------------------------------------------------- oracle */

typedef struct expected {
    char *text;
    int n_tokens;
} expected;

/* What gkrun -m MODEL -p PROMPT prints (--json) with the flags. */
static expected gkrun_completion(const char *prompt, const char *flags)
{
    char *out;
    int rc = run(&out, "-m " MODEL " --backend cpu_ref --json -p '%s' %s 2>/dev/null", prompt, flags);
    cr_assert_eq(rc, 0, "gkrun failed: %s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert(j, "gkrun --json printed no JSON: %s", out);
    expected e = {.text = strdup(cJSON_GetObjectItem(j, "text")->valuestring),
                  .n_tokens = cJSON_GetArraySize(cJSON_GetObjectItem(j, "tokens"))};
    cJSON_Delete(j);
    free(out);
    return e;
}

/* The reply gkrun --chat prints to the one line (and -sys SYSTEM). */
static char *gkrun_chat(const char *system, const char *line, const char *flags)
{
    char gkrun[1024], cmd[4096];
    snprintf(gkrun, sizeof gkrun, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    snprintf(cmd, sizeof cmd, "printf '%%s\\n' '%s' | %s -m " MODEL " --backend cpu_ref --chat %s%s%s %s 2>/dev/null",
             line, gkrun, system ? "-sys '" : "", system ? system : "", system ? "'" : "", flags);
    char *out;
    cr_assert_eq(capture(&out, cmd), 0, "gkrun --chat failed: %s", out);
    size_t n = strlen(out);
    cr_assert(n > 0 && out[n - 1] == '\n', "gkrun --chat's reply ends with a line end: %s", out);
    out[n - 1] = '\0';
    return out;
}

/* ----------------------------------------------------- the openai client */

static bool have_node(char **why)
{
    char *out;
    if (capture(&out, "node --version 2>&1") != 0) {
        *why = out;
        return false;
    }
    free(out);
    struct stat sb;
    if (stat("serve/node_modules/openai/package.json", &sb) != 0) {
        *why = strdup("tests/serve/node_modules has no openai package (tools/install-deps.sh runs npm ci there)");
        return false;
    }
    return true;
}

Test(serve, openai_client_gets_gkruns_text)
{
    char *why = NULL;
    if (!have_node(&why))
        cr_skip_test("node or the openai npm package is missing, the openai client test cannot run: %s", why);
    server sv;
    server_start(&sv, NULL);
    /* completions: sampled and greedy, streamed and not, a stop string */
    expected e_seed = gkrun_completion("In the beginning", "-n 24 --seed 7 --temp 0.9");
    expected e_greedy = gkrun_completion("And God said", "-n 30");
    /* the stop string: a word from the middle of gkrun's own greedy text */
    expected e_free = gkrun_completion("And the LORD spake unto Moses", "-n 40");
    char stop[32] = "", flags[96], case_stop[512];
    for (const char *p = e_free.text + strlen(e_free.text) / 3; *p && !stop[0]; p++) {
        size_t n = 0;
        while (p[n] >= 'a' && p[n] <= 'z')
            n++;
        if (p[-1] == ' ' && n >= 3 && n < sizeof stop)
            snprintf(stop, sizeof stop, "%.*s", (int)n, p);
    }
    cr_assert(stop[0], "no word to stop at in gkrun's text: %s", e_free.text);
    snprintf(flags, sizeof flags, "-n 40 --stop '%s'", stop);
    expected e_stop = gkrun_completion("And the LORD spake unto Moses", flags);
    snprintf(case_stop, sizeof case_stop, "{\"kind\":\"completion\",\"stream\":true,\"prompt\":\"And the LORD "
             "spake unto Moses\",\"max_tokens\":40,\"stop\":[\"%s\"]},", stop);
    expected e_topk = gkrun_completion("Blessed are", "-n 20 --seed 11 --temp 1.2 --top-k 20 --top-p 0.9");
    /* chat: the demo has no template, so the transcript gkrun --chat completes */
    char *c_seed = gkrun_chat(NULL, "In the beginning", "-n 20 --seed 3 --temp 0.9");
    char *c_sys = gkrun_chat("The word of the LORD", "came unto Jonah", "-n 25");
    char cases[4096];
    snprintf(cases, sizeof cases,
        "[{\"kind\":\"completion\",\"stream\":false,\"prompt\":\"In the beginning\",\"max_tokens\":24,\"seed\":7,"
        "\"temperature\":0.9},"
        "{\"kind\":\"completion\",\"stream\":true,\"prompt\":\"In the beginning\",\"max_tokens\":24,\"seed\":7,"
        "\"temperature\":0.9},"
        "{\"kind\":\"completion\",\"stream\":false,\"prompt\":\"And God said\",\"max_tokens\":30},"
        "{\"kind\":\"completion\",\"stream\":true,\"prompt\":\"And God said\",\"max_tokens\":30},"
        "%s"
        "{\"kind\":\"completion\",\"stream\":false,\"prompt\":\"Blessed are\",\"max_tokens\":20,\"seed\":11,"
        "\"temperature\":1.2,\"top_k\":20,\"top_p\":0.9},"
        "{\"kind\":\"chat\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"In the beginning\"}],"
        "\"max_tokens\":20,\"seed\":3,\"temperature\":0.9},"
        "{\"kind\":\"chat\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"In the beginning\"}],"
        "\"max_tokens\":20,\"seed\":3,\"temperature\":0.9},"
        "{\"kind\":\"chat\",\"stream\":true,\"messages\":[{\"role\":\"system\",\"content\":\"The word of the LORD\"},"
        "{\"role\":\"user\",\"content\":\"came unto Jonah\"}],\"max_tokens\":25}]", case_stop);
    char cmd[8192], *out;
    snprintf(cmd, sizeof cmd, "node serve/openai_check.mjs %s '%s' 2>&1", sv.url, cases);
    int rc = capture(&out, cmd);
    cr_assert_eq(rc, 0, "openai_check.mjs failed: %s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 9, "%s", out);
    const char *want[9] = {e_seed.text, e_seed.text, e_greedy.text, e_greedy.text, e_stop.text, e_topk.text,
                           c_seed, c_seed, c_sys};
    for (int i = 0; i < 9; i++) {
        const cJSON *r = cJSON_GetArrayItem(j, i);
        const char *got = cJSON_GetObjectItem(r, "text")->valuestring;
        cr_expect_str_eq(got, want[i], "case %d: the server's text differs from gkrun's", i);
        cr_expect(cJSON_IsObject(cJSON_GetObjectItem(r, "usage")), "case %d has usage: %s", i, out);
    }
    /* usage and finish_reason against gkrun's token counts */
    const cJSON *u0 = cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "usage");
    cr_expect_eq(cJSON_GetObjectItem(u0, "completion_tokens")->valueint, e_seed.n_tokens);
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "finish_reason")->valuestring,
                     e_seed.n_tokens == 24 ? "length" : "stop");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 4), "finish_reason")->valuestring,
                     e_stop.n_tokens < 40 ? "stop" : "length");
    cr_expect(e_stop.n_tokens < 40, "the stop case stops early (gkrun: %d tokens)", e_stop.n_tokens);
    cr_expect(!strstr(e_stop.text, stop) && strlen(e_stop.text) < strlen(e_free.text), "gkrun cut at '%s'", stop);
    cr_expect_gt(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 3), "chunks")->valueint, 1, "streamed in pieces");
    cJSON_Delete(j);
    free(out);
    free(e_seed.text), free(e_greedy.text), free(e_stop.text), free(e_free.text), free(e_topk.text), free(c_seed), free(c_sys);
    server_stop_ok(&sv);
}

/* The value of a metric line "name value". */
static long metric(const server *sv, const char *name)
{
    char *body;
    cr_assert_eq(http(&body, sv, "%s/metrics", sv->url), 200);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(body, key);
    cr_assert(at, "no %s in %s", name, body);
    long v = atol(at + strlen(key));
    free(body);
    return v;
}

static void wait_metric(const server *sv, const char *name, long want, double seconds)
{
    double end = now_s() + seconds;
    long v;
    while ((v = metric(sv, name)) != want) {
        cr_assert(now_s() < end, "%s stayed %ld, want %ld", name, v, want);
        sleep_ms(20);
    }
}

/* ------------------------------------------------------------ batching */

Test(serve, concurrent_requests_get_what_they_get_alone)
{
    server sv;
    server_start(&sv, "-np", "4", NULL);
    struct { const char *prompt, *flags; int n; int seed; double temp; bool stream; const char *extra; } c[8] = {
        {"In the beginning", "-n 40", 40, -1, 0, false, NULL},
        {"And God said", "-n 33 --seed 1 --temp 0.8", 33, 1, 0.8, true, NULL},
        {"The LORD is my shepherd", "-n 25 --seed 2 --temp 1.0", 25, 2, 1.0, false, NULL},
        {"Blessed are the meek", "-n 50", 50, -1, 0, true, NULL},
        {"And it came to pass", "-n 37 --seed 3 --temp 0.7", 37, 3, 0.7, true, NULL},
        {"Thus saith the LORD", "-n 20", 20, -1, 0, false, NULL},
        {"In the beginning was the Word", "-n 45 --seed 4 --temp 0.9", 45, 4, 0.9, false, NULL},
        {"Then Jesus", "-n 30 --seed 5 --temp 1.1 --repeat-penalty 1.3 --repeat-last-n 16 --presence-penalty 0.5 "
                       "--frequency-penalty 0.25 --min-p 0.05", 30, 5, 1.1, true,
         ",\"repetition_penalty\":1.3,\"repeat_last_n\":16,\"presence_penalty\":0.5,\"frequency_penalty\":0.25,"
         "\"min_p\":0.05"},
    };
    /* eight curls at once, then each against gkrun alone */
    char cmd[16384] = "", file[8][128];
    int off = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(file[i], sizeof file[i], "/tmp/gk_serve_cc_%d_%d.out", (int)getpid(), i);
        char seed[256] = "";
        if (c[i].seed >= 0)
            snprintf(seed, sizeof seed, ",\"seed\":%d,\"temperature\":%g%s", c[i].seed, c[i].temp,
                     c[i].extra ? c[i].extra : "");
        off += snprintf(cmd + off, sizeof cmd - (size_t)off,
                        "curl -s --max-time 120 %s -o %s -d '{\"prompt\":\"%s\",\"max_tokens\":%d%s,\"stream\":%s}' "
                        "%s/v1/completions & ",
                        c[i].stream ? "-N" : "", file[i], c[i].prompt, c[i].n, seed, c[i].stream ? "true" : "false",
                        sv.url);
    }
    snprintf(cmd + off, sizeof cmd - (size_t)off, "wait");
    char *out;
    cr_assert_eq(capture(&out, cmd), 0, "%s", out);
    free(out);
    for (int i = 0; i < 8; i++) {
        char *body = read_all(file[i]);
        unlink(file[i]);
        char *got = text_of(body, false, NULL);
        expected e = gkrun_completion(c[i].prompt, c[i].flags);
        cr_expect_str_eq(got, e.text, "request %d (%s, %s) run with 7 others differs from gkrun", i, c[i].prompt,
                         c[i].flags);
        free(e.text);
        free(got);
        free(body);
    }
    /* the engine ran them in slots: every one counted, none left running */
    char *m;
    cr_assert_eq(http(&m, &sv, "%s/metrics", sv.url), 200);
    cr_expect(strstr(m, "gk_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 8\n"), "%s", m);
    cr_expect(strstr(m, "gk_busy_slots 0\n") && strstr(m, "gk_queue_depth 0\n"), "%s", m);
    cr_expect(strstr(m, "gk_time_to_first_token_seconds_count 8\n"), "%s", m);
    free(m);
    /* continuous batching: the requests ran together, far fewer steps than tokens */
    long steps = metric(&sv, "gk_engine_steps_total"), gen = metric(&sv, "gk_generated_tokens_total"),
         decodes = metric(&sv, "gk_engine_decode_inputs_total");
    cr_expect_gt(gen, 100, "the eight requests generated tokens");
    cr_expect_lt(steps * 2, gen, "%ld steps for %ld tokens: the requests did not run together", steps, gen);
    cr_expect_eq(decodes + 8, gen, "every token but each request's first came from a one-token decode input");
    cr_expect_eq(metric(&sv, "gk_engine_prefill_tokens_total"), metric(&sv, "gk_prompt_tokens_total"));
    server_stop_ok(&sv);
}

/* -------------------------------------------------------------- errors */

Test(serve, bad_requests_get_openai_errors_naming_the_field)
{
    server sv;
    server_start(&sv, "-c", "64", NULL);
    char a[2048];
#define POST_ARGS(path, json) (snprintf(a, sizeof a, "-d '%s' %s%s", json, sv.url, path), a)
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\": \"In the"), 400, NULL, "invalid_json");
    expect_error(&sv, POST_ARGS("/v1/completions", "[1, 2]"), 400, NULL, "invalid_json");
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\": 5}"), 400, "prompt", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{}"), 400, "prompt", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":\"ten\"}"), 400, "max_tokens", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2.5}"), 400, "max_tokens", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"temperature\":-1}"), 400, "temperature", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"top_p\":0}"), 400, "top_p", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"top_k\":-3}"), 400, "top_k", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"stream\":\"yes\"}"), 400, "stream", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"stop\":[1]}"), 400, "stop", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"n\":2}"), 400, "n", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"logprobs\":99}"), 400, "logprobs", NULL);
    expect_error(&sv, POST_ARGS("/v1/completions", "{\"prompt\":\"a\",\"repeat_penalty\":0}"), 400, "repeat_penalty",
                 NULL);
    expect_error(&sv, POST_ARGS("/v1/chat/completions", "{\"messages\":\"hi\"}"), 400, "messages", NULL);
    expect_error(&sv, POST_ARGS("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":7}]}"), 400,
                 "messages[0].content", NULL);
    expect_error(&sv, POST_ARGS("/v1/chat/completions", "{\"messages\":[{\"content\":\"hi\"}]}"), 400,
                 "messages[0].role", NULL);
    expect_error(&sv, POST_ARGS("/v1/chat/completions",
                                "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":2}"),
                 400, "top_logprobs", NULL);
    /* a prompt longer than the context (-c 64): 400 before it is queued */
    char big[1200] = "{\"prompt\":\"";
    for (int i = 0; i < 100; i++)
        strcat(big, "And the ");
    strcat(big, "\"}");
    expect_error(&sv, POST_ARGS("/v1/completions", big), 400, "prompt", "context_length_exceeded");
    /* paths, methods, sizes */
    snprintf(a, sizeof a, "%s/v1/nothing", sv.url);
    expect_error(&sv, a, 404, NULL, "not_found");
    snprintf(a, sizeof a, "%s/v1/completions", sv.url);
    expect_error(&sv, a, 405, NULL, "method_not_allowed");
    snprintf(a, sizeof a, "-X DELETE %s/v1/models", sv.url);
    expect_error(&sv, a, 405, NULL, "method_not_allowed");
    char *out;
    cr_assert_eq(capture(&out, "head -c 9437184 /dev/zero | tr '\\0' 'a' > /tmp/gk_serve_big.json"), 0);
    free(out);
    snprintf(a, sizeof a, "--data-binary @/tmp/gk_serve_big.json %s/v1/completions", sv.url);
    expect_error(&sv, a, 413, NULL, "body_too_large");
    snprintf(a, sizeof a, "-H 'Transfer-Encoding: chunked' --data-binary @/tmp/gk_serve_big.json %s/v1/completions",
             sv.url);
    expect_error(&sv, a, 413, NULL, "body_too_large");
    unlink("/tmp/gk_serve_big.json");
    /* after all that it still answers, and counted the 400s */
    char *body;
    cr_expect_eq(http(&body, &sv, "%s/health", sv.url), 200, "%s", body);
    cr_expect_str_eq(body, "{\"status\":\"ok\"}");
    free(body);
    cr_assert_eq(http(&body, &sv, "%s/v1/models", sv.url), 200);
    cJSON *j = cJSON_Parse(body);
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id")->valuestring,
                     "kjv-demo", "%s", body);
    cJSON_Delete(j);
    free(body);
    cr_assert_eq(http(&body, &sv, "%s/metrics", sv.url), 200);
    cr_expect(strstr(body, "gk_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 15\n"), "%s", body);
    cr_expect(strstr(body, "gk_requests_total{endpoint=\"/v1/completions\",status=\"413\"} 2\n"), "%s", body);
    free(body);
#undef POST_ARGS
    server_stop_ok(&sv);
}

Test(serve, api_key_is_required_where_set)
{
    server sv;
    server_start(&sv, "--api-key", "sesame-42", NULL);
    char a[1024], *body;
    const char *req = "-d '{\"prompt\":\"In the beginning\",\"max_tokens\":3}'";
    snprintf(a, sizeof a, "%s %s/v1/completions", req, sv.url);
    expect_error(&sv, a, 401, NULL, "invalid_api_key");
    snprintf(a, sizeof a, "-H 'Authorization: Bearer sesame-41' %s %s/v1/completions", req, sv.url);
    expect_error(&sv, a, 401, NULL, "invalid_api_key");
    snprintf(a, sizeof a, "-H 'Authorization: Bearer sesame-42x' %s %s/v1/completions", req, sv.url);
    expect_error(&sv, a, 401, NULL, "invalid_api_key");
    snprintf(a, sizeof a, "%s/metrics", sv.url);
    expect_error(&sv, a, 401, NULL, "invalid_api_key");
    cr_expect_eq(http(&body, &sv, "-H 'Authorization: Bearer sesame-42' %s %s/v1/completions", req, sv.url), 200,
                 "%s", body);
    free(body);
    /* /health and /v1/models are open, as llama-server's */
    cr_expect_eq(http(&body, &sv, "%s/health", sv.url), 200, "%s", body);
    free(body);
    cr_expect_eq(http(&body, &sv, "%s/v1/models", sv.url), 200, "%s", body);
    free(body);
    server_stop_with(&sv, SIGINT); /* Ctrl-C drains the same way */
}

/* ------------------------------------------------- queue, leave, drain */

/* a shell condition: the one slot is busy */
#define METRICS_BUSY_1 "$URL/metrics | grep -q '^gk_busy_slots 1$'"

Test(serve, full_queue_is_429_and_sigterm_drains)
{
    server sv;
    server_start(&sv, "-np", "1", "-c", "1024", NULL);
    /* one running long and four short ones queued (the queue holds 4 x --parallel) */
    char cmd[4096];
    int off = 0;
    for (int i = 0; i < 5; i++)
        off += snprintf(cmd + off, sizeof cmd - (size_t)off,
                        /* the first takes the slot before the others come */
                        "%scurl -s --max-time 120 -o /tmp/gk_serve_q_%d_%d.out -d '{\"prompt\":\"In the beginning\","
                        "\"max_tokens\":%d,\"ignore_eos\":true}' %s/v1/completions & ",
                        i == 1 ? "until curl -s " METRICS_BUSY_1 "; do sleep 0.02; done; " : "", (int)getpid(), i,
                        i == 0 ? 800 : 20, sv.url);
    snprintf(cmd + off, sizeof cmd - (size_t)off, "wait");
    setenv("URL", sv.url, 1);
    FILE *bg = popen(cmd, "r");
    cr_assert(bg);
    wait_metric(&sv, "gk_queue_depth", 4, 60);
    cr_expect_eq(metric(&sv, "gk_busy_slots"), 1);
    char a[512];
    snprintf(a, sizeof a, "-d '{\"prompt\":\"And\",\"max_tokens\":2}' %s/v1/completions", sv.url);
    expect_error(&sv, a, 429, NULL, "queue_full");
    /* SIGTERM: new requests are refused, the five finish, exit 0 */
    kill(sv.pid, SIGTERM);
    double end = now_s() + 10;
    char *body;
    int st;
    while ((st = http(&body, &sv, "%s/health", sv.url)) != 503 && now_s() < end) {
        free(body);
        sleep_ms(10);
    }
    cr_expect_eq(st, 503, "/health while draining");
    free(body);
    expect_error(&sv, a, 503, NULL, "draining");
    pclose(bg);
    for (int i = 0; i < 5; i++) {
        char f[128];
        snprintf(f, sizeof f, "/tmp/gk_serve_q_%d_%d.out", (int)getpid(), i);
        char *b = read_all(f);
        unlink(f);
        const char *fin;
        char *t = text_of(b, false, &fin);
        cr_expect_str_eq(fin, "length", "request %d finished while draining: %s", i, b);
        free(t);
        free(b);
    }
    server_stop_ok(&sv);
}

Test(serve, a_client_leaving_mid_stream_frees_its_slot)
{
    server sv;
    server_start(&sv, "-np", "1", "-c", "2048", NULL);
    /* head closes the pipe after the first chunks: curl dies, the socket closes */
    char *out;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -s -N --max-time 60 -d '{\"prompt\":\"In the beginning\",\"max_tokens\":2000,\"ignore_eos\":true,"
             "\"stream\":true}' %s/v1/completions | head -c 400 > /dev/null",
             sv.url);
    capture(&out, cmd);
    free(out);
    wait_metric(&sv, "gk_busy_slots", 0, 30);
    long gen = metric(&sv, "gk_generated_tokens_total");
    cr_expect_lt(gen, 2000, "the request left behind ran to its end (%ld tokens)", gen);
    /* the one slot serves the next request */
    char *body;
    cr_expect_eq(http(&body, &sv, "--max-time 30 -d '{\"prompt\":\"And God said\",\"max_tokens\":5}' %s/v1/completions",
                      sv.url), 200, "%s", body);
    const char *fin;
    char *t = text_of(body, false, &fin);
    expected e = gkrun_completion("And God said", "-n 5");
    cr_expect_str_eq(t, e.text);
    free(e.text);
    free(t);
    free(body);
    server_stop_ok(&sv);
}

Test(serve, a_client_leaving_before_its_answer_frees_its_slot)
{
    server sv;
    server_start(&sv, "-np", "1", "-c", "2048", NULL);
    /* curl gives up after 0.5 s of a request that would take far longer */
    char *out;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -s --max-time 0.5 -d '{\"prompt\":\"In the beginning\",\"max_tokens\":2000,\"ignore_eos\":true}'"
             " %s/v1/completions", sv.url);
    capture(&out, cmd);
    free(out);
    wait_metric(&sv, "gk_busy_slots", 0, 30);
    long gen = metric(&sv, "gk_generated_tokens_total");
    cr_expect_lt(gen, 2000, "the request left behind ran to its end (%ld tokens)", gen);
    char *body;
    cr_expect_eq(http(&body, &sv, "-d '{\"prompt\":\"And God said\",\"max_tokens\":5}' %s/v1/completions", sv.url),
                 200, "%s", body);
    free(body);
    cr_assert_eq(http(&body, &sv, "%s/metrics", sv.url), 200);
    cr_expect(strstr(body, "gk_requests_total{endpoint=\"/v1/completions\",status=\"499\"} 1\n"), "%s", body);
    free(body);
    server_stop_ok(&sv);
}

Test(serve, an_idle_connection_is_closed_after_the_timeout)
{
    server sv;
    server_start(&sv, "--timeout", "1", NULL);
    /* a connection that sends nothing: the server closes it, cat sees the end */
    char cmd[512], *out;
    snprintf(cmd, sizeof cmd, "bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; s=$(date +%%s%%N); timeout 20 cat <&3; "
             "echo $(( ($(date +%%s%%N) - s) / 1000000 ))'", sv.port);
    cr_assert_eq(capture(&out, cmd), 0, "%s", out);
    long ms = atol(out);
    cr_expect(ms >= 500 && ms < 10000, "closed after %ld ms with --timeout 1", ms);
    free(out);
    server_stop_ok(&sv);
}

Test(serve, bad_flags_exit_2)
{
    char *out;
    cr_expect_eq(run(&out, "serve -m " MODEL " --port 70000"), 2, "%s", out);
    cr_expect(strstr(out, "--port"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve -m " MODEL " -np 0"), 2, "%s", out);
    cr_expect(strstr(out, "-np"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve -m " MODEL " --host nowhere"), 2, "%s", out);
    cr_expect(strstr(out, "--host"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve -m " MODEL " --bogus"), 2, "%s", out);
    cr_expect(strstr(out, "--bogus"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve --port 1"), 2, "%s", out);
    cr_expect(strstr(out, "-m DIR"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve -m " MODEL " --timeout"), 2, "%s", out);
    free(out);
    cr_expect_eq(run(&out, "serve --help"), 0, "%s", out);
    cr_expect(strstr(out, "usage: gkrun serve"), "%s", out);
    free(out);
}

/* ------------------------------------------------- chat template, logprobs */

/* The demo model in a temporary folder with a chat template of our own
 * (links to its weights and tokenizer): the server renders with it as
 * gkrun --chat does, and its raise_exception is a 400. */
Test(serve, chat_renders_with_the_models_template_as_gkrun_chat)
{
    char dir[] = "/tmp/gk_serve_tmpl_XXXXXX", path[256], here[1024], cmd[4096];
    cr_assert(mkdtemp(dir));
    cr_assert(getcwd(here, sizeof here));
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"};
    for (int i = 0; i < 4; i++) {
        char from[1200];
        snprintf(from, sizeof from, "%s/" MODEL "/%s", here, files[i]);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        cr_assert_eq(symlink(from, path), 0, "%s", from);
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"eos_token\": \"<|endoftext|>\", \"chat_template\": \"{% for m in messages %}"
          "{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
          "{{ m.role | upper }}: {{ m.content }}\\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}\"}",
          f);
    fclose(f);
    server sv;
    server_start(&sv, "-m", dir, NULL); /* the last -m wins */
    char *body;
    snprintf(cmd, sizeof cmd, "-d '{\"messages\":[{\"role\":\"system\",\"content\":\"Thou shalt\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And God \"},{\"type\":\"text\","
             "\"text\":\"said\"}]}],\"max_tokens\":30,\"seed\":9,\"temperature\":0.8}' %s/v1/chat/completions",
             sv.url);
    cr_assert_eq(http(&body, &sv, "%s", cmd), 200, "%s", body);
    char *got = text_of(body, true, NULL);
    /* the prompt is the template's rendering (gkrun chat-template), tokenized without specials */
    cJSON *j = cJSON_Parse(body);
    int n_prompt = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint;
    cJSON_Delete(j);
    free(body);
    char msgs[256], *ids;
    snprintf(msgs, sizeof msgs, "%s/messages.json", dir);
    f = fopen(msgs, "w");
    fputs("[{\"role\":\"system\",\"content\":\"Thou shalt\"},{\"role\":\"user\",\"content\":\"And God said\"}]", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "$GKRUN chat-template -m %s --messages %s --add-generation-prompt | $GKRUN tokenize -m %s -",
             dir, msgs, dir);
    char gk[1024];
    snprintf(gk, sizeof gk, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    setenv("GKRUN", gk, 1);
    cr_assert_eq(capture(&ids, cmd), 0, "%s", ids);
    int n_ids = 0;
    for (char *p = strtok(ids, " \n"); p; p = strtok(NULL, " \n"))
        n_ids++;
    free(ids);
    cr_expect_eq(n_prompt, n_ids, "the server's prompt is the template's rendering");
    cr_expect_gt(n_ids, 8, "the template's text is there, not the bare transcript");
    /* gkrun --chat on the same folder renders the same two messages */
    char gkrun[1024], *want;
    snprintf(gkrun, sizeof gkrun, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    snprintf(cmd, sizeof cmd, "printf 'And God said\\n' | %s -m %s --backend cpu_ref --chat -sys 'Thou shalt' -n 30 "
             "--seed 9 --temp 0.8 2>/dev/null", gkrun, dir);
    cr_assert_eq(capture(&want, cmd), 0, "%s", want);
    cr_assert(strlen(want) > 0);
    want[strlen(want) - 1] = '\0';
    cr_expect_str_eq(got, want, "the template's chat differs from gkrun --chat's");
    free(got);
    free(want);
    char a[1024];
    snprintf(a, sizeof a, "-d '{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}' %s/v1/chat/completions",
             sv.url);
    expect_error(&sv, a, 400, "messages", NULL);
    server_stop_ok(&sv);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* log-softmax of logits[n], and the index of the k-th largest. */
static double logsoftmax_at(const float *l, int64_t n, int64_t i)
{
    double mx = l[0], s = 0;
    for (int64_t k = 1; k < n; k++)
        mx = l[k] > mx ? l[k] : mx;
    for (int64_t k = 0; k < n; k++)
        s += exp((double)l[k] - mx);
    return (double)l[i] - mx - log(s);
}

static int64_t kth_best(const float *l, int64_t n, int k)
{
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++) {
        int above = 0; /* logits strictly better, ties broken by lower id */
        for (int64_t j = 0; j < n && above <= k; j++)
            above += l[j] > l[i] || (l[j] == l[i] && j < i);
        if (above == k) {
            best = i;
            break;
        }
    }
    return best;
}

Test(serve, logprobs_are_the_log_softmax_of_the_models_logits)
{
    server sv;
    server_start(&sv, NULL);
    char *body;
    cr_assert_eq(http(&body, &sv, "-d '{\"prompt\":\"In the beginning\",\"max_tokens\":3,\"logprobs\":5}' "
                                  "%s/v1/completions", sv.url), 200, "%s", body);
    cJSON *j = cJSON_Parse(body);
    const cJSON *lp = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "logprobs");
    cr_assert(cJSON_IsObject(lp), "%s", body);
    /* the oracle: the library's own logits for the same ids */
    gk_err err = {0};
    gk_runtime *rt;
    gk_model *m;
    gk_tokenizer *tok;
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    gk_model_opts mo = {.backend = "cpu_ref"};
    cr_assert_eq(gk_model_load(rt, MODEL, &mo, &m, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_tokenizer_load(MODEL, &tok, &err), GK_OK, "%s", err.msg);
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(gk_tokenizer_encode(tok, "In the beginning", 16, true, &ids, &n_ids, &err), GK_OK);
    int64_t nv = gk_model_config(m)->n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    cr_assert_eq(gk_model_forward(m, ids, (int64_t)n_ids, NULL, &err), GK_OK, "%s", err.msg);
    float *all = malloc((size_t)nv * n_ids * sizeof *all);
    cr_assert_eq(gk_model_logits(m, all, &err), GK_OK, "%s", err.msg);
    memcpy(logits, all + (n_ids - 1) * (size_t)nv, (size_t)nv * sizeof *logits);
    free(all);
    for (int t = 0; t < 3; t++) {
        int64_t best = kth_best(logits, nv, 0); /* greedy: the server picked this one */
        char *want_tok;
        cr_assert_eq(gk_tokenizer_decode(tok, (int32_t[]){(int32_t)best}, 1, false, &want_tok, NULL, &err), GK_OK);
        cr_expect_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "tokens"), t)->valuestring, want_tok,
                         "token %d", t);
        free(want_tok);
        double got = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "token_logprobs"), t)->valuedouble;
        cr_expect(fabs(got - logsoftmax_at(logits, nv, best)) < 1e-4, "token %d: logprob %g, log-softmax %g", t, got,
                  logsoftmax_at(logits, nv, best));
        const cJSON *top = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), t);
        cr_expect_eq(cJSON_GetArraySize(top), 5, "token %d: 5 alternatives", t);
        for (int k = 0; k < 5; k++) {
            int64_t id = kth_best(logits, nv, k);
            char *s;
            cr_assert_eq(gk_tokenizer_decode(tok, (int32_t[]){(int32_t)id}, 1, false, &s, NULL, &err), GK_OK);
            const cJSON *v = cJSON_GetObjectItem(top, s);
            cr_expect(cJSON_IsNumber(v) && fabs(v->valuedouble - logsoftmax_at(logits, nv, id)) < 1e-4,
                      "token %d: alternative %d '%s' should have %g: %s", t, k, s, logsoftmax_at(logits, nv, id),
                      cJSON_PrintUnformatted(top));
            free(s);
        }
        int32_t next = (int32_t)best;
        cr_assert_eq(gk_model_forward(m, &next, 1, NULL, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_model_logits(m, logits, &err), GK_OK, "%s", err.msg);
    }
    free(logits);
    free(ids);
    gk_tokenizer_destroy(tok);
    gk_model_destroy(m);
    gk_runtime_destroy(rt);
    cJSON_Delete(j);
    free(body);
    server_stop_ok(&sv);
}
