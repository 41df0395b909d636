// The per-token launcher's argument checks (no GPU needed: no CUDA call is made).
#include "quantize_per_token_launch.hpp"

#include <doctest/doctest.h>

#include <string>

using oq::test::check_per_token_arguments;
using oq::test::PerTokenArgs;

namespace {
PerTokenArgs valid() {
  PerTokenArgs a;
  a.rows = 4;
  a.cols = 256;
  a.ld_x = 256;
  a.ld_codes = 128;
  return a;
}
}  // namespace

TEST_CASE("valid arguments pass") {
  CHECK(check_per_token_arguments(valid()).empty());
  PerTokenArgs eight = valid();
  eight.bits = 8;
  eight.ld_codes = 256;
  CHECK(check_per_token_arguments(eight).empty());
  PerTokenArgs rotated = valid();
  rotated.with_rotation = true;
  rotated.block_size = 128;
  CHECK(check_per_token_arguments(rotated).empty());
  PerTokenArgs hadamard = valid();
  hadamard.hadamard_block = 128;
  CHECK(check_per_token_arguments(hadamard).empty());
}

TEST_CASE("each bad argument is named") {
  auto with = [](auto change) {
    PerTokenArgs a = valid();
    change(a);
    return check_per_token_arguments(a);
  };
  CHECK(with([](PerTokenArgs& a) { a.bits = 3; }).find("bits must be 4 or 8, got 3") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.cols = 255; a.ld_x = 255; }).find("cols must be even") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.ld_x = 100; }).find("ld_x must be >= cols") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.ld_codes = 127; }).find("ld_codes must be >= 128 bytes") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.clip_ratio = 0.0f; }).find("clip_ratio must be in (0, 1]") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.null_output = true; }).find("must not be null") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.block_size = 128; }).find("given together") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.with_rotation = true; a.block_size = 96; }).find("block_size must divide 256") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.with_rotation = true; a.block_size = 64; a.cols = 160; a.ld_x = 160; a.ld_codes = 80; })
            .find("block_size (64) must divide cols (160)") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.rows = -1; }).find("rows must be in") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.hadamard_block = 96; }).find("hadamard_block must be a power of two >= 2, got 96") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.hadamard_block = 1; }).find("power of two >= 2") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.hadamard_block = 512; }).find("hadamard_block (512) must divide cols") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.hadamard_block = 128; a.with_rotation = true; a.block_size = 128; })
            .find("rotation and hadamard_block are alternatives") != std::string::npos);
}
