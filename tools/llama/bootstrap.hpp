// tools/llama/bootstrap.hpp: percentile bootstrap confidence intervals over
// independent evaluation units (held-out windows or sequences), and the
// paired bootstrap of a difference between two methods measured on the same
// units.
//
// The unit. The bootstrap treats the units it resamples as independent draws
// (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, §8.2: the
// one-sample data structure). The tokens of one window are not: they share
// its context through attention, and neighbouring bytes of a text are
// correlated, so resampling tokens would treat correlated values as
// independent and give intervals too narrow. The unit here is always a whole
// window (a sequence evaluated on its own, or a disjoint stretch of held-out
// text), each window's figures summed over its tokens before the draw: the
// blocks of their §8.6 (moving blocks for a time series), here disjoint and
// given by the evaluation.
//
// The interval (their §13.3, the percentile interval): draw n units with
// replacement from the n measured ones, recompute the statistic, repeat B
// times; the interval at level 1 − a is the a/2 and 1 − a/2 quantiles of the
// B replicates. A statistic here is a function of per-unit multiplicities:
// replicate r gives unit u the weight c_ru (how often it was drawn,
// Σ_u c_ru = n), so a ratio of sums (the relative error ‖ΔY‖/‖Y‖ over the
// tokens of a group: Σ c·‖Δy‖² over Σ c·‖y‖²; a perplexity exp(Σ c·NLL / Σ
// c·tokens)) and a mean are each one weighted pass. The point estimate is the
// statistic at c = 1.
//
// Paired: two methods evaluated on the same units are one sample of pairs,
// not the two independent samples of their §8.3 (the two-sample problem,
// which draws each sample on its own); each replicate draws the units once
// for both, and the interval is that of the replicates of stat_A − stat_B.
// Differences between windows (an easy window is easy for both methods)
// cancel in each replicate, so the paired interval is far narrower than one
// built from the two separate intervals; "A better than B" is said only
// where it excludes 0.
//
// Many comparisons. A study that compares m methods with one baseline makes
// m tests; at level 95% each, about m/20 of them exclude 0 by chance where
// no method differs. Interval::p_zero is the two-sided bootstrap p-value of
// "the difference is 0" (twice the share of replicates on the far side of 0,
// the smallest a at which the percentile interval at level 1 − a excludes 0,
// up to the quantile's interpolation), and holm() applies Holm's step-down
// correction to a family of them (Holm, "A simple sequentially rejective
// multiple test procedure", Scand. J. Statist. 1979): the family-wise error
// is then at most a. p_zero moves in steps of 2/B, so Holm's first
// threshold a/m is met only by p_zero = 0 unless B >= 2m/a: the studies'
// default B = 2000 gives steps of 0.001, below a/m = 0.0016 for m = 31
// comparisons at a = 0.05; with a few hundred resamples (the tests) a
// difference is resolved, but for the family's last few, only where no
// replicate crosses 0. The examples' studies use a fixed baseline chosen
// before the run (not one picked from the data) and Holm over the family of
// its comparisons; their "not separated from the best" sets compare with a
// best picked from the data and are descriptive, not tests.
//
// Two crossed sources of variation (held-out windows × the seeds of a random
// rotation, every seed evaluated on every window): CrossedBootstrap draws the
// windows and the seeds independently with replacement in each replicate
// (Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 2007), so that an
// interval covers both; its variance for a mean is that of the two factors'
// means plus a small interaction term, conservative by that term.
//
// The studies report through resolve_holm() (Holm over one family of
// comparisons), verdict() (better / worse / not resolved) and csv_number().
//
// Reproducibility: the draws come from std::mt19937_64 (whose output the C++
// standard fixes) mapped to indices by rejection (no std::uniform_int_distribution,
// whose algorithm differs between standard libraries), so a seed gives the
// same draws with any compiler. The replicates themselves are floating-point
// sums and can differ in the last bits between builds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llama::stats {

/// A point estimate and its two-sided interval.
struct Interval {
  double estimate = 0;
  double lower = 0;
  double upper = 0;
  /// The two-sided bootstrap p-value of 0: 2·min(share of replicates ≤ 0,
  /// share ≥ 0), at most 1 (meaningful for a difference; see holm()).
  double p_zero = 1;

  /// Whether v lies outside [lower, upper] (a difference whose interval
  /// excludes 0 is one the data resolve).
  bool excludes(double v = 0.0) const { return v < lower || v > upper; }
};

struct BootstrapOptions {
  int resamples = 2000;      ///< B, in [1, 1e6]
  double level = 0.95;       ///< coverage of the interval, in (0, 1)
  std::uint64_t seed = 0;    ///< of the draws: the same seed draws the same resamples
};

namespace detail {

// An index in [0, n) from a uniform 64-bit word: rejection of the top
// partial range, so every index is equally likely.
inline std::size_t uniform_index(std::mt19937_64& rng, std::size_t n) {
  const auto range = static_cast<std::uint64_t>(n);
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % range;
  std::uint64_t v = rng();
  while (v >= limit) v = rng();
  return static_cast<std::size_t>(v % range);
}

// weights ← multiplicities of n draws from n units. A single unit takes no
// draw (its weight is 1): a factor of size 1 leaves the stream to the others.
inline void draw_weights(std::mt19937_64& rng, std::vector<double>& weights) {
  const std::size_t n = weights.size();
  if (n == 1) {
    weights[0] = 1.0;
    return;
  }
  std::fill(weights.begin(), weights.end(), 0.0);
  for (std::size_t k = 0; k < n; ++k) weights[uniform_index(rng, n)] += 1.0;
}

inline double checked(double v, const char* where) {
  if (!std::isfinite(v)) {
    throw std::domain_error(std::string("llama::stats::Bootstrap: the statistic is not finite on ") + where +
                            " (got " + std::to_string(v) + ")");
  }
  return v;
}

inline void validate(std::size_t units, const BootstrapOptions& options, const char* name) {
  if (units == 0) throw std::invalid_argument(std::string("llama::stats::Bootstrap: ") + name + " must be > 0");
  if (options.resamples < 1 || options.resamples > 1000000) {
    throw std::invalid_argument("llama::stats::Bootstrap: options.resamples must be in [1, 1000000], got " +
                                std::to_string(options.resamples));
  }
  if (!(options.level > 0 && options.level < 1)) {
    throw std::invalid_argument("llama::stats::Bootstrap: options.level must be in (0, 1), got " +
                                std::to_string(options.level));
  }
}

inline void check_perplexity_inputs(std::span<const double> nll_sum, std::span<const double> tokens, const char* where) {
  if (nll_sum.size() != tokens.size() || tokens.empty()) {
    throw std::invalid_argument(std::string("llama::stats::") + where + ": nll_sum and tokens must have one entry per "
                                "unit (at least one), got " + std::to_string(nll_sum.size()) + " and " +
                                std::to_string(tokens.size()));
  }
  for (double t : tokens) {
    if (!(t > 0 && std::isfinite(t))) {
      throw std::invalid_argument(std::string("llama::stats::") + where + ": every unit's tokens must be > 0 and "
                                  "finite, got " + std::to_string(t));
    }
  }
}

}  // namespace detail

/// The q-quantile (q in [0, 1]) of `sorted` (ascending, non-empty), linear
/// between order statistics: position q·(B − 1) (Hyndman & Fan's type 7).
inline double quantile_sorted(std::span<const double> sorted, double q) {
  if (sorted.empty()) throw std::invalid_argument("llama::stats::quantile_sorted: sorted must not be empty");
  if (!(q >= 0 && q <= 1)) throw std::invalid_argument("llama::stats::quantile_sorted: q must be in [0, 1], got " + std::to_string(q));
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(pos));
  if (i + 1 >= sorted.size()) return sorted.back();
  const double f = pos - static_cast<double>(i);
  return sorted[i] + f * (sorted[i + 1] - sorted[i]);
}

/// The percentile interval of `replicates` (sorted here) at `level`, around `estimate`.
inline Interval percentile_interval(double estimate, std::vector<double>& replicates, double level) {
  if (replicates.empty()) throw std::invalid_argument("llama::stats::percentile_interval: replicates must not be empty");
  std::sort(replicates.begin(), replicates.end());
  const double tail = (1.0 - level) / 2.0;
  const auto b = static_cast<double>(replicates.size());
  const auto at_most_0 = static_cast<double>(std::upper_bound(replicates.begin(), replicates.end(), 0.0) - replicates.begin());
  const auto at_least_0 = static_cast<double>(replicates.end() - std::lower_bound(replicates.begin(), replicates.end(), 0.0));
  return Interval{estimate, quantile_sorted(replicates, tail), quantile_sorted(replicates, 1.0 - tail),
                  std::min(1.0, 2.0 * std::min(at_most_0, at_least_0) / b)};
}

/// Holm's step-down procedure at family-wise level `alpha` over the p-values
/// `p` (one per comparison of the family): sort them ascending, reject the
/// k-th smallest (k = 1..m) while p_(k) <= alpha / (m − k + 1), stop at the
/// first that is not. Returns, per comparison in the given order, whether it
/// is rejected (a difference the family resolves).
inline std::vector<bool> holm(std::span<const double> p, double alpha) {
  if (!(alpha > 0 && alpha < 1)) {
    throw std::invalid_argument("llama::stats::holm: alpha must be in (0, 1), got " + std::to_string(alpha));
  }
  for (double v : p) {
    if (!(v >= 0 && v <= 1)) throw std::invalid_argument("llama::stats::holm: every p must be in [0, 1], got " + std::to_string(v));
  }
  std::vector<std::size_t> order(p.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&p](std::size_t a, std::size_t b) { return p[a] < p[b]; });
  std::vector<bool> reject(p.size(), false);
  const auto m = static_cast<double>(p.size());
  for (std::size_t k = 0; k < order.size(); ++k) {
    if (!(p[order[k]] <= alpha / (m - static_cast<double>(k)))) break;
    reject[order[k]] = true;
  }
  return reject;
}

/// One member of a family of comparisons: its paired difference (against
/// the family's reference) and the flag that receives Holm's decision on it.
struct Comparison {
  const Interval* difference = nullptr;
  bool* resolved = nullptr;
};

/// Holm's procedure (holm()) at family-wise level `alpha` over the p-values
/// of the family's differences (Interval::p_zero): sets each member's
/// *resolved to whether "no difference" is rejected. The family is every
/// comparison with one reference fixed before the run (the reference itself
/// is not a member). Nothing is written where it throws.
inline void resolve_holm(std::span<const Comparison> family, double alpha) {
  std::vector<double> p;
  p.reserve(family.size());
  for (const Comparison& c : family) {
    if (c.difference == nullptr || c.resolved == nullptr) {
      throw std::invalid_argument("llama::stats::resolve_holm: every member of family must point to a difference "
                                  "and a flag, got a null pointer");
    }
    p.push_back(c.difference->p_zero);
  }
  const std::vector<bool> reject = holm(p, alpha);
  for (std::size_t k = 0; k < family.size(); ++k) *family[k].resolved = reject[k];
}

/// The verdict on a paired difference d = A − B of a figure where lower is
/// better (an error, a perplexity): "better" or "worse" where Holm's
/// procedure over its family rejected "no difference" (`resolved`) and d's
/// own interval lies below or above 0; else "not resolved"; "" where there
/// is no difference.
inline std::string_view verdict(const std::optional<Interval>& d, bool resolved) {
  if (!d) return "";
  if (resolved && d->upper < 0) return "better";
  if (resolved && d->lower > 0) return "worse";
  return "not resolved";
}

/// A figure as the studies' CSV files write it: printf's %.9g, nine
/// significant digits (FLT_DECIMAL_DIG: a float reads back exactly).
inline std::string csv_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// The resampling of `units` evaluation units: every statistic asked of the
/// same Bootstrap sees the same B draws, which is what pairs two methods
/// measured on the same units (each also through separate interval() calls).
class Bootstrap {
 public:
  Bootstrap(std::size_t units, BootstrapOptions options = {}) : units_(units), options_(options) {
    detail::validate(units, options, "units");
  }

  std::size_t units() const { return units_; }
  const BootstrapOptions& options() const { return options_; }

  /// The interval of statistic(weights), weights[u] the multiplicity of unit
  /// u in a replicate (all 1 for the estimate). Throws std::domain_error if
  /// the statistic is not finite on the full sample or on some replicate.
  template <class Statistic>
  Interval interval(Statistic&& statistic) const {
    std::vector<double> ones(units_, 1.0);
    const double estimate = detail::checked(statistic(std::as_const(ones)), "the full sample");
    std::mt19937_64 rng(options_.seed);
    std::vector<double> weights(units_);
    std::vector<double> replicates;
    replicates.reserve(static_cast<std::size_t>(options_.resamples));
    for (int r = 0; r < options_.resamples; ++r) {
      detail::draw_weights(rng, weights);
      replicates.push_back(detail::checked(statistic(std::as_const(weights)), "a replicate"));
    }
    return percentile_interval(estimate, replicates, options_.level);
  }

  /// The paired interval of a(weights) − b(weights): both statistics on the
  /// same draw in every replicate.
  template <class A, class B>
  Interval paired(A&& a, B&& b) const {
    return interval([&](const std::vector<double>& w) { return a(w) - b(w); });
  }

  /// Σ_u w_u·x_u / Σ_u w_u: the mean of per-unit values (x is viewed, not
  /// copied: it must outlive the statistic).
  static auto mean_of(std::span<const double> x) {
    return [x](const std::vector<double>& w) {
      double num = 0, den = 0;
      for (std::size_t u = 0; u < x.size(); ++u) {
        num += w[u] * x[u];
        den += w[u];
      }
      return num / den;
    };
  }

  /// exp(Σ_u w_u·nll_u / Σ_u w_u·tokens_u): the perplexity of the units
  /// pooled, from each unit's negative log-likelihood summed over its tokens
  /// (nats) and its count of predicted tokens (> 0). Views both, as mean_of.
  static auto perplexity_of(std::span<const double> nll_sum, std::span<const double> tokens) {
    detail::check_perplexity_inputs(nll_sum, tokens, "Bootstrap::perplexity_of");
    return [nll_sum, tokens](const std::vector<double>& w) {
      double a = 0, b = 0;
      for (std::size_t u = 0; u < nll_sum.size(); ++u) {
        a += w[u] * nll_sum[u];
        b += w[u] * tokens[u];
      }
      return std::exp(a / b);
    };
  }

  /// √(Σ_u w_u·num_u / Σ_u w_u·den_u): a relative error ‖ΔY‖/‖Y‖ over the
  /// units, from each unit's ‖Δy‖² (num) and ‖y‖² (den). A replicate whose
  /// denominator is 0 gives 0 when its numerator is too (nothing measured),
  /// else +inf (which interval() refuses). Views num and den, as mean_of.
  static auto relative_error_of(std::span<const double> num, std::span<const double> den) {
    if (num.size() != den.size()) {
      throw std::invalid_argument("llama::stats::Bootstrap::relative_error_of: num and den must have one entry per "
                                  "unit, got " + std::to_string(num.size()) + " and " + std::to_string(den.size()));
    }
    return [num, den](const std::vector<double>& w) {
      double a = 0, b = 0;
      for (std::size_t u = 0; u < num.size(); ++u) {
        a += w[u] * num[u];
        b += w[u] * den[u];
      }
      if (b == 0) return a == 0 ? 0.0 : HUGE_VAL;
      return std::sqrt(a / b);
    };
  }

 private:
  std::size_t units_;
  BootstrapOptions options_;
};

/// Two crossed factors, `units` (held-out windows) × `seeds` (draws of a
/// random method, each evaluated on every window): each replicate draws the
/// units and the seeds independently with replacement (the pigeonhole
/// bootstrap), statistic(unit_weights, seed_weights). With seeds == 1 the
/// seed weight is always 1 and no draw is spent on it: the intervals are
/// Bootstrap(units, options)'s, bit for bit.
class CrossedBootstrap {
 public:
  CrossedBootstrap(std::size_t units, std::size_t seeds, BootstrapOptions options = {})
      : units_(units), seeds_(seeds), options_(options) {
    detail::validate(units, options, "units");
    detail::validate(seeds, options, "seeds");
  }

  std::size_t units() const { return units_; }
  std::size_t seeds() const { return seeds_; }
  const BootstrapOptions& options() const { return options_; }

  template <class Statistic>
  Interval interval(Statistic&& statistic) const {
    const std::vector<double> unit_ones(units_, 1.0), seed_ones(seeds_, 1.0);
    const double estimate = detail::checked(statistic(unit_ones, seed_ones), "the full sample");
    std::mt19937_64 rng(options_.seed);
    std::vector<double> unit_weights(units_), seed_weights(seeds_);
    std::vector<double> replicates;
    replicates.reserve(static_cast<std::size_t>(options_.resamples));
    for (int r = 0; r < options_.resamples; ++r) {
      detail::draw_weights(rng, unit_weights);
      detail::draw_weights(rng, seed_weights);
      replicates.push_back(detail::checked(statistic(std::as_const(unit_weights), std::as_const(seed_weights)),
                                           "a replicate"));
    }
    return percentile_interval(estimate, replicates, options_.level);
  }

  /// The paired interval of a − b: both on the same draws of units and seeds.
  template <class A, class B>
  Interval paired(A&& a, B&& b) const {
    return interval([&](const std::vector<double>& u, const std::vector<double>& s) { return a(u, s) - b(u, s); });
  }

  /// The perplexity of the units pooled, each unit's NLL averaged over the
  /// seeds: exp(Σ_u w_u·(Σ_s v_s·nll_sum[s][u] / Σ_s v_s) / Σ_u w_u·tokens_u),
  /// nll_sum[s][u] unit u's negative log-likelihood summed over its tokens
  /// under seed s's model, tokens[u] its count of predicted tokens (> 0). With
  /// one row (a method without a random part) the seed weights are ignored;
  /// else the rows must be the bootstrap's seeds. Views both (they must
  /// outlive the statistic).
  static auto perplexity_of(const std::vector<std::vector<double>>& nll_sum, std::span<const double> tokens) {
    if (nll_sum.empty()) throw std::invalid_argument("llama::stats::CrossedBootstrap::perplexity_of: nll_sum must hold a row per seed");
    for (const auto& row : nll_sum) detail::check_perplexity_inputs(row, tokens, "CrossedBootstrap::perplexity_of");
    return [&nll_sum, tokens](const std::vector<double>& w, const std::vector<double>& v) {
      if (w.size() != tokens.size() || (nll_sum.size() > 1 && v.size() != nll_sum.size())) {
        throw std::invalid_argument("llama::stats::CrossedBootstrap::perplexity_of: drawn for " +
                                    std::to_string(w.size()) + " units x " + std::to_string(v.size()) +
                                    " seeds, given " + std::to_string(tokens.size()) + " units x " +
                                    std::to_string(nll_sum.size()) + " seeds");
      }
      double seed_total = 0;
      if (nll_sum.size() > 1) {
        for (std::size_t s = 0; s < nll_sum.size(); ++s) seed_total += v[s];
      }
      double a = 0, b = 0;
      for (std::size_t u = 0; u < tokens.size(); ++u) {
        double nll = nll_sum[0][u];
        if (nll_sum.size() > 1) {
          nll = 0;
          for (std::size_t s = 0; s < nll_sum.size(); ++s) nll += v[s] * nll_sum[s][u];
          nll /= seed_total;
        }
        a += w[u] * nll;
        b += w[u] * tokens[u];
      }
      return std::exp(a / b);
    };
  }

 private:
  std::size_t units_, seeds_;
  BootstrapOptions options_;
};

}  // namespace llama::stats
