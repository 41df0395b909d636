#include <oq/quant/quantize.hpp>
#include <oq/quant/reference.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

using namespace oq::quant;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {
std::vector<QuantSpec> specs_for(Eigen::Index cols) {
  std::vector<QuantSpec> specs;
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool symmetric : {false, true}) {
      for (double clip : {1.0, 0.8}) {
        specs.push_back(QuantSpec::per_tensor(bits, symmetric, clip));
        specs.push_back(QuantSpec::per_channel(bits, symmetric, clip));
        specs.push_back(QuantSpec::per_group(bits, symmetric, cols / 4, clip));
      }
    }
  }
  return specs;
}

#define OQ_CAPTURE_SPEC(spec)                \
  CAPTURE((spec).bits);                      \
  CAPTURE((spec).symmetric);                 \
  CAPTURE(to_string((spec).granularity));    \
  CAPTURE((spec).clip_ratio)
}  // namespace

TEST_CASE_TEMPLATE("fake_quantize equals the plain reference bit for bit", T, float, double) {
  const MatrixX<T> x = oq::test::adversarial<T>(11, 64, 3);
  for (const QuantSpec& spec : specs_for(x.cols())) {
    OQ_CAPTURE_SPEC(spec);
    const QuantParams<T> p = compute_params(x, spec);
    CHECK(fake_quantize(x, p, spec) == fake_quantize_ref(x, p, spec));
    const MatrixX<T> codes = quantize(x, p, spec).template cast<T>();
    CHECK(codes == quantize_ref(x, p, spec));
  }
}

TEST_CASE_TEMPLATE("error bound: |x − Q(x)| ≤ s/2 inside the range, codes inside the code range", T, float,
                   double) {
  const MatrixX<T> x = oq::test::adversarial<T>(11, 64, 5);
  for (const QuantSpec& spec : specs_for(x.cols())) {
    OQ_CAPTURE_SPEC(spec);
    const QuantParams<T> p = compute_params(x, spec);
    const auto codes = quantize(x, p, spec);
    const MatrixX<T> y = fake_quantize(x, p, spec);
    const auto range = spec.code_range();
    CHECK(codes.minCoeff() >= range.lo);
    CHECK(codes.maxCoeff() <= range.hi);
    // Entries inside the range are counted: the loop must not pass by
    // skipping them all (issue 23: it could check nothing). With clip ratios
    // below 1 only the entries beyond c·max are outside.
    Eigen::Index checked = 0;
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      for (Eigen::Index c = 0; c < x.cols(); ++c) {
        Eigen::Index i, j;
        param_index_ref(spec, r, c, i, j);
        const T s = p.scale(i, j);
        const T z = p.zero(i, j);
        // Inside the representable range [(lo − z)·s, (hi − z)·s] the error is at
        // most half a step, plus the roundings of x/s (ε|x| after scaling back)
        // and of (q − z)·s (ε|x̂| ≤ ε(|x| + s/2)).
        const T lo = (range.lo - z) * s;
        const T hi = (range.hi - z) * s;
        if (x(r, c) < lo || x(r, c) > hi) continue;
        ++checked;
        const T slack = 2 * std::numeric_limits<T>::epsilon() * (std::fabs(x(r, c)) + s);
        CHECK(std::fabs(x(r, c) - y(r, c)) <= s / 2 + slack);
      }
    }
    CHECK(checked >= x.size() / 2);
  }
}

TEST_CASE_TEMPLATE("quantize then dequantize equals fake_quantize; fake_quantize is idempotent", T, float, double) {
  const MatrixX<T> x = oq::test::adversarial<T>(10, 32, 9);
  for (const QuantSpec& spec : specs_for(x.cols())) {
    OQ_CAPTURE_SPEC(spec);
    const QuantParams<T> p = compute_params(x, spec);
    const MatrixX<T> y = fake_quantize(x, p, spec);
    CHECK(dequantize(quantize(x, p, spec), p, spec) == y);
    CHECK(fake_quantize(y, p, spec) == y);
  }
}

TEST_CASE_TEMPLATE("groups far from zero with a tiny range still match the reference", T, float, double) {
  // min ≈ 1000 and a range of ~1e-3: z = rne(−c·min/s) is about −1.5e7 (beyond
  // 2^22 in float), which takes detail::with_rounded_clamped's exact fallback.
  MatrixX<T> x(2, 16);
  for (Eigen::Index c = 0; c < 16; ++c) {
    x(0, c) = T(1000) + T(1e-3) * static_cast<T>(c) / T(16);
    x(1, c) = T(-3e5) - T(0.5) * static_cast<T>(c);
  }
  for (bool symmetric : {false, true}) {
    const QuantSpec spec = QuantSpec::per_token(4, symmetric, 0.9);
    const QuantParams<T> p = compute_params(x, spec);
    CHECK(fake_quantize(x, p, spec) == fake_quantize_ref(x, p, spec));
    CHECK(quantize(x, p, spec).template cast<T>().eval() == quantize_ref(x, p, spec));
  }
}

TEST_CASE("float path stays within one code of the float64 reference") {
  const MatrixX<double> xd = oq::test::gaussian<double>(16, 128, 12, 3.0);
  const MatrixX<float> xf = xd.cast<float>();
  const QuantSpec spec = QuantSpec::per_token(4, false, 0.9);
  const auto pf = compute_params(xf, spec);
  const auto pd = compute_params_ref(xf.cast<double>().eval(), spec);
  const MatrixX<double> codes_ref = quantize_ref(xf.cast<double>().eval(), pd, spec);
  const MatrixX<double> codes = quantize(xf, pf, spec).cast<double>();
  CHECK((codes - codes_ref).cwiseAbs().maxCoeff() <= 1.0);
  // Each float scale is c·(max − min)/(2^b − 1) with c rounded to float and
  // three roundings (−, ·c, /L): within 4·2^−24 of the float64 one, relative,
  // entry by entry (issue 23: the bound was 1e−6 of the largest scale, about
  // 4 times the math for the largest and far more for the others).
  const double u = std::ldexp(1.0, -24);
  CHECK(((pf.scale.cast<double>() - pd.scale).array().abs() / pd.scale.array()).maxCoeff() <= 4 * u);
}

TEST_CASE("known adversarial rows") {
  const MatrixX<float> x = oq::test::adversarial<float>(6, 16, 1);
  const QuantSpec spec = QuantSpec::per_token(4, false, 0.9);
  const MatrixX<float> y = fake_quantize(x, spec);
  CHECK(y.allFinite());
  CHECK(y.row(0).isZero(0));            // all-zero row: exact
  CHECK(y.row(1) == x.row(1));          // constant row: exact
  CHECK(y.row(2) == x.row(2));
  // One huge outlier: with 4 bits and clip 0.9 everything else collapses onto
  // one or two codes, the failure mode oq exists to fix.
  const auto p = compute_params(x, spec);
  CHECK(p.scale(3, 0) > 500.0f);
}

TEST_CASE("storage order, expressions and in-place use") {
  const MatrixX<float> x = oq::test::gaussian<float>(8, 32, 2);
  const RowMatrixX<float> x_row = x;
  const QuantSpec spec = QuantSpec::per_group(4, true, 16, 0.9);
  const MatrixX<float> y = fake_quantize(x, spec);
  const RowMatrixX<float> y_row = fake_quantize(x_row, spec);
  CHECK(MatrixX<float>(y_row) == y);

  // Into a block of a bigger matrix, and in place.
  MatrixX<float> big = MatrixX<float>::Zero(12, 32);
  fake_quantize_into(x, compute_params(x, spec), spec, big.middleRows(2, 8));
  CHECK(big.middleRows(2, 8) == y);
  CHECK(big.topRows(2).isZero(0));
  MatrixX<float> in_place = x;
  fake_quantize_into(in_place, compute_params(in_place, spec), spec, in_place);
  CHECK(in_place == y);

  // A map over the caller's own buffer, no copy.
  std::vector<float> buffer(x_row.data(), x_row.data() + x_row.size());
  const Eigen::Map<const RowMatrixX<float>> mapped(buffer.data(), 8, 32);
  CHECK(MatrixX<float>(fake_quantize(mapped, spec)) == y);
}

TEST_CASE("bad input gives clear errors") {
  MatrixX<float> x = oq::test::gaussian<float>(4, 8, 3);
  const QuantSpec spec = QuantSpec::per_token(4, false);
  const auto p = compute_params(x, spec);
  MatrixX<float> wrong(3, 8);
  CHECK_THROWS_WITH_AS(fake_quantize_into(x, p, spec, wrong), doctest::Contains("out must be 4 x 8"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(fake_quantize(MatrixX<float>(x.topRows(3)), p, spec),
                       doctest::Contains("params.scale must be 3 x 1"), std::invalid_argument);
  x(3, 0) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(quantize(x, p, spec), doctest::Contains("x(3, 0) is inf"), std::domain_error);
  CHECK_THROWS_AS(fake_quantize(x, p, spec), std::domain_error);
  CHECK_THROWS_AS(fake_quantize(x, spec), std::domain_error);

  Eigen::MatrixXi codes = Eigen::MatrixXi::Zero(4, 8);
  codes(1, 2) = 16;
  CHECK_THROWS_WITH_AS(dequantize(codes, p, spec),
                       doctest::Contains("codes(1, 2) = 16 is outside the code range [0, 15]"),
                       std::invalid_argument);
}

TEST_CASE_TEMPLATE("ranges near the largest value: a finite result or std::domain_error, never ±inf", T, float, double) {
  // Issue 23: with x spanning ±max, a symmetric clip of 0.9 gives
  // s = 0.9·max/7 and x = −max the code −8 (−7.78 rounded), whose value
  // −8·0.9·max/7 ≈ −1.03·max became −inf without a word.
  const T max = std::numeric_limits<T>::max();
  MatrixX<T> x(2, 4);
  x << -max, max, T(0), max / T(3), T(1), T(-2), T(3), T(0.5);
  const QuantSpec spec = QuantSpec::per_tensor(4, true, 0.9);
  const auto params = compute_params(x, spec);
  CHECK(std::isfinite(params.scale(0, 0)));
  MatrixX<T> in_place = x;
  CHECK_THROWS_WITH_AS(fake_quantize_into(x, params, spec, in_place),
                       doctest::Contains("x(0, 0) quantizes to code -8"), std::domain_error);
  CHECK(in_place == x);  // refused before anything was written
  CHECK_THROWS_AS(fake_quantize(x, spec), std::domain_error);
  const auto codes = quantize(x, params, spec);  // the codes themselves are fine
  CHECK(codes(0, 0) == -8);
  CHECK_THROWS_WITH_AS(dequantize(codes, params, spec), doctest::Contains("codes(0, 0) quantizes to code -8"),
                       std::domain_error);
  // Half the range: every code's value is finite, and nothing is refused.
  const MatrixX<T> half = x / T(2);
  const auto half_params = compute_params(half, spec);
  const MatrixX<T> y = fake_quantize(half, half_params, spec);
  CHECK(y.allFinite());
  CHECK(dequantize(quantize(half, half_params, spec), half_params, spec) == y);
  // Asymmetric over ±max (s = max/L − min/L, z = rne(7.5) = 8: code 0 is
  // (0 − 8)·2·max/15 = −16/15·max, or not, as 7.5 rounds): either way a
  // finite result or the error, never ±inf.
  try {
    const bool finite = fake_quantize(x, QuantSpec::per_tensor(4, false)).allFinite();
    CHECK(finite);
  } catch (const std::domain_error& e) {
    CHECK(std::string(e.what()).find("overflows the scalar type") != std::string::npos);
  }
}
