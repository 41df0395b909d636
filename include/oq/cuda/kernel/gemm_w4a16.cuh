// oq/cuda/kernel/gemm_w4a16.cuh: W4A16 GEMM for decoding (M = 1..64 tokens):
//     y[m, n] = Σ_k a[m, k] · ŵ[n, k],   ŵ[n, k] = s[n, g]·(q[n, k] − z[n, g]),  g = k / group_size
// with a in fp16/bf16 (M × K, row-major), q the packed INT4 weights (N rows of
// format/int4_row.hpp: u4 codes when asymmetric, s4 with z = 0 when
// symmetric), fp32 scales and zero points per (row, group) — per-channel when
// group_size = K, per-group(128) as GPTQ/AWQ checkpoints store them.
//
// The CUDA-core formulation, for M = 1 to a few tokens (decode is bound by
// the weight bytes there; from M ≈ 16 on the FMAs bound it, and
// gemm_w4a16_tensorop.cuh is the tensor-core form). One warp owns one output
// channel n and kTileM tokens; its lanes stride over K and a warp shuffle
// reduction finishes each dot product. Two inner loops:
//   - wide: 16-byte weight loads (32 codes per lane and step, a warp moves
//     512 bytes per load instruction), one (scale, zero) per 32 codes; taken
//     when K and group_size are multiples of 32 and the weight rows are
//     16-byte aligned (ld_w % 16 == 0), the layout of real checkpoints;
//   - narrow: one 32-bit word (8 codes) per lane and step, any layout the
//     launcher accepts.
// Codes become floats without I2F (a quarter-rate instruction that would
// bound decode on its own): a code OR'd into the mantissa of 2^23 is the
// float 2^23 + code exactly (s4 codes go through offset binary, code ^ 8 =
// code + 8, so the bias is 2^23 + 8). Decode at M = 1 is bound by the
// instructions per code as much as by the bytes (32 codes per 16-byte load),
// so the scale leaves the inner loop, Σ_k a·s·(q − z) = s·Σ_k a·(q − z) over
// the codes of one load (one group), and the zero point joins the bias:
// (2^23 + q) − (bias + z) = q − z exactly when bias + z is exact (integer z,
// as GPTQ/AWQ/oq store them; other z take one more subtraction). Three
// instructions per code — extract, subtract, fmaf — and one fmaf per group
// chunk and token. Every lane sums at most 32 products per chunk and
// ⌈K/1024⌉ chunks (wide loop), or 8 per word and ⌈K/256⌉ words (narrow loop),
// in order (the bound the GPU test asserts).
#pragma once

#include <oq/core/int4.hpp>
#include <oq/cuda/numeric.cuh>
#include <oq/cuda/status.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

template <class ElementA, class ElementOut>
struct GemmW4A16Params {
  const ElementA* a = nullptr;  ///< M × K, row-major, rows ld_a elements apart
  std::int64_t ld_a = 0;
  const std::uint8_t* w = nullptr;  ///< N × K/2 bytes, rows ld_w bytes apart
  std::int64_t ld_w = 0;
  const float* scales = nullptr;  ///< N × (K / group_size), row-major
  const float* zeros = nullptr;   ///< same shape; null when symmetric
  bool symmetric = false;         ///< s4 codes (z = 0) instead of u4
  std::int64_t group_size = 0;    ///< divides K, multiple of 8
  ElementOut* y = nullptr;        ///< M × N, row-major, rows ld_y elements apart
  std::int64_t ld_y = 0;
  std::int64_t m = 0, n = 0, k = 0;
};

template <class ElementA, class ElementOut, bool kSymmetric, int kTileM = 8, int kWarps = 4>
struct GemmW4A16 {
  static_assert(sizeof(ElementA) == 2, "activations are 16-bit (fp16 or bf16)");
  using Params = GemmW4A16Params<ElementA, ElementOut>;
  static constexpr int kThreads = 32 * kWarps;

  /// Whether the wide loop applies (see the file comment).
  __host__ __device__ static bool wide(const Params& p) {
    return p.k % 32 == 0 && p.group_size % 32 == 0 && p.ld_w % 16 == 0 &&
           reinterpret_cast<std::uintptr_t>(p.w) % 16 == 0;
  }

  static constexpr float kTwo23 = 8388608.0f;
  /// What biased() adds to every code: 2^23 (u4), 2^23 + 8 (s4, offset binary).
  static constexpr float kBias = kSymmetric ? kTwo23 + 8.0f : kTwo23;

  /// Code j (0..7) of a packed word plus kBias, as a float, exactly, without I2F.
  __device__ __forceinline__ static float biased(std::uint32_t word, int j) {
    const std::uint32_t nibble = (word >> (4 * j)) & 0xFu;
    return __uint_as_float(0x4B000000u | (kSymmetric ? nibble ^ 0x8u : nibble));
  }
  /// Code j (0..7) of a packed word as a float, exactly.
  __device__ __forceinline__ static float code(std::uint32_t word, int j) { return biased(word, j) - kBias; }

  // acc[i] += Σ_j a[m0 + i, k0 + j]·w[j] over the 8 values of one word.
  __device__ __forceinline__ static void accumulate8(const Params& p, std::int64_t m0, std::int64_t k0,
                                                     const float (&w)[8], float (&acc)[kTileM]) {
    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) {
      if (m0 + i < p.m) {
        // Eight 16-bit activations in one 16-byte load.
        const uint4 raw = *reinterpret_cast<const uint4*>(p.a + (m0 + i) * p.ld_a + k0);
        ElementA a8[8];
        memcpy(a8, &raw, sizeof raw);  // register moves; no aliasing through a pointer cast
        OQ_UNROLL
        for (int j = 0; j < 8; ++j) acc[i] = fmaf(cuda::to_float(a8[j]), w[j], acc[i]);
      }
    }
  }

  /// The per-group constants of the inner loop: q − z = biased − offset when
  /// `fused` (offset = kBias + z exactly), else (biased − kBias) − zero.
  struct ZeroPoint {
    float zero, offset;
    bool fused;
    __device__ __forceinline__ explicit ZeroPoint(float z)
        : zero(z), offset(kBias + z), fused(offset - kBias == z) {}
  };

  // part[i] += Σ_j a[m0 + i, k0 + j]·(q_j − z) over the 8 codes of one word.
  __device__ __forceinline__ static void word_step(const Params& p, std::int64_t m0, std::int64_t k0,
                                                   std::uint32_t packed, const ZeroPoint& z, float (&part)[kTileM]) {
    float w[8];
    if (z.fused) {  // per lane (its chunk's group); uniform where a row's zero points are all integers
      OQ_UNROLL
      for (int j = 0; j < 8; ++j) w[j] = biased(packed, j) - z.offset;
    } else {
      OQ_UNROLL
      for (int j = 0; j < 8; ++j) w[j] = code(packed, j) - z.zero;
    }
    accumulate8(p, m0, k0, w, part);
  }

  // acc[i] += scale·part[i]: one group chunk's partial sums, scaled once.
  __device__ __forceinline__ static void add_scaled(float scale, const float (&part)[kTileM], float (&acc)[kTileM]) {
    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) acc[i] = fmaf(scale, part[i], acc[i]);
  }

  __device__ void operator()(const Params& p) const {
    const int lane = threadIdx.x % 32;
    const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
    if (n >= p.n) return;  // whole warp leaves together: n is warp-uniform
    const std::int64_t groups = p.k / p.group_size;
    const float* scales = p.scales + n * groups;
    const float* zeros = kSymmetric ? nullptr : p.zeros + n * groups;
    float acc[kTileM];
    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) acc[i] = 0.0f;

    if (wide(p)) {
      const auto* row = reinterpret_cast<const uint4*>(p.w + n * p.ld_w);
      for (std::int64_t chunk = lane; chunk < p.k / 32; chunk += 32) {
        const uint4 packed = row[chunk];  // codes 32·chunk .. +31, one group
        const std::int64_t k0 = 32 * chunk, g = k0 / p.group_size;
        const ZeroPoint z(kSymmetric ? 0.0f : zeros[g]);
        float part[kTileM] = {};
        word_step(p, m0, k0, packed.x, z, part);
        word_step(p, m0, k0 + 8, packed.y, z, part);
        word_step(p, m0, k0 + 16, packed.z, z, part);
        word_step(p, m0, k0 + 24, packed.w, z, part);
        add_scaled(scales[g], part, acc);
      }
    } else {
      const auto* row = reinterpret_cast<const std::uint32_t*>(p.w + n * p.ld_w);
      for (std::int64_t word = lane; word < p.k / 8; word += 32) {
        const std::int64_t k0 = word * 8;
        const std::int64_t g = k0 / p.group_size;  // a word never straddles groups (group_size % 8 == 0)
        float part[kTileM] = {};
        word_step(p, m0, k0, row[word], ZeroPoint(kSymmetric ? 0.0f : zeros[g]), part);
        add_scaled(scales[g], part, acc);
      }
    }

    OQ_UNROLL
    for (int i = 0; i < kTileM; ++i) {
      float v = acc[i];
      OQ_UNROLL
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
      if (lane == 0 && m0 + i < p.m) p.y[(m0 + i) * p.ld_y + n] = cuda::from_float<ElementOut>(v);
    }
  }
};

template <class ElementA, class ElementOut, bool kSymmetric, int kTileM, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) gemm_w4a16_kernel(const GemmW4A16Params<ElementA, ElementOut> params) {
  GemmW4A16<ElementA, ElementOut, kSymmetric, kTileM, kWarps>{}(params);
}

}  // namespace oq::cuda::kernel
