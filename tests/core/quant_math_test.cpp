#include <oq/core/quant_math.hpp>

#include <doctest/doctest.h>

#include "support/bounds.hpp"

#include <cmath>
#include <limits>
#include <random>

using namespace oq::core;

static_assert(code_range(4, true).lo == -8 && code_range(4, true).hi == 7);
static_assert(code_range(4, false).lo == 0 && code_range(4, false).hi == 15);
static_assert(code_range(8, true).lo == -128 && code_range(8, true).hi == 127);
static_assert(code_range(2, false).hi == 3);
// constexpr end to end: 4-bit symmetric with absmax 7 has scale 1.
static_assert(symmetric_params(7.0, 1.0, 4).scale == 1.0);
static_assert(fake_quantize_value(2.5, symmetric_params(7.0, 1.0, 4), code_range(4, true)) == 2.0);

// Full range: max|x| = 7.5 maps to 7.5 codes of scale 1.
static_assert(symmetric_full_range_params(7.5, 1.0, 4).scale == 1.0);
static_assert(symmetric_full_range_params(0.0, 1.0, 4).scale == 1.0);  // all-zero group

TEST_CASE_TEMPLATE("full-range symmetric: s = 2·max/(2^b − 1), −max uses the code −2^(b−1), error ≤ s/2", T, float,
                   double) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<double> dist(1e-3, 1e3);
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    const CodeRange r = code_range(bits, true);
    for (int k = 0; k < 200; ++k) {
      const auto m = static_cast<T>(dist(rng));
      const AffineParams<T> p = symmetric_full_range_params(m, T(1), bits);
      // The reference's (xmax − xmin)/maxq with xmin = −xmax, in T.
      CHECK(p.scale == (m + m) / static_cast<T>((1 << bits) - 1));
      CHECK(p.zero == T(0));
      // The grid's ends lie 2^(b−1) steps from 0.
      for (const T x : {m, -m, m / T(3), -m / T(7), T(0)})
        CHECK(std::fabs(double(fake_quantize_value(x, p, r)) - double(x)) <=
              oq::test::half_step_bound<T>(double(p.scale), double(1 << (bits - 1)), double(x)));
    }
  }
  // ±max/s = ±(2^(b−1) − ½), a tie: exact when max = (2^b − 1)/2 · 2^k. Half
  // to even gives −2^(b−1), the code a restricted grid never uses, and
  // 2^(b−1), which clamps to 2^(b−1) − 1 (the error s/2 of the bound).
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    const CodeRange r = code_range(bits, true);
    for (int k : {-3, 0, 5}) {
      const T m = std::ldexp(static_cast<T>((1 << bits) - 1) / T(2), k);
      const AffineParams<T> p = symmetric_full_range_params(m, T(1), bits);
      CHECK(p.scale == std::ldexp(T(1), k));
      CHECK(quantize_value(-m, p, r) == static_cast<T>(r.lo));
      CHECK(quantize_value(m, p, r) == static_cast<T>(r.hi));
    }
  }
  // No overflow at the top of the range: c·max/(2^b − 1)/2, never 2·c·max.
  const T top = std::numeric_limits<T>::max();
  CHECK(std::isfinite(symmetric_full_range_params(top, T(1), 8).scale));
}

TEST_CASE("code ranges hold 2^bits codes for every bit width") {
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    for (bool symmetric : {false, true}) {
      const CodeRange r = code_range(bits, symmetric);
      CHECK(r.hi - r.lo + 1 == (1 << bits));
      CHECK(r.lo <= 0);
      CHECK(r.hi > 0);
    }
  }
}

TEST_CASE_TEMPLATE("symmetric quantization of ±max is exact at the ends", T, float, double) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> dist(1e-3, 1e3);
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    const CodeRange r = code_range(bits, true);
    for (int k = 0; k < 200; ++k) {
      const auto m = static_cast<T>(dist(rng));
      const AffineParams<T> p = symmetric_params(m, T(1), bits);
      CHECK(quantize_value(m, p, r) == static_cast<T>(r.hi));
      CHECK(quantize_value(-m, p, r) == static_cast<T>(-r.hi));
      // (qmax · s) reproduces m to one rounding of the division and the product.
      CHECK(std::fabs(fake_quantize_value(m, p, r) - m) <= 2 * std::numeric_limits<T>::epsilon() * m);
    }
  }
}

TEST_CASE_TEMPLATE("asymmetric ends map to the first and last code", T, float, double) {
  std::mt19937 rng(6);
  std::uniform_real_distribution<double> dist(-100, 100);
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    const CodeRange r = code_range(bits, false);
    for (int k = 0; k < 200; ++k) {
      auto lo = static_cast<T>(dist(rng));
      auto hi = static_cast<T>(dist(rng));
      if (lo > hi) std::swap(lo, hi);
      if (lo == hi) continue;
      const AffineParams<T> p = asymmetric_params(lo, hi, T(1), bits);
      CHECK(p.zero == std::nearbyint(p.zero));
      // |x − x̂| ≤ s/2 everywhere inside [lo, hi]: z = rne(−lo/s) shifts the grid
      // by at most s/2, which the clamp at the range ends absorbs; the far end
      // lies L = 2^b − 1 steps away (half_step_bound's slack).
      const double levels = r.hi - r.lo;
      for (int t = 0; t <= 16; ++t) {
        const T x = lo + (hi - lo) * static_cast<T>(t) / T(16);
        const T err = std::fabs(fake_quantize_value(x, p, r) - x);
        CHECK(double(err) <= oq::test::half_step_bound<T>(double(p.scale), levels, double(x)));
      }
    }
  }
}

TEST_CASE_TEMPLATE("degenerate groups: zero range gives exact reconstruction, never NaN", T, float, double) {
  const CodeRange r = code_range(4, false);
  const AffineParams<T> zero = asymmetric_params(T(0), T(0), T(0.9), 4);
  CHECK(zero.scale == T(1));
  CHECK(zero.zero == T(0));
  CHECK(fake_quantize_value(T(0), zero, r) == T(0));
  for (T v : {T(0.3), T(-0.3), T(1000), T(-1e-20), T(123.456)}) {
    const AffineParams<T> p = asymmetric_params(v, v, T(0.8), 4);
    CHECK(p.scale > T(0));
    CHECK(fake_quantize_value(v, p, r) == v);
  }
  const AffineParams<T> sym = symmetric_params(T(0), T(1), 4);
  CHECK(sym.scale == T(1));
  CHECK(fake_quantize_value(T(0), sym, code_range(4, true)) == T(0));
}

TEST_CASE_TEMPLATE("a range that overflows still gives a finite scale", T, float, double) {
  const T big = std::numeric_limits<T>::max() / T(2) * T(1.5);  // 2·big overflows
  const AffineParams<T> p = asymmetric_params(-big, big, T(1), 8);
  REQUIRE(std::isfinite(p.scale));
  const CodeRange r = code_range(8, false);
  CHECK(fake_quantize_value(big, p, r) > big * T(0.99));
  CHECK(fake_quantize_value(-big, p, r) < -big * T(0.99));
}
