// Tests of oq/cpu/packed_weights.hpp: the documented bytes, and that packing
// keeps exactly what oq::quant computed (codes, scales, integer zero points,
// per-group code sums), from quantizer results and from GPTQ results.
#include <oq/cpu/packed_weights.hpp>
#include <oq/quant/gptq.hpp>
#include <oq/quant/quantize.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using oq::cpu::PackedWeights;
using oq::quant::QuantSpec;

Eigen::MatrixXf random_weights(Eigen::Index n, Eigen::Index k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  Eigen::MatrixXf w(n, k);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(rng);
  return w;
}

}  // namespace

TEST_CASE("golden bytes: s4 codes {1, -1, 7, -8} pack to {0xF1, 0x87}") {
  Eigen::Matrix<std::int32_t, 1, 4> codes;
  codes << 1, -1, 7, -8;
  oq::quant::QuantParams<float> params;
  params.scale = Eigen::MatrixXf::Constant(1, 1, 0.5f);
  params.zero = Eigen::MatrixXf::Zero(1, 1);
  const PackedWeights w = oq::cpu::pack_weights(codes, params, QuantSpec::per_channel(4, true));
  CHECK(w.codes == std::vector<std::uint8_t>{0xF1, 0x87});
  CHECK(w.code_sums == std::vector<std::int32_t>{-1});
  CHECK(w.zeros.empty());
  CHECK(w.group_size == 4);
  w.validate("test");
}

TEST_CASE("quantize_weights keeps oq::quant's codes, scales and zero points; sums per group") {
  const Eigen::MatrixXf w = random_weights(5, 96, 3);
  for (const QuantSpec& spec : {QuantSpec::per_channel(4, false, 0.8), QuantSpec::per_channel(4, true),
                                QuantSpec::per_group(4, false, 32), QuantSpec::per_group(4, true, 32, 0.9)}) {
    CAPTURE(spec.symmetric);
    CAPTURE(spec.group_size);
    const auto params = oq::quant::compute_params(w, spec);
    const auto codes = oq::quant::quantize(w, params, spec);
    const PackedWeights p = oq::cpu::quantize_weights(w, spec);
    p.validate("test");
    const std::int64_t groups = p.groups();
    CHECK(groups == params.scale.cols());
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      for (Eigen::Index c = 0; c < w.cols(); ++c) {
        const int q = spec.symmetric ? oq::format::load_s4(p.row(r), static_cast<std::size_t>(c))
                                     : static_cast<int>(oq::format::load_u4(p.row(r), static_cast<std::size_t>(c)));
        REQUIRE(q == codes(r, c));
      }
      for (std::int64_t g = 0; g < groups; ++g) {
        const auto cell = static_cast<std::size_t>(r * groups + g);
        CHECK(p.scales[cell] == params.scale(r, g));
        if (!spec.symmetric) CHECK(p.zeros[cell] == params.zero(r, g));
        CHECK(p.code_sums[cell] == codes.block(r, g * p.group_size, 1, p.group_size).sum());
      }
    }
  }
}

TEST_CASE("GPTQ results pack with contiguous groups; groups in act order are refused") {
  const Eigen::MatrixXd w = random_weights(4, 64, 5).cast<double>();
  std::mt19937 rng(8);
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::MatrixXd x(128, 64);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  const Eigen::MatrixXd h = x.transpose() * x;
  const QuantSpec spec = QuantSpec::gptq_reference(4, false, 16);
  const auto result = oq::quant::gptq_quantize(w, h, spec);
  const PackedWeights p = oq::cpu::pack_weights(result, spec);
  for (Eigen::Index c = 0; c < 64; ++c) CHECK(static_cast<int>(oq::format::load_u4(p.row(2), static_cast<std::size_t>(c))) == result.codes(2, c));
  auto shuffled = result;
  std::swap(shuffled.group_index[0], shuffled.group_index[20]);
  CHECK_THROWS_WITH_AS(oq::cpu::pack_weights(shuffled, spec), doctest::Contains("re-sorted into contiguous groups"),
                       std::invalid_argument);
}

TEST_CASE("validate_code_sums finds a code sum that is not the codes' sum") {
  const PackedWeights p = oq::cpu::quantize_weights(random_weights(3, 64, 2), QuantSpec::per_group(4, false, 32));
  p.validate_code_sums("test");
  PackedWeights bad = p;
  bad.code_sums[3] += 1;
  bad.validate("test");  // the cheap check does not read the codes
  CHECK_THROWS_WITH_AS(bad.validate_code_sums("test"), doctest::Contains("weights.code_sums[3]"), std::invalid_argument);
}

TEST_CASE("bad input is refused with a message naming it") {
  const Eigen::MatrixXf w = random_weights(3, 64, 1);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_weights(w, QuantSpec::per_channel(8, false)), doctest::Contains("spec.bits must be 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_weights(w, QuantSpec::per_tensor(4, false)),
                       doctest::Contains("spec.granularity must be per-row (per output channel) or per-group, got "
                                         "per-tensor"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_weights(random_weights(3, 63, 1), QuantSpec::per_channel(4, false)),
                       doctest::Contains("even number of columns"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_weights(w, QuantSpec::per_group(4, false, 24)), doctest::Contains("group_size"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(oq::cpu::quantize_weights(random_weights(2, 66, 1), QuantSpec::per_group(4, false, 3)),
                       doctest::Contains("must be even"), std::invalid_argument);

  Eigen::Matrix<std::int32_t, 1, 4> codes;
  codes << 1, 16, 7, 0;
  oq::quant::QuantParams<float> params;
  params.scale = Eigen::MatrixXf::Constant(1, 1, 0.5f);
  params.zero = Eigen::MatrixXf::Constant(1, 1, 3.0f);
  CHECK_THROWS_WITH_AS(oq::cpu::pack_weights(codes, params, QuantSpec::per_channel(4, false)),
                       doctest::Contains("codes(0, 1) = 16"), std::invalid_argument);
  codes(0, 1) = 2;
  params.zero(0, 0) = 2.5f;
  CHECK_THROWS_WITH_AS(oq::cpu::pack_weights(codes, params, QuantSpec::per_channel(4, false)),
                       doctest::Contains("must be a finite integer"), std::invalid_argument);
  params.zero(0, 0) = 2.0f;
  params.scale(0, 0) = 0.0f;
  CHECK_THROWS_WITH_AS(oq::cpu::pack_weights(codes, params, QuantSpec::per_channel(4, false)),
                       doctest::Contains("must be positive and finite"), std::invalid_argument);
  Eigen::Matrix<double, 1, 1> big_scale;
  big_scale << 1e300;
  oq::quant::QuantParams<double> dparams{big_scale, Eigen::MatrixXd::Zero(1, 1)};
  CHECK_THROWS_WITH_AS(oq::cpu::pack_weights(codes, dparams, QuantSpec::per_channel(4, true)),
                       doctest::Contains("as a float"), std::invalid_argument);
}
