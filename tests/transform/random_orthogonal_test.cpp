#include <oq/transform/random_orthogonal.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>

using namespace oq::transform;
using oq::test::MatrixX;

TEST_CASE_TEMPLATE("Q·Qᵀ = I", T, float, double) {
  std::mt19937_64 rng(1);
  for (Eigen::Index n : {1, 2, 3, 16, 100, 257}) {
    CAPTURE(n);
    const MatrixX<T> q = random_orthogonal<T>(n, rng);
    REQUIRE(q.rows() == n);
    REQUIRE(q.cols() == n);
    const MatrixX<double> qd = q.template cast<double>();
    const double err_rows = (qd * qd.transpose() - MatrixX<double>::Identity(n, n)).cwiseAbs().maxCoeff();
    const double err_cols = (qd.transpose() * qd - MatrixX<double>::Identity(n, n)).cwiseAbs().maxCoeff();
    // Double: Householder QR is orthogonal to O(n·u) (Higham, Thm 19.4), far
    // below 1e-12 for n ≤ 257. Float is that matrix rounded entrywise
    // (|δq| ≤ u_f·|q|), so each entry of Q·Qᵀ moves by at most
    // 2u_f·Σ_k |q_ik|·|q_jk| ≤ 2u_f (Cauchy–Schwarz on unit rows), plus u_f².
    const double tol = std::is_same_v<T, double> ? 1e-12 : 3.0 * std::numeric_limits<float>::epsilon() / 2 + 1e-12;
    CHECK(err_rows <= tol);
    CHECK(err_cols <= tol);
  }
}

TEST_CASE("Q is the QR factor whose R has a positive diagonal (the sign fix)") {
  // Redraw G with a copy of the generator, in the documented column-major
  // order: R = Qᵀ·G must be upper triangular with a positive diagonal, which
  // pins Q = (the unique such factor) and is exactly Mezzadri's condition.
  for (Eigen::Index n : {1, 2, 5, 40}) {
    CAPTURE(n);
    std::mt19937_64 rng(n + 100);
    std::mt19937_64 copy = rng;
    const MatrixX<double> q = random_orthogonal<double>(n, rng);
    std::normal_distribution<double> normal(0.0, 1.0);
    MatrixX<double> g(n, n);
    for (Eigen::Index c = 0; c < n; ++c) {
      for (Eigen::Index r = 0; r < n; ++r) g(r, c) = normal(copy);
    }
    const MatrixX<double> r = q.transpose() * g;
    const double scale = g.norm();
    for (Eigen::Index i = 0; i < n; ++i) {
      CHECK(r(i, i) > 0.0);
      for (Eigen::Index j = 0; j < i; ++j) CHECK(std::abs(r(i, j)) <= 1e-12 * scale);
    }
    CHECK(rng == copy);  // the generator advanced by exactly the n² draws
  }
}

TEST_CASE("reproducible from the caller's generator") {
  std::mt19937_64 a(42);
  std::mt19937_64 b(42);
  const MatrixX<double> qa = random_orthogonal<double>(32, a);
  const MatrixX<double> qb = random_orthogonal<double>(32, b);
  CHECK(qa == qb);
  // The generator was advanced: the next draw is a different matrix.
  const MatrixX<double> next = random_orthogonal<double>(32, a);
  CHECK((next - qa).cwiseAbs().maxCoeff() > 0.1);
  // A different seed gives a different matrix.
  std::mt19937_64 c(43);
  CHECK((random_orthogonal<double>(32, c) - qa).cwiseAbs().maxCoeff() > 0.1);
  // float is the double result rounded, from the same generator state.
  std::mt19937_64 d(42);
  CHECK(random_orthogonal<float>(32, d) == qa.cast<float>());
  // Any std::uniform_random_bit_generator works.
  std::minstd_rand minstd(5);
  const MatrixX<double> qm = random_orthogonal<double>(8, minstd);
  CHECK((qm * qm.transpose() - MatrixX<double>::Identity(8, 8)).cwiseAbs().maxCoeff() <= 1e-12);
  std::mt19937 mt32(5);
  const MatrixX<double> q32 = random_orthogonal<float>(8, mt32).cast<double>();
  CHECK((q32 * q32.transpose() - MatrixX<double>::Identity(8, 8)).cwiseAbs().maxCoeff() <= 1e-6);
}

TEST_CASE("Haar statistics: zero-mean entries and trace (fails without the sign fix)") {
  // For Q Haar on O(n): Q(0, 0) is the first coordinate of a uniform unit
  // vector, E = 0, Var = 1/n, E[Q(0,0)^4] = 3/(n(n+2)); and E[tr Q] = 0,
  // E[(tr Q)^2] = 1 for n ≥ 2 (Diaconis & Shahshahani 1994). Over N draws each
  // sample mean is within 5 standard deviations of its expectation except with
  // probability < 1e-6 (the seed is fixed, so the test is deterministic).
  // Without the sign fix Eigen's Householder QR gives Q(0, 0) = −|G_00|/‖G_0‖ < 0
  // on every draw, a mean of −Γ(2)/(√π·Γ(5/2)) ≈ −0.42 for n = 4, and the mean
  // trace is near −0.8: both checks below fail by a factor of ten (verified by
  // removing the fix).
  constexpr int kDraws = 4000;
  constexpr Eigen::Index kN = 4;
  std::mt19937_64 rng(2024);
  double sum00 = 0.0, sum00_sq = 0.0, sum_tr = 0.0, sum_tr_sq = 0.0;
  for (int t = 0; t < kDraws; ++t) {
    const MatrixX<double> q = random_orthogonal<double>(kN, rng);
    sum00 += q(0, 0);
    sum00_sq += q(0, 0) * q(0, 0);
    sum_tr += q.trace();
    sum_tr_sq += q.trace() * q.trace();
  }
  const double n = static_cast<double>(kN);
  const double draws = kDraws;
  const double mean00 = sum00 / draws;
  CHECK(std::abs(mean00) <= 5.0 * std::sqrt(1.0 / n / draws));
  const double mean_tr = sum_tr / draws;
  CHECK(std::abs(mean_tr) <= 5.0 * std::sqrt(1.0 / draws));
  // Second moments (these hold with or without the sign fix, but not for a
  // wrong distribution, e.g. unnormalised or non-uniform columns).
  const double var00_sq = 3.0 / (n * (n + 2.0)) - 1.0 / (n * n);  // Var(Q(0,0)²)
  CHECK(std::abs(sum00_sq / draws - 1.0 / n) <= 5.0 * std::sqrt(var00_sq / draws));
  // Var((tr Q)²) = E[(tr Q)^4] − 1 = 3 − 1 for n ≥ 4 (Diaconis & Shahshahani:
  // the moments of tr Q match a standard normal's up to order n).
  CHECK(std::abs(sum_tr_sq / draws - 1.0) <= 5.0 * std::sqrt(2.0 / draws));
}

TEST_CASE("bad input gives clear errors") {
  std::mt19937_64 rng(0);
  CHECK_THROWS_WITH_AS(random_orthogonal<double>(0, rng),
                       doctest::Contains("oq::transform::random_orthogonal: n must be positive, got 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(random_orthogonal<float>(-3, rng), doctest::Contains("n must be positive, got -3"),
                       std::invalid_argument);
}
