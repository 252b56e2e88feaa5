/* gk_json.h - cJSON parsing that keeps NUL characters.
 *
 * cJSON stores strings NUL-terminated, so a "\u0000" escape silently cuts a
 * string short. gk_json_parse keeps such strings whole: gk_json_strlen gives
 * their full length in bytes (NUL characters included). An object key holding
 * a NUL character is refused, never cut. Compiled into libgk and into gkrun
 * (it is not part of the public API).
 */
#ifndef GK_JSON_H
#define GK_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct gk_json_error {
    size_t at;        /* byte offset of the error in the text given */
    const char *why;  /* static text: "invalid JSON", "trailing data", ... */
} gk_json_error;

/* Parse len bytes of text as one JSON value followed by whitespace only. The
 * result is freed with cJSON_Delete. NULL on failure, with *e filled (e may be
 * NULL); text may be NULL only when len is 0. */
cJSON *gk_json_parse(const char *text, size_t len, gk_json_error *e);

/* Length in bytes of a string item's value, NUL characters included; 0 for
 * NULL or an item that is not a string. */
size_t gk_json_strlen(const cJSON *item);

/* The value as JSON text for a message (buf, n bytes), cut with "..." when
 * longer; "?" when it cannot be printed. */
void gk_json_describe(const cJSON *v, char *buf, size_t n);

/* Line and column (from 1) of byte offset at in text, as an error names them. */
void gk_json_line_col(const char *text, size_t at, int *line, int *col);

#endif
