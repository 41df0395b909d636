// Per-token INT4 fake quantization of a float matrix (row-major, like an
// activation tensor), reported in GB/s of bytes read + written, beside a plain
// copy of the same bytes measured in the same run: the copy is the bound a
// streaming element-wise pass can reach on this machine.
//
//   ./bench.quant.fake_quant --benchmark_filter=/4096
#include <oq/quant.hpp>

#include <benchmark/benchmark.h>

#include <random>

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

RowMatrix random_activations(Eigen::Index rows, Eigen::Index cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  RowMatrix x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = dist(rng);
  return x;
}

void set_bytes(benchmark::State& state, const RowMatrix& x) {
  // One read and one write of every element.
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * x.size() * 2 * static_cast<int64_t>(sizeof(float)));
}

void BM_Copy(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const RowMatrix x = random_activations(n, n);
  RowMatrix y(n, n);
  for (auto _ : state) {
    y = x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, x);
}

// Parameters and fake quantization, the whole per-token step of docs/design.md §2.
void BM_FakeQuantPerTokenInt4(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const RowMatrix x = random_activations(n, n);
  RowMatrix y(n, n);
  const auto spec = oq::quant::QuantSpec::per_token(4, false, 0.9);
  for (auto _ : state) {
    oq::quant::fake_quantize_into(x, oq::quant::compute_params(x, spec), spec, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, x);
}

// With parameters computed once: the quantize-dequantize pass alone.
void BM_FakeQuantPerTokenInt4GivenParams(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const RowMatrix x = random_activations(n, n);
  RowMatrix y(n, n);
  const auto spec = oq::quant::QuantSpec::per_token(4, false, 0.9);
  const auto params = oq::quant::compute_params(x, spec);
  for (auto _ : state) {
    oq::quant::fake_quantize_into(x, params, spec, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, x);
}

// The parameters alone (docs/design.md §2's finiteness check, min and max), per
// token and per tensor: a read of x, whose bound is the copy's read half.
// Bytes counted: one read of every element.
void params_bench(benchmark::State& state, const oq::quant::QuantSpec& spec) {
  const Eigen::Index n = state.range(0);
  const RowMatrix x = random_activations(n, n);
  for (auto _ : state) {
    auto params = oq::quant::compute_params(x, spec);
    benchmark::DoNotOptimize(params.scale.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * x.size() * static_cast<int64_t>(sizeof(float)));
}
void BM_ParamsPerTokenInt4(benchmark::State& state) { params_bench(state, oq::quant::QuantSpec::per_token(4, false, 0.9)); }
void BM_ParamsPerTensorInt4(benchmark::State& state) { params_bench(state, oq::quant::QuantSpec::per_tensor(4, false, 0.9)); }

}  // namespace

BENCHMARK(BM_Copy)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FakeQuantPerTokenInt4)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FakeQuantPerTokenInt4GivenParams)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ParamsPerTokenInt4)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ParamsPerTensorInt4)->Arg(4096)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
