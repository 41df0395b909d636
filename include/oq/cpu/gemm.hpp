// oq/cpu/gemm.hpp: W4A8 and W4A4 GEMM on the CPU with int32 accumulation and
// the zero-point epilogue of the CUDA W4A4 kernel (docs/design.md §7).
//
//   using namespace oq::cpu;
//   PackedWeights w = quantize_weights(weight, QuantSpec::per_channel(4, false, 0.8));     // offline
//   PackedActivations a = quantize_per_token(x, QuantSpec::per_token(8, false));           // per batch
//   RowMajorMatrixXf y = gemm(a, w);                               // M × N, ≈ x·weightᵀ
//   auto acc = gemm_accumulators(a, w);                            // the raw Σ_k qa·qw (int32)
//   gemm(a, w, y_map, {.threads = 4, .isa = Isa::kAvx2});          // into your buffer, forced path
//
// Activations of 8 bits (W4A8) or 4 bits (W4A4), signed or unsigned; weights
// s4 or u4, per output channel or per group of g inputs. For each token m,
// output n and weight group G (one group per channel unless grouped), with
// K_G the group's inputs and L its length:
//   S_G     = Σ_{k∈K_G} qa[m,k]·qw[n,k]                                  (exact, int32)
//   T_G     = S_G − z_w[n,G]·Σ_{k∈K_G} qa[m,k] − z_a[m]·Σ_{k∈K_G} qw[n,k] + L·z_a[m]·z_w[n,G]
//                                                         (exact integer: = Σ (qa − z_a)(qw − z_w))
//   p_G     = s_a[m] · s_w[n,G]                                            (float product)
//   y[m,n]  = p_0·float(T_0), then y ← fma(p_G, float(T_G), y) for G = 1, 2, …
// For per-channel weights (one group) this is y = (s_a·s_w)·float(T), the
// CUDA W4A4 epilogue's expression bit for bit. The only roundings are the
// conversion of T to float, the scale product and each fma: y is within
// γ_{G+2}·Σ_G |s_a·s_w[n,G]·T_G| of the exact Σ_k ŵ·x̂ (γ_n = n·u/(1 − n·u),
// u = 2⁻²⁴), the product of the dequantized operands, which fake
// quantization computes in float.
// The accumulators (gemm_accumulators) are Σ_G S_G, the raw int32 Σ_k qa·qw,
// equal on every path to a plain integer loop.
//
// Paths (KernelOptions::isa): AVX-512 VNNI (vpdpbusd), AVX2 (vpmaddubsw +
// vpmaddwd), NEON dot product (sdot, where compiled) and scalar, all
// computing the same integers (dot_int4.hpp);
// threads split the output channels. K must be even (packed INT4 weights)
// and at most kMaxK; a group must be even and divide K. The weights'
// code_sums must be their codes' sums: pack_weights computes them, and
// PackedWeights::validate_code_sums checks weights built by hand or read
// from a file (the GEMM does not re-read every code to check them).
#pragma once

#include <oq/cpu/isa.hpp>
#include <oq/cpu/kernel/dot_int4.hpp>
#include <oq/cpu/packed_activations.hpp>
#include <oq/cpu/packed_weights.hpp>
#include <oq/cpu/parallel.hpp>
#include <oq/cpu/thread_pool.hpp>
#include <oq/cpu/types.hpp>
#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

namespace oq::cpu {

namespace detail_gemm {

// T_G = Σ (qa − z_a)(qw − z_w) over L ≤ kMaxK codes fits int64 unless the
// zero points are extreme (|z| near 2^31 from a degenerate range: up to
// 2^19·2^32·2^32). Each call checks a bound once; beyond it the epilogue
// runs in 128 bits where the compiler has them, and is refused elsewhere.
#if defined(__SIZEOF_INT128__)
__extension__ using Int128 = __int128;
inline constexpr bool kHasInt128 = true;
#else
using Int128 = std::int64_t;  // never used for a call past the bound: refused
inline constexpr bool kHasInt128 = false;
#endif

// Whether every T_G of the product fits int64 with room:
// L·(max|z_a| + 255)·(max|z_w| + 15) < 2^60, which bounds each of T_G's four terms.
inline bool fits_int64(const PackedActivations& a, const PackedWeights& w) {
  std::int64_t za = 0, zw = 0;
  for (const std::int32_t z : a.zeros) za = std::max<std::int64_t>(za, z < 0 ? -std::int64_t{z} : z);
  for (const std::int32_t z : w.zeros) zw = std::max<std::int64_t>(zw, z < 0 ? -std::int64_t{z} : z);
  const double bound = static_cast<double>(w.group_size) * static_cast<double>(za + 255) * static_cast<double>(zw + 15);
  return bound < 0x1p60;
}

// The activations re-laid for one instruction set (dot_int4.hpp): per row,
// per segment, chunks of C codes (even codes, then odd), biased to s8 —
// or int16 in natural order for the scalar path — plus each segment's Σqa.
struct PreparedActivations {
  Isa isa = Isa::kScalar;
  std::int64_t segments = 0, segment = 0, padded = 0;  // count, length L, prepared length per segment
  int bias = 0;                                        // ba
  std::vector<std::int8_t> bytes;                      // SIMD: rows × segments × padded
  std::vector<std::int16_t> words;                     // scalar: rows × K
  std::vector<std::int32_t> sums;                      // rows × segments

  const std::int8_t* simd_row(std::int64_t r, std::int64_t s) const {
    return bytes.data() + (r * segments + s) * padded;
  }
  const std::int16_t* scalar_row(std::int64_t r, std::int64_t s) const {
    return words.data() + r * segments * segment + s * segment;
  }
};

// Code i of a packed activation row, for a fixed format (no per-code branch
// on bits or signedness: prepare's loops then vectorise).
template <int kBits, bool kSigned>
inline int code_at(const std::uint8_t* row, std::int64_t i) {
  if constexpr (kBits == 8) {
    return kSigned ? static_cast<int>(static_cast<std::int8_t>(row[i])) : static_cast<int>(row[i]);
  } else {
    const unsigned nibble = (row[i / 2] >> (4 * (i % 2))) & 0xFu;
    return kSigned ? static_cast<int>(nibble ^ 8u) - 8 : static_cast<int>(nibble);
  }
}

template <int kBits, bool kSigned>
void prepare_rows(const PackedActivations& a, PreparedActivations& p, std::int64_t begin, std::int64_t end) {
  const std::int64_t chunk = kernel::chunk_codes(p.isa), half = chunk / 2;
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = a.row(r);
    for (std::int64_t s = 0; s < p.segments; ++s) {
      const std::int64_t first = s * p.segment;
      std::int32_t sum = 0;
      if (p.isa == Isa::kScalar) {
        std::int16_t* out = p.words.data() + r * a.k + first;
        for (std::int64_t i = 0; i < p.segment; ++i) {
          const int q = code_at<kBits, kSigned>(row, first + i);
          out[i] = static_cast<std::int16_t>(q);
          sum += q;
        }
      } else {
        // Chunk by chunk: the even codes to the first half, the odd to the second.
        std::int8_t* out = p.bytes.data() + (r * p.segments + s) * p.padded;
        for (std::int64_t c = 0; c < p.segment; c += chunk) {
          const std::int64_t pairs = std::min(half, (p.segment - c) / 2);
          if constexpr (kBits == 4) {
            // A pair of codes is one byte (segments start on a byte): the
            // low nibbles are the even codes, the high nibbles the odd ones.
            const std::uint8_t* bytes = row + (first + c) / 2;
            for (std::int64_t t = 0; t < pairs; ++t) {
              const unsigned lo = bytes[t] & 0xFu, hi = bytes[t] >> 4;
              const int even = kSigned ? static_cast<int>(lo ^ 8u) - 8 : static_cast<int>(lo);
              const int odd = kSigned ? static_cast<int>(hi ^ 8u) - 8 : static_cast<int>(hi);
              out[c + t] = static_cast<std::int8_t>(even);  // INT4 codes are never biased
              out[c + half + t] = static_cast<std::int8_t>(odd);
              sum += even + odd;
            }
          } else {
            for (std::int64_t t = 0; t < pairs; ++t) {
              const int even = code_at<kBits, kSigned>(row, first + c + 2 * t);
              const int odd = code_at<kBits, kSigned>(row, first + c + 2 * t + 1);
              out[c + t] = static_cast<std::int8_t>(even - p.bias);
              out[c + half + t] = static_cast<std::int8_t>(odd - p.bias);
              sum += even + odd;
            }
          }
        }
      }
      p.sums[static_cast<std::size_t>(r * p.segments + s)] = sum;
    }
  }
}

inline PreparedActivations prepare(const PackedActivations& a, std::int64_t segment, Isa isa, int threads,
                                   ThreadPool* pool) {
  PreparedActivations p;
  p.isa = isa;
  p.segment = segment;
  p.segments = a.k / segment;
  const std::int64_t chunk = kernel::chunk_codes(isa);
  p.padded = (segment + chunk - 1) / chunk * chunk;
  p.bias = (a.bits == 8 && !a.is_signed) ? 128 : 0;
  p.sums.assign(static_cast<std::size_t>(a.m * p.segments), 0);
  if (isa == Isa::kScalar) {
    p.words.resize(static_cast<std::size_t>(a.m * a.k));
  } else {
    p.bytes.assign(static_cast<std::size_t>(a.m * p.segments * p.padded), 0);  // the padding stays 0
  }
  parallel_for(a.m, threads, 64, [&](std::int64_t begin, std::int64_t end) {
    if (a.bits == 8) {
      a.is_signed ? prepare_rows<8, true>(a, p, begin, end) : prepare_rows<8, false>(a, p, begin, end);
    } else {
      a.is_signed ? prepare_rows<4, true>(a, p, begin, end) : prepare_rows<4, false>(a, p, begin, end);
    }
  }, pool);
  return p;
}

// Σ w·a of one segment from the biased D (dot_int4.hpp's identity).
inline std::int64_t unbias(std::int64_t d, int ba, int bw, std::int64_t sum_w, std::int64_t sum_a, std::int64_t length) {
  return d + ba * sum_w - bw * sum_a + length * bw * ba;
}

template <int MT>
void dot_tile(const PreparedActivations& p, const std::int64_t* rows, const std::uint8_t* const* w, std::int64_t s,
              bool w_signed, std::int32_t (&out)[MT][4]) {
  const std::int64_t first_byte = s * p.segment / 2;
  const std::uint8_t* wp[4] = {w[0] + first_byte, w[1] + first_byte, w[2] + first_byte, w[3] + first_byte};
  // The SIMD paths' prepared rows (the scalar path reads its own layout).
  const std::int8_t* simd_rows[MT] = {};
  if (p.isa != Isa::kScalar)
    for (int i = 0; i < MT; ++i) simd_rows[i] = p.simd_row(rows[i], s);
  (void)simd_rows;  // a build with no SIMD path (plain aarch64) reads none
  switch (p.isa) {
#if OQ_CPU_X86
    case Isa::kAvx512Vnni: {
      kernel::avx512::dot_tile<MT>(simd_rows, wp, p.segment / 2, w_signed, out);
      return;
    }
    case Isa::kAvx2: {
      kernel::avx2::dot_tile<MT>(simd_rows, wp, p.segment / 2, w_signed, out);
      return;
    }
#endif
#if OQ_CPU_NEON_DOT
    case Isa::kNeonDot: {
      kernel::neon::dot_tile<MT>(simd_rows, wp, p.segment / 2, w_signed, out);
      return;
    }
#endif
    default: {
      const std::int16_t* ap[MT];
      for (int i = 0; i < MT; ++i) ap[i] = p.scalar_row(rows[i], s);
      kernel::scalar::dot_tile<MT>(ap, wp, p.segment, w_signed, out);
      return;
    }
  }
}

// The output tile rows[0, MT) × [n0, n0 + nt): every segment's S, the
// epilogue into y (row-major, ld_y) and the raw sums into acc, where given.
template <int MT, class Wide>
void output_tile(const PackedActivations& a, const PackedWeights& w, const PreparedActivations& p,
                 const std::int64_t* rows, std::int64_t n0, std::int64_t nt, const std::uint8_t* zero_row, float* y,
                 std::int64_t ld_y, std::int32_t* acc, std::int64_t ld_acc) {
  const std::uint8_t* wrows[4];
  for (int j = 0; j < 4; ++j) wrows[j] = j < nt ? w.row(n0 + j) : zero_row;
  const int bw = kernel::weight_bias(p.isa, w.is_signed);
  const int ba = p.isa != Isa::kScalar ? p.bias : 0;
  const std::int64_t groups = w.groups(), length = p.segment;
  float out[MT][4] = {};
  std::int64_t total_raw[MT][4] = {};
  for (std::int64_t s = 0; s < p.segments; ++s) {
    std::int32_t d[MT][4];
    dot_tile<MT>(p, rows, wrows, s, w.is_signed, d);
    for (int i = 0; i < MT; ++i) {
      const auto r = static_cast<std::size_t>(rows[i]);
      const std::int64_t sum_a = p.sums[r * static_cast<std::size_t>(p.segments) + static_cast<std::size_t>(s)];
      const std::int64_t za = a.zeros[r];
      for (int j = 0; j < nt; ++j) {
        const auto cell = static_cast<std::size_t>((n0 + j) * groups + s);
        const std::int64_t sum_w = w.code_sums[cell];
        const std::int64_t zw = w.is_signed ? 0 : w.zeros[cell];
        const std::int64_t dot = unbias(d[i][j], ba, bw, sum_w, sum_a, length);
        total_raw[i][j] += dot;
        const Wide t = Wide{dot} - Wide{zw} * sum_a - Wide{za} * sum_w + Wide{length} * za * zw;
        const float scale = a.scales[r] * w.scales[cell];
        const auto tf = static_cast<float>(t);
        out[i][j] = s == 0 ? scale * tf : std::fma(scale, tf, out[i][j]);
      }
    }
  }
  for (int i = 0; i < MT; ++i) {
    for (int j = 0; j < nt; ++j) {
      if (y != nullptr) y[rows[i] * ld_y + n0 + j] = out[i][j];
      if (acc != nullptr) acc[rows[i] * ld_acc + n0 + j] = static_cast<std::int32_t>(total_raw[i][j]);
    }
  }
}

// output_tile for mt rows, T_G computed in Wide.
template <class Wide>
void tile(std::int64_t mt, const PackedActivations& a, const PackedWeights& w, const PreparedActivations& p,
          const std::int64_t* rows, std::int64_t n0, std::int64_t nt, const std::uint8_t* zero_row, float* y,
          std::int64_t ld_y, std::int32_t* acc, std::int64_t ld_acc) {
  switch (mt) {
    case 1: output_tile<1, Wide>(a, w, p, rows, n0, nt, zero_row, y, ld_y, acc, ld_acc); break;
    case 2: output_tile<2, Wide>(a, w, p, rows, n0, nt, zero_row, y, ld_y, acc, ld_acc); break;
    case 3: output_tile<3, Wide>(a, w, p, rows, n0, nt, zero_row, y, ld_y, acc, ld_acc); break;
    default: output_tile<4, Wide>(a, w, p, rows, n0, nt, zero_row, y, ld_y, acc, ld_acc); break;
  }
}

inline void run(const PackedActivations& a, const PackedWeights& w, float* y, std::int64_t ld_y, std::int32_t* acc,
                std::int64_t ld_acc, const KernelOptions& options, std::string_view where) {
  a.validate(where);
  w.validate(where);
  detail::require(a.k == w.k, where, "activations.k (", a.k, ") must equal weights.k (", w.k, ")");
  const Isa isa = resolve_isa(options.isa, where);
  const int threads = resolve_threads(options.threads, where, options.pool);
  if (a.m == 0 || w.n == 0) return;
  const PreparedActivations p = prepare(a, w.group_size, isa, threads, options.pool);
  const std::vector<std::uint8_t> zero_row(static_cast<std::size_t>(w.row_bytes()), 0);
  const bool narrow = fits_int64(a, w);
  detail::require_domain(narrow || kHasInt128, where,
                         "the zero points are too large for an exact 64-bit epilogue on this compiler (no 128-bit "
                         "integers): L·(max|z_a| + 255)·(max|z_w| + 15) must stay below 2^60");
  const int max_mt = isa == Isa::kAvx2 ? 2 : 4;
  constexpr std::int64_t kBlockRows = 64;  // activation rows kept hot in L2 across the weight tiles
  const std::int64_t tiles = (w.n + 3) / 4;
  parallel_for(tiles, threads, 4, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t m0 = 0; m0 < a.m; m0 += kBlockRows) {
      const std::int64_t m1 = std::min(a.m, m0 + kBlockRows);
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t n0 = 4 * t, nt = std::min<std::int64_t>(4, w.n - n0);
        for (std::int64_t r = m0; r < m1; r += max_mt) {
          const std::int64_t rows[4] = {r, r + 1, r + 2, r + 3};
          const std::int64_t mt = std::min<std::int64_t>(max_mt, m1 - r);
          if (narrow) {
            tile<std::int64_t>(mt, a, w, p, rows, n0, nt, zero_row.data(), y, ld_y, acc, ld_acc);
          } else {
            tile<Int128>(mt, a, w, p, rows, n0, nt, zero_row.data(), y, ld_y, acc, ld_acc);
          }
        }
      }
    }
  }, options.pool);
}

}  // namespace detail_gemm

/// y = the dequantized product (the file comment's epilogue) into a caller's
/// M × N row-major float matrix (any Eigen row-major map or block).
inline void gemm(const PackedActivations& a, const PackedWeights& w, Eigen::Ref<RowMajorMatrixXf> y,
                 const KernelOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::cpu::gemm";
  detail::require(y.rows() == a.m && y.cols() == w.n, kWhere, "y must be ", a.m, " x ", w.n,
                  " (activations.m x weights.n), got ", y.rows(), " x ", y.cols());
  detail_gemm::run(a, w, y.data(), y.outerStride(), nullptr, 0, options, kWhere);
}

/// The same into a new M × N matrix.
inline RowMajorMatrixXf gemm(const PackedActivations& a, const PackedWeights& w, const KernelOptions& options = {}) {
  a.validate("oq::cpu::gemm");
  w.validate("oq::cpu::gemm");
  RowMajorMatrixXf y(a.m, w.n);
  gemm(a, w, y, options);
  return y;
}

/// The raw accumulators Σ_k qa[m,k]·qw[n,k] (int32, exact), M × N.
inline RowMajorMatrixXi32 gemm_accumulators(const PackedActivations& a, const PackedWeights& w,
                                            const KernelOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::cpu::gemm_accumulators";
  a.validate(kWhere);
  w.validate(kWhere);
  RowMajorMatrixXi32 acc(a.m, w.n);
  detail_gemm::run(a, w, nullptr, 0, acc.data(), acc.outerStride(), options, kWhere);
  return acc;
}

}  // namespace oq::cpu
