// Tests of oq/cpu/quantize_per_token.hpp: codes, scales, zero points and code
// sums equal oq::quant (compute_params + quantize, then packing) bit for bit on
// the transformed row, which is computed here by plain loops in the
// documented order; the DuQuant path agrees with DuQuantTransform::apply
// within float rounding; bad input is refused.
#include <oq/cpu/quantize_per_token.hpp>
#include <oq/quant/pack.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_blockwise.hpp>
#include <oq/transform/hadamard.hpp>
#include <oq/transform/random_orthogonal.hpp>

#include <doctest/doctest.h>

#include "support/cpu_paths.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using oq::cpu::Isa;
using oq::cpu::PackedActivations;
using oq::cpu::TokenTransform;
using RowMatrix = oq::cpu::RowMajorMatrixXf;
using oq::quant::QuantSpec;

std::vector<Isa> available_paths() { return oq_test::available_cpu_paths(); }

RowMatrix random_tokens(Eigen::Index m, Eigen::Index k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RowMatrix x(m, k);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  if (m > 1) x.row(1).setZero();                     // all-zero token
  if (m > 2) x(2, k / 3) = 2500.0f;                  // massive activation
  if (m > 3) x.row(3).setConstant(-0.75f);           // constant token
  return x;
}

// The packed activations oq::quant gives for y (already transformed).
PackedActivations reference(const RowMatrix& y, const QuantSpec& spec) {
  const auto params = oq::quant::compute_params(y, spec);
  const auto codes = oq::quant::quantize(y, params, spec);
  PackedActivations a;
  a.m = y.rows();
  a.k = y.cols();
  a.bits = spec.bits;
  a.is_signed = spec.symmetric;
  if (spec.bits == 4) {
    const auto packed = oq::quant::pack_int4(codes, spec.symmetric ? oq::quant::Int4Kind::kSigned
                                                                   : oq::quant::Int4Kind::kUnsigned);
    a.codes.assign(packed.data(), packed.data() + packed.size());
  } else {
    for (Eigen::Index i = 0; i < codes.size(); ++i) a.codes.push_back(static_cast<std::uint8_t>(codes.data()[i] & 0xFF));
  }
  for (Eigen::Index r = 0; r < y.rows(); ++r) {
    a.scales.push_back(params.scale(r, 0));
    a.zeros.push_back(static_cast<std::int32_t>(params.zero(r, 0)));
    a.code_sums.push_back(codes.row(r).sum());
  }
  return a;
}

void require_same(const PackedActivations& got, const PackedActivations& want) {
  REQUIRE(got.m == want.m);
  REQUIRE(got.k == want.k);
  REQUIRE(got.bits == want.bits);
  REQUIRE(got.is_signed == want.is_signed);
  REQUIRE(got.codes == want.codes);
  for (std::size_t i = 0; i < want.scales.size(); ++i) {
    CAPTURE(i);
    std::uint32_t a, b;
    std::memcpy(&a, &got.scales[i], 4);
    std::memcpy(&b, &want.scales[i], 4);
    REQUIRE(a == b);
  }
  REQUIRE(got.zeros == want.zeros);
  REQUIRE(got.code_sums == want.code_sums);
}

// y = x·diag(R, …, R) by the documented FMA chain, plain loops.
RowMatrix rotate_ref(const RowMatrix& x, const Eigen::MatrixXf& r) {
  const Eigen::Index b = r.rows();
  RowMatrix y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index s = 0; s < x.cols(); s += b)
      for (Eigen::Index j = 0; j < b; ++j) {
        float acc = 0.0f;
        for (Eigen::Index t = 0; t < b; ++t) acc = std::fma(x(i, s + t), r(t, j), acc);
        y(i, s + j) = acc;
      }
  return y;
}

// The bound the kernels' quantize takes: max |y[j]|.
float abs_max(const std::vector<float>& y) {
  float m = 0.0f;
  for (const float v : y) m = std::max(m, std::abs(v));
  return m;
}

QuantSpec with_flags(QuantSpec s, bool includes_zero, bool full_range) {
  s.range_includes_zero = includes_zero;
  s.symmetric_full_range = full_range;
  return s;
}

const QuantSpec kSpecs[] = {QuantSpec::per_token(4, false, 0.9),
                            QuantSpec::per_token(4, true),
                            QuantSpec::per_token(8, false),
                            QuantSpec::per_token(8, true, 0.95),
                            with_flags(QuantSpec::per_token(4, false), true, false),   // GPTQ's widened range
                            with_flags(QuantSpec::per_token(8, true), false, true)};  // full symmetric range

// x quantized with transform t on every available path, for every spec of
// kSpecs, equals reference(y) bit for bit (y: t applied to x in float64).
void require_every_path(const RowMatrix& x, const RowMatrix& y, const TokenTransform& t, int threads) {
  for (const QuantSpec& spec : kSpecs) {
    const PackedActivations want = reference(y, spec);
    for (Isa isa : available_paths()) {
      CAPTURE(spec.bits);
      CAPTURE(oq::cpu::to_string(isa));
      require_same(oq::cpu::quantize_per_token(x, spec, t, {threads, isa}), want);
    }
  }
}

}  // namespace

TEST_CASE("golden bytes: the token {0, 1, 2, 3}, 4-bit asymmetric") {
  RowMatrix x(1, 4);
  x << 0.0f, 1.0f, 2.0f, 3.0f;
  for (Isa isa : available_paths()) {
    const PackedActivations a = oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false), {}, {1, isa});
    CHECK(a.codes == std::vector<std::uint8_t>{0x50, 0xFA});
    CHECK(a.scales[0] == 0.2f);
    CHECK(a.zeros[0] == 0);
    CHECK(a.code_sums[0] == 30);
  }
}

TEST_CASE("no transform: every path equals oq::quant bit for bit (ragged widths, extreme rows)") {
  for (Eigen::Index k : {2, 6, 30, 34, 130, 4098}) {
    const RowMatrix x = random_tokens(7, k, static_cast<std::uint32_t>(k));
    for (const QuantSpec& spec : kSpecs) {
      const PackedActivations want = reference(x, spec);
      for (Isa isa : available_paths()) {
        CAPTURE(k);
        CAPTURE(spec.bits);
        CAPTURE(spec.symmetric);
        CAPTURE(oq::cpu::to_string(isa));
        require_same(oq::cpu::quantize_per_token(x, spec, {}, {2, isa}), want);
      }
    }
  }
}

TEST_CASE("block Hadamard: equals oq::quant on transform::block_hadamard_rows bit for bit") {
  for (Eigen::Index b : {2, 8, 16, 32, 128, 256, 512}) {
    for (Eigen::Index k : {b * 3, b * 8}) {
      const RowMatrix x = random_tokens(5, k, static_cast<std::uint32_t>(b + k));
      RowMatrix y = x;
      oq::transform::block_hadamard_rows(y, b);
      const TokenTransform h = TokenTransform::hadamard(b);
      for (const QuantSpec& spec : kSpecs) {
        const PackedActivations want = reference(y, spec);
        for (Isa isa : available_paths()) {
          CAPTURE(b);
          CAPTURE(k);
          CAPTURE(spec.bits);
          CAPTURE(oq::cpu::to_string(isa));
          require_same(oq::cpu::quantize_per_token(x, spec, h, {1, isa}), want);
        }
      }
    }
  }
}

TEST_CASE("block Hadamard 128, many rows on two threads: every path bit for bit, extreme rows included") {
  // 37 rows (not a multiple of the row grain of 16) split over two threads;
  // K = 128, 384, 1152: 1, 3 and 9 of the AVX-512 quantizer's 128-code
  // chunks (2, 6, 18 of AVX2's 64). Widths with a tail shorter than a chunk
  // are the no-transform test's (K = 130, 4098).
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Eigen::Index k : {128, 384, 1152}) {
    RowMatrix x = random_tokens(37, k, static_cast<std::uint32_t>(k));
    x(4, k - 1) = 1.0e35f;                              // a huge outlier (its block sums stay finite)
    x.row(5).setConstant(1.0e-30f);                      // tiny values: scales near the normal limit
    for (Eigen::Index j = 0; j < k; ++j) x(6, j) = 1.0e6f + normal(rng);  // an offset: one huge output per block
    x.row(7).setZero();
    x(7, 0) = -3.0f;                                     // one nonzero entry: a constant block after H
    RowMatrix y = x;
    oq::transform::block_hadamard_rows(y, 128);
    const TokenTransform h = TokenTransform::hadamard(128);
    for (const QuantSpec& spec : kSpecs) {
      const PackedActivations want = reference(y, spec);
      for (Isa isa : available_paths()) {
        CAPTURE(k);
        CAPTURE(spec.bits);
        CAPTURE(spec.symmetric);
        CAPTURE(oq::cpu::to_string(isa));
        require_same(oq::cpu::quantize_per_token(x, spec, h, {2, isa}), want);
      }
    }
  }
}

TEST_CASE("block Hadamard: NaN, Inf and a transform that overflows are refused on every path") {
  const float big = std::numeric_limits<float>::max();
  for (Isa isa : available_paths()) {
    CAPTURE(oq::cpu::to_string(isa));
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()}) {
      for (Eigen::Index j : {0, 77, 255}) {
        RowMatrix x = random_tokens(3, 256, 8);
        x(1, j) = bad;
        CAPTURE(j);
        const std::string where = "x(1, " + std::to_string(j) + ") is";  // the input's entry, not the transform's
        CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false), TokenTransform::hadamard(128),
                                                         {1, isa}),
                             doctest::Contains(where.c_str()), std::domain_error);
      }
    }
    // Finite input whose transform overflows to ±Inf ...
    RowMatrix inf_out = RowMatrix::Constant(2, 128, big);
    CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(inf_out, QuantSpec::per_token(4, false),
                                                     TokenTransform::hadamard(128), {1, isa}),
                         doctest::Contains("the transformed x"), std::domain_error);
    // ... and one whose every Inf is consumed by Inf − Inf, leaving NaN and
    // zeros only (min/max alone would see [0, 0]): (M, M, M, M, M, M, −M, −M)
    // gives (Inf, 0, Inf, 0, Inf, 0, −Inf, 0), then (Inf, 0, NaN, 0, NaN, 0,
    // Inf, 0), then (NaN, 0, NaN, 0, NaN, 0, NaN, 0).
    RowMatrix nan_out = RowMatrix::Zero(1, 16);
    for (Eigen::Index j = 0; j < 8; ++j) nan_out(0, j) = j < 6 ? big : -big;
    // (transform::block_hadamard_rows refuses such a row: the butterflies by hand.)
    RowMatrix want = nan_out;
    oq::cpu::kernel::scalar::hadamard_blocks(want.data(), 16, 8, 1.0f);
    REQUIRE(std::isnan(want(0, 0)));
    for (Eigen::Index j = 0; j < 16; ++j) REQUIRE((std::isnan(want(0, j)) || want(0, j) == 0.0f));  // no Inf left
    CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(nan_out, QuantSpec::per_token(8, false),
                                                     TokenTransform::hadamard(8), {1, isa}),
                         doctest::Contains("the transformed x(0, 0) is"), std::domain_error);
    RowMatrix nan_out128 = RowMatrix::Zero(1, 128);
    for (Eigen::Index j = 0; j < 8; ++j) nan_out128(0, 16 * j) = j < 6 ? big : -big;  // the same at h = 16, 32, 64
    RowMatrix want128 = nan_out128;
    oq::cpu::kernel::scalar::hadamard_blocks(want128.data(), 128, 128, 1.0f);
    REQUIRE(std::isnan(want128(0, 0)));
    for (Eigen::Index j = 0; j < 128; ++j) REQUIRE((std::isnan(want128(0, j)) || want128(0, j) == 0.0f));
    CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(nan_out128, QuantSpec::per_token(4, true),
                                                     TokenTransform::hadamard(128), {1, isa}),
                         doctest::Contains("the transformed x(0, 0) is"), std::domain_error);
  }
}

TEST_CASE("block rotation: the FMA chain of the CUDA kernel, then oq::quant, bit for bit") {
  std::mt19937_64 gen(42);
  for (Eigen::Index b : {3, 16, 20, 128, 136}) {  // widths that are and are not whole vectors
    const Eigen::MatrixXf r = oq::transform::random_orthogonal<float>(b, gen);
    const RowMatrix x = random_tokens(6, 5 * b, static_cast<std::uint32_t>(b));  // a group of four blocks and one more
    const RowMatrix y = rotate_ref(x, r);
    const TokenTransform t = TokenTransform::block_rotation(r);
    for (const QuantSpec& spec : kSpecs) {
      if (spec.bits == 4 && x.cols() % 2 != 0) continue;
      const PackedActivations want = reference(y, spec);
      for (Isa isa : available_paths()) {
        CAPTURE(b);
        CAPTURE(spec.bits);
        CAPTURE(oq::cpu::to_string(isa));
        require_same(oq::cpu::quantize_per_token(x, spec, t, {1, isa}), want);
      }
    }
  }
}

namespace {

// DuQuant's documented order by plain loops: x / s, rotate(·, 0), the
// permutation (perm[j]: the old channel at j), rotate(·, 1).
template <class Permutation, class Rotate>
RowMatrix duquant_order_ref(const RowMatrix& x, const Eigen::VectorXf& s, const Permutation& perm, Rotate rotate) {
  const Eigen::Index k = x.cols();
  RowMatrix y(x.rows(), k);
  for (Eigen::Index i = 0; i < y.rows(); ++i)
    for (Eigen::Index j = 0; j < k; ++j) y(i, j) = x(i, j) / s[j];
  y = rotate(y, 0);
  RowMatrix permuted(y.rows(), k);
  for (Eigen::Index j = 0; j < k; ++j) permuted.col(j) = y.col(perm[static_cast<std::size_t>(j)]);
  return rotate(permuted, 1);
}

// Against Eigen's blocked products in a transform's apply(): each rotation's
// entries differ by at most b·u·‖block of its input‖₁ (two summation orders
// of the same b products, γ_b each); two rotations, and the permutation is
// exact. ‖block‖₁ ≤ √b·‖row‖₂, and rotations keep ‖row‖₂.
void check_within_apply_rounding(const RowMatrix& x, const Eigen::VectorXf& s, Eigen::Index b, const RowMatrix& applied,
                                 const RowMatrix& y) {
  const double u = std::ldexp(1.0, -24);
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double norm = (x.row(i).array() / s.transpose().array()).matrix().norm();
    const double bound = 2.0 * 2.0 * static_cast<double>(b) * u * std::sqrt(static_cast<double>(b)) * norm * 1.01;
    CHECK((applied.row(i) - y.row(i)).cwiseAbs().maxCoeff() <= bound);
  }
}

}  // namespace

TEST_CASE("DuQuant: smoothing, R1, zigzag, R2 in order, bit for bit; and within float rounding of apply()") {
  const Eigen::Index k = 256, b = 64;
  RowMatrix x = random_tokens(24, k, 99);
  x.col(7) *= 40.0f;  // a channel-wise outlier
  std::mt19937_64 gen(1);
  oq::transform::DuQuantOptions options;
  options.block_size = b;
  options.greedy_steps = 16;
  Eigen::VectorXf smoothing = Eigen::VectorXf::LinSpaced(k, 0.5f, 3.0f);
  const auto t = oq::transform::calibrate_duquant(Eigen::MatrixXf(x), options, gen, smoothing);
  REQUIRE(t.permutations().size() == 1);

  const RowMatrix y = duquant_order_ref(x, smoothing, t.permutations()[0],
                                        [&](const RowMatrix& in, int stage) { return rotate_ref(in, t.rotations()[stage]); });

  const TokenTransform fused = TokenTransform::duquant(t);
  CHECK(fused.channels() == k);
  CHECK(fused.block_size() == b);
  require_every_path(x, y, fused, 2);
  check_within_apply_rounding(x, smoothing, b, t.apply(x), y);
}

namespace {

// y = x·diag(R_0, …, R_{K−1}), block c by its own r[c], the FMA chain of rotate_ref.
RowMatrix rotate_each_ref(const RowMatrix& x, const std::vector<Eigen::MatrixXf>& r) {
  const Eigen::Index b = r.front().rows();
  RowMatrix y(x.rows(), x.cols());
  for (std::size_t c = 0; c < r.size(); ++c) {
    const auto first = static_cast<Eigen::Index>(c) * b;
    y.middleCols(first, b) = rotate_ref(x.middleCols(first, b), r[c]);
  }
  return y;
}

}  // namespace

TEST_CASE("DuQuant with one rotation per block: each block by its own R in order, bit for bit; the shared form's codes where the blocks agree") {
  // 5 blocks: the SIMD paths take one block at a time here, never four.
  const Eigen::Index k = 320, b = 64;
  RowMatrix x = random_tokens(24, k, 7);
  x.col(9) *= 40.0f;     // channel-wise outliers in two blocks
  x.col(200) *= -25.0f;
  std::mt19937_64 gen(5);
  oq::transform::DuQuantOptions options;
  options.block_size = b;
  options.greedy_steps = 8;
  const Eigen::VectorXf smoothing = Eigen::VectorXf::LinSpaced(k, 0.5f, 3.0f);
  const auto t = oq::transform::calibrate_duquant_blockwise(Eigen::MatrixXf(x), options, gen, smoothing);
  REQUIRE(t.blocks() == 5);
  REQUIRE(t.permutations().size() == 1);
  REQUIRE((t.rotations()[0][0] - t.rotations()[0][1]).cwiseAbs().maxCoeff() > 1e-3f);  // really per block

  const RowMatrix y = duquant_order_ref(
      x, smoothing, t.permutations()[0],
      [&](const RowMatrix& in, int stage) { return rotate_each_ref(in, t.rotations()[static_cast<std::size_t>(stage)]); });

  const TokenTransform fused = TokenTransform::duquant_blockwise(t);
  CHECK(fused.channels() == k);
  CHECK(fused.block_size() == b);
  CHECK(fused.rotations_per_stage() == 5);
  require_every_path(x, y, fused, 2);
  check_within_apply_rounding(x, smoothing, b, t.apply(x), y);

  // Every block holding the shared transform's R: duquant()'s bits, whose
  // SIMD paths rotate four blocks at a time.
  const auto shared = oq::transform::calibrate_duquant(Eigen::MatrixXf(x), options, gen, smoothing);
  std::vector<std::vector<Eigen::MatrixXf>> copies;
  for (const auto& r : shared.rotations()) copies.emplace_back(5, r);
  const oq::transform::DuQuantBlockwiseTransform<float> same(k, copies, shared.permutations(), smoothing);
  for (const QuantSpec& spec : kSpecs) {
    for (Isa isa : available_paths()) {
      CAPTURE(spec.bits);
      CAPTURE(oq::cpu::to_string(isa));
      require_same(oq::cpu::quantize_per_token(x, spec, TokenTransform::duquant_blockwise(same), {2, isa}),
                   oq::cpu::quantize_per_token(x, spec, TokenTransform::duquant(shared), {2, isa}));
    }
  }
  // Built for 320 channels: another width is refused, naming the count.
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(RowMatrix(x.leftCols(256)), kSpecs[0], fused),
                       doctest::Contains("x.cols() must be 320"), std::invalid_argument);
}

namespace {

// x / s (s empty: x), by plain loops.
RowMatrix divided(const RowMatrix& x, const Eigen::VectorXf& s) {
  RowMatrix y = x;
  if (s.size() == 0) return y;
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index j = 0; j < x.cols(); ++j) y(i, j) = x(i, j) / s[j];
  return y;
}

// The documented order of full_hadamard for n = K·2^m, by plain loops: the
// butterflies (u, v) ↦ (u + v, u − v) at h = 1, 2, … on each 2^m-segment,
// unscaled; then out segment c = +0 ± segment 0 ± … ± segment K − 1 in that
// order (signs H_K(a, c) from hadamard_matrix(K)); then × float(1/√n).
// *z receives the butterflies' output (for the bound against hadamard_rows).
RowMatrix full_hadamard_ref(const RowMatrix& x, RowMatrix* z) {
  const Eigen::Index n = x.cols();
  const auto c = oq::transform::hadamard_construction(n);
  const Eigen::Index k = c.base, p = c.sylvester_size();
  RowMatrix b = x;
  for (Eigen::Index i = 0; i < b.rows(); ++i)
    for (Eigen::Index s = 0; s < n; s += p)
      for (Eigen::Index h = 1; h < p; h *= 2)
        for (Eigen::Index t = s; t < s + p; t += 2 * h)
          for (Eigen::Index j = t; j < t + h; ++j) {
            const float u = b(i, j), v = b(i, j + h);
            b(i, j) = u + v;
            b(i, j + h) = u - v;
          }
  if (z != nullptr) *z = b;
  const Eigen::MatrixXi hk = oq::transform::hadamard_matrix(k);
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  RowMatrix y(x.rows(), n);
  for (Eigen::Index i = 0; i < b.rows(); ++i)
    for (Eigen::Index cc = 0; cc < k; ++cc)
      for (Eigen::Index d = 0; d < p; ++d) {
        float acc = 0.0f;
        for (Eigen::Index a = 0; a < k; ++a) acc = hk(a, cc) > 0 ? acc + b(i, a * p + d) : acc - b(i, a * p + d);
        y(i, cc * p + d) = k == 1 ? b(i, d + cc * p) * scale : acc * scale;
      }
  return y;
}

// QuaRot's divisors γ ⊙ d: a norm weight with both signs and a wide range,
// times seeded ±1.
Eigen::VectorXf quarot_divisors(Eigen::Index n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> gamma(0.05f, 3.0f);
  Eigen::VectorXf s(n);
  for (Eigen::Index j = 0; j < n; ++j) s[j] = gamma(rng) * ((rng() >> 31) != 0 ? -1.0f : 1.0f);
  return s;
}

}  // namespace

TEST_CASE("full-width Hadamard of a power of two: transform::hadamard_rows after the division, bit for bit") {
  for (Eigen::Index n : {2, 64, 256, 4096}) {
    const RowMatrix x = random_tokens(6, n, static_cast<std::uint32_t>(n) + 5);
    for (const bool divide : {false, true}) {
      const Eigen::VectorXf s = divide ? quarot_divisors(n, 3) : Eigen::VectorXf();
      RowMatrix y = divided(x, s);
      oq::transform::hadamard_rows(y);
      const TokenTransform t = divide ? TokenTransform::full_hadamard(s) : TokenTransform::full_hadamard(n);
      CHECK(t.kind() == TokenTransform::Kind::kFullHadamard);
      CHECK(t.channels() == n);
      CHECK(t.hadamard_base() == 1);
      // The documented order is the same computation.
      CHECK(full_hadamard_ref(divided(x, s), nullptr) == y);
      for (const QuantSpec& spec : kSpecs) {
        const PackedActivations want = reference(y, spec);
        for (Isa isa : available_paths()) {
          CAPTURE(n);
          CAPTURE(divide);
          CAPTURE(spec.bits);
          CAPTURE(oq::cpu::to_string(isa));
          require_same(oq::cpu::quantize_per_token(x, spec, t, {2, isa}), want);
        }
      }
    }
  }
}

TEST_CASE("full-width Hadamard K·2^m: the documented order bit for bit, within float rounding of hadamard_rows") {
  // 12 = 12·1 (Paley I), 52 (Paley II over GF(25), 2^m = 1), 200 = 100·2,
  // 688 = 344·2, 11008 = 344·32 (LLaMA-2-7B's down_proj input).
  for (Eigen::Index n : {12, 52, 200, 688, 11008}) {
    const RowMatrix x = random_tokens(n > 1000 ? 4 : 7, n, static_cast<std::uint32_t>(n));
    for (const bool divide : {false, true}) {
      CAPTURE(n);
      CAPTURE(divide);
      const Eigen::VectorXf s = divide ? quarot_divisors(n, 9) : Eigen::VectorXf();
      RowMatrix z;
      const RowMatrix y = full_hadamard_ref(divided(x, s), &z);
      const TokenTransform t = divide ? TokenTransform::full_hadamard(s) : TokenTransform::full_hadamard(n);
      const auto c = oq::transform::hadamard_construction(n);
      CHECK(t.hadamard_base() == c.base);
      CHECK(t.hadamard_power_of_two() == c.sylvester_size());
      for (const QuantSpec& spec : kSpecs) {
        const PackedActivations want = reference(y, spec);
        for (Isa isa : available_paths()) {
          CAPTURE(spec.bits);
          CAPTURE(oq::cpu::to_string(isa));
          require_same(oq::cpu::quantize_per_token(x, spec, t, {2, isa}), want);
        }
      }
      // Against hadamard_rows (Eigen's GEMM sums the K segments in another
      // order): the butterflies are the same operations; two orders of the
      // same K exact terms ±z_a differ by at most 2·γ_(K−1)·Σ_a |z_a|, and the
      // two products by the scale add a rounding each (u·|y| each).
      RowMatrix eigen = divided(x, s);
      oq::transform::hadamard_rows(eigen);
      const double u = std::ldexp(1.0, -24), scale = 1.0 / std::sqrt(static_cast<double>(n));
      const double gamma = (c.base - 1) * u / (1 - (c.base - 1) * u);
      const Eigen::Index p = c.sylvester_size();
      bool within = true;
      for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (Eigen::Index d = 0; d < p; ++d) {
          double sum_abs = 0.0;
          for (Eigen::Index a = 0; a < c.base; ++a) sum_abs += std::abs(static_cast<double>(z(i, a * p + d)));
          for (Eigen::Index cc = 0; cc < c.base; ++cc) {
            const double y1 = y(i, cc * p + d), y2 = eigen(i, cc * p + d);
            within = within && std::abs(y1 - y2) <= 2 * gamma * sum_abs * scale * (1 + u) + u * (std::abs(y1) + std::abs(y2));
          }
        }
      CHECK(within);
    }
  }
}

TEST_CASE("full-width Hadamard K·2^m: huge outliers, NaN, Inf and overflow as documented (n = 12·64, 11008)") {
  // The kHadamard tests' cases for K > 1, where the K segments are mixed by
  // plain ± sums after the butterflies: 768 = 12·64 (Paley I, q = 11) and
  // 11008 = 344·32 (Paley I over GF(7³)).
  const float big = std::numeric_limits<float>::max();
  for (Eigen::Index n : {768, 11008}) {
    CAPTURE(n);
    const auto c = oq::transform::hadamard_construction(n);
    REQUIRE(c.base > 1);
    const TokenTransform t = TokenTransform::full_hadamard(n);
    // Huge finite input whose unscaled sums stay finite is quantized as the
    // documented order gives it, bit for bit: FLT_MAX alone in its row (every
    // sum adds it to values ~1e38 times smaller), −1e30 beside ordinary
    // values, and a row of FLT_MAX/(2n) everywhere (|any partial sum| ≤
    // n·FLT_MAX/(2n)).
    RowMatrix x = random_tokens(6, n, static_cast<std::uint32_t>(n) + 1);
    x(2, n / 3) = big;
    x(4, n - 1) = -1.0e30f;
    x.row(5).setConstant(big / static_cast<float>(2 * n));
    const RowMatrix y = full_hadamard_ref(x, nullptr);
    REQUIRE(y.allFinite());
    require_every_path(x, y, t, 2);
    for (Isa isa : available_paths()) {
      CAPTURE(oq::cpu::to_string(isa));
      // NaN and ±Inf in x: std::domain_error naming x's entry, not the transform's.
      for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()}) {
        for (Eigen::Index j : {Eigen::Index{0}, n / 2 + 1, n - 1}) {
          RowMatrix xb = random_tokens(3, n, 8);
          xb(1, j) = bad;
          CAPTURE(j);
          const std::string where = "x(1, " + std::to_string(j) + ") is";
          CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(xb, QuantSpec::per_token(4, false), t, {1, isa}),
                               doctest::Contains(where.c_str()), std::domain_error);
        }
      }
      // Finite input whose butterflies overflow (FLT_MAX everywhere) ...
      const RowMatrix all_big = RowMatrix::Constant(2, n, big);
      CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(all_big, QuantSpec::per_token(8, false), t, {1, isa}),
                           doctest::Contains("the transformed x(0, "), std::domain_error);
      // ... and finite input whose butterflies stay finite but whose K-mix
      // overflows: V = FLT_MAX/4 first in every segment makes every segment
      // V after the butterflies; output segment 0 sums them with the signs
      // of H_K's column 0, (+1, −1, …, −1) for Paley I, so its running sum
      // passes −4V = −FLT_MAX and is −Inf at −5V (K ≥ 7 here). The header's
      // documented order has no rescaling (transform::hadamard_rows, which
      // rescales, would return |y| ≤ √K·V here): std::domain_error naming the
      // transformed entry.
      RowMatrix mix = RowMatrix::Zero(1, n);
      for (Eigen::Index a = 0; a < c.base; ++a) mix(0, a * c.sylvester_size()) = big / 4;
      const RowMatrix want = full_hadamard_ref(mix, nullptr);
      REQUIRE(want(0, 0) == -std::numeric_limits<float>::infinity());
      CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(mix, QuantSpec::per_token(4, true), t, {1, isa}),
                           doctest::Contains("the transformed x(0, 0) is -inf"), std::domain_error);
    }
  }
}

TEST_CASE("full-width Hadamard: bad arguments are refused, naming them") {
  CHECK_THROWS_WITH_AS(TokenTransform::full_hadamard(92),
                       doctest::Contains("oq::cpu::TokenTransform::full_hadamard: n must be a size with a Hadamard "
                                         "construction"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(TokenTransform::full_hadamard(0), doctest::Contains("n must be positive, got 0"),
                       std::invalid_argument);
  Eigen::VectorXf s = quarot_divisors(64, 1);
  s[3] = 0.0f;
  CHECK_THROWS_WITH_AS(TokenTransform::full_hadamard(s), doctest::Contains("s(3) = 0 must be nonzero and finite"),
                       std::invalid_argument);
  s[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(TokenTransform::full_hadamard(s), doctest::Contains("s(3) = inf"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(TokenTransform::full_hadamard(Eigen::VectorXf(0)), doctest::Contains("s must be a non-empty vector"),
                       std::invalid_argument);
  // A width other than n, a multiple of it or not: the message names the
  // parameter (x.cols()), the value it must have and the one it has.
  const TokenTransform t = TokenTransform::full_hadamard(64);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(random_tokens(2, 128, 1), kSpecs[0], t),
                       doctest::Contains("oq::cpu::quantize_per_token: x.cols() must be 64, the channel count the "
                                         "transform (full_hadamard) was built for, got 128"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(random_tokens(2, 32, 1), kSpecs[0], t),
                       doctest::Contains("x.cols() must be 64, the channel count the transform (full_hadamard) was "
                                         "built for, got 32"),
                       std::invalid_argument);
  PackedActivations buffer;
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(random_tokens(2, 11008, 1), kSpecs[0], buffer,
                                                        TokenTransform::full_hadamard(688)),
                       doctest::Contains("oq::cpu::quantize_per_token_into: x.cols() must be 688, the channel count "
                                         "the transform (full_hadamard) was built for, got 11008"),
                       std::invalid_argument);
  // A NaN in x is named as x's entry.
  RowMatrix x = random_tokens(2, 12, 1);
  x(1, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(oq::cpu::quantize_per_token(x, kSpecs[0], TokenTransform::full_hadamard(12)), std::domain_error);
}

TEST_CASE("smoothing alone: x / s per channel, then oq::quant, bit for bit") {
  const RowMatrix x = random_tokens(5, 48, 4);
  const Eigen::VectorXf s = Eigen::VectorXf::LinSpaced(48, 0.25f, 7.0f);
  RowMatrix y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index j = 0; j < x.cols(); ++j) y(i, j) = x(i, j) / s[j];
  const TokenTransform t = TokenTransform::smoothing(s);
  CHECK(t.channels() == 48);
  for (const QuantSpec& spec : kSpecs) {
    const PackedActivations want = reference(y, spec);
    for (Isa isa : available_paths()) {
      CAPTURE(oq::cpu::to_string(isa));
      require_same(oq::cpu::quantize_per_token(x, spec, t, {1, isa}), want);
    }
  }
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(random_tokens(2, 50, 1), kSpecs[0], t),
                       doctest::Contains("x.cols() must be 48, the channel count the transform (smoothing or duquant) "
                                         "was built for, got 50"),
                       std::invalid_argument);
  Eigen::VectorXf bad = s;
  bad[3] = 0.0f;
  CHECK_THROWS_WITH_AS(TokenTransform::smoothing(bad), doctest::Contains("s(3) = 0"), std::invalid_argument);
}

TEST_CASE("bad input is refused with a message naming it") {
  const RowMatrix x = random_tokens(3, 64, 1);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_tensor(4, false)),
                       doctest::Contains("spec.granularity must be per-row (per token), got per-tensor"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_group(4, false, 32)),
                       doctest::Contains("spec.granularity must be per-row (per token), got per-group"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_token(3, false)),
                       doctest::Contains("spec.bits must be 4 or 8"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false, 1.5)),
                       doctest::Contains("spec.clip_ratio"), std::invalid_argument);
  const RowMatrix odd = random_tokens(2, 7, 2);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(odd, QuantSpec::per_token(4, false)),
                       doctest::Contains("must be even"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_token(8, false), TokenTransform::hadamard(128)),
                       doctest::Contains("must divide x.cols() = 64"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(TokenTransform::hadamard(12), doctest::Contains("power of two"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_token(8, false), {}, {1, static_cast<Isa>(99)}),
                       doctest::Contains("options.isa"), std::invalid_argument);

  RowMatrix bad = x;
  bad(2, 5) = std::numeric_limits<float>::quiet_NaN();
  for (Isa isa : available_paths())
    CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(bad, QuantSpec::per_token(4, false), {}, {1, isa}),
                         doctest::Contains("x(2, 5) is nan"), std::domain_error);
  bad(2, 5) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(bad, QuantSpec::per_token(8, true)), doctest::Contains("x(2, 5)"),
                       std::domain_error);
  // Finite input whose Hadamard transform overflows float: FLT_MAX in every
  // channel of a block sums past it.
  RowMatrix huge = RowMatrix::Constant(1, 16, std::numeric_limits<float>::max());
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(huge, QuantSpec::per_token(8, true), TokenTransform::hadamard(16)),
                       doctest::Contains("the transformed x"), std::domain_error);
  // An 8-bit row whose range is tiny against its offset: zero point beyond int32.
  RowMatrix narrow(1, 4);
  narrow << 1.0e9f, 1.0e9f + 64.0f, 1.0e9f, 1.0e9f;
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(narrow, QuantSpec::per_token(8, false)),
                       doctest::Contains("beyond int32"), std::domain_error);
}

TEST_CASE("no tokens: an empty result") {
  const RowMatrix x(0, 8);
  const PackedActivations a = oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false));
  CHECK(a.m == 0);
  CHECK(a.codes.empty());
  a.validate("test");
}

TEST_CASE("vector codes near every rounding boundary equal the scalar division's (the multiply-and-check path)") {
  // The vector path replaces y / s by y·(1/s) except near half-integers;
  // here every value sits on or a few ulps from a boundary (k + ½)·s, at
  // scales whose reciprocal is inexact, tiny and huge, with zero points from
  // 0 to beyond the code range.
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> exponent(-30.0f, 30.0f);
  std::vector<float> scales = {0.1f, 1.0f / 3.0f, 3.0f / 7.0f, 1e-30f, 7e30f, 0.2f, 1.0f};
  for (int i = 0; i < 40; ++i) scales.push_back(std::exp2(exponent(rng)));
  std::int64_t checked = 0;
  for (const float s : scales) {
    for (const float z : {0.0f, 7.0f, -200.0f, 3e6f}) {
      std::vector<float> y;
      for (int k = -300; k <= 300; ++k) {
        float v = (static_cast<float>(k) + 0.5f) * s;
        for (int step = 0; step < 3; ++step) v = std::nextafter(v, -std::numeric_limits<float>::infinity());
        for (int step = 0; step < 7; ++step) {
          y.push_back(v);
          v = std::nextafter(v, std::numeric_limits<float>::infinity());
        }
        y.push_back(static_cast<float>(k) * s);
      }
      y.resize(y.size() / 32 * 32);
      for (const bool is_signed : {false, true}) {
        for (const int bits : {4, 8}) {
          const oq::core::CodeRange range = oq::core::code_range(bits, is_signed);
          const oq::core::AffineParams<float> p{s, is_signed ? 0.0f : z};
          std::vector<std::uint8_t> want(y.size()), got(y.size());
          const auto n = static_cast<std::int64_t>(y.size());
          const std::int64_t sum_want = oq::cpu::kernel::scalar::quantize(y.data(), n, p, range, bits, want.data());
          for (Isa isa : available_paths()) {
            const std::int64_t sum_got =
                oq::cpu::kernel::token_row_kernels(isa).quantize(y.data(), n, p, range, bits, got.data(), abs_max(y));
            CAPTURE(s);
            CAPTURE(z);
            CAPTURE(bits);
            CAPTURE(oq::cpu::to_string(isa));
            REQUIRE(got == want);
            REQUIRE(sum_got == sum_want);
            checked += n;
          }
        }
      }
    }
  }
  CHECK(checked > 1000000);
}

TEST_CASE("vector codes of large quotients, with zero points that keep them unclamped, equal the scalar division's") {
  // |y/s| from 2^10 to 2^22 with z ≈ −y/s: the codes land inside the range,
  // so a quotient off by one ulp (the multiply path without its guard) would
  // show as a different code.
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> unit(0.5f, 1.0f);
  std::int64_t checked = 0;
  for (int e = 10; e <= 22; e += 2) {
    const float s = unit(rng) * 1e-3f;
    const float base = std::ldexp(1.0f, e);
    std::vector<float> y;
    for (int k = 0; k < 64; ++k) {
      float v = (base + static_cast<float>(k) + 0.5f) * s;
      for (int step = 0; step < 2; ++step) v = std::nextafter(v, 0.0f);
      for (int step = 0; step < 4; ++step) {
        y.push_back(v);
        v = std::nextafter(v, std::numeric_limits<float>::infinity());
      }
    }
    const oq::core::AffineParams<float> p{s, -(base + 32.0f) + 128.0f};
    const oq::core::CodeRange range = oq::core::code_range(8, false);
    const auto n = static_cast<std::int64_t>(y.size());
    std::vector<std::uint8_t> want(y.size()), got(y.size());
    const std::int64_t sum_want = oq::cpu::kernel::scalar::quantize(y.data(), n, p, range, 8, want.data());
    int inside = 0;
    for (const std::uint8_t q : want) inside += q > 0 && q < 255;
    CHECK(inside > n / 2);  // the test means something only if most codes are unclamped
    for (Isa isa : available_paths()) {
      CAPTURE(e);
      CAPTURE(oq::cpu::to_string(isa));
      REQUIRE(oq::cpu::kernel::token_row_kernels(isa).quantize(y.data(), n, p, range, 8, got.data(), abs_max(y)) ==
              sum_want);
      REQUIRE(got == want);
      checked += n;
    }
  }
  CHECK(checked > 0);
}

namespace {

// A buffer whose every value is wrong for any call: codes 0xA5, scales NaN,
// zeros and sums −1, the flags and shape of none of the calls below. A
// result equal to a fresh call's then shows that every value was written.
void poison(PackedActivations& a) {
  std::fill(a.codes.begin(), a.codes.end(), std::uint8_t{0xA5});
  std::fill(a.scales.begin(), a.scales.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(a.zeros.begin(), a.zeros.end(), -1);
  std::fill(a.code_sums.begin(), a.code_sums.end(), -1);
  a.m = 12345;
  a.k = 3;
  a.bits = 2;
  a.is_signed = true;
}

}  // namespace

TEST_CASE("quantize_per_token_into: one buffer through shapes that shrink, grow and repeat, the allocating call's bits on every path") {
  struct Call {
    Eigen::Index m, k;
    QuantSpec spec;
    bool hadamard;
  };
  // 37 × 1152 first (the biggest codes: 21,312 bytes at 4 bits), then fewer
  // rows of wider tokens, 8 bits (more bytes per row, fewer in all), the
  // first shape again, a smaller one, none, and a bigger one than all (the
  // buffer must grow).
  const Call calls[] = {{37, 1152, kSpecs[0], true},  {5, 2048, kSpecs[3], false}, {37, 1152, kSpecs[0], true},
                        {3, 256, kSpecs[1], true},    {0, 256, kSpecs[2], false},  {40, 1280, kSpecs[4], true},
                        {40, 1280, kSpecs[4], true}};
  for (Isa isa : available_paths()) {
    CAPTURE(oq::cpu::to_string(isa));
    PackedActivations buffer;
    std::size_t largest_codes = 0;
    for (std::size_t c = 0; c < std::size(calls); ++c) {
      const Call& call = calls[c];
      CAPTURE(c);
      const RowMatrix x = random_tokens(call.m, call.k, static_cast<std::uint32_t>(100 + c));
      const TokenTransform t = call.hadamard ? TokenTransform::hadamard(128) : TokenTransform{};
      const PackedActivations want = oq::cpu::quantize_per_token(x, call.spec, t, {2, isa});
      // ... and the same against oq::quant, so that an into-path that broke
      // the allocating one with it would still be seen.
      RowMatrix y = x;
      if (call.hadamard) oq::transform::block_hadamard_rows(y, 128);
      if (call.m > 0) require_same(want, reference(y, call.spec));

      const std::size_t needed = static_cast<std::size_t>(call.m * (call.spec.bits == 4 ? call.k / 2 : call.k));
      const std::uint8_t* before = buffer.codes.data();
      const bool fits = buffer.codes.capacity() >= needed && needed > 0;
      poison(buffer);
      oq::cpu::quantize_per_token_into(x, call.spec, buffer, t, {2, isa});
      require_same(buffer, want);
      CHECK(buffer.scales.size() == static_cast<std::size_t>(call.m));
      buffer.validate("test");
      // Reused, not reallocated, where the old capacity sufficed.
      if (fits) CHECK(buffer.codes.data() == before);
      largest_codes = std::max(largest_codes, needed);
      CHECK(buffer.codes.capacity() >= largest_codes);
    }
  }
}

TEST_CASE("quantize_per_token_into: bad arguments are refused before the buffer is touched; bad values name the entry") {
  const RowMatrix x = random_tokens(6, 256, 7);
  PackedActivations buffer;
  oq::cpu::quantize_per_token_into(x, QuantSpec::per_token(4, false), buffer, TokenTransform::hadamard(128));
  const PackedActivations kept = buffer;
  const auto unchanged = [&] {
    require_same(buffer, kept);
    CHECK(buffer.codes.size() == kept.codes.size());
  };
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(x, QuantSpec::per_tensor(4, false), buffer),
                       doctest::Contains("oq::cpu::quantize_per_token_into"), std::invalid_argument);
  unchanged();
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(random_tokens(2, 7, 2), QuantSpec::per_token(4, false), buffer),
                       doctest::Contains("must be even"), std::invalid_argument);
  unchanged();
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(random_tokens(2, 192, 2), QuantSpec::per_token(8, false), buffer,
                                                        TokenTransform::hadamard(128)),
                       doctest::Contains("must divide x.cols() = 192"), std::invalid_argument);
  unchanged();
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(x, QuantSpec::per_token(8, false), buffer, {}, {-1, Isa::kAuto}),
                       doctest::Contains("options.threads"), std::invalid_argument);
  unchanged();
  // The allocating call still names itself.
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token(x, QuantSpec::per_tensor(4, false)),
                       doctest::Contains("oq::cpu::quantize_per_token:"), std::invalid_argument);

  // A non-finite entry is found while rows are written: the error names it,
  // and the buffer, with x's shape, is usable again by the next call.
  for (Isa isa : available_paths()) {
    CAPTURE(oq::cpu::to_string(isa));
    RowMatrix bad = random_tokens(40, 256, 9);
    bad(33, 17) = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH_AS(oq::cpu::quantize_per_token_into(bad, QuantSpec::per_token(4, false), buffer,
                                                          TokenTransform::hadamard(128), {2, isa}),
                         doctest::Contains("x(33, 17) is inf"), std::domain_error);
    CHECK(buffer.m == 40);
    oq::cpu::quantize_per_token_into(x, QuantSpec::per_token(4, false), buffer, TokenTransform::hadamard(128), {2, isa});
    require_same(buffer, oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false), TokenTransform::hadamard(128),
                                                     {1, isa}));
  }
}
