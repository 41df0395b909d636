// oq/cuda/device/gemm_w4a4_multistage.cuh: host launcher of the tiled,
// pipelined W4A4 GEMM (kernel/gemm_w4a4_multistage.cuh). Same Params and
// results as device::GemmW4A4; stricter alignment, much more reuse.
//
//   using Gemm = oq::cuda::device::GemmW4A4Multistage<__nv_bfloat16>;
//   Gemm::Params p;                  // filled exactly as for GemmW4A4
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// Requirements (can_implement explains a failure): those of GemmW4A4, plus
// a and w 16-byte aligned with ld_a and ld_w multiples of 16 bytes (cp.async
// moves 16 bytes), K ≤ kernel::max_widened_k (131,071 for s4 × s4) where the
// codes are widened (kWidenToS8, or kAuto on sm_90), and kSmemBytes of
// shared memory per CTA (61,440 with the default 3 stages; opt-in above
// 48 KB, which sm_80 and newer allow).
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/gemm_w4a4.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a4_multistage.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

namespace detail {

/// Launches tiled kernel K (K::kTileM × K::kTileN outputs per CTA, K::kThreads
/// threads, K::kSmemBytes of dynamic shared memory) over p's M × N.
template <class K, class Params>
Report launch_w4a4_tiled(void (*entry)(Params), const Params& p, cudaStream_t stream) {
  if (Report r = allow_dynamic_shared_memory(entry, K::kSmemBytes); !r.ok()) return r;
  const dim3 grid(static_cast<unsigned>((p.n + K::kTileN - 1) / K::kTileN),
                  static_cast<unsigned>((p.m + K::kTileM - 1) / K::kTileM));
  return checked_launch([&] { entry<<<grid, K::kThreads, K::kSmemBytes, stream>>>(p); });
}

}  // namespace detail

template <class ElementOut, kernel::W4A4Mma kMma = kernel::W4A4Mma::kAuto, int kStages = 3>
class GemmW4A4Multistage
    : public Launcher<GemmW4A4Multistage<ElementOut, kMma, kStages>, kernel::GemmW4A4Params<ElementOut>> {
 public:
  using Params = kernel::GemmW4A4Params<ElementOut>;
  template <bool kASigned, bool kWSigned>
  using Kernel = kernel::GemmW4A4Multistage<ElementOut, kASigned, kWSigned, kMma, kStages>;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "GemmW4A4Multistage";
  static constexpr int kSmemBytes = Kernel<true, true>::kSmemBytes;
  static constexpr int kTileM = Kernel<true, true>::kTileM;
  static constexpr int kTileN = Kernel<true, true>::kTileN;

  /// GemmW4A4's checks, then 16-byte alignment (and, kWidenToS8, the bound on K).
  static Report check_arguments_as(const Params& p, const std::string& who) {
    if (Report r = GemmW4A4<ElementOut>::check_arguments_as(p, who); !r.ok()) return r;
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.ld_a % 16 != 0 || p.ld_w % 16 != 0)
      return bad(Status::kMisaligned, "ld_a and ld_w must be multiples of 16 bytes, got " + std::to_string(p.ld_a) +
                                          " and " + std::to_string(p.ld_w));
    if (p.m > 0 && p.n > 0 &&
        (reinterpret_cast<std::uintptr_t>(p.a) % 16 != 0 || reinterpret_cast<std::uintptr_t>(p.w) % 16 != 0))
      return bad(Status::kMisaligned, "a and w must be 16-byte aligned");
    if constexpr (kMma == kernel::W4A4Mma::kWidenToS8)
      if (Report r = check_widened_k(p, who); !r.ok()) return r;
    return Report::success();
  }

  /// The widened path's bound on K (kernel::max_widened_k: int32 sums of
  /// codes scaled by 16 per signed operand), named for `who`.
  static Report check_widened_k(const Params& p, const std::string& who) {
    const std::int64_t limit = kernel::max_widened_k(p.a_signed, p.w_signed);
    if (p.k > limit)
      return Report::failure(Status::kInvalidShape, who + ": k must be <= " + std::to_string(limit) +
                                                        " for these signednesses on the widened (sm_90) path, got " +
                                                        std::to_string(p.k));
    return Report::success();
  }

  /// With kAuto, the bound on K where the device widens (kernel::w4a4_native_s4);
  /// then the shared memory of the pipeline.
  static Report check_device(const Params& p, const DeviceInfo& info) {
    if constexpr (kMma == kernel::W4A4Mma::kAuto) {
      if (!kernel::w4a4_native_s4(kMma, info.sm()))
        if (Report r = check_widened_k(p, kName); !r.ok()) return r;
    }
    return require_shared_memory(info, kSmemBytes, kName, "its pipeline stages");
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    return dispatch_bool(p.a_signed, [&]<bool kASigned>() {
      return dispatch_bool(p.w_signed, [&]<bool kWSigned>() {
        return detail::launch_w4a4_tiled<Kernel<kASigned, kWSigned>>(
            &kernel::gemm_w4a4_multistage_kernel<ElementOut, kASigned, kWSigned, kMma, kStages>, p, stream);
      });
    });
  }
};

}  // namespace oq::cuda::device
