#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/reference.hpp>

#include <doctest/doctest.h>

#include "support/bounds.hpp"
#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

using namespace oq::quant;
using oq::test::MatrixX;

namespace {
std::vector<QuantSpec> all_specs(Eigen::Index cols) {
  std::vector<QuantSpec> specs;
  for (int bits : {2, 3, 4, 8}) {
    for (bool symmetric : {false, true}) {
      for (double clip : {1.0, 0.9}) {
        specs.push_back(QuantSpec::per_tensor(bits, symmetric, clip));
        specs.push_back(QuantSpec::per_channel(bits, symmetric, clip));
        specs.push_back(QuantSpec::per_token(bits, symmetric, clip));
        for (Eigen::Index g : {Eigen::Index(8), cols}) specs.push_back(QuantSpec::per_group(bits, symmetric, g, clip));
      }
    }
  }
  // Every spec again on GPTQ's grids: the zero-including asymmetric range,
  // the full-range symmetric scale (each flag a no-op for the other symmetry).
  const std::size_t plain = specs.size();
  for (std::size_t i = 0; i < plain; ++i) {
    QuantSpec gptq = specs[i];
    gptq.range_includes_zero = true;
    gptq.symmetric_full_range = true;
    specs.push_back(gptq);
  }
  return specs;
}
}  // namespace

TEST_CASE_TEMPLATE("compute_params equals the plain reference bit for bit", T, float, double) {
  const MatrixX<T> x = oq::test::adversarial<T>(13, 48, 21);
  for (const QuantSpec& spec : all_specs(x.cols())) {
    CAPTURE(spec.bits);
    CAPTURE(spec.symmetric);
    CAPTURE(to_string(spec.granularity));
    CAPTURE(spec.clip_ratio);
    CAPTURE(spec.range_includes_zero);
    CAPTURE(spec.symmetric_full_range);
    const QuantParams<T> p = compute_params(x, spec);
    const QuantParams<T> ref = compute_params_ref(x, spec);
    REQUIRE(p.scale.rows() == spec.param_rows(x.rows()));
    REQUIRE(p.scale.cols() == spec.param_cols(x.cols()));
    CHECK(p.scale == ref.scale);
    CHECK(p.zero == ref.zero);
    CHECK((p.scale.array() > T(0)).all());
    CHECK(p.scale.allFinite());
    CHECK_NOTHROW(validate_params(p, spec, x.rows(), x.cols(), "test"));
  }
}

TEST_CASE("compute_params accepts expressions and either storage order") {
  const MatrixX<float> x = oq::test::gaussian<float>(16, 32, 4);
  const oq::test::RowMatrixX<float> x_row = x;
  const QuantSpec spec = QuantSpec::per_group(4, false, 8, 0.9);
  const auto a = compute_params(x, spec);
  CHECK(compute_params(x_row, spec).scale == a.scale);
  // A block of a larger matrix: the parameters of its rows.
  const MatrixX<float> big = oq::test::gaussian<float>(40, 32, 4);
  const auto block = compute_params(big.middleRows(8, 16), spec);
  CHECK(block.scale == compute_params(MatrixX<float>(big.middleRows(8, 16)), spec).scale);
  // Per-input-channel quantization is per-row of the transpose.
  const auto columns = compute_params(x.transpose(), QuantSpec::per_token(8, true));
  CHECK(columns.scale.rows() == x.cols());
}

TEST_CASE_TEMPLATE("blocks larger than a cache chunk: the range and the finiteness of every chunk count", T, float,
                   double) {
  // compute_params walks a block bigger than 2^14 entries in chunks of whole
  // inner vectors (block_range). The extremes and a NaN sit in the last
  // chunk, in either storage order, for a whole tensor, a block expression,
  // and a 40,000-wide row (one inner vector longer than a chunk).
  MatrixX<T> x = oq::test::gaussian<T>(300, 200, 7);
  x(299, 198) = T(9);
  x(298, 199) = T(-7);
  const oq::test::RowMatrixX<T> x_row = x;
  const MatrixX<T> wide = oq::test::gaussian<T>(2, 40000, 8);
  for (const QuantSpec& spec : {QuantSpec::per_tensor(4, false, 0.9), QuantSpec::per_tensor(8, true),
                                QuantSpec::per_channel(4, false), QuantSpec::per_group(4, false, 100)}) {
    CAPTURE(to_string(spec.granularity));
    CAPTURE(spec.bits);
    const QuantParams<T> ref = compute_params_ref(x, spec);
    CHECK(compute_params(x, spec).scale == ref.scale);
    CHECK(compute_params(x, spec).zero == ref.zero);
    CHECK(compute_params(x_row, spec).scale == ref.scale);
    CHECK(compute_params(x_row, spec).zero == ref.zero);
    CHECK(compute_params(x.transpose().transpose(), spec).scale == ref.scale);
    CHECK(compute_params(wide, spec).scale == compute_params_ref(wide, spec).scale);
  }
  // The planted extremes (|gaussian| < 6 here) set the per-tensor range.
  const auto planted = oq::core::asymmetric_params<T>(T(-7), T(9), T(1), 4);
  CHECK(compute_params(x, QuantSpec::per_tensor(4, false)).scale(0, 0) == planted.scale);
  CHECK(compute_params(x, QuantSpec::per_tensor(4, false)).zero(0, 0) == planted.zero);
  x(297, 199) = std::numeric_limits<T>::quiet_NaN();
  const oq::test::RowMatrixX<T> bad_row = x;
  for (const QuantSpec& spec : {QuantSpec::per_tensor(4, false), QuantSpec::per_channel(4, true)}) {
    CHECK_THROWS_WITH_AS(compute_params(x, spec), doctest::Contains("x(297, 199) is nan"), std::domain_error);
    CHECK_THROWS_WITH_AS(compute_params(bad_row, spec), doctest::Contains("x(297, 199) is nan"), std::domain_error);
  }
}

TEST_CASE("per-group with group_size = row length equals per-row") {
  const MatrixX<double> x = oq::test::adversarial<double>(9, 24, 8);
  for (bool symmetric : {false, true}) {
    const auto row = compute_params(x, QuantSpec::per_token(4, symmetric, 0.9));
    const auto group = compute_params(x, QuantSpec::per_group(4, symmetric, 24, 0.9));
    CHECK(row.scale == group.scale);
    CHECK(row.zero == group.zero);
  }
}

TEST_CASE_TEMPLATE("range_includes_zero: 0 is a code, every zero in the code range, GPTQ's formula", T, float,
                   double) {
  // Rows entirely above 0, entirely below 0, across 0, constant either sign,
  // all zero, and one huge outlier above a positive bulk.
  const Eigen::Index cols = 40;
  MatrixX<T> x(9, cols);
  const MatrixX<T> g = oq::test::gaussian<T>(8, cols, 31);
  x.row(0) = (g.row(0).array().abs() + T(0.5)).matrix();
  x.row(1) = (-g.row(1).array().abs() - T(2)).matrix();
  x.row(2) = g.row(2);
  x.row(3).setConstant(T(3));
  x.row(4).setConstant(T(-0.25));
  x.row(5).setZero();
  x.row(6) = (g.row(6).array().abs() + T(1)).matrix();
  x(6, 17) = T(5000);
  x.row(7) = (T(1e-30) * (g.row(7).array().abs() + T(1))).matrix();  // positive, tiny
  x.row(8).setConstant(std::numeric_limits<T>::denorm_min());         // a range whose scale underflows
  for (int bits : {2, 3, 4, 8}) {
    for (double clip : {1.0, 0.8}) {
      CAPTURE(bits);
      CAPTURE(clip);
      QuantSpec spec = QuantSpec::per_token(bits, false, clip);
      const QuantParams<T> unwidened = compute_params(x, spec);
      spec.range_includes_zero = true;
      const QuantParams<T> p = compute_params(x, spec);
      const QuantParams<T> ref = compute_params_ref(x, spec);  // the subnormal row included
      CHECK(p.scale == ref.scale);
      CHECK(p.zero == ref.zero);
      const T top = T((1 << bits) - 1);
      for (Eigen::Index r = 0; r < x.rows(); ++r) {
        CAPTURE(r);
        const T s = p.scale(r, 0), z = p.zero(r, 0);
        CHECK(z >= T(0));
        CHECK(z <= top);
        // 0 quantizes to the code z and comes back as exactly 0.
        const oq::core::AffineParams<T> ap{s, z};
        const T q0 = oq::core::quantize_value(T(0), ap, spec.code_range());
        CHECK(q0 == z);
        CHECK((q0 - z) * s == T(0));
        const T lo = x.row(r).minCoeff(), hi = x.row(r).maxCoeff();
        if (lo < 0 && hi > 0) {  // the range held 0 already: nothing changes
          CHECK(s == unwidened.scale(r, 0));
          CHECK(z == unwidened.zero(r, 0));
        }
        // gptq/quant.py's find_params, in T: scale = (xmax − xmin)/maxq,
        // zero = round(−xmin/scale), xmin = min(lo, 0), xmax = max(hi, 0); bit
        // for bit where that scale is a positive number (not the all-zero row,
        // not one that underflows).
        const T xmin = std::min(lo, T(0)), xmax = std::max(hi, T(0));
        const T scale = (xmax - xmin) / top;
        if (clip == 1.0 && scale > T(0)) {
          CHECK(s == scale);
          CHECK(z == std::nearbyint(-xmin / scale));
          // The whole widened range is representable: |x − Q(x)| ≤ s/2.
          for (Eigen::Index c = 0; c < cols; ++c) {
            const T q = oq::core::quantize_value(x(r, c), ap, spec.code_range());
            CHECK(std::abs(double((q - z) * s) - double(x(r, c))) <=
                  oq::test::half_step_bound<T>(double(s), double(top), double(x(r, c))));
          }
        }
      }
      // The all-zero row keeps docs/design.md §2's scale 1, zero 0. The subnormal row
      // (its scale underflows) reconstructs its value exactly, at code 1.
      CHECK(p.scale(5, 0) == T(1));
      CHECK(p.zero(5, 0) == T(0));
      CHECK(p.zero(8, 0) == T(0));
      const T tiny = std::numeric_limits<T>::denorm_min();
      const T q_tiny = oq::core::quantize_value(tiny, oq::core::AffineParams<T>{p.scale(8, 0), p.zero(8, 0)},
                                                spec.code_range());
      CHECK((q_tiny - p.zero(8, 0)) * p.scale(8, 0) == tiny);
      // Symmetric ranges hold 0 already, and asymmetric ones use every code:
      // each flag leaves the other kind alone.
      QuantSpec sym = QuantSpec::per_token(bits, true, clip);
      const QuantParams<T> a = compute_params(x, sym);
      sym.range_includes_zero = true;
      const QuantParams<T> b = compute_params(x, sym);
      CHECK(a.scale == b.scale);
      CHECK(a.zero == b.zero);
      QuantSpec asym = QuantSpec::per_token(bits, false, clip);
      asym.symmetric_full_range = true;
      const QuantParams<T> c = compute_params(x, asym);
      CHECK(c.scale == unwidened.scale);
      CHECK(c.zero == unwidened.zero);
    }
  }
}

TEST_CASE_TEMPLATE("symmetric_full_range: GPTQ's symmetric grid, a finer step, |x − Q(x)| ≤ s/2", T, float,
                   double) {
  const MatrixX<T> x = oq::test::adversarial<T>(9, 64, 41);
  for (int bits : {2, 3, 4, 8}) {
    for (double clip : {1.0, 0.85}) {
      CAPTURE(bits);
      CAPTURE(clip);
      QuantSpec spec = QuantSpec::per_token(bits, true, clip);
      const QuantParams<T> restricted = compute_params(x, spec);
      spec.symmetric_full_range = true;
      const QuantParams<T> p = compute_params(x, spec);
      const auto codes = quantize(x, p, spec);
      for (Eigen::Index r = 0; r < x.rows(); ++r) {
        CAPTURE(r);
        const double absmax = x.row(r).cwiseAbs().maxCoeff();
        if (absmax == 0) {
          CHECK(p.scale(r, 0) == T(1));
          continue;
        }
        // gptq/quant.py, sym: (xmax − xmin)/maxq with xmin = −xmax, after the
        // clip, in T: bit for bit.
        const T clipped = T(clip) * T(absmax);
        CHECK(p.scale(r, 0) == (clipped + clipped) / T((1 << bits) - 1));
        CHECK(p.zero(r, 0) == T(0));
        // A finer step than docs/design.md §2's: (2^(b−1) − 1) / (2^(b−1) − ½).
        CHECK(p.scale(r, 0) < restricted.scale(r, 0));
        for (Eigen::Index c = 0; c < x.cols(); ++c) {
          const double v = double(x(r, c));
          if (std::abs(v) > clip * absmax) continue;  // clipped away
          const double back = double((T(codes(r, c)) - p.zero(r, 0)) * p.scale(r, 0));
          // The grid's ends lie 2^(b−1) steps from 0.
          CHECK(std::abs(back - v) <= oq::test::half_step_bound<T>(double(p.scale(r, 0)), double(1 << (bits - 1)), v));
        }
      }
    }
  }
}

TEST_CASE("compute_params rejects bad input with a clear error") {
  MatrixX<float> x = oq::test::gaussian<float>(4, 8, 1);
  CHECK_THROWS_AS(compute_params(MatrixX<float>(0, 8), QuantSpec::per_token(4, true)), std::invalid_argument);
  CHECK_THROWS_AS(compute_params(x, QuantSpec::per_group(4, true, 3)), std::invalid_argument);
  CHECK_THROWS_AS(compute_params(x, QuantSpec::per_token(12, true)), std::invalid_argument);
  x(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(compute_params(x, QuantSpec::per_token(4, true)),
                       doctest::Contains("x must be finite, but x(2, 5) is nan"), std::domain_error);
  x(2, 5) = 0;
  x(1, 7) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(compute_params(x, QuantSpec::per_tensor(4, false)), doctest::Contains("x(1, 7) is -inf"),
                       std::domain_error);
}

TEST_CASE("validate_params rejects parameters that do not fit") {
  const MatrixX<double> x = oq::test::gaussian<double>(4, 8, 2);
  const QuantSpec spec = QuantSpec::per_token(4, false);
  QuantParams<double> p = compute_params(x, spec);
  CHECK_THROWS_WITH_AS(validate_params(p, spec, 5, 8, "f"), doctest::Contains("params.scale must be 5 x 1"),
                       std::invalid_argument);
  p.scale(1, 0) = 0;
  CHECK_THROWS_WITH_AS(validate_params(p, spec, 4, 8, "f"),
                       doctest::Contains("params.scale(1, 0) must be positive and finite"), std::invalid_argument);
  p = compute_params(x, spec);
  p.zero(2, 0) = 0.5;
  CHECK_THROWS_WITH_AS(validate_params(p, spec, 4, 8, "f"), doctest::Contains("params.zero(2, 0) must be a finite integer"),
                       std::invalid_argument);
  p = compute_params(x, spec);
  p.zero(0, 0) = 1;
  CHECK_THROWS_AS(validate_params(p, QuantSpec::per_token(4, true), 4, 8, "f"), std::invalid_argument);
}
