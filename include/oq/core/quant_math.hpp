// oq/core/quant_math.hpp: the scalar formulas of uniform affine quantization
// (docs/design.md §2), shared by the host quantizers, the reference implementation's
// tests and the CUDA kernels. Pure functions, no exceptions, no Eigen.
//
// Symmetric, b bits:  q = clamp(rne(x/s), −2^(b−1), 2^(b−1)−1),   x̂ = q·s,
//                     s = c·max|x| / (2^(b−1)−1)
// Asymmetric, b bits: q = clamp(rne(x/s) + z, 0, 2^b−1),           x̂ = (q − z)·s,
//                     s = (c·max − c·min) / (2^b−1),  z = rne(−c·min / s)
// c is the clip ratio. The order of operations is that of the DuQuant/OmniQuant
// release (quantize/quantizer.py: clip both ends, subtract, divide; x / scale
// rather than x * (1/scale)), so float results match it bit for bit.
//
// Degenerate groups (docs/design.md §2: a zero range never gives NaN):
//  - an all-zero group gets s = 1, z = 0;
//  - a constant group x ≡ v ≠ 0 in asymmetric mode has zero range; s = 1 would
//    reconstruct rne(v), not v, so oq takes s = |v|, z = rne(−v/s) = −sign(v),
//    which reconstructs v exactly with code 0; the same rule covers a range
//    whose scale underflows to 0;
//  - a range so wide that c·max − c·min overflows is computed as
//    c·max/(2^b−1) − c·min/(2^b−1) instead of giving s = ∞ and all-zero output.
// Zero points are integers stored in the scalar type; docs/design.md §2's formula puts
// them outside [0, 2^b−1] whenever a group does not straddle zero, exactly as
// the released code does, so they are not b-bit codes.
#pragma once

#include <oq/config.hpp>
#include <oq/core/rounding.hpp>

namespace oq::core {

inline constexpr int kMinBits = 2;
inline constexpr int kMaxBits = 8;

/// The inclusive range of integer codes.
struct CodeRange {
  int lo;
  int hi;
};

/// Code range for `bits` bits: symmetric [−2^(b−1), 2^(b−1)−1], asymmetric [0, 2^b−1].
/// Precondition: kMinBits <= bits <= kMaxBits (a shift by an unchecked count
/// is undefined); host code asks through QuantSpec::code_range, which checks.
OQ_HOST_DEVICE constexpr CodeRange code_range(int bits, bool symmetric) noexcept {
  return symmetric ? CodeRange{-(1 << (bits - 1)), (1 << (bits - 1)) - 1}
                   : CodeRange{0, (1 << bits) - 1};
}

/// Scale and zero point of one quantization group.
template <class T>
struct AffineParams {
  T scale;
  T zero;  // integer-valued; 0 for symmetric quantization
};

template <class T>
OQ_HOST_DEVICE constexpr T abs_value(T x) noexcept {
  return x < T(0) ? -x : x;
}

template <class T>
OQ_HOST_DEVICE constexpr bool is_finite_value(T x) noexcept {
  // x − x is 0 for finite x and NaN for ±Inf and NaN; no <cmath> needed on device.
  return (x - x) == T(0);
}

/// Symmetric parameters from the group's largest magnitude (before clipping).
template <class T>
OQ_HOST_DEVICE constexpr AffineParams<T> symmetric_params(T absmax, T clip_ratio, int bits) noexcept {
  const T clipped = mul_rn(clip_ratio, absmax);
  const T scale = clipped / static_cast<T>((1 << (bits - 1)) - 1);
  if (scale == T(0)) return {T(1), T(0)};  // all-zero group
  return {scale, T(0)};
}

/// Symmetric parameters on the full code range: max|x| maps to 2^(b−1) − ½,
/// s = 2·c·max|x| / (2^b − 1), so that the code −2^(b−1) is used as well and
/// +max|x| rounds to 2^(b−1) and clamps to 2^(b−1) − 1 (an error of s/2).
/// GPTQ's reference quantizer (gptq/quant.py, sym = True: zero (maxq + 1)/2
/// on unsigned codes) computes this grid.
template <class T>
OQ_HOST_DEVICE constexpr AffineParams<T> symmetric_full_range_params(T absmax, T clip_ratio, int bits) noexcept {
  const T clipped = mul_rn(clip_ratio, absmax);
  // (2^b − 1)/2 is exact in binary floating point, and c·max|x| / it is the
  // correctly rounded 2·c·max|x| / (2^b − 1), the reference's (xmax − xmin)/maxq.
  const T scale = clipped / (static_cast<T>((1 << bits) - 1) / T(2));
  if (scale == T(0)) return {T(1), T(0)};  // all-zero group
  return {scale, T(0)};
}

/// Asymmetric parameters from the group's minimum and maximum (before clipping).
template <class T>
OQ_HOST_DEVICE constexpr AffineParams<T> asymmetric_params(T min, T max, T clip_ratio, int bits) noexcept {
  const T levels = static_cast<T>((1 << bits) - 1);
  // Each product rounded on its own (mul_rn): the device would otherwise
  // fuse one of them into the subtraction below.
  const T cmin = mul_rn(clip_ratio, min);
  const T cmax = mul_rn(clip_ratio, max);
  T scale = (cmax - cmin) / levels;
  if (!is_finite_value(scale)) scale = cmax / levels - cmin / levels;  // range overflowed
  if (scale == T(0)) {
    // Zero range: a constant group (or one whose range underflows). Represent the
    // value v of largest magnitude exactly: s = |v|, z = −sign(v), code 0.
    const T v = abs_value(max) >= abs_value(min) ? max : min;
    if (v == T(0)) return {T(1), T(0)};
    const T s = abs_value(v);
    return {s, round_half_even(-v / s)};
  }
  return {scale, round_half_even(-cmin / scale)};
}

/// q = clamp(rne(x/s) + z, lo, hi), as a value of T (integer-valued).
template <class T>
OQ_HOST_DEVICE constexpr T quantize_value(T x, AffineParams<T> p, CodeRange r) noexcept {
  T q = round_half_even(x / p.scale) + p.zero;
  if (q < static_cast<T>(r.lo)) q = static_cast<T>(r.lo);
  if (q > static_cast<T>(r.hi)) q = static_cast<T>(r.hi);
  return q;
}

/// x̂ = (q − z)·s.
template <class T>
OQ_HOST_DEVICE constexpr T dequantize_value(T q, AffineParams<T> p) noexcept {
  return (q - p.zero) * p.scale;
}

/// dequantize_value(quantize_value(x)): the fake-quantized value.
template <class T>
OQ_HOST_DEVICE constexpr T fake_quantize_value(T x, AffineParams<T> p, CodeRange r) noexcept {
  return dequantize_value(quantize_value(x, p, r), p);
}

}  // namespace oq::core
