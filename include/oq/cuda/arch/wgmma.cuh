// oq/cuda/arch/wgmma.cuh: the Hopper (sm_90a) warpgroup MMA pieces oq's
// W4A4 GEMM uses: shared-memory matrix descriptors, the s8 wgmma with both
// operands in shared memory, and the fences that order it.
//
// Layout the descriptors describe ("no swizzle", K-major; PTX ISA,
// "Asynchronous Warpgroup Level Matrix Shared Memory Layout"): the operand is
// tiled into core matrices of 8 rows × 16 bytes, each stored as 128
// contiguous bytes (row r at byte 16·r). The descriptor gives the start
// address, the byte distance between core matrices adjacent in K (leading
// dimension byte offset, LBO) and between core matrices adjacent in M or N
// (stride dimension byte offset, SBO). All three are encoded >> 4, so they
// must be multiples of 16.
//
// Descriptor bits: 0–13 start address >> 4, 16–29 LBO >> 4, 32–45 SBO >> 4,
// 49–51 base offset (0: no swizzle), 62–63 swizzle mode (0: none).
//
// Everything here needs sm_90a (arch::Sm90a: `wgmma` is not forward
// compatible). On other targets each instruction compiles to a trap
// (arch/arch.cuh's policy), which callers must not reach: the wgmma kernel's
// launcher admits only compute capability 9.0.
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/arch/memory.cuh>

#include <cstdint>

namespace oq::cuda::arch {

/// The descriptor of a no-swizzle K-major operand starting at `smem`.
__device__ __forceinline__ std::uint64_t wgmma_descriptor(const void* smem, std::uint32_t lbo_bytes,
                                                          std::uint32_t sbo_bytes) {
  const std::uint64_t address = shared_address(smem);
  return ((address & 0x3FFFFu) >> 4) | (static_cast<std::uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<std::uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32);
}

/// Orders this thread's earlier generic-proxy writes to shared memory before
/// later async-proxy reads (wgmma operands): each writer fences, then a barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
  if constexpr (compiled_for<Sm90a>()) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  } else {
    unsupported();
  }
}

/// Before the first wgmma of a batch: makes the accumulator registers' earlier
/// writes visible to the warpgroup's asynchronous MMAs.
__device__ __forceinline__ void wgmma_fence() {
  if constexpr (compiled_for<Sm90a>()) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  } else {
    unsupported();
  }
}

/// Pins accumulator registers in program order around a wgmma batch. wgmma
/// writes its accumulators asynchronously, until wgmma_wait, but to the
/// compiler the asm statement produced them at issue: without this (empty,
/// volatile) rewrite of every register after the wait, and before the batch,
/// the compiler may read them early or sink their initialisation past it.
template <int kCount>
__device__ __forceinline__ void wgmma_fence_operands(std::int32_t (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

/// Closes the batch of wgmma operations issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
  if constexpr (compiled_for<Sm90a>()) {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  } else {
    unsupported();
  }
}

/// Waits until at most kPending committed batches are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  if constexpr (compiled_for<Sm90a>()) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
  } else {
    unsupported();
  }
}

/// d += A·B for a 64 × 128 × 32 step of the warpgroup, A (64 × 32 s8) and
/// B (128 × 32 s8, i.e. N rows of K) in shared memory, int32 accumulators.
/// Thread lane l of warp w (of the warpgroup), g = l / 4, t = l % 4, holds
/// d[4j + e] = D[16w + g + 8·(e / 2)][8j + 2t + e % 2] for j < 16, e < 4:
/// mma.sync's accumulator layout per 8 columns (arch::MmaAccumulatorLayout).
__device__ __forceinline__ void wgmma_m64n128k32_s8(std::int32_t (&d)[64], std::uint64_t a_descriptor,
                                                    std::uint64_t b_descriptor) {
  if constexpr (compiled_for<Sm90a>()) {
    asm volatile(
        "{\n"
        ".reg .pred accumulate;\n"
        "setp.ne.b32 accumulate, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, accumulate;\n"
        "}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
            "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
            "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
            "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
            "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
            "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
            "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
            "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
        : "l"(a_descriptor), "l"(b_descriptor), "n"(1)  // scale-d = 1: D += A·B
        : "memory");                                     // reads shared memory
  } else {
    unsupported();
  }
}

}  // namespace oq::cuda::arch
