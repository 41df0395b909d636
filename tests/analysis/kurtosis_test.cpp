#include <oq/analysis/kurtosis.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

using namespace oq::analysis;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {

// Unit roundoff of float64, u = 2^−53: a sum of n terms is off by at most
// about n·u times the sum of their magnitudes (Higham, "Accuracy and
// Stability of Numerical Algorithms", §4.2).
constexpr double kU = std::numeric_limits<double>::epsilon() / 2;

std::vector<double> row_of(const MatrixX<double>& x, Eigen::Index r) {
  std::vector<double> v(static_cast<std::size_t>(x.cols()));
  for (Eigen::Index c = 0; c < x.cols(); ++c) v[static_cast<std::size_t>(c)] = x(r, c);
  return v;
}

// Plain float64 loops, independent of the library's Eigen code: corrected
// two-pass mean, then Σd² and Σd⁴ without any rescaling. Only called on
// non-constant rows of moderate magnitude.
double kurtosis_ref(const std::vector<double>& v, double epsilon) {
  const double n = static_cast<double>(v.size());
  double sum = 0;
  for (double x : v) sum += x;
  double mean = sum / n;
  double residual = 0;
  for (double x : v) residual += x - mean;
  mean += residual / n;
  double s2 = 0, s4 = 0;
  for (double x : v) {
    const double d = x - mean;
    s2 += d * d;
    s4 += (d * d) * (d * d);
  }
  const double m2 = s2 / n;
  return (s4 / n) / (m2 * m2 + epsilon);
}

double std_dev_ref(const std::vector<double>& v) {
  double mean = 0;
  for (double x : v) mean += x / static_cast<double>(v.size());
  double s2 = 0;
  for (double x : v) s2 += (x - mean) * (x - mean);
  return std::sqrt(s2 / static_cast<double>(v.size()));
}

// Central differences (f(x + h·e_i) − f(x − h·e_i)) / 2h for every i.
template <class F>
std::vector<double> fd_gradient(F f, std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double up = f(x);
    x[i] = xi - h;
    const double down = f(x);
    x[i] = xi;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Normwise relative error max_i |a_i − b_i| / max_i |b_i|: entries of a
// gradient that are near zero are judged on the scale of the whole vector.
template <class A>
double relative_error(const A& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a(static_cast<Eigen::Index>(i))) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

MatrixX<double> uniform(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  MatrixX<double> m(rows, cols);
  for (Eigen::Index c = 0; c < cols; ++c)
    for (Eigen::Index r = 0; r < rows; ++r) m(r, c) = dist(rng);
  return m;
}

// Asymptotic variance times n of the sample kurtosis b2 = m4/m2² for a
// symmetric distribution with central moments μ2, μ4, μ6, μ8 (delta method on
// (m2, m4); Kendall & Stuart, "The Advanced Theory of Statistics", §10.5):
// μ8/μ2⁴ − 4·μ4·μ6/μ2⁵ + 4·μ4³/μ2⁶ − μ4²/μ2⁴.
double kurtosis_variance_n(double mu2, double mu4, double mu6, double mu8) {
  return mu8 / std::pow(mu2, 4) - 4 * mu4 * mu6 / std::pow(mu2, 5) + 4 * std::pow(mu4, 3) / std::pow(mu2, 6) -
         mu4 * mu4 / std::pow(mu2, 4);
}

// The rows the gradient tests use, all of length 64: Gaussian, heavy-tailed,
// Gaussian with one huge outlier, nearly constant (1 + 1e-3·noise), and a
// Gaussian row shifted far from zero.
MatrixX<double> gradient_rows() {
  MatrixX<double> x(5, 64);
  x.row(0) = oq::test::gaussian<double>(1, 64, 11);
  x.row(1) = oq::test::heavy_tailed<double>(1, 64, 12);
  x.row(2) = oq::test::gaussian<double>(1, 64, 13);
  x(2, 17) = 1e4;
  x.row(3) = (1.0 + 1e-3 * oq::test::gaussian<double>(1, 64, 14).array()).matrix();
  x.row(4) = (250.0 + oq::test::gaussian<double>(1, 64, 15).array()).matrix();
  return x;
}

}  // namespace

TEST_CASE("row_kurtosis matches a plain float64 loop") {
  const MatrixX<double> x = oq::test::heavy_tailed<double>(6, 97, 1);
  // Each moment is a sum of n non-negative terms (relative error ≤ n·u) over
  // deviations accurate to u·max|d|; K = m4/m2² combines three of them.
  const double tol = 8 * static_cast<double>(x.cols()) * kU;
  for (double epsilon : {0.0, 0.5}) {
    CAPTURE(epsilon);
    const Eigen::VectorXd k = row_kurtosis(x, epsilon);
    REQUIRE(k.size() == x.rows());
    for (Eigen::Index r = 0; r < x.rows(); ++r)
      CHECK(k(r) == doctest::Approx(kurtosis_ref(row_of(x, r), epsilon)).epsilon(tol));
  }

  // float input is reduced in double and rounded once at the end.
  const MatrixX<float> xf = x.cast<float>();
  const Eigen::VectorXf kf = row_kurtosis(xf);
  const MatrixX<double> xf_wide = xf.cast<double>();
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    CHECK(kf(r) ==
          doctest::Approx(kurtosis_ref(row_of(xf_wide, r), 0.0)).epsilon(std::numeric_limits<float>::epsilon()));

  // Expressions and row-major storage: the same values, and gradients keep
  // the storage order of the input.
  const RowMatrixX<double> xr = x;
  CHECK(row_kurtosis(xr).isApprox(row_kurtosis(x), tol));
  CHECK(row_kurtosis(x.transpose().transpose().block(1, 0, 3, 97)).isApprox(row_kurtosis(x).segment(1, 3), tol));
  static_assert(std::is_same_v<decltype(row_kurtosis_grad(xr)), RowMatrixX<double>>);
  static_assert(std::is_same_v<decltype(row_kurtosis_grad(xf)), MatrixX<float>>);
}

TEST_CASE("Gaussian rows have kurtosis 3 and uniform rows 1.8 within the standard error") {
  const Eigen::Index n = 200000;
  // The variance formula gives the textbook 24/n for the Gaussian
  // (μ2, μ4, μ6, μ8 = 1, 3, 15, 105) and 1.3165/n for U(−1, 1) (1/3, 1/5, 1/7, 1/9).
  CHECK(kurtosis_variance_n(1, 3, 15, 105) == doctest::Approx(24.0));
  const double se_gauss = std::sqrt(kurtosis_variance_n(1, 3, 15, 105) / static_cast<double>(n));
  const double se_uniform = std::sqrt(kurtosis_variance_n(1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9) / static_cast<double>(n));
  // E[b2] = 3(n − 1)/(n + 1) for Gaussian rows: the bias, 3e-5, is far below
  // the standard error (0.011). Five standard errors: a seeded draw outside
  // them has probability below 1e-6.
  const Eigen::VectorXd kg = row_kurtosis(oq::test::gaussian<double>(3, n, 21, 2.5));
  const Eigen::VectorXd ku = row_kurtosis(uniform(3, n, 22));
  for (Eigen::Index r = 0; r < 3; ++r) {
    CHECK(std::abs(kg(r) - 3.0) < 5 * se_gauss);
    CHECK(std::abs(ku(r) - 1.8) < 5 * se_uniform);
  }
  // One outlier dominates every moment: a single spike among n − 1 zeros has
  // K = (n² − 3n + 3)/(n − 1) ≈ n − 2, whatever its height.
  Eigen::RowVectorXd spike = Eigen::RowVectorXd::Zero(64);
  spike(5) = 7.0;
  CHECK(row_kurtosis(spike)(0) == doctest::Approx((64.0 * 64 - 3 * 64 + 3) / 63));
}

TEST_CASE("ordinary rows take the plain float64 formulas, bit for bit") {
  // Rows of ordinary magnitude are neither pre-scaled nor range-checked, and
  // the power-of-two scaling of the deviations commutes with every rounding:
  // K and the gradient are exactly the unscaled formulas, written here with
  // the same Eigen reductions (corrected two-pass mean, then m2, m3, m4).
  MatrixX<double> x = oq::test::heavy_tailed<double>(5, 300, 41);
  x.row(4).array() += 250.0;  // far from zero
  const double n = static_cast<double>(x.cols());
  const double lambda = 1e-5;
  const MatrixX<float> xf = x.cast<float>();
  const Eigen::VectorXd k = row_kurtosis(x);
  const MatrixX<double> g = kurtosis_regularizer_grad(x, lambda);
  const Eigen::VectorXf kf = row_kurtosis(xf);
  const MatrixX<float> gf = kurtosis_regularizer_grad(xf, lambda);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    CAPTURE(r);
    for (bool as_float : {false, true}) {
      CAPTURE(as_float);
      Eigen::ArrayXd d = as_float ? xf.row(r).transpose().cast<double>().array().eval() : x.row(r).transpose().array();
      d -= d.mean();
      d -= d.mean();
      const Eigen::ArrayXd d2 = d.square();
      const double m2 = d2.mean(), m3 = (d2 * d).mean(), m4 = d2.square().mean();
      const double denom = m2 * m2;
      const Eigen::ArrayXd grad = lambda * (4.0 / (n * denom)) * (d.cube() - m3 - (m4 * m2 / denom) * d);
      if (as_float) {
        CHECK(kf(r) == static_cast<float>(m4 / denom));
        CHECK(gf.row(r) == grad.cast<float>().matrix().transpose());
      } else {
        CHECK(k(r) == m4 / denom);
        CHECK(g.row(r) == grad.matrix().transpose());
      }
    }
  }
}

TEST_CASE("kurtosis is invariant under shift and scale") {
  const MatrixX<double> x = oq::test::heavy_tailed<double>(4, 300, 31);
  const double a = -3.7, b = 50.0;
  const MatrixX<double> y = (a * x.array() + b).matrix();
  const Eigen::VectorXd kx = row_kurtosis(x);
  const Eigen::VectorXd ky = row_kurtosis(y);
  const MatrixX<double> gy = row_kurtosis_grad(y);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    // Forming y rounds each entry by at most 2u·(|a·x| + |b|), which moves K by
    // at most ‖∇K‖₁ times that; both evaluations add their own O(n·u·K).
    const double input_error = 2 * kU * ((a * x.row(r).array()).abs() + std::abs(b)).maxCoeff();
    const double tol = 16 * static_cast<double>(x.cols()) * kU * kx(r) + gy.row(r).cwiseAbs().sum() * input_error;
    CHECK(std::abs(ky(r) - kx(r)) <= tol);
  }

  // Scaling by a power of two commutes with every rounding, so K is exactly
  // the same bits even where d⁴ would overflow (2^600·x: d⁴ ≈ 1e722) or
  // underflow (2^−600·x: d⁴ ≈ 1e−722) in float64; the gradient scales by
  // exactly 2^∓600.
  const MatrixX<double> big = std::ldexp(1.0, 600) * x;
  const MatrixX<double> tiny = std::ldexp(1.0, -600) * x;
  CHECK(row_kurtosis(big) == kx);
  CHECK(row_kurtosis(tiny) == kx);
  const MatrixX<double> gx = row_kurtosis_grad(x);
  CHECK(row_kurtosis_grad(big) == (std::ldexp(1.0, -600) * gx).eval());
  CHECK(row_kurtosis_grad(tiny) == (std::ldexp(1.0, 600) * gx).eval());

  // Up to the ends of the range: max|x| just below DBL_MAX, where the mean's
  // sum and x − mean would overflow unless the row is scaled before the mean.
  // K keeps its bits; the gradient is 2^−k·gx rounded once (it is subnormal
  // in places, and a single correctly rounded product is what the test forms).
  int e_max = 0;
  std::frexp(x.cwiseAbs().maxCoeff(), &e_max);
  const int k = 1024 - e_max;  // max|x·2^k| ∈ [2^1023, 2^1024)
  const MatrixX<double> huge = std::ldexp(1.0, k) * x;
  CHECK(row_kurtosis(huge) == kx);
  CHECK(row_kurtosis_grad(huge) == (std::ldexp(1.0, -k) * gx).eval());
}

TEST_CASE("kurtosis at the ends of the float64 range, against hand-derived values") {
  // {a, a, −a} has mean a/3 and d = (2, 2, −4)·a/3: m2 = 8/9·a², m4 = 32/27·a⁴,
  // K = 3/2. With a = 1.6e308 the sum of the row overflows.
  Eigen::RowVectorXd three(3);
  three << 1.6e308, 1.6e308, -1.6e308;
  CHECK(row_kurtosis(three)(0) == doctest::Approx(1.5).epsilon(1e-15));
  // {a, a, −a, 0}: mean a/4, d = (3, 3, −5, −1)·a/4, so in units of a/4 m2 = 11,
  // m3 = −18, m4 = 197, K = 197/121, m4·m2/D = 197/11, and ∂K/∂x_i =
  // 4/(4·121)·(d_i³ + 18 − 197/11·d_i)·(4/a) = (−384, −384, −768, 1536)/(1331·a).
  // These are subnormal for a = 1.6e308 (≈ 1e−309, about 15 significant digits).
  const double a = 1.6e308;
  Eigen::RowVectorXd four(4);
  four << a, a, -a, 0.0;
  CHECK(row_kurtosis(four)(0) == doctest::Approx(197.0 / 121).epsilon(1e-15));
  const Eigen::RowVectorXd g = row_kurtosis_grad(four);
  const double expected[] = {-384.0, -384.0, -768.0, 1536.0};
  for (Eigen::Index i = 0; i < 4; ++i) {
    CAPTURE(i);
    const double want = expected[i] / 1331.0 / a;
    CHECK(std::abs(g(i) - want) <= 1e-13 * std::abs(want));
  }

  // Integer multiples of the smallest subnormal are exact, and scaling them by
  // 2^1071 is exact too: K must be the same bits as the integer row's, though
  // the tiny row's mean, 13/8·denorm_min, is not representable.
  const double t = std::numeric_limits<double>::denorm_min();
  Eigen::RowVectorXd ints(8);
  ints << 0, 1, 2, 0, 5, -3, 7, 1;
  const Eigen::RowVectorXd tiny = t * ints;
  CHECK(row_kurtosis(tiny)(0) == row_kurtosis(ints)(0));
  CHECK(row_kurtosis(t * four.cwiseSign())(0) == doctest::Approx(197.0 / 121).epsilon(1e-15));
  // Its gradient is ≈ 2^1074 times the integer row's: beyond float64, so an
  // error (ε > 0 bounds it; see the next test case), not ±inf.
  CHECK_THROWS_WITH_AS(row_kurtosis_grad(tiny), doctest::Contains("use epsilon > 0"), std::domain_error);
}

TEST_CASE("a gradient beyond the scalar type's range is an error, not inf") {
  // {0, t, 2t, 0}: mean 3t/4, d = (−3, 1, 5, −3)·t/4; in units of t/4 m2 = 11,
  // m3 = 18, m4 = 197, so K = 197/121 and ∂K/∂x_i = 4/(4·121)·(d_i³ − 18 −
  // 197/11·d_i)·(4/t) = (384, −1536, 768, 384)/(1331·t). With ε = 0 it grows as
  // 1/t: for t = the smallest float subnormal (1.4e−45) its largest entry is
  // 8.2e44, above FLT_MAX ≈ 3.4e38, and a cast would give ±inf.
  const float t = std::numeric_limits<float>::denorm_min();
  Eigen::RowVectorXf f(4);
  f << 0.0f, t, 2 * t, 0.0f;
  CHECK(row_kurtosis(f)(0) == doctest::Approx(197.0 / 121).epsilon(1e-6));
  CHECK_THROWS_WITH_AS(row_kurtosis_grad(f), doctest::Contains("oq::analysis::row_kurtosis_grad"),
                       std::domain_error);
  CHECK_THROWS_WITH_AS(row_kurtosis_grad(f), doctest::Contains("use epsilon > 0 or double"), std::domain_error);
  CHECK_THROWS_AS(kurtosis_regularizer_grad(f, 1e-5), std::domain_error);  // 1e−5 · 8.2e44 still overflows
  Eigen::RowVectorXf out(4);
  CHECK_THROWS_AS(kurtosis_regularizer_grad_into(f, 1e-5, 0.0, out), std::domain_error);
  // In double the same values have a representable gradient: the hand-derived one.
  const Eigen::RowVectorXd g = row_kurtosis_grad(f.cast<double>().eval());
  const double expected[] = {384.0, -1536.0, 768.0, 384.0};
  for (Eigen::Index i = 0; i < 4; ++i) {
    CAPTURE(i);
    const double want = expected[i] / 1331.0 / static_cast<double>(t);
    CHECK(std::abs(g(i) - want) <= 1e-13 * std::abs(want));
  }
  // ε > 0 bounds the gradient (D ≥ ε): representable in float again.
  CHECK(row_kurtosis_grad(f, 1e-3).allFinite());
  // A small but representable gradient (≈ 1e20) still comes back as the
  // float64 gradient rounded once.
  Eigen::RowVectorXf h(4);
  h << 0.0f, 1e-20f, 2e-20f, 0.0f;
  const Eigen::RowVectorXf gh = row_kurtosis_grad(h);
  const Eigen::RowVectorXd gd = row_kurtosis_grad(h.cast<double>().eval());
  CHECK(gh == gd.cast<float>());
}

TEST_CASE("kurtosis gradient equals central finite differences") {
  const MatrixX<double> x = gradient_rows();
  for (double eps_over_m2_sq : {0.0, 0.5}) {
    // ε in units of each row's m2², so that it matters on every row (the
    // nearly constant row has m2² ≈ 1e-12).
    CAPTURE(eps_over_m2_sq);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      CAPTURE(r);
      const std::vector<double> v = row_of(x, r);
      const double sigma = std_dev_ref(v);
      const double epsilon = eps_over_m2_sq * std::pow(sigma, 4);
      const Eigen::RowVectorXd g = row_kurtosis_grad(x.row(r), epsilon);
      // K depends on x only through (x − mean)/σ, so its k-th derivative
      // scales as σ^−k: with h = 1e-4·σ the truncation error of central
      // differences is ~ (h/σ)² = 1e-8 relative, and the rounding error
      // ~ n·u·K/(h/σ) = 1e-10·K in units of 1/σ. The outlier row is the hard
      // case (K ≈ 60 while d³ and (m4·m2/D)·d cancel in its gradient); a
      // smaller h (1e-6·σ) would be dominated by rounding there.
      const std::vector<double> fd = fd_gradient(
          [&](const std::vector<double>& p) { return kurtosis_ref(p, epsilon); }, v, 1e-4 * sigma);
      CHECK(relative_error(g, fd) < 1e-6);
    }
  }
  // The whole matrix at once gives the same rows (no cross-talk).
  const MatrixX<double> all = row_kurtosis_grad(x);
  for (Eigen::Index r = 0; r < x.rows(); ++r) CHECK(all.row(r) == row_kurtosis_grad(x.row(r)));

  // float input: the float64 gradient of the same values, rounded once.
  const MatrixX<float> xf = oq::test::heavy_tailed<float>(3, 50, 41);
  const MatrixX<float> gf = row_kurtosis_grad(xf);
  const MatrixX<double> gd = row_kurtosis_grad(xf.cast<double>().eval());
  for (Eigen::Index r = 0; r < xf.rows(); ++r)
    CHECK((gf.row(r).cast<double>() - gd.row(r)).cwiseAbs().maxCoeff() <=
          std::numeric_limits<float>::epsilon() * gd.row(r).cwiseAbs().maxCoeff());
}

TEST_CASE("kurtosis gradient sums to zero and is orthogonal to x when epsilon = 0") {
  MatrixX<double> x(5, 1000);
  x.row(0) = oq::test::gaussian<double>(1, 1000, 51);
  x.row(1) = (100.0 + oq::test::heavy_tailed<double>(1, 1000, 52).array()).matrix();
  x.row(2) = (-3.0 + 1e-2 * oq::test::gaussian<double>(1, 1000, 53).array()).matrix();
  x.row(3) = oq::test::heavy_tailed<double>(1, 1000, 54);
  x(3, 999) = 5e3;
  // |mean|/σ = 1e8: the rounding error of a one-pass mean (~n·u·1e8 ≈ 1e-5·σ)
  // would leave Σ d far from zero; the corrected two-pass mean removes it.
  x.row(4) = (1e8 + oq::test::gaussian<double>(1, 1000, 55).array()).matrix();
  const double n = static_cast<double>(x.cols());
  for (double epsilon : {0.0, 0.25}) {
    CAPTURE(epsilon);
    const MatrixX<double> g = row_kurtosis_grad(x, epsilon);
    const Eigen::VectorXd k = row_kurtosis(x, epsilon);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      CAPTURE(r);
      const Eigen::ArrayXd gr = g.row(r).transpose().array();
      const Eigen::ArrayXd xr = x.row(r).transpose().array();
      const double mean = xr.mean();
      const Eigen::ArrayXd d = xr - mean;
      const double m2 = d.square().mean(), m3 = d.cube().mean(), m4 = d.square().square().mean();
      const double denom = m2 * m2 + epsilon;
      // g_i = 4/(n·D)·(d_i³ − m3 − (m4·m2/D)·d_i) is computed with an error of
      // a few u times the magnitudes of its three terms, t_i below, not times
      // |g_i|: the terms cancel (for an outlier, d³ ≈ (m4/m2)·d). The sums
      // then add at most ~n·u times the sum of their terms' magnitudes.
      const Eigen::ArrayXd t = 4 / (n * denom) * (d.abs().cube() + std::abs(m3) + m4 * m2 / denom * d.abs());
      // Σ g_i = 4/(n·D)·(Σd³ − n·m3 − (m4·m2/D)·Σd) = 0.
      CHECK(std::abs(gr.sum()) <= 4 * n * kU * t.sum());
      // Σ x_i·g_i = Σ d_i·g_i + mean·Σ g_i, and Σ d_i·g_i = 4/D·m4·(1 − m2²/D)
      // = 4·K·ε/D: zero for ε = 0 (scale invariance), else 4·K·ε/(m2² + ε).
      const double expected = 4 * k(r) * epsilon / denom;
      const double tol = 4 * n * kU * ((xr.abs() + std::abs(mean)) * t).sum();
      CHECK(std::abs((xr * gr).sum() - expected) <= tol);
    }
  }
}

TEST_CASE("constant rows have kurtosis 0 and gradient 0 for every epsilon") {
  // Rows 0–2 of adversarial() are 0, 0.37 and −5.5: their float64 mean is not
  // always the value itself, so this also pins that rounding noise in the
  // mean is not mistaken for spread.
  const MatrixX<double> x = oq::test::adversarial<double>(6, 7, 61);
  const MatrixX<float> xf = oq::test::adversarial<float>(6, 7, 61);
  for (double epsilon : {0.0, 1e-6, 2.0}) {
    CAPTURE(epsilon);
    const Eigen::VectorXd k = row_kurtosis(x, epsilon);
    const MatrixX<double> g = row_kurtosis_grad(x, epsilon);
    const Eigen::VectorXf kf = row_kurtosis(xf, epsilon);
    const MatrixX<float> gf = row_kurtosis_grad(xf, epsilon);
    for (Eigen::Index r = 0; r < 3; ++r) {
      CHECK(k(r) == 0.0);
      CHECK(g.row(r).isZero(0.0));
      CHECK(kf(r) == 0.0f);
      CHECK(gf.row(r).isZero(0.0f));
    }
    for (Eigen::Index r = 3; r < x.rows(); ++r) CHECK(k(r) > 0.0);
    CHECK(g.allFinite());
    CHECK(kurtosis_regularizer(x.topRows(3), 1.0, epsilon) == 0.0);
  }
  // A single column is a constant row of length 1.
  CHECK(row_kurtosis(Eigen::VectorXd::LinSpaced(4, 1.0, 4.0)).isZero(0.0));
  // A row a hair away from constant is not constant: with ε = 0 its kurtosis
  // is that of its pattern, here +δ and −δ among n − 2 equal entries, whose
  // K = (2δ⁴/n)/(2δ²/n)² = n/2.
  Eigen::RowVectorXd almost = Eigen::RowVectorXd::Constant(8, 0.37);
  almost(0) = std::nextafter(0.37, 1.0);
  almost(1) = std::nextafter(0.37, 0.0);
  CHECK(row_kurtosis(almost)(0) == doctest::Approx(4.0));
}

TEST_CASE("kurtosis regularizer and its gradient") {
  MatrixX<double> y = oq::test::heavy_tailed<double>(5, 40, 71);
  y.row(2).setConstant(1.5);
  y(4, 3) = 300.0;
  for (double lambda : {1e-5, 0.7}) {
    for (double epsilon : {0.0, 0.3}) {
      CAPTURE(lambda);
      CAPTURE(epsilon);
      auto value_ref = [&](const MatrixX<double>& m) {
        double sum = 0;
        for (Eigen::Index r = 0; r < m.rows(); ++r)
          if (r != 2) sum += kurtosis_ref(row_of(m, r), epsilon);  // row 2 is constant: K = 0
        return lambda * sum;
      };
      const double value = kurtosis_regularizer(y, lambda, epsilon);
      // Four rows of 40 entries, each K within 8·n·u (first test case).
      CHECK(value == doctest::Approx(value_ref(y)).epsilon(4 * 8 * 40 * kU));
      const MatrixX<double> g = kurtosis_regularizer_grad(y, lambda, epsilon);
      CHECK(g.row(2).isZero(0.0));
      // Finite differences of the full sum over every entry (rows other than
      // the constant one), so that cross-row terms would show up.
      for (Eigen::Index r = 0; r < y.rows(); ++r) {
        if (r == 2) continue;
        CAPTURE(r);
        const double h = 1e-5 * std_dev_ref(row_of(y, r));
        std::vector<double> fd(static_cast<std::size_t>(y.cols()));
        for (Eigen::Index c = 0; c < y.cols(); ++c) {
          MatrixX<double> p = y;
          p(r, c) = y(r, c) + h;
          const double up = value_ref(p);
          p(r, c) = y(r, c) - h;
          fd[static_cast<std::size_t>(c)] = (up - value_ref(p)) / (2 * h);
        }
        CHECK(relative_error(g.row(r), fd) < 1e-6);
      }
      // λ multiplies the plain kurtosis gradient: (λ·c)·t against λ·(c·t),
      // two roundings each, so at most 4u apart entry by entry.
      CHECK(g.isApprox(lambda * row_kurtosis_grad(y, epsilon), 8 * kU));
    }
  }
  CHECK(kurtosis_regularizer(y, 0.0) == 0.0);
  CHECK(kurtosis_regularizer_grad(y, 0.0).isZero(0.0));
  // float: computed in double, rounded once.
  const MatrixX<float> yf = y.cast<float>();
  const double wide = kurtosis_regularizer(yf.cast<double>().eval(), 1e-5);
  CHECK(kurtosis_regularizer(yf, 1e-5) == doctest::Approx(wide).epsilon(std::numeric_limits<float>::epsilon()));
}

TEST_CASE("kurtosis functions reject bad input") {
  const MatrixX<double> x = oq::test::gaussian<double>(3, 8, 81);
  CHECK_THROWS_WITH_AS(row_kurtosis(x, -1.0), doctest::Contains("epsilon must be finite and >= 0, got -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(row_kurtosis_grad(x, std::numeric_limits<double>::quiet_NaN()),
                       doctest::Contains("oq::analysis::row_kurtosis_grad: epsilon must be finite"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(row_kurtosis(x, std::numeric_limits<double>::infinity()),
                       doctest::Contains("epsilon must be finite"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(kurtosis_regularizer(x, -1e-5), doctest::Contains("lambda must be finite and >= 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kurtosis_regularizer_grad(x, std::numeric_limits<double>::infinity()),
                       doctest::Contains("lambda must be finite"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(kurtosis_regularizer_grad(x, 1e-5, -0.5), doctest::Contains("epsilon must be"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(row_kurtosis(MatrixX<double>(0, 4)), doctest::Contains("x must be non-empty, got 0 x 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kurtosis_regularizer(MatrixX<double>(2, 0), 1.0),
                       doctest::Contains("y must be non-empty, got 2 x 0"), std::invalid_argument);
  MatrixX<double> bad = x;
  bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(row_kurtosis(bad), doctest::Contains("x(1, 2) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(row_kurtosis_grad(bad), doctest::Contains("x(1, 2) is nan"), std::domain_error);
  bad(1, 2) = -std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(kurtosis_regularizer(bad, 1.0), doctest::Contains("y(1, 2) is -inf"), std::domain_error);
  CHECK_THROWS_WITH_AS(kurtosis_regularizer_grad(bad, 1.0), doctest::Contains("y(1, 2) is -inf"), std::domain_error);
}

TEST_CASE("kurtosis_regularizer_grad_into writes the same values into the caller's buffer") {
  const Eigen::MatrixXd y = oq::test::heavy_tailed<double>(6, 40, 99);
  Eigen::MatrixXd big = Eigen::MatrixXd::Constant(10, 40, 7.0);
  oq::analysis::kurtosis_regularizer_grad_into(y, 1e-5, 0.0, big.middleRows(2, 6));
  CHECK(big.middleRows(2, 6) == oq::analysis::kurtosis_regularizer_grad(y, 1e-5));
  CHECK((big.topRows(2).array() == 7.0).all());
  Eigen::MatrixXd wrong(5, 40);
  CHECK_THROWS_WITH_AS(oq::analysis::kurtosis_regularizer_grad_into(y, 1e-5, 0.0, wrong),
                       doctest::Contains("out must be 6 x 40"), std::invalid_argument);
}
