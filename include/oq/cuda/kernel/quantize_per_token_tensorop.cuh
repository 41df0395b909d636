// oq/cuda/kernel/quantize_per_token_tensorop.cuh: per-token quantization of
// X·diag(R, …, R) (DuQuant's block rotation, docs/design.md §2, §6) with the product
// on tensor cores — the form of kernel/quantize_per_token.cuh's general-R
// path that can keep up with memory.
//
// Why: a b × b rotation costs b multiply-adds per element. For b = 128 the
// CUDA-core loop needs 128 FMAs per 2.5 bytes moved, ~7× what an H100/H200
// issues in the copy time of those bytes; on mma.sync one pass of the
// product (one term) takes about 2/3 of the copy time (issue 6).
//
// Precision: tensor cores take 16-bit operands. X is already 16-bit (bf16 or
// fp16, exact); R is split into kTerms 16-bit terms R = R₁ + R₂ (+ rest),
// R₁ = round(R), R₂ = round(R − R₁), and X·R₁ + X·R₂ is accumulated in fp32:
//   kTerms = 2: R is carried to ~2⁻¹⁷ relative (bf16; fp16 ~2⁻²²), below the
//               fp32 accumulation error of the CUDA-core path — the scales
//               agree with it to a few 1e-6 and codes differ only at ties;
//   kTerms = 1: the kernel quantizes X·round(R) — R rounded to the 16-bit type
//               (2⁻⁹ relative for bf16), which is no longer exactly
//               orthogonal. An engine that takes this path should fold the
//               same rounded matrix (round(R)⁻¹, not Rᵀ) into the weights;
//               half the tensor work of kTerms = 2.
//
// CTA: 8 tokens (the mma's N) × all K (half of it in kResidentYPair),
// kGroups × (kBlock / 32) warps. Each
// warp owns 32 output channels of a block (two m16 tiles) and keeps their
// column slice of R — all kBlock input channels, kTerms terms — in registers
// for the whole kernel (kBlock/2 registers per term), since R is the same
// for every block and every token; group γ of warps takes blocks γ, γ + G, ….
// The CTA loops over 8-token tiles (a persistent grid), so R is read once
// per CTA.
//
// One 8-token tile, in one of three RotationPasses (the launcher takes the
// first that fits in shared memory and the device):
//   kResidentY — X streams through a ring of kStages slots (cp.async,
//     kStages − 1 stages ahead, up to ~24 KiB in flight: see kStages); pass 1
//     multiplies each block, Y = X_block·R on
//     mma.sync.m16n8k16 (A = Rᵀ slice, B = the 8 tokens' X), and keeps Y in
//     shared memory as fp32 (8·K·4 bytes: 128 KiB at K = 4096) with each
//     token's min/max; the min/max meet across lanes and warps → scale and
//     zero point per token (core/quant_math.hpp, as on the host); pass 2
//     quantizes the Y rows with 32-bit stores while the ring already loads
//     the next tile. One tensor pass.
//   kResidentYPair — kResidentY for K whose Y does not fit one CTA (344 KiB
//     at K = 11008), on sm_90: a cluster of two CTAs splits each row's
//     blocks, and the per-token min/max and code sums meet through
//     distributed shared memory (two cluster barriers per tile).
//   kRecompute — for K whose Y does not fit, before sm_90: all 8
//     rows of X stay in shared memory (8·K·2 bytes, 172 KiB at K = 11008),
//     loaded kStages stages ahead; pass 1 keeps only the min/max of Y;
//     pass 2 computes Y again, quantizes it, stages one block's codes in
//     shared memory (double-buffered) and packs them into 32-bit words, one
//     coalesced store per thread. Twice the tensor work.
//
// B fragments without a shuffle: the mma's K order inside a block is free as
// long as A and B agree, so lane (g, t) reads its token g's channels as four
// 16-byte chunks 4i + t (RotationFragmentLayout::chunk) and A is gathered
// from R in the same permuted order (input_channel). With rows padded to a
// stride ≡ 64 (mod 128) bytes the 8 lanes of each 128-bit load phase hit
// distinct banks.
//
// Requirements (device/quantize_per_token_tensorop.cuh checks them): a
// rotation of size b = kBlock (32, 64, 128 or 256) dividing K; x
// 16-byte aligned with ld_x a multiple of 8 elements; codes 4-byte aligned
// with ld_codes a multiple of 4; the shared memory of the passes (see
// dynamic_smem_bytes).
// Outputs are those of kernel/quantize_per_token.cuh (codes, scales, zeros,
// code_sums), for bits 4 or 8, symmetric or not, with the same NaN/Inf caveat.
#pragma once

#include <oq/config.hpp>
#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/cuda/arch/cluster.cuh>
#include <oq/cuda/arch/memory.cuh>
#include <oq/cuda/arch/mma.cuh>
#include <oq/cuda/kernel/quantize_per_token_epilogue.cuh>
#include <oq/cuda/kernel/quantize_per_token_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace oq::cuda::kernel {

/// Where every fragment element of the rotation's mma.sync.m16n8k16 comes
/// from, for one b-wide block (b = kBlock). Host and device: the tests replay
/// a warp on the host through these functions and the PTX fragment layout.
///
/// g = lane / 4, t = lane % 4. Logical k (0..15) of k-tile j is the mma's K
/// index; the block's input channel it stands for is
///   input_channel(j, k) = 32·⌊j/2⌋ + 8·t' + 4·(j mod 2) + 2·h + e,
///   with t' = (k mod 8) / 2, h = k / 8, e = k mod 2,
/// so that b[h] of k-tile j (k = 2t + 8h + e) is word 2·(j mod 2) + h of the
/// lane's 16-byte chunk ⌊j/2⌋ — channels 8·(4·⌊j/2⌋ + t) … + 7.
template <int kBlock>
struct RotationFragmentLayout {
  static_assert(kBlock == 32 || kBlock == 64 || kBlock == 128 || kBlock == 256, "kBlock: 32, 64, 128 or 256");
  static constexpr int kKTiles = kBlock / 16;  // k16 steps per block
  static constexpr int kChunks = kBlock / 32;  // 16-byte chunks a lane reads per block of its token

  /// The block's input channel that logical k `k` of k-tile `j` stands for.
  __host__ __device__ static constexpr int input_channel(int j, int k) {
    return 32 * (j >> 1) + 8 * ((k & 7) >> 1) + 4 * (j & 1) + 2 * (k >> 3) + (k & 1);
  }
  /// Token (B column) whose channels the lane reads.
  __host__ __device__ static constexpr int b_token(int lane) { return lane >> 2; }
  /// Index (in units of 8 channels within the block) of the lane's i-th chunk.
  __host__ __device__ static constexpr int chunk(int lane, int i) { return 4 * i + (lane & 3); }
  /// Word of chunk ⌊j/2⌋ that is b[h] of k-tile j.
  __host__ __device__ static constexpr int b_word(int j, int h) { return 2 * (j & 1) + h; }
  /// Output channel (within the block) of A register q of m-tile mt, warp w.
  __host__ __device__ static constexpr int a_output(int warp, int mt, int lane, int q) {
    return 32 * warp + 16 * mt + (lane >> 2) + 8 * (q & 1);
  }
  /// Input channel of half e (0: low) of A register q of k-tile j.
  __host__ __device__ static constexpr int a_input(int j, int lane, int q, int e) {
    return input_channel(j, 2 * (lane & 3) + 8 * (q >> 1) + e);
  }
  /// Output channel and token of accumulator c of m-tile mt, warp w: the
  /// accumulator's row and column (arch::MmaAccumulatorLayout), A being Rᵀ.
  __host__ __device__ static constexpr int acc_channel(int warp, int mt, int lane, int c) {
    return arch::MmaAccumulatorLayout::row(32 * warp + 16 * mt, lane >> 2, c);
  }
  __host__ __device__ static constexpr int acc_token(int lane, int c) { return arch::MmaAccumulatorLayout::col(0, lane & 3, c); }
};

/// The raw 16 bits of a bf16 or fp16 value.
template <class Element>
__host__ __device__ inline std::uint16_t bits_of(Element v) {
  std::uint16_t b;
  memcpy(&b, &v, sizeof b);
  return b;
}

/// A warp's slice of R as mma A fragments: a[term][mt][j][q], Rᵀ rows
/// 32·warp + 16·mt + … (output channels), columns the permuted input
/// channels of k-tile j. term 0 holds round(R), term 1 round(R − round(R)).
template <class Element, int kBlock, int kTerms>
struct RotationOperand {
  static_assert(std::is_same_v<Element, __nv_bfloat16> || std::is_same_v<Element, __half>,
                "tensor cores take bf16 or fp16 operands");
  static_assert(kTerms == 1 || kTerms == 2, "kTerms: 1 or 2");
  using Layout = RotationFragmentLayout<kBlock>;
  std::uint32_t a[kTerms][2][Layout::kKTiles][4];

  /// From R (kBlock × kBlock floats, row-major: R[input][output]).
  __host__ __device__ void load(const float* rotation, int warp, int lane) {
    OQ_UNROLL
    for (int mt = 0; mt < 2; ++mt) {
      OQ_UNROLL
      for (int j = 0; j < Layout::kKTiles; ++j) {
        OQ_UNROLL
        for (int q = 0; q < 4; ++q) {
          std::uint32_t word[kTerms] = {};
          OQ_UNROLL
          for (int e = 0; e < 2; ++e) {
            float rest = rotation[Layout::a_input(j, lane, q, e) * kBlock + Layout::a_output(warp, mt, lane, q)];
            OQ_UNROLL
            for (int term = 0; term < kTerms; ++term) {
              const Element v = from_float<Element>(rest);
              rest -= to_float(v);  // exact: v is rest rounded to fewer bits
              word[term] |= static_cast<std::uint32_t>(bits_of(v)) << (16 * e);
            }
          }
          OQ_UNROLL
          for (int term = 0; term < kTerms; ++term) a[term][mt][j][q] = word[term];
        }
      }
    }
  }
};

/// Where the rotated rows wait for their scale (see the file comment).
enum class RotationPasses {
  kResidentY,      ///< X streams through a ring of stages, Y = X·R stays in shared memory as fp32: one tensor pass
  kRecompute,      ///< X stays in shared memory, Y is computed twice (min/max, then codes): for K too large for Y
  kResidentYPair,  ///< kResidentY with each row split over a cluster of two CTAs (sm_90): Y of twice the K
};

/// Bytes between two tokens' rows of X (16-bit) in the kernel's shared
/// memory: ≡ 64 (mod 128), so that tokens 2p and 2p + 1 of a 128-bit load
/// phase fall in different bank halves. `elements` is a multiple of 32:
/// 2·elements ≡ 0 or 64 (mod 128).
__host__ __device__ constexpr std::int64_t rotation_x_stride_bytes(std::int64_t elements) {
  return elements * 2 % 128 == 0 ? elements * 2 + 64 : elements * 2;
}

template <class Element, int kBlock = 128, int kTerms = 2, int kGroups = 1,
          RotationPasses kPasses = RotationPasses::kResidentY, int kRingSlots = 0>
struct QuantizePerTokenTensorOp {
  static_assert(kGroups == 1 || kGroups == 2, "kGroups: 1 or 2");
  static_assert(kTerms * kBlock <= 256, "R's slice must fit in registers: kTerms·kBlock/2 ≤ 128 per thread");
  static_assert(kGroups * kBlock <= 256, "at most 256 threads, so that each may hold 255 registers");
  using Params = QuantizePerTokenParams<Element>;
  using Layout = RotationFragmentLayout<kBlock>;
  using Operand = RotationOperand<Element, kBlock, kTerms>;
  static constexpr bool kResidentY = kPasses != RotationPasses::kRecompute;
  static constexpr int kCluster = kPasses == RotationPasses::kResidentYPair ? 2 : 1;  // CTAs sharing a row
  static constexpr int kTokens = 8;  // the mma's N
  static constexpr int kWarpsPerGroup = kBlock / 32;
  static constexpr int kWarps = kGroups * kWarpsPerGroup;
  static constexpr int kThreads = 32 * kWarps;  // = kGroups·kBlock: one 16-byte copy each per stage
  // Stages of kGroups blocks: in flight (kRecompute: all resident, 8 ahead),
  // or the ring's slots (kResidentY: kStages − 1 ahead while one is
  // multiplied). The resident passes run one CTA per SM at large K, so the
  // ring alone must cover the memory latency: by Little's law an H100/H200
  // streams ~3.4–4.8 TB/s over ~0.7 µs across 132 SMs only with ~20–25 KiB
  // in flight per SM. kRingSlots = 0 picks the largest power of two (so that
  // stage mod kStages is a mask: a 64-bit modulo by 5 or 10 costs registers,
  // and spilled) with at most ~24 KiB in flight, 4 to 16 slots. A slot holds
  // 8 tokens × one block, padded: 2.5 KiB at b = 128, so 8 slots there with
  // one group (17.5 KiB ahead) and 4 with two (15 KiB); 16 at b = 32, and
  // at b = 64 with one group. A positive kRingSlots (a power of two) forces
  // that many (benchmarks compare).
  static constexpr int kRingSlotBytes = kTokens * static_cast<int>(rotation_x_stride_bytes(kBlock));
  static constexpr int kAutoRingSlots = std::clamp(
      static_cast<int>(std::bit_floor(static_cast<unsigned>(24 * 1024 / (kGroups * kRingSlotBytes) + 1))), 4, 16);
  static_assert(kRingSlots == 0 || (kRingSlots >= 2 && kRingSlots <= 32 && std::has_single_bit(unsigned(kRingSlots))),
                "kRingSlots: 0 (auto) or a power of two in 2..32");
  static constexpr int kStages = kResidentY ? (kRingSlots > 0 ? kRingSlots : kAutoRingSlots) : 8;

  // kRecompute's staging rows: 16 bytes of padding put tokens 2t and 2t + 2
  // (lanes t and t + 1 of a store) in different banks.
  static constexpr int kStagedRow = kBlock + 16;

  // kRecompute: one block's codes per group, double-buffered. kResidentY
  // packs from Y in place and has none (an empty base takes no bytes).
  struct StagedCodes {
    alignas(16) std::uint8_t staged[2][kGroups][kTokens][kStagedRow];
  };
  struct NoStagedCodes {};

  struct SharedStorage : std::conditional_t<kResidentY, NoStagedCodes, StagedCodes> {
    float lo[kWarps][kTokens];
    float hi[kWarps][kTokens];
    int sum[kWarps][kTokens];
    float scale[kTokens];
    float zero[kTokens];
    // kResidentYPair: this CTA's half of the tile's per-token min, max and
    // code sum, which the other CTA of the cluster reads.
    float pair_lo[kTokens];
    float pair_hi[kTokens];
    int pair_sum[kTokens];
  };

  /// Bytes between two tokens' rows of X in shared memory (the whole row in
  /// kRecompute, one block in a ring slot in kResidentY): rotation_x_stride_bytes.
  __host__ __device__ static constexpr std::int64_t x_stride_bytes(std::int64_t elements) {
    return rotation_x_stride_bytes(elements);
  }
  /// Floats between two tokens' rows of Y (kResidentY): ≡ 4 (mod 16), so that
  /// the accumulator stores — lanes (g, t) at token 2t (+1), channel +g — hit
  /// 32 distinct banks (2t·stride + g ≡ 8t + g mod 32).
  __host__ __device__ static constexpr std::int64_t y_stride_floats(std::int64_t cols) { return cols + 4; }
  __host__ __device__ static constexpr std::int64_t ring_slot_bytes() { return kRingSlotBytes; }

  /// The channels of a row one CTA holds: all, or (kResidentYPair) the larger
  /// half of the blocks — rank 0 takes blocks [0, ⌈B/2⌉), rank 1 the rest.
  __host__ __device__ static constexpr std::int64_t cta_cols(std::int64_t cols) {
    return (cols / kBlock + kCluster - 1) / kCluster * kBlock;
  }

  static std::size_t dynamic_smem_bytes(const Params& p) {
    if constexpr (kResidentY) {
      return static_cast<std::size_t>(kTokens * y_stride_floats(cta_cols(p.cols)) * 4 +
                                      kStages * kGroups * ring_slot_bytes());
    } else {
      return static_cast<std::size_t>(kTokens * x_stride_bytes(p.cols));
    }
  }

  // Y = X_block·R for the 8 tokens whose block starts at `rows` (token n at
  // rows + n·stride): acc[mt][c] is output channel acc_channel(warp, mt,
  // lane, c) of token acc_token(lane, c). The terms and the two k-tile
  // parities accumulate separately — eight independent mma chains of kChunks
  // steps instead of one of 2·kTerms·kChunks.
  __device__ __forceinline__ static void rotate_block(const Operand& r, const unsigned char* rows, std::int64_t stride,
                                                      int lane, float (&acc)[2][4]) {
    const unsigned char* row = rows + Layout::b_token(lane) * stride;
    float part[kTerms][2][2][4] = {};
    OQ_UNROLL
    for (int i = 0; i < Layout::kChunks; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(row + 16 * Layout::chunk(lane, i));
      const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
      OQ_UNROLL
      for (int parity = 0; parity < 2; ++parity) {
        const int j = 2 * i + parity;
        const std::uint32_t b[2] = {w[Layout::b_word(j, 0)], w[Layout::b_word(j, 1)]};
        OQ_UNROLL
        for (int term = 0; term < kTerms; ++term) {
          OQ_UNROLL
          for (int mt = 0; mt < 2; ++mt) arch::mma_m16n8k16_f32<Element>(part[term][mt][parity], r.a[term][mt][j], b);
        }
      }
    }
    OQ_UNROLL
    for (int mt = 0; mt < 2; ++mt) {
      OQ_UNROLL
      for (int c = 0; c < 4; ++c) {
        float y = part[kTerms - 1][mt][0][c] + part[kTerms - 1][mt][1][c];  // smallest term first
        OQ_UNROLL
        for (int term = kTerms - 2; term >= 0; --term) y += part[term][mt][0][c] + part[term][mt][1][c];
        acc[mt][c] = y;
      }
    }
  }

  // kRecompute: packs group-thread tau's share of one staged block and stores
  // it: 4-bit, one word (8 codes) per thread; 8-bit, two words (4 codes each).
  __device__ __forceinline__ static void store_block(const Params& p, const std::uint8_t (&staged)[kTokens][kStagedRow],
                                                     std::int64_t first, std::int64_t block, int tau) {
    if (p.bits == 4) {
      constexpr int kWordsPerToken = kBlock / 8;
      const int token = tau / kWordsPerToken, w = tau % kWordsPerToken;
      if (first + token >= p.rows) return;
      const uint2 codes = *reinterpret_cast<const uint2*>(&staged[token][8 * w]);
      std::uint32_t word = 0;
      OQ_UNROLL
      for (int byte = 0; byte < 4; ++byte) {
        const std::uint32_t pair = (byte < 2 ? codes.x : codes.y) >> (16 * (byte & 1));
        word |= static_cast<std::uint32_t>(core::pack_u4x2(pair & 0xFFu, (pair >> 8) & 0xFFu)) << (8 * byte);
      }
      std::uint8_t* out = p.codes + (first + token) * p.ld_codes + block * (kBlock / 2);
      reinterpret_cast<std::uint32_t*>(out)[w] = word;
    } else {
      constexpr int kWordsPerToken = kBlock / 4;
      OQ_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int omega = tau + half * kBlock;
        const int token = omega / kWordsPerToken, w = omega % kWordsPerToken;
        if (first + token >= p.rows) continue;
        std::uint8_t* out = p.codes + (first + token) * p.ld_codes + block * kBlock;
        reinterpret_cast<std::uint32_t*>(out)[w] = *reinterpret_cast<const std::uint32_t*>(&staged[token][4 * w]);
      }
    }
  }

  // Reduces a per-lane pair (tokens 2t, 2t + 1) over the lanes with the same t
  // and writes the warp's result to dst[warp][token].
  template <class T, class Op>
  __device__ __forceinline__ static void warp_reduce_pair(T (&v)[2], Op op, T (&dst)[kWarps][kTokens], int warp,
                                                          int lane) {
    OQ_UNROLL
    for (int e = 0; e < 2; ++e) {
      OQ_UNROLL
      for (int offset = 4; offset < 32; offset *= 2) v[e] = op(v[e], __shfl_xor_sync(0xFFFFFFFFu, v[e], offset));
      if (lane < 4) dst[warp][2 * lane + e] = v[e];
    }
  }

  // The kernel: the CTA's set-up (its slice of R, its blocks, where X and Y
  // live: x_block, the cp.async stage loads: issue), then per 8-token tile
  //   pass 1                   Y = X·R per block, its min/max per token, reduced
  //                            over lanes and warps (inline in the tile loop)
  //   scale_pass               each token's scale and zero point (kResidentYPair:
  //                            the min/max of both CTAs of the cluster)
  //   pass 2                   the codes: quantize_resident_pass from Y kept in
  //                            shared memory, or quantize_recompute_pass
  //                            recomputing Y from X
  //   store_token_outputs      scales, zero points and code sums to global memory
  // The steps are lambdas over the set-up's values. Pass 1 stays inline and
  // the recompute pass's code sums are declared in the loop: moved into
  // lambdas, those loop-carried registers (min/max, sums) came out of nvcc
  // numbered in another order; as written, the PTX is the monolithic
  // operator()'s (cmake/ptx_diff.sh, issue 24), but for the pair on targets
  // without clusters, which is now the trap alone (below).
  __device__ void operator()(const Params& p, SharedStorage& shared, unsigned char* dynamic) const {
    if constexpr (kCluster == 2 && !arch::compiled_for<arch::Sm90>()) {
      // The pair needs clusters: on other targets the kernel is the trap of
      // arch/arch.cuh's policy (its launcher admits only 9.0 and newer, with
      // code built for sm_90).
      arch::unsupported();
      return;
    }
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int group = warp / kWarpsPerGroup, warp_in_group = warp % kWarpsPerGroup;
    const int tau = tid % kBlock;  // thread within its group

    Operand r;
    r.load(p.rotation, warp_in_group, lane);

    // This CTA's blocks: all, or its half of them (kResidentYPair); `block`
    // below counts from first_block, whose channels start at `offset`.
    const std::int64_t all_blocks = p.cols / kBlock;
    const unsigned rank = kCluster == 2 ? arch::cluster_rank() : 0u;
    const std::int64_t first_block = rank == 0 ? 0 : (all_blocks + 1) / 2;
    const std::int64_t blocks = kCluster == 1 ? all_blocks : rank == 0 ? (all_blocks + 1) / 2 : all_blocks / 2;
    const std::int64_t offset = first_block * kBlock;
    const std::int64_t stages = (blocks + kGroups - 1) / kGroups;
    const std::int64_t tiles = (p.rows + kTokens - 1) / kTokens;
    const core::CodeRange range = core::code_range(p.bits, p.symmetric);
    // kRecompute: the X rows. kResidentY: the Y rows, then the ring of X slots.
    const std::int64_t x_stride = kResidentY ? x_stride_bytes(kBlock) : x_stride_bytes(p.cols);
    const std::int64_t y_stride = y_stride_floats(cta_cols(p.cols));
    float* y_rows = reinterpret_cast<float*>(dynamic);
    unsigned char* x_base = kResidentY ? dynamic + kTokens * y_stride * 4 : dynamic;
    // Where block `block` of stage `stage` (group γ = block mod G) lives: in
    // kRecompute at its place in the rows, in kResidentY in ring slot
    // (stage mod kStages, γ).
    auto x_block = [&](std::int64_t stage, std::int64_t block) -> unsigned char* {
      if constexpr (kResidentY) {
        return x_base + ((stage % kStages) * kGroups + block % kGroups) * ring_slot_bytes();
      } else {
        return x_base + block * kBlock * 2;
      }
    };
    // Stage s holds blocks s·G … s·G + G − 1; thread tid copies 16 bytes of
    // block s·G + tid / kBlock: token tau / (kBlock/8), chunk tau % (kBlock/8).
    // Tokens past the last row are zero-filled. Every call commits a group
    // (empty past the end), so that cp_async_wait counts stages.
    auto issue = [&](std::int64_t first, std::int64_t stage) {
      const std::int64_t block = stage * kGroups + tid / kBlock;
      if (stage < stages && block < blocks) {
        const int token = tau / (kBlock / 8), chunk = tau % (kBlock / 8);
        const bool valid = first + token < p.rows;
        const Element* src = p.x + (valid ? (first + token) * p.ld_x : 0) + offset + block * kBlock + 8 * chunk;
        arch::cp_async_16(x_block(stage, block) + token * x_stride + 16 * chunk, src, valid);
      }
      arch::cp_async_commit();
    };
    constexpr int kAhead = kResidentY ? kStages - 1 : kStages;  // stages issued before the first is used

    // The steps of one 8-token tile starting at row `first` (the loop below
    // runs them in order, with barriers between).
    //
    // Every token's scale and zero point into shared.scale/zero, from the
    // warps' min/max in shared.lo/hi (and, kResidentYPair, the other CTA's).
    auto scale_pass = [&]() {
      float l = INFINITY, h = -INFINITY;
      if (tid < kTokens) {
        for (int w = 0; w < kWarps; ++w) {
          l = fminf(l, shared.lo[w][tid]);
          h = fmaxf(h, shared.hi[w][tid]);
        }
      }
      if constexpr (kCluster == 2) {
        // The other half of the row: its CTA's min/max through distributed
        // shared memory. The barrier publishes both halves; the next writes
        // to pair_lo/hi come after this tile's second cluster barrier, which
        // the peer reaches only after reading these.
        if (tid < kTokens) {
          shared.pair_lo[tid] = l;
          shared.pair_hi[tid] = h;
        }
        arch::cluster_sync();
        if (tid < kTokens) {
          l = fminf(l, arch::load_peer_shared(&shared.pair_lo[tid], rank ^ 1u));
          h = fmaxf(h, arch::load_peer_shared(&shared.pair_hi[tid], rank ^ 1u));
        }
      }
      if (tid < kTokens) {
        const core::AffineParams<float> params =
            p.symmetric ? core::symmetric_params(fmaxf(fabsf(l), fabsf(h)), p.clip_ratio, p.bits)
                        : core::asymmetric_params(l, h, p.clip_ratio, p.bits);
        shared.scale[tid] = params.scale;
        shared.zero[tid] = params.zero;
      }
    };
    // Pass 2 of kResidentY: the Y rows, 32 / bits values per thread and
    // step, one 32-bit store each — row by row, so that a warp writes 128
    // consecutive bytes. The code sums meet in shared.sum[warp][token].
    auto quantize_resident_pass = [&](std::int64_t first) {
      const int per_word = 32 / p.bits;
      for (int n = 0; n < kTokens; ++n) {
        int sum = 0;
        if (first + n < p.rows) {
          const core::AffineParams<float> params{shared.scale[n], shared.zero[n]};
          const float* y = y_rows + n * y_stride;
          auto* out = reinterpret_cast<std::uint32_t*>(p.codes + (first + n) * p.ld_codes + offset * p.bits / 8);
          for (std::int64_t w = tid; w < blocks * kBlock / per_word; w += kThreads)
            out[w] = quantize_word(y + w * per_word, params, range, p.bits, sum);
        }
        OQ_UNROLL
        for (int lane_mask = 1; lane_mask < 32; lane_mask *= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, lane_mask);
        if (lane == 0) shared.sum[warp][n] = sum;
      }
    };
    // Pass 2 of kRecompute: recompute Y (X is still resident), quantize,
    // stage, pack, store. The staging buffer alternates, so one barrier per
    // stage separates a buffer's writes (stage s) from its reads (after the
    // barrier of s) and its next writes (stage s + 2, after that of s + 1).
    // (`staging` is `shared`, passed so that the lambda, generic, is
    // instantiated only where the staging buffers exist.)
    auto quantize_recompute_pass = [&](std::int64_t first, auto& staging, int (&sum)[2]) {
      const core::AffineParams<float> params[2] = {
          {shared.scale[2 * (lane & 3)], shared.zero[2 * (lane & 3)]},
          {shared.scale[2 * (lane & 3) + 1], shared.zero[2 * (lane & 3) + 1]}};
      for (std::int64_t stage = 0; stage < stages; ++stage) {
        const std::int64_t block = stage * kGroups + group;
        auto& staged = staging.staged[stage & 1][group];
        if (block < blocks) {
          float acc[2][4];
          rotate_block(r, x_block(stage, block), x_stride, lane, acc);
          OQ_UNROLL
          for (int mt = 0; mt < 2; ++mt) {
            OQ_UNROLL
            for (int c = 0; c < 4; ++c) {
              const int q = static_cast<int>(core::quantize_value(acc[mt][c], params[c & 1], range));
              staged[Layout::acc_token(lane, c)][Layout::acc_channel(warp_in_group, mt, lane, c)] =
                  static_cast<std::uint8_t>(q);  // two's complement when symmetric; packing keeps the low bits
              sum[c & 1] += q;
            }
          }
        }
        __syncthreads();
        if (block < blocks) store_block(p, staged, first, block, tau);
      }
      warp_reduce_pair(sum, [](int a, int b) { return a + b; }, shared.sum, warp, lane);
    };
    // Each token's scale, zero point and code sum (the warps' sums in
    // shared.sum; kResidentYPair: rank 0 adds rank 1's and writes).
    auto store_token_outputs = [&](std::int64_t first) {
      int total = 0;
      if (tid < kTokens) {
        for (int w = 0; w < kWarps; ++w) total += shared.sum[w][tid];
      }
      if constexpr (kCluster == 2) {
        // The next writes to pair_sum come after the next tile's first
        // cluster barrier, which rank 0 reaches only after reading these.
        if (tid < kTokens) shared.pair_sum[tid] = total;
        arch::cluster_sync();
        if (tid < kTokens && rank == 0) total += arch::load_peer_shared(&shared.pair_sum[tid], 1u);
      }
      if (tid < kTokens && rank == 0 && first + tid < p.rows) {
        p.scales[first + tid] = shared.scale[tid];
        p.zeros[first + tid] = shared.zero[tid];
        if (p.code_sums != nullptr) p.code_sums[first + tid] = total;
      }
    };

    // A cluster's CTAs take the same tiles: tile index blockIdx.x / kCluster.
    const std::int64_t first_tile = blockIdx.x / kCluster, tile_stride = gridDim.x / kCluster;
    if (first_tile < tiles) {
      // kResidentY's deeper ring (up to 15 stages ahead) as a loop: unrolled,
      // the inlined copies of issue() cost registers (and spilled at b = 64).
      // The next tile's prefetch below stays unrolled: as a loop it made the
      // sm_90a pair kernel spill (ptxas -v, 2026-11-30).
#pragma unroll(kResidentY ? 1 : kAhead)
      for (int s = 0; s < kAhead; ++s) issue(first_tile * kTokens, s);
    }
    for (std::int64_t t = first_tile; t < tiles; t += tile_stride) {
      const std::int64_t first = t * kTokens;

      // Pass 1: Y per block; its min/max per token (kResidentY: Y kept).
      float lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};  // tokens 2t, 2t + 1
      for (std::int64_t stage = 0; stage < stages; ++stage) {
        arch::cp_async_wait<kAhead - 1>();
        __syncthreads();
        // kResidentY refills the slot of stage − 1, which every warp has
        // finished with (the barrier above); kRecompute never reuses space.
        if constexpr (kResidentY) issue(first, stage + kAhead);
        const std::int64_t block = stage * kGroups + group;
        if (block < blocks) {
          float acc[2][4];
          rotate_block(r, x_block(stage, block), x_stride, lane, acc);
          OQ_UNROLL
          for (int mt = 0; mt < 2; ++mt) {
            OQ_UNROLL
            for (int c = 0; c < 4; ++c) {
              lo[c & 1] = fminf(lo[c & 1], acc[mt][c]);
              hi[c & 1] = fmaxf(hi[c & 1], acc[mt][c]);
              if constexpr (kResidentY)
                y_rows[Layout::acc_token(lane, c) * y_stride + block * kBlock +
                       Layout::acc_channel(warp_in_group, mt, lane, c)] = acc[mt][c];
            }
          }
        }
        if constexpr (!kResidentY) issue(first, stage + kAhead);
      }
      warp_reduce_pair(lo, [](float a, float b) { return fminf(a, b); }, shared.lo, warp, lane);
      warp_reduce_pair(hi, [](float a, float b) { return fmaxf(a, b); }, shared.hi, warp, lane);
      __syncthreads();
      // kResidentY: the ring is free from here on; the next tile's first
      // stages load while this one is quantized.
      if constexpr (kResidentY) {
        if (t + tile_stride < tiles) {
          for (int s = 0; s < kAhead; ++s) issue((t + tile_stride) * kTokens, s);
        }
      }
      scale_pass();
      __syncthreads();
      if constexpr (kResidentY) {
        quantize_resident_pass(first);
      } else {
        int sum[2] = {0, 0};  // tokens 2t, 2t + 1 of this lane
        quantize_recompute_pass(first, shared, sum);
      }
      __syncthreads();
      store_token_outputs(first);
      __syncthreads();  // the next tile overwrites the rows, the staging and the reductions
      if constexpr (!kResidentY) {
        if (t + tile_stride < tiles) {
          for (int s = 0; s < kAhead; ++s) issue((t + tile_stride) * kTokens, s);
        }
      }
    }
    arch::cp_async_wait<0>();  // no copy outlives the CTA
    if constexpr (kCluster == 2) arch::cluster_sync();  // nor does the peer's last read of this CTA's shared memory
  }
};

template <class Element, int kBlock, int kTerms, int kGroups, RotationPasses kPasses, int kRingSlots>
__global__ void __launch_bounds__(
    QuantizePerTokenTensorOp<Element, kBlock, kTerms, kGroups, kPasses, kRingSlots>::kThreads)
    quantize_per_token_tensorop_kernel(const QuantizePerTokenParams<Element> params) {
  using Kernel = QuantizePerTokenTensorOp<Element, kBlock, kTerms, kGroups, kPasses, kRingSlots>;
  __shared__ typename Kernel::SharedStorage shared;
  extern __shared__ __align__(128) unsigned char oq_rotation_smem[];  // 128: the bank arithmetic of the strides
  Kernel{}(params, shared, oq_rotation_smem);
}

}  // namespace oq::cuda::kernel
