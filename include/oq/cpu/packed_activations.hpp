// oq/cpu/packed_activations.hpp: per-token quantized activations as the CPU
// GEMM reads them — what cpu::quantize_per_token writes, and the same bytes
// and values the CUDA QuantizePerToken kernel writes.
//
// M tokens (rows) × K channels, one scale and zero point per token:
//
//   codes      M rows of row_bytes() bytes, rows contiguous:
//              bits = 4: K/2 bytes, the packed row of format/int4_row.hpp —
//                  byte m·K/2 + i :  bits 7..4 = q[m, 2i + 1] | bits 3..0 = q[m, 2i]
//                  s4 (two's complement, [−8, 7]) when is_signed, u4 ([0, 15]) otherwise;
//              bits = 8: K bytes, byte m·K + i = q[m, i] as int8 ([−128, 127],
//                  is_signed) or uint8 ([0, 255]).
//   scales     M floats, s_a[m]
//   zeros      M int32, z_a[m]: integers (0 when is_signed), possibly outside
//              the code range (docs/design.md §2)
//   code_sums  M int32, Σ_k q[m, k] of the raw codes, for the epilogue's
//              z_w·Σq_a term (docs/design.md §7)
//
// Example (pinned by tests/cpu/quantize_per_token_test.cpp): the token
// {0, 1, 2, 3} quantized 4-bit asymmetric (clip 1) has s = 0.2, z = 0, u4 codes
// {0, 5, 10, 15}, bytes {0x50, 0xFA}, and code sum 30.
#pragma once

#include <oq/detail/check.hpp>

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

namespace oq::cpu {

struct PackedActivations {
  std::int64_t m = 0;      ///< tokens
  std::int64_t k = 0;      ///< channels
  int bits = 8;            ///< 4 or 8
  bool is_signed = false;  ///< symmetric (signed codes, zeros 0) or asymmetric (unsigned codes)
  std::vector<std::uint8_t> codes;      ///< m × row_bytes()
  std::vector<float> scales;            ///< m
  std::vector<std::int32_t> zeros;      ///< m
  std::vector<std::int32_t> code_sums;  ///< m

  std::int64_t row_bytes() const noexcept { return bits == 4 ? k / 2 : k; }
  const std::uint8_t* row(std::int64_t r) const noexcept { return codes.data() + r * row_bytes(); }

  /// Throws std::invalid_argument naming the first field that disagrees with
  /// the others.
  void validate(std::string_view where) const {
    detail::require(bits == 4 || bits == 8, where, "activations.bits must be 4 or 8, got ", bits);
    detail::require(m >= 0, where, "activations.m must be >= 0, got ", m);
    detail::require(k > 0 && (bits == 8 || k % 2 == 0), where, "activations.k must be positive",
                    bits == 4 ? " and even (two INT4 codes per byte)" : "", ", got ", k);
    const auto rows = static_cast<std::size_t>(m);
    detail::require(codes.size() == rows * static_cast<std::size_t>(row_bytes()), where,
                    "activations.codes must hold m * row_bytes = ", rows * static_cast<std::size_t>(row_bytes()),
                    " bytes, got ", codes.size());
    detail::require(scales.size() == rows && zeros.size() == rows && code_sums.size() == rows, where,
                    "activations.scales, zeros and code_sums must hold m = ", m, " values each, got ",
                    scales.size(), ", ", zeros.size(), " and ", code_sums.size());
    for (std::size_t i = 0; i < rows; ++i) {
      detail::require(std::isfinite(scales[i]) && scales[i] > 0.0f, where, "activations.scales[", i,
                      "] must be positive and finite, got ", scales[i]);
      detail::require(!is_signed || zeros[i] == 0, where, "activations.zeros[", i,
                      "] must be 0 for signed (symmetric) codes, got ", zeros[i]);
    }
  }

  /// Code q[r, c] as an integer (checked by the caller: r < m, c < k).
  int code(std::int64_t r, std::int64_t c) const noexcept {
    const std::uint8_t* p = row(r);
    if (bits == 8) return is_signed ? static_cast<int>(static_cast<std::int8_t>(p[c])) : static_cast<int>(p[c]);
    const unsigned nibble = (c % 2 == 0) ? (p[c / 2] & 0xFu) : (p[c / 2] >> 4);
    return is_signed ? static_cast<int>(nibble ^ 8u) - 8 : static_cast<int>(nibble);
  }
};

}  // namespace oq::cpu
