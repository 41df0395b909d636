// <oq/instantiate.hpp> as its documentation says to use it: this file is
// compiled with OQ_EXTERN_TEMPLATES (tests/CMakeLists.txt), so it does not
// instantiate the polar factor's SVD or GPTQ's inverse factor; the linker
// takes them from instantiate_definitions.cpp, the one file of the program
// that includes <oq/instantiate.hpp>. Without that file the test does not
// link; the ctest instantiate_test.extern checks with nm that this file's
// object only refers to them.
#if !defined(OQ_EXTERN_TEMPLATES)
#error "instantiate_test.cpp is meant to be built with OQ_EXTERN_TEMPLATES"
#endif

#include <oq/quant/gptq.hpp>
#include <oq/transform/duquant_rotation.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/SVD>

#include <stdexcept>

using Matrix = Eigen::MatrixXd;

TEST_CASE("instantiate.hpp: nearest_orthogonal of a matrix far from orthogonal is its polar factor") {
  // Gaussian 12 x 12: ‖mᵀm − I‖_F is about 12·√2, far past Newton–Schulz's
  // 1/2, so this takes the SVD compiled in the other file.
  const Matrix m = oq::test::gaussian<double>(12, 12, 2207);
  REQUIRE((m.transpose() * m - Matrix::Identity(12, 12)).norm() > 0.5);
  const Matrix q = oq::transform::nearest_orthogonal(m);
  // The reference, written differently: one-sided Jacobi SVD, U·Vᵀ.
  const Eigen::JacobiSVD<Matrix> svd(m, Eigen::ComputeFullU | Eigen::ComputeFullV);
  const Matrix reference = svd.matrixU() * svd.matrixV().transpose();
  CHECK((q - reference).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK((q.transpose() * q - Matrix::Identity(12, 12)).cwiseAbs().maxCoeff() <= 1e-14);
  // The polar factor is the orthogonal part of m = Q·P with P symmetric.
  const Matrix p = q.transpose() * m;
  CHECK((p - p.transpose()).cwiseAbs().maxCoeff() <= 1e-12 * p.cwiseAbs().maxCoeff());
}

TEST_CASE("instantiate.hpp: GptqFactor's U satisfies UᵀU·(H + λI) = I") {
  const Matrix x = oq::test::gaussian<double>(64, 10, 2208);
  const Matrix h = 2.0 * x.transpose() * x / 64.0;
  const double damp = 0.01;
  const oq::quant::GptqFactor factor(h, {.damp = damp});
  const Matrix& u = factor.u();
  REQUIRE(u.rows() == 10);
  const Matrix damped = h + damp * h.diagonal().mean() * Matrix::Identity(10, 10);
  CHECK((u.transpose() * u * damped - Matrix::Identity(10, 10)).cwiseAbs().maxCoeff() <= 1e-10);
  CHECK(u.isUpperTriangular(0.0));
  // Symmetric with a diagonal >= 0 but indefinite (eigenvalues 3 and −1):
  // the factorisation, in the other file, refuses it.
  Matrix indefinite(2, 2);
  indefinite << 1.0, 2.0, 2.0, 1.0;
  CHECK_THROWS_WITH_AS(oq::quant::GptqFactor(indefinite, {.damp = 0.0}), doctest::Contains("not positive definite"),
                       std::domain_error);
}
