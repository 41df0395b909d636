// oq/cpu/kernel/token_row.hpp: the per-row steps of cpu::quantize_per_token
// (internal; include <oq/cpu.hpp>), written once per instruction set.
//
// Every variant does the same IEEE operations on each element, in the same
// order, so all of them give the same bits:
//   smooth          y[j] = x[j] / s[j]                      (DuQuantTransform::apply)
//   rotate_blocks   y[j] = fma(x[b−1], R[b−1, j], … fma(x[0], R[0, j], +0))
//                   per b-block, R row-major — the CUDA QuantizePerToken
//                   kernel's chain, in its order
//   hadamard_blocks butterflies (u, v) ↦ (u + v, u − v) at h = 1, 2, 4, …, b/2,
//                   then every value times float(1/√b) — what
//                   transform::block_hadamard_rows computes
//   quantize        q = clamp(rne(y / s) + z, lo, hi) (core::quantize_value),
//                   packed as format/int4_row.hpp or as bytes, Σq returned
// Min/max are exact whatever the order. The scalar variant is the reference
// the others are tested against.
#pragma once

#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/cpu/isa.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace oq::cpu::kernel {

/// A row's range, and whether every entry was finite (lo, hi meaningful only then).
struct RowRange {
  float lo;
  float hi;
  bool finite;
};

namespace scalar {

inline RowRange row_range(const float* x, std::int64_t n) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  bool finite = true;
  for (std::int64_t j = 0; j < n; ++j) {
    finite = finite && core::is_finite_value(x[j]);
    lo = x[j] < lo ? x[j] : lo;
    hi = x[j] > hi ? x[j] : hi;
  }
  return {lo, hi, finite};
}

inline void smooth(const float* x, const float* s, float* y, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) y[j] = x[j] / s[j];
}

inline void rotate_blocks(const float* x, const float* r, std::int64_t b, float* y, std::int64_t n) {
  for (std::int64_t s = 0; s < n; s += b) {
    for (std::int64_t j = 0; j < b; ++j) {
      float acc = 0.0f;
      for (std::int64_t i = 0; i < b; ++i) acc = std::fma(x[s + i], r[i * b + j], acc);
      y[s + j] = acc;
    }
  }
}

inline void hadamard_blocks(float* x, std::int64_t n, std::int64_t b, float scale) {
  for (std::int64_t s = 0; s < n; s += b)
    for (std::int64_t h = 1; h < b; h *= 2)
      for (std::int64_t i = s; i < s + b; i += 2 * h)
        for (std::int64_t j = i; j < i + h; ++j) {
          const float u = x[j], v = x[j + h];
          x[j] = u + v;
          x[j + h] = u - v;
        }
  for (std::int64_t j = 0; j < n; ++j) x[j] = x[j] * scale;
}

/// Codes of y[0, n) into out (bits 4: n even, n/2 bytes; bits 8: n bytes); returns Σq.
inline std::int64_t quantize(const float* y, std::int64_t n, core::AffineParams<float> p, core::CodeRange range,
                             int bits, std::uint8_t* out) {
  std::int64_t sum = 0;
  if (bits == 4) {
    for (std::int64_t j = 0; j < n; j += 2) {
      const int q0 = static_cast<int>(core::quantize_value(y[j], p, range));
      const int q1 = static_cast<int>(core::quantize_value(y[j + 1], p, range));
      out[j / 2] = core::pack_u4x2(static_cast<unsigned>(q0), static_cast<unsigned>(q1));
      sum += q0 + q1;
    }
  } else {
    for (std::int64_t j = 0; j < n; ++j) {
      const int q = static_cast<int>(core::quantize_value(y[j], p, range));
      out[j] = static_cast<std::uint8_t>(q);  // two's complement for signed codes
      sum += q;
    }
  }
  return sum;
}

}  // namespace scalar

#if OQ_CPU_X86
// GCC 12's intrinsics headers trip its own -Wmaybe-uninitialized through
// _mm512_undefined_* (GCC bug 105593, fixed in 13): silenced for the kernels only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace avx512 {

OQ_CPU_TARGET_AVX512VNNI inline RowRange row_range(const float* x, std::int64_t n) {
  __m512 lo = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 hi = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 nonfinite = _mm512_setzero_ps();  // Σ (x − x): 0 unless some x is ±Inf or NaN
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
    nonfinite = _mm512_add_ps(nonfinite, _mm512_sub_ps(v, v));
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    lo = _mm512_mask_min_ps(lo, m, lo, v);
    hi = _mm512_mask_max_ps(hi, m, hi, v);
    nonfinite = _mm512_add_ps(nonfinite, _mm512_sub_ps(v, v));
  }
  const bool finite = _mm512_cmp_ps_mask(nonfinite, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;
  return {_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), finite};
}

OQ_CPU_TARGET_AVX512VNNI inline void smooth(const float* x, const float* s, float* y, std::int64_t n) {
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, _mm512_div_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(s + j)));
  for (; j < n; ++j) y[j] = x[j] / s[j];
}

// One b-block: y[j0 .. j0 + 16·kVectors) of the chain, kVectors accumulators live.
template <int kVectors>
OQ_CPU_TARGET_AVX512VNNI inline void rotate_columns(const float* x, const float* r, std::int64_t b, std::int64_t j0,
                                                    __mmask16 last_mask, float* y) {
  __m512 acc[kVectors];
  for (int v = 0; v < kVectors; ++v) acc[v] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < b; ++i) {
    const __m512 xi = _mm512_set1_ps(x[i]);
    const float* row = r + i * b + j0;
    for (int v = 0; v < kVectors; ++v) {
      const __mmask16 m = v + 1 == kVectors ? last_mask : static_cast<__mmask16>(0xFFFF);
      acc[v] = _mm512_fmadd_ps(xi, _mm512_maskz_loadu_ps(m, row + 16 * v), acc[v]);
    }
  }
  for (int v = 0; v < kVectors; ++v)
    _mm512_mask_storeu_ps(y + j0 + 16 * v, v + 1 == kVectors ? last_mask : static_cast<__mmask16>(0xFFFF), acc[v]);
}

// Four b-blocks at once, columns j0 … j0 + 16·kVectors: each vector of R
// loaded once serves the four blocks (R is b² floats, 64 KiB at b = 128: it
// lives in L2, and one load per FMA would bound the loop by L2's bandwidth).
// Each output keeps its own chain in i order: the same bits as rotate_columns.
template <int kVectors>
OQ_CPU_TARGET_AVX512VNNI inline void rotate_columns4(const float* x, const float* r, std::int64_t b, std::int64_t j0,
                                                     __mmask16 last_mask, float* y) {
  __m512 acc[4][kVectors];
  for (int k = 0; k < 4; ++k)
    for (int v = 0; v < kVectors; ++v) acc[k][v] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < b; ++i) {
    const float* row = r + i * b + j0;
    __m512 rv[kVectors];
    for (int v = 0; v < kVectors; ++v)
      rv[v] = _mm512_maskz_loadu_ps(v + 1 == kVectors ? last_mask : static_cast<__mmask16>(0xFFFF), row + 16 * v);
    for (int k = 0; k < 4; ++k) {
      const __m512 xi = _mm512_set1_ps(x[k * b + i]);
      for (int v = 0; v < kVectors; ++v) acc[k][v] = _mm512_fmadd_ps(xi, rv[v], acc[k][v]);
    }
  }
  for (int k = 0; k < 4; ++k)
    for (int v = 0; v < kVectors; ++v)
      _mm512_mask_storeu_ps(y + k * b + j0 + 16 * v, v + 1 == kVectors ? last_mask : static_cast<__mmask16>(0xFFFF),
                            acc[k][v]);
}

OQ_CPU_TARGET_AVX512VNNI inline void rotate_blocks(const float* x, const float* r, std::int64_t b, float* y,
                                                   std::int64_t n) {
  std::int64_t s = 0;
  // Groups of four blocks, columns in runs of up to 4 vectors (16 accumulators).
  for (; s + 4 * b <= n; s += 4 * b) {
    for (std::int64_t j0 = 0; j0 < b; j0 += 64) {
      const std::int64_t width = b - j0 < 64 ? b - j0 : 64;
      const int vectors = static_cast<int>((width + 15) / 16);
      const auto rem = static_cast<unsigned>(width - 16 * (vectors - 1));
      const auto last = static_cast<__mmask16>(rem == 16 ? 0xFFFFu : (1u << rem) - 1u);
      switch (vectors) {
        case 1: rotate_columns4<1>(x + s, r, b, j0, last, y + s); break;
        case 2: rotate_columns4<2>(x + s, r, b, j0, last, y + s); break;
        case 3: rotate_columns4<3>(x + s, r, b, j0, last, y + s); break;
        default: rotate_columns4<4>(x + s, r, b, j0, last, y + s); break;
      }
    }
  }
  for (; s < n; s += b) {
    // Columns in runs of up to 8 vectors (128 floats): the accumulators stay in registers.
    for (std::int64_t j0 = 0; j0 < b; j0 += 128) {
      const std::int64_t width = b - j0 < 128 ? b - j0 : 128;
      const int vectors = static_cast<int>((width + 15) / 16);
      const auto rem = static_cast<unsigned>(width - 16 * (vectors - 1));
      const auto last = static_cast<__mmask16>(rem == 16 ? 0xFFFFu : (1u << rem) - 1u);
      switch (vectors) {
        case 1: rotate_columns<1>(x + s, r, b, j0, last, y + s); break;
        case 2: rotate_columns<2>(x + s, r, b, j0, last, y + s); break;
        case 3: rotate_columns<3>(x + s, r, b, j0, last, y + s); break;
        case 4: rotate_columns<4>(x + s, r, b, j0, last, y + s); break;
        case 5: rotate_columns<5>(x + s, r, b, j0, last, y + s); break;
        case 6: rotate_columns<6>(x + s, r, b, j0, last, y + s); break;
        case 7: rotate_columns<7>(x + s, r, b, j0, last, y + s); break;
        default: rotate_columns<8>(x + s, r, b, j0, last, y + s); break;
      }
    }
  }
}

// Butterflies with partner distance h < 16 inside each vector of 16: lane i
// pairs with lane i ^ h (one in-lane permute or 128-bit lane shuffle); the
// lane with bit h clear keeps u + v, the other u − v.
template <int kH>
OQ_CPU_TARGET_AVX512VNNI inline __m512 butterfly_in_vector(__m512 v) {
  __m512 partner;
  if constexpr (kH == 1) {
    partner = _mm512_permute_ps(v, 0xB1);  // lanes 1,0,3,2 in each 128 bits
  } else if constexpr (kH == 2) {
    partner = _mm512_permute_ps(v, 0x4E);  // 2,3,0,1
  } else if constexpr (kH == 4) {
    partner = _mm512_shuffle_f32x4(v, v, 0xB1);  // 128-bit lanes 1,0,3,2
  } else {
    static_assert(kH == 8, "h < 16");
    partner = _mm512_shuffle_f32x4(v, v, 0x4E);  // 2,3,0,1
  }
  constexpr auto kUpper = static_cast<__mmask16>(kH == 1 ? 0xAAAA : kH == 2 ? 0xCCCC : kH == 4 ? 0xF0F0 : 0xFF00);
  // Lower lane: v + partner = u + v. Upper lane: partner − v = u − v.
  return _mm512_mask_sub_ps(_mm512_add_ps(v, partner), kUpper, partner, v);
}

// The levels h = 1, 2, 4, 8 below `levels_below` (≤ 16).
OQ_CPU_TARGET_AVX512VNNI inline __m512 butterflies_in_vector(__m512 v, std::int64_t levels_below) {
  if (levels_below > 1) v = butterfly_in_vector<1>(v);
  if (levels_below > 2) v = butterfly_in_vector<2>(v);
  if (levels_below > 4) v = butterfly_in_vector<4>(v);
  if (levels_below > 8) v = butterfly_in_vector<8>(v);
  return v;
}

// One block of b = 16·kVectors values, x → y, in registers: the levels
// h < 16 inside each vector, then h = 16 … b/2 between vectors, then the scale.
// The block's min, max and Σ(y − y) (0 unless non-finite) join lo, hi, bad.
template <int kVectors>
OQ_CPU_TARGET_AVX512VNNI inline void hadamard_block(const float* x, float* y, float scale, __m512& lo, __m512& hi,
                                                    __m512& bad) {
  __m512 v[kVectors];
  for (int i = 0; i < kVectors; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    v[i] = butterfly_in_vector<8>(butterfly_in_vector<4>(butterfly_in_vector<2>(butterfly_in_vector<1>(v[i]))));
  }
  for (int d = 1; d < kVectors; d *= 2) {  // h = 16·d: vector i pairs with i + d
    for (int i = 0; i < kVectors; ++i) {
      if ((i & d) == 0) {
        const __m512 u = v[i], w = v[i + d];
        v[i] = _mm512_add_ps(u, w);
        v[i + d] = _mm512_sub_ps(u, w);
      }
    }
  }
  const __m512 factor = _mm512_set1_ps(scale);
  for (int i = 0; i < kVectors; ++i) {
    const __m512 out = _mm512_mul_ps(v[i], factor);
    _mm512_storeu_ps(y + 16 * i, out);
    lo = _mm512_min_ps(lo, out);
    hi = _mm512_max_ps(hi, out);
    bad = _mm512_add_ps(bad, _mm512_sub_ps(out, out));
  }
}

/// y ← x transformed (n a multiple of b, a power of two), and y's range
/// (row_range(y, n), found on the way); the scalar variant where n is not a
/// multiple of 16 or b > 256.
OQ_CPU_TARGET_AVX512VNNI inline RowRange hadamard_blocks(const float* x, float* y, std::int64_t n, std::int64_t b,
                                                         float scale) {
  if (n % 16 != 0 || b > 256) {
    std::copy(x, x + n, y);
    scalar::hadamard_blocks(y, n, b, scale);
    return row_range(y, n);
  }
  __m512 lo = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 hi = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 bad = _mm512_setzero_ps();
  if (b < 16) {
    // Blocks inside a vector: only the levels below b.
    const __m512 factor = _mm512_set1_ps(scale);
    for (std::int64_t j = 0; j < n; j += 16) {
      const __m512 v = _mm512_mul_ps(butterflies_in_vector(_mm512_loadu_ps(x + j), b), factor);
      _mm512_storeu_ps(y + j, v);
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
      bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v));
    }
  } else {
    for (std::int64_t s = 0; s < n; s += b) {
      switch (b) {
        case 16: hadamard_block<1>(x + s, y + s, scale, lo, hi, bad); break;
        case 32: hadamard_block<2>(x + s, y + s, scale, lo, hi, bad); break;
        case 64: hadamard_block<4>(x + s, y + s, scale, lo, hi, bad); break;
        case 128: hadamard_block<8>(x + s, y + s, scale, lo, hi, bad); break;
        default: hadamard_block<16>(x + s, y + s, scale, lo, hi, bad); break;
      }
    }
  }
  const bool finite = _mm512_cmp_ps_mask(bad, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;
  return {_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), finite};
}

// y / s as far as rounding to an integer can tell, without a division per
// element (vdivps is the costliest step of the pass): M = RN(y·inv) with
// inv = RN(1/s) lies within (2u + u²)·|y/s| of y/s and RN(y/s) within u·|y/s|
// (u = 2⁻²⁴), so rne(M) = rne(RN(y/s)) unless a half-integer lies within
// 4u·|M| of M. Lanes within 2⁻²⁰·|M| of one (16u: margin for the rounding of
// this test itself), exact ties, |M| ≥ 2¹⁹ and non-finite M take the IEEE
// division instead. The caller uses it only for s and 1/s normal.
OQ_CPU_TARGET_AVX512VNNI inline __m512 quotient_for_rounding(__m512 y, __m512 s, __m512 inv) {
  const __m512 m = _mm512_mul_ps(y, inv);
  const __m512 fraction = _mm512_sub_ps(m, _mm512_roundscale_ps(m, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const __m512 distance = _mm512_sub_ps(_mm512_set1_ps(0.5f), _mm512_abs_ps(fraction));
  const __m512 tolerance = _mm512_mul_ps(_mm512_abs_ps(m), _mm512_set1_ps(0x1p-20f));
  const __mmask16 near = _mm512_cmp_ps_mask(distance, tolerance, _CMP_NGT_UQ);  // ≤, or NaN
  return near == 0 ? m : _mm512_mask_div_ps(m, near, y, s);
}

// 16 codes of y[0, 16) as int32 lanes: clamp(rne(y / s) + z, lo, hi).
OQ_CPU_TARGET_AVX512VNNI inline __m512i quantize16(__m512 q, __m512 z, __m512 lo, __m512 hi) {
  q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, z), lo), hi);
  return _mm512_cvtps_epi32(q);  // integer-valued: exact
}

OQ_CPU_TARGET_AVX512VNNI inline std::int64_t quantize(const float* y, std::int64_t n, core::AffineParams<float> p,
                                                      core::CodeRange range, int bits, std::uint8_t* out) {
  const __m512 s = _mm512_set1_ps(p.scale), z = _mm512_set1_ps(p.zero);
  const float reciprocal = 1.0f / p.scale;
  const bool multiply = std::isnormal(p.scale) && std::isnormal(reciprocal);
  const __m512 inv = _mm512_set1_ps(reciprocal);
  auto quotient = [&](const float* at) OQ_CPU_LAMBDA_AVX512VNNI {
    const __m512 v = _mm512_loadu_ps(at);
    return multiply ? quotient_for_rounding(v, s, inv) : _mm512_div_ps(v, s);
  };
  const __m512 lo = _mm512_set1_ps(static_cast<float>(range.lo)), hi = _mm512_set1_ps(static_cast<float>(range.hi));
  __m512i sums = _mm512_setzero_si512();
  std::int64_t j = 0;
  if (bits == 4) {
    // 32 codes → 16 bytes: the low nibble of each code byte, pairs joined as
    // e0 + 16·e1 by vpmaddubsw (u8 nibbles × s8 {1, 16}), then packed to bytes.
    const __m128i nibble = _mm_set1_epi8(0x0F), weights = _mm_set1_epi16(0x1001);
    for (; j + 32 <= n; j += 32) {
      const __m512i q0 = quantize16(quotient(y + j), z, lo, hi);
      const __m512i q1 = quantize16(quotient(y + j + 16), z, lo, hi);
      sums = _mm512_add_epi32(sums, _mm512_add_epi32(q0, q1));
      const __m128i b0 = _mm_and_si128(_mm512_cvtepi32_epi8(q0), nibble);
      const __m128i b1 = _mm_and_si128(_mm512_cvtepi32_epi8(q1), nibble);
      const __m128i packed = _mm_packus_epi16(_mm_maddubs_epi16(b0, weights), _mm_maddubs_epi16(b1, weights));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j / 2), packed);
    }
  } else {
    for (; j + 16 <= n; j += 16) {
      const __m512i q = quantize16(quotient(y + j), z, lo, hi);
      sums = _mm512_add_epi32(sums, q);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtepi32_epi8(q));
    }
  }
  const std::int64_t head = _mm512_reduce_add_epi32(sums);
  return head + scalar::quantize(y + j, n - j, p, range, bits, out + (bits == 4 ? j / 2 : j));
}

}  // namespace avx512
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // OQ_CPU_X86

}  // namespace oq::cpu::kernel
