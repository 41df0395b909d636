// The per-token launchers' argument checks, and the tensor-core rotation's
// fragment layout replayed on the host (no GPU needed: no CUDA call is made).
#include "quantize_per_token_launch.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

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

TEST_CASE("the register path is taken exactly where its conditions hold") {
  using oq::test::DeviceInput;
  using oq::test::per_token_register_path;
  PerTokenArgs a = valid();  // 4 × 256, INT4, ld_codes 128
  CHECK(per_token_register_path(a, DeviceInput::kBf16));
  CHECK(per_token_register_path(a, DeviceInput::kHalf));
  CHECK_FALSE(per_token_register_path(a, DeviceInput::kFloat));  // 16-bit input only
  PerTokenArgs rotated = a;
  rotated.with_rotation = true;
  rotated.block_size = 128;
  CHECK_FALSE(per_token_register_path(rotated, DeviceInput::kBf16));
  PerTokenArgs hadamard = a;
  hadamard.hadamard_block = 128;  // the butterflies run in registers and shuffles
  CHECK(per_token_register_path(hadamard, DeviceInput::kBf16));
  hadamard.cols = hadamard.ld_x = 512;
  hadamard.ld_codes = 256;
  hadamard.hadamard_block = 512;  // a block wider than a warp's 32 chunks
  CHECK_FALSE(per_token_register_path(hadamard, DeviceInput::kBf16));
  PerTokenArgs narrow = a;
  narrow.ld_x = 260;  // rows not 16-byte aligned
  CHECK_FALSE(per_token_register_path(narrow, DeviceInput::kBf16));
  PerTokenArgs odd_codes = a;
  odd_codes.ld_codes = 130;  // code rows not 4-byte aligned
  CHECK_FALSE(per_token_register_path(odd_codes, DeviceInput::kBf16));
  PerTokenArgs largest = a;
  largest.cols = largest.ld_x = 16384;
  largest.ld_codes = 8192;
  CHECK(per_token_register_path(largest, DeviceInput::kBf16));
  largest.cols = largest.ld_x = 16392;
  largest.ld_codes = 8196;
  CHECK_FALSE(per_token_register_path(largest, DeviceInput::kBf16));
}

// ---- device::QuantizePerTokenTensorOp (kernel/quantize_per_token_tensorop.cuh) ----

namespace {
PerTokenArgs valid_tensorop() {
  PerTokenArgs a = valid();
  a.with_rotation = true;
  a.block_size = 128;
  return a;
}
std::string tensorop_error(const PerTokenArgs& a) { return oq::test::check_per_token_tensorop_arguments(a, {}); }
}  // namespace

TEST_CASE("tensor-core rotation: valid arguments pass") {
  CHECK(tensorop_error(valid_tensorop()).empty());
  PerTokenArgs eight = valid_tensorop();
  eight.bits = 8;
  eight.ld_codes = 256;
  CHECK(tensorop_error(eight).empty());
  PerTokenArgs empty = valid_tensorop();
  empty.rows = 0;
  CHECK(tensorop_error(empty).empty());
  CHECK(oq::test::check_per_token_tensorop_arguments(valid_tensorop(), {128, 1, 2}).empty());
}

TEST_CASE("tensor-core rotation: each bad argument is named") {
  auto with = [](auto change) {
    PerTokenArgs a = valid_tensorop();
    change(a);
    return tensorop_error(a);
  };
  CHECK(with([](PerTokenArgs& a) { a.with_rotation = false; a.block_size = 0; })
            .find("QuantizePerTokenTensorOp: needs a rotation with block_size 128") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.block_size = 64; }).find("got block_size 64") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.hadamard_block = 128; }).find("hadamard_block is QuantizePerToken's fast path") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.cols = 320; a.ld_x = 320; a.ld_codes = 160; })
            .find("cols must be a multiple of block_size (128), got 320") != std::string::npos);
  // QuantizePerToken's own checks, under this launcher's name.
  CHECK(with([](PerTokenArgs& a) { a.bits = 3; }).find("QuantizePerTokenTensorOp: bits must be 4 or 8, got 3") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.ld_x = 100; }).find("QuantizePerTokenTensorOp: ld_x must be >= cols") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.null_output = true; }).find("must not be null") != std::string::npos);
  // Alignment of the 16-byte row loads and the 32-bit code stores.
  CHECK(with([](PerTokenArgs& a) { a.ld_x = 260; }).find("ld_x must be a multiple of 8 elements") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.ld_codes = 130; }).find("ld_codes must be a multiple of 4 bytes, got 130") !=
        std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.x_offset_bytes = 8; }).find("x must be 16-byte aligned") != std::string::npos);
  CHECK(with([](PerTokenArgs& a) { a.codes_offset_bytes = 2; }).find("codes must be 4-byte aligned") !=
        std::string::npos);
}

TEST_CASE("tensor-core rotation: the fragments, replayed on the host, multiply X by R") {
  // Any slip in the permuted K order, the A gather or the accumulator scatter
  // moves whole products to the wrong output (an O(|y|) error); the bounds
  // below are those of the operands' rounding alone.
  using oq::test::DeviceInput;
  std::mt19937_64 rng(17);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const DeviceInput input : {DeviceInput::kBf16, DeviceInput::kHalf}) {
    for (const int block : {32, 64, 128, 256}) {
      for (const int terms : {1, 2}) {
        if (block == 256 && terms == 2) continue;
        CAPTURE(static_cast<int>(input));
        CAPTURE(block);
        CAPTURE(terms);
        std::vector<float> x(static_cast<std::size_t>(8 * block)), r(static_cast<std::size_t>(block * block));
        for (float& v : x) v = static_cast<float>(normal(rng));
        for (int i = 0; i < block; ++i) x[static_cast<std::size_t>(2 * block + i)] = 0.0f;  // an all-zero token
        x[static_cast<std::size_t>(5 * block + 3)] = 3000.0f;                              // a massive activation
        for (float& v : r) v = static_cast<float>(normal(rng) / std::sqrt(double(block)));
        const auto replay = oq::test::replay_tensorop_rotation(x, r, block, terms, input);
        double worst = 0.0;
        for (int n = 0; n < 8; ++n) {
          for (int o = 0; o < block; ++o) {
            double exact = 0.0, rounded_r = 0.0, magnitude = 0.0, x_norm = 0.0;
            for (int i = 0; i < block; ++i) {
              const double xi = replay.x_as_input[static_cast<std::size_t>(n * block + i)];
              const auto ri = static_cast<std::size_t>(i * block + o);
              exact += xi * r[ri];
              rounded_r += xi * replay.r_as_input[ri];
              magnitude += std::abs(xi * r[ri]);
              x_norm += std::abs(xi);
            }
            const double y = replay.y[static_cast<std::size_t>(n * block + o)];
            if (terms == 1) {
              // X·round(R): every product is exact in double; only the order of the sum differs.
              CHECK(std::abs(y - rounded_r) <= 1e-12 * magnitude);
            } else {
              // R carried by two 16-bit terms: |R − R₁ − R₂| ≤ 2⁻¹⁷|R| (bf16; fp16 2⁻²²),
              // plus fp16's subnormal spacing 2⁻²⁴ for the smallest second terms.
              CHECK(std::abs(y - exact) <= std::ldexp(magnitude, -16) + std::ldexp(x_norm, -24));
            }
            worst = std::max(worst, std::abs(y - exact) / std::max(magnitude, 1e-300));
          }
        }
        // The second term is what buys the precision (bf16's first term alone is 2⁻⁹ off).
        if (terms == 2) CHECK(worst < 1e-5);
      }
    }
  }
}

TEST_CASE("tensor-core rotation: shared memory of each passes, against an H100/H200's 227 KiB") {
  // What run() chooses from: the issue's K = 4096 keeps Y in one CTA; at
  // K = 11008 only half of Y fits (the pair), and X alone (kRecompute).
  constexpr std::size_t kHopperOptIn = 232448;  // cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_90
  auto bytes = [](std::int64_t cols, int passes) {
    PerTokenArgs a = valid_tensorop();
    a.cols = a.ld_x = cols;
    a.ld_codes = cols / 2;
    return oq::test::tensorop_shared_memory_bytes(a, {128, 2, 1, passes});
  };
  // Y: 8 rows of K + 4 floats; the ring: 8 slots (7 in flight, 17.5 KiB) ×
  // 8 rows × (256 + 64) bytes.
  const std::size_t ring = 8 * 8 * (256 + 64);
  CHECK(bytes(4096, 1) >= 8 * (4096 + 4) * 4 + ring);
  CHECK(bytes(4096, 1) <= 8 * (4096 + 4) * 4 + ring + 4096);  // + the static reductions, well under 4 KiB
  CHECK(bytes(4096, 1) <= kHopperOptIn);
  CHECK(bytes(11008, 1) > kHopperOptIn);
  CHECK(bytes(11008, 3) >= 8 * (5504 + 4) * 4 + ring);  // each rank: 43 of the 86 blocks
  CHECK(bytes(11008, 3) <= kHopperOptIn);
  CHECK(bytes(11008, 2) >= 8 * (2 * 11008 + 64));       // X rows, padded to a stride ≡ 64 (mod 128)
  CHECK(bytes(11008, 2) <= kHopperOptIn);
  CHECK(bytes(11008, 2) < bytes(11008, 3));  // kRecompute needs the least: run()'s first check
}
