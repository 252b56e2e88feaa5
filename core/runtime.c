/* runtime.c - the INI file, plugin search, and the registry of architectures
 * and backends.
 *
 * Without an INI file every plugin found next to libgk is loaded: the install
 * layout keeps them in <libdir>/gk/plugins, the build tree mirrors the source
 * tree (<build>/arch/NAME, <build>/backends/NAME). With an INI file exactly the
 * plugins it names are loaded, and any failure is an error. Not here: opening a
 * single plugin (plugin.c), models (model.c).
 */
#include "runtime_impl.h"

#include <dirent.h>
#include <dlfcn.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIRS 16
#define MAX_NAMES 32

struct gk_runtime {
    gk_plugin archs[MAX_NAMES];
    size_t n_arch;
    gk_plugin backends[MAX_NAMES];
    size_t n_backend;
    char default_backend[64];
};

/* ------------------------------------------------------------ INI parsing */

typedef struct ini_state {
    const char *path;
    const char *next, *end;   /* the file's text not yet handed to inih */
    int line;                 /* line last handed to inih (1-based) */
    int err_line;             /* first line refused here; 0 = none */
    char *dirs[MAX_DIRS];
    size_t n_dirs;
    char *arch[MAX_NAMES];
    size_t n_arch;
    bool arch_set;
    char *backends[MAX_NAMES];
    size_t n_backends;
    bool backends_set;
    char backend[64];
    char msg[400];
    gk_status code;
} ini_state;

static void ini_state_free(ini_state *s)
{
    for (size_t i = 0; i < s->n_dirs; i++)
        free(s->dirs[i]);
    for (size_t i = 0; i < s->n_arch; i++)
        free(s->arch[i]);
    for (size_t i = 0; i < s->n_backends; i++)
        free(s->backends[i]);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/* Split a comma list into heap strings appended to list[*n..cap). Entries of
 * a key given on several lines accumulate; cap counts them all. */
static bool split_list(ini_state *s, const char *key, const char *value, char **list, size_t *n,
                       size_t cap)
{
    char buf[1024];
    if (strlen(value) >= sizeof buf) {
        snprintf(s->msg, sizeof s->msg, "value of '%s' is too long", key);
        return false;
    }
    strcpy(buf, value);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        if (*n >= cap) {
            snprintf(s->msg, sizeof s->msg, "too many entries in '%s' (at most %zu)", key, cap);
            return false;
        }
        list[*n] = gk_strdup(tok);
        if (!list[*n]) {
            snprintf(s->msg, sizeof s->msg, "out of memory");
            return false;
        }
        (*n)++;
    }
    return true;
}

/* [plugins] path: entries go straight into s->dirs (freed with the state on
 * any failure); relative folders are relative to the INI file's folder. */
static bool add_dirs(ini_state *s, const char *value)
{
    size_t first = s->n_dirs;
    if (!split_list(s, "path", value, s->dirs, &s->n_dirs, MAX_DIRS))
        return false;
    char *base = gk_path_dirname(s->path);
    for (size_t i = first; i < s->n_dirs; i++) {
        if (s->dirs[i][0] == '/')
            continue;
        char *d = base ? gk_path_join(base, s->dirs[i]) : NULL;
        if (!d) {
            snprintf(s->msg, sizeof s->msg, "out of memory");
            free(base);
            return false;
        }
        free(s->dirs[i]);
        s->dirs[i] = d;
    }
    free(base);
    return true;
}

/* One name = value of the INI; false with s->msg set when refused. */
static bool ini_entry(ini_state *s, const char *section, const char *name, const char *value)
{
    char q[128];
    if (strcmp(section, "plugins") == 0) {
        if (strcmp(name, "path") == 0)
            return add_dirs(s, value);
        if (strcmp(name, "arch") == 0) {
            s->arch_set = true;
            return split_list(s, name, value, s->arch, &s->n_arch, MAX_NAMES);
        }
        if (strcmp(name, "backends") == 0) {
            s->backends_set = true;
            return split_list(s, name, value, s->backends, &s->n_backends, MAX_NAMES);
        }
    } else if (strcmp(section, "runtime") == 0) {
        if (strcmp(name, "backend") == 0) {
            if (strlen(value) >= sizeof s->backend || !value[0]) {
                snprintf(s->msg, sizeof s->msg, "bad value '%s' for 'backend'", gk_quote(q, sizeof q, value));
                return false;
            }
            strcpy(s->backend, value);
            return true;
        }
    } else {
        snprintf(s->msg, sizeof s->msg, "unknown section [%s]", gk_quote(q, sizeof q, section));
        return false;
    }
    snprintf(s->msg, sizeof s->msg, "unknown key '%s' in section [%s]", gk_quote(q, sizeof q, name), section);
    return false;
}

/* inih handler: 0 marks the line as an error. inih goes on to the end of the
 * file after an error, so only the first one is kept, with its line. */
static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    ini_state *s = user;
    if (s->err_line)
        return 1;
    if (ini_entry(s, section, name, value))
        return 1;
    s->err_line = s->line;
    return 0;
}

/* inih (Debian's libinih 55) reads each line into a fixed buffer of num bytes
 * and hands what does not fit back as a new line, so the tail of a long
 * comment would become a setting; it also stops at a NUL. This reader gives
 * inih one line of the file at a time and refuses, by line, any that inih
 * could not take whole: longer than num - 3 bytes (room for "\r\n" and the
 * NUL, as ini.h says of INI_MAX_LINE) or holding a NUL byte. */
static char *ini_next_line(char *str, int num, void *user)
{
    ini_state *s = user;
    if (s->err_line || s->next >= s->end)
        return NULL;
    const char *nl = memchr(s->next, '\n', (size_t)(s->end - s->next));
    size_t n = nl ? (size_t)(nl - s->next) + 1 : (size_t)(s->end - s->next);
    size_t body = n - (nl != NULL);
    if (body > 0 && s->next[body - 1] == '\r')
        body--;
    if (s->line == INT_MAX) {
        snprintf(s->msg, sizeof s->msg, "too many lines");
        s->err_line = s->line;
        return NULL;
    }
    s->line++;
    if (num < 4 || body > (size_t)num - 3) {
        snprintf(s->msg, sizeof s->msg, "line longer than %d bytes", num - 3);
        s->err_line = s->line;
        return NULL;
    }
    if (memchr(s->next, '\0', n)) {
        snprintf(s->msg, sizeof s->msg, "NUL byte in the line");
        s->err_line = s->line;
        return NULL;
    }
    memcpy(str, s->next, n);
    str[n] = '\0';
    s->next += n;
    return str;
}

static gk_status ini_load(const char *path, ini_state *s, gk_err *err)
{
    s->path = path;
    char *text;
    size_t len;
    gk_status st = gk_read_file(path, &text, &len, err);
    if (st != GK_OK)
        return st;
    s->next = text;
    s->end = text + len;
    int line = ini_parse_stream(ini_next_line, s, on_ini_entry, s);
    free(text);
    if (line < 0)
        return gk_err_set(err, GK_ERR_NOMEM, "%s: out of memory while parsing", path);
    /* A syntax error (inih's own) before the first line refused here wins. */
    if (line > 0 && (!s->err_line || line < s->err_line))
        return gk_err_set(err, GK_ERR_CONFIG, "%s:%d: syntax error", path, line);
    if (s->err_line)
        return gk_err_set(err, GK_ERR_CONFIG, "%s:%d: %s", path, s->err_line, s->msg);
    return GK_OK;
}

/* --------------------------------------------------------- plugin search */

static const char *kind_dir(gk_plugin_kind k)
{
    return k == GK_PLUGIN_KIND_ARCH ? "arch" : "backends";
}

static const char *kind_prefix(gk_plugin_kind k)
{
    return k == GK_PLUGIN_KIND_ARCH ? "libgk-arch-" : "libgk-backend-";
}

/* Folder holding libgk itself, found through a symbol of ours. */
static char *libgk_dir(void)
{
    Dl_info info;
    if (!dladdr((void *)&gk_runtime_create, &info) || !info.dli_fname)
        return NULL;
    char *real = realpath(info.dli_fname, NULL);
    if (!real)
        return NULL;
    char *d = gk_path_dirname(real);
    free(real);
    return d;
}

/* Default folders for one plugin: install layout, then the build tree. */
static size_t default_dirs(gk_plugin_kind kind, const char *name, char **dirs, size_t cap)
{
    size_t n = 0;
    char *lib = libgk_dir();
    if (!lib)
        return 0;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/gk/plugins", lib);
    if (n < cap)
        dirs[n++] = gk_strdup(buf);
    if (name && n < cap) {
        snprintf(buf, sizeof buf, "%s/../%s/%s", lib, kind_dir(kind), name);
        dirs[n++] = gk_strdup(buf);
    }
    free(lib);
    return n;
}

static void free_dirs(char **dirs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(dirs[i]);
}

/* The folders of GK_PLUGIN_PATH (colon-separated, empty parts skipped), at
 * most cap of them. */
static size_t env_dirs(char **dirs, size_t cap)
{
    const char *v = getenv("GK_PLUGIN_PATH");
    size_t n = 0;
    while (v && *v && n < cap) {
        const char *c = strchr(v, ':');
        size_t len = c ? (size_t)(c - v) : strlen(v);
        if (len > 0 && len < 4096) {
            char *d = malloc(len + 1);
            if (d) {
                memcpy(d, v, len);
                d[len] = '\0';
                dirs[n++] = d;
            }
        }
        v = c ? c + 1 : NULL;
    }
    return n;
}

/* Find libgk-<kind>-<name>.so in the INI folders, then GK_PLUGIN_PATH's,
 * then the default ones. */
static gk_status find_plugin(const ini_state *s, gk_plugin_kind kind, const char *name,
                             char **out_path, gk_err *err)
{
    char *dirs[2 * MAX_DIRS + 4];
    size_t n = 0;
    for (size_t i = 0; i < s->n_dirs; i++)
        dirs[n++] = gk_strdup(s->dirs[i]);
    n += env_dirs(dirs + n, MAX_DIRS);
    n += default_dirs(kind, name, dirs + n, 4);

    char file[256];
    snprintf(file, sizeof file, "%s%s.so", kind_prefix(kind), name);
    char searched[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (!dirs[i])
            continue;
        char *p = gk_path_join(dirs[i], file);
        if (p && gk_path_exists(p)) {
            *out_path = p;
            free_dirs(dirs, n);
            return GK_OK;
        }
        free(p);
        int w = snprintf(searched + used, sizeof searched - used, "%s%s", used ? ", " : "", dirs[i]);
        if (w > 0 && (size_t)w < sizeof searched - used)
            used += (size_t)w;
    }
    free_dirs(dirs, n);
    *out_path = NULL;
    return gk_err_set(err, GK_ERR_NOT_FOUND, "%s plugin '%s' not found: no %s in %s",
                      kind == GK_PLUGIN_KIND_ARCH ? "architecture" : "backend", name, file,
                      used ? searched : "(no folders)");
}

/* Every plugin name of a kind in GK_PLUGIN_PATH's folders, first found first. */
static size_t scan_env(gk_plugin_kind kind, char **names, size_t cap)
{
    char *dirs[MAX_DIRS];
    size_t nd = env_dirs(dirs, MAX_DIRS), n = 0;
    const char *prefix = kind_prefix(kind);
    size_t plen = strlen(prefix);
    for (size_t k = 0; k < nd; k++) {
        DIR *d = opendir(dirs[k]);
        for (struct dirent *e; d && (e = readdir(d)) && n < cap;) {
            size_t len = strlen(e->d_name);
            if (strncmp(e->d_name, prefix, plen) != 0 || len <= plen + 3 || strcmp(e->d_name + len - 3, ".so"))
                continue;
            char *name = gk_strdup(e->d_name + plen);
            if (!name)
                continue;
            name[len - plen - 3] = '\0';
            bool dup = false;
            for (size_t i = 0; i < n; i++)
                dup = dup || strcmp(names[i], name) == 0;
            if (dup)
                free(name);
            else
                names[n++] = name;
        }
        if (d)
            closedir(d);
    }
    free_dirs(dirs, nd);
    return n;
}

/* Every plugin name of a kind present in the default folders (no INI list). */
static size_t scan_defaults(gk_plugin_kind kind, char **names, size_t cap)
{
    size_t n = 0;
    char *lib = libgk_dir();
    if (!lib)
        return 0;
    const char *prefix = kind_prefix(kind);
    size_t plen = strlen(prefix);
    char installed[4096], tree[4096];
    snprintf(installed, sizeof installed, "%s/gk/plugins", lib);
    snprintf(tree, sizeof tree, "%s/../%s", lib, kind_dir(kind));
    free(lib);

    DIR *d = opendir(installed);
    if (d) {
        for (struct dirent *e; (e = readdir(d)) && n < cap;) {
            size_t len = strlen(e->d_name);
            if (strncmp(e->d_name, prefix, plen) == 0 && len > plen + 3 &&
                strcmp(e->d_name + len - 3, ".so") == 0) {
                names[n] = gk_strdup(e->d_name + plen);
                if (names[n])
                    names[n++][len - plen - 3] = '\0';
            }
        }
        closedir(d);
    }
    d = opendir(tree);
    if (d) {
        for (struct dirent *e; (e = readdir(d)) && n < cap;) {
            if (e->d_name[0] == '.')
                continue;
            char path[8192];
            snprintf(path, sizeof path, "%s/%s/%s%s.so", tree, e->d_name, prefix, e->d_name);
            bool dup = false;
            for (size_t i = 0; i < n; i++)
                dup = dup || strcmp(names[i], e->d_name) == 0;
            if (!dup && gk_path_exists(path))
                names[n++] = gk_strdup(e->d_name);
        }
        closedir(d);
    }
    return n;
}

/* -------------------------------------------------------------- registry */

static bool arch_claims(const gk_model_spec *s, const char *name)
{
    if (strcmp(s->name, name) == 0)
        return true;
    for (const char *const *a = s->aliases; a && *a; a++)
        if (strcmp(*a, name) == 0)
            return true;
    return false;
}

/* Two plugins may not share a plugin name, nor an architecture name or alias. */
static gk_status check_unique(gk_runtime *rt, gk_plugin *p, gk_plugin_kind kind, gk_err *err)
{
    gk_plugin *list = kind == GK_PLUGIN_KIND_ARCH ? rt->archs : rt->backends;
    size_t n = kind == GK_PLUGIN_KIND_ARCH ? rt->n_arch : rt->n_backend;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].name, p->name) == 0)
            return gk_err_set(err, GK_ERR_PLUGIN, "two plugins named '%s': %s and %s", p->name,
                              list[i].path, p->path);
        if (kind != GK_PLUGIN_KIND_ARCH)
            continue;
        const gk_model_spec *a = ((const gk_arch_ops *)list[i].desc->ops)->spec;
        const gk_model_spec *b = ((const gk_arch_ops *)p->desc->ops)->spec;
        const char *clash = arch_claims(a, b->name) ? b->name : NULL;
        for (const char *const *al = b->aliases; !clash && al && *al; al++)
            if (arch_claims(a, *al))
                clash = *al;
        if (clash)
            return gk_err_set(err, GK_ERR_PLUGIN,
                              "two plugins claim the architecture name '%s': %s and %s", clash,
                              list[i].path, p->path);
    }
    return GK_OK;
}

static gk_status load_kind(gk_runtime *rt, const ini_state *s, gk_plugin_kind kind,
                           char **names, size_t n_names, bool strict, gk_err *err)
{
    for (size_t i = 0; i < n_names; i++) {
        char *path = NULL;
        gk_status st = find_plugin(s, kind, names[i], &path, err);
        gk_plugin p;
        if (st == GK_OK)
            st = gk_plugin_open(path, names[i], kind, &p, err);
        free(path);
        if (st == GK_OK) {
            st = check_unique(rt, &p, kind, err);
            if (st != GK_OK)
                gk_plugin_close(&p);
        }
        if (st != GK_OK) {
            if (strict)
                return st;
            /* Built-in defaults: a plugin that cannot load (say, the CUDA
             * backend on a machine without the CUDA runtime) is skipped. */
            fprintf(stderr, "gk: warning: skipping plugin: %s\n", err ? err->msg : names[i]);
            continue;
        }
        if (kind == GK_PLUGIN_KIND_ARCH)
            rt->archs[rt->n_arch++] = p;
        else
            rt->backends[rt->n_backend++] = p;
    }
    return GK_OK;
}

/* No INI list for a kind: the plugins of GK_PLUGIN_PATH (each must load:
 * the user named their folder), then the built-in ones not shadowed by
 * them (one that cannot load is skipped with a warning). names is scratch
 * of MAX_NAMES. */
static gk_status load_found(gk_runtime *rt, const ini_state *s, gk_plugin_kind kind, char **names, gk_err *err)
{
    size_t n = scan_env(kind, names, MAX_NAMES);
    gk_status st = load_kind(rt, s, kind, names, n, true, err);
    size_t m = st == GK_OK ? scan_defaults(kind, names + n, MAX_NAMES - n) : 0;
    size_t k = n;
    for (size_t i = n; i < n + m; i++) { /* drop the names GK_PLUGIN_PATH gave already */
        bool shadowed = false;
        for (size_t j = 0; j < n; j++)
            shadowed = shadowed || strcmp(names[i], names[j]) == 0;
        if (shadowed)
            free(names[i]);
        else
            names[k++] = names[i];
    }
    if (st == GK_OK)
        st = load_kind(rt, s, kind, names + n, k - n, false, err);
    free_dirs(names, k);
    return st;
}

gk_status gk_runtime_create(const char *ini_path, gk_runtime **out, gk_err *err)
{
    if (!out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_runtime_create: out is NULL");
    *out = NULL;
    gk_status st;
    ini_state s;
    memset(&s, 0, sizeof s);
    gk_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    strcpy(rt->default_backend, "auto");

    if (ini_path) {
        st = ini_load(ini_path, &s, err);
        if (st != GK_OK)
            goto out_fail;
        if (s.backend[0])
            snprintf(rt->default_backend, sizeof rt->default_backend, "%s", s.backend);
    }
    char *names[MAX_NAMES];
    gk_err scratch;
    gk_err *e = err ? err : &scratch;

    if (s.arch_set)
        st = load_kind(rt, &s, GK_PLUGIN_KIND_ARCH, s.arch, s.n_arch, true, e);
    else
        st = load_found(rt, &s, GK_PLUGIN_KIND_ARCH, names, e);
    if (st != GK_OK)
        goto out_fail;
    if (s.backends_set)
        st = load_kind(rt, &s, GK_PLUGIN_KIND_BACKEND, s.backends, s.n_backends, true, e);
    else
        st = load_found(rt, &s, GK_PLUGIN_KIND_BACKEND, names, e);
    if (st != GK_OK)
        goto out_fail;
    if (strcmp(rt->default_backend, "auto") != 0) {
        bool found = false;
        for (size_t i = 0; i < rt->n_backend; i++)
            found = found || strcmp(rt->backends[i].name, rt->default_backend) == 0;
        if (!found) {
            char q[128];
            st = gk_err_set(err, GK_ERR_CONFIG, "%s: [runtime] backend = %s, but no such backend is loaded",
                            ini_path, gk_quote(q, sizeof q, rt->default_backend));
            goto out_fail;
        }
    }
    ini_state_free(&s);
    *out = rt;
    return GK_OK;

out_fail:
    ini_state_free(&s);
    gk_runtime_destroy(rt);
    return st;
}

void gk_runtime_destroy(gk_runtime *rt)
{
    if (!rt)
        return;
    for (size_t i = 0; i < rt->n_arch; i++)
        gk_plugin_close(&rt->archs[i]);
    for (size_t i = 0; i < rt->n_backend; i++)
        gk_plugin_close(&rt->backends[i]);
    free(rt);
}

size_t gk_runtime_arch_count(const gk_runtime *rt) { return rt ? rt->n_arch : 0; }
const char *gk_runtime_arch_name(const gk_runtime *rt, size_t i)
{
    return rt && i < rt->n_arch ? rt->archs[i].name : NULL;
}
size_t gk_runtime_backend_count(const gk_runtime *rt) { return rt ? rt->n_backend : 0; }
const char *gk_runtime_backend_name(const gk_runtime *rt, size_t i)
{
    return rt && i < rt->n_backend ? rt->backends[i].name : NULL;
}
const char *gk_runtime_default_backend(const gk_runtime *rt) { return rt ? rt->default_backend : NULL; }

const gk_arch_ops *gk_runtime_arch_ops(const gk_runtime *rt, const char *name)
{
    for (size_t i = 0; rt && name && i < rt->n_arch; i++) {
        const gk_arch_ops *ops = rt->archs[i].desc->ops;
        if (arch_claims(ops->spec, name))
            return ops;
    }
    return NULL;
}

const gk_model_spec *gk_runtime_find_arch(const gk_runtime *rt, const char *name)
{
    const gk_arch_ops *ops = gk_runtime_arch_ops(rt, name);
    return ops ? ops->spec : NULL;
}

static gk_backend backend_of(const gk_plugin *p)
{
    return (gk_backend){.name = p->name, .ops = p->desc->ops, .state = p->state, .abi_minor = p->desc->abi_minor};
}

gk_status gk_runtime_backend(gk_runtime *rt, const char *name, gk_backend *out, gk_err *err)
{
    if (!rt || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_runtime_backend: %s is NULL", !rt ? "rt" : "out");
    if (!name || strcmp(name, "auto") == 0)
        name = rt->default_backend;
    char why[256] = "";
    if (strcmp(name, "auto") == 0) {
        for (size_t i = 0; i < rt->n_backend; i++) {
            const gk_backend_ops *ops = rt->backends[i].desc->ops;
            if (strcmp(rt->backends[i].name, "cuda") == 0 &&
                ops->available(rt->backends[i].state, why, sizeof why)) {
                *out = backend_of(&rt->backends[i]);
                return GK_OK;
            }
        }
        name = "cpu_ref";
    }
    for (size_t i = 0; i < rt->n_backend; i++) {
        if (strcmp(rt->backends[i].name, name) != 0)
            continue;
        const gk_backend_ops *ops = rt->backends[i].desc->ops;
        if (!ops->available(rt->backends[i].state, why, sizeof why))
            return gk_err_set(err, GK_ERR_DEVICE, "backend '%s' is not usable here: %s", name,
                              why[0] ? why : "no reason given");
        *out = backend_of(&rt->backends[i]);
        return GK_OK;
    }
    char list[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < rt->n_backend; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", rt->backends[i].name);
        if (w > 0 && (size_t)w < sizeof list - used)
            used += (size_t)w;
    }
    return gk_err_set(err, GK_ERR_NOT_FOUND, "backend '%s' is not loaded (loaded: %s)", name,
                      used ? list : "none");
}

/* ------------------------------------------------------------- detection */

static bool in_list(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* Does the checkpoint hold the table's tensor (with any of the prefixes)? */
static bool has_entry(const gk_arch_ops *ops, gk_safetensors *st, const gk_tensor_entry *e)
{
    static const char *const no_prefix[] = {"", NULL};
    const char *const *prefixes = ops->name_prefixes ? ops->name_prefixes : no_prefix;
    char name[256], full[320];
    snprintf(name, sizeof name, e->name, 0);
    for (const char *const *p = prefixes; *p; p++) {
        snprintf(full, sizeof full, "%s%s", *p, name);
        if (gk_safetensors_has(st, full))
            return true;
    }
    return false;
}

/* Score: -1 when a required tensor (layer 0) is missing, else tensors matched. */
static int name_score(const gk_arch_ops *ops, gk_safetensors *st)
{
    int score = 0;
    for (const gk_tensor_entry *e = ops->tensors; e->name; e++) {
        bool required = !(e->flags & (GK_TF_OPTIONAL | GK_TF_COND_BIAS | GK_TF_COND_MLP_BIAS | GK_TF_COND_QKN));
        if (e->flags & GK_TF_COND_QKN)
            required = ops->spec->use_qk_norm;
        bool have = has_entry(ops, st, e);
        if (required && !have)
            return -1;
        score += have;
    }
    return score;
}

gk_status gk_runtime_detect_arch(const gk_runtime *rt, gk_safetensors *st, const gk_config *cfg,
                                 const gk_model_spec **out, gk_err *err)
{
    if (!rt || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_runtime_detect_arch: %s is NULL", !rt ? "rt" : "out");
    *out = NULL;
    if (cfg) {
        for (size_t i = 0; cfg->architecture[0] && i < rt->n_arch; i++) {
            const gk_arch_ops *ops = rt->archs[i].desc->ops;
            if (in_list(ops->spec->hf_architectures, cfg->architecture)) {
                *out = ops->spec;
                return GK_OK;
            }
        }
        for (size_t i = 0; cfg->model_type[0] && i < rt->n_arch; i++) {
            const gk_arch_ops *ops = rt->archs[i].desc->ops;
            if (arch_claims(ops->spec, cfg->model_type) ||
                in_list(ops->spec->model_types, cfg->model_type)) {
                *out = ops->spec;
                return GK_OK;
            }
        }
    }
    int best = -1;
    for (size_t i = 0; st && i < rt->n_arch; i++) {
        const gk_arch_ops *ops = rt->archs[i].desc->ops;
        int s = name_score(ops, st);
        if (s > best) {
            best = s;
            *out = ops->spec;
        }
    }
    if (*out && (!cfg || (!cfg->architecture[0] && !cfg->model_type[0])))
        return GK_OK;

    char list[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < rt->n_arch; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", rt->archs[i].name);
        if (w > 0 && (size_t)w < sizeof list - used)
            used += (size_t)w;
    }
    *out = NULL;
    if (cfg && (cfg->architecture[0] || cfg->model_type[0]))
        return gk_err_set(err, GK_ERR_NOT_FOUND,
                          "unknown architecture '%s' (model_type '%s'); registered: %s",
                          cfg->architecture[0] ? cfg->architecture : "?",
                          cfg->model_type[0] ? cfg->model_type : "?", used ? list : "none");
    return gk_err_set(err, GK_ERR_NOT_FOUND,
                      "no registered architecture matches the tensor names; registered: %s",
                      used ? list : "none");
}
