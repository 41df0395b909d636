// examples/common/study_flags.hpp: the command-line flags of the crossed,
// seeded studies (--study) that examples 02 and 03 share: --seeds,
// --baseline, --methods, --resamples and --lwc-steps, and the methods they
// name (each example's study.hpp runs the study).
#pragma once

#include "cli.hpp"
#include "../../tools/llama/methods.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace examples::cli {

struct StudyFlags {
  int seeds = 5;                                    ///< draws of the study's random part, >= 1
  std::string baseline = "RTN";                     ///< the method the paired differences are taken against
  int resamples = 2000;                             ///< bootstrap resamples, >= 1
  int lwc_steps = llama::QuantOptions{}.lwc.steps;  ///< LWC's AdamW steps per linear, >= 0
  /// --methods: the points to run, by name (MethodSpec::name); empty: every
  /// one of llama::study_method_specs().
  std::vector<std::string> methods;

  /// The points --methods names, in its order, out of `points`; all of
  /// `points` where it names none. std::invalid_argument naming the unknown
  /// or repeated name and listing the names it could take.
  std::vector<llama::MethodSpec> selected_specs(const std::vector<llama::MethodSpec>& points) const {
    if (methods.empty()) return points;
    try {
      return llama::select_specs(methods, points);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--methods: ") + e.what());
    }
  }

  /// The spec among `specs` that --baseline names; std::invalid_argument
  /// listing the names it could take where none has it.
  llama::MethodSpec baseline_spec(const std::vector<llama::MethodSpec>& specs) const {
    for (const auto& spec : specs) {
      if (spec.name() == baseline) return spec;
    }
    throw std::invalid_argument("--baseline must be one of " + llama::spec_names(specs) + ", got '" + baseline + "'");
  }
};

/// Adds --seeds, --baseline, --methods, --resamples and --lwc-steps, in that order, with
/// their defaults shown. `seeds_help` describes --seeds: what a seed draws
/// is the example's own (02: random rotations; 03: trained models).
inline void add_study_flags(CLI::App& app, StudyFlags& f, const std::string& seeds_help) {
  app.add_option("--seeds", f.seeds, seeds_help)->capture_default_str()->check(integer(1));
  app.add_option("--baseline", f.baseline, "--study: the method the paired differences are taken against")
      ->capture_default_str();
  app.add_option("--methods", f.methods,
                 "--study: comma-separated names of the points to run (e.g. RTN,smooth-search+RTN,DuQuant+GPTQ; the "
                 "baseline is added where missing); default: every point of the cross and SmoothQuant's alpha search "
                 "with each weight quantizer")
      ->type_name("LIST")
      ->delimiter(',');
  app.add_option("--resamples", f.resamples, "--study: bootstrap resamples")->capture_default_str()->check(integer(1));
  app.add_option("--lwc-steps", f.lwc_steps, "--study: AdamW steps of LWC's clip factors per linear")
      ->capture_default_str()
      ->check(integer(0));
}

}  // namespace examples::cli
