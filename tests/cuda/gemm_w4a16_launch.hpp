// Plain-C++ entry points to the W4A16 GEMM launcher (tests/cuda/gemm_w4a16_test.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace oq::test {

struct W4A16Problem {
  std::int64_t m = 0, n = 0, k = 0, group_size = 0;
  std::int64_t ld_a = 0, ld_w = 0, ld_y = 0;
  bool symmetric = false;
  bool misalign_a = false;  ///< offset a by one element (argument checks)
  bool tensor_op = false;   ///< device::GemmW4A16TensorOp instead of GemmW4A16
};

/// GemmW4A16<__half, float>::check_arguments: "" when fine, else the message.
/// Needs no GPU.
std::string check_w4a16_arguments(const W4A16Problem& problem);

/// Whether the kernel takes its wide loop (16-byte weight loads) on this
/// problem with 16-byte aligned weights. Needs no GPU.
bool w4a16_wide_loop(const W4A16Problem& problem);

/// The tensor-core kernel's exact form on one byte of codes (low nibble
/// first): whether zero point z takes it, and the two 16-bit values q − z it
/// builds (bf16 or fp16, u4 or s4 codes), as floats. Needs no GPU.
struct W4A16ExactPair {
  bool exact = false;
  float first = 0.0f, second = 0.0f;
};
W4A16ExactPair w4a16_exact_pair(std::uint8_t byte, float zero, bool bf16, bool symmetric);

/// Runs GemmW4A16<__half or __nv_bfloat16, float> with activations `a`
/// (m × ld_a floats, rounded to the 16-bit type first; the rounded values are
/// written back into `a`), packed weights `w` (n × ld_w bytes), scales and
/// zeros (n × k/group_size). The output is poisoned with NaN before the run.
std::vector<float> gemm_w4a16_on_device(const W4A16Problem& problem, std::vector<float>& a, bool bf16,
                                        const std::vector<std::uint8_t>& w, const std::vector<float>& scales,
                                        const std::vector<float>& zeros);

}  // namespace oq::test
