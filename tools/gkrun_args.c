/* gkrun_args.c - strict parsing of numeric command-line values (see gkrun_args.h). */
#include "gkrun_args.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static bool bad(const char *flag, const char *s, const char *what)
{
    fprintf(stderr, "gkrun: %s: '%s' is not %s\n", flag, s, what);
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
        fprintf(stderr, "gkrun: %s: %s is out of range (%" PRId64 " to %" PRId64 ")\n", flag, s, lo, hi);
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
        fprintf(stderr, "gkrun: %s: %s is out of range (0 to %" PRIu64 ")\n", flag, s, UINT64_MAX);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

bool gkrun_arg_f64(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    if (!s || !*s || isspace((unsigned char)*s))
        return bad(flag, s ? s : "", "a number");
    errno = 0;
    double v = strtod(s, &end);
    if (*end)
        return bad(flag, s, "a number");
    if (!isfinite(v))
        return bad(flag, s, "a finite number");
    if (v < lo || v > hi) {
        fprintf(stderr, "gkrun: %s: %s is out of range (%g to %g)\n", flag, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}
