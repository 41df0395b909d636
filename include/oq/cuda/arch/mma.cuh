// oq/cuda/arch/mma.cuh: the warp-level integer MMA instructions oq's GEMMs
// issue, one function per PTX instruction (as CUTLASS's arch/mma_sm80.h).
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k32 / m16n8k64", with
// g = lane / 4 and t = lane % 4):
//
//   m16n8k32 .s8   a0: A[g][4t..4t+3]     a1: A[g+8][4t..4t+3]
//                  a2: A[g][16+4t..]      a3: A[g+8][16+4t..]
//                  b0: B[4t..4t+3][g]     b1: B[16+4t..][g]
//   m16n8k64 .s4   the same with each byte split into two nibbles:
//   /.u4           a0: A[g][8t..8t+7]     a1: A[g+8][8t..8t+7]
//                  a2: A[g][32+8t..]      a3: A[g+8][32+8t..]
//                  b0: B[8t..8t+7][g]     b1: B[32+8t..][g]
//   accumulators   c0, c1: C[g][2t], C[g][2t+1]   c2, c3: C[g+8][2t], C[g+8][2t+1]
//
// Lanes hold consecutive elements in increasing bit order (element 0 in the
// lowest byte or nibble), which is the order of a little-endian word of a
// packed INT4 row (format/int4_row.hpp). Both need sm_80; ptxas also accepts
// the INT4 form for sm_90, which has no INT4 tensor cores (docs/design.md §7).
// Code built for a target below sm_80 traps where it would issue one
// (arch/arch.cuh's policy) rather than leave the accumulators unchanged.
#pragma once

#if !defined(__CUDACC__)
#error "oq/cuda/ headers need a CUDA compiler (nvcc); host code includes <oq/oq.hpp>"
#endif

#include <oq/cuda/arch/arch.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::arch {

/// Where accumulator e (0..3) of an m16n8 C fragment lives (the
/// "accumulators" row of the table above): row g + 8·⌊e/2⌋, column
/// 2t + e mod 2 of the tile whose first row and column are `base`, for the
/// lane of group g = group(lane) and thread_in_group t = thread_in_group(lane)
/// — the same per 8 columns for wgmma's accumulators (arch/wgmma.cuh). Every
/// kernel that stores an mma.sync or wgmma result takes its rows and columns
/// from here. (base + g + 8·⌊e/2⌋ in that order: the kernels' index
/// arithmetic is 64-bit.)
struct MmaAccumulatorLayout {
  __host__ __device__ static constexpr int group(int lane) { return lane / 4; }
  __host__ __device__ static constexpr int thread_in_group(int lane) { return lane % 4; }
  template <class Index>
  __host__ __device__ static constexpr Index row(Index base, int group, int e) {
    return base + group + (e >= 2 ? 8 : 0);
  }
  template <class Index>
  __host__ __device__ static constexpr Index col(Index base, int thread_in_group, int e) {
    return base + 2 * thread_in_group + (e % 2);
  }
};

/// c += A·B, m16n8k32, signed 8-bit operands, int32 accumulators.
__device__ __forceinline__ void mma_m16n8k32_s8(std::int32_t (&c)[4], const std::uint32_t (&a)[4],
                                                const std::uint32_t (&b)[2]) {
  if constexpr (compiled_for<Sm80>()) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    unsupported();
  }
}

/// c += A·B, m16n8k64, 4-bit operands (s4 when k?Signed, else u4), int32
/// accumulators. PTX takes each operand's signedness from the instruction.
template <bool kASigned, bool kBSigned>
__device__ __forceinline__ void mma_m16n8k64_int4(std::int32_t (&c)[4], const std::uint32_t (&a)[4],
                                                  const std::uint32_t (&b)[2]) {
#define OQ_MMA_M16N8K64(TYPE_A, TYPE_B)                                                                  \
  asm volatile("mma.sync.aligned.m16n8k64.row.col.s32." TYPE_A "." TYPE_B                               \
               ".s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                            \
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])                                         \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
  if constexpr (!compiled_for<Sm80>()) {
    unsupported();
  } else if constexpr (kASigned && kBSigned) {
    OQ_MMA_M16N8K64("s4", "s4");
  } else if constexpr (kASigned) {
    OQ_MMA_M16N8K64("s4", "u4");
  } else if constexpr (kBSigned) {
    OQ_MMA_M16N8K64("u4", "s4");
  } else {
    OQ_MMA_M16N8K64("u4", "u4");
  }
#undef OQ_MMA_M16N8K64
}

/// c += A·B, m16n8k16, fp16 or bf16 operands (T: __half or __nv_bfloat16),
/// fp32 accumulators. Fragments: each register holds two consecutive K
/// elements; a0: A[g][2t, 2t+1], a1: A[g+8][2t..], a2: A[g][2t+8..],
/// a3: A[g+8][2t+8..]; b0: B[2t, 2t+1][g], b1: B[2t+8, 2t+9][g] (lower K in
/// the low half); c as for the integer shapes above.
template <class T>
__device__ __forceinline__ void mma_m16n8k16_f32(float (&c)[4], const std::uint32_t (&a)[4],
                                                 const std::uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "fp16 or bf16 operands");
  if constexpr (!compiled_for<Sm80>()) {
    unsupported();
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

}  // namespace oq::cuda::arch
