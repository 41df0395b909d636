// bench.cuda.quantize_per_token: the per-token INT4 quantization kernel, with
// and without the fused 128-block rotation, against a device-to-device copy
// of the same run (issue 6: ≥ 85% of copy bandwidth, bytes read + written).
//
//   copy               cudaMemcpyAsync of 1 GiB, device to device
//   quantize           bf16 rows → packed u4 codes, fp32 scale and zero point,
//                      int32 code sum per row (asymmetric, clip 1.0)
//   quantize_rotated   the same after X·diag(R, …, R) with one 128 × 128 R
//   quantize_hadamard  the same after X·diag(H, …, H), H = H_128/√128 by the
//                      fast Walsh–Hadamard transform
//   quantize_rotated_tc[1][_g2][_recompute], quantize_rotated_tc1_ring4
//                      quantize_rotated with X·R on tensor cores
//                      (device/quantize_per_token_tensorop.cuh): R in two
//                      bf16 terms, or one ("tc1": X·round(R)); one warp group
//                      per CTA, or two ("_g2"); run()'s passes (Y resident in
//                      shared memory: one CTA's at K = 4096, split over a
//                      cluster of two on sm_90 at K = 11008), or Y computed
//                      twice ("_recompute", the form before sm_90)
//
// `bytes` counts the fewest bytes the kernel must move: the bf16 input read
// once, the codes and the 12 bytes per row written once (R stays in cache).
#include "gpu_bench.cuh"

#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/device/quantize_per_token_tensorop.cuh>

#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace {

using namespace oq::bench_gpu;
using bf16 = __nv_bfloat16;

constexpr int kBlock = 128;

void shapes(benchmark::internal::Benchmark* b) {
  for (std::int64_t k : {4096, 11008}) b->Args({8192, k});
}

BENCHMARK(device_copy)->Name("copy")->ArgName("bytes")->Arg(std::int64_t{1} << 30)->UseManualTime();

enum class Rotation { kNone, kMatrix, kHadamard };

template <class Quantize = oq::cuda::device::QuantizePerToken<bf16>>
void run_quantize(benchmark::State& st, Rotation rotation_kind, const char* name) {
  const std::int64_t rows = st.range(0), cols = st.range(1);
  const std::size_t x_count = rows * cols, code_bytes = rows * cols / 2;
  const int copies = copies_for(x_count * sizeof(bf16));
  DeviceArray<bf16> x(x_count * copies);
  DeviceArray<std::uint8_t> codes(code_bytes);
  DeviceArray<float> scales(rows), zeros(rows), rotation(kBlock * kBlock);
  DeviceArray<std::int32_t> sums(rows);
  fill(x.get(), x.size(), 21, RandomUniform<bf16>{-4.0f, 4.0f});
  fill(rotation.get(), rotation.size(), 22, RandomUniform<float>{-0.1f, 0.1f});  // timing only: any R
  typename Quantize::Params p;
  p.rows = rows;
  p.cols = cols;
  p.ld_x = cols;
  p.codes = codes.get();
  p.ld_codes = cols / 2;
  p.scales = scales.get();
  p.zeros = zeros.get();
  p.code_sums = sums.get();
  p.bits = 4;
  p.symmetric = false;
  if (rotation_kind == Rotation::kMatrix) {
    p.rotation = rotation.get();
    p.block_size = kBlock;
  } else if (rotation_kind == Rotation::kHadamard) {
    p.hadamard_block = kBlock;
  }
  const double bytes = static_cast<double>(x_count * sizeof(bf16) + code_bytes + 12 * rows);
  time_launches(st, copies, Work{name, bytes}, [&](cudaStream_t stream, int copy) {
    typename Quantize::Params q = p;
    q.x = x.get() + copy * x_count;
    if (const auto r = Quantize::run(q, stream); !r.ok()) throw std::runtime_error(r.message);
  });
  st.counters["bytes"] = bytes;
}

void BM_quantize(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) { run_quantize(st, Rotation::kNone, "quantize"); });
}
void BM_quantize_rotated(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) { run_quantize(st, Rotation::kMatrix, "quantize_rotated"); });
}
void BM_quantize_hadamard(benchmark::State& state) {
  guarded(state, [](benchmark::State& st) { run_quantize(st, Rotation::kHadamard, "quantize_hadamard"); });
}
// The tensor-core launcher with its passes forced to kRecompute, for the
// comparison with run()'s choice (Y resident, in one CTA or a pair).
template <class Quantize>
struct Recompute {
  using Params = typename Quantize::Params;
  static oq::cuda::Report run(const Params& p, cudaStream_t stream) {
    return Quantize::run(p, stream, Quantize::Passes::kRecompute);
  }
};

// kRingSlots: 0 is the kernel's ring depth (~24 KiB in flight); 4 is the
// depth before 2026-11-30 (3 stages, ~7.5 KiB in flight), kept to measure
// what the deeper ring moves.
template <int kTerms, int kGroups, bool kForceRecompute = false, int kRingSlots = 0>
void BM_quantize_rotated_tc(benchmark::State& state) {
  using Quantize = oq::cuda::device::QuantizePerTokenTensorOp<bf16, kBlock, kTerms, kGroups, kRingSlots>;
  using Launcher = std::conditional_t<kForceRecompute, Recompute<Quantize>, Quantize>;
  static const std::string name = std::string("quantize_rotated_tc") + (kTerms == 1 ? "1" : "") +
                                  (kGroups == 2 ? "_g2" : "") + (kForceRecompute ? "_recompute" : "") +
                                  (kRingSlots > 0 ? "_ring" + std::to_string(kRingSlots) : "");
  guarded(state, [](benchmark::State& st) { run_quantize<Launcher>(st, Rotation::kMatrix, name.c_str()); });
}
BENCHMARK(BM_quantize)->Name("quantize")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated)->Name("quantize_rotated")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_hadamard)->Name("quantize_hadamard")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<2, 1>)->Name("quantize_rotated_tc")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<2, 2>)->Name("quantize_rotated_tc_g2")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<1, 1>)->Name("quantize_rotated_tc1")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<1, 2>)->Name("quantize_rotated_tc1_g2")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<2, 2, true>)->Name("quantize_rotated_tc_g2_recompute")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();
BENCHMARK(BM_quantize_rotated_tc<1, 1, false, 4>)->Name("quantize_rotated_tc1_ring4")->ArgNames({"m", "k"})->Apply(shapes)->UseManualTime();

}  // namespace

OQ_GPU_BENCHMARK_MAIN()
