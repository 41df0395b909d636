// Tests for examples/02_llama_layer: the layer forward against a plain float64
// loop implementation, the default layer's outlier structure, every method's
// exactness without rounding, the W4A4 error ordering as measured, the
// integer-kernel path against fake quantization within the bound of
// integer_path.hpp, and the checkpoint path (safetensors + config.json) end
// to end.
#include "support/llama_configs.hpp"
#include "support/temp_dir.hpp"
#include "../../tools/llama/checkpoint_layer.hpp"
#include "../../examples/02_llama_layer/default_layer.hpp"
#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>
#include <oq/io.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

namespace {

using llama::Config;
using llama::LayerWeights;
using llama::Linear;
using Md = llama::Matrix<double>;
using oq::test::tiny_llama_config;

LayerWeights<double> random_weights(const Config& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 0.3);
  auto random = [&](Eigen::Index r, Eigen::Index k) {
    Md m(r, k);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
    return m;
  };
  LayerWeights<double> w;
  w.input_norm = (random(c.hidden_size, 1).array() + 1.0).matrix();
  w.post_norm = (random(c.hidden_size, 1).array() + 1.0).matrix();
  w[Linear::kQ] = random(c.q_size(), c.hidden_size);
  w[Linear::kK] = random(c.kv_size(), c.hidden_size);
  w[Linear::kV] = random(c.kv_size(), c.hidden_size);
  w[Linear::kO] = random(c.hidden_size, c.q_size());
  w[Linear::kGate] = random(c.intermediate_size, c.hidden_size);
  w[Linear::kUp] = random(c.intermediate_size, c.hidden_size);
  w[Linear::kDown] = random(c.hidden_size, c.intermediate_size);
  return w;
}

// The layer written as loops over indices, one formula per line of the
// transformers source (modeling_llama.py), in double: RMSNorm, projections,
// RoPE on (i, i + d/2) pairs with explicit angles, attention with a
// log-sum-exp softmax over the causal prefix, SwiGLU, residuals.
std::vector<std::vector<double>> loop_forward(const Config& c, const LayerWeights<double>& w,
                                              const std::vector<std::vector<double>>& x) {
  const std::size_t T = x.size();
  const auto H = static_cast<std::size_t>(c.hidden_size), F = static_cast<std::size_t>(c.intermediate_size);
  const auto heads = static_cast<std::size_t>(c.num_attention_heads);
  const auto kv_heads = static_cast<std::size_t>(c.num_key_value_heads);
  const auto d = static_cast<std::size_t>(c.head_dim);
  auto norm = [&](const std::vector<double>& v, const llama::Vector<double>& g) {
    double ss = 0;
    for (double e : v) ss += e * e;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(v.size()) + c.rms_norm_eps);
    std::vector<double> out(v.size());
    for (std::size_t j = 0; j < v.size(); ++j) out[j] = v[j] * r * g[static_cast<Eigen::Index>(j)];
    return out;
  };
  auto linear = [](const Md& m, const std::vector<double>& v) {
    std::vector<double> out(static_cast<std::size_t>(m.rows()), 0.0);
    for (Eigen::Index o = 0; o < m.rows(); ++o)
      for (Eigen::Index i = 0; i < m.cols(); ++i) out[static_cast<std::size_t>(o)] += m(o, i) * v[static_cast<std::size_t>(i)];
    return out;
  };
  auto rope = [&](std::vector<double>& v, std::size_t pos, std::size_t nh) {
    for (std::size_t h = 0; h < nh; ++h)
      for (std::size_t i = 0; i < d / 2; ++i) {
        const double freq = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
        const double a = v[h * d + i], b = v[h * d + i + d / 2];
        const double angle = static_cast<double>(pos) * freq;
        v[h * d + i] = a * std::cos(angle) - b * std::sin(angle);
        v[h * d + i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
  };
  std::vector<std::vector<double>> q(T), k(T), v(T), out(T);
  for (std::size_t t = 0; t < T; ++t) {
    const auto n1 = norm(x[t], w.input_norm);
    q[t] = linear(w[Linear::kQ], n1);
    k[t] = linear(w[Linear::kK], n1);
    v[t] = linear(w[Linear::kV], n1);
    rope(q[t], t, heads);
    rope(k[t], t, kv_heads);
  }
  for (std::size_t t = 0; t < T; ++t) {
    std::vector<double> attn(heads * d, 0.0);
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t g = h / (heads / kv_heads);
      std::vector<double> s(t + 1);
      for (std::size_t u = 0; u <= t; ++u) {
        double dot = 0;
        for (std::size_t i = 0; i < d; ++i) dot += q[t][h * d + i] * k[u][g * d + i];
        s[u] = dot / std::sqrt(static_cast<double>(d));
      }
      const double m = *std::max_element(s.begin(), s.end());
      double lse = 0;
      for (double e : s) lse += std::exp(e - m);
      lse = m + std::log(lse);
      for (std::size_t u = 0; u <= t; ++u)
        for (std::size_t i = 0; i < d; ++i) attn[h * d + i] += std::exp(s[u] - lse) * v[u][g * d + i];
    }
    const auto o = linear(w[Linear::kO], attn);
    std::vector<double> h(H);
    for (std::size_t j = 0; j < H; ++j) h[j] = x[t][j] + o[j];
    const auto n2 = norm(h, w.post_norm);
    const auto gate = linear(w[Linear::kGate], n2), up = linear(w[Linear::kUp], n2);
    std::vector<double> act(F);
    for (std::size_t j = 0; j < F; ++j) act[j] = gate[j] / (1.0 + std::exp(-gate[j])) * up[j];
    const auto down = linear(w[Linear::kDown], act);
    out[t].resize(H);
    for (std::size_t j = 0; j < H; ++j) out[t][j] = h[j] + down[j];
  }
  return out;
}

Md random_input(Eigen::Index tokens, Eigen::Index hidden, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  Md x(tokens, hidden);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

}  // namespace

TEST_CASE("llama::forward equals a float64 loop implementation (GQA, RoPE, causal softmax, SwiGLU)") {
  const Config c = tiny_llama_config();
  const LayerWeights<double> w = random_weights(c, 1);
  const Md x = random_input(7, c.hidden_size, 2);
  std::vector<std::vector<double>> xs(7, std::vector<double>(16));
  for (int t = 0; t < 7; ++t)
    for (int j = 0; j < 16; ++j) xs[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)] = x(t, j);
  const auto reference = loop_forward(c, w, xs);
  const Md y = llama::forward(c, w, x);
  const llama::Matrix<float> y32 = llama::forward(c, w.cast<float>(), llama::Matrix<float>(x.cast<float>()));
  double max_err = 0, max_err32 = 0, scale = 0;
  for (int t = 0; t < 7; ++t)
    for (int j = 0; j < 16; ++j) {
      const double r = reference[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)];
      max_err = std::max(max_err, std::abs(y(t, j) - r));
      max_err32 = std::max(max_err32, std::abs(double(y32(t, j)) - r));
      scale = std::max(scale, std::abs(r));
    }
  CHECK(max_err <= 1e-12 * scale);
  CHECK(max_err32 <= 1e-5 * scale);

  // Causality: changing a later token leaves earlier outputs unchanged.
  Md x2 = x;
  x2.row(6).setConstant(3.0);
  const Md y2 = llama::forward(c, w, x2);
  CHECK((y2.topRows(6) - y.topRows(6)).cwiseAbs().maxCoeff() == 0.0);
  CHECK((y2.row(6) - y.row(6)).cwiseAbs().maxCoeff() > 1e-3);
}

TEST_CASE("llama::Config and LayerWeights reject inconsistent shapes by name") {
  Config c = tiny_llama_config();
  c.num_key_value_heads = 3;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("num_key_value_heads must divide"), std::invalid_argument);
  c = tiny_llama_config();
  c.head_dim = 3;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("head_dim must be even"), std::invalid_argument);
  c = tiny_llama_config();
  LayerWeights<double> w = random_weights(c, 1);
  w[Linear::kDown] = Md::Zero(16, 23);
  CHECK_THROWS_WITH_AS(w.validate(c), doctest::Contains("down_proj must be 16 x 24, got 16 x 23"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(llama::forward(c, random_weights(c, 1), Md(Md::Zero(3, 15))),
                       doctest::Contains("hidden_size = 16"), std::invalid_argument);
}

namespace {

// A small default-style layer: the construction of default_layer.hpp at
// 1/8 of LLaMA-2-7B's width.
Config small_config() { return oq::test::gqa_llama_config(/*heads=*/8, /*head_dim=*/64, /*intermediate=*/1408); }

}  // namespace

TEST_CASE("the default layer produces the published outlier structure from its weights") {
  const Config c = small_config();
  llama::DefaultLayerLayout layout;
  const auto w = llama::default_layer<double>(c, {}, &layout);
  const Md x = llama::default_input<double>(c, 48, 1);
  const Md y = llama::forward(c, w, x);
  const auto inputs = llama::record_inputs(c, w, x);

  // The input has no massive activations and no outlier channels.
  CHECK(oq::analysis::find_massive_activations(x).empty());
  CHECK(oq::analysis::find_channel_outliers(x).empty());
  // Massive activations at the output: exactly the two channels, first token, ~2000 and ~-1500.
  const auto massive = oq::analysis::find_massive_activations(y);
  REQUIRE(massive.size() == 2);
  for (const auto& m : massive) {
    CHECK(m.token == 0);
    CHECK((m.channel == layout.massive_channels[0] || m.channel == layout.massive_channels[1]));
  }
  CHECK(y(0, layout.massive_channels[0]) == doctest::Approx(2000.0).epsilon(0.01));
  CHECK(y(0, layout.massive_channels[1]) == doctest::Approx(-1500.0).epsilon(0.01));
  // The down_proj input spikes to the thousands on the first token, in the super channel only.
  const Md& down_in = inputs[static_cast<std::size_t>(llama::Input::kDown)];
  Eigen::Index t = 0, j = 0;
  const double spike = down_in.cwiseAbs().maxCoeff(&t, &j);
  CHECK(t == 0);
  CHECK(j == layout.super_channel);
  CHECK(spike > 1000.0);
  Md rest = down_in;
  rest(0, layout.super_channel) = 0;
  CHECK(rest.cwiseAbs().maxCoeff() < 20.0);
  // Channel-wise outliers at the q/k/v input: exactly the large-γ channels.
  std::vector<Eigen::Index> found;
  for (const auto& o : oq::analysis::find_channel_outliers(inputs[0])) found.push_back(o.channel);
  std::sort(found.begin(), found.end());
  CHECK(found == layout.input_norm_outliers);
}

TEST_CASE("every method is exact when nothing is rounded: transforms and folding cancel") {
  const Config c = small_config();
  const auto w = llama::default_layer<double>(c);
  const Md x = llama::default_input<double>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<double>(c, 24, 2));
  const Md y = llama::forward(c, w, x);
  llama::QuantOptions o;
  o.act_bits = 0;
  o.weight_bits = 0;
  o.greedy_steps = 16;
  for (llama::Method m : llama::kAllMethods) {
    const auto layer = llama::quantize_layer(m, w, calibration, o);
    const Md yq = llama::forward(c, w, x, layer);
    INFO(llama::method_name(m));
    CHECK(llama::relative_error(yq, y) < 1e-12);
  }
}

TEST_CASE("every point of the cross is exact when nothing is rounded: transforms and folding cancel") {
  const Config c = small_config();
  const auto w = llama::default_layer<double>(c);
  const Md x = llama::default_input<double>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<double>(c, 24, 2));
  const Md y = llama::forward(c, w, x);
  llama::QuantOptions o;
  o.act_bits = 0;
  o.weight_bits = 0;
  o.greedy_steps = 16;
  const std::vector<llama::MethodSpec> specs = llama::all_method_specs();
  CHECK(specs.size() == 2 * llama::kAllRotations.size() * llama::kAllWeightQuants.size());
  for (const llama::MethodSpec& spec : specs) {
    const auto layer = llama::quantize_layer(spec, w, calibration, o);
    INFO(spec.name());
    CHECK(layer.spec() == spec);
    CHECK(llama::relative_error(llama::forward(c, w, x, layer), y) < 1e-12);
  }
}

TEST_CASE("MethodSpec: names, presets as points of the cross, refused combinations") {
  const std::vector<llama::MethodSpec> specs = llama::all_method_specs();
  std::vector<std::string> names;
  for (const auto& spec : specs) names.push_back(spec.name());
  std::sort(names.begin(), names.end());
  CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());  // one name per point
  CHECK(llama::MethodSpec{}.name() == "RTN");
  CHECK(llama::MethodSpec{true, llama::Rotation::kDuQuant, llama::WeightQuant::kGptq}.name() == "smooth+DuQuant+GPTQ");
  CHECK(llama::MethodSpec{false, llama::Rotation::kBlockHadamard, llama::WeightQuant::kClipSearch}.name() ==
        "Hadamard+clip");
  // The presets are distinct points, each its own preset again.
  for (llama::Method m : llama::kAllMethods) {
    for (llama::WeightQuant q : {llama::WeightQuant::kRtn, llama::WeightQuant::kGptq}) {
      const auto preset = llama::preset_of(llama::method_spec(m, q));
      REQUIRE(preset.has_value());
      CHECK(*preset == m);
      CHECK(llama::method_spec(m, q).weights == q);
    }
    CHECK_FALSE(llama::preset_of(llama::method_spec(m, llama::WeightQuant::kClipSearch)).has_value());
  }
  CHECK_FALSE(llama::preset_of({true, llama::Rotation::kBlockHadamard, llama::WeightQuant::kRtn}).has_value());
  CHECK(llama::method_spec(llama::Method::kDuQuantSmooth) ==
        llama::MethodSpec{true, llama::Rotation::kDuQuant, llama::WeightQuant::kRtn});

  const Config c = tiny_llama_config();
  const auto w = random_weights(c, 3);
  const auto calibration = llama::record_inputs(c, w, random_input(8, c.hidden_size, 4));
  llama::QuantOptions o;
  o.block_size = 4;
  o.greedy_steps = 2;
  o.gptq = true;  // the presets' switch: a MethodSpec with other weights is a contradiction
  CHECK_THROWS_WITH_AS(llama::quantize_layer(llama::MethodSpec{}, w, calibration, o),
                       doctest::Contains("options.gptq"), std::invalid_argument);
  CHECK_NOTHROW(llama::quantize_layer(llama::MethodSpec{false, llama::Rotation::kNone, llama::WeightQuant::kGptq}, w,
                                      calibration, o));
  o.gptq = false;
  o.smoothquant_alpha_search = true;  // scores unrotated linears: not for smoothing before a rotation
  CHECK_THROWS_WITH_AS(
      llama::quantize_layer(llama::MethodSpec{true, llama::Rotation::kBlockHadamard, llama::WeightQuant::kRtn}, w,
                            calibration, o),
      doctest::Contains("smoothquant_alpha_search"), std::invalid_argument);
}

TEST_CASE("MethodSpec::alpha_search: SmoothQuant's α search as a point, the same as QuantOptions' switch") {
  // The studies' points: the cross, then smooth-search with each weight quantizer, one name each.
  const std::vector<llama::MethodSpec> cross = llama::all_method_specs();
  const std::vector<llama::MethodSpec> points = llama::study_method_specs();
  REQUIRE(points.size() == cross.size() + llama::kAllWeightQuants.size());
  CHECK(std::equal(cross.begin(), cross.end(), points.begin()));
  std::vector<std::string> names;
  for (const auto& spec : points) names.push_back(spec.name());
  std::sort(names.begin(), names.end());
  CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());
  for (std::size_t i = cross.size(); i < points.size(); ++i) {
    CHECK(points[i].smooth);
    CHECK(points[i].alpha_search);
    CHECK(points[i].rotation == llama::Rotation::kNone);
    CHECK(llama::smoothing_name(points[i]) == "search");
  }
  const llama::MethodSpec searched{true, llama::Rotation::kNone, llama::WeightQuant::kRtn, true};
  CHECK(searched.name() == "smooth-search+RTN");
  CHECK(llama::smoothing_name(llama::MethodSpec{}) == "off");
  CHECK(llama::smoothing_name(llama::method_spec(llama::Method::kSmoothQuant)) == "on");
  CHECK_FALSE(llama::preset_of(searched).has_value());  // the presets search through QuantOptions

  // The point equals the fixed-α point with QuantOptions::smoothquant_alpha_search, bit for bit.
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x = llama::default_input<float>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 64, 2));
  llama::QuantOptions o;
  o.alpha_search_tokens = 32;
  const auto point = llama::quantize_layer(searched, w, calibration, o);
  CHECK(point.spec() == searched);
  llama::QuantOptions switched = o;
  switched.smoothquant_alpha_search = true;
  const auto option = llama::quantize_layer(llama::method_spec(llama::Method::kSmoothQuant), w, calibration, switched);
  CHECK(point.smoothing_alphas() == option.smoothing_alphas());
  CHECK((llama::forward(c, w, x, point) - llama::forward(c, w, x, option)).cwiseAbs().maxCoeff() == 0.0f);
  // Each α is a point of the search's grid 0, 0.05, …, 1.
  for (double alpha : point.smoothing_alphas()) {
    CHECK(alpha >= 0.0);
    CHECK(alpha <= 1.0);
    CHECK(std::abs(alpha * 20 - std::round(alpha * 20)) < 1e-9);
  }

  // Only where SmoothQuant's search means something: smoothing, no rotation.
  for (const llama::MethodSpec& bad : {llama::MethodSpec{false, llama::Rotation::kNone, llama::WeightQuant::kRtn, true},
                                       llama::MethodSpec{true, llama::Rotation::kQuaRot, llama::WeightQuant::kRtn, true},
                                       llama::MethodSpec{true, llama::Rotation::kDuQuant, llama::WeightQuant::kGptq, true}}) {
    INFO(bad.name());
    CHECK_THROWS_WITH_AS(llama::quantize_layer(bad, w, calibration, o), doctest::Contains("alpha_search"),
                         std::invalid_argument);
  }
}

TEST_CASE("DuQuant-blockwise: a point of the cross, each block its own rotation, fused by the integer path") {
  const llama::MethodSpec spec{true, llama::Rotation::kDuQuantBlockwise, llama::WeightQuant::kLwc};
  CHECK(spec.name() == "smooth+DuQuant-blockwise+LWC");
  CHECK(llama::is_random(llama::Rotation::kDuQuantBlockwise));
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x = llama::default_input<float>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 64, 2));
  const llama::Matrix<float> y = llama::forward(c, w, x);
  llama::QuantOptions o;
  o.greedy_steps = 16;
  o.seed = 3;
  const auto blockwise =
      llama::quantize_layer({false, llama::Rotation::kDuQuantBlockwise, llama::WeightQuant::kRtn}, w, calibration, o);
  const auto rtn = llama::quantize_layer(llama::MethodSpec{}, w, calibration, o);
  // The down_proj input (1408 = 11 blocks of 128) holds the super
  // activation's channel: every block gets its own rotation, and the
  // rotation moves W4A4's error below round-to-nearest's.
  const auto* t = std::get_if<llama::InputTransform<float>::DuQuantBlockwise>(
      &blockwise.transform(llama::Input::kDown).kind());
  REQUIRE(t != nullptr);
  CHECK(t->blocks() == 11);
  CHECK((t->rotations()[0][0] - t->rotations()[0][1]).cwiseAbs().maxCoeff() > 1e-3f);
  const double e_blockwise = llama::relative_error(llama::forward(c, w, x, blockwise), y);
  const double e_rtn = llama::relative_error(llama::forward(c, w, x, rtn), y);
  INFO("blockwise ", e_blockwise, ", RTN ", e_rtn);
  CHECK(e_blockwise < e_rtn);
  // The fused CPU transform holds the 11 rotations of each stage (the
  // integer path's agreement with fake quantization: the every-method test below).
  const oq::cpu::TokenTransform fused = blockwise.transform(llama::Input::kDown).token_transform();
  CHECK(fused.rotations_per_stage() == 11);
  CHECK(fused.channels() == 1408);
}

TEST_CASE("each preset equals its MethodSpec bit for bit (RTN and GPTQ weights)") {
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x = llama::default_input<float>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 64, 2));
  llama::QuantOptions o;
  o.greedy_steps = 4;
  o.seed = 11;
  for (bool gptq : {false, true}) {
    for (llama::Method m : llama::kAllMethods) {
      // GPTQ (a Cholesky factor per input, the 1408-wide one the largest) on one preset, to keep the test short.
      if (gptq && m != llama::Method::kSmoothQuant) continue;
      INFO(llama::method_name(m), gptq ? " GPTQ" : "");
      o.gptq = gptq;
      const auto preset = llama::quantize_layer(m, w, calibration, o);
      o.gptq = false;
      const llama::MethodSpec spec = llama::method_spec(m, gptq ? llama::WeightQuant::kGptq : llama::WeightQuant::kRtn);
      const auto point = llama::quantize_layer(spec, w, calibration, o);
      CHECK(preset.spec() == spec);
      bool same = true;
      for (Linear l : llama::kAllLinears) {
        same = same && preset.quantized_weight(l) == point.quantized_weight(l);
        same = same && preset.packed_weight(l)->codes == point.packed_weight(l)->codes &&
               preset.packed_weight(l)->scales == point.packed_weight(l)->scales;
      }
      CHECK(same);
      CHECK(llama::forward(c, w, x, preset) == llama::forward(c, w, x, point));
    }
  }
}

TEST_CASE("smoothing before a block Hadamard: X·diag(s)⁻¹·H, W·diag(s)·H, written as a dense float64 product") {
  const Config c = small_config();
  const auto w = llama::default_layer<double>(c);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<double>(c, 24, 2));
  llama::QuantOptions o;
  o.act_bits = 0;
  o.weight_bits = 0;
  o.block_size = 64;
  const auto smooth = llama::quantize_layer(llama::MethodSpec{true, llama::Rotation::kNone, llama::WeightQuant::kRtn},
                                            w, calibration, o);
  const auto both = llama::quantize_layer(
      llama::MethodSpec{true, llama::Rotation::kBlockHadamard, llama::WeightQuant::kRtn}, w, calibration, o);
  for (llama::Input input : llama::kAllInputs) {
    INFO(llama::input_name(input));
    const Md& x = calibration[static_cast<std::size_t>(input)];
    // The scales at α = 0.6 (duquant_alpha: smoothing before a rotation), from eq. 4 directly.
    const auto* h = std::get_if<llama::InputTransform<double>::BlockHadamard>(&both.transform(input).kind());
    REQUIRE(h != nullptr);
    REQUIRE(h->scales.size() == x.cols());
    CHECK(std::holds_alternative<llama::InputTransform<double>::Smoothing>(smooth.transform(input).kind()));
    Md m = Md::Zero(x.cols(), x.cols());
    const Md hb = oq::transform::hadamard_orthogonal<double>(64);
    for (Eigen::Index b = 0; b < x.cols(); b += 64) m.block(b, b, 64, 64) = hb;
    const Md expected = x * h->scales.cwiseInverse().asDiagonal() * m;
    CHECK((both.transform(input).apply(x) - expected).norm() <= 1e-12 * expected.norm());
    for (Linear l : llama::kAllLinears) {
      if (llama::input_of(l) != input) continue;
      const Md folded = w[l] * h->scales.asDiagonal() * m;
      CHECK((both.quantized_weight(l) - folded).norm() <= 1e-12 * folded.norm());
    }
    double alpha_check = 0;  // s_j = max|X_j|^0.6 / max|W_j|^0.4 where neither is floored
    const Eigen::Index j = 0;
    double wmax = 0;
    for (Linear l : llama::kAllLinears) {
      if (llama::input_of(l) == input) wmax = std::max(wmax, w[l].col(j).cwiseAbs().maxCoeff());
    }
    alpha_check = std::pow(x.col(j).cwiseAbs().maxCoeff(), 0.6) / std::pow(wmax, 0.4);
    CHECK(h->scales(j) == doctest::Approx(alpha_check).epsilon(1e-12));
  }
}

TEST_CASE("clip search weights: each output channel's squared error at most round-to-nearest's at clip 0.8") {
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 24, 2));
  llama::QuantOptions o;
  o.act_bits = 0;
  const auto rtn = llama::quantize_layer(llama::MethodSpec{}, w, calibration, o);
  const auto clip = llama::quantize_layer(llama::MethodSpec{false, llama::Rotation::kNone, llama::WeightQuant::kClipSearch},
                                          w, calibration, o);
  std::size_t better = 0, rows = 0;
  for (Linear l : llama::kAllLinears) {
    INFO(llama::linear_name(l));
    const Md wl = w[l].cast<double>();
    const Eigen::VectorXd e_rtn = (rtn.quantized_weight(l).cast<double>() - wl).rowwise().squaredNorm();
    const Eigen::VectorXd e_clip = (clip.quantized_weight(l).cast<double>() - wl).rowwise().squaredNorm();
    // 0.8 lies on the search's grid (1 − 20·0.01 rounds to 0.8f): never worse, up to the
    // float rounding of the two error sums.
    CHECK((e_clip.array() <= e_rtn.array() * (1 + 1e-5)).all());
    better += static_cast<std::size_t>((e_clip.array() < e_rtn.array() * (1 - 1e-3)).count());
    rows += static_cast<std::size_t>(wl.rows());
  }
  CHECK(better > rows / 2);  // and strictly better on most channels (a ratio other than 0.8 wins)
}

TEST_CASE("LWC weights: each linear's calibration output error at most RTN's, and the layer's below it") {
  // Weights only (activations unrounded): LWC's objective is each linear's
  // output error on its transformed calibration inputs. Its factors start at
  // the weight clip 0.8, RTN's grid, and each channel keeps its best step, so
  // per linear it cannot end above RTN; the layer's error is checked too.
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x_calibration = llama::default_input<float>(c, 128, 2);
  const auto calibration = llama::record_inputs(c, w, x_calibration);
  const llama::Matrix<float> y = llama::forward(c, w, x_calibration);
  llama::QuantOptions o;
  o.act_bits = 0;
  o.greedy_steps = 16;
  o.block_size = 64;
  o.lwc.steps = 15;
  for (const llama::MethodSpec& rtn_spec : {llama::MethodSpec{}, llama::method_spec(llama::Method::kDuQuantSmooth)}) {
    llama::MethodSpec lwc_spec = rtn_spec;
    lwc_spec.weights = llama::WeightQuant::kLwc;
    const auto rtn = llama::quantize_layer(rtn_spec, w, calibration, o);
    const auto lwc = llama::quantize_layer(lwc_spec, w, calibration, o);
    const std::string name = lwc_spec.name();
    INFO(name);
    CHECK(name == (rtn_spec.smooth ? "smooth+DuQuant+LWC" : "LWC"));
    std::size_t better = 0;
    for (Linear l : llama::kAllLinears) {
      INFO(llama::linear_name(l));
      // Both layers' transforms are the same calibration (same seed).
      const auto& t = lwc.transform(llama::input_of(l));
      const Md xt = t.apply(calibration[static_cast<std::size_t>(llama::input_of(l))]).cast<double>();
      const Md folded = t.fold_into_weight(w[l]).cast<double>();
      const double e_rtn = (xt * (folded - rtn.quantized_weight(l).cast<double>()).transpose()).squaredNorm();
      const double e_lwc = (xt * (folded - lwc.quantized_weight(l).cast<double>()).transpose()).squaredNorm();
      CHECK(e_lwc <= e_rtn * (1 + 1e-9));
      better += e_lwc < 0.99 * e_rtn;
    }
    CHECK(better >= 5);
    const double e_rtn = llama::relative_error(llama::forward(c, w, x_calibration, rtn), y);
    const double e_lwc = llama::relative_error(llama::forward(c, w, x_calibration, lwc), y);
    std::cout << name << ": W4 layer error on the calibration tokens, RTN " << e_rtn << ", LWC " << e_lwc << "\n";
    CHECK(e_lwc < e_rtn);
  }
  // LWC sets each channel's range itself: a range widened to hold 0 is refused.
  o.weight_range_includes_zero = true;
  CHECK_THROWS_WITH_AS(llama::quantize_layer(llama::MethodSpec{false, llama::Rotation::kNone, llama::WeightQuant::kLwc},
                                             w, calibration, o),
                       doctest::Contains("weight_range_includes_zero"), std::invalid_argument);
  CHECK_FALSE(llama::preset_of({true, llama::Rotation::kDuQuant, llama::WeightQuant::kLwc}).has_value());
}

TEST_CASE("W4A4 on the small default layer: DuQuant and Hadamard each cut RTN's error at least 2x") {
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x = llama::default_input<float>(c, 64, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 64, 2));
  const llama::Matrix<float> y = llama::forward(c, w, x);
  llama::QuantOptions o;
  o.greedy_steps = 64;
  std::vector<std::pair<double, std::string_view>> ordering;
  double rtn = 0, duquant = 0, hadamard = 0;
  for (llama::Method m : llama::kAllMethods) {
    const double e = llama::relative_error(llama::forward(c, w, x, llama::quantize_layer(m, w, calibration, o)), y);
    ordering.emplace_back(e, llama::method_name(m));
    if (m == llama::Method::kRtn) rtn = e;
    if (m == llama::Method::kDuQuant) duquant = e;
    if (m == llama::Method::kHadamard) hadamard = e;
  }
  std::sort(ordering.begin(), ordering.end());
  std::cout << "small default layer, W4A4 output relative error, best first:";
  for (const auto& [e, name] : ordering) std::cout << "  " << name << " " << e;
  std::cout << "\n";
  CHECK(duquant <= 0.5 * rtn);
  CHECK(hadamard <= 0.5 * rtn);

  // 8 bits against 4 bits on the same path: 16× finer steps. Without clipping
  // (clip 1): at clip 0.9 the first token's super activation (3,200 at the
  // down_proj input) is clipped by 10% whatever the bits, which bounds the
  // error from below at any width.
  o.act_clip = 1.0;
  o.weight_clip = 1.0;
  auto rtn_error = [&](int bits) {
    o.act_bits = bits;
    o.weight_bits = bits;
    return llama::relative_error(llama::forward(c, w, x, llama::quantize_layer(llama::Method::kRtn, w, calibration, o)), y);
  };
  const double rtn4 = rtn_error(4), rtn8 = rtn_error(8);
  std::cout << "RTN without clipping: 4 bits " << rtn4 << ", 8 bits " << rtn8 << "\n";
  CHECK(rtn8 < rtn4 / 8);
}

TEST_CASE("GPTQ weights: the calibration output error of W4 weights falls below round-to-nearest's, per method") {
  // Weights only (activations unrounded), so the comparison is GPTQ's own
  // objective: the layer output on the calibration tokens (512 of them:
  // full-rank Hessians for the 512-wide inputs, rank <= 512 for the
  // 1408-wide down_proj input, where the damping keeps it invertible).
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x_calibration = llama::default_input<float>(c, 512, 2);
  const auto calibration = llama::record_inputs(c, w, x_calibration);
  const llama::Matrix<float> y = llama::forward(c, w, x_calibration);
  llama::QuantOptions o;
  o.act_bits = 0;
  o.greedy_steps = 16;
  for (llama::Method m : {llama::Method::kRtn, llama::Method::kHadamard, llama::Method::kDuQuantSmooth}) {
    o.gptq = false;
    const double rtn = llama::relative_error(llama::forward(c, w, x_calibration, llama::quantize_layer(m, w, calibration, o)), y);
    o.gptq = true;
    const double gptq = llama::relative_error(llama::forward(c, w, x_calibration, llama::quantize_layer(m, w, calibration, o)), y);
    INFO(llama::method_name(m), ": W4 round-to-nearest ", rtn, ", GPTQ ", gptq);
    CHECK(gptq < rtn);
  }
  // With weight_bits 0 there is nothing to round, and GPTQ is skipped.
  o.weight_bits = 0;
  CHECK(llama::relative_error(llama::forward(c, w, x_calibration, llama::quantize_layer(llama::Method::kHadamard, w, calibration, o)), y) < 1e-5);
}

TEST_CASE("integer kernels and fake quantization agree within the stated bound, every method (small default layer)") {
  const Config c = small_config();
  const auto w = llama::default_layer<float>(c);
  const llama::Matrix<float> x = llama::default_input<float>(c, 24, 1);
  const auto calibration = llama::record_inputs(c, w, llama::default_input<float>(c, 24, 2));
  const llama::Matrix<float> y = llama::forward(c, w, x);
  llama::QuantOptions o;
  o.greedy_steps = 16;
  o.block_size = 64;
  std::vector<llama::MethodSpec> specs;
  for (llama::Method m : llama::kAllMethods) specs.push_back(llama::method_spec(m));
  // Points of the cross beyond the presets: smoothing fused with the block
  // Hadamard (one block rotation after the division), and clip-searched weights.
  specs.push_back({true, llama::Rotation::kBlockHadamard, llama::WeightQuant::kRtn});
  specs.push_back({false, llama::Rotation::kNone, llama::WeightQuant::kClipSearch});
  specs.push_back({true, llama::Rotation::kDuQuant, llama::WeightQuant::kClipSearch});
  specs.push_back({true, llama::Rotation::kDuQuant, llama::WeightQuant::kLwc});  // DuQuant+LWC
  specs.push_back({false, llama::Rotation::kDuQuantBlockwise, llama::WeightQuant::kRtn});  // one rotation per block
  specs.push_back({true, llama::Rotation::kDuQuantBlockwise, llama::WeightQuant::kRtn});
  o.lwc.steps = 5;
  for (const llama::MethodSpec& spec : specs) {
    INFO(spec.name());
    const auto layer = llama::quantize_layer(spec, w, calibration, o);
    // The packed weights dequantize to the fake path's Ŵ bit for bit.
    for (Linear l : llama::kAllLinears) {
      const oq::cpu::PackedWeights* p = layer.packed_weight(l);
      REQUIRE(p != nullptr);
      REQUIRE_FALSE(p->is_signed);  // asymmetric weights: codes in [0, 15], integer zero points
      const llama::Matrix<float>& w_hat = layer.quantized_weight(l);
      bool same = true;
      for (Eigen::Index r = 0; r < w_hat.rows(); ++r) {
        const auto ri = static_cast<std::size_t>(r);
        for (Eigen::Index k = 0; k < w_hat.cols(); ++k) {
          const auto q = static_cast<float>(oq::format::load_u4(p->row(r), static_cast<std::size_t>(k)));
          same = same && (q - static_cast<float>(p->zeros[ri])) * p->scales[ri] == w_hat(r, k);
        }
      }
      CHECK(same);
    }
    const llama::Matrix<float> y_fake = llama::forward(c, w, x, layer);
    llama::IntegerLayer integer(layer);
    llama::PathAgreement agreement;
    integer.compare_into(&agreement);
    const llama::Matrix<float> y_int = llama::forward(c, w, x, integer);
    const double e_fake = llama::relative_error(y_fake, y), e_int = llama::relative_error(y_int, y);
    std::cout << spec.name() << ": fake quant " << e_fake << ", integer " << e_int << ", max |r|/bound "
              << agreement.max_bound_ratio << ", epilogue/bound " << agreement.max_epilogue_ratio
              << ", differing codes " << agreement.differing_codes << " of " << agreement.codes << "\n";
    // Every output of the 7 linears on 24 tokens, every code of the 4 inputs.
    CHECK(agreement.outputs == 24 * (c.q_size() + 2 * c.kv_size() + c.hidden_size + 2 * c.intermediate_size + c.hidden_size));
    CHECK(agreement.codes == 24 * (2 * c.hidden_size + c.q_size() + c.intermediate_size));
    CHECK(agreement.max_bound_ratio <= 1.0);
    CHECK(agreement.max_epilogue_ratio <= 1.0);
    CHECK(agreement.max_output > 0.0);
    if (spec.rotation != llama::Rotation::kDuQuant && spec.rotation != llama::Rotation::kDuQuantBlockwise &&
        !(spec.smooth && spec.rotation == llama::Rotation::kBlockHadamard) && spec.rotation != llama::Rotation::kQuaRot) {
      // The fused transform computes what the Eigen one does: the same codes
      // (a dense block product, not the butterfly, where it smooths first;
      // QuaRot's 1408 = 44·32-wide down_proj input sums its 44 segments in
      // another order than Eigen's GEMM).
      CHECK(agreement.differing_codes == 0);
      CHECK(agreement.differing_rows == 0);
    } else {
      CHECK(agreement.differing_codes <= agreement.codes / 1000);
    }
    // Propagated through the layer, the two paths stay within rounding of
    // each other (no code flip cascaded into a different result).
    CHECK(llama::relative_error(y_int, y_fake) < 1e-3 * e_fake);
  }
}

TEST_CASE("the bound of integer_path.hpp: a wrong weight code breaks it, a differing activation code is accounted for") {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const Eigen::Index m = 12, n = 40, k = 256;
  llama::Matrix<float> x(m, k), weight(n, k);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (Eigen::Index i = 0; i < weight.size(); ++i) weight.data()[i] = 0.02f * normal(rng);
  x.col(5) *= 30.0f;  // an outlier channel
  const auto aspec = oq::quant::QuantSpec::per_token(4, false, 0.9);
  const auto wspec = oq::quant::QuantSpec::per_channel(4, false, 0.8);
  const auto wp = oq::quant::compute_params(weight, wspec);
  const llama::Matrix<float> w_hat = oq::quant::fake_quantize(weight, wp, wspec);
  const oq::cpu::PackedWeights packed = oq::cpu::pack_weights(oq::quant::quantize(weight, wp, wspec), wp, wspec);
  const auto ap = oq::quant::compute_params(x, aspec);
  const llama::Matrix<float> x_hat = oq::quant::fake_quantize(x, ap, aspec);
  const oq::cpu::PackedActivations a_fake = llama::pack_activations(oq::quant::quantize(x, ap, aspec), ap, aspec);
  const oq::cpu::PackedActivations a_int = oq::cpu::quantize_per_token(x, aspec);
  const llama::Matrix<float> y_int = oq::cpu::gemm(a_int, packed);
  const llama::Matrix<float> y_fake = x_hat * w_hat.transpose();

  CHECK(llama::compare_codes(a_int, a_fake).differing_codes == 0);
  const llama::PathAgreement ok = llama::compare_outputs(a_int, a_fake, x_hat, packed, w_hat, y_int, y_fake);
  CHECK(ok.outputs == m * n);
  CHECK(ok.max_bound_ratio <= 1.0);
  CHECK(ok.max_epilogue_ratio <= 1.0);

  // One weight code off by one in the integer path: its outputs move by
  // s_a·s_w·(qa − z_a), far beyond the rounding bound.
  oq::cpu::PackedWeights wrong = packed;
  const unsigned q0 = oq::format::load_u4(wrong.row(0), 5);
  const int q1 = q0 == 15 ? 14 : static_cast<int>(q0) + 1;
  oq::format::store_int4(wrong.codes.data(), 5, q1);
  wrong.code_sums[0] += q1 - static_cast<int>(q0);
  const llama::PathAgreement bad =
      llama::compare_outputs(a_int, a_fake, x_hat, wrong, w_hat, oq::cpu::gemm(a_int, wrong), y_fake);
  CHECK(bad.max_bound_ratio > 1.0);

  // One activation code off by one on the fake path (what a DuQuant rotation
  // rounded differently can do): the difference is the exact term's, and
  // the bound still holds.
  oq::cpu::PackedActivations flipped = a_fake;
  const int c0 = flipped.code(0, 5);
  const int c1 = c0 == 15 ? 14 : c0 + 1;
  oq::format::store_int4(flipped.codes.data(), 5, c1);
  flipped.code_sums[0] += c1 - c0;
  llama::Matrix<float> x_flipped = x_hat;
  x_flipped(0, 5) = static_cast<float>(c1 - flipped.zeros[0]) * flipped.scales[0];
  const llama::Matrix<float> y_flipped = x_flipped * w_hat.transpose();
  CHECK(llama::compare_codes(a_int, flipped).differing_codes == 1);
  const llama::PathAgreement accounted =
      llama::compare_outputs(a_int, flipped, x_flipped, packed, w_hat, y_int, y_flipped);
  CHECK(accounted.max_bound_ratio <= 1.0);
  CHECK(accounted.max_difference > 100 * ok.max_difference);
}

namespace {

using oq::test::TempDir;

}  // namespace

TEST_CASE("a sharded Hugging Face checkpoint: config.json and safetensors give the same layer and forward") {
  const Config c = tiny_llama_config();
  const auto w0 = random_weights(c, 11).cast<float>();
  const auto w1 = random_weights(c, 12).cast<float>();
  const llama::Matrix<float> embeddings = random_input(40, c.hidden_size, 13).cast<float>();
  TempDir dir("oq-llama-checkpoint");

  // Layer 0 and the embeddings in one shard (F32), layer 1 in another (BF16,
  // as checkpoints are usually stored), plus the index.
  oq::io::SafetensorsWriter shard0, shard1;
  nlohmann::json weight_map = nlohmann::json::object();
  auto add_layer = [&](oq::io::SafetensorsWriter& shard, const std::string& file, int index,
                       const LayerWeights<float>& w, oq::io::DType dtype) {
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    shard.add(prefix + "input_layernorm.weight", w.input_norm, dtype);
    shard.add(prefix + "post_attention_layernorm.weight", w.post_norm, dtype);
    weight_map[prefix + "input_layernorm.weight"] = file;
    weight_map[prefix + "post_attention_layernorm.weight"] = file;
    for (Linear l : llama::kAllLinears) {
      shard.add(prefix + llama::linear_module(l) + ".weight", w[l], dtype);
      weight_map[prefix + llama::linear_module(l) + ".weight"] = file;
    }
  };
  add_layer(shard0, "model-00001-of-00002.safetensors", 0, w0, oq::io::DType::kF32);
  shard0.add("model.embed_tokens.weight", embeddings, oq::io::DType::kF32);
  weight_map["model.embed_tokens.weight"] = "model-00001-of-00002.safetensors";
  add_layer(shard1, "model-00002-of-00002.safetensors", 1, w1, oq::io::DType::kBF16);
  shard0.write(dir.path / "model-00001-of-00002.safetensors");
  shard1.write(dir.path / "model-00002-of-00002.safetensors");
  std::ofstream(dir.path / "model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", c.hidden_size},
                           {"intermediate_size", c.intermediate_size},
                           {"num_attention_heads", c.num_attention_heads},
                           {"num_key_value_heads", c.num_key_value_heads},
                           {"num_hidden_layers", 2},
                           {"rms_norm_eps", c.rms_norm_eps},
                           {"rope_theta", c.rope_theta},
                           {"rope_scaling", nullptr},
                           {"hidden_act", "silu"},
                           {"vocab_size", 40},
                           {"bos_token_id", 5}};
  std::ofstream(dir.path / "config.json") << config.dump(2);

  const llama::CheckpointModel model(dir.path);
  CHECK(model.num_layers() == 2);
  CHECK(model.config().head_dim == c.head_dim);  // hidden / heads when config.json has no head_dim
  CHECK(model.config().num_key_value_heads == 2);
  const auto l0 = model.layer(0);
  for (Linear l : llama::kAllLinears) CHECK(l0[l] == w0[l]);  // F32: exact
  const auto l1 = model.layer(1);
  for (Linear l : llama::kAllLinears) {
    // BF16: each weight is its RNE rounding.
    for (Eigen::Index i = 0; i < w1[l].size(); ++i) {
      REQUIRE(l1[l].data()[i] == oq::core::bf16_bits_to_float(oq::core::float_to_bf16_bits(w1[l].data()[i])));
    }
  }
  CHECK_THROWS_WITH_AS(model.layer(2), doctest::Contains("layer must be in [0, 2), got 2"), std::invalid_argument);

  // The hidden states entering layer 1 are the embeddings through layer 0.
  const auto ids = model.random_token_ids(6, 3);
  CHECK(ids.front() == 5);  // config.json's bos_token_id, then anything but BOS
  CHECK(std::count(ids.begin(), ids.end(), 5) == 1);
  for (const auto id : model.random_token_ids(400, 4)) CHECK((id >= 0 && id < 40));
  llama::Matrix<float> x(6, c.hidden_size);
  for (int t = 0; t < 6; ++t) x.row(t) = embeddings.row(ids[static_cast<std::size_t>(t)]);
  const llama::Matrix<float> expected = llama::forward(c, w0, x);
  CHECK(model.hidden_states_before(1, ids) == expected);
  CHECK(model.hidden_states_before(0, ids) == x);

  // What the layer does not implement is refused by name, not run wrongly.
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  CHECK_THROWS_WITH_AS(llama::config_from_json(config), doctest::Contains("rope_scaling of type \"linear\" is not supported"),
                       std::invalid_argument);
  config["rope_scaling"] = {{"rope_type", "default"}};  // plain RoPE, spelled out
  CHECK(llama::config_from_json(config).rope_theta == c.rope_theta);
  config["rope_scaling"] = nullptr;
  // Newer transformers: rope_parameters carries the type and theta.
  config["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0}};
  CHECK_THROWS_WITH_AS(llama::config_from_json(config), doctest::Contains("of type \"llama3\" is not supported"),
                       std::invalid_argument);
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  config.erase("rope_theta");
  CHECK(llama::config_from_json(config).rope_theta == 500000.0);
  config["rope_theta"] = 10000.0;
  CHECK_THROWS_WITH_AS(llama::config_from_json(config), doctest::Contains("disagree"), std::invalid_argument);
  config.erase("rope_parameters");
  config["hidden_act"] = "gelu";
  CHECK_THROWS_WITH_AS(llama::config_from_json(config), doctest::Contains("hidden_act must be \"silu\""),
                       std::invalid_argument);
  config["hidden_act"] = "silu";
  config.erase("intermediate_size");
  CHECK_THROWS_WITH_AS(llama::config_from_json(config), doctest::Contains("missing integer field 'intermediate_size'"),
                       std::invalid_argument);
}
