/* runtime_impl.h - what the model code needs from the runtime's registry. */
#ifndef GK_RUNTIME_IMPL_H
#define GK_RUNTIME_IMPL_H

#include "gk_internal.h"

/* A loaded plugin. Alive until gk_runtime_destroy. */
typedef struct gk_plugin {
    char *name;
    char *path;
    void *dl;                    /* dlopen handle */
    const gk_plugin_desc *desc;
    void *state;                 /* from desc->init */
    bool inited;
} gk_plugin;

/* A backend as the core uses it: the plugin's table plus its state. */
typedef struct gk_backend {
    const char *name;
    const gk_backend_ops *ops;
    void *state;
    uint32_t abi_minor;          /* GK_ABI_MINOR the plugin was built with */
} gk_backend;

/* Load one plugin file of the given kind; `name` is what the file name says.
 * Errors name the path: cannot open, no entry symbol or one that is not a
 * function, ABI mismatch, wrong kind, an ops table of the other kind, missing
 * required op, init failed. */
GK_INTERNAL gk_status gk_plugin_open(const char *path, const char *name, gk_plugin_kind kind,
                                     gk_plugin *out, gk_err *err);
GK_INTERNAL void gk_plugin_close(gk_plugin *p);

/* NULL when rt or name is NULL or no architecture claims the name. */
GK_INTERNAL const gk_arch_ops *gk_runtime_arch_ops(const gk_runtime *rt, const char *name);
/* name NULL or "auto": the INI default, then cuda when usable, else cpu_ref.
 * GK_ERR_INVALID_ARG when rt or out is NULL. */
GK_INTERNAL gk_status gk_runtime_backend(gk_runtime *rt, const char *name, gk_backend *out,
                                         gk_err *err);

#endif
