/* test_chat_template.c - the chat-template renderer (text/jinja*.c, chat.c)
 * against its oracle: the goldens of tests/data/chat-templates, rendered by
 * Python jinja2 the way transformers does (README there), byte for byte, or
 * failing where the template fails (with raise_exception's exact message);
 * and the interpreter's rules on small hand-written templates. */
#include <gk/gk.h>

#include "gk_json.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

static const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d ? d : "data";
}

/* "2026-06-15T12:00:00" as seconds, read as UTC */
static int64_t parse_clock(const char *s)
{
    struct tm tm = {0};
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

typedef struct tally {
    int cases, passed;
} tally;

static void check_file(const char *path, tally *t)
{
    size_t len;
    char *text = slurp(path, &len);
    cr_assert(text, "cannot read %s", path);
    gk_json_error je;
    cJSON *j = gk_json_parse(text, len, &je);
    cr_assert(j, "%s: bad JSON", path);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    cJSON *special = cJSON_CreateObject();
    const char *names[] = {"bos_token", "eos_token"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(special, names[i], v->valuestring);
    }
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    for (const cJSON *v = sp ? sp->child : NULL; v; v = v->next)
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(special, v->string, v->valuestring);
    char *special_s = cJSON_PrintUnformatted(special);
    const cJSON *render = cJSON_GetObjectItemCaseSensitive(j, "render");
    const cJSON *clock = render ? cJSON_GetObjectItemCaseSensitive(render, "strftime_now_fixed") : NULL;
    gk_chat_set_clock(parse_clock(cJSON_IsString(clock) ? clock->valuestring : NULL));
    gk_chat_template *tmpl = NULL;
    gk_err err = {0};
    gk_status st = gk_chat_template_parse(ct->valuestring, gk_json_strlen(ct), special_s, &tmpl, &err);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(j, "cases");
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
        const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "rendered");
        const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(c, "error");
        const cJSON *etype = cJSON_GetObjectItemCaseSensitive(c, "error_type");
        t->cases++;
        if (st != GK_OK) {
            fprintf(stderr, "FAIL %s / %s: template does not parse: %s\n", path, name, err.msg);
            continue;
        }
        char *msgs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "messages"));
        const cJSON *extra = cJSON_GetObjectItemCaseSensitive(c, "extra");
        char *extra_s = cJSON_IsObject(extra) ? cJSON_PrintUnformatted(extra) : NULL;
        bool agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
        char *out = NULL;
        size_t out_len = 0;
        gk_err e2 = {0};
        gk_status rs = gk_chat_render_json(tmpl, msgs, agp, extra_s, &out, &out_len, &e2);
        bool ok;
        if (cJSON_IsString(want_err)) {
            ok = rs != GK_OK;
            if (ok && cJSON_IsString(etype) && strstr(etype->valuestring, "raise_exception"))
                ok = strcmp(e2.msg, want_err->valuestring) == 0;
            if (!ok)
                fprintf(stderr, "FAIL %s / %s: want error '%s', got %s '%s'\n", path, name, want_err->valuestring,
                        rs == GK_OK ? "a rendering" : "error", rs == GK_OK ? (out ? out : "") : e2.msg);
        } else {
            size_t wl = gk_json_strlen(want);
            ok = rs == GK_OK && out_len == wl && memcmp(out, want->valuestring, wl) == 0;
            if (!ok && rs != GK_OK)
                fprintf(stderr, "FAIL %s / %s: error %s\n", path, name, e2.msg);
            else if (!ok) {
                size_t k = 0;
                while (k < wl && k < out_len && out[k] == want->valuestring[k])
                    k++;
                size_t from = k > 40 ? k - 40 : 0;
                fprintf(stderr, "FAIL %s / %s: differs at byte %zu (got %zu bytes, want %zu)\n  got:  %.80s\n  want: %.80s\n",
                        path, name, k, out_len, wl, out + from, want->valuestring + from);
            }
        }
        t->passed += ok;
        free(out);
        cJSON_free(msgs);
        cJSON_free(extra_s);
    }
    gk_chat_set_clock(0);
    gk_chat_template_destroy(tmpl);
    cJSON_free(special_s);
    cJSON_Delete(special);
    cJSON_Delete(j);
    free(text);
}

Test(chat_template, goldens_render_byte_for_byte)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/chat-templates", data_dir());
    DIR *d = opendir(dir);
    cr_assert(d, "no %s", dir);
    tally t = {0};
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".json"))
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        check_file(path, &t);
        files++;
    }
    closedir(d);
    fprintf(stderr, "chat-template goldens: %d of %d cases in %d files\n", t.passed, t.cases, files);
    cr_expect_eq(files, 17);
    cr_expect_eq(t.cases, 162);
    cr_assert_eq(t.passed, t.cases, "%d of %d golden cases pass", t.passed, t.cases);
}

/* ---- the interpreter's rules on small templates */

static char *render1(const char *tmpl, const char *messages, const char *extra, gk_err *err)
{
    gk_chat_template *t = NULL;
    if (gk_chat_template_parse(tmpl, strlen(tmpl), "{\"bos_token\": \"<s>\"}", &t, err) != GK_OK)
        return NULL;
    char *out = NULL;
    gk_chat_render_json(t, messages ? messages : "[]", true, extra, &out, NULL, err);
    gk_chat_template_destroy(t);
    return out;
}

static void expect(const char *tmpl, const char *extra, const char *want)
{
    gk_err err = {0};
    char *got = render1(tmpl, "[{\"role\": \"user\", \"content\": \" Hi \"}]", extra, &err);
    cr_assert(got, "template %s failed: %s", tmpl, err.msg);
    cr_expect_str_eq(got, want, "template: %s", tmpl);
    free(got);
}

Test(chat_template, whitespace_rules_as_transformers)
{
    expect("{% if true %}\n  a\n{% endif %}\nb", NULL, "  a\nb");   /* trim_blocks, lstrip_blocks */
    expect("x  {%- if true -%}  y  {%- endif %}", NULL, "xy");
    expect("  {%+ if true %}a{% endif %}", NULL, "  a");
    expect("a\n{# c #}\nb\n", NULL, "a\nb");                          /* one trailing newline dropped */
    expect("{{- ' a ' -}}", NULL, " a ");
    expect("{% raw %}{{ x }}{% endraw %}", NULL, "{{ x }}");
}

Test(chat_template, values_as_python)
{
    expect("{{ messages[0].content | trim }}|{{ messages[0]['role'] }}", NULL, "Hi|user");
    expect("{{ [1, 2, 3][::-1] }} {{ 'abc'[1:] }} {{ 'héllo'[1] }} {{ 'héllo' | length }}", NULL,
           "[3, 2, 1] bc é 5");
    expect("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 1 / 2 }} {{ 2 ** 10 }} {{ 3.0 }} {{ 1e20 }}", NULL,
           "3 -4 1 0.5 1024 3.0 1e+20");
    expect("{{ none }} {{ true }} {{ undefined_thing }}|{{ {'a': 1, 'b': [true, none]} }}", NULL,
           "None True |{'a': 1, 'b': [True, None]}");
    expect("{{ {'b': 1, 'a': 'x\"y'} | tojson }} {{ {'a': [1]} | tojson(indent=2) }}", NULL,
           "{\"b\": 1, \"a\": \"x\\\"y\"} {\n  \"a\": [\n    1\n  ]\n}");
    expect("{{ 'a,b,,c'.split(',') }} {{ '  x y '.split() }} {{ 'xxhixx'.strip('x') }} {{ 'ab'.upper() }}", NULL,
           "['a', 'b', '', 'c'] ['x', 'y'] hi AB");
    expect("{% set ns = namespace(n=0) %}{% for i in range(4) if i is even %}{% set ns.n = ns.n + i %}"
           "{{ loop.index }}{{ ',' if not loop.last }}{% endfor %}={{ ns.n }}",
           NULL, "1,2=2");
    expect("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% else %}none{% endfor %}"
           "{% for x in [] %}x{% else %}empty{% endfor %}",
           NULL, "a1b2empty");
    expect("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m('x') }}{{ m('y', b='z') }}", NULL, "[xB][yz]");
    expect("{% set x %}in{{ 1 }}{% endset %}{{ x }}{% for i in [1,2,3] %}{% if i == 2 %}{% break %}{% endif %}"
           "{{ i }}{% endfor %}",
           NULL, "in11");
    expect("{{ enable_thinking is defined }} {{ enable_thinking }}", "{\"enable_thinking\": false}", "True False");
    expect("{{ [{'t': 'a'}, {'t': 'b'}] | selectattr('t', 'equalto', 'b') | list | length }}"
           "{{ [{'t': 'a'}, {'t': 'b'}] | map(attribute='t') | join('-') }}",
           NULL, "1a-b");
    expect("{{ bos_token }}{{ 'x' ~ 1 ~ none }}", NULL, "<s>x1None");
    expect("{% with a = 1, b = 'x' %}{{ a }}{{ b }}{% endwith %}[{{ a }}]", NULL, "1x[]");
    expect("{% filter upper %}ab{{ 'c' }}{% endfilter %}|{% filter trim | lower %}  XY  {% endfilter %}", NULL,
           "ABC|xy");
    expect("{{ '%s=%d (%.2f) %r %%' | format('k', 3, 0.5, 'q') }}|{{ '<%s>' % 'a' }}|{{ '%s-%s' % (1, 2) }}", NULL,
           "k=3 (0.50) 'q' %|<a>|1-2");
}

Test(chat_template, errors_name_their_place)
{
    gk_err err = {0};
    cr_expect_null(render1("ok\n{% while x %}{% endwhile %}", NULL, NULL, &err));
    cr_expect(strstr(err.msg, "line 2, column 4") && strstr(err.msg, "while"), "%s", err.msg);
    cr_expect_eq(err.code, GK_ERR_UNSUPPORTED);
    cr_expect_null(render1("{{ 'a' ", NULL, NULL, &err));
    cr_expect_null(render1("{% if x %}", NULL, NULL, &err));
    cr_expect(strstr(err.msg, "endif"), "%s", err.msg);
    cr_expect_null(render1("{{ raise_exception('Only user and assistant roles!') }}", NULL, NULL, &err));
    cr_expect_str_eq(err.msg, "Only user and assistant roles!");
    cr_expect_eq(err.code, GK_ERR_INVALID_ARG);
    cr_expect_null(render1("{{ undefined_thing.attr }}", NULL, NULL, &err));
    cr_expect_null(render1("{{ 1 + 'a' }}", NULL, NULL, &err));
    cr_expect_null(render1("x\n  {{ 'a' | nosuchfilter }}", NULL, NULL, &err));
    cr_expect_eq(err.code, GK_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "line 2") && strstr(err.msg, "filter 'nosuchfilter'"), "%s", err.msg);
    cr_expect_null(render1("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", NULL, NULL, &err));
    cr_expect(strstr(err.msg, "too deeply"), "%s", err.msg);
}

Test(chat_template, loads_from_a_model_folder)
{
    char dir[] = "/tmp/gk-chat-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\", \"pad_token\": null,"
          " \"chat_template\": [{\"name\": \"default\", \"template\": \"{{ bos_token }}{% for m in messages %}"
          "{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}{{ pad_token is defined }}\"},"
          " {\"name\": \"tool_use\", \"template\": \"T\"}]}",
          f);
    fclose(f);
    gk_chat_template *t = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_chat_template_load(dir, NULL, &t, &err), GK_OK, "%s", err.msg);
    gk_chat_msg m[2] = {{.role = "user", .content = "hi"}, {.role = "assistant", .content = NULL}};
    char *out = NULL;
    cr_assert_eq(gk_chat_render(t, m, 2, false, NULL, &out, NULL, &err), GK_OK, "%s", err.msg);
    cr_expect_str_eq(out, "<s>user:hi</s>assistant:None</s>False");
    free(out);
    gk_chat_template_destroy(t);
    cr_assert_eq(gk_chat_template_load(dir, "tool_use", &t, &err), GK_OK, "%s", err.msg);
    gk_chat_template_destroy(t);
    cr_expect_eq(gk_chat_template_load(dir, "nope", &t, &err), GK_ERR_NOT_FOUND);
    remove(path);
    cr_expect_eq(gk_chat_template_load(dir, NULL, &t, &err), GK_ERR_NOT_FOUND);
    rmdir(dir);
}
