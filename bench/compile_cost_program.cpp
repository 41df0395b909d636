// A small program that uses oq the way an engine's calibration file would:
// DuQuant calibration of one linear input, folding into the weight, and
// GPTQ on the result. bench/compile_cost.sh compiles it (it is not run) to
// measure what a file that calls oq pays, with and without
// OQ_EXTERN_TEMPLATES (<oq/instantiate.hpp>).
#include <oq/duquant.hpp>
#include <oq/quant.hpp>

#include <Eigen/Core>

#include <cstdio>
#include <random>

int main() {
  std::mt19937_64 generator(22);
  std::normal_distribution<float> normal;
  const Eigen::MatrixXf x = Eigen::MatrixXf::NullaryExpr(256, 128, [&] { return normal(generator); });
  const Eigen::MatrixXf w = Eigen::MatrixXf::NullaryExpr(64, 128, [&] { return normal(generator); });

  oq::transform::DuQuantOptions options;
  options.block_size = 32;
  const auto transform = oq::transform::calibrate_duquant(x, options, generator);
  const Eigen::MatrixXf x_hat = transform.apply(x);
  const Eigen::MatrixXf w_hat = transform.fold_into_weight(w);

  oq::quant::GptqHessian hessian(x_hat.cols());
  hessian.add(x_hat);
  const auto result =
      oq::quant::gptq_quantize(w_hat, hessian.matrix(), oq::quant::QuantSpec::per_channel(4, /*symmetric=*/true));
  std::printf("%g\n", static_cast<double>((result.weight - w_hat).norm()));
}
