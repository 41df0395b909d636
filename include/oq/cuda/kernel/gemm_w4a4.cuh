// oq/cuda/kernel/gemm_w4a4.cuh: W4A4 GEMM with int32 accumulation on tensor
// cores and the zero-point epilogue of docs/design.md §7
// (kernel/gemm_w4a4_epilogue.cuh), in its simplest form.
//
// Arguments: kernel/gemm_w4a4_params.cuh (GemmW4A4Params). Two tensor-core
// paths, chosen by the W4A4Mma template argument (kAuto: the native one
// before sm_90, w4a4_native_s4):
//   - kNativeS4: mma.sync.m16n8k64 on the packed codes as they are. Its
//     fragments are the s8 ones with every byte split into two nibbles, and a
//     little-endian 32-bit word of a packed row (format/int4_row.hpp) is
//     exactly one such register: no unpacking at all.
//   - kWidenToS8: widen INT4 to 8-bit lanes in registers
//     (core::widen_{s,u}4x4_to_{s,u}8x4) and issue mma.sync.m16n8k32 s8. It
//     also finishes a K that is an odd multiple of 32 on the native path.
// Both are written to be checkably correct rather than fast: one 16 × 8 tile
// per warp, operands straight from global memory, no shared memory (no
// SharedStorage). The
// tiled kernels share its Params, MMA choice and epilogue:
// gemm_w4a4_multistage.cuh (shared memory, cp.async pipeline, ldmatrix) and
// gemm_w4a4_wgmma.cuh (sm_90a wgmma).
#pragma once

#include <oq/config.hpp>
#include <oq/core/int4.hpp>
#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/gemm_w4a4_epilogue.cuh>
#include <oq/cuda/kernel/gemm_w4a4_params.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

template <class ElementOut, int kWarpsN = 4, W4A4Mma kMma = W4A4Mma::kAuto>
struct GemmW4A4 {
  using Params = GemmW4A4Params<ElementOut>;
  static constexpr int kThreads = 32 * kWarpsN;
  static constexpr int kTileM = 16;
  static constexpr int kTileN = 8 * kWarpsN;

  /// Whether this compilation pass issues the native INT4 instruction.
  __host__ __device__ static constexpr bool native_s4() { return uses_native_s4<kMma>(); }

  // Eight consecutive 4-bit elements starting at element `e` (a multiple of 8)
  // of a packed row, as the little-endian word that is one s4/u4 fragment
  // register; zero for rows past the end. Two 16-bit loads, because the
  // launcher promises 2-byte alignment only.
  __device__ __forceinline__ static std::uint32_t load8(const std::uint8_t* base, std::int64_t ld, std::int64_t row,
                                                        std::int64_t rows, std::int64_t e) {
    if (row >= rows) return 0u;
    const auto* half = reinterpret_cast<const std::uint16_t*>(base + row * ld + e / 2);
    return static_cast<std::uint32_t>(half[0]) | (static_cast<std::uint32_t>(half[1]) << 16);
  }

  // The native mainloop over whole 64-wide K steps; returns where it stopped
  // (the largest multiple of 64 not above K). Fragments (PTX ISA, m16n8k64
  // .s4/.u4): a0 row g, k = 8t..8t+7; a1 row g+8; a2, a3 the same at k + 32;
  // b0 column g, k = 8t..8t+7; b1 at k + 32 — the s8 tables with bytes halved.
  template <bool kASigned, bool kWSigned>
  __device__ __forceinline__ static std::int64_t mainloop_s4(const Params& p, std::int64_t m0, std::int64_t n0,
                                                             int group, int thread_in_group, std::int32_t (&c)[4]) {
    std::int64_t k0 = 0;
    for (; k0 + 64 <= p.k; k0 += 64) {
      const std::int64_t ka = k0 + 8 * thread_in_group;
      const std::uint32_t a[4] = {load8(p.a, p.ld_a, m0 + group, p.m, ka),
                                  load8(p.a, p.ld_a, m0 + group + 8, p.m, ka),
                                  load8(p.a, p.ld_a, m0 + group, p.m, ka + 32),
                                  load8(p.a, p.ld_a, m0 + group + 8, p.m, ka + 32)};
      const std::uint32_t b[2] = {load8(p.w, p.ld_w, n0 + group, p.n, ka),
                                  load8(p.w, p.ld_w, n0 + group, p.n, ka + 32)};
      arch::mma_m16n8k64_int4<kASigned, kWSigned>(c, a, b);
    }
    return k0;
  }

  // Four consecutive 4-bit elements starting at element `e` (a multiple of 4)
  // of a packed row, widened to four 8-bit lanes; zero for rows past the end.
  __device__ __forceinline__ static std::uint32_t load4(const std::uint8_t* base, std::int64_t ld, std::int64_t row,
                                                        std::int64_t rows, std::int64_t e, bool is_signed) {
    if (row >= rows) return 0u;
    const auto quad = *reinterpret_cast<const std::uint16_t*>(base + row * ld + e / 2);
    return is_signed ? core::widen_s4x4_to_s8x4(quad) : core::widen_u4x4_to_u8x4(quad);
  }

  __device__ void operator()(const Params& p) const {
    if constexpr (!arch::compiled_for<arch::Sm80>()) {
      arch::unsupported();  // no mma.sync on integers: fail loudly rather than leave the output unwritten
    } else {
      const int lane = threadIdx.x % 32;
      const int group = arch::MmaAccumulatorLayout::group(lane);  // groupID of the PTX fragment tables
      const int thread_in_group = arch::MmaAccumulatorLayout::thread_in_group(lane);  // threadID_in_group
      const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
      const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN + 8 * (threadIdx.x / 32);

      std::int32_t c[4] = {0, 0, 0, 0};
      std::int64_t k_done = 0;
      if constexpr (native_s4()) {
        if (p.a_signed) {
          k_done = p.w_signed ? mainloop_s4<true, true>(p, m0, n0, group, thread_in_group, c)
                              : mainloop_s4<true, false>(p, m0, n0, group, thread_in_group, c);
        } else {
          k_done = p.w_signed ? mainloop_s4<false, true>(p, m0, n0, group, thread_in_group, c)
                              : mainloop_s4<false, false>(p, m0, n0, group, thread_in_group, c);
        }
      }
      // The widened s8 path: all of K, or the last 32 after the native loop.
      for (std::int64_t k0 = k_done; k0 < p.k; k0 += 32) {
        // A fragment (16 × 32, row): a0 row g, a1 row g+8 at k = 4t..4t+3; a2, a3 at k = 16+4t..
        const std::int64_t ka = k0 + 4 * thread_in_group;
        const std::uint32_t a0 = load4(p.a, p.ld_a, m0 + group, p.m, ka, p.a_signed);
        const std::uint32_t a1 = load4(p.a, p.ld_a, m0 + group + 8, p.m, ka, p.a_signed);
        const std::uint32_t a2 = load4(p.a, p.ld_a, m0 + group, p.m, ka + 16, p.a_signed);
        const std::uint32_t a3 = load4(p.a, p.ld_a, m0 + group + 8, p.m, ka + 16, p.a_signed);
        // B fragment (32 × 8, col): column n = g, k = 4t..4t+3 and 16+4t..
        const std::uint32_t b0 = load4(p.w, p.ld_w, n0 + group, p.n, ka, p.w_signed);
        const std::uint32_t b1 = load4(p.w, p.ld_w, n0 + group, p.n, ka + 16, p.w_signed);
        // u4 codes widen to u8 lanes; with signed types both are read as s8,
        // which is exact because a u4 code (0..15) is also a valid s8 value.
        arch::mma_m16n8k32_s8(c, {a0, a1, a2, a3}, {b0, b1});
      }
      // C fragment: c0, c1 at row g, columns 2t, 2t+1; c2, c3 at row g+8.
      OQ_UNROLL
      for (int i = 0; i < 4; ++i) {
        const std::int64_t row = arch::MmaAccumulatorLayout::row(m0, group, i);
        const std::int64_t col = arch::MmaAccumulatorLayout::col(n0, thread_in_group, i);
        if (row < p.m && col < p.n) store_w4a4_output(p, row, col, c[i]);
      }
    }
  }
};

template <class ElementOut, int kWarpsN, W4A4Mma kMma>
__global__ void __launch_bounds__(32 * kWarpsN) gemm_w4a4_kernel(const GemmW4A4Params<ElementOut> params) {
  GemmW4A4<ElementOut, kWarpsN, kMma>{}(params);
}

}  // namespace oq::cuda::kernel
