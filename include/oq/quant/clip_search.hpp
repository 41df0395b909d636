// oq/quant/clip_search.hpp: MSE-optimal clip ratio per quantization group.
//
// Clipping the range (c < 1) trades a larger error on the few values beyond the
// clip for a finer step on all the others; for heavy-tailed weight rows the
// trade pays. search_clip_mse() tries the ratios
//     c_k = max_ratio − k·(max_ratio − min_ratio)/steps,  k = 0..steps
// (rounded up to min_ratio where the subtraction would go below it)
// for every parameter entry (group) independently and keeps the one with the
// smallest Σ (x − x̂)² over that group (ties: the larger ratio). The grid holds
// max_ratio, so with max_ratio = 1 (default) the result is never worse than no
// clipping. spec.clip_ratio is ignored: the search chooses it; with
// spec.range_includes_zero the ratios scale the widened range, as in GPTQ's
// reference grid search (Quantizer.find_params with mse).
//
// Numerics: each group's errors are compared in units of 2^(2e), where max|x|
// of the group is f·2^e with f ∈ [0.5, 1): ((q − z)·s·2^−e − x·2^−e)², an exact
// rescaling (a power of two) of every term that stays normal, so the choice is
// the same as in plain units, but it does not overflow (|x| ≳ 1e154 in double, where every
// Σ (x − x̂)² would be +inf and no ratio could win) or underflow (|x| ≲ 1e−154).
// Subnormal groups: x̂ in units is rounded as fake_quantize rounds (q − z)·s
// (formed in plain units and then rescaled wherever s or s·2^−e is not
// normal), so the errors compared are those of the returned parameters, and a
// scale that does not scale with the group (s = 1 where c·max|x|/(2^(b−1) − 1)
// underflows) gives no 0·inf.
// Ranges near the largest value: a ratio at which some x̂ lies beyond Scalar's
// largest value (an asymmetric ±max group reaches (0 − z)·s = −16/15·c·max) is
// skipped, since fake_quantize refuses its parameters; std::domain_error
// naming the group and options.min_ratio where every ratio of the grid does.
// The first candidate ratio (max_ratio) is taken unless a later one does strictly
// better, so the result is always the parameters of a ratio of the grid.
// squared_error is reported in x's scalar type: +inf where Σ (x − x̂)² exceeds
// its range (float data beyond ~1e19, double beyond ~1e154), 0 or subnormal
// where it underflows; the choice of ratio does not depend on that rounding.
//
//   auto found = oq::quant::search_clip_mse(w, QuantSpec::per_channel(4, false));
//   auto w_hat = oq::quant::fake_quantize(w, found.params, spec);
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

namespace oq::quant {

struct ClipSearchOptions {
  /// The largest `steps`: every ratio costs a pass over x, and a grid finer
  /// than 1e4 intervals moves the scale by less than 1e−4 relative per step.
  static constexpr int kMaxSteps = 10000;
  double min_ratio = 0.5;  ///< smallest ratio tried, in (0, max_ratio]; normal in x's scalar type
  double max_ratio = 1.0;  ///< largest ratio tried, in (0, 1]
  int steps = 50;          ///< grid intervals, in [0, kMaxSteps]; steps + 1 ratios are tried
};

template <class Scalar>
struct ClipSearchResult {
  using Matrix = typename QuantParams<Scalar>::Matrix;
  QuantParams<Scalar> params;  ///< parameters at the chosen ratios
  Matrix clip_ratio;           ///< chosen ratio per parameter entry
  Matrix squared_error;        ///< Σ (x − x̂)² per parameter entry at that ratio (+inf beyond Scalar's range)
};

template <class Derived>
ClipSearchResult<typename Derived::Scalar> search_clip_mse(const Eigen::MatrixBase<Derived>& x,
                                                           const QuantSpec& spec,
                                                           const ClipSearchOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  constexpr std::string_view kWhere = "oq::quant::search_clip_mse";
  QuantSpec unclipped = spec;
  unclipped.clip_ratio = 1.0;
  unclipped.validate(kWhere);
  unclipped.validate_shape(x.rows(), x.cols(), kWhere);
  detail::require(options.max_ratio > 0.0 && options.max_ratio <= 1.0, kWhere,
                  "options.max_ratio must be in (0, 1], got ", options.max_ratio);
  detail::require(options.min_ratio > 0.0 && options.min_ratio <= options.max_ratio, kWhere,
                  "options.min_ratio must be in (0, options.max_ratio = ", options.max_ratio, "], got ",
                  options.min_ratio);
  // A ratio that casts to 0 or a subnormal in Scalar would give a zero or
  // inexact scale; the grid's points all lie in [min_ratio, max_ratio].
  detail::require(static_cast<Scalar>(options.min_ratio) >= std::numeric_limits<Scalar>::min(), kWhere,
                  "options.min_ratio must be a normal ", sizeof(Scalar) == sizeof(float) ? "float" : "double",
                  " number (>= ", std::numeric_limits<Scalar>::min(), ") once cast to x's scalar type, got ",
                  options.min_ratio);
  detail::require(options.steps >= 0 && options.steps <= ClipSearchOptions::kMaxSteps, kWhere,
                  "options.steps must be in [0, ", ClipSearchOptions::kMaxSteps, "], got ", options.steps);
  detail::require_finite(x, kWhere, "x");

  const core::CodeRange range = spec.code_range();
  const Eigen::Index rows = spec.param_rows(x.rows());
  const Eigen::Index cols = spec.param_cols(x.cols());
  ClipSearchResult<Scalar> result;
  result.params.scale.resize(rows, cols);
  result.params.zero.resize(rows, cols);
  result.clip_ratio.resize(rows, cols);
  result.squared_error.resize(rows, cols);

  for_each_block(x, spec, [&](Eigen::Index i, Eigen::Index j, const auto& block) {
    using std::abs;
    const Scalar lo_value = block.minCoeff();
    const Scalar hi_value = block.maxCoeff();
    // 2^−e as two normal factors (detail/power_of_two.hpp): x·a·b is exact
    // wherever it stays normal.
    int e = 0;
    std::frexp(std::max(abs(lo_value), abs(hi_value)), &e);
    const detail::PowerOfTwoFactors<Scalar> factors = detail::inverse_power_of_two<Scalar>(e);
    const Scalar a = factors.first, b = factors.second;
    // The group in those units, once: every candidate ratio compares with it.
    const Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic> unit_block = block.array() * a * b;
    double best_error = 0;  // in units of 2^(2e)
    bool found = false;     // whether some ratio's fake quantization stays finite
    for (int k = 0; k <= options.steps; ++k) {
      // Clamped to min_ratio: max_ratio − (max_ratio − min_ratio) may round to 0
      // when min_ratio is far below max_ratio.
      const double ratio =
          options.steps == 0
              ? options.max_ratio
              : std::max(options.min_ratio,
                         options.max_ratio - k * (options.max_ratio - options.min_ratio) / options.steps);
      const auto c = static_cast<Scalar>(ratio);
      const core::AffineParams<Scalar> p = range_params(lo_value, hi_value, spec, c);
      // A ratio whose fake quantization leaves Scalar's range (a code with
      // (q − z)·s past the largest value, e.g. (0 − 8)·s = −16/15·max for an
      // asymmetric ±max group) is not a candidate: fake_quantize refuses its
      // parameters. The check is the expression fake_quantize evaluates,
      // taken only where may_overflow says a code can reach that far.
      const bool overflows =
          detail_quantize::may_overflow(p, range) &&
          [&] {
            bool past_max = false;
            detail_quantize::with_codes(block, p, range, [&](const auto& q) {
              past_max = !(((q - p.zero) * p.scale).abs().maxCoeff() <= std::numeric_limits<Scalar>::max());
            });
            return past_max;
          }();
      if (overflows) continue;
      // x̂ in units is (q − z)·(s·2^−e), rounded as fake_quantize's (q − z)·s
      // is, when s and s·2^−e are both normal (every nonzero x̂ then is, |q − z|
      // being at least 1). Otherwise (subnormal data; s = 1 where a symmetric
      // group's scale c·max|x|/(2^(b−1) − 1) underflows, whose s·2^−e is +inf
      // and 0·inf NaN) x̂ = (q − z)·s is formed as fake_quantize forms it and
      // then rescaled, exact for a subnormal x̂ too; two more products per
      // entry, so only there.
      const Scalar unit_scale = std::ldexp(p.scale, -e);
      const bool scale_in_units = p.scale >= std::numeric_limits<Scalar>::min() &&
                                  unit_scale >= std::numeric_limits<Scalar>::min() &&
                                  unit_scale <= std::numeric_limits<Scalar>::max();
      double error = 0;
      detail_quantize::with_codes(block, p, range, [&](const auto& q) {
        error = scale_in_units
                    ? ((q - p.zero) * unit_scale - unit_block).template cast<double>().square().sum()
                    : ((q - p.zero) * p.scale * a * b - unit_block).template cast<double>().square().sum();
      });
      if (!found || error < best_error) {  // strict: ties keep the larger ratio
        found = true;
        best_error = error;
        result.params.scale(i, j) = p.scale;
        result.params.zero(i, j) = p.zero;
        result.clip_ratio(i, j) = c;
      }
    }
    detail::require_domain(found, kWhere, "x's group (", i, ", ", j, ") fake-quantizes to a value beyond the largest ",
                           sizeof(Scalar) == sizeof(float) ? "float" : "double",
                           " at every clip ratio of the grid [options.min_ratio, options.max_ratio] = [",
                           options.min_ratio, ", ", options.max_ratio,
                           "] (a range near the largest value); a smaller options.min_ratio keeps it finite");
    // Σ (x − x̂)² in plain units; beyond Scalar's range it is +inf (a float cast of
    // an out-of-range double is not defined, so that case is spelled out).
    const double squared_error = std::ldexp(best_error, 2 * e);
    result.squared_error(i, j) = squared_error > static_cast<double>(std::numeric_limits<Scalar>::max())
                                     ? std::numeric_limits<Scalar>::infinity()
                                     : static_cast<Scalar>(squared_error);
  });
  return result;
}

}  // namespace oq::quant
