/* util.c - small file and path helpers for the core. */
#include "gk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

gk_status gk_read_file(const char *path, char **out, size_t *len, gk_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return gk_err_set(err, GK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gk_status st = GK_OK;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
        goto out_close;
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot tell size (not a regular file?)", path);
        goto out_close;
    }
    buf = malloc((size_t)n + 1);
    if (!buf) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for %ld bytes", path, n);
        goto out_close;
    }
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = gk_err_set(err, GK_ERR_IO, "%s: short read", path);
        free(buf);
        buf = NULL;
        goto out_close;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = (size_t)n;
out_close:
    fclose(f);
    return st;
}

char *gk_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

char *gk_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

char *gk_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return gk_strdup(".");
    if (slash == path)
        return gk_strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

bool gk_path_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool gk_path_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

double gk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
