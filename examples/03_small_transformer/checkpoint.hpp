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
#include "model.hpp"

#include <oq/io.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
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
  {
    std::ofstream out(dir / "config.json");
    out << j.dump(2) << '\n';
    if (!out) throw std::runtime_error("cannot write '" + (dir / "config.json").string() + "'");
  }
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

/// FNV-1a, 64 bits, of a file's bytes: names the training text in a
/// training record (a different text must never reuse a model; collisions
/// between two texts a user trains on are not a concern at 64 bits).
inline std::string file_fingerprint(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read '" + file.string() + "'");
  std::uint64_t h = 14695981039346656037ull;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<std::uint8_t>(buffer[i])) * 1099511628211ull;
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<std::size_t>(i)] = kHex[h & 15];
  return out;
}

/// Writes `dir`/training.json: everything that decided the model saved in
/// `dir` beyond its config.json (text, steps, seed, ...), as the caller
/// lists it. Written after save_model: a run killed while saving leaves no
/// record, and load_if_trained_as trains that model again.
inline void write_training_record(const std::filesystem::path& dir, const nlohmann::json& record) {
  if (!record.is_object()) throw std::invalid_argument("small_lm::write_training_record: record must be an object");
  const std::filesystem::path file = dir / "training.json", partial = dir / "training.json.partial";
  {
    std::ofstream out(partial);
    out << record.dump(2) << '\n';
    if (!out) throw std::runtime_error("cannot write '" + partial.string() + "'");
  }
  std::filesystem::rename(partial, file);  // whole or absent, even for a concurrent reader
}

/// The model saved in `dir` when its training.json equals `expected`;
/// std::nullopt when `dir` holds no training.json (never trained, or killed
/// before the record); std::invalid_argument naming the first field that
/// differs otherwise. A model trained with other settings is never
/// substituted, and never silently overwritten either: the caller decides.
inline std::optional<LoadedModel> load_if_trained_as(const std::filesystem::path& dir, const nlohmann::json& expected) {
  const std::filesystem::path file = dir / "training.json";
  if (!std::filesystem::exists(file)) return std::nullopt;
  const nlohmann::json stored = oq::io::read_json(file);
  if (stored != expected) {
    std::string field = "(the record as a whole)";
    if (stored.is_object() && expected.is_object()) {
      for (const auto& [key, value] : expected.items()) {
        if (!stored.contains(key) || stored[key] != value) {
          field = key;
          break;
        }
      }
      if (field.front() == '(') {
        for (const auto& [key, value] : stored.items()) {
          if (!expected.contains(key)) {
            field = key;
            break;
          }
        }
      }
    }
    throw std::invalid_argument("'" + dir.string() + "' holds a model trained with other settings: " + field +
                                " is " + (stored.is_object() && stored.contains(field) ? stored[field].dump() : "absent") +
                                " there, this run asks for " +
                                (expected.is_object() && expected.contains(field) ? expected[field].dump() : "none") +
                                " (remove the directory, or name another one)");
  }
  return load_model(dir);
}

}  // namespace small_lm
