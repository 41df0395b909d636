// examples/03_small_transformer/checkpoint.hpp: a trained model saved as a
// Hugging Face LlamaForCausalLM directory (config.json + model.safetensors),
// so that transformers, ../02_llama_layer (--checkpoint DIR) and this example
// (--load DIR) can all read it again without retraining.
//
// Tensor names are transformers' (model.embed_tokens.weight,
// model.layers.{i}.self_attn.q_proj.weight, ..., model.norm.weight,
// lm_head.weight), stored as F32. The learned QAT clips are stored too, as
// oq.qat.layers.{i}.clip_lo / clip_hi ([4], indexed by llama::Input); config.json
// carries the regularization under "oq_training", which transformers ignores.
#pragma once

#include "../../tools/llama/checkpoint_layer.hpp"
#include "../../tools/oq/staging.hpp"
#include "model.hpp"

#include <oq/io.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

namespace small_lm {

/// Writes `dir`/config.json and `dir`/model.safetensors (creating `dir`).
inline void save_model(const std::filesystem::path& dir, const Config& c, const Regularization& r,
                       Parameters<float>& p) {
  std::filesystem::create_directories(dir);
  nlohmann::json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_heads;
  j["max_position_embeddings"] = c.seq_len;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = false;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = "float32";
  j["oq_training"] = {{"kurtosis_lambda", r.kurtosis_lambda}, {"qat_bits", r.qat_bits}};
  oq_tool::write_json_file(dir / "config.json", j);
  oq::io::SafetensorsWriter writer;
  for (const auto& t : p.tensors()) {
    const Eigen::Map<const Matrix<float>> m(t.data, t.rows, t.cols);
    writer.add(t.name, m, oq::io::DType::kF32);
  }
  writer.write(dir / "model.safetensors");
}

/// A saved model: its config, regularization and parameters.
struct LoadedModel {
  Config config;
  Regularization regularization;
  Parameters<float> parameters;
};

/// Reads a directory written by save_model (or any LlamaForCausalLM
/// checkpoint of this shape: without QAT clips, they stay empty).
inline LoadedModel load_model(const std::filesystem::path& dir) {
  const nlohmann::json j = oq::io::read_json(dir / "config.json");
  const llama::Config lc = llama::config_from_json(j, (dir / "config.json").string());
  auto integer = [&j](const char* key) -> Eigen::Index {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      throw std::invalid_argument(std::string("config.json: missing integer field '") + key + "'");
    }
    return j[key].get<Eigen::Index>();
  };
  LoadedModel m;
  m.config.vocab_size = integer("vocab_size");
  m.config.hidden_size = lc.hidden_size;
  m.config.intermediate_size = lc.intermediate_size;
  m.config.num_layers = integer("num_hidden_layers");
  m.config.num_heads = lc.num_attention_heads;
  m.config.seq_len = integer("max_position_embeddings");
  m.config.rms_norm_eps = lc.rms_norm_eps;
  m.config.rope_theta = lc.rope_theta;
  if (lc.num_key_value_heads != lc.num_attention_heads || lc.head_dim * lc.num_attention_heads != lc.hidden_size) {
    throw std::invalid_argument("config.json: this model has no grouped KV heads and head_dim = hidden/heads");
  }
  if (j.value("tie_word_embeddings", false)) throw std::invalid_argument("config.json: tied embeddings are not supported");
  m.config.validate();
  if (j.contains("oq_training")) {
    const nlohmann::json& t = j["oq_training"];
    if (!t.is_object() || !t.value("kurtosis_lambda", nlohmann::json(0.0)).is_number() ||
        !t.value("qat_bits", nlohmann::json(0)).is_number_integer()) {
      throw std::invalid_argument("config.json: oq_training must be {\"kurtosis_lambda\": number, \"qat_bits\": integer}");
    }
    m.regularization.kurtosis_lambda = t.value("kurtosis_lambda", 0.0);
    m.regularization.qat_bits = t.value("qat_bits", 0);
  }
  const oq::io::Checkpoint checkpoint(dir);
  m.parameters = Parameters<float>::zeros(m.config);
  for (const auto& t : m.parameters.tensors()) {
    const bool clip = t.name.rfind("oq.qat.", 0) == 0;
    if (clip && !checkpoint.contains(t.name)) continue;
    const Matrix<float> stored = t.cols == 1 ? Matrix<float>(checkpoint.vector<float>(t.name))
                                             : checkpoint.matrix<float>(t.name);
    if (stored.rows() != t.rows || stored.cols() != t.cols) {
      throw std::invalid_argument("checkpoint tensor '" + t.name + "' must be " + std::to_string(t.rows) + " x " +
                                  std::to_string(t.cols) + ", got " + std::to_string(stored.rows()) + " x " +
                                  std::to_string(stored.cols()));
    }
    Eigen::Map<Matrix<float>>(t.data, t.rows, t.cols) = stored;
  }
  return m;
}

/// FNV-1a, 64 bits, of a text's bytes (Corpus::bytes(): the bytes the
/// model was trained on), as 16 hex digits: names the training text in a
/// training record (a different text must never reuse a model; collisions
/// between two texts a user trains on are not a concern at 64 bits).
inline std::string text_fingerprint(std::span<const std::uint8_t> bytes) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<std::size_t>(i)] = kHex[h & 15];
  return out;
}

/// Whether `dir` holds a model trained as `expected` says: false when `dir`
/// holds no training.json (never trained, or killed before the record, see
/// keep_trained_model); true when it equals `expected`; std::invalid_argument
/// naming the first field that differs otherwise. A model trained with other
/// settings is never substituted, nor overwritten: the caller decides.
inline bool trained_as(const std::filesystem::path& dir, const nlohmann::json& expected) {
  const std::filesystem::path file = dir / "training.json";
  if (!std::filesystem::exists(file)) return false;
  const nlohmann::json stored = oq::io::read_json(file);
  if (!stored.is_object()) {
    throw std::invalid_argument("'" + file.string() + "' must be a JSON object (a training record), got " +
                                std::string(stored.type_name()));
  }
  if (stored == expected) return true;
  std::string field;
  for (const auto& [key, value] : expected.items()) {
    if (!stored.contains(key) || stored[key] != value) {
      field = key;
      break;
    }
  }
  if (field.empty()) {  // then stored has a field that expected lacks
    for (const auto& [key, value] : stored.items()) {
      if (!expected.contains(key)) {
        field = key;
        break;
      }
    }
  }
  throw std::invalid_argument("'" + dir.string() + "' holds a model trained with other settings: '" + field +
                              "' is " + (stored.contains(field) ? stored[field].dump() : "not recorded") +
                              " there, this run " +
                              (expected.contains(field) ? "asks for " + expected[field].dump() : "does not record it") +
                              " (remove the directory, or name another one)");
}

/// The model saved in `dir` when trained_as(dir, expected), else std::nullopt
/// (and trained_as's refusal when it was trained otherwise).
inline std::optional<LoadedModel> load_if_trained_as(const std::filesystem::path& dir, const nlohmann::json& expected) {
  if (!trained_as(dir, expected)) return std::nullopt;
  return load_model(dir);
}

/// Saves a trained model to `dir` (save_model) with `record` beside it as
/// training.json: everything that decided the model beyond its config.json
/// (text, steps, seed, ...), as the caller lists it. Written through the oq
/// tool's StagingDirectory (renamed onto `dir` in one step; a killed run's
/// directory is removed by the next), so `dir` holds a whole model and its
/// record or nothing. A model already kept there by another process (the
/// rename fails) must have been trained as `record` says (trained_as).
inline void keep_trained_model(const std::filesystem::path& dir, const Config& c, const Regularization& r,
                               Parameters<float>& p, const nlohmann::json& record) {
  if (!record.is_object()) {
    throw std::invalid_argument("small_lm::keep_trained_model: record must be a JSON object, got " +
                                std::string(record.type_name()));
  }
  if (trained_as(dir, record)) return;  // kept already
  // A directory left without its record by an older, killed run is replaced.
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir.parent_path());
  oq_tool::StagingDirectory staging(dir);
  save_model(staging.path(), c, r, p);
  oq_tool::write_json_file(staging.path() / "training.json", record);
  try {
    staging.commit();
  } catch (const std::filesystem::filesystem_error& e) {
    if (!trained_as(dir, record)) {  // throws when it was trained otherwise
      throw std::runtime_error("cannot move the trained model to '" + dir.string() + "': " + e.what());
    }
  }
}

}  // namespace small_lm
