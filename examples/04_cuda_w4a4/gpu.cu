// examples/04_cuda_w4a4/gpu.cu: how an engine calls oq's kernels — one
// quantize launch for the activations (QuantizePerToken, or
// QuantizePerTokenTensorOp for a general rotation), one W4A4 GEMM whose
// epilogue turns int32 accumulators back into real outputs, on the W4A4
// kernel the library chooses for the device (GemmW4A4Dispatch). Every
// launcher checks its arguments and the device (initialize, once per layer
// here) and reports, never crashes; run(stream) then launches without
// checking again.
#include "gpu.hpp"

#include <oq/cuda/device/gemm_w4a4_dispatch.cuh>
#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/device/quantize_per_token_tensorop.cuh>

#include <cuda_bf16.h>

#include <stdexcept>

namespace example {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(const oq::cuda::Report& r) {
  if (!r.ok()) throw std::runtime_error(r.message);
}

template <class T>
struct Buffer {  // an owning device allocation
  T* ptr = nullptr;
  explicit Buffer(std::size_t count) { check(cudaMalloc(&ptr, (count > 0 ? count : 1) * sizeof(T)), "cudaMalloc"); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { cudaFree(ptr); }
};

struct Event {  // an owning CUDA event
  cudaEvent_t event = nullptr;
  Event() { check(cudaEventCreate(&event), "cudaEventCreate"); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(event); }
};

template <class T>
void upload(Buffer<T>& d, const std::vector<T>& h) {
  check(cudaMemcpy(d.ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
}

}  // namespace

GpuRun w4a4_on_gpu(const std::vector<float>& x, std::int64_t m, std::int64_t k,
                   const std::vector<std::uint8_t>& w_packed, const std::vector<float>& w_scales,
                   const std::vector<std::int32_t>& w_code_sums, std::int64_t n, const OnlineRotation& rotation) {
  GpuRun run;
  int devices = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    run.no_device = true;
    run.why = std::string("no usable CUDA device (") + (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")";
    return run;
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    run.device = std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";

    std::vector<__nv_bfloat16> x16(x.size());  // engines hold activations in bf16
    for (std::size_t i = 0; i < x.size(); ++i) x16[i] = __float2bfloat16_rn(x[i]);
    Buffer<__nv_bfloat16> d_x(x16.size());
    Buffer<std::uint8_t> d_codes(static_cast<std::size_t>(m * k / 2)), d_w(w_packed.size());
    Buffer<float> d_sa(m), d_za(m), d_sw(n), d_y(static_cast<std::size_t>(m * n));
    Buffer<std::int32_t> d_suma(m), d_sumw(n);
    Buffer<float> d_r(rotation.matrix.size());
    upload(d_x, x16);
    if (!rotation.matrix.empty()) upload(d_r, rotation.matrix);
    upload(d_w, w_packed);
    upload(d_sw, w_scales);
    upload(d_sumw, w_code_sums);

    // 1. Activations: per token, asymmetric INT4 (u4 codes, fp32 scale and zero).
    using Quantize = oq::cuda::device::QuantizePerToken<__nv_bfloat16>;
    // A general R: X·R on tensor cores, R in two bf16 terms, two warp groups.
    using QuantizeRotated = oq::cuda::device::QuantizePerTokenTensorOp<__nv_bfloat16, 128, 2, 2>;
    Quantize::Params q;
    q.x = d_x.ptr;
    q.rows = m;
    q.cols = k;
    q.ld_x = k;
    q.codes = d_codes.ptr;
    q.ld_codes = k / 2;
    q.scales = d_sa.ptr;
    q.zeros = d_za.ptr;
    q.code_sums = d_suma.ptr;
    q.bits = 4;
    q.symmetric = false;
    q.hadamard_block = rotation.hadamard_block;  // 0: none; b: x·(H_b/√b) per block, fused
    if (!rotation.matrix.empty()) {
      q.rotation = d_r.ptr;
      q.block_size = 128;
    }
    const bool tensor_op = q.rotation != nullptr;
    run.quantize = tensor_op ? "QuantizePerTokenTensorOp" : "QuantizePerToken";

    // 2. The GEMM: u4 activations × s4 weights; the epilogue subtracts
    //    z_a·Σ_k qw (sum_w) because the activations are asymmetric.
    oq::cuda::kernel::GemmW4A4Params<float> g;
    g.a = d_codes.ptr;
    g.ld_a = k / 2;
    g.a_signed = false;
    g.w = d_w.ptr;
    g.ld_w = k / 2;
    g.w_signed = true;
    g.m = m;
    g.n = n;
    g.k = k;
    g.scale_a = d_sa.ptr;
    g.zero_a = d_za.ptr;
    g.sum_w = d_sumw.ptr;
    g.scale_w = d_sw.ptr;
    g.y = d_y.ptr;
    g.ld_y = n;
    // The library's choice of W4A4 kernel for this device and these
    // arguments (wgmma on sm_90a, the mma.sync pipeline elsewhere).
    using Gemm = oq::cuda::device::GemmW4A4Dispatch<float>;
    oq::cuda::device::W4A4Kernel kernel{};
    check(Gemm::choose(g, kernel));
    run.gemm = oq::cuda::device::to_string(kernel);

    // The checks once, when the layer is set up; each forward only launches.
    Quantize quantize;
    QuantizeRotated quantize_rotated;
    Gemm gemm;
    check(tensor_op ? quantize_rotated.initialize(q) : quantize.initialize(q));
    check(gemm.initialize(g));
    auto forward = [&] {
      check(tensor_op ? quantize_rotated.run() : quantize.run());
      check(gemm.run());
    };

    forward();  // warm-up: module load
    check(cudaDeviceSynchronize(), "warm-up");
    const Event start, stop;
    check(cudaEventRecord(start.event), "cudaEventRecord");
    forward();
    check(cudaEventRecord(stop.event), "cudaEventRecord");
    check(cudaEventSynchronize(stop.event), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&run.milliseconds, start.event, stop.event), "cudaEventElapsedTime");

    run.y.resize(static_cast<std::size_t>(m * n));
    check(cudaMemcpy(run.y.data(), d_y.ptr, run.y.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    run.ran = true;
  } catch (const std::exception& e) {
    run.why = e.what();
  }
  return run;
}

}  // namespace example
