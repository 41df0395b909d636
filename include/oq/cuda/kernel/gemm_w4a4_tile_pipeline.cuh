// oq/cuda/kernel/gemm_w4a4_tile_pipeline.cuh: the packed INT4 tiles of the
// tiled W4A4 kernels (kernel/gemm_w4a4_multistage.cuh: mma.sync;
// kernel/gemm_w4a4_wgmma.cuh: wgmma) and the cp.async multistage pipeline that
// fills them — the mainloop's loads, which both kernels share.
//
// Tiling. A CTA of 256 threads computes a 128 × 128 tile of C. K advances 128
// elements (64 bytes of packed codes per row) per stage; kStages stages in
// flight.
//
// Shared memory, per stage: the A slab (128 rows × 64 bytes) then the W slab
// (128 rows × 64 bytes), rows kRowBytes = 80 bytes apart. The 16 pad bytes
// make 8 consecutive rows start in 8 different 4-bank groups (80 / 4 = 20
// banks: 0, 20, 8, 28, 16, 4, 24, 12), so the 8 rows of every ldmatrix phase
// (and of the wgmma kernel's 16-byte reads) are conflict-free, and 80 is a
// multiple of 16, as cp.async and ldmatrix need.
//
// Edges: rows past M or N and K past the end are zero-filled by cp.async (a
// zero code contributes nothing to the accumulator, and the zero-point
// corrections of the epilogue use the true K and code sums). Operands and
// row strides must be 16-byte aligned (cp.async moves 16 bytes).
#pragma once

#include <oq/cuda/arch/memory.cuh>
#include <oq/cuda/kernel/gemm_w4a4_params.cuh>

#include <cstdint>

namespace oq::cuda::kernel {

template <int kStages>
struct GemmW4A4TilePipeline {
  static_assert(kStages >= 2, "a pipeline needs at least two stages");

  static constexpr int kThreads = 256;  // 8 warps
  static constexpr int kTileM = 128;
  static constexpr int kTileN = 128;
  static constexpr int kTileK = 128;                  // elements per stage
  static constexpr int kSlabBytes = kTileK / 2;       // 64 bytes of codes per row and stage
  static constexpr int kRowBytes = kSlabBytes + 16;   // padded row (see the file comment)
  static constexpr int kStageBytes = (kTileM + kTileN) * kRowBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr int kChunksPerRow = kSlabBytes / 16;  // 16-byte cp.async chunks
  static_assert(kTileM * kChunksPerRow % kThreads == 0 && kTileN * kChunksPerRow % kThreads == 0);

  /// One stage in shared memory: rows 0 .. kTileM − 1 hold the A slab,
  /// rows kTileM .. kTileM + kTileN − 1 the W slab, each row kSlabBytes of
  /// codes and 16 bytes of padding.
  struct Stage {
    std::uint8_t rows[kTileM + kTileN][kRowBytes];
  };
  /// The pipeline's shared memory: kStages stages, used round robin (tile kt
  /// in stage kt mod kStages). The kernels take the first byte of stages[0]
  /// and address stage i and row r as byte offsets i·kStageBytes +
  /// r·kRowBytes: indexing the arrays, or an accessor function, changed
  /// nvcc's address arithmetic (the ldmatrix row offsets were no longer
  /// hoisted out of the mainloop; checked with cmake/ptx_diff.sh), so the
  /// struct fixes the layout and its size, and the offsets keep the code the
  /// kernels were written and checked with.
  struct SharedStorage {
    Stage stages[kStages];
  };
  static_assert(sizeof(Stage) == kStageBytes && sizeof(SharedStorage) == kSmemBytes);

  // Issues the cp.async copies of K tile `k_tile` into `stage` (rows of the
  // CTA's A and W tiles; zero-fill past M, N or K).
  template <class ElementOut>
  __device__ static void load_stage(const GemmW4A4Params<ElementOut>& p, std::uint8_t* stage, std::int64_t m0,
                                    std::int64_t n0, std::int64_t k_tile) {
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
};

}  // namespace oq::cuda::kernel
