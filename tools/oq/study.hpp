// tools/oq/study.hpp: `oq study`, the crossed study of the examples on a
// real checkpoint: every chosen point smoothing × rotation × weights
// (llama::MethodSpec, the same names as the examples' --methods), each
// random one (DuQuant's Haar draws, QuaRot's signs) over several draws, the
// perplexity of held-out sequences with bootstrap intervals, and each point's
// paired difference from a baseline, resolved by Holm's procedure over the
// family (tools/llama/bootstrap.hpp; docs/accuracy.md says why each choice).
//
//   oq study MODEL --calib C --data D --methods RTN,smooth+RTN,DuQuant+GPTQ --seeds 5 --out DIR
//
// Each point is calibrated as `oq quantize` calibrates (for_each_quantized_layer:
// layer by layer on the outputs of the quantized layers before it) and run
// by fake quantization in float, nothing written but the tables: the same
// activations as a checkpoint written with --no-fold and evaluated with
// --fake (the test checks that, bit for bit in the perplexity's terms). Draw k of a random point uses QuantOptions::seed + k·L for a
// model of L layers (layer l then seed + k·L + l: no two layers of any two
// draws share a seed).
#pragma once

#include "../llama/bootstrap.hpp"
#include "../llama/methods.hpp"
#include "pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace oq_tool {

struct StudyOptions {
  /// The points, in the order of the tables (the baseline is added first
  /// where missing); llama::study_method_specs() by default.
  std::vector<llama::MethodSpec> specs = llama::study_method_specs();
  llama::MethodSpec baseline{};  ///< the paired differences are taken against it (RTN)
  int seeds = 5;                 ///< draws of each random point (llama::is_random), >= 1
  /// Bits, clips, block size, …; seed is the first draw's. gptq and
  /// smoothquant_alpha_search must stay false: the specs say both.
  llama::QuantOptions quant;
  llama::stats::BootstrapOptions bootstrap{};
  std::function<void(const std::string&)> progress{};  ///< a line before each point and draw
};

/// One row of the study: full precision, or one point over its draws.
struct StudyRow {
  std::optional<llama::MethodSpec> spec;  ///< none: full precision
  std::size_t draws = 1;                  ///< seeds evaluated (1 for a point without a random part)
  llama::stats::Interval perplexity;      ///< over sequences and draws crossed
  double draw_min = 0, draw_max = 0;      ///< the perplexity of each draw alone
  std::optional<llama::stats::Interval> vs_baseline;  ///< − the baseline's, paired (points other than it)
  bool resolved_vs_baseline = false;      ///< Holm over the family of those differences rejects 0
  double seconds = 0;                     ///< calibration and evaluation, every draw

  std::string name() const { return spec ? spec->name() : "full precision"; }
};

struct StudyReport {
  std::vector<StudyRow> rows;  ///< full precision first, then the points in order
  llama::MethodSpec baseline;
  std::size_t sequences = 0;
  std::int64_t predictions = 0;  ///< tokens predicted over all sequences
  int seeds = 0;
  int act_bits = 0, weight_bits = 0;
  llama::stats::BootstrapOptions bootstrap;
};

/// Each evaluation sequence's NLL with every layer of `model` quantized as
/// `spec` (with the options `oq quantize` would use, layer_options_for;
/// calibrated on `calibration` as for_each_quantized_layer does).
inline std::vector<double> quantized_sequence_nlls(const LlamaModel& model, const std::vector<Sequence>& calibration,
                                                   const std::vector<Sequence>& evaluation,
                                                   const llama::MethodSpec& spec, const llama::QuantOptions& options) {
  const llama::Config& c = model.layer_config();
  HiddenStates xc = embed_all(model, calibration);
  HiddenStates xe = embed_all(model, evaluation);
  for_each_quantized_layer(model, xc, spec, layer_options_for(c, spec, options),
                           [&](int, const llama::LayerWeights<float>& w, llama::QuantizedLayer<float> q) {
                             for (auto& xs : xe) xs = llama::forward(c, w, xs, q);
                             return q;
                           });
  return sequence_nlls(model, xe, evaluation);
}

/// Runs the study; std::invalid_argument naming the option before any work
/// where it cannot run (fewer than 2 evaluation sequences, the bootstrap's
/// units; a point listed twice; a quantized model; options a checkpoint of
/// that point would refuse).
inline StudyReport run_study(const LlamaModel& model, const std::vector<Sequence>& calibration,
                             const std::vector<Sequence>& evaluation, const StudyOptions& options) {
  if (is_quantized(model)) {
    throw std::invalid_argument("study: model '" + model.directory().string() +
                                "' is already quantized; give the full-precision model");
  }
  if (options.seeds < 1) throw std::invalid_argument("study: --seeds must be >= 1, got " + std::to_string(options.seeds));
  if (calibration.empty()) throw std::invalid_argument("study: no calibration sequences");
  if (evaluation.size() < 2) {
    throw std::invalid_argument("study: the evaluation data must hold at least 2 sequences (the bootstrap's units), "
                                "got " + std::to_string(evaluation.size()));
  }
  std::vector<llama::MethodSpec> specs = options.specs;
  if (std::find(specs.begin(), specs.end(), options.baseline) == specs.end()) specs.insert(specs.begin(), options.baseline);
  for (const llama::MethodSpec& spec : specs) {
    if (std::count(specs.begin(), specs.end(), spec) > 1) {
      throw std::invalid_argument("study: --methods lists " + spec.name() + " twice");
    }
    validate_quantize_options(model.layer_config(), spec, options.quant);  // the checks of `oq quantize`
  }
  llama::stats::CrossedBootstrap boot(evaluation.size(), static_cast<std::size_t>(options.seeds), options.bootstrap);

  auto progress = [&options](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  using Clock = std::chrono::steady_clock;
  // nll[row][draw][sequence], row 0 full precision.
  std::vector<std::vector<std::vector<double>>> nll(specs.size() + 1);
  std::vector<double> seconds(specs.size() + 1, 0.0);
  {
    progress("study: full precision");
    const auto start = Clock::now();
    HiddenStates x = embed_all(model, evaluation);
    for (int l = 0; l < model.num_layers(); ++l) {
      const llama::LayerWeights<float> w = model.layer(l);
      for (auto& xs : x) xs = llama::forward(model.layer_config(), w, xs);
      throw_if_interrupted();
    }
    nll[0].push_back(sequence_nlls(model, x, evaluation));
    seconds[0] = std::chrono::duration<double>(Clock::now() - start).count();
  }
  const auto layers = static_cast<std::uint64_t>(model.num_layers());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const int draws = llama::is_random(specs[i].rotation) ? options.seeds : 1;
    const auto start = Clock::now();
    for (int k = 0; k < draws; ++k) {
      progress("study: " + specs[i].name() + (draws > 1 ? ", draw " + std::to_string(k + 1) + "/" + std::to_string(draws)
                                                         : std::string()));
      llama::QuantOptions o = options.quant;
      o.seed = options.quant.seed + static_cast<std::uint64_t>(k) * layers;
      nll[i + 1].push_back(quantized_sequence_nlls(model, calibration, evaluation, specs[i], o));
    }
    seconds[i + 1] = std::chrono::duration<double>(Clock::now() - start).count();
  }

  StudyReport r;
  r.baseline = options.baseline;
  r.sequences = evaluation.size();
  r.seeds = options.seeds;
  r.act_bits = options.quant.act_bits;
  r.weight_bits = options.quant.weight_bits;
  r.bootstrap = options.bootstrap;
  std::vector<double> tokens;
  for (const Sequence& s : evaluation) {
    tokens.push_back(static_cast<double>(s.size()) - 1.0);
    r.predictions += static_cast<std::int64_t>(s.size()) - 1;
  }
  auto stat = [&](std::size_t row) { return llama::stats::CrossedBootstrap::perplexity_of(nll[row], tokens); };
  const std::size_t base =
      static_cast<std::size_t>(std::find(specs.begin(), specs.end(), options.baseline) - specs.begin()) + 1;
  for (std::size_t row = 0; row < nll.size(); ++row) {
    StudyRow m;
    if (row > 0) m.spec = specs[row - 1];
    m.draws = nll[row].size();
    m.seconds = seconds[row];
    m.perplexity = boot.interval(stat(row));
    m.draw_min = std::numeric_limits<double>::infinity();
    m.draw_max = -std::numeric_limits<double>::infinity();
    for (const auto& draw : nll[row]) {
      double sum = 0;
      for (double v : draw) sum += v;
      const double ppl = std::exp(sum / static_cast<double>(r.predictions));
      m.draw_min = std::min(m.draw_min, ppl);
      m.draw_max = std::max(m.draw_max, ppl);
    }
    if (row > 0 && row != base) m.vs_baseline = boot.paired(stat(row), stat(base));
    r.rows.push_back(std::move(m));
  }
  std::vector<llama::stats::Comparison> family;
  for (StudyRow& m : r.rows) {
    if (m.vs_baseline) family.push_back({&*m.vs_baseline, &m.resolved_vs_baseline});
  }
  llama::stats::resolve_holm(family, 1.0 - options.bootstrap.level);
  return r;
}

/// One row per point (and full precision), as the examples' study.csv.
inline void write_study_csv(std::ostream& out, const StudyReport& r) {
  out << "method,smooth,rotation,weights,draws,perplexity,lower,upper,draw_min,draw_max,baseline,vs_baseline,"
         "vs_baseline_lower,vs_baseline_upper,vs_baseline_p,vs_baseline_verdict,seconds\n";
  const auto num = llama::stats::csv_number;
  for (const StudyRow& m : r.rows) {
    out << m.name() << ',';
    if (m.spec) {
      out << llama::smoothing_name(*m.spec) << ',' << llama::rotation_name(m.spec->rotation) << ','
          << llama::weight_quant_name(m.spec->weights);
    } else {
      out << ",,";
    }
    out << ',' << m.draws << ',' << num(m.perplexity.estimate) << ',' << num(m.perplexity.lower) << ','
        << num(m.perplexity.upper) << ',' << num(m.draw_min) << ',' << num(m.draw_max) << ',' << r.baseline.name()
        << ',';
    if (m.vs_baseline) {
      out << num(m.vs_baseline->estimate) << ',' << num(m.vs_baseline->lower) << ',' << num(m.vs_baseline->upper)
          << ',' << num(m.vs_baseline->p_zero) << ',' << llama::stats::verdict(m.vs_baseline, m.resolved_vs_baseline);
    } else {
      out << ",,,,";
    }
    out << ',' << num(m.seconds) << '\n';
  }
}

/// The markdown table: perplexity [interval] (range over draws), and the
/// paired difference from the baseline with its verdict.
inline void write_study_markdown(std::ostream& out, const StudyReport& r) {
  char buf[160];
  auto fmt = [&buf](const char* f, auto... v) {
    std::snprintf(buf, sizeof buf, f, v...);
    return std::string(buf);
  };
  const int percent = static_cast<int>(std::lround(r.bootstrap.level * 100));
  out << "W" << r.weight_bits << "A" << (r.act_bits == 0 ? 16 : r.act_bits) << " perplexity of " << r.sequences
      << " held-out sequences (" << r.predictions << " predicted tokens), fake quantization; random points over "
      << r.seeds << " draws (each draw's own perplexity in parentheses); " << percent
      << "% percentile bootstrap intervals (" << r.bootstrap.resamples << " resamples, seed " << r.bootstrap.seed
      << ") over sequences and draws crossed; Δ " << r.baseline.name()
      << ": the paired difference from that point; better / worse: Holm's procedure over every point's difference, "
         "family-wise level "
      << (100 - percent) << "%.\n\n| method | perplexity | Δ " << r.baseline.name() << " |\n|---|---|---|\n";
  for (const StudyRow& m : r.rows) {
    std::string cell = fmt("%.4f [%.4f, %.4f]", m.perplexity.estimate, m.perplexity.lower, m.perplexity.upper);
    if (m.draws > 1) cell += fmt(" (%.4f–%.4f)", m.draw_min, m.draw_max);
    out << "| " << m.name() << " | " << cell << " | ";
    if (m.vs_baseline) {
      out << fmt("%+.4f [%+.4f, %+.4f] ", m.vs_baseline->estimate, m.vs_baseline->lower, m.vs_baseline->upper)
          << llama::stats::verdict(m.vs_baseline, m.resolved_vs_baseline);
    } else {
      out << "–";
    }
    out << " |\n";
  }
}

}  // namespace oq_tool
