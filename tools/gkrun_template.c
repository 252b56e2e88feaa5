/* gkrun_template.c - chat templates from the command line:
 *   gkrun chat-template -m DIR --messages FILE.json [--add-generation-prompt] [--extra JSON]
 * prints the model's template rendered over the messages (a JSON array of
 * message objects) to stdout; and gkrun verify FILE.json (or a folder of
 * them) on chat-template golden files (tests/data/chat-templates format):
 * every case rendered with the file's tokens, the case's variables and the
 * file's fixed clock, one line per case, non-zero exit on any mismatch.
 * Not here: tokenizing or generating from the rendering (gkrun_chat.c).
 */
#include "gkrun.h"
#include "gkrun_file.h"
#include "gk_json.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void chat_usage(FILE *f)
{
    fprintf(f, "usage: gkrun chat-template -m DIR --messages FILE.json [--add-generation-prompt] [--extra JSON]\n");
}

int gkrun_template(int argc, char **argv)
{
    const char *dir = NULL, *msgs_path = NULL, *extra = NULL;
    bool agp = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            msgs_path = argv[++i];
        else if (!strcmp(argv[i], "--extra") && i + 1 < argc)
            extra = argv[++i];
        else if (!strcmp(argv[i], "--add-generation-prompt"))
            agp = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            chat_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "gkrun chat-template: unknown option or missing value '%s'\n", argv[i]);
            chat_usage(stderr);
            return 2;
        }
    }
    if (!dir || !msgs_path) {
        chat_usage(stderr);
        return 2;
    }
    const char *why = NULL;
    size_t len = 0;
    char *msgs = gkrun_read_regular(msgs_path, &len, &why);
    if (!msgs) {
        fprintf(stderr, "gkrun: %s: %s\n", msgs_path, why ? why : "cannot read");
        return 1;
    }
    if (strlen(msgs) != len) {
        fprintf(stderr, "gkrun: %s: holds a NUL byte\n", msgs_path);
        free(msgs);
        return 1;
    }
    gk_err err = {0};
    gk_chat_template *t = NULL;
    char *out = NULL;
    size_t out_len = 0;
    int rc = 0;
    if (gk_chat_template_load(dir, NULL, &t, &err) != GK_OK ||
        gk_chat_render_json(t, msgs, agp, extra, &out, &out_len, &err) != GK_OK)
        rc = gkrun_fail(&err);
    else if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        fprintf(stderr, "gkrun: cannot write the rendering to stdout\n");
        rc = 1;
    }
    free(out);
    gk_chat_template_destroy(t);
    free(msgs);
    return rc;
}

/* ------------------------------------------------------ verify goldens */

/* "2026-06-15T12:00:00" as seconds read as UTC; 0 when absent or malformed. */
static int64_t parse_clock(const cJSON *s)
{
    struct tm tm = {0};
    if (!cJSON_IsString(s) || sscanf(s->valuestring, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

static cJSON *read_json(const char *path)
{
    size_t len = 0;
    const char *why = NULL;
    char *text = gkrun_read_regular(path, &len, &why);
    if (!text)
        return NULL;
    cJSON *j = gk_json_parse(text, len, NULL);
    free(text);
    return j;
}

static bool is_golden(const cJSON *j)
{
    return cJSON_IsObject(j) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "chat_template")) &&
           cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "cases"));
}

static bool has_suffix(const char *s, const char *x)
{
    size_t n = strlen(s), m = strlen(x);
    return n >= m && !strcmp(s + n - m, x);
}

bool gkrun_is_chat_golden(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    if (S_ISREG(st.st_mode)) {
        cJSON *j = has_suffix(path, ".json") ? read_json(path) : NULL;
        bool ok = is_golden(j);
        cJSON_Delete(j);
        return ok;
    }
    if (!S_ISDIR(st.st_mode))
        return false;
    DIR *d = opendir(path);
    bool ok = false;
    for (struct dirent *e; d && !ok && (e = readdir(d));) {
        if (!has_suffix(e->d_name, ".json") || !strcmp(e->d_name, "golden.json"))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        cJSON *j = read_json(p);
        ok = is_golden(j);
        cJSON_Delete(j);
    }
    if (d)
        closedir(d);
    return ok;
}

/* Every case of one golden file; counts into *n_cases / *n_fail. */
static void verify_file(const char *path, int *n_cases, int *n_fail)
{
    cJSON *j = read_json(path);
    if (!is_golden(j)) {
        printf("%s: not a chat-template golden file  FAIL\n", path);
        (*n_fail)++;
        cJSON_Delete(j);
        return;
    }
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    cJSON *tok = cJSON_CreateObject();
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (!v)
            v = cJSON_GetObjectItemCaseSensitive(sp, keys[k]);
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(tok, keys[k], v->valuestring);
    }
    char *tok_s = cJSON_PrintUnformatted(tok);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    gk_chat_set_clock(parse_clock(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "render"),
                                                                   "strftime_now_fixed")));
    gk_err perr = {0};
    gk_chat_template *t = NULL;
    gk_status ps = gk_chat_template_parse(ct->valuestring, gk_json_strlen(ct), tok_s, &t, &perr);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    for (const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "cases")->child; c; c = c->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "rendered");
        const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(c, "error");
        const cJSON *etype = cJSON_GetObjectItemCaseSensitive(c, "error_type");
        const char *cname = cJSON_IsString(name) ? name->valuestring : "?";
        char what[512];
        snprintf(what, sizeof what, "%s / %s", base, cname);
        (*n_cases)++;
        if (ps != GK_OK) {
            printf("%-60s template does not parse: %s  FAIL\n", what, perr.msg);
            (*n_fail)++;
            continue;
        }
        char *msgs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "messages"));
        const cJSON *extra = cJSON_GetObjectItemCaseSensitive(c, "extra");
        char *extra_s = cJSON_IsObject(extra) ? cJSON_PrintUnformatted(extra) : NULL;
        bool agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
        char *out = NULL;
        size_t out_len = 0;
        gk_err e = {0};
        gk_status rs = msgs ? gk_chat_render_json(t, msgs, agp, extra_s, &out, &out_len, &e) : GK_ERR_NOMEM;
        bool ok;
        if (cJSON_IsString(want_err)) {
            bool exact = cJSON_IsString(etype) && strstr(etype->valuestring, "raise_exception");
            ok = rs != GK_OK && (!exact || !strcmp(e.msg, want_err->valuestring));
            printf("%-60s %s  %s\n", what, rs == GK_OK ? "rendered, want an error" : ok ? "error as expected" : "other error",
                   ok ? "ok" : "FAIL");
        } else {
            size_t wl = gk_json_strlen(want);
            ok = rs == GK_OK && cJSON_IsString(want) && out_len == wl && !memcmp(out, want->valuestring, wl);
            if (ok) {
                printf("%-60s %zu bytes  ok\n", what, out_len);
            } else if (rs != GK_OK) {
                printf("%-60s error: %s  FAIL\n", what, e.msg);
            } else {
                size_t k = 0;
                while (k < wl && k < out_len && out[k] == want->valuestring[k])
                    k++;
                printf("%-60s differs at byte %zu (%zu bytes, want %zu)  FAIL\n", what, k, out_len, wl);
            }
        }
        *n_fail += !ok;
        free(out);
        cJSON_free(msgs);
        cJSON_free(extra_s);
    }
    gk_chat_set_clock(0);
    gk_chat_template_destroy(t);
    cJSON_free(tok_s);
    cJSON_Delete(tok);
    cJSON_Delete(j);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int gkrun_verify_chat_templates(const char *path)
{
    int n_cases = 0, n_fail = 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        char **names = NULL;
        size_t n = 0;
        for (struct dirent *e; d && (e = readdir(d));)
            if (has_suffix(e->d_name, ".json") && strcmp(e->d_name, "golden.json")) {
                char **nn = realloc(names, (n + 1) * sizeof *nn);
                if (!nn)
                    break;
                names = nn;
                names[n++] = strdup(e->d_name);
            }
        if (d)
            closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, names[i]);
            cJSON *j = names[i] ? read_json(p) : NULL;
            if (is_golden(j))
                verify_file(p, &n_cases, &n_fail);
            cJSON_Delete(j);
            free(names[i]);
        }
        free(names);
    } else {
        verify_file(path, &n_cases, &n_fail);
    }
    printf("chat templates: %d of %d cases ok%s\n", n_cases - n_fail, n_cases, n_fail ? "  FAIL" : "");
    return n_fail ? 1 : 0;
}
