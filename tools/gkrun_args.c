/* gkrun_args.c - strict parsing of numeric command-line values (see gkrun_args.h). */
#include "gkrun_args.h"
#include "gkrun.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "gkrun: FLAG: 'VALUE' " with the value escaped, so the message stays one line. */
static void head(const char *flag, const char *s, bool quote)
{
    fprintf(stderr, "gkrun: %s: %s", flag, quote ? "'" : "");
    gkrun_put_escaped(stderr, s, strlen(s));
    fprintf(stderr, "%s ", quote ? "'" : "");
}

static bool bad(const char *flag, const char *s, const char *what)
{
    head(flag, s, true);
    fprintf(stderr, "is not %s\n", what);
    return false;
}

bool gkrun_arg_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    if (!s || !*s || isspace((unsigned char)*s))
        return bad(flag, s ? s : "", "an integer");
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return bad(flag, s, "an integer");
    if (errno == ERANGE || v < lo || v > hi) {
        head(flag, s, false);
        fprintf(stderr, "is out of range (%" PRId64 " to %" PRId64 ")\n", lo, hi);
        return false;
    }
    *out = (int64_t)v;
    return true;
}

bool gkrun_arg_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !*s || !isdigit((unsigned char)*s))
        return bad(flag, s ? s : "", "a non-negative integer");
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return bad(flag, s, "a non-negative integer");
    if (errno == ERANGE) {
        head(flag, s, false);
        fprintf(stderr, "is out of range (0 to %" PRIu64 ")\n", UINT64_MAX);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

/* A finite double, or false after the message. Too large for a double
 * ("1e999") is out of range, not "not a finite number". */
static bool parse_f64(const char *flag, const char *s, double *out)
{
    char *end = NULL;
    /* decimal only: strtod would also take hexadecimal ("0x10") */
    if (!s || !*s || isspace((unsigned char)*s) || strpbrk(s, "xX"))
        return bad(flag, s ? s : "", "a number");
    errno = 0;
    double v = strtod(s, &end);
    if (*end)
        return bad(flag, s, "a number");
    if (isinf(v) && errno == ERANGE) {
        head(flag, s, false);
        fprintf(stderr, "is out of range (beyond %g)\n", DBL_MAX);
        return false;
    }
    if (!isfinite(v))
        return bad(flag, s, "a finite number");
    *out = v;
    return true;
}

bool gkrun_arg_f64(const char *flag, const char *s, double lo, double hi, double *out)
{
    double v;
    if (!parse_f64(flag, s, &v))
        return false;
    if (v < lo || v > hi) {
        head(flag, s, false);
        fprintf(stderr, "is out of range (%g to %g)\n", lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool gkrun_arg_f64_pos(const char *flag, const char *s, double hi, double *out)
{
    double v;
    if (!parse_f64(flag, s, &v))
        return false;
    if (!(v > 0) || v > hi) {
        head(flag, s, false);
        if (isinf(hi))
            fprintf(stderr, "is out of range (%s must be > 0)\n", flag);
        else
            fprintf(stderr, "is out of range (%s must be in (0, %g])\n", flag, hi);
        return false;
    }
    *out = v;
    return true;
}
