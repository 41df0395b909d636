#include <oq/transform/randomized_hadamard.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

using namespace oq::transform;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {

// Sizes: powers of two, Paley I and II over primes and prime powers (52 =
// 2·(25 + 1), 344 = 343 + 1), doubled ones.
const std::vector<Eigen::Index> kSizes{1, 2, 12, 28, 52, 64, 100, 344, 688, 1024};

// x·M in float64 plain loops, M = D·H/√n from hadamard_matrix (Gram-checked
// in hadamard_test) and the signs: (x·M)_j = Σ_i x_i·d_i·H(i, j)/√n.
MatrixX<double> times_m_ref(const MatrixX<double>& x, const Eigen::MatrixXi& h, const Eigen::VectorXi& d,
                            bool transpose) {
  const Eigen::Index n = x.cols();
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  MatrixX<double> y(x.rows(), n);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index j = 0; j < n; ++j) {
      double sum = 0.0;
      for (Eigen::Index i = 0; i < n; ++i) {
        // M(i, j) = d_i·H(i, j)/√n; Mᵀ(i, j) = M(j, i) = d_j·H(j, i)/√n.
        sum += transpose ? x(r, i) * d(j) * h(j, i) : x(r, i) * d(i) * h(i, j);
      }
      y(r, j) = sum * scale;
    }
  }
  return y;
}

// Largest over rows of ‖y_r − ref_r‖ / ‖x_r‖.
template <class T>
double max_row_error(const MatrixX<T>& y, const MatrixX<double>& ref, const MatrixX<double>& x) {
  double worst = 0.0;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    worst = std::max(worst, (y.row(r).template cast<double>() - ref.row(r)).norm() / x.row(r).norm());
  }
  return worst;
}

// As hadamard_test's tolerance: ten times the random-walk rounding of the
// fast path's m + K additions and the reference's n-term sums.
template <class T>
double tolerance(const RandomizedHadamard& q) {
  const double u = std::numeric_limits<T>::epsilon() / 2, u64 = std::numeric_limits<double>::epsilon() / 2;
  const auto& c = q.construction();
  return 10.0 * (std::sqrt(static_cast<double>(c.power + c.base)) * u + std::sqrt(static_cast<double>(c.size)) * u64);
}

}  // namespace

TEST_CASE("the explicit M = D·H/√n is orthogonal, with D's signs on its rows") {
  for (Eigen::Index n : kSizes) {
    CAPTURE(n);
    const auto q = RandomizedHadamard::from_seed(n, 7 + static_cast<std::uint64_t>(n));
    const MatrixX<double> m = q.matrix<double>();
    const Eigen::MatrixXi h = hadamard_matrix(n);
    const double scale = 1.0 / std::sqrt(static_cast<double>(n));
    bool entries = true;
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) entries = entries && m(i, j) == q.signs()(i) * h(i, j) * scale;
    CHECK(entries);
    // M·Mᵀ = D·H·Hᵀ·D/n = I: each entry a sum of n products of ±1/√n (exact
    // up to the rounding of 1/√n and of n additions).
    const double bound = (n + 2) * std::numeric_limits<double>::epsilon();
    CHECK((m * m.transpose() - MatrixX<double>::Identity(n, n)).cwiseAbs().maxCoeff() <= bound);
    CHECK((m.transpose() * m - MatrixX<double>::Identity(n, n)).cwiseAbs().maxCoeff() <= bound);
    CHECK(q.matrix<float>() == m.cast<float>());
  }
}

TEST_CASE_TEMPLATE("apply_rows is x·M and its inverse x·Mᵀ, in float64 plain loops", T, float, double) {
  for (Eigen::Index n : kSizes) {
    CAPTURE(n);
    const auto q = RandomizedHadamard::from_seed(n, 100 + static_cast<std::uint64_t>(n));
    const Eigen::MatrixXi h = hadamard_matrix(n);
    MatrixX<T> x(3, n);
    x.row(0) = oq::test::gaussian<T>(1, n, 1);
    x.row(1) = oq::test::heavy_tailed<T>(1, n, 2);
    x.row(2).setZero();
    x(2, n / 2) = T(1000);  // one massive entry
    const MatrixX<double> xd = x.template cast<double>();
    const double tol = tolerance<T>(q);
    MatrixX<T> y = x;
    q.apply_rows(y);
    const MatrixX<double> ref = times_m_ref(xd, h, q.signs(), /*transpose=*/false);
    CHECK(max_row_error(y, ref, xd) <= tol);
    CHECK(q.apply(x) == y);
    CHECK(q.fold_into_weight(x) == y);
    // One massive entry is spread over every channel at magnitude 1000/√n.
    if (n > 1) {
      const double flat = 1000.0 / std::sqrt(static_cast<double>(n));
      CHECK((y.row(2).template cast<double>().array().abs() - flat).abs().maxCoeff() <= 1e-5 * flat);
    }
    // The inverse is x·Mᵀ, and undoes the forward transform.
    MatrixX<T> back = y;
    q.apply_rows(back, Direction::kInverse);
    CHECK(max_row_error(back, xd, xd) <= 2 * tol);
    MatrixX<T> inverse = x;
    q.apply_rows(inverse, Direction::kInverse);
    CHECK(max_row_error(inverse, times_m_ref(xd, h, q.signs(), /*transpose=*/true), xd) <= tol);
  }
}

TEST_CASE("X·Wᵀ is preserved: (X·M)·(W·M)ᵀ = X·Wᵀ, M folded into W's rows") {
  for (Eigen::Index n : {Eigen::Index(4096), Eigen::Index(11008), Eigen::Index(5120), Eigen::Index(344)}) {
    CAPTURE(n);
    const auto q = RandomizedHadamard::from_seed(n, 5);
    const MatrixX<double> x = oq::test::heavy_tailed<double>(8, n, 31);
    const MatrixX<double> w = oq::test::gaussian<double>(6, n, 32);
    const MatrixX<double> xr = q.apply(x);
    const MatrixX<double> wr = q.fold_into_weight(w);
    CHECK((xr - x).norm() > 0.1 * x.norm());  // it did rotate
    const MatrixX<double> y = x * w.transpose();
    const MatrixX<double> yr = xr * wr.transpose();
    CHECK((yr - y).norm() <= 1e-12 * x.norm() * w.norm());
  }
}

TEST_CASE("the signs come from the seed: reproducible, one top bit per draw, balanced, different across seeds") {
  const auto a = RandomizedHadamard::from_seed(4096, 42);
  const auto b = RandomizedHadamard::from_seed(4096, 42);
  CHECK(a.signs() == b.signs());
  std::mt19937_64 rng(42);
  CHECK(RandomizedHadamard::random(4096, rng).signs() == a.signs());
  // The documented rule for std::mt19937_64 (range 0 … 2^64 − 1): −1 exactly
  // when the draw's top bit is set.
  std::mt19937_64 replay(42);
  bool rule = true;
  for (Eigen::Index i = 0; i < 4096; ++i) rule = rule && a.signs()(i) == ((replay() >> 63) != 0 ? -1 : 1);
  CHECK(rule);
  // And for a 32-bit engine.
  std::mt19937 rng32(9);
  const auto c = RandomizedHadamard::random(64, rng32);
  std::mt19937 replay32(9);
  rule = true;
  for (Eigen::Index i = 0; i < 64; ++i) rule = rule && c.signs()(i) == ((replay32() >> 31) != 0 ? -1 : 1);
  CHECK(rule);
  // Balanced: the count of −1 is Binomial(4096, ½), mean 2048, sd 32; six sd
  // (a false failure once in 10^9 seeds).
  for (std::uint64_t seed = 0; seed < 5; ++seed) {
    CAPTURE(seed);
    const auto s = RandomizedHadamard::from_seed(4096, seed);
    const auto negative = (s.signs().array() < 0).count();
    CHECK(std::abs(static_cast<double>(negative) - 2048.0) <= 6 * 32);
    if (seed > 0) CHECK(s.signs() != RandomizedHadamard::from_seed(4096, seed - 1).signs());
  }
}

TEST_CASE("storage order, blocks and maps") {
  const auto q = RandomizedHadamard::from_seed(100, 3);
  const MatrixX<double> x = oq::test::gaussian<double>(40, 100, 4);
  MatrixX<double> col_major = x;
  q.apply_rows(col_major);
  RowMatrixX<double> row_major = x;
  q.apply_rows(row_major);
  CHECK(MatrixX<double>(row_major) == col_major);
  MatrixX<double> big = MatrixX<double>::Constant(44, 105, 5.0);
  big.block(2, 3, 40, 100) = x;
  q.apply_rows(big.block(2, 3, 40, 100));
  CHECK(big.block(2, 3, 40, 100) == col_major);
  CHECK((big.leftCols(3).array() == 5.0).all());
  CHECK((big.rightCols(2).array() == 5.0).all());
  MatrixX<double> empty(0, 100);
  q.apply_rows(empty);
  CHECK(empty.size() == 0);
}

TEST_CASE("bad input gives clear errors, and x is unchanged") {
  CHECK_THROWS_WITH_AS(RandomizedHadamard(Eigen::VectorXi::Constant(12, 2)),
                       doctest::Contains("oq::transform::RandomizedHadamard: signs(0) must be +1 or -1, got 2"),
                       std::invalid_argument);
  Eigen::VectorXi with_zero = Eigen::VectorXi::Ones(12);
  with_zero(5) = 0;
  CHECK_THROWS_WITH_AS(RandomizedHadamard{with_zero}, doctest::Contains("signs(5) must be +1 or -1, got 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(RandomizedHadamard(Eigen::VectorXi(0)), doctest::Contains("signs must be non-empty"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(RandomizedHadamard(Eigen::VectorXi::Ones(92)),
                       doctest::Contains("signs.size() must be a size with a Hadamard construction"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(RandomizedHadamard::from_seed(172, 0),
                       doctest::Contains("oq::transform::RandomizedHadamard::random: n must be a size with"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(RandomizedHadamard::from_seed(0, 0), doctest::Contains("n must be positive, got 0"),
                       std::invalid_argument);

  const auto q = RandomizedHadamard::from_seed(64, 1);
  MatrixX<float> wrong = oq::test::gaussian<float>(2, 32, 1);
  CHECK_THROWS_WITH_AS(q.apply_rows(wrong),
                       doctest::Contains("RandomizedHadamard::apply_rows: x.cols() must be n = 64, got 32"),
                       std::invalid_argument);
  MatrixX<double> bad = oq::test::gaussian<double>(3, 64, 2);
  bad(1, 7) = std::numeric_limits<double>::quiet_NaN();
  const MatrixX<double> before = bad;
  CHECK_THROWS_WITH_AS(q.apply_rows(bad), doctest::Contains("x(1, 7) is nan"), std::domain_error);
  CHECK(bad.cwiseEqual(before).count() + 1 == bad.size());
  // An output beyond the largest value: hadamard_rows refuses it, and the
  // sign flips already made are undone (x exactly as given).
  MatrixX<float> huge = MatrixX<float>::Constant(2, 64, std::numeric_limits<float>::max() / 2);
  // Signs matching q's, so that the flipped row is constant and its sum overflows.
  for (Eigen::Index j = 0; j < 64; ++j) huge(1, j) *= static_cast<float>(q.signs()(j));
  const MatrixX<float> huge_before = huge;
  CHECK_THROWS_WITH_AS(q.apply_rows(huge), doctest::Contains("exceeds the largest finite"), std::domain_error);
  CHECK(huge == huge_before);
  CHECK_THROWS_AS(q.apply_rows(huge, Direction::kInverse), std::domain_error);
  CHECK(huge == huge_before);
}
