#include <oq/format/int4_row.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

using namespace oq::format;

TEST_CASE("golden bytes pin the packed row layout") {
  // e[2i] in bits 0..3, e[2i+1] in bits 4..7, zero pad nibble for odd n.
  const std::array<int, 5> s4 = {1, -1, 7, -8, 0};
  std::array<std::uint8_t, 3> bytes{0xAA, 0xAA, 0xAA};
  pack_int4_row(s4.data(), s4.size(), bytes.data());
  CHECK(bytes == std::array<std::uint8_t, 3>{0xF1, 0x87, 0x00});

  const std::array<unsigned, 3> u4 = {0xC, 0x3, 0xF};
  std::array<std::uint8_t, 2> ubytes{0xAA, 0xAA};
  pack_int4_row(u4.data(), u4.size(), ubytes.data());
  CHECK(ubytes == std::array<std::uint8_t, 2>{0x3C, 0x0F});

  // Read as a little-endian word: element j in bits 4j..4j+3.
  const std::array<int, 8> eight = {0, 1, 2, 3, 4, 5, 6, 7};
  std::array<std::uint8_t, 4> word_bytes{};
  pack_int4_row(eight.data(), eight.size(), word_bytes.data());
  CHECK(word_bytes == std::array<std::uint8_t, 4>{0x10, 0x32, 0x54, 0x76});
}

TEST_CASE("packed_int4_bytes rounds up") {
  static_assert(packed_int4_bytes(0) == 0);
  static_assert(packed_int4_bytes(1) == 1);
  static_assert(packed_int4_bytes(2) == 1);
  static_assert(packed_int4_bytes(4097) == 2049);
}

TEST_CASE("rows of every length round-trip, s4 and u4") {
  std::mt19937 rng(1);
  for (std::size_t n = 0; n <= 67; ++n) {
    std::vector<int> s(n), u(n), s_back(n), u_back(n);
    for (std::size_t i = 0; i < n; ++i) {
      s[i] = static_cast<int>(rng() % 16) - 8;
      u[i] = static_cast<int>(rng() % 16);
    }
    std::vector<std::uint8_t> ps(packed_int4_bytes(n) + 1, 0xEE), pu(packed_int4_bytes(n) + 1, 0xEE);
    pack_int4_row(s.data(), n, ps.data());
    pack_int4_row(u.data(), n, pu.data());
    CHECK(ps.back() == 0xEE);  // nothing written past the row
    CHECK(pu.back() == 0xEE);
    if (n % 2 == 1) {
      CHECK((ps[n / 2] >> 4) == 0);  // pad nibble cleared
      CHECK((pu[n / 2] >> 4) == 0);
    }
    unpack_s4_row(ps.data(), n, s_back.data());
    unpack_u4_row(pu.data(), n, u_back.data());
    CHECK(s_back == s);
    CHECK(u_back == u);
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(load_s4(ps.data(), i) == s[i]);
      CHECK(load_u4(pu.data(), i) == static_cast<unsigned>(u[i]));
    }
  }
}

TEST_CASE("store_int4 changes one nibble and keeps its neighbour") {
  for (int b = 0; b < 256; ++b) {
    for (int v = -8; v <= 7; ++v) {
      std::uint8_t row[1] = {static_cast<std::uint8_t>(b)};
      store_int4(row, 0, v);
      CHECK(load_s4(row, 0) == v);
      CHECK((row[0] >> 4) == (b >> 4));
      row[0] = static_cast<std::uint8_t>(b);
      store_int4(row, 1, v);
      CHECK(load_s4(row, 1) == v);
      CHECK((row[0] & 0xF) == (b & 0xF));
    }
  }
}
