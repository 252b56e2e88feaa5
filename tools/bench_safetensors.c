/* bench_safetensors - how long opening a big checkpoint takes.
 *
 * Writes the header of a Llama-3-8B-shaped BF16 checkpoint (291 tensors,
 * 16 GB) into a sparse file in $TMPDIR (or /tmp), then times
 * gk_safetensors_open + gk_safetensors_info of every tensor, and checks with
 * mincore that no data page was brought in. Prints the median of several runs,
 * removes the file, and exits non-zero if the checkpoint does not open or reads
 * wrong. Not a throughput benchmark: no tensor data is read.
 */
#include "gk/gk.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define N_RUNS 20

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct hdr_buf {
    char *s;
    size_t len, cap;
    uint64_t offset;     /* data bytes laid out so far */
    int n_tensors;
} hdr_buf;

static int add(hdr_buf *h, const char *name, int64_t rows, int64_t cols)
{
    uint64_t nbytes = (uint64_t)rows * (uint64_t)(cols ? cols : 1) * 2;
    char shape[64];
    if (cols)
        snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)rows, (long long)cols);
    else
        snprintf(shape, sizeof shape, "[%lld]", (long long)rows);
    if (h->cap - h->len < 512) {
        h->cap = 2 * h->cap + 4096;
        char *g = realloc(h->s, h->cap);
        if (!g)
            return -1;
        h->s = g;
    }
    h->len += (size_t)snprintf(h->s + h->len, h->cap - h->len,
                               "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                               h->n_tensors ? "," : "{\"__metadata__\":{\"format\":\"pt\"},", name,
                               shape, (unsigned long long)h->offset,
                               (unsigned long long)(h->offset + nbytes));
    h->offset += nbytes;
    h->n_tensors++;
    return 0;
}

/* The Llama-3-8B layout: 128256 x 4096 embeddings, 32 blocks, GQA 8 x 128. */
static int llama8b_header(hdr_buf *h)
{
    const int64_t V = 128256, D = 4096, F = 14336, KV = 1024;
    char name[96];
    int rc = add(h, "model.embed_tokens.weight", V, D);
    for (int l = 0; l < 32 && !rc; l++) {
        static const char *const norms[] = {"input_layernorm", "post_attention_layernorm"};
        struct { const char *n; int64_t r, c; } w[] = {
            {"self_attn.q_proj", D, D}, {"self_attn.k_proj", KV, D}, {"self_attn.v_proj", KV, D},
            {"self_attn.o_proj", D, D}, {"mlp.gate_proj", F, D}, {"mlp.up_proj", F, D},
            {"mlp.down_proj", D, F},
        };
        for (size_t i = 0; i < 2 && !rc; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norms[i]);
            rc = add(h, name, D, 0);
        }
        for (size_t i = 0; i < sizeof w / sizeof w[0] && !rc; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, w[i].n);
            rc = add(h, name, w[i].r, w[i].c);
        }
    }
    if (!rc)
        rc = add(h, "model.norm.weight", D, 0);
    if (!rc)
        rc = add(h, "lm_head.weight", V, D);
    if (rc)
        return rc;
    h->s[h->len++] = '}';
    while ((8 + h->len) % 8)   /* pad with spaces, as writers do, to align the data */
        h->s[h->len++] = ' ';
    return 0;
}

/* Pages of [p, p + n) resident in memory. */
static size_t resident_pages(const void *p, uint64_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1);
    size_t len = (size_t)((uintptr_t)p + n - a), n_pages = (len + page - 1) / page, count = 0;
    unsigned char *vec = malloc(n_pages);
    if (!vec || mincore((void *)a, len, vec) != 0) {
        free(vec);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n_pages; i++)
        count += vec[i] & 1;
    free(vec);
    return count;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/gk_bench_st_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench_safetensors: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);

    int status = 1;
    hdr_buf h = {0};
    if (llama8b_header(&h) != 0) {
        fprintf(stderr, "bench_safetensors: out of memory\n");
        goto out_rmdir;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        goto out_rmdir;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    uint64_t total = 8 + h.len + h.offset;
    int wr = pwrite(fd, len8, 8, 0) == 8 && pwrite(fd, h.s, h.len, 8) == (ssize_t)h.len &&
             ftruncate(fd, (off_t)total) == 0;
    close(fd);
    if (!wr) {
        perror(path);
        goto out_unlink;
    }

    double t[N_RUNS];
    for (int r = 0; r < N_RUNS; r++) {
        gk_err err = {0};
        gk_safetensors *st = NULL;
        double t0 = now_s();
        if (gk_safetensors_open(path, &st, &err) != GK_OK) {
            fprintf(stderr, "bench_safetensors: %s\n", err.msg);
            goto out_unlink;
        }
        uint64_t sum = 0;
        size_t n = gk_safetensors_count(st);
        for (size_t i = 0; i < n; i++) {
            gk_tensor_info ti;
            if (gk_safetensors_info(st, gk_safetensors_name(st, i), &ti, &err) != GK_OK) {
                fprintf(stderr, "bench_safetensors: %s\n", err.msg);
                gk_safetensors_close(st);
                goto out_unlink;
            }
            sum += ti.nbytes;
        }
        t[r] = now_s() - t0;
        if (n != (size_t)h.n_tensors || sum != h.offset) {
            fprintf(stderr, "bench_safetensors: read %zu tensors / %llu bytes, wrote %d / %llu\n",
                    n, (unsigned long long)sum, h.n_tensors, (unsigned long long)h.offset);
            gk_safetensors_close(st);
            goto out_unlink;
        }
        if (r == N_RUNS - 1) {
            const void *first;
            uint64_t nb;
            gk_safetensors_bytes(st, gk_safetensors_name(st, 0), &first, &nb, &err);
            size_t res = resident_pages(first, h.offset);
            printf("data pages resident after open+info: %zu\n", res);
        }
        gk_safetensors_close(st);
    }
    qsort(t, N_RUNS, sizeof t[0], cmp_double);
    printf("open+info of %d tensors in a %.1f GB sparse checkpoint: %.2f ms (median of %d; min %.2f, max %.2f)\n",
           h.n_tensors, (double)total / 1e9, 1e3 * t[N_RUNS / 2], N_RUNS, 1e3 * t[0],
           1e3 * t[N_RUNS - 1]);
    status = 0;

out_unlink:
    unlink(path);
out_rmdir:
    rmdir(dir);
    free(h.s);
    return status;
}
