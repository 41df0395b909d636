#include <oq/quant/gradients.hpp>
#include <oq/quant/reference.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
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
