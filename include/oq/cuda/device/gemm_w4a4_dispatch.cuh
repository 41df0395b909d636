// oq/cuda/device/gemm_w4a4_dispatch.cuh: the W4A4 GEMM on whichever of oq's
// W4A4 kernels suits the current device and the arguments — what an engine
// calls when it does not want to choose itself (example 04 does).
//
//   using Gemm = oq::cuda::device::GemmW4A4Dispatch<__nv_bfloat16>;
//   Gemm::Params p;                  // filled exactly as for GemmW4A4
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//   oq::cuda::device::W4A4Kernel kernel;
//   Gemm::choose(p, kernel);         // which one run() takes here (or on a made-up DeviceInfo)
//
// The choice, from the device's cached properties (device/device_info.cuh)
// and the launchers' own can_implement, in this order:
//   1. GemmW4A4Wgmma on compute capability 9.0 (sm_90a's wgmma), where its
//      arguments pass (16-byte aligned operands and strides, K within the
//      widened bound) and its shared memory fits;
//   2. GemmW4A4Multistage (kAuto: native INT4 mma.sync before sm_90, widened
//      from sm_90 on) where its arguments and shared memory pass;
//   3. GemmW4A4, the simple kernel, which takes what the tiled ones refuse
//      (2-byte aligned operands, any K that is a multiple of 32).
// The order is the kernels' design (tiles staged through shared memory
// reuse every operand byte 128 times; the simple kernel reads its operands
// from global memory per warp); it is not yet a measured ranking — timings
// on a GPU are issue 6's, and the order here changes with them. A binary
// built without sm_90a code must not run on a 9.0 device through this
// dispatcher: the wgmma kernel would trap (arch/arch.cuh's policy).
#pragma once

#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/gemm_w4a4.cuh>
#include <oq/cuda/device/gemm_w4a4_multistage.cuh>
#include <oq/cuda/device/gemm_w4a4_wgmma.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a4_params.cuh>
#include <oq/cuda/status.cuh>

#include <string>

namespace oq::cuda::device {

/// The W4A4 kernels GemmW4A4Dispatch chooses among.
enum class W4A4Kernel {
  kSimple,      ///< GemmW4A4
  kMultistage,  ///< GemmW4A4Multistage
  kWgmma,       ///< GemmW4A4Wgmma
};

constexpr const char* to_string(W4A4Kernel kernel) noexcept {
  switch (kernel) {
    case W4A4Kernel::kSimple: return "GemmW4A4";
    case W4A4Kernel::kMultistage: return "GemmW4A4Multistage";
    case W4A4Kernel::kWgmma: return "GemmW4A4Wgmma";
  }
  return "unknown";
}

template <class ElementOut>
class GemmW4A4Dispatch : public Launcher<GemmW4A4Dispatch<ElementOut>, kernel::GemmW4A4Params<ElementOut>> {
 public:
  using Simple = GemmW4A4<ElementOut>;
  using Multistage = GemmW4A4Multistage<ElementOut>;
  using Wgmma = GemmW4A4Wgmma<ElementOut>;
  using Params = kernel::GemmW4A4Params<ElementOut>;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "GemmW4A4Dispatch";

  /// What every candidate needs: the simple kernel's checks.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    return Simple::check_arguments_as(p, who);
  }

  /// The kernel run() takes for p on a device like `info` (see the file
  /// comment), or why none can run (this launcher's can_implement). Makes no
  /// CUDA call: a made-up DeviceInfo answers what a device would get.
  static Report choose(const Params& p, const DeviceInfo& info, W4A4Kernel& kernel) {
    if (Report r = GemmW4A4Dispatch::can_implement(p, info); !r.ok()) return r;
    kernel = rank(p, info);
    return Report::success();
  }
  /// The same on the current device.
  static Report choose(const Params& p, W4A4Kernel& kernel) {
    DeviceInfo info;
    if (Report r = current_device_info(info); !r.ok()) return r;
    return choose(p, info, kernel);
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  /// The launch of the chosen kernel (the simple kernel's checks, which every
  /// candidate includes, are done).
  static Report launch(const Params& p, const DeviceInfo& info, cudaStream_t stream) {
    switch (rank(p, info)) {
      case W4A4Kernel::kWgmma: return Wgmma::launch(p, info, stream);
      case W4A4Kernel::kMultistage: return Multistage::launch(p, info, stream);
      default: return Simple::launch(p, info, stream);
    }
  }

 private:
  // The first candidate, in the file comment's order, that can run p on
  // `info`; the simple kernel (whose checks the caller made) otherwise.
  static W4A4Kernel rank(const Params& p, const DeviceInfo& info) {
    if (Wgmma::can_implement(p, info).ok()) return W4A4Kernel::kWgmma;
    if (Multistage::can_implement(p, info).ok()) return W4A4Kernel::kMultistage;
    return W4A4Kernel::kSimple;
  }
};

}  // namespace oq::cuda::device
