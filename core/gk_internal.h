/* gk_internal.h - helpers shared between core files; not installed, not API. */
#ifndef GK_INTERNAL_H
#define GK_INTERNAL_H

#include "gk/gk_plugin.h"

#include <stdio.h>

#define GK_INTERNAL __attribute__((visibility("hidden")))

/* Internal invariant; stays on in release builds. Never for input checks. */
#define GK_ASSERT(c)                                                              \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "gk: internal error %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* Open path for reading, refusing anything but a regular file (a FIFO, folder
 * or device is GK_ERR_IO naming what it is) without blocking on a FIFO.
 * NULL with err filled on failure. */
GK_INTERNAL FILE *gk_fopen_regular(const char *path, gk_err *err);
/* Read a whole regular file into a NUL-terminated heap buffer (*out, freed by caller). */
GK_INTERNAL gk_status gk_read_file(const char *path, char **out, size_t *len, gk_err *err);
/* Heap "a/b" (caller frees); NULL when out of memory. */
GK_INTERNAL char *gk_path_join(const char *dir, const char *name);
/* Heap copy of the folder part of path ("." when none); caller frees. */
GK_INTERNAL char *gk_path_dirname(const char *path);
GK_INTERNAL bool gk_path_is_dir(const char *path);
GK_INTERNAL bool gk_path_exists(const char *path);
/* Copy of s for an error message: control characters (C0, DEL and C1), single
 * quotes, backslashes and bytes that are not UTF-8 escaped (\n, \x1b, \u009b,
 * \', ...; valid UTF-8 kept), cut at a character boundary with "..." when it
 * does not fit n bytes. Returns buf. For names read from files. */
GK_INTERNAL const char *gk_quote(char *buf, size_t n, const char *s);
/* Heap copy (NULL on NULL or out of memory). */
GK_INTERNAL char *gk_strdup(const char *s);
/* Monotonic seconds. */
GK_INTERNAL double gk_now(void);

#endif
