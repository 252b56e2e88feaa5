/* tokenizer_util.c - the tokenizer's building blocks: growable buffers, a string ->
 * id hash table, UTF-8 checking and lossy decoding, and split patterns on PCRE2.
 *
 * Patterns: HF `tokenizers` runs every Split / Replace regex through Oniguruma. The
 * patterns real tokenizer.json files use mean the same in PCRE2 (UTF + UCP) except
 * for two classes, which are rewritten before compiling:
 *   - \w: Oniguruma's is Letter | Mark | Decimal_Number | Connector_Punctuation,
 *     PCRE2's is \p{L} | \p{N} | '_'; \w is spelled out as Oniguruma's.
 *   - \s: PCRE2 also counts U+180E (MONGOLIAN VOWEL SEPARATOR, a format character
 *     since Unicode 6.3) as space, Oniguruma does not. A second compiled variant
 *     patches that and is used only on text that holds U+180E, so common text keeps
 *     the plain pattern's speed.
 * Constructs whose meaning differs and that we do not translate (\b, \h, POSIX
 * brackets, nested classes and && inside a class, \W inside a class) are
 * GK_ERR_UNSUPPORTED naming the pattern, never silently different splits.
 * Empty matches follow the onig crate's find_iter: an empty match right after the
 * previous match is skipped by advancing one character. A match that outgrows
 * PCRE2's default JIT stack (a run of 100k spaces does) is retried with a large one,
 * then without JIT: long inputs are slow, never an error.
 * What this file is not: the pipeline (tokenizer_text.c) or the BPE model.
 */
#include "tokenizer_impl.h"

#include "gk_json.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------ byte buffers */

bool tk_buf_reserve(tk_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool tk_buf_put(tk_buf *b, const void *src, size_t n)
{
    if (!tk_buf_reserve(b, n + 1))
        return false;
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

void tk_buf_free(tk_buf *b)
{
    free(b->p);
    *b = (tk_buf){0};
}

bool tk_ivec_reserve(tk_ivec *v, size_t extra)
{
    if (v->len + extra <= v->cap)
        return true;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->len + extra)
        cap *= 2;
    int32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p)
        return false;
    v->p = p;
    v->cap = cap;
    return true;
}

bool tk_ivec_push(tk_ivec *v, int32_t x)
{
    if (v->len == v->cap && !tk_ivec_reserve(v, 1))
        return false;
    v->p[v->len++] = x;
    return true;
}

void tk_ivec_free(tk_ivec *v)
{
    free(v->p);
    *v = (tk_ivec){0};
}

uint64_t tk_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    if (n)
        memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

/* Each NUL-free piece through gk_quote, "\\x00" between them. gk_quote leaves less
 * than 9 bytes when it cuts a piece short (ending it with "..."), so the loop
 * ends there too, without a second "...". */
const char *tk_quote_n(char *buf, size_t cap, const char *s, size_t n)
{
    if (cap == 0)
        return buf;
    size_t k = 0, i = 0;
    buf[0] = '\0';
    for (;;) {
        gk_quote(buf + k, cap - k, s + i);
        k += strlen(buf + k);
        i += strlen(s + i);
        if (i >= n)
            break;
        if (cap - k < 9) { /* no room for "\\x00" and more */
            if (cap - k >= 4 && (k < 3 || memcmp(buf + k - 3, "...", 3)))
                memcpy(buf + k, "...", 4);
            break;
        }
        memcpy(buf + k, "\\x00", 5);
        k += 4;
        i++;
    }
    return buf;
}

/* ------------------------------------------------------------------ JSON */

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Offset of the opening quote of the first object key holding a \u0000 escape,
 * or len when there is none. */
static size_t nul_key_at(const char *s, size_t len)
{
    size_t start = 0;
    bool in_str = false, nul = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_str) {
            if (s[i] == '"') {
                in_str = true;
                nul = false;
                start = i;
            }
        } else if (s[i] == '\\') {
            nul = nul || (len - i >= 6 && !memcmp(s + i, "\\u0000", 6));
            i++;
        } else if (s[i] == '"') {
            in_str = false;
            size_t j = i + 1;
            while (j < len && json_space(s[j]))
                j++;
            if (nul && j < len && s[j] == ':')
                return start;
        }
    }
    return len;
}

gk_status tk_json_load(const char *file, const char *text, size_t len, cJSON **out, gk_err *err)
{
    /* HF reads these files as UTF-8 text (serde_json over a String) and refuses
     * anything else; so does gk, which also lets every string taken from the
     * file be decoded as UTF-8 without bounds checks. */
    size_t valid = tk_utf8_valid_prefix(text, len);
    *out = NULL;
    if (valid != len)
        return gk_err_set(err, GK_ERR_FORMAT, "%s: not UTF-8 text: byte 0x%02x at offset %zu starts no valid UTF-8 "
                          "sequence", file, (unsigned char)text[valid], valid);
    gk_json_error e;
    *out = gk_json_parse(text, len, &e);
    if (*out)
        return GK_OK;
    if (!strcmp(e.why, "out of memory"))
        return gk_err_set(err, GK_ERR_NOMEM, "%s: out of memory", file);
    size_t k = strcmp(e.why, "invalid JSON") ? nul_key_at(text, len) : len;
    if (k < len) { /* the key as written, escapes and all */
        char raw[64], q[128];
        size_t n = 0;
        for (size_t i = k + 1; i < len && text[i] != '"' && n + 1 < sizeof raw; i++) {
            raw[n++] = text[i];
            if (text[i] == '\\' && i + 1 < len && n + 1 < sizeof raw)
                raw[n++] = text[++i];
        }
        raw[n] = '\0';
        return gk_err_set(err, GK_ERR_FORMAT,
                          "%s: the key at byte %zu ('%s') holds a NUL character (\\u0000), "
                          "which is not supported in keys", file, k, gk_quote(q, sizeof q, raw));
    }
    if (!strcmp(e.why, "invalid JSON"))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", file, e.at);
    return gk_err_set(err, GK_ERR_FORMAT, "%s: not valid JSON: %s (near byte %zu)", file, e.why, e.at);
}

/* ------------------------------------------------------ string -> id table */

static bool strtab_alloc(tk_strtab *t, size_t slots)
{
    t->slots = malloc(slots * sizeof *t->slots);
    if (!t->slots)
        return false;
    for (size_t i = 0; i < slots; i++)
        t->slots[i].klen = UINT32_MAX;
    t->mask = slots - 1;
    return true;
}

bool tk_strtab_init(tk_strtab *t, size_t expect)
{
    *t = (tk_strtab){0};
    size_t slots = 16;
    while (slots < expect * 2)
        slots *= 2;
    return strtab_alloc(t, slots);
}

void tk_strtab_free(tk_strtab *t)
{
    free(t->slots);
    tk_buf_free(&t->keys);
    *t = (tk_strtab){0};
}

static size_t strtab_find(const tk_strtab *t, const char *k, size_t n, uint32_t h)
{
    size_t i = h & t->mask;
    for (;;) {
        const struct tk_slot *s = &t->slots[i];
        if (s->klen == UINT32_MAX)
            return i;
        if (s->hash == h && s->klen == n && memcmp(t->keys.p + s->koff, k, n) == 0)
            return i;
        i = (i + 1) & t->mask;
    }
}

int32_t tk_strtab_get(const tk_strtab *t, const char *k, size_t n)
{
    if (!t->slots)
        return -1;
    uint32_t h = (uint32_t)tk_hash(k, n);
    const struct tk_slot *s = &t->slots[strtab_find(t, k, n, h)];
    return s->klen == UINT32_MAX ? -1 : s->val;
}

static bool strtab_grow(tk_strtab *t)
{
    struct tk_slot *old = t->slots;
    size_t old_n = t->mask + 1;
    if (!strtab_alloc(t, old_n * 2)) {
        t->slots = old;
        return false;
    }
    for (size_t i = 0; i < old_n; i++) {
        if (old[i].klen == UINT32_MAX)
            continue;
        size_t j = old[i].hash & t->mask;
        while (t->slots[j].klen != UINT32_MAX)
            j = (j + 1) & t->mask;
        t->slots[j] = old[i];
    }
    free(old);
    return true;
}

bool tk_strtab_put(tk_strtab *t, const char *k, size_t n, int32_t val)
{
    if (n >= UINT32_MAX || t->keys.len + n + 1 >= UINT32_MAX)
        return false;
    if ((t->count + 1) * 2 > t->mask + 1 && !strtab_grow(t))
        return false;
    uint32_t h = (uint32_t)tk_hash(k, n);
    struct tk_slot *s = &t->slots[strtab_find(t, k, n, h)];
    if (s->klen != UINT32_MAX) {
        s->val = val;
        return true;
    }
    uint32_t off = (uint32_t)t->keys.len;
    if (!tk_buf_put(&t->keys, k, n) || !tk_buf_put(&t->keys, "", 1))
        return false;
    *s = (struct tk_slot){.hash = h, .klen = (uint32_t)n, .koff = off, .val = val};
    t->count++;
    return true;
}

/* ----------------------------------------------------------------- UTF-8 */

/* Length of the well-formed sequence at s (n bytes left), or 0 with *bad set to
 * the length of the maximal ill-formed subpart (Unicode 3.9, as Rust's Utf8Chunks). */
static size_t utf8_step(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char b = s[0];
    if (b < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    if (i >= n || s[i] < lo || s[i] > hi) {
        *bad = i;
        return 0;
    }
    for (i = 2; i < need; i++) {
        if (i >= n || s[i] < 0x80 || s[i] > 0xBF) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

size_t tk_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        size_t bad = 0, k = utf8_step(s + i, n - i, &bad);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

size_t tk_utf8_decode(const char *str, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

size_t tk_utf8_encode(uint32_t cp, char *o)
{
    unsigned char *u = (unsigned char *)o;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

bool tk_utf8_lossy(tk_buf *out, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t bad = 0, k = utf8_step(s + i, n - i, &bad);
        if (k) {
            i += k;
            continue;
        }
        if (!tk_buf_put(out, s + run, i - run) || !tk_buf_put(out, "\xEF\xBF\xBD", 3))
            return false;
        i += bad;
        run = i;
    }
    return tk_buf_put(out, s + run, n - run);
}

bool tk_is_white_space(uint32_t cp)
{
    if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85)
        return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

/* --------------------------------------------------------------- patterns */

#define ONIG_WORD "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

/* Index just past the ']' closing the class that opens at re[i]; 0 when the
 * class is unterminated or uses a construct we do not translate (*why set). */
static size_t class_end(const char *re, size_t i, size_t n, bool *has_s, bool *has_S,
                        const char **why)
{
    size_t k = i + 1;
    if (k < n && re[k] == '^')
        k++;
    if (k < n && re[k] == ']')
        k++;
    while (k < n) {
        char c = re[k];
        if (c == ']')
            return k + 1;
        if (c == '\\' && k + 1 < n) {
            char d = re[k + 1];
            if (d == 's')
                *has_s = true;
            else if (d == 'S')
                *has_S = true;
            else if (d == 'W' || d == 'h' || d == 'H') {
                *why = "\\W, \\h or \\H inside a character class";
                return 0;
            }
            k += 2;
            if ((d == 'p' || d == 'P' || d == 'x') && k < n && re[k] == '{') {
                while (k < n && re[k] != '}')
                    k++;
                k++;
            }
            continue;
        }
        if (c == '[') {
            *why = "a nested character class or POSIX bracket";
            return 0;
        }
        if (c == '&' && k + 1 < n && re[k + 1] == '&') {
            *why = "class intersection (&&)";
            return 0;
        }
        k++;
    }
    *why = "an unterminated character class";
    return 0;
}

/* Oniguruma's meaning of pattern re in PCRE2 syntax (see the file comment).
 * fix_space: also take U+180E out of \s. *space_used: the pattern mentions \s/\S. */
static gk_status onig_to_pcre2(const char *re, bool fix_space, tk_buf *out, bool *space_used,
                               const char **why)
{
    size_t n = strlen(re);
    *space_used = false;
    for (size_t i = 0; i < n;) {
        char c = re[i];
        bool ok = true;
        if (c == '\\' && i + 1 < n) {
            char d = re[i + 1];
            if (d == 's' || d == 'S') {
                *space_used = true;
                if (!fix_space)
                    ok = tk_buf_put(out, re + i, 2);
                else if (d == 's')
                    ok = tk_buf_put(out, "(?:(?!\\x{180E})\\s)", 18);
                else
                    ok = tk_buf_put(out, "(?:\\x{180E}|\\S)", 15);
                i += 2;
            } else if (d == 'w') {
                ok = tk_buf_put(out, "[" ONIG_WORD "]", strlen(ONIG_WORD) + 2);
                i += 2;
            } else if (d == 'W') {
                ok = tk_buf_put(out, "[^" ONIG_WORD "]", strlen(ONIG_WORD) + 3);
                i += 2;
            } else if (d == 'b' || d == 'B' || d == 'h' || d == 'H' || d == 'Q' || d == 'X' ||
                       d == 'R' || d == 'K' || d == 'y' || d == 'Y') {
                *why = "\\b, \\h, \\Q, \\X, \\R, \\K or \\y (meaning differs from PCRE2's)";
                return GK_ERR_UNSUPPORTED;
            } else {
                size_t k = i + 2;
                if ((d == 'p' || d == 'P' || d == 'x') && k < n && re[k] == '{') {
                    while (k < n && re[k] != '}')
                        k++;
                    k = k < n ? k + 1 : n;
                }
                ok = tk_buf_put(out, re + i, k - i);
                i = k;
            }
        } else if (c == '[') {
            bool has_s = false, has_S = false;
            size_t j = class_end(re, i, n, &has_s, &has_S, why);
            if (!j)
                return GK_ERR_UNSUPPORTED;
            /* expand \w inside the class */
            tk_buf cls = {0};
            for (size_t k = i; k < j && ok;) {
                if (re[k] == '\\' && k + 1 < j && re[k + 1] == 'w') {
                    ok = tk_buf_put(&cls, ONIG_WORD, strlen(ONIG_WORD));
                    k += 2;
                } else if (re[k] == '\\' && k + 1 < j) {
                    ok = tk_buf_put(&cls, re + k, 2);
                    k += 2;
                } else {
                    ok = tk_buf_put(&cls, re + k, 1);
                    k++;
                }
            }
            bool negated = re[i + 1] == '^';
            if (has_s || has_S)
                *space_used = true;
            if (ok && fix_space && (has_s != has_S)) {
                /* PCRE2's \s holds U+180E, Oniguruma's does not */
                bool pcre_has = negated ? has_S : has_s;
                if (pcre_has)
                    ok = tk_buf_put(out, "(?:(?!\\x{180E})", 15);
                else
                    ok = tk_buf_put(out, "(?:\\x{180E}|", 12);
                ok = ok && tk_buf_put(out, cls.p, cls.len) && tk_buf_put(out, ")", 1);
            } else if (ok) {
                ok = tk_buf_put(out, cls.p, cls.len);
            }
            tk_buf_free(&cls);
            i = j;
        } else {
            ok = tk_buf_put(out, re + i, 1);
            i++;
        }
        if (!ok)
            return GK_ERR_NOMEM;
    }
    return tk_buf_put(out, "", 0) ? GK_OK : GK_ERR_NOMEM;
}

static gk_status compile(const char *src, pcre2_code **out, const char *file, const char *what,
                         const char *re, gk_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    *out = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo,
                         NULL);
    if (!*out) {
        PCRE2_UCHAR msg[160];
        char q[200];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: %s regex '%s' does not compile in PCRE2: %s",
                          file, what, gk_quote(q, sizeof q, re), (const char *)msg);
    }
    /* JIT is a speed-up only; pcre2_match falls back to the interpreter without it */
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return GK_OK;
}

gk_status tk_pattern_regex(tk_pattern *p, const char *re, const char *file, const char *what,
                           gk_err *err)
{
    *p = (tk_pattern){0};
    tk_buf plain = {0}, fixed = {0};
    bool space_used = false;
    const char *why = NULL;
    gk_status st = onig_to_pcre2(re, false, &plain, &space_used, &why);
    if (st == GK_OK && space_used)
        st = onig_to_pcre2(re, true, &fixed, &space_used, &why);
    if (st == GK_ERR_NOMEM) {
        st = gk_err_set(err, st, "%s: no memory for a regex", file);
        goto out;
    }
    if (st != GK_OK) {
        char q[200];
        st = gk_err_set(err, st, "%s: %s regex '%s' uses %s, which is not supported", file, what,
                        gk_quote(q, sizeof q, re), why);
        goto out;
    }
    st = compile(plain.p, &p->re, file, what, re, err);
    if (st == GK_OK && space_used)
        st = compile(fixed.p, &p->re_onig, file, what, re, err);
    if (st != GK_OK)
        tk_pattern_free(p);
out:
    tk_buf_free(&plain);
    tk_buf_free(&fixed);
    return st;
}

gk_status tk_pattern_literal(tk_pattern *p, const char *s, gk_err *err)
{
    *p = (tk_pattern){0};
    p->literal = gk_strdup(s);
    if (!p->literal)
        return gk_err_set(err, GK_ERR_NOMEM, "no memory for a pattern");
    p->lit_len = strlen(s);
    return GK_OK;
}

void tk_pattern_free(tk_pattern *p)
{
    free(p->literal);
    pcre2_code_free(p->re);
    pcre2_code_free(p->re_onig);
    *p = (tk_pattern){0};
}

static bool spans_push(tk_spans *v, size_t start, size_t end, bool match)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        tk_span *p = realloc(v->p, cap * sizeof *p);
        if (!p)
            return false;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->len++] = (tk_span){(uint32_t)start, (uint32_t)end, match};
    return true;
}

bool tk_match_init(tk_match *m)
{
    *m = (tk_match){0};
    m->md = pcre2_match_data_create(1, NULL);
    return m->md != NULL;
}

void tk_match_free(tk_match *m)
{
    pcre2_match_data_free(m->md);
    pcre2_match_context_free(m->mctx);
    pcre2_jit_stack_free(m->stack);
    *m = (tk_match){0};
}

/* pcre2_match, retried with a 1 GiB (virtual) JIT stack, then without JIT and a 1 GiB
 * heap limit, when the default limits are too small for the text. */
static int match(const pcre2_code *re, const char *s, size_t n, size_t from, tk_match *m)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, m->md, m->mctx);
    if (rc != PCRE2_ERROR_JIT_STACKLIMIT && rc != PCRE2_ERROR_HEAPLIMIT)
        return rc;
    if (!m->mctx) {
        m->mctx = pcre2_match_context_create(NULL);
        m->stack = pcre2_jit_stack_create(1 << 20, 1 << 30, NULL);
        if (!m->mctx || !m->stack)
            return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign(m->mctx, NULL, m->stack);
        pcre2_set_heap_limit(m->mctx, 1u << 20); /* KiB */
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, m->md, m->mctx);
    }
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, m->md, m->mctx);
    return rc;
}

gk_status tk_pattern_find(const tk_pattern *p, tk_match *m, const char *s, size_t n,
                          tk_spans *out, gk_err *err)
{
    out->len = 0;
    if (n >= UINT32_MAX)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "text piece of %zu bytes is too long", n);
    if (n == 0)
        return spans_push(out, 0, 0, false) ? GK_OK : gk_err_set(err, GK_ERR_NOMEM, "no memory");
    size_t prev = 0;
    bool ok = true;
    if (p->literal) {
        if (p->lit_len == 0)
            return spans_push(out, 0, n, false) ? GK_OK : gk_err_set(err, GK_ERR_NOMEM, "no memory");
        const char *at = s, *end = s + n;
        while (ok && (at = memmem(at, (size_t)(end - at), p->literal, p->lit_len))) {
            size_t a = (size_t)(at - s);
            if (a != prev)
                ok = spans_push(out, prev, a, false);
            ok = ok && spans_push(out, a, a + p->lit_len, true);
            prev = a + p->lit_len;
            at += p->lit_len;
        }
    } else {
        const pcre2_code *re = p->re;
        if (p->re_onig && memmem(s, n, "\xE1\xA0\x8E", 3))
            re = p->re_onig;
        size_t from = 0;
        bool have_last = false;
        size_t last_end = 0;
        while (ok && from <= n) {
            int rc = match(re, s, n, from, m);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return gk_err_set(err, GK_ERR_INVALID_ARG, "regex match failed at byte %zu: %s",
                                  from, (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
            size_t a = ov[0], b = ov[1];
            if (a == b && have_last && last_end == b) {
                /* onig's find_iter: no empty match right after the last one */
                if (from >= n)
                    break;
                uint32_t cp;
                from += tk_utf8_decode(s + from, &cp);
                continue;
            }
            from = b;
            have_last = true;
            last_end = b;
            if (a != prev)
                ok = spans_push(out, prev, a, false);
            ok = ok && spans_push(out, a, b, true);
            prev = b;
        }
    }
    if (ok && prev != n)
        ok = spans_push(out, prev, n, false);
    return ok ? GK_OK : gk_err_set(err, GK_ERR_NOMEM, "no memory for split positions");
}
