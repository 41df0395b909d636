// examples/03_small_transformer/study.hpp: the crossed, seeded study of the
// small transformer (issue 25 item 2): every training variant trained once
// per seed, each model quantized W4A4 with every point of smoothing ×
// rotation × weights (llama::all_method_specs; the example adds SmoothQuant's
// α search, llama::study_method_specs), the perplexity per held-out
// window, with bootstrap intervals over windows × seeds and paired
// differences.
//
// A seed s sets everything random about one model: its initialisation and
// training batches (as the default run's --seed does), its calibration
// windows, and the random rotations' draws (QuantOptions::seed). Every
// variant and method of seed s sees the same validation windows, so
// differences pair by window and by seed: between two methods on the same
// models, and between two variants (the same initialisation and batches, a
// different loss) with the same method.
//
// Statistics (tools/llama/bootstrap.hpp): the unit is a validation window
// (seq_len bytes, evaluated on its own; its tokens share its attention and
// are never resampled one by one), crossed with the seeds
// (llama::stats::CrossedBootstrap); a method's perplexity is
// exp(Σ NLL / Σ tokens) over the windows with each window's NLL averaged
// over the seeds (CrossedBootstrap::perplexity_of), the estimate at each
// seed alone beside it. Differences are paired (the same draws of windows
// and seeds). Two families of comparisons per variant, each with a reference
// fixed before the run: the quantized methods against the baseline method,
// and (for every variant after the first) each row against the first
// variant's same row. A difference is called better or worse only where
// Holm's procedure over its family (llama::stats::holm, family-wise level
// 1 − bootstrap.level, on the bootstrap p-values Interval::p_zero) rejects
// "no difference" and its own interval excludes 0. The bold "not separated
// from the best" set compares with a best picked from the data and is
// descriptive, not a test.
//
// A QAT variant (StudyInputs::qat_bits) has one more row, its models with
// their own learned activation clips: its family against the baseline
// method is one comparison larger than the other variants', so Holm holds
// its other rows to a slightly stricter level. Where the first variant has
// no learned clips, that row is paired with the first variant's baseline
// method instead (QAT's deployment against the reference model quantized
// by the method fixed before the run: --baseline names it).
#pragma once

#include "../../tools/llama/bootstrap.hpp"
#include "../../tools/llama/methods.hpp"
#include "evaluate.hpp"
#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace small_lm::study {

/// Σ over each window of `batch` of −log p(target), the blocks' linears run by linear_of(layer).
template <class Scalar, class LinearOf>
std::vector<double> window_nll_with(const Config& c, const Parameters<Scalar>& p, const Batch& batch,
                                    LinearOf&& linear_of) {
  const llama::Config lc = c.layer_config();
  std::vector<double> out;
  for (Eigen::Index s = 0; s < batch.sequences; ++s) {
    Matrix<Scalar> x = embed(p, batch, s);
    for (std::size_t l = 0; l < p.layers.size(); ++l) x = llama::forward(lc, p.layers[l], x, linear_of(l));
    out.push_back(sequence_nll(c, p, batch, s, x));
  }
  return out;
}

struct StudyOptions {
  llama::QuantOptions quant;  ///< bits, clips, block size, …; quant.seed is set per model (its seed)
  std::vector<llama::MethodSpec> specs = llama::all_method_specs();
  llama::MethodSpec baseline{};            ///< differences against it (RTN); run if not in specs
  llama::stats::BootstrapOptions bootstrap{};
  std::function<void(const std::string&)> progress{};
};

/// What the study trains and evaluates on.
struct StudyInputs {
  Config config;
  Batch validation;                            ///< the held-out windows (the same for every model)
  std::vector<std::string> variants;           ///< training variants; the first is the reference for variant differences
  std::vector<std::uint64_t> seeds;            ///< one model per variant and seed, >= 1 seeds
  /// The model of `variant` trained with `seed`.
  std::function<Parameters<float>(const std::string& variant, std::uint64_t seed)> train;
  /// The calibration windows of the model trained with `seed`.
  std::function<Batch(std::uint64_t seed)> calibration;
  /// The activation bits `variant`'s QAT trained its clips for; 0 (or
  /// unset): no QAT. Such a variant gets one more row, after the specs:
  /// its models W4A4 with their own learned clips on every linear input and
  /// options.quant's weights (learned_clip_perplexity, evaluate.hpp), the
  /// deployment QAT trained for; the other variants show no such row.
  std::function<int(const std::string& variant)> qat_bits{};
};

/// One method (full precision when spec is empty and learned_clips false)
/// on one variant.
struct MethodResult {
  std::optional<llama::MethodSpec> spec;  ///< none: full precision, or the learned clips
  bool learned_clips = false;             ///< the QAT row: the model's own clips (StudyInputs::qat_bits)
  bool evaluated = true;                  ///< false: the learned-clips row of a variant without QAT (no figures)
  llama::stats::Interval perplexity;
  double seed_min = 0, seed_max = 0;      ///< the perplexity of each seed's model alone
  std::optional<llama::stats::Interval> vs_baseline;  ///< − the baseline method's (quantized methods only)
  std::optional<llama::stats::Interval> vs_first_variant;  ///< − the first variant's, same method (other variants;
                                                           ///< learned clips: its baseline method if it has none)
  bool resolved_vs_baseline = false;       ///< Holm over the variant's comparisons with the baseline rejects 0
  bool resolved_vs_first_variant = false;  ///< Holm over the variant's comparisons with the first variant rejects 0
  bool tied_with_best = false;            ///< among quantized methods: best, or its paired interval against the best holds 0

  std::string name() const { return spec ? spec->name() : learned_clips ? kLearnedClipsName : "full precision"; }
  static constexpr const char* kLearnedClipsName = "learned clips (QAT)";
};

struct VariantResult {
  std::string variant;
  std::vector<MethodResult> methods;  ///< full precision first, the specs in order, then learned clips if any variant has QAT
  std::optional<llama::MethodSpec> best;  ///< none when the learned clips are best
};

struct StudyResult {
  std::vector<VariantResult> variants;
  llama::MethodSpec baseline;
  std::size_t windows = 0;
  Eigen::Index seq_len = 0;
  std::size_t seeds = 0;
  llama::stats::BootstrapOptions bootstrap;
};

inline StudyResult run_study(const StudyInputs& in, const StudyOptions& options) {
  if (in.variants.empty()) throw std::invalid_argument("small_lm::study::run_study: variants must not be empty");
  if (in.seeds.empty()) throw std::invalid_argument("small_lm::study::run_study: seeds must not be empty");
  for (std::size_t i = 0; i < in.seeds.size(); ++i) {
    if (std::count(in.seeds.begin(), in.seeds.end(), in.seeds[i]) > 1) {
      throw std::invalid_argument("small_lm::study::run_study: seeds must be distinct (the bootstrap draws them as "
                                  "independent models), got " + std::to_string(in.seeds[i]) + " twice");
    }
  }
  if (in.validation.sequences < 2) {
    throw std::invalid_argument("small_lm::study::run_study: validation must hold at least 2 windows (the bootstrap's "
                                "units), got " + std::to_string(in.validation.sequences));
  }
  if (!in.train || !in.calibration) {
    throw std::invalid_argument("small_lm::study::run_study: train and calibration must be set");
  }
  if (options.quant.gptq) {
    throw std::invalid_argument("small_lm::study::run_study: options.quant.gptq must be false (the specs name their "
                                "weights)");
  }
  std::vector<llama::MethodSpec> specs = options.specs;
  if (std::find(specs.begin(), specs.end(), options.baseline) == specs.end()) specs.insert(specs.begin(), options.baseline);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (std::count(specs.begin(), specs.end(), specs[i]) > 1) {
      throw std::invalid_argument("small_lm::study::run_study: options.specs lists " + specs[i].name() + " twice");
    }
  }
  auto progress = [&options](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  const std::size_t n = static_cast<std::size_t>(in.validation.sequences);
  const std::size_t seeds = in.seeds.size();
  std::vector<int> qat_bits(in.variants.size(), 0);
  for (std::size_t vi = 0; vi < in.variants.size(); ++vi) {
    if (!in.qat_bits) break;
    qat_bits[vi] = in.qat_bits(in.variants[vi]);
    if (qat_bits[vi] != 0 && (qat_bits[vi] < 2 || qat_bits[vi] > 8)) {
      throw std::invalid_argument("small_lm::study::run_study: qat_bits(\"" + in.variants[vi] +
                                  "\") must be 0 or 2..8, got " + std::to_string(qat_bits[vi]));
    }
    // The row is compared with the cross's methods, so it must run at their
    // activation bits (and quantize the weights as they do).
    if (qat_bits[vi] != 0 && (qat_bits[vi] != options.quant.act_bits || options.quant.weight_bits == 0)) {
      throw std::invalid_argument("small_lm::study::run_study: qat_bits(\"" + in.variants[vi] + "\") = " +
                                  std::to_string(qat_bits[vi]) + " must equal options.quant.act_bits = " +
                                  std::to_string(options.quant.act_bits) +
                                  ", with quantized weights (options.quant.weight_bits != 0), for its learned clips "
                                  "to be compared with the cross's methods");
    }
  }
  const bool any_qat = std::any_of(qat_bits.begin(), qat_bits.end(), [](int b) { return b != 0; });
  const std::size_t clips_row = specs.size() + 1;         // the learned clips, if any_qat
  const std::size_t rows = specs.size() + 1 + (any_qat ? 1 : 0);  // full precision first
  // nll[variant][row][seed][window]; the learned-clips row stays empty for a variant without QAT
  std::vector<std::vector<std::vector<std::vector<double>>>> nll(
      in.variants.size(), std::vector<std::vector<std::vector<double>>>(rows));
  auto evaluated = [&](std::size_t vi, std::size_t row) { return row != clips_row || qat_bits[vi] != 0; };
  for (std::size_t vi = 0; vi < in.variants.size(); ++vi) {
    const std::string& variant = in.variants[vi];
    for (std::uint64_t seed : in.seeds) {
      progress("study: " + variant + ", seed " + std::to_string(seed) + ": training");
      const Parameters<float> p = in.train(variant, seed);
      nll[vi][0].push_back(window_nll_with(in.config, p, in.validation, [](std::size_t) { return llama::PlainLinear{}; }));
      const auto inputs = record_block_inputs(in.config, p, in.calibration(seed));
      llama::QuantOptions q = options.quant;
      q.seed = seed;
      for (std::size_t i = 0; i < specs.size(); ++i) {
        progress("study: " + variant + ", seed " + std::to_string(seed) + ": " + specs[i].name());
        std::vector<llama::QuantizedLayer<float>> blocks;
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
          blocks.push_back(llama::quantize_layer(specs[i], p.layers[l], inputs[l], q));
        }
        nll[vi][i + 1].push_back(window_nll_with(in.config, p, in.validation,
                                                 [&blocks](std::size_t l) -> const llama::QuantizedLayer<float>& {
                                                   return blocks[l];
                                                 }));
      }
      if (qat_bits[vi] != 0) {
        progress("study: " + variant + ", seed " + std::to_string(seed) + ": " + MethodResult::kLearnedClipsName);
        std::vector<LearnedClipLayer<float>> blocks;
        try {
          blocks = learned_clip_blocks(p, qat_bits[vi], q);
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument("small_lm::study::run_study: variant \"" + variant + "\", seed " +
                                      std::to_string(seed) + ", which qat_bits says trained with QAT: " + e.what());
        }
        nll[vi][clips_row].push_back(window_nll_with(
            in.config, p, in.validation, [&blocks](std::size_t l) -> const LearnedClipLayer<float>& { return blocks[l]; }));
      }
    }
  }

  StudyResult result;
  result.baseline = options.baseline;
  result.windows = n;
  result.seq_len = in.validation.seq_len;
  result.seeds = seeds;
  result.bootstrap = options.bootstrap;
  const llama::stats::CrossedBootstrap boot(n, seeds, options.bootstrap);
  const auto t = static_cast<double>(in.validation.seq_len);
  const std::vector<double> tokens(n, t);  // every window predicts seq_len bytes
  const double alpha = 1.0 - options.bootstrap.level;
  const auto base = static_cast<std::size_t>(std::find(specs.begin(), specs.end(), options.baseline) - specs.begin()) + 1;
  for (std::size_t vi = 0; vi < in.variants.size(); ++vi) {
    progress("study: bootstrap, " + in.variants[vi]);
    VariantResult vr;
    vr.variant = in.variants[vi];
    auto stat = [&](std::size_t v, std::size_t row) {
      return llama::stats::CrossedBootstrap::perplexity_of(nll[v][row], tokens);
    };
    std::size_t best = 1;
    double best_value = std::numeric_limits<double>::infinity();
    for (std::size_t row = 0; row < rows; ++row) {
      MethodResult m;
      if (row > 0 && row < clips_row) m.spec = specs[row - 1];
      m.learned_clips = row == clips_row;
      if (!evaluated(vi, row)) {
        m.evaluated = false;
        vr.methods.push_back(std::move(m));
        continue;
      }
      m.perplexity = boot.interval(stat(vi, row));
      m.seed_min = std::numeric_limits<double>::infinity();
      m.seed_max = -std::numeric_limits<double>::infinity();
      for (std::size_t s = 0; s < seeds; ++s) {
        double sum = 0;
        for (double v : nll[vi][row][s]) sum += v;
        const double ppl = std::exp(sum / (static_cast<double>(n) * t));
        m.seed_min = std::min(m.seed_min, ppl);
        m.seed_max = std::max(m.seed_max, ppl);
      }
      if (row > 0) m.vs_baseline = boot.paired(stat(vi, row), stat(vi, base));
      if (vi > 0) m.vs_first_variant = boot.paired(stat(vi, row), stat(0, evaluated(0, row) ? row : base));
      if (row > 0 && m.perplexity.estimate < best_value) {
        best = row;
        best_value = m.perplexity.estimate;
      }
      vr.methods.push_back(std::move(m));
    }
    if (best < clips_row) vr.best = specs[best - 1];
    for (std::size_t row = 1; row < rows; ++row) {
      if (!evaluated(vi, row)) continue;
      vr.methods[row].tied_with_best = row == best || !boot.paired(stat(vi, row), stat(vi, best)).excludes(0.0);
    }
    // Holm: the quantized methods other than the baseline against it; every
    // row against the first variant's.
    std::vector<llama::stats::Comparison> vs_baseline, vs_first_variant;
    for (std::size_t row = 0; row < rows; ++row) {
      MethodResult& m = vr.methods[row];
      if (m.vs_baseline && row != base) vs_baseline.push_back({&*m.vs_baseline, &m.resolved_vs_baseline});
      if (m.vs_first_variant) vs_first_variant.push_back({&*m.vs_first_variant, &m.resolved_vs_first_variant});
    }
    llama::stats::resolve_holm(vs_baseline, alpha);
    if (vi > 0) llama::stats::resolve_holm(vs_first_variant, alpha);
    result.variants.push_back(std::move(vr));
  }
  return result;
}

/// "better" or "worse" where Holm's procedure resolved the paired
/// difference d and its interval lies below or above 0; else "not resolved"
/// ("" where there is no such difference).
using llama::stats::verdict;

/// One row per variant and method.
inline void write_csv(std::ostream& out, const StudyResult& r) {
  out << "variant,method,smooth,rotation,weights,seeds,perplexity,lower,upper,seed_min,seed_max,baseline,"
         "vs_baseline,vs_baseline_lower,vs_baseline_upper,vs_baseline_p,vs_baseline_verdict,tied_with_best,first_variant,"
         "vs_first_variant,vs_first_variant_lower,vs_first_variant_upper,vs_first_variant_p,vs_first_variant_verdict\n";
  const auto num = llama::stats::csv_number;
  for (const auto& v : r.variants) {
    for (const auto& m : v.methods) {
      if (!m.evaluated) continue;
      out << v.variant << ',' << m.name() << ',';
      if (m.spec) {
        out << llama::smoothing_name(*m.spec) << ',' << llama::rotation_name(m.spec->rotation) << ','
            << llama::weight_quant_name(m.spec->weights);
      } else {
        out << ",,";
      }
      out << ',' << r.seeds << ',' << num(m.perplexity.estimate) << ',' << num(m.perplexity.lower) << ','
          << num(m.perplexity.upper) << ',' << num(m.seed_min) << ',' << num(m.seed_max) << ',' << r.baseline.name()
          << ',';
      if (m.vs_baseline) {
        out << num(m.vs_baseline->estimate) << ',' << num(m.vs_baseline->lower) << ',' << num(m.vs_baseline->upper)
            << ',' << num(m.vs_baseline->p_zero) << ',' << verdict(m.vs_baseline, m.resolved_vs_baseline) << ','
            << (m.tied_with_best ? 1 : 0);
      } else {
        out << ",,,,,";
      }
      out << ',' << r.variants.front().variant;
      if (m.learned_clips && !r.variants.front().methods.back().evaluated) out << ':' << r.baseline.name();
      out << ',';
      if (m.vs_first_variant) {
        out << num(m.vs_first_variant->estimate) << ',' << num(m.vs_first_variant->lower) << ','
            << num(m.vs_first_variant->upper) << ',' << num(m.vs_first_variant->p_zero) << ','
            << verdict(m.vs_first_variant, m.resolved_vs_first_variant);
      } else {
        out << ",,,,";
      }
      out << '\n';
    }
  }
}

/// The markdown table: a row per method, per variant the perplexity
/// [interval] (seed range), the difference against the baseline method and,
/// for later variants, against the first variant.
inline void write_markdown(std::ostream& out, const StudyResult& r) {
  char buf[160];
  auto fmt = [&buf](const char* f, auto... v) {
    std::snprintf(buf, sizeof buf, f, v...);
    return std::string(buf);
  };
  const int percent = static_cast<int>(std::lround(r.bootstrap.level * 100));
  out << "Validation perplexity per byte, " << r.windows << " held-out windows of " << r.seq_len << " bytes, "
      << r.seeds << " training seeds per variant; " << percent << "% percentile bootstrap intervals ("
      << r.bootstrap.resamples << " resamples, seed " << r.bootstrap.seed
      << ") over windows and seeds crossed (each seed's own perplexity in parentheses); Δ " << r.baseline.name()
      << ": the difference from that method, Δ " << r.variants.front().variant
      << ": from that variant with the same method, both paired; better / worse: Holm's procedure over each "
         "family of comparisons (per variant, those with "
      << r.baseline.name() << "; those with " << r.variants.front().variant << "), family-wise level "
      << (100 - percent) << "%.\n\n| method |";
  for (const auto& v : r.variants) {
    out << ' ' << v.variant << " | Δ " << r.baseline.name() << " |";
    if (&v != &r.variants.front()) out << " Δ " << r.variants.front().variant << " |";
  }
  out << "\n|---|";
  for (const auto& v : r.variants) out << (&v != &r.variants.front() ? "---|---|---|" : "---|---|");
  out << '\n';
  for (std::size_t row = 0; row < r.variants.front().methods.size(); ++row) {
    out << "| " << r.variants.front().methods[row].name() << " |";
    for (const auto& v : r.variants) {
      const MethodResult& m = v.methods[row];
      if (!m.evaluated) {
        out << " – | – |" << (&v != &r.variants.front() ? " – |" : "");
        continue;
      }
      std::string cell = fmt("%.3f [%.3f, %.3f]", m.perplexity.estimate, m.perplexity.lower, m.perplexity.upper);
      if (r.seeds > 1) cell += fmt(" (%.3f–%.3f)", m.seed_min, m.seed_max);
      if (m.tied_with_best) cell = "**" + cell + "**";
      out << ' ' << cell << " | ";
      if (m.vs_baseline) {
        out << fmt("%+.3f [%+.3f, %+.3f] ", m.vs_baseline->estimate, m.vs_baseline->lower, m.vs_baseline->upper)
            << verdict(m.vs_baseline, m.resolved_vs_baseline);
      } else {
        out << "–";
      }
      out << " |";
      if (&v != &r.variants.front() && !m.vs_first_variant) {
        out << " – |";
      } else if (m.vs_first_variant) {
        out << ' '
            << fmt("%+.3f [%+.3f, %+.3f] ", m.vs_first_variant->estimate, m.vs_first_variant->lower,
                   m.vs_first_variant->upper)
            << verdict(m.vs_first_variant, m.resolved_vs_first_variant) << " |";
      }
    }
    out << '\n';
  }
  out << "\nBold: per variant, the best quantized method and every method whose paired interval against it holds 0.";
  if (r.variants.front().methods.back().learned_clips) {
    out << " " << MethodResult::kLearnedClipsName << ": a QAT variant's models with their own learned activation "
        << "clips and the cross's RTN weights; –: a variant without QAT has none.";
    if (!r.variants.front().methods.back().evaluated) {
      out << " Its Δ " << r.variants.front().variant << " is against " << r.variants.front().variant << "'s "
          << r.baseline.name() << ".";
    }
  }
  out << '\n';
}

}  // namespace small_lm::study
