/* gkrun_run.h - running the gkrun under test from Criterion tests: the
 * fixture folder, and a command's output captured. */
#ifndef GK_TESTS_GKRUN_RUN_H
#define GK_TESTS_GKRUN_RUN_H

#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* tests/data (GK_TEST_DATA), or "data" beside the working folder. */
static inline const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d ? d : "data";
}

/* Run cmd with sh; stdout+stderr into *out (heap). Returns the exit code,
 * 128 when it did not exit. */
static inline int capture(char **out, const char *cmd)
{
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Run gkrun with the arguments (shell syntax); stdout+stderr into *out. */
static inline int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int run(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "%s/tools/gkrun ", getenv("GK_TEST_BUILD_ROOT"));
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    return capture(out, cmd);
}

#endif
