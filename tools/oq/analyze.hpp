// tools/oq/analyze.hpp: `oq analyze`, a per-layer outlier report of a model's
// full-precision activations on calibration data.
//
// Per layer, two kinds of outliers (docs/design.md §3):
//   - massive activations (Sun et al. 2024, "Massive Activations in Large
//     Language Models", §2): entries of the hidden state (the residual
//     stream a layer outputs) with |x| > 100 and > 1000 × the median |x|;
//     a few tokens × a few channels, values in the thousands;
//   - channel-wise outliers of each linear input (the quantizer's input):
//     channels whose mean |x| exceeds 6 × the input's mean (SmoothQuant §3,
//     DuQuant §2), and the mean over tokens of the row kurtosis;
// and the norm channels that trigger them: input channels j of q_proj (after
// the input RMSNorm) and gate_proj (after the post-attention one) where
// |γ_j|·‖W_{:,j}‖₂ stands out (find_outlier_weight_channels).
//
// Outputs (in --out): layers.csv, one row per layer and input (the table
// printed); channels.csv, per layer and input the per-channel max |x| (the
// papers' per-channel magnitude figure); massive.csv, every massive
// activation (layer, token, channel, value); and two figures drawn here
// (write_analysis_figures, with plot.hpp and png.hpp: no Python needed):
// massive.png, per layer the top-1/2/3 and median |x| of the hidden state on
// a log axis (Sun et al. 2024, Fig. 1), and channels.png, the per-channel
// max |x| of the four linear inputs of the layer whose inputs reach the
// largest |x| (DuQuant, Lin et al. 2024, Fig. 1).
#pragma once

#include "../llama/llama_layer.hpp"
#include "../llama/methods.hpp"
#include "model.hpp"
#include "pipeline.hpp"
#include "plot.hpp"
#include "progress.hpp"

#include <oq/analysis.hpp>
#include <oq/kurtosis.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

namespace oq_tool {

/// Statistics of one linear input of one layer.
struct InputReport {
  int layer = 0;
  llama::Input input = llama::Input::kAttention;
  Eigen::Index tokens = 0;
  double max_abs = 0;
  double mean_abs = 0;
  double mean_kurtosis = 0;
  std::vector<oq::analysis::ChannelOutlier> channel_outliers;      ///< largest ratio first
  std::vector<oq::analysis::WeightChannelScore> norm_channels;     ///< q/k/v and gate/up inputs only
  Eigen::VectorXd channel_max_abs;                                 ///< per channel max |x|
};

/// The hidden state a layer outputs.
struct HiddenReport {
  int layer = 0;
  double max_abs = 0;
  std::array<double, 3> top_abs{};  ///< the three largest |x| (Sun et al.'s Fig. 1: top-1/2/3 and median per layer)
  double median_abs = 0;
  std::vector<oq::analysis::MassiveActivation> massive;  ///< token index is over all sequences' rows
};

struct AnalysisReport {
  std::vector<InputReport> inputs;
  std::vector<HiddenReport> hidden;
};

namespace detail_analyze {

/// The median |x| (the upper median for an even count) and the three
/// largest |x| of x.
inline double median_and_top_abs(const Matrix<float>& x, std::array<double, 3>& top) {
  std::vector<float> v(x.data(), x.data() + x.size());
  for (float& e : v) e = std::abs(e);
  top = {0.0, 0.0, 0.0};
  if (v.empty()) return 0.0;
  const std::size_t k = std::min<std::size_t>(3, v.size());
  std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(), std::greater<float>());
  for (std::size_t i = 0; i < k; ++i) top[i] = v[i];
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

inline Matrix<float> stack(const HiddenStates& x) {
  Eigen::Index rows = 0;
  for (const auto& m : x) rows += m.rows();
  Matrix<float> out(rows, x.empty() ? 0 : x.front().cols());
  Eigen::Index at = 0;
  for (const auto& m : x) {
    out.middleRows(at, m.rows()) = m;
    at += m.rows();
  }
  return out;
}

}  // namespace detail_analyze

/// The figures of `report` in `out` (which must exist): massive.png and
/// channels.png, as the file comment says; returns their paths. Values a
/// log axis cannot show (a median |x| of 0, say) are left out and counted
/// in the figure. Throws std::runtime_error naming a file it cannot write.
inline std::array<std::filesystem::path, 2> write_analysis_figures(const AnalysisReport& report,
                                                                    const std::filesystem::path& out) {
  namespace plot = oq_tool::plot;
  const std::array<std::filesystem::path, 2> paths{out / "massive.png", out / "channels.png"};

  // massive.png: 900 × 525 pixels, 6 × 3.5 inches at 150 dpi like a paper figure.
  plot::LineChart m;
  m.title = "Largest activation magnitudes per layer";
  m.x_label = "layer";
  m.y_label = "|x| of the hidden state";
  m.log_y = true;
  m.integer_x = true;
  constexpr std::array<const char*, 4> kLabels{"top 1", "top 2", "top 3", "median"};
  constexpr std::array<plot::Marker, 4> kMarkers{plot::Marker::kCircle, plot::Marker::kSquare, plot::Marker::kTriangle,
                                                 plot::Marker::kCross};
  for (std::size_t k = 0; k < 4; ++k) {
    plot::Series s;
    s.label = kLabels[k];
    s.color = plot::kPalette[k];
    s.marker = kMarkers[k];
    for (const HiddenReport& h : report.hidden) {
      s.x.push_back(h.layer);
      s.y.push_back(k == 0 ? h.max_abs : k < 3 ? h.top_abs[k] : h.median_abs);
    }
    m.series.push_back(std::move(s));
  }
  plot::Canvas massive(900, 525);
  plot::draw_line_chart(massive, {0, 0, massive.width(), massive.height()}, m);
  massive.write_png(paths[0]);

  // channels.png: the layer whose linear inputs reach the largest |x| (the
  // first such; NaN never wins), one bar panel per input.
  int worst = report.inputs.empty() ? 0 : report.inputs.front().layer;
  double worst_max = -1;
  for (const InputReport& r : report.inputs) {
    if (r.max_abs > worst_max) {
      worst_max = r.max_abs;
      worst = r.layer;
    }
  }
  std::vector<const InputReport*> panels;
  for (const InputReport& r : report.inputs) {
    if (r.layer == worst) panels.push_back(&r);
  }
  constexpr int kPanelHeight = 240;
  plot::Canvas channels(900, kPanelHeight * static_cast<int>(std::max<std::size_t>(panels.size(), 1)));
  std::vector<std::vector<double>> values;
  int label_width = 0;  // the widest panel's tick labels: the panels' frames line up
  for (const InputReport* r : panels) {
    values.emplace_back(r->channel_max_abs.data(), r->channel_max_abs.data() + r->channel_max_abs.size());
    label_width = std::max(label_width, plot::tick_label_width(plot::bar_value_axis(values.back())));
  }
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const InputReport& r = *panels[p];
    plot::BarChart b;
    std::string name(kInputKeys[static_cast<std::size_t>(r.input)]);
    std::replace(name.begin(), name.end(), '_', ' ');
    b.title = "layer " + std::to_string(worst) + ", " + name;
    b.y_label = "max |x|";
    if (p + 1 == panels.size()) b.x_label = "channel";
    b.values = std::move(values[p]);
    b.tick_label_width = label_width;
    plot::draw_bar_chart(channels, {0, kPanelHeight * static_cast<int>(p), channels.width(), kPanelHeight}, b);
  }
  channels.write_png(paths[1]);
  return paths;
}

/// Runs `model` in full precision over `sequences` and reports every layer;
/// writes the CSV files and the figures (write_analysis_figures) into `out`
/// (created if missing).
inline AnalysisReport analyze_model(const LlamaModel& model, const std::vector<Sequence>& sequences,
                                    const std::filesystem::path& out) {
  if (is_quantized(model)) {
    throw std::invalid_argument("model '" + model.directory().string() +
                                "' is a quantized checkpoint; analyze the full-precision model");
  }
  std::filesystem::create_directories(out);
  AnalysisReport report;
  const llama::Config& c = model.layer_config();
  HiddenStates x = embed_all(model, sequences);
  Progress bar("analyze", model.num_layers());
  for (int l = 0; l < model.num_layers(); ++l) {
    const llama::LayerWeights<float> w = model.layer(l);
    const llama::LinearInputs<float> inputs = llama::record_inputs(c, w, x);
    for (llama::Input input : llama::kAllInputs) {
      const Matrix<float>& in = inputs[static_cast<std::size_t>(input)];
      InputReport r;
      r.layer = l;
      r.input = input;
      r.tokens = in.rows();
      const Matrix<double> a = in.cast<double>().cwiseAbs();
      r.max_abs = a.maxCoeff();
      r.mean_abs = a.mean();
      r.channel_max_abs = a.colwise().maxCoeff().transpose();
      r.mean_kurtosis = oq::analysis::row_kurtosis(in).cast<double>().mean();
      r.channel_outliers = oq::analysis::find_channel_outliers(in);
      if (input == llama::Input::kAttention) {
        r.norm_channels = oq::analysis::find_outlier_weight_channels(w.input_norm, w[llama::Linear::kQ]);
      } else if (input == llama::Input::kMlp) {
        r.norm_channels = oq::analysis::find_outlier_weight_channels(w.post_norm, w[llama::Linear::kGate]);
      }
      report.inputs.push_back(std::move(r));
    }
    for (auto& xs : x) xs = llama::forward(c, w, xs);
    const Matrix<float> h = detail_analyze::stack(x);
    HiddenReport hr;
    hr.layer = l;
    hr.max_abs = h.cwiseAbs().maxCoeff();
    hr.median_abs = detail_analyze::median_and_top_abs(h, hr.top_abs);
    hr.massive = oq::analysis::find_massive_activations(h);
    report.hidden.push_back(std::move(hr));
    bar.advance("layer " + std::to_string(l));
  }
  bar.finish();

  std::ofstream layers(out / "layers.csv");
  layers << "layer,input,tokens,max_abs,mean_abs,mean_kurtosis,channel_outliers,top_outlier_channel,top_outlier_ratio,"
            "norm_channels,hidden_max_abs,hidden_top2_abs,hidden_top3_abs,hidden_median_abs,massive_activations\n";
  for (const InputReport& r : report.inputs) {
    const HiddenReport& h = report.hidden[static_cast<std::size_t>(r.layer)];
    layers << r.layer << ',' << kInputKeys[static_cast<std::size_t>(r.input)] << ',' << r.tokens << ',' << r.max_abs << ','
           << r.mean_abs << ',' << r.mean_kurtosis << ',' << r.channel_outliers.size() << ','
           << (r.channel_outliers.empty() ? -1 : r.channel_outliers.front().channel) << ','
           << (r.channel_outliers.empty() ? 0.0 : r.channel_outliers.front().ratio_to_mean) << ','
           << r.norm_channels.size() << ',' << h.max_abs << ',' << h.top_abs[1] << ',' << h.top_abs[2] << ','
           << h.median_abs << ',' << h.massive.size() << '\n';
  }
  std::ofstream channels(out / "channels.csv");
  channels << "layer,input,channel,max_abs\n";
  for (const InputReport& r : report.inputs) {
    for (Eigen::Index j = 0; j < r.channel_max_abs.size(); ++j) {
      channels << r.layer << ',' << kInputKeys[static_cast<std::size_t>(r.input)] << ',' << j << ','
               << r.channel_max_abs(j) << '\n';
    }
  }
  std::ofstream massive(out / "massive.csv");
  massive << "layer,token,channel,value,ratio_to_median\n";
  for (const HiddenReport& h : report.hidden) {
    for (const auto& m : h.massive) {
      massive << h.layer << ',' << m.token << ',' << m.channel << ',' << m.value << ',' << m.ratio_to_median << '\n';
    }
  }
  if (!layers || !channels || !massive) throw std::runtime_error("cannot write the CSV files in '" + out.string() + "'");
  write_analysis_figures(report, out);
  return report;
}

/// The report as a table: one line per layer and input.
inline void print_analysis(std::ostream& os, const AnalysisReport& report) {
  char line[256];
  std::snprintf(line, sizeof line, "%5s  %-15s %10s %10s %9s %8s %14s %8s   %10s %8s\n", "layer", "input", "max|x|",
                "mean|x|", "kurtosis", "ch.outl", "top channel", "norm ch.", "hidden max", "massive");
  os << line;
  for (const InputReport& r : report.inputs) {
    const HiddenReport& h = report.hidden[static_cast<std::size_t>(r.layer)];
    std::string top = "-";
    if (!r.channel_outliers.empty()) {
      char b[48];
      std::snprintf(b, sizeof b, "%ld (%.0fx)", static_cast<long>(r.channel_outliers.front().channel),
                    r.channel_outliers.front().ratio_to_mean);
      top = b;
    }
    const bool last = r.input == llama::Input::kDown;
    char hidden_buffer[32];
    std::snprintf(hidden_buffer, sizeof hidden_buffer, "%.3g", h.max_abs);
    const std::string hidden_max = hidden_buffer;
    std::snprintf(line, sizeof line, "%5d  %-15s %10.3g %10.3g %9.2f %8zu %14s %8zu   %10s %8s\n", r.layer,
                  std::string(kInputKeys[static_cast<std::size_t>(r.input)]).c_str(), r.max_abs, r.mean_abs,
                  r.mean_kurtosis, r.channel_outliers.size(), top.c_str(), r.norm_channels.size(),
                  last ? hidden_max.c_str() : "",
                  last ? std::to_string(h.massive.size()).c_str() : "");
    os << line;
  }
}

}  // namespace oq_tool
