// oq/detail/power_of_two.hpp: 2^−e as two factors, for exact rescaling.
//
// Rescaling by a power of two is exact while the result stays normal, which
// is how analysis/ and quant/clip_search.hpp bring values of any magnitude
// to [0.5, 1) before squaring them. But 2^−e itself leaves the range for the
// exponents that need it most (e ≈ −1073 for subnormal data, 1024 near
// DBL_MAX): split in 2^−⌊e/2⌋ and 2^(⌊e/2⌋−e), each factor is normal, and
// x·first·second is the exact x·2^−e wherever that is normal.
#pragma once

#include <cmath>

namespace oq::detail {

template <class T>
struct PowerOfTwoFactors {
  T first;
  T second;
};

/// {first, second} with first·second = 2^−e, each a normal T for any exponent
/// e of a finite T (frexp's).
template <class T>
PowerOfTwoFactors<T> inverse_power_of_two(int e) {
  return {std::ldexp(T(1), -(e / 2)), std::ldexp(T(1), e / 2 - e)};
}

}  // namespace oq::detail
