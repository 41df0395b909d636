// The W4A16 launchers' argument checks, and the tensor-core kernel's exact
// dequantization (no GPU needed).
#include "gemm_w4a16_launch.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

using oq::test::check_w4a16_arguments;
using oq::test::W4A16Problem;

namespace {
W4A16Problem valid() {
  W4A16Problem q;
  q.m = 4;
  q.n = 64;
  q.k = 256;
  q.group_size = 128;
  q.ld_a = 256;
  q.ld_w = 128;
  q.ld_y = 64;
  return q;
}
}  // namespace

TEST_CASE("valid W4A16 arguments pass, each bad one is named") {
  CHECK(check_w4a16_arguments(valid()).empty());
  auto with = [](auto change) {
    W4A16Problem q = valid();
    change(q);
    return check_w4a16_arguments(q);
  };
  CHECK(with([](W4A16Problem& q) { q.k = 260; q.ld_a = 264; q.ld_w = 132; }).find("k must be a multiple of 8") != std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.group_size = 96; }).find("group_size must be a multiple of 8 dividing k (256)") !=
        std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.ld_a = 260; }).find("ld_a must be >= k and a multiple of 8") != std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.ld_w = 126; }).find("ld_w must be >= k/2") != std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.ld_y = 10; }).find("ld_y must be >= n") != std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.misalign_a = true; }).find("a must be 16-byte aligned") != std::string::npos);
  CHECK(with([](W4A16Problem& q) { q.m = -1; }).find("need m >= 0") != std::string::npos);
}

TEST_CASE("the tensor-core W4A16 launcher also needs K and groups of 16 and 8-byte weight rows") {
  W4A16Problem q = valid();
  q.tensor_op = true;
  CHECK(check_w4a16_arguments(q).empty());
  W4A16Problem groups = q;
  groups.group_size = 8;
  CHECK(check_w4a16_arguments(groups).find("GemmW4A16TensorOp: k and group_size must be multiples of 16") !=
        std::string::npos);
  W4A16Problem stride = q;
  stride.ld_w = 132;
  CHECK(check_w4a16_arguments(stride).find("ld_w must be a multiple of 8 bytes, got 132") != std::string::npos);
  W4A16Problem shared = q;
  shared.k = 260;  // the base launcher's check, under this launcher's name
  shared.ld_a = 264;
  shared.ld_w = 136;
  CHECK(check_w4a16_arguments(shared).find("GemmW4A16TensorOp: k must be a multiple of 8") != std::string::npos);
  // The grid's token rows: 64-token tiles past M = 32, at most 65,535 of them.
  W4A16Problem tall = q;
  tall.m = std::int64_t{65535} * 64;
  CHECK(check_w4a16_arguments(tall).empty());
  tall.m += 1;
  CHECK(check_w4a16_arguments(tall).find("GemmW4A16TensorOp: m or n too large for the grid") != std::string::npos);
}

TEST_CASE("the tensor-core W4A16's exact form builds q − z exactly, for the zero points it takes") {
  for (bool bf16 : {true, false}) {
    for (bool symmetric : {false, true}) {
      CAPTURE(bf16);
      CAPTURE(symmetric);
      // Every integer zero point within the type's exact range (bf16: |z| ≤ 112,
      // fp16: ≤ 1000), every byte; symmetric codes have z = 0.
      const int limit = symmetric ? 0 : (bf16 ? 112 : 1000);
      int wrong = 0;
      for (int z = -limit; z <= limit; ++z) {
        for (int byte = 0; byte < 256; ++byte) {
          const auto got = oq::test::w4a16_exact_pair(static_cast<std::uint8_t>(byte), static_cast<float>(z), bf16, symmetric);
          int lo = byte & 0xF, hi = byte >> 4;
          if (symmetric) {
            lo = lo >= 8 ? lo - 16 : lo;
            hi = hi >= 8 ? hi - 16 : hi;
          }
          wrong += !got.exact || got.first != static_cast<float>(lo - z) || got.second != static_cast<float>(hi - z);
        }
      }
      CHECK(wrong == 0);
      if (!symmetric) {  // the zero points it leaves to the rounded form
        CHECK_FALSE(oq::test::w4a16_exact_pair(0x21, 0.37f, bf16, false).exact);
        CHECK_FALSE(oq::test::w4a16_exact_pair(0x21, static_cast<float>(limit + 1), bf16, false).exact);
        CHECK_FALSE(oq::test::w4a16_exact_pair(0x21, -static_cast<float>(limit + 1), bf16, false).exact);
      }
    }
  }
}
