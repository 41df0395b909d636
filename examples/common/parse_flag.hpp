// examples/common/parse_flag.hpp: the numeric command-line values of the
// examples, parsed whole and refused by flag name (never a silent 0 from
// "12abc" or an exception from std::stoll without context).
#pragma once

#include <cmath>
#include <exception>
#include <stdexcept>
#include <string>

namespace examples {

/// A non-negative integer; throws std::invalid_argument naming `flag`.
inline long long parse_count(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {  // not a number, or out of range
    used = 0;
  }
  if (used != text.size() || v < 0) {
    throw std::invalid_argument(flag + " expects a non-negative integer, got '" + text + "'");
  }
  return v;
}

/// A finite number >= 0; throws std::invalid_argument naming `flag`.
inline double parse_number(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  double v = -1;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(v >= 0) || !std::isfinite(v)) {
    throw std::invalid_argument(flag + " expects a finite number >= 0, got '" + text + "'");
  }
  return v;
}

}  // namespace examples
