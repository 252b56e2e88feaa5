/* gkrun_args.h - strict parsing of numeric command-line values.
 *
 * Every numeric flag of every gkrun subcommand goes through these: the whole
 * argument must be a number (no trailing text, no empty string), within the
 * range given. On failure they print one line naming the flag, the value and
 * the range to stderr and return false; the caller exits with status 2.
 */
#ifndef GKRUN_ARGS_H
#define GKRUN_ARGS_H

#include <stdbool.h>
#include <stdint.h>

/* A decimal integer in [lo, hi]. */
bool gkrun_arg_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out);
/* A decimal integer in [0, UINT64_MAX] ("-1" is refused). */
bool gkrun_arg_u64(const char *flag, const char *s, uint64_t *out);
/* A finite number in [lo, hi] (NaN and infinities are refused). */
bool gkrun_arg_f64(const char *flag, const char *s, double lo, double hi, double *out);
/* A finite number in (0, hi]; hi may be INFINITY (then: any finite number > 0). */
bool gkrun_arg_f64_pos(const char *flag, const char *s, double hi, double *out);

#endif
