// oq/transform/smoothing.hpp: SmoothQuant smoothing (Xiao et al. 2023, docs/design.md §4).
//
// For a linear layer y = X·Wᵀ (X tokens × C, W out × C, column j of W
// multiplies channel j) any positive vector s gives, exactly up to rounding,
//     y = (X·diag(s)⁻¹)·(W·diag(s))ᵀ = X̂·Ŵᵀ.
// LLM activations have a few channels far larger than the rest, which set the
// step of every per-token quantizer; weights are flat. The paper's eq. 4,
//     s_j = max|X_j|^α / max|W_j|^(1−α),
// moves part of each channel's range from X into W: α = 1 makes every column
// of X̂ peak at 1, α = 0 every column of Ŵ, α = 0.5 (the default) splits it.
//
// Floors (as the authors' release, smoothquant/smooth.py, does;
// docs/design.md §4): max|W_j| is floored at weight_floor = 1e-5 before
// the division, so an all-zero weight column gives a finite s, and s_j is
// floored at scale_floor = 1e-5, so a channel that is zero in the calibration
// data (max|X_j| = 0, α > 0) does not get s_j = 0. Activation maxima are not
// floored (neither are they in the release); std::pow(0, 0) = 1, so α = 0 with
// a dead channel gives s_j = 1 / max|W_j|, as in PyTorch.
//
// Folding (docs/design.md §4): X̂ = X·diag(s)⁻¹ need never be computed at run time.
// The division goes into whatever produced X, when that is channel-wise
// linear: the RMSNorm weight γ (γ_j / s_j), the LayerNorm weight and bias
// (both / s_j), or the rows of a previous linear whose output is X (row j of
// W_prev and bias_j / s_j). The last is valid only when the path from that
// linear's output channel j to X's channel j is homogeneous of degree one in
// that channel: v_proj → attention → o_proj (attention mixes tokens, not
// channels), up_proj → SiLU(gate)·up → down_proj; not fc1 → GELU → fc2.
// Linears that share one input (q/k/v; gate/up) must share s, with max|W_j|
// taken over all of them (weight_channel_absmax(wq, wk, wv)).
//
//   using namespace oq::transform;
//   Eigen::VectorXf act_max = activation_channel_absmax(x_calib);   // calibration
//   Eigen::VectorXf s = smoothing_scales(act_max, weight_channel_absmax(wq, wk, wv), {.alpha = 0.5});
//   fold_into_rms_norm(gamma, s);                                   // X̂ for free
//   for (Eigen::MatrixXf* w : {&wq, &wk, &wv}) smooth_weights_in_place(*w, s);
//
// search_smoothing_alpha() picks α on calibration data by the quantized
// layer's output error. Every function validates its inputs: shapes and
// parameters throw std::invalid_argument, NaN/Inf data std::domain_error
// naming the first bad entry (detail/check.hpp), and so does a scaling whose
// result would overflow the scalar type (checked before anything is written).
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::transform {

/// One value per input channel.
template <class Scalar>
using ChannelVector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

inline constexpr double kDefaultAlpha = 0.5;     ///< the paper's default migration strength
inline constexpr double kWeightMaxFloor = 1e-5;  ///< smooth.py: weight_scales.clamp(min=1e-5)
inline constexpr double kScaleFloor = 1e-5;      ///< smooth.py: scales.clamp(min=1e-5)

struct SmoothingOptions {
  double alpha = kDefaultAlpha;           ///< migration strength α, in [0, 1]
  double weight_floor = kWeightMaxFloor;  ///< max|W_j| is raised to this before the division, > 0
  double scale_floor = kScaleFloor;       ///< s_j is raised to this, > 0
};

/// 0, 0.05, …, 1 (21 values, each k/20, so 0 and 1 are exact).
inline std::vector<double> default_alpha_grid() {
  std::vector<double> grid;
  for (int k = 0; k <= 20; ++k) grid.push_back(k / 20.0);
  return grid;
}

struct AlphaSearchOptions {
  std::vector<double> alphas = default_alpha_grid();  ///< non-empty, each in [0, 1]
  double weight_floor = kWeightMaxFloor;              ///< as in SmoothingOptions
  double scale_floor = kScaleFloor;                   ///< as in SmoothingOptions
};

template <class Scalar>
struct AlphaSearchResult {
  double alpha = 0;              ///< the α with the smallest error (ties: the earliest in the grid)
  double error = 0;              ///< Σ_linears ‖Q_a(X̂)·Q_w(Ŵ)ᵀ − X·Wᵀ‖_F² at alpha (+inf beyond double's range)
  ChannelVector<Scalar> scales;  ///< s at alpha
  std::vector<double> alphas;    ///< every α tried, in grid order
  std::vector<double> errors;    ///< the error at each of them
};

namespace detail_smoothing {

// Entry j of a row or column vector expression (either orientation is taken:
// callers hold γ and s in whichever they like).
template <class Derived>
decltype(auto) entry(const Eigen::MatrixBase<Derived>& v, Eigen::Index j) {
  return v.rows() == 1 ? v(0, j) : v(j, 0);
}
template <class Derived>
typename Derived::Scalar& entry(Eigen::MatrixBase<Derived>& v, Eigen::Index j) {
  return v.rows() == 1 ? v(0, j) : v(j, 0);
}

template <class Derived>
void require_vector(const Eigen::MatrixBase<Derived>& v, Eigen::Index size, std::string_view where,
                    std::string_view name) {
  detail::require(v.rows() == 1 || v.cols() == 1, where, name, " must be a vector, got ", v.rows(), " x ", v.cols());
  detail::require(v.size() == size, where, name, " must have ", size, " entries (one per channel), got ", v.size());
}

// Scales are parameters (like QuantParams::scale, quant/params.hpp): a bad one
// is a malformed argument, not data out of the domain.
template <class Derived>
void check_scales(const Eigen::MatrixBase<Derived>& scales, Eigen::Index channels, std::string_view where) {
  require_vector(scales, channels, where, "scales");
  for (Eigen::Index j = 0; j < scales.size(); ++j) {
    const auto s = entry(scales, j);
    detail::require(std::isfinite(s) && s > 0, where, "scales(", j, ") must be positive and finite, got ", s);
  }
}

// Per-channel maxima: finite (std::domain_error) and ≥ 0.
template <class Derived>
void check_maxima(const Eigen::MatrixBase<Derived>& maxima, Eigen::Index channels, std::string_view where,
                  std::string_view name) {
  require_vector(maxima, channels, where, name);
  detail::require_finite(maxima, where, name);
  for (Eigen::Index j = 0; j < maxima.size(); ++j) {
    detail::require(entry(maxima, j) >= 0, where, name, "(", j, ") must be >= 0, got ", entry(maxima, j));
  }
}

inline void check_floors(double weight_floor, double scale_floor, std::string_view where) {
  detail::require(std::isfinite(weight_floor) && weight_floor > 0, where,
                  "options.weight_floor must be positive and finite, got ", weight_floor);
  detail::require(std::isfinite(scale_floor) && scale_floor > 0, where,
                  "options.scale_floor must be positive and finite, got ", scale_floor);
}

inline void check_alpha(double alpha, std::string_view where, std::string_view name) {
  detail::require(alpha >= 0.0 && alpha <= 1.0, where, name, " must be in [0, 1], got ", alpha);
}

template <class Derived>
ChannelVector<typename Derived::Scalar> activation_absmax(const Eigen::MatrixBase<Derived>& x, std::string_view where) {
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require_finite(x, where, "x");
  return x.cwiseAbs().colwise().maxCoeff().transpose();
}

// Checks weights[index] against the channel count and folds its column maxima
// into `maxima` (empty on the first call).
template <class Derived>
void accumulate_weight_absmax(ChannelVector<typename Derived::Scalar>& maxima, const Eigen::MatrixBase<Derived>& w,
                              std::size_t index, Eigen::Index channels, std::string_view where) {
  detail::require(w.rows() > 0 && w.cols() > 0, where, "weights[", index, "] must be non-empty, got ", w.rows(), " x ",
                  w.cols());
  detail::require(w.cols() == channels, where, "weights[", index, "] must have ", channels,
                  " columns (the input channels of weights[0]), got ", w.cols());
  if (!w.allFinite()) {
    // Name the list entry in the message, as the other checks do.
    std::string name = "weights[" + std::to_string(index) + "]";
    detail::require_finite(w, where, name);
  }
  const ChannelVector<typename Derived::Scalar> column_max = w.cwiseAbs().colwise().maxCoeff().transpose();
  maxima = maxima.size() == 0 ? column_max : maxima.cwiseMax(column_max).eval();
}

template <class ActDerived, class WeightDerived>
ChannelVector<typename ActDerived::Scalar> scales(const Eigen::MatrixBase<ActDerived>& act_max,
                                                  const Eigen::MatrixBase<WeightDerived>& weight_max, double alpha,
                                                  double weight_floor, double scale_floor, std::string_view where) {
  using Scalar = typename ActDerived::Scalar;
  static_assert(std::is_same_v<Scalar, typename WeightDerived::Scalar>,
                "act_max and weight_max must have the same scalar type");
  detail::require(act_max.size() > 0, where, "act_max must be non-empty, got ", act_max.rows(), " x ", act_max.cols());
  check_maxima(act_max, act_max.size(), where, "act_max");
  check_maxima(weight_max, act_max.size(), where, "weight_max");
  check_floors(weight_floor, scale_floor, where);
  ChannelVector<Scalar> s(act_max.size());
  for (Eigen::Index j = 0; j < s.size(); ++j) {
    // Eq. 4 with smooth.py's two floors, in double: C values, so the cost is
    // nothing, and float callers get s within float rounding of the formula.
    const double a = static_cast<double>(entry(act_max, j));
    const double w = std::max(static_cast<double>(entry(weight_max, j)), weight_floor);
    const double value = std::max(std::pow(a, alpha) / std::pow(w, 1.0 - alpha), scale_floor);
    s(j) = static_cast<Scalar>(value);
    // s must be usable in Scalar, where X̂ = X·diag(s)⁻¹ is computed: a tiny
    // weight_floor (or weight maxima) can take it past the type's range, a
    // scale_floor below the smallest normal to 0 or a subnormal (whose
    // reciprocal overflows). s ≥ scale_floor in double, and rounding is
    // monotone, so only a scale_floor below that normal can give the latter.
    detail::require(std::isfinite(s(j)), where, "scales(", j, ") = ", value, " overflows the scalar type (max ",
                    std::numeric_limits<Scalar>::max(), "): raise options.weight_floor (got ", weight_floor, ")");
    detail::require(s(j) >= std::numeric_limits<Scalar>::min(), where, "scales(", j, ") = ", value,
                    " is below the smallest normal value of the scalar type (", std::numeric_limits<Scalar>::min(),
                    "): raise options.scale_floor (got ", scale_floor, ")");
  }
  return s;
}

// Throws std::domain_error, before anything is written, when m's columns (its
// rows, with by_rows) divided by (or times) scales would overflow: rounding
// is monotone, so the entry of largest magnitude in each decides, in the
// scaling's own Scalar arithmetic. One pass over m.
template <class Derived, class ScalesDerived>
void require_scaling_finite(const Eigen::MatrixBase<Derived>& m, const Eigen::MatrixBase<ScalesDerived>& scales,
                            bool divide, bool by_rows, std::string_view where, std::string_view name) {
  using Scalar = typename Derived::Scalar;
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> peaks;
  if (by_rows) {
    peaks = m.cwiseAbs().rowwise().maxCoeff();
  } else {
    peaks = m.cwiseAbs().colwise().maxCoeff().transpose();
  }
  for (Eigen::Index j = 0; j < peaks.size(); ++j) {
    const Scalar s = entry(scales, j);
    const Scalar scaled = divide ? peaks(j) / s : peaks(j) * s;
    detail::require_domain(std::isfinite(scaled), where, name, by_rows ? " row " : " column ", j,
                           divide ? " divided by " : " times ", "scales(", j, ") = ", s,
                           " overflows the scalar type (its largest |entry| is ", peaks(j), ")");
  }
}

// The same for the entries of a vector divided by scales.
template <class Derived, class ScalesDerived>
void require_division_finite(const Eigen::MatrixBase<Derived>& v, const Eigen::MatrixBase<ScalesDerived>& scales,
                             std::string_view where, std::string_view name) {
  for (Eigen::Index j = 0; j < v.size(); ++j) {
    const auto quotient = entry(v, j) / entry(scales, j);
    detail::require_domain(std::isfinite(quotient), where, name, "(", j, ") / scales(", j, ") = ", entry(v, j), " / ",
                           entry(scales, j), " overflows the scalar type");
  }
}

// Divides (or multiplies) column j of m by scales(j) after checking that
// nothing overflows; m is written through.
template <class Derived, class ScalesDerived>
void scale_columns(Eigen::MatrixBase<Derived>& m, const Eigen::MatrixBase<ScalesDerived>& scales, bool divide,
                   std::string_view where, std::string_view name) {
  require_scaling_finite(m, scales, divide, /*by_rows=*/false, where, name);
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    const auto s = entry(scales, j);
    if (divide) {
      m.col(j) /= s;
    } else {
      m.col(j) *= s;
    }
  }
}

// Divides entry j of the vector v by scales(j); v is written through.
template <class Derived, class ScalesDerived>
void divide_entries(Eigen::MatrixBase<Derived>& v, const Eigen::MatrixBase<ScalesDerived>& scales) {
  for (Eigen::Index j = 0; j < v.size(); ++j) entry(v, j) /= entry(scales, j);
}

template <class A, class B>
constexpr void require_same_scalar() {
  static_assert(std::is_same_v<typename A::Scalar, typename B::Scalar>,
                "oq::transform: all matrices and scales must have the same scalar type");
}

}  // namespace detail_smoothing

/// max_i |X_ij| for every channel j of the activations X (tokens × C): the
/// calibration statistic of eq. 4. Over several batches, combine with
/// cwiseMax. Throws std::invalid_argument for an empty x, std::domain_error
/// naming its first NaN/Inf entry.
template <class Derived>
ChannelVector<typename Derived::Scalar> activation_channel_absmax(const Eigen::MatrixBase<Derived>& x) {
  return detail_smoothing::activation_absmax(x, "oq::transform::activation_channel_absmax");
}

/// max over all the given weights (each out_k × C) of max_i |W_ij|, for every
/// input channel j: linears that share one input share s (docs/design.md §4).
/// Throws std::invalid_argument when a weight is empty or its column count
/// differs from the first one's (naming it weights[k]).
template <class Derived, class... More>
ChannelVector<typename Derived::Scalar> weight_channel_absmax(const Eigen::MatrixBase<Derived>& w,
                                                              const Eigen::MatrixBase<More>&... more) {
  (detail_smoothing::require_same_scalar<Derived, More>(), ...);
  constexpr std::string_view kWhere = "oq::transform::weight_channel_absmax";
  ChannelVector<typename Derived::Scalar> maxima;
  detail_smoothing::accumulate_weight_absmax(maxima, w, 0, w.cols(), kWhere);
  [[maybe_unused]] std::size_t index = 1;
  (detail_smoothing::accumulate_weight_absmax(maxima, more, index++, w.cols(), kWhere), ...);
  return maxima;
}

/// The same for a list of weights (non-empty); WMatrix is any Eigen matrix type.
template <class WMatrix>
ChannelVector<typename WMatrix::Scalar> weight_channel_absmax(const std::vector<WMatrix>& weights) {
  constexpr std::string_view kWhere = "oq::transform::weight_channel_absmax";
  detail::require(!weights.empty(), kWhere, "weights must hold at least one matrix");
  ChannelVector<typename WMatrix::Scalar> maxima;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    detail_smoothing::accumulate_weight_absmax(maxima, weights[k], k, weights[0].cols(), kWhere);
  }
  return maxima;
}

/// s_j = max(max|X_j|^α / max(max|W_j|, weight_floor)^(1−α), scale_floor)
/// (paper eq. 4, docs/design.md §4, floors as in smooth.py). act_max and weight_max
/// are row or column vectors of the same length C, finite and ≥ 0 (from
/// activation_channel_absmax and weight_channel_absmax, or your own
/// calibration). Throws std::invalid_argument for α outside [0, 1], floors
/// ≤ 0, lengths that differ, negative maxima, or an s_j that the scalar type
/// cannot hold as a finite normal value (naming the floor to raise);
/// std::domain_error for NaN/Inf.
template <class ActDerived, class WeightDerived>
ChannelVector<typename ActDerived::Scalar> smoothing_scales(const Eigen::MatrixBase<ActDerived>& act_max,
                                                            const Eigen::MatrixBase<WeightDerived>& weight_max,
                                                            const SmoothingOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::transform::smoothing_scales";
  detail_smoothing::check_alpha(options.alpha, kWhere, "options.alpha");
  return detail_smoothing::scales(act_max, weight_max, options.alpha, options.weight_floor, options.scale_floor,
                                  kWhere);
}

/// X ← X·diag(s)⁻¹, in place; x is any writable Eigen expression (a matrix, a
/// block, a map), taken by const reference and written through as in
/// oq::quant::fake_quantize_into. Use it to smooth calibration data or when
/// the division cannot be folded. Throws std::invalid_argument unless s has
/// x.cols() positive finite entries, std::domain_error (x untouched) when a
/// quotient would overflow.
template <class Derived, class ScalesDerived>
void smooth_activations_in_place(const Eigen::MatrixBase<Derived>& x_, const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<Derived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::smooth_activations_in_place";
  detail::require(x_.rows() > 0 && x_.cols() > 0, kWhere, "x must be non-empty, got ", x_.rows(), " x ", x_.cols());
  detail_smoothing::check_scales(scales, x_.cols(), kWhere);
  detail::require_finite(x_, kWhere, "x");
  auto& x = const_cast<Eigen::MatrixBase<Derived>&>(x_);
  detail_smoothing::scale_columns(x, scales, /*divide=*/true, kWhere, "x");
}

/// W ← W·diag(s), in place (column j times s_j); w is out × C. Apply it to
/// every linear that reads the smoothed input.
template <class Derived, class ScalesDerived>
void smooth_weights_in_place(const Eigen::MatrixBase<Derived>& w_, const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<Derived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::smooth_weights_in_place";
  detail::require(w_.rows() > 0 && w_.cols() > 0, kWhere, "w must be non-empty, got ", w_.rows(), " x ", w_.cols());
  detail_smoothing::check_scales(scales, w_.cols(), kWhere);
  detail::require_finite(w_, kWhere, "w");
  auto& w = const_cast<Eigen::MatrixBase<Derived>&>(w_);
  detail_smoothing::scale_columns(w, scales, /*divide=*/false, kWhere, "w");
}

/// γ ← γ / s for the RMSNorm y = x / rms(x) ∘ γ that produces X: the norm then
/// outputs X̂ (docs/design.md §4). gamma is a vector of C entries, written through.
template <class GammaDerived, class ScalesDerived>
void fold_into_rms_norm(const Eigen::MatrixBase<GammaDerived>& gamma_, const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<GammaDerived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::fold_into_rms_norm";
  detail::require(scales.size() > 0, kWhere, "scales must be non-empty");
  detail_smoothing::check_scales(scales, scales.size(), kWhere);
  detail_smoothing::require_vector(gamma_, scales.size(), kWhere, "gamma");
  detail::require_finite(gamma_, kWhere, "gamma");
  detail_smoothing::require_division_finite(gamma_, scales, kWhere, "gamma");
  auto& gamma = const_cast<Eigen::MatrixBase<GammaDerived>&>(gamma_);
  detail_smoothing::divide_entries(gamma, scales);
}

/// γ ← γ / s and β ← β / s for the LayerNorm y = (x − μ)/σ ∘ γ + β: both terms
/// of its output are divided, so both parameters are (smooth.py does the same).
template <class GammaDerived, class BetaDerived, class ScalesDerived>
void fold_into_layer_norm(const Eigen::MatrixBase<GammaDerived>& gamma_, const Eigen::MatrixBase<BetaDerived>& beta_,
                          const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<GammaDerived, ScalesDerived>();
  detail_smoothing::require_same_scalar<BetaDerived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::fold_into_layer_norm";
  detail::require(scales.size() > 0, kWhere, "scales must be non-empty");
  detail_smoothing::check_scales(scales, scales.size(), kWhere);
  detail_smoothing::require_vector(gamma_, scales.size(), kWhere, "gamma");
  detail_smoothing::require_vector(beta_, scales.size(), kWhere, "beta");
  detail::require_finite(gamma_, kWhere, "gamma");
  detail::require_finite(beta_, kWhere, "beta");
  detail_smoothing::require_division_finite(gamma_, scales, kWhere, "gamma");
  detail_smoothing::require_division_finite(beta_, scales, kWhere, "beta");
  auto& gamma = const_cast<Eigen::MatrixBase<GammaDerived>&>(gamma_);
  auto& beta = const_cast<Eigen::MatrixBase<BetaDerived>&>(beta_);
  detail_smoothing::divide_entries(gamma, scales);
  detail_smoothing::divide_entries(beta, scales);
}

/// Row j of w_prev (C × in_prev) divided by s_j, for a previous linear whose
/// output channel j reaches X's channel j through channel-wise homogeneous
/// operations only (see the file comment).
template <class WDerived, class ScalesDerived>
void fold_into_previous_linear(const Eigen::MatrixBase<WDerived>& w_prev_,
                               const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<WDerived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::fold_into_previous_linear";
  detail::require(scales.size() > 0, kWhere, "scales must be non-empty");
  detail_smoothing::check_scales(scales, scales.size(), kWhere);
  detail::require(w_prev_.rows() == scales.size() && w_prev_.cols() > 0, kWhere, "w_prev must have ", scales.size(),
                  " rows (one per smoothed channel) and at least one column, got ", w_prev_.rows(), " x ",
                  w_prev_.cols());
  detail::require_finite(w_prev_, kWhere, "w_prev");
  detail_smoothing::require_scaling_finite(w_prev_, scales, /*divide=*/true, /*by_rows=*/true, kWhere, "w_prev");
  auto& w_prev = const_cast<Eigen::MatrixBase<WDerived>&>(w_prev_);
  for (Eigen::Index j = 0; j < w_prev.rows(); ++j) w_prev.row(j) /= detail_smoothing::entry(scales, j);
}

/// The same, with the previous linear's bias (C entries): bias_j / s_j.
template <class WDerived, class BiasDerived, class ScalesDerived>
void fold_into_previous_linear(const Eigen::MatrixBase<WDerived>& w_prev_,
                               const Eigen::MatrixBase<BiasDerived>& bias_prev_,
                               const Eigen::MatrixBase<ScalesDerived>& scales) {
  detail_smoothing::require_same_scalar<BiasDerived, ScalesDerived>();
  constexpr std::string_view kWhere = "oq::transform::fold_into_previous_linear";
  detail::require(scales.size() > 0, kWhere, "scales must be non-empty");
  detail_smoothing::check_scales(scales, scales.size(), kWhere);
  detail_smoothing::require_vector(bias_prev_, scales.size(), kWhere, "bias_prev");
  detail::require_finite(bias_prev_, kWhere, "bias_prev");
  detail_smoothing::require_division_finite(bias_prev_, scales, kWhere, "bias_prev");  // before w_prev is written
  fold_into_previous_linear(w_prev_, scales);
  auto& bias_prev = const_cast<Eigen::MatrixBase<BiasDerived>&>(bias_prev_);
  detail_smoothing::divide_entries(bias_prev, scales);
}

namespace detail_smoothing {

// The exponent scale_to_unit gives a zero matrix: below any product of
// finite doubles' exponents (a zero product must not set the units that the
// other term of a difference is brought to), and far enough from INT_MIN
// that sums of two or four of them do not overflow.
inline constexpr int kZeroExponent = std::numeric_limits<int>::min() / 8;

// m ← m·2^−e, e the exponent of its largest |entry| (frexp's: that entry is
// f·2^e, f ∈ [0.5, 1)), so every entry lies in [−1, 1]; returns e, or
// kZeroExponent for a zero matrix. Two normal factors
// (detail/power_of_two.hpp), each applied on its own: the scaling is exact
// wherever an entry stays normal.
inline int scale_to_unit(Eigen::MatrixXd& m) {
  const double peak = m.size() == 0 ? 0.0 : m.cwiseAbs().maxCoeff();
  if (peak == 0) return kZeroExponent;
  int e = 0;
  std::frexp(peak, &e);
  const detail::PowerOfTwoFactors<double> factors = detail::inverse_power_of_two<double>(e);
  m *= factors.first;
  m *= factors.second;
  return e;
}

// A sum of non-negative terms held as sum·2^exponent, so that the α search's
// errors neither overflow (X and W near 2^500 each: squared errors near
// 2^2000) nor underflow (near 2^−540: 2^−2160) before they are compared.
struct ScaledSum {
  double sum = 0;
  int exponent = 0;

  // += term·2^term_exponent, the smaller addend brought to the larger one's
  // units (exact but where it underflows, i.e. is negligible).
  void add(double term, int term_exponent) {
    if (term == 0) return;
    if (sum == 0 || term_exponent > exponent) {
      sum = std::ldexp(sum, exponent - term_exponent) + term;
      exponent = term_exponent;
    } else {
      sum += std::ldexp(term, term_exponent - exponent);
    }
  }

  // The value in double: +inf beyond DBL_MAX, 0 or subnormal below DBL_MIN.
  double value() const { return std::ldexp(sum, exponent); }

  friend bool operator<(const ScaledSum& a, const ScaledSum& b) {
    if (a.sum == 0 || b.sum == 0) return a.sum == 0 && b.sum > 0;
    int ea = 0, eb = 0;
    const double ma = std::frexp(a.sum, &ea), mb = std::frexp(b.sum, &eb);
    // |exponent| ≤ 2·2·|kZeroExponent| < INT_MAX, plus a double's: no overflow.
    const long long exponent_a = static_cast<long long>(ea) + a.exponent;
    const long long exponent_b = static_cast<long long>(eb) + b.exponent;
    return exponent_a != exponent_b ? exponent_a < exponent_b : ma < mb;
  }
};

// The search over any list of weights: weight(k) returns the k-th one.
template <class XDerived, class WeightAt>
AlphaSearchResult<typename XDerived::Scalar> search_alpha(const Eigen::MatrixBase<XDerived>& x, std::size_t count,
                                                          WeightAt&& weight, const quant::QuantSpec& act_spec,
                                                          const quant::QuantSpec& weight_spec,
                                                          const AlphaSearchOptions& options, std::string_view where) {
  using Scalar = typename XDerived::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using MatrixD = Eigen::MatrixXd;

  detail::require(count > 0, where, "weights must hold at least one matrix");
  detail::require(!options.alphas.empty(), where, "options.alphas must be non-empty");
  for (std::size_t a = 0; a < options.alphas.size(); ++a) {
    detail::require(options.alphas[a] >= 0.0 && options.alphas[a] <= 1.0, where, "options.alphas[", a,
                    "] must be in [0, 1], got ", options.alphas[a]);
  }
  check_floors(options.weight_floor, options.scale_floor, where);
  // QuantSpec::validate names its fields "spec.…": say which spec.
  act_spec.validate(std::string(where) + " (act_spec)");
  weight_spec.validate(std::string(where) + " (weight_spec)");

  const ChannelVector<Scalar> act_max = activation_absmax(x, where);
  ChannelVector<Scalar> weight_max;
  for (std::size_t k = 0; k < count; ++k) accumulate_weight_absmax(weight_max, weight(k), k, x.cols(), where);
  // Both X̂ and every Ŵ have C columns, the rows that per-group quantization splits.
  const Eigen::Index channels = x.cols();
  for (const auto& [spec, name] : {std::pair{&act_spec, "act_spec"}, std::pair{&weight_spec, "weight_spec"}}) {
    if (spec->granularity == quant::Granularity::kPerGroup) {
      detail::require(channels % spec->group_size == 0, where, name, ".group_size (", spec->group_size,
                      ") must divide the channel count C = ", channels);
    }
  }

  // The reference outputs X·Wᵀ, and below the quantized products, are formed
  // in double: the integer GEMM they stand for is exact (docs/design.md §7), so the
  // objective should measure quantization error, not float rounding.
  // Each operand is first scaled by a power of two to entries in [−1, 1]
  // (scale_to_unit), so no product, difference or square leaves double's
  // range whatever the data's magnitude (doubles near 2^±500 did: every error
  // +inf or 0, or NaN where X·Wᵀ itself overflowed), and each α's error is
  // kept as sum·2^exponent until it is compared. For data that stays inside
  // the range the scalings are exact and the errors are the plain ones bit
  // for bit.
  MatrixD x_unit = x.template cast<double>();
  const int x_exponent = scale_to_unit(x_unit);
  std::vector<MatrixD> reference(count);  // X·W_kᵀ·2^−reference_exponent[k]
  std::vector<int> reference_exponent(count);
  for (std::size_t k = 0; k < count; ++k) {
    MatrixD w_unit = weight(k).template cast<double>();
    reference_exponent[k] = x_exponent + scale_to_unit(w_unit);
    reference[k] = x_unit * w_unit.transpose();
  }

  AlphaSearchResult<Scalar> result;
  result.alphas = options.alphas;
  result.errors.reserve(options.alphas.size());
  ScaledSum best;
  bool first = true;
  for (const double alpha : options.alphas) {
    const ChannelVector<Scalar> s =
        scales(act_max, weight_max, alpha, options.weight_floor, options.scale_floor, where);
    Matrix x_hat = x;
    scale_columns(x_hat, s, /*divide=*/true, where, "x");
    MatrixD x_quant = quant::fake_quantize(x_hat, act_spec).template cast<double>();
    const int x_quant_exponent = scale_to_unit(x_quant);
    ScaledSum error;
    for (std::size_t k = 0; k < count; ++k) {
      Matrix w_hat = weight(k);
      scale_columns(w_hat, s, /*divide=*/false, where, "weights[" + std::to_string(k) + "]");
      MatrixD w_quant = quant::fake_quantize(w_hat, weight_spec).template cast<double>();
      const int product_exponent = x_quant_exponent + scale_to_unit(w_quant);
      // Q_a(X̂)·Q_w(Ŵ)ᵀ − X·Wᵀ in units of 2^h, h the larger of the two
      // terms' exponents: both products have entries of at most C there, the
      // other one is brought down by an exact power of two.
      const int h = std::max(product_exponent, reference_exponent[k]);
      // (ldexp of an exponent near kZeroExponent is 0: it multiplies a zero
      // matrix, or the whole difference is 0 and add() skips it.)
      const double difference =
          (std::ldexp(1.0, product_exponent - h) * (x_quant * w_quant.transpose()) -
           std::ldexp(1.0, reference_exponent[k] - h) * reference[k])
              .squaredNorm();
      error.add(difference, 2 * h);
    }
    result.errors.push_back(error.value());
    if (first || error < best) {  // strict: ties keep the earlier α
      first = false;
      best = error;
      result.error = error.value();
      result.alpha = alpha;
      result.scales = s;
    }
  }
  return result;
}

}  // namespace detail_smoothing

/// The α of the grid that minimises the quantized layers' output error on
/// calibration data x (tokens × C),
///     E(α) = Σ_k ‖Q_a(X̂)·Q_w(Ŵ_k)ᵀ − X·W_kᵀ‖_F²,  X̂ = X·diag(s)⁻¹, Ŵ_k = W_k·diag(s),
/// with s = smoothing_scales(α) shared by all the weights (each out_k × C, all
/// reading x), Q_a = fake_quantize(·, act_spec), Q_w = fake_quantize(·,
/// weight_spec). Products and sums in double, each operand scaled by a power
/// of two to entries in [−1, 1] and each E kept as sum·2^exponent until the
/// errors are compared, so the choice is right for data of any magnitude
/// (the reported errors are rounded to double: +inf beyond DBL_MAX, 0 or
/// subnormal below DBL_MIN). Returns E for every α tried;
/// the grid (default 0, 0.05, …, 1) must be non-empty and inside [0, 1].
/// Cost: one fake quantization of x and of every weight, and one product per
/// weight, per α. WMatrix is any Eigen matrix type with x's scalar.
template <class XDerived, class WMatrix>
AlphaSearchResult<typename XDerived::Scalar> search_smoothing_alpha(const Eigen::MatrixBase<XDerived>& x,
                                                                    const std::vector<WMatrix>& weights,
                                                                    const quant::QuantSpec& act_spec,
                                                                    const quant::QuantSpec& weight_spec,
                                                                    const AlphaSearchOptions& options = {}) {
  detail_smoothing::require_same_scalar<XDerived, WMatrix>();
  return detail_smoothing::search_alpha(
      x, weights.size(), [&](std::size_t k) -> const WMatrix& { return weights[k]; }, act_spec, weight_spec, options,
      "oq::transform::search_smoothing_alpha");
}

/// The same for one linear layer y = X·Wᵀ.
template <class XDerived, class WDerived>
AlphaSearchResult<typename XDerived::Scalar> search_smoothing_alpha(const Eigen::MatrixBase<XDerived>& x,
                                                                    const Eigen::MatrixBase<WDerived>& w,
                                                                    const quant::QuantSpec& act_spec,
                                                                    const quant::QuantSpec& weight_spec,
                                                                    const AlphaSearchOptions& options = {}) {
  detail_smoothing::require_same_scalar<XDerived, WDerived>();
  return detail_smoothing::search_alpha(
      x, 1, [&](std::size_t) -> const WDerived& { return w.derived(); }, act_spec, weight_spec, options,
      "oq::transform::search_smoothing_alpha");
}

}  // namespace oq::transform
