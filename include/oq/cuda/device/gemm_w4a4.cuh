// oq/cuda/device/gemm_w4a4.cuh: host launcher of the W4A4 GEMM
// (kernel/gemm_w4a4.cuh).
//
//   using Gemm = oq::cuda::device::GemmW4A4<__nv_bfloat16>;
//   Gemm::Params p;
//   p.a = d_qa; p.ld_a = k / 2; p.a_signed = false;          // from QuantizePerToken
//   p.w = d_qw; p.ld_w = k / 2; p.w_signed = true;           // symmetric per-channel weights
//   p.m = m; p.n = n; p.k = k;
//   p.scale_a = d_sa; p.zero_a = d_za; p.sum_w = d_wsums;    // asymmetric activations need Σ_k qw
//   p.scale_w = d_sw;
//   p.y = d_y; p.ld_y = n;
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// The third template argument picks the tensor-core path (kernel::W4A4Mma):
// the default, kAuto, is native INT4 MMA on sm_80..89 and INT4 widened to the
// s8 MMA on sm_90, which has no INT4 tensor cores.
//
// Requirements (can_implement explains a failure): K a multiple of 32; ld_a,
// ld_w even and at least K/2 bytes; a and w 2-byte aligned; y needs both
// scales; zero_w needs sum_a and zero_a needs sum_w; compute capability 8.0+.
// The launcher skeleton (check_arguments, can_implement, run, and
// initialize + run(stream) to check once and launch many times) is
// device/launcher.cuh's.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a4.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class ElementOut, int kWarpsN = 4, kernel::W4A4Mma kMma = kernel::W4A4Mma::kAuto>
class GemmW4A4 : public Launcher<GemmW4A4<ElementOut, kWarpsN, kMma>, kernel::GemmW4A4Params<ElementOut>> {
 public:
  using Kernel = kernel::GemmW4A4<ElementOut, kWarpsN, kMma>;
  using Params = typename Kernel::Params;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "GemmW4A4";

  /// The W4A4 argument checks every W4A4 launcher starts with, messages
  /// prefixed with `who`.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.m < 0 || p.n < 0 || p.k <= 0)
      return bad(Status::kInvalidShape, "need m >= 0, n >= 0, k > 0, got m = " + std::to_string(p.m) +
                                            ", n = " + std::to_string(p.n) + ", k = " + std::to_string(p.k));
    if (p.k % 32 != 0) return bad(Status::kInvalidShape, "k must be a multiple of 32, got " + std::to_string(p.k));
    if (p.ld_a < p.k / 2 || p.ld_a % 2 != 0)
      return bad(Status::kMisaligned, "ld_a must be even and >= k/2 bytes, got " + std::to_string(p.ld_a));
    if (p.ld_w < p.k / 2 || p.ld_w % 2 != 0)
      return bad(Status::kMisaligned, "ld_w must be even and >= k/2 bytes, got " + std::to_string(p.ld_w));
    if ((p.m + Kernel::kTileM - 1) / Kernel::kTileM > 65535)
      return bad(Status::kInvalidShape, "m must be at most " + std::to_string(65535 * Kernel::kTileM));
    if (p.acc == nullptr && p.y == nullptr) return bad(Status::kInvalidArgument, "acc or y must be given");
    if (p.acc != nullptr && p.ld_acc < p.n) return bad(Status::kInvalidShape, "ld_acc must be >= n, got " + std::to_string(p.ld_acc));
    if (p.y != nullptr) {
      if (p.ld_y < p.n) return bad(Status::kInvalidShape, "ld_y must be >= n, got " + std::to_string(p.ld_y));
      if (p.scale_a == nullptr || p.scale_w == nullptr)
        return bad(Status::kInvalidArgument, "y needs scale_a and scale_w");
      if (p.zero_w != nullptr && p.sum_a == nullptr)
        return bad(Status::kInvalidArgument, "zero_w (asymmetric weights) needs sum_a, the per-token code sums");
      if (p.zero_a != nullptr && p.sum_w == nullptr)
        return bad(Status::kInvalidArgument, "zero_a (asymmetric activations) needs sum_w, the per-channel code sums");
    }
    if (p.m > 0 && p.n > 0) {
      if (p.a == nullptr || p.w == nullptr) return bad(Status::kInvalidArgument, "a and w must not be null");
      if (reinterpret_cast<std::uintptr_t>(p.a) % 2 != 0 || reinterpret_cast<std::uintptr_t>(p.w) % 2 != 0)
        return bad(Status::kMisaligned, "a and w must be 2-byte aligned");
    }
    return Report::success();
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((p.n + Kernel::kTileN - 1) / Kernel::kTileN),
                    static_cast<unsigned>((p.m + Kernel::kTileM - 1) / Kernel::kTileM));
    return checked_launch(
        [&] { kernel::gemm_w4a4_kernel<ElementOut, kWarpsN, kMma><<<grid, Kernel::kThreads, 0, stream>>>(p); });
  }
};

}  // namespace oq::cuda::device
