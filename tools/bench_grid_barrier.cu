/* bench_grid_barrier - what one grid-wide barrier round costs on this GPU,
 * with HBM idle and with every SM streaming weights into shared memory by
 * the copy engine the way the persistent decode kernel's ring does
 * (backends/cuda/mk.cu), and how that cost grows with the bytes each SM
 * keeps in flight. One block per SM, all resident (cooperative launch); 15
 * warps take part in the barrier, the 16th streams (or idles).
 * Ways to arrive and wait:
 *   release/acquire  red.release.gpu on one counter, thread 0 spins with
 *                    ld.acquire.gpu (mk.cu's barrier)
 *   relaxed          the same without ordering: the lower bound of a counter
 *                    (not a usable barrier: the data written before it is
 *                    not ordered)
 *   two-level        every block counts; block 0 waits for them all, then
 *                    sets a flag the others spin on
 * Prints microseconds a round (the slowest block's, over 2,000 rounds), then
 * for release/acquire under streams of 8 KB to 192 KB in flight per SM the
 * round's cost beside the bandwidth the stream reached meanwhile.
 * Needs compute capability 9.0 (bulk copies); exits 2 with a message
 * elsewhere, or where there is no GPU. Usage: bench_grid_barrier */
#include <cuda_runtime.h>
#include <stdio.h>

#define BB_THREADS 512
#define BB_MAX_SLOTS 8
#define BB_SMEM (192u * 1024u) /* the widest stream's slots */
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
static __device__ __forceinline__ void bb_copy(uint4 *dst, const uint4 *src, unsigned bytes, unsigned long long *mb,
                                               unsigned long long policy)
{
    mk_mbar_expect(mb, bytes);
    mk_bulk_load(dst, src, bytes, mb, policy);
}
#endif

/* ctl[0]: the counter, ctl[1]: blocks done, ctl[2]: stop the stream,
 * ctl[32]: the two-level flag (its own 128-byte line). The stream: `slots`
 * copies of slot_b bytes in flight (0: none). out[b]: block b's time for
 * the rounds; out[G + 2b], out[G + 2b + 1]: the bytes its stream landed
 * and the time it took. */
__global__ void __launch_bounds__(BB_THREADS, 1)
    bb_kernel(unsigned *ctl, int mode, int slots, unsigned slot_b, const uint4 *src, size_t src_n,
              unsigned long long *out)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ uint4 bb_smem[];
    __shared__ unsigned long long mb[BB_MAX_SLOTS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (threadIdx.x == 0) {
        for (int i = 0; i < BB_MAX_SLOTS; i++)
            mk_mbar_init(mb + i, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == BB_THREADS / 32 - 1) { /* the stream: `slots` copies in flight until told to stop */
        if (slots == 0 || lane != 0)
            return;
        const size_t sv = slot_b / 16, step = (size_t)gridDim.x * sv;
        size_t off = (size_t)blockIdx.x * sv;
        unsigned long long policy, landed = 0;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
        const unsigned long long ts = mk_clock();
        for (int i = 0; i < slots; i++, off = (off + step) % src_n)
            bb_copy(bb_smem + i * sv, src + off, slot_b, mb + i, policy);
        unsigned ph = 0;
        int left = -1; /* once told to stop: the copies still in flight */
        for (int it = 0; left != 0; it++) {
            const int i = it % slots;
            mk_mbar_wait(mb + i, ph);
            landed += slot_b;
            if (i == slots - 1)
                ph ^= 1u;
            if (left > 0) {
                left--;
                continue;
            }
            if (bb_ld_relaxed(ctl + 2)) {
                left = slots - 1;
                continue;
            }
            bb_copy(bb_smem + i * sv, src + off, slot_b, mb + i, policy);
            off = (off + step) % src_n;
        }
        out[gridDim.x + 2 * blockIdx.x] = landed;
        out[gridDim.x + 2 * blockIdx.x + 1] = mk_clock() - ts;
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
    const size_t smem = BB_SMEM;
    const size_t src_n = (size_t)sms * (32768 / 16) * 64; /* 64 rounds of every SM's 32 KB: ~280 MB */
    unsigned *ctl = nullptr;
    unsigned long long *out = nullptr;
    uint4 *src = nullptr;
    BB_CHECK(cudaMalloc(&ctl, 4096));
    BB_CHECK(cudaMalloc(&out, sizeof(unsigned long long) * 3 * sms));
    BB_CHECK(cudaMalloc(&src, src_n * 16));
    BB_CHECK(cudaMemset(src, 0, src_n * 16));
    BB_CHECK(cudaFuncSetAttribute(bb_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    cudaStream_t side;
    BB_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    unsigned long long *h = new unsigned long long[3 * (size_t)sms];
    /* one launch: the round's cost in us (the slowest block), the stream's GB/s (0 without one) */
    auto run = [&](int mode, int slots, unsigned slot_b, double *us, double *gbs) -> int {
        BB_CHECK(cudaMemset(ctl, 0, 4096));
        BB_CHECK(cudaMemset(out, 0, sizeof(unsigned long long) * 3 * sms));
        BB_CHECK(cudaDeviceSynchronize());
        void *args[] = {&ctl, &mode, &slots, &slot_b, &src, (void *)&src_n, &out};
        BB_CHECK(cudaLaunchCooperativeKernel((void *)bb_kernel, sms, BB_THREADS, args, smem, 0));
        if (slots) { /* the barrier's blocks are done: stop the copies (from a stream that does not wait) */
            unsigned done = 0, one = 1;
            for (long i = 0; i < 10000000 && done < (unsigned)sms; i++) {
                BB_CHECK(cudaMemcpyAsync(&done, ctl + 1, 4, cudaMemcpyDeviceToHost, side));
                BB_CHECK(cudaStreamSynchronize(side));
            }
            BB_CHECK(cudaMemcpyAsync(ctl + 2, &one, 4, cudaMemcpyHostToDevice, side));
            BB_CHECK(cudaStreamSynchronize(side));
        }
        BB_CHECK(cudaDeviceSynchronize());
        BB_CHECK(cudaMemcpy(h, out, sizeof(unsigned long long) * 3 * sms, cudaMemcpyDeviceToHost));
        unsigned long long mx = 0, tmax = 0;
        double bytes = 0.0;
        for (int b = 0; b < sms; b++) {
            mx = h[b] > mx ? h[b] : mx;
            bytes += (double)h[sms + 2 * b];
            tmax = h[sms + 2 * b + 1] > tmax ? h[sms + 2 * b + 1] : tmax;
        }
        *us = (double)mx / (BB_ROUNDS - BB_SKIP) / 1e3;
        *gbs = tmax ? bytes / (double)tmax : 0.0;
        return 0;
    };
    static const char *names[3] = {"release/acquire", "relaxed (no ordering)", "two-level"};
    printf("grid barrier, %d blocks x %d threads, us a round (slowest block, %d rounds)\n", sms, BB_THREADS,
           BB_ROUNDS - BB_SKIP);
    printf("%-24s %12s %22s\n", "arrive and wait", "HBM idle", "stream 4 x 32 KB");
    for (int mode = 0; mode < 3; mode++) {
        double us[2], gbs;
        if (run(mode, 0, 0, &us[0], &gbs) || run(mode, 4, 32768, &us[1], &gbs))
            return 1;
        printf("%-24s %12.2f %22.2f\n", names[mode], us[0], us[1]);
    }
    /* the round's cost against the bytes in flight per SM (release/acquire) */
    static const int cfg[][2] = {{1, 8192}, {2, 8192}, {4, 8192}, {8, 8192}, {4, 16384}, {4, 32768}, {6, 32768}};
    printf("\n%-26s %14s %16s\n", "in flight per SM", "us a round", "stream GB/s");
    for (const auto &c : cfg) {
        double us, gbs;
        if (run(0, c[0], (unsigned)c[1], &us, &gbs))
            return 1;
        char label[64];
        snprintf(label, sizeof label, "%d x %d KB = %d KB", c[0], c[1] / 1024, c[0] * c[1] / 1024);
        printf("%-26s %14.2f %16.0f\n", label, us, gbs);
    }
    delete[] h;
    cudaFree(src);
    cudaFree(out);
    cudaFree(ctl);
    return 0;
}
