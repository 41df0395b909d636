// oq/cuda/kernel/gemm_w4a16_params.cuh: the arguments of the W4A16 GEMM
// kernels (kernel/gemm_w4a16.cuh on CUDA cores, gemm_w4a16_tensorop.cuh on
// tensor cores):
//     y[m, n] = Σ_k a[m, k] · ŵ[n, k],   ŵ[n, k] = s[n, g]·(q[n, k] − z[n, g]),  g = k / group_size
// with a in fp16/bf16 (M × K, row-major), q the packed INT4 weights (N rows of
// format/int4_row.hpp: u4 codes when asymmetric, s4 with z = 0 when
// symmetric), fp32 scales and zero points per (row, group) — per-channel when
// group_size = K, per-group(128) as GPTQ/AWQ checkpoints store them.
#pragma once

#include <cstdint>

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

}  // namespace oq::cuda::kernel
