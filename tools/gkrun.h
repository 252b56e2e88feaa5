/* gkrun.h - shared bits of the gkrun subcommands. */
#ifndef GKRUN_H
#define GKRUN_H

#include <gk/gk.h>

#include <stdio.h>

/* Options every subcommand understands. */
typedef struct gkrun_common {
    const char *ini;       /* --config */
} gkrun_common;

int gkrun_inspect(int argc, char **argv, const gkrun_common *c);
int gkrun_verify(int argc, char **argv, const gkrun_common *c);
int gkrun_compare(int argc, char **argv, const gkrun_common *c);
int gkrun_bench(int argc, char **argv, const gkrun_common *c);
/* The OpenAI-compatible HTTP server (gkrun_serve.c). */
int gkrun_serve(int argc, char **argv, const gkrun_common *c);
/* Text generation and chat: everything that is not a subcommand. */
int gkrun_generate(int argc, char **argv, const gkrun_common *c);
/* The whole usage text (gkrun --help). */
void gkrun_usage(FILE *f);
/* Monotonic seconds. */
double gk_now_s(void);

/* Print "gkrun: <msg>" for a failed status and return the exit code 1. */
int gkrun_fail(const gk_err *err);
/* Runtime from --config (or the built-in defaults); NULL after printing why. */
gk_runtime *gkrun_runtime(const gkrun_common *c);

/* Write len bytes of text read from a file or stdin so that it stays on one
 * line and cannot drive the terminal: control characters (C0, DEL, C1) and
 * bytes that are not UTF-8 are escaped (\n, \t, \r, \0, \xHH, \u0085),
 * a backslash is doubled, valid UTF-8 passes through. Returns the bytes
 * written (for padding a table column). */
size_t gkrun_put_escaped(FILE *f, const char *s, size_t len);
/* "4096-token KV cache", with the sliding-window rings where there are any. */
const char *gkrun_cache_desc(const gk_model *m, char *buf, size_t len);

#endif
