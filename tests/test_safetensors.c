/* test_safetensors.c - the safetensors reader and the dtype helpers, checked
 * against independent oracles: the reference checkpoints read byte by byte with
 * fread and a separate header parse, golden.json, exact double-precision
 * rounding for the narrow float types, and a table of broken files that must
 * each fail with the right status and a message naming the file and tensor.
 *
 * Not here: loading a model (test_model.c) or the 16 GB timing (bench_safetensors).
 */
#include <criterion/criterion.h>

#include "gk/gk.h"
#include "safetensors_impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static char *model_path(const char *model, const char *file)
{
    const char *root = getenv("GK_TEST_DATA");
    cr_assert(root, "GK_TEST_DATA is not set");
    size_t n = strlen(root) + strlen(model) + strlen(file) + 16;
    char *p = malloc(n);
    cr_assert(p);
    snprintf(p, n, "%s/models/%s/%s", root, model, file);
    return p;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* The oracle's view of one file: its raw bytes and its header, parsed apart. */
typedef struct raw_file {
    unsigned char *bytes;
    size_t len;
    uint64_t data_start;
    cJSON *header;
} raw_file;

static raw_file raw_open(const char *path)
{
    raw_file r = {0};
    r.bytes = slurp(path, &r.len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | r.bytes[i];
    r.data_start = 8 + n;
    r.header = cJSON_ParseWithLength((const char *)r.bytes + 8, n);
    cr_assert(r.header, "%s: oracle cannot parse the header", path);
    return r;
}

static void raw_close(raw_file *r)
{
    cJSON_Delete(r->header);
    free(r->bytes);
}

/* Value of element i of a raw tensor, decoded by hand. */
static double raw_value(const unsigned char *p, const char *dtype, size_t i)
{
    if (strcmp(dtype, "F32") == 0) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    if (strcmp(dtype, "F16") == 0) {
        unsigned h = p[2 * i] | (unsigned)p[2 * i + 1] << 8;
        int e = (h >> 10) & 31, m = h & 1023;
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        return (h & 0x8000) ? -v : v;
    }
    if (strcmp(dtype, "BF16") == 0) {
        unsigned h = p[2 * i] | (unsigned)p[2 * i + 1] << 8;
        int e = (h >> 7) & 255, m = h & 127;
        double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
        return (h & 0x8000) ? -v : v;
    }
    cr_assert_fail("oracle does not decode %s", dtype);
    return 0;
}

static void write_file(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* A safetensors file: LE length, header text, then n_data bytes 0, 1, 2, ... */
static void write_st(const char *path, const char *header, size_t n_data)
{
    size_t hl = strlen(header), n = 8 + hl + n_data;
    unsigned char *b = malloc(n);
    cr_assert(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < n_data; i++)
        b[8 + hl + i] = (unsigned char)i;
    write_file(path, b, n);
    free(b);
}

static char tmp_root[64];

static char *tmp_path(const char *name)
{
    size_t n = strlen(tmp_root) + strlen(name) + 2;
    char *p = malloc(n);
    cr_assert(p);
    snprintf(p, n, "%s/%s", tmp_root, name);
    return p;
}

static void tmp_setup(void)
{
    strcpy(tmp_root, "/tmp/gk_st_test_XXXXXX");
    cr_assert(mkdtemp(tmp_root), "mkdtemp failed");
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void tmp_teardown(void)
{
    if (tmp_root[0])
        nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- dtypes */

Test(dtype, names_sizes_and_parse_round_trip)
{
    static const struct { gk_dtype t; const char *name; size_t size; } want[] = {
        {GK_DTYPE_F32, "F32", 4}, {GK_DTYPE_F16, "F16", 2}, {GK_DTYPE_BF16, "BF16", 2},
        {GK_DTYPE_F64, "F64", 8}, {GK_DTYPE_I64, "I64", 8}, {GK_DTYPE_I32, "I32", 4},
        {GK_DTYPE_I16, "I16", 2}, {GK_DTYPE_I8, "I8", 1}, {GK_DTYPE_U64, "U64", 8},
        {GK_DTYPE_U32, "U32", 4}, {GK_DTYPE_U16, "U16", 2}, {GK_DTYPE_U8, "U8", 1},
        {GK_DTYPE_BOOL, "BOOL", 1}, {GK_DTYPE_F8_E4M3, "F8_E4M3", 1},
        {GK_DTYPE_F8_E5M2, "F8_E5M2", 1},
    };
    cr_assert_eq(sizeof want / sizeof want[0], GK_DTYPE_COUNT);
    for (size_t i = 0; i < GK_DTYPE_COUNT; i++) {
        cr_assert_str_eq(gk_dtype_name(want[i].t), want[i].name);
        cr_assert_eq(gk_dtype_size(want[i].t), want[i].size, "%s", want[i].name);
        gk_dtype t = GK_DTYPE_COUNT;
        cr_assert(gk_dtype_parse(want[i].name, &t));
        cr_assert_eq(t, want[i].t);
    }
    cr_assert_null(gk_dtype_name(GK_DTYPE_COUNT));
    cr_assert_null(gk_dtype_name((gk_dtype)-1));
    cr_assert_eq(gk_dtype_size(GK_DTYPE_COUNT), 0);
    gk_dtype t = GK_DTYPE_I8;
    cr_assert_not(gk_dtype_parse("f32", &t));  /* spellings are case-sensitive */
    cr_assert_not(gk_dtype_parse("F33", &t));
    cr_assert_not(gk_dtype_parse("", &t));
    cr_assert_not(gk_dtype_parse(NULL, &t));
    cr_assert_eq(t, GK_DTYPE_I8, "a failed parse leaves *out alone");
}

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Exact round-to-nearest-even of x onto a float grid with man_bits of mantissa,
 * smallest normal exponent emin and largest finite value max; returned as float
 * (every such value is a float). */
static float round_grid(float x, int man_bits, int emin, double max)
{
    if (isnan(x))
        return x;
    double ax = fabs((double)x);
    if (isinf(x))
        return x;
    int e;
    frexp(ax, &e);
    int ue = e - 1 - man_bits;
    if (ue < emin - man_bits)
        ue = emin - man_bits;
    double r = ldexp(nearbyint(ldexp(ax, -ue)), ue);
    float rf = r > max ? INFINITY : (float)r;
    return signbit(x) ? -rf : rf;
}

static void check_f16(float x)
{
    float want = round_grid(x, 10, -14, 65504.0);
    float got = gk_f16_to_f32(gk_f32_to_f16(x));
    if (isnan(want))
        cr_assert(isnan(got), "f16(%a) should stay NaN", x);
    else
        cr_assert_eq(fbits(got), fbits(want), "f16(%a): got %a, want %a", x, got, want);
}

static void check_bf16(float x)
{
    float want = round_grid(x, 7, -126, ldexp(255.0, 120)); /* (2 - 2^-7) * 2^127 */
    float got = gk_bf16_to_f32(gk_f32_to_bf16(x));
    if (isnan(want))
        cr_assert(isnan(got), "bf16(%a) should stay NaN", x);
    else
        cr_assert_eq(fbits(got), fbits(want), "bf16(%a): got %a, want %a", x, got, want);
}

Test(dtype, f16_to_f32_matches_the_formula_for_all_65536_values)
{
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023;
        float got = gk_f16_to_f32((uint16_t)h);
        if (e == 31 && m) {
            cr_assert(isnan(got), "0x%04x is NaN", h);
            continue;
        }
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
        float want = (float)((h & 0x8000) ? -v : v);
        cr_assert_eq(fbits(got), fbits(want), "0x%04x: got %a want %a", h, got, want);
        if (!isnan(got))
            cr_assert_eq(gk_f32_to_f16(got), h, "0x%04x does not round-trip", h);
    }
}

Test(dtype, f32_to_f16_rounds_to_nearest_even)
{
    for (uint64_t u = 0; u < (1ull << 32); u += 997)
        check_f16(bitsf((uint32_t)u));
    /* Ties and their neighbours between every pair of adjacent halves. */
    for (uint16_t h = 0; h < 0x7c00; h++) {
        float mid = (gk_f16_to_f32(h) + gk_f16_to_f32((uint16_t)(h + 1))) / 2;
        check_f16(mid);
        check_f16(-mid);
        check_f16(nextafterf(mid, 0));
        check_f16(nextafterf(mid, INFINITY));
    }
    cr_assert_eq(gk_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(gk_f32_to_f16(65519.996f), 0x7bff);
    cr_assert_eq(gk_f32_to_f16(65520.0f), 0x7c00, "the tie above the max rounds to Inf");
    cr_assert_eq(gk_f32_to_f16(-1e9f), 0xfc00);
    cr_assert_eq(gk_f32_to_f16(ldexpf(1, -24)), 0x0001, "smallest subnormal");
    cr_assert_eq(gk_f32_to_f16(ldexpf(1, -25)), 0x0000, "half of it ties to even zero");
    cr_assert_eq(gk_f32_to_f16(ldexpf(3, -26)), 0x0001);
    cr_assert_eq(gk_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(gk_f32_to_f16(1.0f), 0x3c00);
    uint16_t n = gk_f32_to_f16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff), "NaN stays NaN: 0x%04x", n);
    cr_assert(gk_f32_to_f16(bitsf(0x7f800001)) & 0x3ff, "signalling NaN must not become Inf");
}

Test(dtype, bf16_round_trips_and_rounds_to_nearest_even)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gk_bf16_to_f32((uint16_t)h);
        cr_assert_eq(fbits(f), h << 16);
        if (!isnan(f))
            cr_assert_eq(gk_f32_to_bf16(f), h, "0x%04x does not round-trip", h);
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 997)
        check_bf16(bitsf((uint32_t)u));
    for (uint32_t h = 0; h < 0x7f80; h++) {
        float mid = bitsf((h << 16) | 0x8000);  /* exactly between h and h + 1 */
        check_bf16(mid);
        check_bf16(-mid);
        check_bf16(nextafterf(mid, 0));
        check_bf16(nextafterf(mid, INFINITY));
    }
    cr_assert_eq(gk_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(gk_f32_to_bf16(bitsf(0x3f808000)), 0x3f80, "tie to even (down)");
    cr_assert_eq(gk_f32_to_bf16(bitsf(0x3f818000)), 0x3f82, "tie to even (up)");
    cr_assert_eq(gk_f32_to_bf16(bitsf(0x7f7fffff)), 0x7f80, "FLT_MAX rounds to Inf");
    uint16_t n = gk_f32_to_bf16(bitsf(0x7f800001));
    cr_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f), "NaN stays NaN: 0x%04x", n);
}

#ifdef __FLT16_MAX__
Test(dtype, f16_agrees_with_the_compilers_Float16)
{
    for (uint64_t u = 0; u < (1ull << 32); u += 65537) {
        float x = bitsf((uint32_t)u);
        _Float16 h = (_Float16)x;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        if (isnan(x))
            continue;
        cr_assert_eq(gk_f32_to_f16(x), hb, "%a", x);
    }
}
#endif

/* ------------------------------------------------- reference checkpoints */

typedef struct want_tensor {
    const char *name;
    gk_dtype dtype;
    int n_dims;
    int64_t shape[2];
} want_tensor;

/* Names in header order, shapes, dtypes and every value, against the oracle. */
static void check_against_oracle(const char *model, size_t n_tensors,
                                 const want_tensor *some, size_t n_some)
{
    char *path = model_path(model, "model.safetensors");
    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(path, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_count(st), n_tensors);
    cr_assert_eq(gk_safetensors_shard_count(st), 1);
    cr_assert_eq(gk_safetensors_shards_open(st), 1);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(gk_safetensors_file_size(st), (uint64_t)sb.st_size);
    cr_assert_eq(gk_safetensors_meta_count(st), 1);
    cr_assert_str_eq(gk_safetensors_meta_key(st, 0), "format");
    cr_assert_str_eq(gk_safetensors_meta(st, "format"), "pt");
    cr_assert_null(gk_safetensors_meta(st, "nope"));

    for (size_t i = 0; i < n_some; i++) {
        gk_tensor_info ti;
        cr_assert(gk_safetensors_has(st, some[i].name), "%s", some[i].name);
        cr_assert_eq(gk_safetensors_info(st, some[i].name, &ti, &err), GK_OK, "%s", err.msg);
        cr_assert_str_eq(ti.name, some[i].name);
        cr_assert_eq(ti.dtype, some[i].dtype, "%s", some[i].name);
        cr_assert_eq(ti.n_dims, some[i].n_dims, "%s", some[i].name);
        for (int d = 0; d < ti.n_dims; d++)
            cr_assert_eq(ti.shape[d], some[i].shape[d], "%s dim %d", some[i].name, d);
        cr_assert_eq(ti.shard, 0);
    }

    raw_file raw = raw_open(path);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, raw.header) {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        cr_assert_str_eq(gk_safetensors_name(st, i), e->string, "header order at %zu", i);
        i++;
        const char *dtype = cJSON_GetObjectItem(e, "dtype")->valuestring;
        const cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
        uint64_t begin = (uint64_t)off->child->valuedouble, end = (uint64_t)off->child->next->valuedouble;
        const unsigned char *p = raw.bytes + raw.data_start + begin;
        size_t n_elem = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(e, "shape"))
            n_elem *= (size_t)d->valuedouble;

        gk_tensor_info ti;
        cr_assert_eq(gk_safetensors_info(st, e->string, &ti, &err), GK_OK, "%s", err.msg);
        cr_assert_str_eq(gk_dtype_name(ti.dtype), dtype);
        cr_assert_eq(ti.nbytes, end - begin);
        const void *data;
        uint64_t nb;
        cr_assert_eq(gk_safetensors_bytes(st, e->string, &data, &nb, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(nb, end - begin);
        cr_assert_eq(memcmp(data, p, nb), 0, "%s: bytes differ from the file", e->string);

        float *v = malloc(n_elem * sizeof *v);
        cr_assert(v);
        cr_assert_eq(gk_safetensors_read_f32(st, e->string, v, n_elem, &err), GK_OK, "%s", err.msg);
        for (size_t k = 0; k < n_elem; k++)
            cr_assert_eq(v[k], (float)raw_value(p, dtype, k), "%s[%zu]", e->string, k);
        free(v);
    }
    cr_assert_eq(i, n_tensors);
    cr_assert_null(gk_safetensors_name(st, n_tensors));
    raw_close(&raw);
    gk_safetensors_close(st);
    free(path);
}

Test(checkpoint, gpt2_tiny_f32_matches_the_file)
{
    static const want_tensor some[] = {
        {"transformer.wte.weight", GK_DTYPE_F32, 2, {512, 64}},
        {"transformer.wpe.weight", GK_DTYPE_F32, 2, {128, 64}},
        {"transformer.h.0.attn.c_attn.weight", GK_DTYPE_F32, 2, {64, 192}},
        {"transformer.h.1.mlp.c_fc.bias", GK_DTYPE_F32, 1, {256}},
        {"transformer.ln_f.weight", GK_DTYPE_F32, 1, {64}},
    };
    check_against_oracle("gpt2-tiny", 28, some, sizeof some / sizeof some[0]);
}

Test(checkpoint, llama_tiny_f32_matches_the_file)
{
    static const want_tensor some[] = {
        {"lm_head.weight", GK_DTYPE_F32, 2, {512, 64}},
        {"model.embed_tokens.weight", GK_DTYPE_F32, 2, {512, 64}},
        {"model.layers.0.self_attn.k_proj.weight", GK_DTYPE_F32, 2, {32, 64}},
        {"model.layers.1.mlp.down_proj.weight", GK_DTYPE_F32, 2, {64, 176}},
        {"model.norm.weight", GK_DTYPE_F32, 1, {64}},
    };
    check_against_oracle("llama-tiny", 21, some, sizeof some / sizeof some[0]);
}

Test(checkpoint, qwen3_tiny_bf16_matches_the_file)
{
    static const want_tensor some[] = {
        {"model.embed_tokens.weight", GK_DTYPE_BF16, 2, {512, 64}},
        {"model.layers.0.self_attn.q_norm.weight", GK_DTYPE_BF16, 1, {32}},
        {"model.layers.0.self_attn.q_proj.weight", GK_DTYPE_BF16, 2, {128, 64}},
        {"model.layers.1.mlp.down_proj.weight", GK_DTYPE_BF16, 2, {64, 128}},
        {"model.norm.weight", GK_DTYPE_BF16, 1, {64}},
    };
    check_against_oracle("qwen3-tiny", 24, some, sizeof some / sizeof some[0]);
}

Test(checkpoint, lookup_errors_name_the_tensor)
{
    char *path = model_path("llama-tiny", "model.safetensors");
    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(path, &st, &err), GK_OK, "%s", err.msg);
    gk_tensor_info ti;
    cr_assert_not(gk_safetensors_has(st, "model.norm.bias"));
    cr_assert_eq(gk_safetensors_info(st, "model.norm.bias", &ti, &err), GK_ERR_NOT_FOUND);
    cr_assert_eq(err.code, GK_ERR_NOT_FOUND);
    cr_assert(strstr(err.msg, "model.norm.bias") && strstr(err.msg, "model.safetensors"), "%s", err.msg);

    float small[10];
    cr_assert_eq(gk_safetensors_read_f32(st, "model.norm.weight", small, 10, &err), GK_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "model.norm.weight") && strstr(err.msg, "64"), "%s", err.msg);
    int64_t ids[64];
    cr_assert_eq(gk_safetensors_read_i64(st, "model.norm.weight", ids, 64, &err), GK_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "model.norm.weight") && strstr(err.msg, "F32"), "%s", err.msg);
    gk_safetensors_close(st);
    gk_safetensors_close(NULL);
    cr_assert_eq(gk_safetensors_count(NULL), 0);
    free(path);
}

/* ------------------------------------------------------------------ golden */

static void check_golden(const char *model)
{
    char *jpath = model_path(model, "golden.json"), *spath = model_path(model, "golden.safetensors");
    size_t len;
    char *text = (char *)slurp(jpath, &len);
    cJSON *g = cJSON_Parse(text);
    cr_assert(g, "%s does not parse", jpath);
    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(spath, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_meta_count(st), 0);

    struct { char name[16]; const cJSON *list; } cases[6];
    size_t n_cases = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "prompts")) {
        snprintf(cases[n_cases].name, sizeof cases[n_cases].name, "p%zu.ids", n_cases);
        cases[n_cases++].list = p;
    }
    cr_assert_eq(n_cases, 4);
    strcpy(cases[n_cases].name, "gen.ids");
    cases[n_cases++].list = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "greedy"), "output");
    strcpy(cases[n_cases].name, "gen3.ids");
    cases[n_cases++].list = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "greedy_long"), "output");

    for (size_t c = 0; c < n_cases; c++) {
        size_t n = (size_t)cJSON_GetArraySize(cases[c].list);
        gk_tensor_info ti;
        cr_assert_eq(gk_safetensors_info(st, cases[c].name, &ti, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(ti.dtype, GK_DTYPE_I64);
        cr_assert_eq(ti.n_dims, 1);
        cr_assert_eq(ti.shape[0], (int64_t)n, "%s %s", model, cases[c].name);
        int64_t *ids = malloc(n * sizeof *ids);
        float *f = malloc(n * sizeof *f);
        cr_assert_eq(gk_safetensors_read_i64(st, cases[c].name, ids, n, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_safetensors_read_f32(st, cases[c].name, f, n, &err), GK_OK, "%s", err.msg);
        size_t k = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, cases[c].list) {
            cr_assert_eq(ids[k], (int64_t)v->valuedouble, "%s %s[%zu]", model, cases[c].name, k);
            cr_assert_eq(f[k], (float)v->valuedouble);
            k++;
        }
        free(ids);
        free(f);
    }
    gk_safetensors_close(st);
    cJSON_Delete(g);
    free(text);
    free(jpath);
    free(spath);
}

Test(golden, ids_match_golden_json)
{
    check_golden("gpt2-tiny");
    check_golden("llama-tiny");
    check_golden("qwen3-tiny");
    check_golden("llama-tiny-f16-sharded");
}

/* ----------------------------------------------------------------- sharded */

Test(sharded, index_names_shards_and_lazy_opening)
{
    const char *model = "llama-tiny-f16-sharded";
    char *ipath = model_path(model, "model.safetensors.index.json");
    size_t len;
    char *text = (char *)slurp(ipath, &len);
    cJSON *idx = cJSON_Parse(text);
    cr_assert(idx);
    const cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");

    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(ipath, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_shards_open(st), 0, "open must not open shards");
    cr_assert_eq(gk_safetensors_count(st), (size_t)cJSON_GetArraySize(wm));
    cr_assert_eq(gk_safetensors_count(st), 30);
    cr_assert_eq(gk_safetensors_shard_count(st), 8);

    /* Names in weight_map order; size = the sum of the 8 shards. */
    uint64_t total = 0;
    const char *files[8];
    size_t n_files = 0, i = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, wm) {
        cr_assert(gk_safetensors_has(st, kv->string));
        cr_assert_str_eq(gk_safetensors_name(st, i++), kv->string);
        bool seen = false;
        for (size_t f = 0; f < n_files; f++)
            seen |= strcmp(files[f], kv->valuestring) == 0;
        if (!seen) {
            files[n_files++] = kv->valuestring;
            char *sp = model_path(model, kv->valuestring);
            struct stat sb;
            cr_assert_eq(stat(sp, &sb), 0);
            total += (uint64_t)sb.st_size;
            free(sp);
        }
    }
    cr_assert_eq(n_files, 8);
    cr_assert_eq(gk_safetensors_file_size(st), total);
    cr_assert_str_eq(gk_safetensors_meta(st, "total_size"), "408448");
    cr_assert_str_eq(gk_safetensors_meta(st, "total_parameters"), "204224");
    cr_assert_eq(gk_safetensors_shards_open(st), 0, "names and metadata need no shard");

    /* Touch one tensor: exactly its shard opens; values match its file. */
    gk_tensor_info ti;
    cr_assert_eq(gk_safetensors_info(st, "model.embed_tokens.weight", &ti, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_shards_open(st), 1);
    cr_assert_eq(ti.dtype, GK_DTYPE_F16);
    cr_assert_eq(ti.n_dims, 2);
    cr_assert_eq(ti.shape[0], 512);
    cr_assert_eq(ti.shape[1], 64);
    cr_assert_eq(ti.nbytes, 512 * 64 * 2);
    cr_assert_str_eq(files[ti.shard], "model-00001-of-00008.safetensors");

    char *sp = model_path(model, "model-00001-of-00008.safetensors");
    raw_file raw = raw_open(sp);
    const cJSON *off = cJSON_GetObjectItem(cJSON_GetObjectItem(raw.header, "model.embed_tokens.weight"),
                                           "data_offsets");
    const unsigned char *p = raw.bytes + raw.data_start + (uint64_t)off->child->valuedouble;
    float *v = malloc(512 * 64 * sizeof *v);
    cr_assert_eq(gk_safetensors_read_f32(st, "model.embed_tokens.weight", v, 512 * 64, &err), GK_OK);
    for (size_t k = 0; k < 512 * 64; k++)
        cr_assert_eq(v[k], (float)raw_value(p, "F16", k), "[%zu]", k);
    free(v);
    raw_close(&raw);
    free(sp);
    cr_assert_eq(gk_safetensors_shards_open(st), 1);

    /* Every tensor sits in the shard weight_map names. */
    cJSON_ArrayForEach(kv, wm) {
        cr_assert_eq(gk_safetensors_info(st, kv->string, &ti, &err), GK_OK, "%s", err.msg);
        cr_assert_str_eq(files[ti.shard], kv->valuestring, "%s", kv->string);
        cr_assert_eq(ti.dtype, GK_DTYPE_F16);
    }
    cr_assert_eq(gk_safetensors_shards_open(st), 8);
    gk_safetensors_close(st);
    cJSON_Delete(idx);
    free(text);
    free(ipath);
}

/* ---------------------------------------------------------- crafted files */

Test(crafted, every_read_f32_dtype_at_an_unaligned_offset, .init = tmp_setup, .fini = tmp_teardown)
{
    /* Header length 129 (odd): the data section, and so every tensor, is unaligned. */
    unsigned char data[2 * 8 + 2 * 4 + 2 * 2 + 2 * 2 + 2 * 8 + 2 * 4];
    size_t k = 0;
    double f64[2] = {1.5, -1e300};
    float f32[2] = {3.25f, -0.0f};
    uint16_t f16[2] = {0x3c00, 0xc000};       /* 1, -2 */
    uint16_t bf16[2] = {0x3f80, 0x4049};      /* 1, 3.140625 */
    int64_t i64[2] = {-5, 1ll << 40};
    int32_t i32[2] = {7, -2147483647 - 1};
    memcpy(data + k, f64, 16), k += 16;
    memcpy(data + k, f32, 8), k += 8;
    memcpy(data + k, f16, 4), k += 4;
    memcpy(data + k, bf16, 4), k += 4;
    memcpy(data + k, i64, 16), k += 16;
    memcpy(data + k, i32, 8), k += 8;
    char hdr[1024];
    snprintf(hdr, sizeof hdr,
             "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
             "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
             "\"h\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[24,28]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[28,32]},"
             "\"l\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[32,48]},"
             "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[48,56]},"
             "\"e\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[56,56]},"
             "\"s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[56,56]}}");
    /* The scalar "s" would need 1 byte: fix it with one trailing data byte. */
    char *s = strstr(hdr, "[56,56]}}");
    memcpy(s, "[56,57]}}", 9);
    size_t hl = strlen(hdr);
    while (hl % 2 == 0 || hl < 129)
        hdr[hl++] = ' ';  /* trailing spaces are allowed padding */
    hdr[hl] = 0;
    size_t n = 8 + hl + sizeof data + 1;
    unsigned char *file = calloc(1, n);
    for (int b = 0; b < 8; b++)
        file[b] = (unsigned char)((uint64_t)hl >> (8 * b));
    memcpy(file + 8, hdr, hl);
    memcpy(file + 8 + hl, data, sizeof data);
    file[n - 1] = 42;
    char *path = tmp_path("unaligned.safetensors");
    write_file(path, file, n);

    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(path, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_count(st), 8);
    cr_assert_eq(gk_safetensors_meta_count(st), 0);
    float v[2];
    int64_t w[2];
    cr_assert_eq(gk_safetensors_read_f32(st, "d", v, 2, &err), GK_OK);
    cr_assert(v[0] == 1.5f && isinf(v[1]) && v[1] < 0);
    cr_assert_eq(gk_safetensors_read_f32(st, "f", v, 2, &err), GK_OK);
    cr_assert(v[0] == 3.25f && v[1] == 0 && signbit(v[1]));
    cr_assert_eq(gk_safetensors_read_f32(st, "h", v, 2, &err), GK_OK);
    cr_assert(v[0] == 1.0f && v[1] == -2.0f);
    cr_assert_eq(gk_safetensors_read_f32(st, "b", v, 2, &err), GK_OK);
    cr_assert(v[0] == 1.0f && v[1] == 3.140625f);
    cr_assert_eq(gk_safetensors_read_f32(st, "l", v, 2, &err), GK_OK);
    cr_assert(v[0] == -5.0f && v[1] == 1099511627776.0f);
    cr_assert_eq(gk_safetensors_read_f32(st, "i", v, 2, &err), GK_OK);
    cr_assert(v[0] == 7.0f && v[1] == -2147483648.0f);
    cr_assert_eq(gk_safetensors_read_i64(st, "l", w, 2, &err), GK_OK);
    cr_assert(w[0] == -5 && w[1] == 1ll << 40);
    cr_assert_eq(gk_safetensors_read_i64(st, "i", w, 2, &err), GK_OK);
    cr_assert(w[0] == 7 && w[1] == -2147483648ll);

    gk_tensor_info ti;
    cr_assert_eq(gk_safetensors_info(st, "e", &ti, &err), GK_OK);
    cr_assert(ti.n_dims == 2 && ti.shape[0] == 0 && ti.shape[1] == 5 && ti.nbytes == 0);
    cr_assert_eq(gk_safetensors_read_f32(st, "e", NULL, 0, &err), GK_ERR_UNSUPPORTED);
    cr_assert_eq(gk_safetensors_info(st, "s", &ti, &err), GK_OK);
    cr_assert(ti.n_dims == 0 && ti.nbytes == 1);
    const void *bytes;
    uint64_t nb;
    cr_assert_eq(gk_safetensors_bytes(st, "s", &bytes, &nb, &err), GK_OK);
    cr_assert(nb == 1 && *(const unsigned char *)bytes == 42);
    gk_safetensors_close(st);
    free(file);
    free(path);
}

typedef struct bad_case {
    const char *file;         /* created in the temp folder */
    const char *header;       /* safetensors header text, or the index JSON */
    size_t n_data;            /* data bytes after the header */
    gk_status want;
    const char *tensor;       /* must appear in the message, or NULL */
    const char *also;         /* another phrase the message must hold, or NULL */
} bad_case;

static const bad_case bad_cases[] = {
    {"not_json.safetensors", "{\"a\": {", 0, GK_ERR_FORMAT, NULL, "JSON"},
    {"array.safetensors", "[1, 2]", 0, GK_ERR_FORMAT, NULL, "object"},
    {"trailing_junk.safetensors", "{} x", 0, GK_ERR_FORMAT, NULL, NULL},
    {"not_utf8.safetensors", "{\"a\xff\": 1}", 0, GK_ERR_FORMAT, NULL, "UTF-8"},
    {"entry_not_object.safetensors", "{\"a.weight\": 3}", 0, GK_ERR_FORMAT, "a.weight", NULL},
    {"unknown_dtype.safetensors",
     "{\"a.weight\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     GK_ERR_FORMAT, "a.weight", "F33"},
    {"no_dtype.safetensors", "{\"a.weight\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     GK_ERR_FORMAT, "a.weight", "dtype"},
    {"unsupported_dtype.safetensors",
     "{\"a.weight\":{\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
     GK_ERR_UNSUPPORTED, "a.weight", "F8_E8M0"},
    {"negative_dim.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}}", 24,
     GK_ERR_FORMAT, "a.weight", "-2"},
    {"fractional_dim.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"string_dim.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"huge_dims.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
     "\"data_offsets\":[0,8]}}", 8, GK_ERR_FORMAT, "a.weight", "too large"},
    {"dims_beyond_2p53.safetensors",
     "{\"a.weight\":{\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 8,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"nine_dims.safetensors",
     "{\"a.weight\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     GK_ERR_UNSUPPORTED, "a.weight", NULL},
    {"offsets_beyond_data.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", 24,
     GK_ERR_FORMAT, "a.weight", "[0, 1000]"},
    {"offsets_vs_shape.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 10,
     GK_ERR_FORMAT, "a.weight",
     "tensor 'a.weight': data_offsets [0, 10] hold 10 bytes but shape [2, 3] of F32 needs 24"},
    {"offsets_three.safetensors",
     "{\"a.weight\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,1,2]}}", 2,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"offsets_negative.safetensors",
     "{\"a.weight\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[-2,0]}}", 2,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"begin_after_end.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
     GK_ERR_FORMAT, "a.weight", "[8, 0]"},
    {"overlap.safetensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"b.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24,
     GK_ERR_FORMAT, "b.bias", "overlap"},
    {"hole.safetensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24,
     GK_ERR_FORMAT, "b.bias", "[8, 16)"},
    {"unindexed_tail.safetensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16,
     GK_ERR_FORMAT, NULL, "[8, 16)"},
    {"metadata_number.safetensors",
     "{\"__metadata__\":{\"format\":\"pt\",\"step\":1},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     GK_ERR_FORMAT, "step", "__metadata__"},
    {"metadata_array.safetensors", "{\"__metadata__\":[\"pt\"]}", 0, GK_ERR_FORMAT, NULL,
     "__metadata__"},
    {"duplicate.safetensors",
     "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
     GK_ERR_FORMAT, "a.weight", "twice"},
    {"model.safetensors.index.json", "{\"weight_map\":{\"a.weight\":\"../x.safetensors\"}}", 0,
     GK_ERR_FORMAT, "a.weight", "../x.safetensors"},
    {"deep.index.json", "{\"weight_map\":{\"a.weight\":\"sub/../../x.safetensors\"}}", 0,
     GK_ERR_FORMAT, "a.weight", NULL},
    {"absolute.index.json", "{\"weight_map\":{\"a.weight\":\"/etc/passwd\"}}", 0,
     GK_ERR_FORMAT, "a.weight", "/etc/passwd"},
    {"empty_name.index.json", "{\"weight_map\":{\"a.weight\":\"\"}}", 0, GK_ERR_FORMAT,
     "a.weight", NULL},
    {"missing_shard.index.json", "{\"weight_map\":{\"a.weight\":\"nope-00001.safetensors\"}}", 0,
     GK_ERR_IO, NULL, "nope-00001.safetensors"},
    {"map_array.index.json", "{\"weight_map\":[\"x.safetensors\"]}", 0, GK_ERR_FORMAT, NULL,
     "weight_map"},
    {"no_map.index.json", "{\"metadata\":{}}", 0, GK_ERR_FORMAT, NULL, "weight_map"},
    {"map_number.index.json", "{\"weight_map\":{\"a.weight\":3}}", 0, GK_ERR_FORMAT,
     "a.weight", NULL},
    {"map_dup.index.json", "{\"weight_map\":{\"a\":\"s.safetensors\",\"a\":\"s.safetensors\"}}",
     0, GK_ERR_FORMAT, NULL, "twice"},
    {"meta_array.index.json", "{\"metadata\":[1],\"weight_map\":{}}", 0, GK_ERR_FORMAT, NULL,
     "metadata"},
    {"broken.index.json", "{\"weight_map\":", 0, GK_ERR_FORMAT, NULL, "JSON"},
};

static void expect_failure(const char *path, const char *file, gk_status want,
                           const char *tensor, const char *also)
{
    gk_safetensors *st = (gk_safetensors *)&st;  /* must come back NULL */
    gk_err err = {0};
    gk_status rc = gk_safetensors_open(path, &st, &err);
    cr_assert_eq(rc, want, "%s: got %s (%s), want %s", file, gk_status_str(rc), err.msg,
                 gk_status_str(want));
    cr_assert_null(st, "%s", file);
    cr_assert_eq(err.code, want);
    cr_assert(strstr(err.msg, file), "%s: message does not name the file: %s", file, err.msg);
    if (tensor)
        cr_assert(strstr(err.msg, tensor), "%s: message does not name '%s': %s", file, tensor, err.msg);
    if (also)
        cr_assert(strstr(err.msg, also), "%s: message lacks '%s': %s", file, also, err.msg);
}

Test(crafted, each_broken_file_fails_with_a_named_error, .init = tmp_setup, .fini = tmp_teardown)
{
    /* A valid shard for the index cases to point at. */
    char *good = tmp_path("s.safetensors");
    write_st(good, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    free(good);
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char *path = tmp_path(c->file);
        if (strstr(c->file, ".json"))
            write_file(path, c->header, strlen(c->header));
        else
            write_st(path, c->header, c->n_data);
        expect_failure(path, c->file, c->want, c->tensor, c->also);
        free(path);
    }
}

Test(crafted, broken_lengths_fail_with_a_named_error, .init = tmp_setup, .fini = tmp_teardown)
{
    char *p = tmp_path("short.safetensors");
    write_file(p, "\x02\0\0\0\0", 5);
    expect_failure(p, "short.safetensors", GK_ERR_FORMAT, NULL, "5 bytes");
    free(p);

    p = tmp_path("empty.safetensors");
    write_file(p, "", 0);
    expect_failure(p, "empty.safetensors", GK_ERR_FORMAT, NULL, NULL);
    free(p);

    unsigned char b[10] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};  /* 1000 > 2 bytes left */
    p = tmp_path("past_end.safetensors");
    write_file(p, b, sizeof b);
    expect_failure(p, "past_end.safetensors", GK_ERR_FORMAT, NULL, "1000");
    free(p);

    uint64_t big = 200000000;  /* > 100 MB, checked before the file's size */
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(big >> (8 * i));
    p = tmp_path("huge_header.safetensors");
    write_file(p, b, sizeof b);
    expect_failure(p, "huge_header.safetensors", GK_ERR_FORMAT, NULL, "200000000");
    free(p);

    memset(b, 0xff, 8);  /* 2^64 - 1: must not wrap around */
    p = tmp_path("max_header.safetensors");
    write_file(p, b, sizeof b);
    expect_failure(p, "max_header.safetensors", GK_ERR_FORMAT, NULL, NULL);
    free(p);

    p = tmp_path("absent.safetensors");
    expect_failure(p, "absent.safetensors", GK_ERR_IO, NULL, NULL);
    free(p);
}

Test(crafted, shard_must_hold_what_the_index_maps_to_it, .init = tmp_setup, .fini = tmp_teardown)
{
    char *s1 = tmp_path("s1.safetensors"), *s2 = tmp_path("s2.safetensors");
    char *ip = tmp_path("model.safetensors.index.json");
    write_st(s1, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    write_st(s2, "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                 "\"extra\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]}}", 4);
    const char *idx = "{\"metadata\":{\"total_size\":5,\"note\":\"x\",\"flag\":true},"
                      "\"weight_map\":{\"b\":\"s2.safetensors\",\"a\":\"s1.safetensors\","
                      "\"ghost\":\"s1.safetensors\"}}";
    write_file(ip, idx, strlen(idx));

    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(ip, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_count(st), 3);
    cr_assert_str_eq(gk_safetensors_name(st, 0), "b");
    struct stat sb1, sb2;
    cr_assert(stat(s1, &sb1) == 0 && stat(s2, &sb2) == 0);
    cr_assert_eq(gk_safetensors_file_size(st), (uint64_t)(sb1.st_size + sb2.st_size));
    cr_assert_str_eq(gk_safetensors_meta(st, "total_size"), "5");
    cr_assert_str_eq(gk_safetensors_meta(st, "note"), "x");
    cr_assert_str_eq(gk_safetensors_meta(st, "flag"), "true");
    cr_assert_not(gk_safetensors_has(st, "extra"), "only the weight_map's names exist");

    gk_tensor_info ti;
    cr_assert_eq(gk_safetensors_info(st, "b", &ti, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(ti.shard, 0);
    cr_assert_eq(ti.nbytes, 3);
    cr_assert_eq(gk_safetensors_shards_open(st), 1);
    /* s1 lacks "ghost": touching anything in s1 fails, naming both. */
    cr_assert_eq(gk_safetensors_info(st, "a", &ti, &err), GK_ERR_FORMAT);
    cr_assert(strstr(err.msg, "s1.safetensors") && strstr(err.msg, "ghost"), "%s", err.msg);
    cr_assert_eq(gk_safetensors_bytes(st, "ghost", NULL, NULL, &err), GK_ERR_FORMAT);
    cr_assert_eq(gk_safetensors_shards_open(st), 1, "the broken shard stays closed");
    cr_assert_eq(gk_safetensors_read_f32(st, "b", NULL, 3, &err), GK_ERR_INVALID_ARG);
    gk_safetensors_close(st);

    /* A broken shard is reported when touched, not at open. */
    write_st(s1, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1);
    const char *idx2 = "{\"weight_map\":{\"a\":\"s1.safetensors\"}}";
    write_file(ip, idx2, strlen(idx2));
    cr_assert_eq(gk_safetensors_open(ip, &st, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_safetensors_info(st, "a", &ti, &err), GK_ERR_FORMAT);
    cr_assert(strstr(err.msg, "s1.safetensors") && strstr(err.msg, "'a'"), "%s", err.msg);
    gk_safetensors_close(st);
    free(s1);
    free(s2);
    free(ip);
}

/* Every truncation and many byte flips of a valid file: a status, never a crash
 * (the sanitizer build turns any stray read into a failure). */
Test(crafted, mutated_files_never_crash, .init = tmp_setup, .fini = tmp_teardown)
{
    const char *hdr = "{\"__metadata__\":{\"k\":\"v\"},"
                      "\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]}}";
    size_t hl = strlen(hdr), n = 8 + hl + 24;
    unsigned char *good = calloc(1, n), *bad = malloc(n);
    for (int i = 0; i < 8; i++)
        good[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(good + 8, hdr, hl);
    char *path = tmp_path("m.safetensors");
    size_t ok = 0;
    static const unsigned char flips[] = {0x00, 0x01, '"', '-', '9', '[', '}', 0xff};
    for (size_t len = 0; len <= n; len++) {
        for (size_t f = 0; f <= sizeof flips; f++) {
            memcpy(bad, good, n);
            if (f < sizeof flips) {
                if (len == n)
                    break;
                bad[len] = flips[f];  /* flip one byte, keep the length */
                write_file(path, bad, n);
            } else {
                write_file(path, bad, len);  /* truncate */
            }
            gk_safetensors *st = NULL;
            gk_err err = {0};
            gk_status rc = gk_safetensors_open(path, &st, &err);
            if (rc != GK_OK) {
                cr_assert_null(st);
                cr_assert(strstr(err.msg, "m.safetensors"), "%s", err.msg);
                continue;
            }
            ok++;
            for (size_t i = 0; i < gk_safetensors_count(st); i++) {
                gk_tensor_info ti;
                const char *name = gk_safetensors_name(st, i);
                cr_assert_eq(gk_safetensors_info(st, name, &ti, &err), GK_OK);
                float v[16];
                const void *d;
                uint64_t nb;
                cr_assert_eq(gk_safetensors_bytes(st, name, &d, &nb, &err), GK_OK);
                uint64_t elems = nb / gk_dtype_size(ti.dtype);
                if (elems <= 16)
                    gk_safetensors_read_f32(st, name, v, (size_t)elems, &err);
            }
            gk_safetensors_close(st);
        }
    }
    cr_assert_gt(ok, 0, "the unmutated file must open");
    free(good);
    free(bad);
    free(path);
}

/* A model folder opens its index (sharded) or its model.safetensors, the same
 * tensors as opening that file; a folder with neither is NOT_FOUND naming it. */
Test(folder, opens_the_index_or_the_single_file)
{
    const char *models[2][2] = {{"llama-tiny", "model.safetensors"},
                                {"llama-tiny-f16-sharded", "model.safetensors.index.json"}};
    for (int i = 0; i < 2; i++) {
        char dir[1024], file[1100];
        snprintf(dir, sizeof dir, "%s/models/%s", getenv("GK_TEST_DATA"), models[i][0]);
        snprintf(file, sizeof file, "%s/%s", dir, models[i][1]);
        gk_safetensors *a, *b;
        gk_err err = {0};
        cr_assert_eq(gk_safetensors_open(dir, &a, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_safetensors_open(file, &b, &err), GK_OK, "%s", err.msg);
        cr_expect_eq(gk_safetensors_count(a), gk_safetensors_count(b));
        cr_expect_eq(gk_safetensors_shard_count(a), gk_safetensors_shard_count(b));
        for (size_t k = 0; k < gk_safetensors_count(a); k++)
            cr_expect_str_eq(gk_safetensors_name(a, k), gk_safetensors_name(b, k));
        gk_safetensors_close(a);
        gk_safetensors_close(b);
    }
    char tmp[] = "/tmp/gk-st-folder-XXXXXX";
    cr_assert(mkdtemp(tmp));
    gk_safetensors *st = (gk_safetensors *)0x1;
    gk_err err = {0};
    cr_expect_eq(gk_safetensors_open(tmp, &st, &err), GK_ERR_NOT_FOUND);
    cr_expect_null(st);
    cr_expect(strstr(err.msg, tmp) && strstr(err.msg, "no model.safetensors"), "%s", err.msg);
    rmdir(tmp);
}

/* A model.safetensors (or index) that is there but unusable is reported as
 * what it is, naming it, not as "no model.safetensors in this folder": a
 * symlink loop with the system's reason, a folder as not a regular file. The
 * index's name takes precedence as when it is a good file. */
Test(folder, unusable_weights_file_is_named_with_its_cause, .init = tmp_setup, .fini = tmp_teardown)
{
    static const char *const names[] = {"model.safetensors", "model.safetensors.index.json"};
    for (int i = 0; i < 2; i++) {
        for (int kind = 0; kind < 2; kind++) {
            char sub[32];
            snprintf(sub, sizeof sub, "m%d%d", i, kind);
            char *dir = tmp_path(sub);
            cr_assert_eq(mkdir(dir, 0755), 0);
            size_t n = strlen(dir) + strlen(names[i]) + 2;
            char *p = malloc(n);
            cr_assert(p);
            snprintf(p, n, "%s/%s", dir, names[i]);
            if (kind == 0)
                cr_assert_eq(symlink(names[i], p), 0, "symlink %s", p); /* points at itself */
            else
                cr_assert_eq(mkdir(p, 0755), 0);
            gk_safetensors *st = (gk_safetensors *)&st;
            gk_err err = {0};
            cr_expect_eq(gk_safetensors_open(dir, &st, &err), GK_ERR_IO, "%s: %s", p, err.msg);
            cr_expect_null(st);
            char want[1200];
            if (kind == 0)
                snprintf(want, sizeof want, "%s: %s", p, strerror(ELOOP));
            else
                snprintf(want, sizeof want, "%s: not a regular file (a folder)", p);
            cr_expect(strstr(err.msg, want), "want '%s' in: %s", want, err.msg);
            free(p);
            free(dir);
        }
    }
}

/* Opening a FIFO named like a checkpoint does not wait for a writer. */
Test(folder, fifo_is_not_a_regular_file_and_does_not_block, .init = tmp_setup, .fini = tmp_teardown, .timeout = 60)
{
    char *p = tmp_path("model.safetensors");
    cr_assert_eq(mkfifo(p, 0644), 0);
    gk_safetensors *st = (gk_safetensors *)&st;
    gk_err err = {0};
    cr_expect_eq(gk_safetensors_open(p, &st, &err), GK_ERR_IO, "%s", err.msg);
    cr_expect_null(st);
    cr_expect(strstr(err.msg, "model.safetensors") && strstr(err.msg, "not a regular file (a FIFO)"), "%s",
              err.msg);
    cr_expect_eq(gk_safetensors_open(tmp_root, &st, &err), GK_ERR_IO, "the folder holding it: %s", err.msg);
    free(p);
}

/* Many tensors in a few shards: each distinct file name is one shard, in the
 * order of first appearance, and every tensor reads from the file named for it
 * (oracle: the index text and the shards written here). */
Test(sharded, many_tensors_in_few_shards_make_one_shard_per_distinct_file, .init = tmp_setup, .fini = tmp_teardown)
{
    enum { N_SHARDS = 3, PER_SHARD = 400 };
    /* shard s holds tensors t<k> with k % N_SHARDS == s, one U8 each holding k % 251 */
    for (int sh = 0; sh < N_SHARDS; sh++) {
        cJSON *h = cJSON_CreateObject();
        unsigned char data[PER_SHARD];
        for (int j = 0; j < PER_SHARD; j++) {
            int k = j * N_SHARDS + sh;
            char name[32];
            snprintf(name, sizeof name, "t%d", k);
            cJSON *e = cJSON_AddObjectToObject(h, name);
            cJSON_AddStringToObject(e, "dtype", "U8");
            cJSON *shape = cJSON_AddArrayToObject(e, "shape");
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(1));
            cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
            cJSON_AddItemToArray(off, cJSON_CreateNumber(j));
            cJSON_AddItemToArray(off, cJSON_CreateNumber(j + 1));
            data[j] = (unsigned char)(k % 251);
        }
        char *text = cJSON_PrintUnformatted(h);
        size_t hl = strlen(text), n = 8 + hl + PER_SHARD;
        unsigned char *b = malloc(n);
        cr_assert(b);
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        memcpy(b + 8, text, hl);
        memcpy(b + 8 + hl, data, PER_SHARD);
        char fname[64];
        snprintf(fname, sizeof fname, "part-%d.safetensors", sh);
        char *path = tmp_path(fname);
        write_file(path, b, n);
        free(path);
        free(b);
        free(text);
        cJSON_Delete(h);
    }
    /* the index lists the tensors interleaved across the shards, shard 2 first */
    cJSON *idx = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int k = 0; k < N_SHARDS * PER_SHARD; k++) {
        int kk = (k + 2) % (N_SHARDS * PER_SHARD);
        char name[32], fname[64];
        snprintf(name, sizeof name, "t%d", kk);
        snprintf(fname, sizeof fname, "part-%d.safetensors", kk % N_SHARDS);
        cJSON_AddStringToObject(wm, name, fname);
    }
    char *text = cJSON_PrintUnformatted(idx);
    char *ip = tmp_path("model.safetensors.index.json");
    write_file(ip, text, strlen(text));

    gk_safetensors *st = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_safetensors_open(ip, &st, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_safetensors_shard_count(st), N_SHARDS);
    cr_expect_eq(gk_safetensors_count(st), N_SHARDS * PER_SHARD);
    cr_expect_eq(gk_safetensors_shards_open(st), 0);
    for (int k = 0; k < N_SHARDS * PER_SHARD; k++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", k);
        gk_tensor_info ti;
        cr_assert_eq(gk_safetensors_info(st, name, &ti, &err), GK_OK, "%s", err.msg);
        /* first appearances: t2 (part-2), t3 (part-0), t4 (part-1) */
        cr_assert_eq(ti.shard, (k % N_SHARDS + 1) % N_SHARDS, "%s: shard %d", name, ti.shard);
        const void *d;
        uint64_t nb;
        cr_assert_eq(gk_safetensors_bytes(st, name, &d, &nb, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(nb, 1);
        cr_assert_eq(*(const unsigned char *)d, k % 251, "%s", name);
    }
    cr_expect_eq(gk_safetensors_shards_open(st), N_SHARDS);
    gk_safetensors_close(st);
    free(ip);
    free(text);
    cJSON_Delete(idx);
}

/* An index naming tens of thousands of distinct, absent shards fails with the
 * first one it cannot open. */
Test(sharded, index_of_many_distinct_missing_shards_fails_naming_the_first, .init = tmp_setup, .fini = tmp_teardown)
{
    enum { N = 40000 };
    size_t cap = (size_t)N * 64 + 64, len = 0;
    char *text = malloc(cap);
    cr_assert(text);
    len += (size_t)snprintf(text + len, cap - len, "{\"weight_map\": {");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"t%d\": \"model-%06d-of-%06d.safetensors\"",
                                i ? ", " : "", i, i, N);
    len += (size_t)snprintf(text + len, cap - len, "}}");
    char *ip = tmp_path("model.safetensors.index.json");
    write_file(ip, text, len);
    gk_safetensors *st = (gk_safetensors *)&st;
    gk_err err = {0};
    cr_expect_eq(gk_safetensors_open(ip, &st, &err), GK_ERR_IO, "%s", err.msg);
    cr_expect_null(st);
    cr_expect(strstr(err.msg, "model-000000-of-040000.safetensors") && strstr(err.msg, "cannot open shard"), "%s",
              err.msg);
    free(ip);
    free(text);
}

/* Names read from a file are quoted in messages with control characters
 * escaped, so a crafted name cannot forge a line or reach the terminal. */
Test(crafted, names_from_the_file_are_escaped_in_messages, .init = tmp_setup, .fini = tmp_teardown)
{
    static const struct { const char *file, *header, *want; } cases[] = {
        {"dup.safetensors",
         "{\"a\\nFAKE\\u001b[31m\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"a\\nFAKE\\u001b[31m\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
         "tensor 'a\\nFAKE\\x1b[31m' appears twice"},
        {"dtype.safetensors", "{\"b\\r\":{\"dtype\":\"F\\u001b32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         "tensor 'b\\x0d': unknown dtype 'F\\x1b32'"},
        {"overlap.safetensors",
         "{\"x\\ty\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
         "\"q'\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}",
         "overlaps tensor"},
        {"meta.safetensors", "{\"__metadata__\":{\"k\\n\":1}}", "__metadata__ value 'k\\n'"},
        {"shard.index.json", "{\"weight_map\":{\"w\\n\":\"../\\u001bx\"}}", "tensor 'w\\n': shard file '../\\x1bx'"},
        {"missing.index.json", "{\"weight_map\":{\"w\":\"gone\\n.safetensors\"}}", "gone\\n.safetensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = tmp_path(cases[i].file);
        if (strstr(cases[i].file, ".json"))
            write_file(path, cases[i].header, strlen(cases[i].header));
        else
            write_st(path, cases[i].header, 4);
        gk_safetensors *st = NULL;
        gk_err err = {0};
        cr_expect_neq(gk_safetensors_open(path, &st, &err), GK_OK, "%s", cases[i].file);
        cr_expect(strstr(err.msg, cases[i].want), "%s: want \"%s\" in: %s", cases[i].file, cases[i].want, err.msg);
        for (const char *c = err.msg; *c; c++)
            cr_expect((unsigned char)*c >= 0x20 && *c != 0x7f, "%s: control byte 0x%02x in: %s", cases[i].file,
                      (unsigned char)*c, err.msg);
        free(path);
    }
}
