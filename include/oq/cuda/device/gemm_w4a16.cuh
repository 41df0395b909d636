// oq/cuda/device/gemm_w4a16.cuh: host launcher of the W4A16 GEMM
// (kernel/gemm_w4a16.cuh).
//
//   using Gemm = oq::cuda::device::GemmW4A16<__half, __half>;
//   Gemm::Params p;
//   p.a = d_a; p.ld_a = k; p.w = d_w; p.ld_w = k / 2;
//   p.scales = d_s; p.zeros = d_z; p.group_size = 128;
//   p.y = d_y; p.ld_y = n; p.m = tokens; p.n = n; p.k = k;
//   if (auto r = Gemm::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// Requirements (can_implement explains a failure): K a multiple of 8;
// group_size a multiple of 8 dividing K; a 16-byte aligned with ld_a a
// multiple of 8 elements; w 4-byte aligned with ld_w a multiple of 4 bytes;
// compute capability 8.0 or newer. Faster (16-byte weight loads) when K and
// group_size are multiples of 32 and w and ld_w are 16-byte aligned. The
// launcher skeleton (check_arguments, can_implement, run, initialize +
// run(stream)) is device/launcher.cuh's.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/gemm_w4a16.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <limits>
#include <string>

namespace oq::cuda::device {

/// kTileM: tokens per CTA. 0 (the default) picks 1, 4 or 16 by M at run time:
/// decode (M = 1) keeps no idle accumulators, and M = 16 reads each weight
/// once. Larger tiles run out of registers (32 tokens: 255 and spills), so
/// M = 64 reads the weights 4 times — from L2 where they fit; the CUDA-core
/// FMAs bound that case anyway: GemmW4A16TensorOp is the launcher for it.
template <class ElementA, class ElementOut, int kTileM = 0, int kWarps = 4>
class GemmW4A16
    : public Launcher<GemmW4A16<ElementA, ElementOut, kTileM, kWarps>, kernel::GemmW4A16Params<ElementA, ElementOut>> {
 public:
  /// The kernel for u4 (asymmetric) or s4 (symmetric) codes and a token tile;
  /// run() picks by p.symmetric and p.m.
  template <bool kSymmetric, int kTile = (kTileM > 0 ? kTileM : 16)>
  using KernelFor = kernel::GemmW4A16<ElementA, ElementOut, kSymmetric, kTile, kWarps>;
  using Kernel = KernelFor<false>;
  using Params = typename Kernel::Params;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "GemmW4A16";

  /// The token tile run() uses for M = m.
  static constexpr int tile_for(std::int64_t m) {
    if constexpr (kTileM > 0) {
      return kTileM;
    } else {
      return m <= 1 ? 1 : m <= 4 ? 4 : 16;
    }
  }

  static Report check_arguments_as(const Params& p, const std::string& who) {
    return check_arguments_for_tile(p, who, tile_for(p.m));
  }

  /// The W4A16 argument checks with the grid's token tile given: launchers
  /// that reuse them with other tiles (GemmW4A16TensorOp) pass their own.
  static Report check_arguments_for_tile(const Params& p, const std::string& who, int tile_m) {
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.m < 0 || p.n < 0 || p.k <= 0)
      return bad(Status::kInvalidShape, "need m >= 0, n >= 0, k > 0, got m = " + std::to_string(p.m) +
                                            ", n = " + std::to_string(p.n) + ", k = " + std::to_string(p.k));
    if (p.k % 8 != 0) return bad(Status::kInvalidShape, "k must be a multiple of 8, got " + std::to_string(p.k));
    if (p.group_size <= 0 || p.group_size % 8 != 0 || p.k % p.group_size != 0)
      return bad(Status::kInvalidShape, "group_size must be a multiple of 8 dividing k (" + std::to_string(p.k) +
                                            "), got " + std::to_string(p.group_size));
    if (p.ld_a < p.k || p.ld_a % 8 != 0)
      return bad(Status::kMisaligned, "ld_a must be >= k and a multiple of 8, got " + std::to_string(p.ld_a));
    if (p.ld_w < p.k / 2 || p.ld_w % 4 != 0)
      return bad(Status::kMisaligned, "ld_w must be >= k/2 bytes and a multiple of 4, got " + std::to_string(p.ld_w));
    if (p.ld_y < p.n) return bad(Status::kInvalidShape, "ld_y must be >= n, got " + std::to_string(p.ld_y));
    if (p.n > std::int64_t(std::numeric_limits<int>::max()) * kWarps || (p.m + tile_m - 1) / tile_m > 65535)
      return bad(Status::kInvalidShape, "m or n too large for the grid");
    if (p.m > 0 && p.n > 0) {
      if (p.a == nullptr || p.w == nullptr || p.scales == nullptr || p.y == nullptr || (!p.symmetric && p.zeros == nullptr))
        return bad(Status::kInvalidArgument, "a, w, scales, y (and zeros when asymmetric) must not be null");
      if (reinterpret_cast<std::uintptr_t>(p.a) % 16 != 0)
        return bad(Status::kMisaligned, "a must be 16-byte aligned");
      if (reinterpret_cast<std::uintptr_t>(p.w) % 4 != 0) return bad(Status::kMisaligned, "w must be 4-byte aligned");
    }
    return Report::success();
  }

  static bool empty(const Params& p) { return p.m == 0 || p.n == 0; }

  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    if constexpr (kTileM > 0) {
      return launch_tile<kTileM>(p, stream);
    } else {
      return dispatch<1, 4, 16>(tile_for(p.m), [&]<int kTile>() { return launch_tile<kTile>(p, stream); });
    }
  }

 private:
  template <int kTile>
  static Report launch_tile(const Params& p, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((p.n + kWarps - 1) / kWarps), static_cast<unsigned>((p.m + kTile - 1) / kTile));
    return checked_launch([&] {
      dispatch_bool(p.symmetric, [&]<bool kSymmetric>() {
        kernel::gemm_w4a16_kernel<ElementA, ElementOut, kSymmetric, kTile, kWarps><<<grid, 32 * kWarps, 0, stream>>>(p);
      });
    });
  }
};

}  // namespace oq::cuda::device
