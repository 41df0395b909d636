// oq/transform/duquant_rotation.hpp: DuQuant's base block matrix and greedy
// block rotation (DESIGN §6; Lin et al. 2024, §3.1 and Algorithm 1).
//
// Base block matrix of size b:
//   R = E·(G_(b−2)⋯G_1·G_0)·E, G_i the Givens rotation of the plane (i, i+1)
//       with G_i(i,i) = G_i(i+1,i+1) = cos = 1/√(i+2), G_i(i+1,i) = sin =
//       √(i+1)/√(i+2), G_i(i,i+1) = −sin, and E the exchange of indices 0 and
//       b−1 (rows and columns). Row b−1 of the Givens product is uniformly
//       1/√b, so row 0 of R is: x·R spreads the value in channel 0 evenly over
//       the block.
//   B = R·diag(1, Q′) with Q′ a (b−1)×(b−1) orthogonal matrix (random in the
//       paper; passed in here so that B is a pure function of its inputs).
// This is the released code's construction (get_rot.py, utils.get_rot).
//
// Greedy rotation (Algorithm 1), on the activations viewed as blocks: X
// (tokens × C) reshaped row-major to (tokens·C/b) × b, so every row is one
// block of one token and all blocks share one rotation. For t = 1..N: find the
// entry of largest |x|; its column d is the outlier's channel within its
// block; right-multiply by E_d·B·E_d (E_d exchanges indices 0 and d) — which
// moves channel d to 0, spreads it, and moves it back. Scores s_0..s_N are
// recorded before each step and after the last; the rotation kept is the
// product of the first k steps, k = argmin s (first minimum).
//
// Where oq departs from the released code (quantize/quantizer.py, rotation()):
// the release pivots on `exchange_id % block_size` with exchange_id the ROW of
// the reshaped tensor (a token-block index), not the outlier's channel; oq
// pivots on the channel as the paper says (DESIGN §6). Ties for the largest
// |x| go to the first entry in row-major order of the blocked view, and
// between +v and −v to +v. The release scores by
// max − min of the whole tensor (GreedyScore::kRange, the default here);
// GreedyScore::kAbsMax scores by max |x|.
//
// Weight-aware score (GreedyScore::kActivationTimesWeight; the overload that
// takes the weights W, out × C, of the linear that reads x). The weights are
// viewed as blocks the same way and rotated along with the activations (they
// are folded with the same rotation, W·R). Per step, for every position j of
// the block, a_j = max |x| over the blocked activations' column j and w_j =
// max |w| over the blocked weights' column j; the pivot is the first j of
// largest a_j·w_j and that product is the step's score. a_j·w_j bounds every
// entry of the channels' rank-one contributions x_j·w_jᵀ to X·Wᵀ, so the
// rotation goes after the channels whose quantization error reaches the
// output most, not only the largest activations. The released code has the
// skeleton of this path (rotation(weight, other, score_func):
// score_func(act_max, weight_max).argmax() over the block's positions) but
// never takes it: online_duquant_cali calls rotation(weight) without a score
// function, the release defines none, and the branch reads variables (c, r2,
// c2) that only the other branch sets. The product is oq's choice.
#pragma once

#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oq::transform {

template <class Scalar>
using DenseMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using RowMajorMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// R = E·(G_(b−2)⋯G_0)·E of the file comment (b >= 2); orthogonal, row 0 uniform.
template <class Scalar = double>
DenseMatrix<Scalar> givens_spread_matrix(Eigen::Index b) {
  detail::require(b >= 2, "oq::transform::givens_spread_matrix", "b must be >= 2, got ", b);
  // Accumulate in double: the product of b−1 rotations, then round once.
  DenseMatrix<double> m = DenseMatrix<double>::Identity(b, b);
  for (Eigen::Index i = 0; i + 1 < b; ++i) {
    const double c = 1.0 / std::sqrt(static_cast<double>(i + 2));
    const double s = std::sqrt(static_cast<double>(i + 1)) / std::sqrt(static_cast<double>(i + 2));
    // m ← G_i·m touches rows i and i+1 only.
    const Eigen::RowVectorXd row_i = m.row(i), row_next = m.row(i + 1);
    m.row(i) = c * row_i - s * row_next;
    m.row(i + 1) = s * row_i + c * row_next;
  }
  m.row(0).swap(m.row(b - 1));
  m.col(0).swap(m.col(b - 1));
  return m.cast<Scalar>();
}

/// Throws std::invalid_argument unless q is square n×n and QᵀQ = I to a
/// tolerance of 100·n·ε of its scalar type.
template <class Derived>
void require_orthogonal(const Eigen::MatrixBase<Derived>& q, Eigen::Index n, std::string_view where,
                        std::string_view name) {
  using Scalar = typename Derived::Scalar;
  detail::require(q.rows() == n && q.cols() == n, where, name, " must be ", n, " x ", n, ", got ", q.rows(), " x ",
                  q.cols());
  detail::require_finite(q, where, name);
  const double tolerance = 100.0 * static_cast<double>(n) * std::numeric_limits<Scalar>::epsilon();
  const double error = n == 0 ? 0.0
                              : (q.template cast<double>().transpose() * q.template cast<double>() -
                                 DenseMatrix<double>::Identity(n, n))
                                    .cwiseAbs()
                                    .maxCoeff();
  detail::require(error <= tolerance, where, name, " must be orthogonal (max |QᵀQ − I| <= ", tolerance, "), got ",
                  error);
}

/// B = R·diag(1, Q′) for block size b = q_prime.rows() + 1.
template <class Derived>
DenseMatrix<typename Derived::Scalar> duquant_base_block(const Eigen::MatrixBase<Derived>& q_prime) {
  using Scalar = typename Derived::Scalar;
  const Eigen::Index b = q_prime.rows() + 1;
  detail::require(b >= 2, "oq::transform::duquant_base_block", "q_prime must be at least 1 x 1");
  require_orthogonal(q_prime, b - 1, "oq::transform::duquant_base_block", "q_prime");
  const DenseMatrix<Scalar> r = givens_spread_matrix<Scalar>(b);
  DenseMatrix<Scalar> out(b, b);
  out.col(0) = r.col(0);
  out.rightCols(b - 1).noalias() = r.rightCols(b - 1) * q_prime;
  return out;
}

enum class GreedyScore {
  kRange,                 ///< max x − min x of the whole tensor (the released code)
  kAbsMax,                ///< max |x|
  kActivationTimesWeight, ///< max_j a_j·w_j over block positions (needs the weights; file comment)
};

inline constexpr bool needs_weights(GreedyScore s) { return s == GreedyScore::kActivationTimesWeight; }

struct GreedyRotationOptions {
  int steps = 256;  ///< N, greedy steps tried (>= 0)
  GreedyScore score = GreedyScore::kRange;
  /// Called after every step with (steps done, steps in all); may be empty.
  std::function<void(int, int)> progress{};
};

template <class Scalar>
struct GreedyRotation {
  DenseMatrix<Scalar> rotation;       ///< b × b, the product of the kept steps
  std::vector<Eigen::Index> pivots;   ///< channel within the block, every step tried
  std::vector<double> scores;         ///< steps + 1 scores: before each step, after the last
  Eigen::Index kept = 0;              ///< steps kept (argmin of scores)
};

namespace detail_rotation {

// One step's look at the blocked tensor: its extremes (two vectorised
// reductions), the score, and the (first, row-major) position of the entry of
// largest magnitude, found by a scan for that value instead of a third,
// scalar, arg-reduction.
template <class Scalar>
struct Extremes {
  double score;
  Eigen::Index row;
  Eigen::Index channel;
};

template <class Scalar>
Extremes<Scalar> extremes_of(const RowMajorMatrix<Scalar>& blocks, GreedyScore score) {
  const Scalar hi = blocks.maxCoeff();
  const Scalar lo = blocks.minCoeff();
  const Scalar peak = -lo > hi ? lo : hi;
  const double magnitude = std::fabs(static_cast<double>(peak));
  Extremes<Scalar> e{score == GreedyScore::kRange ? static_cast<double>(hi) - static_cast<double>(lo) : magnitude, 0, 0};
  const Scalar* data = blocks.data();
  const Eigen::Index n = blocks.size();
  for (Eigen::Index i = 0; i < n; ++i) {
    if (data[i] == peak) {
      e.row = i / blocks.cols();
      e.channel = i % blocks.cols();
      break;
    }
  }
  return e;
}

// The weight-aware score: a_j·w_j per block position from the column maxima
// of the blocked activations and weights; the first j of the largest product.
template <class Scalar>
Extremes<Scalar> weighted_extremes_of(const RowMajorMatrix<Scalar>& blocks, const RowMajorMatrix<Scalar>& weight_blocks) {
  const Eigen::ArrayXd product = blocks.cwiseAbs().colwise().maxCoeff().transpose().template cast<double>().array() *
                                 weight_blocks.cwiseAbs().colwise().maxCoeff().transpose().template cast<double>().array();
  Eigen::Index channel = 0;
  const double best = product.maxCoeff(&channel);  // Eigen returns the first maximum
  return Extremes<Scalar>{best, 0, channel};
}

// E_d·B·E_d into `out` (preallocated b × b): B with indices 0 and d exchanged.
template <class Scalar>
void exchanged(const DenseMatrix<Scalar>& base, Eigen::Index d, DenseMatrix<Scalar>& out) {
  out = base;
  if (d == 0) return;
  out.row(0).swap(out.row(d));
  out.col(0).swap(out.col(d));
}

}  // namespace detail_rotation

namespace detail_rotation {

// Algorithm 1 on the blocked activations (and the blocked weights when the
// score uses them: `weight_blocks` non-null). Inputs already checked.
template <class Scalar>
GreedyRotation<Scalar> greedy_on_blocks(RowMajorMatrix<Scalar> blocks, RowMajorMatrix<Scalar>* weight_blocks,
                                        const DenseMatrix<Scalar>& base, const GreedyRotationOptions& options) {
  const Eigen::Index b = base.rows();
  RowMajorMatrix<Scalar> next(blocks.rows(), b);  // no allocation inside the loop
  RowMajorMatrix<Scalar> next_weights(weight_blocks != nullptr ? weight_blocks->rows() : 0, b);
  DenseMatrix<Scalar> step(b, b);
  auto look = [&]() {
    return weight_blocks != nullptr ? weighted_extremes_of(blocks, *weight_blocks) : extremes_of(blocks, options.score);
  };

  GreedyRotation<Scalar> result;
  result.pivots.reserve(static_cast<std::size_t>(options.steps));
  result.scores.reserve(static_cast<std::size_t>(options.steps) + 1);
  for (int t = 0; t < options.steps; ++t) {
    const auto e = look();
    result.scores.push_back(e.score);
    result.pivots.push_back(e.channel);
    exchanged(base, e.channel, step);
    next.noalias() = blocks * step;
    blocks.swap(next);
    if (weight_blocks != nullptr) {
      next_weights.noalias() = *weight_blocks * step;
      weight_blocks->swap(next_weights);
    }
    if (options.progress) options.progress(t + 1, options.steps);
  }
  result.scores.push_back(look().score);

  result.kept = static_cast<Eigen::Index>(std::min_element(result.scores.begin(), result.scores.end()) -
                                          result.scores.begin());
  // The kept product is accumulated in double and rounded once, so that a
  // float rotation stays orthogonal to float precision after hundreds of steps.
  const DenseMatrix<double> base_d = base.template cast<double>();
  DenseMatrix<double> rotation = DenseMatrix<double>::Identity(b, b), product(b, b), step_d(b, b);
  for (Eigen::Index t = 0; t < result.kept; ++t) {
    exchanged(base_d, result.pivots[static_cast<std::size_t>(t)], step_d);
    product.noalias() = rotation * step_d;
    rotation.swap(product);
  }
  result.rotation = rotation.cast<Scalar>();
  return result;
}

// The blocked view of m (rows × C): row-major (rows·C/b) × b, one row per
// (row, block).
template <class Derived>
RowMajorMatrix<typename Derived::Scalar> blocked(const Eigen::MatrixBase<Derived>& m, Eigen::Index b) {
  RowMajorMatrix<typename Derived::Scalar> blocks(m.rows() * (m.cols() / b), b);
  Eigen::Map<RowMajorMatrix<typename Derived::Scalar>>(blocks.data(), m.rows(), m.cols()) = m;
  return blocks;
}

template <class Derived>
void check_greedy_input(const Eigen::MatrixBase<Derived>& x, const DenseMatrix<typename Derived::Scalar>& base,
                        const GreedyRotationOptions& options, std::string_view where) {
  const Eigen::Index b = base.rows();
  detail::require(b >= 2 && base.cols() == b, where, "base must be square with size >= 2, got ", base.rows(), " x ",
                  base.cols());
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require(x.cols() % b == 0, where, "the block size (", b, ") must divide the channel count of x (",
                  x.cols(), ")");
  detail::require(options.steps >= 0, where, "options.steps must be >= 0, got ", options.steps);
  detail::require_finite(x, where, "x");
  require_orthogonal(base, b, where, "base");
}

}  // namespace detail_rotation

/// Algorithm 1 on x (tokens × C) with the base block `base` (b × b, b | C),
/// scored on the activations alone (kRange or kAbsMax).
template <class Derived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(!needs_weights(options.score), kWhere,
                  "options.score = kActivationTimesWeight needs the weights: call the overload that takes them");
  return detail_rotation::greedy_on_blocks(detail_rotation::blocked(x, base.rows()),
                                           static_cast<RowMajorMatrix<typename Derived::Scalar>*>(nullptr), base,
                                           options);
}

/// Algorithm 1 with the weights w (out × C) of the linear that reads x, for
/// the weight-aware score kActivationTimesWeight (other scores ignore w,
/// which must still have C columns).
template <class Derived, class WeightDerived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const Eigen::MatrixBase<WeightDerived>& w,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_same_v<Scalar, typename WeightDerived::Scalar>, "x and w must have the same scalar type");
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(w.rows() > 0 && w.cols() == x.cols(), kWhere, "w must have x's ", x.cols(),
                  " columns (one per input channel) and at least one row, got ", w.rows(), " x ", w.cols());
  detail::require_finite(w, kWhere, "w");
  if (!needs_weights(options.score)) return greedy_block_rotation(x, base, options);
  RowMajorMatrix<Scalar> weight_blocks = detail_rotation::blocked(w, base.rows());
  return detail_rotation::greedy_on_blocks(detail_rotation::blocked(x, base.rows()), &weight_blocks, base, options);
}

}  // namespace oq::transform
