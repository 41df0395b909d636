// oq/quant/gradients.hpp: gradients of fake quantization for training.
//
// Fake quantization x̂ = (clamp(rne(x/s) + z, lo, hi) − z)·s (docs/design.md §2: round,
// then clamp the code) has zero gradient almost everywhere, so training uses
// estimators. Both functions below differentiate exactly that function with
// rne replaced by round_ste(u) = u + stop_gradient(rne(u) − u) and z held
// fixed, which is what autograd gives for OmniQuant's/DuQuant's quantizer
// (x_int = round_ste(x / scale) + zero, clamp, (x_int − zero)·scale), with the
// clamp's branch decided by the rounded code v = rne(x/s) + z:
//  - straight-through (STE, Bengio et al. 2013): ∂x̂/∂x = 1 where lo ≤ v ≤ hi
//    and 0 where the clamp is active. The interval is closed, like
//    torch.clamp's backward, so a code exactly at lo or hi passes its gradient.
//  - scale (LSQ-style, Esser et al. 2020, "Learned Step Size Quantization"):
//        ∂x̂/∂s = rne(x/s) − x/s   if lo ≤ v ≤ hi,
//                lo − z           if v < lo,
//                hi − z           if v > hi,
//    summed over the elements that share the scale (in double) and multiplied
//    by the gradient scale g (LSQ §2.2 recommends g = 1/√(N·Q_P);
//    lsq_gradient_scale).
// This is not LSQ's eq. 3 in the half step past each clip. LSQ clamps u = x/s
// before rounding and decides the branch on u: with Q_P = hi − z and
// −Q_N = lo − z it gives ∂x̂/∂s = Q_P, ∂x̂/∂x = 0 for u ≥ Q_P (and −Q_N, 0 for
// u ≤ −Q_N). Here u ∈ (Q_P, Q_P + ½] still rounds to the code hi, so it is
// in range: ∂x̂/∂s = Q_P − u ∈ [−½, 0) and ∂x̂/∂x = 1 (at u = Q_P + ½ exactly,
// ties to even decide); likewise u ∈ [−Q_N − ½, −Q_N) gives −Q_N − u and 1;
// and at u = Q_P or −Q_N exactly, 0 and 1 where LSQ gives Q_P or −Q_N and 0.
// Example, 4-bit symmetric, s = 1, x = 7.3: here ∂x̂/∂s = −0.3 and ∂x̂/∂x = 1;
// LSQ eq. 3 gives 7 and 0. The forward values agree everywhere.
//
//   auto gx = oq::quant::ste_grad_input(x, params, spec, grad_y);
//   auto gs = oq::quant::lsq_grad_scale(x, params, spec, grad_y,
//                 oq::quant::lsq_gradient_scale<float>(x.cols(), spec));
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>
#include <oq/detail/rint.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <string_view>

namespace oq::quant {

namespace detail_gradients {

template <class XDerived, class GDerived>
void check_grad_input(const Eigen::MatrixBase<XDerived>& x,
                      const QuantParams<typename XDerived::Scalar>& params, const QuantSpec& spec,
                      const Eigen::MatrixBase<GDerived>& grad_out, std::string_view where) {
  static_assert(std::is_same_v<typename XDerived::Scalar, typename GDerived::Scalar>,
                "x and grad_out must have the same scalar type");
  detail_quantize::check_input(x, params, spec, where);
  detail::require(grad_out.rows() == x.rows() && grad_out.cols() == x.cols(), where, "grad_out must be ",
                  x.rows(), " x ", x.cols(), " like x, got ", grad_out.rows(), " x ", grad_out.cols());
  detail::require_finite(grad_out, where, "grad_out");
}

}  // namespace detail_gradients

/// ∂L/∂x through fake quantization with the straight-through estimator.
template <class XDerived, class GDerived>
PlainMatrixOf<XDerived> ste_grad_input(const Eigen::MatrixBase<XDerived>& x,
                                       const QuantParams<typename XDerived::Scalar>& params,
                                       const QuantSpec& spec, const Eigen::MatrixBase<GDerived>& grad_out) {
  using Scalar = typename XDerived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::ste_grad_input";
  detail_gradients::check_grad_input(x, params, spec, grad_out, kWhere);
  const core::CodeRange range = spec.code_range();
  const auto lo = static_cast<Scalar>(range.lo);
  const auto hi = static_cast<Scalar>(range.hi);
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  PlainMatrixOf<XDerived> grad_x(x.rows(), x.cols());
  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    const auto p = params.at(i, j);
    // Rounding x/s clamped to [lo − z − 1, hi − z + 1] keeps every in-range code
    // and leaves every out-of-range one out of range.
    detail::with_rounded_clamped(block.array() / p.scale, lo - p.zero - 1, hi - p.zero + 1, [&](const auto& r) {
      const auto v = r + p.zero;
      const auto g = grad_out.block(i * height, j * width, height, width).array();
      grad_x.block(i * height, j * width, height, width).array() = (v >= lo && v <= hi).select(g, Scalar(0));
    });
  });
  return grad_x;
}

/// The LSQ gradient scale g = 1/√(N·Q_P) for N elements per scale; Q_P is the
/// largest positive code distance, 2^(b−1)−1 symmetric or 2^b−1 asymmetric.
template <class Scalar>
Scalar lsq_gradient_scale(Eigen::Index elements_per_scale, const QuantSpec& spec) {
  constexpr std::string_view kWhere = "oq::quant::lsq_gradient_scale";
  spec.validate(kWhere);
  detail::require(elements_per_scale > 0, kWhere, "elements_per_scale must be > 0, got ", elements_per_scale);
  const core::CodeRange range = spec.code_range();
  const double q_p = spec.symmetric ? range.hi : range.hi - range.lo;
  return static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(elements_per_scale) * q_p));
}

/// ∂L/∂s for every scale of `params` (same shape as params.scale): the scale
/// gradient of the file comment (round-then-clamp; LSQ-style, not LSQ eq. 3 in
/// the half step past the clip) with zero points held fixed, summed in double
/// and times `gradient_scale` (in units of powers of two where a double sum
/// overflows, so data near DBL_MAX gets the gradient whenever it is a double).
/// Throws std::domain_error if a result exceeds the range of x's scalar type.
template <class XDerived, class GDerived>
typename QuantParams<typename XDerived::Scalar>::Matrix lsq_grad_scale(
    const Eigen::MatrixBase<XDerived>& x, const QuantParams<typename XDerived::Scalar>& params,
    const QuantSpec& spec, const Eigen::MatrixBase<GDerived>& grad_out,
    typename XDerived::Scalar gradient_scale = 1) {
  using Scalar = typename XDerived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::lsq_grad_scale";
  detail_gradients::check_grad_input(x, params, spec, grad_out, kWhere);
  detail::require(std::isfinite(gradient_scale), kWhere, "gradient_scale must be finite, got ", gradient_scale);
  const core::CodeRange range = spec.code_range();
  const auto lo = static_cast<Scalar>(range.lo);
  const auto hi = static_cast<Scalar>(range.hi);
  const Eigen::Index height = spec.block_rows(x.rows());
  const Eigen::Index width = spec.block_cols(x.cols());
  typename QuantParams<Scalar>::Matrix grad_scale(params.scale.rows(), params.scale.cols());
  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    const auto p = params.at(i, j);
    const auto u = block.array() / p.scale;
    // In-range entries have |u| inside the clamp, so r = rne(u) there.
    detail::with_rounded_clamped(u, lo - p.zero - 1, hi - p.zero + 1, [&](const auto& r) {
      const auto v = r + p.zero;
      const auto d = (v < lo).select(lo - p.zero, (v > hi).select(hi - p.zero, r - u));
      // Each product d·g is exact in double for float data; a float running
      // sum over a per-tensor scale (millions of elements) would lose ~1e−4.
      const auto g = grad_out.block(i * height, j * width, height, width).array();
      const double sum = (d.template cast<double>() * g.template cast<double>()).sum();
      double value = static_cast<double>(gradient_scale) * sum;
      if (!std::isfinite(value)) {
        // Double data near DBL_MAX: a product d·g or the sum overflowed (+inf,
        // or inf − inf = NaN) while the gradient times gradient_scale may be
        // an ordinary double. Again with d, g and gradient_scale each scaled
        // by a power of two to magnitudes ≤ 1 (exact), the exponents added.
        const Eigen::ArrayXXd dd = d.template cast<double>(), gd = g.template cast<double>();
        int ed = 0, eg = 0, es = 0;
        std::frexp(dd.abs().maxCoeff(), &ed);
        std::frexp(gd.abs().maxCoeff(), &eg);
        const double scale_fraction = std::frexp(static_cast<double>(gradient_scale), &es);
        const detail::PowerOfTwoFactors<double> fd = detail::inverse_power_of_two<double>(ed);
        const detail::PowerOfTwoFactors<double> fg = detail::inverse_power_of_two<double>(eg);
        const double unit_sum = (((dd * fd.first) * fd.second) * ((gd * fg.first) * fg.second)).sum();
        value = std::ldexp(scale_fraction * unit_sum, ed + eg + es);
      }
      detail::require_domain(std::abs(value) <= static_cast<double>(std::numeric_limits<Scalar>::max()), kWhere,
                             "the scale gradient (", i, ", ", j, ") = ", value, " is beyond the range of x's type",
                             " (grad_out near its largest value: scale the loss or gradient_scale down)");
      grad_scale(i, j) = static_cast<Scalar>(value);
    });
  });
  return grad_scale;
}

}  // namespace oq::quant
