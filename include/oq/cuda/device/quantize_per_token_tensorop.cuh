// oq/cuda/device/quantize_per_token_tensorop.cuh: host launcher of the
// per-token quantization with the block rotation on tensor cores
// (kernel/quantize_per_token_tensorop.cuh). Same Params and outputs as
// device::QuantizePerToken with a rotation; X·R is carried to ~2⁻¹⁷ with
// kTerms = 2, or is X·round(R) with kTerms = 1 (see the kernel header).
//
//   using Quantize = oq::cuda::device::QuantizePerTokenTensorOp<__nv_bfloat16>;  // b = 128, kTerms = 2
//   Quantize::Params p;               // filled as for QuantizePerToken
//   p.rotation = d_r; p.block_size = 128;
//   if (auto r = Quantize::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// Requirements (check_arguments names the failing one): those of
// QuantizePerToken, plus a rotation with block_size = kBlock and no
// hadamard_block; x 16-byte aligned with ld_x a multiple of 8; codes 4-byte
// aligned with ld_codes a multiple of 4. can_implement adds compute
// capability 8.0 and the shared memory of the passes:
//   kResidentY  8 rows of Y in fp32 plus a ring of X: 32·K bytes + 20 KiB
//               at b = 128 (K ≤ 6,528 on H100/H200; with kRingSlots = 4,
//               10 KiB and K ≤ 6,784); one tensor pass. The ring is larger
//               at smaller blocks (24 KiB at b = 64 with one group): K ≤ ~6,400
//   kResidentYPair  (sm_90) kResidentY with each row split over a cluster of
//               two CTAs that exchange the min/max and code sums through
//               distributed shared memory: K ≤ 13,056; one tensor pass
//   kRecompute  8 rows of X: 16·K bytes (K ≤ ~14,200); Y computed twice
// run(p, stream) takes the first of these that fits (choose_passes);
// run(p, stream, passes) forces one (tests, benchmarks). The grid is
// persistent: as many CTAs as fit on the device at once, each looping over
// 8-token tiles. The launcher skeleton (check_arguments, can_implement, run,
// initialize + run(stream)) is device/launcher.cuh's.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/kernel/quantize_per_token_tensorop.cuh>
#include <oq/cuda/status.cuh>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace oq::cuda::device {

/// kRingSlots: kResidentY's ring depth, 0 for the kernel's choice (see
/// kernel::QuantizePerTokenTensorOp::kStages); benchmarks set it to compare.
template <class Element, int kBlock = 128, int kTerms = 2, int kGroups = 1, int kRingSlots = 0>
class QuantizePerTokenTensorOp
    : public Launcher<QuantizePerTokenTensorOp<Element, kBlock, kTerms, kGroups, kRingSlots>,
                      kernel::QuantizePerTokenParams<Element>> {
  using Base = Launcher<QuantizePerTokenTensorOp, kernel::QuantizePerTokenParams<Element>>;

 public:
  using Passes = kernel::RotationPasses;
  template <Passes kPasses>
  using KernelFor = kernel::QuantizePerTokenTensorOp<Element, kBlock, kTerms, kGroups, kPasses, kRingSlots>;
  using Params = typename KernelFor<Passes::kResidentY>::Params;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "QuantizePerTokenTensorOp";
  using Base::can_implement;
  using Base::run;

  /// A rotation of this instantiation's block, QuantizePerToken's checks,
  /// and the alignment of 16-byte rows and 32-bit code words.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.rotation == nullptr || p.block_size != kBlock)
      return bad(Status::kInvalidArgument, "needs a rotation with block_size " + std::to_string(kBlock) +
                                               " (this instantiation's kBlock), got block_size " +
                                               std::to_string(p.block_size) + (p.rotation ? "" : " and no rotation"));
    if (p.hadamard_block != 0)
      return bad(Status::kInvalidArgument, "hadamard_block is QuantizePerToken's fast path; give 0, got " +
                                               std::to_string(p.hadamard_block));
    if (p.cols % kBlock != 0)
      return bad(Status::kInvalidShape, "cols must be a multiple of block_size (" + std::to_string(kBlock) + "), got " +
                                            std::to_string(p.cols));
    if (Report r = QuantizePerToken<Element>::check_arguments_as(p, who); !r.ok()) return r;
    if (p.ld_x % 8 != 0)
      return bad(Status::kMisaligned, "ld_x must be a multiple of 8 elements (16-byte rows), got " + std::to_string(p.ld_x));
    if (p.ld_codes % 4 != 0)
      return bad(Status::kMisaligned, "ld_codes must be a multiple of 4 bytes, got " + std::to_string(p.ld_codes));
    if (p.rows > 0 && reinterpret_cast<std::uintptr_t>(p.x) % 16 != 0)
      return bad(Status::kMisaligned, "x must be 16-byte aligned");
    if (p.rows > 0 && reinterpret_cast<std::uintptr_t>(p.codes) % 4 != 0)
      return bad(Status::kMisaligned, "codes must be 4-byte aligned");
    return Report::success();
  }

  /// Shared memory per CTA (dynamic and static) for these arguments.
  static std::size_t shared_memory_bytes(const Params& p, Passes passes) {
    switch (passes) {
      case Passes::kResidentY: return bytes_of<Passes::kResidentY>(p);
      case Passes::kResidentYPair: return bytes_of<Passes::kResidentYPair>(p);
      default: return bytes_of<Passes::kRecompute>(p);
    }
  }

  /// What `passes` needs of a device like `info` beyond compute capability
  /// 8.0: its shared memory, and for kResidentYPair clusters (9.0) and a
  /// kernel image built for sm_90 or newer (a device that runs, say, the
  /// compute_89 PTX JIT-compiled would trap in the cluster instructions).
  static Report check_device_for(const Params& p, const DeviceInfo& info, Passes passes) {
    if (passes == Passes::kResidentYPair) {
      if (Report r = require_arch<arch::Sm90>(info, kName); !r.ok()) return r;
      int ptx_version = 0;
      if (Report r = pair_kernel_ptx_version(info, ptx_version); !r.ok()) return r;
      if (ptx_version < 90)
        return Report::failure(Status::kUnsupportedDevice,
                               std::string(kName) + ": kResidentYPair needs code built for sm_90 or newer (clusters); "
                               "this device runs code from PTX " + std::to_string(ptx_version));
    }
    return require_shared_memory(info, shared_memory_bytes(p, passes), kName,
                                 passes == Passes::kRecompute ? "the 8 rows of X"
                                 : passes == Passes::kResidentY
                                     ? "the 8 rows of Y = X·R (fp32) and the ring of X"
                                     : "half of the 8 rows of Y = X·R (fp32) and the ring of X");
  }
  /// For the passes run() can always fall back to (kRecompute needs the least memory).
  static Report check_device(const Params& p, const DeviceInfo& info) {
    return check_device_for(p, info, Passes::kRecompute);
  }

  /// Arguments, then a device like `info` (or the current one), for the given passes.
  static Report can_implement(const Params& p, const DeviceInfo& info, Passes passes) {
    if (Report r = Base::check_arguments(p); !r.ok()) return r;
    if (Report r = require_arch<Arch>(info, kName); !r.ok()) return r;
    return check_device_for(p, info, passes);
  }
  static Report can_implement(const Params& p, Passes passes) {
    DeviceInfo info;
    if (Report r = current_device_info(info); !r.ok()) return r;
    return can_implement(p, info, passes);
  }

  /// The passes run() takes on a device like `info` (arguments already
  /// checked): kResidentY where its shared memory fits, else kResidentYPair
  /// where that fits (sm_90), else kRecompute.
  static Passes choose_passes(const Params& p, const DeviceInfo& info) {
    if (check_device_for(p, info, Passes::kResidentY).ok()) return Passes::kResidentY;
    if (check_device_for(p, info, Passes::kResidentYPair).ok()) return Passes::kResidentYPair;
    return Passes::kRecompute;
  }
  /// The same on the current device (kRecompute where none can be asked).
  static Passes choose_passes(const Params& p) {
    DeviceInfo info;
    if (!current_device_info(info).ok()) return Passes::kRecompute;
    return choose_passes(p, info);
  }

  /// Forces `passes` (tests, benchmarks): checked once, then launched.
  static Report run(const Params& p, cudaStream_t stream, Passes passes) {
    DeviceInfo info;
    if (Report r = current_device_info(info); !r.ok()) return r;
    if (Report r = can_implement(p, info, passes); !r.ok()) return r;
    if (empty(p)) return Report::success();
    return launch_passes(p, info, stream, passes);
  }

  static bool empty(const Params& p) { return p.rows == 0; }

  /// run(p, stream)'s launch: the passes choose_passes takes.
  static Report launch(const Params& p, const DeviceInfo& info, cudaStream_t stream) {
    return launch_passes(p, info, stream, choose_passes(p, info));
  }

 private:
  template <Passes kPasses>
  static std::size_t bytes_of(const Params& p) {
    return KernelFor<kPasses>::dynamic_smem_bytes(p) + sizeof(typename KernelFor<kPasses>::SharedStorage);
  }

  /// The PTX version of the kResidentYPair kernel's image on info's device,
  /// asked once per device.
  static Report pair_kernel_ptx_version(const DeviceInfo& info, int& version) {
    static std::mutex mutex;
    static std::map<int, int> versions;
    const std::lock_guard<std::mutex> lock(mutex);
    if (auto it = versions.find(info.device); it != versions.end()) {
      version = it->second;
      return Report::success();
    }
    cudaFuncAttributes attributes{};
    OQ_CUDA_TRY(cudaFuncGetAttributes(&attributes, &kernel::quantize_per_token_tensorop_kernel<
                                                       Element, kBlock, kTerms, kGroups, Passes::kResidentYPair, kRingSlots>));
    version = versions[info.device] = attributes.ptxVersion;
    return Report::success();
  }

  static Report launch_passes(const Params& p, const DeviceInfo& info, cudaStream_t stream, Passes passes) {
    return dispatch<Passes::kResidentY, Passes::kResidentYPair, Passes::kRecompute>(
        passes, [&]<Passes kPasses>() { return launch_kernel<kPasses>(p, info, stream); });
  }

  template <Passes kPasses>
  static Report launch_kernel(const Params& p, const DeviceInfo& info, cudaStream_t stream) {
    using Kernel = KernelFor<kPasses>;
    const auto smem = static_cast<int>(Kernel::dynamic_smem_bytes(p));
    auto* entry = &kernel::quantize_per_token_tensorop_kernel<Element, kBlock, kTerms, kGroups, kPasses, kRingSlots>;
    if (Report r = allow_dynamic_shared_memory(entry, smem); !r.ok()) return r;
    const std::int64_t tiles = (p.rows + Kernel::kTokens - 1) / Kernel::kTokens;
    auto no_fit = [&] {
      return Report::failure(Status::kUnsupportedDevice,
                             std::string(kName) + ": no CTA fits on a multiprocessor (" + std::to_string(smem) +
                                 " bytes of shared memory, " + std::to_string(Kernel::kThreads) + " threads)");
    };
    if constexpr (Kernel::kCluster == 1) {
      int per_sm = 0;
      OQ_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, entry, Kernel::kThreads, smem));
      if (per_sm < 1) return no_fit();
      const auto grid = static_cast<unsigned>(
          std::min<std::int64_t>(tiles, static_cast<std::int64_t>(info.multiprocessors) * per_sm));
      return checked_launch([&] { entry<<<grid, Kernel::kThreads, smem, stream>>>(p); });
    } else {
      // Clusters of kCluster CTAs along x, one tile per cluster and step.
      cudaLaunchAttribute attribute{};
      attribute.id = cudaLaunchAttributeClusterDimension;
      attribute.val.clusterDim.x = Kernel::kCluster;
      attribute.val.clusterDim.y = 1;
      attribute.val.clusterDim.z = 1;
      cudaLaunchConfig_t config{};
      config.blockDim = dim3(Kernel::kThreads);
      config.dynamicSmemBytes = static_cast<std::size_t>(smem);
      config.stream = stream;
      config.attrs = &attribute;
      config.numAttrs = 1;
      config.gridDim = dim3(static_cast<unsigned>(Kernel::kCluster));
      int clusters = 0;
      OQ_CUDA_TRY(cudaOccupancyMaxActiveClusters(&clusters, entry, &config));
      if (clusters < 1) return no_fit();
      config.gridDim = dim3(static_cast<unsigned>(Kernel::kCluster * std::min<std::int64_t>(tiles, clusters)));
      return checked_launch([&] { return cudaLaunchKernelEx(&config, entry, p); });
    }
  }
};

}  // namespace oq::cuda::device
