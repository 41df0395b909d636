// oq/cuda/kernel/gemm_w4a4_params.cuh: the arguments every W4A4 GEMM kernel
// takes (kernel/gemm_w4a4.cuh, gemm_w4a4_multistage.cuh, gemm_w4a4_wgmma.cuh)
// and the choice of tensor-core instruction, W4A4Mma, with the one place
// where kAuto is resolved.
//
// Operands are packed INT4 rows (format/int4_row.hpp): a is M × K (u4 when
// activations are asymmetric, s4 when symmetric), w is N × K, both
// K-contiguous — exactly the "row.col" operand order of mma.sync. The
// epilogue's fields (scales, zero points, code sums, outputs) are read by
// kernel/gemm_w4a4_epilogue.cuh, which has the formula.
#pragma once

#include <oq/cuda/arch/arch.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

template <class ElementOut>
struct GemmW4A4Params {
  const std::uint8_t* a = nullptr;  ///< M × K/2 bytes, rows ld_a bytes apart
  std::int64_t ld_a = 0;
  bool a_signed = true;             ///< s4 (symmetric) or u4 (asymmetric) codes
  const std::uint8_t* w = nullptr;  ///< N × K/2 bytes, rows ld_w bytes apart
  std::int64_t ld_w = 0;
  bool w_signed = true;
  std::int64_t m = 0, n = 0, k = 0;
  // Epilogue (all optional but y needs scale_a and scale_w):
  const float* scale_a = nullptr;   ///< M
  const float* zero_a = nullptr;    ///< M, null when activations are symmetric
  const float* scale_w = nullptr;   ///< N
  const float* zero_w = nullptr;    ///< N, null when weights are symmetric
  const std::int32_t* sum_a = nullptr;  ///< M, Σ_k qa (the quantize kernel's code_sums); needed with zero_w
  const std::int32_t* sum_w = nullptr;  ///< N, Σ_k qw (computed offline); needed with zero_a
  std::int32_t* acc = nullptr;      ///< M × N raw accumulators (ld_acc apart), or null
  std::int64_t ld_acc = 0;
  ElementOut* y = nullptr;          ///< M × N outputs (ld_y apart), or null
  std::int64_t ld_y = 0;
};

/// The tensor-core instruction of the mma.sync W4A4 kernels:
///   - kNativeS4: mma.sync.m16n8k64 on the packed codes as they are (.s4/.u4
///     operands, signedness per operand), the INT4 tensor cores of
///     sm_80/86/89;
///   - kWidenToS8: INT4 widened to 8-bit lanes, mma.sync.m16n8k32 .s8, the
///     path for sm_90, which has no INT4 tensor cores (docs/design.md §7);
///   - kAuto (default): kNativeS4 where the code runs on sm_80..sm_89,
///     kWidenToS8 from sm_90 on (w4a4_native_s4). ptxas accepts the s4
///     instruction for sm_90a too (what it becomes there is for the SASS
///     check to say), which is what lets the GPU tests run both paths on a
///     Hopper machine.
enum class W4A4Mma {
  kAuto,       ///< kNativeS4 on sm_80..89, kWidenToS8 on sm_90+
  kNativeS4,   ///< mma.sync.m16n8k64 .s4/.u4 on the packed codes
  kWidenToS8,  ///< codes widened to 8 bits, mma.sync.m16n8k32 .s8
};

/// Whether `mma` issues the native INT4 instruction on an architecture of
/// compute capability `sm` (10·major + minor: 80, 89, 90). The kAuto rule,
/// used by the kernels for the architecture they are compiled for and by
/// the launchers for the device they run on.
__host__ __device__ constexpr bool w4a4_native_s4(W4A4Mma mma, int sm) {
  return mma == W4A4Mma::kNativeS4 || (mma == W4A4Mma::kAuto && sm < 90);
}

/// Whether this compilation pass issues the native INT4 instruction for
/// kMma (in the host pass, where no architecture is known, only kNativeS4 does).
template <W4A4Mma kMma>
__host__ __device__ constexpr bool uses_native_s4() {
  if constexpr (arch::kCompiledSm == 0) {
    return kMma == W4A4Mma::kNativeS4;
  } else {
    return w4a4_native_s4(kMma, arch::kCompiledSm);
  }
}

}  // namespace oq::cuda::kernel
