// The W4A4 launcher's argument checks (no GPU needed).
#include "gemm_w4a4_launch.hpp"

#include <doctest/doctest.h>

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
}
