// oq/cpu/kernel/dot_int4.hpp: the inner products of the CPU GEMM (internal;
// include <oq/cpu.hpp>): MT prepared activation rows against 4 packed INT4
// weight rows over one K segment (a weight group, or all of K), as exact
// int32 sums.
//
// The x86 SIMD paths multiply unsigned bytes by signed bytes (vpdpbusd on
// AVX-512 VNNI; vpmaddubsw + vpmaddwd on AVX2), so both operands are biased
// into those types and the bias is taken out afterwards, exactly (NEON's
// sdot multiplies signed bytes: there only the activations are biased):
//   weights  u8 w' = w + bw: bw = 8 for s4 codes (the nibble XOR 8, done on
//            both nibbles of a byte at once by XOR 0x88), 0 for u4;
//   acts     s8 a' = a − ba: ba = 128 for uint8 codes, 0 otherwise (s8, and
//            INT4 codes, which fit s8 as they are);
//   D = Σ w'·a' = Σ w·a − ba·Σw + bw·Σa − L·bw·ba   ⇒   Σ w·a = D + ba·Σw − bw·Σa + L·bw·ba.
// Every |w'·a'| ≤ 15·128, so D and the vpmaddubsw pair sums (≤ 2·15·128)
// never saturate or overflow for K ≤ kMaxK.
//
// Prepared activation layout (PreparedActivations, built once per call):
// each segment of L codes is split into chunks of C codes (C = 128 for
// AVX-512, 64 for AVX2, 32 for NEON), zero-padded to a whole chunk; a chunk stores its
// even-indexed codes (C/2 bytes) then its odd-indexed ones, because C/2
// bytes of a packed weight row hold the even codes in their low nibbles and
// the odd codes in their high nibbles. The scalar path keeps natural order.
#pragma once

#include <oq/cpu/isa.hpp>

#include <cstdint>
#include <cstring>

namespace oq::cpu::kernel {

/// Codes per chunk of the prepared activations for an instruction set.
constexpr std::int64_t chunk_codes(Isa isa) noexcept {
  return isa == Isa::kAvx512Vnni ? 128 : isa == Isa::kAvx2 ? 64 : isa == Isa::kNeonDot ? 32 : 2;
}

/// The bias bw the path adds to the weight codes (8 for s4 on the x86 paths,
/// whose products take unsigned weights; 0 where the products are signed).
constexpr int weight_bias(Isa isa, bool w_signed) noexcept {
  return w_signed && (isa == Isa::kAvx512Vnni || isa == Isa::kAvx2) ? 8 : 0;
}

namespace scalar {

/// out[i][j] = Σ_{k < L} a[i][k]·w_j[k], a in natural order (int16), w_j packed.
template <int MT>
inline void dot_tile(const std::int16_t* const* a, const std::uint8_t* const* w, std::int64_t length, bool w_signed,
                     std::int32_t (&out)[MT][4]) {
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) out[i][j] = 0;
  for (std::int64_t k = 0; k < length; k += 2) {
    int lo[4], hi[4];
    for (int j = 0; j < 4; ++j) {
      const unsigned byte = w[j][k / 2];
      lo[j] = w_signed ? static_cast<int>((byte & 0xFu) ^ 8u) - 8 : static_cast<int>(byte & 0xFu);
      hi[j] = w_signed ? static_cast<int>((byte >> 4) ^ 8u) - 8 : static_cast<int>(byte >> 4);
    }
    for (int i = 0; i < MT; ++i)
      for (int j = 0; j < 4; ++j) out[i][j] += a[i][k] * lo[j] + a[i][k + 1] * hi[j];
  }
}

}  // namespace scalar

#if OQ_CPU_X86
OQ_CPU_INTRINSICS_WARNINGS_OFF
namespace avx512 {

/// out[i][j] = Σ over the segment of w'·a' (see the file comment); a: MT
/// prepared rows at the segment's start, w: 4 packed rows at the segment's
/// first byte, `bytes` = L/2 of them.
template <int MT>
OQ_CPU_TARGET_AVX512VNNI inline void dot_tile(const std::int8_t* const* a, const std::uint8_t* const* w,
                                              std::int64_t bytes, bool w_signed, std::int32_t (&out)[MT][4]) {
  __m512i acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i bias = _mm512_set1_epi8(w_signed ? static_cast<char>(0x88) : 0);
  for (std::int64_t c = 0; c < bytes; c += 64) {
    const std::int64_t valid = bytes - c < 64 ? bytes - c : 64;
    const __mmask64 m = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    __m512i wlo[4], whi[4];
    for (int j = 0; j < 4; ++j) {
      const __m512i raw = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w[j] + c), bias);
      wlo[j] = _mm512_and_si512(raw, low);
      whi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
    }
    for (int i = 0; i < MT; ++i) {
      const __m512i even = _mm512_loadu_si512(a[i] + 2 * c);
      const __m512i odd = _mm512_loadu_si512(a[i] + 2 * c + 64);
      for (int j = 0; j < 4; ++j) {
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wlo[j], even);
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], whi[j], odd);
      }
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) out[i][j] = _mm512_reduce_add_epi32(acc[i][j]);
}

}  // namespace avx512

namespace avx2 {

/// As avx512::dot_tile with 32-byte chunks (64 codes), MT ≤ 2.
template <int MT>
OQ_CPU_TARGET_AVX2 inline void dot_tile(const std::int8_t* const* a, const std::uint8_t* const* w, std::int64_t bytes,
                                        bool w_signed, std::int32_t (&out)[MT][4]) {
  __m256i acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_setzero_si256();
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i bias = _mm256_set1_epi8(w_signed ? static_cast<char>(0x88) : 0);
  for (std::int64_t c = 0; c < bytes; c += 32) {
    const std::int64_t valid = bytes - c < 32 ? bytes - c : 32;
    for (int j = 0; j < 4; ++j) {
      __m256i raw;
      if (valid == 32) {
        raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + c));
      } else {
        // No byte-masked loads before AVX-512: the segment's tail through a
        // zeroed buffer (never read past the row).
        alignas(32) std::uint8_t tail[32] = {};
        std::memcpy(tail, w[j] + c, static_cast<std::size_t>(valid));
        raw = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
      }
      raw = _mm256_xor_si256(raw, bias);
      const __m256i wlo = _mm256_and_si256(raw, low);
      const __m256i whi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
      for (int i = 0; i < MT; ++i) {
        const __m256i even = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i] + 2 * c));
        const __m256i odd = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i] + 2 * c + 32));
        // Pair sums ≤ 2·15·128 each, their sum ≤ 7680: no int16 overflow.
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(wlo, even), _mm256_maddubs_epi16(whi, odd));
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int i = 0; i < MT; ++i) {
    for (int j = 0; j < 4; ++j) {
      const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc[i][j]), _mm256_extracti128_si256(acc[i][j], 1));
      const __m128i s2 = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
      out[i][j] = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xB1)));
    }
  }
}

}  // namespace avx2
OQ_CPU_INTRINSICS_WARNINGS_ON
#endif  // OQ_CPU_X86

#if OQ_CPU_NEON_DOT
namespace neon {

/// As avx512::dot_tile with 16-byte chunks (32 codes) and sdot (s8 × s8 →
/// s32 in fours): signed products, so s4 weights are sign-extended in place
/// (bw = 0) and only uint8 activations are biased.
template <int MT>
inline void dot_tile(const std::int8_t* const* a, const std::uint8_t* const* w, std::int64_t bytes, bool w_signed,
                     std::int32_t (&out)[MT][4]) {
  int32x4_t acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = vdupq_n_s32(0);
  for (std::int64_t c = 0; c < bytes; c += 16) {
    const std::int64_t valid = bytes - c < 16 ? bytes - c : 16;
    for (int j = 0; j < 4; ++j) {
      std::uint8_t tail[16] = {};
      const std::uint8_t* src = w[j] + c;
      if (valid < 16) {
        std::memcpy(tail, src, static_cast<std::size_t>(valid));
        src = tail;
      }
      const uint8x16_t raw = vld1q_u8(src);
      int8x16_t lo, hi;
      if (w_signed) {
        const int8x16_t s = vreinterpretq_s8_u8(raw);
        lo = vshrq_n_s8(vshlq_n_s8(s, 4), 4);  // arithmetic: sign-extends the low nibble
        hi = vshrq_n_s8(s, 4);
      } else {
        lo = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F)));
        hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
      }
      for (int i = 0; i < MT; ++i) {
        acc[i][j] = vdotq_s32(acc[i][j], lo, vld1q_s8(a[i] + 2 * c));
        acc[i][j] = vdotq_s32(acc[i][j], hi, vld1q_s8(a[i] + 2 * c + 16));
      }
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < 4; ++j) out[i][j] = vaddvq_s32(acc[i][j]);
}

}  // namespace neon
#endif  // OQ_CPU_NEON_DOT

}  // namespace oq::cpu::kernel
