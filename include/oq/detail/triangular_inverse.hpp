// oq/detail/triangular_inverse.hpp: the inverse of a lower triangular
// matrix, in place, in n³/3 flops.
//
// GPTQ needs the inverse of a Cholesky factor (quant/gptq.hpp). Solving
// L·X = I with Eigen's triangular solve treats the identity as a dense
// right-hand side and costs n³ flops, three times what the inverse needs:
// column j of L⁻¹ is zero above row j. The 2 × 2 block recursion
//     [A 0]⁻¹   [ A⁻¹          0  ]
//     [B C]   = [−C⁻¹·B·A⁻¹    C⁻¹]
// (LAPACK's dtrtri computes the same blocks, in another order) spends
// T(n) = 2·T(n/2) + 2·(n/2)³ = n³/3 flops, nearly all of them in the two
// triangular matrix products of the off-diagonal block, which Eigen runs
// with its blocked GEMM kernels (bench/RESULTS.md: GPTQ's factor with the
// solve and with this).
#pragma once

#include <Eigen/Core>

namespace oq::detail {

namespace triangular_inverse_impl {

// Below this size the recursion stops; the column sweep there is
// cache-resident and the size hardly matters (16 to 128 time alike).
inline constexpr Eigen::Index kBaseSize = 64;

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

template <class Scalar>
void invert(Eigen::Ref<Matrix<Scalar>> m, Eigen::Ref<Matrix<Scalar>> scratch) {
  const Eigen::Index n = m.rows();
  if (n <= kBaseSize) {
    // Column by column: x_jj = 1/L_jj, and for i > j (forward substitution
    // of L·x = e_j) x_ij = −(Σ_{j≤k<i} L_ik·x_kj) / L_ii. Column j is written
    // from the top down, so when row i is reached, rows j..i−1 of it hold x,
    // and columns > j still hold L.
    for (Eigen::Index j = 0; j < n; ++j) {
      m(j, j) = Scalar(1) / m(j, j);
      for (Eigen::Index i = j + 1; i < n; ++i) {
        Scalar sum(0);
        for (Eigen::Index k = j; k < i; ++k) sum += m(i, k) * m(k, j);
        m(i, j) = -sum / m(i, i);
      }
    }
    return;
  }
  const Eigen::Index n1 = n / 2, n2 = n - n1;
  auto a = m.topLeftCorner(n1, n1);
  auto b = m.bottomLeftCorner(n2, n1);
  auto c = m.bottomRightCorner(n2, n2);
  invert<Scalar>(a, scratch);
  invert<Scalar>(c, scratch);
  auto t = scratch.topLeftCorner(n2, n1);
  // The sign goes with the first product, where Eigen folds it into the
  // kernel's alpha; −(C⁻¹·T) would be evaluated into a temporary first.
  t.noalias() = -b * a.template triangularView<Eigen::Lower>();   // −B·A⁻¹
  b.noalias() = c.template triangularView<Eigen::Lower>() * t;    // −C⁻¹·B·A⁻¹
}

}  // namespace triangular_inverse_impl

/// Replaces the lower triangle of l (n × n, lower triangular with a diagonal
/// free of zeros; e.g. a Cholesky factor) by the lower triangle of l⁻¹. The
/// strictly upper triangle is neither read nor written. Scratch: one
/// ⌈n/2⌉ × ⌊n/2⌋ matrix. The caller guarantees the preconditions (detail).
template <class Scalar>
void invert_lower_triangular_in_place(Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> l) {
  const Eigen::Index n = l.rows();
  triangular_inverse_impl::Matrix<Scalar> scratch(n - n / 2, n / 2);
  triangular_inverse_impl::invert<Scalar>(l, scratch);
}

}  // namespace oq::detail
