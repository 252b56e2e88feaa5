/* broken.c - deliberately broken plugins for the loader's error tests. One
 * source, built once per defect (BROKEN_* selects which); OLD_ABI_1_0 is a
 * sound plugin as built for ABI 1.0, which must still load. */
#include <gk/gk_plugin.h>

#include <stddef.h>

static gk_tensor_entry no_tensors[] = {{0, NULL, {0, 0}, 0, 0, 0}};
static gk_status build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    (void)b;
    *out = NULL;
    return gk_err_set(err, GK_ERR_UNSUPPORTED, "test plugin");
}

#if defined(BROKEN_DUP)
static const char *const aliases[] = {"llama", NULL};  /* clashes with the llama plugin */
static const gk_model_spec spec = {.name = "dupllama", .aliases = aliases};
#else
static const gk_model_spec spec = {.name = PLUGIN_NAME};
#endif

static const gk_arch_ops arch_ops = {
    .struct_size = sizeof(gk_arch_ops), .magic = GK_ARCH_OPS_MAGIC, .spec = &spec, .tensors = no_tensors,
    .build = build,
};

static bool available(void *s, char *why, size_t n) { return true; }
static gk_status props(void *s, gk_device_props *p, gk_err *e) { return GK_OK; }
static gk_status balloc(void *s, size_t n, void **out, gk_err *e) { return GK_ERR_NOMEM; }
static void bfree(void *s, void *b) {}
static gk_status bwrite(void *s, void *b, size_t o, const void *src, size_t n, gk_err *e) { return GK_OK; }
static gk_status bread(void *s, const void *b, size_t o, void *dst, size_t n, gk_err *e) { return GK_OK; }
static bool supports(void *s, const gk_node *n) { return false; }
static gk_status compute(void *s, const gk_graph *g, gk_err *e) { return GK_OK; }

static const gk_backend_ops backend_ops = {
    .struct_size = sizeof(gk_backend_ops), .magic = GK_BACKEND_OPS_MAGIC, .available = available,
    .device_props = props,
    .buffer_alloc = balloc, .buffer_free = bfree, .buffer_write = bwrite, .buffer_read = bread,
    .supports_node = supports,
#if !defined(BROKEN_MISSING_OP)
    .graph_compute = compute,
#endif
};

static gk_status init_fail(const gk_host *h, void **state, gk_err *err)
{
    return gk_err_set(err, GK_ERR_DEVICE, "simulated failure: no device table");
}

#if defined(BROKEN_FUTURE)
/* A plugin built for the next minor, calling a helper this core lacks: the
 * loader must refuse it by version, not fail in the dynamic linker. */
extern gk_tensor *gk_build_from_the_future(gk_builder *b);
static gk_status future_build(gk_builder *b, gk_tensor **out, gk_err *err)
{
    (void)err;
    *out = gk_build_from_the_future(b);
    return GK_OK;
}
static const gk_arch_ops future_ops = {
    .struct_size = sizeof(gk_arch_ops), .magic = GK_ARCH_OPS_MAGIC, .spec = &spec, .tensors = no_tensors,
    .build = future_build,
};
__attribute__((visibility("default"))) const gk_plugin_desc *gk_plugin_entry(void);
const gk_plugin_desc *gk_plugin_entry(void)
{
    static const gk_plugin_desc d = {
        .abi_major = GK_ABI_MAJOR, .abi_minor = GK_ABI_MINOR + 1, .struct_size = sizeof(gk_plugin_desc),
        .kind = GK_PLUGIN_KIND_ARCH, .name = PLUGIN_NAME, .ops = &future_ops,
    };
    return &d;
}
#elif defined(BROKEN_NO_ENTRY)
__attribute__((visibility("default"))) int not_the_entry_symbol = 1;
#elif defined(BROKEN_DATA_ENTRY)
/* The entry's name on data: calling it would jump into .rodata. */
__attribute__((visibility("default"))) const char gk_plugin_entry[16] = "not code";
#elif defined(BROKEN_ABI)
__attribute__((visibility("default"))) const gk_plugin_desc *gk_plugin_entry(void);
const gk_plugin_desc *gk_plugin_entry(void)
{
    static const gk_plugin_desc d = {
        .abi_major = GK_ABI_MAJOR + 98, .abi_minor = 7, .struct_size = sizeof(gk_plugin_desc),
        .kind = GK_PLUGIN_KIND_ARCH, .name = PLUGIN_NAME, .ops = &arch_ops,
    };
    return &d;
}
#elif defined(BROKEN_INIT)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, PLUGIN_NAME, "fails at init", init_fail, NULL, &backend_ops)
#elif defined(BROKEN_MISSING_OP)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, PLUGIN_NAME, "lacks graph_compute", NULL, NULL, &backend_ops)
#elif defined(BROKEN_WRONG_KIND)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, PLUGIN_NAME, "a backend in an arch file", NULL, NULL, &backend_ops)
#elif defined(BROKEN_MISNAMED)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, "somethingelse", "name differs from its file", NULL, NULL, &arch_ops)
#elif defined(BROKEN_DUP)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, PLUGIN_NAME, "claims llama's name", NULL, NULL, &arch_ops)
#elif defined(BROKEN_ARCH_WITH_BACKEND_OPS)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, PLUGIN_NAME, "an architecture with a backend's table", NULL, NULL,
                 &backend_ops)
#elif defined(BROKEN_BACKEND_WITH_ARCH_OPS)
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_BACKEND, PLUGIN_NAME, "a backend with an architecture's table", NULL, NULL,
                 &arch_ops)
#elif defined(BROKEN_NO_MAGIC)
static const gk_arch_ops untagged_ops = {
    .struct_size = sizeof(gk_arch_ops), .spec = &spec, .tensors = no_tensors, .build = build,
};
GK_PLUGIN_DEFINE(GK_PLUGIN_KIND_ARCH, PLUGIN_NAME, "a 1.1 table without its magic", NULL, NULL, &untagged_ops)
#elif defined(OLD_ABI_1_0)
/* What a plugin built against ABI 1.0 looks like: no magic (0 in what was
 * padding), minor 0, a table ending at build (1.4 added entries after it).
 * It must still load. */
static const gk_arch_ops old_ops = {
    .struct_size = offsetof(gk_arch_ops, dim_keys), .spec = &spec, .tensors = no_tensors, .build = build,
};
__attribute__((visibility("default"))) const gk_plugin_desc *gk_plugin_entry(void);
const gk_plugin_desc *gk_plugin_entry(void)
{
    static const gk_plugin_desc d = {
        .abi_major = 1, .abi_minor = 0, .struct_size = sizeof(gk_plugin_desc),
        .kind = GK_PLUGIN_KIND_ARCH, .name = PLUGIN_NAME, .ops = &old_ops,
    };
    return &d;
}
#endif
