/* jinja_value.c - the values chat templates compute with, with Python's
 * semantics where templates rely on them: truthiness, equality, str() and
 * repr() of numbers, strings, lists and dicts (dicts keep insertion order),
 * and json.dumps(ensure_ascii=False) for tojson. Values live in the render's
 * arena. Not here: the operators and builtins that use them (jinja_eval.c).
 */
#include "jinja_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

jv jv_undef(void) { return (jv){.kind = JV_UNDEF}; }
jv jv_none(void) { return (jv){.kind = JV_NONE}; }
jv jv_bool(bool b) { return (jv){.kind = JV_BOOL, .u.b = b}; }
jv jv_int(int64_t i) { return (jv){.kind = JV_INT, .u.i = i}; }
jv jv_float(double f) { return (jv){.kind = JV_FLOAT, .u.f = f}; }
jv jv_str(const char *s, size_t len) { return (jv){.kind = JV_STR, .u.str = {s ? s : "", len}}; }

jv jv_list(jarena *a)
{
    jv v = {.kind = JV_LIST};
    v.u.list = ja_alloc(a, sizeof(jlist));
    if (!v.u.list)
        return jv_undef();
    return v;
}

jv jv_dict(jarena *a)
{
    jv v = {.kind = JV_DICT};
    v.u.dict = ja_alloc(a, sizeof(jdict));
    if (!v.u.dict)
        return jv_undef();
    return v;
}

bool jv_list_push(jarena *a, jv *list, jv v)
{
    jlist *l = list->u.list;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        jv *it = ja_alloc(a, cap * sizeof *it);
        if (!it)
            return false;
        if (l->n)
            memcpy(it, l->items, l->n * sizeof *it);
        l->items = it, l->cap = cap;
    }
    l->items[l->n++] = v;
    return true;
}

static bool key_eq(const jv *k, const char *s, size_t len)
{
    return k->kind == JV_STR && k->u.str.len == len && memcmp(k->u.str.s, s, len) == 0;
}

bool jv_dict_set(jarena *a, jv *dict, jv key, jv v)
{
    jdict *d = dict->u.dict;
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(&d->keys[i], &key)) {
            d->vals[i] = v;
            return true;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        jv *k = ja_alloc(a, cap * sizeof *k), *vv = ja_alloc(a, cap * sizeof *vv);
        if (!k || !vv)
            return false;
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(vv, d->vals, d->n * sizeof *vv);
        }
        d->keys = k, d->vals = vv, d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = v;
    return true;
}

jv jv_dict_get(const jv *dict, const char *key, size_t len)
{
    if (dict->kind != JV_DICT)
        return jv_undef();
    const jdict *d = dict->u.dict;
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(&d->keys[i], key, len))
            return d->vals[i];
    return jv_undef();
}

bool jv_truthy(const jv *v)
{
    switch (v->kind) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.str.len > 0;
    case JV_LIST: return v->u.list->n > 0;
    case JV_DICT: return v->u.dict->n > 0 || v->u.dict->is_ns;
    default: return true;
    }
}

static bool is_num(const jv *v) { return v->kind == JV_INT || v->kind == JV_FLOAT || v->kind == JV_BOOL; }

double jv_num(const jv *v)
{
    return v->kind == JV_FLOAT ? v->u.f : v->kind == JV_INT ? (double)v->u.i : v->kind == JV_BOOL ? v->u.b : 0.0;
}

bool jv_equal(const jv *a, const jv *b)
{
    if (is_num(a) && is_num(b)) {
        if (a->kind != JV_FLOAT && b->kind != JV_FLOAT)
            return (a->kind == JV_INT ? a->u.i : a->u.b) == (b->kind == JV_INT ? b->u.i : b->u.b);
        return jv_num(a) == jv_num(b);
    }
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case JV_LIST:
        if (a->u.list->n != b->u.list->n)
            return false;
        for (size_t i = 0; i < a->u.list->n; i++)
            if (!jv_equal(&a->u.list->items[i], &b->u.list->items[i]))
                return false;
        return true;
    case JV_DICT:
        if (a->u.dict->n != b->u.dict->n)
            return false;
        for (size_t i = 0; i < a->u.dict->n; i++) {
            const jv *k = &a->u.dict->keys[i];
            if (k->kind != JV_STR)
                return false;
            jv o = jv_dict_get(b, k->u.str.s, k->u.str.len);
            if (o.kind == JV_UNDEF || !jv_equal(&a->u.dict->vals[i], &o))
                return false;
        }
        return true;
    case JV_MACRO: return a->u.macro == b->u.macro;
    case JV_FUNC: return a->u.func.fn == b->u.func.fn && a->u.func.self == b->u.func.self;
    default: return false;
    }
}

jv jv_from_json(jarena *a, const cJSON *j)
{
    if (!j || cJSON_IsNull(j))
        return jv_none();
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* integers as written stay integers (cJSON keeps only a double) */
        if (d == floor(d) && fabs(d) < 9007199254740992.0 && j->valuestring == NULL) {
            return jv_int((int64_t)d);
        }
        return jv_float(d);
    }
    if (cJSON_IsString(j)) {
        size_t n = gk_json_strlen(j);
        char *s = ja_strndup(a, j->valuestring, n);
        return s ? jv_str(s, n) : jv_undef();
    }
    if (cJSON_IsArray(j)) {
        jv l = jv_list(a);
        if (l.kind == JV_UNDEF)
            return l;
        for (const cJSON *c = j->child; c; c = c->next)
            if (!jv_list_push(a, &l, jv_from_json(a, c)))
                return jv_undef();
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv d = jv_dict(a);
        if (d.kind == JV_UNDEF)
            return d;
        for (const cJSON *c = j->child; c; c = c->next) {
            char *k = ja_strndup(a, c->string, strlen(c->string));
            if (!k || !jv_dict_set(a, &d, jv_str(k, strlen(k)), jv_from_json(a, c)))
                return jv_undef();
        }
        return d;
    }
    return jv_undef();
}

/* ------------------------------------------------------------------ text */

bool jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > JB_LIMIT) {
            b->failed = b->too_big = true;
            return false;
        }
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return false;
        }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return true;
}

bool jb_puts(jbuf *b, const char *s) { return jb_put(b, s, strlen(s)); }

/* Python's repr of a float: the shortest digits that read back the same,
 * fixed notation for exponents -4 .. 15, else d.ddde+XX. */
void jv_float_repr(double f, char *out, size_t cap)
{
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0;
    const char *q = buf;
    bool neg = false;
    if (*q == '-')
        neg = true, q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char *o = out;
    size_t left = cap;
#define EMIT(...)                                          \
    do {                                                   \
        int w_ = snprintf(o, left, __VA_ARGS__);           \
        if (w_ < 0 || (size_t)w_ >= left)                  \
            return;                                        \
        o += w_, left -= (size_t)w_;                       \
    } while (0)
    if (neg)
        EMIT("-");
    if (exp < -4 || exp >= 16) {
        EMIT("%c", digits[0]);
        if (nd > 1)
            EMIT(".%s", digits + 1);
        EMIT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        EMIT("0.");
        for (int i = 0; i < -exp - 1; i++)
            EMIT("0");
        EMIT("%s", digits);
    } else {
        for (int i = 0; i <= exp; i++)
            EMIT("%c", i < nd ? digits[i] : '0');
        EMIT(".");
        if (nd > exp + 1)
            EMIT("%s", digits + exp + 1);
        else
            EMIT("0");
    }
#undef EMIT
}

static bool put_repr_str(jbuf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_put(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == '\\')
            jb_puts(b, "\\\\");
        else if (c == (unsigned char)q)
            jb_puts(b, q == '\'' ? "\\'" : "\\\"");
        else if (c == '\n')
            jb_puts(b, "\\n");
        else if (c == '\r')
            jb_puts(b, "\\r");
        else if (c == '\t')
            jb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            snprintf(e, sizeof e, "\\x%02x", c);
            jb_puts(b, e);
        } else
            jb_put(b, (const char *)&c, 1);
    }
    return jb_put(b, &q, 1);
}

bool jv_write(jbuf *b, const jv *v, bool repr)
{
    char num[64];
    switch (v->kind) {
    case JV_UNDEF: return true;
    case JV_NONE: return jb_puts(b, "None");
    case JV_BOOL: return jb_puts(b, v->u.b ? "True" : "False");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v->u.i); return jb_puts(b, num);
    case JV_FLOAT: jv_float_repr(v->u.f, num, sizeof num); return jb_puts(b, num);
    case JV_STR: return repr ? put_repr_str(b, v->u.str.s, v->u.str.len) : jb_put(b, v->u.str.s, v->u.str.len);
    case JV_LIST:
        jb_puts(b, "[");
        for (size_t i = 0; i < v->u.list->n; i++) {
            if (i)
                jb_puts(b, ", ");
            jv_write(b, &v->u.list->items[i], true);
        }
        return jb_puts(b, "]");
    case JV_DICT:
        if (v->u.dict->is_ns)
            return jb_puts(b, "<Namespace>");
        jb_puts(b, "{");
        for (size_t i = 0; i < v->u.dict->n; i++) {
            if (i)
                jb_puts(b, ", ");
            jv_write(b, &v->u.dict->keys[i], true);
            jb_puts(b, ": ");
            jv_write(b, &v->u.dict->vals[i], true);
        }
        return jb_puts(b, "}");
    case JV_FUNC:
    case JV_MACRO: return jb_puts(b, "<function>");
    }
    return false;
}

static bool put_json_str(jbuf *b, const char *s, size_t n)
{
    jb_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        switch (c) {
        case '"': jb_puts(b, "\\\""); break;
        case '\\': jb_puts(b, "\\\\"); break;
        case '\n': jb_puts(b, "\\n"); break;
        case '\r': jb_puts(b, "\\r"); break;
        case '\t': jb_puts(b, "\\t"); break;
        case '\b': jb_puts(b, "\\b"); break;
        case '\f': jb_puts(b, "\\f"); break;
        default:
            if (c < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", c);
                jb_puts(b, e);
            } else {
                jb_put(b, (const char *)&c, 1);
            }
        }
    }
    return jb_puts(b, "\"");
}

static void newline_indent(jbuf *b, int indent, int level)
{
    jb_puts(b, "\n");
    for (int i = 0; i < indent * level; i++)
        jb_puts(b, " ");
}

/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys). */
bool jv_tojson(jbuf *b, const jv *v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
               int level, const char **why)
{
    if (level > 100) {
        *why = "tojson: nesting too deep";
        return false;
    }
    char num[64];
    switch (v->kind) {
    case JV_NONE: return jb_puts(b, "null");
    case JV_BOOL: return jb_puts(b, v->u.b ? "true" : "false");
    case JV_INT: snprintf(num, sizeof num, "%lld", (long long)v->u.i); return jb_puts(b, num);
    case JV_FLOAT:
        if (isnan(v->u.f))
            return jb_puts(b, "NaN");
        if (isinf(v->u.f))
            return jb_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        jv_float_repr(v->u.f, num, sizeof num);
        return jb_puts(b, num);
    case JV_STR: return put_json_str(b, v->u.str.s, v->u.str.len);
    case JV_LIST: {
        const jlist *l = v->u.list;
        if (l->n == 0)
            return jb_puts(b, "[]");
        jb_puts(b, "[");
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                jb_puts(b, item_sep);
            if (indent >= 0)
                newline_indent(b, indent, level + 1);
            if (!jv_tojson(b, &l->items[i], indent, item_sep, key_sep, sort_keys, level + 1, why))
                return false;
        }
        if (indent >= 0)
            newline_indent(b, indent, level);
        return jb_puts(b, "]");
    }
    case JV_DICT: {
        const jdict *d = v->u.dict;
        if (d->is_ns) {
            *why = "Object of type Namespace is not JSON serializable";
            return false;
        }
        if (d->n == 0)
            return jb_puts(b, "{}");
        size_t order[d->n > 0 ? d->n : 1];
        for (size_t i = 0; i < d->n; i++)
            order[i] = i;
        if (sort_keys)
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0; j--) {
                    const jv *x = &d->keys[order[j - 1]], *y = &d->keys[order[j]];
                    if (x->kind != JV_STR || y->kind != JV_STR)
                        break;
                    size_t n = x->u.str.len < y->u.str.len ? x->u.str.len : y->u.str.len;
                    int c = memcmp(x->u.str.s, y->u.str.s, n);
                    if (c > 0 || (c == 0 && x->u.str.len > y->u.str.len)) {
                        size_t t = order[j];
                        order[j] = order[j - 1];
                        order[j - 1] = t;
                    } else
                        break;
                }
        jb_puts(b, "{");
        for (size_t k = 0; k < d->n; k++) {
            size_t i = order[k];
            if (k)
                jb_puts(b, item_sep);
            if (indent >= 0)
                newline_indent(b, indent, level + 1);
            const jv *key = &d->keys[i];
            if (key->kind == JV_STR)
                put_json_str(b, key->u.str.s, key->u.str.len);
            else {
                jbuf kb = {0};
                jv_write(&kb, key, false);
                put_json_str(b, kb.s ? kb.s : "", kb.len);
                free(kb.s);
            }
            jb_puts(b, key_sep);
            if (!jv_tojson(b, &d->vals[i], indent, item_sep, key_sep, sort_keys, level + 1, why))
                return false;
        }
        if (indent >= 0)
            newline_indent(b, indent, level);
        return jb_puts(b, "}");
    }
    case JV_UNDEF: *why = "Object of type Undefined is not JSON serializable"; return false;
    default: *why = "Object of type function is not JSON serializable"; return false;
    }
}
