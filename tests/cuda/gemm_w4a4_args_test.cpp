// The W4A4 launchers' argument checks, and the widened path's SWAR widening
// (no GPU needed).
#include "gemm_w4a4_launch.hpp"

#include <oq/core/int4.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>

using oq::test::check_w4a4_arguments;
using oq::test::W4A4Problem;

TEST_CASE("valid W4A4 arguments pass, each bad one is named") {
  const W4A4Problem valid{64, 64, 256, 128, 128, false, true, true, false};
  CHECK(check_w4a4_arguments(valid).empty());
  auto with = [&](auto change) {
    W4A4Problem q = valid;
    change(q);
    return check_w4a4_arguments(q);
  };
  CHECK(with([](W4A4Problem& q) { q.k = 240; q.ld_a = q.ld_w = 120; }).find("k must be a multiple of 32") != std::string::npos);
  CHECK(with([](W4A4Problem& q) { q.ld_a = 127; }).find("ld_a must be even and >= k/2") != std::string::npos);
  CHECK(with([](W4A4Problem& q) { q.ld_w = 100; }).find("ld_w must be even and >= k/2") != std::string::npos);
  CHECK(with([](W4A4Problem& q) { q.w_signed = false; q.drop_sum_a = true; }).find("zero_w (asymmetric weights) needs sum_a") !=
        std::string::npos);
  CHECK(with([](W4A4Problem& q) { q.m = -2; }).find("need m >= 0") != std::string::npos);
}

TEST_CASE("the multistage W4A4 launcher also needs 16-byte strides and names the launcher") {
  W4A4Problem q{64, 64, 256, 128, 128, false, true, true, false};
  q.kernel = oq::test::W4A4Kernel::kMultistage;
  CHECK(check_w4a4_arguments(q).empty());
  q.ld_a = 136;  // even (fine for GemmW4A4) but not a multiple of 16
  CHECK(check_w4a4_arguments(q).find("GemmW4A4Multistage: ld_a and ld_w must be multiples of 16 bytes") !=
        std::string::npos);
  q.ld_a = 128;
  q.k = 240;  // the shared checks speak for the multistage launcher too
  CHECK(check_w4a4_arguments(q).find("GemmW4A4Multistage: k must be a multiple of 32") != std::string::npos);
  // kAuto leaves the widened path's bound on K to can_implement (only sm_90 widens).
  q.a_signed = q.w_signed = true;
  q.k = 131072;
  q.ld_a = q.ld_w = 65536;
  CHECK(check_w4a4_arguments(q).empty());
}

TEST_CASE("the wgmma W4A4 launcher checks as the multistage one and names itself") {
  W4A4Problem q{64, 64, 256, 128, 128, false, true, true, false};
  q.kernel = oq::test::W4A4Kernel::kWgmma;
  CHECK(check_w4a4_arguments(q).empty());
  q.ld_w = 136;
  CHECK(check_w4a4_arguments(q).find("GemmW4A4Wgmma: ld_a and ld_w must be multiples of 16 bytes") !=
        std::string::npos);
  q.ld_w = 128;
  q.k = 240;
  CHECK(check_w4a4_arguments(q).find("GemmW4A4Wgmma: k must be a multiple of 32") != std::string::npos);
  // The widened path's int32 sums of scaled codes: s4 × s4 up to K = 131,071.
  q.a_signed = q.w_signed = true;
  q.k = 131040;
  q.ld_a = q.ld_w = 65520;
  CHECK(check_w4a4_arguments(q).empty());
  q.k = 131072;
  q.ld_a = q.ld_w = 65536;
  CHECK(check_w4a4_arguments(q).find("GemmW4A4Wgmma: k must be <= 131071 for these signednesses") !=
        std::string::npos);
  q.a_signed = false;  // u4 × s4: 1,920 per product
  CHECK(check_w4a4_arguments(q).empty());
}

TEST_CASE("the W4A4 dispatcher: wgmma on 9.0, the multistage kernel on 8.x and 10.0, the simple one for the rest") {
  using oq::test::choose_w4a4_kernel;
  using oq::test::FakeDevice;
  // Compute capability, SMs and opt-in shared memory per block of real parts.
  const FakeDevice h100{9, 0, 132, 232448}, a100{8, 0, 108, 166912}, l40s{8, 9, 142, 101376};
  const FakeDevice sm100{10, 0, 148, 232448}, turing{7, 5, 40, 65536};
  const W4A4Problem aligned{64, 64, 256, 128, 128, false, true, true, false};
  CHECK(choose_w4a4_kernel(aligned, h100) == "GemmW4A4Wgmma");
  CHECK(choose_w4a4_kernel(aligned, a100) == "GemmW4A4Multistage");
  CHECK(choose_w4a4_kernel(aligned, l40s) == "GemmW4A4Multistage");
  CHECK(choose_w4a4_kernel(aligned, sm100) == "GemmW4A4Multistage");  // wgmma is sm_90a's only
  // Rows 8 but not 16 bytes apart: only the simple kernel takes them, everywhere.
  W4A4Problem strided = aligned;
  strided.ld_a = 136;
  CHECK(choose_w4a4_kernel(strided, h100) == "GemmW4A4");
  CHECK(choose_w4a4_kernel(strided, a100) == "GemmW4A4");
  // s4 × s4 with K past the tiled kernels' widened bound (131,071: codes
  // scaled by 16): on 9.0 both tiled kernels widen and refuse it, and the
  // simple kernel (its widening keeps the codes unscaled) takes it; on 8.0
  // the multistage kernel multiplies INT4 natively and takes it.
  W4A4Problem long_k{64, 64, 131072, 65536, 65536, true, true, true, false};
  CHECK(choose_w4a4_kernel(long_k, h100) == "GemmW4A4");
  CHECK(choose_w4a4_kernel(long_k, a100) == "GemmW4A4Multistage");
  long_k.k = 131040;
  long_k.ld_a = long_k.ld_w = 65520;
  CHECK(choose_w4a4_kernel(long_k, h100) == "GemmW4A4Wgmma");
  // Too little shared memory for either tiled kernel (wgmma: 126,976 bytes,
  // multistage: 61,440).
  CHECK(choose_w4a4_kernel(aligned, FakeDevice{9, 0, 132, 100000}) == "GemmW4A4Multistage");
  CHECK(choose_w4a4_kernel(aligned, FakeDevice{9, 0, 132, 49152}) == "GemmW4A4");
  // Nothing runs below 8.0, and bad arguments are named for the dispatcher.
  CHECK(choose_w4a4_kernel(aligned, turing).find("GemmW4A4Dispatch: needs compute capability 8.0 or newer (sm_80), got 7.5") !=
        std::string::npos);
  W4A4Problem bad_k = aligned;
  bad_k.k = 240;
  CHECK(choose_w4a4_kernel(bad_k, h100).find("GemmW4A4Dispatch: k must be a multiple of 32") != std::string::npos);
}

TEST_CASE("a launcher object runs only after a successful initialize") {
  CHECK(oq::test::run_w4a4_uninitialized().find("GemmW4A4Dispatch: run() before a successful initialize()") !=
        std::string::npos);
}

TEST_CASE("the widened path's dot products of packed words equal the codes' dot products") {
  // Every product of the widened s8 lanes pairs the same code of A and W, and
  // the scaled sum shifts back exactly: 20,000 random word pairs and the
  // extreme words (all −8 / 7, all 0 / 15) for every signedness.
  std::mt19937 rng(5);
  std::uniform_int_distribution<std::uint32_t> word;
  auto decoded_dot = [](std::uint32_t a, std::uint32_t w, bool a_signed, bool w_signed) {
    std::int64_t sum = 0;
    for (int j = 0; j < 8; ++j) {
      const auto na = static_cast<std::uint8_t>((a >> (4 * j)) & 0xFu), nw = static_cast<std::uint8_t>((w >> (4 * j)) & 0xFu);
      sum += std::int64_t(a_signed ? oq::core::sign_extend_s4(na) : na) * (w_signed ? oq::core::sign_extend_s4(nw) : nw);
    }
    return sum;
  };
  const std::uint32_t extremes[] = {0x88888888u, 0x77777777u, 0x00000000u, 0xFFFFFFFFu, 0x8F8F7070u};
  for (bool a_signed : {false, true}) {
    for (bool w_signed : {false, true}) {
      CAPTURE(a_signed);
      CAPTURE(w_signed);
      int mismatches = 0;
      for (int i = 0; i < 20000; ++i) {
        const std::uint32_t a = word(rng), w = word(rng);
        mismatches += oq::test::widened_dot(a, w, a_signed, w_signed) != decoded_dot(a, w, a_signed, w_signed);
      }
      for (std::uint32_t a : extremes)
        for (std::uint32_t w : extremes)
          mismatches += oq::test::widened_dot(a, w, a_signed, w_signed) != decoded_dot(a, w, a_signed, w_signed);
      CHECK(mismatches == 0);
    }
  }
}
