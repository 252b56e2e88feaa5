/* test_files.c - what libgk does when a file it reads is not a regular file,
 * and JSON text that holds NUL characters.
 *
 * Every JSON file gk reads (config.json, generation_config.json, tokenizer.json,
 * tokenizer_config.json, model.safetensors.index.json) goes through one reader
 * that refuses folders, FIFOs and devices by name and never blocks on a FIFO.
 * The JSON part checks core/json.c (compiled into this test) against cJSON and
 * hand-computed byte strings.
 */
#include <criterion/criterion.h>

#include "gk/gk.h"
#include "gk_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char tmpdir[256];

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gk-test-files-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static const char *in_tmp(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* The reader must return at once: a blocked open would hit this alarm and the
 * test child dies on SIGALRM, which Criterion reports as a crash. */
static void guard(void) { alarm(20); }

TestSuite(files, .init = make_tmp, .fini = rm_tmp);

/* ---------------------------------------------- not a regular file */

Test(files, config_json_fifo_is_refused_without_blocking)
{
    guard();
    cr_assert_eq(mkfifo(in_tmp("config.json"), 0600), 0);
    gk_config c;
    gk_err e = {0};
    cr_assert_eq(gk_config_load(in_tmp("config.json"), &c, &e), GK_ERR_IO);
    cr_assert(strstr(e.msg, "config.json") && strstr(e.msg, "not a regular file") && strstr(e.msg, "FIFO"), "%s", e.msg);
}

Test(files, config_json_folder_is_refused_by_name)
{
    cr_assert_eq(mkdir(in_tmp("config.json"), 0700), 0);
    gk_config c;
    gk_err e = {0};
    cr_assert_eq(gk_config_load(tmpdir, &c, &e), GK_ERR_IO);
    cr_assert(strstr(e.msg, "not a regular file (a folder)"), "%s", e.msg);
    cr_assert_null(strstr(e.msg, "memory"), "%s", e.msg);
}

Test(files, tokenizer_json_fifo_is_refused_without_blocking)
{
    guard();
    cr_assert_eq(mkfifo(in_tmp("tokenizer.json"), 0600), 0);
    gk_tokenizer *t = NULL;
    gk_err e = {0};
    cr_assert_neq(gk_tokenizer_load(tmpdir, &t, &e), GK_OK);
    cr_assert_null(t);
    cr_assert(strstr(e.msg, "tokenizer.json") && strstr(e.msg, "not a regular file"), "%s", e.msg);
}

Test(files, tokenizer_json_folder_is_refused_not_out_of_memory)
{
    cr_assert_eq(mkdir(in_tmp("tokenizer.json"), 0700), 0);
    gk_tokenizer *t = NULL;
    gk_err e = {0};
    gk_status st = gk_tokenizer_load(tmpdir, &t, &e);
    cr_assert_neq(st, GK_OK);
    cr_assert_neq(st, GK_ERR_NOMEM, "%s", e.msg);
    cr_assert(strstr(e.msg, "not a regular file"), "%s", e.msg);
}

Test(files, safetensors_index_fifo_is_refused_without_blocking)
{
    guard();
    cr_assert_eq(mkfifo(in_tmp("model.safetensors.index.json"), 0600), 0);
    gk_safetensors *st = NULL;
    gk_err e = {0};
    cr_assert_neq(gk_safetensors_open(in_tmp("model.safetensors.index.json"), &st, &e), GK_OK);
    cr_assert_null(st);
    cr_assert(strstr(e.msg, "not a regular file"), "%s", e.msg);
}

Test(files, char_device_is_refused)
{
    gk_config c;
    gk_err e = {0};
    cr_assert_eq(gk_config_load("/dev/zero", &c, &e), GK_ERR_IO);
    cr_assert(strstr(e.msg, "/dev/zero: not a regular file (a device)"), "%s", e.msg);
}

/* ------------------------------------------------------ JSON with NUL */

Test(json, nul_escape_keeps_the_whole_string)
{
    const char *t = "{\"a\":\"x\\u0000y\",\"b\":[\"\\u0000\",\"\\\\u0000\"],\"c\":\"plain\"}";
    gk_json_error e;
    cJSON *r = gk_json_parse(t, strlen(t), &e);
    cr_assert_not_null(r, "%s at %zu", e.why, e.at);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(r, "a");
    cr_assert_eq(gk_json_strlen(a), 3);
    cr_assert_eq(memcmp(a->valuestring, "x\0y", 3), 0);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "b");
    cr_assert_eq(gk_json_strlen(cJSON_GetArrayItem(b, 0)), 1);
    cr_assert_eq(cJSON_GetArrayItem(b, 0)->valuestring[0], '\0');
    /* An escaped backslash followed by "u0000" is text, not a NUL. */
    cr_assert_str_eq(cJSON_GetArrayItem(b, 1)->valuestring, "\\u0000");
    cr_assert_eq(gk_json_strlen(cJSON_GetArrayItem(b, 1)), 6);
    cr_assert_eq(gk_json_strlen(cJSON_GetObjectItemCaseSensitive(r, "c")), 5);
    cJSON_Delete(r);
}

Test(json, same_tree_as_cjson_without_nul)
{
    const char *t = "{\"k\": [1, 2.5, \"\\u00e9\\n\", {\"x\": null}], \"t\": true}";
    cJSON *want = cJSON_Parse(t);
    cJSON *got = gk_json_parse(t, strlen(t), NULL);
    cr_assert_not_null(got);
    cr_assert(cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
}

Test(json, nul_in_an_object_key_is_refused)
{
    const char *t = "{\"k\\u0000ey\": 1}";
    gk_json_error e;
    cr_assert_null(gk_json_parse(t, strlen(t), &e));
    cr_assert(strstr(e.why, "key") && strstr(e.why, "NUL"), "%s", e.why);
}

Test(json, raw_0xff_with_nul_escape_is_refused_as_not_utf8)
{
    const char *t = "[\"\\u0000\", \"\xff\"]";
    gk_json_error e;
    cr_assert_null(gk_json_parse(t, strlen(t), &e));
    cr_assert_eq(e.at, 12, "at %zu", e.at);
    cr_assert(strstr(e.why, "0xFF"), "%s", e.why);
}

Test(json, errors_give_the_offset_in_the_original_text)
{
    const char *t = "[\"\\u0000\\u0000\", ]";
    gk_json_error e;
    cr_assert_null(gk_json_parse(t, strlen(t), &e));
    /* cJSON stops at the ']' after the comma: byte 17 of the text given. */
    cr_assert_eq(e.at, 17, "at %zu", e.at);
    const char *u = "{} x";
    cr_assert_null(gk_json_parse(u, strlen(u), &e));
    cr_assert_eq(e.at, 3);
    cr_assert(strstr(e.why, "after"), "%s", e.why);
}
