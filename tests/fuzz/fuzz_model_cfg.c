/* fuzz_model_cfg.c - libFuzzer harness: config.json against real weights.
 *
 * Input: byte 0 picks a reference model of tests/data/models (low two bits:
 * llama-tiny, gpt2-tiny, qwen3-tiny, llama-tiny-f16-sharded) and the dtype to
 * load in (next two bits: the checkpoint's, f32, f16, bf16); the rest is its
 * config.json, optionally followed by a NUL byte and generation_config.json.
 * The model is loaded on cpu_ref (n_ctx 16) and asked for 2 greedy tokens after
 * a 3-token prompt; the tokens it returns must be inside its vocabulary. A config
 * that disagrees with the weights must be refused with a status, never run off
 * the end of a tensor. Not here: config.json syntax alone (fuzz_config.c).
 */
#include "fuzz.h"

static const char *const models[4] = {"llama-tiny", "gpt2-tiny", "qwen3-tiny", "llama-tiny-f16-sharded"};
static const char *const dtypes[4] = {NULL, "f32", "f16", "bf16"};
static gk_runtime *rt;

/* Link every weight file of tests/data/models/NAME into <scratch>/NAME. */
static void link_weights(const char *name)
{
    char dir[FZ_PATH_MAX], src[FZ_PATH_MAX], dst[FZ_PATH_MAX + 64];
    fz_mkdir(fz_path(dir, name));
    if (strcmp(name, "llama-tiny-f16-sharded") != 0) {
        snprintf(src, sizeof src, "%s/models/%s/model.safetensors", FZ_DATA(), name);
        snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
        fz_link(src, dst);
        return;
    }
    for (int i = 0; i <= 8; i++) {
        char file[64];
        if (i == 0)
            snprintf(file, sizeof file, "model.safetensors.index.json");
        else
            snprintf(file, sizeof file, "model-%05d-of-00008.safetensors", i);
        snprintf(src, sizeof src, "%s/models/%s/%s", FZ_DATA(), name, file);
        snprintf(dst, sizeof dst, "%s/%s", dir, file);
        fz_link(src, dst);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    gk_err e;
    if (gk_runtime_create(NULL, &rt, &e) != GK_OK)
        fz_die("gk_runtime_create", e.msg);
    for (int i = 0; i < 4; i++)
        link_weights(models[i]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 1)
        return 0;
    char dir[FZ_PATH_MAX], cfg[FZ_PATH_MAX + 32], gen[FZ_PATH_MAX + 32];
    fz_path(dir, models[d[0] & 3]);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    const uint8_t *nul = memchr(d + 1, 0, n - 1);
    fz_write(cfg, d + 1, nul ? (size_t)(nul - d - 1) : n - 1);
    if (nul)
        fz_write(gen, nul + 1, n - (size_t)(nul + 1 - d));
    else
        unlink(gen);

    gk_model_opts o = {.backend = "cpu_ref", .dtype = dtypes[(d[0] >> 2) & 3], .n_ctx = 16};
    gk_model *m = NULL;
    gk_err e;
    if (gk_model_load(rt, dir, &o, &m, &e) != GK_OK)
        return 0;
    int32_t prompt[3] = {1, 2, 3}, out[2];
    int64_t n_out = 0;
    gk_gen_opts g = gk_gen_opts_default();
    g.max_new_tokens = 2;
    if (gk_model_generate(m, prompt, 3, &g, out, &n_out, NULL, &e) == GK_OK) {
        int64_t n_vocab = gk_model_config(m)->n_vocab;
        if (n_out < 0 || n_out > 2)
            fz_fail("generate returned more tokens than asked for", NULL);
        for (int64_t i = 0; i < n_out; i++)
            if (out[i] < 0 || out[i] >= n_vocab)
                fz_fail("generate returned a token outside the vocabulary", NULL);
    }
    gk_model_destroy(m);
    return 0;
}
