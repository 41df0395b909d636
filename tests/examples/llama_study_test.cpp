// Tests for examples/02_llama_layer/study.hpp: the crossed, seeded study at
// a small size, its figures recomputed directly (token groups by Sun et
// al.'s test, the relative error per group, the mean over seeds), its
// intervals and verdicts consistent, its CSV and markdown complete, and its
// refusals.
#include "support/llama_configs.hpp"
#include "../../examples/02_llama_layer/default_layer.hpp"
#include "../../examples/02_llama_layer/study.hpp"

#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

namespace {

using llama::Matrix;
using llama::MethodSpec;
using llama::Rotation;
using llama::WeightQuant;
using llama::study::TokenGroup;

struct Setup {
  llama::Config config = oq::test::gqa_llama_config(/*heads=*/4, /*head_dim=*/32, /*intermediate=*/256);
  llama::LayerWeights<float> weights = llama::default_layer<float>(config);
  std::vector<Matrix<float>> windows;
  llama::LinearInputs<float> calibration;
  llama::study::StudyOptions options;

  Setup() {
    for (std::uint64_t w = 0; w < 6; ++w) windows.push_back(llama::default_input<float>(config, 12, 100 + w));
    calibration = llama::record_inputs(config, weights, llama::default_input<float>(config, 64, 7));
    options.quant.block_size = 32;
    options.quant.greedy_steps = 8;
    options.quant.lwc.steps = 5;  // LWC's AdamW (500 steps by default) would take most of the test's time
    options.quant.seed = 40;
    options.seeds = 2;
    options.bootstrap.resamples = 300;
  }
};

// Σ‖ŷ_t − y_t‖² and Σ‖y_t − x_t‖² (what the layer adds) over the windows' first tokens (massive: true) or the others.
std::pair<double, double> group_sums(const Setup& s, const llama::QuantizedLayer<float>& layer, bool massive) {
  double num = 0, den = 0;
  for (const auto& x : s.windows) {
    const Matrix<float> y = llama::forward(s.config, s.weights, x);
    const Matrix<float> y_hat = llama::forward(s.config, s.weights, x, layer);
    const Eigen::Index first = massive ? 0 : 1, count = massive ? 1 : x.rows() - 1;
    num += (y_hat.middleRows(first, count).cast<double>() - y.middleRows(first, count).cast<double>()).squaredNorm();
    den += (y.middleRows(first, count).cast<double>() - x.middleRows(first, count).cast<double>()).squaredNorm();
  }
  return {num, den};
}

}  // namespace

TEST_CASE("study: every point of the cross, figures equal to a direct computation, verdicts from the intervals") {
  const Setup s;
  // The default layer's massive activations sit on each window's first token.
  for (const auto& x : s.windows) {
    const Matrix<float> y = llama::forward(s.config, s.weights, x);
    const auto found = oq::analysis::find_massive_activations(y);
    REQUIRE_FALSE(found.empty());
    for (const auto& m : found) CHECK(m.token == 0);
  }
  const llama::study::StudyResult r = llama::study::run_study(s.config, s.weights, s.windows, s.calibration, s.options);
  REQUIRE(r.specs.size() == llama::all_method_specs().size());
  CHECK(r.tokens[0] == 6);
  CHECK(r.tokens[1] == 6 * 11);
  CHECK(r.tokens[2] == 6 * 12);
  CHECK(r.windows == 6);

  // RTN (not random): the error of each group as the relative error of the stacked tokens.
  const auto rtn = llama::quantize_layer(MethodSpec{}, s.weights, s.calibration, s.options.quant);
  for (bool massive : {true, false}) {
    const auto [num, den] = group_sums(s, rtn, massive);
    const auto& g = r.result(MethodSpec{}).group(massive ? TokenGroup::kMassive : TokenGroup::kOther);
    REQUIRE(g.error.has_value());
    CHECK(g.error->estimate == doctest::Approx(std::sqrt(num / den)).epsilon(1e-12));
    CHECK(g.seed_min == g.error->estimate);
    CHECK(g.seed_max == g.error->estimate);
    // The baseline against itself: exactly 0, every replicate.
    CHECK(g.difference->estimate == 0.0);
    CHECK(g.difference->lower == 0.0);
    CHECK(g.difference->upper == 0.0);
  }
  // A random rotation: the squared errors averaged over seeds 40 and 41, and each seed's own error.
  const MethodSpec duquant{true, Rotation::kDuQuant, WeightQuant::kRtn};
  double num = 0, den = 0;
  std::vector<double> per_seed;
  for (std::uint64_t seed : {40, 41}) {
    llama::QuantOptions o = s.options.quant;
    o.seed = seed;
    const auto [a, b] = group_sums(s, llama::quantize_layer(duquant, s.weights, s.calibration, o), false);
    num += a / 2;
    den = b;
    per_seed.push_back(std::sqrt(a / b));
  }
  const auto& dq = r.result(duquant);
  CHECK(dq.seeds == 2);
  CHECK(dq.group(TokenGroup::kOther).error->estimate == doctest::Approx(std::sqrt(num / den)).epsilon(1e-12));
  CHECK(dq.group(TokenGroup::kOther).seed_min == doctest::Approx(std::min(per_seed[0], per_seed[1])).epsilon(1e-12));
  CHECK(dq.group(TokenGroup::kOther).seed_max == doctest::Approx(std::max(per_seed[0], per_seed[1])).epsilon(1e-12));
  CHECK(per_seed[0] != per_seed[1]);  // the seeds do draw different rotations

  for (const auto& spec : r.specs) {
    INFO(spec.spec.name());
    CHECK(spec.seeds == (llama::is_random(spec.spec.rotation) ? 2 : 1));
    for (TokenGroup tg : llama::study::kAllTokenGroups) {
      const auto& g = spec.group(tg);
      REQUIRE(g.error.has_value());
      CHECK(g.windows == 6);
      CHECK(g.error->lower <= g.error->upper);
      CHECK(g.error->lower > 0.0);
      CHECK(g.seed_min <= g.seed_max);
      const std::string_view v = llama::study::verdict(g);
      CHECK(v == (g.resolved && g.difference->upper < 0   ? "better"
                  : g.resolved && g.difference->lower > 0 ? "worse"
                                                          : "not resolved"));
      if (g.resolved) CHECK(g.difference->p_zero <= 0.05);  // Holm rejects none above the family's level
      // The difference's estimate is that of the two errors.
      CHECK(g.difference->estimate ==
            doctest::Approx(g.error->estimate - r.result(MethodSpec{}).group(tg).error->estimate).epsilon(1e-12));
      if (spec.spec == *r.best[static_cast<std::size_t>(tg)]) CHECK(g.tied_with_best);
      CHECK(g.error->estimate >= r.result(*r.best[static_cast<std::size_t>(tg)]).group(tg).error->estimate);
    }
  }
  // Every window's first token is the same BOS embedding, which causal
  // attention leaves alone: its output, and RTN's error on it, is the same
  // in every window, so resampling windows cannot move it. DuQuant's error
  // there still varies with the rotation's seed, which the crossed draw covers.
  const auto& rtn_massive = r.result(MethodSpec{}).group(TokenGroup::kMassive);
  CHECK(rtn_massive.error->upper - rtn_massive.error->lower <= 1e-12 * rtn_massive.error->estimate);
  const auto& dq_massive = dq.group(TokenGroup::kMassive);
  CHECK(dq_massive.seed_max > dq_massive.seed_min);
  CHECK(dq_massive.error->upper - dq_massive.error->lower > 0.1 * (dq_massive.seed_max - dq_massive.seed_min));
  // On the massive tokens, smoothing before DuQuant resolves as better than RTN (the README's main finding).
  CHECK(llama::study::verdict(dq.group(TokenGroup::kMassive)) == "better");
  // Per group, `resolved` is Holm's procedure over the comparisons with the
  // baseline (every spec but RTN), recomputed here from the p-values.
  for (TokenGroup tg : llama::study::kAllTokenGroups) {
    std::vector<double> p;
    std::vector<bool> resolved;
    for (const auto& spec : r.specs) {
      if (spec.spec == MethodSpec{}) {
        CHECK_FALSE(spec.group(tg).resolved);  // the baseline against itself: p = 1
        CHECK(spec.group(tg).difference->p_zero == 1.0);
        continue;
      }
      p.push_back(spec.group(tg).difference->p_zero);
      resolved.push_back(spec.group(tg).resolved);
    }
    CHECK(llama::stats::holm(p, 0.05) == resolved);
  }

  std::ostringstream csv, md;
  llama::study::write_csv(csv, r);
  llama::study::write_markdown(md, r);
  std::istringstream lines(csv.str());
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    CHECK(std::count(line.begin(), line.end(), ',') == 20);
    ++rows;
  }
  CHECK(rows == 1 + static_cast<int>(r.specs.size()) * 3);
  for (const auto& spec : r.specs) CHECK(md.str().find("| " + spec.spec.name() + " |") != std::string::npos);
  CHECK(md.str().find("best ") != std::string::npos);
  CHECK(md.str().find("Holm") != std::string::npos);

  // The same run again: the same figures (the seconds aside).
  const llama::study::StudyResult again = llama::study::run_study(s.config, s.weights, s.windows, s.calibration, s.options);
  for (std::size_t i = 0; i < r.specs.size(); ++i) {
    for (std::size_t g = 0; g < 3; ++g) {
      CHECK(again.specs[i].groups[g].error->lower == r.specs[i].groups[g].error->lower);
      CHECK(again.specs[i].groups[g].difference->upper == r.specs[i].groups[g].difference->upper);
    }
  }
}

TEST_CASE("study: nothing rounded, every point exact; refused options") {
  Setup s;
  s.options.quant.act_bits = 0;
  s.options.quant.weight_bits = 0;
  s.options.seeds = 1;
  s.options.bootstrap.resamples = 50;
  const auto r = llama::study::run_study(s.config, s.weights, s.windows, s.calibration, s.options);
  for (const auto& spec : r.specs) {
    INFO(spec.spec.name());
    for (const auto& g : spec.groups) CHECK(g.error->upper < 1e-5);
  }
  // A baseline outside the specs is run as well.
  s.options.specs = {MethodSpec{false, Rotation::kBlockHadamard, WeightQuant::kRtn}};
  CHECK(llama::study::run_study(s.config, s.weights, s.windows, s.calibration, s.options).specs.size() == 2);

  auto refused = [&](llama::study::StudyOptions o, std::vector<Matrix<float>> windows, const char* what) {
    CHECK_THROWS_WITH_AS(llama::study::run_study(s.config, s.weights, windows, s.calibration, o),
                         doctest::Contains(what), std::invalid_argument);
  };
  refused(s.options, {s.windows[0]}, "at least 2");
  refused(s.options, {s.windows[0], s.windows[1].topRows(5)}, "every window");
  auto o = s.options;
  o.seeds = 0;
  refused(o, s.windows, "seeds");
  o = s.options;
  o.quant.gptq = true;
  refused(o, s.windows, "gptq");
  o = s.options;
  o.specs = {MethodSpec{}, MethodSpec{}};
  refused(o, s.windows, "twice");
}

TEST_CASE("select_specs (--methods) picks points by name in its order; SmoothQuant's search runs in the study") {
  const std::vector<MethodSpec> points = llama::study_method_specs();
  const std::vector<MethodSpec> picked = llama::select_specs({"smooth-search+GPTQ", "DuQuant-blockwise+LWC"}, points);
  REQUIRE(picked.size() == 2);
  CHECK(picked[0] == MethodSpec{true, Rotation::kNone, WeightQuant::kGptq, true});
  CHECK(picked[1] == MethodSpec{false, Rotation::kDuQuantBlockwise, WeightQuant::kLwc});
  CHECK(llama::select_specs({}, points).empty());
  CHECK_THROWS_WITH_AS(llama::select_specs({"RTN", "Hadamard+GPTQ", "RTN"}, points), doctest::Contains("'RTN' twice"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(llama::select_specs({"DuQuant+Hadamard"}, points), doctest::Contains("got 'DuQuant+Hadamard'"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(llama::select_specs({"nope"}, points), doctest::Contains("smooth-search+LWC"),
                       std::invalid_argument);
  CHECK(llama::spec_names({MethodSpec{}, MethodSpec{true, Rotation::kQuaRot, WeightQuant::kClipSearch}}) ==
        "RTN, smooth+QuaRot+clip");

  // The searched point through the study, beside the fixed-α one: its CSV rows say "search".
  Setup s;
  s.options.seeds = 1;
  s.options.bootstrap.resamples = 50;
  s.options.quant.alpha_search_tokens = 32;
  s.options.specs = {MethodSpec{true, Rotation::kNone, WeightQuant::kRtn},
                     MethodSpec{true, Rotation::kNone, WeightQuant::kRtn, true}};
  const auto r = llama::study::run_study(s.config, s.weights, s.windows, s.calibration, s.options);
  REQUIRE(r.specs.size() == 3);  // the baseline RTN first
  std::ostringstream csv;
  llama::study::write_csv(csv, r);
  CHECK(csv.str().find("smooth-search+RTN,search,none,RTN,") != std::string::npos);
  CHECK(csv.str().find("smooth+RTN,on,none,RTN,") != std::string::npos);
}
