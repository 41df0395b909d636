// GPTQ of one linear layer (quant/gptq.hpp): the Hessian's factor, then the
// column loop with lazy batch updates, 4-bit per-channel asymmetric weights.
// LLaMA-2-7B's 4096 × 4096 projections (q/k/v/o), from 2048 calibration
// tokens: the whole GPTQ, the factor alone, and beside them the floor of the
// factor, Eigen's Cholesky of the same matrix.
// bench/RESULTS.md compares with the reference implementation's algorithm on
// PyTorch on the same machine.
//
//   ./bench.quant.gptq --benchmark_filter=4096
#include <oq/quant/gptq.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Cholesky>

#include <random>

namespace {

Eigen::MatrixXf gaussian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(rng);
  return m;
}

// Calibration inputs with correlated channels: Gaussian times a random mixing.
Eigen::MatrixXd hessian(Eigen::Index tokens, Eigen::Index channels) {
  const Eigen::MatrixXf mixing = Eigen::MatrixXf::Identity(channels, channels) + 0.05f * gaussian(channels, channels, 2);
  oq::quant::GptqHessian h(channels);
  h.add(gaussian(tokens, channels, 1) * mixing);
  return h.matrix();
}

// Args: in (= out), tokens.
void BM_GptqQuantize(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Eigen::MatrixXd h = hessian(state.range(1), n);
  const Eigen::MatrixXf w = gaussian(n, n, 3);
  const auto spec = oq::quant::QuantSpec::per_channel(4, false);
  for (auto _ : state) {
    const oq::quant::GptqFactor factor(h);
    auto r = oq::quant::gptq_quantize(w, factor, spec);
    benchmark::DoNotOptimize(r.weight.data());
  }
}

void BM_GptqFactor(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Eigen::MatrixXd h = hessian(state.range(1), n);
  for (auto _ : state) {
    const oq::quant::GptqFactor factor(h);
    benchmark::DoNotOptimize(factor.u().data());
  }
}

// The floor of GptqFactor: one Cholesky of an n × n matrix (n³/3 flops).
void BM_EigenCholesky(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Eigen::MatrixXd h = hessian(state.range(1), n);
  h.diagonal().array() += 0.01 * h.diagonal().mean();
  for (auto _ : state) {
    const Eigen::LLT<Eigen::MatrixXd> llt(h);
    benchmark::DoNotOptimize(llt.matrixLLT().data());
  }
}

}  // namespace

BENCHMARK(BM_GptqQuantize)->ArgNames({"n", "tokens"})->Args({256, 512})->Args({4096, 2048})->Unit(benchmark::kSecond);
BENCHMARK(BM_GptqFactor)->ArgNames({"n", "tokens"})->Args({256, 512})->Args({4096, 2048})->Unit(benchmark::kSecond);
BENCHMARK(BM_EigenCholesky)->ArgNames({"n", "tokens"})->Args({256, 512})->Args({4096, 2048})->Unit(benchmark::kSecond);

BENCHMARK_MAIN();
