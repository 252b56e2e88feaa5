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
            "generation options: -n N (128), --temp T (0.8; 0 = greedy), --top-k K (40), --top-p P (0.95),\n"
            "  --seed S (random), --backend NAME (auto), --dtype f32|f16|bf16|auto, --ctx N, --json, -i/--chat,\n"
            "  --verbose-prompt (print the prompt text and ids)\n"
            "commands:\n"
            "  inspect PATH [--json]          tensors, dtypes, shapes, architecture and config\n"
            "  verify DIR [--backend NAME] [--dtype f32|f16|bf16] [--tol X]\n"
            "                                 check a model (golden.safetensors) or a tokenizer\n"
            "                                 (tokenizer.json + golden.json) against reference data\n"
            "  compare -m DIR [--backend cuda] [--reference cpu_ref] [--dtype D] [--ids 1,2,3] [--tol X] [--all]\n"
            "                                 diff every graph node between two backends\n"
            "  bench -m DIR [--backend NAME] [--dtype D] [-p N] [-n N] [--reps R]\n"
            "                                 batch-1 prefill and decode speed beside the roofline\n"
            "  tokenize (-m DIR | --tokenizer FILE) [--special] (TEXT | -)\n"
            "  detokenize (-m DIR | --tokenizer FILE) [--skip-special] [ID... | -]\n");
}

double gk_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

int main(int argc, char **argv)
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
