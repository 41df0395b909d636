#include <oq/quant/learned_clip.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

using namespace oq::quant;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {

constexpr double kU = std::numeric_limits<double>::epsilon() / 2;  // float64 unit roundoff

double levels(int bits) { return std::ldexp(1.0, bits) - 1; }

// Plain loop of docs/design.md §3's forward: rne((clamp(x, lo, hi) − lo)·s)/s + lo.
double fake_quantize_ref(double x, double lo, double hi, int bits) {
  const double s = levels(bits) / (hi - lo);
  return std::nearbyint((std::clamp(x, lo, hi) - lo) * s) / s + lo;
}

// ρ = rne(u) − u at the evaluation point: the part of the rounding that the
// straight-through estimator treats as a constant (stop_grad).
double frozen_rho(double x, double lo, double hi, int bits) {
  const double u = (std::clamp(x, lo, hi) - lo) * (levels(bits) / (hi - lo));
  return std::nearbyint(u) - u;
}

// The surrogate autograd differentiates, with ρ frozen and rne replaced by
// the identity: (u + ρ)/s + lo, u = (clamp(x, lo, hi) − lo)·s. Written in
// that form (not simplified) so that the test does not assume the algebra
// the header's comment derives.
double surrogate(double x, double lo, double hi, int bits, double rho) {
  const double s = levels(bits) / (hi - lo);
  const double u = (std::clamp(x, lo, hi) - lo) * s;
  return (u + rho) / s + lo;
}

// Moves every entry of x that lies within `band` of lo or hi out of that band,
// so that finite differences with steps below `band` never cross a clamp edge.
void keep_off_edges(MatrixX<double>& x, double lo, double hi, double band) {
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    double& v = x.data()[i];
    if (std::abs(v - lo) < band) v = lo + (v < lo ? -band : band);
    if (std::abs(v - hi) < band) v = hi + (v < hi ? -band : band);
  }
}

}  // namespace

TEST_CASE("learned clip forward matches a plain loop and errs by at most half a step") {
  const MatrixX<double> x = oq::test::gaussian<double>(5, 60, 1, 1.5);
  for (int bits : {2, 4, 8}) {
    for (const std::pair<double, double>& bounds : {std::pair{-1.1, 1.4}, std::pair{0.3, 2.0}, std::pair{-3.0, -0.5}}) {
      const double lo = bounds.first;
      const double hi = bounds.second;
      CAPTURE(bits);
      CAPTURE(lo);
      CAPTURE(hi);
      const MatrixX<double> y = learned_clip_fake_quantize(x, lo, hi, bits);
      const double step = (hi - lo) / levels(bits);
      // A few roundings of values of magnitude ≤ |lo| + |hi|.
      const double rounding = 8 * kU * (std::abs(lo) + std::abs(hi));
      int inside = 0;
      for (Eigen::Index r = 0; r < x.rows(); ++r) {
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
          CHECK(std::abs(y(r, c) - fake_quantize_ref(x(r, c), lo, hi, bits)) <= rounding);
          if (x(r, c) > lo && x(r, c) < hi) {
            CHECK(std::abs(y(r, c) - x(r, c)) <= step / 2 + rounding);
            ++inside;
          } else {
            CHECK(std::abs(y(r, c) - (x(r, c) <= lo ? lo : hi)) <= rounding);
          }
          // x̂ is on the grid lo + k·step, k ∈ [0, 2^b − 1].
          const double k = (y(r, c) - lo) / step;
          CHECK(std::abs(k - std::nearbyint(k)) <= 1e-9);
          CHECK(std::nearbyint(k) >= 0);
          CHECK(std::nearbyint(k) <= levels(bits));
        }
      }
      CHECK(inside > 30);
      CHECK(inside < x.size());
    }
  }

  // float, row-major: the same formula in float arithmetic, same storage order.
  const RowMatrixX<float> xf = oq::test::gaussian<float>(3, 33, 2);
  const RowMatrixX<float> yf = learned_clip_fake_quantize(xf, -0.8f, 1.2f, 4);
  static_assert(std::is_same_v<decltype(learned_clip_fake_quantize(xf, -0.8f, 1.2f, 4)), RowMatrixX<float>>);
  const float sf = 15.0f / (1.2f - -0.8f);
  for (Eigen::Index r = 0; r < xf.rows(); ++r)
    for (Eigen::Index c = 0; c < xf.cols(); ++c)
      CHECK(std::abs(yf(r, c) - (std::nearbyint((std::clamp(xf(r, c), -0.8f, 1.2f) + 0.8f) * sf) / sf - 0.8f)) <=
            8 * std::numeric_limits<float>::epsilon());
}

TEST_CASE("per-row clip bounds quantize each row with its own range") {
  const MatrixX<double> x = oq::test::heavy_tailed<double>(4, 50, 3);
  const Eigen::VectorXd lo = (Eigen::VectorXd(4) << -1.0, -2.5, 0.1, -0.4).finished();
  const Eigen::VectorXd hi = (Eigen::VectorXd(4) << 1.0, 0.5, 3.0, 0.4).finished();
  const MatrixX<double> g = oq::test::gaussian<double>(4, 50, 4);
  const MatrixX<double> y = learned_clip_fake_quantize(x, lo, hi, 3);
  const auto grad = learned_clip_grad(x, lo, hi, 3, g);
  static_assert(std::is_same_v<decltype(grad.clip_lo), Eigen::VectorXd>);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    // Row r alone, per-tensor, gives the same values bit for bit: the per-row
    // clip is the per-tensor one applied row by row.
    CHECK(y.row(r) == learned_clip_fake_quantize(x.row(r), lo(r), hi(r), 3));
    const auto row_grad = learned_clip_grad(x.row(r), lo(r), hi(r), 3, g.row(r));
    CHECK(grad.x.row(r) == row_grad.x);
    CHECK(grad.clip_lo(r) == row_grad.clip_lo);
    CHECK(grad.clip_hi(r) == row_grad.clip_hi);
  }
  // The per-tensor gradient of a bound is the sum over rows of the per-row one.
  const auto whole = learned_clip_grad(x, -1.0, 1.0, 3, g);
  const auto split = learned_clip_grad(x, Eigen::VectorXd::Constant(4, -1.0), Eigen::VectorXd::Constant(4, 1.0), 3, g);
  CHECK(whole.x == split.x);
  CHECK(whole.clip_lo == doctest::Approx(split.clip_lo.sum()).epsilon(4 * 4 * kU));
  CHECK(whole.clip_hi == doctest::Approx(split.clip_hi.sum()).epsilon(4 * 4 * kU));
}

TEST_CASE("learned clip gradients equal finite differences of the straight-through surrogate") {
  const double band = 1e-2;  // no entry within `band` of a bound
  const double h = 1e-4;     // FD step, below band: no clamp branch changes
  MatrixX<double> x = oq::test::gaussian<double>(6, 40, 5, 1.3);
  const MatrixX<double> g = oq::test::gaussian<double>(6, 40, 6);
  const double lo0 = -1.1, hi0 = 1.4;
  keep_off_edges(x, lo0, hi0, band);
  for (int bits : {2, 4, 8}) {
    CAPTURE(bits);
    const auto grad = learned_clip_grad(x, lo0, hi0, bits, g);

    // ∂/∂x, entry by entry: the surrogate with ρ frozen at x.
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      const double xi = x.data()[i];
      const double rho = frozen_rho(xi, lo0, hi0, bits);
      const double fd = g.data()[i] *
                        (surrogate(xi + h, lo0, hi0, bits, rho) - surrogate(xi - h, lo0, hi0, bits, rho)) / (2 * h);
      // The surrogate is linear in x away from the edges (slope 1 inside, 0
      // outside), so the difference quotient is exact up to a few roundings
      // of values of size |x| + |lo| + |hi|, divided by 2h.
      CHECK(std::abs(grad.x.data()[i] - fd) <= 8 * kU * (std::abs(xi) + 3) / h * std::abs(g.data()[i]));
    }

    // ∂/∂c− and ∂/∂c+: Σ_i g_i·(surrogate) with every ρ_i frozen at (lo0, hi0).
    auto loss = [&](double lo, double hi) {
      double sum = 0;
      for (Eigen::Index i = 0; i < x.size(); ++i)
        sum += g.data()[i] * surrogate(x.data()[i], lo, hi, bits, frozen_rho(x.data()[i], lo0, hi0, bits));
      return sum;
    };
    const double fd_lo = (loss(lo0 + h, hi0) - loss(lo0 - h, hi0)) / (2 * h);
    const double fd_hi = (loss(lo0, hi0 + h) - loss(lo0, hi0 - h)) / (2 * h);
    // The loss is linear in each bound (fixed branches), so FD is exact but
    // for the rounding of a sum of 240 terms of size ≤ |g|·2: ≈ 240·u·Σ|g|·2/2h
    // at worst, below 1e-9; relative to gradients of order 1 that is < 1e-6.
    CHECK(grad.clip_lo == doctest::Approx(fd_lo).epsilon(1e-6).scale(0));
    CHECK(grad.clip_hi == doctest::Approx(fd_hi).epsilon(1e-6).scale(0));

    // The rounding terms matter: without them (pure PACT) the bound gradients
    // would be Σ of clipped g only, which is measurably different here.
    const Eigen::ArrayXXd xa = x.array();
    const double pact_hi = (xa >= hi0).select(g.array(), 0.0).sum();
    CHECK(std::abs(grad.clip_hi - pact_hi) > 1e-3);

    // Each entry's three partials sum to its g (shift equivariance), so the
    // totals do too, up to the rounding of the sums.
    CHECK(std::abs(grad.x.sum() + grad.clip_lo + grad.clip_hi - g.sum()) <=
          4 * static_cast<double>(x.size()) * kU * g.cwiseAbs().sum());
    CHECK((xa <= lo0).count() > 5);
    CHECK((xa >= hi0).count() > 5);
  }

  // Per-row bounds: finite differences of one row's bounds.
  const Eigen::VectorXd lo = Eigen::VectorXd::LinSpaced(6, -1.5, -0.5);
  const Eigen::VectorXd hi = Eigen::VectorXd::LinSpaced(6, 0.6, 1.6);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    MatrixX<double> row = x.row(r);
    keep_off_edges(row, lo(r), hi(r), band);
    x.row(r) = row;
  }
  const auto grad = learned_clip_grad(x, lo, hi, 4, g);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    CAPTURE(r);
    auto loss = [&](double lo_r, double hi_r) {
      double sum = 0;
      for (Eigen::Index c = 0; c < x.cols(); ++c)
        sum += g(r, c) * surrogate(x(r, c), lo_r, hi_r, 4, frozen_rho(x(r, c), lo(r), hi(r), 4));
      return sum;
    };
    const double fd_lo = (loss(lo(r) + h, hi(r)) - loss(lo(r) - h, hi(r))) / (2 * h);
    const double fd_hi = (loss(lo(r), hi(r) + h) - loss(lo(r), hi(r) - h)) / (2 * h);
    CHECK(grad.clip_lo(r) == doctest::Approx(fd_lo).epsilon(1e-6).scale(0));
    CHECK(grad.clip_hi(r) == doctest::Approx(fd_hi).epsilon(1e-6).scale(0));
  }
}

TEST_CASE("entries exactly on a bound send their gradient to the bound") {
  const Eigen::RowVector4d x(-1.0, 1.0, 0.0, 2.0);
  const Eigen::RowVector4d g(0.5, 0.25, 2.0, 4.0);
  const auto grad = learned_clip_grad(x, -1.0, 1.0, 4, g);
  CHECK(grad.x(0) == 0.0);
  CHECK(grad.x(1) == 0.0);
  CHECK(grad.x(2) == 2.0);
  CHECK(grad.x(3) == 0.0);
  // x = 0 is the code 7.5 → 8 (ties to even): δ = (7.5 − 8)/15 = −1/30.
  CHECK(grad.clip_lo == doctest::Approx(0.5 + 2.0 * (-1.0 / 30)));
  CHECK(grad.clip_hi == doctest::Approx(0.25 + 4.0 - 2.0 * (-1.0 / 30)));
}

TEST_CASE("learned clip rejects bad input") {
  const MatrixX<double> x = oq::test::gaussian<double>(6, 40, 7);
  const MatrixX<double> g = MatrixX<double>::Ones(6, 40);
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, -1.0, 1.0, 4, MatrixX<double>::Ones(6, 39)),
                       doctest::Contains("grad_out must be 6 x 40 like x, got 6 x 39"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, 1.0, 1.0, 4),
                       doctest::Contains("clip_lo must be < clip_hi, got clip_lo = 1 and clip_hi = 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, 2.0, -1.0, 4, g), doctest::Contains("clip_lo must be < clip_hi"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, -1.0, std::numeric_limits<double>::quiet_NaN(), 4),
                       doctest::Contains("clip_hi must be finite, got nan"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, -1e308, 1e308, 4),
                       doctest::Contains("clip_hi - clip_lo = inf is too large or too small"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, -1.0, 1.0, 1), doctest::Contains("bits must be in [2, 8], got 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, -1.0, 1.0, 9, g), doctest::Contains("bits must be in [2, 8], got 9"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(MatrixX<double>(0, 3), -1.0, 1.0, 4),
                       doctest::Contains("x must be non-empty"), std::invalid_argument);

  // Per-row bounds: length, and the offending row named.
  Eigen::VectorXd lo = Eigen::VectorXd::Constant(6, -1.0);
  Eigen::VectorXd hi = Eigen::VectorXd::Constant(6, 1.0);
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, Eigen::VectorXd::Constant(5, -1.0), hi, 4),
                       doctest::Contains("clip_lo must be a 6 x 1 column vector (one bound per row of x), got 5 x 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, lo, hi.transpose(), 4, g),
                       doctest::Contains("clip_hi must be a 6 x 1 column vector"), std::invalid_argument);
  lo(2) = 1.0;
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, lo, hi, 4, g),
                       doctest::Contains("clip_lo(2) must be < clip_hi(2), got clip_lo(2) = 1 and clip_hi(2) = 1"),
                       std::invalid_argument);
  lo(2) = -1.0;
  hi(4) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(x, lo, hi, 4),
                       doctest::Contains("clip_hi(4) must be finite, got inf"),
                       std::invalid_argument);

  // NaN data: std::domain_error naming the entry.
  MatrixX<double> bad = x;
  bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(learned_clip_fake_quantize(bad, -1.0, 1.0, 4), doctest::Contains("x(1, 2) is nan"),
                       std::domain_error);
  MatrixX<double> bad_g = g;
  bad_g(3, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, -1.0, 1.0, 4, bad_g), doctest::Contains("grad_out(3, 0) is inf"),
                       std::domain_error);
}

namespace {

// The forward with c+ at the largest value: every code's value on the grid
// c− + k/s, k = 0..L, in a wider type W (double for float, long double for
// double: the same formula, no overflow), rounded to T. The library's x̂
// must be finite, at most c+, and within two roundings of T of that
// reference (its own L/s + c− rounds twice; the cap at c+ moves a value by
// less than the gap between them).
template <class T, class W>
void check_forward_near_largest() {
  const T big = std::numeric_limits<T>::max();
  const W u = std::numeric_limits<T>::epsilon() / 2;
  Eigen::Index overflowing = 0, checked = 0;
  for (int bits = 2; bits <= 8; ++bits) {
    const T l = static_cast<T>((1 << bits) - 1);
    for (int i = 1; i <= 40; ++i) {
      // c− from −max/64 to 0.9·max (c+ − c− must not overflow: refused); c+ = max.
      const T lo = static_cast<T>(static_cast<W>(big) * (W(0.9) * i / 40 - W(1) / 64));
      const T hi = big;
      CAPTURE(bits);
      CAPTURE(lo);
      // Ranges whose step L/(c+ − c−) is not a normal T are refused (another test).
      const T s = l / (hi - lo);
      if (!std::isnormal(s)) continue;
      // The plain formula's top code, as the library evaluates it.
      if (!std::isfinite(l / s + lo)) ++overflowing;
      // Entries spread over [c−, c+] and beyond it (at max itself).
      oq::test::RowMatrixX<T> x(1, 64);
      for (Eigen::Index k = 0; k < 63; ++k)
        x(0, k) = static_cast<T>(static_cast<W>(lo) + (static_cast<W>(hi) - static_cast<W>(lo)) * W(k) / W(62));
      x(0, 63) = big;
      const oq::test::RowMatrixX<T> y = learned_clip_fake_quantize(x, lo, hi, bits);
      REQUIRE(y.allFinite());
      for (Eigen::Index k = 0; k < x.cols(); ++k) {
        CAPTURE(k);
        // The reference: the code as T computes it (an entry at a rounding
        // tie may round either way in W), its value c− + k/s in W.
        const T code = std::nearbyint((std::clamp(x(0, k), lo, hi) - lo) * s);
        const W reference = static_cast<W>(code) / static_cast<W>(s) + static_cast<W>(lo);
        CHECK(y(0, k) <= hi);
        CHECK(y(0, k) >= lo);
        CHECK(std::fabs(static_cast<W>(y(0, k)) - reference) <= 2 * u * static_cast<W>(big));
        ++checked;
      }
    }
  }
  CHECK(checked >= 4 * 40 * 64);
  CHECK(overflowing > 0);  // the plain formula reaches +inf in this set
}

}  // namespace

TEST_CASE("learned clip forward with c+ at the largest value is finite and at most c+") {
  // Issue 23, item 5: the top code's value L/s + c− rounds past the largest
  // value for about half of these ranges (float [−2.4e38, FLT_MAX], 2 bits:
  // +inf for every entry at or above c+).
  SUBCASE("float") { check_forward_near_largest<float, double>(); }
  if constexpr (std::numeric_limits<long double>::max_exponent >= 16384) {
    SUBCASE("double") { check_forward_near_largest<double, long double>(); }
  }
}

TEST_CASE("learned clip bound gradients near the largest value: exact where representable, else domain_error") {
  // Issue 23, item 5: the bounds' gradients were summed in plain double and
  // cast: for double grad_out near DBL_MAX a row's sum overflowed (+inf, and
  // inf − inf = NaN for the per-tensor sum of rows whose true value is
  // finite); for float a sum beyond FLT_MAX was cast to float (undefined).
  // Every x here is above c+ = 1, so ∂L/∂c+ = Σ grad_out and ∂L/∂c− = 0.
  const MatrixX<double> x = MatrixX<double>::Constant(2, 2, 5.0);
  MatrixX<double> g(2, 2);
  g << std::ldexp(0.75, 1024), std::ldexp(0.75, 1024), -std::ldexp(0.75, 1024), -std::ldexp(0.5, 1024);
  // Per tensor: 0.75 + 0.75 − 0.75 − 0.5 = 0.25 (× 2^1024), exactly.
  const auto tensor = learned_clip_grad(x, 0.0, 1.0, 4, g);
  CHECK(tensor.clip_hi == std::ldexp(0.25, 1024));
  CHECK(tensor.clip_lo == 0.0);
  CHECK(tensor.x == MatrixX<double>::Zero(2, 2));
  // Per row: row 0 sums to 1.5·2^1024, beyond DBL_MAX: refused, naming it.
  const Eigen::VectorXd lo = Eigen::VectorXd::Zero(2), hi = Eigen::VectorXd::Ones(2);
  CHECK_THROWS_WITH_AS(learned_clip_grad(x, lo, hi, 4, g), doctest::Contains("the gradient of clip_hi(0)"),
                       std::domain_error);
  // Rows in range get their exact sums.
  MatrixX<double> g2(2, 2);
  g2 << std::ldexp(0.75, 1024), -std::ldexp(0.5, 1024), -std::ldexp(0.75, 1024), std::ldexp(0.5, 1024);
  const auto rows = learned_clip_grad(x, lo, hi, 4, g2);
  CHECK(rows.clip_hi(0) == std::ldexp(0.25, 1024));
  CHECK(rows.clip_hi(1) == -std::ldexp(0.25, 1024));
  // Float: 8 × 3e38 = 2.4e39 is no float.
  const MatrixX<float> xf = MatrixX<float>::Constant(2, 4, 5.0f);
  const MatrixX<float> gf = MatrixX<float>::Constant(2, 4, 3e38f);
  CHECK_THROWS_WITH_AS(learned_clip_grad(xf, 0.0f, 1.0f, 4, gf), doctest::Contains("the gradient of clip_hi"),
                       std::domain_error);
  // The in-range term (δ·grad_out) near the largest value: one entry inside
  // [c−, c+], its δ from the plain formula; a double of 2^1023·δ.
  const Eigen::RowVector2d inside(0.3, 5.0);
  const Eigen::RowVector2d g_inside(std::ldexp(1.0, 1023), std::ldexp(1.0, 1023));
  const auto mixed = learned_clip_grad(inside, 0.0, 1.0, 4, g_inside);
  const double u = 0.3 * 15.0;  // (x − c−)·s
  const double delta = (u - std::nearbyint(u)) / 15.0;
  CHECK(mixed.clip_lo == doctest::Approx(std::ldexp(delta, 1023)).epsilon(1e-14));
  CHECK(mixed.clip_hi == doctest::Approx(std::ldexp(1.0, 1023) - std::ldexp(delta, 1023)).epsilon(1e-14));
}
