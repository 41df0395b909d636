// oq/cuda/kernel/gemm_w4a4_widen.cuh: packed INT4 codes widened to s8 lanes
// for the s8 tensor-core instructions — mma.sync.m16n8k32 in the multistage
// kernel's widened path (kernel/gemm_w4a4_multistage.cuh), wgmma in the
// Hopper kernel (kernel/gemm_w4a4_wgmma.cuh) — 2–3 instructions per 8 codes.
//
// A 32-bit register of 8 codes (one row, consecutive K) splits into two
// registers of four s8 lanes: codes 0, 2, 4, 6 and codes 1, 3, 5, 7 (byte i
// of `low` is code 2i, of `high` code 2i + 1). Both operands are widened the
// same way, so every product still pairs the same K element of A and W, only
// in another order than K, which the sum does not see. Unsigned codes become
// the bytes' low nibbles (q, 0..15: a non-negative s8); signed ones stay in
// their nibble, which becomes the byte's high half: the s8 value 16·q
// (−128..112), exactly, with no sign extension. The int32 sum is then
// 16^(signed operands) times the true one, exact for K ≤ max_widened_k, and
// is shifted back (kWidenShift) before the epilogue.
#pragma once

#include <cstdint>

namespace oq::cuda::kernel {

/// The largest K whose widened int32 sums cannot overflow: each product of
/// widened lanes is at most 15 (u4) or 16·8 (s4, scaled) per operand, so
/// |Σ| ≤ K·16384 for s4 × s4 (K ≤ 131,071), K·1,920 mixed, K·225 for u4 × u4.
__host__ __device__ constexpr std::int64_t max_widened_k(bool a_signed, bool w_signed) {
  const std::int64_t a_max = a_signed ? 16 * 8 : 15, w_max = w_signed ? 16 * 8 : 15;
  return 2147483647 / (a_max * w_max);
}

/// The widening of A (kASigned) and W (kWSigned) codes (see the file comment).
template <bool kASigned, bool kWSigned>
struct W4A4Widen {
  /// Splits a register of 8 codes into the even (`low`) and odd (`high`)
  /// codes' s8 lanes.
  template <bool kSigned>
  __host__ __device__ __forceinline__ static void widen(std::uint32_t codes, std::uint32_t& low, std::uint32_t& high) {
    if constexpr (kSigned) {
      low = (codes << 4) & 0xF0F0F0F0u;
      high = codes & 0xF0F0F0F0u;
    } else {
      low = codes & 0x0F0F0F0Fu;
      high = (codes >> 4) & 0x0F0F0F0Fu;
    }
  }
  /// log2 of the factor the widened accumulators carry: 16 per signed operand.
  static constexpr int kWidenShift = 4 * (static_cast<int>(kASigned) + static_cast<int>(kWSigned));
};

}  // namespace oq::cuda::kernel
