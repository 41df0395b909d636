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
// compute capability exactly 9.0 (arch::Sm90a: wgmma is not forward
// compatible), and a binary built for sm_90a (CMake: CUDA_ARCHITECTURES 90a;
// oq's default). A binary without sm_90a code traps in the kernel instead of
// returning unwritten outputs.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/gemm_w4a4_multistage.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a4_wgmma.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class ElementOut, int kStages = 3, int kS8Buffers = 2>
class GemmW4A4Wgmma
    : public Launcher<GemmW4A4Wgmma<ElementOut, kStages, kS8Buffers>, kernel::GemmW4A4Params<ElementOut>> {
 public:
  using Params = kernel::GemmW4A4Params<ElementOut>;
  template <bool kASigned, bool kWSigned>
  using Kernel = kernel::GemmW4A4Wgmma<ElementOut, kASigned, kWSigned, kStages, kS8Buffers>;
  using Arch = arch::Sm90a;
  static constexpr const char* kName = "GemmW4A4Wgmma";
  static constexpr int kSmemBytes = Kernel<true, true>::kSmemBytes;

  /// GemmW4A4Multistage's checks, and the bound on K: the codes are always widened.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    using Multistage = GemmW4A4Multistage<ElementOut, kernel::W4A4Mma::kAuto, kStages>;
    if (Report r = Multistage::check_arguments_as(p, who); !r.ok()) return r;
    return Multistage::check_widened_k(p, who);
  }

  static Report check_device(const Params&, const DeviceInfo& info) {
    return require_shared_memory(info, kSmemBytes, kName, "its pipeline stages and widened buffers");
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    return dispatch_bool(p.a_signed, [&]<bool kASigned>() {
      return dispatch_bool(p.w_signed, [&]<bool kWSigned>() {
        return detail::launch_w4a4_tiled<Kernel<kASigned, kWSigned>>(
            &kernel::gemm_w4a4_wgmma_kernel<ElementOut, kASigned, kWSigned, kStages, kS8Buffers>, p, stream);
      });
    });
  }
};

}  // namespace oq::cuda::device
