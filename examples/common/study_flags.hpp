// examples/common/study_flags.hpp: the command-line flags of the crossed,
// seeded studies (--study) that examples 02 and 03 share: --seeds,
// --baseline, --resamples and --lwc-steps, and the baseline method they name
// (each example's study.hpp runs the study).
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

  /// The spec among `specs` that --baseline names; std::invalid_argument
  /// listing the names it could take where none has it.
  llama::MethodSpec baseline_spec(const std::vector<llama::MethodSpec>& specs) const {
    for (const auto& spec : specs) {
      if (spec.name() == baseline) return spec;
    }
    std::string names;
    for (const auto& spec : specs) names += (names.empty() ? "" : ", ") + spec.name();
    throw std::invalid_argument("--baseline must be one of " + names + ", got '" + baseline + "'");
  }
};

/// Adds --seeds, --baseline, --resamples and --lwc-steps, in that order, with
/// their defaults shown. `seeds_help` describes --seeds: what a seed draws
/// is the example's own (02: random rotations; 03: trained models).
inline void add_study_flags(CLI::App& app, StudyFlags& f, const std::string& seeds_help) {
  app.add_option("--seeds", f.seeds, seeds_help)->capture_default_str()->check(integer(1));
  app.add_option("--baseline", f.baseline, "--study: the method the paired differences are taken against")
      ->capture_default_str();
  app.add_option("--resamples", f.resamples, "--study: bootstrap resamples")->capture_default_str()->check(integer(1));
  app.add_option("--lwc-steps", f.lwc_steps, "--study: AdamW steps of LWC's clip factors per linear")
      ->capture_default_str()
      ->check(integer(0));
}

}  // namespace examples::cli
