// examples/03_small_transformer/evaluate.hpp: validation perplexity of a
// trained model in full precision and quantized W4A4 with each method of
// ../../tools/llama/methods.hpp, block by block through llama::forward.
//
// Quantized evaluation: every decoder block is calibrated on the inputs it
// receives in the full-precision model (recorded on training windows), its
// weights folded and fake-quantized, and then the validation windows run
// through the quantized blocks in sequence, so the errors of earlier blocks
// reach later ones as in a deployed model. The embedding table and lm_head
// stay in full precision.
//
// The same quantized blocks also run with oq::cpu's integer kernels
// (integer_perplexity, ../../tools/llama/integer_path.hpp): per-token INT4
// codes from cpu::quantize_per_token with the method's transform fused,
// INT4 weights packed from the fake path's codes, cpu::gemm. The learned-clip
// QAT quantizer has no integer-kernel path: it quantizes with a fixed
// per-tensor range [c−, c+] (x̂ = c− + q·(c+ − c−)/(2^b − 1)), whose offset c−
// is not an integer number of steps, while cpu::quantize_per_token takes each
// token's own range and PackedActivations holds integer zero points. An
// engine would run it with z = 0, s_a = (c+ − c−)/(2^b − 1) and a
// per-output-channel bias c−·Σ_k ŵ_k, which oq::cpu does not provide (no
// static-range quantizer, no bias in the epilogue).
#pragma once

#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/methods.hpp"
#include "model.hpp"

#include <oq/quant/learned_clip.hpp>

#include <array>
#include <cmath>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace small_lm {

/// The input rows of one sequence: embeddings of bytes 0..T−1 of window `s`.
template <class Scalar>
Matrix<Scalar> embed(const Parameters<Scalar>& p, const Batch& batch, Eigen::Index s) {
  Matrix<Scalar> x(batch.seq_len, p.embedding.cols());
  for (Eigen::Index t = 0; t < batch.seq_len; ++t) x.row(t) = p.embedding.row(batch.input(s, t));
  return x;
}

/// Σ over window `s` of −log p(target) given the final hidden states x.
template <class Scalar>
double sequence_nll(const Config& c, const Parameters<Scalar>& p, const Batch& batch, Eigen::Index s,
                    const Matrix<Scalar>& x) {
  const Matrix<Scalar> normed = llama::rms_norm(x, p.final_norm, c.rms_norm_eps);
  Matrix<Scalar> logits(x.rows(), p.lm_head.rows());
  logits.noalias() = normed * p.lm_head.transpose();
  double nll = 0;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const auto row = logits.row(t).template cast<double>().array();
    const double mx = row.maxCoeff();
    nll += std::log((row - mx).exp().sum()) - (row(batch.target(s, t)) - mx);
  }
  return nll;
}

/// Perplexity on `batch` with every block's linears run by `linear_of(layer)`
/// (a functor as llama::forward takes it), or in full precision without one.
template <class Scalar, class LinearOf>
double perplexity_with(const Config& c, const Parameters<Scalar>& p, const Batch& batch, LinearOf&& linear_of) {
  const llama::Config lc = c.layer_config();
  double nll = 0;
  for (Eigen::Index s = 0; s < batch.sequences; ++s) {
    Matrix<Scalar> x = embed(p, batch, s);
    for (std::size_t l = 0; l < p.layers.size(); ++l) x = llama::forward(lc, p.layers[l], x, linear_of(l));
    nll += sequence_nll(c, p, batch, s, x);
  }
  return std::exp(nll / static_cast<double>(batch.sequences * batch.seq_len));
}

template <class Scalar>
double perplexity(const Config& c, const Parameters<Scalar>& p, const Batch& batch) {
  return perplexity_with(c, p, batch, [](std::size_t) { return llama::PlainLinear{}; });
}

/// The inputs of every block's four distinct linear inputs in the
/// full-precision model, over the windows of `calibration` stacked as rows.
template <class Scalar>
std::vector<llama::LinearInputs<Scalar>> record_block_inputs(const Config& c, const Parameters<Scalar>& p,
                                                             const Batch& calibration) {
  const llama::Config lc = c.layer_config();
  std::vector<Matrix<Scalar>> x;  // every sequence's hidden state, layer by layer
  for (Eigen::Index s = 0; s < calibration.sequences; ++s) x.push_back(embed(p, calibration, s));
  std::vector<llama::LinearInputs<Scalar>> stacked;
  for (std::size_t l = 0; l < p.layers.size(); ++l) {
    stacked.push_back(llama::record_inputs(lc, p.layers[l], x));
    for (auto& xs : x) xs = llama::forward(lc, p.layers[l], xs);
  }
  return stacked;
}

/// Every block quantized with `method`, calibrated on `calibration`.
template <class Scalar>
std::vector<llama::QuantizedLayer<Scalar>> quantize_model(const Config& c, const Parameters<Scalar>& p,
                                                          const std::vector<llama::LinearInputs<Scalar>>& inputs,
                                                          llama::Method method, const llama::QuantOptions& options) {
  (void)c;
  std::vector<llama::QuantizedLayer<Scalar>> blocks;
  blocks.reserve(p.layers.size());
  for (std::size_t l = 0; l < p.layers.size(); ++l) {
    blocks.push_back(llama::quantize_layer(method, p.layers[l], inputs[l], options));
  }
  return blocks;
}

/// Validation perplexity of the model with its blocks quantized as `blocks`.
template <class Scalar>
double quantized_perplexity(const Config& c, const Parameters<Scalar>& p,
                            const std::vector<llama::QuantizedLayer<Scalar>>& blocks, const Batch& batch) {
  return perplexity_with(c, p, batch, [&blocks](std::size_t l) -> const llama::QuantizedLayer<Scalar>& {
    return blocks[l];
  });
}

/// Validation perplexity with the blocks of quantize_model run by oq::cpu's
/// integer kernels instead of fake quantization (float models only). With
/// `agreement`, every linear is also computed by fake quantization on the
/// same input and the two compared (integer_path.hpp's bound).
inline double integer_perplexity(const Config& c, const Parameters<float>& p,
                                 const std::vector<llama::QuantizedLayer<float>>& blocks, const Batch& batch,
                                 llama::PathAgreement* agreement = nullptr) {
  std::vector<llama::IntegerLayer> integer;
  integer.reserve(blocks.size());
  for (const auto& b : blocks) {
    integer.emplace_back(b);
    integer.back().compare_into(agreement);
  }
  return perplexity_with(c, p, batch, [&integer](std::size_t l) -> const llama::IntegerLayer& { return integer[l]; });
}

/// A block as QAT trained it (model.hpp), deployed: every linear reads its
/// input fake-quantized with the learned per-tensor clip [c−, c+] of that
/// input (learned_clip_fake_quantize), and its weight fake-quantized per
/// output channel as options.weight_spec() says (the same weights as the
/// other methods; weight_bits = 0 keeps them exact).
template <class Scalar>
class LearnedClipLayer {
 public:
  LearnedClipLayer(const llama::LayerWeights<Scalar>& w, Vector<Scalar> clip_lo, Vector<Scalar> clip_hi, int act_bits,
                   const llama::QuantOptions& options)
      : clip_lo_(std::move(clip_lo)), clip_hi_(std::move(clip_hi)), act_bits_(act_bits) {
    for (Linear l : llama::kAllLinears) {
      weights_[static_cast<std::size_t>(l)] =
          options.weight_bits == 0 ? w[l] : oq::quant::fake_quantize(w[l], options.weight_spec());
    }
  }

  /// The input fake-quantized with its learned clip (once per distinct input).
  Matrix<Scalar> prepare(llama::Input input, const Matrix<Scalar>& x) const {
    const auto i = static_cast<Eigen::Index>(input);
    return oq::quant::learned_clip_fake_quantize(x, clip_lo_(i), clip_hi_(i), act_bits_);
  }

  /// One linear on an input that prepare() returned.
  Matrix<Scalar> operator()(Linear which, const Matrix<Scalar>& prepared,
                            const Matrix<Scalar>& /*full_precision_weight*/) const {
    const Matrix<Scalar>& w = weights_[static_cast<std::size_t>(which)];
    Matrix<Scalar> y(prepared.rows(), w.rows());
    y.noalias() = prepared * w.transpose();
    return y;
  }

 private:
  Vector<Scalar> clip_lo_, clip_hi_;
  int act_bits_;
  std::array<Matrix<Scalar>, 7> weights_;
};

/// Every block of `p` as QAT deployed it (LearnedClipLayer): its learned
/// clips on every linear input (`act_bits`, as trained), weights quantized
/// per options. std::invalid_argument where `p` holds no learned clips (4
/// per layer, clip_lo < clip_hi): a model trained without QAT.
template <class Scalar>
std::vector<LearnedClipLayer<Scalar>> learned_clip_blocks(const Parameters<Scalar>& p, int act_bits,
                                                          const llama::QuantOptions& options) {
  std::vector<LearnedClipLayer<Scalar>> blocks;
  for (std::size_t l = 0; l < p.layers.size(); ++l) {
    if (p.clip_lo.size() != p.layers.size() || p.clip_hi.size() != p.layers.size() || p.clip_lo[l].size() != 4 ||
        p.clip_hi[l].size() != 4 || !(p.clip_lo[l].array() < p.clip_hi[l].array()).all()) {
      throw std::invalid_argument("small_lm::learned_clip_blocks: the model has no learned clips at layer " +
                                  std::to_string(l) + " (clip_lo < clip_hi, 4 per layer): was it trained with QAT?");
    }
    blocks.emplace_back(p.layers[l], p.clip_lo[l], p.clip_hi[l], act_bits, options);
  }
  return blocks;
}

/// Validation perplexity with the learned QAT clips of `p` on every linear
/// input (`act_bits`, as trained) and weights quantized per options.
template <class Scalar>
double learned_clip_perplexity(const Config& c, const Parameters<Scalar>& p, int act_bits,
                               const llama::QuantOptions& options, const Batch& batch) {
  const std::vector<LearnedClipLayer<Scalar>> blocks = learned_clip_blocks(p, act_bits, options);
  return perplexity_with(c, p, batch, [&blocks](std::size_t l) -> const LearnedClipLayer<Scalar>& {
    return blocks[l];
  });
}

}  // namespace small_lm
