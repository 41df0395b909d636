// Tests for examples/02_llama_layer/synthetic_model.hpp, model_statistics.hpp
// and stack_quantization.hpp: the synthetic model, at a small width, has the
// published properties it claims (README.md beside those files), measured
// the way the papers measure them; its construction is deterministic; the
// stack's per-layer and end-to-end errors are what their definitions say.
#include "support/llama_configs.hpp"
#include "../../examples/02_llama_layer/model_statistics.hpp"
#include "../../examples/02_llama_layer/stack_quantization.hpp"
#include "../../examples/02_llama_layer/synthetic_model.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using llama::Config;
using llama::Linear;
using Mf = llama::Matrix<float>;

// 1/16 of LLaMA-2-7B's width, grouped-query attention (2 query heads per KV head).
Config small_config() { return oq::test::gqa_llama_config(/*heads=*/4, /*head_dim=*/64, /*intermediate=*/688); }

llama::SyntheticModelOptions options(std::uint64_t seed) {
  llama::SyntheticModelOptions o;
  o.seed = seed;
  return o;
}

// Token sequences with at least three delimiters (so that "only the first
// delimiter" is tested against later ones), from fixed seeds.
std::vector<Eigen::Index> sequence(Eigen::Index tokens, std::uint64_t seed, const llama::SyntheticModelOptions& o) {
  const auto ids = llama::synthetic_token_ids(tokens, seed, o);
  REQUIRE(std::count_if(ids.begin(), ids.end(), llama::is_delimiter) >= 3);
  return ids;
}

std::vector<Eigen::Index> tokens_of(const std::vector<oq::analysis::MassiveActivation>& found) {
  std::vector<Eigen::Index> t;
  for (const auto& m : found) {
    if (std::find(t.begin(), t.end(), m.token) == t.end()) t.push_back(m.token);
  }
  std::sort(t.begin(), t.end());
  return t;
}

}  // namespace

TEST_CASE("token sequences: BOS first, delimiters at the configured rate, the first one found") {
  const llama::SyntheticModelOptions o;
  const auto ids = llama::synthetic_token_ids(4000, 9, o);
  CHECK(ids[0] == llama::SyntheticModelLayout::kBos);
  CHECK(std::count(ids.begin(), ids.end(), llama::SyntheticModelLayout::kBos) == 1);
  const auto delimiters = std::count_if(ids.begin(), ids.end(), llama::is_delimiter);
  // Binomial(3999, 1/12): mean 333, standard deviation 17.5; 5 deviations either side.
  CHECK(delimiters > 333 - 88);
  CHECK(delimiters < 333 + 88);
  CHECK(std::all_of(ids.begin(), ids.end(), [&](Eigen::Index id) { return id >= 0 && id < o.vocabulary; }));
  const auto first = llama::first_delimiter(ids);
  REQUIRE(first.has_value());
  CHECK(std::none_of(ids.begin(), ids.begin() + *first, llama::is_delimiter));
  CHECK(llama::massive_token_positions(ids) == std::vector<Eigen::Index>{0, *first});
  CHECK(llama::massive_token_positions({0, 5, 6}) == std::vector<Eigen::Index>{0});
  CHECK(llama::synthetic_token_ids(50, 9, o) == std::vector<Eigen::Index>(ids.begin(), ids.begin() + 50));
}

TEST_CASE("Sun et al.'s test fires on the first token and the first delimiter only, from the spike layer on") {
  const Config c = small_config();
  for (std::uint64_t seed : {0u, 1u, 2u}) {
    const auto o = options(seed);
    const auto model = llama::synthetic_model<float>(c, o);
    const auto& layout = model.layout;
    REQUIRE(layout.spike_layer == 1);
    for (std::uint64_t s : {11u, 12u}) {
      const auto ids = sequence(96, 100 * seed + s, o);
      const auto expected = llama::massive_token_positions(ids);
      REQUIRE(expected.size() == 2);
      const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
      REQUIRE(hidden.size() == 5);
      INFO("seed " << seed << ", sequence " << s << ", first delimiter at " << expected[1]);
      // Before the spike: none in the embeddings or layer 0's output.
      CHECK(oq::analysis::find_massive_activations(hidden[0]).empty());
      CHECK(oq::analysis::find_massive_activations(hidden[1]).empty());
      for (std::size_t l = 2; l < hidden.size(); ++l) {
        INFO("output of layer " << l - 1);
        const auto found = oq::analysis::find_massive_activations(hidden[l]);
        CHECK(tokens_of(found) == expected);
        CHECK(found.size() == 4);  // two channels on each of the two tokens
        for (const auto& m : found) {
          CHECK((m.channel == layout.massive_channels[0] || m.channel == layout.massive_channels[1]));
          CHECK(std::abs(m.value) > 100.0);
          CHECK(m.ratio_to_median >= 1000.0);
        }
        // The values the construction aims at: 2600 and −0.6·2600 on the
        // first token, 0.75 of those on the first delimiter.
        CHECK(hidden[l](0, layout.massive_channels[0]) == doctest::Approx(2600.0).epsilon(0.01));
        CHECK(hidden[l](0, layout.massive_channels[1]) == doctest::Approx(-1560.0).epsilon(0.01));
        CHECK(hidden[l](expected[1], layout.massive_channels[0]) == doctest::Approx(0.75 * 2600.0).epsilon(0.1));
        // Nearly constant through the later layers (the residual carries them).
        for (Eigen::Index t : expected) {
          for (Eigen::Index j : layout.massive_channels) {
            CHECK(std::abs(hidden[l](t, j) - hidden[2](t, j)) < 0.01 * std::abs(hidden[2](t, j)));
          }
        }
        // Sun et al.'s median: about 0.2 (0.2 in LLaMA-2-7B; here within 0.15..0.3).
        CHECK(llama::median_abs(hidden[l]) > 0.15);
        CHECK(llama::median_abs(hidden[l]) < 0.3);
      }
    }
  }
}

TEST_CASE("the spike is made by the spike layer's MLP through one down_proj column, not injected") {
  const Config c = small_config();
  const auto o = options(3);
  const auto model = llama::synthetic_model<float>(c, o);
  const auto& layout = model.layout;
  const auto ids = sequence(96, 21, o);
  const auto expected = llama::massive_token_positions(ids);
  const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
  const auto& w = model.layers[1];
  // The spike layer's attention half adds nothing massive: RMSNorm₂(x + attention),
  // what gate_proj and up_proj read, has no entry anywhere near 100.
  Mf n2, down_in;
  llama::forward(c, w, hidden[1], [&](Linear which, const Mf& in, const Mf& weight) {
    if (which == Linear::kGate) n2 = in;
    if (which == Linear::kDown) down_in = in;
    return llama::PlainLinear{}(which, in, weight);
  });
  CHECK(n2.cwiseAbs().maxCoeff() < 50.0f);
  // The down_proj input: the super channel on the two tokens, in the thousands.
  for (Eigen::Index t : expected) {
    Eigen::Index j = 0;
    CHECK(down_in.row(t).cwiseAbs().maxCoeff(&j) > 1000.0f);
    CHECK(j == layout.super_channel);
  }
  Mf rest = down_in;
  for (Eigen::Index t : expected) rest(t, layout.super_channel) = 0;
  CHECK(rest.cwiseAbs().maxCoeff() < 50.0f);
  // Ablating that one down_proj column removes every massive activation, here and downstream.
  auto ablated = model;
  ablated.layers[1][Linear::kDown].col(layout.super_channel).setZero();
  const auto hidden_ablated = llama::hidden_states(ablated, llama::embed(ablated, ids));
  for (std::size_t l = 0; l < hidden_ablated.size(); ++l) {
    CHECK(oq::analysis::find_massive_activations(hidden_ablated[l]).empty());
  }
  // Layer 0's counting head is what keeps the later delimiters out: without
  // its write (o_proj's column of head 0's value), every delimiter fires.
  auto uncounted = model;
  uncounted.layers[0][Linear::kO].col(0).setZero();
  const auto hidden_uncounted = llama::hidden_states(uncounted, llama::embed(uncounted, ids));
  std::vector<Eigen::Index> every{0};
  for (std::size_t t = 1; t < ids.size(); ++t) {
    if (llama::is_delimiter(ids[t])) every.push_back(static_cast<Eigen::Index>(t));
  }
  CHECK(tokens_of(oq::analysis::find_massive_activations(hidden_uncounted[2])) == every);
}

TEST_CASE("later layers see the massive tokens through RMSNorm as one vector on two channels, and attend to them") {
  const Config c = small_config();
  const auto o = options(4);
  const auto model = llama::synthetic_model<float>(c, o);
  const auto& layout = model.layout;
  const auto ids = sequence(96, 31, o);
  const auto sinks = llama::massive_token_positions(ids);
  const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
  for (int l = 0; l < 4; ++l) {
    INFO("layer " << l);
    const auto& w = model.layers[static_cast<std::size_t>(l)];
    const double mass = llama::sink_attention_mass(llama::attention_probabilities(c, w, hidden[static_cast<std::size_t>(l)]), sinks);
    if (l <= layout.spike_layer) {
      // No sinks before the massive activations exist (a query at position t
      // spreads ~1/(t + 1) on each of them).
      CHECK(mass < 0.15);
      continue;
    }
    // Xiao et al. / Sun et al.: most of the attention goes to the massive tokens.
    CHECK(mass > 0.5);
    const Mf n1 = llama::rms_norm(hidden[static_cast<std::size_t>(l)], w.input_norm, c.rms_norm_eps);
    for (Eigen::Index t : sinks) {
      const double on_massive = n1(t, layout.massive_channels[0]) * n1(t, layout.massive_channels[0]) +
                                n1(t, layout.massive_channels[1]) * n1(t, layout.massive_channels[1]);
      CHECK(on_massive > 0.95 * n1.row(t).squaredNorm());
    }
    const double cosine = n1.row(sinks[0]).dot(n1.row(sinks[1])) / (n1.row(sinks[0]).norm() * n1.row(sinks[1]).norm());
    CHECK(cosine > 0.99);
  }
  // The probabilities are a causal softmax: rows sum to 1, nothing above the diagonal.
  const auto p = llama::attention_probabilities(c, model.layers[2], hidden[2]);
  REQUIRE(p.size() == 4);
  for (const auto& ph : p) {
    CHECK((ph.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
    CHECK(ph.triangularView<Eigen::StrictlyUpper>().toDenseMatrix().cwiseAbs().maxCoeff() == 0.0);
  }
  // And they are the attention forward() runs: attention · V reproduces the layer.
  const auto& w = model.layers[2];
  const Eigen::MatrixXd n1 = llama::rms_norm(hidden[2], w.input_norm, c.rms_norm_eps).cast<double>();
  const Eigen::MatrixXd v = n1 * w[Linear::kV].cast<double>().transpose();
  Eigen::MatrixXd attention(n1.rows(), c.q_size());
  for (Eigen::Index h = 0; h < c.num_attention_heads; ++h) {
    attention.middleCols(h * c.head_dim, c.head_dim) = p[static_cast<std::size_t>(h)] * v.middleCols((h / 2) * c.head_dim, c.head_dim);
  }
  const Eigen::MatrixXd x = hidden[2].cast<double>();
  const Eigen::MatrixXd h = x + attention * w[Linear::kO].cast<double>().transpose();
  Mf h_forward;
  llama::forward(c, w, hidden[2], [&](Linear which, const Mf& in, const Mf& weight) {
    if (which == Linear::kGate) h_forward = in;
    return llama::PlainLinear{}(which, in, weight);
  });
  // forward() hands RMSNorm₂(h) to gate_proj: compare that.
  const Eigen::MatrixXd n2 = llama::rms_norm(llama::Matrix<double>(h), llama::Vector<double>(w.post_norm.cast<double>()), c.rms_norm_eps);
  CHECK((n2 - h_forward.cast<double>()).cwiseAbs().maxCoeff() < 1e-3 * n2.cwiseAbs().maxCoeff());
}

TEST_CASE("a heavy-tailed bulk: kurtosis from the Student-t embeddings, above a Gaussian control") {
  const Config c = small_config();
  for (std::uint64_t seed : {5u, 6u}) {
    const auto o = options(seed);
    const auto model = llama::synthetic_model<float>(c, o);
    const auto ids = sequence(96, seed, o);
    const auto massive = llama::massive_token_positions(ids);
    const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
    // The same model with (nearly) Gaussian entries: ν = 10⁶.
    auto gaussian_options = o;
    gaussian_options.student_t_dof = 1e6;
    const auto control = llama::synthetic_model<float>(c, gaussian_options);
    const auto hidden_control = llama::hidden_states(control, llama::embed(control, ids));
    for (std::size_t l = 0; l < hidden.size(); ++l) {
      INFO("seed " << seed << ", hidden state " << l);
      const double k = llama::bulk_kurtosis(hidden[l], massive);
      const double k_gaussian = llama::bulk_kurtosis(hidden_control[l], massive);
      // Student-t with ν = 5 has kurtosis 9; the sample kurtosis of a
      // 256-entry row is biased low (the tail beyond the row is unseen), and
      // the layers' small Gaussian-like writes lower it a little more.
      CHECK(k > 4.0);
      CHECK(k < 9.5);
      CHECK(k_gaussian < 3.6);  // 3 for a Gaussian, a little above from the feature directions
      CHECK(k > k_gaussian + 1.0);
    }
  }
}

TEST_CASE("channel-wise outliers in the normed inputs of every layer: exactly the large-γ channels") {
  const Config c = small_config();
  const auto o = options(7);
  const auto model = llama::synthetic_model<float>(c, o);
  REQUIRE(model.layout.outlier_channels.size() == 4);
  const auto ids = sequence(96, 41, o);
  const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
  for (std::size_t l = 0; l < model.layers.size(); ++l) {
    const auto inputs = llama::record_inputs(c, model.layers[l], hidden[l]);
    for (llama::Input i : {llama::Input::kAttention, llama::Input::kMlp}) {
      INFO("layer " << l << ", " << llama::input_name(i));
      std::vector<Eigen::Index> found;
      for (const auto& outlier : oq::analysis::find_channel_outliers(inputs[static_cast<std::size_t>(i)])) {
        found.push_back(outlier.channel);
      }
      std::sort(found.begin(), found.end());
      CHECK(found == model.layout.outlier_channels);
    }
    // The hidden state itself has none before the spike: they come from the
    // norms. (After it, the two massive tokens alone lift channels 2533 and
    // 1415's mean |x| far above 6× the input's.)
    if (static_cast<int>(l) <= model.layout.spike_layer) CHECK(oq::analysis::find_channel_outliers(hidden[l]).empty());
  }
}

TEST_CASE("the construction is deterministic for a seed and changes with it") {
  const Config c = small_config();
  const auto a = llama::synthetic_model<float>(c, options(8));
  const auto b = llama::synthetic_model<float>(c, options(8));
  const auto other = llama::synthetic_model<float>(c, options(9));
  CHECK(a.embeddings == b.embeddings);
  CHECK(a.layout.outlier_channels == b.layout.outlier_channels);
  CHECK(a.layout.sink_logits == b.layout.sink_logits);
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    CHECK(a.layers[l].input_norm == b.layers[l].input_norm);
    CHECK(a.layers[l].post_norm == b.layers[l].post_norm);
    for (Linear lin : llama::kAllLinears) CHECK(a.layers[l][lin] == b.layers[l][lin]);
  }
  CHECK(a.embeddings != other.embeddings);
  CHECK(a.layers[2][Linear::kQ] != other.layers[2][Linear::kQ]);
  // float and double models are the same construction.
  const auto d = llama::synthetic_model<double>(c, options(8));
  CHECK((d.embeddings.cast<float>() - a.embeddings).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK((d.layers[1][Linear::kGate].cast<float>() - a.layers[1][Linear::kGate]).cwiseAbs().maxCoeff() <
        1e-3f * a.layers[1][Linear::kGate].cwiseAbs().maxCoeff());
}

TEST_CASE("bad options and inputs are refused by name") {
  const Config c = small_config();
  auto o = options(0);
  o.layers = 0;
  CHECK_THROWS_WITH_AS(llama::synthetic_model<float>(c, o), doctest::Contains("layers must be >= 1"), std::invalid_argument);
  o = options(0);
  o.student_t_dof = 4.0;
  CHECK_THROWS_WITH_AS(llama::synthetic_model<float>(c, o), doctest::Contains("student_t_dof must be > 4"),
                       std::invalid_argument);
  o = options(0);
  o.delimiter_cancel = 2.5;
  CHECK_THROWS_WITH_AS(llama::synthetic_model<float>(c, o), doctest::Contains("delimiter_cancel"), std::invalid_argument);
  o = options(0);
  o.vocabulary = 3;
  CHECK_THROWS_WITH_AS(llama::synthetic_model<float>(c, o), doctest::Contains("vocabulary must be >= 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(llama::synthetic_token_ids(0, 1), doctest::Contains("tokens must be >= 1"), std::invalid_argument);
  Config tiny = c;
  tiny.hidden_size = 1;
  tiny.num_attention_heads = 1;
  tiny.num_key_value_heads = 1;
  CHECK_THROWS_AS(llama::synthetic_model<float>(tiny, options(0)), std::invalid_argument);
  // One layer: no spike layer, no massive activations, and that is stated.
  o = options(0);
  o.layers = 1;
  const auto one = llama::synthetic_model<float>(c, o);
  CHECK(one.layout.spike_layer == -1);
  const auto model = llama::synthetic_model<float>(c, options(0));
  CHECK_THROWS_WITH_AS(llama::embed(model, {0, 512}), doctest::Contains("token id 512 outside the vocabulary"),
                       std::invalid_argument);
}

TEST_CASE("group errors: the definition, by hand") {
  // Rows: 0 and 2 massive. a − b and b − base chosen so every norm is known.
  Mf base = Mf::Zero(3, 2), b(3, 2), a(3, 2);
  b << 3, 4, 1, 0, 0, 2;   // ‖b − base‖ per row: 5, 1, 2
  a << 3, 4.5, 1, 0.5, 0, 3;  // ‖a − b‖ per row: 0.5, 0.5, 1
  const llama::GroupErrors e = llama::group_errors(a, b, base, {0, 2});
  CHECK(e.all == doctest::Approx(std::sqrt((0.25 + 0.25 + 1.0) / (25.0 + 1.0 + 4.0))));
  CHECK(e.massive == doctest::Approx(std::sqrt((0.25 + 1.0) / (25.0 + 4.0))));
  CHECK(e.others == doctest::Approx(0.5));
  const llama::GroupErrors none = llama::group_errors(a, b, base, {});
  CHECK(std::isnan(none.massive));
  CHECK(none.others == doctest::Approx(e.all));
  CHECK(llama::group_errors(b, b, b, {0}).all == 0.0);
  CHECK(std::isinf(llama::group_errors(a, b, b, {0}).all));
  CHECK_THROWS_AS(llama::group_errors(a, Mf(Mf::Zero(2, 2)), base, {}), std::invalid_argument);
}

TEST_CASE("the quantized stack: exact without rounding, per-layer and end-to-end errors as defined") {
  const Config c = small_config();
  const auto o = options(10);
  const auto model = llama::synthetic_model<float>(c, o);
  const auto ids = llama::synthetic_token_ids(48, 51, o);
  const auto massive = llama::massive_token_positions(ids);
  REQUIRE(massive.size() == 2);
  const auto hidden = llama::hidden_states(model, llama::embed(model, ids));
  const auto calibration_hidden = llama::hidden_states(model, llama::embed(model, llama::synthetic_token_ids(48, 52, o)));
  std::vector<llama::LinearInputs<float>> calibration;
  for (std::size_t l = 0; l < model.layers.size(); ++l) {
    calibration.push_back(llama::record_inputs(c, model.layers[l], calibration_hidden[l]));
  }
  llama::QuantOptions exact;
  exact.act_bits = 0;
  exact.weight_bits = 0;
  exact.block_size = 16;  // divides 256 and 688
  llama::StackOptions so;
  so.integer = false;
  int calls = 0;
  const auto none = llama::quantize_stack(c, model.layers, hidden, calibration, massive,
                                          [&](int l, const llama::LayerWeights<float>& w, const llama::LinearInputs<float>& cal) {
                                            CHECK(l == calls++);
                                            return llama::quantize_layer(llama::Method::kHadamard, w, cal, exact);
                                          },
                                          so);
  CHECK(calls == 4);
  REQUIRE(none.size() == 4);
  for (std::size_t l = 0; l < none.size(); ++l) {
    const auto& q = none[l];
    CHECK(q.layer.all < 1e-4);
    CHECK(q.end_to_end.all < 1e-4);
    // From the spike layer's output on, where the full-precision model has them.
    CHECK(q.end_to_end_massive_tokens == (l == 0 ? std::vector<Eigen::Index>{} : massive));
    CHECK_FALSE(q.integer_layer.has_value());
  }

  // W4A4 RTN with the integer kernels: layer 0's two errors coincide (its
  // input is the embeddings either way); the integer path agrees within its bound.
  llama::QuantOptions w4a4;
  so.integer = true;
  llama::LinearInputs<float> transformed;
  so.record_layer = 2;
  const auto rtn = llama::quantize_stack(c, model.layers, hidden, calibration, massive,
                                         [&](int, const llama::LayerWeights<float>& w, const llama::LinearInputs<float>& cal) {
                                           return llama::quantize_layer(llama::Method::kRtn, w, cal, w4a4);
                                         },
                                         so, &transformed);
  CHECK(rtn[0].layer.all == rtn[0].end_to_end.all);
  CHECK(rtn[0].layer.all > 0.01);
  for (const auto& q : rtn) {
    REQUIRE(q.integer_layer.has_value());
    CHECK(q.integer_layer->all == doctest::Approx(q.layer.all).epsilon(1e-2));
    CHECK(q.agreement.max_bound_ratio <= 1.0);
    CHECK(q.agreement.max_epilogue_ratio <= 1.0);
  }
  // The recorded inputs are layer 2's, RTN's transform being the identity.
  const auto fp2 = llama::record_inputs(c, model.layers[2], hidden[2]);
  CHECK(transformed[0] == fp2[0]);
  // The cascade: layer 1 run on RTN's layer-0 output reproduces end_to_end[1].
  const auto l0 = llama::quantize_layer(llama::Method::kRtn, model.layers[0], calibration[0], w4a4);
  const auto l1 = llama::quantize_layer(llama::Method::kRtn, model.layers[1], calibration[1], w4a4);
  const Mf x2 = llama::forward(c, model.layers[1], llama::forward(c, model.layers[0], hidden[0], l0), l1);
  CHECK(llama::group_errors(x2, hidden[2], hidden[0], massive).all == doctest::Approx(rtn[1].end_to_end.all));
  CHECK_THROWS_WITH_AS(llama::quantize_stack(c, model.layers, std::vector<Mf>(hidden.begin(), hidden.end() - 1), calibration,
                                             massive,
                                             [&](int, const llama::LayerWeights<float>& w, const llama::LinearInputs<float>& cal) {
                                               return llama::quantize_layer(llama::Method::kRtn, w, cal, w4a4);
                                             }),
                       doctest::Contains("need layers + 1 hidden states"), std::invalid_argument);
}
