/* gemv.cu - placeholder until the fused decode GEMV lands: takes nothing. */
#include "cuda_common.cuh"

bool cu_gemv_ok(const cu_gemv_desc *d) { return false; }

gk_status cu_gemv(cu_ctx *c, const cu_gemv_desc *d, const gk_node *nd, gk_err *err)
{
    return gk_err_set(err, GK_ERR_UNSUPPORTED, "cuda: fused GEMV not built");
}
