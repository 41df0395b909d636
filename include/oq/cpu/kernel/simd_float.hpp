// oq/cpu/kernel/simd_float.hpp: the float vector operations the per-token
// kernels are written in (internal), once per instruction set, and the
// pragmas that compile a region of code for one of them.
//
// token_row_simd.inc holds the kernels once; token_row.hpp includes it in
// each instruction set's namespace inside OQ_CPU_BEGIN_* / OQ_CPU_END, with V
// naming that set's wrapper below. Every operation is the IEEE one (no
// approximations), so each instantiation computes the same bits.
#pragma once

#include <oq/cpu/isa.hpp>

#include <cstdint>

#if OQ_CPU_X86

// Regions of code compiled for one instruction set (functions, templates and
// lambdas alike), without a global -m flag.
#if defined(__clang__)
#define OQ_CPU_BEGIN_AVX2 \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define OQ_CPU_BEGIN_AVX512 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma\"))), apply_to = function)")
#define OQ_CPU_END _Pragma("clang attribute pop")
#else
#define OQ_CPU_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define OQ_CPU_BEGIN_AVX512 \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma\")")
#define OQ_CPU_END _Pragma("GCC pop_options")
#endif

OQ_CPU_INTRINSICS_WARNINGS_OFF

namespace oq::cpu::kernel {

OQ_CPU_BEGIN_AVX512
/// 16 floats (AVX-512).
struct Avx512Float {
  using F = __m512;
  using I = __m512i;
  static constexpr int kLanes = 16;
  static constexpr int kRotateVectors4 = 4;    // columns per run when four blocks share R loads
  static constexpr int kRegisterVectors = 16;  // a Hadamard block this long stays in registers

  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static __mmask16 first(int count) { return static_cast<__mmask16>(count >= 16 ? 0xFFFFu : (1u << count) - 1u); }
  static F load_first(const float* p, int count) { return _mm512_maskz_loadu_ps(first(count), p); }
  static void store_first(float* p, F v, int count) { _mm512_mask_storeu_ps(p, first(count), v); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F zero() { return _mm512_setzero_ps(); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F abs(F a) { return _mm512_abs_ps(a); }
  static F round_even(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static bool all_zero(F a) { return _mm512_cmp_ps_mask(a, zero(), _CMP_EQ_OQ) == 0xFFFF; }
  static float reduce_min(F a) { return _mm512_reduce_min_ps(a); }
  static float reduce_max(F a) { return _mm512_reduce_max_ps(a); }
  /// Lane i of the result is lane i ^ h of v (h < kLanes).
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return _mm512_permute_ps(v, 0xB1);         // 1,0,3,2 in each 128 bits
    if constexpr (kH == 2) return _mm512_permute_ps(v, 0x4E);         // 2,3,0,1
    if constexpr (kH == 4) return _mm512_shuffle_f32x4(v, v, 0xB1);   // 128-bit lanes 1,0,3,2
    if constexpr (kH == 8) return _mm512_shuffle_f32x4(v, v, 0x4E);   // 2,3,0,1
  }
  /// +1 in the lower lanes (bit h clear), −1 in the upper ones.
  template <int kH>
  static F upper_negated() {
    if constexpr (kH == 1) return _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
    if constexpr (kH == 2) return _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
    if constexpr (kH == 4) return _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
    if constexpr (kH == 8) return _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  }
  /// Every lane of a < b (ordered: false for NaN).
  static bool all_less(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ) == 0xFFFF; }
  /// The bits of t, less those of 1.5·2²³, as integers: t − 1.5·2²³ for t in [2²³, 2²⁴).
  static I magic_integer(F t) { return _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000)); }
  static I codes(F q) { return _mm512_cvtps_epi32(q); }  // integer-valued: exact

  /// Per-row state of store_codes: the code range as bytes and the running Σq.
  struct CodeSink {
    __m512i lo, hi, sums;  // sums: eight u64 sums of (q + bias) bytes
    std::int64_t bias;     // 128 for signed codes (summed as q + 128), else 0
    std::int64_t count;    // codes stored
    bool unsigned_bytes;   // codes up to 255: unsigned saturation
    bool nibbles;          // 4-bit codes, two per byte
  };
  static constexpr int kCodeVectors = 8;  // store_codes takes 128 codes
  static CodeSink code_sink(int lo, int hi, int bits) {
    const bool wide = hi > 127;
    return {_mm512_set1_epi8(static_cast<char>(lo)), _mm512_set1_epi8(static_cast<char>(hi)), _mm512_setzero_si512(),
            lo < 0 ? 128 : 0, 0, wide, bits == 4};
  }
  // 64 int32 codes (four vectors) → 64 bytes in order, saturated to the
  // byte range (vpackssdw, then vpacksswb or vpackuswb: monotone, so the
  // clamp after them equals the clamp of the integers when [lo, hi] lies in
  // the byte range) and clamped to [lo, hi]. The packs interleave 128-bit
  // lanes: lane l holds c0[4l..4l+3], c1[…], c2[…], c3[…]; vpermd puts
  // dword 4l + i at 4i + l.
  static __m512i code_bytes(const I* c, const CodeSink& k) {
    const __m512i w0 = _mm512_packs_epi32(c[0], c[1]), w1 = _mm512_packs_epi32(c[2], c[3]);
    const __m512i b = k.unsigned_bytes ? _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(w0, w1), k.lo), k.hi)
                                       : _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(w0, w1), k.lo), k.hi);
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), b);
  }
  /// kCodeVectors vectors of int32 codes (|c| < 2³¹) → clamped to [lo, hi],
  /// stored (64 bytes of nibble pairs e0 | e1 << 4, or 128 bytes), added to Σq.
  static void store_codes(const I* c, CodeSink& k, std::uint8_t* out) {
    __m512i b0 = code_bytes(c, k), b1 = code_bytes(c + 4, k);
    if (k.bias != 0) {  // signed codes: q + 128 as unsigned bytes for vpsadbw
      const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
      k.sums = _mm512_add_epi64(k.sums, _mm512_add_epi64(_mm512_sad_epu8(_mm512_xor_si512(b0, flip), _mm512_setzero_si512()),
                                                         _mm512_sad_epu8(_mm512_xor_si512(b1, flip), _mm512_setzero_si512())));
    } else {
      k.sums = _mm512_add_epi64(k.sums, _mm512_add_epi64(_mm512_sad_epu8(b0, _mm512_setzero_si512()),
                                                         _mm512_sad_epu8(b1, _mm512_setzero_si512())));
    }
    k.count += 128;
    if (k.nibbles) {
      // Low nibbles (unsigned 4-bit codes are 0..15 already); pairs joined as
      // e0 + 16·e1 by vpmaddubsw (u8 × s8 {1, 16}), words packed to bytes
      // (vpackuswb interleaves the two inputs' 64-bit halves of each 128-bit
      // lane; vpermq restores the order).
      if (k.bias != 0) {
        const __m512i nibble = _mm512_set1_epi8(0x0F);
        b0 = _mm512_and_si512(b0, nibble);
        b1 = _mm512_and_si512(b1, nibble);
      }
      const __m512i weights = _mm512_set1_epi16(0x1001);
      const __m512i w0 = _mm512_maddubs_epi16(b0, weights);
      const __m512i w1 = _mm512_maddubs_epi16(b1, weights);
      _mm512_storeu_si512(out, _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7),
                                                         _mm512_packus_epi16(w0, w1)));
    } else {
      _mm512_storeu_si512(out, b0);
      _mm512_storeu_si512(out + 64, b1);
    }
  }
  static std::int64_t code_sum(const CodeSink& k) {
    return static_cast<std::int64_t>(_mm512_reduce_add_epi64(k.sums)) - k.bias * k.count;
  }
};
OQ_CPU_END

OQ_CPU_BEGIN_AVX2
/// 8 floats (AVX2 + FMA).
struct Avx2Float {
  using F = __m256;
  using I = __m256i;
  static constexpr int kLanes = 8;
  static constexpr int kRotateVectors4 = 2;   // 8 accumulators + 2 of R: inside 16 registers
  static constexpr int kRegisterVectors = 8;

  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static __m256i first(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F load_first(const float* p, int count) { return _mm256_maskload_ps(p, first(count)); }
  static void store_first(float* p, F v, int count) { _mm256_maskstore_ps(p, first(count), v); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F zero() { return _mm256_setzero_ps(); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static F round_even(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static bool all_zero(F a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, zero(), _CMP_EQ_OQ)) == 0xFF; }
  static float reduce_min(F a) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
  }
  static float reduce_max(F a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return _mm256_permute_ps(v, 0xB1);
    if constexpr (kH == 2) return _mm256_permute_ps(v, 0x4E);
    if constexpr (kH == 4) return _mm256_permute2f128_ps(v, v, 0x01);
  }
  template <int kH>
  static F upper_negated() {
    if constexpr (kH == 1) return _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    if constexpr (kH == 2) return _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    if constexpr (kH == 4) return _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  }
  static bool all_less(F a, F b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ)) == 0xFF; }
  static I magic_integer(F t) { return _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000)); }
  static I codes(F q) { return _mm256_cvtps_epi32(q); }

  struct CodeSink {
    __m256i lo, hi, sums;
    std::int64_t bias;
    std::int64_t count;
    bool unsigned_bytes;
    bool nibbles;
  };
  static constexpr int kCodeVectors = 8;  // 64 codes
  static CodeSink code_sink(int lo, int hi, int bits) {
    return {_mm256_set1_epi8(static_cast<char>(lo)), _mm256_set1_epi8(static_cast<char>(hi)), _mm256_setzero_si256(),
            lo < 0 ? 128 : 0, 0, hi > 127, bits == 4};
  }
  // 32 int32 codes → 32 bytes in order, as Avx512Float::code_bytes: lane l
  // of the packs holds c0[4l..4l+3], c1[…], c2[…], c3[…] (l = 0, 1); vpermd
  // puts dword 4l + i at 2i + l.
  static __m256i code_bytes(const I* c, const CodeSink& k) {
    const __m256i w0 = _mm256_packs_epi32(c[0], c[1]), w1 = _mm256_packs_epi32(c[2], c[3]);
    const __m256i b = k.unsigned_bytes ? _mm256_min_epu8(_mm256_max_epu8(_mm256_packus_epi16(w0, w1), k.lo), k.hi)
                                       : _mm256_min_epi8(_mm256_max_epi8(_mm256_packs_epi16(w0, w1), k.lo), k.hi);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
  static void store_codes(const I* c, CodeSink& k, std::uint8_t* out) {
    const __m256i b0 = code_bytes(c, k), b1 = code_bytes(c + 4, k);
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(k.bias));
    k.sums = _mm256_add_epi64(k.sums, _mm256_add_epi64(_mm256_sad_epu8(_mm256_xor_si256(b0, flip), _mm256_setzero_si256()),
                                                       _mm256_sad_epu8(_mm256_xor_si256(b1, flip), _mm256_setzero_si256())));
    k.count += 64;
    if (k.nibbles) {
      const __m256i nibble = _mm256_set1_epi8(0x0F), weights = _mm256_set1_epi16(0x1001);
      const __m256i w0 = _mm256_maddubs_epi16(_mm256_and_si256(b0, nibble), weights);
      const __m256i w1 = _mm256_maddubs_epi16(_mm256_and_si256(b1, nibble), weights);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute4x64_epi64(_mm256_packus_epi16(w0, w1), 0xD8));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), b0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), b1);
    }
  }
  static std::int64_t code_sum(const CodeSink& k) {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(k.sums), _mm256_extracti128_si256(k.sums, 1));
    return _mm_cvtsi128_si64(_mm_add_epi64(s, _mm_unpackhi_epi64(s, s))) - k.bias * k.count;
  }
};
OQ_CPU_END

}  // namespace oq::cpu::kernel

OQ_CPU_INTRINSICS_WARNINGS_ON

#endif  // OQ_CPU_X86

#if OQ_CPU_NEON_DOT
#include <cstring>

namespace oq::cpu::kernel {

/// 4 floats (AArch64 Advanced SIMD; baseline on every aarch64 core).
struct NeonFloat {
  using F = float32x4_t;
  using I = int32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kRotateVectors4 = 4;    // 16 accumulators + 4 of R in 32 registers
  static constexpr int kRegisterVectors = 16;

  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_first(const float* p, int count) {
    float lanes[4] = {};
    std::memcpy(lanes, p, sizeof(float) * static_cast<std::size_t>(count < 4 ? count : 4));
    return vld1q_f32(lanes);
  }
  static void store_first(float* p, F v, int count) {
    float lanes[4];
    vst1q_f32(lanes, v);
    std::memcpy(p, lanes, sizeof(float) * static_cast<std::size_t>(count < 4 ? count : 4));
  }
  static F set1(float v) { return vdupq_n_f32(v); }
  static F zero() { return vdupq_n_f32(0.0f); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }  // c + a·b, one rounding
  static F min(F a, F b) { return vminq_f32(a, b); }
  static F max(F a, F b) { return vmaxq_f32(a, b); }
  static F abs(F a) { return vabsq_f32(a); }
  static F round_even(F a) { return vrndnq_f32(a); }
  static bool all_zero(F a) { return vminvq_u32(vceqq_f32(a, zero())) == 0xFFFFFFFFu; }
  static float reduce_min(F a) { return vminvq_f32(a); }
  static float reduce_max(F a) { return vmaxvq_f32(a); }
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return vrev64q_f32(v);    // 1,0,3,2
    if constexpr (kH == 2) return vextq_f32(v, v, 2);  // 2,3,0,1
  }
  template <int kH>
  static F upper_negated() {
    return kH == 1 ? F{1.0f, -1.0f, 1.0f, -1.0f} : F{1.0f, 1.0f, -1.0f, -1.0f};
  }
  static bool all_less(F a, F b) { return vminvq_u32(vcltq_f32(a, b)) == 0xFFFFFFFFu; }
  static I magic_integer(F t) { return vsubq_s32(vreinterpretq_s32_f32(t), vdupq_n_s32(0x4B400000)); }
  static I codes(F q) { return vcvtnq_s32_f32(q); }  // integer-valued: exact

  struct CodeSink {
    uint8x16_t lo, hi;
    int32x4_t sums;
    bool unsigned_bytes;
    bool nibbles;
  };
  static constexpr int kCodeVectors = 8;  // 32 codes
  static CodeSink code_sink(int lo, int hi, int bits) {
    return {vdupq_n_u8(static_cast<std::uint8_t>(lo)), vdupq_n_u8(static_cast<std::uint8_t>(hi)), vdupq_n_s32(0),
            hi > 127, bits == 4};
  }
  // 16 int32 codes → 16 bytes in order, saturated by vqmovn / vqmovun (monotone) and clamped.
  static uint8x16_t code_bytes(const I* c, const CodeSink& k) {
    const int16x8_t h0 = vcombine_s16(vqmovn_s32(c[0]), vqmovn_s32(c[1]));
    const int16x8_t h1 = vcombine_s16(vqmovn_s32(c[2]), vqmovn_s32(c[3]));
    if (k.unsigned_bytes) return vminq_u8(vmaxq_u8(vcombine_u8(vqmovun_s16(h0), vqmovun_s16(h1)), k.lo), k.hi);
    const int8x16_t b = vminq_s8(vmaxq_s8(vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)), vreinterpretq_s8_u8(k.lo)),
                                 vreinterpretq_s8_u8(k.hi));
    return vreinterpretq_u8_s8(b);
  }
  static void store_codes(const I* c, CodeSink& k, std::uint8_t* out) {
    for (int half = 0; half < 2; ++half) {
      const uint8x16_t b = code_bytes(c + 4 * half, k);
      k.sums = vpadalq_s16(k.sums, k.unsigned_bytes ? vreinterpretq_s16_u16(vpaddlq_u8(b))
                                                    : vpaddlq_s8(vreinterpretq_s8_u8(b)));
      if (k.nibbles) {
        // As u16 lanes q0 | q1 << 8 (low nibbles): w | w >> 4 has q0 | q1 << 4 in its low byte.
        const uint16x8_t w = vreinterpretq_u16_u8(vandq_u8(b, vdupq_n_u8(0x0F)));
        vst1_u8(out + 8 * half, vmovn_u16(vorrq_u16(w, vshrq_n_u16(w, 4))));
      } else {
        vst1q_u8(out + 16 * half, b);
      }
    }
  }
  static std::int64_t code_sum(const CodeSink& k) { return vaddvq_s32(k.sums); }
};

}  // namespace oq::cpu::kernel
#endif  // OQ_CPU_NEON_DOT
