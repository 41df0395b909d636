#include <oq/analysis/outliers.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

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

TEST_CASE("median_abs: the lower median by a full sort; massive_tokens: each token once") {
  // Against std::sort of every |x| (not nth_element), ragged sizes, odd and even counts, float and double.
  for (const auto& shape : {std::pair<Eigen::Index, Eigen::Index>{1, 1}, {1, 2}, {3, 5}, {7, 4}, {33, 17}}) {
    const Eigen::Index rows = shape.first, cols = shape.second;  // not a structured binding: INFO captures them
    const MatrixX<float> x = oq::test::gaussian<float>(rows, cols, static_cast<std::uint64_t>(rows * 100 + cols));
    std::vector<double> sorted;
    for (Eigen::Index i = 0; i < x.size(); ++i) sorted.push_back(std::fabs(static_cast<double>(x.data()[i])));
    std::sort(sorted.begin(), sorted.end());
    INFO(rows, " x ", cols);
    CHECK(median_abs(x) == sorted[(sorted.size() - 1) / 2]);
    CHECK(median_abs(MatrixX<double>(x.cast<double>())) == sorted[(sorted.size() - 1) / 2]);
  }
  MatrixX<double> x(2, 2);
  x << 0.05, -0.1, 0.2, -140.0;
  CHECK(median_abs(x) == 0.1);  // lower of the middle two, as the test above's ratio 1400 needs
  CHECK(median_abs(x.block(0, 0, 2, 1)) == 0.05);  // an expression (a block), not only a matrix
  // Refusals: empty (invalid_argument), NaN or Inf (domain_error).
  CHECK_THROWS_WITH_AS(median_abs(MatrixX<double>(0, 3)), doctest::Contains("non-empty"), std::invalid_argument);
  x(1, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(median_abs(x), doctest::Contains("finite"), std::domain_error);
  x(1, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(median_abs(x), std::domain_error);

  // Two massive channels on tokens 0 and 5, one on token 2: three tokens, each once, in order.
  MatrixX<float> h = oq::test::gaussian<float>(8, 64, 9, 0.3);
  h(0, 3) = 2000;
  h(0, 40) = -1900;
  h(5, 3) = 1500;
  h(5, 41) = 1600;
  h(2, 7) = -3000;
  const auto found = find_massive_activations(h);
  REQUIRE(found.size() == 5);
  CHECK(massive_tokens(found) == std::vector<Eigen::Index>{0, 2, 5});
  CHECK(massive_tokens({}).empty());
  // Any order in, sorted and unique out.
  const std::vector<MassiveActivation> shuffled{found[4], found[0], found[2], found[1], found[3]};
  CHECK(massive_tokens(shuffled) == std::vector<Eigen::Index>{0, 2, 5});
}

namespace {

// The channel-outlier ratios of x by plain loops in long double (its 15-bit
// exponent holds sums of doubles near DBL_MAX): mean |x| of each channel over
// the mean |x| of the whole input.
std::vector<long double> channel_ratios_long_double(const MatrixX<double>& x) {
  std::vector<long double> mean_abs(static_cast<std::size_t>(x.cols()));
  long double total = 0;
  for (Eigen::Index c = 0; c < x.cols(); ++c) {
    long double sum = 0;
    for (Eigen::Index t = 0; t < x.rows(); ++t) sum += std::fabs(static_cast<long double>(x(t, c)));
    mean_abs[static_cast<std::size_t>(c)] = sum / static_cast<long double>(x.rows());
    total += sum;
  }
  const long double overall = total / static_cast<long double>(x.size());
  for (long double& m : mean_abs) m /= overall;
  return mean_abs;
}

}  // namespace

TEST_CASE("channel-wise outliers of doubles whose sums overflow: the ratios of a long double reference") {
  // Issue 23, item 5: the mean |x| over all channels was the plain double mean
  // of the channels' mean |x|, whose sum overflows for doubles near 2^1014
  // (4096 channels of mean |x| ≈ 0.8·2^1014): overall = +inf, every ratio 0,
  // and no outlier was reported.
  if constexpr (std::numeric_limits<long double>::max_exponent < 16384) {
    MESSAGE("skipped: long double has no wider exponent range than double here");
    return;
  }
  MatrixX<double> base = oq::test::gaussian<double>(64, 4096, 81);
  base.col(10) *= 20.0;
  base.col(2000) *= 30.0;
  base.col(33) *= 3.0;  // large but below the 6× criterion
  for (int k : {0, 1014, -1000}) {
    CAPTURE(k);
    const MatrixX<double> x = std::ldexp(1.0, k) * base;
    REQUIRE(x.allFinite());
    const std::vector<long double> reference = channel_ratios_long_double(x);
    const auto found = find_channel_outliers(x);
    REQUIRE(found.size() == 2);
    CHECK(found[0].channel == 2000);
    CHECK(found[1].channel == 10);
    for (const ChannelOutlier& o : found) {
      CAPTURE(o.channel);
      const long double expected = reference[static_cast<std::size_t>(o.channel)];
      // The library sums in double (n + C roundings, relative 2^−53 each).
      CHECK(std::fabs(static_cast<long double>(o.ratio_to_mean) - expected) <= 1e-12L * expected);
      CHECK(std::isfinite(o.mean_abs));
    }
    // Every channel above 6× is reported: the reference's count.
    std::size_t above = 0;
    for (long double r : reference) above += r > 6.0L ? 1 : 0;
    CHECK(found.size() == above);
  }
}

TEST_CASE("norm-weight channels of doubles whose squared norms leave double's range") {
  // Issue 23, item 5: ‖W_{:,j}‖₂ was √(Σ w²) in double: +inf for columns
  // near 2^600 (every score inf, every ratio inf/inf = NaN, nothing found)
  // and 0 near 2^−600 (every score 0, nothing found).
  Eigen::VectorXd gamma = Eigen::VectorXd::Ones(64);
  gamma[5] = 30.0;
  gamma[40] = -20.0;
  const MatrixX<double> w = oq::test::gaussian<double>(32, 64, 4);
  const auto plain = find_outlier_weight_channels(gamma, w);
  REQUIRE(plain.size() == 2);
  for (int k : {600, -600, 1000, -1060}) {
    CAPTURE(k);
    const MatrixX<double> scaled = std::ldexp(1.0, k) * w;
    const auto found = find_outlier_weight_channels(gamma, scaled);
    REQUIRE(found.size() == 2);
    // Scaling W by 2^k scales every score by 2^k: the ratios are those of
    // the unscaled weights (to the roundings of the norms, ~2^−50 relative;
    // at 2^−1060 the weights themselves are subnormal, with ~14 bits left).
    const double tolerance = k == -1060 ? 1e-3 : 1e-13;
    for (std::size_t i = 0; i < 2; ++i) {
      CAPTURE(i);
      CHECK(found[i].channel == plain[i].channel);
      CHECK(found[i].ratio_to_mean == doctest::Approx(plain[i].ratio_to_mean).epsilon(tolerance));
      CHECK(found[i].score == doctest::Approx(std::ldexp(plain[i].score, k)).epsilon(tolerance));
    }
  }
  // A score beyond double's range (|γ_j|·‖W_{:,j}‖ ≈ 2^1200) is refused, naming it.
  CHECK_THROWS_WITH_AS(find_outlier_weight_channels((std::ldexp(1.0, 600) * gamma).eval(),
                                                    (std::ldexp(1.0, 600) * w).eval()),
                       doctest::Contains("score of channel"), std::domain_error);
}
