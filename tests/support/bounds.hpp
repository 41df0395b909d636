// Error bounds of uniform affine quantization that the tests assert.
#pragma once

#include <cmath>
#include <limits>

namespace oq::test {

/// |x − Q(x)| for x inside the grid's range, Q computed in T: s/2, plus the
/// rounding of s itself, which moves the grid's far end (`levels` steps from
/// the zero point's side) by up to levels·ε·s, plus the roundings of x/s and
/// (q − z)·s, 2ε·|x|.
template <class T>
double half_step_bound(double scale, double levels, double x) {
  const double eps = std::numeric_limits<T>::epsilon();
  return scale * (0.5 + (levels + 2) * eps) + 2 * eps * std::fabs(x);
}

}  // namespace oq::test
