/* fuzz_index.c - libFuzzer harness: the input is a model.safetensors.index.json.
 *
 * It is written beside the 8 real shards of tests/data/models/
 * llama-tiny-f16-sharded (symbolic links made once), a shard name that is a
 * folder (adir.safetensors) and one holding garbage (junk.safetensors); then
 * opened and walked, which opens every shard the index names and reads every
 * tensor. Not here: the shards' own headers (fuzz_safetensors.c).
 */
#include "fuzz.h"

static char path[FZ_PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char src[FZ_PATH_MAX], dst[FZ_PATH_MAX], name[64];
    for (int i = 1; i <= 8; i++) {
        snprintf(name, sizeof name, "model-%05d-of-00008.safetensors", i);
        snprintf(src, sizeof src, "%s/models/llama-tiny-f16-sharded/%s", FZ_DATA(), name);
        fz_link(src, fz_path(dst, name));
    }
    fz_mkdir(fz_path(dst, "adir.safetensors"));
    fz_write(fz_path(dst, "junk.safetensors"), "garbagegarbage", 14);
    fz_path(path, "model.safetensors.index.json");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fz_write(path, d, n);
    gk_safetensors *st = NULL;
    gk_err e;
    if (gk_safetensors_open(path, &st, &e) == GK_OK)
        fz_walk_safetensors(st, 1u << 20);
    gk_safetensors_close(st);
    return 0;
}
