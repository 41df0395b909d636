// Tests for examples/03_small_transformer: every gradient of the hand-written
// backward against central finite differences in float64, the training
// forward against llama::forward (written separately, one sequence at a
// time), training that lowers the loss and is deterministic, W4A4 evaluation
// that equals full precision with rounding off, W4A4 with oq::cpu's integer
// kernels within the bound of integer_path.hpp, the checkpoint round trip,
// and the crossed, seeded study (study.hpp) recomputed directly.
#include "../../tools/llama/checkpoint_layer.hpp"
#include "../../examples/03_small_transformer/checkpoint.hpp"
#include "../../examples/03_small_transformer/evaluate.hpp"
#include "../../examples/03_small_transformer/model.hpp"
#include "../../examples/03_small_transformer/study.hpp"
#include "../../examples/03_small_transformer/train.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using small_lm::Batch;
using small_lm::Config;
using small_lm::Model;
using small_lm::Parameters;
using small_lm::Regularization;

Config tiny_config() {
  Config c;
  c.hidden_size = 8;
  c.num_layers = 2;
  c.num_heads = 2;
  c.intermediate_size = 12;
  c.seq_len = 6;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 50.0;
  return c;
}

// Parameters with every entry drawn at random (γ around 1), so that no
// gradient vanishes by symmetry as it might at the initialisation.
Parameters<double> random_parameters(const Config& c, std::uint64_t seed) {
  Parameters<double> p = Parameters<double>::zeros(c);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (auto& t : p.tensors()) {
    for (auto& v : t.flat()) v = normal(rng);
    if (t.name.find("norm") != std::string::npos) t.flat() += 1.0;
  }
  return p;
}

Batch random_batch(const Config& c, Eigen::Index sequences, std::uint64_t seed) {
  Batch b;
  b.sequences = sequences;
  b.seq_len = c.seq_len;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, static_cast<int>(c.vocab_size) - 1);
  for (Eigen::Index i = 0; i < sequences * (c.seq_len + 1); ++i) b.bytes.push_back(static_cast<std::uint8_t>(byte(rng)));
  return b;
}

// Central differences of the total loss for every parameter entry (the clips
// only matter with QAT, which is not differentiable, and are skipped).
// `only`: when non-empty, the names of the tensors to check (QAT: those after
// the last quantizer, where the loss is smooth).
void check_gradient(const Regularization& r, double tolerance, const std::vector<std::string>& only = {}) {
  const Config c = tiny_config();
  Parameters<double> p = random_parameters(c, 3);
  const Batch batch = random_batch(c, 2, 4);
  Model<double> model(c, r);
  if (r.qat_bits != 0) model.init_clips(p, batch);
  Parameters<double> grad = Parameters<double>::zeros(c);
  model.loss_and_gradient(p, batch, grad);
  auto params = p.tensors();
  auto grads = grad.tensors();
  constexpr double kStep = 1e-4;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].name.rfind("oq.qat.", 0) == 0) continue;
    if (!only.empty() && std::find(only.begin(), only.end(), params[i].name) == only.end()) continue;
    auto x = params[i].flat();
    const auto g = grads[i].flat();
    double worst = 0;
    Eigen::Index worst_at = -1;
    for (Eigen::Index k = 0; k < x.size(); ++k) {
      const double saved = x(k);
      auto at = [&](double offset) {
        x(k) = saved + offset;
        return model.loss(p, batch).total();
      };
      // Fourth-order central difference: truncation error O(h⁴), so that the
      // kurtosis terms' large third derivatives do not set the tolerance.
      const double numeric = (8 * (at(kStep) - at(-kStep)) - (at(2 * kStep) - at(-2 * kStep))) / (12 * kStep);
      x(k) = saved;
      const double error = std::abs(numeric - g(k)) / std::max(1e-3, std::abs(numeric));
      if (error > worst) {
        worst = error;
        worst_at = k;
      }
    }
    INFO(params[i].name << ": worst relative error " << worst << " at entry " << worst_at);
    CHECK(worst < tolerance);
  }
}

}  // namespace

TEST_CASE("small_transformer: every gradient of the backward matches central finite differences (float64)") {
  SUBCASE("cross-entropy only") { check_gradient(Regularization{}, 1e-6); }
  SUBCASE("with the kurtosis regularizer on every linear's output") {
    // λ large enough that the regularizer's gradient is a visible part of the total.
    check_gradient(Regularization{.kurtosis_lambda = 1e-2, .qat_bits = 0}, 1e-6);
  }
  SUBCASE("with 4-bit QAT: the parameters after the last quantizer") {
    check_gradient(Regularization{.kurtosis_lambda = 1e-2, .qat_bits = 4}, 1e-6,
                   {"model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"});
  }
}

TEST_CASE("small_transformer: the gradient check is not vacuous: every tensor gets a non-zero gradient") {
  const Config c = tiny_config();
  const Parameters<double> p = random_parameters(c, 5);
  Model<double> model(c, Regularization{});
  Parameters<double> grad = Parameters<double>::zeros(c);
  model.loss_and_gradient(p, random_batch(c, 2, 6), grad);
  for (const auto& t : grad.tensors()) {
    if (t.name.rfind("oq.qat.", 0) == 0) continue;
    INFO(t.name);
    CHECK(t.flat().abs().maxCoeff() > 1e-6);
  }
}

TEST_CASE("small_transformer: the training forward equals llama::forward run one sequence at a time") {
  const Config c = tiny_config();
  const Parameters<double> p = random_parameters(c, 7);
  const Batch batch = random_batch(c, 3, 8);
  Model<double> model(c, Regularization{});
  const double ce = model.loss(p, batch).cross_entropy;
  CHECK(std::abs(ce - std::log(small_lm::perplexity(c, p, batch))) < 1e-12);
}

TEST_CASE("small_transformer: the kurtosis term is λ·Σ over linears and tokens of the row kurtosis") {
  const Config c = tiny_config();
  const Parameters<double> p = random_parameters(c, 9);
  const Batch batch = random_batch(c, 2, 10);
  Model<double> model(c, Regularization{.kurtosis_lambda = 0.5, .qat_bits = 0});
  const small_lm::Loss loss = model.loss(p, batch);
  double expected = 0;
  for (const auto& cache : model.caches()) {
    for (const auto& y : cache.outputs) expected += 0.5 * oq::analysis::row_kurtosis(y).sum();
  }
  CHECK(loss.kurtosis == doctest::Approx(expected).epsilon(1e-12));
  CHECK(Model<double>(c, Regularization{}).loss(p, batch).cross_entropy == doctest::Approx(loss.cross_entropy));
}

TEST_CASE("small_transformer: QAT reads the fake-quantized inputs and trains the clips") {
  const Config c = tiny_config();
  // The initialisation's small weights: a random model with large weights is
  // so sensitive that any input rounding changes its gradients wholesale.
  Parameters<double> p = Parameters<double>::initial(c, 11);
  const Batch batch = random_batch(c, 2, 12);
  Model<double> plain(c, Regularization{});
  Model<double> qat8(c, Regularization{.kurtosis_lambda = 0, .qat_bits = 8});
  qat8.init_clips(p, batch);
  // The clips start at the inputs' full-precision [min, max].
  plain.loss(p, batch);
  for (std::size_t l = 0; l < p.layers.size(); ++l) {
    for (llama::Input in : llama::kAllInputs) {
      const auto i = static_cast<Eigen::Index>(in);
      const auto& x = plain.caches()[l].inputs[static_cast<std::size_t>(i)];
      CHECK(p.clip_lo[l](i) == x.minCoeff());
      CHECK(p.clip_hi[l](i) == x.maxCoeff());
    }
  }
  // Widened a little so that no entry is clipped (the extremes sit exactly on
  // the bounds, where the clamp sends their gradient to the clip instead).
  for (std::size_t l = 0; l < p.layers.size(); ++l) {
    const Eigen::VectorXd range = p.clip_hi[l] - p.clip_lo[l];
    p.clip_lo[l] -= 0.01 * range;
    p.clip_hi[l] += 0.01 * range;
  }
  // With the clips spanning every input, 8-bit QAT changes the loss and the
  // weights' gradients only by the rounding (a 2^−8 grid), but it does change them.
  Parameters<double> g_plain = Parameters<double>::zeros(c), g_qat = Parameters<double>::zeros(c);
  const double l_plain = plain.loss_and_gradient(p, batch, g_plain).total();
  const double l_qat = qat8.loss_and_gradient(p, batch, g_qat).total();
  CHECK(l_qat != l_plain);
  CHECK(std::abs(l_qat - l_plain) < 0.05 * std::abs(l_plain));
  auto a = g_plain.tensors(), b = g_qat.tensors();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name.rfind("oq.qat.", 0) == 0) {
      // Every clip receives a gradient from the in-range rounding terms.
      CHECK(b[i].flat().abs().minCoeff() > 0);
      CHECK(a[i].flat().abs().maxCoeff() == 0);
      continue;
    }
    INFO(a[i].name);
    const double difference = (a[i].flat() - b[i].flat()).matrix().norm();
    CHECK(difference > 0);
    CHECK(difference < 0.05 * a[i].flat().matrix().norm());
  }
}

TEST_CASE("small_transformer: deployed with its learned clips, a QAT model computes what training computed") {
  // learned_clip_perplexity runs llama::forward one sequence at a time with
  // the clips applied by LearnedClipLayer; Model applies them to the whole
  // batch. With exact weights both must give the same cross-entropy.
  const Config c = tiny_config();
  Parameters<double> p = random_parameters(c, 17);
  const Batch batch = random_batch(c, 3, 18);
  Model<double> qat(c, Regularization{.kurtosis_lambda = 0, .qat_bits = 4});
  qat.init_clips(p, batch);
  for (auto& hi : p.clip_hi) hi *= 0.7;  // and clip some entries
  for (auto& lo : p.clip_lo) lo *= 0.7;
  llama::QuantOptions exact_weights;
  exact_weights.weight_bits = 0;
  const double deployed = small_lm::learned_clip_perplexity(c, p, 4, exact_weights, batch);
  CHECK(std::log(deployed) == doctest::Approx(qat.loss(p, batch).cross_entropy).epsilon(1e-12));
  CHECK(std::abs(std::log(deployed) - Model<double>(c, Regularization{}).loss(p, batch).cross_entropy) > 1e-6);
}

TEST_CASE("small_transformer: training lowers the loss on a short text and is deterministic") {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "In the beginning God created the heaven and the earth. ";
  const std::vector<std::uint8_t> bytes(text.begin(), text.end());
  Config c;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 2;
  c.intermediate_size = 64;
  c.seq_len = 32;
  const small_lm::Corpus corpus(bytes, 0.1, c.seq_len);
  auto run = [&](const Regularization& r) {
    Parameters<float> p = Parameters<float>::initial(c, 1);
    small_lm::OptimizerOptions o;
    o.learning_rate = 1e-2;
    o.total_steps = 30;
    o.warmup_steps = 3;
    small_lm::Trainer<float> trainer(c, r, o);
    std::mt19937_64 rng(2);
    std::vector<double> losses;
    for (int step = 0; step < o.total_steps; ++step) {
      const Batch batch = corpus.training_batch(4, rng);
      double loss_at_inspect = -1;
      const small_lm::StepResult result = trainer.step(p, batch, [&](const Model<float>& model, const Parameters<float>& at) {
        CHECK(model.caches().size() == static_cast<std::size_t>(c.num_layers));  // this batch's forward
        // The parameters the loss was taken at, not yet updated (a fresh
        // model's loss on them, at the first and last step only).
        if (step == 0 || step + 1 == o.total_steps) loss_at_inspect = Model<float>(c, r).loss(at, batch).cross_entropy;
      });
      if (loss_at_inspect >= 0) CHECK(result.loss.cross_entropy == doctest::Approx(loss_at_inspect).epsilon(1e-6));
      CHECK(std::isfinite(result.gradient_norm));
      CHECK(result.gradient_norm > 0);
      CHECK(trainer.steps() == step + 1);
      // QAT: the clips set from the first batch, then kept ordered.
      if (r.qat_bits != 0) {
        for (std::size_t l = 0; l < p.clip_lo.size(); ++l) CHECK((p.clip_hi[l].array() > p.clip_lo[l].array()).all());
      }
      losses.push_back(result.loss.cross_entropy);
    }
    return std::make_pair(losses, p);
  };
  for (const Regularization r : {Regularization{}, Regularization{.kurtosis_lambda = 1e-4, .qat_bits = 4}}) {
    CAPTURE(r.qat_bits);
    const auto [losses, p] = run(r);
    // ln 256 = 5.55 at the start; a 30-step model of one repeated sentence
    // must be far below the uniform distribution.
    CHECK(losses.front() > 5.0);
    CHECK(losses.back() < 0.5 * losses.front());
    const auto [again, q] = run(r);
    CHECK(again == losses);
    auto pt = const_cast<Parameters<float>&>(p).tensors();
    auto qt = const_cast<Parameters<float>&>(q).tensors();
    for (std::size_t i = 0; i < pt.size(); ++i) CHECK((pt[i].flat() == qt[i].flat()).all());
  }
}

TEST_CASE("small_transformer: W4A4 evaluation with rounding off equals full precision for every method") {
  Config c = tiny_config();
  c.hidden_size = 16;
  c.intermediate_size = 32;
  const Parameters<double> p = random_parameters(c, 13);
  const Batch calibration = random_batch(c, 4, 14);
  const Batch validation = random_batch(c, 3, 15);
  const double full = small_lm::perplexity(c, p, validation);
  const auto inputs = small_lm::record_block_inputs(c, p, calibration);
  llama::QuantOptions off;
  off.act_bits = 0;  // oq's quantizers stop at 8 bits; "16 bits" is rounding off
  off.weight_bits = 0;
  off.block_size = 8;
  off.greedy_steps = 4;
  llama::QuantOptions w4a4 = off;
  w4a4.act_bits = 4;
  w4a4.weight_bits = 4;
  for (llama::Method m : llama::kAllMethods) {
    CAPTURE(llama::method_name(m));
    const auto exact = small_lm::quantize_model(c, p, inputs, m, off);
    CHECK(small_lm::quantized_perplexity(c, p, exact, validation) == doctest::Approx(full).epsilon(1e-10));
    const auto quantized = small_lm::quantize_model(c, p, inputs, m, w4a4);
    CHECK(small_lm::quantized_perplexity(c, p, quantized, validation) != doctest::Approx(full).epsilon(1e-6));
  }
}

TEST_CASE("small_transformer: W4A4 with oq::cpu's integer kernels agrees with fake quantization within the bound") {
  Config c = tiny_config();
  c.hidden_size = 16;
  c.intermediate_size = 32;
  const Parameters<float> p = random_parameters(c, 13).cast<float>();
  const Batch calibration = random_batch(c, 4, 14);
  const Batch validation = random_batch(c, 3, 15);
  const auto inputs = small_lm::record_block_inputs(c, p, calibration);
  llama::QuantOptions o;
  o.block_size = 8;
  o.greedy_steps = 4;
  const llama::Config lc = c.layer_config();
  const Eigen::Index outputs_per_token = lc.q_size() + 2 * lc.kv_size() + 2 * lc.hidden_size + 2 * lc.intermediate_size;
  for (llama::Method m : llama::kAllMethods) {
    CAPTURE(llama::method_name(m));
    const auto blocks = small_lm::quantize_model(c, p, inputs, m, o);
    const double fake = small_lm::quantized_perplexity(c, p, blocks, validation);
    llama::PathAgreement agreement;
    const double integer = small_lm::integer_perplexity(c, p, blocks, validation, &agreement);
    // Every output of every linear of both blocks on every validation token.
    CHECK(agreement.outputs == validation.sequences * validation.seq_len * c.num_layers * outputs_per_token);
    CHECK(agreement.max_bound_ratio <= 1.0);
    CHECK(agreement.max_epilogue_ratio <= 1.0);
    if (m != llama::Method::kDuQuant && m != llama::Method::kDuQuantSmooth) CHECK(agreement.differing_codes == 0);
    CHECK(integer == doctest::Approx(fake).epsilon(1e-4));
  }
  // Without 4-bit weights there is nothing for cpu::gemm to read: refused by name.
  o.weight_bits = 8;
  const auto w8 = small_lm::quantize_model(c, p, inputs, llama::Method::kRtn, o);
  CHECK_THROWS_WITH_AS(small_lm::integer_perplexity(c, p, w8, validation),
                       doctest::Contains("no packed INT4 weight for q_proj"), std::invalid_argument);
}

TEST_CASE("small_transformer: a saved model loads back bit for bit, and 02_llama_layer reads its layers") {
  const Config c = tiny_config();
  Parameters<float> p = random_parameters(c, 16).cast<float>();
  const Regularization r{.kurtosis_lambda = 1e-5, .qat_bits = 4};
  const auto dir = std::filesystem::temp_directory_path() / "oq_small_transformer_test";
  std::filesystem::remove_all(dir);
  small_lm::save_model(dir, c, r, p);
  small_lm::LoadedModel m = small_lm::load_model(dir);
  CHECK(m.config.hidden_size == c.hidden_size);
  CHECK(m.config.num_layers == c.num_layers);
  CHECK(m.config.seq_len == c.seq_len);
  CHECK(m.config.rope_theta == c.rope_theta);
  CHECK(m.regularization.kurtosis_lambda == r.kurtosis_lambda);
  CHECK(m.regularization.qat_bits == r.qat_bits);
  auto saved = p.tensors(), loaded = m.parameters.tensors();
  REQUIRE(saved.size() == loaded.size());
  for (std::size_t i = 0; i < saved.size(); ++i) {
    INFO(saved[i].name);
    CHECK((saved[i].flat() == loaded[i].flat()).all());
  }
  const llama::CheckpointModel other(dir);
  const llama::LayerWeights<float> layer1 = other.layer(1);
  for (llama::Linear l : llama::kAllLinears) CHECK(layer1[l] == p.layers[1][l]);
  std::filesystem::remove_all(dir);
}

TEST_CASE("small_transformer: a kept model is reused only when its training record matches, field by field") {
  const Config c = tiny_config();
  Parameters<float> p = random_parameters(c, 17).cast<float>();
  const auto root = std::filesystem::temp_directory_path() / "oq_small_transformer_record_test";
  const auto dir = root / "seed3" / "kurtosis";
  std::filesystem::remove_all(root);
  // Values whose JSON text must read back exactly: a decimal fraction, a
  // small exponent, 0.0 and the largest seed.
  const nlohmann::json record = {{"variant", "kurtosis"},     {"seed", std::numeric_limits<std::uint64_t>::max()},
                                 {"steps", 3000},             {"learning_rate", 3e-3},
                                 {"kurtosis_lambda", 1e-6},   {"final", 0.0},
                                 {"adamw", {0.9, 0.95, 1e-8}}, {"text_fnv1a64", "00ff"}};
  // Nothing kept yet, and a model saved without its record (a run killed
  // by an older version between the two writes): both mean "train it".
  CHECK_FALSE(small_lm::load_if_trained_as(dir, record).has_value());
  small_lm::save_model(dir, c, Regularization{}, p);
  CHECK_FALSE(small_lm::trained_as(dir, record));
  // Keeping replaces that recordless directory, through a staging directory
  // that does not stay behind.
  small_lm::keep_trained_model(dir, c, Regularization{.kurtosis_lambda = 1e-6}, p, record);
  std::size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.parent_path())) {
    CHECK(e.path().filename() == "kurtosis");
    ++entries;
  }
  CHECK(entries == 1);
  std::optional<small_lm::LoadedModel> kept = small_lm::load_if_trained_as(dir, record);
  REQUIRE(kept.has_value());
  CHECK(kept->regularization.kurtosis_lambda == 1e-6);
  auto saved = p.tensors(), loaded = kept->parameters.tensors();
  REQUIRE(saved.size() == loaded.size());
  for (std::size_t i = 0; i < saved.size(); ++i) CHECK((saved[i].flat() == loaded[i].flat()).all());
  // A second process keeping the same model finds it kept: no error, one copy.
  CHECK_NOTHROW(small_lm::keep_trained_model(dir, c, Regularization{}, p, record));
  entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.parent_path())) ++entries;
  CHECK(entries == 1);
  // Every differing, missing or extra field is refused, naming it and both values.
  auto refused = [&](const nlohmann::json& asked) {
    try {
      (void)small_lm::load_if_trained_as(dir, asked);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  nlohmann::json other_steps = record;
  other_steps["steps"] = 300;
  CHECK(refused(other_steps).find("'steps' is 3000 there, this run asks for 300") != std::string::npos);
  nlohmann::json other_rate = record;
  other_rate["learning_rate"] = 3.0000000000000001e-3 * (1 + 1e-15);
  CHECK(refused(other_rate).find("'learning_rate' is 0.003 there") != std::string::npos);
  nlohmann::json extra = record;
  extra["batch"] = 16;
  CHECK(refused(extra).find("'batch' is not recorded there") != std::string::npos);
  nlohmann::json missing = record;
  missing.erase("text_fnv1a64");
  CHECK(refused(missing).find("'text_fnv1a64' is \"00ff\" there, this run does not record it") != std::string::npos);
  // Another process kept a model with other settings in the meantime: never replaced.
  CHECK_THROWS_AS(small_lm::keep_trained_model(dir, c, Regularization{}, p, other_steps), std::invalid_argument);
  CHECK(small_lm::trained_as(dir, record));
  CHECK_THROWS_AS(small_lm::keep_trained_model(root / "x", c, Regularization{}, p, nlohmann::json::array()),
                  std::invalid_argument);
  { std::ofstream(dir / "training.json") << "[1, 2]"; }
  CHECK(refused(record).find("must be a JSON object") != std::string::npos);
  // The text's fingerprint is FNV-1a 64 of its bytes: the published test
  // vectors ("", "a", "foobar"), and one byte changed in a long text is
  // another model.
  auto fingerprint = [](std::string_view t) {
    return small_lm::text_fingerprint({reinterpret_cast<const std::uint8_t*>(t.data()), t.size()});
  };
  CHECK(fingerprint("") == "cbf29ce484222325");
  CHECK(fingerprint("a") == "af63dc4c8601ec8c");
  CHECK(fingerprint("foobar") == "85944171f73967e8");
  std::string long_text;
  for (int i = 0; i < 70000; ++i) long_text += static_cast<char>((i * 7919) % 256);
  const std::string before = fingerprint(long_text);
  long_text[65536] = static_cast<char>(long_text[65536] ^ 1);
  CHECK(fingerprint(long_text) != before);
  std::filesystem::remove_all(root);
}

TEST_CASE("small_transformer: bad input is refused with a message naming it") {
  const Config c = tiny_config();
  CHECK_THROWS_WITH_AS(Model<float>(c, Regularization{.kurtosis_lambda = -1, .qat_bits = 0}),
                       doctest::Contains("kurtosis_lambda"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Model<float>(c, Regularization{.kurtosis_lambda = 0, .qat_bits = 1}),
                       doctest::Contains("qat_bits"), std::invalid_argument);
  Config bad = c;
  bad.num_heads = 3;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("num_heads"), std::invalid_argument);
  Model<double> model(c, Regularization{});
  const Parameters<double> p = random_parameters(c, 1);
  Config longer = c;
  longer.seq_len = c.seq_len + 1;
  CHECK_THROWS_WITH_AS(model.loss(p, random_batch(longer, 1, 1)), doctest::Contains("seq_len"),
                       std::invalid_argument);
  Config small_vocabulary = c;
  small_vocabulary.vocab_size = 100;  // byte tokens up to 255 would index past it
  CHECK_THROWS_WITH_AS(small_vocabulary.validate(), doctest::Contains("vocab_size"), std::invalid_argument);
  Config negative = c;
  negative.seq_len = -4;
  CHECK_THROWS_WITH_AS(Model<float>(negative, Regularization{}), doctest::Contains("seq_len"), std::invalid_argument);
  Parameters<double> wrong_grad = Parameters<double>::zeros(c);
  wrong_grad.lm_head.resize(3, 3);
  CHECK_THROWS_WITH_AS(model.loss_and_gradient(p, random_batch(c, 1, 1), wrong_grad), doctest::Contains("grad"),
                       std::invalid_argument);
  Parameters<double> empty_grad;
  CHECK_THROWS_AS(model.loss_and_gradient(p, random_batch(c, 1, 1), empty_grad), std::invalid_argument);
  Model<double> qat(c, Regularization{.kurtosis_lambda = 0, .qat_bits = 4});
  CHECK_THROWS_WITH_AS(qat.loss(p, random_batch(c, 1, 1)), doctest::Contains("init_clips"), std::invalid_argument);
  small_lm::OptimizerOptions bad_beta;
  bad_beta.beta1 = 1.0;
  CHECK_THROWS_WITH_AS(small_lm::AdamW<float>(c, bad_beta), doctest::Contains("beta1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(small_lm::Corpus(std::vector<std::uint8_t>(10, 'a'), 0.05, c.seq_len),
                       doctest::Contains("too short"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(small_lm::Corpus(std::vector<std::uint8_t>(1000, 'a'), 1.5, c.seq_len),
                       doctest::Contains("validation_fraction"), std::invalid_argument);
}

TEST_CASE("small_transformer: the corpus holds out its tail and validation windows tile it") {
  std::vector<std::uint8_t> bytes(1000);
  // Training part: 0..99 cyclic; validation tail: 200..249 cyclic.
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i < 800 ? i % 100 : 200 + i % 50);
  const small_lm::Corpus corpus(bytes, 0.2, 9);
  CHECK(corpus.training_bytes() == 800);
  const Batch v = corpus.validation_batch(1000);
  CHECK(v.sequences == (200 - 1) / 9);
  for (Eigen::Index s = 0; s < v.sequences; ++s) {
    for (Eigen::Index t = 0; t < 9; ++t) CHECK(v.target(s, t) == bytes[static_cast<std::size_t>(800 + s * 9 + t + 1)]);
  }
  std::mt19937_64 rng(0);
  const Batch b = corpus.training_batch(50, rng);
  for (Eigen::Index s = 0; s < b.sequences; ++s) {
    // Every window lies in the training part, contiguous.
    for (Eigen::Index t = 0; t < 9; ++t) {
      CHECK(b.input(s, t) < 100);
      CHECK(b.target(s, t) == (b.input(s, t) + 1) % 100);
    }
  }
}

// The crossed, seeded study (examples/03_small_transformer/study.hpp) on a
// 16-wide model trained for ten steps per variant and seed.
namespace {

struct StudySetup {
  Config c = study_config();
  small_lm::Corpus corpus{text(), 0.2, study_config().seq_len};
  small_lm::study::StudyInputs in;
  small_lm::study::StudyOptions options;

  static Config study_config() {
    Config c;
    c.hidden_size = 16;
    c.num_layers = 2;
    c.num_heads = 2;
    c.intermediate_size = 32;
    c.seq_len = 16;
    return c;
  }

  static std::vector<std::uint8_t> text() {
    std::string t;
    for (int i = 0; i < 30; ++i) t += "In the beginning God created the heaven and the earth. And the earth was. ";
    return {t.begin(), t.end()};
  }

  StudySetup() {
    in.config = c;
    in.validation = corpus.validation_batch(4);
    in.variants = {"baseline", "kurtosis"};
    in.seeds = {3, 4};
    in.train = [this](const std::string& variant, std::uint64_t seed) { return train(variant, seed); };
    in.calibration = [this](std::uint64_t seed) {
      std::mt19937_64 rng(seed + 2);
      return corpus.training_batch(4, rng);
    };
    options.quant.block_size = 8;
    options.quant.greedy_steps = 4;
    options.quant.lwc.steps = 3;  // LWC's AdamW (500 steps by default) would take most of the test's time
    options.bootstrap.resamples = 200;
  }

  // Ten AdamW steps; a variant whose name starts with "kurtosis" trains with
  // the regularizer on ("kurtosis2" trains exactly as "kurtosis"), one that
  // ends in "+qat" with 4-bit QAT of the linear inputs too (clips from the
  // first batch, as Trainer sets them).
  static Regularization regularization(const std::string& variant) {
    Regularization r;
    if (variant.rfind("kurtosis", 0) == 0) r.kurtosis_lambda = 1e-4;
    if (variant.ends_with("+qat")) r.qat_bits = 4;
    return r;
  }

  Parameters<float> train(const std::string& variant, std::uint64_t seed) const {
    const Regularization r = regularization(variant);
    Model<float> model(c, r);
    Parameters<float> p = Parameters<float>::initial(c, seed);
    Parameters<float> grad = Parameters<float>::zeros(c);
    small_lm::OptimizerOptions o;
    o.learning_rate = 1e-2;
    o.total_steps = 10;
    o.warmup_steps = 1;
    small_lm::AdamW<float> optimizer(c, o);
    std::mt19937_64 rng(seed + 1);
    for (int step = 0; step < o.total_steps; ++step) {
      const small_lm::Batch batch = corpus.training_batch(4, rng);
      if (step == 0 && r.qat_bits != 0) model.init_clips(p, batch);
      model.loss_and_gradient(p, batch, grad);
      optimizer.step(p, grad, step);
      model.project_clips(p);
    }
    return p;
  }
};

}  // namespace

TEST_CASE("small_transformer study: perplexities as computed directly, Holm's verdicts, CSV and markdown complete") {
  const StudySetup s;
  const auto r = small_lm::study::run_study(s.in, s.options);
  REQUIRE(r.variants.size() == 2);
  const std::size_t rows = llama::all_method_specs().size() + 1;
  const double tokens = 4.0 * static_cast<double>(s.c.seq_len);
  // Full precision and RTN of the first variant: exp(the seeds' mean of Σ NLL / tokens),
  // through the default run's own evaluation (perplexity, quantize_model).
  double fp = 0, rtn = 0;
  std::vector<double> fp_seed;
  for (std::uint64_t seed : s.in.seeds) {
    const Parameters<float> p = s.train("baseline", seed);
    const double f = std::log(small_lm::perplexity(s.c, p, s.in.validation)) * tokens;
    fp += f / 2;
    fp_seed.push_back(std::exp(f / tokens));
    llama::QuantOptions q = s.options.quant;
    q.seed = seed;
    const auto inputs = small_lm::record_block_inputs(s.c, p, s.in.calibration(seed));
    const auto blocks = small_lm::quantize_model(s.c, p, inputs, llama::Method::kRtn, q);
    rtn += std::log(small_lm::quantized_perplexity(s.c, p, blocks, s.in.validation)) * tokens / 2;
  }
  const auto& first = r.variants[0];
  REQUIRE(first.methods.size() == rows);
  CHECK_FALSE(first.methods[0].spec.has_value());
  CHECK(first.methods[0].perplexity.estimate == doctest::Approx(std::exp(fp / tokens)).epsilon(1e-9));
  CHECK(first.methods[0].seed_min == doctest::Approx(std::min(fp_seed[0], fp_seed[1])).epsilon(1e-9));
  CHECK(first.methods[0].seed_max == doctest::Approx(std::max(fp_seed[0], fp_seed[1])).epsilon(1e-9));
  CHECK(fp_seed[0] != fp_seed[1]);  // the seeds train different models
  const auto& rtn_row = first.methods[1];  // the specs in order: RTN first
  REQUIRE(rtn_row.spec == llama::MethodSpec{});
  CHECK(rtn_row.perplexity.estimate == doctest::Approx(std::exp(rtn / tokens)).epsilon(1e-9));
  // The baseline against itself: 0 in every replicate, p = 1, never resolved.
  CHECK(rtn_row.vs_baseline->lower == 0.0);
  CHECK(rtn_row.vs_baseline->upper == 0.0);
  CHECK(rtn_row.vs_baseline->p_zero == 1.0);
  CHECK_FALSE(rtn_row.resolved_vs_baseline);
  for (const auto& v : r.variants) {
    std::vector<double> p_baseline, p_variant;
    std::vector<bool> resolved_baseline, resolved_variant;
    for (const auto& m : v.methods) {
      INFO(v.variant << " " << m.name());
      CHECK(m.perplexity.lower <= m.perplexity.upper);
      CHECK(m.perplexity.lower > 1.0);  // exp of a mean NLL over bytes no model predicts with certainty
      CHECK(m.seed_min <= m.seed_max);
      CHECK(m.vs_baseline.has_value() == m.spec.has_value());
      CHECK(m.vs_first_variant.has_value() == (&v != &r.variants.front()));
      if (m.vs_baseline) {
        CHECK(small_lm::study::verdict(m.vs_baseline, m.resolved_vs_baseline) ==
              (m.resolved_vs_baseline && m.vs_baseline->upper < 0   ? "better"
               : m.resolved_vs_baseline && m.vs_baseline->lower > 0 ? "worse"
                                                                    : "not resolved"));
        if (*m.spec != llama::MethodSpec{}) {
          p_baseline.push_back(m.vs_baseline->p_zero);
          resolved_baseline.push_back(m.resolved_vs_baseline);
        }
      }
      if (m.vs_first_variant) {
        p_variant.push_back(m.vs_first_variant->p_zero);
        resolved_variant.push_back(m.resolved_vs_first_variant);
      }
      if (m.spec && v.best && *m.spec == *v.best) CHECK(m.tied_with_best);
    }
    // Each family's flags are Holm's procedure at 5% on its p-values.
    CHECK(llama::stats::holm(p_baseline, 0.05) == resolved_baseline);
    CHECK(llama::stats::holm(p_variant, 0.05) == resolved_variant);
  }
  std::ostringstream csv, md;
  small_lm::study::write_csv(csv, r);
  small_lm::study::write_markdown(md, r);
  std::istringstream lines(csv.str());
  std::string line;
  std::size_t count = 0;
  while (std::getline(lines, line)) {
    CHECK(std::count(line.begin(), line.end(), ',') == 23);
    ++count;
  }
  CHECK(count == 1 + 2 * rows);
  CHECK(md.str().find("| full precision |") != std::string::npos);
  CHECK(md.str().find("Holm") != std::string::npos);
}

TEST_CASE("small_transformer study: a variant trained as the first differs by exactly 0; nothing rounded, exact; refusals") {
  StudySetup s;
  s.in.variants = {"kurtosis", "kurtosis2"};  // trained identically
  s.in.seeds = {5};
  s.options.quant.act_bits = 0;
  s.options.quant.weight_bits = 0;
  s.options.bootstrap.resamples = 50;
  const auto r = small_lm::study::run_study(s.in, s.options);
  const double fp = r.variants[0].methods[0].perplexity.estimate;
  for (const auto& m : r.variants[1].methods) {
    INFO(m.name());
    CHECK(m.vs_first_variant->lower == 0.0);
    CHECK(m.vs_first_variant->upper == 0.0);
    CHECK_FALSE(m.resolved_vs_first_variant);
    CHECK(m.perplexity.estimate == doctest::Approx(fp).epsilon(1e-5));  // float forward, transforms folded
  }
  auto refused = [](small_lm::study::StudyInputs in, small_lm::study::StudyOptions o, const char* what) {
    CHECK_THROWS_WITH_AS(small_lm::study::run_study(in, o), doctest::Contains(what), std::invalid_argument);
  };
  auto in = s.in;
  in.seeds.clear();
  refused(in, s.options, "seeds");
  in.seeds = {5, 5};
  refused(in, s.options, "distinct");
  in = s.in;
  in.variants.clear();
  refused(in, s.options, "variants");
  in = s.in;
  in.validation = s.corpus.validation_batch(1);
  refused(in, s.options, "at least 2");
  in = s.in;
  in.train = nullptr;
  refused(in, s.options, "train");
  auto o = s.options;
  o.quant.gptq = true;
  refused(s.in, o, "gptq");
  o = s.options;
  o.specs = {llama::MethodSpec{}, llama::MethodSpec{}};
  refused(s.in, o, "twice");
}

TEST_CASE("small_transformer study: a QAT variant's own learned clips are one more row, as evaluated directly") {
  StudySetup s;
  s.in.variants = {"baseline", "kurtosis+qat"};
  s.in.seeds = {3, 4};
  s.in.qat_bits = [](const std::string& variant) { return StudySetup::regularization(variant).qat_bits; };
  const llama::MethodSpec clip{.weights = llama::WeightQuant::kClipSearch};
  s.options.specs = {llama::MethodSpec{}, clip};  // RTN and clip: a family of two beside the clips' row
  s.options.bootstrap.resamples = 200;
  const auto r = small_lm::study::run_study(s.in, s.options);
  REQUIRE(r.variants.size() == 2);
  for (const auto& v : r.variants) {
    REQUIRE(v.methods.size() == 4);  // full precision, RTN, clip, learned clips
    CHECK(v.methods[3].learned_clips);
    CHECK(v.methods[3].name() == "learned clips (QAT)");
  }
  // The baseline trained no clips: no figures for it, and nothing to pair with.
  const auto& absent = r.variants[0].methods[3];
  CHECK_FALSE(absent.evaluated);
  CHECK_FALSE(absent.vs_baseline.has_value());
  const auto& clips = r.variants[1].methods[3];
  REQUIRE(clips.evaluated);
  CHECK_FALSE(clips.spec.has_value());
  REQUIRE(clips.vs_baseline.has_value());
  // The baseline has no clips to pair with: the clips are paired with its
  // baseline method (RTN) instead, and are in that Holm family.
  REQUIRE(clips.vs_first_variant.has_value());
  // (The paired estimate is a − b on the full sample: the same doubles.)
  CHECK(clips.vs_first_variant->estimate == clips.perplexity.estimate - r.variants[0].methods[1].perplexity.estimate);
  // exp(the seeds' mean Σ NLL / tokens), each seed's through the default
  // run's evaluation, with the clips as trained (Parameters::clip_lo/hi).
  const double tokens = 4.0 * static_cast<double>(s.c.seq_len);
  double sum = 0, rtn = 0;
  std::vector<double> per_seed;
  for (std::uint64_t seed : s.in.seeds) {
    const Parameters<float> p = s.train("kurtosis+qat", seed);
    llama::QuantOptions q = s.options.quant;
    q.seed = seed;
    const double ppl = small_lm::learned_clip_perplexity(s.c, p, 4, q, s.in.validation);
    per_seed.push_back(ppl);
    sum += std::log(ppl) * tokens / 2;
    const auto inputs = small_lm::record_block_inputs(s.c, p, s.in.calibration(seed));
    const auto blocks = small_lm::quantize_model(s.c, p, inputs, llama::Method::kRtn, q);
    rtn += std::log(small_lm::quantized_perplexity(s.c, p, blocks, s.in.validation)) * tokens / 2;
  }
  CHECK(per_seed[0] != per_seed[1]);
  CHECK(clips.perplexity.estimate == doctest::Approx(std::exp(sum / tokens)).epsilon(1e-9));
  CHECK(clips.seed_min == doctest::Approx(std::min(per_seed[0], per_seed[1])).epsilon(1e-9));
  CHECK(clips.seed_max == doctest::Approx(std::max(per_seed[0], per_seed[1])).epsilon(1e-9));
  CHECK(clips.vs_baseline->estimate == doctest::Approx(std::exp(sum / tokens) - std::exp(rtn / tokens)).epsilon(1e-9));
  // Holm's family against RTN: clip and the clips' row, in that order.
  const auto& qat = r.variants[1];
  const std::vector<double> family{qat.methods[2].vs_baseline->p_zero, clips.vs_baseline->p_zero};
  const std::vector<bool> resolved{qat.methods[2].resolved_vs_baseline, clips.resolved_vs_baseline};
  CHECK(llama::stats::holm(family, 0.05) == resolved);
  // The baseline variant's family holds clip alone.
  const std::vector<double> family0{r.variants[0].methods[2].vs_baseline->p_zero};
  CHECK(llama::stats::holm(family0, 0.05).front() == r.variants[0].methods[2].resolved_vs_baseline);
  // The best is the lowest estimate among the quantized rows, the clips' included.
  double lowest = std::numeric_limits<double>::infinity();
  for (std::size_t row = 1; row < 4; ++row) lowest = std::min(lowest, qat.methods[row].perplexity.estimate);
  CHECK(qat.best.has_value() == (clips.perplexity.estimate != lowest));
  for (std::size_t row = 1; row < 4; ++row) {
    if (qat.methods[row].perplexity.estimate == lowest) CHECK(qat.methods[row].tied_with_best);
  }
  std::ostringstream csv, md;
  small_lm::study::write_csv(csv, r);
  small_lm::study::write_markdown(md, r);
  const std::string table = csv.str();
  std::istringstream csv_lines(table);
  std::string line;
  std::size_t count = 0;
  while (std::getline(csv_lines, line)) {
    CHECK(std::count(line.begin(), line.end(), ',') == 23);
    ++count;
  }
  CHECK(count == 1 + 3 + 4);  // the baseline's absent row: no line
  CHECK(table.find("kurtosis+qat,learned clips (QAT),") != std::string::npos);
  CHECK(table.find(",baseline:RTN,") != std::string::npos);  // whom the clips' Δ baseline is against
  CHECK(md.str().find("Its Δ baseline is against baseline's RTN.") != std::string::npos);
  {
    std::vector<double> p_variant;
    std::vector<bool> resolved_variant;
    for (const auto& m : qat.methods) {
      if (!m.vs_first_variant) continue;
      p_variant.push_back(m.vs_first_variant->p_zero);
      resolved_variant.push_back(m.resolved_vs_first_variant);
    }
    CHECK(p_variant.size() == 4);
    CHECK(llama::stats::holm(p_variant, 0.05) == resolved_variant);
  }
  CHECK(table.find("baseline,learned clips (QAT),") == std::string::npos);
  // Every table line has the same cells: 1 + 2 (baseline) + 3 (kurtosis+qat).
  std::istringstream md_lines(md.str());
  std::size_t table_lines = 0;
  while (std::getline(md_lines, line)) {
    if (line.empty() || line.front() != '|') continue;
    CHECK(std::count(line.begin(), line.end(), '|') == 7);
    ++table_lines;
  }
  CHECK(table_lines == 2 + 4);
  CHECK(md.str().find("| learned clips (QAT) | – | – | **") != std::string::npos);
  // A first variant with QAT and a later one without: the later one's cells
  // are three dashes, and the first has no comparison with a first variant.
  s.in.variants = {"baseline+qat", "baseline"};
  s.in.seeds = {3};
  s.options.specs = {llama::MethodSpec{}};
  const auto flipped = small_lm::study::run_study(s.in, s.options);
  CHECK(flipped.variants[0].methods[2].evaluated);
  CHECK_FALSE(flipped.variants[1].methods[2].evaluated);
  std::ostringstream md2;
  small_lm::study::write_markdown(md2, flipped);
  CHECK(md2.str().find(" – | – | – |") != std::string::npos);
  // Bits a quantizer cannot take, or other than the cross's, are refused naming the variant.
  s.in.qat_bits = [](const std::string& variant) { return variant == "baseline" ? 0 : 9; };
  CHECK_THROWS_WITH_AS(small_lm::study::run_study(s.in, s.options), doctest::Contains("baseline+qat"),
                       std::invalid_argument);
  s.in.qat_bits = [](const std::string& variant) { return variant == "baseline" ? 0 : 8; };
  CHECK_THROWS_WITH_AS(small_lm::study::run_study(s.in, s.options), doctest::Contains("act_bits = 4"),
                       std::invalid_argument);
  // A variant said to be QAT whose model has no clips: refused, naming it.
  s.in.variants = {"baseline"};
  s.in.qat_bits = [](const std::string&) { return 4; };
  CHECK_THROWS_WITH_AS(small_lm::study::run_study(s.in, s.options), doctest::Contains("no learned clips"),
                       std::invalid_argument);
}
