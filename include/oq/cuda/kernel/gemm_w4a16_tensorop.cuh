// oq/cuda/kernel/gemm_w4a16_tensorop.cuh: the W4A16 GEMM of
// kernel/gemm_w4a16.cuh (same Params, same ŵ = s·(q − z)) on tensor cores,
// for decode batches: the CUDA-core kernel spends 2·M FMAs per weight and is
// bound by arithmetic from M ≈ 16 on, while this one keeps the weight bytes
// the bound up to M = 64 (beyond, CTA rows of 64 tokens repeat the weights).
//
// Per CTA: 16 output channels (two n8 tiles) × 64 tokens (four m16 tiles,
// the ones past M skipped), 8 warps splitting K: warp w takes the 64-code
// chunks w, w + 8, … (32 bytes of every weight row: one sector where the rows
// are 32-byte aligned, as real checkpoints' are), and the eight partial sums
// meet in shared memory at the end.
//
// One k16 step, mma.sync.m16n8k16 with fp32 accumulators (arch/mma.cuh):
//   B (16 × 8: K × channels) — lane (g, t) needs ŵ[n0 + g][k0 + 2t, +1] and
//     [k0 + 8 + 2t, +1]: bytes t and 4 + t of the row's 8 bytes for this
//     step (two codes per byte, format/int4_row.hpp), read as one 64-bit
//     load that the 4 lanes of a row share; each code becomes
//     ŵ = s·(q − z) in fp32 (exact codes, as in gemm_w4a16.cuh) and is then
//     rounded once to the activations' 16-bit type — the one rounding this
//     path adds to the CUDA-core kernel's (tensor cores take 16-bit operands);
//   A (16 × 16: tokens × K) — pairs of consecutive activations straight from
//     global memory (the whole of A is a few hundred KB and stays in cache),
//     zero for tokens past M.
// Requirements beyond gemm_w4a16.cuh's: K and group_size multiples of 16
// (a step never straddles a group), w 8-byte aligned with ld_w a multiple of
// 8 bytes; compute capability 8.0 or newer.
#pragma once

#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/gemm_w4a16.cuh>
#include <oq/cuda/numeric.cuh>

#include <cstdint>
#include <cstring>

namespace oq::cuda::kernel {

template <class ElementA, class ElementOut, bool kSymmetric>
struct GemmW4A16TensorOp {
  using Params = GemmW4A16Params<ElementA, ElementOut>;
  static constexpr int kWarps = 8;  // the split of K
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kTileN = 16, kTileM = 64;
  static constexpr int kMmaN = kTileN / 8, kMmaM = kTileM / 16;
  static constexpr int kChunk = 64;  // codes of K per warp and chunk: 4 k16 steps, 32 bytes per row

  struct SharedStorage {
    // partial[w][i][j][e][lane]: warp w's accumulator e of mma tile (i, j) in
    // lane `lane` — lane-contiguous, so both the writes and the sums are
    // conflict-free.
    float partial[kWarps][kMmaM][kMmaN][4][32];
  };

  // Two consecutive 16-bit activations A[row][k], A[row][k + 1] (k even) as one
  // register, lower k in the low half; zero past M.
  __device__ __forceinline__ static std::uint32_t activations2(const Params& p, std::int64_t row, std::int64_t k) {
    if (row >= p.m) return 0u;
    return *reinterpret_cast<const std::uint32_t*>(p.a + row * p.ld_a + k);
  }

  // The two codes of `byte` (K order: low nibble first) as ŵ in ElementA, packed.
  __device__ __forceinline__ static std::uint32_t weights2(std::uint32_t byte, float scale, float zero) {
    using Codes = GemmW4A16<ElementA, ElementOut, kSymmetric, 1, 1>;  // its exact code-to-float
    const ElementA lo = cuda::from_float<ElementA>(scale * (Codes::code(byte, 0) - zero));
    const ElementA hi = cuda::from_float<ElementA>(scale * (Codes::code(byte, 1) - zero));
    std::uint16_t lo_bits, hi_bits;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    memcpy(&hi_bits, &hi, sizeof hi_bits);
    return static_cast<std::uint32_t>(lo_bits) | (static_cast<std::uint32_t>(hi_bits) << 16);
  }

  __device__ void operator()(const Params& p, SharedStorage& shared) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    const std::int64_t m_tiles = (p.m - m0 + 15) / 16;  // ≥ 1: the grid covers only rows < M
    const std::int64_t groups = p.k / p.group_size;

    float c[kMmaM][kMmaN][4];
    OQ_UNROLL
    for (int i = 0; i < kMmaM; ++i) {
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) c[i][j][e] = 0.0f;
      }
    }

    for (std::int64_t chunk = warp; chunk * kChunk < p.k; chunk += kWarps) {
      OQ_UNROLL
      for (int step = 0; step < kChunk / 16; ++step) {
        const std::int64_t k0 = chunk * kChunk + 16 * step;
        if (k0 >= p.k) break;  // warp-uniform: K is a multiple of 16
        std::uint32_t b[kMmaN][2];
        OQ_UNROLL
        for (int j = 0; j < kMmaN; ++j) {
          const std::int64_t n = n0 + 8 * j + group;
          if (n < p.n) {
            const std::uint64_t codes = *reinterpret_cast<const std::uint64_t*>(p.w + n * p.ld_w + k0 / 2);
            const std::int64_t g = k0 / p.group_size;
            const float scale = p.scales[n * groups + g];
            const float zero = kSymmetric ? 0.0f : p.zeros[n * groups + g];
            b[j][0] = weights2(static_cast<std::uint32_t>(codes >> (8 * thread_in_group)) & 0xFFu, scale, zero);
            b[j][1] = weights2(static_cast<std::uint32_t>(codes >> (8 * (4 + thread_in_group))) & 0xFFu, scale, zero);
          } else {
            b[j][0] = b[j][1] = 0u;
          }
        }
        OQ_UNROLL
        for (int i = 0; i < kMmaM; ++i) {
          if (i < m_tiles) {  // warp-uniform
            const std::int64_t row = m0 + 16 * i + group;
            const std::int64_t ka = k0 + 2 * thread_in_group;
            const std::uint32_t a[4] = {activations2(p, row, ka), activations2(p, row + 8, ka),
                                        activations2(p, row, ka + 8), activations2(p, row + 8, ka + 8)};
            OQ_UNROLL
            for (int j = 0; j < kMmaN; ++j) arch::mma_m16n8k16_f32<ElementA>(c[i][j], a, b[j]);
          }
        }
      }
    }

    // Split-K: every warp's partial sums to shared memory, then each thread
    // sums kWarps of them for kTileM·kTileN / kThreads outputs.
    OQ_UNROLL
    for (int i = 0; i < kMmaM; ++i) {
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) shared.partial[warp][i][j][e][lane] = c[i][j][e];
      }
    }
    __syncthreads();
    constexpr int kPerWarp = kMmaM * kMmaN * 4 * 32;
    for (int o = threadIdx.x; o < kPerWarp; o += kThreads) {
      const int out_lane = o % 32, e = (o / 32) % 4, j = (o / 128) % kMmaN, i = o / (128 * kMmaN);
      float sum = 0.0f;
      OQ_UNROLL
      for (int w = 0; w < kWarps; ++w) sum += shared.partial[w][i][j][e][out_lane];
      const std::int64_t row = m0 + 16 * i + out_lane / 4 + (e >= 2 ? 8 : 0);
      const std::int64_t col = n0 + 8 * j + 2 * (out_lane % 4) + (e % 2);
      if (row < p.m && col < p.n) p.y[row * p.ld_y + col] = cuda::from_float<ElementOut>(sum);
    }
  }
};

template <class ElementA, class ElementOut, bool kSymmetric>
__global__ void __launch_bounds__(256) gemm_w4a16_tensorop_kernel(const GemmW4A16Params<ElementA, ElementOut> params) {
  using Kernel = GemmW4A16TensorOp<ElementA, ElementOut, kSymmetric>;
  __shared__ typename Kernel::SharedStorage shared;
  Kernel{}(params, shared);
}

}  // namespace oq::cuda::kernel
