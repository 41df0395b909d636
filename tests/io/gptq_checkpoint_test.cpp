// Tests for oq/io/gptq_checkpoint.hpp: the bit layout against hand-written
// words, oq's GPTQ results against AutoGPTQ's dequantization formula written
// as a plain loop over the packed words, round trips (codes → words → codes
// and arbitrary words → codes → words, both zero formats), safetensors
// tensors, and every bad input.
#include <oq/io/gptq_checkpoint.hpp>

#include <oq/core/float16.hpp>
#include <oq/detail/eigen_types.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

using oq::io::GptqCheckpointFormat;
using oq::io::GptqLinearCodes;
using oq::io::GptqPackedLinear;
using oq::quant::QuantSpec;

namespace {

constexpr GptqCheckpointFormat kFormats[] = {GptqCheckpointFormat::kGptq, GptqCheckpointFormat::kGptqV2};

// What a g_idx-aware GPTQ reader computes (AutoGPTQ's qlinear_cuda.py and
// exllama layers), element by element: shift each word right by
// 4·(index mod 8), mask 15, add 1 to the zero for "gptq" (pack writes zeros
// 1..15 there, where every reader agrees), scale of group g_idx[k].
Eigen::MatrixXf dequantize_like_autogptq(const GptqPackedLinear& p, GptqCheckpointFormat format) {
  const Eigen::Index in = Eigen::Index(p.g_idx.size()), out = p.scales.cols();
  Eigen::MatrixXf w(out, in);
  for (Eigen::Index k = 0; k < in; ++k) {
    const std::int32_t g = p.g_idx[std::size_t(k)];
    for (Eigen::Index n = 0; n < out; ++n) {
      const std::uint32_t qw = std::uint32_t(p.qweight(k / 8, n)), qz = std::uint32_t(p.qzeros(g, n / 8));
      const int code = int((qw >> (4 * (k % 8))) & 15u);
      const int zero = int((qz >> (4 * (n % 8))) & 15u) + (format == GptqCheckpointFormat::kGptq ? 1 : 0);
      w(n, k) = oq::core::f16_bits_to_float(p.scales(g, n)) * float(code - zero);
    }
  }
  return w;
}

float round_to_f16(float x) { return oq::core::f16_bits_to_float(oq::core::float_to_f16_bits(x)); }

Eigen::MatrixXd hessian_of_correlated(Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed) {
  return oq::test::gptq_hessian_of(oq::test::correlated_inputs(tokens, channels, seed));
}

GptqLinearCodes small_codes(Eigen::Index out, Eigen::Index in, Eigen::Index groups, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  GptqLinearCodes c;
  c.codes.resize(out, in);
  for (Eigen::Index i = 0; i < c.codes.size(); ++i) c.codes.data()[i] = std::int32_t(rng() % 16);
  c.params.scale = (oq::test::gaussian<float>(out, groups, seed + 1).array().abs() + 0.01f).matrix();
  c.params.zero.resize(out, groups);
  for (Eigen::Index i = 0; i < c.params.zero.size(); ++i) c.params.zero.data()[i] = float(1 + rng() % 15);
  for (Eigen::Index k = 0; k < in; ++k) c.group_index.push_back(std::int32_t(rng() % std::uint64_t(groups)));
  return c;
}

}  // namespace

// The io alias is oq/detail/eigen_types.hpp's (the one definition transform/ uses too).
static_assert(std::is_same_v<oq::io::RowMajorMatrix<float>, oq::detail::RowMajorMatrix<float>>);

TEST_CASE("the bit layout: eight codes per qweight word along K, eight zeros per qzeros word along N") {
  GptqLinearCodes c;
  c.codes = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic>::Zero(8, 16);
  for (int k = 0; k < 8; ++k) c.codes(0, k) = k + 1;  // output 0, inputs 0..7: 1..8
  c.codes(3, 9) = 15;                                   // output 3, input 9: word (1, 3), bits 4..7
  c.params.scale = Eigen::MatrixXf::Ones(8, 2);
  c.params.scale(5, 1) = 0.333333343f;
  c.params.zero.resize(8, 2);
  for (int n = 0; n < 8; ++n) c.params.zero(n, 0) = float(n + 1), c.params.zero(n, 1) = 15.0f - float(n);
  c.group_index = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};

  const GptqPackedLinear v1 = pack_gptq_linear(c, GptqCheckpointFormat::kGptq);
  REQUIRE(v1.qweight.rows() == 2);
  REQUIRE(v1.qweight.cols() == 8);
  CHECK(std::uint32_t(v1.qweight(0, 0)) == 0x87654321u);
  CHECK(v1.qweight(0, 0) < 0);  // bit 31 set: stored as a negative int32, as numpy's astype(int32) does
  CHECK(std::uint32_t(v1.qweight(1, 3)) == 0x000000F0u);
  CHECK(v1.qweight(1, 0) == 0);
  REQUIRE(v1.qzeros.rows() == 2);
  REQUIRE(v1.qzeros.cols() == 1);
  CHECK(std::uint32_t(v1.qzeros(0, 0)) == 0x76543210u);  // zeros 1..8 stored minus one
  CHECK(std::uint32_t(v1.qzeros(1, 0)) == 0x789ABCDEu);  // zeros 15..8
  CHECK(v1.scales(0, 0) == 0x3C00);                      // 1.0 in binary16
  CHECK(v1.scales(1, 5) == 0x3555);                      // 1/3 rounded to binary16
  CHECK(v1.g_idx == c.group_index);

  c.params.zero.col(1).setConstant(15.0f);  // "gptq_v2" stores the zeros themselves, 0..15
  const GptqPackedLinear v2 = pack_gptq_linear(c, GptqCheckpointFormat::kGptqV2);
  CHECK(std::uint32_t(v2.qzeros(0, 0)) == 0x87654321u);
  // GPTQModel's "gptq" → "gptq_v2" conversion adds 1 to every nibble at once.
  CHECK(std::uint32_t(v1.qzeros(0, 0)) + 0x11111111u == std::uint32_t(v2.qzeros(0, 0)));
  CHECK(std::uint32_t(v2.qzeros(1, 0)) == 0xFFFFFFFFu);
  CHECK(v2.qweight == v1.qweight);
}

TEST_CASE("oq's GPTQ results packed: AutoGPTQ's dequantization gives oq's Ŵ with binary16 scales") {
  const Eigen::Index out = 24, in = 64;
  const Eigen::MatrixXd h = hessian_of_correlated(256, in, 5);
  const Eigen::MatrixXf w = oq::test::heavy_tailed<float>(out, in, 6);
  struct Case {
    const char* name;
    QuantSpec spec;
    oq::quant::GptqOptions options;
  };
  const Case cases[] = {
      {"asymmetric, groups of 16 in the act order (desc_act)", QuantSpec::per_group(4, false, 16),
       {.act_order = true, .static_groups = false}},
      {"asymmetric, static groups of 32", QuantSpec::per_group(4, false, 32), {.act_order = true}},
      {"symmetric, groups of 16", QuantSpec::per_group(4, true, 16, 0.9), {}},
      {"symmetric, per-channel", QuantSpec::per_channel(4, true), {.act_order = true}},
      {"asymmetric, per-channel", QuantSpec::per_channel(4, false, 0.8), {}},
      {"GPTQ's reference grid, symmetric full range, groups of 16 (desc_act)", QuantSpec::gptq_reference(4, true, 16),
       {.act_order = true, .static_groups = false}},
      {"GPTQ's reference grid, asymmetric with 0 in range, per-channel", QuantSpec::gptq_reference(4, false), {}},
  };
  for (const Case& tc : cases) {
    CAPTURE(tc.name);
    const auto r = oq::quant::gptq_quantize(w, h, tc.spec, tc.options);
    const GptqLinearCodes c = oq::io::gptq_linear_codes(r, tc.spec);
    CHECK(c.codes.minCoeff() >= 0);
    CHECK(c.codes.maxCoeff() <= 15);
    if (tc.spec.symmetric) CHECK((c.params.zero.array() == 8.0f).all());
    const bool in_order = tc.options.act_order && !tc.options.static_groups &&
                          tc.spec.granularity == oq::quant::Granularity::kPerGroup;
    bool trivial = true;
    for (Eigen::Index k = 0; k < in; ++k)
      trivial = trivial && c.group_index[std::size_t(k)] == (tc.spec.group_size > 0 ? k / tc.spec.group_size : 0);
    CHECK(trivial == !in_order);

    // oq's Ŵ with each scale rounded to binary16, the format's one loss.
    Eigen::MatrixXf expected(out, in);
    for (Eigen::Index n = 0; n < out; ++n)
      for (Eigen::Index k = 0; k < in; ++k) {
        const Eigen::Index g = c.group_index[std::size_t(k)];
        expected(n, k) = round_to_f16(r.params.scale(n, g)) * float(r.codes(n, k) - std::int32_t(r.params.zero(n, g)));
      }
    // And within binary16's half ulp of the scale (2⁻¹¹ relative) of Ŵ itself.
    CHECK(((expected - r.weight).cwiseAbs().array() <= r.weight.cwiseAbs().array() * std::ldexp(1.0f, -11)).all());

    int packed = 0;
    for (const GptqCheckpointFormat format : kFormats) {
      CAPTURE(to_string(format));
      const float z_lo = format == GptqCheckpointFormat::kGptq ? 1.0f : 0.0f;
      const float z_hi = 15.0f;
      if (c.params.zero.minCoeff() < z_lo || c.params.zero.maxCoeff() > z_hi) {
        CHECK_THROWS_AS(pack_gptq_linear(c, format), std::domain_error);
        continue;
      }
      const GptqPackedLinear p = pack_gptq_linear(c, format);
      CHECK(dequantize_like_autogptq(p, format) == expected);
      const GptqLinearCodes back = unpack_gptq_linear(p, format);
      CHECK(back.codes == c.codes);
      CHECK(back.params.zero == c.params.zero);
      CHECK(back.group_index == c.group_index);
      CHECK(oq::io::dequantize_gptq_linear(back) == expected);
      ++packed;
    }
    CHECK(packed >= 1);
  }
}

TEST_CASE("rows entirely above or below 0: refused as oq quantizes, stored with range_includes_zero") {
  const Eigen::Index out = 16, in = 64;
  const Eigen::MatrixXd h = hessian_of_correlated(256, in, 9);
  Eigen::MatrixXf w = oq::test::gaussian<float>(out, in, 10);
  w.topRows(4).array() = w.topRows(4).array().abs() + 0.5f;          // above 0
  w.middleRows(4, 4).array() = -w.middleRows(4, 4).array().abs() - 0.5f;  // below 0
  for (const bool act_order : {false, true}) {
    CAPTURE(act_order);
    QuantSpec spec = QuantSpec::per_group(4, false, 16);
    const oq::quant::GptqOptions options{.act_order = act_order, .static_groups = false};
    const GptqLinearCodes unwidened = oq::io::gptq_linear_codes(oq::quant::gptq_quantize(w, h, spec, options), spec);
    CHECK(unwidened.params.zero.minCoeff() < 0.0f);
    CHECK(unwidened.params.zero.maxCoeff() > 15.0f);
    for (const GptqCheckpointFormat format : kFormats)
      CHECK_THROWS_WITH_AS(pack_gptq_linear(unwidened, format), doctest::Contains("range_includes_zero"),
                           std::domain_error);

    spec.range_includes_zero = true;
    const auto r = oq::quant::gptq_quantize(w, h, spec, options);
    const GptqLinearCodes c = oq::io::gptq_linear_codes(r, spec);
    CHECK(c.params.zero.minCoeff() >= 0.0f);
    CHECK(c.params.zero.maxCoeff() <= 15.0f);
    CHECK((c.params.zero.topRows(4).array() == 0.0f).all());        // [0, max]: zero 0
    CHECK((c.params.zero.middleRows(4, 4).array() == 15.0f).all());  // [min, 0]: zero 15
    const GptqPackedLinear p = pack_gptq_linear(c, GptqCheckpointFormat::kGptqV2);
    CHECK(oq::io::dequantize_gptq_linear(unpack_gptq_linear(p, GptqCheckpointFormat::kGptqV2)) ==
          dequantize_like_autogptq(p, GptqCheckpointFormat::kGptqV2));
    // Within binary16's half ulp of the scale of oq's Ŵ.
    CHECK(((dequantize_like_autogptq(p, GptqCheckpointFormat::kGptqV2) - r.weight).cwiseAbs().array() <=
           r.weight.cwiseAbs().array() * std::ldexp(1.0f, -11))
              .all());
    // "gptq" cannot store the zero 0 of the rows above 0 (file comment).
    CHECK_THROWS_WITH_AS(pack_gptq_linear(c, GptqCheckpointFormat::kGptq),
                         doctest::Contains("\"gptq_v2\" stores a zero of 0"), std::domain_error);
  }
}

TEST_CASE("w4a16_weights: the W4A16 kernels' operands, dequantized by their formula, are the checkpoint's Ŵ") {
  const Eigen::Index out = 12, in = 64, group = 16;
  const Eigen::MatrixXd h = hessian_of_correlated(256, in, 61);
  const Eigen::MatrixXf w = oq::test::heavy_tailed<float>(out, in, 62);
  for (const bool symmetric : {false, true}) {
    CAPTURE(symmetric);
    const QuantSpec spec = QuantSpec::gptq_reference(4, symmetric, group);
    const auto r = oq::quant::gptq_quantize(w, h, spec, {.act_order = true, .static_groups = false});
    const GptqLinearCodes desc_act = oq::io::gptq_linear_codes(r, spec);
    // Groups in the act order are not contiguous: the kernels cannot take them as they are.
    CHECK_THROWS_WITH_AS(oq::io::w4a16_weights(desc_act), doctest::Contains("sort_inputs_by_group first"),
                         std::invalid_argument);
    const oq::io::GptqInputsByGroup sorted = oq::io::sort_inputs_by_group(desc_act);
    const oq::io::GptqW4A16Weights k = oq::io::w4a16_weights(sorted.linear);
    REQUIRE(k.w.rows() == out);
    REQUIRE(k.w.cols() == in / 2);
    REQUIRE(k.scales.rows() == out);
    REQUIRE(k.scales.cols() == in / group);
    REQUIRE(k.zeros.rows() == out);
    CHECK(k.group_size == group);
    // GemmW4A16's formula on the bytes as its file comment gives it:
    // ŵ[n, k] = s[n, k / group]·(q[n, k] − z[n, k / group]), q[n, k] the low
    // nibble of byte (n, k/2) for even k, the high one for odd k.
    Eigen::MatrixXf w_kernel(out, in);
    for (Eigen::Index n = 0; n < out; ++n)
      for (Eigen::Index kk = 0; kk < in; ++kk) {
        const std::uint8_t byte = k.w(n, kk / 2);
        const int q = kk % 2 == 0 ? (byte & 0xF) : (byte >> 4);
        w_kernel(n, kk) = k.scales(n, kk / group) * (float(q) - k.zeros(n, kk / group));
      }
    CHECK(w_kernel == oq::io::dequantize_gptq_linear(sorted.linear));
    // And the layer: gathered inputs through the kernel's Ŵ equal oq's GPTQ layer.
    const Eigen::MatrixXf x = oq::test::gaussian<float>(5, in, 63);
    const Eigen::MatrixXf y_ref = x * r.weight.transpose();
    const Eigen::MatrixXf y = x(Eigen::all, sorted.input_order) * w_kernel.transpose();
    CHECK((y - y_ref).norm() <= 1e-5f * y_ref.norm());
    if (symmetric) CHECK((k.zeros.array() == 8.0f).all());
  }
  // Bad input: odd K, a code outside u4, a wrong parameter shape.
  GptqLinearCodes c = small_codes(8, 16, 2, 64);
  for (Eigen::Index kk = 0; kk < 16; ++kk) c.group_index[std::size_t(kk)] = std::int32_t(kk / 8);
  CHECK_NOTHROW(oq::io::w4a16_weights(c));
  GptqLinearCodes odd = c;
  odd.codes.conservativeResize(8, 15);
  odd.group_index.resize(15);
  CHECK_THROWS_WITH_AS(oq::io::w4a16_weights(odd), doctest::Contains("even"), std::invalid_argument);
  GptqLinearCodes big = c;
  big.codes(3, 5) = 16;
  CHECK_THROWS_WITH_AS(oq::io::w4a16_weights(big), doctest::Contains("codes(3, 5) = 16"), std::invalid_argument);
  GptqLinearCodes shape = c;
  shape.params.zero.conservativeResize(8, 1);
  CHECK_THROWS_WITH_AS(oq::io::w4a16_weights(shape), doctest::Contains("c.params.scale and c.params.zero"),
                       std::invalid_argument);
}

TEST_CASE("an act-order linear sorted by group is an ordinary per-group linear of gathered inputs") {
  const Eigen::Index out = 16, in = 48, group = 8;
  const Eigen::MatrixXd h = hessian_of_correlated(200, in, 51);
  const Eigen::MatrixXf w = oq::test::heavy_tailed<float>(out, in, 52);
  const QuantSpec spec = QuantSpec::per_group(4, true, group);
  const auto r = oq::quant::gptq_quantize(w, h, spec, {.act_order = true, .static_groups = false});
  const GptqLinearCodes c = oq::io::gptq_linear_codes(r, spec);
  const oq::io::GptqInputsByGroup sorted = oq::io::sort_inputs_by_group(c);
  REQUIRE(sorted.group_size == group);
  REQUIRE(sorted.input_order.size() == std::size_t(in));
  std::vector<bool> seen(std::size_t(in), false);
  for (Eigen::Index k = 0; k < in; ++k) {
    const Eigen::Index j = sorted.input_order[std::size_t(k)];
    CHECK(sorted.linear.group_index[std::size_t(k)] == k / group);
    CHECK(c.group_index[std::size_t(j)] == k / group);  // the input kept its group
    CHECK_FALSE(seen[std::size_t(j)]);
    seen[std::size_t(j)] = true;
    CHECK(sorted.linear.codes.col(k) == c.codes.col(j));
  }
  // Stable: inside a group, the original order.
  for (Eigen::Index k = 1; k < in; ++k)
    if (k % group != 0) CHECK(sorted.input_order[std::size_t(k - 1)] < sorted.input_order[std::size_t(k)]);
  // Sorting did something here (act-order groups are not contiguous).
  CHECK_FALSE(std::is_sorted(sorted.input_order.begin(), sorted.input_order.end()));

  // Contiguous groups: oq's own per-group dequantization applies, and equals
  // the g_idx dequantization with its columns gathered.
  const Eigen::MatrixXf w_sorted = oq::io::dequantize_gptq_linear(sorted.linear);
  const Eigen::MatrixXf w_gidx = oq::io::dequantize_gptq_linear(c);
  CHECK(oq::quant::dequantize(sorted.linear.codes, sorted.linear.params, QuantSpec::per_group(4, false, group)) ==
        w_sorted);
  const std::vector<Eigen::Index> order(sorted.input_order.begin(), sorted.input_order.end());
  CHECK(w_sorted == w_gidx(Eigen::all, order));
  // The layer: gathered inputs times the sorted weights is the original product.
  const Eigen::MatrixXf x = oq::test::gaussian<float>(5, in, 53);
  const Eigen::MatrixXf y = x * w_gidx.transpose();
  const Eigen::MatrixXf y_sorted = x(Eigen::all, order) * w_sorted.transpose();
  CHECK((y_sorted - y).norm() <= 1e-5f * y.norm());

  GptqLinearCodes uneven = c;
  uneven.group_index[0] = uneven.group_index[0] == 0 ? 1 : 0;
  CHECK_THROWS_WITH_AS(oq::io::sort_inputs_by_group(uneven), doctest::Contains("of the 48 inputs (expected K / G = 8"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::io::sort_inputs_by_group(small_codes(8, 0, 1, 15)), doctest::Contains("at least one input"),
                       std::invalid_argument);
  GptqLinearCodes mismatched = c;
  mismatched.params.zero.conservativeResize(out, 5);
  CHECK_THROWS_WITH_AS(oq::io::sort_inputs_by_group(mismatched), doctest::Contains("must both be 16 x G"),
                       std::invalid_argument);
}

TEST_CASE("round trips: codes → words → codes, and any words → codes → the same words") {
  for (const GptqCheckpointFormat format : kFormats) {
    CAPTURE(to_string(format));
    GptqLinearCodes c = small_codes(40, 96, 5, 11);
    if (format == GptqCheckpointFormat::kGptqV2) c.params.zero(3, 2) = 0.0f;   // only v2 stores 0
    if (format == GptqCheckpointFormat::kGptq) c.params.zero(3, 2) = 15.0f;    // v1's largest
    const GptqLinearCodes back = unpack_gptq_linear(pack_gptq_linear(c, format), format);
    CHECK(back.codes == c.codes);
    CHECK(back.params.zero == c.params.zero);
    CHECK(back.group_index == c.group_index);
    for (Eigen::Index i = 0; i < c.params.scale.size(); ++i)
      CHECK(back.params.scale.data()[i] == round_to_f16(c.params.scale.data()[i]));

    // Every 32-bit pattern is a valid qweight/qzeros word in both formats.
    std::mt19937_64 rng(12);
    GptqPackedLinear p;
    p.qweight.resize(12, 16);
    p.qzeros.resize(3, 2);
    p.scales.resize(3, 16);
    for (Eigen::Index i = 0; i < p.qweight.size(); ++i) p.qweight.data()[i] = std::int32_t(std::uint32_t(rng()));
    for (Eigen::Index i = 0; i < p.qzeros.size(); ++i) {
      std::uint32_t word = 0;  // "gptq" writes nibbles 0..14 (zeros 1..15), "gptq_v2" any
      for (int j = 0; j < 8; ++j)
        word |= std::uint32_t(rng() % (format == GptqCheckpointFormat::kGptq ? 15 : 16)) << (4 * j);
      p.qzeros.data()[i] = std::int32_t(word);
    }
    for (Eigen::Index i = 0; i < p.scales.size(); ++i)
      p.scales.data()[i] = std::uint16_t(0x0400 + rng() % 0x7800);  // positive normal binary16
    for (int k = 0; k < 96; ++k) p.g_idx.push_back(std::int32_t(rng() % 3));
    const GptqPackedLinear again = pack_gptq_linear(unpack_gptq_linear(p, format), format);
    CHECK(again.qweight == p.qweight);
    CHECK(again.qzeros == p.qzeros);
    CHECK(again.scales == p.scales);
    CHECK(again.g_idx == p.g_idx);
  }
  // A "gptq" zero nibble of 15 reads as 16 (exllama's and vLLM's reading),
  // which pack does not write back.
  GptqPackedLinear p = pack_gptq_linear(small_codes(8, 8, 1, 13), GptqCheckpointFormat::kGptq);
  p.qzeros(0, 0) = std::int32_t(0xFFFFFFFFu);
  const GptqLinearCodes c = unpack_gptq_linear(p, GptqCheckpointFormat::kGptq);
  CHECK((c.params.zero.array() == 16.0f).all());
  CHECK_THROWS_WITH_AS(pack_gptq_linear(c, GptqCheckpointFormat::kGptq), doctest::Contains("[1, 15]"),
                       std::domain_error);

  // No inputs (K = 0): nothing to pack, and nothing breaks.
  GptqLinearCodes empty = small_codes(8, 0, 1, 14);
  const GptqPackedLinear e = pack_gptq_linear(empty, GptqCheckpointFormat::kGptqV2);
  CHECK(e.qweight.rows() == 0);
  CHECK(e.qweight.cols() == 8);
  const GptqLinearCodes e_back = unpack_gptq_linear(e, GptqCheckpointFormat::kGptqV2);
  CHECK(e_back.codes.rows() == 8);
  CHECK(e_back.codes.cols() == 0);
  CHECK(e_back.params.zero == empty.params.zero);
}

TEST_CASE("safetensors: <prefix>.qweight/.qzeros/.scales/.g_idx as I32 and F16, read back unchanged") {
  const GptqPackedLinear p = pack_gptq_linear(small_codes(16, 32, 2, 21), GptqCheckpointFormat::kGptq);
  oq::io::SafetensorsWriter writer;
  add_gptq_linear(writer, "model.layers.0.mlp.down_proj", p);
  const auto file = oq::io::SafetensorsFile::from_bytes(writer.bytes());
  using oq::io::DType;
  CHECK(file.info("model.layers.0.mlp.down_proj.qweight").dtype == DType::kI32);
  CHECK(file.info("model.layers.0.mlp.down_proj.qweight").shape == std::vector<std::size_t>{4, 16});
  CHECK(file.info("model.layers.0.mlp.down_proj.qzeros").shape == std::vector<std::size_t>{2, 2});
  CHECK(file.info("model.layers.0.mlp.down_proj.scales").dtype == DType::kF16);
  CHECK(file.info("model.layers.0.mlp.down_proj.scales").shape == std::vector<std::size_t>{2, 16});
  CHECK(file.info("model.layers.0.mlp.down_proj.g_idx").shape == std::vector<std::size_t>{32});
  // The generic reader sees the same values (I32 exactly in double, F16 widened).
  CHECK(file.matrix<double>("model.layers.0.mlp.down_proj.qweight") == p.qweight.cast<double>());
  const GptqPackedLinear q = oq::io::read_gptq_linear(file, "model.layers.0.mlp.down_proj");
  CHECK(q.qweight == p.qweight);
  CHECK(q.qzeros == p.qzeros);
  CHECK(q.scales == p.scales);
  CHECK(q.g_idx == p.g_idx);

  CHECK_THROWS_WITH_AS(oq::io::read_gptq_linear(file, "model.layers.1.mlp.down_proj"),
                       doctest::Contains("not found"), std::invalid_argument);
  oq::io::SafetensorsWriter wrong;
  wrong.add("x.qweight", p.qweight.cast<float>(), DType::kF32);
  CHECK_THROWS_WITH_AS(oq::io::read_gptq_linear(oq::io::SafetensorsFile::from_bytes(wrong.bytes()), "x"),
                       doctest::Contains("must be I32 of rank 2, got F32"), oq::io::FormatError);
  // An empty tensor is valid safetensors whatever its other dimensions: a
  // forged 2⁴⁰ must not reach the shape arithmetic.
  oq::io::SafetensorsWriter forged_qweight;
  forged_qweight.add("x.qweight", DType::kI32, {std::size_t(1) << 40, 0}, std::span<const std::byte>());
  CHECK_THROWS_WITH_AS(oq::io::read_gptq_linear(oq::io::SafetensorsFile::from_bytes(forged_qweight.bytes()), "x"),
                       doctest::Contains("expected every dimension below 2^31"), oq::io::FormatError);
  oq::io::SafetensorsWriter scales_f32;
  scales_f32.add("x.qweight", DType::kI32, {4, 16}, std::as_bytes(std::span(p.qweight.data(), 64)));
  scales_f32.add("x.qzeros", DType::kI32, {2, 2}, std::as_bytes(std::span(p.qzeros.data(), 4)));
  scales_f32.add("x.scales", Eigen::MatrixXf::Ones(2, 16), DType::kF32);
  CHECK_THROWS_WITH_AS(oq::io::read_gptq_linear(oq::io::SafetensorsFile::from_bytes(scales_f32.bytes()), "x"),
                       doctest::Contains("'x.scales'"), oq::io::FormatError);

  const nlohmann::json config = oq::io::gptq_quantization_config(128, true, false, GptqCheckpointFormat::kGptq);
  CHECK(config == nlohmann::json{{"quant_method", "gptq"},
                                 {"bits", 4},
                                 {"group_size", 128},
                                 {"desc_act", true},
                                 {"sym", false},
                                 {"format", "gptq"},
                                 {"checkpoint_format", "gptq"}});
  // Both names of the stored-zero convention (GPTQModel's "format", vLLM's
  // "checkpoint_format"), equal: a loader reading one name only must not fall
  // back to its "gptq" default for a "gptq_v2" checkpoint.
  const nlohmann::json v2 = oq::io::gptq_quantization_config(-1, false, true, GptqCheckpointFormat::kGptqV2);
  CHECK(v2["checkpoint_format"] == "gptq_v2");
  CHECK(v2["format"] == "gptq_v2");
  CHECK(v2["group_size"] == -1);
  CHECK_THROWS_AS(oq::io::gptq_quantization_config(0, false, true, GptqCheckpointFormat::kGptq),
                  std::invalid_argument);
}

TEST_CASE("bad input names the entry and what was expected") {
  const GptqLinearCodes good = small_codes(16, 32, 2, 31);
  const auto pack_v1 = [](const GptqLinearCodes& c) { return pack_gptq_linear(c, GptqCheckpointFormat::kGptq); };
  const auto pack_v2 = [](const GptqLinearCodes& c) { return pack_gptq_linear(c, GptqCheckpointFormat::kGptqV2); };
  {
    GptqLinearCodes c = small_codes(16, 36, 2, 31);
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("multiples of 8"), std::invalid_argument);
    c = small_codes(12, 32, 2, 31);
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("multiples of 8"), std::invalid_argument);
  }
  {
    GptqLinearCodes c = good;
    c.codes(2, 5) = 16;
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("c.codes(2, 5) must be in [0, 15]"), std::domain_error);
    c.codes(2, 5) = -1;
    CHECK_THROWS_AS(pack_v1(c), std::domain_error);
  }
  {
    GptqLinearCodes c = good;
    c.params.zero(4, 1) = 0.0f;
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("c.params.zero(4, 1) must be an integer in [1, 15]"),
                         std::domain_error);
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("\"gptq_v2\" stores a zero of 0"), std::domain_error);
    CHECK_NOTHROW(pack_v2(c));
    c.params.zero(4, 1) = 16.0f;
    CHECK_THROWS_WITH_AS(pack_v2(c), doctest::Contains("[0, 15] for checkpoint_format \"gptq_v2\""),
                         std::domain_error);
    CHECK_THROWS_AS(pack_v1(c), std::domain_error);  // 16: where "gptq" readers disagree
    c.params.zero(4, 1) = -1.0f;  // a group entirely above 0 (oq does not clamp zeros)
    CHECK_THROWS_AS(pack_v2(c), std::domain_error);
    c.params.zero(4, 1) = 2.5f;
    CHECK_THROWS_AS(pack_v1(c), std::domain_error);
    c.params.zero(4, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(pack_v1(c), std::domain_error);
  }
  for (const float bad_scale : {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN(), 1e6f /* ∞ in binary16 */,
                                1e-9f /* 0 in binary16 */}) {
    CAPTURE(bad_scale);
    GptqLinearCodes c = good;
    c.params.scale(7, 0) = bad_scale;
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("c.params.scale(7, 0) must be positive, finite"),
                         std::domain_error);
  }
  {
    GptqLinearCodes c = good;
    c.group_index.pop_back();
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("must have 32 entries"), std::invalid_argument);
    c = good;
    c.group_index[9] = 2;
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("c.group_index[9] must be in [0, 2), got 2"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(oq::io::dequantize_gptq_linear(c), doctest::Contains("c.group_index[9]"),
                         std::invalid_argument);
    c = good;
    c.params.zero = Eigen::MatrixXf::Constant(16, 3, 4.0f);
    CHECK_THROWS_WITH_AS(pack_v1(c), doctest::Contains("must both be 16 x G"), std::invalid_argument);
  }
  {
    const GptqPackedLinear p = pack_v1(good);
    const auto unpack_v1 = [](const GptqPackedLinear& packed) {
      return unpack_gptq_linear(packed, GptqCheckpointFormat::kGptq);
    };
    GptqPackedLinear q = p;
    q.g_idx.resize(40, 0);
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("qweight must be [40/8, 16]"),
                         std::invalid_argument);
    q = p;
    q.qzeros.resize(2, 3);
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("qzeros must be [2, 16/8]"),
                         std::invalid_argument);
    q = p;
    q.g_idx[0] = -1;
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("g_idx[0]"),
                         std::invalid_argument);
    q = p;
    q.scales(1, 3) = 0x7C00;  // +∞
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("scales[1, 3] must be finite"),
                         std::domain_error);
    q = p;
    q.g_idx.resize(36, 0);  // K not a multiple of 8
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("qweight must be [36/8, 16]"), std::invalid_argument);
    q = p;
    q.scales.resize(0, 16);
    CHECK_THROWS_WITH_AS(unpack_v1(q), doctest::Contains("at least one group"),
                         std::invalid_argument);
  }
  {
    const Eigen::MatrixXd h = hessian_of_correlated(64, 16, 41);
    const Eigen::MatrixXf w = oq::test::gaussian<float>(8, 16, 42);
    const auto r8 = oq::quant::gptq_quantize(w, h, QuantSpec::per_channel(8, true));
    CHECK_THROWS_WITH_AS(oq::io::gptq_linear_codes(r8, QuantSpec::per_channel(8, true)),
                         doctest::Contains("spec.bits must be 4"), std::invalid_argument);
    const auto rt = oq::quant::gptq_quantize(w, h, QuantSpec::per_tensor(4, true));
    CHECK_THROWS_WITH_AS(oq::io::gptq_linear_codes(rt, QuantSpec::per_tensor(4, true)),
                         doctest::Contains("per-row (per output channel) or per-group, got per-tensor"),
                         std::invalid_argument);
    const auto r4 = oq::quant::gptq_quantize(w, h, QuantSpec::per_channel(4, true));
    CHECK_THROWS_WITH_AS(oq::io::gptq_linear_codes(r4, QuantSpec::per_group(4, true, 8)),
                         doctest::Contains("r.params must be 8 x 2"), std::invalid_argument);
  }
}
