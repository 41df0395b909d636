// oq/cuda/kernel/gemm_w4a16_codes.cuh: packed INT4 weight codes as floats,
// exactly and without I2F (a quarter-rate instruction that would bound decode
// on its own), for both W4A16 kernels: a code OR'd into the mantissa of 2^23
// is the float 2^23 + code exactly (s4 codes go through offset binary,
// code ^ 8 = code + 8, so the bias is 2^23 + 8).
#pragma once

#include <cstdint>

namespace oq::cuda::kernel {

/// The codes of a packed 32-bit word (8 codes, code j in bits 4j..4j+3):
/// u4, or s4 when kSymmetric.
template <bool kSymmetric>
struct W4A16Codes {
  static constexpr float kTwo23 = 8388608.0f;
  /// What biased() adds to every code: 2^23 (u4), 2^23 + 8 (s4, offset binary).
  static constexpr float kBias = kSymmetric ? kTwo23 + 8.0f : kTwo23;

  /// Code j (0..7) of a packed word plus kBias, as a float, exactly.
  __device__ __forceinline__ static float biased(std::uint32_t word, int j) {
    const std::uint32_t nibble = (word >> (4 * j)) & 0xFu;
    return __uint_as_float(0x4B000000u | (kSymmetric ? nibble ^ 0x8u : nibble));
  }
  /// Code j (0..7) of a packed word as a float, exactly.
  __device__ __forceinline__ static float code(std::uint32_t word, int j) { return biased(word, j) - kBias; }
};

}  // namespace oq::cuda::kernel
