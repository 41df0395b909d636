#include <oq/quant/clip_search.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <climits>
#include <cmath>
#include <limits>
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

TEST_CASE("clip search chooses the same ratios under power-of-two scaling, where Σ(x − x̂)² overflows or underflows") {
  // Scaling x by 2^k scales every candidate's scale by exactly 2^k and leaves
  // zero points and codes as they were, so its error is exactly 2^2k times the
  // unscaled one and the same ratio must win. At k = 600 the errors (≈ 1e361)
  // overflow float64 and at k = −600 (≈ 1e−361) they underflow; the search
  // compares them in units of 2^2e per group (max|x| = f·2^e, f ∈ [0.5, 1)), so
  // neither decides the choice. The reported error is 2^2k times the unscaled
  // one rounded once, hence +inf or 0 there (documented).
  const MatrixX<double> w = oq::test::heavy_tailed<double>(16, 128, 79);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_group(3, true, 32)}) {
    CAPTURE(spec.symmetric);
    const auto found = search_clip_mse(w, spec);
    for (int k : {600, -600, 480}) {
      CAPTURE(k);
      const MatrixX<double> scaled = std::ldexp(1.0, k) * w;
      const auto f = search_clip_mse(scaled, spec);
      CHECK(f.clip_ratio == found.clip_ratio);
      CHECK(f.params.scale == (std::ldexp(1.0, k) * found.params.scale).eval());
      CHECK(f.params.zero == found.params.zero);
      for (Eigen::Index i = 0; i < f.squared_error.rows(); ++i)
        for (Eigen::Index j = 0; j < f.squared_error.cols(); ++j)
          CHECK(f.squared_error(i, j) == std::ldexp(found.squared_error(i, j), 2 * k));
    }
  }
  // The reviewer's case: every Σ(x − x̂)² is ≈ 1e399 = +inf in float64. The
  // result must still be parameters of a tried ratio that quantize accepts.
  MatrixX<double> big(1, 4);
  big << 1e200, -3e200, 2.2e200, 0.7e200;
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  const auto f = search_clip_mse(big, spec);
  CHECK_NOTHROW(validate_params(f.params, spec, 1, 4, "test"));
  CHECK(f.clip_ratio(0, 0) >= 0.5);
  CHECK(f.clip_ratio(0, 0) <= 1.0);
  CHECK(std::isinf(f.squared_error(0, 0)));
  // It is the search of the same values scaled by 2^−664 (≈ 1e−200), which
  // stays far inside the float64 range.
  const auto g = search_clip_mse((std::ldexp(1.0, -664) * big).eval(), spec);
  CHECK(f.clip_ratio == g.clip_ratio);
  CHECK(f.params.scale == (std::ldexp(1.0, 664) * g.params.scale).eval());
}

TEST_CASE("clip search rejects bad options") {
  const MatrixX<float> w = oq::test::gaussian<float>(4, 16, 5);
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  CHECK_THROWS_WITH_AS(search_clip_mse(w, spec, {.min_ratio = 0.0}), doctest::Contains("options.min_ratio"),
                       std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.min_ratio = 0.9, .max_ratio = 0.8}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.max_ratio = 1.2}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.steps = -1}), std::invalid_argument);
  // steps + 1 passes over every group: bounded (INT_MAX would also overflow the counter).
  CHECK_THROWS_WITH_AS(search_clip_mse(w, spec, {.steps = ClipSearchOptions::kMaxSteps + 1}),
                       doctest::Contains("options.steps must be in [0, 10000]"), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(w, spec, {.steps = INT_MAX}), std::invalid_argument);
  CHECK_NOTHROW(search_clip_mse(w, spec, {.steps = ClipSearchOptions::kMaxSteps}));
  // A ratio that is 0 or subnormal once cast to the data's type (float here).
  CHECK_THROWS_WITH_AS(search_clip_mse(w, spec, {.min_ratio = 1e-50}), doctest::Contains("options.min_ratio"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(search_clip_mse(w, spec, {.min_ratio = 1e-40}), doctest::Contains("normal float"),
                       std::invalid_argument);
  // The same ratio is a normal double: the search runs, and still never loses to ratio 1.
  const MatrixX<double> wd = w.cast<double>();
  const auto tiny = search_clip_mse(wd, spec, {.min_ratio = 1e-40, .max_ratio = 1.0, .steps = 4});
  CHECK_NOTHROW(validate_params(tiny.params, spec, wd.rows(), wd.cols(), "test"));
  // (1e-12: the search sums its errors in another order than squaredNorm.)
  CHECK((fake_quantize(wd, tiny.params, spec) - wd).squaredNorm() <=
        (fake_quantize(wd, spec) - wd).squaredNorm() * (1 + 1e-12));
  CHECK_THROWS_AS(search_clip_mse(wd, spec, {.min_ratio = 1e-310}), std::invalid_argument);
  CHECK_THROWS_AS(search_clip_mse(MatrixX<float>(0, 16), spec), std::invalid_argument);
}

TEST_CASE("clip search is the brute-force argmin over its grid, ties to the larger ratio, on degenerate rows too") {
  // Issue 23 (a mutant survived): the tie comparison of the search changed
  // (<= for <) reported 0.5 instead of 1.0 on all-zero and constant rows,
  // where every ratio reconstructs the row exactly; no test held the search
  // to a brute-force argmin. Rows: all zero, constant ±, one outlier in
  // zeros, a two-valued row, Gaussian, heavy-tailed.
  MatrixX<double> w(8, 64);
  w.row(0).setZero();
  w.row(1).setConstant(3.25);
  w.row(2).setConstant(-0.75);
  w.row(3).setZero();
  w(3, 17) = 40.0;
  for (Eigen::Index j = 0; j < 64; ++j) w(4, j) = j % 2 == 0 ? 1.0 : -2.0;
  w.row(5) = oq::test::gaussian<double>(1, 64, 31);
  w.bottomRows(2) = oq::test::heavy_tailed<double>(2, 64, 32);
  const ClipSearchOptions options{.min_ratio = 0.5, .max_ratio = 1.0, .steps = 20};
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false), QuantSpec::per_channel(3, true),
                                QuantSpec::per_group(4, false, 16)}) {
    CAPTURE(to_string(spec.granularity));
    CAPTURE(spec.symmetric);
    const auto found = search_clip_mse(w, spec, options);
    const Eigen::Index width = spec.block_cols(w.cols());
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      for (Eigen::Index g = 0; g < found.clip_ratio.cols(); ++g) {
        CAPTURE(r);
        CAPTURE(g);
        const MatrixX<double> block = w.block(r, g * width, 1, width);
        QuantSpec one = spec;
        if (one.granularity == Granularity::kPerGroup) one = QuantSpec::per_channel(spec.bits, spec.symmetric);
        // Every ratio of the grid, in the search's order (largest first).
        double best_error = std::numeric_limits<double>::infinity(), best_ratio = 0.0;
        for (int k = 0; k <= options.steps; ++k) {
          one.clip_ratio = std::max(options.min_ratio, options.max_ratio - k * (options.max_ratio - options.min_ratio) /
                                                                             options.steps);
          const double error = (fake_quantize(block, one) - block).squaredNorm();
          if (error < best_error) best_error = error, best_ratio = one.clip_ratio;
        }
        // The argmin is unique here but for exact ties (rows 0-2: every
        // ratio gives 0), which go to the larger ratio.
        CHECK(found.clip_ratio(r, g) == doctest::Approx(best_ratio).epsilon(1e-12));
        CHECK(found.squared_error(r, g) == doctest::Approx(best_error).epsilon(1e-9));
        if (r <= 2) {
          CHECK(found.clip_ratio(r, g) == 1.0);
          CHECK(found.squared_error(r, g) <= 1e-20);  // exact but for the rounding of s
        }
      }
    }
  }
}

namespace {

// Subnormal groups (issue 23, item 5): rows of integer multiples k·τ of the
// smallest subnormal τ of T, |k| ≤ max_k. Every scale, fake-quantized value
// and difference x − x̂ of such a row is an integer multiple of τ (a product
// (q − z)·s of an integer and a multiple of τ below the normal range is
// exact), so Σ(x − x̂)² / τ² is an integer that a plain int64 loop computes
// exactly: the reference the search is held to.
template <class T>
oq::test::RowMatrixX<T> subnormal_rows(Eigen::Index rows, Eigen::Index cols, std::int64_t max_k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> k(-max_k, max_k);
  const T tau = std::numeric_limits<T>::denorm_min();
  oq::test::RowMatrixX<T> w(rows, cols);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<T>(k(rng)) * tau;
  return w;
}

// Σ((x − x̂)/τ)² of one row at one ratio, exactly, as int64.
template <class T>
std::int64_t error_in_tau(const oq::test::RowMatrixX<T>& row, const QuantSpec& spec) {
  const oq::test::RowMatrixX<T> fq = fake_quantize(row, spec);
  const T tau = std::numeric_limits<T>::denorm_min();
  std::int64_t sum = 0;
  for (Eigen::Index j = 0; j < row.cols(); ++j) {
    const auto d = static_cast<std::int64_t>(std::llround(row(0, j) / tau)) -
                   static_cast<std::int64_t>(std::llround(fq(0, j) / tau));
    sum += d * d;
  }
  return sum;
}

template <class T>
void check_subnormal_groups() {
  const ClipSearchOptions options{.min_ratio = 0.5, .max_ratio = 1.0, .steps = 20};
  Eigen::Index checked = 0, clipped = 0;
  for (std::int64_t max_k : {3, 60, 200, 5000, 1 << 20}) {
    const oq::test::RowMatrixX<T> w = subnormal_rows<T>(6, 32, max_k, 4000 + static_cast<std::uint64_t>(max_k));
    for (QuantSpec spec : {QuantSpec::per_channel(4, false), QuantSpec::per_channel(8, true),
                           QuantSpec::per_channel(3, true), QuantSpec::per_channel(4, true)}) {
      for (int variant = 0; variant < 3; ++variant) {
        spec.range_includes_zero = variant == 1 && !spec.symmetric;
        spec.symmetric_full_range = variant == 2 && spec.symmetric;
        CAPTURE(max_k);
        CAPTURE(spec.bits);
        CAPTURE(spec.symmetric);
        CAPTURE(variant);
        const auto found = search_clip_mse(w, spec, options);
        for (Eigen::Index r = 0; r < w.rows(); ++r) {
          CAPTURE(r);
          const oq::test::RowMatrixX<T> row = w.row(r);
          // Brute force over the grid, largest ratio first, strict: ties to
          // the larger ratio.
          std::int64_t best = -1;
          double best_ratio = 0.0;
          for (int k = 0; k <= options.steps; ++k) {
            QuantSpec at = spec;
            at.clip_ratio = std::max(options.min_ratio, options.max_ratio - k * (options.max_ratio - options.min_ratio) /
                                                                                options.steps);
            const std::int64_t error = error_in_tau(row, at);
            if (best < 0 || error < best) best = error, best_ratio = at.clip_ratio;
          }
          CHECK(found.clip_ratio(r, 0) == static_cast<T>(best_ratio));
          if (found.clip_ratio(r, 0) < T(1)) ++clipped;
          // The parameters are compute_params' at that ratio.
          QuantSpec at = spec;
          at.clip_ratio = static_cast<double>(found.clip_ratio(r, 0));
          const auto p = compute_params(row, at);
          CHECK(found.params.scale(r, 0) == p.scale(0, 0));
          CHECK(found.params.zero(r, 0) == p.zero(0, 0));
          // Σ(x − x̂)² = best·τ² is below half of T's smallest subnormal (τ²
          // ≈ 1e−90 for float, 1e−647 for double): its correct rounding is 0,
          // never NaN.
          CHECK(found.squared_error(r, 0) == T(0));
          ++checked;
        }
      }
    }
  }
  CHECK(checked == 5 * 4 * 3 * 6);
  CHECK(clipped > 0);  // the grid's smaller ratios win somewhere: not a vacuous argmin
}

}  // namespace

TEST_CASE("clip search on subnormal groups is the exact argmin over its grid, with finite results") {
  // Issue 23, item 5: a symmetric group whose scale c·max|x|/(2^(b−1) − 1)
  // underflows to 0 takes s = 1 (all codes 0); the search expressed that
  // scale in units of 2^e (max|x| = f·2^e, e ≈ −1070) as 2^−e = +inf, and
  // reported Σ(x − x̂)² = 0·inf = NaN.
  SUBCASE("float") { check_subnormal_groups<float>(); }
  SUBCASE("double") { check_subnormal_groups<double>(); }
  // The smallest case: one τ in a row of zeros, 8-bit symmetric. s = 1, the
  // row quantizes to 0 at every ratio, the error τ² rounds to 0.
  oq::test::RowMatrixX<double> one = oq::test::RowMatrixX<double>::Zero(1, 8);
  one(0, 3) = std::numeric_limits<double>::denorm_min();
  const auto found = search_clip_mse(one, QuantSpec::per_channel(8, true));
  CHECK(found.clip_ratio(0, 0) == 1.0);
  CHECK(found.params.scale(0, 0) == 1.0);
  CHECK(found.squared_error(0, 0) == 0.0);
}

namespace {

// Σ(x − x̂)² of a row in units of 2^(2e) (max|x| = f·2^e), from fake_quantize
// itself in long double (a double's difference and its square there: 64-bit
// significands, no overflow), or +inf where fake_quantize refuses the ratio
// (a dequantized value beyond the largest finite T).
template <class T>
long double unit_error(const oq::test::RowMatrixX<T>& row, const QuantSpec& spec, int e) {
  oq::test::RowMatrixX<T> fq;
  try {
    fq = fake_quantize(row, spec);
  } catch (const std::domain_error&) {
    return std::numeric_limits<long double>::infinity();
  }
  long double sum = 0;
  for (Eigen::Index j = 0; j < row.cols(); ++j) {
    const long double d = std::ldexp(static_cast<long double>(fq(0, j)) - static_cast<long double>(row(0, j)), -e);
    sum += d * d;
  }
  return sum;
}

template <class T>
void check_near_largest() {
  // Rows spread over [−max, max] (and all positive, all negative): at ratio 1
  // the asymmetric grid reaches (0 − z)·s ≈ −16/15·max, beyond T's range,
  // for some of them, so fake_quantize refuses that ratio; the search must
  // not choose it, and among the rest it chooses the argmin of the errors in
  // units of 2^2e.
  const T big = std::numeric_limits<T>::max();
  std::mt19937_64 rng(4100);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  oq::test::RowMatrixX<T> w(6, 24);
  for (Eigen::Index i = 0; i < w.rows(); ++i) {
    for (Eigen::Index j = 0; j < w.cols(); ++j) {
      const double v = i == 4 ? std::fabs(u(rng)) : i == 5 ? -std::fabs(u(rng)) : u(rng);
      w(i, j) = static_cast<T>(v * static_cast<double>(big) * (1.0 - std::ldexp(1.0, -30)));
    }
    w(i, 0) = i == 4 ? big : -big;  // a row end at ±max
    if (i != 4 && i != 5) w(i, 1) = big;
  }
  // (2-bit asymmetric ±max: z = 2, code 0 is −4/3·c·max, finite only for c < 3/4.)
  const ClipSearchOptions options{.min_ratio = 0.6, .max_ratio = 1.0, .steps = 20};
  Eigen::Index refused_somewhere = 0;
  for (QuantSpec spec : {QuantSpec::per_channel(4, false), QuantSpec::per_channel(2, false),
                         QuantSpec::per_channel(4, true), QuantSpec::per_channel(3, true)}) {
    for (bool variant : {false, true}) {
      if (spec.symmetric) spec.symmetric_full_range = variant;
      else spec.range_includes_zero = variant;
      CAPTURE(spec.bits);
      CAPTURE(spec.symmetric);
      CAPTURE(variant);
      const auto found = search_clip_mse(w, spec, options);
      // Every returned parameter fake-quantizes x to finite values.
      oq::test::RowMatrixX<T> fq;
      REQUIRE_NOTHROW(fq = fake_quantize(w, found.params, spec));
      CHECK(fq.allFinite());
      for (Eigen::Index r = 0; r < w.rows(); ++r) {
        CAPTURE(r);
        const oq::test::RowMatrixX<T> row = w.row(r);
        int e = 0;
        std::frexp(static_cast<double>(row.cwiseAbs().maxCoeff()), &e);
        long double best = std::numeric_limits<long double>::infinity();
        double best_ratio = 0.0;
        for (int k = 0; k <= options.steps; ++k) {
          QuantSpec at = spec;
          at.clip_ratio = options.max_ratio - k * (options.max_ratio - options.min_ratio) / options.steps;
          const long double error = unit_error(row, at, e);
          if (std::isinf(error)) ++refused_somewhere;
          if (error < best) best = error, best_ratio = at.clip_ratio;
        }
        REQUIRE(std::isfinite(best));
        CHECK(found.clip_ratio(r, 0) == static_cast<T>(best_ratio));
      }
    }
  }
  CHECK(refused_somewhere > 0);  // the case is reached

  // A grid with no ratio whose fake quantization stays finite: refused, naming
  // the group and the option that would help. Row [−max, h] with
  // h = (15/7.6 − 1)·max, 4-bit asymmetric: z = rne(7.6) = 8 at every ratio
  // c, and −max/s = −7.6/c rounds to −8 (code 0) for c > 0.95 − with
  // (0 − 8)·s = −(8/7.6)·c·max, beyond max for c > 7.6/8 = 0.95.
  oq::test::RowMatrixX<T> ends(1, 2);
  ends << -big, static_cast<T>((15.0 / 7.6 - 1.0) * static_cast<double>(big));
  const QuantSpec spec = QuantSpec::per_channel(4, false);
  CHECK_THROWS_WITH_AS(search_clip_mse(ends, spec, {.min_ratio = 0.96, .steps = 4}),
                       doctest::Contains("options.min_ratio"), std::domain_error);
  // With ratios below 0.95 in the grid one of them is chosen.
  const auto ok = search_clip_mse(ends, spec, {.min_ratio = 0.9, .steps = 5});
  CHECK(ok.clip_ratio(0, 0) < T(0.95));
  CHECK(fake_quantize(ends, ok.params, spec).allFinite());
}

}  // namespace

TEST_CASE("clip search near the largest value never chooses a ratio whose fake quantization overflows") {
  // Issue 23, item 5: the errors are compared in units of 2^2e, where a
  // dequantized value (q − z)·s beyond the largest T is still finite; the
  // search chose such ratios and returned parameters that fake_quantize then
  // refuses.
  SUBCASE("float") { check_near_largest<float>(); }
  SUBCASE("double") { check_near_largest<double>(); }
}
