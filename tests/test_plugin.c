/* test_plugin.c - the plugin loader, the INI file and the architecture registry.
 *
 * Each loader failure is provoked by a deliberately broken plugin built from
 * tests/plugins/broken.c, and must give its own message. */
#include <criterion/criterion.h>
#include <gk/gk_plugin.h>

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *build_root(void)
{
    const char *r = getenv("GK_TEST_BUILD_ROOT");
    cr_assert(r, "GK_TEST_BUILD_ROOT is not set (run through meson test)");
    return r;
}

static const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d ? d : "data";
}

static void make_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gk-plugin-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    (void)!system(cmd);
}

/* Write n bytes of INI into the temp dir; returns its path (static buffer). */
static const char *write_ini_bytes(const char *text, size_t n)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/gk.ini", tmpdir);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);
    return path;
}

static const char *write_ini(const char *text) { return write_ini_bytes(text, strlen(text)); }

/* INI loading the broken-plugin folder with the given lists. */
static const char *broken_ini(const char *arch, const char *backends)
{
    char text[2048];
    snprintf(text, sizeof text, "[plugins]\npath = %s/tests/plugins\narch = %s\nbackends = %s\n", build_root(),
             arch, backends);
    return write_ini(text);
}

static gk_status create_expect_fail(const char *ini, gk_err *err)
{
    gk_runtime *rt = (gk_runtime *)0x1;
    gk_status st = gk_runtime_create(ini, &rt, err);
    cr_assert_null(rt, "a failed create must leave *out NULL");
    return st;
}

TestSuite(plugin, .init = make_tmp, .fini = rm_tmp);

Test(plugin, defaults_load_every_built_plugin)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    const char *want[] = {"gpt2", "llama", "qwen3"};
    for (size_t w = 0; w < 3; w++) {
        bool found = false;
        for (size_t i = 0; i < gk_runtime_arch_count(rt); i++)
            found = found || !strcmp(gk_runtime_arch_name(rt, i), want[w]);
        cr_expect(found, "architecture %s not loaded by default", want[w]);
    }
    bool cpu = false;
    for (size_t i = 0; i < gk_runtime_backend_count(rt); i++)
        cpu = cpu || !strcmp(gk_runtime_backend_name(rt, i), "cpu_ref");
    cr_expect(cpu, "cpu_ref not loaded by default");
    cr_expect_str_eq(gk_runtime_default_backend(rt), "auto");
    gk_runtime_destroy(rt);
}

/* A folder of GK_PLUGIN_PATH adds its plugins to the built-in ones (an empty
 * part and a missing folder are fine); a broken plugin there is an error
 * naming it, not a silent skip. */
Test(plugin, gk_plugin_path_adds_to_the_built_in_plugins)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp '%s/tests/plugins/libgk-backend-nosample.so' '%s/'", build_root(), tmpdir);
    cr_assert_eq(system(cmd), 0);
    char path[1024];
    snprintf(path, sizeof path, "::/nonexistent-gk-folder:%s", tmpdir);
    setenv("GK_PLUGIN_PATH", path, 1);
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    bool cpu = false, extra = false;
    for (size_t i = 0; i < gk_runtime_backend_count(rt); i++) {
        cpu = cpu || !strcmp(gk_runtime_backend_name(rt, i), "cpu_ref");
        extra = extra || !strcmp(gk_runtime_backend_name(rt, i), "nosample");
    }
    cr_expect(cpu && extra, "cpu_ref %d, nosample from GK_PLUGIN_PATH %d", cpu, extra);
    cr_expect_not_null(gk_runtime_find_arch(rt, "llama"));
    gk_runtime_destroy(rt);

    snprintf(cmd, sizeof cmd, "cp '%s/tests/plugins/libgk-arch-badabi.so' '%s/'", build_root(), tmpdir);
    cr_assert_eq(system(cmd), 0);
    gk_status st = create_expect_fail(NULL, &err);
    cr_expect_eq(st, GK_ERR_ABI, "%s", err.msg);
    cr_expect(strstr(err.msg, tmpdir) && strstr(err.msg, "badabi"), "%s", err.msg);
    unsetenv("GK_PLUGIN_PATH");
}

Test(plugin, ini_selects_plugins_and_backend)
{
    gk_runtime *rt;
    gk_err err = {0};
    const char *ini = write_ini("; comment\n[plugins]\narch = llama\nbackends = cpu_ref\n[runtime]\nbackend = cpu_ref\n");
    cr_assert_eq(gk_runtime_create(ini, &rt, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(gk_runtime_arch_count(rt), 1);
    cr_expect_str_eq(gk_runtime_arch_name(rt, 0), "llama");
    cr_expect_eq(gk_runtime_backend_count(rt), 1);
    cr_expect_str_eq(gk_runtime_default_backend(rt), "cpu_ref");
    cr_expect_null(gk_runtime_find_arch(rt, "gpt2"));
    gk_runtime_destroy(rt);
}

Test(plugin, plugin_not_found_lists_folders)
{
    gk_err err = {0};
    const char *ini = write_ini("[plugins]\npath = /nonexistent/gk-a, /nonexistent/gk-b\narch = nosuch\n");
    cr_assert_eq(create_expect_fail(ini, &err), GK_ERR_NOT_FOUND);
    cr_expect(strstr(err.msg, "'nosuch' not found"), "%s", err.msg);
    cr_expect(strstr(err.msg, "libgk-arch-nosuch.so"), "%s", err.msg);
    cr_expect(strstr(err.msg, "/nonexistent/gk-a") && strstr(err.msg, "/nonexistent/gk-b"), "%s", err.msg);
}

Test(plugin, file_that_is_not_a_shared_object)
{
    gk_err err = {0};
    char path[512], text[1024];
    snprintf(path, sizeof path, "%s/libgk-arch-garbage.so", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("this is not an ELF file\n", f);
    fclose(f);
    snprintf(text, sizeof text, "[plugins]\npath = %s\narch = garbage\nbackends = cpu_ref\n", tmpdir);
    cr_assert_eq(create_expect_fail(write_ini(text), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "cannot open plugin") && strstr(err.msg, "libgk-arch-garbage.so"), "%s", err.msg);
}

Test(plugin, no_entry_symbol)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("noentry", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "not a gk plugin: no entry symbol 'gk_plugin_entry'"), "%s", err.msg);
}

Test(plugin, abi_mismatch_names_both_versions)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("badabi", "cpu_ref"), &err), GK_ERR_ABI);
    char want[64];
    snprintf(want, sizeof want, "plugin built for 99.7, core is %d.%d", GK_ABI_MAJOR, GK_ABI_MINOR);
    cr_expect(strstr(err.msg, want), "%s", err.msg);
}

/* A plugin built for a newer minor that calls a helper this core lacks is
 * refused by version: "needs ABI 1.x", never the dynamic linker's
 * "undefined symbol". */
Test(plugin, newer_abi_plugin_is_refused_by_version_not_by_symbol)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("future", "cpu_ref"), &err), GK_ERR_ABI, "%s", err.msg);
    char want[80];
    snprintf(want, sizeof want, "plugin 'future' needs ABI %d.%d; this core is ABI %d.%d", GK_ABI_MAJOR,
             GK_ABI_MINOR + 1, GK_ABI_MAJOR, GK_ABI_MINOR);
    cr_expect(strstr(err.msg, want), "%s", err.msg);
    cr_expect_null(strstr(err.msg, "undefined symbol"), "%s", err.msg);
}

/* A data object exported under the entry's name is refused, not called. */
Test(plugin, entry_symbol_that_is_data_is_refused)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("llama", "dataentry"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "libgk-backend-dataentry.so is not a gk plugin: entry symbol 'gk_plugin_entry' "
                              "is not a function (a data object)"), "%s", err.msg);
}

/* Each kind's ops table says what it is; a descriptor pointing at the other
 * kind's table, or at a table without the magic, is refused naming the file. */
Test(plugin, ops_table_of_the_wrong_kind_is_refused)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("backendops", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "libgk-arch-backendops.so: architecture plugin 'backendops' has a backend ops table"),
              "%s", err.msg);
    cr_assert_eq(create_expect_fail(broken_ini("llama", "archops"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "libgk-backend-archops.so: backend plugin 'archops' has an architecture ops table"),
              "%s", err.msg);
    cr_assert_eq(create_expect_fail(broken_ini("nomagic", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "libgk-arch-nomagic.so: architecture plugin 'nomagic': ops table has magic "
                              "0x00000000, expected 0x676b4152 (GK_ARCH_OPS_MAGIC)"), "%s", err.msg);
}

/* Tables from before the magic existed (ABI 1.0: zero there) still load. */
Test(plugin, plugin_built_for_abi_1_0_still_loads)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(broken_ini("oldabi", "cpu_ref"), &rt, &err), GK_OK, "%s", err.msg);
    const gk_model_spec *s = gk_runtime_find_arch(rt, "oldabi");
    cr_assert(s);
    cr_expect_str_eq(s->name, "oldabi");
    gk_runtime_destroy(rt);
}

/* Generate on a backend built for ABI 1.1, which cannot run GK_OP_SAMPLE
 * (its table ends before read_async, too): the core steps on the host, and
 * greedy and seeded sampled tokens are cpu_ref's, which steps on the device
 * side of its own graph. */
static void generate_on(gk_runtime *rt, const char *backend, float temp, int32_t *out, int64_t *n_out)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data_dir());
    gk_model_opts mo = {.backend = backend};
    gk_model *m = NULL;
    gk_err err = {0};
    cr_assert_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s: %s", backend, err.msg);
    const int32_t prompt[4] = {5, 17, 3, 42};
    gk_gen_opts o = gk_gen_opts_default();
    o.max_new_tokens = 12;
    o.temperature = temp;
    o.seed = 77;
    cr_assert_eq(gk_model_generate(m, prompt, 4, &o, out, n_out, NULL, &err), GK_OK, "%s: %s", backend, err.msg);
    cr_expect_eq(gk_model_n_past(m), 4 + *n_out - 1, "%s", backend);
    gk_model_destroy(m);
}

Test(plugin, generate_on_a_backend_without_the_sample_op_steps_on_the_host)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(broken_ini("llama", "cpu_ref, nosample"), &rt, &err), GK_OK, "%s", err.msg);
    const float temps[2] = {0.0f, 1.0f};
    for (int t = 0; t < 2; t++) {
        int32_t a[12], b[12];
        int64_t na = 0, nb = 0;
        generate_on(rt, "cpu_ref", temps[t], a, &na);
        generate_on(rt, "nosample", temps[t], b, &nb);
        cr_assert_eq(na, 12);
        cr_assert_eq(nb, na, "temperature %g: %lld tokens, cpu_ref %lld", (double)temps[t], (long long)nb,
                     (long long)na);
        for (int i = 0; i < 12; i++)
            cr_expect_eq(b[i], a[i], "temperature %g, token %d: %d, cpu_ref %d", (double)temps[t], i, b[i], a[i]);
    }
    gk_runtime_destroy(rt);
}

Test(plugin, init_failure_carries_the_plugins_message)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("llama", "initfail"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "init failed: simulated failure: no device table"), "%s", err.msg);
}

Test(plugin, missing_required_op)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("llama", "missingop"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "lacks required op 'graph_compute'"), "%s", err.msg);
}

Test(plugin, wrong_kind_and_wrong_name)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("wrongkind", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "is a backend plugin, expected an architecture plugin"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(broken_ini("misnamed", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "calls itself 'somethingelse'"), "%s", err.msg);
}

Test(plugin, two_plugins_with_one_name)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(broken_ini("llama, llama", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "two plugins named 'llama'"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(broken_ini("llama, dupllama", "cpu_ref"), &err), GK_ERR_PLUGIN);
    cr_expect(strstr(err.msg, "two plugins claim the architecture name 'llama'"), "%s", err.msg);
}

Test(plugin, ini_errors_name_the_line)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(write_ini("[plugins]\narch = llama\n\n[bogus]\nx = 1\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:5: unknown section [bogus]"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[plugins]\narch = llama\nbackend = cpu_ref\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:3: unknown key 'backend' in section [plugins]"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[runtime]\nbackend = cpu_ref\ncolour = blue\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:3: unknown key 'colour' in section [runtime]"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[plugins\narch = llama\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:1:"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[runtime]\nbackend = tpu\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "backend = tpu, but no such backend is loaded"), "%s", err.msg);
    cr_assert_eq(create_expect_fail("/nonexistent/gk.ini", &err), GK_ERR_IO);
    cr_expect(strstr(err.msg, "/nonexistent/gk.ini"), "%s", err.msg);
}

/* inih takes at most 197 bytes a line (its 200-byte buffer less "\r\n" and the
 * NUL) and would read the rest of a longer line as a new line. */
Test(plugin, ini_line_longer_than_inih_takes_is_refused_with_its_line)
{
    gk_err err = {0};
    char text[1024], comment[256];
    /* 197 bytes: taken whole, so the comment's tail is no setting. */
    snprintf(comment, sizeof comment, "; %0182dbackend = tpu", 0);
    cr_assert_eq(strlen(comment), 197);
    snprintf(text, sizeof text, "[plugins]\narch = llama\nbackends = cpu_ref\n[runtime]\n%s\r\n", comment);
    gk_runtime *rt;
    cr_assert_eq(gk_runtime_create(write_ini(text), &rt, &err), GK_OK, "%s", err.msg);
    cr_expect_str_eq(gk_runtime_default_backend(rt), "auto");
    gk_runtime_destroy(rt);
    /* 198 bytes, with or without a final newline: refused, naming the line. */
    snprintf(text, sizeof text, "[plugins]\narch = llama\nbackends = cpu_ref\n[runtime]\n%s;\n", comment);
    cr_assert_eq(create_expect_fail(write_ini(text), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:5: line longer than 197 bytes"), "%s", err.msg);
    snprintf(text, sizeof text, "[runtime]\n%s;", comment);
    cr_assert_eq(create_expect_fail(write_ini(text), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:2: line longer than 197 bytes"), "%s", err.msg);
}

Test(plugin, ini_nul_byte_is_refused_with_its_line)
{
    gk_err err = {0};
    static const char text[] = "[plugins]\narch = llama\nbackends = cpu_ref\0backends = nosuch\n";
    cr_assert_eq(create_expect_fail(write_ini_bytes(text, sizeof text - 1), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:3: NUL byte in the line"), "%s", err.msg);
}

/* A folder or a FIFO named as the INI file: refused at once (no hang). */
Test(plugin, ini_that_is_not_a_regular_file_is_refused, .timeout = 20)
{
    gk_err err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/folder.ini", tmpdir);
    cr_assert_eq(mkdir(path, 0700), 0);
    cr_assert_eq(create_expect_fail(path, &err), GK_ERR_IO);
    cr_expect(strstr(err.msg, "folder.ini: not a regular file (a folder)"), "%s", err.msg);
    snprintf(path, sizeof path, "%s/fifo.ini", tmpdir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    cr_assert_eq(create_expect_fail(path, &err), GK_ERR_IO);
    cr_expect(strstr(err.msg, "fifo.ini: not a regular file (a FIFO)"), "%s", err.msg);
}

/* LeakSanitizer's on-demand check; linked in sanitizer builds only. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

/* The limit on path folders counts every `path =` line, and the folders read
 * before the refusal are freed. */
Test(plugin, too_many_path_folders_are_refused)
{
    gk_err err = {0};
    const char *many = write_ini("[plugins]\npath = a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\narch = llama\n");
    cr_assert_eq(create_expect_fail(many, &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:2: too many entries in 'path' (at most 16)"), "%s", err.msg);
    if (__lsan_do_recoverable_leak_check) {
        cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "leaked (LeakSanitizer's report above)");
    } else {
        /* glibc's count of heap bytes in use may not grow over 200 more. */
        size_t before = mallinfo2().uordblks;
        for (int i = 0; i < 200; i++)
            (void)gk_runtime_create(many, &(gk_runtime *){NULL}, NULL);
        size_t after = mallinfo2().uordblks;
        cr_expect_lt(after > before ? after - before : 0, 4096, "heap in use grew by %zu bytes", after - before);
    }
    cr_assert_eq(create_expect_fail(write_ini("[plugins]\npath = a,b,c,d,e,f,g,h\npath = i,j,k,l,m,n,o,p\n"
                                              "path = q\narch = llama\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:4: too many entries in 'path' (at most 16)"), "%s", err.msg);
    /* Exactly 16 over several lines is fine (the folders need not exist). */
    gk_runtime *rt;
    char text[512];
    snprintf(text, sizeof text, "[plugins]\npath = a,b,c,d,e,f,g,h\npath = i,j,k,l,m,n,o\npath = %s/tests/plugins\n"
             "arch = oldabi\nbackends = cpu_ref\n", build_root());
    cr_assert_eq(gk_runtime_create(write_ini(text), &rt, &err), GK_OK, "%s", err.msg);
    gk_runtime_destroy(rt);
}

/* The first bad line is the one named, with its own message. */
Test(plugin, ini_error_message_belongs_to_the_line_named)
{
    gk_err err = {0};
    cr_assert_eq(create_expect_fail(write_ini("[plugins]\nbackend = x\ncolour = y\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:2: unknown key 'backend' in section [plugins]"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[plugins\narch = llama\ncolour = y\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "gk.ini:1: syntax error"), "%s", err.msg);
    cr_assert_eq(create_expect_fail(write_ini("[runtime]\nbackend = \x1b[31mred\n"), &err), GK_ERR_CONFIG);
    cr_expect(strstr(err.msg, "backend = \\x1b[31mred, but no such backend"), "%s", err.msg);
}

/* ------------------------------------------------------------ registry */

static gk_runtime *defaults(void)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, &rt, &err), GK_OK, "%s", err.msg);
    return rt;
}

Test(registry, names_and_aliases)
{
    gk_runtime *rt = defaults();
    struct { const char *name, *arch; } cases[] = {
        {"gpt2", "gpt2"}, {"llama", "llama"}, {"qwen3", "qwen3"}, {"qwen2", "llama"}, {"mistral", "llama"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gk_model_spec *s = gk_runtime_find_arch(rt, cases[i].name);
        cr_assert(s, "no architecture for %s", cases[i].name);
        cr_expect_str_eq(s->name, cases[i].arch);
    }
    cr_expect_null(gk_runtime_find_arch(rt, "mamba"));
    const gk_model_spec *g = gk_runtime_find_arch(rt, "gpt2"), *q = gk_runtime_find_arch(rt, "qwen3");
    cr_expect(g->norm == GK_NORM_LAYER && g->act == GK_ACT_GELU_TANH && !g->use_rope && g->use_pos_embed);
    cr_expect(q->norm == GK_NORM_RMS && q->act == GK_ACT_SILU && q->use_rope && q->use_qk_norm);
    gk_runtime_destroy(rt);
}

/* Detection from config.json and, separately, from tensor names alone. */
Test(registry, detects_every_reference_model)
{
    gk_runtime *rt = defaults();
    struct { const char *dir, *weights, *arch; } cases[] = {
        {"gpt2-tiny", "model.safetensors", "gpt2"},
        {"llama-tiny", "model.safetensors", "llama"},
        {"llama-tiny-f16-sharded", "model.safetensors.index.json", "llama"},
        {"qwen3-tiny", "model.safetensors", "qwen3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024], cfgp[1024];
        snprintf(path, sizeof path, "%s/models/%s/%s", data_dir(), cases[i].dir, cases[i].weights);
        snprintf(cfgp, sizeof cfgp, "%s/models/%s/config.json", data_dir(), cases[i].dir);
        gk_safetensors *st;
        gk_err err = {0};
        gk_config cfg;
        cr_assert_eq(gk_safetensors_open(path, &st, &err), GK_OK, "%s", err.msg);
        cr_assert_eq(gk_config_load(cfgp, &cfg, &err), GK_OK, "%s", err.msg);
        const gk_model_spec *s;
        cr_assert_eq(gk_runtime_detect_arch(rt, st, &cfg, &s, &err), GK_OK, "%s", err.msg);
        cr_expect_str_eq(s->name, cases[i].arch, "%s from config", cases[i].dir);
        cr_assert_eq(gk_runtime_detect_arch(rt, st, NULL, &s, &err), GK_OK, "%s", err.msg);
        cr_expect_str_eq(s->name, cases[i].arch, "%s from names", cases[i].dir);
        gk_safetensors_close(st);
    }
    gk_runtime_destroy(rt);
}

Test(registry, unknown_architecture_is_named)
{
    gk_runtime *rt = defaults();
    gk_config cfg;
    gk_err err = {0};
    cr_assert_eq(gk_config_parse("{\"architectures\": [\"MambaForCausalLM\"], \"model_type\": \"mamba\","
                                 "\"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1,"
                                 "\"num_attention_heads\": 2, \"intermediate_size\": 16, \"max_position_embeddings\": 64}",
                                 NULL, &cfg, &err),
                 GK_OK, "%s", err.msg);
    const gk_model_spec *s = (const gk_model_spec *)0x1;
    cr_assert_eq(gk_runtime_detect_arch(rt, NULL, &cfg, &s, &err), GK_ERR_NOT_FOUND);
    cr_expect_null(s);
    cr_expect(strstr(err.msg, "unknown architecture 'MambaForCausalLM'"), "%s", err.msg);
    cr_expect(strstr(err.msg, "llama") && strstr(err.msg, "gpt2") && strstr(err.msg, "qwen3"), "%s", err.msg);
    gk_runtime_destroy(rt);
}

/* NULL and out-of-range arguments: a status or the neutral value, no crash. */
Test(registry, null_and_out_of_range_arguments)
{
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(NULL, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "gk_runtime_create: out is NULL"), "%s", err.msg);
    cr_expect_eq(gk_runtime_create(NULL, NULL, NULL), GK_ERR_INVALID_ARG);
    gk_runtime_destroy(NULL);

    cr_expect_eq(gk_runtime_arch_count(NULL), 0);
    cr_expect_null(gk_runtime_arch_name(NULL, 0));
    cr_expect_eq(gk_runtime_backend_count(NULL), 0);
    cr_expect_null(gk_runtime_backend_name(NULL, 0));
    cr_expect_null(gk_runtime_default_backend(NULL));
    cr_expect_null(gk_runtime_find_arch(NULL, "llama"));

    gk_runtime *rt = defaults();
    cr_expect_null(gk_runtime_arch_name(rt, gk_runtime_arch_count(rt)));
    cr_expect_null(gk_runtime_arch_name(rt, SIZE_MAX));
    cr_expect_null(gk_runtime_backend_name(rt, gk_runtime_backend_count(rt)));
    cr_expect_null(gk_runtime_backend_name(rt, SIZE_MAX));
    cr_expect_null(gk_runtime_find_arch(rt, NULL));

    const gk_model_spec *s = (const gk_model_spec *)0x1;
    cr_expect_eq(gk_runtime_detect_arch(NULL, NULL, NULL, &s, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "gk_runtime_detect_arch: rt is NULL"), "%s", err.msg);
    cr_expect_eq(gk_runtime_detect_arch(rt, NULL, NULL, NULL, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "gk_runtime_detect_arch: out is NULL"), "%s", err.msg);
    gk_runtime_destroy(rt);

    /* A model needs a runtime. */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data_dir());
    gk_model *m = (gk_model *)0x1;
    cr_expect_eq(gk_model_load(NULL, dir, NULL, &m, &err), GK_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "rt is NULL"), "%s", err.msg);
    cr_expect_null(m);
}

/* A backend built before a parameter existed never sees it: the nosample
 * backend (ABI 1.1) is refused at load for Mistral's sliding window (ATTN
 * i[3], ABI 1.4), naming the node, the op and the parameter; cpu_ref (1.4)
 * runs the same checkpoint. */
Test(plugin, backend_older_than_a_parameter_refuses_it_by_name)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(broken_ini("llama", "cpu_ref, nosample"), &rt, &err), GK_OK, "%s", err.msg);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/mistral-window", data_dir());
    gk_model_opts mo = {.backend = "nosample"};
    gk_model *m = (gk_model *)0x1;
    cr_expect_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_ERR_UNSUPPORTED, "%s", err.msg);
    cr_expect_null(m);
    cr_expect(strstr(err.msg, "backend 'nosample' (built for ABI 1.1) cannot run node 'attn' (op 'attn', layer 0): "
                              "its parameter 'window' = 16 needs ABI 1.4"),
              "%s", err.msg);
    mo.backend = "cpu_ref";
    cr_expect_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s", err.msg);
    gk_model_destroy(m);
    /* the same backend still runs a graph without the new parameter */
    snprintf(dir, sizeof dir, "%s/models/llama-tiny", data_dir());
    mo.backend = "nosample";
    cr_expect_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_OK, "%s", err.msg);
    gk_model_destroy(m);
    gk_runtime_destroy(rt);
}

/* Every parameter the core knows names the minor that introduced it; the
 * ones 1.4 added are there with their defaults. */
Test(plugin, op_parameter_table)
{
    size_t n;
    const gk_op_param *p = gk_op_params(GK_OP_ATTN, &n);
    cr_assert_eq(n, 8);
    bool window = false, softcap = false, ring = false, slots = false;
    for (size_t i = 0; i < n; i++) {
        window = window || (!strcmp(p[i].name, "window") && p[i].kind == 'i' && p[i].slot == 3 && p[i].since_minor == 4);
        softcap = softcap || (!strcmp(p[i].name, "softcap") && p[i].kind == 'f' && p[i].slot == 1 && p[i].since_minor == 4);
        ring = ring || (!strcmp(p[i].name, "ring") && p[i].kind == 'f' && p[i].slot == 2 && p[i].since_minor == 4 &&
                        p[i].def == 0);
        slots = slots || (!strcmp(p[i].name, "slot_rows") && p[i].kind == 'f' && p[i].slot == 3 &&
                          p[i].since_minor == 5 && p[i].def == 0);
    }
    cr_expect(window && softcap && ring && slots);
    cr_expect_eq(gk_op_since_minor(GK_OP_MOE_SUM), 4);
    cr_expect_eq(gk_op_since_minor(GK_OP_LINEAR), 0);
    cr_expect_eq(gk_op_since_minor(GK_OP_SAMPLE), 2);
    cr_expect_null(gk_op_params(GK_OP_COUNT, &n));
    cr_expect_eq(n, 0);
    for (int op = 0; op < GK_OP_COUNT; op++)
        cr_expect_str_neq(gk_op_name((gk_op)op), "?", "op %d has no name", op);
}

/* An architecture built before sliding windows existed (its table ends at
 * build) cannot apply one: a context longer than config.json's
 * sliding_window is refused for it, never run unwindowed. */
Test(plugin, old_architecture_cannot_run_past_a_sliding_window)
{
    gk_runtime *rt;
    gk_err err = {0};
    cr_assert_eq(gk_runtime_create(broken_ini("oldabi", "cpu_ref"), &rt, &err), GK_OK, "%s", err.msg);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/mistral-window", data_dir());
    gk_model_opts mo = {.backend = "cpu_ref", .arch = "oldabi", .n_ctx = 64};
    gk_model *m = (gk_model *)0x1;
    cr_expect_eq(gk_model_load(rt, dir, &mo, &m, &err), GK_ERR_UNSUPPORTED, "%s", err.msg);
    cr_expect_null(m);
    cr_expect(strstr(err.msg, "sliding_window is 16 tokens and architecture 'oldabi' was built for an ABI without "
                              "sliding-window attention") && strstr(err.msg, "asked for 64"),
              "%s", err.msg);
    gk_runtime_destroy(rt);
}
