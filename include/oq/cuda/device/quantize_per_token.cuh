// oq/cuda/device/quantize_per_token.cuh: host launcher of the per-token
// quantization kernel (kernel/quantize_per_token.cuh).
//
//   using Quantize = oq::cuda::device::QuantizePerToken<__nv_bfloat16>;
//   Quantize::Params p;
//   p.x = d_x; p.rows = m; p.cols = k; p.ld_x = k;
//   p.codes = d_codes; p.ld_codes = k / 2; p.scales = d_s; p.zeros = d_z; p.code_sums = d_sums;
//   p.bits = 4; p.symmetric = false; p.clip_ratio = 0.9f;           // DuQuant's activations
//   p.rotation = d_r; p.block_size = 128;                           // optional fused X·R
//   // or p.hadamard_block = 128;                                   // fused X·(H/√128), fast WHT
//   if (auto r = Quantize::run(p, stream); !r.ok()) throw std::runtime_error(r.message);
//
// can_implement() checks the arguments first (no CUDA call), then the device:
// compute capability 8.0 or newer, and shared memory for the row plus the
// rotation (K·4 + b²·4 bytes) within the device's opt-in limit — what the
// staged kernel needs; run() takes, for 16-bit rows without a general
// rotation (K ≤ 16,384, Walsh–Hadamard blocks ≤ 256), a register-path kernel
// that needs none (Kernel::register_path). The launcher skeleton
// (check_arguments, can_implement, run, initialize + run(stream)) is
// device/launcher.cuh's.
#pragma once

#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/device/device_info.cuh>
#include <oq/cuda/device/launcher.cuh>
#include <oq/cuda/kernel/quantize_per_token.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <limits>
#include <string>

namespace oq::cuda::device {

template <class Element, int kThreads = 256>
class QuantizePerToken
    : public Launcher<QuantizePerToken<Element, kThreads>, kernel::QuantizePerTokenParams<Element>> {
 public:
  using Params = kernel::QuantizePerTokenParams<Element>;
  using Kernel = kernel::QuantizePerToken<Element, kThreads>;
  using Arch = arch::Sm80;
  static constexpr const char* kName = "QuantizePerToken";

  /// The per-token quantization's argument checks, messages prefixed with `who`.
  static Report check_arguments_as(const Params& p, const std::string& who) {
    auto bad = [&](Status s, const std::string& why) { return Report::failure(s, who + ": " + why); };
    if (p.rows < 0 || p.rows > std::numeric_limits<int>::max())
      return bad(Status::kInvalidShape, "rows must be in [0, 2^31), got " + std::to_string(p.rows));
    if (p.cols <= 0) return bad(Status::kInvalidShape, "cols must be > 0, got " + std::to_string(p.cols));
    if (p.bits != 4 && p.bits != 8) return bad(Status::kInvalidArgument, "bits must be 4 or 8, got " + std::to_string(p.bits));
    if (p.bits == 4 && p.cols % 2 != 0)
      return bad(Status::kInvalidShape, "cols must be even for 4-bit codes (two per byte), got " + std::to_string(p.cols));
    if (p.ld_x < p.cols) return bad(Status::kInvalidShape, "ld_x must be >= cols (" + std::to_string(p.cols) + "), got " + std::to_string(p.ld_x));
    const std::int64_t row_bytes = p.cols * p.bits / 8;
    if (p.ld_codes < row_bytes)
      return bad(Status::kInvalidShape, "ld_codes must be >= " + std::to_string(row_bytes) + " bytes, got " + std::to_string(p.ld_codes));
    if (!(p.clip_ratio > 0.0f && p.clip_ratio <= 1.0f))
      return bad(Status::kInvalidArgument, "clip_ratio must be in (0, 1], got " + std::to_string(p.clip_ratio));
    if (p.rows > 0 && (p.x == nullptr || p.codes == nullptr || p.scales == nullptr || p.zeros == nullptr))
      return bad(Status::kInvalidArgument, "x, codes, scales and zeros must not be null");
    if ((p.rotation == nullptr) != (p.block_size == 0))
      return bad(Status::kInvalidArgument, "rotation and block_size must be given together (block_size " +
                                               std::to_string(p.block_size) + ")");
    if (p.hadamard_block != 0) {
      const int b = p.hadamard_block;
      if (p.rotation != nullptr)
        return bad(Status::kInvalidArgument, "rotation and hadamard_block are alternatives; give one");
      if (b < 2 || (b & (b - 1)) != 0)
        return bad(Status::kInvalidArgument, "hadamard_block must be a power of two >= 2, got " + std::to_string(b));
      if (p.cols % b != 0)
        return bad(Status::kInvalidShape, "hadamard_block (" + std::to_string(b) + ") must divide cols (" +
                                              std::to_string(p.cols) + ")");
    }
    if (p.rotation != nullptr) {
      if (p.block_size < 1 || kThreads % p.block_size != 0)
        return bad(Status::kInvalidArgument, "block_size must divide " + std::to_string(kThreads) + ", got " + std::to_string(p.block_size));
      if (p.cols % p.block_size != 0)
        return bad(Status::kInvalidShape, "block_size (" + std::to_string(p.block_size) + ") must divide cols (" +
                                              std::to_string(p.cols) + ")");
    }
    return Report::success();
  }

  /// Shared memory for the row and the rotation (the staged kernel's).
  static Report check_device(const Params& p, const DeviceInfo& info) {
    const std::size_t smem = Kernel::dynamic_smem_bytes(p) + sizeof(typename Kernel::SharedStorage);
    return require_shared_memory(info, smem, kName, "the row and rotation");
  }

  static bool empty(const Params& p) { return p.rows == 0; }

  /// The register path's kernels (by chunks per thread) where they apply, else the staged one.
  static Report launch(const Params& p, const DeviceInfo&, cudaStream_t stream) {
    if constexpr (sizeof(Element) == 2) {
      if (Kernel::register_path(p)) {
        return dispatch_bool(p.hadamard_block > 0, [&]<bool kHadamard>() {
          return dispatch<1, 2, 4, Kernel::kMaxRegisterChunks>(Kernel::register_chunks(p), [&]<int kChunks>() {
            return launch_kernel<kChunks, kHadamard>(p, stream);
          });
        });
      }
    }
    return launch_kernel<0, false>(p, stream);
  }

 private:
  template <int kRegisterChunks, bool kHadamard>
  static Report launch_kernel(const Params& p, cudaStream_t stream) {
    const auto smem = kRegisterChunks > 0 ? 0 : static_cast<int>(Kernel::dynamic_smem_bytes(p));
    auto* entry = &kernel::quantize_per_token_kernel<Element, kThreads, kRegisterChunks, kHadamard>;
    if (Report r = allow_dynamic_shared_memory(entry, smem); !r.ok()) return r;
    return checked_launch([&] { entry<<<static_cast<unsigned>(p.rows), kThreads, smem, stream>>>(p); });
  }
};

}  // namespace oq::cuda::device
