/* jinja.h - the chat-template interpreter inside libgk: a lexer and parser
 * (jinja_parse.c) that turn a Jinja template into a tree of nodes, values with
 * Python's semantics (jinja_value.c) and an evaluator (jinja_eval.c) that
 * renders the tree the way transformers' chat-template environment does
 * (trim_blocks, lstrip_blocks, loop controls, tojson as json.dumps,
 * raise_exception, strftime_now).
 *
 * Not a general Jinja: no template inheritance, includes, imports, autoescape
 * or sandbox attributes; a construct outside what is parsed is an error naming
 * its line and column, never wrong text. Everything a render allocates lives
 * in one arena freed when the render ends.
 */
#ifndef GK_JINJA_H
#define GK_JINJA_H

#include <gk/gk.h>

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ arena */

typedef struct jarena_chunk jarena_chunk;
typedef struct jarena {
    jarena_chunk *head;
    size_t used_total;   /* bytes handed out, for the size guard */
    bool failed;         /* an allocation failed (or the guard tripped) */
} jarena;

void *ja_alloc(jarena *a, size_t n); /* zeroed; NULL (and a->failed) when out of memory */
char *ja_strndup(jarena *a, const char *s, size_t n);
void ja_free(jarena *a);

/* ------------------------------------------------------------------ values */

typedef enum jv_kind {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC, JV_MACRO
} jv_kind;

typedef struct jv jv;
typedef struct jlist { size_t n, cap; jv *items; } jlist;
typedef struct jdict { size_t n, cap; jv *keys, *vals; bool is_ns; } jdict;
typedef struct jnode jnode;
struct jrender;
/* a builtin called as fn (its name and, for a bound method, self ride in
 * fn->u.func): args[n_args], keyword names/values [n_kw] */
typedef bool (*jfunc_fn)(struct jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw,
                         const jv *kwv, int n_kw, jv *out);

struct jv {
    jv_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *s; size_t len; } str;
        jlist *list;
        jdict *dict;
        struct { jfunc_fn fn; const jv *self; const char *name; } func;
        const jnode *macro;
    } u;
};

jv jv_undef(void);
jv jv_none(void);
jv jv_bool(bool b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_str(const char *s, size_t len); /* s must outlive the value (arena or template) */
jv jv_list(jarena *a);
jv jv_dict(jarena *a);
bool jv_list_push(jarena *a, jv *list, jv v);
bool jv_dict_set(jarena *a, jv *dict, jv key, jv v);
/* the value at key (JV_UNDEF when absent) */
jv jv_dict_get(const jv *dict, const char *key, size_t len);
bool jv_truthy(const jv *v);
bool jv_equal(const jv *a, const jv *b);
/* From JSON (strings keep NUL bytes). */
jv jv_from_json(jarena *a, const cJSON *j);

/* -------------------------------------------------------------- the tree */

typedef enum jnode_kind {
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO, JN_BREAK, JN_CONTINUE, JN_BODY, JN_CALL_BLOCK,
    JN_WITH, JN_FILTER_BLOCK,
    /* expressions */
    JN_LIT, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_UNARY, JN_BINARY, JN_AND, JN_OR,
    JN_NOT, JN_COND, JN_LIST, JN_DICT, JN_TUPLE
} jnode_kind;

struct jnode {
    jnode_kind kind;
    int line, col;
    const char *name;      /* NAME, ATTR, FILTER, TEST, MACRO; BINARY/UNARY operator */
    size_t name_len;
    jv lit;                /* LIT */
    jnode *a, *b, *c;      /* operands; IF: cond, then, else; FOR: target, iter, body (+ d else, e filter) */
    jnode *d, *e;
    jnode **kids;          /* BODY statements, LIST/TUPLE/DICT items, CALL args, FOR targets */
    int n_kids;
    const char **kw;       /* CALL/FILTER/TEST keyword names (NULL entries for positional), MACRO params */
    jnode **kwv;           /* MACRO defaults (NULL when none) */
    int n_kw;
    bool negate;           /* TEST: "is not" */
};

typedef struct jtemplate {
    jarena arena;          /* the tree and its strings */
    jnode *root;
} jtemplate;

/* Parse len bytes of template text (copied: src may be freed after). On failure: NULL, with err set to
 * GK_ERR_UNSUPPORTED naming the line and column (syntax or unsupported). */
jtemplate *jinja_parse(const char *src, size_t len, gk_err *err);
void jinja_free(jtemplate *t);

/* ------------------------------------------------------------------ render */

/* Render with the variables of vars (a JV_DICT built in arena a). *out is
 * malloc'd. A raise_exception(msg) is GK_ERR_INVALID_ARG with exactly msg as
 * err->msg; other failures name their cause. */
gk_status jinja_render(const jtemplate *t, jarena *a, const jv *vars, char **out, size_t *len, gk_err *err);

/* The clock strftime_now reads: 0 = the real one (tests and golden checks fix
 * it). Process-wide. */
void jinja_set_clock(time_t t);

#endif
