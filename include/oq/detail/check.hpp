// oq/detail/check.hpp: argument checks shared by the host APIs.
//
// Every public host function validates its inputs and throws
// std::invalid_argument (a malformed argument: shape, bits, sizes) or
// std::domain_error (a value outside the function's domain: NaN or ±Inf data)
// with a message that names the function, the parameter and what was expected.
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <Eigen/Core>

namespace oq::detail {

/// "<where>: <what...>".
template <class... Parts>
std::string message_of(std::string_view where, const Parts&... what) {
  std::ostringstream message;
  message << where << ": ";
  (message << ... << what);
  return message.str();
}

/// Throws std::invalid_argument("<where>: <what>") when `ok` is false.
template <class... Parts>
void require(bool ok, std::string_view where, const Parts&... what) {
  if (!ok) throw std::invalid_argument(message_of(where, what...));
}

/// Throws std::domain_error("<where>: <what>") when `ok` is false: the
/// arguments are well formed but their values lie outside the function's
/// domain (a matrix that is not positive definite, say).
template <class... Parts>
void require_domain(bool ok, std::string_view where, const Parts&... what) {
  if (!ok) throw std::domain_error(message_of(where, what...));
}

/// True when every entry of x is finite, in one vectorised pass: x − x is 0 for
/// finite entries and NaN for ±Inf and NaN, and a sum of zeros is exactly 0.
/// (Eigen's allFinite() runs a scalar std::isfinite per entry, ~30x slower.)
template <class Derived>
bool all_finite(const Eigen::MatrixBase<Derived>& x) {
  return x.size() == 0 || (x.array() - x.array()).sum() == typename Derived::Scalar(0);
}

/// Throws std::domain_error naming the first non-finite entry (row, col) of x.
/// The common all-finite case costs one vectorised pass (all_finite).
template <class Derived>
void require_finite(const Eigen::MatrixBase<Derived>& x, std::string_view where, std::string_view name) {
  if (all_finite(x)) return;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      const auto v = x(r, c);
      if (!std::isfinite(v)) {
        std::ostringstream message;
        message << where << ": " << name << " must be finite, but " << name << "(" << r << ", " << c
                << ") is " << v;
        throw std::domain_error(message.str());
      }
    }
  }
}

}  // namespace oq::detail
