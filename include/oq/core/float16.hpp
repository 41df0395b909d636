// oq/core/float16.hpp: IEEE binary16 ("half", f16) and bfloat16 (bf16) as bits,
// converted to and from float without any compiler or CUDA half type.
//
// Why bits: checkpoints (safetensors F16/BF16, .npy '<f2') store these formats,
// and host code must read them with g++ alone (docs/design.md §1: core/ has no CUDA
// headers). The conversions are exact where the target can hold the value and
// round to nearest, ties to even otherwise — what PyTorch's `.half()` and
// `.bfloat16()` do — so a tensor written by PyTorch and read here gives the
// same floats, and float → f16/bf16 → float here gives what PyTorch gives.
//
//   binary16:  bit 15 sign | bits 14..10 exponent (bias 15) | bits 9..0 mantissa
//   bfloat16:  bit 15 sign | bits 14..7  exponent (bias 127) | bits 6..0 mantissa
//              (the upper half of a binary32)
//
// NaN stays NaN (quiet, sign kept); ±Inf stays ±Inf; float → f16 overflows to
// ±Inf above 65504 + half an ulp, as IEEE round-to-nearest requires.
#pragma once

#include <oq/config.hpp>

#include <bit>
#include <cstdint>

namespace oq::core {

/// The bits of a float (host: std::bit_cast; device: the intrinsic).
OQ_HOST_DEVICE constexpr std::uint32_t float_to_bits(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return std::bit_cast<std::uint32_t>(x);
#endif
}

/// The float with these bits.
OQ_HOST_DEVICE constexpr float bits_to_float(std::uint32_t bits) noexcept {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}

/// binary16 bits → float. Exact for every input (float holds every f16 value).
OQ_HOST_DEVICE constexpr float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) {  // Inf or NaN: keep the payload, force quiet
    return bits_to_float(sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x00400000u : 0u));
  }
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);  // ±0
    // Subnormal: value = mantissa · 2^-24. Normalise into a float exponent.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3FFu;
    const std::uint32_t float_exponent = static_cast<std::uint32_t>(127 - 15 + 1 - shift);
    return bits_to_float(sign | (float_exponent << 23) | (mantissa << 13));
  }
  return bits_to_float(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

/// float → binary16 bits, round to nearest, ties to even.
OQ_HOST_DEVICE constexpr std::uint16_t float_to_f16_bits(float x) noexcept {
  const std::uint32_t bits = float_to_bits(x);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // Inf or NaN
    if (magnitude == 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  // 65520 = 65504 + half an ulp (ulp 32): from here on RNE gives Inf.
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent < -25) return sign;  // below half the smallest subnormal (2^-25): rounds to 0
  std::uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;  // 24 significant bits
  // Bits to drop: 13 for normal results, more for subnormal ones (exponent < -14).
  const int drop = exponent < -14 ? 13 + (-14 - exponent) : 13;
  const std::uint32_t kept = mantissa >> drop;
  const std::uint32_t remainder = mantissa & ((1u << drop) - 1u);
  const std::uint32_t halfway = 1u << (drop - 1);
  std::uint32_t rounded = kept + ((remainder > halfway || (remainder == halfway && (kept & 1u))) ? 1u : 0u);
  if (exponent < -14) {
    // Subnormal (or rounding up into the smallest normal, which the carry into
    // bit 10 encodes by itself: 0x400 is exponent field 1, mantissa 0).
    return static_cast<std::uint16_t>(sign | rounded);
  }
  // Normal: the implicit bit sits at bit 10; a carry out of the mantissa bumps
  // the exponent, which the addition below does on its own.
  const std::uint32_t biased = static_cast<std::uint32_t>(exponent + 15);
  return static_cast<std::uint16_t>(sign | ((biased << 10) + (rounded - 0x400u)));
}

/// bfloat16 bits → float. Exact (bf16 is the upper half of a binary32).
OQ_HOST_DEVICE constexpr float bf16_bits_to_float(std::uint16_t b) noexcept {
  return bits_to_float(static_cast<std::uint32_t>(b) << 16);
}

/// float → bfloat16 bits, round to nearest, ties to even; NaN stays a quiet NaN
/// (truncating a NaN could clear every mantissa bit and make it Inf).
OQ_HOST_DEVICE constexpr std::uint16_t float_to_bf16_bits(float x) noexcept {
  const std::uint32_t bits = float_to_bits(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

}  // namespace oq::core
