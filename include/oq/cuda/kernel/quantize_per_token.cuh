// oq/cuda/kernel/quantize_per_token.cuh: dynamic per-token quantization of
// activations, optionally after a block rotation, in one pass (docs/design.md §2, §6).
//
// One CTA per row (token). The row is staged in shared memory as float (or,
// for 16-bit rows on the register path below, kept in registers); with
// a rotation, every b-wide block is replaced by block·R (R: b×b, row-major,
// the same for all blocks — DuQuant's R or a normalised Hadamard), so an
// engine applies X·M and quantizes without a round trip through memory.
// Instead of a general R, hadamard_block = b (a power of two) applies the
// normalised Sylvester Hadamard H_b/√b to every block by the fast Walsh–
// Hadamard transform in shared memory (in registers and warp shuffles on the
// register path) — log2(b) butterfly passes, b·log2(b)
// additions per block instead of b² multiply-adds, the QuaRot-style online
// rotation at memory speed (a general 128 × 128 R costs 128 FMAs per element,
// which bounds the kernel by arithmetic, not by memory). The passes scale only
// at the end, so inputs above FLT_MAX/b overflow where x·H/√b would not. The
// row's min/max (or max |x|) come from a cub::BlockReduce, the scale and zero
// point from core/quant_math.hpp — the same function the host quantizers call,
// so codes, scales and zero points equal oq::quant::quantize bit for bit on
// unrotated input (IEEE division, round half to even).
//
// Arguments and outputs: kernel/quantize_per_token_params.cuh; the scale,
// codes and sums of a row once its values are known:
// kernel/quantize_per_token_epilogue.cuh.
//
// Bit-exactness assumes the default IEEE arithmetic: --use_fast_math turns
// x / s into an approximate division and breaks it. Non-finite inputs are not
// checked here (the host APIs reject them): NaN is skipped by the min/max but
// its code is unspecified, and ±Inf gives an infinite scale. Validate on the
// host, or upstream, where that matters.
//
// The row lives in shared memory, so K·4 bytes plus the rotation must fit.
// Where the layout allows (see wide_input/wide_output), the row is read with
// 16-byte loads and the codes written as 32-bit words; the per-element
// arithmetic, and so every code, is the same on both paths. Without a
// general rotation, 16-bit rows up to 16,384 elements skip shared memory
// altogether (register_path: each thread's 16-byte chunks stay in registers,
// all loads in flight at once, Walsh–Hadamard blocks up to 256 by butterflies
// in registers and warp shuffles, one barrier for the min/max). Issue 6
// measures it against the copy bandwidth.
#pragma once

#include <oq/config.hpp>
#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/cuda/kernel/quantize_per_token_epilogue.cuh>
#include <oq/cuda/kernel/quantize_per_token_params.cuh>
#include <oq/cuda/numeric.cuh>

#include <cub/block/block_reduce.cuh>

#include <cstdint>
#include <type_traits>

namespace oq::cuda::kernel {

// Reduction operators spelled out: cub::Min/cub::Max left CUB in CCCL 3.
struct MinOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class Element, int kThreads = 256>
struct QuantizePerToken {
  static_assert(kThreads % 32 == 0, "whole warps: the reductions shuffle across all 32 lanes");
  using Params = QuantizePerTokenParams<Element>;
  using MinMaxReduce = cub::BlockReduce<float, kThreads>;
  using SumReduce = cub::BlockReduce<int, kThreads>;

  struct SharedStorage {
    union {
      typename MinMaxReduce::TempStorage minmax;
      typename SumReduce::TempStorage sum;
    } reduce;
    float lo;
    float hi;
    float scale;
    float zero;
    float rotated[kThreads];  // one b-wide output block per b threads
    float warp_lo[kThreads / 32];  // the register path's reductions
    float warp_hi[kThreads / 32];
    int warp_sum[kThreads / 32];
  };

  /// The register path holds at most this many 16-byte chunks per thread.
  static constexpr int kMaxRegisterChunks = 8;

  static constexpr int kVec = 16 / sizeof(Element);  // elements per 16-byte load

  /// Whether the row is read with 16-byte loads (cols, ld_x and x aligned to them).
  __host__ __device__ static bool wide_input(const Params& p) {
    return p.cols % kVec == 0 && p.ld_x % kVec == 0 && reinterpret_cast<std::uintptr_t>(p.x) % 16 == 0;
  }
  /// Whether codes are written as 32-bit words (cols, ld_codes and codes aligned to them).
  __host__ __device__ static bool wide_output(const Params& p) {
    return p.cols % (32 / p.bits) == 0 && p.ld_codes % 4 == 0 && reinterpret_cast<std::uintptr_t>(p.codes) % 4 == 0;
  }

  /// Whether the row stays in registers (16-bit input on the wide paths, no
  /// general rotation, a Walsh–Hadamard block of at most 256, K ≤
  /// kMaxRegisterChunks · 8 · kThreads: 16,384 at 256 threads): every thread
  /// keeps its 16-byte chunks, the butterflies run in registers (levels
  /// below 8 inside a chunk, the others between lanes by shuffles: a block
  /// of ≤ 256 elements is ≤ 32 consecutive chunks of one warp), the min/max
  /// meet in one barrier, and the codes are written from the registers — no
  /// trip through shared memory. Codes, scales and sums are those of the
  /// staged path, bit for bit (the same butterflies in the same order, the
  /// same min/max, the same per-element arithmetic).
  __host__ __device__ static bool register_path(const Params& p) {
    return sizeof(Element) == 2 && p.rotation == nullptr && p.hadamard_block <= 256 && wide_input(p) &&
           wide_output(p) && p.cols <= std::int64_t{kMaxRegisterChunks} * kVec * kThreads;
  }

  /// Dynamic shared memory of the staged kernel (kRegisterChunks = 0): the
  /// row, then the rotation (if any). The register-path kernels need none.
  static std::size_t dynamic_smem_bytes(const Params& p) {
    return sizeof(float) * (static_cast<std::size_t>(p.cols) +
                            (p.rotation ? static_cast<std::size_t>(p.block_size) * p.block_size : 0));
  }

  /// Chunks per thread the register path needs for this row length: 1, 2, 4
  /// or kMaxRegisterChunks — the launcher's choice among kernels (fewer
  /// chunks, fewer registers, more CTAs per SM).
  __host__ __device__ static int register_chunks(const Params& p) {
    const std::int64_t per_thread = (p.cols / kVec + kThreads - 1) / kThreads;
    return per_thread <= 1 ? 1 : per_thread <= 2 ? 2 : per_thread <= 4 ? 4 : kMaxRegisterChunks;
  }

  // The register path (see register_path) for row m, at most kChunks chunks
  // per thread: chunk c of thread t is elements 8·(t + c·kThreads) … + 7, one
  // 32-bit word of INT4 codes or two of INT8 codes. kHadamard: the row's
  // values after the fused Walsh–Hadamard transform (p.hadamard_block).
  template <int kChunks, bool kHadamard>
  __device__ void register_row(const Params& p, SharedStorage& shared, std::int64_t m) const {
    static_assert(kVec == 8, "16-bit elements: 8 per chunk");
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const std::int64_t chunks = p.cols / kVec;
    const auto* src = reinterpret_cast<const uint4*>(p.x + m * p.ld_x);
    // The chunks as loaded (raw, 4 registers each), or as floats after the
    // transform (v, 8 each); zero past the row (the shuffles read every lane).
    uint4 raw[kHadamard ? 1 : kChunks] = {};
    float v[kHadamard ? kChunks : 1][kVec] = {};
    auto value = [&](int c, int j) -> float {
      if constexpr (kHadamard) {
        return v[c][j];
      } else {
        Element e[kVec];
        memcpy(e, &raw[c], sizeof raw[c]);  // register moves
        return cuda::to_float(e[j]);
      }
    };
    OQ_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      const std::int64_t idx = t + std::int64_t{c} * kThreads;
      const uint4 chunk = idx < chunks ? src[idx] : make_uint4(0u, 0u, 0u, 0u);
      if constexpr (kHadamard) {
        Element e[kVec];
        memcpy(e, &chunk, sizeof chunk);
        OQ_UNROLL
        for (int j = 0; j < kVec; ++j) v[c][j] = cuda::to_float(e[j]);
      } else {
        raw[c] = chunk;
      }
    }
    if constexpr (kHadamard) {
      // The staged path's butterflies in its order: level h pairs element i
      // (bit h clear) with i + h as (u + v, u − v), the last level times
      // 1/√b. h < 8: inside the chunk; h ≥ 8: chunk idx with idx ^ (h/8),
      // which is lane ^ (h/8) of the same warp and round c. The levels are
      // unrolled (h a constant: v stays in registers) up to b = 256.
      const int b = p.hadamard_block;
      const int log_b = __ffs(b) - 1;
      const float norm = 1.0f / sqrtf(static_cast<float>(b));
      OQ_UNROLL
      for (int log_h = 0; log_h < 8; ++log_h) {
        if (log_h >= log_b) break;
        const int h = 1 << log_h;
        const float scale = log_h + 1 == log_b ? norm : 1.0f;
        if (h < kVec) {
          OQ_UNROLL
          for (int c = 0; c < kChunks; ++c) {
            OQ_UNROLL
            for (int i = 0; i < kVec; ++i) {
              if ((i & h) == 0) {
                const float u = v[c][i], w = v[c][i + h];
                v[c][i] = (u + w) * scale;
                v[c][i + h] = (u - w) * scale;
              }
            }
          }
        } else {
          const int distance = h / kVec;  // < 32: b ≤ 256
          const bool upper = (lane & distance) != 0;
          OQ_UNROLL
          for (int c = 0; c < kChunks; ++c) {
            OQ_UNROLL
            for (int i = 0; i < kVec; ++i) {
              const float other = __shfl_xor_sync(0xFFFFFFFFu, v[c][i], distance);
              v[c][i] = upper ? (other - v[c][i]) * scale : (v[c][i] + other) * scale;
            }
          }
        }
      }
    }
    float lo = INFINITY, hi = -INFINITY;
    OQ_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      if (t + std::int64_t{c} * kThreads < chunks) {
        OQ_UNROLL
        for (int j = 0; j < kVec; ++j) {
          lo = fminf(lo, value(c, j));
          hi = fmaxf(hi, value(c, j));
        }
      }
    }
    OQ_UNROLL
    for (int offset = 16; offset > 0; offset /= 2) {
      lo = fminf(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, offset));
      hi = fmaxf(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, offset));
    }
    if (lane == 0) {
      shared.warp_lo[warp] = lo;
      shared.warp_hi[warp] = hi;
    }
    __syncthreads();
    // Every thread finishes the reduction and derives the same parameters.
    OQ_UNROLL
    for (int w = 0; w < kThreads / 32; ++w) {
      lo = fminf(lo, shared.warp_lo[w]);
      hi = fmaxf(hi, shared.warp_hi[w]);
    }
    const core::AffineParams<float> params =
        p.symmetric ? core::symmetric_params(fmaxf(fabsf(lo), fabsf(hi)), p.clip_ratio, p.bits)
                    : core::asymmetric_params(lo, hi, p.clip_ratio, p.bits);
    const core::CodeRange range = core::code_range(p.bits, p.symmetric);

    int sum = 0;
    std::uint8_t* out = p.codes + m * p.ld_codes;
    OQ_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      const std::int64_t idx = t + std::int64_t{c} * kThreads;
      if (idx < chunks) {
        alignas(16) float w[kVec];
        OQ_UNROLL
        for (int j = 0; j < kVec; ++j) w[j] = value(c, j);
        if (p.bits == 4) {
          reinterpret_cast<std::uint32_t*>(out)[idx] = quantize_word(w, params, range, 4, sum);
        } else {
          // Two 32-bit stores: wide_output promises 4-byte alignment only.
          reinterpret_cast<std::uint32_t*>(out)[2 * idx] = quantize_word(w, params, range, 8, sum);
          reinterpret_cast<std::uint32_t*>(out)[2 * idx + 1] = quantize_word(w + 4, params, range, 8, sum);
        }
      }
    }
    OQ_UNROLL
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0) shared.warp_sum[warp] = sum;
    __syncthreads();
    if (t == 0) {
      int total = 0;
      for (int w = 0; w < kThreads / 32; ++w) total += shared.warp_sum[w];
      p.scales[m] = params.scale;
      p.zeros[m] = params.zero;
      if (p.code_sums != nullptr) p.code_sums[m] = total;
    }
  }

  /// kRegisterChunks > 0: the register path with that many chunks per thread
  /// (the launcher checked register_path and register_chunks), with the
  /// Walsh–Hadamard transform when kRegisterHadamard; 0: staged.
  template <int kRegisterChunks = 0, bool kRegisterHadamard = false>
  __device__ void operator()(const Params& p, SharedStorage& shared, float* dynamic) const {
    const std::int64_t m = blockIdx.x;
    if (m >= p.rows) return;
    if constexpr (kRegisterChunks > 0) {
      register_row<kRegisterChunks, kRegisterHadamard>(p, shared, m);
      return;
    }
    const int t = threadIdx.x;
    float* row = dynamic;
    const Element* x = p.x + m * p.ld_x;
    if (wide_input(p)) {
      // 16-byte loads of kVec elements, stored to shared memory as float4s.
      const auto* src = reinterpret_cast<const uint4*>(x);
      for (std::int64_t v = t; v < p.cols / kVec; v += kThreads) {
        const uint4 raw = src[v];
        Element e[kVec];
        memcpy(e, &raw, sizeof raw);  // register moves; no aliasing through a pointer cast
        OQ_UNROLL
        for (int j = 0; j < kVec; j += 4) {
          reinterpret_cast<float4*>(row + v * kVec)[j / 4] =
              make_float4(cuda::to_float(e[j]), cuda::to_float(e[j + 1]), cuda::to_float(e[j + 2]),
                          cuda::to_float(e[j + 3]));
        }
      }
    } else {
      for (std::int64_t k = t; k < p.cols; k += kThreads) row[k] = cuda::to_float(x[k]);
    }

    if (p.rotation != nullptr) {
      float* r = dynamic + p.cols;
      const int b = p.block_size;
      for (int i = t; i < b * b; i += kThreads) r[i] = p.rotation[i];
      __syncthreads();
      // kThreads / b blocks at a time; thread t computes output column t % b of
      // block group + t / b. Reads of r across a warp are consecutive columns
      // of one row (no bank conflicts); the block's inputs are broadcasts.
      const int per_pass = kThreads / b;
      const int j = t % b;
      for (std::int64_t first = 0; first < p.cols / b; first += per_pass) {
        const std::int64_t block = first + t / b;
        float acc = 0.0f;
        if (block < p.cols / b) {
          const float* in = row + block * b;
          for (int i = 0; i < b; ++i) acc = fmaf(in[i], r[i * b + j], acc);
        }
        shared.rotated[t] = acc;
        __syncthreads();
        if (block < p.cols / b) row[block * b + j] = shared.rotated[t];
        __syncthreads();
      }
    } else if (p.hadamard_block > 0) {
      // Sylvester butterflies: at stride h, element i (bit h of its index in
      // the block clear) and i + h become (u + v, u − v). The last pass also
      // scales by 1/√b, so the transform is orthogonal.
      const int b = p.hadamard_block;
      const int log_b = __ffs(b) - 1;                       // b is a power of two
      const float norm = 1.0f / sqrtf(static_cast<float>(b));  // IEEE, as the host's 1/√b
      for (int log_h = 0; log_h < log_b; ++log_h) {
        const int h = 1 << log_h;
        __syncthreads();
        const float scale = log_h + 1 == log_b ? norm : 1.0f;
        for (std::int64_t pair = t; pair < p.cols / 2; pair += kThreads) {
          // pair → (block, j < b/2) → the pair's first element: bit log_h of its
          // index in the block clear, the bits above and below from j.
          const std::int64_t block = pair >> (log_b - 1);
          const int j = static_cast<int>(pair & ((b >> 1) - 1));
          const std::int64_t i = (block << log_b) + ((j >> log_h) << (log_h + 1)) + (j & (h - 1));
          const float u = row[i], v = row[i + h];
          row[i] = (u + v) * scale;
          row[i + h] = (u - v) * scale;
        }
      }
      __syncthreads();
    } else {
      __syncthreads();
    }

    float lo = INFINITY, hi = -INFINITY;
    for (std::int64_t k = t; k < p.cols; k += kThreads) {
      lo = fminf(lo, row[k]);
      hi = fmaxf(hi, row[k]);
    }
    lo = MinMaxReduce(shared.reduce.minmax).Reduce(lo, MinOp{});
    __syncthreads();
    hi = MinMaxReduce(shared.reduce.minmax).Reduce(hi, MaxOp{});
    if (t == 0) {
      const core::AffineParams<float> params =
          p.symmetric ? core::symmetric_params(fmaxf(fabsf(lo), fabsf(hi)), p.clip_ratio, p.bits)
                      : core::asymmetric_params(lo, hi, p.clip_ratio, p.bits);
      shared.scale = params.scale;
      shared.zero = params.zero;
    }
    __syncthreads();
    const core::AffineParams<float> params{shared.scale, shared.zero};
    const core::CodeRange range = core::code_range(p.bits, p.symmetric);

    int sum = 0;
    std::uint8_t* out = p.codes + m * p.ld_codes;
    if (wide_output(p)) {
      // One 32-bit store per thread and step: 8 INT4 codes (4 bytes of pairs)
      // or 4 INT8 codes, little-endian, i.e. the bytes of the narrow loop below.
      const int per_word = 32 / p.bits;
      for (std::int64_t w = t; w < p.cols / per_word; w += kThreads)
        reinterpret_cast<std::uint32_t*>(out)[w] = quantize_word(row + w * per_word, params, range, p.bits, sum);
    } else if (p.bits == 4) {
      for (std::int64_t pair = t; pair < p.cols / 2; pair += kThreads) {
        const int q0 = static_cast<int>(core::quantize_value(row[2 * pair], params, range));
        const int q1 = static_cast<int>(core::quantize_value(row[2 * pair + 1], params, range));
        out[pair] = core::pack_u4x2(static_cast<unsigned>(q0), static_cast<unsigned>(q1));
        sum += q0 + q1;
      }
    } else {
      for (std::int64_t k = t; k < p.cols; k += kThreads) {
        const int q = static_cast<int>(core::quantize_value(row[k], params, range));
        out[k] = static_cast<std::uint8_t>(q);  // two's complement for the symmetric (s8) case
        sum += q;
      }
    }
    __syncthreads();  // shared.reduce is reused
    sum = SumReduce(shared.reduce.sum).Sum(sum);
    if (t == 0) {
      p.scales[m] = params.scale;
      p.zeros[m] = params.zero;
      if (p.code_sums != nullptr) p.code_sums[m] = sum;
    }
  }
};

template <class Element, int kThreads, int kRegisterChunks = 0, bool kRegisterHadamard = false>
__global__ void __launch_bounds__(kThreads) quantize_per_token_kernel(const QuantizePerTokenParams<Element> params) {
  using Kernel = QuantizePerToken<Element, kThreads>;
  __shared__ typename Kernel::SharedStorage shared;
  extern __shared__ __align__(16) float dynamic[];  // 16: float4 accesses to the row
  Kernel{}.template operator()<kRegisterChunks, kRegisterHadamard>(params, shared, dynamic);
}

}  // namespace oq::cuda::kernel
