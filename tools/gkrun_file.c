/* gkrun_file.c - whole files and streams for gkrun (see gkrun_file.h). */
#include "gkrun_file.h"

#include <gk/gk.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gkrun_read_stream(FILE *f, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return ENOMEM;
    for (;;) {
        errno = 0;
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
        if (n + 1 == cap) {
            size_t grown;
            char *p = gk_size_mul(cap, 2, &grown) ? realloc(buf, grown) : NULL;
            if (!p) {
                free(buf);
                return ENOMEM;
            }
            buf = p;
            cap = grown;
        }
    }
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        free(buf);
        return e;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

FILE *gkrun_open_regular(const char *path, const char **why)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        *why = strerror(errno);
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        *why = S_ISDIR(sb.st_mode)    ? "not a regular file (a folder)"
               : S_ISFIFO(sb.st_mode) ? "not a regular file (a FIFO)"
                                      : "not a regular file";
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        *why = strerror(errno);
        close(fd);
    }
    return f;
}

char *gkrun_read_regular(const char *path, size_t *len, const char **why)
{
    FILE *f = gkrun_open_regular(path, why);
    if (!f)
        return NULL;
    char *buf = NULL;
    int e = gkrun_read_stream(f, &buf, len);
    fclose(f);
    if (e) {
        *why = strerror(e);
        return NULL;
    }
    return buf;
}
