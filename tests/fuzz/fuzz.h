/* fuzz.h - what the libFuzzer harnesses of tests/fuzz share: a private scratch
 * folder per process, fixture paths, writing an input out as a file, and the
 * walk over an open checkpoint that three harnesses make.
 *
 * Fixture folders come from meson as compile-time defines (GKFZ_DATA_DEFAULT,
 * ...); an environment variable of the same name without _DEFAULT overrides
 * each. The scratch folder is made under $GKFZ_TMPDIR, else $TMPDIR, else
 * /dev/shm, else /tmp, and removed at exit; after a finding libFuzzer leaves
 * with _Exit and the folder stays (run.sh removes the whole work folder it made).
 * A broken harness environment (a fixture missing, the scratch folder not
 * writable) stops the process with exit status 2 and a message; it is not a
 * finding in gk. Not here: anything only one harness needs.
 * Everything is static inline: each harness uses part of it.
 */
#ifndef GK_FUZZ_H
#define GK_FUZZ_H

#include <gk/gk.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_PATH_MAX 4096

static char fz_scratch[FZ_PATH_MAX];

static inline void fz_die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz harness: %s: %s\n", what, detail);
    exit(2);
}

/* ------------------------------------------------------------ scratch folder */

static inline int fz_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static inline void fz_cleanup(void)
{
    if (fz_scratch[0])
        nftw(fz_scratch, fz_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* This process's scratch folder, made on first use. */
static inline const char *fz_dir(void)
{
    if (fz_scratch[0])
        return fz_scratch;
    const char *base = getenv("GKFZ_TMPDIR");
    if (!base || !*base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char tmpl[FZ_PATH_MAX];
    if (snprintf(tmpl, sizeof tmpl, "%s/gkfz-XXXXXX", base) >= (int)sizeof tmpl)
        fz_die("scratch folder path too long", base);
    if (!mkdtemp(tmpl))
        fz_die("cannot make a scratch folder", strerror(errno));
    strcpy(fz_scratch, tmpl);
    atexit(fz_cleanup);
    return fz_scratch;
}

/* out = <scratch>/name (out holds FZ_PATH_MAX bytes). */
static inline char *fz_path(char *out, const char *name)
{
    if (snprintf(out, FZ_PATH_MAX, "%s/%s", fz_dir(), name) >= FZ_PATH_MAX)
        fz_die("path too long", name);
    return out;
}

/* Replace the file at path with n bytes of d. A new file each time: ext4
 * flushes a file truncated and rewritten to disk on close (auto_da_alloc),
 * which would make every execution wait for the disk. */
static inline void fz_write(const char *path, const void *d, size_t n)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        fz_die("cannot write", path);
    for (const char *p = d; n > 0;) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fz_die("cannot write", path);
        p += w;
        n -= (size_t)w;
    }
    close(fd);
}

/* Make link a symbolic link to target (replacing what is there). */
static inline void fz_link(const char *target, const char *link)
{
    if (access(target, F_OK) != 0)
        fz_die("fixture missing", target);
    unlink(link);
    if (symlink(target, link) != 0)
        fz_die("cannot link", link);
}

static inline void fz_mkdir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        fz_die("cannot make folder", path);
}

/* --------------------------------------------------------------- fixtures */

/* $env, else the path meson compiled in. */
static inline const char *fz_fixture(const char *env, const char *compiled)
{
    const char *v = getenv(env);
    if (v && *v)
        return v;
    if (!compiled)
        fz_die("no fixture path: set", env);
    return compiled;
}

#ifndef GKFZ_DATA_DEFAULT
#define GKFZ_DATA_DEFAULT NULL
#endif
#ifndef GKFZ_DEMO_DEFAULT
#define GKFZ_DEMO_DEFAULT NULL
#endif
#ifndef GKFZ_BUILD_DEFAULT
#define GKFZ_BUILD_DEFAULT NULL
#endif
#ifndef GKFZ_TOKENIZERS_DEFAULT
#define GKFZ_TOKENIZERS_DEFAULT NULL
#endif
/* tests/data, models/kjv-demo, the build root, the unpacked NAME-tokenizer.json files. */
#define FZ_DATA() fz_fixture("GKFZ_DATA", GKFZ_DATA_DEFAULT)
#define FZ_DEMO() fz_fixture("GKFZ_DEMO", GKFZ_DEMO_DEFAULT)
#define FZ_BUILD() fz_fixture("GKFZ_BUILD", GKFZ_BUILD_DEFAULT)
#define FZ_TOKENIZERS() fz_fixture("GKFZ_TOKENIZERS", GKFZ_TOKENIZERS_DEFAULT)

/* ---------------------------------------------------------------- oracles */

/* A property gk documents does not hold: report it as a crash (detail may be NULL). */
static inline void fz_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz harness: property broken: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static inline bool fz_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
            return false;
        i += len;
    }
    return true;
}

/* ------------------------------------------------------ checkpoint walk */

/* Every query gk_safetensors offers, on every tensor: info, the zero-copy view
 * (its first and last byte are read: the view must lie inside the mapping),
 * read_f32 and read_i64 with the right count and a wrong one (tensors of at
 * most max_elems elements), then the metadata. Failures are statuses, which
 * is all this asks of them. */
static inline void fz_walk_safetensors(gk_safetensors *st, uint64_t max_elems)
{
    gk_err e;
    (void)gk_safetensors_file_size(st);
    (void)gk_safetensors_shard_count(st);
    for (size_t i = 0; i < gk_safetensors_count(st); i++) {
        const char *name = gk_safetensors_name(st, i);
        gk_tensor_info ti;
        if (!name || !gk_safetensors_has(st, name) || gk_safetensors_info(st, name, &ti, &e) != GK_OK)
            continue;
        (void)gk_dtype_name(ti.dtype);
        const void *data;
        uint64_t nbytes;
        if (gk_safetensors_bytes(st, name, &data, &nbytes, &e) == GK_OK && nbytes > 0) {
            volatile const unsigned char *b = data;
            (void)b[0];
            (void)b[nbytes - 1];
        }
        uint64_t ne = 1;
        for (int k = 0; k < ti.n_dims && ne <= max_elems; k++)
            ne = ti.shape[k] < 0 || (uint64_t)ti.shape[k] > max_elems ? max_elems + 1
                                                                      : ne * (uint64_t)ti.shape[k];
        if (ne > max_elems)
            continue;
        float *f = malloc((ne + 1) * sizeof *f);
        int64_t *q = malloc((ne + 1) * sizeof *q);
        if (!f || !q)
            fz_die("out of memory", name);
        (void)gk_safetensors_read_f32(st, name, f, (size_t)ne, &e);
        (void)gk_safetensors_read_i64(st, name, q, (size_t)ne, &e);
        (void)gk_safetensors_read_f32(st, name, f, (size_t)ne + 1, &e);
        free(f);
        free(q);
    }
    (void)gk_safetensors_has(st, "no such tensor");
    for (size_t i = 0; i < gk_safetensors_meta_count(st); i++)
        (void)gk_safetensors_meta(st, gk_safetensors_meta_key(st, i));
}

#endif
