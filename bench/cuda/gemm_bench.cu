// bench.cuda.gemm: oq's W4A4 and W4A16 GEMMs against cuBLAS in the same run
// (issue 6's targets), on the (N, K) of LLaMA-2-7B and -70B's linears:
//
//   copy           device-to-device cudaMemcpyAsync of 1 GiB: the bandwidth ceiling
//   cublas_bf16    cublasGemmEx, bf16 in and out, fp32 accumulation ("TN": both
//                  operands K-contiguous, as a linear layer stores them)
//   cublaslt_int8  cublasLtMatmul, int8 in, int32 out, int32 compute (TN, the
//                  layout IMMA needs): Hopper's ceiling for 4-bit operands,
//                  which it has no tensor cores for (docs/design.md §7)
//   w4a4           oq::cuda::device::GemmW4A4: u4 activations (asymmetric
//                  per-token, as QuantizePerToken writes them), s4 weights
//                  (symmetric per-channel), bf16 out through the scale epilogue
//   w4a4_multistage  the same problem on device::GemmW4A4Multistage
//   w4a4_wgmma       and on device::GemmW4A4Wgmma (sm_90a; skipped elsewhere)
//   w4a16          oq::cuda::device::GemmW4A16: bf16 activations, u4 weights
//                  with per-group(128) scales and zero points, bf16 out
//   w4a16_tensorop the same problem on device::GemmW4A16TensorOp
//
// Every benchmark is named <kernel>/m:M/n:N/k:K, times one launch (see
// gpu_bench.cuh) and sets `ops` = 2·M·N·K and `bytes`; the decode GEMMs also
// set `weight_bytes`. Operands hold random bits, never zeros.
//
//   ./bench.cuda.gemm --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
//       --benchmark_out=gemm.json --benchmark_out_format=json
//   python3 bench/cuda/summarize.py gemm.json
#include "gpu_bench.cuh"

#include <oq/cuda/device/gemm_w4a16.cuh>
#include <oq/cuda/device/gemm_w4a16_tensorop.cuh>
#include <oq/cuda/device/gemm_w4a4.cuh>
#include <oq/cuda/device/gemm_w4a4_multistage.cuh>
#include <oq/cuda/device/gemm_w4a4_wgmma.cuh>

#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

namespace {

using namespace oq::bench_gpu;
using bf16 = __nv_bfloat16;

constexpr std::int64_t kGroupSize = 128;

// (N, K) of LLaMA-2-7B (q/k/v/o, gate/up, down) and LLaMA-2-70B.
const std::vector<std::pair<std::int64_t, std::int64_t>> kLinearShapes = {
    {4096, 4096}, {11008, 4096}, {4096, 11008}, {8192, 8192}, {28672, 8192}, {8192, 28672}};

void prefill_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t m : {2048, 8192})
    for (auto [n, k] : kLinearShapes) b->Args({m, n, k});
}
void decode_shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t m : {1, 4, 16, 64})
    for (auto [n, k] : kLinearShapes) b->Args({m, n, k});
}
void all_shapes(benchmark::internal::Benchmark* b) {
  decode_shapes(b);
  prefill_shapes(b);
}

struct Shape {
  std::int64_t m, n, k;
  explicit Shape(const benchmark::State& state) : m(state.range(0)), n(state.range(1)), k(state.range(2)) {}
  double ops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k); }
};

void set_counters(benchmark::State& state, double ops, double bytes) {
  state.counters["ops"] = ops;
  state.counters["bytes"] = bytes;
}

BENCHMARK(device_copy)->Name("copy")->ArgName("bytes")->Arg(std::int64_t{1} << 30)->UseManualTime();

// ---------------------------------------------------------------------------
void BM_cublas_bf16(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) {
    const Shape s(st);
    const std::size_t a_count = s.m * s.k, w_count = s.n * s.k;
    const int copies = copies_for((a_count + w_count) * sizeof(bf16));
    DeviceArray<bf16> a(a_count * copies), w(w_count * copies), y(static_cast<std::size_t>(s.m * s.n));
    fill(a.get(), a.size(), 2, RandomUniform<bf16>{-1.0f, 1.0f});
    fill(w.get(), w.size(), 3, RandomUniform<bf16>{-1.0f, 1.0f});
    const float alpha = 1.0f, beta = 0.0f;
    cublasHandle_t handle = cublas().handle();
    time_launches(st, copies, Work{"cublas_bf16", s.ops()}, [&](cudaStream_t stream, int copy) {
      cublas().use_stream(stream);
      // Column-major view: Yᵀ (N × M) = Wᵀ-as-stored (op T of K × N) · Aᵀ-as-stored (K × M).
      OQ_BENCH_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                  static_cast<int>(s.k), &alpha, w.get() + copy * w_count, CUDA_R_16BF,
                                  static_cast<int>(s.k), a.get() + copy * a_count, CUDA_R_16BF, static_cast<int>(s.k),
                                  &beta, y.get(), CUDA_R_16BF, static_cast<int>(s.n), CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    });
    set_counters(st, s.ops(), 2.0 * static_cast<double>(a_count + w_count + s.m * s.n));
    st.counters["weight_bytes"] = 2.0 * static_cast<double>(w_count);
  });
}
BENCHMARK(BM_cublas_bf16)->Name("cublas_bf16")->ArgNames({"m", "n", "k"})->Apply(all_shapes)->UseManualTime();

// ---------------------------------------------------------------------------
// cuBLASLt's INT8 GEMM, int32 out: the matmul, its layouts and the best
// algorithm the heuristic offers, made once per shape.
class LtInt8Gemm {
 public:
  LtInt8Gemm(std::int64_t m, std::int64_t n, std::int64_t k) {
    OQ_BENCH_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    const cublasOperation_t transpose = CUBLAS_OP_T;
    OQ_BENCH_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose));
    OQ_BENCH_CHECK(cublasLtMatrixLayoutCreate(&a_, CUDA_R_8I, k, n, k));   // W as stored: K × N column-major
    OQ_BENCH_CHECK(cublasLtMatrixLayoutCreate(&b_, CUDA_R_8I, k, m, k));   // X as stored: K × M column-major
    OQ_BENCH_CHECK(cublasLtMatrixLayoutCreate(&c_, CUDA_R_32I, n, m, n));  // Yᵀ: N × M column-major
    cublasLtMatmulPreference_t preference = nullptr;
    OQ_BENCH_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const std::size_t workspace = Cublas::kWorkspaceBytes;
    OQ_BENCH_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                        &workspace, sizeof workspace));
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(cublas().lt(), desc_, a_, b_, c_, c_, preference, 1, &heuristic_, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    OQ_BENCH_CHECK(status);
    if (found == 0) throw std::runtime_error("cublasLtMatmulAlgoGetHeuristic: no INT8 algorithm for this shape");
  }
  LtInt8Gemm(const LtInt8Gemm&) = delete;
  LtInt8Gemm& operator=(const LtInt8Gemm&) = delete;
  ~LtInt8Gemm() {
    cublasLtMatrixLayoutDestroy(c_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatmulDescDestroy(desc_);
  }
  void run(const std::int8_t* w, const std::int8_t* x, std::int32_t* y, cudaStream_t stream) const {
    const std::int32_t alpha = 1, beta = 0;
    OQ_BENCH_CHECK(cublasLtMatmul(cublas().lt(), desc_, &alpha, w, a_, x, b_, &beta, y, c_, y, c_, &heuristic_.algo,
                                  cublas().workspace(), Cublas::kWorkspaceBytes, stream));
  }

 private:
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic_{};
};

void BM_cublaslt_int8(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) {
    const Shape s(st);
    const std::size_t a_count = s.m * s.k, w_count = s.n * s.k;
    const int copies = copies_for(a_count + w_count);
    DeviceArray<std::int8_t> a(a_count * copies), w(w_count * copies);
    DeviceArray<std::int32_t> y(static_cast<std::size_t>(s.m * s.n));
    fill(reinterpret_cast<std::uint8_t*>(a.get()), a.size(), 4, RandomByte{});
    fill(reinterpret_cast<std::uint8_t*>(w.get()), w.size(), 5, RandomByte{});
    const LtInt8Gemm gemm(s.m, s.n, s.k);
    time_launches(st, copies, Work{"cublaslt_int8", s.ops()}, [&](cudaStream_t stream, int copy) {
      gemm.run(w.get() + copy * w_count, a.get() + copy * a_count, y.get(), stream);
    });
    set_counters(st, s.ops(), static_cast<double>(a_count + w_count) + 4.0 * static_cast<double>(s.m * s.n));
  });
}
BENCHMARK(BM_cublaslt_int8)->Name("cublaslt_int8")->ArgNames({"m", "n", "k"})->Apply(prefill_shapes)->UseManualTime();

// ---------------------------------------------------------------------------
template <class Gemm>
void BM_w4a4(benchmark::State& state, const char* kernel) {
  guarded(state, [kernel](benchmark::State& st) {
    const Shape s(st);
    const std::size_t a_bytes = s.m * s.k / 2, w_bytes = s.n * s.k / 2;
    const int copies = copies_for(a_bytes + w_bytes);
    DeviceArray<std::uint8_t> a(a_bytes * copies), w(w_bytes * copies);
    DeviceArray<float> scale_a(s.m), zero_a(s.m), scale_w(s.n);
    DeviceArray<std::int32_t> sum_w(s.n);
    DeviceArray<bf16> y(static_cast<std::size_t>(s.m * s.n));
    fill(a.get(), a.size(), 6, RandomByte{});
    fill(w.get(), w.size(), 7, RandomByte{});
    fill(scale_a.get(), s.m, 8, RandomUniform<float>{0.01f, 0.1f});
    fill(zero_a.get(), s.m, 9, RandomUniform<float>{0.0f, 15.0f});  // timing only: any value will do
    fill(scale_w.get(), s.n, 10, RandomUniform<float>{0.001f, 0.01f});
    fill(sum_w.get(), s.n, 11, RandomUniform<std::int32_t>{0.0f, 1024.0f});
    typename Gemm::Params p;
    p.ld_a = s.k / 2;
    p.a_signed = false;
    p.ld_w = s.k / 2;
    p.w_signed = true;
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    p.scale_a = scale_a.get();
    p.zero_a = zero_a.get();
    p.sum_w = sum_w.get();
    p.scale_w = scale_w.get();
    p.y = y.get();
    p.ld_y = s.n;
    time_launches(st, copies, Work{kernel, s.ops()}, [&](cudaStream_t stream, int copy) {
      typename Gemm::Params q = p;
      q.a = a.get() + copy * a_bytes;
      q.w = w.get() + copy * w_bytes;
      if (const auto r = Gemm::run(q, stream); !r.ok()) throw std::runtime_error(r.message);
    });
    set_counters(st, s.ops(), static_cast<double>(a_bytes + w_bytes) + 2.0 * static_cast<double>(s.m * s.n));
  });
}
void BM_w4a4_simple(benchmark::State& state) { BM_w4a4<oq::cuda::device::GemmW4A4<bf16>>(state, "w4a4"); }
void BM_w4a4_multistage(benchmark::State& state) {
  BM_w4a4<oq::cuda::device::GemmW4A4Multistage<bf16>>(state, "w4a4_multistage");
}
void BM_w4a4_wgmma(benchmark::State& state) { BM_w4a4<oq::cuda::device::GemmW4A4Wgmma<bf16>>(state, "w4a4_wgmma"); }
BENCHMARK(BM_w4a4_simple)->Name("w4a4")->ArgNames({"m", "n", "k"})->Apply(prefill_shapes)->UseManualTime();
BENCHMARK(BM_w4a4_multistage)
    ->Name("w4a4_multistage")
    ->ArgNames({"m", "n", "k"})
    ->Apply(prefill_shapes)
    ->UseManualTime();
BENCHMARK(BM_w4a4_wgmma)->Name("w4a4_wgmma")->ArgNames({"m", "n", "k"})->Apply(prefill_shapes)->UseManualTime();

// ---------------------------------------------------------------------------
template <class Gemm>
void BM_w4a16(benchmark::State& state, const char* kernel) {
  guarded(state, [kernel](benchmark::State& st) {
    const Shape s(st);
    const std::int64_t groups = s.k / kGroupSize;
    const std::size_t a_count = s.m * s.k, w_bytes = s.n * s.k / 2, param_count = s.n * groups;
    const std::size_t weight_bytes = w_bytes + 2 * sizeof(float) * param_count;  // codes, scales, zeros
    const int copies = copies_for(weight_bytes + 2 * a_count);
    DeviceArray<bf16> a(a_count * copies), y(static_cast<std::size_t>(s.m * s.n));
    DeviceArray<std::uint8_t> w(w_bytes * copies);
    DeviceArray<float> scales(param_count * copies), zeros(param_count * copies);
    fill(a.get(), a.size(), 12, RandomUniform<bf16>{-1.0f, 1.0f});
    fill(w.get(), w.size(), 13, RandomByte{});
    fill(scales.get(), scales.size(), 14, RandomUniform<float>{0.001f, 0.01f});
    fill(zeros.get(), zeros.size(), 15, RandomUniform<float>{0.0f, 15.0f});
    typename Gemm::Params p;
    p.ld_a = s.k;
    p.ld_w = s.k / 2;
    p.symmetric = false;
    p.group_size = kGroupSize;
    p.y = y.get();
    p.ld_y = s.n;
    p.m = s.m;
    p.n = s.n;
    p.k = s.k;
    time_launches(st, copies, Work{kernel, s.ops()}, [&](cudaStream_t stream, int copy) {
      typename Gemm::Params q = p;
      q.a = a.get() + copy * a_count;
      q.w = w.get() + copy * w_bytes;
      q.scales = scales.get() + copy * param_count;
      q.zeros = zeros.get() + copy * param_count;
      if (const auto r = Gemm::run(q, stream); !r.ok()) throw std::runtime_error(r.message);
    });
    set_counters(st, s.ops(), static_cast<double>(weight_bytes) + 2.0 * static_cast<double>(a_count + s.m * s.n));
    st.counters["weight_bytes"] = static_cast<double>(weight_bytes);
  });
}
void BM_w4a16_simt(benchmark::State& state) { BM_w4a16<oq::cuda::device::GemmW4A16<bf16, bf16>>(state, "w4a16"); }
void BM_w4a16_tensorop(benchmark::State& state) {
  BM_w4a16<oq::cuda::device::GemmW4A16TensorOp<bf16, bf16>>(state, "w4a16_tensorop");
}
BENCHMARK(BM_w4a16_simt)->Name("w4a16")->ArgNames({"m", "n", "k"})->Apply(decode_shapes)->UseManualTime();
BENCHMARK(BM_w4a16_tensorop)
    ->Name("w4a16_tensorop")
    ->ArgNames({"m", "n", "k"})
    ->Apply(decode_shapes)
    ->UseManualTime();

}  // namespace

OQ_GPU_BENCHMARK_MAIN()
