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
//                   packed as format/int4_row.hpp or as bytes, Σq returned;
//                   the vector variants get the same codes without dividing
//                   where they can prove them equal (token_row_simd.inc)
// Min/max are exact whatever the order. The scalar variant is the reference
// the others are tested against; the AVX-512, AVX2 and NEON variants are one
// source (token_row_simd.inc) over simd_float.hpp's wrappers.
#pragma once

#include <oq/core/int4.hpp>
#include <oq/core/quant_math.hpp>
#include <oq/cpu/isa.hpp>
#include <oq/cpu/kernel/simd_float.hpp>

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
OQ_CPU_INTRINSICS_WARNINGS_OFF

OQ_CPU_BEGIN_AVX512
namespace avx512 {
using V = Avx512Float;
#include <oq/cpu/kernel/token_row_simd.inc>
}  // namespace avx512
OQ_CPU_END

OQ_CPU_BEGIN_AVX2
namespace avx2 {
using V = Avx2Float;
#include <oq/cpu/kernel/token_row_simd.inc>
}  // namespace avx2
OQ_CPU_END

OQ_CPU_INTRINSICS_WARNINGS_ON
#endif  // OQ_CPU_X86

#if OQ_CPU_NEON_DOT
namespace neon {
using V = NeonFloat;
#include <oq/cpu/kernel/token_row_simd.inc>
}  // namespace neon
#endif

/// The row kernels of one instruction set.
struct TokenRowKernels {
  RowRange (*row_range)(const float*, std::int64_t);
  void (*smooth)(const float*, const float*, float*, std::int64_t);
  void (*rotate_blocks)(const float*, const float*, std::int64_t, float*, std::int64_t);
  /// x → y and y's range; the scalar entry copies x to y first.
  RowRange (*hadamard_blocks)(const float*, float*, std::int64_t, std::int64_t, float);
  /// Codes of y (y_abs_max ≥ every |y[j]|, e.g. max(|lo|, |hi|) of its range); returns Σq.
  std::int64_t (*quantize)(const float* y, std::int64_t, core::AffineParams<float>, core::CodeRange, int,
                           std::uint8_t*, float y_abs_max);
};

namespace scalar {
inline RowRange hadamard_blocks_copy(const float* x, float* y, std::int64_t n, std::int64_t b, float scale) {
  std::copy(x, x + n, y);
  hadamard_blocks(y, n, b, scale);
  return row_range(y, n);
}
// The division needs no bound.
inline std::int64_t quantize_bounded(const float* y, std::int64_t n, core::AffineParams<float> p,
                                     core::CodeRange range, int bits, std::uint8_t* out, float /*y_abs_max*/) {
  return quantize(y, n, p, range, bits, out);
}
}  // namespace scalar

/// The kernels for `isa` (resolved: not kAuto).
inline TokenRowKernels token_row_kernels(Isa isa) {
#if OQ_CPU_X86
  if (isa == Isa::kAvx512Vnni)
    return {avx512::row_range, avx512::smooth, avx512::rotate_blocks, avx512::hadamard_blocks, avx512::quantize};
  if (isa == Isa::kAvx2)
    return {avx2::row_range, avx2::smooth, avx2::rotate_blocks, avx2::hadamard_blocks, avx2::quantize};
#endif
#if OQ_CPU_NEON_DOT
  if (isa == Isa::kNeonDot)
    return {neon::row_range, neon::smooth, neon::rotate_blocks, neon::hadamard_blocks, neon::quantize};
#endif
  (void)isa;
  return {scalar::row_range, scalar::smooth, scalar::rotate_blocks, scalar::hadamard_blocks_copy,
          scalar::quantize_bounded};
}

}  // namespace oq::cpu::kernel
