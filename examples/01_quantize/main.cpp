// Example 01: why outliers wreck low-bit activation quantization.
//
// Builds an activation matrix X (tokens × channels) like an LLM's: Gaussian
// entries, a few channel-wise outliers (whole channels ~30× larger, Nrusimha et
// al. 2024) and one massive activation (a single entry of 2,000, Sun et al.
// 2024). Quantizes it with each granularity at 8 and 4 bits and prints the
// error, both overall and on the ordinary channels only: a shared scale has to
// stretch over the outliers, and the ordinary channels pay.
//
//   ./01_quantize [tokens] [channels]        (defaults 512 1024; --help)
#include "../common/cli.hpp"

#include <oq/quant.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using Matrix = Eigen::MatrixXf;
using oq::quant::QuantSpec;

struct Planted {
  Matrix x;
  std::vector<Eigen::Index> outlier_channels;
};

Planted make_activations(Eigen::Index tokens, Eigen::Index channels) {
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Planted p{Matrix(tokens, channels), {}};
  for (Eigen::Index i = 0; i < p.x.size(); ++i) p.x.data()[i] = normal(rng);
  for (Eigen::Index c = 7; c < channels; c += channels / 8) {  // 8 outlier channels
    p.x.col(c) *= 30.0f;
    p.outlier_channels.push_back(c);
  }
  p.x(0, p.outlier_channels.front()) = 2000.0f;  // a massive activation on the first token
  return p;
}

struct Errors {
  double relative;         // ‖X − X̂‖_F / ‖X‖_F
  double relative_normal;  // the same over the ordinary channels only
  double max_abs;
};

Errors measure(const Matrix& x, const Matrix& x_hat, const std::vector<Eigen::Index>& outliers) {
  Matrix diff = x_hat - x;
  Errors e{diff.norm() / x.norm(), 0.0, diff.cwiseAbs().maxCoeff()};
  Matrix normal_x = x;
  for (Eigen::Index c : outliers) {
    diff.col(c).setZero();
    normal_x.col(c).setZero();
  }
  e.relative_normal = diff.norm() / normal_x.norm();
  return e;
}

void print_row(const std::string& method, int bits, const Errors& e) {
  std::printf("  %-34s %4d   %10.4f   %14.4f   %9.3f\n", method.c_str(), bits, e.relative, e.relative_normal,
              e.max_abs);
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::Index tokens = 512;
  Eigen::Index channels = 1024;
  CLI::App app{"Why outliers wreck low-bit activation quantization: an LLM-like activation matrix quantized with "
               "each granularity at 8 and 4 bits (see examples/01_quantize/README.md).",
               "01_quantize"};
  app.add_option("tokens", tokens, "rows of X")->capture_default_str()->check(examples::cli::integer<Eigen::Index>(1));
  app.add_option("channels", channels, "columns of X (8 of them outliers)")
      ->capture_default_str()
      ->check(examples::cli::positive_multiple_of<Eigen::Index>(128));
  if (const std::optional<int> status = examples::cli::parse(app, argc, argv)) return *status;
  const Planted planted = make_activations(tokens, channels);
  const Matrix& x = planted.x;
  std::printf("X: %ld tokens x %ld channels, %zu outlier channels (x30), one massive activation (2000)\n",
              static_cast<long>(tokens), static_cast<long>(channels), planted.outlier_channels.size());
  std::printf("Asymmetric uniform quantization, round half to even, no clipping unless stated.\n\n");
  std::printf("  %-34s %4s   %10s   %14s   %9s\n", "granularity", "bits", "rel. error", "rel. err normal",
              "max |err|");

  for (int bits : {8, 4}) {
    const auto run = [&](const std::string& name, const QuantSpec& spec) {
      print_row(name, bits, measure(x, oq::quant::fake_quantize(x, spec), planted.outlier_channels));
    };
    run("per-tensor", QuantSpec::per_tensor(bits, false));
    run("per-token (one scale per row)", QuantSpec::per_token(bits, false));
    run("per-group of 128 along a row", QuantSpec::per_group(bits, false, 128));
    // Per input channel = per row of Xᵀ; the transpose is an expression, no copy.
    const QuantSpec per_column = QuantSpec::per_token(bits, false);
    const Matrix x_hat_columns = oq::quant::fake_quantize(x.transpose(), per_column).transpose();
    print_row("per-channel (one scale per column)", bits, measure(x, x_hat_columns, planted.outlier_channels));
    const QuantSpec clipped = QuantSpec::per_token(bits, false);
    const auto searched = oq::quant::search_clip_mse(x, clipped);
    print_row("per-token + MSE clip search", bits,
              measure(x, oq::quant::fake_quantize(x, searched.params, clipped), planted.outlier_channels));
    std::printf("\n");
  }
  std::printf(
      "Per-channel scales absorb channel outliers but cannot be used for activations in an integer GEMM\n"
      "(the scale must factor out of the sum over channels); per-token can, and at 4 bits its error on\n"
      "the ordinary channels is what smoothing, Hadamard rotations and DuQuant exist to cut.\n");
  return 0;
}
