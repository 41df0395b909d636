// Tests for oq/transform/duquant_blockwise.hpp: one block is DuQuantTransform
// bit for bit; each block's rotation depends on its own channels only and
// never raises its block's score; apply, fold_into_weight, invert and
// matrix() against a dense M built by plain loops in double; refusals.
#include <oq/transform/duquant_blockwise.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <Eigen/QR>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

using namespace oq::transform;
using oq::test::MatrixX;

namespace {

// Stage × block Q′ from QR of Gaussians (a fixed seed per matrix).
template <class Scalar>
std::vector<std::vector<DenseMatrix<Scalar>>> q_primes(int stages, std::size_t blocks, Eigen::Index b,
                                                       std::uint64_t seed) {
  std::vector<std::vector<DenseMatrix<Scalar>>> out(static_cast<std::size_t>(stages));
  for (auto& stage : out) {
    for (std::size_t k = 0; k < blocks; ++k) {
      const Eigen::MatrixXd q =
          Eigen::HouseholderQR<Eigen::MatrixXd>(oq::test::gaussian<double>(b - 1, b - 1, seed++)).householderQ();
      stage.push_back(q.cast<Scalar>());
    }
  }
  return out;
}

// Activations with a massive entry in one block and an outlier channel in another.
template <class Scalar>
MatrixX<Scalar> outlier_activations(Eigen::Index tokens, Eigen::Index channels, std::uint64_t seed) {
  MatrixX<Scalar> x = oq::test::gaussian<Scalar>(tokens, channels, seed);
  x(0, 3) = Scalar(900);                  // block 0: a massive entry on token 0
  x.col(channels - 2).array() *= Scalar(25);  // the last block: an outlier channel
  return x;
}

// The dense M of a blockwise transform by plain loops in double: each stage
// the block-diagonal matrix of its rotations, then the permutation matrix
// (column j of the result is old column perm[j]).
Eigen::MatrixXd dense_m(const DuQuantBlockwiseTransform<double>& t) {
  const Eigen::Index c = t.channels(), b = t.block_size();
  Eigen::MatrixXd m = Eigen::MatrixXd::Identity(c, c);
  for (std::size_t i = 0; i < t.rotations().size(); ++i) {
    Eigen::MatrixXd r = Eigen::MatrixXd::Zero(c, c);
    for (Eigen::Index k = 0; k < t.blocks(); ++k) {
      const auto& rk = t.rotations()[i][static_cast<std::size_t>(k)];
      for (Eigen::Index p = 0; p < b; ++p)
        for (Eigen::Index q = 0; q < b; ++q) r(k * b + p, k * b + q) = rk(p, q);
    }
    m = (m * r).eval();
    if (i < t.permutations().size()) {
      Eigen::MatrixXd p = Eigen::MatrixXd::Zero(c, c);
      for (Eigen::Index j = 0; j < c; ++j) p(t.permutations()[i][static_cast<std::size_t>(j)], j) = 1;
      m = (m * p).eval();
    }
  }
  return m;
}

// max − min over a block's entries (the greedy's kRange score on that block).
double block_range(const RowMajorMatrix<double>& y, Eigen::Index first, Eigen::Index b) {
  return y.middleCols(first, b).maxCoeff() - y.middleCols(first, b).minCoeff();
}

}  // namespace

TEST_CASE_TEMPLATE("duquant_blockwise: one block is DuQuantTransform, bit for bit", T, float, double) {
  const MatrixX<T> x = outlier_activations<T>(40, 16, 1);
  DuQuantOptions o;
  o.block_size = 16;
  o.greedy_steps = 12;
  const auto qs = q_primes<T>(2, 1, 16, 7);
  const std::vector<DenseMatrix<T>> shared_qs{qs[0][0], qs[1][0]};
  const Eigen::Matrix<T, Eigen::Dynamic, 1> s = (Eigen::Matrix<T, Eigen::Dynamic, 1>::LinSpaced(16, 0.5, 2.0));
  const auto blockwise = calibrate_duquant_blockwise(x, o, qs, s);
  const auto shared = calibrate_duquant(x, o, shared_qs, s);
  REQUIRE(blockwise.blocks() == 1);
  for (std::size_t i = 0; i < 2; ++i) CHECK(blockwise.rotations()[i][0] == shared.rotations()[i]);
  CHECK(blockwise.permutations() == shared.permutations());
  CHECK(blockwise.apply(x) == shared.apply(x));
  CHECK(blockwise.fold_into_weight(x) == shared.fold_into_weight(x));
  CHECK(blockwise.invert(x) == shared.invert(x));
}

TEST_CASE("duquant_blockwise: each block's rotation is its own block's, and never raises that block's range") {
  constexpr Eigen::Index b = 8, c = 32;
  MatrixX<double> x = outlier_activations<double>(64, c, 2);
  DuQuantOptions o;
  o.block_size = b;
  o.greedy_steps = 16;
  o.permutation_rounds = 0;  // one stage: its input is x itself
  const auto qs = q_primes<double>(1, c / b, b, 11);
  const auto t = calibrate_duquant_blockwise(x, o, qs);
  REQUIRE(t.blocks() == 4);
  // Block 0 holds the massive entry, the last block the outlier channel:
  // their rotations differ from each other, and block 0's is no identity.
  CHECK((t.rotations()[0][0] - t.rotations()[0][3]).cwiseAbs().maxCoeff() > 1e-3);
  CHECK((t.rotations()[0][0] - Eigen::MatrixXd::Identity(b, b)).cwiseAbs().maxCoeff() > 1e-3);
  // The greedy keeps the best prefix of its steps (0 steps included), so
  // each block's range after its rotation is at most its range before.
  const RowMajorMatrix<double> before = x;
  const RowMajorMatrix<double> after = t.apply(x);
  for (Eigen::Index k = 0; k < t.blocks(); ++k) {
    CAPTURE(k);
    CHECK(block_range(after, k * b, b) <= block_range(before, k * b, b) * (1 + 1e-12));
  }
  // The massive entry's block is spread: its largest |y| well below 900.
  CHECK(after.middleCols(0, b).cwiseAbs().maxCoeff() < 0.75 * 900);
  // Another block's data does not move block 0's rotation (the shared
  // greedy's would: it pivots on the whole tensor's largest entry).
  MatrixX<double> other = x;
  other.middleCols(b, b) *= 400.0;  // block 1 now holds the largest entries (~1400 > 900)
  const auto u = calibrate_duquant_blockwise(other, o, qs);
  CHECK(u.rotations()[0][0] == t.rotations()[0][0]);
  CHECK(u.rotations()[0][2] == t.rotations()[0][2]);
  CHECK(u.rotations()[0][3] == t.rotations()[0][3]);
  // The shared calibration on the same data does move with block 1.
  const std::vector<DenseMatrix<double>> shared_qs{qs[0][0]};
  CHECK((calibrate_duquant(other, o, shared_qs).rotations()[0] - calibrate_duquant(x, o, shared_qs).rotations()[0])
            .cwiseAbs()
            .maxCoeff() > 1e-6);
}

TEST_CASE("duquant_blockwise: apply, fold, invert and matrix against the dense M, in double") {
  constexpr Eigen::Index b = 8, c = 24;  // 3 blocks: a ragged count, not a power of two
  const MatrixX<double> x = outlier_activations<double>(50, c, 3);
  const MatrixX<double> w = oq::test::gaussian<double>(5, c, 4);
  Eigen::VectorXd s = Eigen::VectorXd::LinSpaced(c, 0.25, 4.0);
  DuQuantOptions o;
  o.block_size = b;
  o.greedy_steps = 10;
  o.permutation_rounds = 2;
  std::mt19937_64 rng(5);
  const auto t = calibrate_duquant_blockwise(x, o, rng, s);
  REQUIRE(t.rotations().size() == 3);
  REQUIRE(t.permutations().size() == 2);
  const Eigen::MatrixXd m = dense_m(t);
  CHECK((m.transpose() * m - Eigen::MatrixXd::Identity(c, c)).cwiseAbs().maxCoeff() < 1e-13);
  CHECK((t.matrix() - m).cwiseAbs().maxCoeff() < 1e-14);
  const Eigen::MatrixXd x_ref = x * s.cwiseInverse().asDiagonal() * m;
  const Eigen::MatrixXd w_ref = w * s.asDiagonal() * m;
  CHECK((Eigen::MatrixXd(t.apply(x)) - x_ref).cwiseAbs().maxCoeff() < 1e-12 * x_ref.cwiseAbs().maxCoeff());
  CHECK((Eigen::MatrixXd(t.fold_into_weight(w)) - w_ref).cwiseAbs().maxCoeff() < 1e-12 * w_ref.cwiseAbs().maxCoeff());
  // The product survives the transform; invert undoes apply.
  const Eigen::MatrixXd y = x * w.transpose();
  const Eigen::MatrixXd y_t = Eigen::MatrixXd(t.apply(x)) * Eigen::MatrixXd(t.fold_into_weight(w)).transpose();
  CHECK((y_t - y).cwiseAbs().maxCoeff() < 1e-11 * y.cwiseAbs().maxCoeff());
  CHECK((Eigen::MatrixXd(t.invert(t.apply(x))) - x).cwiseAbs().maxCoeff() < 1e-12 * x.cwiseAbs().maxCoeff());
  // The same generator seed gives the same transform; the rebuilt transform from its parts equals it.
  std::mt19937_64 again(5);
  const auto u = calibrate_duquant_blockwise(x, o, again, s);
  CHECK(u.apply(x) == t.apply(x));
  const DuQuantBlockwiseTransform<double> rebuilt(c, t.rotations(), t.permutations(), t.smoothing());
  CHECK(rebuilt.apply(x) == t.apply(x));
  // A zero row stays zero; an empty batch passes through.
  MatrixX<double> zero_row = x;
  zero_row.row(7).setZero();
  CHECK(t.apply(zero_row).row(7).cwiseAbs().maxCoeff() == 0.0);
  CHECK(t.apply(MatrixX<double>(0, c)).rows() == 0);
}

TEST_CASE("duquant_blockwise: refusals name the parameter") {
  constexpr Eigen::Index b = 4, c = 8;
  const MatrixX<double> x = oq::test::gaussian<double>(10, c, 6);
  DuQuantOptions o;
  o.block_size = b;
  o.greedy_steps = 4;
  const auto qs = q_primes<double>(2, 2, b, 20);
  CHECK_NOTHROW(calibrate_duquant_blockwise(x, o, qs));
  auto refused = [&](const DuQuantOptions& options, const std::vector<std::vector<DenseMatrix<double>>>& q,
                     const MatrixX<double>& in, const char* what) {
    CHECK_THROWS_WITH_AS(calibrate_duquant_blockwise(in, options, q), doctest::Contains(what), std::invalid_argument);
  };
  DuQuantOptions bad = o;
  bad.block_size = 3;
  refused(bad, qs, x, "must divide");
  refused(o, {qs[0]}, x, "permutation_rounds + 1");
  refused(o, {qs[0], {qs[1][0]}}, x, "one matrix per block");
  refused(o, {qs[0], {qs[1][0], DenseMatrix<double>::Identity(2, 2)}}, x, "q_primes[1][1]");
  refused(o, qs, MatrixX<double>(0, c), "non-empty");
  bad = o;
  bad.score = GreedyScore::kActivationTimesWeight;
  refused(bad, qs, x, "kRange or kAbsMax");
  MatrixX<double> nan = x;
  nan(2, 5) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(calibrate_duquant_blockwise(nan, o, qs), std::domain_error);
  // The constructor: a stage with the wrong count, a matrix that is not orthogonal.
  const auto t = calibrate_duquant_blockwise(x, o, qs);
  auto rotations = t.rotations();
  rotations[1].pop_back();
  CHECK_THROWS_WITH_AS(DuQuantBlockwiseTransform<double>(c, rotations, t.permutations()),
                       doctest::Contains("rotations[1] must hold channels / b = 2"), std::invalid_argument);
  rotations = t.rotations();
  rotations[0][1](0, 0) += 0.01;
  CHECK_THROWS_WITH_AS(DuQuantBlockwiseTransform<double>(c, rotations, t.permutations()),
                       doctest::Contains("rotations[0][1] must be orthogonal"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(t.apply(MatrixX<double>(3, c + 1)), doctest::Contains("x must have 8 columns"),
                       std::invalid_argument);
}
