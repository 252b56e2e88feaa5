/* fuzz_safetensors.c - libFuzzer harness: the input is a whole .safetensors file.
 *
 * Written to the scratch folder, opened with gk_safetensors_open and walked
 * (fz_walk_safetensors: info, zero-copy bytes, read_f32/read_i64, metadata).
 * Whatever the bytes, the answer is a status, never a read outside the file.
 * Not here: headers behind a length the harness gets right (fuzz_st_header.c),
 * indexes of sharded checkpoints (fuzz_index.c).
 */
#include "fuzz.h"

static char path[FZ_PATH_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (!path[0])
        fz_path(path, "model.safetensors");
    fz_write(path, d, n);
    gk_safetensors *st = NULL;
    gk_err e;
    if (gk_safetensors_open(path, &st, &e) == GK_OK)
        fz_walk_safetensors(st, 1u << 20);
    gk_safetensors_close(st);
    return 0;
}
