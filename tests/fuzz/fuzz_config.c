/* fuzz_config.c - libFuzzer harness for config.json and generation_config.json.
 *
 * Input: config.json, optionally followed by a NUL byte and generation_config.json;
 * both go to gk_config_parse. Every bad key or value must be a status. Not here:
 * whether a parsed config fits real weights (fuzz_model_cfg.c).
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char *buf = malloc(n + 2);
    if (!buf)
        fz_die("out of memory", "input");
    memcpy(buf, d, n);
    buf[n] = buf[n + 1] = '\0';
    size_t len = strlen(buf);
    const char *gen = len < n ? buf + len + 1 : NULL;
    gk_config c;
    gk_err e;
    (void)gk_config_parse(buf, gen, &c, &e);
    free(buf);
    return 0;
}
