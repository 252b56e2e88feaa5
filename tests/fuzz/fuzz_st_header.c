/* fuzz_st_header.c - libFuzzer harness for the safetensors header, structure-aware.
 *
 * Input: bytes 0-1 give the length of the data section (little-endian, 0 to
 * 65535 bytes of 0x3f), the rest is the JSON header. The harness writes the
 * 8-byte header length itself, so every mutation reaches the JSON rules (dtype,
 * shape, data_offsets, the tiling of the data section, __metadata__) instead of
 * dying at the length check. The file is then walked as fuzz_safetensors.c does.
 * Not here: the length prefix itself (fuzz_safetensors.c).
 */
#include "fuzz.h"

static char path[FZ_PATH_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 2)
        return 0;
    if (!path[0])
        fz_path(path, "header.safetensors");
    size_t data_len = d[0] | (size_t)d[1] << 8, header_len = n - 2;
    uint8_t *file = malloc(8 + header_len + data_len);
    if (!file)
        fz_die("out of memory", "file");
    uint64_t hl = header_len; /* little-endian host, as safetensors.c assumes */
    memcpy(file, &hl, 8);
    memcpy(file + 8, d + 2, header_len);
    memset(file + 8 + header_len, 0x3f, data_len);
    fz_write(path, file, 8 + header_len + data_len);
    free(file);

    gk_safetensors *st = NULL;
    gk_err e;
    if (gk_safetensors_open(path, &st, &e) == GK_OK)
        fz_walk_safetensors(st, 1u << 16);
    gk_safetensors_close(st);
    return 0;
}
