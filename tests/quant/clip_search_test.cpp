#include <oq/quant/clip_search.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <stdexcept>

using namespace oq::quant;
using oq::test::MatrixX;

TEST_CASE("clip search is never worse than no clipping, and better on heavy tails") {
  const MatrixX<double> w = oq::test::heavy_tailed<double>(32, 256, 77);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_channel(4, true),
                                QuantSpec::per_group(3, true, 64)}) {
    CAPTURE(to_string(spec.granularity));
    CAPTURE(spec.symmetric);
    const auto found = search_clip_mse(w, spec);
    const MatrixX<double> plain = fake_quantize(w, spec);  // clip 1
    const MatrixX<double> searched = fake_quantize(w, found.params, spec);
    const Eigen::Index width = spec.block_cols(w.cols());
    double total_plain = 0, total_searched = 0;
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      for (Eigen::Index j = 0; j < found.clip_ratio.cols(); ++j) {
        const double e_plain = (plain - w).row(r).segment(j * width, width).squaredNorm();
        const double e_search = (searched - w).row(r).segment(j * width, width).squaredNorm();
        CHECK(e_search <= e_plain);
        // The reported error is the error of the returned parameters.
        CHECK(found.squared_error(r, j) == doctest::Approx(e_search).epsilon(1e-9));
        CHECK(found.clip_ratio(r, j) >= 0.5);
        CHECK(found.clip_ratio(r, j) <= 1.0);
        total_plain += e_plain;
        total_searched += e_search;
      }
    }
    // Student-t(3) rows have outliers far beyond the bulk: clipping must pay.
    CHECK(total_searched < 0.9 * total_plain);
  }
}

TEST_CASE("a single-point grid reproduces the fixed clip ratio") {
  const MatrixX<float> w = oq::test::gaussian<float>(8, 64, 5);
  const QuantSpec spec = QuantSpec::per_channel(4, false, 0.8);
  const auto found = search_clip_mse(w, spec, {.min_ratio = 0.8, .max_ratio = 0.8, .steps = 0});
  const auto p = compute_params(w, spec);
  CHECK(found.params.scale == p.scale);
  CHECK(found.params.zero == p.zero);
}

TEST_CASE("clip search with range_includes_zero scales the widened range, as GPTQ's grid search does") {
  // Heavy-tailed rows shifted above and below 0: without the widening their
  // zero points leave the code range.
  MatrixX<double> w = oq::test::heavy_tailed<double>(12, 128, 78);
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    const double shift = (r % 3 == 0 ? 1.0 : r % 3 == 1 ? -1.0 : 0.0) * (w.row(r).cwiseAbs().maxCoeff() + 0.1);
    w.row(r).array() += shift;
  }
  QuantSpec spec = QuantSpec::per_group(4, false, 32);
  spec.range_includes_zero = true;
  const auto found = search_clip_mse(w, spec);
  CHECK(found.params.zero.minCoeff() >= 0.0);
  CHECK(found.params.zero.maxCoeff() <= 15.0);
  // Each group's result is compute_params at the chosen ratio, and never worse
  // than the unclipped widened range.
  const MatrixX<double> unclipped = fake_quantize(w, spec);
  const MatrixX<double> searched = fake_quantize(w, found.params, spec);
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    for (Eigen::Index j = 0; j < found.clip_ratio.cols(); ++j) {
      CAPTURE(r);
      CAPTURE(j);
      QuantSpec at = spec;
      at.clip_ratio = found.clip_ratio(r, j);
      const auto p = compute_params(w.block(r, 32 * j, 1, 32), at);
      CHECK(found.params.scale(r, j) == p.scale(0, 0));
      CHECK(found.params.zero(r, j) == p.zero(0, 0));
      // (1e-12: the search sums its errors in another order than squaredNorm.)
      CHECK((searched - w).block(r, 32 * j, 1, 32).squaredNorm() <=
            (unclipped - w).block(r, 32 * j, 1, 32).squaredNorm() * (1 + 1e-12));
    }
  }
}

TEST_CASE("clip search rejects bad options") {
  const MatrixX<float> w = oq::test::gaussian<float>(4, 16, 5);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  CHECK_THROWS_WITH_AS(search_clip_mse(w, spec, {.min_ratio = 0.0}), doctest::Contains("options.min_ratio"),
                       std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.min_ratio = 0.9, .max_ratio = 0.8}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.max_ratio = 1.2}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.steps = -1}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(MatrixX<float>(0, 16), spec), std::invalid_argument);
}
