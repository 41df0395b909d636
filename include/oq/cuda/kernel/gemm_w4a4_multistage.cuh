// oq/cuda/kernel/gemm_w4a4_multistage.cuh: the W4A4 GEMM of
// kernel/gemm_w4a4.cuh (same Params, same int32 accumulators, same epilogue),
// tiled through shared memory with a cp.async multistage pipeline — the
// classic sm_80 structure (CUTLASS's "multistage" mainloop), and on sm_90 the
// mma.sync form of the s8 path (kernel/gemm_w4a4_wgmma.cuh is the wgmma form,
// on the same packed tiles and pipeline).
//
// Tiles, shared-memory layout, pipeline and edges:
// kernel/gemm_w4a4_tile_pipeline.cuh. The 8 warps are 2 along M × 4 along N,
// each warp 64 × 32 = 4 × 4 mma tiles.
//
// Fragments come from ldmatrix.x4 (arch/memory.cuh): one instruction per
// 16 × 64-element A tile (its four 8 × 16-byte matrices are exactly a0..a3 of
// m16n8k64) and one per pair of 8 × 64-element W tiles (b0, b1 of each).
//   - native INT4 (kAuto on sm_80..89): those registers go to m16n8k64 as is;
//   - widened (kAuto on sm_90): each 32-bit register holds 8 codes of one row;
//     its even and odd codes are widened to two s8 registers
//     (kernel/gemm_w4a4_widen.cuh) and used as the k = 4t.. and k = 16+4t..
//     lanes of an m16n8k32 — for A and W alike, so the same shared-memory
//     loads serve both paths; the accumulators are shifted back by
//     kWidenShift before the epilogue.
// Requirements beyond kernel/gemm_w4a4.cuh's: 16-byte aligned operands and
// row strides (cp.async moves 16 bytes).
#pragma once

#include <oq/config.hpp>
#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/arch/memory.cuh>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/gemm_w4a4_epilogue.cuh>
#include <oq/cuda/kernel/gemm_w4a4_params.cuh>
#include <oq/cuda/kernel/gemm_w4a4_tile_pipeline.cuh>
#include <oq/cuda/kernel/gemm_w4a4_widen.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

template <class ElementOut, bool kASigned, bool kWSigned, W4A4Mma kMma = W4A4Mma::kAuto, int kStages = 3>
struct GemmW4A4Multistage {
  using Params = GemmW4A4Params<ElementOut>;
  using Pipeline = GemmW4A4TilePipeline<kStages>;
  using Widen = W4A4Widen<kASigned, kWSigned>;

  static constexpr int kThreads = Pipeline::kThreads;  // 8 warps
  static constexpr int kTileM = Pipeline::kTileM;
  static constexpr int kTileN = Pipeline::kTileN;
  static constexpr int kTileK = Pipeline::kTileK;
  static constexpr int kSlabBytes = Pipeline::kSlabBytes;
  static constexpr int kRowBytes = Pipeline::kRowBytes;
  static constexpr int kStageBytes = Pipeline::kStageBytes;
  static constexpr int kSmemBytes = Pipeline::kSmemBytes;
  static constexpr int kWarpsM = 2, kWarpsN = 4;
  static constexpr int kWarpTileM = kTileM / kWarpsM;  // 64
  static constexpr int kWarpTileN = kTileN / kWarpsN;  // 32
  static constexpr int kMmaM = kWarpTileM / 16;        // 4 mma tiles along M per warp
  static constexpr int kMmaN = kWarpTileN / 8;         // 4 along N
  static constexpr int kWidenShift = Widen::kWidenShift;
  using SharedStorage = typename Pipeline::SharedStorage;  // the kStages stages of packed tiles

  __host__ __device__ static constexpr bool native_s4() { return uses_native_s4<kMma>(); }

  // The widened path's fragments of one 64-element K step: each register of
  // 8 codes (a0..a3 of m16n8k64: codes 8t.. of rows g, g+8, then codes
  // 32 + 8t..) splits into the k = 4t.. and k = 16+4t.. lanes of two m16n8k32
  // steps h = 0, 1; W's b0/b1 split the same way, so both operands put the
  // same K element in the same lane.
  __device__ __forceinline__ static void widen_a(const std::uint32_t (&a)[4], std::uint32_t (&a8)[2][4]) {
    OQ_UNROLL
    for (int h = 0; h < 2; ++h) {
      Widen::template widen<kASigned>(a[2 * h], a8[h][0], a8[h][2]);      // row g:   codes → lanes 4t.., 16+4t..
      Widen::template widen<kASigned>(a[2 * h + 1], a8[h][1], a8[h][3]);  // row g+8
    }
  }
  __device__ __forceinline__ static void widen_b(const std::uint32_t (&b)[2], std::uint32_t (&b8)[2][2]) {
    OQ_UNROLL
    for (int h = 0; h < 2; ++h) Widen::template widen<kWSigned>(b[h], b8[h][0], b8[h][1]);
  }

  __device__ void operator()(const Params& p, SharedStorage& shared) const {
    if constexpr (!arch::compiled_for<arch::Sm80>()) {
      arch::unsupported();  // no mma.sync on integers, no cp.async: fail loudly rather than leave the output unwritten
    } else {
      std::uint8_t* smem = shared.stages[0].rows[0];  // stage i at i·kStageBytes (GemmW4A4TilePipeline)
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
        if (s < k_tiles) Pipeline::load_stage(p, smem + s * kStageBytes, m0, n0, s);
        arch::cp_async_commit();
      }

      // ldmatrix rows of this lane in a stage (see arch/memory.cuh):
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
        if (next < k_tiles) Pipeline::load_stage(p, smem + (next % kStages) * kStageBytes, m0, n0, next);
        arch::cp_async_commit();

        const std::uint8_t* stage = smem + (kt % kStages) * kStageBytes;  // rows of kRowBytes: A, then W
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

      using Acc = arch::MmaAccumulatorLayout;
      const int group = Acc::group(lane), thread_in_group = Acc::thread_in_group(lane);
      OQ_UNROLL
      for (int i = 0; i < kMmaM; ++i) {
        OQ_UNROLL
        for (int j = 0; j < kMmaN; ++j) {
          OQ_UNROLL
          for (int e = 0; e < 4; ++e) {
            const std::int64_t row = Acc::row(m0 + warp_m * kWarpTileM + 16 * i, group, e);
            const std::int64_t col = Acc::col(n0 + warp_n * kWarpTileN + 8 * j, thread_in_group, e);
            if (row < p.m && col < p.n) store_w4a4_output(p, row, col, native_s4() ? c[i][j][e] : c[i][j][e] >> kWidenShift);
          }
        }
      }
    }
  }
};

template <class ElementOut, bool kASigned, bool kWSigned, W4A4Mma kMma, int kStages>
__global__ void __launch_bounds__(256)
    gemm_w4a4_multistage_kernel(const GemmW4A4Params<ElementOut> params) {
  using Kernel = GemmW4A4Multistage<ElementOut, kASigned, kWSigned, kMma, kStages>;
  extern __shared__ __align__(16) std::uint8_t smem[];
  Kernel{}(params, *reinterpret_cast<typename Kernel::SharedStorage*>(smem));
}

}  // namespace oq::cuda::kernel
