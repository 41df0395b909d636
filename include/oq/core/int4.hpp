// oq/core/int4.hpp: 4-bit integers in nibbles, for host and device.
//
// Two encodings of a nibble n (4 bits, 0..15):
//   s4: two's complement, value = n − 16·bit3(n), range [−8, 7]
//   u4: unsigned,         value = n,              range [0, 15]
// Packing never checks the range of its inputs: it keeps the low 4 bits, which
// is the identity on the valid range and what a kernel wants. Host code that
// takes user data checks the range first (see oq/quant/pack.hpp).
//
// Byte layout of a pair (the same everywhere in oq, pinned by a golden test):
//   bits 0..3 : the first (even-indexed) element
//   bits 4..7 : the second (odd-indexed) element
// A 32-bit word read little-endian therefore holds 8 consecutive elements,
// element j in bits 4j..4j+3.
#pragma once

#include <oq/config.hpp>

#include <cstdint>

namespace oq::core {

inline constexpr int kS4Min = -8;
inline constexpr int kS4Max = 7;
inline constexpr int kU4Min = 0;
inline constexpr int kU4Max = 15;

/// Sign-extend the low 4 bits of `nibble` (two's complement): 0x8 -> −8, 0x7 -> 7.
OQ_HOST_DEVICE constexpr int sign_extend_s4(unsigned nibble) noexcept {
  const int n = static_cast<int>(nibble & 0xFu);
  return (n ^ 0x8) - 0x8;
}

/// One byte from two s4 values: `first` in bits 0..3, `second` in bits 4..7.
OQ_HOST_DEVICE constexpr std::uint8_t pack_s4x2(int first, int second) noexcept {
  return static_cast<std::uint8_t>((static_cast<unsigned>(first) & 0xFu) |
                                   ((static_cast<unsigned>(second) & 0xFu) << 4));
}

/// One byte from two u4 values; same bit positions as pack_s4x2.
OQ_HOST_DEVICE constexpr std::uint8_t pack_u4x2(unsigned first, unsigned second) noexcept {
  return static_cast<std::uint8_t>((first & 0xFu) | ((second & 0xFu) << 4));
}

/// The element in bits 0..3, as s4.
OQ_HOST_DEVICE constexpr int unpack_s4_first(std::uint8_t byte) noexcept { return sign_extend_s4(byte); }
/// The element in bits 4..7, as s4.
OQ_HOST_DEVICE constexpr int unpack_s4_second(std::uint8_t byte) noexcept { return sign_extend_s4(byte >> 4u); }
/// The element in bits 0..3, as u4.
OQ_HOST_DEVICE constexpr unsigned unpack_u4_first(std::uint8_t byte) noexcept { return byte & 0xFu; }
/// The element in bits 4..7, as u4.
OQ_HOST_DEVICE constexpr unsigned unpack_u4_second(std::uint8_t byte) noexcept { return (byte >> 4u) & 0xFu; }

/// Eight s4 values packed in one word: element j in bits 4j..4j+3.
OQ_HOST_DEVICE constexpr std::uint32_t pack_s4x8(const std::int8_t (&v)[8]) noexcept {
  std::uint32_t word = 0;
  OQ_UNROLL
  for (int j = 0; j < 8; ++j) word |= (static_cast<std::uint32_t>(v[j]) & 0xFu) << (4 * j);
  return word;
}

/// Widen eight packed s4 values to eight int8 lanes of a 64-bit word: element j
/// of `word` (bits 4j..4j+3) becomes byte j (bits 8j..8j+7), sign-extended.
/// This is the register layout the int8 tensor-core path consumes (docs/design.md §7:
/// Hopper has no s4 MMA, so INT4 operands are widened to s8).
///
/// SWAR, no loop over elements: even elements sit in the low nibble of each
/// byte of (word & 0x0F0F0F0F), odd ones in (word >> 4) & 0x0F0F0F0F. A byte b
/// in 0..15 sign-extends as b | (bit3(b) · 0xF0), and 0x08 · 0x1E = 0xF0 stays
/// inside its byte, so one multiply extends all four lanes without carries.
OQ_HOST_DEVICE constexpr std::uint64_t widen_s4x8_to_s8x8(std::uint32_t word) noexcept {
  auto extend = [](std::uint32_t lanes) constexpr {
    return lanes | ((lanes & 0x08080808u) * 0x1Eu);
  };
  const std::uint32_t even = extend(word & 0x0F0F0F0Fu);          // elements 0,2,4,6
  const std::uint32_t odd = extend((word >> 4) & 0x0F0F0F0Fu);    // elements 1,3,5,7
  std::uint64_t out = 0;
  OQ_UNROLL
  for (int i = 0; i < 4; ++i) {
    out |= static_cast<std::uint64_t>((even >> (8 * i)) & 0xFFu) << (16 * i);
    out |= static_cast<std::uint64_t>((odd >> (8 * i)) & 0xFFu) << (16 * i + 8);
  }
  return out;
}

/// Four u4 values (element j in bits 4j..4j+3 of `quad`) to four u8 lanes
/// (element j in byte j), zero-extended: the A/B register layout of the s8/u8
/// tensor-core MMA (docs/design.md §7).
OQ_HOST_DEVICE constexpr std::uint32_t widen_u4x4_to_u8x4(std::uint16_t quad) noexcept {
  const std::uint32_t q = quad;
  return (q & 0x000Fu) | ((q & 0x00F0u) << 4) | ((q & 0x0F00u) << 8) | ((q & 0xF000u) << 12);
}

/// Four s4 values to four s8 lanes, sign-extended (same SWAR step as
/// widen_s4x8_to_s8x8).
OQ_HOST_DEVICE constexpr std::uint32_t widen_s4x4_to_s8x4(std::uint16_t quad) noexcept {
  const std::uint32_t lanes = widen_u4x4_to_u8x4(quad);
  return lanes | ((lanes & 0x08080808u) * 0x1Eu);
}

}  // namespace oq::core
