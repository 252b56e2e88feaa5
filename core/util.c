/* util.c - small file and path helpers for the core. */
#include "gk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

FILE *gk_fopen_regular(const char *path, gk_err *err)
{
    /* O_NONBLOCK so that a FIFO cannot block the open; cleared once the file is
     * known to be regular (it has no effect on regular files anyway). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        gk_err_set(err, GK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        gk_err_set(err, GK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        gk_err_set(err, GK_ERR_IO, "%s: not a regular file (%s)", path,
                   S_ISDIR(sb.st_mode) ? "a folder" : S_ISFIFO(sb.st_mode) ? "a FIFO"
                   : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device" : "a socket or other special file");
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        gk_err_set(err, GK_ERR_NOMEM, "%s: cannot open a stream: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

gk_status gk_read_file(const char *path, char **out, size_t *len, gk_err *err)
{
    *out = NULL;
    FILE *f = gk_fopen_regular(path, err);
    if (!f)
        return err ? err->code : GK_ERR_IO;
    gk_status st = GK_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        st = gk_err_set(err, GK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out_close;
    }
    size_t n = (size_t)sb.st_size, cap;
    if ((uint64_t)sb.st_size > SIZE_MAX - 1 || !gk_size_add(n, 1, &cap)) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: %lld bytes do not fit in memory", path, (long long)sb.st_size);
        goto out_close;
    }
    buf = malloc(cap);
    if (!buf) {
        st = gk_err_set(err, GK_ERR_NOMEM, "%s: no memory for %zu bytes", path, n);
        goto out_close;
    }
    size_t got = n ? fread(buf, 1, n, f) : 0;
    if (got != n || ferror(f)) {
        st = ferror(f) ? gk_err_set(err, GK_ERR_IO, "%s: read error: %s", path, strerror(errno))
                       : gk_err_set(err, GK_ERR_IO, "%s: short read (%zu of %zu bytes; changed while read?)", path, got, n);
        free(buf);
        buf = NULL;
        goto out_close;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
out_close:
    fclose(f);
    return st;
}

/* One piece of gk_quote's output for the character at p: its escape or its
 * bytes; returns how many input bytes it covers. */
static size_t quote_piece(const unsigned char *p, char e[8], size_t *el)
{
    static const char hex[] = "0123456789abcdef";
    unsigned c = p[0];
    if (c == '\n' || c == '\t' || c == '\\' || c == '\'') {
        e[0] = '\\';
        e[1] = c == '\n' ? 'n' : c == '\t' ? 't' : (char)c;
        *el = 2;
        return 1;
    }
    if (c >= 0x20 && c < 0x7f) {
        e[0] = (char)c;
        *el = 1;
        return 1;
    }
    /* A whole, valid UTF-8 sequence is kept, except the C1 controls U+0080..U+009F. */
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = len > 0;
    for (size_t i = 1; ok && i < len; i++)
        ok = (p[i] & 0xc0) == 0x80;
    if (ok && len == 3)
        ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
    if (ok && len == 4)
        ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
    if (ok && !(c == 0xc2 && p[1] < 0xa0)) {
        memcpy(e, p, len);
        *el = len;
        return len;
    }
    if (ok) { /* C1 control */
        memcpy(e, "\\u00", 4);
        e[4] = hex[p[1] >> 4];
        e[5] = hex[p[1] & 15];
        *el = 6;
        return 2;
    }
    e[0] = '\\';
    e[1] = 'x';
    e[2] = hex[c >> 4];
    e[3] = hex[c & 15];
    *el = 4;
    return 1;
}

const char *gk_quote(char *buf, size_t n, const char *s)
{
    if (n == 0)
        return buf;
    const unsigned char *in = (const unsigned char *)(s ? s : "(null)");
    size_t total = 0, el;
    char e[8];
    for (const unsigned char *p = in; *p;) {
        p += quote_piece(p, e, &el);
        total += el;
    }
    /* Whole when it fits; else whole pieces up to room for "..." */
    size_t room = total <= n - 1 ? n - 1 : n - 1 >= 3 ? n - 1 - 3 : 0, k = 0;
    for (const unsigned char *p = in; *p;) {
        size_t used = quote_piece(p, e, &el);
        if (k + el > room)
            break;
        memcpy(buf + k, e, el);
        k += el;
        p += used;
    }
    if (total > n - 1 && n - 1 >= 3) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
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
