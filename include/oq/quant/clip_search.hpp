// oq/quant/clip_search.hpp: MSE-optimal clip ratio per quantization group.
//
// Clipping the range (c < 1) trades a larger error on the few values beyond the
// clip for a finer step on all the others; for heavy-tailed weight rows the
// trade pays. search_clip_mse() tries the ratios
//     c_k = max_ratio − k·(max_ratio − min_ratio)/steps,  k = 0..steps
// for every parameter entry (group) independently and keeps the one with the
// smallest Σ (x − x̂)² over that group (ties: the larger ratio). The grid holds
// max_ratio, so with max_ratio = 1 (default) the result is never worse than no
// clipping. spec.clip_ratio is ignored: the search chooses it; with
// spec.range_includes_zero the ratios scale the widened range, as in GPTQ's
// reference grid search (Quantizer.find_params with mse).
//
//   auto found = oq::quant::search_clip_mse(w, QuantSpec::per_channel(4, false));
//   auto w_hat = oq::quant::fake_quantize(w, found.params, spec);
#pragma once

#include <oq/core/quant_math.hpp>
#include <oq/detail/check.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <limits>
#include <string_view>

namespace oq::quant {

struct ClipSearchOptions {
  double min_ratio = 0.5;  ///< smallest ratio tried, in (0, max_ratio]
  double max_ratio = 1.0;  ///< largest ratio tried, in (0, 1]
  int steps = 50;          ///< grid intervals; steps + 1 ratios are tried
};

template <class Scalar>
struct ClipSearchResult {
  using Matrix = typename QuantParams<Scalar>::Matrix;
  QuantParams<Scalar> params;  ///< parameters at the chosen ratios
  Matrix clip_ratio;           ///< chosen ratio per parameter entry
  Matrix squared_error;        ///< Σ (x − x̂)² per parameter entry at that ratio
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
  detail::require(options.steps >= 0, kWhere, "options.steps must be >= 0, got ", options.steps);
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
    const Scalar lo_value = block.minCoeff();
    const Scalar hi_value = block.maxCoeff();
    double best_error = std::numeric_limits<double>::infinity();
    for (int k = 0; k <= options.steps; ++k) {
      const double ratio = options.steps == 0 ? options.max_ratio
                                              : options.max_ratio - k * (options.max_ratio - options.min_ratio) /
                                                                         options.steps;
      const auto c = static_cast<Scalar>(ratio);
      const core::AffineParams<Scalar> p = range_params(lo_value, hi_value, spec, c);
      double error = 0;
      detail_quantize::with_codes(block, p, range, [&](const auto& q) {
        error = ((q - p.zero) * p.scale - block.array()).template cast<double>().square().sum();
      });
      if (error < best_error) {  // strict: ties keep the larger ratio
        best_error = error;
        result.params.scale(i, j) = p.scale;
        result.params.zero(i, j) = p.zero;
        result.clip_ratio(i, j) = c;
        result.squared_error(i, j) = static_cast<Scalar>(error);
      }
    }
  });
  return result;
}

}  // namespace oq::quant
