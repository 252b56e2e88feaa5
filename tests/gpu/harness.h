/* harness.h - what the standalone GPU harnesses of this folder (gemv,
 * flash attention, decode attention) share: the two libgk functions the
 * backend's launchers call, so a harness links the .cu files alone, and a
 * CUDA-call check. Include once, in the harness's one source file. */
#ifndef GK_TESTS_GPU_HARNESS_H
#define GK_TESTS_GPU_HARNESS_H

#include "cuda_common.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* As libgk's: printf into err (may be NULL), returns code. */
gk_status gk_err_set(gk_err *err, gk_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

/* The ops the harnesses launch; "?" for the rest (only error texts use it). */
const char *gk_op_name(gk_op op)
{
    return op == GK_OP_ATTN ? "attn" : op == GK_OP_LINEAR ? "linear" : "?";
}

/* A CUDA call that must succeed; exit status 2 (not a check's 1) when not. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

#endif
