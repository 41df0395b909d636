// CPU integer kernels (oq/cpu/) against Eigen's float products and the
// machine's read and copy bandwidth, all measured in the same run with the
// same thread count.
//
//   decode   M = 1: W4A8 GEMV (weights INT4 per channel, activations INT8 per
//            token) against Eigen's float GEMV split over the same threads by
//            output rows (Eigen runs a GEMV on one thread), and against a
//            plain read of the weight bytes (ReadBandwidth, same threads).
//   prefill  M = 512 / 2048: W4A8 and W4A4 GEMM against Eigen's float GEMM
//            (OpenMP, Eigen::setNbThreads(threads)).
//   quantize per-token INT4 with the fused 128-block Hadamard (into a new
//            PackedActivations per call, and into one reused: ...Reuse) and
//            with a DuQuant transform (two 128-blocks rotations and a
//            zigzag; one rotation shared by the blocks, and one per block:
//            ...Blockwise128), against a copy of the float input.
// Shapes are LLaMA-2-7B's: (N, K) = (4096, 4096), (11008, 4096), (4096, 11008).
//
//   ./bench.cpu.gemm --benchmark_filter='Gemv|ReadBandwidth' --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <oq/cpu.hpp>
#include <oq/transform/duquant.hpp>
#include <oq/transform/duquant_blockwise.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsic headers trip its own -Wuninitialized through
// _mm512_undefined_* (GCC bug 105593) in the read-bandwidth loop below.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace {

using oq::cpu::RowMajorMatrixXf;
using oq::quant::QuantSpec;

int bench_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

RowMajorMatrixXf random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  RowMajorMatrixXf x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = dist(rng);
  return x;
}

void label(benchmark::State& state) {
  state.SetLabel(std::string(oq::cpu::to_string(oq::cpu::best_isa())) + ", " + std::to_string(bench_threads()) +
                 " threads");
}

// Sum of the bytes of a buffer of the weights' size on every thread of a
// pool (as BM_W4A8GemvPool runs): the read bandwidth the GEMV's weight stream
// can at best reach.
void BM_ReadBandwidth(benchmark::State& state) {
  const std::int64_t bytes = state.range(0) * state.range(1) / 2;
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(bytes), 1);
  std::vector<std::uint64_t> sums(64, 0);
  oq::cpu::ThreadPool pool(bench_threads());
  for (auto _ : state) {
    oq::cpu::parallel_for(bytes / 64, bench_threads(), 1024, [&](std::int64_t b, std::int64_t e) {
#if defined(__AVX512BW__)
      // Two independent sums: the loads, not the adds' latency, set the pace.
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      std::int64_t i = b;
      for (; i + 1 < e; i += 2) {
        acc0 = _mm512_add_epi64(acc0, _mm512_sad_epu8(_mm512_loadu_si512(buffer.data() + 64 * i), _mm512_setzero_si512()));
        acc1 = _mm512_add_epi64(acc1,
                                _mm512_sad_epu8(_mm512_loadu_si512(buffer.data() + 64 * i + 64), _mm512_setzero_si512()));
      }
      if (i < e)
        acc0 = _mm512_add_epi64(acc0, _mm512_sad_epu8(_mm512_loadu_si512(buffer.data() + 64 * i), _mm512_setzero_si512()));
      sums[static_cast<std::size_t>((b / 1024) % 64)] += static_cast<std::uint64_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(acc0, acc1)));
#else
      std::uint64_t acc = 0;
      for (std::int64_t i = 64 * b; i < 64 * e; i += 8) {
        std::uint64_t v;
        std::memcpy(&v, buffer.data() + i, 8);
        acc += v;
      }
      sums[static_cast<std::size_t>((b / 1024) % 64)] += acc;
#endif
    }, &pool);
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * bytes);
  label(state);
}

// y = W·x in float, output rows split over the threads.
void BM_EigenGemv(benchmark::State& state) {
  const Eigen::Index n = state.range(0), k = state.range(1);
  const RowMajorMatrixXf w = random_matrix(n, k, 1);
  const Eigen::VectorXf x = random_matrix(k, 1, 2);
  Eigen::VectorXf y(n);
  for (auto _ : state) {
    oq::cpu::parallel_for(n, bench_threads(), 64, [&](std::int64_t b, std::int64_t e) {
      y.segment(b, e - b).noalias() = w.middleRows(b, e - b) * x;
    });
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * k * 4);
  label(state);
}

// The W4A8 GEMV on already quantized activations; bytes = the INT4 weights.
void BM_W4A8Gemv(benchmark::State& state) {
  const Eigen::Index n = state.range(0), k = state.range(1);
  const auto w = oq::cpu::quantize_weights(random_matrix(n, k, 1), QuantSpec::per_channel(4, false, 0.8));
  const auto a = oq::cpu::quantize_per_token(random_matrix(1, k, 2), QuantSpec::per_token(8, false));
  RowMajorMatrixXf y(1, n);
  for (auto _ : state) {
    oq::cpu::gemm(a, w, y, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * k / 2);
  label(state);
}

// The same on a pool of threads the caller owns: no thread start per call.
void BM_W4A8GemvPool(benchmark::State& state) {
  const Eigen::Index n = state.range(0), k = state.range(1);
  const auto w = oq::cpu::quantize_weights(random_matrix(n, k, 1), QuantSpec::per_channel(4, false, 0.8));
  const auto a = oq::cpu::quantize_per_token(random_matrix(1, k, 2), QuantSpec::per_token(8, false));
  RowMajorMatrixXf y(1, n);
  oq::cpu::ThreadPool pool(bench_threads());
  oq::cpu::KernelOptions options;
  options.pool = &pool;
  for (auto _ : state) {
    oq::cpu::gemm(a, w, y, options);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * k / 2);
  label(state);
}

void BM_EigenGemm(benchmark::State& state) {
  const Eigen::Index m = state.range(0), n = state.range(1), k = state.range(2);
  const RowMajorMatrixXf x = random_matrix(m, k, 2);
  const RowMajorMatrixXf w = random_matrix(n, k, 1);
  RowMajorMatrixXf y(m, n);
  Eigen::setNbThreads(bench_threads());
  for (auto _ : state) {
    y.noalias() = x * w.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GOPS"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  label(state);
}

template <int kActBits>
void BM_W4AxGemm(benchmark::State& state) {
  const Eigen::Index m = state.range(0), n = state.range(1), k = state.range(2);
  const auto w = oq::cpu::quantize_weights(random_matrix(n, k, 1), QuantSpec::per_channel(4, false, 0.8));
  const auto a = oq::cpu::quantize_per_token(random_matrix(m, k, 2), QuantSpec::per_token(kActBits, false));
  RowMajorMatrixXf y(m, n);
  for (auto _ : state) {
    oq::cpu::gemm(a, w, y, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GOPS"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  label(state);
}
void BM_W4A8Gemm(benchmark::State& state) { BM_W4AxGemm<8>(state); }
void BM_W4A4Gemm(benchmark::State& state) { BM_W4AxGemm<4>(state); }

// Bytes of the quantize kernels: the float input read and the codes written.
void quantize_bytes(benchmark::State& state, Eigen::Index m, Eigen::Index k) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * m * (k * 4 + k / 2));
  label(state);
}

void BM_CopyTokens(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1);
  const RowMajorMatrixXf x = random_matrix(m, k, 3);
  RowMajorMatrixXf y(m, k);
  for (auto _ : state) {
    oq::cpu::parallel_for(m, bench_threads(), 16, [&](std::int64_t b, std::int64_t e) {
      y.middleRows(b, e - b) = x.middleRows(b, e - b);
    });
    benchmark::DoNotOptimize(y.data());
  }
  // A copy reads and writes the floats: its bytes, for comparison with the quantizer's.
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * m * k * 8);
  label(state);
}

void BM_QuantizeInt4Hadamard128(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1);
  const RowMajorMatrixXf x = random_matrix(m, k, 3);
  const auto t = oq::cpu::TokenTransform::hadamard(128);
  for (auto _ : state) {
    auto a = oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false, 0.9), t, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(a.codes.data());
  }
  quantize_bytes(state, m, k);
}

// The same into one PackedActivations kept across calls
// (quantize_per_token_into), as an engine decoding step after step would:
// no allocation, and no zero-fill of the codes before the threads start.
void BM_QuantizeInt4Hadamard128Reuse(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1);
  const RowMajorMatrixXf x = random_matrix(m, k, 3);
  const auto t = oq::cpu::TokenTransform::hadamard(128);
  const auto spec = QuantSpec::per_token(4, false, 0.9);
  oq::cpu::PackedActivations a;
  oq::cpu::quantize_per_token_into(x, spec, a, t, {bench_threads(), oq::cpu::Isa::kAuto});  // sized once
  for (auto _ : state) {
    oq::cpu::quantize_per_token_into(x, spec, a, t, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(a.codes.data());
  }
  quantize_bytes(state, m, k);
}

void BM_QuantizeInt4DuQuant128(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1);
  const RowMajorMatrixXf x = random_matrix(m, k, 3);
  std::mt19937_64 gen(0);
  oq::transform::DuQuantOptions options;
  options.greedy_steps = 8;  // the cost per token does not depend on the steps
  const auto duquant = oq::transform::calibrate_duquant(Eigen::MatrixXf(x.topRows(64)), options, gen);
  const auto t = oq::cpu::TokenTransform::duquant(duquant);
  for (auto _ : state) {
    auto a = oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false, 0.9), t, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(a.codes.data());
  }
  quantize_bytes(state, m, k);
}

// DuQuant with one rotation per block (TokenTransform::duquant_blockwise):
// each token reads K = k/128 different 128 × 128 rotations per stage (2 MiB
// at k = 4096) where the shared form reads one; the same FMA count.
void BM_QuantizeInt4DuQuantBlockwise128(benchmark::State& state) {
  const Eigen::Index m = state.range(0), k = state.range(1);
  const RowMajorMatrixXf x = random_matrix(m, k, 3);
  std::mt19937_64 gen(0);
  oq::transform::DuQuantOptions options;
  options.greedy_steps = 8;
  const auto duquant = oq::transform::calibrate_duquant_blockwise(Eigen::MatrixXf(x.topRows(64)), options, gen);
  const auto t = oq::cpu::TokenTransform::duquant_blockwise(duquant);
  for (auto _ : state) {
    auto a = oq::cpu::quantize_per_token(x, QuantSpec::per_token(4, false, 0.9), t, {bench_threads(), oq::cpu::Isa::kAuto});
    benchmark::DoNotOptimize(a.codes.data());
  }
  quantize_bytes(state, m, k);
}

void decode_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "k"})->Args({4096, 4096})->Args({11008, 4096})->Args({4096, 11008})->UseRealTime()->Unit(benchmark::kMicrosecond);
}
void prefill_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (std::int64_t m : {512, 2048})
    for (auto nk : {std::pair<std::int64_t, std::int64_t>{4096, 4096}, {11008, 4096}, {4096, 11008}})
      b->Args({m, nk.first, nk.second});
}
void token_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "k"})->Args({2048, 4096})->Args({2048, 11008})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_ReadBandwidth)->Apply(decode_shapes);
BENCHMARK(BM_EigenGemv)->Apply(decode_shapes);
BENCHMARK(BM_W4A8Gemv)->Apply(decode_shapes);
BENCHMARK(BM_W4A8GemvPool)->Apply(decode_shapes);
BENCHMARK(BM_EigenGemm)->Apply(prefill_shapes);
BENCHMARK(BM_W4A8Gemm)->Apply(prefill_shapes);
BENCHMARK(BM_W4A4Gemm)->Apply(prefill_shapes);
BENCHMARK(BM_CopyTokens)->Apply(token_shapes);
BENCHMARK(BM_QuantizeInt4Hadamard128)->Apply(token_shapes);
BENCHMARK(BM_QuantizeInt4Hadamard128Reuse)->Apply(token_shapes);
BENCHMARK(BM_QuantizeInt4DuQuant128)->Apply(token_shapes);
BENCHMARK(BM_QuantizeInt4DuQuantBlockwise128)->Apply(token_shapes);

}  // namespace

BENCHMARK_MAIN();
