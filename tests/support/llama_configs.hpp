// tests/support/llama_configs.hpp: the LLaMA layer shapes
// (tools/llama/llama_layer.hpp's Config) that the model-level tests run on,
// written once. Each has grouped-query attention on two key/value heads, so
// that every test also covers a key/value head shared by several query heads.
#pragma once

#include "../../tools/llama/llama_layer.hpp"

namespace oq::test {

/// `heads` query heads of width `head_dim` on two key/value heads (hidden =
/// heads·head_dim), a SwiGLU MLP of width `intermediate`, LLaMA's ε and θ.
inline llama::Config gqa_llama_config(Eigen::Index heads, Eigen::Index head_dim, Eigen::Index intermediate) {
  llama::Config c;
  c.hidden_size = heads * head_dim;
  c.intermediate_size = intermediate;
  c.num_attention_heads = heads;
  c.num_key_value_heads = 2;
  c.head_dim = head_dim;
  return c;
}

/// The tiny layer of the float64 tests (finite differences, exact
/// equivalences): 4 query heads of width 4 on 2 key/value heads (hidden 16);
/// the MLP width 24 = 12·2 is not a power of two (Paley I, q = 11); ε = 1e-6
/// and θ = 500 in place of LLaMA's 1e-5 and 10000.
inline llama::Config tiny_llama_config() {
  llama::Config c = gqa_llama_config(4, 4, 24);
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 500.0;
  return c;
}

}  // namespace oq::test
