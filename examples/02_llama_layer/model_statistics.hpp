// examples/02_llama_layer/model_statistics.hpp: the published outlier
// statistics, measured on the hidden states of a stack of LLaMA layers
// (synthetic_model.hpp) the way the papers measure them:
//
//  - massive activations: Sun et al. 2024's test (oq::analysis::
//    find_massive_activations: |x| > 100 and ≥ 1000 × median |x| of the
//    hidden state), and the top-3 |x| and median |x| per layer that their
//    layer-wise figure plots;
//  - attention sinks: the attention probability the massive tokens receive,
//    averaged over heads and over the queries that are not massive tokens
//    (Xiao et al. 2023; Sun et al. 2024, §4);
//  - the bulk's kurtosis: the mean row kurtosis (docs/design.md §3) of the
//    tokens that carry no massive activation;
//  - channel-wise outliers of the normed inputs (mean |x| > 6 × the input's,
//    Nrusimha et al. 2024; oq::analysis::find_channel_outliers).
#pragma once

#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <vector>

namespace llama {

/// The causal attention probabilities of every query head of layer `w` on
/// input x (tokens × hidden): [head](query, key), in double, computed from
/// the same parts as forward() (RMSNorm, q/k projections, RoPE, softmax of
/// q·k/√d over keys ≤ query).
template <class Scalar>
std::vector<Eigen::MatrixXd> attention_probabilities(const Config& c, const LayerWeights<Scalar>& w,
                                                     const Matrix<Scalar>& x) {
  w.validate(c);
  const Matrix<double> n1 = rms_norm(Matrix<double>(x.template cast<double>()),
                                     Vector<double>(w.input_norm.template cast<double>()), c.rms_norm_eps);
  Matrix<double> q = n1 * w[Linear::kQ].template cast<double>().transpose();
  Matrix<double> k = n1 * w[Linear::kK].template cast<double>().transpose();
  apply_rope(q, c.head_dim, c.rope_theta);
  apply_rope(k, c.head_dim, c.rope_theta);
  const Eigen::Index tokens = x.rows(), d = c.head_dim;
  const Eigen::Index group = c.num_attention_heads / c.num_key_value_heads;
  std::vector<Eigen::MatrixXd> out;
  for (Eigen::Index h = 0; h < c.num_attention_heads; ++h) {
    Eigen::MatrixXd p = Eigen::MatrixXd::Zero(tokens, tokens);
    const auto qh = q.middleCols(h * d, d);
    const auto kh = k.middleCols((h / group) * d, d);
    for (Eigen::Index t = 0; t < tokens; ++t) {
      Eigen::VectorXd s = kh.topRows(t + 1) * qh.row(t).transpose() / std::sqrt(static_cast<double>(d));
      s = (s.array() - s.maxCoeff()).exp();
      p.row(t).head(t + 1) = (s / s.sum()).transpose();
    }
    out.push_back(std::move(p));
  }
  return out;
}

/// The attention mass on `sinks` (key positions), averaged over heads and
/// over every query that is not itself a sink (queries before a sink count
/// it as 0: they cannot attend to it). NaN without such a query.
inline double sink_attention_mass(const std::vector<Eigen::MatrixXd>& probabilities, const std::vector<Eigen::Index>& sinks) {
  double sum = 0.0;
  std::size_t count = 0;
  for (const auto& p : probabilities) {
    for (Eigen::Index t = 0; t < p.rows(); ++t) {
      if (std::find(sinks.begin(), sinks.end(), t) != sinks.end()) continue;
      for (Eigen::Index s : sinks) sum += s <= t ? p(t, s) : 0.0;
      ++count;
    }
  }
  return count == 0 ? std::nan("") : sum / static_cast<double>(count);
}

/// Mean row kurtosis (docs/design.md §3) over the rows of x not in `excluded`.
template <class Scalar>
double bulk_kurtosis(const Matrix<Scalar>& x, const std::vector<Eigen::Index>& excluded) {
  const Eigen::VectorXd k = oq::analysis::row_kurtosis(Matrix<double>(x.template cast<double>())).template cast<double>();
  double sum = 0.0;
  Eigen::Index count = 0;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    if (std::find(excluded.begin(), excluded.end(), t) != excluded.end()) continue;
    sum += k[t];
    ++count;
  }
  return count == 0 ? std::nan("") : sum / static_cast<double>(count);
}

/// median |x| over every entry (the lower median, as Sun et al.'s torch.median).
using oq::analysis::median_abs;

/// What the statistics above find in one layer: its output hidden state,
/// its attention and its normed inputs.
struct LayerStatistics {
  double median_abs = 0;              ///< of the layer's output hidden state
  std::array<double, 3> top{};        ///< its three largest |x|
  std::vector<oq::analysis::MassiveActivation> massive;  ///< Sun et al.'s test on the output
  double sink_mass = 0;               ///< attention mass on the massive tokens (this layer's attention)
  double bulk_kurtosis = 0;           ///< mean row kurtosis of the output, massive tokens excluded
  std::size_t qkv_channel_outliers = 0;     ///< channel-wise outliers of RMSNorm₁'s output
  std::size_t gate_up_channel_outliers = 0; ///< and of RMSNorm₂'s output
};

/// The statistics of layer `w` on input x, `massive_tokens` being where the
/// massive activations are expected (the first token and the first delimiter).
template <class Scalar>
LayerStatistics layer_statistics(const Config& c, const LayerWeights<Scalar>& w, const Matrix<Scalar>& x,
                                 const std::vector<Eigen::Index>& massive_tokens) {
  LayerStatistics s;
  LinearInputs<Scalar> inputs;
  const Matrix<Scalar> y = forward(c, w, x, [&inputs](Linear which, const Matrix<Scalar>& in, const Matrix<Scalar>& weight) {
    inputs[static_cast<std::size_t>(input_of(which))] = in;
    return PlainLinear{}(which, in, weight);
  });
  s.median_abs = median_abs(y);
  std::vector<double> a(static_cast<std::size_t>(y.size()));
  for (Eigen::Index i = 0; i < y.size(); ++i) a[static_cast<std::size_t>(i)] = std::abs(static_cast<double>(y.data()[i]));
  const std::size_t k = std::min<std::size_t>(3, a.size());
  std::partial_sort(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(k), a.end(), std::greater<>());
  for (std::size_t i = 0; i < k; ++i) s.top[i] = a[i];
  s.massive = oq::analysis::find_massive_activations(y);
  s.sink_mass = sink_attention_mass(attention_probabilities(c, w, x), massive_tokens);
  s.bulk_kurtosis = bulk_kurtosis(y, massive_tokens);
  s.qkv_channel_outliers = oq::analysis::find_channel_outliers(inputs[static_cast<std::size_t>(Input::kAttention)]).size();
  s.gate_up_channel_outliers = oq::analysis::find_channel_outliers(inputs[static_cast<std::size_t>(Input::kMlp)]).size();
  return s;
}

}  // namespace llama
