// examples/04_cuda_w4a4/gpu.hpp: the example's device half, behind a plain
// C++ interface (oq's CUDA headers are for nvcc, its Eigen code for the host
// compiler: docs/design.md §1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace example {

struct GpuRun {
  bool ran = false;
  bool no_device = false;    ///< !ran because there is no usable GPU (not an error here)
  std::string why;           ///< when !ran: why (no device, a launcher's or CUDA's message)
  std::string device;        ///< the GPU's name and compute capability
  std::string quantize;      ///< which quantize launcher ran
  std::string gemm;          ///< which W4A4 launcher ran
  std::vector<float> y;      ///< m × n, row-major
  float milliseconds = 0.0f; ///< quantize + GEMM, one run after a warm-up
};

/// The block rotation fused into the activations' quantization: none, the
/// normalised Walsh–Hadamard transform of hadamard_block-wide blocks, or a
/// general 128 × 128 matrix (row-major, R[input][output]) for every block.
struct OnlineRotation {
  int hadamard_block = 0;
  std::vector<float> matrix;  ///< empty, or 128 × 128
};

/// Y = Q(X·M)·Ŵᵀ on the GPU: x (m × k floats, row-major) is rounded to bf16,
/// quantized per token to asymmetric INT4 after the fused block rotation M
/// (QuantizePerToken; for a general matrix, QuantizePerTokenTensorOp: X·R on
/// tensor cores), then multiplied by the packed symmetric INT4 weights (n rows
/// of k/2 bytes, one scale per row, Σ_k q per row) by the W4A4 GEMM with its
/// zero-point epilogue. Never throws for a missing GPU: returns ran = false
/// and why.
GpuRun w4a4_on_gpu(const std::vector<float>& x, std::int64_t m, std::int64_t k,
                   const std::vector<std::uint8_t>& w_packed, const std::vector<float>& w_scales,
                   const std::vector<std::int32_t>& w_code_sums, std::int64_t n, const OnlineRotation& rotation);

}  // namespace example
