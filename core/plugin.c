/* plugin.c - opening one plugin shared object and checking it before use.
 *
 * The order of checks gives each failure its own message: the file cannot be
 * opened, it exports no entry symbol (or one that is not a function), it was
 * built for another ABI, it is of the other kind, its ops table is the other
 * kind's or lacks a required entry, its init failed. Nothing in a plugin is
 * called before its entry is known to be code, nothing else before its ABI is
 * known to match. Not here: search paths and the registry (runtime.c).
 */
#include "runtime_impl.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

/* ABI 1.1 put the ops tables' magic where 1.0 had padding, so a 1.0 table
 * keeps its layout (LP64, which is what gk is built for). */
_Static_assert(offsetof(gk_backend_ops, magic) == 4 && offsetof(gk_backend_ops, available) == 8 &&
                   offsetof(gk_arch_ops, magic) == 4 && offsetof(gk_arch_ops, spec) == 8,
               "the ops tables' magic must sit in the padding after struct_size");

static void host_log(const char *plugin, const char *msg)
{
    fprintf(stderr, "gk[%s]: %s\n", plugin ? plugin : "?", msg);
}

static const gk_host host = {
    .abi_major = GK_ABI_MAJOR,
    .abi_minor = GK_ABI_MINOR,
    .log = host_log,
};

static const char *kind_name(gk_plugin_kind k)
{
    return k == GK_PLUGIN_KIND_ARCH ? "architecture" : k == GK_PLUGIN_KIND_BACKEND ? "backend" : "unknown";
}

/* The entry symbol must be code: a data object of that name would be called
 * and crash. The dynamic symbol covering its address says what it is. NULL
 * when it is a function, else what it is instead. */
static const char *entry_not_code(void *addr)
{
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!dladdr1(addr, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym)
        return "no symbol covers its address";
    switch (ELF64_ST_TYPE(sym->st_info)) {   /* the same for ELF32 */
    case STT_FUNC:
    case STT_GNU_IFUNC:
        return NULL;
    case STT_OBJECT: return "a data object";
    case STT_TLS: return "thread-local data";
    case STT_NOTYPE: return "a symbol without a type";
    default: return "not a function";
    }
}

/* A 1.1 ops table names its kind; a 1.0 one has 0 there and is not checked. */
static gk_status check_magic(const gk_plugin_desc *d, const char *path, gk_err *err)
{
    bool arch = d->kind == GK_PLUGIN_KIND_ARCH;
    if (*(const uint32_t *)d->ops < 2 * sizeof(uint32_t)) /* struct_size: too small to hold a magic */
        return gk_err_set(err, GK_ERR_PLUGIN, "%s: plugin '%s': ops table of %u bytes is too small", path, d->name,
                          *(const uint32_t *)d->ops);
    uint32_t magic = arch ? ((const gk_arch_ops *)d->ops)->magic : ((const gk_backend_ops *)d->ops)->magic;
    uint32_t want = arch ? GK_ARCH_OPS_MAGIC : GK_BACKEND_OPS_MAGIC;
    uint32_t other = arch ? GK_BACKEND_OPS_MAGIC : GK_ARCH_OPS_MAGIC;
    if (d->abi_minor < 1 || magic == want)
        return GK_OK;
    if (magic == other)
        return gk_err_set(err, GK_ERR_PLUGIN, "%s: %s plugin '%s' has a%s %s ops table", path,
                          kind_name(d->kind), d->name, arch ? "" : "n", arch ? "backend" : "architecture");
    return gk_err_set(err, GK_ERR_PLUGIN, "%s: %s plugin '%s': ops table has magic 0x%08x, expected 0x%08x (%s)",
                      path, kind_name(d->kind), d->name, magic, want,
                      arch ? "GK_ARCH_OPS_MAGIC" : "GK_BACKEND_OPS_MAGIC");
}

/* Required entries of each ops table; named in the error when NULL. */
static gk_status check_ops(const gk_plugin_desc *d, const char *path, gk_err *err)
{
    if (!d->ops)
        return gk_err_set(err, GK_ERR_PLUGIN, "%s: plugin '%s' has no ops table", path, d->name);
    gk_status st = check_magic(d, path, err);
    if (st != GK_OK)
        return st;
    if (d->kind == GK_PLUGIN_KIND_BACKEND) {
        const gk_backend_ops *o = d->ops;
        if (o->struct_size < offsetof(gk_backend_ops, synchronize))
            return gk_err_set(err, GK_ERR_ABI, "%s: backend ops table is %u bytes, older than ABI %d.0",
                              path, o->struct_size, GK_ABI_MAJOR);
        const char *missing = !o->available ? "available" : !o->device_props ? "device_props"
            : !o->buffer_alloc ? "buffer_alloc" : !o->buffer_free ? "buffer_free"
            : !o->buffer_write ? "buffer_write" : !o->buffer_read ? "buffer_read"
            : !o->supports_node ? "supports_node" : !o->graph_compute ? "graph_compute" : NULL;
        if (missing)
            return gk_err_set(err, GK_ERR_PLUGIN, "%s: backend '%s' lacks required op '%s'",
                              path, d->name, missing);
    } else {
        const gk_arch_ops *o = d->ops;
        /* 1.4 added optional entries at the end: older tables end before them */
        if (o->struct_size < offsetof(gk_arch_ops, dim_keys))
            return gk_err_set(err, GK_ERR_ABI, "%s: architecture ops table is %u bytes, older than ABI %d.0's %zu",
                              path, o->struct_size, GK_ABI_MAJOR, offsetof(gk_arch_ops, dim_keys));
        const char *missing = !o->spec ? "spec" : !o->spec->name ? "spec.name"
            : !o->tensors ? "tensors" : !o->build ? "build" : NULL;
        if (missing)
            return gk_err_set(err, GK_ERR_PLUGIN, "%s: architecture '%s' lacks required field '%s'",
                              path, d->name, missing);
    }
    return GK_OK;
}

gk_status gk_plugin_open(const char *path, const char *name, gk_plugin_kind kind,
                         gk_plugin *out, gk_err *err)
{
    memset(out, 0, sizeof *out);
    gk_status st;
    /* Lazy binding: a plugin built for a newer core may call helpers this core
     * lacks; it is refused by its descriptor's version below before any of
     * its other code runs, not by the dynamic linker's "undefined symbol". */
    void *dl = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!dl)
        return gk_err_set(err, GK_ERR_PLUGIN, "cannot open plugin %s: %s", path, dlerror());

    void *sym = dlsym(dl, GK_PLUGIN_ENTRY_NAME);
    if (!sym) {
        st = gk_err_set(err, GK_ERR_PLUGIN, "%s is not a gk plugin: no entry symbol '%s'",
                        path, GK_PLUGIN_ENTRY_NAME);
        goto out_close;
    }
    const char *what = entry_not_code(sym);
    if (what) {
        st = gk_err_set(err, GK_ERR_PLUGIN, "%s is not a gk plugin: entry symbol '%s' is not a function (%s)",
                        path, GK_PLUGIN_ENTRY_NAME, what);
        goto out_close;
    }
    gk_plugin_entry_fn entry;
    *(void **)&entry = sym;
    const gk_plugin_desc *d = entry();
    if (!d) {
        st = gk_err_set(err, GK_ERR_PLUGIN, "%s: entry symbol returned no descriptor", path);
        goto out_close;
    }
    if (d->abi_major != GK_ABI_MAJOR) {
        st = gk_err_set(err, GK_ERR_ABI, "%s: ABI mismatch: plugin built for %u.%u, core is %d.%d",
                        path, d->abi_major, d->abi_minor, GK_ABI_MAJOR, GK_ABI_MINOR);
        goto out_close;
    }
    if (d->abi_minor > GK_ABI_MINOR) {
        st = gk_err_set(err, GK_ERR_ABI, "%s: plugin '%s' needs ABI %u.%u; this core is ABI %d.%d (update gk)", path,
                        d->name ? d->name : name, d->abi_major, d->abi_minor, GK_ABI_MAJOR, GK_ABI_MINOR);
        goto out_close;
    }
    if (d->struct_size < offsetof(gk_plugin_desc, reserved)) {
        st = gk_err_set(err, GK_ERR_ABI, "%s: descriptor is %u bytes, smaller than ABI %d.0's",
                        path, d->struct_size, GK_ABI_MAJOR);
        goto out_close;
    }
    if (d->kind != kind) {
        st = gk_err_set(err, GK_ERR_PLUGIN, "%s: is a%s %s plugin, expected a%s %s plugin", path,
                        d->kind == GK_PLUGIN_KIND_ARCH ? "n" : "", kind_name(d->kind),
                        kind == GK_PLUGIN_KIND_ARCH ? "n" : "", kind_name(kind));
        goto out_close;
    }
    if (!d->name || strcmp(d->name, name) != 0) {
        st = gk_err_set(err, GK_ERR_PLUGIN, "%s: file is named for '%s' but the plugin calls itself '%s'",
                        path, name, d->name ? d->name : "(null)");
        goto out_close;
    }
    st = check_ops(d, path, err);
    if (st != GK_OK)
        goto out_close;

    out->name = gk_strdup(name);
    out->path = gk_strdup(path);
    if (!out->name || !out->path) {
        st = gk_err_set(err, GK_ERR_NOMEM, "out of memory loading %s", path);
        goto out_free;
    }
    if (d->init) {
        gk_err perr = {0};
        st = d->init(&host, &out->state, &perr);
        if (st != GK_OK) {
            st = gk_err_set(err, GK_ERR_PLUGIN, "plugin '%s' (%s): init failed: %s", name, path,
                            perr.msg[0] ? perr.msg : gk_status_str(st));
            goto out_free;
        }
    }
    out->inited = true;
    out->dl = dl;
    out->desc = d;
    return GK_OK;

out_free:
    free(out->name);
    free(out->path);
    memset(out, 0, sizeof *out);
out_close:
    dlclose(dl);
    return st;
}

void gk_plugin_close(gk_plugin *p)
{
    if (!p)
        return;
    if (p->inited && p->desc && p->desc->fini)
        p->desc->fini(p->state);
    if (p->dl)
        dlclose(p->dl);
    free(p->name);
    free(p->path);
    memset(p, 0, sizeof *p);
}
