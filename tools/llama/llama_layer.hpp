// tools/llama/llama_layer.hpp: one LLaMA decoder layer in Eigen,
// as Hugging Face transformers' LlamaDecoderLayer computes it.
//
//   h   = x + o_proj(attention(rope(q_proj(n₁)), rope(k_proj(n₁)), v_proj(n₁))),  n₁ = RMSNorm₁(x)
//   out = h + down_proj(silu(gate_proj(n₂)) ⊙ up_proj(n₂)),                         n₂ = RMSNorm₂(h)
//
// RMSNorm(x) = x / sqrt(mean(x²) + eps) ⊙ γ; RoPE in the "rotate half"
// layout of transformers (dimension i pairs with i + head_dim/2, frequency
// theta^(−2i/head_dim)); causal softmax attention with grouped-query heads
// (query head h reads key/value head h / (heads / kv_heads)). Weights are
// PyTorch's [out, in], so every linear is y = x·Wᵀ (docs/design.md §4).
//
// The seven linears go through a caller-supplied function, so that the same
// forward runs in full precision, records the linears' inputs for calibration,
// or runs them quantized (methods.hpp).
#pragma once

#include <Eigen/Core>

#include <array>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace llama {

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// The shape of a LLaMA layer: the fields of a Hugging Face config.json that
/// the layer needs (config.hpp reads them).
struct Config {
  Eigen::Index hidden_size = 4096;
  Eigen::Index intermediate_size = 11008;
  Eigen::Index num_attention_heads = 32;
  Eigen::Index num_key_value_heads = 32;
  Eigen::Index head_dim = 128;  ///< hidden_size / heads unless config.json says otherwise
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;

  /// Throws std::invalid_argument naming the first inconsistent field.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("llama::Config: " + what); };
    if (hidden_size <= 0) fail("hidden_size must be > 0, got " + std::to_string(hidden_size));
    if (intermediate_size <= 0) fail("intermediate_size must be > 0, got " + std::to_string(intermediate_size));
    if (num_attention_heads <= 0) fail("num_attention_heads must be > 0");
    if (num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0) {
      fail("num_key_value_heads must divide num_attention_heads (" + std::to_string(num_attention_heads) +
           "), got " + std::to_string(num_key_value_heads));
    }
    if (head_dim <= 0 || head_dim % 2 != 0) fail("head_dim must be even and > 0, got " + std::to_string(head_dim));
    if (!(rms_norm_eps >= 0.0)) fail("rms_norm_eps must be >= 0");
    if (!(rope_theta > 0.0)) fail("rope_theta must be > 0");
  }
  Eigen::Index q_size() const { return num_attention_heads * head_dim; }
  Eigen::Index kv_size() const { return num_key_value_heads * head_dim; }
};

/// The seven linear layers, in the order of the forward pass.
enum class Linear { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr std::array<Linear, 7> kAllLinears{Linear::kQ,    Linear::kK,  Linear::kV,   Linear::kO,
                                                   Linear::kGate, Linear::kUp, Linear::kDown};

inline constexpr std::string_view linear_name(Linear l) {
  constexpr std::array<std::string_view, 7> names{"q_proj", "k_proj", "v_proj", "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
  return names[static_cast<std::size_t>(l)];
}

/// The Hugging Face module path of a linear: "self_attn.q_proj", "mlp.down_proj", ...
inline std::string linear_module(Linear l) {
  const bool attention = l == Linear::kQ || l == Linear::kK || l == Linear::kV || l == Linear::kO;
  return std::string(attention ? "self_attn." : "mlp.") + std::string(linear_name(l));
}

/// Linears that read the same activation share one input transform (q/k/v read
/// RMSNorm₁'s output, gate/up RMSNorm₂'s): the input each linear reads.
enum class Input { kAttention, kO, kMlp, kDown };
inline constexpr std::array<Input, 4> kAllInputs{Input::kAttention, Input::kO, Input::kMlp, Input::kDown};

inline constexpr Input input_of(Linear l) {
  switch (l) {
    case Linear::kQ:
    case Linear::kK:
    case Linear::kV: return Input::kAttention;
    case Linear::kO: return Input::kO;
    case Linear::kGate:
    case Linear::kUp: return Input::kMlp;
    case Linear::kDown: return Input::kDown;
  }
  return Input::kAttention;
}

inline constexpr std::string_view input_name(Input i) {
  constexpr std::array<std::string_view, 4> names{"qkv input", "o_proj input", "gate/up input", "down_proj input"};
  return names[static_cast<std::size_t>(i)];
}

/// The [out, in] shape of a linear in a layer of shape `c`.
inline std::array<Eigen::Index, 2> linear_shape(const Config& c, Linear l) {
  const Eigen::Index h = c.hidden_size, f = c.intermediate_size;
  switch (l) {
    case Linear::kQ: return {c.q_size(), h};
    case Linear::kK:
    case Linear::kV: return {c.kv_size(), h};
    case Linear::kO: return {h, c.q_size()};
    case Linear::kGate:
    case Linear::kUp: return {f, h};
    case Linear::kDown: return {h, f};
  }
  return {0, 0};
}

/// The width (channels) of a linear input in a layer of shape `c`.
inline Eigen::Index input_width(const Config& c, Input i) {
  switch (i) {
    case Input::kAttention:
    case Input::kMlp: return c.hidden_size;
    case Input::kO: return c.q_size();
    case Input::kDown: return c.intermediate_size;
  }
  return 0;
}

template <class Scalar>
struct LayerWeights {
  Vector<Scalar> input_norm;     ///< γ of input_layernorm (hidden)
  Vector<Scalar> post_norm;      ///< γ of post_attention_layernorm (hidden)
  std::array<Matrix<Scalar>, 7> linear;  ///< indexed by Linear; [out, in]

  Matrix<Scalar>& operator[](Linear l) { return linear[static_cast<std::size_t>(l)]; }
  const Matrix<Scalar>& operator[](Linear l) const { return linear[static_cast<std::size_t>(l)]; }

  template <class To>
  LayerWeights<To> cast() const {
    LayerWeights<To> out;
    out.input_norm = input_norm.template cast<To>();
    out.post_norm = post_norm.template cast<To>();
    for (std::size_t i = 0; i < linear.size(); ++i) out.linear[i] = linear[i].template cast<To>();
    return out;
  }

  /// Throws std::invalid_argument naming the first tensor whose shape does not match `c`.
  void validate(const Config& c) const {
    validate_norms(c);
    for (Linear l : kAllLinears) check_linear_shape(c, l, (*this)[l].rows(), (*this)[l].cols(), "llama::LayerWeights");
  }

  /// The same for the two norms only (for a forward whose linears hold their own weights).
  void validate_norms(const Config& c) const {
    check_shape("llama::LayerWeights: input_layernorm", input_norm.size(), 1, c.hidden_size, 1);
    check_shape("llama::LayerWeights: post_attention_layernorm", post_norm.size(), 1, c.hidden_size, 1);
  }

  /// Throws std::invalid_argument unless rows × cols is `l`'s [out, in] shape in `c`.
  static void check_linear_shape(const Config& c, Linear l, Eigen::Index rows, Eigen::Index cols, std::string_view where) {
    const auto s = linear_shape(c, l);
    check_shape(std::string(where) + ": " + std::string(linear_name(l)), rows, cols, s[0], s[1]);
  }

 private:
  static void check_shape(const std::string& name, Eigen::Index rows, Eigen::Index cols, Eigen::Index want_rows,
                          Eigen::Index want_cols) {
    if (rows != want_rows || cols != want_cols) {
      throw std::invalid_argument(name + " must be " + std::to_string(want_rows) + " x " + std::to_string(want_cols) +
                                  ", got " + std::to_string(rows) + " x " + std::to_string(cols));
    }
  }
};

/// RMSNorm over each row (token): x / sqrt(mean(x²) + eps) ⊙ γ, in double
/// accumulation for the mean (transformers upcasts to float32 for the same
/// reason: the sum of squares of a row with massive activations).
template <class Scalar>
Matrix<Scalar> rms_norm(const Matrix<Scalar>& x, const Vector<Scalar>& gamma, double eps) {
  Matrix<Scalar> y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double mean_square = x.row(t).template cast<double>().squaredNorm() / static_cast<double>(x.cols());
    const auto inv = static_cast<Scalar>(1.0 / std::sqrt(mean_square + eps));
    y.row(t) = (x.row(t).array() * inv) * gamma.transpose().array();
  }
  return y;
}

/// RoPE in place on every head of x (tokens × heads·head_dim), token t at
/// position t: pairs (i, i + d/2) rotate by angle t·theta^(−2i/d).
template <class Scalar>
void apply_rope(Matrix<Scalar>& x, Eigen::Index head_dim, double theta) {
  const Eigen::Index half = head_dim / 2;
  const Eigen::Index heads = x.cols() / head_dim;
  for (Eigen::Index i = 0; i < half; ++i) {
    // transformers computes inv_freq = 1 / theta^(arange(0, d, 2)/d) and the
    // angles t·inv_freq in float32; here in double. The angles then differ by
    // up to ~t·2^-24 rad, so cos/sin by ~1e-5 at t = 128: a comparison with
    // transformers needs a tolerance that grows with the position.
    const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const double angle = static_cast<double>(t) * inv_freq;
      const auto c = static_cast<Scalar>(std::cos(angle));
      const auto s = static_cast<Scalar>(std::sin(angle));
      for (Eigen::Index h = 0; h < heads; ++h) {
        Scalar& a = x(t, h * head_dim + i);
        Scalar& b = x(t, h * head_dim + i + half);
        const Scalar a0 = a, b0 = b;
        a = a0 * c - b0 * s;  // q·cos + rotate_half(q)·sin, rotate_half(q) = (−q₂, q₁)
        b = b0 * c + a0 * s;
      }
    }
  }
}

/// Causal softmax attention with grouped-query heads; q is tokens × heads·d,
/// k and v tokens × kv_heads·d (RoPE already applied). Returns tokens × heads·d.
template <class Scalar>
Matrix<Scalar> causal_attention(const Matrix<Scalar>& q, const Matrix<Scalar>& k, const Matrix<Scalar>& v,
                                const Config& c) {
  const Eigen::Index tokens = q.rows(), d = c.head_dim;
  const Eigen::Index group = c.num_attention_heads / c.num_key_value_heads;
  const auto scale = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(d)));
  Matrix<Scalar> out(tokens, c.q_size());
  for (Eigen::Index h = 0; h < c.num_attention_heads; ++h) {
    const Eigen::Index kv = h / group;
    const auto qh = q.middleCols(h * d, d);
    const auto kh = k.middleCols(kv * d, d);
    const auto vh = v.middleCols(kv * d, d);
    Matrix<Scalar> scores = (qh * kh.transpose()) * scale;
    for (Eigen::Index t = 0; t < tokens; ++t) {
      // Softmax over keys 0..t (the causal mask), max-subtracted.
      auto row = scores.row(t).head(t + 1);
      const Scalar m = row.maxCoeff();
      row = (row.array() - m).exp();
      row /= row.sum();
      scores.row(t).tail(tokens - t - 1).setZero();
    }
    out.middleCols(h * d, d).noalias() = scores * vh;
  }
  return out;
}

/// y = x·Wᵀ: the full-precision linear, the default of forward().
struct PlainLinear {
  template <class Scalar>
  Matrix<Scalar> operator()(Linear, const Matrix<Scalar>& x, const Matrix<Scalar>& w) const {
    Matrix<Scalar> y(x.rows(), w.rows());
    y.noalias() = x * w.transpose();
    return y;
  }
};

/// What the linears reading `input` take: linear.prepare(input, x) when the
/// functor has one (a transform and quantizer of the input, run once per
/// distinct input rather than once per linear), else x itself. prepare() may
/// return a matrix or anything its linears read (integer_path.hpp: packed
/// integer codes).
template <class LinearFn, class Scalar>
decltype(auto) prepared_input(LinearFn& linear, Input input, const Matrix<Scalar>& x) {
  if constexpr (requires { linear.prepare(input, x); }) {
    return std::remove_cvref_t<decltype(linear.prepare(input, x))>(linear.prepare(input, x));
  } else {
    return (x);
  }
}

/// The layer's forward pass on x (tokens × hidden, token t at position t).
/// `linear(which, input, weight)` computes each of the seven linears; it is
/// called once per linear, in the order of kAllLinears, on the input as
/// prepared_input() returns it.
template <class Scalar, class LinearFn = PlainLinear>
Matrix<Scalar> forward(const Config& c, const LayerWeights<Scalar>& w, const Matrix<Scalar>& x,
                       LinearFn&& linear = LinearFn{}) {
  if (x.cols() != c.hidden_size) {
    throw std::invalid_argument("llama::forward: x must have hidden_size = " + std::to_string(c.hidden_size) +
                                " columns, got " + std::to_string(x.cols()));
  }
  c.validate();
  // The attention below slices q/k/v by the config's head counts. A linear
  // that holds its own weights (quantized ones) checks them itself, and w
  // then needs only its norms.
  if constexpr (requires { linear.validate(c); }) {
    w.validate_norms(c);
    linear.validate(c);
  } else {
    w.validate(c);
  }
  const Matrix<Scalar> n1 = rms_norm(x, w.input_norm, c.rms_norm_eps);
  const auto& a = prepared_input(linear, Input::kAttention, n1);
  Matrix<Scalar> q = linear(Linear::kQ, a, w[Linear::kQ]);
  Matrix<Scalar> k = linear(Linear::kK, a, w[Linear::kK]);
  const Matrix<Scalar> v = linear(Linear::kV, a, w[Linear::kV]);
  apply_rope(q, c.head_dim, c.rope_theta);
  apply_rope(k, c.head_dim, c.rope_theta);
  const Matrix<Scalar> attention = causal_attention(q, k, v, c);
  const Matrix<Scalar> h = x + linear(Linear::kO, prepared_input(linear, Input::kO, attention), w[Linear::kO]);

  const Matrix<Scalar> n2 = rms_norm(h, w.post_norm, c.rms_norm_eps);
  const auto& m = prepared_input(linear, Input::kMlp, n2);
  const Matrix<Scalar> gate = linear(Linear::kGate, m, w[Linear::kGate]);
  const Matrix<Scalar> up = linear(Linear::kUp, m, w[Linear::kUp]);
  // silu(g) = g·σ(g) = g / (1 + e^−g)
  const Matrix<Scalar> act = (gate.array() / (Scalar(1) + (-gate.array()).exp()) * up.array()).matrix();
  return h + linear(Linear::kDown, prepared_input(linear, Input::kDown, act), w[Linear::kDown]);
}

}  // namespace llama
