// examples/02_llama_layer/study.hpp: the crossed, seeded study of one layer
// (issue 25 item 2): every point of smoothing {off, on} × rotation × weight
// quantizer (llama::all_method_specs; the example adds SmoothQuant's α
// search, llama::study_method_specs), the random rotations over several
// seeds, evaluated on held-out windows, the layer output error split by token
// group, with bootstrap intervals over the windows and paired differences
// against a baseline (tools/llama/bootstrap.hpp).
//
// What is measured: the relative error ‖Ŷ − Y‖_F / ‖Y − X‖_F of the layer
// output Y on its input X (fake quantization, tools/llama/methods.hpp) over the
// tokens of a group, relative to what the layer adds to the residual stream:
// the residual X passes through exactly, and on a layer after the one that
// creates the massive activations ‖Y‖ on the massive tokens is the residual's
// thousands, which would make every method's error there look like 0 (the
// example's default run measures each layer the same way);
//   massive  tokens where Sun et al.'s test (oq::analysis::find_massive_activations:
//            |x| > 100 and ≥ 1000 × the median |x| of that hidden state) fires on
//            the layer's input or its full-precision output, the two residual-stream
//            hidden states around the layer, each window's taken on its own;
//   other    every other token;
//   all      every token.
// Units: the windows (independent sequences; tokens of one window share its
// attention and are not independent). A group's interval resamples the
// windows that hold tokens of the group. A method with a random rotation
// (llama::is_random) runs once per seed, every seed on every window; its
// estimate is the error of the squared errors averaged over the seeds, and
// its interval resamples the windows and the seeds crossed
// (llama::stats::CrossedBootstrap), so that it covers the rotation draw as
// well as the held-out text; the estimate at each seed alone is reported
// beside it (min and max). A method without a random part ignores the seed
// draw. Paired differences: the same draws of windows and seeds for both
// methods. The baseline is fixed before the run (StudyOptions::baseline, not
// picked from the data), and per group its comparisons with every other
// method are one family: a method is called better or worse than the
// baseline only where Holm's procedure over that family rejects "no
// difference" at family-wise level 1 − bootstrap.level (stats::holm, on the
// bootstrap p-values Interval::p_zero) and the difference's own interval
// excludes 0. "Tied with the best": the paired interval against the group's
// best (picked from the data) holds 0; descriptive, not a test.
#pragma once

#include "../../tools/llama/bootstrap.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llama::study {

enum class TokenGroup { kMassive, kOther, kAll };
inline constexpr std::array kAllTokenGroups{TokenGroup::kMassive, TokenGroup::kOther, TokenGroup::kAll};

inline constexpr std::string_view group_name(TokenGroup g) {
  switch (g) {
    case TokenGroup::kMassive: return "massive";
    case TokenGroup::kOther: return "other";
    case TokenGroup::kAll: return "all";
  }
  return "?";
}

struct StudyOptions {
  /// Bits, clips, block size, greedy steps, …; quant.seed is the first seed,
  /// the others follow it (seed, seed + 1, …). quant.gptq must be false: the
  /// specs name their weights.
  QuantOptions quant;
  int seeds = 5;                                          ///< draws of each random rotation, >= 1
  std::vector<MethodSpec> specs = all_method_specs();     ///< the points run
  MethodSpec baseline{};                                  ///< differences against it (RTN); run if not in specs
  stats::BootstrapOptions bootstrap{};                    ///< resamples, level, seed of the draws
  oq::analysis::MassiveActivationOptions massive{};       ///< Sun et al.'s thresholds
  std::function<void(const std::string&)> progress{};     ///< a line before each step (may be empty)
};

/// One method's figures for one token group.
struct GroupResult {
  std::size_t windows = 0;                ///< windows holding tokens of the group (the bootstrap's units)
  std::optional<stats::Interval> error;   ///< relative error, interval over windows (none: no such tokens)
  double seed_min = 0, seed_max = 0;      ///< the estimate at each seed alone (equal for non-random methods)
  std::optional<stats::Interval> difference;  ///< error − the baseline's, paired
  bool resolved = false;                  ///< Holm over the group's comparisons with the baseline rejects 0
  bool tied_with_best = false;            ///< the paired interval against the group's best holds 0 (or it is the best)
};

struct SpecResult {
  MethodSpec spec;
  int seeds = 1;
  double seconds = 0;  ///< calibration and evaluation, all seeds
  std::array<GroupResult, 3> groups;
  const GroupResult& group(TokenGroup g) const { return groups[static_cast<std::size_t>(g)]; }
};

struct StudyResult {
  std::vector<SpecResult> specs;
  MethodSpec baseline;
  std::size_t windows = 0;
  Eigen::Index tokens_per_window = 0;
  std::array<std::size_t, 3> tokens{};  ///< tokens in each group, over all windows
  stats::BootstrapOptions bootstrap;
  int seeds = 0;
  std::array<std::optional<MethodSpec>, 3> best;  ///< lowest estimate per group

  const SpecResult& result(const MethodSpec& spec) const {
    for (const auto& r : specs) {
      if (r.spec == spec) return r;
    }
    throw std::invalid_argument("llama::study::StudyResult: no result for " + spec.name());
  }
};

namespace detail {

// The tokens of a window that Sun et al.'s test flags on x or y.
inline std::vector<bool> massive_tokens(const Matrix<float>& x, const Matrix<float>& y,
                                        const oq::analysis::MassiveActivationOptions& options) {
  std::vector<bool> out(static_cast<std::size_t>(x.rows()), false);
  for (const Matrix<float>* h : {&x, &y}) {
    for (const auto& m : oq::analysis::find_massive_activations(*h, options)) out[static_cast<std::size_t>(m.token)] = true;
  }
  return out;
}

// Per window and group: Σ‖ŷ_t − y_t‖² (num) and Σ‖y_t − x_t‖² (den) over the group's tokens, in double.
struct Sums {
  std::array<std::vector<double>, 3> num, den;
  explicit Sums(std::size_t windows) {
    for (auto& v : num) v.assign(windows, 0.0);
    for (auto& v : den) v.assign(windows, 0.0);
  }
};

inline void add_window(Sums& sums, std::size_t w, const Matrix<float>& y_hat, const Matrix<float>& y,
                       const Matrix<float>& x, const std::vector<bool>& massive) {
  for (Eigen::Index t = 0; t < y.rows(); ++t) {
    const double e = (y_hat.row(t).cast<double>() - y.row(t).cast<double>()).squaredNorm();
    const double r = (y.row(t).cast<double>() - x.row(t).cast<double>()).squaredNorm();
    const auto g = static_cast<std::size_t>(massive[static_cast<std::size_t>(t)] ? TokenGroup::kMassive : TokenGroup::kOther);
    for (std::size_t k : {g, static_cast<std::size_t>(TokenGroup::kAll)}) {
      sums.num[k][w] += e;
      sums.den[k][w] += r;
    }
  }
}

inline double pooled(std::span<const double> num, std::span<const double> den) {
  double a = 0, b = 0;
  for (std::size_t i = 0; i < num.size(); ++i) {
    a += num[i];
    b += den[i];
  }
  return b > 0 ? std::sqrt(a / b) : 0.0;
}

// The entries of v at the windows `keep` selects.
inline std::vector<double> select(const std::vector<double>& v, const std::vector<std::size_t>& keep) {
  std::vector<double> out;
  out.reserve(keep.size());
  for (std::size_t i : keep) out.push_back(v[i]);
  return out;
}

}  // namespace detail

/// Runs the study on `windows` (held-out sequences, tokens × hidden each, the
/// same length) with every spec calibrated on `calibration`.
inline StudyResult run_study(const Config& config, const LayerWeights<float>& weights,
                             const std::vector<Matrix<float>>& windows, const LinearInputs<float>& calibration,
                             const StudyOptions& options) {
  using Clock = std::chrono::steady_clock;
  if (windows.size() < 2) {
    throw std::invalid_argument("llama::study::run_study: windows must hold at least 2 sequences (the bootstrap's "
                                "units), got " + std::to_string(windows.size()));
  }
  for (const auto& x : windows) {
    if (x.rows() != windows.front().rows() || x.rows() == 0 || x.cols() != config.hidden_size) {
      throw std::invalid_argument("llama::study::run_study: every window must be " +
                                  std::to_string(windows.front().rows()) + " x " + std::to_string(config.hidden_size) +
                                  " (tokens x hidden, tokens > 0), got " + std::to_string(x.rows()) + " x " +
                                  std::to_string(x.cols()));
    }
  }
  if (options.seeds < 1) {
    throw std::invalid_argument("llama::study::run_study: options.seeds must be >= 1, got " + std::to_string(options.seeds));
  }
  if (options.quant.gptq) {
    throw std::invalid_argument("llama::study::run_study: options.quant.gptq must be false (the specs name their "
                                "weights: WeightQuant::kGptq)");
  }
  std::vector<MethodSpec> specs = options.specs;
  if (std::find(specs.begin(), specs.end(), options.baseline) == specs.end()) specs.insert(specs.begin(), options.baseline);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (std::find(specs.begin(), specs.begin() + static_cast<std::ptrdiff_t>(i), specs[i]) != specs.begin() + static_cast<std::ptrdiff_t>(i)) {
      throw std::invalid_argument("llama::study::run_study: options.specs lists " + specs[i].name() + " twice");
    }
  }
  auto progress = [&options](const std::string& line) {
    if (options.progress) options.progress(line);
  };

  const std::size_t n = windows.size();
  StudyResult result;
  result.baseline = options.baseline;
  result.windows = n;
  result.tokens_per_window = windows.front().rows();
  result.bootstrap = options.bootstrap;
  result.seeds = options.seeds;

  // Full precision: the reference outputs and each window's token groups.
  std::vector<Matrix<float>> reference(n);
  std::vector<std::vector<bool>> massive(n);
  detail::Sums reference_sums(n);  // den only (num stays 0)
  for (std::size_t w = 0; w < n; ++w) {
    progress("study: full precision, window " + std::to_string(w + 1) + "/" + std::to_string(n));
    reference[w] = forward(config, weights, windows[w]);
    massive[w] = detail::massive_tokens(windows[w], reference[w], options.massive);
    detail::add_window(reference_sums, w, reference[w], reference[w], windows[w], massive[w]);
    for (bool m : massive[w]) {
      ++result.tokens[static_cast<std::size_t>(m ? TokenGroup::kMassive : TokenGroup::kOther)];
      ++result.tokens[static_cast<std::size_t>(TokenGroup::kAll)];
    }
  }
  // A group's units: the windows holding its tokens.
  std::array<std::vector<std::size_t>, 3> units;
  for (std::size_t w = 0; w < n; ++w) {
    std::array<bool, 3> has{};
    for (bool m : massive[w]) {
      has[static_cast<std::size_t>(m ? TokenGroup::kMassive : TokenGroup::kOther)] = true;
      has[static_cast<std::size_t>(TokenGroup::kAll)] = true;
    }
    for (std::size_t g = 0; g < 3; ++g) {
      if (has[g]) units[g].push_back(w);
    }
  }

  // Every spec: per group, seed and window, the squared error (one seed where the spec is not random).
  std::vector<std::array<std::vector<std::vector<double>>, 3>> num(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const MethodSpec& spec = specs[i];
    const auto start = Clock::now();
    const int seeds = is_random(spec.rotation) ? options.seeds : 1;
    SpecResult r;
    r.spec = spec;
    r.seeds = seeds;
    for (auto& g : r.groups) {
      g.seed_min = std::numeric_limits<double>::infinity();
      g.seed_max = -std::numeric_limits<double>::infinity();
    }
    for (int s = 0; s < seeds; ++s) {
      QuantOptions o = options.quant;
      o.seed = options.quant.seed + static_cast<std::uint64_t>(s);
      progress("study: " + spec.name() + ", seed " + std::to_string(o.seed) + ": calibrating");
      const QuantizedLayer<float> layer = quantize_layer(spec, weights, calibration, o);
      progress("study: " + spec.name() + ", seed " + std::to_string(o.seed) + ": " + std::to_string(n) + " windows");
      detail::Sums sums(n);
      for (std::size_t w = 0; w < n; ++w) {
        detail::add_window(sums, w, forward(config, weights, windows[w], layer), reference[w], windows[w], massive[w]);
      }
      for (std::size_t g = 0; g < 3; ++g) {
        num[i][g].push_back(sums.num[g]);
        if (units[g].empty()) continue;
        const double e = detail::pooled(sums.num[g], reference_sums.den[g]);
        r.groups[g].seed_min = std::min(r.groups[g].seed_min, e);
        r.groups[g].seed_max = std::max(r.groups[g].seed_max, e);
      }
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.specs.push_back(std::move(r));
  }

  // Intervals: one crossed bootstrap per group (its windows × the seeds),
  // shared by every spec, so that all differences are paired.
  const auto base = static_cast<std::size_t>(std::find(specs.begin(), specs.end(), options.baseline) - specs.begin());
  for (std::size_t g = 0; g < 3; ++g) {
    if (units[g].empty()) continue;
    progress("study: bootstrap, " + std::string(group_name(kAllTokenGroups[g])) + " tokens");
    const stats::CrossedBootstrap boot(units[g].size(), static_cast<std::size_t>(options.seeds), options.bootstrap);
    const std::vector<double> den = detail::select(reference_sums.den[g], units[g]);
    // nums[i][s][k]: spec i, seed s, the group's k-th window.
    std::vector<std::vector<std::vector<double>>> nums(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      for (const auto& per_seed : num[i][g]) nums[i].push_back(detail::select(per_seed, units[g]));
    }
    // √(Σ_k w_k·(Σ_s v_s·num_sk / Σ_s v_s) / Σ_k w_k·den_k); a spec run once ignores v.
    auto stat = [&](std::size_t i) {
      return [&nums, &den, i](const std::vector<double>& w, const std::vector<double>& v) {
        const auto& per_seed = nums[i];
        double a = 0, b = 0;
        for (std::size_t k = 0; k < den.size(); ++k) {
          double e = per_seed[0][k];
          if (per_seed.size() > 1) {
            double sum = 0, count = 0;
            for (std::size_t s = 0; s < per_seed.size(); ++s) {
              sum += v[s] * per_seed[s][k];
              count += v[s];
            }
            e = sum / count;
          }
          a += w[k] * e;
          b += w[k] * den[k];
        }
        return b > 0 ? std::sqrt(a / b) : 0.0;  // b > 0: every unit holds tokens of the group
      };
    };
    std::size_t best = 0;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      GroupResult& gr = result.specs[i].groups[g];
      gr.windows = units[g].size();
      gr.error = boot.interval(stat(i));
      gr.difference = boot.paired(stat(i), stat(base));
      if (gr.error->estimate < result.specs[best].groups[g].error->estimate) best = i;
    }
    result.best[g] = specs[best];
    // Holm over the family of this group's comparisons with the baseline.
    std::vector<stats::Comparison> family;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      GroupResult& gr = result.specs[i].groups[g];
      if (i != base) family.push_back({&*gr.difference, &gr.resolved});
    }
    stats::resolve_holm(family, 1.0 - options.bootstrap.level);
    for (std::size_t i = 0; i < specs.size(); ++i) {
      result.specs[i].groups[g].tied_with_best = i == best || !boot.paired(stat(i), stat(best)).excludes(0.0);
    }
  }
  return result;
}

/// "better" or "worse" where Holm's procedure resolves the difference from
/// the baseline and its interval lies below or above 0; else "not resolved".
inline std::string_view verdict(const GroupResult& g) { return stats::verdict(g.difference, g.resolved); }

/// One row per spec and group: the spec's parts, the error and its interval,
/// the seed spread, the paired difference against the baseline.
inline void write_csv(std::ostream& out, const StudyResult& r) {
  out << "method,smooth,rotation,weights,seeds,group,windows,tokens,error,error_lower,error_upper,seed_min,seed_max,"
         "baseline,difference,difference_lower,difference_upper,p_value,verdict,tied_with_best,seconds\n";
  const auto num = stats::csv_number;
  for (const auto& s : r.specs) {
    for (TokenGroup tg : kAllTokenGroups) {
      const GroupResult& g = s.group(tg);
      out << s.spec.name() << ',' << smoothing_name(s.spec) << ',' << rotation_name(s.spec.rotation) << ','
          << weight_quant_name(s.spec.weights) << ',' << s.seeds << ',' << group_name(tg) << ',' << g.windows << ','
          << r.tokens[static_cast<std::size_t>(tg)] << ',';
      if (g.error) {
        out << num(g.error->estimate) << ',' << num(g.error->lower) << ',' << num(g.error->upper) << ','
            << num(g.seed_min) << ',' << num(g.seed_max) << ',' << r.baseline.name() << ','
            << num(g.difference->estimate) << ',' << num(g.difference->lower) << ',' << num(g.difference->upper) << ','
            << num(g.difference->p_zero) << ',' << verdict(g) << ',' << (g.tied_with_best ? 1 : 0);
      } else {
        out << ",,,,," << r.baseline.name() << ",,,,,,";
      }
      out << ',' << num(s.seconds) << '\n';
    }
  }
}

/// The markdown table: per group the error [interval], the seed range where
/// the method is random, and the difference against the baseline with its
/// verdict; then, per group, the best method and those the data cannot
/// separate from it.
inline void write_markdown(std::ostream& out, const StudyResult& r) {
  char buf[160];
  auto fmt = [&buf](const char* f, auto... v) {
    std::snprintf(buf, sizeof buf, f, v...);
    return std::string(buf);
  };
  const int percent = static_cast<int>(std::lround(r.bootstrap.level * 100));
  out << "Layer output relative error ‖Ŷ − Y‖/‖Y − X‖ (relative to what the layer adds) by token group, " << r.windows << " held-out windows of "
      << r.tokens_per_window << " tokens (massive tokens: " << r.tokens[0] << ", other: " << r.tokens[1]
      << "); " << percent << "% percentile bootstrap intervals (" << r.bootstrap.resamples << " resamples, seed "
      << r.bootstrap.seed << ") over the windows and, for random rotations, their " << r.seeds
      << " seeds crossed (each seed's own error in parentheses); Δ = error − " << r.baseline.name()
      << "'s, paired (the same draws); better / worse: Holm's procedure over the " << (r.specs.size() - 1)
      << " comparisons with " << r.baseline.name() << " in each group, family-wise level " << (100 - percent)
      << "%.\n\n";
  out << "| method | seeds |";
  for (TokenGroup g : kAllTokenGroups) out << ' ' << group_name(g) << " tokens | Δ " << group_name(g) << " |";
  out << "\n|---|---|";
  for (std::size_t i = 0; i < kAllTokenGroups.size(); ++i) out << "---|---|";
  out << '\n';
  for (const auto& s : r.specs) {
    out << "| " << s.spec.name() << " | " << s.seeds << " |";
    for (TokenGroup tg : kAllTokenGroups) {
      const GroupResult& g = s.group(tg);
      if (!g.error) {
        out << " – | – |";
        continue;
      }
      std::string cell = fmt("%.4f [%.4f, %.4f]", g.error->estimate, g.error->lower, g.error->upper);
      if (s.seeds > 1) cell += fmt(" (seeds %.4f–%.4f)", g.seed_min, g.seed_max);
      if (g.tied_with_best) cell = "**" + cell + "**";
      out << ' ' << cell << " | "
          << fmt("%+.4f [%+.4f, %+.4f] ", g.difference->estimate, g.difference->lower, g.difference->upper)
          << verdict(g) << " |";
    }
    out << '\n';
  }
  out << "\nBold: the group's best method and every method whose paired interval against it holds 0.\n";
  for (TokenGroup tg : kAllTokenGroups) {
    const auto gi = static_cast<std::size_t>(tg);
    if (!r.best[gi]) {
      out << "- " << group_name(tg) << " tokens: none in these windows\n";
      continue;
    }
    out << "- " << group_name(tg) << " tokens: best " << r.best[gi]->name();
    std::vector<std::string> tied;
    for (const auto& s : r.specs) {
      if (s.spec != *r.best[gi] && s.group(tg).tied_with_best) tied.push_back(s.spec.name());
    }
    if (tied.empty()) {
      out << ", separated from every other method\n";
    } else {
      out << "; not separated from it: ";
      for (std::size_t i = 0; i < tied.size(); ++i) out << (i ? ", " : "") << tied[i];
      out << '\n';
    }
  }
}

}  // namespace llama::study
