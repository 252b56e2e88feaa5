/* gkrun_file.h - reading whole files and streams in gkrun, the chat renderer
 * and the tokenizer check, the same careful way everywhere. */
#ifndef GKRUN_FILE_H
#define GKRUN_FILE_H

#include <stddef.h>
#include <stdio.h>

/* All of f in a heap buffer, NUL-terminated; NUL bytes read are kept and
 * counted in *len. Returns 0, ENOMEM, or the errno of the failed read. */
int gkrun_read_stream(FILE *f, char **out, size_t *len);

/* Open path for reading when it is a regular file, without blocking on a FIFO.
 * NULL on failure with *why set: a static text ("not a regular file (a FIFO)")
 * or strerror's. */
FILE *gkrun_open_regular(const char *path, const char **why);

/* gkrun_open_regular + gkrun_read_stream. NULL on failure with *why set. */
char *gkrun_read_regular(const char *path, size_t *len, const char **why);

#endif
