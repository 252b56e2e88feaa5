/* jinja_eval.c - renders a parsed chat template (jinja.h): scopes (a for
 * loop and a macro get their own; if does not), loop.*, namespace, macros and
 * call blocks, Python's operators, the attribute/item fallback, undefined
 * values, and the filters, tests, string/dict/list methods and globals that
 * chat templates use. A runtime error stops the render with a message naming
 * the line and column; raise_exception(msg) stops it with msg alone.
 * Not here: parsing (jinja_parse.c), value printing (jinja_value.c).
 */
#include "jinja_eval.h"

#include "gk_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct frame {
    jv vars;               /* JV_DICT */
    struct frame *parent;
} frame;

typedef struct jrender {
    jarena *a;
    jbuf out;
    gk_err *err;
    bool failed;
    frame *top, *root;
    int depth;
    int ctrl;              /* 1 break, 2 continue */
    int64_t steps;
    const jnode *caller_body; /* the body of the call block being called into */
    frame *caller_frame;
} jrender;

enum { CTRL_NONE = 0, CTRL_BREAK, CTRL_CONTINUE };
#define MAX_STEPS 20000000
#define MAX_DEPTH 200

static time_t g_clock;

void jinja_set_clock(time_t t) { g_clock = t; }

static bool rfail(jrender *r, const jnode *n, const char *fmt, ...)
{
    if (r->failed)
        return false;
    char m[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (n)
        gk_err_set(r->err, GK_ERR_INVALID_ARG, "chat template: line %d, column %d: %s", n->line, n->col, m);
    else
        gk_err_set(r->err, GK_ERR_INVALID_ARG, "chat template: %s", m);
    r->failed = true;
    return false;
}

/* A construct the interpreter does not implement (met while rendering). */
static bool unsupported(jrender *r, const jnode *n, const char *what, const char *name)
{
    if (r->failed)
        return false;
    gk_err_set(r->err, GK_ERR_UNSUPPORTED, "chat template: line %d, column %d: unsupported %s '%s'", n ? n->line : 0,
               n ? n->col : 0, what, name);
    r->failed = true;
    return false;
}

static bool oom(jrender *r)
{
    if (!r->failed)
        gk_err_set(r->err, GK_ERR_NOMEM, "chat template: out of memory while rendering");
    r->failed = true;
    return false;
}

static const char *kind_name(const jv *v)
{
    static const char *const n[] = {"Undefined", "NoneType", "bool", "int", "float", "str", "list", "dict",
                                    "function", "macro"};
    return n[v->kind];
}

static jv mkstr(jrender *r, const char *s, size_t n)
{
    char *p = ja_strndup(r->a, s, n);
    if (!p) {
        oom(r);
        return jv_undef();
    }
    return jv_str(p, n);
}

/* str(v) as a new string value */
static jv to_str(jrender *r, const jv *v)
{
    if (v->kind == JV_STR)
        return *v;
    jbuf b = {0};
    jv_write(&b, v, false);
    if (b.failed) {
        free(b.s);
        oom(r);
        return jv_undef();
    }
    jv s = mkstr(r, b.s ? b.s : "", b.len);
    free(b.s);
    return s;
}

/* ------------------------------------------------------------------ scopes */

static bool scope_push(jrender *r, frame *parent)
{
    frame *f = ja_alloc(r->a, sizeof *f);
    if (!f)
        return oom(r);
    f->vars = jv_dict(r->a);
    if (f->vars.kind == JV_UNDEF)
        return oom(r);
    f->parent = parent;
    r->top = f;
    return true;
}

static bool lookup(jrender *r, const char *name, size_t len, jv *out)
{
    for (frame *f = r->top; f; f = f->parent) {
        const jdict *d = f->vars.u.dict;
        for (size_t i = 0; i < d->n; i++)
            if (d->keys[i].u.str.len == len && memcmp(d->keys[i].u.str.s, name, len) == 0) {
                *out = d->vals[i];
                return true;
            }
    }
    return false;
}

static bool assign(jrender *r, const char *name, size_t len, jv v)
{
    return jv_dict_set(r->a, &r->top->vars, jv_str(name, len), v) || oom(r);
}

/* ------------------------------------------------------------------ strings */

static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* byte offset of code point k (k may be the count: the end) */
static size_t utf8_offset(const char *s, size_t n, size_t k)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (c == k)
                return i;
            c++;
        }
    return n;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static bool in_set(char c, const jv *chars)
{
    if (!chars || chars->kind != JV_STR)
        return is_ws(c);
    return memchr(chars->u.str.s, c, chars->u.str.len) != NULL;
}

static jv strip(jrender *r, const jv *s, const jv *chars, bool left, bool right)
{
    size_t a = 0, b = s->u.str.len;
    const char *p = s->u.str.s;
    if (left)
        while (a < b && in_set(p[a], chars))
            a++;
    if (right)
        while (b > a && in_set(p[b - 1], chars))
            b--;
    (void)r;
    return jv_str(p + a, b - a);
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0)
        return h;
    for (size_t i = 0; i + nn <= hn; i++)
        if (memcmp(h + i, n, nn) == 0)
            return h + i;
    return NULL;
}

static jv replace(jrender *r, const jv *s, const jv *from, const jv *to, int64_t count)
{
    jbuf b = {0};
    const char *p = s->u.str.s, *end = p + s->u.str.len;
    size_t fn = from->u.str.len;
    int64_t done = 0;
    if (fn == 0) { /* Python inserts between characters */
        jb_put(&b, to->u.str.s, to->u.str.len);
        while (p < end && (count < 0 || done < count)) {
            size_t k = 1;
            while (p + k < end && ((unsigned char)p[k] & 0xC0) == 0x80)
                k++;
            jb_put(&b, p, k);
            p += k;
            done++;
            if (count < 0 || done < count)
                jb_put(&b, to->u.str.s, to->u.str.len);
        }
        jb_put(&b, p, (size_t)(end - p));
    } else {
        while (p < end) {
            const char *q = (count < 0 || done < count) ? find_bytes(p, (size_t)(end - p), from->u.str.s, fn) : NULL;
            if (!q) {
                jb_put(&b, p, (size_t)(end - p));
                break;
            }
            jb_put(&b, p, (size_t)(q - p));
            jb_put(&b, to->u.str.s, to->u.str.len);
            p = q + fn;
            done++;
        }
    }
    if (b.failed) {
        free(b.s);
        oom(r);
        return jv_undef();
    }
    jv v = mkstr(r, b.s ? b.s : "", b.len);
    free(b.s);
    return v;
}

static jv split(jrender *r, const jv *s, const jv *sep, int64_t maxsplit)
{
    jv l = jv_list(r->a);
    if (l.kind == JV_UNDEF)
        return oom(r), l;
    const char *p = s->u.str.s, *end = p + s->u.str.len;
    int64_t n = 0;
    if (!sep || sep->kind == JV_NONE || sep->kind == JV_UNDEF) {
        while (p < end) {
            while (p < end && is_ws(*p))
                p++;
            if (p >= end)
                break;
            const char *q = p;
            if (maxsplit >= 0 && n >= maxsplit) {
                const char *e = end;
                while (e > q && is_ws(e[-1]))
                    e--;
                jv_list_push(r->a, &l, jv_str(q, (size_t)(e - q)));
                break;
            }
            while (q < end && !is_ws(*q))
                q++;
            jv_list_push(r->a, &l, jv_str(p, (size_t)(q - p)));
            n++;
            p = q;
        }
        return l;
    }
    if (sep->kind != JV_STR || sep->u.str.len == 0) {
        rfail(r, NULL, "split: empty separator");
        return jv_undef();
    }
    for (;;) {
        const char *q = (maxsplit < 0 || n < maxsplit)
                            ? find_bytes(p, (size_t)(end - p), sep->u.str.s, sep->u.str.len)
                            : NULL;
        if (!q) {
            jv_list_push(r->a, &l, jv_str(p, (size_t)(end - p)));
            break;
        }
        jv_list_push(r->a, &l, jv_str(p, (size_t)(q - p)));
        n++;
        p = q + sep->u.str.len;
    }
    return l;
}

static jv change_case(jrender *r, const jv *s, int how) /* 0 lower 1 upper 2 title 3 capitalize */
{
    char *o = ja_strndup(r->a, s->u.str.s, s->u.str.len);
    if (!o)
        return oom(r), jv_undef();
    bool word_start = true;
    for (size_t i = 0; i < s->u.str.len; i++) {
        unsigned char c = (unsigned char)o[i];
        if (how == 0)
            o[i] = (char)tolower(c);
        else if (how == 1)
            o[i] = (char)toupper(c);
        else if (how == 2) {
            if (isalpha(c))
                o[i] = (char)(word_start ? toupper(c) : tolower(c));
            word_start = !isalpha(c) && c < 0x80;
        } else {
            o[i] = (char)(i == 0 ? toupper(c) : tolower(c));
        }
    }
    return jv_str(o, s->u.str.len);
}

/* ------------------------------------------------------------------ evaluation */

static jv eval(jrender *r, const jnode *n);
static bool exec(jrender *r, const jnode *n);
static bool call_value(jrender *r, const jnode *at, const jv *f, const jv *args, int n_args, const char *const *kw,
                       const jv *kwv, int n_kw, jv *out);

static bool iterate(jrender *r, const jnode *at, const jv *v, jv *list)
{
    switch (v->kind) {
    case JV_LIST: *list = *v; return true;
    case JV_UNDEF: *list = jv_list(r->a); return list->kind == JV_LIST || oom(r);
    case JV_DICT: {
        *list = jv_list(r->a);
        if (list->kind == JV_UNDEF)
            return oom(r);
        for (size_t i = 0; i < v->u.dict->n; i++)
            if (!jv_list_push(r->a, list, v->u.dict->keys[i]))
                return oom(r);
        return true;
    }
    case JV_STR: {
        *list = jv_list(r->a);
        if (list->kind == JV_UNDEF)
            return oom(r);
        const char *p = v->u.str.s;
        size_t n = v->u.str.len;
        for (size_t i = 0; i < n;) {
            size_t k = 1;
            while (i + k < n && ((unsigned char)p[i + k] & 0xC0) == 0x80)
                k++;
            if (!jv_list_push(r->a, list, jv_str(p + i, k)))
                return oom(r);
            i += k;
        }
        return true;
    }
    default: return rfail(r, at, "'%s' object is not iterable", kind_name(v));
    }
}

/* Python's index rules for a[lo:hi:step] over n items. */
static bool slice_bounds(jrender *r, const jnode *at, const jv *lo, const jv *hi, const jv *st, int64_t n,
                         int64_t *start, int64_t *stop, int64_t *step)
{
    *step = st && st->kind == JV_INT ? st->u.i : 1;
    if (*step == 0)
        return rfail(r, at, "slice step cannot be zero");
    int64_t def_start = *step > 0 ? 0 : n - 1, def_stop = *step > 0 ? n : -1;
    int64_t s = lo && lo->kind == JV_INT ? lo->u.i : def_start;
    int64_t e = hi && hi->kind == JV_INT ? hi->u.i : def_stop;
    if (lo && lo->kind == JV_INT && s < 0)
        s += n;
    if (hi && hi->kind == JV_INT && e < 0)
        e += n;
    if (*step > 0) {
        s = s < 0 ? 0 : s > n ? n : s;
        e = e < 0 ? 0 : e > n ? n : e;
    } else {
        s = s < -1 ? -1 : s > n - 1 ? n - 1 : s;
        e = e < -1 ? -1 : e > n - 1 ? n - 1 : e;
    }
    *start = s, *stop = e;
    return true;
}

static jv do_slice(jrender *r, const jnode *at, const jv *v, const jv *lo, const jv *hi, const jv *st)
{
    int64_t s, e, step;
    if (v->kind == JV_LIST) {
        if (!slice_bounds(r, at, lo, hi, st, (int64_t)v->u.list->n, &s, &e, &step))
            return jv_undef();
        jv l = jv_list(r->a);
        if (l.kind == JV_UNDEF)
            return oom(r), l;
        for (int64_t i = s; step > 0 ? i < e : i > e; i += step)
            if (!jv_list_push(r->a, &l, v->u.list->items[i]))
                return oom(r), jv_undef();
        return l;
    }
    if (v->kind == JV_STR) {
        const char *p = v->u.str.s;
        size_t nb = v->u.str.len;
        int64_t n = (int64_t)utf8_count(p, nb);
        if (!slice_bounds(r, at, lo, hi, st, n, &s, &e, &step))
            return jv_undef();
        if (step == 1) {
            size_t a = utf8_offset(p, nb, (size_t)s), b = e > s ? utf8_offset(p, nb, (size_t)e) : a;
            return jv_str(p + a, b - a);
        }
        jbuf b = {0};
        for (int64_t i = s; step > 0 ? i < e : i > e; i += step) {
            size_t a = utf8_offset(p, nb, (size_t)i), z = utf8_offset(p, nb, (size_t)i + 1);
            jb_put(&b, p + a, z - a);
        }
        jv out = mkstr(r, b.s ? b.s : "", b.len);
        free(b.s);
        return out;
    }
    rfail(r, at, "'%s' object is not subscriptable", kind_name(v));
    return jv_undef();
}

static jv getitem(jrender *r, const jnode *at, const jv *v, const jv *k)
{
    if (v->kind == JV_DICT) {
        if (k->kind == JV_STR)
            return jv_dict_get(v, k->u.str.s, k->u.str.len);
        for (size_t i = 0; i < v->u.dict->n; i++)
            if (jv_equal(&v->u.dict->keys[i], k))
                return v->u.dict->vals[i];
        return jv_undef();
    }
    if ((v->kind == JV_LIST || v->kind == JV_STR) && (k->kind == JV_INT || k->kind == JV_BOOL)) {
        int64_t i = k->kind == JV_INT ? k->u.i : k->u.b;
        if (v->kind == JV_LIST) {
            int64_t n = (int64_t)v->u.list->n;
            if (i < 0)
                i += n;
            return i >= 0 && i < n ? v->u.list->items[i] : jv_undef();
        }
        int64_t n = (int64_t)utf8_count(v->u.str.s, v->u.str.len);
        if (i < 0)
            i += n;
        if (i < 0 || i >= n)
            return jv_undef();
        size_t a = utf8_offset(v->u.str.s, v->u.str.len, (size_t)i),
               b = utf8_offset(v->u.str.s, v->u.str.len, (size_t)i + 1);
        return jv_str(v->u.str.s + a, b - a);
    }
    if (v->kind == JV_UNDEF) {
        rfail(r, at, "'%s' is undefined", "value");
        return jv_undef();
    }
    return jv_undef(); /* Jinja gives undefined where Python raises */
}

/* ---- methods of str, dict and list (bound through jv.u.func.self) */

#define ARG(i) (n_args > (i) ? &args[i] : NULL)
#define ARG_OR(i, other) (n_args > (i) ? &args[i] : (other))

static const jv *kwarg(const char *const *kw, const jv *kwv, int n_kw, const char *name)
{
    for (int i = 0; i < n_kw; i++)
        if (kw[i] && strcmp(kw[i], name) == 0)
            return &kwv[i];
    return NULL;
}

static bool m_str(jrender *r, const jv *self, const char *name, const jv *args, int n_args, const char *const *kw,
                  const jv *kwv, int n_kw, jv *out)
{
    const jv *s = self;
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        const jv *c = ARG(0);
        if (c && c->kind != JV_STR && c->kind != JV_NONE)
            return rfail(r, NULL, "%s arg must be None or str", name);
        *out = strip(r, s, c, name[0] != 'r', name[0] != 'l');
        return true;
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        const jv *sep = ARG_OR(0, kwarg(kw, kwv, n_kw, "sep"));
        const jv *mx = ARG_OR(1, kwarg(kw, kwv, n_kw, "maxsplit"));
        if (name[0] == 'r' && mx && mx->kind == JV_INT && mx->u.i >= 0)
            return rfail(r, NULL, "rsplit with maxsplit is not supported");
        *out = split(r, s, sep, mx && mx->kind == JV_INT ? mx->u.i : -1);
        return !r->failed;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        const jv *x = ARG(0);
        if (!x)
            return rfail(r, NULL, "%s needs an argument", name);
        jv one = *x, lst = jv_undef();
        const jv *cand = &one;
        size_t nc = 1;
        if (x->kind == JV_LIST)
            lst = *x, cand = lst.u.list->items, nc = lst.u.list->n;
        bool hit = false;
        for (size_t i = 0; i < nc && !hit; i++) {
            if (cand[i].kind != JV_STR)
                return rfail(r, NULL, "%s first arg must be str", name);
            size_t pn = cand[i].u.str.len;
            if (pn <= s->u.str.len)
                hit = name[0] == 's' ? memcmp(s->u.str.s, cand[i].u.str.s, pn) == 0
                                     : memcmp(s->u.str.s + s->u.str.len - pn, cand[i].u.str.s, pn) == 0;
        }
        *out = jv_bool(hit);
        return true;
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize")) {
        *out = change_case(r, s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 't' ? 2 : 3);
        return !r->failed;
    }
    if (!strcmp(name, "replace")) {
        if (n_args < 2 || args[0].kind != JV_STR || args[1].kind != JV_STR)
            return rfail(r, NULL, "replace needs two strings");
        *out = replace(r, s, &args[0], &args[1], n_args > 2 && args[2].kind == JV_INT ? args[2].u.i : -1);
        return !r->failed;
    }
    if (!strcmp(name, "find") || !strcmp(name, "count") || !strcmp(name, "index")) {
        if (n_args < 1 || args[0].kind != JV_STR)
            return rfail(r, NULL, "%s needs a string", name);
        const char *h = s->u.str.s;
        size_t hn = s->u.str.len, nn = args[0].u.str.len;
        if (name[0] == 'c') {
            int64_t c = 0;
            if (nn == 0)
                c = (int64_t)utf8_count(h, hn) + 1;
            else
                for (const char *q = h; (q = find_bytes(q, hn - (size_t)(q - h), args[0].u.str.s, nn)); q += nn)
                    c++;
            *out = jv_int(c);
            return true;
        }
        const char *q = find_bytes(h, hn, args[0].u.str.s, nn);
        if (!q && name[0] == 'i')
            return rfail(r, NULL, "substring not found");
        *out = jv_int(q ? (int64_t)utf8_count(h, (size_t)(q - h)) : -1);
        return true;
    }
    if (!strcmp(name, "join")) {
        jv l;
        if (n_args < 1 || !iterate(r, NULL, &args[0], &l))
            return rfail(r, NULL, "join needs an iterable");
        jbuf b = {0};
        for (size_t i = 0; i < l.u.list->n; i++) {
            if (i)
                jb_put(&b, s->u.str.s, s->u.str.len);
            if (l.u.list->items[i].kind != JV_STR) {
                free(b.s);
                return rfail(r, NULL, "sequence item %zu: expected str instance, %s found", i,
                             kind_name(&l.u.list->items[i]));
            }
            jb_put(&b, l.u.list->items[i].u.str.s, l.u.list->items[i].u.str.len);
        }
        *out = mkstr(r, b.s ? b.s : "", b.len);
        free(b.s);
        return !r->failed;
    }
    if (!strcmp(name, "splitlines")) {
        jv l = jv_list(r->a);
        const char *p = s->u.str.s, *end = p + s->u.str.len;
        while (p < end) {
            const char *q = p;
            while (q < end && *q != '\n' && *q != '\r')
                q++;
            jv_list_push(r->a, &l, jv_str(p, (size_t)(q - p)));
            if (q < end && *q == '\r' && q + 1 < end && q[1] == '\n')
                q++;
            p = q < end ? q + 1 : q;
        }
        *out = l;
        return true;
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isspace") || !strcmp(name, "isalpha")) {
        bool ok = s->u.str.len > 0;
        for (size_t i = 0; i < s->u.str.len && ok; i++) {
            unsigned char c = (unsigned char)s->u.str.s[i];
            ok = name[2] == 'd' ? isdigit(c) != 0 : name[2] == 's' ? is_ws((char)c) : isalpha(c) != 0;
        }
        *out = jv_bool(ok);
        return true;
    }
    return rfail(r, NULL, "str has no method '%s'", name);
}

static bool m_dict(jrender *r, const jv *self, const char *name, const jv *args, int n_args, jv *out)
{
    const jdict *d = self->u.dict;
    if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
        jv l = jv_list(r->a);
        if (l.kind == JV_UNDEF)
            return oom(r);
        for (size_t i = 0; i < d->n; i++) {
            jv x;
            if (name[0] == 'i') {
                x = jv_list(r->a);
                if (x.kind == JV_UNDEF || !jv_list_push(r->a, &x, d->keys[i]) || !jv_list_push(r->a, &x, d->vals[i]))
                    return oom(r);
            } else {
                x = name[0] == 'k' ? d->keys[i] : d->vals[i];
            }
            if (!jv_list_push(r->a, &l, x))
                return oom(r);
        }
        *out = l;
        return true;
    }
    if (!strcmp(name, "get")) {
        if (n_args < 1)
            return rfail(r, NULL, "get needs a key");
        jv v = getitem(r, NULL, self, &args[0]);
        *out = v.kind == JV_UNDEF ? (n_args > 1 ? args[1] : jv_none()) : v;
        return true;
    }
    return rfail(r, NULL, "dict has no method '%s'", name);
}

static bool m_list(jrender *r, const jv *self, const char *name, const jv *args, int n_args, jv *out)
{
    if (!strcmp(name, "append")) {
        if (n_args != 1)
            return rfail(r, NULL, "append takes one argument");
        jv l = *self;
        if (!jv_list_push(r->a, &l, args[0]))
            return oom(r);
        *out = jv_none();
        return true;
    }
    if (!strcmp(name, "index") || !strcmp(name, "count")) {
        if (n_args < 1)
            return rfail(r, NULL, "%s needs an argument", name);
        int64_t c = 0;
        for (size_t i = 0; i < self->u.list->n; i++)
            if (jv_equal(&self->u.list->items[i], &args[0])) {
                if (name[0] == 'i') {
                    *out = jv_int((int64_t)i);
                    return true;
                }
                c++;
            }
        if (name[0] == 'i')
            return rfail(r, NULL, "value is not in list");
        *out = jv_int(c);
        return true;
    }
    return rfail(r, NULL, "list has no method '%s'", name);
}

static bool call_method(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw,
                        const jv *kwv, int n_kw, jv *out);

static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                          "upper", "lower", "title", "capitalize", "replace", "find", "count",
                                          "index", "join", "splitlines", "isdigit", "isspace", "isalpha", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", NULL};
static const char *const LIST_METHODS[] = {"append", "index", "count", NULL};

static bool in_names(const char *const *names, const char *s, size_t n)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
            return true;
    return false;
}

/* obj.name */
static jv getattr(jrender *r, const jnode *at, const jv *v, const char *name, size_t len)
{
    const char *const *methods = v->kind == JV_STR                            ? STR_METHODS
                                 : v->kind == JV_DICT && !v->u.dict->is_ns ? DICT_METHODS
                                 : v->kind == JV_LIST                         ? LIST_METHODS
                                                                              : NULL;
    if (methods && in_names(methods, name, len)) {
        jv *self = ja_alloc(r->a, sizeof *self);
        char *nm = ja_strndup(r->a, name, len);
        if (!self || !nm)
            return oom(r), jv_undef();
        *self = *v;
        jv f = {.kind = JV_FUNC};
        f.u.func.fn = call_method;
        f.u.func.self = self;
        f.u.func.name = nm;
        return f;
    }
    if (v->kind == JV_DICT)
        return jv_dict_get(v, name, len);
    if (v->kind == JV_UNDEF) {
        rfail(r, at, "'%.*s' of an undefined value", (int)len, name);
        return jv_undef();
    }
    return jv_undef();
}

static bool call_method(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw,
                        const jv *kwv, int n_kw, jv *out)
{
    const jv *self = fn->u.func.self;
    const char *name = fn->u.func.name;
    if (self->kind == JV_STR)
        return m_str(r, self, name, args, n_args, kw, kwv, n_kw, out);
    if (self->kind == JV_DICT)
        return m_dict(r, self, name, args, n_args, out);
    return m_list(r, self, name, args, n_args, out);
}

/* Python's printf-style formatting: fmt % args (%s %r %d %i %f %x %%, with
 * flags, width and precision). */
static jv percent_format(jrender *r, const jnode *at, const jv *fmt, const jv *args, int n_args)
{
    jbuf b = {0};
    const char *p = fmt->u.str.s, *end = p + fmt->u.str.len;
    int k = 0;
    while (p < end) {
        if (*p != '%') {
            jb_put(&b, p++, 1);
            continue;
        }
        if (p + 1 < end && p[1] == '%') {
            jb_put(&b, "%", 1);
            p += 2;
            continue;
        }
        const char *q = p + 1;
        while (q < end && strchr("-+ #0", *q))
            q++;
        while (q < end && (isdigit((unsigned char)*q) || *q == '.'))
            q++;
        if (q >= end || !strchr("srdifFxXeEgG", *q) || q - p > 20) {
            free(b.s);
            rfail(r, at, "unsupported format specification");
            return jv_undef();
        }
        if (k >= n_args) {
            free(b.s);
            rfail(r, at, "not enough arguments for format string");
            return jv_undef();
        }
        char spec[32];
        const jv *a = &args[k++];
        char conv = *q;
        int sl = (int)(q - p);
        char out[512];
        if (conv == 's' || conv == 'r') {
            jbuf t = {0};
            jv_write(&t, a, conv == 'r');
            snprintf(spec, sizeof spec, "%.*ss", sl, p);
            snprintf(out, sizeof out, spec, t.s ? t.s : "");
            free(t.s);
        } else if (conv == 'd' || conv == 'i' || conv == 'x' || conv == 'X') {
            snprintf(spec, sizeof spec, "%.*sll%c", sl, p, conv == 'i' ? 'd' : conv);
            snprintf(out, sizeof out, spec, (long long)(a->kind == JV_INT ? a->u.i : (int64_t)jv_num(a)));
        } else {
            snprintf(spec, sizeof spec, "%.*s%c", sl, p, conv);
            snprintf(out, sizeof out, spec, jv_num(a));
        }
        jb_puts(&b, out);
        p = q + 1;
    }
    if (k < n_args) {
        free(b.s);
        rfail(r, at, "not all arguments converted during string formatting");
        return jv_undef();
    }
    jv v = mkstr(r, b.s ? b.s : "", b.len);
    free(b.s);
    return v;
}

/* ------------------------------------------------------------------ filters */

static bool test_value(jrender *r, const jnode *at, const char *name, const jv *v, const jv *args, int n_args,
                       bool *res);

static jv attr_path(jrender *r, const jv *v, const jv *attr)
{
    if (attr->kind != JV_STR)
        return getitem(r, NULL, v, attr);
    /* "a.b" walks, as Jinja's make_attrgetter */
    jv cur = *v;
    const char *p = attr->u.str.s, *end = p + attr->u.str.len;
    while (p <= end) {
        const char *q = memchr(p, '.', (size_t)(end - p));
        if (!q)
            q = end;
        if (cur.kind == JV_UNDEF)
            return cur;
        jv k = jv_str(p, (size_t)(q - p));
        cur = cur.kind == JV_DICT ? jv_dict_get(&cur, k.u.str.s, k.u.str.len) : getitem(r, NULL, &cur, &k);
        p = q + 1;
    }
    return cur;
}

static bool filter(jrender *r, const jnode *at, const char *name, const jv *v, const jv *args, int n_args,
                   const char *const *kw, const jv *kwv, int n_kw, jv *out)
{
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v->kind == JV_STR)
            *out = jv_int((int64_t)utf8_count(v->u.str.s, v->u.str.len));
        else if (v->kind == JV_LIST)
            *out = jv_int((int64_t)v->u.list->n);
        else if (v->kind == JV_DICT)
            *out = jv_int((int64_t)v->u.dict->n);
        else if (v->kind == JV_UNDEF)
            *out = jv_int(0);
        else
            return rfail(r, at, "object of type '%s' has no len()", kind_name(v));
        return true;
    }
    if (!strcmp(name, "string")) {
        *out = to_str(r, v);
        return !r->failed;
    }
    if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) {
        if (name[0] != 's')
            return rfail(r, at, "the escape filter is not supported");
        *out = to_str(r, v);
        return !r->failed;
    }
    if (!strcmp(name, "trim")) {
        jv s = to_str(r, v);
        *out = strip(r, &s, ARG(0), true, true);
        return !r->failed;
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize")) {
        jv s = to_str(r, v);
        *out = change_case(r, &s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 't' ? 2 : 3);
        return !r->failed;
    }
    if (!strcmp(name, "replace")) {
        jv s = to_str(r, v);
        if (n_args < 2 || args[0].kind != JV_STR || args[1].kind != JV_STR)
            return rfail(r, at, "replace needs two strings");
        *out = replace(r, &s, &args[0], &args[1], n_args > 2 && args[2].kind == JV_INT ? args[2].u.i : -1);
        return !r->failed;
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const jv *b = ARG_OR(1, kwarg(kw, kwv, n_kw, "boolean"));
        bool use = b && jv_truthy(b) ? !jv_truthy(v) : v->kind == JV_UNDEF;
        *out = use ? (n_args > 0 ? args[0] : mkstr(r, "", 0)) : *v;
        return true;
    }
    if (!strcmp(name, "tojson")) {
        const jv *ind = ARG_OR(0, kwarg(kw, kwv, n_kw, "indent"));
        const jv *sep = kwarg(kw, kwv, n_kw, "separators");
        const jv *sk = kwarg(kw, kwv, n_kw, "sort_keys");
        int indent = ind && ind->kind == JV_INT ? (int)ind->u.i : -1;
        char isep[32] = ", ", ksep[32] = ": ";
        if (indent >= 0)
            strcpy(isep, ",");
        if (sep && sep->kind == JV_LIST && sep->u.list->n == 2 && sep->u.list->items[0].kind == JV_STR &&
            sep->u.list->items[1].kind == JV_STR && sep->u.list->items[0].u.str.len < 32 &&
            sep->u.list->items[1].u.str.len < 32) {
            memcpy(isep, sep->u.list->items[0].u.str.s, sep->u.list->items[0].u.str.len);
            isep[sep->u.list->items[0].u.str.len] = 0;
            memcpy(ksep, sep->u.list->items[1].u.str.s, sep->u.list->items[1].u.str.len);
            ksep[sep->u.list->items[1].u.str.len] = 0;
        }
        jbuf b = {0};
        const char *why = NULL;
        bool ok = jv_tojson(&b, v, indent, isep, ksep, sk && jv_truthy(sk), 0, &why);
        if (!ok || b.failed) {
            free(b.s);
            return why ? rfail(r, at, "%s", why) : oom(r);
        }
        *out = mkstr(r, b.s ? b.s : "", b.len);
        free(b.s);
        return !r->failed;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        size_t n = l.u.list->n;
        *out = n ? l.u.list->items[name[0] == 'f' ? 0 : n - 1] : jv_undef();
        return true;
    }
    if (!strcmp(name, "list")) {
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        *out = jv_list(r->a);
        for (size_t i = 0; i < l.u.list->n; i++)
            jv_list_push(r->a, out, l.u.list->items[i]);
        return true;
    }
    if (!strcmp(name, "items")) {
        if (v->kind == JV_UNDEF) {
            *out = jv_list(r->a);
            return true;
        }
        if (v->kind != JV_DICT)
            return rfail(r, at, "can only get item pairs from a mapping");
        return m_dict(r, v, "items", NULL, 0, out);
    }
    if (!strcmp(name, "join")) {
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        const jv *sep = ARG_OR(0, kwarg(kw, kwv, n_kw, "d"));
        const jv *attr = ARG_OR(1, kwarg(kw, kwv, n_kw, "attribute"));
        jbuf b = {0};
        for (size_t i = 0; i < l.u.list->n; i++) {
            if (i && sep)
                jv_write(&b, sep, false);
            jv x = attr ? attr_path(r, &l.u.list->items[i], attr) : l.u.list->items[i];
            jv_write(&b, &x, false);
        }
        *out = mkstr(r, b.s ? b.s : "", b.len);
        free(b.s);
        return !r->failed;
    }
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr") || !strcmp(name, "select") ||
        !strcmp(name, "reject")) {
        bool attr_mode = strstr(name, "attr") != NULL, keep_true = name[0] == 's';
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        int k = 0;
        const jv *attr = attr_mode ? ARG(0) : NULL;
        if (attr_mode)
            k = 1;
        if (attr_mode && !attr)
            return rfail(r, at, "%s needs an attribute", name);
        const jv *tname = ARG(k);
        jv res = jv_list(r->a);
        for (size_t i = 0; i < l.u.list->n; i++) {
            jv x = attr ? attr_path(r, &l.u.list->items[i], attr) : l.u.list->items[i];
            bool t;
            if (!tname)
                t = jv_truthy(&x);
            else {
                if (tname->kind != JV_STR)
                    return rfail(r, at, "%s: the test must be named by a string", name);
                char tn[64];
                snprintf(tn, sizeof tn, "%.*s", (int)tname->u.str.len, tname->u.str.s);
                if (!test_value(r, at, tn, &x, args + k + 1, n_args - k - 1, &t))
                    return false;
            }
            if (t == keep_true && !jv_list_push(r->a, &res, l.u.list->items[i]))
                return oom(r);
        }
        *out = res;
        return true;
    }
    if (!strcmp(name, "map")) {
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        const jv *attr = kwarg(kw, kwv, n_kw, "attribute");
        const jv *def = kwarg(kw, kwv, n_kw, "default");
        jv res = jv_list(r->a);
        for (size_t i = 0; i < l.u.list->n; i++) {
            jv x;
            if (attr) {
                x = attr_path(r, &l.u.list->items[i], attr);
                if (x.kind == JV_UNDEF && def)
                    x = *def;
            } else if (n_args >= 1 && args[0].kind == JV_STR) {
                char fn[64];
                snprintf(fn, sizeof fn, "%.*s", (int)args[0].u.str.len, args[0].u.str.s);
                if (!filter(r, at, fn, &l.u.list->items[i], args + 1, n_args - 1, NULL, NULL, 0, &x))
                    return false;
            } else {
                return rfail(r, at, "map needs a filter name or attribute=");
            }
            if (!jv_list_push(r->a, &res, x))
                return oom(r);
        }
        *out = res;
        return true;
    }
    if (!strcmp(name, "unique") || !strcmp(name, "reverse")) {
        jv l;
        if (v->kind == JV_STR && name[0] == 'r') {
            jv st = jv_int(-1);
            *out = do_slice(r, at, v, NULL, NULL, &st);
            return !r->failed;
        }
        if (!iterate(r, at, v, &l))
            return false;
        jv res = jv_list(r->a);
        size_t n = l.u.list->n;
        for (size_t i = 0; i < n; i++) {
            const jv *x = &l.u.list->items[name[0] == 'r' ? n - 1 - i : i];
            bool seen = false;
            for (size_t j = 0; name[0] == 'u' && j < res.u.list->n && !seen; j++)
                seen = jv_equal(&res.u.list->items[j], x);
            if (!seen && !jv_list_push(r->a, &res, *x))
                return oom(r);
        }
        *out = res;
        return true;
    }
    if (!strcmp(name, "int")) {
        if (v->kind == JV_INT)
            *out = *v;
        else if (v->kind == JV_FLOAT)
            *out = jv_int((int64_t)v->u.f);
        else if (v->kind == JV_BOOL)
            *out = jv_int(v->u.b);
        else if (v->kind == JV_STR) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)(v->u.str.len < 63 ? v->u.str.len : 63), v->u.str.s);
            char *e;
            long long x = strtoll(buf, &e, 10);
            *out = jv_int(*e == 0 && e != buf ? x : (ARG(0) && ARG(0)->kind == JV_INT ? ARG(0)->u.i : 0));
        } else
            *out = jv_int(ARG(0) && ARG(0)->kind == JV_INT ? ARG(0)->u.i : 0);
        return true;
    }
    if (!strcmp(name, "float")) {
        if (v->kind == JV_STR) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)(v->u.str.len < 63 ? v->u.str.len : 63), v->u.str.s);
            char *e;
            double x = strtod(buf, &e);
            *out = jv_float(*e == 0 && e != buf ? x : 0.0);
        } else
            *out = jv_float(jv_num(v));
        return true;
    }
    if (!strcmp(name, "abs")) {
        *out = v->kind == JV_INT ? jv_int(v->u.i < 0 ? -v->u.i : v->u.i) : jv_float(fabs(jv_num(v)));
        return true;
    }
    if (!strcmp(name, "round")) {
        int64_t prec = ARG(0) && ARG(0)->kind == JV_INT ? ARG(0)->u.i : 0;
        double m = pow(10.0, (double)prec);
        *out = jv_float(round(jv_num(v) * m) / m);
        return true;
    }
    if (!strcmp(name, "indent")) {
        jv s = to_str(r, v);
        const jv *w = ARG_OR(0, kwarg(kw, kwv, n_kw, "width"));
        const jv *first = ARG_OR(1, kwarg(kw, kwv, n_kw, "first"));
        const jv *blank = ARG_OR(2, kwarg(kw, kwv, n_kw, "blank"));
        char pad[256] = "";
        if (w && w->kind == JV_STR)
            snprintf(pad, sizeof pad, "%.*s", (int)w->u.str.len, w->u.str.s);
        else {
            int64_t n = w && w->kind == JV_INT ? w->u.i : 4;
            for (int64_t i = 0; i < n && i < 255; i++)
                pad[i] = ' ', pad[i + 1] = 0;
        }
        jbuf b = {0};
        const char *p = s.u.str.s, *end = p + s.u.str.len;
        bool line_first = true;
        while (p <= end) {
            const char *q = memchr(p, '\n', (size_t)(end - p));
            const char *e = q ? q : end;
            bool empty = e == p;
            if ((!line_first || (first && jv_truthy(first))) && (!empty || (blank && jv_truthy(blank))))
                jb_puts(&b, pad);
            jb_put(&b, p, (size_t)(e - p));
            if (!q)
                break;
            jb_puts(&b, "\n");
            p = q + 1;
            line_first = false;
        }
        *out = mkstr(r, b.s ? b.s : "", b.len);
        free(b.s);
        return !r->failed;
    }
    if (!strcmp(name, "sum") || !strcmp(name, "max") || !strcmp(name, "min")) {
        jv l;
        if (!iterate(r, at, v, &l))
            return false;
        if (name[1] == 'u') {
            bool flt = false;
            double fs = 0;
            int64_t is = 0;
            for (size_t i = 0; i < l.u.list->n; i++) {
                const jv *x = &l.u.list->items[i];
                if (x->kind == JV_FLOAT)
                    flt = true;
                fs += jv_num(x), is += x->kind == JV_INT ? x->u.i : 0;
            }
            *out = flt ? jv_float(fs) : jv_int(is);
            return true;
        }
        if (l.u.list->n == 0) {
            *out = jv_undef();
            return true;
        }
        jv best = l.u.list->items[0];
        for (size_t i = 1; i < l.u.list->n; i++) {
            double a = jv_num(&l.u.list->items[i]), b = jv_num(&best);
            if (name[1] == 'a' ? a > b : a < b)
                best = l.u.list->items[i];
        }
        *out = best;
        return true;
    }
    if (!strcmp(name, "dictsort")) {
        if (v->kind != JV_DICT)
            return rfail(r, at, "dictsort needs a mapping");
        jv items;
        if (!m_dict(r, v, "items", NULL, 0, &items))
            return false;
        jv *it = items.u.list->items;
        for (size_t i = 1; i < items.u.list->n; i++)
            for (size_t j = i; j > 0; j--) {
                const jv *x = &it[j - 1].u.list->items[0], *y = &it[j].u.list->items[0];
                if (x->kind != JV_STR || y->kind != JV_STR)
                    break;
                size_t n = x->u.str.len < y->u.str.len ? x->u.str.len : y->u.str.len;
                int c = memcmp(x->u.str.s, y->u.str.s, n);
                if (c > 0 || (c == 0 && x->u.str.len > y->u.str.len)) {
                    jv t = it[j];
                    it[j] = it[j - 1];
                    it[j - 1] = t;
                } else
                    break;
            }
        *out = items;
        return true;
    }
    if (!strcmp(name, "format")) {
        if (v->kind != JV_STR)
            return rfail(r, at, "format needs a string");
        *out = percent_format(r, at, v, args, n_args);
        return !r->failed;
    }
    return unsupported(r, at, "filter", name);
}

/* ------------------------------------------------------------------ tests */

static bool test_value(jrender *r, const jnode *at, const char *name, const jv *v, const jv *args, int n_args,
                       bool *res)
{
    if (!strcmp(name, "defined"))
        *res = v->kind != JV_UNDEF;
    else if (!strcmp(name, "undefined"))
        *res = v->kind == JV_UNDEF;
    else if (!strcmp(name, "none"))
        *res = v->kind == JV_NONE;
    else if (!strcmp(name, "string"))
        *res = v->kind == JV_STR;
    else if (!strcmp(name, "number"))
        *res = v->kind == JV_INT || v->kind == JV_FLOAT;
    else if (!strcmp(name, "integer"))
        *res = v->kind == JV_INT;
    else if (!strcmp(name, "float"))
        *res = v->kind == JV_FLOAT;
    else if (!strcmp(name, "boolean"))
        *res = v->kind == JV_BOOL;
    else if (!strcmp(name, "true"))
        *res = v->kind == JV_BOOL && v->u.b;
    else if (!strcmp(name, "false"))
        *res = v->kind == JV_BOOL && !v->u.b;
    else if (!strcmp(name, "mapping"))
        *res = v->kind == JV_DICT;
    else if (!strcmp(name, "iterable"))
        *res = v->kind == JV_LIST || v->kind == JV_DICT || v->kind == JV_STR || v->kind == JV_UNDEF;
    else if (!strcmp(name, "sequence"))
        *res = v->kind == JV_LIST || v->kind == JV_DICT || v->kind == JV_STR;
    else if (!strcmp(name, "callable"))
        *res = v->kind == JV_FUNC || v->kind == JV_MACRO;
    else if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        if (v->kind != JV_INT)
            return rfail(r, at, "%s needs an integer", name);
        *res = (v->u.i % 2 != 0) == (name[0] == 'o');
    } else if (!strcmp(name, "divisibleby")) {
        if (v->kind != JV_INT || n_args < 1 || args[0].kind != JV_INT || args[0].u.i == 0)
            return rfail(r, at, "divisibleby needs integers");
        *res = v->u.i % args[0].u.i == 0;
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        bool ok = v->kind == JV_STR;
        for (size_t i = 0; ok && i < v->u.str.len; i++) {
            unsigned char c = (unsigned char)v->u.str.s[i];
            ok = name[0] == 'l' ? !isupper(c) : !islower(c);
        }
        *res = ok;
    } else {
        if (n_args < 1)
            return unsupported(r, at, "test", name);
        const jv *o = &args[0];
        if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") || !strcmp(name, "sameas"))
            *res = jv_equal(v, o);
        else if (!strcmp(name, "ne") || !strcmp(name, "!="))
            *res = !jv_equal(v, o);
        else if (!strcmp(name, "in")) {
            jv l;
            if (o->kind == JV_STR && v->kind == JV_STR)
                *res = find_bytes(o->u.str.s, o->u.str.len, v->u.str.s, v->u.str.len) != NULL;
            else {
                if (!iterate(r, at, o, &l))
                    return false;
                *res = false;
                for (size_t i = 0; i < l.u.list->n && !*res; i++)
                    *res = jv_equal(&l.u.list->items[i], v);
            }
        } else if (!strcmp(name, "gt") || !strcmp(name, "ge") || !strcmp(name, "lt") || !strcmp(name, "le")) {
            double a = jv_num(v), b = jv_num(o);
            *res = name[0] == 'g' ? (name[1] == 't' ? a > b : a >= b) : (name[1] == 't' ? a < b : a <= b);
        } else
            return unsupported(r, at, "test", name);
    }
    return true;
}

/* ------------------------------------------------------------------ globals */

static bool g_raise(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw, const jv *kwv,
                    int n_kw, jv *out)
{
    (void)fn, (void)kw, (void)kwv, (void)n_kw, (void)out;
    jbuf b = {0};
    if (n_args > 0)
        jv_write(&b, &args[0], false);
    if (!r->failed)
        gk_err_set(r->err, GK_ERR_INVALID_ARG, "%s", b.s ? b.s : "");
    free(b.s);
    r->failed = true;
    return false;
}

static bool g_strftime(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw, const jv *kwv,
                       int n_kw, jv *out)
{
    (void)fn, (void)kw, (void)kwv, (void)n_kw;
    if (n_args < 1 || args[0].kind != JV_STR)
        return rfail(r, NULL, "strftime_now needs a format string");
    char f[256], o[512];
    snprintf(f, sizeof f, "%.*s", (int)(args[0].u.str.len < 255 ? args[0].u.str.len : 255), args[0].u.str.s);
    struct tm tm;
    time_t t = g_clock ? g_clock : time(NULL);
    if (g_clock)
        gmtime_r(&t, &tm);
    else
        localtime_r(&t, &tm);
    size_t n = strftime(o, sizeof o, f, &tm);
    *out = mkstr(r, o, n);
    return !r->failed;
}

static bool g_range(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw, const jv *kwv,
                    int n_kw, jv *out)
{
    (void)fn, (void)kw, (void)kwv, (void)n_kw;
    int64_t a = 0, b, s = 1;
    for (int i = 0; i < n_args; i++)
        if (args[i].kind != JV_INT)
            return rfail(r, NULL, "range needs integers");
    if (n_args == 1)
        b = args[0].u.i;
    else if (n_args >= 2)
        a = args[0].u.i, b = args[1].u.i, s = n_args > 2 ? args[2].u.i : 1;
    else
        return rfail(r, NULL, "range needs an argument");
    if (s == 0)
        return rfail(r, NULL, "range step cannot be zero");
    *out = jv_list(r->a);
    int64_t count = 0;
    for (int64_t i = a; s > 0 ? i < b : i > b; i += s) {
        if (++count > 1000000)
            return rfail(r, NULL, "range too long");
        if (!jv_list_push(r->a, out, jv_int(i)))
            return oom(r);
    }
    return true;
}

static bool g_namespace(jrender *r, const jv *fn, const jv *args, int n_args, const char *const *kw,
                        const jv *kwv, int n_kw, jv *out)
{
    *out = jv_dict(r->a);
    if (out->kind == JV_UNDEF)
        return oom(r);
    out->u.dict->is_ns = fn->u.func.name[0] == 'n';
    for (int i = 0; i < n_args; i++)
        if (args[i].kind == JV_DICT)
            for (size_t k = 0; k < args[i].u.dict->n; k++)
                jv_dict_set(r->a, out, args[i].u.dict->keys[k], args[i].u.dict->vals[k]);
    for (int i = 0; i < n_kw; i++)
        if (!jv_dict_set(r->a, out, jv_str(kw[i], strlen(kw[i])), kwv[i]))
            return oom(r);
    return true;
}

static bool global(const char *name, size_t len, jv *out)
{
    static const struct {
        const char *name;
        jfunc_fn fn;
    } g[] = {{"raise_exception", g_raise}, {"strftime_now", g_strftime}, {"range", g_range},
             {"namespace", g_namespace}, {"dict", g_namespace}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (strlen(g[i].name) == len && memcmp(g[i].name, name, len) == 0) {
            *out = (jv){.kind = JV_FUNC};
            out->u.func.fn = g[i].fn;
            out->u.func.name = g[i].name;
            return true;
        }
    return false;
}

/* ------------------------------------------------------------------ expressions */

static int cmp_values(jrender *r, const jnode *at, const jv *a, const jv *b, bool *ok)
{
    *ok = true;
    if ((a->kind == JV_INT || a->kind == JV_FLOAT || a->kind == JV_BOOL) &&
        (b->kind == JV_INT || b->kind == JV_FLOAT || b->kind == JV_BOOL)) {
        double x = jv_num(a), y = jv_num(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a->kind == JV_STR && b->kind == JV_STR) {
        size_t n = a->u.str.len < b->u.str.len ? a->u.str.len : b->u.str.len;
        int c = memcmp(a->u.str.s, b->u.str.s, n);
        return c ? (c < 0 ? -1 : 1) : a->u.str.len < b->u.str.len ? -1 : a->u.str.len > b->u.str.len ? 1 : 0;
    }
    *ok = false;
    rfail(r, at, "'<' not supported between instances of '%s' and '%s'", kind_name(a), kind_name(b));
    return 0;
}

static jv arith(jrender *r, const jnode *at, const char *op, const jv *a, const jv *b)
{
    bool num = (a->kind == JV_INT || a->kind == JV_FLOAT || a->kind == JV_BOOL) &&
               (b->kind == JV_INT || b->kind == JV_FLOAT || b->kind == JV_BOOL);
    if (!strcmp(op, "+")) {
        if (a->kind == JV_STR && b->kind == JV_STR) {
            char *s = ja_alloc(r->a, a->u.str.len + b->u.str.len + 1);
            if (!s)
                return oom(r), jv_undef();
            memcpy(s, a->u.str.s, a->u.str.len);
            memcpy(s + a->u.str.len, b->u.str.s, b->u.str.len);
            return jv_str(s, a->u.str.len + b->u.str.len);
        }
        if (a->kind == JV_LIST && b->kind == JV_LIST) {
            jv l = jv_list(r->a);
            for (size_t i = 0; i < a->u.list->n; i++)
                jv_list_push(r->a, &l, a->u.list->items[i]);
            for (size_t i = 0; i < b->u.list->n; i++)
                jv_list_push(r->a, &l, b->u.list->items[i]);
            return l;
        }
    }
    if (!strcmp(op, "*") && (a->kind == JV_STR || a->kind == JV_LIST) && b->kind == JV_INT) {
        if (b->u.i > 100000)
            return rfail(r, at, "repetition too long"), jv_undef();
        if (a->kind == JV_STR) {
            jbuf s = {0};
            for (int64_t i = 0; i < b->u.i; i++)
                jb_put(&s, a->u.str.s, a->u.str.len);
            jv v = mkstr(r, s.s ? s.s : "", s.len);
            free(s.s);
            return v;
        }
        jv l = jv_list(r->a);
        for (int64_t i = 0; i < b->u.i; i++)
            for (size_t k = 0; k < a->u.list->n; k++)
                jv_list_push(r->a, &l, a->u.list->items[k]);
        return l;
    }
    if (!strcmp(op, "%") && a->kind == JV_STR) { /* "%s and %s" % (x, y) */
        if (b->kind == JV_LIST)
            return percent_format(r, at, a, b->u.list->items, (int)b->u.list->n);
        return percent_format(r, at, a, b, 1);
    }
    if (!num) {
        rfail(r, at, "unsupported operand type(s) for %s: '%s' and '%s'", op, kind_name(a), kind_name(b));
        return jv_undef();
    }
    bool ints = a->kind != JV_FLOAT && b->kind != JV_FLOAT;
    int64_t x = a->kind == JV_INT ? a->u.i : a->kind == JV_BOOL ? a->u.b : 0;
    int64_t y = b->kind == JV_INT ? b->u.i : b->kind == JV_BOOL ? b->u.b : 0;
    double fx = jv_num(a), fy = jv_num(b);
    switch (op[0]) {
    case '+': return ints ? jv_int(x + y) : jv_float(fx + fy);
    case '-': return ints ? jv_int(x - y) : jv_float(fx - fy);
    case '*':
        if (op[1] == '*')
            return ints && y >= 0 ? jv_int((int64_t)pow((double)x, (double)y)) : jv_float(pow(fx, fy));
        return ints ? jv_int(x * y) : jv_float(fx * fy);
    case '/':
        if (fy == 0.0)
            return rfail(r, at, "division by zero"), jv_undef();
        if (op[1] == '/') {
            if (ints) {
                int64_t q = x / y;
                if ((x % y != 0) && ((x < 0) != (y < 0)))
                    q--;
                return jv_int(q);
            }
            return jv_float(floor(fx / fy));
        }
        return jv_float(fx / fy);
    case '%':
        if (a->kind == JV_STR) /* not reached: strings are formatted before */
            break;
        if (fy == 0.0)
            return rfail(r, at, "modulo by zero"), jv_undef();
        if (ints) {
            int64_t m = x % y;
            if (m != 0 && ((m < 0) != (y < 0)))
                m += y;
            return jv_int(m);
        }
        return jv_float(fx - fy * floor(fx / fy));
    }
    rfail(r, at, "unsupported operator %s", op);
    return jv_undef();
}

static bool contains(jrender *r, const jnode *at, const jv *item, const jv *box)
{
    if (box->kind == JV_STR) {
        if (item->kind != JV_STR)
            return rfail(r, at, "'in <string>' requires string as left operand"), false;
        return find_bytes(box->u.str.s, box->u.str.len, item->u.str.s, item->u.str.len) != NULL;
    }
    if (box->kind == JV_DICT) {
        for (size_t i = 0; i < box->u.dict->n; i++)
            if (jv_equal(&box->u.dict->keys[i], item))
                return true;
        return false;
    }
    if (box->kind == JV_LIST) {
        for (size_t i = 0; i < box->u.list->n; i++)
            if (jv_equal(&box->u.list->items[i], item))
                return true;
        return false;
    }
    if (box->kind == JV_UNDEF)
        return false;
    rfail(r, at, "argument of type '%s' is not iterable", kind_name(box));
    return false;
}

/* Evaluate a node's call arguments into arrays from the arena. */
static bool eval_args(jrender *r, const jnode *n, jv **args, int *n_args, jv **kwv)
{
    *args = ja_alloc(r->a, (size_t)(n->n_kids + 1) * sizeof **args);
    *kwv = ja_alloc(r->a, (size_t)(n->n_kw + 1) * sizeof **kwv);
    if (!*args || !*kwv)
        return oom(r);
    for (int i = 0; i < n->n_kids; i++) {
        (*args)[i] = eval(r, n->kids[i]);
        if (r->failed)
            return false;
    }
    for (int i = 0; i < n->n_kw; i++) {
        (*kwv)[i] = eval(r, n->kwv[i]);
        if (r->failed)
            return false;
    }
    *n_args = n->n_kids;
    return true;
}

static bool exec_body(jrender *r, const jnode *b);

/* A macro call: its own scope over the template's, parameters bound by
 * position, then keyword, then default. Returns the rendered text. */
static bool call_macro(jrender *r, const jnode *at, const jnode *m, const jv *args, int n_args,
                       const char *const *kw, const jv *kwv, int n_kw, jv *out)
{
    if (++r->depth > MAX_DEPTH)
        return rfail(r, at, "macro calls nested too deeply");
    frame *saved = r->top;
    jbuf saved_out = r->out;
    const jnode *caller = r->caller_body;
    frame *caller_frame = r->caller_frame;
    r->caller_body = NULL;
    if (!scope_push(r, r->root))
        return false;
    if (n_args > m->n_kw) {
        r->top = saved;
        return rfail(r, at, "macro '%s' takes not more than %d argument(s)", m->name, m->n_kw);
    }
    for (int i = 0; i < m->n_kw; i++) {
        const char *pn = m->kw[i];
        jv v = jv_undef();
        bool set = false;
        if (i < n_args)
            v = args[i], set = true;
        for (int k = 0; k < n_kw && !set; k++)
            if (kw[k] && !strcmp(kw[k], pn))
                v = kwv[k], set = true;
        if (!set && m->kwv[i]) {
            v = eval(r, m->kwv[i]);
            if (r->failed)
                return false;
        }
        if (!assign(r, pn, strlen(pn), v))
            return false;
    }
    if (caller) {
        jv c = {.kind = JV_MACRO};
        jnode *cm = ja_alloc(r->a, sizeof *cm);
        if (!cm)
            return oom(r);
        cm->kind = JN_MACRO;
        cm->name = "caller";
        cm->a = (jnode *)caller;
        c.u.macro = cm;
        (void)caller_frame;
        if (!assign(r, "caller", 6, c))
            return false;
    }
    r->out = (jbuf){0};
    bool ok = exec_body(r, m->a);
    jbuf body = r->out;
    r->out = saved_out;
    r->top = saved;
    r->depth--;
    if (!ok) {
        free(body.s);
        return false;
    }
    *out = mkstr(r, body.s ? body.s : "", body.len);
    free(body.s);
    return !r->failed;
}

static bool call_value(jrender *r, const jnode *at, const jv *f, const jv *args, int n_args, const char *const *kw,
                       const jv *kwv, int n_kw, jv *out)
{
    if (f->kind == JV_FUNC) {
        bool ok = f->u.func.fn(r, f, args, n_args, kw, kwv, n_kw, out);
        return ok || r->failed ? ok : rfail(r, at, "call failed");
    }
    if (f->kind == JV_MACRO)
        return call_macro(r, at, f->u.macro, args, n_args, kw, kwv, n_kw, out);
    return rfail(r, at, "'%s' object is not callable", kind_name(f));
}

static jv eval(jrender *r, const jnode *n)
{
    if (r->failed)
        return jv_undef();
    if (++r->steps > MAX_STEPS) {
        rfail(r, n, "template ran too long");
        return jv_undef();
    }
    if (++r->depth > MAX_DEPTH) {
        rfail(r, n, "expression nested too deeply");
        return jv_undef();
    }
    jv out = jv_undef();
    switch (n->kind) {
    case JN_LIT: out = n->lit; break;
    case JN_NAME:
        if (!lookup(r, n->name, n->name_len, &out) && !global(n->name, n->name_len, &out))
            out = jv_undef();
        break;
    case JN_ATTR: {
        jv o = eval(r, n->a);
        if (!r->failed)
            out = getattr(r, n, &o, n->name, n->name_len);
        break;
    }
    case JN_ITEM: {
        jv o = eval(r, n->a), k = eval(r, n->b);
        if (!r->failed)
            out = getitem(r, n, &o, &k);
        break;
    }
    case JN_SLICE: {
        jv o = eval(r, n->a);
        jv lo = n->b ? eval(r, n->b) : jv_none(), hi = n->c ? eval(r, n->c) : jv_none(),
           st = n->d ? eval(r, n->d) : jv_none();
        if (!r->failed)
            out = do_slice(r, n, &o, &lo, &hi, &st);
        break;
    }
    case JN_CALL: {
        jv f = eval(r, n->a), *args, *kwv;
        int na;
        if (!r->failed && eval_args(r, n, &args, &na, &kwv))
            call_value(r, n, &f, args, na, n->kw, kwv, n->n_kw, &out);
        break;
    }
    case JN_FILTER: {
        jv v = eval(r, n->a), *args, *kwv;
        int na;
        if (!r->failed && eval_args(r, n, &args, &na, &kwv))
            filter(r, n, n->name, &v, args, na, n->kw, kwv, n->n_kw, &out);
        break;
    }
    case JN_TEST: {
        jv v = eval(r, n->a), *args, *kwv;
        int na;
        bool res = false;
        if (!r->failed && eval_args(r, n, &args, &na, &kwv) && test_value(r, n, n->name, &v, args, na, &res))
            out = jv_bool(res != n->negate);
        break;
    }
    case JN_UNARY: {
        jv v = eval(r, n->a);
        if (r->failed)
            break;
        if (v.kind == JV_INT)
            out = jv_int(n->name[0] == '-' ? -v.u.i : v.u.i);
        else if (v.kind == JV_FLOAT)
            out = jv_float(n->name[0] == '-' ? -v.u.f : v.u.f);
        else
            rfail(r, n, "bad operand type for unary %s: '%s'", n->name, kind_name(&v));
        break;
    }
    case JN_BINARY: {
        jv a = eval(r, n->a), b = eval(r, n->b);
        if (r->failed)
            break;
        const char *op = n->name;
        if (!strcmp(op, "~")) {
            jv x = to_str(r, &a), y = to_str(r, &b);
            out = arith(r, n, "+", &x, &y);
        } else if (!strcmp(op, "==") || !strcmp(op, "!=")) {
            out = jv_bool(jv_equal(&a, &b) == (op[0] == '='));
        } else if (!strcmp(op, "<") || !strcmp(op, "<=") || !strcmp(op, ">") || !strcmp(op, ">=")) {
            bool ok;
            int c = cmp_values(r, n, &a, &b, &ok);
            if (ok)
                out = jv_bool(op[0] == '<' ? (op[1] ? c <= 0 : c < 0) : (op[1] ? c >= 0 : c > 0));
        } else if (!strcmp(op, "in") || !strcmp(op, "not in")) {
            bool c = contains(r, n, &a, &b);
            if (!r->failed)
                out = jv_bool(c == (op[0] == 'i'));
        } else {
            out = arith(r, n, op, &a, &b);
        }
        break;
    }
    case JN_AND: {
        jv a = eval(r, n->a);
        out = !jv_truthy(&a) ? a : eval(r, n->b);
        break;
    }
    case JN_OR: {
        jv a = eval(r, n->a);
        out = jv_truthy(&a) ? a : eval(r, n->b);
        break;
    }
    case JN_NOT: {
        jv a = eval(r, n->a);
        out = jv_bool(!jv_truthy(&a));
        break;
    }
    case JN_COND: {
        jv c = eval(r, n->a);
        if (!r->failed)
            out = jv_truthy(&c) ? eval(r, n->b) : n->c ? eval(r, n->c) : jv_undef();
        break;
    }
    case JN_LIST:
    case JN_TUPLE: {
        out = jv_list(r->a);
        for (int i = 0; i < n->n_kids && !r->failed; i++)
            if (!jv_list_push(r->a, &out, eval(r, n->kids[i])))
                oom(r);
        break;
    }
    case JN_DICT: {
        out = jv_dict(r->a);
        for (int i = 0; i + 1 < n->n_kids && !r->failed; i += 2) {
            jv k = eval(r, n->kids[i]), v = eval(r, n->kids[i + 1]);
            if (!jv_dict_set(r->a, &out, k, v))
                oom(r);
        }
        break;
    }
    default: rfail(r, n, "not an expression");
    }
    r->depth--;
    return r->failed ? jv_undef() : out;
}

/* ------------------------------------------------------------------ statements */

static bool bind_target(jrender *r, const jnode *t, jv v)
{
    if (t->kind == JN_NAME)
        return assign(r, t->name, t->name_len, v);
    if (t->kind == JN_ATTR) {
        jv ns = eval(r, t->a);
        if (r->failed)
            return false;
        if (ns.kind != JV_DICT || !ns.u.dict->is_ns)
            return rfail(r, t, "cannot assign attribute on non-namespace object");
        return jv_dict_set(r->a, &ns, jv_str(t->name, t->name_len), v) || oom(r);
    }
    if (t->kind == JN_TUPLE) {
        jv l;
        if (!iterate(r, t, &v, &l))
            return false;
        if ((int)l.u.list->n != t->n_kids)
            return rfail(r, t, "cannot unpack %zu values into %d names", l.u.list->n, t->n_kids);
        for (int i = 0; i < t->n_kids; i++)
            if (!bind_target(r, t->kids[i], l.u.list->items[i]))
                return false;
        return true;
    }
    return rfail(r, t, "cannot assign to this");
}

static bool put_loop(jrender *r, jv *loop, const char *k, jv v)
{
    return jv_dict_set(r->a, loop, jv_str(k, strlen(k)), v) || oom(r);
}

static bool exec_for(jrender *r, const jnode *n)
{
    jv it = eval(r, n->b), l;
    if (r->failed || !iterate(r, n->b, &it, &l))
        return false;
    frame *saved = r->top;
    if (!scope_push(r, saved))
        return false;
    if (n->e) { /* the loop's filter comes before its indices */
        jv kept = jv_list(r->a);
        for (size_t i = 0; i < l.u.list->n; i++) {
            if (!bind_target(r, n->a, l.u.list->items[i]))
                return false;
            jv c = eval(r, n->e);
            if (r->failed)
                return false;
            if (jv_truthy(&c) && !jv_list_push(r->a, &kept, l.u.list->items[i]))
                return oom(r);
        }
        l = kept;
    }
    size_t len = l.u.list->n;
    for (size_t i = 0; i < len; i++) {
        jv loop = jv_dict(r->a);
        if (loop.kind == JV_UNDEF)
            return oom(r);
        put_loop(r, &loop, "index", jv_int((int64_t)i + 1));
        put_loop(r, &loop, "index0", jv_int((int64_t)i));
        put_loop(r, &loop, "revindex", jv_int((int64_t)(len - i)));
        put_loop(r, &loop, "revindex0", jv_int((int64_t)(len - i - 1)));
        put_loop(r, &loop, "first", jv_bool(i == 0));
        put_loop(r, &loop, "last", jv_bool(i + 1 == len));
        put_loop(r, &loop, "length", jv_int((int64_t)len));
        put_loop(r, &loop, "previtem", i > 0 ? l.u.list->items[i - 1] : jv_undef());
        put_loop(r, &loop, "nextitem", i + 1 < len ? l.u.list->items[i + 1] : jv_undef());
        if (!assign(r, "loop", 4, loop) || !bind_target(r, n->a, l.u.list->items[i]))
            return false;
        if (!exec_body(r, n->c))
            return false;
        int c = r->ctrl;
        r->ctrl = CTRL_NONE;
        if (c == CTRL_BREAK)
            break;
    }
    r->top = saved;
    if (len == 0 && n->d)
        return exec_body(r, n->d);
    return true;
}

/* Apply the filters of chain (JN_FILTER nodes whose innermost operand is a
 * placeholder) to *v, innermost first. */
static bool filter_chain(jrender *r, const jnode *chain, jv *v)
{
    const jnode *fs[16];
    int k = 0;
    for (const jnode *f = chain; f && f->kind == JN_FILTER; f = f->a) {
        if (k == 16)
            return rfail(r, chain, "too many filters");
        fs[k++] = f;
    }
    while (k-- > 0) {
        jv *args, *kwv, out;
        int na;
        if (!eval_args(r, fs[k], &args, &na, &kwv) ||
            !filter(r, fs[k], fs[k]->name, v, args, na, fs[k]->kw, kwv, fs[k]->n_kw, &out))
            return false;
        *v = out;
    }
    return true;
}

/* The rendered text of body b, as a string value. */
static bool capture_body(jrender *r, const jnode *b, jv *v)
{
    jbuf saved = r->out;
    r->out = (jbuf){0};
    bool ok = exec_body(r, b);
    jbuf body = r->out;
    r->out = saved;
    if (ok)
        *v = mkstr(r, body.s ? body.s : "", body.len);
    free(body.s);
    return ok && !r->failed;
}

static bool exec(jrender *r, const jnode *n)
{
    if (r->failed)
        return false;
    switch (n->kind) {
    case JN_TEXT: return jb_put(&r->out, n->lit.u.str.s, n->lit.u.str.len) || (r->out.too_big ? rfail(r, n, "rendering too long") : oom(r));
    case JN_OUTPUT: {
        jv v = eval(r, n->a);
        if (r->failed)
            return false;
        jv_write(&r->out, &v, false);
        if (r->out.failed)
            return r->out.too_big ? rfail(r, n, "rendering too long") : oom(r);
        return true;
    }
    case JN_IF: {
        jv c = eval(r, n->a);
        if (r->failed)
            return false;
        if (jv_truthy(&c))
            return exec_body(r, n->b);
        return n->c ? exec_body(r, n->c) : true;
    }
    case JN_FOR: return exec_for(r, n);
    case JN_SET: {
        jv v = eval(r, n->b);
        return !r->failed && bind_target(r, n->a, v);
    }
    case JN_SET_BLOCK: {
        jbuf saved = r->out;
        r->out = (jbuf){0};
        bool ok = exec_body(r, n->b);
        jbuf body = r->out;
        r->out = saved;
        if (!ok) {
            free(body.s);
            return false;
        }
        jv v = mkstr(r, body.s ? body.s : "", body.len);
        free(body.s);
        if (n->c && !filter_chain(r, n->c, &v)) /* {% set x | filters %}: the filters over the body */
            return false;
        return bind_target(r, n->a, v);
    }
    case JN_MACRO: {
        jv m = {.kind = JV_MACRO};
        m.u.macro = n;
        return assign(r, n->name, n->name_len, m);
    }
    case JN_CALL_BLOCK: {
        const jnode *c = n->a;
        jv f = eval(r, c->a), *args, *kwv, out;
        int na;
        if (r->failed || !eval_args(r, c, &args, &na, &kwv))
            return false;
        if (f.kind != JV_MACRO)
            return rfail(r, n, "call block needs a macro");
        r->caller_body = n->b;
        r->caller_frame = r->top;
        if (!call_macro(r, n, f.u.macro, args, na, c->kw, kwv, c->n_kw, &out))
            return false;
        jv_write(&r->out, &out, false);
        return true;
    }
    case JN_WITH: {
        frame *saved = r->top;
        jv *vals = ja_alloc(r->a, (size_t)(n->n_kw + 1) * sizeof *vals);
        if (!vals)
            return oom(r);
        for (int i = 0; i < n->n_kw; i++) { /* evaluated outside the new scope */
            vals[i] = eval(r, n->kwv[i]);
            if (r->failed)
                return false;
        }
        if (!scope_push(r, saved))
            return false;
        for (int i = 0; i < n->n_kw; i++)
            if (!assign(r, n->kw[i], strlen(n->kw[i]), vals[i]))
                return false;
        bool ok = exec_body(r, n->a);
        r->top = saved;
        return ok;
    }
    case JN_FILTER_BLOCK: {
        jv v;
        if (!capture_body(r, n->a, &v) || !filter_chain(r, n->c, &v))
            return false;
        jv_write(&r->out, &v, false);
        return !r->out.failed || oom(r);
    }
    case JN_BREAK: r->ctrl = CTRL_BREAK; return true;
    case JN_CONTINUE: r->ctrl = CTRL_CONTINUE; return true;
    case JN_BODY: return exec_body(r, n);
    default: return rfail(r, n, "not a statement");
    }
}

static bool exec_body(jrender *r, const jnode *b)
{
    for (int i = 0; i < b->n_kids; i++) {
        if (!exec(r, b->kids[i]))
            return false;
        if (r->ctrl)
            return true;
    }
    return true;
}

gk_status jinja_render(const jtemplate *t, jarena *a, const jv *vars, char **out, size_t *len, gk_err *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    jrender r = {.a = a, .err = err};
    if (!scope_push(&r, NULL))
        return GK_ERR_NOMEM;
    /* the caller's variables at the bottom, the template's own sets above */
    r.top->vars = *vars;
    r.root = r.top;
    if (!scope_push(&r, r.root))
        return GK_ERR_NOMEM;
    r.root = r.top;
    bool ok = exec_body(&r, t->root) && !r.failed && !a->failed;
    if (!ok) {
        free(r.out.s);
        if (!r.failed)
            return gk_err_set(err, GK_ERR_NOMEM, "chat template: out of memory while rendering");
        return err ? err->code : GK_ERR_INVALID_ARG;
    }
    if (!r.out.s && !jb_put(&r.out, "", 0))
        return gk_err_set(err, GK_ERR_NOMEM, "chat template: out of memory while rendering");
    *out = r.out.s;
    if (len)
        *len = r.out.len;
    return GK_OK;
}
