// oq/format/int4_row.hpp: a row of INT4 values packed two per byte.
//
// Layout of a packed row of n elements e[0..n) (s4: two's complement in
// [−8, 7]; u4: unsigned in [0, 15]):
//
//     byte i :  bit 7 ... bit 4 | bit 3 ... bit 0
//               e[2i + 1]       | e[2i]
//
//   - n elements take ceil(n / 2) bytes;
//   - for odd n the high nibble of the last byte is 0 (the writer clears it;
//     readers ignore it);
//   - read as little-endian 32-bit words, word k holds e[8k .. 8k+7] with
//     e[8k + j] in bits 4j .. 4j+3, which is the order core::widen_s4x8_to_s8x8
//     and the GEMM kernels expect.
//
// Example (pinned by tests/format/int4_row_test.cpp): s4 values
// {1, −1, 7, −8, 0} pack to bytes {0xF1, 0x87, 0x00}.
//
// The packed matrix format used by oq's GEMMs is row-major, one packed row per
// matrix row, rows `row_stride_bytes` apart (at least packed_s4_bytes(cols)).
#pragma once

#include <oq/config.hpp>
#include <oq/core/int4.hpp>

#include <cstddef>
#include <cstdint>

namespace oq::format {

/// Bytes taken by `n` packed 4-bit elements.
OQ_HOST_DEVICE constexpr std::size_t packed_int4_bytes(std::size_t n) noexcept { return (n + 1) / 2; }

/// Element i of a packed s4 row.
OQ_HOST_DEVICE constexpr int load_s4(const std::uint8_t* row, std::size_t i) noexcept {
  const std::uint8_t byte = row[i / 2];
  return (i % 2 == 0) ? core::unpack_s4_first(byte) : core::unpack_s4_second(byte);
}

/// Element i of a packed u4 row.
OQ_HOST_DEVICE constexpr unsigned load_u4(const std::uint8_t* row, std::size_t i) noexcept {
  const std::uint8_t byte = row[i / 2];
  return (i % 2 == 0) ? core::unpack_u4_first(byte) : core::unpack_u4_second(byte);
}

/// Overwrite element i of a packed row with the low 4 bits of `value`,
/// leaving the other nibble of the byte as it was.
OQ_HOST_DEVICE constexpr void store_int4(std::uint8_t* row, std::size_t i, int value) noexcept {
  const unsigned nibble = static_cast<unsigned>(value) & 0xFu;
  std::uint8_t& byte = row[i / 2];
  byte = (i % 2 == 0) ? static_cast<std::uint8_t>((byte & 0xF0u) | nibble)
                      : static_cast<std::uint8_t>((byte & 0x0Fu) | (nibble << 4));
}

/// Pack n values (s4 or u4; only the low 4 bits of each are kept) into
/// packed_int4_bytes(n) bytes at dst, clearing the padding nibble for odd n.
template <class Int>
OQ_HOST_DEVICE constexpr void pack_int4_row(const Int* src, std::size_t n, std::uint8_t* dst) noexcept {
  const std::size_t pairs = n / 2;
  for (std::size_t i = 0; i < pairs; ++i) {
    dst[i] = core::pack_u4x2(static_cast<unsigned>(src[2 * i]), static_cast<unsigned>(src[2 * i + 1]));
  }
  if (n % 2 != 0) dst[pairs] = core::pack_u4x2(static_cast<unsigned>(src[n - 1]), 0u);
}

/// Unpack n s4 values from a packed row into dst (sign-extended).
template <class Int>
OQ_HOST_DEVICE constexpr void unpack_s4_row(const std::uint8_t* src, std::size_t n, Int* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Int>(load_s4(src, i));
}

/// Unpack n u4 values from a packed row into dst.
template <class Int>
OQ_HOST_DEVICE constexpr void unpack_u4_row(const std::uint8_t* src, std::size_t n, Int* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Int>(load_u4(src, i));
}

}  // namespace oq::format
