/* jinja_parse.c - chat templates from text to a tree (jinja.h): a lexer that
 * applies Jinja's whitespace rules as transformers configures them
 * (trim_blocks, lstrip_blocks, "-" and "+" modifiers, one trailing newline of
 * the template dropped) and a recursive-descent parser with Jinja's operator
 * precedence. Statements: if/elif/else, for (with unpacking, a filter and
 * else), set (expression, namespace attribute, block), macro, call blocks,
 * break/continue, generation, raw. Anything else is an error naming its line
 * and column. Not here: evaluation (jinja_eval.c).
 */
#include "jinja.h"

#include "gk_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ arena */

struct jarena_chunk {
    jarena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define JA_CHUNK (64 * 1024)
#define JA_LIMIT ((size_t)512 << 20) /* a render that needs more is refused */

void *ja_alloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->failed || n > JA_LIMIT || a->used_total + n > JA_LIMIT) {
        a->failed = true;
        return NULL;
    }
    jarena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > JA_CHUNK ? n : JA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c) {
            a->failed = true;
            return NULL;
        }
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used_total += n;
    memset(p, 0, n);
    return p;
}

char *ja_strndup(jarena *a, const char *s, size_t n)
{
    char *p = ja_alloc(a, n + 1);
    if (p && n)
        memcpy(p, s, n);
    return p;
}

void ja_free(jarena *a)
{
    for (jarena_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    a->head = NULL;
    a->used_total = 0;
    a->failed = false;
}

/* ------------------------------------------------------------------ lexer */

typedef enum tk_kind { TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END, TK_NAME, TK_STRING,
                       TK_INT, TK_FLOAT, TK_OP, TK_EOF } tk_kind;

typedef struct token {
    tk_kind kind;
    const char *s; /* text, name, op, decoded string */
    size_t len;
    int64_t i;
    double f;
    int line, col;
} token;

typedef struct parser {
    jarena *a;
    const char *src;
    size_t len;
    token *tk;
    size_t n_tk, cap_tk, pos;
    gk_err *err;
    bool failed;
    int depth;
} parser;

static void where(const parser *p, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < p->len; i++) {
        if (p->src[i] == '\n')
            l++, c = 1;
        else
            c++;
    }
    *line = l, *col = c;
}

static bool fail_at(parser *p, int line, int col, const char *what)
{
    if (!p->failed)
        gk_err_set(p->err, GK_ERR_UNSUPPORTED, "chat template: line %d, column %d: %s", line, col, what);
    p->failed = true;
    return false;
}

static bool fail_off(parser *p, size_t off, const char *what)
{
    int l, c;
    where(p, off, &l, &c);
    return fail_at(p, l, c, what);
}

static token *push(parser *p, tk_kind k, size_t off)
{
    if (p->n_tk == p->cap_tk) {
        size_t cap = p->cap_tk ? 2 * p->cap_tk : 256;
        token *t = realloc(p->tk, cap * sizeof *t);
        if (!t) {
            fail_off(p, off, "out of memory");
            return NULL;
        }
        p->tk = t, p->cap_tk = cap;
    }
    token *t = &p->tk[p->n_tk++];
    memset(t, 0, sizeof *t);
    t->kind = k;
    where(p, off, &t->line, &t->col);
    return t;
}

/* Decode a Python-style string literal body [s, s+n) into the arena. */
static bool decode_string(parser *p, const char *s, size_t n, size_t off, token *t)
{
    char *o = ja_alloc(p->a, n + 1);
    if (!o)
        return fail_off(p, off, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch != '\\' || i + 1 == n) {
            o[k++] = ch;
            continue;
        }
        char e = s[++i];
        switch (e) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '0': o[k++] = '\0'; break;
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case '\n': break;
        case 'u':
        case 'x': {
            int nd = e == 'u' ? 4 : 2;
            if (i + (size_t)nd >= n)
                return fail_off(p, off, "truncated escape in a string literal");
            unsigned cp = 0;
            for (int d = 0; d < nd; d++) {
                char h = s[i + 1 + d];
                if (!isxdigit((unsigned char)h))
                    return fail_off(p, off, "bad escape in a string literal");
                cp = cp * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            i += (size_t)nd;
            if (cp < 0x80) {
                o[k++] = (char)cp;
            } else if (cp < 0x800) {
                o[k++] = (char)(0xC0 | (cp >> 6));
                o[k++] = (char)(0x80 | (cp & 0x3F));
            } else {
                o[k++] = (char)(0xE0 | (cp >> 12));
                o[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[k++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: o[k++] = '\\'; o[k++] = e; break;
        }
    }
    t->s = o, t->len = k;
    return true;
}

static const char *const OPS[] = {"==", "!=", "<=", ">=", "//", "**", "<", ">", "+", "-", "*", "/", "%",
                                  "~",  "=",  "(",  ")",  "[",  "]",  "{", "}", ",", ":", ".", "|", NULL};

/* Tokens of one tag's inside, from i up to the closing delimiter; returns the
 * offset just past the delimiter (and whether it had "-"), or 0 on failure. */
static size_t lex_tag(parser *p, size_t i, const char *close, bool *trim_after)
{
    const char *s = p->src;
    while (i < p->len) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
            continue;
        }
        if (c == '-' && i + 2 < p->len && strncmp(s + i + 1, close, 2) == 0) {
            *trim_after = true;
            return i + 3;
        }
        if (strncmp(s + i, close, 2) == 0) {
            *trim_after = false;
            return i + 2;
        }
        if (isalpha((unsigned char)c) || c == '_') {
            size_t j = i;
            while (j < p->len && (isalnum((unsigned char)s[j]) || s[j] == '_'))
                j++;
            token *t = push(p, TK_NAME, i);
            if (!t)
                return 0;
            t->s = s + i, t->len = j - i;
            i = j;
            continue;
        }
        if (isdigit((unsigned char)c)) {
            size_t j = i;
            bool flt = false;
            while (j < p->len && (isdigit((unsigned char)s[j]) || s[j] == '_'))
                j++;
            if (j + 1 < p->len && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
                flt = true;
                j++;
                while (j < p->len && isdigit((unsigned char)s[j]))
                    j++;
            }
            if (j < p->len && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < p->len && (s[k] == '+' || s[k] == '-'))
                    k++;
                if (k < p->len && isdigit((unsigned char)s[k])) {
                    flt = true;
                    j = k;
                    while (j < p->len && isdigit((unsigned char)s[j]))
                        j++;
                }
            }
            char buf[64];
            size_t n = 0;
            for (size_t k = i; k < j && n < sizeof buf - 1; k++)
                if (s[k] != '_')
                    buf[n++] = s[k];
            buf[n] = 0;
            token *t = push(p, flt ? TK_FLOAT : TK_INT, i);
            if (!t)
                return 0;
            if (flt)
                t->f = strtod(buf, NULL);
            else
                t->i = strtoll(buf, NULL, 10);
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t j = i + 1;
            while (j < p->len && s[j] != c) {
                if (s[j] == '\\')
                    j++;
                j++;
            }
            if (j >= p->len)
                return fail_off(p, i, "unterminated string literal"), 0;
            token *t = push(p, TK_STRING, i);
            if (!t || !decode_string(p, s + i + 1, j - i - 1, i, t))
                return 0;
            i = j + 1;
            continue;
        }
        bool found = false;
        for (int k = 0; OPS[k]; k++) {
            size_t n = strlen(OPS[k]);
            if (strncmp(s + i, OPS[k], n) == 0) {
                token *t = push(p, TK_OP, i);
                if (!t)
                    return 0;
                t->s = OPS[k], t->len = n;
                i += n;
                found = true;
                break;
            }
        }
        if (!found)
            return fail_off(p, i, "unexpected character in a tag"), 0;
    }
    return fail_off(p, i, "tag not closed"), 0;
}

/* Is [s, s+n) of a block tag "raw"? (the tag's name after "{%" and "-"/"+") */
static bool tag_is(const char *s, size_t len, size_t i, const char *name)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    size_t n = strlen(name);
    return i + n <= len && strncmp(s + i, name, n) == 0 && (i + n == len || !isalnum((unsigned char)s[i + n]));
}

static bool lex(parser *p)
{
    const char *s = p->src;
    size_t i = 0;
    bool trim_next = false, newline_next = false;
    while (i <= p->len) {
        /* the text up to the next tag */
        size_t j = i;
        while (j + 1 < p->len && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')))
            j++;
        if (j + 1 >= p->len)
            j = p->len;
        size_t t0 = i, t1 = j;
        if (trim_next)
            while (t0 < t1 && isspace((unsigned char)s[t0]))
                t0++;
        else if (newline_next && t0 < t1 && s[t0] == '\n')
            t0++;
        trim_next = newline_next = false;
        if (j < p->len) {
            char kind = s[j + 1];
            char mod = j + 2 < p->len ? s[j + 2] : 0;
            if (mod == '-') {
                while (t1 > t0 && isspace((unsigned char)s[t1 - 1]))
                    t1--;
            } else if (kind != '{' && mod != '+') { /* lstrip_blocks: blanks from the line's start */
                size_t k = t1;
                while (k > t0 && (s[k - 1] == ' ' || s[k - 1] == '\t'))
                    k--;
                if (k == 0 || s[k - 1] == '\n')
                    t1 = k;
            }
        }
        if (t1 > t0) {
            token *t = push(p, TK_TEXT, t0);
            if (!t)
                return false;
            t->s = s + t0, t->len = t1 - t0;
        }
        if (j >= p->len)
            break;
        char kind = s[j + 1];
        size_t k = j + 2;
        if (k < p->len && (s[k] == '-' || s[k] == '+'))
            k++;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t m = k; m + 1 < p->len; m++)
                if (s[m] == '#' && s[m + 1] == '}') {
                    e = s + m;
                    break;
                }
            if (!e)
                return fail_off(p, j, "comment not closed");
            trim_next = e > s + k && e[-1] == '-';
            newline_next = !trim_next;
            i = (size_t)(e - s) + 2;
            continue;
        }
        if (kind == '%' && tag_is(s, p->len, k, "raw")) {
            size_t m = k;
            while (m + 1 < p->len && !(s[m] == '%' && s[m + 1] == '}'))
                m++;
            bool trim_in = m > 0 && s[m - 1] == '-';
            size_t body = m + 2;
            if (!trim_in && body < p->len && s[body] == '\n')
                body++;
            size_t e = body;
            for (;; e++) {
                if (e + 1 >= p->len)
                    return fail_off(p, j, "raw block not closed");
                if (s[e] == '{' && s[e + 1] == '%') {
                    size_t q = e + 2;
                    if (q < p->len && (s[q] == '-' || s[q] == '+'))
                        q++;
                    if (tag_is(s, p->len, q, "endraw"))
                        break;
                }
            }
            size_t b0 = body, b1 = e;
            if (trim_in)
                while (b0 < b1 && isspace((unsigned char)s[b0]))
                    b0++;
            if (e + 2 < p->len && s[e + 2] == '-')
                while (b1 > b0 && isspace((unsigned char)s[b1 - 1]))
                    b1--;
            if (b1 > b0) {
                token *t = push(p, TK_TEXT, b0);
                if (!t)
                    return false;
                t->s = s + b0, t->len = b1 - b0;
            }
            size_t m2 = e + 2;
            while (m2 + 1 < p->len && !(s[m2] == '%' && s[m2 + 1] == '}'))
                m2++;
            if (m2 + 1 >= p->len)
                return fail_off(p, e, "endraw not closed");
            trim_next = s[m2 - 1] == '-';
            newline_next = !trim_next;
            i = m2 + 2;
            continue;
        }
        if (!push(p, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, j))
            return false;
        bool trim_after = false;
        size_t after = lex_tag(p, k, kind == '{' ? "}}" : "%}", &trim_after);
        if (!after)
            return false;
        if (!push(p, kind == '{' ? TK_VAR_END : TK_BLOCK_END, after - 2))
            return false;
        trim_next = trim_after;
        newline_next = !trim_after && kind == '%';
        i = after;
    }
    return push(p, TK_EOF, p->len) != NULL;
}

/* ------------------------------------------------------------------ parser */

static token *cur(parser *p) { return &p->tk[p->pos]; }
static token *next_tk(parser *p) { return &p->tk[p->pos < p->n_tk - 1 ? p->pos++ : p->pos]; }

static bool is_op(parser *p, const char *op)
{
    token *t = cur(p);
    return t->kind == TK_OP && strcmp(t->s, op) == 0;
}

static bool is_name(parser *p, const char *name)
{
    token *t = cur(p);
    return t->kind == TK_NAME && t->len == strlen(name) && strncmp(t->s, name, t->len) == 0;
}

static bool is_name_at(parser *p, size_t k, const char *name)
{
    if (p->pos + k >= p->n_tk)
        return false;
    token *t = &p->tk[p->pos + k];
    return t->kind == TK_NAME && t->len == strlen(name) && strncmp(t->s, name, t->len) == 0;
}

static bool fail_tk(parser *p, const char *what)
{
    return fail_at(p, cur(p)->line, cur(p)->col, what);
}

static bool expect_op(parser *p, const char *op)
{
    if (!is_op(p, op)) {
        char m[64];
        snprintf(m, sizeof m, "expected '%s'", op);
        return fail_tk(p, m);
    }
    next_tk(p);
    return true;
}

static jnode *node(parser *p, jnode_kind k)
{
    jnode *n = ja_alloc(p->a, sizeof *n);
    if (!n) {
        fail_tk(p, "out of memory");
        return NULL;
    }
    n->kind = k;
    n->line = cur(p)->line, n->col = cur(p)->col;
    return n;
}

static bool add_kid(parser *p, jnode *n, jnode *kid)
{
    jnode **k = ja_alloc(p->a, (size_t)(n->n_kids + 1) * sizeof *k);
    if (!k)
        return fail_tk(p, "out of memory");
    if (n->n_kids)
        memcpy(k, n->kids, (size_t)n->n_kids * sizeof *k);
    k[n->n_kids++] = kid;
    n->kids = k;
    return true;
}

static bool add_kw(parser *p, jnode *n, const char *name, jnode *v)
{
    const char **kw = ja_alloc(p->a, (size_t)(n->n_kw + 1) * sizeof *kw);
    jnode **kv = ja_alloc(p->a, (size_t)(n->n_kw + 1) * sizeof *kv);
    if (!kw || !kv)
        return fail_tk(p, "out of memory");
    if (n->n_kw) {
        memcpy(kw, n->kw, (size_t)n->n_kw * sizeof *kw);
        memcpy(kv, n->kwv, (size_t)n->n_kw * sizeof *kv);
    }
    kw[n->n_kw] = name;
    kv[n->n_kw++] = v;
    n->kw = kw, n->kwv = kv;
    return true;
}

static char *name_dup(parser *p, const token *t) { return ja_strndup(p->a, t->s, t->len); }

static jnode *expr(parser *p);
static jnode *expr_noif(parser *p);

/* Call arguments after "(": positional into kids, keywords into kw/kwv. */
static bool call_args(parser *p, jnode *n)
{
    while (!is_op(p, ")")) {
        if (p->failed)
            return false;
        if (cur(p)->kind == TK_NAME && p->pos + 1 < p->n_tk && p->tk[p->pos + 1].kind == TK_OP &&
            strcmp(p->tk[p->pos + 1].s, "=") == 0) {
            char *k = name_dup(p, next_tk(p));
            next_tk(p);
            jnode *v = expr(p);
            if (!k || !v || !add_kw(p, n, k, v))
                return false;
        } else {
            jnode *v = expr(p);
            if (!v || !add_kid(p, n, v))
                return false;
        }
        if (!is_op(p, ","))
            break;
        next_tk(p);
    }
    return expect_op(p, ")");
}

static jnode *primary(parser *p)
{
    token *t = cur(p);
    jnode *n;
    if (t->kind == TK_STRING) {
        /* adjacent literals concatenate, as in Python */
        size_t total = 0, k = p->pos;
        while (k < p->n_tk && p->tk[k].kind == TK_STRING)
            total += p->tk[k++].len;
        char *s = ja_alloc(p->a, total + 1);
        if (!(n = node(p, JN_LIT)) || !s)
            return NULL;
        size_t o = 0;
        while (cur(p)->kind == TK_STRING) {
            memcpy(s + o, cur(p)->s, cur(p)->len);
            o += cur(p)->len;
            next_tk(p);
        }
        n->lit = jv_str(s, total);
        return n;
    }
    if (t->kind == TK_INT || t->kind == TK_FLOAT) {
        if (!(n = node(p, JN_LIT)))
            return NULL;
        n->lit = t->kind == TK_INT ? jv_int(t->i) : jv_float(t->f);
        next_tk(p);
        return n;
    }
    if (t->kind == TK_NAME) {
        if (!(n = node(p, JN_LIT)))
            return NULL;
        if (is_name(p, "true") || is_name(p, "True"))
            n->lit = jv_bool(true);
        else if (is_name(p, "false") || is_name(p, "False"))
            n->lit = jv_bool(false);
        else if (is_name(p, "none") || is_name(p, "None"))
            n->lit = jv_none();
        else {
            n->kind = JN_NAME;
            n->name = name_dup(p, t);
            n->name_len = t->len;
        }
        next_tk(p);
        return n;
    }
    if (is_op(p, "(")) {
        next_tk(p);
        if (is_op(p, ")")) {
            next_tk(p);
            return node(p, JN_TUPLE);
        }
        jnode *e = expr(p);
        if (!e)
            return NULL;
        if (is_op(p, ",")) {
            jnode *tup = node(p, JN_TUPLE);
            if (!tup || !add_kid(p, tup, e))
                return NULL;
            while (is_op(p, ",")) {
                next_tk(p);
                if (is_op(p, ")"))
                    break;
                jnode *x = expr(p);
                if (!x || !add_kid(p, tup, x))
                    return NULL;
            }
            e = tup;
        }
        return expect_op(p, ")") ? e : NULL;
    }
    if (is_op(p, "[")) {
        next_tk(p);
        if (!(n = node(p, JN_LIST)))
            return NULL;
        while (!is_op(p, "]")) {
            jnode *x = expr(p);
            if (!x || !add_kid(p, n, x))
                return NULL;
            if (!is_op(p, ","))
                break;
            next_tk(p);
        }
        return expect_op(p, "]") ? n : NULL;
    }
    if (is_op(p, "{")) {
        next_tk(p);
        if (!(n = node(p, JN_DICT)))
            return NULL;
        while (!is_op(p, "}")) {
            jnode *k = expr(p);
            if (!k || !expect_op(p, ":"))
                return NULL;
            jnode *v = expr(p);
            if (!v || !add_kid(p, n, k) || !add_kid(p, n, v))
                return NULL;
            if (!is_op(p, ","))
                break;
            next_tk(p);
        }
        return expect_op(p, "}") ? n : NULL;
    }
    fail_tk(p, "unexpected token in an expression");
    return NULL;
}

static jnode *postfix(parser *p, jnode *n)
{
    while (n && !p->failed) {
        if (is_op(p, ".")) {
            next_tk(p);
            token *t = cur(p);
            jnode *a = node(p, JN_ATTR);
            if (!a)
                return NULL;
            if (t->kind == TK_NAME) {
                a->name = name_dup(p, t);
                a->name_len = t->len;
            } else if (t->kind == TK_INT) { /* x.0 is x[0] */
                a->kind = JN_ITEM;
                jnode *l = node(p, JN_LIT);
                if (!l)
                    return NULL;
                l->lit = jv_int(t->i);
                a->b = l;
            } else {
                fail_tk(p, "expected an attribute name after '.'");
                return NULL;
            }
            next_tk(p);
            a->a = n;
            n = a;
        } else if (is_op(p, "[")) {
            next_tk(p);
            jnode *lo = NULL, *hi = NULL, *st = NULL;
            bool slice = false;
            if (!is_op(p, ":"))
                if (!(lo = expr(p)))
                    return NULL;
            if (is_op(p, ":")) {
                slice = true;
                next_tk(p);
                if (!is_op(p, "]") && !is_op(p, ":"))
                    if (!(hi = expr(p)))
                        return NULL;
                if (is_op(p, ":")) {
                    next_tk(p);
                    if (!is_op(p, "]"))
                        if (!(st = expr(p)))
                            return NULL;
                }
            }
            if (!expect_op(p, "]"))
                return NULL;
            jnode *it = node(p, slice ? JN_SLICE : JN_ITEM);
            if (!it)
                return NULL;
            it->a = n, it->b = lo, it->c = hi, it->d = st;
            n = it;
        } else if (is_op(p, "(")) {
            next_tk(p);
            jnode *c = node(p, JN_CALL);
            if (!c)
                return NULL;
            c->a = n;
            if (!call_args(p, c))
                return NULL;
            n = c;
        } else {
            break;
        }
    }
    return n;
}

/* name[(args)] of a filter or test after "|" or "is" */
static jnode *filter_or_test(parser *p, jnode_kind kind, jnode *operand, bool allow_bare_arg)
{
    token *t = cur(p);
    if (t->kind != TK_NAME) {
        fail_tk(p, kind == JN_FILTER ? "expected a filter name" : "expected a test name");
        return NULL;
    }
    jnode *f = node(p, kind);
    if (!f)
        return NULL;
    /* dotted names (filters never are, but keep the error clear) */
    f->name = name_dup(p, t);
    f->name_len = t->len;
    next_tk(p);
    f->a = operand;
    if (is_op(p, "(")) {
        next_tk(p);
        if (!call_args(p, f))
            return NULL;
    } else if (allow_bare_arg && (cur(p)->kind == TK_STRING || cur(p)->kind == TK_INT ||
                                  cur(p)->kind == TK_FLOAT ||
                                  (cur(p)->kind == TK_NAME && !is_name(p, "and") && !is_name(p, "or") &&
                                   !is_name(p, "else") && !is_name(p, "if") && !is_name(p, "in") &&
                                   !is_name(p, "is") && !is_name(p, "not")))) {
        jnode *arg = postfix(p, primary(p)); /* "is divisibleby 3", "is equalto x" */
        if (!arg || !add_kid(p, f, arg))
            return NULL;
    }
    return f;
}

static jnode *filters(parser *p, jnode *n)
{
    while (n && is_op(p, "|")) {
        next_tk(p);
        n = filter_or_test(p, JN_FILTER, n, false);
    }
    return n;
}

static jnode *unary(parser *p)
{
    if (++p->depth > 200) {
        fail_tk(p, "expression nested too deeply");
        return NULL;
    }
    jnode *n;
    if (is_op(p, "-") || is_op(p, "+")) {
        const char *op = cur(p)->s;
        next_tk(p);
        n = node(p, JN_UNARY);
        if (n) {
            n->name = op;
            n->a = unary(p);
            if (!n->a)
                n = NULL;
        }
    } else {
        n = filters(p, postfix(p, primary(p)));
    }
    p->depth--;
    return n;
}

static jnode *binary(parser *p, jnode *l, const char *op, jnode *(*rhs)(parser *))
{
    jnode *n = node(p, JN_BINARY);
    if (!n)
        return NULL;
    n->name = op;
    n->a = l;
    n->b = rhs(p);
    return n->b ? n : NULL;
}

static jnode *power(parser *p)
{
    jnode *n = unary(p);
    while (n && is_op(p, "**")) {
        next_tk(p);
        n = binary(p, n, "**", unary);
    }
    return n;
}

static jnode *math2(parser *p)
{
    jnode *n = power(p);
    while (n && (is_op(p, "*") || is_op(p, "/") || is_op(p, "//") || is_op(p, "%"))) {
        const char *op = next_tk(p)->s;
        n = binary(p, n, op, power);
    }
    return n;
}

static jnode *concat(parser *p)
{
    jnode *n = math2(p);
    while (n && is_op(p, "~")) {
        next_tk(p);
        n = binary(p, n, "~", math2);
    }
    return n;
}

static jnode *math1(parser *p)
{
    jnode *n = concat(p);
    while (n && (is_op(p, "+") || is_op(p, "-"))) {
        const char *op = next_tk(p)->s;
        n = binary(p, n, op, concat);
    }
    return n;
}

static jnode *compare(parser *p)
{
    jnode *n = math1(p);
    while (n && !p->failed) {
        if (is_op(p, "==") || is_op(p, "!=") || is_op(p, "<") || is_op(p, "<=") || is_op(p, ">") || is_op(p, ">=")) {
            const char *op = next_tk(p)->s;
            n = binary(p, n, op, math1);
        } else if (is_name(p, "in")) {
            next_tk(p);
            n = binary(p, n, "in", math1);
        } else if (is_name(p, "not") && is_name_at(p, 1, "in")) {
            next_tk(p), next_tk(p);
            n = binary(p, n, "not in", math1);
        } else if (is_name(p, "is")) {
            next_tk(p);
            bool neg = false;
            if (is_name(p, "not")) {
                neg = true;
                next_tk(p);
            }
            n = filter_or_test(p, JN_TEST, n, true);
            if (n)
                n->negate = neg;
        } else {
            break;
        }
    }
    return n;
}

static jnode *not_expr(parser *p)
{
    if (is_name(p, "not")) {
        next_tk(p);
        jnode *n = node(p, JN_NOT);
        if (!n)
            return NULL;
        n->a = not_expr(p);
        return n->a ? n : NULL;
    }
    return compare(p);
}

static jnode *and_expr(parser *p)
{
    jnode *n = not_expr(p);
    while (n && is_name(p, "and")) {
        next_tk(p);
        jnode *a = node(p, JN_AND);
        if (!a)
            return NULL;
        a->a = n;
        a->b = not_expr(p);
        n = a->b ? a : NULL;
    }
    return n;
}

static jnode *expr_noif(parser *p)
{
    jnode *n = and_expr(p);
    while (n && is_name(p, "or")) {
        next_tk(p);
        jnode *o = node(p, JN_OR);
        if (!o)
            return NULL;
        o->a = n;
        o->b = and_expr(p);
        n = o->b ? o : NULL;
    }
    return n;
}

static jnode *expr(parser *p)
{
    jnode *n = expr_noif(p);
    while (n && is_name(p, "if")) {
        next_tk(p);
        jnode *c = node(p, JN_COND);
        if (!c)
            return NULL;
        c->b = n;
        if (!(c->a = expr_noif(p)))
            return NULL;
        if (is_name(p, "else")) {
            next_tk(p);
            if (!(c->c = expr(p)))
                return NULL;
        }
        n = c;
    }
    return n;
}

/* An assignment or loop target: a name, a.b, or a tuple of names. */
static jnode *target(parser *p)
{
    jnode *first = NULL, *tup = NULL;
    for (;;) {
        token *t = cur(p);
        if (t->kind != TK_NAME) {
            fail_tk(p, "expected a name");
            return NULL;
        }
        jnode *n = node(p, JN_NAME);
        if (!n)
            return NULL;
        n->name = name_dup(p, t);
        n->name_len = t->len;
        next_tk(p);
        if (is_op(p, ".")) {
            next_tk(p);
            if (cur(p)->kind != TK_NAME) {
                fail_tk(p, "expected an attribute name");
                return NULL;
            }
            jnode *a = node(p, JN_ATTR);
            if (!a)
                return NULL;
            a->a = n;
            a->name = name_dup(p, cur(p));
            a->name_len = cur(p)->len;
            next_tk(p);
            n = a;
        }
        if (!first) {
            first = n;
        } else {
            if (!tup) {
                if (!(tup = node(p, JN_TUPLE)) || !add_kid(p, tup, first))
                    return NULL;
            }
            if (!add_kid(p, tup, n))
                return NULL;
        }
        if (!is_op(p, ","))
            break;
        next_tk(p);
    }
    return tup ? tup : first;
}

static jnode *body(parser *p, const char *const *ends);

static bool block_end(parser *p)
{
    if (cur(p)->kind != TK_BLOCK_END)
        return fail_tk(p, "expected the end of the tag");
    next_tk(p);
    return true;
}

static jnode *stmt_if(parser *p)
{
    jnode *n = node(p, JN_IF);
    if (!n || !(n->a = expr(p)) || !block_end(p))
        return NULL;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    if (!(n->b = body(p, ends)))
        return NULL;
    if (is_name(p, "elif")) {
        next_tk(p);
        jnode *b = node(p, JN_BODY), *e = stmt_if(p);
        if (!b || !e || !add_kid(p, b, e))
            return NULL;
        n->c = b;
        return n; /* the nested if consumed endif */
    }
    if (is_name(p, "else")) {
        next_tk(p);
        static const char *const ends2[] = {"endif", NULL};
        if (!block_end(p) || !(n->c = body(p, ends2)))
            return NULL;
    }
    if (!is_name(p, "endif")) {
        fail_tk(p, "expected endif");
        return NULL;
    }
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *stmt_for(parser *p)
{
    jnode *n = node(p, JN_FOR);
    if (!n || !(n->a = target(p)))
        return NULL;
    if (!is_name(p, "in")) {
        fail_tk(p, "expected 'in'");
        return NULL;
    }
    next_tk(p);
    if (!(n->b = expr_noif(p)))
        return NULL;
    if (is_name(p, "if")) {
        next_tk(p);
        if (!(n->e = expr_noif(p)))
            return NULL;
    }
    if (is_name(p, "recursive")) {
        fail_tk(p, "recursive loops are not supported");
        return NULL;
    }
    if (!block_end(p))
        return NULL;
    static const char *const ends[] = {"else", "endfor", NULL};
    if (!(n->c = body(p, ends)))
        return NULL;
    if (is_name(p, "else")) {
        next_tk(p);
        static const char *const ends2[] = {"endfor", NULL};
        if (!block_end(p) || !(n->d = body(p, ends2)))
            return NULL;
    }
    if (!is_name(p, "endfor")) {
        fail_tk(p, "expected endfor");
        return NULL;
    }
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *stmt_set(parser *p)
{
    jnode *n = node(p, JN_SET);
    if (!n || !(n->a = target(p)))
        return NULL;
    if (cur(p)->kind == TK_BLOCK_END || is_op(p, "|")) {
        n->kind = JN_SET_BLOCK;
        jnode *filt = NULL;
        if (is_op(p, "|")) { /* {% set x | filter %}: applied to the body */
            filt = filters(p, node(p, JN_LIT));
            if (!filt)
                return NULL;
        }
        static const char *const ends[] = {"endset", NULL};
        if (!block_end(p) || !(n->b = body(p, ends)))
            return NULL;
        n->c = filt;
        next_tk(p);
        return block_end(p) ? n : NULL;
    }
    if (!expect_op(p, "="))
        return NULL;
    jnode *v = expr(p);
    if (!v)
        return NULL;
    if (is_op(p, ",")) { /* set a, b = 1, 2 */
        jnode *tup = node(p, JN_TUPLE);
        if (!tup || !add_kid(p, tup, v))
            return NULL;
        while (is_op(p, ",")) {
            next_tk(p);
            jnode *x = expr(p);
            if (!x || !add_kid(p, tup, x))
                return NULL;
        }
        v = tup;
    }
    n->b = v;
    return block_end(p) ? n : NULL;
}

static jnode *stmt_macro(parser *p)
{
    jnode *n = node(p, JN_MACRO);
    if (!n)
        return NULL;
    if (cur(p)->kind != TK_NAME) {
        fail_tk(p, "expected a macro name");
        return NULL;
    }
    n->name = name_dup(p, cur(p));
    n->name_len = cur(p)->len;
    next_tk(p);
    if (!expect_op(p, "("))
        return NULL;
    while (!is_op(p, ")")) {
        if (cur(p)->kind != TK_NAME) {
            fail_tk(p, "expected a parameter name");
            return NULL;
        }
        char *pn = name_dup(p, cur(p));
        next_tk(p);
        jnode *def = NULL;
        if (is_op(p, "=")) {
            next_tk(p);
            if (!(def = expr(p)))
                return NULL;
        }
        if (!pn || !add_kw(p, n, pn, def))
            return NULL;
        if (!is_op(p, ","))
            break;
        next_tk(p);
    }
    if (!expect_op(p, ")") || !block_end(p))
        return NULL;
    static const char *const ends[] = {"endmacro", NULL};
    if (!(n->a = body(p, ends)))
        return NULL;
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *stmt_call(parser *p)
{
    jnode *n = node(p, JN_CALL_BLOCK);
    if (!n || !(n->a = expr(p)) || !block_end(p))
        return NULL;
    if (n->a->kind != JN_CALL) {
        fail_tk(p, "call block needs a macro call");
        return NULL;
    }
    static const char *const ends[] = {"endcall", NULL};
    if (!(n->b = body(p, ends)))
        return NULL;
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *stmt_with(parser *p)
{
    jnode *n = node(p, JN_WITH);
    if (!n)
        return NULL;
    while (cur(p)->kind == TK_NAME) {
        char *name = name_dup(p, cur(p));
        next_tk(p);
        if (!expect_op(p, "="))
            return NULL;
        jnode *v = expr(p);
        if (!name || !v || !add_kw(p, n, name, v))
            return NULL;
        if (!is_op(p, ","))
            break;
        next_tk(p);
    }
    static const char *const ends[] = {"endwith", NULL};
    if (!block_end(p) || !(n->a = body(p, ends)))
        return NULL;
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *stmt_filter(parser *p)
{
    jnode *n = node(p, JN_FILTER_BLOCK);
    jnode *lit = node(p, JN_LIT);
    if (!n || !lit)
        return NULL;
    jnode *f = filter_or_test(p, JN_FILTER, lit, false);
    while (f && is_op(p, "|")) {
        next_tk(p);
        f = filter_or_test(p, JN_FILTER, f, false);
    }
    if (!f)
        return NULL;
    n->c = f;
    static const char *const ends[] = {"endfilter", NULL};
    if (!block_end(p) || !(n->a = body(p, ends)))
        return NULL;
    next_tk(p);
    return block_end(p) ? n : NULL;
}

static jnode *statement(parser *p)
{
    token *t = cur(p);
    if (t->kind != TK_NAME) {
        fail_tk(p, "expected a statement name");
        return NULL;
    }
    if (is_name(p, "if"))
        return next_tk(p), stmt_if(p);
    if (is_name(p, "for"))
        return next_tk(p), stmt_for(p);
    if (is_name(p, "set"))
        return next_tk(p), stmt_set(p);
    if (is_name(p, "macro"))
        return next_tk(p), stmt_macro(p);
    if (is_name(p, "call"))
        return next_tk(p), stmt_call(p);
    if (is_name(p, "with"))
        return next_tk(p), stmt_with(p);
    if (is_name(p, "filter"))
        return next_tk(p), stmt_filter(p);
    if (is_name(p, "break") || is_name(p, "continue")) {
        jnode *n = node(p, is_name(p, "break") ? JN_BREAK : JN_CONTINUE);
        next_tk(p);
        return n && block_end(p) ? n : NULL;
    }
    if (is_name(p, "generation")) { /* transformers' AssistantTracker: the body as is */
        next_tk(p);
        static const char *const ends[] = {"endgeneration", NULL};
        jnode *b;
        if (!block_end(p) || !(b = body(p, ends)))
            return NULL;
        next_tk(p);
        return block_end(p) ? b : NULL;
    }
    char m[96];
    snprintf(m, sizeof m, "unsupported statement '%.*s'", (int)(t->len > 40 ? 40 : t->len), t->s);
    fail_tk(p, m);
    return NULL;
}

/* Statements until a block tag whose name is in ends (left current, after
 * its "{%"), or the end of the template when ends is NULL. */
static jnode *body(parser *p, const char *const *ends)
{
    if (++p->depth > 200) {
        fail_tk(p, "blocks nested too deeply");
        return NULL;
    }
    jnode *b = node(p, JN_BODY);
    while (b && !p->failed) {
        token *t = cur(p);
        if (t->kind == TK_EOF) {
            if (ends) {
                int last = 0;
                while (ends[last + 1])
                    last++;
                char m[64];
                snprintf(m, sizeof m, "missing {%% %s %%}", ends[last]);
                fail_tk(p, m);
                b = NULL;
            }
            break;
        }
        if (t->kind == TK_TEXT) {
            jnode *n = node(p, JN_TEXT);
            if (!n)
                return NULL;
            n->lit = jv_str(t->s, t->len);
            next_tk(p);
            if (!add_kid(p, b, n))
                return NULL;
        } else if (t->kind == TK_VAR_BEGIN) {
            next_tk(p);
            jnode *n = node(p, JN_OUTPUT);
            if (!n || !(n->a = expr(p)))
                return NULL;
            if (cur(p)->kind != TK_VAR_END) {
                fail_tk(p, "expected '}}'");
                return NULL;
            }
            next_tk(p);
            if (!add_kid(p, b, n))
                return NULL;
        } else if (t->kind == TK_BLOCK_BEGIN) {
            next_tk(p);
            if (ends)
                for (int k = 0; ends[k]; k++)
                    if (is_name(p, ends[k])) {
                        p->depth--;
                        return b;
                    }
            jnode *n = statement(p);
            if (!n || !add_kid(p, b, n))
                return NULL;
        } else {
            fail_tk(p, "unexpected token");
            return NULL;
        }
    }
    p->depth--;
    return p->failed ? NULL : b;
}

jtemplate *jinja_parse(const char *src, size_t len, gk_err *err)
{
    jtemplate *t = calloc(1, sizeof *t);
    if (!t) {
        gk_err_set(err, GK_ERR_NOMEM, "out of memory parsing a chat template");
        return NULL;
    }
    if (len > 0 && src[len - 1] == '\n') /* keep_trailing_newline=False */
        len--;
    /* the tree's text points into this copy: the caller's may go */
    char *copy = ja_strndup(&t->arena, src, len);
    if (!copy) {
        jinja_free(t);
        gk_err_set(err, GK_ERR_NOMEM, "out of memory parsing a chat template");
        return NULL;
    }
    parser p = {.a = &t->arena, .src = copy, .len = len, .err = err};
    if (lex(&p)) {
        p.pos = 0;
        t->root = body(&p, NULL);
    }
    free(p.tk);
    if (!t->root || p.failed || t->arena.failed) {
        if (!p.failed)
            gk_err_set(err, GK_ERR_NOMEM, "out of memory parsing a chat template");
        jinja_free(t);
        return NULL;
    }
    return t;
}

void jinja_free(jtemplate *t)
{
    if (!t)
        return;
    ja_free(&t->arena);
    free(t);
}
