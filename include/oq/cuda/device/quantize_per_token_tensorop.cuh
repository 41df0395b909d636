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
//   kResidentY  8 rows of Y in fp32 plus a ring of X: 32·K bytes + 10 KiB per
//               warp group (K ≤ ~6,800 on H100/H200); one tensor pass
//   kRecompute  8 rows of X: 16·K bytes (K ≤ ~14,000); Y computed twice
// run(p, stream) takes kResidentY where it fits and kRecompute otherwise;
// run(p, stream, passes) forces one (tests, benchmarks). The grid is
// persistent: as many CTAs as fit on the device at once, each looping over
// 8-token tiles.
#pragma once

#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/kernel/quantize_per_token_tensorop.cuh>
#include <oq/cuda/status.cuh>

#include <algorithm>
#include <cstdint>
#include <string>

namespace oq::cuda::device {

template <class Element, int kBlock = 128, int kTerms = 2, int kGroups = 1>
class QuantizePerTokenTensorOp {
 public:
  using Passes = kernel::RotationPasses;
  template <Passes kPasses>
  using KernelFor = kernel::QuantizePerTokenTensorOp<Element, kBlock, kTerms, kGroups, kPasses>;
  using Params = typename KernelFor<Passes::kResidentY>::Params;

  /// The argument checks alone: no CUDA call, usable without a GPU.
  static Report check_arguments(const Params& p) {
    const std::string who = "QuantizePerTokenTensorOp";
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
    if (Report r = QuantizePerToken<Element>::check_arguments(p); !r.ok()) {
      r.message.replace(0, std::string("QuantizePerToken").size(), who);
      return r;
    }
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
    return passes == Passes::kResidentY
               ? KernelFor<Passes::kResidentY>::dynamic_smem_bytes(p) +
                     sizeof(typename KernelFor<Passes::kResidentY>::SharedStorage)
               : KernelFor<Passes::kRecompute>::dynamic_smem_bytes(p) +
                     sizeof(typename KernelFor<Passes::kRecompute>::SharedStorage);
  }

  /// Arguments, then the current device, for the given passes.
  static Report can_implement(const Params& p, Passes passes) {
    if (Report r = check_arguments(p); !r.ok()) return r;
    if (Report r = require_compute_capability(8, "QuantizePerTokenTensorOp"); !r.ok()) return r;
    return require_shared_memory(shared_memory_bytes(p, passes), "QuantizePerTokenTensorOp",
                                 passes == Passes::kResidentY ? "the 8 rows of Y = X·R (fp32) and the ring of X"
                                                              : "the 8 rows of X");
  }
  /// For the passes run() picks (kRecompute needs the least memory).
  static Report can_implement(const Params& p) { return can_implement(p, Passes::kRecompute); }

  /// kResidentY where its shared memory fits the device, else kRecompute.
  static Report run(const Params& p, cudaStream_t stream = nullptr) {
    if (Report r = can_implement(p); !r.ok()) return r;
    const bool resident = require_shared_memory(shared_memory_bytes(p, Passes::kResidentY), "", "").ok();
    return run(p, stream, resident ? Passes::kResidentY : Passes::kRecompute);
  }

  static Report run(const Params& p, cudaStream_t stream, Passes passes) {
    if (Report r = can_implement(p, passes); !r.ok()) return r;
    if (p.rows == 0) return Report::success();
    return passes == Passes::kResidentY ? launch<Passes::kResidentY>(p, stream)
                                        : launch<Passes::kRecompute>(p, stream);
  }

 private:
  template <Passes kPasses>
  static Report launch(const Params& p, cudaStream_t stream) {
    using Kernel = KernelFor<kPasses>;
    const auto smem = static_cast<int>(Kernel::dynamic_smem_bytes(p));
    auto* entry = &kernel::quantize_per_token_tensorop_kernel<Element, kBlock, kTerms, kGroups, kPasses>;
    OQ_CUDA_TRY(cudaFuncSetAttribute(entry, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int device = 0, sms = 0, per_sm = 0;
    OQ_CUDA_TRY(cudaGetDevice(&device));
    OQ_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    OQ_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, entry, Kernel::kThreads, smem));
    if (per_sm < 1)
      return Report::failure(Status::kUnsupportedDevice,
                             "QuantizePerTokenTensorOp: no CTA fits on a multiprocessor (" + std::to_string(smem) +
                                 " bytes of shared memory, " + std::to_string(Kernel::kThreads) + " threads)");
    const std::int64_t tiles = (p.rows + Kernel::kTokens - 1) / Kernel::kTokens;
    const auto grid = static_cast<unsigned>(std::min<std::int64_t>(tiles, static_cast<std::int64_t>(sms) * per_sm));
    entry<<<grid, Kernel::kThreads, smem, stream>>>(p);
    OQ_CUDA_TRY(cudaGetLastError());
    return Report::success();
  }
};

}  // namespace oq::cuda::device
