// examples/02_llama_layer/default_layer.hpp: a LLaMA layer whose weights
// *produce* the outlier structure published for LLaMA-2-7B, for runs without
// a checkpoint. README.md beside this file gives the construction and the
// sources of every number; in short:
//
//  1. Channel-wise outliers at the q/k/v input (and the gate/up input) come
//     from a few large RMSNorm weights: RMSNorm multiplies channel j by γ_j, so
//     a γ_j ~12× the others makes channel j's mean |x| ~12× the input's mean,
//     above the 6× of Nrusimha et al. (docs/design.md §3). The layer's input itself has
//     no outlier channels.
//  2. The super weight (Yu et al. 2024): one intermediate channel r of the MLP
//     whose gate and up rows are aligned with the first token's MLP input, so
//     that on the first token silu(gate_r)·up_r — the down_proj input — spikes
//     to the thousands while it stays O(1) elsewhere.
//  3. Two down_proj entries in column r (rows 1415 and 2533 for hidden 4096, the
//     channels Sun et al. report for LLaMA-2-7B) turn that spike into massive
//     residual activations of about 2,000 at the layer's output, against a
//     median |x| near 0.2.
// Everything else is Gaussian. Nothing is planted in the input: the input is
// token embeddings, and the outliers appear because of what the weights do.
#pragma once

#include "../../tools/llama/llama_layer.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace llama {

/// Knobs of the construction; the defaults are the numbers README.md cites.
struct DefaultLayerOptions {
  std::uint64_t seed = 0;
  double weight_std = 0.02;          ///< every linear weight ~ N(0, 0.02²)
  double norm_weight_mean = 0.35;    ///< RMSNorm γ ~ mean + N(0, std²), ...
  double norm_weight_std = 0.05;
  int norm_outlier_channels = 4;     ///< ... except this many channels per norm ...
  double norm_outlier_gain = 12.0;   ///< ... whose γ is this many times the mean
  double gate_preactivation = 40.0;  ///< gate_r · n₂(first token)
  double up_preactivation = 80.0;    ///< up_r · n₂(first token): spike ≈ silu(40)·80 = 3200
  double massive_value = 2000.0;     ///< target residual value in the two massive channels
  double massive_second_ratio = -0.75;  ///< the second channel gets this × massive_value
  double embedding_std = 0.3;        ///< median |N(0, 0.3²)| = 0.2
  Eigen::Index vocabulary = 512;     ///< token embeddings to draw the input from
};

/// Where the construction put its outliers, so the example can report them.
struct DefaultLayerLayout {
  std::vector<Eigen::Index> input_norm_outliers;  ///< channels of large γ in input_layernorm
  std::vector<Eigen::Index> post_norm_outliers;   ///< channels of large γ in post_attention_layernorm
  Eigen::Index super_channel = 0;                 ///< r: intermediate channel (7890 for FFN 11008)
  std::array<Eigen::Index, 2> massive_channels{}; ///< residual channels (1415, 2533 for hidden 4096)
};

namespace detail_default {

// The LLaMA-2-7B index scaled to a smaller dimension (so tiny test configs
// keep the same relative placement).
inline Eigen::Index scaled_index(Eigen::Index index_in_7b, Eigen::Index size_in_7b, Eigen::Index size) {
  return std::min<Eigen::Index>(size - 1, index_in_7b * size / size_in_7b);
}

template <class Scalar>
Matrix<Scalar> gaussian(Eigen::Index rows, Eigen::Index cols, double std, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, std);
  Matrix<Scalar> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(normal(rng));
  return m;
}

template <class Scalar>
Vector<Scalar> norm_weight(Eigen::Index size, const DefaultLayerOptions& o, std::mt19937_64& rng,
                           std::vector<Eigen::Index>& outliers) {
  std::normal_distribution<double> normal(o.norm_weight_mean, o.norm_weight_std);
  Vector<Scalar> gamma(size);
  for (Eigen::Index j = 0; j < size; ++j) gamma[j] = static_cast<Scalar>(std::max(0.05, normal(rng)));
  std::uniform_int_distribution<Eigen::Index> channel(0, size - 1);
  while (static_cast<int>(outliers.size()) < std::min<Eigen::Index>(o.norm_outlier_channels, size)) {
    const Eigen::Index j = channel(rng);
    if (std::find(outliers.begin(), outliers.end(), j) != outliers.end()) continue;
    outliers.push_back(j);
    gamma[j] = static_cast<Scalar>(o.norm_outlier_gain * o.norm_weight_mean);
  }
  std::sort(outliers.begin(), outliers.end());
  return gamma;
}

}  // namespace detail_default

/// The embedding table the default input is drawn from: row 0 is the
/// beginning-of-sequence token, which every sequence starts with.
template <class Scalar>
Matrix<Scalar> default_embeddings(const Config& c, const DefaultLayerOptions& o = {}) {
  std::mt19937_64 rng(o.seed ^ 0x9E3779B97F4A7C15ULL);
  return detail_default::gaussian<Scalar>(o.vocabulary, c.hidden_size, o.embedding_std, rng);
}

/// A sequence of `tokens` hidden states: the BOS embedding, then embeddings of
/// random token ids drawn with `sequence_seed` (calibration and evaluation
/// sequences use different seeds).
template <class Scalar>
Matrix<Scalar> default_input(const Config& c, Eigen::Index tokens, std::uint64_t sequence_seed,
                             const DefaultLayerOptions& o = {}) {
  const Matrix<Scalar> table = default_embeddings<Scalar>(c, o);
  std::mt19937_64 rng(sequence_seed);
  std::uniform_int_distribution<Eigen::Index> id(1, o.vocabulary - 1);
  Matrix<Scalar> x(tokens, c.hidden_size);
  for (Eigen::Index t = 0; t < tokens; ++t) x.row(t) = table.row(t == 0 ? 0 : id(rng));
  return x;
}

/// The default layer for config `c` (validated), and where its outliers are.
template <class Scalar>
LayerWeights<Scalar> default_layer(const Config& c, const DefaultLayerOptions& o = {},
                                   DefaultLayerLayout* layout = nullptr) {
  c.validate();
  std::mt19937_64 rng(o.seed);
  DefaultLayerLayout where;
  LayerWeights<Scalar> w;
  w.input_norm = detail_default::norm_weight<Scalar>(c.hidden_size, o, rng, where.input_norm_outliers);
  w.post_norm = detail_default::norm_weight<Scalar>(c.hidden_size, o, rng, where.post_norm_outliers);
  const Eigen::Index h = c.hidden_size, f = c.intermediate_size;
  w[Linear::kQ] = detail_default::gaussian<Scalar>(c.q_size(), h, o.weight_std, rng);
  w[Linear::kK] = detail_default::gaussian<Scalar>(c.kv_size(), h, o.weight_std, rng);
  w[Linear::kV] = detail_default::gaussian<Scalar>(c.kv_size(), h, o.weight_std, rng);
  w[Linear::kO] = detail_default::gaussian<Scalar>(h, c.q_size(), o.weight_std, rng);
  w[Linear::kGate] = detail_default::gaussian<Scalar>(f, h, o.weight_std, rng);
  w[Linear::kUp] = detail_default::gaussian<Scalar>(f, h, o.weight_std, rng);
  w[Linear::kDown] = detail_default::gaussian<Scalar>(h, f, o.weight_std, rng);

  // The super weight. The MLP input of the first token does not depend on the
  // rest of the sequence (causal attention: it attends to itself only), so
  // run the attention half on the BOS embedding alone to get n₂ of token 0.
  where.super_channel = detail_default::scaled_index(7890, 11008, f);
  where.massive_channels = {detail_default::scaled_index(2533, 4096, h),
                            detail_default::scaled_index(1415, 4096, h)};
  const Matrix<Scalar> bos = default_embeddings<Scalar>(c, o).topRows(1);
  Matrix<Scalar> n2_first;
  {
    // forward() with the MLP's linears replaced by a recorder of n₂.
    struct Recorder {
      Matrix<Scalar>* n2;
      Matrix<Scalar> operator()(Linear which, const Matrix<Scalar>& x, const Matrix<Scalar>& weight) const {
        if (which == Linear::kGate) *n2 = x;
        return PlainLinear{}(which, x, weight);
      }
    };
    forward(c, w, bos, Recorder{&n2_first});
  }
  const Eigen::Index r = where.super_channel;
  // Align the rows with the first token's embedding as it reaches the MLP:
  // z = γ₂ ⊙ x₀ (the residual part of n₂, without the attention output),
  // minus the large-γ channels. Later tokens carry x₀ only through attention
  // (o_proj·v_proj·x₀, a random projection of it) and share the large-γ
  // channels with every token, so neither makes channel r fire on them.
  Eigen::VectorXd z = (w.post_norm.array() * bos.row(0).transpose().array()).matrix().template cast<double>();
  for (Eigen::Index j : where.post_norm_outliers) z[j] = 0.0;
  const double z_dot = z.dot(n2_first.row(0).transpose().template cast<double>());
  // Rows along z with gate_r·n₂ = gate_preactivation and up_r·n₂ =
  // up_preactivation exactly on the first token.
  w[Linear::kGate].row(r) = (z * (o.gate_preactivation / z_dot)).transpose().template cast<Scalar>();
  w[Linear::kUp].row(r) = (z * (o.up_preactivation / z_dot)).transpose().template cast<Scalar>();
  const double g = o.gate_preactivation;
  const double spike = g / (1.0 + std::exp(-g)) * o.up_preactivation;
  // down[:, r] writes the spike into the two residual channels. The rest of
  // column r is rescaled so that the spike adds only embedding-sized noise
  // (N(0, 0.3²)) to the other channels of the first token: left at N(0, 0.02²),
  // 3200 × 0.02 would create dozens of extra ~200-sized entries that the
  // published first-token hidden states do not have.
  {
    std::normal_distribution<double> small(0.0, o.embedding_std / spike);
    for (Eigen::Index i = 0; i < h; ++i) w[Linear::kDown](i, r) = static_cast<Scalar>(small(rng));
  }
  w[Linear::kDown](where.massive_channels[0], r) = static_cast<Scalar>(o.massive_value / spike);
  w[Linear::kDown](where.massive_channels[1], r) = static_cast<Scalar>(o.massive_second_ratio * o.massive_value / spike);
  if (layout != nullptr) *layout = where;
  return w;
}

}  // namespace llama
