// oq/cuda/kernel/gemm_w4a16.cuh: W4A16 GEMM for decoding (M = 1..64 tokens):
//     y[m, n] = Σ_k a[m, k] · ŵ[n, k],   ŵ[n, k] = s[n, g]·(q[n, k] − z[n, g]),  g = k / group_size
// with a in fp16/bf16 (M × K, row-major), q the packed INT4 weights (N rows of
// format/int4_row.hpp: u4 codes when asymmetric, s4 with z = 0 when
// symmetric), fp32 scales and zero points per (row, group) — per-channel when
// group_size = K, per-group(128) as GPTQ/AWQ checkpoints store them.
//
// This first version is the plain CUDA-core formulation, written to be
// obviously correct; the tensor-core path and its tuning are issue 6. One warp
// owns one output channel n and kTileM tokens: its lanes stride over K eight
// weights (one 32-bit word) at a time, decode the word with the INT4 helpers
// of core/int4.hpp, multiply against 16-byte loads of the activations and
// accumulate in fp32; a warp shuffle reduction finishes each dot product.
#pragma once

#include <oq/core/int4.hpp>
#include <oq/cuda/numeric.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

template <class ElementA, class ElementOut>
struct GemmW4A16Params {
  const ElementA* a = nullptr;  ///< M × K, row-major, rows ld_a elements apart
  std::int64_t ld_a = 0;
  const std::uint8_t* w = nullptr;  ///< N × K/2 bytes, rows ld_w bytes apart
  std::int64_t ld_w = 0;
  const float* scales = nullptr;  ///< N × (K / group_size), row-major
  const float* zeros = nullptr;   ///< same shape; null when symmetric
  bool symmetric = false;         ///< s4 codes (z = 0) instead of u4
  std::int64_t group_size = 0;    ///< divides K, multiple of 8
  ElementOut* y = nullptr;        ///< M × N, row-major, rows ld_y elements apart
  std::int64_t ld_y = 0;
  std::int64_t m = 0, n = 0, k = 0;
};

template <class ElementA, class ElementOut, int kTileM = 8, int kWarps = 4>
struct GemmW4A16 {
  static_assert(sizeof(ElementA) == 2, "activations are 16-bit (fp16 or bf16)");
  using Params = GemmW4A16Params<ElementA, ElementOut>;
  static constexpr int kThreads = 32 * kWarps;

  __device__ void operator()(const Params& p) const {
    const int lane = threadIdx.x % 32;
    const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    if (n >= p.n) return;  // whole warp leaves together: n is warp-uniform
    const std::int64_t groups = p.k / p.group_size;
    const auto* w_row = reinterpret_cast<const std::uint32_t*>(p.w + n * p.ld_w);

    float acc[kTileM];
    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) acc[i] = 0.0f;

    for (std::int64_t word = lane; word < p.k / 8; word += 32) {
      const std::int64_t k0 = word * 8;
      const std::int64_t g = k0 / p.group_size;  // a word never straddles groups (group_size % 8 == 0)
      const float scale = p.scales[n * groups + g];
      const float zero = p.symmetric ? 0.0f : p.zeros[n * groups + g];
      const std::uint32_t packed = w_row[word];
      float w[8];
      OQ_UNROLL
      for (int j = 0; j < 8; ++j) {
        const unsigned nibble = (packed >> (4 * j)) & 0xFu;
        const float q = p.symmetric ? static_cast<float>(core::sign_extend_s4(nibble)) : static_cast<float>(nibble);
        w[j] = scale * (q - zero);
      }
      OQ_UNROLL
      for (int i = 0; i < kTileM; ++i) {
        if (m0 + i < p.m) {
          // Eight 16-bit activations in one 16-byte load.
          const uint4 raw = *reinterpret_cast<const uint4*>(p.a + (m0 + i) * p.ld_a + k0);
          ElementA a8[8];
          memcpy(a8, &raw, sizeof raw);  // register moves; no aliasing through a pointer cast
          OQ_UNROLL
          for (int j = 0; j < 8; ++j) acc[i] = fmaf(cuda::to_float(a8[j]), w[j], acc[i]);
        }
      }
    }
    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) {
      float v = acc[i];
      OQ_UNROLL
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
      if (lane == 0 && m0 + i < p.m) p.y[(m0 + i) * p.ld_y + n] = cuda::from_float<ElementOut>(v);
    }
  }
};

template <class ElementA, class ElementOut, int kTileM, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) gemm_w4a16_kernel(const GemmW4A16Params<ElementA, ElementOut> params) {
  GemmW4A16<ElementA, ElementOut, kTileM, kWarps>{}(params);
}

}  // namespace oq::cuda::kernel
