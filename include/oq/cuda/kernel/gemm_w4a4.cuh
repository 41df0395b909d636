// oq/cuda/kernel/gemm_w4a4.cuh: W4A4 GEMM with int32 accumulation on tensor
// cores and the scale epilogue of DESIGN §7.
//
//   acc[m, n] = Σ_k qa[m, k] · qw[n, k]                       (exact, int32)
//   y[m, n]   = s_a[m] · s_w[n] · (acc − z_w[n]·Σ_k qa[m, k] − z_a[m]·Σ_k qw[n, k] + K·z_a[m]·z_w[n])
// i.e. s_a·s_w·Σ_k (qa − z_a)(qw − z_w): the zero-point terms vanish for
// symmetric operands. The K·z_a·z_w term, needed when both operands are
// asymmetric, is missing from DESIGN §7's wording. The bracket is formed in
// int64 (zero points are integers), so the only roundings are the float
// conversion and the two scale products.
//
// Operands are packed INT4 rows (format/int4_row.hpp): qa is M × K (u4 when
// activations are asymmetric, s4 when symmetric), qw is N × K, both
// K-contiguous — which is exactly the "row.col" operand order of mma.sync.
//
// This first version is written to be checkably correct on every target: it
// widens INT4 to 8 bits in registers (core::widen_{s,u}4x4_to_{s,u}8x4) and
// issues mma.sync.m16n8k32 s8 (valid on sm_80, sm_89 and sm_90; Hopper has no
// INT4 MMA at all, DESIGN §7), one 16 × 8 tile per warp, operands straight
// from global memory. The native s4 m16n8k64 path for sm_80/89, shared-memory
// staging and the wgmma path for sm_90a are issue 6.
#pragma once

#include <oq/core/int4.hpp>
#include <oq/cuda/numeric.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

template <class ElementOut>
struct GemmW4A4Params {
  const std::uint8_t* a = nullptr;  ///< M × K/2 bytes, rows ld_a bytes apart
  std::int64_t ld_a = 0;
  bool a_signed = true;             ///< s4 (symmetric) or u4 (asymmetric) codes
  const std::uint8_t* w = nullptr;  ///< N × K/2 bytes, rows ld_w bytes apart
  std::int64_t ld_w = 0;
  bool w_signed = true;
  std::int64_t m = 0, n = 0, k = 0;
  // Epilogue (all optional but y needs scale_a and scale_w):
  const float* scale_a = nullptr;   ///< M
  const float* zero_a = nullptr;    ///< M, null when activations are symmetric
  const float* scale_w = nullptr;   ///< N
  const float* zero_w = nullptr;    ///< N, null when weights are symmetric
  const std::int32_t* sum_a = nullptr;  ///< M, Σ_k qa (the quantize kernel's code_sums); needed with zero_w
  const std::int32_t* sum_w = nullptr;  ///< N, Σ_k qw (computed offline); needed with zero_a
  std::int32_t* acc = nullptr;      ///< M × N raw accumulators (ld_acc apart), or null
  std::int64_t ld_acc = 0;
  ElementOut* y = nullptr;          ///< M × N outputs (ld_y apart), or null
  std::int64_t ld_y = 0;
};

template <class ElementOut, int kWarpsN = 4>
struct GemmW4A4 {
  using Params = GemmW4A4Params<ElementOut>;
  static constexpr int kThreads = 32 * kWarpsN;
  static constexpr int kTileM = 16;
  static constexpr int kTileN = 8 * kWarpsN;

  // Four consecutive 4-bit elements starting at element `e` (a multiple of 4)
  // of a packed row, widened to four 8-bit lanes; zero for rows past the end.
  __device__ __forceinline__ static std::uint32_t load4(const std::uint8_t* base, std::int64_t ld, std::int64_t row,
                                                        std::int64_t rows, std::int64_t e, bool is_signed) {
    if (row >= rows) return 0u;
    const auto quad = *reinterpret_cast<const std::uint16_t*>(base + row * ld + e / 2);
    return is_signed ? core::widen_s4x4_to_s8x4(quad) : core::widen_u4x4_to_u8x4(quad);
  }

  __device__ void operator()(const Params& p) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const int lane = threadIdx.x % 32;
    const int group = lane / 4;            // groupID of the PTX fragment tables
    const int thread_in_group = lane % 4;  // threadID_in_group
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN + 8 * (threadIdx.x / 32);

    std::int32_t c[4] = {0, 0, 0, 0};
    for (std::int64_t k0 = 0; k0 < p.k; k0 += 32) {
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
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    // C fragment: c0, c1 at row g, columns 2t, 2t+1; c2, c3 at row g+8.
    OQ_UNROLL
    for (int i = 0; i < 4; ++i) {
      const std::int64_t row = m0 + group + (i >= 2 ? 8 : 0);
      const std::int64_t col = n0 + 2 * thread_in_group + (i % 2);
      if (row >= p.m || col >= p.n) continue;
      if (p.acc != nullptr) p.acc[row * p.ld_acc + col] = c[i];
      if (p.y != nullptr) {
        std::int64_t total = c[i];
        const std::int64_t za = p.zero_a != nullptr ? static_cast<std::int64_t>(p.zero_a[row]) : 0;
        const std::int64_t zw = p.zero_w != nullptr ? static_cast<std::int64_t>(p.zero_w[col]) : 0;
        if (zw != 0) total -= zw * p.sum_a[row];
        if (za != 0) total -= za * p.sum_w[col];
        total += p.k * za * zw;
        p.y[row * p.ld_y + col] = cuda::from_float<ElementOut>(p.scale_a[row] * p.scale_w[col] * static_cast<float>(total));
      }
    }
#endif
  }
};

template <class ElementOut, int kWarpsN>
__global__ void __launch_bounds__(32 * kWarpsN) gemm_w4a4_kernel(const GemmW4A4Params<ElementOut> params) {
  GemmW4A4<ElementOut, kWarpsN>{}(params);
}

}  // namespace oq::cuda::kernel
