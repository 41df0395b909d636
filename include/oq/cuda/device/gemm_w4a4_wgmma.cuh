// oq/cuda/device/gemm_w4a4_wgmma.cuh: host launcher of the Hopper W4A4 GEMM
// (kernel/gemm_w4a4_wgmma.cuh: INT4 widened to s8 in shared memory, wgmma).
// Same Params and results as device::GemmW4A4 and GemmW4A4Multistage.
//
//   using Gemm = oq::cuda::device::GemmW4A4Wgmma<__nv_bfloat16>;
//   Gemm::Params p;                  // filled exactly as for GemmW4A4
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// Requirements (can_implement explains a failure): those of
// GemmW4A4Multistage (16-byte aligned operands and strides, K ≤
// kernel::max_widened_k: the codes are always widened), a device of
// compute capability exactly 9.0 (wgmma is an sm_90a feature, not forward
// compatible), and a binary built for sm_90a (CMake: CUDA_ARCHITECTURES 90a;
// oq's default). A binary without sm_90a code traps in the kernel instead of
// returning unwritten outputs.
#pragma once

#include <oq/cuda/device/gemm_w4a4_multistage.cuh>
#include <oq/cuda/kernel/gemm_w4a4_wgmma.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class ElementOut, int kStages = 3, int kS8Buffers = 2>
class GemmW4A4Wgmma {
 public:
  using Params = kernel::GemmW4A4Params<ElementOut>;
  template <bool kASigned, bool kWSigned>
  using Kernel = kernel::GemmW4A4Wgmma<ElementOut, kASigned, kWSigned, kStages, kS8Buffers>;
  static constexpr int kSmemBytes = Kernel<true, true>::kSmemBytes;

  /// The argument checks alone: no CUDA call, usable without a GPU.
  static Report check_arguments(const Params& p) {
    using Multistage = GemmW4A4Multistage<ElementOut, kernel::W4A4Mma::kAuto, kStages>;
    Report r = Multistage::check_arguments(p);
    if (!r.ok()) {
      r.message.replace(0, std::string("GemmW4A4Multistage").size(), "GemmW4A4Wgmma");
      return r;
    }
    return Multistage::check_widened_k(p, "GemmW4A4Wgmma");  // always widened
  }

  /// Arguments, then the current device: compute capability 9.0, shared memory.
  static Report can_implement(const Params& p) {
    if (Report r = check_arguments(p); !r.ok()) return r;
    int major = 0, minor = 0;
    if (Report r = compute_capability(major, minor); !r.ok()) return r;
    if (major != 9 || minor != 0)
      return Report::failure(Status::kUnsupportedDevice,
                             "GemmW4A4Wgmma: needs compute capability 9.0 (sm_90a: wgmma), got " +
                                 std::to_string(major) + "." + std::to_string(minor));
    return require_shared_memory(kSmemBytes, "GemmW4A4Wgmma", "its pipeline stages and widened buffers");
  }

  static Report run(const Params& p, cudaStream_t stream = nullptr) {
    if (Report r = can_implement(p); !r.ok()) return r;
    if (p.m == 0 || p.n == 0) return Report::success();
    return detail::dispatch_w4a4_signedness(p, [&]<bool kASigned, bool kWSigned>() {
      return detail::launch_w4a4_tiled<Kernel<kASigned, kWSigned>>(
          &kernel::gemm_w4a4_wgmma_kernel<ElementOut, kASigned, kWSigned, kStages, kS8Buffers>, p, stream);
    });
  }
};

}  // namespace oq::cuda::device
