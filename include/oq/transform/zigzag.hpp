// oq/transform/zigzag.hpp: DuQuant's zigzag channel permutation (docs/design.md §6;
// Lin et al. 2024, §3.2 "Zigzag permutation").
//
// After the first block rotation, outliers may still crowd into a few blocks.
// The zigzag permutation balances them: order channels by their max |x|,
// descending (stable: ties keep channel order), deal them to the K = C/b
// blocks in the order 0, 1, …, K−1, K−1, …, 1, 0, 0, 1, … (each turn visits
// the end block twice), then sort each block descending by the same value.
// The goal is equal block means of the channel maxima; the paper's Figure 4
// example, 8 channels ranked 1..8 into 2 blocks, gives {1, 4, 5, 8} and
// {2, 3, 6, 7}.
//
// Convention: perm[j] is the old channel placed at new index j, so the
// permuted activations are x_new(:, j) = x(:, perm[j]) — as X·P with the
// permutation matrix P(perm[j], j) = 1 — and W·P for the weights.
//
//   auto perm = oq::transform::zigzag_permutation(channel_absmax, 128);
//   Eigen::MatrixXf x_new = oq::transform::permute_columns(x, perm);
#pragma once

#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string_view>
#include <vector>

namespace oq::transform {

using Permutation = std::vector<Eigen::Index>;

/// The zigzag permutation of channels with maxima `channel_max` (length C)
/// into blocks of `block_size` (which must divide C).
template <class Derived>
Permutation zigzag_permutation(const Eigen::MatrixBase<Derived>& channel_max, Eigen::Index block_size) {
  constexpr std::string_view kWhere = "oq::transform::zigzag_permutation";
  const Eigen::Index channels = channel_max.size();
  detail::require(channel_max.rows() == 1 || channel_max.cols() == 1, kWhere, "channel_max must be a vector, got ",
                  channel_max.rows(), " x ", channel_max.cols());
  detail::require(channels > 0, kWhere, "channel_max must be non-empty");
  detail::require(block_size > 0 && channels % block_size == 0, kWhere, "block_size must divide the channel count (",
                  channels, "), got ", block_size);
  detail::require_finite(channel_max, kWhere, "channel_max");
  const auto value = [&](Eigen::Index c) { return static_cast<double>(channel_max(c)); };

  Permutation order(static_cast<std::size_t>(channels));
  std::iota(order.begin(), order.end(), Eigen::Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Eigen::Index a, Eigen::Index b) { return value(a) > value(b); });

  const Eigen::Index blocks = channels / block_size;
  std::vector<Permutation> dealt(static_cast<std::size_t>(blocks));
  Eigen::Index current = 0;
  bool up = true;
  for (Eigen::Index channel : order) {
    dealt[static_cast<std::size_t>(current)].push_back(channel);
    if (up) {
      if (++current == blocks) {
        current = blocks - 1;
        up = false;
      }
    } else if (--current < 0) {
      current = 0;
      up = true;
    }
  }

  Permutation perm;
  perm.reserve(static_cast<std::size_t>(channels));
  for (Permutation& block : dealt) {
    std::stable_sort(block.begin(), block.end(), [&](Eigen::Index a, Eigen::Index b) { return value(a) > value(b); });
    perm.insert(perm.end(), block.begin(), block.end());
  }
  return perm;
}

/// Throws std::invalid_argument unless perm is a permutation of 0..n−1; the
/// message calls it `name`.
inline void validate_permutation(const Permutation& perm, Eigen::Index n, std::string_view where,
                                 std::string_view name = "perm") {
  detail::require(static_cast<Eigen::Index>(perm.size()) == n, where, name, " must have ", n, " entries, got ",
                  perm.size());
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  for (std::size_t j = 0; j < perm.size(); ++j) {
    const Eigen::Index p = perm[j];
    detail::require(p >= 0 && p < n && !seen[static_cast<std::size_t>(p)], where, name, " is not a permutation of 0..",
                    n - 1, ": ", name, "[", j, "] = ", p);
    seen[static_cast<std::size_t>(p)] = true;
  }
}

/// inverse[perm[j]] = j, so permuting by perm and then by inverse is the identity.
inline Permutation inverse_permutation(const Permutation& perm) {
  validate_permutation(perm, static_cast<Eigen::Index>(perm.size()), "oq::transform::inverse_permutation");
  Permutation inverse(perm.size());
  for (std::size_t j = 0; j < perm.size(); ++j) inverse[static_cast<std::size_t>(perm[j])] = static_cast<Eigen::Index>(j);
  return inverse;
}

/// x(:, perm) — the columns of x reordered, x_new(:, j) = x(:, perm[j]).
template <class Derived>
Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic,
              Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>
permute_columns(const Eigen::MatrixBase<Derived>& x, const Permutation& perm) {
  validate_permutation(perm, x.cols(), "oq::transform::permute_columns");
  return x(Eigen::all, perm);
}

/// x ← x(:, perm) in place, one row at a time through a row buffer, so that
/// a large x needs no second copy of itself.
template <class Derived>
void permute_columns_in_place(Eigen::MatrixBase<Derived>& x, const Permutation& perm) {
  validate_permutation(perm, x.cols(), "oq::transform::permute_columns_in_place");
  Eigen::Matrix<typename Derived::Scalar, 1, Eigen::Dynamic> row(x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    row = x.row(i)(perm);
    x.row(i) = row;
  }
}

/// The permutation matrix P with P(perm[j], j) = 1, so that x·P = x(:, perm).
template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> permutation_matrix(const Permutation& perm) {
  const auto n = static_cast<Eigen::Index>(perm.size());
  validate_permutation(perm, n, "oq::transform::permutation_matrix");
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> p = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>::Zero(n, n);
  for (Eigen::Index j = 0; j < n; ++j) p(perm[static_cast<std::size_t>(j)], j) = Scalar(1);
  return p;
}

}  // namespace oq::transform
