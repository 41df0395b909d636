// oq/analysis/report.hpp: one layer's outlier report, as a table and as CSV.
//
//   auto report = oq::analysis::LayerReport::compare("layers.2.mlp.down_proj", x, x_rotated);
//   report.print(std::cout);                    // readable summary
//   std::ofstream csv("down_proj.csv");
//   report.write_csv(csv);                      // per-channel columns for plots
//
// `before` is the layer input as the model produces it, `after` the same input
// after a transform (smoothing, rotation, DuQuant); a report of one matrix
// only (LayerReport::of) leaves `after` empty and the CSV's after-columns out.
#pragma once

#include <oq/analysis/moments.hpp>
#include <oq/analysis/outliers.hpp>
#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <cstdio>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oq::analysis {

struct LayerReport {
  std::string name;
  ChannelMoments before;
  std::optional<ChannelMoments> after;
  std::vector<MassiveActivation> massive_before;
  std::vector<MassiveActivation> massive_after;
  double channel_outlier_ratio = 6.0;

  /// Report of one activation matrix (tokens × channels).
  template <class Derived>
  static LayerReport of(std::string name, const Eigen::MatrixBase<Derived>& x,
                        const MassiveActivationOptions& options = {}) {
    LayerReport report;
    report.name = std::move(name);
    report.before = ChannelMoments(x.cols());
    report.before.update(x);
    report.massive_before = find_massive_activations(x, options);
    return report;
  }

  /// Report of a layer input before and after a transform (same shape).
  template <class BeforeDerived, class AfterDerived>
  static LayerReport compare(std::string name, const Eigen::MatrixBase<BeforeDerived>& before,
                             const Eigen::MatrixBase<AfterDerived>& after, const MassiveActivationOptions& options = {}) {
    detail::require(before.rows() == after.rows() && before.cols() == after.cols(),
                    "oq::analysis::LayerReport::compare", "after must be ", before.rows(), " x ", before.cols(),
                    " like before, got ", after.rows(), " x ", after.cols());
    LayerReport report = of(std::move(name), before, options);
    report.after = ChannelMoments(after.cols());
    report.after->update(after);
    report.massive_after = find_massive_activations(after, options);
    return report;
  }

  /// A short table: max |x|, the largest channel kurtosis, channel outliers and
  /// massive activations, before and (if present) after. Throws
  /// std::invalid_argument for a report without tokens or channels (a
  /// default-constructed one) or whose `after` has another channel count.
  void print(std::ostream& out) const {
    check("oq::analysis::LayerReport::print");
    char line[160];
    out << "layer " << name << ": " << before.count() << " tokens x " << before.channels() << " channels\n";
    std::snprintf(line, sizeof line, "  %-8s %12s %14s %16s %10s\n", "", "max |x|", "max kurtosis",
                  "channel outliers", "massive");
    out << line;
    const auto row = [&](const char* label, const ChannelMoments& m, std::size_t massive) {
      std::snprintf(line, sizeof line, "  %-8s %12.4g %14.4g %16zu %10zu\n", label, m.absmax().maxCoeff(),
                    m.kurtosis().maxCoeff(), find_channel_outliers(m, channel_outlier_ratio).size(), massive);
      out << line;
    };
    row("before", before, massive_before.size());
    if (after) row("after", *after, massive_after.size());
    const auto outliers = find_channel_outliers(before, channel_outlier_ratio);
    if (!outliers.empty()) {
      out << "  outlier channels before (mean|x| / overall):";
      for (std::size_t i = 0; i < outliers.size() && i < 8; ++i) {
        std::snprintf(line, sizeof line, " %ld (%.1fx)", static_cast<long>(outliers[i].channel),
                      outliers[i].ratio_to_mean);
        out << line;
      }
      out << (outliers.size() > 8 ? " ...\n" : "\n");
    }
  }

  /// One row per channel: channel, absmax, mean_abs, kurtosis before, and the
  /// same after when present. Plain CSV with a header line. Throws as print().
  void write_csv(std::ostream& out) const {
    check("oq::analysis::LayerReport::write_csv");
    out << "channel,absmax_before,mean_abs_before,kurtosis_before";
    if (after) out << ",absmax_after,mean_abs_after,kurtosis_after";
    out << "\n";
    const Eigen::VectorXd mean_abs = before.mean_abs(), kurt = before.kurtosis();
    Eigen::VectorXd mean_abs_after, kurt_after;
    if (after) {
      mean_abs_after = after->mean_abs();
      kurt_after = after->kurtosis();
    }
    char line[256];
    for (Eigen::Index j = 0; j < before.channels(); ++j) {
      std::snprintf(line, sizeof line, "%ld,%.9g,%.9g,%.9g", static_cast<long>(j), before.absmax()[j], mean_abs[j],
                    kurt[j]);
      out << line;
      if (after) {
        std::snprintf(line, sizeof line, ",%.9g,%.9g,%.9g", after->absmax()[j], mean_abs_after[j], kurt_after[j]);
        out << line;
      }
      out << "\n";
    }
  }

 private:
  // Both outputs read max |x| and kurtosis per channel, and index `after` by
  // before's channels: an empty report has no such values.
  void check(std::string_view where) const {
    detail::require(before.channels() > 0 && before.count() > 0, where,
                    "before must hold at least one token of at least one channel, got ", before.count(),
                    " tokens x ", before.channels(), " channels");
    if (after) {
      detail::require(after->channels() == before.channels() && after->count() > 0, where, "after must have ",
                      before.channels(), " channels and at least one token, like before, got ", after->count(),
                      " tokens x ", after->channels(), " channels");
    }
  }
};

}  // namespace oq::analysis
