// oq/cuda/device/gemm_w4a16_tensorop.cuh: host launcher of the tensor-core
// W4A16 GEMM (kernel/gemm_w4a16_tensorop.cuh). Same Params and result as
// device::GemmW4A16, to fp32 accumulation error where the zero points are
// integers of moderate size (q − z exact in 16 bits, the scale applied per
// group); otherwise ŵ is rounded once to the activations' 16-bit type before
// the product (tensor cores take 16-bit operands).
//
//   using Gemm = oq::cuda::device::GemmW4A16TensorOp<__nv_bfloat16, __nv_bfloat16>;
//   Gemm::Params p;                  // filled exactly as for GemmW4A16
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// Requirements (can_implement explains a failure): those of GemmW4A16, plus
// K and group_size multiples of 16, and w 8-byte aligned with ld_w a
// multiple of 8 bytes.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/gemm_w4a16.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a16_tensorop.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class ElementA, class ElementOut>
class GemmW4A16TensorOp
    : public Launcher<GemmW4A16TensorOp<ElementA, ElementOut>, kernel::GemmW4A16Params<ElementA, ElementOut>> {
 public:
  template <bool kSymmetric, int kTileM = 64>
  using KernelFor = kernel::GemmW4A16TensorOp<ElementA, ElementOut, kSymmetric, kTileM>;
  using Kernel = KernelFor<false>;  // for kTileN, kThreads and Params; the token tile is tile_m_for(M)
  using Params = typename Kernel::Params;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "GemmW4A16TensorOp";

  /// The token tile run() takes for M tokens: the smallest of 16, 32, 64
  /// that covers M (fewer accumulator registers, more CTAs per SM), else 64.
  static constexpr int tile_m_for(std::int64_t m) { return m <= 16 ? 16 : m <= 32 ? 32 : 64; }

  /// GemmW4A16's checks (with this launcher's token tile), then K and groups
  /// of 16 and 8-byte weight rows.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    if (Report r = GemmW4A16<ElementA, ElementOut>::check_arguments_for_tile(p, who, tile_m_for(p.m)); !r.ok())
      return r;
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.k % 16 != 0 || p.group_size % 16 != 0)
      return bad(Status::kInvalidShape, "k and group_size must be multiples of 16, got " + std::to_string(p.k) +
                                            " and " + std::to_string(p.group_size));
    if (p.ld_w % 8 != 0)
      return bad(Status::kMisaligned, "ld_w must be a multiple of 8 bytes, got " + std::to_string(p.ld_w));
    if (p.m > 0 && p.n > 0 && reinterpret_cast<std::uintptr_t>(p.w) % 8 != 0)
      return bad(Status::kMisaligned, "w must be 8-byte aligned");
    return Report::success();
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    return dispatch<16, 32, 64>(tile_m_for(p.m), [&]<int kTileM>() {
      const dim3 grid(static_cast<unsigned>((p.n + Kernel::kTileN - 1) / Kernel::kTileN),
                      static_cast<unsigned>((p.m + kTileM - 1) / kTileM));
      return checked_launch([&] {
        dispatch_bool(p.symmetric, [&]<bool kSymmetric>() {
          kernel::gemm_w4a16_tensorop_kernel<ElementA, ElementOut, kSymmetric, kTileM>
              <<<grid, Kernel::kThreads, 0, stream>>>(p);
        });
      });
    });
  }
};

}  // namespace oq::cuda::device
