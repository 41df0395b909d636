// examples/02_llama_layer/synthetic_model.hpp: a stack of LLaMA decoder
// layers whose weights produce the outlier structure published for
// LLaMA-2-7B, for runs without a checkpoint (issue 25, item 3). README.md
// beside this file gives the construction and the source of every number;
// in short, for L layers (default 4) on token embeddings:
//
//  - Heavy-tailed bulk. Every embedding entry is Student-t with ν = 5
//    degrees of freedom (kurtosis 3 + 6/(ν − 4) = 9): Dotzel et al. 2024
//    find LLM weights and activations Student-t distributed, and build their
//    SF4 format for ν = 5 (not a fit to LLaMA-2-7B's hidden states). The
//    layers' writes to the residual stream are kept small enough that the
//    hidden states stay heavy-tailed.
//  - Channel-wise outliers in the normed inputs of every layer: a few fixed
//    channels with a large RMSNorm γ (the same channels in every layer and
//    both norms, as Dettmers et al. 2022 find outlier features in the same
//    dimensions across layers).
//  - Massive activations (Sun et al. 2024) created by layer 1's MLP, not
//    injected: one intermediate channel ("super activation", Yu et al. 2024)
//    fires on the first token and on the first delimiter ("." or "\n") only,
//    and one column of down_proj writes it into residual channels 2533 and
//    1415 (for hidden 4096). Which delimiter is the first one is decided by
//    an attention head of layer 0 that counts the delimiters seen so far.
//  - Carried by the residual stream through the later layers, whose RMSNorm
//    turns the massive tokens into nearly the same normalized vector,
//    dominated by the two channels; their keys read those two channels and
//    every query reads a direction all tokens share, so the massive tokens
//    become attention sinks (Xiao et al. 2023; Sun et al. 2024, §4) with
//    small values (the "no-op" heads of Bondarenko et al. 2023).
//
// Everything the construction needs to know about the hidden states (the
// normalized size of a feature on a token) it measures by running the
// layers built so far on a probe sequence, so the gains hold whatever the
// shape and seed.
#pragma once

#include "../../tools/llama/llama_layer.hpp"
#include "default_layer.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace llama {

/// Knobs of the synthetic model; the defaults are the numbers README.md cites
/// (or, where it says so, our choices).
struct SyntheticModelOptions {
  std::uint64_t seed = 0;
  int layers = 4;       ///< decoder layers
  int spike_layer = 1;  ///< the layer whose MLP creates the massive activations (Sun et al.: LLaMA-2-7B's layer 1)
  Eigen::Index vocabulary = 512;  ///< token 0 is BOS, 1 and 2 the delimiters "." and "\n"
  double delimiter_rate = 1.0 / 12.0;  ///< probability that a token of a random sequence is a delimiter

  // The bulk.
  double student_t_dof = 5.0;       ///< ν of the embeddings' Student-t entries (Dotzel et al. 2024: ν = 5)
  double embedding_scale = 0.26;    ///< scale of those entries: median |x| ≈ 0.2 after the layers
  double weight_std = 0.02;         ///< q/k/v/gate/up weights ~ N(0, 0.02²)
  double residual_write_std = 0.005;  ///< o_proj/down_proj weights: small writes keep the bulk heavy-tailed
  double norm_weight_mean = 0.35;   ///< RMSNorm γ ~ N(mean, std²) ...
  double norm_weight_std = 0.05;
  int outlier_channels = 4;         ///< ... except these channels, the same in every norm ...
  double outlier_gain = 12.0;       ///< ... whose γ is this many times the mean

  // Feature directions (dense unit vectors), in units of the per-channel
  // standard deviation σ of the embeddings' Student-t entries: a direction
  // read through RMSNorm stands this many noise deviations out.
  double common_size = 8.0;      ///< every token: the shared direction the later queries read
  double bos_size = 64.0;        ///< BOS only
  double delimiter_size = 64.0;  ///< the delimiters only

  // Layer 0's delimiter-counting head.
  double delimiter_logit = 12.0;   ///< attention logit of a delimiter query on BOS and on each delimiter
  double delimiter_cancel = 1.5;   ///< its write: −cancel × (delimiter feature) × (share of delimiters)

  // The spike, in layer spike_layer's MLP.
  double gate_preactivation = 40.0;   ///< gate_r on the first token and the first delimiter
  double up_preactivation = 80.0;     ///< up_r on the first token: super activation silu(40)·80 = 3200
  double off_gate = 30.0;             ///< gate_r on other tokens ≈ −off_gate (silu ≈ 0)
  double massive_value = 2600.0;      ///< first token, channel 2533 (for hidden 4096)
  double massive_second_ratio = -0.6; ///< channel 1415 gets this × massive_value
  double delimiter_massive_ratio = 0.75;  ///< the first delimiter's massive values, relative to the first token's

  // The attention sinks, in the layers after the spike.
  double sink_logit_min = 4.0;   ///< each head's logit on the massive tokens is drawn from [min, max]
  double sink_logit_max = 8.0;
  double sink_value_scale = 0.1;  ///< v_proj's columns at the massive channels are scaled by this

  /// Throws std::invalid_argument naming the first field out of range for `c`.
  void validate(const Config& c) const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("llama::SyntheticModelOptions: " + what); };
    if (layers < 1) fail("layers must be >= 1, got " + std::to_string(layers));
    if (spike_layer < 0) fail("spike_layer must be >= 0, got " + std::to_string(spike_layer));
    if (vocabulary < 4) fail("vocabulary must be >= 4 (BOS, two delimiters, one word), got " + std::to_string(vocabulary));
    if (!(delimiter_rate >= 0.0 && delimiter_rate < 1.0)) fail("delimiter_rate must be in [0, 1)");
    if (!(student_t_dof > 4.0)) fail("student_t_dof must be > 4 (finite kurtosis), got " + std::to_string(student_t_dof));
    if (!(embedding_scale > 0.0)) fail("embedding_scale must be > 0");
    if (!(weight_std > 0.0) || !(residual_write_std > 0.0)) fail("weight_std and residual_write_std must be > 0");
    if (!(norm_weight_mean > 0.0) || !(norm_weight_std >= 0.0)) fail("norm_weight_mean must be > 0, norm_weight_std >= 0");
    if (outlier_channels < 0 || outlier_channels + 2 > c.hidden_size) {
      fail("outlier_channels must be in [0, hidden_size - 2], got " + std::to_string(outlier_channels));
    }
    if (!(outlier_gain > 0.0)) fail("outlier_gain must be > 0");
    if (!(common_size > 0.0 && bos_size > 0.0 && delimiter_size > 0.0)) fail("feature sizes must be > 0");
    if (!(delimiter_logit > 0.0) || !(delimiter_cancel > 1.0 && delimiter_cancel < 2.0)) {
      fail("delimiter_logit must be > 0 and delimiter_cancel in (1, 2) (first delimiter kept, later ones cancelled)");
    }
    if (!(gate_preactivation > 0.0 && up_preactivation > 0.0 && off_gate > 0.0 && massive_value > 0.0)) {
      fail("gate_preactivation, up_preactivation, off_gate and massive_value must be > 0");
    }
    if (!(delimiter_massive_ratio > 0.0)) fail("delimiter_massive_ratio must be > 0");
    if (!(sink_logit_min >= 0.0 && sink_logit_max >= sink_logit_min)) fail("need 0 <= sink_logit_min <= sink_logit_max");
    if (!(sink_value_scale >= 0.0)) fail("sink_value_scale must be >= 0");
  }
};

/// Where the construction put its structure.
struct SyntheticModelLayout {
  static constexpr Eigen::Index kBos = 0;
  static constexpr std::array<Eigen::Index, 2> kDelimiters{1, 2};  ///< "." and "\n"
  std::vector<Eigen::Index> outlier_channels;      ///< large γ in every norm
  std::array<Eigen::Index, 2> massive_channels{};  ///< 2533 and 1415 for hidden 4096
  Eigen::Index super_channel = 0;                  ///< 7890 for FFN 11008
  int spike_layer = 1;                             ///< -1: the model has no spike (too few layers)
  std::vector<std::vector<double>> sink_logits;    ///< per layer, per head (empty before the spike)
};

template <class Scalar>
struct SyntheticModel {
  Config config;
  Matrix<Scalar> embeddings;  ///< vocabulary × hidden
  std::vector<LayerWeights<Scalar>> layers;
  SyntheticModelLayout layout;
};

inline bool is_delimiter(Eigen::Index id) { return id == 1 || id == 2; }

/// Token ids of a random sequence: BOS, then each token a delimiter with
/// probability o.delimiter_rate ("." or "\n" alike), else a word id.
inline std::vector<Eigen::Index> synthetic_token_ids(Eigen::Index tokens, std::uint64_t seed,
                                                     const SyntheticModelOptions& o = {}) {
  if (tokens < 1) throw std::invalid_argument("llama::synthetic_token_ids: tokens must be >= 1, got " + std::to_string(tokens));
  if (o.vocabulary < 4) throw std::invalid_argument("llama::synthetic_token_ids: vocabulary must be >= 4");
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution delimiter(o.delimiter_rate);
  std::uniform_int_distribution<Eigen::Index> which(1, 2), word(3, o.vocabulary - 1);
  std::vector<Eigen::Index> ids(static_cast<std::size_t>(tokens));
  ids[0] = SyntheticModelLayout::kBos;
  for (std::size_t t = 1; t < ids.size(); ++t) ids[t] = delimiter(rng) ? which(rng) : word(rng);
  return ids;
}

/// The position of the first delimiter, if any.
inline std::optional<Eigen::Index> first_delimiter(const std::vector<Eigen::Index>& ids) {
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (is_delimiter(ids[t])) return static_cast<Eigen::Index>(t);
  }
  return std::nullopt;
}

/// Where Sun et al. find the massive activations: the first token and the
/// first delimiter (when there is one).
inline std::vector<Eigen::Index> massive_token_positions(const std::vector<Eigen::Index>& ids) {
  std::vector<Eigen::Index> out{0};
  if (const auto d = first_delimiter(ids); d && *d != 0) out.push_back(*d);
  return out;
}

/// The embeddings of `ids` (tokens × hidden).
template <class Scalar>
Matrix<Scalar> embed(const SyntheticModel<Scalar>& model, const std::vector<Eigen::Index>& ids) {
  Matrix<Scalar> x(static_cast<Eigen::Index>(ids.size()), model.config.hidden_size);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= model.embeddings.rows()) {
      throw std::invalid_argument("llama::embed: token id " + std::to_string(ids[t]) + " outside the vocabulary [0, " +
                                  std::to_string(model.embeddings.rows()) + ")");
    }
    x.row(static_cast<Eigen::Index>(t)) = model.embeddings.row(ids[t]);
  }
  return x;
}

/// The hidden states of the whole stack: [0] = x, [l + 1] = the output of layer l.
template <class Scalar>
std::vector<Matrix<Scalar>> hidden_states(const SyntheticModel<Scalar>& model, const Matrix<Scalar>& x) {
  std::vector<Matrix<Scalar>> out{x};
  out.reserve(model.layers.size() + 1);
  for (const auto& w : model.layers) out.push_back(forward(model.config, w, out.back()));
  return out;
}

namespace detail_synthetic {

// The LLaMA-2-7B index scaled to a smaller dimension and the Gaussian
// matrices: default_layer.hpp's, so both constructions place channels alike.
using detail_default::gaussian;
using detail_default::scaled_index;

inline Eigen::VectorXd student_t(Eigen::Index n, double dof, double scale, std::mt19937_64& rng) {
  std::student_t_distribution<double> t(dof);
  Eigen::VectorXd v(n);
  for (Eigen::Index i = 0; i < n; ++i) v[i] = scale * t(rng);
  return v;
}

// A dense unit direction with Student-t entries (heavy-tailed like the bulk,
// so adding it does not make the rows more Gaussian), zero on `excluded`,
// orthogonal to `others`.
inline Eigen::VectorXd direction(Eigen::Index n, double dof, const std::vector<Eigen::Index>& excluded,
                                 const std::vector<Eigen::VectorXd>& others, std::mt19937_64& rng) {
  Eigen::VectorXd u = student_t(n, dof, 1.0, rng);
  for (Eigen::Index j : excluded) u[j] = 0.0;
  for (const auto& o : others) u -= o.dot(u) * o;
  return u.normalized();
}

inline Eigen::VectorXd norm_weight(Eigen::Index n, const SyntheticModelOptions& o,
                                   const std::vector<Eigen::Index>& outliers, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(o.norm_weight_mean, o.norm_weight_std);
  Eigen::VectorXd gamma(n);
  for (Eigen::Index j = 0; j < n; ++j) gamma[j] = std::max(0.05 * o.norm_weight_mean, normal(rng));
  for (Eigen::Index j : outliers) gamma[j] = o.outlier_gain * o.norm_weight_mean;
  return gamma;
}

// ⟨u, x_t⟩ / rms(x_t) for every row: what a linear row u ⊘ γ reads from
// RMSNorm(x) = γ ⊙ x / rms(x) (llama_layer.hpp's rms_norm, eps included).
template <class Scalar>
Eigen::VectorXd normalized_projection(const Matrix<Scalar>& x, const Eigen::VectorXd& u, double eps) {
  Eigen::VectorXd p(x.rows());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const Eigen::VectorXd row = x.row(t).transpose().template cast<double>();
    p[t] = u.dot(row) / std::sqrt(row.squaredNorm() / static_cast<double>(row.size()) + eps);
  }
  return p;
}

// The row u ⊘ γ of a linear that reads u·x/rms(x) from its RMSNorm's output.
template <class Scalar>
Eigen::Matrix<Scalar, 1, Eigen::Dynamic> reading(const Eigen::VectorXd& u, const Vector<Scalar>& gamma) {
  return (u.array() / gamma.template cast<double>().array()).matrix().transpose().template cast<Scalar>();
}

// The probe sequence the construction measures on: BOS, then words with a
// delimiter after every nine ("." and "\n" alternating), `tokens` in all.
inline std::vector<Eigen::Index> probe_ids(Eigen::Index tokens, Eigen::Index vocabulary, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5851F42D4C957F2DULL);
  std::uniform_int_distribution<Eigen::Index> word(3, vocabulary - 1);
  std::vector<Eigen::Index> ids(static_cast<std::size_t>(tokens));
  ids[0] = SyntheticModelLayout::kBos;
  for (std::size_t t = 1; t < ids.size(); ++t) ids[t] = t % 10 == 0 ? (t % 20 == 0 ? 2 : 1) : word(rng);
  return ids;
}

inline double mean_over(const Eigen::VectorXd& v, const std::vector<Eigen::Index>& rows) {
  double s = 0.0;
  for (Eigen::Index r : rows) s += v[r];
  return rows.empty() ? 0.0 : s / static_cast<double>(rows.size());
}

}  // namespace detail_synthetic

/// The synthetic model for config `c` (validated) and options `o`.
template <class Scalar>
SyntheticModel<Scalar> synthetic_model(const Config& c, const SyntheticModelOptions& o = {}) {
  using namespace detail_synthetic;
  c.validate();
  o.validate(c);
  const Eigen::Index H = c.hidden_size, F = c.intermediate_size, d = c.head_dim, half = d / 2;
  const Eigen::Index low = half - 1;  // the RoPE pair (low, low + d/2) with the lowest frequency
  const Eigen::Index group = c.num_attention_heads / c.num_key_value_heads;
  std::mt19937_64 rng(o.seed);

  SyntheticModel<Scalar> model;
  model.config = c;
  SyntheticModelLayout& layout = model.layout;
  layout.massive_channels = {scaled_index(2533, 4096, H), scaled_index(1415, 4096, H)};
  if (layout.massive_channels[0] == layout.massive_channels[1]) {
    throw std::invalid_argument("llama::synthetic_model: hidden_size " + std::to_string(H) +
                                " is too small for two distinct massive channels");
  }
  layout.super_channel = scaled_index(7890, 11008, F);
  layout.spike_layer = o.spike_layer < o.layers ? o.spike_layer : -1;
  layout.sink_logits.assign(static_cast<std::size_t>(o.layers), {});
  const std::vector<Eigen::Index> massive(layout.massive_channels.begin(), layout.massive_channels.end());
  {
    std::uniform_int_distribution<Eigen::Index> channel(0, H - 1);
    while (static_cast<int>(layout.outlier_channels.size()) < o.outlier_channels) {
      const Eigen::Index j = channel(rng);
      if (std::find(layout.outlier_channels.begin(), layout.outlier_channels.end(), j) != layout.outlier_channels.end() ||
          std::find(massive.begin(), massive.end(), j) != massive.end()) {
        continue;
      }
      layout.outlier_channels.push_back(j);
    }
    std::sort(layout.outlier_channels.begin(), layout.outlier_channels.end());
  }

  // Embeddings: Student-t entries, plus the feature directions.
  const double sigma = o.embedding_scale * std::sqrt(o.student_t_dof / (o.student_t_dof - 2.0));
  const Eigen::VectorXd u_common = direction(H, o.student_t_dof, massive, {}, rng);
  const Eigen::VectorXd u_bos = direction(H, o.student_t_dof, massive, {u_common}, rng);
  const Eigen::VectorXd u_delimiter = direction(H, o.student_t_dof, massive, {u_common, u_bos}, rng);
  model.embeddings.resize(o.vocabulary, H);
  for (Eigen::Index v = 0; v < o.vocabulary; ++v) {
    // The noise part of every embedding is orthogonal to the three feature
    // directions: a word carries no BOS or delimiter feature and exactly the
    // shared one, so what the layers read from those directions is the
    // feature, not noise (at small widths, noise of the size of σ would
    // otherwise be magnified by the large gains the reads need).
    Eigen::VectorXd e = student_t(H, o.student_t_dof, o.embedding_scale, rng);
    for (const Eigen::VectorXd* u : {&u_common, &u_bos, &u_delimiter}) e -= u->dot(e) * *u;
    if (v == SyntheticModelLayout::kBos || is_delimiter(v)) {
      // The special tokens' noise has exactly the expected energy H·σ², so
      // that "." and "\n" read the same through RMSNorm: layer 0's head
      // subtracts most of the first delimiter's feature, and what is left
      // (1 − cancel/2) would magnify any difference between the two.
      e *= sigma * std::sqrt(static_cast<double>(H)) / e.norm();
      e += v == SyntheticModelLayout::kBos ? o.bos_size * sigma * u_bos : o.delimiter_size * sigma * u_delimiter;
    }
    e += o.common_size * sigma * u_common;
    model.embeddings.row(v) = e.transpose().template cast<Scalar>();
  }

  // The probe: its hidden state at the input of the layer being built.
  const std::vector<Eigen::Index> probe = probe_ids(40, o.vocabulary, o.seed);
  const Eigen::Index probe_delimiter = *first_delimiter(probe);
  std::vector<Eigen::Index> probe_words;
  for (std::size_t t = 1; t < probe.size(); ++t) {
    if (!is_delimiter(probe[t])) probe_words.push_back(static_cast<Eigen::Index>(t));
  }
  Matrix<Scalar> x_probe = embed(model, probe);

  std::uniform_real_distribution<double> sink_logit(o.sink_logit_min, o.sink_logit_max);
  for (int l = 0; l < o.layers; ++l) {
    LayerWeights<Scalar> w;
    w.input_norm = norm_weight(H, o, layout.outlier_channels, rng).template cast<Scalar>();
    w.post_norm = norm_weight(H, o, layout.outlier_channels, rng).template cast<Scalar>();
    w[Linear::kQ] = gaussian<Scalar>(c.q_size(), H, o.weight_std, rng);
    w[Linear::kK] = gaussian<Scalar>(c.kv_size(), H, o.weight_std, rng);
    w[Linear::kV] = gaussian<Scalar>(c.kv_size(), H, o.weight_std, rng);
    w[Linear::kO] = gaussian<Scalar>(H, c.q_size(), o.residual_write_std, rng);
    w[Linear::kGate] = gaussian<Scalar>(F, H, o.weight_std, rng);
    w[Linear::kUp] = gaussian<Scalar>(F, H, o.weight_std, rng);
    w[Linear::kDown] = gaussian<Scalar>(H, F, o.residual_write_std, rng);
    // Nothing writes along the feature directions but the circuits below:
    // the random writes of the other heads and MLP units would otherwise
    // add position-dependent noise to what the circuits read.
    for (const Eigen::VectorXd* u : {&u_common, &u_bos, &u_delimiter}) {
      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> us = u->template cast<Scalar>();
      for (Linear l_write : {Linear::kO, Linear::kDown}) {
        Matrix<Scalar>& m = w[l_write];
        const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> along = us.transpose() * m;
        m.noalias() -= us * along;
      }
    }

    if (l == 0) {
      // Head 0 counts delimiters. Its query reads the delimiter feature, its
      // key the delimiter and BOS features (equal logits on BOS and on each
      // delimiter), in the lowest-frequency RoPE pair, where the logit does
      // not depend on the distance. A delimiter query with n delimiters up
      // to itself puts 1/(n + 1) on BOS and n/(n + 1) on the delimiters;
      // the value (the delimiter feature) comes back as −cancel·n/(n + 1)
      // of it: the first delimiter keeps 1 − cancel/2 of its feature, every
      // later one at most 1 − 2·cancel/3 (≤ 0 for cancel ≥ 3/2). The margin
      // is that of a 1/2 against 2/3 split of the attention: exact in full
      // precision, but W4A4 rounding of this layer can move it far enough
      // for later delimiters to fire too (README.md, results).
      const Eigen::VectorXd p_delimiter = normalized_projection(x_probe, u_delimiter, c.rms_norm_eps);
      const Eigen::VectorXd p_bos = normalized_projection(x_probe, u_bos, c.rms_norm_eps);
      const double delta = p_delimiter[probe_delimiter], delta_bos = p_bos[0];
      const double a = std::sqrt(o.delimiter_logit * std::sqrt(static_cast<double>(d))) / delta;
      // Only that pair: random q·k terms in the other dimensions (≈ ±0.3 at
      // head_dim 128) would tilt the split between BOS and the delimiters,
      // and the first delimiter keeps only the difference 1 − cancel/2.
      w[Linear::kQ].topRows(d).setZero();
      w[Linear::kK].topRows(d).setZero();
      w[Linear::kQ].row(low) = reading<Scalar>(a * u_delimiter, w.input_norm);
      w[Linear::kK].row(low) = reading<Scalar>(a * (u_delimiter + (delta / delta_bos) * u_bos), w.input_norm);
      w[Linear::kV].row(0) = reading<Scalar>(u_delimiter, w.input_norm);
      const double size = o.delimiter_size * sigma;
      w[Linear::kO].col(0) = (-o.delimiter_cancel * size / delta * u_delimiter).template cast<Scalar>();
      // The other query heads of kv head 0 see the same values: their o_proj
      // leaves that value dimension out.
      for (Eigen::Index h = 1; h < group; ++h) w[Linear::kO].col(h * d).setZero();
    }

    if (l == layout.spike_layer) {
      // The super activation: gate_r and up_r read the delimiter and BOS
      // features as they reach this MLP (after layer 0's head), gate_r minus
      // the shared direction so that it is ≈ −off_gate on every other token.
      Matrix<Scalar> n2;
      forward(c, w, x_probe, [&n2](Linear which, const Matrix<Scalar>& in, const Matrix<Scalar>& weight) {
        if (which == Linear::kGate) n2 = in;
        return PlainLinear{}(which, in, weight);
      });
      // What rows u ⊘ γ₂ read from n₂ = γ₂ ⊙ h / rms(h): u·h/rms(h).
      auto read = [&](const Eigen::VectorXd& u) {
        return (n2.template cast<double>() * (u.array() / w.post_norm.template cast<double>().array()).matrix()).eval();
      };
      const Eigen::VectorXd pd = read(u_delimiter), pb = read(u_bos), pc = read(u_common);
      const double off = o.off_gate / mean_over(pc, probe_words);
      const Eigen::Index t0 = 0, t1 = probe_delimiter;
      // [pd pb] of BOS and of the first delimiter times the coefficients of
      // u_delimiter and u_bos give the wanted values (Cramer's rule).
      const double det = pd[t0] * pb[t1] - pb[t0] * pd[t1];
      auto solve = [&](double at_bos, double at_delimiter) {
        return Eigen::Vector2d((at_bos * pb[t1] - pb[t0] * at_delimiter) / det,
                               (pd[t0] * at_delimiter - at_bos * pd[t1]) / det);
      };
      const Eigen::Vector2d gate_coefficients =
          solve(o.gate_preactivation + off * pc[t0], o.gate_preactivation + off * pc[t1]);
      const Eigen::Vector2d up_coefficients = solve(o.up_preactivation, o.delimiter_massive_ratio * o.up_preactivation);
      const Eigen::Index r = layout.super_channel;
      w[Linear::kGate].row(r) = reading<Scalar>(
          gate_coefficients[0] * u_delimiter + gate_coefficients[1] * u_bos - off * u_common, w.post_norm);
      w[Linear::kUp].row(r) = reading<Scalar>(up_coefficients[0] * u_delimiter + up_coefficients[1] * u_bos, w.post_norm);
      const double g = o.gate_preactivation;
      const double spike = g / (1.0 + std::exp(-g)) * o.up_preactivation;
      // down[:, r] writes the spike into the two massive channels; the rest
      // of the column adds only noise of the embeddings' size to the
      // massive tokens' other channels.
      std::normal_distribution<double> small(0.0, sigma / spike);
      for (Eigen::Index i = 0; i < H; ++i) w[Linear::kDown](i, r) = static_cast<Scalar>(small(rng));
      w[Linear::kDown](layout.massive_channels[0], r) = static_cast<Scalar>(o.massive_value / spike);
      w[Linear::kDown](layout.massive_channels[1], r) = static_cast<Scalar>(o.massive_second_ratio * o.massive_value / spike);
    }

    if (layout.spike_layer >= 0 && l > layout.spike_layer) {
      // Attention sinks. After RMSNorm the massive tokens are nearly one
      // vector, m̂·√H with m̂ the unit vector on the two massive channels;
      // every head's key reads m̂ and its query the shared direction, in the
      // lowest-frequency RoPE pair: logit Λ_h on the massive tokens, from
      // every query, and ~0 elsewhere.
      Eigen::VectorXd m_hat = Eigen::VectorXd::Zero(H);
      for (Eigen::Index j : layout.massive_channels) m_hat[j] = static_cast<double>(x_probe(0, j));
      m_hat.normalize();
      const Eigen::VectorXd pm = normalized_projection(x_probe, m_hat, c.rms_norm_eps);
      const Eigen::VectorXd pc = normalized_projection(x_probe, u_common, c.rms_norm_eps);
      const double key = 0.5 * (pm[0] + pm[probe_delimiter]);  // the massive tokens' k before b
      const double query = mean_over(pc, probe_words);          // the words' q before a_h
      const double root_d = std::sqrt(static_cast<double>(d));
      const double b = std::sqrt(0.5 * (o.sink_logit_min + o.sink_logit_max) * root_d) / key;
      for (Eigen::Index g = 0; g < c.num_key_value_heads; ++g) {
        w[Linear::kK].row(g * d + low) = reading<Scalar>(b * m_hat, w.input_norm);
        w[Linear::kK].row(g * d + low + half).setZero();
      }
      auto& logits = layout.sink_logits[static_cast<std::size_t>(l)];
      for (Eigen::Index h = 0; h < c.num_attention_heads; ++h) {
        logits.push_back(sink_logit(rng));
        const double a = logits.back() * root_d / (b * key * query);
        w[Linear::kQ].row(h * d + low) = reading<Scalar>(a * u_common, w.input_norm);
        w[Linear::kQ].row(h * d + low + half).setZero();
      }
      for (Eigen::Index j : layout.massive_channels) w[Linear::kV].col(j) *= static_cast<Scalar>(o.sink_value_scale);
    }

    x_probe = forward(c, w, x_probe);
    model.layers.push_back(std::move(w));
  }
  return model;
}

}  // namespace llama
