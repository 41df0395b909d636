// examples/02_llama_layer/stack_quantization.hpp: a stack of LLaMA layers
// quantized layer by layer with one method, and its error measured two ways:
//
//  - per layer: layer l quantized, on its full-precision input (every
//    earlier layer at full precision): e_l = ‖ŷ_l − y_l‖ / ‖y_l − x_l‖,
//    the error over what the layer adds to the residual stream (the
//    residual passes through exactly, and relative to ‖y_l‖ the error would
//    shrink with the size of what the layer merely carries);
//  - end to end: the whole stack quantized, each layer on the previous
//    quantized layer's output (cascaded):
//    E_l = ‖x̂_(l+1) − x_(l+1)‖ / ‖x_(l+1) − x_0‖, the error over what
//    layers 0..l have added to the embeddings.
//
// Both split by token group: the massive tokens (first token and first
// delimiter) and the others. Every layer is calibrated once, on the
// full-precision inputs of a calibration sequence, and the same quantized
// layer serves both measurements (calibrating on the quantized stack's
// outputs, as GPTQ's sequential mode does, is not done here).
//
// The method is a callable quantize(l, weights, calibration) → a
// QuantizedLayer (methods.hpp), so that this file names no method.
#pragma once

#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace llama {

/// A relative error over all tokens, the massive tokens, and the others.
struct GroupErrors {
  double all = 0;
  double massive = 0;  ///< NaN without massive tokens
  double others = 0;   ///< NaN when every token is massive
};

/// ‖(a − b)_S‖ / ‖(b − base)_S‖ for S = every row, the rows in `massive`,
/// the other rows; in double. A zero denominator gives ∞ (0 when the
/// numerator is 0 too).
template <class Scalar>
GroupErrors group_errors(const Matrix<Scalar>& a, const Matrix<Scalar>& b, const Matrix<Scalar>& base,
                         const std::vector<Eigen::Index>& massive) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || base.rows() != b.rows() || base.cols() != b.cols()) {
    throw std::invalid_argument("llama::group_errors: a, b and base must have the same shape");
  }
  double num[2] = {0, 0}, den[2] = {0, 0};
  for (Eigen::Index t = 0; t < a.rows(); ++t) {
    const int g = std::find(massive.begin(), massive.end(), t) != massive.end() ? 0 : 1;
    num[g] += (a.row(t).template cast<double>() - b.row(t).template cast<double>()).squaredNorm();
    den[g] += (b.row(t).template cast<double>() - base.row(t).template cast<double>()).squaredNorm();
  }
  auto ratio = [](double n, double d, bool empty) {
    if (empty) return std::nan("");
    if (d == 0.0) return n == 0.0 ? 0.0 : HUGE_VAL;
    return std::sqrt(n / d);
  };
  Eigen::Index in_massive = 0;
  for (Eigen::Index t : massive) in_massive += (t >= 0 && t < a.rows()) ? 1 : 0;
  return {ratio(num[0] + num[1], den[0] + den[1], a.rows() == 0), ratio(num[0], den[0], in_massive == 0),
          ratio(num[1], den[1], in_massive == a.rows())};
}

/// What one layer measured.
struct LayerQuantization {
  double calibration_seconds = 0;
  GroupErrors layer;       ///< per layer, on the full-precision input
  GroupErrors end_to_end;  ///< after this layer, through the quantized stack
  /// Tokens where Sun et al.'s test (|x| > 100, ≥ 1000 × median) fires on
  /// the quantized stack's output after this layer: where the massive
  /// activations are once every layer so far is quantized.
  std::vector<Eigen::Index> end_to_end_massive_tokens;
  /// The per-layer error with oq::cpu's integer kernels (float layers with
  /// 4-bit weights; StackOptions::integer), and how they agreed with fake
  /// quantization (integer_path.hpp's bound).
  std::optional<GroupErrors> integer_layer;
  PathAgreement agreement{};
};

struct StackOptions {
  bool integer = true;  ///< also run each layer with the integer kernels (float only)
  /// Record the transformed linear inputs of this layer's per-layer forward
  /// into *transformed (for the per-channel figures); -1: none.
  int record_layer = -1;
  std::function<void(const std::string&)> progress{};
};

/// Quantizes every layer of `layers` with `quantize(l, weights, calibration[l])`
/// and measures it. `hidden` holds the full-precision hidden states of the
/// evaluation sequence ([0] the embeddings, [l + 1] layer l's output),
/// `calibration[l]` the linear inputs of layer l on the calibration sequence.
template <class Scalar, class Quantize>
std::vector<LayerQuantization> quantize_stack(const Config& c, const std::vector<LayerWeights<Scalar>>& layers,
                                              const std::vector<Matrix<Scalar>>& hidden,
                                              const std::vector<LinearInputs<Scalar>>& calibration,
                                              const std::vector<Eigen::Index>& massive_tokens, Quantize&& quantize,
                                              const StackOptions& options = {},
                                              LinearInputs<Scalar>* transformed = nullptr) {
  if (hidden.size() != layers.size() + 1 || calibration.size() != layers.size()) {
    throw std::invalid_argument("llama::quantize_stack: need layers + 1 hidden states and one calibration per layer, got " +
                                std::to_string(hidden.size()) + " and " + std::to_string(calibration.size()) + " for " +
                                std::to_string(layers.size()) + " layers");
  }
  using Clock = std::chrono::steady_clock;
  std::vector<LayerQuantization> out(layers.size());
  Matrix<Scalar> x_quantized = hidden[0];
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto say = [&](const std::string& what) {
      if (options.progress) options.progress("layer " + std::to_string(l) + ": " + what);
    };
    say("calibrating");
    const auto start = Clock::now();
    auto layer = quantize(static_cast<int>(l), layers[l], calibration[l]);
    out[l].calibration_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    say("forward");
    const bool record = transformed != nullptr && static_cast<int>(l) == options.record_layer;
    if (record) layer.record_transformed_inputs(transformed);
    const Matrix<Scalar> y = forward(c, layers[l], hidden[l], layer);
    if (record) layer.record_transformed_inputs(nullptr);
    out[l].layer = group_errors(y, hidden[l + 1], hidden[l], massive_tokens);
    x_quantized = forward(c, layers[l], x_quantized, layer);
    out[l].end_to_end = group_errors(x_quantized, hidden[l + 1], hidden[0], massive_tokens);
    out[l].end_to_end_massive_tokens =
        oq::analysis::massive_tokens(oq::analysis::find_massive_activations(x_quantized));
    if constexpr (std::is_same_v<Scalar, float>) {
      if (options.integer) {
        say("integer kernels");
        IntegerLayer integer(layer);
        integer.compare_into(&out[l].agreement);
        out[l].integer_layer = group_errors(forward(c, layers[l], hidden[l], integer), hidden[l + 1], hidden[l], massive_tokens);
      }
    }
  }
  return out;
}

}  // namespace llama
