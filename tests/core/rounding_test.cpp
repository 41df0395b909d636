#include <oq/core/rounding.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using oq::core::round_half_even;

// Compile-time checks: the function is usable in constant expressions and
// rounds ties to even, not away from zero.
static_assert(round_half_even(0.5) == 0.0);
static_assert(round_half_even(1.5) == 2.0);
static_assert(round_half_even(2.5) == 2.0);
static_assert(round_half_even(-2.5) == -2.0);
static_assert(round_half_even(-3.5f) == -4.0f);
static_assert(round_half_even(2.4999f) == 2.0f);

namespace {

template <class T>
bool same_bits(T a, T b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T>
std::vector<T> probe_values(std::uint64_t seed) {
  std::vector<T> values;
  for (int k = -1000; k <= 1000; ++k) {  // every tie k + 0.5 and its neighbours
    const T tie = static_cast<T>(k) + T(0.5);
    values.push_back(tie);
    values.push_back(std::nextafter(tie, T(-1e9)));
    values.push_back(std::nextafter(tie, T(1e9)));
    values.push_back(static_cast<T>(k));
  }
  const T big = sizeof(T) == 4 ? T(8388608.0) : T(4503599627370496.0);  // 2^(digits-1)
  for (T v : {big, -big, big / 2 + T(0.5), -(big / 2 + T(0.5)), std::nextafter(big, T(0)),
              std::nextafter(-big, T(0)), T(0), T(-0.0), T(-0.3), T(0.3), std::numeric_limits<T>::denorm_min(),
              std::numeric_limits<T>::max(), std::numeric_limits<T>::lowest()}) {
    values.push_back(v);
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<T> wide(T(-1e7), T(1e7));
  std::normal_distribution<T> narrow(T(0), T(3));
  for (int i = 0; i < 20000; ++i) {
    values.push_back(wide(rng));
    values.push_back(narrow(rng));
  }
  return values;
}

}  // namespace

TEST_CASE_TEMPLATE("round_half_even matches std::nearbyint bit for bit", T, float, double) {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  for (T v : probe_values<T>(7)) {
    INFO("v = " << v);
    CHECK(same_bits(round_half_even(v), std::nearbyint(v)));
  }
}

TEST_CASE_TEMPLATE("round_half_even passes non-finite values through", T, float, double) {
  CHECK(std::isnan(round_half_even(std::numeric_limits<T>::quiet_NaN())));
  CHECK(round_half_even(std::numeric_limits<T>::infinity()) == std::numeric_limits<T>::infinity());
  CHECK(round_half_even(-std::numeric_limits<T>::infinity()) == -std::numeric_limits<T>::infinity());
}

// The vectorised host paths round with Eigen's rint(); it must be the same rne.
// Equal as values: Eigen's SSE2 rint turns −0 into +0, which changes no code.
TEST_CASE_TEMPLATE("Eigen rint agrees with round_half_even", T, float, double) {
  const std::vector<T> values = probe_values<T>(11);
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> in(values.data(), static_cast<Eigen::Index>(values.size()));
  const Eigen::Array<T, Eigen::Dynamic, 1> out = in.rint();
  for (Eigen::Index i = 0; i < in.size(); ++i) {
    INFO("v = " << in[i]);
    if (in[i] == T(0)) {
      CHECK(out[i] == T(0));
    } else {
      CHECK(same_bits(out[i], round_half_even(in[i])));
    }
  }
}
