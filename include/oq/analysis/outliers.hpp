// oq/analysis/outliers.hpp: where the outliers are (docs/design.md §3).
//
//  - Massive activations (Sun et al. 2024, "Massive Activations in Large
//    Language Models", §2): single entries of a hidden state with |x| > 100
//    and |x| ≥ 1000 × median |x| of that hidden state. Both thresholds are
//    options. The median is the lower median (torch.median's convention) of
//    all |x| in the matrix passed in; pass one hidden state (tokens × hidden)
//    at a time. With a zero median every entry above min_abs qualifies (ratio ∞).
//  - Channel-wise outliers (Nrusimha et al. 2024, "Mitigating the Impact of
//    Outlier Channels for Language Model Quantization with Activation
//    Regularization", §3): channels whose mean |x| exceeds 6 × the mean |x| of
//    the whole input (all channels, all tokens).
//  - Outlier-triggering weight channels: for an input produced by a norm with
//    weight γ and consumed by a linear W (out × C), channel j's output energy
//    scales with |γ_j|·‖W_{:,j}‖₂; channels whose score exceeds `min_ratio` ×
//    the mean score over all channels are reported. (The threshold is oq's
//    choice, docs/design.md §3: the channel-outlier convention, ratio to the mean.)
//
//   auto massive = oq::analysis::find_massive_activations(hidden);
//   for (auto& m : massive) std::printf("token %ld channel %ld: %g (%gx median)\n", ...);
#pragma once

#include <oq/analysis/moments.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

namespace oq::analysis {

struct MassiveActivationOptions {
  double min_abs = 100.0;          ///< |x| must exceed this
  double min_ratio_to_median = 1000.0;  ///< and be at least this many times median |x| (finite)
};

struct MassiveActivation {
  Eigen::Index token;
  Eigen::Index channel;
  double value;
  double ratio_to_median;
};

namespace detail_outliers {

// median_abs without its checks (x non-empty and finite, checked by the caller).
template <class Derived>
double lower_median_abs(const Eigen::MatrixBase<Derived>& x) {
  std::vector<double> magnitudes(static_cast<std::size_t>(x.size()));
  Eigen::Map<Eigen::MatrixXd>(magnitudes.data(), x.rows(), x.cols()) = x.template cast<double>().cwiseAbs();
  const auto middle = magnitudes.begin() + (static_cast<std::ptrdiff_t>(magnitudes.size()) - 1) / 2;
  std::nth_element(magnitudes.begin(), middle, magnitudes.end());
  return *middle;
}

}  // namespace detail_outliers

/// median |x| over every entry of x, in double: the lower median (the
/// ⌈n/2⌉-th smallest |x|, torch.median's convention, which Sun et al.'s
/// released code uses), the reference of the massive-activation test below.
/// x must be non-empty (std::invalid_argument) and finite (std::domain_error:
/// a NaN has no place in an order).
template <class Derived>
double median_abs(const Eigen::MatrixBase<Derived>& x) {
  constexpr std::string_view kWhere = "oq::analysis::median_abs";
  detail::require(x.size() > 0, kWhere, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require_finite(x, kWhere, "x");
  return detail_outliers::lower_median_abs(x);
}

/// Every massive activation of a hidden state x (tokens × channels), in
/// row-major order (token, then channel). ratio_to_median is |x|/median in
/// double: +inf for a zero median, and where the quotient exceeds the largest
/// double (a double median below ~1e−300 under entries near 1e300; float data
/// cannot reach it), the entry being massive either way.
template <class Derived>
std::vector<MassiveActivation> find_massive_activations(const Eigen::MatrixBase<Derived>& x,
                                                        const MassiveActivationOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::analysis::find_massive_activations";
  detail::require(x.size() > 0, kWhere, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require(options.min_abs >= 0.0 && std::isfinite(options.min_abs), kWhere,
                  "options.min_abs must be finite and >= 0, got ", options.min_abs);
  // Finite: with a zero median every ratio is ∞, and ∞ ≥ ∞ would report every entry above min_abs.
  detail::require(options.min_ratio_to_median >= 0.0 && std::isfinite(options.min_ratio_to_median), kWhere,
                  "options.min_ratio_to_median must be finite and >= 0, got ", options.min_ratio_to_median);
  detail::require_finite(x, kWhere, "x");
  const double median = detail_outliers::lower_median_abs(x);

  std::vector<MassiveActivation> found;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      const double v = static_cast<double>(x(t, c));
      const double magnitude = std::fabs(v);
      if (!(magnitude > options.min_abs)) continue;
      const double ratio = median > 0.0 ? magnitude / median : std::numeric_limits<double>::infinity();
      if (ratio >= options.min_ratio_to_median) found.push_back({t, c, v, ratio});
    }
  }
  return found;
}

/// The tokens that hold at least one of `found` (find_massive_activations'
/// result, row-major), each once, in increasing order: Sun et al. count
/// massive tokens, not entries (one token carries its few massive channels).
inline std::vector<Eigen::Index> massive_tokens(const std::vector<MassiveActivation>& found) {
  std::vector<Eigen::Index> tokens;
  for (const MassiveActivation& m : found) tokens.push_back(m.token);
  std::sort(tokens.begin(), tokens.end());  // already sorted from find_massive_activations; any order accepted
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  return tokens;
}

struct ChannelOutlier {
  Eigen::Index channel;
  double mean_abs;
  double ratio_to_mean;  ///< mean |x| of the channel / mean |x| of the input
};

/// Channels of calibrated statistics whose mean |x| exceeds min_ratio × the
/// mean |x| over all channels, largest ratio first (the overall mean taken in
/// units of the largest channel mean: no overflow near DBL_MAX).
inline std::vector<ChannelOutlier> find_channel_outliers(const ChannelMoments& moments, double min_ratio = 6.0) {
  constexpr std::string_view kWhere = "oq::analysis::find_channel_outliers";
  detail::require(min_ratio > 0.0 && std::isfinite(min_ratio), kWhere, "min_ratio must be finite and > 0, got ",
                  min_ratio);
  detail::require(moments.channels() > 0 && moments.count() > 0, kWhere,
                  "moments must hold at least one token of at least one channel");
  const Eigen::VectorXd mean_abs = moments.mean_abs();
  // The overall mean |x| (every channel has the same token count, so it is
  // the mean of the channels' means) in units of 2^e, max_j mean|x_j| =
  // f·2^e: the plain sum of C means near DBL_MAX overflows (overall = +inf,
  // every ratio 0). The scaling is exact where the means stay normal, so the
  // ratios are the plain ones bit for bit wherever those are finite.
  int e = 0;
  std::frexp(mean_abs.maxCoeff(), &e);
  const detail::PowerOfTwoFactors<double> factors = detail::inverse_power_of_two<double>(e);
  const Eigen::ArrayXd unit = (mean_abs.array() * factors.first) * factors.second;
  const double overall = unit.mean();
  std::vector<ChannelOutlier> found;
  for (Eigen::Index j = 0; j < mean_abs.size(); ++j) {
    const double ratio = overall > 0.0 ? unit[j] / overall : 0.0;
    if (ratio > min_ratio) found.push_back({j, mean_abs[j], ratio});
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const ChannelOutlier& a, const ChannelOutlier& b) { return a.ratio_to_mean > b.ratio_to_mean; });
  return found;
}

/// Channel-wise outliers of one activation matrix (tokens × channels).
template <class Derived>
std::vector<ChannelOutlier> find_channel_outliers(const Eigen::MatrixBase<Derived>& x, double min_ratio = 6.0) {
  detail::require(x.size() > 0, "oq::analysis::find_channel_outliers", "x must be non-empty, got ", x.rows(), " x ",
                  x.cols());
  ChannelMoments moments(x.cols());
  moments.update(x);
  return find_channel_outliers(moments, min_ratio);
}

struct WeightChannelScore {
  Eigen::Index channel;
  double score;          ///< |γ_j| · ‖W_{:,j}‖₂
  double ratio_to_mean;  ///< score / mean score
};

/// Input channels of W (out × C) that a norm weight γ (length C) drives into
/// outliers: |γ_j|·‖W_{:,j}‖₂ above min_ratio × the mean score, largest first.
/// Right for finite data of any magnitude; std::domain_error where a reported
/// score exceeds the largest double (γ and W both near 2^600 or beyond).
template <class GammaDerived, class WeightDerived>
std::vector<WeightChannelScore> find_outlier_weight_channels(const Eigen::MatrixBase<GammaDerived>& gamma,
                                                             const Eigen::MatrixBase<WeightDerived>& weight,
                                                             double min_ratio = 6.0) {
  constexpr std::string_view kWhere = "oq::analysis::find_outlier_weight_channels";
  detail::require(gamma.size() > 0 && (gamma.rows() == 1 || gamma.cols() == 1), kWhere,
                  "gamma must be a non-empty vector, got ", gamma.rows(), " x ", gamma.cols());
  detail::require(weight.cols() == gamma.size() && weight.rows() > 0, kWhere, "weight must be out x ", gamma.size(),
                  " (one column per channel of gamma), got ", weight.rows(), " x ", weight.cols());
  detail::require(min_ratio > 0.0 && std::isfinite(min_ratio), kWhere, "min_ratio must be finite and > 0, got ",
                  min_ratio);
  detail::require_finite(gamma, kWhere, "gamma");
  detail::require_finite(weight, kWhere, "weight");
  // Where every nonzero |γ_j| and max|W_{:,j}| lies in [2^−250, 2^250], no
  // square, norm, score or their sum can overflow or leave the normal range
  // (Σ w² ≤ out·2^500, scores in [2^−500, 2^500·√out]): the plain double
  // formulas. Otherwise (√(Σ w²) is +inf for columns near 2^512 and 0 near
  // 2^−540, and the scores and their mean overflow further out) each score is
  // kept as v_j·2^(E_j), ‖W_{:,j}‖₂ of the column scaled by 2^−e (its max|w|
  // = f·2^e) times the significand of |γ_j|, and the ratios are taken with
  // every score in units of the largest exponent; only a reported score
  // beyond double's range is then an error.
  const Eigen::Index channels = weight.cols();
  const Eigen::ArrayXd peaks = weight.template cast<double>().cwiseAbs().colwise().maxCoeff().transpose();
  const Eigen::ArrayXd g = gamma.template cast<double>().reshaped().cwiseAbs().array();
  const auto in_window = [](const Eigen::ArrayXd& v) {
    return ((v == 0.0) || (v >= 0x1p-250 && v <= 0x1p250)).all();
  };
  Eigen::ArrayXd value(channels);  // the scores, or their significands v_j
  Eigen::ArrayXi exponent = Eigen::ArrayXi::Zero(channels);
  int largest = 0;
  if (in_window(peaks) && in_window(g)) {
    value = g * weight.template cast<double>().colwise().norm().transpose().array();
  } else {
    largest = std::numeric_limits<int>::min();
    for (Eigen::Index j = 0; j < channels; ++j) {
      int e = 0, t = 0;
      std::frexp(peaks[j], &e);
      const double significand = std::frexp(g[j], &t);
      const detail::PowerOfTwoFactors<double> factors = detail::inverse_power_of_two<double>(e);
      const auto column = weight.col(j).template cast<double>();
      value[j] = peaks[j] == 0.0 ? 0.0 : significand * ((column * factors.first) * factors.second).norm();
      exponent[j] = e + t;
      if (value[j] > 0.0) largest = std::max(largest, exponent[j]);
    }
  }
  Eigen::ArrayXd unit(channels);  // score_j·2^−largest
  for (Eigen::Index j = 0; j < channels; ++j)
    unit[j] = value[j] > 0.0 ? std::ldexp(value[j], exponent[j] - largest) : 0.0;
  const double mean = unit.mean();
  std::vector<WeightChannelScore> found;
  for (Eigen::Index j = 0; j < channels; ++j) {
    const double ratio = mean > 0.0 ? unit[j] / mean : 0.0;
    if (!(ratio > min_ratio)) continue;
    const double score = std::ldexp(value[j], exponent[j]);
    detail::require_domain(std::isfinite(score), kWhere, "the score of channel ", j, ", |gamma(", j,
                           ")|·‖weight column ", j, "‖₂ = ", value[j], "·2^", exponent[j],
                           ", overflows double (gamma and weight near its largest value)");
    found.push_back({j, score, ratio});
  }
  std::stable_sort(found.begin(), found.end(), [](const WeightChannelScore& a, const WeightChannelScore& b) {
    return a.ratio_to_mean > b.ratio_to_mean;
  });
  return found;
}

}  // namespace oq::analysis
