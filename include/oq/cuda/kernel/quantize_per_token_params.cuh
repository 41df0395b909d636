// oq/cuda/kernel/quantize_per_token_params.cuh: the arguments of the
// per-token quantization kernels (kernel/quantize_per_token.cuh on CUDA
// cores, kernel/quantize_per_token_tensorop.cuh with the rotation on tensor
// cores).
//
// Outputs, per row m:
//   codes     bits = 4: K/2 bytes, the packed INT4 row of format/int4_row.hpp
//             (u4 when asymmetric, s4 when symmetric); bits = 8: K bytes
//             (uint8 asymmetric, int8 symmetric)
//   scales[m], zeros[m] (float; zero 0 when symmetric)
//   code_sums[m] = Σ_k q[m, k], the raw codes, for the zero-point terms of
//             the GEMM epilogue (docs/design.md §7); may be null.
#pragma once

#include <cstdint>

namespace oq::cuda::kernel {

/// Arguments of the per-token quantization kernel (device pointers).
template <class Element>
struct QuantizePerTokenParams {
  const Element* x = nullptr;  ///< rows × cols, row-major, rows ld_x elements apart
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld_x = 0;
  std::uint8_t* codes = nullptr;  ///< rows × (cols·bits/8) bytes, rows ld_codes bytes apart
  std::int64_t ld_codes = 0;
  float* scales = nullptr;          ///< rows
  float* zeros = nullptr;           ///< rows
  std::int32_t* code_sums = nullptr;  ///< rows, or null
  int bits = 4;                     ///< 4 or 8
  bool symmetric = false;
  float clip_ratio = 1.0f;
  const float* rotation = nullptr;  ///< block_size × block_size row-major, or null
  int block_size = 0;               ///< b, when rotation is given; divides cols and kThreads
  int hadamard_block = 0;           ///< b > 0: x·(H_b/√b) per block instead (power of two ≥ 2 dividing cols)
};

}  // namespace oq::cuda::kernel
