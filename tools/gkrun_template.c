/* gkrun_template.c - chat templates from the command line:
 *   gkrun chat-template -m DIR --messages FILE.json [--add-generation-prompt]
 *                       [--extra JSON] [--name NAME]
 * prints the model's rendering of the messages (gk_chat_render_json), and
 *   gkrun verify FILE.json | DIR
 * checks chat-template golden files (the format of tests/data/chat-templates)
 * case by case. Not here: the renderer itself (text/jinja*.c, chat.c).
 */
#include "gkrun_template.h"

#include "gk_json.h"
#include "gkrun_file.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int gkrun_template_cmd(int argc, char **argv)
{
    const char *dir = NULL, *messages = NULL, *extra = NULL, *name = NULL;
    bool agp = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            messages = argv[++i];
        else if (!strcmp(argv[i], "--extra") && i + 1 < argc)
            extra = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--add-generation-prompt"))
            agp = true;
        else {
            fprintf(stderr, "gkrun chat-template: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir || !messages) {
        fprintf(stderr, "usage: gkrun chat-template -m DIR --messages FILE.json [--add-generation-prompt] "
                        "[--extra JSON] [--name NAME]\n");
        return 2;
    }
    const char *why = NULL;
    size_t len;
    char *text = gkrun_read_regular(messages, &len, &why);
    if (!text) {
        fprintf(stderr, "gkrun: cannot read %s: %s\n", messages, why ? why : "error");
        return 1;
    }
    gk_chat_template *t = NULL;
    gk_err err = {0};
    char *out = NULL;
    size_t out_len = 0;
    int rc = 0;
    if (gk_chat_template_load(dir, name, &t, &err) != GK_OK ||
        gk_chat_render_json(t, text, agp, extra, &out, &out_len, &err) != GK_OK) {
        fprintf(stderr, "gkrun: %s: %s\n", gk_status_str(err.code), err.msg);
        rc = 1;
    } else {
        fwrite(out, 1, out_len, stdout);
    }
    free(out);
    free(text);
    gk_chat_template_destroy(t);
    return rc;
}

/* "2026-06-15T12:00:00" as seconds since the epoch, read as UTC; 0 if absent */
static int64_t clock_of(const cJSON *j)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "render");
    const cJSON *c = r ? cJSON_GetObjectItemCaseSensitive(r, "strftime_now_fixed") : NULL;
    struct tm tm = {0};
    if (!cJSON_IsString(c) || sscanf(c->valuestring, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

/* Check one golden file; counts into *cases / *failed. Non-zero when the
 * file itself cannot be read. */
static int verify_file(const char *path, int *cases, int *failed)
{
    const char *why = NULL;
    size_t len;
    char *text = gkrun_read_regular(path, &len, &why);
    if (!text) {
        fprintf(stderr, "gkrun: cannot read %s: %s\n", path, why ? why : "error");
        return 1;
    }
    gk_json_error je;
    cJSON *j = gk_json_parse(text, len, &je);
    const cJSON *ct = j ? cJSON_GetObjectItemCaseSensitive(j, "chat_template") : NULL;
    const cJSON *cs = j ? cJSON_GetObjectItemCaseSensitive(j, "cases") : NULL;
    if (!cJSON_IsString(ct) || !cJSON_IsArray(cs)) {
        fprintf(stderr, "gkrun: %s: not a chat-template golden file (chat_template and cases)\n", path);
        cJSON_Delete(j);
        free(text);
        return 1;
    }
    cJSON *special = cJSON_CreateObject();
    static const char *const names[] = {"bos_token", "eos_token"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(special, names[i], v->valuestring);
    }
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    for (const cJSON *v = sp ? sp->child : NULL; v; v = v->next)
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(special, v->string, v->valuestring);
    char *sps = cJSON_PrintUnformatted(special);
    gk_chat_set_clock(clock_of(j));
    gk_chat_template *t = NULL;
    gk_err perr = {0};
    gk_status pst = gk_chat_template_parse(ct->valuestring, gk_json_strlen(ct), sps, &t, &perr);
    for (const cJSON *c = cs->child; c; c = c->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "rendered");
        const cJSON *werr = cJSON_GetObjectItemCaseSensitive(c, "error");
        const cJSON *et = cJSON_GetObjectItemCaseSensitive(c, "error_type");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(c, "extra");
        char *msgs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "messages"));
        char *exs = cJSON_IsObject(ex) ? cJSON_PrintUnformatted(ex) : NULL;
        char *out = NULL;
        size_t out_len = 0;
        gk_err err = perr;
        gk_status st = pst == GK_OK ? gk_chat_render_json(t, msgs ? msgs : "[]",
                                                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                                                              c, "add_generation_prompt")),
                                                          exs, &out, &out_len, &err)
                                    : pst;
        bool ok;
        const char *note = "";
        if (cJSON_IsString(werr)) {
            ok = st != GK_OK && (!cJSON_IsString(et) || !strstr(et->valuestring, "raise_exception") ||
                                 !strcmp(err.msg, werr->valuestring));
            note = ok ? "(fails as expected)" : st == GK_OK ? "(rendered, an error was expected)" : err.msg;
        } else {
            size_t wl = gk_json_strlen(want);
            ok = st == GK_OK && out_len == wl && memcmp(out, want->valuestring, wl) == 0;
            note = ok ? "" : st != GK_OK ? err.msg : "(rendering differs)";
        }
        (*cases)++;
        *failed += !ok;
        printf("%-44s %-48s %s %s\n", path, cJSON_IsString(nm) ? nm->valuestring : "?", ok ? "PASS" : "FAIL", note);
        free(out);
        cJSON_free(msgs);
        cJSON_free(exs);
    }
    gk_chat_set_clock(0);
    gk_chat_template_destroy(t);
    cJSON_free(sps);
    cJSON_Delete(special);
    cJSON_Delete(j);
    free(text);
    return 0;
}

bool gkrun_is_chat_golden(const char *path)
{
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json"))
        return true;
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool any = false;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/golden.json", path);
    FILE *g = fopen(probe, "r");
    if (g) { /* a tokenizer folder */
        fclose(g);
        closedir(d);
        return false;
    }
    for (struct dirent *e; (e = readdir(d)) && !any;) {
        size_t k = strlen(e->d_name);
        any = k > 5 && !strcmp(e->d_name + k - 5, ".json") && strcmp(e->d_name, "config.json") &&
              strcmp(e->d_name, "tokenizer.json") && strcmp(e->d_name, "tokenizer_config.json") &&
              strcmp(e->d_name, "generation_config.json") && strstr(e->d_name, "index") == NULL;
    }
    closedir(d);
    return any;
}

int gkrun_verify_chat(const char *path)
{
    int cases = 0, failed = 0, bad = 0;
    DIR *d = opendir(path);
    if (!d) {
        bad = verify_file(path, &cases, &failed);
    } else {
        char **names = NULL;
        size_t n = 0;
        for (struct dirent *e; (e = readdir(d));) {
            size_t k = strlen(e->d_name);
            if (k > 5 && !strcmp(e->d_name + k - 5, ".json")) {
                char **nn = realloc(names, (n + 1) * sizeof *nn);
                if (!nn)
                    break;
                names = nn;
                names[n++] = strdup(e->d_name);
            }
        }
        closedir(d);
        for (size_t i = 1; i < n; i++) /* a stable order to read */
            for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
                char *t = names[j];
                names[j] = names[j - 1];
                names[j - 1] = t;
            }
        for (size_t i = 0; i < n; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, names[i]);
            bad |= verify_file(p, &cases, &failed);
            free(names[i]);
        }
        free(names);
    }
    printf("summary: %d of %d chat-template cases pass: %s\n", cases - failed, cases,
           failed || bad || cases == 0 ? "FAIL" : "PASS");
    return failed || bad || cases == 0 ? 1 : 0;
}
