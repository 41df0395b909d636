// examples/02_llama_layer/report.hpp: the tables the example prints and the
// per-channel CSV its plot script reads.
#pragma once

#include "default_layer.hpp"
#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"

#include <oq/analysis.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llama {

/// What one method measured.
struct MethodResult {
  Method method;
  double calibration_seconds = 0;
  double output_error = 0;       ///< ‖y − y_fp‖ / ‖y_fp‖ over the whole layer output
  double first_token_error = 0;  ///< the same for token 0 alone (where the massive activations are)
  double other_tokens_error = 0; ///< the same for tokens 1.. (ordinary tokens)
  std::array<InputStats, 4> inputs{};  ///< of the transformed inputs
  /// With oq::cpu's integer kernels (integer_path.hpp): the layer output's
  /// relative error, all tokens, and how each linear agreed with fake
  /// quantization on the same input.
  std::optional<double> integer_error;
  PathAgreement agreement{};
};

template <class Scalar>
MethodResult measure(Method method, double calibration_seconds, const Matrix<Scalar>& y,
                     const Matrix<Scalar>& y_reference, const LinearInputs<Scalar>& transformed) {
  MethodResult r{method, calibration_seconds, relative_error(y, y_reference), 0.0, 0.0, {}, std::nullopt, {}};
  r.first_token_error = relative_error(y.topRows(1), y_reference.topRows(1));
  if (y.rows() > 1) r.other_tokens_error = relative_error(y.bottomRows(y.rows() - 1), y_reference.bottomRows(y.rows() - 1));
  for (Input i : kAllInputs) r.inputs[static_cast<std::size_t>(i)] = input_stats(transformed[static_cast<std::size_t>(i)]);
  return r;
}

inline std::string format(const char* fmt, double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, fmt, v);
  return buffer;
}

template <class Collection>
std::string join_indices(const Collection& c) {
  std::string s;
  for (auto v : c) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

inline void print_default_layout(std::ostream& out, const DefaultLayerLayout& layout) {
  out << "default layer construction (README.md): input_layernorm large-gamma channels {"
      << join_indices(layout.input_norm_outliers) << "}, post_attention_layernorm {"
      << join_indices(layout.post_norm_outliers) << "}, super weight: intermediate channel " << layout.super_channel
      << " -> residual channels {" << layout.massive_channels[0] << ", " << layout.massive_channels[1] << "}\n";
}

/// Where the full-precision layer has its outliers, as oq::analysis finds them.
template <class Scalar>
void print_outlier_summary(std::ostream& out, const Matrix<Scalar>& x, const Matrix<Scalar>& y,
                           const LinearInputs<Scalar>& inputs) {
  using oq::analysis::median_abs;  // the lower median, as Sun et al.'s test takes it
  out << "full precision:\n";
  out << "  layer input : max|x| " << format("%.4g", double(x.cwiseAbs().maxCoeff())) << ", median |x| "
      << format("%.3g", median_abs(x)) << "\n";
  out << "  layer output: max|x| " << format("%.4g", double(y.cwiseAbs().maxCoeff())) << ", median |x| "
      << format("%.3g", median_abs(y)) << "; massive activations (|x| > 100 and >= 1000x median):";
  const auto massive = oq::analysis::find_massive_activations(y);
  if (massive.empty()) out << " none";
  for (std::size_t k = 0; k < std::min<std::size_t>(massive.size(), 6); ++k) {
    out << " (token " << massive[k].token << ", channel " << massive[k].channel << ": "
        << format("%.1f", massive[k].value) << ")";
  }
  if (massive.size() > 6) out << " ... " << massive.size() << " in all";
  out << "\n";
  for (Input i : kAllInputs) {
    const auto& in = inputs[static_cast<std::size_t>(i)];
    const auto outliers = oq::analysis::find_channel_outliers(in);
    const auto spikes = oq::analysis::find_massive_activations(in);
    out << "  " << std::string(input_name(i)) << std::string(16 - input_name(i).size(), ' ') << ": max|x| "
        << format("%9.4g", double(in.cwiseAbs().maxCoeff())) << ", channel outliers (>6x mean |x|) "
        << outliers.size();
    if (!outliers.empty() && outliers.size() <= 8) {
      std::vector<Eigen::Index> channels;
      for (const auto& o : outliers) channels.push_back(o.channel);
      out << " {" << join_indices(channels) << "}";
    }
    out << ", massive entries " << spikes.size();
    if (!spikes.empty()) out << " (first: token " << spikes[0].token << ", channel " << spikes[0].channel << ")";
    out << "\n";
  }
  out << "\n";
}

template <class Scalar>
void print_results(std::ostream& out, const std::vector<MethodResult>& results, const LinearInputs<Scalar>& fp,
                   bool gptq_weights = false) {
  out << "W4A4 (per-token asymmetric activations, clip 0.9; per-channel asymmetric weights, clip 0.8"
      << (gptq_weights ? ", by GPTQ with act-order" : "") << ")\n";
  out << "layer output relative error ||y - y_fp|| / ||y_fp||: all tokens, first token (massive), other tokens\n";
  out << "method              all tokens   first token  other tokens  calibration s\n";
  for (const auto& r : results) {
    std::string name(method_name(r.method));
    out << name << std::string(18 - name.size(), ' ') << format("%12.4g", r.output_error)
        << format("%14.4g", r.first_token_error) << format("%14.4g", r.other_tokens_error)
        << format("%15.2f", r.calibration_seconds) << "\n";
  }
  out << "\nwhat the activation quantizer sees (after each method's transform): max|x| / mean token kurtosis\n";
  out << "input             full precision    ";
  for (const auto& r : results) {
    std::string name(method_name(r.method));
    out << name << std::string(18 - std::min<std::size_t>(name.size(), 17), ' ');
  }
  out << "\n";
  for (Input i : kAllInputs) {
    std::string name(input_name(i));
    out << name << std::string(18 - name.size(), ' ');
    const InputStats f = input_stats(fp[static_cast<std::size_t>(i)]);
    auto cell = [&out](const InputStats& s) {
      const std::string c = format("%.4g", s.max_abs) + " / " + format("%.3g", s.mean_kurtosis);
      out << c << std::string(c.size() < 18 ? 18 - c.size() : 1, ' ');
    };
    cell(f);
    for (const auto& r : results) cell(r.inputs[static_cast<std::size_t>(i)]);
    out << "\n";
  }
}

/// Both paths side by side, and the bound their linear outputs keep.
inline void print_integer_results(std::ostream& out, const std::vector<MethodResult>& results) {
  out << "\nthe same W4A4 with real integer products (oq/cpu.hpp, " << oq::cpu::to_string(oq::cpu::best_isa())
      << "): every linear input quantized per token by cpu::quantize_per_token with the method's transform fused,\n"
      << "weights packed INT4 from the fake path's codes, cpu::gemm (int32 accumulation, zero-point epilogue)\n";
  out << "layer output relative error of both paths, and the two paths' linear outputs on the same input\n"
      << "(every output of the 7 linears; differing codes: activation codes of the fused transform against\n"
      << "oq::quant on the Eigen-transformed input, and token rows whose s_a or z_a differ)\n";
  out << "method             fake quant     integer  max|y_int-y_fake|    max|y|    max |r|/bound  epilogue/bound"
         "  differing codes (rows)\n";
  for (const auto& r : results) {
    if (!r.integer_error) continue;
    const PathAgreement& a = r.agreement;
    std::string name(method_name(r.method));
    out << name << std::string(18 - name.size(), ' ') << format("%11.4g", r.output_error)
        << format("%12.4g", *r.integer_error) << format("%19.3g", a.max_difference) << format("%10.4g", a.max_output)
        << format("%17.3g", a.max_bound_ratio) << format("%16.3g", a.max_epilogue_ratio) << "  "
        << a.differing_codes << " of " << a.codes << " (" << a.differing_rows << " of " << a.rows << ")\n";
  }
  out << "bound, per output of a linear with K inputs (u = 2^-24, g_n = n*u/(1 - n*u)):\n"
      << "  y_int - y_fake = (E_int - E_fake) + r,  |r| <= g_3*|E_int| + g_(K+2)*A\n"
      << "  E = s_a*s_w*sum_k (qa_k - z_a)(qw_k - z_w), the exact product of a path's dequantized operands;\n"
      << "  A = s_a*s_w*sum_k |qa_k - z_a|*|qw_k - z_w|. The integer path rounds three times (float(T), s_a*s_w,\n"
      << "  their product: epilogue/bound is |y_int - E_int| / (g_3*|E_int|)); fake quantization rounds x^ and w^\n"
      << "  once each and sums K products in float. E_int = E_fake where the codes agree; DuQuant's fused rotation\n"
      << "  (an FMA chain) and Eigen's GEMM in DuQuantTransform::apply may round a transformed entry differently,\n"
      << "  which moves a code next to a rounding boundary by one: those are counted, and E_int - E_fake is exact.\n"
      << "  The bound is a worst case (K roundings adding up); the observed residual is far below it.\n"
      << "  The layer errors differ more than one linear's outputs: each path's rounding reaches the next\n"
      << "  linear's input, where a code near a boundary can then round the other way.\n";
}

/// channel_magnitudes.csv: stage,input,channel,absmax,absmean — for each stage
/// ("full precision" and each method's transformed input) and each linear input.
class ChannelCsv {
 public:
  explicit ChannelCsv(std::filesystem::path path) : path_(std::move(path)) {
    if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
    out_.open(path_);
    if (!out_) throw std::runtime_error("cannot write " + path_.string());
    out_ << "stage,input,channel,absmax,absmean\n";
  }
  const std::filesystem::path& path() const { return path_; }

  template <class Scalar>
  void add(std::string_view stage, const LinearInputs<Scalar>& inputs) {
    for (Input i : kAllInputs) {
      const auto& x = inputs[static_cast<std::size_t>(i)];
      const auto absmax = x.cwiseAbs().colwise().maxCoeff();
      const auto absmean = x.cwiseAbs().template cast<double>().colwise().mean();
      for (Eigen::Index j = 0; j < x.cols(); ++j) {
        out_ << stage << ',' << input_name(i) << ',' << j << ',' << absmax[j] << ',' << absmean[j] << '\n';
      }
    }
    if (!out_) throw std::runtime_error("error writing " + path_.string());
  }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace llama
