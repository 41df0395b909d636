// oq/transform/random_orthogonal.hpp: Haar-random orthogonal matrices (docs/design.md §5).
//
//   std::mt19937_64 rng(seed);
//   auto q = oq::transform::random_orthogonal<float>(n, rng);  // n × n, Q·Qᵀ = I
//   x = x * q;  w = w * q;                                     // (x·Q)·(w·Q)ᵀ = x·wᵀ
//
// Method (Mezzadri 2007, "How to generate random matrices from the classical
// compact groups"): draw G with i.i.d. standard normal entries, factor G = Q·R
// (Householder QR), and return Q·diag(sign(R_ii)). The sign fix matters: QR
// alone fixes the signs of R's diagonal by the algorithm's convention (Eigen's
// Householder makes R_00 = −sign(G_00)·‖G_0‖, so Q(0, 0) would always be
// negative), and only the product with those signs folded in, Q·D with
// R' = D·R having a positive diagonal, is the unique QR factor whose
// distribution is the Haar measure on O(n).
//
// Reproducibility: the generator is the caller's (any
// std::uniform_random_bit_generator, passed by reference and advanced), so the
// same seed gives the same matrix with the same standard library; the normal
// draws come from std::normal_distribution<double>, whose algorithm differs
// between standard libraries. The entries are drawn in column-major order and
// everything is computed in double; random_orthogonal<float> is the double
// result rounded to float (so Q·Qᵀ = I to float rounding, and both scalar types
// give the same matrix from the same generator state).
#pragma once

#include <oq/detail/check.hpp>

#include <Eigen/Core>
#include <Eigen/QR>

#include <random>
#include <string_view>
#include <type_traits>

namespace oq::transform {

/// A Haar-distributed random orthogonal n × n matrix drawn with `generator`
/// (advanced by n² normal draws). Throws std::invalid_argument for n ≤ 0.
template <class Scalar = double, std::uniform_random_bit_generator Generator>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_orthogonal(Eigen::Index n, Generator& generator) {
  static_assert(std::is_floating_point_v<Scalar>, "random_orthogonal needs a floating-point scalar");
  constexpr std::string_view kWhere = "oq::transform::random_orthogonal";
  detail::require(n > 0, kWhere, "n must be positive, got ", n);
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::MatrixXd g(n, n);
  for (Eigen::Index c = 0; c < n; ++c) {
    for (Eigen::Index r = 0; r < n; ++r) g(r, c) = normal(generator);
  }
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ();
  // Mezzadri's fix: Q ← Q·diag(sign(R_ii)). R_ii = 0 has probability zero;
  // it keeps its column (any sign is then as good).
  for (Eigen::Index i = 0; i < n; ++i) {
    if (qr.matrixQR()(i, i) < 0.0) q.col(i) = -q.col(i);
  }
  return q.cast<Scalar>();
}

}  // namespace oq::transform
