// examples/02_llama_layer/synthetic_run.hpp: the example's default run on
// the synthetic model (synthetic_model.hpp): build it, print the outlier
// statistics oq finds in it layer by layer (model_statistics.hpp), then
// quantize every layer W4A4 with every method and print the per-layer and
// end-to-end errors (stack_quantization.hpp), with oq::cpu's integer kernels
// beside fake quantization.
#pragma once

#include "model_statistics.hpp"
#include "report.hpp"
#include "stack_quantization.hpp"
#include "synthetic_model.hpp"
#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace llama {

struct SyntheticRunOptions {
  Config config;                  ///< LLaMA-2-7B's shape by default
  SyntheticModelOptions model;    ///< the construction (its seed included)
  Eigen::Index seq_len = 128;     ///< evaluation tokens
  Eigen::Index calibration_len = 128;
  std::uint64_t sequence_seed = 0;  ///< evaluation ids from sequence_seed + 1, calibration from + 2
  QuantOptions quant;
  bool integer = true;            ///< also the integer kernels, per layer
  int plot_layer = 1;             ///< the layer whose inputs go to channel_magnitudes.csv
  std::filesystem::path out_dir = "llama_layer_out";
  std::function<void(const std::string&)> progress{};
  std::function<void()> progress_done{};
};

namespace detail_synthetic_run {

inline std::string positions(const std::vector<Eigen::Index>& ids, std::size_t at_most = 8) {
  std::string s;
  std::size_t n = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (!is_delimiter(ids[t])) continue;
    if (n++ < at_most) s += (s.empty() ? "" : ", ") + std::to_string(t);
  }
  if (n > at_most) s += ", ... (" + std::to_string(n) + " in all)";
  return s.empty() ? "none" : s;
}

// "token 0 {2533: 2600, 1415: -1560}, token 20 {...}"
inline std::string massive_by_token(const std::vector<oq::analysis::MassiveActivation>& found) {
  if (found.empty()) return "none";
  std::map<Eigen::Index, std::string> by_token;
  for (const auto& m : found) {
    std::string& s = by_token[m.token];
    s += (s.empty() ? "" : ", ") + std::to_string(m.channel) + ": " + format("%.0f", m.value);
  }
  std::string out;
  std::size_t shown = 0;
  for (const auto& [token, channels] : by_token) {
    if (shown++ == 4) {
      out += ", ... (" + std::to_string(by_token.size()) + " tokens)";
      break;
    }
    out += (out.empty() ? "" : ", ") + std::string("token ") + std::to_string(token) + " {" + channels + "}";
  }
  return out;
}

// "0, 20" or "0, 20, 28, ... (9 tokens)"
inline std::string tokens(const std::vector<Eigen::Index>& t) {
  if (t.empty()) return "none";
  std::string s;
  for (std::size_t i = 0; i < std::min<std::size_t>(t.size(), 6); ++i) s += (i ? ", " : "") + std::to_string(t[i]);
  if (t.size() > 6) s += ", ... (" + std::to_string(t.size()) + " tokens)";
  return s;
}

inline std::string pad_left(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

inline std::string cell(double v, const char* fmt = "%9.4f") {
  return std::isnan(v) ? std::string("        -") : format(fmt, v);
}

}  // namespace detail_synthetic_run

/// The run: returns the exit status (0).
inline int run_synthetic_model(const SyntheticRunOptions& o, std::ostream& out) {
  using namespace detail_synthetic_run;
  auto progress = [&o](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  auto done = [&o] {
    if (o.progress_done) o.progress_done();
  };
  const Config& c = o.config;
  progress("building the synthetic model");
  const SyntheticModel<float> model = synthetic_model<float>(c, o.model);
  const int layers = static_cast<int>(model.layers.size());
  if (o.plot_layer < -1 || o.plot_layer >= layers) {
    throw std::invalid_argument("--plot-layer must be in [-1, " + std::to_string(layers - 1) + "], got " +
                                std::to_string(o.plot_layer));
  }
  const std::vector<Eigen::Index> ids = synthetic_token_ids(o.seq_len, o.sequence_seed + 1, o.model);
  const std::vector<Eigen::Index> calibration_ids = synthetic_token_ids(o.calibration_len, o.sequence_seed + 2, o.model);
  const std::vector<Eigen::Index> massive = massive_token_positions(ids);
  progress("full-precision forward");
  const std::vector<Matrix<float>> hidden = hidden_states(model, embed(model, ids));
  const std::vector<Matrix<float>> calibration_hidden = hidden_states(model, embed(model, calibration_ids));
  std::vector<LinearInputs<float>> calibration;
  for (int l = 0; l < layers; ++l) {
    calibration.push_back(record_inputs(c, model.layers[static_cast<std::size_t>(l)], calibration_hidden[static_cast<std::size_t>(l)]));
  }
  std::vector<LayerStatistics> statistics;
  for (int l = 0; l < layers; ++l) {
    progress("statistics of layer " + std::to_string(l));
    statistics.push_back(layer_statistics(c, model.layers[static_cast<std::size_t>(l)], hidden[static_cast<std::size_t>(l)], massive));
  }
  done();

  const SyntheticModelLayout& layout = model.layout;
  out << "model: synthetic, " << layers << " layers (synthetic_model.hpp; README.md cites each statistic), seed "
      << o.model.seed << "\n"
      << "shape: hidden " << c.hidden_size << ", FFN " << c.intermediate_size << ", heads " << c.num_attention_heads
      << " (KV " << c.num_key_value_heads << "), head_dim " << c.head_dim << "\n"
      << "construction: Student-t (nu " << format("%g", o.model.student_t_dof)
      << ") embeddings; large-gamma channels {" << join_indices(layout.outlier_channels)
      << "} in every norm; layer " << layout.spike_layer << "'s MLP: super channel " << layout.super_channel
      << " -> residual channels {" << layout.massive_channels[0] << ", " << layout.massive_channels[1]
      << "}; attention sinks from layer " << layout.spike_layer + 1 << " on\n"
      << "evaluation: " << ids.size() << " tokens, BOS then delimiters at " << positions(ids)
      << "; calibration: " << calibration_ids.size() << " tokens, delimiters at " << positions(calibration_ids) << "\n\n";

  out << "full precision, what oq::analysis finds at each layer's output (evaluation sequence; massive tokens: "
      << join_indices(massive) << ")\n"
      << "  sink mass: attention on the massive tokens, mean over heads and the other queries, in the layer's own attention\n"
      << "  bulk kurtosis: mean row kurtosis of the tokens without massive activations\n"
      << "  channel outliers: of the normed inputs (qkv / gate-up), mean |x| > 6x the input's\n";
  out << "layer   median|x|     top-1     top-2     top-3  sink mass  bulk kurtosis  channel outliers  massive activations "
         "(|x| > 100 and >= 1000x median)\n";
  out << "embed   " << format("%9.3f", median_abs(hidden[0])) << "          -         -         -          -"
      << format("%15.2f", bulk_kurtosis(hidden[0], massive)) << "                 -  "
      << massive_by_token(oq::analysis::find_massive_activations(hidden[0])) << "\n";
  for (int l = 0; l < layers; ++l) {
    const LayerStatistics& s = statistics[static_cast<std::size_t>(l)];
    const std::string outliers = std::to_string(s.qkv_channel_outliers) + " / " + std::to_string(s.gate_up_channel_outliers);
    out << std::to_string(l) << std::string(8 - std::to_string(l).size(), ' ') << format("%9.3f", s.median_abs)
        << format("%10.1f", s.top[0]) << format("%10.1f", s.top[1]) << format("%10.1f", s.top[2])
        << cell(s.sink_mass, "%11.3f") << format("%15.2f", s.bulk_kurtosis)
        << std::string(18 - std::min<std::size_t>(outliers.size(), 17), ' ') << outliers << "  " << massive_by_token(s.massive)
        << "\n";
  }
  out << "\n";

  // Every method, every layer.
  struct Row {
    std::string method;
    std::vector<LayerQuantization> layers;
  };
  std::vector<Row> rows;
  std::optional<ChannelCsv> csv;
  if (o.plot_layer >= 0) {
    const auto p = static_cast<std::size_t>(o.plot_layer);
    csv.emplace(o.out_dir / "channel_magnitudes.csv");
    csv->add("full precision", record_inputs(c, model.layers[p], hidden[p]));
  }
  for (Method method : kAllMethods) {
    const std::string name(method_name(method));
    StackOptions so;
    so.integer = o.integer;
    so.record_layer = o.plot_layer;
    so.progress = [&](const std::string& s) { progress(name + ", " + s); };
    LinearInputs<float> transformed;
    rows.push_back({name, quantize_stack(c, model.layers, hidden, calibration, massive,
                                         [&](int, const LayerWeights<float>& w, const LinearInputs<float>& cal) {
                                           return quantize_layer(method, w, cal, o.quant);
                                         },
                                         so, &transformed)});
    if (csv) csv->add(name, transformed);
    done();
  }

  out << "W4A4 (per-token asymmetric activations, clip " << format("%g", o.quant.act_clip)
      << "; per-channel asymmetric weights, clip " << format("%g", o.quant.weight_clip)
      << (o.quant.gptq ? ", by GPTQ with act-order" : "") << "), every layer quantized, errors relative to what is added:\n"
      << "  per layer: layer l quantized on its full-precision input, ||y^ - y|| / ||y - x||\n"
      << "  end to end: layers 0..l quantized, each on the quantized output before it, ||x^_l+1 - x_l+1|| / ||x_l+1 - x_0||\n"
      << "  massive activations at: the tokens where Sun et al.'s test fires on the quantized stack's output (full "
         "precision: "
      << tokens(oq::analysis::massive_tokens(statistics.back().massive)) << ")\n"
      << "  massive: the first token and the first delimiter; others: the other tokens"
      << (o.integer ? "; integer: the per-layer error with oq::cpu's integer kernels, all tokens" : "") << "\n";
  out << "method          layer   per layer: all   massive    others" << (o.integer ? "   integer" : "")
      << "   end to end: all   massive    others  calibration s  massive activations at (end to end)\n";
  for (const Row& r : rows) {
    for (std::size_t l = 0; l < r.layers.size(); ++l) {
      const LayerQuantization& q = r.layers[l];
      out << (l == 0 ? r.method : std::string()) << std::string(l == 0 ? 16 - std::min<std::size_t>(r.method.size(), 15) : 16, ' ')
          << pad_left(std::to_string(l), 5) << "      " << cell(q.layer.all) << " " << cell(q.layer.massive) << " " << cell(q.layer.others);
      if (o.integer) out << " " << (q.integer_layer ? cell(q.integer_layer->all) : std::string("        -"));
      out << "         " << cell(q.end_to_end.all) << " " << cell(q.end_to_end.massive) << " " << cell(q.end_to_end.others)
          << format("%15.2f", q.calibration_seconds) << "  " << tokens(q.end_to_end_massive_tokens) << "\n";
    }
  }
  if (o.integer) {
    out << "\ninteger kernels against fake quantization, per layer (integer_path.hpp's bound; the claim is <= 1 for both "
           "ratios)\n"
        << "method          layer  max|y_int-y_fake|    max|y|  max |r|/bound  epilogue/bound  differing codes (rows)\n";
    for (const Row& r : rows) {
      for (std::size_t l = 0; l < r.layers.size(); ++l) {
        const PathAgreement& a = r.layers[l].agreement;
        out << (l == 0 ? r.method : std::string()) << std::string(l == 0 ? 16 - std::min<std::size_t>(r.method.size(), 15) : 16, ' ')
            << pad_left(std::to_string(l), 5) << format("%19.3g", a.max_difference) << format("%10.4g", a.max_output)
            << format("%15.3g", a.max_bound_ratio) << format("%16.3g", a.max_epilogue_ratio) << "  " << a.differing_codes
            << " of " << a.codes << " (" << a.differing_rows << " of " << a.rows << ")\n";
      }
    }
  }
  if (csv) {
    out << "\nper-channel magnitudes of layer " << o.plot_layer << "'s inputs: " << csv->path().string()
        << " (draw with: python3 examples/02_llama_layer/plot_channels.py " << csv->path().string() << ")\n";
  }
  return 0;
}

}  // namespace llama
