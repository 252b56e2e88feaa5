/* nosample.c - a sound backend as built for ABI 1.1: cpu_ref's ops, but
 * without GK_OP_SAMPLE (which came with 1.2) and with a table that ends
 * before read_async. generate must still work on it, sampling on the host
 * (test_plugin.c compares its tokens with cpu_ref's). */
#define gk_plugin_entry cpu_ref_inner_entry /* cpu_ref's own descriptor, renamed */
#include "../../backends/cpu_ref/cpu_ref.c"
#undef gk_plugin_entry

static bool nosample_supports(void *state, const gk_node *node)
{
    return node && node->op != GK_OP_SAMPLE && cpu_supports_node(state, node);
}

static const gk_backend_ops nosample_ops = {
    .struct_size = offsetof(gk_backend_ops, read_async), /* a 1.1 table */
    .magic = GK_BACKEND_OPS_MAGIC,
    .available = cpu_available,
    .device_props = cpu_device_props,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .supports_node = nosample_supports,
    .graph_compute = cpu_graph_compute,
};

__attribute__((visibility("default"))) const gk_plugin_desc *gk_plugin_entry(void);
const gk_plugin_desc *gk_plugin_entry(void)
{
    static const gk_plugin_desc d = {
        .abi_major = 1, .abi_minor = 1, .struct_size = sizeof(gk_plugin_desc),
        .kind = GK_PLUGIN_KIND_BACKEND, .name = "nosample", .version = "1.0",
        .description = "cpu_ref without GK_OP_SAMPLE, as a 1.1 backend", .init = cpu_init, .fini = cpu_fini,
        .ops = &nosample_ops, .reserved = {NULL, NULL, NULL, NULL},
    };
    return &d;
}
