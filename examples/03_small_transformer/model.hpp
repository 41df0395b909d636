// examples/03_small_transformer/model.hpp: a small byte-level LLaMA-style
// language model with its forward and backward pass written by hand in Eigen,
// and the two training-time outlier defences of Nrusimha et al. 2024 (arXiv
// 2404.03605) wired into every linear layer of its decoder blocks:
//
//   kurtosis regularizer   loss += λ·Σ_tokens K(row of the linear's output)
//                          (oq/kurtosis.hpp, docs/design.md §3)
//   QAT of the input       the linear reads x̂ = fake-quant of x with a learned
//                          two-sided clip [c−, c+] (oq/quant/learned_clip.hpp):
//                          one clip per distinct input, so q/k/v share one and
//                          gate/up share one (llama::Input), as an engine
//                          quantizes a shared input once
//
// The architecture is the one tools/llama/llama_layer.hpp runs
// (pre-norm RMSNorm, rotate-half RoPE, causal softmax attention, SwiGLU MLP,
// residual stream); the decoder blocks are stored as llama::LayerWeights, so
// a trained model runs through llama::forward and every W4A4 method of
// ../../tools/llama/methods.hpp unchanged. The embedding table and lm_head
// (untied) stay in full precision and outside the regularizers, as they stay
// outside W4A4 in the papers' evaluations.
//
// Training processes a batch of B sequences of T tokens as one (B·T) × hidden
// matrix, so every linear is one GEMM; attention runs per sequence and head.
// Every gradient of the full-precision path (all parameters, with and without
// the kurtosis term) is checked against finite differences in float64
// (tests/examples/small_transformer_test.cpp). With QAT the forward is a step
// function and the gradient is the straight-through one of docs/design.md §3
// (oq's learned_clip tests check that formula): the test checks by finite
// differences the parameters after the last quantizer, where the loss is
// smooth, and that 8-bit QAT with wide clips stays within rounding of the
// full-precision gradient while every clip receives one.
#pragma once

#include "../../tools/llama/llama_layer.hpp"

#include <oq/kurtosis.hpp>
#include <oq/quant/learned_clip.hpp>

#include <Eigen/Core>

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace small_lm {

template <class Scalar>
using Matrix = llama::Matrix<Scalar>;
template <class Scalar>
using Vector = llama::Vector<Scalar>;
using llama::Input;
using llama::Linear;

/// The model's shape. Byte-level: the vocabulary is the 256 byte values.
struct Config {
  Eigen::Index vocab_size = 256;
  Eigen::Index hidden_size = 128;
  Eigen::Index num_layers = 4;
  Eigen::Index num_heads = 4;
  Eigen::Index intermediate_size = 384;
  Eigen::Index seq_len = 128;  ///< training context (max_position_embeddings)
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;

  /// The decoder block's shape, as llama::forward takes it (no grouped KV).
  llama::Config layer_config() const {
    llama::Config c;
    c.hidden_size = hidden_size;
    c.intermediate_size = intermediate_size;
    c.num_attention_heads = num_heads;
    c.num_key_value_heads = num_heads;
    c.head_dim = num_heads > 0 ? hidden_size / num_heads : 0;
    c.rms_norm_eps = rms_norm_eps;
    c.rope_theta = rope_theta;
    return c;
  }

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("small_lm::Config: " + what); };
    // Token ids are bytes: a smaller table would be indexed out of range.
    if (vocab_size < 256) fail("vocab_size must be >= 256 (byte tokens), got " + std::to_string(vocab_size));
    if (num_layers <= 0) fail("num_layers must be > 0, got " + std::to_string(num_layers));
    if (seq_len <= 0) fail("seq_len must be > 0, got " + std::to_string(seq_len));
    if (num_heads <= 0 || hidden_size <= 0 || hidden_size % num_heads != 0) {
      fail("num_heads must divide hidden_size, got " + std::to_string(num_heads) + " heads for hidden_size " +
           std::to_string(hidden_size));
    }
    layer_config().validate();
  }
};

/// The training-time defences (all off by default: the baseline).
struct Regularization {
  double kurtosis_lambda = 0.0;  ///< λ of λ·Σ_tokens K(linear output); 0 = off
  int qat_bits = 0;              ///< bits of the learned-clip QAT of linear inputs; 0 = off
};

/// One parameter tensor seen as a flat array (for the optimizer, the gradient
/// norm and checkpoints). Decayed: AdamW's weight decay applies (matrices).
template <class Scalar>
struct TensorView {
  std::string name;  ///< Hugging Face LlamaForCausalLM name (clips: oq's own)
  Scalar* data;
  Eigen::Index rows;
  Eigen::Index cols;  ///< 1 for vectors
  bool decayed;

  Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>> flat() const { return {data, rows * cols}; }
};

/// Every trainable tensor of the model; the gradient has the same type.
template <class Scalar>
struct Parameters {
  Matrix<Scalar> embedding;                       ///< [vocab, hidden]
  std::vector<llama::LayerWeights<Scalar>> layers;
  Vector<Scalar> final_norm;                      ///< [hidden]
  Matrix<Scalar> lm_head;                         ///< [vocab, hidden]
  /// Learned QAT clips per layer, indexed by llama::Input (4 entries each).
  std::vector<Vector<Scalar>> clip_lo;
  std::vector<Vector<Scalar>> clip_hi;

  /// All zeros in the shapes of `c`.
  static Parameters zeros(const Config& c) {
    c.validate();
    const llama::Config lc = c.layer_config();
    Parameters p;
    p.embedding = Matrix<Scalar>::Zero(c.vocab_size, c.hidden_size);
    p.layers.resize(static_cast<std::size_t>(c.num_layers));
    for (auto& w : p.layers) {
      w.input_norm = Vector<Scalar>::Zero(c.hidden_size);
      w.post_norm = Vector<Scalar>::Zero(c.hidden_size);
      w[Linear::kQ] = Matrix<Scalar>::Zero(lc.q_size(), c.hidden_size);
      w[Linear::kK] = Matrix<Scalar>::Zero(lc.kv_size(), c.hidden_size);
      w[Linear::kV] = Matrix<Scalar>::Zero(lc.kv_size(), c.hidden_size);
      w[Linear::kO] = Matrix<Scalar>::Zero(c.hidden_size, lc.q_size());
      w[Linear::kGate] = Matrix<Scalar>::Zero(c.intermediate_size, c.hidden_size);
      w[Linear::kUp] = Matrix<Scalar>::Zero(c.intermediate_size, c.hidden_size);
      w[Linear::kDown] = Matrix<Scalar>::Zero(c.hidden_size, c.intermediate_size);
    }
    p.final_norm = Vector<Scalar>::Zero(c.hidden_size);
    p.lm_head = Matrix<Scalar>::Zero(c.vocab_size, c.hidden_size);
    p.clip_lo.assign(static_cast<std::size_t>(c.num_layers), Vector<Scalar>::Zero(4));
    p.clip_hi.assign(static_cast<std::size_t>(c.num_layers), Vector<Scalar>::Zero(4));
    return p;
  }

  /// GPT-2's initialisation: N(0, 0.02²) for every matrix, N(0, (0.02/√(2L))²)
  /// for the two that write into the residual stream (o_proj, down_proj), so
  /// that the stream's variance does not grow with depth; norms γ = 1. The
  /// clips start empty (c− = c+ = 0) and are set from data by init_clips().
  static Parameters initial(const Config& c, std::uint64_t seed) {
    Parameters p = zeros(c);
    std::mt19937_64 rng(seed);
    auto fill = [&rng](Matrix<Scalar>& m, double stddev) {
      std::normal_distribution<double> normal(0.0, stddev);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(normal(rng));
    };
    constexpr double kStd = 0.02;
    const double residual_std = kStd / std::sqrt(2.0 * static_cast<double>(c.num_layers));
    fill(p.embedding, kStd);
    for (auto& w : p.layers) {
      w.input_norm.setOnes();
      w.post_norm.setOnes();
      for (Linear l : llama::kAllLinears) fill(w[l], l == Linear::kO || l == Linear::kDown ? residual_std : kStd);
    }
    p.final_norm.setOnes();
    fill(p.lm_head, kStd);
    return p;
  }

  /// Every tensor, in a fixed order (the same for every Parameters of one Config).
  std::vector<TensorView<Scalar>> tensors() {
    std::vector<TensorView<Scalar>> t;
    auto add = [&t](std::string name, auto& m, bool decayed) {
      t.push_back({std::move(name), m.data(), m.rows(), m.cols(), decayed});
    };
    add("model.embed_tokens.weight", embedding, true);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      add(prefix + "input_layernorm.weight", layers[i].input_norm, false);
      add(prefix + "post_attention_layernorm.weight", layers[i].post_norm, false);
      for (Linear l : llama::kAllLinears) add(prefix + llama::linear_module(l) + ".weight", layers[i][l], true);
      add("oq.qat.layers." + std::to_string(i) + ".clip_lo", clip_lo[i], false);
      add("oq.qat.layers." + std::to_string(i) + ".clip_hi", clip_hi[i], false);
    }
    add("model.norm.weight", final_norm, false);
    add("lm_head.weight", lm_head, true);
    return t;
  }

  template <class To>
  Parameters<To> cast() const {
    Parameters<To> p;
    p.embedding = embedding.template cast<To>();
    for (const auto& w : layers) p.layers.push_back(w.template cast<To>());
    p.final_norm = final_norm.template cast<To>();
    p.lm_head = lm_head.template cast<To>();
    for (const auto& v : clip_lo) p.clip_lo.push_back(v.template cast<To>());
    for (const auto& v : clip_hi) p.clip_hi.push_back(v.template cast<To>());
    return p;
  }
};

/// A batch: `sequences` rows of seq_len + 1 bytes each; the model reads
/// bytes 0..T−1 of a row and predicts bytes 1..T.
struct Batch {
  Eigen::Index sequences = 0;
  Eigen::Index seq_len = 0;
  std::vector<std::uint8_t> bytes;  ///< sequences × (seq_len + 1)

  std::uint8_t input(Eigen::Index s, Eigen::Index t) const { return bytes[index(s, t)]; }
  std::uint8_t target(Eigen::Index s, Eigen::Index t) const { return bytes[index(s, t + 1)]; }

 private:
  std::size_t index(Eigen::Index s, Eigen::Index t) const {
    return static_cast<std::size_t>(s * (seq_len + 1) + t);
  }
};

/// The loss of one step: mean cross-entropy over the batch's tokens (nats)
/// plus the kurtosis regularizer's value.
struct Loss {
  double cross_entropy = 0;
  double kurtosis = 0;  ///< λ·Σ over linears and tokens of K (0 when λ = 0)
  double total() const { return cross_entropy + kurtosis; }
};

namespace detail_model {

template <class Scalar>
using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

// RMSNorm of every row, keeping what the backward needs: x̂ = x·r (before γ)
// and r = 1/sqrt(mean(x²) + eps), the mean accumulated in double as
// llama::rms_norm does.
template <class Scalar>
struct NormCache {
  Matrix<Scalar> normalized;  // x̂
  Array<Scalar> rstd;         // r per row
};

template <class Scalar>
Matrix<Scalar> rms_norm(const Matrix<Scalar>& x, const Vector<Scalar>& gamma, double eps, NormCache<Scalar>& cache) {
  cache.normalized.resize(x.rows(), x.cols());
  cache.rstd.resize(x.rows());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double mean_square = x.row(t).template cast<double>().squaredNorm() / static_cast<double>(x.cols());
    cache.rstd(t) = static_cast<Scalar>(1.0 / std::sqrt(mean_square + eps));
    cache.normalized.row(t) = x.row(t) * cache.rstd(t);
  }
  return (cache.normalized.array().rowwise() * gamma.transpose().array()).matrix();
}

// y = x̂⊙γ with x̂ = x·r: ∂γ = Σ_rows dy⊙x̂; with g = dy⊙γ,
// ∂x = r·(g − x̂·mean(g⊙x̂)) because ∂r/∂x_i = −r³·x_i/n.
template <class Scalar>
Matrix<Scalar> rms_norm_backward(const Matrix<Scalar>& dy, const Vector<Scalar>& gamma, const NormCache<Scalar>& cache,
                                 Vector<Scalar>& dgamma) {
  dgamma += (dy.array() * cache.normalized.array()).colwise().sum().transpose().matrix();
  const Matrix<Scalar> g = (dy.array().rowwise() * gamma.transpose().array()).matrix();
  const Array<Scalar> mean_gx =
      (g.array() * cache.normalized.array()).rowwise().sum() / static_cast<Scalar>(g.cols());
  Matrix<Scalar> dx = g - (cache.normalized.array().colwise() * mean_gx).matrix();
  dx.array().colwise() *= cache.rstd;
  return dx;
}

// RoPE tables, angle t·θ^(−2i/d) in double as llama::apply_rope computes it.
template <class Scalar>
struct RopeTable {
  Matrix<Scalar> cos, sin;  // seq_len × head_dim/2

  RopeTable(Eigen::Index seq_len, Eigen::Index head_dim, double theta) : cos(seq_len, head_dim / 2), sin(seq_len, head_dim / 2) {
    for (Eigen::Index i = 0; i < head_dim / 2; ++i) {
      const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
      for (Eigen::Index t = 0; t < seq_len; ++t) {
        cos(t, i) = static_cast<Scalar>(std::cos(static_cast<double>(t) * inv_freq));
        sin(t, i) = static_cast<Scalar>(std::sin(static_cast<double>(t) * inv_freq));
      }
    }
  }
};

// Rotates the pairs (i, i + d/2) of every head of x (rows = B·T, position =
// row mod T) by +angle (forward) or −angle (the transpose: the backward).
template <class Scalar>
void rope(Matrix<Scalar>& x, const RopeTable<Scalar>& table, Eigen::Index seq_len, Eigen::Index head_dim,
          bool inverse) {
  const Eigen::Index half = head_dim / 2, heads = x.cols() / head_dim;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const Eigen::Index t = r % seq_len;
    for (Eigen::Index h = 0; h < heads; ++h) {
      for (Eigen::Index i = 0; i < half; ++i) {
        const Scalar c = table.cos(t, i);
        const Scalar s = inverse ? -table.sin(t, i) : table.sin(t, i);
        Scalar& a = x(r, h * head_dim + i);
        Scalar& b = x(r, h * head_dim + i + half);
        const Scalar a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
    }
  }
}

template <class Scalar>
struct LayerCache {
  Matrix<Scalar> x;                       // block input (residual stream)
  NormCache<Scalar> norm1, norm2;
  std::array<Matrix<Scalar>, 4> inputs;   // the linears' inputs before QAT, by llama::Input
  std::array<Matrix<Scalar>, 4> read;     // what the linears read (after QAT, else empty)
  std::array<Matrix<Scalar>, 7> outputs;  // the linears' outputs, by llama::Linear (q, k before RoPE)
  Matrix<Scalar> q_rope, k_rope;
  std::vector<Matrix<Scalar>> probabilities;  // softmax per (sequence, head), T × T
  Matrix<Scalar> h;                       // residual after attention
};

}  // namespace detail_model

/// The model: forward and backward on a batch.
///
///   small_lm::Model<float> model(config, regularization);
///   Parameters<float> grad = Parameters<float>::zeros(config);
///   Loss loss = model.loss_and_gradient(params, batch, grad);   // grad is overwritten
template <class Scalar>
class Model {
 public:
  Model(Config config, Regularization regularization)
      : config_(validated(config)),
        layer_(config.layer_config()),
        regularization_(regularization),
        rope_(config.seq_len, config.layer_config().head_dim, config.rope_theta) {
    if (!(std::isfinite(regularization.kurtosis_lambda) && regularization.kurtosis_lambda >= 0)) {
      throw std::invalid_argument("small_lm::Model: kurtosis_lambda must be finite and >= 0, got " +
                                  std::to_string(regularization.kurtosis_lambda));
    }
    if (regularization.qat_bits != 0 && (regularization.qat_bits < 2 || regularization.qat_bits > 8)) {
      throw std::invalid_argument("small_lm::Model: qat_bits must be 0 (off) or in [2, 8], got " +
                                  std::to_string(regularization.qat_bits));
    }
  }

  const Config& config() const { return config_; }
  const Regularization& regularization() const { return regularization_; }

  /// The layers' caches of the last forward (statistics read them).
  const std::vector<detail_model::LayerCache<Scalar>>& caches() const { return caches_; }
  /// The residual stream after the last block, from the last forward.
  const Matrix<Scalar>& final_hidden() const { return final_x_; }

  /// Cross-entropy (and regularizer) of the batch without gradients.
  Loss loss(const Parameters<Scalar>& p, const Batch& batch) {
    Matrix<Scalar> dlogits;
    return forward(p, batch, /*want_grad=*/false, dlogits);
  }

  /// The loss and its gradient with respect to every parameter, into `grad`
  /// (overwritten; make it with Parameters::zeros(config)). With QAT on, the
  /// gradient is the straight-through one of learned_clip_grad (docs/design.md §3).
  Loss loss_and_gradient(const Parameters<Scalar>& p, const Batch& batch, Parameters<Scalar>& grad) {
    check_same_shapes(const_cast<Parameters<Scalar>&>(p), grad);  // tensors() only takes views
    Matrix<Scalar> dlogits;
    const Loss loss = forward(p, batch, /*want_grad=*/true, dlogits);
    backward(p, batch, dlogits, grad);
    return loss;
  }

  /// Sets every QAT clip to the [min, max] its input takes on `batch` in a
  /// full-precision forward (the clips' start; training then learns them).
  void init_clips(Parameters<Scalar>& p, const Batch& batch) {
    Model<Scalar> plain(config_, Regularization{});
    plain.loss(p, batch);
    caches_ = std::move(plain.caches_);
    for (std::size_t l = 0; l < caches_.size(); ++l) {
      for (Input in : llama::kAllInputs) {
        const auto i = static_cast<Eigen::Index>(in);
        const Matrix<Scalar>& x = caches_[l].inputs[static_cast<std::size_t>(i)];
        p.clip_lo[l](i) = x.minCoeff();
        p.clip_hi[l](i) = x.maxCoeff();
        if (!(p.clip_lo[l](i) < p.clip_hi[l](i))) p.clip_hi[l](i) = p.clip_lo[l](i) + Scalar(1);
      }
    }
  }

  /// Keeps every learned clip ordered, c+ ≥ c− + min_width, after an
  /// optimizer step (the quantizer refuses c− ≥ c+). Does nothing without QAT.
  void project_clips(Parameters<Scalar>& p, Scalar min_width = Scalar(1e-3)) const {
    if (!qat()) return;
    for (std::size_t l = 0; l < p.clip_lo.size(); ++l) {
      p.clip_hi[l] = p.clip_hi[l].array().max(p.clip_lo[l].array() + min_width).matrix();
    }
  }

 private:
  void check_batch(const Parameters<Scalar>& p, const Batch& batch) const {
    if (batch.seq_len != config_.seq_len) {
      throw std::invalid_argument("small_lm::Model: batch.seq_len must be the config's " +
                                  std::to_string(config_.seq_len) + ", got " + std::to_string(batch.seq_len));
    }
    if (batch.sequences <= 0 ||
        batch.bytes.size() != static_cast<std::size_t>(batch.sequences * (batch.seq_len + 1))) {
      throw std::invalid_argument("small_lm::Model: batch must hold sequences × (seq_len + 1) bytes");
    }
    if (p.layers.size() != static_cast<std::size_t>(config_.num_layers) ||
        p.embedding.rows() != config_.vocab_size || p.embedding.cols() != config_.hidden_size ||
        p.lm_head.rows() != config_.vocab_size || p.lm_head.cols() != config_.hidden_size ||
        p.final_norm.size() != config_.hidden_size) {
      throw std::invalid_argument("small_lm::Model: parameters do not have the config's shapes");
    }
    for (const auto& w : p.layers) w.validate(layer_);
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
      if (p.clip_lo.size() != p.layers.size() || p.clip_hi.size() != p.layers.size() || p.clip_lo[l].size() != 4 ||
          p.clip_hi[l].size() != 4) {
        throw std::invalid_argument("small_lm::Model: clip_lo and clip_hi must hold 4 entries per layer");
      }
      if (qat()) {
        for (Eigen::Index i = 0; i < 4; ++i) {
          if (!(p.clip_lo[l](i) < p.clip_hi[l](i))) {
            throw std::invalid_argument("small_lm::Model: QAT clip of layer " + std::to_string(l) + ", input " +
                                        std::to_string(i) + " is empty (clip_lo >= clip_hi): call init_clips first");
          }
        }
      }
    }
  }

  // The gradient must have the parameters' shapes (it is written in place).
  static void check_same_shapes(Parameters<Scalar>& p, Parameters<Scalar>& grad) {
    const auto a = p.tensors(), b = grad.tensors();
    bool same = a.size() == b.size();
    for (std::size_t i = 0; same && i < a.size(); ++i) same = a[i].rows == b[i].rows && a[i].cols == b[i].cols;
    if (!same) {
      throw std::invalid_argument("small_lm::Model: grad must have the parameters' shapes (Parameters::zeros(config))");
    }
  }

  static Config validated(Config c) {
    c.validate();
    return c;
  }

  bool qat() const { return regularization_.qat_bits != 0; }
  bool kurtosis() const { return regularization_.kurtosis_lambda > 0; }

  // The input of linear input `in`: QAT'd into cache.read when on.
  const Matrix<Scalar>& read_input(const Parameters<Scalar>& p, std::size_t layer, Input in,
                                   detail_model::LayerCache<Scalar>& cache) const {
    const auto i = static_cast<std::size_t>(in);
    if (!qat()) return cache.inputs[i];
    cache.read[i] = oq::quant::learned_clip_fake_quantize(cache.inputs[i], p.clip_lo[layer](static_cast<Eigen::Index>(i)),
                                                          p.clip_hi[layer](static_cast<Eigen::Index>(i)),
                                                          regularization_.qat_bits);
    return cache.read[i];
  }

  Matrix<Scalar>& linear(const Parameters<Scalar>& p, std::size_t layer, Linear l, const Matrix<Scalar>& in,
                         detail_model::LayerCache<Scalar>& cache, double& kurtosis_sum) const {
    Matrix<Scalar>& y = cache.outputs[static_cast<std::size_t>(l)];
    const Matrix<Scalar>& w = p.layers[layer][l];
    y.resize(in.rows(), w.rows());
    y.noalias() = in * w.transpose();
    if (kurtosis()) kurtosis_sum += oq::analysis::kurtosis_regularizer(y, regularization_.kurtosis_lambda);
    return y;
  }

  Loss forward(const Parameters<Scalar>& p, const Batch& batch, bool want_grad, Matrix<Scalar>& dlogits) {
    check_batch(p, batch);
    const Eigen::Index T = config_.seq_len, B = batch.sequences, n = B * T, d = layer_.head_dim;
    const Eigen::Index heads = config_.num_heads;
    Matrix<Scalar> x(n, config_.hidden_size);
    for (Eigen::Index s = 0; s < B; ++s) {
      for (Eigen::Index t = 0; t < T; ++t) x.row(s * T + t) = p.embedding.row(batch.input(s, t));
    }
    caches_.resize(p.layers.size());
    double kurtosis_sum = 0;
    const auto scale = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(d)));
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
      const auto& w = p.layers[l];
      auto& c = caches_[l];
      c.x = x;
      auto& attn_in = c.inputs[static_cast<std::size_t>(Input::kAttention)];
      attn_in = detail_model::rms_norm(x, w.input_norm, config_.rms_norm_eps, c.norm1);
      const Matrix<Scalar>& a = read_input(p, l, Input::kAttention, c);
      c.q_rope = linear(p, l, Linear::kQ, a, c, kurtosis_sum);
      c.k_rope = linear(p, l, Linear::kK, a, c, kurtosis_sum);
      const Matrix<Scalar>& v = linear(p, l, Linear::kV, a, c, kurtosis_sum);
      detail_model::rope(c.q_rope, rope_, T, d, false);
      detail_model::rope(c.k_rope, rope_, T, d, false);
      auto& att = c.inputs[static_cast<std::size_t>(Input::kO)];
      att.resize(n, layer_.q_size());
      c.probabilities.resize(static_cast<std::size_t>(B * heads));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
      for (Eigen::Index job = 0; job < B * heads; ++job) {
        const Eigen::Index s = job / heads, h = job % heads;
        Matrix<Scalar>& prob = c.probabilities[static_cast<std::size_t>(job)];
        prob.noalias() = c.q_rope.block(s * T, h * d, T, d) * c.k_rope.block(s * T, h * d, T, d).transpose();
        prob *= scale;
        for (Eigen::Index t = 0; t < T; ++t) {  // causal softmax over keys 0..t, max-subtracted
          auto row = prob.row(t).head(t + 1);
          row = (row.array() - row.maxCoeff()).exp();
          row /= row.sum();
          prob.row(t).tail(T - t - 1).setZero();
        }
        att.block(s * T, h * d, T, d).noalias() = prob * v.block(s * T, h * d, T, d);
      }
      const Matrix<Scalar>& o = linear(p, l, Linear::kO, read_input(p, l, Input::kO, c), c, kurtosis_sum);
      c.h = x + o;
      auto& mlp_in = c.inputs[static_cast<std::size_t>(Input::kMlp)];
      mlp_in = detail_model::rms_norm(c.h, w.post_norm, config_.rms_norm_eps, c.norm2);
      const Matrix<Scalar>& m = read_input(p, l, Input::kMlp, c);
      const Matrix<Scalar>& gate = linear(p, l, Linear::kGate, m, c, kurtosis_sum);
      const Matrix<Scalar>& up = linear(p, l, Linear::kUp, m, c, kurtosis_sum);
      auto& act = c.inputs[static_cast<std::size_t>(Input::kDown)];
      act = (gate.array() / (Scalar(1) + (-gate.array()).exp()) * up.array()).matrix();  // silu(g)⊙u
      x = c.h + linear(p, l, Linear::kDown, read_input(p, l, Input::kDown, c), c, kurtosis_sum);
    }
    final_x_ = x;
    const Matrix<Scalar> normed = detail_model::rms_norm(x, p.final_norm, config_.rms_norm_eps, final_norm_);
    Matrix<Scalar> logits(n, config_.vocab_size);
    logits.noalias() = normed * p.lm_head.transpose();
    // Cross-entropy, max-subtracted; ∂/∂logits = (softmax − onehot)/n.
    double ce = 0;
    if (want_grad) dlogits.resize(n, config_.vocab_size);
    for (Eigen::Index r = 0; r < n; ++r) {
      const Eigen::Index target = batch.target(r / T, r % T);
      auto row = logits.row(r).array();
      const Scalar mx = row.maxCoeff();
      const double sum = (row - mx).template cast<double>().exp().sum();
      ce += std::log(sum) - static_cast<double>(row(target) - mx);
      if (want_grad) {
        dlogits.row(r) = ((row - mx).exp() / static_cast<Scalar>(sum) / static_cast<Scalar>(n)).matrix();
        dlogits(r, target) -= Scalar(1) / static_cast<Scalar>(n);
      }
    }
    final_normed_ = normed;
    return Loss{ce / static_cast<double>(n), kurtosis_sum};
  }

  // ∂ of a linear: dW += dyᵀ·x̂ and returns ∂L/∂x̂ = dy·W, with the
  // regularizer's λ·∂K/∂y added to dy first.
  Matrix<Scalar> linear_backward(const Parameters<Scalar>& p, std::size_t layer, Linear l, Matrix<Scalar> dy,
                                 const Matrix<Scalar>& read, Parameters<Scalar>& grad) const {
    const auto& cache = caches_[layer];
    if (kurtosis()) {
      dy += oq::analysis::kurtosis_regularizer_grad(cache.outputs[static_cast<std::size_t>(l)],
                                                    regularization_.kurtosis_lambda);
    }
    grad.layers[layer][l].noalias() += dy.transpose() * read;
    Matrix<Scalar> dx(dy.rows(), read.cols());
    dx.noalias() = dy * p.layers[layer][l];
    return dx;
  }

  const Matrix<Scalar>& read_of(std::size_t layer, Input in) const {
    const auto& c = caches_[layer];
    const auto i = static_cast<std::size_t>(in);
    return qat() ? c.read[i] : c.inputs[i];
  }

  // ∂L/∂x̂ → ∂L/∂x through the learned clip (straight-through inside, the
  // clips' gradients accumulated), or unchanged without QAT.
  Matrix<Scalar> input_backward(const Parameters<Scalar>& p, std::size_t layer, Input in, const Matrix<Scalar>& dread,
                                Parameters<Scalar>& grad) const {
    if (!qat()) return dread;
    const auto i = static_cast<Eigen::Index>(in);
    auto g = oq::quant::learned_clip_grad(caches_[layer].inputs[static_cast<std::size_t>(i)], p.clip_lo[layer](i),
                                          p.clip_hi[layer](i), regularization_.qat_bits, dread);
    grad.clip_lo[layer](i) += g.clip_lo;
    grad.clip_hi[layer](i) += g.clip_hi;
    return std::move(g.x);
  }

  void backward(const Parameters<Scalar>& p, const Batch& batch, const Matrix<Scalar>& dlogits,
                Parameters<Scalar>& grad) {
    for (auto& t : grad.tensors()) t.flat().setZero();
    const Eigen::Index T = config_.seq_len, B = batch.sequences, d = layer_.head_dim, heads = config_.num_heads;
    const auto scale = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(d)));
    grad.lm_head.noalias() = dlogits.transpose() * final_normed_;
    Matrix<Scalar> dnormed = dlogits * p.lm_head;
    Matrix<Scalar> dx = detail_model::rms_norm_backward(dnormed, p.final_norm, final_norm_, grad.final_norm);
    for (std::size_t l = p.layers.size(); l-- > 0;) {
      const auto& w = p.layers[l];
      const auto& c = caches_[l];
      // MLP: x' = h + down(act), act = silu(g)⊙u, g/u = gate/up(norm₂(h)).
      Matrix<Scalar> dact = input_backward(
          p, l, Input::kDown, linear_backward(p, l, Linear::kDown, dx, read_of(l, Input::kDown), grad), grad);
      const auto& gate = c.outputs[static_cast<std::size_t>(Linear::kGate)].array();
      const auto& up = c.outputs[static_cast<std::size_t>(Linear::kUp)].array();
      const auto sigmoid = (Scalar(1) / (Scalar(1) + (-gate).exp())).eval();
      // silu'(g) = σ(g)·(1 + g·(1 − σ(g)))
      const Matrix<Scalar> dgate = (dact.array() * up * sigmoid * (Scalar(1) + gate * (Scalar(1) - sigmoid))).matrix();
      const Matrix<Scalar> dup = (dact.array() * gate * sigmoid).matrix();
      Matrix<Scalar> dm = linear_backward(p, l, Linear::kGate, dgate, read_of(l, Input::kMlp), grad);
      dm += linear_backward(p, l, Linear::kUp, dup, read_of(l, Input::kMlp), grad);
      dm = input_backward(p, l, Input::kMlp, dm, grad);
      Matrix<Scalar> dh = dx + detail_model::rms_norm_backward(dm, w.post_norm, c.norm2, grad.layers[l].post_norm);
      // Attention: h = x + o_proj(att).
      const Matrix<Scalar> datt = input_backward(
          p, l, Input::kO, linear_backward(p, l, Linear::kO, dh, read_of(l, Input::kO), grad), grad);
      const Matrix<Scalar>& v = c.outputs[static_cast<std::size_t>(Linear::kV)];
      Matrix<Scalar> dq(B * T, layer_.q_size()), dk(B * T, layer_.kv_size()), dv(B * T, layer_.kv_size());
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
      for (Eigen::Index job = 0; job < B * heads; ++job) {
        const Eigen::Index s = job / heads, h = job % heads;
        const Matrix<Scalar>& prob = c.probabilities[static_cast<std::size_t>(job)];
        const auto dout = datt.block(s * T, h * d, T, d);
        // O = P·V: ∂V = Pᵀ·∂O, ∂P = ∂O·Vᵀ; softmax rows: ∂S = P⊙(∂P − rowsum(∂P⊙P));
        // S = scale·Q·Kᵀ: ∂Q = scale·∂S·K, ∂K = scale·∂Sᵀ·Q. Masked entries have P = 0.
        dv.block(s * T, h * d, T, d).noalias() = prob.transpose() * dout;
        Matrix<Scalar> dprob = dout * v.block(s * T, h * d, T, d).transpose();
        const Eigen::Array<Scalar, Eigen::Dynamic, 1> dot = (dprob.array() * prob.array()).rowwise().sum();
        Matrix<Scalar> dscore = (prob.array() * (dprob.array().colwise() - dot)).matrix() * scale;
        dq.block(s * T, h * d, T, d).noalias() = dscore * c.k_rope.block(s * T, h * d, T, d);
        dk.block(s * T, h * d, T, d).noalias() = dscore.transpose() * c.q_rope.block(s * T, h * d, T, d);
      }
      detail_model::rope(dq, rope_, T, d, true);
      detail_model::rope(dk, rope_, T, d, true);
      const Matrix<Scalar>& a = read_of(l, Input::kAttention);
      Matrix<Scalar> da = linear_backward(p, l, Linear::kQ, dq, a, grad);
      da += linear_backward(p, l, Linear::kK, dk, a, grad);
      da += linear_backward(p, l, Linear::kV, dv, a, grad);
      da = input_backward(p, l, Input::kAttention, da, grad);
      dx = dh + detail_model::rms_norm_backward(da, w.input_norm, c.norm1, grad.layers[l].input_norm);
    }
    for (Eigen::Index s = 0; s < B; ++s) {
      for (Eigen::Index t = 0; t < T; ++t) grad.embedding.row(batch.input(s, t)) += dx.row(s * T + t);
    }
  }

  Config config_;
  llama::Config layer_;
  Regularization regularization_;
  detail_model::RopeTable<Scalar> rope_;
  std::vector<detail_model::LayerCache<Scalar>> caches_;
  detail_model::NormCache<Scalar> final_norm_;
  Matrix<Scalar> final_normed_;
  Matrix<Scalar> final_x_;
};

}  // namespace small_lm
