/* mk_sync.cuh - the persistent decode kernel's (mk.cu) synchronisation and
 * copy primitives: acquire loads, mbarriers, bulk copies into shared memory,
 * %globaltimer. tools/bench_grid_barrier.cu measures with the same ones.
 * Compute capability 9.0 and newer (include them where __CUDA_ARCH__ >= 900
 * or in host passes only). */
#pragma once

static __device__ __forceinline__ unsigned mk_ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* mbarriers (shared memory): init, the producer's expect, a consumer's
 * arrival, and the wait for a phase of parity `par` to complete. */
static __device__ __forceinline__ unsigned mk_sa(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
static __device__ __forceinline__ void mk_mbar_init(unsigned long long *b, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(mk_sa(b)), "r"(count) : "memory");
}
static __device__ __forceinline__ void mk_mbar_expect(unsigned long long *b, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mk_sa(b)), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void mk_mbar_arrive(unsigned long long *b)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(mk_sa(b)) : "memory");
}
static __device__ __forceinline__ void mk_mbar_wait(unsigned long long *b, unsigned par)
{
    unsigned ok;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     " selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(ok)
                     : "r"(mk_sa(b)), "r"(par)
                     : "memory");
    } while (!ok);
}

/* bytes (a multiple of 16, both ends 16-byte aligned) of weights into
 * shared memory by the copy engine, completing on mbarrier b; evict-first
 * in L2: a step reads each weight once, and the caches and activations
 * should stay. */
static __device__ __forceinline__ void mk_bulk_load(void *dst, const void *src, unsigned bytes, unsigned long long *b,
                                                    unsigned long long policy)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], "
                 "%4;" ::"r"(mk_sa(dst)),
                 "l"(src), "r"(bytes), "r"(mk_sa(b)), "l"(policy)
                 : "memory");
}

static __device__ __forceinline__ unsigned long long mk_clock(void)
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}
