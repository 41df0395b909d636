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
  /// r where distance > tolerance (ordered), rne(a / b) elsewhere.
  static F rounded_division_where_near(F r, F a, F b, F distance, F tolerance) {
    const __mmask16 near = _mm512_cmp_ps_mask(distance, tolerance, _CMP_NGT_UQ);
    if (near == 0) return r;
    return _mm512_mask_roundscale_ps(r, near, _mm512_div_ps(a, b), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  /// Lane i of the result is lane i ^ h of v (h < kLanes).
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return _mm512_permute_ps(v, 0xB1);         // 1,0,3,2 in each 128 bits
    if constexpr (kH == 2) return _mm512_permute_ps(v, 0x4E);         // 2,3,0,1
    if constexpr (kH == 4) return _mm512_shuffle_f32x4(v, v, 0xB1);   // 128-bit lanes 1,0,3,2
    if constexpr (kH == 8) return _mm512_shuffle_f32x4(v, v, 0x4E);   // 2,3,0,1
  }
  /// lower lanes (bit h clear) a, upper lanes b.
  template <int kH>
  static F blend_upper(F a, F b) {
    constexpr auto kUpper = static_cast<__mmask16>(kH == 1 ? 0xAAAA : kH == 2 ? 0xCCCC : kH == 4 ? 0xF0F0 : 0xFF00);
    return _mm512_mask_blend_ps(kUpper, a, b);
  }
  static I codes(F q) { return _mm512_cvtps_epi32(q); }  // integer-valued: exact
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I izero() { return _mm512_setzero_si512(); }
  static std::int64_t ireduce(I a) { return _mm512_reduce_add_epi32(a); }
  /// 32 codes (two vectors) → 16 bytes of nibble pairs e0 | e1 << 4.
  static void store_nibbles(const I* q, std::uint8_t* out) {
    // Low nibble of each code byte; pairs joined as e0 + 16·e1 by vpmaddubsw
    // (u8 nibbles × s8 {1, 16}), then packed to bytes.
    const __m128i nibble = _mm_set1_epi8(0x0F), weights = _mm_set1_epi16(0x1001);
    const __m128i b0 = _mm_and_si128(_mm512_cvtepi32_epi8(q[0]), nibble);
    const __m128i b1 = _mm_and_si128(_mm512_cvtepi32_epi8(q[1]), nibble);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm_packus_epi16(_mm_maddubs_epi16(b0, weights), _mm_maddubs_epi16(b1, weights)));
  }
  /// kLanes codes → kLanes bytes (two's complement for negative codes).
  static void store_bytes(I q, std::uint8_t* out) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(q));
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
  static F rounded_division_where_near(F r, F a, F b, F distance, F tolerance) {
    const __m256 near = _mm256_cmp_ps(distance, tolerance, _CMP_NGT_UQ);
    if (_mm256_movemask_ps(near) == 0) return r;
    return _mm256_blendv_ps(r, round_even(_mm256_div_ps(a, b)), near);
  }
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return _mm256_permute_ps(v, 0xB1);
    if constexpr (kH == 2) return _mm256_permute_ps(v, 0x4E);
    if constexpr (kH == 4) return _mm256_permute2f128_ps(v, v, 0x01);
  }
  template <int kH>
  static F blend_upper(F a, F b) {
    return _mm256_blend_ps(a, b, kH == 1 ? 0xAA : kH == 2 ? 0xCC : 0xF0);
  }
  static I codes(F q) { return _mm256_cvtps_epi32(q); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I izero() { return _mm256_setzero_si256(); }
  static std::int64_t ireduce(I a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
  }
  /// 32 codes (four vectors) → 16 bytes of nibble pairs.
  static void store_nibbles(const I* q, std::uint8_t* out) {
    alignas(32) std::int32_t lanes[32];
    for (int v = 0; v < 4; ++v) _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8 * v), q[v]);
    for (int i = 0; i < 16; ++i)
      out[i] = static_cast<std::uint8_t>((lanes[2 * i] & 0xF) | ((lanes[2 * i + 1] & 0xF) << 4));
  }
  static void store_bytes(I q, std::uint8_t* out) {
    alignas(32) std::int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), q);
    for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(lanes[i] & 0xFF);
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
  static F rounded_division_where_near(F r, F a, F b, F distance, F tolerance) {
    const uint32x4_t near = vmvnq_u32(vcgtq_f32(distance, tolerance));  // ≤, or NaN
    if (vmaxvq_u32(near) == 0) return r;
    return vbslq_f32(near, vrndnq_f32(vdivq_f32(a, b)), r);
  }
  template <int kH>
  static F partner(F v) {
    if constexpr (kH == 1) return vrev64q_f32(v);    // 1,0,3,2
    if constexpr (kH == 2) return vextq_f32(v, v, 2);  // 2,3,0,1
  }
  template <int kH>
  static F blend_upper(F a, F b) {
    const uint32x4_t upper = kH == 1 ? uint32x4_t{0u, ~0u, 0u, ~0u} : uint32x4_t{0u, 0u, ~0u, ~0u};
    return vbslq_f32(upper, b, a);
  }
  static I codes(F q) { return vcvtnq_s32_f32(q); }  // integer-valued: exact
  static I iadd(I a, I b) { return vaddq_s32(a, b); }
  static I izero() { return vdupq_n_s32(0); }
  static std::int64_t ireduce(I a) { return vaddvq_s32(a); }
  /// 32 codes (eight vectors) → 16 bytes of nibble pairs.
  static void store_nibbles(const I* q, std::uint8_t* out) {
    std::int32_t lanes[32];
    for (int v = 0; v < 8; ++v) vst1q_s32(lanes + 4 * v, q[v]);
    for (int i = 0; i < 16; ++i)
      out[i] = static_cast<std::uint8_t>((lanes[2 * i] & 0xF) | ((lanes[2 * i + 1] & 0xF) << 4));
  }
  static void store_bytes(I q, std::uint8_t* out) {
    std::int32_t lanes[4];
    vst1q_s32(lanes, q);
    for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(lanes[i] & 0xFF);
  }
};

}  // namespace oq::cpu::kernel
#endif  // OQ_CPU_NEON_DOT
