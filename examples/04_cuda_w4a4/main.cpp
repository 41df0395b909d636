// Example 04: a W4A4 linear layer on the GPU, the way an engine runs it, and
// why the online rotation matters.
//
// Y = X·Wᵀ with LLM-like activations X (tokens × in: Gaussian, 8 channel-wise
// outliers 30× larger, one massive activation of 2,000 — as example 01) and
// Gaussian weights W (out × in). Three ways, each quantized W4A4 (activations
// per token, asymmetric; weights per output channel, symmetric; INT4):
//   plain     X and W as they are;
//   hadamard  X·H and W·H with H = diag(H_128, …)/√128: Y is unchanged
//             (H·Hᵀ = I), the outliers are spread over their blocks. W·H is
//             folded offline; X·H is fused into the quantize kernel
//             (QuantizePerToken's hadamard_block), as QuaRot applies it online;
//   duquant   X·R and W·R with R = diag(R_b, …), R_b DuQuant's greedy rotation
//             (Algorithm 1, docs/design.md §6) calibrated on X: W·R folded offline,
//             X·R fused into the quantize kernel on tensor cores
//             (QuantizePerTokenTensorOp). The rotation stage alone — the
//             permutation and second rotation of DuQuant's M = R₁·P·R₂ mix
//             blocks and do not fuse into a per-block kernel — and on these
//             activations it spreads the outliers less well than the
//             Hadamard (0.25 against 0.21 at the default sizes): the full M
//             and the smoothing are what example 02 compares.
// On the host (oq::quant, float64 products) this shows the quantization error
// of each; with a GPU, the device path (gpu.cu: the quantize kernel + the
// W4A4 GEMM) must reproduce the host simulation of the same W4A4 product.
//
//   ./04_cuda_w4a4 [tokens] [in] [out]        (defaults 512 4096 4096; --help)
//
// This file is host code (g++ compiles it; nvcc compiles only gpu.cu), so its
// command line is parsed by CLI11 like the other examples'.
#include "../common/cli.hpp"
#include "gpu.hpp"

#include <oq/core/float16.hpp>
#include <oq/duquant.hpp>
#include <oq/hadamard.hpp>
#include <oq/quant.hpp>
#include <oq/transform/random_orthogonal.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using oq::quant::QuantSpec;
constexpr int kBlock = 128;

RowMatrix activations(Eigen::Index tokens, Eigen::Index channels) {
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RowMatrix x(tokens, channels);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (Eigen::Index c = 7; c < channels; c += channels / 8) x.col(c) *= 30.0f;  // channel-wise outliers
  x(0, 7) = 2000.0f;                                                         // a massive activation
  // The GPU reads bf16, as engines hold activations: quantize what it sees.
  for (Eigen::Index i = 0; i < x.size(); ++i)
    x.data()[i] = oq::core::bf16_bits_to_float(oq::core::float_to_bf16_bits(x.data()[i]));
  return x;
}

RowMatrix weights(Eigen::Index out, Eigen::Index in) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(in)));
  RowMatrix w(out, in);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(rng);
  return w;
}

double relative_error(const Eigen::MatrixXd& got, const Eigen::MatrixXd& reference) {
  return (got - reference).norm() / reference.norm();
}

// DuQuant's greedy block rotation (one stage, 256 steps) calibrated on x.
RowMatrix duquant_rotation(const RowMatrix& x) {
  std::mt19937_64 rng(11);
  const auto q_prime = oq::transform::random_orthogonal<float>(kBlock - 1, rng);
  const auto base = oq::transform::duquant_base_block(q_prime);
  return oq::transform::greedy_block_rotation(x, base).rotation;
}

// m·diag(r, …, r): every kBlock-wide block of the rows times r.
void rotate_blocks(RowMatrix& m, const RowMatrix& r) {
  for (Eigen::Index b = 0; b < m.cols() / kBlock; ++b) {
    const RowMatrix block = m.middleCols(b * kBlock, kBlock) * r;
    m.middleCols(b * kBlock, kBlock) = block;
  }
}

enum class Way { kPlain, kHadamard, kDuQuant };

// Returns false when a GPU is present and its result is missing or off the
// host simulation: beyond float rounding unrotated (the kernels' accumulators
// are exact integers); rotated, codes near a rounding tie may flip between
// the device's float arithmetic (butterflies, or tensor-core products) and
// the host's transform.
bool run(const char* name, const RowMatrix& x_in, const RowMatrix& w_in, Way way, const RowMatrix& rotation,
         const Eigen::MatrixXd& y_fp) {
  RowMatrix x = x_in, w = w_in;
  example::OnlineRotation online;
  if (way == Way::kHadamard) {  // the host's copy of what the GPU fuses for X; folded for W
    oq::transform::block_hadamard_rows(x, kBlock);
    oq::transform::block_hadamard_rows(w, kBlock);
    online.hadamard_block = kBlock;
  } else if (way == Way::kDuQuant) {
    rotate_blocks(x, rotation);
    rotate_blocks(w, rotation);
    online.matrix.assign(rotation.data(), rotation.data() + rotation.size());  // row-major: R[input][output]
  }
  // Weights, offline: per output channel, symmetric INT4, packed two per byte.
  const QuantSpec w_spec = QuantSpec::per_token(4, /*symmetric=*/true);  // one scale per row of W
  const auto w_params = oq::quant::compute_params(w, w_spec);
  const auto w_codes = oq::quant::quantize(w, w_params, w_spec);
  const oq::quant::PackedInt4 packed = oq::quant::pack_int4(w_codes, oq::quant::Int4Kind::kSigned);
  // Activations: per token, asymmetric INT4 (what QuantizePerToken computes).
  const QuantSpec x_spec = QuantSpec::per_token(4, /*symmetric=*/false);
  const auto x_params = oq::quant::compute_params(x, x_spec);
  const auto x_hat = oq::quant::dequantize(oq::quant::quantize(x, x_params, x_spec), x_params, x_spec);
  const auto w_hat = oq::quant::dequantize(w_codes, w_params, w_spec);
  const Eigen::MatrixXd y_sim = x_hat.cast<double>() * w_hat.cast<double>().transpose();
  std::printf("%-9s  host W4A4 vs full precision: %.4f", name, relative_error(y_sim, y_fp));

  const std::vector<float> x_flat(x_in.data(), x_in.data() + x_in.size());  // unrotated: the GPU rotates
  const std::vector<std::uint8_t> w_flat(packed.data(), packed.data() + packed.size());
  std::vector<float> w_scales(static_cast<std::size_t>(w.rows()));
  std::vector<std::int32_t> w_sums(static_cast<std::size_t>(w.rows()));
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    w_scales[static_cast<std::size_t>(r)] = w_params.scale(r, 0);
    w_sums[static_cast<std::size_t>(r)] = w_codes.row(r).sum();
  }
  const example::GpuRun gpu = example::w4a4_on_gpu(x_flat, x.rows(), x.cols(), w_flat, w_scales, w_sums, w.rows(),
                                                   online);
  if (!gpu.ran) {
    std::printf("   (GPU: %s)\n", gpu.why.c_str());
    return gpu.no_device;
  }
  const Eigen::MatrixXd y_gpu =
      Eigen::Map<const RowMatrix>(gpu.y.data(), x.rows(), w.rows()).cast<double>();
  const double vs_host = relative_error(y_gpu, y_sim);
  const double bound = way == Way::kPlain ? 1e-5 : 1e-2;
  const bool agrees = vs_host <= bound;  // false for NaN too
  std::printf("   GPU vs host W4A4: %.2e (%s %.0e)   GPU vs full precision: %.4f   %.3f ms (%s + %s, %s)\n",
              vs_host, agrees ? "<=" : "ABOVE", bound, relative_error(y_gpu, y_fp), gpu.milliseconds,
              gpu.quantize.c_str(), gpu.gemm.c_str(), gpu.device.c_str());
  return agrees;
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::Index tokens = 512, in = 4096, out = 4096;
  CLI::App app{"A W4A4 linear layer on the GPU as an engine runs it (plain, Walsh-Hadamard and DuQuant rotations "
               "fused into the quantize kernel, then the W4A4 GEMM), checked against the host simulation (see "
               "examples/04_cuda_w4a4/README.md).",
               "04_cuda_w4a4"};
  app.add_option("tokens", tokens, "rows of X")->capture_default_str()->check(examples::cli::integer<Eigen::Index>(1));
  app.add_option("in", in, "input channels (whole rotation blocks)")
      ->capture_default_str()
      ->check(examples::cli::positive_multiple_of<Eigen::Index>(kBlock));
  app.add_option("out", out, "output channels")->capture_default_str()->check(examples::cli::integer<Eigen::Index>(1));
  if (const std::optional<int> status = examples::cli::parse(app, argc, argv)) return *status;
  const RowMatrix x = activations(tokens, in), w = weights(out, in);
  const Eigen::MatrixXd y_fp = x.cast<double>() * w.cast<double>().transpose();
  std::printf("Y = X·Wᵀ, X %lld × %lld (8 outlier channels, one value of 2,000), W %lld × %lld; relative errors:\n",
              static_cast<long long>(tokens), static_cast<long long>(in), static_cast<long long>(out),
              static_cast<long long>(in));
  const RowMatrix r = duquant_rotation(x);
  const bool plain = run("plain", x, w, Way::kPlain, r, y_fp);
  const bool hadamard = run("hadamard", x, w, Way::kHadamard, r, y_fp);
  const bool duquant = run("duquant", x, w, Way::kDuQuant, r, y_fp);
  return plain && hadamard && duquant ? 0 : 1;
}
