#include <oq/analysis/moments.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

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
