// oq/quant/learned_clip.hpp: fake quantization with a learned two-sided clip
// [c−, c+] and its gradients, for QAT of a layer's input (Nrusimha et al.
// 2024, arXiv 2404.03605; PACT, Choi et al. 2018, for the learned clip; LSQ,
// Esser et al. 2020, for the rounding term). docs/design.md §3.
//
//   using namespace oq::quant;
//   auto x_hat = learned_clip_fake_quantize(x, clip_lo, clip_hi, 4);
//   auto grad  = learned_clip_grad(x, clip_lo, clip_hi, 4, grad_x_hat);
//   clip_lo -= lr * grad.clip_lo;  clip_hi -= lr * grad.clip_hi;  // grad.x flows on
//
// The bounds are either per-tensor scalars or per-row column vectors (one
// [c−, c+] per token of x, x.rows() entries each); the gradients of the bounds
// have the same form. b = bits ∈ [2, 8], L = 2^b − 1, s = L/(c+ − c−):
//
//   forward   x̂ = rne((clamp(x, c−, c+) − c−)·s)/s + c−
//
// so x̂ lies on the grid c− + k/s, k = 0..L, which moves with the bounds.
//
// Backward (docs/design.md §3). Autograd of the PyTorch formulation with the
// straight-through rounding rne(u) = u + stop_grad(rne(u) − u) differentiates
// the surrogate in which ρ = rne(u) − u is a constant:
//   x̂ = (u + ρ)/s + c−,  u = (clamp(x, c−, c+) − c−)·s
//     = clamp(x, c−, c+) + ρ·(c+ − c−)/L.
// The first term carries the clamp, the second is where the bounds enter
// through s and the offset: with δ = (u − rne(u))/L = −ρ/L,
//   c− < x < c+:  ∂x̂/∂x = 1,  ∂x̂/∂c+ = ρ/L = −δ,  ∂x̂/∂c− = −ρ/L = +δ;
//   x ≥ c+:       x̂ = c+ (u = L is a code, ρ = 0), so ∂x̂/∂c+ = 1 and nothing else;
//   x ≤ c−:       x̂ = c−, so ∂x̂/∂c− = 1.
// Why in-range entries pull on the bounds: x̂ − x = −δ·(c+ − c−) is the
// rounding error, and it scales with the grid spacing (c+ − c−)/L; widening
// the range by dc+ widens every in-range error by −δ·dc+, moving c− by dc−
// shifts x̂ − x by +δ·dc−. These are LSQ's (rne(u) − u) step-size terms,
// written for the two bounds instead of (s, z). Every entry's three partials
// sum to 1 (x̂(x + t, c− + t, c+ + t) = x̂ + t), which the tests check.
// Ties x = c− and x = c+ count as clipped (measure zero; the clamp's one-sided
// derivatives differ there, and x̂ equals the bound): their gradient goes to
// the bound, none to x. The clip gradients are accumulated in float64.
//
// Errors: std::invalid_argument for bits outside [2, 8], an empty x, shape
// mismatches, non-finite bounds, c− ≥ c+ or a range whose step s is not a
// normal number; std::domain_error naming the first NaN/Inf entry of x or
// grad_out, or a bound's gradient beyond the scalar type's range (grad_out
// near its largest value). Near the largest value the forward caps the top
// code's value at c+ where rounding would take it to +inf, and the bounds'
// sums are taken in units of max|grad_out| where a double sum overflows.
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>
#include <oq/quant/quantize.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <ostream>
#include <string_view>
#include <type_traits>
#include <utility>

namespace oq::quant {

/// Gradients of learned_clip_grad(): ∂L/∂x and ∂L/∂c−, ∂L/∂c+ (scalars for a
/// per-tensor clip, column vectors with one entry per row for a per-row clip).
template <class Matrix, class Bounds>
struct LearnedClipGrad {
  Matrix x;
  Bounds clip_lo;
  Bounds clip_hi;
};

namespace detail_learned_clip {

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

// Prints "(row)" after a bound's name for a per-row clip, nothing per-tensor.
struct BoundIndex {
  Eigen::Index row;
};
inline std::ostream& operator<<(std::ostream& os, BoundIndex b) {
  return b.row < 0 ? os : os << '(' << b.row << ')';
}

inline void check_bits(int bits, std::string_view where) {
  detail::require(bits >= core::kMinBits && bits <= core::kMaxBits, where, "bits must be in [", core::kMinBits,
                  ", ", core::kMaxBits, "], got ", bits);
}

template <class Scalar>
Scalar levels(int bits) {
  return static_cast<Scalar>((1 << bits) - 1);
}

template <class Scalar>
void check_bounds(Scalar lo, Scalar hi, int bits, BoundIndex index, std::string_view where) {
  detail::require(std::isfinite(lo), where, "clip_lo", index, " must be finite, got ", lo);
  detail::require(std::isfinite(hi), where, "clip_hi", index, " must be finite, got ", hi);
  detail::require(lo < hi, where, "clip_lo", index, " must be < clip_hi", index, ", got clip_lo", index, " = ",
                  lo, " and clip_hi", index, " = ", hi);
  // hi − lo > 0 for finite lo < hi, but it may overflow, and s = L/(hi − lo)
  // may overflow or be subnormal for extreme ranges.
  const Scalar range = hi - lo;
  detail::require(std::isfinite(range) && std::isnormal(levels<Scalar>(bits) / range), where, "clip_hi", index,
                  " - clip_lo", index, " = ", range, " is too large or too small for ", bits, "-bit steps");
}

template <class Derived>
void check_x(const Eigen::MatrixBase<Derived>& x, int bits, std::string_view where) {
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "learned clip needs a floating-point matrix");
  check_bits(bits, where);
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require_finite(x, where, "x");
}

template <class Derived, class BoundDerived>
void check_row_bounds(const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<BoundDerived>& bound,
                      std::string_view name, std::string_view where) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename BoundDerived::Scalar>,
                "x and the clip bounds must have the same scalar type");
  detail::require(bound.rows() == x.rows() && bound.cols() == 1, where, name, " must be a ", x.rows(),
                  " x 1 column vector (one bound per row of x), got ", bound.rows(), " x ", bound.cols());
}

template <class Derived, class LoDerived, class HiDerived>
void check_per_row(const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<LoDerived>& lo,
                   const Eigen::MatrixBase<HiDerived>& hi, int bits, std::string_view where) {
  check_x(x, bits, where);
  check_row_bounds(x, lo, "clip_lo", where);
  check_row_bounds(x, hi, "clip_hi", where);
  for (Eigen::Index r = 0; r < x.rows(); ++r) check_bounds(lo(r), hi(r), bits, BoundIndex{r}, where);
}

template <class Derived, class GDerived>
void check_grad_out(const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<GDerived>& grad_out,
                    std::string_view where) {
  static_assert(std::is_same_v<typename Derived::Scalar, typename GDerived::Scalar>,
                "x and grad_out must have the same scalar type");
  detail::require(grad_out.rows() == x.rows() && grad_out.cols() == x.cols(), where, "grad_out must be ",
                  x.rows(), " x ", x.cols(), " like x, got ", grad_out.rows(), " x ", grad_out.cols());
  detail::require_finite(grad_out, where, "grad_out");
}

// The forward pass, row r with bounds lo(r), hi(r); inputs already checked.
template <class Derived, class LoF, class HiF>
PlainMatrixOf<Derived> fake_quantize_rows(const Eigen::MatrixBase<Derived>& x, LoF lo_of, HiF hi_of, int bits) {
  using Scalar = typename Derived::Scalar;
  const Scalar l = levels<Scalar>(bits);
  PlainMatrixOf<Derived> out(x.rows(), x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const Scalar lo = lo_of(r);
    const Scalar hi = hi_of(r);
    const Scalar s = l / (hi - lo);
    out.row(r).array() = ((x.row(r).array().max(lo).min(hi) - lo) * s).rint() / s + lo;
    // The top code's value L/s + lo is c+ but for rounding, which can take
    // it past the largest value when c+ is near it (float [−2.4e38, FLT_MAX],
    // 2 bits: +inf). Every other code's value is below it (both operations
    // are monotone), so only then are the values capped at c+, the exact
    // value of that code; elsewhere the formula's bits are kept.
    if (!std::isfinite(l / s + lo)) out.row(r) = out.row(r).cwiseMin(hi);
  }
  return out;
}

// Σ over each row of the bounds' contributions in double, as sum·2^exponent
// (one exponent for all rows and both bounds).
struct BoundSums {
  Vector<double> lo;
  Vector<double> hi;
  int exponent = 0;
};

// A bound's gradient in Scalar from sum·2^exponent: std::domain_error where
// it lies beyond Scalar's range (a float cast of such a double is undefined).
template <class Scalar>
Scalar bound_gradient(double sum, int exponent, std::string_view name, BoundIndex index, std::string_view where) {
  const double value = std::ldexp(sum, exponent);
  detail::require_domain(std::fabs(value) <= static_cast<double>(std::numeric_limits<Scalar>::max()), where,
                         "the gradient of ", name, index, " (", sum, "·2^", exponent,
                         ") is beyond the range of x's scalar type: grad_out is near its largest value (scale the "
                         "loss down)");
  return static_cast<Scalar>(value);
}

// ∂L/∂x, and Σ over each row of the contributions to ∂L/∂c− and ∂L/∂c+
// (float64, as BoundSums); see the file comment for the three cases.
template <class Derived, class GDerived, class LoF, class HiF>
std::pair<PlainMatrixOf<Derived>, BoundSums> grad_rows(const Eigen::MatrixBase<Derived>& x, LoF lo_of, HiF hi_of,
                                                       int bits, const Eigen::MatrixBase<GDerived>& grad_out) {
  using Scalar = typename Derived::Scalar;
  const Scalar l = levels<Scalar>(bits);
  PlainMatrixOf<Derived> grad_x(x.rows(), x.cols());
  BoundSums sums{Vector<double>(x.rows()), Vector<double>(x.rows()), 0};
  // The contributions times `unit` (a power of two as two factors, exact):
  // 1 first; 2^−e, e the exponent of max|grad_out|, where a double sum
  // overflowed (double data near DBL_MAX: a row's sum or the per-tensor sum
  // of rows may be beyond DBL_MAX while the gradient is not). Float sums
  // stay far inside double's range.
  const auto accumulate = [&](double unit_first, double unit_second, bool with_x) {
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const Scalar lo = lo_of(r);
      const Scalar hi = hi_of(r);
      const Scalar s = l / (hi - lo);
      const auto xr = x.row(r).array();
      const auto g = grad_out.row(r).array();
      const auto u = (xr.max(lo).min(hi) - lo) * s;
      const auto delta = (u - u.rint()) / l;  // docs/design.md §3's δ, used in range only
      const auto below = xr <= lo;
      const auto above = xr >= hi;
      if (with_x) grad_x.row(r).array() = (below || above).select(Scalar(0), g);
      const auto to_lo = below.select(g, above.select(Scalar(0), g * delta)).template cast<double>();
      const auto to_hi = above.select(g, below.select(Scalar(0), -g * delta)).template cast<double>();
      if (unit_first == 1.0 && unit_second == 1.0) {
        sums.lo(r) = to_lo.sum();
        sums.hi(r) = to_hi.sum();
      } else {
        sums.lo(r) = ((to_lo * unit_first) * unit_second).sum();
        sums.hi(r) = ((to_hi * unit_first) * unit_second).sum();
      }
    }
  };
  accumulate(1.0, 1.0, true);
  if (!(std::isfinite(sums.lo.sum()) && std::isfinite(sums.hi.sum()))) {
    std::frexp(static_cast<double>(grad_out.cwiseAbs().maxCoeff()), &sums.exponent);
    const detail::PowerOfTwoFactors<double> unit = detail::inverse_power_of_two<double>(sums.exponent);
    accumulate(unit.first, unit.second, false);
  }
  return {std::move(grad_x), std::move(sums)};
}

}  // namespace detail_learned_clip

/// Fake quantization of x with the per-tensor clip [clip_lo, clip_hi] on a
/// grid of 2^bits codes (docs/design.md §3). Same shape and storage order as x.
template <class Derived>
PlainMatrixOf<Derived> learned_clip_fake_quantize(const Eigen::MatrixBase<Derived>& x,
                                                  typename Derived::Scalar clip_lo,
                                                  typename Derived::Scalar clip_hi, int bits) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::learned_clip_fake_quantize";
  detail_learned_clip::check_x(x, bits, kWhere);
  detail_learned_clip::check_bounds(clip_lo, clip_hi, bits, detail_learned_clip::BoundIndex{-1}, kWhere);
  return detail_learned_clip::fake_quantize_rows(
      x, [&](Eigen::Index) -> Scalar { return clip_lo; }, [&](Eigen::Index) -> Scalar { return clip_hi; }, bits);
}

/// Fake quantization of x with one clip [clip_lo(r), clip_hi(r)] per row r.
template <class Derived, class LoDerived, class HiDerived>
PlainMatrixOf<Derived> learned_clip_fake_quantize(const Eigen::MatrixBase<Derived>& x,
                                                  const Eigen::MatrixBase<LoDerived>& clip_lo,
                                                  const Eigen::MatrixBase<HiDerived>& clip_hi, int bits) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::learned_clip_fake_quantize";
  detail_learned_clip::check_per_row(x, clip_lo, clip_hi, bits, kWhere);
  return detail_learned_clip::fake_quantize_rows(
      x, [&](Eigen::Index r) -> Scalar { return clip_lo(r); }, [&](Eigen::Index r) -> Scalar { return clip_hi(r); },
      bits);
}

/// Gradients of a loss L through learned_clip_fake_quantize(x, clip_lo,
/// clip_hi, bits) given grad_out = ∂L/∂x̂ (same shape as x), per-tensor clip.
template <class Derived, class GDerived>
LearnedClipGrad<PlainMatrixOf<Derived>, typename Derived::Scalar> learned_clip_grad(
    const Eigen::MatrixBase<Derived>& x, typename Derived::Scalar clip_lo, typename Derived::Scalar clip_hi,
    int bits, const Eigen::MatrixBase<GDerived>& grad_out) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::learned_clip_grad";
  detail_learned_clip::check_x(x, bits, kWhere);
  detail_learned_clip::check_bounds(clip_lo, clip_hi, bits, detail_learned_clip::BoundIndex{-1}, kWhere);
  detail_learned_clip::check_grad_out(x, grad_out, kWhere);
  auto [grad_x, sums] = detail_learned_clip::grad_rows(
      x, [&](Eigen::Index) -> Scalar { return clip_lo; }, [&](Eigen::Index) -> Scalar { return clip_hi; }, bits,
      grad_out);
  const detail_learned_clip::BoundIndex tensor{-1};
  return {std::move(grad_x),
          detail_learned_clip::bound_gradient<Scalar>(sums.lo.sum(), sums.exponent, "clip_lo", tensor, kWhere),
          detail_learned_clip::bound_gradient<Scalar>(sums.hi.sum(), sums.exponent, "clip_hi", tensor, kWhere)};
}

/// Gradients through the per-row learned clip; clip_lo and clip_hi of the
/// result are column vectors like the bounds.
template <class Derived, class LoDerived, class HiDerived, class GDerived>
LearnedClipGrad<PlainMatrixOf<Derived>, Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>>
learned_clip_grad(const Eigen::MatrixBase<Derived>& x, const Eigen::MatrixBase<LoDerived>& clip_lo,
                  const Eigen::MatrixBase<HiDerived>& clip_hi, int bits,
                  const Eigen::MatrixBase<GDerived>& grad_out) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::learned_clip_grad";
  detail_learned_clip::check_per_row(x, clip_lo, clip_hi, bits, kWhere);
  detail_learned_clip::check_grad_out(x, grad_out, kWhere);
  auto [grad_x, sums] = detail_learned_clip::grad_rows(
      x, [&](Eigen::Index r) -> Scalar { return clip_lo(r); }, [&](Eigen::Index r) -> Scalar { return clip_hi(r); },
      bits, grad_out);
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> grad_lo(x.rows()), grad_hi(x.rows());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const detail_learned_clip::BoundIndex row{r};
    grad_lo(r) = detail_learned_clip::bound_gradient<Scalar>(sums.lo(r), sums.exponent, "clip_lo", row, kWhere);
    grad_hi(r) = detail_learned_clip::bound_gradient<Scalar>(sums.hi(r), sums.exponent, "clip_hi", row, kWhere);
  }
  return {std::move(grad_x), std::move(grad_lo), std::move(grad_hi)};
}

}  // namespace oq::quant
