// Outlier statistics and the kurtosis regularizer's gradient on an 8192 × 4096
// float activation matrix (a LLaMA-7B layer input for 8192 tokens), in GB/s of
// input bytes read, beside a plain copy of the same bytes in the same run.
//
//   ./bench.analysis.statistics --benchmark_filter=/8192
#include <oq/analysis/moments.hpp>
#include <oq/kurtosis.hpp>

#include <benchmark/benchmark.h>

#include <random>

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr Eigen::Index kChannels = 4096;

RowMatrix random_activations(Eigen::Index rows) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  RowMatrix x(rows, kChannels);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = dist(rng);
  return x;
}

void set_bytes(benchmark::State& state, const RowMatrix& x) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * x.size() * static_cast<int64_t>(sizeof(float)));
}

void BM_Copy(benchmark::State& state) {
  const RowMatrix x = random_activations(state.range(0));
  RowMatrix y(x.rows(), x.cols());
  for (auto _ : state) {
    y = x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, x);
}

// Streaming per-channel moments (two-pass per batch, Pébay merge), 512-token batches.
void BM_ChannelMoments(benchmark::State& state) {
  const RowMatrix x = random_activations(state.range(0));
  for (auto _ : state) {
    oq::analysis::ChannelMoments moments(kChannels);
    for (Eigen::Index start = 0; start < x.rows(); start += 512)
      moments.update(x.middleRows(start, std::min<Eigen::Index>(512, x.rows() - start)));
    benchmark::DoNotOptimize(moments.absmax().data());
  }
  set_bytes(state, x);
}

void BM_RowKurtosis(benchmark::State& state) {
  const RowMatrix x = random_activations(state.range(0));
  for (auto _ : state) {
    auto k = oq::analysis::row_kurtosis(x);
    benchmark::DoNotOptimize(k.data());
  }
  set_bytes(state, x);
}

// Into a reused buffer, as a training loop would (the allocating overload also
// pays for faulting in a fresh 128 MiB result on every call).
void BM_KurtosisRegularizerGrad(benchmark::State& state) {
  const RowMatrix x = random_activations(state.range(0));
  RowMatrix g(x.rows(), x.cols());
  for (auto _ : state) {
    oq::analysis::kurtosis_regularizer_grad_into(x, 1e-5, 0.0, g);
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, x);
}

}  // namespace

BENCHMARK(BM_Copy)->Arg(512)->Arg(8192)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ChannelMoments)->Arg(512)->Arg(8192)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RowKurtosis)->Arg(512)->Arg(8192)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KurtosisRegularizerGrad)->Arg(512)->Arg(8192)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
