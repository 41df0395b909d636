#include <oq/core/int4.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <random>

using namespace oq::core;

static_assert(sign_extend_s4(0x7) == 7);
static_assert(sign_extend_s4(0x8) == -8);
static_assert(sign_extend_s4(0xF) == -1);
static_assert(sign_extend_s4(0x1F) == -1);  // bits above the nibble are ignored
static_assert(pack_s4x2(1, -1) == 0xF1);
static_assert(pack_u4x2(0xA, 0x5) == 0x5A);

TEST_CASE("every byte unpacks to two nibbles that pack back to it (s4 and u4)") {
  for (int b = 0; b < 256; ++b) {
    const auto byte = static_cast<std::uint8_t>(b);
    const int lo = unpack_s4_first(byte);
    const int hi = unpack_s4_second(byte);
    // Two's complement by definition: value = n − 16·bit3(n).
    CHECK(lo == ((b & 0xF) >= 8 ? (b & 0xF) - 16 : (b & 0xF)));
    CHECK(hi == ((b >> 4) >= 8 ? (b >> 4) - 16 : (b >> 4)));
    CHECK(lo >= kS4Min);
    CHECK(lo <= kS4Max);
    CHECK(pack_s4x2(lo, hi) == byte);
    CHECK(unpack_u4_first(byte) == static_cast<unsigned>(b & 0xF));
    CHECK(unpack_u4_second(byte) == static_cast<unsigned>(b >> 4));
    CHECK(pack_u4x2(unpack_u4_first(byte), unpack_u4_second(byte)) == byte);
  }
}

TEST_CASE("every pair of s4 values survives pack then unpack") {
  for (int a = kS4Min; a <= kS4Max; ++a) {
    for (int b = kS4Min; b <= kS4Max; ++b) {
      const std::uint8_t byte = pack_s4x2(a, b);
      CHECK(unpack_s4_first(byte) == a);
      CHECK(unpack_s4_second(byte) == b);
    }
  }
}

namespace {
// Plain reference for widen_s4x8_to_s8x8: element j from bits 4j..4j+3 into byte j.
std::uint64_t widen_ref(std::uint32_t word) {
  std::uint64_t out = 0;
  for (int j = 0; j < 8; ++j) {
    const int v = sign_extend_s4((word >> (4 * j)) & 0xFu);
    out |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(static_cast<std::int8_t>(v))) << (8 * j);
  }
  return out;
}
}  // namespace

TEST_CASE("widen_s4x8_to_s8x8 equals the per-element loop") {
  // Every nibble value in every position (exhaustive per lane) ...
  for (int j = 0; j < 8; ++j) {
    for (unsigned n = 0; n < 16; ++n) {
      const std::uint32_t word = n << (4 * j);
      CHECK(widen_s4x8_to_s8x8(word) == widen_ref(word));
    }
  }
  // ... every byte value in every byte position (exhaustive over 256 bytes) ...
  for (int i = 0; i < 4; ++i) {
    for (unsigned b = 0; b < 256; ++b) {
      const std::uint32_t word = (b << (8 * i)) | 0x80000008u;
      CHECK(widen_s4x8_to_s8x8(word) == widen_ref(word));
    }
  }
  // ... and random words.
  std::mt19937 rng(3);
  for (int k = 0; k < 100000; ++k) {
    const std::uint32_t word = rng();
    REQUIRE(widen_s4x8_to_s8x8(word) == widen_ref(word));
  }
  static_assert(widen_s4x8_to_s8x8(0x89ABCDEFu) == 0xF8F9FAFBFCFDFEFFull);  // −1 … −8 in order
}

TEST_CASE("pack_s4x8 places element j at bits 4j..4j+3") {
  const std::int8_t values[8] = {0, 1, 2, 3, -1, -2, -7, -8};
  CHECK(pack_s4x8(values) == 0x89EF3210u);
  const std::uint64_t wide = widen_s4x8_to_s8x8(pack_s4x8(values));
  for (int j = 0; j < 8; ++j) CHECK(static_cast<std::int8_t>(wide >> (8 * j)) == values[j]);
}

TEST_CASE("widening four nibbles to four bytes, exhaustively over all 65536 inputs") {
  for (unsigned v = 0; v < 65536; ++v) {
    const auto quad = static_cast<std::uint16_t>(v);
    const std::uint32_t u = widen_u4x4_to_u8x4(quad);
    const std::uint32_t s = widen_s4x4_to_s8x4(quad);
    for (int j = 0; j < 4; ++j) {
      const unsigned nibble = (v >> (4 * j)) & 0xFu;
      REQUIRE(((u >> (8 * j)) & 0xFFu) == nibble);
      REQUIRE(static_cast<std::int8_t>((s >> (8 * j)) & 0xFFu) == sign_extend_s4(nibble));
    }
    // The same lanes as the low half of the eight-element widening.
    REQUIRE(s == static_cast<std::uint32_t>(widen_s4x8_to_s8x8(v)));
  }
}
