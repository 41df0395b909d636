// oq/detail/rint.hpp: vectorised round-half-to-even for bounded Eigen arrays.
//
// Eigen's rint() has no SSE2 packet (it needs SSE4.1's roundps), so on a
// baseline x86-64 build it calls std::rint per element, which made per-token
// fake quantization ~60x slower than a copy. For |u| < 2^(digits−2),
// (u + 1.5·2^(digits−1)) − 1.5·2^(digits−1) is the same round half to even
// (the addition rounds to an integer under the default rounding mode, the
// subtraction is exact), in two vectorised adds. Callers clamp u into a range
// far inside that bound first; the clamp changes no result because the codes
// are clamped afterwards anyway. tests/quant/quantize_test.cpp pins the
// results bit for bit to std::nearbyint (through quant/reference.hpp).
#pragma once

#include <Eigen/Core>

namespace oq::detail {

template <class Scalar>
inline constexpr Scalar kRoundMagic = sizeof(Scalar) == 4 ? Scalar(12582912.0)            // 1.5·2^23
                                                            : Scalar(6755399441055744.0);  // 1.5·2^52

/// rne(u) for an Eigen array expression whose entries satisfy |u| < 2^22
/// (float) or 2^51 (double).
template <class ArrayDerived>
auto rint_bounded(const Eigen::ArrayBase<ArrayDerived>& u) {
  using Scalar = typename ArrayDerived::Scalar;
  return (u + kRoundMagic<Scalar>) - kRoundMagic<Scalar>;
}

/// Largest |u| for which rint_bounded is exact: 2^22 (float), 2^51 (double).
template <class Scalar>
inline constexpr Scalar kRoundLimit = sizeof(Scalar) == 4 ? Scalar(4194304.0) : Scalar(2251799813685248.0);

/// Calls sink(r) with r an Eigen array expression that agrees with rne(u)
/// wherever lo <= u <= hi and lies on the same side of [lo, hi] as rne(u)
/// elsewhere, for integer-valued lo <= hi. That is all a caller that clamps the
/// rounded codes afterwards needs. When |lo|, |hi| < kRoundLimit the bounds are
/// exact integers, u is clamped to them and rounded with the two-add form;
/// otherwise (a float zero point beyond 2^22, where both the bounds and the
/// two-add form would lose integers) r is Eigen's scalar rint(u), unclamped.
template <class ArrayDerived, class Scalar, class Sink>
void with_rounded_clamped(const Eigen::ArrayBase<ArrayDerived>& u, Scalar lo, Scalar hi, Sink&& sink) {
  if (lo > -kRoundLimit<Scalar> && hi < kRoundLimit<Scalar>) {
    sink(rint_bounded(u.max(lo).min(hi)));
  } else {
    sink(u.rint());
  }
}

}  // namespace oq::detail
