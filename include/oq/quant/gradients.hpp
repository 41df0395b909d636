// oq/quant/gradients.hpp: gradients of fake quantization for training.
//
// Fake quantization x̂ = (clamp(rne(x/s) + z, lo, hi) − z)·s has zero gradient
// almost everywhere, so training uses estimators:
//  - straight-through (STE, Bengio et al. 2013; as in OmniQuant/DuQuant's
//    round_ste): rne is treated as the identity, so ∂x̂/∂x = 1 where the code
//    v = rne(x/s) + z lies in [lo, hi] and 0 where the clamp is active. The
//    interval is closed, like torch.clamp's backward, so a code exactly at lo
//    or hi still passes its gradient.
//  - LSQ (Esser et al. 2020, "Learned Step Size Quantization", eq. 3): with the
//    same STE and z held fixed,
//        ∂x̂/∂s = rne(x/s) − x/s   if lo ≤ v ≤ hi,
//                lo − z           if v < lo,
//                hi − z           if v > hi,
//    summed over the elements that share the scale and multiplied by the
//    gradient scale g (LSQ §2.2 recommends g = 1/√(N·Q_P); lsq_gradient_scale).
//
//   auto gx = oq::quant::ste_grad_input(x, params, spec, grad_y);
//   auto gs = oq::quant::lsq_grad_scale(x, params, spec, grad_y,
//                 oq::quant::lsq_gradient_scale<float>(x.cols(), spec));
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/rint.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <cmath>
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

/// ∂L/∂s for every scale of `params` (same shape as params.scale), LSQ
/// estimator with zero points held fixed, times `gradient_scale`.
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
      grad_scale(i, j) = gradient_scale * (d * grad_out.block(i * height, j * width, height, width).array()).sum();
    });
  });
  return grad_scale;
}

}  // namespace oq::quant
