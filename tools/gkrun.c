/* gkrun - the command-line front end: generate, chat, inspect, verify, compare, bench, tokenize.
 *
 *   gkrun inspect PATH [--json]
 *   gkrun verify DIR [--backend NAME] [--dtype D] [--tol X]
 *   gkrun compare -m DIR --backend cuda --reference cpu_ref [--dtype D] [--ids ...]
 *   gkrun serve -m DIR [--host ADDR] [--port N] [-np N] [-c N] [--api-key KEY]
 *
 * Global options (before the subcommand): --config FILE.INI, --version, -h/--help.
 * -h/--help anywhere on a subcommand's line prints that subcommand's usage.
 * Every failure prints one line naming its cause and exits non-zero.
 */
#include "gkrun.h"
#include "gkrun_template.h"
#include "gkrun_tokenize.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* One entry per subcommand: its usage lines and the options that take a
 * value (so that "-h" given as a value is not taken for help). */
typedef struct command {
    const char *name, *usage;
    const char *const *value_opts;
} command;

static const char *const generate_values[] = {
    "-m", "--model", "-p", "--prompt", "-f", "--file", "--prompt-file", "-n", "--n-predict", "--temp", "--top-k",
    "--top-p", "--min-p", "--repeat-penalty", "--repeat-last-n", "--presence-penalty", "--frequency-penalty",
    "-s", "--seed", "--backend", "--dtype", "--kv-dtype", "-c", "--ctx", "--ctx-size", "-ub", "--ubatch",
    "--ubatch-size", "--stop", "-sys",
    "--system-prompt", "--config", NULL};
static const char *const verify_values[] = {"--backend", "--dtype", "--kv-dtype", "--ubatch", "--tol", NULL};
static const char *const compare_values[] = {"-m", "--backend", "--reference", "--dtype", "--kv-dtype", "--ids",
                                             "--ubatch", "--tol", NULL};
static const char *const bench_values[] = {"-m", "--backend", "--dtype", "--kv-dtype", "-p", "-n", "-d", "--reps",
                                           "--ubatch", "-np", "--parallel", NULL};
static const char *const tokenizer_values[] = {"-m", "--tokenizer", NULL};
static const char *const no_values[] = {NULL};
static const char *const serve_values[] = {"-m", "--model", "--host", "--port", "-np", "--parallel", "-c",
                                           "--ctx-size", "--api-key", "--timeout", "--alias", "--backend",
                                           "--dtype", "--kv-dtype", NULL};
static const char *const template_values[] = {"-m", "--model", "--messages", "--extra", "--name", NULL};

static const command commands[] = {
    {"inspect", "usage: gkrun inspect PATH [--json]\n"
                "  tensors, dtypes, shapes, architecture and config of a .safetensors file, an index or a folder\n",
     no_values},
    {"verify", "usage: gkrun verify DIR|FILE.json [--backend NAME] [--dtype f32|f16|bf16] [--kv-dtype D]\n"
               "                    [--ubatch N] [--tol X]\n"
               "  check a model (golden.safetensors), a tokenizer (tokenizer.json + golden.json) or chat-template\n"
               "  goldens (FILE.json or a folder of them) against reference data; --tol: finite, > 0 (the default\n"
               "  depends on the dtype); --ubatch: tokens per forward graph, 1 to 2^31-1\n",
     verify_values},
    {"compare", "usage: gkrun compare -m DIR [--backend cuda] [--reference cpu_ref] [--dtype D] [--kv-dtype D]\n"
                "                     [--ids 1,2,3] [--ubatch N] [--tol X] [--all]\n"
                "  diff every graph node between two backends; --ids: 0 to 2^31-1 each; --tol: finite, > 0;\n"
                "  --ubatch N: tokens per forward graph (the last micro-batch is compared)\n",
     compare_values},
    {"bench", "usage: gkrun bench -m DIR [--backend NAME] [--dtype D] [--kv-dtype D] [-p N] [-n N] [-d DEPTH]\n"
              "                   [--reps R] [--ubatch N] [-np N] [--json]\n"
              "  batch-1 prefill and decode speed beside the roofline: -p prompt tokens (32), -n new tokens (128),\n"
              "  both >= 1 and with -d (>= 0, 0) within the model's max positions; --reps 1 to 100000 (3);\n"
              "  -np N (1 to 4096): N sequences decoded together, one forward pass per step (aggregate tokens/s)\n",
     bench_values},
    {"tokenize", "usage: gkrun tokenize (-m DIR | --tokenizer FILE) [--special] (TEXT | -)\n"
                 "  print the ids of TEXT (-: stdin); --special adds the special tokens (BOS)\n",
     tokenizer_values},
    {"detokenize", "usage: gkrun detokenize (-m DIR | --tokenizer FILE) [--skip-special] [ID... | -]\n"
                   "  print the text of the ids (0 to 2^31-1; read from stdin when none are given)\n",
     tokenizer_values},
    {"chat-template", "usage: gkrun chat-template -m DIR --messages FILE.json [--add-generation-prompt]\n"
                      "                           [--extra JSON] [--name NAME]\n"
                      "  print the model's chat-template rendering of the messages (a JSON array); --extra: a JSON\n"
                      "  object of further variables (tools, enable_thinking, ...); --name: one of several templates\n",
     template_values},
    {"serve", "usage: gkrun serve -m DIR [--host ADDR] [--port N] [-np/--parallel N] [-c/--ctx-size N]\n"
              "                   [--api-key KEY] [--timeout S] [--alias NAME] [--backend NAME] [--dtype D]\n"
              "                   [--kv-dtype D]\n"
              "  an OpenAI-compatible HTTP server (docs/serve.md): /v1/chat/completions, /v1/completions,\n"
              "  /v1/models, /health, /metrics; --host an IPv4 address (127.0.0.1), --port 0 to 65535 (8080;\n"
              "  0: any free one, printed), --parallel 1 to 256 requests decoded together (4; the queue holds\n"
              "  4 times as many), --ctx-size positions per request (the model's, at most 4096), --timeout\n"
              "  idle seconds before a connection is closed, 1 to 86400 (600); --alias: the model's name\n",
     serve_values},
};

void gkrun_usage(FILE *f)
{
    fprintf(f,
            "usage: gkrun [--config FILE.INI] -m DIR [-p TEXT | -f FILE | < stdin] [options]\n"
            "       gkrun [--config FILE.INI] -m DIR --chat [options]\n"
            "       gkrun [--config FILE.INI] COMMAND ...     (gkrun COMMAND --help: its options)\n"
            "       gkrun --version | -h | --help\n"
            "sampling (greedy unless generation_config.json or a flag says otherwise; -v shows the chain):\n"
            "  -n, --n-predict N        new tokens, -1 = until EOS or the context is full\n"
            "                           (generation_config.json's max_new_tokens / max_length, else 128)\n"
            "  --temp T                 temperature, finite, >= 0; 0 = greedy; > 0 samples\n"
            "  --top-k K                >= 0, 0 = off      --top-p P    in (0, 1], 1 = off\n"
            "  --min-p P                in [0, 1], 0 = off\n"
            "  --repeat-penalty P       finite, > 0, 1 = off    --repeat-last-n N   -1 (all) to 2^31-1 (64)\n"
            "  --presence-penalty P     finite, 0 = off    --frequency-penalty P   finite, 0 = off\n"
            "  -s, --seed S             0 to 2^64-1, -1 = random (the default; printed)\n"
            "  --stop STR               stop at STR (repeatable; STR itself is not printed)\n"
            "  --ignore-eos             do not stop at EOS ids\n"
            "model and input:\n"
            "  -m, --model DIR          a folder with config.json, weights and tokenizer.json\n"
            "  -p, --prompt TEXT        -f, --file, --prompt-file FILE    (neither: stdin)\n"
            "  --backend NAME (auto)    --dtype f32|f16|bf16|auto    --kv-dtype f32|f16|bf16|auto\n"
            "  -c, --ctx, --ctx-size N  context, 1 to 2^31-1 (the model's max positions, at most 4096)\n"
            "  -ub, --ubatch, --ubatch-size N  tokens per forward graph, 1 to 2^31-1 (512 where a\n"
            "                           sliding window keeps a ring cache, else the whole prompt)\n"
            "  --megakernel, --no-megakernel  cuda decode as one persistent kernel per step, or\n"
            "                           per-op (the default for now); any command takes them\n"
            "  -i, --chat, --interactive   chat with the model's template;\n"
            "  -sys, --system-prompt TEXT  the system message of the chat\n"
            "output:\n"
            "  --json                   one object on stdout (text, tokens, stats)\n"
            "  -v, --verbose            print the sampler chain and where each value came from\n"
            "  --verbose-prompt         print the prompt text and ids\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fputs(commands[i].usage + strlen("usage: "), f);
}

/* True when argv (from 1) holds flag a or b (may be NULL) outside an option's value. */
static bool has_flag(int argc, char **argv, const char *const *value_opts, const char *a, const char *b)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], a) || (b && !strcmp(argv[i], b)))
            return true;
        for (const char *const *v = value_opts; *v; v++)
            if (!strcmp(argv[i], *v)) {
                i++;
                break;
            }
    }
    return false;
}

static bool help_asked(int argc, char **argv, const char *const *value_opts)
{
    return has_flag(argc, argv, value_opts, "-h", "--help");
}

/* An option that takes a value given last, without one: exit 2 after the message. */
static bool value_missing(int argc, char **argv, const char *cmd, const char *const *value_opts)
{
    for (int i = 1; i < argc; i++) {
        for (const char *const *v = value_opts; *v; v++) {
            if (strcmp(argv[i], *v))
                continue;
            if (i + 1 >= argc) {
                fprintf(stderr, "gkrun%s%s: option '%s' needs a value\n", cmd ? " " : "", cmd ? cmd : "", argv[i]);
                return true;
            }
            i++;
            break;
        }
    }
    return false;
}

static void version(void)
{
    printf("gkrun (gk) %s\n", gk_version());
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

const char *gkrun_cache_desc(const gk_model *m, char *buf, size_t len)
{
    int64_t n_layer = gk_model_config(m)->n_layer, n_ring = 0, rows = 0;
    for (int64_t l = 0; l < n_layer; l++) {
        int64_t r = gk_model_cache_rows(m, l);
        if (r < gk_model_n_ctx(m)) {
            n_ring++;
            rows = r > rows ? r : rows;
        }
    }
    if (n_ring)
        snprintf(buf, len, "%lld-token KV cache, rings of at most %lld rows on %lld of %lld layers, %lld tokens per "
                 "forward graph",
                 (long long)gk_model_n_ctx(m), (long long)rows, (long long)n_ring, (long long)n_layer,
                 (long long)gk_model_n_ubatch(m));
    else
        snprintf(buf, len, "%lld-token KV cache", (long long)gk_model_n_ctx(m));
    return buf;
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
/* --megakernel / --no-megakernel, anywhere on the line (but as the text of
 * -p, --stop or a system prompt): the CUDA backend's decode runs as one
 * persistent kernel per step, or per-op (the default for now). Taken out of
 * argv before the command parses it; the backend reads GK_MEGAKERNEL (1 /
 * 0) when it starts. */
static int take_no_megakernel(int argc, char **argv)
{
    int o = 1;
    for (int i = 1; i < argc; i++) {
        const char *prev = i > 1 ? argv[i - 1] : "";
        const bool text = !strcmp(prev, "-p") || !strcmp(prev, "--prompt") || !strcmp(prev, "--stop") ||
                          !strcmp(prev, "-sys") || !strcmp(prev, "--system-prompt");
        if (!text && (!strcmp(argv[i], "--no-megakernel") || !strcmp(argv[i], "--megakernel"))) {
            setenv("GK_MEGAKERNEL", argv[i][2] == 'n' ? "0" : "1", 1);
            continue;
        }
        argv[o++] = argv[i];
    }
    argv[o] = NULL;
    return o;
}

int main(int argc, char **argv)
{
    argc = take_no_megakernel(argc, argv);
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
            gkrun_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            version();
            return 0;
        } else {
            /* any other option: text generation (gkrun -m DIR -p ...) */
            int gc = argc - i + 1;
            char **gv = argv + i - 1;
            if (help_asked(gc, gv, generate_values)) {
                gkrun_usage(stdout);
                return 0;
            }
            if (has_flag(gc, gv, generate_values, "--version", NULL)) {
                version();
                return 0;
            }
            if (value_missing(gc, gv, NULL, generate_values))
                return 2;
            return gkrun_generate(gc, gv, &c);
        }
    }
    if (i >= argc) {
        gkrun_usage(stderr);
        return 2;
    }
    const char *cmd = argv[i];
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(cmd, commands[k].name))
            continue;
        if (help_asked(argc - i, argv + i, commands[k].value_opts)) {
            fputs(commands[k].usage, stdout);
            return 0;
        }
        if (value_missing(argc - i, argv + i, cmd, commands[k].value_opts))
            return 2;
        break;
    }
    if (!strcmp(cmd, "inspect"))
        return gkrun_inspect(argc - i, argv + i, &c);
    if (!strcmp(cmd, "verify"))
        return gkrun_verify(argc - i, argv + i, &c);
    if (!strcmp(cmd, "compare"))
        return gkrun_compare(argc - i, argv + i, &c);
    if (!strcmp(cmd, "bench"))
        return gkrun_bench(argc - i, argv + i, &c);
    if (!strcmp(cmd, "serve"))
        return gkrun_serve(argc - i, argv + i, &c);
    if (!strcmp(cmd, "tokenize"))
        return gkrun_tokenize(argc - i, argv + i);
    if (!strcmp(cmd, "chat-template"))
        return gkrun_template_cmd(argc - i, argv + i);
    if (!strcmp(cmd, "detokenize"))
        return gkrun_detokenize(argc - i, argv + i);
    fprintf(stderr, "gkrun: unknown command '%s' (gkrun --help lists them)\n", cmd);
    return 2;
}
