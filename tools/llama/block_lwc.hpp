// tools/llama/block_lwc.hpp: learnable weight clipping trained on the whole
// layer's output — OmniQuant's own objective (Shao et al. 2024, §3.1 eq. 1
// with the LWC of §3.2) — instead of each linear's output (oq/quant/lwc.hpp,
// WeightQuant::kLwc).
//
//   auto r = llama::train_block_lwc(c, w, spec, sequences, options);
//   r.layer                 // a QuantizedLayer, spec.weights == WeightQuant::kLwc
//   r.initial_loss, r.loss  // ‖y_q − y‖²/‖y‖² over the calibration sequences
//
// The objective. With y = forward(c, w, x) the full-precision layer and y_q
// the same layer with each linear's folded weight Ŵ_l(a_l, b_l) (LWC,
// oq/quant/lwc.hpp) on its transformed, fake-quantized input,
//   L = Σ_seq ‖y_q − y‖²_F / Σ_seq ‖y‖²_F,
// the relative squared error (OmniQuant: the MSE of the block's output; the
// normalisation only fixes what Adam's ε means). Every logit of all seven
// linears is trained together by AdamW (oq::quant::LwcAdamW, the releases'
// hyper-parameters) on the full calibration set per step; the layer's input
// is x itself for every method (OmniQuant feeds each block the previous
// quantized blocks' output: here there is one layer). The step with the
// smallest L is kept, the first one included, so L never ends above its
// value at the start, where every factor is σ(a) = σ(b) = weight_clip
// (QuantOptions::lwc_init_at_weight_clip; RTN's grid) or lwc.init. The
// transforms are calibrated as quantize_layer calibrates them.
//
// The gradient ∂L/∂Ŵ_l is a hand-written backward pass of llama::forward
// (llama_layer.hpp), read off a forward that records each linear's input
// and output (Tape):
//   - a linear y = x̂·Ŵᵀ: ∂L/∂Ŵ = dyᵀ·x̂, dx̂ = dy·Ŵ; where its output is
//     rotated back (QuaRot: y = (x̂·Ŵᵀ)·Rᵀ, Ŵ the deployed Rᵀ·W's
//     quantization), dy·R in place of dy;
//   - the activation quantizer: straight-through, masked where the code is
//     clamped (oq::quant::ste_grad_input, as the release's round_ste with
//     clamp); the transform X̂ = X·M: dX = dX̂·Mᵀ (M = apply(I));
//   - SwiGLU a = silu(g)⊙u: dg = da⊙u⊙σ(g)(1 + g(1 − σ(g))), du = da⊙silu(g);
//   - RMSNorm n = x·r·γ, r = (mean(x²) + ε)^−½:
//     dx = r·(γ⊙dn) − r³·(Σ_j x_j γ_j dn_j)·x / C;
//   - causal attention per head (scale 1/√d, P the softmax): dP = dO·Vᵀ,
//     dV += Pᵀ·dO, dS = P⊙(dP − rowsum(P⊙dP)), dQ = dS·K·scale,
//     dK += dSᵀ·Q·scale (grouped heads add into their shared K, V);
//   - RoPE: the transposed rotation (angle −t·θ_i).
// The gradient needs nothing before q/k/v (the layer's input is fixed).
// tests/tools/block_lwc_test.cpp checks it against central differences of
// L in the weights, and the trainer against the per-linear LWC it starts
// from.
#pragma once

#include "llama_layer.hpp"
#include "methods.hpp"

#include <oq/cpu.hpp>
#include <oq/quant.hpp>

#include <Eigen/Core>

#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace llama {

/// A layer's quantized weights and the transforms they are folded into:
/// what forward() runs through LwcBlockLinear.
template <class Scalar>
struct BlockQuantization {
  std::array<InputTransform<Scalar>, 4> transforms;
  /// Ŵ_l in the transformed (folded) basis, as deployed: Rᵀ·Ŵ where linear l
  /// has an output rotation R (QuaRot; its outputs are rotated back).
  std::array<Matrix<Scalar>, 7> weights;
  std::array<OutputRotation<Scalar>, 7> output_rotations;
  QuantOptions options;  ///< act_bits, act_clip: the activation quantizer
};

namespace detail_block_lwc {

// forward()'s linear: QuantizedLayer's arithmetic (transform, per-token fake
// quantization, x̂·Ŵᵀ), recording what the backward pass needs.
template <class Scalar>
struct Tape {
  const BlockQuantization<Scalar>* q = nullptr;
  std::array<Matrix<Scalar>, 4> transformed;  // X·M
  std::array<Matrix<Scalar>, 4> prepared;     // Q(X·M)
  std::array<oq::quant::QuantParams<Scalar>, 4> act_params;
  std::array<Matrix<Scalar>, 7> outputs;

  Matrix<Scalar> prepare(Input input, const Matrix<Scalar>& x) {
    const auto i = static_cast<std::size_t>(input);
    transformed[i] = q->transforms[i].apply(x);
    if (q->options.act_bits != 0) {
      act_params[i] = oq::quant::compute_params(transformed[i], q->options.act_spec());
      prepared[i] = oq::quant::fake_quantize(transformed[i], act_params[i], q->options.act_spec());
    } else {
      prepared[i] = transformed[i];
    }
    return prepared[i];
  }

  Matrix<Scalar> operator()(Linear which, const Matrix<Scalar>& x, const Matrix<Scalar>& /*full_precision*/) {
    const auto li = static_cast<std::size_t>(which);
    outputs[li].noalias() = x * q->weights[li].transpose();
    if (q->output_rotations[li].active()) q->output_rotations[li].restore(outputs[li]);  // y·R·Rᵀ
    return outputs[li];
  }
};

// d(X·M) → dX for one input's transform: Mᵀ applied on the right. Identity
// and smoothing (M = diag(s)⁻¹) are diagonal; every other transform as the
// dense M = apply(I), once per input.
template <class Scalar>
class TransformTranspose {
 public:
  TransformTranspose() = default;
  TransformTranspose(const InputTransform<Scalar>& t, Eigen::Index channels) {
    if (std::holds_alternative<typename InputTransform<Scalar>::Identity>(t.kind())) return;
    if (const auto* s = std::get_if<typename InputTransform<Scalar>::Smoothing>(&t.kind())) {
      inverse_scales_ = s->scales.cwiseInverse();
      return;
    }
    dense_ = t.apply(Matrix<Scalar>::Identity(channels, channels));
  }

  Matrix<Scalar> operator()(const Matrix<Scalar>& d) const {
    if (dense_) {
      Matrix<Scalar> out(d.rows(), dense_->rows());
      out.noalias() = d * dense_->transpose();
      return out;
    }
    if (inverse_scales_.size() != 0) return d * inverse_scales_.asDiagonal();
    return d;
  }

 private:
  std::optional<Matrix<Scalar>> dense_;
  Vector<Scalar> inverse_scales_;
};

// The transpose of apply_rope: each pair rotated by −t·θ_i.
template <class Scalar>
void apply_rope_transpose(Matrix<Scalar>& x, Eigen::Index head_dim, double theta) {
  const Eigen::Index half = head_dim / 2;
  const Eigen::Index heads = x.cols() / head_dim;
  for (Eigen::Index i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const double angle = static_cast<double>(t) * inv_freq;
      const auto c = static_cast<Scalar>(std::cos(angle));
      const auto s = static_cast<Scalar>(std::sin(angle));
      for (Eigen::Index h = 0; h < heads; ++h) {
        Scalar& a = x(t, h * head_dim + i);
        Scalar& b = x(t, h * head_dim + i + half);
        const Scalar a0 = a, b0 = b;
        a = a0 * c + b0 * s;
        b = b0 * c - a0 * s;
      }
    }
  }
}

// dx of n = rms_norm(x, γ) given dn.
template <class Scalar>
Matrix<Scalar> rms_norm_backward(const Matrix<Scalar>& x, const Vector<Scalar>& gamma, double eps,
                                 const Matrix<Scalar>& dn) {
  Matrix<Scalar> dx(x.rows(), x.cols());
  const double channels = static_cast<double>(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const Eigen::RowVectorXd xr = x.row(t).template cast<double>();
    const Eigen::RowVectorXd gdn =
        gamma.transpose().template cast<double>().cwiseProduct(dn.row(t).template cast<double>());
    const double r = 1.0 / std::sqrt(xr.squaredNorm() / channels + eps);
    dx.row(t) = (r * gdn - (r * r * r * xr.dot(gdn) / channels) * xr).template cast<Scalar>();
  }
  return dx;
}

}  // namespace detail_block_lwc

/// The layer's relative output error and its gradient in every Ŵ_l.
template <class Scalar>
struct BlockLossGradient {
  double loss = 0;  ///< Σ_seq ‖y_q − y‖² / Σ_seq ‖y‖²
  std::array<Matrix<Scalar>, 7> weights;  ///< ∂loss/∂Ŵ_l (straight-through activation quantizer)
};

/// L and ∂L/∂Ŵ_l of q's layer on `sequences` (each tokens × hidden, attention
/// within each), against `targets` = forward(c, w, sequence) (file comment).
/// w provides the norms (its linears are not read).
template <class Scalar>
BlockLossGradient<Scalar> block_loss_gradient(const Config& c, const LayerWeights<Scalar>& w,
                                              const BlockQuantization<Scalar>& q,
                                              const std::vector<Matrix<Scalar>>& sequences,
                                              const std::vector<Matrix<Scalar>>& targets) {
  if (sequences.size() != targets.size() || sequences.empty()) {
    throw std::invalid_argument("llama::block_loss_gradient: sequences and targets must be non-empty and as many, got " +
                                std::to_string(sequences.size()) + " and " + std::to_string(targets.size()));
  }
  std::array<detail_block_lwc::TransformTranspose<Scalar>, 4> transpose;
  for (Input input : kAllInputs) {
    transpose[static_cast<std::size_t>(input)] =
        detail_block_lwc::TransformTranspose<Scalar>(q.transforms[static_cast<std::size_t>(input)], input_width(c, input));
  }
  double numerator = 0, denominator = 0;
  std::vector<Matrix<Scalar>> errors;
  std::vector<detail_block_lwc::Tape<Scalar>> tapes(sequences.size());
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    tapes[s].q = &q;
    const Matrix<Scalar> y = forward(c, w, sequences[s], tapes[s]);
    if (y.rows() != targets[s].rows() || y.cols() != targets[s].cols()) {
      throw std::invalid_argument("llama::block_loss_gradient: targets[" + std::to_string(s) + "] must be " +
                                  std::to_string(y.rows()) + " x " + std::to_string(y.cols()));
    }
    errors.push_back(y - targets[s]);
    numerator += (y.template cast<double>() - targets[s].template cast<double>()).squaredNorm();
    denominator += targets[s].template cast<double>().squaredNorm();
  }
  if (!(denominator > 0)) denominator = 1;
  BlockLossGradient<Scalar> out;
  out.loss = numerator / denominator;
  for (Linear l : kAllLinears) {
    out.weights[static_cast<std::size_t>(l)] = Matrix<Scalar>::Zero(q.weights[static_cast<std::size_t>(l)].rows(),
                                                                     q.weights[static_cast<std::size_t>(l)].cols());
  }
  // Linear l's output gradient dy → ∂L/∂Ŵ_l (accumulated) and its input's
  // dX̂ = dy·Ŵ_l. Where l's output is rotated back (y = (x̂·Ŵᵀ)·Rᵀ), the
  // deployed output's gradient is dy·R = (Rᵀ·dyᵀ)ᵀ.
  const auto linear_backward = [&](Linear l, const Matrix<Scalar>& dy, const detail_block_lwc::Tape<Scalar>& tape,
                                   bool input_gradient = true) {
    const auto li = static_cast<std::size_t>(l);
    const OutputRotation<Scalar>& r = q.output_rotations[li];
    const Matrix<Scalar> dy_deployed = r.active() ? Matrix<Scalar>(r.rotate_weight(dy.transpose()).transpose()) : dy;
    out.weights[li].noalias() += dy_deployed.transpose() * tape.prepared[static_cast<std::size_t>(input_of(l))];
    return input_gradient ? Matrix<Scalar>(dy_deployed * q.weights[li]) : Matrix<Scalar>();
  };
  // dX̂ of an input → dX before its transform and quantizer.
  const auto through_input = [&](Input input, const Matrix<Scalar>& d_prepared, const detail_block_lwc::Tape<Scalar>& tape) {
    const auto i = static_cast<std::size_t>(input);
    const Matrix<Scalar> d_transformed =
        q.options.act_bits != 0
            ? Matrix<Scalar>(oq::quant::ste_grad_input(tape.transformed[i], tape.act_params[i], q.options.act_spec(), d_prepared))
            : d_prepared;
    return transpose[i](d_transformed);
  };
  const auto scale = static_cast<Scalar>(2.0 / denominator);
  const Eigen::Index d = c.head_dim;
  const Eigen::Index group = c.num_attention_heads / c.num_key_value_heads;
  const auto attention_scale = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(d)));
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const auto& tape = tapes[s];
    const Matrix<Scalar> dy = errors[s] * scale;  // ∂L/∂y
    // MLP: y = h + down(act), act = silu(gate)⊙up, gate/up = linears of RMSNorm₂(h).
    const Matrix<Scalar> d_act = through_input(Input::kDown, linear_backward(Linear::kDown, dy, tape), tape);
    const auto& gate = tape.outputs[static_cast<std::size_t>(Linear::kGate)];
    const auto& up = tape.outputs[static_cast<std::size_t>(Linear::kUp)];
    const auto sig = (Scalar(1) / (Scalar(1) + (-gate.array()).exp())).eval();
    const Matrix<Scalar> d_gate = (d_act.array() * up.array() * sig * (Scalar(1) + gate.array() * (Scalar(1) - sig))).matrix();
    const Matrix<Scalar> d_up = (d_act.array() * gate.array() * sig).matrix();
    const Matrix<Scalar> d_n2 = through_input(
        Input::kMlp, linear_backward(Linear::kGate, d_gate, tape) + linear_backward(Linear::kUp, d_up, tape), tape);
    const Matrix<Scalar> h = sequences[s] + tape.outputs[static_cast<std::size_t>(Linear::kO)];
    const Matrix<Scalar> dh = dy + detail_block_lwc::rms_norm_backward(h, w.post_norm, c.rms_norm_eps, d_n2);
    // Attention: h = x + o(attention(rope(q), rope(k), v)).
    const Matrix<Scalar> d_attention = through_input(Input::kO, linear_backward(Linear::kO, dh, tape), tape);
    Matrix<Scalar> q_rot = tape.outputs[static_cast<std::size_t>(Linear::kQ)];
    Matrix<Scalar> k_rot = tape.outputs[static_cast<std::size_t>(Linear::kK)];
    const auto& v = tape.outputs[static_cast<std::size_t>(Linear::kV)];
    apply_rope(q_rot, c.head_dim, c.rope_theta);
    apply_rope(k_rot, c.head_dim, c.rope_theta);
    const Eigen::Index tokens = q_rot.rows();
    Matrix<Scalar> dq = Matrix<Scalar>::Zero(tokens, c.q_size());
    Matrix<Scalar> dk = Matrix<Scalar>::Zero(tokens, c.kv_size());
    Matrix<Scalar> dv = Matrix<Scalar>::Zero(tokens, c.kv_size());
    for (Eigen::Index head = 0; head < c.num_attention_heads; ++head) {
      const Eigen::Index kv = head / group;
      const auto qh = q_rot.middleCols(head * d, d);
      const auto kh = k_rot.middleCols(kv * d, d);
      const auto vh = v.middleCols(kv * d, d);
      // P as causal_attention computes it.
      Matrix<Scalar> p = (qh * kh.transpose()) * attention_scale;
      for (Eigen::Index t = 0; t < tokens; ++t) {
        auto row = p.row(t).head(t + 1);
        const Scalar m = row.maxCoeff();
        row = (row.array() - m).exp();
        row /= row.sum();
        p.row(t).tail(tokens - t - 1).setZero();
      }
      const auto d_out = d_attention.middleCols(head * d, d);
      const Matrix<Scalar> dp = d_out * vh.transpose();
      dv.middleCols(kv * d, d).noalias() += p.transpose() * d_out;
      const Vector<Scalar> row_dot = p.cwiseProduct(dp).rowwise().sum();
      const Matrix<Scalar> ds = (p.array() * (dp.colwise() - row_dot).array()).matrix() * attention_scale;
      dq.middleCols(head * d, d).noalias() = ds * kh;
      dk.middleCols(kv * d, d).noalias() += ds.transpose() * qh;
    }
    detail_block_lwc::apply_rope_transpose(dq, c.head_dim, c.rope_theta);
    detail_block_lwc::apply_rope_transpose(dk, c.head_dim, c.rope_theta);
    linear_backward(Linear::kQ, dq, tape, false);  // the layer's input is fixed: no dX̂ needed
    linear_backward(Linear::kK, dk, tape, false);
    linear_backward(Linear::kV, dv, tape, false);
  }
  return out;
}

template <class Scalar>
struct BlockLwcResult {
  QuantizedLayer<Scalar> layer;  ///< spec.weights == WeightQuant::kLwc, packed where QuantizedLayer packs
  double initial_loss = 0;       ///< L at the initial factors
  double loss = 0;               ///< L at the kept factors
  std::array<Eigen::MatrixXd, 7> upper;  ///< a per linear (per output channel or group)
  std::array<Eigen::MatrixXd, 7> lower;  ///< b
};

/// Trains every linear's LWC factors on the layer's output error over the
/// calibration `sequences` (file comment), with spec's smoothing and rotation
/// calibrated as quantize_layer does; spec.weights must be WeightQuant::kLwc.
/// options.lwc gives the steps and AdamW (its keep_best is per step here).
template <class Scalar>
BlockLwcResult<Scalar> train_block_lwc(const Config& c, const LayerWeights<Scalar>& w, const MethodSpec& spec,
                                       const std::vector<Matrix<Scalar>>& sequences, const QuantOptions& options) {
  constexpr std::string_view kWhere = "llama::train_block_lwc";
  if (spec.weights != WeightQuant::kLwc) {
    throw std::invalid_argument(std::string(kWhere) + ": spec.weights must be WeightQuant::kLwc, got " + spec.name());
  }
  if (options.weight_bits == 0) {
    throw std::invalid_argument(std::string(kWhere) + ": options.weight_bits must be 2..8 (there is nothing to clip at 0)");
  }
  if (sequences.empty()) throw std::invalid_argument(std::string(kWhere) + ": sequences must not be empty");
  options.lwc.validate(kWhere);
  const oq::quant::QuantSpec weight_spec = options.weight_spec();
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  // The transforms, calibrated as for every point of the cross (the RTN
  // weights that come with them are not used).
  MethodSpec transforms_only = spec;
  transforms_only.weights = WeightQuant::kRtn;
  BlockQuantization<Scalar> q;
  q.options = options;
  {
    const QuantizedLayer<Scalar> calibrated = quantize_layer(transforms_only, w, record_inputs(c, w, sequences), options);
    for (Input input : kAllInputs) q.transforms[static_cast<std::size_t>(input)] = calibrated.transform(input);
    for (Linear l : kAllLinears) q.output_rotations[static_cast<std::size_t>(l)] = calibrated.output_rotation(l);
  }
  std::vector<Matrix<Scalar>> targets;
  for (const auto& x : sequences) targets.push_back(forward(c, w, x));

  double init = options.lwc.init;
  if (options.lwc_init_at_weight_clip && options.weight_clip < 1) {
    init = std::log(options.weight_clip / (1 - options.weight_clip));
  }
  std::array<Matrix<Scalar>, 7> folded;
  std::array<Eigen::MatrixXd, 7> a, b, best_a, best_b;
  std::vector<oq::quant::LwcAdamW> adam;
  for (Linear l : kAllLinears) {
    const auto li = static_cast<std::size_t>(l);
    folded[li] = q.transforms[static_cast<std::size_t>(input_of(l))].fold_into_weight(w[l]);
    if (q.output_rotations[li].active()) folded[li] = q.output_rotations[li].rotate_weight(folded[li]);  // Rᵀ·W
    a[li] = Eigen::MatrixXd::Constant(weight_spec.param_rows(folded[li].rows()), weight_spec.param_cols(folded[li].cols()),
                                      init);
    b[li] = a[li];
    adam.emplace_back(options.lwc, a[li].rows(), a[li].cols());
    adam.emplace_back(options.lwc, a[li].rows(), a[li].cols());
  }
  const auto quantize_all = [&]() {
    for (Linear l : kAllLinears) {
      const auto li = static_cast<std::size_t>(l);
      q.weights[li] = oq::quant::lwc_fake_quantize(folded[li], a[li].template cast<Scalar>(),
                                                   b[li].template cast<Scalar>(), weight_spec);
    }
  };
  BlockLwcResult<Scalar> result{QuantizedLayer<Scalar>(spec, {}, {}, options, 0.0), 0, 0, {}, {}};
  double best = std::numeric_limits<double>::infinity();
  for (int t = 0;; ++t) {
    quantize_all();
    const BlockLossGradient<Scalar> g = block_loss_gradient(c, w, q, sequences, targets);
    if (t == 0) result.initial_loss = g.loss;
    if (!options.lwc.keep_best || g.loss < best) {  // strict: ties keep the earlier step
      best = g.loss;
      best_a = a;
      best_b = b;
    }
    if (options.progress && (t % 16 == 0 || t == options.lwc.steps)) {
      options.progress(spec.name() + " (block): step " + std::to_string(t) + "/" + std::to_string(options.lwc.steps) +
                       ", loss " + std::to_string(g.loss));
    }
    if (t == options.lwc.steps) break;
    for (Linear l : kAllLinears) {
      const auto li = static_cast<std::size_t>(l);
      const auto lg = oq::quant::lwc_grad(folded[li], a[li].template cast<Scalar>(), b[li].template cast<Scalar>(),
                                          weight_spec, g.weights[li], options.lwc.zero_gradient);
      adam[2 * li].step(a[li], lg.upper.template cast<double>(), t + 1);
      adam[2 * li + 1].step(b[li], lg.lower.template cast<double>(), t + 1);
    }
  }
  // The kept factors: their weights, packed as quantize_layer packs them.
  a = best_a;
  b = best_b;
  constexpr bool kFloat = std::is_same_v<Scalar, float>;
  const bool pack = kFloat && options.weight_bits == 4;
  std::array<std::optional<oq::cpu::PackedWeights>, 7> packed;
  for (Linear l : kAllLinears) {
    const auto li = static_cast<std::size_t>(l);
    const auto params = oq::quant::lwc_params(folded[li], a[li].template cast<Scalar>(), b[li].template cast<Scalar>(),
                                              weight_spec);
    q.weights[li] = oq::quant::fake_quantize(folded[li], params, weight_spec);
    if (pack) packed[li] = oq::cpu::pack_weights(oq::quant::quantize(folded[li], params, weight_spec), params, weight_spec);
  }
  result.loss = best;
  result.upper = a;
  result.lower = b;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.layer =
      QuantizedLayer<Scalar>(spec, q.transforms, q.weights, options, seconds, std::move(packed), q.output_rotations);
  return result;
}

}  // namespace llama
