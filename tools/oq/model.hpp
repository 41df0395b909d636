// tools/oq/model.hpp: a whole LlamaForCausalLM checkpoint for the oq tool —
// embeddings, the decoder layers (tools/llama/llama_layer.hpp), the final
// RMSNorm and the language-model head — read lazily, one layer at a time,
// from a Hugging Face directory (config.json + safetensors, sharded or not,
// F32 / F16 / BF16 tensors; oq/io/checkpoint.hpp).
//
//   logits = norm(layers(embed(ids))) · lm_headᵀ
//
// lm_head is model.embed_tokens.weight itself when config.json says
// tie_word_embeddings; a checkpoint with neither that field nor
// lm_head.weight is refused (LlamaConfig defaults to untied, and transformers
// would start such a head from random values). Anything that is not a
// LLaMA, or is quantized by another tool (quantization_config), is refused
// naming the config field.
#pragma once

#include "../llama/checkpoint_layer.hpp"
#include "../llama/llama_layer.hpp"

#include <oq/io.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace oq_tool {

using llama::Matrix;
using llama::Vector;

/// The config.json fields of the whole model (llama::Config holds a layer's).
struct ModelConfig {
  llama::Config layer;
  Eigen::Index num_layers = 0;
  Eigen::Index vocab_size = 0;
  Eigen::Index max_positions = 0;  ///< max_position_embeddings (0: unknown)
  Eigen::Index bos_token_id = -1;  ///< -1: none
  bool tie_word_embeddings = false;
};

/// Throws std::invalid_argument naming the field when `j` is not a plain
/// LLaMA config (architectures / model_type), then reads the model's fields.
inline ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source) {
  auto fail = [&source](const std::string& what) { throw std::invalid_argument(source + ": " + what); };
  if (!j.is_object()) fail("expected a JSON object");
  if (j.contains("architectures")) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.size() != 1 || !a[0].is_string() || a[0].get<std::string>() != "LlamaForCausalLM") {
      std::string got = "something else";
      if (a.is_array() && !a.empty() && a[0].is_string()) got = "\"" + a[0].get<std::string>() + "\"";
      fail("architectures must be [\"LlamaForCausalLM\"] (oq's tool runs LLaMA models only), got " + got);
    }
  } else if (!j.contains("model_type") || !j["model_type"].is_string() || j["model_type"].get<std::string>() != "llama") {
    fail("neither architectures = [\"LlamaForCausalLM\"] nor model_type = \"llama\": not a LLaMA model");
  }
  ModelConfig m;
  m.layer = llama::config_from_json(j, source);
  auto integer = [&](const char* key, Eigen::Index fallback, bool required) -> Eigen::Index {
    if (!j.contains(key) || j[key].is_null()) {
      if (required) fail(std::string("missing integer field '") + key + "'");
      return fallback;
    }
    if (!j[key].is_number_integer()) fail(std::string("field '") + key + "' must be an integer");
    return j[key].get<Eigen::Index>();
  };
  if (j.contains("quantization_config")) {
    const auto& q = j["quantization_config"];
    const bool ours = q.is_object() && q.contains("quant_method") && q["quant_method"] == "oq";
    if (!ours) {
      fail("quantization_config: this checkpoint is already quantized by another tool; oq reads full-precision "
           "models and its own quantized checkpoints");
    }
  }
  m.num_layers = integer("num_hidden_layers", 0, true);
  m.vocab_size = integer("vocab_size", 0, true);
  m.max_positions = integer("max_position_embeddings", 0, false);
  m.bos_token_id = integer("bos_token_id", -1, false);
  if (m.num_layers <= 0 || m.num_layers > 100000) {
    fail("num_hidden_layers must be in [1, 100000], got " + std::to_string(m.num_layers));
  }
  if (m.vocab_size <= 0) fail("vocab_size must be > 0, got " + std::to_string(m.vocab_size));
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) fail("field 'tie_word_embeddings' must be true or false");
    m.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  return m;
}

/// A LlamaForCausalLM checkpoint directory. Layers are read when asked for
/// (a 7B model in float is 27 GB; one layer 0.8 GB).
class LlamaModel {
 public:
  explicit LlamaModel(const std::filesystem::path& directory)
      : directory_(directory), json_(read_config(directory)), checkpoint_(directory) {
    config_ = model_config_from_json(json_, (directory / "config.json").string());
    require_tensor("model.embed_tokens.weight", config_.vocab_size, config_.layer.hidden_size);
    require_tensor("model.norm.weight", config_.layer.hidden_size, -1);
    tied_ = config_.tie_word_embeddings;
    if (!tied_ && !checkpoint_.contains("lm_head.weight")) {
      throw std::invalid_argument("model '" + directory.string() + "': tensor 'lm_head.weight' is missing and " +
                                  "config.json does not say tie_word_embeddings = true");
    }
    if (!tied_) require_tensor("lm_head.weight", config_.vocab_size, config_.layer.hidden_size);
    // Every layer the config names must be there: the last one's norm, at least.
    require_tensor(layer_prefix(num_layers() - 1) + "input_layernorm.weight", config_.layer.hidden_size, -1);
  }

  const std::filesystem::path& directory() const { return directory_; }
  const nlohmann::json& config_json() const { return json_; }
  const ModelConfig& config() const { return config_; }
  const llama::Config& layer_config() const { return config_.layer; }
  int num_layers() const { return static_cast<int>(config_.num_layers); }
  bool tied_embeddings() const { return tied_; }
  const oq::io::Checkpoint& checkpoint() const { return checkpoint_; }

  /// Decoder layer `index` as float (validated against the config).
  llama::LayerWeights<float> layer(int index) const {
    if (index < 0 || index >= num_layers()) {
      throw std::invalid_argument("layer must be in [0, " + std::to_string(num_layers()) + "), got " +
                                  std::to_string(index));
    }
    const std::string prefix = layer_prefix(index);
    llama::LayerWeights<float> w;
    w.input_norm = checkpoint_.vector<float>(prefix + "input_layernorm.weight");
    w.post_norm = checkpoint_.vector<float>(prefix + "post_attention_layernorm.weight");
    for (llama::Linear l : llama::kAllLinears) {
      w[l] = checkpoint_.matrix<float>(prefix + llama::linear_module(l) + ".weight");
    }
    w.validate(config_.layer);
    return w;
  }

  static std::string layer_prefix(int index) { return "model.layers." + std::to_string(index) + "."; }

  /// The embedding table, vocab × hidden.
  Matrix<float> embeddings() const { return checkpoint_.matrix<float>("model.embed_tokens.weight"); }
  Vector<float> final_norm() const { return checkpoint_.vector<float>("model.norm.weight"); }
  /// lm_head, vocab × hidden (the embedding table when tied).
  Matrix<float> lm_head() const {
    return tied_ ? embeddings() : checkpoint_.matrix<float>("lm_head.weight");
  }

 private:
  static nlohmann::json read_config(const std::filesystem::path& directory) {
    if (!std::filesystem::is_directory(directory)) {
      throw std::invalid_argument("model: '" + directory.string() + "' is not a directory (expected a Hugging Face "
                                  "LlamaForCausalLM directory with config.json and *.safetensors)");
    }
    if (!std::filesystem::is_regular_file(directory / "config.json")) {
      throw std::invalid_argument("model: '" + directory.string() + "' has no config.json");
    }
    return oq::io::read_json(directory / "config.json");
  }

  /// Throws naming the tensor unless it exists with shape [rows] (cols < 0) or [rows, cols].
  void require_tensor(const std::string& name, Eigen::Index rows, Eigen::Index cols) const {
    if (!checkpoint_.contains(name)) {
      throw std::invalid_argument("model '" + directory_.string() + "': tensor '" + name + "' is missing");
    }
    const auto& shape = checkpoint_.info(name).shape;
    const bool ok = cols < 0 ? (shape.size() == 1 && static_cast<Eigen::Index>(shape[0]) == rows)
                             : (shape.size() == 2 && static_cast<Eigen::Index>(shape[0]) == rows &&
                                static_cast<Eigen::Index>(shape[1]) == cols);
    if (!ok) {
      throw std::invalid_argument("model '" + directory_.string() + "': tensor '" + name + "' must be [" +
                                  std::to_string(rows) + (cols < 0 ? "" : ", " + std::to_string(cols)) +
                                  "] by config.json");
    }
  }

  std::filesystem::path directory_;
  nlohmann::json json_;
  oq::io::Checkpoint checkpoint_;
  ModelConfig config_;
  bool tied_ = false;
};

/// The rows of `table` for `ids`; throws naming the first id outside it.
inline Matrix<float> embed(const Matrix<float>& table, const std::vector<std::int32_t>& ids) {
  Matrix<float> x(static_cast<Eigen::Index>(ids.size()), table.cols());
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= table.rows()) {
      throw std::invalid_argument("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                                  " is outside the vocabulary [0, " + std::to_string(table.rows()) + ")");
    }
    x.row(static_cast<Eigen::Index>(t)) = table.row(ids[t]);
  }
  return x;
}

/// Σ over positions t < T−1 of −log softmax(logits_t)[ids[t+1]], with the
/// log-sum-exp in double: the negative log-likelihood of one sequence's
/// next tokens (T−1 predictions). `hidden` is the final norm's output.
inline double sequence_nll(const Matrix<float>& hidden, const Matrix<float>& lm_head, const std::vector<std::int32_t>& ids) {
  const Eigen::Index predictions = hidden.rows() - 1;
  if (predictions <= 0) return 0.0;
  Matrix<float> logits(predictions, lm_head.rows());
  logits.noalias() = hidden.topRows(predictions) * lm_head.transpose();
  double nll = 0.0;
  for (Eigen::Index t = 0; t < predictions; ++t) {
    const auto row = logits.row(t);
    const double m = row.maxCoeff();
    double sum = 0.0;
    for (Eigen::Index v = 0; v < row.size(); ++v) sum += std::exp(double(row(v)) - m);
    const std::int32_t next = ids[static_cast<std::size_t>(t + 1)];
    if (!std::isfinite(m) || !std::isfinite(sum)) {
      throw std::domain_error("the model's logits at position " + std::to_string(t) + " are not finite");
    }
    nll += (m + std::log(sum)) - double(row(next));
  }
  return nll;
}

}  // namespace oq_tool
