// Test inputs: seeded random matrices and the adversarial cases oq's tests use.
#pragma once

#include <oq/detail/eigen_types.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <random>

namespace oq::test {

// The library's matrix types (oq/detail/eigen_types.hpp) under the names the
// tests use: column-major and row-major dynamic matrices.
template <class T>
using MatrixX = oq::detail::DenseMatrix<T>;
template <class T>
using RowMatrixX = oq::detail::RowMajorMatrix<T>;

/// rows × cols standard normal entries times `sigma`, from a fixed seed.
template <class T>
MatrixX<T> gaussian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double sigma = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, sigma);
  MatrixX<T> m(rows, cols);
  for (Eigen::Index c = 0; c < cols; ++c)
    for (Eigen::Index r = 0; r < rows; ++r) m(r, c) = static_cast<T>(dist(rng));
  return m;
}

/// Heavy-tailed entries (Student t with 3 degrees of freedom), like LLM weights.
template <class T>
MatrixX<T> heavy_tailed(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<double> dist(3.0);
  MatrixX<T> m(rows, cols);
  for (Eigen::Index c = 0; c < cols; ++c)
    for (Eigen::Index r = 0; r < rows; ++r) m(r, c) = static_cast<T>(dist(rng));
  return m;
}

/// Calibration inputs (tokens × channels) with correlated channels of unequal
/// energy, where GPTQ's moving of one column's error onto the others pays:
/// X = G·M·diag(scale), M = I + 0.6·Gaussian, scales 0.3 … 2.1.
inline MatrixX<double> correlated_inputs(Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed) {
  const MatrixX<double> g = gaussian<double>(tokens, channels, seed);
  const MatrixX<double> m =
      MatrixX<double>::Identity(channels, channels) + 0.6 * gaussian<double>(channels, channels, seed + 1);
  Eigen::VectorXd scale(channels);
  for (Eigen::Index c = 0; c < channels; ++c) scale(c) = 0.3 + 2.0 * double((c * 7) % 11) / 11.0;
  return g * m * scale.asDiagonal();
}

/// H = 2·XᵀX/n of calibration inputs X (n tokens), as GPTQ takes it.
inline MatrixX<double> gptq_hessian_of(const MatrixX<double>& x) {
  return 2.0 / double(x.rows()) * x.transpose() * x;
}

/// Gaussian data with the adversarial rows every quantizer test needs:
/// row 0 all zero, row 1 constant positive, row 2 constant negative, row 3 with
/// one huge outlier (1e4), row 4 all positive (zero point outside the codes),
/// and, where there are enough columns, a channel 100× larger than the rest.
template <class T>
MatrixX<T> adversarial(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  MatrixX<T> m = gaussian<T>(rows, cols, seed);
  if (cols > 8) m.col(5) *= T(100);
  if (rows > 0) m.row(0).setZero();
  if (rows > 1) m.row(1).setConstant(T(0.37));
  if (rows > 2) m.row(2).setConstant(T(-5.5));
  if (rows > 3 && cols > 0) m(3, cols / 2) = T(1e4);
  if (rows > 4) m.row(4) = m.row(4).cwiseAbs().array() + T(3);
  return m;
}

}  // namespace oq::test
