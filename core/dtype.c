/* dtype.c - element types: their safetensors spellings, sizes, and the scalar
 * F16/BF16 <-> F32 conversions every loader and backend shares.
 *
 * Conversions to the narrow types round to nearest, ties to even, keep NaN a
 * (quiet) NaN, saturate to infinity on overflow and produce subnormals where
 * the value calls for them. This file is not a vectorised converter: backends
 * that need speed write their own and test it against these.
 */
#include "gk_internal.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[GK_DTYPE_COUNT] = {
    [GK_DTYPE_F32] = {"F32", 4},
    [GK_DTYPE_F16] = {"F16", 2},
    [GK_DTYPE_BF16] = {"BF16", 2},
    [GK_DTYPE_F64] = {"F64", 8},
    [GK_DTYPE_I64] = {"I64", 8},
    [GK_DTYPE_I32] = {"I32", 4},
    [GK_DTYPE_I16] = {"I16", 2},
    [GK_DTYPE_I8] = {"I8", 1},
    [GK_DTYPE_U64] = {"U64", 8},
    [GK_DTYPE_U32] = {"U32", 4},
    [GK_DTYPE_U16] = {"U16", 2},
    [GK_DTYPE_U8] = {"U8", 1},
    [GK_DTYPE_BOOL] = {"BOOL", 1},
    [GK_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [GK_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

const char *gk_dtype_name(gk_dtype t)
{
    if ((unsigned)t >= GK_DTYPE_COUNT)
        return NULL;
    return dtypes[t].name;
}

size_t gk_dtype_size(gk_dtype t)
{
    if ((unsigned)t >= GK_DTYPE_COUNT)
        return 0;
    return dtypes[t].size;
}

bool gk_dtype_parse(const char *name, gk_dtype *out)
{
    if (!name)
        return false;
    for (int i = 0; i < GK_DTYPE_COUNT; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            if (out)
                *out = (gk_dtype)i;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------ conversions */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float gk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;

    if (exp == 0x1f) /* Inf or NaN: the payload moves along */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp != 0)
        return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0)
        return f32_from_bits(sign);
    /* Subnormal half: normalise into an F32 normal. */
    exp = 113;
    while (!(man & 0x400)) {
        man <<= 1;
        exp--;
    }
    return f32_from_bits(sign | (exp << 23) | ((man & 0x3ff) << 13));
}

uint16_t gk_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    uint32_t exp = ax >> 23;

    if (ax > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
    if (exp >= 143) /* >= 2^16 (or Inf): beyond the largest half */
        return sign | 0x7c00;
    if (exp >= 113) { /* normal half; a carry may roll over into Inf, rightly */
        uint32_t h = ((exp - 112) << 10) | ((ax >> 13) & 0x3ff);
        uint32_t rem = ax & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
            h++;
        return sign | (uint16_t)h;
    }
    if (exp < 102) /* below 2^-25: rounds to zero */
        return sign;
    /* Subnormal half: value / 2^-24, rounded; may round up to the smallest normal. */
    uint32_t man = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exp; /* 14 .. 24 */
    uint32_t h = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float gk_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t gk_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
