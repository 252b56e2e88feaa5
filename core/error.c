/* error.c - status names and gk_err filling. */
#include "gk_internal.h"

#include <stdarg.h>

const char *gk_status_str(gk_status s)
{
    switch (s) {
    case GK_OK: return "ok";
    case GK_ERR_NOMEM: return "out of memory";
    case GK_ERR_IO: return "I/O error";
    case GK_ERR_FORMAT: return "format error";
    case GK_ERR_CONFIG: return "configuration error";
    case GK_ERR_UNSUPPORTED: return "unsupported";
    case GK_ERR_ABI: return "ABI mismatch";
    case GK_ERR_NOT_FOUND: return "not found";
    case GK_ERR_INVALID_ARG: return "invalid argument";
    case GK_ERR_DEVICE: return "device error";
    case GK_ERR_PLUGIN: return "plugin error";
    case GK_ERR_INTERNAL: return "internal error";
    case GK_ERR_BUSY: return "busy";
    }
    return "unknown status";
}

gk_status gk_err_set(gk_err *err, gk_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* GK_VERSION comes from meson's project version (core/meson.build). */
const char *gk_version(void)
{
    return GK_VERSION;
}
