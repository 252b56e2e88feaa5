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
/* Text generation and chat: everything that is not a subcommand. */
int gkrun_generate(int argc, char **argv, const gkrun_common *c);
/* Monotonic seconds. */
double gk_now_s(void);

/* Print "gkrun: <msg>" for a failed status and return the exit code 1. */
int gkrun_fail(const gk_err *err);
/* Runtime from --config (or the built-in defaults); NULL after printing why. */
gk_runtime *gkrun_runtime(const gkrun_common *c);

#endif
