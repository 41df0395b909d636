#include <oq/analysis/moments.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

using oq::analysis::ChannelMoments;
using oq::test::MatrixX;

namespace {

// Plain float64 reference for one channel: loops, two passes.
struct RefStats {
  double mean = 0, m2 = 0, m3 = 0, m4 = 0, absmax = 0, mean_abs = 0;
};

RefStats reference(const MatrixX<double>& x, Eigen::Index c) {
  RefStats s;
  const double n = static_cast<double>(x.rows());
  for (Eigen::Index t = 0; t < x.rows(); ++t) s.mean += x(t, c) / n;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double d = x(t, c) - s.mean;
    s.m2 += d * d / n;
    s.m3 += d * d * d / n;
    s.m4 += d * d * d * d / n;
    s.absmax = std::max(s.absmax, std::fabs(x(t, c)));
    s.mean_abs += std::fabs(x(t, c)) / n;
  }
  return s;
}

void check_against_reference(const ChannelMoments& m, const MatrixX<double>& x) {
  REQUIRE(m.count() == x.rows());
  const Eigen::VectorXd var = m.variance(), kurt = m.kurtosis(), mean_abs = m.mean_abs();
  for (Eigen::Index c = 0; c < x.cols(); ++c) {
    const RefStats r = reference(x, c);
    CAPTURE(c);
    CHECK(m.mean()[c] == doctest::Approx(r.mean).epsilon(1e-12).scale(1.0));
    CHECK(var[c] == doctest::Approx(r.m2).epsilon(1e-12));
    CHECK(kurt[c] == doctest::Approx(r.m4 / (r.m2 * r.m2)).epsilon(1e-10));
    CHECK(m.absmax()[c] == r.absmax);
    CHECK(mean_abs[c] == doctest::Approx(r.mean_abs).epsilon(1e-12));
  }
}

}  // namespace

TEST_CASE("one batch equals the plain two-pass reference") {
  const MatrixX<double> x = oq::test::adversarial<double>(57, 24, 3);
  ChannelMoments m(24);
  m.update(x);
  check_against_reference(m, x);
}

TEST_CASE("streaming in uneven batches and merging in any order equal one pass") {
  // Float-representable data, so that a batch fed as float is the same data.
  const MatrixX<double> x = oq::test::heavy_tailed<float>(300, 16, 8).cast<double>();
  ChannelMoments whole(16);
  whole.update(x);

  ChannelMoments streamed(16);
  streamed.update(x.topRows(1));
  streamed.update(x.middleRows(1, 0));  // an empty batch changes nothing
  streamed.update(x.middleRows(1, 7));
  streamed.update(x.bottomRows(292).cast<float>().cast<double>());  // float data is fine too
  check_against_reference(streamed, x);

  ChannelMoments a(16), b(16), c(16);
  a.update(x.topRows(100));
  b.update(x.middleRows(100, 150));
  c.update(x.bottomRows(50));
  ChannelMoments left = a, right = c;
  left.merge(b);
  left.merge(c);
  right.merge(b);
  right.merge(a);
  for (const ChannelMoments* m : {&left, &right}) check_against_reference(*m, x);
  ChannelMoments empty(16);
  empty.merge(whole);
  check_against_reference(empty, x);
}

TEST_CASE("stable for channels whose mean dwarfs their spread") {
  // Raw power sums would lose every digit here: mean 1e8, sigma 1.
  MatrixX<double> x = oq::test::gaussian<double>(4000, 2, 5);
  MatrixX<double> shifted = x;
  shifted.array() += 1e8;
  ChannelMoments plain(2), far(2);
  for (Eigen::Index start = 0; start < 4000; start += 1000) {
    plain.update(x.middleRows(start, 1000));
    far.update(shifted.middleRows(start, 1000));
  }
  // Shifting by 1e8 perturbs each entry by up to ulp(1e8)/2 ≈ 7.5e-9 relative to
  // sigma = 1, so variance and kurtosis agree to ~1e-7.
  CHECK((far.variance() - plain.variance()).cwiseAbs().maxCoeff() < 1e-6);
  CHECK((far.kurtosis() - plain.kurtosis()).cwiseAbs().maxCoeff() < 1e-6);
}

TEST_CASE("ordinary data takes plain float64 sums: the same bits in every block of channels and merge path") {
  // Channels whose max|x| is of ordinary size keep their statistics in units
  // of 1 (file comment of moments.hpp), so one batch is exactly the corrected
  // two-pass formulas in plain float64, written here as scalar loops in the
  // same order of operations. 1100 channels: more than one block of them.
  const Eigen::Index n = 40, channels = 1100;
  const MatrixX<double> x = oq::test::heavy_tailed<double>(n, channels, 23);
  ChannelMoments m(channels);
  m.update(x);
  const double count = static_cast<double>(n);
  for (Eigen::Index c = 0; c < channels; ++c) {
    CAPTURE(c);
    double sum = 0;
    for (Eigen::Index t = 0; t < n; ++t) sum += x(t, c);
    const double mean = sum / count;
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    for (Eigen::Index t = 0; t < n; ++t) {
      const double d = x(t, c) - mean, d2 = d * d;
      s1 += d;
      s2 += d2;
      s3 += d2 * d;
      s4 += d2 * d2;
    }
    const double k = s1 / count, k2 = k * k;
    const double m2 = std::max(s2 - k * s1, 0.0) / count;
    const double m4 = std::max(s4 - 4.0 * k * s3 + 6.0 * k2 * s2 - 3.0 * count * (k2 * k2), 0.0) / count;
    REQUIRE(m.mean()[c] == mean + k);
    REQUIRE(m.variance()[c] == m2);
    REQUIRE(m.kurtosis()[c] == m4 / (m2 * m2));
  }

  // One channel of the last block 2^400 times larger: its batches and merges
  // go through the scaled code (per-channel units, scalar merge), and every
  // channel keeps its bits, that one scaled by 2^400.
  const Eigen::Index far = 1050;
  MatrixX<double> y = x;
  y.col(far) *= std::ldexp(1.0, 400);
  ChannelMoments plain(channels), scaled(channels);
  for (Eigen::Index start = 0; start < n; start += 15) {
    const Eigen::Index rows = std::min<Eigen::Index>(15, n - start);
    plain.update(x.middleRows(start, rows));
    scaled.update(y.middleRows(start, rows));
  }
  CHECK(scaled.kurtosis() == plain.kurtosis());
  Eigen::VectorXd scale = Eigen::VectorXd::Ones(channels);
  scale[far] = std::ldexp(1.0, 400);
  CHECK(scaled.mean() == plain.mean().cwiseProduct(scale));
  CHECK(scaled.stddev() == plain.stddev().cwiseProduct(scale));
  CHECK(scaled.mean_abs() == plain.mean_abs().cwiseProduct(scale));
  CHECK(scaled.variance() == plain.variance().cwiseProduct(scale).cwiseProduct(scale));
}

TEST_CASE("skewed channels far from zero match a long double reference, in one batch and in batches") {
  // x = 1e9 + 1e−3·E² (E exponential): |mean|/σ ≈ 2e11 and strongly skewed, so
  // a batch mean that is off by its rounding error (≈ 1e−4·σ for n = 1e5) shifts
  // every deviation and, through m3, moves K by percents (90.24 for 89.36).
  // Reference: subtract 1e9, which is exact for x ∈ [1e9, 2e9] (Sterbenz), and
  // take two passes in long double.
  const Eigen::Index n = 100000;
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> exponential(1.0);
  MatrixX<double> x(n, 1);
  for (Eigen::Index t = 0; t < n; ++t) x(t, 0) = 1e9 + 1e-3 * std::pow(exponential(rng), 2);
  long double sum = 0;
  for (Eigen::Index t = 0; t < n; ++t) sum += static_cast<long double>(x(t, 0) - 1e9);
  const long double mean = sum / n;
  long double m2 = 0, m4 = 0;
  for (Eigen::Index t = 0; t < n; ++t) {
    const long double d = static_cast<long double>(x(t, 0) - 1e9) - mean;
    m2 += d * d / n;
    m4 += d * d * d * d / n;
  }
  const double k_ref = static_cast<double>(m4 / (m2 * m2));
  // One batch: M2 and M4 are sums of n non-negative terms about a corrected
  // mean, each within n·u ≈ 1e−11 relative (Higham, "Accuracy and Stability
  // of Numerical Algorithms", §4.2); K = m4/m2² within about 3·n·u.
  ChannelMoments one(1);
  one.update(x);
  CHECK(one.kurtosis()[0] == doctest::Approx(k_ref).epsilon(1e-9));
  CHECK(one.mean()[0] == doctest::Approx(1e9 + static_cast<double>(mean)).epsilon(1e-15));
  // Batches of 100, streamed and merged as a tree. A mean rounded to one
  // double (half an ulp of 1e9 = 6e−8 ≈ 1.3e−5·σ) would put an error of that
  // size into every δ = mean_b − mean_a of Pébay's merge and K off by ~1e−6
  // relative; the means are kept as two doubles, so the merged K is as good
  // as one batch's.
  ChannelMoments streamed(1);
  std::vector<ChannelMoments> level;
  for (Eigen::Index start = 0; start < n; start += 100) {
    streamed.update(x.middleRows(start, 100));
    level.emplace_back(1);
    level.back().update(x.middleRows(start, 100));
  }
  while (level.size() > 1) {
    std::vector<ChannelMoments> next;
    for (std::size_t i = 0; i + 1 < level.size(); i += 2) {
      next.push_back(level[i]);
      next.back().merge(level[i + 1]);
    }
    if (level.size() % 2 == 1) next.push_back(level.back());
    level = std::move(next);
  }
  for (const ChannelMoments* m : {&streamed, &level.front()}) {
    REQUIRE(m->count() == n);
    CHECK(m->kurtosis()[0] == doctest::Approx(k_ref).epsilon(1e-9));
    CHECK(m->mean()[0] == doctest::Approx(1e9 + static_cast<double>(mean)).epsilon(1e-15));
  }
}

TEST_CASE("power-of-two scaling to the ends of the float64 range changes no digit") {
  // Multiplying by 2^k commutes with every rounding while the values stay
  // normal, and the statistics are kept in units of 2^e per channel (max|x| =
  // f·2^e), so K is the same bits, and mean, stddev, mean |x| and max |x| are
  // exactly 2^k times the unscaled ones, though Σ(x − mean)⁴ would overflow
  // (k = 1000: ≈ 1e1210) or underflow (k = −990: ≈ 1e−1190) in float64. The
  // variance itself leaves the range there: exactly 2^2k times, i.e. +inf or 0.
  const MatrixX<double> x = oq::test::heavy_tailed<double>(300, 4, 17);
  for (int k : {1000, -990}) {
    CAPTURE(k);
    const MatrixX<double> y = std::ldexp(1.0, k) * x;
    REQUIRE(y.cwiseAbs().maxCoeff() < std::numeric_limits<double>::max());
    REQUIRE(y.cwiseAbs().minCoeff() >= std::numeric_limits<double>::min());
    ChannelMoments plain(4), scaled(4), plain_merged(4), scaled_merged(4);
    plain.update(x);
    scaled.update(y);
    for (Eigen::Index start = 0; start < 300; start += 70) {
      const Eigen::Index rows = std::min<Eigen::Index>(70, 300 - start);
      plain_merged.update(x.middleRows(start, rows));
      scaled_merged.update(y.middleRows(start, rows));
    }
    for (auto [p, s] : {std::pair{&plain, &scaled}, std::pair{&plain_merged, &scaled_merged}}) {
      CHECK(s->kurtosis() == p->kurtosis());
      CHECK(s->mean() == (std::ldexp(1.0, k) * p->mean()).eval());
      CHECK(s->stddev() == (std::ldexp(1.0, k) * p->stddev()).eval());
      CHECK(s->mean_abs() == (std::ldexp(1.0, k) * p->mean_abs()).eval());
      CHECK(s->absmax() == (std::ldexp(1.0, k) * p->absmax()).eval());
      for (Eigen::Index c = 0; c < 4; ++c) CHECK(s->variance()[c] == std::ldexp(p->variance()[c], 2 * k));
    }
  }
}

TEST_CASE("channels at the ends of the float64 range, against hand-derived values") {
  // {a, −a, 2a, 0}: mean a/2, d = (1, −3, 3, −1)·a/2, m2 = 5/4·a², m4 = 41/16·a⁴,
  // K = 41/25 = 1.64 whatever a is.
  MatrixX<double> x(4, 3);
  x.col(0) << 1e100, -1e100, 2e100, 0;
  x.col(1) << 1e-100, -1e-100, 2e-100, 0;
  const double t = std::numeric_limits<double>::denorm_min();
  x.col(2) << t, -t, 2 * t, 0;  // subnormal: a mean of t/2 is not even representable
  ChannelMoments m(3);
  m.update(x);
  for (Eigen::Index c = 0; c < 3; ++c) {
    CAPTURE(c);
    CHECK(m.kurtosis()[c] == doctest::Approx(1.64).epsilon(1e-15));
  }
  CHECK(m.stddev()[0] == doctest::Approx(std::sqrt(1.25) * 1e100).epsilon(1e-15));
  CHECK(m.stddev()[1] / 1e-100 == doctest::Approx(std::sqrt(1.25)).epsilon(1e-15));
  // Merged from two batches of two rows each: the same K (δ = mean_b − mean_a
  // is taken in the scaled units, so it neither underflows nor overflows).
  ChannelMoments halves(3), second(3);
  halves.update(x.topRows(2));
  second.update(x.bottomRows(2));
  halves.merge(second);
  for (Eigen::Index c = 0; c < 3; ++c) CHECK(halves.kurtosis()[c] == doctest::Approx(1.64).epsilon(1e-15));

  // {a, a, −a} with a = 1.6e308: its sum overflows. Mean a/3, d = (2, 2, −4)·a/3,
  // m2 = 8/9·a², m4 = 32/27·a⁴, K = 3/2; the standard deviation √8/3·a is
  // finite though the variance is not.
  MatrixX<double> big(3, 1);
  big << 1.6e308, 1.6e308, -1.6e308;
  ChannelMoments b(1);
  b.update(big);
  CHECK(b.kurtosis()[0] == doctest::Approx(1.5).epsilon(1e-15));
  CHECK(b.mean()[0] / 1e308 == doctest::Approx(1.6 / 3).epsilon(1e-15));
  CHECK(b.stddev()[0] / 1e308 == doctest::Approx(1.6 * std::sqrt(8.0) / 3).epsilon(1e-15));
  CHECK(b.mean_abs()[0] / 1e308 == doctest::Approx(1.6).epsilon(1e-15));
  CHECK(std::isinf(b.variance()[0]));
  // Merged with a batch of small values: their contribution is far below
  // the rounding of the large one's, and nothing overflows on the way.
  ChannelMoments small(1);
  small.update(MatrixX<double>::Constant(2, 1, 1.0));
  small.merge(b);
  CHECK(small.count() == 5);
  CHECK(std::isfinite(small.kurtosis()[0]));
  CHECK(small.mean()[0] / 1e308 == doctest::Approx(1.6 / 5).epsilon(1e-15));
}

TEST_CASE("kurtosis of large Gaussian and uniform samples") {
  // Standard error of the sample kurtosis is about sqrt(24/n) for Gaussian data.
  const Eigen::Index n = 200000;
  ChannelMoments g(1);
  g.update(oq::test::gaussian<double>(n, 1, 13));
  CHECK(std::fabs(g.kurtosis()[0] - 3.0) < 5 * std::sqrt(24.0 / n));
  ChannelMoments u(1);
  const MatrixX<double> uniform = MatrixX<double>::Random(n, 1);  // U(−1, 1): kurtosis 9/5
  u.update(uniform);
  CHECK(std::fabs(u.kurtosis()[0] - 1.8) < 0.01);
}

TEST_CASE("constant channels and bad input") {
  MatrixX<double> x = MatrixX<double>::Constant(10, 3, 2.5);
  ChannelMoments m(3);
  m.update(x);
  CHECK(m.variance().isZero(0));
  CHECK(m.kurtosis().isZero(0));  // 0/0 reported as 0
  CHECK(m.kurtosis(1e-3).isZero(0));
  CHECK_THROWS_WITH_AS(m.update(MatrixX<double>::Zero(2, 4)), doctest::Contains("x must have 3 columns"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.kurtosis(-1.0), doctest::Contains("epsilon must be finite and >= 0"), std::invalid_argument);
  x(4, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(m.update(x), doctest::Contains("x(4, 1) is nan"), std::domain_error);
  CHECK(m.count() == 10);  // a rejected batch leaves the statistics as they were
  ChannelMoments none(3);
  CHECK_THROWS_WITH_AS(none.mean(), doctest::Contains("needs at least one token"), std::invalid_argument);
  CHECK_THROWS_AS(ChannelMoments(2).merge(m), std::invalid_argument);
  CHECK_THROWS_AS(ChannelMoments(-1), std::invalid_argument);
}
