// oq/cuda/kernel/gemm_w4a16_tensorop.cuh: the W4A16 GEMM of
// kernel/gemm_w4a16.cuh (same Params, kernel/gemm_w4a16_params.cuh; same
// ŵ = s·(q − z), same epilogue) on tensor cores,
// for decode batches: the CUDA-core kernel spends 2·M FMAs per weight and is
// bound by arithmetic from M ≈ 16 on, while this one keeps the weight bytes
// the bound up to M = 64 (beyond, CTA rows of 64 tokens repeat the weights).
//
// Per CTA: 16 output channels (two n8 tiles) × kTileM tokens (16, 32 or 64:
// one to four m16 tiles, the ones past M skipped; the launcher takes the
// smallest that covers M, up to 64, for the registers), 8 warps splitting K: warp w takes the 64-code
// chunks w, w + 8, … (32 bytes of every weight row: one sector where the rows
// are 32-byte aligned, as real checkpoints' are), and the eight partial sums
// meet in shared memory at the end.
//
// One k16 step, mma.sync.m16n8k16 with fp32 accumulators (arch/mma.cuh):
//   B (16 × 8: K × channels) — lane (g, t) needs the weights of row n0 + g at
//     k0 + 2t, +1 and k0 + 8 + 2t, +1: bytes t and 4 + t of the row's 8 bytes
//     for this step (two codes per byte, format/int4_row.hpp), read as one
//     64-bit load that the 4 lanes of a row share. Two forms:
//     - exact (integer zero points of moderate size, as GPTQ/AWQ/oq store
//       them; every lane of the warp must qualify): B holds q − z itself, an
//       integer exact in 16 bits, built without a float conversion — the
//       byte's nibbles OR'd into the mantissas of the 16-bit "magic" M
//       (128 for bf16, 1024 for fp16), giving M + q, minus M + z in one
//       16-bit pair subtraction (~2.5 instructions per code). The mma sums
//       Σ a·(q − z) for one group into a separate accumulator, which is
//       scaled into the output's when the warp's group changes:
//       s·Σ a·(q − z) — no rounding of ŵ at all;
//     - otherwise ŵ = s·(q − z) in fp32 (exact codes, as in gemm_w4a16.cuh),
//       rounded once to the activations' 16-bit type — the one rounding this
//       path adds to the CUDA-core kernel's (tensor cores take 16-bit
//       operands);
//   A (16 × 16: tokens × K) — pairs of consecutive activations straight from
//     global memory (the whole of A is a few hundred KB and stays in cache),
//     zero for tokens past M.
// Requirements beyond gemm_w4a16.cuh's: K and group_size multiples of 16
// (a step never straddles a group), w 8-byte aligned with ld_w a multiple of
// 8 bytes; compute capability 8.0 or newer.
#pragma once

#include <oq/config.hpp>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/gemm_w4a16_codes.cuh>
#include <oq/cuda/kernel/gemm_w4a16_epilogue.cuh>
#include <oq/cuda/kernel/gemm_w4a16_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace oq::cuda::kernel {

template <class ElementA, class ElementOut, bool kSymmetric, int kTileM_ = 64>
struct GemmW4A16TensorOp {
  static_assert(kTileM_ == 16 || kTileM_ == 32 || kTileM_ == 64, "token tile: 16, 32 or 64");
  using Params = GemmW4A16Params<ElementA, ElementOut>;
  static constexpr int kWarps = 8;  // the split of K
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kTileN = 16, kTileM = kTileM_;
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
    using Codes = W4A16Codes<kSymmetric>;  // the exact code-to-float
    const ElementA lo = cuda::from_float<ElementA>(scale * (Codes::code(byte, 0) - zero));
    const ElementA hi = cuda::from_float<ElementA>(scale * (Codes::code(byte, 1) - zero));
    std::uint16_t lo_bits, hi_bits;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    memcpy(&hi_bits, &hi, sizeof hi_bits);
    return static_cast<std::uint32_t>(lo_bits) | (static_cast<std::uint32_t>(hi_bits) << 16);
  }

  // The exact form. kMagic: the 16-bit value whose mantissa's low bits take a
  // nibble as an integer (128 for bf16: unit 1 over [128, 256); 1024 for
  // fp16: unit 1 over [1024, 2048)); kMaxExactZero keeps M + z and q − z
  // integers the 16-bit type holds exactly (|·| ≤ 256 for bf16, 2048 for fp16).
  static constexpr bool kHalf = std::is_same_v<ElementA, __half>;
  static constexpr float kMagic = kHalf ? 1024.0f : 128.0f;
  static constexpr std::uint32_t kMagicBits2 = kHalf ? 0x64006400u : 0x43004300u;
  static constexpr float kMaxExactZero = kHalf ? 1000.0f : 112.0f;

  /// Whether zero point z takes the exact form (symmetric: z = 0, always).
  __host__ __device__ __forceinline__ static bool exact_zero(float z) {
    return kSymmetric || (z == rintf(z) && fabsf(z) <= kMaxExactZero);
  }
  /// M + z (M + 8 for offset-binary s4 codes) in both 16-bit halves.
  __host__ __device__ __forceinline__ static std::uint32_t bias2(float z) {
    const ElementA b = cuda::from_float<ElementA>(kMagic + (kSymmetric ? 8.0f : z));
    std::uint16_t bits;
    memcpy(&bits, &b, sizeof bits);
    return static_cast<std::uint32_t>(bits) * 0x00010001u;
  }
  /// The two codes of `byte` (low nibble first) as q − z, exactly, packed.
  __host__ __device__ __forceinline__ static std::uint32_t exact_pair(std::uint32_t byte, std::uint32_t bias) {
    if constexpr (kSymmetric) byte ^= 0x88u;  // s4 → offset binary q + 8
    const std::uint32_t biased = (byte & 0x0Fu) | ((byte & 0xF0u) << 12) | kMagicBits2;  // M + q, M + q′
    std::uint32_t out;
    if constexpr (kHalf) {
      __half2 x, y;
      memcpy(&x, &biased, 4);
      memcpy(&y, &bias, 4);
      const __half2 d = __hsub2(x, y);
      memcpy(&out, &d, 4);
    } else {
      __nv_bfloat162 x, y;
      memcpy(&x, &biased, 4);
      memcpy(&y, &bias, 4);
      const __nv_bfloat162 d = __hsub2(x, y);
      memcpy(&out, &d, 4);
    }
    return out;
  }

  __device__ void operator()(const Params& p, SharedStorage& shared) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / 4, thread_in_group = lane % 4;
    const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    const std::int64_t m_tiles = (p.m - m0 + 15) / 16;  // ≥ 1: the grid covers only rows < M
    const std::int64_t groups = p.k / p.group_size;

    // c: scaled sums (the rounded form adds into it directly); t: Σ a·(q − z)
    // of group t_group in the exact form, scaled into c by fold().
    float c[kMmaM][kMmaN][4], t[kMmaM][kMmaN][4];
    OQ_UNROLL
    for (int i = 0; i < kMmaM; ++i) {
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 4; ++e) c[i][j][e] = t[i][j][e] = 0.0f;
      }
    }
    std::int64_t t_group = -1;
    // Accumulator e of n-tile j is column n0 + 8j + 2·thread_in_group + e % 2
    // (arch::MmaAccumulatorLayout).
    auto fold = [&] {
      if (t_group < 0) return;
      OQ_UNROLL
      for (int j = 0; j < kMmaN; ++j) {
        OQ_UNROLL
        for (int e = 0; e < 2; ++e) {
          const std::int64_t col = arch::MmaAccumulatorLayout::col(n0 + 8 * j, thread_in_group, e);
          const float scale = col < p.n ? p.scales[col * groups + t_group] : 0.0f;
          OQ_UNROLL
          for (int i = 0; i < kMmaM; ++i) {
            c[i][j][e] = fmaf(scale, t[i][j][e], c[i][j][e]);
            c[i][j][e + 2] = fmaf(scale, t[i][j][e + 2], c[i][j][e + 2]);
            t[i][j][e] = t[i][j][e + 2] = 0.0f;
          }
        }
      }
      t_group = -1;
    };

    for (std::int64_t chunk = warp; chunk * kChunk < p.k; chunk += kWarps) {
      OQ_UNROLL
      for (int step = 0; step < kChunk / 16; ++step) {
        const std::int64_t k0 = chunk * kChunk + 16 * step;
        if (k0 >= p.k) break;  // warp-uniform: K is a multiple of 16
        const std::int64_t g = k0 / p.group_size;
        std::uint64_t codes[kMmaN];
        float zero[kMmaN];
        bool exact = true;
        OQ_UNROLL
        for (int j = 0; j < kMmaN; ++j) {
          const std::int64_t n = n0 + 8 * j + group;
          codes[j] = n < p.n ? *reinterpret_cast<const std::uint64_t*>(p.w + n * p.ld_w + k0 / 2) : 0u;
          zero[j] = kSymmetric || n >= p.n ? 0.0f : p.zeros[n * groups + g];
          exact = exact && exact_zero(zero[j]);
        }
        exact = __all_sync(0xFFFFFFFFu, exact);  // one form per warp and step
        std::uint32_t b[kMmaN][2];
        OQ_UNROLL
        for (int j = 0; j < kMmaN; ++j) {
          const std::int64_t n = n0 + 8 * j + group;
          const auto byte0 = static_cast<std::uint32_t>(codes[j] >> (8 * thread_in_group)) & 0xFFu;
          const auto byte1 = static_cast<std::uint32_t>(codes[j] >> (8 * (4 + thread_in_group))) & 0xFFu;
          if (n >= p.n) {
            b[j][0] = b[j][1] = 0u;
          } else if (exact) {
            const std::uint32_t bias = bias2(zero[j]);
            b[j][0] = exact_pair(byte0, bias);
            b[j][1] = exact_pair(byte1, bias);
          } else {
            const float scale = p.scales[n * groups + g];
            b[j][0] = weights2(byte0, scale, zero[j]);
            b[j][1] = weights2(byte1, scale, zero[j]);
          }
        }
        if (exact && g != t_group) {
          fold();
          t_group = g;
        }
        OQ_UNROLL
        for (int i = 0; i < kMmaM; ++i) {
          if (i < m_tiles) {  // warp-uniform
            const std::int64_t row = m0 + 16 * i + group;
            const std::int64_t ka = k0 + 2 * thread_in_group;
            const std::uint32_t a[4] = {activations2(p, row, ka), activations2(p, row + 8, ka),
                                        activations2(p, row, ka + 8), activations2(p, row + 8, ka + 8)};
            if (exact) {  // warp-uniform; two call sites keep both accumulator sets in registers
              OQ_UNROLL
              for (int j = 0; j < kMmaN; ++j) arch::mma_m16n8k16_f32<ElementA>(t[i][j], a, b[j]);
            } else {
              OQ_UNROLL
              for (int j = 0; j < kMmaN; ++j) arch::mma_m16n8k16_f32<ElementA>(c[i][j], a, b[j]);
            }
          }
        }
      }
    }
    fold();

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
    using Acc = arch::MmaAccumulatorLayout;
    constexpr int kPerWarp = kMmaM * kMmaN * 4 * 32;
    for (int o = threadIdx.x; o < kPerWarp; o += kThreads) {
      const int out_lane = o % 32, e = (o / 32) % 4, j = (o / 128) % kMmaN, i = o / (128 * kMmaN);
      float sum = 0.0f;
      OQ_UNROLL
      for (int w = 0; w < kWarps; ++w) sum += shared.partial[w][i][j][e][out_lane];
      const std::int64_t row = Acc::row(m0 + 16 * i, Acc::group(out_lane), e);
      const std::int64_t col = Acc::col(n0 + 8 * j, Acc::thread_in_group(out_lane), e);
      if (row < p.m && col < p.n) store_w4a16_output(p, row, col, sum);
    }
  }
};

template <class ElementA, class ElementOut, bool kSymmetric, int kTileM>
__global__ void __launch_bounds__(256) gemm_w4a16_tensorop_kernel(const GemmW4A16Params<ElementA, ElementOut> params) {
  using Kernel = GemmW4A16TensorOp<ElementA, ElementOut, kSymmetric, kTileM>;
  __shared__ typename Kernel::SharedStorage shared;
  Kernel{}(params, shared);
}

}  // namespace oq::cuda::kernel
