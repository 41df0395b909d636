#include <oq/quant/gradients.hpp>
#include <oq/quant/reference.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <stdexcept>

using namespace oq::quant;
using oq::test::MatrixX;

namespace {

// The smooth surrogate the straight-through estimator differentiates: fake
// quantization with rounding removed, f(x) = (clamp(x/s + z, lo, hi) − z)·s.
double ste_surrogate(double x, double s, double z, double lo, double hi) {
  return (std::clamp(x / s + z, lo, hi) - z) * s;
}

}  // namespace

TEST_CASE("STE gradient equals the finite-difference derivative of the unrounded surrogate") {
  const MatrixX<double> x = oq::test::gaussian<double>(6, 64, 31, 2.0);
  const MatrixX<double> g = oq::test::gaussian<double>(6, 64, 32);
  for (const QuantSpec& spec : {QuantSpec::per_token(4, false, 0.7), QuantSpec::per_group(3, true, 16, 0.6),
                                QuantSpec::per_tensor(2, false, 0.8)}) {
    CAPTURE(to_string(spec.granularity));
    const auto p = compute_params(x, spec);
    const MatrixX<double> gx = ste_grad_input(x, p, spec, g);
    const auto range = spec.code_range();
    int compared = 0;
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      for (Eigen::Index c = 0; c < x.cols(); ++c) {
        Eigen::Index i, j;
        param_index_ref(spec, r, c, i, j);
        const double s = p.scale(i, j);
        const double z = p.zero(i, j);
        const double u = x(r, c) / s + z;
        // Within half a step outside the clamp edges the rounded code is still
        // in range while the surrogate is already flat: the estimators differ
        // there by design, so only points clear of those bands are compared.
        if ((u > range.lo - 0.6 && u < range.lo + 0.1) || (u > range.hi - 0.1 && u < range.hi + 0.6)) continue;
        const double h = 1e-6 * s;
        const double fd = g(r, c) *
                          (ste_surrogate(x(r, c) + h, s, z, range.lo, range.hi) -
                           ste_surrogate(x(r, c) - h, s, z, range.lo, range.hi)) /
                          (2 * h);
        CHECK(gx(r, c) == doctest::Approx(fd).epsilon(1e-6));
        ++compared;
      }
    }
    CHECK(compared > 200);
  }
  // Some entries must be clipped for the test to mean anything.
  const auto p = compute_params(x, QuantSpec::per_token(4, false, 0.7));
  CHECK((ste_grad_input(x, p, QuantSpec::per_token(4, false, 0.7), g).array() == 0).count() > 10);
}

TEST_CASE("LSQ scale gradient equals finite differences of the round-STE surrogate") {
  // round_ste(u) = u + stop_gradient(rne(u) − u), as in LSQ and the OmniQuant /
  // DuQuant code; its fake quantization, as a function of s with δ frozen, is
  // f(s) = (clamp(x/s + δ + z, lo, hi) − z)·s, whose derivative autograd takes.
  const MatrixX<double> x = oq::test::heavy_tailed<double>(5, 32, 41);
  const MatrixX<double> g = oq::test::gaussian<double>(5, 32, 42);
  for (const QuantSpec& spec : {QuantSpec::per_token(4, false, 0.75), QuantSpec::per_group(4, true, 8, 0.6)}) {
    CAPTURE(to_string(spec.granularity));
    const auto p = compute_params(x, spec);
    const auto gs = lsq_grad_scale(x, p, spec, g);
    REQUIRE(gs.rows() == p.scale.rows());
    REQUIRE(gs.cols() == p.scale.cols());
    const auto range = spec.code_range();
    MatrixX<double> fd = MatrixX<double>::Zero(gs.rows(), gs.cols());
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      for (Eigen::Index c = 0; c < x.cols(); ++c) {
        Eigen::Index i, j;
        param_index_ref(spec, r, c, i, j);
        const double s0 = p.scale(i, j);
        const double z = p.zero(i, j);
        const double delta = std::nearbyint(x(r, c) / s0) - x(r, c) / s0;  // frozen
        // The clamp's branch is frozen at s0 as autograd sees it (torch.clamp
        // passes the gradient at equality): the code v = x/s0 + δ + z is an
        // integer and often sits exactly on lo or hi.
        const double v0 = x(r, c) / s0 + delta + z;
        auto f = [&](double s) {
          const double u = x(r, c) / s + delta + z;
          const double clamped = v0 < range.lo ? double(range.lo) : v0 > range.hi ? double(range.hi) : u;
          return (clamped - z) * s;
        };
        const double h = 1e-7 * s0;
        fd(i, j) += g(r, c) * (f(s0 + h) - f(s0 - h)) / (2 * h);
      }
    }
    for (Eigen::Index i = 0; i < gs.rows(); ++i)
      for (Eigen::Index j = 0; j < gs.cols(); ++j) CHECK(gs(i, j) == doctest::Approx(fd(i, j)).epsilon(1e-6));
    // The gradient scale multiplies the result.
    const auto scaled = lsq_grad_scale(x, p, spec, g, 0.25);
    CHECK(scaled.isApprox(0.25 * gs));
  }
}

TEST_CASE("the half step past the clip follows round-then-clamp (docs/design.md §2), not LSQ eq. 3") {
  // Hand-derived values, one element per scale (per-token, x a column), s = 0.5
  // so that x = u·s and x/s = u are exact. x̂ = (clamp(rne(u) + z, lo, hi) − z)·s
  // with rne's straight-through gradient: where the rounded code rne(u) + z is
  // in [lo, hi] (closed), ∂x̂/∂x = 1 and ∂x̂/∂s = rne(u) − u; beyond it ∂x̂/∂x = 0
  // and ∂x̂/∂s = (lo or hi) − z. LSQ eq. 3 clamps u first, so in the half step
  // (hi − z, hi − z + ½] it would give ∂x̂/∂s = hi − z, ∂x̂/∂x = 0 (7 and 0 at
  // u = 7.3 below) and at u = hi − z exactly ∂x̂/∂s = hi − z; the values below
  // are those of the round-then-clamp function, which is what oq differentiates.
  struct Case {
    double u;
    double ds;  // ∂x̂/∂s
    double dx;  // ∂x̂/∂x
  };
  // 4-bit symmetric: codes [−8, 7], z = 0.
  const Case symmetric[] = {
      {7.3, 7 - 7.3, 1},    // rne = 7 = hi: in range (LSQ eq. 3: 7, 0)
      {-8.4, -8 + 8.4, 1},  // rne = −8 = lo: in range (LSQ eq. 3: −8, 0)
      {7.0, 0, 1},          // exactly at hi (LSQ eq. 3: 7, 0)
      {-8.0, 0, 1},         // exactly at lo (LSQ eq. 3: −8, 0)
      {7.5, 7, 0},          // a tie, to even: 8 > hi
      {-8.5, 0.5, 1},       // a tie, to even: −8 = lo
      {7.6, 7, 0},          // rne = 8 > hi
      {-8.6, -8, 0},        // rne = −9 < lo
      {2.25, -0.25, 1},     // inside
  };
  // 4-bit asymmetric with z = 3: codes [0, 15], so rne(u) ∈ [−3, 12] is in range.
  const Case asymmetric[] = {
      {12.3, 12 - 12.3, 1}, {-3.4, -3 + 3.4, 1}, {12.0, 0, 1}, {-3.0, 0, 1}, {12.6, 12, 0}, {-3.6, -3, 0},
  };
  const auto check = [](const auto& cases, const QuantSpec& spec, double z) {
    const Eigen::Index n = static_cast<Eigen::Index>(std::size(cases));
    MatrixX<double> x(n, 1), g(n, 1);
    for (Eigen::Index i = 0; i < n; ++i) {
      x(i, 0) = cases[i].u * 0.5;
      g(i, 0) = 1.0 + static_cast<double>(i);  // distinct upstream gradients, multiplied through
    }
    const QuantParams<double> p{MatrixX<double>::Constant(n, 1, 0.5), MatrixX<double>::Constant(n, 1, z)};
    const MatrixX<double> gs = lsq_grad_scale(x, p, spec, g);
    const MatrixX<double> gx = ste_grad_input(x, p, spec, g);
    for (Eigen::Index i = 0; i < n; ++i) {
      CAPTURE(cases[i].u);
      // ds is exact up to the rounding of u's decimal literal (|rne(u) − u| is
      // then off by at most ulp(u) ≈ 2e-15).
      CHECK(std::abs(gs(i, 0) - g(i, 0) * cases[i].ds) <= 1e-14 * g(i, 0));
      CHECK(gx(i, 0) == g(i, 0) * cases[i].dx);
    }
  };
  check(symmetric, QuantSpec::per_token(4, true), 0.0);
  check(asymmetric, QuantSpec::per_token(4, false), 3.0);
}

TEST_CASE("LSQ scale gradient of a large float tensor is summed in double") {
  // 2^22 float entries under one scale (a 2048 × 2048 weight, per-tensor): a
  // float running sum of d·g loses about 1e-4 relative here. Reference: each
  // term d = rne(u) − u (u = x/s in float, as the estimator divides; every
  // code is in range since s = max|x|/127) times g exactly in long double,
  // summed in long double. A double sum is off by at most (n − 1)·u_double·Σ|d·g|
  // (Higham, "Accuracy and Stability of Numerical Algorithms", §4.2), and the
  // cast to float by half an ulp.
  const Eigen::Index n = Eigen::Index(1) << 22;
  const MatrixX<float> x = oq::test::gaussian<float>(1, n, 43);
  const MatrixX<float> g = (1.0f + 0.01f * oq::test::gaussian<float>(1, n, 44).array()).matrix();
  const QuantSpec spec = QuantSpec::per_tensor(8, true);
  const auto p = compute_params(x, spec);
  const float s = p.scale(0, 0);
  long double ref = 0, magnitude = 0;
  float largest_code = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const float u = x(0, i) / s;
    const float r = std::nearbyint(u);
    largest_code = std::max(largest_code, std::abs(r));
    const long double term = (static_cast<long double>(r) - u) * g(0, i);
    ref += term;
    magnitude += std::abs(term);
  }
  REQUIRE(largest_code <= 127.0f);  // no clamp: every term is rne(u) − u
  const double bound = std::ldexp(std::abs(static_cast<double>(ref)), -24) +
                       static_cast<double>(n) * std::numeric_limits<double>::epsilon() / 2 *
                           static_cast<double>(magnitude);
  const float got = lsq_grad_scale(x, p, spec, g)(0, 0);
  CHECK(std::abs(static_cast<double>(got) - static_cast<double>(ref)) <= bound);
  // The gradient scale multiplies in double too: the same sum times 0.5, rounded once.
  CHECK(lsq_grad_scale(x, p, spec, g, 0.5f)(0, 0) == 0.5f * got);
}

TEST_CASE("LSQ gradient scale is 1/sqrt(N·Q_P)") {
  CHECK(lsq_gradient_scale<double>(64, QuantSpec::per_token(4, true)) == doctest::Approx(1.0 / std::sqrt(64.0 * 7)));
  CHECK(lsq_gradient_scale<double>(64, QuantSpec::per_token(4, false)) == doctest::Approx(1.0 / std::sqrt(64.0 * 15)));
  CHECK_THROWS_AS(lsq_gradient_scale<double>(0, QuantSpec::per_token(4, true)), std::invalid_argument);
}

TEST_CASE("gradient functions reject mismatched or non-finite input") {
  const MatrixX<float> x = oq::test::gaussian<float>(4, 8, 1);
  const QuantSpec spec = QuantSpec::per_token(4, true);
  const auto p = compute_params(x, spec);
  CHECK_THROWS_WITH_AS(ste_grad_input(x, p, spec, MatrixX<float>::Zero(4, 7)),
                       doctest::Contains("grad_out must be 4 x 8"), std::invalid_argument);
  MatrixX<float> g = MatrixX<float>::Ones(4, 8);
  g(0, 3) = std::nanf("");
  CHECK_THROWS_WITH_AS(lsq_grad_scale(x, p, spec, g), doctest::Contains("grad_out(0, 3) is nan"), std::domain_error);
}

TEST_CASE("LSQ scale gradient of doubles near the largest value: exact where representable, else domain_error") {
  // Issue 23, item 5: Σ d·g was a plain double sum, so grad_out near DBL_MAX
  // gave +inf or inf − inf = NaN terms and a std::domain_error "= nan" even
  // where the gradient (times gradient_scale) is an ordinary double. 4-bit
  // symmetric, s = 1: x = 100 is above the clip, d = hi − z = 7.
  const QuantSpec spec = QuantSpec::per_tensor(4, true);
  QuantParams<double> p;
  p.scale = MatrixX<double>::Constant(1, 1, 1.0);
  p.zero = MatrixX<double>::Zero(1, 1);
  const MatrixX<double> x = MatrixX<double>::Constant(1, 2, 100.0);
  // 7·(0.2 − 0.19)·2^1024 = 0.07·2^1024: each product 7·g overflows, the sum does not.
  MatrixX<double> g(1, 2);
  g << std::ldexp(0.2, 1024), -std::ldexp(0.19, 1024);
  const double expected = 7 * (std::ldexp(0.2, 1024 - 8) - std::ldexp(0.19, 1024 - 8)) * 256;
  CHECK(lsq_grad_scale(x, p, spec, g)(0, 0) == doctest::Approx(expected).epsilon(1e-15));
  // Σ d·g = 2·7·2^1023 is beyond DBL_MAX, but the gradient scale 1/64
  // brings it back: 7·2^1018.
  const MatrixX<double> big = MatrixX<double>::Constant(1, 2, std::ldexp(0.5, 1024));
  CHECK(lsq_grad_scale(x, p, spec, big, 1.0 / 64) == MatrixX<double>::Constant(1, 1, 7 * std::ldexp(1.0, 1018)));
  // Without it the gradient is no double: refused, naming the scale.
  CHECK_THROWS_WITH_AS(lsq_grad_scale(x, p, spec, big), doctest::Contains("the scale gradient (0, 0)"),
                       std::domain_error);
  // A float gradient beyond FLT_MAX likewise (its double sum is finite).
  const MatrixX<float> xf = MatrixX<float>::Constant(1, 2, 100.0f);
  QuantParams<float> pf;
  pf.scale = MatrixX<float>::Constant(1, 1, 1.0f);
  pf.zero = MatrixX<float>::Zero(1, 1);
  CHECK_THROWS_WITH_AS(lsq_grad_scale(xf, pf, spec, MatrixX<float>::Constant(1, 2, 3e38f)),
                       doctest::Contains("the scale gradient (0, 0)"), std::domain_error);
}
