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

#include <oq/cuda/device/gemm_w4a16.cuh>
#include <oq/cuda/kernel/gemm_w4a16_tensorop.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class ElementA, class ElementOut>
class GemmW4A16TensorOp {
 public:
  template <bool kSymmetric, int kTileM = 64>
  using KernelFor = kernel::GemmW4A16TensorOp<ElementA, ElementOut, kSymmetric, kTileM>;
  using Kernel = KernelFor<false>;  // for kTileN, kThreads and Params; the token tile is tile_m_for(M)
  using Params = typename Kernel::Params;

  /// The token tile run() takes for M tokens: the smallest of 16, 32, 64
  /// that covers M (fewer accumulator registers, more CTAs per SM), else 64.
  static constexpr int tile_m_for(std::int64_t m) { return m <= 16 ? 16 : m <= 32 ? 32 : 64; }

  /// The argument checks alone: no CUDA call, usable without a GPU.
  static Report check_arguments(const Params& p) {
    if (Report r = GemmW4A16<ElementA, ElementOut>::check_arguments_for_tile(p, tile_m_for(p.m)); !r.ok()) {
      r.message.replace(0, std::string("GemmW4A16").size(), "GemmW4A16TensorOp");
      return r;
    }
    auto bad = [](Status s, const std::string& why) { return Report::failure(s, "GemmW4A16TensorOp: " + why); };
    if (p.k % 16 != 0 || p.group_size % 16 != 0)
      return bad(Status::kInvalidShape, "k and group_size must be multiples of 16, got " + std::to_string(p.k) +
                                            " and " + std::to_string(p.group_size));
    if (p.ld_w % 8 != 0)
      return bad(Status::kMisaligned, "ld_w must be a multiple of 8 bytes, got " + std::to_string(p.ld_w));
    if (p.m > 0 && p.n > 0 && reinterpret_cast<std::uintptr_t>(p.w) % 8 != 0)
      return bad(Status::kMisaligned, "w must be 8-byte aligned");
    return Report::success();
  }

  static Report can_implement(const Params& p) {
    if (Report r = check_arguments(p); !r.ok()) return r;
    return require_compute_capability(8, "GemmW4A16TensorOp");
  }

  static Report run(const Params& p, cudaStream_t stream = nullptr) {
    if (Report r = can_implement(p); !r.ok()) return r;
    if (p.m == 0 || p.n == 0) return Report::success();
    switch (tile_m_for(p.m)) {
      case 16: return launch<16>(p, stream);
      case 32: return launch<32>(p, stream);
      default: return launch<64>(p, stream);
    }
  }

 private:
  template <int kTileM>
  static Report launch(const Params& p, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((p.n + Kernel::kTileN - 1) / Kernel::kTileN),
                    static_cast<unsigned>((p.m + kTileM - 1) / kTileM));
    return checked_launch([&] {
      if (p.symmetric) {
        kernel::gemm_w4a16_tensorop_kernel<ElementA, ElementOut, true, kTileM><<<grid, Kernel::kThreads, 0, stream>>>(p);
      } else {
        kernel::gemm_w4a16_tensorop_kernel<ElementA, ElementOut, false, kTileM><<<grid, Kernel::kThreads, 0, stream>>>(p);
      }
    });
  }
};

}  // namespace oq::cuda::device
