/* bench_grid_barrier - what one grid-wide barrier round costs on this GPU,
 * with HBM idle and with every SM streaming weights into shared memory by
 * the copy engine the way the persistent decode kernel's ring does
 * (backends/cuda/mk.cu). One block per SM, all resident (cooperative
 * launch); 15 warps take part in the barrier, the 16th streams (or idles).
 * Ways to arrive and wait:
 *   release/acquire  red.release.gpu on one counter, thread 0 spins with
 *                    ld.acquire.gpu (mk.cu's barrier)
 *   relaxed          the same without ordering: the lower bound of a counter
 *                    (not a usable barrier: the data written before it is
 *                    not ordered)
 *   two-level        every block counts; block 0 waits for them all, then
 *                    sets a flag the others spin on
 * Prints microseconds a round (the slowest block's, over 2,000 rounds).
 * Needs compute capability 9.0 (bulk copies); exits 2 with a message
 * elsewhere, or where there is no GPU. Usage: bench_grid_barrier */
#include <cuda_runtime.h>
#include <stdio.h>

#define BB_THREADS 512
#define BB_SLOTS 4
#define BB_SLOT_BYTES 32768u
#define BB_ROUNDS 2000
#define BB_SKIP 8

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include "mk_sync.cuh" /* the persistent kernel's own primitives */
static __device__ __forceinline__ unsigned bb_ld_relaxed(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
static __device__ __forceinline__ void bb_csync(void)
{
    asm volatile("bar.sync 1, %0;" ::"n"(BB_THREADS - 32) : "memory");
}
static __device__ __forceinline__ void bb_copy(uint4 *dst, const uint4 *src, unsigned long long *mb,
                                               unsigned long long policy)
{
    mk_mbar_expect(mb, BB_SLOT_BYTES);
    mk_bulk_load(dst, src, BB_SLOT_BYTES, mb, policy);
}
#endif

/* ctl[0]: the counter, ctl[1]: blocks done, ctl[2]: stop the stream,
 * ctl[32]: the two-level flag (its own 128-byte line). */
__global__ void __launch_bounds__(BB_THREADS, 1)
    bb_kernel(unsigned *ctl, int mode, int stream, const uint4 *src, size_t src_n, unsigned long long *out)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ uint4 bb_smem[];
    __shared__ unsigned long long mb[BB_SLOTS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (threadIdx.x == 0) {
        for (int i = 0; i < BB_SLOTS; i++)
            mk_mbar_init(mb + i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == BB_THREADS / 32 - 1) { /* the stream: BB_SLOTS copies in flight until told to stop */
        if (!stream || lane != 0)
            return;
        const size_t step = (size_t)gridDim.x * (BB_SLOT_BYTES / 16);
        size_t off = (size_t)blockIdx.x * (BB_SLOT_BYTES / 16);
        unsigned long long policy;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
        for (int i = 0; i < BB_SLOTS; i++, off = (off + step) % src_n)
            bb_copy(bb_smem + i * (BB_SLOT_BYTES / 16), src + off, mb + i, policy);
        unsigned ph = 0;
        int left = -1; /* once told to stop: the copies still in flight */
        for (int it = 0; left != 0; it++) {
            const int i = it % BB_SLOTS;
            mk_mbar_wait(mb + i, ph);
            if (i == BB_SLOTS - 1)
                ph ^= 1u;
            if (left > 0) {
                left--;
                continue;
            }
            if (bb_ld_relaxed(ctl + 2)) {
                left = BB_SLOTS - 1;
                continue;
            }
            bb_copy(bb_smem + i * (BB_SLOT_BYTES / 16), src + off, mb + i, policy);
            off = (off + step) % src_n;
        }
        return;
    }
    const unsigned G = gridDim.x;
    unsigned long long t0 = 0;
    for (unsigned r = 0; r < BB_ROUNDS; r++) {
        if (r == BB_SKIP && threadIdx.x == 0)
            t0 = mk_clock();
        bb_csync();
        if (threadIdx.x == 0) {
            const unsigned target = (r + 1) * G;
            if (mode == 0) {
                asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctl) : "memory");
                while (mk_ld_acquire(ctl) < target)
                    ;
            } else if (mode == 1) {
                asm volatile("red.relaxed.gpu.global.add.u32 [%0], 1;" ::"l"(ctl) : "memory");
                while (bb_ld_relaxed(ctl) < target)
                    ;
            } else {
                asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctl) : "memory");
                if (blockIdx.x == 0) {
                    while (mk_ld_acquire(ctl) < target)
                        ;
                    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(ctl + 32), "r"(r + 1) : "memory");
                } else {
                    while (mk_ld_acquire(ctl + 32) < r + 1)
                        ;
                }
            }
        }
        bb_csync();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = mk_clock() - t0;
        atomicAdd(ctl + 1, 1u);
    }
#endif
}

#define BB_CHECK(x)                                                                                                    \
    do {                                                                                                               \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "bench_grid_barrier: %s: %s\n", #x, cudaGetErrorString(e_));                              \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

int main(void)
{
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        fprintf(stderr, "bench_grid_barrier: no usable CUDA device\n");
        return 2;
    }
    int major = 0, sms = 0, coop = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, 0);
    if (major < 9 || !coop) {
        fprintf(stderr, "bench_grid_barrier: needs compute capability 9.0 and cooperative launch\n");
        return 2;
    }
    const size_t smem = (size_t)BB_SLOTS * BB_SLOT_BYTES;
    const size_t src_n = (size_t)sms * (BB_SLOT_BYTES / 16) * 64; /* 64 rounds of every SM's slot: ~280 MB */
    unsigned *ctl = nullptr;
    unsigned long long *out = nullptr;
    uint4 *src = nullptr;
    BB_CHECK(cudaMalloc(&ctl, 4096));
    BB_CHECK(cudaMalloc(&out, sizeof(unsigned long long) * sms));
    BB_CHECK(cudaMalloc(&src, src_n * 16));
    BB_CHECK(cudaMemset(src, 0, src_n * 16));
    BB_CHECK(cudaFuncSetAttribute(bb_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    cudaStream_t side;
    BB_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    static const char *names[3] = {"release/acquire", "relaxed (no ordering)", "two-level"};
    printf("grid barrier, %d blocks x %d threads, us a round (slowest block, %d rounds)\n", sms, BB_THREADS,
           BB_ROUNDS - BB_SKIP);
    printf("%-24s %12s %22s\n", "arrive and wait", "HBM idle", "copy-engine stream");
    for (int mode = 0; mode < 3; mode++) {
        double us[2];
        for (int stream = 0; stream < 2; stream++) {
            BB_CHECK(cudaMemset(ctl, 0, 4096));
            BB_CHECK(cudaDeviceSynchronize());
            void *args[] = {&ctl, &mode, &stream, &src, (void *)&src_n, &out};
            BB_CHECK(cudaLaunchCooperativeKernel((void *)bb_kernel, sms, BB_THREADS, args, smem, 0));
            if (stream) { /* the barrier's blocks are done: stop the copies (from a stream that does not wait) */
                unsigned done = 0, one = 1;
                for (long i = 0; i < 10000000 && done < (unsigned)sms; i++) {
                    BB_CHECK(cudaMemcpyAsync(&done, ctl + 1, 4, cudaMemcpyDeviceToHost, side));
                    BB_CHECK(cudaStreamSynchronize(side));
                }
                BB_CHECK(cudaMemcpyAsync(ctl + 2, &one, 4, cudaMemcpyHostToDevice, side));
                BB_CHECK(cudaStreamSynchronize(side));
            }
            BB_CHECK(cudaDeviceSynchronize());
            unsigned long long h[1024], mx = 0;
            BB_CHECK(cudaMemcpy(h, out, sizeof(unsigned long long) * (sms < 1024 ? sms : 1024),
                                cudaMemcpyDeviceToHost));
            for (int b = 0; b < sms && b < 1024; b++)
                mx = h[b] > mx ? h[b] : mx;
            us[stream] = (double)mx / (BB_ROUNDS - BB_SKIP) / 1e3;
        }
        printf("%-24s %12.2f %22.2f\n", names[mode], us[0], us[1]);
    }
    cudaFree(src);
    cudaFree(out);
    cudaFree(ctl);
    return 0;
}
