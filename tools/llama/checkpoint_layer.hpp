// tools/llama/checkpoint_layer.hpp: a LLaMA layer from a Hugging
// Face checkpoint directory (config.json + safetensors, sharded or not).
//
// Tensor names are those of transformers' LlamaForCausalLM:
//   model.embed_tokens.weight                          [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight            [hidden]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight   [out, in]
//   model.layers.{i}.post_attention_layernorm.weight   [hidden]
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight    [out, in]
// Biases (attention_bias / mlp_bias = true), RoPE scaling of any type but
// "default" and partial rotary embeddings are not part of the layer here: such
// configs are rejected rather than run wrongly.
#pragma once

#include "llama_layer.hpp"

#include <oq/io.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace llama {

/// The layer's Config from a parsed config.json. Throws std::invalid_argument
/// naming the field for anything this layer does not implement.
inline Config config_from_json(const nlohmann::json& j, const std::string& source = "config.json") {
  auto fail = [&source](const std::string& what) { throw std::invalid_argument(source + ": " + what); };
  if (!j.is_object()) fail("expected a JSON object");
  auto integer = [&](const char* key, std::optional<Eigen::Index> fallback = std::nullopt) -> Eigen::Index {
    if (!j.contains(key) || j[key].is_null()) {
      if (fallback) return *fallback;
      fail(std::string("missing integer field '") + key + "'");
    }
    if (!j[key].is_number_integer()) fail(std::string("field '") + key + "' must be an integer");
    return j[key].get<Eigen::Index>();
  };
  auto number = [&](const char* key, double fallback) -> double {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_number()) fail(std::string("field '") + key + "' must be a number");
    return j[key].get<double>();
  };
  // Messages describe offending values without dump(), which recurses once
  // per nesting level of a (possibly hostile) config.
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    fail("hidden_act must be \"silu\" (LLaMA's SwiGLU), got " +
         (j["hidden_act"].is_string() ? "\"" + j["hidden_act"].get<std::string>() + "\"" : std::string("a non-string")));
  }
  // RoPE: plain RoPE only. transformers writes its settings either as
  // rope_theta + rope_scaling (older releases) or as rope_parameters
  // {rope_type, rope_theta, ...} (newer ones); a rope_type other than
  // "default" (linear, dynamic, yarn, llama3, ...) changes the frequencies.
  auto rope_type = [&](const char* key) -> std::string {
    const nlohmann::json& r = j[key];
    if (!r.is_object()) fail(std::string(key) + " must be an object or null");
    for (const char* type_key : {"rope_type", "type"}) {
      if (r.contains(type_key)) {
        if (!r[type_key].is_string()) fail(std::string(key) + "." + type_key + " must be a string");
        return r[type_key].get<std::string>();
      }
    }
    return "default";
  };
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (j.contains(key) && !j[key].is_null()) {
      const std::string type = rope_type(key);
      if (type != "default") fail(std::string(key) + " of type \"" + type + "\" is not supported (plain RoPE only)");
      const nlohmann::json& r = j[key];
      if (r.contains("partial_rotary_factor") && !(r["partial_rotary_factor"].is_number() &&
                                                    r["partial_rotary_factor"].get<double>() == 1.0)) {
        fail(std::string(key) + ".partial_rotary_factor must be 1");
      }
    }
  }
  if (j.contains("partial_rotary_factor") &&
      !(j["partial_rotary_factor"].is_number() && j["partial_rotary_factor"].get<double>() == 1.0)) {
    fail("partial_rotary_factor must be 1 (RoPE on the whole head)");
  }
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    if (j.contains(bias) && j[bias].is_boolean() && j[bias].get<bool>()) {
      fail(std::string(bias) + " = true is not supported (LLaMA has no biases)");
    }
  }
  Config c;
  c.hidden_size = integer("hidden_size");
  c.intermediate_size = integer("intermediate_size");
  c.num_attention_heads = integer("num_attention_heads");
  c.num_key_value_heads = integer("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads <= 0) fail("num_attention_heads must be > 0");
  c.head_dim = integer("head_dim", c.hidden_size / c.num_attention_heads);
  c.rms_norm_eps = number("rms_norm_eps", 1e-6);
  c.rope_theta = number("rope_theta", 10000.0);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object() && j["rope_parameters"].contains("rope_theta")) {
    const nlohmann::json& theta = j["rope_parameters"]["rope_theta"];
    if (!theta.is_number()) fail("rope_parameters.rope_theta must be a number");
    if (j.contains("rope_theta") && !j["rope_theta"].is_null() && j["rope_theta"].get<double>() != theta.get<double>()) {
      fail("rope_theta and rope_parameters.rope_theta disagree");
    }
    c.rope_theta = theta.get<double>();
  }
  c.validate();
  return c;
}

/// A checkpoint directory: the config, any layer's weights, and the hidden
/// states that enter a layer (embeddings run through the layers before it).
class CheckpointModel {
 public:
  explicit CheckpointModel(const std::filesystem::path& directory)
      : checkpoint_(directory), json_(oq::io::read_json(directory / "config.json")) {
    config_ = config_from_json(json_, (directory / "config.json").string());
    layers_ = integer_or(json_, "num_hidden_layers", 0);
    vocabulary_ = integer_or(json_, "vocab_size", 0);
    bos_ = integer_or(json_, "bos_token_id", 1);
  }

  const Config& config() const { return config_; }
  Eigen::Index num_layers() const { return layers_; }

  /// Weights of layer `index` as float.
  LayerWeights<float> layer(int index) const {
    if (index < 0 || (layers_ > 0 && index >= layers_)) {
      throw std::invalid_argument("layer must be in [0, " + std::to_string(layers_) + "), got " +
                                  std::to_string(index));
    }
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    LayerWeights<float> w;
    w.input_norm = checkpoint_.vector<float>(prefix + "input_layernorm.weight");
    w.post_norm = checkpoint_.vector<float>(prefix + "post_attention_layernorm.weight");
    for (Linear l : kAllLinears) w[l] = checkpoint_.matrix<float>(prefix + linear_module(l) + ".weight");
    w.validate(config_);
    return w;
  }

  /// bos_token_id from config.json (1, LLaMA-1/2's, when absent), then ids
  /// drawn uniformly from [0, vocab) other than BOS.
  std::vector<Eigen::Index> random_token_ids(Eigen::Index tokens, std::uint64_t seed) const {
    const Eigen::Index vocabulary = vocabulary_ > 1 ? vocabulary_ : embeddings_rows();
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<Eigen::Index> id(0, vocabulary - 2);
    std::vector<Eigen::Index> ids(static_cast<std::size_t>(tokens));
    for (std::size_t t = 0; t < ids.size(); ++t) {
      const Eigen::Index drawn = id(rng);
      ids[t] = t == 0 ? bos_ : drawn + (drawn >= bos_ ? 1 : 0);  // skip BOS
    }
    return ids;
  }

  /// The hidden states entering layer `index`: the embeddings of `ids`
  /// through layers 0 .. index−1 in float.
  Matrix<float> hidden_states_before(int index, const std::vector<Eigen::Index>& ids,
                                     const std::function<void(const std::string&)>& progress = {}) const {
    const Matrix<float> table = checkpoint_.matrix<float>("model.embed_tokens.weight");
    Matrix<float> x(static_cast<Eigen::Index>(ids.size()), config_.hidden_size);
    for (std::size_t t = 0; t < ids.size(); ++t) {
      if (ids[t] < 0 || ids[t] >= table.rows()) {
        throw std::invalid_argument("token id " + std::to_string(ids[t]) + " outside the embedding table");
      }
      x.row(static_cast<Eigen::Index>(t)) = table.row(ids[t]);
    }
    for (int l = 0; l < index; ++l) {
      if (progress) progress("running layer " + std::to_string(l) + " to reach layer " + std::to_string(index));
      x = forward(config_, layer(l), x);
    }
    return x;
  }

 private:
  static Eigen::Index integer_or(const nlohmann::json& j, const char* key, Eigen::Index fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_number_integer()) throw std::invalid_argument(std::string("config.json: ") + key + " must be an integer");
    return j[key].get<Eigen::Index>();
  }

  Eigen::Index embeddings_rows() const {
    return static_cast<Eigen::Index>(checkpoint_.info("model.embed_tokens.weight").shape.at(0));
  }

  oq::io::Checkpoint checkpoint_;
  nlohmann::json json_;
  Config config_;
  Eigen::Index layers_ = 0;
  Eigen::Index vocabulary_ = 0;
  Eigen::Index bos_ = 1;
};

}  // namespace llama
