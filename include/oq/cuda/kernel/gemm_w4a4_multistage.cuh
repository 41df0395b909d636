// oq/cuda/kernel/gemm_w4a4_multistage.cuh: the W4A4 GEMM of
// kernel/gemm_w4a4.cuh (same Params, same int32 accumulators, same epilogue),
// tiled through shared memory with a cp.async multistage pipeline — the
// classic sm_80 structure (CUTLASS's "multistage" mainloop), and on sm_90 the
// mma.sync form of the s8 path (kernel/gemm_w4a4_wgmma.cuh is the wgmma form,
// on the same packed tiles and pipeline).
//
// Tiling. A CTA computes a 128 × 128 tile of C with 8 warps (2 along M × 4
// along N), each warp 64 × 32 = 4 × 4 mma tiles. K advances 128 elements
// (64 bytes of packed codes per row) per stage; kStages stages in flight.
//
// Shared memory, per stage: the A slab (128 rows × 64 bytes) then the W slab
// (128 rows × 64 bytes), rows kRowBytes = 80 bytes apart. The 16 pad bytes
// make 8 consecutive rows start in 8 different 4-bank groups (80 / 4 = 20
// banks: 0, 20, 8, 28, 16, 4, 24, 12), so the 8 rows of every ldmatrix phase
// are conflict-free, and 80 is a multiple of 16, as cp.async and ldmatrix need.
//
// Fragments come from ldmatrix.x4 (arch/memory.cuh): one instruction per
// 16 × 64-element A tile (its four 8 × 16-byte matrices are exactly a0..a3 of
// m16n8k64) and one per pair of 8 × 64-element W tiles (b0, b1 of each).
//   - native INT4 (kAuto on sm_80..89): those registers go to m16n8k64 as is;
//   - widened (kAuto on sm_90): each 32-bit register holds 8 codes of one row;
//     its even and odd codes are widened to two s8 registers and used as the
//     k = 4t.. and k = 16+4t.. lanes of an m16n8k32 — for A and W alike, so
//     every product pairs the same K element of both operands, only in
//     another order than K, which the sum does not see. The same shared-memory
//     loads therefore serve both paths. The widening is 2–3 instructions per 8
//     codes (widen below): a signed code stays in its nibble, which becomes
//     the high half of a byte, i.e. the s8 lane holds 16·q — no sign
//     extension — and the int32 sum, 16^(signed operands) times the true one
//     and still exact for K ≤ max_widened_k, is shifted back before the
//     epilogue (kWidenShift).
//
// Edges: rows past M or N and K past the end are zero-filled by cp.async
// (a zero code contributes nothing to the accumulator, and the zero-point
// corrections of the epilogue use the true K and code sums); stores are
// bounds-checked. Requirements beyond kernel/gemm_w4a4.cuh's: 16-byte aligned
// operands and row strides (cp.async moves 16 bytes).
#pragma once

#include <oq/core/int4.hpp>
#include <oq/cuda/arch/memory.cuh>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/gemm_w4a4.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

/// The largest K whose widened int32 sums cannot overflow: each product of
/// widened lanes is at most 15 (u4) or 16·8 (s4, scaled) per operand, so
/// |Σ| ≤ K·16384 for s4 × s4 (K ≤ 131,071), K·1,920 mixed, K·225 for u4 × u4.
__host__ __device__ constexpr std::int64_t max_widened_k(bool a_signed, bool w_signed) {
  const std::int64_t a_max = a_signed ? 16 * 8 : 15, w_max = w_signed ? 16 * 8 : 15;
  return 2147483647 / (a_max * w_max);
}

template <class ElementOut, bool kASigned, bool kWSigned, W4A4Mma kMma = W4A4Mma::kAuto, int kStages = 3>
struct GemmW4A4Multistage {
  static_assert(kStages >= 2, "a pipeline needs at least two stages");
  using Params = GemmW4A4Params<ElementOut>;

  static constexpr int kThreads = 256;  // 8 warps
  static constexpr int kTileM = 128;
  static constexpr int kTileN = 128;
  static constexpr int kTileK = 128;                  // elements per stage
  static constexpr int kSlabBytes = kTileK / 2;       // 64 bytes of codes per row and stage
  static constexpr int kRowBytes = kSlabBytes + 16;   // padded row (see the file comment)
  static constexpr int kWarpsM = 2, kWarpsN = 4;
  static constexpr int kWarpTileM = kTileM / kWarpsM;  // 64
  static constexpr int kWarpTileN = kTileN / kWarpsN;  // 32
  static constexpr int kMmaM = kWarpTileM / 16;        // 4 mma tiles along M per warp
  static constexpr int kMmaN = kWarpTileN / 8;         // 4 along N
  static constexpr int kStageBytes = (kTileM + kTileN) * kRowBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr int kChunksPerRow = kSlabBytes / 16;  // 16-byte cp.async chunks
  static_assert(kTileM * kChunksPerRow % kThreads == 0 && kTileN * kChunksPerRow % kThreads == 0);

  __host__ __device__ static constexpr bool native_s4() { return uses_native_s4<kMma>(); }

  // Issues the cp.async copies of K tile `k_tile` into `stage` (rows of the
  // CTA's A and W tiles; zero-fill past M, N or K).
  __device__ static void load_stage(const Params& p, std::uint8_t* stage, std::int64_t m0, std::int64_t n0,
                                    std::int64_t k_tile) {
    const std::int64_t k_byte0 = k_tile * kSlabBytes;
    auto copy = [&](const std::uint8_t* base, std::int64_t ld, std::int64_t rows, std::int64_t row0,
                    std::uint8_t* slab, int rows_in_tile) {
      for (int chunk = threadIdx.x; chunk < rows_in_tile * kChunksPerRow; chunk += kThreads) {
        const int r = chunk / kChunksPerRow, c = chunk % kChunksPerRow;
        const std::int64_t row = row0 + r, byte = k_byte0 + 16 * c;
        const bool valid = row < rows && 2 * byte < p.k;  // a chunk is 32 codes; K is a multiple of 32
        const std::uint8_t* src = valid ? base + row * ld + byte : base;
        arch::cp_async_16(slab + r * kRowBytes + 16 * c, src, valid);
      }
    };
    copy(p.a, p.ld_a, p.m, m0, stage, kTileM);
    copy(p.w, p.ld_w, p.n, n0, stage + kTileM * kRowBytes, kTileN);
  }

  // Splits a register of 8 codes (one row, consecutive K) into two s8 lanes
  // registers: codes 0, 2, 4, 6 and codes 1, 3, 5, 7 (byte i of `low` is code
  // 2i, of `high` code 2i + 1). Unsigned codes become the bytes' low nibbles
  // (q, 0..15: a non-negative s8); signed ones their high nibbles, the s8
  // value 16·q (−128..112), exactly — hence kWidenShift.
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

  // The widened path's fragments of one 64-element K step: each register of
  // 8 codes (a0..a3 of m16n8k64: codes 8t.. of rows g, g+8, then codes
  // 32 + 8t..) splits into the k = 4t.. and k = 16+4t.. lanes of two m16n8k32
  // steps h = 0, 1; W's b0/b1 split the same way, so both operands put the
  // same K element in the same lane.
  __device__ __forceinline__ static void widen_a(const std::uint32_t (&a)[4], std::uint32_t (&a8)[2][4]) {
    OQ_UNROLL
    for (int h = 0; h < 2; ++h) {
      widen<kASigned>(a[2 * h], a8[h][0], a8[h][2]);      // row g:   codes → lanes 4t.., 16+4t..
      widen<kASigned>(a[2 * h + 1], a8[h][1], a8[h][3]);  // row g+8
    }
  }
  __device__ __forceinline__ static void widen_b(const std::uint32_t (&b)[2], std::uint32_t (&b8)[2][2]) {
    OQ_UNROLL
    for (int h = 0; h < 2; ++h) widen<kWSigned>(b[h], b8[h][0], b8[h][1]);
  }

  __device__ void operator()(const Params& p, std::uint8_t* smem) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int warp_m = warp % kWarpsM, warp_n = warp / kWarpsM;
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
    const std::int64_t k_tiles = (p.k + kTileK - 1) / kTileK;

    std::int32_t c[kMmaM][kMmaN][4];
    OQ_UNROLL
    for (int i = 0; i < kMmaM; ++i) {
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) c[i][j][e] = 0;
      }
    }

    // Prologue: stages 0 .. kStages−2 in flight (a group per stage, empty past K).
    OQ_UNROLL
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < k_tiles) load_stage(p, smem + s * kStageBytes, m0, n0, s);
      arch::cp_async_commit();
    }

    // ldmatrix row addresses of this lane, relative to a stage (see arch/memory.cuh):
    //   A tile i: matrix q = lane / 8 is rows (q % 2)·8 .. +7, bytes (q / 2)·16 of the K step
    //   W tiles j, j+1: matrix q is tile j + q / 2, bytes (q % 2)·16
    const int a_row = warp_m * kWarpTileM + (lane % 8) + ((lane / 8) % 2) * 8;
    const int a_byte = (lane / 16) * 16;
    const int w_row = kTileM + warp_n * kWarpTileN + (lane / 16) * 8 + (lane % 8);
    const int w_byte = ((lane / 8) % 2) * 16;

    for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
      arch::cp_async_wait<kStages - 2>();  // tile kt has landed (this thread's copies)
      __syncthreads();                     // … everyone's, and stage (kt − 1) % kStages is free
      const std::int64_t next = kt + kStages - 1;
      if (next < k_tiles) load_stage(p, smem + (next % kStages) * kStageBytes, m0, n0, next);
      arch::cp_async_commit();

      const std::uint8_t* stage = smem + (kt % kStages) * kStageBytes;
      OQ_UNROLL
      for (int step = 0; step < kSlabBytes / 32; ++step) {  // two 64-element steps per stage
        std::uint32_t a[kMmaM][4], b[kMmaN][2];
        OQ_UNROLL
        for (int i = 0; i < kMmaM; ++i)
          arch::ldmatrix_x4(a[i], stage + (a_row + 16 * i) * kRowBytes + 32 * step + a_byte);
        OQ_UNROLL
        for (int j = 0; j < kMmaN; j += 2) {
          std::uint32_t r[4];
          arch::ldmatrix_x4(r, stage + (w_row + 8 * j) * kRowBytes + 32 * step + w_byte);
          b[j][0] = r[0];
          b[j][1] = r[1];
          b[j + 1][0] = r[2];
          b[j + 1][1] = r[3];
        }
        if constexpr (native_s4()) {
          OQ_UNROLL
          for (int i = 0; i < kMmaM; ++i) {
            OQ_UNROLL
            for (int j = 0; j < kMmaN; ++j) arch::mma_m16n8k64_int4<kASigned, kWSigned>(c[i][j], a[i], b[j]);
          }
        } else {
          // Widen each fragment once (not once per product), then two k32 steps.
          std::uint32_t a8[kMmaM][2][4], b8[kMmaN][2][2];
          OQ_UNROLL
          for (int i = 0; i < kMmaM; ++i) widen_a(a[i], a8[i]);
          OQ_UNROLL
          for (int j = 0; j < kMmaN; ++j) widen_b(b[j], b8[j]);
          OQ_UNROLL
          for (int h = 0; h < 2; ++h) {
            OQ_UNROLL
            for (int i = 0; i < kMmaM; ++i) {
              OQ_UNROLL
              for (int j = 0; j < kMmaN; ++j) arch::mma_m16n8k32_s8(c[i][j], a8[i][h], b8[j][h]);
            }
          }
        }
      }
    }
    arch::cp_async_wait<0>();  // no copy may outlive the CTA's shared memory

    const int group = lane / 4, thread_in_group = lane % 4;
    OQ_UNROLL
    for (int i = 0; i < kMmaM; ++i) {
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) {
          const std::int64_t row = m0 + warp_m * kWarpTileM + 16 * i + group + (e >= 2 ? 8 : 0);
          const std::int64_t col = n0 + warp_n * kWarpTileN + 8 * j + 2 * thread_in_group + (e % 2);
          if (row < p.m && col < p.n) store_w4a4_output(p, row, col, native_s4() ? c[i][j][e] : c[i][j][e] >> kWidenShift);
        }
      }
    }
#elif defined(__CUDA_ARCH__)
    // Built for a target below sm_80 (no mma.sync on integers, no cp.async):
    // fail loudly rather than leave the output unwritten.
    (void)p;
    (void)smem;
    __trap();
#endif
  }
};

template <class ElementOut, bool kASigned, bool kWSigned, W4A4Mma kMma, int kStages>
__global__ void __launch_bounds__(256)
    gemm_w4a4_multistage_kernel(const GemmW4A4Params<ElementOut> params) {
  using Kernel = GemmW4A4Multistage<ElementOut, kASigned, kWSigned, kMma, kStages>;
  extern __shared__ __align__(16) std::uint8_t smem[];
  Kernel{}(params, smem);
}

}  // namespace oq::cuda::kernel
