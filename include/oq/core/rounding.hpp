// oq/core/rounding.hpp: round half to even, the rounding of every oq quantizer.
//
// docs/design.md §2: quantizers round with rne (round half to even), which is what
// PyTorch's torch.round does and what std::nearbyint does under the default
// floating-point environment. std::round (half away from zero) would move
// every exact tie (x/s = k + 0.5) one code away from the reference
// implementations, so it is never used.
//
// round_half_even() is constexpr and callable from host and device code: it
// needs no floating-point environment and no math library. Host hot paths may
// use Eigen's vectorised rint() instead; tests pin the two to each other.
#pragma once

#include <oq/config.hpp>

#include <cstdint>
#include <type_traits>

namespace oq::core {

/// Round to the nearest integer, ties to even. NaN and ±Inf come back unchanged,
/// as do values so large that they are already integers.
///
/// Why it is exact: for |x| < 2^(digits−1) the fractional part x − trunc(x) is
/// representable (same exponent or smaller), so the comparisons against 0.5 see
/// the true fraction; no addition of 2^(digits−1) (the usual trick) is needed,
/// so the result does not depend on the FPU rounding mode or on fast-math.
template <class T>
OQ_HOST_DEVICE constexpr T round_half_even(T x) noexcept {
  static_assert(std::is_floating_point_v<T>, "round_half_even needs a floating-point type");
  // 2^23 for float, 2^52 for double: above it every representable value is an integer.
  constexpr T kIntegral = sizeof(T) == 4 ? T(8388608.0) : T(4503599627370496.0);
  if (!(x < kIntegral && x > -kIntegral)) return x;  // also catches NaN
  if (x == T(0)) return x;                             // keeps the sign of zero
  const auto truncated = static_cast<std::int64_t>(x);  // toward zero, exact here
  const T fraction = x - static_cast<T>(truncated);    // exact, in (-1, 1)
  std::int64_t result = truncated;
  if (fraction > T(0.5) || (fraction == T(0.5) && (truncated & 1) != 0)) {
    result += 1;
  } else if (fraction < T(-0.5) || (fraction == T(-0.5) && (truncated & 1) != 0)) {
    result -= 1;
  }
  // Keep the sign of zero as nearbyint does (-0.3 -> -0.0).
  if (result == 0) return x < T(0) ? T(-0.0) : T(0.0);
  return static_cast<T>(result);
}

/// a·b, rounded once and kept apart from any add that follows. nvcc contracts
/// a product followed by an add into one FMA by default (--fmad=true), and
/// an FMA rounds once where the host rounds twice: c·max − c·min would become
/// fma(c, max, −(c·min)), one ulp away from the host's scale for about a
/// quarter of the rows with clip 0.9. __fmul_rn / __dmul_rn are never
/// contracted (CUDA C++ Programming Guide, intrinsic functions). The host
/// rounds each product on its own unless built with FMA contraction (GCC's
/// -ffp-contract=fast, its default, with an -march that has FMA): oq's own
/// targets build with -ffp-contract=off.
template <class T>
OQ_HOST_DEVICE constexpr T mul_rn(T a, T b) noexcept {
#if defined(__CUDA_ARCH__)
  // The intrinsics are not constexpr; the builtin (what std::is_constant_evaluated
  // wraps) is callable from device code, the std function is host-only.
  if (!__builtin_is_constant_evaluated()) {
    if constexpr (std::is_same_v<T, float>) {
      return __fmul_rn(a, b);
    } else if constexpr (std::is_same_v<T, double>) {
      return __dmul_rn(a, b);
    }
  }
#endif
  return a * b;
}

}  // namespace oq::core
