// Example 05: GPTQ weights in the checkpoint layout inference engines load.
//
// One linear layer, W (out × in) with heavy-tailed entries, and calibration
// inputs whose channels are correlated and of unequal energy (what GPTQ's
// error feedback exploits). The steps an engine's quantization pipeline runs:
//   1. the Hessian H = 2·XᵀX/n, accumulated batch by batch (GptqHessian);
//   2. one factor of H with act-order (GptqFactor), shared by two GPTQ runs
//      (with_options): static groups (contiguous inputs; an ordinary
//      per-group kernel runs them as they are) and groups formed in the act
//      order (desc_act: each group gathers inputs of like energy, but needs
//      a per-input group index, g_idx);
//   3. each written as a GPTQ checkpoint (qweight / qzeros / scales / g_idx in
//      a safetensors file, plus quantize_config.json), the layout AutoGPTQ,
//      transformers, vLLM and exllama read;
//   4. read back as an engine would: unpacked, and the desc_act one sorted by
//      group with its inputs gathered (sort_inputs_by_group), so that a
//      contiguous per-group W4A16 kernel runs it too;
//   5. laid out as oq's W4A16 kernels take it (w4a16_weights).
// It prints the layer's output error against full precision, on calibration
// inputs and on held-out ones, for round-to-nearest and both GPTQ runs, and
// checks that what was read back computes the same layer as oq's own result
// (up to the scales' rounding to binary16, which the format stores).
// GPTQ fits its calibration inputs: with few tokens per input channel it
// overfits them and loses to round-to-nearest on held-out inputs (try
// --tokens 2048); the reference calibrates on 128 × 2048 tokens for 4096
// channels.
//
//   ./05_gptq_checkpoint [--in 1024] [--out 1024] [--tokens 8192] [--group 128] [--dir gptq_checkpoint]
//   ./05_gptq_checkpoint --help
#include "../common/cli.hpp"

#include <oq/io.hpp>
#include <oq/quant.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using Matrix = Eigen::MatrixXf;
using oq::io::GptqCheckpointFormat;
using oq::quant::QuantSpec;

struct Options {
  Eigen::Index in = 1024, out = 1024, tokens = 8192, group = 128;
  std::filesystem::path dir = "gptq_checkpoint";
};

// The command line (CLI11: --help lists these with their defaults).
void add_flags(CLI::App& app, Options& o) {
  using examples::cli::positive_multiple_of;
  app.add_option("--in", o.in, "input channels (a multiple of 8: the packed layout's 32-bit words)")
      ->capture_default_str()
      ->check(positive_multiple_of<Eigen::Index>(8));
  app.add_option("--out", o.out, "output channels (a multiple of 8)")
      ->capture_default_str()
      ->check(positive_multiple_of<Eigen::Index>(8));
  app.add_option("--tokens", o.tokens, "calibration tokens")
      ->capture_default_str()
      ->check(examples::cli::integer<Eigen::Index>(1));
  app.add_option("--group", o.group, "inputs per quantization group (divides --in)")
      ->capture_default_str()
      ->check(examples::cli::integer<Eigen::Index>(1));
  app.add_option("--dir", o.dir, "where the two checkpoints are written (created)")
      ->type_name("DIR")
      ->capture_default_str();
}

void check_group(const Options& o) {
  if (o.in % o.group != 0) {
    throw CLI::ValidationError("--group", "must divide --in (" + std::to_string(o.in) + "), got " +
                                              std::to_string(o.group));
  }
}

// Tokens × channels: Gaussian, mixed across channels, then per-channel gains
// spread over 0.2 .. 3 (the unequal energy act-order sorts by).
Matrix calibration_like(Eigen::Index tokens, Eigen::Index channels, const Matrix& mixing, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Matrix g(tokens, channels);
  for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = normal(rng);
  Eigen::VectorXf gain(channels);
  for (Eigen::Index c = 0; c < channels; ++c) gain(c) = 0.2f + 2.8f * float((c * 37) % 101) / 100.0f;
  return g * mixing * gain.asDiagonal();
}

double relative_error(const Matrix& y, const Matrix& reference) { return (y - reference).norm() / reference.norm(); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  CLI::App app{"GPTQ weights of one linear layer written as GPTQ checkpoints (static groups and desc_act) and read "
               "back as an engine does, with the layer error of RTN and GPTQ (see "
               "examples/05_gptq_checkpoint/README.md).",
               "05_gptq_checkpoint"};
  add_flags(app, o);
  if (const std::optional<int> status = examples::cli::parse(app, argc, argv, [&o] { check_group(o); })) {
    return *status;
  }
  std::mt19937_64 rng(5);
  std::student_t_distribution<float> heavy(3.0f);
  std::normal_distribution<float> normal;
  Matrix w(o.out, o.in), mixing = Matrix::Identity(o.in, o.in);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.02f * heavy(rng);
  for (Eigen::Index i = 0; i < mixing.size(); ++i) mixing.data()[i] += 0.5f * normal(rng) / std::sqrt(float(o.in));

  // 1. The Hessian, from calibration batches of 256 tokens.
  const Matrix calibration = calibration_like(o.tokens, o.in, mixing, 6);
  const auto t0 = std::chrono::steady_clock::now();
  oq::quant::GptqHessian hessian(o.in);
  for (Eigen::Index start = 0; start < o.tokens; start += 256)
    hessian.add(calibration.middleRows(start, std::min<Eigen::Index>(256, o.tokens - start)));
  // 2. One factor (act-order), two GPTQ runs: 4-bit, symmetric, groups of 128,
  //    the common "4-bit 128g" configuration, on the grid of GPTQ's reference
  //    quantizer (scale 2·max|w|/15, zero 8: what AutoGPTQ writes).
  const QuantSpec spec = QuantSpec::gptq_reference(4, /*symmetric=*/true, o.group);
  const oq::quant::GptqFactor static_factor(hessian.matrix(), {.act_order = true});
  const oq::quant::GptqFactor desc_act_factor = static_factor.with_options({.act_order = true, .static_groups = false});
  const auto gptq_static = oq::quant::gptq_quantize(w, static_factor, spec);
  const auto gptq_desc_act = oq::quant::gptq_quantize(w, desc_act_factor, spec);
  const double gptq_seconds = seconds_since(t0);

  // 3. Both as GPTQ checkpoints ("gptq": AutoGPTQ's and transformers' format).
  std::filesystem::create_directories(o.dir);
  const auto write = [&](const char* name, const auto& result, bool desc_act) {
    const auto packed = oq::io::pack_gptq_linear(oq::io::gptq_linear_codes(result, spec), GptqCheckpointFormat::kGptq);
    oq::io::SafetensorsWriter writer;
    oq::io::add_gptq_linear(writer, "linear", packed);
    const std::filesystem::path file = o.dir / (std::string(name) + ".safetensors");
    writer.write(file);
    std::ofstream(o.dir / (std::string(name) + ".quantize_config.json"))
        << oq::io::gptq_quantization_config(o.group, desc_act, true, GptqCheckpointFormat::kGptq).dump(1) << "\n";
    return file;
  };
  const auto static_file = write("static_groups", gptq_static, false);
  const auto desc_act_file = write("desc_act", gptq_desc_act, true);

  // 4. Read back as an engine does.
  const auto read = [&](const std::filesystem::path& file) {
    const oq::io::SafetensorsFile f(file);
    return oq::io::unpack_gptq_linear(oq::io::read_gptq_linear(f, "linear"), GptqCheckpointFormat::kGptq);
  };
  const oq::io::GptqLinearCodes static_read = read(static_file);
  const oq::io::GptqInputsByGroup desc_act_sorted = oq::io::sort_inputs_by_group(read(desc_act_file));

  // Full precision, RTN, and the two checkpoints as a kernel computes them,
  // on (up to 2048 of) the calibration tokens and on held-out tokens from the
  // same distribution.
  const Matrix w_rtn = oq::quant::fake_quantize(w, spec);
  const Matrix w_static = oq::io::dequantize_gptq_linear(static_read);
  const Matrix w_desc_act_sorted = oq::io::dequantize_gptq_linear(desc_act_sorted.linear);
  const std::vector<Eigen::Index>& order = desc_act_sorted.input_order;
  struct Errors {
    double rtn, gptq_static, gptq_desc_act;
  };
  const auto errors_on = [&](const Matrix& x) {
    const Matrix y = x * w.transpose();
    return Errors{relative_error(x * w_rtn.transpose(), y), relative_error(x * w_static.transpose(), y),
                  relative_error(x(Eigen::all, order) * w_desc_act_sorted.transpose(), y)};
  };
  const Errors fit = errors_on(calibration.topRows(std::min<Eigen::Index>(2048, o.tokens)));
  const Matrix x = calibration_like(512, o.in, mixing, 7);
  const Errors held_out = errors_on(x);

  std::printf("W: %ld x %ld (Student-t), calibration: %ld tokens, held-out: %ld tokens; W4 symmetric, groups of %ld\n",
              long(o.out), long(o.in), long(o.tokens), long(x.rows()), long(o.group));
  std::printf("GPTQ (Hessian, one factor, two runs): %.2f s\n\n", gptq_seconds);
  std::printf("  %-48s %s\n", "", "layer output rel. error vs FP");
  std::printf("  %-48s %11s  %8s\n", "weights", "calibration", "held-out");
  std::printf("  %-48s %11.4f  %8.4f\n", "round to nearest", fit.rtn, held_out.rtn);
  std::printf("  %-48s %11.4f  %8.4f\n", "GPTQ, act-order, static groups (checkpoint)", fit.gptq_static,
              held_out.gptq_static);
  std::printf("  %-48s %11.4f  %8.4f\n", "GPTQ, act-order, groups in act order (desc_act)", fit.gptq_desc_act,
              held_out.gptq_desc_act);
  const Matrix y_desc_act = x(Eigen::all, order) * w_desc_act_sorted.transpose();

  // What was read back is oq's result: Ŵ up to binary16 scales, at most half
  // an ulp of binary16 (2⁻¹¹) relative per weight.
  const double scale_rounding = ((w_static - gptq_static.weight).cwiseAbs().array() /
                                 gptq_static.weight.cwiseAbs().array().max(1e-30f))
                                    .maxCoeff();
  const double same_layer = relative_error(y_desc_act, x * gptq_desc_act.weight.transpose());
  // Its bound: each output moves by at most 2⁻¹¹·Σ_k |x_k|·|ŵ_k| from the
  // scales, plus K·2⁻²⁴ of the same sum for each of the two float products'
  // rounding; relative to ‖x·Ŵᵀ‖ (1 % slack for the bound's own rounding).
  const double abs_sum = (x.cwiseAbs() * gptq_desc_act.weight.cwiseAbs().transpose()).norm();
  const double layer_bound = 1.01 * (std::ldexp(1.0, -11) + 2.0 * double(o.in) * std::ldexp(1.0, -24)) * abs_sum /
                             double((x * gptq_desc_act.weight.transpose()).norm());
  std::printf("\nRead back: Ŵ within %.2e relative of oq's (binary16 scales; bound 2^-11 = %.2e); the desc_act\n"
              "checkpoint, sorted by group and fed gathered inputs, computes oq's layer to %.1e relative\n"
              "(bound %.1e).\n",
              scale_rounding, std::ldexp(1.0, -11), same_layer, layer_bound);
  // 5. The sorted linear laid out for oq's W4A16 kernels (GemmW4A16Params:
  //    w, ld_w = K/2, scales, zeros, group_size; symmetric = false, since
  //    GPTQ's codes are u4 with their zero points).
  const oq::io::GptqW4A16Weights operands = oq::io::w4a16_weights(desc_act_sorted.linear);
  std::printf("W4A16 kernel operands: w %ld x %ld bytes, scales and zeros %ld x %ld floats, groups of %ld.\n",
              long(operands.w.rows()), long(operands.w.cols()), long(operands.scales.rows()),
              long(operands.scales.cols()), long(operands.group_size));
  std::printf("Wrote %s and %s (+ quantize_config.json each).\n", static_file.string().c_str(),
              desc_act_file.string().c_str());
  if (scale_rounding > std::ldexp(1.0, -11) || same_layer > layer_bound) {
    std::fprintf(stderr, "05_gptq_checkpoint: the checkpoint read back does not compute oq's layer\n");
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "05_gptq_checkpoint: %s\n", e.what());
  return 2;
}
