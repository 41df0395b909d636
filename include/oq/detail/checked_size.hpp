// oq/detail/checked_size.hpp: element counts of shapes read from files,
// without overflow. Every parser of a file format multiplies dimensions it
// has not chosen itself; a wrapped product would pass a size check and lead
// to an out-of-bounds read, so each product is checked.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>

namespace oq::detail {

/// a · b into `out`, or false (out untouched) when it overflows std::size_t.
inline bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) noexcept {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
  out = a * b;
  return true;
}

/// Product of the dimensions into `out`, or false on overflow. A zero
/// dimension makes the product 0 whatever the others are (as NumPy and
/// PyTorch count), so it is looked for first: [2^40, 2^40, 0] is an empty
/// tensor, not an overflow.
inline bool checked_count(std::span<const std::size_t> shape, std::size_t& out) noexcept {
  if (std::find(shape.begin(), shape.end(), std::size_t{0}) != shape.end()) {
    out = 0;
    return true;
  }
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (!checked_mul(n, d, n)) return false;
  }
  out = n;
  return true;
}

}  // namespace oq::detail
