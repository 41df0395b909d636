// oq/cuda/kernel/gemm_w4a16.cuh: W4A16 GEMM for decoding (M = 1..64 tokens),
// y = a·ŵᵀ with ŵ = s·(q − z) per group (kernel/gemm_w4a16_params.cuh has
// the arguments and the formula).
//
// The CUDA-core formulation, for M = 1 to a few tokens (decode is bound by
// the weight bytes there; from M ≈ 16 on the FMAs bound it, and
// gemm_w4a16_tensorop.cuh is the tensor-core form). One warp owns one output
// channel n and kTileM tokens; its lanes stride over K and a warp shuffle
// reduction finishes each dot product (no shared memory, so no SharedStorage). Two inner loops:
//   - wide: 16-byte weight loads (32 codes per lane and step, a warp moves
//     512 bytes per load instruction), one (scale, zero) per 32 codes; taken
//     when K and group_size are multiples of 32 and the weight rows are
//     16-byte aligned (ld_w % 16 == 0), the layout of real checkpoints;
//   - narrow: one 32-bit word (8 codes) per lane and step, any layout the
//     launcher accepts.
// Codes become floats without I2F (kernel/gemm_w4a16_codes.cuh: 2^23 + code,
// exactly). Decode at M = 1 is bound by the
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

#include <oq/config.hpp>
#include <oq/cuda/kernel/gemm_w4a16_codes.cuh>
#include <oq/cuda/kernel/gemm_w4a16_epilogue.cuh>
#include <oq/cuda/kernel/gemm_w4a16_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

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

  using Codes = W4A16Codes<kSymmetric>;
  static constexpr float kBias = Codes::kBias;

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
      for (int j = 0; j < 8; ++j) w[j] = Codes::biased(packed, j) - z.offset;
    } else {
      OQ_UNROLL
      for (int j = 0; j < 8; ++j) w[j] = Codes::code(packed, j) - z.zero;
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
      if (lane == 0 && m0 + i < p.m) store_w4a16_output(p, m0 + i, n, v);
    }
  }
};

template <class ElementA, class ElementOut, bool kSymmetric, int kTileM, int kWarps>
__global__ void __launch_bounds__(32 * kWarps) gemm_w4a16_kernel(const GemmW4A16Params<ElementA, ElementOut> params) {
  GemmW4A16<ElementA, ElementOut, kSymmetric, kTileM, kWarps>{}(params);
}

}  // namespace oq::cuda::kernel
