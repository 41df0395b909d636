// oq/analysis/kurtosis.hpp: per-row kurtosis, its gradient, and the kurtosis
// regularizer of Nrusimha et al. 2024 (arXiv 2404.03605).
//
//   auto k  = oq::analysis::row_kurtosis(y);                    // K of every row
//   auto gk = oq::analysis::row_kurtosis_grad(y);               // ∂K(row r)/∂y(r, c)
//   auto r  = oq::analysis::kurtosis_regularizer(y, 1e-5);      // λ·Σ_rows K(row)
//   auto gr = oq::analysis::kurtosis_regularizer_grad(y, 1e-5); // its ∂/∂y
//
// Kurtosis of a row x of n entries (DESIGN §3, biased moments): d = x − mean,
// m_k = mean(d^k), K = m4 / (m2² + ε), and with D = m2² + ε
//     ∂K/∂x_i = 4/(n·D) · (d_i³ − m3 − (m4·m2/D)·d_i).
// (∂m4/∂x_i = 4/n·(d_i³ − m3) and ∂m2/∂x_i = 2/n·d_i because Σ_j ∂d_j/∂x_i·d_j^k
// = d_i^k − m_k; the quotient rule on m4/D gives the rest.) A Gaussian row has
// K ≈ 3, a uniform one 1.8, a row with one outlier among n entries K ≈ n.
// With ε = 0, K is invariant under x → a·x + b, which is why the gradient sums
// to zero and is orthogonal to x; ε > 0 keeps K bounded (K ≤ m4/ε) and smooth
// as a row approaches a constant.
//
// Regularizer (Nrusimha et al.; DESIGN §3): y is a linear layer's output with
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
// rows far from zero. The deviations are then scaled by an exact power of two,
// 2^−e with max|d| = f·2^e, f ∈ [0.5, 1), so that d⁴ neither overflows
// (|d| > 1e77) nor underflows for extreme float64 rows; K is scale-invariant
// and the scaling is exact, so ordinary rows give the same bits as without it.
// Results are cast back to x's scalar type.
//
// Constant rows (all entries equal; m2 = 0): K = 0 and gradient 0, for every
// ε ≥ 0. For ε > 0 this is what the formula itself gives (m4 = 0, D = ε, and
// every d_i = 0), so the policy only fills in the 0/0 of ε = 0 with the same
// value: a constant row has no outliers and contributes nothing to the
// regularizer (padding tokens, for example). Note that with ε = 0, K is not
// continuous there: a row 1 + 1e-9·noise has the kurtosis of its noise.
//
// Errors: std::invalid_argument for an empty input or a negative / non-finite
// ε or λ; std::domain_error naming the first NaN/Inf entry of the data.
#pragma once

#include <oq/detail/check.hpp>
#include <oq/quant/quantize.hpp>

#include <Eigen/Core>

#include <cmath>
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
  int exponent = 0;       // the deviations were multiplied by 2^−exponent
  double m2 = 0;          // mean(d'²), d' = (x − mean)·2^−exponent
  double m3 = 0;          // mean(d'³)
  double m4 = 0;          // mean(d'⁴)
  double denom = 0;       // D' = m2² + ε·2^−4·exponent = D·2^−4·exponent

  double kurtosis() const noexcept { return constant ? 0.0 : m4 / denom; }
};

// x·2^−e for every entry, exact (a power of two) unless the result is
// subnormal; split in two factors so that 2^−e itself never overflows.
inline void scale_by_power_of_two(Eigen::ArrayXd& d, int e) {
  const int half = e / 2;
  d *= std::ldexp(1.0, -half);
  d *= std::ldexp(1.0, half - e);
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
  const double mean = d.mean();
  d -= mean;
  // Corrected two-pass: the rounding error of `mean`, recovered from Σ d.
  d -= d.mean();
  // Not all d are 0 here: two different entries cannot both round to `mean`.
  std::frexp(d.abs().maxCoeff(), &m.exponent);
  scale_by_power_of_two(d, m.exponent);
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

// factor · ∂K(row r)/∂x(r, ·) for every row, into grad (x's shape).
template <class Derived, class GradDerived>
void kurtosis_grad_into(const Eigen::MatrixBase<Derived>& x, double epsilon, double factor,
                        Eigen::MatrixBase<GradDerived>& grad) {
  using Scalar = typename GradDerived::Scalar;
  const double n = static_cast<double>(x.cols());
  Eigen::ArrayXd d;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const RowMoments m = row_moments(x.row(r), epsilon, d);
    if (m.constant) {
      grad.row(r).setZero();
      continue;
    }
    // In the scaled units d = 2^e·d', m_k = 2^(k·e)·m_k', D = 2^(4e)·D', so
    // 4/(n·D)·(d³ − m3 − (m4·m2/D)·d) = 2^−e · 4/(n·D')·(d'³ − m3' − (m4'·m2'/D')·d').
    const double coefficient = factor * std::ldexp(4.0 / (n * m.denom), -m.exponent);
    const double linear = m.m4 * m.m2 / m.denom;
    grad.row(r) = (coefficient * (d.cube() - m.m3 - linear * d)).transpose().template cast<Scalar>().matrix();
  }
}

template <class Derived>
quant::PlainMatrixOf<Derived> kurtosis_grad(const Eigen::MatrixBase<Derived>& x, double epsilon, double factor) {
  quant::PlainMatrixOf<Derived> grad(x.rows(), x.cols());
  kurtosis_grad_into(x, epsilon, factor, grad);
  return grad;
}

}  // namespace detail_kurtosis

/// Kurtosis K = m4/(m2² + ε) of every row of x (biased moments, DESIGN §3).
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
  return detail_kurtosis::kurtosis_grad(x, epsilon, 1.0);
}

/// The kurtosis regularizer λ·Σ_rows K(row of y) of Nrusimha et al. (DESIGN
/// §3) for a layer output y with one token per row.
template <class Derived>
typename Derived::Scalar kurtosis_regularizer(const Eigen::MatrixBase<Derived>& y, double lambda,
                                              double epsilon = 0.0) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  return static_cast<Scalar>(lambda * detail_kurtosis::kurtosis_sum(y, epsilon));
}

/// ∂/∂y of kurtosis_regularizer(y, lambda, epsilon): λ·∂K(row r)/∂y(r, c).
template <class Derived>
quant::PlainMatrixOf<Derived> kurtosis_regularizer_grad(const Eigen::MatrixBase<Derived>& y, double lambda,
                                                        double epsilon = 0.0) {
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer_grad";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  return detail_kurtosis::kurtosis_grad(y, epsilon, lambda);
}

/// kurtosis_regularizer_grad written into `out` (same shape as y; a block or
/// map of the caller's buffer, taken as a const reference and written
/// through): no allocation, for training loops that reuse their buffers.
template <class Derived, class OutDerived>
void kurtosis_regularizer_grad_into(const Eigen::MatrixBase<Derived>& y, double lambda, double epsilon,
                                    const Eigen::MatrixBase<OutDerived>& out_) {
  constexpr std::string_view kWhere = "oq::analysis::kurtosis_regularizer_grad_into";
  detail_kurtosis::check_lambda(lambda, kWhere);
  detail_kurtosis::check_input(y, epsilon, kWhere, "y");
  auto& out = const_cast<Eigen::MatrixBase<OutDerived>&>(out_);
  detail::require(out.rows() == y.rows() && out.cols() == y.cols(), kWhere, "out must be ", y.rows(), " x ",
                  y.cols(), " like y, got ", out.rows(), " x ", out.cols());
  detail_kurtosis::kurtosis_grad_into(y, epsilon, lambda, out);
}

}  // namespace oq::analysis
