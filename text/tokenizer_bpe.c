/* tokenizer_bpe.c - the BPE model of HF `tokenizers` (models/bpe), word by word.
 *
 * A word becomes one symbol per character (or per byte with byte_fallback, or the
 * unknown token, fused or not), then merges are applied lowest rank first with
 * HF's own queue discipline: a min-heap on (rank, position) whose stale entries
 * are recognised by the id the pair would merge into. That detail decides ties
 * when two different pairs merge into the same token, so it is kept as is.
 * ignore_merges (Llama 3) emits a word found whole in the vocabulary directly.
 * A word cache (words under 256 bytes, as HF) skips the merging for repeats.
 * What this file is not: the vocabulary loader (tokenizer_load.c) or the
 * pre-tokenizers that cut words (tokenizer_text.c).
 */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_WORD 256

/* ------------------------------------------------------------- merge table */

bool tk_bpe_merges_init(tk_bpe *m, size_t n)
{
    size_t slots = 16;
    while (slots < n * 2)
        slots *= 2;
    m->merges = malloc(slots * sizeof *m->merges);
    if (!m->merges)
        return false;
    for (size_t i = 0; i < slots; i++)
        m->merges[i].key = UINT64_MAX;
    m->merge_mask = slots - 1;
    return true;
}

static inline size_t merge_slot(uint64_t key, size_t mask)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & mask;
}

/* Later duplicates overwrite earlier ones, as HF's HashMap collect does. The table
 * was sized for every merge, so it never fills. */
void tk_bpe_merge_put(tk_bpe *m, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = merge_slot(key, m->merge_mask);
    while (m->merges[i].key != UINT64_MAX && m->merges[i].key != key)
        i = (i + 1) & m->merge_mask;
    m->merges[i] = (struct tk_merge){.key = key, .rank = rank, .id = id};
}

static inline const struct tk_merge *merge_get(const tk_bpe *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = merge_slot(key, m->merge_mask);
    for (;;) {
        const struct tk_merge *x = &m->merges[i];
        if (x->key == key)
            return x;
        if (x->key == UINT64_MAX)
            return NULL;
        i = (i + 1) & m->merge_mask;
    }
}

void tk_bpe_free(tk_bpe *m)
{
    tk_strtab_free(&m->vocab);
    free(m->merges);
    free(m->unk_token);
    m->merges = NULL;
    m->unk_token = NULL;
}

/* ------------------------------------------------------------- word cache */

tk_cache *tk_cache_new(void)
{
    tk_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->mask = CACHE_SLOTS - 1;
    return c;
}

void tk_cache_free(tk_cache *c)
{
    if (!c)
        return;
    free(c->slots);
    tk_buf_free(&c->keys);
    tk_ivec_free(&c->ids);
    free(c);
}

static struct tk_centry *cache_find(tk_cache *c, const char *w, size_t n, uint64_t h)
{
    size_t i = (size_t)h & c->mask;
    for (;;) {
        struct tk_centry *x = &c->slots[i];
        if (x->klen == 0)
            return x;
        if (x->hash == h && x->klen == n && memcmp(c->keys.p + x->koff, w, n) == 0)
            return x;
        i = (i + 1) & c->mask;
    }
}

static void cache_put(tk_cache *c, const char *w, size_t n, uint64_t h, const int32_t *ids,
                      size_t nids)
{
    if (nids > UINT16_MAX)
        return;
    if (c->count * 2 >= CACHE_SLOTS || c->keys.len > (64u << 20)) { /* full: start over */
        memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots);
        c->count = 0;
        c->keys.len = 0;
        c->ids.len = 0;
    }
    struct tk_centry *x = cache_find(c, w, n, h);
    if (x->klen != 0)
        return;
    size_t koff = c->keys.len, ioff = c->ids.len;
    if (!tk_buf_put(&c->keys, w, n) || !tk_ivec_reserve(&c->ids, nids))
        return; /* a cache miss later costs time, not correctness */
    if (nids) { /* a word of dropped characters has none, and ids may be NULL */
        memcpy(c->ids.p + ioff, ids, nids * sizeof *ids);
        c->ids.len += nids;
    }
    *x = (struct tk_centry){.hash = h, .koff = (uint32_t)koff, .ioff = (uint32_t)ioff,
                            .klen = (uint16_t)n, .nids = (uint16_t)nids};
    c->count++;
}

/* ------------------------------------------------------------ merge queue */

static inline bool heap_less(const struct tk_heap_item *a, const struct tk_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct tk_heap_item *h, size_t *n, struct tk_heap_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static struct tk_heap_item heap_pop(struct tk_heap_item *h, size_t *n)
{
    struct tk_heap_item top = h[0], x = h[--*n];
    size_t i = 0, len = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= len)
            break;
        if (c + 1 < len && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    if (len)
        h[i] = x;
    return top;
}

/* ------------------------------------------------------------------ words */

static bool add_sym(tk_enc *e, size_t *n, int32_t id, uint32_t len)
{
    if (*n == e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap * 2 : 256;
        struct tk_sym *p = realloc(e->sym, cap * sizeof *p);
        if (!p)
            return false;
        e->sym = p;
        e->sym_cap = cap;
    }
    struct tk_sym *s = e->sym;
    if (*n > 0)
        s[*n - 1].next = (int32_t)*n;
    s[*n] = (struct tk_sym){.c = id, .prev = (int32_t)*n - 1, .next = -1, .len = len};
    (*n)++;
    return true;
}

/* HF's Word::merge_all. */
static bool merge_all(tk_enc *e, const tk_bpe *m, size_t nsym)
{
    if (nsym < 2)
        return true;
    /* each merge pushes at most two entries, and there are < nsym merges */
    size_t need = 3 * nsym;
    if (need > e->heap_cap) {
        struct tk_heap_item *p = realloc(e->heap, need * sizeof *p);
        if (!p)
            return false;
        e->heap = p;
        e->heap_cap = need;
    }
    struct tk_sym *s = e->sym;
    struct tk_heap_item *h = e->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < nsym; i++) {
        const struct tk_merge *x = merge_get(m, s[i].c, s[i + 1].c);
        if (x)
            heap_push(h, &nh, (struct tk_heap_item){x->rank, (uint32_t)i, x->id});
    }
    while (nh > 0) {
        struct tk_heap_item top = heap_pop(h, &nh);
        struct tk_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next == -1)
            continue;
        int32_t next_pos = cur->next;
        struct tk_sym right = s[next_pos];
        const struct tk_merge *x = merge_get(m, cur->c, right.c);
        if (!x || x->id != top.id)
            continue; /* stale entry */
        cur->c = top.id;
        cur->len += right.len;
        cur->next = right.next;
        s[next_pos].len = 0;
        if (right.next > -1 && (size_t)right.next < nsym)
            s[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            x = merge_get(m, s[cur->prev].c, cur->c);
            if (x)
                heap_push(h, &nh, (struct tk_heap_item){x->rank, (uint32_t)cur->prev, x->id});
        }
        if (cur->next >= 0 && (size_t)cur->next < nsym) {
            x = merge_get(m, cur->c, s[cur->next].c);
            if (x)
                heap_push(h, &nh, (struct tk_heap_item){x->rank, top.pos, x->id});
        }
    }
    return true;
}

gk_status tk_bpe_word(tk_enc *e, const char *w, size_t n)
{
    const tk_bpe *m = &e->t->bpe;
    tk_ivec *out = e->out;
    if (m->ignore_merges) {
        int32_t id = tk_strtab_get(&m->vocab, w, n);
        if (id >= 0)
            return tk_ivec_push(out, id) ? GK_OK
                                         : gk_err_set(e->err, GK_ERR_NOMEM, "no memory for ids");
    }
    uint64_t h = 0;
    bool cacheable = e->cache && n < CACHE_MAX_WORD;
    if (cacheable) {
        h = tk_hash(w, n);
        struct tk_centry *x = cache_find(e->cache, w, n, h);
        if (x->klen) {
            if (!x->nids)
                return GK_OK;
            if (!tk_ivec_reserve(out, x->nids))
                return gk_err_set(e->err, GK_ERR_NOMEM, "no memory for ids");
            memcpy(out->p + out->len, e->cache->ids.p + x->ioff, x->nids * sizeof(int32_t));
            out->len += x->nids;
            return GK_OK;
        }
    }

    size_t nsym = 0;
    bool have_unk = false;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t cl = tk_utf8_decode(w + i, &cp);
        int32_t id = cp < 2048 ? m->char_id[cp] : tk_strtab_get(&m->vocab, w + i, cl);
        if (id >= 0) {
            if (have_unk && !add_sym(e, &nsym, m->unk_id, unk_len))
                goto nomem;
            have_unk = false;
            if (!add_sym(e, &nsym, id, (uint32_t)cl))
                goto nomem;
            i += cl;
            continue;
        }
        if (m->byte_fallback) {
            size_t b = 0;
            while (b < cl && m->byte_id[(unsigned char)w[i + b]] >= 0)
                b++;
            if (b == cl) { /* HF adds the bytes without flushing a pending unknown */
                for (b = 0; b < cl; b++)
                    if (!add_sym(e, &nsym, m->byte_id[(unsigned char)w[i + b]], 1))
                        goto nomem;
                i += cl;
                continue;
            }
        }
        if (m->unk_token) {
            char q[128];
            if (m->unk_id < 0)
                return gk_err_set(e->err, GK_ERR_FORMAT,
                                  "%s: unk_token '%s' is not in the vocabulary", e->t->path,
                                  gk_quote(q, sizeof q, m->unk_token));
            if (have_unk && m->fuse_unk) {
                unk_len += (uint32_t)cl;
            } else {
                if (have_unk && !add_sym(e, &nsym, m->unk_id, unk_len))
                    goto nomem;
                have_unk = true;
                unk_len = (uint32_t)cl;
            }
        }
        /* no unk_token: HF drops the character */
        i += cl;
    }
    if (have_unk && !add_sym(e, &nsym, m->unk_id, unk_len))
        goto nomem;
    if (!merge_all(e, m, nsym))
        goto nomem;

    size_t start = out->len;
    if (!tk_ivec_reserve(out, nsym))
        goto nomem;
    for (size_t i = 0; i < nsym; i++)
        if (e->sym[i].len)
            out->p[out->len++] = e->sym[i].c;
    if (cacheable) /* out->p is NULL while nothing was ever produced */
        cache_put(e->cache, w, n, h, out->len > start ? out->p + start : NULL, out->len - start);
    return GK_OK;
nomem:
    return gk_err_set(e->err, GK_ERR_NOMEM, "no memory for a word of %zu bytes", n);
}
