// oq/analysis/kurtosis.hpp: per-row kurtosis, its gradient, and the kurtosis
// regularizer of Nrusimha et al. 2024 (arXiv 2404.03605).
//
//   auto k  = oq::analysis::row_kurtosis(y);                    // K of every row
//   auto gk = oq::analysis::row_kurtosis_grad(y);               // ∂K(row r)/∂y(r, c)
//   auto r  = oq::analysis::kurtosis_regularizer(y, 1e-5);      // λ·Σ_rows K(row)
//   auto gr = oq::analysis::kurtosis_regularizer_grad(y, 1e-5); // its ∂/∂y
//
// Kurtosis of a row x of n entries (docs/design.md §3, biased moments): d = x − mean,
// m_k = mean(d^k), K = m4 / (m2² + ε), and with D = m2² + ε
//     ∂K/∂x_i = 4/(n·D) · (d_i³ − m3 − (m4·m2/D)·d_i).
// (∂m4/∂x_i = 4/n·(d_i³ − m3) and ∂m2/∂x_i = 2/n·d_i because Σ_j ∂d_j/∂x_i·d_j^k
// = d_i^k − m_k; the quotient rule on m4/D gives the rest.) A Gaussian row has
// K ≈ 3, a uniform one 1.8, a row with one outlier among n entries K ≈ n.
// With ε = 0, K is invariant under x → a·x + b, which is why the gradient sums
// to zero and is orthogonal to x; ε > 0 keeps K bounded (K ≤ m4/ε) and smooth
// as a row approaches a constant.
//
// Regularizer (Nrusimha et al.; docs/design.md §3): y is a linear layer's output with
// one token per row, and λ·Σ_rows K(row) (λ = 1e-5 in the paper) is added to
// the training loss, so that outlier channels do not form in the first place.
// It is meant to be paired with QAT of the layer's input through the learned
// clip of quant/learned_clip.hpp (module header oq/kurtosis.hpp).
//
// Numerics: every row is copied to float64 and reduced in two passes (mean,
// then central moments; never raw power sums, whose cancellation loses all
// digits when |mean| ≫ std). The mean gets the correction term of the
// "corrected two-pass algorithm" (Chan, Golub & LeVeque 1983), mean += Σ(x −
// mean)/n, so that Σ d_i is at rounding level; that is what makes the checks
// Σ_i ∂K/∂x_i = 0 and Σ_i x_i·∂K/∂x_i = 0 hold to double rounding even for
// rows far from zero. The deviations are then scaled by 2^−e1 with max|d| =
// f·2^e1, f ∈ [0.5, 1), so that d⁴ neither overflows nor underflows when
// |mean| ≫ std. A row whose sum or x − mean overflows (near DBL_MAX), or whose
// deviations are below 2^−900 (where the subnormal grid's absolute rounding
// would start to show), is first scaled by 2^−e0 with max|x| = f·2^e0 and
// taken again: then |x| < 1, and subnormal rows become normal. K is
// scale-invariant and both scalings are exact powers of two (for every entry
// that stays normal, i.e. within a factor 2^−1021 of max|x|), so rows give
// the same bits as without them; the gradient, which scales as 1/x, is
// multiplied back by 2^−(e0 + e1), folded into its scalar coefficient for
// rows of ordinary magnitude (as a separate last step where 2^−e alone or the
// coefficient times it would leave the range). Results are cast back to x's
// scalar type. A gradient entry beyond that type's range (with ε = 0 it grows
// as 1/σ: float rows of spread ≲ 1e−38, double rows of spread ≲ 1e−308) is a
// std::domain_error rather than ±inf; ε > 0 bounds it. Ordinary rows pay for
// none of this: the extra passes (x·2^−e0, the range check of the gradient)
// run only where a bound from the row's scalars says they may be needed.
//
// Constant rows (all entries equal; m2 = 0): K = 0 and gradient 0, for every
// ε ≥ 0. For ε > 0 this is what the formula itself gives (m4 = 0, D = ε, and
// every d_i = 0), so the policy only fills in the 0/0 of ε = 0 with the same
// value: a constant row has no outliers and contributes nothing to the
// regularizer (padding tokens, for example). Note that with ε = 0, K is not
// continuous there: a row 1 + 1e-9·noise has the kurtosis of its noise.
//
// Errors: std::invalid_argument for an empty input or a negative / non-finite
// ε or λ; std::domain_error naming the first NaN/Inf entry of the data, or a
// result (gradient entry, λ·ΣK) beyond the range of x's scalar type.
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>
#include <oq/quant/quantize.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <string_view>
#include <type_traits>

namespace oq::analysis {

/// A column vector with one entry per row of a Derived, in its scalar type.
template <class Derived>
using RowValuesOf = Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, 1>;

namespace detail_kurtosis {

// Central moments of one row, in units of 2^exponent (see the file comment).
struct RowMoments {
  bool constant = false;  // all entries equal: K = 0, gradient 0
  int exponent = 0;       // the deviations were multiplied by 2^−exponent (e0 + e1)
  double m2 = 0;          // mean(d'²), d' = (x − mean)·2^−exponent
  double m3 = 0;          // mean(d'³)
  double m4 = 0;          // mean(d'⁴)
  double denom = 0;       // D' = m2² + ε·2^−4·exponent = D·2^−4·exponent

  double kurtosis() const noexcept { return constant ? 0.0 : m4 / denom; }
};

// x·2^−e for every entry, exact (a power of two) unless the result is
// subnormal (detail/power_of_two.hpp).
inline void scale_by_power_of_two(Eigen::ArrayXd& d, int e) {
  const auto factors = detail::inverse_power_of_two<double>(e);
  d *= factors.first;
  d *= factors.second;
}

// Subtracts the mean from every entry of d, with the corrected two-pass term
// (file comment), and returns max|d|: +inf or NaN where the sum of the row or
// x − mean overflowed.
inline double center(Eigen::ArrayXd& d) {
  const double mean = d.mean();
  d -= mean;
  // Corrected two-pass: the rounding error of `mean`, recovered from Σ d.
  d -= d.mean();
  return d.abs().maxCoeff();
}

// Fills `d` with the scaled deviations of `row` and returns its moments.
template <class RowDerived>
RowMoments row_moments(const Eigen::MatrixBase<RowDerived>& row, double epsilon, Eigen::ArrayXd& d) {
  d = row.transpose().template cast<double>().array();
  RowMoments m;
  if (d.minCoeff() == d.maxCoeff()) {
    m.constant = true;
    return m;
  }
  // Not all d are 0 here: two different entries cannot both round to `mean`
  // (and the scaling keeps the largest entry apart from every other one).
  double spread = center(d);
  int e0 = 0;
  // Only rows near DBL_MAX (the sum or x − mean overflowed) or with deviations
  // below 2^−900 are taken again from x·2^−e0 (file comment). Above 2^−900
  // no rounding that the unscaled row commits on the subnormal grid (absolute,
  // ≤ 2^−1075) reaches 2^−174 of max|d|, and ordinary rows skip the pass.
  if (!(spread >= 0x1p-900 && spread <= std::numeric_limits<double>::max())) {
    d = row.transpose().template cast<double>().array();
    std::frexp(d.abs().maxCoeff(), &e0);
    scale_by_power_of_two(d, e0);
    spread = center(d);
  }
  int e1 = 0;
  std::frexp(spread, &e1);
  scale_by_power_of_two(d, e1);
  m.exponent = e0 + e1;
  const Eigen::ArrayXd d2 = d.square();
  m.m2 = d2.mean();
  m.m3 = (d2 * d).mean();
  m.m4 = d2.square().mean();
  // max|d'| ∈ [0.5, 1), so m2 ≥ 0.25/n > 0 and D' > 0. ε·2^−4e may overflow to
  // +inf (ε ≫ m2²), which correctly gives K = 0 and gradient 0 below.
  m.denom = m.m2 * m.m2 + (epsilon == 0.0 ? 0.0 : std::ldexp(epsilon, -4 * m.exponent));
  return m;
}

template <class Derived>
void check_input(const Eigen::MatrixBase<Derived>& x, double epsilon, std::string_view where, std::string_view name) {
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "kurtosis needs a floating-point matrix");
  detail::require(x.rows() > 0 && x.cols() > 0, where, name, " must be non-empty, got ", x.rows(), " x ",
                  x.cols());
  detail::require(std::isfinite(epsilon) && epsilon >= 0.0, where, "epsilon must be finite and >= 0, got ", epsilon);
  detail::require_finite(x, where, name);
}

inline void check_lambda(double lambda, std::string_view where) {
  detail::require(std::isfinite(lambda) && lambda >= 0.0, where, "lambda must be finite and >= 0, got ", lambda);
}

// Σ_rows K(row), accumulated in double.
template <class Derived>
double kurtosis_sum(const Eigen::MatrixBase<Derived>& x, double epsilon) {
  Eigen::ArrayXd d;
  double sum = 0.0;
  for (Eigen::Index r = 0; r < x.rows(); ++r) sum += row_moments(x.row(r), epsilon, d).kurtosis();
  return sum;
}

// "float" or "double", for messages.
template <class Scalar>
constexpr const char* type_name() {
  return sizeof(Scalar) == sizeof(float) ? "float" : "double";
}

// factor · ∂K(row r)/∂x(r, ·) for every row, into grad (x's shape). Throws
// std::domain_error for a row whose gradient exceeds Scalar's range, after
// writing the rows before it.
template <class Derived, class GradDerived>
void kurtosis_grad_into(const Eigen::MatrixBase<Derived>& x, double epsilon, double factor,
                        Eigen::MatrixBase<GradDerived>& grad, std::string_view where) {
  using Scalar = typename GradDerived::Scalar;
  constexpr double kMax = static_cast<double>(std::numeric_limits<Scalar>::max());
  const double n = static_cast<double>(x.cols());
  Eigen::ArrayXd d, g;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const RowMoments m = row_moments(x.row(r), epsilon, d);
    if (m.constant) {
      grad.row(r).setZero();
      continue;
    }
    // In the scaled units d = 2^e·d', m_k = 2^(k·e)·m_k', D = 2^(4e)·D', so
    // 4/(n·D)·(d³ − m3 − (m4·m2/D)·d) = 2^−e · 4/(n·D')·(d'³ − m3' − (m4'·m2'/D')·d').
    const double coefficient = factor * (4.0 / (n * m.denom));
    const double linear = m.m4 * m.m2 / m.denom;
    const auto shape = d.cube() - m.m3 - linear * d;
    // |d'| < 1, |m3'| < 1 and 0 ≤ linear ≤ m4'/m2' ≤ max d'² < 1, so no entry
    // exceeds |coefficient|·2^−e·(1 + |m3'| + linear), up to a few roundings.
    const double reach = (1.0 + std::abs(m.m3) + linear) * (1.0 + 0x1p-50);
    // Rows of ordinary magnitude (|e| ≤ 512): 2^−e folded into the coefficient
    // where that is exact, and no pass over g to check its range where that
    // bound is within Scalar's. (Beyond, entries may be subnormal; the path
    // below rounds them once from the gradient in the scaled units, so that a
    // row times 2^k has exactly 2^−k times its gradient, rounded once.)
    const double folded = std::ldexp(coefficient, -m.exponent);
    if (std::abs(m.exponent) <= 512 && std::ldexp(folded, m.exponent) == coefficient &&
        std::abs(folded) * reach <= kMax) {
      grad.row(r) = (folded * shape).transpose().template cast<Scalar>().matrix();
      continue;
    }
    // Otherwise 2^−e goes on last: on its own it may overflow or underflow
    // (e ≈ ±1074 for rows of subnormals or near DBL_MAX), the products not.
    g = coefficient * shape;
    scale_by_power_of_two(g, m.exponent);
    const double largest = g.abs().maxCoeff();
    detail::require_domain(largest <= kMax, where, "the gradient of row ", r, " reaches ", largest,
                           ", beyond the range of ", type_name<Scalar>(),
                           " (it grows as 1/std of the row, unbounded for epsilon = 0; got epsilon = ", epsilon,
                           "); use epsilon > 0 or double input");
    grad.row(r) = g.transpose().template cast<Scalar>().matrix();
  }
}

template <class Derived>
quant::PlainMatrixOf<Derived> kurtosis_grad(const Eigen::MatrixBase<Derived>& x, double epsilon, double factor,
                                            std::string_view where) {
  quant::PlainMatrixOf<Derived> grad(x.rows(), x.cols());
  kurtosis_grad_into(x, epsilon, factor, grad, where);
  return grad;
}

}  // namespace detail_kurtosis

/// Kurtosis K = m4/(m2² + ε) of every row of x (biased moments, docs/design.md §3).
/// Constant rows get K = 0 (see the file comment).
template <class Derived>
RowValuesOf<Derived> row_kurtosis(const Eigen::MatrixBase<Derived>& x, double epsilon = 0.0) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::analysis::row_kurtosis";
  detail_kurtosis::check_input(x, epsilon, kWhere, "x");
  RowValuesOf<Derived> k(x.rows());
  Eigen::ArrayXd d;
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    k(r) = static_cast<Scalar>(detail_kurtosis::row_moments(x.row(r), epsilon, d).kurtosis());
  return k;
}

/// ∂K(row r)/∂x(r, c) for every entry of x (entries of different rows do not
/// interact), same shape and storage order as x. Zero on constant rows.
template <class Derived>
quant::PlainMatrixOf<Derived> row_kurtosis_grad(const Eigen::MatrixBase<Derived>& x, double epsilon = 0.0) {
  constexpr std::string_view kWhere = "oq::analysis::row_kurtosis_grad";
  detail_kurtosis::check_input(x, epsilon, kWhere, "x");
  return detail_kurtosis::kurtosis_grad(x, epsilon, 1.0, kWhere);
}

/// The kurtosis regularizer λ·Σ_rows K(row of y) of Nrusimha et al.
/// (docs/design.md §3) for a layer output y with one token per row.
template <class Derived>
typename Derived::Scalar kurtosis_regularizer(const Eigen::MatrixBase<Derived>& y, double lambda,
                                              double epsilon = 0.0) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  const double value = lambda * detail_kurtosis::kurtosis_sum(y, epsilon);
  detail::require_domain(value <= static_cast<double>(std::numeric_limits<Scalar>::max()), kWhere,
                         "lambda * sum of K = ", value, " is beyond the range of ",
                         detail_kurtosis::type_name<Scalar>());
  return static_cast<Scalar>(value);
}

/// ∂/∂y of kurtosis_regularizer(y, lambda, epsilon): λ·∂K(row r)/∂y(r, c).
template <class Derived>
quant::PlainMatrixOf<Derived> kurtosis_regularizer_grad(const Eigen::MatrixBase<Derived>& y, double lambda,
                                                        double epsilon = 0.0) {
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer_grad";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  return detail_kurtosis::kurtosis_grad(y, epsilon, lambda, kWhere);
}

/// kurtosis_regularizer_grad written into `out` (same shape as y; a block or
/// map of the caller's buffer, taken as a const reference and written
/// through): no allocation, for training loops that reuse their buffers. If a
/// row's gradient is beyond the scalar type's range (std::domain_error), the
/// rows before it have been written.
template <class Derived, class OutDerived>
void kurtosis_regularizer_grad_into(const Eigen::MatrixBase<Derived>& y, double lambda, double epsilon,
                                    const Eigen::MatrixBase<OutDerived>& out_) {
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer_grad_into";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  auto& out = const_cast<Eigen::MatrixBase<OutDerived>&>(out_);
  detail::require(out.rows() == y.rows() && out.cols() == y.cols(), kWhere, "out must be ", y.rows(), " x ",
                  y.cols(), " like y, got ", out.rows(), " x ", out.cols());
  detail_kurtosis::kurtosis_grad_into(y, epsilon, lambda, out, kWhere);
}

}  // namespace oq::analysis
