/* json.c - cJSON parsing that keeps "\u0000" (see gk_json.h).
 *
 * How: before cJSON sees the text, every \u0000 escape inside a string is
 * replaced by the byte 0xFF, which never occurs in UTF-8; after parsing, each
 * string holding 0xFF gets its NULs back and its length recorded in the item
 * (valuedouble, flagged by valueint = -1; cJSON leaves both unused for strings).
 * A document that holds both \u0000 and a raw 0xFF byte is refused as not UTF-8.
 */
#include "gk_json.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUL_MARK '\xff'
#define LEN_FLAG (-1)

size_t gk_json_strlen(const cJSON *item)
{
    if (!item || !cJSON_IsString(item) || !item->valuestring)
        return 0;
    if (item->valueint == LEN_FLAG)
        return (size_t)item->valuedouble;
    return strlen(item->valuestring);
}

static bool is_hex0(const char *p, const char *end)
{
    return end - p >= 6 && p[0] == '\\' && p[1] == 'u' && p[2] == '0' && p[3] == '0' &&
           p[4] == '0' && p[5] == '0';
}

/* Restore NULs in every string of the tree; false when a key holds one. */
static bool restore(cJSON *it)
{
    for (; it; it = it->next) {
        if (it->string && strchr(it->string, NUL_MARK))
            return false;
        if (cJSON_IsString(it) && it->valuestring && strchr(it->valuestring, NUL_MARK)) {
            size_t n = strlen(it->valuestring);
            for (size_t i = 0; i < n; i++)
                if (it->valuestring[i] == NUL_MARK)
                    it->valuestring[i] = '\0';
            it->valueint = LEN_FLAG;
            it->valuedouble = (double)n;
        }
        if (it->child && !restore(it->child))
            return false;
    }
    return true;
}

static cJSON *parse_all(const char *text, size_t len, size_t *at, const char **why)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        *at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        *why = "invalid JSON";
        return NULL;
    }
    for (const char *p = end; p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            *at = (size_t)(p - text);
            *why = "data after the JSON value";
            return NULL;
        }
    }
    return root;
}

cJSON *gk_json_parse(const char *text, size_t len, gk_json_error *e)
{
    gk_json_error dummy;
    if (!e)
        e = &dummy;
    e->at = 0;
    e->why = NULL;
    if (!text) {
        e->why = "no text";
        return NULL;
    }
    /* Find \u0000 escapes inside strings (and any raw 0xFF byte). */
    size_t n_nul = 0, ff_at = SIZE_MAX;
    bool in_str = false;
    const char *end = text + len;
    for (const char *p = text; p < end; p++) {
        if (*p == NUL_MARK && ff_at == SIZE_MAX)
            ff_at = (size_t)(p - text);
        if (!in_str) {
            in_str = *p == '"';
        } else if (*p == '"') {
            in_str = false;
        } else if (*p == '\\') {
            if (is_hex0(p, end))
                n_nul++;
            if (p + 1 < end)
                p++;
        }
    }
    if (n_nul == 0)
        return parse_all(text, len, &e->at, &e->why);
    if (ff_at != SIZE_MAX) {
        e->at = ff_at;
        e->why = "byte 0xFF is not UTF-8";
        return NULL;
    }
    /* Rewrite; pos[k] is where the k-th mark lands, to map error offsets back. */
    char *buf = malloc(len);
    size_t *pos = malloc(n_nul * sizeof *pos);
    if (!buf || !pos) {
        free(buf);
        free(pos);
        e->why = "out of memory";
        return NULL;
    }
    size_t k = 0, m = 0;
    in_str = false;
    for (const char *p = text; p < end; p++) {
        if (in_str && *p == '\\' && is_hex0(p, end)) {
            pos[m++] = k;
            buf[k++] = NUL_MARK;
            p += 5;
            continue;
        }
        buf[k++] = *p;
        if (!in_str) {
            in_str = *p == '"';
        } else if (*p == '"') {
            in_str = false;
        } else if (*p == '\\' && p + 1 < end) {
            buf[k++] = *++p;
        }
    }
    cJSON *root = parse_all(buf, k, &e->at, &e->why);
    if (!root) {
        size_t shift = 0;
        for (size_t i = 0; i < m && pos[i] < e->at; i++)
            shift += 5;
        e->at += shift;
    } else if (!restore(root)) {
        cJSON_Delete(root);
        root = NULL;
        e->at = 0;
        e->why = "an object key holds a NUL character (\\u0000)";
    }
    free(buf);
    free(pos);
    return root;
}

void gk_json_describe(const cJSON *v, char *buf, size_t n)
{
    char *t = cJSON_PrintUnformatted(v);
    if (!t) {
        snprintf(buf, n, "?");
        return;
    }
    if (strlen(t) < n)
        snprintf(buf, n, "%s", t);
    else
        snprintf(buf, n, "%.*s...", (int)(n - 4), t);
    cJSON_free(t);
}

void gk_json_line_col(const char *text, size_t at, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < at && text[i]; i++) {
        if (text[i] == '\n')
            ++*line, *col = 1;
        else
            ++*col;
    }
}
