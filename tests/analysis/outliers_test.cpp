#include <oq/analysis/outliers.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

using namespace oq::analysis;
using oq::test::MatrixX;

TEST_CASE("every planted massive activation is found, with its ratio") {
  // LLaMA-2-7B-like (docs/design.md §3): ~2000 in channels 1415 and 2533 on the first
  // token and on a "." token, against a median |x| near 0.2.
  MatrixX<float> h = oq::test::gaussian<float>(64, 4096, 1, 0.3);
  const Eigen::Index tokens[] = {0, 17};
  const Eigen::Index channels[] = {1415, 2533};
  for (Eigen::Index t : tokens)
    for (Eigen::Index c : channels) h(t, c) = (c == 1415 ? 2000.0f : -1800.0f);
  const auto found = find_massive_activations(h);
  REQUIRE(found.size() == 4);
  CHECK(found[0].token == 0);
  CHECK(found[0].channel == 1415);
  CHECK(found[0].value == 2000.0);
  CHECK(found[1].channel == 2533);
  CHECK(found[1].value == -1800.0);
  CHECK(found[3].token == 17);
  for (const auto& m : found) CHECK(m.ratio_to_median > 1000.0);
  // The ratio threshold matters: at 1e5 × median none qualifies.
  CHECK(find_massive_activations(h, {.min_abs = 100, .min_ratio_to_median = 1e5}).empty());
  // So does the absolute one.
  CHECK(find_massive_activations(h, {.min_abs = 2500, .min_ratio_to_median = 1000}).empty());
}

TEST_CASE("nothing is reported on Gaussian data of 4096 x 4096") {
  const MatrixX<float> x = oq::test::gaussian<float>(4096, 4096, 2);
  CHECK(find_massive_activations(x).empty());
  CHECK(find_channel_outliers(x).empty());
}

TEST_CASE("planted channel-wise outliers are found, largest first") {
  MatrixX<double> x = oq::test::gaussian<double>(512, 256, 3);
  x.col(10) *= 20.0;
  x.col(200) *= 40.0;
  x.col(33) *= 3.0;  // large but below the 6x criterion
  const auto found = find_channel_outliers(x);
  REQUIRE(found.size() == 2);
  CHECK(found[0].channel == 200);
  CHECK(found[1].channel == 10);
  // The ratio is to the mean over all channels, outliers included.
  const double overall = x.cwiseAbs().mean();
  CHECK(found[0].ratio_to_mean == doctest::Approx(x.col(200).cwiseAbs().mean() / overall).epsilon(1e-12));
  CHECK(find_channel_outliers(x, 2.0).size() == 3);  // 3 × 0.80 / 0.98 ≈ 2.4
}

TEST_CASE("norm-weight channels that trigger outliers") {
  Eigen::VectorXd gamma = Eigen::VectorXd::Ones(64);
  gamma[5] = 30.0;
  gamma[40] = -20.0;  // the magnitude counts
  const MatrixX<double> w = oq::test::gaussian<double>(32, 64, 4);
  const auto found = find_outlier_weight_channels(gamma, w);
  REQUIRE(found.size() == 2);
  CHECK(found[0].channel == 5);
  CHECK(found[1].channel == 40);
  CHECK(found[0].score == doctest::Approx(30.0 * w.col(5).norm()));
  CHECK(find_outlier_weight_channels(gamma.transpose(), w).size() == 2);  // a row vector works too
}

TEST_CASE("bad input") {
  MatrixX<float> x = oq::test::gaussian<float>(8, 8, 1);
  CHECK_THROWS_AS(find_massive_activations(MatrixX<float>(0, 4)), std::invalid_argument);
  CHECK_THROWS_WITH_AS(find_massive_activations(x, {.min_abs = -1}), doctest::Contains("options.min_abs"),
                       std::invalid_argument);
  // An infinite ratio would report every entry above min_abs once the median is 0 (∞ ≥ ∞).
  CHECK_THROWS_WITH_AS(
      find_massive_activations(x, {.min_abs = 100, .min_ratio_to_median = std::numeric_limits<double>::infinity()}),
      doctest::Contains("options.min_ratio_to_median must be finite and >= 0"), std::invalid_argument);
  CHECK_THROWS_AS(find_massive_activations(x, {.min_abs = 100, .min_ratio_to_median = std::nan("")}),
                  std::invalid_argument);
  CHECK_THROWS_WITH_AS(find_channel_outliers(x, 0.0), doctest::Contains("min_ratio must be finite and > 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(find_outlier_weight_channels(Eigen::VectorXf::Ones(7), x),
                       doctest::Contains("weight must be out x 7"), std::invalid_argument);
  x(2, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(find_massive_activations(x), doctest::Contains("x(2, 3) is inf"), std::domain_error);
  CHECK_THROWS_AS(find_channel_outliers(x), std::domain_error);
}

TEST_CASE("the median is the lower median of all |x|, and a zero median makes every large entry massive") {
  // Issue 23: the convention (torch.median's lower median) was checked by no
  // value. |x| = {0.05, 0.1, 0.2, 140}: lower median 0.1 (ratio 1400, found),
  // the mean of the middle two 0.15 (933, not), the upper 0.2 (700, not).
  MatrixX<double> x(2, 2);
  x << 0.05, -0.1, 0.2, -140.0;
  const auto found = find_massive_activations(x, {.min_abs = 100, .min_ratio_to_median = 1000});
  REQUIRE(found.size() == 1);
  CHECK(found[0].token == 1);
  CHECK(found[0].channel == 1);
  CHECK(found[0].value == -140.0);
  CHECK(found[0].ratio_to_median == 1400.0);
  // Odd count: the middle one. |x| = {1, 2, 3e5}: median 2, ratio 1.5e5.
  MatrixX<double> odd(1, 3);
  odd << 3e5, -1.0, 2.0;
  const auto one = find_massive_activations(odd, {.min_abs = 100, .min_ratio_to_median = 1000});
  REQUIRE(one.size() == 1);
  CHECK(one[0].ratio_to_median == 1.5e5);
  // More than half zeros: median 0, ratio ∞, every entry above min_abs counts.
  MatrixX<double> zeros = MatrixX<double>::Zero(2, 3);
  zeros(0, 1) = 101.0;
  zeros(1, 2) = -5.0;
  const auto z = find_massive_activations(zeros, {.min_abs = 100, .min_ratio_to_median = 1000});
  REQUIRE(z.size() == 1);
  CHECK(z[0].channel == 1);
  CHECK(std::isinf(z[0].ratio_to_median));
}
