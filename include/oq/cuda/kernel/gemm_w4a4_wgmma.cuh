// oq/cuda/kernel/gemm_w4a4_wgmma.cuh: the W4A4 GEMM of kernel/gemm_w4a4.cuh
// (same Params, accumulators and epilogue) on Hopper's warpgroup MMA: INT4
// codes are widened to s8 in shared memory and multiplied by
// wgmma.m64n128k32.s32.s8.s8 — Hopper has no INT4 tensor cores, and wgmma
// takes s8 but not s4 (docs/design.md §7). sm_90a only.
//
// Per CTA: a 128 × 128 tile of C, two warpgroups (256 threads), each owning 64
// rows × 128 columns in 64 int32 registers per thread. K advances 128 codes
// per stage:
//   1. the packed INT4 slabs arrive through the cp.async pipeline of
//      kernel/gemm_w4a4_tile_pipeline.cuh (the multistage kernel's stages and
//      zero-filled edges);
//   2. all 256 threads widen the stage's codes to s8
//      (kernel/gemm_w4a4_widen.cuh: even/odd codes, signed ones scaled by
//      16, undone by kWidenShift in the epilogue) into one shared buffer
//      laid out as wgmma's no-swizzle K-major core matrices (arch/wgmma.cuh):
//      8 rows × 16 bytes each, the 8 of a row group adjacent along K
//      (LBO = 128 bytes), row groups 1024 bytes apart (SBO);
//   3. fence.proxy.async + barrier, then each warpgroup issues four k32
//      wgmmas (A: its 64 rows, B: all 128 columns) and commits them.
// kS8Buffers = 2 (default) overlaps the widening of stage k + 1 with the
// wgmmas of stage k: each warpgroup leaves one batch in flight (wait_group 1)
// and stage k + 1 goes to the other buffer, which the batch of stage k − 1
// read and which every warpgroup has waited for before the next barrier.
// kS8Buffers = 1 waits for every batch (wait_group 0) before the buffer is
// rewritten: slower, and the simplest schedule, kept to tell the two apart
// should one fail. A producer warpgroup with TMA loads and a swizzled layout
// are the next steps (issue 6).
//
// Conversion mapping: thread q handles 16 packed bytes (32 codes) of row
// r = q % 128, chunk c = (q / 128) % 4, operand q / 512 (A, then W), and
// writes two 16-byte s8 rows of two K-adjacent core matrices. Eight
// consecutive threads read eight rows 80 bytes apart (conflict-free, as in the
// multistage kernel) and write one whole 128-byte core matrix.
#pragma once

#include <oq/config.hpp>
#include <oq/cuda/arch/arch.cuh>
#include <oq/cuda/arch/memory.cuh>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/arch/wgmma.cuh>
#include <oq/cuda/kernel/gemm_w4a4_epilogue.cuh>
#include <oq/cuda/kernel/gemm_w4a4_params.cuh>
#include <oq/cuda/kernel/gemm_w4a4_tile_pipeline.cuh>
#include <oq/cuda/kernel/gemm_w4a4_widen.cuh>

#include <cstddef>
#include <cstdint>

namespace oq::cuda::kernel {

template <class ElementOut, bool kASigned, bool kWSigned, int kStages = 3, int kS8Buffers = 2>
struct GemmW4A4Wgmma {
  static_assert(kS8Buffers == 1 || kS8Buffers == 2, "one or two widened buffers");
  using Params = GemmW4A4Params<ElementOut>;
  // The packed tiles, their pipeline and the widening: shared with the multistage kernel.
  using Pipeline = GemmW4A4TilePipeline<kStages>;
  using Widen = W4A4Widen<kASigned, kWSigned>;
  static constexpr int kThreads = Pipeline::kThreads;  // 256: two warpgroups
  static constexpr int kTileM = Pipeline::kTileM;      // 128
  static constexpr int kTileN = Pipeline::kTileN;      // 128
  static constexpr int kTileK = Pipeline::kTileK;      // 128 codes per stage
  static_assert(kThreads == 256 && kTileM == 128 && kTileN == 128 && kTileK == 128,
                "the conversion mapping and the wgmma shape assume these");

  static constexpr int kCoreBytes = 128;                 // 8 rows × 16 bytes
  static constexpr int kCoresK = kTileK / 16;            // core matrices along K per row group
  static constexpr int kLbo = kCoreBytes;                // K-adjacent core matrices
  static constexpr int kSbo = kCoresK * kCoreBytes;      // next 8 rows: 1024 bytes
  /// One widened stage: the s8 core matrices of A (operand 0) and W
  /// (operand 1), [operand][row group of 8 rows][core matrix along K][row
  /// within the group · 16 + byte] — K-adjacent core matrices kLbo bytes
  /// apart, row groups kSbo bytes apart, as the descriptors say. The kernel
  /// writes and reads it through byte offsets from its first byte, which
  /// are these indices flattened: indexing the array changed nvcc's address
  /// arithmetic (checked with cmake/ptx_diff.sh).
  using CoreMatrices = std::uint8_t[2][kTileM / 8][kCoresK][kCoreBytes];
  static constexpr int kS8Bytes = (kTileM + kTileN) * kTileK;  // A then W, one byte per code
  static_assert(sizeof(CoreMatrices) == kS8Bytes);

  struct SharedStorage {
    alignas(128) CoreMatrices s8[kS8Buffers];  // wgmma operands: 128-byte aligned (the core matrices)
    typename Pipeline::SharedStorage packed;   // the packed pipeline's stages
  };
  static constexpr int kSmemBytes = static_cast<int>(sizeof(SharedStorage));
  static_assert(kSmemBytes == kS8Buffers * kS8Bytes + Pipeline::kSmemBytes &&
                offsetof(SharedStorage, packed) == kS8Buffers * kS8Bytes);

  // Widens the packed stage to s8 core matrices (see the file comment).
  __device__ static void convert(const std::uint8_t* packed, std::uint8_t* s8) {
    OQ_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int q = threadIdx.x + kThreads * i;  // i = 0, 1: A; i = 2, 3: W
      const int operand = i / 2;
      const int r = q % 128, c = (q / 128) % 4;
      const auto* row = packed + (operand * kTileM + r) * Pipeline::kRowBytes;
      const uint4 codes = *reinterpret_cast<const uint4*>(row + 16 * c);
      uint4 low, high;  // codes 32c .. 32c+15 and 32c+16 .. 32c+31 as s8 lanes (even/odd order in each 8)
      if (operand == 0) {
        Widen::template widen<kASigned>(codes.x, low.x, low.y);
        Widen::template widen<kASigned>(codes.y, low.z, low.w);
        Widen::template widen<kASigned>(codes.z, high.x, high.y);
        Widen::template widen<kASigned>(codes.w, high.z, high.w);
      } else {
        Widen::template widen<kWSigned>(codes.x, low.x, low.y);
        Widen::template widen<kWSigned>(codes.y, low.z, low.w);
        Widen::template widen<kWSigned>(codes.z, high.x, high.y);
        Widen::template widen<kWSigned>(codes.w, high.z, high.w);
      }
      std::uint8_t* core = s8 + operand * kTileM * kTileK + ((r / 8) * kCoresK + 2 * c) * kCoreBytes + (r % 8) * 16;
      *reinterpret_cast<uint4*>(core) = low;
      *reinterpret_cast<uint4*>(core + kCoreBytes) = high;  // the next core matrix along K
    }
  }

  __device__ void operator()(const Params& p, SharedStorage& shared) const {
    if constexpr (!arch::compiled_for<arch::Sm90a>()) {
      // Built without sm_90a code: the launcher admits only compute
      // capability 9.0, so reaching this means the binary lacks its sm_90a
      // image. Fail loudly rather than return unwritten outputs.
      arch::unsupported();
    } else {
      // Byte offsets from the first bytes of SharedStorage's arrays (see
      // CoreMatrices and GemmW4A4TilePipeline::SharedStorage for why).
      std::uint8_t* s8_buffers = shared.s8[0][0][0][0];               // buffer b at b·kS8Bytes
      std::uint8_t* stages = s8_buffers + kS8Buffers * kS8Bytes;  // shared.packed; stage i at i·kStageBytes
      const int warpgroup = threadIdx.x / 128;
      const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
      const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
      const std::int64_t k_tiles = (p.k + kTileK - 1) / kTileK;

      std::int32_t acc[64];
      OQ_UNROLL
      for (int i = 0; i < 64; ++i) acc[i] = 0;
      arch::wgmma_fence_operands(acc);  // the zeros are written before the first batch

      OQ_UNROLL
      for (int s = 0; s < kStages - 1; ++s) {
        if (s < k_tiles) Pipeline::load_stage(p, stages + s * Pipeline::kStageBytes, m0, n0, s);
        arch::cp_async_commit();
      }
      for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
        arch::cp_async_wait<kStages - 2>();
        // Tile kt landed everywhere, and every warpgroup has waited for the batch
        // that last read the s8 buffer this stage is widened into.
        __syncthreads();
        const std::int64_t next = kt + kStages - 1;
        if (next < k_tiles) Pipeline::load_stage(p, stages + (next % kStages) * Pipeline::kStageBytes, m0, n0, next);
        arch::cp_async_commit();

        std::uint8_t* s8 = s8_buffers + (kt % kS8Buffers) * kS8Bytes;
        convert(stages + (kt % kStages) * Pipeline::kStageBytes, s8);
        arch::fence_proxy_async_shared();  // the generic-proxy writes, before wgmma's async-proxy reads
        __syncthreads();

        const std::uint8_t* a_s8 = s8 + 64 * warpgroup * kTileK;  // this warpgroup's 64 rows: 8 row groups
        const std::uint8_t* w_s8 = s8 + kTileM * kTileK;
        arch::wgmma_fence();
        OQ_UNROLL
        for (int step = 0; step < kTileK / 32; ++step) {
          arch::wgmma_m64n128k32_s8(acc, arch::wgmma_descriptor(a_s8 + 2 * step * kCoreBytes, kLbo, kSbo),
                                    arch::wgmma_descriptor(w_s8 + 2 * step * kCoreBytes, kLbo, kSbo));
        }
        arch::wgmma_commit();
        arch::wgmma_wait<kS8Buffers - 1>();  // two buffers: this batch may run on while the next stage widens
      }
      arch::wgmma_wait<0>();
      arch::wgmma_fence_operands(acc);  // the epilogue reads the accumulators after the last batch
      arch::cp_async_wait<0>();

      // d[4j + e] = D[16w + g + 8·(e / 2)][8j + 2t + e % 2] (arch/wgmma.cuh).
      using Acc = arch::MmaAccumulatorLayout;
      const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
      const int group = Acc::group(lane), thread_in_group = Acc::thread_in_group(lane);
      OQ_UNROLL
      for (int j = 0; j < 16; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) {
          const std::int64_t row = Acc::row(m0 + 64 * warpgroup + 16 * warp, group, e);
          const std::int64_t col = Acc::col(n0 + 8 * j, thread_in_group, e);
          if (row < p.m && col < p.n) store_w4a4_output(p, row, col, acc[4 * j + e] >> Widen::kWidenShift);
        }
      }
    }
  }
};

template <class ElementOut, bool kASigned, bool kWSigned, int kStages, int kS8Buffers>
__global__ void __launch_bounds__(256, 1) gemm_w4a4_wgmma_kernel(const GemmW4A4Params<ElementOut> params) {
  using Kernel = GemmW4A4Wgmma<ElementOut, kASigned, kWSigned, kStages, kS8Buffers>;
  extern __shared__ __align__(128) std::uint8_t wgmma_smem[];  // its own name: alignments differ by kernel
  Kernel{}(params, *reinterpret_cast<typename Kernel::SharedStorage*>(wgmma_smem));
}

}  // namespace oq::cuda::kernel
