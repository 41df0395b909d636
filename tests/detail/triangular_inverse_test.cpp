#include <oq/detail/triangular_inverse.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/Cholesky>

#include <cmath>
#include <limits>

namespace {

template <class T>
using Matrix = oq::test::MatrixX<T>;

// The Cholesky factor of G·Gᵀ/n + I: lower triangular, positive diagonal,
// condition number a few units, so the inverse is accurate to n·ε.
template <class T>
Matrix<T> cholesky_factor(Eigen::Index n, std::uint64_t seed) {
  const Eigen::MatrixXd g = oq::test::gaussian<double>(n, n, seed);
  const Eigen::MatrixXd h = g * g.transpose() / double(n) + Eigen::MatrixXd::Identity(n, n);
  return Eigen::MatrixXd(Eigen::LLT<Eigen::MatrixXd>(h).matrixL()).cast<T>();
}

// Sizes around the recursion's base (64) and odd splits at every level.
constexpr Eigen::Index kSizes[] = {1, 2, 3, 63, 64, 65, 127, 129, 200, 257, 513};

}  // namespace

TEST_CASE_TEMPLATE("the lower triangle of L becomes that of L⁻¹: L·X = I, equal to a triangular solve", T, double,
                   float) {
  const double eps = std::numeric_limits<T>::epsilon();
  for (const Eigen::Index n : kSizes) {
    CAPTURE(n);
    const Matrix<T> l = cholesky_factor<T>(n, 7 + std::uint64_t(n));
    Matrix<T> m = l;
    // The strictly upper triangle is neither read nor written: NaN there
    // would reach the result through any read, and must still be there.
    m.template triangularView<Eigen::StrictlyUpper>().setConstant(std::numeric_limits<T>::quiet_NaN());
    oq::detail::invert_lower_triangular_in_place<T>(m);
    Eigen::Index upper_nan = 0;
    for (Eigen::Index j = 0; j < n; ++j)
      for (Eigen::Index i = 0; i < j; ++i) upper_nan += std::isnan(m(i, j)) ? 1 : 0;
    REQUIRE(upper_nan == n * (n - 1) / 2);
    const Eigen::MatrixXd x = Matrix<T>(m.template triangularView<Eigen::Lower>()).template cast<double>();
    REQUIRE(x.allFinite());
    const Eigen::MatrixXd ld = l.template cast<double>();
    // Backward-stable bound for a triangular inverse with cond(L) of a few
    // units: |L·X − I| ≤ c·n·ε, c well under 4 here.
    CHECK((ld * x - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() <= 4.0 * double(n) * eps);
    // Against a different algorithm: Eigen's forward substitution on I, in double.
    Eigen::MatrixXd solved = Eigen::MatrixXd::Identity(n, n);
    ld.template triangularView<Eigen::Lower>().solveInPlace(solved);
    CHECK((x - solved).cwiseAbs().maxCoeff() <= 4.0 * double(n) * eps * solved.cwiseAbs().maxCoeff());
  }
}

TEST_CASE("a block of a larger matrix (outer stride) is inverted in place, its surroundings untouched") {
  const Eigen::Index n = 150;
  const Eigen::MatrixXd l = cholesky_factor<double>(n, 3);
  Eigen::MatrixXd big = Eigen::MatrixXd::Constant(n + 9, n + 5, 42.0);
  big.block(4, 2, n, n) = l;
  oq::detail::invert_lower_triangular_in_place<double>(big.block(4, 2, n, n));
  const Eigen::MatrixXd x = big.block(4, 2, n, n).triangularView<Eigen::Lower>();
  CHECK((l * x - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-12);
  big.block(4, 2, n, n).triangularView<Eigen::Lower>().setConstant(42.0);
  // The strictly upper triangle kept L's values; everything outside the block kept 42.
  CHECK(big.block(4, 2, n, n).triangularView<Eigen::StrictlyUpper>().toDenseMatrix() ==
        l.triangularView<Eigen::StrictlyUpper>().toDenseMatrix());
  big.block(4, 2, n, n).setConstant(42.0);
  CHECK((big.array() == 42.0).all());
}

TEST_CASE("an empty matrix is a no-op") {
  Eigen::MatrixXd m(0, 0);
  oq::detail::invert_lower_triangular_in_place<double>(m);
  CHECK(m.size() == 0);
}

TEST_CASE("a diagonal matrix gets its reciprocals, exactly") {
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(70, 70);
  for (Eigen::Index i = 0; i < 70; ++i) m(i, i) = std::ldexp(1.0, int(i % 9) - 4);
  oq::detail::invert_lower_triangular_in_place<double>(m);
  for (Eigen::Index i = 0; i < 70; ++i) CHECK(m(i, i) == std::ldexp(1.0, 4 - int(i % 9)));
  CHECK(m.triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero(0.0));
}
