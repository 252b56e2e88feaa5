/* gkrun_tokenize.c - gkrun's tokenizer commands: tokenize, detokenize, and the
 * check of a tokenizer folder against its golden.json (used by gkrun verify).
 *
 * What it is: thin command-line wrappers over gk_tokenizer_*; every failure
 * prints "gkrun: <status>: <msg>" and exits 1, usage errors exit 2.
 * What it is not: a tokenizer (text/tokenizer*.c) or a chat-template renderer.
 */
#include "gkrun_tokenize.h"
#include "gkrun_file.h"
#include "gkrun_args.h"

#include <gk/gk.h>

#include "gk_json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const gk_err *err)
{
    fprintf(stderr, "gkrun: %s: %s\n", gk_status_str(err->code), err->msg);
    return 1;
}

static int nomem(void)
{
    fprintf(stderr, "gkrun: %s: reading input\n", gk_status_str(GK_ERR_NOMEM));
    return 1;
}

/* All of f, NUL-terminated (it may hold more NULs: use *len). NULL with *why = 0
 * when out of memory, else with the errno of the failed read. */
/* All of stdin; NULL after printing why (exit status 1). */
static char *read_stdin(size_t *len)
{
    int why;
    char *buf = NULL;
    why = gkrun_read_stream(stdin, &buf, len);
    if (why == ENOMEM)
        nomem();
    else if (why)
        fprintf(stderr, "gkrun: %s: cannot read stdin: %s\n", gk_status_str(GK_ERR_IO), strerror(why));
    return why ? NULL : buf;
}

/* -m DIR / --tokenizer FILE; returns the number of argv entries consumed (0 if none). */
static int tokenizer_opt(int argc, char **argv, int i, const char **path)
{
    if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--tokenizer")) && i + 1 < argc) {
        *path = argv[i + 1];
        return 2;
    }
    return 0;
}

int gkrun_tokenize(int argc, char **argv)
{
    const char *path = NULL, *text = NULL;
    bool special = false;
    for (int i = 1; i < argc; i++) {
        int k = tokenizer_opt(argc, argv, i, &path);
        if (k) {
            i += k - 1;
        } else if (!strcmp(argv[i], "--special")) {
            special = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "gkrun tokenize: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!text) {
            text = argv[i];
        } else {
            fprintf(stderr, "gkrun tokenize: one TEXT only (quote it, or use - for stdin)\n");
            return 2;
        }
    }
    if (!path || !text) {
        fprintf(stderr, "usage: gkrun tokenize (-m DIR | --tokenizer FILE) [--special] (TEXT | -)\n");
        return 2;
    }
    char *in = NULL;
    size_t len = strlen(text);
    if (!strcmp(text, "-")) {
        if (!(in = read_stdin(&len)))
            return 1;
        text = in;
    }
    gk_err err = {0};
    gk_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    if (gk_tokenizer_load(path, &tok, &err) != GK_OK ||
        gk_tokenizer_encode(tok, text, len, special, &ids, &n, &err) != GK_OK) {
        rc = fail(&err);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    rc = 0;
out:
    free(ids);
    gk_tokenizer_destroy(tok);
    free(in);
    return rc;
}

static bool id_sep(char c)
{
    return c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r';
}

/* Append the ids in s[0..n) (separated by spaces, commas or newlines); false
 * after printing what is not an id in [0, 2^31 - 1]. */
static bool parse_ids(const char *s, size_t n, int32_t **ids, size_t *n_ids, size_t *cap)
{
    for (size_t i = 0; i < n;) {
        if (id_sep(s[i])) {
            i++;
            continue;
        }
        size_t w = 0;
        while (i + w < n && !id_sep(s[i + w]))
            w++;
        const char *nul = memchr(s + i, '\0', w);
        if (nul) {
            fprintf(stderr, "gkrun: token id: a NUL byte (at byte %zu of the input) is not a token id\n",
                    (size_t)(nul - s));
            return false;
        }
        char word[24]; /* room for any id; a longer word is refused as such */
        size_t k = w < sizeof word ? w : sizeof word - 1;
        memcpy(word, s + i, k);
        word[k] = '\0';
        int64_t v;
        if (w >= sizeof word) {
            fprintf(stderr, "gkrun: token id: '%s...' is not a token id (0 to %d)\n", word, INT32_MAX);
            return false;
        }
        if (!gkrun_arg_i64("token id", word, 0, INT32_MAX, &v))
            return false;
        if (*n_ids == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            int32_t *p = realloc(*ids, *cap * sizeof *p);
            if (!p) {
                nomem();
                return false;
            }
            *ids = p;
        }
        (*ids)[(*n_ids)++] = (int32_t)v;
        i += w;
    }
    return true;
}

int gkrun_detokenize(int argc, char **argv)
{
    const char *path = NULL;
    bool skip = false, any_id = false;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        int k = tokenizer_opt(argc, argv, i, &path);
        if (k) {
            i += k - 1;
        } else if (!strcmp(argv[i], "--skip-special")) {
            skip = true;
        } else if (argv[i][0] == '-' && (argv[i][1] < '0' || argv[i][1] > '9')) {
            fprintf(stderr, "gkrun detokenize: unknown option '%s'\n", argv[i]);
            goto out;
        } else {
            any_id = true;
            int64_t unused;
            if (!*argv[i]) { /* an empty argument is no id at all: say so */
                gkrun_arg_i64("token id", argv[i], 0, INT32_MAX, &unused);
                goto out;
            }
            if (!parse_ids(argv[i], strlen(argv[i]), &ids, &n, &cap))
                goto out;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: gkrun detokenize (-m DIR | --tokenizer FILE) [--skip-special] [ID...]\n"
                        "       (ids are read from stdin when none are given)\n");
        goto out;
    }
    if (!any_id) {
        size_t len;
        char *in = read_stdin(&len);
        if (!in) {
            rc = 1;
            goto out;
        }
        bool ok = parse_ids(in, len, &ids, &n, &cap);
        free(in);
        if (!ok)
            goto out;
    }
    gk_err err = {0};
    gk_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0;
    if (gk_tokenizer_load(path, &tok, &err) != GK_OK ||
        gk_tokenizer_decode(tok, ids, n, skip, &text, &len, &err) != GK_OK) {
        rc = fail(&err);
    } else {
        fwrite(text, 1, len, stdout);
        printf("\n");
        rc = 0;
    }
    free(text);
    gk_tokenizer_destroy(tok);
out:
    free(ids);
    return rc;
}

/* ------------------------------------------------------------------ verify */

/* n bytes of a text on one line: control characters (NUL included) as \xNN. */
static void put_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

/* Compare ids with a JSON array; prints the first difference. */
static bool same_ids(int idx, const char *what, const int32_t *got, size_t n, const cJSON *want)
{
    size_t wn = (size_t)cJSON_GetArraySize(want), i = 0;
    const cJSON *w = want->child;
    for (; i < n && w; i++, w = w->next) {
        if (!cJSON_IsNumber(w) || (double)got[i] != w->valuedouble) {
            printf("case %d: %s differ at position %zu: got %d, want %.0f (%zu vs %zu ids)\n", idx,
                   what, i, got[i], cJSON_IsNumber(w) ? w->valuedouble : -1.0, n, wn);
            return false;
        }
    }
    if (n != wn) {
        printf("case %d: %s: got %zu ids, want %zu\n", idx, what, n, wn);
        return false;
    }
    return true;
}

int gkrun_verify_tokenizer(const char *dir)
{
    size_t plen = strlen(dir) + 32;
    char *golden_path = malloc(plen);
    if (!golden_path)
        return nomem();
    snprintf(golden_path, plen, "%s/golden.json", dir);
    gk_err err = {0};
    gk_tokenizer *tok = NULL;
    cJSON *root = NULL;
    char *json = NULL;
    int rc = 1;
    size_t len = 0;
    const char *why = NULL;
    if (!(json = gkrun_read_regular(golden_path, &len, &why))) {
        fprintf(stderr, "gkrun: %s: %s: %s\n", gk_status_str(GK_ERR_IO), golden_path, why);
        goto out;
    }
    /* gk_json_parse keeps "\u0000" in texts: lengths come from gk_json_strlen */
    gk_json_error je;
    if (!(root = gk_json_parse(json, len, &je))) {
        fprintf(stderr, "gkrun: %s: %s: %s near byte %zu\n", gk_status_str(GK_ERR_FORMAT), golden_path,
                je.why, je.at);
        goto out;
    }
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    if (!cJSON_IsArray(cases)) {
        fprintf(stderr, "gkrun: %s: %s: no \"cases\" array\n", gk_status_str(GK_ERR_FORMAT), golden_path);
        goto out;
    }
    if (gk_tokenizer_load(dir, &tok, &err) != GK_OK) {
        rc = fail(&err);
        goto out;
    }
    int idx = 0, passed = 0, failed = 0;
    int ok_ids = 0, n_ids = 0, ok_sp = 0, n_sp = 0, ok_dec = 0, n_dec = 0;
    for (const cJSON *c = cases->child; c; c = c->next, idx++) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(c, "ids");
        const cJSON *ids_sp = cJSON_GetObjectItemCaseSensitive(c, "ids_with_special");
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(c, "decoded");
        const cJSON *dec_skip = cJSON_GetObjectItemCaseSensitive(c, "decoded_skip_special");
        if (!cJSON_IsString(text) || !cJSON_IsArray(ids)) {
            printf("case %d: no \"text\" string and \"ids\" array\n", idx);
            failed++;
            continue;
        }
        bool ok = true;
        int32_t *got = NULL;
        size_t n = 0;
        const char *s = text->valuestring;
        size_t slen = gk_json_strlen(text);
        if (gk_tokenizer_encode(tok, s, slen, false, &got, &n, &err) != GK_OK) {
            printf("case %d: encode failed: %s\n", idx, err.msg);
            ok = false;
        } else {
            n_ids++;
            bool same = same_ids(idx, "ids", got, n, ids);
            ok_ids += same;
            ok = ok && same;
        }
        for (int skip = 0; skip < 2 && got; skip++) {
            const cJSON *want = skip ? dec_skip : dec;
            if (!cJSON_IsString(want))
                continue;
            char *out = NULL;
            size_t olen = 0;
            n_dec++;
            if (gk_tokenizer_decode(tok, got, n, skip, &out, &olen, &err) != GK_OK) {
                printf("case %d: decode failed: %s\n", idx, err.msg);
                ok = false;
            } else if (olen != gk_json_strlen(want) || memcmp(out, want->valuestring, olen)) {
                printf("case %d: %s differs: got \"", idx, skip ? "decoded_skip_special" : "decoded");
                put_text(out, olen);
                printf("\", want \"");
                put_text(want->valuestring, gk_json_strlen(want));
                printf("\"\n");
                ok = false;
            } else {
                ok_dec++;
            }
            free(out);
        }
        free(got);
        got = NULL;
        if (cJSON_IsArray(ids_sp)) {
            n_sp++;
            if (gk_tokenizer_encode(tok, s, slen, true, &got, &n, &err) != GK_OK) {
                printf("case %d: encode with special tokens failed: %s\n", idx, err.msg);
                ok = false;
            } else {
                bool same = same_ids(idx, "ids_with_special", got, n, ids_sp);
                ok_sp += same;
                ok = ok && same;
            }
            free(got);
        }
        if (!ok) {
            printf("case %d: text \"", idx);
            put_text(s, slen < 60 ? slen : 60);
            printf("%s\"\n", slen > 60 ? "..." : "");
        }
        ok ? passed++ : failed++;
    }
    printf("tokenizer %s: %d cases; ids %d/%d, ids_with_special %d/%d, decodes %d/%d\n", dir, idx,
           ok_ids, n_ids, ok_sp, n_sp, ok_dec, n_dec);
    printf("summary: %d passed, %d failed: %s\n", passed, failed, failed || !idx ? "FAIL" : "PASS");
    rc = failed || !idx ? 1 : 0;
out:
    gk_tokenizer_destroy(tok);
    cJSON_Delete(root);
    free(json);
    free(golden_path);
    return rc;
}
