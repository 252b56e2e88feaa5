/* jinja_eval.h - what jinja_value.c and jinja_eval.c share: the output
 * buffer, str()/repr()/json.dumps of values, numbers. Internal to text/. */
#ifndef GK_JINJA_EVAL_H
#define GK_JINJA_EVAL_H

#include "jinja.h"

#include "gk_json.h"

#define JB_LIMIT ((size_t)64 << 20) /* a rendering longer than this is refused */

typedef struct jbuf {
    char *s; /* malloc'd, NUL-terminated */
    size_t len, cap;
    bool failed, too_big;
} jbuf;

bool jb_put(jbuf *b, const char *s, size_t n);
bool jb_puts(jbuf *b, const char *s);

double jv_num(const jv *v);
/* Python str(v) (repr false) or repr(v) into b. */
bool jv_write(jbuf *b, const jv *v, bool repr);
void jv_float_repr(double f, char *out, size_t cap);
/* json.dumps; indent < 0 is None. *why is set on failure. */
bool jv_tojson(jbuf *b, const jv *v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
               int level, const char **why);

#endif
