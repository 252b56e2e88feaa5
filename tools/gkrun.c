/* gkrun - the command-line front end: inspect, verify, and (later) generate.
 *
 *   gkrun inspect PATH [--json]
 *   gkrun verify DIR [--backend NAME] [--dtype D] [--tol X]
 *   gkrun compare -m DIR --backend cuda --reference cpu_ref [--dtype D] [--ids ...]
 *
 * Global option (before the subcommand): --config FILE.INI.
 * Every failure prints one line naming its cause and exits non-zero.
 */
#include "gkrun.h"
#include "gkrun_tokenize.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gkrun [--config FILE.INI] -m DIR [-p TEXT | --prompt-file F | < stdin] [options]\n"
            "       gkrun [--config FILE.INI] -m DIR --chat\n"
            "       gkrun [--config FILE.INI] COMMAND ...\n"
            "generation options: -n N (128; -1 = until the context is full), --temp T (0.8; 0 = greedy),\n"
            "  --top-k K (40; 0 = off), --top-p P (0.95; in (0, 1]), --seed S (0 to 2^64-1; random),\n"
            "  --backend NAME (auto), --dtype f32|f16|bf16|auto, --ctx N (1 to 2^31-1; the model's, at most 4096),\n"
            "  --kv-dtype f32|f16|bf16|auto (the KV cache; auto = the model dtype),\n"
            "  --json, -i/--chat, --verbose-prompt (print the prompt text and ids)\n"
            "commands:\n"
            "  inspect PATH [--json]          tensors, dtypes, shapes, architecture and config\n"
            "  verify DIR [--backend NAME] [--dtype f32|f16|bf16] [--kv-dtype D] [--tol X]\n"
            "                                 check a model (golden.safetensors) or a tokenizer\n"
            "                                 (tokenizer.json + golden.json) against reference data\n"
            "  compare -m DIR [--backend cuda] [--reference cpu_ref] [--dtype D] [--kv-dtype D] [--ids 1,2,3]\n"
            "          [--tol X] [--all]\n"
            "                                 diff every graph node between two backends\n"
            "  bench -m DIR [--backend NAME] [--dtype D] [--kv-dtype D] [-p N] [-n N] [-d DEPTH] [--reps R] [--json]\n"
            "                                 batch-1 prefill and decode speed beside the roofline\n"
            "                                 (-p + -n within the model's max positions)\n"
            "  tokenize (-m DIR | --tokenizer FILE) [--special] (TEXT | -)\n"
            "  detokenize (-m DIR | --tokenizer FILE) [--skip-special] [ID... | -]\n");
}

double gk_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Length of the UTF-8 sequence at p (n bytes available) and its code point;
 * 0 when it is not one (bad lead or continuation byte, overlong, surrogate,
 * beyond U+10FFFF, cut short). */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    } else if ((p[0] & 0xE0) == 0xC0) {
        len = 2, v = p[0] & 0x1Fu, min = 0x80;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3, v = p[0] & 0x0Fu, min = 0x800;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4, v = p[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (p[k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

size_t gkrun_put_escaped(FILE *f, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t out = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t n = utf8_seq(p + i, len - i, &cp);
        int w;
        if (n == 0) {
            w = fprintf(f, "\\x%02x", p[i]);
            n = 1;
        } else if (cp == '\\') {
            w = fputs("\\\\", f) >= 0 ? 2 : -1;
        } else if (cp == '\n' || cp == '\r' || cp == '\t' || cp == 0) {
            w = fprintf(f, "\\%c", cp == '\n' ? 'n' : cp == '\r' ? 'r' : cp == '\t' ? 't' : '0');
        } else if (cp < 0x20 || cp == 0x7F) {
            w = fprintf(f, "\\x%02x", (unsigned)cp);
        } else if (cp >= 0x80 && cp <= 0x9F) { /* C1 controls: U+009B is a CSI */
            w = fprintf(f, "\\u%04x", (unsigned)cp);
        } else {
            w = (int)fwrite(p + i, 1, n, f);
        }
        out += w > 0 ? (size_t)w : 0;
        i += n;
    }
    return out;
}

int gkrun_fail(const gk_err *err)
{
    fprintf(stderr, "gkrun: %s: %s\n", gk_status_str(err->code), err->msg);
    return 1;
}

gk_runtime *gkrun_runtime(const gkrun_common *c)
{
    gk_runtime *rt;
    gk_err err = {0};
    if (gk_runtime_create(c->ini, &rt, &err) != GK_OK) {
        gkrun_fail(&err);
        return NULL;
    }
    return rt;
}

static int dispatch(int argc, char **argv);

/* Whatever a command printed must have reached stdout: a closed or full
 * stdout is an error, not a silent exit 0. */
int main(int argc, char **argv)
{
    int rc = dispatch(argc, argv);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "gkrun: cannot write to stdout: %s\n", strerror(errno ? errno : EIO));
        return rc ? rc : 1;
    }
    return rc;
}

static int dispatch(int argc, char **argv)
{
    gkrun_common c = {0};
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            c.ini = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            /* any other option: text generation (gkrun -m DIR -p ...) */
            return gkrun_generate(argc - i + 1, argv + i - 1, &c);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i];
    if (!strcmp(cmd, "inspect"))
        return gkrun_inspect(argc - i, argv + i, &c);
    if (!strcmp(cmd, "verify"))
        return gkrun_verify(argc - i, argv + i, &c);
    if (!strcmp(cmd, "compare"))
        return gkrun_compare(argc - i, argv + i, &c);
    if (!strcmp(cmd, "bench"))
        return gkrun_bench(argc - i, argv + i, &c);
    if (!strcmp(cmd, "tokenize"))
        return gkrun_tokenize(argc - i, argv + i);
    if (!strcmp(cmd, "detokenize"))
        return gkrun_detokenize(argc - i, argv + i);
    fprintf(stderr, "gkrun: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
