/* safetensors.c - read-only access to safetensors checkpoints: one
 * .safetensors file, or a model.safetensors.index.json and its shards.
 *
 * A file is an 8-byte little-endian header length, a JSON header (tensor name ->
 * {dtype, shape, data_offsets}, plus an optional "__metadata__" of strings) and
 * a data section that the tensors tile exactly. Every rule of the format is
 * checked before anything is handed out; a broken file is a GK_ERR_FORMAT that
 * names the file and tensor, never a crash or a read outside the mapping.
 * Files are mmap'd read-only and tensors are served zero-copy; opening reads the
 * header only and touches no data page. Shards of an index are opened on the
 * first access to one of their tensors (a mutex makes that safe across threads).
 *
 * Not here: writing safetensors, other formats (GGUF, pickle), big-endian hosts,
 * and dtype conversion beyond the two read_* helpers.
 */
#include "gk_internal.h"
#include "safetensors_impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull
#define ST_MAX_EXACT 9007199254740992.0 /* 2^53: JSON numbers beyond are not exact */

typedef unsigned long long ull;

/* One tensor as the checkpoint knows it. For an index, only name and shard are
 * set until the shard's header has been read (known). */
typedef struct st_tensor {
    char *name;
    int shard;
    bool known;
    gk_dtype dtype;
    int n_dims;
    int64_t shape[GK_MAX_DIMS];
    uint64_t n_elem;
    uint64_t begin, end;      /* data_offsets, relative to the shard's data section */
} st_tensor;

/* Tensors in order plus an open-addressing hash of their names. */
typedef struct st_table {
    st_tensor *t;
    size_t n;
    size_t *slots;            /* index + 1; 0 = empty; n_slots is a power of two */
    size_t n_slots;
} st_table;

typedef struct st_meta {
    char **keys, **vals;
    size_t n;
} st_meta;

typedef struct st_shard {
    char *path;
    uint64_t size;
    bool opened;
    void *map;                /* the whole file, PROT_READ, MAP_PRIVATE */
    size_t map_len;
    const uint8_t *data;      /* start of the data section inside map */
} st_shard;

struct gk_safetensors {
    char *path;               /* as given to open */
    st_table tab;
    st_meta meta;
    st_shard *shards;
    size_t n_shards;
    uint64_t file_size;
    pthread_mutex_t lock;     /* guards lazy shard opening */
};

/* ---------------------------------------------------------------- helpers */

static void table_free(st_table *tab)
{
    for (size_t i = 0; i < tab->n; i++)
        free(tab->t[i].name);
    free(tab->t);
    free(tab->slots);
    memset(tab, 0, sizeof *tab);
}

static void meta_free(st_meta *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* A name read from a file, escaped for a message (control characters and
 * quotes), in a buffer of the caller's. */
#define QN 160
#define Q(buf, s) gk_quote((buf), sizeof(buf), (s))

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static st_tensor *table_find(const st_table *tab, const char *name)
{
    if (!tab->n_slots || !name)
        return NULL;
    size_t mask = tab->n_slots - 1;
    for (size_t i = hash_name(name) & mask;; i = (i + 1) & mask) {
        size_t k = tab->slots[i];
        if (!k)
            return NULL;
        if (strcmp(tab->t[k - 1].name, name) == 0)
            return &tab->t[k - 1];
    }
}

/* Index the names of tab->t; a name seen twice is a format error of `path`. */
static gk_status table_hash(st_table *tab, const char *path, gk_err *err)
{
    size_t n_slots = 16;
    while (n_slots < 2 * tab->n)
        n_slots *= 2;
    tab->slots = calloc(n_slots, sizeof *tab->slots);
    if (!tab->slots)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for the name index", path);
    tab->n_slots = n_slots;
    for (size_t k = 0; k < tab->n; k++) {
        size_t i = hash_name(tab->t[k].name) & (n_slots - 1);
        for (; tab->slots[i]; i = (i + 1) & (n_slots - 1)) {
            if (strcmp(tab->t[tab->slots[i] - 1].name, tab->t[k].name) == 0) {
                char q[QN];
                return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s' appears twice",
                                  path, Q(q, tab->t[k].name));
            }
        }
        tab->slots[i] = k + 1;
    }
    return GK_OK;
}

/* A JSON number holding an integer in [0, 2^53), where a double is exact. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d >= ST_MAX_EXACT || d != (double)(uint64_t)d)
        return false;
    *out = (uint64_t)d;
    return true;
}

/* Strict UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* Parse JSON text of n bytes that must be one value followed by whitespace only. */
static cJSON *json_parse_all(const char *text, size_t n)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root)
        return NULL;
    for (const char *p = end; p < text + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

/* What a non-regular file is, for "not a regular file (...)". */
static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a folder" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) || S_ISBLK(m) ? "a device"
                                                                                   : "a socket or other special file";
}

static void format_shape(char *buf, size_t len, const int64_t *shape, int n_dims)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < n_dims && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < len)
        snprintf(buf + k, len - k, "]");
}

/* ------------------------------------------------------- one header entry */

/* Spellings the safetensors format knows but gk does not implement. */
static const char *const unsupported_dtypes[] = {
    "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", "F8_E4M3FNUZ", "F8_E5M2FNUZ", NULL,
};

/* Fill t from the header entry j of file `path` (data section of data_len bytes). */
static gk_status parse_entry(const char *path, const cJSON *j, uint64_t data_len,
                             st_tensor *t, gk_err *err)
{
    char qname[QN];
    const char *name = Q(qname, t->name);
    if (!cJSON_IsObject(j))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                          path, name);

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    if (!cJSON_IsString(jd))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': \"dtype\" missing or not a string",
                          path, name);
    if (!gk_dtype_parse(jd->valuestring, &t->dtype)) {
        for (const char *const *u = unsupported_dtypes; *u; u++) {
            if (strcmp(*u, jd->valuestring) == 0)
                return gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported",
                                  path, name, *u);
        }
        char qd[64];
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'",
                          path, name, Q(qd, jd->valuestring));
    }

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(j, "shape");
    if (!cJSON_IsArray(js))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': \"shape\" missing or not an array",
                          path, name);
    int n_dims = cJSON_GetArraySize(js);
    if (n_dims > GK_MAX_DIMS)
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %d dimensions, at most %d are supported",
                          path, name, n_dims, GK_MAX_DIMS);
    t->n_dims = 0;
    const cJSON *jdim;
    cJSON_ArrayForEach(jdim, js) {
        uint64_t d;
        if (!json_uint(jdim, &d)) {
            if (cJSON_IsNumber(jdim))
                return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': shape[%d] is %.17g, not a non-negative integer",
                                  path, name, t->n_dims, jdim->valuedouble);
            return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a number",
                              path, name, t->n_dims);
        }
        t->shape[t->n_dims++] = (int64_t)d;
    }
    char shape_str[200];
    format_shape(shape_str, sizeof shape_str, t->shape, t->n_dims);
    size_t esize = gk_dtype_size(t->dtype);
    uint64_t n_elem = 1, nbytes;
    for (int i = 0; i < t->n_dims; i++) {
        if (__builtin_mul_overflow(n_elem, (uint64_t)t->shape[i], &n_elem))
            goto overflow;
    }
    if (__builtin_mul_overflow(n_elem, (uint64_t)esize, &nbytes))
        goto overflow;
    t->n_elem = n_elem;

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &begin) ||
        !json_uint(jo->child->next, &end))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end] of non-negative integers",
                          path, name);
    if (begin > end)
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] begin after they end",
                          path, name, (ull)begin, (ull)end);
    if (end > data_len)
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section (%llu bytes)",
                          path, name, (ull)begin, (ull)end, (ull)data_len);
    if (end - begin != nbytes)
        return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
                          path, name, (ull)begin, (ull)end, (ull)(end - begin), shape_str,
                          gk_dtype_name(t->dtype), (ull)nbytes);
    t->begin = begin;
    t->end = end;
    t->known = true;
    return GK_OK;

overflow:
    return gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': shape %s of %s is too large (its byte size overflows 64 bits)",
                      path, name, shape_str, gk_dtype_name(t->dtype));
}

/* ------------------------------------------------------------- one file */

typedef struct st_span {
    uint64_t begin, end;
    size_t i;
} st_span;

static int span_cmp(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors must tile the data section: no overlap, no hole, nothing left over. */
static gk_status check_tiling(const char *path, const st_table *tab, uint64_t data_len,
                              gk_err *err)
{
    st_span *sp = malloc((tab->n ? tab->n : 1) * sizeof *sp);
    if (!sp)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory to check offsets", path);
    for (size_t i = 0; i < tab->n; i++)
        sp[i] = (st_span){tab->t[i].begin, tab->t[i].end, i};
    qsort(sp, tab->n, sizeof *sp, span_cmp);

    gk_status st = GK_OK;
    uint64_t pos = 0;
    for (size_t k = 0; k < tab->n; k++) {
        const st_tensor *t = &tab->t[sp[k].i];
        char qt[QN], qp[QN];
        if (t->begin < pos) {
            const st_tensor *p = &tab->t[sp[k - 1].i];
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' [%llu, %llu]",
                            path, Q(qt, t->name), (ull)t->begin, (ull)t->end, Q(qp, p->name), (ull)p->begin,
                            (ull)p->end);
            goto out;
        }
        if (t->begin > pos) {
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: data bytes [%llu, %llu) before tensor '%s' belong to no tensor",
                            path, (ull)pos, (ull)t->begin, Q(qt, t->name));
            goto out;
        }
        pos = t->end;
    }
    if (pos != data_len)
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: data bytes [%llu, %llu) at the end belong to no tensor",
                        path, (ull)pos, (ull)data_len);
out:
    free(sp);
    return st;
}

static gk_status parse_metadata(const char *path, const cJSON *jm, st_meta *m, gk_err *err)
{
    if (!cJSON_IsObject(jm))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
    size_t n = (size_t)cJSON_GetArraySize(jm);
    m->keys = calloc(n ? n : 1, sizeof *m->keys);
    m->vals = calloc(n ? n : 1, sizeof *m->vals);
    if (!m->keys || !m->vals)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for metadata", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, jm) {
        if (!cJSON_IsString(kv)) {
            char qk[QN];
            return gk_err_set(err, GK_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string",
                              path, Q(qk, kv->string));
        }
        m->keys[m->n] = gk_strdup(kv->string);
        m->vals[m->n] = gk_strdup(kv->valuestring);
        m->n++;
        if (!m->keys[m->n - 1] || !m->vals[m->n - 1])
            return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for metadata", path);
    }
    return GK_OK;
}

/* Read and check the header of `path` into tab (header order) and meta (may be
 * NULL: not wanted), then map the file into sh. On failure nothing is kept. */
static gk_status load_file(const char *path, st_table *tab, st_meta *meta, st_shard *sh,
                           gk_err *err)
{
    gk_status st = GK_OK;
    char *hdr = NULL;
    cJSON *root = NULL;
    st_meta m = {0};
    memset(tab, 0, sizeof *tab);

    /* O_NONBLOCK: a FIFO must not block the open (no effect on regular files) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return gk_err_set(err, GK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = gk_err_set(err, GK_ERR_IO, "%s: not a regular file (%s)", path, file_kind(sb.st_mode));
        goto out_close;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: %llu bytes, too short for a safetensors file (8-byte header length)",
                        path, (ull)size);
        goto out_close;
    }
    uint8_t lenbuf[8];
    if (pread(fd, lenbuf, 8, 0) != 8) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot read the header length", path);
        goto out_close;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenbuf[i];
    if (hlen > ST_MAX_HEADER) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes",
                        path, (ull)hlen, ST_MAX_HEADER);
        goto out_close;
    }
    if (hlen > size - 8) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)",
                        path, (ull)hlen, (ull)size);
        goto out_close;
    }
    uint64_t data_len = size - 8 - hlen;

    hdr = malloc(hlen + 1);
    if (!hdr) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for a %llu-byte header", path, (ull)hlen);
        goto out_close;
    }
    for (size_t got = 0; got < hlen;) {
        ssize_t r = pread(fd, hdr + got, hlen - got, (off_t)(8 + got));
        if (r <= 0) {
            st = gk_err_set(err, GK_ERR_IO, "%s: cannot read the header: %s", path,
                            r < 0 ? strerror(errno) : "short read");
            goto out_free;
        }
        got += (size_t)r;
    }
    hdr[hlen] = '\0';
    if (!utf8_valid((const uint8_t *)hdr, hlen)) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: header is not valid UTF-8", path);
        goto out_free;
    }
    root = json_parse_all(hdr, hlen);
    if (!root) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: header is not valid JSON", path);
        goto out_free;
    }
    if (!cJSON_IsObject(root)) {
        st = gk_err_set(err, GK_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto out_free;
    }

    size_t n_items = (size_t)cJSON_GetArraySize(root);
    tab->t = calloc(n_items ? n_items : 1, sizeof *tab->t);
    if (!tab->t) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for %zu tensors", path, n_items);
        goto out_free;
    }
    bool seen_meta = false;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta) {
                st = gk_err_set(err, GK_ERR_FORMAT, "%s: __metadata__ appears twice", path);
                goto out_free;
            }
            seen_meta = true;
            st = parse_metadata(path, item, &m, err);
            if (st)
                goto out_free;
            continue;
        }
        st_tensor *t = &tab->t[tab->n];
        t->name = gk_strdup(item->string);
        if (!t->name) {
            st = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for tensor names", path);
            goto out_free;
        }
        tab->n++;
        st = parse_entry(path, item, data_len, t, err);
        if (st)
            goto out_free;
    }
    st = table_hash(tab, path, err);
    if (st)
        goto out_free;
    st = check_tiling(path, tab, data_len, err);
    if (st)
        goto out_free;

    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot mmap %llu bytes: %s", path, (ull)size,
                        strerror(errno));
        goto out_free;
    }
    sh->map = map;
    sh->map_len = (size_t)size;
    sh->data = (const uint8_t *)map + 8 + hlen;
    sh->size = size;
    sh->opened = true;
    if (meta)
        *meta = m;
    else
        meta_free(&m);
    m = (st_meta){0};

out_free:
    if (st) {
        table_free(tab);
        meta_free(&m);
    }
    cJSON_Delete(root);
    free(hdr);
out_close:
    close(fd);
    return st;
}

/* ---------------------------------------------------------------- shards */

/* Open shard s of an index: its header must hold every tensor the index maps
 * to it. Tensors of the shard that the index does not map there stay unseen. */
static gk_status open_shard(gk_safetensors *st, size_t s, gk_err *err)
{
    st_shard *sh = &st->shards[s];
    st_table ft;
    gk_status rc = load_file(sh->path, &ft, NULL, sh, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < st->tab.n; i++) {
        const st_tensor *t = &st->tab.t[i];
        if ((size_t)t->shard == s && !table_find(&ft, t->name)) {
            char qs[512], qt[QN];
            rc = gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s' is mapped to this file by %s but the file does not hold it",
                            Q(qs, sh->path), Q(qt, t->name), st->path);
            munmap(sh->map, sh->map_len);
            sh->map = NULL;
            sh->data = NULL;
            sh->opened = false;
            goto out;
        }
    }
    for (size_t i = 0; i < st->tab.n; i++) {
        st_tensor *t = &st->tab.t[i];
        if ((size_t)t->shard != s)
            continue;
        st_tensor *f = table_find(&ft, t->name);
        char *name = t->name;
        *t = *f;
        t->name = name;
        t->shard = (int)s;
    }
out:
    table_free(&ft);
    return rc;
}

/* Look a tensor up, opening its shard if need be. */
static gk_status find_tensor(gk_safetensors *st, const char *name, st_tensor **out,
                             gk_err *err)
{
    *out = NULL;
    if (!st || !name)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "safetensors: NULL checkpoint or tensor name");
    st_tensor *t = table_find(&st->tab, name);
    if (!t) {
        char q[QN];
        return gk_err_set(err, GK_ERR_NOT_FOUND, "%s: no tensor named '%s'", st->path, Q(q, name));
    }
    gk_status rc = GK_OK;
    pthread_mutex_lock(&st->lock);
    if (!st->shards[t->shard].opened)
        rc = open_shard(st, (size_t)t->shard, err);
    pthread_mutex_unlock(&st->lock);
    if (!rc)
        *out = t;
    return rc;
}

/* ----------------------------------------------------------------- index */

/* A shard name must stay inside the model folder: relative, no ".." part. */
static bool shard_name_ok(const char *s)
{
    if (!*s || s[0] == '/')
        return false;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return false;
        if (!q)
            break;
        p = q + 1;
    }
    return true;
}

/* The index's "metadata" (values of any JSON type, kept as text). */
static gk_status index_metadata(const char *path, const cJSON *jm, st_meta *m, gk_err *err)
{
    if (!jm)
        return GK_OK;
    if (!cJSON_IsObject(jm))
        return gk_err_set(err, GK_ERR_FORMAT, "%s: \"metadata\" is not a JSON object", path);
    size_t n = (size_t)cJSON_GetArraySize(jm);
    m->keys = calloc(n ? n : 1, sizeof *m->keys);
    m->vals = calloc(n ? n : 1, sizeof *m->vals);
    if (!m->keys || !m->vals)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for metadata", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, jm) {
        char *text = cJSON_IsString(kv) ? NULL : cJSON_PrintUnformatted(kv);
        m->keys[m->n] = gk_strdup(kv->string);
        m->vals[m->n] = gk_strdup(text ? text : kv->valuestring);
        cJSON_free(text);
        m->n++;
        if (!m->keys[m->n - 1] || !m->vals[m->n - 1])
            return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for metadata", path);
    }
    return GK_OK;
}

/* The distinct shard paths of an index while it is read: an open-addressing
 * hash of st->shards (slots hold index + 1; a power of two, at most half full),
 * so that an index naming many shards is read in linear time. */
typedef struct shard_set {
    size_t *slots;
    size_t n_slots;
    size_t cap;               /* allocated length of st->shards */
} shard_set;

static bool shard_set_grow(shard_set *set, const gk_safetensors *st)
{
    size_t n = set->n_slots ? 2 * set->n_slots : 64;
    size_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    for (size_t s = 0; s < st->n_shards; s++) {
        size_t i = hash_name(st->shards[s].path) & (n - 1);
        while (slots[i])
            i = (i + 1) & (n - 1);
        slots[i] = s + 1;
    }
    free(set->slots);
    set->slots = slots;
    set->n_slots = n;
    return true;
}

/* Find or add the shard file dir/fname; its index goes to *idx. */
static gk_status index_add_shard(gk_safetensors *st, shard_set *set, const char *dir, const char *fname,
                                 int *idx, gk_err *err)
{
    if ((st->n_shards + 1) * 2 > set->n_slots && !shard_set_grow(set, st))
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for shards", st->path);
    char *path = gk_path_join(dir, fname);
    if (!path)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for shards", st->path);
    size_t mask = set->n_slots - 1, i = hash_name(path) & mask;
    for (; set->slots[i]; i = (i + 1) & mask) {
        size_t s = set->slots[i] - 1;
        if (strcmp(st->shards[s].path, path) == 0) {
            free(path);
            *idx = (int)s;
            return GK_OK;
        }
    }
    if (st->n_shards == set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 8;
        st_shard *grown = realloc(st->shards, cap * sizeof *grown);
        if (!grown) {
            free(path);
            return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for shards", st->path);
        }
        st->shards = grown;
        set->cap = cap;
    }
    st->shards[st->n_shards] = (st_shard){.path = path};
    set->slots[i] = st->n_shards + 1;
    *idx = (int)st->n_shards++;
    return GK_OK;
}

/* Read model.safetensors.index.json: names and shards from "weight_map", every
 * shard stat'ed (it must exist) but none opened. */
static gk_status open_index(gk_safetensors *st, gk_err *err)
{
    const char *path = st->path;
    char *text = NULL, *dir = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    shard_set set = {0};
    gk_status rc = gk_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    if (!utf8_valid((const uint8_t *)text, len) || !(root = json_parse_all(text, len))) {
        rc = gk_err_set(err, GK_ERR_FORMAT, "%s: not valid JSON", path);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = gk_err_set(err, GK_ERR_FORMAT, "%s: not a JSON object", path);
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = gk_err_set(err, GK_ERR_FORMAT, "%s: \"weight_map\" missing or not a JSON object", path);
        goto out;
    }
    rc = index_metadata(path, cJSON_GetObjectItemCaseSensitive(root, "metadata"), &st->meta, err);
    if (rc)
        goto out;
    dir = gk_path_dirname(path);
    size_t n = (size_t)cJSON_GetArraySize(wm);
    st->tab.t = calloc(n ? n : 1, sizeof *st->tab.t);
    if (!dir || !st->tab.t) {
        rc = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for %zu tensors", path, n);
        goto out;
    }
    const cJSON *kv;
    cJSON_ArrayForEach(kv, wm) {
        char qt[QN], qs[QN];
        if (!cJSON_IsString(kv)) {
            rc = gk_err_set(err, GK_ERR_FORMAT, "%s: weight_map entry for tensor '%s' is not a file name string",
                            path, Q(qt, kv->string));
            goto out;
        }
        if (!shard_name_ok(kv->valuestring)) {
            rc = gk_err_set(err, GK_ERR_FORMAT, "%s: tensor '%s': shard file '%s' is not a plain name inside the model folder",
                            path, Q(qt, kv->string), Q(qs, kv->valuestring));
            goto out;
        }
        st_tensor *t = &st->tab.t[st->tab.n];
        t->name = gk_strdup(kv->string);
        if (!t->name) {
            rc = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for tensor names", path);
            goto out;
        }
        st->tab.n++;
        rc = index_add_shard(st, &set, dir, kv->valuestring, &t->shard, err);
        if (rc)
            goto out;
    }
    rc = table_hash(&st->tab, path, err);
    if (rc)
        goto out;
    for (size_t s = 0; s < st->n_shards; s++) {
        struct stat sb;
        char qs[512];
        if (stat(st->shards[s].path, &sb) != 0) {
            rc = gk_err_set(err, GK_ERR_IO, "%s: cannot open shard listed in %s: %s",
                            Q(qs, st->shards[s].path), path, strerror(errno));
            goto out;
        }
        if (!S_ISREG(sb.st_mode)) {
            rc = gk_err_set(err, GK_ERR_IO, "%s: shard listed in %s is not a regular file (%s)",
                            Q(qs, st->shards[s].path), path, file_kind(sb.st_mode));
            goto out;
        }
        st->shards[s].size = (uint64_t)sb.st_size;
        st->file_size += (uint64_t)sb.st_size;
    }
out:
    free(set.slots);
    cJSON_Delete(root);
    free(dir);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------- API */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A model folder holds model.safetensors.index.json (sharded) or
 * model.safetensors; either is opened as if named. A name that is there but
 * unusable (a symlink loop or a dangling link, a folder, no permission) is
 * reported as what it is, not skipped. */
static gk_status open_folder(const char *dir, gk_safetensors **out, gk_err *err)
{
    static const char *const names[] = {"model.safetensors.index.json", "model.safetensors"};
    for (size_t i = 0; i < 2; i++) {
        char *p = gk_path_join(dir, names[i]);
        if (!p)
            return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory", dir);
        struct stat sb;
        if (lstat(p, &sb) != 0) {
            int e = errno;
            if (e == ENOENT) {
                free(p);
                continue;
            }
            gk_status rc = gk_err_set(err, GK_ERR_IO, "%s: %s", p, strerror(e));
            free(p);
            return rc;
        }
        gk_status rc;
        if (stat(p, &sb) != 0)
            rc = gk_err_set(err, GK_ERR_IO, "%s: %s", p, strerror(errno));
        else if (S_ISDIR(sb.st_mode))
            rc = gk_err_set(err, GK_ERR_IO, "%s: not a regular file (a folder)", p);
        else
            rc = gk_safetensors_open(p, out, err);
        free(p);
        return rc;
    }
    return gk_err_set(err, GK_ERR_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json in this folder",
                      dir);
}

gk_status gk_safetensors_open(const char *path, gk_safetensors **out, gk_err *err)
{
    if (!out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_safetensors_open: out is NULL");
    *out = NULL;
    if (!path)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_safetensors_open: path is NULL");
    if (gk_path_is_dir(path))
        return open_folder(path, out, err);
    gk_safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: no memory", path);
    pthread_mutex_init(&st->lock, NULL);
    gk_status rc;
    st->path = gk_strdup(path);
    if (!st->path) {
        rc = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory", path);
        goto out_fail;
    }
    if (ends_with(path, ".json")) {
        rc = open_index(st, err);
    } else {
        st->shards = calloc(1, sizeof *st->shards);
        if (!st->shards) {
            rc = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory", path);
            goto out_fail;
        }
        st->n_shards = 1;
        st->shards[0].path = gk_strdup(path);
        if (!st->shards[0].path) {
            rc = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory", path);
            goto out_fail;
        }
        rc = load_file(path, &st->tab, &st->meta, &st->shards[0], err);
        st->file_size = st->shards[0].size;
    }
    if (rc)
        goto out_fail;
    *out = st;
    return GK_OK;

out_fail:
    gk_safetensors_close(st);
    return rc;
}

void gk_safetensors_close(gk_safetensors *st)
{
    if (!st)
        return;
    for (size_t s = 0; s < st->n_shards; s++) {
        if (st->shards[s].map)
            munmap(st->shards[s].map, st->shards[s].map_len);
        free(st->shards[s].path);
    }
    free(st->shards);
    table_free(&st->tab);
    meta_free(&st->meta);
    pthread_mutex_destroy(&st->lock);
    free(st->path);
    free(st);
}

size_t gk_safetensors_count(const gk_safetensors *st)
{
    return st ? st->tab.n : 0;
}

const char *gk_safetensors_name(const gk_safetensors *st, size_t i)
{
    return st && i < st->tab.n ? st->tab.t[i].name : NULL;
}

uint64_t gk_safetensors_file_size(const gk_safetensors *st)
{
    return st ? st->file_size : 0;
}

size_t gk_safetensors_shard_count(const gk_safetensors *st)
{
    return st ? st->n_shards : 0;
}

bool gk_safetensors_has(const gk_safetensors *st, const char *name)
{
    return st && table_find(&st->tab, name) != NULL;
}

gk_status gk_safetensors_info(gk_safetensors *st, const char *name, gk_tensor_info *out,
                              gk_err *err)
{
    st_tensor *t;
    gk_status rc = find_tensor(st, name, &t, err);
    if (rc)
        return rc;
    if (out) {
        memset(out, 0, sizeof *out);
        out->name = t->name;
        out->dtype = t->dtype;
        out->n_dims = t->n_dims;
        memcpy(out->shape, t->shape, sizeof t->shape);
        out->nbytes = t->end - t->begin;
        out->shard = t->shard;
    }
    return GK_OK;
}

gk_status gk_safetensors_bytes(gk_safetensors *st, const char *name, const void **data,
                               uint64_t *nbytes, gk_err *err)
{
    st_tensor *t;
    gk_status rc = find_tensor(st, name, &t, err);
    if (rc)
        return rc;
    if (data)
        *data = st->shards[t->shard].data + t->begin;
    if (nbytes)
        *nbytes = t->end - t->begin;
    return GK_OK;
}

/* The tensor and its bytes, checking that dst holds exactly its elements. */
static gk_status read_prep(gk_safetensors *st, const char *name, const void *dst,
                           size_t count, st_tensor **t, const uint8_t **src, gk_err *err)
{
    gk_status rc = find_tensor(st, name, t, err);
    if (rc)
        return rc;
    char q[QN];
    if ((*t)->n_elem != (uint64_t)count)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "%s: tensor '%s' has %llu elements, the buffer holds %zu",
                          st->path, Q(q, name), (ull)(*t)->n_elem, count);
    if (!dst && count)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "%s: tensor '%s': destination is NULL",
                          st->path, Q(q, name));
    *src = st->shards[(*t)->shard].data + (*t)->begin;
    return GK_OK;
}

gk_status gk_safetensors_read_f32(gk_safetensors *st, const char *name, float *dst,
                                  size_t count, gk_err *err)
{
    st_tensor *t;
    const uint8_t *p;
    gk_status rc = read_prep(st, name, dst, count, &t, &p, err);
    if (rc)
        return rc;
    /* The data may sit at any alignment: every load goes through memcpy. */
    switch (t->dtype) {
    case GK_DTYPE_F32:
        if (count)
            memcpy(dst, p, count * sizeof(float));
        break;
    case GK_DTYPE_F16:
    case GK_DTYPE_BF16:
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == GK_DTYPE_F16 ? gk_f16_to_f32(h) : gk_bf16_to_f32(h);
        }
        break;
    case GK_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case GK_DTYPE_I64:
        for (size_t i = 0; i < count; i++) {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case GK_DTYPE_I32:
        for (size_t i = 0; i < count; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    default: {
        char q[QN];
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: tensor '%s' is %s: read_f32 takes F32, F16, BF16, F64, I64 or I32",
                          st->path, Q(q, name), gk_dtype_name(t->dtype));
    }
    }
    return GK_OK;
}

gk_status gk_safetensors_read_i64(gk_safetensors *st, const char *name, int64_t *dst,
                                  size_t count, gk_err *err)
{
    st_tensor *t;
    const uint8_t *p;
    gk_status rc = read_prep(st, name, dst, count, &t, &p, err);
    if (rc)
        return rc;
    if (t->dtype == GK_DTYPE_I64) {
        if (count)
            memcpy(dst, p, count * sizeof(int64_t));
    } else if (t->dtype == GK_DTYPE_I32) {
        for (size_t i = 0; i < count; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = v;
        }
    } else {
        char q[QN];
        return gk_err_set(err, GK_ERR_UNSUPPORTED, "%s: tensor '%s' is %s: read_i64 takes I64 or I32",
                          st->path, Q(q, name), gk_dtype_name(t->dtype));
    }
    return GK_OK;
}

size_t gk_safetensors_meta_count(const gk_safetensors *st)
{
    return st ? st->meta.n : 0;
}

const char *gk_safetensors_meta_key(const gk_safetensors *st, size_t i)
{
    return st && i < st->meta.n ? st->meta.keys[i] : NULL;
}

const char *gk_safetensors_meta(const gk_safetensors *st, const char *key)
{
    if (!st || !key)
        return NULL;
    for (size_t i = 0; i < st->meta.n; i++) {
        if (strcmp(st->meta.keys[i], key) == 0)
            return st->meta.vals[i];
    }
    return NULL;
}

size_t gk_safetensors_shards_open(const gk_safetensors *st)
{
    size_t n = 0;
    for (size_t s = 0; st && s < st->n_shards; s++)
        n += st->shards[s].opened;
    return n;
}
