#include <oq/quant/spec.hpp>

#include <doctest/doctest.h>

#include <limits>
#include <stdexcept>
#include <string>

using namespace oq::quant;

namespace {
std::string message_of(const QuantSpec& spec) {
  try {
    spec.validate("test");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("factories and designated initializers describe the same quantizers") {
  constexpr QuantSpec a = QuantSpec::per_group(4, true, 128, 0.9);
  constexpr QuantSpec b{.bits = 4, .symmetric = true, .granularity = Granularity::kPerGroup, .group_size = 128,
                        .clip_ratio = 0.9};
  static_assert(a.bits == b.bits && a.symmetric == b.symmetric && a.granularity == b.granularity &&
                a.group_size == b.group_size && a.clip_ratio == b.clip_ratio);
  static_assert(a.code_range().lo == -8 && a.code_range().hi == 7);
  CHECK_NOTHROW(a.validate("test"));
  CHECK(to_string(Granularity::kPerTensor) == "per-tensor");
  CHECK(to_string(Granularity::kPerRow) == "per-row");
  CHECK(to_string(Granularity::kPerGroup) == "per-group");
}

TEST_CASE("per_row, per_channel and per_token are one quantizer: a pair per row") {
  // per_channel (W's rows are output channels) and per_token (X's rows are
  // tokens) are per_row under the papers' names, field for field.
  constexpr QuantSpec row = QuantSpec::per_row(4, false, 0.9);
  for (const QuantSpec& other : {QuantSpec::per_channel(4, false, 0.9), QuantSpec::per_token(4, false, 0.9)}) {
    CHECK(other.granularity == Granularity::kPerRow);
    CHECK((other.bits == row.bits && other.symmetric == row.symmetric && other.group_size == row.group_size &&
           other.clip_ratio == row.clip_ratio && other.range_includes_zero == row.range_includes_zero &&
           other.symmetric_full_range == row.symmetric_full_range));
  }
  static_assert(row.granularity == Granularity::kPerRow && row.group_size == 0);
  // One pair per row of a 7 × 12 matrix, covering the whole row.
  CHECK(row.param_rows(7) == 7);
  CHECK(row.param_cols(12) == 1);
  CHECK(row.block_rows(7) == 1);
  CHECK(row.block_cols(12) == 12);
  // The designated initializers' default is per row too.
  static_assert(QuantSpec{}.granularity == Granularity::kPerRow);
}

// The enumerators' old names stay as deprecated aliases of kPerRow: code
// that uses them still compiles (with a warning, silenced here because oq's
// tests build with -Werror) and means what it meant, one pair per row.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
TEST_CASE("the deprecated kPerChannel and kPerToken are kPerRow") {
  static_assert(Granularity::kPerChannel == Granularity::kPerRow);
  static_assert(Granularity::kPerToken == Granularity::kPerRow);
  constexpr QuantSpec old{.bits = 4, .symmetric = true, .granularity = Granularity::kPerChannel};
  static_assert(old.granularity == QuantSpec::per_row(4, true).granularity);
  CHECK_NOTHROW(old.validate("test"));
  CHECK(old.param_rows(5) == 5);
  CHECK(old.param_cols(8) == 1);
  CHECK(to_string(Granularity::kPerToken) == "per-row");
  CHECK(QuantSpec::per_token(4, false).granularity == Granularity::kPerChannel);
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

TEST_CASE("gptq_reference: GPTQ's grids (zero-including asymmetric range, full-range symmetric)") {
  constexpr QuantSpec asym = QuantSpec::gptq_reference(4, false, 128);
  static_assert(asym.granularity == Granularity::kPerGroup && asym.group_size == 128 && asym.range_includes_zero &&
                !asym.symmetric_full_range && asym.clip_ratio == 1.0 && !asym.symmetric);
  constexpr QuantSpec sym = QuantSpec::gptq_reference(3, true);
  static_assert(sym.granularity == Granularity::kPerRow && sym.group_size == 0 && sym.symmetric_full_range &&
                !sym.range_includes_zero && sym.bits == 3);
  CHECK_NOTHROW(asym.validate("test"));
  CHECK_NOTHROW(sym.validate("test"));
  // The factories leave both off: docs/design.md §2's quantizer.
  constexpr QuantSpec plain = QuantSpec::per_token(4, true);
  static_assert(!plain.range_includes_zero && !plain.symmetric_full_range);
}

TEST_CASE("parameter layout per granularity") {
  CHECK(QuantSpec::per_tensor(4, false).param_rows(10) == 1);
  CHECK(QuantSpec::per_tensor(4, false).param_cols(64) == 1);
  CHECK(QuantSpec::per_tensor(4, false).block_rows(10) == 10);
  CHECK(QuantSpec::per_channel(4, false).param_rows(10) == 10);
  CHECK(QuantSpec::per_token(4, false).block_cols(64) == 64);
  CHECK(QuantSpec::per_group(4, false, 16).param_cols(64) == 4);
  CHECK(QuantSpec::per_group(4, false, 16).block_cols(64) == 16);
}

TEST_CASE("invalid specs name the field and the expected value") {
  CHECK(message_of(QuantSpec::per_token(1, false)).find("spec.bits must be in [2, 8], got 1") != std::string::npos);
  CHECK(message_of(QuantSpec::per_token(9, true)).find("spec.bits") != std::string::npos);
  CHECK(message_of(QuantSpec::per_token(4, true, 0.0)).find("spec.clip_ratio must be in (0, 1]") !=
        std::string::npos);
  CHECK(message_of(QuantSpec::per_token(4, true, 1.5)).find("spec.clip_ratio") != std::string::npos);
  CHECK(message_of(QuantSpec::per_group(4, true, 0)).find("spec.group_size must be > 0") != std::string::npos);
  QuantSpec stray = QuantSpec::per_token(4, true);
  stray.group_size = 32;
  CHECK(message_of(stray).find("spec.group_size must be 0") != std::string::npos);
  CHECK(message_of(QuantSpec::per_token(4, true)).empty());
}

TEST_CASE("shape validation") {
  CHECK_THROWS_WITH_AS(QuantSpec::per_group(4, true, 32).validate_shape(4, 48, "f"),
                       "f: spec.group_size (32) must divide the row length of x (48)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(QuantSpec::per_token(4, true).validate_shape(0, 48, "f"),
                       "f: x must be non-empty, got 0 x 48", std::invalid_argument);
  CHECK_THROWS_AS(QuantSpec::per_token(4, true).validate_shape(3, 0, "f"), std::invalid_argument);
  CHECK_NOTHROW(QuantSpec::per_group(4, true, 16).validate_shape(3, 48, "f"));
}

TEST_CASE("code_range refuses bit counts outside [2, 8] instead of shifting by them") {
  // Before: 1 << bits with bits = 40 or -1 is undefined behaviour (UBSan:
  // shift exponent too large / negative), and bits = 31 overflowed int.
  for (int bits : {-1, 0, 1, 9, 16, 31, 32, 40, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()}) {
    for (bool symmetric : {false, true}) {
      QuantSpec spec = QuantSpec::per_token(4, symmetric);
      spec.bits = bits;
      INFO("bits ", bits, " symmetric ", symmetric);
      CHECK_THROWS_WITH_AS(spec.code_range(),
                           ("oq::quant::QuantSpec::code_range: spec.bits must be in [2, 8], got " + std::to_string(bits))
                               .c_str(),
                           std::invalid_argument);
    }
  }
  for (int bits = 2; bits <= 8; ++bits) {
    const QuantSpec spec = QuantSpec::per_token(bits, true);
    CHECK(spec.code_range().lo == -(1 << (bits - 1)));
    CHECK(QuantSpec::per_token(bits, false).code_range().hi == (1 << bits) - 1);
  }
}
