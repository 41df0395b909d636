// Tests for oq/core/float16.hpp: every binary16 and bfloat16 bit pattern
// round-trips, and float → f16/bf16 agrees with an independent rounding written
// in double arithmetic (nearest representable value, ties to the even code).
#include <oq/core/float16.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace {

bool is_nan16(std::uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }

// Reference float → binary16: pick the nearest of the finite f16 values by
// searching in double, which holds every float and every f16 exactly, so the
// distances compare exactly. Ties go to the even code; beyond 65520 → Inf.
std::uint16_t f16_reference(float x) {
  const double v = x;
  const std::uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  const double a = std::fabs(v);
  if (a >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7C00u);
  // Codes 0..0x7BFF are ordered by value: binary search for the neighbours.
  std::uint16_t lo = 0, hi = 0x7BFF;
  while (hi - lo > 1) {
    const auto mid = static_cast<std::uint16_t>((lo + hi) / 2);
    if (oq::core::f16_bits_to_float(mid) <= a) lo = mid; else hi = mid;
  }
  const double dlo = a - oq::core::f16_bits_to_float(lo);
  const double dhi = oq::core::f16_bits_to_float(hi) - a;
  std::uint16_t code;
  if (dlo < dhi) code = lo;
  else if (dhi < dlo) code = hi;
  else code = (lo & 1u) == 0 ? lo : hi;
  if (a >= oq::core::f16_bits_to_float(0x7BFF)) code = 0x7BFF;  // between max and the Inf threshold
  return static_cast<std::uint16_t>(sign | code);
}

// f16 value of a code, computed from the formula, in double.
double f16_formula(std::uint16_t h) {
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  const double s = (h & 0x8000u) ? -1.0 : 1.0;
  if (e == 0) return s * std::ldexp(m, -24);
  if (e == 31) return m == 0 ? s * std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  return s * std::ldexp(1024 + m, e - 25);
}

}  // namespace

TEST_CASE("f16_bits_to_float is the binary16 formula for all 65536 codes, and round-trips") {
  for (std::uint32_t code = 0; code < 0x10000u; ++code) {
    const auto h = static_cast<std::uint16_t>(code);
    const float f = oq::core::f16_bits_to_float(h);
    const double expected = f16_formula(h);
    if (is_nan16(h)) {
      CHECK(std::isnan(f));
      CHECK(is_nan16(oq::core::float_to_f16_bits(f)));
      CHECK(std::signbit(f) == ((h & 0x8000u) != 0));
      continue;
    }
    REQUIRE(static_cast<double>(f) == expected);
    CHECK(std::signbit(f) == ((h & 0x8000u) != 0));  // -0 stays -0
    REQUIRE(oq::core::float_to_f16_bits(f) == h);
  }
}

TEST_CASE("float_to_f16_bits rounds to nearest even, including subnormals and overflow") {
  using oq::core::float_to_f16_bits;
  // Ties: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 → even (1.0).
  CHECK(float_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3C00u);
  // 1 + 3·2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 → 1 + 2^-9.
  CHECK(float_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02u);
  CHECK(float_to_f16_bits(65504.0f) == 0x7BFFu);
  CHECK(float_to_f16_bits(65519.996f) == 0x7BFFu);
  CHECK(float_to_f16_bits(65520.0f) == 0x7C00u);
  CHECK(float_to_f16_bits(-1e10f) == 0xFC00u);
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001u);  // smallest subnormal
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000u);  // tie → even (0)
  CHECK(float_to_f16_bits(std::ldexp(1.5f, -25)) == 0x0001u);
  CHECK(float_to_f16_bits(std::ldexp(3.0f, -25)) == 0x0002u);  // tie between 1 and 2 → 2
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)) == 0x0400u);  // carries into the smallest normal
  CHECK(float_to_f16_bits(std::numeric_limits<float>::denorm_min()) == 0x0000u);
  CHECK(float_to_f16_bits(-0.0f) == 0x8000u);
  CHECK(float_to_f16_bits(std::numeric_limits<float>::infinity()) == 0x7C00u);
  CHECK(is_nan16(float_to_f16_bits(std::numeric_limits<float>::quiet_NaN())));
  CHECK(is_nan16(float_to_f16_bits(std::bit_cast<float>(0x7F800001u))));  // signalling NaN with a low payload

  std::mt19937 rng(20261123);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    // Random bit patterns concentrated on f16's exponent range (plus some of everything).
    std::uint32_t bits = any_bits(rng);
    if (i % 4 != 0) bits = (bits & 0x807FFFFFu) | ((static_cast<std::uint32_t>(127 - 27 + (bits >> 24) % 45)) << 23);
    const float x = std::bit_cast<float>(bits);
    if (std::isnan(x)) continue;
    REQUIRE_MESSAGE(float_to_f16_bits(x) == f16_reference(x), "x = " << x);
  }
}

TEST_CASE("bfloat16: every code round-trips; float → bf16 is RNE on the upper half") {
  using oq::core::bf16_bits_to_float;
  using oq::core::float_to_bf16_bits;
  for (std::uint32_t code = 0; code < 0x10000u; ++code) {
    const auto b = static_cast<std::uint16_t>(code);
    const float f = bf16_bits_to_float(b);
    if (std::isnan(f)) {
      CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
      continue;
    }
    REQUIRE(float_to_bf16_bits(f) == b);
  }
  CHECK(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8)) == 0x3F80u);       // tie → even
  CHECK(float_to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82u);   // tie → even (up)
  CHECK(float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7F80u);  // rounds to Inf
  CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::bit_cast<float>(0x7F800001u)))));

  // Against a rounding written in double: the two bf16 neighbours of x are the
  // truncation t and t + 1 ulp; choose the nearer, ties to the even code.
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t bits = any_bits(rng) & 0x7FFFFFFFu;  // positive
    if ((bits >> 23) == 0xFFu) continue;                     // Inf and NaN are checked above
    const float x = std::bit_cast<float>(bits);
    const auto t = static_cast<std::uint16_t>(bits >> 16);
    const double lo = bf16_bits_to_float(t);
    // Above the largest finite bf16 the upper neighbour is 2^128, where the
    // exponent range ends; RNE then rounds to it, i.e. to Inf.
    const double hi = t == 0x7F7Fu ? std::ldexp(1.0, 128) : bf16_bits_to_float(static_cast<std::uint16_t>(t + 1));
    const double dlo = double(x) - lo, dhi = hi - double(x);
    const std::uint16_t expected = dlo < dhi ? t : dhi < dlo ? static_cast<std::uint16_t>(t + 1) : ((t & 1u) ? static_cast<std::uint16_t>(t + 1) : t);
    REQUIRE(float_to_bf16_bits(x) == expected);
  }
}
