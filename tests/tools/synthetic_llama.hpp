// tests/tools/synthetic_llama.hpp: small random LlamaForCausalLM checkpoints
// for the oq tool's tests, written as Hugging Face writes them: config.json
// and safetensors, optionally sharded (model-0000i-of-0000n.safetensors +
// model.safetensors.index.json), in F32, F16 or BF16, with grouped-query
// heads and tied or untied embeddings.
//
// The weights are Gaussian with a standard deviation that keeps the hidden
// states O(1); `outlier_channel` gives the norms' γ one channel 30× the
// others, so that the inputs of q/k/v and gate/up carry a channel-wise
// outlier (what smoothing and rotations are for) and the analysis finds it.
#pragma once

#include <oq/io.hpp>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace oq_test {

struct SyntheticLlama {
  int vocab = 256;
  int hidden = 64;
  int intermediate = 160;
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int max_positions = 64;
  bool tied = false;
  int shards = 1;  ///< 1: model.safetensors; more: an index and that many shards
  oq::io::DType dtype = oq::io::DType::kBF16;
  int outlier_channel = 5;  ///< < 0: none
  std::uint64_t seed = 1;

  /// Writes the checkpoint into `dir` (created).
  void write(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto gaussian = [&](int rows, int cols, float sd) {
      Matrix m(rows, cols);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = sd * normal(rng);
      return m;
    };
    auto norm = [&] {
      Matrix g = Matrix::Ones(hidden, 1) + gaussian(hidden, 1, 0.05f);
      if (outlier_channel >= 0) g(outlier_channel, 0) = 30.0f;
      return g;
    };
    const int head_dim = hidden / heads;
    std::vector<std::pair<std::string, Matrix>> tensors;
    tensors.emplace_back("model.embed_tokens.weight", gaussian(vocab, hidden, 1.0f));
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      tensors.emplace_back(p + "input_layernorm.weight", norm());
      tensors.emplace_back(p + "self_attn.q_proj.weight", gaussian(heads * head_dim, hidden, 0.5f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "self_attn.k_proj.weight", gaussian(kv_heads * head_dim, hidden, 0.5f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "self_attn.v_proj.weight", gaussian(kv_heads * head_dim, hidden, 1.0f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "self_attn.o_proj.weight", gaussian(hidden, heads * head_dim, 0.5f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "post_attention_layernorm.weight", norm());
      tensors.emplace_back(p + "mlp.gate_proj.weight", gaussian(intermediate, hidden, 1.0f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "mlp.up_proj.weight", gaussian(intermediate, hidden, 1.0f / std::sqrt(float(hidden))));
      tensors.emplace_back(p + "mlp.down_proj.weight", gaussian(hidden, intermediate, 0.5f / std::sqrt(float(intermediate))));
    }
    tensors.emplace_back("model.norm.weight", Matrix::Ones(hidden, 1));
    if (!tied) tensors.emplace_back("lm_head.weight", gaussian(vocab, hidden, 2.0f / std::sqrt(float(hidden))));

    nlohmann::json weight_map = nlohmann::json::object();
    const std::size_t per_shard = (tensors.size() + static_cast<std::size_t>(shards) - 1) / static_cast<std::size_t>(shards);
    for (int s = 0; s < shards; ++s) {
      oq::io::SafetensorsWriter w;
      char name[64];
      std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
      const std::string file = shards == 1 ? "model.safetensors" : name;
      for (std::size_t i = static_cast<std::size_t>(s) * per_shard; i < std::min(tensors.size(), (s + 1) * per_shard); ++i) {
        const auto& [tensor, m] = tensors[i];
        w.add(tensor, m, dtype);
        weight_map[tensor] = file;
      }
      w.add_metadata("format", "pt");
      w.write(dir / file);
    }
    if (shards > 1) {
      nlohmann::json index;
      index["metadata"] = {{"total_size", 0}};
      index["weight_map"] = weight_map;
      std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
    }
    nlohmann::json c;
    c["architectures"] = {"LlamaForCausalLM"};
    c["model_type"] = "llama";
    c["vocab_size"] = vocab;
    c["hidden_size"] = hidden;
    c["intermediate_size"] = intermediate;
    c["num_hidden_layers"] = layers;
    c["num_attention_heads"] = heads;
    c["num_key_value_heads"] = kv_heads;
    c["max_position_embeddings"] = max_positions;
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 10000.0;
    c["hidden_act"] = "silu";
    c["tie_word_embeddings"] = tied;
    c["torch_dtype"] = dtype == oq::io::DType::kBF16 ? "bfloat16" : dtype == oq::io::DType::kF16 ? "float16" : "float32";
    std::ofstream(dir / "config.json") << c.dump(2);
  }
};

/// Byte text of `n` characters with some structure (words from a small
/// vocabulary), for byte-level calibration and evaluation data.
inline std::string synthetic_text(std::size_t n, std::uint64_t seed) {
  static const char* const kWords[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog. ",
                                       "and ", "then ", "sleeps ", "in ", "a ", "warm ", "house\n"};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> pick(0, std::size(kWords) - 1);
  std::string s;
  while (s.size() < n) s += kWords[pick(rng)];
  s.resize(n);
  return s;
}

}  // namespace oq_test
