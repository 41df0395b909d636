#include <oq/transform/zigzag.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <cmath>
#include <random>
#include <stdexcept>

using namespace oq::transform;

namespace {
// Standard deviation of the block means of `values` after ordering by perm.
double block_mean_spread(const Eigen::VectorXd& values, const Permutation& perm, Eigen::Index b) {
  const Eigen::Index blocks = values.size() / b;
  Eigen::VectorXd means = Eigen::VectorXd::Zero(blocks);
  for (Eigen::Index j = 0; j < values.size(); ++j) means[j / b] += values[perm[static_cast<std::size_t>(j)]] / b;
  return std::sqrt((means.array() - means.mean()).square().mean());
}
}  // namespace

TEST_CASE("the paper's example: 8 channels ranked 1..8 into 2 blocks give {1,4,5,8} and {2,3,6,7}") {
  Eigen::VectorXd channel_max(8);
  channel_max << 8, 7, 6, 5, 4, 3, 2, 1;  // channel i has rank i + 1
  const Permutation perm = zigzag_permutation(channel_max, 4);
  CHECK(perm == Permutation{0, 3, 4, 7, 1, 2, 5, 6});
  // The same ranks, channels shuffled: the blocks follow the values, not the indices.
  Eigen::VectorXd shuffled(8);
  shuffled << 1, 5, 8, 3, 7, 2, 6, 4;  // ranks: ch2=1, ch4=2, ch6=3, ch1=4, ch7=5, ch3=6, ch5=7, ch0=8
  CHECK(zigzag_permutation(shuffled, 4) == Permutation{2, 1, 7, 0, 4, 6, 3, 5});
}

TEST_CASE("three blocks visit the end blocks twice per turn; ties keep channel order") {
  Eigen::VectorXd v(6);
  v << 6, 5, 4, 3, 2, 1;  // order 0..5 dealt to blocks 0,1,2,2,1,0
  CHECK(zigzag_permutation(v, 2) == Permutation{0, 5, 1, 4, 2, 3});
  const Eigen::VectorXd ties = Eigen::VectorXd::Ones(6);
  CHECK(zigzag_permutation(ties, 2) == Permutation{0, 5, 1, 4, 2, 3});
}

TEST_CASE("on random channel maxima the block means spread no more than in identity order") {
  for (std::uint64_t seed : {1, 2, 3, 4, 5}) {
    std::mt19937_64 rng(seed);
    std::lognormal_distribution<double> dist(0.0, 1.0);
    Eigen::VectorXd maxima(4096);
    for (Eigen::Index j = 0; j < maxima.size(); ++j) maxima[j] = dist(rng);
    Permutation identity(4096);
    for (std::size_t j = 0; j < identity.size(); ++j) identity[j] = static_cast<Eigen::Index>(j);
    const Permutation perm = zigzag_permutation(maxima, 128);
    CHECK(block_mean_spread(maxima, perm, 128) <= block_mean_spread(maxima, identity, 128));
  }
}

TEST_CASE("permutations, their inverse and their matrix agree") {
  const Eigen::MatrixXd x = oq::test::gaussian<double>(5, 12, 3);
  const Permutation perm = zigzag_permutation(x.cwiseAbs().colwise().maxCoeff().transpose().eval(), 4);
  const Eigen::MatrixXd moved = permute_columns(x, perm);
  CHECK(moved == x * permutation_matrix(perm));
  CHECK(permute_columns(moved, inverse_permutation(perm)) == x);
  for (std::size_t j = 0; j < perm.size(); ++j) CHECK(moved.col(static_cast<Eigen::Index>(j)) == x.col(perm[j]));

  // In place, for either storage order.
  Eigen::MatrixXd in_place = x;
  permute_columns_in_place(in_place, perm);
  CHECK(in_place == moved);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = x;
  permute_columns_in_place(row_major, perm);
  CHECK(row_major == moved);
  permute_columns_in_place(row_major, inverse_permutation(perm));
  CHECK(row_major == x);
  CHECK_THROWS_WITH_AS(permute_columns_in_place(in_place, Permutation{0, 1}), doctest::Contains("perm must have 12"),
                       std::invalid_argument);
}

TEST_CASE("bad input") {
  CHECK_THROWS_WITH_AS(zigzag_permutation(Eigen::VectorXd::Ones(10), 4),
                       doctest::Contains("block_size must divide the channel count (10), got 4"),
                       std::invalid_argument);
  CHECK_THROWS_AS(zigzag_permutation(Eigen::VectorXd(0), 4), std::invalid_argument);
  Eigen::VectorXd nan = Eigen::VectorXd::Ones(4);
  nan[2] = std::nan("");
  CHECK_THROWS_AS(zigzag_permutation(nan, 2), std::domain_error);
  CHECK_THROWS_WITH_AS(inverse_permutation({0, 2, 2}), doctest::Contains("perm[2] = 2"), std::invalid_argument);
  CHECK_THROWS_AS(permute_columns(Eigen::MatrixXd::Zero(2, 3), Permutation{0, 1}), std::invalid_argument);
}
