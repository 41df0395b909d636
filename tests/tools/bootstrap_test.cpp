// Tests for tools/llama/bootstrap.hpp: percentile intervals against cases
// with known answers (the mean of iid normals: width 2·1.96·σ/√n and 95%
// coverage; a two-point sample's exact bootstrap distribution), the paired
// interval of a constant shift, the relative-error and perplexity statistics
// against a direct computation, the p-value of 0 against the interval, Holm's
// procedure on known families and on true nulls, reproducible draws, refused
// input; the studies' reporting: resolve_holm() against holm(), verdict()
// over every case, csv_number() against iostreams and read back.
#include "../../tools/llama/bootstrap.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using llama::stats::Bootstrap;
using llama::stats::BootstrapOptions;
using llama::stats::CrossedBootstrap;
using llama::stats::Interval;

std::vector<double> normals(std::size_t n, double mean, double sigma, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, sigma);
  std::vector<double> x(n);
  for (double& v : x) v = d(rng);
  return x;
}

double sample_sd(const std::vector<double>& x) {
  const double m = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
  double ss = 0;
  for (double v : x) ss += (v - m) * (v - m);
  return std::sqrt(ss / static_cast<double>(x.size()));
}

}  // namespace

TEST_CASE("bootstrap of a mean of iid normals: the estimate is the mean, the width about 2·1.96·σ/√n") {
  const std::size_t n = 400;
  const std::vector<double> x = normals(n, 3.0, 2.0, 1);
  const Bootstrap boot(n, BootstrapOptions{.resamples = 4000, .level = 0.95, .seed = 5});
  const Interval ci = boot.interval(Bootstrap::mean_of(x));
  CHECK(ci.estimate == doctest::Approx(std::accumulate(x.begin(), x.end(), 0.0) / n).epsilon(1e-14));
  CHECK(ci.lower < ci.estimate);
  CHECK(ci.upper > ci.estimate);
  // The bootstrap distribution of the mean has sd σ̂/√n (σ̂ the plug-in sd);
  // its 2.5% and 97.5% quantiles lie ±1.96 of that apart up to the
  // Monte-Carlo error of 4000 replicates (~3% on each quantile's distance).
  const double expected = 2 * 1.959964 * sample_sd(x) / std::sqrt(static_cast<double>(n));
  CHECK((ci.upper - ci.lower) == doctest::Approx(expected).epsilon(0.08));
  CHECK(std::abs((ci.upper + ci.lower) / 2 - ci.estimate) < 0.1 * expected);
}

TEST_CASE("bootstrap percentile intervals of a normal mean cover the true mean about 95% of the time") {
  // 300 samples of 60 normals, each with its own 95% interval: the count that
  // holds the true mean is Binomial(300, p), p ≈ 0.94 (the percentile interval
  // of a mean is about x̄ ± 1.96·σ̂/√n with the plug-in σ̂ = s·√((n−1)/n), so it
  // covers as |t₅₉| < 1.96·√(59/60) = 1.944 does, P ≈ 0.943; 400 replicates add
  // a little noise to each end). The count's sd is ~4: the bounds 270..294
  // ([0.90, 0.98]·300) are 3 sd from 282 below and 3 sd above; an interval at
  // another level falls outside them (measured on these samples: 268 at 0.90,
  // 295 at 0.99; 278 at 0.95).
  int covered = 0;
  const int trials = 300;
  for (int t = 0; t < trials; ++t) {
    const std::vector<double> x = normals(60, -1.5, 0.5, 100 + static_cast<std::uint64_t>(t));
    const Bootstrap boot(x.size(), BootstrapOptions{.resamples = 400, .level = 0.95, .seed = static_cast<std::uint64_t>(t)});
    covered += boot.interval(Bootstrap::mean_of(x)).excludes(-1.5) ? 0 : 1;
  }
  INFO("covered " << covered << " of " << trials);
  CHECK(covered >= 270);
  CHECK(covered <= 294);
}

TEST_CASE("bootstrap of two points {0, 1}: the exact distribution of the replicate mean") {
  // A replicate draws 2 of 2 with replacement: mean 0 with probability 1/4, 1/2
  // with 1/2, 1 with 1/4. The 2.5% and 97.5% quantiles of many replicates are
  // then 0 and 1 (each end holds ~25% of them), the 50% interval's 25%/75%
  // quantiles lie at or next to 1/2's block, and a level-0.4 interval (30%..70%) is [1/2, 1/2].
  const std::vector<double> x{0.0, 1.0};
  const Bootstrap wide(2, BootstrapOptions{.resamples = 20000, .level = 0.95, .seed = 9});
  const Interval ci = wide.interval(Bootstrap::mean_of(x));
  CHECK(ci.estimate == 0.5);
  CHECK(ci.lower == 0.0);
  CHECK(ci.upper == 1.0);
  const Bootstrap narrow(2, BootstrapOptions{.resamples = 20000, .level = 0.4, .seed = 9});
  const Interval mid = narrow.interval(Bootstrap::mean_of(x));
  CHECK(mid.lower == 0.5);
  CHECK(mid.upper == 0.5);
  // One unit: every replicate is the sample itself.
  const std::vector<double> one{7.25};
  const Interval single = Bootstrap(1).interval(Bootstrap::mean_of(one));
  CHECK(single.estimate == 7.25);
  CHECK(single.lower == 7.25);
  CHECK(single.upper == 7.25);
}

TEST_CASE("paired bootstrap: a constant shift gives an interval of exactly the shift; unpaired intervals overlap") {
  // Method B's error on every window is method A's plus 0.01, the windows
  // themselves spread 100× wider: the two separate intervals overlap, the
  // paired one is [0.01, 0.01] up to rounding and excludes 0.
  const std::vector<double> a = normals(50, 1.0, 1.0, 3);
  std::vector<double> b(a);
  for (double& v : b) v += 0.01;
  const Bootstrap boot(a.size(), BootstrapOptions{.resamples = 1000, .seed = 4});
  const Interval ia = boot.interval(Bootstrap::mean_of(a));
  const Interval ib = boot.interval(Bootstrap::mean_of(b));
  CHECK(ia.upper > ib.lower);  // overlapping: the separate intervals cannot tell A from B
  const Interval d = boot.paired(Bootstrap::mean_of(b), Bootstrap::mean_of(a));
  CHECK(d.estimate == doctest::Approx(0.01).epsilon(1e-9));
  CHECK(d.lower == doctest::Approx(0.01).epsilon(1e-9));
  CHECK(d.upper == doctest::Approx(0.01).epsilon(1e-9));
  CHECK(d.excludes(0.0));
  // The same draws in separate calls: the difference of the two intervals'
  // replicate sets is that shift too (ib is ia moved by 0.01).
  CHECK(ib.lower - ia.lower == doctest::Approx(0.01).epsilon(1e-9));
  CHECK(ib.upper - ia.upper == doctest::Approx(0.01).epsilon(1e-9));
  // Noise around a zero difference: the paired interval holds 0.
  const std::vector<double> noise = normals(50, 0.0, 1e-3, 8);
  std::vector<double> c(a);
  for (std::size_t i = 0; i < c.size(); ++i) c[i] += noise[i] - std::accumulate(noise.begin(), noise.end(), 0.0) / 50;
  CHECK_FALSE(boot.paired(Bootstrap::mean_of(c), Bootstrap::mean_of(a)).excludes(0.0));
}

TEST_CASE("relative error statistic: √(Σ w·num / Σ w·den) against a direct computation on a resample") {
  const std::vector<double> num{1.0, 4.0, 0.0, 9.0}, den{4.0, 4.0, 1.0, 16.0};
  const auto stat = Bootstrap::relative_error_of(num, den);
  CHECK(stat(std::vector<double>(4, 1.0)) == doctest::Approx(std::sqrt(14.0 / 25.0)).epsilon(1e-15));
  // Units 1, 1, 3, 0 drawn: ‖ΔY‖² = 4 + 4 + 9 + 1, ‖Y‖² = 4 + 4 + 16 + 4.
  CHECK(stat(std::vector<double>{1, 2, 0, 1}) == doctest::Approx(std::sqrt(18.0 / 28.0)).epsilon(1e-15));
  const std::vector<double> zero(4, 0.0);
  CHECK(Bootstrap::relative_error_of(zero, zero)(std::vector<double>(4, 1.0)) == 0.0);
  CHECK_THROWS_AS(Bootstrap::relative_error_of(num, std::vector<double>{1.0}), std::invalid_argument);
  // A replicate with only unit 2 (den 1, num 0) is finite; one where every
  // weight falls on a unit with den 0 but num > 0 is refused by name.
  const std::vector<double> num2{1.0, 1.0}, den2{0.0, 1.0};
  const Bootstrap boot(2, BootstrapOptions{.resamples = 200, .seed = 1});
  CHECK_THROWS_AS(boot.interval(Bootstrap::relative_error_of(num2, den2)), std::domain_error);
}

TEST_CASE("bootstrap draws: the same seed gives the same interval, another seed another one; bad options refused") {
  const std::vector<double> x = normals(30, 0.0, 1.0, 2);
  const Interval a = Bootstrap(30, {.resamples = 500, .seed = 1}).interval(Bootstrap::mean_of(x));
  const Interval b = Bootstrap(30, {.resamples = 500, .seed = 1}).interval(Bootstrap::mean_of(x));
  const Interval c = Bootstrap(30, {.resamples = 500, .seed = 2}).interval(Bootstrap::mean_of(x));
  CHECK(a.lower == b.lower);
  CHECK(a.upper == b.upper);
  CHECK((a.lower != c.lower || a.upper != c.upper));
  // Each replicate draws exactly n units.
  const Bootstrap boot(7, {.resamples = 50, .seed = 3});
  CHECK_NOTHROW(boot.interval([](const std::vector<double>& w) {
    if (std::accumulate(w.begin(), w.end(), 0.0) != 7.0) throw std::logic_error("a replicate without 7 draws");
    return 0.0;
  }));
  CHECK_THROWS_AS(Bootstrap(0), std::invalid_argument);
  CHECK_THROWS_AS(Bootstrap(3, {.resamples = 0}), std::invalid_argument);
  CHECK_THROWS_AS(Bootstrap(3, {.level = 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(Bootstrap(3, {.level = std::nan("")}), std::invalid_argument);
  const std::vector<double> bad{1.0, std::nan("")};
  CHECK_THROWS_AS(Bootstrap(2).interval(Bootstrap::mean_of(bad)), std::domain_error);
  CHECK(llama::stats::quantile_sorted(std::vector<double>{1, 2, 3, 4, 5}, 0.5) == 3.0);
  CHECK(llama::stats::quantile_sorted(std::vector<double>{1, 2}, 0.25) == 1.25);
  CHECK_THROWS_AS(llama::stats::quantile_sorted(std::vector<double>{}, 0.5), std::invalid_argument);
}

TEST_CASE("crossed bootstrap: one seed gives the one-factor intervals bit for bit") {
  const std::vector<double> x = normals(25, 1.0, 0.5, 12);
  const BootstrapOptions options{.resamples = 700, .level = 0.9, .seed = 21};
  const Interval one = Bootstrap(x.size(), options).interval(Bootstrap::mean_of(x));
  const auto mean = Bootstrap::mean_of(x);
  const Interval crossed = CrossedBootstrap(x.size(), 1, options).interval(
      [&](const std::vector<double>& u, const std::vector<double>& s) {
        CHECK(s == std::vector<double>{1.0});
        return mean(u);
      });
  CHECK(crossed.estimate == one.estimate);
  CHECK(crossed.lower == one.lower);
  CHECK(crossed.upper == one.upper);
}

TEST_CASE("crossed bootstrap of y = a_seed + b_window + e: width 2·1.96·√(var_a/S + var_b/U), both factors covered") {
  // The grand mean's variance under the additive model is σ_a²/S + σ_b²/U
  // (+ σ_e²/(S·U)); the pigeonhole bootstrap reproduces it with the plug-in
  // variances of the seed means and the window means (Owen 2007, §3; the
  // interaction adds about σ_e²/(S·U), negligible here). Resampling the windows
  // alone misses the seeds' share.
  const std::size_t seeds = 20, units = 30;
  const std::vector<double> a = normals(seeds, 0.0, 1.0, 31), b = normals(units, 5.0, 2.0, 32),
                            e = normals(seeds * units, 0.0, 0.1, 33);
  std::vector<double> y(seeds * units);
  for (std::size_t s = 0; s < seeds; ++s)
    for (std::size_t u = 0; u < units; ++u) y[s * units + u] = a[s] + b[u] + e[s * units + u];
  auto grand_mean = [&](const std::vector<double>& wu, const std::vector<double>& ws) {
    double num = 0, den = 0;
    for (std::size_t s = 0; s < seeds; ++s)
      for (std::size_t u = 0; u < units; ++u) {
        num += ws[s] * wu[u] * y[s * units + u];
        den += ws[s] * wu[u];
      }
    return num / den;
  };
  std::vector<double> seed_means(seeds, 0.0), unit_means(units, 0.0);
  for (std::size_t s = 0; s < seeds; ++s)
    for (std::size_t u = 0; u < units; ++u) {
      seed_means[s] += y[s * units + u] / units;
      unit_means[u] += y[s * units + u] / seeds;
    }
  const double var_a = sample_sd(seed_means) * sample_sd(seed_means), var_b = sample_sd(unit_means) * sample_sd(unit_means);
  const BootstrapOptions options{.resamples = 4000, .seed = 3};
  const Interval crossed = CrossedBootstrap(units, seeds, options).interval(grand_mean);
  const double expected = 2 * 1.959964 * std::sqrt(var_a / seeds + var_b / units);
  INFO("width " << crossed.upper - crossed.lower << ", expected " << expected);
  CHECK((crossed.upper - crossed.lower) == doctest::Approx(expected).epsilon(0.08));
  // Windows alone: the seeds' variance is left out, the interval narrower by √(var_b/U / (var_a/S + var_b/U)).
  const Interval windows_only = Bootstrap(units, options).interval(
      [&](const std::vector<double>& wu) { return grand_mean(wu, std::vector<double>(seeds, 1.0)); });
  const double expected_windows = 2 * 1.959964 * std::sqrt(var_b / units);
  CHECK((windows_only.upper - windows_only.lower) == doctest::Approx(expected_windows).epsilon(0.08));
  CHECK((windows_only.upper - windows_only.lower) < 0.9 * (crossed.upper - crossed.lower));
  // Paired: a constant shift between two methods is resolved exactly.
  const Interval d = CrossedBootstrap(units, seeds, options).paired(
      [&](const std::vector<double>& wu, const std::vector<double>& ws) { return grand_mean(wu, ws) + 0.25; },
      grand_mean);
  CHECK(d.lower == doctest::Approx(0.25).epsilon(1e-9));
  CHECK(d.upper == doctest::Approx(0.25).epsilon(1e-9));
  CHECK_THROWS_AS(CrossedBootstrap(3, 0), std::invalid_argument);
  CHECK_THROWS_AS(CrossedBootstrap(0, 3), std::invalid_argument);
}

TEST_CASE("perplexity statistic: exp(Σ w·NLL / Σ w·tokens) against a direct computation; crossed: NLL averaged over seeds") {
  // Three windows: NLL sums (nats) and predicted tokens.
  const std::vector<double> nll{12.0, 30.0, 6.0}, tokens{10.0, 20.0, 5.0};
  const auto ppl = Bootstrap::perplexity_of(nll, tokens);
  CHECK(ppl(std::vector<double>(3, 1.0)) == doctest::Approx(std::exp(48.0 / 35.0)).epsilon(1e-15));
  // Windows 1, 1, 2 drawn: 30 + 30 + 6 nats over 20 + 20 + 5 tokens.
  CHECK(ppl(std::vector<double>{0, 2, 1}) == doctest::Approx(std::exp(66.0 / 45.0)).epsilon(1e-15));
  CHECK_THROWS_WITH_AS(Bootstrap::perplexity_of(nll, std::vector<double>{10.0, 0.0, 5.0}), doctest::Contains("tokens"),
                       std::invalid_argument);
  CHECK_THROWS_AS(Bootstrap::perplexity_of(nll, std::vector<double>{10.0, 20.0}), std::invalid_argument);
  CHECK_THROWS_AS(Bootstrap::perplexity_of(std::vector<double>{}, std::vector<double>{}), std::invalid_argument);

  // Crossed, two seeds: each window's NLL is the seeds' mean before pooling.
  const std::vector<std::vector<double>> by_seed{{12.0, 30.0, 6.0}, {14.0, 26.0, 9.0}};
  const auto crossed = CrossedBootstrap::perplexity_of(by_seed, tokens);
  CHECK(crossed(std::vector<double>(3, 1.0), std::vector<double>(2, 1.0)) ==
        doctest::Approx(std::exp((13.0 + 28.0 + 7.5) / 35.0)).epsilon(1e-15));
  // A replicate that drew seed 1 twice sees seed 1 alone; windows 0, 0, 2 drawn.
  CHECK(crossed(std::vector<double>{2, 0, 1}, std::vector<double>{0, 2}) ==
        doctest::Approx(std::exp((2 * 14.0 + 9.0) / 25.0)).epsilon(1e-15));
  // One row (a method without a random part) ignores the seed draw, and its
  // intervals are the one-factor bootstrap's on one seed.
  const std::vector<std::vector<double>> one{nll};
  const auto single = CrossedBootstrap::perplexity_of(one, tokens);
  CHECK(single(std::vector<double>{0, 2, 1}, std::vector<double>{0, 2}) == ppl(std::vector<double>{0, 2, 1}));
  const BootstrapOptions options{.resamples = 300, .seed = 4};
  const Interval a = CrossedBootstrap(3, 1, options).interval(single), b = Bootstrap(3, options).interval(ppl);
  CHECK(a.lower == b.lower);
  CHECK(a.upper == b.upper);
  // Rows of unequal length, or a draw over another number of seeds, are refused.
  const std::vector<std::vector<double>> ragged{{1.0, 2.0, 3.0}, {1.0, 2.0}};
  CHECK_THROWS_AS(CrossedBootstrap::perplexity_of(ragged, tokens), std::invalid_argument);
  CHECK_THROWS_AS(CrossedBootstrap::perplexity_of({}, tokens), std::invalid_argument);
  CHECK_THROWS_AS(CrossedBootstrap(3, 3, options).interval(crossed), std::invalid_argument);
}

TEST_CASE("p_zero: twice the share of replicates beyond 0; it is below 1 − level exactly where the interval excludes 0") {
  std::vector<double> r{-1.0, 1.0, 2.0, 3.0};
  CHECK(llama::stats::percentile_interval(1.0, r, 0.95).p_zero == 0.5);
  r = {0.0, 0.0, 1.0, 2.0};  // replicates at 0 count on both sides
  CHECK(llama::stats::percentile_interval(1.0, r, 0.95).p_zero == 1.0);
  r = {0.5, 1.0, 2.0};
  CHECK(llama::stats::percentile_interval(1.0, r, 0.95).p_zero == 0.0);
  // Paired differences of noisy means around shifts from 0 to 3 standard
  // errors: the interval at level 0.9 excludes 0 where p_zero < 0.1, up to the
  // quantile's interpolation between two neighbouring replicates (p_zero
  // within 2/B of 0.1 is not checked).
  const std::size_t n = 40;
  const std::vector<double> base = normals(n, 0.0, 1.0, 41);
  int excluded = 0, held = 0;
  for (int k = 0; k < 30; ++k) {
    const std::vector<double> noise = normals(n, 0.1 * k / std::sqrt(static_cast<double>(n)), 1.0, 50 + static_cast<std::uint64_t>(k));
    std::vector<double> other(base);
    for (std::size_t i = 0; i < n; ++i) other[i] += noise[i];
    const Bootstrap boot(n, {.resamples = 1000, .level = 0.9, .seed = static_cast<std::uint64_t>(k)});
    const Interval d = boot.paired(Bootstrap::mean_of(other), Bootstrap::mean_of(base));
    if (std::abs(d.p_zero - 0.1) <= 2.0 / 1000) continue;
    CHECK(d.excludes(0.0) == (d.p_zero < 0.1));
    (d.excludes(0.0) ? excluded : held) += 1;
  }
  CHECK(excluded > 0);  // both outcomes occur over the shifts
  CHECK(held > 0);
}

TEST_CASE("holm: the step-down rejections of known families, and its family-wise error on true nulls") {
  using llama::stats::holm;
  // m = 4 at 0.05: 0.005 ≤ 0.05/4 and 0.01 ≤ 0.05/3 are rejected; 0.03 > 0.05/2 stops the procedure.
  CHECK(holm(std::vector<double>{0.01, 0.04, 0.03, 0.005}, 0.05) == std::vector<bool>{true, false, false, true});
  // Every p_(k) ≤ α/(m − k + 1): all rejected (Bonferroni, α/m = 0.025, would keep 0.03 and 0.04).
  CHECK(holm(std::vector<double>{0.01, 0.02, 0.03, 0.04}, 0.1) == std::vector<bool>{true, true, true, true});
  // The first failure stops it: 0.5 is not rejected, and nothing after it would be.
  CHECK(holm(std::vector<double>{0.001, 0.5, 0.002}, 0.05) == std::vector<bool>{true, false, true});
  CHECK(holm(std::vector<double>{}, 0.05).empty());
  // 2000 families of 20 true nulls (p uniform): Holm rejects anything in at
  // most α of them (here 1 − (1 − α/20)^20 ≈ 0.0488 for independent p; its sd
  // over 2000 families ≈ 0.0048), where testing each at α would in 1 − 0.95^20 ≈ 64%.
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int any = 0, any_unadjusted = 0;
  for (int f = 0; f < 2000; ++f) {
    std::vector<double> p(20);
    for (double& v : p) v = u(rng);
    const auto r = holm(p, 0.05);
    any += std::count(r.begin(), r.end(), true) > 0 ? 1 : 0;
    any_unadjusted += *std::min_element(p.begin(), p.end()) <= 0.05 ? 1 : 0;
  }
  CHECK(any >= 2000 * 0.034);
  CHECK(any <= 2000 * 0.064);
  CHECK(any_unadjusted > 2000 / 2);
  CHECK_THROWS_AS(holm(std::vector<double>{0.5}, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(holm(std::vector<double>{1.5}, 0.05), std::invalid_argument);
  CHECK_THROWS_AS(holm(std::vector<double>{std::nan("")}, 0.05), std::invalid_argument);
}

TEST_CASE("resolve_holm: sets exactly the family's flags to holm() of their p-values, or nothing where it throws") {
  using llama::stats::Comparison;
  using llama::stats::resolve_holm;
  // The first family of the holm case above, with a fifth flag outside it (a
  // reference's) that must keep its value.
  const std::vector<double> p{0.01, 0.04, 0.03, 0.005};
  std::vector<Interval> d(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) d[i].p_zero = p[i];
  bool flags[5] = {false, true, true, false, true};
  std::vector<Comparison> family;
  for (std::size_t i = 0; i < p.size(); ++i) family.push_back({&d[i], &flags[i]});
  resolve_holm(family, 0.05);
  const std::vector<bool> expected = llama::stats::holm(p, 0.05);
  for (std::size_t i = 0; i < p.size(); ++i) CHECK(flags[i] == expected[i]);
  CHECK(flags[4]);
  resolve_holm(std::vector<Comparison>{}, 0.05);  // an empty family: nothing to do

  // Paired differences from one bootstrap (three shifted copies of a sample
  // against it): the flags are Holm's decisions on their bootstrap p-values.
  const std::size_t n = 50;
  const std::vector<double> base = normals(n, 0.0, 1.0, 61);
  const Bootstrap boot(n, {.resamples = 500, .level = 0.95, .seed = 3});
  std::vector<std::vector<double>> others;
  for (double shift : {0.0, 0.05, 1.0}) {
    const std::vector<double> noise = normals(n, shift, 0.3, 70 + static_cast<std::uint64_t>(shift * 100));
    others.push_back(base);
    for (std::size_t i = 0; i < n; ++i) others.back()[i] += noise[i];
  }
  std::vector<Interval> diffs;
  for (const auto& o : others) diffs.push_back(boot.paired(Bootstrap::mean_of(o), Bootstrap::mean_of(base)));
  bool resolved[3] = {true, true, false};
  family.clear();
  std::vector<double> pz;
  for (std::size_t i = 0; i < diffs.size(); ++i) {
    family.push_back({&diffs[i], &resolved[i]});
    pz.push_back(diffs[i].p_zero);
  }
  resolve_holm(family, 0.05);
  const std::vector<bool> holm_pz = llama::stats::holm(pz, 0.05);
  for (std::size_t i = 0; i < diffs.size(); ++i) CHECK(resolved[i] == holm_pz[i]);
  CHECK(resolved[2]);  // a shift of 1 sd of the sample is resolved by 50 pairs

  // Refused: a bad level or p-value, a null member; no flag is written.
  bool untouched[2] = {true, false};
  Interval bad;
  bad.p_zero = 1.5;
  CHECK_THROWS_AS(resolve_holm(std::vector<Comparison>{{&d[0], &untouched[0]}, {&d[3], &untouched[1]}}, 0.0),
                  std::invalid_argument);
  CHECK_THROWS_AS(resolve_holm(std::vector<Comparison>{{&d[3], &untouched[0]}, {&bad, &untouched[1]}}, 0.05),
                  std::invalid_argument);
  CHECK_THROWS_AS(resolve_holm(std::vector<Comparison>{{&d[3], &untouched[0]}, {nullptr, &untouched[1]}}, 0.05),
                  std::invalid_argument);
  CHECK_THROWS_AS(resolve_holm(std::vector<Comparison>{{&d[3], &untouched[0]}, {&d[3], nullptr}}, 0.05),
                  std::invalid_argument);
  CHECK(untouched[0]);
  CHECK_FALSE(untouched[1]);
}

TEST_CASE("verdict: better or worse only where resolved and the interval excludes 0 on that side") {
  using llama::stats::verdict;
  auto diff = [](double lower, double upper) { return std::optional<Interval>(Interval{(lower + upper) / 2, lower, upper, 0.0}); };
  CHECK(verdict(std::nullopt, true) == "");
  CHECK(verdict(std::nullopt, false) == "");
  CHECK(verdict(diff(-0.3, -0.1), true) == "better");
  CHECK(verdict(diff(0.1, 0.3), true) == "worse");
  // Not resolved by Holm: no direction, whatever the interval.
  CHECK(verdict(diff(-0.3, -0.1), false) == "not resolved");
  CHECK(verdict(diff(0.1, 0.3), false) == "not resolved");
  // Resolved but the interval reaches 0 (p_zero and the interpolated
  // quantiles can disagree by a step of 2/B): no direction either.
  CHECK(verdict(diff(-0.3, 0.0), true) == "not resolved");
  CHECK(verdict(diff(0.0, 0.3), true) == "not resolved");
  CHECK(verdict(diff(-0.1, 0.1), true) == "not resolved");
}

TEST_CASE("csv_number: %.9g, as an ostream at precision 9 writes it, and a float reads back exactly") {
  using llama::stats::csv_number;
  CHECK(csv_number(0.0) == "0");
  CHECK(csv_number(0.1) == "0.1");
  CHECK(csv_number(1.0 / 3.0) == "0.333333333");
  CHECK(csv_number(-2.5e-7) == "-2.5e-07");
  CHECK(csv_number(123456789012.0) == "1.23456789e+11");
  CHECK(csv_number(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(csv_number(-std::numeric_limits<double>::max()).size() < 32);  // the longest: sign, 9 digits, e+308
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-40, 38);
  for (int k = 0; k < 2000; ++k) {
    const double v = std::ldexp(mantissa(rng), static_cast<int>(exponent(rng) * 3.32));
    std::ostringstream os;
    os << std::setprecision(9) << v;
    CHECK(csv_number(v) == os.str());
    const auto f = static_cast<float>(v);
    CHECK(std::strtof(csv_number(f).c_str(), nullptr) == f);
  }
}
