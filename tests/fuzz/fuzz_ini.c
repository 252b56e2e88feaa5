/* fuzz_ini.c - libFuzzer harness: the INI file, through gk_runtime_create.
 *
 * The input is the INI; gk_runtime_create parses it and loads the plugins it
 * names (from the build tree, or folders the INI lists relative to the scratch
 * folder), then the registry is listed and the runtime destroyed. gk dlclose()s
 * its plugins on destroy; unmapping instrumented code would pull the coverage
 * tables out from under libFuzzer, so every plugin of the build tree is opened
 * once here with RTLD_NODELETE, which pins it (gk's own dlopen then gets the
 * same object). Not here: plugins that are themselves broken (tests/test_plugin.c).
 */
#include "fuzz.h"

#include <dirent.h>
#include <dlfcn.h>

static char path[FZ_PATH_MAX];

/* dlopen <build>/KIND/NAME/libgk-PREFIX-NAME.so for every NAME there. */
static void pin_plugins(const char *kind, const char *prefix)
{
    char dir[FZ_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", FZ_BUILD(), kind);
    DIR *dd = opendir(dir);
    if (!dd)
        fz_die("no plugin folder", dir);
    for (struct dirent *de; (de = readdir(dd));) {
        char so[FZ_PATH_MAX * 2];
        if (de->d_name[0] == '.')
            continue;
        snprintf(so, sizeof so, "%s/%s/libgk-%s-%s.so", dir, de->d_name, prefix, de->d_name);
        if (access(so, F_OK) == 0 && !dlopen(so, RTLD_NOW | RTLD_NODELETE))
            fz_die("cannot pin a plugin", dlerror());
    }
    closedir(dd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    pin_plugins("arch", "arch");
    pin_plugins("backends", "backend");
    fz_path(path, "gk.ini");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fz_write(path, d, n);
    gk_runtime *rt = NULL;
    gk_err e;
    if (gk_runtime_create(path, &rt, &e) != GK_OK)
        return 0;
    for (size_t i = 0; i < gk_runtime_arch_count(rt); i++)
        (void)gk_runtime_find_arch(rt, gk_runtime_arch_name(rt, i));
    for (size_t i = 0; i < gk_runtime_backend_count(rt); i++)
        (void)gk_runtime_backend_name(rt, i);
    (void)gk_runtime_default_backend(rt);
    (void)gk_runtime_find_arch(rt, "mistral");
    gk_runtime_destroy(rt);
    return 0;
}
